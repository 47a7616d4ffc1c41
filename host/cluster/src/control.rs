//! The control node's side: join tokens, the node registry (join, rejoin, relink, heartbeats,
//! edits, soft and hard deletes), managed networks, and the cluster port's accept loop.

use crate::ClusterError;
use crate::authority::SessionAuthority;
use crate::pki::{ClusterCa, Thumbprint};
use crate::tls;
use crate::wire::{
    self, ControlAnswer, Heartbeat, JoinRequest, Joined, NodeCall, Refusal, RefusalKind,
    Termination,
};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditKind, JoinToken, ManagedNetwork, Name, Node, SecretString};
use gatehouse_store::{JOIN_TOKENS, NETWORKS, NODES, SETTINGS, Store, StoreError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The longest a join token may live.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Cluster connections served at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 256;
/// How long a connection may take to finish its TLS handshake, and may stay idle between calls.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Who is calling: the connection's source and the certificate it presented, if any.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    pub certificate: Option<Thumbprint>,
}

/// Why an administrator's node or network change was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeAdminError {
    #[error("node `{0}` does not exist")]
    UnknownNode(String),
    #[error("node `{0}` was removed: relink it (join again with the same id) before changing it")]
    NodeRemoved(String),
    #[error("`{0}` is not a network: give CIDR (`10.0.0.0/24`) or one address")]
    BadNetwork(String),
    #[error("network `{network}` is already managed by node `{node}`")]
    NetworkTaken { network: String, node: String },
    #[error("network `{0}` is not managed by any node")]
    UnknownNetwork(String),
    #[error("a join token lives at most 7 days (asked: {0} s)")]
    TokenTooLong(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new join token: the text (shown once, stored only as its SHA-256) and its record.
#[derive(Debug)]
pub struct IssuedToken {
    pub token: SecretString,
    pub record: JoinToken,
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes a single-use join token valid for `lifetime`.
pub fn issue_token(
    store: &Store,
    auditor: &Auditor,
    lifetime: Duration,
    created_by: &str,
) -> Result<IssuedToken, NodeAdminError> {
    use base64::Engine;
    use rand::RngCore;
    if lifetime > MAX_TOKEN_LIFETIME || lifetime.is_zero() {
        return Err(NodeAdminError::TokenTooLong(lifetime.as_secs()));
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!(
        "ghj_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = sha256_hex(token.as_bytes());
    let now = Timestamp::now();
    let lifetime_ms = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
    let record = JoinToken {
        id: hash[..12].to_string(),
        created: now,
        expires: Timestamp(now.0.saturating_add(lifetime_ms)),
        created_by: created_by.to_string(),
    };
    store.write(|txn| {
        // Expired tokens are cleared whenever a new one is made.
        for (key, old) in txn.entries(&JOIN_TOKENS)? {
            if old.expires < now {
                txn.delete(&JOIN_TOKENS, &key)?;
            }
        }
        txn.put(&JOIN_TOKENS, &hash, &record)?;
        auditor.record_in(
            txn,
            Entry::new(AuditKind::JoinTokenIssued, "join token issued")
                .user(created_by)
                .field("token", record.id.clone())
                .field("expires", record.expires.0),
        )?;
        Ok::<_, NodeAdminError>(())
    })?;
    Ok(IssuedToken {
        token: SecretString::new(token),
        record,
    })
}

/// The control node's registry and the cluster port's handler.
pub struct Control {
    store: Arc<Store>,
    auditor: Arc<Auditor>,
    ca: ClusterCa,
    version: String,
    refusals: JoinThrottle,
    /// Decides sessions for session nodes; without it their session calls are refused.
    sessions: Option<Arc<SessionAuthority>>,
    /// Where the nodes' recordings go (the control node's recordings directory).
    recordings: Option<std::path::PathBuf>,
}

/// Refused joins per source address: past [`JoinThrottle::LIMIT`] in a minute an address is
/// refused without a look at its token and audited once, so that nobody who can reach the
/// cluster port can fill the audit trail or guess at tokens quickly.
#[derive(Default)]
struct JoinThrottle {
    recent: std::sync::Mutex<std::collections::HashMap<IpAddr, (std::time::Instant, u32)>>,
}

impl JoinThrottle {
    const LIMIT: u32 = 10;
    const WINDOW: Duration = Duration::from_secs(60);
    /// Addresses remembered at most; older windows are dropped first.
    const ADDRESSES: usize = 4096;

    /// Whether `address` has used up its refusals this minute.
    fn exhausted(&self, address: IpAddr) -> bool {
        let Ok(recent) = self.recent.lock() else {
            return false;
        };
        recent
            .get(&address)
            .is_some_and(|(since, count)| since.elapsed() < Self::WINDOW && *count >= Self::LIMIT)
    }

    /// Counts one refusal; true when it is the one that uses the minute up.
    fn count(&self, address: IpAddr) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        if recent.len() >= Self::ADDRESSES {
            recent.retain(|_, (since, _)| since.elapsed() < Self::WINDOW);
        }
        if recent.len() >= Self::ADDRESSES && !recent.contains_key(&address) {
            return false;
        }
        let entry = recent
            .entry(address)
            .or_insert((std::time::Instant::now(), 0));
        if entry.0.elapsed() >= Self::WINDOW {
            *entry = (std::time::Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1 == Self::LIMIT
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("ca", &self.ca).finish()
    }
}

impl Control {
    pub fn new(store: Arc<Store>, auditor: Arc<Auditor>, ca: ClusterCa, version: &str) -> Self {
        Self {
            store,
            auditor,
            ca,
            version: version.to_string(),
            refusals: JoinThrottle::default(),
            sessions: None,
            recordings: None,
        }
    }

    /// Takes the nodes' recordings into `dir` (and their audit events and session records).
    pub fn with_recordings(mut self, dir: std::path::PathBuf) -> Self {
        self.recordings = Some(dir);
        self
    }

    /// Serves session nodes' logins, session and channel decisions with `authority`.
    pub fn with_sessions(mut self, authority: Arc<SessionAuthority>) -> Self {
        self.sessions = Some(authority);
        self
    }

    pub fn ca(&self) -> &ClusterCa {
        &self.ca
    }

    /// Answers one call.
    pub async fn handle(&self, peer: &Peer, call: NodeCall) -> ControlAnswer {
        let answer = match call {
            NodeCall::Join(request) => self.join(peer, request).map(ControlAnswer::Joined),
            NodeCall::Heartbeat(beat) => self
                .heartbeat(peer, beat)
                .map(|terminate| ControlAnswer::HeartbeatOk { terminate }),
            session_call => self.session_call(peer, session_call).await,
        };
        answer.unwrap_or_else(ControlAnswer::Refused)
    }

    /// A member node's call about one of its sessions.
    async fn session_call(&self, peer: &Peer, call: NodeCall) -> Result<ControlAnswer, Refusal> {
        let node = self.member(peer)?;
        let call = match (call, &self.recordings) {
            (NodeCall::Ship(ship), Some(_)) => {
                return crate::shipping::take_ship(&self.store, &node, ship)
                    .map(ControlAnswer::Shipped);
            }
            (NodeCall::RecordingPart(part), Some(dir)) => {
                let (store, dir) = (self.store.clone(), dir.clone());
                let node = node.clone();
                return tokio::task::spawn_blocking(move || {
                    crate::shipping::take_recording_part(&store, &dir, &node, part)
                })
                .await
                .map_err(|e| self.internal(e))?
                .map(ControlAnswer::RecordingHeld);
            }
            (NodeCall::RecordingDelivered(done), Some(_)) => {
                return crate::shipping::take_recording_delivered(
                    &self.store,
                    &node,
                    &done.session,
                )
                .map(|()| ControlAnswer::Done);
            }
            (
                NodeCall::Ship(_) | NodeCall::RecordingPart(_) | NodeCall::RecordingDelivered(_),
                None,
            ) => {
                return Err(Refusal::new(
                    RefusalKind::NotServed,
                    "this control node does not take recordings from nodes",
                ));
            }
            (call, _) => call,
        };
        let Some(sessions) = &self.sessions else {
            return Err(Refusal::new(
                RefusalKind::NotServed,
                "this control node does not serve sessions for nodes",
            ));
        };
        match call {
            NodeCall::Authenticate(call) => {
                sessions.authenticate(&node, call).await.map(login_answer)
            }
            NodeCall::AnswerQuestion(call) => sessions
                .answer_question(&node, call)
                .await
                .map(login_answer),
            NodeCall::Authorize(call) => {
                sessions
                    .authorize(peer, &node, call)
                    .await
                    .map(|decided| match decided {
                        crate::authority::Decided::Granted(granted) => {
                            ControlAnswer::Granted(granted)
                        }
                        crate::authority::Decided::Held(held) => ControlAnswer::Held(held),
                    })
            }
            NodeCall::AwaitDecision(call) => {
                sessions
                    .await_decision(peer, &node, call)
                    .await
                    .map(|granted| match granted {
                        Some(granted) => ControlAnswer::Granted(Box::new(granted)),
                        None => ControlAnswer::Pending,
                    })
            }
            NodeCall::Channel(call) => sessions
                .channel(&node, call)
                .map(ControlAnswer::ChannelDecided),
            NodeCall::PinHostKey(call) => sessions
                .pin_host_key(&node, call)
                .map(ControlAnswer::HostKey),
            NodeCall::RdpSecret(call) => sessions
                .rdp_secret(&node, call)
                .map(ControlAnswer::RdpSecret),
            NodeCall::PinCertificate(call) => sessions
                .pin_certificate(&node, call)
                .map(ControlAnswer::HostKey),
            NodeCall::TargetLogin(call) => sessions
                .target_login(&node, call)
                .await
                .map(|()| ControlAnswer::Done),
            NodeCall::SessionEnded(call) => sessions
                .session_ended(&node, &call.grant)
                .map(|()| ControlAnswer::Done),
            NodeCall::Join(_)
            | NodeCall::Heartbeat(_)
            | NodeCall::Ship(_)
            | NodeCall::RecordingPart(_)
            | NodeCall::RecordingDelivered(_) => {
                Err(Refusal::new(RefusalKind::BadCall, "not a session call"))
            }
        }
    }

    fn internal(&self, error: impl std::fmt::Display) -> Refusal {
        tracing::error!(error = %error, "cluster call failed");
        Refusal::new(
            RefusalKind::Internal,
            "the control node could not complete the call (see its log)",
        )
    }

    fn refuse_join(&self, peer: &Peer, node_id: &str, refusal: Refusal) -> Refusal {
        if self.refusals.count(peer.address.ip()) {
            tracing::warn!(client = %peer.address.ip(), "refused joins from this address are throttled for a minute");
        }
        self.auditor.record_best_effort(
            Entry::new(AuditKind::NodeJoinRefused, refusal.message.clone())
                .client(peer.address.ip().to_string())
                .target(node_id)
                .field("reason", format!("{:?}", refusal.kind)),
        );
        refusal
    }

    fn join(&self, peer: &Peer, request: JoinRequest) -> Result<Joined, Refusal> {
        if self.refusals.exhausted(peer.address.ip()) {
            // Not audited again: the refusal that used the minute up was.
            return Err(Refusal::new(
                RefusalKind::Throttled,
                format!(
                    "too many refused joins from {} in the last minute: wait a minute, then join \
                     with a new token from `gatehouse node token`",
                    peer.address.ip()
                ),
            ));
        }
        let typed = request.node_id.trim().to_string();
        if typed.is_empty() {
            return Err(self.refuse_join(
                peer,
                "",
                Refusal::new(
                    RefusalKind::NodeIdMissing,
                    "no node id given: join with --node-id NAME (1-64 letters, digits, `.`, `_`, `-`)",
                ),
            ));
        }
        let node_id = match Name::new(typed.clone()) {
            Ok(name) => name,
            Err(e) => {
                return Err(self.refuse_join(
                    peer,
                    "",
                    Refusal::new(RefusalKind::NodeIdInvalid, format!("invalid node id: {e}")),
                ));
            }
        };
        let now = Timestamp::now();
        let token_hash = sha256_hex(request.token.expose().as_bytes());
        let address = if request.address.trim().is_empty() {
            peer.address.ip().to_string()
        } else {
            request.address.trim().to_string()
        };
        let outcome = self.store.write(|txn| {
            let existing = txn.get(&NODES, node_id.as_str())?;
            // A member presenting its own certificate rejoins (its address changed) without a
            // token.
            let rejoin = matches!(
                (&existing, &peer.certificate),
                (Some(node), Some(cert)) if node.deleted.is_none() && node.thumbprint == cert.as_str()
            );
            if !rejoin {
                let Some(token) = txn.get(&JOIN_TOKENS, &token_hash)? else {
                    return Ok(Err(Refusal::new(
                        RefusalKind::TokenUnknown,
                        "the join token is not valid here: mistyped, already used, or made on another \
                         cluster; make a new one with `gatehouse node token` on the control node",
                    )));
                };
                if token.expires < now {
                    txn.delete(&JOIN_TOKENS, &token_hash)?;
                    return Ok(Err(Refusal::new(
                        RefusalKind::TokenExpired,
                        format!(
                            "the join token {} expired {} s ago; make a new one with `gatehouse node \
                             token --expires 15m`",
                            token.id,
                            now.0.saturating_sub(token.expires.0) / 1000
                        ),
                    )));
                }
                if let Some(node) = &existing
                    && node.deleted.is_none()
                {
                    return Ok(Err(Refusal::new(
                        RefusalKind::NodeIdTaken,
                        format!(
                            "node id `{node_id}` is already taken by a member node (host `{}`, \
                             address `{}`): choose another id, or remove that node first with \
                             `gatehouse node delete {node_id}`",
                            node.hostname, node.address
                        ),
                    )));
                }
            }
            let certificate = match self.ca.issue_node(node_id.as_str(), &request.public_key) {
                Ok(c) => c,
                Err(e) => {
                    return Ok(Err(Refusal::new(
                        RefusalKind::BadCall,
                        format!("cannot certify the node's key: {e}"),
                    )));
                }
            };
            let thumbprint = Thumbprint::of_certificate(&certificate);
            let relinked = existing.as_ref().is_some_and(|n| n.deleted.is_some());
            let node = match existing {
                Some(mut node) => {
                    node.hostname = request.hostname.clone();
                    node.address = address.clone();
                    if !request.description.is_empty() {
                        node.description = request.description.clone();
                    }
                    node.thumbprint = thumbprint.to_string();
                    node.version = request.version.clone();
                    node.deleted = None;
                    node.last_seen = Some(now);
                    node
                }
                None => Node {
                    id: node_id.clone(),
                    hostname: request.hostname.clone(),
                    address: address.clone(),
                    description: request.description.clone(),
                    use_hostname: false,
                    thumbprint: thumbprint.to_string(),
                    ssh_port: None,
                    rdp_port: None,
                    version: request.version.clone(),
                    joined: now,
                    last_seen: Some(now),
                    deleted: None,
                },
            };
            txn.put(&NODES, node_id.as_str(), &node)?;
            if !rejoin {
                txn.delete(&JOIN_TOKENS, &token_hash)?;
            }
            let what = if rejoin {
                "rejoined"
            } else if relinked {
                "relinked"
            } else {
                "joined"
            };
            self.auditor.record_in(
                txn,
                Entry::new(AuditKind::NodeJoined, format!("node `{node_id}` {what}"))
                    .client(peer.address.ip().to_string())
                    .target(node_id.as_str())
                    .field("hostname", node.hostname.clone())
                    .field("address", node.address.clone())
                    .field("thumbprint", node.thumbprint.clone())
                    .field("how", what),
            )?;
            Ok::<_, StoreError>(Ok(Joined {
                node_id: node_id.to_string(),
                certificate_der: certificate,
                ca_der: self.ca.cert_der().to_vec(),
                relinked,
            }))
        });
        match outcome {
            Ok(Ok(joined)) => Ok(joined),
            Ok(Err(refusal)) => Err(self.refuse_join(peer, node_id.as_str(), refusal)),
            Err(e) => Err(self.internal(e)),
        }
    }

    /// The member node whose certificate the peer presented.
    fn member(&self, peer: &Peer) -> Result<Node, Refusal> {
        let not_member = || {
            Refusal::new(
                RefusalKind::NotAMember,
                "this node's certificate does not belong to a member of the cluster (the node was \
                 removed, or joined another control node): join again",
            )
        };
        let cert = peer.certificate.as_ref().ok_or_else(not_member)?;
        let nodes = self.store.list(&NODES).map_err(|e| self.internal(e))?;
        nodes
            .into_iter()
            .find(|n| n.deleted.is_none() && n.thumbprint == cert.as_str())
            .ok_or_else(not_member)
    }

    fn heartbeat(&self, peer: &Peer, beat: Heartbeat) -> Result<Vec<Termination>, Refusal> {
        let node = self.member(peer)?;
        let result = self.store.write(|txn| {
            let Some(mut current) = txn.get(&NODES, node.id.as_str())? else {
                return Ok::<_, StoreError>(Vec::new());
            };
            current.last_seen = Some(Timestamp::now());
            current.ssh_port = beat.ssh_port;
            current.rdp_port = beat.rdp_port;
            current.version = beat.version.clone();
            if !beat.hostname.is_empty() {
                current.hostname = beat.hostname.clone();
            }
            txn.put(&NODES, node.id.as_str(), &current)?;
            // Sessions ended from the centre since the last call: handed over once.
            let key = termination_key(node.id.as_str());
            let pending: Vec<Termination> = txn
                .get(&SETTINGS, &key)?
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            if !pending.is_empty() {
                txn.delete(&SETTINGS, &key)?;
            }
            Ok(pending)
        });
        result.map_err(|e| self.internal(e))
    }

    /// Serves the cluster port until `stop` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        names: &[String],
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ClusterError> {
        let issued = self.ca.issue_server(names)?;
        let acceptor =
            tokio_rustls::TlsAcceptor::from(tls::server_config(self.ca.cert_der(), &issued)?);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(stop);
        tracing::info!(
            listen = %listener.local_addr()?,
            thumbprint = %self.ca.thumbprint()?,
            version = %self.version,
            "cluster port listening"
        );
        loop {
            let permit = tokio::select! {
                () = &mut stop => return Ok(()),
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return Ok(()),
                },
            };
            let (stream, address) = tokio::select! {
                () = &mut stop => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster port: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let control = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = control.connection(acceptor, stream, address).await {
                    tracing::debug!(client = %address, error = %e, "cluster connection ended");
                }
            });
        }
    }

    async fn connection(
        &self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: tokio::net::TcpStream,
        address: SocketAddr,
    ) -> Result<(), ClusterError> {
        // Calls and answers are small and latency-bound: no Nagle delay.
        let _ = stream.set_nodelay(true);
        let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
            .await
            .map_err(|_| ClusterError::Protocol("TLS handshake timed out".into()))??;
        let certificate = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| Thumbprint::of_certificate(c));
        let peer = Peer {
            address,
            certificate,
        };
        loop {
            let call =
                match tokio::time::timeout(IDLE_TIMEOUT, wire::read_frame::<_, NodeCall>(&mut tls))
                    .await
                {
                    Err(_) => return Ok(()),
                    Ok(Err(ClusterError::Io(e)))
                        if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        return Ok(());
                    }
                    Ok(Err(e @ ClusterError::Version { .. })) => {
                        let refusal = Refusal::new(RefusalKind::Version, e.to_string());
                        wire::write_frame(&mut tls, ControlAnswer::Refused(refusal)).await?;
                        return Err(e);
                    }
                    Ok(Err(e)) => {
                        let refusal = Refusal::new(RefusalKind::BadCall, e.to_string());
                        wire::write_frame(&mut tls, ControlAnswer::Refused(refusal)).await?;
                        return Err(e);
                    }
                    Ok(Ok(call)) => call,
                };
            let answer = self.handle(&peer, call).await;
            wire::write_frame(&mut tls, answer).await?;
        }
    }
}

fn login_answer(step: crate::authority::LoginStep) -> ControlAnswer {
    match step {
        crate::authority::LoginStep::Done(authenticated) => {
            ControlAnswer::Authenticated(authenticated)
        }
        crate::authority::LoginStep::Question(question) => ControlAnswer::Question(question),
    }
}

fn termination_key(node: &str) -> String {
    format!("node_terminate:{node}")
}

/// Asks node `node` to end session `session` at its next call (within a heartbeat, 10 s).
pub fn request_termination(
    store: &Store,
    auditor: &Auditor,
    node: &str,
    termination: Termination,
) -> Result<(), StoreError> {
    store.write(|txn| {
        let key = termination_key(node);
        let mut pending: Vec<Termination> = txn
            .get(&SETTINGS, &key)?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        if !pending.contains(&termination) {
            pending.push(termination.clone());
        }
        txn.put(
            &SETTINGS,
            &key,
            &serde_json::to_value(&pending).unwrap_or_default(),
        )?;
        auditor.record_in(
            txn,
            Entry::new(
                AuditKind::AdminChange,
                format!(
                    "session `{}` on node `{node}` to be ended: {}",
                    termination.session, termination.reason
                ),
            )
            .session(termination.session.clone())
            .user(termination.by.clone())
            .field("node", node.to_string()),
        )?;
        Ok(())
    })
}

/// Every node, soft-deleted ones only when `include_disconnected`.
pub fn list_nodes(store: &Store, include_disconnected: bool) -> Result<Vec<Node>, StoreError> {
    Ok(store
        .list(&NODES)?
        .into_iter()
        .filter(|n| include_disconnected || n.deleted.is_none())
        .collect())
}

/// A node with what the control node knows around it: its status now and its networks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    pub status: gatehouse_core::NodeStatus,
    pub networks: Vec<String>,
}

