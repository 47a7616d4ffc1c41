//! Every error the API returns is JSON: `{"error": {"status": 409, "code": "conflict",
//! "message": "..."}}`, with a status that says what kind of mistake it was.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_workflow::WorkflowError;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The HTTP status, repeated.
    pub status: u16,
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `rate_limited`,
    /// `service_disabled`, `plugin_failed`, `internal`, ...
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// With `answer_needed` (401) at sign-in: what to answer before the sign-in completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<crate::sign_in::QuestionView>,
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait (429).
    pub retry_after: Option<u64>,
    /// A sign-in's pending question (`answer_needed`).
    pub question: Option<crate::sign_in::QuestionView>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            question: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A store failure: the database being away is 503 with `Retry-After` (nothing changed,
    /// try again), anything else an internal error. The detail goes to the log only.
    pub fn store(e: gatehouse_store::StoreError) -> Self {
        match e {
            gatehouse_store::StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "the store cannot be reached");
                let mut error = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the gateway's store cannot be reached right now; nothing was changed, try \
                     again in a few seconds",
                );
                error.retry_after = Some(5);
                error
            }
            other => {
                tracing::error!(error = %other, "store failure");
                Self::internal()
            }
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the detail is in the gateway's log",
        )
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            WorkflowError::BadInput(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            WorkflowError::NotFound(_) | WorkflowError::SessionNotFound(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            WorkflowError::TargetRefused(_) | WorkflowError::Forbidden(_) => {
                (StatusCode::FORBIDDEN, "forbidden")
            }
            WorkflowError::Conflict { .. } | WorkflowError::AlreadyDone(_) => {
                (StatusCode::CONFLICT, "conflict")
            }
            WorkflowError::ServiceDisabled(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "service_disabled")
            }
            WorkflowError::Unavailable(_) => {
                let mut error =
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
                error.retry_after = Some(5);
                return error;
            }
            WorkflowError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            WorkflowError::Plugin(_) => (StatusCode::BAD_GATEWAY, "plugin_failed"),
            WorkflowError::Internal(detail) => {
                tracing::error!(error = %detail, "API request failed");
                return ApiError::internal();
            }
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                code: self.code.to_string(),
                message: self.message,
                question: self.question,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gatehouse\""),
            );
        }
        response
    }
}
