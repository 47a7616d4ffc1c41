//! The gateway against the direct path, in one run: `cargo bench -p gatehouse-bench`.
//! docs/BENCHMARKS.md describes the method, the knobs and the figures.
//!
//! Builds `gatehouse` (release), starts `gatehouse demo` in a temporary data directory (a real
//! OpenSSH sshd as the target plus the gateway, recording on), gives the gateway user a public
//! key so that both paths log in with publickey, logs in to a throwaway target account (see
//! [`TargetAccount`]), and then measures, alternating direct and gateway runs:
//!
//! 1. throughput with the real OpenSSH clients, 1 GiB of random bytes: exec pipe up and down,
//!    SFTP up (`scp`), legacy SCP up (`scp -O`), exec up fed at a fixed rate; and a terminal
//!    session printing text (`ssh -tt`), with the CPU time of client, gateway and sshd per run;
//! 2. connection setup: log in and run `true`, with `ssh` and with a russh client;
//! 3. keystroke echo: a russh client with a pty runs `stty raw -echo; cat` and times single
//!    bytes there and back.
//!
//! It prints a table and writes `results.json` and `results.txt` to `<target>/gatehouse-bench/`.
//! Knobs are environment variables, `GATEHOUSE_BENCH_*` and `GATEHOUSE_BIN`; see [`Settings`].

