//! End to end: four-eyes on a running SSH session, with stock `ssh -tt` clients on both ends.
//! alice works in a shell through the gateway; sam (a supervisor, by the shipped example policy)
//! watches it read-only with `watch=<session>@sam`, then types into it with `join=<session>@sam`;
//! bob, whom no policy lets in, gets the same line for her session as for one that does not
//! exist. alice is told who joined and left; the audit trail and the recording say who typed what.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;
use support::recordings::{SUPERVISOR_PASSWORD, add_supervisor};
use support::world::World;
use support::{json_str, poll};

const SAM_PASSWORD: &str = SUPERVISOR_PASSWORD;
const BOB_PASSWORD: &str = "Bob-is-nobody-7Pz";
const LEAVE: &[u8] = &[0x1d];

#[test]
fn a_supervisor_watches_then_types_into_a_running_session_and_others_are_kept_out() {
    let w = World::builder("join")
        .setup(|ctx| {
            add_supervisor(ctx.gh);
            ctx.gh.add_user_with_password("bob", BOB_PASSWORD);
        })
        .start();
    let long = Duration::from_secs(30);

    let mut alice = w.client().pty();
    alice.expect("$ ", Duration::from_secs(60));
    alice.send_line("echo before-join-$((6*7))");
    alice.expect("before-join-42", long);
    let id = poll(Duration::from_secs(20), || {
        w.gh.sessions()
            .into_iter()
            .find(|s| s["ended"].is_null())
            .map(|s| json_str(&s, "id"))
    })
    .expect("alice's session is listed while it runs");

    // Read-only: sam sees the screen so far and what comes; his keys go nowhere.
    let mut sam = w.client_as(&format!("watch={id}@sam"), SAM_PASSWORD).pty();
    sam.expect_stderr("you joined session", long);
    assert!(
        sam.stderr().contains("(read-only); Ctrl-] leaves"),
        "{}",
        sam.stderr()
    );
    sam.expect("before-join-42", long);
    alice.expect_stderr("gatehouse: sam joined this session (read-only)", long);
    alice.send_line("echo while-watched-$((7*7))");
    sam.expect("while-watched-49", long);
    sam.send_line("echo sam-was-here-readonly");
    sam.expect_stderr("read-only: what you type is not sent", long);
    alice.send_line("echo still-alone-$((2*4))");
    alice.expect("still-alone-8", long);
    assert!(
        !alice.stdout().contains("sam-was-here-readonly"),
        "a read-only joiner typed into the session:\n{}",
        alice.stdout()
    );
    sam.send_raw(LEAVE);
    let left = sam.wait(long);
    assert!(left.status.success(), "{}", left.describe());
    assert!(
        left.stderr.contains("you left the session"),
        "{}",
        left.describe()
    );
    alice.expect_stderr("gatehouse: sam left this session", long);

    // With the keyboard (the asset is not prod): what sam types runs in alice's shell.
    let mut sam = w.client_as(&format!("join={id}@sam"), SAM_PASSWORD).pty();
    sam.expect_stderr("(keyboard); Ctrl-] leaves", long);
    alice.expect_stderr("gatehouse: sam joined this session (keyboard)", long);
    sam.send_line("echo typed-by-sam-$((5*5))");
    alice.expect("typed-by-sam-25", long);
    sam.expect("typed-by-sam-25", long);

    // Over the API (the portal's live view): the same terminal as an asciicast stream, for
    // whoever policy lets watch; alice is told; bob gets a 404 as for no session at all.
    let sam_api = support::api_bearer(&w.gh, "sam", SAM_PASSWORD);
    let (mut stream, body) =
        support::curl_stream(&w.gh, &format!("/api/v1/sessions/{id}/live"), &sam_api, 20);
    alice.expect_stderr("sam is watching this session (read-only, api)", long);
    alice.send_line("echo over-the-api-$((8*8))");
    let text = poll(long, || {
        let text = std::fs::read_to_string(body.path()).unwrap_or_default();
        text.contains("over-the-api-64").then_some(text)
    })
    .expect("the live stream shows what alice's terminal shows");
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(header["version"], 2, "{text}");
    assert!(
        text.lines().skip(1).all(|l| l.is_empty()
            || serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v[1] == "o")),
        "{text}"
    );
    let _ = stream.kill();
    let _ = stream.wait();
    alice.send_line("echo after-the-api");
    alice.expect_stderr("gatehouse: sam stopped watching this session", long);
    let bob_api = support::api_bearer(&w.gh, "bob", BOB_PASSWORD);
    for session in [id.as_str(), "0190abcd-0000-7000-8000-000000000000"] {
        let (status, _, answer) = support::curl(
            &w.gh,
            "GET",
            &format!("/api/v1/sessions/{session}/live"),
            &[&bob_api],
            None,
        );
        assert_eq!(status, 404, "{}", String::from_utf8_lossy(&answer));
    }

    // bob: the same refusal for alice's session and for one that does not exist.
    let refused = |session: &str| {
        let out = w
            .client_as(&format!("watch={session}@bob"), BOB_PASSWORD)
            .pty()
            .wait(long);
        assert!(!out.status.success(), "{}", out.describe());
        out.stderr
            .lines()
            .find(|l| l.contains("gatehouse:"))
            .unwrap_or_default()
            .replace(session, "<id>")
    };
    let for_real = refused(&id);
    assert!(
        for_real.contains("you may not watch session <id> (or it does not exist)"),
        "{for_real}"
    );
    assert_eq!(for_real, refused("0190abcd-0000-7000-8000-000000000000"));
    // A joiner cannot run a command instead of the terminal.
    let out = w
        .client_as(&format!("watch={id}@sam"), SAM_PASSWORD)
        .ssh("id");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("joining a session gives you its terminal"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // alice ends her session: sam's ends with it, and says so.
    alice.send_line("exit");
    let done = alice.wait(Duration::from_secs(60));
    assert!(done.status.success(), "{}", done.describe());
    let over = sam.wait(long);
    assert!(
        over.stderr.contains("the session ended"),
        "{}",
        over.describe()
    );

    // The audit trail: decisions with policy ids, joins and leaves on alice's session.
    let decisions = w.gh.audit_of("admin_decision");
    let decided = |action: &str, allowed: bool| {
        decisions
            .iter()
            .filter(|e| e["fields"]["action"] == action && e["fields"]["allowed"] == allowed)
            .count()
    };
    // (the command refused above was refused before any decision; one watch was over the API)
    assert_eq!(decided("watch_session", true), 2, "{decisions:#?}");
    assert_eq!(decided("join_session", true), 1, "{decisions:#?}");
    assert_eq!(decided("watch_session", false), 4, "{decisions:#?}");
    let policies = |action: &str| {
        decisions
            .iter()
            .find(|e| e["fields"]["action"] == action && e["fields"]["allowed"] == true)
            .map(|e| e["fields"]["policies"].clone())
            .unwrap()
    };
    assert_eq!(
        policies("watch_session"),
        serde_json::json!(["supervisors-watch-any-session"])
    );
    assert_eq!(
        policies("join_session"),
        serde_json::json!(["supervisors-type-outside-prod"])
    );
    let joined = w.gh.audit_of("session_joined");
    assert_eq!(joined.len(), 3, "{joined:#?}");
    assert!(
        joined
            .iter()
            .all(|e| e["session"] == id.as_str() && e["user"] == "alice")
    );
    let modes: Vec<&str> = joined
        .iter()
        .map(|e| e["fields"]["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["read-only", "keyboard", "read-only"]);
    assert_eq!(w.gh.audit_of("session_left").len(), 3);

    // The recording: who joined and left, and sam's typing attributed to him; nothing of the
    // read-only attempt.
    let shown = w.gh.session_show(&id);
    let events = shown["events"].as_array().unwrap();
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of("joined").len(), 3, "{events:#?}");
    assert_eq!(of("left").len(), 3, "{events:#?}");
    let typed = of("joined_input");
    assert_eq!(typed.len(), 1, "{typed:#?}");
    assert_eq!(typed[0]["user"], "sam");
    assert_eq!(typed[0]["text"], "echo typed-by-sam-$((5*5))\n");
    let played = w.gh.cli_ok(&["session", "play", &id, "--speed", "100"]);
    assert!(played.contains("typed-by-sam-25"), "{played}");
    assert!(!played.contains("sam-was-here-readonly"), "{played}");
}
