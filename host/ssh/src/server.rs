//! The accept loop and the russh handler towards users: authentication, channel opens, and the
//! replies that must be given synchronously.

use crate::messages::Refusal;
use crate::remote::{LoginRefused, RemoteLogin};
use crate::session::SessionShared;
use crate::{Authority, GatewayConfig, Services, aa, forward, relay};
use gatehouse_cluster::wire::LoginProof;
use gatehouse_core::{AuditKind, LoginSpec};
use gatehouse_plugin_host::SessionCookies;
use gatehouse_plugin_host::login::{Next, PendingLogin};
use gatehouse_policy::ChannelRequest;
use russh::MethodKind;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;
use zeroize::Zeroizing;

fn server_config(config: &GatewayConfig, services: &Services) -> russh::server::Config {
    let mut methods = vec![MethodKind::PublicKey, MethodKind::Password];
    if aa_plugins(services).is_some() {
        // Plugins' questions are asked through keyboard-interactive.
        methods.push(MethodKind::KeyboardInteractive);
    }
    russh::server::Config {
        methods: MethodSet::from(&methods[..]),
        auth_rejection_time: Duration::from_secs(1),
        // OpenSSH probes with "none" first; answering it at once saves a second per login.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: config.host_keys.clone(),
        max_auth_attempts: 6,
        inactivity_timeout: None,
        keepalive_interval: Some(config.keepalive_interval),
        keepalive_max: 3,
        nodelay: true,
        channel_buffer_size: config.channel_buffer_size,
        window_size: config.window_size,
        preferred: crate::preferred_algorithms(),
        server_id: russh::SshId::Standard("SSH-2.0-Gatehouse".into()),
        ..Default::default()
    }
}

/// Serves SSH clients on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    config: Arc<GatewayConfig>,
    services: Arc<Services>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let russh_config = Arc::new(server_config(&config, &services));
    let connections = tokio_util::task::TaskTracker::new();
    let throttle = Arc::new(crate::throttle::LoginThrottle::default());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.draining() => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        connections.spawn(handle_connection(
            socket,
            peer,
            russh_config.clone(),
            config.clone(),
            services.clone(),
            shutdown.clone(),
            throttle.clone(),
        ));
    }
    // Draining: no new connections; the sessions finish or are ended at the deadline.
    drop(listener);
    connections.close();
    let open = connections.len();
    tracing::info!(sessions = open, "SSH gateway draining");
    if let DrainState::Draining { deadline } = shutdown.state() {
        let limit = deadline + CLOSE_AFTER_DEADLINE + RELAYS_DRAIN;
        if tokio::time::timeout_at(limit, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = connections.len(),
                "sessions still open after the shutdown grace period"
            );
        }
    } else {
        connections.wait().await;
    }
    Ok(())
}

/// After the grace period, how long a session's channels get to close before its connection
/// is cut.
const CLOSE_AFTER_DEADLINE: Duration = Duration::from_secs(6);

use crate::drain::{DrainState, Shutdown};

/// Password tries per connection, as OpenSSH's sshd allows by default (MaxAuthTries counts all
/// methods).
const MAX_PASSWORD_TRIES: u32 = 3;

/// How long the channel relays may take to wind down once the user's connection has ended.
const RELAYS_DRAIN: Duration = Duration::from_secs(10);

