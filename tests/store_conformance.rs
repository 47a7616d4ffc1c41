//! One conformance suite for every store engine: the embedded redb file and a real PostgreSQL
//! (Debian's package, started by the test). Every case runs on a fresh store of each engine:
//! records, key order, overwrite and delete, transactions that roll back, snapshots, concurrent
//! writers (read-modify-write, unique names, audit numbers), the audit chain, unusual records,
//! copying one store into another. PostgreSQL-only cases follow: a schema newer than the build,
//! vault ciphertexts bound to their account, and the database going away and coming back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_core::time::Timestamp;
use gatehouse_core::{Account, AuditEvent, AuditKind, Group, Name};
use gatehouse_store::{
    ACCOUNTS, GROUPS, SCHEMA_VERSION, SETTINGS, Store, StoreError, StoreLocation, account_key,
};
use gatehouse_vault::{MasterKey, SecretKind, Vault};
use std::sync::{Arc, Barrier};
use support::postgres::Postgres;

fn group(name: &str, description: &str) -> Group {
    Group {
        name: Name::new(name).unwrap(),
        description: description.to_string(),
        parents: vec![],
        created: Timestamp(1),
    }
}

fn event(detail: &str) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time: Timestamp(7),
        kind: AuditKind::LoginOk,
        session: None,
        user: Some("alice".into()),
        target: None,
        client: None,
        detail: detail.to_string(),
        fields: Default::default(),
        chain: None,
    }
}

type Case = fn(&Store);

const CASES: &[(&str, Case)] = &[
    ("records", records),
    ("rollback", rollback),
    ("snapshot", snapshot),
    ("concurrent_counter", concurrent_counter),
    ("unique_names", unique_names),
    ("audit_sequence", audit_sequence),
    ("concurrent_audit", concurrent_audit),
    ("unusual_records", unusual_records),
];

fn records(store: &Store) {
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.get(&GROUPS, "ops").unwrap().is_none());
    assert!(store.list(&GROUPS).unwrap().is_empty());
    store
        .write(|t| -> Result<(), StoreError> {
            for name in ["ops", "Zeta", "dev", "dba-2", "a_b", "ops2"] {
                t.put(&GROUPS, name, &group(name, "first"))?;
            }
            Ok(())
        })
        .unwrap();
    // Key order is bytewise on every engine (uppercase before lowercase).
    let names: Vec<String> = store
        .list(&GROUPS)
        .unwrap()
        .into_iter()
        .map(|g| g.name.to_string())
        .collect();
    assert_eq!(names, ["Zeta", "a_b", "dba-2", "dev", "ops", "ops2"]);
    // Overwrite, entries with keys, delete.
    store
        .write(|t| t.put(&GROUPS, "ops", &group("ops", "second")))
        .unwrap();
    assert_eq!(
        store.get(&GROUPS, "ops").unwrap().unwrap().description,
        "second"
    );
    let (existed, gone, keys) = store
        .write(|t| -> Result<_, StoreError> {
            let existed = t.delete(&GROUPS, "dev")?;
            let gone = t.delete(&GROUPS, "dev")?;
            let keys: Vec<String> = t.entries(&GROUPS)?.into_iter().map(|(k, _)| k).collect();
            Ok((existed, gone, keys))
        })
        .unwrap();
    assert!(existed && !gone);
    assert_eq!(keys, ["Zeta", "a_b", "dba-2", "ops", "ops2"]);
    // A write transaction reads its own writes.
    store
        .write(|t| -> Result<(), StoreError> {
            t.put(&GROUPS, "new", &group("new", "mine"))?;
            assert_eq!(t.get(&GROUPS, "new")?.unwrap().description, "mine");
            assert_eq!(t.list(&GROUPS)?.len(), 6);
            Ok(())
        })
        .unwrap();
    // Settings: the service toggles default to on and round-trip.
    let mut services = store.services().unwrap();
    assert!(services.a2a);
    services.a2a = false;
    store.write(|t| t.put_services(&services)).unwrap();
    assert!(!store.services().unwrap().a2a);
    assert!(store.get(&SETTINGS, "services").unwrap().is_some());
}

