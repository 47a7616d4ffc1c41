//! `gatehouse serve`'s RDP listener: the glue between the RDP proxy core (`gatehouse-rdp`, which
//! knows nothing of the store, the vault or Cedar) and the rest of Gatehouse. Per connection:
//! NLA with the user's vault-sealed NT hash, the delegated password checked against the argon2id
//! hash, Cedar with `protocol: "rdp"`, the vault's password towards the target (its key pinned
//! or trusted on first use into the store), the relay recorded to `<session>/rdp.pdus`, and the
//! audit trail. See docs/rdp.md.

mod access;

use crate::datadir::{DataDir, RdpSettings};
use anyhow::{Context, Result, bail};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_auth::{AuthError, Authenticator};
use gatehouse_cluster::wire::{Authorize, LoginProof};
use gatehouse_cluster::{ClusterError, RefusalKind};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    AuditKind, LoginSpec, RdpCertificatePolicy, SecretString, SessionRecord, User,
};
use gatehouse_policy::{PolicyEngine, TargetAuthorization};
use gatehouse_rdp::{
    AcceptError, AcceptedClient, CertificatePin, CertificatePolicy, ClientLogin, DialOptions,
    Direction, FirstUse, GatewayTls, NtHash, PduKind, PinFuture, PinOutcome, PinRecorder,
    RecordError, RecordedPdu, Recorder, Refused, RelaySummary, TargetLogin, UserDirectory,
};
use gatehouse_recording::{RecordingEvent, SessionRecording};
use gatehouse_store::{ASSETS, SESSIONS, Store, StoreError, USERS};
use gatehouse_vault::{UserSecretKind, Vault};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The file in a session's recording directory that holds the relayed PDUs (the format is
/// `gatehouse_rdp_replay::pdus`).
pub const PDU_FILE: &str = "rdp.pdus";

/// Everything an RDP session needs from the rest of Gatehouse.
pub struct RdpServices {
    /// Session records (on a session node, its own store, delivered to the control node).
    pub store: Arc<Store>,
    /// Who authenticates users and decides sessions.
    pub authority: RdpAuthority,
    /// The sessions running in this process (shared with the SSH gateway), to end one from
    /// outside.
    pub live: gatehouse_ssh::LiveSessions,
    /// The screens of running sessions, for the API's live view.
    pub screens: crate::live_view::LiveScreens,
    pub auditor: Auditor,
    pub recordings: PathBuf,
    /// Steer capability negotiation so recordings decode (no GFX, no drawing orders, no
    /// bitmap codecs; settings.json `rdp.decodable_recordings`, default on).
    pub steer_for_recording: bool,
    pub tls: GatewayTls,
    /// Limit for a client's negotiation and authentication.
    pub handshake_timeout: Duration,
    /// Limit for connecting and logging in to a target.
    pub connect_timeout: Duration,
}

/// Who checks RDP logins and decides sessions.
pub enum RdpAuthority {
    /// This process: its vault, users, policies, plugins and requests.
    Local(LocalRdp),
    /// A session node: the control node lends the user's NT hash for the NLA exchange, checks
    /// the delegated password, decides the session with Cedar and hands out the credential.
    Remote(gatehouse_cluster::ControlClient),
}

/// What a process that decides its own RDP sessions uses.
pub struct LocalRdp {
    pub vault: Arc<Vault>,
    pub authenticator: Arc<Authenticator>,
    pub policy: Arc<PolicyEngine>,
    /// The enabled plugins: AA hooks (answered from `key=value@` login options) and
    /// credential stores.
    pub plugins: Option<gatehouse_plugin_host::PluginHost>,
    /// Access requests: access tokens from `.rdp` files, sessions under requests, connections
    /// held for approval.
    pub workflow: Option<Arc<gatehouse_workflow::Workflow>>,
}

impl LocalRdp {
    pub(crate) fn deciders(&self) -> crate::access_gate::Deciders<'_> {
        crate::access_gate::Deciders {
            vault: &self.vault,
            policy: &self.policy,
            plugins: self.plugins.as_ref(),
            workflow: self.workflow.as_ref(),
        }
    }
}

/// The gateway's certificate chain and key: `<data-dir>/tls/{cert.pem,key.pem}` (RDP and
/// VNC clients see it).
pub(crate) fn tls_identity(
    dir: &DataDir,
) -> Result<(
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = dir.tls_dir().join("cert.pem");
    let key_path = dir.tls_dir().join("key.pem");
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading `{}`", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading `{}`", key_path.display()))?;
    Ok((chain, key))
}

/// The gateway's TLS identity for RDP clients.
pub fn load_tls(dir: &DataDir) -> Result<GatewayTls> {
    let (chain, key) = tls_identity(dir)?;
    GatewayTls::new(chain, key).context("the gateway's TLS certificate cannot serve RDP")
}

/// The player's video renderer, for RDP and VNC sessions alike, is `crate::video`'s.
pub use crate::video::video_renderer;

/// Binds the RDP listener: the explicit `--rdp-listen` address (failure is an error), else
/// settings.json `rdp` (when the default port cannot be bound, an error is logged and `serve`
/// goes on without RDP). `None` when RDP is off.
pub async fn bind(
    settings: &RdpSettings,
    explicit: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>> {
    if let Some(address) = explicit {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address} for RDP"))?;
        return Ok(Some(listener));
    }
    if !settings.enabled {
        tracing::info!("RDP disabled (settings.json rdp.enabled)");
        return Ok(None);
    }
    match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if settings.listen.port() == gatehouse_rdp::DEFAULT_PORT => {
            tracing::error!(
                address = %settings.listen,
                error = %e,
                "cannot listen for RDP on the default port; serving without RDP (set settings.json rdp.listen or --rdp-listen)"
            );
            Ok(None)
        }
        Err(e) => bail!("listening on {} for RDP: {e}", settings.listen),
    }
}

