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
        let target: TargetSpec = format!("{}@{}", record.account, record.asset)
            .parse()
            .map_err(|_| Denied::NoSuchAccount(format!("{}@{}", record.account, record.asset)))?;
        let facts = self.facts(actor, false);
        self.policy
            .decide_access(&actor.user, &target, "view_recording", &facts, None)
    }

    /// The session `id` if `actor` may watch it; audited (`recording_viewed` with the policy
    /// ids, or `recording_refused`). An unknown session and a refused one look the same.
    pub fn view_recording(
        &self,
        actor: &Actor,
        id: &str,
        what: &str,
    ) -> Result<SessionRecord, WorkflowError> {
        let not_found = || WorkflowError::SessionNotFound(id.to_string());
        let record: Option<SessionRecord> = self.store.get(&SESSIONS, id)?;
        let entry = |kind: AuditKind, detail: String| {
            Entry::new(kind, detail)
                .user(actor.user.name.to_string())
                .client(actor.client.to_string())
                .field("session", id.to_string())
                .field("what", what.to_string())
        };
        let Some(record) = record else {
            self.audit(entry(
                AuditKind::RecordingRefused,
                format!("no session `{id}`"),
            ));
            return Err(not_found());
        };
        let target = format!("{}@{}", record.account, record.asset);
        match self.view_decision(actor, &record) {
            Ok(decision) if decision.allowed => {
                self.audit(
                    entry(
                        AuditKind::RecordingViewed,
                        format!("`{}` watched session `{id}` ({what})", actor.user.name),
                    )
                    .target(target)
                    .field("policies", serde_json::json!(decision.reasons())),
                );
                Ok(record)
            }
            Ok(decision) => {
                self.audit(
                    entry(
                        AuditKind::RecordingRefused,
                        format!(
                            "policy does not let `{}` watch session `{id}`",
                            actor.user.name
                        ),
                    )
                    .target(target)
                    .field("policies", serde_json::json!(decision.reasons())),
                );
                Err(not_found())
            }
            Err(e) => {
                self.audit(entry(AuditKind::RecordingRefused, e.to_string()).target(target));
                Err(not_found())
            }
        }
    }

    /// The session `id` if `actor` may end it (`terminate_session`), audited as an
    /// `admin_decision` with the deciding policies either way. An unknown session and a refused
    /// one are the same `NotFound`.
    pub fn authorize_terminate(
        &self,
        actor: &Actor,
        id: &str,
    ) -> Result<SessionRecord, WorkflowError> {
        let not_found = || WorkflowError::SessionNotFound(id.to_string());
        let entry = |allowed: bool, detail: String| {
            Entry::new(AuditKind::AdminDecision, detail)
                .user(actor.user.name.to_string())
                .client(actor.client.to_string())
                .field("action", "terminate_session")
                .field("allowed", allowed)
                .field("session", id.to_string())
        };
        let record: Option<SessionRecord> = self.store.get(&SESSIONS, id)?;
        let Some(record) = record else {
            self.audit(entry(false, format!("no session `{id}` to end")));
            return Err(not_found());
        };
        let target = format!("{}@{}", record.account, record.asset);
        let decision = target
            .parse::<TargetSpec>()
            .map_err(|_| Denied::NoSuchAccount(target.clone()))
            .and_then(|spec| {
                let facts = self.facts(actor, false);
                self.policy
                    .decide_access(&actor.user, &spec, "terminate_session", &facts, None)
            });
        match decision {
            Ok(decision) if decision.allowed => {
                self.audit(
                    entry(
                        true,
                        format!("`{}` may end session `{id}`", actor.user.name),
                    )
                    .target(target)
                    .field("policies", serde_json::json!(decision.reasons())),
                );
                Ok(record)
            }
            Ok(decision) => {
                self.audit(
                    entry(
                        false,
                        format!(
                            "policy does not let `{}` end session `{id}`",
                            actor.user.name
                        ),
                    )
                    .target(target)
                    .field("policies", serde_json::json!(decision.reasons())),
                );
                Err(not_found())
            }
            Err(e) => {
                self.audit(entry(false, e.to_string()).target(target));
                Err(not_found())
            }
        }
    }
}
