//! Streaming the audit trail to a SIEM: RFC 5424 syslog messages over TCP with octet-counting
//! framing (RFC 6587), or over TLS (RFC 5425, rustls). The trail itself is the buffer: each stream keeps, in the store, the
//! sequence number of the last event its receiver took, and sends from there; a receiver that
//! is down loses nothing (its events wait in the trail, on disk) and stalls nothing (sessions
//! write to the trail as always). Delivery is at least once: a batch counts as taken once the
//! connection stayed up for a second after it; after a receiver went away, what it may not have
//! taken is sent again, with the same `seq` in the structured data to drop repeats by.
//!
//! A stream with `snmp` in place of `syslog` sends SNMPv2c notifications over UDP instead
//! (`crate::snmp`, which says what "delivered" means there); [`stream_loop`] picks the transport.

use gatehouse_core::{AuditEvent, AuditKind};
use gatehouse_store::{SETTINGS, Store};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Events sent per round at most.
pub(crate) const BATCH: usize = 500;
/// A quiet trail is looked at this often.
pub(crate) const POLL: Duration = Duration::from_millis(500);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A batch counts as delivered once the connection stayed up this long after it was written.
const CONFIRM_AFTER: Duration = Duration::from_secs(1);
/// The structured-data id (a private enterprise number is not registered; the id is stable).
const SD_ID: &str = "gatehouse@32473";

/// One stream, as settings.json `audit_streams` lists it. Its receiver is a syslog receiver
/// (`"syslog": "HOST:PORT"`, RFC 5424 over TCP or TLS) or an SNMP notification receiver
/// (`"snmp": "HOST[:PORT]"`, SNMPv2c over UDP, port 162 by default, with `community` and
/// `inform`): exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StreamEntry", into = "StreamEntry")]
pub struct StreamSettings {
    /// Names the stream (its position in the trail is kept under this name).
    pub name: String,
    /// The receiver, syslog or SNMP.
    pub receiver: Receiver,
    /// Only these audit kinds (`login_failed`, `access_denied`, ...); all when empty.
    pub kinds: Vec<AuditKind>,
    /// The syslog facility (0-23); 10, authpriv, when absent. Syslog streams only.
    pub facility: u8,
    /// Start with events appended from now on (default), or from the first event of the trail.
    pub from_start: bool,
    /// TLS (RFC 5425) to the receiver, its certificate checked against `ca_file` (PEM), or the
    /// public web roots when absent, for `server_name` (the host of `syslog` when absent).
    /// Syslog streams only.
    pub tls: bool,
    pub ca_file: Option<std::path::PathBuf>,
    pub server_name: Option<String>,
}

/// Where a stream sends its events.
#[derive(Clone, PartialEq, Eq)]
pub enum Receiver {
    /// `host:port` of a syslog receiver taking RFC 5424 over TCP (octet counting), or TLS.
    Syslog(String),
    /// An SNMPv2c notification receiver (UDP).
    Snmp(SnmpReceiver),
}

/// An SNMPv2c notification receiver, as an `snmp` stream names it.
#[derive(Clone, PartialEq, Eq)]
pub struct SnmpReceiver {
    /// `host:port`; the port is 162 when settings.json gave none.
    pub address: String,
    /// The SNMPv2c community (sent in clear on the wire, as SNMPv2c does; never logged here).
    pub community: String,
    /// InformRequests, delivered once the receiver answers them (`true`, the default), or
    /// SNMPv2-Trap PDUs, fire and forget: best effort (`false`).
    pub inform: bool,
}

impl Receiver {
    /// The receiver's `host:port`.
    pub fn address(&self) -> &str {
        match self {
            Receiver::Syslog(address) => address,
            Receiver::Snmp(snmp) => &snmp.address,
        }
    }
}

impl std::fmt::Display for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Receiver::Syslog(address) => f.write_str(address),
            Receiver::Snmp(snmp) => write!(
                f,
                "{} (SNMPv2c {})",
                snmp.address,
                if snmp.inform { "informs" } else { "traps" }
            ),
        }
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Receiver::Syslog(address) => f.debug_tuple("Syslog").field(address).finish(),
            Receiver::Snmp(snmp) => f.debug_tuple("Snmp").field(snmp).finish(),
        }
    }
}

