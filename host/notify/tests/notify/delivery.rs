//! Delivery to a real SMTP server (aiosmtpd): plain, STARTTLS, implicit TLS, AUTH, and the
//! failures an operator meets (server down, certificate not trusted, wrong password, slow
//! server), all through the notifier the workflow uses.

use crate::support::{
    Pki, REQUEST_ID, ServerOptions, SmtpServer, approved, awaiting_approval, channel_sink,
    password_file, reports, settings,
};
use gatehouse_notify::{
    DeliveryOutcome, DeliveryReport, EventKind, Mailer, Notifier, NotifyError, Security, SendError,
    deliver,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LINK: &str =
    "https://gatehouse.example.test/api/v1/requests/0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45";

fn delivered(event: EventKind, recipient: &str) -> DeliveryReport {
    DeliveryReport {
        request_id: REQUEST_ID.to_owned(),
        event,
        outcome: DeliveryOutcome::Delivered {
            recipient: recipient.to_owned(),
        },
    }
}

/// The failure of the one report expected, or a panic naming what came instead.
fn single_failure(reports: Vec<DeliveryReport>) -> SendError {
    match <[DeliveryReport; 1]>::try_from(reports) {
        Ok(
            [
                DeliveryReport {
                    outcome: DeliveryOutcome::Failed { error, .. },
                    ..
                },
            ],
        ) => error,
        other => panic!("expected one failed delivery, got {other:?}"),
    }
}

/// The proof the workflow needs: an approval request and its approval, sent through the
/// notifier, arrive at a real SMTP server with the right envelope, headers and body.
#[tokio::test]
async fn approval_mails_arrive_at_a_real_smtp_server() {
    let server = SmtpServer::start(ServerOptions::default());
    let settings = settings("127.0.0.1", server.port, Security::None);
    let (sink, mut receiver) = channel_sink();
    let notifier = Notifier::from_settings(Some(&settings), sink).unwrap();
    assert!(notifier.is_enabled());

    notifier
        .notify(awaiting_approval(&[
            "Bob Approver <bob@example.test>",
            "carol@example.test",
            "CAROL@example.test",
        ]))
        .unwrap();
    notifier.notify(approved(&["alice@example.test"])).unwrap();

    let got = reports(&mut receiver, 3).await;
    assert_eq!(
        got,
        vec![
            delivered(
                EventKind::AwaitingApproval,
                "Bob Approver <bob@example.test>"
            ),
            delivered(EventKind::AwaitingApproval, "carol@example.test"),
            delivered(EventKind::Approved, "alice@example.test"),
        ]
    );

    let messages = server.wait_for_messages(3).await;
    assert_eq!(messages.len(), 3, "a duplicate recipient gets one message");
    let to_bob = &messages[0];
    assert_eq!(to_bob.mail_from, "gatehouse@example.test");
    assert_eq!(to_bob.rcpt_tos, vec!["bob@example.test"]);
    assert_eq!(to_bob.tls, None);
    assert_eq!(to_bob.header("From"), "Gatehouse <gatehouse@example.test>");
    assert_eq!(to_bob.header("To"), "Bob Approver <bob@example.test>");
    assert_eq!(
        to_bob.header("Subject"),
        "[Gatehouse] Approval needed: alice requests session access to root@db1"
    );
    assert!(to_bob.headers.contains_key("Date"), "{:?}", to_bob.headers);
    assert_eq!(to_bob.content_type, "text/plain");
    assert_eq!(to_bob.charset.as_deref(), Some("utf-8"));
    let body = to_bob.body();
    assert!(
        body.contains(&format!("Request:      {REQUEST_ID}\n")),
        "{body}"
    );
    assert!(body.contains("Ticket:       CHG-1042\n"), "{body}");
    assert!(body.contains("Approvals:    0 of 2 given\n"), "{body}");
    assert!(
        body.contains(&format!("Review the request: {LINK}\n")),
        "{body}"
    );

    // Each recipient gets a message of their own and sees no other recipient.
    assert!(!to_bob.raw.contains("carol"), "{}", to_bob.raw);
    assert_eq!(messages[1].rcpt_tos, vec!["carol@example.test"]);
    assert!(!messages[1].raw.contains("bob@"), "{}", messages[1].raw);
    assert_eq!(messages[1].header("To"), "carol@example.test");

    let to_alice = &messages[2];
    assert_eq!(to_alice.rcpt_tos, vec!["alice@example.test"]);
    assert_eq!(
        to_alice.header("Subject"),
        "[Gatehouse] Approved: session access to root@db1 for alice"
    );
    let body = to_alice.body();
    assert!(body.contains("was approved by bob."), "{body}");
    assert!(
        body.contains("Access until: 2025-03-01T14:30:00Z\n"),
        "{body}"
    );
    assert!(body.contains(&format!("The request: {LINK}\n")), "{body}");
}

#[tokio::test]
async fn starttls_with_the_ca_file_delivers_encrypted() {
    let pki = Pki::new();
    let server = SmtpServer::start(ServerOptions {
        security: Some(Security::Starttls),
        pki: Some(&pki),
        ..Default::default()
    });
    let mut settings = settings("localhost", server.port, Security::Starttls);
    settings.ca_file = Some(pki.ca_cert.clone());
    let mailer = Mailer::new(&settings).unwrap();
    mailer.check_connection().await.unwrap();

    let got = deliver(&mailer, &approved(&["alice@example.test"])).await;
    assert_eq!(
        got,
        vec![delivered(EventKind::Approved, "alice@example.test")]
    );
    let messages = server.wait_for_messages(1).await;
    assert_eq!(messages[0].tls.as_deref(), Some("TLSv1.3"));
    assert_eq!(messages[0].header("To"), "alice@example.test");
    assert!(messages[0].body().contains(REQUEST_ID));
}

#[tokio::test]
async fn implicit_tls_delivers_encrypted() {
    let pki = Pki::new();
    let server = SmtpServer::start(ServerOptions {
        security: Some(Security::Tls),
        pki: Some(&pki),
        ..Default::default()
    });
    // The certificate names 127.0.0.1 too: TLS to an address checks the address.
    let mut settings = settings("127.0.0.1", server.port, Security::Tls);
    settings.ca_file = Some(pki.ca_cert.clone());
    let mailer = Mailer::new(&settings).unwrap();

    let got = deliver(&mailer, &awaiting_approval(&["bob@example.test"])).await;
    assert_eq!(
        got,
        vec![delivered(EventKind::AwaitingApproval, "bob@example.test")]
    );
    let messages = server.wait_for_messages(1).await;
    assert_eq!(messages[0].tls.as_deref(), Some("TLSv1.3"));
    assert!(messages[0].body().contains(REQUEST_ID));
}

#[tokio::test]
async fn smtp_auth_over_starttls_and_over_implicit_tls() {
    let pki = Pki::new();
    let secrets = tempfile::tempdir().unwrap();
    let password = "correct horse battery staple";
    for security in [Security::Starttls, Security::Tls] {
        let server = SmtpServer::start(ServerOptions {
            security: Some(security),
            pki: Some(&pki),
            auth: Some(("gatehouse-mailer", password)),
        });
        let mut settings = settings("localhost", server.port, security);
        settings.ca_file = Some(pki.ca_cert.clone());
        settings.username = Some("gatehouse-mailer".to_owned());
        settings.password_file = Some(password_file(secrets.path(), password));
        let mailer = Mailer::new(&settings).unwrap();
        assert!(!format!("{mailer:?}").contains(password));

        let got = deliver(&mailer, &approved(&["alice@example.test"])).await;
        assert_eq!(
            got,
            vec![delivered(EventKind::Approved, "alice@example.test")],
            "{security:?}"
        );
        let messages = server.wait_for_messages(1).await;
        assert_eq!(messages[0].login.as_deref(), Some("gatehouse-mailer"));
        assert!(messages[0].tls.is_some());
    }
}

/// A server that requires AUTH refuses a client that has no credentials, and one with the
/// wrong password; the report says so and never carries the password.
#[tokio::test]
async fn wrong_or_missing_credentials_are_reported_without_the_password() {
    let pki = Pki::new();
    let secrets = tempfile::tempdir().unwrap();
    let server = SmtpServer::start(ServerOptions {
        security: Some(Security::Starttls),
        pki: Some(&pki),
        auth: Some(("gatehouse-mailer", "the right one")),
    });
    let mut settings = settings("localhost", server.port, Security::Starttls);
    settings.ca_file = Some(pki.ca_cert.clone());

    let anonymous = Mailer::new(&settings).unwrap();
    let error = single_failure(deliver(&anonymous, &approved(&["alice@example.test"])).await);
    assert!(
        matches!(&error, SendError::Rejected { detail, .. } if detail.contains("530")),
        "{error:?}"
    );

    let wrong_password = "not-the-right-one-7f3a";
    settings.username = Some("gatehouse-mailer".to_owned());
    settings.password_file = Some(password_file(secrets.path(), wrong_password));
    let mailer = Mailer::new(&settings).unwrap();
    let error = single_failure(deliver(&mailer, &approved(&["alice@example.test"])).await);
    let text = error.to_string();
    assert!(
        matches!(&error, SendError::Rejected { detail, .. } if detail.contains("535")),
        "{error:?}"
    );
    assert!(!text.contains(wrong_password), "{text}");
    assert!(!format!("{error:?}").contains(wrong_password));
    assert_eq!(
        mailer.check_connection().await.unwrap_err().to_string(),
        format!(
            "mail server `localhost:{}` refused the connection check: permanent error (535): \
             5.7.8 Authentication credentials invalid",
            server.port
        )
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_a_failed_delivery() {
    // A port that was free a moment ago: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (sink, mut receiver) = channel_sink();
    let notifier =
        Notifier::from_settings(Some(&settings("127.0.0.1", port, Security::None)), sink).unwrap();
    notifier
        .notify(awaiting_approval(&["bob@example.test"]))
        .unwrap();
    let got = reports(&mut receiver, 1).await;
    assert_eq!(got[0].event, EventKind::AwaitingApproval);
    assert_eq!(got[0].request_id, REQUEST_ID);
    let error = single_failure(got.clone());
    assert!(
        matches!(&error, SendError::Connection { server, detail }
            if *server == format!("127.0.0.1:{port}") && detail.contains("Connection refused")),
        "{error:?}"
    );
    assert_eq!(
        got[0].to_string(),
        format!(
            "`awaiting-approval` mail for request `{REQUEST_ID}` not delivered to \
             `bob@example.test`: cannot reach mail server `127.0.0.1:{port}`: {}",
            match &error {
                SendError::Connection { detail, .. } => detail,
                _ => unreachable!(),
            }
        )
    );
}

#[tokio::test]
async fn a_certificate_not_trusted_is_a_failed_delivery_that_says_so() {
    let pki = Pki::new();
    let server = SmtpServer::start(ServerOptions {
        security: Some(Security::Starttls),
        pki: Some(&pki),
        ..Default::default()
    });
    // No ca_file: the built-in web roots do not know the test CA.
    let settings = settings("localhost", server.port, Security::Starttls);
    let mailer = Mailer::new(&settings).unwrap();
    let error = single_failure(deliver(&mailer, &approved(&["alice@example.test"])).await);
    assert_eq!(
        error.to_string(),
        format!(
            "the certificate of mail server `localhost:{}` is not trusted (invalid peer \
             certificate: UnknownIssuer); set `ca_file` to the certificate of the CA that \
             signed it",
            server.port
        )
    );
    assert_eq!(
        mailer.check_connection().await.unwrap_err().to_string(),
        error.to_string()
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused() {
    let pki = Pki::for_names(&["mail.example.test"]);
    let server = SmtpServer::start(ServerOptions {
        security: Some(Security::Tls),
        pki: Some(&pki),
        ..Default::default()
    });
    // A trusted CA, but a certificate that does not name `localhost`.
    let mut settings = settings("localhost", server.port, Security::Tls);
    settings.ca_file = Some(pki.ca_cert.clone());
    let mailer = Mailer::new(&settings).unwrap();
    let error = mailer.check_connection().await.unwrap_err();
    assert!(
        matches!(&error, SendError::Tls { detail, .. } if detail.contains("not valid for name")),
        "{error:?}"
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_bad_recipient_fails_alone() {
    let server = SmtpServer::start(ServerOptions::default());
    let mailer = Mailer::new(&settings("127.0.0.1", server.port, Security::None)).unwrap();
    let got = deliver(
        &mailer,
        &approved(&["not an address", "alice@example.test", "  "]),
    )
    .await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        matches!(&got[0].outcome, DeliveryOutcome::Failed { recipient, error: SendError::InvalidRecipient { .. } } if recipient == "not an address"),
        "{got:?}"
    );
    assert_eq!(got[1], delivered(EventKind::Approved, "alice@example.test"));
    assert_eq!(server.wait_for_messages(1).await.len(), 1);

    let nobody = deliver(&mailer, &approved(&[])).await;
    assert_eq!(nobody[0].outcome, DeliveryOutcome::NoRecipients);
}

#[tokio::test]
async fn a_notifier_without_settings_reports_once_that_mail_is_not_configured() {
    let (sink, mut receiver) = channel_sink();
    let notifier = Notifier::from_settings(None, sink).unwrap();
    assert!(!notifier.is_enabled());
    notifier
        .notify(awaiting_approval(&["bob@example.test"]))
        .unwrap();
    notifier.notify(approved(&["alice@example.test"])).unwrap();
    let got = reports(&mut receiver, 1).await;
    assert_eq!(
        got,
        vec![DeliveryReport {
            request_id: REQUEST_ID.to_owned(),
            event: EventKind::AwaitingApproval,
            outcome: DeliveryOutcome::NotConfigured,
        }]
    );
    assert_eq!(
        got[0].to_string(),
        format!(
            "`awaiting-approval` mail for request `{REQUEST_ID}` not sent: mail not configured"
        )
    );
    assert!(receiver.try_recv().is_err(), "reported only once");
}

/// A mail server that accepts the connection and never says a word: the queue fills, `notify`
/// keeps returning at once, and the stuck delivery ends as a timeout.
#[tokio::test]
async fn a_silent_server_fills_the_queue_without_blocking_the_caller() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keeper = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            keeper.lock().await.push(socket);
        }
    });

    let mut settings = settings("127.0.0.1", port, Security::None);
    settings.timeout_seconds = Some(1);
    let (sink, mut receiver) = channel_sink();
    let notifier = Notifier::start(Mailer::new(&settings).unwrap(), sink, 2).unwrap();

    let started = Instant::now();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        outcomes.push(notifier.notify(approved(&["alice@example.test"])));
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "notify waited {:?}",
        started.elapsed()
    );
    // One taken by the delivery task (or not yet), two waiting: at least two refused.
    let refused: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(refused.len() >= 2, "{outcomes:?}");
    assert_eq!(
        refused[0],
        &NotifyError::QueueFull {
            request_id: REQUEST_ID.to_owned(),
            event: EventKind::Approved,
            capacity: 2,
        }
    );
    assert_eq!(
        refused[0].to_string(),
        format!(
            "the mail queue is full (2 notifications waiting): the `approved` mail for request \
             `{REQUEST_ID}` was dropped"
        )
    );

    let first = reports(&mut receiver, 1).await;
    let error = single_failure(first);
    assert!(matches!(&error, SendError::Timeout { .. }), "{error:?}");
}

/// Captures everything logged at any level on this thread.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Successful and refused AUTH, logged at TRACE: the password appears in no log line, in
/// clear or in the base64 forms AUTH PLAIN and AUTH LOGIN send.
#[tokio::test(flavor = "current_thread")]
async fn the_smtp_password_is_in_no_log_line() {
    use base64::Engine as _;
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    let secrets = tempfile::tempdir().unwrap();
    let right = "Right-Passw0rd-4d1c";
    let wrong = "Wrong-Passw0rd-9e2b";
    let server = SmtpServer::start(ServerOptions {
        security: Some(Security::Starttls),
        pki: Some(&pki),
        auth: Some(("gatehouse-mailer", right)),
    });
    for (password, expect_delivered) in [(right, true), (wrong, false)] {
        let dir = secrets
            .path()
            .join(if expect_delivered { "right" } else { "wrong" });
        std::fs::create_dir(&dir).unwrap();
        let mut settings = settings("localhost", server.port, Security::Starttls);
        settings.ca_file = Some(pki.ca_cert.clone());
        settings.username = Some("gatehouse-mailer".to_owned());
        settings.password_file = Some(password_file(&dir, password));
        let (sink, mut receiver) = channel_sink();
        let notifier = Notifier::from_settings(Some(&settings), sink).unwrap();
        notifier.notify(approved(&["alice@example.test"])).unwrap();
        let got = reports(&mut receiver, 1).await;
        assert_eq!(
            matches!(got[0].outcome, DeliveryOutcome::Delivered { .. }),
            expect_delivered,
            "{got:?}"
        );
    }

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("mail delivered"), "{text}");
    assert!(text.contains("mail not delivered"), "{text}");
    let engine = base64::engine::general_purpose::STANDARD;
    for password in [right, wrong] {
        for form in [
            password.to_owned(),
            engine.encode(password),
            engine.encode(format!("\0gatehouse-mailer\0{password}")),
        ] {
            assert!(!text.contains(&form), "`{form}` was logged:\n{text}");
        }
    }
}

#[test]
fn a_notifier_needs_a_runtime() {
    let mailer = Mailer::new(&settings("127.0.0.1", 25, Security::None)).unwrap();
    let (sink, _receiver) = channel_sink();
    let error = Notifier::start(mailer, sink, 8).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the mail sender needs a tokio runtime, and none is running"
    );
}

/// `starttls` means STARTTLS or nothing: a server that does not offer it (or an attacker who
/// strips it from the answer) gets neither the message nor the password.
#[tokio::test]
async fn starttls_is_required_not_opportunistic() {
    let server = SmtpServer::start(ServerOptions::default());
    let settings = settings("127.0.0.1", server.port, Security::Starttls);
    let mailer = Mailer::new(&settings).unwrap();
    let error = single_failure(deliver(&mailer, &approved(&["alice@example.test"])).await);
    assert_eq!(
        error.to_string(),
        format!(
            "TLS with mail server `127.0.0.1:{}` failed: the server does not offer STARTTLS, \
             which `security` `starttls` requires",
            server.port
        )
    );
    assert!(server.messages().is_empty());
}
