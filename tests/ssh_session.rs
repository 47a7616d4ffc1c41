//! End to end: real `ssh` → `gatehouse serve` → real sshd, with the credential from the vault.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;
use std::time::Duration;

use serde_json::Value;
use support::ssh_client::{asciinema_play, assert_client_ok};
use support::world::{ASSET, GATEWAY_USER, World};
use support::{OutputExt, json_id, json_objects_where, json_str, object_has_string_containing};

const MARKER_COMMAND: &str = "echo gatehouse-marker-$((6*7))";
const MARKER: &str = "gatehouse-marker-42";

/// Runs `echo hi` and `exit 7` through `client`, checking output and exit status; returns all
/// client output for the leak check.
fn exec_round(what: &str, client: &support::ssh_client::Client) -> Vec<String> {
    let hi = client.ssh("echo hi");
    assert_client_ok(&format!("{what}: echo hi"), &hi);
    assert_eq!(hi.stdout_text(), "hi\n", "{what}\n{}", hi.describe());

    let seven = client.ssh("echo to-stderr >&2; exit 7");
    assert_eq!(
        seven.code(),
        Some(7),
        "{what}: exit status\n{}",
        seven.describe()
    );
    assert!(
        seven.stderr_text().contains("to-stderr"),
        "{what}\n{}",
        seven.describe()
    );

    vec![
        hi.stdout_text(),
        hi.stderr_text(),
        seven.stdout_text(),
        seven.stderr_text(),
    ]
}

#[test]
fn password_login_with_vault_password() {
    let w = World::start("s_pw");
    let mut outputs = exec_round("password login", &w.client());

    let who = w.client().ssh("id -un");
    assert_client_ok("id -un", &who);
    assert_eq!(who.stdout_text().trim(), w.account.name);
    outputs.push(who.stderr_text());

    let log = w.target.log_text();
    assert!(
        log.contains(&format!("Accepted password for {}", w.account.name)),
        "the target should have seen the vault password\n{log}"
    );

    // The exec command line is in the session record.
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 3);
    let shows: Vec<Value> = sessions
        .iter()
        .map(|s| w.gh.session_show(&json_id(&s["id"])))
        .collect();
    assert!(
        shows.iter().any(
            |show| !json_objects_where(show, &|o| object_has_string_containing(o, "id -un"))
                .is_empty()
        ),
        "no session shows the exec command line `id -un`: {shows:#?}"
    );

    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    w.assert_no_secret_leaks(&refs);
}

#[test]
fn pubkey_login_to_gateway() {
    let w = World::builder("s_pk").key_user("carol").start();
    let outputs = exec_round("public-key login", &w.key_client());
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    w.assert_no_secret_leaks(&refs);
}

#[test]
fn vault_private_key_credential() {
    let w = World::builder("s_vk").vault_key().start();
    let outputs = exec_round("vault private key", &w.client());
    let log = w.target.log_text();
    assert!(
        log.contains(&format!("Accepted publickey for {}", w.account.name)),
        "the target should have seen the vault key\n{log}"
    );
    assert!(
        !log.contains(&format!("Accepted password for {}", w.account.name)),
        "{log}"
    );
    let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    w.assert_no_secret_leaks(&refs);
}

#[test]
fn dash_l_login_form() {
    let w = World::start("s_dashl");
    let out = w.client().ssh_dash_l("echo hi");
    assert_client_ok("ssh -l alice@account@asset", &out);
    assert_eq!(out.stdout_text(), "hi\n");
    w.assert_no_secret_leaks(&[&out.stdout_text(), &out.stderr_text()]);
}

#[test]
fn env_allow_list_passes_lang() {
    let w = World::start("s_env");
    let out = w
        .client()
        .option("SendEnv=LANG")
        .env("LANG", "C.UTF-8")
        .ssh("printf '%s' \"$LANG\"");
    assert_client_ok("ssh with SendEnv=LANG", &out);
    assert_eq!(out.stdout_text(), "C.UTF-8", "{}", out.describe());
}