#[derive(Debug)]
enum MyError {
    Refused,
    Store(StoreError),
}

impl From<StoreError> for MyError {
    fn from(e: StoreError) -> Self {
        MyError::Store(e)
    }
}

fn rollback(store: &Store) {
    store
        .write(|t| t.put(&GROUPS, "keep", &group("keep", "")))
        .unwrap();
    let failed = store.write(|t| -> Result<(), MyError> {
        t.put(&GROUPS, "lost", &group("lost", ""))?;
        t.delete(&GROUPS, "keep")?;
        t.append_audit(event("never"))?;
        Err(MyError::Refused)
    });
    // The closure's own error comes back, and nothing it wrote stays.
    assert!(matches!(failed, Err(MyError::Refused)), "{failed:?}");
    assert!(store.get(&GROUPS, "lost").unwrap().is_none());
    assert!(store.get(&GROUPS, "keep").unwrap().is_some());
    assert!(store.list_audit(None).unwrap().is_empty());
    // A store error inside the closure comes back as that error.
    let bad = store.write(|t| -> Result<(), MyError> {
        t.put(&GROUPS, "x", &group("x", ""))?;
        Err(MyError::Store(StoreError::Database("inner".into())))
    });
    assert!(matches!(bad, Err(MyError::Store(StoreError::Database(ref m))) if m == "inner"));
    assert!(store.get(&GROUPS, "x").unwrap().is_none());
}

fn snapshot(store: &Store) {
    store
        .write(|t| t.put(&GROUPS, "g", &group("g", "before")))
        .unwrap();
    std::thread::scope(|scope| {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        scope.spawn(move || {
            go_rx.recv().unwrap();
            store
                .write(|t| t.put(&GROUPS, "g", &group("g", "after")))
                .unwrap();
            store
                .write(|t| t.put(&GROUPS, "h", &group("h", "")))
                .unwrap();
            done_tx.send(()).unwrap();
        });
        store
            .read(|r| -> Result<(), StoreError> {
                assert_eq!(r.get(&GROUPS, "g")?.unwrap().description, "before");
                go_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                // The other thread committed; this snapshot does not move.
                assert_eq!(r.get(&GROUPS, "g")?.unwrap().description, "before");
                assert_eq!(r.list(&GROUPS)?.len(), 1);
                Ok(())
            })
            .unwrap();
    });
    assert_eq!(
        store.get(&GROUPS, "g").unwrap().unwrap().description,
        "after"
    );
}

fn concurrent_counter(store: &Store) {
    const THREADS: usize = 8;
    const EACH: usize = 25;
    store
        .write(|t| t.put(&GROUPS, "counter", &group("counter", "0")))
        .unwrap();
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..EACH {
                    store
                        .write(|t| -> Result<(), StoreError> {
                            let mut g = t.get(&GROUPS, "counter")?.unwrap();
                            let n: usize = g.description.parse().unwrap();
                            g.description = (n + 1).to_string();
                            t.put(&GROUPS, "counter", &g)
                        })
                        .unwrap();
                }
            });
        }
    });
    // No lost update: every read-modify-write saw the one before it.
    assert_eq!(
        store.get(&GROUPS, "counter").unwrap().unwrap().description,
        (THREADS * EACH).to_string()
    );
}

fn unique_names(store: &Store) {
    const THREADS: usize = 8;
    let barrier = Barrier::new(THREADS);
    let results: Vec<Result<(), MyError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    store.write(|t| -> Result<(), MyError> {
                        if t.get(&GROUPS, "same")?.is_some() {
                            return Err(MyError::Refused);
                        }
                        t.put(&GROUPS, "same", &group("same", &i.to_string()))?;
                        Ok(())
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let created = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(MyError::Refused)))
        .count();
    assert_eq!((created, refused), (1, THREADS - 1), "{results:?}");
}

