//! `GET /api/v1/sessions/{id}/live`: a running session as it happens, for whoever policy lets
//! watch it (`watch_session` on the session's account: one Cedar decision per watch, audited
//! with the policy ids; an unknown session and a refused one are the same 404). An SSH terminal
//! streams as asciicast v2 (the header, the recent screen, then `[time, "o", data]` lines as
//! the user's terminal gets them: asciinema's player and `asciinema cat` read it); an RDP or
//! VNC screen as `multipart/x-mixed-replace` PNG frames, which an `<img>` shows as a moving
//! picture. Both end with the session. The session's user is told (SSH) and the watch is on
//! the session's record.

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// One piece of a terminal's live output.
pub enum LiveChunk {
    Output(Vec<u8>),
    /// The watcher fell behind: this many pieces were skipped.
    Skipped(u64),
}

/// A running session's feed.
pub enum LiveFeed {
    Terminal {
        width: u32,
        height: u32,
        /// The recent screen, shown first.
        recent: Vec<u8>,
        chunks: mpsc::Receiver<LiveChunk>,
    },
    /// PNG frames of the screen, each sent when it changed (a few a second at most).
    Screen { frames: mpsc::Receiver<Vec<u8>> },
}

/// Running sessions for the API; the binary provides it (the API knows nothing of SSH, RDP or
/// VNC).
pub trait LiveView: Send + Sync {
    /// Starts watching running session `id` (of `protocol`) for `who`, already permitted;
    /// `None` when it is not running here. Dropping the feed ends the watch.
    fn watch(&self, id: &str, protocol: &str, who: &str) -> Option<LiveFeed>;
}

const BOUNDARY: &str = "gatehouse-frame";
/// How long a live terminal stream stays silent at most.
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// Watch a running session live.
#[utoipa::path(get, path = "/api/v1/sessions/{id}/live", tag = "sessions",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses(
        (status = 200, description = "SSH: an asciicast v2 stream; RDP and VNC: multipart/x-mixed-replace PNG frames", content_type = "application/x-asciicast"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn session_live(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let Some(live) = state.inner.live.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_live_view",
            "this gateway does not show running sessions",
        ));
    };
    let join = gatehouse_core::JoinSpec {
        session: id.clone(),
        keyboard: false,
    };
    let record = state
        .inner
        .workflow
        .authorize_join(&person.actor, &id, &join)?;
    let conflict = |code: &'static str, message: String| {
        Err(ApiError::new(StatusCode::CONFLICT, code, message))
    };
    if record.ended.is_some() {
        return conflict(
            "ended",
            format!(
                "session `{id}` has ended: its recording plays at /api/v1/sessions/{id}/cast or /video"
            ),
        );
    }
    if let Some(node) = &record.node {
        return conflict(
            "on_node",
            format!("session `{id}` runs on session node `{node}`: it is not shown live here"),
        );
    }
    let who = person.actor.user.name.to_string();
    let protocol = record.protocol.clone();
    let feed = tokio::task::spawn_blocking(move || live.watch(&id, &protocol, &who))
        .await
        .map_err(|_| ApiError::internal())?;
    let Some(feed) = feed else {
        return conflict(
            "not_running",
            format!(
                "session `{}` has no running terminal or screen here",
                record.id
            ),
        );
    };
    // The feed is written into a small pipe the response reads: a slow client holds the
    // writer back (and a terminal watcher then skips output), never fills memory.
    let (reader, mut writer) = tokio::io::duplex(64 * 1024);
    let content_type = match feed {
        LiveFeed::Terminal {
            width,
            height,
            recent,
            mut chunks,
        } => {
            let title = format!("{}@{}@{} (live)", record.user, record.account, record.asset);
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                // A client that sent no window size (0 x 0): the usual 80 x 24, which players
                // can draw.
                let (width, height) = match (width, height) {
                    (0, _) | (_, 0) => (80, 24),
                    size => size,
                };
                let header = serde_json::json!({
                    "version": 2, "width": width, "height": height,
                    "timestamp": gatehouse_core::time::Timestamp::now().0 / 1000,
                    "title": title,
                });
                let line = |time: f64, kind: &str, data: &str| {
                    let mut text = serde_json::json!([time, kind, data]).to_string();
                    text.push('\n');
                    text
                };
                let mut out = format!("{header}\n");
                if !recent.is_empty() {
                    out.push_str(&line(0.0, "o", &String::from_utf8_lossy(&recent)));
                }
                if writer.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
                let mut utf8 = Utf8Carry::default();
                loop {
                    // A quiet terminal still gets an empty line now and then (players skip
                    // it): a watcher that went away is noticed.
                    let chunk = match tokio::time::timeout(KEEPALIVE, chunks.recv()).await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => break,
                        Err(_) => {
                            if writer.write_all(b"\n").await.is_err() {
                                return;
                            }
                            continue;
                        }
                    };
                    let time = (started.elapsed().as_secs_f64() * 1e6).round() / 1e6;
                    let text = match chunk {
                        LiveChunk::Output(bytes) => line(time, "o", &utf8.push(&bytes)),
                        LiveChunk::Skipped(n) => line(
                            time,
                            "m",
                            &format!("{n} pieces of output skipped (the watcher fell behind)"),
                        ),
                    };
                    if writer.write_all(text.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = writer.shutdown().await;
            });
            "application/x-asciicast"
        }
        LiveFeed::Screen { mut frames } => {
            tokio::spawn(async move {
                while let Some(png) = frames.recv().await {
                    let head = format!(
                        "--{BOUNDARY}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
                        png.len()
                    );
                    let sent = async {
                        writer.write_all(head.as_bytes()).await?;
                        writer.write_all(&png).await?;
                        writer.write_all(b"\r\n").await
                    };
                    if sent.await.is_err() {
                        return;
                    }
                }
                let _ = writer
                    .write_all(format!("--{BOUNDARY}--\r\n").as_bytes())
                    .await;
                let _ = writer.shutdown().await;
            });
            "multipart/x-mixed-replace; boundary=gatehouse-frame"
        }
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Holds back a UTF-8 character cut between two chunks.
#[derive(Default)]
struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(valid);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }
}
