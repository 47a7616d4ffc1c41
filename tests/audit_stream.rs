//! End to end: the audit trail streamed to a real rsyslog (RFC 5424 over TCP with octet
//! counting), which parses each message and writes it back out in RFC 5424. A receiver that is
//! down loses nothing: the events wait in the trail and arrive when it is back, every one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{Gatehouse, free_port, poll, port_open};

/// A real rsyslogd with a TCP input on `port`, writing what it receives to `out.log`.
struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16) -> Rsyslog {
        Self::start_with(dir, port, None)
    }

    /// With `tls` (CA, certificate, key files): TLS only (RFC 5425, rsyslog's gtls driver).
    fn start_with(dir: &Path, port: u16, tls: Option<(&Path, &Path, &Path)>) -> Rsyslog {
        let rsyslogd = Path::new("/usr/sbin/rsyslogd");
        assert!(
            rsyslogd.exists(),
            "rsyslogd is missing: install Debian's rsyslog package (scripts/install-test-deps.sh)"
        );
        let conf = dir.join("rsyslog.conf");
        let (global, module) = match tls {
            None => (String::new(), "module(load=\"imtcp\")".to_string()),
            Some((ca, cert, key)) => (
                format!(
                    " DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" \
                     DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\"",
                    ca.display(),
                    cert.display(),
                    key.display()
                ),
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" \
                 StreamDriver.Authmode=\"anon\")"
                    .to_string(),
            ),
        };
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{dir}\"{global})\n\
                 {module}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
                 *.* action(type=\"omfile\" file=\"{dir}/out.log\" template=\"RSYSLOG_SyslogProtocol23Format\")\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .unwrap();
        let rsyslog = Rsyslog {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
        };
        assert!(
            poll(Duration::from_secs(20), || port_open(port).then_some(())).is_some(),
            "rsyslogd did not listen: {}",
            std::fs::read_to_string(dir.join("rsyslogd.stderr")).unwrap_or_default()
        );
        rsyslog
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("rsyslogd.pid"));
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("out.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The `seq` of every gatehouse message received.
    fn seqs(&self) -> BTreeSet<u64> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let rest = l.split("[gatehouse@32473 seq=\"").nth(1)?;
                rest.split('"').next()?.parse().ok()
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn the_audit_trail_reaches_rsyslog_and_waits_while_it_is_down() {
    let scratch = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut rsyslog = Rsyslog::start(scratch.path(), port);
    let mut gh = Gatehouse::init();
    gh.edit_settings(|s| {
        s["audit_streams"] = serde_json::json!([{
            "name": "siem",
            "syslog": format!("127.0.0.1:{port}"),
            "from_start": true,
        }]);
    });
    gh.cli_ok(&["group", "add", "ops"]);
    gh.serve();
    gh.cli_ok(&["group", "add", "dbas"]);
    let all_seqs = |gh: &Gatehouse| -> BTreeSet<u64> {
        gh.audit()
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect()
    };
    let arrived = poll(Duration::from_secs(30), || {
        let want = all_seqs(&gh);
        rsyslog.seqs().is_superset(&want).then_some(want)
    });
    assert!(
        arrived.is_some(),
        "not every event reached rsyslog: {:?} of {:?}\n{}",
        rsyslog.seqs(),
        all_seqs(&gh),
        gh.log_tail(30)
    );
    // rsyslog parsed them as RFC 5424: header fields and structured data came back intact.
    let line = rsyslog
        .lines()
        .into_iter()
        .find(|l| l.contains(" admin_change "))
        .expect("an admin_change message");
    assert!(
        line.starts_with("<86>1 ")
            && line.contains(" gatehouse - admin_change [gatehouse@32473 seq=\""),
        "{line}"
    );
    assert!(line.contains(" chain=\""), "{line}");

    // The receiver goes away: events wait in the trail, sessions and commands go on.
    rsyslog.stop();
    gh.cli_ok(&["group", "add", "sec"]);
    gh.cli_ok(&["group", "add", "audit"]);
    std::thread::sleep(Duration::from_secs(2));
    let waiting = all_seqs(&gh);
    assert!(!rsyslog.seqs().is_superset(&waiting));
    // Back on the same port: everything it missed arrives.
    let rsyslog = Rsyslog::start(scratch.path(), rsyslog.port);
    let arrived = poll(Duration::from_secs(60), || {
        rsyslog.seqs().is_superset(&waiting).then_some(())
    });
    assert!(
        arrived.is_some(),
        "events lost while rsyslog was down: have {:?}, want {:?}\n{}",
        rsyslog.seqs(),
        waiting,
        gh.log_tail(30)
    );
    assert!(
        gh.log_text()
            .contains("the audit stream's receiver cannot be reached; events wait in the trail"),
        "{}",
        gh.log_tail(30)
    );
}

/// A stream setting that cannot work stops `serve` at start with the reason.
#[test]
fn a_bad_stream_setting_is_refused_at_start() {
    use support::OutputExt;
    let gh = Gatehouse::init();
    for (streams, says) in [
        (
            serde_json::json!([{"name": "a", "syslog": "127.0.0.1:514"}, {"name": "a", "syslog": "127.0.0.1:515"}]),
            "each stream needs a name of its own (`a`)",
        ),
        (
            serde_json::json!([{"name": "a", "syslog": "siem.example"}]),
            "syslog `siem.example` is not HOST:PORT",
        ),
        (
            serde_json::json!([{"name": "a", "syslog": "127.0.0.1:514", "facility": 30}]),
            "facility 30 is not a syslog facility",
        ),
    ] {
        gh.edit_settings(|s| s["audit_streams"] = streams.clone());
        let mut cmd = gh.command();
        cmd.args([
            "serve",
            "--ssh-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--rdp-listen",
            "127.0.0.1:0",
        ]);
        let out = support::run(cmd, None, Duration::from_secs(30));
        assert!(!out.status.success(), "{}", out.describe());
        assert!(out.stderr_text().contains(says), "{}", out.describe());
    }
}

/// The Prometheus endpoint: every line parses as the text format, each metric has its HELP and
/// TYPE, audit events are counted by kind as they happen, and an audit stream's lag shows.
#[test]
fn metrics_count_audit_events_and_show_a_stream_s_lag() {
    let syslog_port = free_port();
    let metrics_port = free_port();
    let mut gh = Gatehouse::init();
    gh.edit_settings(|s| {
        s["metrics"] = serde_json::json!({"listen": format!("127.0.0.1:{metrics_port}")});
        // A stream whose receiver is not there: its lag grows.
        s["audit_streams"] = serde_json::json!([{
            "name": "siem",
            "syslog": format!("127.0.0.1:{syslog_port}"),
        }]);
    });
    gh.serve();
    let scrape = || -> String {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{metrics_port}/metrics")])
            .output()
            .unwrap();
        assert!(out.status.success(), "curl /metrics failed");
        String::from_utf8(out.stdout).unwrap()
    };
    for group in ["ops", "dbas", "sec"] {
        gh.cli_ok(&["group", "add", group]);
    }
    let text = poll(Duration::from_secs(20), || {
        let text = scrape();
        text.contains("gatehouse_audit_events_total{kind=\"admin_change\"} 3")
            .then_some(text)
    })
    .unwrap_or_else(|| panic!("no admin_change count:\n{}", scrape()));
    // The text format, strictly: HELP and TYPE before each metric's samples, then
    // `name{label="value",...} number`.
    let mut declared: BTreeSet<String> = BTreeSet::new();
    let mut samples = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            declared.insert(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            assert!(declared.contains(name), "TYPE before HELP: {line}");
            assert!(matches!(parts.next(), Some("counter" | "gauge")), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(declared.contains(name), "a sample without HELP: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with("\"}")),
                "{line}"
            );
        }
        samples += 1;
    }
    assert!(samples >= 4, "{text}");
    assert!(text.contains("gatehouse_sessions_running 0\n"), "{text}");
    let lag: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gatehouse_audit_stream_lag_events{stream=\"siem\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(lag >= 3, "{text}");
    // Anything else is a 404.
    let other = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{metrics_port}/admin"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other.stdout), "404");
}

/// `openssl` makes a CA and a server certificate for 127.0.0.1 in `dir`: (ca, cert, key).
fn certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
    let (cert, key, csr) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=test syslog ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "2",
        "-extfile",
        &format!("{name}.ext"),
    ]);
    (dir.join(ca), dir.join(cert), dir.join(key))
}

