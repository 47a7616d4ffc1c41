//! The embedded store: one redb file in the data directory, with a versioned schema.
//!
//! Records are JSON values under string keys, one table per record type. All multi-record changes
//! go through [`Store::write`], which runs a closure in one ACID transaction. Only this crate knows
//! redb; a PostgreSQL backend for scale-out would implement the same surface.

use gatehouse_core::{
    A2aKey, AccessRequest, AccessToken, Account, AccountLifecycle, Application, Asset, AssetGroup,
    AssetLifecycle, AuditEvent, CredentialChange, DiscoveredAccount, Grant, Group, JoinToken,
    ManagedNetwork, Node, Partition, PluginSecret, Profile, ServiceToggles, SessionRecord, User,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};
use std::path::Path;

/// The schema version this build writes. Older stores are migrated on open; newer ones are refused.
pub const SCHEMA_VERSION: u64 = 4;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub mod chain;

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// A typed table of JSON records keyed by string.
pub struct Table<T> {
    def: TableDefinition<'static, &'static str, &'static [u8]>,
    name: &'static str,
    _record: std::marker::PhantomData<fn() -> T>,
}

impl<T> Table<T> {
    const fn new(name: &'static str) -> Self {
        Self {
            def: TableDefinition::new(name),
            name,
            _record: std::marker::PhantomData,
        }
    }
}

pub const USERS: Table<User> = Table::new("users");
pub const GROUPS: Table<Group> = Table::new("groups");
pub const ASSETS: Table<Asset> = Table::new("assets");
pub const ASSET_GROUPS: Table<AssetGroup> = Table::new("asset_groups");
/// Keyed by [`account_key`].
pub const ACCOUNTS: Table<Account> = Table::new("accounts");
pub const GRANTS: Table<Grant> = Table::new("grants");
pub const SESSIONS: Table<SessionRecord> = Table::new("sessions");
/// Keyed by the secret's name.
pub const PLUGIN_SECRETS: Table<PluginSecret> = Table::new("plugin_secrets");
/// Gateway-wide settings kept in the store, one record per key (`services`, ...).
pub const SETTINGS: Table<serde_json::Value> = Table::new("settings");

/// Access requests, keyed by id.
pub const REQUESTS: Table<AccessRequest> = Table::new("requests");
/// Access-string tokens, keyed by the token's SHA-256 (hex).
pub const ACCESS_TOKENS: Table<AccessToken> = Table::new("access_tokens");
/// A2A applications, keyed by name.
pub const APPLICATIONS: Table<Application> = Table::new("applications");
/// A2A API keys, keyed by the key's SHA-256 (hex).
pub const A2A_KEYS: Table<A2aKey> = Table::new("a2a_keys");
/// Credential lifecycle profiles (password rules, schedules), keyed by name.
pub const PROFILES: Table<Profile> = Table::new("profiles");
/// Partitions, keyed by name.
pub const PARTITIONS: Table<Partition> = Table::new("partitions");
/// Lifecycle settings of assets (partition, service account), keyed by asset name.
pub const ASSET_LIFECYCLE: Table<AssetLifecycle> = Table::new("asset_lifecycle");
/// Lifecycle settings and status of accounts, keyed by [`account_key`].
pub const ACCOUNT_LIFECYCLE: Table<AccountLifecycle> = Table::new("account_lifecycle");
/// The two-phase change journal (changes in flight with their pending secret), keyed by
/// [`account_key`].
pub const CREDENTIAL_CHANGES: Table<CredentialChange> = Table::new("credential_changes");
/// Accounts found by discovery, keyed by [`account_key`].
pub const DISCOVERED: Table<DiscoveredAccount> = Table::new("discovered_accounts");

