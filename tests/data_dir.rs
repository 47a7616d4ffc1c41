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
