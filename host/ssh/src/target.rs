//! Dialing a target: TCP connect, host-key verification (pinned or trust-on-first-use), and login
//! with the vault's credential. Requires a [`TargetAuthorization`], so nothing dials unauthorized.

use crate::permit::Permit;
use crate::{LocalAuthority, Services};
use gatehouse_audit::Auditor;
use gatehouse_audit::Entry;
use gatehouse_cluster::RemotePermit;
use gatehouse_core::{Asset, AuditKind, HostKeyPolicy};
use gatehouse_policy::TargetAuthorization;
use gatehouse_store::{ASSETS, Store, StoreError};
use gatehouse_vault::TargetCredential;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate, decode_secret_key};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the target could not be reached or logged in to. `Display` is for the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot connect to {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("timed out connecting to {0}")]
    Timeout(String),
    #[error("host key mismatch: pinned {pinned}, presented {presented}")]
    HostKeyMismatch { pinned: String, presented: String },
    #[error("the pinned host key of the asset is not a valid OpenSSH public key")]
    BadPinnedKey,
    #[error("target refused the vault credential ({methods})")]
    CredentialRejected { methods: String },
    #[error("the account holds no credential")]
    NoCredential,
    #[error("the stored private key cannot be used: {0}")]
    BadPrivateKey(String),
    #[error("vault: {0}")]
    Vault(#[from] gatehouse_vault::VaultError),
    #[error("credential store: {0}")]
    CredentialStore(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("ssh protocol error with target: {0}")]
    Protocol(String),
    /// The target closed the connection before the SSH handshake finished (sshd's
    /// MaxStartups, a firewall, a service restarting).
    #[error("the target closed the connection during the SSH handshake: {0}")]
    ClosedDuringHandshake(String),
}

/// What happened in host-key verification, kept by the handler for the dialer to read.
#[derive(Debug, Clone)]
enum HostKeyOutcome {
    Matched,
    Recorded(String),
    Mismatch { pinned: String, presented: String },
    BadPinned,
    StoreFailed(String),
}

/// The russh client handler for target connections: it verifies the host key, and hands the
/// connections the target accepts on a remote forward (`ssh -R`) to the session.
pub struct TargetHandler {
    pins: Pins,
    asset: Asset,
    outcome: Arc<Mutex<Option<HostKeyOutcome>>>,
    /// Where connections on remote forwards go; `None` for connections that never forward
    /// (the credential lifecycle's), whose targets get a refusal.
    forwards: Option<tokio::sync::mpsc::Sender<IncomingForward>>,
}

/// Where a key trusted on first use is pinned: the store here, or the control node's (on a
/// session node).
#[derive(Clone)]
enum Pins {
    Store(Arc<Store>),
    Control(gatehouse_cluster::ControlClient, Arc<RemotePermit>),
}

/// A connection the target accepted on a remote forward the user asked for (`ssh -R`), not yet
/// confirmed to the target: the session opens the matching channel to the user first.
pub(crate) struct IncomingForward {
    pub channel: russh::Channel<russh::client::Msg>,
    pub connected_address: String,
    pub connected_port: u32,
    pub originator_address: String,
    pub originator_port: u32,
    pub reply: russh::client::ChannelOpenHandle,
}

/// Connections on remote forwards waiting for the session to take them; more are refused to the
/// target (it sees "resource shortage" and closes the accepted socket), never queued without bound.
const FORWARD_BACKLOG: usize = 16;

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(Default::default()).to_string()
}

impl TargetHandler {
    fn set(&self, outcome: HostKeyOutcome) {
        if let Ok(mut slot) = self.outcome.lock() {
            *slot = Some(outcome);
        }
    }

    fn compare(&self, pinned_line: &str, presented: &PublicKey) -> bool {
        match gatehouse_auth::parse_public_key(pinned_line) {
            Ok(pinned) if pinned.key_data() == presented.key_data() => {
                self.set(HostKeyOutcome::Matched);
                true
            }
            Ok(pinned) => {
                self.set(HostKeyOutcome::Mismatch {
                    pinned: fingerprint(&pinned),
                    presented: fingerprint(presented),
                });
                false
            }
            Err(_) => {
                self.set(HostKeyOutcome::BadPinned);
                false
            }
        }
    }