impl std::fmt::Debug for SnmpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnmpReceiver")
            .field("address", &self.address)
            .field("community", &"[redacted]")
            .field("inform", &self.inform)
            .finish()
    }
}

/// A stream as settings.json spells it; [`StreamSettings`] is what it means once checked.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamEntry {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    syslog: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    snmp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    community: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inform: Option<bool>,
    #[serde(default)]
    kinds: Vec<AuditKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    facility: Option<u8>,
    #[serde(default)]
    from_start: bool,
    #[serde(default)]
    tls: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_name: Option<String>,
}

/// The SNMPv2c community when a stream gives none.
pub const DEFAULT_COMMUNITY: &str = "public";
/// The SNMP notification port when a stream's `snmp` gives none.
pub const SNMP_TRAP_PORT: u16 = 162;

impl TryFrom<StreamEntry> for StreamSettings {
    type Error = String;

    fn try_from(entry: StreamEntry) -> Result<Self, String> {
        let name = entry.name;
        let fail = |what: String| Err(format!("audit stream `{name}`: {what}"));
        let syslog = match (entry.syslog, entry.snmp) {
            (Some(_), Some(_)) => {
                return fail(
                    "give either `syslog` (HOST:PORT, RFC 5424 over TCP) or `snmp` \
                     (HOST[:PORT], SNMPv2c over UDP), not both"
                        .into(),
                );
            }
            (None, None) => {
                return fail(
                    "no receiver: give `syslog` (HOST:PORT, RFC 5424 over TCP) or `snmp` \
                     (HOST[:PORT], SNMPv2c over UDP)"
                        .into(),
                );
            }
            (Some(address), None) => {
                if entry.community.is_some() || entry.inform.is_some() {
                    return fail("`community` and `inform` are for `snmp` streams".into());
                }
                Receiver::Syslog(address)
            }
            (None, Some(address)) => {
                if entry.tls || entry.ca_file.is_some() || entry.server_name.is_some() {
                    return fail(
                        "`tls`, `ca_file` and `server_name` are for `syslog` streams \
                         (SNMPv2c has no TLS)"
                            .into(),
                    );
                }
                if entry.facility.is_some() {
                    return fail("`facility` is for `syslog` streams".into());
                }
                let community = entry
                    .community
                    .unwrap_or_else(|| DEFAULT_COMMUNITY.to_string());
                if community.is_empty() || community.len() > 255 {
                    return fail("`community` must have 1 to 255 bytes".into());
                }
                Receiver::Snmp(SnmpReceiver {
                    address: match snmp_address(&address) {
                        Ok(address) => address,
                        Err(e) => return fail(e),
                    },
                    community,
                    inform: entry.inform.unwrap_or(true),
                })
            }
        };
        Ok(StreamSettings {
            name,
            receiver: syslog,
            kinds: entry.kinds,
            facility: entry.facility.unwrap_or_else(default_facility),
            from_start: entry.from_start,
            tls: entry.tls,
            ca_file: entry.ca_file,
            server_name: entry.server_name,
        })
    }
}

impl From<StreamSettings> for StreamEntry {
    fn from(settings: StreamSettings) -> Self {
        let (syslog, snmp, community, inform, facility) = match settings.receiver {
            Receiver::Syslog(address) => (Some(address), None, None, None, Some(settings.facility)),
            Receiver::Snmp(snmp) => (
                None,
                Some(snmp.address),
                Some(snmp.community),
                Some(snmp.inform),
                None,
            ),
        };
        StreamEntry {
            name: settings.name,
            syslog,
            snmp,
            community,
            inform,
            kinds: settings.kinds,
            facility,
            from_start: settings.from_start,
            tls: settings.tls,
            ca_file: settings.ca_file,
            server_name: settings.server_name,
        }
    }
}

