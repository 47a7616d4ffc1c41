//! SSH channel and global requests as a logged-in client sends them: the patched russh server's
//! decoding (`host/vendor/russh`, `server/encrypted.rs`), with a handler that answers them as
//! Gatehouse's does (pty accepted, env by the default allow list, forwarding refused) and a
//! reader per session channel that collects what the application sees, as the relay's first phase.
//!
//! Each input runs one real russh server session over an in-memory pipe. The harness speaks the
//! SSH transport itself, with the `none` key exchange and cipher (the server is configured to allow
//! them, so no cryptography hides the request parser from the fuzzer): version, KEXINIT, NEWKEYS,
//! `ssh-userauth`, `none` authentication, one session channel; then the input, as records
//! `[kind][length u16 BE][bytes]`: an even kind sends CHANNEL_REQUEST for the open channel with
//! `bytes` as what follows the channel id (type, want-reply, fields), an odd kind sends `bytes`
//! as a raw packet payload (any message). Last, a second channel open marks the end.
//!
//! Properties: no panic and no hang; while only channel requests were sent, the application sees
//! exactly the requests an independent RFC 4254 decoding of the same bytes finds (type, every
//! field, pty modes as sent), in order; a malformed request ends the connection and nothing after
//! it reaches the application; well-formed requests never end it.
#![no_main]

#[path = "common/chunked.rs"]
mod chunked;

use libfuzzer_sys::fuzz_target;
use russh::keys::{Algorithm, PrivateKey, ssh_key};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, MethodKind, MethodSet, Pty};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

const MARKER_CHANNEL: u32 = 0x4d41_524b;

/// What the application saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Pty {
        term: String,
        size: [u32; 4],
        modes: Vec<(Pty, u32)>,
    },
    Env {
        name: String,
        value: String,
    },
    Exec(Vec<u8>),
    Subsystem(String),
    WindowChange([u32; 4]),
    Shell,
    Signal,
    X11 {
        single: bool,
        protocol: String,
        cookie: String,
        screen: u32,
    },
    Agent,
}

fn seen(msg: ChannelMsg) -> Option<Seen> {
    Some(match msg {
        ChannelMsg::RequestPty {
            term,
            col_width,
            row_height,
            pix_width,
            pix_height,
            terminal_modes,
            ..
        } => Seen::Pty {
            term,
            size: [col_width, row_height, pix_width, pix_height],
            // Codes russh does not know stay in the list as TTY_OP_END, which its encoder skips.
            modes: terminal_modes
                .into_iter()
                .filter(|(pty, _)| *pty != Pty::TTY_OP_END)
                .collect(),
        },
        ChannelMsg::SetEnv {
            variable_name,
            variable_value,
            ..
        } => Seen::Env {
            name: variable_name,
            value: variable_value,
        },
        ChannelMsg::Exec { command, .. } => Seen::Exec(command),
        ChannelMsg::RequestSubsystem { name, .. } => Seen::Subsystem(name),
        ChannelMsg::WindowChange {
            col_width,
            row_height,
            pix_width,
            pix_height,
        } => Seen::WindowChange([col_width, row_height, pix_width, pix_height]),
        ChannelMsg::RequestShell { .. } => Seen::Shell,
        ChannelMsg::Signal { .. } => Seen::Signal,
        ChannelMsg::RequestX11 {
            single_connection,
            x11_authentication_protocol,
            x11_authentication_cookie,
            x11_screen_number,
            ..
        } => Seen::X11 {
            single: single_connection,
            protocol: x11_authentication_protocol,
            cookie: x11_authentication_cookie,
            screen: x11_screen_number,
        },
        ChannelMsg::AgentForward { .. } => Seen::Agent,
        _ => return None,
    })
}

/// An independent reading of RFC 4254 section 6 request bodies.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn text(&mut self) -> Option<String> {
        std::str::from_utf8(self.bytes()?).ok().map(str::to_owned)
    }
    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