use anyhow::{Context, Result, anyhow, bail};
use gatehouse_bench::demo::{Demo, GATEWAY_USER, TARGET, TargetAccount, whoami};
use gatehouse_bench::ssh::{AcceptAnyHostKey, client_options};
use gatehouse_bench::{
    command_line, descendants, dir_size, env_number, gatehouse_binary, load_average, mean, median,
    percentile, proc_cpu, results_dir,
};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIB: u64 = 1024 * 1024;

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and must not start a
    // minutes-long run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("gatehouse-bench: run it with `cargo bench -p gatehouse-bench`; skipping.");
        return Ok(());
    }
    let settings = Settings::from_env()?;
    let binary = gatehouse_binary()?;
    println!("gateway binary: {}", binary.display());
    let results_dir = results_dir(&binary);

    let work = tempfile::Builder::new()
        .prefix("gatehouse-bench-")
        .tempdir()
        .context("creating the work directory")?;
    let demo = Demo::start(&binary, work.path())?;
    if settings.pin {
        demo.pin(settings.cpus)?;
    }
    let account = TargetAccount::prepare(work.path(), &demo.data_dir)?;
    println!("target account: {}", account.name);
    if account.name != whoami()? {
        demo.add_account(&account.name)?;
    }
    let direct = Route {
        name: "direct",
        port: demo.target_port,
        user: account.name.clone(),
        key: demo.data_dir.join("demo-target/account_key"),
    };
    let gateway = Route {
        name: "gateway",
        port: demo.gateway_port,
        user: format!("{GATEWAY_USER}@{}@{TARGET}", direct.user),
        key: work.path().join("client_key"),
    };
    demo.add_client_key(&gateway.key)?;
    for route in [&direct, &gateway] {
        let out = route
            .ssh(&settings.cipher)
            .arg("echo ok")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running ssh ({})", route.name))?;
        if !out.status.success() || out.stdout != b"ok\n" {
            bail!(
                "the {} path does not work: {}{}",
                route.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let scratch = Scratch::new(settings.size, settings.pty_size)?;
    println!(
        "payload: {} MiB of random bytes in {}, {} MiB of text in {}",
        settings.size / MIB,
        scratch.source.display(),
        settings.pty_size / MIB,
        scratch.text.display()
    );

    let mut report = Report::new(&settings, &binary)?;
    let throughput = measure_throughput(&settings, &direct, &gateway, &scratch, &demo)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let setup = measure_setup(&settings, &runtime, &direct, &gateway)?;
    let echo = measure_echo(&settings, &runtime, &direct, &gateway)?;
    report.recordings_bytes = dir_size(&demo.data_dir.join("recordings"));
    report.gateway_rss_kib = demo.rss_kib();
    report.load_after = load_average();

    let text = report.render(&throughput, &setup, &echo);
    println!("\n{text}");
    let json = report.json(&throughput, &setup, &echo);
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;
    let stem = if settings.pin {
        "results-pinned"
    } else {
        "results"
    };
    // The latest run under a fixed name, and every run under its time, so that a quick run
    // does not overwrite the figures of a full one.
    let json_text = serde_json::to_string_pretty(&json)?;
    let json_path = results_dir.join(format!("{stem}.json"));
    std::fs::write(&json_path, &json_text)?;
    std::fs::write(results_dir.join(format!("{stem}.txt")), &text)?;
    let history = results_dir.join("history");
    std::fs::create_dir_all(&history)?;
    let dated = format!("{stem}-{}", report.date.replace(':', ""));
    std::fs::write(history.join(format!("{dated}.json")), &json_text)?;
    std::fs::write(history.join(format!("{dated}.txt")), &text)?;
    println!(
        "results: {} (and {})",
        json_path.display(),
        history.join(format!("{dated}.json")).display()
    );
    drop(demo);
    drop(account);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Settings

/// From the environment, all optional: `GATEHOUSE_BENCH_MIB` (1024), `GATEHOUSE_BENCH_PTY_MIB`
/// (256), `GATEHOUSE_BENCH_REPS` (5), `GATEHOUSE_BENCH_SETUP_RUNS` (20),
/// `GATEHOUSE_BENCH_ECHO_SAMPLES` (500), `GATEHOUSE_BENCH_ECHO_GAP_MS` (10),
/// `GATEHOUSE_BENCH_PACE_MIB_S` (200), `GATEHOUSE_BENCH_CIPHER` (`aes256-gcm@openssh.com`),
/// `GATEHOUSE_BENCH_MODES` (comma list of [`Mode`] labels), `GATEHOUSE_BENCH_PIN` (0),
/// `GATEHOUSE_BENCH_ACCOUNT` (see [`TargetAccount`]); `GATEHOUSE_BIN` skips the build.
struct Settings {
    size: u64,
    reps: usize,
    setup_runs: usize,
    echo_samples: usize,
    echo_gap: Duration,
    cipher: String,
    modes: Vec<Mode>,
    /// Feeding rate of `exec-up-paced`, bytes per second.
    pace: u64,
    /// Bytes printed by `pty-down` (terminals are slow, so it moves less).
    pty_size: u64,
    /// CPUs available when the bench started (before any pinning).
    cpus: usize,
    /// Pin the gateway to the last CPU and everything else (clients, sshd) to the others, as if
    /// the gateway had a machine of its own.
    pin: bool,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let modes = match std::env::var("GATEHOUSE_BENCH_MODES") {
            Ok(list) => list
                .split(',')
                .map(|m| Mode::parse(m.trim()))
                .collect::<Result<Vec<_>>>()?,
            Err(_) => Mode::ALL.to_vec(),
        };
        let size = env_number("GATEHOUSE_BENCH_MIB", 1024)? * MIB;
        if size == 0 {
            bail!("GATEHOUSE_BENCH_MIB must be at least 1");
        }
        Ok(Self {
            size,
            reps: env_number("GATEHOUSE_BENCH_REPS", 5)?.max(1) as usize,
            setup_runs: env_number("GATEHOUSE_BENCH_SETUP_RUNS", 20)?.max(1) as usize,
            echo_samples: env_number("GATEHOUSE_BENCH_ECHO_SAMPLES", 500)?.max(1) as usize,
            echo_gap: Duration::from_millis(env_number("GATEHOUSE_BENCH_ECHO_GAP_MS", 10)?),
            cipher: std::env::var("GATEHOUSE_BENCH_CIPHER")
                .unwrap_or_else(|_| "aes256-gcm@openssh.com".into()),
            modes,
            pace: env_number("GATEHOUSE_BENCH_PACE_MIB_S", 200)?.max(1) * MIB,
            pty_size: env_number("GATEHOUSE_BENCH_PTY_MIB", 256)?.max(1) * MIB,
            pin: env_number("GATEHOUSE_BENCH_PIN", 0)? != 0,
            cpus: std::thread::available_parallelism()?.get(),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    ExecUp,
    ExecDown,
    SftpUp,
    ScpUp,
    /// A terminal session printing text (recorded whole, unlike exec channels).
    PtyDown,
    /// `exec-up` with the bench feeding ssh at a fixed rate, so that the CPUs are not saturated.
    ExecUpPaced,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::ExecUp,
        Mode::ExecDown,
        Mode::SftpUp,
        Mode::ScpUp,
        Mode::PtyDown,
        Mode::ExecUpPaced,
    ];

    fn label(self) -> &'static str {
        match self {
            Mode::ExecUp => "exec-up",
            Mode::ExecDown => "exec-down",
            Mode::SftpUp => "sftp-up",
            Mode::ScpUp => "scp-up",
            Mode::PtyDown => "pty-down",
            Mode::ExecUpPaced => "exec-up-paced",
        }
    }

    /// Bytes moved by one run.
    fn bytes(self, settings: &Settings) -> u64 {
        match self {
            Mode::PtyDown => settings.pty_size,
            _ => settings.size,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Mode::ExecUp => "ssh HOST 'cat > /dev/null' < file",
            Mode::ExecDown => "ssh HOST 'cat file' > /dev/null",
            Mode::SftpUp => "scp file HOST:/dev/shm/… (SFTP protocol)",
            Mode::ScpUp => "scp -O file HOST:/dev/shm/… (legacy SCP protocol)",
            Mode::PtyDown => "ssh -tt HOST 'cat textfile' > /dev/null (recorded whole)",
            Mode::ExecUpPaced => "ssh HOST 'cat > /dev/null', fed at GATEHOUSE_BENCH_PACE_MIB_S",
        }
    }

    fn parse(text: &str) -> Result<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.label() == text)
            .ok_or_else(|| {
                anyhow!(
                    "unknown mode `{text}` (exec-up, exec-down, sftp-up, scp-up, pty-down, \
                 exec-up-paced)"
                )
            })
    }
}

// ---------------------------------------------------------------------------------------------
// Building and starting the gateway

/// CPU seconds used so far by the client (this process's finished children) and the gateway;
/// the target's share is sampled by [`TreeSampler`].
fn demo_cpu(demo: &Demo) -> Cpu {
    Cpu {
        client: proc_cpu(std::process::id()).map(|c| c.children),
        gateway: proc_cpu(demo.pid()).map(|c| c.own),
        target: Some(0.0),
    }
}

/// Samples the CPU time of every process below `root` (the sshd listener: its per-connection
/// processes and the commands they run) every 20 ms. Reading the listener's "children" time
/// instead would miss processes that sshd does not wait for.
struct TreeSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl TreeSampler {
    fn start(root: u32) -> TreeSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            // pid -> (CPU when first seen, CPU when last seen)
            let mut seen: std::collections::HashMap<u32, (f64, f64)> = Default::default();
            let mut first_pass = true;
            loop {
                let done = flag.load(std::sync::atomic::Ordering::Relaxed);
                for pid in descendants(root) {
                    if let Some(cpu) = proc_cpu(pid) {
                        let start = if first_pass { cpu.own } else { 0.0 };
                        let entry = seen.entry(pid).or_insert((start, cpu.own));
                        entry.1 = entry.1.max(cpu.own);
                    }
                }
                first_pass = false;
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen.values().map(|(first, last)| last - first).sum()
        });
        TreeSampler { stop, thread }
    }

    fn finish(self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok()
    }
}

