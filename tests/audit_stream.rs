//! End to end: the audit trail streamed to a real rsyslog (RFC 5424 over TCP with octet
//! counting), which parses each message and writes it back out in RFC 5424, and to a real
//! snmptrapd (SNMPv2c informs and traps over UDP), which logs each notification's varbinds. A
//! receiver that is down loses nothing: the events wait in the trail and arrive when it is
//! back, every one.
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
        (
            serde_json::json!([{"name": "a", "syslog": "127.0.0.1:514", "snmp": "127.0.0.1"}]),
            "audit stream `a`: give either `syslog` (HOST:PORT, RFC 5424 over TCP) or `snmp` \
             (HOST[:PORT], SNMPv2c over UDP), not both",
        ),
        (
            serde_json::json!([{"name": "a", "kinds": ["login_failed"]}]),
            "audit stream `a`: no receiver: give `syslog`",
        ),
        (
            serde_json::json!([{"name": "a", "snmp": "127.0.0.1:99999"}]),
            "snmp `127.0.0.1:99999`: `99999` is not a port",
        ),
        (
            serde_json::json!([{"name": "a", "snmp": "nms.example", "tls": true}]),
            "`tls`, `ca_file` and `server_name` are for `syslog` streams",
        ),
        (
            serde_json::json!([{"name": "a", "syslog": "127.0.0.1:514", "community": "c"}]),
            "`community` and `inform` are for `snmp` streams",
        ),
        (
            serde_json::json!([{"name": "a", "snmp": "127.0.0.1", "comunity": "c"}]),
            "unknown field `comunity`",
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
    let scratch = tempfile::tempdir().unwrap();
    let mut gh = Gatehouse::init();
    // A plugin on every login, to be counted: it answers, or traps when the login asks it to.
    gh.install_plugin(
        scratch.path(),
        "hostile",
        "[limits]\ntimeout-ms = 3000\n",
        Some("mode = \"from-login\"\n"),
    );
    gh.add_user_with_password("carol", "Carol-gw-pw-5Tq8");
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
    for mode in ["deny", "deny", "trap"] {
        let login = format!("hostile={mode}@carol@root@nowhere");
        let out = support::ssh_client::Client::password(gh.ssh_port(), &login, "Carol-gw-pw-5Tq8")
            .option("NumberOfPasswordPrompts=1")
            .ssh("true");
        assert!(!out.status.success());
    }
    let text = poll(Duration::from_secs(20), || {
        let text = scrape();
        text.contains("gatehouse_audit_events_total{kind=\"admin_change\"} 3")
            .then_some(text)
    })
    .unwrap_or_else(|| panic!("no admin_change count:\n{}", scrape()));
    // Plugin calls by outcome (a verdict of deny is an answer; a trap is a failure), their
    // latency as a histogram whose buckets only grow, none running now.
    let calls = "gatehouse_plugin_calls_total{plugin=\"hostile\",hook=\"aa.authenticate\"";
    assert!(
        text.contains(&format!("{calls},outcome=\"ok\"}} 2\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{calls},outcome=\"failed\"}} 1\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("{calls},outcome=\"timeout\"}} 0\n")),
        "{text}"
    );
    let histogram =
        "gatehouse_plugin_call_seconds_bucket{plugin=\"hostile\",hook=\"aa.authenticate\",le=";
    let buckets: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(histogram))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 12, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&3), "{text}");
    assert!(
        text.contains(
            "gatehouse_plugin_call_seconds_count{plugin=\"hostile\",hook=\"aa.authenticate\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("gatehouse_plugin_calls_in_flight 0\n"),
        "{text}"
    );
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
            assert!(
                matches!(parts.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
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
        // A histogram's samples are its name with _bucket, _sum or _count.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| declared.contains(*f)))
            .unwrap_or(name);
        assert!(declared.contains(family), "a sample without HELP: {line}");
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

/// The community the test's snmptrapd accepts.
const COMMUNITY: &str = "gatehouse-test";
/// snmpTrapOID.0 of gatehouse's notifications: gatehouseAuditEvent and gatehouseAuditWarning.
const AUDIT_EVENT: &str = ".1.3.6.1.4.1.32473.1.0.1";
const AUDIT_WARNING: &str = ".1.3.6.1.4.1.32473.1.0.2";

/// `program` from PATH or /usr/sbin (where Debian puts daemons); a missing one fails the test
/// with the package to install.
fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed: install the Debian package `{package}` \
                 (scripts/install-test-deps.sh installs every test dependency)"
            )
        })
}

