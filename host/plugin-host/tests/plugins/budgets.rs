//! What one plugin can make the host hold or write: its log per call (lines and bytes, before
//! the gateway's log and the audit copy), its questions per login, and its cache (bytes counted
//! against its memory limit).

use crate::support::*;
use gatehouse_core::{LoginSpec, Name, User};
use gatehouse_plugin_host::limits::caps;
use gatehouse_plugin_host::login::{self, LoginContext, Next, PendingLogin};
use gatehouse_plugin_host::*;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// A `tracing` writer into memory: what a real `fmt` subscriber (the gateway's) prints.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// A subscriber printing every level into this buffer, for the current thread.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

/// The audit sink, in memory, and mirrored into the log as the gateway's audit trail is.
#[derive(Default)]
struct AuditLines(Mutex<Vec<String>>);

impl AuditSink for AuditLines {
    fn plugin_log(&self, _session: &str, plugin: &str, hook: &str, message: &str) {
        let line = format!("plugin `{plugin}` in {hook}: {message}");
        tracing::info!("{line}");
        self.0.lock().unwrap().push(line);
    }
}

/// Runs the log-flooding plugin once; returns what the log got and what the audit sink got.
async fn flood(with_audit: bool) -> (String, Vec<String>) {
    let env = TestEnv::new();
    // A CPU budget a loaded machine cannot exhaust first (it is measured in wall-clock epochs).
    env.install_hostile(
        "log-flood",
        limited(Limits {
            cpu_ms: 1000,
            ..Limits::default()
        }),
        "",
    );
    let audit = Arc::new(AuditLines::default());
    let sink: Arc<dyn AuditSink> = audit.clone();
    let host = PluginHost::start(
        &env.registry,
        HostOptions {
            audit: with_audit.then_some(sink),
            ..env.options()
        },
    )
    .unwrap();
    let captured = Captured::default();
    let guard = captured.install();
    // The plugin logs 4096 warnings of about 1 KiB and an error of 1 MiB (5 MiB), then accepts.
    let verdict = authenticate_once(&host, &connection("alice")).await;
    drop(guard);
    assert!(matches!(verdict, Ok(AaVerdict::Accept(_))), "{verdict:?}");
    let audited = audit.0.lock().unwrap().clone();
    (captured.text(), audited)
}

// A current-thread runtime: the plugin's host calls run on this thread, under its subscriber.
#[tokio::test]
async fn a_plugin_that_logs_megabytes_adds_at_most_its_budget_to_the_log_and_the_audit() {
    for with_audit in [true, false] {
        let (log, audited) = flood(with_audit).await;
        let lines: Vec<&str> = log.lines().collect();
        let flood: Vec<&&str> = lines.iter().filter(|l| l.contains(" flood")).collect();
        let message_bytes: usize = flood
            .iter()
            .map(|l| l.len() - l.find(" flood").unwrap_or(0))
            .sum();
        eprintln!(
            "audit sink {with_audit}: the log got {} bytes in {} lines ({} of the plugin's, \
             {message_bytes} bytes from where their text starts)",
            log.len(),
            lines.len(),
            flood.len()
        );
        // Each admitted line once: not also as its audit copy.
        assert!(
            flood.len() <= caps::LOG_LINES,
            "{} flood lines",
            flood.len()
        );
        assert!(message_bytes <= caps::LOG_BYTES, "{message_bytes} bytes");
        // Everything printed, formatting included (about 100 bytes a line).
        assert!(
            log.len() <= caps::LOG_BYTES + (caps::LOG_LINES + 2) * 200,
            "the log got {} bytes",
            log.len()
        );
        // Newlines in a message are escaped: no line of the log is the plugin's forgery.
        assert!(
            lines.iter().all(|l| !l.starts_with("FORGED")),
            "a plugin forged a log line"
        );
        // One line says the cap was hit, naming the plugin and what was dropped.
        let cap_lines: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains("logged more than"))
            .collect();
        assert_eq!(cap_lines.len(), 1, "{cap_lines:?}");
        assert!(
            cap_lines[0]
                .contains("plugin `hostile` logged more than 64 lines or 16384 bytes in one call")
                && cap_lines[0].contains("more lines ("),
            "{}",
            cap_lines[0]
        );
        // The audit copy: the same budget, and the same closing line.
        if with_audit {
            let audited_bytes: usize = audited.iter().map(String::len).sum();
            assert!(audited.len() <= caps::LOG_LINES + 1, "{}", audited.len());
            assert!(
                audited_bytes <= caps::LOG_BYTES + (caps::LOG_LINES + 1) * 100,
                "{audited_bytes}"
            );
            assert!(
                audited
                    .last()
                    .unwrap()
                    .contains("logged more than 64 lines"),
                "{:?}",
                audited.last()
            );
        }
    }
}