/// CPU seconds per process role; `None` where /proc could not tell.
#[derive(Clone, Copy, Default)]
struct Cpu {
    client: Option<f64>,
    gateway: Option<f64>,
    target: Option<f64>,
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        let d = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
        Cpu {
            client: d(self.client, before.client),
            gateway: d(self.gateway, before.gateway),
            target: d(self.target, before.target),
        }
    }

    fn total(self) -> Option<f64> {
        Some(self.client? + self.gateway? + self.target?)
    }
}

// ---------------------------------------------------------------------------------------------
// The two paths

struct Route {
    name: &'static str,
    port: u16,
    user: String,
    key: PathBuf,
}

impl Route {
    fn destination(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// `ssh … HOST`; the caller appends the remote command.
    fn ssh(&self, cipher: &str) -> Command {
        self.ssh_with(cipher, &[])
    }

    /// `ssh -tt … HOST`: with a terminal even though stdin is none.
    fn ssh_tty(&self, cipher: &str) -> Command {
        self.ssh_with(cipher, &["-tt"])
    }

    fn ssh_with(&self, cipher: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(extra)
            .args(client_options(cipher))
            .arg("-i")
            .arg(&self.key)
            .arg("-p")
            .arg(self.port.to_string())
            .arg(self.destination());
        cmd
    }

    /// `scp [-O] … SOURCE HOST:DEST`.
    fn scp(&self, cipher: &str, legacy: bool, source: &Path, dest: &Path) -> Command {
        let mut cmd = Command::new("scp");
        if legacy {
            cmd.arg("-O");
        }
        cmd.arg("-q")
            .args(client_options(cipher))
            .arg("-i")
            .arg(&self.key)
            .arg("-P")
            .arg(self.port.to_string())
            .arg(source)
            .arg(format!("{}:{}", self.destination(), dest.display()));
        cmd
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput

/// The payload file and the upload destination, in /dev/shm when there is one (so that the disk
/// stays out of the measurement); both removed when dropped.
struct Scratch {
    /// Random bytes, for the binary-safe transfers.
    source: PathBuf,
    /// Printable lines of random letters, for the terminal.
    text: PathBuf,
    dest: PathBuf,
}

impl Scratch {
    fn new(size: u64, text_size: u64) -> Result<Scratch> {
        let dir = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let id = std::process::id();
        let scratch = Scratch {
            source: dir.join(format!("gatehouse-bench-{id}.src")),
            text: dir.join(format!("gatehouse-bench-{id}.txt")),
            dest: dir.join(format!("gatehouse-bench-{id}.dst")),
        };
        let mut random = std::fs::File::open("/dev/urandom")?.take(size);
        let mut file = std::fs::File::create(&scratch.source)?;
        let copied = std::io::copy(&mut random, &mut file)?;
        file.flush()?;
        if copied != size {
            bail!("short payload: {copied} of {size} bytes");
        }
        write_text(&scratch.text, text_size)?;
        Ok(scratch)
    }
}

/// Writes `size` bytes of 100-character lines of random base64 letters to `path`.
fn write_text(path: &Path, size: u64) -> Result<()> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut random = std::fs::File::open("/dev/urandom")?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    let mut written: u64 = 0;
    while written < size {
        random.read_exact(&mut chunk)?;
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = if (written + i as u64) % 101 == 100 {
                b'\n'
            } else {
                ALPHABET[usize::from(*b & 63)]
            };
        }
        let n = usize::try_from(size - written)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        out.write_all(&chunk[..n])?;
        written += n as u64;
    }
    out.flush()?;
    Ok(())
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.source);
        let _ = std::fs::remove_file(&self.text);
        let _ = std::fs::remove_file(&self.dest);
    }
}

