//! The admin pages' API: the policies in force and a decision explained with them
//! (`view_policies`), and the vault's services turned on and off (`manage_services`). Each call
//! is a Cedar decision on this gateway, audited with the policy ids; nobody may by default
//! (`policies/examples/gateway-admins.cedar`). The installed plugins are listed with
//! `view_policies` and switched on and off with `manage_plugins`, through [`PluginAdmin`].

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{JsonBody, QueryParams};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
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
    /// `ssh_session` (default), `rdp_session`, `telnet_session`, `release_password`, `release_key`,
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The file name the problems are reported under (`draft.cedar` when empty); a policy id
    /// defined in another file in force is a problem.
    #[serde(default)]
    pub name: String,
    /// The Cedar text.
    pub text: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProblemView {
    pub file: String,
    /// 1-based; 0 when the problem has no position.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct ValidationView {
    pub valid: bool,
    /// Policies and templates in the text (when valid).
    pub policies: usize,
    pub problems: Vec<ProblemView>,
}

/// The most text a draft may have.
const MAX_DRAFT: usize = 256 * 1024;

/// Check a draft policy file against the schema and the policies in force (their ids), before
/// it is put in the policy directory. Nothing is loaded.
#[utoipa::path(post, path = "/api/v1/policies/validate", tag = "gateway",
    request_body = ValidateBody, security(("bearer" = [])),
    responses((status = 200, body = ValidationView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn validate_policy(
    State(state): State<ApiState>,
    person: Person,
    JsonBody(body): JsonBody<ValidateBody>,
) -> Result<Json<ValidationView>, ApiError> {
    if body.text.len() > MAX_DRAFT {
        return Err(ApiError::bad_request(format!(
            "the draft is longer than {MAX_DRAFT} bytes"
        )));
    }
    let workflow = state.inner.workflow.clone();
    let checked = tokio::task::spawn_blocking(move || {
        workflow.validate_policy(&person.actor, &body.name, &body.text)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    Ok(Json(match checked {
        Ok(policies) => ValidationView {
            valid: true,
            policies,
            problems: Vec::new(),
        },
        Err(problems) => ValidationView {
            valid: false,
            policies: 0,
            problems: problems
                .into_iter()
                .map(|p| ProblemView {
                    file: p.file,
                    line: p.line,
                    column: p.column,
                    message: p.message,
                })
                .collect(),
        },
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

/// One installed plugin, as the admin page shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub version: String,
    pub description: String,
    /// `aa`, `credential-store`, `ticketing`.
    pub kinds: Vec<String>,
    /// The `gatehouse:plugin` contract version it was built against.
    pub wit: String,
    /// Enabled in the registry (the operator's choice).
    pub enabled: bool,
    /// Running in this gateway now (enabled and loaded).
    pub loaded: bool,
    /// Why an enabled plugin could not be loaded (calls to it are refused).
    pub load_error: Option<String>,
    /// What the operator granted it: outbound HTTP destinations and secret names.
    pub granted_http: Vec<String>,
    pub granted_secrets: Vec<String>,
}

/// Why a plugin could not be listed or changed.
#[derive(Debug, thiserror::Error)]
pub enum PluginAdminError {
    #[error("plugin `{0}` is not installed")]
    NotInstalled(String),
    /// The change is not possible as the plugin stands (its grants or configuration do not
    /// satisfy its manifest); nothing changed.
    #[error("{0}")]
    Refused(String),
    /// The registry could not be read or written, or the gateway could not reload.
    #[error("{0}")]
    Failed(String),
}

/// The installed plugins of this gateway, listed and switched on or off. Implemented by the
/// daemon over its plugin registry and running plugin host; the API decides who may.
pub trait PluginAdmin: Send + Sync {
    fn list(&self) -> Result<Vec<PluginView>, PluginAdminError>;
    /// Enables or disables `name`, reloads the running plugins and audits the change as
    /// `actor`'s (from `client`); the plugin as it is afterwards.
    fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        actor: &str,
        client: &str,
    ) -> Result<PluginView, PluginAdminError>;
}

impl From<PluginAdminError> for ApiError {
    fn from(e: PluginAdminError) -> Self {
        match e {
            PluginAdminError::NotInstalled(_) => ApiError::not_found(e.to_string()),
            PluginAdminError::Refused(m) => ApiError::bad_request(m),
            PluginAdminError::Failed(m) => {
                tracing::error!(error = %m, "plugin administration failed");
                ApiError::internal()
            }
        }
    }
}

fn plugin_admin(state: &ApiState) -> Result<Arc<dyn PluginAdmin>, ApiError> {
    state.inner.plugins.clone().ok_or_else(|| {
        ApiError::not_found("this gateway has no plugin host; plugins are managed where they run")
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginBody {
    pub enabled: bool,
}

/// The installed plugins: enabled or not, loaded or why not, and what they were granted.
/// Policy decides who sees them (`view_policies`: plugins decide logins beside the policies).
#[utoipa::path(get, path = "/api/v1/plugins", tag = "gateway", security(("bearer" = [])),
    responses((status = 200, body = [PluginView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_plugins(
    State(state): State<ApiState>,
    person: Person,
) -> Result<Json<Vec<PluginView>>, ApiError> {
    let plugins = plugin_admin(&state)?;
    let workflow = state.inner.workflow.clone();
    let listed = tokio::task::spawn_blocking(move || {
        workflow.authorize_admin(&person.actor, gatehouse_workflow::AdminAction::ViewPolicies)?;
        plugins.list().map_err(ApiError::from)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    Ok(Json(listed))
}

/// Enable or disable an installed plugin (`manage_plugins`). The running gateway reloads its
/// plugins at once: logins already past their plugins are not affected, the next uses the new
/// set. Enabling checks the plugin's grants and configuration first (400 with the reason).
#[utoipa::path(put, path = "/api/v1/plugins/{name}", tag = "gateway",
    params(("name" = String, Path)), request_body = PluginBody, security(("bearer" = [])),
    responses((status = 200, body = PluginView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn set_plugin(
    State(state): State<ApiState>,
    person: Person,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PluginBody>,
) -> Result<Json<PluginView>, ApiError> {
    let plugins = plugin_admin(&state)?;
    let workflow = state.inner.workflow.clone();
    let changed = tokio::task::spawn_blocking(move || {
        workflow.authorize_admin(
            &person.actor,
            gatehouse_workflow::AdminAction::ManagePlugins,
        )?;
        plugins
            .set_enabled(
                &name,
                body.enabled,
                person.actor.user.name.as_str(),
                &person.actor.client.to_string(),
            )
            .map_err(ApiError::from)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    Ok(Json(changed))
}