/// [`list_nodes`] with each node's status and managed networks.
pub fn node_views(store: &Store, include_disconnected: bool) -> Result<Vec<NodeView>, StoreError> {
    let networks = store.list(&NETWORKS)?;
    let now = Timestamp::now();
    Ok(list_nodes(store, include_disconnected)?
        .into_iter()
        .map(|node| NodeView {
            status: node.status(now),
            networks: networks
                .iter()
                .filter(|n| n.node == node.id)
                .map(|n| n.network.clone())
                .collect(),
            node,
        })
        .collect())
}

/// What an administrator may change on a node.
#[derive(Debug, Default, Clone)]
pub struct NodeEdit {
    pub description: Option<String>,
    pub address: Option<String>,
    pub use_hostname: Option<bool>,
}

/// Changes a member node's description, address or launch name.
pub fn edit_node(
    store: &Store,
    auditor: &Auditor,
    id: &str,
    edit: &NodeEdit,
    by: &str,
) -> Result<Node, NodeAdminError> {
    store.write(|txn| {
        let mut node = txn
            .get(&NODES, id)?
            .ok_or_else(|| NodeAdminError::UnknownNode(id.to_string()))?;
        if node.deleted.is_some() {
            return Err(NodeAdminError::NodeRemoved(id.to_string()));
        }
        if let Some(d) = &edit.description {
            node.description = d.clone();
        }
        if let Some(a) = &edit.address {
            node.address = a.trim().to_string();
        }
        if let Some(u) = edit.use_hostname {
            node.use_hostname = u;
        }
        txn.put(&NODES, id, &node)?;
        auditor.record_in(
            txn,
            Entry::new(AuditKind::AdminChange, format!("node `{id}` edited"))
                .user(by)
                .target(id)
                .field("address", node.address.clone())
                .field("use_hostname", node.use_hostname),
        )?;
        Ok(node)
    })
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Removed from the cluster; the record and what references it stay for a relink.
    Soft,
    /// Gone for good, with its managed networks.
    Hard { networks: usize },
}

