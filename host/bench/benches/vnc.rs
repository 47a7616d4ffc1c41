//! The VNC relay of `gatehouse serve` against the direct path to the same x11vnc, in one run:
//! `cargo bench -p gatehouse-bench --bench vnc`. docs/BENCHMARKS.md ("VNC") describes the
//! method, the knobs and the figures.
//!
//! The target is x11vnc (VNC authentication) serving an Xvfb desktop (1920x1080 by default) on
//! which an xterm scrolls text at a fixed pace (the text comes from this binary, role `text`).
//! The gateway is `gatehouse serve --vnc-listen` with the target as an asset (`--vnc-port`), the
//! VNC password in the vault and a grant.
//!
//! The viewer is this process ([`Viewer`]): RFB 3.8, towards the gateway VeNCrypt X509Plain
//! (rustls, the gateway's certificate as CA) with `alice@console@vn1` and the gateway password,
//! towards x11vnc VNC authentication with the VNC password (`gatehouse_vnc::vnc_auth_response`).
//! Then, the same on both paths: SetPixelFormat to the gateway's 32-bit format, SetEncodings
//! (Raw, or Hextile and Raw), and full non-incremental FramebufferUpdateRequests, one after the
//! other (or `DEPTH` outstanding), framed with [`gatehouse_bench::rfb::Framer`] without keeping
//! the pixels.
//!
//! Writes `vnc.json` and `vnc.txt` to `<target>/gatehouse-bench/` and a dated copy to `history/`
//! there. Knobs are environment variables; see [`Settings`].

use anyhow::{Context, Result, bail};
use gatehouse_bench::rfb::{Framer, Message};
use gatehouse_bench::serve::{Serve, cli_in, port_open};
use gatehouse_bench::{
    command_line, dir_size, env_number, free_port, gatehouse_binary, load_average, median,
    percentile, proc_cpu, results_dir, tree_cpu, tree_cpu_since,
};
use gatehouse_vnc::codec::{encoding, security};
use gatehouse_vnc::{ClientMessage, Parsed, PixelFormat, ServerInit, vnc_auth_response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Set by the bench on the text scroller it starts from its own binary.
const ROLE: &str = "GATEHOUSE_BENCH_VNC_ROLE";

const GATEWAY_USER: &str = "alice";
const GATEWAY_PASSWORD: &str = "Bench-Gateway-Pass-1";
const TARGET_ACCOUNT: &str = "console";
/// x11vnc keeps 8 characters of a VNC password.
const VNC_PASSWORD: &str = "BenchVnc";
const ASSET: &str = "vn1";

fn main() -> Result<()> {
    match std::env::var(ROLE).as_deref() {
        Ok("text") => return text(),
        Ok(other) => bail!("{ROLE}={other}: not a role of this binary (text)"),
        Err(_) => {}
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "gatehouse-bench vnc: run it with `cargo bench -p gatehouse-bench --bench vnc`; skipping."
        );
        return Ok(());
    }
    let settings = Settings::from_env()?;
    for (program, package) in [("Xvfb", "xvfb"), ("x11vnc", "x11vnc"), ("xterm", "xterm")] {
        if command_line("sh", &["-c", &format!("command -v {program}")]).is_empty() {
            bail!("{program} is missing (Debian package {package}; scripts/install-test-deps.sh)");
        }
    }
    let binary = gatehouse_binary()?;
    println!("gateway binary: {}", binary.display());
    let results_dir = results_dir(&binary);
    let work = tempfile::Builder::new()
        .prefix("gatehouse-bench-vnc-")
        .tempdir()
        .context("creating the work directory")?;
    let bench = Bench::start(&settings, &binary, work.path())?;
    let load_before = load_average();

    println!("checking both paths");
    for via in [Via::Gateway, Via::Direct] {
        let mut viewer = bench
            .connect(via, &[encoding::RAW])
            .with_context(|| format!("the {} path does not work", via.label()))?;
        viewer.updates(1, 1)?;
    }
    bench.gateway.settle();
    bench.clear_recordings();

    let mut runs = Vec::new();
    for mode in &settings.modes {
        for rep in 0..settings.reps {
            let order = if rep.is_multiple_of(2) {
                [Via::Gateway, Via::Direct]
            } else {
                [Via::Direct, Via::Gateway]
            };
            for via in order {
                let run = bench.measure(&settings, *mode, via, rep).with_context(|| {
                    format!("{} rep {} via {}", mode.label(), rep + 1, via.label())
                })?;
                println!(
                    "{:>7} rep {}/{} {:>7}: {:7.1} MiB/s, {:5.1} updates/s, first frame {:6.1} ms",
                    mode.label(),
                    rep + 1,
                    settings.reps,
                    via.label(),
                    run.mib_s(),
                    run.updates_s(),
                    run.first_frame_ms
                );
                runs.push(run);
            }
        }
    }

    let report = Report {
        settings: &settings,
        binary: &binary,
        date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        load_before,
        load_after: load_average(),
        gateway_peak_rss_kib: bench.gateway.peak_rss_kib(),
        runs: &runs,
    };
    let text_report = report.render();
    println!("\n{text_report}");
    let json_text = serde_json::to_string_pretty(&report.json())?;
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;
    std::fs::write(results_dir.join("vnc.json"), &json_text)?;
    std::fs::write(results_dir.join("vnc.txt"), &text_report)?;
    let history = results_dir.join("history");
    std::fs::create_dir_all(&history)?;
    let dated = format!("vnc-{}", report.date.replace(':', ""));
    std::fs::write(history.join(format!("{dated}.json")), &json_text)?;
    std::fs::write(history.join(format!("{dated}.txt")), &text_report)?;
    println!(
        "results: {} (and {})",
        results_dir.join("vnc.json").display(),
        history.join(format!("{dated}.json")).display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Settings

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Raw,
    Hextile,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Hextile => "hextile",
        }
    }

    fn encodings(self) -> &'static [i32] {
        match self {
            Mode::Raw => &[encoding::RAW],
            Mode::Hextile => &[encoding::HEXTILE, encoding::RAW],
        }
    }
}

