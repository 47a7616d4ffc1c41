//! End to end: a real `xfreerdp` logs in to the real `gatehouse serve` over RDP as
//! `alice@target1@win1` with alice's gateway password; the gateway checks it (NTLM against the
//! vault-sealed NT hash, then the delegated password against argon2id), lets Cedar decide with
//! `protocol: "rdp"`, and logs in to a real NLA target (`freerdp-shadow-cli`) with the vault's
//! password, pinning the target's key on first use. Refusals are audited.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::time::Duration;
use support::rdp_peers::{Client, ShadowTarget, text};
use support::{Gatehouse, json_str};

const GATEWAY_USER: &str = "alice";
const GATEWAY_PASSWORD: &str = "Gateway-Pass-1";
const TARGET_ACCOUNT: &str = "target1";
const VAULT_PASSWORD: &str = "Vault-Pass-1";
const ASSET: &str = "win1";

fn login_name() -> String {
    format!("{GATEWAY_USER}@{TARGET_ACCOUNT}@{ASSET}")
}

/// A gateway with alice (password set, so she has an RDP secret), the asset `win1` whose RDP
/// endpoint is the shadow server (key trusted on first use) and `target1@win1` with the vault
/// password; granted when `grant`. Returns the grant id.
fn configure(gh: &Gatehouse, shadow: &ShadowTarget, grant: bool) -> Option<String> {
    gh.add_user_with_password(GATEWAY_USER, GATEWAY_PASSWORD);
    let rdp_port = shadow.port.to_string();
    gh.cli_ok(&[
        "asset",
        "add",
        ASSET,
        "--address",
        "127.0.0.1",
        "--tofu",
        "--rdp-port",
        &rdp_port,
    ]);
    gh.add_account_with_password(&format!("{TARGET_ACCOUNT}@{ASSET}"), VAULT_PASSWORD);
    if !grant {
        return None;
    }
    gh.grant_user(GATEWAY_USER, &format!("{TARGET_ACCOUNT}@{ASSET}"));
    Some(json_str(
        &gh.cli_json(&["grant", "list", "--json"])[0],
        "id",
    ))
}

fn policies(event: &Value) -> Vec<String> {
    event["fields"]["policies"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn wait_for(gh: &Gatehouse, kind: &str) -> Value {
    gh.wait_for_audit(0, kind, Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "no `{kind}` audit event; audit:\n{:#?}\n--- serve.log tail ---\n{}",
                gh.audit(),
                gh.log_tail(60)
            )
        })
}

