//! `cargo bench -p gatehouse-bench --bench search`: session search at scale. Writes
//! `GH_SEARCH_SESSIONS` (default 10,000) recorded SSH shell sessions in the recorder's format
//! (a cast file and events.jsonl each, ~8 KiB of terminal output with escape sequences, typed
//! lines echoed), indexes them with `SearchIndex::rebuild` (MiB of terminal output per second),
//! then times queries of each kind (p50/p99 over `GH_SEARCH_RUNS`, default 200) against the
//! direct path: scanning every recording's output for the same word, as the API did before
//! the index (`gatehouse_recording::output_contains`). Prints JSON lines and a ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatehouse_core::time::Timestamp;
use gatehouse_recording::{RecordedSession, output_contains};
use gatehouse_search::{SearchIndex, SessionMeta};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const WORDS: &[&str] = &[
    "systemctl",
    "restart",
    "nginx",
    "journalctl",
    "error",
    "warning",
    "connection",
    "refused",
    "timeout",
    "backup",
    "completed",
    "disk",
    "usage",
    "filesystem",
    "mounted",
    "kernel",
    "update",
    "package",
    "installed",
    "removed",
    "config",
    "reload",
    "service",
    "active",
    "running",
    "failed",
    "postgres",
    "replica",
    "lag",
    "checkpoint",
    "vacuum",
    "index",
    "table",
    "user",
    "group",
    "permission",
    "denied",
    "certificate",
    "expired",
    "renewed",
    "rotate",
    "log",
    "cron",
    "job",
    "queue",
    "worker",
    "memory",
    "swap",
    "load",
    "average",
    "network",
];
const USERS: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];
const ASSETS: &[&str] = &[
    "db1", "db2", "web1", "web2", "cache1", "batch1", "mail1", "ldap1",
];

/// A small deterministic generator (xorshift), so every run writes the same corpus.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn cast_line(out: &mut String, time: f64, kind: &str, data: &str) {
    let _ = writeln!(
        out,
        "[{time:.6}, \"{kind}\", {}]",
        serde_json::to_string(data).unwrap()
    );
}

