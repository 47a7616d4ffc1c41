//! End to end: streams that write and read at once through one channel. Before the vendored
//! russh gave window back on consumption, 10 MiB through `cat` deadlocked the relay (each
//! connection's loop waited on the other's), and a client killed mid-stream left the target's
//! command and the session open for ever.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::ssh_client::assert_client_ok;
use support::world::{GATEWAY_USER, World};
use support::{OutputExt, pids_with, sha256_file};

/// Waits for `child` up to `limit`; kills it and fails the test if it is still running.
fn wait_or_fail(
    what: &str,
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}: the relay is stuck");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn random_file(path: &std::path::Path, bytes: usize) {
    let mut out = fs::File::create(path).expect("create");
    let mut urandom = fs::File::open("/dev/urandom").expect("urandom");
    let copied = std::io::copy(
        &mut std::io::Read::take(&mut urandom, bytes as u64),
        &mut out,
    )
    .expect("copy random bytes");
    assert_eq!(copied as usize, bytes);
}

#[test]
fn sixty_four_mib_through_cat_comes_back_whole_every_time() {
    let w = World::start("fd_cat");
    let client = w.client();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    random_file(&input, 64 * 1024 * 1024);
    let want = sha256_file(&input);

    for round in 1..=3 {
        let output = dir.path().join(format!("out-{round}.bin"));
        let mut cmd = client.ssh_command(&[]);
        cmd.arg(format!("{}@127.0.0.1", w.login()))
            .arg("cat")
            .stdin(fs::File::open(&input).unwrap())
            .stdout(fs::File::create(&output).unwrap())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn ssh");
        let status = wait_or_fail(
            &format!("round {round}: 64 MiB through cat"),
            &mut child,
            Duration::from_secs(120),
        );
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(
            status.success(),
            "round {round}: ssh failed: {status}\n{stderr}"
        );
        let got = sha256_file(&output);
        assert_eq!(
            got,
            want,
            "round {round}: what came back differs ({} bytes)",
            fs::metadata(&output).unwrap().len()
        );
        eprintln!("round {round}: 64 MiB both ways in {:?}", started.elapsed());
    }
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 3);
    for s in &sessions {
        assert_eq!(s["bytes_up"].as_u64(), Some(64 * 1024 * 1024), "{s}");
        assert_eq!(s["bytes_down"].as_u64(), Some(64 * 1024 * 1024), "{s}");
    }
    w.assert_no_secret_leaks(&[]);
}

#[test]
fn rsync_copies_a_tree_through_the_gateway() {
    let w = World::start("fd_rsync");
    let client = w.client().timeout(Duration::from_secs(180));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    // A tree with many small files and a few large ones, nested.
    for d in 0..8 {
        let sub = src.join(format!("d{d}")).join("inner");
        fs::create_dir_all(&sub).unwrap();
        for f in 0..40 {
            fs::write(
                sub.join(format!("small-{f}.txt")),
                format!("file {d}/{f}\n").repeat(f + 1),
            )
            .unwrap();
        }
        random_file(
            &src.join(format!("d{d}")).join("big.bin"),
            3 * 1024 * 1024 + d * 777,
        );
    }
    // Into a new directory in the target account's home.
    let remote = "rsync-dest";
    let out = client.rsync(&[
        "-a",
        "--delete",
        &format!("{}/", src.display()),
        &format!("127.0.0.1:{remote}/"),
    ]);
    assert_client_ok("rsync up", &out);

    // And back down into another directory: both trees must be identical.
    let back = dir.path().join("back");
    let out = client.rsync(&[
        "-a",
        &format!("127.0.0.1:{remote}/"),
        &format!("{}/", back.display()),
    ]);
    assert_client_ok("rsync down", &out);
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(&back)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "the tree that came back differs:\n{}",
        diff.stdout_text()
    );

    // A second rsync up finds nothing to send (the delta algorithm ran both ways).
    let out = client.rsync(&[
        "-a",
        "--itemize-changes",
        &format!("{}/", src.display()),
        &format!("127.0.0.1:{remote}/"),
    ]);
    assert_client_ok("rsync again", &out);
    assert_eq!(out.stdout_text().trim(), "", "a second rsync changed files");
}