#[test]
fn xfreerdp_logs_in_through_gatehouse_serve_with_the_vault_password_and_the_key_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    let mut gh = Gatehouse::init();
    let grant_id = configure(&gh, &shadow, true).unwrap();
    let user = gh.cli_json(&["user", "show", GATEWAY_USER, "--json"]);
    assert_eq!(user["rdp"], Value::Bool(true), "{user}");
    let listed = gh.cli_ok(&["asset", "list"]);
    assert!(
        listed.lines().next().unwrap_or_default().ends_with("RDP")
            && listed.contains(&format!("{} (tofu)", shadow.port)),
        "{listed}"
    );
    gh.serve();

    let client = Client::new(dir.path());
    let command = client.command(
        gh.rdp_port(),
        &login_name(),
        GATEWAY_PASSWORD,
        &["/sec:nla", "+auth-only"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp hung:\n{}", text(&output));
    assert!(
        output.status.success(),
        "xfreerdp +auth-only failed through gatehouse serve:\n{}\n--- serve.log tail ---\n{}",
        text(&output),
        gh.log_tail(60)
    );

    let login = wait_for(&gh, "login_ok");
    assert_eq!(json_str(&login, "user"), GATEWAY_USER);
    assert_eq!(login["fields"]["protocol"], "rdp", "{login}");
    let connected = wait_for(&gh, "target_connect_ok");
    assert_eq!(connected["fields"]["protocol"], "rdp", "{connected}");
    assert_eq!(policies(&connected), [format!("grant:{grant_id}")]);
    assert_eq!(
        json_str(&connected, "target"),
        format!("{TARGET_ACCOUNT}@{ASSET}")
    );

    // The target's key was trusted on first use: pinned on the asset, and audited.
    let pin = gatehouse_rdp::CertificatePin::of_certificate(&shadow.certificate())
        .unwrap()
        .to_string();
    let asset = gh.cli_json(&["asset", "show", ASSET, "--json"]);
    assert_eq!(
        asset["rdp"],
        serde_json::json!({"port": shadow.port, "certificate": {"mode": "pinned", "pin": pin}}),
        "{asset}"
    );
    let recorded = wait_for(&gh, "host_key_recorded");
    assert_eq!(recorded["fields"]["pin"], Value::String(pin.clone()));
    assert_eq!(connected["fields"]["certificate"], Value::String(pin));

    // The session was stored as an RDP session and ends (the auth-only client left).
    let ended = wait_for(&gh, "session_ended");
    assert_eq!(ended["fields"]["protocol"], "rdp", "{ended}");
    let sessions = gh.ended_sessions_of(GATEWAY_USER, 1);
    assert_eq!(json_str(&sessions[0], "protocol"), "rdp");
    let id = json_str(&sessions[0], "id");
    let pdus = gh.data_dir().join("recordings").join(&id).join("rdp.pdus");
    let bytes = std::fs::read(&pdus).unwrap_or_else(|e| panic!("{}: {e}", pdus.display()));
    assert!(bytes.starts_with(b"GHRDP1\n\0"), "{}", pdus.display());

    // (c) The wrong gateway password: NTLM fails, the client is told, the audit says why.
    let command = client.command(
        gh.rdp_port(),
        &login_name(),
        "not-the-gateway-password",
        &["/sec:nla", "+auth-only"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp hung:\n{}", text(&output));
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("ERRCONNECT_LOGON_FAILURE"),
        "{}",
        text(&output)
    );
    let failed = wait_for(&gh, "login_failed");
    assert_eq!(json_str(&failed, "user"), GATEWAY_USER);
    assert_eq!(failed["fields"]["protocol"], "rdp", "{failed}");
    assert!(
        json_str(&failed, "detail").contains("wrong password"),
        "{failed}"
    );
}

#[test]
fn a_user_without_a_grant_is_refused_over_rdp_and_the_denial_names_default_deny() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    let mut gh = Gatehouse::init();
    configure(&gh, &shadow, false);
    gh.serve();

    let client = Client::new(dir.path());
    // Without +auth-only: a HYBRID client learns of the refusal by the connection closing.
    let command = client.command(
        gh.rdp_port(),
        &login_name(),
        GATEWAY_PASSWORD,
        &["/sec:nla"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp hung:\n{}", text(&output));
    assert!(
        !output.status.success(),
        "xfreerdp got through without a grant:\n{}",
        text(&output)
    );
    let denied = wait_for(&gh, "access_denied");
    assert_eq!(json_str(&denied, "user"), GATEWAY_USER);
    assert_eq!(denied["fields"]["protocol"], "rdp", "{denied}");
    assert_eq!(policies(&denied), ["default-deny"]);
    let events = gh.audit();
    assert!(
        events.iter().all(|e| !matches!(
            json_str(e, "kind").as_str(),
            "target_connect_ok" | "target_connect_failed"
        )),
        "no target is dialed for a denied user: {events:#?}"
    );
    let asset = gh.cli_json(&["asset", "show", ASSET, "--json"]);
    assert_eq!(asset["rdp"]["certificate"]["mode"], "trust_on_first_use");
}

fn utf16(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// The records of an `rdp.pdus` file: (direction, framing, microseconds, bytes).
fn pdu_records(bytes: &[u8]) -> Vec<(u8, u8, u64, Vec<u8>)> {
    let mut rest = bytes.strip_prefix(b"GHRDP1\n\0").expect("the magic");
    let mut records = Vec::new();
    while !rest.is_empty() {
        let (header, tail) = rest.split_at(14);
        let at = u64::from_le_bytes(header[2..10].try_into().unwrap());
        let length = u32::from_le_bytes(header[10..14].try_into().unwrap()) as usize;
        records.push((header[0], header[1], at, tail[..length].to_vec()));
        rest = &tail[length..];
    }
    records
}

#[test]
fn a_held_session_is_relayed_and_recorded_without_either_password() {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    let mut gh = Gatehouse::init();
    configure(&gh, &shadow, true);
    gh.serve();
    let client = Client::on_display(dir.path(), &shadow.display);
    let command = client.command(
        gh.rdp_port(),
        &login_name(),
        GATEWAY_PASSWORD,
        &["/sec:nla", "/size:800x600", "-clipboard", "/audio-mode:2"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(8));
    assert!(
        killed,
        "xfreerdp ended on its own instead of holding the session:\n{}\n--- serve.log tail ---\n{}",
        text(&output),
        gh.log_tail(60)
    );
    let sessions = gh.ended_sessions_of(GATEWAY_USER, 1);
    let session = &sessions[0];
    assert_eq!(json_str(session, "protocol"), "rdp");
    let down = session["bytes_down"].as_u64().unwrap_or(0);
    assert!(down > 1_000, "the target sent {down} bytes: {session}");
    let id = json_str(session, "id");
    let bytes = std::fs::read(gh.data_dir().join("recordings").join(&id).join("rdp.pdus")).unwrap();
    let records = pdu_records(&bytes);
    let (direction, _, _, first) = &records[0];
    assert_eq!(
        (*direction, first[0]),
        (0, 3),
        "the MCS Connect Initial, in a TPKT"
    );
    let from_target: usize = records
        .iter()
        .filter(|(d, _, _, _)| *d == 1)
        .map(|(_, _, _, b)| b.len())
        .sum();
    assert_eq!(
        from_target as u64, down,
        "every byte from the target is recorded"
    );
    for secret in [GATEWAY_PASSWORD, VAULT_PASSWORD] {
        for needle in [secret.as_bytes().to_vec(), utf16(secret)] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "`{secret}` is in the recording"
            );
        }
    }
    let ended = wait_for(&gh, "session_ended");
    assert_eq!(
        ended["fields"]["bytes_down"].as_u64(),
        Some(down),
        "{ended}"
    );
}
