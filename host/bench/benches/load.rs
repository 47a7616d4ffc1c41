//! Hundreds of concurrent SSH sessions through one gateway:
//! `cargo bench -p gatehouse-bench --bench load -- [--sessions 500] [--minutes 10] [--kill]`.
//! docs/BENCHMARKS.md ("Load") describes the method and the figures.
//!
//! Starts `gatehouse demo` (release binary, recording on) and, next to the demo's own sshd, an
//! OpenSSH sshd tuned for the load (`MaxStartups`, `MaxSessions`; the file descriptor limit
//! raised before anything starts) that the gateway reaches as the asset `load-target`, with a
//! throwaway target account. Then it ramps up to N sessions at a fixed rate and keeps them for
//! the duration, in a fixed mix: 60% pty sessions (russh, in this process) that run an echoing
//! `cat` in raw mode and time one byte there and back every ~2 s; 30% sessions (russh) that run
//! `head -c 65536 /dev/zero` on a new exec channel every ~2 s and check the byte count and exit
//! status; 10% slots that run real OpenSSH `scp` processes, a small file up and down (SFTP and
//! legacy SCP alternately), checked byte for byte. Every error is counted by kind and fails the
//! run. It samples the gateway's RSS (`VmRSS`, `VmHWM`), CPU and threads, the established
//! connections to it and the machine's CPU every 2 s.
//!
//! Every acknowledged event is logged on the client side: a session whose login completed and
//! whose first command answered, an exec channel whose exit status arrived. Each such command
//! carries a unique token (`: GHLOAD.…;`) that the gateway's `channel_opened` audit event quotes.
//! At the end the audit trail (`gatehouse audit list --json`) must hold, for each acknowledged
//! session, one `login_ok` and one `target_connect_ok`, and for each acknowledged exec one
//! `channel_opened`. With `--kill` the gateway gets a `kill -9` at the end of the hold instead of
//! a stop; it is then started again on the same data directory (which must open the store and
//! close the cut sessions as interrupted) and the same check runs, plus: no session left open,
//! and the store opens without the gateway too.
//!
//! Results: `<target>/gatehouse-bench/load/results.{json,txt}` (`results-kill.*` for `--kill`)
//! and a dated copy in `history/`.