/// From the environment, all optional: `GATEHOUSE_BENCH_VNC_SIZE` (`1920x1080`),
/// `GATEHOUSE_BENCH_VNC_UPDATES` (100 full updates per session), `GATEHOUSE_BENCH_VNC_REPS` (5
/// sessions per path and encoding), `GATEHOUSE_BENCH_VNC_DEPTH` (1 request outstanding; x11vnc
/// merges pending requests into one update, so more stalls against it),
/// `GATEHOUSE_BENCH_VNC_MODES` (`raw,hextile`), `GATEHOUSE_BENCH_VNC_LINES_PER_S` (60: the text
/// scrolled on the target's screen), `GATEHOUSE_BENCH_VNC_X11VNC_ARGS` (more x11vnc arguments,
/// separated by spaces); `GATEHOUSE_BIN` skips the build.
struct Settings {
    width: u16,
    height: u16,
    updates: usize,
    reps: usize,
    depth: usize,
    modes: Vec<Mode>,
    lines_per_s: u64,
    x11vnc_args: Vec<String>,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let size = std::env::var("GATEHOUSE_BENCH_VNC_SIZE").unwrap_or_else(|_| "1920x1080".into());
        let (width, height) = size
            .trim()
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u16>().ok()?, h.parse::<u16>().ok()?)))
            .filter(|&(w, h)| (320..=4096).contains(&w) && (200..=2160).contains(&h))
            .with_context(|| format!("GATEHOUSE_BENCH_VNC_SIZE={size}: expected WIDTHxHEIGHT"))?;
        let modes = std::env::var("GATEHOUSE_BENCH_VNC_MODES")
            .unwrap_or_else(|_| "raw,hextile".into())
            .split(',')
            .map(|m| match m.trim() {
                "raw" => Ok(Mode::Raw),
                "hextile" => Ok(Mode::Hextile),
                other => bail!("GATEHOUSE_BENCH_VNC_MODES: {other} is not raw or hextile"),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Settings {
            width,
            height,
            updates: env_number("GATEHOUSE_BENCH_VNC_UPDATES", 100)?.max(1) as usize,
            reps: env_number("GATEHOUSE_BENCH_VNC_REPS", 5)?.max(1) as usize,
            depth: env_number("GATEHOUSE_BENCH_VNC_DEPTH", 1)?.max(1) as usize,
            modes,
            lines_per_s: env_number("GATEHOUSE_BENCH_VNC_LINES_PER_S", 60)?.max(1),
            x11vnc_args: std::env::var("GATEHOUSE_BENCH_VNC_X11VNC_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
        })
    }

    fn json(&self) -> Value {
        json!({
            "size": format!("{}x{}", self.width, self.height),
            "updates_per_session": self.updates,
            "reps": self.reps,
            "depth": self.depth,
            "modes": self.modes.iter().map(|m| m.label()).collect::<Vec<_>>(),
            "lines_per_s": self.lines_per_s,
            "x11vnc_args": self.x11vnc_args,
        })
    }
}

