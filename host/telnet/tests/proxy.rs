//! The whole path through a test gateway built from the crate: a user (the crate's own small
//! Telnet user, and the real inetutils `telnet` under a pty) logs in to the gateway in-band,
//! the gateway logs in to a real `in.telnetd` with the vault's password, relays and records.
//! The password never reaches the user nor the recording; the terminal type and window size
//! (and a later resize) reach the target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use gatehouse_telnet::{Side, WindowSize};
use std::process::Stdio;
use std::time::Duration;
use support::{
    GATEWAY_PASSWORD, GATEWAY_USER, TARGET_PASSWORD, Telnetd, TestUser, contains, serve_one,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_runs_a_command_on_the_target_through_the_gateway() {
    let telnetd = Telnetd::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_address = listener.local_addr().unwrap();
    let gateway = tokio::spawn(serve_one(listener, telnetd.address, TARGET_PASSWORD));

    let mut user = TestUser::connect(
        gateway_address,
        "VT100-TEST",
        WindowSize {
            columns: 100,
            rows: 30,
        },
    )
    .await;
    user.read_until("gatehouse login: ").await;
    user.line(GATEWAY_USER).await;
    user.read_until("Password: ").await;
    user.line(GATEWAY_PASSWORD).await;
    // The target's own login conversation is not shown; its post-login output is.
    let banner = user.read_until("target$ ").await;
    assert!(banner.contains("TERM=vt100-test SIZE=30 100"), "{banner:?}");
    assert!(!banner.contains("Welcome to the test target"), "{banner:?}");
    assert!(!banner.contains("target1 login:"), "{banner:?}");
    user.line("echo hello-$((40+2))").await;
    user.read_until("hello-42").await;
    user.resize(WindowSize {
        columns: 120,
        rows: 40,
    })
    .await;
    user.line("stty size").await;
    user.read_until("40 120").await;
    // Data with byte 255 survives both legs (IAC IAC on each).
    user.type_bytes(b"printf '\\377\\n' | od -An -tu1\r\n")
        .await;
    user.read_until("255").await;
    user.line("exit").await;
    user.read_to_end().await;

    let run = gateway.await.unwrap().unwrap();
    assert_eq!(run.asked_user, GATEWAY_USER);
    assert_eq!(run.summary.ended_by, Side::Target);
    let recorded_output = run.recorder.output();
    let recorded_input = run.recorder.input();
    assert!(contains(&recorded_output, "hello-42"));
    assert!(contains(&recorded_input, "stty size"));
    assert!(
        recorded_input.starts_with(b"echo hello-"),
        "{recorded_input:?}"
    );
    assert_eq!(
        run.recorder.resizes(),
        vec![WindowSize {
            columns: 120,
            rows: 40
        }]
    );
    assert_eq!(run.summary.target_to_client, recorded_output.len() as u64);
    assert_eq!(run.summary.client_to_target, recorded_input.len() as u64);
    for secret in [TARGET_PASSWORD, GATEWAY_PASSWORD] {
        assert!(
            !contains(&recorded_output, secret),
            "{secret} in the recorded output"
        );
        assert!(
            !contains(&recorded_input, secret),
            "{secret} in the recorded input"
        );
        assert!(!contains(&user.wire, secret), "{secret} sent to the user");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_gateway_password_gets_a_one_line_refusal() {
    let telnetd = Telnetd::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_address = listener.local_addr().unwrap();
    let gateway = tokio::spawn(serve_one(listener, telnetd.address, TARGET_PASSWORD));
    let mut user = TestUser::connect(
        gateway_address,
        "XTERM",
        WindowSize {
            columns: 80,
            rows: 24,
        },
    )
    .await;
    user.read_until("gatehouse login: ").await;
    user.line(GATEWAY_USER).await;
    user.read_until("Password: ").await;
    user.line("not-it").await;
    let refusal = user.read_to_end().await;
    assert_eq!(refusal, "\r\naccess denied\r\n");
    assert!(!contains(&user.wire, "not-it"), "the password was echoed");
    let error = gateway.await.unwrap().unwrap_err();
    assert_eq!(error, format!("gateway login refused for `{GATEWAY_USER}`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_refusing_the_vault_password_is_reported() {
    let telnetd = Telnetd::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_address = listener.local_addr().unwrap();
    let gateway = tokio::spawn(serve_one(listener, telnetd.address, "stale-vault-password"));
    let mut user = TestUser::connect(
        gateway_address,
        "XTERM",
        WindowSize {
            columns: 80,
            rows: 24,
        },
    )
    .await;
    user.read_until("gatehouse login: ").await;
    user.line(GATEWAY_USER).await;
    user.read_until("Password: ").await;
    user.line(GATEWAY_PASSWORD).await;
    let said = user.read_to_end().await;
    assert_eq!(said, "\r\nthe target refused the login\r\n");
    let error = gateway.await.unwrap().unwrap_err();
    assert_eq!(error, "the target refused the login: `Login incorrect`");
}

/// The stock inetutils `telnet` client, under a pty made by `script` (it wants a terminal for
/// its window size), typing the gateway login, a command, and `exit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_telnet_client_through_the_gateway() {
    let telnetd = Telnetd::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = tokio::spawn(serve_one(listener, telnetd.address, TARGET_PASSWORD));

    let command = format!("stty rows 33 cols 111; TERM=vt220 exec telnet 127.0.0.1 {port}");
    let mut child = tokio::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();

    wait_for(&mut stdout, &mut seen, "gatehouse login: ").await;
    stdin
        .write_all(format!("{GATEWAY_USER}\r").as_bytes())
        .await
        .unwrap();
    wait_for(&mut stdout, &mut seen, "Password: ").await;
    stdin
        .write_all(format!("{GATEWAY_PASSWORD}\r").as_bytes())
        .await
        .unwrap();
    wait_for(&mut stdout, &mut seen, "target$ ").await;
    stdin
        .write_all(b"echo via-real-client-$((6*7))\r")
        .await
        .unwrap();
    wait_for(&mut stdout, &mut seen, "via-real-client-42").await;
    stdin.write_all(b"exit\r").await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;

    let run = gateway.await.unwrap().unwrap();
    let screen = String::from_utf8_lossy(&seen).into_owned();
    assert!(screen.contains("TERM=vt220 SIZE=33 111"), "{screen:?}");
    assert!(
        !screen.contains(GATEWAY_PASSWORD),
        "the gateway password was echoed: {screen:?}"
    );
    assert!(!screen.contains(TARGET_PASSWORD));
    assert_eq!(run.asked_user, GATEWAY_USER);
    assert!(contains(&run.recorder.output(), "via-real-client-42"));
    // The client ends lines with CR NUL; the NUL of the password's line is not the session's.
    let input = run.recorder.input();
    assert!(input.starts_with(b"echo via-real-client"), "{input:?}");
    assert!(!contains(&run.recorder.input(), TARGET_PASSWORD));
    assert!(!contains(&run.recorder.output(), TARGET_PASSWORD));
}

async fn wait_for(stdout: &mut tokio::process::ChildStdout, seen: &mut Vec<u8>, needle: &str) {
    let start = seen.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !contains(&seen[start..], needle) {
        let mut buffer = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stdout.read(&mut buffer)).await {
            Ok(Ok(count)) if count > 0 => seen.extend_from_slice(&buffer[..count]),
            other => panic!(
                "waiting for {needle:?}: {other:?}; screen {:?}",
                String::from_utf8_lossy(&seen[start..])
            ),
        }
    }
}
