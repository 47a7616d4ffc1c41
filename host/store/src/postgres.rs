//! The PostgreSQL engine: several control nodes on one database.
//!
//! One table per record type (`gh_users`, `gh_accounts`, …: a text key and the record's JSON),
//! `gh_audit` numbered by `seq`, and `gh_schema_migrations` with the DDL versions applied. Write
//! transactions take one transaction-scoped advisory lock first, so writers on every control node
//! are serialised exactly as redb serialises them: a read-then-write inside one is safe, and audit
//! numbers are one above the last, gap-free and in commit order (no sequence, no clock). Reads run
//! in `REPEATABLE READ READ ONLY` transactions, one snapshot each.
//!
//! The driver is tokio-postgres with a deadpool pool, on a small runtime of the store's own: the
//! [`Backend`] surface is synchronous (as redb's is), and a call blocks its caller until the
//! database answers, from async code or not. Statements are fixed text with `$n` parameters; table
//! names come from this crate's constants, never from input.

use crate::backend::{Backend, RawRead, RawWrite};
use crate::location::{PostgresUrl, redact};
use crate::{ALL_TABLES, Result, SCHEMA_VERSION, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_executor::block_on;
use std::time::Duration;

/// The key of the advisory lock held while the schema is migrated.
const MIGRATE_LOCK: i64 = 0x6761_7465_6d69_6772; // "gatemigr"

/// The tables of DDL version 1 (record schema 4). A table added later gets a migration of its
/// own; a unit test checks every record table is created by some migration.
const V1_TABLES: [&str; 22] = [
    "users",
    "groups",
    "assets",
    "asset_groups",
    "accounts",
    "grants",
    "sessions",
    "plugin_secrets",
    "settings",
    "requests",
    "access_tokens",
    "applications",
    "a2a_keys",
    "profiles",
    "partitions",
    "asset_lifecycle",
    "account_lifecycle",
    "credential_changes",
    "discovered_accounts",
    "nodes",
    "join_tokens",
    "networks",
];

/// The DDL versions, in order. Applied in one transaction each, recorded in
/// `gh_schema_migrations`; a database with a version above the last here is refused.
fn migrations() -> Vec<(&'static str, String)> {
    let mut v1 = String::from(
        "CREATE TABLE gh_meta (key text PRIMARY KEY, value bigint NOT NULL);\n\
         CREATE TABLE gh_audit (seq bigint PRIMARY KEY CHECK (seq > 0), event json NOT NULL);\n",
    );
    for table in V1_TABLES {
        v1.push_str(&format!(
            "CREATE TABLE gh_{table} (key text COLLATE \"C\" PRIMARY KEY, value json NOT NULL);\n"
        ));
    }
    vec![
        ("record tables, audit trail and meta (record schema 4)", v1),
        (
            "portal sessions (record schema 5)",
            "CREATE TABLE gh_portal_sessions (key text COLLATE \"C\" PRIMARY KEY, value json NOT NULL);\n"
                .to_string(),
        ),
    ]
}

/// The newest DDL version this build knows.
pub fn ddl_version() -> i32 {
    migrations().len() as i32
}

/// Parses the URL into the driver's configuration and the TLS to use. `sslmode` and
/// `sslrootcert` are read here (the driver knows neither `verify-full` nor `sslrootcert`).
pub(crate) fn parse_config(url: &PostgresUrl) -> Result<(tokio_postgres::Config, Tls)> {
    let text = url.expose();
    let (base, query) = match text.split_once('?') {
        Some((b, q)) => (b, q),
        None => (text, ""),
    };
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_string()),
            Some(("sslrootcert", v)) => root = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config: tokio_postgres::Config = rebuilt
        .parse()
        .map_err(|e| StoreError::Location(format!("`{}`: {e}", redact(text))))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("gatehouse");
    }
    let tls = match mode.as_deref() {
        None | Some("disable" | "allow" | "prefer") if root.is_none() => Tls::None,
        None | Some("disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full") => {
            if mode.as_deref() == Some("disable") {
                return Err(StoreError::Location(
                    "`sslmode=disable` with `sslrootcert`: choose one".into(),
                ));
            }
            Tls::Verified { root_file: root }
        }
        Some(other) => {
            return Err(StoreError::Location(format!(
                "`sslmode={other}` is not one of disable, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    Ok((config, tls))
}

/// How the connection is protected.
#[derive(Debug, Clone)]
pub(crate) enum Tls {
    /// Plain TCP or a Unix socket (`sslmode` absent, `disable` or `prefer` without a CA).
    None,
    /// TLS by rustls, the server's certificate checked against `root_file` (PEM) or the public
    /// web roots, and its name against the host.
    Verified { root_file: Option<String> },
}

/// The PostgreSQL store engine.
pub struct PostgresBackend {
    pool: Pool,
    /// The connections holding a lead (a session advisory lock each), by job name.
    leads: std::sync::Mutex<std::collections::HashMap<String, deadpool_postgres::ClientWrapper>>,
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresBackend")
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        // Dropping a runtime may block, which is refused inside async code: let it go instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        // The server answered: a real error (constraint, permission, …), not an outage. Admin
        // shutdown and "cannot connect now" mean the database is going away or starting.
        let code = db.code().code();
        if code.starts_with("57P") || code.starts_with("08") {
            return StoreError::Unavailable(db.message().to_string());
        }
        return StoreError::Database(format!("{} ({code})", db.message()));
    }
    // "error connecting to server" alone does not say why: add the causes.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    StoreError::Unavailable(text)
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn sql_table(name: &'static str) -> Result<String> {
    if ALL_TABLES.contains(&name) {
        Ok(format!("gh_{name}"))
    } else {
        Err(StoreError::Database(format!("no table `{name}`")))
    }
}

fn seq_to_sql(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Database(format!("audit number {seq} too large")))
}

fn seq_from_sql(seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| StoreError::Database(format!("audit number {seq} negative")))
}

impl PostgresBackend {
    /// Connects (up to 16 pooled connections), migrates the schema under an advisory lock
    /// (another control node starting at the same time waits), and checks the versions.
    pub fn connect(url: &PostgresUrl) -> Result<Self> {
        let (config, tls) = parse_config(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gatehouse-store-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("starting the store's runtime: {e}")))?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            Tls::None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
            Tls::Verified { root_file } => Manager::from_config(
                config,
                crate::postgres_tls::RustlsConnect::new(root_file.as_deref())?,
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Database(format!("building the connection pool: {e}")))?;
        let handle = runtime.handle().clone();
        let backend = PostgresBackend {
            pool,
            leads: Default::default(),
            runtime: Some(runtime),
            handle,
        };
        backend.migrate().map_err(|e| match e {
            StoreError::Unavailable(why) => StoreError::Unavailable(format!("{url}: {why}")),
            other => other,
        })?;
        Ok(backend)
    }

    /// A pooled connection (made on the store's runtime, which drives its socket).
    fn client(&self) -> Result<deadpool_postgres::Object> {
        let pool = self.pool.clone();
        let task = self.handle.spawn(async move { pool.get().await });
        match block_on(task) {
            Ok(result) => result.map_err(pool_err),
            Err(e) => Err(StoreError::Unavailable(format!("the store's runtime: {e}"))),
        }
    }

    fn migrate(&self) -> Result<()> {
        let mut client = self.client()?;
        block_on(client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK]))
            .map_err(pg_err)?;
        let result = self.migrate_locked(&mut client);
        let unlocked = block_on(client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]));
        result?;
        unlocked.map_err(pg_err)?;
        Ok(())
    }

    fn migrate_locked(&self, client: &mut deadpool_postgres::Object) -> Result<()> {
        block_on(client.batch_execute(
            "CREATE TABLE IF NOT EXISTS gh_schema_migrations (\
               version integer PRIMARY KEY, description text NOT NULL, \
               applied_at timestamptz NOT NULL DEFAULT now())",
        ))
        .map_err(pg_err)?;
        let row = block_on(client.query_one(
            "SELECT coalesce(max(version), 0) FROM gh_schema_migrations",
            &[],
        ))
        .map_err(pg_err)?;
        let found: i32 = row.get(0);
        let known = migrations();
        if found > known.len() as i32 {
            return Err(StoreError::SchemaTooNew {
                found: found as u64,
                supported: known.len() as u64,
            });
        }
        for (index, (description, ddl)) in known.iter().enumerate() {
            let version = index as i32 + 1;
            if version <= found {
                continue;
            }
            let tx = block_on(client.transaction()).map_err(pg_err)?;
            block_on(tx.batch_execute(ddl)).map_err(pg_err)?;
            block_on(tx.execute(
                "INSERT INTO gh_schema_migrations (version, description) VALUES ($1, $2)",
                &[&version, description],
            ))
            .map_err(pg_err)?;
            block_on(tx.commit()).map_err(pg_err)?;
            tracing::info!(version, description, "migrated the PostgreSQL store");
        }
        // The record schema, as in the redb file: refuse records written by a newer build.
        let row = block_on(client.query_opt(
            "SELECT value FROM gh_meta WHERE key = 'schema_version'",
            &[],
        ))
        .map_err(pg_err)?;
        let records: i64 = row.map(|r| r.get(0)).unwrap_or(0);
        if records as u64 > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: records as u64,
                supported: SCHEMA_VERSION,
            });
        }
        if (records as u64) < SCHEMA_VERSION {
            let version = SCHEMA_VERSION as i64;
            block_on(client.execute(
                "INSERT INTO gh_meta (key, value) VALUES ('schema_version', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&version],
            ))
            .map_err(pg_err)?;
        }
        Ok(())
    }
}

