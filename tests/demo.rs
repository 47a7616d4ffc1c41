//! The README's first command: `gatehouse demo` (what `scripts/demo` runs) with a relative data
//! directory gives a working gateway: log in as demo/demo and land on the demo target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::ssh_client::{Client, assert_client_ok};
use support::{GATEHOUSE_BIN, OutputExt, free_port, poll, port_open};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_with_a_relative_data_dir_serves_a_session() {
    let cwd = tempfile::tempdir().unwrap();
    let (ssh_port, target_port, api_port, rdp_port) =
        (free_port(), free_port(), free_port(), free_port());
    let log = std::fs::File::create(cwd.path().join("demo.log")).unwrap();
    let child = Command::new(GATEHOUSE_BIN)
        .current_dir(cwd.path())
        .args(["--data-dir", "demo-data", "demo", "--ssh-listen"])
        .arg(format!("127.0.0.1:{ssh_port}"))
        .arg("--target-port")
        .arg(target_port.to_string())
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--rdp-listen")
        .arg(format!("127.0.0.1:{rdp_port}"))
        .env_remove("GATEHOUSE_DATA_DIR")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let pid = child.id();
    let _demo = Killed(child);
    assert!(
        poll(Duration::from_secs(60), || port_open(ssh_port)
            .then_some(()))
        .is_some(),
        "the demo never listened: {}",
        std::fs::read_to_string(cwd.path().join("demo.log")).unwrap_or_default()
    );
    let id = Command::new("id").arg("-un").output().unwrap();
    let account = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let login = format!("demo@{account}@demo-target");
    let out = Client::password(ssh_port, login, "demo").ssh("echo hello-from-the-demo");
    assert_client_ok("demo session", &out);
    assert_eq!(out.stdout_text(), "hello-from-the-demo\n");

    // A demo listens on loopback only: every socket the process listens on is 127.0.0.1.
    assert!(
        port_open(api_port) && port_open(rdp_port),
        "API or RDP not on the given ports"
    );
    let listening = Command::new("ss")
        .args(["-Hltnp"])
        .output()
        .unwrap()
        .stdout_text();
    let mine: Vec<&str> = listening
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .collect();
    assert!(mine.len() >= 3, "the demo's listeners: {listening}");
    for line in &mine {
        let local = line.split_whitespace().nth(3).unwrap_or("");
        assert!(
            local.starts_with("127.0.0.1:"),
            "the demo listens beyond loopback: {line}"
        );
    }
}
