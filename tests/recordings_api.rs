//! End to end: session recordings over the HTTPS API and the player page. A real `ssh` session
//! through `gatehouse serve` is recorded; an auditor (the shipped example policy
//! `auditors-view-recordings.cedar`) lists it, reads its events, searches them and reads its
//! transcript; a user the policy does not name sees nothing and gets the same 404 as for an
//! unknown session; both are audited with the deciding policies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::recordings::{
    SUPERVISOR, SUPERVISOR_PASSWORD, add_auditor, add_supervisor, auditor_bearer, get, get_json,
};
use support::world::World;
use support::{OutputExt, api_bearer, curl, json_str};

#[test]
fn an_auditor_lists_searches_and_reads_a_recorded_ssh_session_and_others_see_nothing() {
    let w = World::builder("rec_api")
        .setup(|ctx| add_auditor(ctx.gh))
        .start();
    let out = w.client().ssh("echo recorded-marker-42");
    assert!(out.status.success(), "{}", out.describe());
    let id = json_str(&w.gh.ended_sessions_of("alice", 1)[0], "id");

    let ada = auditor_bearer(&w.gh);
    let (status, list) = get_json(&w.gh, &ada, "/api/v1/sessions");
    assert_eq!(status, 200, "{list}");
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{list}");
    assert_eq!(sessions[0]["id"], id.as_str());
    assert_eq!(sessions[0]["user"], "alice");
    assert_eq!(sessions[0]["protocol"], "ssh");
    assert_eq!(sessions[0]["playback"], "transcript");

    // Its events, searchable.
    let (status, detail) = get_json(&w.gh, &ada, &format!("/api/v1/sessions/{id}"));
    assert_eq!(status, 200, "{detail}");
    let events = detail["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "exec" && e["command"] == "echo recorded-marker-42"),
        "{detail}"
    );
    let (_, found) = get_json(&w.gh, &ada, "/api/v1/sessions?contains=MARKER-42");
    assert_eq!(found["sessions"].as_array().unwrap().len(), 1, "{found}");
    let (_, none) = get_json(&w.gh, &ada, "/api/v1/sessions?contains=not-typed-anywhere");
    assert_eq!(none["sessions"].as_array().unwrap().len(), 0, "{none}");

    // The portal's filters, sorting and pagination: a second session, then each filter keeps
    // what it should.
    let out = w.client().ssh("sleep 1; echo second-session");
    assert!(out.status.success(), "{}", out.describe());
    let second =
        w.gh.ended_sessions_of("alice", 2)
            .iter()
            .map(|s| json_str(s, "id"))
            .find(|s| *s != id)
            .unwrap();
    let ids = |query: &str| -> (Vec<String>, u64) {
        let (status, list) = get_json(&w.gh, &ada, &format!("/api/v1/sessions?{query}"));
        assert_eq!(status, 200, "{query}: {list}");
        let ids = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| json_str(s, "id"))
            .collect();
        (ids, list["total"].as_u64().unwrap())
    };
    let newest_first = ids("").0;
    assert_eq!(newest_first.len(), 2);
    assert_eq!(
        ids("order=asc").0,
        newest_first.iter().rev().cloned().collect::<Vec<_>>()
    );
    assert_eq!(ids("sort=duration").0[0], second, "the longer one first");
    assert_eq!(ids("limit=1&offset=1"), (vec![newest_first[1].clone()], 2));
    let target = w.target_spec();
    assert_eq!(
        ids(&format!("target={target}&protocol=ssh&state=ended&node=-")).1,
        2
    );
    assert_eq!(ids("protocol=rdp").1, 0);
    assert_eq!(ids("state=running").1, 0);
    assert_eq!(ids("after=1h").1, 2);
    assert_eq!(ids("before=2001-01-01").1, 0);
    let (_, list) = get_json(&w.gh, &ada, "/api/v1/sessions?limit=1");
    let first = &list["sessions"][0];
    assert!(first["duration_secs"].as_u64().is_some(), "{first}");
    assert!(first["node"].is_null(), "{first}");
    for (query, expected) in [
        ("after=someday", "`after`"),
        ("state=paused", "`state` is `running` or `ended`"),
        ("sort=colour", "`sort` is"),
        ("order=up", "`order` is"),
    ] {
        let (status, answer) = get_json(&w.gh, &ada, &format!("/api/v1/sessions?{query}"));
        assert_eq!(status, 400, "{query}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{query}: {answer}"
        );
    }

    // The terminal transcript; an SSH session has no video.
    let (status, _, text) = get(&w.gh, &ada, &format!("/api/v1/sessions/{id}/transcript"));
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&text).contains("recorded-marker-42"),
        "{}",
        String::from_utf8_lossy(&text)
    );
    let (status, answer) = get_json(&w.gh, &ada, &format!("/api/v1/sessions/{id}/video"));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "not_video");

    let viewed = w.gh.audit_of("recording_viewed");
    assert_eq!(viewed.len(), 3, "events, transcript, video: {viewed:#?}");
    assert_eq!(
        viewed[0]["fields"]["policies"],
        serde_json::json!(["auditors-watch-everything"])
    );
    assert_eq!(json_str(&viewed[0], "user"), "ada");

    // alice opened the session, but no policy lets her watch it: an empty list, and the same
    // 404 as a session that does not exist.
    let alice = api_bearer(&w.gh, "alice", support::world::GATEWAY_PASSWORD);
    let (status, list) = get_json(&w.gh, &alice, "/api/v1/sessions");
    assert_eq!(status, 200);
    assert_eq!(list["sessions"].as_array().unwrap().len(), 0, "{list}");
    let (refused, body) = get_json(&w.gh, &alice, &format!("/api/v1/sessions/{id}"));
    let (unknown, other) = get_json(&w.gh, &alice, "/api/v1/sessions/no-such-session");
    assert_eq!((refused, unknown), (404, 404));
    assert_eq!(
        body["error"]["message"].as_str().unwrap().replace(&id, "X"),
        other["error"]["message"]
            .as_str()
            .unwrap()
            .replace("no-such-session", "X")
    );
    let refusals = w.gh.audit_of("recording_refused");
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    assert_eq!(
        refusals[0]["fields"]["policies"],
        serde_json::json!(["default-deny"])
    );
    // Without a token: 401.
    let (status, _) = get_json(&w.gh, "X-None: 1", "/api/v1/sessions");
    assert_eq!(status, 401);

    // The player: the gateway's own page and script, under a strict content security policy.
    let (status, headers, page) = curl(&w.gh, "GET", "/player", &[], None);
    assert_eq!(status, 200);
    let headers = headers.to_lowercase();
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(
        headers.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{headers}"
    );
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("<script src=\"/player.js\""), "{page}");
    for asset in ["/player.js", "/player.css"] {
        let (status, _, body) = curl(&w.gh, "GET", asset, &[], None);
        assert_eq!(status, 200, "{asset}");
        assert!(!body.is_empty(), "{asset}");
    }
}

