//! What the tests share: a real `in.telnetd` (Debian's inetutils-telnetd) started per connection
//! the way inetd would, a login program for it that needs no system user, a recorder that keeps
//! everything, a small Telnet user built on the crate's codec, and the test gateway.
#![allow(dead_code)]

use gatehouse_telnet::codec::{self, Decoder, Event};
use gatehouse_telnet::options::{self, Options, Policy};
use gatehouse_telnet::{
    ClientConfig, ClientSide, Credential, LoginScript, Pattern, RecordError, Recorder, RelayConfig,
    RelaySummary, SecretString, TargetSide, WindowSize, relay,
};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const TELNETD: &str = "/usr/sbin/telnetd";
pub const TARGET_USER: &str = "bob";
pub const TARGET_PASSWORD: &str = "s3cret-Target-pw";
pub const GATEWAY_USER: &str = "alice@bob@target1";
pub const GATEWAY_PASSWORD: &str = "gate-Pass-9";

/// The target's login program: asks like login(1), knows one account, then runs a shell with
/// a recognisable prompt. It prints the terminal telnetd gave it, so tests see TERM and NAWS.
const LOGIN_PROGRAM: &str = r#"#!/bin/sh
printf 'Welcome to the test target\n'
printf 'target1 login: '
IFS= read -r name
stty -echo
printf 'Password: '
IFS= read -r password
stty echo
printf '\n'
if [ "$name" = "bob" ] && [ "$password" = "s3cret-Target-pw" ]; then
  printf 'Last login: never\n'
  printf 'TERM=%s SIZE=%s\n' "$TERM" "$(stty size)"
  PS1='target$ ' exec /bin/sh -i
else
  sleep 1
  printf 'Login incorrect\n'
  exit 1
fi
"#;

/// A listener that runs a fresh `telnetd -E login-program` on each connection, as inetd does.
pub struct Telnetd {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<Child>>>,
    _directory: tempfile::TempDir,
}

