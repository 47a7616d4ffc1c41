//! How an RDP session gets its permit, in the order the SSH gateway uses
//! (`host/ssh/src/access.rs`):
//!
//! 1. an `access=<token>` login option (from an `.rdp` file or access string of a
//!    passwords-initiated request): redeemed once, then the session is decided with that request
//!    in play;
//! 2. the policies directly (the session action, with `protocol: "rdp"` in the context);
//! 3. a granted session request of the user for this target, in play;
//! 4. when the user may ask (`request_access`), a new request is filed and the connection is held
//!    (the client waits after NLA) until it is decided or `connect_hold_seconds` pass.
//!
//! AA plugins run before any of this. RDP has no prompt the gateway controls before the session,
//! so a plugin's question is answered from the login's `key=value@` options
//! (`otp=123456@alice@administrator@win1`), or the login is refused with the key to give.
//!
//! A session opened under a request ends when the request does (revoked, expired, checked in).

use super::{LocalRdp, Session};
use gatehouse_core::{
    AccessKind, AccessRequest, AuditKind, LoginSpec, RequestState, TargetSpec, User,
};
use gatehouse_plugin_host::login::{self, LoginContext, Next, PendingLogin};
use gatehouse_plugin_host::{ConnectionInfo, Protocol, SessionCookies};
use gatehouse_policy::{Denied, RequestFacts, SessionFacts, TargetAuthorization};
use gatehouse_store::{ASSETS, REQUESTS, USERS};
use gatehouse_workflow::{Actor, NewRequest, Workflow, WorkflowError};
use std::sync::Arc;

/// The login option carrying an access token.
const ACCESS_OPTION: &str = gatehouse_workflow::ACCESS_OPTION;

/// A login every AA plugin accepted.
pub(super) struct LoggedIn {
    pub user: User,
    pub login: LoginSpec,
    /// `password`, then the plugins that accepted.
    pub authenticated_with: Vec<String>,
    pub ticket_verified: bool,
    pub cookies: SessionCookies,
}

impl LoginContext for Session {
    fn connection(&self, user: &User, login: &LoginSpec) -> ConnectionInfo {
        // The address only when the asset exists: an unknown asset is an empty address.
        let address = match &login.target {
            Ok(t) => self
                .services
                .store
                .get(&ASSETS, t.asset.as_str())
                .ok()
                .flatten()
                .map(|a| {
                    let port = a.rdp.as_ref().map(|r| r.port).unwrap_or(3389);
                    (a.address, port)
                })
                .unwrap_or_default(),
            Err(_) => Default::default(),
        };
        ConnectionInfo::of_login(&self.id, Protocol::Rdp, self.client, user, login, address)
    }

    fn find_user(&self, name: &str) -> Option<User> {
        self.services.store.get(&USERS, name).ok().flatten()
    }

    fn refused(&self, user: &User, detail: String) {
        self.services.auditor.record_best_effort(
            self.entry(AuditKind::LoginFailed, detail)
                .user(user.name.to_string())
                .field("protocol", "rdp"),
        );
    }
}