/// Who may end a running session over the API is a Cedar decision (`terminate_session`, the
/// shipped example `supervisors-end-sessions.cedar`): a supervisor ends alice's shell and
/// alice reads who and why; an auditor, who may watch, may not end it and gets the same 404 as
/// for no session; every decision is audited with its policies; bad bodies are 400s.
#[test]
fn a_supervisor_ends_a_running_session_over_the_api_and_the_user_reads_why() {
    let w = World::builder("end_api")
        .setup(|ctx| {
            add_auditor(ctx.gh);
            add_supervisor(ctx.gh);
        })
        .start();
    let mut shell = w.client().pty();
    shell.expect("$ ", std::time::Duration::from_secs(60));
    shell.send_line("echo still-here");
    shell.expect("still-here", std::time::Duration::from_secs(30));
    let id = support::poll(std::time::Duration::from_secs(20), || {
        w.gh.sessions()
            .into_iter()
            .find(|s| s["ended"].is_null())
            .map(|s| json_str(&s, "id"))
    })
    .expect("the running session is listed");
    let path = format!("/api/v1/sessions/{id}/terminate");
    let post = |bearer: &str, body: &str| {
        let (status, _, answer) = curl(&w.gh, "POST", &path, &[bearer], Some(body));
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&answer).unwrap_or_default(),
        )
    };
    let reason = r#"{"reason": "change freeze: INC-4471"}"#;

    // The auditor may watch, not end: the same 404 as a session that does not exist.
    let ada = auditor_bearer(&w.gh);
    let (refused, body) = post(&ada, reason);
    assert_eq!(refused, 404, "{body}");
    let (status, _, unknown) = curl(
        &w.gh,
        "POST",
        "/api/v1/sessions/no-such-session/terminate",
        &[&ada],
        Some(reason),
    );
    assert_eq!(status, 404);
    let unknown: serde_json::Value = serde_json::from_slice(&unknown).unwrap();
    assert_eq!(
        body["error"]["message"].as_str().unwrap().replace(&id, "X"),
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace("no-such-session", "X")
    );

    // Bad bodies change nothing.
    let sam = api_bearer(&w.gh, SUPERVISOR, SUPERVISOR_PASSWORD);
    for bad in [
        r#"{"reason": ""}"#,
        r#"{"reason": "two\nlines"}"#,
        r#"{}"#,
        r#"{"reason": "x", "force": true}"#,
        "not json",
    ] {
        // The API's way: 400 for what cannot be read or is not allowed, 422 for a body of the
        // wrong shape.
        let (status, body) = post(&sam, bad);
        assert!(matches!(status, 400 | 422), "{bad}: {status} {body}");
        assert!(body["error"]["message"].is_string(), "{bad}: {body}");
    }
    let long = serde_json::json!({ "reason": "x".repeat(201) }).to_string();
    assert_eq!(post(&sam, &long).0, 400);
    assert!(
        w.gh.sessions()
            .iter()
            .any(|s| s["id"] == id.as_str() && s["ended"].is_null())
    );

    // The supervisor ends it: alice's client reads who and why, and is disconnected.
    let (status, ended) = post(&sam, reason);
    assert_eq!(
        status,
        200,
        "{ended}\n{:#?}",
        w.gh.audit_of("admin_decision")
    );
    assert_eq!(ended["ended"], true);
    let outcome = shell.wait(std::time::Duration::from_secs(30));
    let told = format!("{}{}", outcome.stdout, outcome.stderr);
    assert!(
        told.contains("an administrator (sam) ended this session: change freeze: INC-4471"),
        "{}",
        outcome.describe()
    );
    let ended_event = support::poll(std::time::Duration::from_secs(10), || {
        w.gh.audit_of("session_ended")
            .into_iter()
            .find(|e| e["fields"]["terminated_by"] == SUPERVISOR)
    })
    .expect("the end is audited with who ended it");
    assert_eq!(ended_event["fields"]["reason"], "change freeze: INC-4471");
    // Both decisions are in the trail with their policies.
    let decisions: Vec<serde_json::Value> =
        w.gh.audit_of("admin_decision")
            .into_iter()
            .filter(|e| e["fields"]["action"] == "terminate_session")
            .collect();
    let of = |user: &str| {
        decisions
            .iter()
            .find(|e| e["user"] == user && e["fields"]["session"] == id.as_str())
            .unwrap_or_else(|| panic!("no decision for {user}: {decisions:#?}"))
            .clone()
    };
    assert_eq!(of("ada")["fields"]["allowed"], false);
    assert_eq!(
        of("ada")["fields"]["policies"],
        serde_json::json!(["default-deny"])
    );
    assert_eq!(of(SUPERVISOR)["fields"]["allowed"], true);
    assert_eq!(
        of(SUPERVISOR)["fields"]["policies"],
        serde_json::json!(["supervisors-end-any-session"])
    );

    // Once over: a 409 that says so.
    let again = support::poll(std::time::Duration::from_secs(10), || {
        let (status, body) = post(&sam, reason);
        (status == 409).then_some(body)
    })
    .expect("ending an ended session is a 409");
    assert_eq!(again["error"]["code"], "session_ended");
}
