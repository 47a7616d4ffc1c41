//! The audit trail: typed events written to the store and mirrored to the tracing log.
//!
//! Events never carry secrets. A failure to write an audit event is returned to the caller, which
//! must fail closed (a session that cannot be audited is not opened).

use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditEvent, AuditKind};
use gatehouse_store::{Store, StoreError};
use std::sync::Arc;

mod interrupted;
mod snmp;
pub mod stream;
pub use interrupted::{INTERRUPTED, close_interrupted_sessions};

/// An event being built. Finish it with [`Auditor::record`].
#[derive(Debug, Clone)]
pub struct Entry {
    event: AuditEvent,
}

impl Entry {
    pub fn new(kind: AuditKind, detail: impl Into<String>) -> Self {
        Self {
            event: AuditEvent {
                seq: 0,
                time: Timestamp::now(),
                kind,
                session: None,
                user: None,
                target: None,
                client: None,
                detail: detail.into(),
                fields: Default::default(),
                chain: None,
            },
        }
    }

    pub fn kind(mut self, kind: AuditKind) -> Self {
        self.event.kind = kind;
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.event.detail = detail.into();
        self
    }

    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.event.session = Some(id.into());
        self
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.event.user = Some(user.into());
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.event.target = Some(target.into());
        self
    }

    pub fn client(mut self, client: impl Into<String>) -> Self {
        self.event.client = Some(client.into());
        self
    }

    pub fn field(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.event.fields.insert(key.to_string(), value.into());
        self
    }
}

/// Writes audit events.
#[derive(Clone)]
pub struct Auditor {
    store: Arc<Store>,
    batcher: Option<tokio::sync::mpsc::Sender<Pending>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("group_commit", &self.batcher.is_some())
            .finish()
    }
}

