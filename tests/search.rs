//! End to end: session search. Real `ssh` sessions through `gatehouse serve` (a shell with
//! typed and printed markers and a secret typed where it is not echoed, a command, an scp
//! upload) are indexed as their recordings are sealed; `gatehouse session search` and
//! `GET /api/v1/search` find each moment, with fields, phrases and time bounds; hits play from
//! their moment; the secret is nowhere in the index; a user who may not watch a session finds
//! nothing of it; bad queries get one clear line; `session reindex` rebuilds the same index.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use std::time::Duration;
use support::recordings::{add_auditor, auditor_bearer, get_json};
use support::world::World;
use support::{OutputExt, api_bearer, json_str};

const TYPED: &str = "typed-marker-q7z";
const PRINTED: &str = "printed-marker-51";
/// Typed at `read -s`: in the recording's input stream only.
const SECRET: &str = "Unechoed-Pin-8812";
const EXEC: &str = "exec-marker-77";
const UPLOADED: &str = "quarterly-report-q4.csv";

fn search_json(w: &World, query: &str) -> Vec<Value> {
    let out = w.gh.cli_ok(&["session", "search", query, "--json"]);
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn sessions_of(hits: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = hits.iter().map(|h| json_str(h, "session")).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn kinds_of(hits: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = hits.iter().map(|h| json_str(h, "kind")).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

#[test]
fn sessions_are_searched_by_what_they_showed_and_typed_with_fields_and_never_the_secret() {
    let w = World::builder("search")
        .setup(|ctx| add_auditor(ctx.gh))
        .start();

    // A shell: typed, printed, an idle second, a secret at a prompt that does not echo.
    let mut shell = w.client().pty();
    shell.expect("$ ", Duration::from_secs(60));
    shell.send_line(&format!("echo {TYPED}"));
    shell.expect(&format!("{TYPED}\r\n"), Duration::from_secs(30));
    shell.send_line("sleep 3; printf 'printed-%s-%d\\n' marker 51");
    shell.expect(PRINTED, Duration::from_secs(30));
    shell.send_line("echo would run rm -rf /srv/old-data");
    shell.expect("would run rm -rf", Duration::from_secs(30));
    shell.send_line("read -s -p 'pin: ' pin; echo got-${#pin}-chars");
    shell.expect("pin: ", Duration::from_secs(30));
    shell.send_line(SECRET);
    shell.expect("got-", Duration::from_secs(30));
    shell.send_line("exit");
    let outcome = shell.wait(Duration::from_secs(60));
    assert!(outcome.status.success(), "{}", outcome.describe());
    // A command, and a file uploaded with scp.
    let out = w.client().ssh(&format!("echo {EXEC}"));
    assert!(out.status.success(), "{}", out.describe());
    let local = w.gh.data_dir().join("..").join(UPLOADED);
    std::fs::write(&local, "q4\n").unwrap();
    let out = w.client().scp_upload(&local, UPLOADED, false);
    assert!(out.status.success(), "{}", out.describe());
    w.gh.ended_sessions_of("alice", 3);

    // The recordings are indexed once sealed (complete): wait for the last one.
    let mut upload_hits = Vec::new();
    for _ in 0..60 {
        upload_hits = search_json(&w, "quarterly");
        if !upload_hits.is_empty() && !search_json(&w, EXEC).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(kinds_of(&upload_hits), ["file"], "{upload_hits:#?}");

    // What was typed and shown: the shell session, as output and as an echoed typed line.
    let typed = search_json(&w, TYPED);
    assert_eq!(sessions_of(&typed).len(), 1, "{typed:#?}");
    let shell_id = json_str(&typed[0], "session");
    assert_eq!(kinds_of(&typed), ["input", "output"], "{typed:#?}");
    // Printed only (the command line that made it differs): output, not input.
    let printed = search_json(&w, PRINTED);
    assert_eq!(sessions_of(&printed), [shell_id.as_str()], "{printed:#?}");
    assert_eq!(kinds_of(&printed), ["output"], "{printed:#?}");
    // A phrase in typed input; its snippet holds it, highlighted.
    let phrase = search_json(&w, r#"input:"rm -rf""#);
    assert_eq!(kinds_of(&phrase), ["input"], "{phrase:#?}");
    let snippet = json_str(&phrase[0], "snippet");
    assert!(snippet.contains("rm -rf /srv/old-data"), "{snippet}");
    assert_eq!(phrase[0]["highlights"].as_array().unwrap().len(), 2);
    // The phrase does not match the words apart.
    assert!(search_json(&w, r#""rf rm""#).is_empty());

    // The secret: typed, never echoed, in no hit and not in the index's files.
    for query in [SECRET, &SECRET.to_lowercase(), "8812", "Unechoed"] {
        assert!(search_json(&w, query).is_empty(), "{query} found");
    }
    let mut index_files = vec![w.gh.data_dir().join("search")];
    while let Some(path) = index_files.pop() {
        if path.is_dir() {
            index_files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            for secret in [
                SECRET,
                &w.account.password,
                support::world::GATEWAY_PASSWORD,
            ] {
                assert!(
                    !bytes.windows(secret.len()).any(|x| x == secret.as_bytes()),
                    "`{secret}` in {}",
                    path.display()
                );
            }
        }
    }

    // Fields and time bounds.
    // The command run without a shell, and what it printed.
    let exec = search_json(&w, &format!("user:alice {EXEC}"));
    assert_eq!(kinds_of(&exec), ["command", "output"], "{exec:#?}");
    assert_eq!(sessions_of(&exec).len(), 1, "{exec:#?}");
    assert_ne!(json_str(&exec[0], "session"), shell_id);
    let command = search_json(&w, &format!("kind:command {EXEC}"));
    assert_eq!(json_str(&command[0], "snippet"), format!("echo {EXEC}"));
    assert!(search_json(&w, &format!("user:bob {EXEC}")).is_empty());
    assert_eq!(
        sessions_of(&search_json(
            &w,
            &format!("protocol:ssh kind:output {TYPED}")
        )),
        [shell_id.as_str()]
    );
    assert_eq!(
        search_json(&w, &format!("after:1h {TYPED}")).len(),
        typed.len()
    );
    assert!(search_json(&w, &format!("before:2001-01-01 {TYPED}")).is_empty());
    assert!(search_json(&w, &format!("after:2999-01-01 {TYPED}")).is_empty());
    let target = json_str(&typed[0], "target");
    assert_eq!(
        sessions_of(&search_json(&w, &format!("target:\"{target}\" {TYPED}"))),
        [shell_id.as_str()]
    );

    // Each hit is a moment: the printed marker came seconds after the typed one, and playing
    // from its moment shows it.
    let typed_at = typed.iter().map(|h| h["cast_time"].as_f64().unwrap());
    let printed_at = printed[0]["cast_time"].as_f64().unwrap();
    assert!(
        typed_at.clone().all(|t| t + 2.5 < printed_at),
        "{typed:#?} {printed:#?}"
    );
    let text = w.gh.cli_ok(&["session", "search", PRINTED]);
    assert!(
        text.contains(&format!("session {shell_id} channel 0")),
        "{text}"
    );
    assert!(text.contains("«printed-marker-51»"), "{text}");
    assert!(text.contains("gatehouse session play"), "{text}");
    let from = format!("{:.1}", printed_at - 0.5);
    let played = w.gh.cli_ok(&[
        "session",
        "play",
        &shell_id,
        "--channel",
        "0",
        "--from",
        &from,
        "--speed",
        "50",
    ]);
    assert!(played.contains(PRINTED), "{played}");
    assert!(!played.contains(SECRET), "{played}");

    // Bad queries: one clear line, nothing else.
    for (query, expected) in [
        ("\"unclosed", "unclosed"),
        ("colour:blue", "fields: text, input, user"),
        ("after:someday x", "expected a date (2026-12-01)"),
        ("   ", "an empty query"),
    ] {
        let out = w.gh.cli(&["session", "search", query]);
        assert!(!out.status.success(), "{query}: {}", out.describe());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the query cannot be read") && err.contains(expected),
            "{query}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{query}: {err}");
    }

    // Over the API: an auditor finds the moment with where the player shows it; alice, whom no
    // policy lets watch recordings, finds nothing (not even that a session matched).
    let ada = auditor_bearer(&w.gh);
    let (status, found) = get_json(&w.gh, &ada, &format!("/api/v1/search?q={PRINTED}"));
    assert_eq!(status, 200, "{found}");
    let hits = found["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{found}");
    assert_eq!(hits[0]["session"], shell_id.as_str());
    let playback = hits[0]["playback_time"].as_f64().unwrap();
    assert!(playback > 0.0 && playback <= printed_at + 0.01, "{found}");
    let (_, none) = get_json(&w.gh, &ada, &format!("/api/v1/search?q={SECRET}"));
    assert_eq!(none["hits"].as_array().unwrap().len(), 0, "{none}");
    let (status, bad) = get_json(&w.gh, &ada, "/api/v1/search?q=%22unclosed");
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["code"], "bad_query");
    let alice = api_bearer(&w.gh, "alice", support::world::GATEWAY_PASSWORD);
    let (status, hidden) = get_json(&w.gh, &alice, &format!("/api/v1/search?q={PRINTED}"));
    assert_eq!(status, 200, "{hidden}");
    assert_eq!(hidden["hits"].as_array().unwrap().len(), 0, "{hidden}");
    // Who searched the recordings for what is on the record, with what they found.
    let searches = w.gh.audit_of("recordings_searched");
    let by = |user: &str, query: &str| {
        searches
            .iter()
            .find(|e| e["user"] == user && e["fields"]["query"] == query)
            .unwrap_or_else(|| panic!("no search by {user} for {query}: {searches:#?}"))
    };
    assert_eq!(by("ada", PRINTED)["fields"]["hits"], 1);
    assert_eq!(
        by("ada", PRINTED)["fields"]["sessions"],
        serde_json::json!([shell_id])
    );
    assert_eq!(by("alice", PRINTED)["fields"]["hits"], 0);

    // Rebuilt from the recordings (in the running gateway): the same answers.
    let summary = w.gh.cli_ok(&["session", "reindex"]);
    assert!(summary.contains("indexed 3 sessions"), "{summary}");
    assert_eq!(search_json(&w, TYPED), typed);
    assert_eq!(kinds_of(&search_json(&w, "quarterly")), ["file"]);
}
