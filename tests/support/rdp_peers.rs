//! Real RDP peers for the proxy tests (`host/rdp/tests`) and the end-to-end tests: `Xvfb`
//! displays, `freerdp-shadow-cli` as an NLA target with a SAM file from `winpr-hash`, `xfreerdp`
//! as the client. A missing program fails the test and names the Debian package that provides it.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The program, or a failure naming the package to install (scripts/install-test-deps.sh).
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed: install the Debian package `{package}` \
         (scripts/install-test-deps.sh installs every test dependency)"
    );
}

/// A child process killed (by its own id) when dropped.
pub struct Process {
    pub child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Drop for Process {
    /// SIGTERM first (Xvfb then removes its socket and lock file), SIGKILL after a second.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn spawn_logged(mut command: Command, name: &'static str, log: PathBuf) -> Process {
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Process { child, name, log }
}

static DISPLAYS: AtomicU32 = AtomicU32::new(0);

/// A virtual X display.
pub struct Display {
    pub number: u32,
    process: Process,
}

impl Display {
    /// A 1024x768 display.
    pub fn start(dir: &Path) -> Display {
        Display::start_sized(dir, 1024, 768)
    }

    pub fn env(&self) -> String {
        format!(":{}", self.number)
    }

    pub fn log_text(&self) -> String {
        self.process.log_text()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, process: &mut Process, display: &Display) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            panic!(
                "{} exited ({status}) before listening:\n{}\nXvfb :{}:\n{}",
                process.name,
                process.log_text(),
                display.number,
                display.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} is not listening on {port}:\n{}",
        process.name,
        process.log_text()
    );
}

/// `freerdp-shadow-cli` serving a virtual display over NLA only, with one local account.
pub struct ShadowTarget {
    pub port: u16,
    pub home: PathBuf,
    pub process: Process,
    pub display: Display,
}

impl ShadowTarget {
    pub fn start(dir: &Path, account: &str, password: &str) -> ShadowTarget {
        ShadowTarget::start_on(dir, Display::start(dir), account, password)
    }

    /// The DER certificate the shadow server generated for itself.
    pub fn certificate(&self) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let path = self.home.join(".config/freerdp/shadow/shadow.crt");
        CertificateDer::from_pem_file(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .to_vec()
    }
}

/// Runs `xfreerdp` to completion (bounded) on its own display.
pub struct Client {
    display: String,
    _own_display: Option<Display>,
    home: PathBuf,
}

impl Client {
    /// A client on a display of its own.
    pub fn new(dir: &Path) -> Client {
        let display = Display::start(dir);
        Client::create(dir, display.env(), Some(display))
    }

    /// A client whose window appears on `display` (the target's screen, so that moving the
    /// window changes what the target shows).
    pub fn on_display(dir: &Path, display: &Display) -> Client {
        Client::create(dir, display.env(), None)
    }

    fn create(dir: &Path, display: String, own: Option<Display>) -> Client {
        require("xfreerdp", "freerdp2-x11");
        let home = dir.join("client-home");
        std::fs::create_dir_all(&home).unwrap();
        Client {
            display,
            _own_display: own,
            home,
        }
    }

    pub fn command(&self, port: u16, user: &str, password: &str, extra: &[&str]) -> Command {
        let mut command = Command::new("xfreerdp");
        command
            .env("HOME", &self.home)
            .env("DISPLAY", &self.display)
            .arg(format!("/v:127.0.0.1:{port}"))
            .arg(format!("/u:{user}"))
            .arg(format!("/p:{password}"))
            .arg("/cert:ignore")
            .args(extra);
        command
    }

    /// `xfreerdp` run in network namespace `ns` (`ip netns exec`), connecting to `host:port`.
    pub fn command_in_netns(
        &self,
        ns: &str,
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        extra: &[&str],
    ) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, "xfreerdp"])
            .env("HOME", &self.home)
            .env("DISPLAY", &self.display)
            .arg(format!("/v:{host}:{port}"))
            .arg(format!("/u:{user}"))
            .arg(format!("/p:{password}"))
            .arg("/cert:ignore")
            .args(extra);
        command
    }

    /// `xfreerdp FILE.rdp /p:PASSWORD`: the address and user name come from the `.rdp` file.
    pub fn command_file(&self, file: &Path, password: &str, extra: &[&str]) -> Command {
        let mut command = Command::new("xfreerdp");
        command
            .env("HOME", &self.home)
            .env("DISPLAY", &self.display)
            .arg(file)
            .arg(format!("/p:{password}"))
            .arg("/cert:ignore")
            .args(extra);
        command
    }

    /// Runs to the end, killing it after `limit`. Returns the output and whether it was killed.
    pub fn run(&self, mut command: Command, limit: Duration) -> (Output, bool) {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + limit;
        let mut killed = false;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                killed = true;
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = Output {
            status,
            stdout: out_reader.join().unwrap(),
            stderr: err_reader.join().unwrap(),
        };
        (output, killed)
    }
}