/// Accepts RDP clients until the gateway shuts down; one task and one span per connection.
/// When the drain starts the listener closes; running sessions go on until the grace period
/// ends, then both of their connections are closed. Returns when every session has ended.
/// With `transparent`, the connections were redirected by a router: the target is the asset
/// at their original destination (`alice@Administrator` logs in there).
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    services: Arc<RdpServices>,
    shutdown: gatehouse_ssh::Shutdown,
    transparent: Option<crate::listener::Transparent>,
) -> std::io::Result<()> {
    let draining = shutdown.clone();
    let transparent = transparent.map(|t| (t, services.store.clone()));
    crate::listener::accept_protocol(
        listener,
        draining,
        ("rdp", "rdp-transparent"),
        transparent,
        |a| a.rdp.as_ref().map(|r| r.port),
        move |socket, client, id, arrived| {
            let session = Session {
                id,
                client,
                services: services.clone(),
                shutdown: shutdown.clone(),
                arrived,
                user: String::new(),
                target: String::new(),
            };
            session.run(socket)
        },
    )
    .await
}

/// Gateway users' NT hashes from their vault-sealed RDP secret.
struct StoreUsers<'a> {
    store: &'a Store,
    vault: &'a Vault,
}

impl UserDirectory for StoreUsers<'_> {
    fn nt_hash(&self, login: &ClientLogin) -> Result<NtHash, Refused> {
        let spec =
            LoginSpec::parse(&login.user).map_err(|e| Refused(format!("malformed login: {e}")))?;
        let user: Option<User> = self
            .store
            .get(&USERS, spec.user.as_str())
            .map_err(|e| Refused(format!("store: {e}")))?;
        let Some(user) = user else {
            return Err(Refused(format!("unknown gateway user `{}`", spec.user)));
        };
        let Some(sealed) = &user.rdp_secret else {
            return Err(Refused(format!(
                "user `{}` has no RDP secret (set the password again to enable RDP)",
                user.name
            )));
        };
        let opened = self
            .vault
            .open_user_secret(user.name.as_str(), UserSecretKind::RdpNtHash, sealed)
            .map_err(|e| Refused(format!("the RDP secret of `{}`: {e}", user.name)))?;
        let bytes: [u8; 16] = opened.expose().try_into().map_err(|_| {
            Refused(format!(
                "the RDP secret of `{}` is not an NT hash",
                user.name
            ))
        })?;
        Ok(NtHash::from_bytes(bytes))
    }
}

/// Records a first-use pin into the asset, in one store transaction, and audits it.
struct StorePins<'a> {
    session: &'a Session,
    asset: String,
}

impl PinRecorder for StorePins<'_> {
    fn record_first_use<'a>(&'a self, presented: &'a CertificatePin) -> PinFuture<'a> {
        Box::pin(std::future::ready(self.record(presented)))
    }
}

impl StorePins<'_> {
    fn record(&self, presented: &CertificatePin) -> Result<FirstUse, String> {
        let outcome = self
            .session
            .services
            .store
            .write(|txn| -> Result<Result<FirstUse, String>, StoreError> {
                let Some(mut asset) = txn.get(&ASSETS, &self.asset)? else {
                    return Ok(Err(format!("asset `{}` no longer exists", self.asset)));
                };
                let Some(endpoint) = asset.rdp.as_mut() else {
                    return Ok(Err(format!("asset `{}` no longer has RDP", self.asset)));
                };
                match &endpoint.certificate {
                    RdpCertificatePolicy::Pinned { pin } => {
                        Ok(CertificatePin::parse(pin).map(FirstUse::AlreadyPinned))
                    }
                    RdpCertificatePolicy::TrustOnFirstUse => {
                        endpoint.certificate = RdpCertificatePolicy::Pinned {
                            pin: presented.to_string(),
                        };
                        txn.put(&ASSETS, &self.asset, &asset)?;
                        Ok(Ok(FirstUse::Recorded))
                    }
                }
            })
            .map_err(|e| e.to_string())??;
        if outcome == FirstUse::Recorded {
            self.session.audit(
                AuditKind::HostKeyRecorded,
                format!(
                    "trusted the RDP certificate key of `{}` on first use: {presented}",
                    self.asset
                ),
                &[
                    ("protocol", "rdp".into()),
                    ("pin", presented.to_string().into()),
                ],
            );
        }
        Ok(outcome)
    }
}

/// On a session node: users' NT hashes lent by the control node, one per NLA exchange.
struct RemoteUsers<'a> {
    control: &'a gatehouse_cluster::ControlClient,
    session: &'a str,
    client: SocketAddr,
}

impl UserDirectory for RemoteUsers<'_> {
    fn nt_hash(&self, login: &ClientLogin) -> Result<NtHash, Refused> {
        let spec =
            LoginSpec::parse(&login.user).map_err(|e| Refused(format!("malformed login: {e}")))?;
        // sspi asks from inside its (synchronous) NLA exchange; the call to the control node is
        // bounded by the cluster's call timeout. Only a multi-threaded runtime can lend this
        // worker thread for it.
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Refused("no runtime to ask the control node from".into()))?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(Refused(
                "the RDP listener of a session node needs a multi-threaded runtime".into(),
            ));
        }
        let asked = tokio::task::block_in_place(|| {
            handle.block_on(self.control.rdp_nt_hash(
                self.session,
                &self.client.to_string(),
                spec.user.as_str(),
            ))
        });
        match asked {
            Ok(hash) => Ok(NtHash::from_bytes(*hash)),
            Err(gatehouse_cluster::ClusterError::Refused(refusal)) => {
                Err(Refused(format!("control node: {}", refusal.message)))
            }
            Err(e) => Err(Refused(format!("control node unreachable: {e}"))),
        }
    }
}

