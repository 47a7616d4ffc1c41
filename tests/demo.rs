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
    let (ssh_port, target_port) = (free_port(), free_port());
    let log = std::fs::File::create(cwd.path().join("demo.log")).unwrap();
    let child = Command::new(GATEHOUSE_BIN)
        .current_dir(cwd.path())
        .args(["--data-dir", "demo-data", "demo", "--ssh-listen"])
        .arg(format!("127.0.0.1:{ssh_port}"))
        .arg("--target-port")
        .arg(target_port.to_string())
        .env_remove("GATEHOUSE_DATA_DIR")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
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
}
