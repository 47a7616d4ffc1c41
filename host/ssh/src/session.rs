//! State of one gateway session, shared by the russh handler, the channel relays and the code that
//! closes the session: who logged in, the target connection (opened once), counters, channels.

use crate::messages::Refusal;
use crate::permit::Permit;
use crate::target::{DialError, TargetConnection, dial};
use crate::{GatewayConfig, Services};
use gatehouse_audit::Entry;
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditKind, ChannelSummary, LoginSpec, SecretString, SessionRecord, User};
use gatehouse_recording::SessionRecording;
use gatehouse_store::SESSIONS;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// An authorized, logged-in connection to the target.
pub(crate) struct Target {
    pub connection: TargetConnection,
    pub authorization: Permit,
}

/// How often a running session's record is brought up to date.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) struct SessionShared {
    pub id: String,
    pub client: SocketAddr,
    pub span: tracing::Span,
    pub services: Arc<Services>,
    pub config: Arc<GatewayConfig>,
    pub started: Timestamp,
    login: OnceLock<(User, LoginSpec)>,
    /// Transparent mode: where the connection was going.
    pub(crate) arrival: OnceLock<crate::transparent::Arrival>,
    /// How the user authenticated: "password" or "publickey", then the plugins that accepted.
    authenticated_with: OnceLock<Vec<String>>,
    /// A ticketing plugin verified the login's ticket.
    pub(crate) ticket_verified: AtomicBool,
    /// On a session node: the control node's ticket for this login, for the session decision.
    control_ticket: OnceLock<SecretString>,
    /// Plugin state, for the `session-ended` hooks.
    cookies: Mutex<Option<gatehouse_plugin_host::SessionCookies>>,
    target: tokio::sync::OnceCell<Result<Arc<Target>, Refusal>>,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    channels: Mutex<Vec<ChannelSummary>>,
    channel_numbers: AtomicU32,
    stored: AtomicBool,
    recording: tokio::sync::OnceCell<Result<Arc<SessionRecording>, String>>,
    /// Lines for the user while the session waits (an access request held at connect).
    notices: tokio::sync::watch::Sender<Vec<String>>,
    /// Set when the connection ends.
    ended: tokio::sync::watch::Sender<bool>,
    /// The russh handle of the connection, to disconnect it from outside (revocation).
    handle: OnceLock<russh::server::Handle>,
    /// The channel relays; the session's books close after they have added their channels.
    pub relays: tokio_util::task::TaskTracker,
    /// The remote forwards (`ssh -R`) bound on the target for this session.
    pub remote_forwards: crate::forward::RemoteForwards,
    /// The gateway's shutdown, which the relays watch.
    pub shutdown: crate::drain::Shutdown,
    /// Serialises queueing the session record's writes (progress updates and the final one), so
    /// no progress update is queued after the final record.
    record_lock: tokio::sync::Mutex<()>,
    /// The session's running terminals, as people joining it reach them.
    terminals: Mutex<Vec<Arc<crate::join::TerminalTap>>>,
}

