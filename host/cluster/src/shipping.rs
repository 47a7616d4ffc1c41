//! Audit events, session records and recordings of session nodes, delivered to the control
//! node at least once and taken once.
//!
//! The node keeps everything in its own data directory until the control node holds it (its
//! store is the on-disk buffer): audit events by the node's sequence number, session records by
//! id (the newest state wins; an ended record is never replaced by a running one), recording
//! files by offset. The control node keeps, per node, the last node sequence number it took
//! (`SETTINGS` key `node_audit:<id>`), so a retried delivery adds nothing twice; each event it
//! takes gets the control node's own sequence number and the fields `node` and `node_seq`.

use crate::ClusterError;
use crate::node::ControlClient;
use crate::wire::{
    ControlAnswer, NodeCall, RecordingHeld, RecordingPart, Refusal, RefusalKind, Ship, Shipped,
};
use gatehouse_core::{Node, SessionRecord};
use gatehouse_store::{SESSIONS, SETTINGS, Store, StoreError};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Audit events per delivery.
const AUDIT_BATCH: usize = 500;
/// Bytes of a recording per call (base64 makes a frame about 1.4 MiB).
const PART_BYTES: usize = 1 << 20;
/// How often a node delivers; after a failure it waits longer, up to a minute.
const SHIP_INTERVAL: Duration = Duration::from_secs(2);
const SHIP_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// After a session's books close, how long the delivery waits for its last writes to commit.
const SETTLE: Duration = Duration::from_millis(50);

fn audit_key(node: &str) -> String {
    format!("node_audit:{node}")
}

/// A session id or a recording file name as the node may send it: letters, digits, `.`, `_`,
/// `-`, no leading dot, at most 128 bytes.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "taking a node's delivery failed");
    Refusal::new(
        RefusalKind::Internal,
        "the control node could not store the delivery (see its log)",
    )
}

/// Takes a node's audit events and session records.
pub fn take_ship(store: &Store, node: &Node, ship: Ship) -> Result<Shipped, Refusal> {
    let id = node.id.to_string();
    let key = audit_key(&id);
    store
        .write(|txn| -> Result<Shipped, StoreError> {
            let mut through = txn
                .get(&SETTINGS, &key)?
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            // The `node-audit` service off: the events stay on the node until it is on again.
            let audit = if txn.services()?.node_audit {
                ship.audit
            } else {
                Vec::new()
            };
            for mut event in audit {
                if event.seq <= through {
                    continue;
                }
                let node_seq = event.seq;
                event.fields.insert("node".into(), id.clone().into());
                event.fields.insert("node_seq".into(), node_seq.into());
                txn.append_audit(event)?;
                through = node_seq;
            }
            txn.put(&SETTINGS, &key, &serde_json::Value::from(through))?;
            for mut record in ship.sessions {
                if !plain_name(&record.id) {
                    continue;
                }
                record.node = Some(id.clone());
                let keep_existing = txn.get(&SESSIONS, &record.id)?.is_some_and(|old| {
                    old.node.as_deref() != Some(id.as_str())
                        || (old.ended.is_some() && record.ended.is_none())
                });
                if !keep_existing {
                    txn.put(&SESSIONS, &record.id.clone(), &record)?;
                }
            }
            Ok(Shipped {
                audit_through: through,
            })
        })
        .map_err(internal)
}

/// The settings key that says a node's session recording arrived whole (it may be sealed).
pub fn delivered_key(session: &str) -> String {
    format!("recording_delivered:{session}")
}

/// A node says every file of one of its sessions' recordings has been delivered.
pub fn take_recording_delivered(store: &Store, node: &Node, session: &str) -> Result<(), Refusal> {
    let owner = store
        .get(&SESSIONS, session)
        .map_err(internal)?
        .and_then(|r| r.node);
    if owner.as_deref() != Some(node.id.as_str()) {
        return Err(Refusal::new(
            RefusalKind::BadCall,
            format!("session `{session}` is not one of this node's"),
        ));
    }
    store
        .write(|txn| {
            txn.put(
                &SETTINGS,
                &delivered_key(session),
                &serde_json::Value::Bool(true),
            )
        })
        .map_err(internal)
}

