//! Browser sign-in for the portal: the same password check as `POST /api/v1/login`, but the
//! token travels in a cookie the page's script cannot read (`__Host-gatehouse`: HttpOnly,
//! Secure, SameSite=Strict, Path=/), every state-changing request must carry the session's
//! CSRF token in `X-CSRF-Token`, a session that sees no request for the idle timeout ends, and
//! logging out ends it at once. Cookie sessions are kept in the store: every control node on a
//! shared store knows them, and a restart signs nobody out; bearer tokens work as before.

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{JsonBody, LoginBody};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_core::{PortalSession, time::Timestamp};
use gatehouse_store::{PORTAL_SESSIONS, Store, StoreError};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// The cookie that carries a portal session.
pub const COOKIE: &str = "__Host-gatehouse";
/// The header that carries its CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Portal sessions, kept in the store (token id -> user and last request): every control node
/// on one store knows them, and a restart signs nobody out.
pub struct PortalSessions {
    store: Arc<Store>,
    idle: Duration,
}

/// Why a cookie session was not accepted.
pub enum Refused {
    Unknown,
    Idle,
    /// The store could not be asked.
    Store(StoreError),
}

/// A session's last request is written at most this often, or every quarter of the idle
/// timeout when that is shorter (the timeout is that exact).
const TOUCH_EVERY_MS: u64 = 10_000;

impl PortalSessions {
    pub fn new(store: Arc<Store>, idle: Duration) -> Self {
        Self { store, idle }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    fn idle_ms(&self) -> u64 {
        self.idle.as_millis() as u64
    }

    fn start(&self, id: &str, user: &str, may: Vec<String>) -> Result<(), StoreError> {
        let now = Timestamp::now();
        let idle = self.idle_ms();
        self.store.write(|t| {
            // Sessions nobody ended: gone once idle.
            for (key, session) in t.entries(&PORTAL_SESSIONS)? {
                if now.0.saturating_sub(session.last_seen.0) >= idle {
                    t.delete(&PORTAL_SESSIONS, &key)?;
                }
            }
            t.put(
                &PORTAL_SESSIONS,
                id,
                &PortalSession {
                    user: user.to_string(),
                    started: now,
                    last_seen: now,
                    may,
                },
            )
        })
    }

    /// Session `id` is used now: `Err` when it is unknown (logged out) or was idle too long
    /// (it is then ended).
    pub fn touch(&self, id: &str) -> Result<(), Refused> {
        let now = Timestamp::now();
        let session = self
            .store
            .get(&PORTAL_SESSIONS, id)
            .map_err(Refused::Store)?
            .ok_or(Refused::Unknown)?;
        let quiet = now.0.saturating_sub(session.last_seen.0);
        if quiet >= self.idle_ms() {
            let _ = self.store.write(|t| t.delete(&PORTAL_SESSIONS, id));
            return Err(Refused::Idle);
        }
        if quiet >= TOUCH_EVERY_MS.min(self.idle_ms() / 4) {
            let seen = PortalSession {
                last_seen: now,
                ..session
            };
            self.store
                .write(|t| t.put(&PORTAL_SESSIONS, id, &seen))
                .map_err(Refused::Store)?;
        }
        Ok(())
    }

    fn end(&self, id: &str) -> Result<(), StoreError> {
        self.store
            .write(|t| t.delete(&PORTAL_SESSIONS, id))
            .map(|_| ())
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

#[derive(Serialize, ToSchema)]
pub struct PortalLoginView {
    pub user: String,
    /// Send as `X-CSRF-Token` with every request that changes something.
    pub csrf_token: String,
    /// When the session ends at the latest.
    pub expires_at: String,
    /// The session ends after this many seconds without a request.
    pub idle_seconds: u64,
}

fn session_cookie(value: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("__Host-gatehouse=; Path=/; Max-Age=0"))
}

/// Sign in to the portal: the session token goes in an HttpOnly cookie, the CSRF token in the
/// answer. Failed attempts are rate-limited like `POST /api/v1/login`.
#[utoipa::path(post, path = "/api/v1/portal/login", tag = "people", request_body = LoginBody,
    responses((status = 200, body = PortalLoginView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn portal_login(
    State(state): State<ApiState>,
    axum::Extension(peer): axum::Extension<crate::Peer>,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    let (user, issued) = crate::routes::check_login(&state, &peer, body, "portal").await?;
    let inner = &state.inner;
    let workflow = inner.workflow.clone();
    let (checked, client) = (user.clone(), peer.addr);
    let may = tokio::task::spawn_blocking(move || workflow.admin_capabilities(&checked, client))
        .await
        .map_err(|_| ApiError::internal())?;
    inner
        .portal
        .start(
            &issued.id,
            user.name.as_str(),
            may.into_iter().map(str::to_string).collect(),
        )
        .map_err(ApiError::store)?;
    let csrf_token = inner.tokens.csrf(&issued.id)?;
    let max_age = issued
        .expires
        .0
        .saturating_sub(gatehouse_core::time::Timestamp::now().0)
        / 1000;
    let view = PortalLoginView {
        user: user.name.to_string(),
        csrf_token,
        expires_at: crate::routes::time(issued.expires),
        idle_seconds: inner.portal.idle().as_secs(),
    };
    let mut response = crate::routes::no_store(Json(view).into_response());
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&issued.token, max_age));
    Ok(response)
}

/// Who is signed in, if anyone: the page's first question. Always 200, so that a visitor who
/// has not signed in yet meets no error (`signed_in: false`).
#[derive(Serialize, ToSchema)]
pub struct PortalSessionView {
    pub signed_in: bool,
    pub user: Option<String>,
    pub groups: Vec<String>,
    /// Admin actions policy allowed at sign-in (`view_cluster`, `manage_cluster`,
    /// `view_policies`, `manage_services`): which admin pages to show.
    pub may: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/portal/session", tag = "people",
    responses((status = 200, body = PortalSessionView)))]
pub async fn portal_session(
    State(state): State<ApiState>,
    person: Result<Person, ApiError>,
) -> Response {
    let view = match person {
        Ok(person) => PortalSessionView {
            may: person
                .actor
                .session_id
                .strip_prefix("portal-")
                .and_then(|id| state.inner.store.get(&PORTAL_SESSIONS, id).ok().flatten())
                .map(|s| s.may)
                .unwrap_or_default(),
            signed_in: true,
            user: Some(person.actor.user.name.to_string()),
            groups: person
                .actor
                .user
                .groups
                .iter()
                .map(|g| g.to_string())
                .collect(),
        },
        Err(_) => PortalSessionView {
            signed_in: false,
            user: None,
            groups: Vec::new(),
            may: Vec::new(),
        },
    };
    crate::routes::no_store(Json(view).into_response())
}

/// Sign out of the portal: the session ends now and the cookie is cleared.
#[utoipa::path(post, path = "/api/v1/portal/logout", tag = "people",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn portal_logout(State(state): State<ApiState>, person: Person) -> Response {
    if let Some(id) = person.actor.session_id.strip_prefix("portal-")
        && let Err(e) = state.inner.portal.end(id)
    {
        return ApiError::store(e).into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0));
    response
}

