//! End to end: backpressure. A client that stops reading must stall the target, not fill the
//! gateway's memory; and the gateway keeps serving others meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::OutputExt;
use support::ssh_client::assert_client_ok;
use support::world::World;

/// Resident memory of a process in KiB, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS line")
}

#[test]
fn a_client_that_stops_reading_does_not_grow_the_gateway() {
    let w = World::start("f_slow");
    let pid = w.gh.server_pid();
    let client = w.client();

    // 2 GiB of zeros from the target to a client whose stdout nobody reads: once the pipe (64 KiB)
    // is full, ssh stops reading its socket and only the SSH windows and the bounded queues may
    // hold data.
    let mut cmd = client.ssh_command(&[]);
    cmd.arg(format!("{}@127.0.0.1", w.login()))
        .arg("head -c 2147483648 /dev/zero")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut stalled = cmd.spawn().expect("spawn ssh");

    // Let the session start and the pipes fill, then watch the gateway for a while.
    std::thread::sleep(Duration::from_secs(3));
    let baseline = rss_kib(pid);
    let mut peak = baseline;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    // Unbounded buffering would have taken hundreds of MiB by now (the target produces GB/s).
    let growth_mib = (peak.saturating_sub(baseline)) / 1024;
    assert!(
        growth_mib < 32,
        "gateway RSS grew by {growth_mib} MiB (baseline {baseline} KiB, peak {peak} KiB) while the client was not reading"
    );

    // The stalled session does not block anybody else.
    let other = client.ssh("echo still-serving");
    assert_client_ok("a second session while one is stalled", &other);
    assert_eq!(other.stdout_text().trim(), "still-serving");

    let _ = stalled.kill();
    let _ = stalled.wait();
    // And the gateway recovers from the dropped client.
    let after = client.ssh("echo after");
    assert_client_ok("a session after the stalled client went away", &after);

    // Data did flow to the stalled client, and then stopped: what the gateway relayed is the
    // windows and pipes' worth, not the 2 GiB the target wanted to send.
    let sessions = w.gh.ended_sessions_of(support::world::GATEWAY_USER, 3);
    let stalled_down = sessions
        .iter()
        .filter_map(|s| s["bytes_down"].as_u64())
        .max()
        .unwrap_or(0);
    eprintln!("rss growth {growth_mib} MiB; stalled session relayed {stalled_down} bytes");
    assert!(
        (64 * 1024..64 * 1024 * 1024).contains(&stalled_down),
        "the stalled session relayed {stalled_down} bytes"
    );
}
