//! `gatehouse demo` as the benchmarks run it: the release gateway in a temporary data directory
//! with the demo's own OpenSSH sshd as target, plus a throwaway target account and helpers to
//! give the gateway user a key and a grant.

use crate::free_port;
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The demo's gateway user.
pub const GATEWAY_USER: &str = "demo";
/// The demo's asset (its own sshd).
pub const TARGET: &str = "demo-target";

/// The name of the user running this process.
pub fn whoami() -> Result<String> {
    let out = Command::new("id").arg("-un").output()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if name.is_empty() {
        bail!("cannot tell the current user");
    }
    Ok(name)
}

/// Runs `cmd` with no input; an error with its stderr unless it succeeds.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The account the benchmark logs in to on the target. The demo's own account is the current
/// user, whose shell start-up files run before every remote command (on a developer's machine
/// that can be 100+ ms of `pyenv init` and the like, the same on both paths, which would pad
/// both and hide the gateway's share). So, when running as root, the bench makes a throwaway
/// system account `ghbench` with `/bin/sh` and an empty home, and removes it at the end.
/// `GATEHOUSE_BENCH_ACCOUNT=NAME` uses an existing account instead (the current user works
/// without root).
pub struct TargetAccount {
    pub name: String,
    created: bool,
}

const BENCH_ACCOUNT: &str = "ghbench";

impl TargetAccount {
    pub fn prepare(work: &Path, data_dir: &Path) -> Result<TargetAccount> {
        if let Ok(name) = std::env::var("GATEHOUSE_BENCH_ACCOUNT") {
            return Ok(TargetAccount {
                name,
                created: false,
            });
        }
        let me = whoami()?;
        if me != "root" {
            println!(
                "note: not root, so the target account is {me} and its shell start-up files \
                 count in every measurement (set GATEHOUSE_BENCH_ACCOUNT to choose another)"
            );
            return Ok(TargetAccount {
                name: me,
                created: false,
            });
        }
        let exists = Command::new("getent")
            .args(["passwd", BENCH_ACCOUNT])
            .stdout(Stdio::null())
            .status()?
            .success();
        if exists {
            bail!(
                "a local account `{BENCH_ACCOUNT}` already exists (left by an interrupted run?): \
                 remove it with `userdel {BENCH_ACCOUNT}` or set GATEHOUSE_BENCH_ACCOUNT"
            );
        }
        // The home lives in the work directory, which the account must be able to enter; sshd
        // reads the demo's authorized_keys (in the data directory) as the account, so that
        // file must be readable and its directories traversable (not listable; the secrets in
        // them stay 0600). The gateway makes its data directory private when it starts (umask
        // 077, then 0700/0600 throughout), so this runs after the start.
        let home = work.join("home");
        std::fs::create_dir_all(&home)?;
        run_checked(Command::new("chmod").arg("755").arg(work))?;
        run_checked(Command::new("chmod").arg("711").arg(data_dir))?;
        run_checked(
            Command::new("chmod")
                .arg("711")
                .arg(data_dir.join("demo-target")),
        )?;
        run_checked(
            Command::new("chmod")
                .arg("644")
                .arg(data_dir.join("demo-target/authorized_keys")),
        )?;
        // Password `*`: no password login, yet not "locked" (sshd without PAM refuses locked
        // accounts even for public keys).
        run_checked(
            Command::new("useradd")
                .args([
                    "--system",
                    "--shell",
                    "/bin/sh",
                    "--password",
                    "*",
                    "--home-dir",
                ])
                .arg(&home)
                .arg(BENCH_ACCOUNT),
        )?;
        let account = TargetAccount {
            name: BENCH_ACCOUNT.into(),
            created: true,
        };
        run_checked(
            Command::new("chown")
                .arg(format!("{BENCH_ACCOUNT}:"))
                .arg(&home),
        )?;
        Ok(account)
    }
}

