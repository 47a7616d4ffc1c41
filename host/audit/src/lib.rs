//! The audit trail: typed events written to the store and mirrored to the tracing log.
//!
//! Events never carry secrets. A failure to write an audit event is returned to the caller, which
//! must fail closed (a session that cannot be audited is not opened).

use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditEvent, AuditKind};
use gatehouse_store::{Store, StoreError};
use std::sync::Arc;

mod interrupted;
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

type Pending = (
    Entry,
    tokio::sync::oneshot::Sender<Result<AuditEvent, StoreError>>,
);

/// Events waiting for the group-commit writer; a full queue makes callers wait (backpressure).
const GROUP_QUEUE: usize = 4096;
/// Events written in one transaction at most.
const GROUP_MAX: usize = 512;

impl Auditor {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            batcher: None,
        }
    }

    /// An auditor whose [`Auditor::record_durable`] commits concurrent events together: one
    /// writer thread takes every event queued meanwhile into one transaction (one fsync), and
    /// each caller resumes once its event is on disk. High-rate paths (A2A retrieval) use it.
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
                    let (entries, replies): (Vec<Entry>, Vec<_>) = batch.into_iter().unzip();
                    let written = writer.store.write(|txn| {
                        entries
                            .into_iter()
                            .map(|e| writer.record_in(txn, e))
                            .collect::<Result<Vec<_>, StoreError>>()
                    });
                    match written {
                        Ok(events) => {
                            for (reply, event) in replies.into_iter().zip(events) {
                                let _ = reply.send(Ok(event));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "group audit commit failed");
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::Database(e.to_string())));
                            }
                        }
                    }
                }
            })?;
        Ok(Self {
            store,
            batcher: Some(tx),
        })
    }

    /// Stores the event and returns once it is durable, without blocking the async runtime:
    /// through the group-commit writer when there is one, else on a blocking thread.
    pub async fn record_durable(&self, entry: Entry) -> Result<AuditEvent, StoreError> {
        match &self.batcher {
            Some(tx) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx.send((entry, reply))
                    .await
                    .map_err(|_| StoreError::Database("the audit writer stopped".into()))?;
                answer
                    .await
                    .map_err(|_| StoreError::Database("the audit writer stopped".into()))?
            }
            None => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.record(entry))
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))?
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
    pub fn record_best_effort(&self, entry: Entry) {
        if let Err(e) = self.record(entry) {
            tracing::error!(error = %e, "could not write audit event");
        }
    }
}
