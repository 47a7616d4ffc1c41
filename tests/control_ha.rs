//! Two control nodes on one real PostgreSQL (Debian's package, started by the test), active-active.
//!
//! 50 clients create access requests on one node and approve them on the other, over HTTPS with
//! curl, while one node is killed with SIGKILL: every acknowledged request and approval is in the
//! store afterwards, once; the audit trail is gap-free, in order and verifies. A real `ssh` held
//! on one node is released by an approval made on the other. Then PostgreSQL itself is stopped
//! under load: clients get a clear 503 while it is down, and both nodes serve again once it is
//! back, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_core::AccessRequest;
use gatehouse_store::{REQUESTS, Store, StoreLocation};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::postgres::Postgres;
use support::ssh_client::Client;
use support::{Gatehouse, OutputExt, TargetSshd, TestAccount, poll, run};

const POLICY: &str = r#"
@id("dbas-may-request")
permit (principal in Group::"dbas", action == Action::"request_access", resource in AssetGroup::"prod");

@id("approvers-review")
permit (principal in Group::"approvers", action in Action::"review", resource is AccessRequest);

@id("no-self-review")
forbid (principal, action in Action::"review", resource is AccessRequest)
when { resource.requester == principal };

@id("one-approval")
permit (principal, action == Action::"grant_request", resource is AccessRequest)
when { resource.requester == principal && context.approvals >= 1 };
"#;

const PASSWORD: &str = "Ha-user-pw-3Lm9";
const REQUESTERS: usize = 10;
const APPROVERS: usize = 5;
const CLIENTS: usize = 50;
const ROUNDS: usize = 6;

/// What a client needs to reach one node's API.
#[derive(Clone)]
struct Endpoint {
    url: String,
    cacert: PathBuf,
}