/// Over TLS (RFC 5425) to rsyslog's gtls listener: delivered when its certificate chains to the
/// configured CA; with another CA nothing is sent and the log says why.
#[test]
fn the_audit_trail_reaches_rsyslog_over_tls_and_only_with_its_certificate() {
    let scratch = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(scratch.path(), "syslog");
    let (other_ca, _, _) = certificates(scratch.path(), "other");
    let port = free_port();
    let rsyslog = Rsyslog::start_with(scratch.path(), port, Some((&ca, &cert, &key)));
    let mut gh = Gatehouse::init();
    gh.edit_settings(|s| {
        s["audit_streams"] = serde_json::json!([
            {"name": "siem", "syslog": format!("127.0.0.1:{port}"), "from_start": true,
             "tls": true, "ca_file": ca},
            {"name": "impostor-check", "syslog": format!("127.0.0.1:{port}"), "from_start": true,
             "tls": true, "ca_file": other_ca, "kinds": ["admin_change"], "facility": 4},
        ]);
    });
    gh.cli_ok(&["group", "add", "ops"]);
    gh.serve();
    gh.cli_ok(&["group", "add", "dbas"]);
    let want: BTreeSet<u64> = gh
        .audit()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let arrived = poll(Duration::from_secs(30), || {
        rsyslog.seqs().is_superset(&want).then_some(())
    });
    assert!(
        arrived.is_some(),
        "not over TLS: {:?} of {want:?}\n{}",
        rsyslog.seqs(),
        gh.log_tail(30)
    );
    // The stream trusting another CA sent nothing (its facility, 4, would show as <3x>).
    assert!(
        rsyslog.lines().iter().all(|l| !l.starts_with("<3")),
        "{:#?}",
        rsyslog.lines()
    );
    assert!(
        poll(Duration::from_secs(20), || gh
            .log_text()
            .contains("stream=impostor-check")
            .then_some(()))
        .is_some(),
        "{}",
        gh.log_tail(30)
    );
    let log = gh.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("stream=impostor-check") && l.contains("cannot be reached"))
        .unwrap_or_else(|| panic!("{}", gh.log_tail(30)));
    assert!(line.to_lowercase().contains("certificate"), "{line}");
}
