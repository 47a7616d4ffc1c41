//! End to end: the data directory is private to the service user. `init` creates it so, even
//! under a permissive umask, and `serve` finds and fixes (with a warning) what was opened up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::Gatehouse;

/// Every file and directory under `root` with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out
}

fn open_to_others(root: &Path) -> Vec<(PathBuf, u32)> {
    modes(root)
        .into_iter()
        .filter(|(_, mode)| mode & 0o077 != 0)
        .collect()
}

#[test]
fn init_and_serve_keep_the_data_directory_private() {
    // The test runner's umask (022) would make 0644 files: the binary must not rely on it.
    let mut gh = Gatehouse::init();
    let entries = modes(gh.data_dir());
    for name in ["gatehouse.redb", "settings.json", "master.key"] {
        assert!(
            entries
                .iter()
                .any(|(p, _)| p.file_name().is_some_and(|f| f == name)),
            "init made no {name}: {entries:?}"
        );
    }
    assert_eq!(open_to_others(gh.data_dir()), vec![], "after init");

    // An operator (or a restore from backup) opens things up; serve closes them with a warning.
    let settings = gh.data_dir().join("settings.json");
    let store = gh.data_dir().join("gatehouse.redb");
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o664)).unwrap();
    std::fs::set_permissions(gh.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    gh.serve();
    // What the running gateway and the CLI create (the admin socket, store pages) is private too.
    gh.cli_ok(&["session", "list"]);
    gh.stop_server();
    assert_eq!(open_to_others(gh.data_dir()), vec![], "after serve");
    let log = gh.log_text();
    for path in [&settings, &store] {
        assert!(
            log.lines()
                .any(|l| l.contains("must be private") && l.contains(&path.display().to_string())),
            "no warning names {}:\n{log}",
            path.display()
        );
    }
    assert!(
        log.contains("was=0644") && log.contains("was=0664"),
        "the warning gives the old modes:\n{log}"
    );
}

#[test]
fn a_relative_data_dir_serves_with_a_plugin_enabled() {
    // The default `--data-dir` is relative; wasmtime's compile cache used to refuse it.
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(support::GATEHOUSE_BIN)
            .current_dir(cwd.path())
            .arg("--data-dir")
            .arg("rel-data")
            .args(args)
            .env_remove("GATEHOUSE_DATA_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gatehouse {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["init"]);
    let package = support::plugin_package("totp-mfa");
    run(&["plugin", "install", package.to_str().unwrap()]);
    let grants = cwd.path().join("grants.toml");
    std::fs::write(&grants, "secrets = [\"totp-seed/*\"]\n").unwrap();
    run(&["plugin", "grant", "totp-mfa", grants.to_str().unwrap()]);
    run(&["plugin", "enable", "totp-mfa"]);

    // Free ports are free when picked: another test may take one before serve binds it, and
    // then serve is started again on others.
    let (up, text) = (0..5)
        .map(|_| {
            let port = support::free_port();
            let log = std::fs::File::create(cwd.path().join("serve.log")).unwrap();
            let mut serve = std::process::Command::new(support::GATEHOUSE_BIN)
                .current_dir(cwd.path())
                .args(["--data-dir", "rel-data", "serve", "--ssh-listen"])
                .arg(format!("127.0.0.1:{port}"))
                .args([
                    "--api-listen",
                    &format!("127.0.0.1:{}", support::free_port()),
                ])
                .args([
                    "--rdp-listen",
                    &format!("127.0.0.1:{}", support::free_port()),
                ])
                .env_remove("GATEHOUSE_DATA_DIR")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let up = support::poll(std::time::Duration::from_secs(60), || {
                if support::port_open(port) {
                    return Some(true);
                }
                serve.try_wait().ok().flatten().map(|_| false)
            });
            let _ = serve.kill();
            let _ = serve.wait();
            (
                up,
                std::fs::read_to_string(cwd.path().join("serve.log")).unwrap(),
            )
        })
        .find(|(_, text)| !text.contains("Address already in use"))
        .expect("serve found no free ports in 5 tries");
    assert_eq!(up, Some(true), "serve did not start:\n{text}");
    assert!(text.contains("plugin loaded"), "{text}");
    assert!(cwd.path().join("rel-data/plugins/.compiled").is_dir());
}

/// The audit trail is a hash chain an operator can check with the CLI, offline or through the
/// running server: `audit verify` prints the head to record, and a recorded head is found again
/// later, or the check fails naming it. (Tampering cases: `host/store/tests/audit_chain.rs`.)
#[test]
fn audit_verify_checks_the_chain_and_a_recorded_head() {
    use support::OutputExt;
    let mut gh = Gatehouse::init();
    gh.cli_ok(&["group", "add", "ops"]);
    gh.cli_ok(&["group", "add", "dbas"]);
    let said = gh.cli_ok(&["audit", "verify"]);
    assert!(said.contains("hash chain intact"), "{said}");
    let head = said
        .lines()
        .find_map(|l| l.strip_prefix("head: "))
        .unwrap_or_else(|| panic!("no head in:\n{said}"))
        .to_string();
    let (seq, chain) = head.split_once(':').unwrap();
    assert!(seq.parse::<u64>().unwrap() >= 2, "{head}");
    assert_eq!(chain.len(), 64, "{head}");
    let events = gh.cli_json(&["audit", "list", "--json"]);
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["chain"], chain, "{last}");

    // More events, through the running server: the recorded head is still in the trail.
    gh.serve();
    gh.cli_ok(&["group", "add", "sec"]);
    let said = gh.cli_ok(&["audit", "verify", "--head", &head]);
    assert!(
        said.contains(&format!("the recorded head {seq} is in the trail")),
        "{said}"
    );
    // A head this trail never had: the check fails and says why.
    let forged = format!("{seq}:{}", "0".repeat(64));
    let out = gh.cli(&["audit", "verify", "--head", &forged]);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr_text()
            .contains("is not in the trail: it was cut short or replaced by another copy"),
        "{}",
        out.describe()
    );
    let out = gh.cli(&["audit", "verify", "--head", "twelve"]);
    assert!(!out.status.success());
    assert!(
        out.stderr_text().contains("expected SEQ:CHAIN"),
        "{}",
        out.describe()
    );
}