/// One HTTPS call with curl: `Err` when nothing came back (connection refused, reset, timeout).
fn call(
    node: &Endpoint,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, Value), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-X", method])
        .arg("--cacert")
        .arg(&node.cacert)
        .args(["-w", "\n%{http_code}"]);
    if let Some(b) = bearer {
        cmd.args(["-H", &format!("Authorization: Bearer {b}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("{}{path}", node.url));
    let out = run(cmd, None, Duration::from_secs(40));
    if !out.status.success() {
        return Err(out.stderr_text());
    }
    let text = out.stdout_text();
    let (body, status) = text.rsplit_once('\n').ok_or("no status line")?;
    let status: u16 = status
        .trim()
        .parse()
        .map_err(|_| format!("status `{status}`"))?;
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).map_err(|e| format!("not JSON ({e}): {body}"))?
    };
    Ok((status, value))
}

fn login(node: &Endpoint, user: &str) -> String {
    let body = serde_json::json!({"user": user, "password": PASSWORD}).to_string();
    let (status, v) = call(node, "POST", "/api/v1/login", None, Some(&body)).unwrap();
    assert_eq!(status, 200, "login {user}: {v}");
    v["token"].as_str().unwrap().to_string()
}

/// Two control nodes (A and B) on one database, a real sshd behind them, users and policy.
struct Pair {
    pg: Postgres,
    a: Gatehouse,
    b: Gatehouse,
    url: String,
    account: TestAccount,
    _target: TargetSshd,
}

impl Pair {
    fn start() -> Pair {
        let pg = Postgres::start();
        let url = pg.url("gatehouse");
        let account = TestAccount::new("ha");
        let target = TargetSshd::start(std::slice::from_ref(&account));
        // A makes the master key; B is initialised on the same store with A's key.
        let a = Gatehouse::init_with(&["--store", &url]);
        let key = a.data_dir().join("master.key");
        let b =
            Gatehouse::init_with(&["--store", &url, "--master-key-file", key.to_str().unwrap()]);
        // A second node with a key of its own is refused: the store is sealed with A's.
        let stranger = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(support::GATEHOUSE_BIN);
        cmd.arg("--data-dir")
            .arg(stranger.path().join("d"))
            .args(["--store", &url, "init"]);
        let out = run(cmd, None, Duration::from_secs(60));
        assert!(
            !out.status.success(),
            "a node with another master key was let in"
        );
        let said = out.stderr_text();
        assert!(said.contains("sealed with master key"), "{said}");
        assert!(
            !stranger.path().join("d").exists(),
            "a failed init leaves its data directory behind"
        );
        assert!(!said.contains(support::postgres::PASSWORD), "{said}");

        // Configured through A's CLI; B sees it through the shared store.
        a.cli_ok(&["group", "add", "dbas"]);
        a.cli_ok(&["group", "add", "approvers"]);
        a.cli_ok(&["asset-group", "add", "prod"]);
        for i in 0..REQUESTERS {
            a.cli_stdin_ok(
                &[
                    "user",
                    "add",
                    &format!("req{i}"),
                    "--password-stdin",
                    "--group",
                    "dbas",
                ],
                &format!("{PASSWORD}\n"),
            );
        }
        for i in 0..APPROVERS {
            a.cli_stdin_ok(
                &[
                    "user",
                    "add",
                    &format!("apr{i}"),
                    "--password-stdin",
                    "--group",
                    "approvers",
                ],
                &format!("{PASSWORD}\n"),
            );
        }
        a.cli_ok(&[
            "asset",
            "add",
            "db1",
            "--address",
            "127.0.0.1",
            "--port",
            &target.port().to_string(),
            "--host-key",
            &target.host_key(),
            "--group",
            "prod",
        ]);
        a.add_account_with_password(&format!("{}@db1", account.name), &account.password);
        let users = b.cli_ok(&["user", "list"]);
        assert!(users.contains("req9") && users.contains("apr4"), "{users}");
        for gh in [&a, &b] {
            std::fs::write(gh.data_dir().join("policies/requests.cedar"), POLICY).unwrap();
            gh.edit_settings(|s| s["requests"] = serde_json::json!({}));
        }
        let mut pair = Pair {
            pg,
            a,
            b,
            url,
            account,
            _target: target,
        };
        pair.a.serve();
        pair.b.serve();
        pair
    }

    fn endpoint(gh: &Gatehouse) -> Endpoint {
        Endpoint {
            url: gh.api_url(),
            cacert: gh.data_dir().join("tls/cert.pem"),
        }
    }

    fn store(&self) -> Store {
        Store::open_location(&StoreLocation::parse(&self.url).unwrap()).unwrap()
    }
}

/// A call in the outage phase: (made while down, made after it came back, node, status,
/// error message).
type Answer = (bool, bool, usize, u16, String);

#[derive(Default)]
struct Acked {
    /// Request id → requester.
    created: Mutex<BTreeMap<String, String>>,
    /// (request id, approver).
    approved: Mutex<BTreeSet<(String, String)>>,
    /// Creates answered with something else than 201 or nothing (id unknown to the client).
    uncertain_creates: AtomicUsize,
    failovers: AtomicUsize,
    /// Approvals retried after a lost answer (checked in the store like the others).
    retried: AtomicUsize,
}

/// Tries `op` on `first`, then the other node, and so on, until one answers with a status the
/// caller accepts; transport errors and 5xx move to the other node.
fn with_failover(
    nodes: &[Endpoint; 2],
    first: usize,
    acked: &Acked,
    mut op: impl FnMut(&Endpoint) -> Result<(u16, Value), String>,
) -> (u16, Value) {
    let mut last = String::new();
    for attempt in 0..40 {
        let node = &nodes[(first + attempt) % 2];
        match op(node) {
            Ok((status, v)) if status < 500 => return (status, v),
            Ok((status, v)) => last = format!("{status} {v}"),
            Err(e) => last = e,
        }
        acked.failovers.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(150));
    }
    panic!("no node answered: {last}");
}