/// The `text` role: numbered lines of words on stdout, `GATEHOUSE_BENCH_VNC_LINES_PER_S` a
/// second in batches every 50 ms, so that the screen changes at the same pace in every run.
fn text() -> Result<()> {
    let per_s = env_number("GATEHOUSE_BENCH_VNC_LINES_PER_S", 60)?.max(1);
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    ];
    let mut out = std::io::stdout().lock();
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        let due = (start.elapsed().as_millis() as u64 * per_s) / 1000;
        while n < due {
            let mut line = format!("{n:08}");
            for i in 0..24 {
                line.push(' ');
                line.push_str(words[((n * 5 + i * 7) % 9) as usize]);
            }
            writeln!(out, "{line}")?;
            n += 1;
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// The target and the gateway

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Gateway,
    Direct,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::Gateway => "gateway",
            Via::Direct => "direct",
        }
    }
}

struct Bench {
    // Dropped in this order: the gateway, then the target's programs.
    gateway: Serve,
    vnc_port: u16,
    x11vnc: Process,
    x11vnc_port: u16,
    xterm: Process,
    xvfb: Process,
    tls: Arc<rustls::ClientConfig>,
}

impl Bench {
    fn start(settings: &Settings, binary: &Path, work: &Path) -> Result<Bench> {
        let mut xvfb = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0"])
            .arg(format!("{}x{}x24", settings.width, settings.height))
            .args(["-nolisten", "tcp", "-noreset"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting Xvfb")?;
        let mut line = String::new();
        BufReader::new(xvfb.stdout.take().context("Xvfb's stdout")?).read_line(&mut line)?;
        let xvfb = Process(xvfb);
        let display = format!(":{}", line.trim());
        // An xterm over the whole screen (6x13 cells of the default font), scrolling text.
        let columns = settings.width / 6;
        let rows = settings.height / 13;
        let xterm = Process(
            Command::new("xterm")
                .args(["-geometry", &format!("{columns}x{rows}+0+0"), "-e"])
                .arg(std::env::current_exe()?)
                .env("DISPLAY", &display)
                .env(ROLE, "text")
                .env(
                    "GATEHOUSE_BENCH_VNC_LINES_PER_S",
                    settings.lines_per_s.to_string(),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting xterm")?,
        );

        let passwd = work.join("vncpasswd");
        let stored = command_line(
            "x11vnc",
            &["-storepasswd", VNC_PASSWORD, &passwd.display().to_string()],
        );
        if !passwd.exists() {
            bail!("x11vnc -storepasswd failed: {stored}");
        }
        let x11vnc_port = free_port()?;
        let log = std::fs::File::create(work.join("x11vnc.log"))?;
        let x11vnc = Process(
            Command::new("x11vnc")
                .args(["-display", &display, "-rfbport", &x11vnc_port.to_string()])
                .args(["-localhost", "-forever", "-shared", "-rfbauth"])
                .arg(&passwd)
                .args(&settings.x11vnc_args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting x11vnc")?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !port_open(x11vnc_port) {
            if Instant::now() > deadline {
                bail!(
                    "x11vnc did not listen within 20 s:\n{}",
                    std::fs::read_to_string(work.join("x11vnc.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "target: x11vnc on 127.0.0.1:{x11vnc_port} serving Xvfb {display} ({}x{}), an xterm scrolling {} lines/s",
            settings.width, settings.height, settings.lines_per_s
        );

        let data = work.join("data");
        let account = format!("{TARGET_ACCOUNT}@{ASSET}");
        let port = x11vnc_port.to_string();
        let steps: [(&[&str], Option<&str>); 5] = [
            (&["init"], None),
            (
                &["user", "add", GATEWAY_USER, "--password-stdin"],
                Some(GATEWAY_PASSWORD),
            ),
            (
                &[
                    "asset",
                    "add",
                    ASSET,
                    "--address",
                    "127.0.0.1",
                    "--tofu",
                    "--vnc-port",
                    &port,
                ],
                None,
            ),
            (
                &["account", "add", &account, "--password-stdin"],
                Some(VNC_PASSWORD),
            ),
            (&["grant", "add", "--user", GATEWAY_USER, &account], None),
        ];
        for (args, stdin) in steps {
            cli_in(binary, &data, args, stdin)?;
        }
        let gateway = Serve::start(binary, &data, &work.join("serve.log"), &["--vnc-listen"])?;
        let vnc_port = gateway.ports[0];
        println!(
            "gateway: gatehouse serve, VNC on 127.0.0.1:{vnc_port}, data {}",
            data.display()
        );

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(data.join("tls/cert.pem")).context("the gateway's certificate")?;
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.context("the gateway's certificate")?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Bench {
            gateway,
            vnc_port,
            x11vnc,
            x11vnc_port,
            xterm,
            xvfb,
            tls: Arc::new(tls),
        })
    }

    /// A viewer past ServerInit, its pixel format and encodings set.
    fn connect(&self, via: Via, encodings: &[i32]) -> Result<Viewer> {
        let result = match via {
            Via::Gateway => Viewer::connect(
                self.vnc_port,
                Login::Gateway {
                    user: &format!("{GATEWAY_USER}@{TARGET_ACCOUNT}@{ASSET}"),
                    password: GATEWAY_PASSWORD,
                    tls: self.tls.clone(),
                },
                encodings,
            ),
            Via::Direct => Viewer::connect(
                self.x11vnc_port,
                Login::Vnc {
                    password: VNC_PASSWORD,
                },
                encodings,
            ),
        };
        result.map_err(|error| match via {
            Via::Gateway => error.context(format!("serve.log:\n{}", self.gateway.log_tail())),
            Via::Direct => error,
        })
    }

    fn cpu(&self) -> CpuReading {
        let own = |pid: u32| proc_cpu(pid).map_or(0.0, |c| c.own);
        CpuReading {
            client: own(std::process::id()),
            gateway: own(self.gateway.pid()),
            x11vnc: own(self.x11vnc.pid()),
            xvfb: own(self.xvfb.pid()),
            scene: tree_cpu(self.xterm.pid()),
        }
    }

    /// Deletes the gateway's recordings (hundreds of MiB per session), returning their size.
    fn clear_recordings(&self) -> u64 {
        let dir = self.gateway.data.join("recordings");
        let size = dir_size(&dir);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.path().is_dir() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        size
    }

    fn measure(&self, settings: &Settings, mode: Mode, via: Via, rep: usize) -> Result<Run> {
        let started = Instant::now();
        let mut viewer = self.connect(via, mode.encodings())?;
        let logged_in_ms = started.elapsed().as_secs_f64() * 1e3;
        viewer.updates(1, 1)?;
        let first_frame_ms = started.elapsed().as_secs_f64() * 1e3;
        let before = self.cpu();
        let t = Instant::now();
        let (bytes, rectangles) = viewer.updates(settings.updates, settings.depth)?;
        let seconds = t.elapsed().as_secs_f64();
        let cpu = self.cpu().since(&before);
        drop(viewer);
        // Let the gateway finish the session and seal its recording (hashing and signing it)
        // before the next run, and report that apart.
        let gateway_after = self.gateway.settle();
        let recorded_bytes = match via {
            Via::Gateway => Some(self.clear_recordings()),
            Via::Direct => None,
        };
        Ok(Run {
            mode,
            via,
            rep,
            logged_in_ms,
            first_frame_ms,
            updates: settings.updates,
            bytes,
            rectangles,
            seconds,
            cpu,
            recorded_bytes,
            gateway_after,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The viewer

enum Login<'a> {
    Gateway {
        user: &'a str,
        password: &'a str,
        tls: Arc<rustls::ClientConfig>,
    },
    Vnc {
        password: &'a str,
    },
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Viewer {
    stream: Stream,
    width: u16,
    height: u16,
    framer: Framer,
    buffer: Vec<u8>,
    done: Vec<Message>,
}

fn read_u8(s: &mut impl Read) -> Result<u8> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u32(s: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

impl Viewer {
    fn connect(port: u16, login: Login<'_>, encodings: &[i32]) -> Result<Viewer> {
        let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut version = [0u8; 12];
        tcp.read_exact(&mut version)
            .context("the server's version")?;
        if &version[..4] != b"RFB " {
            bail!("not an RFB server: {:?}", String::from_utf8_lossy(&version));
        }
        tcp.write_all(b"RFB 003.008\n")?;
        let count = read_u8(&mut tcp)?;
        let mut types = vec![0u8; usize::from(count)];
        tcp.read_exact(&mut types)?;
        let mut stream = match login {
            Login::Vnc { password } => {
                if !types.contains(&security::VNC_AUTH) {
                    bail!("the server offers {types:?}, not VNC authentication");
                }
                tcp.write_all(&[security::VNC_AUTH])?;
                let mut challenge = [0u8; 16];
                tcp.read_exact(&mut challenge)?;
                let response =
                    vnc_auth_response(&gatehouse_vnc::Password::new(password), &challenge);
                tcp.write_all(&response)?;
                Stream::Plain(tcp)
            }
            Login::Gateway {
                user,
                password,
                tls,
            } => {
                if !types.contains(&security::VENCRYPT) {
                    bail!("the server offers {types:?}, not VeNCrypt");
                }
                tcp.write_all(&[security::VENCRYPT])?;
                let mut vencrypt = [0u8; 2];
                tcp.read_exact(&mut vencrypt)?;
                tcp.write_all(&[0, 2])?;
                if read_u8(&mut tcp)? != 0 {
                    bail!("VeNCrypt 0.2 refused");
                }
                let count = read_u8(&mut tcp)?;
                let subtypes = (0..count)
                    .map(|_| read_u32(&mut tcp))
                    .collect::<Result<Vec<_>>>()?;
                if !subtypes.contains(&security::X509_PLAIN) {
                    bail!("VeNCrypt subtypes {subtypes:?} lack X509Plain");
                }
                tcp.write_all(&security::X509_PLAIN.to_be_bytes())?;
                if read_u8(&mut tcp)? != 1 {
                    bail!("X509Plain refused");
                }
                let name = rustls::pki_types::ServerName::try_from("localhost")?;
                let connection = rustls::ClientConnection::new(tls, name)?;
                let mut tls = rustls::StreamOwned::new(connection, tcp);
                let mut out = Vec::new();
                out.extend((user.len() as u32).to_be_bytes());
                out.extend((password.len() as u32).to_be_bytes());
                out.extend(user.as_bytes());
                out.extend(password.as_bytes());
                tls.write_all(&out)?;
                tls.flush()?;
                Stream::Tls(Box::new(tls))
            }
        };
        let result = read_u32(&mut stream).context("the security result")?;
        if result != 0 {
            let length = read_u32(&mut stream).unwrap_or(0).min(4096);
            let mut reason = vec![0u8; length as usize];
            let _ = stream.read_exact(&mut reason);
            bail!("refused: {}", String::from_utf8_lossy(&reason));
        }
        stream.write_all(&[1])?; // ClientInit, shared
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let init = loop {
            if let Parsed::Complete { message, length } = ServerInit::parse(&buffer)? {
                buffer.drain(..length);
                break message;
            }
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("closed before ServerInit");
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let format = PixelFormat::TARGET;
        let mut out = Vec::new();
        ClientMessage::SetPixelFormat(format).encode(&mut out);
        ClientMessage::SetEncodings(encodings.to_vec()).encode(&mut out);
        stream.write_all(&out)?;
        stream.flush()?;
        let mut viewer = Viewer {
            stream,
            width: init.width,
            height: init.height,
            framer: Framer::new(format.bytes_per_pixel()),
            buffer: vec![0; 1 << 20],
            done: Vec::new(),
        };
        // Anything after ServerInit already read.
        let early = std::mem::take(&mut buffer);
        viewer.framer.feed(&early, &mut viewer.done)?;
        Ok(viewer)
    }

    /// Asks for `count` full non-incremental updates, keeping `depth` requests outstanding,
    /// and reads them; their bytes and rectangles.
    fn updates(&mut self, count: usize, depth: usize) -> Result<(u64, u64)> {
        let request = {
            let mut out = Vec::new();
            ClientMessage::FramebufferUpdateRequest {
                incremental: false,
                x: 0,
                y: 0,
                width: self.width,
                height: self.height,
            }
            .encode(&mut out);
            out
        };
        let (mut sent, mut received) = (0usize, 0usize);
        let (mut bytes, mut rectangles) = (0u64, 0u64);
        while received < count {
            while sent < count && sent - received < depth {
                self.stream.write_all(&request)?;
                sent += 1;
            }
            self.stream.flush()?;
            while self.done.is_empty() {
                let n = self.stream.read(&mut self.buffer)?;
                if n == 0 {
                    bail!("the server closed the connection after {received} updates");
                }
                self.framer.feed(&self.buffer[..n], &mut self.done)?;
            }
            for message in self.done.drain(..) {
                if let Message::Update {
                    bytes: b,
                    rectangles: r,
                } = message
                {
                    bytes += b;
                    rectangles += u64::from(r);
                    received += 1;
                }
            }
        }
        Ok((bytes, rectangles))
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements and report

struct CpuReading {
    client: f64,
    gateway: f64,
    x11vnc: f64,
    xvfb: f64,
    scene: HashMap<u32, f64>,
}

impl CpuReading {
    fn since(&self, before: &CpuReading) -> Cpu {
        Cpu {
            client: self.client - before.client,
            gateway: self.gateway - before.gateway,
            x11vnc: self.x11vnc - before.x11vnc,
            xvfb: self.xvfb - before.xvfb,
            scene: tree_cpu_since(&self.scene, &before.scene),
        }
    }
}

/// CPU seconds per role.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    client: f64,
    gateway: f64,
    x11vnc: f64,
    xvfb: f64,
    scene: f64,
}

struct Run {
    mode: Mode,
    via: Via,
    rep: usize,
    logged_in_ms: f64,
    first_frame_ms: f64,
    updates: usize,
    bytes: u64,
    rectangles: u64,
    seconds: f64,
    cpu: Cpu,
    /// The gateway's recording of the session.
    recorded_bytes: Option<u64>,
    /// Gateway CPU seconds after the session until it was idle (sealing its recording).
    gateway_after: f64,
}

impl Run {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB / self.seconds
    }

    fn updates_s(&self) -> f64 {
        self.updates as f64 / self.seconds
    }

    fn per_gib(&self, cpu: f64) -> f64 {
        cpu / (self.bytes as f64 / GIB)
    }

    fn json(&self) -> Value {
        json!({
            "encoding": self.mode.label(),
            "path": self.via.label(),
            "rep": self.rep + 1,
            "logged_in_ms": self.logged_in_ms,
            "first_frame_ms": self.first_frame_ms,
            "updates": self.updates,
            "bytes": self.bytes,
            "rectangles": self.rectangles,
            "seconds": self.seconds,
            "mib_s": self.mib_s(),
            "updates_s": self.updates_s(),
            "cpu_seconds": {
                "client": self.cpu.client,
                "gateway": self.cpu.gateway,
                "x11vnc": self.cpu.x11vnc,
                "xvfb": self.cpu.xvfb,
                "xterm_and_text": self.cpu.scene,
            },
            "recorded_bytes": self.recorded_bytes,
            "gateway_cpu_after_session": self.gateway_after,
        })
    }
}

struct Report<'a> {
    settings: &'a Settings,
    binary: &'a Path,
    date: String,
    load_before: String,
    load_after: String,
    gateway_peak_rss_kib: Option<u64>,
    runs: &'a [Run],
}

impl Report<'_> {
    fn median_of(&self, mode: Mode, via: Via, f: impl Fn(&Run) -> f64) -> f64 {
        let samples: Vec<f64> = self
            .runs
            .iter()
            .filter(|r| r.mode == mode && r.via == via)
            .map(f)
            .collect();
        median(&samples).unwrap_or(f64::NAN)
    }

    fn render(&self) -> String {
        let s = self.settings;
        let mut out = format!(
            "VNC: gatehouse serve (VeNCrypt X509Plain) against the direct path to x11vnc (VNC auth); {}x{}, {} full updates per session, depth {}, {} reps per path, alternated\n{} | {} | load {} -> {}\n\n",
            s.width,
            s.height,
            s.updates,
            s.depth,
            s.reps,
            self.date,
            self.binary.display(),
            self.load_before,
            self.load_after
        );
        out.push_str("| encoding | direct MiB/s | gateway MiB/s | ratio | direct updates/s | gateway updates/s | KiB per update |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for &mode in &s.modes {
            let d = self.median_of(mode, Via::Direct, Run::mib_s);
            let g = self.median_of(mode, Via::Gateway, Run::mib_s);
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} | **{:.2}** | {:.1} | {:.1} | {:.0} |\n",
                mode.label(),
                d,
                g,
                g / d,
                self.median_of(mode, Via::Direct, Run::updates_s),
                self.median_of(mode, Via::Gateway, Run::updates_s),
                self.median_of(mode, Via::Direct, |r| r.bytes as f64
                    / r.updates as f64
                    / 1024.0),
            ));
        }
        out.push_str("\nCPU seconds per GiB of updates (median):\n\n| encoding | path | client | gateway | x11vnc | Xvfb | xterm+text |\n|---|---|---:|---:|---:|---:|---:|\n");
        for &mode in &s.modes {
            for via in [Via::Direct, Via::Gateway] {
                let m = |f: fn(&Cpu) -> f64| self.median_of(mode, via, |r| r.per_gib(f(&r.cpu)));
                out.push_str(&format!(
                    "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
                    mode.label(),
                    via.label(),
                    m(|c| c.client),
                    m(|c| c.gateway),
                    m(|c| c.x11vnc),
                    m(|c| c.xvfb),
                    m(|c| c.scene),
                ));
            }
        }
        out.push_str("\nSession setup (ms, median): connect to ServerInit, and to the first full update\n\n| encoding | direct: login | direct: first frame | gateway: login | gateway: first frame |\n|---|---:|---:|---:|---:|\n");
        for &mode in &s.modes {
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
                mode.label(),
                self.median_of(mode, Via::Direct, |r| r.logged_in_ms),
                self.median_of(mode, Via::Direct, |r| r.first_frame_ms),
                self.median_of(mode, Via::Gateway, |r| r.logged_in_ms),
                self.median_of(mode, Via::Gateway, |r| r.first_frame_ms),
            ));
        }
        let recorded: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| Some(r.recorded_bytes? as f64 / r.bytes as f64))
            .collect();
        out.push_str(&format!(
            "\ngateway CPU after each gateway session until idle (sealing the recording): median {:.2} s\ngateway peak RSS {} MiB; recording per byte relayed (median) {:.2}; first-frame p90 over all: direct {:.1} ms, gateway {:.1} ms\n",
            median(&self.runs.iter().filter(|r| r.via == Via::Gateway).map(|r| r.gateway_after).collect::<Vec<_>>()).unwrap_or(f64::NAN),
            self.gateway_peak_rss_kib.map_or(0, |k| k / 1024),
            median(&recorded).unwrap_or(f64::NAN),
            percentile(
                &self.runs.iter().filter(|r| r.via == Via::Direct).map(|r| r.first_frame_ms).collect::<Vec<_>>(),
                90.0
            )
            .unwrap_or(f64::NAN),
            percentile(
                &self.runs.iter().filter(|r| r.via == Via::Gateway).map(|r| r.first_frame_ms).collect::<Vec<_>>(),
                90.0
            )
            .unwrap_or(f64::NAN),
        ));
        out
    }

    fn json(&self) -> Value {
        json!({
            "bench": "vnc",
            "date": self.date,
            "binary": self.binary.display().to_string(),
            "commit": command_line("git", &["-C", &gatehouse_bench::workspace_root().display().to_string(), "rev-parse", "--short", "HEAD"]),
            "machine": {
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "kernel": command_line("uname", &["-r"]),
                "x11vnc": command_line("dpkg-query", &["-W", "-f", "${Version}", "x11vnc"]),
                "load_before": self.load_before,
                "load_after": self.load_after,
            },
            "settings": self.settings.json(),
            "gateway_peak_rss_kib": self.gateway_peak_rss_kib,
            "runs": self.runs.iter().map(Run::json).collect::<Vec<_>>(),
        })
    }
}