async fn handle_connection(
    socket: TcpStream,
    peer: SocketAddr,
    russh_config: Arc<russh::server::Config>,
    config: Arc<GatewayConfig>,
    services: Arc<Services>,
    shutdown: Shutdown,
    throttle: Arc<crate::throttle::LoginThrottle>,
) {
    let id = uuid::Uuid::now_v7().to_string();
    let span = tracing::info_span!(
        "session",
        id = %id,
        user = tracing::field::Empty,
        target = tracing::field::Empty,
        client = %peer,
    );
    let live = services.live.clone();
    let shared = Arc::new(SessionShared::new(
        id,
        peer,
        span.clone(),
        services,
        config,
        shutdown.clone(),
    ));
    if shared.config.transparent {
        match crate::transparent::original_destination(&socket) {
            Some(destination) => {
                let asset =
                    crate::transparent::asset_at(&shared.services.store, destination, |a| {
                        Some(a.port)
                    });
                tracing::debug!(%destination, asset = ?asset, "transparent connection");
                let _ = shared
                    .arrival
                    .set(crate::transparent::Arrival { destination, asset });
            }
            None => tracing::warn!("a transparent connection without its original destination"),
        }
    }
    live.add(&shared);
    let handler = ClientHandler {
        shared: shared.clone(),
        key_rejection_audited: false,
        pending: None,
        remote_question: None,
        cookies: SessionCookies::default(),
        auth_banner: None,
        auth_banner_sent: false,
        methods: russh_config.methods.clone(),
        password_failures: 0,
        throttle,
    };
    async move {
        tracing::debug!("connection accepted");
        // russh reads the packet length and the packet separately; a read buffer saves syscalls.
        let socket = tokio::io::BufReader::with_capacity(crate::SOCKET_READ_BUFFER, socket);
        let running = async {
            match russh::server::run_stream(russh_config, socket, handler).await {
                Ok(running) => {
                    if let Err(e) = running.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "handshake failed"),
            }
        };
        // At the end of a shutdown's grace period the relays close the channels; then the
        // connection goes, with a reason the client prints.
        let cut = async {
            let mut state = shutdown.subscribe();
            let _ = state.wait_for(|s| *s == DrainState::Closing).await;
            tokio::time::sleep(CLOSE_AFTER_DEADLINE).await;
            shared.disconnect("gatehouse: the gateway shut down").await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        tokio::select! {
            () = running => {}
            () = cut => tracing::debug!("connection cut at shutdown"),
        }
        // The user's channels end with the connection; their relays close the target's ends
        // and add each channel to the record.
        shared.relays.close();
        if tokio::time::timeout(RELAYS_DRAIN, shared.relays.wait())
            .await
            .is_err()
        {
            tracing::warn!("channel relays still running after the connection ended");
        }
        shared.finish().await;
        live.remove(&shared.id);
        tracing::debug!("connection closed");
    }
    .instrument(span)
    .await
}

/// A control node plugin's question, waiting for the user's keyboard-interactive answer.
struct RemoteQuestion {
    question: gatehouse_cluster::wire::LoginQuestion,
    login: LoginSpec,
    method: String,
}

/// A first factor that checked out.
enum FirstFactor {
    /// Here: this process's plugins (if any) go next.
    Local(gatehouse_core::User),
    /// On the control node, with its plugins.
    Remote(RemoteLogin),
}

struct ClientHandler {
    shared: Arc<SessionShared>,
    key_rejection_audited: bool,
    /// A login whose plugins are still deciding (they may be asking a question).
    pending: Option<PendingLogin>,
    /// On a session node: the control node's plugin question being asked.
    remote_question: Option<RemoteQuestion>,
    /// Plugin state for this session, kept between hook calls.
    cookies: SessionCookies,
    /// Why the login cannot work, for the client with the next authentication failure.
    auth_banner: Option<String>,
    /// The line was sent (once per connection).
    auth_banner_sent: bool,
    /// The authentication methods offered, kept after a wrong password (russh drops password).
    methods: russh::MethodSet,
    /// Wrong passwords on this connection.
    password_failures: u32,
    /// Failed logins per client address, across connections.
    throttle: Arc<crate::throttle::LoginThrottle>,
}

/// The plugin host, when at least one AA plugin is enabled.
fn aa_plugins(services: &Services) -> Option<&gatehouse_plugin_host::PluginHost> {
    services.plugins().filter(|p| !p.aa_plugins().is_empty())
}

fn keyboard_interactive_next() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::from(&[MethodKind::KeyboardInteractive][..])),
        partial_success: true,
    }
}

fn ask(question: &gatehouse_plugin_host::Question) -> Auth {
    Auth::Partial {
        name: "Gatehouse".into(),
        instructions: "".into(),
        prompts: vec![(question.prompt.clone().into(), question.echo)].into(),
    }
}

