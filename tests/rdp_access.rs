//! End to end: how an RDP session gets its permit besides a grant, with real `xfreerdp`
//! through the real `gatehouse serve` to a real NLA target (`freerdp-shadow-cli`):
//! an `.rdp` file from an approved request (single use; revoking the request ends the session),
//! a connection held until its request is approved, an AA plugin answered from the user name
//! (`otp=<code>@...`), and the target password from a credential-store plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::Duration;
use support::rdp_peers::{Client, ShadowTarget, text};
use support::totp::{SEED, totp_now};
use support::{ApiUsers, Gatehouse, json_str, poll};

const PASSWORD: &str = "Rdp-user-pw-5Kd9";
const ACCOUNT: &str = "target1";
const VAULT_PASSWORD: &str = "Vault-Pass-1";
const ASSET: &str = "win1";

const POLICY: &str = r#"
@id("dbas-may-request")
permit (principal in Group::"dbas", action == Action::"request_access", resource in AssetGroup::"prod");

@id("security-reviews")
permit (principal in Group::"security-approvers", action in Action::"review", resource is AccessRequest);

@id("no-self-review")
forbid (principal, action in Action::"review", resource is AccessRequest)
when { resource.requester == principal };

@id("sessions-need-one")
permit (principal, action == Action::"grant_request", resource is AccessRequest)
when { resource.requester == principal && resource.access == "session" && context.approvals >= 1 };
"#;

struct Setup {
    gh: Gatehouse,
    shadow: ShadowTarget,
    dir: tempfile::TempDir,
}

impl Setup {
    /// alice (dbas) and carol (security-approvers), the asset `win1` in `prod` whose RDP
    /// endpoint is the shadow server, `target1@win1` with the vault password, the request
    /// policy; `setup` runs before `serve`.
    fn start(setup: impl FnOnce(&Gatehouse, &Path)) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let shadow = ShadowTarget::start(dir.path(), ACCOUNT, VAULT_PASSWORD);
        let mut gh = Gatehouse::init();
        gh.cli_ok(&["group", "add", "dbas"]);
        gh.cli_ok(&["group", "add", "security-approvers"]);
        gh.cli_ok(&["asset-group", "add", "prod"]);
        for (user, group) in [("alice", "dbas"), ("carol", "security-approvers")] {
            gh.cli_stdin_ok(
                &["user", "add", user, "--password-stdin", "--group", group],
                &format!("{PASSWORD}\n"),
            );
        }
        gh.add_rdp_asset(ASSET, shadow.port, &["--group", "prod"]);
        gh.add_account_with_password(&spec(), VAULT_PASSWORD);
        std::fs::write(gh.data_dir().join("policies/requests.cedar"), POLICY).unwrap();
        gh.edit_settings(|s| s["requests"] = serde_json::json!({}));
        setup(&gh, dir.path());
        gh.serve();
        Setup { gh, shadow, dir }
    }

    fn api(&self) -> ApiUsers<'_> {
        ApiUsers {
            gh: &self.gh,
            dir: self.dir.path().to_path_buf(),
            password: PASSWORD.to_string(),
        }
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        self.gh
            .audit()
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    fn wait_for(&self, kind: &str, matching: impl Fn(&Value) -> bool) -> Value {
        poll(Duration::from_secs(60), || {
            self.events(kind).into_iter().find(|e| matching(e))
        })
        .unwrap_or_else(|| {
            panic!(
                "no matching `{kind}` audit event; audit:\n{:#?}\n--- serve.log tail ---\n{}",
                self.gh.audit(),
                self.gh.log_tail(60)
            )
        })
    }

    /// A full session on the target's screen (not `+auth-only`: a HYBRID client only learns
    /// of a refusal after NLA when the connection closes).
    fn session_client(&self) -> Client {
        Client::on_display(self.dir.path(), &self.shadow.display)
    }
}

fn spec() -> String {
    format!("{ACCOUNT}@{ASSET}")
}

fn assert_refused(what: &str, (output, killed): &(Output, bool)) {
    assert!(!killed, "{what}: xfreerdp hung:\n{}", text(output));
    assert!(
        !output.status.success(),
        "{what}: xfreerdp got through:\n{}",
        text(output)
    );
}

