//! Real VNC peers for the gateway's VNC tests: an Xvfb display (Xvfb picks a free number
//! itself), x11vnc serving it with VNC authentication, and TigerVNC's viewer logging in to the
//! gateway with VeNCrypt X509Plain (the gateway's certificate as its CA; user name and
//! password from `VNC_USERNAME`/`VNC_PASSWORD`) on a display of its own, driven by xdotool.
//! Debian packages: xvfb, x11vnc, x11-xserver-utils, xterm, tigervnc-viewer, xdotool.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child process stopped when dropped: SIGTERM, then SIGKILL after 5 s. x11vnc removes its
/// shared-memory segments only on a signal it can catch; killed outright it leaves about 60,
/// and after a few test runs the system has none left (`shmget: No space left on device`).
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An Xvfb display.
pub struct Display {
    pub number: u32,
    _process: Process,
}

impl Display {
    pub fn start(size: &str) -> Display {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                size,
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (Debian package xvfb) must be installed");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let number = line
            .trim()
            .parse()
            .expect("Xvfb printed its display number");
        Display {
            number,
            _process: Process(child),
        }
    }

    pub fn name(&self) -> String {
        format!(":{}", self.number)
    }

    /// Runs an X client to completion on this display; what it printed.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new(program)
            .args(args)
            .env("DISPLAY", self.name())
            .stderr(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts an X client that keeps running.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Process {
        Process(
            Command::new(program)
                .args(args)
                .env("DISPLAY", self.name())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program}: {e}")),
        )
    }
}

/// x11vnc serving `display` on 127.0.0.1 with VNC authentication by `password`.
pub struct X11vnc {
    pub port: u16,
    _process: Process,
    _dir: tempfile::TempDir,
}

/// x11vnc's password file for `password`, in `dir`.
pub fn password_file(dir: &Path, password: &str) -> std::path::PathBuf {
    let file = dir.join("passwd");
    let status = Command::new("x11vnc")
        .args(["-storepasswd", password, file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("x11vnc (Debian package x11vnc) must be installed");
    assert!(status.success());
    file
}

impl X11vnc {
    pub fn start(display: &Display, password: &str) -> X11vnc {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let file = password_file(dir.path(), password);
        let mut child = Command::new("x11vnc")
            .args([
                "-display",
                &display.name(),
                "-rfbport",
                &port.to_string(),
                "-localhost",
                "-forever",
                "-shared",
                "-rfbauth",
                file.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("x11vnc (Debian package x11vnc) must be installed");
        let stdout = child.stdout.take().unwrap();
        let process = Process(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.starts_with("PORT=") {
                    let _ = tx.send(());
                }
                line.clear();
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("x11vnc did not start listening");
        X11vnc {
            port,
            _process: process,
            _dir: dir,
        }
    }
}

/// TigerVNC's viewer on `screen`, logging in to the gateway at `port` as `user` with
/// `password`, trusting `ca` (PEM).
pub fn viewer(
    screen: &Display,
    home: &Path,
    ca: &Path,
    port: u16,
    user: &str,
    password: &str,
) -> Process {
    let log = std::fs::File::create(home.join("viewer.log")).unwrap();
    Process(
        Command::new("xtigervncviewer")
            .args([
                "-SecurityTypes",
                "X509Plain",
                "-X509CA",
                ca.to_str().unwrap(),
                "-AutoSelect=0",
                "-FullColor=1",
                "-RemoteResize=0",
                "-geometry",
                "+0+0",
                &format!("localhost::{port}"),
            ])
            .env("DISPLAY", screen.name())
            .env("HOME", home)
            .env("VNC_USERNAME", user)
            .env("VNC_PASSWORD", password)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("xtigervncviewer (Debian package tigervnc-viewer) must be installed"),
    )
}