/// How a person can use an account one way: `now`, or `request` (after an approved request).
#[derive(Serialize, ToSchema)]
pub struct AccessView {
    /// `account@asset`.
    pub target: String,
    pub account: String,
    pub asset: String,
    pub protocols: Vec<String>,
    #[schema(value_type = Option<String>)]
    pub ssh: Option<gatehouse_workflow::Way>,
    #[schema(value_type = Option<String>)]
    pub rdp: Option<gatehouse_workflow::Way>,
    #[schema(value_type = Option<String>)]
    pub password: Option<gatehouse_workflow::Way>,
    #[schema(value_type = Option<String>)]
    pub private_key: Option<gatehouse_workflow::Way>,
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct AccessQuery {
    /// Only targets (`account@asset`) containing this text.
    pub q: Option<String>,
}

/// My access: every account you can use and how (a session now or after approval, a password
/// or key release), as Cedar decides it for you now.
#[utoipa::path(get, path = "/api/v1/access", tag = "people", params(AccessQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [AccessView]), (status = 401, body = ErrorBody)))]
pub async fn my_access(
    State(state): State<ApiState>,
    person: Person,
    axum::extract::Query(query): axum::extract::Query<AccessQuery>,
) -> Result<Json<Vec<AccessView>>, ApiError> {
    let workflow = state.inner.workflow.clone();
    let filter = query.q.filter(|q| !q.trim().is_empty());
    let entries =
        tokio::task::spawn_blocking(move || workflow.my_access(&person.actor, filter.as_deref()))
            .await
            .map_err(|_| ApiError::internal())??;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| AccessView {
                target: e.target,
                account: e.account,
                asset: e.asset,
                protocols: e.protocols,
                ssh: e.ssh,
                rdp: e.rdp,
                password: e.password,
                private_key: e.private_key,
            })
            .collect(),
    ))
}

const PORTAL_HTML: &str = include_str!("portal_ui/portal.html");
const PORTAL_JS: &str = include_str!("portal_ui/portal.js");
const PORTAL_CSS: &str = include_str!("portal_ui/portal.css");
/// Only the portal's own script and style; it talks to this origin's API and nothing else.
const PORTAL_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = crate::sessions::static_file(body, content_type, PORTAL_CSP);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The portal: sign in, my access, my requests, approvals.
pub async fn portal_page() -> Response {
    static_file(PORTAL_HTML, "text/html; charset=utf-8")
}

pub async fn portal_script() -> Response {
    static_file(PORTAL_JS, "text/javascript; charset=utf-8")
}

pub async fn portal_style() -> Response {
    static_file(PORTAL_CSS, "text/css; charset=utf-8")
}

/// `/` leads to the portal.
pub async fn root() -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/portal"));
    response
}
