//! The real OpenSSH clients (`ssh`, `scp`, `sftp`), driven non-interactively.
//!
//! Passwords are typed by an askpass script (`SSH_ASKPASS` + `SSH_ASKPASS_REQUIRE=force`) that
//! prints a file from a private temp dir, so they never appear on a command line. The user's
//! `~/.ssh/config`, `/etc/ssh/ssh_config` and any ssh-agent are ignored (`-F /dev/null`,
//! `SSH_AUTH_SOCK` removed). Every run has a deadline.
//!
//! `LogLevel=INFO` (not ERROR) on purpose: ssh only prints userauth banners and
//! keyboard-interactive instructions at INFO or above, and the gateway may use either to show
//! its `gatehouse: ...` messages. The price is ssh's "Warning: Permanently added ..." line.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{DEFAULT_TIMEOUT, OutputExt, PipeReader, run};

/// How the client authenticates to the server it connects to.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Password (or keyboard-interactive), typed by the askpass script.
    Password(String),
    /// Public key from this unencrypted private key file.
    Key(PathBuf),
}

/// An OpenSSH client configuration for one server and login name.
pub struct Client {
    port: u16,
    host: String,
    login: String,
    auth: Auth,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
    askpass: Arc<TempDir>,
}

impl Client {
    /// A client for `login` at 127.0.0.1:`port`. `login` may be a Gatehouse in-band login such
    /// as `alice@root@db1` or `otp=123@alice@root@db1`.
    pub fn new(port: u16, login: impl Into<String>, auth: Auth) -> Self {
        let askpass = tempfile::Builder::new()
            .prefix("gatehouse-askpass-")
            .tempdir()
            .expect("askpass temp dir");
        let secret = askpass.path().join("secret");
        let script = askpass.path().join("askpass.sh");
        let password = match &auth {
            Auth::Password(p) => p.clone(),
            Auth::Key(_) => String::new(),
        };
        fs::write(&secret, password).expect("write askpass secret");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod secret");
        fs::write(
            &script,
            format!("#!/bin/sh\ncat '{}'\necho\n", secret.display()),
        )
        .expect("write askpass script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).expect("chmod askpass");
        Client {
            port,
            host: "127.0.0.1".to_string(),
            login: login.into(),
            auth,
            extra: Vec::new(),
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            askpass: Arc::new(askpass),
        }
    }

    /// A password client whose askpass answers keyboard-interactive prompts containing one of
    /// `answers`' keys with its value (plugin questions), and any other prompt with `password`.
    pub fn password_with_answers(
        port: u16,
        login: impl Into<String>,
        password: &str,
        answers: &[(&str, &str)],
    ) -> Self {
        let client = Self::password(port, login, password);
        let dir = client.askpass.path();
        let mut cases = String::new();
        for (i, (prompt, value)) in answers.iter().enumerate() {
            let file = dir.join(format!("answer-{i}"));
            fs::write(&file, value).expect("write askpass answer");
            cases.push_str(&format!("  *'{prompt}'*) cat '{}' ;;\n", file.display()));
        }
        let script = format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\ncase \"$1\" in\n{cases}  *) cat '{}' ;;\nesac\necho\n",
            dir.join("prompts").display(),
            dir.join("secret").display()
        );
        fs::write(dir.join("askpass.sh"), script).expect("write askpass script");
        client
    }

    /// The prompts the askpass helper was shown, one per line (with `password_with_answers`).
    pub fn prompts_seen(&self) -> String {
        fs::read_to_string(self.askpass.path().join("prompts")).unwrap_or_default()
    }

    pub fn password(port: u16, login: impl Into<String>, password: &str) -> Self {
        Self::new(port, login, Auth::Password(password.to_string()))
    }

    pub fn key(port: u16, login: impl Into<String>, private_key: &Path) -> Self {
        Self::new(port, login, Auth::Key(private_key.to_path_buf()))
    }

    /// An extra `-o OPTION=VALUE`.
    pub fn option(mut self, opt: &str) -> Self {
        self.extra.push(opt.to_string());
        self
    }

    /// An environment variable for the client process (combine with `SendEnv=NAME`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Connect to `host` instead of 127.0.0.1.
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn login(&self) -> &str {
        &self.login
    }