#[tokio::test]
async fn a_call_within_its_budget_is_logged_whole() {
    // The TOTP plugin logs a line or two: nothing is dropped, no cap line.
    let env = TestEnv::with_totp();
    let host = env.host();
    let captured = Captured::default();
    let guard = captured.install();
    let _ = authenticate_once(&host, &connection_with("alice", "otp", "000000")).await;
    drop(guard);
    assert!(!captured.text().contains("logged more than"));
}

/// The gateway's side of a login, in memory: refusals are collected.
struct Gateway {
    refusals: Mutex<Vec<String>>,
}

impl LoginContext for Gateway {
    fn connection(&self, user: &User, login: &LoginSpec) -> ConnectionInfo {
        let mut conn = connection(user.name.as_str());
        conn.options = login.options.clone();
        conn
    }
    fn find_user(&self, _name: &str) -> Option<User> {
        None
    }
    fn refused(&self, _user: &User, detail: String) {
        self.refusals.lock().unwrap().push(detail);
    }
}

fn alice() -> User {
    User {
        name: Name::new("alice").unwrap(),
        password_hash: None,
        public_keys: Vec::new(),
        groups: Vec::new(),
        email: None,
        rdp_secret: None,
        created: gatehouse_core::time::Timestamp(0),
    }
}

/// Runs a login through the hostile plugin asking `questions` questions, answering each; returns
/// the outcome, the questions asked, what was audited and what the user is told.
async fn login_with_questions(
    questions: u32,
) -> (&'static str, usize, Vec<String>, Option<String>) {
    let env = TestEnv::new();
    env.install_hostile(
        "many-questions",
        grants(),
        &format!("questions = {questions}"),
    );
    let host = env.host();
    let gateway = Gateway {
        refusals: Mutex::new(Vec::new()),
    };
    let login = LoginSpec::parse("alice@root@db1").unwrap();
    let mut pending = PendingLogin::new(alice(), login, "password");
    let mut cookies = SessionCookies::default();
    let mut asked = 0;
    let outcome = loop {
        match login::run(&gateway, &host, &mut pending, &mut cookies).await {
            Next::Accept => break "accept",
            Next::Deny => break "deny",
            Next::Ask(question) => {
                asked += 1;
                assert_eq!(question.key, format!("hostile-q{asked}"));
                assert!(asked <= 20, "the gateway keeps asking");
                pending.answer(format!("answer {asked}"));
            }
        }
    };
    let refusals = gateway.refusals.lock().unwrap().clone();
    (
        outcome,
        asked,
        refusals,
        pending.refusal().map(str::to_owned),
    )
}

#[tokio::test]
async fn eight_questions_are_asked_and_a_ninth_refuses_the_login_naming_the_plugin() {
    let (outcome, asked, refusals, user_line) = login_with_questions(8).await;
    assert_eq!((outcome, asked), ("accept", 8), "{refusals:?}");
    assert!(refusals.is_empty());
    assert_eq!(user_line, None);

    let (outcome, asked, refusals, user_line) = login_with_questions(9).await;
    assert_eq!((outcome, asked), ("deny", 8), "{refusals:?}");
    assert_eq!(
        refusals,
        [
            "plugin `hostile` asked question 9 of this login (9 of them its own, key `hostile-q9`); \
          at most 8 questions per login, so the login is refused"
        ]
    );
    assert_eq!(
        user_line.as_deref(),
        Some("access denied: plugin `hostile` asked more than 8 questions")
    );
}

/// The resident set of this process, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test]
async fn a_plugin_filling_its_cache_is_refused_at_its_memory_limit() {
    let env = TestEnv::new();
    // 16 MiB of memory: the cache may hold 16 MiB. A CPU budget a loaded machine cannot
    // exhaust before the cache is full (the old limits let it reach 10,000 x 64 KiB = 625 MiB).
    env.install_hostile(
        "fill-cache",
        limited(Limits {
            memory_mib: 16,
            cpu_ms: 5000,
            timeout_ms: 10_000,
            ..Limits::default()
        }),
        "",
    );
    let host = env.host();
    let rss_before = rss();
    let limit = 16 * 1024 * 1024;
    for round in 0..3 {
        let verdict = authenticate_once(&host, &connection("alice")).await;
        let Ok(AaVerdict::Deny { reason, .. }) = &verdict else {
            panic!("round {round}: {verdict:?}");
        };
        eprintln!("round {round}: {reason}");
        assert!(
            reason.contains("TooLarge(\"cache full:") && reason.contains("of the 16777216 bytes"),
            "{reason}"
        );
        // The first round fills it; later rounds only rewrite what fits (the keys repeat).
        let (bytes, entries) = host.cache_usage("hostile").unwrap();
        assert!(bytes <= limit, "the cache holds {bytes} bytes");
        assert!(bytes > limit - 2 * (64 * 1024 + 128), "{bytes}");
        assert_eq!(entries, 255, "{bytes} bytes");
    }
    let grown = rss().saturating_sub(rss_before);
    eprintln!("RSS grew by {} KiB", grown / 1024);
    assert!(
        grown < limit as u64 + 24 * 1024 * 1024,
        "the host grew by {grown} bytes"
    );
}
