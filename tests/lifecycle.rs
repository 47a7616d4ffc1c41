//! End to end: the credential lifecycle against a real OpenSSH sshd and real local accounts.
//! Passwords are really changed (the old one fails with the real `ssh`, the vault's new one logs
//! in), SSH keys are really rotated in `~/.ssh/authorized_keys`, discovery lists the accounts the
//! test created, the scheduler in `gatehouse serve` fires, and a change killed with SIGKILL at
//! each point of the two-phase protocol ends, after reconcile, with a working secret in the vault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::ssh_client::Client;
use support::{Gatehouse, OutputExt, TargetSshd, TestAccount, generate_keypair, json_str, poll};

const ASSET: &str = "t1";

/// A target sshd that also reads `~/.ssh/authorized_keys`, and a Gatehouse with asset `t1`
/// pinned to its host key.
fn setup(accounts: &[TestAccount]) -> (TargetSshd, Gatehouse) {
    for account in accounts {
        account.ensure_exists();
        let _ = fs::remove_dir_all(account.home().join(".ssh"));
    }
    let target = TargetSshd::start_with_home_keys(accounts);
    let gh = Gatehouse::init();
    gh.add_asset(ASSET, target.port(), &target.host_key());
    (target, gh)
}

fn spec(account: &TestAccount) -> String {
    format!("{}@{ASSET}", account.name)
}

/// Whether the real `ssh` logs in to the target with this password.
fn password_logs_in(target: &TargetSshd, user: &str, password: &str) -> bool {
    let out = Client::password(target.port(), user, password).ssh("echo logged-in");
    out.status.success() && out.stdout_text().contains("logged-in")
}

fn key_logs_in(target: &TargetSshd, user: &str, key: &Path) -> bool {
    let out = Client::key(target.port(), user, key).ssh("echo logged-in");
    out.status.success() && out.stdout_text().contains("logged-in")
}

/// `account status TARGET --json`, the one row.
fn status(gh: &Gatehouse, target: &str) -> Value {
    let all = gh.cli_json(&["account", "status", target, "--json"]);
    all.as_array().unwrap()[0].clone()
}

/// The one row of a batch command's `--json` summary for `target`.
fn row(summary: &Value, target: &str) -> Value {
    summary
        .as_array()
        .unwrap()
        .iter()
        .find(|r| json_str(r, "target") == target)
        .unwrap_or_else(|| panic!("no row for {target} in {summary}"))
        .clone()
}

fn audit_of(gh: &Gatehouse, kind: &str) -> Vec<Value> {
    gh.audit()
        .into_iter()
        .filter(|e| json_str(e, "kind") == kind)
        .collect()
}

/// Asserts the vault's secret logs in (a real login by `account check`).
fn assert_vault_secret_works(gh: &Gatehouse, target: &str) {
    let summary = gh.cli_json(&["account", "check", target, "--json"]);
    assert_eq!(
        json_str(&row(&summary, target), "outcome"),
        "ok",
        "the vault's secret must log in: {summary}"
    );
}

/// Nothing the test fed in or the vault generated appears in the data directory in clear.
fn assert_not_in_data_dir(gh: &Gatehouse, secret: &str) {
    let hits = support::files_containing(gh.data_dir(), secret.as_bytes());
    assert!(hits.is_empty(), "secret found in clear in {hits:?}");
}