/// On a session node: first-use pins go to the asset on the control node.
struct RemotePins<'a> {
    session: &'a Session,
    control: &'a gatehouse_cluster::ControlClient,
    permit: &'a gatehouse_cluster::RemotePermit,
}

impl PinRecorder for RemotePins<'_> {
    fn record_first_use<'a>(&'a self, presented: &'a CertificatePin) -> PinFuture<'a> {
        Box::pin(async move {
            let pinned = self
                .control
                .pin_certificate(self.permit, presented.to_string())
                .await
                .map_err(|e| format!("control node: {e}"))?;
            match pinned {
                Some(pin) => CertificatePin::parse(&pin).map(FirstUse::AlreadyPinned),
                None => {
                    self.session.audit(
                        AuditKind::HostKeyRecorded,
                        format!(
                            "trusted the RDP certificate key of `{}` on first use: {presented}",
                            self.permit.asset().name
                        ),
                        &[
                            ("protocol", "rdp".into()),
                            ("pin", presented.to_string().into()),
                        ],
                    );
                    Ok(FirstUse::Recorded)
                }
            }
        })
    }
}

/// Appends every relayed PDU to [`PDU_FILE`] through a bounded buffer, and turns the client's
/// input into searchable events (typing runs, clipboard transfers) in the session's
/// `events.jsonl` as they happen.
struct PduFile<'a> {
    path: PathBuf,
    recording: &'a SessionRecording,
    state: Mutex<PduState>,
}

struct PduState {
    writer: gatehouse_rdp_replay::PduWriter<std::io::BufWriter<std::fs::File>>,
    tracker: gatehouse_rdp_replay::InputTracker,
    events: Vec<gatehouse_rdp_replay::Event>,
    /// Written out at least this often, for live watchers following the file.
    flushed: std::time::Instant,
}

fn side(direction: gatehouse_rdp_replay::Direction) -> String {
    match direction {
        gatehouse_rdp_replay::Direction::ClientToTarget => "client",
        gatehouse_rdp_replay::Direction::TargetToClient => "target",
    }
    .into()
}

fn format_name(format: &gatehouse_rdp_replay::ClipboardFormat) -> String {
    format
        .name
        .clone()
        .unwrap_or_else(|| format!("format {}", format.id))
}

/// The recording's event for an input event; `None` for the ones not worth a line.
fn recording_event(kind: gatehouse_rdp_replay::EventKind) -> Option<RecordingEvent> {
    use gatehouse_rdp_replay::EventKind;
    Some(match kind {
        EventKind::Keys {
            text, end_micros, ..
        } => RecordingEvent::Keys {
            text,
            end: end_micros as f64 / 1e6,
        },
        EventKind::ClipboardFormats { from, formats } => RecordingEvent::ClipboardOffer {
            from: side(from),
            formats: formats.iter().map(format_name).collect(),
        },
        EventKind::ClipboardRequest { .. } => return None,
        EventKind::ClipboardData {
            from,
            format,
            ok,
            size,
            text,
            truncated,
        } => {
            if !ok {
                return None;
            }
            RecordingEvent::Clipboard {
                from: side(from),
                format: format_name(&format),
                size,
                text,
                truncated,
            }
        }
    })
}

/// Writes input events to the recording's event log.
fn log_events(recording: &SessionRecording, events: &mut Vec<gatehouse_rdp_replay::Event>) {
    for event in events.drain(..) {
        let at = Duration::from_micros(event.at_micros);
        if let Some(event) = recording_event(event.kind)
            && let Err(e) = recording.log_at(at, None, event)
        {
            tracing::error!(error = %e, "cannot log an input event");
        }
    }
}

impl<'a> PduFile<'a> {
    fn create(recording: &'a SessionRecording) -> Result<Self, String> {
        let path = recording.dir().join(PDU_FILE);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| format!("creating `{}`: {e}", path.display()))?;
        let writer = gatehouse_rdp_replay::PduWriter::new(std::io::BufWriter::with_capacity(
            64 * 1024,
            file,
        ))
        .map_err(|e| e.to_string())?;
        Ok(Self {
            path,
            recording,
            state: Mutex::new(PduState {
                writer,
                tracker: gatehouse_rdp_replay::InputTracker::new(),
                events: Vec::new(),
                flushed: std::time::Instant::now(),
            }),
        })
    }

    /// When the user last typed or used the mouse (the relay's clock), if they did.
    fn last_input(&self) -> Option<Duration> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .tracker
            .last_input()
    }

    /// Logs the last typing run, flushes the PDUs and syncs the file.
    fn finish(self) -> std::io::Result<()> {
        let PduState {
            writer,
            mut tracker,
            mut events,
            ..
        } = self
            .state
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tracker.finish(&mut events);
        log_events(self.recording, &mut events);
        let out = writer.finish().map_err(std::io::Error::other)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    }
}

impl Recorder for PduFile<'_> {
    fn record(&self, pdu: &RecordedPdu<'_>) -> Result<(), RecordError> {
        use gatehouse_rdp_replay::{Direction as D, Framing, Pdu};
        let pdu = Pdu {
            direction: match pdu.direction {
                Direction::ClientToTarget => D::ClientToTarget,
                Direction::TargetToClient => D::TargetToClient,
            },
            framing: match pdu.kind {
                PduKind::X224 => Framing::X224,
                PduKind::FastPath => Framing::FastPath,
                PduKind::Undecodable => Framing::Undecodable,
            },
            at: pdu.at,
            bytes: pdu.bytes,
        };
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = &mut *state;
        state
            .writer
            .write(&pdu)
            .map_err(|e| RecordError(format!("writing `{}`: {e}", self.path.display())))?;
        state.tracker.observe(&pdu, &mut state.events);
        if !state.events.is_empty() {
            log_events(self.recording, &mut state.events);
        }
        if state.flushed.elapsed() >= Duration::from_millis(500) {
            state.flushed = std::time::Instant::now();
            state
                .writer
                .flush()
                .map_err(|e| RecordError(format!("writing `{}`: {e}", self.path.display())))?;
        }
        Ok(())
    }
}

