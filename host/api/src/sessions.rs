//! Session recordings over the API and the player page: list the sessions the caller may watch
//! (`view_recording`), search them (events, and the text an SSH terminal showed), a session's
//! record and events (commands, file transfers, keystrokes, clipboard) with where each is in
//! the playback, an RDP or VNC session as a WebM video, an SSH session's terminal as an
//! asciicast for the browser's terminal player or as plain text. Every look at one session is
//! a Cedar decision and is audited; an unknown session and a refused one are the same 404.
//!
//! Playback times come from the same cuts as the playback itself: a video's idle cuts
//! ([`VideoRenderer::video_times`]), a terminal recording's shortened pauses
//! ([`gatehouse_recording::playback`]); a player seeking to an event's `playback_time` shows
//! that event.

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use crate::routes::QueryParams;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_core::SessionRecord;
use gatehouse_core::time::Timestamp;
use gatehouse_recording::{EventRecord, RecordedSession, RecordingEvent};
use gatehouse_store::SESSIONS;
use serde::{Deserialize, Serialize};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// Renders an RDP or VNC session's screen recording to a video the browser plays. The binary
/// provides it (the API knows nothing of RDP or VNC); rendering is slow, so it is cached by the
/// renderer.
pub trait VideoRenderer: Send + Sync {
    /// Blocking: a WebM file of session `id`, rendered now or earlier.
    fn webm(&self, id: &str) -> Result<PathBuf, String>;

    /// Blocking: where the rendered video of session `id` shows each of `times` (seconds of
    /// the recording), in seconds of the video, through the idle cuts that rendering made;
    /// `None` while the video is not rendered from the current recording (nothing is rendered
    /// here).
    fn video_times(&self, id: &str, times: &[f64]) -> Result<Option<Vec<f64>>, String>;
}

/// Pauses of a terminal recording longer than this are shortened to it for playback.
pub const TERMINAL_IDLE_LIMIT: Duration = Duration::from_secs(2);

/// Where recordings are and how videos are made.
#[derive(Clone)]
pub struct Recordings {
    pub dir: PathBuf,
    pub renderer: Option<Arc<dyn VideoRenderer>>,
    /// The session search index (`GET /api/v1/search`); `None`: search is off.
    pub search: Option<Arc<gatehouse_search::SearchIndex>>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only sessions of this gateway user.
    pub user: Option<String>,
    /// Only sessions whose events (commands, keystrokes, clipboard, files) or whose terminal
    /// output (what an SSH shell showed, typed text echoed included, escape sequences removed)
    /// contain this text (case-insensitive).
    pub contains: Option<String>,
    /// Only sessions whose target (`account@asset`) contains this text.
    pub target: Option<String>,
    /// Only sessions of this protocol (`ssh`, `rdp`, `telnet`, `vnc`).
    pub protocol: Option<String>,
    /// Only sessions run by this session node (`-`: by this gateway itself).
    pub node: Option<String>,
    /// `running` or `ended`.
    pub state: Option<String>,
    /// Only sessions started at or after this moment: a date (2026-12-01), a time
    /// (2026-12-01T08:00:00Z) or an age (7d, 2h).
    pub after: Option<String>,
    /// Only sessions started before this moment, in the same forms.
    pub before: Option<String>,
    /// `started` (default), `duration`, `bytes` or `user`.
    pub sort: Option<String>,
    /// `desc` (default) or `asc`.
    pub order: Option<String>,
    /// Skip this many (pagination; `total` says how many match).
    pub offset: Option<usize>,
    /// At most this many (default 100, at most 1000).
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
    /// Seconds it ran (so far, for a running session).
    pub duration_secs: u64,
    /// The session node that ran it; `null`: this gateway.
    pub node: Option<String>,
    pub error: Option<String>,
    /// `video` (RDP and VNC: the screen, `GET .../video`) or `transcript` (SSH and Telnet: a
    /// terminal recording, played from `GET .../cast`, as text from `GET .../transcript`).
    pub playback: String,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    /// How many sessions match (before `offset` and `limit`).
    pub total: usize,
}

#[derive(Serialize, ToSchema)]
pub struct SessionDetail {
    pub session: SessionView,
    /// `events.jsonl` (`time`: seconds since the recording started, `channel`, `type` and what
    /// happened), each with `wall_time` (RFC 3339, when it happened) and `playback_time`:
    /// seconds into what the player plays, where it shows the event: the video of an RDP or
    /// VNC session (idle cuts subtracted; `null` until the video has been rendered, see
    /// `GET .../video`), or the first terminal's cast of an SSH session (`GET .../cast`,
    /// shortened pauses subtracted; `null` for events of other channels).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<SessionEvent>,
    /// The terminal channels recorded (SSH), for `GET .../cast?channel=`.
    pub terminals: Vec<u32>,
}