fn audit_sequence(store: &Store) {
    for i in 0..130 {
        let e = store.append_audit(event(&format!("event {i}"))).unwrap();
        assert_eq!(e.seq, i + 1);
        assert!(e.chain.is_some());
    }
    let last: Vec<u64> = store
        .list_audit(Some(3))
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(last, [128, 129, 130]);
    assert_eq!(store.list_audit(None).unwrap().len(), 130);
    let page: Vec<u64> = store
        .audit_after(100, 5)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(page, [101, 102, 103, 104, 105]);
    assert!(store.audit_after(130, 10).unwrap().is_empty());
    let head = store.list_audit(Some(1)).unwrap().pop().unwrap();
    let verified = store
        .verify_audit(Some((head.seq, head.chain.as_deref().unwrap())))
        .unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
    assert_eq!(verified.events, 130);
}

fn concurrent_audit(store: &Store) {
    const THREADS: usize = 8;
    const EACH: usize = 30;
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                for i in 0..EACH {
                    // Half alone, half with a record in the same transaction.
                    if i % 2 == 0 {
                        store.append_audit(event(&format!("{t}/{i}"))).unwrap();
                    } else {
                        store
                            .write(|w| -> Result<(), StoreError> {
                                let key = format!("g{t}x{i}");
                                w.put(&GROUPS, &key, &group(&key, ""))?;
                                w.append_audit(event(&format!("{t}/{i}")))?;
                                Ok(())
                            })
                            .unwrap();
                    }
                }
            });
        }
    });
    let all = store.list_audit(None).unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=(THREADS * EACH) as u64).collect();
    assert_eq!(seqs, expected, "gap-free and ordered");
    let mut details: Vec<&str> = all.iter().map(|e| e.detail.as_str()).collect();
    details.sort();
    details.dedup();
    assert_eq!(details.len(), THREADS * EACH, "none twice, none lost");
    let verified = store.verify_audit(None).unwrap();
    assert!(verified.problems.is_empty(), "{:?}", verified.problems);
}

fn unusual_records(store: &Store) {
    let odd = "nul \u{0} tab \t quote \" backslash \\ emoji 🦀 rtl \u{202e} end";
    let big = "x".repeat(1 << 20);
    store
        .write(|t| -> Result<(), StoreError> {
            t.put(&GROUPS, "odd", &group("odd", odd))?;
            t.put(&GROUPS, "big", &group("big", &big))?;
            t.put(
                &SETTINGS,
                "key with spaces/and/slashes ünï",
                &serde_json::json!({"n": 1}),
            )?;
            t.append_audit(event(odd))?;
            Ok(())
        })
        .unwrap();
    assert_eq!(store.get(&GROUPS, "odd").unwrap().unwrap().description, odd);
    assert_eq!(
        store
            .get(&GROUPS, "big")
            .unwrap()
            .unwrap()
            .description
            .len(),
        1 << 20
    );
    assert!(
        store
            .get(&SETTINGS, "key with spaces/and/slashes ünï")
            .unwrap()
            .is_some()
    );
    assert_eq!(store.list_audit(None).unwrap()[0].detail, odd);
    assert!(store.verify_audit(None).unwrap().problems.is_empty());
}

fn seed_for_copy(store: &Store) {
    store
        .write(|t| -> Result<(), StoreError> {
            t.put(&GROUPS, "ops", &group("ops", "copied"))?;
            for i in 0..20 {
                t.append_audit(event(&format!("copied {i}")))?;
            }
            Ok(())
        })
        .unwrap();
}