/// Session nodes joined to this control node (soft-deleted ones too), keyed by node id.
pub const NODES: Table<Node> = Table::new("nodes");
/// Unused join tokens, keyed by the SHA-256 (hex) of the token.
pub const JOIN_TOKENS: Table<JoinToken> = Table::new("join_tokens");
/// Networks managed by session nodes, keyed by the network in CIDR form.
pub const NETWORKS: Table<ManagedNetwork> = Table::new("networks");

/// The key of the [`ServiceToggles`] record in [`SETTINGS`].
pub const SERVICES_KEY: &str = "services";

/// The key of an account in [`ACCOUNTS`]: `asset/account`.
pub fn account_key(asset: &str, account: &str) -> String {
    format!("{asset}/{account}")
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at `{0}` is in use by another Gatehouse process")]
    InUse(String),
    #[error(
        "the store was written by a newer Gatehouse (schema {found}, this build knows {supported})"
    )]
    SchemaTooNew { found: u64, supported: u64 },
    #[error("store record `{table}/{key}` is unreadable: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("store error: {0}")]
    Database(String),
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

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store. Cheap to share behind an `Arc`; redb serialises writers and lets readers run freely.
pub struct Store {
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (creating if needed) the store file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::InUse(path.display().to_string())
            }
            other => StoreError::Database(other.to_string()),
        })?;
        let store = Store { db };
        store.migrate()?;
        Ok(store)
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
                // asset_groups and plugin_secrets tables (created below) and optional fields that older records
                // lack (`Group::parents`, `Asset::groups`, read as empty). Later versions add
                // their migration steps here, one `if found < N` block each. Version 3 adds the
                // settings, requests, access_tokens, applications and a2a_keys tables and
                // optional fields (`User::email`,
                // `Account::change_after_checkin`, `Account::change_due`), and the credential
                // lifecycle's tables (profiles, partitions, asset_lifecycle,
                // account_lifecycle, credential_changes, discovered_accounts). Version 4 adds
                // the cluster's tables (nodes, join_tokens, networks).
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
            // Make sure every table exists so readers never see "table does not exist".
            for name in [
                USERS.name,
                GROUPS.name,
                ASSETS.name,
                ASSET_GROUPS.name,
                ACCOUNTS.name,
                GRANTS.name,
                SESSIONS.name,
                PLUGIN_SECRETS.name,
                SETTINGS.name,
                REQUESTS.name,
                ACCESS_TOKENS.name,
                APPLICATIONS.name,
                A2A_KEYS.name,
                PROFILES.name,
                PARTITIONS.name,
                ASSET_LIFECYCLE.name,
                ACCOUNT_LIFECYCLE.name,
                CREDENTIAL_CHANGES.name,
                DISCOVERED.name,
                NODES.name,
                JOIN_TOKENS.name,
                NETWORKS.name,
            ] {
                txn.open_table(TableDefinition::<&str, &[u8]>::new(name))?;
            }
            txn.open_table(AUDIT)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The schema version of the open store.
    pub fn schema_version(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("schema_version")?.map(|v| v.value()).unwrap_or(0))
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, table: &Table<T>, key: &str) -> Result<Option<T>> {
        self.read(|r| r.get(table, key))
    }

    /// Reads every record of a table, in key order.
    pub fn list<T: DeserializeOwned>(&self, table: &Table<T>) -> Result<Vec<T>> {
        self.read(|r| r.list(table))
    }

    /// Runs `f` on one consistent snapshot of the store (a read transaction).
    pub fn read<R, E>(&self, f: impl FnOnce(&ReadTxn) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        f(&ReadTxn { txn })
    }

    /// Runs `f` in one write transaction; its changes commit together or not at all. An error
    /// returned by `f` aborts the transaction.
    pub fn write<R, E>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let result = {
            let mut handle = Txn { txn: &txn };
            f(&mut handle)?
        };
        txn.commit().map_err(StoreError::from)?;
        Ok(result)
    }

    /// Which services are on (all, until an administrator turns one off).
    pub fn services(&self) -> Result<ServiceToggles> {
        self.read(|r| r.services())
    }

    /// Appends an audit event, assigning its sequence number, and returns it.
    pub fn append_audit(&self, event: AuditEvent) -> Result<AuditEvent> {
        self.write(|txn| txn.append_audit(event))
    }

    /// Up to `limit` audit events with a sequence number above `after`, oldest first.
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in t.range(after.saturating_add(1)..)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry?;
            out.push(decode("audit", &k.value().to_string(), v.value())?);
        }
        Ok(out)
    }

    /// Checks the audit trail's hash chain from the first event to the last: every event in
    /// sequence, stored under its own number, and linked to the one before it. `expect_head`
    /// (a `SEQ:CHAIN` recorded earlier) must still be in the trail, which catches a trail cut
    /// short or replaced by an older copy.
    pub fn verify_audit(&self, expect_head: Option<(u64, &str)>) -> Result<chain::Verification> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut check = chain::Verifier::new(expect_head);
        for entry in t.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            match serde_json::from_slice::<AuditEvent>(v.value()) {
                Ok(event) => check.event(key, event),
                Err(e) => check.unreadable(key, e.to_string()),
            }
        }
        Ok(check.finish())
    }

    /// The last `limit` audit events (all when `None`), oldest first.
    pub fn list_audit(&self, limit: Option<usize>) -> Result<Vec<AuditEvent>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in t.iter()?.rev() {
            if limit.is_some_and(|l| out.len() >= l) {
                break;
            }
            let (k, v) = entry?;
            out.push(decode("audit", &k.value().to_string(), v.value())?);
        }
        out.reverse();
        Ok(out)
    }
}

