//! How a session of a protocol whose gateway lives in the daemon (RDP, Telnet) gets its permit,
//! in the order the SSH gateway uses (`host/ssh/src/access.rs`):
//!
//! 1. an `access=<token>` login option (from an `.rdp` file or access string of a
//!    passwords-initiated request): redeemed once, then the session is decided with that request
//!    in play;
//! 2. the policies directly (the session action, with the protocol in the context);
//! 3. a granted session request of the user for this target, in play;
//! 4. when the user may ask (`request_access`), a new request is filed and the connection is held
//!    until it is decided or `connect_hold_seconds` pass.
//!
//! AA plugins run before any of this; how a plugin's question is answered is the protocol's
//! ([`Gate::answer`]: RDP takes it from the login's `key=value@` options, Telnet asks the user).
//! The target's credential comes from its credential-store plugin or the vault. A session opened
//! under a request ends when the request does ([`request_ended`]).

use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::{
    AccessKind, AccessRequest, Asset, AuditKind, LoginSpec, RequestState, SecretString, TargetSpec,
    User,
};
use gatehouse_plugin_host::login::{self, LoginContext, Next, PendingLogin};
use gatehouse_plugin_host::{ConnectionInfo, PluginHost, Protocol, Question, SessionCookies};
use gatehouse_policy::{Denied, PolicyEngine, RequestFacts, SessionFacts, TargetAuthorization};
use gatehouse_store::{ASSETS, REQUESTS, Store, USERS};
use gatehouse_vault::Vault;
use gatehouse_workflow::{Actor, NewRequest, Workflow, WorkflowError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The login option carrying an access token.
const ACCESS_OPTION: &str = gatehouse_workflow::ACCESS_OPTION;

/// One connection of a protocol, as the access decisions see it.
pub(crate) trait Gate: Sync {
    /// The protocol in Cedar's context and the audit trail (`rdp`, `telnet`).
    const PROTOCOL: &'static str;
    /// Its name in sentences (`RDP`, `Telnet`).
    const LABEL: &'static str;
    /// What plugins are told.
    const PLUGIN_PROTOCOL: Protocol;

    fn id(&self) -> &str;
    fn client(&self) -> SocketAddr;
    fn store(&self) -> &Arc<Store>;
    fn auditor(&self) -> &Auditor;
    /// An audit entry of this connection (session, user, target, client filled in).
    fn entry(&self, kind: AuditKind, detail: String) -> Entry;
    /// The port of `asset` this protocol connects to.
    fn port(asset: &Asset) -> u16;
    /// The answer to a plugin's question, or why there is none (audited, the login refused).
    fn answer(
        &self,
        question: &Question,
        login: &LoginSpec,
    ) -> impl Future<Output = Result<String, String>> + Send;
    /// The connection waits for an access request to be decided (up to `wait`).
    fn held(&self, request: &AccessRequest, wait: Duration) -> impl Future<Output = ()> + Send;
    /// Transparent mode: the address the client connected to (`context.destination`).
    fn destination(&self) -> Option<SocketAddr> {
        None
    }
    /// Transparent mode: the address the target is dialed from (the client's own, with
    /// `IP_TRANSPARENT`); `None` for the gateway's.
    fn source(&self) -> Option<std::net::IpAddr> {
        None
    }
}

/// What decides: the policies, the plugins, the requests.
pub(crate) struct Deciders<'a> {
    pub vault: &'a Vault,
    pub policy: &'a PolicyEngine,
    pub plugins: Option<&'a PluginHost>,
    pub workflow: Option<&'a Arc<Workflow>>,
}

/// A login every AA plugin accepted.
pub(crate) struct LoggedIn {
    pub user: User,
    pub login: LoginSpec,
    /// `password`, then the plugins that accepted.
    pub authenticated_with: Vec<String>,
    pub ticket_verified: bool,
    pub cookies: SessionCookies,
}

fn audit<G: Gate>(gate: &G, kind: AuditKind, detail: String, fields: &[(&str, serde_json::Value)]) {
    let mut entry = gate.entry(kind, detail).field("protocol", G::PROTOCOL);
    for (k, v) in fields {
        entry = entry.field(k, v.clone());
    }
    gate.auditor().record_best_effort(entry);
}