/// Checks after a session whether its recorded graphics decode, one session at a time (the
/// decoder holds a frame buffer), and returns the verdict as a recording event.
async fn check_graphics(path: PathBuf) -> RecordingEvent {
    static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
    let _permit = CHECKS.acquire().await;
    let verdict = tokio::task::spawn_blocking(move || {
        let mut reader = gatehouse_rdp_replay::pdus::open(&path)?;
        gatehouse_rdp_replay::Replayer::check(&mut reader)
    })
    .await;
    use gatehouse_rdp_replay::Verdict;
    let (verdict, reason) = match verdict {
        Ok(Ok(Verdict::Decodable)) => ("decodable", None),
        Ok(Ok(Verdict::Partially(why))) => ("partially", Some(why)),
        Ok(Ok(Verdict::NotDecodable(why))) => ("not_decodable", Some(why)),
        Ok(Err(e)) => ("not_decodable", Some(e.to_string())),
        Err(e) => ("not_decodable", Some(format!("the check failed: {e}"))),
    };
    RecordingEvent::Graphics {
        verdict: verdict.into(),
        reason,
    }
}

/// A permitted session, and what its end must tell.
enum Grant<'a> {
    /// Decided here.
    Local {
        local: &'a LocalRdp,
        authorization: Box<TargetAuthorization>,
        request: Option<gatehouse_core::AccessRequest>,
        who: Box<crate::access_gate::LoggedIn>,
    },
    /// Decided by the control node (a session node).
    Remote {
        control: &'a gatehouse_cluster::ControlClient,
        permit: gatehouse_cluster::RemotePermit,
    },
}

impl Grant<'_> {
    fn permit(&self) -> &dyn gatehouse_rdp::Permit {
        match self {
            Grant::Local { authorization, .. } => authorization.as_ref(),
            Grant::Remote { permit, .. } => permit,
        }
    }

    fn account_name(&self) -> String {
        match self {
            Grant::Local { authorization, .. } => authorization.account().name.to_string(),
            Grant::Remote { permit, .. } => permit.account().to_string(),
        }
    }

    fn reasons(&self) -> Vec<String> {
        match self {
            Grant::Local { authorization, .. } => authorization.reasons().to_vec(),
            Grant::Remote { permit, .. } => permit.reasons().to_vec(),
        }
    }

    /// How long the session may go without input, and the policy that says so.
    fn idle_timeout(&self) -> Option<(Duration, String)> {
        match self {
            Grant::Local { authorization, .. } => authorization.idle_timeout(),
            Grant::Remote { permit, .. } => permit.idle_timeout(),
        }
        .map(|(limit, policy)| (limit, policy.to_string()))
    }

    fn request_id(&self) -> Option<String> {
        match self {
            Grant::Local { request, .. } => request.as_ref().map(|r| r.id.clone()),
            Grant::Remote { permit, .. } => permit.request().map(str::to_string),
        }
    }
}

/// One RDP connection.
struct Session {
    id: String,
    client: SocketAddr,
    services: Arc<RdpServices>,
    shutdown: gatehouse_ssh::Shutdown,
    /// Transparent mode: where the connection was going.
    arrived: Option<crate::listener::Arrived>,
    /// Known once the client authenticated.
    user: String,
    target: String,
}

/// How far a session got, for its record.
struct Opened {
    account: String,
    asset: String,
    started: Timestamp,
}

impl Session {
    fn entry(&self, kind: AuditKind, detail: impl Into<String>) -> Entry {
        crate::access_gate::session_entry(
            kind,
            detail,
            &self.id,
            &self.user,
            &self.target,
            self.client,
            self.arrived.as_ref(),
        )
    }

    fn audit(
        &self,
        kind: AuditKind,
        detail: impl Into<String>,
        fields: &[(&str, serde_json::Value)],
    ) {
        let mut entry = self.entry(kind, detail);
        for (k, v) in fields {
            entry = entry.field(k, v.clone());
        }
        self.services.auditor.record_best_effort(entry);
    }

    async fn run(self, socket: tokio::net::TcpStream) {
        tracing::debug!("RDP connection accepted");
        let services = self.services.clone();
        match &services.authority {
            RdpAuthority::Local(local) => self.run_local(local, socket).await,
            RdpAuthority::Remote(control) => self.run_remote(control, socket).await,
        }
    }

    async fn run_local(mut self, local: &LocalRdp, socket: tokio::net::TcpStream) {
        let services = self.services.clone();
        let users = StoreUsers {
            store: &services.store,
            vault: &local.vault,
        };
        let accepted =
            gatehouse_rdp::accept(&services.tls, &users, socket, services.handshake_timeout).await;
        let client = match accepted {
            Ok(client) => client,
            Err(e) => {
                self.refused_before_login(e);
                return;
            }
        };
        let Some((user, spec)) = self.login(local, &client).await else {
            client.refuse(gatehouse_rdp::Refusal::Denied).await;
            return;
        };
        let target = match &spec.target {
            Ok(target) => target.clone(),
            Err(e) => {
                self.audit(
                    AuditKind::AccessDenied,
                    e.to_string(),
                    &[("protocol", "rdp".into())],
                );
                client.refuse(gatehouse_rdp::Refusal::Denied).await;
                return;
            }
        };
        let Some(who) = crate::access_gate::run_plugins(&self, &local.deciders(), user, spec).await
        else {
            client.refuse(gatehouse_rdp::Refusal::Denied).await;
            return;
        };
        let Some((authorization, request)) =
            crate::access_gate::permit(&self, &local.deciders(), &who, &target).await
        else {
            client.refuse(gatehouse_rdp::Refusal::Denied).await;
            return;
        };
        if self.shutting_down() {
            client.refuse(gatehouse_rdp::Refusal::ShuttingDown).await;
            return;
        }
        let grant = Grant::Local {
            local,
            authorization: Box::new(authorization),
            request,
            who: Box::new(who),
        };
        self.connect(client, grant).await;
    }

