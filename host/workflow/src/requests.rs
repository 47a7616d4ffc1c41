//! Access requests: filing, review, release, check-in, cancellation, revocation and expiry.

use crate::notify::RequestEvent;
use crate::{Workflow, WorkflowError};
use gatehouse_audit::Entry;
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    AccessKind, AccessRequest, AuditKind, Name, RequestState, Review, SecretString, TargetSpec,
    User,
};
use gatehouse_policy::{Decision, Denied, ReleaseKind, RequestFacts, SessionFacts};
use gatehouse_store::{ACCOUNTS, REQUESTS, StoreError, USERS, account_key};
use gatehouse_vault::SecretKind;
use std::net::SocketAddr;

/// Who is acting, and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user: User,
    pub client: SocketAddr,
    /// `api`, `ssh`, `broker:<application>`.
    pub via: String,
    /// The API token id or gateway session id the action belongs to.
    pub session_id: String,
    /// How the user proved who they are (`password`, `publickey`, plugin names).
    pub authenticated_with: Vec<String>,
}

/// A request as filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub target: TargetSpec,
    pub access: AccessKind,
    pub reason: String,
    pub ticket: Option<String>,
    pub duration_minutes: Option<u32>,
    pub emergency: bool,
}

/// A released secret: the password or the OpenSSH private key. Zeroized, redacted in `Debug`.
#[derive(Debug)]
pub struct Released {
    pub request: AccessRequest,
    pub secret: SecretString,
    pub kind: AccessKind,
    /// The policies that permitted the release.
    pub policies: Vec<String>,
}

/// A request changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestChange {
    pub id: String,
    pub state: RequestState,
}

const MAX_REASON: usize = 2000;
const MAX_TICKET: usize = 128;

fn minutes(n: u32) -> u64 {
    u64::from(n) * 60_000
}

impl Workflow {
    pub(crate) fn facts(&self, actor: &Actor, ticket_verified: bool) -> SessionFacts {
        SessionFacts {
            session_id: actor.session_id.clone(),
            protocol: if actor.via == "ssh" { "ssh" } else { "api" }.into(),
            client: actor.client,
            pairs: Vec::new(),
            authenticated_with: actor.authenticated_with.clone(),
            ticket_verified,
            time: self.policy.clock().now(),
            node: None,
            destination: None,
        }
    }

    pub(crate) fn audit(&self, entry: Entry) {
        self.auditor.record_best_effort(entry);
    }

    fn entry(
        &self,
        kind: AuditKind,
        actor: &Actor,
        request: &AccessRequest,
        detail: String,
    ) -> Entry {
        Entry::new(kind, detail)
            .user(actor.user.name.to_string())
            .target(request.target())
            .client(actor.client.to_string())
            .session(actor.session_id.clone())
            .field("request", request.id.clone())
            .field("access", request.access.as_str())
            .field("via", actor.via.clone())
    }

    fn publish(&self, request: &AccessRequest) {
        // No receiver is fine: nobody is waiting.
        let _ = self.changes.send(crate::RequestChange {
            id: request.id.clone(),
            state: request.state,
        });
    }

    fn notify(&self, request: &AccessRequest, event: RequestEvent, recipients: Vec<String>) {
        if let Some(n) = &self.notifier
            && !recipients.is_empty()
        {
            n.request_event(request, event, recipients);
        }
    }

    fn requester_email(&self, request: &AccessRequest) -> Vec<String> {
        self.store
            .get(&USERS, request.requester.as_str())
            .ok()
            .flatten()
            .and_then(|u| u.email)
            .into_iter()
            .collect()
    }

    /// Addresses of the users who may approve the request now.
    fn approver_emails(&self, request: &AccessRequest) -> Vec<String> {
        let facts = RequestFacts::of(request);
        let given = i64::try_from(request.approvals.len()).unwrap_or(i64::MAX);
        let users = self.store.list(&USERS).unwrap_or_default();
        users
            .into_iter()
            .filter(|u| u.email.is_some())
            .filter(|u| {
                self.policy
                    .decide_request(u, "approve", &facts, given)
                    .is_ok_and(|d| d.allowed)
            })
            .filter_map(|u| u.email)
            .collect()
    }

    /// After a grant or an ending: bring the `approved:<id>` links up to date at once.
    fn reload_links(&self) {
        if let Err(e) = self.policy.reload() {
            tracing::error!(error = %e, "policy reload after a request change failed");
        }
    }

    fn services_allow(&self, access: AccessKind) -> Result<(), WorkflowError> {
        let services = self.store.services()?;
        if services.get(access.service()) == Some(false) {
            return Err(WorkflowError::ServiceDisabled(access.service()));
        }
        Ok(())
    }