/// A change to the store queued behind the audit events: session records written by the
/// gateway's sessions, so they commit in the order they were queued with those events.
pub type StoreOp = Box<dyn FnOnce(&mut gatehouse_store::Txn<'_>) -> Result<(), StoreError> + Send>;

type Reply<T> = Option<tokio::sync::oneshot::Sender<Result<T, StoreError>>>;

/// What the group-commit writer is asked to do; a reply, when there is one, is sent once the
/// transaction holding it is on disk.
enum Pending {
    Event(Entry, Reply<AuditEvent>),
    Write(StoreOp, Option<Entry>, Reply<Option<AuditEvent>>),
}

/// Events and writes waiting for the group-commit writer; a full queue makes callers wait
/// (backpressure) or, for best-effort callers that cannot wait, write on their own.
const GROUP_QUEUE: usize = 4096;
/// Events written in one transaction at most.
const GROUP_MAX: usize = 512;

/// The writer could not take the write (its queue is full, or it stopped).
#[derive(Debug, thiserror::Error)]
#[error("the audit writer's queue is full")]
pub struct QueueFull;

fn stopped() -> StoreError {
    StoreError::Database("the audit writer stopped".into())
}

impl Auditor {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            batcher: None,
        }
    }

    /// An auditor whose writes from async code commit together: one writer thread takes
    /// everything queued meanwhile into one transaction (one fsync), in queue order, so no
    /// async worker thread ever waits for the disk. [`Auditor::record_durable`] resumes once its
    /// event is on disk; [`Auditor::record_best_effort`] and [`Auditor::queue_write`] only queue.
    /// The gateway's sessions and the high-rate paths (A2A retrieval) use it.
    pub fn with_group_commit(store: Arc<Store>) -> std::io::Result<Self> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(GROUP_QUEUE);
        let writer = Auditor::new(store.clone());
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < GROUP_MAX {
                        match rx.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    writer.commit_batch(batch);
                }
            })?;
        Ok(Self {
            store,
            batcher: Some(tx),
        })
    }

    /// One transaction for the whole batch, replies after the commit (or its error to each).
    fn commit_batch(&self, batch: Vec<Pending>) {
        enum Work {
            Event(Entry),
            Write(StoreOp, Option<Entry>),
        }
        enum Answer {
            Event(Reply<AuditEvent>),
            Write(Reply<Option<AuditEvent>>),
        }
        let (work, answers): (Vec<Work>, Vec<Answer>) = batch
            .into_iter()
            .map(|pending| match pending {
                Pending::Event(entry, reply) => (Work::Event(entry), Answer::Event(reply)),
                Pending::Write(op, entry, reply) => (Work::Write(op, entry), Answer::Write(reply)),
            })
            .unzip();
        let written = self.store.write(|txn| {
            work.into_iter()
                .map(|w| match w {
                    Work::Event(entry) => self.record_in(txn, entry).map(Some),
                    Work::Write(op, entry) => {
                        op(txn)?;
                        entry.map(|e| self.record_in(txn, e)).transpose()
                    }
                })
                .collect::<Result<Vec<_>, StoreError>>()
        });
        match written {
            Ok(events) => {
                for (answer, event) in answers.into_iter().zip(events) {
                    match (answer, event) {
                        (Answer::Event(Some(reply)), Some(event)) => {
                            let _ = reply.send(Ok(event));
                        }
                        (Answer::Write(Some(reply)), event) => {
                            let _ = reply.send(Ok(event));
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "group audit commit failed");
                let failed = || StoreError::Database(e.to_string());
                for answer in answers {
                    match answer {
                        Answer::Event(Some(reply)) => {
                            let _ = reply.send(Err(failed()));
                        }
                        Answer::Write(Some(reply)) => {
                            let _ = reply.send(Err(failed()));
                        }
                        Answer::Event(None) | Answer::Write(None) => {}
                    }
                }
            }
        }
    }

    /// Stores the event and returns once it is durable, without blocking the async runtime:
    /// through the group-commit writer when there is one, else on a blocking thread.
    pub async fn record_durable(&self, entry: Entry) -> Result<AuditEvent, StoreError> {
        match &self.batcher {
            Some(tx) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send(Pending::Event(entry, Some(reply)))
                    .await
                    .map_err(|_| stopped())?;
                answer.await.map_err(|_| stopped())?
            }
            None => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.record(entry))
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))?
            }
        }
    }

    /// Runs `op` and appends `entry` in one transaction and returns once both are durable,
    /// without blocking the async runtime (a session's start: its record and its audit event).
    pub async fn write_durable(
        &self,
        op: StoreOp,
        entry: Option<Entry>,
    ) -> Result<Option<AuditEvent>, StoreError> {
        match &self.batcher {
            Some(tx) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send(Pending::Write(op, entry, Some(reply)))
                    .await
                    .map_err(|_| stopped())?;
                answer.await.map_err(|_| stopped())?
            }
            None => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || {
                    this.store.write(|txn| {
                        op(txn)?;
                        entry.map(|e| this.record_in(txn, e)).transpose()
                    })
                })
                .await
                .map_err(|e| StoreError::Database(e.to_string()))?
            }
        }
    }

    /// Queues `op` behind the events already queued and returns without waiting for the disk.
    /// A full queue gives [`QueueFull`] (the caller decides whether the write can be skipped);
    /// without a group-commit writer the write happens here.
    pub fn queue_write(&self, op: StoreOp) -> Result<(), QueueFull> {
        match &self.batcher {
            Some(tx) => tx
                .try_send(Pending::Write(op, None, None))
                .map_err(|_| QueueFull),
            None => {
                if let Err(e) = self.store.write(op) {
                    tracing::error!(error = %e, "could not write to the store");
                }
                Ok(())
            }
        }
    }

    /// Queues `op` (and then `entry`) in one transaction, waiting for room in the queue but not
    /// for the disk: the closing books of a session, which must not be skipped.
    pub async fn queue_write_waiting(&self, op: StoreOp, entry: Option<Entry>) {
        match &self.batcher {
            Some(tx) => {
                if tx.send(Pending::Write(op, entry, None)).await.is_err() {
                    tracing::error!("could not write to the store: the audit writer stopped");
                }
            }
            None => {
                if let Err(e) = self.write_durable(op, entry).await {
                    tracing::error!(error = %e, "could not write to the store");
                }
            }
        }
    }

    /// Stores the event and logs it at INFO.
    pub fn record(&self, entry: Entry) -> Result<AuditEvent, StoreError> {
        self.store.write(|txn| self.record_in(txn, entry))
    }

    /// Appends the event inside a store transaction, so it commits with the change it
    /// describes (or not at all), and logs it at INFO.
    pub fn record_in(
        &self,
        txn: &mut gatehouse_store::Txn<'_>,
        entry: Entry,
    ) -> Result<AuditEvent, StoreError> {
        let stored = txn.append_audit(entry.event)?;
        tracing::info!(
            audit.seq = stored.seq,
            audit.kind = ?stored.kind,
            audit.user = stored.user.as_deref().unwrap_or(""),
            audit.target = stored.target.as_deref().unwrap_or(""),
            "{}",
            stored.detail
        );
        Ok(stored)
    }

    /// Like [`Auditor::record`], for callers that cannot act on a failure (the session is already
    /// ending); the failure is logged at ERROR.
    ///
    /// With a group-commit writer the event is queued behind the ones before it and this returns
    /// at once; only when the queue is full does the caller write it itself (backpressure).
    pub fn record_best_effort(&self, entry: Entry) {
        let entry = match &self.batcher {
            Some(tx) => match tx.try_send(Pending::Event(entry, None)) {
                Ok(()) => return,
                Err(
                    tokio::sync::mpsc::error::TrySendError::Full(Pending::Event(e, _))
                    | tokio::sync::mpsc::error::TrySendError::Closed(Pending::Event(e, _)),
                ) => e,
                Err(_) => return,
            },
            None => entry,
        };
        if let Err(e) = self.record(entry) {
            tracing::error!(error = %e, "could not write audit event");
        }
    }
}