/// `Err(())`: malformed; `Ok(None)`: well-formed but nothing for the application.
fn expect(body: &[u8]) -> Result<Option<Seen>, ()> {
    let mut w = Wire(body);
    let kind = w.text().ok_or(())?;
    w.u8().ok_or(())?;
    let parsed = match kind.as_str() {
        "pty-req" => (|| {
            let term = w.text()?;
            let size = [w.u32()?, w.u32()?, w.u32()?, w.u32()?];
            let mut raw = w.bytes()?;
            let mut modes = Vec::new();
            let mut count = 0;
            while let Some(&code) = raw.first() {
                if code == 0 {
                    if raw.len() != 1 {
                        return None;
                    }
                    break;
                }
                if raw.len() < 5 || count >= 130 {
                    return None;
                }
                let value = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]);
                if let Some(pty) = Pty::from_u8(code) {
                    modes.push((pty, value));
                }
                count += 1;
                raw = &raw[5..];
            }
            w.end()?;
            Some(Some(Seen::Pty { term, size, modes }))
        })(),
        "x11-req" => (|| {
            let single = w.u8()? != 0;
            let protocol = w.text()?;
            let cookie = w.text()?;
            let screen = w.u32()?;
            w.end()?;
            Some(Some(Seen::X11 {
                single,
                protocol,
                cookie,
                screen,
            }))
        })(),
        "env" => (|| {
            let name = w.text()?;
            let value = w.text()?;
            w.end()?;
            Some(Some(Seen::Env { name, value }))
        })(),
        "shell" => w.end().map(|()| Some(Seen::Shell)),
        "auth-agent-req@openssh.com" => w.end().map(|()| Some(Seen::Agent)),
        "exec" => (|| {
            let command = w.bytes()?.to_vec();
            w.end()?;
            Some(Some(Seen::Exec(command)))
        })(),
        "subsystem" => (|| {
            let name = w.text()?;
            w.end()?;
            Some(Some(Seen::Subsystem(name)))
        })(),
        "window-change" => (|| {
            let size = [w.u32()?, w.u32()?, w.u32()?, w.u32()?];
            w.end()?;
            Some(Some(Seen::WindowChange(size)))
        })(),
        "signal" => (|| {
            w.text()?;
            w.end()?;
            Some(Some(Seen::Signal))
        })(),
        _ => Some(None),
    };
    parsed.ok_or(())
}

type Observed = Arc<Mutex<Vec<(ChannelId, Seen)>>>;

struct Handler {
    observed: Observed,
    readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Gatehouse's default `env_allow`.
fn env_allowed(name: &str) -> bool {
    ["LANG", "LC_*", "TZ"]
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        })
}

impl russh::server::Handler for Handler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        mut channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let observed = self.observed.clone();
        let id = channel.id();
        let reader = tokio::spawn(async move {
            while let Some(msg) = channel.wait().await {
                if let Some(s) = seen(msg) {
                    observed.lock().expect("not poisoned").push((id, s));
                }
            }
        });
        self.readers.lock().expect("not poisoned").push(reader);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if env_allowed(variable_name) {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }
}

fn config() -> Arc<russh::server::Config> {
    static CONFIG: OnceLock<Arc<russh::server::Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let key = PrivateKey::from(ssh_key::private::Ed25519Keypair::from_seed(&[7; 32]));
            Arc::new(russh::server::Config {
                methods: MethodSet::from(&[MethodKind::None][..]),
                auth_rejection_time: std::time::Duration::ZERO,
                auth_rejection_time_initial: Some(std::time::Duration::ZERO),
                keys: vec![key],
                inactivity_timeout: None,
                keepalive_interval: None,
                channel_buffer_size: 32,
                preferred: russh::Preferred {
                    kex: Cow::Borrowed(&[russh::kex::NONE]),
                    key: Cow::Borrowed(&[Algorithm::Ed25519]),
                    cipher: Cow::Borrowed(&[russh::cipher::NONE]),
                    mac: Cow::Borrowed(&[russh::mac::NONE]),
                    compression: Cow::Borrowed(&[russh::compression::NONE]),
                    ..Default::default()
                },
                server_id: russh::SshId::Standard("SSH-2.0-Gatehouse".into()),
                ..Default::default()
            })
        })
        .clone()
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// One cleartext binary packet (RFC 4253 section 6, no MAC).
fn packet(payload: &[u8]) -> Vec<u8> {
    let mut padding = 8 - (5 + payload.len()) % 8;
    if padding < 4 {
        padding += 8;
    }
    let mut out = Vec::with_capacity(5 + payload.len() + padding);
    out.extend_from_slice(&((1 + payload.len() + padding) as u32).to_be_bytes());
    out.push(padding as u8);
    out.extend_from_slice(payload);
    out.resize(out.len() + padding, 0);
    out
}

fn kexinit() -> Vec<u8> {
    let mut p = vec![20];
    p.extend_from_slice(&[0x42; 16]);
    for list in [
        "none",
        "ssh-ed25519",
        "none",
        "none",
        "none",
        "none",
        "none",
        "none",
        "",
        "",
    ] {
        string(&mut p, list.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&0u32.to_be_bytes());
    p
}

fn channel_open(sender: u32) -> Vec<u8> {
    let mut p = vec![90];
    string(&mut p, b"session");
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&(2u32 << 20).to_be_bytes());
    p.extend_from_slice(&32768u32.to_be_bytes());
    p
}