    async fn check_ticket(
        &self,
        actor: &Actor,
        id: &str,
        target: &TargetSpec,
        ticket: &str,
    ) -> Result<bool, WorkflowError> {
        if ticket.is_empty() {
            return Ok(false);
        }
        let (Some(plugin), Some(plugins)) = (&self.settings.ticketing_plugin, &self.plugins) else {
            return Ok(false);
        };
        let request = gatehouse_plugin_host::TicketRequest {
            ticket_id: ticket.to_string(),
            session_id: id.to_string(),
            gateway_user: actor.user.name.to_string(),
            target_account: target.account.to_string(),
            target_asset: target.asset.to_string(),
            client_address: actor.client.to_string(),
        };
        match plugins.validate_ticket(plugin, &request).await {
            Ok(gatehouse_plugin_host::TicketVerdict::Valid { .. }) => Ok(true),
            Ok(gatehouse_plugin_host::TicketVerdict::Invalid { reason }) => Err(
                WorkflowError::BadInput(format!("ticket `{ticket}` was refused: {reason}")),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "ticketing plugin failed");
                Err(WorkflowError::Plugin(format!(
                    "the ticketing plugin could not check ticket `{ticket}`; nothing was filed"
                )))
            }
        }
    }

    fn validate(&self, new: &NewRequest) -> Result<(String, u32), WorkflowError> {
        if new.reason.chars().count() > MAX_REASON {
            return Err(WorkflowError::BadInput(format!(
                "reason is longer than {MAX_REASON} characters"
            )));
        }
        if new.reason.chars().any(|c| c.is_control() && c != '\n') {
            return Err(WorkflowError::BadInput(
                "reason contains control characters".into(),
            ));
        }
        let ticket = new.ticket.clone().unwrap_or_default();
        if ticket.len() > MAX_TICKET || ticket.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(WorkflowError::BadInput(format!(
                "ticket must be at most {MAX_TICKET} characters without spaces"
            )));
        }
        let duration = new
            .duration_minutes
            .unwrap_or(self.settings.default_duration_minutes);
        if duration == 0 || duration > self.settings.max_duration_minutes {
            return Err(WorkflowError::BadInput(format!(
                "duration must be between 1 and {} minutes",
                self.settings.max_duration_minutes
            )));
        }
        Ok((ticket, duration))
    }

    /// Files a request. Policies decide whether the user may ask (`request_access`, with the
    /// request as `context.request`), whether it is approved at once (`auto_approve`) and how
    /// many approvals it needs (`grant_request`).
    pub async fn create(
        &self,
        actor: &Actor,
        new: NewRequest,
        origin: &str,
    ) -> Result<AccessRequest, WorkflowError> {
        self.services_allow(new.access)?;
        let (ticket, duration) = self.validate(&new)?;
        let id = format!("r-{}", &crate::random_hex(6));
        let ticket_verified = self.check_ticket(actor, &id, &new.target, &ticket).await?;
        let now = Timestamp::now();
        let mut request = AccessRequest {
            id,
            requester: actor.user.name.clone(),
            asset: new.target.asset.clone(),
            account: new.target.account.clone(),
            access: new.access,
            reason: new.reason.clone(),
            ticket,
            ticket_verified,
            emergency: new.emergency,
            duration_minutes: duration,
            state: RequestState::PendingApproval,
            created: now,
            origin: origin.to_string(),
            approvals_needed: None,
            approvals: Vec::new(),
            denial: None,
            approval_deadline: Timestamp(
                now.0 + self.settings.approval_timeout().as_millis() as u64,
            ),
            window_start: None,
            window_end: None,
            checked_out: None,
            checked_in: None,
            ended: None,
            end_note: String::new(),
            views: 0,
            sessions: Vec::new(),
            granted_by: Vec::new(),
        };
        let facts = RequestFacts::of(&request);
        let session = self.facts(actor, ticket_verified);
        let may_ask = match self.policy.decide_access(
            &actor.user,
            &new.target,
            "request_access",
            &session,
            Some(&facts),
        ) {
            Ok(d) => d,
            Err(Denied::Policy(e)) => return Err(e.into()),
            Err(other) => {
                self.audit(self.entry(
                    AuditKind::RequestRefused,
                    actor,
                    &request,
                    other.to_string(),
                ));
                return Err(WorkflowError::TargetRefused(new.target.to_string()));
            }
        };
        if !may_ask.allowed {
            self.audit_refusal(
                actor,
                &request,
                format!("policy does not let `{}` request this", actor.user.name),
                &may_ask,
            );
            return Err(WorkflowError::TargetRefused(new.target.to_string()));
        }
        let auto = self
            .policy
            .decide_request(&actor.user, "auto_approve", &facts, 0)
            .map_err(denied_internal)?;
        let granted_by = if auto.allowed {
            Some(auto.policies.clone())
        } else {
            match self
                .policy
                .required_approvals(&actor.user, &facts)
                .map_err(denied_internal)?
            {
                Some(0) => {
                    let d = self
                        .policy
                        .decide_request(&actor.user, "grant_request", &facts, 0)
                        .map_err(denied_internal)?;
                    Some(d.policies)
                }
                Some(n) => {
                    request.approvals_needed = u32::try_from(n).ok();
                    None
                }
                None => {
                    self.audit(
                        self.entry(
                            AuditKind::RequestRefused,
                            actor,
                            &request,
                            "no approval rule can grant this request".into(),
                        )
                        .field("policies", serde_json::json!(may_ask.policies)),
                    );
                    return Err(WorkflowError::Forbidden(
                        "no approval rule can grant this request; ask an administrator".into(),
                    ));
                }
            }
        };
        if let Some(policies) = &granted_by {
            grant(&mut request, now, policies.clone());
        }
        let stored = request.clone();
        self.store.write(|txn| -> Result<(), StoreError> {
            txn.put(&REQUESTS, &stored.id, &stored)?;
            let entry = self
                .entry(
                    AuditKind::RequestCreated,
                    actor,
                    &stored,
                    format!(
                        "`{}` requested {} on `{}`",
                        stored.requester,
                        stored.access,
                        stored.target()
                    ),
                )
                .field("policies", serde_json::json!(may_ask.policies))
                .field("duration_minutes", stored.duration_minutes)
                .field("emergency", stored.emergency)
                .field("ticket_verified", stored.ticket_verified);
            self.auditor.record_in(txn, entry)?;
            Ok(())
        })?;
        if let Some(policies) = granted_by {
            self.audit(
                self.entry(
                    AuditKind::RequestGranted,
                    actor,
                    &request,
                    if auto.allowed {
                        "approved at once (auto_approve)".to_string()
                    } else {
                        "granted without approvals".to_string()
                    },
                )
                .field("policies", serde_json::json!(policies)),
            );
            self.reload_links();
        } else {
            self.notify(
                &request,
                RequestEvent::AwaitingApproval {
                    given: 0,
                    needed: request.approvals_needed.unwrap_or(0),
                },
                self.approver_emails(&request),
            );
        }
        self.publish(&request);
        Ok(request)
    }

    fn load(&self, id: &str) -> Result<AccessRequest, WorkflowError> {
        if id.is_empty() || id.len() > 64 {
            return Err(WorkflowError::NotFound(id.to_string()));
        }
        self.store
            .get(&REQUESTS, id)?
            .ok_or_else(|| WorkflowError::NotFound(id.to_string()))
    }

    fn review_decision(&self, user: &User, request: &AccessRequest, action: &str) -> Decision {
        let given = i64::try_from(request.approvals.len()).unwrap_or(i64::MAX);
        self.policy
            .decide_request(user, action, &RequestFacts::of(request), given)
            .unwrap_or_else(|e| Decision {
                allowed: false,
                policies: Vec::new(),
                errors: vec![e.to_string()],
            })
    }

    /// Whether `user` may see the request: its requester, or anyone permitted to review it.
    fn may_see(&self, user: &User, request: &AccessRequest) -> bool {
        request.requester == user.name
            || self.review_decision(user, request, "approve").allowed
            || self.review_decision(user, request, "reject").allowed
    }

    /// The approver's inbox: requests waiting for approval that `actor` may approve and has
    /// not approved yet (never their own), oldest first, each with the policies that let them.
    pub fn inbox(&self, actor: &Actor) -> Result<Vec<(AccessRequest, Vec<String>)>, WorkflowError> {
        self.expire_due();
        let mut waiting: Vec<(AccessRequest, Vec<String>)> = self
            .store
            .list(&REQUESTS)?
            .into_iter()
            .filter(|r| r.state == RequestState::PendingApproval)
            .filter(|r| r.requester != actor.user.name)
            .filter(|r| !r.approvals.iter().any(|a| a.by == actor.user.name))
            .filter_map(|r| {
                let decision = self.review_decision(&actor.user, &r, "approve");
                decision.allowed.then_some((r, decision.policies))
            })
            .collect();
        waiting.sort_by(|a, b| a.0.created.cmp(&b.0.created).then(a.0.id.cmp(&b.0.id)));
        Ok(waiting)
    }

    /// One request, if the user may see it (its requester or a reviewer); 404 otherwise.
    pub fn get(&self, actor: &Actor, id: &str) -> Result<AccessRequest, WorkflowError> {
        let request = self.current(id)?;
        if self.may_see(&actor.user, &request) {
            Ok(request)
        } else {
            Err(WorkflowError::NotFound(id.to_string()))
        }
    }

    /// Loads a request, first ending it if its deadline or window has passed.
    fn current(&self, id: &str) -> Result<AccessRequest, WorkflowError> {
        let request = self.load(id)?;
        if expiry_due(&request, Timestamp::now()).is_some() {
            self.expire_due();
            return self.load(id);
        }
        Ok(request)
    }

    /// The requests the user may see, newest first, optionally in one state.
    pub fn list(
        &self,
        actor: &Actor,
        state: Option<RequestState>,
    ) -> Result<Vec<AccessRequest>, WorkflowError> {
        self.expire_due();
        let mut all: Vec<AccessRequest> = self
            .store
            .list(&REQUESTS)?
            .into_iter()
            .filter(|r| state.is_none_or(|s| r.state == s))
            .filter(|r| self.may_see(&actor.user, r))
            .collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        Ok(all)
    }

    /// Changes a request in one transaction: `change` sees the stored record, so a concurrent
    /// change is never lost; it returns the audit entry to write with it.
    fn transition(
        &self,
        id: &str,
        change: impl FnOnce(&mut AccessRequest) -> Result<Entry, WorkflowError>,
    ) -> Result<AccessRequest, WorkflowError> {
        self.store
            .write(|txn| -> Result<AccessRequest, WorkflowError> {
                let mut request = txn
                    .get(&REQUESTS, id)?
                    .ok_or_else(|| WorkflowError::NotFound(id.to_string()))?;
                let entry = change(&mut request)?;
                txn.put(&REQUESTS, id, &request)?;
                self.auditor.record_in(txn, entry)?;
                Ok(request)
            })
    }

    /// An approval. The approver must be permitted `approve` (never the requester, if the
    /// policies say so); once `grant_request` permits the count, the request is granted.
    pub fn approve(
        &self,
        actor: &Actor,
        id: &str,
        comment: &str,
    ) -> Result<AccessRequest, WorkflowError> {
        let (request, decision) =
            self.permitted_review(actor, id, "approve", "approve", comment)?;
        let now = Timestamp::now();
        // Whether the count reaches the rule is asked before the transaction, with the count
        // the approval makes; the transaction re-checks that nobody else changed the request.
        let before = request.approvals.len();
        let count = i64::try_from(before + 1).unwrap_or(i64::MAX);
        let requester = self
            .store
            .get(&USERS, request.requester.as_str())?
            .ok_or_else(|| WorkflowError::Internal("requester no longer exists".into()))?;
        let grant_decision = self
            .policy
            .decide_request(
                &requester,
                "grant_request",
                &RequestFacts::of(&request),
                count,
            )
            .map_err(denied_internal)?;
        let updated = self.transition(id, |r| {
            if r.state != RequestState::PendingApproval {
                return Err(WorkflowError::conflict(r, "approve"));
            }
            if r.approvals.iter().any(|a| a.by == actor.user.name) {
                return Err(WorkflowError::AlreadyDone(format!(
                    "you already approved request `{}`",
                    r.id
                )));
            }
            if r.approvals.len() != before {
                return Err(WorkflowError::AlreadyDone(format!(
                    "request `{}` changed meanwhile; try again",
                    r.id
                )));
            }
            r.approvals.push(Review {
                by: actor.user.name.clone(),
                at: now,
                comment: comment.to_string(),
                policies: decision.policies.clone(),
            });
            let mut entry = self
                .entry(
                    AuditKind::RequestApproved,
                    actor,
                    r,
                    format!(
                        "`{}` approved ({} of {})",
                        actor.user.name,
                        r.approvals.len(),
                        r.approvals_needed.unwrap_or(0)
                    ),
                )
                .field("policies", serde_json::json!(decision.policies))
                .field("approvals", r.approvals.len());
            if grant_decision.allowed {
                grant(r, now, grant_decision.policies.clone());
                entry = entry
                    .field("granted", true)
                    .field("grant_policies", serde_json::json!(grant_decision.policies));
            }
            Ok(entry)
        })?;
        if updated.state.is_granted() {
            self.audit(
                self.entry(
                    AuditKind::RequestGranted,
                    actor,
                    &updated,
                    format!("granted after {} approval(s)", updated.approvals.len()),
                )
                .field("policies", serde_json::json!(updated.granted_by)),
            );
            self.reload_links();
            self.notify(
                &updated,
                RequestEvent::Approved {
                    by: actor.user.name.to_string(),
                },
                self.requester_email(&updated),
            );
        } else {
            let needed = updated.approvals_needed.unwrap_or(0);
            let given = u32::try_from(updated.approvals.len()).unwrap_or(u32::MAX);
            self.notify(
                &updated,
                RequestEvent::AwaitingApproval { given, needed },
                self.approver_emails(&updated),
            );
        }
        self.publish(&updated);
        Ok(updated)
    }

    /// What a refused review tells the reviewer: the requester learns that they cannot review
    /// their own request; anyone else who may not review it is told it does not exist.
    fn refuse_review(
        &self,
        actor: &Actor,
        request: &AccessRequest,
        action: &'static str,
        decision: Decision,
    ) -> WorkflowError {
        self.audit_refusal(
            actor,
            request,
            format!("policy does not let `{}` {action} it", actor.user.name),
            &decision,
        );
        if request.requester == actor.user.name {
            WorkflowError::Forbidden(format!(
                "you may not {action} your own request `{}`",
                request.id
            ))
        } else {
            self.forbidden_or_unseen(
                actor,
                request,
                format!("you may not {action} request `{}`", request.id),
            )
        }
    }

    /// Audits a refusal by policy: `detail`, with the refusing decision's policies and errors.
    fn audit_refusal(
        &self,
        actor: &Actor,
        request: &AccessRequest,
        detail: String,
        decision: &Decision,
    ) {
        self.audit(crate::with_refusal(
            self.entry(AuditKind::RequestRefused, actor, request, detail),
            decision,
        ));
    }

    /// What someone who may not act on a request is told: `why` (403) when they may see it,
    /// that it does not exist (404) otherwise.
    fn forbidden_or_unseen(
        &self,
        actor: &Actor,
        request: &AccessRequest,
        why: String,
    ) -> WorkflowError {
        if self.may_see(&actor.user, request) {
            WorkflowError::Forbidden(why)
        } else {
            WorkflowError::NotFound(request.id.clone())
        }
    }

    /// The request and the reviewer's permit for `action` (`approve` or `reject`), or the
    /// refusal for `verb`; the comment is checked too.
    fn permitted_review(
        &self,
        actor: &Actor,
        id: &str,
        action: &str,
        verb: &'static str,
        comment: &str,
    ) -> Result<(AccessRequest, Decision), WorkflowError> {
        let request = self.current(id)?;
        let decision = self.review_decision(&actor.user, &request, action);
        if !decision.allowed {
            return Err(self.refuse_review(actor, &request, verb, decision));
        }
        check_comment(comment)?;
        Ok((request, decision))
    }

    /// A denial by a permitted reviewer (`reject`). Any one denial ends the request.
    pub fn deny(
        &self,
        actor: &Actor,
        id: &str,
        comment: &str,
    ) -> Result<AccessRequest, WorkflowError> {
        let (_, decision) = self.permitted_review(actor, id, "reject", "deny", comment)?;
        let now = Timestamp::now();
        let updated = self.transition(id, |r| {
            if r.state != RequestState::PendingApproval {
                return Err(WorkflowError::conflict(r, "deny"));
            }
            r.state = RequestState::Denied;
            r.ended = Some(now);
            r.denial = Some(Review {
                by: actor.user.name.clone(),
                at: now,
                comment: comment.to_string(),
                policies: decision.policies.clone(),
            });
            Ok(self
                .entry(
                    AuditKind::RequestDenied,
                    actor,
                    r,
                    format!("`{}` denied it", actor.user.name),
                )
                .field("policies", serde_json::json!(decision.policies))
                .field("comment", comment.to_string()))
        })?;
        self.tell_requester(
            &updated,
            RequestEvent::Denied {
                by: actor.user.name.to_string(),
                comment: comment.to_string(),
            },
        );
        Ok(updated)
    }

    /// Refuses anyone but the requester: 403 with `why` for someone who may see the request,
    /// 404 for anyone else.
    fn requester_only(
        &self,
        actor: &Actor,
        request: &AccessRequest,
        why: &str,
    ) -> Result<(), WorkflowError> {
        if request.requester == actor.user.name {
            Ok(())
        } else {
            Err(self.forbidden_or_unseen(actor, request, why.to_string()))
        }
    }

    /// Tells the requester (email) and the waiters (SSH hold, running sessions) about a change.
    fn tell_requester(&self, request: &AccessRequest, event: RequestEvent) {
        self.notify(request, event, self.requester_email(request));
        self.publish(request);
    }

    /// The requester withdraws a request that was not used yet.
    pub fn cancel(&self, actor: &Actor, id: &str) -> Result<AccessRequest, WorkflowError> {
        let request = self.current(id)?;
        self.requester_only(actor, &request, "only the requester may cancel a request")?;
        let now = Timestamp::now();
        let updated = self.transition(id, |r| {
            if !matches!(
                r.state,
                RequestState::PendingApproval | RequestState::Available
            ) {
                return Err(WorkflowError::conflict(r, "cancel"));
            }
            r.state = RequestState::Cancelled;
            r.ended = Some(now);
            r.end_note = format!("cancelled by {}", actor.user.name);
            Ok(self.entry(
                AuditKind::RequestCancelled,
                actor,
                r,
                "cancelled by the requester".into(),
            ))
        })?;
        self.reload_links();
        self.publish(&updated);
        Ok(updated)
    }

    /// A reviewer (permitted `reject`) takes back granted access; running sessions end.
    pub fn revoke(
        &self,
        actor: &Actor,
        id: &str,
        comment: &str,
    ) -> Result<AccessRequest, WorkflowError> {
        let (_, decision) = self.permitted_review(actor, id, "reject", "revoke", comment)?;
        let now = Timestamp::now();
        let updated = self.transition(id, |r| {
            if !r.state.is_granted() {
                return Err(WorkflowError::conflict(r, "revoke"));
            }
            r.state = RequestState::Revoked;
            r.ended = Some(now);
            r.end_note = format!("revoked by {}: {comment}", actor.user.name);
            Ok(self
                .entry(
                    AuditKind::RequestRevoked,
                    actor,
                    r,
                    format!("`{}` revoked it", actor.user.name),
                )
                .field("policies", serde_json::json!(decision.policies)))
        })?;
        self.flag_change_if_released(&updated);
        self.reload_links();
        self.tell_requester(
            &updated,
            RequestEvent::Revoked {
                by: actor.user.name.to_string(),
            },
        );
        Ok(updated)
    }

    /// Shows the requester the password or private key of a granted request, inside its
    /// window. Every view is audited with the policies that permitted it.
    pub fn release(&self, actor: &Actor, id: &str) -> Result<Released, WorkflowError> {
        let request = self.current(id)?;
        self.requester_only(
            actor,
            &request,
            "only the requester sees the released secret",
        )?;
        let kind = match request.access {
            AccessKind::Password => ReleaseKind::Password,
            AccessKind::PrivateKey => ReleaseKind::PrivateKey,
            AccessKind::Session => {
                return Err(WorkflowError::BadInput(format!(
                    "request `{id}` is for a session; it releases no secret (ask for an access string)"
                )));
            }
        };
        let now = Timestamp::now();
        if !request.usable_at(now) {
            return Err(WorkflowError::conflict(&request, "release its secret"));
        }
        let target = TargetSpec {
            account: request.account.clone(),
            asset: request.asset.clone(),
        };
        let facts = RequestFacts::of(&request);
        let decision = self
            .policy
            .authorize_release(
                &actor.user,
                &target,
                kind,
                &self.facts(actor, request.ticket_verified),
                Some(&facts),
            )
            .map_err(denied_internal)?;
        if !decision.allowed {
            self.audit_refusal(
                actor,
                &request,
                "policy does not release the secret".into(),
                &decision,
            );
            return Err(WorkflowError::Forbidden(format!(
                "policy does not release the {} of `{}` to you",
                request.access,
                request.target()
            )));
        }
        let account = self
            .store
            .get(
                &ACCOUNTS,
                &account_key(request.asset.as_str(), request.account.as_str()),
            )?
            .ok_or_else(|| WorkflowError::Internal("the account no longer exists".into()))?;
        let (sealed, slot) = match kind {
            ReleaseKind::Password => (account.password.as_ref(), SecretKind::Password),
            ReleaseKind::PrivateKey => (account.private_key.as_ref(), SecretKind::PrivateKey),
        };
        let Some(sealed) = sealed else {
            return Err(WorkflowError::Forbidden(format!(
                "the vault holds no {} for `{}`",
                request.access,
                request.target()
            )));
        };
        let secret = self.vault.open_text(&account.id, slot, sealed)?;
        let updated = self.transition(id, |r| {
            if !r.usable_at(now) {
                return Err(WorkflowError::conflict(r, "release its secret"));
            }
            r.state = RequestState::CheckedOut;
            r.checked_out.get_or_insert(now);
            r.views += 1;
            Ok(self
                .entry(
                    AuditKind::CredentialReleased,
                    actor,
                    r,
                    format!(
                        "{} shown to `{}` (view {})",
                        r.access, actor.user.name, r.views
                    ),
                )
                .field("policies", serde_json::json!(decision.policies))
                .field("view", r.views))
        })?;
        self.publish(&updated);
        Ok(Released {
            request: updated,
            secret,
            kind: request.access,
            policies: decision.policies,
        })
    }

    /// Ends a granted request early: the requester, or a reviewer. When the account changes
    /// its credential after check-in and a secret was shown, the change is flagged as due and
    /// the request stays `checked_in` until the credential lifecycle commits it.
    pub fn check_in(&self, actor: &Actor, id: &str) -> Result<AccessRequest, WorkflowError> {
        let request = self.current(id)?;
        if request.requester != actor.user.name
            && !self
                .review_decision(&actor.user, &request, "reject")
                .allowed
        {
            return Err(self.forbidden_or_unseen(
                actor,
                &request,
                "only the requester or a reviewer may check it in".into(),
            ));
        }
        let account = self.store.get(
            &ACCOUNTS,
            &account_key(request.asset.as_str(), request.account.as_str()),
        )?;
        let now = Timestamp::now();
        let updated = self.transition(id, |r| {
            if !r.state.is_granted() {
                return Err(WorkflowError::conflict(r, "check in"));
            }
            let change = change_due_after(r, account.as_ref());
            r.state = if change {
                RequestState::CheckedIn
            } else {
                RequestState::Complete
            };
            r.checked_in = Some(now);
            if !change {
                r.ended = Some(now);
            }
            Ok(self
                .entry(
                    AuditKind::RequestCheckedIn,
                    actor,
                    r,
                    format!("checked in by `{}`", actor.user.name),
                )
                .field("credential_change_due", change))
        })?;
        self.flag_change_if_released(&updated);
        self.reload_links();
        self.publish(&updated);
        Ok(updated)
    }

    /// Marks the account's credential change as due after a released secret stops being
    /// valid (check-in, expiry, revocation), when the account asks for it.
    fn flag_change_if_released(&self, request: &AccessRequest) {
        if request.views == 0 || request.access == AccessKind::Session {
            return;
        }
        let key = account_key(request.asset.as_str(), request.account.as_str());
        let flagged = self.store.write(|txn| -> Result<bool, StoreError> {
            let Some(mut account) = txn.get(&ACCOUNTS, &key)? else {
                return Ok(false);
            };
            if !account.change_after_checkin {
                return Ok(false);
            }
            account.change_due.get_or_insert(Timestamp::now());
            txn.put(&ACCOUNTS, &key, &account)?;
            Ok(true)
        });
        match flagged {
            Ok(true) => self.audit(
                Entry::new(
                    AuditKind::RequestCheckedIn,
                    format!(
                        "credential change after check-in is due for `{}`",
                        request.target()
                    ),
                )
                .user(request.requester.to_string())
                .target(request.target())
                .field("request", request.id.clone()),
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "cannot flag the credential change"),
        }
    }

    /// Completes checked-in requests whose account's credential change is no longer due (the
    /// credential lifecycle committed it). Returns how many completed.
    pub fn complete_changed(&self) -> usize {
        let now = Timestamp::now();
        let any = self.store.read(|txn| -> Result<bool, StoreError> {
            Ok(txn
                .list(&REQUESTS)?
                .iter()
                .any(|r| r.state == RequestState::CheckedIn))
        });
        if !matches!(any, Ok(true)) {
            return 0;
        }
        let result = self
            .store
            .write(|txn| -> Result<Vec<AccessRequest>, StoreError> {
                let mut done = Vec::new();
                for (id, mut r) in txn.entries(&REQUESTS)? {
                    if r.state != RequestState::CheckedIn {
                        continue;
                    }
                    let key = account_key(r.asset.as_str(), r.account.as_str());
                    let due = txn.get(&ACCOUNTS, &key)?.and_then(|a| a.change_due);
                    if due.is_some() {
                        continue;
                    }
                    r.state = RequestState::Complete;
                    r.ended = Some(now);
                    txn.put(&REQUESTS, &id, &r)?;
                    self.auditor.record_in(
                        txn,
                        Entry::new(
                            AuditKind::RequestCheckedIn,
                            "complete: the credential was changed after check-in",
                        )
                        .user(r.requester.to_string())
                        .target(r.target())
                        .field("request", r.id.clone()),
                    )?;
                    done.push(r);
                }
                Ok(done)
            });
        match result {
            Ok(done) => {
                for r in &done {
                    self.publish(r);
                }
                done.len()
            }
            Err(e) => {
                tracing::error!(error = %e, "completing checked-in requests");
                0
            }
        }
    }

    /// Ends requests whose approval deadline or window has passed. Returns how many ended.
    pub fn expire_due(&self) -> usize {
        self.complete_changed();
        let now = Timestamp::now();
        let due: Vec<AccessRequest> = match self.store.list(&REQUESTS) {
            Ok(all) => all
                .into_iter()
                .filter(|r| expiry_due(r, now).is_some())
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read requests for expiry");
                return 0;
            }
        };
        let mut ended = 0;
        let mut links_changed = false;
        for request in due {
            let result = self
                .store
                .write(|txn| -> Result<Option<AccessRequest>, StoreError> {
                    let Some(mut r) = txn.get(&REQUESTS, &request.id)? else {
                        return Ok(None);
                    };
                    let Some(why) = expiry_due(&r, now) else {
                        return Ok(None);
                    };
                    r.state = RequestState::Expired;
                    r.ended = Some(now);
                    r.end_note = why.to_string();
                    txn.put(&REQUESTS, &r.id, &r)?;
                    self.auditor.record_in(
                        txn,
                        Entry::new(AuditKind::RequestExpired, why)
                            .user(r.requester.to_string())
                            .target(r.target())
                            .field("request", r.id.clone())
                            .field("access", r.access.as_str()),
                    )?;
                    Ok(Some(r))
                });
            match result {
                Ok(Some(r)) => {
                    ended += 1;
                    links_changed |= request.state.is_granted();
                    self.flag_change_if_released(&r);
                    self.notify(
                        &r,
                        RequestEvent::Expired {
                            why: r.end_note.clone(),
                        },
                        self.requester_email(&r),
                    );
                    self.publish(&r);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot expire request"),
            }
        }
        if links_changed {
            self.reload_links();
        }
        ended
    }

    /// The requester's granted session request for `target` usable now, if any (newest first).
    pub fn usable_session_request(
        &self,
        user: &Name,
        target: &TargetSpec,
    ) -> Result<Option<AccessRequest>, WorkflowError> {
        let now = Timestamp::now();
        let mut found: Vec<AccessRequest> = self
            .store
            .list(&REQUESTS)?
            .into_iter()
            .filter(|r| {
                r.requester == *user
                    && r.access == AccessKind::Session
                    && r.asset == target.asset
                    && r.account == target.account
                    && r.usable_at(now)
            })
            .collect();
        found.sort_by_key(|r| std::cmp::Reverse(r.created));
        Ok(found.into_iter().next())
    }

    /// A gateway session started under a request: it is now "session initialized".
    pub fn session_started(&self, request_id: &str, session_id: &str) {
        let now = Timestamp::now();
        let result = self
            .store
            .write(|txn| -> Result<Option<AccessRequest>, StoreError> {
                let Some(mut r) = txn.get(&REQUESTS, request_id)? else {
                    return Ok(None);
                };
                r.state = RequestState::CheckedOut;
                r.checked_out.get_or_insert(now);
                r.sessions.push(session_id.to_string());
                txn.put(&REQUESTS, request_id, &r)?;
                Ok(Some(r))
            });
        match result {
            Ok(Some(r)) => self.publish(&r),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot record the session on its request"),
        }
    }

    /// Waits until the request leaves `pending_approval` or `timeout` passes; returns the
    /// request as it then is.
    pub async fn wait_for_decision(
        &self,
        id: &str,
        timeout: std::time::Duration,
    ) -> Result<AccessRequest, WorkflowError> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let request = self.current(id)?;
            if request.state != RequestState::PendingApproval {
                return Ok(request);
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(request);
            }
            // Wake on a change of this request, and at least every few seconds (expiry).
            let wake = remaining.min(std::time::Duration::from_secs(5));
            match tokio::time::timeout(wake, changes.recv()).await {
                Ok(Ok(change)) if change.id != id => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    tokio::time::sleep(wake).await;
                }
                _ => {}
            }
        }
    }
}

