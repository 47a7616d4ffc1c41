//! The store: users, vault ciphertexts, assets, requests, audit and everything else the control
//! node keeps, with a versioned schema.
//!
//! Records are JSON values under string keys, one table per record type. All multi-record changes
//! go through [`Store::write`], which runs a closure in one ACID transaction. Two engines sit under
//! the one [`Backend`] trait: an embedded redb file (the default) and PostgreSQL (several control
//! nodes on one database). Only this crate knows redb and the PostgreSQL driver.

use gatehouse_core::{
    A2aKey, AccessRequest, AccessToken, Account, AccountLifecycle, Application, Asset, AssetGroup,
    AssetLifecycle, AuditEvent, CredentialChange, DiscoveredAccount, Grant, Group, JoinToken,
    ManagedNetwork, Node, Partition, PluginSecret, PortalSession, Profile, ServiceToggles,
    SessionRecord, User,
};
use serde::{Serialize, de::DeserializeOwned};
use std::path::Path;

pub mod backend;
pub mod chain;
pub mod location;
pub mod postgres;
mod postgres_tls;
pub mod redb_backend;

pub use backend::{Backend, RawRead, RawWrite};
pub use location::StoreLocation;

/// The schema version this build writes. Older stores are migrated on open; newer ones are refused.
pub const SCHEMA_VERSION: u64 = 5;

/// A typed table of JSON records keyed by string.
pub struct Table<T> {
    name: &'static str,
    _record: std::marker::PhantomData<fn() -> T>,
}

impl<T> Table<T> {
    const fn new(name: &'static str) -> Self {
        Self {
            name,
            _record: std::marker::PhantomData,
        }
    }

    /// The table's name in the store.
    pub const fn name(&self) -> &'static str {
        self.name
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
/// Signed-in portal sessions, keyed by the session token's id.
pub const PORTAL_SESSIONS: Table<PortalSession> = Table::new("portal_sessions");

/// Every record table, in the order `store migrate` copies them.
pub const ALL_TABLES: [&str; 23] = [
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
    PORTAL_SESSIONS.name,
];

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
    /// The database cannot be reached (PostgreSQL down, network cut); retrying later can work.
    #[error("the store's database cannot be reached: {0}")]
    Unavailable(String),
    /// A store location that cannot be used (malformed URL, unknown scheme).
    #[error("store location: {0}")]
    Location(String),
    /// A write transaction's closure returned an error; nothing was written.
    #[error("the transaction was rolled back")]
    RolledBack,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store. Cheap to share behind an `Arc`; writers are serialised and readers see snapshots.
pub struct Store {
    backend: Box<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend.engine())
    }
}

