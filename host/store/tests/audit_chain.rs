//! Tampering with the audit trail in its redb file, as someone with the file would (redb's own
//! API, the gateway stopped), and what `Store::verify_audit` names: an edit, a one-byte flip, a
//! removal, a reorder, a cut tail, an older copy of the file, and a trail re-linked after an edit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditEvent, AuditKind};
use gatehouse_store::Store;
use gatehouse_store::chain::{self, Problem};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const EVENTS: u64 = 20;

fn trail(dir: &Path) -> (PathBuf, (u64, String)) {
    let path = dir.join("gatehouse.redb");
    let store = Store::open(&path).unwrap();
    for i in 0..EVENTS {
        let mut fields = serde_json::Map::new();
        fields.insert("bytes_up".into(), serde_json::json!(i * 1000));
        store
            .append_audit(AuditEvent {
                seq: 0,
                time: Timestamp(1_700_000_000_000 + i),
                kind: AuditKind::SessionEnded,
                session: Some(format!("s-{i}")),
                user: Some("alice".into()),
                target: Some("root@db1".into()),
                client: Some("127.0.0.1:40000".into()),
                detail: format!("session ended: {i} bytes"),
                fields,
                chain: None,
            })
            .unwrap();
    }
    let verified = store.verify_audit(None).unwrap();
    assert!(verified.intact(), "{:?}", verified.problems);
    assert_eq!(verified.events, EVENTS);
    let head = verified.head.clone().unwrap();
    assert_eq!(head.0, EVENTS);
    (path, head)
}

fn read(path: &Path, key: u64) -> Vec<u8> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(AUDIT).unwrap();
    t.get(key).unwrap().unwrap().value().to_vec()
}

fn write(path: &Path, change: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(AUDIT).unwrap();
        change(&mut t);
    }
    txn.commit().unwrap();
}

fn problems(path: &Path, head: Option<(u64, &str)>) -> Vec<Problem> {
    Store::open(path)
        .unwrap()
        .verify_audit(head)
        .unwrap()
        .problems
}

#[test]
fn an_intact_trail_verifies_and_its_head_is_found_later() {
    let dir = tempfile::tempdir().unwrap();
    let (path, head) = trail(dir.path());
    assert!(problems(&path, Some((head.0, &head.1))).is_empty());
    // More events later: the recorded head is still in the trail.
    let store = Store::open(&path).unwrap();
    let mut more = serde_json::from_slice::<AuditEvent>(&read_via(&store, 1)).unwrap();
    more.chain = None;
    store.append_audit(more).unwrap();
    let verified = store.verify_audit(Some((head.0, &head.1))).unwrap();
    assert!(verified.intact(), "{:?}", verified.problems);
    assert_eq!(verified.head.unwrap().0, EVENTS + 1);
}

fn read_via(store: &Store, seq: u64) -> Vec<u8> {
    let event = store.audit_after(seq - 1, 1).unwrap().remove(0);
    serde_json::to_vec(&event).unwrap()
}

#[test]
fn an_edited_event_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = trail(dir.path());
    let mut event: AuditEvent = serde_json::from_slice(&read(&path, 7)).unwrap();
    event.user = Some("mallory".into());
    let bytes = serde_json::to_vec(&event).unwrap();
    write(&path, |t| {
        t.insert(7, bytes.as_slice()).unwrap();
    });
    assert_eq!(problems(&path, None), [Problem::Changed { seq: 7 }]);
}

#[test]
fn a_one_byte_flip_anywhere_in_an_event_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = trail(dir.path());
    let original = read(&path, 11);
    for at in 0..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        write(&path, |t| {
            t.insert(11, bytes.as_slice()).unwrap();
        });
        let found = problems(&path, None);
        assert!(
            found.iter().any(|p| matches!(
                p,
                Problem::Changed { seq: 11 }
                    | Problem::Unreadable { key: 11, .. }
                    | Problem::Moved { key: 11, .. }
                    | Problem::NoLink { seq: 11 }
            )),
            "flipping byte {at} of event 11 went unnoticed: {found:?}"
        );
        assert!(
            !found.contains(&Problem::Changed { seq: 12 }),
            "flipping byte {at} of event 11 blamed event 12: {found:?}"
        );
    }
    write(&path, |t| {
        t.insert(11, original.as_slice()).unwrap();
    });
    assert!(problems(&path, None).is_empty());
}

#[test]
fn a_removed_event_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = trail(dir.path());
    write(&path, |t| {
        t.remove(7).unwrap();
        t.remove(8).unwrap();
    });
    let found = problems(&path, None);
    assert_eq!(
        found,
        [
            Problem::Removed { from: 7, to: 8 },
            Problem::Unlinked { seq: 9 }
        ]
    );
    assert_eq!(found[0].to_string(), "events 7 to 8 were removed");
}

#[test]
fn reordered_events_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = trail(dir.path());
    let (a, b) = (read(&path, 7), read(&path, 8));
    write(&path, |t| {
        t.insert(7, b.as_slice()).unwrap();
        t.insert(8, a.as_slice()).unwrap();
    });
    let found = problems(&path, None);
    assert!(
        found.contains(&Problem::Moved { key: 7, claims: 8 })
            && found.contains(&Problem::Moved { key: 8, claims: 7 }),
        "{found:?}"
    );
}

#[test]
fn a_cut_tail_and_an_older_copy_miss_the_recorded_head() {
    let dir = tempfile::tempdir().unwrap();
    let (path, head) = trail(dir.path());
    // An older copy of the whole file, taken before the last events.
    let old = dir.path().join("old.redb");
    std::fs::copy(&path, &old).unwrap();
    write(&old, |t| {
        for key in 15..=EVENTS {
            t.remove(key).unwrap();
        }
    });
    // On its own the copy's chain is whole; the head recorded from the live trail is not in it.
    assert!(problems(&old, None).is_empty());
    assert_eq!(
        problems(&old, Some((head.0, &head.1))),
        [Problem::HeadMissing {
            seq: head.0,
            chain: head.1.clone()
        }]
    );
}

#[test]
fn a_trail_re_linked_after_an_edit_misses_the_recorded_head() {
    let dir = tempfile::tempdir().unwrap();
    let (path, head) = trail(dir.path());
    // Edit event 5 and compute every later link again, as a careful forger would.
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(AUDIT).unwrap();
        let mut previous: Option<String> = None;
        for key in 1..=EVENTS {
            let mut event: AuditEvent =
                serde_json::from_slice(t.get(key).unwrap().unwrap().value()).unwrap();
            if key == 5 {
                event.detail = "nothing happened".into();
            }
            event.chain = None;
            let link = chain::link(previous.as_deref().unwrap_or(chain::GENESIS), &event).unwrap();
            event.chain = Some(link.clone());
            previous = Some(link);
            let bytes = serde_json::to_vec(&event).unwrap();
            t.insert(key, bytes.as_slice()).unwrap();
        }
    }
    txn.commit().unwrap();
    drop(db);
    assert!(problems(&path, None).is_empty());
    assert!(matches!(
        problems(&path, Some((head.0, &head.1))).as_slice(),
        [Problem::HeadMissing { .. }]
    ));
}
