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

/// A background `ssh -N -L LOCAL:127.0.0.1:REMOTE` through the gateway, stderr to a file.
struct Forward {
    child: Child,
    stderr: tempfile::NamedTempFile,
    local_port: u16,
}

impl Forward {
    fn start(client: &Client, remote_port: u16) -> Forward {
        let local_port = free_port();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = client.ssh_command(&[
            "-N",
            "-L",
            &format!("127.0.0.1:{local_port}:127.0.0.1:{remote_port}"),
        ]);
        cmd.arg(format!("{}@127.0.0.1", client.login()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.reopen().unwrap());
        let child = cmd.spawn().expect("spawn ssh -L");
        let forward = Forward {
            child,
            stderr,
            local_port,
        };
        // Probing with a connection would itself open a forward; a failing bind shows that ssh
        // is listening without connecting.
        let listening = || TcpListener::bind(("127.0.0.1", local_port)).is_err();
        assert!(
            poll(Duration::from_secs(20), || listening().then_some(())).is_some(),
            "ssh -L never listened on {local_port}: {}",
            forward.stderr_text()
        );
        forward
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

#[test]
fn shell_is_permitted_and_a_local_forward_is_denied_by_policy() {
    let w = World::start("pol_deny");
    let grant_id = json_str(&w.gh.cli_json(&["grant", "list", "--json"])[0], "id");

    let ok = w.client().ssh("echo permitted");
    assert_client_ok("ssh echo", &ok);
    assert_eq!(ok.stdout_text(), "permitted\n");

    let (echo_port, _echo) = echo_server();
    let forward = Forward::start(&w.client(), echo_port);
    let mut stream = TcpStream::connect(("127.0.0.1", forward.local_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let _ = stream.write_all(b"ping");
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a denied forward must carry no data");
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

#[test]
fn admins_forward_through_the_target_when_policy_permits() {
    let w = World::builder("pol_allow")
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
        .start();

    let (echo_port, echo) = echo_server();
    let forward = Forward::start(&w.client(), echo_port);
    let mut stream = TcpStream::connect(("127.0.0.1", forward.local_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(b"ping through the target").unwrap();
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"ping through the target",
        "{}\n{:#?}\n{}",
        forward.stderr_text(),
        w.gh.audit(),
        w.gh.log_tail(40)
    );
    drop(stream);
    echo.join().unwrap();

    let opened = poll(Duration::from_secs(10), || {
        w.gh.audit().into_iter().rev().find(|e| {
            json_str(e, "kind") == "channel_closed"
                && e["fields"]["channel"].as_str() == Some("direct-tcpip")
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "the forward's close is audited\n{:#?}\n{}",
            w.gh.audit(),
            w.gh.log_tail(40)
        )
    });
    assert_eq!(opened["fields"]["bytes_up"], 23, "{opened}");
    assert_eq!(opened["fields"]["bytes_down"], 23, "{opened}");
    let events = w.gh.audit();
    let allowed = last_event(&events, "channel_opened", "direct-tcpip");
    assert_eq!(policies(&allowed), ["admins-port-forwarding"]);
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