impl ClientHandler {
    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: None,
            partial_success: false,
        }
    }

    fn login_failed(&self, username: &str, detail: String) {
        self.shared.services.auditor.record_best_effort(
            gatehouse_audit::Entry::new(AuditKind::LoginFailed, detail)
                .session(self.shared.id.clone())
                .user(
                    username
                        .chars()
                        .take(LoginSpec::MAX_LEN)
                        .collect::<String>(),
                )
                .client(self.shared.client.to_string()),
        );
    }

    /// The gateway password of the login's user: checked here, or by the control node (with
    /// its login plugins) on a session node.
    async fn check_password(
        &self,
        login: &LoginSpec,
        password: &str,
    ) -> Result<FirstFactor, LoginRefused> {
        match &self.shared.services.authority {
            Authority::Local(local) => {
                let authenticator = local.authenticator.clone();
                let name = login.user.clone();
                let password = Zeroizing::new(password.to_string());
                let verified = tokio::task::spawn_blocking(move || {
                    authenticator.verify_password(&name, &password)
                })
                .await;
                match verified {
                    Ok(Err(gatehouse_auth::AuthError::Store(
                        gatehouse_store::StoreError::Unavailable(reason),
                    ))) => Err(store_away(&reason)),
                    Ok(Err(gatehouse_auth::AuthError::DirectoryUnavailable(reason))) => {
                        Err(LoginRefused::Unavailable {
                            audit: format!("directory unavailable: {reason}"),
                            user_line: "gatehouse: the user directory cannot be reached, so directory users cannot log in now; try again later".into(),
                        })
                    }
                    Ok(checked) => checked
                        .map(FirstFactor::Local)
                        .map_err(|e| LoginRefused::Rejected(e.to_string())),
                    Err(e) => Err(LoginRefused::Unavailable {
                        audit: format!("password check failed: {e}"),
                        user_line: format!(
                            "gatehouse: internal error; it was logged as session {}",
                            self.shared.id
                        ),
                    }),
                }
            }
            Authority::Remote(control) => {
                let proof = LoginProof::Password {
                    password: gatehouse_core::SecretString::new(password.to_string()),
                };
                self.shared
                    .authenticate_remote(control, login, proof)
                    .await
                    .map(FirstFactor::Remote)
            }
        }
    }

    /// What follows a first factor: plugins here, a login the control node completed, or its
    /// plugin's question (asked through keyboard-interactive).
    async fn after_first_factor(
        &mut self,
        checked: FirstFactor,
        login: LoginSpec,
        method: &str,
    ) -> Auth {
        match checked {
            FirstFactor::Local(user) => self.first_factor_ok(user, login, method).await,
            FirstFactor::Remote(remote) => {
                self.remote_step(remote, login, method, |_| keyboard_interactive_next())
            }
        }
    }

    /// A step of a login the control node runs: done, or a question to ask.
    fn remote_step(
        &mut self,
        remote: RemoteLogin,
        login: LoginSpec,
        method: &str,
        asking: impl FnOnce(&gatehouse_plugin_host::Question) -> Auth,
    ) -> Auth {
        match remote {
            RemoteLogin::Done {
                user,
                plugins,
                notes,
                ticket_verified,
            } => {
                self.record_login(user, login, method, plugins, notes, ticket_verified);
                Auth::Accept
            }
            RemoteLogin::Question(question) => {
                let asked = gatehouse_plugin_host::Question {
                    key: question.key.clone(),
                    prompt: question.prompt.clone(),
                    echo: question.echo,
                };
                self.remote_question = Some(RemoteQuestion {
                    question,
                    login,
                    method: method.to_string(),
                });
                asking(&asked)
            }
        }
    }

    /// The login could not be decided (the control node is away, or refused for a reason the
    /// user may read): audited, the line shown, no failed try counted against the user.
    fn unavailable(&mut self, username: &str, audit: String, user_line: String) {
        self.login_failed(username, audit);
        if !self.auth_banner_sent && self.auth_banner.is_none() {
            self.auth_banner = Some(format!("{user_line}\r\n"));
        }
    }

    /// The in-band login: in transparent mode completed with the asset the connection was
    /// going to (`None`, the user told why, when it cannot be).
    fn in_band(&mut self, username: &str) -> Option<String> {
        let Some(arrival) = self.shared.arrival.get().cloned() else {
            return Some(username.to_string());
        };
        match crate::transparent::complete(username, &arrival) {
            Ok(login) => Some(login),
            Err(crate::transparent::NotHere(line)) => {
                self.login_failed(
                    username,
                    format!("transparent connection to {}: {line}", arrival.destination),
                );
                if !self.auth_banner_sent && self.auth_banner.is_none() {
                    self.auth_banner = Some(format!("{line}\r\n"));
                }
                None
            }
        }
    }

    fn parse(&mut self, username: &str) -> Option<LoginSpec> {
        let username = &self.in_band(username)?;
        match LoginSpec::parse(username) {
            Ok(spec) => Some(spec),
            Err(e) => {
                self.login_failed(username, format!("unusable username: {e}"));
                self.explain_login_error(&e);
                None
            }
        }
    }

    /// Tells the user, once, why the username cannot work (it is only its syntax: nothing about
    /// users or targets).
    fn explain_login_error(&mut self, e: &gatehouse_core::LoginError) {
        if self.auth_banner_sent || self.auth_banner.is_some() {
            return;
        }
        let reason: String = e
            .to_string()
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(200)
            .collect();
        self.auth_banner = Some(format!(
            "gatehouse: this login cannot be used: {reason}; log in as USER@ACCOUNT@ASSET\r\n"
        ));
    }

    fn login_ok(
        &mut self,
        user: gatehouse_core::User,
        login: LoginSpec,
        method: &str,
        plugins: Vec<String>,
        notes: Vec<(String, String, String)>,
    ) {
        let ticket_verified = self.cookies.tickets().next().is_some();
        let (_, notes) = PendingLogin::audit_summary(method, &plugins, notes);
        self.record_login(user, login, method, plugins, notes, ticket_verified);
    }

    /// A complete login: the session knows who, and the audit trail says how.
    fn record_login(
        &mut self,
        user: gatehouse_core::User,
        login: LoginSpec,
        method: &str,
        plugins: Vec<String>,
        notes: Vec<serde_json::Value>,
        ticket_verified: bool,
    ) {
        let name = user.name.to_string();
        let mut authenticated_with = vec![method.to_string()];
        authenticated_with.extend(plugins.iter().cloned());
        self.shared.logged_in(
            user,
            login,
            authenticated_with,
            ticket_verified,
            std::mem::take(&mut self.cookies),
        );
        let (how, _) = PendingLogin::audit_summary(method, &plugins, vec![]);
        self.shared.audit(
            AuditKind::LoginOk,
            format!("`{name}` logged in with {how}"),
            &[
                ("method", method.into()),
                ("plugins", serde_json::json!(plugins)),
                ("plugin_notes", serde_json::json!(notes)),
                ("ticket_verified", ticket_verified.into()),
            ],
        );
    }

    /// The gateway password or key was right: the plugins (if any) have their say.
    async fn first_factor_ok(
        &mut self,
        user: gatehouse_core::User,
        login: LoginSpec,
        method: &str,
    ) -> Auth {
        let Some(plugins) = aa_plugins(&self.shared.services).cloned() else {
            self.login_ok(user, login, method, vec![], vec![]);
            return Auth::Accept;
        };
        let pending = PendingLogin::new(user, login, method);
        // The first question is asked once the client switches to keyboard-interactive.
        self.continue_plugins(&plugins, pending, |_| keyboard_interactive_next())
            .await
    }

    /// The user's keyboard-interactive answer to a control node plugin's question.
    async fn answer_remote(
        &mut self,
        username: &str,
        remote: RemoteQuestion,
        response: Option<russh::server::Response<'_>>,
    ) -> Auth {
        let Authority::Remote(control) = &self.shared.services.authority else {
            return Self::reject();
        };
        let control = control.clone();
        let Some(mut answers) = response else {
            let asked = gatehouse_plugin_host::Question {
                key: remote.question.key.clone(),
                prompt: remote.question.prompt.clone(),
                echo: remote.question.echo,
            };
            self.remote_question = Some(remote);
            return ask(&asked);
        };
        let value = answers
            .next()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        match self
            .shared
            .answer_remote(&control, &remote.question, value)
            .await
        {
            Ok(step) => self.remote_step(step, remote.login, &remote.method, ask),
            Err(LoginRefused::Rejected(detail)) => {
                self.login_failed(username, detail);
                Self::reject()
            }
            Err(LoginRefused::Unavailable { audit, user_line }) => {
                self.unavailable(username, audit, user_line);
                Self::reject()
            }
        }
    }

    /// Decides a forwarding-type channel or request; audits the decision either way.
    async fn forwarding_permitted(&self, request: ChannelRequest, detail: String) -> bool {
        let decision = match self.shared.target().await {
            Ok(target) => self.shared.decide_channel(&target, &request).await,
            Err(_) => return false,
        };
        let audit_kind = if decision.permitted {
            AuditKind::ChannelOpened
        } else {
            AuditKind::ChannelDenied
        };
        self.shared.audit(
            audit_kind,
            detail,
            &[
                ("channel", request.kind().into()),
                ("policies", serde_json::json!(decision.reasons)),
                ("policy_errors", serde_json::json!(decision.errors)),
            ],
        );
        decision.permitted
    }

    /// Runs the plugins. On a question the login is kept pending and `asking` says how to
    /// proceed.
    async fn continue_plugins(
        &mut self,
        plugins: &gatehouse_plugin_host::PluginHost,
        mut pending: PendingLogin,
        asking: impl FnOnce(&gatehouse_plugin_host::Question) -> Auth,
    ) -> Auth {
        match aa::run(&self.shared, plugins, &mut pending, &mut self.cookies).await {
            Next::Accept => {
                let done = pending.into_parts();
                self.login_ok(
                    done.user,
                    done.login,
                    &done.method,
                    done.accepted_by,
                    done.audit_notes,
                );
                Auth::Accept
            }
            Next::Ask(question) => {
                self.pending = Some(pending);
                asking(&question)
            }
            Next::Deny => {
                if let Some(line) = pending.refusal() {
                    self.auth_banner
                        .get_or_insert_with(|| format!("gatehouse: {line}\r\n"));
                }
                Self::reject()
            }
        }
    }
}

