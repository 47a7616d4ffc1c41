//! Who may administer the gateway over the API (today: the cluster's nodes and managed
//! networks): a Cedar decision (`view_cluster`, `manage_cluster`; the resource is this gateway),
//! audited either way with the deciding policies. Nobody may by default.

use crate::requests::Actor;
use crate::{Workflow, WorkflowError};
use gatehouse_audit::Entry;
use gatehouse_core::AuditKind;
use gatehouse_policy::AdminAction;

impl Workflow {
    /// Ok when policy lets `actor` do `action`; a refusal is [`WorkflowError::Forbidden`]. Both
    /// are audited (`admin_decision`, with `allowed` and the policy ids).
    pub fn authorize_admin(&self, actor: &Actor, action: AdminAction) -> Result<(), WorkflowError> {
        let name = match action {
            AdminAction::ViewCluster => "view_cluster",
            AdminAction::ManageCluster => "manage_cluster",
        };
        let entry = |allowed: bool, detail: String| {
            Entry::new(AuditKind::AdminDecision, detail)
                .user(actor.user.name.to_string())
                .client(actor.client.to_string())
                .field("action", name)
                .field("allowed", allowed)
        };
        match self
            .policy
            .authorize_admin(&actor.user, action, actor.client)
        {
            Ok(decision) if decision.allowed => {
                self.audit(
                    entry(true, format!("`{}` may {name}", actor.user.name))
                        .field("policies", serde_json::json!(decision.reasons())),
                );
                Ok(())
            }
            Ok(decision) => {
                self.audit(
                    entry(
                        false,
                        format!("policy does not let `{}` {name}", actor.user.name),
                    )
                    .field("policies", serde_json::json!(decision.reasons())),
                );
                Err(WorkflowError::Forbidden(format!(
                    "policy does not let you {name}"
                )))
            }
            Err(e) => {
                self.audit(entry(false, e.to_string()));
                Err(WorkflowError::Forbidden(format!(
                    "policy does not let you {name}"
                )))
            }
        }
    }
}
