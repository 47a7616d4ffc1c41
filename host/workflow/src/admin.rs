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
        let name = action.name();
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

impl Workflow {
    /// Which admin actions policy lets `user` take now (`view_cluster`, `manage_cluster`,
    /// `view_policies`, `manage_services`, `manage_plugins`): what the portal shows at sign-in.
    /// One audit event with the actions and each decision's policies; every admin call is still
    /// decided (and audited) on its own.
    pub fn admin_capabilities(
        &self,
        user: &gatehouse_core::User,
        client: std::net::SocketAddr,
    ) -> Vec<&'static str> {
        let mut may = Vec::new();
        let mut policies = serde_json::Map::new();
        for action in [
            AdminAction::ViewCluster,
            AdminAction::ManageCluster,
            AdminAction::ViewPolicies,
            AdminAction::ManageServices,
            AdminAction::ManagePlugins,
        ] {
            if let Ok(decision) = self.policy.authorize_admin(user, action, client) {
                if decision.allowed {
                    may.push(action.name());
                }
                policies.insert(action.name().into(), serde_json::json!(decision.reasons()));
            }
        }
        self.audit(
            Entry::new(
                AuditKind::AdminDecision,
                format!(
                    "`{}` signed in to the portal; may: {}",
                    user.name,
                    if may.is_empty() {
                        "no admin action".into()
                    } else {
                        may.join(", ")
                    }
                ),
            )
            .user(user.name.to_string())
            .client(client.to_string())
            .field("actions", serde_json::json!(may))
            .field("policies", serde_json::Value::Object(policies)),
        );
        may
    }
}

/// One policy of the set in force.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyInfo {
    pub id: String,
    /// Where it is defined (`None` for links: grants and approved requests, kept in the store).
    pub file: Option<String>,
    pub line: Option<usize>,
    pub text: Option<String>,
}

/// A decision explained: what Cedar decided and with which policies.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub user: String,
    pub target: String,
    pub action: String,
    pub allowed: bool,
    /// The deciding policies (`default-deny` when none permitted).
    pub policies: Vec<PolicyInfo>,
    /// Policies that failed to evaluate.
    pub errors: Vec<String>,
}

impl Workflow {
    fn policy_info(&self, bundle: &gatehouse_policy::PolicyBundle, id: &str) -> PolicyInfo {
        let origin = bundle.origin(id);
        PolicyInfo {
            id: id.to_string(),
            file: origin.map(|o| o.file.clone()),
            line: origin.map(|o| o.line),
            text: bundle.policy_text(id),
        }
    }

    /// The policies in force (with `view_policies`).
    pub fn policies(&self, actor: &Actor) -> Result<Vec<PolicyInfo>, WorkflowError> {
        self.authorize_admin(actor, AdminAction::ViewPolicies)?;
        let bundle = self.policy.bundle();
        Ok(bundle
            .defined()
            .into_iter()
            .map(|(id, _)| self.policy_info(&bundle, &id))
            .collect())
    }

    /// Checks a draft policy file `name` (with `view_policies`) against the schema, and its ids
    /// against the policies in force in other files: the problems with their positions, or
    /// the number of policies and templates it holds. Nothing is loaded.
    pub fn validate_policy(
        &self,
        actor: &Actor,
        name: &str,
        text: &str,
    ) -> Result<Result<usize, Vec<gatehouse_policy::Problem>>, WorkflowError> {
        self.authorize_admin(actor, AdminAction::ViewPolicies)?;
        let name = if name.trim().is_empty() {
            "draft.cedar"
        } else {
            name.trim()
        };
        let source = gatehouse_policy::Source {
            name: name.to_string(),
            text: text.to_string(),
        };
        let draft = match gatehouse_policy::load::compile(&[source], &[]) {
            Ok(draft) => draft,
            Err(e) => return Ok(Err(e.problems)),
        };
        // An id another file already defines would make the next reload fail.
        let in_force = self.policy.bundle();
        let base = |file: &str| {
            std::path::Path::new(file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let clashes: Vec<gatehouse_policy::Problem> = draft
            .defined()
            .into_iter()
            .filter_map(|(id, origin)| {
                let existing = in_force.origin(&id)?;
                (base(&existing.file) != base(name)).then(|| gatehouse_policy::Problem {
                    file: name.to_string(),
                    line: origin.line,
                    column: 1,
                    message: format!(
                        "policy id `{id}` is already defined at {}:{}",
                        existing.file, existing.line
                    ),
                })
            })
            .collect();
        if clashes.is_empty() {
            Ok(Ok(draft.policy_count() + draft.template_count()))
        } else {
            Ok(Err(clashes))
        }
    }

    /// What Cedar decides for `user` doing `action` on `target` now, and why (with
    /// `view_policies`): session, channel-less release and request actions.
    pub fn explain(
        &self,
        actor: &Actor,
        user: &str,
        target: &str,
        action: &str,
    ) -> Result<Explanation, WorkflowError> {
        self.authorize_admin(actor, AdminAction::ViewPolicies)?;
        let bad = |m: String| WorkflowError::BadInput(m);
        let spec: gatehouse_core::TargetSpec = target
            .parse()
            .map_err(|_| bad(format!("`{target}` is not ACCOUNT@ASSET")))?;
        let principal: gatehouse_core::User = self
            .store
            .get(&gatehouse_store::USERS, user)?
            .ok_or_else(|| bad(format!("no user `{user}`")))?;
        let mut facts = self.facts(actor, false);
        facts.protocol = match action {
            "rdp_session" => "rdp",
            "ssh_session" => "ssh",
            "telnet_session" => "telnet",
            "vnc_session" => "vnc",
            _ => "api",
        }
        .into();
        let decision = self
            .policy
            .decide_as(&principal, &spec, action, &facts, None)
            .map_err(|e| bad(e.to_string()))?;
        let bundle = self.policy.bundle();
        Ok(Explanation {
            user: user.to_string(),
            target: target.to_string(),
            action: action.to_string(),
            allowed: decision.allowed,
            policies: decision
                .reasons()
                .iter()
                .map(|id| self.policy_info(&bundle, id))
                .collect(),
            errors: decision.errors,
        })
    }

    /// Turns service `name` on or off (with `manage_services`), audited.
    pub fn set_service(&self, actor: &Actor, name: &str, on: bool) -> Result<(), WorkflowError> {
        if !gatehouse_core::SERVICE_NAMES.contains(&name) {
            return Err(WorkflowError::BadInput(format!(
                "unknown service `{name}`; the services are {}",
                gatehouse_core::SERVICE_NAMES.join(", ")
            )));
        }
        self.authorize_admin(actor, AdminAction::ManageServices)?;
        let state = if on { "on" } else { "off" };
        self.store.write(|txn| -> Result<(), WorkflowError> {
            let mut toggles = txn.services()?;
            if let Some(slot) = toggles.get_mut(name) {
                *slot = on;
            }
            txn.put_services(&toggles)?;
            self.auditor.record_in(
                txn,
                Entry::new(
                    AuditKind::AdminChange,
                    format!("turned the {name} service {state} (api)"),
                )
                .user(actor.user.name.to_string())
                .client(actor.client.to_string())
                .field("service", name)
                .field("enabled", on),
            )?;
            Ok(())
        })
    }
}
