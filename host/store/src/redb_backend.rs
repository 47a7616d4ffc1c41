//! The embedded engine: one redb file in the data directory. redb serialises writers and lets
//! readers run on snapshots, which is what [`Backend`] asks for.

use crate::backend::{Backend, RawRead, RawWrite};
use crate::{ALL_TABLES, Result, SCHEMA_VERSION, StoreError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

fn table(name: &'static str) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub struct RedbBackend {
    db: Database,
}

impl RedbBackend {
    /// Opens (creating if needed) the store file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::InUse(path.display().to_string())
            }
            other => StoreError::Database(other.to_string()),
        })?;
        let backend = RedbBackend { db };
        backend.migrate()?;
        Ok(backend)
    }

    fn migrate(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema_version")?.map(|v| v.value()).unwrap_or(0);
            if found > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            if found < SCHEMA_VERSION {
                // Version 0 is an empty file; version 1 is the first schema. Version 2 adds the
                // asset_groups and plugin_secrets tables (created below) and optional fields that
                // older records lack (`Group::parents`, `Asset::groups`, read as empty). Version 3
                // adds the settings, requests, access_tokens, applications and a2a_keys tables,
                // optional fields (`User::email`, `Account::change_after_checkin`,
                // `Account::change_due`) and the credential lifecycle's tables. Version 4 adds the
                // cluster's tables (nodes, join_tokens, networks). Version 5 adds
                // portal_sessions (created below). Later versions add their
                // migration steps here, one `if found < N` block each.
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            // Make sure every table exists so readers never see "table does not exist".
            for name in ALL_TABLES {
                txn.open_table(table(name))?;
            }
            txn.open_table(AUDIT)?;
        }
        txn.commit()?;
        Ok(())
    }
}

impl Backend for RedbBackend {
    fn engine(&self) -> &'static str {
        "redb"
    }

    fn schema_version(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("schema_version")?.map(|v| v.value()).unwrap_or(0))
    }

    fn read(&self, f: &mut dyn FnMut(&dyn RawRead) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_read()?;
        f(&ReadView { txn: &txn })
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn RawWrite) -> Result<()>) -> Result<()> {
        let txn = self.db.begin_write()?;
        f(&mut WriteView { txn: &txn })?;
        txn.commit()?;
        Ok(())
    }
}

struct ReadView<'a> {
    txn: &'a redb::ReadTransaction,
}

struct WriteView<'a> {
    txn: &'a redb::WriteTransaction,
}

fn get_from(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    Ok(t.get(key)?.map(|v| v.value().to_vec()))
}

fn entries_from(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in t.iter()? {
        let (k, v) = entry?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

fn audit_after_from(
    t: &impl ReadableTable<u64, &'static [u8]>,
    after: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in t.range(after.saturating_add(1)..)? {
        if out.len() >= limit {
            break;
        }
        let (k, v) = entry?;
        out.push((k.value(), v.value().to_vec()));
    }
    Ok(out)
}

fn audit_tail_from(
    t: &impl ReadableTable<u64, &'static [u8]>,
    limit: Option<usize>,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in t.iter()?.rev() {
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
        let (k, v) = entry?;
        out.push((k.value(), v.value().to_vec()));
    }
    out.reverse();
    Ok(out)
}

impl RawRead for ReadView<'_> {
    fn get(&self, name: &'static str, key: &str) -> Result<Option<Vec<u8>>> {
        get_from(&self.txn.open_table(table(name))?, key)
    }
    fn entries(&self, name: &'static str) -> Result<Vec<(String, Vec<u8>)>> {
        entries_from(&self.txn.open_table(table(name))?)
    }
    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        audit_after_from(&self.txn.open_table(AUDIT)?, after, limit)
    }
    fn audit_tail(&self, limit: Option<usize>) -> Result<Vec<(u64, Vec<u8>)>> {
        audit_tail_from(&self.txn.open_table(AUDIT)?, limit)
    }
}

impl RawRead for WriteView<'_> {
    fn get(&self, name: &'static str, key: &str) -> Result<Option<Vec<u8>>> {
        get_from(&self.txn.open_table(table(name))?, key)
    }
    fn entries(&self, name: &'static str) -> Result<Vec<(String, Vec<u8>)>> {
        entries_from(&self.txn.open_table(table(name))?)
    }
    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        audit_after_from(&self.txn.open_table(AUDIT)?, after, limit)
    }
    fn audit_tail(&self, limit: Option<usize>) -> Result<Vec<(u64, Vec<u8>)>> {
        audit_tail_from(&self.txn.open_table(AUDIT)?, limit)
    }
}

impl RawWrite for WriteView<'_> {
    fn put(&mut self, name: &'static str, key: &str, value: &[u8]) -> Result<()> {
        self.txn.open_table(table(name))?.insert(key, value)?;
        Ok(())
    }
    fn delete(&mut self, name: &'static str, key: &str) -> Result<bool> {
        Ok(self.txn.open_table(table(name))?.remove(key)?.is_some())
    }
    fn audit_insert(&mut self, seq: u64, value: &[u8]) -> Result<()> {
        let mut t = self.txn.open_table(AUDIT)?;
        let expected = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
        if seq != expected {
            return Err(StoreError::Database(format!(
                "audit record {seq} out of sequence (next is {expected})"
            )));
        }
        t.insert(seq, value)?;
        Ok(())
    }
}
