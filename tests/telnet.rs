//! End to end: the stock `telnet` client through `gatehouse serve`'s Telnet listener to a real
//! `in.telnetd` (tests/support/telnetd.rs). The user logs in to the gateway in-band
//! (`alice@ACCOUNT@tn1`, then the gateway password); the gateway logs in to the target by
//! answering its prompts with the vault's password, which the user never sees; the session is
//! recorded as asciicast like SSH's, searchable, and decided by Cedar (`telnet_session`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::telnetd::{Telnetd, telnet_client};
use support::world::{GATEWAY_PASSWORD, GATEWAY_USER, World};
use support::{OutputExt, free_port, json_str, poll, port_open};

const LONG: Duration = Duration::from_secs(30);
/// What the user reads when a target is unknown or not theirs: the same either way.
const NOT_PERMITTED: &str = "is unknown or you are not permitted to use it";

/// A gateway with Telnet on (settings.json), and a Telnet target `tn1` whose one account is the
/// world's target account with the vault's password, granted to alice.
fn telnet_world(tag: &str) -> (World, Telnetd, u16) {
    let port = free_port();
    let w = World::builder(tag)
        .setup(move |ctx| {
            ctx.gh.edit_settings(|s| {
                s["telnet"] = json!({"enabled": true, "listen": format!("127.0.0.1:{port}")});
            });
            support::recordings::add_supervisor(ctx.gh);
        })
        .start();
    assert!(
        poll(LONG, || port_open(port).then_some(())).is_some(),
        "the Telnet port did not open:\n{}",
        w.gh.log_text()
    );
    let telnetd = Telnetd::start(&w.account.name, w.vault_password());
    w.gh.cli_ok(&[
        "asset",
        "add",
        "tn1",
        "--address",
        "127.0.0.1",
        "--tofu",
        "--telnet-port",
        &telnetd.address.port().to_string(),
        "--telnet-success",
        r"target\$$",
    ]);
    let spec = format!("{}@tn1", w.account.name);
    w.gh.add_account_with_password(&spec, w.vault_password());
    w.gh.grant_user(GATEWAY_USER, &spec);
    (w, telnetd, port)
}

/// Types `text` and Enter (the client sends CR as the line end).
fn type_line(session: &mut support::ssh_client::PtySession, text: &str) {
    session.send_raw(format!("{text}\r").as_bytes());
}

/// Logs in to the gateway as `login` with `password`; the session as far as the gateway's
/// answer.
fn log_in(port: u16, login: &str, password: &str) -> support::ssh_client::PtySession {
    let mut session = telnet_client(port);
    session.expect("login: ", LONG);
    type_line(&mut session, login);
    session.expect("Password: ", LONG);
    type_line(&mut session, password);
    session
}

/// One refused login: the client is told `line` and the connection closes.
fn refused(port: u16, login: &str, password: &str, line: &str) -> String {
    let mut session = log_in(port, login, password);
    session.expect(line, LONG);
    let outcome = session.wait(LONG);
    outcome.stdout
}

#[test]
fn a_telnet_login_reaches_the_target_with_the_vault_password_recorded_and_searchable() {
    let (w, _telnetd, port) = telnet_world("telnet_ok");
    let login = format!("{GATEWAY_USER}@{}@tn1", w.account.name);
    let mut session = log_in(port, &login, GATEWAY_PASSWORD);
    session.expect("target$ ", LONG);
    type_line(&mut session, "echo via-telnet-$((6*7))");
    session.expect("via-telnet-42", LONG);
    type_line(&mut session, "exit");
    let outcome = session.wait(LONG);
    let screen = outcome.stdout.clone();
    // The user's terminal reached the target: its type and its size.
    assert!(screen.contains("TERM=vt220 SIZE=33 111"), "{screen}");
    // Nothing of the target's login conversation is shown: not its prompts, not the password.
    assert!(!screen.contains("target1 login:"), "{screen}");
    assert!(!screen.contains("Welcome to the test target"), "{screen}");

    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    let record = &sessions[0];
    assert_eq!(json_str(record, "protocol"), "telnet", "{record}");
    assert_eq!(json_str(record, "asset"), "tn1", "{record}");
    assert_eq!(json_str(record, "account"), w.account.name, "{record}");
    assert!(record["bytes_down"].as_u64().unwrap() > 0, "{record}");
    let id = json_str(record, "id");
    for kind in ["login_ok", "target_connect_ok", "session_ended"] {
        let events: Vec<Value> =
            w.gh.audit_of(kind)
                .into_iter()
                .filter(|e| e["fields"]["protocol"] == "telnet")
                .collect();
        assert!(!events.is_empty(), "no {kind} for the Telnet session");
    }

    // Played back like an SSH session, at the client's size; found by what it showed.
    let played = w.gh.cli_ok(&["session", "play", &id]);
    assert!(played.contains("via-telnet-42"), "{played}");
    let cast = std::fs::read_to_string(
        w.gh.data_dir()
            .join("recordings")
            .join(&id)
            .join("channel-0.cast"),
    )
    .unwrap();
    let header: Value = serde_json::from_str(cast.lines().next().unwrap()).unwrap();
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(111), Some(33))
    );
    let hits = poll(LONG, || {
        let out =
            w.gh.cli_ok(&["session", "search", "via-telnet-42", "--json"]);
        let hits: Vec<Value> = serde_json::from_str(&out).unwrap();
        (!hits.is_empty()).then_some(hits)
    })
    .expect("the Telnet session was not indexed");
    assert_eq!(hits[0]["session"], id.as_str());

    // Neither password anywhere: not on the user's screen, in the recording or in the logs.
    w.assert_no_secret_leaks(&[&screen]);
    assert!(!cast.contains(w.vault_password()));
    assert!(!cast.contains(GATEWAY_PASSWORD));
}