#[test]
fn interactive_session_is_recorded_and_playable() {
    let w = World::start("s_pty");
    let mut session = w.client().pty();
    session.expect("$ ", Duration::from_secs(60));
    session.send_line(MARKER_COMMAND);
    session.expect(MARKER, Duration::from_secs(30));
    session.send_line("exit");
    let outcome = session.wait(Duration::from_secs(60));
    assert!(outcome.status.success(), "{}", outcome.describe());

    // session list
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    let session = sessions.last().unwrap();
    for key in [
        "id",
        "user",
        "account",
        "asset",
        "started",
        "ended",
        "bytes_up",
        "bytes_down",
    ] {
        assert!(
            session.get(key).is_some(),
            "session list entry lacks `{key}`: {session}"
        );
    }
    assert!(
        json_str(session, "account").contains(&w.account.name),
        "{session}"
    );
    assert!(json_str(session, "asset").contains(ASSET), "{session}");
    assert!(session["bytes_down"].as_u64().unwrap_or(0) > 0, "{session}");
    assert!(session["bytes_up"].as_u64().unwrap_or(0) > 0, "{session}");
    let id = json_id(&session["id"]);
    let text_list = w.gh.cli_ok(&["session", "list"]);
    assert!(
        text_list.contains(&id),
        "session list (text) lacks {id}:\n{text_list}"
    );
    let header: Vec<&str> = text_list
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header.get(1..3),
        Some(&["NODE", "PROTOCOL"][..]),
        "{text_list}"
    );
    let row = text_list.lines().find(|l| l.contains(&id)).unwrap_or("");
    // A session of this gateway, not of a session node.
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.get(1..3), Some(&["-", "ssh"][..]), "{text_list}");

    // session show
    let show = w.gh.session_show(&id);
    assert!(show.is_object(), "session show --json: {show}");
    w.gh.cli_ok(&["session", "show", &id]);

    // session export → asciicast v2 that the real player accepts
    let cast = w.scratch.path().join("session.cast");
    let cast_arg = cast.to_str().unwrap();
    w.gh.cli_ok(&["session", "export", &id, "-o", cast_arg]);
    let text = fs::read_to_string(&cast).unwrap();
    let header: Value =
        serde_json::from_str(text.lines().next().unwrap_or("")).unwrap_or(Value::Null);
    assert_eq!(
        header["version"],
        2,
        "not an asciicast v2 header: {}",
        text.lines().next().unwrap_or("")
    );
    assert!(
        text.contains(MARKER),
        "the recording lacks the marker:\n{text}"
    );
    let played = asciinema_play(&cast);
    assert_client_ok("asciinema play of the export", &played);
    assert!(
        played.stdout_text().contains(MARKER),
        "{}",
        played.describe()
    );

    // session play (the built-in player)
    let out = w.gh.cli(&["session", "play", &id, "--speed", "50"]);
    assert_client_ok("gatehouse session play", &out);
    assert!(out.stdout_text().contains(MARKER), "{}", out.describe());

    w.assert_no_secret_leaks(&[&outcome.stdout, &outcome.stderr, &text]);
}

