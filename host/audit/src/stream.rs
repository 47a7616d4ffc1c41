//! Streaming the audit trail to a SIEM: RFC 5424 syslog messages over TCP with octet-counting
//! framing (RFC 6587), or over TLS (RFC 5425, rustls). The trail itself is the buffer: each stream keeps, in the store, the
//! sequence number of the last event its receiver took, and sends from there; a receiver that
//! is down loses nothing (its events wait in the trail, on disk) and stalls nothing (sessions
//! write to the trail as always). Delivery is at least once: a batch counts as taken once the
//! connection stayed up for a second after it; after a receiver went away, what it may not have
//! taken is sent again, with the same `seq` in the structured data to drop repeats by.

use gatehouse_core::{AuditEvent, AuditKind};
use gatehouse_store::{SETTINGS, Store};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Events sent per round at most.
const BATCH: usize = 500;
/// A quiet trail is looked at this often.
const POLL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A batch counts as delivered once the connection stayed up this long after it was written.
const CONFIRM_AFTER: Duration = Duration::from_secs(1);
/// The structured-data id (a private enterprise number is not registered; the id is stable).
const SD_ID: &str = "gatehouse@32473";

/// One stream, as settings.json `audit_streams` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// Names the stream (its position in the trail is kept under this name).
    pub name: String,
    /// `host:port` of a syslog receiver taking RFC 5424 over TCP (octet counting).
    pub syslog: String,
    /// Only these audit kinds (`login_failed`, `access_denied`, ...); all when empty.
    #[serde(default)]
    pub kinds: Vec<AuditKind>,
    /// The syslog facility (0-23); 10, authpriv, when absent.
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// Start with events appended from now on (default), or from the first event of the trail.
    #[serde(default)]
    pub from_start: bool,
    /// TLS (RFC 5425) to the receiver, its certificate checked against `ca_file` (PEM), or the
    /// public web roots when absent, for `server_name` (the host of `syslog` when absent).
    #[serde(default)]
    pub tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// The TLS client a stream connects with, when it uses TLS.
pub fn tls_connector(
    settings: &StreamSettings,
) -> Result<
    Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    String,
