//! End to end: Cedar decides at session open and at every channel open, with real `ssh` through
//! `gatehouse serve` to a real sshd, and the audit trail names the deciding policies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::ssh_client::{Client, assert_client_ok};
use support::world::{GATEWAY_USER, World};
use support::{OutputExt, free_port, json_str, poll};

/// The `policies` field of an audit event, as strings.
fn policies(event: &Value) -> Vec<String> {
    event["fields"]["policies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The last audit event of `kind` whose `fields.channel` is `channel` (any channel if empty).
fn last_event(events: &[Value], kind: &str, channel: &str) -> Value {
    events
        .iter()
        .rev()
        .find(|e| {
            json_str(e, "kind") == kind
                && (channel.is_empty() || e["fields"]["channel"].as_str() == Some(channel))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no `{kind}` event for channel `{channel}` in {events:#?}"))
}

/// A background `ssh -N -L LOCAL:127.0.0.1:REMOTE` (or `-R`) through the gateway, stderr to a
/// file.
struct Forward {
    child: Child,
    stderr: tempfile::NamedTempFile,
    /// Where the forward listens: on the client for `-L`, on the target for `-R`.
    local_port: u16,
}

impl Forward {
    fn start(client: &Client, remote_port: u16) -> Forward {
        Forward::start_with(client, "-L", free_port(), remote_port)
    }

    /// `ssh -R LISTEN:127.0.0.1:TO`: the target listens on `listen`, the client connects to `to`.
    fn remote(client: &Client, to: u16) -> Forward {
        Forward::start_with(client, "-R", free_port(), to)
    }

    fn start_with(client: &Client, flag: &str, local_port: u16, remote_port: u16) -> Forward {
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = client.ssh_command(&[
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            flag,
            &format!("127.0.0.1:{local_port}:127.0.0.1:{remote_port}"),
        ]);
        cmd.arg(format!("{}@127.0.0.1", client.login()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().unwrap());
        let mut child = cmd.spawn().expect("spawn ssh forward");
        // Probing with a connection would itself open a forward; a failing bind shows that ssh
        // (or, for -R, the target's sshd) is listening without connecting.
        let listening = || TcpListener::bind(("127.0.0.1", local_port)).is_err();
        let outcome = poll(Duration::from_secs(20), || {
            if listening() {
                Some(Ok(()))
            } else {
                child.try_wait().ok().flatten().map(Err)
            }
        });
        let forward = Forward {
            child,
            stderr,
            local_port,
        };
        match outcome {
            Some(Ok(())) => forward,
            Some(Err(status)) => panic!(
                "ssh {flag} exited ({status}) before listening on {local_port}: {}",
                forward.stderr_text()
            ),
            None => panic!(
                "ssh {flag} never listened on {local_port}: {}",
                forward.stderr_text()
            ),
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-connection echo server on the target's loopback (the target sshd runs on this host).
fn echo_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    (port, handle)
}

/// A connection to a forward's listening end, reads bounded by 20 s.
fn connect_to(forward: &Forward) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", forward.local_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Sends `message` through the forward to the echo server and asserts it comes back whole; the
/// echo server (one connection) is done afterwards.
fn assert_echoed(w: &World, forward: &Forward, echo: std::thread::JoinHandle<()>, message: &str) {
    let mut stream = connect_to(forward);
    stream.write_all(message.as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        message,
        "{}\n{:#?}\n{}",
        forward.stderr_text(),
        w.gh.audit(),
        w.gh.log_tail(40)
    );
    drop(stream);
    echo.join().unwrap();
}

/// A connection through the forward carries nothing: what is written gets no answer, the
/// socket is closed.
fn assert_carries_nothing(forward: &Forward, probe: &[u8], why: &str) {
    let mut stream = connect_to(forward);
    let _ = stream.write_all(probe);
    let mut buf = [0u8; 16];
    assert_eq!(stream.read(&mut buf).unwrap_or(0), 0, "{why}");
}

/// Waits for the audited close of a `channel` that counted its bytes.
fn audited_close(w: &World, channel: &str) -> Value {
    poll(Duration::from_secs(10), || {
        w.gh.audit().into_iter().rev().find(|e| {
            json_str(e, "kind") == "channel_closed"
                && e["fields"]["channel"].as_str() == Some(channel)
                && e["fields"]["bytes_up"].is_number()
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "the {channel} close is audited\n{:#?}\n{}",
            w.gh.audit(),
            w.gh.log_tail(40)
        )
    })
}

#[test]
fn shell_is_permitted_and_a_local_forward_is_denied_by_policy() {
    let w = World::start("pol_deny");
    let grant_id = json_str(&w.gh.cli_json(&["grant", "list", "--json"])[0], "id");

    let ok = w.client().ssh("echo permitted");
    assert_client_ok("ssh echo", &ok);
    assert_eq!(ok.stdout_text(), "permitted\n");

    let (echo_port, _echo) = echo_server();
    let forward = Forward::start(&w.client(), echo_port);
    assert_carries_nothing(&forward, b"ping", "a denied forward must carry no data");
    let message = poll(Duration::from_secs(10), || {
        let text = forward.stderr_text();
        text.contains("open failed").then_some(text)
    })
    .unwrap_or_else(|| panic!("ssh printed no refusal: {}", forward.stderr_text()));
    assert!(
        message.contains("administratively prohibited: gatehouse: forwarding to")
            && message.contains("is not permitted")
            && !message.contains("Administratively prohibited"),
        "the user sees why, once: {message}"
    );
    drop(forward);

    let events = w.gh.audit();
    let connect = last_event(&events, "target_connect_ok", "");
    assert_eq!(policies(&connect), [format!("grant:{grant_id}")]);
    let exec = last_event(&events, "channel_opened", "exec");
    assert_eq!(policies(&exec), ["session-channels"]);
    let denied = last_event(&events, "channel_denied", "direct-tcpip");
    assert_eq!(policies(&denied), ["default-deny"]);
    assert!(
        json_str(&denied, "detail").contains(&format!("127.0.0.1:{echo_port}")),
        "{denied}"
    );
}

/// A world whose gateway user is in `admins`, with the example policy that lets admins forward.
fn admins_world(name: &str) -> World {
    World::builder(name)
        .setup(|ctx| {
            ctx.gh.cli_ok(&["group", "add", "admins"]);
            ctx.gh
                .cli_ok(&["group", "add-member", "admins", GATEWAY_USER]);
            let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../policies/examples/port-forwarding-admins.cedar");
            std::fs::copy(
                example,
                ctx.gh
                    .data_dir()
                    .join("policies/port-forwarding-admins.cedar"),
            )
            .unwrap();
        })
        .start()
}

#[test]
fn admins_forward_through_the_target_when_policy_permits() {
    let w = admins_world("pol_allow");

    let (echo_port, echo) = echo_server();
    let forward = Forward::start(&w.client(), echo_port);
    assert_echoed(&w, &forward, echo, "ping through the target");

    let opened = audited_close(&w, "direct-tcpip");
    assert_eq!(opened["fields"]["bytes_up"], 23, "{opened}");
    assert_eq!(opened["fields"]["bytes_down"], 23, "{opened}");
    let events = w.gh.audit();
    let allowed = last_event(&events, "channel_opened", "direct-tcpip");
    assert_eq!(policies(&allowed), ["admins-port-forwarding"]);
}

/// `ssh -R` under a policy that permits it: the target listens, and a connection to that port
/// on the target reaches a server on the client's side, audited with the deciding policy.
#[test]
fn admins_forward_from_the_target_back_to_the_client_when_policy_permits() {
    let w = admins_world("pol_remote");

    // The echo server stands for a service on the user's machine; the target sshd listens on
    // `forward.local_port` on its own loopback (the same host here).
    let (echo_port, echo) = echo_server();
    let forward = Forward::remote(&w.client(), echo_port);
    let message = "ping from the target side";
    assert_echoed(&w, &forward, echo, message);
    let closed = audited_close(&w, "forwarded-tcpip");
    // Up is user to target: the echo's answer travels from the client's side to the target.
    assert_eq!(closed["fields"]["bytes_up"], message.len(), "{closed}");
    assert_eq!(closed["fields"]["bytes_down"], message.len(), "{closed}");

    // Nothing listens on the client side any more: the client refuses the forwarded channel and
    // the target's socket is closed, not left hanging.
    assert_carries_nothing(
        &forward,
        b"anyone?",
        "the target's socket is closed once the client refuses",
    );
    drop(forward);

    let events = w.gh.audit();
    let bound = last_event(&events, "channel_opened", "forwarded-tcpip");
    let bound = events
        .iter()
        .find(|e| {
            json_str(e, "kind") == "channel_opened"
                && json_str(e, "detail").starts_with("remote port forwarding on")
        })
        .unwrap_or(&bound);
    assert_eq!(policies(bound), ["admins-port-forwarding"], "{bound}");
    assert!(
        events
            .iter()
            .any(|e| json_str(e, "kind") == "channel_opened"
                && json_str(e, "detail").starts_with("connection from 127.0.0.1:")),
        "each connection on the forward is audited: {events:#?}"
    );

    // The record lists the forwarded connections as channels of the session.
    let session = &w.gh.cli_json(&["session", "list", "--json"])[0];
    let id = json_str(session, "id");
    let shown = w.gh.cli_json(&["session", "show", &id, "--json"]);
    let kinds: Vec<&str> = shown["session"]["channels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"forwarded-tcpip"), "{shown:#}");
}

/// Without a permitting policy, `ssh -R` fails the way OpenSSH reports it, and the denial is
/// audited with the default deny.
#[test]
fn a_remote_forward_is_denied_without_a_policy() {
    let w = World::start("pol_rdeny");
    let client = w.client();
    let mut cmd = client.ssh_command(&[
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("127.0.0.1:{}:127.0.0.1:9", free_port()),
    ]);
    cmd.arg(format!("{}@127.0.0.1", client.login()))
        .arg("echo should-not-run");
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_text()
            .contains("remote port forwarding failed for listen port"),
        "{}",
        out.describe()
    );
    assert!(!out.stdout_text().contains("should-not-run"));
    let denied = last_event(&w.gh.audit(), "channel_denied", "forwarded-tcpip");
    assert_eq!(policies(&denied), ["default-deny"], "{denied}");
}

#[test]
fn a_broken_policy_file_keeps_the_previous_decisions() {
    let w = World::start("pol_reload");
    let policy_dir = w.gh.data_dir().join("policies");

    // A syntax error on line 3: the reload is refused with the position; nothing changes.
    std::fs::write(
        policy_dir.join("broken.cedar"),
        "// an unfinished policy\n@id(\"half\")\npermit (principal, action resource);\n",
    )
    .unwrap();
    let reload = w.gh.cli(&["policy", "reload"]);
    assert!(!reload.status.success(), "{}", reload.describe());
    let err = reload.stderr_text();
    assert!(err.contains("broken.cedar:3:"), "{err}");
    assert!(err.contains("the previous policies stay in force"), "{err}");
    let still = w.client().ssh("echo still-permitted");
    assert_client_ok("after a broken reload", &still);
    let failed =
        w.gh.wait_for_audit(0, "policy_reload_failed", Duration::from_secs(10))
            .expect("the failed reload is audited");
    assert!(
        json_str(&failed, "detail").contains("broken.cedar:3:"),
        "{failed}"
    );

    // A valid forbid replaces it: the file watcher loads it, and it wins over the grant.
    let before = w.gh.audit().len();
    std::fs::remove_file(policy_dir.join("broken.cedar")).unwrap();
    std::fs::write(
        policy_dir.join("freeze.cedar"),
        format!(
            "@id(\"change-freeze\")\nforbid (principal == User::\"{GATEWAY_USER}\", action in Action::\"session\", resource);\n"
        ),
    )
    .unwrap();
    let loaded =
        w.gh.wait_for_audit(before, "policy_reloaded", Duration::from_secs(15));
    assert!(loaded.is_some(), "a changed directory is reloaded");
    let refused = w.client().ssh("echo should-not-run");
    assert!(!refused.status.success(), "{}", refused.describe());
    assert!(
        refused.stderr_text().contains("not permitted"),
        "{}",
        refused.describe()
    );
    let denied = last_event(&w.gh.audit(), "access_denied", "");
    assert_eq!(policies(&denied), ["change-freeze"], "{denied}");
}

#[test]
fn sighup_reloads_the_policies() {
    let w = World::start("pol_hup");
    let before = w.gh.audit().len();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &w.gh.server_pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reloaded =
        w.gh.wait_for_audit(before, "policy_reloaded", Duration::from_secs(10))
            .expect("SIGHUP reloads");
    assert_eq!(json_str(&reloaded, "user"), "SIGHUP", "{reloaded}");
    assert!(
        json_str(&reloaded, "detail").contains("1 grant links"),
        "{reloaded}"
    );
    let ok = w.client().ssh("echo after-hup");
    assert_client_ok("after SIGHUP", &ok);
}

/// A policy's `@idle_timeout` ends a session without input from the user: a warning first on
/// the terminal, typing puts the clock back, and then the session ends with a line naming the
/// policy; output alone is not input.
#[test]
fn an_idle_timeout_from_the_permitting_policy_ends_a_quiet_session() {
    let w = World::builder("p_idle")
        .setup(|ctx| {
            std::fs::write(
                ctx.gh.data_dir().join("policies/idle.cedar"),
                format!(
                    "@id(\"alice-idle-12s\")\n@idle_timeout(\"12s\")\npermit (principal == User::\"{GATEWAY_USER}\", action == Action::\"ssh_session\", resource);\n"
                ),
            )
            .unwrap();
        })
        .start();
    let started = std::time::Instant::now();
    let mut shell = w.client().pty();
    shell.expect("$ ", Duration::from_secs(60));
    // The warning comes a quarter of the limit before it; typing then keeps the session.
    shell.expect_stderr("unless you type something", Duration::from_secs(30));
    shell.send_line("echo still-here-$((4*5))");
    shell.expect("still-here-20", Duration::from_secs(10));
    let typed = std::time::Instant::now();
    // Output without input (a clock printing) does not keep it.
    shell.send_line("while true; do date +%s; sleep 1; done");
    let outcome = shell.wait(Duration::from_secs(60));
    let lasted = typed.elapsed();
    assert!(
        outcome.stderr.contains(
            "no input for 12s: the session ends (idle timeout of policy `alice-idle-12s`)"
        ),
        "{}",
        outcome.describe()
    );
    assert!(
        lasted >= Duration::from_secs(11) && lasted < Duration::from_secs(25),
        "ended {lasted:?} after the last input ({:?} after the start)",
        started.elapsed()
    );
    let ended = poll(Duration::from_secs(20), || {
        w.gh.audit_of("session_ended")
            .into_iter()
            .find(|e| e["fields"]["reason"] == "idle")
    })
    .expect("the idle end is audited");
    assert_eq!(ended["fields"]["policy"], "alice-idle-12s");
    assert_eq!(ended["fields"]["idle_timeout_secs"], 12);
    // The decision that opened it named the policy with the limit.
    let opened = last_event(&w.gh.audit(), "target_connect_ok", "");
    assert!(
        policies(&opened).contains(&"alice-idle-12s".to_string()),
        "{opened:#}"
    );
}
