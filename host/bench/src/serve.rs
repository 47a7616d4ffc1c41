//! `gatehouse serve` as the protocol benches run it (Telnet, VNC): a data directory set up with
//! the CLI before the gateway starts (as the end-to-end tests do), then `serve` on free ports
//! for SSH, the API and the listeners the bench asks for, at a server's default log level.

use crate::{free_port, stop_child};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `gatehouse --data-dir DATA ARGS` with `stdin` as its input; its stdout, or an error
/// with its stderr.
pub fn cli_in(binary: &Path, data: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
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

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A running `gatehouse serve`, stopped when dropped.
pub struct Serve {
    pub binary: PathBuf,
    pub data: PathBuf,
    /// The port of each listener asked for, in order.
    pub ports: Vec<u16>,
    child: Child,
    log: PathBuf,
}

impl Serve {
    /// Starts `serve` on the data directory `data` (already set up), with `--ssh-listen` and
    /// `--api-listen` plus each flag of `listeners` (e.g. `--telnet-listen`) on a free port,
    /// logging to `log`. Retries with other ports if one was taken meanwhile.
    pub fn start(binary: &Path, data: &Path, log: &Path, listeners: &[&str]) -> Result<Serve> {
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let mut flags = vec!["--ssh-listen", "--api-listen"];
            flags.extend_from_slice(listeners);
            let ports = flags
                .iter()
                .map(|_| free_port())
                .collect::<Result<Vec<_>>>()?;
            let out = std::fs::File::create(log)?;
            let mut command = Command::new(binary);
            command.arg("--data-dir").arg(data).arg("serve");
            for (flag, port) in flags.iter().zip(&ports) {
                command.arg(flag).arg(format!("127.0.0.1:{port}"));
            }
            let child = command
                .env_remove("GATEHOUSE_DATA_DIR")
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .context("starting gatehouse serve")?;
            let mut serve = Serve {
                binary: binary.to_path_buf(),
                data: data.to_path_buf(),
                ports: ports[2..].to_vec(),
                child,
                log: log.to_path_buf(),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if ports.iter().all(|&p| port_open(p)) {
                    return Ok(serve);
                }
                if let Some(status) = serve.child.try_wait()? {
                    last_error = format!("exited ({status})");
                    break;
                }
                if Instant::now() > deadline {
                    last_error = "did not open its ports within 30 s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(serve);
        }
        bail!(
            "gatehouse serve {last_error}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cli(&self, args: &[&str]) -> Result<String> {
        cli_in(&self.binary, &self.data, args, None)
    }

    /// The last 30 lines of the gateway's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The audit trail, oldest first.
    pub fn audit(&self) -> Result<Vec<Value>> {
        let text = self.cli(&["audit", "list", "--json", "--limit", "1000000"])?;
        match serde_json::from_str(&text).context("audit list --json")? {
            Value::Array(items) => Ok(items),
            other => bail!("audit list --json is not an array: {other}"),
        }
    }

    /// Waits (at most 120 s) until the gateway has sealed every recording (a `manifest.json` in
    /// each session's directory: hashed, signed and indexed for search, a few seconds after the
    /// session ended) and then used no CPU for two 250 ms intervals in a row; returns the CPU
    /// seconds it used meanwhile. So that this work after a session is reported apart and does
    /// not run into the next measurement (on two CPUs it would slow the other path down).
    pub fn settle(&self) -> f64 {
        let start = crate::process_cpu_seconds(self.pid()).unwrap_or(0.0);
        let deadline = Instant::now() + Duration::from_secs(120);
        let recordings = self.data.join("recordings");
        let unsealed = || {
            std::fs::read_dir(&recordings)
                .map(|entries| {
                    entries
                        .flatten()
                        .any(|e| e.path().is_dir() && !e.path().join("manifest.json").exists())
                })
                .unwrap_or(false)
        };
        while unsealed() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut last = crate::process_cpu_seconds(self.pid()).unwrap_or(start);
        let mut quiet = 0;
        while quiet < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(250));
            let now = crate::process_cpu_seconds(self.pid()).unwrap_or(last);
            quiet = if now - last < 0.005 { quiet + 1 } else { 0 };
            last = now;
        }
        last - start
    }

    /// Peak resident memory so far (KiB).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        crate::rss_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