struct Run {
    seconds: f64,
    /// CPU seconds used during the run by the client, the gateway (zero on the direct path: it is
    /// idle) and the target.
    cpu: Cpu,
}

struct ModeResult {
    mode: Mode,
    bytes: u64,
    direct: Vec<Run>,
    gateway: Vec<Run>,
}

/// Copies `source` to `sink` at `rate` bytes per second.
fn paced_copy(source: &Path, mut sink: impl Write, rate: u64) -> std::io::Result<()> {
    let mut file = std::fs::File::open(source)?;
    let mut buffer = vec![0u8; 256 * 1024];
    let started = Instant::now();
    let mut sent: u64 = 0;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(());
        }
        sink.write_all(&buffer[..n])?;
        sent += n as u64;
        let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

fn transfer(
    settings: &Settings,
    route: &Route,
    mode: Mode,
    scratch: &Scratch,
    demo: &Demo,
) -> Result<Run> {
    let _ = std::fs::remove_file(&scratch.dest);
    let mut cmd = match mode {
        Mode::ExecUp => {
            let mut c = route.ssh(&settings.cipher);
            c.arg("cat > /dev/null")
                .stdin(std::fs::File::open(&scratch.source)?);
            c
        }
        Mode::ExecUpPaced => {
            let mut c = route.ssh(&settings.cipher);
            c.arg("cat > /dev/null").stdin(Stdio::piped());
            c
        }
        Mode::PtyDown => {
            let mut c = route.ssh_tty(&settings.cipher);
            c.arg(format!("cat '{}'", scratch.text.display()))
                .stdin(Stdio::null());
            c
        }
        Mode::ExecDown => {
            let mut c = route.ssh(&settings.cipher);
            c.arg(format!("cat '{}'", scratch.source.display()))
                .stdin(Stdio::null());
            c
        }
        Mode::SftpUp | Mode::ScpUp => {
            let mut c = route.scp(
                &settings.cipher,
                mode == Mode::ScpUp,
                &scratch.source,
                &scratch.dest,
            );
            c.stdin(Stdio::null());
            c
        }
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let cpu_before = demo_cpu(demo);
    let sampler = demo.sshd_pid().map(TreeSampler::start);
    let started = Instant::now();
    let mut child = cmd.spawn()?;
    let feeder = match child.stdin.take() {
        Some(stdin) => {
            let source = scratch.source.clone();
            let rate = settings.pace;
            Some(std::thread::spawn(move || paced_copy(&source, stdin, rate)))
        }
        None => None,
    };
    let out = child.wait_with_output()?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(feeder) = feeder {
        feeder
            .join()
            .map_err(|_| anyhow!("the feeding thread failed"))?
            .context("feeding ssh")?;
    }
    // Let the target's processes for this connection finish before the last CPU sample (this
    // wait is not part of the measurement).
    std::thread::sleep(Duration::from_millis(300));
    let mut cpu = demo_cpu(demo).since(cpu_before);
    cpu.target = sampler.and_then(TreeSampler::finish);
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            route.name,
            mode.label(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if matches!(mode, Mode::SftpUp | Mode::ScpUp) {
        let written = std::fs::metadata(&scratch.dest)?.len();
        if written != settings.size {
            bail!(
                "{} {}: {written} of {} bytes arrived",
                route.name,
                mode.label(),
                settings.size
            );
        }
    }
    Ok(Run { seconds, cpu })
}

fn measure_throughput(
    settings: &Settings,
    direct: &Route,
    gateway: &Route,
    scratch: &Scratch,
    demo: &Demo,
) -> Result<Vec<ModeResult>> {
    let mut results: Vec<ModeResult> = settings
        .modes
        .iter()
        .map(|&mode| ModeResult {
            mode,
            bytes: mode.bytes(settings),
            direct: Vec::new(),
            gateway: Vec::new(),
        })
        .collect();
    // Warm-up: one untimed transfer per mode and path (page cache, sshd binaries).
    for result in &results {
        for route in [direct, gateway] {
            transfer(settings, route, result.mode, scratch, demo)?;
        }
    }
    for rep in 0..settings.reps {
        for result in results.iter_mut() {
            // Alternate which path goes first, so that neither always runs on a warmer machine.
            let order = if rep % 2 == 0 {
                [direct, gateway]
            } else {
                [gateway, direct]
            };
            for route in order {
                let run = transfer(settings, route, result.mode, scratch, demo)?;
                let cpu = |c: Option<f64>| c.map_or("?".into(), |c| format!("{c:.2}"));
                println!(
                    "  throughput {:<13} {:<7} rep {}: {:6.3} s {:7.1} MiB/s   CPU s: client {} \
                     gateway {} sshd {}",
                    result.mode.label(),
                    route.name,
                    rep + 1,
                    run.seconds,
                    mib_per_s(result.mode.bytes(settings), run.seconds),
                    cpu(run.cpu.client),
                    cpu(run.cpu.gateway),
                    cpu(run.cpu.target),
                );
                if route.name == "direct" {
                    result.direct.push(run);
                } else {
                    result.gateway.push(run);
                }
            }
        }
    }
    Ok(results)
}

fn mib_per_s(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / MIB as f64 / seconds
}

// ---------------------------------------------------------------------------------------------
// Connection setup

/// Wall times in seconds, per path.
#[derive(Default)]
struct Pair {
    direct: Vec<f64>,
    gateway: Vec<f64>,
}

impl Pair {
    fn push(&mut self, route: &Route, value: f64) {
        if route.name == "direct" {
            self.direct.push(value);
        } else {
            self.gateway.push(value);
        }
    }
}

struct SetupResult {
    /// `ssh HOST true` with the OpenSSH client.
    openssh: Pair,
    /// The same with a russh client (TCP_NODELAY from the first byte).
    russh: Pair,
}

fn measure_setup(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    direct: &Route,
    gateway: &Route,
) -> Result<SetupResult> {
    let mut result = SetupResult {
        openssh: Pair::default(),
        russh: Pair::default(),
    };
    for i in 0..settings.setup_runs {
        let order = if i % 2 == 0 {
            [direct, gateway]
        } else {
            [gateway, direct]
        };
        for route in order {
            let started = Instant::now();
            let out = route
                .ssh(&settings.cipher)
                .arg("true")
                .stdin(Stdio::null())
                .output()?;
            let seconds = started.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!(
                    "{}: ssh true failed: {}",
                    route.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            result.openssh.push(route, seconds);
        }
        for route in order {
            let seconds = runtime.block_on(russh_setup(route, &settings.cipher))?;
            result.russh.push(route, seconds);
        }
    }
    println!(
        "  setup: {} runs per path and client done",
        settings.setup_runs
    );
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// Keystroke echo

struct EchoSession {
    handle: russh::client::Handle<AcceptAnyHostKey>,
    channel: russh::Channel<russh::client::Msg>,
}

/// Logs in on `route` with a russh client (TCP_NODELAY, the given cipher, curve25519).
async fn russh_login(
    route: &Route,
    cipher: &str,
) -> Result<russh::client::Handle<AcceptAnyHostKey>> {
    gatehouse_bench::ssh::russh_login(route.name, route.port, &route.user, &route.key, cipher).await
}

/// Connection setup as a client without Nagle delays sees it: connect, log in, run `true`, until
/// its exit status arrives.
async fn russh_setup(route: &Route, cipher: &str) -> Result<f64> {
    let started = Instant::now();
    let handle = russh_login(route, cipher).await?;
    let mut channel = handle.channel_open_session().await?;
    channel.exec(true, "true").await?;
    let mut status = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            russh::ChannelMsg::ExitStatus { exit_status } => {
                status = Some(exit_status);
                break;
            }
            russh::ChannelMsg::Failure | russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    if status != Some(0) {
        bail!("{}: `true` ended with {status:?}", route.name);
    }
    Ok(seconds)
}

/// Logs in on `route` with a russh client, opens a pty and starts an echoing `cat` in raw mode.
async fn open_echo_session(route: &Route, cipher: &str) -> Result<EchoSession> {
    let handle = russh_login(route, cipher).await?;
    let mut channel = handle.channel_open_session().await?;
    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await?;
    channel
        .exec(true, "stty raw -echo && echo READY && exec cat")
        .await?;
    let mut seen = Vec::new();
    let ready = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(msg) = channel.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } => {
                    seen.extend_from_slice(&data);
                    if seen.windows(5).any(|w| w == b"READY") {
                        return Ok(());
                    }
                }
                russh::ChannelMsg::Failure => bail!("the pty or exec request was refused"),
                russh::ChannelMsg::Close | russh::ChannelMsg::Eof => break,
                _ => {}
            }
        }
        bail!("channel closed before the echo was ready")
    })
    .await;
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.context(format!("{}: echo session", route.name))),
        Err(_) => bail!(
            "{}: no READY from the echo session within 15 s (got {:?})",
            route.name,
            String::from_utf8_lossy(&seen)
        ),
    }
    // Let any trailing output of the start-up arrive before timing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(EchoSession { handle, channel })
}