/// Writes session `n` under `root`; returns its metadata and bytes of terminal output.
fn write_session(root: &Path, n: usize, rng: &mut Rng, started: u64) -> (SessionMeta, u64) {
    let id = format!("bench-{n:05}");
    let dir = root.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cast = String::from("{\"version\":2,\"width\":120,\"height\":40,\"timestamp\":1}\n");
    let mut time = 0.2;
    let mut output_bytes = 0u64;
    let prompt = format!(
        "\u{1b}[01;32madmin@{}\u{1b}[00m:~$ ",
        ASSETS[n % ASSETS.len()]
    );
    while output_bytes < 8 * 1024 {
        let command = format!(
            "{} {} --id {}",
            rng.pick(WORDS),
            rng.pick(WORDS),
            rng.next() % 100_000
        );
        cast_line(&mut cast, time, "o", &prompt);
        time += 0.4;
        cast_line(&mut cast, time, "i", &format!("{command}\r"));
        cast_line(&mut cast, time + 0.01, "o", &format!("{command}\r\n"));
        output_bytes += (prompt.len() + command.len() + 2) as u64;
        for _ in 0..(rng.next() % 12 + 1) {
            let mut line = String::new();
            for _ in 0..(rng.next() % 10 + 3) {
                line.push_str(rng.pick(WORDS));
                line.push(' ');
            }
            let _ = write!(line, "host-{}-{}\r\n", n, rng.next() % 1000);
            time += 0.05;
            cast_line(&mut cast, time, "o", &line);
            output_bytes += line.len() as u64;
        }
        time += (rng.next() % 30) as f64 / 10.0;
    }
    std::fs::write(dir.join("channel-0.cast"), cast).unwrap();
    std::fs::write(
        dir.join("events.jsonl"),
        "{\"time\":0.1,\"channel\":0,\"type\":\"recording_started\",\"file\":\"channel-0.cast\"}\n\
         {\"time\":0.1,\"channel\":0,\"type\":\"shell\"}\n",
    )
    .unwrap();
    let meta = SessionMeta {
        id,
        user: USERS[n % USERS.len()].into(),
        account: "admin".into(),
        asset: ASSETS[n % ASSETS.len()].into(),
        protocol: "ssh".into(),
        node: None,
        started: Timestamp(started),
    };
    (meta, output_bytes)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

fn main() {
    let sessions: usize = std::env::var("GH_SEARCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let runs: usize = std::env::var("GH_SEARCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let scratch = tempfile::tempdir().unwrap();
    let recordings = scratch.path().join("recordings");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let day = 86_400_000u64;
    let first = Timestamp::now().0 - 30 * day;
    let mut metas = Vec::with_capacity(sessions);
    let mut output = 0u64;
    for n in 0..sessions {
        let at = first + (n as u64) * (30 * day / sessions as u64);
        let (meta, bytes) = write_session(&recordings, n, &mut rng, at);
        metas.push(meta);
        output += bytes;
    }
    let mib = output as f64 / (1024.0 * 1024.0);
    eprintln!(
        "wrote {sessions} sessions ({mib:.1} MiB of terminal output) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (index, _) = SearchIndex::open_or_create(&scratch.path().join("search")).unwrap();
    let started = Instant::now();
    let indexed = index.rebuild(&recordings, &metas, &mut |_| {}).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(indexed.sessions as usize, sessions);
    let index_bytes: u64 = std::fs::read_dir(index.dir())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "{}",
        serde_json::json!({
            "bench": "search_index",
            "sessions": sessions,
            "output_mib": mib,
            "fragments": indexed.fragments,
            "seconds": seconds,
            "mib_per_second": mib / seconds,
            "index_mib": index_bytes as f64 / (1024.0 * 1024.0),
        })
    );

    // One word in one session; a common word; a phrase; fields; a time bound.
    let rare = format!("host-{}-", sessions / 2);
    let queries = [
        ("rare_word", format!("\"{rare}\"")),
        ("common_word", "nginx".to_string()),
        ("phrase", "\"connection refused\"".to_string()),
        (
            "fields",
            "user:alice asset:db1 kind:input backup".to_string(),
        ),
        ("time_bound", "after:7d certificate expired".to_string()),
    ];
    let mut rare_p50 = 0.0;
    for (name, query) in &queries {
        let mut times = Vec::with_capacity(runs);
        let mut hits = 0;
        for _ in 0..runs {
            let t = Instant::now();
            hits = index.search(query, None, 20).unwrap().len();
            times.push(t.elapsed());
        }
        times.sort();
        assert!(hits > 0, "{query} found nothing");
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        if *name == "rare_word" {
            rare_p50 = p50;
        }
        println!(
            "{}",
            serde_json::json!({"bench": "search_query", "query": name, "text": query,
                "hits": hits, "p50_ms": p50, "p99_ms": p99, "runs": runs})
        );
    }

    // The direct path: read every recording's output for the rare word.
    let scans = 3;
    let mut scan_times = Vec::new();
    for _ in 0..scans {
        let t = Instant::now();
        let mut found = 0;
        for meta in &metas {
            let recorded = RecordedSession::open(&recordings, &meta.id).unwrap();
            if output_contains(&recorded.channel_path(0), &rare).unwrap() {
                found += 1;
            }
        }
        assert!(found >= 1);
        scan_times.push(t.elapsed());
    }
    scan_times.sort();
    let scan_ms = percentile(&scan_times, 0.5);
    println!(
        "{}",
        serde_json::json!({"bench": "search_scan", "query": "rare_word", "p50_ms": scan_ms,
            "runs": scans, "scan_over_index": scan_ms / rare_p50})
    );
    let _ = std::io::stdout().flush();
}