#[test]
fn telnet_refusals_are_one_line_and_do_not_tell_which_targets_exist() {
    let (w, _telnetd, port) = telnet_world("telnet_no");
    let login = format!("{GATEWAY_USER}@{}@tn1", w.account.name);

    // A wrong password and an unknown user read the same.
    refused(port, &login, "wrong-password-1", "gatehouse: access denied");
    refused(
        port,
        &format!("nobody@{}@tn1", w.account.name),
        GATEWAY_PASSWORD,
        "gatehouse: access denied",
    );
    let failed = w.gh.audit_of("login_failed");
    assert!(
        failed
            .iter()
            .filter(|e| e["fields"]["protocol"] == "telnet")
            .count()
            >= 2,
        "{failed:?}"
    );

    // An unknown asset and an existing account alice may not use read the same.
    w.gh.add_account_with_password("root@tn1", "not-used-pw-1");
    for target in ["root@nosuch", "root@tn1"] {
        let seen = refused(
            port,
            &format!("{GATEWAY_USER}@{target}"),
            GATEWAY_PASSWORD,
            NOT_PERMITTED,
        );
        assert!(
            seen.contains(&format!("target `{target}` {NOT_PERMITTED}")),
            "{seen}"
        );
    }

    // The vault's password no longer works on the target: the user is told, the trail has
    // what the target said.
    w.gh.add_account_with_password("stale@tn1", "an-old-password-2");
    w.gh.grant_user(GATEWAY_USER, "stale@tn1");
    refused(
        port,
        &format!("{GATEWAY_USER}@stale@tn1"),
        GATEWAY_PASSWORD,
        "refused the vault's credential",
    );
    let failures = w.gh.audit_of("target_connect_failed");
    assert!(
        failures
            .iter()
            .any(|e| json_str(e, "detail").contains("Login incorrect")),
        "{failures:?}"
    );

    // Cedar decides Telnet on its own: forbidding `telnet_session` refuses the Telnet login
    // and leaves SSH to the same account alone.
    std::fs::write(
        w.gh.data_dir().join("policies/no-telnet.cedar"),
        "@id(\"no-telnet\")\nforbid (principal, action == Action::\"telnet_session\", resource);\n",
    )
    .unwrap();
    let explained = poll(LONG, || {
        let out = w.gh.cli_ok(&[
            "policy",
            "explain",
            "--user",
            GATEWAY_USER,
            "--target",
            &format!("{}@tn1", w.account.name),
            "--action",
            "telnet_session",
        ]);
        out.contains("no-telnet").then_some(out)
    })
    .expect("the policy was not loaded");
    assert!(explained.to_lowercase().contains("deny"), "{explained}");
    refused(port, &login, GATEWAY_PASSWORD, NOT_PERMITTED);
    let denied = w.gh.audit_of("access_denied");
    assert!(
        denied.iter().any(|e| e["fields"]["protocol"] == "telnet"
            && e["fields"]["policies"].to_string().contains("no-telnet")),
        "{denied:?}"
    );
    let ssh = w.client().ssh("echo still-by-ssh");
    assert!(ssh.status.success(), "{}", ssh.describe());
    assert!(
        w.gh.sessions()
            .iter()
            .all(|s| json_str(s, "protocol") != "telnet")
    );
}