use anyhow::{Context, Result, anyhow, bail};
use gatehouse_bench::demo::{Demo, GATEWAY_USER, TargetAccount, run_checked};
use gatehouse_bench::ssh::{AcceptAnyHostKey, client_options, russh_login};
use gatehouse_bench::{
    command_line, descendants, dir_size, free_port, gatehouse_binary, load_average, mean, median,
    percentile, proc_cpu, results_dir, rss_kib,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The asset the gateway reaches the tuned sshd as.
const LOAD_ASSET: &str = "load-target";
const CIPHER: &str = "aes256-gcm@openssh.com";
/// Bytes each exec channel prints.
const EXEC_BYTES: u64 = 64 * 1024;
/// Bytes of the file each scp slot sends up and fetches back.
const SCP_BYTES: usize = 128 * 1024;
const TOKEN_PREFIX: &str = "GHLOAD.";

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and must not start a
    // minutes-long run.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "gatehouse-bench load: run it with `cargo bench -p gatehouse-bench --bench load`; \
             skipping."
        );
        return Ok(());
    }
    let options = Options::parse(std::env::args().skip(1))?;
    let nofile = raise_nofile()?;
    let binary = gatehouse_binary()?;
    println!("gateway binary: {}", binary.display());
    let results_dir = results_dir(&binary).join("load");
    std::fs::create_dir_all(&results_dir)?;

    let work = tempfile::Builder::new()
        .prefix("gatehouse-load-")
        .tempdir()
        .context("creating the work directory")?;
    let mut demo = Demo::start(&binary, work.path())?;
    let account = TargetAccount::prepare(work.path(), &demo.data_dir)?;
    let client_key = work.path().join("client_key");
    demo.add_client_key(&client_key)?;
    let target = LoadTarget::start(work.path(), &demo.data_dir)?;
    target.register(&demo, &account.name)?;
    println!(
        "load target: sshd 127.0.0.1:{} ({}), account {}",
        target.port, target.tuning, account.name
    );
    let login = format!("{GATEWAY_USER}@{}@{LOAD_ASSET}", account.name);
    let probe = Command::new("ssh")
        .args(client_options(CIPHER))
        .arg("-i")
        .arg(&client_key)
        .arg("-p")
        .arg(demo.gateway_port.to_string())
        .arg(format!("{login}@127.0.0.1"))
        .arg("echo ok")
        .stdin(Stdio::null())
        .output()?;
    if !probe.status.success() || probe.stdout != b"ok\n" {
        bail!(
            "the gateway path to {LOAD_ASSET} does not work: {}{}\nthe target's sshd log:\n{}",
            String::from_utf8_lossy(&probe.stdout),
            String::from_utf8_lossy(&probe.stderr),
            target.log()
        );
    }

    let mut report = Report::new(&options, &binary, nofile);
    // Idle: the gateway after start-up and one session, settled.
    std::thread::sleep(Duration::from_secs(3));
    report.rss_idle_kib = rss_kib(demo.pid(), "VmRSS:");

    // From here on this thread, and so every thread and process it starts (the runtime's
    // workers, scp), runs at the client's niceness; the gateway and the sshd were started
    // before, and a restart undoes it.
    if options.nice > 0 {
        run_checked(
            Command::new("renice")
                .args(["-n", &options.nice.to_string(), "-p"])
                .arg(std::process::id().to_string()),
        )?;
        demo.set_restart_prefix(vec![
            "nice".into(),
            "-n".into(),
            format!("-{}", options.nice),
        ]);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let scratch = work.path().join("scp");
    std::fs::create_dir_all(&scratch)?;
    let setup = Arc::new(Setup {
        gateway_port: demo.gateway_port,
        login,
        key: client_key,
        scratch,
        direct: (
            target.port,
            account.name.clone(),
            demo.data_dir.join("demo-target/account_key"),
        ),
        run: format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
        ),
    });
    let shared = Arc::new(Shared::new());
    let outcome = runtime.block_on(run_load(
        &options,
        &setup,
        &shared,
        &mut demo,
        target.child.id(),
        &mut report,
    ));
    // Whatever happened, the clients stop before the gateway does.
    shared.stop.store(true, Ordering::SeqCst);
    runtime.shutdown_timeout(Duration::from_secs(10));
    let outcome = outcome.and_then(|()| {
        check_audit(&demo, &shared, &mut report)?;
        if options.kill {
            // The store must open without the gateway too.
            demo.stop();
            let out = demo.cli(["audit", "list", "--limit", "1", "--json"])?;
            report.store_opens_offline = out.status.success();
            if !out.status.success() {
                report.failures.push(format!(
                    "the store does not open after the restart and stop: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        Ok(())
    });
    if let Err(e) = &outcome {
        report.failures.push(format!("{e:#}"));
    }
    report.recordings_bytes = dir_size(&demo.data_dir.join("recordings"));
    report.load_after = load_average();
    report.finish(&shared);

    let text = report.render();
    println!("\n{text}");
    let stem = if options.kill {
        "results-kill"
    } else {
        "results"
    };
    let json_text = serde_json::to_string_pretty(&report.json())?;
    std::fs::write(results_dir.join(format!("{stem}.json")), &json_text)?;
    std::fs::write(results_dir.join(format!("{stem}.txt")), &text)?;
    let acked: String = lock(&shared.acked)
        .iter()
        .map(|a| format!("{}\n", json!({"kind": a.kind.label(), "token": a.token})))
        .collect();
    std::fs::write(results_dir.join(format!("{stem}-acked.jsonl")), acked)?;
    let history = results_dir.join("history");
    std::fs::create_dir_all(&history)?;
    let dated = format!("{stem}-{}", report.date.replace(':', ""));
    std::fs::write(history.join(format!("{dated}.json")), &json_text)?;
    std::fs::write(history.join(format!("{dated}.txt")), &text)?;
    println!(
        "results: {} (and {})",
        results_dir.join(format!("{stem}.json")).display(),
        history.join(format!("{dated}.json")).display()
    );
    if !report.failures.is_empty() || report.error_total() > 0 {
        let log = demo.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("gateway log (last lines, newest first):");
        for line in tail {
            eprintln!("  {line}");
        }
    }
    drop(target);
    drop(demo);
    drop(account);
    if options.keep {
        println!("work directory kept: {}", work.keep().display());
    }
    if report.error_total() > 0 {
        bail!(
            "{} errors (by kind: {:?})",
            report.error_total(),
            report.errors
        );
    }
    if let Some(first) = report.failures.first() {
        bail!("the run failed: {first}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Options

/// From the command line after `--`: `--sessions N` (500), `--minutes M` (10; fractions work),
/// `--kill`, `--ramp R` (sessions started per second, 10), `--echo-ms` (2000), `--exec-ms`
/// (2000), `--scp-pause-ms` (2000), `--nice N` (5: the client side's niceness), `--direct N`
/// (10 control pty sessions straight to the target, not counted in the N), `--mix P,E,S`
/// (60,30,10: shares of pty, exec and scp slots), `--keep` (keep the work directory).
struct Options {
    sessions: usize,
    hold: Duration,
    kill: bool,
    ramp_per_s: f64,
    echo_every: Duration,
    exec_every: Duration,
    scp_pause: Duration,
    nice: u32,
    /// Keep the work directory (data directory, logs) for a look afterwards.
    keep: bool,
    /// Control pty sessions straight to the target, besides the N.
    direct: usize,
    /// Shares of pty, exec and scp slots.
    mix: [u32; 3],
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options> {
        let mut options = Options {
            sessions: 500,
            hold: Duration::from_secs(600),
            kill: false,
            ramp_per_s: 10.0,
            echo_every: Duration::from_millis(2000),
            exec_every: Duration::from_millis(2000),
            scp_pause: Duration::from_millis(2000),
            nice: 5,
            keep: false,
            direct: 10,
            mix: [60, 30, 10],
        };
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<f64> {
                let v = args.next().ok_or_else(|| anyhow!("{name} needs a value"))?;
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| anyhow!("{name} {v}: not a number"))
            };
            let millis = |v: f64| Duration::from_millis(v as u64);
            match arg.as_str() {
                "--bench" => {}
                "--kill" => options.kill = true,
                "--keep" => options.keep = true,
                "--sessions" => options.sessions = value("--sessions")? as usize,
                "--minutes" => options.hold = Duration::from_secs_f64(value("--minutes")? * 60.0),
                "--ramp" => options.ramp_per_s = value("--ramp")?.max(0.1),
                "--echo-ms" => options.echo_every = millis(value("--echo-ms")?.max(10.0)),
                "--exec-ms" => options.exec_every = millis(value("--exec-ms")?.max(10.0)),
                "--scp-pause-ms" => options.scp_pause = millis(value("--scp-pause-ms")?),
                "--nice" => options.nice = value("--nice")?.min(19.0) as u32,
                "--direct" => options.direct = value("--direct")? as usize,
                "--mix" => {
                    let v = args.next().unwrap_or_default();
                    let parts: Vec<u32> = v.split(',').filter_map(|p| p.parse().ok()).collect();
                    options.mix = match parts[..] {
                        [p, e, s] if p + e + s > 0 => [p, e, s],
                        _ => bail!("--mix {v}: want PTY,EXEC,SCP shares, e.g. 60,30,10"),
                    };
                }
                other => bail!(
                    "unknown argument {other} (--sessions N, --minutes M, --kill, --ramp R, \
                     --echo-ms, --exec-ms, --scp-pause-ms, --nice N, --direct N, --mix P,E,S, --keep)"
                ),
            }
        }
        if options.sessions == 0 {
            bail!("--sessions must be at least 1");
        }
        Ok(options)
    }
}

/// Raises this process's soft RLIMIT_NOFILE (which the gateway, the sshd and every client
/// inherit) to at least 65536 when the hard limit may be raised (root outside a sandbox), else to
/// the hard limit. Returns the soft limit now.
fn raise_nofile() -> Result<u64> {
    let read = || -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut numbers = line
            .split_whitespace()
            .filter_map(|w| w.parse::<u64>().ok());
        Some((numbers.next()?, numbers.next()?))
    };
    let (soft, hard) = read().context("reading /proc/self/limits")?;
    let set = |limit: u64| {
        Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={limit}:{limit}"))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if soft < 65536 && !set(hard.max(65536)) && soft < hard && !set(hard) {
        bail!("cannot raise RLIMIT_NOFILE from {soft} to {hard} (prlimit)");
    }
    Ok(read().map_or(soft, |(soft, _)| soft))
}

// ---------------------------------------------------------------------------------------------
// The tuned target

/// An OpenSSH sshd with the demo target's keys and settings plus limits for the load, on its
/// own port; stopped when dropped.
struct LoadTarget {
    child: Child,
    port: u16,
    tuning: String,
    host_key: PathBuf,
    dir: PathBuf,
}

impl LoadTarget {
    fn start(work: &Path, data_dir: &Path) -> Result<LoadTarget> {
        // sshd re-executes itself for each connection: its paths must be absolute.
        let demo_target = std::path::absolute(data_dir.join("demo-target"))?;
        let dir = std::path::absolute(work.join("load-sshd"))?;
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let tuning = "MaxStartups 1000:30:2000, MaxSessions 64, LoginGraceTime 120";
        // The account reads its authorized_keys as itself: a copy outside the data directory,
        // which the gateway keeps private (and makes private again when it starts).
        let authorized = dir.join("authorized_keys");
        std::fs::copy(demo_target.join("authorized_keys"), &authorized)
            .context("copying the demo target's authorized_keys")?;
        run_checked(Command::new("chmod").arg("644").arg(&authorized))?;
        run_checked(Command::new("chmod").arg("755").arg(&dir))?;
        let mut config = format!(
            "Port {port}\nPidFile {}\nAuthorizedKeysFile {}\nMaxStartups 1000:30:2000\n\
             MaxSessions 64\nLoginGraceTime 120\nUseDNS no\nLogLevel ERROR\n",
            dir.join("sshd.pid").display(),
            authorized.display()
        );
        // The demo target's settings (host key, no PAM, internal-sftp), less its port, pid file
        // and authorized_keys.
        let demo_config = std::fs::read_to_string(demo_target.join("sshd_config"))
            .context("reading the demo target's sshd_config")?;
        for line in demo_config.lines() {
            let replaced = ["Port ", "PidFile ", "AuthorizedKeysFile "];
            if !replaced.iter().any(|p| line.starts_with(p)) {
                config.push_str(line);
                config.push('\n');
            }
        }
        let config_path = dir.join("sshd_config");
        std::fs::write(&config_path, config)?;
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("sshd.log"))?))
            .spawn()
            .context("starting the load target's sshd")?;
        let mut target = LoadTarget {
            child,
            port,
            tuning: tuning.into(),
            host_key: demo_target.join("ssh_host_ed25519_key"),
            dir: dir.clone(),
        };
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(status) = target.child.try_wait()? {
                bail!(
                    "the load target's sshd exited ({status}): {}",
                    std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("the load target's sshd did not listen within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(target)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Adds the asset (its host key pinned) and the account on it, granted to the gateway user.
    fn register(&self, demo: &Demo, account: &str) -> Result<()> {
        let public = Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&self.host_key)
            .output()?;
        if !public.status.success() {
            bail!("ssh-keygen -y failed");
        }
        let host_key = String::from_utf8_lossy(&public.stdout).trim().to_string();
        let out = demo.cli([
            "asset",
            "add",
            LOAD_ASSET,
            "--address",
            "127.0.0.1",
            "--port",
            &self.port.to_string(),
            "--host-key",
            &host_key,
        ])?;
        if !out.status.success() {
            bail!(
                "gatehouse asset add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        demo.add_account_on(account, LOAD_ASSET)
    }
}

impl Drop for LoadTarget {
    fn drop(&mut self) {
        gatehouse_bench::stop_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state of the clients

/// What every client task needs to reach the gateway.
struct Setup {
    gateway_port: u16,
    /// `demo@ACCOUNT@load-target`.
    login: String,
    key: PathBuf,
    /// Where the scp slots keep their files.
    scratch: PathBuf,
    /// Tells this run's tokens apart.
    run: String,
    /// The control sessions' way to the target itself, bypassing the gateway: port, account,
    /// the demo's account key.
    direct: (u16, String, PathBuf),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pty,
    Exec,
    Scp,
}

impl Kind {
    /// The kinds of `n` slots in the proportions `mix` (pty, exec, scp), interleaved so that
    /// the ramp mixes them: each kind's slots spread evenly over the sequence.
    fn slots(n: usize, mix: [u32; 3]) -> Vec<Kind> {
        let total = mix.iter().sum::<u32>().max(1) as usize;
        let exec = n * mix[1] as usize / total;
        let scp = n * mix[2] as usize / total;
        let counts = [n - exec - scp, exec, scp];
        let mut order: Vec<(f64, Kind)> = [Kind::Pty, Kind::Exec, Kind::Scp]
            .into_iter()
            .zip(counts)
            .flat_map(|(kind, count)| {
                (0..count).map(move |i| ((i as f64 + 0.5) / count as f64, kind))
            })
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        order.into_iter().map(|(_, kind)| kind).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AckKind {
    /// The session's login completed and its first command answered.
    Session,
    /// An exec channel's exit status arrived.
    Exec,
}

impl AckKind {
    fn label(self) -> &'static str {
        match self {
            AckKind::Session => "session",
            AckKind::Exec => "exec",
        }
    }
}

struct Ack {
    kind: AckKind,
    /// The token in the acknowledged command.
    token: String,
}

struct EchoSample {
    /// Seconds since the ramp started.
    at: f64,
    micros: f64,
}

#[derive(Default)]
struct Counters {
    logins: AtomicU64,
    echoes: AtomicU64,
    execs: AtomicU64,
    scp_up: AtomicU64,
    scp_down: AtomicU64,
    /// Open right now.
    pty_open: AtomicI64,
    exec_open: AtomicI64,
    scp_running: AtomicI64,
    /// Control sessions straight to the target.
    direct_open: AtomicI64,
}

struct Shared {
    /// The hold is over: finish the current operation and close.
    stop: AtomicBool,
    /// The gateway was killed: failures from now on are the kill's doing, not errors.
    killed: AtomicBool,
    counters: Counters,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Failures after the kill, by kind.
    cut: Mutex<BTreeMap<&'static str, u64>>,
    error_examples: Mutex<Vec<String>>,
    echo: Mutex<Vec<EchoSample>>,
    /// The control sessions' echoes.
    echo_direct: Mutex<Vec<EchoSample>>,
    acked: Mutex<Vec<Ack>>,
    started: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new() -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            counters: Counters::default(),
            errors: Mutex::default(),
            cut: Mutex::default(),
            error_examples: Mutex::default(),
            echo: Mutex::default(),
            echo_direct: Mutex::default(),
            acked: Mutex::default(),
            started: Instant::now(),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn error(&self, kind: &'static str, slot: usize, error: &anyhow::Error) {
        if self.killed.load(Ordering::SeqCst) {
            *lock(&self.cut).entry(kind).or_default() += 1;
            return;
        }
        *lock(&self.errors).entry(kind).or_default() += 1;
        let mut examples = lock(&self.error_examples);
        if examples.len() < 20 {
            let line = format!(
                "{:.1}s slot {slot} {kind}: {error:#}",
                self.started.elapsed().as_secs_f64()
            );
            eprintln!("error: {line}");
            examples.push(line);
        }
    }

    fn ack(&self, kind: AckKind, token: &str) {
        lock(&self.acked).push(Ack {
            kind,
            token: token.to_string(),
        });
    }
}

/// A small deterministic generator for jitter (no need for real randomness).
struct Jitter(u64);

impl Jitter {
    fn new(seed: usize) -> Jitter {
        Jitter((seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `every` ± 20%.
    fn around(&mut self, every: Duration) -> Duration {
        every.mul_f64(0.8 + 0.4 * self.next())
    }
}

/// Sleeps `pause`, cut short by the stop; true if the run goes on.
async fn pause(shared: &Shared, pause: Duration) -> bool {
    let until = Instant::now() + pause;
    while Instant::now() < until {
        if shared.stopping() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(250))).await;
    }
    !shared.stopping()
}

async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {} s", limit.as_secs()))?
}

type Handle = russh::client::Handle<AcceptAnyHostKey>;
type Channel = russh::Channel<russh::client::Msg>;

/// Logs in through the gateway, or (`direct`) to the target itself.
async fn login(setup: &Setup, shared: &Shared, direct: bool) -> Result<Handle> {
    let (label, port, user, key) = if direct {
        let (port, user, key) = &setup.direct;
        ("direct", *port, user.as_str(), key.as_path())
    } else {
        (
            "gateway",
            setup.gateway_port,
            setup.login.as_str(),
            setup.key.as_path(),
        )
    };
    let handle = within(
        Duration::from_secs(60),
        "login",
        russh_login(label, port, user, key, CIPHER),
    )
    .await?;
    if !direct {
        shared.counters.logins.fetch_add(1, Ordering::Relaxed);
    }
    Ok(handle)
}

async fn disconnect(handle: Handle) {
    let _ = handle
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
}

// ---------------------------------------------------------------------------------------------
// The three kinds of client

/// A pty session: `stty raw -echo; cat`, one byte there and back every ~`echo_every`. After an
/// error it logs in again (a new session) after a second. A `direct` one (a control) bypasses
/// the gateway: its echoes tell what the loaded machine and sshd add by themselves.
async fn pty_slot(
    slot: usize,
    setup: Arc<Setup>,
    shared: Arc<Shared>,
    every: Duration,
    direct: bool,
) {
    let mut jitter = Jitter::new(slot);
    let mut connection = 0;
    while !shared.stopping() {
        connection += 1;
        let token = format!("{TOKEN_PREFIX}{}.{slot}.{connection}.pty", setup.run);
        match pty_session(&setup, &shared, &token, every, &mut jitter, direct).await {
            Ok(()) => return,
            Err((kind, e)) => {
                shared.error(kind, slot, &e);
                if !pause(&shared, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
}

type SlotError = (&'static str, anyhow::Error);

async fn pty_session(
    setup: &Setup,
    shared: &Shared,
    token: &str,
    every: Duration,
    jitter: &mut Jitter,
    direct: bool,
) -> Result<(), SlotError> {
    let handle = login(setup, shared, direct)
        .await
        .map_err(|e| ("login", e))?;
    let mut channel = within(Duration::from_secs(60), "pty start", async {
        let mut channel = handle.channel_open_session().await?;
        channel
            .request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await?;
        channel
            .exec(
                true,
                format!(": {token}; stty raw -echo && echo READY && exec cat"),
            )
            .await?;
        let mut seen = Vec::new();
        while let Some(msg) = channel.wait().await {
            match msg {
                russh::ChannelMsg::Data { data } => {
                    seen.extend_from_slice(&data);
                    if seen.windows(5).any(|w| w == b"READY") {
                        return Ok(channel);
                    }
                }
                russh::ChannelMsg::Failure => bail!("the pty or exec request was refused"),
                russh::ChannelMsg::Close | russh::ChannelMsg::Eof => break,
                _ => {}
            }
        }
        bail!(
            "channel closed before READY (got {:?})",
            String::from_utf8_lossy(&seen)
        )
    })
    .await
    .map_err(|e| ("pty-start", e))?;
    let open = if direct {
        &shared.counters.direct_open
    } else {
        shared.ack(AckKind::Session, token);
        &shared.counters.pty_open
    };
    open.fetch_add(1, Ordering::SeqCst);
    // Let the rest of the start-up output arrive, and spread the sessions' echoes.
    let mut result = Ok(());
    let mut byte = b'a';
    let mut wait = every.mul_f64(jitter.next()) + Duration::from_millis(200);
    while pause(shared, wait).await {
        wait = jitter.around(every);
        byte = if byte == b'z' { b'a' } else { byte + 1 };
        match within(
            Duration::from_secs(10),
            "echo",
            round_trip(&mut channel, byte),
        )
        .await
        {
            Ok(rtt) => {
                if !direct {
                    shared.counters.echoes.fetch_add(1, Ordering::Relaxed);
                }
                let samples = if direct {
                    &shared.echo_direct
                } else {
                    &shared.echo
                };
                lock(samples).push(EchoSample {
                    at: shared.started.elapsed().as_secs_f64(),
                    micros: rtt.as_secs_f64() * 1e6,
                });
            }
            Err(e) => {
                result = Err(("echo", e));
                break;
            }
        }
    }
    open.fetch_sub(1, Ordering::SeqCst);
    let _ = channel.eof().await;
    let _ = channel.close().await;
    disconnect(handle).await;
    result
}

async fn round_trip(channel: &mut Channel, byte: u8) -> Result<Duration> {
    let started = Instant::now();
    channel.data_bytes(vec![byte]).await?;
    while let Some(msg) = channel.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } if data.contains(&byte) => {
                return Ok(started.elapsed());
            }
            russh::ChannelMsg::Close | russh::ChannelMsg::Eof => break,
            _ => {}
        }
    }
    bail!("the channel closed during an echo")
}

/// A session that runs `head -c 65536 /dev/zero` on a new exec channel every ~`every`.
async fn exec_slot(slot: usize, setup: Arc<Setup>, shared: Arc<Shared>, every: Duration) {
    let mut jitter = Jitter::new(slot);
    let mut connection = 0;
    while !shared.stopping() {
        connection += 1;
        match exec_session(&setup, &shared, slot, connection, every, &mut jitter).await {
            Ok(()) => return,
            Err((kind, e)) => {
                shared.error(kind, slot, &e);
                if !pause(&shared, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
}

async fn exec_session(
    setup: &Setup,
    shared: &Shared,
    slot: usize,
    connection: usize,
    every: Duration,
    jitter: &mut Jitter,
) -> Result<(), SlotError> {
    let handle = login(setup, shared, false)
        .await
        .map_err(|e| ("login", e))?;
    let mut result = Ok(());
    let mut n = 0;
    let mut wait = Duration::ZERO;
    let mut counted = false;
    while pause(shared, wait).await {
        wait = jitter.around(every);
        n += 1;
        let token = format!("{TOKEN_PREFIX}{}.{slot}.{connection}.e{n}", setup.run);
        match within(Duration::from_secs(60), "exec", exec_once(&handle, &token)).await {
            Ok(()) => {
                shared.counters.execs.fetch_add(1, Ordering::Relaxed);
                if n == 1 {
                    shared.ack(AckKind::Session, &token);
                    shared.counters.exec_open.fetch_add(1, Ordering::SeqCst);
                    counted = true;
                }
                shared.ack(AckKind::Exec, &token);
            }
            Err(e) => {
                result = Err(("exec", e));
                break;
            }
        }
    }
    if counted {
        shared.counters.exec_open.fetch_sub(1, Ordering::SeqCst);
    }
    disconnect(handle).await;
    result
}

async fn exec_once(handle: &Handle, token: &str) -> Result<()> {
    let mut channel = handle.channel_open_session().await?;
    channel
        .exec(true, format!(": {token}; head -c {EXEC_BYTES} /dev/zero"))
        .await?;
    let mut bytes = 0u64;
    let mut nonzero = false;
    let mut status = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } => {
                bytes += data.len() as u64;
                nonzero |= data.iter().any(|b| *b != 0);
            }
            russh::ChannelMsg::ExtendedData { data, .. } => {
                bail!("stderr: {}", String::from_utf8_lossy(&data))
            }
            russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            russh::ChannelMsg::Failure => bail!("the exec request was refused"),
            _ => {}
        }
    }
    if status != Some(0) || bytes != EXEC_BYTES || nonzero {
        bail!(
            "exit status {status:?}, {bytes} of {EXEC_BYTES} bytes{}",
            if nonzero { ", not all zero" } else { "" }
        );
    }
    Ok(())
}

/// Real OpenSSH `scp` processes: a file up, the same file back, compared byte for byte; then a
/// pause. SFTP and the legacy protocol (`-O`) alternate.
async fn scp_slot(slot: usize, setup: Arc<Setup>, shared: Arc<Shared>, every: Duration) {
    let mut jitter = Jitter::new(slot);
    let mut content = vec![0u8; SCP_BYTES];
    for b in content.iter_mut() {
        *b = (jitter.next() * 256.0) as u8;
    }
    let source = setup.scratch.join(format!("{slot}.src"));
    let back = setup.scratch.join(format!("{slot}.back"));
    // The upload lands on the target (this machine), as the target account.
    let remote = PathBuf::from(format!("/dev/shm/gatehouse-load-{}-{slot}", setup.run));
    if let Err(e) = std::fs::write(&source, &content) {
        shared.error("scp-setup", slot, &e.into());
        return;
    }
    let mut round = 0u64;
    let mut wait = every.mul_f64(jitter.next());
    while pause(&shared, wait).await {
        wait = jitter.around(every);
        round += 1;
        let legacy = round.is_multiple_of(2);
        shared.counters.scp_running.fetch_add(1, Ordering::SeqCst);
        let up = scp(
            &setup,
            legacy,
            source.as_os_str(),
            &remote_arg(&setup, &remote),
        )
        .await;
        let up = up.and_then(|()| same_content(&remote, &content));
        let outcome = match up {
            Ok(()) => {
                shared.counters.scp_up.fetch_add(1, Ordering::Relaxed);
                let _ = std::fs::remove_file(&back);
                let down = scp(
                    &setup,
                    legacy,
                    &remote_arg(&setup, &remote),
                    back.as_os_str(),
                )
                .await
                .and_then(|()| same_content(&back, &content));
                match down {
                    Ok(()) => {
                        shared.counters.scp_down.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => Err(("scp-down", e)),
                }
            }
            Err(e) => Err(("scp-up", e)),
        };
        shared.counters.scp_running.fetch_sub(1, Ordering::SeqCst);
        if let Err((kind, e)) = outcome {
            shared.error(kind, slot, &e);
        }
    }
    let _ = std::fs::remove_file(&remote);
}

fn remote_arg(setup: &Setup, remote: &Path) -> std::ffi::OsString {
    format!("{}@127.0.0.1:{}", setup.login, remote.display()).into()
}

fn same_content(path: &Path, expected: &[u8]) -> Result<()> {
    let found = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if found != expected {
        bail!(
            "{}: {} bytes, not the {} sent (or different bytes)",
            path.display(),
            found.len(),
            expected.len()
        );
    }
    Ok(())
}

async fn scp(
    setup: &Setup,
    legacy: bool,
    from: &std::ffi::OsStr,
    to: &std::ffi::OsStr,
) -> Result<()> {
    let mut cmd = tokio::process::Command::new("scp");
    if legacy {
        cmd.arg("-O");
    }
    cmd.arg("-q")
        .args(client_options(CIPHER))
        .arg("-i")
        .arg(&setup.key)
        .arg("-P")
        .arg(setup.gateway_port.to_string())
        .arg(from)
        .arg(to)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = within(Duration::from_secs(120), "scp", async {
        Ok(cmd.output().await?)
    })
    .await?;
    if !out.status.success() {
        bail!(
            "scp{} ({}): {}",
            if legacy { " -O" } else { "" },
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The run

async fn run_load(
    options: &Options,
    setup: &Arc<Setup>,
    shared: &Arc<Shared>,
    demo: &mut Demo,
    target_pid: u32,
    report: &mut Report,
) -> Result<()> {
    let kinds = Kind::slots(options.sessions, options.mix);
    let persistent = kinds.iter().filter(|k| **k != Kind::Scp).count() as i64;
    report.slots =
        [Kind::Pty, Kind::Exec, Kind::Scp].map(|k| kinds.iter().filter(|x| **x == k).count());
    let sampler = Sampler::start(demo.pid(), demo.gateway_port, shared.clone());
    let ramp_started = Instant::now();
    println!(
        "ramp: {} sessions ({} pty, {} exec, {} scp slots) at {} per second",
        options.sessions, report.slots[0], report.slots[1], report.slots[2], options.ramp_per_s
    );
    let mut tasks = Vec::with_capacity(kinds.len() + options.direct);
    // The control sessions start with the ramp, spread over it.
    let control_every = (kinds.len() / options.direct.max(1)).max(1);
    for (slot, kind) in kinds.iter().enumerate() {
        let due = ramp_started + Duration::from_secs_f64(slot as f64 / options.ramp_per_s);
        tokio::time::sleep_until(due.into()).await;
        let control = slot / control_every;
        if slot % control_every == 0 && control < options.direct {
            tasks.push(tokio::spawn(pty_slot(
                kinds.len() + control,
                setup.clone(),
                shared.clone(),
                options.echo_every,
                true,
            )));
        }
        let (setup, shared) = (setup.clone(), shared.clone());
        tasks.push(match kind {
            Kind::Pty => tokio::spawn(pty_slot(slot, setup, shared, options.echo_every, false)),
            Kind::Exec => tokio::spawn(exec_slot(slot, setup, shared, options.exec_every)),
            Kind::Scp => tokio::spawn(scp_slot(slot, setup, shared, options.scp_pause)),
        });
    }
    report.ramp_spawn_seconds = ramp_started.elapsed().as_secs_f64();
    // Full load: every persistent session open.
    let open = |s: &Shared| {
        s.counters.pty_open.load(Ordering::SeqCst) + s.counters.exec_open.load(Ordering::SeqCst)
    };
    let controls = options.direct.min(kinds.len()) as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while open(shared) < persistent || shared.counters.direct_open.load(Ordering::SeqCst) < controls
    {
        if Instant::now() > deadline {
            bail!(
                "only {} of {persistent} persistent sessions open 120 s after the ramp",
                open(shared)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full_at = shared.started.elapsed().as_secs_f64();
    report.full_load_seconds = ramp_started.elapsed().as_secs_f64();
    println!(
        "full load after {:.1} s: {} persistent sessions open; holding for {:.0} s",
        report.full_load_seconds,
        open(shared),
        options.hold.as_secs_f64()
    );
    let cpu_before = proc_cpu(demo.pid()).map(|c| c.own);
    let self_before = proc_cpu(std::process::id()).map(|c| c.own + c.children);
    let machine_before = machine_cpu();
    let hold_started = Instant::now();
    let mut next_status = Instant::now() + Duration::from_secs(30);
    let mut target_processes = None;
    while hold_started.elapsed() < options.hold {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if target_processes.is_none() && hold_started.elapsed() >= options.hold / 2 {
            // The target's processes at full load (sshd per connection, shells, cat).
            target_processes = Some(descendants(target_pid).len());
        }
        if Instant::now() >= next_status {
            next_status += Duration::from_secs(30);
            let c = &shared.counters;
            println!(
                "  {:>4.0} s: open pty {} exec {} scp {}; echoes {} execs {} scp {}/{}; errors {}; \
                 gateway RSS {} KiB",
                hold_started.elapsed().as_secs_f64(),
                c.pty_open.load(Ordering::SeqCst),
                c.exec_open.load(Ordering::SeqCst),
                c.scp_running.load(Ordering::SeqCst),
                c.echoes.load(Ordering::Relaxed),
                c.execs.load(Ordering::Relaxed),
                c.scp_up.load(Ordering::Relaxed),
                c.scp_down.load(Ordering::Relaxed),
                lock(&shared.errors).values().sum::<u64>(),
                rss_kib(demo.pid(), "VmRSS:").unwrap_or(0),
            );
        }
    }
    let hold_seconds = hold_started.elapsed().as_secs_f64();
    let end_at = shared.started.elapsed().as_secs_f64();
    report.hold_seconds = hold_seconds;
    report.target_processes = target_processes;
    report.gateway_cpu_seconds = proc_cpu(demo.pid()).and_then(|c| Some(c.own - cpu_before?));
    report.client_cpu_seconds =
        proc_cpu(std::process::id()).and_then(|c| Some(c.own + c.children - self_before?));
    report.machine_busy = machine_cpu().and_then(|after| {
        let (busy0, total0) = machine_before?;
        let (busy1, total1) = after;
        Some((busy1 - busy0) as f64 / (total1 - total0).max(1) as f64)
    });
    report.gateway_hwm_kib = rss_kib(demo.pid(), "VmHWM:");
    report.window = (full_at, end_at);
    report.samples = sampler.take();

    if options.kill {
        let c = &shared.counters;
        report.open_at_kill = Some([
            c.pty_open.load(Ordering::SeqCst),
            c.exec_open.load(Ordering::SeqCst),
            c.scp_running.load(Ordering::SeqCst),
        ]);
        shared.killed.store(true, Ordering::SeqCst);
        demo.kill_hard()?;
        println!("kill -9 of the gateway at full load");
        shared.stop.store(true, Ordering::SeqCst);
        finish_tasks(tasks).await;
        let restarted = Instant::now();
        let restart = tokio::task::block_in_place(|| demo.restart());
        restart.context("starting the gateway again on the same data directory")?;
        report.restart_seconds = Some(restarted.elapsed().as_secs_f64());
        println!(
            "gateway started again in {:.1} s",
            restarted.elapsed().as_secs_f64()
        );
    } else {
        shared.stop.store(true, Ordering::SeqCst);
        let closing = Instant::now();
        finish_tasks(tasks).await;
        report.close_seconds = Some(closing.elapsed().as_secs_f64());
        // Memory once every session has ended (what the allocator gave back).
        tokio::time::sleep(Duration::from_secs(5)).await;
        report.rss_after_kib = rss_kib(demo.pid(), "VmRSS:");
    }
    sampler.stop();
    Ok(())
}

async fn finish_tasks(tasks: Vec<tokio::task::JoinHandle<()>>) {
    let all = futures_join(tasks);
    if tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .is_err()
    {
        eprintln!("some client tasks had not finished 120 s after the stop");
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

/// `(busy, total)` jiffies of all CPUs, from /proc/stat.
fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest counted in user)
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// Established TCP connections whose local port is `port` (IPv4), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let wanted = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut fields = l.split_whitespace();
            let local = fields.nth(1).unwrap_or("");
            let state = fields.nth(1).unwrap_or("");
            local.ends_with(&wanted) && state == "01"
        })
        .count()
}

#[derive(Clone)]
struct Sample {
    at: f64,
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    connections: usize,
    pty: i64,
    exec: i64,
    scp: i64,
    gateway_cpu: f64,
}

/// Samples the gateway and the client gauges every 2 s on a thread of its own.
struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(pid: u32, port: u16, shared: Arc<Shared>) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, flag) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                let Ok(status) = status else { return };
                let field = |name: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                        .unwrap_or(0)
                };
                let c = &shared.counters;
                let sample = Sample {
                    at: shared.started.elapsed().as_secs_f64(),
                    rss_kib: field("VmRSS:"),
                    hwm_kib: field("VmHWM:"),
                    threads: field("Threads:"),
                    connections: established_to(port),
                    pty: c.pty_open.load(Ordering::SeqCst),
                    exec: c.exec_open.load(Ordering::SeqCst),
                    scp: c.scp_running.load(Ordering::SeqCst),
                    gateway_cpu: proc_cpu(pid).map_or(0.0, |c| c.own),
                };
                lock(&into).push(sample);
                std::thread::sleep(Duration::from_secs(2));
            }
        });
        Sampler { samples, stop }
    }

    fn take(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The audit check

#[derive(Default)]
struct AuditCheck {
    events: usize,
    acked_sessions: usize,
    acked_execs: usize,
    /// Acknowledged sessions whose first command's `channel_opened` is missing.
    sessions_without_channel: Vec<String>,
    sessions_without_login: Vec<String>,
    sessions_without_start: Vec<String>,
    execs_missing: Vec<String>,
    /// Events that appear more than once for one session or token.
    duplicates: Vec<String>,
    /// Sessions (any, scp included) the trail shows as started.
    sessions_started: usize,
    sessions_ended: usize,
    sessions_interrupted: usize,
    /// Session records without an end, after the run.
    records_open: usize,
    records_interrupted: usize,
}

impl AuditCheck {
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut add = |what: &str, list: &[String]| {
            if !list.is_empty() {
                out.push(format!(
                    "{} {what} (first: {})",
                    list.len(),
                    list.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        };
        add(
            "acknowledged sessions without their first command's channel_opened",
            &self.sessions_without_channel,
        );
        add(
            "acknowledged sessions without login_ok",
            &self.sessions_without_login,
        );
        add(
            "acknowledged sessions without target_connect_ok",
            &self.sessions_without_start,
        );
        add(
            "acknowledged execs without channel_opened",
            &self.execs_missing,
        );
        add("duplicate audit events", &self.duplicates);
        out
    }
}

fn token_in(text: &str) -> Option<&str> {
    let start = text.find(TOKEN_PREFIX)?;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c == ';' || c == '`' || c.is_whitespace())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn check_audit(demo: &Demo, shared: &Shared, report: &mut Report) -> Result<()> {
    let out = demo.cli(["audit", "list", "--json"])?;
    if !out.status.success() {
        bail!(
            "gatehouse audit list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let events: Vec<Value> =
        serde_json::from_slice(&out.stdout).context("parsing `audit list --json`")?;
    let mut check = AuditCheck {
        events: events.len(),
        ..Default::default()
    };
    // Per session id: how many login_ok, target_connect_ok, session_ended.
    let mut per_session: HashMap<&str, [usize; 3]> = HashMap::new();
    // Per token: the sessions whose channel_opened quotes it.
    let mut per_token: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in &events {
        let kind = event["kind"].as_str().unwrap_or("");
        let session = event["session"].as_str().unwrap_or("");
        let slot = match kind {
            "login_ok" => Some(0),
            "target_connect_ok" => Some(1),
            "session_ended" => Some(2),
            _ => None,
        };
        if let Some(i) = slot {
            per_session.entry(session).or_default()[i] += 1;
            if kind == "session_ended" && event["fields"]["interrupted"] == true {
                check.sessions_interrupted += 1;
            }
        }
        if kind == "channel_opened"
            && let Some(token) = token_in(event["detail"].as_str().unwrap_or(""))
        {
            per_token.entry(token).or_default().push(session);
        }
    }
    for (session, [logins, starts, ends]) in &per_session {
        if *logins > 1 || *starts > 1 || *ends > 1 {
            check.duplicates.push(format!(
                "session {session}: {logins} login_ok, {starts} target_connect_ok, {ends} \
                 session_ended"
            ));
        }
        if *starts > 0 {
            check.sessions_started += 1;
        }
        if *ends > 0 {
            check.sessions_ended += 1;
        }
    }
    for (token, sessions) in &per_token {
        if sessions.len() > 1 {
            check
                .duplicates
                .push(format!("{token}: {} channel_opened", sessions.len()));
        }
    }
    for ack in lock(&shared.acked).iter() {
        let sessions = per_token.get(ack.token.as_str());
        match ack.kind {
            AckKind::Exec => {
                check.acked_execs += 1;
                if sessions.is_none() {
                    check.execs_missing.push(ack.token.clone());
                }
            }
            AckKind::Session => {
                check.acked_sessions += 1;
                let Some(session) = sessions.and_then(|s| s.first()) else {
                    check.sessions_without_channel.push(ack.token.clone());
                    continue;
                };
                let counts = per_session.get(session).copied().unwrap_or_default();
                if counts[0] == 0 {
                    check
                        .sessions_without_login
                        .push(format!("{session} ({})", ack.token));
                }
                if counts[1] == 0 {
                    check
                        .sessions_without_start
                        .push(format!("{session} ({})", ack.token));
                }
            }
        }
    }
    let out = demo.cli(["session", "list", "--json"])?;
    if out.status.success() {
        let records: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        check.records_open = records.iter().filter(|r| r["ended"].is_null()).count();
        check.records_interrupted = records
            .iter()
            .filter(|r| {
                r["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("interrupted"))
            })
            .count();
    } else {
        report.failures.push(format!(
            "gatehouse session list failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    report.failures.extend(check.failures());
    if check.records_open > 0 {
        report.failures.push(format!(
            "{} session records still open after the run",
            check.records_open
        ));
    }
    if check.sessions_ended < check.sessions_started {
        report.failures.push(format!(
            "{} sessions started but only {} have a session_ended event",
            check.sessions_started, check.sessions_ended
        ));
    }
    report.audit = Some(check);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reporting

struct Report {
    date: String,
    cpus: usize,
    cpu_model: String,
    kernel: String,
    openssh: String,
    binary: PathBuf,
    sessions: usize,
    ramp_per_s: f64,
    hold_planned: f64,
    kill: bool,
    echo_ms: u128,
    exec_ms: u128,
    scp_pause_ms: u128,
    nice: u32,
    nofile: u64,
    slots: [usize; 3],
    load_before: String,
    load_after: String,
    ramp_spawn_seconds: f64,
    full_load_seconds: f64,
    hold_seconds: f64,
    /// Seconds since the start of the clients: full load reached, hold ended.
    window: (f64, f64),
    rss_idle_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    gateway_hwm_kib: Option<u64>,
    gateway_cpu_seconds: Option<f64>,
    client_cpu_seconds: Option<f64>,
    machine_busy: Option<f64>,
    target_processes: Option<usize>,
    samples: Vec<Sample>,
    open_at_kill: Option<[i64; 3]>,
    restart_seconds: Option<f64>,
    close_seconds: Option<f64>,
    store_opens_offline: bool,
    recordings_bytes: u64,
    audit: Option<AuditCheck>,
    failures: Vec<String>,
    // Filled by `finish`.
    errors: BTreeMap<&'static str, u64>,
    cut: BTreeMap<&'static str, u64>,
    error_examples: Vec<String>,
    counts: [u64; 5],
    echo_full: Vec<f64>,
    echo_all: usize,
    /// The control sessions' echoes at full load, microseconds.
    echo_direct_full: Vec<f64>,
    direct: usize,
}

impl Report {
    fn new(options: &Options, binary: &Path, nofile: u64) -> Report {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default();
        Report {
            date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            kernel: command_line("uname", &["-sr"]),
            openssh: command_line("ssh", &["-V"]),
            binary: binary.to_path_buf(),
            sessions: options.sessions,
            ramp_per_s: options.ramp_per_s,
            hold_planned: options.hold.as_secs_f64(),
            kill: options.kill,
            echo_ms: options.echo_every.as_millis(),
            exec_ms: options.exec_every.as_millis(),
            scp_pause_ms: options.scp_pause.as_millis(),
            nice: options.nice,
            nofile,
            slots: [0; 3],
            load_before: load_average(),
            load_after: String::new(),
            ramp_spawn_seconds: 0.0,
            full_load_seconds: 0.0,
            hold_seconds: 0.0,
            window: (0.0, 0.0),
            rss_idle_kib: None,
            rss_after_kib: None,
            gateway_hwm_kib: None,
            gateway_cpu_seconds: None,
            client_cpu_seconds: None,
            machine_busy: None,
            target_processes: None,
            samples: Vec::new(),
            open_at_kill: None,
            restart_seconds: None,
            close_seconds: None,
            store_opens_offline: false,
            recordings_bytes: 0,
            audit: None,
            failures: Vec::new(),
            errors: BTreeMap::new(),
            cut: BTreeMap::new(),
            error_examples: Vec::new(),
            counts: [0; 5],
            echo_full: Vec::new(),
            echo_all: 0,
            echo_direct_full: Vec::new(),
            direct: options.direct,
        }
    }

    fn finish(&mut self, shared: &Shared) {
        self.errors = lock(&shared.errors).clone();
        self.cut = lock(&shared.cut).clone();
        self.error_examples = lock(&shared.error_examples).clone();
        let c = &shared.counters;
        self.counts = [
            c.logins.load(Ordering::Relaxed),
            c.echoes.load(Ordering::Relaxed),
            c.execs.load(Ordering::Relaxed),
            c.scp_up.load(Ordering::Relaxed),
            c.scp_down.load(Ordering::Relaxed),
        ];
        let echo = lock(&shared.echo);
        self.echo_all = echo.len();
        let (from, to) = self.window;
        let in_window = |samples: &[EchoSample]| -> Vec<f64> {
            samples
                .iter()
                .filter(|s| s.at >= from && s.at <= to)
                .map(|s| s.micros)
                .collect()
        };
        self.echo_full = in_window(&echo);
        self.echo_direct_full = in_window(&lock(&shared.echo_direct));
    }

    fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Samples taken at full load.
    fn full(&self) -> impl Iterator<Item = &Sample> {
        let (from, to) = self.window;
        self.samples
            .iter()
            .filter(move |s| s.at >= from && s.at <= to)
    }

    fn rss_full_kib(&self) -> Option<f64> {
        median(&self.full().map(|s| s.rss_kib as f64).collect::<Vec<_>>())
    }

    /// Median established connections to the gateway at full load, and the range.
    fn connections(&self) -> (Option<f64>, usize, usize) {
        let c: Vec<f64> = self.full().map(|s| s.connections as f64).collect();
        let min = self.full().map(|s| s.connections).min().unwrap_or(0);
        let max = self.full().map(|s| s.connections).max().unwrap_or(0);
        (median(&c), min, max)
    }

    fn rss_per_session_kib(&self) -> Option<f64> {
        let (connections, _, _) = self.connections();
        Some((self.rss_full_kib()? - self.rss_idle_kib? as f64) / connections?.max(1.0))
    }

    /// p50, p99, max and mean in milliseconds.
    fn echo_stats(samples: &[f64]) -> [f64; 4] {
        let at = |p| percentile(samples, p).unwrap_or(f64::NAN) / 1000.0;
        [
            median(samples).unwrap_or(f64::NAN) / 1000.0,
            at(99.0),
            at(100.0),
            mean(samples).unwrap_or(f64::NAN) / 1000.0,
        ]
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        let kib = |k: Option<f64>| k.map_or("?".into(), |k| format!("{:.1} MiB", k / 1024.0));
        line(format!(
            "Gatehouse load: {} sessions through one gateway, {} ({} CPUs, {}; {}; {})",
            self.sessions, self.date, self.cpus, self.cpu_model, self.kernel, self.openssh
        ));
        line(format!(
            "mix: {} pty (echo every {} ms), {} exec (`head -c {EXEC_BYTES}` every {} ms), \
             {} scp slots ({} KiB up and down, {} ms pause); clients at nice {}; \
             RLIMIT_NOFILE {}",
            self.slots[0],
            self.echo_ms,
            self.slots[1],
            self.exec_ms,
            self.slots[2],
            SCP_BYTES / 1024,
            self.scp_pause_ms,
            self.nice,
            self.nofile
        ));
        line(format!(
            "load average {} before, {} after; machine CPU busy during the hold: {}",
            self.load_before,
            self.load_after,
            self.machine_busy
                .map_or("?".into(), |b| format!("{:.0}%", b * 100.0))
        ));
        line(String::new());
        line(format!(
            "ramp: {:.1} sessions/s planned, all started in {:.1} s, full load after {:.1} s",
            self.ramp_per_s, self.ramp_spawn_seconds, self.full_load_seconds
        ));
        let (conn, min, max) = self.connections();
        line(format!(
            "held {:.0} s at full load: connections to the gateway median {} (min {min}, max \
             {max}); target processes {}",
            self.hold_seconds,
            conn.map_or("?".into(), |c| format!("{c:.0}")),
            self.target_processes.map_or("?".into(), |n| n.to_string())
        ));
        line(format!(
            "operations: {} logins, {} echoes, {} execs, {} scp up, {} scp down",
            self.counts[0], self.counts[1], self.counts[2], self.counts[3], self.counts[4]
        ));
        line(format!(
            "errors: {}{}",
            self.error_total(),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(" {:?}", self.errors)
            }
        ));
        for example in &self.error_examples {
            line(format!("  {example}"));
        }
        line(String::new());
        let [p50, p99, max, avg] = Report::echo_stats(&self.echo_full);
        line(format!(
            "echo at full load ({} samples): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms, \
             mean {avg:.2} ms",
            self.echo_full.len()
        ));
        let [p50, p99, max, avg] = Report::echo_stats(&self.echo_direct_full);
        line(format!(
            "  control, {} pty sessions straight to the target's sshd ({} samples): p50 \
             {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms, mean {avg:.2} ms",
            self.direct,
            self.echo_direct_full.len()
        ));
        line(format!(
            "gateway RSS: idle {}, full load {} (median), peak (VmHWM) {}, after close {}; \
             per session {}",
            kib(self.rss_idle_kib.map(|k| k as f64)),
            kib(self.rss_full_kib()),
            kib(self.gateway_hwm_kib.map(|k| k as f64)),
            kib(self.rss_after_kib.map(|k| k as f64)),
            self.rss_per_session_kib()
                .map_or("?".into(), |k| format!("{k:.0} KiB")),
        ));
        let threads = self.full().map(|s| s.threads).max().unwrap_or(0);
        line(format!(
            "gateway CPU during the hold: {} ({} threads at most); clients: {}",
            self.gateway_cpu_seconds.map_or("?".into(), |c| format!(
                "{c:.1} s = {:.2} cores",
                c / self.hold_seconds.max(1e-9)
            )),
            threads,
            self.client_cpu_seconds.map_or("?".into(), |c| format!(
                "{c:.1} s = {:.2} cores",
                c / self.hold_seconds.max(1e-9)
            )),
        ));
        line(format!(
            "recordings written: {:.1} MiB",
            self.recordings_bytes as f64 / (1024.0 * 1024.0)
        ));
        if self.kill {
            line(String::new());
            if let Some([pty, exec, scp]) = self.open_at_kill {
                line(format!(
                    "kill -9 at full load: {pty} pty, {exec} exec sessions and {scp} scp \
                     transfers open; cut afterwards: {:?}",
                    self.cut
                ));
            }
            line(format!(
                "restart on the same data directory: {}; store opens without the gateway: {}",
                self.restart_seconds
                    .map_or("failed".into(), |s| format!("serving after {s:.1} s")),
                if self.store_opens_offline {
                    "yes"
                } else {
                    "no"
                }
            ));
        }
        if let Some(a) = &self.audit {
            line(format!(
                "audit: {} events; acknowledged {} sessions and {} execs: missing {} sessions' \
                 channel, {} logins, {} session starts, {} execs; {} duplicates",
                a.events,
                a.acked_sessions,
                a.acked_execs,
                a.sessions_without_channel.len(),
                a.sessions_without_login.len(),
                a.sessions_without_start.len(),
                a.execs_missing.len(),
                a.duplicates.len()
            ));
            line(format!(
                "  sessions started {}, ended {} ({} as interrupted); session records open {}, \
                 interrupted {}",
                a.sessions_started,
                a.sessions_ended,
                a.sessions_interrupted,
                a.records_open,
                a.records_interrupted
            ));
        }
        for failure in &self.failures {
            line(format!("FAILED: {failure}"));
        }
        let verdict = if self.error_total() == 0 && self.failures.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        line(format!("result: {verdict}"));
        out
    }

    fn json(&self) -> Value {
        let [p50, p99, max, avg] = Report::echo_stats(&self.echo_full);
        let [d50, d99, dmax, davg] = Report::echo_stats(&self.echo_direct_full);
        let (conn, min, max_conn) = self.connections();
        let audit = self.audit.as_ref().map(|a| {
            json!({
                "events": a.events,
                "acknowledged_sessions": a.acked_sessions,
                "acknowledged_execs": a.acked_execs,
                "sessions_without_channel": a.sessions_without_channel,
                "sessions_without_login": a.sessions_without_login,
                "sessions_without_start": a.sessions_without_start,
                "execs_missing": a.execs_missing,
                "duplicates": a.duplicates,
                "sessions_started": a.sessions_started,
                "sessions_ended": a.sessions_ended,
                "sessions_interrupted": a.sessions_interrupted,
                "records_open": a.records_open,
                "records_interrupted": a.records_interrupted,
            })
        });
        json!({
            "date": self.date,
            "machine": {
                "cpus": self.cpus,
                "cpu_model": self.cpu_model,
                "kernel": self.kernel,
                "openssh": self.openssh,
                "load_average_before": self.load_before,
                "load_average_after": self.load_after,
                "busy_fraction_during_hold": self.machine_busy,
            },
            "settings": {
                "sessions": self.sessions,
                "slots": {"pty": self.slots[0], "exec": self.slots[1], "scp": self.slots[2]},
                "ramp_per_second": self.ramp_per_s,
                "hold_seconds_planned": self.hold_planned,
                "kill": self.kill,
                "echo_every_ms": self.echo_ms,
                "exec_every_ms": self.exec_ms,
                "exec_bytes": EXEC_BYTES,
                "scp_bytes": SCP_BYTES,
                "scp_pause_ms": self.scp_pause_ms,
                "client_nice": self.nice,
                "nofile": self.nofile,
                "cipher": CIPHER,
                "gateway_binary": self.binary,
                "recording": true,
            },
            "ramp_spawn_seconds": self.ramp_spawn_seconds,
            "full_load_seconds": self.full_load_seconds,
            "hold_seconds": self.hold_seconds,
            "connections_at_full_load": {"median": conn, "min": min, "max": max_conn},
            "target_processes": self.target_processes,
            "operations": {
                "logins": self.counts[0],
                "echoes": self.counts[1],
                "execs": self.counts[2],
                "scp_up": self.counts[3],
                "scp_down": self.counts[4],
            },
            "errors": self.errors,
            "error_total": self.error_total(),
            "error_examples": self.error_examples,
            "echo_ms_at_full_load": {
                "samples": self.echo_full.len(),
                "p50": p50, "p99": p99, "max": max, "mean": avg,
            },
            "echo_samples_all": self.echo_all,
            "control_direct_echo_ms_at_full_load": {
                "sessions": self.direct,
                "samples": self.echo_direct_full.len(),
                "p50": d50, "p99": d99, "max": dmax, "mean": davg,
            },
            "gateway": {
                "rss_idle_kib": self.rss_idle_kib,
                "rss_full_load_median_kib": self.rss_full_kib(),
                "rss_per_session_kib": self.rss_per_session_kib(),
                "vmhwm_kib": self.gateway_hwm_kib,
                "rss_after_close_kib": self.rss_after_kib,
                "cpu_seconds_during_hold": self.gateway_cpu_seconds,
                "threads_max": self.full().map(|s| s.threads).max(),
            },
            "client_cpu_seconds_during_hold": self.client_cpu_seconds,
            "recordings_bytes": self.recordings_bytes,
            "kill": self.kill.then(|| json!({
                "open_at_kill": self.open_at_kill,
                "cut_after_kill": self.cut,
                "restart_seconds": self.restart_seconds,
                "store_opens_without_gateway": self.store_opens_offline,
            })),
            "close_seconds": self.close_seconds,
            "audit": audit,
            "failures": self.failures,
            "samples": self.samples.iter().map(|s| json!({
                "t": s.at, "rss_kib": s.rss_kib, "hwm_kib": s.hwm_kib, "threads": s.threads,
                "connections": s.connections, "pty": s.pty, "exec": s.exec, "scp": s.scp,
                "gateway_cpu_s": s.gateway_cpu,
            })).collect::<Vec<_>>(),
        })
    }
}
