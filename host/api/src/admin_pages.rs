//! The admin pages' API: the policies in force and a decision explained with them
//! (`view_policies`), and the vault's services turned on and off (`manage_services`). Each call
//! is a Cedar decision on this gateway, audited with the policy ids; nobody may by default
//! (`policies/examples/gateway-admins.cedar`).

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{JsonBody, QueryParams};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
pub struct PolicyView {
    pub id: String,
    /// The file and line it is defined at; `null` for links (grants, approved requests).
    pub file: Option<String>,
    pub line: Option<usize>,
    pub text: Option<String>,
}

impl From<gatehouse_workflow::PolicyInfo> for PolicyView {
    fn from(p: gatehouse_workflow::PolicyInfo) -> Self {
        Self {
            id: p.id,
            file: p.file,
            line: p.line,
            text: p.text,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ExplanationView {
    pub user: String,
    pub target: String,
    pub action: String,
    pub allowed: bool,
    /// The deciding policies (`default-deny` when none permitted).
    pub policies: Vec<PolicyView>,
    pub errors: Vec<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// The gateway user.
    pub user: String,
    /// `account@asset`.
    pub target: String,
    /// `ssh_session` (default), `rdp_session`, `release_password`, `release_key`,
    /// `request_access`, or a channel action (`ssh_shell`, ...).
    pub action: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceBody {
    pub enabled: bool,
}

/// The policies in force, each with where it is defined and its text.
#[utoipa::path(get, path = "/api/v1/policies", tag = "gateway", security(("bearer" = [])),
    responses((status = 200, body = [PolicyView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_policies(
    State(state): State<ApiState>,
    person: Person,
) -> Result<Json<Vec<PolicyView>>, ApiError> {
    let workflow = state.inner.workflow.clone();
    let policies = tokio::task::spawn_blocking(move || workflow.policies(&person.actor))
        .await
        .map_err(|_| ApiError::internal())??;
    Ok(Json(policies.into_iter().map(PolicyView::from).collect()))
}

/// What Cedar decides for a user doing an action on an account now, and with which policies.
#[utoipa::path(get, path = "/api/v1/policies/explain", tag = "gateway", params(ExplainQuery),
    security(("bearer" = [])),
    responses((status = 200, body = ExplanationView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn explain(
    State(state): State<ApiState>,
    person: Person,
    QueryParams(query): QueryParams<ExplainQuery>,
) -> Result<Json<ExplanationView>, ApiError> {
    let workflow = state.inner.workflow.clone();
    let action = query.action.unwrap_or_else(|| "ssh_session".into());
    let explained = tokio::task::spawn_blocking(move || {
        workflow.explain(&person.actor, &query.user, &query.target, &action)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    Ok(Json(ExplanationView {
        user: explained.user,
        target: explained.target,
        action: explained.action,
        allowed: explained.allowed,
        policies: explained
            .policies
            .into_iter()
            .map(PolicyView::from)
            .collect(),
        errors: explained.errors,
    }))
}

/// Turn one of the vault's services on or off; new work of a service that is off is refused
/// with a clear message, work already running finishes.
#[utoipa::path(put, path = "/api/v1/services/{name}", tag = "gateway",
    params(("name" = String, Path)), request_body = ServiceBody, security(("bearer" = [])),
    responses((status = 200, body = crate::routes::ServicesView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set_service(
    State(state): State<ApiState>,
    person: Person,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<ServiceBody>,
) -> Result<Json<crate::routes::ServicesView>, ApiError> {
    let workflow = state.inner.workflow.clone();
    tokio::task::spawn_blocking(move || workflow.set_service(&person.actor, &name, body.enabled))
        .await
        .map_err(|_| ApiError::internal())??;
    let toggles = state.inner.store.services().map_err(|e| {
        tracing::error!(error = %e, "reading services");
        ApiError::internal()
    })?;
    Ok(Json(crate::routes::ServicesView {
        services: gatehouse_core::SERVICE_NAMES
            .iter()
            .map(|n| (n.to_string(), toggles.get(n).unwrap_or(false)))
            .collect(),
    }))
}
