//! Why a workflow operation was refused. Callers branch on the variant (the API maps it to an
//! HTTP status); `Display` is the message the caller may show.

use gatehouse_core::{AccessRequest, RequestState};

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The input is malformed or out of range (HTTP 400).
    #[error("{0}")]
    BadInput(String),
    /// No such request, or one the caller may not see: the same answer (HTTP 404).
    #[error("request `{0}` not found")]
    NotFound(String),
    /// An unknown session, or one the caller may not see: the same to the caller.
    #[error("session `{0}` not found")]
    SessionNotFound(String),
    /// The target is unknown or the caller may not ask for it: the same answer (HTTP 403).
    #[error("target `{0}` is unknown or you may not request access to it")]
    TargetRefused(String),
    /// The caller may see the request but not do this to it (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// The request's state does not allow the transition (HTTP 409).
    #[error("request `{id}` is {state}: cannot {action}")]
    Conflict {
        id: String,
        state: RequestState,
        action: &'static str,
    },
    /// A second approval by the same person, and similar (HTTP 409).
    #[error("{0}")]
    AlreadyDone(String),
    /// An administrator turned the service off (HTTP 503).
    #[error("the {0} service is disabled by an administrator")]
    ServiceDisabled(&'static str),
    /// A credential (API key, client certificate, access token) was missing or wrong (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    /// A plugin needed for the decision failed; nothing was changed (HTTP 502).
    #[error("{0}")]
    Plugin(String),
    /// What the call needs is out of service (a removed session node) (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
    /// Store, vault or policy failure; the detail is logged, the caller sees it (HTTP 500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl WorkflowError {
    /// `request`'s state does not allow `action`.
    pub(crate) fn conflict(request: &AccessRequest, action: &'static str) -> Self {
        WorkflowError::Conflict {
            id: request.id.clone(),
            state: request.state,
            action,
        }
    }
}

impl From<gatehouse_store::StoreError> for WorkflowError {
    fn from(e: gatehouse_store::StoreError) -> Self {
        match e {
            // The database is away (PostgreSQL restarting, network cut): nothing was changed,
            // and the caller may try again; the detail goes to the log.
            gatehouse_store::StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "the store cannot be reached");
                WorkflowError::Unavailable(
                    "the gateway's store cannot be reached right now; nothing was changed, try                      again in a few seconds"
                        .into(),
                )
            }
            other => WorkflowError::Internal(other.to_string()),
        }
    }
}

impl From<gatehouse_vault::VaultError> for WorkflowError {
    fn from(e: gatehouse_vault::VaultError) -> Self {
        WorkflowError::Internal(format!("vault: {e}"))
    }
}

impl From<gatehouse_policy::PolicyError> for WorkflowError {
    fn from(e: gatehouse_policy::PolicyError) -> Self {
        if let gatehouse_policy::PolicyError::StoreUnavailable(detail) = e {
            return gatehouse_store::StoreError::Unavailable(detail).into();
        }
        WorkflowError::Internal(format!("policy: {e}"))
    }
}
