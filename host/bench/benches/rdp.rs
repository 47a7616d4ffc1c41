//! The RDP relay of `gatehouse serve` against a plain TCP relay of the same session, in one run:
//! `cargo bench -p gatehouse-bench --bench rdp`. docs/BENCHMARKS.md ("RDP relay") describes the
//! method, the knobs and the figures.
//!
//! Builds `gatehouse` (release), starts a target: `freerdp-shadow-cli` with NLA sharing an `Xvfb`
//! display on which an `xterm` scrolls text at a fixed rate (the text comes from this binary,
//! see [`text`]). Sets up a gateway data directory with the CLI (a user with a password, the
//! asset with its RDP port and trust on first use, the target account with its vault password,
//! a grant) and starts `gatehouse serve`. Then two paths to the same target, alternated run by
//! run (and which goes first):
//!
//! - gateway: `xfreerdp` → `gatehouse serve` (NLA with the gateway password, recording on) →
//!   the target (NLA with the vault password);
//! - tcp: `xfreerdp` → a plain TCP relay (this binary again, [`relay`]: tokio
//!   `copy_bidirectional`, in a process of its own so that its CPU time is its own) → the
//!   target, logging in with the account's own password.
//!
//! Each held session runs for a fixed time; the bench reads the bytes relayed each way (the
//! gateway's `session_ended` audit event; the TCP relay's own counters), the bytes at the
//! client's socket (`ss`), and the CPU time of the relay, `xfreerdp`, the shadow server and the X
//! servers from `/proc`. Connection setup is timed with `xfreerdp +auth-only`, which in FreeRDP 2
//! runs the whole connection sequence without graphics.
//!
//! Writes `rdp.json` and `rdp.txt` to `<target>/gatehouse-bench/` and a copy named after the run's
//! time to `history/` there. Knobs are environment variables; see [`Settings`].

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#[path = "../../../tests/support/rdp_peers.rs"]
mod rdp_peers;

use anyhow::{Context, Result, bail};
use gatehouse_bench::{
    env_number, free_port, gatehouse_binary, median, percentile, process_cpu_seconds,
    rdp_pdus_bytes, results_dir, ss_socket_bytes, workspace_root,
};
use rdp_peers::{Client, Display, Process, ShadowTarget};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIB: f64 = 1024.0 * 1024.0;

/// Set by the bench on the processes it starts from its own binary: `relay` or `text`.
const ROLE: &str = "GATEHOUSE_BENCH_RDP_ROLE";

const GATEWAY_USER: &str = "alice";
const GATEWAY_PASSWORD: &str = "Bench-Gateway-Pass-1";
const TARGET_ACCOUNT: &str = "target1";
const VAULT_PASSWORD: &str = "Bench-Vault-Pass-1";
const ASSET: &str = "win1";

/// The programs the bench drives, with the Debian package of each.
const PROGRAMS: [(&str, &str); 6] = [
    ("Xvfb", "xvfb"),
    ("xfreerdp", "freerdp2-x11"),
    ("freerdp-shadow-cli", "freerdp2-shadow-x11"),
    ("winpr-hash", "winpr-utils"),
    ("xterm", "xterm"),
    ("ss", "iproute2"),
];

fn main() -> Result<()> {
    match std::env::var(ROLE).as_deref() {
        Ok("relay") => return relay::run(),
        Ok("text") => return text::run(),
        Ok(other) => bail!("{ROLE}={other}: not a role of this binary (relay, text)"),
        Err(_) => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and must not start a
    // minutes-long run.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "gatehouse-bench rdp: run it with `cargo bench -p gatehouse-bench --bench rdp`; skipping."
        );
        return Ok(());
    }
    let settings = Settings::from_env()?;
    check_programs()?;
    let binary = gatehouse_binary()?;
    println!("gateway binary: {}", binary.display());
    let results_dir = results_dir(&binary);
    let mut report = Report::new(&settings, &binary);

    let work = tempfile::Builder::new()
        .prefix("gatehouse-bench-rdp-")
        .tempdir()
        .context("creating the work directory")?;
    let bench = Bench::start(&settings, &binary, work.path())?;
    report.gateway_rss_start_kib = bench.gateway.rss_kib();

    println!("checking both paths (+auth-only, then a 3 s session each)");
    for route in bench.routes() {
        bench
            .auth_only(route)
            .with_context(|| format!("the {} path does not work", route.via.label()))?;
    }
    for route in bench.routes() {
        let run = bench
            .held_session(route, Duration::from_secs(1), Duration::from_secs(2))
            .with_context(|| format!("the {} path does not work", route.via.label()))?;
        if run.bytes_down == 0 || run.window_down == 0 {
            bail!(
                "the {} path relayed no bytes from the target in 3 s",
                route.via.label()
            );
        }
    }

    let held = measure_held(&settings, &bench)?;
    let setup = measure_setup(&settings, &bench)?;
    report.gateway_rss_kib = bench.gateway.rss_kib();
    report.recordings_bytes = dir_size(&bench.gateway.data.join("recordings"));
    report.load_after = load_average();

    let text = report.render(&held, &setup);
    println!("\n{text}");
    let json_text = serde_json::to_string_pretty(&report.json(&held, &setup))?;
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;
    let json_path = results_dir.join("rdp.json");
    std::fs::write(&json_path, &json_text)?;
    std::fs::write(results_dir.join("rdp.txt"), &text)?;
    // The latest run under a fixed name, and every run under its time, so that a quick run
    // does not overwrite the figures of a full one.
    let history = results_dir.join("history");
    std::fs::create_dir_all(&history)?;
    let dated = format!("rdp-{}", report.date.replace(':', ""));
    std::fs::write(history.join(format!("{dated}.json")), &json_text)?;
    std::fs::write(history.join(format!("{dated}.txt")), &text)?;
    println!(
        "results: {} (and {})",
        json_path.display(),
        history.join(format!("{dated}.json")).display()
    );
    drop(bench);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Settings

/// From the environment, all optional: `GATEHOUSE_BENCH_RDP_SECONDS` (15: how long each session
/// is measured), `GATEHOUSE_BENCH_RDP_WARMUP_SECONDS` (3: how long it runs before that, so that
/// the login is not in the window), `GATEHOUSE_BENCH_RDP_REPS` (5 sessions per path), `GATEHOUSE_BENCH_RDP_SIZE`
/// (`1024x768`: the target's screen and the client's `/size`), `GATEHOUSE_BENCH_RDP_SETUP_RUNS`
/// (20 per path and kind), `GATEHOUSE_BENCH_RDP_LINES_PER_S` (60: the text scrolled on the
/// target's screen), `GATEHOUSE_BENCH_RDP_CLIENT_ARGS` (more `xfreerdp` arguments, separated by
/// spaces, given on both paths), `GATEHOUSE_BENCH_RDP_DECODABLE` (unset: the gateway's default;
/// `0` or `1`: settings.json `rdp.decodable_recordings`, whether the gateway steers the
/// client's capabilities so that recordings decode); `GATEHOUSE_BIN` skips the build.
struct Settings {
    seconds: Duration,
    warmup: Duration,
    reps: usize,
    width: u32,
    height: u32,
    setup_runs: usize,
    lines_per_s: u64,
    client_args: Vec<String>,
    /// settings.json `rdp.decodable_recordings` for the gateway: `None` leaves the default.
    decodable: Option<bool>,
    cpus: usize,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let size = std::env::var("GATEHOUSE_BENCH_RDP_SIZE").unwrap_or_else(|_| "1024x768".into());
        let (width, height) = size
            .trim()
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .filter(|&(w, h)| (320..=4096).contains(&w) && (200..=2160).contains(&h))
            .with_context(|| {
                format!("GATEHOUSE_BENCH_RDP_SIZE={size}: expected WIDTHxHEIGHT, e.g. 1024x768")
            })?;
        Ok(Settings {
            seconds: Duration::from_secs(env_number("GATEHOUSE_BENCH_RDP_SECONDS", 15)?.max(1)),
            warmup: Duration::from_secs(env_number("GATEHOUSE_BENCH_RDP_WARMUP_SECONDS", 3)?),
            reps: env_number("GATEHOUSE_BENCH_RDP_REPS", 5)?.max(1) as usize,
            width,
            height,
            setup_runs: env_number("GATEHOUSE_BENCH_RDP_SETUP_RUNS", 20)?.max(1) as usize,
            lines_per_s: env_number("GATEHOUSE_BENCH_RDP_LINES_PER_S", 60)?.max(1),
            decodable: match std::env::var("GATEHOUSE_BENCH_RDP_DECODABLE") {
                Ok(v) => Some(v.trim() != "0"),
                Err(_) => None,
            },
            client_args: std::env::var("GATEHOUSE_BENCH_RDP_CLIENT_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect(),
            cpus: std::thread::available_parallelism()?.get(),
        })
    }

