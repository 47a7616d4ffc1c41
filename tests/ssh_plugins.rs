//! End to end: AA plugins in the SSH login. A real `ssh` logs in through `gatehouse serve` with
//! the TOTP plugin (code in the username, or asked through keyboard-interactive), the ticket
//! plugin asks for a ticket, and Cedar sees which plugins authenticated the user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};
use support::ssh_client::{Client, assert_client_ok};
use support::world::{ASSET, GATEWAY_PASSWORD, GATEWAY_USER, World};
use support::{Gatehouse, OutputExt, json_str, plugin_package};

/// alice's TOTP seed, base32 ("12345678901234567890", the RFC 6238 test key).
const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const KEY: &[u8] = b"12345678901234567890";

fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let inner: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x36)
        .chain(message.iter().copied())
        .collect();
    let inner_hash = Sha1::digest(&inner);
    let outer: Vec<u8> = block
        .iter()
        .map(|b| b ^ 0x5c)
        .chain(inner_hash.iter().copied())
        .collect();
    Sha1::digest(&outer).to_vec()
}

/// The RFC 6238 code for now (6 digits, 30 s steps).
fn totp_now() -> String {
    let step = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 30;
    let mac = hmac_sha1(KEY, &step.to_be_bytes());
    let offset = (mac[19] & 0x0f) as usize;
    let value = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    format!("{:06}", value % 1_000_000)
}

fn install(gh: &Gatehouse, scratch: &std::path::Path, name: &str, grants: &str) {
    gh.cli_ok(&["plugin", "install", plugin_package(name).to_str().unwrap()]);
    let file = scratch.join(format!("{name}-grants.toml"));
    std::fs::write(&file, grants).unwrap();
    gh.cli_ok(&["plugin", "grant", name, file.to_str().unwrap()]);
    gh.cli_ok(&["plugin", "enable", name]);
}

fn login_events(gh: &Gatehouse, kind: &str) -> Vec<serde_json::Value> {
    gh.audit()
        .into_iter()
        .filter(|e| json_str(e, "kind") == kind)
        .collect()
}

#[test]
fn totp_code_in_the_username_is_checked_once_and_cedar_sees_the_factor() {
    let w = World::builder("plg_totp")
        .setup(|ctx| {
            ctx.gh
                .cli_stdin_ok(&["plugin-secret", "set", "totp-seed/alice"], SEED);
            install(ctx.gh, ctx.scratch, "totp-mfa", "secrets = [\"totp-seed/*\"]\n");
            // Sessions need the second factor, whatever the grants say.
            std::fs::write(
                ctx.gh.data_dir().join("policies/mfa.cedar"),
                "@id(\"sessions-need-totp\")\nforbid (principal, action in Action::\"session\", resource)\nunless { context.authenticated_with.contains(\"totp-mfa\") };\n",
            )
            .unwrap();
        })
        .start();
    let code = totp_now();
    let login = format!("otp={code}@{}", w.login());
    let ok = w
        .client_as(&login, GATEWAY_PASSWORD)
        .ssh("echo second-factor-ok");
    assert_client_ok("right code", &ok);
    assert_eq!(ok.stdout_text(), "second-factor-ok\n");
    let logged_in = login_events(&w.gh, "login_ok").pop().unwrap();
    assert_eq!(
        logged_in["fields"]["plugins"],
        serde_json::json!(["totp-mfa"]),
        "{logged_in}"
    );

    // The same code again, within its window: refused, and the audit says why.
    let replay = w
        .client_as(&login, GATEWAY_PASSWORD)
        .ssh("echo must-not-run");
    assert!(!replay.status.success(), "{}", replay.describe());
    assert!(!replay.stdout_text().contains("must-not-run"));
    let failed = login_events(&w.gh, "login_failed").pop().unwrap();
    assert!(
        json_str(&failed, "detail")
            .contains("plugin `totp-mfa` denied: one-time code already used"),
        "{failed}"
    );

    // A wrong code.
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    let wrong = w
        .client_as(&format!("otp={wrong_code}@{}", w.login()), GATEWAY_PASSWORD)
        .ssh("echo must-not-run");
    assert!(!wrong.status.success(), "{}", wrong.describe());
    let failed = login_events(&w.gh, "login_failed").pop().unwrap();
    assert!(
        json_str(&failed, "detail").contains("plugin `totp-mfa` denied"),
        "{failed}"
    );
}

#[test]
fn totp_question_is_asked_through_keyboard_interactive() {
    let w = World::builder("plg_ask")
        .setup(|ctx| {
            ctx.gh
                .cli_stdin_ok(&["plugin-secret", "set", "totp-seed/alice"], SEED);
            install(
                ctx.gh,
                ctx.scratch,
                "totp-mfa",
                "secrets = [\"totp-seed/*\"]\n",
            );
        })
        .start();
    let code = totp_now();
    let client = Client::password_with_answers(
        w.gh.ssh_port(),
        w.login(),
        GATEWAY_PASSWORD,
        &[("One-time code", &code)],
    );
    let ok = client.ssh("echo asked-and-answered");
    assert_client_ok("code given at the prompt", &ok);
    assert!(
        client.prompts_seen().contains("One-time code"),
        "{}",
        client.prompts_seen()
    );

    // Without seeding another user, the plugin denies: no seed, no login.
    w.gh.cli_stdin_ok(&["user", "add", "bob", "--password-stdin"], "bob-pw-1");
    w.gh.cli_ok(&["grant", "add", "--user", "bob", &w.target_spec()]);
    let bob = Client::password_with_answers(
        w.gh.ssh_port(),
        format!("bob@{}", w.target_spec()),
        "bob-pw-1",
        &[("One-time code", &code)],
    )
    .ssh("echo must-not-run");
    assert!(!bob.status.success(), "{}", bob.describe());
    let _ = GATEWAY_USER;
    let _ = ASSET;
}

#[test]
fn ticket_question_is_asked_and_checked() {
    let w = World::builder("plg_ticket")
        .setup(|ctx| install(ctx.gh, ctx.scratch, "ticket-required", ""))
        .start();
    let good = Client::password_with_answers(
        w.gh.ssh_port(),
        w.login(),
        GATEWAY_PASSWORD,
        &[("Ticket", "INC123456")],
    );
    let ok = good.ssh("echo ticketed");
    assert_client_ok("a well-formed ticket", &ok);
    assert!(
        good.prompts_seen().contains("Ticket number"),
        "{}",
        good.prompts_seen()
    );
    let logged_in = login_events(&w.gh, "login_ok").pop().unwrap();
    assert!(logged_in.to_string().contains("INC123456"), "{logged_in}");

    // The ticket in the username: no question.
    let inline = w
        .client_as(&format!("ticket=CHG654321@{}", w.login()), GATEWAY_PASSWORD)
        .ssh("echo inline-ticket");
    assert_client_ok("ticket= pair", &inline);

    let bad = Client::password_with_answers(
        w.gh.ssh_port(),
        w.login(),
        GATEWAY_PASSWORD,
        &[("Ticket", "lunch")],
    )
    .ssh("echo must-not-run");
    assert!(!bad.status.success(), "{}", bad.describe());
    let failed = login_events(&w.gh, "login_failed").pop().unwrap();
    assert!(
        json_str(&failed, "detail").contains("plugin `ticket-required` denied"),
        "{failed}"
    );
}
