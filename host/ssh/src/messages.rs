//! The one-line reasons a user sees, kept in one place so that they stay consistent and never
//! reveal more than the user is entitled to know.

use gatehouse_core::{LoginError, TargetSpec};

/// Why a session could not reach its target, as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown asset, unknown account and not entitled all look the same.
    NotPermitted(String),
    MalformedTarget(LoginError),
    Unreachable(String),
    /// The target hung up before the SSH handshake finished.
    TargetClosed(String),
    HostKeyMismatch(String),
    CredentialRejected(String),
    /// An `access=` token that is unknown, used, expired or someone else's (the audit trail
    /// says which).
    AccessToken,
    /// The access request made at connect time was denied.
    RequestDenied {
        id: String,
        by: String,
        comment: String,
    },
    /// The access request was not decided while the user waited, or ended otherwise.
    RequestNotGranted {
        id: String,
        why: String,
    },
    /// An administrator turned the service off.
    ServiceDisabled(String),
    /// The control node refused with a reason the user may see (a target outside this session
    /// node's networks, a feature served by the control node only).
    Cluster(String),
    /// A session node cannot reach its control node.
    ControlUnreachable,
    /// Anything else: the detail is in the audit trail under the session id.
    Internal {
        session: String,
    },
}

impl Refusal {
    pub fn not_permitted(target: &TargetSpec) -> Self {
        Refusal::NotPermitted(target.to_string())
    }

    /// The line written to the client's stderr.
    pub fn user_message(&self) -> String {
        match self {
            Refusal::NotPermitted(t) => {
                format!("gatehouse: target `{t}` is unknown or you are not permitted to use it")
            }
            Refusal::MalformedTarget(e) => format!("gatehouse: {e}"),
            Refusal::Unreachable(t) => format!("gatehouse: target `{t}` is unreachable"),
            Refusal::TargetClosed(t) => format!(
                "gatehouse: target `{t}` closed the connection before login (busy or not accepting connections); try again"
            ),
            Refusal::HostKeyMismatch(t) => format!(
                "gatehouse: target `{t}`: host key does not match the pinned key; connection refused"
            ),
            Refusal::CredentialRejected(t) => {
                format!("gatehouse: target `{t}` rejected the vault credential")
            }
            Refusal::AccessToken => {
                "gatehouse: the access token is unknown, already used or expired".to_string()
            }
            Refusal::RequestDenied { id, by, comment } if comment.is_empty() => {
                format!("gatehouse: access request {id} was denied by {by}")
            }
            Refusal::RequestDenied { id, by, comment } => {
                format!("gatehouse: access request {id} was denied by {by}: {comment}")
            }
            Refusal::RequestNotGranted { id, why } => {
                format!("gatehouse: access request {id} was not granted: {why}")
            }
            Refusal::ServiceDisabled(message) | Refusal::Cluster(message) => {
                format!("gatehouse: {message}")
            }
            Refusal::ControlUnreachable => "gatehouse: this session node cannot reach its control \
                 node, so new sessions cannot open (running ones go on); try again later"
                .to_string(),
            Refusal::Internal { session } => {
                format!("gatehouse: internal error; it was logged as session {session}")
            }
        }
    }
}
