//! A session node's side: its identity in the data directory (`cluster/node.json` and the 0600
//! `cluster/node-key.pem`), the join, the client of the control node's cluster port, and the
//! heartbeat that keeps its status current.

use crate::pki::{NodeKey, Thumbprint, certificate_pem, pem_certificates};
use crate::tls::{self, VerifyReport};
use crate::wire::{self, ControlAnswer, Heartbeat, JoinRequest, NodeCall, Termination};
use crate::{ClusterError, DEFAULT_PORT};
use gatehouse_core::SecretString;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

const IDENTITY_FILE: &str = "node.json";
const KEY_FILE: &str = "node-key.pem";
/// How long a call may take, connection and handshake included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a node reports to the control node.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Where a control node listens, from `https://HOST[:PORT]` (or `HOST[:PORT]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAddress {
    pub host: String,
    pub port: u16,
}

impl ControlAddress {
    pub fn parse(url: &str) -> Result<Self, ClusterError> {
        let bad = || ClusterError::BadUrl(url.to_string());
        let rest = url.trim();
        let rest = rest.strip_prefix("https://").unwrap_or(rest);
        if rest.contains("://") {
            return Err(bad());
        }
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(bad());
        }
        // [v6]:port, [v6], host:port, host
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => DEFAULT_PORT,
                None => return Err(bad()),
            };
            (host.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => {
                    (host.to_string(), port.parse().map_err(|_| bad())?)
                }
                Some(_) => return Err(bad()),
                None => (rest.to_string(), DEFAULT_PORT),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Self { host, port })
    }

    fn server_name(&self) -> Result<ServerName<'static>, ClusterError> {
        ServerName::try_from(self.host.clone())
            .map_err(|_| ClusterError::BadUrl(format!("https://{self}")))
    }
}

impl std::fmt::Display for ControlAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What `node.json` keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IdentityFile {
    node_id: String,
    control: ControlAddress,
    /// More control nodes on the same store, tried in turn when one cannot be reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    also: Vec<ControlAddress>,
    /// The pinned thumbprint of the cluster CA's public key.
    thumbprint: String,
    certificate: String,
    ca: String,
}

/// A joined node's identity: its id, its control node, the pinned CA, its certificate and key.
pub struct NodeIdentity {
    pub node_id: String,
    pub control: ControlAddress,
    /// More control nodes sharing the control node's store: the node fails over to them.
    pub also: Vec<ControlAddress>,
    pub pin: Thumbprint,
    pub certificate_der: Vec<u8>,
    pub ca_der: Vec<u8>,
    key: NodeKey,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .field("control", &self.control)
            .field("also", &self.also)
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

fn files_error(what: &str, path: &Path) -> impl Fn(std::io::Error) -> ClusterError {
    let message = format!("cannot {what} `{}`", path.display());
    move |e| ClusterError::Files(format!("{message}: {e}"))
}

impl NodeIdentity {
    /// The identity saved in `dir`, if the node has joined.
    pub fn load(dir: &Path) -> Result<Option<Self>, ClusterError> {
        let path = dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(files_error("read", &path)(e)),
        };
        let file: IdentityFile = serde_json::from_str(&text)
            .map_err(|e| ClusterError::Files(format!("`{}` is damaged: {e}", path.display())))?;
        let key_path = dir.join(KEY_FILE);
        let key_pem = std::fs::read_to_string(&key_path).map_err(files_error("read", &key_path))?;
        let key = NodeKey::from_pem(&SecretString::new(key_pem))?;
        let first = |pem: &str, what: &str| {
            pem_certificates(pem)?
                .into_iter()
                .next()
                .ok_or_else(|| ClusterError::Files(format!("`{}` has no {what}", path.display())))
        };
        Ok(Some(Self {
            node_id: file.node_id,
            control: file.control,
            also: file.also,
            pin: Thumbprint::parse(&file.thumbprint)?,
            certificate_der: first(&file.certificate, "certificate")?,
            ca_der: first(&file.ca, "CA certificate")?,
            key,
        }))
    }

