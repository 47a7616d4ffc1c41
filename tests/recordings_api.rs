//! End to end: session recordings over the HTTPS API and the player page. A real `ssh` session
//! through `gatehouse serve` is recorded; an auditor (the shipped example policy
//! `auditors-view-recordings.cedar`) lists it, reads its events, searches them and reads its
//! transcript; a user the policy does not name sees nothing and gets the same 404 as for an
//! unknown session; both are audited with the deciding policies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::recordings::{add_auditor, auditor_bearer, get, get_json};
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
