//! What each message says: one expected subject and body per event (tests as data).

use crate::support::{REQUEST_ID, approved, awaiting_approval, request};
use gatehouse_notify::{AccessKind, Event, Notification, Rendered, request_link};

const URL: &str = "https://gatehouse.example.test";

fn check(notification: &Notification, gateway_url: Option<&str>, subject: &str, body: &str) {
    let rendered = notification.render(gateway_url);
    assert_eq!(
        rendered,
        Rendered {
            subject: subject.to_owned(),
            body: body.to_owned(),
        },
        "\n--- got body ---\n{}",
        rendered.body
    );
}

#[test]
fn awaiting_approval_with_a_link() {
    check(
        &awaiting_approval(&["bob@example.test"]),
        Some(URL),
        "[Gatehouse] Approval needed: alice requests session access to root@db1",
        "\
alice requests session access to root@db1. The request awaits approval.

Request:      0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45
Requester:    alice
Target:       root@db1
Access:       session
Reason:       rotate the TLS certificate on db1
Ticket:       CHG-1042
Approvals:    0 of 2 given

Review the request: https://gatehouse.example.test/api/v1/requests/0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45

--
Sent by Gatehouse. Gatehouse never sends passwords or keys by email.
",
    );
}

#[test]
fn approved_without_a_gateway_url() {
    check(
        &approved(&["alice@example.test"]),
        None,
        "[Gatehouse] Approved: session access to root@db1 for alice",
        "\
The request of alice for session access to root@db1 was approved by bob.

Request:      0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45
Requester:    alice
Target:       root@db1
Access:       session
Approved by:  bob
Access until: 2025-03-01T14:30:00Z

--
Sent by Gatehouse. Gatehouse never sends passwords or keys by email.
",
    );
}

#[test]
fn denied_password_release() {
    let mut summary = request();
    summary.access = AccessKind::Password;
    check(
        &Notification {
            request: summary,
            event: Event::Denied {
                denied_by: "carol".to_owned(),
                comment: Some("use the break-glass account".to_owned()),
            },
            recipients: vec![],
        },
        Some("https://gatehouse.example.test/"),
        "[Gatehouse] Denied: the password of root@db1 for alice",
        "\
The request of alice for the password of root@db1 was denied by carol.

Request:      0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45
Requester:    alice
Target:       root@db1
Access:       password
Denied by:    carol
Comment:      use the break-glass account

The request: https://gatehouse.example.test/api/v1/requests/0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45

--
Sent by Gatehouse. Gatehouse never sends passwords or keys by email.
",
    );
}

#[test]
fn expired_private_key_release() {
    let mut summary = request();
    summary.access = AccessKind::PrivateKey;
    check(
        &Notification {
            request: summary,
            event: Event::Expired {
                why: Some("not approved within 60 minutes".to_owned()),
            },
            recipients: vec![],
        },
        None,
        "[Gatehouse] Expired: the private key of root@db1 for alice",
        "\
The request of alice for the private key of root@db1 has expired; it grants no access.

Request:      0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45
Requester:    alice
Target:       root@db1
Access:       private_key
Expired:      not approved within 60 minutes

--
Sent by Gatehouse. Gatehouse never sends passwords or keys by email.
",
    );
}

#[test]
fn revoked_session() {
    check(
        &Notification {
            request: request(),
            event: Event::Revoked {
                revoked_by: "dave".to_owned(),
            },
            recipients: vec![],
        },
        None,
        "[Gatehouse] Revoked: session access to root@db1 for alice",
        "\
The request of alice for session access to root@db1 was revoked by dave; it grants no access.

Request:      0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45
Requester:    alice
Target:       root@db1
Access:       session
Revoked by:   dave

--
Sent by Gatehouse. Gatehouse never sends passwords or keys by email.
",
    );
}

/// Without a known window end and without a reason for an expiry, the lines are left out.
#[test]
fn optional_lines_are_left_out() {
    let mut notification = approved(&[]);
    notification.event = Event::Approved {
        approved_by: "bob".to_owned(),
        window_end: None,
    };
    let body = notification.render(None).body;
    assert!(body.contains("Approved by:  bob\n\n--"), "{body}");
    notification.event = Event::Expired { why: None };
    let body = notification.render(None).body;
    assert!(body.contains("Access:       session\n\n--"), "{body}");
}

/// Free text cannot add lines (a fake "Approved" paragraph, a phishing link) or headers.
#[test]
fn free_text_stays_on_its_line() {
    let mut notification = awaiting_approval(&[]);
    notification.request.requester = "mallory\r\nBcc: everyone@example.test".to_owned();
    notification.event = Event::AwaitingApproval {
        reason: Some("urgent\n\nApproved by security. Sign in at https://evil.test".to_owned()),
        ticket: Some("   ".to_owned()),
        approvals_given: 1,
        approvals_needed: 2,
    };
    let rendered = notification.render(None);
    assert_eq!(
        rendered.subject,
        "[Gatehouse] Approval needed: mallory  Bcc: everyone@example.test requests session access to root@db1"
    );
    assert!(
        rendered
            .body
            .contains("Reason:       urgent  Approved by security. Sign in at https://evil.test\n"),
        "{}",
        rendered.body
    );
    assert!(rendered.body.contains("Ticket:       (none)\n"));
    assert!(rendered.body.contains("Approvals:    1 of 2 given\n"));
    assert!(!rendered.body.contains("\r"));
}

#[test]
fn long_text_is_cut() {
    let mut notification = awaiting_approval(&[]);
    notification.event = Event::AwaitingApproval {
        reason: Some("x".repeat(2000)),
        ticket: None,
        approvals_given: 0,
        approvals_needed: 1,
    };
    let body = notification.render(None).body;
    let reason = body
        .lines()
        .find_map(|line| line.strip_prefix("Reason:       "))
        .unwrap();
    assert_eq!(reason, format!("{}…", "x".repeat(500)));
}

#[test]
fn request_links_encode_the_id() {
    assert_eq!(
        request_link("https://gw.example/", REQUEST_ID),
        format!("https://gw.example/api/v1/requests/{REQUEST_ID}")
    );
    assert_eq!(
        request_link("https://gw.example/base", "a b/c?d"),
        "https://gw.example/base/api/v1/requests/a%20b%2Fc%3Fd"
    );
}