impl Drop for TargetAccount {
    fn drop(&mut self) {
        if self.created {
            // userdel refuses while the account still has processes (sessions closing).
            for _ in 0..40 {
                let removed = Command::new("userdel")
                    .arg(&self.name)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if removed {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            eprintln!(
                "could not remove the account {}: userdel it by hand",
                self.name
            );
        }
    }
}

/// `gatehouse demo` in its own data directory; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Demo {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    work: PathBuf,
    child: Child,
    pub gateway_port: u16,
    pub target_port: u16,
    api_port: u16,
    rdp_port: u16,
    /// Prepended to the command line of a restart (`nice -n -5`, to undo the bench's own
    /// niceness that a child would inherit).
    restart_prefix: Vec<String>,
    /// Appended to `gatehouse demo` (`--cluster-listen ...`).
    extra_args: Vec<String>,
}

impl Demo {
    /// Starts the demo in `<work>/data`, its output in `<work>/demo.log`, and waits until both
    /// the target and the gateway accept connections.
    pub fn start(binary: &Path, work: &Path) -> Result<Demo> {
        Self::start_with(binary, work, &[])
    }

    /// [`Demo::start`] with more arguments for `gatehouse demo`.
    pub fn start_with(binary: &Path, work: &Path, extra_args: &[String]) -> Result<Demo> {
        let data_dir = work.join("data");
        let gateway_port = free_port()?;
        let target_port = free_port()?;
        let api_port = free_port()?;
        let rdp_port = free_port()?;
        let child = spawn_demo(
            &[],
            binary,
            work,
            &data_dir,
            [gateway_port, target_port, api_port, rdp_port],
            extra_args,
        )?;
        let mut demo = Demo {
            binary: binary.to_path_buf(),
            data_dir,
            work: work.to_path_buf(),
            child,
            gateway_port,
            target_port,
            api_port,
            rdp_port,
            restart_prefix: Vec::new(),
            extra_args: extra_args.to_vec(),
        };
        demo.wait_ready()?;
        println!(
            "gatehouse demo: gateway 127.0.0.1:{gateway_port}, sshd 127.0.0.1:{target_port}, \
             data {}",
            demo.data_dir.display()
        );
        Ok(demo)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for port in [self.target_port, self.gateway_port] {
            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
                if let Some(status) = self.child.try_wait()? {
                    bail!("gatehouse demo exited ({status}):\n{}", self.log());
                }
                if Instant::now() > deadline {
                    bail!("gatehouse demo did not open port {port} within 60 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // The admin socket (which the CLI talks to while the gateway holds the store) may come
        // up a moment after the listeners.
        while !self.data_dir.join("admin.sock").exists() {
            if Instant::now() > deadline {
                bail!("gatehouse demo has no admin socket after 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// What the demo printed so far (all its starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("demo.log")).unwrap_or_default()
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sets what a [`Demo::restart`] prepends to the command line.
    pub fn set_restart_prefix(&mut self, prefix: Vec<String>) {
        self.restart_prefix = prefix;
    }

    /// `kill -9` of the gateway, and waits for it to be gone. Its sshd, a child that the
    /// gateway can no longer stop, keeps running until [`Demo::restart`] or the drop.
    pub fn kill_hard(&mut self) -> Result<()> {
        self.child.kill().context("SIGKILL to the gateway")?;
        self.child
            .wait()
            .context("waiting for the killed gateway")?;
        Ok(())
    }

    /// Starts the demo again on the same data directory and ports (after [`Demo::kill_hard`]):
    /// stops the sshd the killed gateway left, then waits until the new one serves.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            bail!("the gateway is still running");
        }
        self.stop_orphan_sshd();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.target_port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            if Instant::now() > deadline {
                bail!("the old demo sshd still listens on {}", self.target_port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let prefix: Vec<&str> = self.restart_prefix.iter().map(String::as_str).collect();
        self.child = spawn_demo(
            &prefix,
            &self.binary,
            &self.work,
            &self.data_dir,
            [
                self.gateway_port,
                self.target_port,
                self.api_port,
                self.rdp_port,
            ],
            &self.extra_args,
        )?;
        self.wait_ready()
    }

    /// Runs `gatehouse --data-dir D ARGS` (through the running gateway's admin socket, or on
    /// the store itself when no gateway runs).
    pub fn cli<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new(&self.binary)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running the gatehouse CLI")
    }

    /// Creates an ed25519 key at `key` and gives its public half to the gateway user, through
    /// the running gateway's admin socket.
    pub fn add_client_key(&self, key: &Path) -> Result<()> {
        let status = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "gatehouse-bench",
                "-f",
            ])
            .arg(key)
            .stdin(Stdio::null())
            .status()
            .context("running ssh-keygen")?;
        if !status.success() {
            bail!("ssh-keygen failed");
        }
        let out = self
            .cli([
                OsString::from("user"),
                "add-key".into(),
                GATEWAY_USER.into(),
                key.with_extension("pub").into_os_string(),
            ])
            .context("running gatehouse user add-key")?;
        if !out.status.success() {
            bail!(
                "gatehouse user add-key failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Puts `name@demo-target` in the vault with the demo's account key and grants it to the
    /// gateway user (the demo's sshd accepts that key for every account).
    pub fn add_account(&self, name: &str) -> Result<()> {
        self.add_account_on(name, TARGET)
    }

    /// Like [`Demo::add_account`] for another asset that accepts the demo's account key.
    pub fn add_account_on(&self, name: &str, asset: &str) -> Result<()> {
        let target = format!("{name}@{asset}");
        let key = self.data_dir.join("demo-target/account_key");
        for args in [
            vec![
                "account".into(),
                "add".into(),
                OsString::from(&target),
                "--key-file".into(),
                key.into_os_string(),
            ],
            vec![
                "grant".into(),
                "add".into(),
                "--user".into(),
                GATEWAY_USER.into(),
                OsString::from(&target),
            ],
        ] {
            run_checked(
                Command::new(&self.binary)
                    .arg("--data-dir")
                    .arg(&self.data_dir)
                    .args(args),
            )?;
        }
        Ok(())
    }

    /// Pins the gateway to the last CPU and its sshd (and so every connection it forks) and this
    /// process (and so every client) to the others.
    pub fn pin(&self, cpus: usize) -> Result<()> {
        if cpus < 2 {
            bail!("GATEHOUSE_BENCH_PIN needs at least 2 CPUs");
        }
        let gateway_cpu = (cpus - 1).to_string();
        let others = if cpus == 2 {
            "0".to_string()
        } else {
            format!("0-{}", cpus - 2)
        };
        let sshd = self.sshd_pid().context("the demo's sshd pid")?;
        for (cpu_list, pid) in [
            (&gateway_cpu, self.child.id()),
            (&others, sshd),
            (&others, std::process::id()),
        ] {
            run_checked(
                Command::new("taskset")
                    .args(["-a", "-p", "-c", cpu_list])
                    .arg(pid.to_string()),
            )?;
        }
        println!("pinned: gateway on CPU {gateway_cpu}; sshd and the clients on CPU {others}");
        Ok(())
    }

    /// Stops the gateway (SIGTERM, then SIGKILL after 10 s) and the demo's sshd; the drop does
    /// the same.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            crate::stop_child(&mut self.child);
        }
        self.stop_orphan_sshd();
    }

    /// The demo's sshd listener.
    pub fn sshd_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir.join("demo-target/sshd.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// The gateway's peak resident set so far (`VmHWM`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::rss_kib(self.child.id(), "VmHWM:")
    }

    fn stop_orphan_sshd(&self) {
        if let Some(pid) = self.sshd_pid()
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

fn spawn_demo(
    prefix: &[&str],
    binary: &Path,
    work: &Path,
    data_dir: &Path,
    [gateway_port, target_port, api_port, rdp_port]: [u16; 4],
    extra_args: &[String],
) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.join("demo.log"))?;
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.arg("--data-dir")
        .arg(data_dir)
        .arg("demo")
        .arg("--ssh-listen")
        .arg(format!("127.0.0.1:{gateway_port}"))
        .arg("--target-port")
        .arg(target_port.to_string())
        .arg("--api-listen")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--rdp-listen")
        .arg(format!("127.0.0.1:{rdp_port}"))
        .args(extra_args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn()
        .with_context(|| format!("starting {} demo", binary.display()))
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM lets the demo stop its sshd; SIGKILL if it does not exit in time. Then the
        // demo's sshd, should it have outlived the demo.
        self.stop();
    }
}
