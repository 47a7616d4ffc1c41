//! The routes of `/api/v1`. Each handler is annotated for the OpenAPI document (docs.rs).

use crate::ApiState;
use crate::auth::{A2aCaller, Person};
use crate::error::{ApiError, ErrorBody};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gatehouse_audit::Entry;
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    AccessKind, AccessRequest, AuditKind, Name, RequestState, Review, TargetSpec,
};
use gatehouse_workflow::NewRequest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The largest request body the API reads.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// A JSON body whose rejections are JSON errors too (400 malformed, 415 content type, 422
/// wrong fields).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    e.body_text(),
                ),
                JsonRejection::JsonSyntaxError(e) => {
                    ApiError::bad_request(format!("malformed JSON: {}", e.body_text()))
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "expected `Content-Type: application/json`",
                ),
                other => body_rejection(other.status(), other.body_text()),
            }),
        }
    }
}

/// A body axum could not read: 413 when it is over the limit, 400 otherwise.
fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the limit of {MAX_BODY} bytes"),
        )
    } else {
        ApiError::bad_request(text)
    }
}

/// An optional JSON body: an empty body is the default value.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(e.status(), e.body_text()))?;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(OptionalBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalBody)
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    e.to_string(),
                ),
                _ => ApiError::bad_request(format!("malformed JSON: {e}")),
            })
    }
}

/// Query parameters whose rejections are JSON errors.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/health", get(health))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/services", get(services))
        .route(
            "/services/{name}",
            axum::routing::put(crate::admin_pages::set_service),
        )
        .route("/policies", get(crate::admin_pages::list_policies))
        .route("/policies/explain", get(crate::admin_pages::explain))
        .route(
            "/policies/validate",
            post(crate::admin_pages::validate_policy),
        )
        .route("/plugins", get(crate::admin_pages::list_plugins))
        .route(
            "/plugins/{name}",
            axum::routing::put(crate::admin_pages::set_plugin),
        )
        .route("/requests", get(list_requests).post(create_request))
        .route("/requests/{id}", get(get_request))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/deny", post(deny))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/requests/{id}/revoke", post(revoke))
        .route("/requests/{id}/checkin", post(check_in))
        .route("/requests/{id}/credential", post(release))
        .route("/requests/{id}/access-string", post(access_string))
        .route("/sessions", get(crate::sessions::list_sessions))
        .route("/search", get(crate::search::search_sessions))
        .route("/sessions/{id}", get(crate::sessions::get_session))
        .route(
            "/sessions/{id}/terminate",
            post(crate::control::terminate_session),
        )
        .route("/sessions/{id}/video", get(crate::sessions::session_video))
        .route("/sessions/{id}/live", get(crate::live::session_live))
        .route("/portal/login", post(crate::portal::portal_login))
        .route("/access", get(crate::portal::my_access))
        .route("/inbox", get(inbox))
        .route("/portal/logout", post(crate::portal::portal_logout))
        .route("/portal/session", get(crate::portal::portal_session))
        .route(
            "/sessions/{id}/transcript",
            get(crate::sessions::session_transcript),
        )
        .route("/sessions/{id}/cast", get(crate::sessions::session_cast))
        .route("/a2a/credential", get(a2a_credential))
        .route("/a2a/requests", post(a2a_request))
        .route("/nodes", get(crate::nodes::list_nodes))
        .route(
            "/nodes/{id}",
            axum::routing::patch(crate::nodes::edit_node).delete(crate::nodes::delete_node),
        )
        .route(
            "/networks",
            get(crate::nodes::list_networks)
                .post(crate::nodes::add_network)
                .delete(crate::nodes::delete_network),
        )
        .route("/openapi.json", get(crate::docs::openapi_json));
    Router::new()
        .nest("/api/v1", v1)
        .route("/api/docs", get(crate::docs::docs_page))
        .route("/", get(crate::portal::root))
        .route("/portal", get(crate::portal::portal_page))
        .route("/portal.js", get(crate::portal::portal_script))
        .route("/portal.css", get(crate::portal::portal_style))
        .route("/player", get(crate::sessions::player_page))
        .route("/player.js", get(crate::sessions::player_script))
        .route("/player.css", get(crate::sessions::player_style))
        .route(
            "/vendor/asciinema-player.min.js",
            get(crate::sessions::terminal_player_script),
        )
        .route(
            "/vendor/asciinema-player.css",
            get(crate::sessions::terminal_player_style),
        )
        .route("/favicon.ico", get(crate::sessions::favicon_ico))
        .route("/favicon.svg", get(crate::sessions::favicon_svg))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the API is described at /api/docs")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see /api/docs",
    )
}