/// Writes a piece of a recording of one of the node's sessions; answers how much is held.
pub fn take_recording_part(
    store: &Store,
    recordings: &Path,
    node: &Node,
    part: RecordingPart,
) -> Result<RecordingHeld, Refusal> {
    if !plain_name(&part.session) || !plain_name(&part.file) {
        return Err(Refusal::new(
            RefusalKind::BadCall,
            "bad session or file name",
        ));
    }
    let owner = store
        .get(&SESSIONS, &part.session)
        .map_err(internal)?
        .and_then(|r| r.node);
    if owner.as_deref() != Some(node.id.as_str()) {
        return Err(Refusal::new(
            RefusalKind::BadCall,
            format!(
                "session `{}` is not one of this node's (ship its record first)",
                part.session
            ),
        ));
    }
    let dir = recordings.join(&part.session);
    std::fs::create_dir_all(&dir).map_err(internal)?;
    let path = dir.join(&part.file);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(internal)?;
    let held = file.metadata().map_err(internal)?.len();
    if part.offset > held {
        // A gap: the node resends from what is held.
        return Ok(RecordingHeld { size: held });
    }
    let end = part.offset.saturating_add(part.data.len() as u64);
    if end > held {
        let skip = usize::try_from(held - part.offset).map_err(internal)?;
        file.seek(SeekFrom::Start(held)).map_err(internal)?;
        file.write_all(&part.data[skip..]).map_err(internal)?;
        file.sync_data().map_err(internal)?;
    }
    Ok(RecordingHeld {
        size: end.max(held),
    })
}

/// A session node's delivery of what it recorded: audit events, session records (running ones
/// too, so that the control node lists them), and the recordings of ended sessions. Runs until
/// the task is dropped; a control node that is away is retried with a growing pause, and
/// nothing is dropped meanwhile.
///
/// `ended` is notified when a session's books close: a delivery follows at once (after a short
/// pause for the session's last writes to commit), so that a recording is playable on the
/// control node moments after the session ends.
pub async fn ship_loop(
    client: ControlClient,
    store: std::sync::Arc<Store>,
    recordings: PathBuf,
    ended: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut pause = SHIP_INTERVAL;
    let mut reachable = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ended.notified(), if reachable => {
                tokio::time::sleep(SETTLE).await;
            }
        }
        match ship_once(&client, &store, &recordings).await {
            Ok(()) => {
                if !reachable {
                    tracing::info!(
                        "delivering recordings and audit events to the control node again"
                    );
                }
                reachable = true;
                pause = SHIP_INTERVAL;
            }
            Err(e) => {
                if reachable {
                    tracing::warn!(error = %e, "cannot deliver recordings and audit events to the control node; they stay here and are retried");
                }
                reachable = false;
                pause = (pause * 2).min(SHIP_BACKOFF_MAX);
            }
        }
    }
}

const SHIPPED_THROUGH: &str = "shipping:audit_through";

fn shipped_key(session: &str) -> String {
    format!("shipping:session:{session}")
}