#[test]
fn a_running_telnet_session_is_ended_by_an_administrator() {
    let (w, _telnetd, port) = telnet_world("telnet_end");
    let login = format!("{GATEWAY_USER}@{}@tn1", w.account.name);
    let mut session = log_in(port, &login, GATEWAY_PASSWORD);
    session.expect("target$ ", LONG);
    let id = poll(LONG, || {
        w.gh.sessions()
            .into_iter()
            .find(|s| s["ended"].is_null())
            .map(|s| json_str(&s, "id"))
    })
    .expect("the running session is listed");

    // Watched live over the API (the player's live view): the terminal so far, then what
    // follows, as an asciicast stream; the watch is audited.
    let sam = support::api_bearer(
        &w.gh,
        support::recordings::SUPERVISOR,
        support::recordings::SUPERVISOR_PASSWORD,
    );
    let (mut stream, body) =
        support::curl_stream(&w.gh, &format!("/api/v1/sessions/{id}/live"), &sam, 20);
    poll(LONG, || {
        w.gh.audit_of("session_joined")
            .into_iter()
            .find(|e| e["fields"]["protocol"] == "telnet" && json_str(e, "session") == id)
    })
    .expect("the watch is audited");
    session.send_raw(b"echo watched-live-$((9*9))\r");
    let text = poll(LONG, || {
        let text = std::fs::read_to_string(body.path()).unwrap_or_default();
        text.contains("watched-live-81").then_some(text)
    })
    .expect("the live stream shows the session's terminal");
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{text}");
    assert!(
        text.contains("target$ "),
        "the screen so far comes first: {text}"
    );
    let _ = stream.kill();
    let _ = stream.wait();
    let left = poll(LONG, || {
        w.gh.audit_of("session_left")
            .into_iter()
            .find(|e| e["fields"]["protocol"] == "telnet")
    })
    .expect("the watcher's leaving is audited");
    assert_eq!(json_str(&left, "user"), GATEWAY_USER, "{left}");

    w.gh.cli_ok(&[
        "session",
        "terminate",
        &id,
        "--reason",
        "maintenance window",
    ]);
    session.expect("ended this session: maintenance window", LONG);
    let outcome = session.wait(LONG);
    assert!(
        outcome.stdout.contains("gatehouse: an administrator"),
        "{}",
        outcome.describe()
    );
    let ended = poll(LONG, || {
        w.gh.audit_of("session_ended")
            .into_iter()
            .find(|e| e["fields"]["reason"] == "maintenance window")
    })
    .expect("the end is audited with its reason");
    assert_eq!(ended["fields"]["protocol"], "telnet");
}

#[test]
fn telnet_is_off_unless_turned_on() {
    let w = World::start("telnet_off");
    let settings: Value = serde_json::from_str(
        &std::fs::read_to_string(w.gh.data_dir().join("settings.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(settings["telnet"]["enabled"], false, "{settings:#}");
    assert!(
        w.gh.log_text().contains("Telnet disabled"),
        "{}",
        w.gh.log_text()
    );
}

#[test]
fn a_plugin_question_is_asked_in_band_and_cedar_sees_the_second_factor() {
    let port = free_port();
    let w = World::builder("telnet_otp")
        .setup(move |ctx| {
            ctx.gh.edit_settings(|s| {
                s["telnet"] = json!({"enabled": true, "listen": format!("127.0.0.1:{port}")});
            });
            ctx.gh.cli_stdin_ok(
                &["plugin-secret", "set", &format!("totp-seed/{GATEWAY_USER}")],
                support::totp::SEED,
            );
            ctx.gh
                .install_plugin(ctx.scratch, "totp-mfa", "secrets = [\"totp-seed/*\"]\n", None);
            // Sessions need the second factor, whatever the grants say.
            std::fs::write(
                ctx.gh.data_dir().join("policies/mfa.cedar"),
                "@id(\"sessions-need-totp\")\nforbid (principal, action in Action::\"session\", resource)\nunless { context.authenticated_with.contains(\"totp-mfa\") };\n",
            )
            .unwrap();
        })
        .start();
    assert!(poll(LONG, || port_open(port).then_some(())).is_some());
    let telnetd = Telnetd::start(&w.account.name, w.vault_password());
    w.gh.cli_ok(&[
        "asset",
        "add",
        "tn1",
        "--address",
        "127.0.0.1",
        "--tofu",
        "--telnet-port",
        &telnetd.address.port().to_string(),
        "--telnet-success",
        r"target\$$",
    ]);
    let spec = format!("{}@tn1", w.account.name);
    w.gh.add_account_with_password(&spec, w.vault_password());
    w.gh.grant_user(GATEWAY_USER, &spec);

    let mut session = log_in(port, &format!("{GATEWAY_USER}@{spec}"), GATEWAY_PASSWORD);
    session.expect("One-time code: ", LONG);
    let code = support::totp::totp_now();
    type_line(&mut session, &code);
    session.expect("target$ ", LONG);
    type_line(&mut session, "exit");
    let outcome = session.wait(LONG);
    assert!(
        !outcome.stdout.contains(&code),
        "the code was echoed: {}",
        outcome.stdout
    );
    let logged_in =
        w.gh.audit_of("login_ok")
            .into_iter()
            .find(|e| e["fields"]["protocol"] == "telnet")
            .expect("the Telnet login is audited");
    assert_eq!(
        logged_in["fields"]["plugins"],
        json!(["totp-mfa"]),
        "{logged_in}"
    );

    // The same code again: refused in one line.
    let mut again = log_in(port, &format!("{GATEWAY_USER}@{spec}"), GATEWAY_PASSWORD);
    again.expect("One-time code: ", LONG);
    type_line(&mut again, &code);
    again.expect("access denied: a plugin refused this login", LONG);
    let _ = again.wait(LONG);
}