    /// Trust on first use: pin the presented key unless another connection pinned one first.
    async fn record_first_use(&self, presented: &PublicKey) -> bool {
        let line = match presented.to_openssh() {
            Ok(line) => line,
            Err(e) => {
                self.set(HostKeyOutcome::StoreFailed(e.to_string()));
                return false;
            }
        };
        let store = match &self.pins {
            Pins::Store(store) => store,
            Pins::Control(control, permit) => {
                let pinned = control.pin_host_key(permit, line).await;
                return match pinned {
                    Ok(None) => {
                        self.set(HostKeyOutcome::Recorded(fingerprint(presented)));
                        true
                    }
                    Ok(Some(earlier)) => self.compare(&earlier, presented),
                    Err(e) => {
                        self.set(HostKeyOutcome::StoreFailed(format!("control node: {e}")));
                        false
                    }
                };
            }
        };
        let name = self.asset.name.to_string();
        let result = store.write(|txn| -> Result<Option<String>, StoreError> {
            let Some(mut asset) = txn.get(&ASSETS, &name)? else {
                return Ok(None);
            };
            match &asset.host_key {
                HostKeyPolicy::Pinned { key } => Ok(Some(key.clone())),
                HostKeyPolicy::TrustOnFirstUse => {
                    asset.host_key = HostKeyPolicy::Pinned { key: line.clone() };
                    txn.put(&ASSETS, &name, &asset)?;
                    Ok(None)
                }
            }
        });
        match result {
            Ok(None) => {
                self.set(HostKeyOutcome::Recorded(fingerprint(presented)));
                true
            }
            Ok(Some(pinned_meanwhile)) => self.compare(&pinned_meanwhile, presented),
            Err(e) => {
                self.set(HostKeyOutcome::StoreFailed(e.to_string()));
                false
            }
        }
    }
}

impl russh::client::Handler for TargetHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_public_key else {
            // Host certificates are not trusted until a CA can be configured.
            self.set(HostKeyOutcome::Mismatch {
                pinned: "a plain host key".into(),
                presented: "a host certificate".into(),
            });
            return Ok(false);
        };
        Ok(match &self.asset.host_key {
            HostKeyPolicy::Pinned { key: pinned } => self.compare(pinned, key),
            HostKeyPolicy::TrustOnFirstUse => self.record_first_use(key).await,
        })
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        let Some(forwards) = &self.forwards else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let incoming = IncomingForward {
            channel,
            connected_address: connected_address.to_string(),
            connected_port,
            originator_address: originator_address.to_string(),
            originator_port,
            reply,
        };
        // Never wait here: this runs in the target connection's loop.
        if let Err(refused) = forwards.try_send(incoming) {
            let incoming = match refused {
                tokio::sync::mpsc::error::TrySendError::Full(i)
                | tokio::sync::mpsc::error::TrySendError::Closed(i) => i,
            };
            incoming
                .reply
                .reject(russh::ChannelOpenFailure::ResourceShortage)
                .await;
        }
        Ok(())
    }
}

/// An authenticated SSH connection to a target.
pub struct TargetConnection {
    pub handle: russh::client::Handle<TargetHandler>,
    /// Connections on remote forwards, taken by the session when the first forward is bound.
    pub(crate) forwarded: Mutex<Option<tokio::sync::mpsc::Receiver<IncomingForward>>>,
}

fn client_config(config: &crate::GatewayConfig) -> russh::client::Config {
    russh::client::Config {
        keepalive_interval: Some(config.keepalive_interval),
        keepalive_max: 3,
        nodelay: true,
        channel_buffer_size: config.channel_buffer_size,
        window_size: config.window_size,
        preferred: crate::preferred_algorithms(),
        ..Default::default()
    }
}

