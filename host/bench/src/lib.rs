//! Benchmarks of the gateway. The runners are in `benches/` (`gateway.rs`: the gateway against
//! the direct path; `load.rs`: hundreds of concurrent sessions; see docs/BENCHMARKS.md); this
//! library holds the statistics they report, so that they are unit-tested, and what the runners
//! share (finding the release binary, ports, the results directory, `/proc` readings, the demo
//! gateway and the SSH clients).

pub mod demo;
pub mod rfb;
pub mod serve;
pub mod ssh;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The median of `samples` (the mean of the two middle values for an even count), or `None` for
/// no samples. NaN values sort last.
pub fn median(samples: &[f64]) -> Option<f64> {
    let sorted = sorted(samples);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The nearest-rank percentile `p` (0 to 100) of `samples`, or `None` for no samples: the
/// smallest sample such that at least `p` percent of the samples are less or equal to it.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let sorted = sorted(samples);
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The arithmetic mean of `samples`, or `None` for no samples.
pub fn mean(samples: &[f64]) -> Option<f64> {
    if samples.is_empty() {
        None
    } else {
        Some(samples.iter().sum::<f64>() / samples.len() as f64)
    }
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `GATEHOUSE_BIN`, or the release `gatehouse` binary, built now (a no-op when up to date).
pub fn gatehouse_binary() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("GATEHOUSE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(String::from))
        .unwrap_or_else(|| "cargo".into());
    println!("building the gateway: cargo build --release -p gatehouse");
    let mut child = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "gatehouse",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo build")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "gatehouse"
            && let Some(path) = message["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    if !child.wait()?.success() {
        bail!("cargo build --release -p gatehouse failed");
    }
    executable.context("cargo build did not report the gatehouse executable")
}

/// `<target>/gatehouse-bench`, next to the `release` directory that holds the binary.
pub fn results_dir(binary: &Path) -> PathBuf {
    binary
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("gatehouse-bench"))
        .unwrap_or_else(|| workspace_root().join("target/gatehouse-bench"))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// User and system CPU ticks of a process, and of its children it has waited for, from the text
/// of `/proc/PID/stat`: `(utime + stime, cutime + cstime)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // The fields after the command name (which may hold spaces and parentheses) start at field 3
    // (state); utime, stime, cutime and cstime are fields 14 to 17.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    match fields[..] {
        [utime, stime, cutime, cstime] => Some((utime + stime, cutime + cstime)),
        _ => None,
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system, all threads) used so far by the running process `pid`.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_cpu_ticks(&stat).map(|(own, _)| own as f64 / clock_ticks())
}

/// `(bytes sent, bytes received)` of the first socket in `ss -tin` output (kernel `tcp_info`:
/// `bytes_sent`, or `bytes_acked` where the kernel does not report it, and `bytes_received`).
pub fn ss_socket_bytes(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|token| token.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
    };
    let sent = field("bytes_sent").or_else(|| field("bytes_acked"))?;
    let received = field("bytes_received")?;
    Some((sent, received))
}

/// Bytes per direction `(client to target, target to client)` in a Gatehouse RDP recording
/// (`rdp.pdus`: the magic `GHRDP1\n\0`, then per PDU direction, framing, microseconds (u64 LE),
/// length (u32 LE) and the bytes; docs/rdp.md). `None` if the file is not in that format.
pub fn rdp_pdus_bytes(file: &[u8]) -> Option<(u64, u64)> {
    let mut rest = file.strip_prefix(b"GHRDP1\n\0")?;
    let (mut up, mut down) = (0u64, 0u64);
    while !rest.is_empty() {
        let header = rest.get(..14)?;
        let length = u32::from_le_bytes(header[10..14].try_into().ok()?) as usize;
        rest.get(14..14 + length)?;
        match header[0] {
            0 => up += length as u64,
            1 => down += length as u64,
            _ => return None,
        }
        rest = &rest[14 + length..];
    }
    Some((up, down))
}

