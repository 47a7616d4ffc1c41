//! Shared fixtures for the Gatehouse end-to-end tests.
//!
//! Everything here drives real programs: a real OpenSSH `sshd` as the target, the real
//! `gatehouse` binary built by cargo, and the real `ssh`/`scp`/`sftp` clients. No mocks.
//!
//! Each test file includes this module with `mod support;`. Not every test file uses every
//! helper, hence the `dead_code` allowance.
//!
//! The tests need root: they create local Unix accounts (`ghtest_*`) with `useradd` and run
//! `sshd` with password authentication against `/etc/shadow`.
#![allow(dead_code)]

pub mod browser;
pub mod netns;
pub mod postgres;
pub mod rdp_peers;
pub mod recordings;
pub mod slapd;
pub mod ssh_client;
pub mod telnetd;
pub mod totp;
pub mod vnc_peers;
pub mod world;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The `gatehouse` binary under test, built by cargo for this integration-test target.
pub const GATEHOUSE_BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
/// The OpenSSH server used as the target (needs an absolute path: sshd re-executes itself).
pub const SSHD_BIN: &str = "/usr/sbin/sshd";
/// Lock file serialising creation of the shared Unix test accounts across test processes.
pub const USERS_LOCK: &str = "/tmp/gatehouse-test-users.lock";

/// Default bound for one client or CLI invocation; a hang fails the test instead of CI.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for starting a server (sshd or gatehouse) and seeing its port open.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Running processes with a deadline
// ---------------------------------------------------------------------------------------------

/// Collects one pipe of a child process in a background thread.
pub(crate) struct PipeReader {
    buf: Arc<Mutex<Vec<u8>>>,
    handle: JoinHandle<()>,
}

impl PipeReader {
    pub(crate) fn spawn<R: Read + Send + 'static>(mut pipe: R) -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let handle = thread::spawn(move || {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        PipeReader { buf, handle }
    }

    /// What has been read so far.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        self.buf.lock().unwrap().clone()
    }

    pub(crate) fn shared(&self) -> Arc<Mutex<Vec<u8>>> {
        Arc::clone(&self.buf)
    }

    /// Waits (bounded) for EOF, then returns everything read. A grandchild that keeps the pipe
    /// open cannot hang the test: after `grace` we return what we have.
    pub(crate) fn finish(self, grace: Duration) -> Vec<u8> {
        let deadline = Instant::now() + grace;
        while !self.handle.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.buf.lock().unwrap().clone()
    }
}

/// Runs `cmd` to completion with `stdin` (or /dev/null) and a hard deadline. On timeout the
/// process is killed and the test panics with everything it printed.
pub fn run(mut cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
    if let Some(data) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let data = data.to_vec();
        // Ignore EPIPE: a program may legitimately exit without reading its input.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = PipeReader::spawn(child.stdout.take().expect("stdout pipe"));
    let err = PipeReader::spawn(child.stderr.take().expect("stderr pipe"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "timed out after {timeout:?}: {desc}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out.snapshot()),
                    String::from_utf8_lossy(&err.snapshot())
                );
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {desc}: {e}"),
        }
    };
    Output {
        status,
        stdout: out.finish(Duration::from_secs(5)),
        stderr: err.finish(Duration::from_secs(5)),
    }
}

/// Convenience accessors for `std::process::Output`.
pub trait OutputExt {
    fn stdout_text(&self) -> String;
    fn stderr_text(&self) -> String;
    /// Exit code, or `None` when killed by a signal.
    fn code(&self) -> Option<i32>;
    /// Human-readable dump for assertion messages.
    fn describe(&self) -> String;
}

impl OutputExt for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
    fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout_text(),
            self.stderr_text()
        )
    }
}

/// Panics unless `out` succeeded; returns its stdout.
pub fn assert_success(what: &str, out: &Output) -> String {
    assert!(out.status.success(), "{what} failed\n{}", out.describe());
    out.stdout_text()
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(250),
    )
    .is_ok()
}

/// Generates an unencrypted ed25519 key pair `dir/name` + `dir/name.pub` with `ssh-keygen`.
/// Returns the private key path and the public key line (`ssh-ed25519 AAAA... name`).
pub fn generate_keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    let private = dir.join(name);
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private);
    let out = run(cmd, None, Duration::from_secs(30));
    assert_success("ssh-keygen", &out);
    let public = fs::read_to_string(private.with_extension("pub"))
        .or_else(|_| fs::read_to_string(format!("{}.pub", private.display())))
        .expect("read generated public key");
    (private, public.trim().to_string())
}

