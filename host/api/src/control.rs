//! `POST /api/v1/sessions/{id}/terminate`: ends a running session with a reason the user reads.
//! Each call is a Cedar decision (`terminate_session` on the session's account), audited with
//! the deciding policies; an unknown session and a refused one are the same 404.

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use crate::routes::JsonBody;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The longest reason shown to a user.
pub const REASON_MAX_CHARS: usize = 200;

/// How a session ended on request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminated {
    /// It ran in this gateway and is ended.
    Here,
    /// It runs on this session node, which ends it at its next call (within 10 s).
    AtNode(String),
    /// It is not running anywhere this gateway knows (it has just ended, or its gateway
    /// stopped without closing it).
    NotRunning,
}

/// Ends sessions for the API; the binary provides it (the API knows nothing of SSH or RDP).
pub trait SessionControl: Send + Sync {
    /// Blocking: ends session `id`, shown as ended by `by` for `reason`.
    fn terminate(&self, id: &str, by: &str, reason: &str) -> Result<Terminated, String>;
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TerminateBody {
    /// Shown to the user and kept in the audit trail (1-200 characters, one line).
    pub reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct TerminateView {
    pub session: String,
    /// `true` when the session is ended now; `false` while its session node has yet to end it.
    pub ended: bool,
    /// The session node that ends it.
    pub node: Option<String>,
    pub message: String,
}

/// End a running session; the user reads who ended it and why.
#[utoipa::path(post, path = "/api/v1/sessions/{id}/terminate", tag = "sessions",
    params(("id" = String, Path)), request_body = TerminateBody, security(("bearer" = [])),
    responses((status = 200, body = TerminateView), (status = 202, body = TerminateView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn terminate_session(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TerminateBody>,
) -> Result<Response, ApiError> {
    let reason = body.reason.trim().to_string();
    if reason.is_empty()
        || reason.chars().count() > REASON_MAX_CHARS
        || reason.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "`reason` must be one line of 1 to {REASON_MAX_CHARS} characters"
        )));
    }
    let record = state
        .inner
        .workflow
        .authorize_terminate(&person.actor, &id)?;
    if record.ended.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "session_ended",
            format!("session `{id}` has ended already"),
        ));
    }
    let Some(control) = state.inner.control.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_session_control",
            "this gateway does not end sessions over the API",
        ));
    };
    let by = person.actor.user.name.to_string();
    let (session, who) = (id.clone(), by.clone());
    let outcome = tokio::task::spawn_blocking(move || control.terminate(&session, &who, &reason))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "ending a session");
            ApiError::internal()
        })?
        .map_err(|e| {
            tracing::error!(session = %id, error = %e, "ending a session");
            ApiError::internal()
        })?;
    let (status, view) = match outcome {
        Terminated::Here => (
            StatusCode::OK,
            TerminateView {
                session: id.clone(),
                ended: true,
                node: None,
                message: format!("session {id} ended"),
            },
        ),
        Terminated::AtNode(node) => (
            StatusCode::ACCEPTED,
            TerminateView {
                session: id.clone(),
                ended: false,
                message: format!("session {id} ends at node {node}'s next call (within 10 s)"),
                node: Some(node),
            },
        ),
        Terminated::NotRunning => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_running",
                format!("session `{id}` is not running"),
            ));
        }
    };
    Ok((status, Json(view)).into_response())
}
