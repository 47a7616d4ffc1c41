//! Session recordings over the API and the player page: list the sessions the caller may watch
//! (`view_recording`), a session's record and searchable events (commands, file transfers,
//! keystrokes, clipboard), an RDP session as a WebM video, an SSH session's terminal text.
//! Every look at one session is a Cedar decision and is audited; an unknown session and a
//! refused one are the same 404.

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use crate::routes::QueryParams;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_core::SessionRecord;
use gatehouse_recording::{EventRecord, RecordedSession};
use gatehouse_store::SESSIONS;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// Renders an RDP session's recording to a video the browser plays. The binary provides it
/// (the API knows nothing of RDP); rendering is slow, so it is cached by the renderer.
pub trait VideoRenderer: Send + Sync {
    /// Blocking: a WebM file of session `id`, rendered now or earlier.
    fn webm(&self, id: &str) -> Result<PathBuf, String>;
}

/// Where recordings are and how videos are made.
#[derive(Clone)]
pub struct Recordings {
    pub dir: PathBuf,
    pub renderer: Option<Arc<dyn VideoRenderer>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only sessions of this gateway user.
    pub user: Option<String>,
    /// Only sessions whose events (commands, keystrokes, clipboard, files) contain this text
    /// (case-insensitive).
    pub contains: Option<String>,
    /// At most this many, newest first (default 100).
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub user: String,
    pub target: String,
    pub protocol: String,
    pub client: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub error: Option<String>,
    /// `video` (RDP: `GET .../video`) or `transcript` (SSH: `GET .../transcript`).
    pub playback: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionDetail {
    pub session: SessionView,
    /// `events.jsonl`: seconds since the recording started, the channel, what happened.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<EventRecord>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "serving a recording");
    ApiError::internal()
}

fn view(record: &SessionRecord) -> SessionView {
    SessionView {
        id: record.id.clone(),
        user: record.user.clone(),
        target: format!("{}@{}", record.account, record.asset),
        protocol: record.protocol.clone(),
        client: record.client.clone(),
        started_at: crate::routes::time(record.started),
        ended_at: record.ended.map(crate::routes::time),
        bytes_up: record.bytes_up,
        bytes_down: record.bytes_down,
        error: record.error.clone(),
        playback: if record.protocol == "rdp" {
            "video"
        } else {
            "transcript"
        }
        .into(),
    }
}

fn events_of(state: &ApiState, id: &str) -> Vec<EventRecord> {
    RecordedSession::open(&state.inner.recordings.dir, id)
        .and_then(|r| r.events())
        .unwrap_or_default()
}

fn events_contain(events: &[EventRecord], needle: &str) -> bool {
    events.iter().any(|e| {
        serde_json::to_string(&e.event)
            .map(|text| text.to_lowercase().contains(needle))
            .unwrap_or(false)
    })
}

/// The sessions you may watch, newest first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", params(SessionQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ErrorBody)))]
pub async fn list_sessions(
    State(state): State<ApiState>,
    person: Person,
    QueryParams(query): QueryParams<SessionQuery>,
) -> Result<Response, ApiError> {
    let workflow = state.inner.workflow.clone();
    let store = state.inner.store.clone();
    let limit = query.limit.unwrap_or(100).min(1000);
    let needle = query.contains.map(|c| c.to_lowercase());
    let searched = state.clone();
    let sessions = tokio::task::spawn_blocking(move || -> Result<Vec<SessionView>, ApiError> {
        let mut records: Vec<SessionRecord> = store.list(&SESSIONS).map_err(internal)?;
        records.sort_by_key(|r| std::cmp::Reverse(r.started));
        Ok(records
            .into_iter()
            .filter(|r| query.user.as_ref().is_none_or(|u| &r.user == u))
            .filter(|r| workflow.may_view_recording(&person.actor, r))
            .filter(|r| {
                needle
                    .as_ref()
                    .is_none_or(|n| events_contain(&events_of(&searched, &r.id), n))
            })
            .take(limit)
            .map(|r| view(&r))
            .collect())
    })
    .await
    .map_err(internal)??;
    Ok(crate::routes::no_store(
        Json(SessionList { sessions }).into_response(),
    ))
}

/// One session: its record and its events (commands, files, keystrokes, clipboard).
#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = SessionDetail), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get_session(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .inner
        .workflow
        .view_recording(&person.actor, &id, "events")?;
    let events = events_of(&state, &id);
    Ok(crate::routes::no_store(
        Json(SessionDetail {
            session: view(&record),
            events,
        })
        .into_response(),
    ))
}

/// An RDP session as a WebM video (rendered on first request, then cached).
#[utoipa::path(get, path = "/api/v1/sessions/{id}/video", tag = "sessions",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "video/webm"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn session_video(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .inner
        .workflow
        .view_recording(&person.actor, &id, "video")?;
    if record.protocol != "rdp" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_video",
            format!("session `{id}` is a terminal session: GET /api/v1/sessions/{id}/transcript"),
        ));
    }
    let Some(renderer) = state.inner.recordings.renderer.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_renderer",
            "this gateway does not render videos",
        ));
    };
    // One rendering at a time: it is CPU-bound and the gateway has sessions to relay.
    let _permit = state.inner.renders.acquire().await.map_err(internal)?;
    let rendered = tokio::task::spawn_blocking(move || renderer.webm(&id))
        .await
        .map_err(internal)?;
    let path = rendered.map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_rendered",
            format!("the recording cannot be rendered: {e}"),
        )
    })?;
    let file = tokio::fs::File::open(&path).await.map_err(internal)?;
    let length = file.metadata().await.map_err(internal)?.len();
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(crate::routes::no_store(response))
}

/// An SSH session's terminal output as plain text (escape sequences removed), first recorded
/// channel.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/transcript", tag = "sessions",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "text/plain"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn session_transcript(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let record = state
        .inner
        .workflow
        .view_recording(&person.actor, &id, "transcript")?;
    if record.protocol == "rdp" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_terminal",
            format!("session `{id}` is an RDP session: GET /api/v1/sessions/{id}/video"),
        ));
    }
    let dir = state.inner.recordings.dir.clone();
    let text = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let recorded = RecordedSession::open(&dir, &id).map_err(|e| e.to_string())?;
        let channel = recorded
            .channels()
            .map_err(|e| e.to_string())?
            .first()
            .copied()
            .ok_or_else(|| "no terminal channel was recorded".to_string())?;
        gatehouse_recording::text(&recorded.channel_path(channel)).map_err(|e| e.to_string())
    })
    .await
    .map_err(internal)?
    .map_err(|e| ApiError::new(StatusCode::CONFLICT, "no_transcript", e))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(crate::routes::no_store(response))
}

const PLAYER_HTML: &str = include_str!("player/player.html");
const PLAYER_JS: &str = include_str!("player/player.js");
const PLAYER_CSS: &str = include_str!("player/player.css");
/// Only the gateway's own script and data; videos come as blobs fetched with the token.
const PLAYER_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; media-src blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn static_page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PLAYER_CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The recordings player: log in, find a session, watch it with its events beside it.
pub async fn player_page() -> Response {
    static_page(PLAYER_HTML, "text/html; charset=utf-8")
}

pub async fn player_script() -> Response {
    static_page(PLAYER_JS, "text/javascript; charset=utf-8")
}

pub async fn player_style() -> Response {
    static_page(PLAYER_CSS, "text/css; charset=utf-8")
}