    /// `-F /dev/null` and the `-o` options shared by ssh, scp and sftp (no port, no user).
    fn common_args(&self) -> Vec<String> {
        let mut args = vec!["-F".to_string(), "/dev/null".to_string()];
        let mut opts = vec![
            // First value wins in ssh: these must precede anything scp/sftp add (sftp -b adds
            // BatchMode=yes, which would silently disable the askpass password).
            "BatchMode=no".to_string(),
            "StrictHostKeyChecking=no".to_string(),
            "UserKnownHostsFile=/dev/null".to_string(),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "LogLevel=INFO".to_string(),
            // Unless the test sets its own (OpenSSH's default is 3).
            if self
                .extra
                .iter()
                .any(|o| o.starts_with("NumberOfPasswordPrompts="))
            {
                String::new()
            } else {
                "NumberOfPasswordPrompts=1".to_string()
            },
            "ConnectTimeout=20".to_string(),
            "ServerAliveInterval=15".to_string(),
            "ServerAliveCountMax=4".to_string(),
        ];
        match &self.auth {
            Auth::Password(_) => {
                opts.push("PreferredAuthentications=password,keyboard-interactive".to_string());
                opts.push("PubkeyAuthentication=no".to_string());
            }
            Auth::Key(path) => {
                opts.push("PreferredAuthentications=publickey".to_string());
                opts.push("IdentitiesOnly=yes".to_string());
                opts.push(format!("IdentityFile={}", path.display()));
            }
        }
        opts.extend(self.extra.iter().cloned());
        for o in opts.into_iter().filter(|o| !o.is_empty()) {
            args.push("-o".to_string());
            args.push(o);
        }
        args
    }

    fn base(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SSH_ASKPASS", self.askpass.path().join("askpass.sh"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .env("TERM", "xterm")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_AGENT_PID");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// `ssh ... -p PORT LOGIN@127.0.0.1 REMOTE_COMMAND` (the `user@host` form).
    pub fn ssh(&self, remote_command: &str) -> Output {
        let mut cmd = self.ssh_command(&[]);
        cmd.arg(format!("{}@{}", self.login, self.host));
        if !remote_command.is_empty() {
            cmd.arg(remote_command);
        }
        run(cmd, None, self.timeout)
    }

    /// Like [`ssh`](Self::ssh) with data on the remote command's stdin.
    pub fn ssh_stdin(&self, remote_command: &str, stdin: &[u8]) -> Output {
        let mut cmd = self.ssh_command(&[]);
        cmd.arg(format!("{}@{}", self.login, self.host))
            .arg(remote_command);
        run(cmd, Some(stdin), self.timeout)
    }

    /// `ssh ... -l LOGIN -p PORT 127.0.0.1 REMOTE_COMMAND` (the `-l` form).
    pub fn ssh_dash_l(&self, remote_command: &str) -> Output {
        let mut cmd = self.ssh_command(&[]);
        cmd.arg("-l").arg(&self.login).arg(&self.host);
        if !remote_command.is_empty() {
            cmd.arg(remote_command);
        }
        run(cmd, None, self.timeout)
    }

    /// An `ssh` command with the common options, `-p PORT` and `extra` args, but no
    /// destination yet.
    pub fn ssh_command(&self, extra: &[&str]) -> Command {
        let mut cmd = self.base("ssh");
        cmd.args(self.common_args())
            .arg("-p")
            .arg(self.port.to_string())
            .args(extra);
        cmd
    }

    fn scp(&self, legacy: bool, from: &str, to: &str) -> Output {
        let mut cmd = self.base("scp");
        cmd.args(self.common_args())
            .arg("-o")
            .arg(format!("User={}", self.login))
            .arg("-P")
            .arg(self.port.to_string());
        if legacy {
            cmd.arg("-O"); // the legacy scp/rcp protocol instead of sftp
        }
        cmd.arg("-q").arg(from).arg(to);
        run(cmd, None, self.timeout)
    }

    /// `scp [-O] LOCAL 127.0.0.1:REMOTE`.
    pub fn scp_upload(&self, local: &Path, remote: &str, legacy: bool) -> Output {
        let from = local.to_str().expect("utf-8 path").to_string();
        self.scp(legacy, &from, &format!("{}:{remote}", self.host))
    }

    /// `scp [-O] 127.0.0.1:REMOTE LOCAL`.
    pub fn scp_download(&self, remote: &str, local: &Path, legacy: bool) -> Output {
        let to = local.to_str().expect("utf-8 path").to_string();
        self.scp(legacy, &format!("{}:{remote}", self.host), &to)
    }

    /// `rsync -e "ssh <the common options> -p PORT" ARGS`; remote paths are written
    /// `127.0.0.1:PATH` and the login goes in as `User=`.
    pub fn rsync(&self, args: &[&str]) -> Output {
        let mut ssh = format!("ssh -o User={}", self.login);
        for arg in self.common_args() {
            ssh.push(' ');
            ssh.push_str(&arg);
        }
        ssh.push_str(&format!(" -p {}", self.port));
        let mut cmd = self.base("rsync");
        cmd.arg("-e").arg(ssh).args(args);
        run(cmd, None, self.timeout)
    }

