//! A real PostgreSQL server (Debian's package) for the store tests: `initdb` and `pg_ctl` in a
//! temporary directory, as the unprivileged `postgres` user when the tests run as root, listening
//! on a free loopback port with password (SCRAM) authentication. Stopped when dropped. A missing
//! PostgreSQL fails loudly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{free_port, poll, port_open};

pub const USER: &str = "gatehouse";
pub const PASSWORD: &str = "Pg-store-pw-4Tz";

pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    running: bool,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server under /usr/lib/postgresql: install the test dependencies (scripts/install-test-deps.sh: postgresql)")
    })
}

fn as_root() -> bool {
    // The owner of /proc/self is this process's user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pg-")
            .tempdir()
            .unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, PASSWORD).unwrap();
        if as_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .expect("chown");
            assert!(
                out.status.success(),
                "chown to the `postgres` user (from Debian's postgresql package): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let pg = Postgres {
            dir,
            bin,
            port: free_port(),
            running: false,
        };
        let data = pg.data();
        let pw = pw.to_string_lossy().into_owned();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                USER,
                "--pwfile",
                &pw,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        // Test speed: nothing here must survive a power cut.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n",
            pg.port,
            pg.dir.path().display()
        );
        let conf_path = Path::new(&data).join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        let mut pg = pg;
        pg.start_server();
        let sock = pg.dir.path().display().to_string();
        let port = pg.port.to_string();
        pg.run(
            "createdb",
            &["-h", &sock, "-p", &port, "-U", USER, "gatehouse"],
        );
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let path = self.bin.join(program);
        let mut cmd = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}` ({e})", path.display()));
        assert!(
            out.status.success(),
            "{program} {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the server (after [`Postgres::stop`]) and waits for its port.
    pub fn start_server(&mut self) {
        let data = self.data();
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
        );
        assert!(
            poll(Duration::from_secs(30), || port_open(self.port)
                .then_some(()))
            .is_some(),
            "PostgreSQL did not listen on {}",
            self.port
        );
        self.running = true;
    }

    /// Stops the server (fast: open connections are cut).
    pub fn stop(&mut self) {
        let data = self.data();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        self.running = false;
    }

    /// A URL with the password, for a database of this server (made if needed).
    pub fn url(&self, database: &str) -> String {
        if database != "gatehouse" {
            let sock = self.dir.path().display().to_string();
            let port = self.port.to_string();
            let exists = self.psql(
                "postgres",
                &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
            );
            if exists.trim().is_empty() {
                self.run(
                    "createdb",
                    &["-h", &sock, "-p", &port, "-U", USER, database],
                );
            }
        }
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Runs one SQL command with psql over the socket; its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let sock = self.dir.path().display().to_string();
        let port = self.port.to_string();
        self.run(
            "psql",
            &[
                "-h",
                &sock,
                "-p",
                &port,
                "-U",
                USER,
                "-d",
                database,
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let path = self.bin.join("pg_ctl");
            let mut cmd = if as_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&path);
                c
            } else {
                Command::new(&path)
            };
            let _ = cmd
                .args(["-D", &data, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
