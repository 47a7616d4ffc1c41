//! How a session gets its permit. In order:
//!
//! 1. an `access=<token>` login option (an access string from a passwords-initiated request):
//!    redeemed once, then the session is decided with that request in play;
//! 2. the policies directly (`ssh_session`);
//! 3. a granted session request of the user for this target, in play;
//! 4. when the user may ask (`request_access`), a new request is filed and the connection is
//!    held, with the request id on the user's screen, until it is decided (sessions-initiated).
//!
//! A session opened under a request ends when the request does (revoked, expired, checked in).

use crate::messages::Refusal;
use crate::permit::Permit;
use crate::session::SessionShared;
use crate::{Authority, LocalAuthority};
use gatehouse_core::{
    AccessKind, AccessRequest, AuditKind, LoginSpec, RequestState, TargetSpec, User,
};
use gatehouse_policy::{Denied, RequestFacts, SessionFacts, TargetAuthorization};
use gatehouse_workflow::{Actor, NewRequest, WorkflowError};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The login option carrying an access-string token.
const ACCESS_OPTION: &str = "access";

fn option<'a>(login: &'a LoginSpec, key: &str) -> Option<&'a str> {
    login
        .options
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub(crate) fn minutes_text(d: std::time::Duration) -> String {
    let m = d.as_secs() / 60;
    if m >= 1 {
        format!("{m} min")
    } else {
        format!("{} s", d.as_secs())
    }
}

impl SessionShared {
    pub(crate) fn facts(&self, local: &LocalAuthority, login: &LoginSpec) -> SessionFacts {
        SessionFacts {
            session_id: self.id.clone(),
            protocol: "ssh".into(),
            client: self.client,
            pairs: login.options.clone(),
            authenticated_with: self.authenticated_with(),
            ticket_verified: self.ticket_verified.load(Ordering::Relaxed),
            time: local.policy.clock().now(),
            node: None,
            destination: self.arrival.get().map(|a| a.destination),
        }
    }

    fn audit_denial(&self, target: &TargetSpec, denied: Denied) -> Refusal {
        match denied {
            Denied::Policy(e) => {
                self.audit(AuditKind::AccessDenied, format!("policy error: {e}"), &[]);
                Refusal::Internal {
                    session: self.id.clone(),
                }
            }
            Denied::NotPermitted { decision, .. } => {
                let mut fields = vec![("policies", serde_json::json!(decision.reasons()))];
                if !decision.errors.is_empty() {
                    fields.push(("policy_errors", serde_json::json!(decision.errors)));
                }
                self.audit(
                    AuditKind::AccessDenied,
                    format!("policy denies a session on `{target}`"),
                    &fields,
                );
                Refusal::not_permitted(target)
            }
            other => {
                self.audit(AuditKind::AccessDenied, other.to_string(), &[]);
                Refusal::not_permitted(target)
            }
        }
    }

    fn with_request(
        &self,
        local: &LocalAuthority,
        user: &User,
        login: &LoginSpec,
        target: &TargetSpec,
        request: &AccessRequest,
    ) -> Result<TargetAuthorization, Refusal> {
        let facts = RequestFacts::of(request);
        local
            .policy
            .authorize_session_with(user, target, self.facts(local, login), Some(&facts))
            .map_err(|denied| self.audit_denial(target, denied))
    }

    /// Decides the session; returns the permit and the id of the request it was opened under.
    pub(crate) async fn authorize(
        self: &Arc<Self>,
        user: &User,
        login: &LoginSpec,
        target: &TargetSpec,
    ) -> Result<(Permit, Option<String>), Refusal> {
        match &self.services.authority {
            Authority::Local(local) => {
                let (permit, request) = self.authorize_local(local, user, login, target).await?;
                Ok((Permit::Local(Box::new(permit)), request.map(|r| r.id)))
            }
            Authority::Remote(control) => self.authorize_remote(control, login, target).await,
        }
    }

