//! Test fixtures: the aiosmtpd server, a small PKI made with rcgen, settings and a sink that
//! collects delivery reports.

use gatehouse_notify::{
    AccessKind, DeliveryReport, DeliverySink, Event, MailSettings, Notification, RequestSummary,
    Security,
};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The interpreter that has python3-aiosmtpd: `GATEHOUSE_TEST_PYTHON`, else Debian's
/// `/usr/bin/python3` (a `python3` earlier on PATH, from pyenv for example, may lack it).
fn python() -> String {
    if let Ok(python) = std::env::var("GATEHOUSE_TEST_PYTHON") {
        return python;
    }
    if Path::new("/usr/bin/python3").exists() {
        return "/usr/bin/python3".into();
    }
    "python3".into()
}

fn require_aiosmtpd(python: &str) {
    let probe = Command::new(python)
        .args(["-c", "import aiosmtpd"])
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "python3-aiosmtpd is not installed for `{python}`: these tests need a real SMTP \
             server. Install it with `apt-get install -y python3-aiosmtpd` \
             (scripts/install-test-deps.sh does). Python said: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!(
            "cannot run `{python}` ({error}): these tests need python3 with python3-aiosmtpd \
             (`apt-get install -y python3-aiosmtpd`, see scripts/install-test-deps.sh)"
        ),
    }
}

/// How the test server is set up.
#[derive(Default)]
pub struct ServerOptions<'a> {
    pub security: Option<Security>,
    pub pki: Option<&'a Pki>,
    /// Required credentials (user, password).
    pub auth: Option<(&'a str, &'a str)>,
}

/// A running aiosmtpd. Killed on drop; it also exits by itself when its stdin closes.
pub struct SmtpServer {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
    outdir: tempfile::TempDir,
}

impl SmtpServer {
    pub fn start(options: ServerOptions<'_>) -> Self {
        let python = python();
        require_aiosmtpd(&python);
        let outdir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notify/smtp_server.py");
        let mut command = Command::new(&python);
        command
            .arg(script)
            .arg("--outdir")
            .arg(outdir.path())
            .arg("--security")
            .arg(options.security.unwrap_or(Security::None).as_str());
        if let Some(pki) = options.pki {
            command
                .arg("--cert")
                .arg(&pki.server_chain)
                .arg("--key")
                .arg(&pki.server_key);
        }
        if let Some((user, password)) = options.auth {
            let file = outdir.path().join("server-password");
            std::fs::write(&file, password).unwrap();
            command
                .arg("--auth-user")
                .arg(user)
                .arg("--auth-password-file")
                .arg(file);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start `{python}`: {error}"));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.starts_with("MISSING") {
            panic!("python3-aiosmtpd is not installed: `apt-get install -y python3-aiosmtpd`");
        }
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP server did not start (it printed {line:?})"));
        Self {
            child,
            _stdin: stdin,
            port,
            outdir,
        }
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.outdir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
            .collect()
    }

    /// Waits (up to 15 s) until `count` messages arrived and returns them.
    pub async fn wait_for_messages(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} messages, the server received {}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message as the server received it, decoded by Python's email parser.
#[derive(Debug, serde::Deserialize)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// `TLSv1.3` and the like, or none for a plain connection.
    pub tls: Option<String>,
    /// The login the client authenticated as.
    pub login: Option<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    pub content_type: String,
    pub charset: Option<String>,
    pub body: Option<String>,
    pub raw: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("no `{name}` header in {:?}", self.headers))
    }

    pub fn body(&self) -> &str {
        self.body.as_deref().expect("a text/plain body")
    }
}

/// A CA and a server certificate signed by it, as PEM files.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_chain: PathBuf,
    pub server_key: PathBuf,
}

impl Pki {
    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn new() -> Self {
        Self::for_names(&["localhost", "127.0.0.1"])
    }

    pub fn for_names(names: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Gatehouse test mail CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

        let ca_cert = dir.path().join("ca.pem");
        let server_chain = dir.path().join("server-chain.pem");
        let server_key_path = dir.path().join("server-key.pem");
        std::fs::write(&ca_cert, ca.pem()).unwrap();
        std::fs::write(&server_chain, server_cert.pem() + &ca.pem()).unwrap();
        std::fs::write(&server_key_path, server_key.serialize_pem()).unwrap();
        Self {
            _dir: dir,
            ca_cert,
            server_chain,
            server_key: server_key_path,
        }
    }
}

/// Settings for a server on this machine.
pub fn settings(host: &str, port: u16, security: Security) -> MailSettings {
    MailSettings {
        host: host.to_owned(),
        port: Some(port),
        security,
        username: None,
        password_file: None,
        from: "Gatehouse <gatehouse@example.test>".to_owned(),
        ca_file: None,
        timeout_seconds: Some(5),
        gateway_url: Some("https://gatehouse.example.test/".to_owned()),
    }
}

/// A password file with mode 0600 in `dir`.
pub fn password_file(dir: &Path, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("smtp-password");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A sink that forwards reports to a channel the test reads.
pub fn channel_sink() -> (
    Arc<dyn DeliverySink>,
    mpsc::UnboundedReceiver<DeliveryReport>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let sink = move |report: DeliveryReport| {
        let _ = sender.send(report);
    };
    (Arc::new(sink), receiver)
}

/// The next `count` reports, waiting up to 20 s.
pub async fn reports(
    receiver: &mut mpsc::UnboundedReceiver<DeliveryReport>,
    count: usize,
) -> Vec<DeliveryReport> {
    let mut reports = Vec::new();
    while reports.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(20), receiver.recv())
            .await
            .unwrap_or_else(|_| panic!("waited 20 s for report {} of {count}", reports.len() + 1))
            .expect("the sink is alive");
        reports.push(next);
    }
    reports
}

pub const REQUEST_ID: &str = "0190f3a2-7c4e-7d1a-9b52-3f0e8c1d2a45";

pub fn request() -> RequestSummary {
    RequestSummary {
        id: REQUEST_ID.to_owned(),
        requester: "alice".to_owned(),
        target: "root@db1".to_owned(),
        access: AccessKind::Session,
    }
}

pub fn awaiting_approval(recipients: &[&str]) -> Notification {
    Notification {
        request: request(),
        event: Event::AwaitingApproval {
            reason: Some("rotate the TLS certificate on db1".to_owned()),
            ticket: Some("CHG-1042".to_owned()),
            approvals_given: 0,
            approvals_needed: 2,
        },
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
    }
}

pub fn approved(recipients: &[&str]) -> Notification {
    Notification {
        request: request(),
        event: Event::Approved {
            approved_by: "bob".to_owned(),
            // 2025-03-01T14:30:00Z
            window_end: Some(gatehouse_core::time::Timestamp(1_740_839_400_000)),
        },
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
    }
}