    /// Writes the identity to `dir` (created 0700; the key file 0600), replacing what was there.
    pub fn save(&self, dir: &Path) -> Result<(), ClusterError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(files_error("create", dir))?;
        let key_path = dir.join(KEY_FILE);
        let tmp = dir.join(format!("{KEY_FILE}.new"));
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(files_error("write", &tmp))?;
            file.write_all(self.key.to_pem().expose().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(files_error("write", &tmp))?;
        }
        std::fs::rename(&tmp, &key_path).map_err(files_error("write", &key_path))?;
        let file = IdentityFile {
            node_id: self.node_id.clone(),
            control: self.control.clone(),
            also: self.also.clone(),
            thumbprint: self.pin.to_string(),
            certificate: certificate_pem(&self.certificate_der),
            ca: certificate_pem(&self.ca_der),
        };
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| ClusterError::Files(format!("cannot encode the node identity: {e}")))?;
        let path = dir.join(IDENTITY_FILE);
        let tmp = dir.join(format!("{IDENTITY_FILE}.new"));
        std::fs::write(&tmp, text).map_err(files_error("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(files_error("write", &path))?;
        Ok(())
    }

    /// This node's certificate thumbprint (what the control node lists).
    pub fn thumbprint(&self) -> Thumbprint {
        Thumbprint::of_certificate(&self.certificate_der)
    }

    /// A client of the control node that presents this identity.
    pub fn client(&self) -> Result<ControlClient, ClusterError> {
        let key = self.key.to_der();
        Ok(ControlClient::new(
            self.control.clone(),
            &self.pin,
            Some((&self.certificate_der, key.expose())),
        )?
        .with_fallbacks(self.also.clone()))
    }
}

/// A client of a control node's cluster port: one TLS connection per call (TLS 1.3 resumption
/// keeps the handshake cheap).
#[derive(Clone)]
pub struct ControlClient {
    /// The control nodes, the first the one joined; all share one store.
    addresses: Vec<ControlAddress>,
    /// The one that answered last, tried first.
    current: Arc<std::sync::atomic::AtomicUsize>,
    config: Arc<rustls::ClientConfig>,
    report: VerifyReport,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl ControlClient {
    pub fn new(
        address: ControlAddress,
        pin: &Thumbprint,
        identity: Option<(&[u8], &[u8])>,
    ) -> Result<Self, ClusterError> {
        let (config, report) = tls::client_config(pin, identity)?;
        Ok(Self {
            addresses: vec![address],
            current: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            config,
            report,
        })
    }

    /// Adds control nodes to fail over to (they share the first one's store and cluster CA).
    pub fn with_fallbacks(mut self, also: Vec<ControlAddress>) -> Self {
        for address in also {
            if !self.addresses.contains(&address) {
                self.addresses.push(address);
            }
        }
        self
    }

    /// The control node tried first: the one that answered last.
    pub fn address(&self) -> &ControlAddress {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed);
        &self.addresses[i % self.addresses.len()]
    }

