//! `ticket-required` asks for a ticket and checks its format; the linked `rest-ticketing`
//! validates it against a REST endpoint and comments on it when the session ends.

use crate::support::*;
use gatehouse_plugin_host::fixture::render_verdict;
use gatehouse_plugin_host::*;

/// `rest-ticketing` against `127.0.0.1:port`, linked from `ticket-required`.
fn install_ticketing(env: &TestEnv, port: u16) {
    env.install(
        "rest-ticketing",
        Grants {
            http: vec![format!("127.0.0.1:{port}")],
            ..grants()
        },
        &format!("endpoint = \"http://127.0.0.1:{port}/api\""),
    );
    env.install(
        "ticket-required",
        Grants {
            ticketing: Some("rest-ticketing".into()),
            ..grants()
        },
        "",
    );
}

async fn env() -> (TestEnv, u16, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    let (port, seen) =
        http_server(
            |request| match (request.method.as_str(), request.path.as_str()) {
                ("GET", "/api/tickets/CHG123456") => {
                    (200, r#"{"status":"open","assignee":"alice"}"#.into())
                }
                ("GET", "/api/tickets/CHG000001") => (200, r#"{"status":"closed"}"#.into()),
                ("POST", "/api/tickets/CHG123456/comments") => (201, "{}".into()),
                _ => (404, "{}".into()),
            },
        )
        .await;
    let env = TestEnv::new();
    install_ticketing(&env, port);
    (env, port, seen)
}

#[tokio::test]
async fn ticket_question_is_asked_answered_validated_and_closed() {
    let (env, _port, seen) = env().await;
    let host = env.host();
    let conn = connection("alice");
    let mut cookies = SessionCookies::default();

    let asked = host.authorize(&conn, &mut cookies, &[]).await.unwrap();
    assert_eq!(
        render_verdict(&asked).text,
        "need-info from `ticket-required`: key `ticket`, echo on, prompt \"Ticket number: \""
    );
    let answered = host
        .authorize(&conn, &mut cookies, &[Answer::new("ticket", "CHG123456")])
        .await
        .unwrap();
    assert_eq!(
        render_verdict(&answered).text,
        "accept\n  user: alice\n  groups: ops\n  \
         audit: rest-ticketing ticket-status=open\n  \
         audit: rest-ticketing ticket-assignee=alice\n  \
         audit: ticket-required ticket=CHG123456"
    );
    assert_eq!(
        cookies.tickets().collect::<Vec<_>>(),
        vec![("rest-ticketing", "CHG123456")]
    );

    let end = SessionEnd {
        started_at_ms: 1,
        ended_at_ms: 2,
        bytes_from_client: 10,
        bytes_to_client: 20,
        reason: "closed".into(),
    };
    let failures = host.session_ended(&conn, &mut cookies, &end).await;
    assert_eq!(failures, Vec::new());
    let seen = seen.lock().unwrap().clone();
    let comment = seen
        .iter()
        .find(|s| s.method == "POST")
        .expect("a comment was posted");
    assert_eq!(comment.path, "/api/tickets/CHG123456/comments");
    assert!(
        comment
            .body
            .contains("\"session-id\":\"0190b1e2-0000-7000-8000-000000000001\""),
        "{}",
        comment.body
    );
}

#[tokio::test]
async fn tickets_data_driven() {
    let (env, _port, _seen) = env().await;
    let host = env.host();
    let cases = [
        ("ticket=CHG123456", "accept"),
        (
            "ticket=BAD-1",
            "deny by `ticket-required`: ticket id `BAD-1` does not match the expected format (CHG or INC followed by 6 digits)",
        ),
        (
            "ticket=CHG000001",
            "deny by `rest-ticketing`: ticket `CHG000001`: ticket is `closed`",
        ),
        (
            "ticket=INC999999",
            "deny by `rest-ticketing`: ticket `INC999999`: no such ticket",
        ),
    ];
    for (option, expected) in cases {
        let (key, value) = option.split_once('=').unwrap();
        let conn = connection_with("alice", key, value);
        let verdict = host
            .authorize(&conn, &mut SessionCookies::default(), &[])
            .await
            .unwrap();
        let text = render_verdict(&verdict).text;
        assert!(
            text.starts_with(expected),
            "{option}: expected {expected:?}, got {text:?}"
        );
    }
}

#[tokio::test]
async fn unreachable_ticketing_endpoint_fails_closed() {
    let env = TestEnv::new();
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    install_ticketing(&env, port);
    let host = env.host();
    let conn = connection_with("alice", "ticket", "CHG123456");
    let failure = host
        .authorize(&conn, &mut SessionCookies::default(), &[])
        .await
        .unwrap_err();
    assert_eq!(
        failure.to_string(),
        "plugin `rest-ticketing` in ticketing.validate: the plugin reported an error: request refused: ConnectionRefused"
    );
}