    /// The `xfreerdp` arguments of every connection on both paths, after the address, the user,
    /// the password and `/cert:ignore`.
    fn client_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["/sec:nla", "-clipboard", "/audio-mode:2", "/log-level:WARN"]
            .into_iter()
            .map(String::from)
            .collect();
        args.push(format!("/size:{}x{}", self.width, self.height));
        args.extend(self.client_args.iter().cloned());
        args
    }
}

fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Fails naming every missing program and its Debian package (rdp_peers would panic on the
/// first one).
fn check_programs() -> Result<()> {
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(program, package)| format!("`{program}` (Debian package `{package}`)"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "not installed: {}; scripts/install-test-deps.sh installs them",
            missing.join(", ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The processes

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Tcp,
    Gateway,
    /// No relay: `xfreerdp` straight to the target, for reference in the setup times only.
    Direct,
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::Tcp => "tcp",
            Via::Gateway => "gateway",
            Via::Direct => "direct",
        }
    }
}

/// Where `xfreerdp` connects and as whom.
struct Route {
    via: Via,
    port: u16,
    user: String,
    password: String,
}

/// The target's screen: an xterm scrolling text, shared by `freerdp-shadow-cli`. Dropped in
/// field order: the xterm before the shadow server and its display.
struct Scene {
    xterm: Process,
    shadow: ShadowTarget,
    /// While this file exists, the text stops (the screen is still).
    pause: PathBuf,
}

impl Scene {
    fn start(settings: &Settings, work: &Path) -> Result<Scene> {
        let display = Display::start_sized(work, settings.width, settings.height);
        let pause = work.join("pause-text");
        // The default xterm font, `fixed`, is 6x13 pixels: one more column and row than fit,
        // so that the text covers the screen.
        let columns = settings.width / 6 + 1;
        let rows = settings.height / 13 + 1;
        let log = work.join("xterm.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new("xterm")
            .env("DISPLAY", display.env())
            .env(ROLE, "text")
            .env(text::PAUSE, &pause)
            .env(text::RATE, settings.lines_per_s.to_string())
            .env(text::WIDTH, (columns - 1).to_string())
            .env(text::OWNER, std::process::id().to_string())
            .args(["-geometry", &format!("{columns}x{rows}+0+0"), "-e"])
            .arg(std::env::current_exe().context("the bench's own path")?)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting xterm")?;
        let mut xterm = Process {
            child,
            name: "xterm",
            log,
        };
        std::thread::sleep(Duration::from_millis(500));
        if let Some(status) = xterm.child.try_wait()? {
            bail!("xterm exited ({status}):\n{}", xterm.log_text());
        }
        let shadow = ShadowTarget::start_on(work, display, TARGET_ACCOUNT, VAULT_PASSWORD);
        println!(
            "target: freerdp-shadow-cli on 127.0.0.1:{} sharing Xvfb :{} ({}x{}), xterm scrolling \
             {} lines/s",
            shadow.port,
            shadow.display.number,
            settings.width,
            settings.height,
            settings.lines_per_s
        );
        Ok(Scene {
            xterm,
            shadow,
            pause,
        })
    }

    fn freeze(&self) -> Result<()> {
        std::fs::write(&self.pause, b"")
            .with_context(|| format!("creating {}", self.pause.display()))
    }

    fn resume(&self) -> Result<()> {
        std::fs::remove_file(&self.pause)
            .with_context(|| format!("removing {}", self.pause.display()))
    }
}

/// `gatehouse serve` with its own data directory; stopped (SIGTERM, then SIGKILL) when dropped.
struct Gateway {
    binary: PathBuf,
    data: PathBuf,
    child: Child,
    rdp_port: u16,
    log: PathBuf,
}

impl Gateway {
    fn cli_in(binary: &Path, data: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut child = Command::new(binary)
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env_remove("GATEHOUSE_DATA_DIR")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running gatehouse {}", args.join(" ")))?;
        if let Some(text) = stdin
            && let Some(mut input) = child.stdin.take()
        {
            input.write_all(text.as_bytes())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "gatehouse {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        Gateway::cli_in(&self.binary, &self.data, args, None)
    }

    /// The data directory as the RDP end-to-end test sets it up: `alice` with a password (so
    /// with an RDP secret), the asset `win1` whose RDP endpoint is the target (key trusted on
    /// first use), `target1@win1` with the vault password, granted to alice.
    fn configure(
        binary: &Path,
        data: &Path,
        target_port: u16,
        decodable: Option<bool>,
    ) -> Result<()> {
        let account = format!("{TARGET_ACCOUNT}@{ASSET}");
        let port = target_port.to_string();
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
                    "--rdp-port",
                    &port,
                ],
                None,
            ),
            (
                &["account", "add", &account, "--password-stdin"],
                Some(VAULT_PASSWORD),
            ),
            (&["grant", "add", "--user", GATEWAY_USER, &account], None),
        ];
        for (args, stdin) in steps {
            Gateway::cli_in(binary, data, args, stdin)?;
        }
        if let Some(decodable) = decodable {
            let path = data.join("settings.json");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut settings: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let Some(object) = settings.as_object_mut() else {
                bail!("{} is not a JSON object", path.display());
            };
            let rdp = object.entry("rdp").or_insert_with(|| json!({}));
            let Some(rdp) = rdp.as_object_mut() else {
                bail!("`rdp` in {} is not a JSON object", path.display());
            };
            rdp.insert("decodable_recordings".into(), Value::Bool(decodable));
            std::fs::write(&path, serde_json::to_vec_pretty(&settings)?)?;
        }
        Ok(())
    }

    /// `gatehouse serve` on free ports for SSH, the API and RDP (as the tests' `serve()`), at
    /// the default log level of a server (`info`).
    fn start(
        binary: &Path,
        work: &Path,
        target_port: u16,
        decodable: Option<bool>,
    ) -> Result<Gateway> {
        let data = work.join("data");
        Gateway::configure(binary, &data, target_port, decodable)?;
        let log = work.join("serve.log");
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let ports = [free_port()?, free_port()?, free_port()?];
            let out = std::fs::File::create(&log)?;
            let child = Command::new(binary)
                .arg("--data-dir")
                .arg(&data)
                .arg("serve")
                .arg("--ssh-listen")
                .arg(format!("127.0.0.1:{}", ports[0]))
                .arg("--api-listen")
                .arg(format!("127.0.0.1:{}", ports[1]))
                .arg("--rdp-listen")
                .arg(format!("127.0.0.1:{}", ports[2]))
                .env_remove("GATEHOUSE_DATA_DIR")
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .context("starting gatehouse serve")?;
            let mut gateway = Gateway {
                binary: binary.to_path_buf(),
                data: data.clone(),
                child,
                rdp_port: ports[2],
                log: log.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if ports.iter().all(|&p| port_open(p)) {
                    println!(
                        "gateway: gatehouse serve, RDP on 127.0.0.1:{}, data {}",
                        gateway.rdp_port,
                        data.display()
                    );
                    return Ok(gateway);
                }
                if let Some(status) = gateway.child.try_wait()? {
                    last_error = format!("exited ({status})");
                    break;
                }
                if Instant::now() > deadline {
                    last_error = "did not open its ports within 30 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(gateway);
        }
        bail!(
            "gatehouse serve {last_error}:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn audit(&self) -> Result<Vec<Value>> {
        let text = self.cli(&["audit", "list", "--json", "--limit", "1000000"])?;
        match serde_json::from_str(&text).context("audit list --json")? {
            Value::Array(items) => Ok(items),
            other => bail!("audit list --json is not an array: {other}"),
        }
    }

    fn sessions_ended(&self) -> Result<Vec<Value>> {
        Ok(self
            .audit()?
            .into_iter()
            .filter(|e| e["kind"] == "session_ended")
            .collect())
    }

    /// The `session_ended` event after the first `seen` ones, waited for (bounded).
    fn next_session_ended(&self, seen: usize) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(event) = self.sessions_ended()?.into_iter().nth(seen) {
                return Ok(event);
            }
            if Instant::now() > deadline {
                bail!(
                    "no session_ended audit event within 30 s; serve.log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Peak resident memory so far.
    fn rss_kib(&self) -> Option<u64> {
        gatehouse_bench::rss_kib(self.pid(), "VmHWM:")
    }
}

/// Waits until process `pid` has used no CPU for two 250 ms intervals in a row (at most 120 s)
/// and returns the CPU seconds it used meanwhile: after an RDP session the gateway replays the
/// recording to check that its graphics decode, and that must not run into the next session.
fn wait_idle(pid: u32) -> f64 {
    let start = process_cpu_seconds(pid).unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = start;
    let mut quiet = 0;
    while quiet < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = process_cpu_seconds(pid).unwrap_or(last);
        quiet = if now - last < 0.005 { quiet + 1 } else { 0 };
        last = now;
    }
    last - start
}

impl Drop for Gateway {
    fn drop(&mut self) {
        gatehouse_bench::stop_child(&mut self.child);
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(250),
    )
    .is_ok()
}

/// The plain TCP relay: this binary with `GATEHOUSE_BENCH_RDP_ROLE=relay`, in a process of its
/// own. It prints one JSON line per finished connection; it exits when its stdin closes.
struct TcpRelay {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
    _stdin: ChildStdin,
}

impl TcpRelay {
    fn start(work: &Path, target_port: u16) -> Result<TcpRelay> {
        let log = std::fs::File::create(work.join("relay.log"))?;
        let mut child = Command::new(std::env::current_exe().context("the bench's own path")?)
            .env(ROLE, "relay")
            .env(relay::TARGET, target_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting the TCP relay")?;
        let stdin = child.stdin.take().context("the relay's stdin")?;
        let stdout = child.stdout.take().context("the relay's stdout")?;
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut relay = TcpRelay {
            child,
            port: 0,
            lines,
            _stdin: stdin,
        };
        let first = relay.lines.recv_timeout(Duration::from_secs(10)).ok();
        let port = first
            .as_deref()
            .and_then(|l| l.strip_prefix("listening 127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok());
        match port {
            Some(port) => relay.port = port,
            None => bail!(
                "the TCP relay did not start ({first:?}); see {}",
                work.join("relay.log").display()
            ),
        }
        println!(
            "tcp relay: 127.0.0.1:{} → 127.0.0.1:{target_port} (pid {})",
            relay.port,
            relay.child.id()
        );
        Ok(relay)
    }

    /// Forgets the connections reported so far (the `+auth-only` ones).
    fn drain(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// The counters of the next connection to end, waited for (bounded).
    fn next_connection(&self) -> Result<Value> {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .context("the TCP relay reported no finished connection within 30 s")?;
        serde_json::from_str(&line).with_context(|| format!("the TCP relay printed `{line}`"))
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `xfreerdp` process, killed (SIGKILL) when dropped.
struct ClientProcess {
    child: Child,
    log: PathBuf,
}

impl ClientProcess {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything running for the measurements.
struct Bench {
    work: PathBuf,
    // Dropped in this order: the relays first, then the target, then the client's display.
    relay: TcpRelay,
    gateway: Gateway,
    scene: Scene,
    client: Client,
    client_display: Display,
    routes: [Route; 2],
    direct: Route,
    client_args: Vec<String>,
}

/// CPU seconds per process role.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    /// `gatehouse serve`, or the TCP relay.
    relay: f64,
    /// `xfreerdp`.
    client: f64,
    /// The Xvfb `xfreerdp` draws on.
    client_x: f64,
    /// `freerdp-shadow-cli`.
    target: f64,
    /// The target's Xvfb.
    target_x: f64,
    /// The xterm and the text it scrolls.
    scene: f64,
}

impl Cpu {
    fn json(self) -> Value {
        json!({
            "relay": self.relay,
            "xfreerdp": self.client,
            "client_xvfb": self.client_x,
            "shadow": self.target,
            "target_xvfb": self.target_x,
            "xterm_and_text": self.scene,
        })
    }
}

/// On-CPU nanoseconds of every thread of a process and of the processes below it, by thread id,
/// from `/proc/PID/task/TID/schedstat`: not rounded to clock ticks like `/proc/PID/stat`, which
/// matters for a TCP relay that uses a few tens of milliseconds in a run.
#[derive(Default)]
struct Threads(HashMap<u32, u64>);

impl Threads {
    fn of(root: u32) -> Threads {
        let mut threads = HashMap::new();
        let mut queue = vec![root];
        while let Some(pid) = queue.pop() {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let runtime = std::fs::read_to_string(task.path().join("schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse().ok());
                if let Some(ns) = runtime {
                    threads.insert(tid, ns);
                }
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                queue.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        Threads(threads)
    }

    /// CPU seconds used since `before` by the threads alive now (a thread that ended in between
    /// takes its share with it: the processes measured keep their threads for a session).
    fn since(&self, before: &Threads) -> f64 {
        let ns: u64 = self
            .0
            .iter()
            .map(|(tid, &now)| now.saturating_sub(before.0.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

/// [`Threads`] of every role at one moment.
struct Snapshot {
    relay: Threads,
    client: Threads,
    client_x: Threads,
    target: Threads,
    target_x: Threads,
    scene: Threads,
}

impl Snapshot {
    fn since(&self, before: &Snapshot) -> Cpu {
        Cpu {
            relay: self.relay.since(&before.relay),
            client: self.client.since(&before.client),
            client_x: self.client_x.since(&before.client_x),
            target: self.target.since(&before.target),
            target_x: self.target_x.since(&before.target_x),
            scene: self.scene.since(&before.scene),
        }
    }
}

/// `(sent, received)` bytes of the established TCP connection to 127.0.0.1:`port` (the
/// client's socket), from `ss -tin`.
fn client_socket_bytes(port: u16) -> Result<(u64, u64)> {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established", "(", "dport", "="])
        .arg(format!(":{port}"))
        .arg(")")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running ss")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ss_socket_bytes(&text).with_context(|| {
        format!("no byte counts for the connection to port {port} in `ss -tin`: {text}")
    })
}

/// One held session.
struct HeldRun {
    via: Via,
    /// The measured window: from `warmup` after starting `xfreerdp` until the text stopped.
    seconds: f64,
    /// From stopping the text until the client's socket was quiet (CPU and bytes of this tail
    /// count in the per-MiB figures, not in the throughput).
    drain: f64,
    /// Bytes received and sent by the client's socket in the window (TLS included).
    window_down: u64,
    window_up: u64,
    /// The same, window and tail.
    measured_down: u64,
    measured_up: u64,
    /// CPU per role over window and tail.
    cpu: Cpu,
    /// The whole session, connection to close: seconds, bytes relayed each way by the relay's
    /// own count, where that count comes from, and the relay's CPU seconds (`/proc/PID/stat`).
    session_seconds: f64,
    bytes_up: u64,
    bytes_down: u64,
    bytes_source: &'static str,
    session_relay_cpu: f64,
    /// Bytes received by the client's socket over the whole session (TLS included).
    socket_received: u64,
    /// Gateway path: the PDUs the session relayed (up and down), and its `error`, if any.
    pdus: Option<u64>,
    error: Option<String>,
    /// The relay's resident memory after the session.
    relay_rss_kib: Option<u64>,
    /// The relay's CPU seconds after the session until it was idle (the gateway's check that
    /// the recording decodes).
    after_cpu: f64,
}

impl HeldRun {
    fn down_mib_s(&self) -> f64 {
        self.window_down as f64 / MIB / self.seconds
    }

    fn up_kib_s(&self) -> f64 {
        self.window_up as f64 / 1024.0 / self.seconds
    }

    /// MiB through the relay (both ways) in window and tail, by the client socket's count.
    fn measured_mib(&self) -> f64 {
        (self.measured_down + self.measured_up) as f64 / MIB
    }

    fn per_mib(&self, cpu: f64) -> f64 {
        cpu / self.measured_mib()
    }

    fn session_mib(&self) -> f64 {
        (self.bytes_up + self.bytes_down) as f64 / MIB
    }

    fn json(&self) -> Value {
        json!({
            "path": self.via.label(),
            "window_seconds": self.seconds,
            "drain_seconds": self.drain,
            "window_client_socket_bytes_received": self.window_down,
            "window_client_socket_bytes_sent": self.window_up,
            "measured_client_socket_bytes_received": self.measured_down,
            "measured_client_socket_bytes_sent": self.measured_up,
            "measured_cpu_seconds": self.cpu.json(),
            "down_mib_per_s": self.down_mib_s(),
            "relay_cpu_seconds_per_mib": self.per_mib(self.cpu.relay),
            "session_seconds": self.session_seconds,
            "session_bytes_up": self.bytes_up,
            "session_bytes_down": self.bytes_down,
            "session_bytes_source": self.bytes_source,
            "session_client_socket_bytes_received": self.socket_received,
            "session_relay_cpu_seconds": self.session_relay_cpu,
            "session_pdus": self.pdus,
            "session_error": self.error,
            "relay_rss_kib_after": self.relay_rss_kib,
            "relay_cpu_seconds_after_session": self.after_cpu,
        })
    }
}

impl Bench {
    fn start(settings: &Settings, binary: &Path, work: &Path) -> Result<Bench> {
        let scene = Scene::start(settings, work)?;
        let gateway = Gateway::start(binary, work, scene.shadow.port, settings.decodable)?;
        let relay = TcpRelay::start(work, scene.shadow.port)?;
        let client_display = Display::start_sized(work, settings.width, settings.height);
        let client = Client::on_display(work, &client_display);
        let routes = [
            Route {
                via: Via::Tcp,
                port: relay.port,
                user: TARGET_ACCOUNT.into(),
                password: VAULT_PASSWORD.into(),
            },
            Route {
                via: Via::Gateway,
                port: gateway.rdp_port,
                user: format!("{GATEWAY_USER}@{TARGET_ACCOUNT}@{ASSET}"),
                password: GATEWAY_PASSWORD.into(),
            },
        ];
        let direct = Route {
            via: Via::Direct,
            port: scene.shadow.port,
            user: TARGET_ACCOUNT.into(),
            password: VAULT_PASSWORD.into(),
        };
        Ok(Bench {
            work: work.to_path_buf(),
            relay,
            gateway,
            scene,
            client,
            client_display,
            routes,
            direct,
            client_args: settings.client_args(),
        })
    }

    fn routes(&self) -> &[Route; 2] {
        &self.routes
    }

    /// The two routes in the order of run `i`: TCP first on even runs, the gateway on odd ones.
    fn in_order(&self, i: usize) -> [&Route; 2] {
        if i.is_multiple_of(2) {
            [&self.routes[0], &self.routes[1]]
        } else {
            [&self.routes[1], &self.routes[0]]
        }
    }

    fn relay_pid(&self, via: Via) -> Option<u32> {
        match via {
            Via::Tcp => Some(self.relay.child.id()),
            Via::Gateway => Some(self.gateway.pid()),
            Via::Direct => None,
        }
    }

    fn spawn_client(&self, route: &Route, extra: &[&str]) -> Result<ClientProcess> {
        let mut args: Vec<&str> = self.client_args.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let mut command = self
            .client
            .command(route.port, &route.user, &route.password, &args);
        let log = self
            .work
            .join(format!("xfreerdp-{}.log", route.via.label()));
        let out = std::fs::File::create(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = command.spawn().context("starting xfreerdp")?;
        Ok(ClientProcess { child, log })
    }

    fn snapshot(&self, via: Via, client: &ClientProcess) -> Snapshot {
        Snapshot {
            relay: self.relay_pid(via).map(Threads::of).unwrap_or_default(),
            client: Threads::of(client.child.id()),
            client_x: Threads::of(self.client_display.pid()),
            target: Threads::of(self.scene.shadow.process.child.id()),
            target_x: Threads::of(self.scene.shadow.display.pid()),
            scene: Threads::of(self.scene.xterm.child.id()),
        }
    }

    /// `xfreerdp +auth-only` to the end; its wall time in seconds. FreeRDP 2 goes through the
    /// whole connection sequence before it exits (NLA, MCS, licensing, capabilities, the
    /// finalization PDUs), just without graphics.
    fn auth_only(&self, route: &Route) -> Result<f64> {
        let started = Instant::now();
        let mut client = self.spawn_client(route, &["+auth-only"])?;
        let deadline = started + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = client.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("xfreerdp +auth-only hung for 60 s:\n{}", client.log_tail());
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let seconds = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!(
                "xfreerdp +auth-only failed ({status}):\n{}{}",
                client.log_tail(),
                if route.via == Via::Gateway {
                    format!("\n--- serve.log ---\n{}", self.gateway.log_tail())
                } else {
                    String::new()
                }
            );
        }
        Ok(seconds)
    }

    /// Fails if the client has exited.
    fn check_alive(client: &mut ClientProcess, route: &Route, started: Instant) -> Result<()> {
        if let Some(status) = client.child.try_wait()? {
            bail!(
                "xfreerdp ended after {:.1} s ({status}) on the {} path:\n{}",
                started.elapsed().as_secs_f64(),
                route.via.label(),
                client.log_tail()
            );
        }
        Ok(())
    }

    /// One session: connect, let it run for `warmup`, measure for `hold`, then stop the text,
    /// wait until the client's socket is quiet, take the CPU and byte counts, and kill the
    /// client (with nothing left unread it closes with a FIN, so the gateway's relay ends
    /// cleanly and reports its counts).
    fn held_session(&self, route: &Route, warmup: Duration, hold: Duration) -> Result<HeldRun> {
        if route.via == Via::Tcp {
            self.relay.drain();
        }
        let ended_before = match route.via {
            Via::Gateway => self.gateway.sessions_ended()?.len(),
            Via::Tcp | Via::Direct => 0,
        };
        let Some(relay_pid) = self.relay_pid(route.via) else {
            bail!("held sessions are measured through a relay");
        };
        let relay_before = process_cpu_seconds(relay_pid).unwrap_or(0.0);
        let started = Instant::now();
        let mut client = self.spawn_client(route, &[])?;
        while started.elapsed() < warmup {
            Bench::check_alive(&mut client, route, started)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        let socket_a = client_socket_bytes(route.port)?;
        let cpu_a = self.snapshot(route.via, &client);
        let window_started = Instant::now();
        while window_started.elapsed() < hold {
            Bench::check_alive(&mut client, route, started)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        let socket_f = client_socket_bytes(route.port)?;
        let seconds = window_started.elapsed().as_secs_f64();
        self.scene.freeze()?;
        let drain_started = Instant::now();
        let socket_b = Bench::wait_quiet(route.port, socket_f)?;
        let drain = drain_started.elapsed().as_secs_f64();
        let cpu = self.snapshot(route.via, &client).since(&cpu_a);
        let session_relay_cpu = process_cpu_seconds(relay_pid).unwrap_or(0.0) - relay_before;
        let session_seconds = started.elapsed().as_secs_f64();
        drop(client);
        self.scene.resume()?;

        let mut run = HeldRun {
            via: route.via,
            seconds,
            drain,
            window_down: socket_f.1 - socket_a.1,
            window_up: socket_f.0 - socket_a.0,
            measured_down: socket_b.1 - socket_a.1,
            measured_up: socket_b.0 - socket_a.0,
            cpu,
            session_seconds,
            bytes_up: 0,
            bytes_down: 0,
            bytes_source: "",
            session_relay_cpu,
            socket_received: socket_b.1,
            pdus: None,
            error: None,
            relay_rss_kib: None,
            after_cpu: 0.0,
        };
        run.relay_rss_kib = gatehouse_bench::rss_kib(relay_pid, "VmRSS:");
        match route.via {
            Via::Tcp | Via::Direct => {
                let connection = self.relay.next_connection()?;
                run.bytes_up = connection["up"].as_u64().unwrap_or(0);
                run.bytes_down = connection["down"].as_u64().unwrap_or(0);
                run.bytes_source = "tcp relay counters";
                run.error = connection["error"].as_str().map(String::from);
            }
            Via::Gateway => self.gateway_counts(ended_before, &mut run)?,
        }
        run.after_cpu = wait_idle(relay_pid);
        Ok(run)
    }

    /// The gateway session's byte counts: from its `session_ended` audit event, or, when the
    /// relay ended with an error and the event carries no counts (gateways before the relay
    /// kept its summary on errors), from the recording, which holds every relayed byte.
    fn gateway_counts(&self, ended_before: usize, run: &mut HeldRun) -> Result<()> {
        let ended = self.gateway.next_session_ended(ended_before)?;
        let fields = &ended["fields"];
        run.error = fields["error"].as_str().map(String::from);
        run.pdus = Some(
            fields["pdus_up"].as_u64().unwrap_or(0) + fields["pdus_down"].as_u64().unwrap_or(0),
        )
        .filter(|&n| n > 0);
        let counts = (fields["bytes_up"].as_u64(), fields["bytes_down"].as_u64());
        if let (Some(up), Some(down)) = counts
            && (run.error.is_none() || down > 0)
        {
            (run.bytes_up, run.bytes_down) = (up, down);
            run.bytes_source = if run.error.is_none() {
                "session_ended audit event"
            } else {
                "session_ended audit event (the relay ended with an error)"
            };
            return Ok(());
        }
        let id = ended["session"].as_str().unwrap_or_default();
        let path = self
            .gateway
            .data
            .join("recordings")
            .join(id)
            .join("rdp.pdus");
        let counts = std::fs::read(&path).ok().and_then(|b| rdp_pdus_bytes(&b));
        let Some((up, down)) = counts else {
            bail!(
                "the gateway session ended with {:?} and {} cannot be read as an RDP recording: \
                 {ended}",
                run.error,
                path.display()
            );
        };
        (run.bytes_up, run.bytes_down) = (up, down);
        run.bytes_source = "recording (the relay ended with an error)";
        Ok(())
    }

    /// Waits until the client's socket has received nothing for 300 ms (at most 5 s); returns
    /// its byte counts then.
    fn wait_quiet(port: u16, mut last: (u64, u64)) -> Result<(u64, u64)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut unchanged = 0;
        while unchanged < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = client_socket_bytes(port)?;
            if now.1 == last.1 {
                unchanged += 1;
            } else {
                unchanged = 0;
            }
            last = now;
        }
        Ok(last)
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

struct Held {
    runs: Vec<HeldRun>,
}

fn measure_held(settings: &Settings, bench: &Bench) -> Result<Held> {
    let mut runs = Vec::new();
    for i in 0..settings.reps {
        for route in bench.in_order(i) {
            // A moment for the previous session's processes to settle.
            std::thread::sleep(Duration::from_secs(1));
            let run = bench
                .held_session(route, settings.warmup, settings.seconds)
                .with_context(|| {
                    format!("held session {} on the {} path", i + 1, route.via.label())
                })?;
            println!(
                "  held {}/{} {:<7}: {:6.3} MiB/s down, {:5.1} KiB/s up; CPU s/MiB: relay \
                 {:.4}, xfreerdp {:.3}, shadow {:.3}{}",
                i + 1,
                settings.reps,
                route.via.label(),
                run.down_mib_s(),
                run.up_kib_s(),
                run.per_mib(run.cpu.relay),
                run.per_mib(run.cpu.client),
                run.per_mib(run.cpu.target),
                run.error
                    .as_deref()
                    .map(|e| format!(" [ended with: {e}]"))
                    .unwrap_or_default()
            );
            runs.push(run);
        }
    }
    Ok(Held { runs })
}

struct Setup {
    /// `+auth-only` wall times per path, seconds.
    tcp: Vec<f64>,
    gateway: Vec<f64>,
    direct: Vec<f64>,
    /// The relay's CPU seconds per connection (over all runs, divided by their number).
    tcp_cpu: f64,
    gateway_cpu: f64,
}

fn measure_setup(settings: &Settings, bench: &Bench) -> Result<Setup> {
    let mut setup = Setup {
        tcp: Vec::new(),
        gateway: Vec::new(),
        direct: Vec::new(),
        tcp_cpu: 0.0,
        gateway_cpu: 0.0,
    };
    let cpu = |via| {
        bench
            .relay_pid(via)
            .and_then(process_cpu_seconds)
            .unwrap_or(0.0)
    };
    let (tcp_before, gateway_before) = (cpu(Via::Tcp), cpu(Via::Gateway));
    let routes = [&bench.routes[0], &bench.routes[1], &bench.direct];
    for i in 0..settings.setup_runs {
        // Each route goes first in turn.
        for k in 0..routes.len() {
            let route = routes[(i + k) % routes.len()];
            let seconds = bench
                .auth_only(route)
                .with_context(|| format!("+auth-only on the {} path", route.via.label()))?;
            match route.via {
                Via::Tcp => setup.tcp.push(seconds),
                Via::Gateway => setup.gateway.push(seconds),
                Via::Direct => setup.direct.push(seconds),
            }
            // Let the relay finish with the connection (the gateway writes the session's end).
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    for via in [Via::Tcp, Via::Gateway] {
        if let Some(pid) = bench.relay_pid(via) {
            wait_idle(pid);
        }
    }
    let runs = settings.setup_runs as f64;
    setup.tcp_cpu = (cpu(Via::Tcp) - tcp_before) / runs;
    setup.gateway_cpu = (cpu(Via::Gateway) - gateway_before) / runs;
    bench.relay.drain();
    println!("  +auth-only: {} runs per path done", settings.setup_runs);
    Ok(setup)
}

// ---------------------------------------------------------------------------------------------
// Reporting

/// Medians over the held sessions of one path.
struct PathSummary {
    runs: usize,
    down_mib_s: f64,
    up_kib_s: f64,
    relay_cpu_per_mib: f64,
    relay_cpu_share: f64,
    client_cpu_per_mib: f64,
    target_cpu_per_mib: f64,
    client_x_cpu_per_mib: f64,
    target_x_cpu_per_mib: f64,
    scene_cpu_share: f64,
    session_mib: f64,
    session_relay_cpu: f64,
    session_relay_cpu_per_mib: f64,
    /// After the session until idle (the gateway's graphics check of the recording).
    after_cpu: f64,
    /// The relay's own count of bytes down over the client socket's (TLS included).
    relay_count_over_socket: f64,
    /// Gateway only: PDUs relayed per session, and the relay's CPU per PDU (microseconds).
    session_pdus: Option<f64>,
    session_relay_cpu_per_pdu_us: Option<f64>,
}

impl PathSummary {
    fn of(runs: &[&HeldRun]) -> PathSummary {
        let m = |f: &dyn Fn(&HeldRun) -> f64| {
            median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        PathSummary {
            runs: runs.len(),
            down_mib_s: m(&|r| r.down_mib_s()),
            up_kib_s: m(&|r| r.up_kib_s()),
            relay_cpu_per_mib: m(&|r| r.per_mib(r.cpu.relay)),
            relay_cpu_share: m(&|r| r.cpu.relay / (r.seconds + r.drain)),
            client_cpu_per_mib: m(&|r| r.per_mib(r.cpu.client)),
            target_cpu_per_mib: m(&|r| r.per_mib(r.cpu.target)),
            client_x_cpu_per_mib: m(&|r| r.per_mib(r.cpu.client_x)),
            target_x_cpu_per_mib: m(&|r| r.per_mib(r.cpu.target_x)),
            scene_cpu_share: m(&|r| r.cpu.scene / (r.seconds + r.drain)),
            session_mib: m(&|r| r.session_mib()),
            session_relay_cpu: m(&|r| r.session_relay_cpu),
            session_relay_cpu_per_mib: m(&|r| r.session_relay_cpu / r.session_mib()),
            after_cpu: m(&|r| r.after_cpu),
            relay_count_over_socket: m(&|r| r.bytes_down as f64 / r.socket_received as f64),
            session_pdus: median(
                &runs
                    .iter()
                    .filter_map(|r| Some(r.pdus? as f64))
                    .collect::<Vec<_>>(),
            ),
            session_relay_cpu_per_pdu_us: median(
                &runs
                    .iter()
                    .filter_map(|r| Some(r.session_relay_cpu * 1e6 / r.pdus? as f64))
                    .collect::<Vec<_>>(),
            ),
        }
    }

    fn json(&self) -> Value {
        json!({
            "runs": self.runs,
            "down_mib_per_s": self.down_mib_s,
            "up_kib_per_s": self.up_kib_s,
            "relay_cpu_seconds_per_mib": self.relay_cpu_per_mib,
            "relay_cpu_share_of_one_cpu": self.relay_cpu_share,
            "xfreerdp_cpu_seconds_per_mib": self.client_cpu_per_mib,
            "shadow_cpu_seconds_per_mib": self.target_cpu_per_mib,
            "client_xvfb_cpu_seconds_per_mib": self.client_x_cpu_per_mib,
            "target_xvfb_cpu_seconds_per_mib": self.target_x_cpu_per_mib,
            "xterm_and_text_cpu_share_of_one_cpu": self.scene_cpu_share,
            "session_relayed_mib": self.session_mib,
            "session_relay_cpu_seconds": self.session_relay_cpu,
            "session_relay_cpu_seconds_per_mib": self.session_relay_cpu_per_mib,
            "relay_cpu_seconds_after_session": self.after_cpu,
            "relay_down_count_over_client_socket_received": self.relay_count_over_socket,
            "session_pdus": self.session_pdus,
            "session_relay_cpu_microseconds_per_pdu": self.session_relay_cpu_per_pdu_us,
        })
    }
}

struct Percentiles {
    p50: f64,
    p90: f64,
    min: f64,
}

impl Percentiles {
    /// Of `samples` in seconds, in milliseconds.
    fn ms(samples: &[f64]) -> Percentiles {
        let at = |p| percentile(samples, p).unwrap_or(f64::NAN) * 1e3;
        Percentiles {
            p50: median(samples).unwrap_or(f64::NAN) * 1e3,
            p90: at(90.0),
            min: at(0.0),
        }
    }
}

struct Report {
    date: String,
    unix_time: u64,
    cpus: usize,
    cpu_model: String,
    kernel: String,
    freerdp: String,
    commit: String,
    binary: PathBuf,
    seconds: u64,
    warmup: u64,
    reps: usize,
    setup_runs: usize,
    width: u32,
    height: u32,
    lines_per_s: u64,
    client_args: Vec<String>,
    decodable: Option<bool>,
    load_before: String,
    load_after: String,
    gateway_rss_kib: Option<u64>,
    /// Before the first RDP connection.
    gateway_rss_start_kib: Option<u64>,
    recordings_bytes: u64,
}

/// The 1, 5 and 15 minute load averages, to tell a busy machine from a quiet one.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The first line `program args` prints (stdout, else stderr), or "" if it cannot run.
fn first_line(program: &str, args: &[&str], dir: Option<&Path>) -> String {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command
        .output()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

impl Report {
    fn new(settings: &Settings, binary: &Path) -> Report {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        // `xfreerdp --version` wants an X display; the package's version says the same.
        let freerdp = first_line(
            "dpkg-query",
            &["-W", "-f", "freerdp2-x11 ${Version}\n", "freerdp2-x11"],
            None,
        );
        Report {
            date: first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"], None),
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            cpus: settings.cpus,
            cpu_model,
            kernel: first_line("uname", &["-sr"], None),
            freerdp,
            commit: first_line(
                "git",
                &["rev-parse", "--short", "HEAD"],
                Some(&workspace_root()),
            ),
            binary: binary.to_path_buf(),
            seconds: settings.seconds.as_secs(),
            warmup: settings.warmup.as_secs(),
            reps: settings.reps,
            setup_runs: settings.setup_runs,
            width: settings.width,
            height: settings.height,
            lines_per_s: settings.lines_per_s,
            decodable: settings.decodable,
            client_args: settings.client_args(),
            load_before: load_average(),
            load_after: String::new(),
            gateway_rss_kib: None,
            gateway_rss_start_kib: None,
            recordings_bytes: 0,
        }
    }

    fn summaries(held: &Held) -> (PathSummary, PathSummary) {
        let of = |via| {
            PathSummary::of(
                &held
                    .runs
                    .iter()
                    .filter(|r| r.via == via)
                    .collect::<Vec<_>>(),
            )
        };
        (of(Via::Tcp), of(Via::Gateway))
    }

    fn render(&self, held: &Held, setup: &Setup) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "Gatehouse RDP relay vs a plain TCP relay, {} ({} CPUs, {}; {}; {}; gatehouse {})",
            self.date, self.cpus, self.cpu_model, self.kernel, self.freerdp, self.commit
        ));
        line(format!(
            "target: freerdp-shadow-cli (NLA) sharing a {}x{} Xvfb, xterm scrolling {} lines/s; \
             recording on; load average {} before, {} after",
            self.width, self.height, self.lines_per_s, self.load_before, self.load_after
        ));
        line(format!(
            "gateway: settings.json rdp.decodable_recordings {}",
            match self.decodable {
                None => "left at its default",
                Some(true) => "true",
                Some(false) => "false",
            }
        ));
        line(format!(
            "xfreerdp arguments on both paths: /cert:ignore {}",
            self.client_args.join(" ")
        ));
        line(String::new());
        let (tcp, gw) = Report::summaries(held);
        line(format!(
            "Held sessions: {} s measured from {} s after connecting, median of {} per path \
             (alternated)",
            self.seconds, self.warmup, self.reps
        ));
        line(format!(
            "  {:<48} {:>10} {:>10} {:>7}",
            "", "tcp relay", "gateway", "gw/tcp"
        ));
        let row = |name: &str, t: f64, g: f64, digits: usize| {
            let ratio = if t > 0.0 {
                format!("{:.2}", g / t)
            } else {
                "-".into()
            };
            format!(
                "  {:<48} {:>10.d$} {:>10.d$} {:>7}",
                name,
                t,
                g,
                ratio,
                d = digits
            )
        };
        line(row(
            "down, at the client's socket (MiB/s)",
            tcp.down_mib_s,
            gw.down_mib_s,
            3,
        ));
        line(row(
            "up, at the client's socket (KiB/s)",
            tcp.up_kib_s,
            gw.up_kib_s,
            1,
        ));
        line(row(
            "relay CPU (s per MiB)",
            tcp.relay_cpu_per_mib,
            gw.relay_cpu_per_mib,
            4,
        ));
        line(row(
            "relay CPU (share of one CPU)",
            tcp.relay_cpu_share,
            gw.relay_cpu_share,
            3,
        ));
        line(row(
            "xfreerdp CPU (s per MiB)",
            tcp.client_cpu_per_mib,
            gw.client_cpu_per_mib,
            3,
        ));
        line(row(
            "freerdp-shadow-cli CPU (s per MiB)",
            tcp.target_cpu_per_mib,
            gw.target_cpu_per_mib,
            3,
        ));
        line(row(
            "client's Xvfb CPU (s per MiB)",
            tcp.client_x_cpu_per_mib,
            gw.client_x_cpu_per_mib,
            3,
        ));
        line(row(
            "target's Xvfb CPU (s per MiB)",
            tcp.target_x_cpu_per_mib,
            gw.target_x_cpu_per_mib,
            3,
        ));
        line(row(
            "xterm and text CPU (share of one CPU)",
            tcp.scene_cpu_share,
            gw.scene_cpu_share,
            3,
        ));
        line(format!(
            "  whole sessions (connection to close, {} s or so), by the relay's own count:",
            self.seconds + self.warmup
        ));
        line(row(
            "  relayed per session (MiB)",
            tcp.session_mib,
            gw.session_mib,
            2,
        ));
        line(row(
            "  relay CPU per session (s)",
            tcp.session_relay_cpu,
            gw.session_relay_cpu,
            3,
        ));
        line(row(
            "  relay CPU (s per MiB)",
            tcp.session_relay_cpu_per_mib,
            gw.session_relay_cpu_per_mib,
            4,
        ));
        line(row(
            "  relay CPU after the session, until idle (s)",
            tcp.after_cpu,
            gw.after_cpu,
            3,
        ));
        line(row(
            "  relay's bytes down / client socket's",
            tcp.relay_count_over_socket,
            gw.relay_count_over_socket,
            4,
        ));
        if let (Some(pdus), Some(per_pdu)) = (gw.session_pdus, gw.session_relay_cpu_per_pdu_us) {
            line(format!(
                "    gateway: {pdus:.0} PDUs per session, {per_pdu:.1} µs of its CPU per PDU"
            ));
        }
        let errors = held.runs.iter().filter(|r| r.error.is_some()).count();
        if errors > 0 {
            line(format!(
                "  ({errors} session(s) ended with an error; gateway byte counts of those come \
                 from the recording)"
            ));
        }
        line(String::new());
        let (t, g) = (Percentiles::ms(&setup.tcp), Percentiles::ms(&setup.gateway));
        line(format!(
            "Connection setup: xfreerdp +auth-only, {} runs per path (each path first in turn)",
            self.setup_runs
        ));
        line(format!(
            "  {:<22} {:>8} {:>8} {:>8} {:>10} {:>18}",
            "", "p50 ms", "p90 ms", "min ms", "under 1 s", "relay CPU ms/conn"
        ));
        for (name, samples, cpu) in [
            ("tcp relay", &setup.tcp, Some(setup.tcp_cpu)),
            ("gateway", &setup.gateway, Some(setup.gateway_cpu)),
            ("direct (no relay)", &setup.direct, None),
        ] {
            let p = Percentiles::ms(samples);
            line(format!(
                "  {:<22} {:>8.1} {:>8.1} {:>8.1} {:>10} {:>18}",
                name,
                p.p50,
                p.p90,
                p.min,
                format!(
                    "{}/{}",
                    samples.iter().filter(|&&s| s < 1.0).count(),
                    samples.len()
                ),
                cpu.map(|c| format!("{:.1}", c * 1e3)).unwrap_or_default()
            ));
        }
        line(format!("  gateway/tcp p50 {:>14.2}", g.p50 / t.p50));
        line(String::new());
        let mib = |kib: Option<u64>| {
            kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "?".into())
        };
        line(format!(
            "Gateway: peak RSS {} ({} before the first RDP connection); recordings written {:.1} MiB",
            mib(self.gateway_rss_kib),
            mib(self.gateway_rss_start_kib),
            self.recordings_bytes as f64 / MIB
        ));
        out
    }

    fn json(&self, held: &Held, setup: &Setup) -> Value {
        let (tcp, gw) = Report::summaries(held);
        let (t, g) = (Percentiles::ms(&setup.tcp), Percentiles::ms(&setup.gateway));
        json!({
            "date": self.date,
            "unix_time": self.unix_time,
            "machine": {
                "cpus": self.cpus,
                "cpu_model": self.cpu_model,
                "kernel": self.kernel,
                "freerdp": self.freerdp,
                "load_average_before": self.load_before,
                "load_average_after": self.load_after,
            },
            "settings": {
                "seconds": self.seconds,
                "warmup_seconds": self.warmup,
                "reps": self.reps,
                "setup_runs": self.setup_runs,
                "size": format!("{}x{}", self.width, self.height),
                "lines_per_s": self.lines_per_s,
                "gateway_decodable_recordings": self.decodable,
                "xfreerdp_args": self.client_args,
                "gateway_binary": self.binary,
                "gateway_commit": self.commit,
                "recording": true,
            },
            "held": {
                "tcp": tcp.json(),
                "gateway": gw.json(),
                "ratio_down_mib_per_s": gw.down_mib_s / tcp.down_mib_s,
                "ratio_relay_cpu_seconds_per_mib": gw.relay_cpu_per_mib / tcp.relay_cpu_per_mib,
                "runs": held.runs.iter().map(HeldRun::json).collect::<Vec<_>>(),
            },
            "setup_auth_only": {
                "tcp_seconds": setup.tcp,
                "gateway_seconds": setup.gateway,
                "direct_seconds": setup.direct,
                "direct_p50_ms": Percentiles::ms(&setup.direct).p50,
                "tcp_p50_ms": t.p50,
                "gateway_p50_ms": g.p50,
                "tcp_p90_ms": t.p90,
                "gateway_p90_ms": g.p90,
                "tcp_min_ms": t.min,
                "gateway_min_ms": g.min,
                "ratio_p50": g.p50 / t.p50,
                "tcp_relay_cpu_seconds_per_connection": setup.tcp_cpu,
                "gateway_cpu_seconds_per_connection": setup.gateway_cpu,
            },
            "gateway_peak_rss_kib": self.gateway_rss_kib,
            "gateway_peak_rss_kib_before_rdp": self.gateway_rss_start_kib,
            "recordings_bytes": self.recordings_bytes,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The plain TCP relay (`GATEHOUSE_BENCH_RDP_ROLE=relay`)

mod relay {
    use anyhow::{Context, Result};
    use std::io::Read;
    use std::net::Ipv4Addr;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::{Context as TaskContext, Poll};
    use std::time::Instant;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};

    /// The target port to relay to.
    pub const TARGET: &str = "GATEHOUSE_BENCH_RDP_RELAY_TARGET";

    /// A stream that counts the bytes read from it.
    struct Counted<S> {
        inner: S,
        read: Arc<AtomicU64>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let this = self.get_mut();
            let before = buf.filled().len();
            let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(())) = &poll {
                let n = buf.filled().len() - before;
                this.read.fetch_add(n as u64, Ordering::Relaxed);
            }
            poll
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_flush(cx)
        }

        fn poll_shutdown(
            self: Pin<&mut Self>,
            cx: &mut TaskContext<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }

    /// Relays every connection to 127.0.0.1:`$TARGET` with `copy_bidirectional` on a tokio
    /// runtime like `gatehouse serve`'s (multi-threaded, one worker per CPU), `TCP_NODELAY` on
    /// both sockets as the gateway sets it. Prints `listening 127.0.0.1:PORT`, then one JSON line
    /// per finished connection: bytes up (client → target), down, seconds, and the error if any.
    pub fn run() -> Result<()> {
        let target: u16 = std::env::var(TARGET)
            .context("no target port")?
            .parse()
            .context("target port")?;
        // The bench holds our stdin; when it is gone, so are we.
        std::thread::spawn(|| {
            let mut buffer = [0u8; 64];
            while matches!(std::io::stdin().read(&mut buffer), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async move {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            println!("listening {}", listener.local_addr()?);
            let mut connections = 0u64;
            loop {
                let (client, _) = listener.accept().await?;
                connections += 1;
                let id = connections;
                tokio::spawn(async move {
                    let started = Instant::now();
                    let up = Arc::new(AtomicU64::new(0));
                    let down = Arc::new(AtomicU64::new(0));
                    let result = relay_one(client, target, up.clone(), down.clone()).await;
                    let line = serde_json::json!({
                        "connection": id,
                        "up": up.load(Ordering::Relaxed),
                        "down": down.load(Ordering::Relaxed),
                        "seconds": started.elapsed().as_secs_f64(),
                        "error": result.err().map(|e| e.to_string()),
                    });
                    println!("{line}");
                });
            }
        })
    }

    async fn relay_one(
        client: TcpStream,
        target: u16,
        up: Arc<AtomicU64>,
        down: Arc<AtomicU64>,
    ) -> std::io::Result<()> {
        client.set_nodelay(true)?;
        let server = TcpStream::connect((Ipv4Addr::LOCALHOST, target)).await?;
        server.set_nodelay(true)?;
        let mut client = Counted {
            inner: client,
            read: up,
        };
        let mut server = Counted {
            inner: server,
            read: down,
        };
        tokio::io::copy_bidirectional(&mut client, &mut server).await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The text on the target's screen (`GATEHOUSE_BENCH_RDP_ROLE=text`, run by xterm)

mod text {
    use anyhow::{Context, Result};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    /// While this file exists, nothing is printed; when its directory is gone, the text ends.
    pub const PAUSE: &str = "GATEHOUSE_BENCH_RDP_TEXT_PAUSE";
    /// Lines per second.
    pub const RATE: &str = "GATEHOUSE_BENCH_RDP_TEXT_RATE";
    /// Characters per line.
    pub const WIDTH: &str = "GATEHOUSE_BENCH_RDP_TEXT_WIDTH";
    /// The bench's process id: the text ends when it is gone.
    pub const OWNER: &str = "GATEHOUSE_BENCH_RDP_TEXT_OWNER";

    const WORDS: [&str; 16] = [
        "relay", "gateway", "session", "target", "vault", "policy", "record", "frame", "bitmap",
        "cursor", "window", "account", "asset", "grant", "audit", "screen",
    ];
    /// Lines are printed in batches, this often.
    const TICK: Duration = Duration::from_millis(50);

    fn number(name: &str) -> Result<u64> {
        std::env::var(name)
            .with_context(|| format!("{name} is not set"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    }

    /// Prints numbered lines of words at `$RATE` lines per second, in batches every 50 ms, so
    /// that the terminal scrolls at a steady rate. Deterministic (a fixed xorshift seed).
    pub fn run() -> Result<()> {
        let pause = PathBuf::from(std::env::var(PAUSE).context("no pause file")?);
        let dir = pause.parent().map(Path::to_path_buf).unwrap_or_default();
        let rate = number(RATE)? as f64;
        let width = number(WIDTH)? as usize;
        let owner = format!("/proc/{}", number(OWNER)?);
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = std::io::stdout().lock();
        let mut owed = 0.0;
        let mut printed: u64 = 0;
        let mut due = Instant::now();
        loop {
            if !dir.is_dir() || !Path::new(&owner).exists() {
                return Ok(());
            }
            if !pause.exists() {
                owed += rate * TICK.as_secs_f64();
                let mut batch = String::new();
                while owed >= 1.0 {
                    owed -= 1.0;
                    printed += 1;
                    let mut line = format!("{printed:08}");
                    while line.len() < width {
                        line.push(' ');
                        line.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                    }
                    line.truncate(width);
                    batch.push_str(&line);
                    batch.push('\n');
                }
                if out
                    .write_all(batch.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return Ok(());
                }
            }
            due += TICK;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                due = now;
            }
        }
    }
}