    /// Makes one call and returns the answer; a refusal is [`ClusterError::Refused`]. A control
    /// node that cannot be reached (or dies before it answers) is followed by the next one, in
    /// turn; the first that answers is tried first from then on.
    pub async fn call(&self, call: NodeCall) -> Result<ControlAnswer, ClusterError> {
        let count = self.addresses.len();
        let first = self.current.load(std::sync::atomic::Ordering::Relaxed);
        let mut last_error = None;
        for step in 0..count {
            let index = (first + step) % count;
            let address = &self.addresses[index];
            let answer = tokio::time::timeout(CALL_TIMEOUT, self.call_inner(address, &call))
                .await
                .map_err(|_| ClusterError::Unreachable {
                    address: address.to_string(),
                    reason: format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
                })
                .and_then(|r| r);
            match answer {
                Ok(answer) => {
                    if index != first {
                        tracing::warn!(control = %address, "failed over to this control node");
                        self.current
                            .store(index, std::sync::atomic::Ordering::Relaxed);
                    }
                    return match answer {
                        ControlAnswer::Refused(refusal) => Err(ClusterError::Refused(refusal)),
                        other => Ok(other),
                    };
                }
                Err(e @ ClusterError::Unreachable { .. }) if count > 1 => {
                    tracing::warn!(control = %address, error = %e, "control node unreachable");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ClusterError::Unreachable {
            address: self.address().to_string(),
            reason: "no control node".into(),
        }))
    }

    async fn call_inner(
        &self,
        target: &ControlAddress,
        call: &NodeCall,
    ) -> Result<ControlAnswer, ClusterError> {
        let address = target.to_string();
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| ClusterError::Unreachable {
                address: address.clone(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let mut tls = connector
            .connect(target.server_name()?, tcp)
            .await
            .map_err(|e| match self.report.take() {
                Some(reason) => ClusterError::NotTrusted {
                    address: address.clone(),
                    reason,
                },
                None => ClusterError::Unreachable {
                    address: address.clone(),
                    reason: format!(
                        "TLS handshake failed ({e}); is this the cluster port (default \
                         {DEFAULT_PORT}) of a Gatehouse control node?"
                    ),
                },
            })?;
        wire::write_frame(&mut tls, call).await?;
        let answer = wire::read_frame(&mut tls).await.map_err(|e| match e {
            ClusterError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                ClusterError::Unreachable {
                    address: address.clone(),
                    reason: "the control node closed the connection without answering".into(),
                }
            }
            other => other,
        })?;
        Ok(answer)
    }
}

/// What `gatehouse join` asks for.
#[derive(Debug)]
pub struct JoinOptions {
    pub control: ControlAddress,
    /// More control nodes on the same store, to fail over to.
    pub also: Vec<ControlAddress>,
    pub token: Option<SecretString>,
    pub pin: Thumbprint,
    pub node_id: String,
    pub hostname: String,
    pub address: String,
    pub description: String,
    pub version: String,
}

/// The outcome of a join.
#[derive(Debug)]
pub struct JoinOutcome {
    pub identity: NodeIdentity,
    pub relinked: bool,
    pub rejoined: bool,
}

/// Joins (or, with an identity already in `dir` for the same node id, rejoins) the cluster and
/// saves the identity in `dir`.
pub async fn join(dir: &Path, options: JoinOptions) -> Result<JoinOutcome, ClusterError> {
    let existing = NodeIdentity::load(dir)?;
    let rejoin = existing
        .as_ref()
        .filter(|id| id.node_id == options.node_id.trim() && id.pin == options.pin);
    let (key, client) = match rejoin {
        Some(identity) => (
            NodeKey::from_pem(&identity.key.to_pem())?,
            ControlClient::new(
                options.control.clone(),
                &options.pin,
                Some((&identity.certificate_der, identity.key.to_der().expose())),
            )?
            .with_fallbacks(options.also.clone()),
        ),
        None => (
            NodeKey::generate()?,
            ControlClient::new(options.control.clone(), &options.pin, None)?
                .with_fallbacks(options.also.clone()),
        ),
    };
    if rejoin.is_none() && options.token.is_none() {
        return Err(ClusterError::NotJoined(
            "a join token is needed (--token): make one with `gatehouse node token` on the control \
             node"
                .into(),
        ));
    }
    let request = JoinRequest {
        token: options
            .token
            .unwrap_or_else(|| SecretString::new(String::new())),
        node_id: options.node_id.clone(),
        hostname: options.hostname.clone(),
        address: options.address.clone(),
        description: options.description.clone(),
        public_key: key.public_key(),
        version: options.version.clone(),
    };
    let joined = match client.call(NodeCall::Join(request)).await? {
        ControlAnswer::Joined(j) => j,
        other => {
            return Err(ClusterError::Protocol(format!(
                "unexpected answer to a join: {other:?}"
            )));
        }
    };
    let relinked = joined.relinked;
    let identity = NodeIdentity {
        node_id: joined.node_id,
        control: options.control,
        also: options.also,
        pin: options.pin,
        certificate_der: joined.certificate_der,
        ca_der: joined.ca_der,
        key,
    };
    identity.save(dir)?;
    // A removed node that comes back with its old identity is relinked, not rejoined.
    Ok(JoinOutcome {
        identity,
        relinked,
        rejoined: rejoin.is_some() && !relinked,
    })
}

/// The cluster state directory inside a data directory.
pub fn cluster_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster")
}

/// Reports to the control node every [`HEARTBEAT_INTERVAL`] until `stop` completes; logs when
/// the control node becomes unreachable and when it is back, once each. Sessions an
/// administrator ended from the control node are handed to `terminate`.
pub async fn heartbeat_loop(
    client: ControlClient,
    beat: Heartbeat,
    terminate: impl Fn(Termination),
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut reachable = true;
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticker.tick() => {}
        }
        match client.call(NodeCall::Heartbeat(beat.clone())).await {
            Ok(answer) => {
                if let ControlAnswer::HeartbeatOk { terminate: ended } = answer {
                    for termination in ended {
                        terminate(termination);
                    }
                }
                if !reachable {
                    tracing::info!(control = %client.address(), "control node reachable again");
                }
                reachable = true;
            }
            Err(ClusterError::Refused(refusal)) => {
                // Said every time: an operator removed this node, or it joined elsewhere.
                tracing::error!(control = %client.address(), reason = %refusal, "the control node refuses this node");
                reachable = true;
            }
            Err(e) => {
                if reachable {
                    tracing::warn!(control = %client.address(), error = %e, "control node unreachable");
                }
                reachable = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_urls() {
        let ok = |u: &str, host: &str, port: u16| {
            assert_eq!(
                ControlAddress::parse(u).unwrap(),
                ControlAddress {
                    host: host.into(),
                    port
                },
                "{u}"
            );
        };
        ok("https://control:8649", "control", 8649);
        ok("https://control", "control", DEFAULT_PORT);
        ok("control.example:9000/", "control.example", 9000);
        ok("https://127.0.0.1:1234", "127.0.0.1", 1234);
        ok("https://[::1]:1234", "::1", 1234);
        ok("[::1]", "::1", DEFAULT_PORT);
        for bad in [
            "",
            "http://control:8649",
            "https://control:port",
            "https://control:8649/path",
            "https://user@control",
            "https://control:0",
            "::1",
        ] {
            assert!(ControlAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