impl EchoSession {
    /// Sends one byte and returns the time until it comes back.
    async fn round_trip(&mut self, byte: u8) -> Result<Duration> {
        let started = Instant::now();
        self.channel.data_bytes(vec![byte]).await?;
        let wait = async {
            while let Some(msg) = self.channel.wait().await {
                if let russh::ChannelMsg::Data { data } = msg
                    && data.contains(&byte)
                {
                    return Ok(started.elapsed());
                }
            }
            bail!("channel closed during the echo test")
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| anyhow!("no echo within 10 s"))?
    }

    async fn close(self) {
        let _ = self.channel.eof().await;
        let _ = self.channel.close().await;
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

struct EchoResult {
    /// Round trips in microseconds.
    direct: Vec<f64>,
    gateway: Vec<f64>,
}

fn measure_echo(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    direct: &Route,
    gateway: &Route,
) -> Result<EchoResult> {
    runtime.block_on(async {
        let mut sessions = [
            open_echo_session(direct, &settings.cipher).await?,
            open_echo_session(gateway, &settings.cipher).await?,
        ];
        // Warm-up round trips, not counted.
        for session in sessions.iter_mut() {
            for _ in 0..20 {
                session.round_trip(b'w').await?;
            }
        }
        let mut result = EchoResult {
            direct: Vec::new(),
            gateway: Vec::new(),
        };
        for i in 0..settings.echo_samples {
            let byte = b'a' + (i % 26) as u8;
            // Alternate which path goes first.
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for index in order {
                let rtt = sessions[index].round_trip(byte).await?;
                let micros = rtt.as_secs_f64() * 1e6;
                if index == 0 {
                    result.direct.push(micros);
                } else {
                    result.gateway.push(micros);
                }
                tokio::time::sleep(settings.echo_gap).await;
            }
        }
        let [first, second] = sessions;
        first.close().await;
        second.close().await;
        println!("  echo: {} samples per path done", settings.echo_samples);
        Ok(result)
    })
}

// ---------------------------------------------------------------------------------------------
// Reporting

struct Report {
    date: String,
    unix_time: u64,
    cpus: usize,
    cpu_model: String,
    kernel: String,
    openssh: String,
    size: u64,
    reps: usize,
    setup_runs: usize,
    echo_samples: usize,
    echo_gap_ms: u128,
    pace: u64,
    pty_size: u64,
    pin: bool,
    cipher: String,
    binary: PathBuf,
    recordings_bytes: u64,
    gateway_rss_kib: Option<u64>,
    load_before: String,
    load_after: String,
}

impl Report {
    fn new(settings: &Settings, binary: &Path) -> Result<Report> {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        Ok(Report {
            date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            unix_time: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
            cpus: settings.cpus,
            cpu_model,
            kernel: command_line("uname", &["-sr"]),
            openssh: command_line("ssh", &["-V"]),
            size: settings.size,
            reps: settings.reps,
            setup_runs: settings.setup_runs,
            echo_samples: settings.echo_samples,
            echo_gap_ms: settings.echo_gap.as_millis(),
            pace: settings.pace,
            pty_size: settings.pty_size,
            pin: settings.pin,
            cipher: settings.cipher.clone(),
            binary: binary.to_path_buf(),
            recordings_bytes: 0,
            gateway_rss_kib: None,
            load_before: load_average(),
            load_after: String::new(),
        })
    }

    fn render(&self, throughput: &[ModeResult], setup: &SetupResult, echo: &EchoResult) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "Gatehouse gateway vs direct sshd, {} ({} CPUs, {}; {}; {})",
            self.date, self.cpus, self.cpu_model, self.kernel, self.openssh
        ));
        line(format!(
            "cipher {} and kex curve25519-sha256 on every hop; recording on; \
             load average {} before, {} after",
            self.cipher, self.load_before, self.load_after
        ));
        if self.pin {
            line(
                "PINNED: the gateway on a CPU of its own, the clients and sshd on the other(s)"
                    .into(),
            );
        }
        line(String::new());
        line(format!(
            "Throughput, {} MiB per run ({} MiB for pty-down), median of {} runs per path",
            self.size / MIB,
            self.pty_size / MIB,
            self.reps
        ));
        line(
            "  (CPU: median CPU seconds per GiB, all processes: ssh/scp client + gateway + sshd)"
                .into(),
        );
        line(format!(
            "  {:<14} {:>8} {:>8} {:>6} {:>11} {:>11} {:>11}",
            "mode", "direct", "gateway", "ratio", "CPU direct", "CPU gateway", "of which gw"
        ));
        line(format!(
            "  {:<14} {:>8} {:>8} {:>6} {:>11} {:>11} {:>11}",
            "", "MiB/s", "MiB/s", "", "s/GiB", "s/GiB", "s/GiB"
        ));
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        for r in throughput {
            let t = ThroughputSummary::of(r);
            line(format!(
                "  {:<14} {:>8.1} {:>8.1} {:>6.3} {:>11} {:>11} {:>11}",
                r.mode.label(),
                t.direct_mib_s,
                t.gateway_mib_s,
                t.ratio,
                cell(t.direct_cpu_per_gib),
                cell(t.gateway_total_cpu_per_gib),
                cell(t.gateway_cpu_per_gib),
            ));
        }
        if throughput.iter().any(|r| r.mode == Mode::ExecUpPaced) {
            line(format!(
                "  (exec-up-paced: the client is fed at {} MiB/s)",
                self.pace / MIB
            ));
        }
        line(String::new());
        line(format!(
            "Connection setup (log in, run `true`), {} runs per path and client",
            self.setup_runs
        ));
        line(format!(
            "  {:<18} {:>10} {:>10} {:>10} {:>7}",
            "", "p50 ms", "p90 ms", "min ms", "ratio"
        ));
        for (client, pair) in [("ssh", &setup.openssh), ("russh", &setup.russh)] {
            let s = SetupSummary::of(pair);
            for (name, stats) in [("direct", &s.direct), ("gateway", &s.gateway)] {
                let ratio = if name == "gateway" {
                    format!("{:.2}", s.ratio)
                } else {
                    String::new()
                };
                line(format!(
                    "  {:<18} {:>10.1} {:>10.1} {:>10.1} {:>7}",
                    format!("{client} {name}"),
                    stats.p50,
                    stats.p90,
                    stats.min,
                    ratio
                ));
            }
        }
        line(String::new());
        let e = EchoSummary::of(echo);
        line(format!(
            "Keystroke echo (pty, raw mode, cat), {} samples per path, {} ms apart",
            self.echo_samples, self.echo_gap_ms
        ));
        line(format!(
            "  {:<10} {:>10} {:>10} {:>10}",
            "", "p50 µs", "p99 µs", "mean µs"
        ));
        for (name, stats) in [("direct", &e.direct), ("gateway", &e.gateway)] {
            line(format!(
                "  {:<10} {:>10.0} {:>10.0} {:>10.0}",
                name, stats.p50, stats.p99, stats.mean
            ));
        }
        line(format!(
            "  added      {:>10.0} {:>10.0} {:>10.0}",
            e.gateway.p50 - e.direct.p50,
            e.gateway.p99 - e.direct.p99,
            e.gateway.mean - e.direct.mean
        ));
        line(String::new());
        line(format!(
            "Recordings written: {:.1} MiB; gateway peak RSS: {}",
            self.recordings_bytes as f64 / MIB as f64,
            self.gateway_rss_kib
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "?".into())
        ));
        out
    }

    fn json(&self, throughput: &[ModeResult], setup: &SetupResult, echo: &EchoResult) -> Value {
        let modes: Vec<Value> = throughput
            .iter()
            .map(|r| {
                let t = ThroughputSummary::of(r);
                json!({
                    "mode": r.mode.label(),
                    "command": r.mode.description(),
                    "bytes": r.bytes,
                    "direct_seconds": r.direct.iter().map(|x| x.seconds).collect::<Vec<_>>(),
                    "gateway_seconds": r.gateway.iter().map(|x| x.seconds).collect::<Vec<_>>(),
                    "direct_cpu_seconds": r.direct.iter().map(|x| cpu_json(x.cpu)).collect::<Vec<_>>(),
                    "gateway_cpu_seconds": r.gateway.iter().map(|x| cpu_json(x.cpu)).collect::<Vec<_>>(),
                    "direct_median_mib_per_s": t.direct_mib_s,
                    "gateway_median_mib_per_s": t.gateway_mib_s,
                    "ratio": t.ratio,
                    "direct_total_cpu_seconds_per_gib": t.direct_cpu_per_gib,
                    "gateway_path_total_cpu_seconds_per_gib": t.gateway_total_cpu_per_gib,
                    "gateway_process_cpu_seconds_per_gib": t.gateway_cpu_per_gib,
                })
            })
            .collect();
        let e = EchoSummary::of(echo);
        json!({
            "date": self.date,
            "unix_time": self.unix_time,
            "machine": {
                "cpus": self.cpus,
                "cpu_model": self.cpu_model,
                "kernel": self.kernel,
                "openssh": self.openssh,
                "load_average_before": self.load_before,
                "load_average_after": self.load_after,
            },
            "settings": {
                "bytes": self.size,
                "reps": self.reps,
                "setup_runs": self.setup_runs,
                "echo_samples": self.echo_samples,
                "echo_gap_ms": self.echo_gap_ms,
                "cipher": self.cipher,
                "kex": "curve25519-sha256",
                "paced_mib_per_s": self.pace / MIB,
                "pinned": self.pin,
                "gateway_binary": self.binary,
                "recording": true,
            },
            "throughput": modes,
            "setup": {
                "openssh_client": setup_json(&setup.openssh),
                "russh_client": setup_json(&setup.russh),
            },
            "echo": {
                "direct_micros": echo.direct,
                "gateway_micros": echo.gateway,
                "direct_p50_us": e.direct.p50,
                "direct_p99_us": e.direct.p99,
                "gateway_p50_us": e.gateway.p50,
                "gateway_p99_us": e.gateway.p99,
                "added_p50_us": e.gateway.p50 - e.direct.p50,
                "added_p99_us": e.gateway.p99 - e.direct.p99,
            },
            "recordings_bytes": self.recordings_bytes,
            "gateway_peak_rss_kib": self.gateway_rss_kib,
        })
    }
}

