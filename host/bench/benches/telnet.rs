//! The Telnet relay of `gatehouse serve` against the direct path to the same target, in one run:
//! `cargo bench -p gatehouse-bench --bench telnet`. docs/BENCHMARKS.md ("Telnet") describes the
//! method, the knobs and the figures.
//!
//! The target is Debian's `in.telnetd` (inetutils-telnetd), started per connection by a small
//! accept loop (this binary again, in a process of its own: [`inetd`]) with `--exec-login` to a
//! login script that knows one account and then runs `sh -i` with the prompt `target$ `. The
//! gateway is `gatehouse serve --telnet-listen` with the target as an asset (`--telnet-port`, the
//! prompt as `--telnet-success`), its account's password in the vault and a grant.
//!
//! The client is this process: a minimal Telnet client ([`Telnet`], on the `gatehouse-telnet`
//! codec) that accepts ECHO and SGA, offers a terminal type and a window size, refuses the
//! rest, and reads with a 64 KiB buffer. It behaves the same on both paths:
//!
//! - gateway: `login: alice@bench@tn1`, the gateway password; the gateway logs in to telnetd
//!   with the vault's password and records the session (asciicast);
//! - direct: straight to telnetd, `login: bench` and the account's password.
//!
//! Measured, alternating the paths (and which goes first): downstream (the target `cat`s a text
//! file through its pty; bytes counted until a marker), upstream (`head -c N > /dev/null` on a
//! raw, non-echoing pty while the client sends N bytes), keystroke echo (one byte to `cat` on a
//! raw pty and back), and login time (connect to the shell prompt). CPU per role from `/proc`:
//! the client (this process), the gateway, and the target (telnetd, the shell and its commands).
//!
//! Writes `telnet.json` and `telnet.txt` to `<target>/gatehouse-bench/` and a dated copy to
//! `history/` there. Knobs are environment variables; see [`Settings`].

use anyhow::{Context, Result, bail};
use gatehouse_bench::serve::{Serve, cli_in, port_open};
use gatehouse_bench::{
    MarkerScan, command_line, env_number, free_port, gatehouse_binary, load_average, mean, median,
    percentile, proc_cpu, results_dir, tree_cpu, tree_cpu_since,
};
use gatehouse_telnet::codec::{self, Decoder, Event, Verb};
use gatehouse_telnet::options::{ECHO, NAWS, SGA, TERMINAL_TYPE};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Set by the bench on the accept loop it starts from its own binary.
const ROLE: &str = "GATEHOUSE_BENCH_TELNET_ROLE";
const TELNETD: &str = "/usr/sbin/telnetd";

const GATEWAY_USER: &str = "alice";
const GATEWAY_PASSWORD: &str = "Bench-Gateway-Pass-1";
const TARGET_ACCOUNT: &str = "bench";
const VAULT_PASSWORD: &str = "Bench-Vault-Pass-1";
const ASSET: &str = "tn1";
const PROMPT: &str = "target$ ";