impl Telnetd {
    pub fn start() -> Telnetd {
        assert!(
            Path::new(TELNETD).exists(),
            "{TELNETD} is missing: apt-get install inetutils-telnetd inetutils-telnet"
        );
        let directory = tempfile::tempdir().unwrap();
        let program = write_login_program(directory.path());
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
        // A telnetd whose connection closed ends by itself and reaps its login program;
        // killing it first would leave that program to init.
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

fn write_login_program(directory: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = directory.join("login.sh");
    std::fs::write(&path, LOGIN_PROGRAM).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The login rules for the test target: its prompts, and its shell prompt as the proof.
pub fn target_script() -> LoginScript {
    LoginScript {
        success: Some(Pattern::Regex(
            gatehouse_telnet::Regex::new(r"target\$$").unwrap(),
        )),
        timeout: Duration::from_secs(15),
        ..LoginScript::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Output(Vec<u8>),
    Input(Vec<u8>),
    Resize(WindowSize),
}

/// Keeps every event, in order.
#[derive(Debug, Default)]
pub struct MemoryRecorder {
    pub events: Vec<Recorded>,
}

impl MemoryRecorder {
    pub fn output(&self) -> Vec<u8> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Recorded::Output(data) => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub fn input(&self) -> Vec<u8> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Recorded::Input(data) => Some(data.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub fn resizes(&self) -> Vec<WindowSize> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Recorded::Resize(size) => Some(*size),
                _ => None,
            })
            .collect()
    }
}

impl Recorder for MemoryRecorder {
    fn output(&mut self, data: &[u8]) -> Result<(), RecordError> {
        self.events.push(Recorded::Output(data.to_vec()));
        Ok(())
    }
    fn input(&mut self, data: &[u8]) -> Result<(), RecordError> {
        self.events.push(Recorded::Input(data.to_vec()));
        Ok(())
    }
    fn resize(&mut self, size: WindowSize) -> Result<(), RecordError> {
        self.events.push(Recorded::Resize(size));
        Ok(())
    }
}

/// What the test gateway did with one connection.
#[derive(Debug)]
pub struct GatewayRun {
    pub asked_user: String,
    pub summary: RelaySummary,
    pub recorder: MemoryRecorder,
}

/// The gateway as the daemon will wire it: ask the gateway login in-band, refuse a wrong one,
/// log in to the target with the "vault's" credential, relay and record.
pub async fn serve_one(
    listener: tokio::net::TcpListener,
    target: SocketAddr,
    target_password: &str,
) -> Result<GatewayRun, String> {
    let (socket, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let config = ClientConfig {
        negotiation_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let mut client = ClientSide::accept(socket, config)
        .await
        .map_err(|e| e.to_string())?;
    let asked_user = client
        .ask("gatehouse login: ")
        .await
        .map_err(|e| e.to_string())?;
    let password = client
        .ask_secret("Password: ")
        .await
        .map_err(|e| e.to_string())?;
    if asked_user != GATEWAY_USER || password.expose() != GATEWAY_PASSWORD {
        client
            .say("access denied")
            .await
            .map_err(|e| e.to_string())?;
        return Err(format!("gateway login refused for `{asked_user}`"));
    }
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| e.to_string())?;
    let mut target_side = TargetSide::connect(stream, &client.terminal())
        .await
        .map_err(|e| e.to_string())?;
    let vault_password = SecretString::new(target_password.to_string());
    let credential = Credential {
        username: TARGET_USER,
        password: &vault_password,
    };
    if let Err(error) = target_side.login(&credential, &target_script()).await {
        client
            .say("the target refused the login")
            .await
            .map_err(|e| e.to_string())?;
        return Err(error.to_string());
    }
    let mut recorder = MemoryRecorder::default();
    let summary = relay(client, target_side, &mut recorder, &RelayConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(GatewayRun {
        asked_user,
        summary,
        recorder,
    })
}

/// A Telnet user built on the crate's codec: accepts ECHO and SGA from the server, reports a
/// terminal type and window size, and keeps every data byte it received.
pub struct TestUser {
    pub stream: TcpStream,
    decoder: Decoder,
    options: Options,
    pub terminal_type: String,
    pub window: WindowSize,
    /// Every data byte received so far.
    pub received: Vec<u8>,
    /// Every raw byte received so far (Telnet commands included).
    pub wire: Vec<u8>,
}

impl TestUser {
    pub async fn connect(address: SocketAddr, terminal_type: &str, window: WindowSize) -> TestUser {
        let stream = TcpStream::connect(address).await.unwrap();
        let policy = Policy::refuse_all()
            .allow_remote(options::ECHO)
            .allow_remote(options::SGA)
            .allow_local(options::SGA)
            .allow_local(options::TERMINAL_TYPE)
            .allow_local(options::NAWS);
        TestUser {
            stream,
            decoder: Decoder::default(),
            options: Options::new(policy),
            terminal_type: terminal_type.into(),
            window,
            received: Vec::new(),
            wire: Vec::new(),
        }
    }

    /// Reads until the data received so far contains `needle`; the data after the previous
    /// call's position is returned. Fails after 15 s.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let start = self.received.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let fresh = String::from_utf8_lossy(&self.received[start..]).into_owned();
            if fresh.contains(needle) {
                return fresh;
            }
            let mut buffer = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await;
            let count = match read {
                Ok(Ok(count)) => count,
                other => panic!("waiting for {needle:?}: {other:?}; got {fresh:?}"),
            };
            if count == 0 {
                panic!("closed while waiting for {needle:?}; got {fresh:?}");
            }
            self.absorb(&buffer[..count]).await;
        }
    }

    /// Reads until the server closes; returns the data received after the previous position.
    pub async fn read_to_end(&mut self) -> String {
        let start = self.received.len();
        loop {
            let mut buffer = [0u8; 4096];
            let read =
                tokio::time::timeout(Duration::from_secs(15), self.stream.read(&mut buffer)).await;
            match read {
                Ok(Ok(0)) => break,
                Ok(Ok(count)) => self.absorb(&buffer[..count]).await,
                other => panic!("waiting for the end: {other:?}"),
            }
        }
        String::from_utf8_lossy(&self.received[start..]).into_owned()
    }

    async fn absorb(&mut self, bytes: &[u8]) {
        self.wire.extend_from_slice(bytes);
        let mut events = Vec::new();
        self.decoder.decode(bytes, &mut events).unwrap();
        let mut replies = Vec::new();
        for event in events {
            match event {
                Event::Data(data) => self.received.extend(data),
                Event::Negotiation(verb, option) => {
                    let reaction = self.options.receive(verb, option);
                    if let Some((verb, option)) = reaction.reply {
                        codec::encode_negotiation(verb, option, &mut replies);
                    }
                    if self.options.local_enabled(options::NAWS)
                        && reaction.change
                            == Some(options::Change::Local {
                                option: options::NAWS,
                                enabled: true,
                            })
                    {
                        naws(self.window, &mut replies);
                    }
                }
                Event::Subnegotiation(options::TERMINAL_TYPE, payload) if payload == [1] => {
                    let mut answer = vec![0u8];
                    answer.extend_from_slice(self.terminal_type.as_bytes());
                    codec::encode_subnegotiation(options::TERMINAL_TYPE, &answer, &mut replies);
                }
                Event::Subnegotiation(..) | Event::Command(_) => {}
            }
        }
        self.stream.write_all(&replies).await.unwrap();
    }

    /// Sends raw data (escaped), as typed.
    pub async fn type_bytes(&mut self, data: &[u8]) {
        let mut wire = Vec::new();
        codec::escape_data(data, &mut wire);
        self.stream.write_all(&wire).await.unwrap();
    }

    /// Sends raw bytes exactly (Telnet commands included).
    pub async fn send_raw(&mut self, wire: &[u8]) {
        self.stream.write_all(wire).await.unwrap();
    }

    /// Types a line ended by CR LF.
    pub async fn line(&mut self, text: &str) {
        self.type_bytes(format!("{text}\r\n").as_bytes()).await;
    }

    pub async fn resize(&mut self, window: WindowSize) {
        self.window = window;
        let mut wire = Vec::new();
        naws(window, &mut wire);
        self.stream.write_all(&wire).await.unwrap();
    }
}

fn naws(size: WindowSize, out: &mut Vec<u8>) {
    let [w1, w0] = size.columns.to_be_bytes();
    let [h1, h0] = size.rows.to_be_bytes();
    codec::encode_subnegotiation(options::NAWS, &[w1, w0, h1, h0], out);
}

/// True when `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
