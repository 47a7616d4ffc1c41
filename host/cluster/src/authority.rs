//! The control node's answers for sessions on session nodes: it authenticates the users a node
//! logs in, decides their sessions and channels with Cedar (with the node in the context), and
//! hands out the target's credential with a permit. A node holds no user database, no policy
//! and no vault; it holds a grant id for each session it runs, and the control node keeps the
//! authorization behind it in memory.
//!
//! The control node audits its decisions (sessions denied and permitted, with policy ids and the
//! node); the node records and audits the session itself.

use crate::control::Peer;
use crate::wire;
use crate::wire::{
    AnswerQuestion, Authenticate, Authenticated, Authorize, ChannelCall, ChannelVerdict, Granted,
    HostKeyPinned, LoginProof, PinCertificate, PinHostKey, RdpSecret, RdpSecretAnswer, Refusal,
    RefusalKind, WireChannel, WireCredential,
};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_auth::Authenticator;
use gatehouse_core::nodes::network_for;
use gatehouse_core::{
    AccessKind, AuditKind, HostKeyPolicy, LoginSpec, Name, Node, RdpCertificatePolicy,
    RequestState, SecretString, TargetSpec, User,
};
use gatehouse_plugin_host::login::{self, Completed, LoginContext, Next, PendingLogin};
use gatehouse_plugin_host::{ConnectionInfo, PluginHost, Protocol, SessionCookies};
use gatehouse_policy::{
    ChannelRequest, Denied, NodeFacts, PolicyEngine, RequestFacts, SessionFacts,
    TargetAuthorization,
};
use gatehouse_store::{ASSETS, NETWORKS, REQUESTS, Store, StoreError, USERS};
use gatehouse_vault::{UserSecretKind, Vault};
use gatehouse_workflow::{Actor, NewRequest, Workflow, WorkflowError};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a node has between a user's authentication and the session decision.
const TICKET_LIFETIME: Duration = Duration::from_secs(120);
/// Tickets and grants kept at most; past that, new ones are refused (and old tickets swept).
const MAX_TICKETS: usize = 16_384;
const MAX_GRANTS: usize = 65_536;
/// A grant nobody has used for this long is forgotten (its session's new channels are refused).
const GRANT_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The login option carrying an access-string token.
const ACCESS_OPTION: &str = "access";

struct Ticket {
    /// Who the login is for once plugins are done (a plugin may map it to another user).
    user: User,
    /// The user named in the login as typed.
    login_user: Name,
    node: Name,
    session: String,
    method: String,
    /// The first factor, then the login plugins that accepted.
    authenticated_with: Vec<String>,
    ticket_verified: bool,
    expires: Instant,
}

/// A login at a node whose plugins asked a question and wait for the answer.
struct PendingNodeLogin {
    node: Name,
    session: String,
    client: String,
    protocol: Protocol,
    login_user: Name,
    pending: PendingLogin,
    cookies: SessionCookies,
    expires: Instant,
}

/// How long a node has to bring a plugin question's answer.
const QUESTION_LIFETIME: Duration = Duration::from_secs(300);
/// Logins waiting for an answer, at most.
const MAX_QUESTIONS_PENDING: usize = 4_096;

struct LiveGrant {
    node: Name,
    /// The node's id for the session.
    session: String,
    /// The access request the session runs under: when it stops being granted, the session
    /// ends on its node.
    request: Option<String>,
    authorization: TargetAuthorization,
    used: Instant,
}

/// What the control node needs to decide sessions for its nodes.
pub struct SessionAuthority {
    store: Arc<Store>,
    auditor: Arc<Auditor>,
    authenticator: Arc<Authenticator>,
    policy: Arc<PolicyEngine>,
    vault: Arc<Vault>,
    workflow: Option<Arc<Workflow>>,
    /// The control node's plugins: its login (AA) plugins run for logins at nodes too.
    plugins: Option<PluginHost>,
    tickets: Mutex<HashMap<String, Ticket>>,
    logins: Mutex<HashMap<String, PendingNodeLogin>>,
    grants: Mutex<HashMap<String, LiveGrant>>,
    holds: Mutex<HashMap<String, HeldSession>>,
}

impl std::fmt::Debug for SessionAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionAuthority").finish_non_exhaustive()
    }
}

/// A failed login, with the authenticator's reason for the node's audit trail (the user only
/// ever reads "Permission denied").
fn login_failed(error: &gatehouse_auth::AuthError) -> Refusal {
    refused(RefusalKind::LoginFailed, error.to_string())
}

fn refused(kind: RefusalKind, message: impl Into<String>) -> Refusal {
    Refusal::new(kind, message)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl From<WireChannel> for ChannelRequest {
    fn from(channel: WireChannel) -> Self {
        match channel {
            WireChannel::Shell => ChannelRequest::Shell,
            WireChannel::Exec { command } => ChannelRequest::Exec { command },
            WireChannel::Subsystem { name } => ChannelRequest::Subsystem { name },
            WireChannel::DirectTcpip { host, port } => ChannelRequest::DirectTcpip { host, port },
            WireChannel::ForwardedTcpip { host, port } => {
                ChannelRequest::ForwardedTcpip { host, port }
            }
            WireChannel::X11 => ChannelRequest::X11,
            WireChannel::Agent => ChannelRequest::Agent,
        }
    }
}

impl From<&ChannelRequest> for WireChannel {
    fn from(channel: &ChannelRequest) -> Self {
        match channel.clone() {
            ChannelRequest::Shell => WireChannel::Shell,
            ChannelRequest::Exec { command } => WireChannel::Exec { command },
            ChannelRequest::Subsystem { name } => WireChannel::Subsystem { name },
            ChannelRequest::DirectTcpip { host, port } => WireChannel::DirectTcpip { host, port },
            ChannelRequest::ForwardedTcpip { host, port } => {
                WireChannel::ForwardedTcpip { host, port }
            }
            ChannelRequest::X11 => WireChannel::X11,
            ChannelRequest::Agent => WireChannel::Agent,
        }
    }
}

/// The addresses an asset's address stands for (itself, or what its name resolves to).
fn addresses_of(address: &str, port: u16) -> Vec<IpAddr> {
    match address.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => (address, port)
            .to_socket_addrs()
            .map(|found| found.map(|a| a.ip()).collect())
            .unwrap_or_default(),
    }
}