impl Store {
    /// Opens (creating if needed) the embedded store file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self::with_backend(Box::new(
            redb_backend::RedbBackend::open(path)?,
        )))
    }

    /// Opens the store at `location`: the redb file or the PostgreSQL database, migrating its
    /// schema (and refusing one newer than this build).
    pub fn open_location(location: &StoreLocation) -> Result<Self> {
        match location {
            StoreLocation::Redb(path) => Self::open(path),
            StoreLocation::Postgres(url) => Ok(Self::with_backend(Box::new(
                postgres::PostgresBackend::connect(url)?,
            ))),
        }
    }

    /// A store on any engine.
    pub fn with_backend(backend: Box<dyn Backend>) -> Self {
        Store { backend }
    }

    /// `redb` or `postgres`.
    pub fn engine(&self) -> &'static str {
        self.backend.engine()
    }

    /// The schema version of the open store.
    pub fn schema_version(&self) -> Result<u64> {
        self.backend.schema_version()
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, table: &Table<T>, key: &str) -> Result<Option<T>> {
        match self.backend.get(table.name, key)? {
            Some(bytes) => decode(table.name, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Reads every record of a table, in key order.
    pub fn list<T: DeserializeOwned>(&self, table: &Table<T>) -> Result<Vec<T>> {
        self.backend
            .entries(table.name)?
            .iter()
            .map(|(k, v)| decode(table.name, k, v))
            .collect()
    }

    /// Runs `f` on one consistent snapshot of the store (a read transaction).
    pub fn read<R, E>(&self, f: impl FnOnce(&ReadTxn<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let mut f = Some(f);
        let mut out: Option<Result<R, E>> = None;
        let ran = self.backend.read(&mut |raw| {
            if let Some(f) = f.take() {
                out = Some(f(&ReadTxn { raw }));
            }
            Ok(())
        });
        match (ran, out) {
            (Err(e), _) => Err(e.into()),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Database("the read did not run".into()).into()),
        }
    }

    /// Runs `f` in one write transaction; its changes commit together or not at all. An error
    /// returned by `f` aborts the transaction.
    pub fn write<R, E>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let mut f = Some(f);
        let mut out: Option<Result<R, E>> = None;
        let ran = self.backend.write(&mut |raw| {
            let Some(f) = f.take() else {
                return Err(StoreError::Database("the transaction ran twice".into()));
            };
            let result = f(&mut Txn {
                raw,
                audit_tail: None,
            });
            let failed = result.is_err();
            out = Some(result);
            if failed {
                Err(StoreError::RolledBack)
            } else {
                Ok(())
            }
        });
        match (ran, out) {
            // The closure's own error, not the rollback marker.
            (_, Some(Err(e))) => Err(e),
            (Err(e), _) => Err(e.into()),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Database("the write did not run".into()).into()),
        }
    }

    /// Which services are on (all, until an administrator turns one off).
    pub fn services(&self) -> Result<ServiceToggles> {
        services_from(self.get(&SETTINGS, SERVICES_KEY)?)
    }

    /// Whether this process leads the singleton job `name` (see [`Backend::try_lead`]).
    pub fn try_lead(&self, name: &str) -> Result<bool> {
        self.backend.try_lead(name)
    }

    /// Appends an audit event, assigning its sequence number, and returns it.
    pub fn append_audit(&self, event: AuditEvent) -> Result<AuditEvent> {
        self.write(|txn| txn.append_audit(event))
    }

    /// Up to `limit` audit events with a sequence number above `after`, oldest first.
    pub fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEvent>> {
        let raw = self.read(|r| r.raw.audit_after(after, limit))?;
        raw.iter()
            .map(|(seq, bytes)| decode("audit", &seq.to_string(), bytes))
            .collect()
    }

    /// Checks the audit trail's hash chain from the first event to the last: every event in
    /// sequence, stored under its own number, and linked to the one before it. `expect_head`
    /// (a `SEQ:CHAIN` recorded earlier) must still be in the trail, which catches a trail cut
    /// short or replaced by an older copy.
    pub fn verify_audit(&self, expect_head: Option<(u64, &str)>) -> Result<chain::Verification> {
        const PAGE: usize = 4096;
        let mut check = chain::Verifier::new(expect_head);
        let mut after = 0;
        loop {
            let page = self.read(|r| r.raw.audit_after(after, PAGE))?;
            let Some((last, _)) = page.last() else { break };
            after = *last;
            let full = page.len() == PAGE;
            for (key, bytes) in page {
                match serde_json::from_slice::<AuditEvent>(&bytes) {
                    Ok(event) => check.event(key, event),
                    Err(e) => check.unreadable(key, e.to_string()),
                }
            }
            if !full {
                break;
            }
        }
        Ok(check.finish())
    }

    /// The last `limit` audit events (all when `None`), oldest first.
    pub fn list_audit(&self, limit: Option<usize>) -> Result<Vec<AuditEvent>> {
        let raw = self.read(|r| r.raw.audit_tail(limit))?;
        raw.iter()
            .map(|(seq, bytes)| decode("audit", &seq.to_string(), bytes))
            .collect()
    }

    /// Copies every record and the whole audit trail of `self` into `to`, which must be empty,
    /// in one write transaction on `to`. Returns how many records and audit events were copied.
    pub fn copy_into(&self, to: &Store) -> Result<(usize, usize)> {
        let mut tables = Vec::new();
        self.read(|r| -> Result<()> {
            for name in ALL_TABLES {
                tables.push((name, r.raw.entries(name)?));
            }
            Ok(())
        })?;
        let audit = self.read(|r| r.raw.audit_tail(None))?;
        to.write(|t| -> Result<(usize, usize)> {
            let mut records = 0;
            for (name, _) in &tables {
                if !t.raw.entries(name)?.is_empty() {
                    return Err(StoreError::Location(format!(
                        "the destination is not empty (table `{name}` has records)"
                    )));
                }
            }
            if !t.raw.audit_tail(Some(1))?.is_empty() {
                return Err(StoreError::Location(
                    "the destination is not empty (it has audit events)".into(),
                ));
            }
            for (name, entries) in &tables {
                for (key, value) in entries {
                    t.raw.put(name, key, value)?;
                    records += 1;
                }
            }
            for (seq, value) in &audit {
                t.raw.audit_insert(*seq, value)?;
            }
            Ok((records, audit.len()))
        })
    }
}