/// One event of [`SessionDetail`].
#[derive(Serialize)]
pub struct SessionEvent {
    #[serde(flatten)]
    pub record: EventRecord,
    pub wall_time: String,
    pub playback_time: Option<f64>,
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
        duration_secs: duration_ms(record) / 1000,
        node: record.node.clone(),
        error: record.error.clone(),
        playback: if is_video(&record.protocol) {
            "video"
        } else {
            "transcript"
        }
        .into(),
    }
}

/// Whether sessions of `protocol` record a screen, played as a video (`GET .../video`).
pub(crate) fn is_video(protocol: &str) -> bool {
    matches!(protocol, "rdp" | "vnc")
}

/// How long `record` ran (so far), in milliseconds.
fn duration_ms(record: &SessionRecord) -> u64 {
    record
        .ended
        .unwrap_or_else(Timestamp::now)
        .0
        .saturating_sub(record.started.0)
}

/// A moment of a query (`after`, `before`), or a clear 400.
fn moment(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        Timestamp::parse_moment(t).map_err(|e| ApiError::bad_request(format!("`{name}`: {e}")))
    })
    .transpose()
}

fn events_contain(events: &[EventRecord], needle: &str) -> bool {
    events.iter().any(|e| {
        serde_json::to_string(&e.event)
            .map(|text| text.to_lowercase().contains(needle))
            .unwrap_or(false)
    })
}

/// Whether session `record`'s events or its terminals' output contain `needle` (lowercase).
/// Only what the target printed is searched, never the keystrokes: a password typed at a
/// prompt that does not echo it is in the input stream alone.
fn session_contains(dir: &FsPath, record: &SessionRecord, needle: &str) -> bool {
    let Ok(recorded) = RecordedSession::open(dir, &record.id) else {
        return false;
    };
    if events_contain(&recorded.events().unwrap_or_default(), needle) {
        return true;
    }
    !is_video(&record.protocol)
        && recorded.channels().unwrap_or_default().iter().any(|&c| {
            gatehouse_recording::output_contains(&recorded.channel_path(c), needle).unwrap_or(false)
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
    let offset = query.offset.unwrap_or(0);
    let needle = query.contains.as_ref().map(|c| c.to_lowercase());
    let after = moment("after", query.after.as_deref())?;
    let before = moment("before", query.before.as_deref())?;
    let running = match query.state.as_deref() {
        None => None,
        Some("running") => Some(true),
        Some("ended") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`state` is `running` or `ended`, not `{other}`"
            )));
        }
    };
    let sort = query.sort.clone().unwrap_or_else(|| "started".into());
    if !["started", "duration", "bytes", "user"].contains(&sort.as_str()) {
        return Err(ApiError::bad_request(format!(
            "`sort` is `started`, `duration`, `bytes` or `user`, not `{sort}`"
        )));
    }
    let ascending = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`order` is `asc` or `desc`, not `{other}`"
            )));
        }
    };
    let dir = state.inner.recordings.dir.clone();
    let list = tokio::task::spawn_blocking(move || -> Result<SessionList, ApiError> {
        let mut records: Vec<SessionRecord> = store.list(&SESSIONS).map_err(internal)?;
        let node_matches = |r: &SessionRecord| match query.node.as_deref() {
            None => true,
            Some("-") => r.node.is_none(),
            Some(node) => r.node.as_deref() == Some(node),
        };
        records.retain(|r| {
            query.user.as_ref().is_none_or(|u| &r.user == u)
                && query
                    .target
                    .as_ref()
                    .is_none_or(|t| format!("{}@{}", r.account, r.asset).contains(t.as_str()))
                && query.protocol.as_ref().is_none_or(|p| &r.protocol == p)
                && node_matches(r)
                && running.is_none_or(|running| r.ended.is_none() == running)
                && after.is_none_or(|a| r.started >= a)
                && before.is_none_or(|b| r.started < b)
        });
        records.retain(|r| workflow.may_view_recording(&person.actor, r));
        if let Some(needle) = &needle {
            records.retain(|r| session_contains(&dir, r, needle));
        }
        match sort.as_str() {
            "duration" => records.sort_by_key(duration_ms),
            "bytes" => records.sort_by_key(|r| r.bytes_up.saturating_add(r.bytes_down)),
            "user" => records.sort_by(|a, b| a.user.cmp(&b.user)),
            _ => records.sort_by_key(|r| r.started),
        }
        if !ascending {
            records.reverse();
        }
        let total = records.len();
        Ok(SessionList {
            sessions: records.iter().skip(offset).take(limit).map(view).collect(),
            total,
        })
    })
    .await
    .map_err(internal)??;
    Ok(crate::routes::no_store(Json(list).into_response()))
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
    let dir = state.inner.recordings.dir.clone();
    let renderer = state.inner.recordings.renderer.clone();
    let detail = tokio::task::spawn_blocking(move || detail(&dir, renderer.as_deref(), &record))
        .await
        .map_err(internal)?;
    Ok(crate::routes::no_store(Json(detail).into_response()))
}