#[test]
fn an_rdp_file_from_an_approved_request_works_once_and_revoking_the_request_ends_the_session() {
    let s = Setup::start(|_, _| {});
    let api = s.api();
    api.login("alice");
    api.login("carol");
    let created = api.request_ok("alice", &["create", &spec(), "--reason", "patch tuesday"]);
    let id = json_str(&created, "id");
    api.request_ok("carol", &["approve", &id]);

    // The .rdp file: the gateway's RDP address, the token in the user name, no password.
    let file = s.dir.path().join("win1.rdp");
    let issued = api.request_ok(
        "alice",
        &["access-string", &id, "--rdp-file", file.to_str().unwrap()],
    );
    let content = std::fs::read_to_string(&file).unwrap();
    assert_eq!(issued["rdp_file"].as_str(), Some(content.as_str()));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the .rdp file holds a token");
    assert!(
        content.contains(&format!("full address:s:127.0.0.1:{}\r\n", s.gh.rdp_port())),
        "{content}"
    );
    let username = content
        .lines()
        .find_map(|l| l.strip_prefix("username:s:"))
        .unwrap()
        .trim_end();
    assert!(
        username.starts_with("access=") && username.ends_with(&format!("@alice@{}", spec())),
        "{username}"
    );
    assert!(!content.contains(VAULT_PASSWORD) && !content.contains(PASSWORD));

    // First use: alice's own gateway password; the session runs under the request.
    let client = Client::new(s.dir.path());
    let first = client.run(
        client.command_file(&file, PASSWORD, &["/sec:nla", "+auth-only"]),
        Duration::from_secs(60),
    );
    assert!(
        first.0.status.success(),
        "xfreerdp with the .rdp file failed:\n{}\n--- serve.log tail ---\n{}",
        text(&first.0),
        s.gh.log_tail(60)
    );
    let connected = s.wait_for("target_connect_ok", |e| {
        e["fields"]["request"] == id.as_str()
    });
    assert_eq!(connected["fields"]["protocol"], "rdp", "{connected}");
    assert_eq!(
        connected["fields"]["policies"],
        serde_json::json!([format!("approved:{id}")])
    );

    // Second use of the same file: refused, and the audit trail says the token was used.
    let again = client.run(
        client.command_file(&file, PASSWORD, &["/sec:nla"]),
        Duration::from_secs(60),
    );
    assert_refused("a used token", &again);
    let refused = s.wait_for("access_token_refused", |_| true);
    assert!(json_str(&refused, "detail").contains("used"), "{refused}");

    // A fresh file for a full session; revoking the request ends it.
    let issued = api.request_ok(
        "alice",
        &["access-string", &id, "--rdp-file", file.to_str().unwrap()],
    );
    assert!(issued["rdp_file"].is_string());
    let on_screen = s.session_client();
    let command = on_screen.command_file(&file, PASSWORD, &["/sec:nla", "/size:800x600"]);
    let running = std::thread::spawn(move || on_screen.run(command, Duration::from_secs(90)));
    let started = s.wait_for("target_connect_ok", |e| {
        e["fields"]["request"] == id.as_str() && e["session"] != connected["session"]
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !running.is_finished(),
        "the session ended before the revocation"
    );
    api.request_ok("carol", &["revoke", &id]);
    let ended = s.wait_for("session_ended", |e| {
        e["session"] == started["session"] && json_str(e, "detail").contains("revoked")
    });
    assert_eq!(ended["fields"]["request"], id.as_str(), "{ended}");
    let (output, killed) = running.join().unwrap();
    assert!(
        !killed,
        "the client stayed connected after the revocation:\n{}",
        text(&output)
    );
}

#[test]
fn an_rdp_connection_without_a_permit_files_a_request_and_is_held_until_approved() {
    let s = Setup::start(|_, _| {});
    let api = s.api();
    api.login("carol");
    let client = s.session_client();
    let login = format!("reason=disk full@alice@{}", spec());
    let command = client.command(
        s.gh.rdp_port(),
        &login,
        PASSWORD,
        &["/sec:nla", "/size:800x600"],
    );
    let waiting = std::thread::spawn(move || client.run(command, Duration::from_secs(30)));
    let pending = poll(Duration::from_secs(60), || {
        let list = api.request_ok("carol", &["list", "--state", "pending_approval"]);
        list["requests"].as_array().and_then(|a| a.first().cloned())
    })
    .expect("the held connection filed a request");
    let id = json_str(&pending, "id");
    assert_eq!(pending["origin"], "rdp");
    assert_eq!(pending["reason"], "disk full");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !waiting.is_finished(),
        "xfreerdp gave up before the approval"
    );
    assert!(
        s.events("target_connect_ok").is_empty(),
        "no target is dialed before the approval"
    );
    api.request_ok("carol", &["approve", &id]);
    let connected = s.wait_for("target_connect_ok", |e| {
        e["fields"]["request"] == id.as_str()
    });
    assert_eq!(
        connected["fields"]["policies"],
        serde_json::json!([format!("approved:{id}")])
    );
    let (output, killed) = waiting.join().unwrap();
    assert!(
        killed,
        "the approved session should have run until the test ended it:\n{}\n--- serve.log tail ---\n{}",
        text(&output),
        s.gh.log_tail(60)
    );
    let shown = api.request_ok("carol", &["show", &id]);
    assert_eq!(shown["state"], "checked_out", "{shown}");
}