    async fn authorize_local(
        self: &Arc<Self>,
        local: &LocalAuthority,
        user: &User,
        login: &LoginSpec,
        target: &TargetSpec,
    ) -> Result<(TargetAuthorization, Option<AccessRequest>), Refusal> {
        let workflow = local.workflow.clone();
        if let Some(token) = option(login, ACCESS_OPTION) {
            let Some(workflow) = &workflow else {
                return Err(Refusal::AccessToken);
            };
            let request = workflow
                .redeem_access_token(user, token, target, &self.id, &self.client.to_string())
                .map_err(|_| Refusal::AccessToken)?;
            let permit = self.with_request(local, user, login, target, &request)?;
            return Ok((permit, Some(request)));
        }
        let direct = local
            .policy
            .authorize_session(user, target, self.facts(local, login));
        let denied = match direct {
            Ok(permit) => return Ok((permit, None)),
            Err(denied @ Denied::NotPermitted { .. }) => denied,
            Err(other) => return Err(self.audit_denial(target, other)),
        };
        let Some(workflow) = workflow else {
            return Err(self.audit_denial(target, denied));
        };
        match workflow.usable_session_request(&user.name, target) {
            Ok(Some(request)) => {
                let permit = self.with_request(local, user, login, target, &request)?;
                return Ok((permit, Some(request)));
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "looking up session requests"),
        }
        let new = NewRequest {
            target: target.clone(),
            access: AccessKind::Session,
            reason: option(login, "reason").unwrap_or("").to_string(),
            ticket: option(login, "ticket").map(str::to_string),
            duration_minutes: option(login, "duration").and_then(|d| d.parse().ok()),
            emergency: option(login, "emergency").is_some_and(|v| v == "yes" || v == "true"),
        };
        let actor = Actor {
            user: user.clone(),
            client: self.client,
            via: "ssh".into(),
            session_id: self.id.clone(),
            authenticated_with: self.authenticated_with(),
        };
        let request = match workflow.create(&actor, new, "ssh").await {
            Ok(r) => r,
            Err(WorkflowError::ServiceDisabled(service)) => {
                self.audit(
                    AuditKind::AccessDenied,
                    format!("no direct permit, and the {service} service is disabled"),
                    &[],
                );
                return Err(Refusal::ServiceDisabled(format!(
                    "you need an approved request for `{target}`, and session requests are disabled"
                )));
            }
            Err(WorkflowError::TargetRefused(_)) => return Err(self.audit_denial(target, denied)),
            Err(e) => {
                self.audit(
                    AuditKind::AccessDenied,
                    format!("filing an access request failed: {e}"),
                    &[],
                );
                return Err(match e {
                    WorkflowError::BadInput(message)
                    | WorkflowError::Forbidden(message)
                    | WorkflowError::Plugin(message) => Refusal::ServiceDisabled(message),
                    _ => Refusal::Internal {
                        session: self.id.clone(),
                    },
                });
            }
        };
        let request = if request.state == RequestState::PendingApproval {
            self.hold(&workflow, request).await?
        } else {
            request
        };
        let permit = self.with_request(local, user, login, target, &request)?;
        Ok((permit, Some(request)))
    }

    /// Keeps the connection while the request is decided. Returns the granted request.
    async fn hold(
        self: &Arc<Self>,
        workflow: &Arc<gatehouse_workflow::Workflow>,
        request: AccessRequest,
    ) -> Result<AccessRequest, Refusal> {
        let wait = workflow.settings().connect_hold();
        let needed = request.approvals_needed.unwrap_or(1);
        self.notice(format!(
            "gatehouse: access request {} needs {} approval{}; waiting up to {} (Ctrl-C to stop; an approval later still lets you connect)",
            request.id,
            needed,
            if needed == 1 { "" } else { "s" },
            minutes_text(wait)
        ));
        self.audit(
            AuditKind::RequestCreated,
            format!("connection held for access request {}", request.id),
            &[("request", request.id.clone().into())],
        );
        let decided = tokio::select! {
            decided = workflow.wait_for_decision(&request.id, wait) => decided,
            _ = self.closed() => {
                return Err(Refusal::RequestNotGranted {
                    id: request.id.clone(),
                    why: "the connection closed while waiting".into(),
                });
            }
        };
        let decided = decided.map_err(|e| {
            tracing::error!(error = %e, "waiting for the request");
            Refusal::Internal {
                session: self.id.clone(),
            }
        })?;
        match decided.state {
            s if s.is_granted() => {
                let by = decided
                    .approvals
                    .iter()
                    .map(|a| a.by.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.notice(format!(
                    "gatehouse: access request {} approved by {by}; connecting",
                    decided.id
                ));
                Ok(decided)
            }
            RequestState::Denied => {
                let (by, comment) = decided
                    .denial
                    .as_ref()
                    .map(|d| (d.by.to_string(), d.comment.clone()))
                    .unwrap_or_default();
                Err(Refusal::RequestDenied {
                    id: decided.id,
                    by,
                    comment,
                })
            }
            RequestState::PendingApproval => Err(Refusal::RequestNotGranted {
                id: decided.id,
                why: format!(
                    "not decided within {}; it stays open, connect again once it is approved",
                    minutes_text(wait)
                ),
            }),
            other => Err(Refusal::RequestNotGranted {
                id: decided.id,
                why: format!("it is {other}"),
            }),
        }
    }

    /// Ends the session when its request ends (revoked, expired, checked in).
    pub(crate) fn watch_request(self: &Arc<Self>, request_id: String) {
        let Some(workflow) = self.services.local().and_then(|l| l.workflow.clone()) else {
            return;
        };
        workflow.session_started(&request_id, &self.id);
        let mut changes = workflow.subscribe();
        let shared = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shared.closed() => return,
                    change = changes.recv() => match change {
                        Ok(c) if c.id == request_id && !c.state.is_granted() => {
                            shared.end_for_request(&request_id, c.state).await;
                            return;
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            if let Ok(Some(r)) = workflow.store().get(&gatehouse_store::REQUESTS, &request_id)
                                && !r.state.is_granted()
                            {
                                shared.end_for_request(&request_id, r.state).await;
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    // Expiry happens by the clock; the sweeper publishes it, this is a backstop.
                    _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {
                        workflow.expire_due();
                    }
                }
            }
        });
    }

    async fn end_for_request(&self, request_id: &str, state: RequestState) {
        let why = format!("access request {request_id} is {state}; the session ends");
        self.audit(
            AuditKind::SessionEnded,
            why.clone(),
            &[("request", request_id.into())],
        );
        self.disconnect(&format!("gatehouse: {why}")).await;
    }
}
