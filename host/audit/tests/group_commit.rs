//! The group-commit writer: what async callers queue commits in queue order, a durable write
//! returns once it and everything queued before it are on disk, and a failing write records
//! nothing of its transaction.

use gatehouse_audit::{Auditor, Entry, StoreOp};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditKind, SessionRecord};
use gatehouse_store::{SESSIONS, Store, StoreError};
use std::sync::Arc;

fn record(bytes_up: u64, ended: Option<Timestamp>) -> StoreOp {
    let record = SessionRecord {
        id: "s1".into(),
        user: "alice".into(),
        account: "root".into(),
        asset: "t1".into(),
        client: "127.0.0.1:1".into(),
        protocol: "ssh".into(),
        started: Timestamp(1),
        ended,
        bytes_up,
        bytes_down: 0,
        channels: vec![],
        error: None,
        node: None,
        gateway: None,
    };
    Box::new(move |txn| txn.put(&SESSIONS, "s1", &record))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_and_writes_commit_in_order_before_a_durable_one_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
    let auditor = Auditor::with_group_commit(store.clone()).unwrap();
    for i in 0..300u64 {
        auditor.record_best_effort(Entry::new(AuditKind::ChannelOpened, format!("event {i}")));
        if i % 10 == 0 {
            auditor.queue_write(record(i, None)).unwrap();
        }
    }
    let last = auditor
        .write_durable(
            record(300, Some(Timestamp(2))),
            Some(Entry::new(AuditKind::SessionEnded, "ended")),
        )
        .await
        .unwrap()
        .unwrap();

    let events = store.list_audit(None).unwrap();
    let details: Vec<_> = events.iter().map(|e| e.detail.clone()).collect();
    let mut expected: Vec<_> = (0..300).map(|i| format!("event {i}")).collect();
    expected.push("ended".into());
    assert_eq!(details, expected);
    let seqs: Vec<_> = events.iter().map(|e| e.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "gap-free: {seqs:?}"
    );
    assert_eq!(last.seq, *seqs.last().unwrap());
    let stored = store.get(&SESSIONS, "s1").unwrap().unwrap();
    assert_eq!(stored.bytes_up, 300, "the last write queued wins");
    assert_eq!(stored.ended, Some(Timestamp(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_durable_write_records_nothing_and_says_so() {
    for group in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        let auditor = if group {
            Auditor::with_group_commit(store.clone()).unwrap()
        } else {
            Auditor::new(store.clone())
        };
        let failing: StoreOp = Box::new(|_| Err(StoreError::Database("refused".into())));
        let written = auditor
            .write_durable(failing, Some(Entry::new(AuditKind::TargetConnectOk, "x")))
            .await;
        let error = written.expect_err("the write fails").to_string();
        assert!(error.contains("refused"), "group commit {group}: {error}");
        assert!(store.list_audit(None).unwrap().is_empty());
        // The writer goes on after a failed batch.
        auditor
            .record_durable(Entry::new(AuditKind::LoginOk, "after"))
            .await
            .unwrap();
        assert_eq!(store.list_audit(None).unwrap().len(), 1);
    }
}
