//! The storage trait: what a store engine must provide. Records are opaque bytes (JSON written by
//! [`crate::Store`]) under a table name and a string key; the audit trail is a sequence of byte
//! records numbered from 1 with no gaps. Two engines implement it: [`crate::redb_backend`] (the
//! embedded default) and [`crate::postgres`] (several control nodes on one database). Both pass
//! the same conformance suite (`tests/store_conformance.rs`).

use crate::Result;

/// One consistent view of the store: a read transaction, or the reads of a write transaction.
pub trait RawRead {
    /// The record under `key`, if any.
    fn get(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>>;
    /// Every record of the table with its key, in key order (bytewise, as UTF-8).
    fn entries(&self, table: &'static str) -> Result<Vec<(String, Vec<u8>)>>;
    /// Up to `limit` audit records numbered above `after`, in order.
    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>>;
    /// The last `limit` audit records (all when `None`), oldest first.
    fn audit_tail(&self, limit: Option<usize>) -> Result<Vec<(u64, Vec<u8>)>>;
}

/// A write transaction: every change commits together or not at all, and write transactions
/// are serialised (on PostgreSQL across every control node), so a read-then-write inside one is
/// safe.
pub trait RawWrite: RawRead {
    fn put(&mut self, table: &'static str, key: &str, value: &[u8]) -> Result<()>;
    /// Removes a record; returns whether it existed.
    fn delete(&mut self, table: &'static str, key: &str) -> Result<bool>;
    /// Stores the audit record numbered `seq`, which must be one above the last.
    fn audit_insert(&mut self, seq: u64, value: &[u8]) -> Result<()>;
}

/// A store engine.
pub trait Backend: Send + Sync {
    /// `redb` or `postgres`, for messages.
    fn engine(&self) -> &'static str;
    /// The record schema version the store was last written with.
    fn schema_version(&self) -> Result<u64>;
    /// One record, read on its own (an engine may skip the transaction).
    fn get(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>> {
        let mut out = None;
        self.read(&mut |r| {
            out = r.get(table, key)?;
            Ok(())
        })?;
        Ok(out)
    }
    /// Every record of a table, read on its own.
    fn entries(&self, table: &'static str) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        self.read(&mut |r| {
            out = r.entries(table)?;
            Ok(())
        })?;
        Ok(out)
    }
    /// Runs `f` on one snapshot.
    fn read(&self, f: &mut dyn FnMut(&dyn RawRead) -> Result<()>) -> Result<()>;
    /// Runs `f` in one write transaction; commits when it returns `Ok`, rolls back otherwise.
    fn write(&self, f: &mut dyn FnMut(&mut dyn RawWrite) -> Result<()>) -> Result<()>;
    /// Whether this process holds (now, or from an earlier call) the lead for `name`: the one
    /// process among those sharing the store that runs a singleton job (the credential
    /// scheduler, directory sync, audit streams). Held until the process or its connection
    /// ends; asking again re-checks. An embedded store has one process: always true.
    fn try_lead(&self, name: &str) -> Result<bool> {
        let _ = name;
        Ok(true)
    }
}