/// Connects to the authorized target and logs in with the vault's credential.
pub(crate) async fn dial(
    services: &Arc<Services>,
    config: &crate::GatewayConfig,
    permit: &Permit,
    session_id: &str,
    from: Option<std::net::IpAddr>,
) -> Result<TargetConnection, DialError> {
    let (forwards, forwarded) = tokio::sync::mpsc::channel(FORWARD_BACKLOG);
    let pins = match (permit, &services.authority) {
        (Permit::Remote(remote), crate::Authority::Remote(control)) => {
            Pins::Control(control.clone(), remote.clone())
        }
        _ => Pins::Store(services.store.clone()),
    };
    let mut handle = connect(
        pins,
        &services.auditor,
        permit.asset(),
        Arc::new(client_config(config)),
        config.connect_timeout,
        Session {
            id: Some(session_id),
            forwards: Some(forwards),
            from,
        },
    )
    .await?;
    match (permit, services.local()) {
        (Permit::Local(authorization), Some(local)) => {
            login(&mut handle, local, authorization, session_id).await?;
        }
        (Permit::Remote(remote), _) => {
            let credential = remote.take_credential().ok_or(DialError::NoCredential)?;
            let result = authenticate(&mut handle, remote.account().as_str(), &credential).await;
            if let crate::Authority::Remote(control) = &services.authority {
                control.target_login(remote, result.is_ok()).await;
            }
            result?;
        }
        (Permit::Local(_), None) => return Err(DialError::NoCredential),
    }
    Ok(TargetConnection {
        handle,
        forwarded: Mutex::new(Some(forwarded)),
    })
}

/// Connects to `asset` and verifies its host key (pinned, or trusted on first use, then pinned
/// and audited), without logging in. Sessions reach it through [`dial`], which demands a
/// [`TargetAuthorization`]; the credential lifecycle (the system acting on its own accounts,
/// not a user) calls it directly, so that every connection to a target checks the host key the
/// same way.
pub async fn connect_verified(
    store: &Arc<Store>,
    auditor: &Auditor,
    asset: &Asset,
    client_config: Arc<russh::client::Config>,
    connect_timeout: Duration,
    session_id: Option<&str>,
) -> Result<russh::client::Handle<TargetHandler>, DialError> {
    connect(
        Pins::Store(store.clone()),
        auditor,
        asset,
        client_config,
        connect_timeout,
        Session {
            id: session_id,
            forwards: None,
            from: None,
        },
    )
    .await
}

/// What a connection is for: the session it serves (audited), where the target's remote
/// forwards go, and the address it leaves from (`None`: the gateway's).
struct Session<'a> {
    id: Option<&'a str>,
    forwards: Option<tokio::sync::mpsc::Sender<IncomingForward>>,
    from: Option<std::net::IpAddr>,
}

async fn connect(
    pins: Pins,
    auditor: &Auditor,
    asset: &Asset,
    client_config: Arc<russh::client::Config>,
    connect_timeout: Duration,
    session: Session<'_>,
) -> Result<russh::client::Handle<TargetHandler>, DialError> {
    let Session {
        id: session_id,
        forwards,
        from,
    } = session;
    let asset = asset.clone();
    let address = gatehouse_net::host_port(&asset.address, asset.port);
    let socket = gatehouse_net::connect(&asset.address, asset.port, from, connect_timeout)
        .await
        .map_err(|e| match e {
            gatehouse_net::ConnectError::Timeout { address, .. } => DialError::Timeout(address),
            other => DialError::Unreachable {
                address: address.clone(),
                reason: other.reason(),
            },
        })?;

    let outcome = Arc::new(Mutex::new(None));
    let handler = TargetHandler {
        pins,
        asset: asset.clone(),
        outcome: outcome.clone(),
        forwards,
    };
    let socket = tokio::io::BufReader::with_capacity(crate::SOCKET_READ_BUFFER, socket);
    let connect = russh::client::connect_stream(client_config, socket, handler);
    let connected = tokio::time::timeout(connect_timeout, connect)
        .await
        .map_err(|_| DialError::Timeout(address.clone()))?;
    let recorded = outcome.lock().ok().and_then(|o| o.clone());
    let handle = match (connected, recorded) {
        (Ok(handle), Some(HostKeyOutcome::Recorded(fp))) => {
            let mut entry = Entry::new(
                AuditKind::HostKeyRecorded,
                format!(
                    "trusted host key {fp} of asset `{}` on first use",
                    asset.name
                ),
            )
            .target(asset.name.to_string())
            .field("fingerprint", fp);
            if let Some(id) = session_id {
                entry = entry.session(id);
            }
            auditor.record_best_effort(entry);
            handle
        }
        (Ok(handle), _) => handle,
        (Err(_), Some(HostKeyOutcome::Mismatch { pinned, presented })) => {
            return Err(DialError::HostKeyMismatch { pinned, presented });
        }
        (Err(_), Some(HostKeyOutcome::BadPinned)) => return Err(DialError::BadPinnedKey),
        (Err(_), Some(HostKeyOutcome::StoreFailed(e))) => {
            return Err(DialError::Store(StoreError::Database(e)));
        }
        (Err(e @ (russh::Error::Disconnect | russh::Error::HUP | russh::Error::IO(_))), None) => {
            return Err(DialError::ClosedDuringHandshake(e.to_string()));
        }
        (Err(e), _) => return Err(DialError::Protocol(e.to_string())),
    };
    Ok(handle)
}