/// The plugins' view of a gate's login.
pub(crate) struct Ctx<'a, G>(pub &'a G);

impl<G: Gate> LoginContext for Ctx<'_, G> {
    fn connection(&self, user: &User, login: &LoginSpec) -> ConnectionInfo {
        // The address only when the asset exists: an unknown asset is an empty address.
        let address = match &login.target {
            Ok(t) => self
                .0
                .store()
                .get(&ASSETS, t.asset.as_str())
                .ok()
                .flatten()
                .map(|a| {
                    let port = G::port(&a);
                    (a.address, port)
                })
                .unwrap_or_default(),
            Err(_) => Default::default(),
        };
        ConnectionInfo::of_login(
            self.0.id(),
            G::PLUGIN_PROTOCOL,
            self.0.client(),
            user,
            login,
            address,
        )
    }

    fn find_user(&self, name: &str) -> Option<User> {
        self.0.store().get(&USERS, name).ok().flatten()
    }

    fn refused(&self, user: &User, detail: String) {
        self.0.auditor().record_best_effort(
            self.0
                .entry(AuditKind::LoginFailed, detail)
                .user(user.name.to_string())
                .field("protocol", G::PROTOCOL),
        );
    }
}

/// Runs the AA plugins, their questions answered by [`Gate::answer`]. Audits the completed
/// login (`LoginOk`, with the plugins that accepted) or the refusal.
pub(crate) async fn run_plugins<G: Gate>(
    gate: &G,
    deciders: &Deciders<'_>,
    user: User,
    spec: LoginSpec,
) -> Option<LoggedIn> {
    let mut cookies = SessionCookies::default();
    let (user, spec, accepted_by, notes) = match deciders.plugins {
        None => (user, spec, Vec::new(), Vec::new()),
        Some(plugins) => {
            let ctx = Ctx(gate);
            let mut pending = PendingLogin::new(user, spec, "password");
            loop {
                match login::run(&ctx, plugins, &mut pending, &mut cookies).await {
                    Next::Accept => break,
                    Next::Deny => return None,
                    Next::Ask(question) => match gate.answer(&question, pending.login()).await {
                        Ok(answer) => pending.answer(answer),
                        Err(detail) => {
                            ctx.refused(pending.user(), detail);
                            return None;
                        }
                    },
                }
            }
            let done = pending.into_parts();
            (done.user, done.login, done.accepted_by, done.audit_notes)
        }
    };
    let ticket_verified = cookies.tickets().next().is_some();
    let mut authenticated_with = vec!["password".to_string()];
    authenticated_with.extend(accepted_by.iter().cloned());
    let (how, notes) = PendingLogin::audit_summary("password", &accepted_by, notes);
    audit(
        gate,
        AuditKind::LoginOk,
        format!("`{}` logged in over {} with {how}", user.name, G::LABEL),
        &[
            ("method", "password".into()),
            ("plugins", serde_json::json!(accepted_by)),
            ("plugin_notes", serde_json::json!(notes)),
            ("ticket_verified", ticket_verified.into()),
        ],
    );
    Some(LoggedIn {
        user,
        login: spec,
        authenticated_with,
        ticket_verified,
        cookies,
    })
}

fn facts<G: Gate>(gate: &G, deciders: &Deciders<'_>, who: &LoggedIn) -> SessionFacts {
    SessionFacts {
        session_id: gate.id().to_string(),
        protocol: G::PROTOCOL.into(),
        client: gate.client(),
        pairs: who.login.options.clone(),
        authenticated_with: who.authenticated_with.clone(),
        ticket_verified: who.ticket_verified,
        time: deciders.policy.clock().now(),
        node: None,
        destination: gate.destination(),
    }
}

