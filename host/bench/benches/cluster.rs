//! Connection setup through a session node against the same through the single process, in one
//! run: `cargo bench -p gatehouse-bench --bench cluster`. docs/BENCHMARKS.md has the figures.
//!
//! Starts `gatehouse demo` with a cluster port (the demo process is the control node and also a
//! gateway of its own), joins a session node in a second data directory, gives it the network
//! of the demo's sshd, and then times, alternating the two paths, a russh client that connects,
//! logs in with a key, runs `true` and waits for its exit status. Through the node that is three
//! calls to the control node over mutual TLS (authenticate, authorize with the credential,
//! the exec channel's decision) on top of what the single process does.
//!
//! Then, session by session through the node, the time from the session's end (the client has
//! its exit status) to its recording on the control node, every file the node recorded there
//! whole (playable): p50 and p99.
//!
//! Knobs: `GATEHOUSE_BENCH_SETUP_RUNS` (40 per path), `GATEHOUSE_BIN` (skips the build).

use anyhow::{Context, Result, bail};
use gatehouse_bench::demo::{Demo, GATEWAY_USER, TARGET, TargetAccount, whoami};
use gatehouse_bench::{
    env_number, free_port, gatehouse_binary, load_average, mean, median, percentile, results_dir,
};
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CIPHER: &str = "aes256-gcm@openssh.com";

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: run it with `cargo bench -p gatehouse-bench --bench cluster`");
        return Ok(());
    }
    let runs = usize::try_from(env_number("GATEHOUSE_BENCH_SETUP_RUNS", 40)?)?;
    let binary = gatehouse_binary()?;
    let work = tempfile::Builder::new()
        .prefix("gatehouse-bench-cluster-")
        .tempdir()?;
    let cluster_port = free_port()?;
    let demo = Demo::start_with(
        &binary,
        work.path(),
        &[
            "--cluster-listen".into(),
            format!("127.0.0.1:{cluster_port}"),
        ],
    )?;
    let account = TargetAccount::prepare(work.path(), &demo.data_dir)?;
    if account.name != whoami()? {
        demo.add_account(&account.name)?;
    }
    let key = work.path().join("client_key");
    demo.add_client_key(&key)?;
    let node = SessionNode::join_and_serve(&binary, &demo, work.path(), cluster_port)?;
    let user = format!("{GATEWAY_USER}@{}@{TARGET}", account.name);
    let routes = [("single", demo.gateway_port), ("node", node.port)];

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // One login each first: caches warm, the node's first calls open their TLS sessions.
    for (name, port) in routes {
        runtime.block_on(setup(name, port, &user, &key))?;
    }
    let mut samples = [Vec::new(), Vec::new()];
    for i in 0..runs {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let (name, port) = routes[which];
            samples[which].push(runtime.block_on(setup(name, port, &user, &key))?);
        }
    }
    let summary = |s: &[f64]| {
        json!({
            "p50_ms": median(s).map(|v| v * 1e3),
            "p90_ms": percentile(s, 90.0).map(|v| v * 1e3),
            "mean_ms": mean(s).map(|v| v * 1e3),
            "min_ms": s.iter().copied().fold(f64::INFINITY, f64::min) * 1e3,
        })
    };
    // From a session's end (the client has its exit status and hangs up) to its recording
    // playable on the control node: every file the node recorded there, whole.
    let node_recordings = node.dir.join("recordings");
    let control_recordings = demo.data_dir.join("recordings");
    let mut playable = Vec::new();
    for _ in 0..runs {
        let before: std::collections::HashSet<_> = list_dirs(&node_recordings);
        runtime.block_on(setup("node", node.port, &user, &key))?;
        let ended = Instant::now();
        let id = loop {
            if let Some(id) = list_dirs(&node_recordings).difference(&before).next() {
                break id.clone();
            }
            if ended.elapsed() > Duration::from_secs(30) {
                bail!("no recording appeared on the node");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        loop {
            if same_files(&node_recordings.join(&id), &control_recordings.join(&id)) {
                break;
            }
            if ended.elapsed() > Duration::from_secs(60) {
                bail!("recording {id} did not reach the control node within 60 s");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        playable.push(ended.elapsed().as_secs_f64());
    }
    let ratio = match (median(&samples[1]), median(&samples[0])) {
        (Some(node), Some(single)) if single > 0.0 => Some(node / single),
        _ => None,
    };
    let result = json!({
        "date": humantime_now(),
        "runs_per_path": runs,
        "client": "russh, publickey, exec `true` until its exit status",
        "single": summary(&samples[0]),
        "node": summary(&samples[1]),
        "ratio_p50_node_over_single": ratio,
        "recording_playable_on_control_after_end": {
            "p50_ms": median(&playable).map(|v| v * 1e3),
            "p99_ms": percentile(&playable, 99.0).map(|v| v * 1e3),
            "max_ms": playable.iter().copied().fold(0.0, f64::max) * 1e3,
        },
        "load_after": load_average(),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    let dir = results_dir(&binary);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result)?)?;
    println!("results: {}", path.display());
    drop(node);
    drop(demo);
    drop(account);
    Ok(())
}

fn list_dirs(dir: &Path) -> std::collections::HashSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every file of `here` is in `there` with the same length (and `here` has one).
fn same_files(here: &Path, there: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(here) else {
        return false;
    };
    let mut any = false;
    for entry in entries.flatten() {
        any = true;
        let (Ok(a), Ok(b)) = (
            entry.metadata(),
            std::fs::metadata(there.join(entry.file_name())),
        ) else {
            return false;
        };
        if a.len() != b.len() {
            return false;
        }
    }
    any
}

fn humantime_now() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!(now)
}

/// Connect, log in with the key, run `true`, wait for its exit status: seconds.
async fn setup(name: &str, port: u16, user: &str, key: &Path) -> Result<f64> {
    let started = Instant::now();
    let handle = gatehouse_bench::ssh::russh_login(name, port, user, key, CIPHER).await?;
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
        bail!("{name}: `true` ended with {status:?}");
    }
    Ok(seconds)
}

/// A session node joined to the demo, serving SSH.
struct SessionNode {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SessionNode {
    fn join_and_serve(
        binary: &Path,
        demo: &Demo,
        work: &Path,
        cluster_port: u16,
    ) -> Result<SessionNode> {
        let out = demo.cli(["node", "token", "--expires", "10m", "--json"])?;
        if !out.status.success() {
            bail!(
                "node token: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let issued: Value = serde_json::from_slice(&out.stdout)?;
        let text = |k: &str| issued[k].as_str().unwrap_or_default().to_string();
        let dir = work.join("node");
        std::fs::create_dir_all(&dir)?;
        let joined = Command::new(binary)
            .arg("--data-dir")
            .arg(&dir)
            .args(["join", &format!("https://127.0.0.1:{cluster_port}")])
            .args([
                "--token",
                &text("token"),
                "--thumbprint",
                &text("thumbprint"),
            ])
            .args(["--node-id", "bench-node"])
            .stdin(Stdio::null())
            .output()?;
        if !joined.status.success() {
            bail!("join: {}", String::from_utf8_lossy(&joined.stderr).trim());
        }
        let out = demo.cli(["network", "add", "127.0.0.1/32", "--node", "bench-node"])?;
        if !out.status.success() {
            bail!(
                "network add: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let port = free_port()?;
        let log = std::fs::File::create(work.join("node.log"))?;
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(&dir)
            .args(["serve", "--role", "session", "--ssh-listen"])
            .arg(format!("127.0.0.1:{port}"))
            // Not the default 0.0.0.0:3389: the bench takes no port it was not given.
            .arg("--rdp-listen")
            .arg(format!("127.0.0.1:{}", free_port()?))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the session node")?;
        let mut node = SessionNode { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "the session node exited ({status}): {}",
                    std::fs::read_to_string(work.join("node.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("the session node did not open its SSH port within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(node)
    }
}

impl Drop for SessionNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
