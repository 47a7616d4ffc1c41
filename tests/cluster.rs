//! End to end: a cluster of three real `gatehouse` processes on loopback, a control node and two
//! session nodes, each with its own data directory. Join, list, edit, heartbeats from running
//! session nodes, managed networks, soft delete (the node's certificate stops working) and relink
//! reusing the id and networks, hard delete, rejoin after an address change, and every join error
//! an operator can meet, as `gatehouse join` prints it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::fs::OpenOptions;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use support::{
    DEFAULT_TIMEOUT, GATEHOUSE_BIN, Gatehouse, TEST_LOG_FILTER, api_bearer, assert_success, curl,
    free_port, poll, port_open, run,
};

const ADMIN_PASSWORD: &str = "Cluster-pw-5Rt1";

/// `METHOD path` on the control node's API as `bearer`: (status, body as JSON or null).
fn api(
    control: &Gatehouse,
    bearer: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut headers = vec![bearer];
    if body.is_some() {
        headers.push("Content-Type: application/json");
    }
    let (status, _, answer) = curl(control, method, path, &headers, body);
    (
        status,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

/// A session node: a data directory that only `join` wrote to, and its `serve --role session`.
struct SessionNode {
    dir: tempfile::TempDir,
    server: Option<Child>,
    /// Where its SSH and RDP listeners are, once serving.
    ssh_port: u16,
    rdp_port: u16,
}

impl SessionNode {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("gatehouse-node-")
                .tempdir()
                .unwrap(),
            server: None,
            ssh_port: 0,
            rdp_port: 0,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(GATEHOUSE_BIN);
        cmd.arg("--data-dir")
            .arg(self.dir.path())
            .env_remove("GATEHOUSE_DATA_DIR")
            .env("NO_COLOR", "1");
        cmd
    }

    fn join(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.arg("join").args(args);
        run(cmd, None, DEFAULT_TIMEOUT)
    }

    /// `join URL --token T --thumbprint P --node-id ID EXTRA...`.
    fn join_as(
        &self,
        url: &str,
        token: &str,
        thumbprint: &str,
        id: &str,
        extra: &[&str],
    ) -> Output {
        let mut args = vec![
            url,
            "--token",
            token,
            "--thumbprint",
            thumbprint,
            "--node-id",
            id,
        ];
        args.extend_from_slice(extra);
        self.join(&args)
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("serve.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn serve(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let before = self.log_text().matches("session node started").count();
        let mut started = None;
        // A free port may be taken by another test before the node binds it: then again.
        for _ in 0..5 {
            let taken_before = self.log_text().matches("Address already in use").count();
            self.ssh_port = free_port();
            self.rdp_port = free_port();
            let listen = format!("127.0.0.1:{}", self.ssh_port);
            let rdp_listen = format!("127.0.0.1:{}", self.rdp_port);
            let mut cmd = self.command();
            cmd.args([
                "serve",
                "--role",
                "session",
                "--ssh-listen",
                &listen,
                "--rdp-listen",
                &rdp_listen,
            ])
            .env("RUST_LOG", TEST_LOG_FILTER)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log.try_clone().unwrap());
            let mut child = cmd.spawn().unwrap();
            started = poll(Duration::from_secs(20), || {
                if self.log_text().matches("session node started").count() > before {
                    return Some(true);
                }
                child.try_wait().ok().flatten().map(|_| false)
            });
            self.server = Some(child);
            let taken = self.log_text().matches("Address already in use").count() > taken_before;
            if started == Some(true) || !taken {
                break;
            }
        }
        let started = started.filter(|up| *up);
        assert!(
            started.is_some(),
            "session node did not start:\n{}",
            self.log_text()
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SessionNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn failed_with(what: &str, out: &Output, needles: &[&str]) {
    assert!(!out.status.success(), "{what} should fail");
    let text = stderr(out);
    assert_eq!(
        text.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{what}: one line:\n{text}"
    );
    for needle in needles {
        assert!(
            text.contains(needle),
            "{what}: `{needle}` missing in:\n{text}"
        );
    }
}

/// `node token --json` on the control node: (token, thumbprint).
fn token(control: &Gatehouse) -> (String, String) {
    let v = control.cli_json(&["node", "token", "--expires", "10m", "--json"]);
    (
        v["token"].as_str().unwrap().to_string(),
        v["thumbprint"].as_str().unwrap().to_string(),
    )
}

/// Serves `control` as a control node with its cluster port on a free loopback port; returns
/// the port's URL once it is open.
fn serve_control(control: &mut Gatehouse) -> String {
    let cluster_port = free_port();
    let listen = format!("127.0.0.1:{cluster_port}");
    control.serve_options(&["--role", "control", "--cluster-listen", &listen], &[]);
    control.serve();
    assert!(
        poll(Duration::from_secs(20), || port_open(cluster_port)
            .then_some(()))
        .is_some(),
        "cluster port not open:\n{}",
        control.log_text()
    );
    format!("https://127.0.0.1:{cluster_port}")
}

/// Session node `sess-a` joined to the control node at `url`, managing 127.0.0.1/32, serving.
fn loopback_node(control: &Gatehouse, url: &str) -> SessionNode {
    let mut node = SessionNode::new();
    let (token, thumbprint) = token(control);
    assert_success(
        "join sess-a",
        &node.join_as(url, &token, &thumbprint, "sess-a", &[]),
    );
    control.cli_ok(&["network", "add", "127.0.0.1/32", "--node", "sess-a"]);
    node.serve();
    node
}

/// Stops `node` and checks that none of `secrets`, as UTF-8 or UTF-16LE, is in any file of its
/// data directory. Returns how many files it read.
fn assert_no_secret_rests_on(node: &mut SessionNode, secrets: &[&str]) -> usize {
    node.stop();
    let needles: Vec<(String, Vec<u8>)> = secrets
        .iter()
        .flat_map(|secret| {
            let utf16: Vec<u8> = secret
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes())
                .collect();
            [
                (secret.to_string(), secret.as_bytes().to_vec()),
                (secret.to_string(), utf16),
            ]
        })
        .collect();
    let mut files = vec![node.dir.path().to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(
                std::fs::read_dir(&path)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path()),
            );
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        scanned += 1;
        for (secret, needle) in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "`{secret}` rests on the node in {}",
                path.display()
            );
        }
    }
    scanned
}

fn nodes(control: &Gatehouse, all: bool) -> Vec<Value> {
    let mut args = vec!["node", "list", "--json"];
    if all {
        args.push("--include-disconnected");
    }
    control.cli_json(&args).as_array().unwrap().clone()
}

fn node<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node `{id}` in {list:?}"))
}