/// Moves the FreeRDP window around on `display` with `xdotool` until `stop` is set, so that the
/// screen the target shares keeps changing and it has graphics to send.
pub fn move_client_window(
    display: &Display,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let xdotool = require("xdotool", "xdotool");
    let env = display.env();
    std::thread::spawn(move || {
        let mut step = 0u32;
        while !stop.load(Ordering::Relaxed) {
            step += 1;
            let (x, y) = ((step * 37) % 200, (step * 23) % 150);
            let _ = Command::new(&xdotool)
                .env("DISPLAY", &env)
                .args(["search", "--name", "FreeRDP", "windowmove", "%@"])
                .args([x.to_string(), y.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl Client {
    /// The X display the client's window is on (`:N`).
    pub fn display_env(&self) -> &str {
        &self.display
    }
}

/// Paints the root window of `display` with a checkerboard of `square`-pixel squares, `fg`
/// where `(x / square + y / square)` is even and `bg` elsewhere (`xsetroot -bitmap`; colours
/// as `#rrggbb`), so a recording of that screen has known colours at known places.
pub fn paint_checkerboard(display: &Display, dir: &Path, square: u32, fg: &str, bg: &str) {
    let xsetroot = require("xsetroot", "x11-xserver-utils");
    let side = square * 2;
    let row_bytes = side.div_ceil(8);
    let mut bits = Vec::new();
    for y in 0..side {
        for byte in 0..row_bytes {
            let mut value = 0u8;
            for bit in 0..8 {
                let x = byte * 8 + bit;
                if x < side && (x / square + y / square).is_multiple_of(2) {
                    value |= 1 << bit;
                }
            }
            bits.push(format!("0x{value:02x}"));
        }
    }
    let xbm = format!(
        "#define board_width {side}\n#define board_height {side}\nstatic unsigned char board_bits[] = {{\n{}}};\n",
        bits.join(", ")
    );
    let path = dir.join("board.xbm");
    std::fs::write(&path, xbm).unwrap();
    let status = Command::new(xsetroot)
        .env("DISPLAY", display.env())
        .arg("-bitmap")
        .arg(&path)
        .args(["-fg", fg, "-bg", bg])
        .status()
        .unwrap();
    assert!(status.success(), "xsetroot failed: {status}");
}

/// Types `text` and then presses Return in the FreeRDP window on `display` (`xdotool`), so the
/// client sends the keystrokes through the gateway.
pub fn type_into_client(display: &str, text: &str) {
    let xdotool = require("xdotool", "xdotool");
    let out = Command::new(xdotool)
        .env("DISPLAY", display)
        .args([
            "search",
            "--sync",
            "--name",
            "FreeRDP",
            "windowfocus",
            "--sync",
            "%1",
        ])
        .args(["type", "--delay", "60", text])
        .output()
        .unwrap();
    assert!(out.status.success(), "xdotool type failed: {out:?}");
    let out = Command::new(require("xdotool", "xdotool"))
        .env("DISPLAY", display)
        .args(["key", "--delay", "60", "Return"])
        .output()
        .unwrap();
    assert!(out.status.success(), "xdotool key failed: {out:?}");
}

impl Display {
    /// A virtual X display of `width` x `height` pixels (24-bit colour), numbered and started
    /// like [`Display::start`] (which is 1024x768).
    pub fn start_sized(dir: &Path, width: u32, height: u32) -> Display {
        let xvfb = require("Xvfb", "xvfb");
        // Displays from 200 + 50 * (pid % 40): distinct per test process and per test.
        let base = 200 + 50 * (std::process::id() % 40);
        for _ in 0..50 {
            let number = base + DISPLAYS.fetch_add(1, Ordering::Relaxed) % 50;
            if Path::new(&format!("/tmp/.X{number}-lock")).exists() {
                continue;
            }
            let mut command = Command::new(&xvfb);
            command.args([
                format!(":{number}"),
                "-screen".into(),
                "0".into(),
                format!("{width}x{height}x24"),
                "-nolisten".into(),
                "tcp".into(),
                // The readiness probe below connects and leaves; without this, the server would
                // reset when it leaves and refuse the next client for a moment.
                "-noreset".into(),
            ]);
            let mut process = spawn_logged(command, "Xvfb", dir.join(format!("xvfb-{number}.log")));
            let socket = format!("/tmp/.X11-unix/X{number}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                // Ready when our Xvfb runs and its socket accepts (a stale socket refuses).
                let running = matches!(process.child.try_wait(), Ok(None));
                if running && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                    return Display { number, process };
                }
                if let Ok(Some(_)) = process.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = process.child.kill();
        }
        panic!("no {width}x{height} X display could be started with Xvfb");
    }

    /// The process id of the display's Xvfb.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

/// The shadow server's files in `dir`: a SAM file with one local account (winpr-hash) and a
/// home directory (where it makes its certificate).
pub fn shadow_files(dir: &Path, account: &str, password: &str) -> (PathBuf, PathBuf) {
    let winpr_hash = require("winpr-hash", "winpr-utils");
    let sam = dir.join("target.sam");
    let out = Command::new(winpr_hash)
        .args(["-u", account, "-p", password, "-f", "sam"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run winpr-hash: {e}"));
    assert!(out.status.success(), "winpr-hash failed: {out:?}");
    std::fs::write(&sam, &out.stdout).unwrap_or_else(|e| panic!("writing {}: {e}", sam.display()));
    let home = dir.join("target-home");
    std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("creating {}: {e}", home.display()));
    (sam, home)
}

impl ShadowTarget {
    /// [`ShadowTarget::start`] on a display the caller started (of the size it wants, with the
    /// programs it wants on it).
    pub fn start_on(dir: &Path, display: Display, account: &str, password: &str) -> ShadowTarget {
        let shadow = require("freerdp-shadow-cli", "freerdp2-shadow-x11");
        let (sam, home) = shadow_files(dir, account, password);
        let port = free_port();
        let mut command = Command::new(shadow);
        command
            .env("HOME", &home)
            .env("DISPLAY", display.env())
            .arg(format!("/port:{port}"))
            .arg("/bind-address:127.0.0.1")
            .arg("/sec:nla")
            .arg(format!("/sam-file:{}", sam.display()));
        let mut process = spawn_logged(command, "freerdp-shadow-cli", dir.join("shadow.log"));
        wait_for_port(port, &mut process, &display);
        ShadowTarget {
            port,
            home,
            process,
            display,
        }
    }
}