#[test]
fn two_control_nodes_lose_nothing_when_one_is_killed_under_load() {
    let mut pair = Pair::start();
    let nodes = [Pair::endpoint(&pair.a), Pair::endpoint(&pair.b)];

    // A token from one node is good on the other (the key is derived from the shared master key).
    let token = login(&nodes[0], "req0");
    let (status, me) = call(&nodes[1], "GET", "/api/v1/me", Some(&token), None).unwrap();
    assert_eq!((status, me["name"].as_str()), (200, Some("req0")), "{me}");

    // A held ssh login on B (the gateway files the request and waits) is released by an
    // approval clicked on A.
    let target = format!("{}@db1", pair.account.name);
    let ssh = Client::password(pair.b.ssh_port(), format!("req0@{target}"), PASSWORD);
    let held = std::thread::spawn(move || ssh.ssh("echo released-by-the-other-node"));
    let approver = login(&nodes[0], "apr0");
    let held_id = poll(Duration::from_secs(30), || {
        let (_, inbox) = call(&nodes[0], "GET", "/api/v1/inbox", Some(&approver), None).ok()?;
        inbox["items"].as_array()?.iter().find_map(|i| {
            (i["request"]["requester"] == "req0")
                .then(|| i["request"]["id"].as_str().unwrap().to_string())
        })
    })
    .expect("the held login's request never reached A's inbox");
    assert!(!held.is_finished(), "the ssh login was not held");
    let (status, v) = call(
        &nodes[0],
        "POST",
        &format!("/api/v1/requests/{held_id}/approve"),
        Some(&approver),
        Some("{\"comment\": \"from A\"}"),
    )
    .unwrap();
    assert_eq!(status, 200, "{v}");
    let out = held.join().unwrap();
    assert!(out.status.success(), "held login: {}", out.describe());
    assert_eq!(out.stdout_text(), "released-by-the-other-node\n");

    // A restarting control node closes only its own sessions left open by a crash, never the
    // ones another node is running: req0 (granted by the approval above) holds a session on A
    // while B restarts.
    let ssh = Client::password(pair.a.ssh_port(), format!("req0@{target}"), PASSWORD);
    let long = std::thread::spawn(move || ssh.ssh("sleep 5; echo still-here"));
    std::thread::sleep(Duration::from_secs(1));
    pair.b.stop_server();
    pair.b.serve();
    let out = long.join().unwrap();
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(out.stdout_text(), "still-here\n");
    let sessions: Vec<gatehouse_core::SessionRecord> =
        pair.store().list(&gatehouse_store::SESSIONS).unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    for s in &sessions {
        assert!(s.ended.is_some() && s.error.is_none(), "{s:?}");
        assert!(s.gateway.is_some(), "{s:?}");
    }
    assert_ne!(
        sessions[0].gateway, sessions[1].gateway,
        "one session on each node"
    );
    let nodes = [Pair::endpoint(&pair.a), Pair::endpoint(&pair.b)];

    // The load: 50 clients, each creating on one node and approving on the other.
    let requester_tokens: Vec<String> = (0..REQUESTERS)
        .map(|i| login(&nodes[i % 2], &format!("req{i}")))
        .collect();
    let approver_tokens: Vec<String> = (0..APPROVERS)
        .map(|i| login(&nodes[i % 2], &format!("apr{i}")))
        .collect();
    let acked = Arc::new(Acked::default());
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let killed = std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let (nodes, acked, done) = (&nodes, &acked, &done);
            let requester = format!("req{}", c % REQUESTERS);
            let rtoken = requester_tokens[c % REQUESTERS].clone();
            let approver = format!("apr{}", c % APPROVERS);
            let atoken = approver_tokens[c % APPROVERS].clone();
            let target = target.clone();
            scope.spawn(move || {
                for round in 0..ROUNDS {
                    let home = (c + round) % 2;
                    let body = serde_json::json!({
                        "target": target, "access": "session",
                        "reason": format!("client {c} round {round}")
                    })
                    .to_string();
                    let (status, v) = with_failover(nodes, home, acked, |n| {
                        call(n, "POST", "/api/v1/requests", Some(&rtoken), Some(&body))
                    });
                    if status != 201 {
                        acked.uncertain_creates.fetch_add(1, Ordering::Relaxed);
                        panic!("create refused: {status} {v}");
                    }
                    let id = v["id"].as_str().unwrap().to_string();
                    acked
                        .created
                        .lock()
                        .unwrap()
                        .insert(id.clone(), requester.clone());
                    let path = format!("/api/v1/requests/{id}/approve");
                    let (status, v) = with_failover(nodes, home + 1, acked, |n| {
                        call(
                            n,
                            "POST",
                            &path,
                            Some(&atoken),
                            Some("{\"comment\": \"ok\"}"),
                        )
                    });
                    // A retry after an approval that committed on A but whose answer died
                    // with A: the request is granted already ("available"), or says so.
                    let message = v["error"]["message"].as_str().unwrap_or("");
                    let again = status == 409
                        && (message.contains("already approved")
                            || message.contains("is available"));
                    assert!(status == 200 || again, "approve {id}: {status} {v}");
                    if again {
                        acked.retried.fetch_add(1, Ordering::Relaxed);
                    }
                    acked
                        .approved
                        .lock()
                        .unwrap()
                        .insert((id, approver.clone()));
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Kill A with SIGKILL a third of the way through.
        let third = CLIENTS * ROUNDS / 3;
        assert!(
            poll(Duration::from_secs(300), || (done.load(Ordering::Relaxed)
                >= third)
                .then_some(()))
            .is_some(),
            "the load did not get going:\n{}",
            pair.a.log_tail(40)
        );
        let at = done.load(Ordering::Relaxed);
        pair.a.stop_server();
        at
    });
    let elapsed = started.elapsed();
    let created = acked.created.lock().unwrap().clone();
    let approved = acked.approved.lock().unwrap().clone();
    eprintln!(
        "{} requests created and approved in {:.1} s through two nodes, A killed after {killed}; {} failovers, {} approvals retried after a lost answer",
        created.len(),
        elapsed.as_secs_f64(),
        acked.failovers.load(Ordering::Relaxed),
        acked.retried.load(Ordering::Relaxed)
    );
    assert_eq!(created.len(), CLIENTS * ROUNDS);
    assert!(
        acked.failovers.load(Ordering::Relaxed) > 0,
        "nobody noticed A die"
    );

    // Everything acknowledged is there, once.
    let store = pair.store();
    let stored: Vec<AccessRequest> = store.list(&REQUESTS).unwrap();
    let by_id: BTreeMap<&str, &AccessRequest> = stored.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(by_id.len(), stored.len());
    for (id, requester) in &created {
        let r = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("acknowledged request {id} is lost"));
        assert_eq!(r.requester.as_str(), requester);
    }
    for (id, approver) in &approved {
        let r = by_id[id.as_str()];
        let times = r
            .approvals
            .iter()
            .filter(|a| a.by.as_str() == approver)
            .count();
        assert_eq!(
            times, 1,
            "{approver}'s approval of {id} is there {times} times"
        );
        assert!(r.state.is_granted(), "{id} is {}", r.state);
    }
    // Requests whose answer was lost when A died may exist without the client knowing: at most
    // one per client in flight at the kill (the held login's is the one more).
    let unknown = stored.len() - created.len() - 1;
    assert!(unknown <= CLIENTS, "{unknown} requests nobody asked for");

    // The audit trail: numbered 1..N with no gap, verifies, one creation event per request.
    let trail = store.list_audit(None).unwrap();
    let numbers: Vec<u64> = trail.iter().map(|e| e.seq).collect();
    assert_eq!(
        numbers,
        (1..=trail.len() as u64).collect::<Vec<_>>(),
        "gap-free and in order"
    );
    let check = store.verify_audit(None).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    let mut creations: BTreeMap<String, usize> = BTreeMap::new();
    let mut approvals: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &trail {
        let Some(id) = e.fields.get("request").and_then(|v| v.as_str()) else {
            continue;
        };
        let kind = serde_json::to_value(&e.kind).unwrap();
        match kind.as_str() {
            // (A held ssh login also writes a `request_created` "connection held" line,
            // without the access field.)
            Some("request_created") if e.fields.contains_key("access") => {
                *creations.entry(id.to_string()).or_default() += 1
            }
            Some("request_approved") => {
                *approvals
                    .entry((id.to_string(), e.user.clone().unwrap_or_default()))
                    .or_default() += 1
            }
            _ => {}
        }
    }
    for r in &stored {
        let events: Vec<String> = trail
            .iter()
            .filter(|e| e.fields.get("request").and_then(|v| v.as_str()) == Some(r.id.as_str()))
            .map(|e| format!("{} {:?} {} {:?}", e.seq, e.kind, e.detail, e.fields))
            .collect();
        assert_eq!(
            creations.get(&r.id),
            Some(&1),
            "request_created of {}:\n{}",
            r.id,
            events.join("\n")
        );
    }
    for key in &approved {
        assert_eq!(approvals.get(key), Some(&1), "request_approved of {key:?}");
    }
    // B's own CLI agrees (through its admin socket).
    let verify = pair.b.cli_ok(&["audit", "verify"]);
    assert!(
        verify.contains("intact") || verify.contains("verif"),
        "{verify}"
    );

    // Phase two: A back, then PostgreSQL stopped and started under load.
    pair.a.serve();
    let nodes = [Pair::endpoint(&pair.a), Pair::endpoint(&pair.b)];
    let down = AtomicBool::new(false);
    let back = AtomicBool::new(false);
    let statuses: Mutex<Vec<Answer>> = Mutex::default();
    let stop_load = AtomicBool::new(false);
    let acked_after: Mutex<Vec<String>> = Mutex::default();
    std::thread::scope(|scope| {
        for c in 0..10 {
            let (nodes, down, back, statuses, stop_load, acked_after) =
                (&nodes, &down, &back, &statuses, &stop_load, &acked_after);
            let rtoken = requester_tokens[c % REQUESTERS].clone();
            let target = target.clone();
            scope.spawn(move || {
                let mut n = 0;
                while !stop_load.load(Ordering::Relaxed) {
                    n += 1;
                    let node = (c + n) % 2;
                    let body = serde_json::json!({"target": target, "access": "session", "reason": "outage"}).to_string();
                    let was_down = down.load(Ordering::Relaxed);
                    let was_back = back.load(Ordering::Relaxed);
                    match call(&nodes[node], "POST", "/api/v1/requests", Some(&rtoken), Some(&body)) {
                        Ok((status, v)) => {
                            if status == 201 {
                                acked_after.lock().unwrap().push(v["id"].as_str().unwrap().to_string());
                            }
                            let message = v["error"]["message"].as_str().unwrap_or("").to_string();
                            statuses.lock().unwrap().push((was_down, was_back, node, status, message));
                        }
                        Err(e) => panic!("node {node} gave no answer: {e}"),
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        down.store(true, Ordering::Relaxed);
        pair.pg.stop();
        // An ssh login meanwhile is told why, in one line, not "permission denied".
        let login = format!("req1@{target}");
        let out = Client::password(pair.b.ssh_port(), &login, PASSWORD).ssh("true");
        assert!(!out.status.success());
        assert!(
            out.stderr_text()
                .contains("gatehouse: the gateway's store cannot be reached right now"),
            "{}",
            out.describe()
        );
        std::thread::sleep(Duration::from_secs(2));
        pair.pg.start_server();
        back.store(true, Ordering::Relaxed);
        // Give the pools time to find the new server, then a few seconds of service.
        std::thread::sleep(Duration::from_secs(6));
        stop_load.store(true, Ordering::Relaxed);
    });
    let statuses = statuses.into_inner().unwrap();
    let during: Vec<_> = statuses.iter().filter(|s| s.0 && !s.1).collect();
    assert!(!during.is_empty(), "no call while PostgreSQL was down");
    for (_, _, node, status, message) in &during {
        assert!(
            *status == 201 || (*status == 503 && message.contains("store cannot be reached")),
            "node {node} while PostgreSQL was down: {status} {message}"
        );
    }
    assert!(
        during.iter().any(|s| s.3 == 503),
        "no clear 503 while PostgreSQL was down"
    );
    assert!(
        statuses.iter().all(|s| s.3 != 500),
        "an internal error: {statuses:?}"
    );
    // The last calls, after it came back, succeed on both nodes without a restart.
    for node in 0..2 {
        let last = statuses.iter().rev().find(|s| s.2 == node).unwrap();
        assert_eq!(
            last.3, 201,
            "node {node} after PostgreSQL came back: {last:?}"
        );
    }
    let store = pair.store();
    for id in acked_after.into_inner().unwrap() {
        assert!(store.get(&REQUESTS, &id).unwrap().is_some(), "{id} lost");
    }
    let check = store.verify_audit(None).unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    for gh in [&pair.a, &pair.b] {
        assert!(
            !gh.log_text().contains(support::postgres::PASSWORD),
            "the database password is in a log"
        );
    }
}

#[test]
fn store_migrate_moves_an_installation_from_redb_to_postgres() {
    let pg = Postgres::start();
    let url = pg.url("moved");
    let account = TestAccount::new("mv");
    let target = TargetSshd::start(std::slice::from_ref(&account));
    let mut gh = Gatehouse::init();
    gh.cli_stdin_ok(
        &["user", "add", "alice", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    gh.add_asset("db1", target.port(), &target.host_key());
    let spec = format!("{}@db1", account.name);
    gh.add_account_with_password(&spec, &account.password);
    gh.grant_user("alice", &spec);
    gh.serve();
    let login = format!("alice@{spec}");
    let out = Client::password(gh.ssh_port(), &login, PASSWORD).ssh("echo on-redb");
    assert!(out.status.success(), "{}", out.describe());
    let before = gh.cli_ok(&["store", "status"]);
    assert!(before.contains("engine    redb"), "{before}");

    // Not while the server holds the store.
    let running = gh.cli(&["store", "migrate", "--to", &url]);
    assert!(!running.status.success());
    let said = running.stderr_text();
    assert!(said.contains("stop it first"), "{said}");
    assert!(!said.contains(support::postgres::PASSWORD), "{said}");
    gh.stop_server();
    let events_before = gh.audit().len();

    let moved = gh.cli_ok(&["store", "migrate", "--to", &url]);
    assert!(
        moved.contains(&format!("{events_before} audit events")),
        "{moved}"
    );
    assert!(moved.contains("the audit trail verifies"), "{moved}");
    assert!(moved.contains("settings.json now points at"), "{moved}");
    assert!(
        !moved.contains(support::postgres::PASSWORD),
        "the password was printed: {moved}"
    );
    // Again into the same database: refused, nothing touched.
    let again = gh.cli(&[
        "store",
        "migrate",
        "--from",
        &format!("redb:{}", gh.data_dir().join("gatehouse.redb").display()),
        "--to",
        &url,
    ]);
    assert!(!again.status.success());
    assert!(
        again.stderr_text().contains("not empty"),
        "{}",
        again.stderr_text()
    );

    let status = gh.cli_ok(&["store", "status"]);
    assert!(status.contains("engine    postgres"), "{status}");
    assert!(status.contains("postgres://gatehouse:***@"), "{status}");
    gh.serve();
    let out = Client::password(gh.ssh_port(), &login, PASSWORD).ssh("echo on-postgres");
    assert!(
        out.status.success(),
        "{}\n{}",
        out.describe(),
        gh.log_tail(30)
    );
    assert_eq!(out.stdout_text(), "on-postgres\n");
    let verify = gh.cli_ok(&["audit", "verify"]);
    assert!(!verify.to_lowercase().contains("problem"), "{verify}");
    let after = gh.audit();
    assert!(after.len() > events_before, "new events go to PostgreSQL");
    let numbers: Vec<u64> = after.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=after.len() as u64).collect::<Vec<_>>());
    gh.stop_server();

    // Bad locations: one line each, no password.
    for (location, needle) in [
        ("mysql://root:Pw-9x@db/g", "unknown store engine"),
        ("postgres://u:Pw-9x@127.0.0.1:1/g", "cannot be reached"),
        (
            "postgres://u:Pw-9x@127.0.0.1/g?sslmode=sometimes",
            "sslmode=sometimes",
        ),
    ] {
        let out = gh.cli(&["--store", location, "store", "status"]);
        assert!(!out.status.success(), "{location}");
        let text = out.stderr_text();
        assert_eq!(text.trim().lines().count(), 1, "{location}: {text}");
        assert!(text.contains(needle), "{location}: {text}");
        assert!(!text.contains("Pw-9x"), "{location}: {text}");
    }
}