/// A read transaction handed to [`Store::read`]: every read sees the same snapshot.
pub struct ReadTxn<'a> {
    raw: &'a dyn RawRead,
}

impl ReadTxn<'_> {
    pub fn get<T: DeserializeOwned>(&self, table: &Table<T>, key: &str) -> Result<Option<T>> {
        match self.raw.get(table.name, key)? {
            Some(bytes) => decode(table.name, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn list<T: DeserializeOwned>(&self, table: &Table<T>) -> Result<Vec<T>> {
        self.raw
            .entries(table.name)?
            .iter()
            .map(|(k, v)| decode(table.name, k, v))
            .collect()
    }

    pub fn services(&self) -> Result<ServiceToggles> {
        services_from(self.get(&SETTINGS, SERVICES_KEY)?)
    }

    /// How many records a table holds (by name, one of [`ALL_TABLES`]).
    pub fn count(&self, table: &'static str) -> Result<usize> {
        Ok(self.raw.entries(table)?.len())
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
    raw: &'a mut dyn RawWrite,
    /// The last audit event's number and link once this transaction has read or appended it
    /// (events appended in a batch need not read the tail again).
    audit_tail: Option<(u64, Option<String>)>,
}

impl Txn<'_> {
    pub fn get<T: DeserializeOwned>(&self, table: &Table<T>, key: &str) -> Result<Option<T>> {
        match self.raw.get(table.name, key)? {
            Some(bytes) => decode(table.name, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn list<T: DeserializeOwned>(&self, table: &Table<T>) -> Result<Vec<T>> {
        Ok(self.entries(table)?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every record with its key, in key order.
    pub fn entries<T: DeserializeOwned>(&self, table: &Table<T>) -> Result<Vec<(String, T)>> {
        self.raw
            .entries(table.name)?
            .into_iter()
            .map(|(k, v)| {
                let value = decode(table.name, &k, &v)?;
                Ok((k, value))
            })
            .collect()
    }

    pub fn put<T: Serialize>(&mut self, table: &Table<T>, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
            table: table.name,
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        self.raw.put(table.name, key, &bytes)
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
        self.raw.delete(table.name, key)
    }

    /// Appends an audit event in this transaction, linking it into the hash chain. The number is
    /// one above the last, gap-free: write transactions are serialised on every engine.
    pub fn append_audit(&mut self, mut event: AuditEvent) -> Result<AuditEvent> {
        let (next, previous) = match self.audit_tail.take() {
            Some((seq, chain)) => (seq + 1, chain),
            None => match self.raw.audit_tail(Some(1))?.pop() {
                Some((seq, bytes)) => {
                    let last: AuditEvent = decode("audit", &seq.to_string(), &bytes)?;
                    (seq + 1, last.chain)
                }
                None => (1, None),
            },
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
        self.raw.audit_insert(next, &bytes)?;
        self.audit_tail = Some((next, event.chain.clone()));
        Ok(event)
    }
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
