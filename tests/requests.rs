//! End to end over real TLS: access requests through `gatehouse serve`'s HTTPS API (driven by
//! the real `gatehouse` CLI and by curl), approvals decided by Cedar, password release and
//! check-in, a real `ssh` held at connect until an approver approves, access strings, and A2A
//! retrieval with mutual TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::ssh_client::Client;
use support::{ApiUsers, Gatehouse, OutputExt, TargetSshd, TestAccount, poll, run};

const POLICY: &str = r#"
@id("dbas-may-request")
permit (principal in Group::"dbas", action == Action::"request_access", resource in AssetGroup::"prod");

@id("reason-required")
forbid (principal, action == Action::"request_access", resource)
when { context has request && context.request.reason == "" };

@id("security-reviews")
permit (principal in Group::"security-approvers", action in Action::"review", resource is AccessRequest);

@id("no-self-review")
forbid (principal, action in Action::"review", resource is AccessRequest)
when { resource.requester == principal };

@id("secrets-need-two")
permit (principal, action == Action::"grant_request", resource is AccessRequest)
when { resource.requester == principal && resource.access != "session" && context.approvals >= 2 };

@id("sessions-need-one")
permit (principal, action == Action::"grant_request", resource is AccessRequest)
when { resource.requester == principal && resource.access == "session" && context.approvals >= 1 };

@id("break-glass")
permit (principal in Group::"dbas", action == Action::"auto_approve", resource is AccessRequest)
when { resource.requester == principal && resource.emergency && resource.access == "session" };

@id("verified-incident")
permit (principal in Group::"dbas", action == Action::"auto_approve", resource is AccessRequest)
when {
  resource.requester == principal && resource.ticket_verified &&
  resource.ticket like "INC-*" && resource.access == "session"
};

@id("app1-reads-db1")
permit (principal == Application::"app1", action == Action::"a2a_retrieve", resource in Asset::"db1");
"#;

const PASSWORD: &str = "Req-user-pw-7Hq2";

/// A gateway with a real target, users alice (dbas), carol and dave (security-approvers),
/// mallory (nobody), asset db1 in asset group prod, and no grants: every access goes through
/// a request.
struct Vault {
    gh: Gatehouse,
    _target: TargetSshd,
    account: TestAccount,
    scratch: tempfile::TempDir,
}

impl Vault {
    fn start(tag: &str, settings: impl FnOnce(&mut Value)) -> Vault {
        Self::start_with(tag, settings, |_| {})
    }