/// What a credential-store plugin is asked about.
fn credential_request(
    authorization: &TargetAuthorization,
    session_id: &str,
) -> gatehouse_plugin_host::CredentialRequest {
    gatehouse_plugin_host::CredentialRequest::new(
        session_id,
        authorization.user(),
        authorization.account(),
        authorization.asset(),
    )
}

/// The credential from the account's credential-store plugin: a private key if it has one, and
/// a password if it has one.
async fn plugin_credential(
    local: &LocalAuthority,
    authorization: &TargetAuthorization,
    plugin: &str,
    session_id: &str,
) -> Result<gatehouse_vault::TargetCredential, DialError> {
    use gatehouse_plugin_host::{Credential, CredentialKind};
    let plugins = local
        .plugins
        .as_ref()
        .ok_or_else(|| DialError::CredentialStore(format!("plugin `{plugin}` is not enabled")))?;
    let request = credential_request(authorization, session_id);
    let fetch = |kind| plugins.credential(plugin, kind, &request);
    let failed =
        |e: gatehouse_plugin_host::PluginFailure| DialError::CredentialStore(e.to_string());
    let private_key = match fetch(CredentialKind::PrivateKey).await.map_err(failed)? {
        Some(Credential::PrivateKey(key)) => Some(key),
        _ => None,
    };
    let password = match fetch(CredentialKind::Password).await.map_err(failed)? {
        Some(Credential::Password(password)) => Some(password),
        _ => None,
    };
    Ok(gatehouse_vault::TargetCredential {
        password,
        private_key,
    })
}

/// Logs in, and tells the account's credential-store plugin (if any) how it went.
async fn login(
    handle: &mut russh::client::Handle<TargetHandler>,
    local: &LocalAuthority,
    authorization: &TargetAuthorization,
    session_id: &str,
) -> Result<(), DialError> {
    let result = login_with_credential(handle, local, authorization, session_id).await;
    if let (Some(plugin), Some(plugins)) = (
        &authorization.account().credential_plugin,
        local.plugins.as_ref(),
    ) && !matches!(result, Err(DialError::CredentialStore(_)))
    {
        let request = credential_request(authorization, session_id);
        let event = gatehouse_plugin_host::CredentialEvent::AuthenticationCompleted {
            succeeded: result.is_ok(),
        };
        if let Err(e) = plugins.credential_event(plugin, &request, event).await {
            tracing::warn!(error = %e, "credential-store plugin not told about the login");
        }
    }
    result
}

async fn login_with_credential(
    handle: &mut russh::client::Handle<TargetHandler>,
    local: &LocalAuthority,
    authorization: &TargetAuthorization,
    session_id: &str,
) -> Result<(), DialError> {
    let credential = match &authorization.account().credential_plugin {
        Some(plugin) => plugin_credential(local, authorization, plugin, session_id).await?,
        None => local.vault.credential(authorization.account())?,
    };
    authenticate(handle, authorization.account().name.as_str(), &credential).await
}

/// Logs in as `user` with `credential`: the private key first, then the password.
pub async fn authenticate(
    handle: &mut russh::client::Handle<TargetHandler>,
    user: &str,
    credential: &TargetCredential,
) -> Result<(), DialError> {
    let protocol = |e: russh::Error| DialError::Protocol(e.to_string());
    let mut tried = Vec::new();
    if let Some(key_text) = &credential.private_key {
        let key = decode_secret_key(key_text.expose(), None)
            .map_err(|e| DialError::BadPrivateKey(e.to_string()))?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(protocol)?
            .flatten();
        let result = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(protocol)?;
        if result.success() {
            return Ok(());
        }
        tried.push("publickey");
    }
    if let Some(password) = &credential.password {
        let result = handle
            .authenticate_password(user, password.expose())
            .await
            .map_err(protocol)?;
        if result.success() {
            return Ok(());
        }
        tried.push("password");
    }
    if tried.is_empty() {
        return Err(DialError::NoCredential);
    }
    Err(DialError::CredentialRejected {
        methods: tried.join(", "),
    })
}

/// How long to wait for a target; also used by tests.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