/// A read transaction handed to [`Store::read`]: every read sees the same snapshot.
pub struct ReadTxn {
    txn: redb::ReadTransaction,
}

impl ReadTxn {
    pub fn get<T: DeserializeOwned>(&self, table: &Table<T>, key: &str) -> Result<Option<T>> {
        read_one(&self.txn.open_table(table.def)?, table.name, key)
    }

    pub fn list<T: DeserializeOwned>(&self, table: &Table<T>) -> Result<Vec<T>> {
        read_all(&self.txn.open_table(table.def)?, table.name)
    }

    pub fn services(&self) -> Result<ServiceToggles> {
        services_from(self.get(&SETTINGS, SERVICES_KEY)?)
    }
}

fn services_from(value: Option<serde_json::Value>) -> Result<ServiceToggles> {
    match value {
        None => Ok(ServiceToggles::default()),
        Some(v) => serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
            table: "settings",
            key: SERVICES_KEY.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// A write transaction handed to [`Store::write`].
pub struct Txn<'a> {
    txn: &'a redb::WriteTransaction,
}

impl Txn<'_> {
    pub fn get<T: DeserializeOwned>(&self, table: &Table<T>, key: &str) -> Result<Option<T>> {
        read_one(&self.txn.open_table(table.def)?, table.name, key)
    }

    pub fn list<T: DeserializeOwned>(&self, table: &Table<T>) -> Result<Vec<T>> {
        read_all(&self.txn.open_table(table.def)?, table.name)
    }

    /// Every record with its key, in key order.
    pub fn entries<T: DeserializeOwned>(&self, table: &Table<T>) -> Result<Vec<(String, T)>> {
        let t = self.txn.open_table(table.def)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push((
                k.value().to_string(),
                decode(table.name, k.value(), v.value())?,
            ));
        }
        Ok(out)
    }

    pub fn put<T: Serialize>(&mut self, table: &Table<T>, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            table: table.name,
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        let mut t = self.txn.open_table(table.def)?;
        t.insert(key, bytes.as_slice())?;
        Ok(())
    }

    pub fn services(&self) -> Result<ServiceToggles> {
        services_from(self.get(&SETTINGS, SERVICES_KEY)?)
    }

    pub fn put_services(&mut self, toggles: &ServiceToggles) -> Result<()> {
        let value = serde_json::to_value(toggles).map_err(|e| StoreError::Corrupt {
            table: "settings",
            key: SERVICES_KEY.to_string(),
            reason: e.to_string(),
        })?;
        self.put(&SETTINGS, SERVICES_KEY, &value)
    }

    /// Removes a record; returns whether it existed.
    pub fn delete<T>(&mut self, table: &Table<T>, key: &str) -> Result<bool> {
        let mut t = self.txn.open_table(table.def)?;
        let existed = t.remove(key)?.is_some();
        Ok(existed)
    }

    /// Appends an audit event in this transaction, linking it into the hash chain.
    pub fn append_audit(&mut self, mut event: AuditEvent) -> Result<AuditEvent> {
        let mut t = self.txn.open_table(AUDIT)?;
        let (next, previous) = match t.last()? {
            Some((k, v)) => {
                let seq = k.value();
                let last: AuditEvent = decode("audit", &seq.to_string(), v.value())?;
                (seq + 1, last.chain)
            }
            None => (1, None),
        };
        event.seq = next;
        event.chain = None;
        let link =
            chain::link(previous.as_deref().unwrap_or(chain::GENESIS), &event).map_err(|e| {
                StoreError::Corrupt {
                    table: "audit",
                    key: next.to_string(),
                    reason: e.to_string(),
                }
            })?;
        event.chain = Some(link);
        let bytes = serde_json::to_vec(&event).map_err(|e| StoreError::Corrupt {
            table: "audit",
            key: next.to_string(),
            reason: e.to_string(),
        })?;
        t.insert(next, bytes.as_slice())?;
        Ok(event)
    }
}