fn check_copy(from: &Store, to: &Store) {
    let (records, events) = from.copy_into(to).unwrap();
    assert_eq!((records, events), (1, 20));
    assert_eq!(
        to.get(&GROUPS, "ops").unwrap().unwrap().description,
        "copied"
    );
    let a = from.list_audit(None).unwrap();
    let b = to.list_audit(None).unwrap();
    assert_eq!(a, b, "the trail is copied verbatim, numbers and chain");
    assert!(to.verify_audit(None).unwrap().problems.is_empty());
    // The copy goes on where the source stopped.
    assert_eq!(to.append_audit(event("after")).unwrap().seq, 21);
    // A destination with anything in it is refused, and left as it was.
    let again = from.copy_into(to).unwrap_err().to_string();
    assert!(again.contains("not empty"), "{again}");
    assert_eq!(to.list_audit(None).unwrap().len(), 21);
}

fn redb_store(dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(&dir.path().join(format!("{name}.redb"))).unwrap()
}

fn pg_store(pg: &Postgres, name: &str) -> Store {
    let location = StoreLocation::parse(&pg.url(name)).unwrap();
    Store::open_location(&location).unwrap()
}

#[test]
fn redb_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    for (name, case) in CASES {
        eprintln!("redb: {name}");
        let store = redb_store(&dir, name);
        assert_eq!(store.engine(), "redb");
        case(&store);
    }
}

#[test]
fn postgres_passes_the_suite_and_copies_with_redb() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    for (name, case) in CASES {
        eprintln!("postgres: {name}");
        let store = pg_store(&pg, &format!("case_{name}"));
        assert_eq!(store.engine(), "postgres");
        case(&store);
    }
    // redb → PostgreSQL and back.
    let from = redb_store(&dir, "copy_from");
    seed_for_copy(&from);
    check_copy(&from, &pg_store(&pg, "copy_to"));
    let from = pg_store(&pg, "copy_from_pg");
    seed_for_copy(&from);
    check_copy(&from, &redb_store(&dir, "copy_to"));
    // Two stores on one database (two control nodes) see each other's writes at once.
    let a = pg_store(&pg, "shared");
    let b = pg_store(&pg, "shared");
    a.write(|t| t.put(&GROUPS, "from-a", &group("from-a", "")))
        .unwrap();
    assert!(b.get(&GROUPS, "from-a").unwrap().is_some());
    assert_eq!(a.append_audit(event("a")).unwrap().seq, 1);
    assert_eq!(b.append_audit(event("b")).unwrap().seq, 2);
    assert!(a.verify_audit(None).unwrap().problems.is_empty());
}