/// All processes below `root`, from /proc/PID/task/TID/children.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// CPU seconds of a process (all its threads), and of its children that it has waited for.
pub struct ProcCpu {
    pub own: f64,
    pub children: f64,
}

/// User + system CPU seconds of process `pid`, and of its children that it has waited for.
pub fn proc_cpu(pid: u32) -> Option<ProcCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (own, children) = stat_cpu_ticks(&stat)?;
    let ticks = clock_ticks();
    Some(ProcCpu {
        own: own as f64 / ticks,
        children: children as f64 / ticks,
    })
}

/// The bytes of the files below `dir`.
pub fn dir_size(dir: &Path) -> u64 {
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

/// The 1, 5 and 15 minute load averages, to tell a busy machine from a quiet one.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// What `program args` prints (stdout, then stderr), trimmed; empty if it cannot run.
pub fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.trim().to_string()
        })
        .unwrap_or_default()
}

/// A `kB` line of `/proc/PID/status` (`VmRSS:` now, `VmHWM:` the peak), in KiB.
pub fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Stops a spawned gateway: SIGTERM, then SIGKILL if it has not exited within 10 s.
pub fn stop_child(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A number from the environment variable `name`, or `default` when it is not set.
pub fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    use anyhow::Context;
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

/// Finds a marker in a stream read in pieces, even when a read splits it.
#[derive(Debug, Clone)]
pub struct MarkerScan {
    marker: Vec<u8>,
    /// The last `marker.len() - 1` bytes seen, at most.
    tail: Vec<u8>,
}

impl MarkerScan {
    pub fn new(marker: &[u8]) -> MarkerScan {
        assert!(!marker.is_empty(), "an empty marker");
        MarkerScan {
            marker: marker.to_vec(),
            tail: Vec::new(),
        }
    }

    /// Looks at the next piece of the stream: `Some(n)` if the marker ends at `chunk[n - 1]`
    /// (the first occurrence since the scan started or was last found), else `None`.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        let m = self.marker.len();
        // Across the boundary: the tail (shorter than the marker) and the chunk's start.
        if !self.tail.is_empty() {
            let mut joined = self.tail.clone();
            joined.extend_from_slice(&chunk[..chunk.len().min(m - 1)]);
            if let Some(at) = find(&joined, &self.marker) {
                let end = at + m - self.tail.len();
                self.tail.clear();
                return Some(end);
            }
        }
        if let Some(at) = find(chunk, &self.marker) {
            self.tail.clear();
            return Some(at + m);
        }
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(m - 1)..]);
        let excess = self.tail.len().saturating_sub(m - 1);
        self.tail.drain(..excess);
        None
    }
}

/// The first position of `needle` in `haystack`: a scan for the needle's first byte, then a
/// comparison, which is fast when that byte is rare in the haystack.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if haystack.get(at + 1..at + 1 + rest.len())? == rest {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// CPU seconds of every process in the tree below `root` (`root` included) by pid: each one's
/// own time plus that of its children it has waited for, so that short-lived commands (a `cat`
/// reaped by its shell) are counted in their parent once they are gone.
pub fn tree_cpu(root: u32) -> HashMap<u32, f64> {
    std::iter::once(root)
        .chain(descendants(root))
        .filter_map(|pid| proc_cpu(pid).map(|c| (pid, c.own + c.children)))
        .collect()
}