fn read_one<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
    key: &str,
) -> Result<Option<T>> {
    match t.get(key)? {
        Some(v) => decode(name, key, v.value()).map(Some),
        None => Ok(None),
    }
}

fn read_all<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for entry in t.iter()? {
        let (k, v) = entry?;
        out.push(decode(name, k.value(), v.value())?);
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{Name, time::Timestamp};

    fn group(name: &str) -> Group {
        Group {
            name: Name::new(name).unwrap(),
            description: String::new(),
            parents: vec![],
            created: Timestamp(1),
        }
    }

    #[test]
    fn round_trip_and_atomicity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store
            .write(|t| -> Result<()> { t.put(&GROUPS, "ops", &group("ops")) })
            .unwrap();
        // A failing closure leaves nothing behind.
        let failed: Result<(), StoreError> = store.write(|t| {
            t.put(&GROUPS, "dev", &group("dev"))?;
            Err(StoreError::Database("boom".into()))
        });
        assert!(failed.is_err());
        let names: Vec<String> = store
            .list(&GROUPS)
            .unwrap()
            .into_iter()
            .map(|g| g.name.to_string())
            .collect();
        assert_eq!(names, vec!["ops"]);
        drop(store);
        // Reopening keeps the data and the version.
        let store = Store::open(&path).unwrap();
        assert!(store.get(&GROUPS, "ops").unwrap().is_some());
    }

    #[test]
    fn audit_sequence_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        for i in 0..5 {
            let e = store
                .append_audit(AuditEvent {
                    seq: 0,
                    time: Timestamp(i),
                    kind: gatehouse_core::AuditKind::LoginOk,
                    session: None,
                    user: None,
                    target: None,
                    client: None,
                    detail: format!("event {i}"),
                    fields: Default::default(),
                    chain: None,
                })
                .unwrap();
            assert_eq!(e.seq, i + 1);
        }
        let last: Vec<u64> = store
            .list_audit(Some(2))
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(last, vec![4, 5]);
    }

    #[test]
    fn second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let _first = Store::open(&path).unwrap();
        let second = Store::open(&path).unwrap_err();
        assert!(matches!(second, StoreError::InUse(_)), "{second}");
    }
}