/// An `snmp` setting as `host:port`: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6
/// address; the port is 162 when absent.
fn snmp_address(text: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("snmp `{text}` {why}"));
    let port_of = |port: &str| match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("snmp `{text}`: `{port}` is not a port")),
    };
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("is not HOST[:PORT]");
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return bad("has no closing `]`");
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("does not hold an IPv6 address in `[]`");
        }
        let port = match after {
            "" => SNMP_TRAP_PORT,
            _ => match after.strip_prefix(':') {
                Some(port) => port_of(port)?,
                None => return bad("is not [IPV6]:PORT"),
            },
        };
        return Ok(format!("[{host}]:{port}"));
    }
    match text.matches(':').count() {
        0 => Ok(format!("{text}:{SNMP_TRAP_PORT}")),
        1 => {
            let (host, port) = text.split_once(':').unwrap_or((text, ""));
            if host.is_empty() {
                return bad("has no host");
            }
            Ok(format!("{host}:{}", port_of(port)?))
        }
        _ => match text.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(format!("[{text}]:{SNMP_TRAP_PORT}")),
            Err(_) => bad("is not HOST[:PORT] (an IPv6 address with a port is [ADDRESS]:PORT)"),
        },
    }
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
    let Receiver::Syslog(address) = &settings.receiver else {
        return Err("TLS is for syslog streams (SNMPv2c has no TLS)".into());
    };
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
        None => address
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

