//! End to end: gateway users from a real OpenLDAP slapd (Debian's, seeded with nested groups,
//! over LDAPS with its CA pinned). A directory user logs in over SSH with their directory
//! password and gets a session through a Cedar policy on a group they are in only through
//! nesting; a user outside it is refused; after they are taken out of the group in the
//! directory, `directory sync` takes the access away; with the directory down, its users read a
//! clear line and local users still log in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::json;
use std::time::Duration;
use support::slapd::{DANA, ERIN, SERVICE_DN, SUFFIX, Slapd};
use support::ssh_client::assert_client_ok;
use support::world::World;
use support::{OutputExt, poll};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn directory_users_log_in_by_their_ldap_password_and_groups_decide_with_nesting() {
    let mut slapd = Slapd::start();
    let url = format!("ldaps://127.0.0.1:{}", slapd.ldaps_port);
    let ca = slapd.ca();
    let password_file = slapd.service_password_file();
    let mut w = World::builder("dir")
        .setup(move |ctx| {
            ctx.gh.edit_settings(|settings| {
                settings["directory"] = json!({
                    "url": url,
                    "ca_file": ca,
                    "bind_dn": SERVICE_DN,
                    "bind_password_file": password_file,
                    "user_base": format!("ou=people,{SUFFIX}"),
                    "group_base": format!("ou=groups,{SUFFIX}"),
                    "cache_ttl": "1h",
                    "sync_every": "1h",
                });
            });
            // Sessions on the account for the directory group `ops`, which dana is in only
            // because `dbas` is in `ops`.
            std::fs::write(
                ctx.gh.data_dir().join("policies/directory.cedar"),
                format!(
                    "@id(\"ops-reach-db1\")\npermit (principal in Group::\"ops\", action == Action::\"ssh_session\", resource == Account::\"{}@db1\");\n",
                    ctx.account.name
                ),
            )
            .unwrap();
        })
        .start();
    let target = w.target_spec();
    let as_user =
        |(name, password): (&str, &str)| w.client_as(&format!("{name}@{target}"), password);

    // dana: her directory password, a group through nesting, a session.
    let out = as_user(DANA).ssh("echo from-the-directory");
    assert_client_ok("dana through the directory", &out);
    assert!(out.stdout_text().contains("from-the-directory"));
    let user = w.gh.cli_json(&["user", "show", DANA.0, "--json"]);
    assert_eq!(user["groups"], json!(["dbas"]), "{user:#}");
    assert_eq!(user["email"], "dana@example.org", "{user:#}");
    assert_eq!(user["rdp"], true, "her NT hash is kept for RDP: {user:#}");
    let groups = w.gh.cli_ok(&["group", "list"]);
    for group in ["dbas", "ops", "staff"] {
        assert!(groups.contains(group), "{groups}");
    }
    let connected =
        w.gh.audit_of("target_connect_ok")
            .into_iter()
            .find(|e| e["user"] == DANA.0)
            .expect("dana's session");
    assert_eq!(connected["fields"]["policies"], json!(["ops-reach-db1"]));

    // Her wrong password, an empty one, a name the directory does not know: refused.
    for (name, password) in [(DANA.0, "not-her-password"), ("zoe", "whatever-1")] {
        let out = as_user((name, password)).ssh("true");
        assert!(!out.status.success(), "{name}: {}", out.describe());
    }
    let failed: Vec<String> =
        w.gh.audit_of("login_failed")
            .iter()
            .map(|e| e["detail"].as_str().unwrap_or_default().to_string())
            .collect();
    assert!(
        failed
            .iter()
            .any(|d| d.contains("wrong password for `dana`")),
        "{failed:#?}"
    );
    assert!(
        failed.iter().any(|d| d.contains("unknown user `zoe`")),
        "{failed:#?}"
    );

    // erin is in the directory, in `staff` only: she logs in, policy gives her nothing.
    let out = as_user(ERIN).ssh("true");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not permitted"), "{}", out.describe());
    assert!(
        w.gh.audit_of("login_ok")
            .iter()
            .any(|e| e["user"] == ERIN.0),
        "erin's login"
    );

    // `directory show`: what the directory says now.
    let shown = w.gh.cli_ok(&["directory", "show", DANA.0]);
    assert!(
        shown.contains(&format!("uid=dana,ou=people,{SUFFIX}")),
        "{shown}"
    );
    assert!(shown.contains("nested  dbas, ops, staff"), "{shown}");

    // dana leaves `dbas` in the directory: after a sync she has no way into `ops`.
    // (groupOfNames needs a member: the service entry stands in)
    slapd.modify(&format!(
        "dn: cn=dbas,ou=groups,{SUFFIX}\nchangetype: modify\nreplace: member\nmember: {SERVICE_DN}\n"
    ));
    let synced = w.gh.cli_ok(&["directory", "sync"]);
    assert!(synced.contains("dana left dbas"), "{synced}");
    let out = as_user(DANA).ssh("true");
    assert!(!out.status.success(), "{}", out.describe());
    assert!(stderr(&out).contains("not permitted"), "{}", out.describe());
    let changes = w.gh.audit_of("admin_change");
    assert!(
        changes
            .iter()
            .any(|e| e["fields"]["directory_sync"] == true && e["user"] == DANA.0),
        "{changes:#?}"
    );

    // A key an administrator registered for dana works while the directory has her; once
    // she is deleted there and a sync notices, the key is refused too.
    let keys = tempfile::tempdir().unwrap();
    let (private, _public) = support::generate_keypair(keys.path(), "dana_key");
    let public_file = format!("{}.pub", private.display());
    w.gh.cli_ok(&["user", "add-key", DANA.0, &public_file]);
    let by_key =
        support::ssh_client::Client::key(w.gh.ssh_port(), format!("{}@{target}", DANA.0), &private);
    let out = by_key.ssh("true");
    assert!(stderr(&out).contains("not permitted"), "{}", out.describe());
    slapd.modify(&format!(
        "dn: uid=dana,ou=people,{SUFFIX}\nchangetype: delete\n"
    ));
    let synced = w.gh.cli_ok(&["directory", "sync"]);
    assert!(
        synced.contains("dana is no longer in the directory"),
        "{synced}"
    );
    let out = by_key.ssh("true");
    assert!(!out.status.success());
    assert!(
        !stderr(&out).contains("not permitted"),
        "refused at login, not by policy: {}",
        out.describe()
    );
    assert!(
        w.gh.audit_of("login_failed").iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no longer in the directory"))),
        "the refusal says why"
    );

    // The directory goes down: its users read why; local users are not held up.
    slapd.stop();
    let out = as_user(DANA).ssh("true");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the user directory cannot be reached"),
        "{}",
        out.describe()
    );
    let out = w.client().ssh("echo local-user-fine");
    assert_client_ok("alice with the directory down", &out);
    let unavailable = poll(Duration::from_secs(10), || {
        w.gh.audit_of("login_failed").into_iter().find(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("directory unavailable"))
        })
    });
    assert!(unavailable.is_some(), "the outage is audited");
    let out = w.gh.cli(&["directory", "sync"]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("cannot be reached"),
        "{}",
        out.describe()
    );

    // Back up: dana's access stays as the directory says (no `ops`), erin logs in again.
    slapd.restart();
    let out = as_user(ERIN).ssh("true");
    assert!(stderr(&out).contains("not permitted"), "{}", out.describe());
    assert!(!slapd.log().contains(DANA.1), "a password in slapd's log");
    // The gateway logs at TRACE in the tests (ldap3's own log records included): no directory
    // password in it, in any form.
    for secret in [DANA.1, ERIN.1, support::slapd::SERVICE_PASSWORD] {
        let forms = support::secret_forms_in(w.gh.log_text().as_bytes(), secret);
        assert!(
            forms.is_empty(),
            "`{secret}` in the gateway's log as {forms:?}"
        );
    }

    // StartTLS on the plain port works the same; a CA the directory's certificate does not
    // chain to is refused (run here, without the server: the settings are read now).
    w.gh.stop_server();
    let edit = |url: String, starttls: bool, ca: &std::path::Path| {
        w.gh.edit_settings(|settings| {
            settings["directory"]["url"] = json!(url);
            settings["directory"]["starttls"] = json!(starttls);
            settings["directory"]["ca_file"] = json!(ca);
        });
    };
    edit(
        format!("ldap://127.0.0.1:{}", slapd.ldap_port),
        true,
        &slapd.ca(),
    );
    let shown = w.gh.cli_ok(&["directory", "show", ERIN.0]);
    assert!(
        shown.contains(&format!("uid=erin,ou=people,{SUFFIX}")),
        "{shown}"
    );
    edit(
        format!("ldap://127.0.0.1:{}", slapd.ldap_port),
        false,
        &slapd.ca(),
    );
    let out = w.gh.cli(&["directory", "show", ERIN.0]);
    assert!(
        out.stderr_text()
            .contains("would send passwords in the clear"),
        "{}",
        out.describe()
    );
    edit(
        format!("ldaps://127.0.0.1:{}", slapd.ldaps_port),
        false,
        std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"),
    );
    let out = w.gh.cli(&["directory", "show", ERIN.0]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("cannot be reached")
            && out.stderr_text().contains("certificate"),
        "{}",
        out.describe()
    );
}