/// The next packet's payload from the server, `None` at the end of the stream.
async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut length = [0; 4];
    r.read_exact(&mut length).await.ok()?;
    let length = u32::from_be_bytes(length) as usize;
    assert!(length <= 256 * 1024, "a server packet of {length} bytes");
    let mut body = vec![0; length];
    r.read_exact(&mut body).await.ok()?;
    let padding = usize::from(*body.first()?);
    body.get(1..length.checked_sub(padding)?)
        .map(<[u8]>::to_vec)
}

async fn read_line<R: AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    loop {
        let byte = r.read_u8().await.ok()?;
        line.push(byte);
        if byte == b'\n' {
            return Some(line);
        }
    }
}

struct Outcome {
    /// The server answered the end marker: it read every record and kept the connection.
    survived: bool,
    seen: Vec<Seen>,
}

async fn session(records: &[(u8, &[u8])]) -> Option<Outcome> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let observed: Observed = Arc::default();
    let readers = Arc::new(Mutex::new(Vec::new()));
    let handler = Handler {
        observed: observed.clone(),
        readers: readers.clone(),
    };
    let running = tokio::spawn(async move {
        if let Ok(session) = russh::server::run_stream(config(), server, handler).await {
            let _ = session.await;
        }
    });
    let (mut rd, mut wr) = tokio::io::split(client);

    wr.write_all(b"SSH-2.0-fuzz\r\n").await.ok()?;
    wr.write_all(&packet(&kexinit())).await.ok()?;
    assert!(read_line(&mut rd).await?.starts_with(b"SSH-2.0-"));
    while read_packet(&mut rd).await?.first() != Some(&21) {}
    let mut setup = packet(&[21]);
    let mut service = vec![5];
    string(&mut service, b"ssh-userauth");
    setup.extend(packet(&service));
    let mut auth = vec![50];
    string(&mut auth, b"fuzz");
    string(&mut auth, b"ssh-connection");
    string(&mut auth, b"none");
    setup.extend(packet(&auth));
    setup.extend(packet(&channel_open(0)));
    wr.write_all(&setup).await.ok()?;
    let id = loop {
        let p = read_packet(&mut rd).await?;
        assert_ne!(p.first(), Some(&51), "none authentication refused");
        if p.first() == Some(&91) && p.get(1..5) == Some(&[0, 0, 0, 0][..]) {
            break u32::from_be_bytes(p[5..9].try_into().ok()?);
        }
    };

    // From here the server's answers are read concurrently so that neither side blocks.
    let answers = tokio::spawn(async move {
        while let Some(p) = read_packet(&mut rd).await {
            if p.first() == Some(&91) && p.get(1..5) == Some(&MARKER_CHANNEL.to_be_bytes()[..]) {
                return true;
            }
        }
        false
    });
    let mut out = Vec::new();
    for (kind, bytes) in records {
        if kind % 2 == 0 {
            let mut p = vec![98];
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(bytes);
            out.extend(packet(&p));
        } else if !bytes.is_empty() {
            out.extend(packet(bytes));
        }
    }
    out.extend(packet(&channel_open(MARKER_CHANNEL)));
    let _ = wr.write_all(&out).await;
    let survived = answers.await.unwrap_or(false);
    let _ = wr.shutdown().await;
    drop(wr);
    let _ = running.await;
    let pending: Vec<_> = readers.lock().expect("not poisoned").drain(..).collect();
    for reader in pending {
        let _ = reader.await;
    }
    let seen = observed
        .lock()
        .expect("not poisoned")
        .drain(..)
        .filter(|(c, _)| c.number() == id)
        .map(|(_, s)| s)
        .collect();
    Some(Outcome { survived, seen })
}

fn records(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while let [kind, high, low, rest @ ..] = data {
        let length = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
        let (bytes, tail) = rest.split_at(length);
        out.push((*kind, bytes));
        data = tail;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let records = records(data);
    let outcome = chunked::block_on(session(&records)).expect("the handshake completes");
    let mut expected = Vec::new();
    let mut malformed = false;
    for (kind, bytes) in &records {
        if kind % 2 == 1 {
            // A raw message can do anything (close the channel, disconnect): no prediction.
            return;
        }
        match expect(bytes) {
            Ok(Some(s)) => expected.push(s),
            Ok(None) => {}
            Err(()) => {
                malformed = true;
                break;
            }
        }
    }
    assert_eq!(outcome.seen, expected, "what the application saw");
    assert_eq!(outcome.survived, !malformed, "the connection survived");
});