/// The settings.json name of an audit kind (`login_failed`).
pub(crate) fn kind_name(kind: &AuditKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether a stream sends events of this kind.
pub(crate) fn wanted(settings: &StreamSettings, event: &AuditEvent) -> bool {
    settings.kinds.is_empty() || settings.kinds.contains(&event.kind)
}

/// Keeps a stream's position: its receiver has every event up to `seq`.
pub(crate) fn save_position(store: &Store, settings: &StreamSettings, seq: u64) {
    let key = position_key(&settings.name);
    if let Err(e) = store.write(|txn| txn.put(&SETTINGS, &key, &serde_json::Value::from(seq))) {
        tracing::error!(stream = %settings.name, error = %e, "the audit stream's position was not saved");
    }
}

/// Syslog severity of an event: refusals and failures are warnings, the rest informational.
pub(crate) fn severity(kind: &AuditKind) -> u8 {
    let name = kind_name(kind);
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
    let kind = kind_name(&event.kind);
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
/// The next events of the trail after `after`, with the last one's sequence number; `None`,
/// after a pause, when there are none yet or the trail cannot be read (logged).
pub(crate) async fn next_batch(
    store: &Store,
    settings: &StreamSettings,
    after: u64,
) -> Option<(Vec<AuditEvent>, u64)> {
    match store.audit_after(after, BATCH) {
        Ok(events) => match events.last().map(|e| e.seq) {
            Some(last) => Some((events, last)),
            None => {
                tokio::time::sleep(POLL).await;
                None
            }
        },
        Err(e) => {
            tracing::error!(stream = %settings.name, error = %e, "reading the audit trail");
            tokio::time::sleep(POLL).await;
            None
        }
    }
}

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
    match settings.receiver.clone() {
        Receiver::Syslog(address) => {
            syslog_loop(&store, &settings, &address, &hostname, start).await;
        }
        Receiver::Snmp(receiver) => {
            crate::snmp::stream_loop(&store, &settings, &receiver, &hostname, start).await;
        }
    }
}

/// Sends the trail to a syslog receiver from `start` on, until the task is dropped.
async fn syslog_loop(
    store: &Store,
    settings: &StreamSettings,
    address: &str,
    hostname: &str,
    start: u64,
) {
    // What the receiver surely has (saved in the store), and what was written after it: TCP
    // takes bytes a dead receiver never reads, so a batch counts as delivered only once the
    // connection has stayed up for a while after it; when the connection is found dead, the
    // stream goes back to what was confirmed and sends the rest again.
    let mut confirmed = start;
    let mut sent_through = start;
    let mut unconfirmed: std::collections::VecDeque<(u64, tokio::time::Instant)> =
        std::collections::VecDeque::new();
    let mut backoff = Duration::from_millis(500);
    let connector = match tls_connector(settings) {
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
                    save_position(store, settings, seq);
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
        let Some((events, last)) = next_batch(store, settings, sent_through).await else {
            continue;
        };
        let mut frames = Vec::new();
        for event in events.iter().filter(|e| wanted(settings, e)) {
            let message = format_event(event, settings.facility, hostname);
            frames.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
        }
        let delivered = if frames.is_empty() {
            Ok(())
        } else {
            send(&mut connection, address, connector.as_ref(), &frames).await
        };
        match delivered {
            Ok(()) => {
                if !reachable {
                    tracing::info!(stream = %settings.name, receiver = %address, "the audit stream's receiver is back");
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
                    tracing::warn!(stream = %settings.name, receiver = %address, error = %e, "the audit stream's receiver cannot be reached; events wait in the trail");
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

    fn parse(json: serde_json::Value) -> Result<StreamSettings, String> {
        serde_json::from_value(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_syslog_stream_reads_as_before() {
        let settings = parse(serde_json::json!({
            "name": "siem", "syslog": "10.0.0.5:6514", "tls": true, "facility": 4,
            "kinds": ["login_failed"]
        }))
        .unwrap();
        assert_eq!(
            &settings.receiver,
            &Receiver::Syslog("10.0.0.5:6514".into())
        );
        // What the daemon reads: the address, as text.
        assert_eq!(
            settings.receiver.address().rsplit_once(':'),
            Some(("10.0.0.5", "6514"))
        );
        assert_eq!(settings.receiver.to_string(), "10.0.0.5:6514");
        assert_eq!((settings.facility, settings.tls), (4, true));
        let defaults = parse(serde_json::json!({"name": "s", "syslog": "h:514"})).unwrap();
        assert_eq!(defaults.facility, 10);
        // Written back, it reads the same.
        let again = parse(serde_json::to_value(&settings).unwrap()).unwrap();
        assert_eq!(again, settings);
    }

    #[test]
    fn an_snmp_stream_has_defaults_and_a_port() {
        let settings = parse(serde_json::json!({"name": "nms", "snmp": "nms.example"})).unwrap();
        assert_eq!(
            &settings.receiver,
            &Receiver::Snmp(SnmpReceiver {
                address: "nms.example:162".into(),
                community: "public".into(),
                inform: true,
            })
        );
        assert_eq!(
            settings.receiver.to_string(),
            "nms.example:162 (SNMPv2c informs)"
        );
        // The community is not in the debug form.
        let traps = parse(serde_json::json!({
            "name": "nms", "snmp": "127.0.0.1:1162", "community": "s3cret-community",
            "inform": false
        }))
        .unwrap();
        assert!(!format!("{traps:?}").contains("s3cret"), "{traps:?}");
        assert_eq!(traps.receiver.to_string(), "127.0.0.1:1162 (SNMPv2c traps)");
        let again = parse(serde_json::to_value(&traps).unwrap()).unwrap();
        assert_eq!(again, traps);
        assert_eq!(tls_connector(&traps).map(|c| c.is_none()), Ok(true));
        for (given, address) in [
            ("nms", "nms:162"),
            ("nms:1162", "nms:1162"),
            ("[::1]", "[::1]:162"),
            ("[::1]:1162", "[::1]:1162"),
            ("fe80::1", "[fe80::1]:162"),
        ] {
            assert_eq!(snmp_address(given).as_deref(), Ok(address), "{given}");
        }
        for bad in [
            "",
            "nms:",
            "nms:0",
            "nms:70000",
            ":162",
            "[::1",
            "[nms]:1",
            "a:b:c",
            "n ms",
        ] {
            assert!(snmp_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stream_names_exactly_one_receiver() {
        for (json, says) in [
            (
                serde_json::json!({"name": "a", "syslog": "h:514", "snmp": "h"}),
                "audit stream `a`: give either `syslog`",
            ),
            (
                serde_json::json!({"name": "a"}),
                "audit stream `a`: no receiver",
            ),
            (
                serde_json::json!({"name": "a", "syslog": "h:514", "inform": false}),
                "`community` and `inform` are for `snmp` streams",
            ),
            (
                serde_json::json!({"name": "a", "snmp": "h", "ca_file": "/ca.pem"}),
                "are for `syslog` streams",
            ),
            (
                serde_json::json!({"name": "a", "snmp": "h", "facility": 4}),
                "`facility` is for `syslog` streams",
            ),
            (
                serde_json::json!({"name": "a", "snmp": "h", "community": ""}),
                "`community` must have 1 to 255 bytes",
            ),
            (
                serde_json::json!({"name": "a", "snmp": "h", "informs": true}),
                "unknown field `informs`",
            ),
        ] {
            let error = parse(json.clone()).unwrap_err();
            assert!(error.contains(says), "{json}: {error}");
        }
    }
}