    /// A session node's connection: the control node lends the NT hash for NLA, checks the
    /// delegated password and decides the session; this node dials, relays and records.
    async fn run_remote(
        mut self,
        control: &gatehouse_cluster::ControlClient,
        socket: tokio::net::TcpStream,
    ) {
        let services = self.services.clone();
        let users = RemoteUsers {
            control,
            session: &self.id,
            client: self.client,
        };
        let accepted =
            gatehouse_rdp::accept(&services.tls, &users, socket, services.handshake_timeout).await;
        let client = match accepted {
            Ok(client) => client,
            Err(e) => {
                self.refused_before_login(e);
                return;
            }
        };
        let login = client.login().user.clone();
        let Some(spec) = self.parse_login(&login) else {
            client.refuse(gatehouse_rdp::Refusal::Denied).await;
            return;
        };
        let password = SecretString::new(client.delegated_password().expose().to_string());
        let client_text = self.client.to_string();
        let attempt = gatehouse_cluster::LoginAttempt {
            session: &self.id,
            client: &client_text,
            user: spec.user.as_str(),
            login: &login,
            protocol: "rdp",
        };
        let mut answer = control
            .authenticate(attempt, LoginProof::Password { password })
            .await;
        // The control node's login plugins may ask: RDP cannot prompt before the session, so
        // the answer comes from the login's `key=value@` options, as on a single gateway.
        let mut asked = 0;
        let authenticated = loop {
            match answer {
                Ok(gatehouse_cluster::LoginAnswer::Authenticated(authenticated)) => {
                    break Ok(authenticated);
                }
                Ok(gatehouse_cluster::LoginAnswer::Question(question)) => {
                    asked += 1;
                    let Some(value) = spec.option(&question.key).filter(|_| asked <= 8) else {
                        let rest = match &spec.target {
                            Ok(t) => format!("{}@{t}", spec.user),
                            Err(_) => spec.user.to_string(),
                        };
                        self.audit(
                            AuditKind::LoginFailed,
                            format!(
                                "a plugin asks `{}` ({}), which an RDP login cannot prompt for: give it in the user name as `{}=<answer>@{}`",
                                question.key,
                                question.prompt.trim(),
                                question.key,
                                rest
                            ),
                            &[("protocol", "rdp".into())],
                        );
                        client.refuse(gatehouse_rdp::Refusal::Denied).await;
                        return;
                    };
                    answer = control
                        .answer_question(&question, SecretString::new(value.to_string()))
                        .await;
                }
                Err(e) => break Err(e),
            }
        };
        let authenticated = match authenticated {
            Ok(authenticated) => authenticated,
            Err(e) => {
                let (detail, refusal) = match &e {
                    ClusterError::Refused(r) if r.kind == RefusalKind::LoginFailed => (
                        format!(
                            "the password delegated over RDP does not match the password of `{}` (control node: {})",
                            spec.user, r.message
                        ),
                        gatehouse_rdp::Refusal::Denied,
                    ),
                    ClusterError::Refused(r) => (
                        format!("control node refused the login: {}", r.message),
                        gatehouse_rdp::Refusal::Denied,
                    ),
                    other => (
                        format!("control node unreachable at login: {other}"),
                        gatehouse_rdp::Refusal::Unavailable,
                    ),
                };
                self.audit(
                    AuditKind::LoginFailed,
                    detail,
                    &[("protocol", "rdp".into())],
                );
                client.refuse(refusal).await;
                return;
            }
        };
        let ticket = authenticated.ticket;
        let how = if authenticated.plugins.is_empty() {
            "password".to_string()
        } else {
            format!("password and {}", authenticated.plugins.join(", "))
        };
        self.audit(
            AuditKind::LoginOk,
            format!(
                "`{}` logged in over RDP with {how} (checked by the control node)",
                spec.user
            ),
            &[
                ("protocol", "rdp".into()),
                ("method", "password".into()),
                ("plugins", serde_json::json!(authenticated.plugins)),
                (
                    "plugin_notes",
                    serde_json::json!(authenticated.plugin_notes),
                ),
                ("ticket_verified", authenticated.ticket_verified.into()),
            ],
        );
        if let Err(e) = &spec.target {
            self.audit(
                AuditKind::AccessDenied,
                e.to_string(),
                &[("protocol", "rdp".into())],
            );
            client.refuse(gatehouse_rdp::Refusal::Denied).await;
            return;
        }
        let call = Authorize {
            session: self.id.clone(),
            client: self.client.to_string(),
            protocol: "rdp".into(),
            login,
            ticket,
            method: "password".into(),
        };
        let answer = match control.authorize(call).await {
            Ok(gatehouse_cluster::Authorized::Permit(permit)) => Ok(*permit),
            // An access request was filed: the client waits after NLA while it is decided.
            // (The control node audits the hold.)
            Ok(gatehouse_cluster::Authorized::Held(held)) => loop {
                match control.await_decision(&held).await {
                    Ok(Some(permit)) => break Ok(permit),
                    Ok(None) => continue,
                    Err(e) => break Err(e),
                }
            },
            Err(e) => Err(e),
        };
        let permit = match answer {
            Ok(permit) => permit,
            Err(ClusterError::Refused(refusal)) => {
                // The control node audited its decision; what it could not decide is ours.
                if !matches!(
                    refusal.kind,
                    RefusalKind::NotPermitted
                        | RefusalKind::AccessToken
                        | RefusalKind::OutsideNetworks
                        | RefusalKind::NotServed
                        | RefusalKind::CredentialStore
                        | RefusalKind::RequestNotGranted
                ) {
                    self.audit(
                        AuditKind::AccessDenied,
                        format!("control node refused: {}", refusal.message),
                        &[("protocol", "rdp".into())],
                    );
                }
                client.refuse(gatehouse_rdp::Refusal::Denied).await;
                return;
            }
            Err(e) => {
                self.audit(
                    AuditKind::AccessDenied,
                    format!("control node unreachable: {e}"),
                    &[("protocol", "rdp".into())],
                );
                client.refuse(gatehouse_rdp::Refusal::Unavailable).await;
                return;
            }
        };
        if self.shutting_down() {
            client.refuse(gatehouse_rdp::Refusal::ShuttingDown).await;
            let _ = control.session_ended(permit.grant()).await;
            return;
        }
        self.connect(client, Grant::Remote { control, permit })
            .await;
    }