/// One notification as the test's snmptrapd logged it.
#[derive(Debug)]
struct Notification {
    /// `INFORM` or `TRAP2`.
    pdu: String,
    community: String,
    /// Numeric OID (`.1.3.6...`) to `TYPE: value` as net-snmp prints it.
    binds: std::collections::BTreeMap<String, String>,
}

impl Notification {
    fn bind(&self, oid: &str) -> &str {
        self.binds
            .get(oid)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no varbind {oid}: {self:#?}"))
    }

    /// A string varbind's text (`STRING: "..."`, or `""` for an empty one).
    fn string(&self, n: u32) -> String {
        let value = self.bind(&format!(".1.3.6.1.4.1.32473.1.1.{n}.0"));
        let text = value
            .strip_prefix("STRING: ")
            .unwrap_or_else(|| panic!("varbind {n} is not a string: {value}"));
        text.trim_matches('"').to_string()
    }

    fn seq(&self) -> u64 {
        let value = self.bind(".1.3.6.1.4.1.32473.1.1.1.0");
        value
            .strip_prefix("Counter64: ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("seq is not a Counter64: {value}"))
    }
}

/// A real snmptrapd (Debian's `snmptrapd`, net-snmp) on 127.0.0.1:`port` (UDP), accepting
/// `COMMUNITY` only (`authCommunity log`, authorization on), logging each notification on one
/// line of `traps.log` with numeric OIDs. Not the system service: its own config, persistent
/// directory and log in the test's directory.
struct Snmptrapd {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Snmptrapd {
    fn start(dir: &Path, port: u16) -> Snmptrapd {
        let snmptrapd = require("snmptrapd", "snmptrapd");
        let conf = dir.join("snmptrapd.conf");
        std::fs::write(
            &conf,
            format!("authCommunity log,execute,net {COMMUNITY}\ndisableAuthorization no\n"),
        )
        .unwrap();
        let log = dir.join("traps.log");
        let before = std::fs::read_to_string(&log).unwrap_or_default();
        let child = Command::new(snmptrapd)
            .args(["-f", "-C", "-c"])
            .arg(&conf)
            // Appended to (a restart keeps what came before).
            .args(["-A", "-Lf"])
            .arg(&log)
            // No MIBs (numeric OIDs only), no name lookups.
            .args(["-m", "", "-On", "-n", "-F", "NOTIFICATION %P\t%v\n"])
            .arg(format!("udp:127.0.0.1:{port}"))
            .env("SNMP_PERSISTENT_DIR", dir.join("snmp-persist"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("snmptrapd.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut trapd = Snmptrapd {
            child: Some(child),
            dir: dir.to_path_buf(),
            port,
        };
        // snmptrapd logs its version once its socket is open (and exits when it cannot open it).
        let up = poll(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let started = text[before.len().min(text.len())..].contains("NET-SNMP version");
            let exited = trapd
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            (started || exited).then_some(started && !exited)
        });
        assert!(
            up == Some(true),
            "snmptrapd did not start: {}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(dir.join("snmptrapd.stderr")).unwrap_or_default()
        );
        trapd
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every gatehouse notification received so far, in order.
    fn notifications(&self) -> Vec<Notification> {
        std::fs::read_to_string(self.dir.join("traps.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("NOTIFICATION ")?;
                let mut fields = rest.split('\t');
                // `INFORM, SNMP v2c, community NAME`
                let security = fields.next()?;
                let (pdu, community) = security.split_once(", SNMP v2c, community ")?;
                let binds = fields
                    .filter_map(|b| b.split_once(" = "))
                    .map(|(oid, value)| (oid.to_string(), value.to_string()))
                    .collect();
                Some(Notification {
                    pdu: pdu.to_string(),
                    community: community.to_string(),
                    binds,
                })
            })
            .filter(|n| {
                n.binds
                    .get(".1.3.6.1.6.3.1.1.4.1.0")
                    .is_some_and(|oid| oid.contains(".1.3.6.1.4.1.32473.1.0."))
            })
            .collect()
    }

    fn seqs(&self) -> BTreeSet<u64> {
        self.notifications().iter().map(Notification::seq).collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("traps.log")).unwrap_or_default()
    }
}

impl Drop for Snmptrapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The seq of every audit event.
fn all_seqs(gh: &Gatehouse) -> BTreeSet<u64> {
    gh.audit()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect()
}

/// `date -u` for a millisecond time, as RFC 3339 with milliseconds.
fn rfc3339(millis: u64) -> String {
    let out = Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", millis / 1000),
            "+%Y-%m-%dT%H:%M:%S",
        ])
        .output()
        .unwrap();
    format!(
        "{}.{:03}Z",
        String::from_utf8_lossy(&out.stdout).trim(),
        millis % 1000
    )
}

/// Informs of the chosen kinds reach a real snmptrapd with their varbinds, and each is
/// answered; other kinds are not sent. A second stream sends SNMPv2-Traps.
#[test]
fn audit_events_reach_snmptrapd_as_informs_of_the_chosen_kinds() {
    use support::ssh_client::Client;
    let scratch = tempfile::tempdir().unwrap();
    let port = free_port();
    let trapd = Snmptrapd::start(scratch.path(), port);
    let mut gh = Gatehouse::init();
    gh.edit_settings(|s| {
        s["audit_streams"] = serde_json::json!([
            {"name": "nms", "snmp": format!("127.0.0.1:{port}"), "community": COMMUNITY,
             "kinds": ["login_failed", "login_ok"], "from_start": true},
            {"name": "nms-traps", "snmp": format!("127.0.0.1:{port}"), "community": COMMUNITY,
             "inform": false, "kinds": ["login_failed"], "from_start": true},
        ]);
    });
    gh.add_user_with_password("carol", "Carol-gw-pw-5Tq8");
    gh.serve();
    // A failed login, then a good one (whose target is unknown: access_denied follows, and
    // is not sent).
    let failed = Client::password(gh.ssh_port(), "carol@root@nowhere", "not-her-password")
        .option("NumberOfPasswordPrompts=1")
        .ssh("true");
    assert!(!failed.status.success());
    let ok = Client::password(gh.ssh_port(), "carol@root@nowhere", "Carol-gw-pw-5Tq8").ssh("true");
    assert!(!ok.status.success());
    gh.cli_ok(&["group", "add", "ops"]);
    // One more failed login: once it arrived, every event before it was looked at.
    let again = Client::password(gh.ssh_port(), "carol@root@nowhere", "still-not-it")
        .option("NumberOfPasswordPrompts=1")
        .ssh("true");
    assert!(!again.status.success());
    let chosen: Vec<serde_json::Value> = gh
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "login_failed" || e["kind"] == "login_ok")
        .collect();
    let want: BTreeSet<u64> = chosen.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(
        chosen
            .iter()
            .filter(|e| e["kind"] == "login_failed")
            .count()
            >= 2
            && chosen.iter().any(|e| e["kind"] == "login_ok"),
        "{:#?}",
        gh.audit()
    );
    let informs = || -> Vec<Notification> {
        trapd
            .notifications()
            .into_iter()
            .filter(|n| n.pdu == "INFORM")
            .collect()
    };
    let arrived = poll(Duration::from_secs(30), || {
        let seqs: BTreeSet<u64> = informs().iter().map(Notification::seq).collect();
        seqs.is_superset(&want).then_some(())
    });
    assert!(
        arrived.is_some(),
        "not every chosen event reached snmptrapd: want {want:?}\n{}\n{}",
        trapd.log(),
        gh.log_tail(30)
    );
    let informs = informs();
    // Read again: the trail as it stands once they arrived (no login happens after).
    let chosen: Vec<serde_json::Value> = gh
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "login_failed" || e["kind"] == "login_ok")
        .collect();
    let want: BTreeSet<u64> = chosen.iter().filter_map(|e| e["seq"].as_u64()).collect();
    // Only the chosen kinds.
    let kinds: BTreeSet<String> = informs.iter().map(|n| n.string(2)).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["login_failed".to_string(), "login_ok".to_string()]),
        "{informs:#?}"
    );
    let seqs: BTreeSet<u64> = informs.iter().map(Notification::seq).collect();
    assert_eq!(seqs, want, "{informs:#?}");
    // Each carries its event.
    for event in &chosen {
        let seq = event["seq"].as_u64().unwrap();
        let n = informs.iter().find(|n| n.seq() == seq).unwrap();
        assert_eq!(n.community, COMMUNITY);
        assert!(
            n.bind(".1.3.6.1.2.1.1.3.0").starts_with("Timeticks: ("),
            "{n:#?}"
        );
        let kind = event["kind"].as_str().unwrap();
        let notification = if kind == "login_failed" {
            AUDIT_WARNING
        } else {
            AUDIT_EVENT
        };
        assert_eq!(
            n.bind(".1.3.6.1.6.3.1.1.4.1.0"),
            format!("OID: {notification}")
        );
        assert_eq!(n.string(2), kind);
        assert_eq!(
            n.string(3),
            rfc3339(event["time"].as_u64().expect("time in milliseconds"))
        );
        assert_eq!(n.string(4), event["user"].as_str().unwrap_or(""), "{n:#?}");
        assert_eq!(n.string(5), event["detail"].as_str().unwrap(), "{n:#?}");
        assert_eq!(
            n.string(8),
            event["client"].as_str().unwrap_or(""),
            "{n:#?}"
        );
        assert_eq!(
            n.string(11),
            event["chain"].as_str().unwrap_or(""),
            "{n:#?}"
        );
        assert!(!n.string(10).is_empty(), "the host: {n:#?}");
    }
    assert!(
        informs.iter().any(|n| n.string(4) == "carol"),
        "{informs:#?}"
    );
    // The trap stream: login_failed only, as SNMPv2-Trap PDUs.
    let failed_seqs: BTreeSet<u64> = chosen
        .iter()
        .filter(|e| e["kind"] == "login_failed")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let traps = poll(Duration::from_secs(30), || {
        let traps: Vec<Notification> = trapd
            .notifications()
            .into_iter()
            .filter(|n| n.pdu == "TRAP2")
            .collect();
        let seqs: BTreeSet<u64> = traps.iter().map(Notification::seq).collect();
        seqs.is_superset(&failed_seqs).then_some(traps)
    })
    .unwrap_or_else(|| panic!("no traps: {}\n{}", trapd.log(), gh.log_tail(30)));
    assert!(
        traps.iter().all(|n| n.string(2) == "login_failed"),
        "{traps:#?}"
    );
}