impl SessionShared {
    pub fn new(
        id: String,
        client: SocketAddr,
        span: tracing::Span,
        services: Arc<Services>,
        config: Arc<GatewayConfig>,
        shutdown: crate::drain::Shutdown,
    ) -> Self {
        Self {
            id,
            client,
            span,
            services,
            config,
            started: Timestamp::now(),
            login: OnceLock::new(),
            arrival: OnceLock::new(),
            authenticated_with: OnceLock::new(),
            ticket_verified: AtomicBool::new(false),
            control_ticket: OnceLock::new(),
            cookies: Mutex::new(None),
            target: tokio::sync::OnceCell::new(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            channels: Mutex::new(Vec::new()),
            channel_numbers: AtomicU32::new(0),
            stored: AtomicBool::new(false),
            recording: tokio::sync::OnceCell::new(),
            notices: tokio::sync::watch::channel(Vec::new()).0,
            ended: tokio::sync::watch::channel(false).0,
            handle: OnceLock::new(),
            relays: tokio_util::task::TaskTracker::new(),
            remote_forwards: Default::default(),
            shutdown,
            record_lock: tokio::sync::Mutex::new(()),
            terminals: Mutex::new(Vec::new()),
        }
    }

    /// A terminal channel started: people joining the session reach it.
    pub(crate) fn add_terminal(&self, tap: Arc<crate::join::TerminalTap>) {
        if let Ok(mut terminals) = self.terminals.lock() {
            terminals.push(tap);
        }
    }

    /// Terminal channel `number` ended.
    pub(crate) fn remove_terminal(&self, number: u32) {
        if let Ok(mut terminals) = self.terminals.lock() {
            terminals.retain(|t| t.number != number);
        }
    }

    /// The session's first running terminal.
    pub(crate) fn first_terminal(&self) -> Option<Arc<crate::join::TerminalTap>> {
        self.terminals
            .lock()
            .ok()
            .and_then(|terminals| terminals.first().cloned())
    }

    /// The session's recording, when it was opened.
    pub(crate) fn opened_recording(&self) -> Option<Arc<SessionRecording>> {
        self.recording.get().and_then(|r| r.as_ref().ok()).cloned()
    }

    /// The running session this login joins, if it joins one.
    pub(crate) fn join_spec(&self) -> Option<gatehouse_core::JoinSpec> {
        self.login.get().and_then(|(_, login)| login.join())
    }

    /// The gateway user who logged in.
    pub(crate) fn logged_in_user(&self) -> Option<User> {
        self.login.get().map(|(user, _)| user.clone())
    }

    pub(crate) fn set_control_ticket(&self, ticket: SecretString) {
        let _ = self.control_ticket.set(ticket);
    }

    pub(crate) fn control_ticket(&self) -> Option<&SecretString> {
        self.control_ticket.get()
    }

    pub(crate) fn authenticated_with(&self) -> Vec<String> {
        self.authenticated_with.get().cloned().unwrap_or_default()
    }

    /// Shows a line to the user on every session channel (stderr).
    pub(crate) fn notice(&self, line: String) {
        self.notices.send_modify(|lines| lines.push(line));
    }

    pub(crate) fn notices(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        self.notices.subscribe()
    }

    /// Resolves when the connection has ended.
    pub(crate) async fn closed(&self) {
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|e| *e).await;
    }

    pub(crate) fn set_handle(&self, handle: russh::server::Handle) {
        let _ = self.handle.set(handle);
    }