/// Path of the `.pub` file that `generate_keypair` wrote next to `private`.
pub fn public_key_path(private: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", private.display()))
}

/// First two fields of an OpenSSH public key line (`type base64`), without the comment.
pub fn key_type_and_blob(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The pids of processes whose command line contains `marker` (`pgrep -f`).
pub fn pids_with(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(marker)
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// sha256 of a file, hex, via coreutils `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let mut cmd = Command::new("sha256sum");
    cmd.arg(path);
    let out = run(cmd, None, Duration::from_secs(300));
    let text = assert_success("sha256sum", &out);
    text.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// Writes `size` bytes from /dev/urandom to `path`.
pub fn write_random_file(path: &Path, size: u64) {
    let mut src = fs::File::open("/dev/urandom").expect("open /dev/urandom");
    let mut dst = fs::File::create(path).expect("create random file");
    let copied = std::io::copy(&mut (&mut src).take(size), &mut dst).expect("copy random bytes");
    assert_eq!(copied, size);
    dst.sync_all().expect("sync random file");
}

/// Every file under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && let Ok(bytes) = fs::read(&path)
                && contains_bytes(&bytes, needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The forms in which a secret may show up in a log or a file: its UTF-8 and UTF-16LE bytes, each
/// also as hex (lower and upper case, with and without spaces), as a Rust `{:?}` byte list (what a
/// crate's `debug!("{:?}", buf)` prints) and as standard base64. Each comes with a label.
pub fn secret_forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine as _;
    let utf8 = secret.as_bytes().to_vec();
    let utf16: Vec<u8> = secret
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let mut forms = Vec::new();
    for (encoding, bytes) in [("utf-8", utf8), ("utf-16le", utf16)] {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let decimal: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
        forms.push((encoding.to_string(), bytes.clone()));
        forms.push((format!("{encoding} hex"), hex.concat().into_bytes()));
        forms.push((
            format!("{encoding} HEX"),
            hex.concat().to_uppercase().into_bytes(),
        ));
        forms.push((format!("{encoding} spaced hex"), hex.join(" ").into_bytes()));
        forms.push((
            format!("{encoding} byte list"),
            decimal.join(", ").into_bytes(),
        ));
        forms.push((
            format!("{encoding} base64"),
            base64::engine::general_purpose::STANDARD
                .encode(&bytes)
                .trim_end_matches('=')
                .as_bytes()
                .to_vec(),
        ));
    }
    forms
}

/// The labels of the forms of `secret` (see [`secret_forms`]) found in `haystack`.
pub fn secret_forms_in(haystack: &[u8], secret: &str) -> Vec<String> {
    secret_forms(secret)
        .into_iter()
        .filter(|(_, needle)| contains_bytes(haystack, needle))
        .map(|(label, _)| label)
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` elapses.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers (the CLI's --json output; field names beyond the documented ones are not assumed)
// ---------------------------------------------------------------------------------------------

/// A JSON id (string or number) as the string the CLI accepts back.
pub fn json_id(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads `obj[key]` as a string (numbers are rendered), or "" when absent.
pub fn json_str(obj: &Value, key: &str) -> String {
    match obj.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Every JSON object anywhere inside `v` (including `v` itself) that satisfies `pred`.
pub fn json_objects_where<'a>(v: &'a Value, pred: &dyn Fn(&Value) -> bool) -> Vec<&'a Value> {
    let mut found = Vec::new();
    let mut stack = vec![v];
    while let Some(cur) = stack.pop() {
        match cur {
            Value::Object(map) => {
                if pred(cur) {
                    found.push(cur);
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items.iter()),
            _ => {}
        }
    }
    found
}

/// Whether any string value directly in the object `obj` contains `needle`.
pub fn object_has_string_containing(obj: &Value, needle: &str) -> bool {
    obj.as_object().is_some_and(|m| {
        m.values()
            .any(|v| v.as_str().is_some_and(|s| s.contains(needle)))
    })
}

/// Whether any numeric value directly in the object `obj` equals `n`.
pub fn object_has_number(obj: &Value, n: u64) -> bool {
    obj.as_object()
        .is_some_and(|m| m.values().any(|v| v.as_u64() == Some(n)))
}

// ---------------------------------------------------------------------------------------------
// Local Unix accounts on the target
// ---------------------------------------------------------------------------------------------

/// A local Unix account on the target machine (the "account" a vault credential opens).
///
/// Accounts are shared between test processes running in parallel, so everything about them is
/// deterministic per name: the same name always gets the same password. Authorized keys are per
/// `TargetSshd` (its `AuthorizedKeysFile` lives in the sshd's own temp dir), not in the home.
#[derive(Clone, Debug)]
pub struct TestAccount {
    pub name: String,
    pub password: String,
    pub authorized_keys: Vec<String>,
}

impl TestAccount {
    /// `ghtest_<tag>` with its deterministic password.
    pub fn new(tag: &str) -> Self {
        let name = format!("ghtest_{tag}");
        assert!(
            name.len() <= 32
                && tag
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "bad test account tag {tag:?}"
        );
        let password = Self::password_for(&name);
        TestAccount {
            name,
            password,
            authorized_keys: Vec::new(),
        }
    }

    /// The password every test uses for `name` (distinctive, so leak checks can grep for it).
    pub fn password_for(name: &str) -> String {
        format!("Vault-{name}-pw-7Qx2zK")
    }

    /// Also accept this public key line for the account on the target.
    pub fn with_authorized_key(mut self, public_line: &str) -> Self {
        self.authorized_keys.push(public_line.trim().to_string());
        self
    }

    pub fn home(&self) -> PathBuf {
        let mut cmd = Command::new("getent");
        cmd.args(["passwd", &self.name]);
        let out = run(cmd, None, Duration::from_secs(10));
        let line = assert_success("getent passwd", &out);
        PathBuf::from(
            line.trim()
                .split(':')
                .nth(5)
                .expect("home field in passwd line"),
        )
    }

    /// Creates the Unix user if needed (idempotent, serialised across processes with a file
    /// lock) and (re)sets its password.
    pub fn ensure_exists(&self) {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(USERS_LOCK)
            .expect("open users lock file");
        lock.lock().expect("flock users lock file");

        let mut id = Command::new("id");
        id.args(["-u", &self.name]);
        if !run(id, None, Duration::from_secs(10)).status.success() {
            let mut add = Command::new("/usr/sbin/useradd");
            add.args(["-m", "-s", "/bin/bash", &self.name]);
            let out = run(add, None, Duration::from_secs(30));
            // 9 = "username already in use" (another process won the race without the lock).
            assert!(
                out.status.success() || out.status.code() == Some(9),
                "useradd {} failed (tests must run as root)\n{}",
                self.name,
                out.describe()
            );
        }
        let chpasswd = Command::new("/usr/sbin/chpasswd");
        let line = format!("{}:{}\n", self.name, self.password);
        let out = run(chpasswd, Some(line.as_bytes()), Duration::from_secs(30));
        assert_success("chpasswd", &out);
        drop(lock); // closing the descriptor releases the flock
    }
}

// ---------------------------------------------------------------------------------------------
// The target: a real OpenSSH sshd
// ---------------------------------------------------------------------------------------------

/// A real OpenSSH server on 127.0.0.1 with its own host key, config and log.
pub struct TargetSshd {
    dir: TempDir,
    port: u16,
    host_key_line: String,
    log_path: PathBuf,
    child: Option<Child>,
    accounts: Vec<TestAccount>,
}

impl TargetSshd {
    /// Creates the accounts (idempotently) and starts sshd on a free port; returns once sshd
    /// reports it is listening. Panics with the sshd log if it does not come up.
    pub fn start(accounts: &[TestAccount]) -> Self {
        Self::start_with(accounts, false)
    }

    /// Like [`TargetSshd::start`], but sshd also reads each user's own
    /// `~/.ssh/authorized_keys`, as a stock sshd does (for key rotation and discovery).
    pub fn start_with_home_keys(accounts: &[TestAccount]) -> Self {
        Self::start_with(accounts, true)
    }

    fn start_with(accounts: &[TestAccount], home_keys: bool) -> Self {
        for account in accounts {
            account.ensure_exists();
        }
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (privilege separation dir)");

        let dir = tempfile::Builder::new()
            .prefix("gatehouse-sshd-")
            .tempdir()
            .expect("sshd temp dir");
        // The per-user authorized_keys files are read with the user's privileges.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod dir");

        let host_key = dir.path().join("ssh_host_ed25519_key");
        let mut keygen = Command::new("ssh-keygen");
        keygen
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "gatehouse-test-target",
                "-f",
            ])
            .arg(&host_key);
        assert_success(
            "ssh-keygen (host key)",
            &run(keygen, None, Duration::from_secs(30)),
        );
        let host_key_line = fs::read_to_string(public_key_path(&host_key))
            .expect("read host public key")
            .trim()
            .to_string();

        let keys_dir = dir.path().join("authorized_keys");
        fs::create_dir(&keys_dir).expect("mkdir authorized_keys");
        fs::set_permissions(&keys_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        for account in accounts {
            let file = keys_dir.join(&account.name);
            let mut text = account.authorized_keys.join("\n");
            text.push('\n');
            fs::write(&file, text).expect("write authorized_keys");
            fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        }

        let log_path = dir.path().join("sshd.log");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\n\
                     Port {port}\n\
                     HostKey {host_key}\n\
                     PidFile {pid}\n\
                     AuthorizedKeysFile {keys}\n\
                     PasswordAuthentication yes\n\
                     PubkeyAuthentication yes\n\
                     KbdInteractiveAuthentication no\n\
                     UsePAM no\n\
                     PermitRootLogin no\n\
                     StrictModes no\n\
                     PrintMotd no\n\
                     PrintLastLog no\n\
                     MaxStartups 100:30:200\n\
                     MaxSessions 50\n\
                     Subsystem sftp internal-sftp\n\
                     AcceptEnv LANG LC_* GATEHOUSE_TEST_*\n\
                     LogLevel DEBUG\n",
                    host_key = host_key.display(),
                    pid = dir.path().join("sshd.pid").display(),
                    keys = if home_keys {
                        format!("{}/%u .ssh/authorized_keys", keys_dir.display())
                    } else {
                        format!("{}/%u", keys_dir.display())
                    },
                ),
            )
            .expect("write sshd_config");
            let log = fs::File::create(&log_path).expect("create sshd log");
            let mut child = Command::new(SSHD_BIN)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log fd"))
                .stderr(log)
                .spawn()
                .expect("spawn /usr/sbin/sshd (is openssh-server installed?)");
            let listening = format!("Server listening on 127.0.0.1 port {port}");
            let read_log = || {
                fs::read(&log_path)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            };
            let up = poll(STARTUP_TIMEOUT, || {
                if read_log().contains(&listening) {
                    return Some(true);
                }
                match child.try_wait() {
                    Ok(Some(_)) => Some(false),
                    _ => None,
                }
            });
            if up == Some(true) {
                return TargetSshd {
                    dir,
                    port,
                    host_key_line,
                    log_path,
                    child: Some(child),
                    accounts: accounts.to_vec(),
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = read_log();
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("sshd did not start listening\n--- sshd log ---\n{last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host public key line exactly as in the `.pub` file (`ssh-ed25519 AAAA... comment`).
    pub fn host_key_line(&self) -> &str {
        &self.host_key_line
    }

    /// The host public key as `type base64` (no comment): what `asset add --host-key` takes.
    pub fn host_key(&self) -> String {
        key_type_and_blob(&self.host_key_line)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn log_text(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn accounts(&self) -> &[TestAccount] {
        &self.accounts
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the listener ("target down"). Sessions already forked keep running until their
    /// connections close, like a real sshd.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Make sure nothing is left listening before the caller relies on "down".
        let port = self.port;
        let _ = poll(Duration::from_secs(5), || (!port_open(port)).then_some(()));
    }
}

impl Drop for TargetSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway: the real `gatehouse` binary
// ---------------------------------------------------------------------------------------------

/// A Gatehouse data directory, and optionally a running `gatehouse serve`.
pub struct Gatehouse {
    dir: TempDir,
    server: Option<Child>,
    ssh_port: Option<u16>,
    api_port: Option<u16>,
    rdp_port: Option<u16>,
    /// Extra arguments and environment for `serve`.
    serve_args: Vec<String>,
    serve_env: Vec<(String, String)>,
}

impl Gatehouse {
    /// A fresh temp data dir, initialised with `gatehouse --data-dir DIR init`.
    pub fn init() -> Self {
        Self::init_with(&[])
    }

    /// A fresh temp data dir, initialised with `gatehouse --data-dir DIR init ARGS`
    /// (`--store postgres://…`, `--master-key-file …`).
    pub fn init_with(args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-data-")
            .tempdir()
            .expect("gatehouse data dir");
        let gh = Gatehouse {
            dir,
            server: None,
            ssh_port: None,
            api_port: None,
            rdp_port: None,
            serve_args: Vec::new(),
            serve_env: Vec::new(),
        };
        gh.cli_ok(&[&["init"], args].concat());
        gh
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `gatehouse --data-dir DIR` with a clean environment for the CLI.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(GATEHOUSE_BIN);
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .env_remove("GATEHOUSE_DATA_DIR")
            .env("NO_COLOR", "1");
        cmd
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd, None, DEFAULT_TIMEOUT)
    }

    /// Runs the CLI with `stdin` (secrets are passed this way, never as arguments).
    pub fn cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run(cmd, Some(stdin.as_bytes()), DEFAULT_TIMEOUT)
    }

    /// Runs the CLI, asserts success, returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_success(&format!("gatehouse {}", args.join(" ")), &out)
    }

    pub fn cli_stdin_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cli_stdin(args, stdin);
        assert_success(&format!("gatehouse {} (with stdin)", args.join(" ")), &out)
    }

    /// Runs the CLI (args should include `--json`), asserts success, parses stdout.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let text = self.cli_ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "gatehouse {} printed invalid JSON ({e}):\n{text}",
                args.join(" ")
            )
        })
    }

    // --- configuration shortcuts -------------------------------------------------------------

    pub fn add_user_with_password(&self, name: &str, password: &str) {
        self.cli_stdin_ok(&["user", "add", name, "--password-stdin"], password);
    }

    pub fn add_user_with_key(&self, name: &str, public_key_file: &Path) {
        let key = public_key_file.to_str().expect("utf-8 path");
        self.cli_ok(&["user", "add", name, "--key-file", key]);
    }

    /// An asset pinned to `host_key` (`type base64`).
    pub fn add_asset(&self, name: &str, port: u16, host_key: &str) {
        let port = port.to_string();
        self.cli_ok(&[
            "asset",
            "add",
            name,
            "--address",
            "127.0.0.1",
            "--port",
            &port,
            "--host-key",
            host_key,
        ]);
    }

    /// An asset on 127.0.0.1 whose RDP endpoint is `rdp_port`, its certificate trusted on first
    /// use; `extra` are further `asset add` arguments (`--group prod`).
    pub fn add_rdp_asset(&self, name: &str, rdp_port: u16, extra: &[&str]) {
        let port = rdp_port.to_string();
        let mut args = vec![
            "asset",
            "add",
            name,
            "--address",
            "127.0.0.1",
            "--tofu",
            "--rdp-port",
            &port,
        ];
        args.extend_from_slice(extra);
        self.cli_ok(&args);
    }

    /// `account@asset` with a vault password.
    pub fn add_account_with_password(&self, spec: &str, password: &str) {
        self.cli_stdin_ok(&["account", "add", spec, "--password-stdin"], password);
    }

    /// `account@asset` with a vault private key.
    pub fn add_account_with_key(&self, spec: &str, private_key_file: &Path) {
        let key = private_key_file.to_str().expect("utf-8 path");
        self.cli_ok(&["account", "add", spec, "--key-file", key]);
    }

    /// Installs a reference plugin from `plugins/`, grants it `grants` (TOML), configures it
    /// with `config` (TOML) when given, and enables it.
    pub fn install_plugin(&self, scratch: &Path, name: &str, grants: &str, config: Option<&str>) {
        self.cli_ok(&["plugin", "install", plugin_package(name).to_str().unwrap()]);
        let file = scratch.join(format!("{name}-grants.toml"));
        std::fs::write(&file, grants).unwrap();
        self.cli_ok(&["plugin", "grant", name, file.to_str().unwrap()]);
        if let Some(config) = config {
            let file = scratch.join(format!("{name}-config.toml"));
            std::fs::write(&file, config).unwrap();
            self.cli_ok(&["plugin", "config", name, file.to_str().unwrap()]);
        }
        self.cli_ok(&["plugin", "enable", name]);
    }

    pub fn grant_user(&self, user: &str, spec: &str) {
        self.cli_ok(&["grant", "add", "--user", user, spec]);
    }

    // --- the server --------------------------------------------------------------------------

    pub fn log_path(&self) -> PathBuf {
        self.data_dir().join("serve.log")
    }

    /// Starts `gatehouse serve --ssh-listen 127.0.0.1:<free port>` (and the API and RDP on free
    /// ports; RUST_LOG=trace but for the
    /// WebAssembly compiler's internals, output to
    /// DIR/serve.log) and waits until the port accepts TCP. Panics with the log otherwise.
    pub fn serve(&mut self) {
        assert!(self.server.is_none(), "gatehouse serve already running");
        let mut last = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let api_port = free_port();
            let rdp_port = free_port();
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .expect("open serve.log");
            let mut cmd = self.command();
            cmd.arg("serve")
                .arg("--ssh-listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--api-listen")
                .arg(format!("127.0.0.1:{api_port}"))
                .arg("--rdp-listen")
                .arg(format!("127.0.0.1:{rdp_port}"))
                .args(&self.serve_args)
                .envs(self.serve_env.iter().map(|(k, v)| (k, v)))
                .env("RUST_LOG", TEST_LOG_FILTER)
                .env("RUST_BACKTRACE", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log fd"))
                .stderr(log);
            let mut child = cmd.spawn().expect("spawn gatehouse serve");
            let up = poll(STARTUP_TIMEOUT, || {
                if port_open(port) && port_open(api_port) && port_open(rdp_port) {
                    return Some(true);
                }
                match child.try_wait() {
                    Ok(Some(_)) => Some(false),
                    _ => None,
                }
            });
            if up == Some(true) {
                self.server = Some(child);
                self.ssh_port = Some(port);
                self.api_port = Some(api_port);
                self.rdp_port = Some(rdp_port);
                return;
            }
            let outcome = match child.try_wait() {
                Ok(Some(status)) => format!("exited early ({status})"),
                _ => format!("did not open its SSH port within {STARTUP_TIMEOUT:?}"),
            };
            let _ = child.kill();
            let _ = child.wait();
            last = format!("{outcome}\n--- serve.log ---\n{}", self.log_text());
            if !last.to_lowercase().contains("address already in use") {
                break;
            }
        }
        panic!("gatehouse serve (127.0.0.1:<free port>) {last}");
    }

    /// The gateway's RDP port (after `serve`).
    pub fn rdp_port(&self) -> u16 {
        self.rdp_port.expect("gatehouse serve is not running")
    }

    /// The gateway's HTTPS API port (after `serve`).
    pub fn api_port(&self) -> u16 {
        self.api_port.expect("gatehouse serve is not running")
    }

    /// `https://localhost:<api port>`.
    pub fn api_url(&self) -> String {
        format!("https://localhost:{}", self.api_port())
    }

    /// Changes settings.json (before `serve`).
    pub fn edit_settings(&self, edit: impl FnOnce(&mut Value)) {
        let path = self.data_dir().join("settings.json");
        let mut settings: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read settings.json"))
                .expect("settings.json is JSON");
        edit(&mut settings);
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&settings).expect("settings JSON"),
        )
        .expect("write settings.json");
    }

    /// The gateway's SSH port (after `serve`).
    pub fn ssh_port(&self) -> u16 {
        self.ssh_port.expect("gatehouse serve is not running")
    }

    /// The process id of the running `gatehouse serve`.
    pub fn server_pid(&self) -> u32 {
        self.server
            .as_ref()
            .expect("gatehouse serve is not running")
            .id()
    }

    /// Extra `serve` arguments and environment for the next [`Self::serve`].
    pub fn serve_options(&mut self, args: &[&str], env: &[(&str, &str)]) {
        self.serve_args = args.iter().map(|a| a.to_string()).collect();
        self.serve_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Sends `signal` (`TERM`, `KILL`...) to `gatehouse serve`.
    pub fn signal_server(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.server_pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for `gatehouse serve` to exit on its own; `None` if it is still running after
    /// `limit` (it is then left running).
    pub fn wait_server_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = self
            .server
            .as_mut()
            .expect("gatehouse serve is not running");
        let status = poll(limit, || child.try_wait().ok().flatten())?;
        self.server = None;
        self.ssh_port = None;
        Some(status)
    }

    pub fn is_serving(&mut self) -> bool {
        matches!(self.server.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.ssh_port = None;
    }

    /// Everything `gatehouse serve` printed so far.
    pub fn log_text(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The tail of the serve log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    // --- queries -----------------------------------------------------------------------------

    /// `audit list --json` (oldest first, newest last).
    pub fn audit(&self) -> Vec<Value> {
        match self.cli_json(&["audit", "list", "--json", "--limit", "100000"]) {
            Value::Array(items) => items,
            other => panic!("audit list --json is not an array: {other}"),
        }
    }

    /// The audit entries of `kind`, oldest first.
    pub fn audit_of(&self, kind: &str) -> Vec<Value> {
        self.audit()
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// The `detail` of every audit entry of `kind`, oldest first (each must have one).
    pub fn audit_details(&self, kind: &str) -> Vec<String> {
        self.audit_of(kind)
            .iter()
            .map(|e| {
                e["detail"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a `{kind}` audit entry without a detail: {e}"))
                    .to_string()
            })
            .collect()
    }

    /// Waits (bounded) for an audit entry of `kind` after the first `since` entries.
    pub fn wait_for_audit(&self, since: usize, kind: &str, timeout: Duration) -> Option<Value> {
        poll(timeout, || {
            self.audit()
                .into_iter()
                .skip(since)
                .find(|e| json_str(e, "kind") == kind)
        })
    }

    /// `session list --json`.
    pub fn sessions(&self) -> Vec<Value> {
        match self.cli_json(&["session", "list", "--json"]) {
            Value::Array(items) => items,
            other => panic!("session list --json is not an array: {other}"),
        }
    }

    /// Sessions of gateway user `user`, waiting (bounded) until at least `at_least` of them
    /// have ended (recordings are complete once the session ended).
    pub fn ended_sessions_of(&self, user: &str, at_least: usize) -> Vec<Value> {
        let found = poll(Duration::from_secs(20), || {
            let mine: Vec<Value> = self
                .sessions()
                .into_iter()
                .filter(|s| json_str(s, "user") == user)
                .collect();
            let ended = mine
                .iter()
                .filter(|s| !matches!(s.get("ended"), None | Some(Value::Null)))
                .count();
            (ended >= at_least).then_some(mine)
        });
        found.unwrap_or_else(|| {
            panic!(
                "expected {at_least} ended session(s) of {user}; session list:\n{}\n--- serve.log tail ---\n{}",
                self.cli_ok(&["session", "list", "--json"]),
                self.log_tail(80)
            )
        })
    }

    /// `session show ID --json`.
    pub fn session_show(&self, id: &str) -> Value {
        self.cli_json(&["session", "show", id, "--json"])
    }
}

impl Drop for Gatehouse {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// The package directory of a reference plugin built by `scripts/build-plugins.sh`
/// (`$GATEHOUSE_PLUGINS_DIR/<name>`, or `<cargo target dir>/gatehouse-plugins/<name>`). Fails
/// loudly when it was not built.
pub fn plugin_package(name: &str) -> PathBuf {
    let dir = match std::env::var_os("GATEHOUSE_PLUGINS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .expect("test binary path")
            .ancestors()
            .nth(3)
            .expect("test binary inside a cargo target directory")
            .join("gatehouse-plugins"),
    };
    let package = dir.join(name);
    assert!(
        package.join("plugin.wasm").is_file(),
        "plugin `{name}` is not built at {}: run `bash scripts/build-plugins.sh`",
        package.display()
    );
    package
}

/// The gateway's log filter in tests: everything at TRACE (the secret-leak checks read it), but
/// the WebAssembly compiler's own tracing, which is megabytes per plugin compile, at INFO. The
/// crates that print secrets (sspi, russh, rustls...) are asked for TRACE too: the gateway's own
/// cap must hold them back.
pub const TEST_LOG_FILTER: &str = "trace,cranelift_codegen=info,cranelift_frontend=info,regalloc2=info,wasmtime_cranelift=info,wasmtime=info,wasmtime_environ=info,cranelift=info,wasmparser=info";

/// Users of a running gateway's HTTPS API through the `gatehouse` CLI (`login`, `request ...`),
/// each with a token file in `dir`, all with the same `password`.
pub struct ApiUsers<'a> {
    pub gh: &'a Gatehouse,
    pub dir: PathBuf,
    pub password: String,
}

impl ApiUsers<'_> {
    pub fn token_file(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.token"))
    }

    /// `gatehouse ...` as `user` against the running API.
    pub fn as_user(&self, user: &str, args: &[&str]) -> Output {
        let mut cmd = self.gh.command();
        cmd.args(args)
            .env("GATEHOUSE_API", self.gh.api_url())
            .env("GATEHOUSE_TOKEN_FILE", self.token_file(user));
        run(cmd, None, Duration::from_secs(60))
    }

    pub fn login(&self, user: &str) {
        let mut cmd = self.gh.command();
        cmd.args(["login", "--user", user, "--password-stdin"])
            .env("GATEHOUSE_API", self.gh.api_url())
            .env("GATEHOUSE_TOKEN_FILE", self.token_file(user));
        let out = run(
            cmd,
            Some(format!("{}\n", self.password).as_bytes()),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "login {user}: {}", out.stderr_text());
    }

    /// `gatehouse request ... --json` as `user`, expecting success.
    pub fn request_ok(&self, user: &str, args: &[&str]) -> Value {
        let mut full = vec!["request"];
        full.extend_from_slice(args);
        full.push("--json");
        let out = self.as_user(user, &full);
        assert!(
            out.status.success(),
            "{user}: gatehouse {} failed: {}",
            full.join(" "),
            out.stderr_text()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `gatehouse request ...` as `user`, expecting failure; returns stderr.
    pub fn request_err(&self, user: &str, args: &[&str]) -> String {
        let mut full = vec!["request"];
        full.extend_from_slice(args);
        let out = self.as_user(user, &full);
        assert!(
            !out.status.success(),
            "{user}: gatehouse {} should have failed: {}",
            full.join(" "),
            out.stdout_text()
        );
        out.stderr_text()
    }
}

/// A one-route Vault-KV-v2-shaped server: `GET /v1/secret/data/gatehouse/<asset>/<account>` with the
/// right `x-vault-token` answers `password`; anything else is 404 or 403. Returns its port and
/// the paths it served.
pub fn kv_server(
    asset: &str,
    account: &str,
    password: &str,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let wanted = format!("/v1/secret/data/gatehouse/{asset}/{account}");
    let body = serde_json::json!({ "data": { "data": { "password": password }, "metadata": {} } })
        .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut token_ok = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if line
                    .to_ascii_lowercase()
                    .starts_with("x-vault-token: s.test-token")
                {
                    token_ok = true;
                }
            }
            log.lock().unwrap().push(path.clone());
            let (status, text) = match (token_ok, path == wanted) {
                (false, _) => ("403 Forbidden", "{}".to_string()),
                (true, false) => ("404 Not Found", "{}".to_string()),
                (true, true) => ("200 OK", body.clone()),
            };
            let mut out = stream;
            let _ = write!(
                out,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (port, seen)
}

/// `curl` against the gateway's API (its own CA): (status, headers, body).
pub fn curl(
    gh: &Gatehouse,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("headers");
    let out = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "120", "-X", method])
        .arg("--cacert")
        .arg(gh.data_dir().join("tls/cert.pem"))
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("{}{path}", gh.api_url()));
    let output = run(cmd, None, Duration::from_secs(150));
    assert!(
        output.status.success(),
        "curl {path}: {}",
        output.describe()
    );
    let status = output.stdout_text().trim().parse().unwrap();
    (
        status,
        fs::read_to_string(&head).unwrap_or_default(),
        fs::read(&out).unwrap_or_default(),
    )
}

/// Runs a system tool (`openssl`, `slapadd`, ...) in `dir` with `env` added, and fails loudly:
/// a missing tool names itself and where it comes from. Its stdout.
pub fn tool(program: &str, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}): install the test dependencies (scripts/install-test-deps.sh)")
        });
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A streaming `GET path` with `bearer` (`curl -N`) in the background for at most `seconds`;
/// the body lands in the returned file as it arrives.
pub fn curl_stream(
    gh: &Gatehouse,
    path: &str,
    bearer: &str,
    seconds: u64,
) -> (std::process::Child, tempfile::NamedTempFile) {
    let body = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new("curl")
        .args([
            "-sS",
            "-N",
            "--max-time",
            &seconds.to_string(),
            "-H",
            bearer,
        ])
        .arg("--cacert")
        .arg(gh.data_dir().join("tls/cert.pem"))
        .arg("-o")
        .arg(body.path())
        .arg(format!("{}{path}", gh.api_url()))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("curl");
    (child, body)
}

/// Logs `user` in to the API with `password`; the bearer header for later calls.
pub fn api_bearer(gh: &Gatehouse, user: &str, password: &str) -> String {
    let body = serde_json::json!({"user": user, "password": password}).to_string();
    let (status, _, answer) = curl(gh, "POST", "/api/v1/login", &[], Some(&body));
    assert_eq!(
        status,
        200,
        "login {user}: {}",
        String::from_utf8_lossy(&answer)
    );
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    format!(
        "Authorization: Bearer {}",
        answer["token"].as_str().unwrap()
    )
}