#[test]
fn an_aa_plugin_is_answered_from_the_rdp_user_name_and_the_password_can_come_from_a_plugin() {
    let (kv_port, seen) = support::kv_server(ASSET, ACCOUNT, VAULT_PASSWORD);
    let s = Setup::start(|gh, scratch| {
        gh.cli_stdin_ok(&["plugin-secret", "set", "totp-seed/alice"], SEED);
        gh.install_plugin(scratch, "totp-mfa", "secrets = [\"totp-seed/*\"]\n", None);
        std::fs::write(
            gh.data_dir().join("policies/totp.cedar"),
            "@id(\"sessions-need-totp\")\nforbid (principal, action in Action::\"session\", resource)\nunless { context.authenticated_with.contains(\"totp-mfa\") };\n",
        )
        .unwrap();
        // The target password from a Vault-KV-shaped store, nothing in Gatehouse's vault.
        gh.cli_ok(&["account", "remove", &spec()]);
        gh.cli_ok(&[
            "account",
            "add",
            &spec(),
            "--credential-plugin",
            "http-credstore",
        ]);
        gh.cli_stdin_ok(&["plugin-secret", "set", "vault-token"], "s.test-token");
        gh.install_plugin(
            scratch,
            "http-credstore",
            &format!("http = [\"127.0.0.1:{kv_port}\"]\nsecrets = [\"vault-token\"]\n"),
            Some(&format!("address = \"http://127.0.0.1:{kv_port}\"\n")),
        );
        gh.grant_user("alice", &spec());
    });
    let client = s.session_client();

    // Without the code: the plugin's question cannot be asked over RDP; the audit says how.
    let command = client.command(
        s.gh.rdp_port(),
        &format!("alice@{}", spec()),
        PASSWORD,
        &["/sec:nla"],
    );
    assert_refused(
        "no TOTP code",
        &client.run(command, Duration::from_secs(60)),
    );
    let failed = s.wait_for("login_failed", |_| true);
    assert!(
        json_str(&failed, "detail").contains(&format!(
            "give it in the user name as `otp=<answer>@alice@{}`",
            spec()
        )),
        "{failed}"
    );
    assert!(s.events("target_connect_ok").is_empty());

    // With the code in the user name: the plugin accepts, Cedar sees the factor, and the
    // target accepts the password the credential store gave.
    let login = format!("otp={}@alice@{}", totp_now(), spec());
    let command = client.command(
        s.gh.rdp_port(),
        &login,
        PASSWORD,
        &["/sec:nla", "/size:800x600"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(10));
    assert!(
        killed,
        "the session should have run until the test ended it:\n{}\n--- serve.log tail ---\n{}",
        text(&output),
        s.gh.log_tail(60)
    );
    let ok = s.wait_for("login_ok", |_| true);
    assert_eq!(
        ok["fields"]["plugins"],
        serde_json::json!(["totp-mfa"]),
        "{ok}"
    );
    assert_eq!(ok["fields"]["protocol"], "rdp");
    s.wait_for("target_connect_ok", |_| true);
    let paths = seen.lock().unwrap().clone();
    assert!(
        paths.contains(&format!("/v1/secret/data/gatehouse/{ASSET}/{ACCOUNT}")),
        "{paths:?}"
    );
    let shown = s.gh.cli_json(&["account", "show", &spec(), "--json"]);
    assert_eq!(shown["password"], false, "{shown}");
}