/// The advisory lock key of a lead: the first 8 bytes of SHA-256 of its name.
fn lead_key(name: &str) -> i64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("gatehouse-lead:{name}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

impl Backend for PostgresBackend {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    fn try_lead(&self, name: &str) -> Result<bool> {
        let mut leads = self
            .leads
            .lock()
            .map_err(|_| StoreError::Database("the lead table is poisoned".into()))?;
        if let Some(held) = leads.get(name) {
            // The lock lives as long as this connection: check it still does.
            if block_on(held.simple_query("SELECT 1")).is_ok() {
                return Ok(true);
            }
            leads.remove(name);
        }
        let client = self.client()?;
        let row = block_on(client.query_one("SELECT pg_try_advisory_lock($1)", &[&lead_key(name)]))
            .map_err(pg_err)?;
        let won: bool = row.get(0);
        if won {
            // Out of the pool for good: back in it, the lock would go to whoever took it next.
            leads.insert(name.to_string(), deadpool_postgres::Object::take(client));
        }
        Ok(won)
    }

    fn schema_version(&self) -> Result<u64> {
        let client = self.client()?;
        let row = block_on(client.query_opt(
            "SELECT value FROM gh_meta WHERE key = 'schema_version'",
            &[],
        ))
        .map_err(pg_err)?;
        Ok(row.map(|r| r.get::<_, i64>(0)).unwrap_or(0) as u64)
    }

    fn get(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>> {
        // One statement is atomic on its own: no transaction, one round trip.
        let client = self.client()?;
        let view = View::new(&client, None);
        view.get(table, key)
    }

    fn entries(&self, table: &'static str) -> Result<Vec<(String, Vec<u8>)>> {
        let client = self.client()?;
        let view = View::new(&client, None);
        view.entries(table)
    }

    fn read(&self, f: &mut dyn FnMut(&dyn RawRead) -> Result<()>) -> Result<()> {
        let client = self.client()?;
        let view = View::new(
            &client,
            Some("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"),
        );
        let result = f(&view);
        // Read only: ending by rollback is the same as a commit, and need not be waited for.
        view.end_without_waiting();
        result
    }

    fn write(&self, f: &mut dyn FnMut(&mut dyn RawWrite) -> Result<()>) -> Result<()> {
        let client = self.client()?;
        // The advisory lock in the same round trip as BEGIN: every writer on every node waits
        // here for the one before it to commit.
        let mut view = View::new(&client, Some(WRITE_BEGIN));
        match f(&mut view) {
            Ok(()) if view.begun() => block_on(client.batch_execute("COMMIT")).map_err(pg_err),
            Ok(()) => Ok(()),
            Err(e) => {
                view.end_without_waiting();
                Err(e)
            }
        }
    }
}

/// `BEGIN` and the advisory lock every write transaction takes, as one simple query (the key is
/// a constant: "gatehous" as a big-endian i64).
const WRITE_BEGIN: &str = "BEGIN; SELECT pg_advisory_xact_lock(7449363237540164979)";

/// The statements of one transaction (or of one autocommit statement) on a pooled connection.
/// `BEGIN` is not sent on its own: it goes with the first statement, in the same round trip.
struct View<'a> {
    client: &'a deadpool_postgres::ClientWrapper,
    begin: std::cell::Cell<Option<&'static str>>,
    begun: std::cell::Cell<bool>,
}

/// Polls a future once with a waker that does nothing: enough for the driver to queue its
/// request on the connection (requests go out in the order they are queued).
fn send<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

impl<'a> View<'a> {
    fn new(client: &'a deadpool_postgres::ClientWrapper, begin: Option<&'static str>) -> Self {
        View {
            client,
            begin: std::cell::Cell::new(begin),
            begun: std::cell::Cell::new(false),
        }
    }

    fn begun(&self) -> bool {
        self.begun.get()
    }

    /// Ends the transaction, if one began, with a ROLLBACK queued but not waited for.
    fn end_without_waiting(&self) {
        if self.begun.get() {
            let rollback = std::pin::pin!(self.client.batch_execute("ROLLBACK"));
            let _ = send(rollback);
        }
    }

    /// Runs `run` (one statement), preceded in the same round trip by BEGIN when it is the
    /// transaction's first.
    fn with_begin<T>(
        &self,
        run: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        let Some(begin) = self.begin.take() else {
            return block_on(run).map_err(pg_err);
        };
        let mut starting = std::pin::pin!(self.client.batch_execute(begin));
        let sent = send(starting.as_mut());
        self.begun.set(true);
        let result = block_on(run);
        let begun = match sent {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => block_on(starting),
        };
        begun.map_err(pg_err)?;
        result.map_err(pg_err)
    }

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let statement = block_on(self.client.prepare_cached(sql)).map_err(pg_err)?;
        self.with_begin(self.client.query(&statement, params))
    }

    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        let statement = block_on(self.client.prepare_cached(sql)).map_err(pg_err)?;
        self.with_begin(self.client.execute(&statement, params))
    }

    fn audit_rows(rows: Vec<tokio_postgres::Row>) -> Result<Vec<(u64, Vec<u8>)>> {
        rows.into_iter()
            .map(|r| Ok((seq_from_sql(r.get(0))?, r.get::<_, String>(1).into_bytes())))
            .collect()
    }
}