impl russh::server::Handler for ClientHandler {
    fn take_auth_banner(&mut self) -> Option<String> {
        let banner = self.auth_banner.take();
        if banner.is_some() {
            self.auth_banner_sent = true;
        }
        banner
    }

    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        // Clients try `none` first: a username that cannot work is refused here, with the
        // reason, before the user types a password for nothing.
        if let Some(_login) = self.parse(user) {
            return Ok(Self::reject());
        }
        Ok(Auth::Reject {
            proceed_with_methods: Some(russh::MethodSet::empty()),
            partial_success: false,
        })
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        let Some(login) = self.parse(user) else {
            return Ok(Self::reject());
        };
        let source = self.shared.client.ip();
        if let Some(wait) = self.throttle.blocked(source) {
            self.login_failed(
                user,
                format!("too many failed logins from {source}: refused without checking"),
            );
            if !self.auth_banner_sent && self.auth_banner.is_none() {
                self.auth_banner = Some(format!(
                    "gatehouse: too many failed logins from your address; try again in {} s\r\n",
                    wait.as_secs().max(1)
                ));
            }
            return Ok(Self::reject());
        }
        match self.check_password(&login, password).await {
            Ok(checked) => Ok(self.after_first_factor(checked, login, "password").await),
            Err(LoginRefused::Rejected(detail)) => {
                self.login_failed(user, detail);
                self.throttle.failed(source);
                self.password_failures += 1;
                // Like OpenSSH, a mistyped password may be typed again (three tries per
                // connection); russh would take password off the list after one.
                if self.password_failures < MAX_PASSWORD_TRIES {
                    Ok(Auth::Reject {
                        proceed_with_methods: Some(self.methods.clone()),
                        partial_success: false,
                    })
                } else {
                    Ok(Self::reject())
                }
            }
            Err(LoginRefused::Unavailable { audit, user_line }) => {
                self.unavailable(user, audit, user_line);
                Ok(Self::reject())
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(user) = self.in_band(user) else {
            return Ok(Self::reject());
        };
        let login = match LoginSpec::parse(&user) {
            Ok(login) => login,
            Err(e) => {
                self.explain_login_error(&e);
                return Ok(Self::reject());
            }
        };
        let local = match &self.shared.services.authority {
            Authority::Local(local) => local,
            // The control node checks the key once the client has signed with it.
            Authority::Remote(_) => return Ok(Auth::Accept),
        };
        let known = local
            .authenticator
            .verify_public_key(&login.user, offer.public_key);
        match known {
            Ok(_) => Ok(Auth::Accept),
            Err(e) => {
                // Clients offer every key they hold; audit the first refusal only.
                if !self.key_rejection_audited {
                    self.key_rejection_audited = true;
                    self.login_failed(&user, e.to_string());
                }
                Ok(Self::reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let Some(login) = self.parse(user) else {
            return Ok(Self::reject());
        };
        let checked = match &self.shared.services.authority {
            Authority::Local(local) => local
                .authenticator
                .verify_public_key(&login.user, key.public_key)
                .map(FirstFactor::Local)
                .map_err(|e| match e {
                    gatehouse_auth::AuthError::Store(gatehouse_store::StoreError::Unavailable(
                        reason,
                    )) => store_away(&reason),
                    other => LoginRefused::Rejected(other.to_string()),
                }),
            Authority::Remote(control) => match key.public_key.to_openssh() {
                Ok(line) => self
                    .shared
                    .authenticate_remote(control, &login, LoginProof::PublicKey { key: line })
                    .await
                    .map(FirstFactor::Remote),
                Err(e) => Err(LoginRefused::Rejected(format!("unusable key: {e}"))),
            },
        };
        match checked {
            Ok(checked) => Ok(self.after_first_factor(checked, login, "publickey").await),
            Err(LoginRefused::Rejected(detail)) => {
                self.login_failed(user, detail);
                Ok(Self::reject())
            }
            Err(LoginRefused::Unavailable { audit, user_line }) => {
                self.unavailable(user, audit, user_line);
                Ok(Self::reject())
            }
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        // Keyboard-interactive is only the second step: the plugins' questions after the
        // gateway password or key (on a session node, the control node's plugins).
        if let Some(remote) = self.remote_question.take() {
            return Ok(self.answer_remote(user, remote, response).await);
        }
        let Some(mut pending) = self.pending.take() else {
            return Ok(Self::reject());
        };
        let Some(plugins) = aa_plugins(&self.shared.services).cloned() else {
            return Ok(Self::reject());
        };
        match response {
            None => {
                let Some(question) = pending.question().cloned() else {
                    return Ok(Self::reject());
                };
                self.pending = Some(pending);
                Ok(ask(&question))
            }
            Some(mut answers) => {
                let value = answers
                    .next()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                pending.answer(value);
                Ok(self.continue_plugins(&plugins, pending, ask).await)
            }
        }
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        self.shared.set_handle(session.handle());
        // A login that joins a running session opens no target.
        if self.shared.join_spec().is_some() {
            return Ok(());
        }
        // Start authorizing and dialing now, while the client opens its channel.
        let shared = self.shared.clone();
        let span = shared.span.clone();
        tokio::spawn(
            async move {
                if let Err(refusal) = shared.target().await {
                    tracing::debug!(reason = %refusal.user_message(), "target refused");
                }
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let number = self.shared.next_channel_number();
        let shared = self.shared.clone();
        let handle = session.handle();
        let span = shared.span.clone();
        let relays = shared.relays.clone();
        relays.spawn(relay::run_session_channel(shared, channel, number, handle).instrument(span));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let detail = format!(
            "port forwarding to {host_to_connect}:{port_to_connect} from {originator_address}:{originator_port}"
        );
        let request = ChannelRequest::DirectTcpip {
            host: host_to_connect.to_string(),
            port: port_to_connect,
        };
        let permitted = self.forwarding_permitted(request, detail).await;
        let target = match self.shared.target().await {
            Ok(target) if permitted => target,
            _ => {
                // OpenSSH shows "open failed: administratively prohibited: <reason>".
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: format!(
                            "gatehouse: forwarding to {host_to_connect}:{port_to_connect} is not permitted"
                        ),
                    })
                    .await;
                return Ok(());
            }
        };
        let number = self.shared.next_channel_number();
        let spec = forward::ForwardSpec {
            host: host_to_connect.to_string(),
            port: port_to_connect,
            originator: originator_address.to_string(),
            originator_port,
        };
        let shared = self.shared.clone();
        let span = shared.span.clone();
        let relays = shared.relays.clone();
        relays.spawn(
            forward::run_direct_tcpip(shared, target, channel, reply, spec, number)
                .instrument(span),
        );
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let detail = format!("x11 channel from {originator_address}:{originator_port}");
        let _ = self.forwarding_permitted(ChannelRequest::X11, detail).await;
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let detail = format!("remote port forwarding on {address}:{port}");
        let request = ChannelRequest::ForwardedTcpip {
            host: address.to_string(),
            port: *port,
        };
        if !self.forwarding_permitted(request, detail).await {
            // A global request has no reason text: OpenSSH says "remote port forwarding failed".
            return Ok(false);
        }
        let Ok(target) = self.shared.target().await else {
            return Ok(false);
        };
        let bound = match target.connection.handle.tcpip_forward(address, *port).await {
            // The target names the port only when it chose one (the user asked for port 0).
            Ok(chosen) if *port == 0 => chosen,
            Ok(_) => *port,
            Err(e) => {
                self.shared.audit(
                    AuditKind::ChannelDenied,
                    format!("the target refused remote port forwarding on {address}:{port}: {e}"),
                    &[("channel", "forwarded-tcpip".into())],
                );
                return Ok(false);
            }
        };
        *port = bound;
        self.shared.remote_forwards.insert(address, bound);
        let incoming = target
            .connection
            .forwarded
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(incoming) = incoming {
            let shared = self.shared.clone();
            let span = shared.span.clone();
            tokio::spawn(
                forward::dispatch_remote_forwards(shared, incoming, session.handle())
                    .instrument(span),
            );
        }
        Ok(true)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if !self.shared.remote_forwards.remove(address, port) {
            return Ok(false);
        }
        let Ok(target) = self.shared.target().await else {
            return Ok(false);
        };
        let cancelled = target
            .connection
            .handle
            .cancel_tcpip_forward(address, port)
            .await
            .is_ok();
        self.shared.audit(
            AuditKind::ChannelClosed,
            format!("remote port forwarding on {address}:{port} cancelled"),
            &[("channel", "forwarded-tcpip".into())],
        );
        Ok(cancelled)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let _ = self
            .forwarding_permitted(ChannelRequest::Agent, "agent forwarding".into())
            .await;
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let _ = self
            .forwarding_permitted(ChannelRequest::X11, "x11 forwarding request".into())
            .await;
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The relay forwards it to the target; answered here because russh keeps one pending
        // reply per channel and the client sends its next request without waiting.
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.shared.config.env_allowed(variable_name) {
            session.channel_success(channel)?;
        } else {
            tracing::debug!(variable = variable_name, "environment variable not allowed");
            session.channel_failure(channel)?;
        }
        Ok(())
    }
}

/// Used by the relay to tell a user why their channel could not proceed.
pub(crate) fn refusal_line(refusal: &Refusal) -> String {
    format!("{}\r\n", refusal.user_message())
}

/// The store's database cannot be reached (several control nodes on PostgreSQL): nobody can be
/// checked now, and the user is told so rather than "permission denied".
fn store_away(reason: &str) -> LoginRefused {
    LoginRefused::Unavailable {
        audit: format!("store unavailable: {reason}"),
        user_line:
            "gatehouse: the gateway's store cannot be reached right now; try again in a few seconds"
                .into(),
    }
}
