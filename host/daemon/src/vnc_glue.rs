//! `gatehouse serve`'s VNC listener: the glue between the RFB proxy core (`gatehouse-vnc`, which
//! knows nothing of the store, the vault or Cedar) and the rest of Gatehouse. Per connection:
//! VeNCrypt towards the viewer (TLS with the gateway's certificate, then the plain user name
//! `alice@account@asset` and the gateway password), the password checked, the AA plugins run
//! (their questions answered from `key=value@` login options, as for RDP: a viewer has no prompt
//! the gateway controls), the session decided with Cedar (`vnc_session`) through
//! `crate::access_gate`, the vault's password answering the target's VNC authentication, and
//! the relay recorded to `<session>/vnc.rec` (the `gatehouse-vnc` format) with typed text as
//! searchable `keys` events. Off unless settings.json `vnc` or `--vnc-listen` turns it on. See
//! docs/vnc.md.

use crate::access_gate::{self, Deciders, Gate};
use crate::datadir::{DataDir, VncSettings};
use anyhow::{Context, Result, bail};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AccessRequest, Asset, AuditKind, LoginSpec, SessionRecord};
use gatehouse_plugin_host::{Protocol, Question};
use gatehouse_recording::{RecordingEvent, SessionRecording};
use gatehouse_store::{SESSIONS, Store};
use gatehouse_vnc::{
    BackgroundRecorder, ClientMessage, ClientSideOptions, Password, RecordError, RecordedEvent,
    RecordedKind, RecordingWriter, RelayOptions, TargetError, TargetOptions, TypedText,
};
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;

/// The file in a session's recording directory that holds the relayed RFB messages.
pub const VNC_FILE: &str = "vnc.rec";

/// Everything a VNC session needs from the rest of Gatehouse.
pub struct VncServices {
    pub services: Arc<gatehouse_ssh::Services>,
    pub recordings: PathBuf,
    /// VeNCrypt towards viewers: the gateway's certificate.
    pub client: ClientSideOptions,
    /// Limit for a viewer's handshake and login, and for the target's.
    pub handshake_timeout: Duration,
    /// The screens of running sessions, for the API's live view.
    pub screens: crate::live_view::LiveScreens,
}

/// Binds the VNC listener: `--vnc-listen`, else settings.json `vnc` when enabled. `None` when
/// VNC is off.
pub async fn bind(
    settings: &VncSettings,
    explicit: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>> {
    crate::listener::bind_optional("VNC", settings.enabled, settings.listen, explicit).await
}

/// The gateway's certificate for VeNCrypt (`<data-dir>/tls/{cert.pem,key.pem}`).
fn tls(dir: &DataDir) -> Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = crate::rdp_glue::tls_identity(dir)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the gateway's TLS certificate cannot serve VNC")?;
    Ok(Arc::new(config))
}

/// Starts the VNC listeners' future: the usual one and transparent mode's (either may be
/// absent; with neither, a future that waits for the drain).
pub(crate) fn start(
    dir: &DataDir,
    listener: Option<tokio::net::TcpListener>,
    transparent: Option<(tokio::net::TcpListener, crate::listener::Transparent)>,
    services: Arc<gatehouse_ssh::Services>,
    screens: crate::live_view::LiveScreens,
    shutdown: gatehouse_ssh::Shutdown,
) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>> {
    if listener.is_none() && transparent.is_none() {
        return Ok(Box::pin(async move {
            shutdown.draining().await;
            Ok(())
        }));
    }
    if services.local().is_none() {
        bail!("VNC is served by processes that hold the vault (role all or control)");
    }
    let vnc = Arc::new(VncServices {
        services,
        recordings: dir.recordings(),
        client: ClientSideOptions::vencrypt(tls(dir)?),
        handshake_timeout: Duration::from_secs(30),
        screens,
    });
    if let Some(listener) = &listener {
        tracing::info!(address = %listener.local_addr()?, "VNC gateway listening");
    }
    let plain = listener.map(|l| serve(l, vnc.clone(), shutdown.clone(), None));
    let redirected = transparent.map(|(l, t)| serve(l, vnc, shutdown.clone(), Some(t)));
    Ok(Box::pin(crate::listener::both(plain, redirected)))
}

