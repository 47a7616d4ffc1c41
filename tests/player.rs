//! End to end: the recordings player in a real browser. A real `ssh -tt` shell session through
//! `gatehouse serve` to a real sshd types a marker, idles, prints more and types a secret at a
//! prompt that does not echo it; an RDP recording with an idle stretch longer than the video's
//! cap (the relay's fixture, `host/rdp-replay/tests/fixtures`, a minute of still screen put in)
//! sits beside it. Over the API: the shell session is found by what it showed and never by the
//! secret, its cast for the player leaves keystrokes out and shortens the pause, and the RDP
//! typing's `playback_time` is where the exported video shows it. Then Debian's chromium, driven
//! by playwright-core (tests/browser/player.mjs), logs in on /player, searches, plays the shell
//! session in the vendored terminal player, seeks the RDP video by clicking the typing, and
//! finds no console error or failed request on the pages.
//!
//! Needs `chromium` (Debian package) and Node.js 20 with npm: scripts/install-test-deps.sh
//! installs them and runs `npm ci` in tests/browser (this test runs it too when needed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_rdp_replay::{
    Direction, EventKind, ExportOptions, Framing, InputTracker, Pdu, PduWriter, Replayer, pdus,
};
use gatehouse_recording::{RecordingEvent, SessionRecording};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::browser::{browser_dir, require_browser_tools};
use support::recordings::{AUDITOR, AUDITOR_PASSWORD, add_auditor, auditor_bearer, get, get_json};
use support::world::World;
use support::{OutputExt, curl, json_str, run};

const MARKER: &str = "typed-marker-q7z";
/// Printed after the idle stretch; the command typed for it reads `after-idle-$((6*7))`.
const AFTER_IDLE: &str = "after-idle-42";
/// Typed at `read -s`: in the recording's input stream only.
const SECRET: &str = "Unechoed-pin-5Wv8";
const IDLE: Duration = Duration::from_secs(12);
const RDP_ID: &str = "rdp-idle-fixture-1";

fn found(w: &World, bearer: &str, text: &str) -> Vec<String> {
    let query: String = text
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, list) = get_json(&w.gh, bearer, &format!("/api/v1/sessions?contains={query}"));
    assert_eq!(status, 200, "{list}");
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| json_str(s, "id"))
        .collect()
}

type Pdus = Vec<(Direction, Framing, Duration, Vec<u8>)>;

/// The relay's fixture with a minute of still screen after the first screen update: every PDU
/// from it on comes a minute later, the typing included.
fn idle_recording() -> Pdus {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../rdp-replay/tests/fixtures/checkerboard-typing.pdus");
    let mut reader = pdus::open(&fixture).unwrap();
    let mut replayer = Replayer::new();
    let mut all = Vec::new();
    let mut painted = None;
    while let Some(pdu) = reader.next_pdu().unwrap() {
        if replayer.feed(&pdu) && painted.is_none() {
            painted = Some(pdu.at);
        }
        all.push((pdu.direction, pdu.framing, pdu.at, pdu.bytes.to_vec()));
    }
    let painted = painted.expect("the fixture paints the screen");
    all.into_iter()
        .map(|(d, f, at, bytes)| {
            let at = if at >= painted {
                at + Duration::from_secs(60)
            } else {
                at
            };
            (d, f, at, bytes)
        })
        .collect()
}

/// Puts the RDP recording in the gateway's recordings as the relay would have left it (the PDU
/// file, the typing logged by the input tracker, a closed session record). Returns the typing's
/// time in the recording.
fn plant_rdp_session(data_dir: &Path, asset: &str, account: &str, recording: &Pdus) -> Duration {
    let root = data_dir.join("recordings");
    let session = SessionRecording::create(&root, RDP_ID).unwrap();
    let mut writer = PduWriter::new(Vec::new()).unwrap();
    let mut tracker = InputTracker::new();
    let mut events = Vec::new();
    for (direction, framing, at, bytes) in recording {
        let pdu = Pdu {
            direction: *direction,
            framing: *framing,
            at: *at,
            bytes,
        };
        writer.write(&pdu).unwrap();
        tracker.observe(&pdu, &mut events);
    }
    tracker.finish(&mut events);
    std::fs::write(session.dir().join("rdp.pdus"), writer.finish().unwrap()).unwrap();
    let mut typed = None;
    for event in events {
        if let EventKind::Keys {
            text, end_micros, ..
        } = event.kind
        {
            let at = Duration::from_micros(event.at_micros);
            typed.get_or_insert(at);
            session
                .log_at(
                    at,
                    None,
                    RecordingEvent::Keys {
                        text,
                        end: end_micros as f64 / 1e6,
                    },
                )
                .unwrap();
        }
    }
    session.finish().unwrap();

    let store = gatehouse_store::Store::open(&data_dir.join("gatehouse.redb")).unwrap();
    let now = gatehouse_core::time::Timestamp::now();
    let record = gatehouse_core::records::SessionRecord {
        id: RDP_ID.to_string(),
        user: support::world::GATEWAY_USER.to_string(),
        account: account.to_string(),
        asset: asset.to_string(),
        client: "127.0.0.1:50000".to_string(),
        protocol: "rdp".to_string(),
        started: gatehouse_core::time::Timestamp(now.0 - 120_000),
        ended: Some(gatehouse_core::time::Timestamp(now.0 - 50_000)),
        bytes_up: 0,
        bytes_down: 0,
        channels: Vec::new(),
        error: None,
        node: None,
        gateway: None,
    };
    store
        .write(|txn| txn.put(&gatehouse_store::SESSIONS, RDP_ID, &record))
        .unwrap();
    typed.expect("the fixture has typing")
}