fn audit_denial<G: Gate>(gate: &G, target: &TargetSpec, denied: Denied) {
    match denied {
        Denied::NotPermitted { decision, .. } => {
            let mut fields = vec![("policies", serde_json::json!(decision.reasons()))];
            if !decision.errors.is_empty() {
                fields.push(("policy_errors", serde_json::json!(decision.errors)));
            }
            audit(
                gate,
                AuditKind::AccessDenied,
                format!("policy denies a session over {} on `{target}`", G::LABEL),
                &fields,
            );
        }
        other => audit(gate, AuditKind::AccessDenied, other.to_string(), &[]),
    }
}

fn with_request<G: Gate>(
    gate: &G,
    deciders: &Deciders<'_>,
    who: &LoggedIn,
    target: &TargetSpec,
    request: &AccessRequest,
) -> Option<TargetAuthorization> {
    let facts_of_request = RequestFacts::of(request);
    deciders
        .policy
        .authorize_session_with(
            &who.user,
            target,
            facts(gate, deciders, who),
            Some(&facts_of_request),
        )
        .map_err(|denied| audit_denial(gate, target, denied))
        .ok()
}

/// Decides the session; returns the permit and the request it was opened under. Every refusal
/// is audited here; the caller tells the client no more than that it was refused.
pub(crate) async fn permit<G: Gate>(
    gate: &G,
    deciders: &Deciders<'_>,
    who: &LoggedIn,
    target: &TargetSpec,
) -> Option<(TargetAuthorization, Option<AccessRequest>)> {
    let workflow = deciders.workflow.cloned();
    if let Some(token) = who.login.option(ACCESS_OPTION) {
        let Some(workflow) = &workflow else {
            audit(
                gate,
                AuditKind::AccessDenied,
                "an access token was given, but requests are not served".into(),
                &[],
            );
            return None;
        };
        // Refusals are audited by the workflow (unknown, used, expired, someone else's).
        let request = workflow
            .redeem_access_token(
                &who.user,
                token,
                target,
                gate.id(),
                &gate.client().to_string(),
            )
            .ok()?;
        let permit = with_request(gate, deciders, who, target, &request)?;
        return Some((permit, Some(request)));
    }
    let direct = deciders
        .policy
        .authorize_session(&who.user, target, facts(gate, deciders, who));
    let denied = match direct {
        Ok(permit) => return Some((permit, None)),
        Err(denied @ Denied::NotPermitted { .. }) => denied,
        Err(other) => {
            audit_denial(gate, target, other);
            return None;
        }
    };
    let Some(workflow) = workflow else {
        audit_denial(gate, target, denied);
        return None;
    };
    match workflow.usable_session_request(&who.user.name, target) {
        Ok(Some(request)) => {
            let permit = with_request(gate, deciders, who, target, &request)?;
            return Some((permit, Some(request)));
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "looking up session requests"),
    }
    let new = NewRequest {
        target: target.clone(),
        access: AccessKind::Session,
        reason: who.login.option("reason").unwrap_or("").to_string(),
        ticket: who.login.option("ticket").map(str::to_string),
        duration_minutes: who.login.option("duration").and_then(|d| d.parse().ok()),
        emergency: who
            .login
            .option("emergency")
            .is_some_and(|v| v == "yes" || v == "true"),
    };
    let actor = Actor {
        user: who.user.clone(),
        client: gate.client(),
        via: G::PROTOCOL.into(),
        session_id: gate.id().to_string(),
        authenticated_with: who.authenticated_with.clone(),
    };
    let request = match workflow.create(&actor, new, G::PROTOCOL).await {
        Ok(r) => r,
        Err(WorkflowError::TargetRefused(_)) => {
            audit_denial(gate, target, denied);
            return None;
        }
        Err(e) => {
            audit(
                gate,
                AuditKind::AccessDenied,
                format!("no direct permit, and filing an access request failed: {e}"),
                &[],
            );
            return None;
        }
    };
    let request = if request.state == RequestState::PendingApproval {
        hold(gate, &workflow, request).await?
    } else {
        request
    };
    let permit = with_request(gate, deciders, who, target, &request)?;
    Some((permit, Some(request)))
}