/// Accepts viewers until the gateway shuts down; one task and one span per connection. With
/// `transparent`, the connections were redirected by a router: the target is the asset at
/// their original destination (`alice@root` logs in there).
async fn serve(
    listener: tokio::net::TcpListener,
    services: Arc<VncServices>,
    shutdown: gatehouse_ssh::Shutdown,
    transparent: Option<crate::listener::Transparent>,
) -> std::io::Result<()> {
    let draining = shutdown.clone();
    let transparent = transparent.map(|t| (t, services.services.store.clone()));
    crate::listener::accept_protocol(
        listener,
        draining,
        ("vnc", "vnc-transparent"),
        transparent,
        |a| a.vnc.as_ref().map(|v| v.port),
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

/// One VNC connection.
struct Session {
    id: String,
    client: SocketAddr,
    services: Arc<VncServices>,
    shutdown: gatehouse_ssh::Shutdown,
    /// Transparent mode: where the connection was going.
    arrived: Option<crate::listener::Arrived>,
    user: String,
    target: String,
}

impl Gate for Session {
    const PROTOCOL: &'static str = "vnc";
    const LABEL: &'static str = "VNC";
    // Like RDP's, a VNC login's questions are answered from the login options.
    const PLUGIN_PROTOCOL: Protocol = Protocol::Vnc;

    fn id(&self) -> &str {
        &self.id
    }

    fn client(&self) -> SocketAddr {
        self.client
    }

    fn store(&self) -> &Arc<Store> {
        &self.services.services.store
    }

    fn auditor(&self) -> &Auditor {
        &self.services.services.auditor
    }

    fn entry(&self, kind: AuditKind, detail: String) -> Entry {
        access_gate::session_entry(
            kind,
            detail,
            &self.id,
            &self.user,
            &self.target,
            self.client,
            self.arrived.as_ref(),
        )
    }

    fn port(asset: &Asset) -> u16 {
        asset.vnc.as_ref().map(|v| v.port).unwrap_or(5900)
    }

    async fn answer(&self, question: &Question, login: &LoginSpec) -> Result<String, String> {
        login
            .option(&question.key)
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "a plugin asks `{}` ({}), which a VNC login cannot prompt for: give it in the user name as `{}=<answer>@...`",
                    question.key,
                    question.prompt.trim(),
                    question.key
                )
            })
    }

    async fn held(&self, _request: &AccessRequest, _wait: Duration) {}

    fn destination(&self) -> Option<SocketAddr> {
        self.arrived.as_ref().map(|a| a.arrival.destination)
    }

    fn source(&self) -> Option<std::net::IpAddr> {
        self.arrived.as_ref().and_then(|a| a.source)
    }
}

/// Why a session was stopped from outside its relay: the audit detail and fields.
type StopReason = (String, Vec<(&'static str, serde_json::Value)>);

/// The relay's recorder: every message to `vnc.rec` (written by a thread of its own, off the
/// data path), typed text to the session's events.
struct VncFile<'a> {
    file: BackgroundRecorder<BufWriter<std::fs::File>>,
    recording: &'a SessionRecording,
    typed: Mutex<(TypedText, Option<Duration>)>,
    /// Milliseconds into the session of the user's last key or pointer event.
    last_input: AtomicU64,
}

impl VncFile<'_> {
    /// Logs the text typed so far as one `keys` event.
    fn flush_keys(&self, end: Duration) {
        let Ok(mut typed) = self.typed.lock() else {
            return;
        };
        let text = typed.0.take();
        let Some(start) = typed.1.take() else {
            return;
        };
        if text.is_empty() {
            return;
        }
        let event = RecordingEvent::Keys {
            text,
            end: end.as_secs_f64(),
        };
        if let Err(e) = self.recording.log_at(start, None, event) {
            tracing::warn!(error = %e, "cannot log typed text");
        }
    }
}