struct ThroughputSummary {
    direct_mib_s: f64,
    gateway_mib_s: f64,
    ratio: f64,
    direct_cpu_per_gib: Option<f64>,
    gateway_total_cpu_per_gib: Option<f64>,
    gateway_cpu_per_gib: Option<f64>,
}

impl ThroughputSummary {
    fn of(r: &ModeResult) -> ThroughputSummary {
        let size = r.bytes;
        let secs = |runs: &[Run]| median(&runs.iter().map(|x| x.seconds).collect::<Vec<_>>());
        let per_gib = |runs: &[Run], f: fn(Cpu) -> Option<f64>| {
            let cpu: Vec<f64> = runs.iter().filter_map(|x| f(x.cpu)).collect();
            median(&cpu).map(|c| c * (1024 * MIB) as f64 / size as f64)
        };
        let direct_mib_s = secs(&r.direct).map_or(0.0, |s| mib_per_s(size, s));
        let gateway_mib_s = secs(&r.gateway).map_or(0.0, |s| mib_per_s(size, s));
        ThroughputSummary {
            direct_mib_s,
            gateway_mib_s,
            ratio: gateway_mib_s / direct_mib_s,
            direct_cpu_per_gib: per_gib(&r.direct, Cpu::total),
            gateway_total_cpu_per_gib: per_gib(&r.gateway, Cpu::total),
            gateway_cpu_per_gib: per_gib(&r.gateway, |c| c.gateway),
        }
    }
}