/// Removes a node: a member is soft-deleted (`hard` false), a removed node, or any node with
/// `hard`, is deleted for good together with its managed networks.
pub fn delete_node(
    store: &Store,
    auditor: &Auditor,
    id: &str,
    hard: bool,
    by: &str,
) -> Result<Deleted, NodeAdminError> {
    store.write(|txn| {
        let mut node = txn
            .get(&NODES, id)?
            .ok_or_else(|| NodeAdminError::UnknownNode(id.to_string()))?;
        let outcome = if hard || node.deleted.is_some() {
            txn.delete(&NODES, id)?;
            let mut networks = 0;
            for (key, network) in txn.entries(&NETWORKS)? {
                if network.node.as_str() == id {
                    txn.delete(&NETWORKS, &key)?;
                    networks += 1;
                }
            }
            Deleted::Hard { networks }
        } else {
            node.deleted = Some(Timestamp::now());
            txn.put(&NODES, id, &node)?;
            Deleted::Soft
        };
        let detail = match outcome {
            Deleted::Soft => format!("node `{id}` removed (soft delete; a relink reuses its id)"),
            Deleted::Hard { networks } => {
                format!("node `{id}` deleted for good with {networks} managed networks")
            }
        };
        auditor.record_in(
            txn,
            Entry::new(AuditKind::AdminChange, detail)
                .user(by)
                .target(id)
                .field("hard", matches!(outcome, Deleted::Hard { .. })),
        )?;
        Ok(outcome)
    })
}