impl RawRead for View<'_> {
    fn get(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>> {
        let sql = format!(
            "SELECT value::text FROM {} WHERE key = $1",
            sql_table(table)?
        );
        Ok(self
            .query(&sql, &[&key])?
            .into_iter()
            .next()
            .map(|r| r.get::<_, String>(0).into_bytes()))
    }

    fn entries(&self, table: &'static str) -> Result<Vec<(String, Vec<u8>)>> {
        let sql = format!(
            "SELECT key, value::text FROM {} ORDER BY key",
            sql_table(table)?
        );
        Ok(self
            .query(&sql, &[])?
            .into_iter()
            .map(|r| (r.get(0), r.get::<_, String>(1).into_bytes()))
            .collect())
    }

    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let after = seq_to_sql(after)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Self::audit_rows(self.query(
            "SELECT seq, event::text FROM gh_audit WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &limit],
        )?)
    }

    fn audit_tail(&self, limit: Option<usize>) -> Result<Vec<(u64, Vec<u8>)>> {
        let limit = limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut rows = Self::audit_rows(self.query(
            "SELECT seq, event::text FROM gh_audit ORDER BY seq DESC LIMIT $1",
            &[&limit],
        )?)?;
        rows.reverse();
        Ok(rows)
    }
}

impl RawWrite for View<'_> {
    fn put(&mut self, table: &'static str, key: &str, value: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(value)
            .map_err(|e| StoreError::Database(format!("a record that is not UTF-8: {e}")))?;
        let sql = format!(
            "INSERT INTO {} (key, value) VALUES ($1, $2::text::json) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            sql_table(table)?
        );
        self.execute(&sql, &[&key, &text])?;
        Ok(())
    }

    fn delete(&mut self, table: &'static str, key: &str) -> Result<bool> {
        let sql = format!("DELETE FROM {} WHERE key = $1", sql_table(table)?);
        Ok(self.execute(&sql, &[&key])? > 0)
    }

    fn audit_insert(&mut self, seq: u64, value: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(value)
            .map_err(|e| StoreError::Database(format!("an audit record that is not UTF-8: {e}")))?;
        let seq = seq_to_sql(seq)?;
        // Under the write lock the number is one above the last; the insert refuses anything
        // else (a gap or a number taken), so a bug cannot leave a hole or a duplicate.
        let inserted = self.execute(
            "INSERT INTO gh_audit (seq, event) SELECT $1, $2::text::json \
             WHERE $1 = (SELECT coalesce(max(seq), 0) + 1 FROM gh_audit)",
            &[&seq, &text],
        )?;
        if inserted != 1 {
            return Err(StoreError::Database(format!(
                "audit record {seq} out of sequence"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_table_has_a_migration() {
        let ddl: String = migrations().into_iter().map(|(_, d)| d).collect();
        for table in ALL_TABLES {
            assert!(
                ddl.contains(&format!("CREATE TABLE gh_{table} ")),
                "no migration creates `{table}`"
            );
        }
    }

    #[test]
    fn the_write_lock_in_begin_is_the_write_lock() {
        let key = i64::from_be_bytes(*b"gatehous");
        assert!(WRITE_BEGIN.ends_with(&format!("({key})")));
    }

    #[test]
    fn tls_modes() {
        let cfg = |s: &str| parse_config(&PostgresUrl { url: s.into() });
        assert!(matches!(cfg("postgres://u@h/d").unwrap().1, Tls::None));
        assert!(matches!(
            cfg("postgres://u@h/d?sslmode=verify-full&sslrootcert=/ca.pem")
                .unwrap()
                .1,
            Tls::Verified { root_file: Some(_) }
        ));
        assert!(matches!(
            cfg("postgres://u@h/d?sslmode=require").unwrap().1,
            Tls::Verified { root_file: None }
        ));
        assert!(cfg("postgres://u@h/d?sslmode=bogus").is_err());
        assert!(cfg("postgres://u@h/d?sslmode=disable&sslrootcert=/x").is_err());
    }
}