/// Where a login at a node stands.
pub enum LoginStep {
    /// Authenticated: the ticket for the session decision.
    Done(Authenticated),
    /// A login plugin asks the user something.
    Question(wire::LoginQuestion),
}

/// What the control node's login plugins see of a login at a node.
struct NodeLogin<'a> {
    authority: &'a SessionAuthority,
    node: &'a Node,
    session: &'a str,
    client: &'a str,
    protocol: Protocol,
}

impl LoginContext for NodeLogin<'_> {
    fn connection(&self, user: &User, login: &LoginSpec) -> ConnectionInfo {
        // The target's address only when the asset exists.
        let address = match &login.target {
            Ok(t) => self
                .authority
                .store
                .get(&ASSETS, t.asset.as_str())
                .ok()
                .flatten()
                .map(|a| match self.protocol {
                    Protocol::Rdp => {
                        let port = a.rdp.as_ref().map(|r| r.port).unwrap_or(3389);
                        (a.address, port)
                    }
                    Protocol::Ssh => (a.address, a.port),
                    // Session nodes relay SSH and RDP; a web sign-in names no target.
                    Protocol::Web | Protocol::Telnet | Protocol::Vnc => (String::new(), 0),
                })
                .unwrap_or_default(),
            Err(_) => Default::default(),
        };
        let client: SocketAddr = self
            .client
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        ConnectionInfo::of_login(self.session, self.protocol, client, user, login, address)
    }

    fn find_user(&self, name: &str) -> Option<User> {
        self.authority.store.get(&USERS, name).ok().flatten()
    }

    fn refused(&self, user: &User, detail: String) {
        self.authority.auditor.record_best_effort(
            Entry::new(AuditKind::LoginFailed, detail)
                .session(self.session)
                .user(user.name.to_string())
                .client(self.client)
                .field("node", self.node.id.to_string()),
        );
    }
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

/// A login every plugin accepted (or one without plugins).
struct LoginDone {
    user: User,
    method: String,
    accepted_by: Vec<String>,
    audit_notes: Vec<(String, String, String)>,
    ticket_verified: bool,
}

/// What [`SessionAuthority::authorize`] answers.
pub enum Decided {
    Granted(Box<Granted>),
    /// A request was filed and needs approval; the node holds the connection.
    Held(wire::Held),
}

/// Who asked for which session, for the grant and its audit.
struct Asked {
    session: String,
    client: String,
    /// "ssh" or "rdp".
    protocol: String,
    user: String,
    target: TargetSpec,
}

enum Filed {
    /// The user may not ask for this target either.
    NotAllowed,
    Granted(Box<gatehouse_core::AccessRequest>),
    Pending(Box<gatehouse_core::AccessRequest>),
}

/// A session a node holds while its access request waits for approval.
struct HeldSession {
    node: Name,
    asked: Asked,
    user: User,
    facts: SessionFacts,
    request: String,
    expires: Instant,
}

/// How long one [`SessionAuthority::await_decision`] call waits at most (under the node's
/// call timeout); the node asks again until the hold's time is up.
const AWAIT_SLICE: Duration = Duration::from_secs(10);
/// Held sessions kept at most.
const MAX_HOLDS: usize = 4_096;

impl SessionAuthority {
    pub fn new(
        store: Arc<Store>,
        auditor: Arc<Auditor>,
        authenticator: Arc<Authenticator>,
        policy: Arc<PolicyEngine>,
        vault: Arc<Vault>,
        workflow: Option<Arc<Workflow>>,
        plugins: Option<PluginHost>,
    ) -> Self {
        Self {
            store,
            auditor,
            authenticator,
            policy,
            vault,
            workflow,
            plugins,
            tickets: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
            grants: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
        }
    }

    fn internal(&self, error: impl std::fmt::Display) -> Refusal {
        tracing::error!(error = %error, "session call from a node failed");
        refused(
            RefusalKind::Internal,
            "the control node could not decide (see its log)",
        )
    }

