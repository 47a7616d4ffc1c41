//! Real components for the tests: an Xvfb display, x11vnc serving it, X clients (`xsetroot`,
//! `xterm`), a gateway certificate from rcgen, and a minimal VNC viewer that speaks VeNCrypt
//! Plain (the tests' own; TigerVNC is the stock viewer in `viewer.rs`).
//!
//! Debian packages: xvfb, x11vnc, x11-xserver-utils (xsetroot), xterm, tigervnc-viewer, xdotool.
#![allow(dead_code)]

use gatehouse_vnc::codec::security;
use gatehouse_vnc::{
    ClientMessage, Framebuffer, Parsed, PixelFormat, RecordError, RecordedEvent, RecordedKind,
    Recorder, ServerContext, ServerInit, ServerMessage,
};
use gatehouse_vnc::{ClientSideOptions, Password, RelayOptions, RelayOutcome, TargetOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An Xvfb display (800x600, 24 bits), on a display number Xvfb picks itself.
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

    /// Runs an X client to completion on this display.
    pub fn run(&self, program: &str, args: &[&str]) {
        let status = Command::new(program)
            .args(args)
            .env("DISPLAY", self.name())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(status.success(), "{program} {args:?}: {status}");
    }

    pub fn solid(&self, colour: &str) {
        self.run("xsetroot", &["-solid", colour]);
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

/// x11vnc serving a display on 127.0.0.1.
pub struct X11vnc {
    pub port: u16,
    _process: Process,
    _dir: tempfile::TempDir,
}

impl X11vnc {
    /// With VNC Authentication when `password` is given, else security type None.
    pub fn start(display: &Display, password: Option<&str>) -> X11vnc {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut args: Vec<String> = [
            "-display",
            &display.name(),
            "-rfbport",
            &port.to_string(),
            "-localhost",
            "-forever",
            "-shared",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match password {
            Some(password) => {
                let file = dir.path().join("passwd");
                let status = Command::new("x11vnc")
                    .args(["-storepasswd", password, file.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("x11vnc (Debian package x11vnc) must be installed");
                assert!(status.success());
                args.extend(["-rfbauth".to_string(), file.to_str().unwrap().to_string()]);
            }
            None => args.push("-nopw".to_string()),
        }
        let mut child = Command::new("x11vnc")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("x11vnc (Debian package x11vnc) must be installed");
        let stdout = child.stdout.take().unwrap();
        let process = Process(child);
        // x11vnc prints PORT=<port> once it listens.
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

    pub async fn dial(&self) -> TcpStream {
        TcpStream::connect(("127.0.0.1", self.port)).await.unwrap()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for `localhost`, as a rustls server config and PEM.
pub struct GatewayCertificate {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    pub pem: String,
}

pub fn gateway_certificate() -> GatewayCertificate {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    GatewayCertificate {
        server: Arc::new(server),
        client: Arc::new(client),
        pem: certified.cert.pem(),
    }
}

/// Everything the relay showed the recorder, and a recording written alongside.
pub struct Captured {
    pub events: Mutex<Vec<Event>>,
    /// The screen as the recorder saw it, drawn live.
    pub screen: Mutex<Option<(ServerContext, Framebuffer)>>,
    pub recording: gatehouse_vnc::RecordingWriter<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start(ServerInit),
    FromTarget(ServerMessage),
    FromClient(ClientMessage),
    Resized(u16, u16),
}

impl Captured {
    pub fn new() -> Arc<Captured> {
        Arc::new(Captured {
            events: Mutex::new(Vec::new()),
            screen: Mutex::new(None),
            recording: gatehouse_vnc::RecordingWriter::new(Vec::new()).unwrap(),
        })
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub fn screen(&self) -> Option<Framebuffer> {
        self.screen
            .lock()
            .unwrap()
            .as_ref()
            .map(|(_, fb)| fb.clone())
    }
}

impl Recorder for Captured {
    fn record(&self, event: &RecordedEvent<'_>) -> Result<(), RecordError> {
        let kept = match event.kind {
            RecordedKind::Start(init) => Event::Start(init.clone()),
            RecordedKind::FromTarget(message) => Event::FromTarget(message.clone()),
            RecordedKind::FromClient(message) => Event::FromClient(message.clone()),
            RecordedKind::DesktopResized { width, height } => Event::Resized(width, height),
        };
        {
            let mut screen = self.screen.lock().unwrap();
            match event.kind {
                RecordedKind::Start(init) => {
                    let context = ServerContext {
                        pixel_format: init.pixel_format,
                        width: init.width,
                        height: init.height,
                    };
                    let fb = Framebuffer::new(init.width, init.height).unwrap();
                    *screen = Some((context, fb));
                }
                RecordedKind::FromTarget(message) => {
                    let (context, fb) = screen.as_mut().unwrap();
                    if let ServerMessage::FramebufferUpdate(update) = message {
                        fb.apply(update, &context.pixel_format, event.at).unwrap();
                    }
                    context.apply(message);
                }
                _ => {}
            }
        }
        self.events.lock().unwrap().push(kept);
        self.recording.record(event)
    }
}

/// The test's own viewer: RFB 3.8 with VeNCrypt Plain (or None), a framebuffer of what it
/// received, in the pixel format it asked for.
pub struct Viewer<S> {
    pub stream: S,
    buffer: Vec<u8>,
    pub context: ServerContext,
    pub init: ServerInit,
    pub framebuffer: Framebuffer,
}

/// How the viewer logs in.
pub enum Login<'a> {
    None,
    Plain {
        subtype: u32,
        username: &'a str,
        password: &'a str,
        tls: Arc<rustls::ClientConfig>,
    },
}

/// Connects through the gateway; `Err` carries the SecurityResult failure reason.
pub async fn viewer(port: u16, login: Login<'_>) -> Result<Viewer<Box<dyn Stream>>, String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut version = [0u8; 12];
    tcp.read_exact(&mut version).await.unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    tcp.write_all(b"RFB 003.008\n").await.unwrap();
    let count = tcp.read_u8().await.unwrap();
    let mut types = vec![0u8; usize::from(count)];
    tcp.read_exact(&mut types).await.unwrap();
    let mut stream: Box<dyn Stream> = match login {
        Login::None => {
            assert!(types.contains(&security::NONE), "{types:?}");
            tcp.write_u8(security::NONE).await.unwrap();
            Box::new(tcp)
        }
        Login::Plain {
            subtype,
            username,
            password,
            tls,
        } => {
            assert_eq!(types, vec![security::VENCRYPT]);
            tcp.write_u8(security::VENCRYPT).await.unwrap();
            let mut vencrypt = [0u8; 2];
            tcp.read_exact(&mut vencrypt).await.unwrap();
            assert_eq!(vencrypt, [0, 2]);
            tcp.write_all(&[0, 2]).await.unwrap();
            assert_eq!(tcp.read_u8().await.unwrap(), 0);
            let count = tcp.read_u8().await.unwrap();
            let mut subtypes = Vec::new();
            for _ in 0..count {
                subtypes.push(tcp.read_u32().await.unwrap());
            }
            assert_eq!(subtypes, vec![security::X509_PLAIN, security::TLS_PLAIN]);
            tcp.write_u32(subtype).await.unwrap();
            assert_eq!(tcp.read_u8().await.unwrap(), 1);
            let connector = tokio_rustls::TlsConnector::from(tls);
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_u32(username.len() as u32).await.unwrap();
            tls.write_u32(password.len() as u32).await.unwrap();
            tls.write_all(username.as_bytes()).await.unwrap();
            tls.write_all(password.as_bytes()).await.unwrap();
            tls.flush().await.unwrap();
            Box::new(tls)
        }
    };
    let result = stream.read_u32().await.unwrap();
    if result != 0 {
        let length = stream.read_u32().await.unwrap();
        let mut reason = vec![0u8; length as usize];
        stream.read_exact(&mut reason).await.unwrap();
        return Err(String::from_utf8(reason).unwrap());
    }
    stream.write_u8(1).await.unwrap();
    let mut buffer = Vec::new();
    let init = loop {
        if let Parsed::Complete { message, length } = ServerInit::parse(&buffer).unwrap() {
            buffer.drain(..length);
            break message;
        }
        read_more(&mut stream, &mut buffer).await;
    };
    let framebuffer = Framebuffer::new(init.width, init.height).unwrap();
    Ok(Viewer {
        stream,
        buffer,
        context: ServerContext {
            pixel_format: init.pixel_format,
            width: init.width,
            height: init.height,
        },
        init,
        framebuffer,
    })
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buffer: &mut Vec<u8>) {
    let mut chunk = vec![0u8; 64 * 1024];
    let n = stream.read(&mut chunk).await.unwrap();
    assert!(n > 0, "the gateway closed the connection");
    buffer.extend_from_slice(&chunk[..n]);
}

impl<S: AsyncRead + AsyncWrite + Unpin> Viewer<S> {
    pub async fn send(&mut self, message: ClientMessage) {
        if let ClientMessage::SetPixelFormat(format) = &message {
            self.context.pixel_format = *format;
        }
        let mut out = Vec::new();
        message.encode(&mut out);
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    pub async fn next(&mut self) -> ServerMessage {
        loop {
            if !self.buffer.is_empty()
                && let Parsed::Complete { message, length } =
                    ServerMessage::parse(&self.buffer, &self.context).unwrap()
            {
                self.buffer.drain(..length);
                if let ServerMessage::FramebufferUpdate(update) = &message {
                    self.framebuffer
                        .apply(update, &self.context.pixel_format, Duration::ZERO)
                        .unwrap();
                }
                self.context.apply(&message);
                return message;
            }
            read_more(&mut self.stream, &mut self.buffer).await;
        }
    }

    /// Asks for updates until `done` holds for the framebuffer (or panics after `limit`).
    pub async fn update_until(&mut self, limit: Duration, done: impl Fn(&Framebuffer) -> bool) {
        let deadline = Instant::now() + limit;
        let mut incremental = false;
        while !done(&self.framebuffer) {
            assert!(Instant::now() < deadline, "the screen never got there");
            self.send(ClientMessage::FramebufferUpdateRequest {
                incremental,
                x: 0,
                y: 0,
                width: self.context.width,
                height: self.context.height,
            })
            .await;
            incremental = true;
            loop {
                let message = tokio::time::timeout(Duration::from_millis(500), self.next()).await;
                match message {
                    Ok(ServerMessage::FramebufferUpdate(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }
}

/// The pixel at (x, y) is this colour, opaque.
pub fn is(framebuffer: &Framebuffer, x: u16, y: u16, rgb: [u8; 3]) -> bool {
    framebuffer.pixel(x, y) == Some([rgb[0], rgb[1], rgb[2], 255])
}

pub fn read_file(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub fn write_file(path: &Path, contents: &str) -> PathBuf {
    std::fs::write(path, contents).unwrap();
    path.to_path_buf()
}

pub const VAULT_PASSWORD: &str = "vault-s3cret";

/// The gateway for one connection: the daemon's glue in miniature.
pub async fn gateway(
    options: ClientSideOptions,
    target_port: u16,
    recorder: Arc<Captured>,
) -> (u16, JoinHandle<Result<RelayOutcome, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let pending = gatehouse_vnc::accept(stream, &options)
            .await
            .map_err(|e| e.to_string())?;
        let login_ok = match pending.credentials() {
            Some(login) => {
                login.username == "alice@root@desk" && login.password == Password::new("gate-pass")
            }
            None => options.allow_none,
        };
        if !login_ok {
            pending
                .refuse("invalid user name or password")
                .await
                .unwrap();
            return Err("refused".to_string());
        }
        let target = tokio::net::TcpStream::connect(("127.0.0.1", target_port))
            .await
            .unwrap();
        let target = match gatehouse_vnc::connect(
            target,
            Some(&Password::new(VAULT_PASSWORD)),
            &TargetOptions::default(),
        )
        .await
        {
            Ok(target) => target,
            Err(error) => {
                let reason = error.to_string();
                pending.refuse(&reason).await.unwrap();
                return Err(reason);
            }
        };
        let client = pending.allow().await.map_err(|e| e.to_string())?;
        let options = RelayOptions {
            name_prefix: "gatehouse: ".to_string(),
            ..RelayOptions::default()
        };
        Ok(
            gatehouse_vnc::relay(client, target, &*recorder, &options, std::future::pending())
                .await,
        )
    });
    (port, task)
}

/// A 16-bit 5-6-5 big-endian true-colour format, for conversion tests.
pub const RGB565_BE: PixelFormat = PixelFormat {
    bits_per_pixel: 16,
    depth: 16,
    big_endian: true,
    true_colour: true,
    red_max: 31,
    green_max: 63,
    blue_max: 31,
    red_shift: 11,
    green_shift: 5,
    blue_shift: 0,
};