fn main() -> Result<()> {
    match std::env::var(ROLE).as_deref() {
        Ok("inetd") => return inetd::run(),
        Ok(other) => bail!("{ROLE}={other}: not a role of this binary (inetd)"),
        Err(_) => {}
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and must not start a
    // minutes-long run.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "gatehouse-bench telnet: run it with `cargo bench -p gatehouse-bench --bench telnet`; skipping."
        );
        return Ok(());
    }
    let settings = Settings::from_env()?;
    for (program, package) in [
        (TELNETD, "inetutils-telnetd"),
        ("/bin/sh", "dash"),
        ("stty", "coreutils"),
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!("{program} is missing (Debian package {package}; scripts/install-test-deps.sh)");
        }
    }
    let binary = gatehouse_binary()?;
    println!("gateway binary: {}", binary.display());
    let results_dir = results_dir(&binary);
    let work = tempfile::Builder::new()
        .prefix("gatehouse-bench-telnet-")
        .tempdir()
        .context("creating the work directory")?;
    let text = TextFile::write(settings.down_bytes)?;
    let bench = Bench::start(&binary, work.path(), &text)?;
    let load_before = load_average();

    println!("checking both paths");
    for via in [Via::Gateway, Via::Direct] {
        let mut session = bench
            .login(via)
            .with_context(|| format!("the {} path does not work", via.label()))?;
        session.run_to_marker("echo @@OK-$((6*7))@@", "@@OK-42@@")?;
        session.close();
    }
    bench.gateway.settle();

    let mut runs = Vec::new();
    for rep in 0..settings.reps {
        for via in order(rep) {
            let mut run = bench
                .measure(&settings, &text, via, rep)
                .with_context(|| format!("rep {} on the {} path", rep + 1, via.label()))?;
            run.gateway_after = bench.gateway.settle();
            println!(
                "rep {}/{} {:>7}: down {:7.1} MiB/s, up {:6.1} MiB/s, echo p50 {:5.0} µs, login {:5.1} ms, gateway after: {:.2} CPU s",
                rep + 1,
                settings.reps,
                via.label(),
                run.down.mib_s(),
                run.up.mib_s(),
                median(&run.echo_us).unwrap_or(f64::NAN),
                run.login_ms,
                run.gateway_after,
            );
            runs.push(run);
        }
    }
    println!("login: {} runs per path, alternated", settings.setup_runs);
    let mut setup: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for i in 0..settings.setup_runs {
        for via in order(i) {
            let started = Instant::now();
            let session = bench.login(via)?;
            setup[via.index()].push(started.elapsed().as_secs_f64() * 1e3);
            session.close();
        }
    }

    let report = Report {
        settings: &settings,
        binary: &binary,
        date: utc_now(),
        load_before,
        load_after: load_average(),
        gateway_peak_rss_kib: bench.gateway.peak_rss_kib(),
        recordings_bytes: gatehouse_bench::dir_size(&bench.gateway.data.join("recordings")),
        runs: &runs,
        setup: &setup,
    };
    let text_report = report.render();
    println!("\n{text_report}");
    let json_text = serde_json::to_string_pretty(&report.json())?;
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;
    std::fs::write(results_dir.join("telnet.json"), &json_text)?;
    std::fs::write(results_dir.join("telnet.txt"), &text_report)?;
    let history = results_dir.join("history");
    std::fs::create_dir_all(&history)?;
    let dated = format!("telnet-{}", report.date.replace(':', ""));
    std::fs::write(history.join(format!("{dated}.json")), &json_text)?;
    std::fs::write(history.join(format!("{dated}.txt")), &text_report)?;
    println!(
        "results: {} (and {})",
        results_dir.join("telnet.json").display(),
        history.join(format!("{dated}.json")).display()
    );
    Ok(())
}