/// Keeps the connection while the request is decided.
async fn hold<G: Gate>(
    gate: &G,
    workflow: &Arc<Workflow>,
    request: AccessRequest,
) -> Option<AccessRequest> {
    let wait = workflow.settings().connect_hold();
    audit(
        gate,
        AuditKind::RequestCreated,
        format!(
            "{} connection held for access request {} (up to {} s)",
            G::LABEL,
            request.id,
            wait.as_secs()
        ),
        &[("request", request.id.clone().into())],
    );
    gate.held(&request, wait).await;
    let decided = match workflow.wait_for_decision(&request.id, wait).await {
        Ok(decided) => decided,
        Err(e) => {
            tracing::error!(error = %e, "waiting for the request");
            return None;
        }
    };
    if decided.state.is_granted() {
        return Some(decided);
    }
    let why = match decided.state {
        RequestState::PendingApproval => format!(
            "access request {} was not decided within {} s; it stays open, connect again once it is approved",
            decided.id,
            wait.as_secs()
        ),
        other => format!("access request {} is {other}", decided.id),
    };
    audit(
        gate,
        AuditKind::AccessDenied,
        why,
        &[("request", decided.id.into())],
    );
    None
}

/// Resolves when the request the session runs under stops being granted (revoked, expired,
/// checked in); never when there is none. Marks the request "session initialized".
pub(crate) async fn request_ended(
    workflow: Option<Arc<Workflow>>,
    request_id: Option<String>,
    session_id: String,
) -> RequestState {
    let (Some(workflow), Some(request_id)) = (workflow, request_id) else {
        return std::future::pending().await;
    };
    let mut changes = workflow.subscribe();
    workflow.session_started(&request_id, &session_id);
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(c) if c.id == request_id && !c.state.is_granted() => return c.state,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if let Ok(Some(r)) = workflow.store().get(&REQUESTS, &request_id)
                        && !r.state.is_granted()
                    {
                        return r.state;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return std::future::pending().await;
                }
            },
            // Expiry happens by the clock; the sweeper publishes it, this is a backstop.
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {
                workflow.expire_due();
            }
        }
    }
}

fn credential_request<G: Gate>(
    gate: &G,
    authorization: &TargetAuthorization,
) -> gatehouse_plugin_host::CredentialRequest {
    gatehouse_plugin_host::CredentialRequest::new(
        gate.id(),
        authorization.user(),
        authorization.account(),
        authorization.asset(),
    )
}

/// The target account's password: from its credential-store plugin when it has one, else from
/// the vault.
pub(crate) async fn target_password<G: Gate>(
    gate: &G,
    deciders: &Deciders<'_>,
    authorization: &TargetAuthorization,
) -> Result<Option<SecretString>, String> {
    use gatehouse_plugin_host::{Credential, CredentialKind};
    let account = authorization.account();
    let Some(plugin) = &account.credential_plugin else {
        return deciders
            .vault
            .credential(account)
            .map(|c| c.password)
            .map_err(|e| format!("vault: {e}"));
    };
    let plugins = deciders
        .plugins
        .ok_or_else(|| format!("credential-store plugin `{plugin}` is not enabled"))?;
    match plugins
        .credential(
            plugin,
            CredentialKind::Password,
            &credential_request(gate, authorization),
        )
        .await
    {
        Ok(Some(Credential::Password(password))) => Ok(Some(password)),
        Ok(_) => Ok(None),
        Err(e) => Err(format!("credential-store plugin `{plugin}`: {e}")),
    }
}

/// Tells the account's credential-store plugin (if any) whether the target accepted it.
pub(crate) async fn credential_event<G: Gate>(
    gate: &G,
    deciders: &Deciders<'_>,
    authorization: &TargetAuthorization,
    succeeded: bool,
) {
    let (Some(plugin), Some(plugins)) =
        (&authorization.account().credential_plugin, deciders.plugins)
    else {
        return;
    };
    let event = gatehouse_plugin_host::CredentialEvent::AuthenticationCompleted { succeeded };
    let request = credential_request(gate, authorization);
    if let Err(e) = plugins.credential_event(plugin, &request, event).await {
        tracing::warn!(error = %e, "credential-store plugin not told about the login");
    }
}