    /// Like `start`, with `setup` run on the data directory before `serve`.
    fn start_with(
        tag: &str,
        settings: impl FnOnce(&mut Value),
        setup: impl FnOnce(&Gatehouse),
    ) -> Vault {
        let scratch = tempfile::tempdir().unwrap();
        let account = TestAccount::new(tag);
        let target = TargetSshd::start(std::slice::from_ref(&account));
        let gh = Gatehouse::init();
        gh.cli_ok(&["group", "add", "dbas"]);
        gh.cli_ok(&["group", "add", "security-approvers"]);
        gh.cli_ok(&["asset-group", "add", "prod"]);
        for (user, group) in [
            ("alice", Some("dbas")),
            ("carol", Some("security-approvers")),
            ("dave", Some("security-approvers")),
            ("mallory", None),
        ] {
            let email = format!("{user}@example.test");
            let mut args = vec!["user", "add", user, "--password-stdin", "--email", &email];
            if let Some(g) = group {
                args.extend(["--group", g]);
            }
            gh.cli_stdin_ok(&args, &format!("{PASSWORD}\n"));
        }
        gh.cli_ok(&[
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
        gh.add_account_with_password(&format!("{}@db1", account.name), &account.password);
        std::fs::write(gh.data_dir().join("policies/requests.cedar"), POLICY).unwrap();
        gh.edit_settings(|s| {
            s["requests"] = serde_json::json!({});
            settings(s);
        });
        setup(&gh);
        let mut vault = Vault {
            gh,
            _target: target,
            account,
            scratch,
        };
        vault.gh.serve();
        vault
    }

    fn target_spec(&self) -> String {
        format!("{}@db1", self.account.name)
    }

    fn api(&self) -> ApiUsers<'_> {
        ApiUsers {
            gh: &self.gh,
            dir: self.scratch.path().to_path_buf(),
            password: PASSWORD.to_string(),
        }
    }

    fn token_file(&self, user: &str) -> PathBuf {
        self.api().token_file(user)
    }

    fn as_user(&self, user: &str, args: &[&str]) -> Output {
        self.api().as_user(user, args)
    }

    fn login(&self, user: &str) {
        self.api().login(user)
    }

    fn request_ok(&self, user: &str, args: &[&str]) -> Value {
        self.api().request_ok(user, args)
    }

    fn request_err(&self, user: &str, args: &[&str]) -> String {
        self.api().request_err(user, args)
    }

    /// `request ARGS` as `user` is refused, with an error naming every one of `needles`.
    fn assert_refused(&self, user: &str, args: &[&str], needles: &[&str]) {
        let err = self.request_err(user, args);
        for needle in needles {
            assert!(
                err.contains(needle),
                "`{needle}` is not in the refusal: {err}"
            );
        }
    }

    fn token(&self, user: &str) -> String {
        self.login(user);
        std::fs::read_to_string(self.token_file(user)).unwrap()
    }

    /// curl against the API: (status, JSON body).
    fn curl(&self, method: &str, path: &str, headers: &[&str], body: Option<&str>) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "-X", method])
            .arg("--cacert")
            .arg(self.gh.data_dir().join("tls/cert.pem"))
            .args(["-w", "\n%{http_code}"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        if let Some(b) = body {
            cmd.args(["--data-binary", b]);
        }
        cmd.arg(format!("{}{path}", self.gh.api_url()));
        curl_answer(run(cmd, None, Duration::from_secs(60)))
    }

    fn audit_kinds(&self, request: &str) -> Vec<String> {
        self.gh
            .audit()
            .iter()
            .filter(|e| e["fields"]["request"].as_str() == Some(request))
            .map(|e| e["kind"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn stored_requests(&self) -> Value {
        self.request_ok("alice", &["list"])
    }

    /// `a2a register NAME --cert-file CERT`, then `extra` (`--allow CIDR`, `--broker`).
    fn register_app(&self, name: &str, cert: &Path, extra: &[&str]) {
        let mut args = vec![
            "a2a",
            "register",
            name,
            "--cert-file",
            cert.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.gh.cli_ok(&args);
    }

    /// `a2a key-add ARGS`: the new API key (the first line printed), also written to `file`.
    fn add_a2a_key(&self, args: &[&str], file: &Path) -> String {
        let printed = self.gh.cli_ok(&[&["a2a", "key-add"][..], args].concat());
        let api_key = printed.lines().next().unwrap().trim().to_string();
        std::fs::write(file, &api_key).unwrap();
        api_key
    }

    /// `gatehouse a2a SUBCOMMAND` as an application: its client certificate and key, the API
    /// key in `key_file`, then `rest`.
    fn as_app(
        &self,
        subcommand: &str,
        (cert, key): (&Path, &Path),
        key_file: &Path,
        rest: &[&str],
    ) -> Output {
        let mut args = vec![
            "a2a",
            subcommand,
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--api-key-file",
            key_file.to_str().unwrap(),
        ];
        args.extend_from_slice(rest);
        self.as_user("nobody", &args)
    }
}

fn curl_answer(out: Output) -> (u16, Value) {
    assert!(out.status.success(), "curl failed: {}", out.stderr_text());
    let text = out.stdout_text();
    let (body, status) = text.rsplit_once('\n').expect("curl -w status line");
    let value = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    (status.trim().parse().unwrap(), value)
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("request id").to_string()
}

/// `create TARGET --access ACCESS --reason REASON`, then `extra` (`--ticket`, `--emergency`).
fn create<'a>(
    target: &'a str,
    access: &'a str,
    reason: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["create", target, "--access", access, "--reason", reason];
    args.extend_from_slice(extra);
    args
}

/// The first request `user` sees pending approval, waiting up to 60 s for one to be filed.
fn first_pending(v: &Vault, user: &str) -> Value {
    poll(Duration::from_secs(60), || {
        let list = v.request_ok(user, &["list", "--state", "pending_approval"]);
        list["requests"].as_array().and_then(|a| a.first().cloned())
    })
    .unwrap_or_else(|| panic!("no request pending approval:\n{}", v.gh.log_tail(40)))
}

/// No file of the data directory (serve.log included) holds any of `secrets`.
fn assert_in_no_data_file(v: &Vault, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            support::files_containing(v.gh.data_dir(), secret.as_bytes()).is_empty(),
            "a secret ({}…) is in a data-dir file (serve.log included)",
            &secret[..4]
        );
    }
}

/// The python3 the helper servers run on: `$GATEHOUSE_TEST_PYTHON`, Debian's, or from `PATH`.
fn python3() -> String {
    std::env::var("GATEHOUSE_TEST_PYTHON").unwrap_or_else(|_| {
        if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    })
}

#[test]
fn password_release_needs_two_approvals_never_self_and_ends_at_check_in() {
    let v = Vault::start("req_pw", |_| {});
    for u in ["alice", "carol", "dave", "mallory"] {
        v.login(u);
    }
    let target = v.target_spec();

    // Policy requires a reason: refused without one, with the same message as an unknown target.
    v.assert_refused(
        "alice",
        &["create", &target, "--access", "password"],
        &["unknown or you may not request"],
    );
    v.assert_refused(
        "alice",
        &create("root@nowhere", "password", "x", &[]),
        &["unknown or you may not request"],
    );
    // Mallory is not in dbas.
    v.assert_refused(
        "mallory",
        &create(&target, "password", "look", &[]),
        &["unknown or you may not request"],
    );

    let r = v.request_ok(
        "alice",
        &create(
            &target,
            "password",
            "rotate db creds",
            &["--ticket", "CHG-1"],
        ),
    );
    let id = id_of(&r);
    assert_eq!(r["state"], "pending_approval");
    assert_eq!(r["approvals_needed"], 2);

    // Never self-approval; mallory may not even see it.
    v.assert_refused("alice", &["approve", &id], &["your own request"]);
    v.assert_refused("mallory", &["show", &id], &["not found", "404"]);
    v.assert_refused("mallory", &["approve", &id], &["not found"]);
    // Nothing to release yet.
    v.assert_refused("alice", &["checkout", &id], &["pending_approval", "409"]);

    // The approvers' inboxes (the portal's badge): carol and dave see it with the policy that
    // lets them approve and the progress; alice (the requester) and mallory do not.
    let inbox = |user: &str| {
        let bearer = format!("Authorization: Bearer {}", v.token(user));
        let (status, inbox) = v.curl("GET", "/api/v1/inbox", &[&bearer], None);
        assert_eq!(status, 200, "{inbox}");
        inbox
    };
    let carols = inbox("carol");
    assert_eq!(carols["count"], 1, "{carols:#}");
    assert_eq!(carols["items"][0]["request"]["id"], id.as_str());
    assert_eq!(carols["items"][0]["approvals_given"], 0);
    assert_eq!(carols["items"][0]["approvals_needed"], 2);
    assert!(
        !carols["items"][0]["policies"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{carols:#}"
    );
    assert_eq!(inbox("dave")["count"], 1);
    assert_eq!(inbox("alice")["count"], 0);
    assert_eq!(inbox("mallory")["count"], 0);

    let one = v.request_ok("carol", &["approve", &id, "--comment", "ok"]);
    assert_eq!(one["state"], "pending_approval");
    // Approved by carol: gone from her inbox, still in dave's, one of two given.
    assert_eq!(inbox("carol")["count"], 0);
    assert_eq!(inbox("dave")["items"][0]["approvals_given"], 1);
    assert_eq!(one["approvals"].as_array().unwrap().len(), 1);
    v.assert_refused("carol", &["approve", &id], &["already approved", "409"]);
    let two = v.request_ok("dave", &["approve", &id]);
    assert_eq!(two["state"], "available", "{two:#}");
    assert_eq!(two["granted_by"], serde_json::json!(["secrets-need-two"]));

    // The requester sees the vault password; an approver does not.
    let secret = v.request_ok("alice", &["checkout", &id]);
    assert_eq!(secret["password"], v.account.password.as_str());
    assert_eq!(
        secret["policies"],
        serde_json::json!([format!("approved:{id}")])
    );
    assert_eq!(secret["view"], 1);
    let plain = v.as_user("alice", &["request", "checkout", &id]);
    assert_eq!(plain.stdout_text().trim(), v.account.password);
    v.assert_refused("carol", &["checkout", &id], &["only the requester"]);
    let shown = v.request_ok("alice", &["show", &id]);
    assert_eq!(shown["state"], "checked_out");
    assert_eq!(shown["views"], 2);

    // The account changes its password after each check-in: the request stays `checked_in`
    // until the credential lifecycle has changed it on the real target, then completes.
    v.gh.cli_ok(&["account", "set", &target, "--change-after-checkin", "true"]);
    let done = v.request_ok("alice", &["checkin", &id]);
    assert_eq!(done["state"], "checked_in");
    let completed = poll(Duration::from_secs(90), || {
        let r = v.request_ok("alice", &["show", &id]);
        (r["state"] == "complete").then_some(r)
    });
    assert!(
        completed.is_some(),
        "never completed:\n{}",
        v.gh.log_tail(40)
    );
    let changed =
        v.gh.audit_of("credential_changed")
            .into_iter()
            .next()
            .expect("a credential change after the check-in");
    assert!(
        changed["detail"].as_str().unwrap().contains("check-in"),
        "{changed}"
    );
    // The released password no longer logs in to the target directly.
    let direct = Client::password(
        v._target.port(),
        v.account.name.clone(),
        &v.account.password,
    )
    .ssh("echo still-works");
    assert!(
        !direct.stdout_text().contains("still-works"),
        "the released password still works"
    );
    v.assert_refused("alice", &["checkout", &id], &["complete", "409"]);
    v.assert_refused("alice", &["checkin", &id], &["409"]);

    // Neither the released vault password nor the users' password is in the TRACE log or in
    // any data-dir file.
    assert_in_no_data_file(&v, &[&v.account.password, PASSWORD]);
    let kinds = v.audit_kinds(&id);
    for kind in [
        "request_created",
        "request_refused",
        "request_approved",
        "request_granted",
        "credential_released",
        "request_checked_in",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "credential_released").count(),
        2,
        "every view is audited: {kinds:?}"
    );

    // Deny and cancel paths; transitions not allowed from the new state.
    let d = id_of(&v.request_ok("alice", &create(&target, "password", "again", &[])));
    let denied = v.request_ok("dave", &["deny", &d, "--comment", "not today"]);
    assert_eq!(denied["state"], "denied");
    assert_eq!(denied["denial"]["comment"], "not today");
    v.assert_refused("carol", &["approve", &d], &["denied"]);
    v.assert_refused("alice", &["cancel", &d], &["409"]);

    let c = id_of(&v.request_ok("alice", &create(&target, "private_key", "k", &[])));
    v.assert_refused("carol", &["cancel", &c], &["only the requester"]);
    assert_eq!(v.request_ok("alice", &["cancel", &c])["state"], "cancelled");
    v.assert_refused("carol", &["approve", &c], &["cancelled"]);

    // The list shows each request once, newest first, with its final state.
    let list = v.stored_requests();
    let states: Vec<(String, String)> = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (id_of(r), r["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        states,
        vec![
            (c, "cancelled".to_string()),
            (d, "denied".to_string()),
            (id, "complete".to_string()),
        ]
    );
}

/// A real `ssh` through the gateway waits at connect while its request is pending, shows the
/// request id, and lands on the target the moment an approver approves through the API.
#[test]
fn ssh_session_held_at_connect_until_approved_or_denied() {
    let v = Vault::start("req_hold", |_| {});
    v.login("carol");
    let login = format!("reason=incident@alice@{}", v.target_spec());
    let client = Client::password(v.gh.ssh_port(), login.clone(), PASSWORD)
        .timeout(Duration::from_secs(120));

    let waiting = std::thread::spawn(move || client.ssh("echo held-and-approved"));
    // The held connection filed a request.
    let pending = first_pending(&v, "carol");
    let id = id_of(&pending);
    assert_eq!(pending["origin"], "ssh");
    assert_eq!(pending["reason"], "incident");
    assert_eq!(pending["access"], "session");
    // Still waiting (not refused) while pending.
    std::thread::sleep(Duration::from_secs(1));
    assert!(!waiting.is_finished(), "ssh ended before the approval");
    v.request_ok("carol", &["approve", &id]);
    let out = waiting.join().unwrap();
    assert!(out.status.success(), "ssh failed: {}", out.stderr_text());
    assert_eq!(out.stdout_text().trim(), "held-and-approved");
    let err = out.stderr_text();
    assert!(
        err.contains(&format!("access request {id} needs 1 approval")),
        "{err}"
    );
    assert!(err.contains("approved by carol"), "{err}");
    let shown = v.request_ok("carol", &["show", &id]);
    assert_eq!(shown["state"], "checked_out");
    assert_eq!(shown["sessions"].as_array().unwrap().len(), 1);
    let connect =
        v.gh.audit_of("target_connect_ok")
            .pop()
            .expect("target_connect_ok");
    assert_eq!(connect["fields"]["request"], id.as_str());
    assert_eq!(
        connect["fields"]["policies"],
        serde_json::json!([format!("approved:{id}")])
    );

    // Within the window, connecting again needs no new request.
    let again = Client::password(v.gh.ssh_port(), login.clone(), PASSWORD).ssh("echo again");
    assert_eq!(
        again.stdout_text().trim(),
        "again",
        "{}",
        again.stderr_text()
    );

    // Checked in: the next connection files a new request, and a denial ends it with the reason.
    v.login("alice");
    v.request_ok("alice", &["checkin", &id]);
    let client =
        Client::password(v.gh.ssh_port(), login, PASSWORD).timeout(Duration::from_secs(120));
    let waiting = std::thread::spawn(move || client.ssh("echo never"));
    let second = first_pending(&v, "carol");
    let second_id = id_of(&second);
    assert_ne!(second_id, id);
    v.request_ok(
        "carol",
        &["deny", &second_id, "--comment", "use the runbook"],
    );
    let out = waiting.join().unwrap();
    assert!(!out.status.success());
    assert!(!out.stdout_text().contains("never"));
    let err = out.stderr_text();
    assert!(
        err.contains(&format!(
            "gatehouse: access request {second_id} was denied by carol: use the runbook"
        )),
        "{err}"
    );
}

fn access_command_client(v: &Vault, command: &str) -> (Client, String) {
    // `ssh -p PORT access=TOKEN@alice@ACCOUNT@db1@HOST`
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[0], "ssh", "{command}");
    assert_eq!(words[1], "-p", "{command}");
    assert_eq!(words[2], v.gh.ssh_port().to_string(), "{command}");
    let destination = words[3];
    let (login, host) = destination.rsplit_once('@').unwrap();
    assert_eq!(host, "127.0.0.1");
    assert!(login.starts_with("access="), "{login}");
    (
        Client::password(v.gh.ssh_port(), login.to_string(), PASSWORD),
        login.to_string(),
    )
}

/// An access string works once, is refused the second time and after it expires, and never
/// carries the vault password.
#[test]
fn access_string_is_single_use_and_expires() {
    let v = Vault::start("req_token", |s| {
        s["requests"]["access_token_seconds"] = 8.into();
    });
    v.login("alice");
    v.login("carol");
    let id = id_of(&v.request_ok("alice", &create(&v.target_spec(), "session", "deploy", &[])));
    // Not granted yet: no access string.
    v.assert_refused("alice", &["access-string", &id], &["409"]);
    v.request_ok("carol", &["approve", &id]);
    v.assert_refused("carol", &["access-string", &id], &["only the requester"]);

    let issued = v.request_ok("alice", &["access-string", &id]);
    let command = issued["command"].as_str().unwrap().to_string();
    assert!(!command.contains(&v.account.password));
    let (client, login) = access_command_client(&v, &command);
    let first = client.ssh("echo via-access-string");
    assert!(first.status.success(), "{}", first.stderr_text());
    assert_eq!(first.stdout_text().trim(), "via-access-string");
    let second = Client::password(v.gh.ssh_port(), login, PASSWORD).ssh("echo twice");
    assert!(!second.status.success());
    assert!(
        second
            .stderr_text()
            .contains("gatehouse: the access token is unknown, already used or expired"),
        "{}",
        second.stderr_text()
    );

    // Another token, used after its 8 s lifetime.
    let later = v.request_ok("alice", &["access-string", &id]);
    let command = later["command"].as_str().unwrap().to_string();
    let (client, _) = access_command_client(&v, &command);
    std::thread::sleep(Duration::from_secs(9));
    let expired = client.ssh("echo late");
    assert!(!expired.status.success());
    assert!(
        expired
            .stderr_text()
            .contains("access token is unknown, already used or expired")
    );

    // Someone else's token is refused even with their own password.
    let third = v.request_ok("alice", &["access-string", &id]);
    let command = third["command"].as_str().unwrap().to_string();
    let stolen_login = command
        .split_whitespace()
        .nth(3)
        .unwrap()
        .rsplit_once('@')
        .unwrap()
        .0
        .replace("@alice@", "@carol@");
    let stolen = Client::password(v.gh.ssh_port(), stolen_login, PASSWORD).ssh("echo stolen");
    assert!(!stolen.status.success());
    assert!(!stolen.stdout_text().contains("stolen"));

    let reasons = v.gh.audit_details("access_token_refused");
    assert!(
        reasons.iter().any(|r| r.contains("already used")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("expired")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("presented by `carol`")),
        "{reasons:?}"
    );
}

/// A self-signed P-256 certificate `DIR/NAME.pem` for `CN=NAME` and its key `DIR/NAME.key`.
fn openssl_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    self_signed(dir, name, name, &[])
}

/// Like [`openssl_cert`], for `CN=common_name` and with `extra` arguments (`-addext ...`).
fn self_signed(dir: &Path, name: &str, common_name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", &format!("/CN={common_name}")])
        .args(extra)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A2A: the registered certificate plus the API key retrieve the password; no certificate,
/// another certificate, a wrong key, a disallowed source, or the service switched off do not.
#[test]
fn a2a_retrieval_needs_the_pinned_certificate_the_key_and_an_allowed_source() {
    let v = Vault::start("req_a2a", |_| {});
    let dir = v.scratch.path();
    let (cert1, key1) = openssl_cert(dir, "app1");
    let (cert2, key2) = openssl_cert(dir, "app2");
    let target = v.target_spec();
    v.register_app("app1", &cert1, &["--allow", "127.0.0.0/8"]);
    v.register_app("far", &cert2, &["--allow", "10.0.0.0/8"]);
    let key_file = dir.join("app1.apikey");
    let api_key = v.add_a2a_key(&["app1", &target], &key_file);
    assert!(api_key.starts_with("gha2a_"), "{api_key}");
    let far_file = dir.join("far.apikey");
    v.add_a2a_key(&["far", &target], &far_file);
    // The key is stored hashed.
    assert!(support::files_containing(v.gh.data_dir(), api_key.as_bytes()).is_empty());

    let retrieve =
        |cert: &Path, key: &Path, key_file: &Path| v.as_app("retrieve", (cert, key), key_file, &[]);
    let ok = retrieve(&cert1, &key1, &key_file);
    assert!(ok.status.success(), "{}", ok.stderr_text());
    assert_eq!(ok.stdout_text().trim(), v.account.password);

    // A private key comes back in OpenSSH format, exactly as the vault holds it.
    let (vault_key, _) = support::generate_keypair(dir, "svc_key");
    v.gh.cli_ok(&[
        "account",
        "add",
        "svc@db1",
        "--key-file",
        vault_key.to_str().unwrap(),
    ]);
    let svc_key_file = dir.join("svc.apikey");
    v.add_a2a_key(&["app1", "svc@db1"], &svc_key_file);
    let key_out = retrieve(&cert1, &key1, &svc_key_file);
    assert!(key_out.status.success(), "{}", key_out.stderr_text());
    assert_eq!(
        key_out.stdout_text().trim(),
        std::fs::read_to_string(&vault_key).unwrap().trim()
    );
    assert!(
        key_out
            .stdout_text()
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
    );

    // Another certificate with the right key.
    let wrong_cert = retrieve(&cert2, &key2, &key_file);
    assert!(!wrong_cert.status.success());
    assert!(
        wrong_cert
            .stderr_text()
            .contains("A2A authentication failed"),
        "{}",
        wrong_cert.stderr_text()
    );
    // A wrong key with the right certificate.
    let bad_key_file = dir.join("bad.apikey");
    std::fs::write(&bad_key_file, "gha2a_0000").unwrap();
    assert!(!retrieve(&cert1, &key1, &bad_key_file).status.success());
    // No client certificate at all (curl).
    let (status, body) = v.curl(
        "GET",
        "/api/v1/a2a/credential",
        &[&format!("Authorization: A2A {api_key}")],
        None,
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    // A registration that only allows 10/8.
    assert!(!retrieve(&cert2, &key2, &far_file).status.success());

    // Service off: refused with a clear message; back on: works.
    v.gh.cli_ok(&["service", "disable", "a2a"]);
    let off = retrieve(&cert1, &key1, &key_file);
    assert!(
        off.stderr_text().contains("the a2a service is disabled"),
        "{}",
        off.stderr_text()
    );
    assert!(off.stderr_text().contains("503"));
    v.gh.cli_ok(&["service", "enable", "a2a"]);
    assert!(retrieve(&cert1, &key1, &key_file).status.success());

    let refusals = v.gh.audit_details("a2a_refused");
    for why in [
        "does not match the registration",
        "unknown A2A API key",
        "no client certificate",
        "is not allowed",
    ] {
        assert!(
            refusals.iter().any(|r| r.contains(why)),
            "no refusal `{why}` in {refusals:?}"
        );
    }
    // After the retrievals: neither the API key nor the password is in the log or the data dir.
    assert_in_no_data_file(&v, &[&api_key, &v.account.password]);
    let retrieved = v.gh.audit_of("a2a_retrieved").len();
    assert_eq!(retrieved, 3, "the password twice and the key once");
}

/// Malformed bodies, unknown ids, wrong and missing tokens, unknown endpoints and failed logins
/// get JSON 4xx errors and change nothing.
#[test]
fn api_bad_input_gets_json_errors_and_changes_nothing() {
    let v = Vault::start("req_bad", |_| {});
    let token = v.token("alice");
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let json_type = "Content-Type: application/json";
    let before = v.curl("GET", "/api/v1/requests", &[&bearer], None);
    assert_eq!(before.0, 200);

    // (method, path, headers, body, expected status, expected error code)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<&'a str>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    // Over the API's 64 KiB body limit.
    let too_big = format!("{{\"target\": \"{}\"}}", "x".repeat(70 * 1024));
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/v1/requests",
            vec![&bearer, json_type],
            Some("{\"target\": "),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/requests",
            vec![&bearer, json_type],
            Some(&too_big),
            413,
            "body_too_large",
        ),
        (
            "POST",
            "/api/v1/requests",
            vec![&bearer, json_type],
            Some("{\"target\": \"x@db1\", \"access\": \"session\", \"extra\": 1}"),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/api/v1/requests",
            vec![&bearer, json_type],
            Some("{\"target\": \"nope\", \"access\": \"session\"}"),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/requests",
            vec![&bearer, json_type],
            Some("{\"target\": \"x@db1\", \"access\": \"root\"}"),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/requests",
            vec![&bearer],
            Some("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            "GET",
            "/api/v1/requests/r-doesnotexist",
            vec![&bearer],
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/requests/r-doesnotexist/approve",
            vec![&bearer],
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/requests?state=bogus",
            vec![&bearer],
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/requests",
            vec!["Authorization: Bearer ght1.forged.sig"],
            None,
            401,
            "unauthorized",
        ),
        ("GET", "/api/v1/requests", vec![], None, 401, "unauthorized"),
        (
            "DELETE",
            "/api/v1/requests",
            vec![&bearer],
            None,
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/v1/nothing-here",
            vec![],
            None,
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/login",
            vec![json_type],
            Some("{\"user\": \"alice\"}"),
            422,
            "invalid_body",
        ),
    ];
    for (method, path, headers, body, status, code) in cases {
        let (got, value) = v.curl(method, path, &headers, body);
        assert_eq!(got, status, "{method} {path} {body:?}: {value}");
        assert_eq!(value["error"]["code"], code, "{method} {path}: {value}");
        assert_eq!(value["error"]["status"], status);
        assert!(!value["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        v.curl("GET", "/api/v1/requests", &[&bearer], None).1,
        before.1,
        "nothing changed"
    );

    // A token asked for 2 s expires after 2 s.
    let (status, short) = v.curl(
        "POST",
        "/api/v1/login",
        &[json_type],
        Some(&format!(
            "{{\"user\": \"alice\", \"password\": \"{PASSWORD}\", \"ttl_seconds\": 2}}"
        )),
    );
    assert_eq!(status, 200, "{short}");
    let short_bearer = format!("Authorization: Bearer {}", short["token"].as_str().unwrap());
    assert_eq!(
        v.curl("GET", "/api/v1/requests", &[&short_bearer], None).0,
        200
    );
    std::thread::sleep(Duration::from_secs(3));
    let (status, value) = v.curl("GET", "/api/v1/requests", &[&short_bearer], None);
    assert_eq!(status, 401);
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{value}"
    );

    // Failed logins are rate limited, with Retry-After, and audited.
    let mut last = 0;
    for _ in 0..7 {
        let (status, _) = v.curl(
            "POST",
            "/api/v1/login",
            &[json_type],
            Some("{\"user\": \"mallory\", \"password\": \"wrong\"}"),
        );
        last = status;
    }
    assert_eq!(last, 429);
    let failures = v.gh.audit_of("login_failed").len();
    assert!(failures >= 7, "{failures}");

    // The docs: the OpenAPI document and the page rendered from it.
    let (status, doc) = v.curl("GET", "/api/v1/openapi.json", &[], None);
    assert_eq!(status, 200);
    for path in [
        "/api/v1/requests/{id}/approve",
        "/api/v1/a2a/credential",
        "/api/v1/login",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    // A standard validator (openapi-spec-validator) accepts the document.
    let doc_file = v.gh.data_dir().join("openapi.json");
    std::fs::write(&doc_file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let validated = run(
        {
            let mut c = Command::new("python3");
            c.args(["-m", "openapi_spec_validator"]).arg(&doc_file);
            c
        },
        None,
        Duration::from_secs(60),
    );
    assert!(
        validated.status.success(),
        "the OpenAPI document fails openapi-spec-validator (install it: pip install openapi-spec-validator):\n{}{}",
        validated.stdout_text(),
        validated.stderr_text()
    );
    let (_, _, page) = support::curl(&v.gh, "GET", "/api/docs", &[], None);
    let html = String::from_utf8_lossy(&page);
    assert!(
        html.contains("<code>/api/v1/requests/{id}/checkin</code>"),
        "{html}"
    );
    assert!(html.contains("RequestView"));
}

/// A real SMTP server (aiosmtpd, Debian's python3-aiosmtpd) with STARTTLS, started by the test.
struct Smtp {
    child: std::process::Child,
    _stdin: std::process::ChildStdin,
    port: u16,
    outdir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    fn start(cert: &Path, key: &Path) -> Smtp {
        use std::io::BufRead;
        let python = python3();
        let outdir = tempfile::tempdir().unwrap();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../notify/tests/notify/smtp_server.py");
        let mut child = Command::new(&python)
            .arg(script)
            .arg("--outdir")
            .arg(outdir.path())
            .args(["--security", "starttls", "--cert"])
            .arg(cert)
            .arg("--key")
            .arg(key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python} (python3-aiosmtpd): {e}"));
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            !line.starts_with("MISSING"),
            "python3-aiosmtpd is not installed: apt-get install -y python3-aiosmtpd"
        );
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP server did not start: {line:?}"));
        Smtp {
            child,
            _stdin: stdin,
            port,
            outdir,
        }
    }

    fn messages(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.outdir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// The first message to `rcpt` whose subject or body contains `needle`, waiting up to 30 s.
    fn wait_for(&self, rcpt: &str, needle: &str) -> Value {
        poll(Duration::from_secs(30), || {
            self.messages().into_iter().find(|m| {
                m["rcpt_tos"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|a| a == rcpt))
                    && (m["headers"]["Subject"]
                        .as_str()
                        .is_some_and(|s| s.contains(needle))
                        || m["body"].as_str().is_some_and(|b| b.contains(needle)))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no mail to {rcpt} with `{needle}`; received: {:#?}",
                self.messages()
                    .iter()
                    .map(|m| (m["rcpt_tos"].clone(), m["headers"]["Subject"].clone()))
                    .collect::<Vec<_>>()
            )
        })
    }
}

/// Approvers are mailed when a request awaits them, the requester when it is approved, through
/// a real SMTP server over STARTTLS; deliveries are audited.
#[test]
fn approval_emails_reach_a_real_smtp_server_over_starttls() {
    let pki = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(
        pki.path(),
        "smtp",
        "localhost",
        &[
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
    );
    let smtp = Smtp::start(&cert, &key);
    let port = smtp.port;
    let ca = cert.clone();
    let v = Vault::start("req_mail", move |s| {
        s["mail"] = serde_json::json!({
            "host": "localhost",
            "port": port,
            "security": "starttls",
            "from": "Gatehouse <gatehouse@example.test>",
            "ca_file": ca,
            "gateway_url": "https://gatehouse.example.test",
        });
    });
    for u in ["alice", "carol", "dave"] {
        v.login(u);
    }
    let id = id_of(&v.request_ok(
        "alice",
        &create(&v.target_spec(), "password", "quarterly audit", &[]),
    ));
    let notified = poll(Duration::from_secs(20), || {
        v.gh.audit_of("notification").into_iter().next()
    });
    assert!(
        notified.as_ref().is_some_and(|e| {
            let detail = e["detail"].as_str().unwrap_or("");
            detail.contains("delivered to") && !detail.contains("not delivered")
        }),
        "{notified:?}\n{}",
        v.gh.log_tail(30)
    );
    for approver in ["carol@example.test", "dave@example.test"] {
        let mail = smtp.wait_for(approver, &id);
        assert_eq!(
            mail["tls"].as_str().map(|t| t.starts_with("TLS")),
            Some(true),
            "{mail}"
        );
        assert_eq!(
            mail["headers"]["From"],
            "Gatehouse <gatehouse@example.test>"
        );
        let body = mail["body"].as_str().unwrap();
        assert!(body.contains("quarterly audit"), "{body}");
        assert!(
            body.contains(&format!(
                "https://gatehouse.example.test/api/v1/requests/{id}"
            )),
            "{body}"
        );
        assert!(!body.contains(&v.account.password));
    }
    // Nobody mails the requester or mallory for approval.
    assert!(smtp.messages().iter().all(|m| {
        let to = m["rcpt_tos"].to_string();
        !to.contains("alice@") && !to.contains("mallory@")
    }));
    v.request_ok("carol", &["approve", &id]);
    v.request_ok("dave", &["approve", &id]);
    let approved = smtp.wait_for("alice@example.test", &id);
    let subject = approved["headers"]["Subject"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(subject.contains("approved"), "{subject}");
    assert!(approved["body"].as_str().unwrap().contains("dave"));
    let delivered = poll(Duration::from_secs(10), || {
        let n =
            v.gh.audit()
                .iter()
                .filter(|e| e["kind"] == "notification" && e["fields"]["request"] == id.as_str())
                .count();
        (n >= 3).then_some(n)
    });
    assert!(delivered.is_some(), "deliveries are audited");
}

/// Revocation ends a running session at once; a pending request expires at its deadline; a
/// break-glass (emergency) request is approved by policy without an approver.
#[test]
fn revocation_ends_the_session_expiry_ends_pending_requests_emergency_is_auto_approved() {
    let v = Vault::start("req_revoke", |s| {
        s["requests"]["approval_timeout_seconds"] = 3.into();
    });
    v.login("alice");
    v.login("carol");
    let target = v.target_spec();

    // Emergency: granted at once by the `break-glass` policy, no approver involved.
    let r = v.request_ok(
        "alice",
        &create(&target, "session", "outage", &["--emergency"]),
    );
    let id = id_of(&r);
    assert_eq!(r["state"], "available", "{r:#}");
    assert_eq!(r["granted_by"], serde_json::json!(["break-glass"]));

    // A session under it, revoked while it runs: the gateway disconnects it with the reason.
    let client = Client::password(v.gh.ssh_port(), format!("alice@{target}"), PASSWORD)
        .timeout(Duration::from_secs(120));
    let running = std::thread::spawn(move || client.ssh("echo started; sleep 60; echo finished"));
    let in_session = poll(Duration::from_secs(30), || {
        let r = v.request_ok("alice", &["show", &id]);
        (r["state"] == "checked_out").then_some(r)
    });
    assert!(in_session.is_some(), "the session never started");
    std::thread::sleep(Duration::from_secs(1));
    let revoked = v.request_ok("carol", &["revoke", &id, "--comment", "outage over"]);
    assert_eq!(revoked["state"], "revoked");
    let started = std::time::Instant::now();
    let out = running.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the session outlived its revocation"
    );
    assert!(out.stdout_text().contains("started"));
    assert!(
        !out.stdout_text().contains("finished"),
        "{}",
        out.stdout_text()
    );
    assert!(!out.status.success());
    let ended =
        v.gh.audit()
            .into_iter()
            .find(|e| e["kind"] == "session_ended" && e["fields"]["request"] == id.as_str());
    assert!(ended.is_some(), "the end is audited with the request");
    // Revoked is final.
    v.assert_refused("alice", &["checkin", &id], &["409"]);

    // A pending request nobody decides expires at its 3 s deadline.
    let p = id_of(&v.request_ok("alice", &create(&target, "password", "later", &[])));
    std::thread::sleep(Duration::from_secs(4));
    let expired = v.request_ok("alice", &["show", &p]);
    assert_eq!(expired["state"], "expired");
    assert_eq!(
        expired["end_note"],
        "no decision before the approval deadline"
    );
    v.assert_refused("carol", &["approve", &p], &["expired"]);
}

/// Services toggles: a disabled request service refuses new requests with a clear message and
/// lets granted ones be used; the A2A broker files requests for users under their own policy.
#[test]
fn disabled_services_refuse_new_work_and_the_broker_files_requests_for_users() {
    let v = Vault::start("req_svc", |_| {});
    v.login("alice");
    v.login("carol");
    v.login("dave");
    let target = v.target_spec();
    let id = id_of(&v.request_ok("alice", &create(&target, "password", "before", &[])));
    v.request_ok("carol", &["approve", &id]);
    v.request_ok("dave", &["approve", &id]);
    v.gh.cli_ok(&["service", "disable", "password-requests"]);
    v.assert_refused(
        "alice",
        &create(&target, "password", "after", &[]),
        &[
            "the password-requests service is disabled by an administrator",
            "503",
        ],
    );
    // Work already granted finishes.
    let secret = v.request_ok("alice", &["checkout", &id]);
    assert_eq!(secret["password"], v.account.password.as_str());
    // Other services are unaffected.
    v.request_ok("alice", &create(&target, "private_key", "k", &[]));
    let listed = v.gh.cli_json(&["service", "list", "--json"]);
    assert_eq!(listed["password-requests"], false);
    assert_eq!(listed["key-requests"], true);
    v.gh.cli_ok(&["service", "enable", "password-requests"]);

    // The broker: an application registered with --broker files a request for alice.
    let dir = v.scratch.path();
    let (cert, key) = openssl_cert(dir, "broker");
    v.register_app("itsm", &cert, &["--broker"]);
    let key_file = dir.join("broker.key.txt");
    v.add_a2a_key(&["itsm", "--broker"], &key_file);
    let file = |user: &str| {
        let request = [
            "--on-behalf-of",
            user,
            &target,
            "--access",
            "session",
            "--reason",
            "ticket CHG-9 from the ITSM",
        ];
        v.as_app("request", (&cert, &key), &key_file, &request)
    };
    let filed = file("alice");
    assert!(filed.status.success(), "{}", filed.stderr_text());
    let filed: Value = serde_json::from_slice(&filed.stdout).unwrap();
    assert_eq!(filed["origin"], "broker:itsm");
    assert_eq!(filed["requester"], "alice");
    assert_eq!(filed["state"], "pending_approval");
    // Mallory may not request, through a broker or not.
    let refused = file("mallory");
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr_text()
            .contains("unknown or you may not request"),
        "{}",
        refused.stderr_text()
    );
    // A credential key is not a broker key.
    let not_broker = v.gh.cli(&["a2a", "key-add", "itsm", &target]);
    assert!(not_broker.status.success());
}

/// A ticket given with a request is checked by the configured ticketing plugin (`rest-ticketing`,
/// built from plugins/, against a real HTTP server): a verified incident ticket lets the policy
/// approve at once; a closed or unknown ticket is refused and nothing is filed.
#[test]
fn tickets_on_requests_are_checked_by_the_ticketing_plugin() {
    let tickets = tempfile::tempdir().unwrap();
    let api = tickets.path().join("api/tickets");
    std::fs::create_dir_all(&api).unwrap();
    std::fs::write(api.join("INC-7"), r#"{"status":"open","assignee":"alice"}"#).unwrap();
    std::fs::write(api.join("INC-8"), r#"{"status":"closed"}"#).unwrap();
    let port = support::free_port();
    let mut server = Command::new(python3())
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(tickets.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    assert!(
        poll(Duration::from_secs(20), || support::port_open(port)
            .then_some(()))
        .is_some(),
        "the ticket server did not start"
    );
    let scratch = tempfile::tempdir().unwrap();
    let v = Vault::start_with(
        "req_ticket",
        |s| s["requests"]["ticketing_plugin"] = "rest-ticketing".into(),
        |gh| {
            gh.cli_ok(&[
                "plugin",
                "install",
                support::plugin_package("rest-ticketing").to_str().unwrap(),
            ]);
            let grants = scratch.path().join("grants.toml");
            std::fs::write(&grants, format!("http = [\"127.0.0.1:{port}\"]\n")).unwrap();
            gh.cli_ok(&[
                "plugin",
                "grant",
                "rest-ticketing",
                grants.to_str().unwrap(),
            ]);
            let config = scratch.path().join("config.toml");
            std::fs::write(
                &config,
                format!("endpoint = \"http://127.0.0.1:{port}/api\"\n"),
            )
            .unwrap();
            gh.cli_ok(&[
                "plugin",
                "config",
                "rest-ticketing",
                config.to_str().unwrap(),
            ]);
            gh.cli_ok(&["plugin", "enable", "rest-ticketing"]);
        },
    );
    v.login("alice");
    let target = v.target_spec();
    let verified = v.request_ok(
        "alice",
        &create(&target, "session", "db down", &["--ticket", "INC-7"]),
    );
    assert_eq!(verified["ticket_verified"], true, "{verified:#}");
    assert_eq!(verified["state"], "available");
    assert_eq!(
        verified["granted_by"],
        serde_json::json!(["verified-incident"])
    );
    let before = v.stored_requests();
    v.assert_refused(
        "alice",
        &create(&target, "session", "db down", &["--ticket", "INC-8"]),
        &["ticket `INC-8` was refused: ticket is `closed`"],
    );
    v.assert_refused(
        "alice",
        &create(&target, "session", "db down", &["--ticket", "INC-9"]),
        &["ticket `INC-9` was refused: no such ticket"],
    );
    assert_eq!(v.stored_requests(), before, "refused tickets file nothing");
    // Without a ticket the request goes to the approvers.
    let plain = v.request_ok("alice", &create(&target, "session", "x", &[]));
    assert_eq!(plain["ticket_verified"], false);
    assert_eq!(plain["state"], "pending_approval");
    let _ = server.kill();
    let _ = server.wait();
}
