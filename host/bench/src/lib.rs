//! Benchmarks of the gateway against the direct path. The runner is `benches/gateway.rs`
//! (`cargo bench -p gatehouse-bench`, see docs/BENCHMARKS.md); this library holds the statistics
//! it reports, so that they are unit-tested, and what the runners share (finding the release
//! binary, ports, the results directory).

use anyhow::{Context, Result, bail};
use serde_json::Value;
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
}
