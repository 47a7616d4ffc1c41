//! The audit trail: typed events written to the store and mirrored to the tracing log.
//!
//! Events never carry secrets. A failure to write an audit event is returned to the caller, which
//! must fail closed (a session that cannot be audited is not opened).

use gatehouse_core::time::Timestamp;
use gatehouse_core::{AuditEvent, AuditKind};
use gatehouse_store::{Store, StoreError};
use std::sync::Arc;

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
#[derive(Clone, Debug)]
pub struct Auditor {
    store: Arc<Store>,
}

impl Auditor {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
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
