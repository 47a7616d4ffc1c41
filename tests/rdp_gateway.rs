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
use support::recordings::{
    SUPERVISOR, SUPERVISOR_PASSWORD, add_auditor, add_supervisor, auditor_bearer, get,
};
use support::{Gatehouse, OutputExt, json_str};

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
    gh.add_rdp_asset(ASSET, shadow.port, &[]);
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

/// A shadow target in a fresh temp dir and a gateway [`configure`]d for it, not yet serving
/// (tests add to it first); returns the grant id when `grant`.
fn gateway(grant: bool) -> (tempfile::TempDir, ShadowTarget, Gatehouse, Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let shadow = ShadowTarget::start(dir.path(), TARGET_ACCOUNT, VAULT_PASSWORD);
    let gh = Gatehouse::init();
    let grant_id = configure(&gh, &shadow, grant);
    (dir, shadow, gh, grant_id)
}

/// xfreerdp `+auth-only` as alice with `password`: its output, once it ended by itself.
fn auth_only(client: &Client, gh: &Gatehouse, password: &str) -> std::process::Output {
    let command = client.command(
        gh.rdp_port(),
        &login_name(),
        password,
        &["/sec:nla", "+auth-only"],
    );
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp hung:\n{}", text(&output));
    output
}

/// The UTF-8 and UTF-16LE forms of `secret`, as they could stand in a recording.
fn secret_needles(secret: &str) -> [Vec<u8>; 2] {
    let utf16 = secret
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    [secret.as_bytes().to_vec(), utf16]
}