/// The CPU seconds used between two [`tree_cpu`] readings by the processes alive at the later
/// one (a process that appeared in between counts from zero).
pub fn tree_cpu_since(now: &HashMap<u32, f64>, before: &HashMap<u32, f64>) -> f64 {
    now.iter()
        .map(|(pid, &cpu)| (cpu - before.get(pid).copied().unwrap_or(0.0)).max(0.0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50.0));
        assert_eq!(percentile(&samples, 99.0), Some(99.0));
        assert_eq!(percentile(&samples, 100.0), Some(100.0));
        assert_eq!(percentile(&samples, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        // Five samples: p99 is the largest, p50 the third.
        assert_eq!(percentile(&[5.0, 4.0, 3.0, 2.0, 1.0], 99.0), Some(5.0));
        assert_eq!(percentile(&[5.0, 4.0, 3.0, 2.0, 1.0], 50.0), Some(3.0));
    }

    #[test]
    fn mean_of_samples() {
        assert_eq!(mean(&[]), None);
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
    }

    #[test]
    fn cpu_ticks_from_proc_stat() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    1234 567 89 10 20 0 9 0 100 2000000 500 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some((1234 + 567, 89 + 10)));
        assert_eq!(stat_cpu_ticks("4242 (x) S 1 2"), None);
        let own = std::fs::read_to_string("/proc/self/stat").ok();
        assert!(own.as_deref().and_then(stat_cpu_ticks).is_some());
    }

    #[test]
    fn socket_bytes_from_ss() {
        let ss = "ESTAB 0 0 127.0.0.1:59698 127.0.0.1:33891\n\t cubic wscale:10,10 \
                  bytes_sent:9999 bytes_retrans:53 bytes_acked:9880 bytes_received:10047300 \
                  segs_out:1042";
        assert_eq!(ss_socket_bytes(ss), Some((9999, 10_047_300)));
        let older = "ESTAB 0 0 a:1 b:2 bytes_acked:12 bytes_received:34";
        assert_eq!(ss_socket_bytes(older), Some((12, 34)));
        assert_eq!(ss_socket_bytes(""), None);
    }

    #[test]
    fn rdp_recording_bytes_per_direction() {
        let mut file = b"GHRDP1\n\0".to_vec();
        for (direction, bytes) in [(0u8, &b"\x03\x00"[..]), (1, b"abc"), (1, b"defg")] {
            file.extend([direction, 1]);
            file.extend(7u64.to_le_bytes());
            file.extend((bytes.len() as u32).to_le_bytes());
            file.extend(bytes);
        }
        assert_eq!(rdp_pdus_bytes(&file), Some((2, 7)));
        assert_eq!(rdp_pdus_bytes(&file[..file.len() - 1]), None, "truncated");
        assert_eq!(rdp_pdus_bytes(b"GHRDP1\n\0"), Some((0, 0)));
        assert_eq!(rdp_pdus_bytes(b"something else"), None);
    }

    #[test]
    fn markers_found_across_reads() {
        let text = b"aaa@@END-42@@bbb";
        for split in 0..=text.len() {
            let mut scan = MarkerScan::new(b"@@END-42@@");
            let first = scan.feed(&text[..split]);
            let found = match first {
                Some(n) => n,
                None => split + scan.feed(&text[split..]).expect("found in the second read"),
            };
            assert_eq!(found, 13, "split at {split}");
        }
        // One byte at a time, with a false start.
        let mut scan = MarkerScan::new(b"@@END");
        let stream = b"x@@EN@@END";
        let hits: Vec<usize> = stream
            .iter()
            .enumerate()
            .filter_map(|(i, b)| scan.feed(std::slice::from_ref(b)).map(|n| i + n))
            .collect();
        assert_eq!(hits, vec![10]);
        assert_eq!(MarkerScan::new(b"ab").feed(b"xxxx"), None);
    }

    #[test]
    fn find_first_occurrence() {
        assert_eq!(find(b"hello world", b"o w"), Some(4));
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"abc", b""), None);
        assert_eq!(find(b"", b"a"), None);
    }

    #[test]
    fn tree_cpu_differences() {
        let before = HashMap::from([(1, 1.0), (2, 0.5), (3, 2.0)]);
        // 2 ended (its time went to 1, its parent), 4 is new.
        let now = HashMap::from([(1, 1.75), (3, 2.25), (4, 0.25)]);
        assert!((tree_cpu_since(&now, &before) - 1.25).abs() < 1e-9);
        let own = tree_cpu(std::process::id());
        assert!(own.contains_key(&std::process::id()));
    }
}