/// An optional query parameter: absent or empty is `None`, anything else must `parse`, or the
/// request is refused with the message `refusal` makes of it.
fn optional_param<T>(
    value: Option<&str>,
    parse: impl FnOnce(&str) -> Option<T>,
    refusal: impl FnOnce(&str) -> String,
) -> Result<Option<T>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(text) => parse(text)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(refusal(text))),
    }
}

/// A released secret in the field of its kind: `(password, private_key)`.
fn password_or_key(
    kind: AccessKind,
    secret: &gatehouse_core::SecretString,
) -> (Option<String>, Option<String>) {
    let secret = secret.expose().to_string();
    match kind {
        AccessKind::PrivateKey => (None, Some(secret)),
        _ => (Some(secret), None),
    }
}

pub(crate) fn time(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(t.to_system_time()).to_string()
}

pub(crate) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

// ------------------------------------------------------------------------------------------
// Bodies
// ------------------------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` while the gateway takes new sessions; `draining` once it is shutting down (503,
    /// so that a load balancer sends new users elsewhere while running sessions finish).
    pub status: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub user: String,
    pub password: String,
    /// Ask for a shorter-lived token (seconds); never longer than the gateway's setting.
    pub ttl_seconds: Option<u64>,
    /// Answers to the questions sign-in plugins asked (`401 answer_needed` names the key),
    /// every answer so far: `{"otp": "123456"}`.
    #[serde(default)]
    pub answers: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub token_type: String,
    pub expires_at: String,
    pub expires_in: u64,
    pub user: String,
}

#[derive(Serialize, ToSchema)]
pub struct MeView {
    pub name: String,
    pub groups: Vec<String>,
    pub email: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ServicesView {
    /// Service name (`session-requests`, `password-requests`, `key-requests`, `a2a`, `check`,
    /// `change`, `discovery`) to whether it is on.
    pub services: std::collections::BTreeMap<String, bool>,
}

/// A request to file.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequestBody {
    /// `account@asset`.
    pub target: String,
    /// `session`, `password` or `private_key`.
    pub access: String,
    #[serde(default)]
    pub reason: String,
    pub ticket: Option<String>,
    /// The window once granted; the gateway's default when absent.
    pub duration_minutes: Option<u32>,
    #[serde(default)]
    pub emergency: bool,
}

impl NewRequestBody {
    fn parse(self) -> Result<NewRequest, ApiError> {
        let target: TargetSpec = self
            .target
            .parse()
            .map_err(|e: gatehouse_core::LoginError| ApiError::bad_request(e.to_string()))?;
        let access = AccessKind::parse(&self.access).ok_or_else(|| {
            ApiError::bad_request(format!(
                "access `{}` is not one of session, password, private_key",
                self.access
            ))
        })?;
        Ok(NewRequest {
            target,
            access,
            reason: self.reason,
            ticket: self.ticket.filter(|t| !t.is_empty()),
            duration_minutes: self.duration_minutes,
            emergency: self.emergency,
        })
    }
}