fn detail(
    dir: &FsPath,
    renderer: Option<&dyn VideoRenderer>,
    record: &SessionRecord,
) -> SessionDetail {
    let recorded = RecordedSession::open(dir, &record.id).ok();
    let events = recorded
        .as_ref()
        .and_then(|r| r.events().ok())
        .unwrap_or_default();
    let terminals = match &recorded {
        Some(r) if !is_video(&record.protocol) => r.channels().unwrap_or_default(),
        _ => Vec::new(),
    };
    let playback = if is_video(&record.protocol) {
        video_times(renderer, &record.id, &events)
    } else {
        terminal_times(recorded.as_ref(), &events, terminals.first().copied())
    };
    let started = record.started.to_system_time();
    let events = events
        .into_iter()
        .zip(playback)
        .map(|(record, playback_time)| {
            let at = started + Duration::try_from_secs_f64(record.time).unwrap_or_default();
            SessionEvent {
                wall_time: humantime::format_rfc3339_millis(at).to_string(),
                playback_time,
                record,
            }
        })
        .collect();
    SessionDetail {
        session: view(record),
        events,
        terminals,
    }
}

/// The events' times in the rendered video, `None` while it is not rendered.
fn video_times(
    renderer: Option<&dyn VideoRenderer>,
    id: &str,
    events: &[EventRecord],
) -> Vec<Option<f64>> {
    let times: Vec<f64> = events.iter().map(|e| e.time).collect();
    match renderer.map(|r| r.video_times(id, &times)) {
        Some(Ok(Some(mapped))) if mapped.len() == times.len() => {
            mapped.into_iter().map(Some).collect()
        }
        Some(Err(e)) => {
            tracing::warn!(session = id, error = %e, "cannot map event times to the video");
            vec![None; times.len()]
        }
        _ => vec![None; times.len()],
    }
}

/// The events' times in the played cast of `channel` (session-wide events too): the cast's
/// clock starts at the channel's `recording_started`, and shortened pauses are subtracted.
fn terminal_times(
    recorded: Option<&RecordedSession>,
    events: &[EventRecord],
    channel: Option<u32>,
) -> Vec<Option<f64>> {
    let none = || vec![None; events.len()];
    let (Some(recorded), Some(channel)) = (recorded, channel) else {
        return none();
    };
    let Some(start) = events
        .iter()
        .find(|e| {
            e.channel == Some(channel) && matches!(e.event, RecordingEvent::RecordingStarted { .. })
        })
        .map(|e| e.time)
    else {
        return none();
    };
    let cuts = match gatehouse_recording::idle_cuts(
        &recorded.channel_path(channel),
        TERMINAL_IDLE_LIMIT,
    ) {
        Ok(cuts) => cuts,
        Err(e) => {
            tracing::warn!(session = recorded.id(), error = %e, "cannot read a terminal recording");
            return none();
        }
    };
    events
        .iter()
        .map(|e| {
            (e.channel.is_none() || e.channel == Some(channel))
                .then(|| cuts.playback_time(e.time - start))
        })
        .collect()
}

/// An RDP or VNC session's screen as a WebM video (rendered on first request, then cached).
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
    playable_recording(&state, &person, &id, "video", Playback::Video)?;
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
    // Decrypted as it is sent when the recording is encrypted at rest: a blocking reader feeds
    // a small pipe, so a slow browser holds the reader back rather than filling memory.
    let (length, source) = tokio::task::spawn_blocking(move || {
        let length = gatehouse_recording::crypt::plain_len(&path)?;
        gatehouse_recording::crypt::open(&path).map(|source| (length, source))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    let (pipe, sink) = tokio::io::duplex(64 * 1024);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut source = source;
        let mut sink = tokio_util::io::SyncIoBridge::new(sink);
        // A reader that went away ends the copy; nothing else to do.
        let _ = std::io::copy(&mut source, &mut sink).and_then(|_| sink.flush());
        let _ = sink.shutdown();
    });
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(pipe));
    let mut response = recording_response(body, "video/webm");
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok(response)
}