impl gatehouse_vnc::Recorder for VncFile<'_> {
    fn record(&self, event: &RecordedEvent<'_>) -> Result<(), RecordError> {
        self.file.record(event)?;
        if let RecordedKind::FromClient(message) = &event.kind {
            let input = match message {
                ClientMessage::KeyEvent { down, keysym } => {
                    let newline = {
                        let Ok(mut typed) = self.typed.lock() else {
                            return Ok(());
                        };
                        typed.1.get_or_insert(event.at);
                        typed.0.key(*down, *keysym);
                        typed.0.text().ends_with('\n')
                    };
                    if newline {
                        self.flush_keys(event.at);
                    }
                    true
                }
                ClientMessage::PointerEvent { .. } => true,
                _ => false,
            };
            if input {
                self.last_input
                    .store(event.at.as_millis() as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl Session {
    fn audit(
        &self,
        kind: AuditKind,
        detail: impl Into<String>,
        fields: &[(&str, serde_json::Value)],
    ) {
        let mut entry = Gate::entry(self, kind, detail.into()).field("protocol", "vnc");
        for (k, v) in fields {
            entry = entry.field(k, v.clone());
        }
        self.services.services.auditor.record_best_effort(entry);
    }

    async fn run(mut self, socket: TcpStream) {
        let _ = socket.set_nodelay(true);
        let services = self.services.clone();
        let Some(local) = services.services.local() else {
            return;
        };
        let deciders = Deciders {
            vault: &local.vault,
            policy: &local.policy,
            plugins: local.plugins.as_ref(),
            workflow: local.workflow.as_ref(),
        };
        let limit = services.handshake_timeout;
        let pending = match tokio::time::timeout(
            limit,
            gatehouse_vnc::accept(socket, &services.client),
        )
        .await
        {
            Ok(Ok(pending)) => pending,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "VNC handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!("VNC handshake timed out");
                return;
            }
        };
        let Some(credentials) = pending.credentials() else {
            let _ = pending
                .refuse("gatehouse: log in with a user name and password")
                .await;
            return;
        };
        let password = credentials.password.expose().to_string();
        let completed = access_gate::transparent_login(
            &self,
            self.arrived.as_ref(),
            credentials.username.trim(),
        );
        let login = match completed {
            Ok(login) => login,
            Err(line) => {
                let _ = pending.refuse(&line).await;
                return;
            }
        };
        let spec = match LoginSpec::parse(&login) {
            Ok(spec) => spec,
            Err(e) => {
                self.audit(AuditKind::LoginFailed, format!("malformed login: {e}"), &[]);
                let _ = pending.refuse(&format!("gatehouse: {e}")).await;
                return;
            }
        };
        (self.user, self.target) = access_gate::login_names(&spec);
        let password = gatehouse_core::SecretString::new(password);
        let checked =
            access_gate::check_password(&self, &local.authenticator, &spec, password).await;
        let Some(user) = checked else {
            let _ = pending.refuse("gatehouse: access denied").await;
            return;
        };
        let target = match &spec.target {
            Ok(target) => target.clone(),
            Err(e) => {
                self.audit(AuditKind::AccessDenied, e.to_string(), &[]);
                let _ = pending.refuse(&format!("gatehouse: {e}")).await;
                return;
            }
        };
        let Some(mut who) = access_gate::run_plugins(&self, &deciders, user, spec).await else {
            let _ = pending.refuse(gatehouse_plugin_host::login::REFUSED).await;
            return;
        };
        let Some((authorization, request)) =
            access_gate::permit(&self, &deciders, &who, &target).await
        else {
            let line = format!(
                "gatehouse: target `{}` is unknown or you are not permitted to use it",
                self.target
            );
            let _ = pending.refuse(&line).await;
            return;
        };
        if !self.shutdown.is_serving() {
            let _ = pending
                .refuse("gatehouse: the gateway is shutting down; try again later")
                .await;
            return;
        }
        // The target first: the viewer is let in only once the target let the gateway in.
        let reasons = serde_json::json!(authorization.reasons());
        let request_id = request.as_ref().map(|r| r.id.clone());
        let failed = |detail: String| {
            let mut fields = vec![("policies", reasons.clone())];
            if let Some(id) = &request_id {
                fields.push(("request", id.clone().into()));
            }
            self.audit(AuditKind::TargetConnectFailed, detail, &fields);
        };
        let unavailable = format!(
            "gatehouse: target `{}` could not be reached or logged in to; it was logged as session {}",
            self.target, self.id
        );
        let asset = authorization.asset().clone();
        let Some(endpoint) = asset.vnc.clone() else {
            failed(format!("asset `{}` does not accept VNC", asset.name));
            let _ = pending
                .refuse(&format!(
                    "gatehouse: target `{}` does not accept VNC",
                    self.target
                ))
                .await;
            return;
        };
        let vault_password =
            match access_gate::target_password(&self, &deciders, &authorization).await {
                Ok(password) => password.map(|p| Password::new(p.expose())),
                Err(e) => {
                    failed(e);
                    let _ = pending.refuse(&unavailable).await;
                    return;
                }
            };
        let target = match access_gate::dial(&self, &authorization, endpoint.port, limit).await {
            Ok(stream) => {
                let options = TargetOptions::default();
                match tokio::time::timeout(
                    limit,
                    gatehouse_vnc::connect(stream, vault_password.as_ref(), &options),
                )
                .await
                {
                    Ok(connected) => connected,
                    Err(_) => {
                        failed("the target's VNC handshake timed out".into());
                        let _ = pending.refuse(&unavailable).await;
                        return;
                    }
                }
            }
            Err(e) => {
                failed(e);
                let _ = pending.refuse(&unavailable).await;
                return;
            }
        };
        let refused = matches!(target, Err(TargetError::AuthenticationFailed { .. }));
        if target.is_ok() || refused {
            access_gate::credential_event(&self, &deciders, &authorization, target.is_ok()).await;
        }
        drop(vault_password);
        let target = match target {
            Ok(target) => target,
            Err(e) => {
                failed(format!("logging in to the target: {e}"));
                let line = if refused {
                    format!(
                        "gatehouse: target `{}` refused the vault's credential; it was logged as session {}",
                        self.target, self.id
                    )
                } else {
                    unavailable
                };
                let _ = pending.refuse(&line).await;
                return;
            }
        };
        let recording = match SessionRecording::create(&services.recordings, &self.id) {
            Ok(recording) => recording,
            Err(e) => {
                failed(format!("cannot record the session: {e}"));
                let _ = pending.refuse(&unavailable).await;
                return;
            }
        };
        let file = std::fs::File::create(recording.dir().join(VNC_FILE))
            .map_err(|e| e.to_string())
            .and_then(|f| RecordingWriter::new(BufWriter::new(f)).map_err(|e| e.to_string()))
            .and_then(|w| BackgroundRecorder::new(w).map_err(|e| e.to_string()));
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                failed(format!("cannot record the session: {e}"));
                let _ = pending.refuse(&unavailable).await;
                return;
            }
        };
        let account = authorization.account().name.to_string();
        let started = Timestamp::now();
        let mut connected = Gate::entry(
            &self,
            AuditKind::TargetConnectOk,
            format!("connected over VNC to `{}` as `{account}`", self.target),
        )
        .field("protocol", "vnc")
        .field("policies", reasons.clone());
        if let Some(id) = &request_id {
            connected = connected.field("request", id.clone());
        }
        // Fail closed: a session that cannot be audited is not opened.
        let audited = services
            .services
            .auditor
            .write_durable(
                self.record_op(&account, &asset, started, None, None, None),
                Some(connected),
            )
            .await;
        if let Err(e) = audited {
            tracing::error!(error = %e, "cannot audit the session start; closing");
            return;
        }
        let client = match pending.allow().await {
            Ok(client) => client,
            Err(e) => {
                tracing::info!(error = %e, "the viewer left before the session started");
                self.close_books(
                    &recording,
                    &account,
                    &asset,
                    started,
                    (0, 0),
                    Some(e.to_string()),
                )
                .await;
                return;
            }
        };
        let recorder = VncFile {
            file,
            recording: &recording,
            typed: Mutex::new((TypedText::new(), None)),
            last_input: AtomicU64::new(0),
        };
        let request_over = access_gate::request_ended(
            deciders.workflow.cloned(),
            request_id.clone(),
            self.id.clone(),
        );
        let (end, mut ended_from_outside) =
            tokio::sync::watch::channel::<Option<(String, String)>>(None);
        let _screen = services.screens.add_recording(
            &self.id,
            crate::video::ScreenRecording::Vnc(recording.dir().join(VNC_FILE)),
            &self.user,
            &self.target,
        );
        let _listed = services.services.live.register(
            &self.id,
            Box::new(move |by: &str, reason: &str| {
                let _ = end.send(Some((by.to_string(), reason.to_string())));
            }),
        );
        let idle_timeout = authorization.idle_timeout();
        let why: Mutex<Option<StopReason>> = Mutex::new(None);
        let idle = async {
            let Some((limit, _)) = &idle_timeout else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let last = Duration::from_millis(recorder.last_input.load(Ordering::Relaxed));
                if recording.elapsed().saturating_sub(last) >= *limit {
                    return;
                }
            }
        };
        let stop = async {
            let reason = tokio::select! {
                () = idle => {
                    let (limit, policy) = idle_timeout.unwrap_or((Duration::ZERO, ""));
                    (format!("session ended: no input for {} (policy `{policy}`)", humantime::format_duration(limit)),
                     vec![("reason", "idle".into()), ("policy", policy.into())])
                }
                state = request_over => (
                    format!("access request {} is {state}; the session ends", request_id.clone().unwrap_or_default()),
                    vec![("request", request_id.clone().unwrap_or_default().into())],
                ),
                Ok(by) = ended_from_outside.wait_for(Option::is_some) => {
                    let (by, reason) = by.clone().unwrap_or_default();
                    (format!("session terminated by {by}: {reason}"),
                     vec![("terminated_by", by.into()), ("reason", reason.into())])
                }
                () = self.shutdown.closing() => (
                    "the gateway shut down; the session was closed at the end of the grace period".into(),
                    vec![("reason", "shutdown".into())],
                ),
            };
            if let Ok(mut slot) = why.lock() {
                *slot = Some(reason);
            }
        };
        let options = RelayOptions {
            name_prefix: "gatehouse: ".into(),
            ..RelayOptions::default()
        };
        let outcome = gatehouse_vnc::relay(client, target, &recorder, &options, stop).await;
        recorder.flush_keys(recording.elapsed());
        if let Some((detail, fields)) = why.into_inner().ok().flatten() {
            self.audit(AuditKind::SessionEnded, detail, &fields);
        }
        let VncFile { file, .. } = recorder;
        // The records still queued are written before the books close.
        match tokio::task::spawn_blocking(move || file.finish()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot close the VNC recording"),
            Err(e) => tracing::error!(error = %e, "cannot close the VNC recording"),
        }
        let summary = &outcome.summary;
        let bytes = (summary.bytes_from_client, summary.bytes_from_target);
        let error = outcome.error.as_ref().map(|e| e.to_string());
        let mut fields = vec![
            ("bytes_up", bytes.0.into()),
            ("bytes_down", bytes.1.into()),
            ("framebuffer_updates", summary.framebuffer_updates.into()),
            ("key_events", summary.key_events.into()),
        ];
        if let Some(id) = &request_id {
            fields.push(("request", id.clone().into()));
        }
        if let Some(e) = &error {
            fields.push(("error", e.clone().into()));
        }
        self.audit(
            AuditKind::SessionEnded,
            format!(
                "session ended: {} bytes up, {} bytes down",
                bytes.0, bytes.1
            ),
            &fields,
        );
        let end = gatehouse_plugin_host::SessionEnd {
            started_at_ms: started.0,
            ended_at_ms: Timestamp::now().0,
            bytes_from_client: bytes.0,
            bytes_to_client: bytes.1,
            reason: "closed".into(),
        };
        access_gate::plugins_session_ended(&self, &deciders, &mut who, &end).await;
        self.close_books(&recording, &account, &asset, started, bytes, error)
            .await;
    }

    /// Stores the ended session's record and closes its recording (sealed and indexed next).
    async fn close_books(
        &self,
        recording: &SessionRecording,
        account: &str,
        asset: &Asset,
        started: Timestamp,
        bytes: (u64, u64),
        error: Option<String>,
    ) {
        let record = self.record_op(
            account,
            asset,
            started,
            Some(Timestamp::now()),
            Some(bytes),
            error,
        );
        self.services
            .services
            .auditor
            .queue_write_waiting(record, None)
            .await;
        if let Err(e) = recording.finish() {
            tracing::error!(error = %e, "cannot close the recording");
        }
    }

    /// The write that stores the session's record.
    fn record_op(
        &self,
        account: &str,
        asset: &Asset,
        started: Timestamp,
        ended: Option<Timestamp>,
        bytes: Option<(u64, u64)>,
        error: Option<String>,
    ) -> gatehouse_audit::StoreOp {
        let record = SessionRecord {
            id: self.id.clone(),
            user: self.user.clone(),
            account: account.to_string(),
            asset: asset.name.to_string(),
            client: self.client.to_string(),
            protocol: "vnc".into(),
            started,
            ended,
            bytes_up: bytes.map(|b| b.0).unwrap_or(0),
            bytes_down: bytes.map(|b| b.1).unwrap_or(0),
            channels: vec![],
            error,
            node: None,
            gateway: gatehouse_core::gateway::gateway_id(),
        };
        let id = self.id.clone();
        Box::new(move |txn| txn.put(&SESSIONS, &id, &record))
    }
}