/// A broker's request on a user's behalf.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerRequestBody {
    /// The user the request is for; their `request_access` decision applies.
    pub on_behalf_of: String,
    pub target: String,
    pub access: String,
    #[serde(default)]
    pub reason: String,
    pub ticket: Option<String>,
    pub duration_minutes: Option<u32>,
    #[serde(default)]
    pub emergency: bool,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    #[serde(default)]
    pub comment: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only requests in this state (`pending_approval`, `available`, ...).
    pub state: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct A2aQuery {
    /// `password` or `private_key`; the password when absent (or the key if that is all the
    /// account holds).
    pub kind: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ReviewView {
    pub by: String,
    pub at: String,
    pub comment: String,
    pub policies: Vec<String>,
}

impl From<&Review> for ReviewView {
    fn from(r: &Review) -> Self {
        Self {
            by: r.by.to_string(),
            at: time(r.at),
            comment: r.comment.clone(),
            policies: r.policies.clone(),
        }
    }
}

/// An access request.
#[derive(Serialize, ToSchema)]
pub struct RequestView {
    pub id: String,
    pub requester: String,
    /// `account@asset`.
    pub target: String,
    pub access: String,
    /// `pending_approval`, `available`, `checked_out`, `checked_in`, `complete`, `expired`,
    /// `denied`, `cancelled`, `revoked`.
    pub state: String,
    pub reason: String,
    pub ticket: String,
    pub ticket_verified: bool,
    pub emergency: bool,
    pub duration_minutes: u32,
    pub origin: String,
    pub created: String,
    pub approvals_needed: Option<u32>,
    pub approvals: Vec<ReviewView>,
    pub denial: Option<ReviewView>,
    pub approval_deadline: String,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    pub checked_out: Option<String>,
    pub checked_in: Option<String>,
    pub ended: Option<String>,
    pub end_note: String,
    pub views: u32,
    pub sessions: Vec<String>,
    pub granted_by: Vec<String>,
}

impl From<&AccessRequest> for RequestView {
    fn from(r: &AccessRequest) -> Self {
        Self {
            id: r.id.clone(),
            requester: r.requester.to_string(),
            target: r.target(),
            access: r.access.as_str().into(),
            state: r.state.as_str().into(),
            reason: r.reason.clone(),
            ticket: r.ticket.clone(),
            ticket_verified: r.ticket_verified,
            emergency: r.emergency,
            duration_minutes: r.duration_minutes,
            origin: r.origin.clone(),
            created: time(r.created),
            approvals_needed: r.approvals_needed,
            approvals: r.approvals.iter().map(ReviewView::from).collect(),
            denial: r.denial.as_ref().map(ReviewView::from),
            approval_deadline: time(r.approval_deadline),
            window_start: r.window_start.map(time),
            window_end: r.window_end.map(time),
            checked_out: r.checked_out.map(time),
            checked_in: r.checked_in.map(time),
            ended: r.ended.map(time),
            end_note: r.end_note.clone(),
            views: r.views,
            sessions: r.sessions.clone(),
            granted_by: r.granted_by.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RequestList {
    pub requests: Vec<RequestView>,
}

/// A released secret. Shown for the request's window only; every view is audited.
#[derive(Serialize, ToSchema)]
pub struct CredentialView {
    pub request: String,
    pub target: String,
    /// `password` or `private_key`.
    pub kind: String,
    pub password: Option<String>,
    /// OpenSSH format.
    pub private_key: Option<String>,
    pub window_end: Option<String>,
    /// How many times the secret has been shown, this view included.
    pub view: u32,
    pub policies: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccessStringView {
    pub request: String,
    /// Run it as is: `ssh -p 2222 access=<token>@user@account@asset@host`. Works once.
    pub command: String,
    /// For an asset with RDP: an `.rdp` file (mstsc, xfreerdp) whose user name carries the
    /// same token; log in with your own gateway password. The token works once, by either.
    pub rdp_file: Option<String>,
    pub expires_at: String,
    /// The session node the command and the file point at (the node whose managed network
    /// holds the asset's address); absent: this gateway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct A2aCredentialView {
    pub target: String,
    pub kind: String,
    pub password: Option<String>,
    pub private_key: Option<String>,
}

// ------------------------------------------------------------------------------------------
// Handlers
// ------------------------------------------------------------------------------------------

/// Liveness and readiness: 200 `ok` while serving, 503 `draining` during a graceful shutdown.
#[utoipa::path(get, path = "/api/v1/health", tag = "gateway",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<ApiState>) -> Response {
    if state.is_draining() {
        let body = Health {
            status: "draining".into(),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(Health {
        status: "ok".into(),
    })
    .into_response()
}

/// Log in with a gateway user's password; returns a short-lived bearer token. Failed attempts
/// are rate-limited per address and per user (429 with `Retry-After`).
#[utoipa::path(post, path = "/api/v1/login", tag = "people", request_body = LoginBody,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<ApiState>,
    axum::Extension(peer): axum::Extension<crate::Peer>,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    let (user, issued) = check_login(&state, &peer, body, "api").await?;
    let expires_in = issued.expires.0.saturating_sub(Timestamp::now().0) / 1000;
    Ok(no_store(
        Json(LoginResponse {
            token: issued.token,
            token_type: "Bearer".into(),
            expires_at: time(issued.expires),
            expires_in,
            user: user.name.to_string(),
        })
        .into_response(),
    ))
}

/// A person's password login (`via`: `api` or `portal`), rate-limited and audited either way:
/// the user and a token.
pub(crate) async fn check_login(
    state: &ApiState,
    peer: &crate::Peer,
    body: LoginBody,
    via: &str,
) -> Result<(gatehouse_core::User, crate::auth::Issued), ApiError> {
    let inner = &state.inner;
    let password = zeroize::Zeroizing::new(body.password);
    let ip = peer.addr.ip();
    let what = if via == "portal" {
        "portal login"
    } else {
        "API login"
    };
    let audit_failure = |why: &str| {
        inner.auditor.record_best_effort(
            Entry::new(AuditKind::LoginFailed, format!("{what} failed: {why}"))
                .user(body.user.clone())
                .client(peer.addr.to_string())
                .field("protocol", via),
        );
    };
    if let Err(limited) = inner.limiter.check(ip, &body.user) {
        audit_failure("rate limited");
        return Err(limited);
    }
    let invalid = || ApiError::unauthorized("wrong user name or password");
    let Ok(name) = Name::new(&body.user) else {
        inner.limiter.failed(ip, &body.user);
        audit_failure("malformed user name");
        return Err(invalid());
    };
    let permit = inner
        .password_checks
        .acquire()
        .await
        .map_err(|_| ApiError::internal())?;
    let authenticator = inner.authenticator.clone();
    let checked_name = name.clone();
    let password_for_check = password.clone();
    let verdict = tokio::task::spawn_blocking(move || {
        authenticator.verify_password(&checked_name, &password_for_check)
    })
    .await
    .map_err(|_| ApiError::internal())?;
    drop(permit);
    match verdict {
        Ok(user) => {
            let (user, methods) = match &inner.sign_in {
                None => (user, "password".to_string()),
                Some(plugins) => {
                    let answers = body.answers.into_iter().collect();
                    match plugins.check(user, peer.addr, via, answers).await {
                        crate::SignInVerdict::Accept { user, methods } => (user, methods),
                        crate::SignInVerdict::Ask(question) => {
                            let mut e = ApiError::unauthorized(format!(
                                "the sign-in needs an answer: {}",
                                question.prompt.trim()
                            ));
                            e.code = "answer_needed";
                            e.question = Some(question);
                            return Err(e);
                        }
                        crate::SignInVerdict::Refused(line) => {
                            // A wrong one-time code counts like a wrong password.
                            inner.limiter.failed(ip, &body.user);
                            return Err(ApiError::unauthorized(line));
                        }
                    }
                }
            };
            inner.limiter.succeeded(&body.user);
            let issued = inner
                .tokens
                .issue(&user.name, body.ttl_seconds.map(Duration::from_secs))?;
            inner.auditor.record_best_effort(
                Entry::new(AuditKind::LoginOk, format!("{what} ({methods})"))
                    .user(user.name.to_string())
                    .client(peer.addr.to_string())
                    .session(format!("{via}-{}", issued.id))
                    .field("protocol", via)
                    .field("methods", methods.as_str()),
            );
            Ok((user, issued))
        }
        // The store is away: nothing could be checked; not a failed attempt.
        Err(gatehouse_auth::AuthError::Store(e @ gatehouse_store::StoreError::Unavailable(_))) => {
            Err(ApiError::store(e))
        }
        Err(e) => {
            inner.limiter.failed(ip, &body.user);
            audit_failure(&e.to_string());
            Err(invalid())
        }
    }
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/api/v1/me", tag = "people", security(("bearer" = [])),
    responses((status = 200, body = MeView), (status = 401, body = ErrorBody)))]
pub async fn me(person: Person) -> Json<MeView> {
    let user = person.actor.user;
    Json(MeView {
        name: user.name.to_string(),
        groups: user.groups.iter().map(|g| g.to_string()).collect(),
        email: user.email,
    })
}

/// Which of the vault's services are on.
#[utoipa::path(get, path = "/api/v1/services", tag = "gateway", security(("bearer" = [])),
    responses((status = 200, body = ServicesView), (status = 401, body = ErrorBody)))]
pub async fn services(
    State(state): State<ApiState>,
    _person: Person,
) -> Result<Json<ServicesView>, ApiError> {
    let toggles = state.inner.store.services().map_err(|e| {
        tracing::error!(error = %e, "reading services");
        ApiError::internal()
    })?;
    let services = gatehouse_core::SERVICE_NAMES
        .iter()
        .map(|n| (n.to_string(), toggles.get(n).unwrap_or(false)))
        .collect();
    Ok(Json(ServicesView { services }))
}

/// The requests you may see: your own and those you may review. Expired ones are ended first.
#[utoipa::path(get, path = "/api/v1/requests", tag = "requests", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = RequestList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list_requests(
    State(state): State<ApiState>,
    person: Person,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<RequestList>, ApiError> {
    let filter = optional_param(query.state.as_deref(), RequestState::parse, |s| {
        format!("unknown state `{s}`")
    })?;
    let workflow = state.inner.workflow.clone();
    let list = tokio::task::spawn_blocking(move || workflow.list(&person.actor, filter))
        .await
        .map_err(|_| ApiError::internal())??;
    Ok(Json(RequestList {
        requests: list.iter().map(RequestView::from).collect(),
    }))
}

/// A request waiting for you, with the policies that let you approve it.
#[derive(Serialize, ToSchema)]
pub struct InboxItem {
    pub request: RequestView,
    /// The policies that let you approve it.
    pub policies: Vec<String>,
    /// Approvals given so far, and how many it needs (`null`: as policy decides).
    pub approvals_given: usize,
    pub approvals_needed: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct Inbox {
    /// How many wait for you (the portal's badge).
    pub count: usize,
    pub items: Vec<InboxItem>,
}

/// Your approver inbox: requests waiting for approval that you may approve and have not yet
/// (never your own), oldest first.
#[utoipa::path(get, path = "/api/v1/inbox", tag = "requests", security(("bearer" = [])),
    responses((status = 200, body = Inbox), (status = 401, body = ErrorBody)))]
pub async fn inbox(State(state): State<ApiState>, person: Person) -> Result<Json<Inbox>, ApiError> {
    let workflow = state.inner.workflow.clone();
    let waiting = tokio::task::spawn_blocking(move || workflow.inbox(&person.actor))
        .await
        .map_err(|_| ApiError::internal())??;
    let items: Vec<InboxItem> = waiting
        .iter()
        .map(|(r, policies)| InboxItem {
            request: RequestView::from(r),
            policies: policies.clone(),
            approvals_given: r.approvals.len(),
            approvals_needed: r.approvals_needed,
        })
        .collect();
    Ok(Json(Inbox {
        count: items.len(),
        items,
    }))
}

/// File a request. Policies decide whether you may ask, whether it is approved at once, and
/// how many approvals it needs; approvers are emailed.
#[utoipa::path(post, path = "/api/v1/requests", tag = "requests", request_body = NewRequestBody,
    security(("bearer" = [])),
    responses((status = 201, body = RequestView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 502, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create_request(
    State(state): State<ApiState>,
    person: Person,
    JsonBody(body): JsonBody<NewRequestBody>,
) -> Result<Response, ApiError> {
    let new = body.parse()?;
    let created = state
        .inner
        .workflow
        .create(&person.actor, new, "api")
        .await?;
    Ok((StatusCode::CREATED, Json(RequestView::from(&created))).into_response())
}

/// One request (its requester or a reviewer; 404 for anyone else).
#[utoipa::path(get, path = "/api/v1/requests/{id}", tag = "requests",
    params(("id" = String, Path, description = "request id")), security(("bearer" = [])),
    responses((status = 200, body = RequestView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_request(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let request = state.inner.workflow.get(&person.actor, &id)?;
    Ok(Json(RequestView::from(&request)))
}

fn comment(body: OptionalBody<CommentBody>) -> String {
    body.0.comment
}

/// Approve (policy `approve`; never your own request when the policies say so).
#[utoipa::path(post, path = "/api/v1/requests/{id}/approve", tag = "requests",
    params(("id" = String, Path)), request_body(content = CommentBody, description = "optional"),
    security(("bearer" = [])),
    responses((status = 200, body = RequestView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
    body: OptionalBody<CommentBody>,
) -> Result<Json<RequestView>, ApiError> {
    let r = state
        .inner
        .workflow
        .approve(&person.actor, &id, &comment(body))?;
    Ok(Json(RequestView::from(&r)))
}

/// Deny (policy `reject`); one denial ends the request.
#[utoipa::path(post, path = "/api/v1/requests/{id}/deny", tag = "requests",
    params(("id" = String, Path)), request_body(content = CommentBody, description = "optional"),
    security(("bearer" = [])),
    responses((status = 200, body = RequestView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn deny(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
    body: OptionalBody<CommentBody>,
) -> Result<Json<RequestView>, ApiError> {
    let r = state
        .inner
        .workflow
        .deny(&person.actor, &id, &comment(body))?;
    Ok(Json(RequestView::from(&r)))
}

/// Withdraw your own request before it is used.
#[utoipa::path(post, path = "/api/v1/requests/{id}/cancel", tag = "requests",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = RequestView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let r = state.inner.workflow.cancel(&person.actor, &id)?;
    Ok(Json(RequestView::from(&r)))
}

/// Take back granted access (reviewers); sessions under it are closed.
#[utoipa::path(post, path = "/api/v1/requests/{id}/revoke", tag = "requests",
    params(("id" = String, Path)), request_body(content = CommentBody, description = "optional"),
    security(("bearer" = [])),
    responses((status = 200, body = RequestView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
    body: OptionalBody<CommentBody>,
) -> Result<Json<RequestView>, ApiError> {
    let r = state
        .inner
        .workflow
        .revoke(&person.actor, &id, &comment(body))?;
    Ok(Json(RequestView::from(&r)))
}

/// Check in: end the access early. A credential change is flagged when the account asks for
/// one after check-in.
#[utoipa::path(post, path = "/api/v1/requests/{id}/checkin", tag = "requests",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = RequestView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn check_in(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Json<RequestView>, ApiError> {
    let r = state.inner.workflow.check_in(&person.actor, &id)?;
    Ok(Json(RequestView::from(&r)))
}

/// Show the released password or private key (requester, inside the window; audited).
#[utoipa::path(post, path = "/api/v1/requests/{id}/credential", tag = "requests",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = CredentialView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn release(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let released = state.inner.workflow.release(&person.actor, &id)?;
    let (password, private_key) = password_or_key(released.kind, &released.secret);
    Ok(no_store(
        Json(CredentialView {
            request: released.request.id.clone(),
            target: released.request.target(),
            kind: released.kind.as_str().into(),
            password,
            private_key,
            window_end: released.request.window_end.map(time),
            view: released.request.views,
            policies: released.policies,
        })
        .into_response(),
    ))
}

/// An access string for a granted session request: an `ssh` command line with a single-use
/// token bound to you and the request, and for an asset with RDP an `.rdp` file with the same
/// token.
#[utoipa::path(post, path = "/api/v1/requests/{id}/access-string", tag = "requests",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = AccessStringView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn access_string(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let issued = state.inner.workflow.access_string(&person.actor, &id)?;
    Ok(no_store(
        Json(AccessStringView {
            request: issued.request.clone(),
            command: issued.command.clone(),
            rdp_file: issued.rdp_file.clone(),
            expires_at: time(issued.expires),
            node: issued.node.clone(),
        })
        .into_response(),
    ))
}

/// A2A: retrieve the credential the API key is bound to. Needs the registered client
/// certificate on the TLS connection, `Authorization: A2A <key>`, an allowed source address and
/// a permit for `a2a_retrieve`.
#[utoipa::path(get, path = "/api/v1/a2a/credential", tag = "a2a", params(A2aQuery),
    security(("a2a" = [])),
    responses((status = 200, body = A2aCredentialView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn a2a_credential(
    State(state): State<ApiState>,
    caller: A2aCaller,
    QueryParams(query): QueryParams<A2aQuery>,
) -> Result<Response, ApiError> {
    let want = optional_param(query.kind.as_deref(), AccessKind::parse, |k| {
        format!("kind `{k}` is not password or private_key")
    })?;
    let credential = state
        .inner
        .workflow
        .a2a_retrieve(&caller.peer, &caller.key, want)
        .await?;
    let (password, private_key) = password_or_key(credential.kind, &credential.secret);
    Ok(no_store(
        Json(A2aCredentialView {
            target: credential.target.to_string(),
            kind: credential.kind.as_str().into(),
            password,
            private_key,
        })
        .into_response(),
    ))
}

/// A2A broker: file an access request on a user's behalf (broker applications only).
#[utoipa::path(post, path = "/api/v1/a2a/requests", tag = "a2a", request_body = BrokerRequestBody,
    security(("a2a" = [])),
    responses((status = 201, body = RequestView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn a2a_request(
    State(state): State<ApiState>,
    caller: A2aCaller,
    JsonBody(body): JsonBody<BrokerRequestBody>,
) -> Result<Response, ApiError> {
    let on_behalf_of = body.on_behalf_of.clone();
    let new = NewRequestBody {
        target: body.target,
        access: body.access,
        reason: body.reason,
        ticket: body.ticket,
        duration_minutes: body.duration_minutes,
        emergency: body.emergency,
    }
    .parse()?;
    let created = state
        .inner
        .workflow
        .a2a_broker_request(&caller.peer, &caller.key, &on_behalf_of, new)
        .await?;
    Ok((StatusCode::CREATED, Json(RequestView::from(&created))).into_response())
}