/// A receiver that is down loses nothing: the informs it did not answer are sent again once it
/// is back, and the seqs it has cover the whole trail, without a gap.
#[test]
fn informs_wait_while_snmptrapd_is_down_and_every_event_arrives() {
    let scratch = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut trapd = Snmptrapd::start(scratch.path(), port);
    let mut gh = Gatehouse::init();
    gh.edit_settings(|s| {
        s["audit_streams"] = serde_json::json!([{
            "name": "nms",
            "snmp": format!("127.0.0.1:{port}"),
            "community": COMMUNITY,
            "from_start": true,
        }]);
    });
    gh.cli_ok(&["group", "add", "ops"]);
    gh.serve();
    gh.cli_ok(&["group", "add", "dbas"]);
    let first = all_seqs(&gh);
    assert!(
        poll(Duration::from_secs(30), || trapd
            .seqs()
            .is_superset(&first)
            .then_some(()))
        .is_some(),
        "{}\n{}",
        trapd.log(),
        gh.log_tail(30)
    );

    // Down: events wait in the trail; commands go on.
    trapd.stop();
    for group in ["sec", "audit", "net"] {
        gh.cli_ok(&["group", "add", group]);
    }
    let waiting = all_seqs(&gh);
    assert!(
        poll(Duration::from_secs(20), || gh
            .log_text()
            .contains("the audit stream's receiver cannot be reached; events wait in the trail")
            .then_some(()))
        .is_some(),
        "{}",
        gh.log_tail(30)
    );
    assert!(!trapd.seqs().is_superset(&waiting));
    // Back on the same port: everything arrives, the whole trail without a gap.
    let trapd = Snmptrapd::start(scratch.path(), trapd.port);
    let head = *waiting.last().unwrap();
    let arrived = poll(Duration::from_secs(60), || {
        trapd.seqs().is_superset(&waiting).then_some(())
    });
    assert!(
        arrived.is_some(),
        "events lost while snmptrapd was down: have {:?}, want {waiting:?}\n{}",
        trapd.seqs(),
        gh.log_tail(30)
    );
    assert_eq!(
        trapd.seqs().range(..=head).copied().collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    assert!(
        poll(Duration::from_secs(20), || gh
            .log_text()
            .contains("the audit stream's receiver is back")
            .then_some(()))
        .is_some(),
        "{}",
        gh.log_tail(30)
    );
}

/// The Prometheus lag of `stream`.
fn stream_lag(metrics_port: u16, stream: &str) -> Option<u64> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let prefix = format!("gatehouse_audit_stream_lag_events{{stream=\"{stream}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.parse().ok())
}

/// A community snmptrapd does not accept: it drops the informs without a Response, so nothing
/// counts as delivered; gatehouse says so and keeps its position, and with the right community
/// everything arrives from there. Traps with the wrong community are dropped too, but nothing
/// tells the sender: they count as sent (best effort, as documented).
#[test]
fn informs_with_a_wrong_community_are_not_counted_delivered() {
    let scratch = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let trapd = Snmptrapd::start(scratch.path(), port);
    let mut gh = Gatehouse::init();
    let streams = |community: &str| {
        serde_json::json!([
            {"name": "nms", "snmp": format!("127.0.0.1:{port}"), "community": community,
             "from_start": true},
            {"name": "nms-traps", "snmp": format!("127.0.0.1:{port}"),
             "community": "not-the-community", "inform": false, "from_start": true},
        ])
    };
    gh.edit_settings(|s| {
        s["metrics"] = serde_json::json!({"listen": format!("127.0.0.1:{metrics_port}")});
        s["audit_streams"] = streams("not-the-community");
    });
    gh.cli_ok(&["group", "add", "ops"]);
    gh.serve();
    gh.cli_ok(&["group", "add", "dbas"]);
    let events = all_seqs(&gh);
    let log_line = poll(Duration::from_secs(40), || {
        gh.log_text()
            .lines()
            .find(|l| l.contains("stream=nms ") && l.contains("cannot be reached"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no warning:\n{}", gh.log_tail(30)));
    assert!(
        log_line.contains("WARN")
            && log_line.contains("no Response to the InformRequest")
            && log_line.contains("does not accept this stream's community"),
        "{log_line}"
    );
    // The community itself is not in the log.
    assert!(!gh.log_text().contains("not-the-community"));
    // Nothing was counted delivered: the inform stream lags by every event; the trap stream
    // sent them all into the void.
    let head = *events.last().unwrap();
    let lag = stream_lag(metrics_port, "nms").expect("the nms stream's lag");
    assert!(lag >= head, "lag {lag}, head {head}");
    assert!(
        poll(Duration::from_secs(20), || (stream_lag(
            metrics_port,
            "nms-traps"
        ) == Some(0))
        .then_some(()))
        .is_some(),
        "the trap stream's lag: {:?}",
        stream_lag(metrics_port, "nms-traps")
    );
    assert!(
        trapd.notifications().is_empty(),
        "snmptrapd accepted a wrong community: {}",
        trapd.log()
    );
    // With the right community, from the kept position: everything.
    gh.stop_server();
    gh.edit_settings(|s| s["audit_streams"] = streams(COMMUNITY));
    gh.serve();
    let arrived = poll(Duration::from_secs(30), || {
        trapd.seqs().is_superset(&events).then_some(())
    });
    assert!(
        arrived.is_some(),
        "have {:?}, want {events:?}\n{}\n{}",
        trapd.seqs(),
        trapd.log(),
        gh.log_tail(30)
    );
    assert!(
        trapd
            .notifications()
            .iter()
            .all(|n| n.community == COMMUNITY)
    );
}