fn cpu_json(cpu: Cpu) -> Value {
    json!({ "client": cpu.client, "gateway": cpu.gateway, "sshd": cpu.target })
}

struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    min: f64,
    mean: f64,
}

impl Percentiles {
    /// Of `samples`, multiplied by `scale`.
    fn of(samples: &[f64], scale: f64) -> Percentiles {
        let at = |p| percentile(samples, p).unwrap_or(f64::NAN) * scale;
        Percentiles {
            p50: median(samples).unwrap_or(f64::NAN) * scale,
            p90: at(90.0),
            p99: at(99.0),
            min: at(0.0),
            mean: mean(samples).unwrap_or(f64::NAN) * scale,
        }
    }
}

struct SetupSummary {
    direct: Percentiles,
    gateway: Percentiles,
    ratio: f64,
}

impl SetupSummary {
    fn of(setup: &Pair) -> SetupSummary {
        let direct = Percentiles::of(&setup.direct, 1e3);
        let gateway = Percentiles::of(&setup.gateway, 1e3);
        let ratio = gateway.p50 / direct.p50;
        SetupSummary {
            direct,
            gateway,
            ratio,
        }
    }
}

struct EchoSummary {
    direct: Percentiles,
    gateway: Percentiles,
}

impl EchoSummary {
    fn of(echo: &EchoResult) -> EchoSummary {
        EchoSummary {
            direct: Percentiles::of(&echo.direct, 1.0),
            gateway: Percentiles::of(&echo.gateway, 1.0),
        }
    }
}

fn setup_json(pair: &Pair) -> Value {
    let s = SetupSummary::of(pair);
    json!({
        "direct_seconds": pair.direct,
        "gateway_seconds": pair.gateway,
        "direct_p50_ms": s.direct.p50,
        "gateway_p50_ms": s.gateway.p50,
        "direct_p90_ms": s.direct.p90,
        "gateway_p90_ms": s.gateway.p90,
        "ratio_p50": s.ratio,
    })
}