    /// `sftp -b BATCHFILE` with `commands` (one per line). sftp stops at the first failing
    /// command and exits non-zero.
    pub fn sftp_batch(&self, commands: &str) -> Output {
        let batch = self.askpass.path().join(format!(
            "batch-{}.sftp",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::write(&batch, commands).expect("write sftp batch file");
        let mut cmd = self.base("sftp");
        // common_args (with BatchMode=no) must come before -b.
        cmd.args(self.common_args())
            .arg("-o")
            .arg(format!("User={}", self.login))
            .arg("-P")
            .arg(self.port.to_string())
            .arg("-b")
            .arg(&batch)
            .arg(&self.host);
        run(cmd, None, self.timeout)
    }

    /// An interactive session with a remote pty (`ssh -tt`), driven line by line.
    pub fn pty(&self) -> PtySession {
        let mut cmd = self.ssh_command(&["-tt"]);
        cmd.arg(format!("{}@{}", self.login, self.host));
        PtySession::spawn(cmd, Arc::clone(&self.askpass))
    }
}

/// A running `ssh -tt` session: type lines, wait for output, collect the exit status.
pub struct PtySession {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    _readers: (PipeReader, PipeReader),
    _askpass: Arc<TempDir>,
    desc: String,
}

/// What an interactive session printed and how it ended.
#[derive(Debug)]
pub struct PtyOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl PtyOutcome {
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl PtySession {
    /// Any interactive program (a `telnet` under `script`), driven like an ssh session.
    pub fn spawn_command(cmd: Command) -> Self {
        let scratch = tempfile::tempdir().expect("temp dir");
        Self::spawn(cmd, Arc::new(scratch))
    }

    fn spawn(mut cmd: Command, askpass: Arc<TempDir>) -> Self {
        let desc = format!("{cmd:?}");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
        let stdin = child.stdin.take();
        let out = PipeReader::spawn(child.stdout.take().expect("stdout pipe"));
        let err = PipeReader::spawn(child.stderr.take().expect("stderr pipe"));
        PtySession {
            child,
            stdin,
            out: out.shared(),
            err: err.shared(),
            _readers: (out, err),
            _askpass: askpass,
            desc,
        }
    }

    /// Everything the session printed to stdout so far (terminal output, CRLF line ends).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().expect("lock")).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().expect("lock")).into_owned()
    }

    /// Types `line` followed by Enter.
    pub fn send_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("session stdin already closed");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("typing into {}: {e}\n{}", self.desc, self.transcript()));
    }

    /// Types `bytes` as they are (control keys).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("session stdin already closed");
        stdin
            .write_all(bytes)
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("typing into {}: {e}\n{}", self.desc, self.transcript()));
    }

    /// Waits until stderr contains `needle`; panics with the transcript after `timeout`.
    pub fn expect_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            if Instant::now() >= deadline {
                panic!(
                    "timed out waiting for {needle:?} on stderr\n{}",
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until stdout contains `needle`; panics with the transcript after `timeout`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) {
                return;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                // One last look: output may have arrived just before the exit.
                thread::sleep(Duration::from_millis(200));
                if self.stdout().contains(needle) {
                    return;
                }
                panic!(
                    "{} waiting for {needle:?} in the session output\n{}",
                    if exited { "session ended" } else { "timed out" },
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (bounded) for ssh to exit and returns what it printed. Stdin stays open until the
    /// session ends by itself (e.g. after typing `exit`), then is closed.
    pub fn wait(mut self, timeout: Duration) -> PtyOutcome {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "interactive session did not end within {timeout:?}\n{}",
                        self.transcript()
                    );
                }
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("waiting for ssh: {e}"),
            }
        };
        self.stdin = None;
        thread::sleep(Duration::from_millis(200)); // let the readers drain
        PtyOutcome {
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    fn transcript(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.desc,
            self.stdout(),
            self.stderr()
        )
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Plays an asciicast file with the real `asciinema` player (fast: idle time capped, sped up),
/// stdout to a pipe, no tty. Returns its output; callers assert on the status.
pub fn asciinema_play(cast: &Path) -> Output {
    let mut cmd = Command::new("asciinema");
    cmd.arg("play")
        .arg("-i")
        .arg("0.1")
        .arg("-s")
        .arg("20")
        .arg(cast)
        .env("TERM", "xterm");
    run(cmd, None, Duration::from_secs(120))
}

/// Asserts that `out` is a successful client run, with the full dump otherwise.
pub fn assert_client_ok(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed\n{}", out.describe());
}