/// A recording as `content_type`, never cached.
fn recording_response(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    crate::routes::no_store(response)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CastQuery {
    /// The terminal channel (`terminals` of the session); default the first recorded.
    pub channel: Option<u32>,
}

/// An SSH session's terminal for a player: asciicast v2 of what the target printed (output,
/// resizes, markers; the keystrokes are left out), pauses over two seconds shortened to two
/// (`idle_time_limit`), as the events' `playback_time` counts.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/cast", tag = "sessions",
    params(("id" = String, Path), CastQuery), security(("bearer" = [])),
    responses((status = 200, content_type = "application/x-asciicast"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn session_cast(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<CastQuery>,
) -> Result<Response, ApiError> {
    playable_recording(&state, &person, &id, "cast", Playback::Terminal)?;
    let dir = state.inner.recordings.dir.clone();
    let cast = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let path = terminal_path(&dir, &id, query.channel)?;
        let mut out = Vec::new();
        gatehouse_recording::playback(&path, TERMINAL_IDLE_LIMIT, &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    })
    .await
    .map_err(internal)?
    .map_err(|e| ApiError::new(StatusCode::CONFLICT, "no_terminal", e))?;
    Ok(recording_response(cast, "application/x-asciicast"))
}

/// How an endpoint plays a session: an RDP or VNC session as a video, an SSH or Telnet
/// session's terminal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Playback {
    Video,
    Terminal,
}

/// Checks that `person` may view the recording of `id` (audited as `what`) and that the
/// session is one that `playback` plays.
fn playable_recording(
    state: &ApiState,
    person: &Person,
    id: &str,
    what: &str,
    playback: Playback,
) -> Result<(), ApiError> {
    let record = state
        .inner
        .workflow
        .view_recording(&person.actor, id, what)?;
    let video = is_video(&record.protocol);
    match playback {
        Playback::Video if !video => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_video",
            format!("session `{id}` is a terminal session: GET /api/v1/sessions/{id}/transcript"),
        )),
        Playback::Terminal if video => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_terminal",
            format!(
                "session `{id}` is a {} session: GET /api/v1/sessions/{id}/video",
                record.protocol.to_uppercase()
            ),
        )),
        _ => Ok(()),
    }
}

/// The terminal recording of session `id`'s channel `wanted`, or of its first terminal channel.
fn terminal_path(dir: &FsPath, id: &str, wanted: Option<u32>) -> Result<PathBuf, String> {
    let recorded = RecordedSession::open(dir, id).map_err(|e| e.to_string())?;
    let channels = recorded.channels().map_err(|e| e.to_string())?;
    let channel = match wanted {
        Some(wanted) if channels.contains(&wanted) => wanted,
        Some(wanted) => return Err(format!("channel {wanted} has no terminal recording")),
        None => channels
            .first()
            .copied()
            .ok_or_else(|| "no terminal channel was recorded".to_string())?,
    };
    Ok(recorded.channel_path(channel))
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
    playable_recording(&state, &person, &id, "transcript", Playback::Terminal)?;
    let dir = state.inner.recordings.dir.clone();
    let text = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let path = terminal_path(&dir, &id, None)?;
        gatehouse_recording::text(&path).map_err(|e| e.to_string())
    })
    .await
    .map_err(internal)?
    .map_err(|e| ApiError::new(StatusCode::CONFLICT, "no_transcript", e))?;
    Ok(recording_response(text, "text/plain; charset=utf-8"))
}

const PLAYER_HTML: &str = include_str!("player/player.html");
const PLAYER_JS: &str = include_str!("player/player.js");
const PLAYER_CSS: &str = include_str!("player/player.css");
/// asciinema-player 3.17.0 (npm), unmodified: see player/vendor/README.md.
const TERMINAL_PLAYER_JS: &str = include_str!("player/vendor/asciinema-player.min.js");
const TERMINAL_PLAYER_CSS: &str = include_str!("player/vendor/asciinema-player.css");
const FAVICON_ICO: &[u8] = include_bytes!("player/favicon.ico");
const FAVICON_SVG: &str = include_str!("player/favicon.svg");
/// Only the gateway's own scripts, styles and data; videos come as blobs fetched with the
/// token. `'wasm-unsafe-eval'` lets the terminal player compile the WebAssembly embedded in
/// its script (no JavaScript `eval`, no inline script or style).
const PLAYER_CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; connect-src 'self'; media-src blob:; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn static_page(body: impl IntoResponse, content_type: &'static str) -> Response {
    static_file(body, content_type, PLAYER_CSP)
}

/// A file the gateway serves to browsers, under `csp`, not sniffed, sending no referrer.
pub(crate) fn static_file(
    body: impl IntoResponse,
    content_type: &'static str,
    csp: &'static str,
) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
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

pub async fn terminal_player_script() -> Response {
    static_page(TERMINAL_PLAYER_JS, "text/javascript; charset=utf-8")
}

pub async fn terminal_player_style() -> Response {
    static_page(TERMINAL_PLAYER_CSS, "text/css; charset=utf-8")
}

/// The icon browsers ask every page of the gateway for.
pub async fn favicon_ico() -> Response {
    static_page(FAVICON_ICO, "image/x-icon")
}

/// The same icon as SVG, linked from the gateway's pages.
pub async fn favicon_svg() -> Response {
    static_page(FAVICON_SVG, "image/svg+xml")
}