#[test]
fn the_player_searches_and_plays_a_shell_session_and_seeks_an_rdp_video_past_an_idle_cut() {
    let chromium = require_browser_tools();
    let recording = idle_recording();
    let planted = recording.clone();
    let w = World::builder("player")
        .setup(move |ctx| {
            add_auditor(ctx.gh);
            plant_rdp_session(
                ctx.gh.data_dir(),
                support::world::ASSET,
                &ctx.account.name,
                &planted,
            );
        })
        .start();
    // Where the exported video shows the typing, from the recording itself with the options
    // the gateway renders with.
    let scratch = tempfile::tempdir().unwrap();
    let pdu_file = scratch.path().join("idle.pdus");
    let mut writer = PduWriter::new(Vec::new()).unwrap();
    for (direction, framing, at, bytes) in &recording {
        writer
            .write(&Pdu {
                direction: *direction,
                framing: *framing,
                at: *at,
                bytes,
            })
            .unwrap();
    }
    std::fs::write(&pdu_file, writer.finish().unwrap()).unwrap();
    let summary = gatehouse_rdp_replay::export(
        &pdu_file,
        &scratch.path().join("idle.webm"),
        &ExportOptions::default(),
    )
    .unwrap();
    assert!(summary.idle_cut >= Duration::from_secs(45), "{summary:?}");
    let clock = summary.clock.unwrap();

    // The shell session: a marker typed and printed, an idle stretch, more output, a secret
    // typed where it is not echoed.
    let mut shell = w.client().pty();
    shell.expect("$ ", Duration::from_secs(60));
    shell.send_line(&format!("echo {MARKER}"));
    shell.expect(&format!("{MARKER}\r\n"), Duration::from_secs(30));
    shell.send_line(&format!(
        "sleep {}; echo after-idle-$((6*7))",
        IDLE.as_secs()
    ));
    shell.expect(AFTER_IDLE, Duration::from_secs(60));
    shell.send_line("read -s -p 'pin: ' pin; echo got-${#pin}-chars");
    shell.expect("pin: ", Duration::from_secs(30));
    shell.send_line(SECRET);
    shell.expect(
        &format!("got-{}-chars", SECRET.len()),
        Duration::from_secs(30),
    );
    shell.send_line("exit");
    let outcome = shell.wait(Duration::from_secs(60));
    assert!(outcome.status.success(), "{}", outcome.describe());
    assert!(!outcome.stdout.contains(SECRET), "{}", outcome.describe());
    let ssh_id = json_str(&w.gh.ended_sessions_of("alice", 1)[0], "id");
    let cast_file =
        w.gh.data_dir()
            .join("recordings")
            .join(&ssh_id)
            .join("channel-0.cast");
    let raw = std::fs::read_to_string(&cast_file).unwrap();
    // The keystrokes are recorded: what is searched and played must leave them out.
    assert!(
        raw.contains(SECRET),
        "the secret is in the input stream:\n{raw}"
    );

    let ada = auditor_bearer(&w.gh);
    // Search: what the terminal showed, typed or printed, case-insensitive; not the secret.
    assert_eq!(found(&w, &ada, MARKER), [ssh_id.as_str()]);
    assert_eq!(found(&w, &ada, &MARKER.to_uppercase()), [ssh_id.as_str()]);
    assert_eq!(found(&w, &ada, AFTER_IDLE), [ssh_id.as_str()]);
    assert!(found(&w, &ada, SECRET).is_empty());
    assert!(found(&w, &ada, &SECRET.to_lowercase()).is_empty());
    assert!(found(&w, &ada, &w.account.password).is_empty());
    assert!(found(&w, &ada, support::world::GATEWAY_PASSWORD).is_empty());
    assert_eq!(found(&w, &ada, "Hello, World!"), [RDP_ID]);

    // The cast for the player: output only, the idle stretch shortened to 2 s.
    let (status, headers, cast) = get(&w.gh, &ada, &format!("/api/v1/sessions/{ssh_id}/cast"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&cast));
    assert!(
        headers
            .to_lowercase()
            .contains("content-type: application/x-asciicast"),
        "{headers}"
    );
    let cast = String::from_utf8(cast).unwrap();
    assert!(!cast.contains(SECRET), "{cast}");
    assert!(cast.contains(MARKER) && cast.contains(AFTER_IDLE), "{cast}");
    let mut lines = cast.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["idle_time_limit"], 2.0, "{header}");
    let events: Vec<(f64, String)> = lines
        .map(|l| {
            let e: (f64, String, String) = serde_json::from_str(l).unwrap();
            (e.0, e.1)
        })
        .collect();
    assert!(events.iter().all(|(_, code)| code != "i"), "{cast}");
    let longest = events
        .windows(2)
        .map(|p| p[1].0 - p[0].0)
        .fold(0.0, f64::max);
    assert!(
        (1.9..=2.0 + 1e-6).contains(&longest),
        "longest pause {longest}: {cast}"
    );

    // The RDP typing: no playback time until the video is rendered, then the export's.
    let typing = |detail: &Value| -> Value {
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "keys")
            .cloned()
            .unwrap()
    };
    let (status, before) = get_json(&w.gh, &ada, &format!("/api/v1/sessions/{RDP_ID}"));
    assert_eq!(status, 200, "{before}");
    let keys = typing(&before);
    assert_eq!(keys["playback_time"], Value::Null, "{keys}");
    assert!(keys["wall_time"].as_str().unwrap().ends_with('Z'), "{keys}");
    let recording_time = keys["time"].as_f64().unwrap();
    let expected = clock
        .video_time(Duration::try_from_secs_f64(recording_time).unwrap())
        .as_secs_f64();
    assert!(
        recording_time > 60.0 && expected < recording_time - 40.0,
        "{expected}"
    );

    // The shell session is searchable once its recording is sealed (a few seconds after it
    // ended): the page's moments need it.
    let indexed = (0..60).any(|_| {
        let hits = w.gh.cli_ok(&["session", "search", AFTER_IDLE, "--json"]);
        let found = hits.contains(&ssh_id);
        if !found {
            std::thread::sleep(Duration::from_millis(500));
        }
        found
    });
    assert!(indexed, "the shell session was not indexed within 30 s");

    // The browser: the page renders the video itself.
    let started = Instant::now();
    let mut node = Command::new("node");
    node.arg("player.mjs")
        .current_dir(browser_dir())
        .env("GH_URL", w.gh.api_url())
        .env("GH_USER", AUDITOR)
        .env("GH_PASSWORD", AUDITOR_PASSWORD)
        .env("MARKER", MARKER)
        .env("AFTER_IDLE", AFTER_IDLE)
        .env("SECRET", SECRET)
        .env("SSH_ID", &ssh_id)
        .env("RDP_ID", RDP_ID)
        .env("RDP_EXPECTED", format!("{expected}"))
        .env("CHROMIUM", &chromium);
    let out = run(node, None, Duration::from_secs(480));
    eprintln!(
        "browser run ({:?}):\n{}",
        started.elapsed(),
        out.stdout_text()
    );
    assert!(
        out.status.success(),
        "the browser checks failed:\n{}",
        out.describe()
    );

    let (_, after) = get_json(&w.gh, &ada, &format!("/api/v1/sessions/{RDP_ID}"));
    let mapped = typing(&after)["playback_time"].as_f64().unwrap();
    assert!((mapped - expected).abs() < 1e-6, "{mapped} vs {expected}");

    // The shell session's events map into its cast; the pages' icon is there.
    let (_, detail) = get_json(&w.gh, &ada, &format!("/api/v1/sessions/{ssh_id}"));
    assert_eq!(detail["terminals"], serde_json::json!([0]), "{detail}");
    let closed = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "channel_closed")
        .unwrap();
    let duration = events.last().unwrap().0;
    let at = closed["playback_time"].as_f64().unwrap();
    assert!(
        at >= duration - 0.1 && at <= duration + 2.1,
        "{at} vs {duration}: {closed}"
    );
    let (status, headers, icon) = curl(&w.gh, "GET", "/favicon.ico", &[], None);
    assert_eq!(status, 200);
    assert!(
        headers
            .to_lowercase()
            .contains("content-type: image/x-icon")
    );
    assert_eq!(&icon[..4], &[0, 0, 1, 0], "an ICO file");
    w.assert_no_secret_leaks(&[&outcome.stdout]);
}
