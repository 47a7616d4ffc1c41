//! End to end: stopping and restarting the gateway. SIGTERM drains (no new connections, users
//! told, a grace period, then the target's command hung up on and the channel closed); a
//! `kill -9` leaves sessions that the next start closes as interrupted; systemd hears READY and
//! STOPPING on NOTIFY_SOCKET.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::world::{GATEWAY_USER, World};
use support::{OutputExt, json_id, pids_with, poll};

/// A unique `sleep` on the target, to find it there.
fn marker_sleep() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "sleep 7{:06}{}",
        nanos % 1_000_000,
        std::process::id() % 1000
    )
}

/// `ssh ... 'echo started; SLEEPER'` with its output piped, once the sleep runs on the target.
fn start_long_session(
    w: &World,
    client: &support::ssh_client::Client,
    sleeper: &str,
) -> std::process::Child {
    let long = client
        .ssh_command(&[])
        .arg(format!("{}@127.0.0.1", w.login()))
        .arg(format!("echo started; {sleeper}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let running = poll(Duration::from_secs(20), || {
        (!pids_with(sleeper).is_empty()).then_some(())
    });
    assert!(running.is_some(), "the remote sleep never started");
    long
}

#[test]
fn sigterm_drains_tells_the_users_and_closes_sessions_properly() {
    let mut w = World::start("sd_term");
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    w.gh.stop_server();
    w.gh.serve_options(
        &["--shutdown-grace", "4"],
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    w.gh.serve();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on NOTIFY_SOCKET");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    let client = w.client();
    let sleeper = marker_sleep();
    // A long command that the shutdown must end, and a short one that finishes in the grace.
    let mut long = start_long_session(&w, &client, &sleeper);
    let short = client
        .ssh_command(&[])
        .arg(format!("{}@127.0.0.1", w.login()))
        .arg("sleep 2; echo finished-in-grace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));

    let port = w.gh.ssh_port();
    let (status, _, body) = support::curl(&w.gh, "GET", "/api/v1/health", &[], None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let term_at = Instant::now();
    w.gh.signal_server("TERM");
    let n = notify.recv(&mut buf).expect("STOPPING=1 on NOTIFY_SOCKET");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    // No new connections while draining.
    let refused = poll(Duration::from_secs(3), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "the gateway still accepts connections while draining"
    );
    // A load balancer sees the drain; the API itself still answers.
    let (status, _, body) = support::curl(&w.gh, "GET", "/api/v1/health", &[], None);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        String::from_utf8_lossy(&body).contains("\"draining\""),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // The short session finishes normally inside the grace period.
    let short_out = short.wait_with_output().unwrap();
    assert!(short_out.status.success(), "{}", short_out.stderr_text());
    assert!(short_out.stdout_text().contains("finished-in-grace"));
    assert!(
        short_out.stderr_text().contains(
            "gatehouse: the gateway is shutting down; this session will be closed in 4 s"
        ),
        "the user was not told: {}",
        short_out.stderr_text()
    );

    // The long one is closed at the end of the grace period, with a line saying why.
    let started = Instant::now();
    let status = loop {
        if let Some(status) = long.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the long session was not closed after the grace period"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let closed_after = term_at.elapsed();
    let mut stderr = String::new();
    long.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut stdout = String::new();
    long.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains("started"), "{stdout}");
    assert!(!status.success(), "the cut session reported success");
    for line in [
        "gatehouse: the gateway is shutting down; this session will be closed in 4 s",
        "gatehouse: the gateway shut down; the session was closed",
    ] {
        assert!(
            stderr.contains(line),
            "the user did not see `{line}`:\n{stderr}"
        );
    }
    assert!(
        closed_after >= Duration::from_secs(3) && closed_after < Duration::from_secs(15),
        "closed {closed_after:?} after SIGTERM with a 4 s grace"
    );

    // The target's command was hung up on, not left running.
    let gone = poll(Duration::from_secs(10), || {
        pids_with(&sleeper).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the remote `{sleeper}` still runs after the shutdown: {:?}",
        pids_with(&sleeper)
    );

    // The gateway exits on its own, cleanly.
    let exit = w.gh.wait_server_exit(Duration::from_secs(30));
    assert!(
        matches!(exit, Some(s) if s.success()),
        "serve did not exit cleanly after the drain: {exit:?}\n{}",
        w.gh.log_tail(40)
    );

    // Both sessions are closed in the store, neither as interrupted.
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 2);
    for s in &sessions {
        assert!(s["ended"].is_u64(), "{s}");
        assert!(s["error"].is_null(), "a drained session was marked: {s}");
    }
}

#[test]
fn sessions_cut_by_a_kill_are_closed_as_interrupted_at_the_next_start() {
    let mut w = World::start("sd_kill");
    let client = w.client();
    let sleeper = marker_sleep();
    let mut long = start_long_session(&w, &client, &sleeper);
    std::thread::sleep(Duration::from_millis(1500));
    let open = w.gh.sessions();
    let session = open
        .iter()
        .find(|s| s["user"] == GATEWAY_USER)
        .cloned()
        .expect("the running session is listed");
    assert!(session["ended"].is_null(), "{session}");
    let started = session["started"].as_u64().unwrap();

    w.gh.signal_server("KILL");
    let _ = w.gh.wait_server_exit(Duration::from_secs(10));
    let _ = long.kill();
    let _ = long.wait();

    // Restart: the session cut by the kill is closed, as interrupted, at its last recorded
    // activity (not at the restart).
    let restart_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    w.gh.serve();
    let id = json_id(&session["id"]);
    let after = w.gh.session_show(&id);
    let record = &after["session"];
    let ended = record["ended"]
        .as_u64()
        .unwrap_or_else(|| panic!("not closed: {after}"));
    assert!(
        ended >= started && ended <= restart_at,
        "ended {ended}: started {started}, restarted {restart_at}"
    );
    assert!(
        record["error"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted"),
        "{record}"
    );
    let audit = w.gh.audit();
    assert!(
        audit
            .iter()
            .any(|e| e["session"].as_str() == Some(id.as_str())
                && e["kind"] == "session_ended"
                && e["detail"].as_str().unwrap_or("").contains("interrupted")),
        "no audit event for the interrupted session"
    );
    // A second restart finds nothing more to close.
    w.gh.stop_server();
    w.gh.serve();
    let interrupted_events =
        w.gh.audit()
            .iter()
            .filter(|e| {
                e["session"].as_str() == Some(id.as_str())
                    && e["detail"].as_str().unwrap_or("").contains("interrupted")
            })
            .count();
    assert_eq!(
        interrupted_events, 1,
        "the session was closed more than once"
    );
}
