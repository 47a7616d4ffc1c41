//! `gatehouse serve`'s Telnet listener: the glue between the Telnet proxy core
//! (`gatehouse-telnet`, which knows nothing of the store, the vault or Cedar) and the rest of
//! Gatehouse, for devices that speak nothing else. Per connection: the gateway asks `login:`
//! (`alice@root@switch1`, options before the name as in SSH) and `Password:` in-band, checks the
//! password and runs the AA plugins (their questions asked in-band too), decides the session
//! with Cedar (`telnet_session`, `protocol: "telnet"` in the context) through the same access
//! path as RDP (`crate::access_gate`: access tokens, requests, connections held for approval),
//! logs in to the target by answering its prompts with the vault's password (patterns per
//! asset), and relays the session recorded as the same asciicast SSH writes, so playback and
//! search work unchanged. Telnet is cleartext: the listener is off unless turned on
//! (settings.json `telnet`, `--telnet-listen`). See docs/telnet.md.

use crate::access_gate::{self, Deciders, Gate};
use crate::datadir::TelnetSettings;
use anyhow::{Result, bail};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    AccessRequest, Asset, AuditKind, ChannelSummary, LoginSpec, SessionRecord, TelnetEndpoint,
};
use gatehouse_plugin_host::{Protocol, Question};
use gatehouse_policy::TargetAuthorization;
use gatehouse_recording::{CastHeader, ChannelRecorder, RecordingEvent, SessionRecording};
use gatehouse_store::{SESSIONS, Store};
use gatehouse_telnet::{
    ClientConfig, ClientSide, Credential, LoginScript, Pattern, RecordError, Regex, RelayConfig,
    TargetError, TargetSide, WindowSize,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Everything a Telnet session needs from the rest of Gatehouse.
pub struct TelnetServices {
    /// The store, auditor, running sessions and deciders the SSH gateway uses.
    pub services: Arc<gatehouse_ssh::Services>,
    pub recordings: PathBuf,
    /// Limits of the user's leg (negotiation, answers, type-ahead).
    pub client: ClientConfig,
    /// Limit for connecting to a target.
    pub connect_timeout: Duration,
}

/// The asset's login conversation: its patterns (case-insensitive regular expressions), the
/// defaults of `gatehouse-telnet` for those it does not set. `Err`: a pattern that does not
/// compile, named.
pub fn login_script(endpoint: &TelnetEndpoint) -> Result<LoginScript, String> {
    let pattern = |what: &str, text: &Option<String>| -> Result<Option<Pattern>, String> {
        text.as_deref()
            .map(|t| {
                Regex::new(&format!("(?i){t}"))
                    .map(Pattern::Regex)
                    .map_err(|e| {
                        format!("the Telnet {what} pattern `{t}` is not a regular expression: {e}")
                    })
            })
            .transpose()
    };
    let mut script = LoginScript::default();
    if let Some(p) = pattern("login prompt", &endpoint.login_prompt)? {
        script.user_prompt = p;
    }
    if let Some(p) = pattern("password prompt", &endpoint.password_prompt)? {
        script.password_prompt = p;
    }
    if let Some(p) = pattern("failure", &endpoint.failure)? {
        script.failure = p;
    }
    if let Some(p) = pattern("success", &endpoint.success)? {
        script.success = Some(p);
    }
    Ok(script)
}

/// Binds the Telnet listener: the explicit `--telnet-listen` address, else settings.json
/// `telnet` when it is enabled. Either must bind. `None` when Telnet is off.
pub async fn bind(
    settings: &TelnetSettings,
    explicit: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>> {
    crate::listener::bind_optional("Telnet", settings.enabled, settings.listen, explicit).await
}

/// Accepts Telnet clients until the gateway shuts down; one task and one span per connection.
/// With `transparent`, the connections were redirected by a router: the target is the asset at
/// their original destination (`alice@root` logs in there). Returns when every session has
/// ended.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    services: Arc<TelnetServices>,
    shutdown: gatehouse_ssh::Shutdown,
    transparent: Option<crate::listener::Transparent>,
) -> std::io::Result<()> {
    if services.services.local().is_none() {
        tracing::error!("Telnet is served by processes that hold the vault (role all or control)");
        return Ok(());
    }
    let draining = shutdown.clone();
    let transparent = transparent.map(|t| (t, services.services.store.clone()));
    crate::listener::accept_protocol(
        listener,
        draining,
        ("telnet", "telnet-transparent"),
        transparent,
        |a| a.telnet.as_ref().map(|t| t.port),
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

/// What the user reads when the target or the account is unknown or not theirs to use: the
/// same words either way, so nobody learns which targets exist.
fn not_permitted(target: &str) -> String {
    format!("gatehouse: target `{target}` is unknown or you are not permitted to use it")
}

/// One Telnet connection.
struct Session {
    id: String,
    client: SocketAddr,
    services: Arc<TelnetServices>,
    shutdown: gatehouse_ssh::Shutdown,
    /// Transparent mode: where the client was connecting to, and the asset there.
    arrived: Option<crate::listener::Arrived>,
    /// Known once the user named them.
    user: String,
    target: String,
}

/// A session as the access decisions see it: while its user answers, they ask through the
/// user's leg; once the session is decided (credential events, the plugins' session end),
/// nothing more is asked.
struct Asking<'a, 's> {
    session: &'a Session,
    client: Option<tokio::sync::Mutex<&'a mut ClientSide<&'s mut TcpStream>>>,
}

impl<'a> Asking<'a, '_> {
    fn decided(session: &'a Session) -> Self {
        Asking {
            session,
            client: None,
        }
    }
}

impl Gate for Asking<'_, '_> {
    const PROTOCOL: &'static str = "telnet";
    const LABEL: &'static str = "Telnet";
    // Questions are asked in-band, as SSH's keyboard-interactive asks them.
    const PLUGIN_PROTOCOL: Protocol = Protocol::Telnet;

    fn id(&self) -> &str {
        &self.session.id
    }

    fn client(&self) -> SocketAddr {
        self.session.client
    }

    fn store(&self) -> &Arc<Store> {
        &self.session.services.services.store
    }

    fn auditor(&self) -> &Auditor {
        &self.session.services.services.auditor
    }

    fn entry(&self, kind: AuditKind, detail: String) -> Entry {
        self.session.entry(kind, detail)
    }

    fn port(asset: &Asset) -> u16 {
        asset.telnet.as_ref().map(|t| t.port).unwrap_or(23)
    }

    async fn answer(&self, question: &Question, _login: &LoginSpec) -> Result<String, String> {
        let Some(client) = &self.client else {
            return Err(format!(
                "a plugin asked `{}` after the login was decided",
                question.key
            ));
        };
        let mut client = client.lock().await;
        let answered = if question.echo {
            client.ask(&question.prompt).await
        } else {
            client
                .ask_secret(&question.prompt)
                .await
                .map(|secret| secret.expose().to_string())
        };
        answered.map_err(|e| format!("no answer to the plugin's question `{}`: {e}", question.key))
    }

    fn destination(&self) -> Option<SocketAddr> {
        self.session.arrived.as_ref().map(|a| a.arrival.destination)
    }

    fn source(&self) -> Option<std::net::IpAddr> {
        self.session.arrived.as_ref().and_then(|a| a.source)
    }

    async fn held(&self, request: &AccessRequest, wait: Duration) {
        let line = format!(
            "gatehouse: access request {} awaits approval; waiting up to {} s",
            request.id,
            wait.as_secs()
        );
        if let Some(client) = &self.client {
            let _ = client.lock().await.say(&line).await;
        }
    }
}

/// The recording of the session's terminal, what its watchers see, and when the user last
/// typed.
struct CastRecorder {
    cast: ChannelRecorder,
    feed: Arc<gatehouse_ssh::TerminalFeed>,
    started: Instant,
    /// Milliseconds since `started` of the last input.
    last_input: Arc<AtomicU64>,
}

impl gatehouse_telnet::Recorder for CastRecorder {
    fn output(&mut self, data: &[u8]) -> Result<(), RecordError> {
        self.feed.output(&bytes::Bytes::copy_from_slice(data));
        self.cast
            .output(data)
            .map_err(|e| RecordError(e.to_string()))
    }

    fn input(&mut self, data: &[u8]) -> Result<(), RecordError> {
        self.last_input
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.cast
            .input(data)
            .map_err(|e| RecordError(e.to_string()))
    }

    fn resize(&mut self, size: WindowSize) -> Result<(), RecordError> {
        self.cast
            .resize(size.columns.into(), size.rows.into())
            .map_err(|e| RecordError(e.to_string()))
    }
}

/// Writes one line to a client whose Telnet leg is gone (after the relay): IAC escaped.
async fn last_word(socket: &mut TcpStream, line: &str) {
    let mut out = Vec::new();
    gatehouse_telnet::codec::escape_text(format!("\r\n{line}\r\n").as_bytes(), &mut out);
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.write_all(&out)).await;
    let _ = socket.shutdown().await;
}

impl Session {
    fn entry(&self, kind: AuditKind, detail: impl Into<String>) -> Entry {
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

    fn audit(
        &self,
        kind: AuditKind,
        detail: impl Into<String>,
        fields: &[(&str, serde_json::Value)],
    ) {
        let mut entry = self.entry(kind, detail).field("protocol", "telnet");
        for (k, v) in fields {
            entry = entry.field(k, v.clone());
        }
        self.services.services.auditor.record_best_effort(entry);
    }

    async fn run(mut self, mut socket: TcpStream) {
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
        let mut client = match ClientSide::accept(&mut socket, services.client.clone()).await {
            Ok(client) => client,
            Err(e) => {
                tracing::info!(error = %e, "Telnet negotiation failed");
                return;
            }
        };
        let login = match client.ask("login: ").await {
            Ok(login) => login.trim().to_string(),
            Err(e) => {
                tracing::info!(error = %e, "no login given");
                return;
            }
        };
        let completed =
            access_gate::transparent_login(&Asking::decided(&self), self.arrived.as_ref(), &login);
        let login = match completed {
            Ok(login) => login,
            Err(line) => {
                let _ = client.say(&line).await;
                return;
            }
        };
        if !client.gateway_echoes() {
            let _ = client
                .say("gatehouse: your client echoes what you type; the password will show")
                .await;
        }
        let password = match client.ask_secret("Password: ").await {
            Ok(password) => password,
            Err(e) => {
                tracing::info!(error = %e, "no password given");
                return;
            }
        };
        let spec = match LoginSpec::parse(&login) {
            Ok(spec) => spec,
            Err(e) => {
                self.audit(AuditKind::LoginFailed, format!("malformed login: {e}"), &[]);
                let _ = client.say(&format!("gatehouse: {e}")).await;
                return;
            }
        };
        (self.user, self.target) = access_gate::login_names(&spec);
        if spec.join().is_some() {
            self.audit(
                AuditKind::AccessDenied,
                "joining a session is offered over SSH only",
                &[],
            );
            let _ = client
                .say("gatehouse: joining a running session is done over SSH")
                .await;
            return;
        }
        let checked = access_gate::check_password(
            &Asking::decided(&self),
            &local.authenticator,
            &spec,
            password,
        )
        .await;
        let Some(user) = checked else {
            let _ = client.say("gatehouse: access denied").await;
            return;
        };
        let target = match &spec.target {
            Ok(target) => target.clone(),
            Err(e) => {
                self.audit(AuditKind::AccessDenied, e.to_string(), &[]);
                let _ = client.say(&format!("gatehouse: {e}")).await;
                return;
            }
        };
        let decided = {
            let asking = Asking {
                session: &self,
                client: Some(tokio::sync::Mutex::new(&mut client)),
            };
            match access_gate::run_plugins(&asking, &deciders, user, spec).await {
                None => Err(gatehouse_plugin_host::login::REFUSED.to_string()),
                Some(who) => match access_gate::permit(&asking, &deciders, &who, &target).await {
                    Some((authorization, request)) => Ok((who, authorization, request)),
                    None => Err(not_permitted(&self.target)),
                },
            }
        };
        let (mut who, authorization, request) = match decided {
            Ok(decided) => decided,
            Err(line) => {
                let _ = client.say(&line).await;
                return;
            }
        };
        if !self.shutdown.is_serving() {
            self.audit(
                AuditKind::AccessDenied,
                "the gateway is shutting down; no new sessions",
                &[],
            );
            let _ = client
                .say("gatehouse: the gateway is shutting down; try again later")
                .await;
            return;
        }
        let outcome = self
            .connect(&deciders, client, &authorization, request)
            .await;
        if let Some((opened, end)) = &outcome {
            let end = gatehouse_plugin_host::SessionEnd {
                started_at_ms: opened.0,
                ended_at_ms: Timestamp::now().0,
                bytes_from_client: end.bytes_up,
                bytes_to_client: end.bytes_down,
                reason: "closed".into(),
            };
            access_gate::plugins_session_ended(&Asking::decided(&self), &deciders, &mut who, &end)
                .await;
        }
        if let Some((_, end)) = outcome
            && let Some(line) = end.last_word
        {
            last_word(&mut socket, &line).await;
        }
    }

    /// Logs in to the target with the account's password, then relays and records the
    /// session until either side closes, it is ended from outside, or its request ends. The
    /// session's start and byte counts, when it was opened.
    async fn connect(
        &self,
        deciders: &Deciders<'_>,
        mut client: ClientSide<&mut TcpStream>,
        authorization: &TargetAuthorization,
        request: Option<AccessRequest>,
    ) -> Option<(Timestamp, Ended)> {
        let reasons = serde_json::json!(authorization.reasons());
        let request_id = request.as_ref().map(|r| r.id.clone());
        let failed = |detail: String| {
            let mut fields = vec![("policies", reasons.clone())];
            if let Some(id) = &request_id {
                fields.push(("request", id.clone().into()));
            }
            self.audit(AuditKind::TargetConnectFailed, detail, &fields);
        };
        let done = Asking::decided(self);
        let asset = authorization.asset().clone();
        let account = authorization.account().name.to_string();
        let Some(endpoint) = asset.telnet.clone() else {
            failed(format!("asset `{}` does not accept Telnet", asset.name));
            let _ = client
                .say(&format!(
                    "gatehouse: target `{}` does not accept Telnet",
                    self.target
                ))
                .await;
            return None;
        };
        let unavailable = format!(
            "gatehouse: target `{}` could not be reached or logged in to; it was logged as session {}",
            self.target, self.id
        );
        let script = match login_script(&endpoint) {
            Ok(script) => script,
            Err(e) => {
                failed(e);
                let _ = client.say(&unavailable).await;
                return None;
            }
        };
        let password = match access_gate::target_password(&done, deciders, authorization).await {
            Ok(Some(password)) => password,
            Ok(None) => {
                failed(format!("account `{account}` holds no password"));
                let _ = client.say(&unavailable).await;
                return None;
            }
            Err(e) => {
                failed(e);
                let _ = client.say(&unavailable).await;
                return None;
            }
        };
        let stream = match access_gate::dial(
            &done,
            authorization,
            endpoint.port,
            self.services.connect_timeout,
        )
        .await
        {
            Ok(stream) => stream,
            Err(e) => {
                failed(e);
                let _ = client.say(&unavailable).await;
                return None;
            }
        };
        let mut target = match TargetSide::connect(stream, &client.terminal()).await {
            Ok(target) => target,
            Err(e) => {
                failed(format!("Telnet negotiation with the target: {e}"));
                let _ = client.say(&unavailable).await;
                return None;
            }
        };
        let credential = Credential {
            username: &account,
            password: &password,
        };
        let logged_in = target.login(&credential, &script).await;
        let accepted = logged_in.is_ok();
        if accepted || matches!(logged_in, Err(TargetError::Refused { .. })) {
            access_gate::credential_event(&done, deciders, authorization, accepted).await;
        }
        drop(password);
        if let Err(e) = logged_in {
            let line = match &e {
                TargetError::Refused { .. } => format!(
                    "gatehouse: target `{}` refused the vault's credential; it was logged as session {}",
                    self.target, self.id
                ),
                _ => unavailable.clone(),
            };
            failed(format!("logging in to the target: {e}"));
            let _ = client.say(&line).await;
            return None;
        }
        let terminal = client.terminal();
        let (cols, rows) = terminal
            .window
            .map(|w| (u32::from(w.columns), u32::from(w.rows)))
            .filter(|&(c, r)| c > 0 && r > 0)
            .unwrap_or((80, 24));
        let term = terminal
            .terminal_type
            .as_deref()
            .unwrap_or("unknown")
            .to_ascii_lowercase();
        let recording = match SessionRecording::create(&self.services.recordings, &self.id) {
            Ok(recording) => recording,
            Err(e) => {
                tracing::error!(error = %e, "cannot record the session; closing");
                failed(format!("cannot record the session: {e}"));
                let _ = client.say(&unavailable).await;
                return None;
            }
        };
        let header = CastHeader::new(cols, rows)
            .with_term(term.clone())
            .with_title(format!("{}@{}", self.user, self.target));
        let cast = recording
            .log(
                Some(0),
                RecordingEvent::Pty {
                    term,
                    width: cols,
                    height: rows,
                },
            )
            .and_then(|()| recording.log(Some(0), RecordingEvent::Shell))
            .and_then(|()| recording.channel(0, header));
        let cast = match cast {
            Ok(cast) => cast,
            Err(e) => {
                tracing::error!(error = %e, "cannot record the session; closing");
                failed(format!("cannot record the session: {e}"));
                let _ = client.say(&unavailable).await;
                return None;
            }
        };
        let started = Timestamp::now();
        // Fail closed: a session that cannot be audited is not opened.
        let mut connected = self
            .entry(
                AuditKind::TargetConnectOk,
                format!("connected over Telnet to `{}` as `{account}`", self.target),
            )
            .field("protocol", "telnet")
            .field("policies", reasons.clone());
        if let Some(id) = &request_id {
            connected = connected.field("request", id.clone());
        }
        let audited = self
            .services
            .services
            .auditor
            .write_durable(
                self.record_op(&account, &asset.name, started, None, None, None),
                Some(connected),
            )
            .await;
        if let Err(e) = audited {
            tracing::error!(error = %e, "cannot audit the session start; closing");
            return None;
        }
        let workflow = deciders.workflow.cloned();
        let request_over =
            access_gate::request_ended(workflow, request_id.clone(), self.id.clone());
        let (end, mut ended_from_outside) =
            tokio::sync::watch::channel::<Option<(String, String)>>(None);
        let _listed = self.services.services.live.register(
            &self.id,
            Box::new(move |by: &str, reason: &str| {
                let _ = end.send(Some((by.to_string(), reason.to_string())));
            }),
        );
        // Watchable live (the API's live view) while the session is listed.
        let feed = Arc::new(gatehouse_ssh::TerminalFeed::new((cols, rows)));
        self.services
            .services
            .live
            .register_terminal(&self.id, feed.clone());
        let last_input = Arc::new(AtomicU64::new(0));
        let mut recorder = CastRecorder {
            cast,
            feed,
            started: Instant::now(),
            last_input: last_input.clone(),
        };
        let idle_timeout = authorization.idle_timeout();
        let idled = AtomicBool::new(false);
        let idle = async {
            let Some((limit, _)) = &idle_timeout else {
                return std::future::pending().await;
            };
            let since = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let last = Duration::from_millis(last_input.load(Ordering::Relaxed));
                if since.elapsed().saturating_sub(last) >= *limit {
                    idled.store(true, Ordering::Relaxed);
                    return;
                }
            }
        };
        let why: Mutex<Option<Stop>> = Mutex::new(None);
        let stop = async {
            let reason = tokio::select! {
                () = idle => Stop::Idle,
                state = request_over => Stop::Request(state),
                Ok(by) = ended_from_outside.wait_for(Option::is_some) => {
                    let (by, reason) = by.clone().unwrap_or_default();
                    Stop::Terminated { by, reason }
                }
                () = self.shutdown.closing() => Stop::Shutdown,
            };
            if let Ok(mut slot) = why.lock() {
                *slot = Some(reason);
            }
        };
        let config = RelayConfig::default();
        let relayed = tokio::select! {
            relayed = gatehouse_telnet::relay(client, target, &mut recorder, &config) => Some(relayed),
            () = stop => None,
        };
        let (error, last_line) = match (relayed, why.into_inner().ok().flatten()) {
            (Some(Ok(_)), _) => (None, None),
            (Some(Err(e)), _) => {
                tracing::info!(error = %e, "the Telnet relay ended with an error");
                (Some(e.to_string()), None)
            }
            (None, Some(stop)) => (
                None,
                Some(self.audit_stop(stop, &idle_timeout, &request_id)),
            ),
            (None, None) => (None, None),
        };
        let totals = recorder.cast.finish();
        let (up, down) = match &totals {
            Ok(t) => (t.bytes_in, t.bytes_out),
            Err(e) => {
                tracing::error!(error = %e, "cannot close the terminal recording");
                (0, 0)
            }
        };
        if let Err(e) = recording.log(
            Some(0),
            RecordingEvent::ChannelClosed {
                exit_status: None,
                exit_signal: None,
            },
        ) {
            tracing::error!(error = %e, "cannot log the channel's end");
        }
        let record = self.record_op(
            &account,
            &asset.name,
            started,
            Some(Timestamp::now()),
            Some((up, down)),
            error.clone(),
        );
        self.services
            .services
            .auditor
            .queue_write_waiting(record, None)
            .await;
        let mut fields = vec![("bytes_up", up.into()), ("bytes_down", down.into())];
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
        if let Err(e) = recording.finish() {
            tracing::error!(error = %e, "cannot close the recording");
        }
        Some((
            started,
            Ended {
                bytes_up: up,
                bytes_down: down,
                last_word: last_line,
            },
        ))
    }

    /// Audits why a session was stopped from outside; the line its user reads.
    fn audit_stop(
        &self,
        stop: Stop,
        idle_timeout: &Option<(Duration, &str)>,
        request_id: &Option<String>,
    ) -> String {
        match stop {
            Stop::Terminated { by, reason } => {
                let detail = if by.is_empty() {
                    format!("session ended: {reason}")
                } else {
                    format!("session terminated by {by}: {reason}")
                };
                self.audit(
                    AuditKind::SessionEnded,
                    detail,
                    &[
                        ("terminated_by", by.clone().into()),
                        ("reason", reason.clone().into()),
                    ],
                );
                if by.is_empty() {
                    format!("gatehouse: this session was ended: {reason}")
                } else {
                    format!("gatehouse: an administrator ({by}) ended this session: {reason}")
                }
            }
            Stop::Idle => {
                let (limit, policy) = idle_timeout.unwrap_or((Duration::ZERO, ""));
                let text = humantime::format_duration(limit).to_string();
                self.audit(
                    AuditKind::SessionEnded,
                    format!("session ended: no input for {text} (policy `{policy}`)"),
                    &[
                        ("reason", "idle".into()),
                        ("idle_timeout_secs", limit.as_secs().into()),
                        ("policy", policy.into()),
                    ],
                );
                format!("gatehouse: no input for {text}; the session ends")
            }
            Stop::Request(state) => {
                let id = request_id.clone().unwrap_or_default();
                self.audit(
                    AuditKind::SessionEnded,
                    format!("access request {id} is {state}; the session ends"),
                    &[("request", id.clone().into())],
                );
                format!("gatehouse: access request {id} is {state}; the session ends")
            }
            Stop::Shutdown => {
                self.audit(
                    AuditKind::SessionEnded,
                    "the gateway shut down; the session was closed at the end of the grace period",
                    &[("reason", "shutdown".into())],
                );
                "gatehouse: the gateway is shutting down; the session ends".into()
            }
        }
    }

    /// The write that stores the session's record.
    fn record_op(
        &self,
        account: &str,
        asset: &gatehouse_core::Name,
        started: Timestamp,
        ended: Option<Timestamp>,
        bytes: Option<(u64, u64)>,
        error: Option<String>,
    ) -> gatehouse_audit::StoreOp {
        let record = SessionRecord {
            id: self.id.clone(),
            user: self.user.clone(),
            account: account.to_string(),
            asset: asset.to_string(),
            client: self.client.to_string(),
            protocol: "telnet".into(),
            started,
            ended,
            bytes_up: bytes.map(|b| b.0).unwrap_or(0),
            bytes_down: bytes.map(|b| b.1).unwrap_or(0),
            channels: vec![ChannelSummary {
                number: 0,
                kind: "shell".into(),
                command: None,
                exit_status: None,
                recorded: true,
            }],
            error,
            node: None,
            gateway: gatehouse_core::gateway::gateway_id(),
        };
        let id = self.id.clone();
        Box::new(move |txn| txn.put(&SESSIONS, &id, &record))
    }
}

/// Why a session was stopped from outside its relay.
enum Stop {
    Idle,
    Request(gatehouse_core::RequestState),
    Terminated { by: String, reason: String },
    Shutdown,
}

/// How an opened session ended.
struct Ended {
    bytes_up: u64,
    bytes_down: u64,
    /// The line its user reads when it was stopped from outside.
    last_word: Option<String>,
}

/// Starts the Telnet listeners' future: the usual one and transparent mode's (either may be
/// absent; with neither, a future that waits for the drain).
pub(crate) fn start(
    dir: &crate::datadir::DataDir,
    listener: Option<tokio::net::TcpListener>,
    transparent: Option<(tokio::net::TcpListener, crate::listener::Transparent)>,
    services: Arc<gatehouse_ssh::Services>,
    shutdown: gatehouse_ssh::Shutdown,
) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>> {
    if listener.is_none() && transparent.is_none() {
        return Ok(Box::pin(async move {
            shutdown.draining().await;
            Ok(())
        }));
    }
    if services.local().is_none() {
        bail!("Telnet is served by processes that hold the vault (role all or control)");
    }
    let telnet = Arc::new(TelnetServices {
        services,
        recordings: dir.recordings(),
        client: ClientConfig::default(),
        connect_timeout: gatehouse_ssh::target::DEFAULT_CONNECT_TIMEOUT,
    });
    let redirected_listener = transparent.as_ref().map(|(l, _)| l);
    for (l, what) in [
        (listener.as_ref(), "Telnet"),
        (redirected_listener, "transparent Telnet"),
    ] {
        if let Some(l) = l {
            tracing::warn!(
                address = %l.local_addr()?,
                "{what} gateway listening; Telnet is cleartext: gateway passwords cross the network as typed"
            );
        }
    }
    let plain = listener.map(|l| serve(l, telnet.clone(), shutdown.clone(), None));
    let redirected = transparent.map(|(l, t)| serve(l, telnet, shutdown.clone(), Some(t)));
    Ok(Box::pin(crate::listener::both(plain, redirected)))
}
