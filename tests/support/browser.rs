//! The browser tests' tools: Node.js 20+ with playwright-core (npm ci in tests/browser, run
//! when needed) and Debian's chromium, or a failure that says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{OutputExt, run};

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

/// Node.js 20 or later and chromium, or a failure saying what to install.
pub fn require_browser_tools() -> PathBuf {
    let node = Command::new("node").arg("--version").output();
    let version = match node {
        Ok(out) if out.status.success() => out.stdout_text().trim().to_string(),
        _ => panic!(
            "`node` is not installed: this test needs Node.js 20 or later and npm \
             (scripts/install-test-deps.sh)"
        ),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "Node.js {version} is too old: playwright-core needs 20 or later"
    );
    let chromium = PathBuf::from("/usr/bin/chromium");
    assert!(
        chromium.is_file(),
        "`/usr/bin/chromium` is missing: install the Debian package `chromium` \
         (scripts/install-test-deps.sh)"
    );
    let dir = browser_dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        let started = Instant::now();
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        let out = run(cmd, None, Duration::from_secs(300));
        assert!(
            out.status.success(),
            "npm ci in tests/browser: {}",
            out.describe()
        );
        eprintln!("npm ci took {:?}", started.elapsed());
    }
    chromium
}
