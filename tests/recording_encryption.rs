//! End to end: recordings encrypted at rest (settings.json `recordings.encrypt`). A real `ssh`
//! shell through `gatehouse serve` is recorded as always; once sealed, every file of its
//! recording is ciphertext (nothing typed or shown is on disk in the clear), yet `session play`,
//! `session show`, search, the API transcript and `audit verify` work as before; without the
//! recording key a reader gets one line naming it; an edited byte is named by `audit verify` and
//! refused by the player.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::recordings::{add_auditor, auditor_bearer, get};
use support::world::{GATEWAY_USER, World};
use support::{OutputExt, files_containing, json_id, poll};

const TYPED: &str = "typed-enc-marker-3kd";
const PRINTED: &str = "printed-enc-marker-90";
const MAGIC: &[u8] = b"GHRENC1\n";

#[test]
fn sealed_recordings_are_ciphertext_on_disk_and_read_as_before_with_the_key() {
    let w = World::builder("encrypted")
        .setup(|ctx| {
            add_auditor(ctx.gh);
            ctx.gh.edit_settings(|settings| {
                settings["recordings"] = json!({ "encrypt": true });
            });
        })
        .start();
    let key_file = w.gh.data_dir().join("recordings.key");
    assert!(key_file.is_file(), "no recording key at start");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "recordings.key is {mode:o}");
    }

    let mut shell = w.client().pty();
    shell.expect("$ ", Duration::from_secs(60));
    shell.send_line(&format!("echo {TYPED}"));
    shell.expect(&format!("{TYPED}\r\n"), Duration::from_secs(30));
    shell.send_line("printf 'printed-enc-%s-%d\\n' marker 90");
    shell.expect(PRINTED, Duration::from_secs(30));
    shell.send_line("exit");
    let outcome = shell.wait(Duration::from_secs(60));
    assert!(outcome.status.success(), "{}", outcome.describe());
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    let id = json_id(&sessions[0]["id"]);
    let sealed = poll(Duration::from_secs(40), || {
        w.gh.audit_of("recording_sealed")
            .into_iter()
            .find(|e| e["session"] == id.as_str())
    })
    .unwrap_or_else(|| panic!("not sealed: {}", w.gh.log_tail(40)));
    // The trail says which key encrypted how many files.
    let key_id = sealed["fields"]["encrypted_with"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(key_id.len(), 16, "{sealed:#}");
    let stored: Value = serde_json::from_slice(&std::fs::read(&key_file).unwrap()).unwrap();
    assert_eq!(stored["id"], key_id.as_str());

    // On disk: every recorded file is ciphertext under that key; nothing typed or shown is.
    let dir = w.gh.data_dir().join("recordings").join(&id);
    let mut encrypted = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.starts_with("manifest.json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], MAGIC, "{name} is not encrypted");
        encrypted += 1;
    }
    assert!(encrypted >= 2, "events and the terminal: {encrypted}");
    assert_eq!(sealed["fields"]["encrypted_files"], encrypted, "{sealed:#}");
    for marker in [TYPED, PRINTED, "printf", "xterm"] {
        let found = files_containing(&dir, marker.as_bytes());
        assert!(found.is_empty(), "`{marker}` in the clear: {found:?}");
    }

    // Read as before, with the key the data directory holds.
    let played = w.gh.cli_ok(&["session", "play", &id, "--speed", "50"]);
    assert!(played.contains(PRINTED), "{played}");
    let shown = w.gh.session_show(&id);
    let kinds: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(kinds.contains(&"shell"), "{shown:#}");
    let verified = w.gh.cli_ok(&["audit", "verify"]);
    assert!(
        verified.contains("1 sealed recordings intact"),
        "{verified}"
    );
    // Indexed when sealed (read through the key), found by what it showed.
    let hits = poll(Duration::from_secs(20), || {
        let out = w.gh.cli_ok(&["session", "search", PRINTED, "--json"]);
        let hits: Vec<Value> = serde_json::from_str(&out).unwrap();
        (!hits.is_empty()).then_some(hits)
    })
    .expect("the encrypted recording was not indexed");
    assert_eq!(hits[0]["session"], id.as_str());
    // The API's transcript, for an auditor.
    let (status, _, body) = get(
        &w.gh,
        &auditor_bearer(&w.gh),
        &format!("/api/v1/sessions/{id}/transcript"),
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(PRINTED), "{body}");

    // Without the key: one line naming the key, not garbage.
    let aside = w.gh.data_dir().join("recordings.key.aside");
    std::fs::rename(&key_file, &aside).unwrap();
    let out = w.gh.cli(&["session", "play", &id]);
    std::fs::rename(&aside, &key_file).unwrap();
    assert!(!out.status.success(), "{}", out.describe());
    let err = out.stderr_text();
    assert!(
        err.contains(&format!("recording key {key_id}")) && err.trim().lines().count() == 1,
        "{err}"
    );
    assert!(!out.stdout_text().contains("GHRENC"), "{}", out.describe());

    // One byte changed on disk: `audit verify` names the file, the player refuses it.
    let cast = dir.join("channel-0.cast");
    let mut bytes = std::fs::read(&cast).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0x20;
    std::fs::write(&cast, &bytes).unwrap();
    let out = w.gh.cli(&["audit", "verify"]);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stdout_text().contains("`channel-0.cast` was changed")
            || out.stderr_text().contains("`channel-0.cast` was changed"),
        "{}",
        out.describe()
    );
    let out = w.gh.cli(&["session", "play", &id]);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_text().contains("does not decrypt"),
        "{}",
        out.describe()
    );
}