/// One round: everything the control node does not hold yet.
pub async fn ship_once(
    client: &ControlClient,
    store: &Store,
    recordings: &Path,
) -> Result<(), ClusterError> {
    // Audit events, in batches, from after what the control node confirmed.
    loop {
        let through = store
            .get(&SETTINGS, SHIPPED_THROUGH)?
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let audit = store.audit_after(through, AUDIT_BATCH)?;
        let sessions = pending_sessions(store)?;
        if audit.is_empty() && sessions.is_empty() {
            break;
        }
        let more = audit.len() == AUDIT_BATCH;
        let last = audit.last().map(|e| e.seq).unwrap_or(through);
        let answer = client
            .call(NodeCall::Ship(Ship {
                audit,
                sessions: sessions.clone(),
            }))
            .await?;
        let ControlAnswer::Shipped(shipped) = answer else {
            return Err(ClusterError::Protocol(format!(
                "unexpected answer: {answer:?}"
            )));
        };
        let confirmed = shipped.audit_through.max(through).min(last.max(through));
        store.write(|txn| -> Result<(), StoreError> {
            txn.put(
                &SETTINGS,
                SHIPPED_THROUGH,
                &serde_json::Value::from(confirmed),
            )?;
            for record in &sessions {
                // Running records are sent again while they change; an ended one once its
                // recording is delivered too (below).
                let state = serde_json::json!({
                    "ended": record.ended.is_some(),
                    "bytes": record.bytes_up + record.bytes_down,
                    "recording": false,
                });
                let key = shipped_key(&record.id);
                let keep = txn
                    .get(&SETTINGS, &key)?
                    .is_some_and(|v| v["recording"] == true);
                if !keep {
                    txn.put(&SETTINGS, &key, &state)?;
                }
            }
            Ok(())
        })?;
        if !more {
            break;
        }
    }
    // Recordings of ended sessions whose records the control node holds.
    for record in store.list(&SESSIONS)? {
        let key = shipped_key(&record.id);
        let state = store.get(&SETTINGS, &key)?;
        let Some(state) = state else { continue };
        if record.ended.is_none() || state["ended"] != true || state["recording"] == true {
            continue;
        }
        ship_recording(client, recordings, &record.id).await?;
        let delivered = NodeCall::RecordingDelivered(crate::wire::RecordingDelivered {
            session: record.id.clone(),
        });
        match client.call(delivered).await? {
            ControlAnswer::Done => {}
            other => {
                return Err(ClusterError::Protocol(format!(
                    "unexpected answer: {other:?}"
                )));
            }
        }
        let mut done = state.clone();
        done["recording"] = true.into();
        store.write(|txn| txn.put(&SETTINGS, &key, &done))?;
    }
    Ok(())
}

/// Session records the control node does not hold in their current state.
fn pending_sessions(store: &Store) -> Result<Vec<SessionRecord>, StoreError> {
    let mut out = Vec::new();
    for record in store.list(&SESSIONS)? {
        let sent = store.get(&SETTINGS, &shipped_key(&record.id))?;
        let current = serde_json::json!({
            "ended": record.ended.is_some(),
            "bytes": record.bytes_up + record.bytes_down,
        });
        let same = sent.as_ref().is_some_and(|s| {
            s["recording"] == true
                || (s["ended"] == current["ended"] && s["bytes"] == current["bytes"])
        });
        if !same {
            out.push(record);
        }
        if out.len() >= 200 {
            break;
        }
    }
    Ok(out)
}

async fn ship_recording(
    client: &ControlClient,
    recordings: &Path,
    session: &str,
) -> Result<(), ClusterError> {
    let dir = recordings.join(session);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        // A session that never opened a channel has no recording.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file()
            && let Some(name) = entry.file_name().to_str()
            && plain_name(name)
        {
            files.push((name.to_string(), entry.path()));
        }
    }
    files.sort();
    for (name, path) in files {
        let bytes = tokio::fs::read(&path).await?;
        let mut offset = 0usize;
        loop {
            let end = (offset + PART_BYTES).min(bytes.len());
            let part = RecordingPart {
                session: session.to_string(),
                file: name.clone(),
                offset: offset as u64,
                data: bytes[offset..end].to_vec(),
            };
            let answer = client.call(NodeCall::RecordingPart(part)).await?;
            let ControlAnswer::RecordingHeld(held) = answer else {
                return Err(ClusterError::Protocol(format!(
                    "unexpected answer: {answer:?}"
                )));
            };
            let held = usize::try_from(held.size).unwrap_or(usize::MAX);
            if held >= bytes.len() {
                break;
            }
            // Continue from what the control node holds (it may have had more, or less).
            offset = held;
        }
    }
    Ok(())
}