#[test]
fn postgres_refuses_a_newer_schema_and_binds_ciphertexts_to_accounts() {
    let pg = Postgres::start();
    // A database migrated by a newer build is refused, by DDL version and by record schema.
    drop(pg_store(&pg, "newer"));
    pg.psql(
        "newer",
        "INSERT INTO gh_schema_migrations (version, description) VALUES (99, 'future')",
    );
    let url = pg.url("newer");
    let err = Store::open_location(&StoreLocation::parse(&url).unwrap()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains(support::postgres::PASSWORD));
    drop(pg_store(&pg, "newer_records"));
    pg.psql(
        "newer_records",
        "UPDATE gh_meta SET value = 999 WHERE key = 'schema_version'",
    );
    let err =
        Store::open_location(&StoreLocation::parse(&pg.url("newer_records")).unwrap()).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );

    // A database of the previous version (DDL 1, record schema 4) is migrated on open.
    drop(pg_store(&pg, "older"));
    pg.psql(
        "older",
        "DROP TABLE gh_portal_sessions; DELETE FROM gh_schema_migrations WHERE version = 2; \
         UPDATE gh_meta SET value = 4 WHERE key = 'schema_version'",
    );
    let older = pg_store(&pg, "older");
    assert_eq!(older.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(
        older
            .list(&gatehouse_store::PORTAL_SESSIONS)
            .unwrap()
            .is_empty()
    );
    let versions = pg.psql(
        "older",
        "SELECT string_agg(version::text, ',' ORDER BY version) FROM gh_schema_migrations",
    );
    assert_eq!(versions.trim(), "1,2");

    // The vault's blobs are stored as they are; the database never sees the secret, and a row
    // moved to another account does not open.
    let store = pg_store(&pg, "vault");
    let vault = Vault::new(MasterKey::generate());
    let secret = "Target-root-pw-Zq81";
    let account = |name: &str, id: &str, sealed| Account {
        name: Name::new(name).unwrap(),
        asset: Name::new("db1").unwrap(),
        id: id.to_string(),
        password: sealed,
        private_key: None,
        credential_plugin: None,
        change_after_checkin: false,
        change_due: None,
        created: Timestamp(1),
        secret_updated: Timestamp(1),
    };
    let sealed = vault
        .seal("acct-root", SecretKind::Password, secret.as_bytes())
        .unwrap();
    store
        .write(|t| -> Result<(), StoreError> {
            t.put(
                &ACCOUNTS,
                &account_key("db1", "root"),
                &account("root", "acct-root", Some(sealed.clone())),
            )?;
            t.put(
                &ACCOUNTS,
                &account_key("db1", "app"),
                &account("app", "acct-app", None),
            )
        })
        .unwrap();
    let dump = pg.psql("vault", "SELECT key || ' ' || value::text FROM gh_accounts");
    assert!(dump.contains("db1/root"), "{dump}");
    assert!(
        !dump.contains(secret),
        "the secret is in the database in clear"
    );
    let root = store.get(&ACCOUNTS, "db1/root").unwrap().unwrap();
    let opened = vault
        .open(
            &root.id,
            SecretKind::Password,
            root.password.as_ref().unwrap(),
        )
        .unwrap();
    assert_eq!(opened.expose(), secret.as_bytes());
    // Copy root's ciphertext into app's row with SQL, as someone with database access could.
    pg.psql(
        "vault",
        "UPDATE gh_accounts SET value = json_build_object(\
           'name', value->'name', 'asset', value->'asset', 'id', value->'id', \
           'password', (SELECT value->'password' FROM gh_accounts WHERE key = 'db1/root'), \
           'private_key', NULL, 'created', value->'created', \
           'secret_updated', value->'secret_updated') WHERE key = 'db1/app'",
    );
    let app = store.get(&ACCOUNTS, "db1/app").unwrap().unwrap();
    assert_eq!(app.password, root.password, "the blob was copied");
    assert!(
        vault
            .open(
                &app.id,
                SecretKind::Password,
                app.password.as_ref().unwrap()
            )
            .is_err(),
        "a ciphertext moved to another account must not decrypt"
    );
}

#[test]
fn postgres_going_away_gives_clear_errors_and_recovers_without_a_restart() {
    let mut pg = Postgres::start();
    let store = Arc::new(pg_store(&pg, "outage"));
    store
        .write(|t| t.put(&GROUPS, "before", &group("before", "")))
        .unwrap();
    store.append_audit(event("before")).unwrap();
    pg.stop();
    let started = std::time::Instant::now();
    let err = store.get(&GROUPS, "before").unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("cannot be reached"), "{text}");
    assert!(!text.contains(support::postgres::PASSWORD), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(12),
        "an outage answers in bounded time"
    );
    let write = store.append_audit(event("while down"));
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "{write:?}"
    );
    pg.start_server();
    // The same store object works again: the pool drops dead connections and makes new ones.
    let back = support::poll(std::time::Duration::from_secs(20), || {
        store.get(&GROUPS, "before").ok().flatten()
    });
    assert!(
        back.is_some(),
        "the store did not recover after PostgreSQL came back"
    );
    let e = store.append_audit(event("after")).unwrap();
    assert_eq!(e.seq, 2, "nothing written while down, no gap");
    assert!(store.verify_audit(None).unwrap().problems.is_empty());
}
