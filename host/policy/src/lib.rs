//! Authorization: every access decision in Gatehouse is a Cedar decision made here, deny by
//! default, with the ids of the policies that decided it. The right to dial a target is a value
//! only this crate can construct ([`TargetAuthorization`]). Only this crate knows cedar-policy.
//!
//! - [`load`]: policy files to a validated [`PolicyBundle`], with positioned problems.
//! - [`PolicyEngine`]: the bundle in force, reloads that keep the old set on error, and the
//!   decision points the gateway calls.
//! - [`entities`] and [`context`]: what the host tells Cedar about a request.
//! - [`scenario`]: the test format for policy authors.

pub mod context;
mod engine;
pub mod entities;
mod guard;
mod index;
pub mod load;
pub mod scenario;
pub mod schema;

pub use context::{ChannelRequest, Clock, LocalTime, NodeFacts, SessionFacts};
pub use engine::{
    AdminAction, ChannelDecision, Denied, EngineSettings, MAX_APPROVALS, PolicyEngine, ReleaseKind,
    ReloadReport, TargetAuthorization,
};
pub use entities::RequestFacts;
pub use load::{LoadError, PolicyBundle, Problem, Source};

use cedar_policy::{Context, Decision as CedarDecision, Entities, EntityUid, Request};

/// Errors outside of policy content.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Config(String),
    #[error("internal policy error: {0}")]
    Internal(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("store error: {0}")]
    Store(String),
    /// The store's database cannot be reached right now (nothing was decided).
    #[error("the store cannot be reached: {0}")]
    StoreUnavailable(String),
}

impl From<gatehouse_store::StoreError> for PolicyError {
    fn from(e: gatehouse_store::StoreError) -> Self {
        match e {
            gatehouse_store::StoreError::Unavailable(detail) => {
                PolicyError::StoreUnavailable(detail)
            }
            other => PolicyError::Store(other.to_string()),
        }
    }
}

/// A Cedar decision and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// The determining policies: the permits that allowed it, or the forbids that denied it.
    /// Empty on a default deny (no policy permits).
    pub policies: Vec<String>,
    /// Policies that failed to evaluate (they are skipped, as Cedar does).
    pub errors: Vec<String>,
}

impl Decision {
    /// The policy ids for the audit trail; `default-deny` when none decided.
    pub fn reasons(&self) -> Vec<String> {
        if self.policies.is_empty() && !self.allowed {
            vec!["default-deny".to_string()]
        } else {
            self.policies.clone()
        }
    }
}

/// One request to decide.
pub struct Query<'a> {
    pub principal: &'a EntityUid,
    pub action: &'a EntityUid,
    pub resource: &'a EntityUid,
    pub context: Context,
    pub entities: &'a Entities,
}

impl PolicyBundle {
    /// Decides using the index: only the policies whose scope can match are evaluated.
    pub fn decide(&self, query: Query<'_>) -> Result<Decision, PolicyError> {
        let principal_set = self_and_ancestors(query.entities, query.principal);
        let resource_set = self_and_ancestors(query.entities, query.resource);
        let slice = self.index.slice(
            &index::Subject {
                ty: query.principal.type_name(),
                self_and_ancestors: &principal_set,
            },
            query.action,
            &index::Subject {
                ty: query.resource.type_name(),
                self_and_ancestors: &resource_set,
            },
            &mut guard::Facts::new(
                query.principal,
                query.resource,
                &query.context,
                query.entities,
            ),
        )?;
        evaluate(&slice, query)
    }

    /// Decides over the whole set, without the index (for checks of the index).
    pub fn decide_unsliced(&self, query: Query<'_>) -> Result<Decision, PolicyError> {
        evaluate(&self.set, query)
    }
}

fn self_and_ancestors(entities: &Entities, uid: &EntityUid) -> index::FastSet<EntityUid> {
    let mut set: index::FastSet<EntityUid> = entities
        .ancestors(uid)
        .map(|a| a.cloned().collect())
        .unwrap_or_default();
    set.insert(uid.clone());
    set
}

fn evaluate(set: &cedar_policy::PolicySet, query: Query<'_>) -> Result<Decision, PolicyError> {
    let request = Request::new(
        query.principal.clone(),
        query.action.clone(),
        query.resource.clone(),
        query.context,
        // The context was checked against the schema when it was built; checking again would
        // double the cost of a decision.
        None,
    )
    .map_err(|e| PolicyError::Internal(format!("request: {e}")))?;
    let response = cedar_policy::Authorizer::new().is_authorized(&request, set, query.entities);
    let mut policies: Vec<String> = response
        .diagnostics()
        .reason()
        .map(|p| p.to_string())
        .collect();
    policies.sort();
    let errors = response
        .diagnostics()
        .errors()
        .map(|e| e.to_string())
        .collect();
    Ok(Decision {
        allowed: response.decision() == CedarDecision::Allow,
        policies,
        errors,
    })
}