/// Parses a network as an administrator types it: CIDR, or one address (a /32 or /128); host
/// bits are cleared (`10.0.0.7/24` is `10.0.0.0/24`).
pub fn parse_network(text: &str) -> Result<ipnet::IpNet, NodeAdminError> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| NodeAdminError::BadNetwork(text.to_string()))
}

/// Assigns a network to a member node.
pub fn add_network(
    store: &Store,
    auditor: &Auditor,
    network: &str,
    node: &str,
    description: &str,
    by: &str,
) -> Result<ManagedNetwork, NodeAdminError> {
    let net = parse_network(network)?;
    let key = net.to_string();
    store.write(|txn| {
        let owner = txn
            .get(&NODES, node)?
            .ok_or_else(|| NodeAdminError::UnknownNode(node.to_string()))?;
        if owner.deleted.is_some() {
            return Err(NodeAdminError::NodeRemoved(node.to_string()));
        }
        if let Some(existing) = txn.get(&NETWORKS, &key)? {
            return Err(NodeAdminError::NetworkTaken {
                network: key.clone(),
                node: existing.node.to_string(),
            });
        }
        let record = ManagedNetwork {
            network: key.clone(),
            node: owner.id.clone(),
            description: description.to_string(),
            created: Timestamp::now(),
        };
        txn.put(&NETWORKS, &key, &record)?;
        auditor.record_in(
            txn,
            Entry::new(
                AuditKind::AdminChange,
                format!("network `{key}` managed by node `{node}`"),
            )
            .user(by)
            .target(node),
        )?;
        Ok(record)
    })
}

/// Stops managing a network.
pub fn remove_network(
    store: &Store,
    auditor: &Auditor,
    network: &str,
    by: &str,
) -> Result<ManagedNetwork, NodeAdminError> {
    let key = parse_network(network)?.to_string();
    store.write(|txn| {
        let record = txn
            .get(&NETWORKS, &key)?
            .ok_or_else(|| NodeAdminError::UnknownNetwork(key.clone()))?;
        txn.delete(&NETWORKS, &key)?;
        auditor.record_in(
            txn,
            Entry::new(
                AuditKind::AdminChange,
                format!("network `{key}` no longer managed"),
            )
            .user(by)
            .target(record.node.as_str()),
        )?;
        Ok(record)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_canonically() {
        assert_eq!(
            parse_network("10.0.0.7/24").unwrap().to_string(),
            "10.0.0.0/24"
        );
        assert_eq!(
            parse_network(" 192.0.2.1 ").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(
            parse_network("2001:db8::1/64").unwrap().to_string(),
            "2001:db8::/64"
        );
        for bad in ["", "10.0.0.0/33", "db1", "10.0.0/24"] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
    }
}