    /// Audits a client that did not get as far as a login (failed authentication is a
    /// failed login; scanners and clients without NLA only reach the log).
    fn refused_before_login(&self, e: AcceptError) {
        match &e {
            AcceptError::AuthenticationFailed { login, .. } => {
                let user = LoginSpec::parse(login)
                    .map(|s| s.user.to_string())
                    .unwrap_or_else(|_| login.chars().take(LoginSpec::MAX_LEN).collect());
                self.services.auditor.record_best_effort(
                    Entry::new(AuditKind::LoginFailed, e.to_string())
                        .session(self.id.clone())
                        .user(user)
                        .client(self.client.to_string())
                        .field("protocol", "rdp"),
                );
            }
            AcceptError::NoDelegatedPassword => self.services.auditor.record_best_effort(
                Entry::new(AuditKind::LoginFailed, e.to_string())
                    .session(self.id.clone())
                    .client(self.client.to_string())
                    .field("protocol", "rdp"),
            ),
            _ => tracing::info!(error = %e, "RDP client not accepted"),
        }
    }

    /// Checks the delegated password against the user's argon2id hash (so the NT hash alone
    /// logs no one in); a failure is audited (success is, once the AA plugins accepted).
    /// The login the client authenticated with, parsed; the session's span and audit fields
    /// learn the user and target. A malformed login is audited.
    fn parse_login(&mut self, login: &str) -> Option<LoginSpec> {
        let login =
            crate::access_gate::transparent_login(&*self, self.arrived.as_ref(), login).ok()?;
        let login = login.as_str();
        let spec = match LoginSpec::parse(login) {
            Ok(spec) => spec,
            Err(e) => {
                self.audit(
                    AuditKind::LoginFailed,
                    format!("malformed login `{login}`: {e}"),
                    &[("protocol", "rdp".into())],
                );
                return None;
            }
        };
        (self.user, self.target) = crate::access_gate::login_names(&spec);
        Some(spec)
    }

    /// The gateway drains: no new sessions (audited).
    fn shutting_down(&self) -> bool {
        if self.shutdown.is_serving() {
            return false;
        }
        self.audit(
            AuditKind::AccessDenied,
            "the gateway is shutting down: no new sessions",
            &[("protocol", "rdp".into())],
        );
        true
    }