fn audit_kinds(control: &Gatehouse) -> Vec<String> {
    control
        .cli_json(&["audit", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn three_processes_join_list_edit_delete_relink() {
    let cluster_port = free_port();
    let mut control = Gatehouse::init();
    // Over the API the cluster is a Cedar decision: olga (cluster-admins) may, bob may not.
    control.cli_ok(&["group", "add", "cluster-admins"]);
    for (user, group) in [("olga", Some("cluster-admins")), ("bob", None)] {
        let mut args = vec!["user", "add", user, "--password-stdin"];
        if let Some(group) = group {
            args.extend(["--group", group]);
        }
        control.cli_stdin_ok(&args, &format!("{ADMIN_PASSWORD}\n"));
    }
    std::fs::write(
        control.data_dir().join("policies/cluster.cedar"),
        include_str!("../policies/examples/cluster-admins.cedar"),
    )
    .unwrap();
    let listen = format!("0.0.0.0:{cluster_port}");
    control.serve_options(&["--role", "control", "--cluster-listen", &listen], &[]);
    control.serve();
    assert!(
        poll(Duration::from_secs(20), || port_open(cluster_port)
            .then_some(()))
        .is_some(),
        "cluster port not open:\n{}",
        control.log_text()
    );
    let url = format!("https://127.0.0.1:{cluster_port}");

    // A session node that has not joined says so.
    let lonely = SessionNode::new();
    let mut cmd = lonely.command();
    cmd.args(["serve", "--role", "session"]);
    let out = run(cmd, None, DEFAULT_TIMEOUT);
    failed_with(
        "serve before join",
        &out,
        &["has not joined a cluster", "gatehouse"],
    );

    // Join two nodes.
    let mut a = SessionNode::new();
    let mut b = SessionNode::new();
    let (t1, thumbprint) = token(&control);
    let out = a.join_as(
        &url,
        &t1,
        &thumbprint,
        "sess-a",
        &["--address", "10.20.0.5", "--description", "rack 1"],
    );
    let said = assert_success("join sess-a", &out);
    assert!(
        said.contains("joined the cluster") && said.contains("`sess-a`"),
        "{said}"
    );
    let key = a.dir.path().join("cluster/node-key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // The session node holds no master key and no store.
    assert!(!a.dir.path().join("master.key").exists());
    assert!(!a.dir.path().join("gatehouse.redb").exists());

    let (t2, _) = token(&control);
    assert_success(
        "join sess-b",
        &b.join_as(&url, &t2, &thumbprint, "sess-b", &[]),
    );

    // Running session nodes report in.
    a.serve();
    b.serve();
    let list = poll(Duration::from_secs(20), || {
        let list = nodes(&control, false);
        list.iter()
            .all(|n| n["status"] == "up" && n["version"].as_str().is_some_and(|v| !v.is_empty()))
            .then_some(list)
    })
    .expect("both nodes up");
    assert_eq!(list.len(), 2);
    let sa = node(&list, "sess-a");
    assert_eq!(sa["address"], "10.20.0.5");
    assert_eq!(sa["description"], "rack 1");
    assert!(sa["thumbprint"].as_str().unwrap().starts_with("SHA256:"));
    assert_eq!(
        node(&list, "sess-b")["address"],
        "127.0.0.1",
        "the address the join came from"
    );
    let table = control.cli_ok(&["node", "list"]);
    assert!(
        table.contains("sess-a") && table.contains("up (seen"),
        "{table}"
    );

    // Edit, and networks.
    control.cli_ok(&[
        "node",
        "edit",
        "sess-a",
        "--description",
        "rack 4",
        "--use-hostname",
        "true",
    ]);
    control.cli_ok(&["network", "add", "10.20.0.0/24", "--node", "sess-a"]);
    control.cli_ok(&["network", "add", "10.30.0.9/16", "--node", "sess-b"]);
    let out = control.cli(&["network", "add", "10.20.0.0/24", "--node", "sess-b"]);
    failed_with(
        "a taken network",
        &out,
        &["already managed by node `sess-a`"],
    );
    let out = control.cli(&["network", "add", "10.40.0.0/33", "--node", "sess-b"]);
    failed_with("a bad network", &out, &["`10.40.0.0/33` is not a network"]);
    let out = control.cli(&["network", "add", "10.40.0.0/24", "--node", "nope"]);
    failed_with("an unknown node", &out, &["node `nope` does not exist"]);
    let list = nodes(&control, false);
    let sa = node(&list, "sess-a");
    assert_eq!(sa["description"], "rack 4");
    assert_eq!(sa["use_hostname"], true);
    assert_eq!(sa["networks"], serde_json::json!(["10.20.0.0/24"]));
    assert_eq!(
        node(&list, "sess-b")["networks"],
        serde_json::json!(["10.30.0.0/16"])
    );

    // The same over the API, for whom policy lets.
    let olga = api_bearer(&control, "olga", ADMIN_PASSWORD);
    let bob = api_bearer(&control, "bob", ADMIN_PASSWORD);
    let (status, body) = api(&control, &bob, "GET", "/api/v1/nodes", None);
    assert_eq!(status, 403, "{body}");
    let (status, body) = api(&control, &olga, "GET", "/api/v1/nodes", None);
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sess-a", "sess-b"]);
    assert_eq!(body[0]["networks"], serde_json::json!(["10.20.0.0/24"]));
    assert_eq!(body[0]["status"], "up");
    let (status, body) = api(
        &control,
        &olga,
        "PATCH",
        "/api/v1/nodes/sess-b",
        Some(r#"{"description":"set over the API"}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["description"], "set over the API");
    let (status, body) = api(
        &control,
        &olga,
        "PATCH",
        "/api/v1/nodes/sess-b",
        Some(r#"{"colour":"red"}"#),
    );
    assert!(status == 400 || status == 422, "{status} {body}");
    let (status, _) = api(
        &control,
        &bob,
        "PATCH",
        "/api/v1/nodes/sess-b",
        Some(r#"{"description":"x"}"#),
    );
    assert_eq!(status, 403);
    let (status, body) = api(
        &control,
        &olga,
        "PATCH",
        "/api/v1/nodes/nope",
        Some(r#"{"description":"x"}"#),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = api(
        &control,
        &olga,
        "POST",
        "/api/v1/networks",
        Some(r#"{"network":"10.50.0.7/24","node":"sess-b"}"#),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["network"], "10.50.0.0/24");
    let (status, body) = api(
        &control,
        &olga,
        "POST",
        "/api/v1/networks",
        Some(r#"{"network":"nope","node":"sess-b"}"#),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = api(
        &control,
        &olga,
        "DELETE",
        "/api/v1/networks?network=10.50.0.0/24",
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = api(&control, &bob, "GET", "/api/v1/networks", None);
    assert_eq!(status, 403);

    // Join errors, as the operator sees them.
    let (t3, _) = token(&control);
    let out = a.join_as(&url, &t1, &thumbprint, "sess-c", &[]);
    failed_with(
        "a used token",
        &out,
        &["not valid here", "gatehouse node token"],
    );
    let c = SessionNode::new();
    let out = c.join_as(&url, &t3, &thumbprint, "sess-a", &[]);
    failed_with(
        "a taken id",
        &out,
        &["`sess-a` is already taken", "gatehouse node delete sess-a"],
    );
    let out = c.join(&[&url, "--token", &t3, "--thumbprint", &thumbprint]);
    failed_with("no id", &out, &["--node-id"]);
    let out = c.join_as(&url, &t3, &thumbprint, "a b", &[]);
    failed_with("a bad id", &out, &["invalid node id", "`a b`"]);
    let other = format!("https://127.0.0.2:{cluster_port}");
    let out = c.join_as(&other, &t3, &thumbprint, "sess-c", &[]);
    failed_with(
        "a name the certificate lacks",
        &out,
        &["not for `127.0.0.2`", "`127.0.0.1`"],
    );
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let out = c.join_as(&url, &t3, wrong, "sess-c", &[]);
    failed_with(
        "a wrong thumbprint",
        &out,
        &[&thumbprint, "not the SHA256:AAAA"],
    );
    let out = c.join_as(&url, &t3, "SHA1:xyz", "sess-c", &[]);
    failed_with("a malformed thumbprint", &out, &["`SHA1:xyz`"]);
    let out = c.join(&[
        "http://127.0.0.1:1",
        "--token",
        &t3,
        "--thumbprint",
        &thumbprint,
    ]);
    failed_with("not https", &out, &["is not a control node URL"]);
    let dead = format!("https://127.0.0.1:{}", free_port());
    let out = c.join_as(&dead, &t3, &thumbprint, "sess-c", &[]);
    failed_with(
        "nothing listening",
        &out,
        &["cannot reach the control node"],
    );
    // The token survived every refusal.
    assert_success(
        "join after refusals",
        &c.join_as(&url, &t3, &thumbprint, "sess-c", &[]),
    );
    control.cli_ok(&["node", "delete", "sess-c", "--hard"]);

    // Soft delete: gone from the list, kept with --include-disconnected, and the running node's
    // certificate is refused at its next heartbeat.
    let said = control.cli_ok(&["node", "delete", "sess-b"]);
    assert!(said.contains("kept for a relink"), "{said}");
    assert!(nodes(&control, false).iter().all(|n| n["id"] != "sess-b"));
    let all = nodes(&control, true);
    assert_eq!(node(&all, "sess-b")["status"], "disconnected");
    let refused = poll(Duration::from_secs(30), || {
        b.log_text()
            .contains("does not belong to a member")
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "node b was not refused:\n{}",
        b.log_text()
    );

    // Relink: join again with the same id and a new token; the networks are still there.
    let (t4, _) = token(&control);
    let said = assert_success(
        "relink sess-b",
        &b.join_as(&url, &t4, &thumbprint, "sess-b", &[]),
    );
    assert!(said.contains("relinked"), "{said}");
    let list = nodes(&control, false);
    assert_eq!(
        node(&list, "sess-b")["networks"],
        serde_json::json!(["10.30.0.0/16"])
    );

    // Rejoin after an address change: no token, the node's certificate vouches for it.
    let said = assert_success(
        "rejoin sess-a",
        &a.join(&[
            &url,
            "--thumbprint",
            &thumbprint,
            "--node-id",
            "sess-a",
            "--address",
            "10.20.0.6",
        ]),
    );
    assert!(said.contains("rejoined"), "{said}");
    let list = nodes(&control, false);
    assert_eq!(node(&list, "sess-a")["address"], "10.20.0.6");
    assert_eq!(node(&list, "sess-a")["description"], "rack 4");

    // Hard delete: delete twice, the second time over the API.
    control.cli_ok(&["node", "delete", "sess-b"]);
    let (status, body) = api(
        &control,
        &olga,
        "GET",
        "/api/v1/nodes?include_disconnected=true",
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "sess-b" && n["status"] == "disconnected"),
        "{body}"
    );
    let (status, body) = api(&control, &olga, "DELETE", "/api/v1/nodes/sess-b", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"], "hard");
    assert_eq!(body["networks_removed"], 1);
    assert!(nodes(&control, true).iter().all(|n| n["id"] != "sess-b"));
    let networks = control.cli_json(&["network", "list", "--json"]);
    assert_eq!(networks.as_array().unwrap().len(), 1, "{networks}");
    let out = control.cli(&["node", "delete", "sess-b"]);
    failed_with("an unknown node", &out, &["node `sess-b` does not exist"]);

    // The audit trail has the joins, the refusals and the changes; no token in any log.
    let kinds = audit_kinds(&control);
    for kind in [
        "join_token_issued",
        "node_joined",
        "node_join_refused",
        "admin_change",
        "admin_decision",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no `{kind}` in {kinds:?}");
    }
    for t in [&t1, &t2, &t3, &t4] {
        let secret = t.trim_start_matches("ghj_");
        for (who, log) in [
            ("control", control.log_text()),
            ("a", a.log_text()),
            ("b", b.log_text()),
        ] {
            assert!(!log.contains(secret), "a join token in {who}'s log");
        }
    }
}

const REQUEST_POLICY: &str = r#"
@id("dbas-may-request")
permit (principal in Group::"dbas", action == Action::"request_access", resource in AssetGroup::"prod");

@id("approvers-review")
permit (principal in Group::"approvers", action in Action::"review", resource is AccessRequest);

@id("sessions-need-one")
permit (principal, action == Action::"grant_request", resource is AccessRequest)
when { resource.requester == principal && resource.access == "session" && context.approvals >= 1 };
"#;

/// Passwords-initiated access: the `ssh` command and the `.rdp` file of an approved request point
/// at the session node whose managed network holds the asset's address (by its host name or its
/// address, as the node is set), at the control node itself when no network does, and a network
/// whose node was removed gives a clear refusal instead of a string that would not work.
#[test]
fn access_strings_point_at_the_node_that_manages_the_asset() {
    let cluster_port = free_port();
    let mut control = Gatehouse::init();
    control.cli_ok(&["group", "add", "dbas"]);
    control.cli_ok(&["group", "add", "approvers"]);
    control.cli_ok(&["asset-group", "add", "prod"]);
    for (user, group) in [("alice", "dbas"), ("carol", "approvers")] {
        control.cli_stdin_ok(
            &["user", "add", user, "--password-stdin", "--group", group],
            &format!("{ADMIN_PASSWORD}\n"),
        );
    }
    // One asset per case: in sess-a's network (with RDP), in sess-b's, in none, and one named
    // by host name that resolves into sess-b's network.
    for (asset, address, rdp) in [
        ("db-a", "10.20.0.7", true),
        ("db-b", "10.30.1.1", false),
        ("db-c", "192.0.2.10", false),
        ("db-local", "localhost", false),
    ] {
        let mut args = vec![
            "asset",
            "add",
            asset,
            "--address",
            address,
            "--port",
            "22",
            "--tofu",
            "--group",
            "prod",
        ];
        if rdp {
            args.extend(["--rdp-port", "3389"]);
        }
        control.cli_ok(&args);
        control.cli_stdin_ok(
            &[
                "account",
                "add",
                &format!("root@{asset}"),
                "--password-stdin",
            ],
            "Vault-pw-1\n",
        );
    }
    std::fs::write(
        control.data_dir().join("policies/requests.cedar"),
        REQUEST_POLICY,
    )
    .unwrap();
    control.edit_settings(|s| s["requests"] = serde_json::json!({}));
    let listen = format!("127.0.0.1:{cluster_port}");
    control.serve_options(&["--role", "control", "--cluster-listen", &listen], &[]);
    control.serve();
    let url = format!("https://127.0.0.1:{cluster_port}");
    assert!(
        poll(Duration::from_secs(20), || port_open(cluster_port)
            .then_some(()))
        .is_some(),
        "cluster port not open:\n{}",
        control.log_text()
    );

    let (a, b) = (SessionNode::new(), SessionNode::new());
    let (t1, thumbprint) = token(&control);
    assert_success(
        "join sess-a",
        &a.join_as(
            &url,
            &t1,
            &thumbprint,
            "sess-a",
            &["--address", "10.20.0.5", "--hostname", "sess-a.example"],
        ),
    );
    let (t2, _) = token(&control);
    assert_success(
        "join sess-b",
        &b.join_as(
            &url,
            &t2,
            &thumbprint,
            "sess-b",
            &["--address", "10.30.0.5"],
        ),
    );
    control.cli_ok(&["node", "edit", "sess-a", "--use-hostname", "true"]);
    control.cli_ok(&["network", "add", "10.20.0.0/24", "--node", "sess-a"]);
    control.cli_ok(&["network", "add", "10.30.0.0/16", "--node", "sess-b"]);
    control.cli_ok(&["network", "add", "127.0.0.0/8", "--node", "sess-b"]);

    let dir = tempfile::tempdir().unwrap();
    let users = support::ApiUsers {
        gh: &control,
        dir: dir.path().to_path_buf(),
        password: ADMIN_PASSWORD.to_string(),
    };
    users.login("alice");
    users.login("carol");
    let approved = |asset: &str| -> String {
        let created = users.request_ok(
            "alice",
            &["create", &format!("root@{asset}"), "--reason", "routing"],
        );
        let id = support::json_str(&created, "id");
        users.request_ok("carol", &["approve", &id]);
        id
    };
    let ssh_host = |issued: &Value| -> String {
        let command = issued["command"].as_str().unwrap();
        command.rsplit_once('@').unwrap().1.to_string()
    };

    // sess-a by its host name, the usual ports (the node has not reported listeners); the
    // .rdp file too.
    let id = approved("db-a");
    let file = dir.path().join("db-a.rdp");
    let issued = users.request_ok(
        "alice",
        &["access-string", &id, "--rdp-file", file.to_str().unwrap()],
    );
    assert_eq!(issued["node"], "sess-a", "{issued}");
    assert_eq!(ssh_host(&issued), "sess-a.example", "{issued}");
    assert!(
        issued["command"]
            .as_str()
            .unwrap()
            .starts_with("ssh -p 2222 access="),
        "{issued}"
    );
    let rdp = std::fs::read_to_string(&file).unwrap();
    assert!(rdp.contains("full address:s:sess-a.example\r\n"), "{rdp}");
    // Without --json the CLI says which node.
    let out = users.as_user("alice", &["request", "access-string", &id]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("session node `sess-a`"), "{said}");

    // sess-b by its address; a host name resolving into sess-b's network goes there too.
    for asset in ["db-b", "db-local"] {
        let id = approved(asset);
        let issued = users.request_ok("alice", &["access-string", &id]);
        assert_eq!(issued["node"], "sess-b", "{asset}: {issued}");
        assert_eq!(ssh_host(&issued), "10.30.0.5", "{asset}: {issued}");
    }

    // No network holds db-c: the control node's own SSH listener, no node named.
    let id_c = approved("db-c");
    let issued = users.request_ok("alice", &["access-string", &id_c]);
    assert!(issued.get("node").is_none(), "{issued}");
    assert_eq!(ssh_host(&issued), "127.0.0.1", "{issued}");
    assert!(
        issued["command"]
            .as_str()
            .unwrap()
            .contains(&format!("-p {} ", control.ssh_port())),
        "{issued}"
    );

    // A removed node's network: a clear refusal (503 over the API), no string.
    let id_b = approved("db-b");
    control.cli_ok(&["node", "delete", "sess-b"]);
    let said = users.request_err("alice", &["access-string", &id_b]);
    assert!(
        said.contains("managed by session node `sess-b`, which is removed from the cluster"),
        "{said}"
    );
    let bearer = api_bearer(&control, "alice", ADMIN_PASSWORD);
    let (status, body) = api(
        &control,
        &bearer,
        "POST",
        &format!("/api/v1/requests/{id_b}/access-string"),
        None,
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
}

/// SSH through a session node with real clients and a real sshd: the node authenticates the
/// user, the control node decides the session and each channel (with the node in the Cedar
/// context) and hands out the vault credential; the node dials, relays and records. A target
/// outside the node's networks, an unknown target and a wrong password are refused with one
/// line. With the control node stopped, a running session goes on and a new login is told why
/// it cannot open.
#[test]
fn ssh_through_a_session_node_with_decisions_from_the_control_node() {
    use support::ssh_client::{Client, assert_client_ok};
    use support::world::{ASSET, GATEWAY_PASSWORD, GATEWAY_USER};
    use support::{OutputExt, TargetSshd, TestAccount, generate_keypair, public_key_path};

    let scratch = tempfile::tempdir().unwrap();
    let account = TestAccount::new("cl_node");
    let target = TargetSshd::start(std::slice::from_ref(&account));
    let mut control = Gatehouse::init();
    control.add_user_with_password(GATEWAY_USER, GATEWAY_PASSWORD);
    let (user_key, _) = generate_keypair(scratch.path(), "kim");
    control.add_user_with_key("kim", &public_key_path(&user_key));
    control.add_asset(ASSET, target.port(), &target.host_key());
    // The same sshd under a second name and address: permitted, but no network of sess-a
    // holds 127.0.0.2.
    control.cli_ok(&[
        "asset",
        "add",
        "far",
        "--address",
        "127.0.0.2",
        "--port",
        &target.port().to_string(),
        "--host-key",
        &target.host_key(),
    ]);
    for asset in [ASSET, "far"] {
        let spec = format!("{}@{asset}", account.name);
        control.add_account_with_password(&spec, &account.password);
        control.grant_user(GATEWAY_USER, &spec);
        control.grant_user("kim", &spec);
    }
    // Cedar sees the node: exec on sess-a is refused for `rm` commands.
    std::fs::write(
        control.data_dir().join("policies/nodes.cedar"),
        r#"
@id("no-rm-on-sess-a")
forbid (principal, action == Action::"ssh_exec", resource)
when { context has node && context.node == Node::"sess-a" && context.channel has command && context.channel.command like "rm *" };
"#,
    )
    .unwrap();
    let url = serve_control(&mut control);
    // The join line `node token` prints names this control node's cluster port, ready to paste.
    let said = control.cli_ok(&["node", "token", "--expires", "1m"]);
    assert!(said.contains(&format!("join {url} --token ghj_")), "{said}");
    let mut node = loopback_node(&control, &url);
    // The node reports its SSH port.
    let reported = poll(Duration::from_secs(20), || {
        let list = nodes(&control, false);
        node_port(&list).then_some(list)
    });
    fn node_port(list: &[Value]) -> bool {
        list.iter().any(|n| n["ssh_port"].as_u64().is_some())
    }
    assert!(reported.is_some(), "no ssh port reported");

    let login = format!("{GATEWAY_USER}@{}@{ASSET}", account.name);
    let client = Client::password(node.ssh_port, &login, GATEWAY_PASSWORD);
    let who = client.ssh("id -un; echo through-the-node");
    assert!(
        who.status.success(),
        "exec through the node: {}\n--- node log ---\n{}\n--- control log ---\n{}",
        who.describe(),
        node.log_text(),
        control.log_text()
    );
    assert_eq!(
        who.stdout_text(),
        format!("{}\nthrough-the-node\n", account.name)
    );
    // A key login, checked by the control node.
    let kim = Client::key(
        node.ssh_port,
        format!("kim@{}@{ASSET}", account.name),
        &user_key,
    );
    let out = kim.ssh("echo kim-was-here");
    assert_client_ok("key login through the node", &out);
    assert_eq!(out.stdout_text(), "kim-was-here\n");
    // A channel the control node's policy refuses because of the node.
    // (OpenSSH prints its own "exec request failed" and exits before it shows the gateway's
    // line on stderr, as it does on a single gateway.)
    let out = client.ssh("rm -f /tmp/nothing-here; echo ran");
    assert!(!out.status.success(), "{}", out.describe());
    assert!(!out.stdout_text().contains("ran"), "{}", out.describe());
    assert!(
        out.stderr_text().contains("exec request failed"),
        "{}",
        out.describe()
    );

    // Refusals, one line each.
    let far = Client::password(
        node.ssh_port,
        format!("{GATEWAY_USER}@{}@far", account.name),
        GATEWAY_PASSWORD,
    );
    let out = far.ssh("true");
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains(
            "not in a network session node `sess-a` manages; connect through the control node"
        ),
        "{}",
        out.describe()
    );
    let unknown = Client::password(
        node.ssh_port,
        format!("{GATEWAY_USER}@{}@nowhere", account.name),
        GATEWAY_PASSWORD,
    );
    let out = unknown.ssh("true");
    assert!(
        out.stderr_text()
            .contains("is unknown or you are not permitted to use it"),
        "{}",
        out.describe()
    );
    let wrong = Client::password(node.ssh_port, &login, "not-the-password");
    let out = wrong.ssh("true");
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("Permission denied"),
        "{}",
        out.describe()
    );

    // The control node audited its decisions with the node and the policy ids; the node
    // recorded the sessions in its own data directory.
    let audit = control.audit();
    let authorized: Vec<&Value> = audit
        .iter()
        .filter(|e| e["kind"] == "session_authorized")
        .collect();
    assert!(authorized.len() >= 3, "{audit:#?}");
    assert_eq!(authorized[0]["fields"]["node"], "sess-a");
    assert!(
        authorized[0]["fields"]["policies"]
            .as_array()
            .is_some_and(|p| p
                .iter()
                .any(|id| id.as_str().is_some_and(|s| s.starts_with("grant:")))),
        "{}",
        authorized[0]
    );
    assert!(
        audit.iter().any(|e| e["kind"] == "access_denied"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not in a network"))),
        "{audit:#?}"
    );
    let recorded = std::fs::read_dir(node.dir.path().join("recordings"))
        .unwrap()
        .count();
    assert!(recorded >= 2, "{recorded} recordings on the node");
    assert!(!node.dir.path().join("master.key").exists());

    // The node delivers its session records, audit events and recordings to the control node:
    // listed there with the node, the recording files the same bytes.
    let delivered = poll(Duration::from_secs(30), || {
        let ended: Vec<Value> = control
            .sessions()
            .into_iter()
            .filter(|s| s["node"] == "sess-a" && !s["ended"].is_null())
            .collect();
        (ended.len() >= 3).then_some(ended)
    })
    .unwrap_or_else(|| {
        panic!(
            "no sessions of sess-a on the control node: {:#?}\n{}",
            control.sessions(),
            node.log_text()
        )
    });
    let same_files = |id: &str| {
        let here = node.dir.path().join("recordings").join(id);
        let there = control.data_dir().join("recordings").join(id);
        let Ok(entries) = std::fs::read_dir(&here) else {
            return true;
        };
        entries
            .flatten()
            .all(|f| std::fs::read(f.path()).ok() == std::fs::read(there.join(f.file_name())).ok())
    };
    for s in &delivered {
        let id = s["id"].as_str().unwrap();
        assert!(
            poll(Duration::from_secs(30), || same_files(id).then_some(())).is_some(),
            "the recording of {id} did not arrive whole"
        );
    }
    // Once delivered whole, the control node seals the nodes' recordings like its own.
    let sealed = poll(Duration::from_secs(30), || {
        let sealed = control.audit_of("recording_sealed");
        delivered
            .iter()
            .filter(|s| {
                node.dir
                    .path()
                    .join("recordings")
                    .join(s["id"].as_str().unwrap_or_default())
                    .is_dir()
            })
            .all(|s| {
                sealed
                    .iter()
                    .any(|e| e["session"] == s["id"] && e["fields"]["node"] == "sess-a")
            })
            .then_some(sealed)
    });
    assert!(
        sealed.is_some(),
        "the nodes' recordings were not sealed: {:#?}",
        control.audit_of("recording_sealed")
    );
    let verified = control.cli_ok(&["audit", "verify"]);
    assert!(verified.contains("hash chain intact"), "{verified}");
    let shipped_logins = |audit: &[Value]| -> Vec<u64> {
        audit
            .iter()
            .filter(|e| e["kind"] == "login_ok" && e["fields"]["node"] == "sess-a")
            .map(|e| e["fields"]["node_seq"].as_u64().unwrap())
            .collect()
    };
    assert!(shipped_logins(&control.audit()).len() >= 3);
    // `session show` on the control node reads the node's session.
    let with_channels = delivered
        .iter()
        .find(|s| s["channels"].as_array().is_some_and(|c| !c.is_empty()))
        .expect("a delivered session with channels");
    let shown = control.session_show(with_channels["id"].as_str().unwrap());
    assert_eq!(shown["session"]["node"], "sess-a", "{shown}");
    assert!(
        shown["events"].as_array().is_some_and(|e| !e.is_empty()),
        "{shown}"
    );

    // The `node-audit` service off: the session's record and recording still arrive, its audit
    // events wait on the node and arrive once the service is on again.
    control.cli_ok(&["service", "disable", "node-audit"]);
    let out = client.ssh("echo while-audit-is-off");
    assert_client_ok("a session while node-audit is off", &out);
    let quiet = poll(Duration::from_secs(30), || {
        control.sessions().into_iter().find_map(|s| {
            let ours = !s["ended"].is_null()
                && s["channels"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["command"] == "echo while-audit-is-off"));
            ours.then(|| s["id"].as_str().unwrap().to_string())
        })
    })
    .expect("the session record arrives with node-audit off");
    std::thread::sleep(Duration::from_secs(3));
    // (The control node's own decision, `session_authorized`, is there; the node's events are
    // the ones with a node sequence number.)
    let of_quiet = |audit: &[Value]| {
        audit
            .iter()
            .filter(|e| e["session"] == quiet.as_str() && e["fields"]["node_seq"].is_u64())
            .count()
    };
    assert_eq!(
        of_quiet(&control.audit()),
        0,
        "audit events taken with node-audit off"
    );
    control.cli_ok(&["service", "enable", "node-audit"]);
    assert!(
        poll(Duration::from_secs(30), || (of_quiet(&control.audit()) > 0)
            .then_some(()))
        .is_some(),
        "the held audit events did not arrive"
    );

    // Ending sessions from the centre: one on the node (it ends at the node's next call), one
    // on the control node's own listener (at once). The users read who and why.
    let running_on = |port: u16| {
        let c = Client::password(port, &login, GATEWAY_PASSWORD);
        std::thread::spawn(move || c.ssh("echo started; sleep 60; echo not-ended"))
    };
    let running_id = |node: Option<&str>, known: &[&str]| {
        poll(Duration::from_secs(30), || {
            control.sessions().into_iter().find_map(|s| {
                (s["ended"].is_null()
                    && s["node"].as_str() == node
                    && s["user"] == GATEWAY_USER
                    && !known.contains(&s["id"].as_str().unwrap_or_default()))
                .then(|| s["id"].as_str().unwrap().to_string())
            })
        })
        .expect("a running session listed on the control node")
    };
    let on_node = running_on(node.ssh_port);
    let terminated_on_node = running_id(Some("sess-a"), &[]);
    let id = terminated_on_node.clone();
    let table = control.cli_ok(&["session", "list"]);
    assert!(
        table.contains("NODE")
            && table
                .lines()
                .any(|l| l.contains(&id) && l.contains("sess-a") && l.contains("(active)")),
        "{table}"
    );
    let said = control.cli_ok(&["session", "terminate", &id, "--reason", "patching now"]);
    assert!(said.contains("runs on node `sess-a`"), "{said}");
    let started = std::time::Instant::now();
    let out = on_node.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        !out.stdout_text().contains("not-ended"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr_text()
            .contains("ended this session: patching now"),
        "{}",
        out.describe()
    );
    let here = running_on(control.ssh_port());
    let id = running_id(None, &[]);
    let said = control.cli_ok(&["session", "terminate", &id, "--reason", "done here"]);
    assert!(said.contains("ended session"), "{said}");
    let out = here.join().unwrap();
    assert!(
        out.stderr_text().contains("ended this session: done here"),
        "{}",
        out.describe()
    );
    // Once its books are closed, a second terminate says so.
    let again = poll(Duration::from_secs(20), || {
        let out = control.cli(&["session", "terminate", &id, "--reason", "again"]);
        String::from_utf8_lossy(&out.stderr)
            .contains("has ended already")
            .then_some(())
    });
    assert!(again.is_some());

    // The control node goes away: a running session goes on, a new login is told why not.
    let running_client = Client::password(node.ssh_port, &login, GATEWAY_PASSWORD);
    let running =
        std::thread::spawn(move || running_client.ssh("echo started; sleep 4; echo still-here"));
    let away_id = running_id(Some("sess-a"), &[&terminated_on_node]);
    control.stop_server();
    let out = Client::password(node.ssh_port, &login, GATEWAY_PASSWORD).ssh("true");
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("cannot reach its control node"),
        "{}",
        out.describe()
    );
    let out = running.join().unwrap();
    assert_client_ok("the session running while the control node went away", &out);
    assert_eq!(out.stdout_text(), "started\nstill-here\n");

    // kill -9 of the node with that session's books not delivered; the node and the control
    // node start again: everything arrives, nothing twice.
    node.stop();
    node.serve();
    control.serve();
    let all_there = poll(Duration::from_secs(60), || {
        control
            .sessions()
            .into_iter()
            .any(|s| s["id"] == away_id.as_str() && !s["ended"].is_null())
            .then_some(())
    });
    assert!(
        all_there.is_some(),
        "the session that ran while the control node was away did not arrive:\n{}",
        node.log_text()
    );
    let audit = control.audit();
    let mut seqs: Vec<u64> = audit
        .iter()
        .filter(|e| e["fields"]["node"] == "sess-a" && e["fields"]["node_seq"].is_u64())
        .map(|e| e["fields"]["node_seq"].as_u64().unwrap())
        .collect();
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), total, "a node audit event arrived twice");
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "the node's audit events arrived with gaps"
    );
    node.stop();
    let log = node.log_text();
    assert!(
        !log.contains(&account.password),
        "the vault password in the node's log"
    );
    assert!(
        !log.contains(GATEWAY_PASSWORD),
        "a user's password in the node's log"
    );
}

/// RDP through a session node with a real xfreerdp and a real NLA target: the node's NLA
/// exchange checks the client with the NT hash the control node lends it for that exchange, the
/// control node checks the delegated password and decides the session; the node dials with the
/// vault's password (the target's key pinned on the control node's asset), relays and records,
/// and delivers the record, the audit and the recording to the control node. A wrong password
/// and a target outside the node's networks are refused; no secret rests on the node.
#[test]
fn rdp_through_a_session_node_with_the_nt_hash_lent_by_the_control_node() {
    use support::rdp_peers::{Client as RdpClient, ShadowTarget, text};
    const USER: &str = "alice";
    const PASSWORD: &str = "Gateway-Pass-1";
    const ACCOUNT: &str = "target1";
    const VAULT_PASSWORD: &str = "Vault-Pass-Node-1";

    let scratch = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(scratch.path(), ACCOUNT, VAULT_PASSWORD);
    let mut control = Gatehouse::init();
    control.add_user_with_password(USER, PASSWORD);
    control.add_rdp_asset("win1", shadow.port, &[]);
    // The same target under an address no network of sess-a holds.
    control.cli_ok(&[
        "asset",
        "add",
        "farwin",
        "--address",
        "127.0.0.2",
        "--tofu",
        "--rdp-port",
        &shadow.port.to_string(),
    ]);
    for asset in ["win1", "farwin"] {
        let spec = format!("{ACCOUNT}@{asset}");
        control.add_account_with_password(&spec, VAULT_PASSWORD);
        control.grant_user(USER, &spec);
    }
    let url = serve_control(&mut control);
    let mut node = loopback_node(&control, &url);
    // The node reports its RDP port.
    let reported = poll(Duration::from_secs(20), || {
        nodes(&control, false)
            .iter()
            .find(|n| n["rdp_port"].as_u64() == Some(u64::from(node.rdp_port)))
            .cloned()
    });
    assert!(
        reported.is_some(),
        "no RDP port reported: {:#?}",
        nodes(&control, false)
    );

    let client = RdpClient::new(scratch.path());
    let auth_only = |login: &str, password: &str| {
        let command = client.command(node.rdp_port, login, password, &["/sec:nla", "+auth-only"]);
        let (output, killed) = client.run(command, Duration::from_secs(60));
        assert!(!killed, "xfreerdp hung:\n{}", text(&output));
        output
    };
    let login = format!("{USER}@{ACCOUNT}@win1");
    let output = auth_only(&login, PASSWORD);
    assert!(
        output.status.success(),
        "xfreerdp through the session node failed:\n{}\n--- node log ---\n{}\n--- control log ---\n{}",
        text(&output),
        node.log_text(),
        control.log_text()
    );

    // The control node decided (with the node) and pinned the target's key on its asset.
    let authorized = control
        .wait_for_audit(0, "session_authorized", Duration::from_secs(30))
        .expect("session_authorized on the control node");
    assert_eq!(authorized["fields"]["node"], "sess-a", "{authorized}");
    let pin = gatehouse_rdp::CertificatePin::of_certificate(&shadow.certificate())
        .unwrap()
        .to_string();
    let asset = control.cli_json(&["asset", "show", "win1", "--json"]);
    assert_eq!(
        asset["rdp"]["certificate"],
        serde_json::json!({"mode": "pinned", "pin": pin}),
        "{asset}"
    );
    // The lending of the NT hash is in the control node's trail.
    let lent = control.audit_of("nt_hash_lent");
    assert!(
        lent.iter()
            .any(|e| e["user"] == USER && e["fields"]["node"] == "sess-a"),
        "{lent:#?}"
    );
    // The node's record, audit and recording reach the control node.
    let delivered = poll(Duration::from_secs(30), || {
        control
            .sessions()
            .into_iter()
            .find(|s| s["node"] == "sess-a" && s["protocol"] == "rdp" && !s["ended"].is_null())
    })
    .unwrap_or_else(|| {
        panic!(
            "no RDP session of sess-a on the control node: {:#?}\n{}",
            control.sessions(),
            node.log_text()
        )
    });
    assert_eq!(delivered["user"], USER);
    let id = delivered["id"].as_str().unwrap().to_string();
    let pdus = control
        .data_dir()
        .join("recordings")
        .join(&id)
        .join("rdp.pdus");
    let arrived = poll(Duration::from_secs(30), || {
        std::fs::read(&pdus)
            .ok()
            .filter(|b| b.starts_with(b"GHRDP1\n\0"))
    });
    assert!(arrived.is_some(), "{} did not arrive", pdus.display());
    let connected = control
        .wait_for_audit(0, "target_connect_ok", Duration::from_secs(30))
        .expect("target_connect_ok delivered");
    assert_eq!(connected["fields"]["node"], "sess-a", "{connected}");
    assert_eq!(connected["fields"]["protocol"], "rdp", "{connected}");
    assert_eq!(connected["fields"]["certificate"], pin, "{connected}");

    // A wrong gateway password: NTLM fails on the node, the audit says why.
    let output = auth_only(&login, "not-the-gateway-password");
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("ERRCONNECT_LOGON_FAILURE"),
        "{}",
        text(&output)
    );
    let failed = control
        .wait_for_audit(0, "login_failed", Duration::from_secs(30))
        .expect("login_failed delivered");
    assert_eq!(failed["user"], USER, "{failed}");
    assert_eq!(failed["fields"]["node"], "sess-a", "{failed}");
    assert_eq!(failed["fields"]["protocol"], "rdp", "{failed}");

    // A permitted target outside the node's networks: refused, and the control node's audit
    // names where to connect.
    let output = auth_only(&format!("{USER}@{ACCOUNT}@farwin"), PASSWORD);
    assert!(!output.status.success(), "{}", text(&output));
    let outside = poll(Duration::from_secs(30), || {
        control.audit_of("access_denied").into_iter().find(|e| {
            e["target"] == format!("{ACCOUNT}@farwin")
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("connect through the control node"))
        })
    });
    assert!(
        outside.is_some(),
        "{:#?}",
        control.audit_of("access_denied")
    );

    // A full session through the node, ended from the centre: the node ends it at its next
    // call, and the audit it delivers says who and why.
    let full = {
        let client = RdpClient::on_display(scratch.path(), &shadow.display);
        let command = client.command(
            node.rdp_port,
            &login,
            PASSWORD,
            &["/sec:nla", "/size:800x600", "-clipboard", "/audio-mode:2"],
        );
        std::thread::spawn(move || client.run(command, Duration::from_secs(90)))
    };
    let running = poll(Duration::from_secs(30), || {
        control.sessions().into_iter().find_map(|s| {
            (s["node"] == "sess-a" && s["protocol"] == "rdp" && s["ended"].is_null())
                .then(|| s["id"].as_str().unwrap().to_string())
        })
    })
    .unwrap_or_else(|| panic!("no running RDP session listed:\n{}", node.log_text()));
    let said = control.cli_ok(&["session", "terminate", &running, "--reason", "patch window"]);
    assert!(said.contains("runs on node `sess-a`"), "{said}");
    let (output, killed) = full.join().unwrap();
    assert!(
        !killed,
        "the terminated RDP session went on:\n{}\n{}",
        text(&output),
        node.log_text()
    );
    let ended = poll(Duration::from_secs(30), || {
        control
            .audit_of("session_ended")
            .into_iter()
            .find(|e| e["session"] == running.as_str() && e["fields"]["terminated_by"] == "local")
    })
    .unwrap_or_else(|| panic!("{:#?}", control.audit_of("session_ended")));
    assert_eq!(ended["fields"]["reason"], "patch window", "{ended}");
    assert_eq!(ended["fields"]["node"], "sess-a", "{ended}");

    // Neither password nor the NT hash's source rests on the node.
    let scanned = assert_no_secret_rests_on(&mut node, &[PASSWORD, VAULT_PASSWORD]);
    assert!(scanned > 3, "{scanned} files scanned");
}

/// Sessions-initiated access through a session node: no policy permits alice, but she may ask,
/// so the control node files her request and the node holds her connection, telling her, until
/// carol approves; the session then opens under the request, and ends when the request is
/// revoked (the control node tells the node at its next call, and the user reads why). A denied
/// request is a one-line refusal.
#[test]
fn a_request_filed_through_a_node_holds_the_session_and_its_end_ends_it() {
    use support::ssh_client::Client;
    use support::{OutputExt, TargetSshd, TestAccount};

    let account = TestAccount::new("cl_req");
    let target = TargetSshd::start(std::slice::from_ref(&account));
    let mut control = Gatehouse::init();
    control.cli_ok(&["group", "add", "dbas"]);
    control.cli_ok(&["group", "add", "approvers"]);
    control.cli_ok(&["asset-group", "add", "prod"]);
    for (user, group) in [("alice", "dbas"), ("carol", "approvers")] {
        control.cli_stdin_ok(
            &["user", "add", user, "--password-stdin", "--group", group],
            &format!("{ADMIN_PASSWORD}\n"),
        );
    }
    control.cli_ok(&[
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
    let spec = format!("{}@db1", account.name);
    control.add_account_with_password(&spec, &account.password);
    std::fs::write(
        control.data_dir().join("policies/requests.cedar"),
        REQUEST_POLICY,
    )
    .unwrap();
    control.edit_settings(|s| s["requests"] = serde_json::json!({}));
    let url = serve_control(&mut control);
    let node = loopback_node(&control, &url);

    let dir = tempfile::tempdir().unwrap();
    let users = support::ApiUsers {
        gh: &control,
        dir: dir.path().to_path_buf(),
        password: ADMIN_PASSWORD.to_string(),
    };
    users.login("alice");
    users.login("carol");
    let pending = || -> Vec<Value> {
        let list = users.request_ok("carol", &["list", "--state", "pending_approval"]);
        list["requests"].as_array().cloned().unwrap_or_default()
    };

    // Denied: one line.
    let client = Client::password(
        node.ssh_port,
        format!("reason=first try@alice@{spec}"),
        ADMIN_PASSWORD,
    );
    let denied = std::thread::spawn(move || client.ssh("echo should-not-run"));
    let first = poll(Duration::from_secs(30), || pending().into_iter().next())
        .unwrap_or_else(|| panic!("no pending request:\n{}", control.log_text()));
    let first_id = support::json_str(&first, "id");
    assert_eq!(first["reason"], "first try", "{first}");
    users.request_ok("carol", &["deny", &first_id, "--comment", "not today"]);
    let out = denied.join().unwrap();
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_text()
            .contains("needs 1 approval; waiting up to"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr_text().contains(&format!(
            "gatehouse: access request {first_id} was denied by carol: not today"
        )),
        "{}",
        out.describe()
    );

    // Approved while held: the session opens under the request.
    let client = Client::password(
        node.ssh_port,
        format!("reason=node work@alice@{spec}"),
        ADMIN_PASSWORD,
    );
    let running = std::thread::spawn(move || client.ssh("echo started; sleep 60; echo not-ended"));
    let second = poll(Duration::from_secs(30), || pending().into_iter().next())
        .unwrap_or_else(|| panic!("no pending request:\n{}", control.log_text()));
    let id = support::json_str(&second, "id");
    assert_ne!(id, first_id);
    users.request_ok("carol", &["approve", &id]);
    let session = poll(Duration::from_secs(30), || {
        control.sessions().into_iter().find_map(|s| {
            (s["node"] == "sess-a" && s["ended"].is_null())
                .then(|| s["id"].as_str().unwrap().to_string())
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "no running session of sess-a:\n{}\n{}",
            node.log_text(),
            control.log_text()
        )
    });
    let authorized = control
        .audit_of("session_authorized")
        .into_iter()
        .find(|e| e["session"] == session.as_str())
        .expect("the control node's decision");
    assert_eq!(authorized["fields"]["request"], id.as_str(), "{authorized}");

    users.request_ok("carol", &["revoke", &id]);
    let revoked = std::time::Instant::now();
    let out = running.join().unwrap();
    assert!(
        revoked.elapsed() < Duration::from_secs(30),
        "{:?}",
        revoked.elapsed()
    );
    assert!(out.stdout_text().contains("started"), "{}", out.describe());
    assert!(
        !out.stdout_text().contains("not-ended"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr_text()
            .contains(&format!("access request {id} approved; connecting")),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr_text()
            .contains(&format!("access request {id} is revoked; the session ends")),
        "{}",
        out.describe()
    );
    let held = control
        .audit_of("request_created")
        .into_iter()
        .filter(|e| e["fields"]["node"] == "sess-a")
        .count();
    assert_eq!(held, 2, "{:#?}", control.audit_of("request_created"));
    let ended = poll(Duration::from_secs(30), || {
        control.audit_of("session_ended").into_iter().find(|e| {
            e["session"] == session.as_str()
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("is revoked"))
        })
    });
    assert!(ended.is_some(), "{:#?}", control.audit_of("session_ended"));
}

/// The control node's login plugins run for logins at its session nodes: the TOTP plugin's
/// question reaches the user through the node (keyboard-interactive), the control node checks
/// the answer, and Cedar on the control node sees the second factor. A replayed code is
/// refused with the plugin's reason; the plugin's secret never leaves the control node.
#[test]
fn login_plugins_on_the_control_node_ask_through_a_session_node() {
    use support::ssh_client::{Client, assert_client_ok};
    use support::totp::{SEED, totp_now};
    use support::world::{ASSET, GATEWAY_PASSWORD, GATEWAY_USER};
    use support::{OutputExt, TargetSshd, TestAccount};

    let scratch = tempfile::tempdir().unwrap();
    let account = TestAccount::new("cl_mfa");
    let target = TargetSshd::start(std::slice::from_ref(&account));
    let mut control = Gatehouse::init();
    control.add_user_with_password(GATEWAY_USER, GATEWAY_PASSWORD);
    control.add_asset(ASSET, target.port(), &target.host_key());
    let spec = format!("{}@{ASSET}", account.name);
    control.add_account_with_password(&spec, &account.password);
    control.grant_user(GATEWAY_USER, &spec);
    control.cli_stdin_ok(
        &["plugin-secret", "set", &format!("totp-seed/{GATEWAY_USER}")],
        SEED,
    );
    control.install_plugin(
        scratch.path(),
        "totp-mfa",
        "secrets = [\"totp-seed/*\"]\n",
        None,
    );
    std::fs::write(
        control.data_dir().join("policies/mfa.cedar"),
        "@id(\"sessions-need-totp\")\nforbid (principal, action in Action::\"session\", resource)\nunless { context.authenticated_with.contains(\"totp-mfa\") };\n",
    )
    .unwrap();
    let url = serve_control(&mut control);
    let mut node = loopback_node(&control, &url);

    let login = format!("{GATEWAY_USER}@{spec}");
    let code = totp_now();
    let client = Client::password_with_answers(
        node.ssh_port,
        &login,
        GATEWAY_PASSWORD,
        &[("One-time code", &code)],
    );
    let ok = client.ssh("echo second-factor-through-the-node");
    assert_client_ok(
        &format!(
            "TOTP through the node\n--- node log ---\n{}\n--- control log ---\n{}",
            node.log_text(),
            control.log_text()
        ),
        &ok,
    );
    assert_eq!(ok.stdout_text(), "second-factor-through-the-node\n");
    assert!(
        client.prompts_seen().contains("One-time code"),
        "{}",
        client.prompts_seen()
    );
    // The node's login event, delivered, names the plugin; the control node's decision had
    // the factor (the forbid would have denied it otherwise).
    let logged_in = poll(Duration::from_secs(30), || {
        control
            .audit_of("login_ok")
            .into_iter()
            .find(|e| e["fields"]["node"] == "sess-a")
    })
    .expect("the node's login_ok on the control node");
    assert_eq!(
        logged_in["fields"]["plugins"],
        serde_json::json!(["totp-mfa"]),
        "{logged_in}"
    );
    assert!(
        !control.audit_of("session_authorized").is_empty(),
        "{:#?}",
        control.audit()
    );

    // The same code again: the plugin refuses; the user reads the refusal (as on a single
    // gateway), the audit trail the plugin's reason.
    let replay = Client::password_with_answers(
        node.ssh_port,
        &login,
        GATEWAY_PASSWORD,
        &[("One-time code", &code)],
    )
    .ssh("echo must-not-run");
    assert!(!replay.status.success(), "{}", replay.describe());
    assert!(!replay.stdout_text().contains("must-not-run"));
    assert!(
        replay
            .stderr_text()
            .contains("gatehouse: access denied: a plugin refused this login"),
        "{}",
        replay.describe()
    );
    let failed = control.audit_of("login_failed").into_iter().find(|e| {
        e["fields"]["node"] == "sess-a"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("plugin `totp-mfa` denied"))
    });
    assert!(failed.is_some(), "{:#?}", control.audit_of("login_failed"));

    // The plugin's secret is the control node's alone.
    assert_no_secret_rests_on(&mut node, &[SEED]);
}

/// An account whose credential comes from a credential-store plugin, used through a session
/// node: the plugin runs on the control node (its HTTP grant and token stay there), and its
/// credential reaches the node with the permit, for that login only.
#[test]
fn credential_store_plugins_on_the_control_node_serve_sessions_on_nodes() {
    use support::ssh_client::{Client, assert_client_ok};
    use support::world::{ASSET, GATEWAY_PASSWORD, GATEWAY_USER};
    use support::{OutputExt, TargetSshd, TestAccount};

    let scratch = tempfile::tempdir().unwrap();
    let account = TestAccount::new("cl_cred");
    let (kv_port, seen) = support::kv_server(ASSET, &account.name, &account.password);
    let target = TargetSshd::start(std::slice::from_ref(&account));
    let mut control = Gatehouse::init();
    control.add_user_with_password(GATEWAY_USER, GATEWAY_PASSWORD);
    control.add_asset(ASSET, target.port(), &target.host_key());
    let spec = format!("{}@{ASSET}", account.name);
    control.cli_ok(&[
        "account",
        "add",
        &spec,
        "--credential-plugin",
        "http-credstore",
    ]);
    control.grant_user(GATEWAY_USER, &spec);
    control.cli_stdin_ok(&["plugin-secret", "set", "vault-token"], "s.test-token");
    control.install_plugin(
        scratch.path(),
        "http-credstore",
        &format!("http = [\"127.0.0.1:{kv_port}\"]\nsecrets = [\"vault-token\"]\n"),
        Some(&format!("address = \"http://127.0.0.1:{kv_port}\"\n")),
    );
    let url = serve_control(&mut control);
    let mut node = loopback_node(&control, &url);

    let client = Client::password(
        node.ssh_port,
        format!("{GATEWAY_USER}@{spec}"),
        GATEWAY_PASSWORD,
    );
    let ok = client.ssh("id -un");
    assert_client_ok(
        &format!(
            "credential from the plugin through the node\n--- node log ---\n{}\n--- control log ---\n{}",
            node.log_text(),
            control.log_text()
        ),
        &ok,
    );
    assert_eq!(ok.stdout_text().trim(), account.name);
    let paths = seen.lock().unwrap().clone();
    assert!(
        paths.contains(&format!(
            "/v1/secret/data/gatehouse/{ASSET}/{}",
            account.name
        )),
        "{paths:?}"
    );

    // Neither the store's token nor the credential rests on the node.
    assert_no_secret_rests_on(&mut node, &["s.test-token", account.password.as_str()]);
}

/// Two control nodes on one real PostgreSQL; a session node joined to the first knows the
/// second. The first is killed (SIGKILL): ssh through the session node goes on, decided by the
/// second.
#[test]
fn a_session_node_fails_over_when_its_control_node_dies() {
    use support::ssh_client::Client;
    use support::world::{ASSET, GATEWAY_PASSWORD, GATEWAY_USER};
    use support::{OutputExt, TargetSshd, TestAccount};

    let pg = support::postgres::Postgres::start();
    let url = pg.url("gatehouse");
    let account = TestAccount::new("cl_ha");
    let target = TargetSshd::start(std::slice::from_ref(&account));
    let mut a = Gatehouse::init_with(&["--store", &url]);
    let key = a.data_dir().join("master.key");
    let mut b =
        Gatehouse::init_with(&["--store", &url, "--master-key-file", key.to_str().unwrap()]);
    a.add_user_with_password(GATEWAY_USER, GATEWAY_PASSWORD);
    a.add_asset(ASSET, target.port(), &target.host_key());
    let spec = format!("{}@{ASSET}", account.name);
    a.add_account_with_password(&spec, &account.password);
    a.grant_user(GATEWAY_USER, &spec);
    let url_a = serve_control(&mut a);
    let url_b = serve_control(&mut b);

    let mut node = SessionNode::new();
    let (token, thumbprint) = token(&a);
    assert_success(
        "join sess-a with a second control node",
        &node.join_as(
            &url_a,
            &token,
            &thumbprint,
            "sess-a",
            &["--also-control", &url_b],
        ),
    );
    a.cli_ok(&["network", "add", "127.0.0.1/32", "--node", "sess-a"]);
    node.serve();

    let login = format!("{GATEWAY_USER}@{}@{ASSET}", account.name);
    let client = Client::password(node.ssh_port, &login, GATEWAY_PASSWORD);
    let out = client.ssh("echo via-a");
    assert!(
        out.status.success(),
        "{}\n{}",
        out.describe(),
        node.log_text()
    );
    assert_eq!(out.stdout_text(), "via-a\n");

    a.stop_server();
    let out = client.ssh("echo via-b");
    assert!(
        out.status.success(),
        "after A died: {}\n--- node ---\n{}\n--- B ---\n{}",
        out.describe(),
        node.log_text(),
        b.log_tail(40)
    );
    assert_eq!(out.stdout_text(), "via-b\n");
    assert!(
        node.log_text().contains("failed over to this control node"),
        "{}",
        node.log_text()
    );
    // The node's audit events reach the shared store through B (the node spools and ships them).
    let logins = poll(Duration::from_secs(60), || {
        let logins = b.audit_of("login_ok");
        (logins.len() >= 2).then_some(logins)
    });
    assert!(
        logins.is_some(),
        "the second login's events never arrived:\n{}",
        node.log_text()
    );
    drop(pg);
}