/// `GET /api/v1/sessions/{id}/video` with `bearer`.
fn get_video(gh: &Gatehouse, bearer: &str, id: &str) -> (u16, String, Vec<u8>) {
    get(gh, bearer, &format!("/api/v1/sessions/{id}/video"))
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
    let (dir, shadow, mut gh, grant_id) = gateway(true);
    let grant_id = grant_id.unwrap();
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
    let output = auth_only(&client, &gh, GATEWAY_PASSWORD);
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
    let output = auth_only(&client, &gh, "not-the-gateway-password");
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
    let (dir, _shadow, mut gh, _) = gateway(false);
    gh.serve();

    let client = Client::new(dir.path());
    // Without +auth-only: a HYBRID client learns of the refusal after NLA, from the error info
    // the gateway sends it (see the tests below).
    refused_xfreerdp(&client, &gh, &login_name());
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

/// xfreerdp's exit code when the connection failed before it was active (`XF_EXIT_CONN_FAILED`
/// in FreeRDP 2.11, whatever the error info said); a dropped connection is 147,
/// `XF_EXIT_CONNECT_TRANSPORT_FAILED`.
const XF_EXIT_CONN_FAILED: i32 = 131;

/// The FreeRDP error names (`ERRINFO_*`, `ERRCONNECT_*`) in xfreerdp's output, sorted.
fn freerdp_errors(output: &str) -> Vec<String> {
    let mut names: Vec<String> = output
        .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
        .filter(|w| w.starts_with("ERRINFO_") || w.starts_with("ERRCONNECT_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// xfreerdp (a full session, not `+auth-only`) as `login`: its output and exit code once the
/// gateway refused it.
fn refused_xfreerdp(client: &Client, gh: &Gatehouse, login: &str) -> (String, Option<i32>) {
    let command = client.command(gh.rdp_port(), login, GATEWAY_PASSWORD, &["/sec:nla"]);
    let (output, killed) = client.run(command, Duration::from_secs(60));
    assert!(!killed, "xfreerdp as `{login}` hung:\n{}", text(&output));
    assert!(
        !output.status.success(),
        "xfreerdp as `{login}` got through:\n{}",
        text(&output)
    );
    (text(&output), output.status.code())
}

#[test]
fn an_unknown_target_and_a_forbidden_one_show_xfreerdp_the_same_error_info() {
    let (dir, _shadow, mut gh, _) = gateway(false);
    gh.serve();
    let client = Client::new(dir.path());

    let (forbidden, forbidden_code) = refused_xfreerdp(&client, &gh, &login_name());
    let unknown_login = format!("{GATEWAY_USER}@{TARGET_ACCOUNT}@no-such-asset");
    let (unknown, unknown_code) = refused_xfreerdp(&client, &gh, &unknown_login);
    for (what, output, code) in [
        ("a target without a grant", &forbidden, forbidden_code),
        ("an unknown target", &unknown, unknown_code),
    ] {
        assert_eq!(
            freerdp_errors(output),
            ["ERRINFO_SERVER_INSUFFICIENT_PRIVILEGES"],
            "{what}: xfreerdp is told it may not, and nothing else:\n{output}"
        );
        assert_eq!(code, Some(XF_EXIT_CONN_FAILED), "{what}:\n{output}");
    }

    // The audit trail keeps the difference; each refusal is one connection (xfreerdp does not
    // reconnect as it does after a transport failure).
    let denials = support::poll(Duration::from_secs(30), || {
        let denials = gh.audit_of("access_denied");
        (denials.len() >= 2).then_some(denials)
    })
    .unwrap_or_else(|| panic!("two denials audited:\n{:#?}", gh.audit()));
    assert_eq!(denials.len(), 2, "{denials:#?}");
    assert_eq!(policies(&denials[0]), ["default-deny"], "{:#?}", denials[0]);
    assert_ne!(
        json_str(&denials[0], "detail"),
        json_str(&denials[1], "detail"),
        "the audit trail tells the unknown target from the forbidden one: {denials:#?}"
    );
}

#[test]
fn an_unreachable_target_shows_xfreerdp_its_own_error_info() {
    let dir = tempfile::tempdir().unwrap();
    let mut gh = Gatehouse::init();
    gh.add_user_with_password(GATEWAY_USER, GATEWAY_PASSWORD);
    // Nothing listens there.
    let closed = support::rdp_peers::free_port();
    gh.add_rdp_asset(ASSET, closed, &[]);
    gh.add_account_with_password(&format!("{TARGET_ACCOUNT}@{ASSET}"), VAULT_PASSWORD);
    gh.grant_user(GATEWAY_USER, &format!("{TARGET_ACCOUNT}@{ASSET}"));
    gh.serve();
    let client = Client::new(dir.path());

    let (output, code) = refused_xfreerdp(&client, &gh, &login_name());
    assert_eq!(
        freerdp_errors(&output),
        ["ERRINFO_CB_DESTINATION_NOT_FOUND"],
        "xfreerdp is told the target cannot be reached:\n{output}"
    );
    assert_eq!(code, Some(XF_EXIT_CONN_FAILED), "{output}");
    let failed = wait_for(&gh, "target_connect_failed");
    assert!(
        json_str(&failed, "detail").contains("cannot connect"),
        "{failed}"
    );
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
    let (dir, shadow, mut gh, _) = gateway(true);
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
        for needle in secret_needles(secret) {
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
    // Sealed once finished (after the graphics check), and intact.
    let sealed = wait_for(&gh, "recording_sealed");
    assert_eq!(json_str(&sealed, "session"), id);
    let verified = gh.cli_ok(&["audit", "verify"]);
    assert!(
        verified.contains("1 sealed recordings intact"),
        "{verified}"
    );
}

/// `ffmpeg` decodes `args` (input options and file) to one RGB24 frame of `width` x `height`.
fn decoded_frame(args: &[&str], width: usize, height: usize) -> Vec<u8> {
    let ffmpeg = support::rdp_peers::require("ffmpeg", "ffmpeg");
    let out = std::process::Command::new(ffmpeg)
        .args(["-v", "error"])
        .args(args)
        .args([
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout.len(),
        width * height * 3,
        "one {width}x{height} frame"
    );
    out.stdout
}

fn pixel(frame: &[u8], width: usize, x: usize, y: usize) -> [u8; 3] {
    let i = (y * width + x) * 3;
    [frame[i], frame[i + 1], frame[i + 2]]
}

/// Asserts the checkerboard (32-pixel squares, magenta where `x/32 + y/32` is even, green
/// elsewhere) at the centres of the squares of the top-left 256x256, within `tolerance` per
/// channel (0 for a lossless frame).
fn assert_checkerboard(frame: &[u8], width: usize, tolerance: u8, what: &str) {
    for row in 0..8 {
        for column in 0..8 {
            let (x, y) = (column * 32 + 16, row * 32 + 16);
            let want = if (row + column) % 2 == 0 {
                [0xff, 0x00, 0xff]
            } else {
                [0x00, 0xc0, 0x00]
            };
            let got = pixel(frame, width, x, y);
            let close = got
                .iter()
                .zip(want)
                .all(|(g, w)| g.abs_diff(w) <= tolerance);
            assert!(
                close,
                "{what}: pixel ({x},{y}) is {got:02x?}, not {want:02x?}"
            );
        }
    }
}

#[test]
fn a_recorded_session_renders_to_video_with_the_target_screen_and_the_typing_is_an_event() {
    let (dir, shadow, mut gh, _) = gateway(true);
    support::rdp_peers::paint_checkerboard(&shadow.display, dir.path(), 32, "#ff00ff", "#00c000");
    add_auditor(&gh);
    add_supervisor(&gh);
    // The supervisor finds running sessions in the player too (it lists what one may view).
    std::fs::write(
        gh.data_dir().join("policies/supervisors-view.cedar"),
        "@id(\"supervisors-view\")\npermit (principal in Group::\"supervisors\", action == Action::\"view_recording\", resource);\n",
    )
    .unwrap();
    // Recordings encrypted at rest once sealed: everything below reads through the key (the
    // player's test reads plain ones).
    gh.edit_settings(|settings| {
        settings["recordings"] = serde_json::json!({ "encrypt": true });
    });
    gh.serve();

    // The client on a display of its own; what it types goes through the gateway.
    let client = Client::new(dir.path());
    let display = client.display_env().to_string();
    let command = client.command(
        gh.rdp_port(),
        &login_name(),
        GATEWAY_PASSWORD,
        &["/sec:nla", "/size:1024x768", "/bpp:32", "-clipboard"],
    );
    // Long enough for the live checks below (curl, then the player in chromium).
    let running = std::thread::spawn(move || client.run(command, Duration::from_secs(30)));
    wait_for(&gh, "target_connect_ok");
    std::thread::sleep(Duration::from_secs(3));
    support::rdp_peers::type_into_client(&display, "secret-project-42");
    // Live, as the portal shows it: the screen as it is now, PNG frames for a supervisor.
    let running_id = support::poll(Duration::from_secs(10), || {
        gh.sessions()
            .into_iter()
            .find(|s| s["ended"].is_null())
            .map(|s| json_str(&s, "id"))
    })
    .expect("the running RDP session is listed");
    let sam = support::api_bearer(&gh, SUPERVISOR, SUPERVISOR_PASSWORD);
    let (mut stream, body) =
        support::curl_stream(&gh, &format!("/api/v1/sessions/{running_id}/live"), &sam, 4);
    let _ = stream.wait();
    let multipart = std::fs::read(body.path()).unwrap();
    let head = b"Content-Type: image/png\r\nContent-Length: ";
    let at = multipart
        .windows(head.len())
        .position(|w| w == head)
        .unwrap_or_else(|| panic!("no frame in the live stream: {} bytes", multipart.len()));
    let rest = &multipart[at + head.len()..];
    let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let length: usize = std::str::from_utf8(&rest[..end]).unwrap().parse().unwrap();
    let live_png = dir.path().join("live.png");
    std::fs::write(&live_png, &rest[end + 4..end + 4 + length]).unwrap();
    let frame = decoded_frame(&["-i", live_png.to_str().unwrap()], 1024, 768);
    assert_checkerboard(&frame, 1024, 0, "the live view");
    // The same in the player, as a supervisor sees it in a browser.
    let chromium = support::browser::require_browser_tools();
    let mut node = std::process::Command::new("node");
    node.arg("player-live.mjs")
        .current_dir(support::browser::browser_dir())
        .env("GH_URL", gh.api_url())
        .env("USER_NAME", SUPERVISOR)
        .env("PASSWORD", SUPERVISOR_PASSWORD)
        .env("CHROMIUM", &chromium)
        .env("SESSION", &running_id)
        .env("COLORS", "#ff00ff,#00c000");
    let watched = support::run(node, None, Duration::from_secs(120));
    assert!(
        watched.status.success(),
        "the player's live view failed:\n{}",
        watched.describe()
    );
    let (output, killed) = running.join().unwrap();
    assert!(killed, "the session ended early:\n{}", text(&output));
    let id = json_str(&gh.ended_sessions_of(GATEWAY_USER, 1)[0], "id");

    // The typing and the graphics verdict are events of the session (checked after it ends).
    let shown = support::poll(Duration::from_secs(60), || {
        let shown = gh.cli_json(&["session", "show", &id, "--json"]);
        let done = shown["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "session_closed"));
        done.then_some(shown)
    })
    .expect("the recording is closed");
    let events = shown["events"].as_array().unwrap();
    let typed: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "keys")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(
        typed.contains(&"secret-project-42<Enter>"),
        "typing runs: {typed:?}"
    );
    let graphics = events.iter().find(|e| e["type"] == "graphics").unwrap();
    assert_eq!(graphics["verdict"], "decodable", "{graphics}");
    let text_view = gh.cli_ok(&["session", "show", &id]);
    assert!(
        text_view.contains("keys \"secret-project-42<Enter>\""),
        "{text_view}"
    );

    // One frame, lossless: the target's screen exactly.
    let png = dir.path().join("last.png");
    gh.cli_ok(&["session", "export", &id, "-o", png.to_str().unwrap()]);
    let frame = decoded_frame(&["-i", png.to_str().unwrap()], 1024, 768);
    assert_checkerboard(&frame, 1024, 0, "the PNG export");
    // The video (VP8, lossy): its last second shows the same screen.
    let webm = dir.path().join("session.webm");
    gh.cli_ok(&["session", "export", &id, "-o", webm.to_str().unwrap()]);
    let frame = decoded_frame(&["-sseof", "-1", "-i", webm.to_str().unwrap()], 1024, 768);
    assert_checkerboard(&frame, 1024, 40, "the WebM export");

    // Sealed: the PDUs are ciphertext now.
    support::poll(Duration::from_secs(30), || {
        gh.audit_of("recording_sealed")
            .iter()
            .any(|e| e["session"] == id.as_str())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("not sealed: {}", gh.log_tail(40)));
    let recording = gh.data_dir().join("recordings").join(&id);
    let pdus = std::fs::read(recording.join("rdp.pdus")).unwrap();
    assert!(pdus.starts_with(b"GHRENC1\n"), "rdp.pdus is not encrypted");

    // The player's video: an auditor gets the WebM over the API, rendered once and cached,
    // encrypted like its recording.
    let ada = auditor_bearer(&gh);
    let (status, headers, video) = get_video(&gh, &ada, &id);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&video));
    assert!(
        headers.to_lowercase().contains("content-type: video/webm"),
        "{headers}"
    );
    assert!(
        video.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]),
        "a WebM (EBML) file"
    );
    let cached = gh
        .data_dir()
        .join("recordings")
        .join(&id)
        .join("video.webm");
    let on_disk = std::fs::read(&cached).unwrap();
    assert!(
        on_disk.starts_with(b"GHRENC1\n"),
        "video.webm is not encrypted"
    );
    assert!(on_disk.len() > video.len(), "ciphertext and tags");
    let (status, _, again) = get_video(&gh, &ada, &id);
    assert_eq!(
        (status, again.len()),
        (200, video.len()),
        "the cached video"
    );
    assert!(again == video, "the cached video differs from the first");
    // The gateway user who opened the session may not watch it.
    let alice = support::api_bearer(&gh, GATEWAY_USER, GATEWAY_PASSWORD);
    let (status, _, _) = get_video(&gh, &alice, &id);
    assert_eq!(status, 404);

    // Neither password is in the recording, the rendered video or the TRACE log.
    for secret in [GATEWAY_PASSWORD, VAULT_PASSWORD] {
        for needle in secret_needles(secret) {
            let hits = support::files_containing(gh.data_dir(), &needle);
            assert!(hits.is_empty(), "`{secret}` is in {hits:?}");
        }
        let forms = support::secret_forms_in(gh.log_text().as_bytes(), secret);
        assert!(
            forms.is_empty(),
            "`{secret}` is in the gateway's TRACE log as {forms:?}"
        );
    }
}

/// SIGTERM with an RDP session running: the listener closes at once, the admin socket still
/// answers, the session goes on for the grace period and is then closed (xfreerdp exits), its
/// record is closed as ended by the shutdown (not interrupted), and `serve` exits cleanly.
#[test]
fn sigterm_lets_a_running_rdp_session_run_out_its_grace_then_closes_it() {
    let (dir, _shadow, mut gh, _) = gateway(true);
    gh.serve_options(&["--shutdown-grace", "5"], &[]);
    gh.serve();
    let rdp_port = gh.rdp_port();

    let client = Client::new(dir.path());
    let command = client.command(
        rdp_port,
        &login_name(),
        GATEWAY_PASSWORD,
        &["/sec:nla", "/size:800x600"],
    );
    let running = std::thread::spawn(move || client.run(command, Duration::from_secs(90)));
    wait_for(&gh, "target_connect_ok");
    std::thread::sleep(Duration::from_secs(1));

    let term_at = std::time::Instant::now();
    gh.signal_server("TERM");
    let refused = support::poll(Duration::from_secs(3), || {
        std::net::TcpStream::connect(("127.0.0.1", rdp_port))
            .is_err()
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the RDP listener still accepts while draining"
    );
    // Operators can still look while the gateway drains (the CLI goes through the socket).
    let open = gh.sessions();
    assert!(
        open.iter()
            .any(|s| s["protocol"] == "rdp" && s["ended"].is_null()),
        "the running RDP session is listed during the drain: {open:#?}"
    );
    assert!(
        term_at.elapsed() < Duration::from_secs(4),
        "the session list took the whole grace period"
    );

    let (output, killed) = running.join().unwrap();
    let closed_after = term_at.elapsed();
    assert!(
        !killed,
        "xfreerdp was not disconnected by the shutdown:\n{}",
        text(&output)
    );
    assert!(
        closed_after >= Duration::from_secs(4) && closed_after < Duration::from_secs(30),
        "closed {closed_after:?} after SIGTERM with a 5 s grace\n{}",
        text(&output)
    );
    let exit = gh.wait_server_exit(Duration::from_secs(30));
    assert!(
        matches!(exit, Some(s) if s.success()),
        "serve did not exit cleanly after the drain: {exit:?}\n{}",
        gh.log_tail(40)
    );
    let ended = gh.ended_sessions_of(GATEWAY_USER, 1);
    assert_eq!(ended[0]["protocol"], "rdp");
    assert!(
        ended[0]["error"].is_null(),
        "a drained session is not an interrupted one: {}",
        ended[0]
    );
    let events = gh.audit();
    assert!(
        events
            .iter()
            .any(|e| json_str(e, "kind") == "session_ended" && e["fields"]["reason"] == "shutdown"),
        "the shutdown is why the session ended: {events:#?}"
    );
}

/// A policy's `@idle_timeout` ends an RDP session in which the user neither types nor uses the
/// mouse: xfreerdp is disconnected by itself, and the end is audited with the policy.
#[test]
fn an_idle_rdp_session_ends_at_the_policy_s_idle_timeout() {
    let (dir, _shadow, mut gh, _) = gateway(true);
    std::fs::write(
        gh.data_dir().join("policies/idle.cedar"),
        format!(
            "@id(\"rdp-idle-12s\")\n@idle_timeout(\"12s\")\npermit (principal == User::\"{GATEWAY_USER}\", action == Action::\"rdp_session\", resource);\n"
        ),
    )
    .unwrap();
    gh.serve();
    let client = Client::new(dir.path());
    let command = client.command(
        gh.rdp_port(),
        &login_name(),
        GATEWAY_PASSWORD,
        &["/sec:nla", "/size:800x600", "-clipboard"],
    );
    let started = std::time::Instant::now();
    let (output, killed) = client.run(command, Duration::from_secs(60));
    let lasted = started.elapsed();
    assert!(
        !killed,
        "the idle session was not ended:\n{}\n{}",
        text(&output),
        gh.log_tail(40)
    );
    assert!(lasted >= Duration::from_secs(12), "ended after {lasted:?}");
    let ended = support::poll(Duration::from_secs(20), || {
        gh.audit_of("session_ended")
            .into_iter()
            .find(|e| e["fields"]["reason"] == "idle")
    })
    .unwrap_or_else(|| panic!("no idle end: {:#?}", gh.audit_of("session_ended")));
    assert_eq!(ended["fields"]["protocol"], "rdp");
    assert_eq!(ended["fields"]["policy"], "rdp-idle-12s");
    assert!(
        json_str(&ended, "detail").contains("no input for 12s"),
        "{ended:#}"
    );
}

/// A directory user over RDP: NLA needs their NT hash before any password reaches the gateway,
/// so they log in once by password (here over the API); from then on xfreerdp logs in with their
/// directory password, and every RDP login binds to the directory with the delegated password.
#[test]
fn a_directory_user_logs_in_over_rdp_after_a_first_password_login() {
    use support::slapd::{DANA, SERVICE_DN, SUFFIX, Slapd};
    let slapd = Slapd::start();
    let (dir, _shadow, mut gh, _) = gateway(false);
    let ca = slapd.ca();
    let password_file = slapd.service_password_file();
    gh.edit_settings(|settings| {
        settings["directory"] = serde_json::json!({
            "url": format!("ldaps://127.0.0.1:{}", slapd.ldaps_port),
            "ca_file": ca,
            "bind_dn": SERVICE_DN,
            "bind_password_file": password_file,
            "user_base": format!("ou=people,{SUFFIX}"),
            "group_base": format!("ou=groups,{SUFFIX}"),
        });
    });
    std::fs::write(
        gh.data_dir().join("policies/directory.cedar"),
        format!(
            "@id(\"ops-rdp\")\npermit (principal in Group::\"ops\", action == Action::\"rdp_session\", resource == Account::\"{TARGET_ACCOUNT}@{ASSET}\");\n"
        ),
    )
    .unwrap();
    gh.serve();
    let client = Client::new(dir.path());
    let (name, password) = DANA;
    let login = format!("{name}@{TARGET_ACCOUNT}@{ASSET}");
    let xfreerdp = |password: &str| {
        let command = client.command(gh.rdp_port(), &login, password, &["/sec:nla", "+auth-only"]);
        let (output, killed) = client.run(command, Duration::from_secs(60));
        assert!(!killed, "xfreerdp hung:\n{}", text(&output));
        output
    };
    // Before any password login the gateway has no NT hash for her: NLA cannot succeed.
    let output = xfreerdp(password);
    assert!(!output.status.success(), "{}", text(&output));
    // One login by password (the API's, as the portal would), and RDP works.
    support::api_bearer(&gh, name, password);
    let output = xfreerdp(password);
    assert!(
        output.status.success(),
        "xfreerdp as a directory user:\n{}\n{}",
        text(&output),
        gh.log_tail(40)
    );
    let connected = wait_for(&gh, "target_connect_ok");
    assert_eq!(json_str(&connected, "user"), name);
    assert_eq!(policies(&connected), ["ops-rdp"]);
    // A wrong password is refused by NLA.
    let output = xfreerdp("not-her-directory-password");
    assert!(
        text(&output).contains("ERRCONNECT_LOGON_FAILURE"),
        "{}",
        text(&output)
    );
}