    async fn login(
        &mut self,
        local: &LocalRdp,
        client: &AcceptedClient,
    ) -> Option<(User, LoginSpec)> {
        let login = client.login().user.clone();
        let spec = self.parse_login(&login)?;
        let authenticator = local.authenticator.clone();
        let name = spec.user.clone();
        let password = SecretString::new(client.delegated_password().expose().to_string());
        let verified = tokio::task::spawn_blocking(move || {
            authenticator.verify_password(&name, password.expose())
        })
        .await;
        let user = match verified {
            Ok(Ok(user)) => user,
            Ok(Err(e)) => {
                let detail = match &e {
                    AuthError::WrongPassword(_) => format!(
                        "the password delegated over RDP does not match the password of `{}`",
                        spec.user
                    ),
                    _ => e.to_string(),
                };
                self.audit(
                    AuditKind::LoginFailed,
                    detail,
                    &[("protocol", "rdp".into())],
                );
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "verifying the password");
                return None;
            }
        };
        Some((user, spec))
    }

    /// Dials the target with the account's password, then relays and records the session
    /// until either side closes or the request it runs under ends.
    async fn connect(&self, client: AcceptedClient, mut grant: Grant<'_>) {
        let reasons = serde_json::json!(grant.reasons());
        let request_id = grant.request_id();
        let failed = |detail: String| {
            let mut fields = vec![("protocol", "rdp".into()), ("policies", reasons.clone())];
            if let Some(id) = &request_id {
                fields.push(("request", id.clone().into()));
            }
            self.audit(AuditKind::TargetConnectFailed, detail, &fields);
        };
        let asset = grant.permit().permitted_asset().clone();
        let account = grant.account_name();
        let Some(endpoint) = asset.rdp.clone() else {
            failed(format!("asset `{}` has no RDP endpoint", asset.name));
            client.refuse(gatehouse_rdp::Refusal::TargetFailed).await;
            return;
        };
        let certificate = match &endpoint.certificate {
            RdpCertificatePolicy::TrustOnFirstUse => CertificatePolicy::TrustOnFirstUse,
            RdpCertificatePolicy::Pinned { pin } => match CertificatePin::parse(pin) {
                Ok(pin) => CertificatePolicy::Pinned(pin),
                Err(e) => {
                    failed(format!("the RDP certificate pin of `{}`: {e}", asset.name));
                    client.refuse(gatehouse_rdp::Refusal::TargetFailed).await;
                    return;
                }
            },
        };
        let password = match &grant {
            Grant::Local {
                local,
                authorization,
                ..
            } => crate::access_gate::target_password(self, &local.deciders(), authorization).await,
            Grant::Remote { permit, .. } => Ok(permit
                .take_credential()
                .and_then(|mut credential| credential.password.take())),
        };
        let password = match password {
            Ok(password) => password,
            Err(e) => {
                failed(e);
                client.refuse(gatehouse_rdp::Refusal::TargetFailed).await;
                return;
            }
        };
        let Some(password) = password else {
            failed(format!("account `{account}` holds no password"));
            client.refuse(gatehouse_rdp::Refusal::TargetFailed).await;
            return;
        };
        let login = TargetLogin {
            username: account.clone(),
            domain: None,
            password,
        };
        let store_pins;
        let remote_pins;
        let pins: &dyn PinRecorder = match &grant {
            Grant::Local { .. } => {
                store_pins = StorePins {
                    session: self,
                    asset: asset.name.to_string(),
                };
                &store_pins
            }
            Grant::Remote { control, permit } => {
                remote_pins = RemotePins {
                    session: self,
                    control,
                    permit,
                };
                &remote_pins
            }
        };
        let options = DialOptions {
            port: endpoint.port,
            timeout: self.services.connect_timeout,
            certificate,
            pins,
            source: crate::access_gate::Gate::source(self),
        };
        let dialed = gatehouse_rdp::dial(grant.permit(), &client, &login, options).await;
        let target_refused = matches!(dialed, Err(gatehouse_rdp::DialError::CredentialRejected(_)));
        if dialed.is_ok() || target_refused {
            match &grant {
                Grant::Local {
                    local,
                    authorization,
                    ..
                } => {
                    crate::access_gate::credential_event(
                        self,
                        &local.deciders(),
                        authorization,
                        dialed.is_ok(),
                    )
                    .await;
                }
                Grant::Remote { control, permit } => {
                    control.target_login(permit, dialed.is_ok()).await;
                }
            }
        }
        let target = match dialed {
            Ok(target) => target,
            Err(e) => {
                failed(e.to_string());
                client.refuse(gatehouse_rdp::Refusal::from(&e)).await;
                return;
            }
        };
        drop(login);
        let pin = match target.pin() {
            PinOutcome::Matched(pin) | PinOutcome::Recorded(pin) => pin.to_string(),
        };
        let recording = match SessionRecording::create(&self.services.recordings, &self.id) {
            Ok(recording) => recording,
            Err(e) => {
                tracing::error!(error = %e, "cannot record the session; closing");
                failed(format!("cannot record the session: {e}"));
                client.refuse(gatehouse_rdp::Refusal::Unavailable).await;
                return;
            }
        };
        let pdus = match PduFile::create(&recording) {
            Ok(pdus) => pdus,
            Err(e) => {
                tracing::error!(error = %e, "cannot record the session; closing");
                failed(format!("cannot record the session: {e}"));
                client.refuse(gatehouse_rdp::Refusal::Unavailable).await;
                return;
            }
        };
        let opened = Opened {
            account: account.clone(),
            asset: asset.name.to_string(),
            started: Timestamp::now(),
        };
        // Fail closed: a session that cannot be audited is not opened.
        let mut connected = self
            .entry(
                AuditKind::TargetConnectOk,
                format!("connected over RDP to `{}` as `{}`", self.target, account),
            )
            .field("protocol", "rdp")
            .field("policies", reasons.clone())
            .field("certificate", pin);
        if let Some(id) = &request_id {
            connected = connected.field("request", id.clone());
        }
        let audited = self
            .services
            .auditor
            .write_durable(self.record_op(&opened, None, None, None), Some(connected))
            .await;
        if let Err(e) = audited {
            tracing::error!(error = %e, "cannot audit the session start; closing");
            return;
        }
        // A session node's sessions under a request end by the control node's word (a
        // termination), not by watching requests it does not hold.
        let workflow = match &grant {
            Grant::Local { local, .. } => local.workflow.clone(),
            Grant::Remote { .. } => None,
        };
        let ended =
            crate::access_gate::request_ended(workflow, request_id.clone(), self.id.clone());
        let ended_by_request: Mutex<Option<gatehouse_core::RequestState>> = Mutex::new(None);
        let shut_down = std::sync::atomic::AtomicBool::new(false);
        // Listed as running until its books are closed (the guard goes last); `session
        // terminate`, or the control node for a session node, ends it through `end`.
        let (end, mut ended_from_outside) =
            tokio::sync::watch::channel::<Option<(String, String)>>(None);
        let _screen =
            self.services
                .screens
                .add(&self.id, pdus.path.clone(), &self.user, &self.target);
        let _listed = self.services.live.register(
            &self.id,
            Box::new(move |by: &str, reason: &str| {
                let _ = end.send(Some((by.to_string(), reason.to_string())));
            }),
        );
        let terminated: Mutex<Option<(String, String)>> = Mutex::new(None);
        // A policy's `@idle_timeout`: no key or mouse input from the user for that long ends
        // the session.
        let idle_timeout = grant.idle_timeout();
        let idled = std::sync::atomic::AtomicBool::new(false);
        let idle = async {
            let Some((limit, _)) = &idle_timeout else {
                return std::future::pending().await;
            };
            let since_start = recording.elapsed();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let last = pdus.last_input().unwrap_or(since_start).max(since_start);
                if recording.elapsed().saturating_sub(last) >= *limit {
                    idled.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
            }
        };
        let stop = async {
            tokio::select! {
                () = idle => {}
                state = ended => {
                    if let Ok(mut slot) = ended_by_request.lock() {
                        *slot = Some(state);
                    }
                }
                Ok(by) = ended_from_outside.wait_for(Option::is_some) => {
                    if let Ok(mut slot) = terminated.lock() {
                        *slot = by.clone();
                    }
                }
                () = self.shutdown.closing() => {
                    shut_down.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        };
        let options = gatehouse_rdp::RelayOptions {
            steer_for_recording: self.services.steer_for_recording,
        };
        let relayed = gatehouse_rdp::relay(client, target, &pdus, options, stop).await;
        let ended_by_request = ended_by_request.into_inner().ok().flatten();
        if let Some((by, reason)) = terminated.into_inner().ok().flatten() {
            let detail = if by.is_empty() {
                format!("session ended: {reason}")
            } else {
                format!("session terminated by {by}: {reason}")
            };
            self.audit(
                AuditKind::SessionEnded,
                detail,
                &[
                    ("protocol", "rdp".into()),
                    ("terminated_by", by.into()),
                    ("reason", reason.into()),
                ],
            );
        }
        if let (true, Some((limit, policy))) = (idled.into_inner(), &idle_timeout) {
            let text = humantime::format_duration(*limit).to_string();
            self.audit(
                AuditKind::SessionEnded,
                format!("session ended: no input for {text} (policy `{policy}`)"),
                &[
                    ("protocol", "rdp".into()),
                    ("reason", "idle".into()),
                    ("idle_timeout_secs", limit.as_secs().into()),
                    ("policy", policy.clone().into()),
                ],
            );
        }
        if shut_down.into_inner() {
            self.audit(
                AuditKind::SessionEnded,
                "the gateway shut down; the session was closed at the end of the grace period",
                &[("protocol", "rdp".into()), ("reason", "shutdown".into())],
            );
        }
        if let (Some(state), Some(id)) = (ended_by_request, &request_id) {
            self.audit(
                AuditKind::SessionEnded,
                format!("access request {id} is {state}; the session ends"),
                &[("protocol", "rdp".into()), ("request", id.clone().into())],
            );
        }
        let pdu_path = pdus.path.clone();
        if let Err(e) = pdus.finish() {
            tracing::error!(error = %e, "cannot close the PDU recording");
        }
        let (summary, error) = match relayed.error {
            None => (relayed.summary, None),
            Some(e) => {
                tracing::info!(error = %e, "the RDP relay ended with an error");
                (relayed.summary, Some(e.to_string()))
            }
        };
        let record = self.record_op(
            &opened,
            Some(Timestamp::now()),
            Some(&summary),
            error.clone(),
        );
        self.services
            .auditor
            .queue_write_waiting(record, None)
            .await;
        let (up, down) = (summary.bytes_from_client, summary.bytes_from_target);
        let mut fields = vec![
            ("protocol", "rdp".into()),
            ("bytes_up", up.into()),
            ("bytes_down", down.into()),
            ("pdus_up", summary.pdus_from_client.into()),
            ("pdus_down", summary.pdus_from_target.into()),
        ];
        if let Some(error) = &error {
            fields.push(("error", error.clone().into()));
        }
        if let Some(id) = &request_id {
            fields.push(("request", id.clone().into()));
        }
        self.audit(
            AuditKind::SessionEnded,
            format!("session ended: {up} bytes up, {down} bytes down"),
            &fields,
        );
        match &mut grant {
            Grant::Local { local, who, .. } => {
                let end = gatehouse_plugin_host::SessionEnd {
                    started_at_ms: opened.started.0,
                    ended_at_ms: Timestamp::now().0,
                    bytes_from_client: summary.bytes_from_client,
                    bytes_to_client: summary.bytes_from_target,
                    reason: "closed".into(),
                };
                crate::access_gate::plugins_session_ended(self, &local.deciders(), who, &end).await;
            }
            Grant::Remote { control, permit } => {
                if let Err(e) = control.session_ended(permit.grant()).await {
                    tracing::debug!(error = %e, "the control node was not told the session ended");
                }
            }
        }
        // Whether the recording renders back to frames: flagged, never silently garbage.
        let graphics = check_graphics(pdu_path).await;
        if let RecordingEvent::Graphics {
            verdict,
            reason: Some(reason),
        } = &graphics
        {
            self.audit(
                AuditKind::RecordingFlagged,
                format!("the recording's graphics are {verdict}: {reason}"),
                &[
                    ("protocol", "rdp".into()),
                    ("verdict", verdict.clone().into()),
                ],
            );
        }
        if let Err(e) = recording.log(None, graphics) {
            tracing::error!(error = %e, "cannot log the graphics verdict");
        }
        if let Err(e) = recording.finish() {
            tracing::error!(error = %e, "cannot close the recording");
        }
    }

    /// The write that stores the session's record.
    fn record_op(
        &self,
        opened: &Opened,
        ended: Option<Timestamp>,
        summary: Option<&RelaySummary>,
        error: Option<String>,
    ) -> gatehouse_audit::StoreOp {
        let record = SessionRecord {
            id: self.id.clone(),
            user: self.user.clone(),
            account: opened.account.clone(),
            asset: opened.asset.clone(),
            client: self.client.to_string(),
            protocol: "rdp".into(),
            started: opened.started,
            ended,
            bytes_up: summary.map(|s| s.bytes_from_client).unwrap_or(0),
            bytes_down: summary.map(|s| s.bytes_from_target).unwrap_or(0),
            channels: vec![],
            error,
            node: None,
            gateway: gatehouse_core::gateway::gateway_id(),
        };
        let id = self.id.clone();
        Box::new(move |txn| txn.put(&SESSIONS, &id, &record))
    }
}