> {
    use rustls::pki_types::pem::PemObject;
    if !settings.tls {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca_file {
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("ca_file `{}`: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file `{}` holds no certificate", path.display()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file `{}`: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = match &settings.server_name {
        Some(name) => name.clone(),
        None => settings
            .syslog
            .rsplit_once(':')
            .map(|(host, _)| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            })
            .unwrap_or_default(),
    };
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("server name `{host}`: {e}"))?;
    Ok(Some((
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        name,
    )))
}

/// A connection to a receiver, plain or TLS.
enum Connection {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl Connection {
    fn tcp(&self) -> &tokio::net::TcpStream {
        match self {
            Connection::Plain(tcp) => tcp,
            Connection::Tls(tls) => tls.get_ref().0,
        }
    }
}

fn default_facility() -> u8 {
    10
}

fn position_key(name: &str) -> String {
    format!("audit_stream:{name}")
}

/// Syslog severity of an event: refusals and failures are warnings, the rest informational.
fn severity(kind: &AuditKind) -> u8 {
    let name = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if name.contains("failed")
        || name.contains("denied")
        || name.contains("refused")
        || name.contains("flagged")
    {
        4
    } else {
        6
    }
}

/// `"`, `\` and `]` escaped, as RFC 5424 wants in a PARAM-VALUE.
fn sd_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 5424 printable-ASCII header field, at most `max` characters, `-` when empty.
fn header_field(value: &str, max: usize) -> String {
    let cleaned: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "-".into()
    } else {
        cleaned
    }
}

/// One event as an RFC 5424 message (without framing).
pub fn format_event(event: &AuditEvent, facility: u8, hostname: &str) -> String {
    let kind = serde_json::to_value(&event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let pri = u16::from(facility.min(23)) * 8 + u16::from(severity(&event.kind));
    let time = humantime::format_rfc3339_millis(event.time.to_system_time());
    let mut sd = format!("[{SD_ID} seq=\"{}\"", event.seq);
    let mut param = |name: &str, value: &Option<String>| {
        if let Some(value) = value {
            sd.push_str(&format!(" {name}=\"{}\"", sd_escape(value)));
        }
    };
    param("session", &event.session);
    param("user", &event.user);
    param("target", &event.target);
    param("client", &event.client);
    param(
        "node",
        &event
            .fields
            .get("node")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    );
    param("chain", &event.chain);
    sd.push(']');
    let detail: String = event
        .detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "<{pri}>1 {time} {} gatehouse - {} {sd} {detail}",
        header_field(hostname, 255),
        header_field(&kind, 32),
    )
}

/// Sends the trail to one receiver until the task is dropped.
pub async fn stream_loop(store: Arc<Store>, settings: StreamSettings, hostname: String) {
    let key = position_key(&settings.name);
    // A new stream starts at the trail's end unless told to send it all.
    let start = match store.get(&SETTINGS, &key) {
        Ok(Some(value)) => value.as_u64().unwrap_or(0),
        Ok(None) => {
            let from = if settings.from_start {
                0
            } else {
                store
                    .list_audit(Some(1))
                    .ok()
                    .and_then(|l| l.last().map(|e| e.seq))
                    .unwrap_or(0)
            };
            let _ = store.write(|txn| txn.put(&SETTINGS, &key, &serde_json::Value::from(from)));
            from
        }
        Err(e) => {
            tracing::error!(stream = %settings.name, error = %e, "the audit stream cannot start");
            return;
        }
    };
    // What the receiver surely has (saved in the store), and what was written after it: TCP
    // takes bytes a dead receiver never reads, so a batch counts as delivered only once the
    // connection has stayed up for a while after it; when the connection is found dead, the
    // stream goes back to what was confirmed and sends the rest again.
    let mut confirmed = start;
    let mut sent_through = start;
    let mut unconfirmed: std::collections::VecDeque<(u64, tokio::time::Instant)> =
        std::collections::VecDeque::new();
    let mut backoff = Duration::from_millis(500);
    let connector = match tls_connector(&settings) {
        Ok(connector) => connector,
        Err(e) => {
            tracing::error!(stream = %settings.name, error = %e, "the audit stream cannot start");
            return;
        }
    };
    let mut connection: Option<Connection> = None;
    let mut reachable = true;
    loop {
        if let Some(stream) = &connection {
            if alive(stream.tcp()) {
                let mut newly = None;
                while let Some((seq, written)) = unconfirmed.front()
                    && written.elapsed() >= CONFIRM_AFTER
                {
                    newly = Some(*seq);
                    unconfirmed.pop_front();
                }
                if let Some(seq) = newly {
                    confirmed = seq;
                    if let Err(e) =
                        store.write(|txn| txn.put(&SETTINGS, &key, &serde_json::Value::from(seq)))
                    {
                        tracing::error!(stream = %settings.name, error = %e, "the audit stream's position was not saved");
                    }
                }
            } else {
                connection = None;
                if sent_through > confirmed {
                    tracing::info!(stream = %settings.name, from = confirmed + 1, "the audit stream's receiver went away; sending again what it may not have taken");
                }
                sent_through = confirmed;
                unconfirmed.clear();
            }
        }
        let events = match store.audit_after(sent_through, BATCH) {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(stream = %settings.name, error = %e, "reading the audit trail");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let Some(last) = events.last().map(|e| e.seq) else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        let mut frames = Vec::new();
        for event in events
            .iter()
            .filter(|e| settings.kinds.is_empty() || settings.kinds.contains(&e.kind))
        {
            let message = format_event(event, settings.facility, &hostname);
            frames.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
        }
        let delivered = if frames.is_empty() {
            Ok(())
        } else {
            send(
                &mut connection,
                &settings.syslog,
                connector.as_ref(),
                &frames,
            )
            .await
        };
        match delivered {
            Ok(()) => {
                if !reachable {
                    tracing::info!(stream = %settings.name, receiver = %settings.syslog, "the audit stream's receiver is back");
                    reachable = true;
                }
                backoff = Duration::from_millis(500);
                sent_through = last;
                unconfirmed.push_back((last, tokio::time::Instant::now()));
            }
            Err(e) => {
                connection = None;
                sent_through = confirmed;
                unconfirmed.clear();
                if reachable {
                    tracing::warn!(stream = %settings.name, receiver = %settings.syslog, error = %e, "the audit stream's receiver cannot be reached; events wait in the trail");
                    reachable = false;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Whether the receiver has not closed the connection (a syslog receiver sends nothing; what
/// it may send, a TLS alert, is left for the TLS layer: this only peeks).
fn alive(stream: &tokio::net::TcpStream) -> bool {
    let mut probe = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut probe);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match stream.poll_peek(&mut cx, &mut buf) {
        std::task::Poll::Pending => true,
        std::task::Poll::Ready(Ok(0)) => false,
        std::task::Poll::Ready(Ok(_)) => true,
        std::task::Poll::Ready(Err(_)) => false,
    }
}

type Connector = (
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
);

async fn send(
    connection: &mut Option<Connection>,
    address: &str,
    tls: Option<&Connector>,
    frames: &[u8],
) -> std::io::Result<()> {
    let timed_out =
        |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"));
    if connection.is_none() {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
            .await
            .map_err(|_| timed_out("connect"))??;
        let _ = tcp.set_nodelay(true);
        *connection = Some(match tls {
            None => Connection::Plain(tcp),
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| timed_out("TLS handshake"))??;
                Connection::Tls(Box::new(stream))
            }
        });
    }
    let Some(connection) = connection.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    tokio::time::timeout(WRITE_TIMEOUT, async {
        match connection {
            Connection::Plain(tcp) => {
                tcp.write_all(frames).await?;
                tcp.flush().await
            }
            Connection::Tls(tls) => {
                tls.write_all(frames).await?;
                tls.flush().await
            }
        }
    })
    .await
    .map_err(|_| timed_out("write"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::time::Timestamp;

    #[test]
    fn an_event_is_an_rfc5424_message() {
        let mut fields = serde_json::Map::new();
        fields.insert("node".into(), "sess-a".into());
        let event = AuditEvent {
            seq: 42,
            time: Timestamp(1_796_000_000_123),
            kind: AuditKind::LoginFailed,
            session: Some("s-1".into()),
            user: Some("al\"ice]".into()),
            target: None,
            client: Some("10.0.0.9:50000".into()),
            detail: "wrong password\nfor alice".into(),
            fields,
            chain: Some("ab".into()),
        };
        let text = format_event(&event, 10, "gw one");
        assert_eq!(
            text,
            "<84>1 2026-11-30T00:53:20.123Z gwone gatehouse - login_failed \
             [gatehouse@32473 seq=\"42\" session=\"s-1\" user=\"al\\\"ice\\]\" \
             client=\"10.0.0.9:50000\" node=\"sess-a\" chain=\"ab\"] wrong password for alice"
        );
    }
}