/// Tells the plugins the session ended (ticket comments, check-in); failures are audited.
pub(crate) async fn plugins_session_ended<G: Gate>(
    gate: &G,
    deciders: &Deciders<'_>,
    who: &mut LoggedIn,
    end: &gatehouse_plugin_host::SessionEnd,
) {
    let Some(plugins) = deciders.plugins else {
        return;
    };
    let conn = Ctx(gate).connection(&who.user, &who.login);
    for failure in plugins.session_ended(&conn, &mut who.cookies, end).await {
        audit(gate, AuditKind::SessionEnded, failure.to_string(), &[]);
    }
}

/// Dials the target of a permitted session: only the proof names the address.
pub(crate) async fn dial<G: Gate>(
    gate: &G,
    authorization: &TargetAuthorization,
    port: u16,
    limit: Duration,
) -> Result<tokio::net::TcpStream, String> {
    let address = authorization.asset().address.as_str();
    gatehouse_net::connect(address, port, gate.source(), limit)
        .await
        .map_err(|e| e.to_string())
}

/// The in-band `login` as the gateway reads it: unchanged, or in transparent mode completed
/// with the asset the connection was going to (`alice@root` → `alice@root@db1`). Refused
/// (audited, with the line the user reads) when the destination is no asset, or the login
/// names another one.
pub(crate) fn transparent_login<G: Gate>(
    gate: &G,
    arrived: Option<&crate::listener::Arrived>,
    login: &str,
) -> Result<String, String> {
    let Some(arrival) = arrived.map(|a| &a.arrival) else {
        return Ok(login.to_string());
    };
    let destination = arrival.destination.to_string();
    LoginSpec::complete_transparent(login, arrival.asset.as_ref(), &destination).map_err(|line| {
        audit(
            gate,
            AuditKind::LoginFailed,
            format!("transparent connection to {destination}: {line}"),
            &[],
        );
        line
    })
}

/// An audit entry of session `id` of `user` on `target` from `client`; a transparent
/// connection's entries also say where it was going and, when the target is dialed from the
/// client's address, that address.
pub(crate) fn session_entry(
    kind: AuditKind,
    detail: impl Into<String>,
    id: &str,
    user: &str,
    target: &str,
    client: SocketAddr,
    arrived: Option<&crate::listener::Arrived>,
) -> Entry {
    let entry = Entry::new(kind, detail)
        .session(id.to_string())
        .user(user.to_string())
        .target(target.to_string())
        .client(client.to_string());
    let Some(arrived) = arrived else {
        return entry;
    };
    let entry = entry
        .field("transparent", true)
        .field("destination", arrived.arrival.destination.to_string());
    match arrived.source {
        Some(source) => entry.field("dialed_from", source.to_string()),
        None => entry,
    }
}

/// The names a login gives (`user`, and `account@asset` when it names a target), also put on
/// the connection's tracing span.
pub(crate) fn login_names(spec: &LoginSpec) -> (String, String) {
    let span = tracing::Span::current();
    span.record("user", spec.user.as_str());
    let target = match &spec.target {
        Ok(target) => {
            span.record("target", tracing::field::display(target));
            target.to_string()
        }
        Err(_) => String::new(),
    };
    (spec.user.to_string(), target)
}

/// Checks `password` for the login's gateway user off the async workers. A wrong password or
/// an unknown user is audited as `login_failed` (the detail is the trail's; the caller tells
/// the user no more than that access is denied). `None` when refused.
pub(crate) async fn check_password<G: Gate>(
    gate: &G,
    authenticator: &Arc<gatehouse_auth::Authenticator>,
    spec: &LoginSpec,
    password: SecretString,
) -> Option<User> {
    let authenticator = authenticator.clone();
    let name = spec.user.clone();
    let verified = tokio::task::spawn_blocking(move || {
        authenticator.verify_password(&name, password.expose())
    })
    .await;
    match verified {
        Ok(Ok(user)) => Some(user),
        Ok(Err(e)) => {
            audit(gate, AuditKind::LoginFailed, e.to_string(), &[]);
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "verifying the password");
            None
        }
    }
}