    /// Tells the user why and closes the connection.
    pub(crate) async fn disconnect(&self, why: &str) {
        self.notice(why.to_string());
        // Give the channels a moment to write the line before the connection goes.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Some(handle) = self.handle.get() {
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    why.to_string(),
                    String::new(),
                )
                .await;
        }
    }

    /// Records who logged in. Called once, when authentication succeeds.
    pub fn logged_in(
        &self,
        user: User,
        login: LoginSpec,
        authenticated_with: Vec<String>,
        ticket_verified: bool,
        cookies: gatehouse_plugin_host::SessionCookies,
    ) {
        let _ = self.authenticated_with.set(authenticated_with);
        self.ticket_verified
            .store(ticket_verified, Ordering::Relaxed);
        if let Ok(mut c) = self.cookies.lock() {
            *c = Some(cookies);
        }
        self.span.record("user", user.name.as_str());
        if let Ok(target) = &login.target {
            self.span.record("target", tracing::field::display(target));
        }
        let _ = self.login.set((user, login));
    }

    pub fn user_name(&self) -> String {
        self.login
            .get()
            .map(|(u, _)| u.name.to_string())
            .unwrap_or_default()
    }

    pub fn target_text(&self) -> String {
        match self.login.get().map(|(_, l)| &l.target) {
            Some(Ok(t)) => t.to_string(),
            _ => String::new(),
        }
    }

    pub fn next_channel_number(&self) -> u32 {
        self.channel_numbers.fetch_add(1, Ordering::Relaxed)
    }

    pub fn add_channel(&self, summary: ChannelSummary) {
        if let Ok(mut channels) = self.channels.lock() {
            channels.push(summary);
        }
    }

    /// The session's recording directory, created on first use (on a blocking thread: creating
    /// it syncs the directories).
    pub async fn recording(&self) -> Result<Arc<SessionRecording>, String> {
        self.recording
            .get_or_init(|| async {
                let root = self.config.recordings_dir.clone();
                let id = self.id.clone();
                tokio::task::spawn_blocking(move || SessionRecording::create(&root, &id))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|created| created.map(Arc::new).map_err(|e| e.to_string()))
            })
            .await
            .clone()
    }

    fn entry(&self, kind: AuditKind, detail: impl Into<String>) -> Entry {
        Entry::new(kind, detail)
            .session(self.id.clone())
            .user(self.user_name())
            .target(self.target_text())
            .client(self.client.to_string())
    }

    /// Audits an event about this session; failures are logged.
    pub fn audit(
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

    /// Audits an event about this session and returns once it is on disk (without holding an
    /// async worker): for events the user's client is answered after, so an acknowledged event is
    /// never lost.
    pub async fn audit_durable(
        &self,
        kind: AuditKind,
        detail: impl Into<String>,
        fields: &[(&str, serde_json::Value)],
    ) -> Result<(), gatehouse_store::StoreError> {
        let mut entry = self.entry(kind, detail);
        for (k, v) in fields {
            entry = entry.field(k, v.clone());
        }
        self.services.auditor.record_durable(entry).await.map(drop)
    }

    /// The target connection, opened on first use (authorization, then dial). Every channel of
    /// the session shares it; every caller gets the same outcome.
    pub async fn target(self: &Arc<Self>) -> Result<Arc<Target>, Refusal> {
        self.target
            .get_or_init(|| async { self.open_target().await })
            .await
            .clone()
    }

    async fn open_target(self: &Arc<Self>) -> Result<Arc<Target>, Refusal> {
        let internal = || Refusal::Internal {
            session: self.id.clone(),
        };
        let Some((user, login)) = self.login.get() else {
            return Err(internal());
        };
        let target = match &login.target {
            Ok(t) => t.clone(),
            Err(e) => {
                self.audit(AuditKind::AccessDenied, e.to_string(), &[]);
                return Err(Refusal::MalformedTarget(e.clone()));
            }
        };
        let (authorization, request) = self.authorize(user, login, &target).await?;
        let reasons = serde_json::json!(authorization.reasons());
        let request_id = serde_json::json!(request.clone());
        // Transparent mode may leave from the user's own address, as if there were no gateway.
        let from =
            (self.config.transparent && self.config.source_from_client).then_some(self.client.ip());
        let dialed = dial(&self.services, &self.config, &authorization, &self.id, from).await;
        let connection = match dialed {
            Ok(c) => c,
            Err(e) => {
                self.audit(
                    AuditKind::TargetConnectFailed,
                    e.to_string(),
                    &[("policies", reasons), ("request", request_id)],
                );
                let t = target.to_string();
                return Err(match e {
                    DialError::Unreachable { .. } | DialError::Timeout(_) => {
                        Refusal::Unreachable(t)
                    }
                    DialError::ClosedDuringHandshake(_) => Refusal::TargetClosed(t),
                    DialError::HostKeyMismatch { .. } | DialError::BadPinnedKey => {
                        Refusal::HostKeyMismatch(t)
                    }
                    DialError::CredentialRejected { .. }
                    | DialError::NoCredential
                    | DialError::BadPrivateKey(_) => Refusal::CredentialRejected(t),
                    DialError::Vault(_)
                    | DialError::CredentialStore(_)
                    | DialError::Store(_)
                    | DialError::Protocol(_) => internal(),
                });
            }
        };
        // Fail closed: a session that cannot be audited is not opened. The record and the event
        // commit together, through the writer thread, so no async worker waits for the disk.
        let connected = self
            .entry(
                AuditKind::TargetConnectOk,
                format!(
                    "connected to `{target}` as `{}`",
                    authorization.account_name()
                ),
            )
            .field("policies", reasons)
            .field("request", request_id);
        let connected = match self.arrival.get() {
            Some(arrival) if self.config.source_from_client => connected
                .field("transparent", true)
                .field("destination", arrival.destination.to_string())
                .field("dialed_from", self.client.ip().to_string()),
            Some(arrival) => connected
                .field("transparent", true)
                .field("destination", arrival.destination.to_string()),
            None => connected,
        };
        let audited = self
            .services
            .auditor
            .write_durable(self.record_op(None), Some(connected))
            .await;
        if let Err(e) = audited {
            tracing::error!(error = %e, "cannot audit session start; closing");
            return Err(internal());
        }
        self.stored.store(true, Ordering::Relaxed);
        self.record_progress();
        if let Some((limit, policy)) = authorization.idle_timeout() {
            self.watch_idle(limit, policy.to_string());
        }
        if let Some(request) = request {
            self.watch_request(request);
        }
        Ok(Arc::new(Target {
            connection,
            authorization,
        }))
    }

    /// Keeps a running session's record current (bytes up and down) while it runs.
    fn record_progress(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let mut ended = self.ended.subscribe();
        tokio::spawn(async move {
            let mut written = (0, 0);
            loop {
                tokio::select! {
                    _ = ended.wait_for(|e| *e) => return,
                    () = tokio::time::sleep(PROGRESS_INTERVAL) => {}
                }
                let Some(shared) = weak.upgrade() else { return };
                let now = (
                    shared.bytes_up.load(Ordering::Relaxed),
                    shared.bytes_down.load(Ordering::Relaxed),
                );
                if now == written {
                    continue;
                }
                let _guard = shared.record_lock.lock().await;
                if *shared.ended.borrow() {
                    return;
                }
                // Queued, not awaited; a full queue skips this update (the next one catches up).
                if shared
                    .services
                    .auditor
                    .queue_write(shared.record_op(None))
                    .is_ok()
                {
                    written = now;
                }
            }
        });
    }

    /// Ends the session once the user has sent nothing for `limit` (the `@idle_timeout` of
    /// `policy`, which permitted it), warning on its terminals a little before. Input is any
    /// byte from the user (or a joiner) towards the target, on any channel.
    fn watch_idle(self: &Arc<Self>, limit: std::time::Duration, policy: String) {
        use std::time::Duration;
        let weak = Arc::downgrade(self);
        let mut ended = self.ended.subscribe();
        let warn_before = (limit / 4).min(Duration::from_secs(60));
        tokio::spawn(async move {
            let mut seen = u64::MAX;
            let mut since = tokio::time::Instant::now();
            let mut warned = false;
            loop {
                tokio::select! {
                    _ = ended.wait_for(|e| *e) => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                let Some(shared) = weak.upgrade() else { return };
                let up = shared.bytes_up.load(Ordering::Relaxed);
                if up != seen {
                    seen = up;
                    since = tokio::time::Instant::now();
                    warned = false;
                    continue;
                }
                let idle = since.elapsed();
                if idle >= limit {
                    let text = humantime::format_duration(limit).to_string();
                    shared.audit(
                        AuditKind::SessionEnded,
                        format!("session ended: no input for {text} (policy `{policy}`)"),
                        &[
                            ("reason", "idle".into()),
                            ("idle_timeout_secs", limit.as_secs().into()),
                            ("policy", policy.clone().into()),
                        ],
                    );
                    shared
                        .disconnect(&format!(
                            "gatehouse: no input for {text}: the session ends (idle timeout of policy `{policy}`)"
                        ))
                        .await;
                    return;
                }
                if !warned && idle + warn_before >= limit {
                    warned = true;
                    let left = limit.saturating_sub(idle).as_secs().max(1);
                    if let Ok(terminals) = shared.terminals.lock() {
                        for tap in terminals.iter() {
                            tap.notice(format!(
                                "gatehouse: no input for a while: this session ends in {left} s unless you type something"
                            ));
                        }
                    }
                }
            }
        });
    }

    /// The write that stores the session's record as it is now.
    fn record_op(&self, ended: Option<Timestamp>) -> gatehouse_audit::StoreOp {
        let (user, target) = match self.login.get() {
            Some((u, l)) => (u.name.to_string(), l.target.as_ref().ok().cloned()),
            None => (String::new(), None),
        };
        let record = SessionRecord {
            id: self.id.clone(),
            user,
            account: target
                .as_ref()
                .map(|t| t.account.to_string())
                .unwrap_or_default(),
            asset: target
                .as_ref()
                .map(|t| t.asset.to_string())
                .unwrap_or_default(),
            client: self.client.to_string(),
            protocol: "ssh".into(),
            started: self.started,
            ended,
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
            channels: self.channels.lock().map(|c| c.clone()).unwrap_or_default(),
            error: None,
            node: None,
            gateway: gatehouse_core::gateway::gateway_id(),
        };
        let id = self.id.clone();
        Box::new(move |txn| txn.put(&SESSIONS, &id, &record))
    }

    /// On a session node: the control node forgets the session's grant (best effort; it also
    /// forgets idle grants by itself).
    fn tell_control_ended(&self) {
        let (crate::Authority::Remote(control), Some(Ok(target))) =
            (&self.services.authority, self.target.get())
        else {
            return;
        };
        let Permit::Remote(permit) = &target.authorization else {
            return;
        };
        let control = control.clone();
        let grant = permit.grant().to_string();
        tokio::spawn(async move {
            if let Err(e) = control.session_ended(&grant).await {
                tracing::debug!(error = %e, "could not tell the control node the session ended");
            }
        });
    }

    /// Tells the plugins the session ended (ticket comments, check-in); failures are audited.
    fn plugins_session_ended(&self) {
        let (Some(plugins), Some((user, login))) =
            (self.services.plugins().cloned(), self.login.get())
        else {
            return;
        };
        let Some(mut cookies) = self.cookies.lock().ok().and_then(|mut c| c.take()) else {
            return;
        };
        let conn = crate::aa::connection_info(self, user, login, Default::default());
        let end = gatehouse_plugin_host::SessionEnd {
            started_at_ms: self.started.0,
            ended_at_ms: Timestamp::now().0,
            bytes_from_client: self.bytes_up.load(Ordering::Relaxed),
            bytes_to_client: self.bytes_down.load(Ordering::Relaxed),
            reason: "closed".into(),
        };
        let auditor = self.services.auditor.clone();
        let id = self.id.clone();
        let name = user.name.to_string();
        tokio::spawn(async move {
            for failure in plugins.session_ended(&conn, &mut cookies, &end).await {
                auditor.record_best_effort(
                    gatehouse_audit::Entry::new(AuditKind::SessionEnded, failure.to_string())
                        .session(id.clone())
                        .user(name.clone()),
                );
            }
        });
    }

    /// Closes the session's books: the recording (synced on a blocking thread), the stored
    /// record and the audit trail's closing event (queued together behind the session's other
    /// events, without waiting for the disk).
    pub async fn finish(&self) {
        self.ended.send_replace(true);
        self.plugins_session_ended();
        self.tell_control_ended();
        if let Some(Ok(recording)) = self.recording.get() {
            let recording = recording.clone();
            let closed = tokio::task::spawn_blocking(move || recording.finish()).await;
            match closed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "cannot close the recording"),
                Err(e) => tracing::error!(error = %e, "cannot close the recording"),
            }
        }
        if !self.stored.load(Ordering::Relaxed) {
            return;
        }
        // A progress update being queued goes first; none is queued after `ended` is set.
        let _guard = self.record_lock.lock().await;
        let up = self.bytes_up.load(Ordering::Relaxed);
        let down = self.bytes_down.load(Ordering::Relaxed);
        let ended = self
            .entry(
                AuditKind::SessionEnded,
                format!("session ended: {up} bytes up, {down} bytes down"),
            )
            .field("bytes_up", up)
            .field("bytes_down", down);
        self.services
            .auditor
            .queue_write_waiting(self.record_op(Some(Timestamp::now())), Some(ended))
            .await;
    }
}