impl Session {
    /// Runs the AA plugins; their questions are answered from the login options. Audits the
    /// completed login (`LoginOk`, with the plugins that accepted) or the refusal.
    pub(super) async fn run_plugins(
        &self,
        local: &LocalRdp,
        user: User,
        spec: LoginSpec,
    ) -> Option<LoggedIn> {
        let mut cookies = SessionCookies::default();
        let (user, spec, accepted_by, notes) = match &local.plugins {
            None => (user, spec, Vec::new(), Vec::new()),
            Some(plugins) => {
                let mut pending = PendingLogin::new(user, spec, "password");
                loop {
                    match login::run(self, plugins, &mut pending, &mut cookies).await {
                        Next::Accept => break,
                        Next::Deny => return None,
                        Next::Ask(question) => {
                            let Some(answer) = pending.login().option(&question.key) else {
                                let rest = match &pending.login().target {
                                    Ok(t) => format!("{}@{t}", pending.login().user),
                                    Err(_) => pending.login().user.to_string(),
                                };
                                self.refused(
                                    pending.user(),
                                    format!(
                                        "a plugin asks `{}` ({}), which an RDP login cannot prompt for: give it in the user name as `{}=<answer>@{}`",
                                        question.key,
                                        question.prompt.trim(),
                                        question.key,
                                        rest
                                    ),
                                );
                                return None;
                            };
                            let answer = answer.to_string();
                            pending.answer(answer);
                        }
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
        self.audit(
            AuditKind::LoginOk,
            format!("`{}` logged in over RDP with {how}", user.name),
            &[
                ("protocol", "rdp".into()),
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

    fn facts(&self, local: &LocalRdp, who: &LoggedIn) -> SessionFacts {
        SessionFacts {
            session_id: self.id.clone(),
            protocol: "rdp".into(),
            client: self.client,
            pairs: who.login.options.clone(),
            authenticated_with: who.authenticated_with.clone(),
            ticket_verified: who.ticket_verified,
            time: local.policy.clock().now(),
            node: None,
        }
    }

    fn audit_denial(&self, target: &TargetSpec, denied: Denied) {
        match denied {
            Denied::NotPermitted { decision, .. } => {
                let mut fields = vec![
                    ("protocol", "rdp".into()),
                    ("policies", serde_json::json!(decision.reasons())),
                ];
                if !decision.errors.is_empty() {
                    fields.push(("policy_errors", serde_json::json!(decision.errors)));
                }
                self.audit(
                    AuditKind::AccessDenied,
                    format!("policy denies an RDP session on `{target}`"),
                    &fields,
                );
            }
            other => self.audit(
                AuditKind::AccessDenied,
                other.to_string(),
                &[("protocol", "rdp".into())],
            ),
        }
    }

    fn with_request(
        &self,
        local: &LocalRdp,
        who: &LoggedIn,
        target: &TargetSpec,
        request: &AccessRequest,
    ) -> Option<TargetAuthorization> {
        let facts = RequestFacts::of(request);
        local
            .policy
            .authorize_session_with(&who.user, target, self.facts(local, who), Some(&facts))
            .map_err(|denied| self.audit_denial(target, denied))
            .ok()
    }

    /// Decides the session; returns the permit and the request it was opened under. Every
    /// refusal is audited here; the client only sees the connection refused.
    pub(super) async fn permit(
        &self,
        local: &LocalRdp,
        who: &LoggedIn,
        target: &TargetSpec,
    ) -> Option<(TargetAuthorization, Option<AccessRequest>)> {
        let workflow = local.workflow.clone();
        if let Some(token) = who.login.option(ACCESS_OPTION) {
            let Some(workflow) = &workflow else {
                self.audit(
                    AuditKind::AccessDenied,
                    "an access token was given, but requests are not served",
                    &[("protocol", "rdp".into())],
                );
                return None;
            };
            // Refusals are audited by the workflow (unknown, used, expired, someone else's).
            let request = workflow
                .redeem_access_token(&who.user, token, target, &self.id, &self.client.to_string())
                .ok()?;
            let permit = self.with_request(local, who, target, &request)?;
            return Some((permit, Some(request)));
        }
        let direct = local
            .policy
            .authorize_session(&who.user, target, self.facts(local, who));
        let denied = match direct {
            Ok(permit) => return Some((permit, None)),
            Err(denied @ Denied::NotPermitted { .. }) => denied,
            Err(other) => {
                self.audit_denial(target, other);
                return None;
            }
        };
        let Some(workflow) = workflow else {
            self.audit_denial(target, denied);
            return None;
        };
        match workflow.usable_session_request(&who.user.name, target) {
            Ok(Some(request)) => {
                let permit = self.with_request(local, who, target, &request)?;
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
            client: self.client,
            via: "rdp".into(),
            session_id: self.id.clone(),
            authenticated_with: who.authenticated_with.clone(),
        };
        let request = match workflow.create(&actor, new, "rdp").await {
            Ok(r) => r,
            Err(WorkflowError::TargetRefused(_)) => {
                self.audit_denial(target, denied);
                return None;
            }
            Err(e) => {
                self.audit(
                    AuditKind::AccessDenied,
                    format!("no direct permit, and filing an access request failed: {e}"),
                    &[("protocol", "rdp".into())],
                );
                return None;
            }
        };
        let request = if request.state == RequestState::PendingApproval {
            self.hold(&workflow, request).await?
        } else {
            request
        };
        let permit = self.with_request(local, who, target, &request)?;
        Some((permit, Some(request)))
    }

    /// Keeps the connection (the client waits after NLA) while the request is decided.
    async fn hold(
        &self,
        workflow: &Arc<Workflow>,
        request: AccessRequest,
    ) -> Option<AccessRequest> {
        let wait = workflow.settings().connect_hold();
        self.audit(
            AuditKind::RequestCreated,
            format!(
                "RDP connection held for access request {} (up to {} s)",
                request.id,
                wait.as_secs()
            ),
            &[
                ("protocol", "rdp".into()),
                ("request", request.id.clone().into()),
            ],
        );
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
        self.audit(
            AuditKind::AccessDenied,
            why,
            &[("protocol", "rdp".into()), ("request", decided.id.into())],
        );
        None
    }
}

/// Resolves when the request the session runs under stops being granted (revoked, expired,
/// checked in); never when there is none. Marks the request "session initialized".
pub(super) async fn request_ended(
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