#[test]
fn check_then_change_a_password_as_the_account_itself() {
    let account = TestAccount::new("lcself");
    let (target, mut gh) = setup(std::slice::from_ref(&account));
    let target_spec = spec(&account);
    gh.add_account_with_password(&target_spec, &account.password);

    let checked = gh.cli_ok(&["account", "check", &target_spec]);
    assert!(checked.contains("ok"), "{checked}");
    assert!(checked.contains("password: ok"), "{checked}");

    let changed = gh.cli_json(&["account", "change", &target_spec, "--json"]);
    let r = row(&changed, &target_spec);
    assert_eq!(json_str(&r, "outcome"), "ok", "{changed}");
    assert!(json_str(&r, "detail").contains("password changed"), "{r}");

    // The old password no longer logs in with the real ssh client; the vault's new one does.
    assert!(!password_logs_in(&target, &account.name, &account.password));
    assert_vault_secret_works(&gh, &target_spec);
    let s = status(&gh, &target_spec);
    assert!(
        s["pending"].is_null(),
        "nothing pending after a commit: {s}"
    );
    assert_eq!(s["last_change"]["ok"], true, "{s}");

    // A session through the gateway uses the new committed password.
    gh.add_user_with_password("alice", "Gw-alice-pw-3Jd9xQ");
    gh.grant_user("alice", &target_spec);
    gh.serve();
    let out = Client::password(
        gh.ssh_port(),
        format!("alice@{target_spec}"),
        "Gw-alice-pw-3Jd9xQ",
    )
    .ssh("id -un");
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(out.stdout_text().trim(), account.name);

    let kinds: Vec<String> = gh.audit().iter().map(|e| json_str(e, "kind")).collect();
    for kind in [
        "credential_checked",
        "credential_change_started",
        "credential_changed",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} not audited: {kinds:?}"
        );
    }
    assert_not_in_data_dir(&gh, &account.password);
    let forms = support::secret_forms_in(gh.log_text().as_bytes(), &account.password);
    assert!(
        forms.is_empty(),
        "the rotated password is in the TRACE log as {forms:?}"
    );
}

#[test]
fn rotate_an_ssh_key_in_authorized_keys() {
    let account = TestAccount::new("lckey");
    let (target, gh) = setup(std::slice::from_ref(&account));
    let scratch = tempfile::tempdir().unwrap();
    let (old_key, old_public) = generate_keypair(scratch.path(), "old_key");
    let ssh_dir = account.home().join(".ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    let keys_file = ssh_dir.join("authorized_keys");
    fs::write(&keys_file, format!("{old_public}\n")).unwrap();
    let chown = |path: &Path| {
        let out = support::run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", &format!("{0}:{0}", account.name)]).arg(path);
                c
            },
            None,
            Duration::from_secs(10),
        );
        support::assert_success("chown", &out);
    };
    chown(&ssh_dir);
    assert!(key_logs_in(&target, &account.name, &old_key));

    let target_spec = spec(&account);
    gh.add_account_with_key(&target_spec, &old_key);
    let changed = gh.cli_json(&["account", "change", &target_spec, "--json"]);
    let r = row(&changed, &target_spec);
    assert_eq!(json_str(&r, "outcome"), "ok", "{changed}");
    assert!(json_str(&r, "detail").contains("SSH key rotated"), "{r}");

    // The old key is gone from authorized_keys and refused; a new Ed25519 key is there.
    let text = fs::read_to_string(&keys_file).unwrap();
    let old_blob = old_public.split_whitespace().nth(1).unwrap();
    assert!(!text.contains(old_blob), "old key still installed:\n{text}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].starts_with("ssh-ed25519 "), "{text}");
    assert!(
        lines[0].contains(&format!("gatehouse:{target_spec}:")),
        "{text}"
    );
    assert!(!key_logs_in(&target, &account.name, &old_key));
    assert_vault_secret_works(&gh, &target_spec);
    let mode = fs::metadata(&keys_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "authorized_keys mode");
}

/// A service account with sudo rights (its password asked by sudo).
fn service_account(tag: &str) -> TestAccount {
    assert!(
        Path::new("/usr/bin/sudo").exists(),
        "sudo is not installed: run scripts/install-test-deps.sh"
    );
    let svc = TestAccount::new(tag);
    svc.ensure_exists();
    let file = format!("/etc/sudoers.d/ghtest_{tag}");
    fs::write(&file, format!("{} ALL=(ALL:ALL) ALL\n", svc.name)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o440)).unwrap();
    svc
}