/// Binary output of an exec channel is kept as a "binary output, N bytes" marker, not as escaped
/// text; the text around it is kept as it was, in order.
#[test]
fn binary_exec_output_is_recorded_as_its_size() {
    let w = World::start("s_binary");
    let out = w.client().ssh(
        "echo text-before-$((40+2)); head -c 1048576 /dev/urandom; sleep 0.3; echo; echo text-after-$((40+2))",
    );
    assert_client_ok("binary exec", &out);
    assert!(out.stdout.len() > 1_048_576, "{} bytes", out.stdout.len());
    let session = &w.gh.ended_sessions_of(GATEWAY_USER, 1)[0];
    let id = json_id(&session["id"]);
    let dir = w.gh.data_dir().join("recordings").join(&id);
    let cast = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "cast"))
        .unwrap_or_else(|| panic!("no cast file in {}", dir.display()));
    let text = fs::read_to_string(&cast).unwrap();
    assert!(
        text.len() < 16 * 1024,
        "the cast holds the binary data: {} bytes",
        text.len()
    );
    let events: Vec<Value> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let binary: u64 = events
        .iter()
        .filter(|e| e[1] == "m")
        .filter_map(|e| e[2].as_str())
        .filter_map(|label| {
            label
                .strip_prefix("binary output, ")?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    // Text-looking pieces of random data (rare) stay in the cast as text; the rest is counted.
    assert!(
        (1_000_000..=1_048_576).contains(&binary),
        "binary bytes in the markers: {binary}\n{text}"
    );
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` missing from the cast:\n{text}"))
    };
    // (The header names the command, so the markers are computed by the shell.)
    assert!(position("text-before-42") < position("binary output, "));
    assert!(
        position("binary output, ") < position("text-after-42"),
        "{text}"
    );
}

/// A finished session's recording is sealed: a manifest of its files with their SHA-256, signed
/// with the gateway's recording key (checked here with stock `ssh-keygen -Y verify`) and linked
/// into the audit trail. `audit verify` then names a changed file, a removed signature and a
/// removed recording.
#[test]
fn finished_recordings_are_sealed_and_tampering_is_named() {
    let w = World::start("s_seal");
    for n in 0..2 {
        let out = w.client().ssh(&format!("echo sealed-{n}"));
        assert_client_ok("session to seal", &out);
    }
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 2);
    let ids: Vec<String> = sessions.iter().map(|s| json_id(&s["id"])).collect();
    let sealed = support::poll(Duration::from_secs(30), || {
        let events = w.gh.audit_of("recording_sealed");
        ids.iter()
            .all(|id| events.iter().any(|e| e["session"] == id.as_str()))
            .then_some(events)
    })
    .unwrap_or_else(|| panic!("not sealed: {:#?}\n{}", w.gh.audit(), w.gh.log_tail(40)));
    assert!(sealed[0]["fields"]["manifest_sha256"].is_string());
    let said = w.gh.cli_ok(&["audit", "verify"]);
    assert!(said.contains("hash chain intact"), "{said}");
    assert!(said.contains(" sealed recordings intact"), "{said}");
    let key = said
        .lines()
        .find_map(|l| l.strip_prefix("recording manifests are signed by: "))
        .unwrap_or_else(|| panic!("no key in:\n{said}"))
        .to_string();

    // Stock OpenSSH checks the signature.
    let dir = w.gh.data_dir().join("recordings").join(&ids[0]);
    let signers = w.scratch.path().join("allowed_signers");
    std::fs::write(&signers, format!("gatehouse {key}\n")).unwrap();
    let checked = std::process::Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f"])
        .arg(&signers)
        .args(["-I", "gatehouse", "-n", "gatehouse-recording", "-s"])
        .arg(dir.join("manifest.json.sig"))
        .stdin(std::fs::File::open(dir.join("manifest.json")).unwrap())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "ssh-keygen -Y verify: {}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // A changed file, a removed signature, a removed recording: each named.
    let cast = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cast"))
        .expect("a cast file");
    let mut bytes = std::fs::read(&cast).unwrap();
    bytes.extend_from_slice(b"[9.9, \"o\", \"forged\"]\n");
    std::fs::write(&cast, &bytes).unwrap();
    let second = w.gh.data_dir().join("recordings").join(&ids[1]);
    std::fs::remove_file(second.join("manifest.json.sig")).unwrap();
    let out = w.gh.cli(&["audit", "verify"]);
    assert!(!out.status.success(), "{}", out.describe());
    let said = out.stderr_text();
    let cast_name = cast.file_name().unwrap().to_str().unwrap();
    assert!(
        said.contains(&format!(
            "recording of session {}: `{cast_name}` was changed",
            ids[0]
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "recording of session {}: its signature was removed",
            ids[1]
        )),
        "{said}"
    );
    std::fs::remove_dir_all(&second).unwrap();
    let said = w.gh.cli(&["audit", "verify"]).stderr_text();
    assert!(
        said.contains(&format!(
            "recording of session {}: the recording was removed",
            ids[1]
        )),
        "{said}"
    );
}

/// `gatehouse report` for a period: sessions per user and target with time and bytes, failed
/// logins, as JSON and CSV.
#[test]
fn report_counts_sessions_and_failed_logins_for_a_period() {
    let w = World::start("s_report");
    for n in 0..2 {
        let out = w.client().ssh(&format!("echo report-{n}"));
        assert_client_ok("session to report", &out);
    }
    let wrong = w.client_as(&w.login(), "not-the-password").ssh("true");
    assert!(!wrong.status.success());
    w.gh.ended_sessions_of(GATEWAY_USER, 2);

    let report = w.gh.cli_json(&["report", "--since", "1h", "--json"]);
    let target = w.target_spec();
    let row = report["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user"] == GATEWAY_USER && r["target"] == target.as_str())
        .unwrap_or_else(|| panic!("{report:#}"))
        .clone();
    assert_eq!(row["sessions"], 2, "{row}");
    assert_eq!(row["protocol"], "ssh", "{row}");
    assert!(row["bytes_down"].as_u64().unwrap() > 0, "{row}");
    let failed: u64 = report["logins_failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["user"] == GATEWAY_USER)
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert!(failed >= 1, "{report:#}");

    let csv = w.gh.cli_ok(&["report", "--since", "1h", "--csv"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("section,user,target,protocol,count,seconds,bytes_up,bytes_down")
    );
    assert!(
        lines.any(|l| l.starts_with(&format!("sessions,{GATEWAY_USER},{target},ssh,2,"))),
        "{csv}"
    );
    // A period before anything happened is empty; a bad date is a clear error.
    let empty = w.gh.cli_json(&[
        "report",
        "--since",
        "2020-01-01",
        "--until",
        "2020-02-01",
        "--json",
    ]);
    assert_eq!(empty["sessions"], serde_json::json!([]), "{empty}");
    let out = w.gh.cli(&["report", "--since", "yesterday-ish"]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("expected a date"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_running_session_is_watched_live_until_it_ends() {
    use std::io::Read;
    let w = World::start("s_watch");
    let mut session = w.client().pty();
    session.expect("$ ", Duration::from_secs(60));
    session.send_line("echo before-watching-$((2*3))");
    session.expect("before-watching-6", Duration::from_secs(30));
    let running = support::poll(Duration::from_secs(20), || {
        w.gh.sessions()
            .into_iter()
            .find(|s| s["ended"].is_null())
            .map(|s| json_str(&s, "id"))
    })
    .expect("the session is listed while it runs");

    // The watcher: what the terminal showed so far, then what comes, while the session runs.
    let mut watcher =
        w.gh.command()
            .args(["session", "watch", &running])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut stdout = watcher.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    };
    let shown = || String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
    let has = |text: &str| {
        support::poll(Duration::from_secs(10), || {
            shown().contains(text).then_some(())
        })
    };
    assert!(has("before-watching-6").is_some(), "{}", shown());
    session.send_line("echo while-watching-$((3*3))");
    session.expect("while-watching-9", Duration::from_secs(30));
    let typed_at = std::time::Instant::now();
    assert!(has("while-watching-9").is_some(), "{}", shown());
    // Live: within the recorder's one-second flush, not at the session's end.
    assert!(
        typed_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        typed_at.elapsed()
    );
    assert!(
        watcher.try_wait().unwrap().is_none(),
        "the watcher stopped early"
    );

    // The session ends: so does the watcher, on its own, saying so.
    session.send_line("exit");
    assert!(session.wait(Duration::from_secs(60)).status.success());
    let ended = support::poll(Duration::from_secs(15), || watcher.try_wait().unwrap());
    let status = ended.expect("the watcher did not end with the session");
    assert!(status.success(), "{status}");
    reader.join().unwrap();
    let mut stderr = String::new();
    watcher
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains(&format!("session {running} ended")),
        "{stderr}"
    );
    assert!(
        shown().contains("logout") || shown().contains("exit"),
        "{}",
        shown()
    );

    // An unknown session, or one that is over, is refused or replayed at once.
    let unknown = w.gh.cli(&["session", "watch", "no-such-session"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("does not exist"));
    let replay = w.gh.cli_ok(&["session", "watch", &running]);
    assert!(replay.contains("while-watching-9"), "{replay}");
}