fn grant(request: &mut AccessRequest, now: Timestamp, policies: Vec<String>) {
    request.state = RequestState::Available;
    request.window_start = Some(now);
    request.window_end = Some(Timestamp(now.0 + minutes(request.duration_minutes)));
    request.granted_by = policies;
}

fn change_due_after(request: &AccessRequest, account: Option<&gatehouse_core::Account>) -> bool {
    request.views > 0
        && request.access != AccessKind::Session
        && account.is_some_and(|a| a.change_after_checkin)
}

/// Why the request must end now, if it must.
fn expiry_due(request: &AccessRequest, now: Timestamp) -> Option<&'static str> {
    match request.state {
        RequestState::PendingApproval if now >= request.approval_deadline => {
            Some("no decision before the approval deadline")
        }
        s if s.is_granted() && request.window_end.is_some_and(|end| now >= end) => {
            Some("the access window ended")
        }
        _ => None,
    }
}

fn check_comment(comment: &str) -> Result<(), WorkflowError> {
    if comment.chars().count() > MAX_REASON {
        return Err(WorkflowError::BadInput(format!(
            "comment is longer than {MAX_REASON} characters"
        )));
    }
    Ok(())
}

fn denied_internal(e: Denied) -> WorkflowError {
    match e {
        Denied::Policy(p) => p.into(),
        other => WorkflowError::Internal(other.to_string()),
    }
}
