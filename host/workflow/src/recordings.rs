//! Who may watch which session recording: a Cedar decision (`view_recording`, the resource is
//! the account the session logged in to), audited either way. Nothing is shown by default.

use crate::requests::Actor;
use crate::{Workflow, WorkflowError};
use gatehouse_audit::Entry;
use gatehouse_core::{AuditKind, SessionRecord, TargetSpec};
use gatehouse_policy::Denied;
use gatehouse_store::SESSIONS;

impl Workflow {
    /// Whether `actor` may watch `record` (no audit: for listing).
    pub fn may_view_recording(&self, actor: &Actor, record: &SessionRecord) -> bool {
        self.view_decision(actor, record)
            .is_ok_and(|decision| decision.allowed)
    }

    fn view_decision(
        &self,
        actor: &Actor,
        record: &SessionRecord,
    ) -> Result<gatehouse_policy::Decision, Denied> {
        self.session_decision(actor, record, "view_recording")
    }

    /// Cedar's decision on `action` for `actor` over `record`'s account.
    fn session_decision(
        &self,
        actor: &Actor,
        record: &SessionRecord,
        action: &str,
    ) -> Result<gatehouse_policy::Decision, Denied> {
        let target: TargetSpec = format!("{}@{}", record.account, record.asset)
            .parse()
            .map_err(|_| Denied::NoSuchAccount(format!("{}@{}", record.account, record.asset)))?;
        let facts = self.facts(actor, false);
        self.policy
            .decide_access(&actor.user, &target, action, &facts, None)
    }

    /// Session `id` when Cedar lets `actor` do `action` on it, audited by `entry(allowed,
    /// detail)` with the deciding policies; `allowed` and `refused` are the details. An unknown
    /// session and a refused one are the same `SessionNotFound`.
    fn decide_on_session(
        &self,
        actor: &Actor,
        id: &str,
        action: &str,
        (allowed, refused): (String, String),
        entry: impl Fn(bool, String) -> Entry,
    ) -> Result<SessionRecord, WorkflowError> {
        let not_found = || WorkflowError::SessionNotFound(id.to_string());
        let record: Option<SessionRecord> = self.store.get(&SESSIONS, id)?;
        let Some(record) = record else {
            self.audit(entry(false, format!("no session `{id}`")));
            return Err(not_found());
        };
        let target = format!("{}@{}", record.account, record.asset);
        match self.session_decision(actor, &record, action) {
            Ok(decision) => {
                let detail = if decision.allowed { allowed } else { refused };
                self.audit(
                    entry(decision.allowed, detail)
                        .target(target)
                        .field("policies", serde_json::json!(decision.reasons())),
                );
                if decision.allowed {
                    Ok(record)
                } else {
                    Err(not_found())
                }
            }
            Err(e) => {
                self.audit(entry(false, e.to_string()).target(target));
                Err(not_found())
            }
        }
    }

    /// The session `id` if `actor` may watch it; audited (`recording_viewed` with the policy
    /// ids, or `recording_refused`). An unknown session and a refused one look the same.
    pub fn view_recording(
        &self,
        actor: &Actor,
        id: &str,
        what: &str,
    ) -> Result<SessionRecord, WorkflowError> {
        let user = &actor.user.name;
        self.decide_on_session(
            actor,
            id,
            "view_recording",
            (
                format!("`{user}` watched session `{id}` ({what})"),
                format!("policy does not let `{user}` watch session `{id}`"),
            ),
            |allowed, detail| {
                let kind = if allowed {
                    AuditKind::RecordingViewed
                } else {
                    AuditKind::RecordingRefused
                };
                Entry::new(kind, detail)
                    .user(user.to_string())
                    .client(actor.client.to_string())
                    .field("session", id.to_string())
                    .field("what", what.to_string())
            },
        )
    }

    /// The session `id` if `actor` may join it live (`watch_session` read-only, `join_session`
    /// with the keyboard), audited as an `admin_decision` with the deciding policies either way.
    /// An unknown session and a refused one are the same `SessionNotFound`.
    pub fn authorize_join(
        &self,
        actor: &Actor,
        id: &str,
        join: &gatehouse_core::JoinSpec,
    ) -> Result<SessionRecord, WorkflowError> {
        let user = &actor.user.name;
        let action = join.action();
        let mode = join.mode();
        self.decide_on_session(
            actor,
            id,
            action,
            (
                format!("`{user}` may join session `{id}` ({mode})"),
                format!("policy does not let `{user}` join session `{id}` ({mode})"),
            ),
            |allowed, detail| {
                Entry::new(AuditKind::AdminDecision, detail)
                    .user(user.to_string())
                    .client(actor.client.to_string())
                    .field("action", action)
                    .field("allowed", allowed)
                    .field("session", id.to_string())
            },
        )
    }

    /// The session `id` if `actor` may end it (`terminate_session`), audited as an
    /// `admin_decision` with the deciding policies either way. An unknown session and a refused
    /// one are the same `SessionNotFound`.
    pub fn authorize_terminate(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<SessionRecord, WorkflowError> {
        let user = &actor.user.name;
        self.decide_on_session(
            actor,
            id,
            "terminate_session",
            (
                format!("`{user}` may end session `{id}`"),
                format!("policy does not let `{user}` end session `{id}`"),
            ),
            |allowed, detail| {
                Entry::new(AuditKind::AdminDecision, detail)
                    .user(user.to_string())
                    .client(actor.client.to_string())
                    .field("action", "terminate_session")
                    .field("allowed", allowed)
                    .field("session", id.to_string())
            },
        )
    }
}