#[test]
fn service_account_changes_passwords_and_discovery_finds_accounts_and_keys() {
    let svc = service_account("lcsvc");
    let managed = TestAccount::new("lcmanaged");
    let found = TestAccount::new("lcfound");
    let (target, gh) = setup(&[svc.clone(), managed.clone(), found.clone()]);
    // `found` has a key in its own authorized_keys (readable only through sudo).
    let scratch = tempfile::tempdir().unwrap();
    let (_key, public) = generate_keypair(scratch.path(), "found_key");
    let ssh_dir = found.home().join(".ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    fs::write(ssh_dir.join("authorized_keys"), format!("{public}\n")).unwrap();
    fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(
        ssh_dir.join("authorized_keys"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out = support::run(
        {
            let mut c = Command::new("chown");
            c.args(["-R", &format!("{0}:{0}", found.name)])
                .arg(&ssh_dir);
            c
        },
        None,
        Duration::from_secs(10),
    );
    support::assert_success("chown", &out);

    gh.add_account_with_password(&spec(&svc), &svc.password);
    gh.cli_ok(&["account", "set", &spec(&svc), "--service-account"]);
    gh.add_account_with_password(&spec(&managed), &managed.password);
    gh.cli_ok(&[
        "profile",
        "add",
        "strict",
        "--length",
        "32",
        "--min-digit",
        "4",
    ]);
    gh.cli_ok(&["partition", "add", "linux", "--profile", "strict"]);
    gh.cli_ok(&["partition", "add-asset", "linux", ASSET]);

    // Through the service account: `sudo chpasswd`.
    let changed = gh.cli_json(&["account", "change", &spec(&managed), "--json"]);
    let r = row(&changed, &spec(&managed));
    assert_eq!(json_str(&r, "outcome"), "ok", "{changed}");
    assert!(
        json_str(&r, "detail").contains("service account `ghtest_lcsvc`"),
        "{r}"
    );
    assert!(!password_logs_in(&target, &managed.name, &managed.password));

    // Batch check over the partition: both accounts, summary table and JSON.
    let summary = gh.cli_json(&["account", "check", "--partition", "linux", "--json"]);
    assert_eq!(summary.as_array().unwrap().len(), 2, "{summary}");
    for t in [spec(&svc), spec(&managed)] {
        assert_eq!(json_str(&row(&summary, &t), "outcome"), "ok", "{summary}");
    }
    let table = gh.cli_ok(&["account", "check", "--all"]);
    assert!(table.starts_with("ACCOUNT"), "{table}");
    assert!(table.contains(&spec(&managed)), "{table}");

    // Discovery: the accounts the test created, with the key of `found`, unmanaged until managed.
    let report = gh.cli_json(&[
        "discover",
        "run",
        ASSET,
        "--include",
        "ghtest_lc*",
        "--json",
    ]);
    let accounts = report["accounts"].as_array().unwrap();
    let by_name = |n: &str| {
        accounts
            .iter()
            .find(|a| json_str(a, "name") == n)
            .unwrap_or_else(|| panic!("{n} not discovered: {report}"))
            .clone()
    };
    for a in [&svc, &managed, &found] {
        by_name(&a.name);
    }
    let f = by_name(&found.name);
    assert_eq!(f["managed"], false, "{f}");
    assert_eq!(f["keys_read"], true, "{f}");
    assert_eq!(f["keys"].as_array().unwrap().len(), 1, "{f}");
    assert_eq!(f["keys"][0]["comment"], "found_key", "{f}");
    assert_eq!(by_name(&managed.name)["managed"], true);
    let unmanaged = gh.cli_ok(&["discover", "list", "--unmanaged"]);
    assert!(unmanaged.contains(&spec(&found)), "{unmanaged}");

    // Manage it, and let the service account give it a fresh password.
    gh.cli_ok(&["discover", "manage", &spec(&found)]);
    let changed = gh.cli_json(&["account", "change", &spec(&found), "--json"]);
    assert_eq!(
        json_str(&row(&changed, &spec(&found)), "outcome"),
        "ok",
        "{changed}"
    );
    assert_vault_secret_works(&gh, &spec(&found));
    assert!(!password_logs_in(&target, &found.name, &found.password));
    let unmanaged = gh.cli_ok(&["discover", "list", "--unmanaged"]);
    assert!(!unmanaged.contains(&spec(&found)), "{unmanaged}");
    assert!(!audit_of(&gh, "accounts_discovered").is_empty());
    assert_not_in_data_dir(&gh, &svc.password);
}

/// Runs `account change` with the fault hook at `point`, waits for the marker, kills the
/// process with SIGKILL, and returns.
fn change_killed_at(gh: &Gatehouse, target: &str, point: &str) {
    let marker = gh.data_dir().join(format!("fault-{point}"));
    let mut cmd = gh.command();
    cmd.args(["account", "change", target])
        .env("GATEHOUSE_FAULT_PAUSE", point)
        .env("GATEHOUSE_FAULT_MARKER", &marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let reached = poll(Duration::from_secs(60), || marker.exists().then_some(()));
    if reached.is_none() {
        let _ = child.kill();
        panic!("the change never reached `{point}`");
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished");
}

#[test]
fn killed_after_the_target_change_reconcile_keeps_the_new_password() {
    let account = TestAccount::new("lcfault1");
    let (target, gh) = setup(std::slice::from_ref(&account));
    let target_spec = spec(&account);
    gh.add_account_with_password(&target_spec, &account.password);

    change_killed_at(&gh, &target_spec, "after-target-change");
    // The target really changed; the vault still has the old password committed and the new
    // one pending.
    assert!(!password_logs_in(&target, &account.name, &account.password));
    let s = status(&gh, &target_spec);
    assert_eq!(s["pending"]["kind"], "password", "{s}");

    let out = gh.cli_json(&["account", "reconcile", "--json"]);
    let r = row(&out, &target_spec);
    assert_eq!(json_str(&r, "outcome"), "ok", "{out}");
    assert!(
        json_str(&r, "detail").contains("kept the new password"),
        "{r}"
    );
    assert!(status(&gh, &target_spec)["pending"].is_null());
    assert_vault_secret_works(&gh, &target_spec);
    assert_eq!(audit_of(&gh, "credential_reconciled").len(), 1);
}

#[test]
fn killed_after_the_commit_the_new_password_is_already_committed() {
    let account = TestAccount::new("lcfault2");
    let (target, gh) = setup(std::slice::from_ref(&account));
    let target_spec = spec(&account);
    gh.add_account_with_password(&target_spec, &account.password);

    change_killed_at(&gh, &target_spec, "after-commit");
    assert!(!password_logs_in(&target, &account.name, &account.password));
    assert!(status(&gh, &target_spec)["pending"].is_null());
    let out = gh.cli_ok(&["account", "reconcile"]);
    assert!(out.contains("(none)"), "nothing to reconcile: {out}");
    assert_vault_secret_works(&gh, &target_spec);
}

#[test]
fn killed_before_the_target_change_reconcile_keeps_the_old_password() {
    let account = TestAccount::new("lcfault3");
    let (target, gh) = setup(std::slice::from_ref(&account));
    let target_spec = spec(&account);
    gh.add_account_with_password(&target_spec, &account.password);

    change_killed_at(&gh, &target_spec, "before-target-change");
    assert!(password_logs_in(&target, &account.name, &account.password));
    let out = gh.cli_json(&["account", "reconcile", &target_spec, "--json"]);
    let r = row(&out, &target_spec);
    assert_eq!(json_str(&r, "outcome"), "ok", "{out}");
    assert!(
        json_str(&r, "detail").contains("kept the stored password"),
        "{r}"
    );
    assert_vault_secret_works(&gh, &target_spec);
    assert!(password_logs_in(&target, &account.name, &account.password));
}

#[test]
fn serve_reconciles_an_interrupted_change_at_start_up() {
    let account = TestAccount::new("lcfault4");
    let (target, mut gh) = setup(std::slice::from_ref(&account));
    let target_spec = spec(&account);
    gh.add_account_with_password(&target_spec, &account.password);
    change_killed_at(&gh, &target_spec, "after-target-change");
    assert!(!password_logs_in(&target, &account.name, &account.password));

    gh.serve();
    let reconciled = gh.wait_for_audit(0, "credential_reconciled", Duration::from_secs(60));
    assert!(reconciled.is_some(), "{}", gh.log_tail(40));
    assert!(status(&gh, &target_spec)["pending"].is_null());
    assert_vault_secret_works(&gh, &target_spec);
}

#[test]
fn the_scheduler_changes_passwords_on_schedule() {
    let account = TestAccount::new("lcsched");
    let (target, mut gh) = setup(std::slice::from_ref(&account));
    let target_spec = spec(&account);
    gh.add_account_with_password(&target_spec, &account.password);
    gh.cli_ok(&[
        "profile", "add", "fast", "--change", "every 3s", "--check", "every 2s",
    ]);
    gh.cli_ok(&["partition", "add", "p1", "--profile", "fast"]);
    gh.cli_ok(&["partition", "add-asset", "p1", ASSET]);

    let since = gh.audit().len();
    gh.serve();
    let changed = gh.wait_for_audit(since, "credential_changed", Duration::from_secs(60));
    let changed = changed.unwrap_or_else(|| panic!("no scheduled change:\n{}", gh.log_tail(60)));
    assert_eq!(json_str(&changed, "user"), "scheduler");
    assert!(
        json_str(&changed, "detail").contains("(schedule)"),
        "{changed}"
    );
    assert!(
        gh.wait_for_audit(since, "credential_checked", Duration::from_secs(30))
            .is_some()
    );
    assert!(!password_logs_in(&target, &account.name, &account.password));
    assert_vault_secret_works(&gh, &target_spec);
}

#[test]
fn change_after_checkin_happens_after_a_release() {
    let account = TestAccount::new("lccheckin");
    let (target, mut gh) = setup(std::slice::from_ref(&account));
    let target_spec = spec(&account);
    gh.add_account_with_password(&target_spec, &account.password);
    gh.serve();

    // Without the flag a check-in changes nothing.
    let out = gh.cli_ok(&["account", "checked-in", &target_spec]);
    assert!(out.contains("no change follows"), "{out}");

    gh.cli_ok(&[
        "account",
        "set",
        &target_spec,
        "--change-after-checkin",
        "true",
    ]);
    let since = gh.audit().len();
    let out = gh.cli_ok(&["account", "checked-in", &target_spec]);
    assert!(out.contains("change is due"), "{out}");
    let changed = gh.wait_for_audit(since, "credential_changed", Duration::from_secs(60));
    let changed =
        changed.unwrap_or_else(|| panic!("no change after check-in:\n{}", gh.log_tail(60)));
    assert!(
        json_str(&changed, "detail").contains("(check-in)"),
        "{changed}"
    );
    let s = status(&gh, &target_spec);
    assert!(s["change_due"].is_null(), "cleared on commit: {s}");
    assert!(!password_logs_in(&target, &account.name, &account.password));
    assert_vault_secret_works(&gh, &target_spec);
}

#[test]
fn failures_are_clear_and_lose_nothing() {
    let svc = service_account("lcbadsvc");
    let account = TestAccount::new("lcfail");
    let (target, gh) = setup(&[svc.clone(), account.clone()]);
    let target_spec = spec(&account);
    gh.add_account_with_password(&target_spec, &account.password);

    // A password rule that cannot be met is refused before anything is stored.
    let out = gh.cli(&[
        "profile",
        "add",
        "bad",
        "--length",
        "8",
        "--min-digit",
        "6",
        "--min-symbol",
        "3",
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains(
            "the password rule cannot be met: the minimum counts add up to 11 characters, more than the length 8"
        ),
        "{}",
        out.describe()
    );
    let out = gh.cli(&["profile", "add", "bad2", "--exclude", "0123456789"]);
    assert!(
        out.stderr_text()
            .contains("every digit character is excluded"),
        "{}",
        out.describe()
    );

    // A service account whose vault password is wrong: clear error, target untouched.
    gh.add_account_with_password(&spec(&svc), "not-the-password");
    gh.cli_ok(&["account", "set", &spec(&svc), "--service-account"]);
    let out = gh.cli(&["account", "change", &target_spec]);
    assert!(!out.status.success());
    let text = out.stdout_text();
    assert!(
        text.contains("service account `ghtest_lcbadsvc@t1` cannot log in"),
        "{}",
        out.describe()
    );
    assert!(text.contains("the target was not changed"), "{text}");
    assert!(
        out.stderr_text()
            .contains("1 of 1 account(s) did not succeed")
    );
    assert!(status(&gh, &target_spec)["pending"].is_null());
    assert!(password_logs_in(&target, &account.name, &account.password));
    assert_vault_secret_works(&gh, &target_spec);

    // An unreachable target: clear error, nothing pending, the stored password kept.
    let down_port = support::free_port().to_string();
    gh.cli_ok(&[
        "asset",
        "add",
        "down1",
        "--address",
        "127.0.0.1",
        "--port",
        &down_port,
        "--host-key",
        &target.host_key(),
    ]);
    let down_spec = format!("{}@down1", account.name);
    gh.add_account_with_password(&down_spec, &account.password);
    let out = gh.cli(&["account", "change", &down_spec]);
    assert!(!out.status.success());
    assert!(
        out.stdout_text().contains("cannot connect to 127.0.0.1:"),
        "{}",
        out.describe()
    );
    assert!(status(&gh, &down_spec)["pending"].is_null());
    let out = gh.cli(&["account", "check", &down_spec, "--json"]);
    assert_eq!(
        out.code(),
        Some(1),
        "a failed check exits 1: {}",
        out.describe()
    );
    let summary: Value = serde_json::from_str(&out.stdout_text()).unwrap();
    let r = row(&summary, &down_spec);
    assert_eq!(json_str(&r, "outcome"), "failed", "{summary}");
    assert!(json_str(&r, "detail").contains("cannot connect"), "{r}");

    // A target whose host key is not the pinned one is refused before any login.
    let scratch = tempfile::tempdir().unwrap();
    let (_, other_host_key) = generate_keypair(scratch.path(), "impostor");
    let port = target.port().to_string();
    gh.cli_ok(&[
        "asset",
        "add",
        "impostor",
        "--address",
        "127.0.0.1",
        "--port",
        &port,
        "--host-key",
        &support::key_type_and_blob(&other_host_key),
    ]);
    let impostor_spec = format!("{}@impostor", account.name);
    gh.add_account_with_password(&impostor_spec, &account.password);
    let out = gh.cli(&["account", "change", &impostor_spec]);
    assert!(!out.status.success());
    assert!(
        out.stdout_text().contains("host key mismatch"),
        "{}",
        out.describe()
    );
    assert!(status(&gh, &impostor_spec)["pending"].is_null());
    assert!(password_logs_in(&target, &account.name, &account.password));

    // Disabled services refuse new runs with a clear message.
    for service in ["check", "change", "discovery"] {
        gh.cli_ok(&["service", "disable", service]);
    }
    let out = gh.cli(&["account", "change", &target_spec]);
    assert!(
        out.stdout_text().contains(
            "the change service is disabled: an administrator turned it off, so no new change runs start"
        ),
        "{}",
        out.describe()
    );
    let out = gh.cli(&["account", "check", &target_spec]);
    assert!(
        out.stdout_text().contains("the check service is disabled"),
        "{}",
        out.describe()
    );
    let out = gh.cli(&["discover", "run", ASSET]);
    assert!(
        out.stderr_text()
            .contains("the discovery service is disabled"),
        "{}",
        out.describe()
    );
    for service in ["check", "change", "discovery"] {
        gh.cli_ok(&["service", "enable", service]);
    }
    assert!(password_logs_in(&target, &account.name, &account.password));

    // Unknown account and a missing selection.
    let out = gh.cli(&["account", "check", "nobody@t1"]);
    assert!(
        out.stderr_text()
            .contains("account `nobody@t1` does not exist"),
        "{}",
        out.describe()
    );
    let out = gh.cli(&["account", "check"]);
    assert!(
        out.stderr_text()
            .contains("give `ACCOUNT@ASSET`, `--partition NAME` or `--all`"),
        "{}",
        out.describe()
    );
    assert!(!audit_of(&gh, "credential_change_failed").is_empty());
}
