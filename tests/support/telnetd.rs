//! A real Telnet target for the gateway's Telnet tests: Debian's `in.telnetd` (package
//! inetutils-telnetd), started per connection the way inetd would, with `--exec-login` pointing
//! at a login program that knows one account (so no system user is needed) and then runs a
//! shell whose prompt is `target$ `. It prints the terminal telnetd gave it (`TERM=… SIZE=…`).
//! And the stock `telnet` client (inetutils-telnet) under a pty made by `script`.

use super::ssh_client::PtySession;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TELNETD: &str = "/usr/sbin/telnetd";

/// A listener that runs a fresh `telnetd --exec-login=PROGRAM` on each connection.
pub struct Telnetd {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<Child>>>,
    _directory: tempfile::TempDir,
}

impl Telnetd {
    /// A target whose only account is `user` with `password`.
    pub fn start(user: &str, password: &str) -> Telnetd {
        assert!(
            Path::new(TELNETD).exists(),
            "{TELNETD} is missing: apt-get install inetutils-telnetd inetutils-telnet (scripts/install-test-deps.sh)"
        );
        let directory = tempfile::tempdir().unwrap();
        let program = directory.path().join("login.sh");
        std::fs::write(&program, login_program(user, password)).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let children = Arc::new(Mutex::new(Vec::new()));
        let (thread_stop, thread_children) = (stop.clone(), children.clone());
        std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((socket, _)) => {
                        socket.set_nonblocking(false).unwrap();
                        let output = socket.try_clone().unwrap();
                        let child = Command::new(TELNETD)
                            .arg("--no-hostinfo")
                            .arg(format!("--exec-login={}", program.display()))
                            .stdin(Stdio::from(OwnedFd::from(socket)))
                            .stdout(Stdio::from(OwnedFd::from(output)))
                            .stderr(Stdio::null())
                            .spawn()
                            .unwrap();
                        thread_children.lock().unwrap().push(child);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Telnetd {
            address,
            stop,
            children,
            _directory: directory,
        }
    }
}

impl Drop for Telnetd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        for child in self.children.lock().unwrap().iter_mut() {
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asks like login(1), knows one account, then runs a shell with a recognisable prompt.
pub fn login_program(user: &str, password: &str) -> String {
    format!(
        r#"#!/bin/sh
printf 'Welcome to the test target\n'
printf 'target1 login: '
IFS= read -r name
stty -echo
printf 'Password: '
IFS= read -r password
stty echo
printf '\n'
if [ "$name" = '{user}' ] && [ "$password" = '{password}' ]; then
  printf 'TERM=%s SIZE=%s\n' "$TERM" "$(stty size)"
  PS1='target$ ' exec /bin/sh -i
else
  sleep 1
  printf 'Login incorrect\n'
  exit 1
fi
"#
    )
}

/// The stock `telnet` client connected to `port` on 127.0.0.1, in a 111x33 vt220 terminal.
pub fn telnet_client(port: u16) -> PtySession {
    let mut cmd = Command::new("script");
    cmd.args([
        "-qfec",
        &format!("stty rows 33 cols 111; TERM=vt220 exec telnet 127.0.0.1 {port}"),
        "/dev/null",
    ]);
    PtySession::spawn_command(cmd)
}
