//! `GET /api/v1/search`: full-text search over the sessions the caller may watch
//! (`view_recording`), each hit a moment of a recording with where the player shows it.

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use crate::routes::QueryParams;
use crate::sessions::TERMINAL_IDLE_LIMIT;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_core::SessionRecord;
use gatehouse_recording::RecordedSession;
use gatehouse_search::{Hit, SearchError};
use gatehouse_store::SESSIONS;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The query: words and "phrases" (what a session showed, commands, file names, typing),
    /// `text:` / `input:` for output or echoed typed lines only, `user:`, `target:`, `asset:`,
    /// `account:`, `node:`, `protocol:`, `kind:`, `session:`, `after:` / `before:` (a date, a
    /// time or an age such as `7d`). docs/search.md has the whole syntax.
    pub q: String,
    /// At most this many hits, best first (default 20, at most 200).
    pub limit: Option<usize>,
}

/// One hit: a moment of a session.
#[derive(Serialize, ToSchema)]
pub struct SearchHit {
    pub session: String,
    pub user: String,
    pub target: String,
    pub protocol: String,
    pub node: Option<String>,
    /// `output`, `input`, `command`, `file`, `keys` or `clipboard`.
    pub kind: String,
    /// The terminal channel (`GET /api/v1/sessions/{id}/cast?channel=`).
    pub channel: Option<u32>,
    /// Seconds since the session's recording started, as its events count time.
    pub time: f64,
    /// When it happened (RFC 3339).
    pub at: String,
    /// Where the player shows it, in seconds of what it plays: the channel's cast (shortened
    /// pauses subtracted) or an RDP or VNC session's video (`null` until it is rendered).
    pub playback_time: Option<f64>,
    /// The matched text with context; `highlights` are byte ranges of it.
    pub snippet: String,
    pub highlights: Vec<(usize, usize)>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "searching sessions");
    ApiError::internal()
}

/// Where the player shows `hit`.
fn playback_time(state: &ApiState, hit: &Hit) -> Option<f64> {
    let recordings = &state.inner.recordings;
    if crate::sessions::is_video(&hit.protocol) {
        let renderer = recordings.renderer.as_ref()?;
        return match renderer.video_times(&hit.session, &[hit.time]) {
            Ok(Some(times)) => times.first().copied(),
            _ => None,
        };
    }
    let (channel, cast_time) = (hit.channel?, hit.cast_time?);
    let recorded = RecordedSession::open(&recordings.dir, &hit.session).ok()?;
    let cuts = gatehouse_recording::idle_cuts(&recorded.channel_path(channel), TERMINAL_IDLE_LIMIT)
        .ok()?;
    Some(cuts.playback_time(cast_time))
}

/// Search the sessions you may watch.
#[utoipa::path(get, path = "/api/v1/search", tag = "sessions", params(SearchQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SearchResults), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn search_sessions(
    State(state): State<ApiState>,
    person: Person,
    QueryParams(query): QueryParams<SearchQuery>,
) -> Result<Response, ApiError> {
    let Some(index) = state.inner.recordings.search.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "search_off",
            "session search is off on this gateway (its log says why)",
        ));
    };
    let limit = query.limit.unwrap_or(20).clamp(1, 200);
    let inner = state.clone();
    let (searcher, client) = (
        person.actor.user.name.to_string(),
        person.actor.client.to_string(),
    );
    let text = query.q.clone();
    let hits = tokio::task::spawn_blocking(move || -> Result<Vec<SearchHit>, ApiError> {
        let workflow = &inner.inner.workflow;
        // Only sessions the caller may watch are searched: others are not hinted at.
        let records: Vec<SessionRecord> = inner.inner.store.list(&SESSIONS).map_err(internal)?;
        let allowed: HashSet<String> = records
            .into_iter()
            .filter(|r| workflow.may_view_recording(&person.actor, r))
            .map(|r| r.id)
            .collect();
        let hits = index
            .search(&query.q, Some(&allowed), limit)
            .map_err(|e| match e {
                e @ SearchError::Query(_) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.to_string())
                }
                other => internal(other),
            })?;
        Ok(hits
            .into_iter()
            .map(|hit| SearchHit {
                playback_time: playback_time(&inner, &hit),
                session: hit.session,
                user: hit.user,
                target: hit.target,
                protocol: hit.protocol,
                node: hit.node,
                kind: hit.kind,
                channel: hit.channel,
                time: hit.time,
                at: hit.at,
                snippet: hit.snippet,
                highlights: hit.highlights,
            })
            .collect())
    })
    .await
    .map_err(internal)??;
    // Who looked for what in the recordings is itself on the record.
    let sessions: std::collections::BTreeSet<&str> =
        hits.iter().map(|h| h.session.as_str()).collect();
    state.inner.auditor.record_best_effort(
        gatehouse_audit::Entry::new(
            gatehouse_core::AuditKind::RecordingsSearched,
            format!(
                "`{searcher}` searched the recordings: {} hits in {} sessions",
                hits.len(),
                sessions.len()
            ),
        )
        .user(searcher)
        .client(client)
        .field("query", text)
        .field("hits", hits.len())
        .field("sessions", serde_json::json!(sessions)),
    );
    Ok(crate::routes::no_store(
        Json(SearchResults { hits }).into_response(),
    ))
}