/// Which path goes first in round `i`: the gateway in even rounds, the direct path in odd ones.
fn order(i: usize) -> [Via; 2] {
    if i.is_multiple_of(2) {
        [Via::Gateway, Via::Direct]
    } else {
        [Via::Direct, Via::Gateway]
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

/// From the environment, all optional: `GATEHOUSE_BENCH_TELNET_MIB` (128: the text `cat`
/// downstream), `GATEHOUSE_BENCH_TELNET_UP_MIB` (16: sent upstream), `GATEHOUSE_BENCH_TELNET_REPS`
/// (5 per path), `GATEHOUSE_BENCH_TELNET_ECHO_SAMPLES` (200 per path and rep),
/// `GATEHOUSE_BENCH_TELNET_ECHO_GAP_MS` (10), `GATEHOUSE_BENCH_TELNET_SETUP_RUNS` (20 per path);
/// `GATEHOUSE_BIN` skips the build.
struct Settings {
    down_bytes: u64,
    up_bytes: u64,
    reps: usize,
    echo_samples: usize,
    echo_gap: Duration,
    setup_runs: usize,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        Ok(Settings {
            down_bytes: env_number("GATEHOUSE_BENCH_TELNET_MIB", 128)?.max(1) << 20,
            up_bytes: env_number("GATEHOUSE_BENCH_TELNET_UP_MIB", 16)?.max(1) << 20,
            reps: env_number("GATEHOUSE_BENCH_TELNET_REPS", 5)?.max(1) as usize,
            echo_samples: env_number("GATEHOUSE_BENCH_TELNET_ECHO_SAMPLES", 200)? as usize,
            echo_gap: Duration::from_millis(env_number("GATEHOUSE_BENCH_TELNET_ECHO_GAP_MS", 10)?),
            setup_runs: env_number("GATEHOUSE_BENCH_TELNET_SETUP_RUNS", 20)? as usize,
        })
    }

    fn json(&self) -> Value {
        json!({
            "down_mib": self.down_bytes >> 20,
            "up_mib": self.up_bytes >> 20,
            "reps": self.reps,
            "echo_samples_per_rep": self.echo_samples,
            "echo_gap_ms": self.echo_gap.as_millis() as u64,
            "setup_runs": self.setup_runs,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The text the target prints

/// A text file in `/dev/shm` (no disk on the target side), removed when dropped: numbered lines
/// of words, no `@` (the markers' byte) and nothing a terminal would interpret.
struct TextFile {
    path: PathBuf,
    /// Lines in the file: each becomes `\r\n` on the pty, one byte more than in the file.
    lines: u64,
}

impl TextFile {
    fn write(bytes: u64) -> Result<TextFile> {
        let path = PathBuf::from(format!(
            "/dev/shm/gatehouse-bench-telnet-{}.txt",
            std::process::id()
        ));
        let words = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
        ];
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        let mut written = 0u64;
        let mut line = String::new();
        let mut n = 0u64;
        while written < bytes {
            line.clear();
            line.push_str(&format!("{n:08} "));
            for i in 0..10 {
                line.push_str(words[((n * 7 + i * 3) % 16) as usize]);
                line.push(' ');
            }
            line.push_str("0123456789\n");
            let take = (bytes - written).min(line.len() as u64) as usize;
            // The last line may be cut; end it with a newline all the same.
            if take < line.len() {
                let mut cut = line.as_bytes()[..take].to_vec();
                if let Some(last) = cut.last_mut() {
                    *last = b'\n';
                }
                file.write_all(&cut)?;
            } else {
                file.write_all(line.as_bytes())?;
            }
            written += take as u64;
            n += 1;
        }
        file.flush()?;
        Ok(TextFile { path, lines: n })
    }
}

impl Drop for TextFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// The target and the gateway

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

    fn index(self) -> usize {
        match self {
            Via::Gateway => 0,
            Via::Direct => 1,
        }
    }
}

/// The accept loop (this binary in the `inetd` role), stopped when dropped (its stdin closes).
struct Target {
    child: Child,
    port: u16,
}

impl Target {
    fn start(work: &Path) -> Result<Target> {
        let program = work.join("login.sh");
        std::fs::write(&program, login_program(TARGET_ACCOUNT, VAULT_PASSWORD))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))?;
        }
        let port = free_port()?;
        let child = Command::new(std::env::current_exe()?)
            .env(ROLE, "inetd")
            .env("GATEHOUSE_BENCH_TELNET_PORT", port.to_string())
            .env("GATEHOUSE_BENCH_TELNET_LOGIN", &program)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the accept loop")?;
        let target = Target { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(port) {
            if Instant::now() > deadline {
                bail!("the accept loop did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(target)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks like login(1), knows one account, then runs `sh -i` with the prompt `target$ `.
fn login_program(user: &str, password: &str) -> String {
    format!(
        r#"#!/bin/sh
printf 'bench target\n'
printf 'target login: '
IFS= read -r name
stty -echo
printf 'Password: '
IFS= read -r password
stty echo
printf '\n'
if [ "$name" = '{user}' ] && [ "$password" = '{password}' ]; then
  PS1='{PROMPT}' exec /bin/sh -i
fi
sleep 1
printf 'Login incorrect\n'
exit 1
"#
    )
}

struct Bench {
    target: Target,
    gateway: Serve,
    telnet_port: u16,
}

impl Bench {
    fn start(binary: &Path, work: &Path, text: &TextFile) -> Result<Bench> {
        let target = Target::start(work)?;
        println!(
            "target: in.telnetd per connection on 127.0.0.1:{}, {} MiB of text in {}",
            target.port,
            std::fs::metadata(&text.path)?.len() >> 20,
            text.path.display()
        );
        let data = work.join("data");
        let account = format!("{TARGET_ACCOUNT}@{ASSET}");
        let port = target.port.to_string();
        let success = format!("{}$", regex_escape(PROMPT.trim_end()));
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
                    "--telnet-port",
                    &port,
                    "--telnet-success",
                    &success,
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
            cli_in(binary, &data, args, stdin)?;
        }
        let gateway = Serve::start(binary, &data, &work.join("serve.log"), &["--telnet-listen"])?;
        let telnet_port = gateway.ports[0];
        println!(
            "gateway: gatehouse serve, Telnet on 127.0.0.1:{telnet_port}, data {}",
            data.display()
        );
        Ok(Bench {
            target,
            gateway,
            telnet_port,
        })
    }

    /// A logged-in session at the shell prompt.
    fn login(&self, via: Via) -> Result<Telnet> {
        let (port, user, password) = match via {
            Via::Gateway => (
                self.telnet_port,
                format!("{GATEWAY_USER}@{TARGET_ACCOUNT}@{ASSET}"),
                GATEWAY_PASSWORD,
            ),
            Via::Direct => (self.target.port, TARGET_ACCOUNT.to_string(), VAULT_PASSWORD),
        };
        let mut session = Telnet::connect(port)?;
        let result = (|| {
            session.expect("login: ")?;
            session.send_line(&user)?;
            session.expect("Password: ")?;
            session.send_line(password)?;
            session.expect(PROMPT)
        })();
        if let Err(error) = result {
            let log = match via {
                Via::Gateway => format!("\nserve.log:\n{}", self.gateway.log_tail()),
                Via::Direct => String::new(),
            };
            bail!("logging in on the {} path: {error:#}{log}", via.label());
        }
        Ok(session)
    }

    fn cpu(&self) -> CpuReading {
        CpuReading {
            client: proc_cpu(std::process::id()).map_or(0.0, |c| c.own),
            gateway: proc_cpu(self.gateway.pid()).map_or(0.0, |c| c.own),
            target: tree_cpu(self.target.child.id()),
        }
    }

    /// One session: login, downstream, upstream, echo.
    fn measure(&self, settings: &Settings, text: &TextFile, via: Via, rep: usize) -> Result<Run> {
        let started = Instant::now();
        let mut session = self.login(via)?;
        let login_ms = started.elapsed().as_secs_f64() * 1e3;

        // Downstream: the target cats the file through its pty.
        let before = self.cpu();
        let t = Instant::now();
        let received = session.run_to_marker(
            &format!("cat {}; echo @@END-$((6*7))@@", text.path.display()),
            "@@END-42@@",
        )?;
        let down = Transfer {
            bytes: settings.down_bytes,
            seconds: t.elapsed().as_secs_f64(),
            wire_bytes: received,
            cpu: self.cpu().since(&before),
        };
        let expected = settings.down_bytes + text.lines;
        if received < expected {
            bail!("received {received} bytes of output, expected at least {expected}");
        }

        // Upstream: a raw, non-echoing pty; `head` reads exactly what is sent.
        session.run_to_marker(
            &format!(
                "stty raw -echo; echo @@READY-$((6*7))@@; head -c {} > /dev/null; stty sane; echo @@UP-$((6*7))@@",
                settings.up_bytes
            ),
            "@@READY-42@@",
        )?;
        let before = self.cpu();
        let t = Instant::now();
        session.send_payload(settings.up_bytes)?;
        session.expect("@@UP-42@@")?;
        let up = Transfer {
            bytes: settings.up_bytes,
            seconds: t.elapsed().as_secs_f64(),
            wire_bytes: settings.up_bytes,
            cpu: self.cpu().since(&before),
        };

        // Echo: one byte to `cat` on a raw pty and back.
        session.run_to_marker(
            "stty raw -echo; echo @@READY-$((6*7))@@; exec cat",
            "@@READY-42@@",
        )?;
        let mut echo_us = Vec::with_capacity(settings.echo_samples);
        for i in 0..settings.echo_samples {
            let byte = b'a' + (i % 26) as u8;
            let t = Instant::now();
            session.write(&[byte])?;
            session.expect_byte(byte)?;
            echo_us.push(t.elapsed().as_secs_f64() * 1e6);
            std::thread::sleep(settings.echo_gap);
        }
        session.close();
        Ok(Run {
            via,
            rep,
            gateway_after: 0.0,
            login_ms,
            down,
            up,
            echo_us,
        })
    }
}

/// `text` with the regular expression metacharacters escaped.
fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The client

/// A minimal Telnet client on the `gatehouse-telnet` codec. It agrees to the server's ECHO and
/// SGA, offers TERMINAL-TYPE (`XTERM`) and NAWS (80x24) when asked, refuses everything else,
/// and never starts a negotiation itself, so it behaves the same towards telnetd and the
/// gateway.
struct Telnet {
    stream: TcpStream,
    decoder: Decoder,
    events: Vec<Event>,
    buffer: Vec<u8>,
    /// Options enabled on our side (WILL) and on the server's (DO).
    local: HashSet<u8>,
    remote: HashSet<u8>,
    /// Data read past the last thing expected.
    pending: Vec<u8>,
}

const TIMEOUT: Duration = Duration::from_secs(120);

impl Telnet {
    fn connect(port: u16) -> Result<Telnet> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        Ok(Telnet {
            stream,
            decoder: Decoder::default(),
            events: Vec::new(),
            buffer: vec![0; 64 * 1024],
            local: HashSet::new(),
            remote: HashSet::new(),
            pending: Vec::new(),
        })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.stream.write_all(data).context("writing to the server")
    }

    fn send_line(&mut self, line: &str) -> Result<()> {
        let mut out = Vec::with_capacity(line.len() + 2);
        codec::escape_data(line.as_bytes(), &mut out);
        out.extend_from_slice(b"\r\n");
        self.write(&out)
    }

    /// `bytes` of printable ASCII (no CR, LF, IAC or `@`), in 64 KiB writes.
    fn send_payload(&mut self, bytes: u64) -> Result<()> {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| b'A' + (i % 26) as u8).collect();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            self.write(&chunk[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Reads once, answers negotiations and appends the data to `self.pending`. `false` at the
    /// end of the stream.
    fn read_some(&mut self) -> Result<bool> {
        let n = match self.stream.read(&mut self.buffer) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(true),
            Err(e) => return Err(e).context("reading from the server"),
        };
        if n == 0 {
            return Ok(false);
        }
        self.events.clear();
        self.decoder
            .decode(&self.buffer[..n], &mut self.events)
            .context("the server's Telnet stream")?;
        let mut answer = Vec::new();
        for event in std::mem::take(&mut self.events) {
            match event {
                Event::Data(data) => {
                    if self.pending.is_empty() {
                        self.pending = data;
                    } else {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Event::Negotiation(verb, option) => self.negotiate(verb, option, &mut answer),
                Event::Subnegotiation(TERMINAL_TYPE, payload) if payload.first() == Some(&1) => {
                    codec::encode_subnegotiation(TERMINAL_TYPE, b"\x00XTERM", &mut answer);
                }
                Event::Subnegotiation(..) | Event::Command(_) => {}
            }
        }
        if !answer.is_empty() {
            self.write(&answer)?;
        }
        Ok(true)
    }

    fn negotiate(&mut self, verb: Verb, option: u8, out: &mut Vec<u8>) {
        match verb {
            Verb::Do if option == TERMINAL_TYPE || option == NAWS => {
                if self.local.insert(option) {
                    codec::encode_negotiation(Verb::Will, option, out);
                    if option == NAWS {
                        codec::encode_subnegotiation(NAWS, &[0, 80, 0, 24], out);
                    }
                }
            }
            Verb::Do => codec::encode_negotiation(Verb::Wont, option, out),
            Verb::Dont => {
                if self.local.remove(&option) {
                    codec::encode_negotiation(Verb::Wont, option, out);
                }
            }
            Verb::Will if option == ECHO || option == SGA => {
                if self.remote.insert(option) {
                    codec::encode_negotiation(Verb::Do, option, out);
                }
            }
            Verb::Will => codec::encode_negotiation(Verb::Dont, option, out),
            Verb::Wont => {
                if self.remote.remove(&option) {
                    codec::encode_negotiation(Verb::Dont, option, out);
                }
            }
        }
    }

    /// Reads until `marker` has been seen; the data bytes read up to its end. What came after
    /// it stays pending.
    fn expect(&mut self, marker: &str) -> Result<u64> {
        let deadline = Instant::now() + TIMEOUT;
        let mut scan = MarkerScan::new(marker.as_bytes());
        let mut count = 0u64;
        let mut seen = Vec::new();
        loop {
            if let Some(end) = scan.feed(&self.pending) {
                count += end as u64;
                self.pending.drain(..end);
                return Ok(count);
            }
            count += self.pending.len() as u64;
            if seen.len() < 4096 {
                seen.extend_from_slice(&self.pending[..self.pending.len().min(4096)]);
            }
            self.pending.clear();
            if Instant::now() > deadline {
                bail!(
                    "no {marker:?} within {} s; the start of what came: {:?}",
                    TIMEOUT.as_secs(),
                    String::from_utf8_lossy(&seen)
                );
            }
            if !self.read_some()? {
                bail!(
                    "the server closed the connection before {marker:?}; it wrote: {:?}",
                    String::from_utf8_lossy(&seen)
                );
            }
        }
    }

    /// Reads until the data byte `byte` arrives (what comes before it is dropped).
    fn expect_byte(&mut self, byte: u8) -> Result<()> {
        let marker = [byte];
        self.expect(std::str::from_utf8(&marker)?)?;
        Ok(())
    }

    /// Runs a command line and reads until `marker`; the data bytes read.
    fn run_to_marker(&mut self, command: &str, marker: &str) -> Result<u64> {
        self.pending.clear();
        self.send_line(command)?;
        self.expect(marker)
    }

    fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements

struct CpuReading {
    client: f64,
    gateway: f64,
    target: std::collections::HashMap<u32, f64>,
}

impl CpuReading {
    fn since(&self, before: &CpuReading) -> Cpu {
        Cpu {
            client: self.client - before.client,
            gateway: self.gateway - before.gateway,
            target: tree_cpu_since(&self.target, &before.target),
        }
    }
}

/// CPU seconds per role.
#[derive(Clone, Copy, Debug, Default)]
struct Cpu {
    client: f64,
    gateway: f64,
    target: f64,
}

struct Transfer {
    /// Payload bytes (the file's size; what was sent upstream).
    bytes: u64,
    /// Data bytes the client received (downstream: the file with `\r\n` line ends, and the
    /// command's echo and the marker).
    wire_bytes: u64,
    seconds: f64,
    cpu: Cpu,
}

impl Transfer {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB / self.seconds
    }

    /// CPU seconds per GiB of payload.
    fn per_gib(&self, cpu: f64) -> f64 {
        cpu / (self.bytes as f64 / GIB)
    }

    fn json(&self) -> Value {
        json!({
            "bytes": self.bytes,
            "wire_bytes": self.wire_bytes,
            "seconds": self.seconds,
            "mib_s": self.mib_s(),
            "cpu_seconds": {
                "client": self.cpu.client,
                "gateway": self.cpu.gateway,
                "target": self.cpu.target,
            },
        })
    }
}

struct Run {
    via: Via,
    rep: usize,
    /// Gateway CPU seconds after the session, until it was idle again (sealing the recording:
    /// hashing, signing, indexing it for search).
    gateway_after: f64,
    login_ms: f64,
    down: Transfer,
    up: Transfer,
    echo_us: Vec<f64>,
}

// ---------------------------------------------------------------------------------------------
// Report

/// Which transfer of a run a table row is about.
type Pick = fn(&Run) -> &Transfer;

struct Report<'a> {
    settings: &'a Settings,
    binary: &'a Path,
    date: String,
    load_before: String,
    load_after: String,
    gateway_peak_rss_kib: Option<u64>,
    recordings_bytes: u64,
    runs: &'a [Run],
    setup: &'a [Vec<f64>; 2],
}

/// Medians of one path's transfers of one kind.
struct Summary {
    mib_s: f64,
    client: f64,
    gateway: f64,
    target: f64,
}

impl Report<'_> {
    fn of(&self, via: Via) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(move |r| r.via == via)
    }

    fn summary(&self, via: Via, pick: fn(&Run) -> &Transfer) -> Summary {
        let med = |f: &dyn Fn(&Transfer) -> f64| {
            median(&self.of(via).map(|r| f(pick(r))).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        Summary {
            mib_s: med(&|t| t.mib_s()),
            client: med(&|t| t.per_gib(t.cpu.client)),
            gateway: med(&|t| t.per_gib(t.cpu.gateway)),
            target: med(&|t| t.per_gib(t.cpu.target)),
        }
    }

    fn echo(&self, via: Via) -> Vec<f64> {
        self.of(via)
            .flat_map(|r| r.echo_us.iter().copied())
            .collect()
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let s = self.settings;
        out.push_str(&format!(
            "Telnet: gatehouse serve against the direct path to in.telnetd; {} reps per path, alternated\n",
            s.reps
        ));
        out.push_str(&format!(
            "{} | {} | load {} -> {}\n\n",
            self.date,
            self.binary.display(),
            self.load_before,
            self.load_after
        ));
        out.push_str(
            "| transfer | direct MiB/s | gateway MiB/s | ratio | CPU s/GiB direct: client, target | gateway path: client, gateway, target |\n|---|---:|---:|---:|---:|---:|\n",
        );
        let kinds: [(&str, Pick, u64); 2] = [
            ("down (cat)", |r| &r.down, s.down_bytes),
            ("up (head -c)", |r| &r.up, s.up_bytes),
        ];
        for (name, pick, bytes) in kinds {
            let d = self.summary(Via::Direct, pick);
            let g = self.summary(Via::Gateway, pick);
            out.push_str(&format!(
                "| {name}, {} MiB | {:.1} | {:.1} | **{:.2}** | {:.2}, {:.2} | {:.2}, {:.2}, {:.2} |\n",
                bytes >> 20,
                d.mib_s,
                g.mib_s,
                g.mib_s / d.mib_s,
                d.client,
                d.target,
                g.client,
                g.gateway,
                g.target
            ));
        }
        out.push_str("\n| echo (µs) | p50 | p99 | mean | samples |\n|---|---:|---:|---:|---:|\n");
        let mut p50 = [0.0; 2];
        let mut p99 = [0.0; 2];
        for via in [Via::Direct, Via::Gateway] {
            let samples = self.echo(via);
            p50[via.index()] = percentile(&samples, 50.0).unwrap_or(f64::NAN);
            p99[via.index()] = percentile(&samples, 99.0).unwrap_or(f64::NAN);
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {} |\n",
                via.label(),
                p50[via.index()],
                p99[via.index()],
                mean(&samples).unwrap_or(f64::NAN),
                samples.len()
            ));
        }
        out.push_str(&format!(
            "| added by the gateway | **{:.0}** | **{:.0}** | | |\n",
            p50[0] - p50[1],
            p99[0] - p99[1]
        ));
        out.push_str(
            "\n| login to the prompt (ms) | p50 | p90 | min | runs |\n|---|---:|---:|---:|---:|\n",
        );
        for via in [Via::Direct, Via::Gateway] {
            let samples = &self.setup[via.index()];
            out.push_str(&format!(
                "| {} | {:.1} | {:.1} | {:.1} | {} |\n",
                via.label(),
                percentile(samples, 50.0).unwrap_or(f64::NAN),
                percentile(samples, 90.0).unwrap_or(f64::NAN),
                percentile(samples, 0.0).unwrap_or(f64::NAN),
                samples.len()
            ));
        }
        let after: Vec<f64> = self.of(Via::Gateway).map(|r| r.gateway_after).collect();
        out.push_str(&format!(
            "\ngateway CPU after each gateway session, until idle (sealing and indexing its recording): median {:.2} s\ngateway peak RSS {} MiB; recordings {:.1} MiB\n",
            median(&after).unwrap_or(f64::NAN),
            self.gateway_peak_rss_kib.map_or(0, |k| k / 1024),
            self.recordings_bytes as f64 / MIB
        ));
        out
    }

    fn json(&self) -> Value {
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                json!({
                    "path": r.via.label(),
                    "rep": r.rep + 1,
                    "login_ms": r.login_ms,
                    "gateway_cpu_after_session": r.gateway_after,
                    "down": r.down.json(),
                    "up": r.up.json(),
                    "echo_us": {
                        "p50": percentile(&r.echo_us, 50.0),
                        "p99": percentile(&r.echo_us, 99.0),
                        "samples": r.echo_us,
                    },
                })
            })
            .collect();
        let paths: Value = [Via::Direct, Via::Gateway]
            .into_iter()
            .map(|via| {
                let down = self.summary(via, |r| &r.down);
                let up = self.summary(via, |r| &r.up);
                let echo = self.echo(via);
                let setup = &self.setup[via.index()];
                let cpu = |s: &Summary| {
                    json!({"client": s.client, "gateway": s.gateway, "target": s.target})
                };
                (
                    via.label().to_string(),
                    json!({
                        "down_mib_s": down.mib_s,
                        "up_mib_s": up.mib_s,
                        "down_cpu_s_per_gib": cpu(&down),
                        "up_cpu_s_per_gib": cpu(&up),
                        "echo_us": {"p50": percentile(&echo, 50.0), "p99": percentile(&echo, 99.0), "mean": mean(&echo)},
                        "login_ms": {"p50": percentile(setup, 50.0), "p90": percentile(setup, 90.0), "samples": setup},
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        json!({
            "bench": "telnet",
            "date": self.date,
            "binary": self.binary.display().to_string(),
            "commit": command_line("git", &["-C", &gatehouse_bench::workspace_root().display().to_string(), "rev-parse", "--short", "HEAD"]),
            "machine": {
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
                "kernel": command_line("uname", &["-r"]),
                "telnetd": command_line("dpkg-query", &["-W", "-f", "${Version}", "inetutils-telnetd"]),
                "load_before": self.load_before,
                "load_after": self.load_after,
            },
            "settings": self.settings.json(),
            "paths": paths,
            "gateway_peak_rss_kib": self.gateway_peak_rss_kib,
            "recordings_bytes": self.recordings_bytes,
            "runs": runs,
        })
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let out = command_line(
        "date",
        &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"],
    );
    if out.is_empty() {
        secs.to_string()
    } else {
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The accept loop

/// The target's listener: one `telnetd --exec-login=PROGRAM` per connection, the socket as its
/// standard input and output, as inetd starts it. Ends (and kills its telnetds) when its
/// standard input closes.
mod inetd {
    use anyhow::{Context, Result};
    use std::net::TcpListener;
    use std::os::fd::OwnedFd;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};

    pub fn run() -> Result<()> {
        let port: u16 = std::env::var("GATEHOUSE_BENCH_TELNET_PORT")?.parse()?;
        let program = std::env::var("GATEHOUSE_BENCH_TELNET_LOGIN")?;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        let children: Arc<Mutex<Vec<Child>>> = Arc::default();
        let watched = children.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            if let Ok(mut children) = watched.lock() {
                for child in children.iter_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            std::process::exit(0);
        });
        for socket in listener.incoming() {
            let socket = socket?;
            let output = socket.try_clone()?;
            let child = Command::new(super::TELNETD)
                .arg("--no-hostinfo")
                .arg(format!("--exec-login={program}"))
                .stdin(Stdio::from(OwnedFd::from(socket)))
                .stdout(Stdio::from(OwnedFd::from(output)))
                .stderr(Stdio::null())
                .spawn()
                .context("starting telnetd")?;
            let mut children = children.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            // Reap the finished ones, so that no zombies pile up over the run.
            children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            children.push(child);
        }
        Ok(())
    }
}