#[test]
fn a_client_killed_mid_stream_ends_its_target_side_and_its_session() {
    let w = World::start("fd_kill");
    let client = w.client();
    // A remote command both reading and writing, with a marker to find it on the target.
    let marker = format!("count=98765{}", std::process::id());
    let mut cmd = client.ssh_command(&[]);
    cmd.arg(format!("{}@127.0.0.1", w.login()))
        .arg(format!("dd bs=4096 {marker} status=none"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn ssh");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let block = vec![0x5au8; 64 * 1024];
        while stdin.write_all(&block).is_ok() {}
    });

    // The stream is running: the remote command exists and bytes have gone both ways.
    let running = support::poll(Duration::from_secs(20), || {
        (!pids_with(&marker).is_empty()).then_some(())
    });
    assert!(running.is_some(), "the remote dd never started");
    // While it runs, the session's record shows the bytes relayed so far.
    let progress = support::poll(Duration::from_secs(15), || {
        w.gh.sessions().into_iter().find(|s| {
            s["ended"].is_null()
                && s["bytes_up"].as_u64().unwrap_or(0) > 1024 * 1024
                && s["bytes_down"].as_u64().unwrap_or(0) > 1024 * 1024
        })
    });
    assert!(
        progress.is_some(),
        "the running session's record shows no progress: {:?}",
        w.gh.sessions()
    );

    child.kill().unwrap();
    let _ = child.wait();
    feeder.join().unwrap();

    // The gateway closes the target's channel: sshd ends the remote command.
    let gone = support::poll(Duration::from_secs(20), || {
        pids_with(&marker).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the remote command is still running after the client was killed: {:?}\n{}",
        pids_with(&marker),
        w.gh.log_tail(40)
    );

    // The session ends, with the bytes it relayed and its channel in the record.
    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    let session = &sessions[0];
    let up = session["bytes_up"].as_u64().unwrap_or(0);
    let down = session["bytes_down"].as_u64().unwrap_or(0);
    assert!(
        up > 1024 * 1024 && down > 1024 * 1024,
        "relayed {up} up, {down} down: {session}"
    );
    let id = support::json_id(&session["id"]);
    let shown = w.gh.session_show(&id);
    let channels = shown["session"]["channels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        channels.len(),
        1,
        "the killed session's channel is missing: {shown}"
    );

    // The gateway serves the next session normally.
    let after = client.ssh("echo after");
    assert_client_ok("a session after the kill", &after);
}

#[test]
fn every_channel_of_a_multiplexed_connection_is_in_the_record() {
    let w = World::start("fd_mux");
    let client = w.client();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mux.sock");
    let socket_opt = format!("ControlPath={}", socket.display());
    // One connection (the master, no command of its own), many channels over it.
    let mut master = client
        .ssh_command(&["-M", "-N", "-o", &socket_opt, "-o", "ControlPersist=no"])
        .arg(format!("{}@127.0.0.1", w.login()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the master");
    let up = support::poll(Duration::from_secs(20), || socket.exists().then_some(()));
    assert!(up.is_some(), "the master connection never came up");

    const CHANNELS: usize = 8;
    let runs: Vec<_> = (0..CHANNELS)
        .map(|n| {
            client
                .ssh_command(&["-o", &socket_opt])
                .arg(format!("{}@127.0.0.1", w.login()))
                .arg(format!(
                    "echo channel-{n}; head -c {} /dev/zero | wc -c",
                    n * 100_000
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a multiplexed ssh")
        })
        .collect();
    for (n, run) in runs.into_iter().enumerate() {
        let out = run.wait_with_output().unwrap();
        if !out.status.success() {
            eprintln!("{}", w.gh.log_tail(300));
        }
        assert_client_ok(&format!("multiplexed channel {n}"), &out);
        assert!(
            out.stdout_text().contains(&format!("channel-{n}")),
            "{}",
            out.stdout_text()
        );
    }
    // Ending the connection right after its channels is the race that lost channels.
    let stop = client
        .ssh_command(&["-o", &socket_opt, "-O", "exit"])
        .arg(format!("{}@127.0.0.1", w.login()))
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", stop.stderr_text());
    let _ = master.wait();

    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    assert_eq!(
        sessions.len(),
        1,
        "one connection, one session: {sessions:?}"
    );
    let shown = w.gh.session_show(&support::json_id(&sessions[0]["id"]));
    let channels = shown["session"]["channels"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        channels.len(),
        CHANNELS,
        "the record lists {} of {CHANNELS} channels: {shown}",
        channels.len()
    );
}
