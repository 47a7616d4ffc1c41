//! Sessions a crash or a kill left open: at start, each is closed in the store as interrupted,
//! with the time of the last thing recorded for it, and audited.

use crate::{Auditor, Entry};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditKind, SessionRecord};
use gatehouse_store::{SESSIONS, StoreError};
use std::path::Path;
use std::time::UNIX_EPOCH;

/// What `SessionRecord::error` says for a session closed here.
pub const INTERRUPTED: &str = "interrupted: the gateway stopped before the session ended";

/// When something was last written for session `id` under `recordings_dir`.
fn last_recorded(recordings_dir: &Path, id: &str) -> Option<Timestamp> {
    let entries = std::fs::read_dir(recordings_dir.join(id)).ok()?;
    entries
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .filter_map(|modified| modified.duration_since(UNIX_EPOCH).ok())
        .map(|since| Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX)))
        .max()
}

/// Closes every session the store still has open. Run at start, before serving: no session
/// of this process exists yet, so an open one was cut by a stop that was not a drain.
pub fn close_interrupted_sessions(
    auditor: &Auditor,
    recordings_dir: &Path,
) -> Result<Vec<SessionRecord>, StoreError> {
    let open: Vec<SessionRecord> = auditor
        .store
        .list(&SESSIONS)?
        .into_iter()
        // With several control nodes on one store, the others' running sessions are theirs.
        .filter(|s| {
            s.ended.is_none()
                && (s.gateway.is_none() || s.gateway == gatehouse_core::gateway::gateway_id())
        })
        .collect();
    let mut closed = Vec::with_capacity(open.len());
    for mut session in open {
        let last = last_recorded(recordings_dir, &session.id)
            .filter(|t| *t >= session.started)
            .unwrap_or(session.started);
        session.ended = Some(last);
        session.error = Some(INTERRUPTED.to_string());
        let entry = Entry::new(
            AuditKind::SessionEnded,
            format!(
                "session interrupted: the gateway stopped before it ended ({} bytes up, {} bytes down recorded)",
                session.bytes_up, session.bytes_down
            ),
        )
        .session(session.id.clone())
        .user(session.user.clone())
        .target(format!("{}@{}", session.account, session.asset))
        .client(session.client.clone())
        .field("interrupted", true)
        .field("last_recorded_ms", last.0);
        auditor.store.write(|txn| {
            txn.put(&SESSIONS, &session.id, &session)?;
            auditor.record_in(txn, entry)
        })?;
        closed.push(session);
    }
    Ok(closed)
}