    /// Sessions on nodes granted and not yet ended (for the tests and the status).
    pub fn live_grants(&self) -> usize {
        self.grants.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// The login (AA) plugins, when any is enabled now.
    fn aa_plugins(&self) -> Option<&PluginHost> {
        self.plugins.as_ref().filter(|p| !p.aa_plugins().is_empty())
    }

    /// The NT hash of the user an RDP client names at a node, for its NLA exchange. The node
    /// then presents the password the client delegated to [`Self::authenticate`], so the hash
    /// alone logs no one in; it is sent over the cluster's mutual TLS and never stored there.
    pub fn rdp_secret(&self, node: &Node, call: RdpSecret) -> Result<RdpSecretAnswer, Refusal> {
        let failed = |why: &str| refused(RefusalKind::LoginFailed, why.to_string());
        let name = Name::new(call.user.clone()).map_err(|_| failed("unknown gateway user"))?;
        let user: Option<User> = self
            .store
            .get(&USERS, name.as_str())
            .map_err(|e| self.internal(e))?;
        let Some(user) = user else {
            return Err(failed("unknown gateway user"));
        };
        let Some(sealed) = &user.rdp_secret else {
            return Err(failed(
                "the user has no RDP secret (set the password again to enable RDP)",
            ));
        };
        let opened = self
            .vault
            .open_user_secret(user.name.as_str(), UserSecretKind::RdpNtHash, sealed)
            .map_err(|e| self.internal(e))?;
        if opened.expose().len() != 16 {
            return Err(self.internal("a stored RDP secret is not an NT hash"));
        }
        // Audited: a node that asks for hashes without logins to check shows in the trail.
        self.auditor.record_best_effort(
            Entry::new(
                AuditKind::NtHashLent,
                format!(
                    "the NT hash of `{}` lent to session node `{}` for an RDP login",
                    user.name, node.id
                ),
            )
            .session(call.session.clone())
            .user(user.name.to_string())
            .client(call.client.clone())
            .field("node", node.id.to_string())
            .field("protocol", "rdp"),
        );
        use base64::Engine;
        Ok(RdpSecretAnswer {
            nt_hash: SecretString::new(
                base64::engine::general_purpose::STANDARD.encode(opened.expose()),
            ),
        })
    }

    /// Checks a login's first factor; then the login plugins (if any) have their say, which
    /// may be a question ([`LoginStep::Question`]) the node relays to the user.
    pub async fn authenticate(
        &self,
        node: &Node,
        call: Authenticate,
    ) -> Result<LoginStep, Refusal> {
        let failed = || refused(RefusalKind::LoginFailed, "wrong user name or credential");
        let name = Name::new(call.user.clone()).map_err(|_| failed())?;
        let (user, method) = match call.proof {
            LoginProof::Password { password } => {
                let authenticator = self.authenticator.clone();
                let checked = name.clone();
                let verified = tokio::task::spawn_blocking(move || {
                    authenticator.verify_password(&checked, password.expose())
                })
                .await
                .map_err(|e| self.internal(e))?;
                (verified.map_err(|e| login_failed(&e))?, "password")
            }
            LoginProof::PublicKey { key } => {
                let key = gatehouse_auth::parse_public_key(&key).map_err(|_| failed())?;
                let verified = self.authenticator.verify_public_key(&name, &key);
                (verified.map_err(|e| login_failed(&e))?, "publickey")
            }
        };
        let protocol = if call.protocol == "rdp" {
            Protocol::Rdp
        } else {
            Protocol::Ssh
        };
        let Some(plugins) = self.aa_plugins().cloned() else {
            let done = LoginDone {
                user,
                method: method.to_string(),
                accepted_by: vec![],
                audit_notes: vec![],
                ticket_verified: false,
            };
            return self
                .issue_ticket(node, &call.session, name, done)
                .map(LoginStep::Done);
        };
        let login = LoginSpec::parse(&call.login)
            .map_err(|e| refused(RefusalKind::BadCall, format!("malformed login: {e}")))?;
        if login.user != name {
            return Err(refused(
                RefusalKind::BadCall,
                "the login names another user than the one authenticating",
            ));
        }
        let pending = PendingNodeLogin {
            node: node.id.clone(),
            session: call.session,
            client: call.client,
            protocol,
            login_user: name,
            pending: PendingLogin::new(user, login, method),
            cookies: SessionCookies::default(),
            expires: Instant::now() + QUESTION_LIFETIME,
        };
        self.run_login_plugins(node, &plugins, pending).await
    }

    /// The user's answer to a plugin's question; the plugins go on.
    pub async fn answer_question(
        &self,
        node: &Node,
        call: AnswerQuestion,
    ) -> Result<LoginStep, Refusal> {
        let waiting = {
            let mut logins = self.logins.lock().map_err(|e| self.internal(e))?;
            logins.remove(&sha256_hex(call.login.expose().as_bytes()))
        };
        let mut waiting = match waiting {
            Some(w) if w.node == node.id && w.expires > Instant::now() => w,
            _ => {
                return Err(refused(
                    RefusalKind::LoginFailed,
                    "the login's question is unknown or expired on the control node",
                ));
            }
        };
        let Some(plugins) = self.aa_plugins().cloned() else {
            return Err(refused(
                RefusalKind::LoginFailed,
                "the login plugin that asked is no longer enabled",
            ));
        };
        waiting.pending.answer(call.answer.expose().to_string());
        self.run_login_plugins(node, &plugins, waiting).await
    }

    async fn run_login_plugins(
        &self,
        node: &Node,
        plugins: &PluginHost,
        mut waiting: PendingNodeLogin,
    ) -> Result<LoginStep, Refusal> {
        let context = NodeLogin {
            authority: self,
            node,
            session: &waiting.session,
            client: &waiting.client,
            protocol: waiting.protocol,
        };
        let next = login::run(
            &context,
            plugins,
            &mut waiting.pending,
            &mut waiting.cookies,
        )
        .await;
        match next {
            Next::Accept => {
                let ticket_verified = waiting.cookies.tickets().next().is_some();
                let session = waiting.session.clone();
                let Completed {
                    user,
                    method,
                    accepted_by,
                    audit_notes,
                    ..
                } = waiting.pending.into_parts();
                let done = LoginDone {
                    user,
                    method,
                    accepted_by,
                    audit_notes,
                    ticket_verified,
                };
                self.issue_ticket(node, &session, waiting.login_user, done)
                    .map(LoginStep::Done)
            }
            Next::Ask(question) => {
                let token = random_token();
                let mut logins = self.logins.lock().map_err(|e| self.internal(e))?;
                let now = Instant::now();
                logins.retain(|_, l| l.expires > now);
                if logins.len() >= MAX_QUESTIONS_PENDING {
                    return Err(refused(
                        RefusalKind::Internal,
                        "too many logins wait for answers on the control node; try again",
                    ));
                }
                waiting.expires = now + QUESTION_LIFETIME;
                logins.insert(sha256_hex(token.as_bytes()), waiting);
                Ok(LoginStep::Question(wire::LoginQuestion {
                    login: SecretString::new(token),
                    key: question.key,
                    prompt: question.prompt,
                    echo: question.echo,
                }))
            }
            // (Audited through `NodeLogin::refused`.)
            Next::Deny => Err(refused(
                RefusalKind::PluginRefused,
                waiting
                    .pending
                    .refusal()
                    .unwrap_or("a login plugin refused the login")
                    .to_string(),
            )),
        }
    }

    /// A completed login: a single-use ticket for the session decision.
    fn issue_ticket(
        &self,
        node: &Node,
        session: &str,
        login_user: Name,
        done: LoginDone,
    ) -> Result<Authenticated, Refusal> {
        let LoginDone {
            user,
            method,
            accepted_by,
            audit_notes,
            ticket_verified,
        } = done;
        let (_, plugin_notes) = PendingLogin::audit_summary(&method, &accepted_by, audit_notes);
        let mut authenticated_with = vec![method.clone()];
        authenticated_with.extend(accepted_by.iter().cloned());
        let ticket = random_token();
        let groups = user.groups.iter().map(|g| g.to_string()).collect();
        let user_name = user.name.to_string();
        let mut tickets = self.tickets.lock().map_err(|e| self.internal(e))?;
        let now = Instant::now();
        tickets.retain(|_, t| t.expires > now);
        if tickets.len() >= MAX_TICKETS {
            return Err(refused(
                RefusalKind::Internal,
                "too many logins in progress on the control node; try again",
            ));
        }
        tickets.insert(
            sha256_hex(ticket.as_bytes()),
            Ticket {
                user,
                login_user,
                node: node.id.clone(),
                session: session.to_string(),
                method,
                authenticated_with,
                ticket_verified,
                expires: now + TICKET_LIFETIME,
            },
        );
        Ok(Authenticated {
            user: user_name,
            groups,
            plugins: accepted_by,
            plugin_notes,
            ticket_verified,
            ticket: SecretString::new(ticket),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn audit_denied(
        &self,
        node: &Node,
        session: &str,
        client: &str,
        user: &str,
        target: &str,
        detail: String,
        policies: Vec<String>,
    ) {
        self.auditor.record_best_effort(
            Entry::new(AuditKind::AccessDenied, detail)
                .session(session)
                .user(user)
                .target(target)
                .client(client)
                .field("node", node.id.to_string())
                .field("policies", serde_json::json!(policies)),
        );
    }

    /// Decides a session for a node: the access string's token, the policies, a granted
    /// request, or (when the user may ask) a request filed now, as on a single gateway; a
    /// request that needs approval holds the session ([`Decided::Held`]) until
    /// [`Self::await_decision`] sees it decided.
    pub async fn authorize(
        &self,
        peer: &Peer,
        node: &Node,
        call: Authorize,
    ) -> Result<Decided, Refusal> {
        let ticket = {
            let mut tickets = self.tickets.lock().map_err(|e| self.internal(e))?;
            tickets.remove(&sha256_hex(call.ticket.expose().as_bytes()))
        };
        let ticket = match ticket {
            Some(t)
                if t.node == node.id && t.session == call.session && t.expires > Instant::now() =>
            {
                t
            }
            _ => {
                return Err(refused(
                    RefusalKind::UnknownGrant,
                    "the login is unknown or expired on the control node: log in again",
                ));
            }
        };
        let login = LoginSpec::parse(&call.login)
            .map_err(|e| refused(RefusalKind::BadCall, format!("malformed login: {e}")))?;
        if login.user != ticket.login_user {
            return Err(refused(
                RefusalKind::BadCall,
                "the login names another user than the one authenticated",
            ));
        }
        let target: TargetSpec = login
            .target
            .clone()
            .map_err(|e| refused(RefusalKind::NotPermitted, e.to_string()))?;
        let user_name = ticket.user.name.to_string();
        // The user as stored now (groups may have changed since the login).
        let user = self
            .store
            .get(&USERS, ticket.user.name.as_str())
            .map_err(|e| self.internal(e))?
            .unwrap_or(ticket.user);
        let networks = self.store.list(&NETWORKS).map_err(|e| self.internal(e))?;
        let client: SocketAddr = call
            .client
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let facts = SessionFacts {
            session_id: call.session.clone(),
            protocol: call.protocol.clone(),
            client,
            pairs: login.options.clone(),
            authenticated_with: ticket.authenticated_with.clone(),
            ticket_verified: ticket.ticket_verified,
            time: self.policy.clock().now(),
            node: Some(NodeFacts {
                id: node.id.to_string(),
                networks: networks
                    .iter()
                    .filter(|n| n.node == node.id)
                    .map(|n| n.network.clone())
                    .collect(),
            }),
            // Session nodes do not serve transparent mode.
            destination: None,
        };
        let target_text = target.to_string();
        let not_permitted = |detail: String, policies: Vec<String>| {
            self.audit_denied(
                node,
                &call.session,
                &call.client,
                &user_name,
                &target_text,
                detail,
                policies,
            );
            refused(
                RefusalKind::NotPermitted,
                format!("target `{target_text}` is unknown or you are not permitted to use it"),
            )
        };
        let denial = |denied: Denied| match denied {
            Denied::NotPermitted { decision, .. } => not_permitted(
                format!(
                    "policy denies a session on `{target_text}` through node `{}`",
                    node.id
                ),
                decision.reasons(),
            ),
            Denied::Policy(e) => {
                self.audit_denied(
                    node,
                    &call.session,
                    &call.client,
                    &user_name,
                    &target_text,
                    format!("policy error: {e}"),
                    vec![],
                );
                self.internal(e)
            }
            other => not_permitted(other.to_string(), vec![]),
        };
        let with_request = |request: &gatehouse_core::AccessRequest, facts: SessionFacts| {
            self.policy.authorize_session_with(
                &user,
                &target,
                facts,
                Some(&RequestFacts::of(request)),
            )
        };
        let token = login
            .options
            .iter()
            .find(|(k, _)| k == ACCESS_OPTION)
            .map(|(_, v)| v.clone());
        let (authorization, request) = if let Some(token) = token {
            let Some(workflow) = &self.workflow else {
                return Err(refused(
                    RefusalKind::AccessToken,
                    "access strings are not served here",
                ));
            };
            let request = workflow
                .redeem_access_token(&user, &token, &target, &call.session, &call.client)
                .map_err(|_| {
                    refused(
                        RefusalKind::AccessToken,
                        "the access string is unknown, used or expired",
                    )
                })?;
            let permit = with_request(&request, facts).map_err(denial)?;
            (permit, Some(request))
        } else {
            match self.policy.authorize_session(&user, &target, facts.clone()) {
                Ok(permit) => (permit, None),
                Err(denied @ Denied::NotPermitted { .. }) => {
                    let usable = match &self.workflow {
                        Some(w) => w
                            .usable_session_request(&user.name, &target)
                            .map_err(|e| self.internal(e))?,
                        None => None,
                    };
                    match usable {
                        Some(request) => {
                            let permit = with_request(&request, facts).map_err(denial)?;
                            (permit, Some(request))
                        }
                        None => match self
                            .file_request(&call, &user, &login, &target, &ticket.method)
                            .await?
                        {
                            Filed::NotAllowed => return Err(denial(denied)),
                            Filed::Granted(request) => {
                                let permit = with_request(&request, facts).map_err(denial)?;
                                (permit, Some(*request))
                            }
                            Filed::Pending(request) => {
                                return self
                                    .hold(node, &call, user, target, facts, *request)
                                    .map(Decided::Held);
                            }
                        },
                    }
                }
                Err(other) => return Err(denial(other)),
            }
        };
        let asked = Asked {
            session: call.session.clone(),
            client: call.client.clone(),
            protocol: call.protocol.clone(),
            user: user_name,
            target,
        };
        self.grant(peer, node, &asked, authorization, request, &networks)
            .await
            .map(|granted| Decided::Granted(Box::new(granted)))
    }

    /// A permitted session: the node must manage the target's network and the credential must
    /// come from the vault; then the grant, held in memory, with the credential.
    async fn grant(
        &self,
        peer: &Peer,
        node: &Node,
        asked: &Asked,
        authorization: TargetAuthorization,
        request: Option<gatehouse_core::AccessRequest>,
        networks: &[gatehouse_core::ManagedNetwork],
    ) -> Result<Granted, Refusal> {
        let target = &asked.target;
        let target_text = target.to_string();
        let user_name = asked.user.clone();
        let policies = authorization.reasons().to_vec();
        let request_id = request.as_ref().map(|r| r.id.clone());
        // Permitted: the target must be in a network this node manages.
        let asset = authorization.asset().clone();
        let managing = addresses_of(&asset.address, asset.port)
            .into_iter()
            .find_map(|ip| network_for(networks, ip).map(|m| m.node.clone()));
        if managing.as_ref() != Some(&node.id) {
            let through = match &managing {
                Some(other) => format!("connect through session node `{other}`"),
                None => "connect through the control node".to_string(),
            };
            let detail = format!(
                "`{target_text}` is not in a network session node `{}` manages; {through}",
                node.id
            );
            self.audit_denied(
                node,
                &asked.session,
                &asked.client,
                &user_name,
                &target_text,
                detail.clone(),
                policies,
            );
            return Err(refused(RefusalKind::OutsideNetworks, detail));
        }
        let report_login = authorization.account().credential_plugin.is_some();
        let credential = match &authorization.account().credential_plugin {
            // The plugin runs here; its credential goes to the node with the permit.
            Some(plugin) => match self.plugin_credential(plugin, &authorization, asked).await {
                Ok(credential) => credential,
                Err(detail) => {
                    self.audit_denied(
                        node,
                        &asked.session,
                        &asked.client,
                        &user_name,
                        &target_text,
                        detail.clone(),
                        policies,
                    );
                    return Err(refused(RefusalKind::CredentialStore, detail));
                }
            },
            None => self
                .vault
                .credential(authorization.account())
                .map_err(|e| self.internal(e))?,
        };
        let grant = uuid::Uuid::now_v7().to_string();
        let idle_timeout = authorization
            .idle_timeout()
            .map(|(limit, policy)| (limit.as_secs(), policy.to_string()));
        {
            let mut grants = self.grants.lock().map_err(|e| self.internal(e))?;
            if grants.len() >= MAX_GRANTS {
                let now = Instant::now();
                grants.retain(|_, g| now.duration_since(g.used) < GRANT_IDLE);
            }
            if grants.len() >= MAX_GRANTS {
                return Err(refused(
                    RefusalKind::Internal,
                    "the control node holds too many sessions of nodes",
                ));
            }
            grants.insert(
                grant.clone(),
                LiveGrant {
                    node: node.id.clone(),
                    session: asked.session.clone(),
                    request: request_id.clone(),
                    authorization,
                    used: Instant::now(),
                },
            );
        }
        if let (Some(workflow), Some(id)) = (&self.workflow, &request_id) {
            workflow.session_started(id, &asked.session);
        }
        self.auditor.record_best_effort(
            Entry::new(
                AuditKind::SessionAuthorized,
                format!(
                    "session on `{target_text}` through node `{}` permitted",
                    node.id
                ),
            )
            .session(asked.session.clone())
            .user(user_name)
            .target(target_text)
            .client(asked.client.clone())
            .field("node", node.id.to_string())
            .field("node_address", peer.address.ip().to_string())
            .field("policies", serde_json::json!(policies))
            .field("request", serde_json::json!(request_id)),
        );
        Ok(Granted {
            grant,
            account: target.account.to_string(),
            asset,
            policies,
            request: request_id,
            credential: WireCredential {
                password: credential.password,
                private_key: credential.private_key,
            },
            report_login,
            idle_timeout,
        })
    }

    /// The credential from the account's credential-store plugin: for SSH a private key and a
    /// password if it has them, for RDP a password.
    async fn plugin_credential(
        &self,
        plugin: &str,
        authorization: &TargetAuthorization,
        asked: &Asked,
    ) -> Result<gatehouse_vault::TargetCredential, String> {
        use gatehouse_plugin_host::{Credential, CredentialKind};
        let Some(plugins) = &self.plugins else {
            return Err(format!("credential-store plugin `{plugin}` is not enabled"));
        };
        let request = credential_request(authorization, &asked.session);
        let failed = |e: gatehouse_plugin_host::PluginFailure| {
            format!("credential-store plugin `{plugin}`: {e}")
        };
        let private_key = if asked.protocol == "rdp" {
            None
        } else {
            match plugins
                .credential(plugin, CredentialKind::PrivateKey, &request)
                .await
                .map_err(failed)?
            {
                Some(Credential::PrivateKey(key)) => Some(key),
                _ => None,
            }
        };
        let password = match plugins
            .credential(plugin, CredentialKind::Password, &request)
            .await
            .map_err(failed)?
        {
            Some(Credential::Password(password)) => Some(password),
            _ => None,
        };
        if private_key.is_none() && password.is_none() {
            return Err(format!(
                "credential-store plugin `{plugin}` has no credential for `{}`",
                asked.target
            ));
        }
        Ok(gatehouse_vault::TargetCredential {
            password,
            private_key,
        })
    }

    /// A node logged in to a target with a credential-store plugin's credential: the plugin is
    /// told whether the target accepted it.
    pub async fn target_login(&self, node: &Node, call: wire::TargetLogin) -> Result<(), Refusal> {
        let told = self.with_grant(node, &call.grant, |authorization| {
            authorization
                .account()
                .credential_plugin
                .clone()
                .map(|plugin| (plugin, credential_request(authorization, "")))
        })?;
        let (Some((plugin, mut request)), Some(plugins)) = (told, &self.plugins) else {
            return Ok(());
        };
        if let Ok(grants) = self.grants.lock()
            && let Some(live) = grants.get(&call.grant)
        {
            request.session_id = live.session.clone();
        }
        let event = gatehouse_plugin_host::CredentialEvent::AuthenticationCompleted {
            succeeded: call.succeeded,
        };
        if let Err(e) = plugins.credential_event(&plugin, &request, event).await {
            tracing::warn!(error = %e, plugin = %plugin, "credential-store plugin not told about a node's target login");
        }
        Ok(())
    }

    /// Ends the sessions on nodes whose access request stops being granted (revoked, expired,
    /// checked in): each node is told at its next call (within a heartbeat) and ends the
    /// session with the reason. Runs until the workflow goes away.
    pub async fn end_sessions_when_requests_end(self: Arc<Self>) {
        use tokio::sync::broadcast::error::RecvError;
        let Some(workflow) = self.workflow.clone() else {
            return;
        };
        let mut changes = workflow.subscribe();
        loop {
            let ended: Vec<(String, String)> = match changes.recv().await {
                Ok(change) if !change.state.is_granted() => {
                    vec![(change.id, change.state.to_string())]
                }
                Ok(_) => continue,
                // Missed changes: look at every request a node session runs under.
                Err(RecvError::Lagged(_)) => {
                    let in_play: Vec<String> = self
                        .grants
                        .lock()
                        .map(|g| g.values().filter_map(|l| l.request.clone()).collect())
                        .unwrap_or_default();
                    in_play
                        .into_iter()
                        .filter_map(|id| {
                            let request = self.store.get(&REQUESTS, &id).ok().flatten()?;
                            (!request.state.is_granted()).then(|| (id, request.state.to_string()))
                        })
                        .collect()
                }
                Err(RecvError::Closed) => return,
            };
            for (request, state) in ended {
                self.end_grants_of(&request, &state);
            }
        }
    }

    fn end_grants_of(&self, request: &str, state: &str) {
        let ended: Vec<(Name, String)> = match self.grants.lock() {
            Ok(mut grants) => {
                let ids: Vec<String> = grants
                    .iter()
                    .filter(|(_, g)| g.request.as_deref() == Some(request))
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter()
                    .filter_map(|id| grants.remove(id))
                    .map(|g| (g.node, g.session))
                    .collect()
            }
            Err(_) => return,
        };
        for (node, session) in ended {
            let termination = crate::wire::Termination {
                session: session.clone(),
                by: String::new(),
                reason: format!("access request {request} is {state}"),
            };
            if let Err(e) = crate::control::request_termination(
                &self.store,
                &self.auditor,
                node.as_str(),
                termination,
            ) {
                tracing::error!(error = %e, %session, node = %node, "cannot ask the node to end a session whose request ended");
            }
        }
    }

    /// Files a session request for a login no policy or grant permits, when the user may ask
    /// (`request_access`), as a single gateway does.
    async fn file_request(
        &self,
        call: &Authorize,
        user: &User,
        login: &LoginSpec,
        target: &TargetSpec,
        method: &str,
    ) -> Result<Filed, Refusal> {
        let Some(workflow) = &self.workflow else {
            return Ok(Filed::NotAllowed);
        };
        let new = NewRequest {
            target: target.clone(),
            access: AccessKind::Session,
            reason: login.option("reason").unwrap_or("").to_string(),
            ticket: login.option("ticket").map(str::to_string),
            duration_minutes: login.option("duration").and_then(|d| d.parse().ok()),
            emergency: login
                .option("emergency")
                .is_some_and(|v| v == "yes" || v == "true"),
        };
        let client: SocketAddr = call
            .client
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let actor = Actor {
            user: user.clone(),
            client,
            via: call.protocol.clone(),
            session_id: call.session.clone(),
            authenticated_with: vec![method.to_string()],
        };
        match workflow.create(&actor, new, &call.protocol).await {
            Ok(request) if request.state == RequestState::PendingApproval => {
                Ok(Filed::Pending(Box::new(request)))
            }
            Ok(request) => Ok(Filed::Granted(Box::new(request))),
            Err(WorkflowError::TargetRefused(_)) => Ok(Filed::NotAllowed),
            Err(
                WorkflowError::BadInput(message)
                | WorkflowError::Forbidden(message)
                | WorkflowError::Plugin(message),
            ) => Err(refused(RefusalKind::RequestNotGranted, message)),
            Err(e) => Err(self.internal(e)),
        }
    }

    /// Keeps a session whose request waits for approval; the node asks with the hold token.
    fn hold(
        &self,
        node: &Node,
        call: &Authorize,
        user: User,
        target: TargetSpec,
        facts: SessionFacts,
        request: gatehouse_core::AccessRequest,
    ) -> Result<wire::Held, Refusal> {
        let wait = self
            .workflow
            .as_ref()
            .map(|w| w.settings().connect_hold())
            .unwrap_or_default();
        let token = random_token();
        let mut holds = self.holds.lock().map_err(|e| self.internal(e))?;
        let now = Instant::now();
        holds.retain(|_, h| h.expires > now);
        if holds.len() >= MAX_HOLDS {
            return Err(refused(
                RefusalKind::Internal,
                "too many sessions wait for approval on the control node; try again",
            ));
        }
        let target_text = target.to_string();
        holds.insert(
            sha256_hex(token.as_bytes()),
            HeldSession {
                node: node.id.clone(),
                asked: Asked {
                    session: call.session.clone(),
                    client: call.client.clone(),
                    protocol: call.protocol.clone(),
                    user: user.name.to_string(),
                    target,
                },
                user,
                facts,
                request: request.id.clone(),
                expires: now + wait,
            },
        );
        self.auditor.record_best_effort(
            Entry::new(
                AuditKind::RequestCreated,
                format!(
                    "connection through node `{}` held for access request {} (up to {} s)",
                    node.id,
                    request.id,
                    wait.as_secs()
                ),
            )
            .session(call.session.clone())
            .user(request.requester.to_string())
            .target(target_text)
            .client(call.client.clone())
            .field("node", node.id.to_string())
            .field("request", request.id.clone()),
        );
        Ok(wire::Held {
            hold: SecretString::new(token),
            request: request.id,
            approvals_needed: request.approvals_needed.unwrap_or(1),
            wait_seconds: wait.as_secs(),
        })
    }

    /// Waits up to [`AWAIT_SLICE`] for a held session's request: `Ok(None)` while it is
    /// undecided; once granted, the session is decided again with the request in play.
    pub async fn await_decision(
        &self,
        peer: &Peer,
        node: &Node,
        call: wire::AwaitDecision,
    ) -> Result<Option<Granted>, Refusal> {
        let key = sha256_hex(call.hold.expose().as_bytes());
        let (request_id, expires) = {
            let holds = self.holds.lock().map_err(|e| self.internal(e))?;
            match holds.get(&key) {
                Some(h) if h.node == node.id => (h.request.clone(), h.expires),
                _ => {
                    return Err(refused(
                        RefusalKind::UnknownGrant,
                        "the control node does not know this held session (it restarted): log in again",
                    ));
                }
            }
        };
        let Some(workflow) = &self.workflow else {
            return Err(self.internal("a held session without requests"));
        };
        let left = expires.saturating_duration_since(Instant::now());
        let decided = workflow
            .wait_for_decision(&request_id, left.min(AWAIT_SLICE))
            .await
            .map_err(|e| self.internal(e))?;
        if decided.state == RequestState::PendingApproval && !left.is_zero() && left > AWAIT_SLICE {
            return Ok(None);
        }
        let held = {
            let mut holds = self.holds.lock().map_err(|e| self.internal(e))?;
            holds.remove(&key)
        };
        let Some(held) = held else {
            return Err(refused(
                RefusalKind::UnknownGrant,
                "the held session was already decided",
            ));
        };
        let why = match decided.state {
            s if s.is_granted() => None,
            RequestState::Denied => Some(match &decided.denial {
                Some(d) if !d.comment.is_empty() => format!(
                    "access request {} was denied by {}: {}",
                    decided.id, d.by, d.comment
                ),
                Some(d) => format!("access request {} was denied by {}", decided.id, d.by),
                None => format!("access request {} was denied", decided.id),
            }),
            RequestState::PendingApproval => Some(format!(
                "access request {} was not granted: not decided within {} s; it stays open, \
                 connect again once it is approved",
                decided.id,
                workflow.settings().connect_hold().as_secs()
            )),
            other => Some(format!(
                "access request {} was not granted: it is {other}",
                decided.id
            )),
        };
        if let Some(why) = why {
            self.audit_denied(
                node,
                &held.asked.session,
                &held.asked.client,
                &held.asked.user,
                &held.asked.target.to_string(),
                why.clone(),
                vec![],
            );
            return Err(refused(RefusalKind::RequestNotGranted, why));
        }
        let authorization = self
            .policy
            .authorize_session_with(
                &held.user,
                &held.asked.target,
                held.facts.clone(),
                Some(&RequestFacts::of(&decided)),
            )
            .map_err(|denied| {
                let target_text = held.asked.target.to_string();
                let policies = match &denied {
                    Denied::NotPermitted { decision, .. } => decision.reasons(),
                    _ => vec![],
                };
                self.audit_denied(
                    node,
                    &held.asked.session,
                    &held.asked.client,
                    &held.asked.user,
                    &target_text,
                    format!(
                        "policy denies the session under request {}: {denied}",
                        decided.id
                    ),
                    policies,
                );
                refused(
                    RefusalKind::NotPermitted,
                    format!("target `{target_text}` is unknown or you are not permitted to use it"),
                )
            })?;
        let networks = self.store.list(&NETWORKS).map_err(|e| self.internal(e))?;
        self.grant(
            peer,
            node,
            &held.asked,
            authorization,
            Some(decided),
            &networks,
        )
        .await
        .map(Some)
    }

    fn with_grant<T>(
        &self,
        node: &Node,
        grant: &str,
        then: impl FnOnce(&TargetAuthorization) -> T,
    ) -> Result<T, Refusal> {
        let mut grants = self.grants.lock().map_err(|e| self.internal(e))?;
        match grants.get_mut(grant) {
            Some(live) if live.node == node.id => {
                live.used = Instant::now();
                Ok(then(&live.authorization))
            }
            _ => Err(refused(
                RefusalKind::UnknownGrant,
                "the control node does not know this session (it restarted, or the session \
                 ended): new channels need a new login",
            )),
        }
    }

    pub fn channel(&self, node: &Node, call: ChannelCall) -> Result<ChannelVerdict, Refusal> {
        let request = ChannelRequest::from(call.channel);
        let decision = self.with_grant(node, &call.grant, |authorization| {
            self.policy.authorize_channel(authorization, &request)
        })?;
        Ok(ChannelVerdict {
            permitted: decision.permitted,
            reasons: decision.reasons,
            errors: decision.errors,
        })
    }

    /// Trust on first use for a target a node dialed: pins the key unless one is pinned.
    pub fn pin_host_key(&self, node: &Node, call: PinHostKey) -> Result<HostKeyPinned, Refusal> {
        let asset = self.with_grant(node, &call.grant, |a| a.asset().name.to_string())?;
        if gatehouse_auth::parse_public_key(&call.key).is_err() {
            return Err(refused(RefusalKind::BadCall, "not an OpenSSH public key"));
        }
        let outcome = self
            .store
            .write(|txn| -> Result<Option<String>, StoreError> {
                let Some(mut record) = txn.get(&ASSETS, &asset)? else {
                    return Ok(None);
                };
                match &record.host_key {
                    HostKeyPolicy::Pinned { key } => Ok(Some(key.clone())),
                    HostKeyPolicy::TrustOnFirstUse => {
                        record.host_key = HostKeyPolicy::Pinned {
                            key: call.key.clone(),
                        };
                        txn.put(&ASSETS, &asset, &record)?;
                        Ok(None)
                    }
                }
            })
            .map_err(|e| self.internal(e))?;
        Ok(HostKeyPinned { pinned: outcome })
    }

    /// Trust on first use for an RDP target a node dialed: pins its certificate key unless one is
    /// pinned.
    pub fn pin_certificate(
        &self,
        node: &Node,
        call: PinCertificate,
    ) -> Result<HostKeyPinned, Refusal> {
        let asset = self.with_grant(node, &call.grant, |a| a.asset().name.to_string())?;
        let well_formed = call.pin.strip_prefix("SHA256:").is_some_and(|b64| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64.trim_end_matches('='))
                .is_ok_and(|digest| digest.len() == 32)
        });
        if !well_formed {
            return Err(refused(RefusalKind::BadCall, "not a certificate key pin"));
        }
        let outcome = self
            .store
            .write(
                |txn| -> Result<Result<Option<String>, Refusal>, StoreError> {
                    let Some(mut record) = txn.get(&ASSETS, &asset)? else {
                        return Ok(Err(refused(
                            RefusalKind::NotPermitted,
                            format!("asset `{asset}` no longer exists"),
                        )));
                    };
                    let Some(endpoint) = record.rdp.as_mut() else {
                        return Ok(Err(refused(
                            RefusalKind::NotPermitted,
                            format!("asset `{asset}` no longer has RDP"),
                        )));
                    };
                    match &endpoint.certificate {
                        RdpCertificatePolicy::Pinned { pin } => Ok(Ok(Some(pin.clone()))),
                        RdpCertificatePolicy::TrustOnFirstUse => {
                            endpoint.certificate = RdpCertificatePolicy::Pinned {
                                pin: call.pin.clone(),
                            };
                            txn.put(&ASSETS, &asset, &record)?;
                            Ok(Ok(None))
                        }
                    }
                },
            )
            .map_err(|e| self.internal(e))??;
        Ok(HostKeyPinned { pinned: outcome })
    }

    pub fn session_ended(&self, node: &Node, grant: &str) -> Result<(), Refusal> {
        let mut grants = self.grants.lock().map_err(|e| self.internal(e))?;
        if grants.get(grant).is_some_and(|g| g.node == node.id) {
            grants.remove(grant);
        }
        Ok(())
    }
}
