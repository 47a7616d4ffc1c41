//! Dependency invariants of the mail crate: one crypto backend (rustls on aws-lc-rs: no ring,
//! no OpenSSL) and lettre without its `tracing` feature, which logs SMTP commands (AUTH
//! included) at debug level.

use std::process::Command;

/// `cargo tree -i <package>` over `scope`: what in its build depends on the package
/// (empty when nothing does, or when the package is not in the lock file at all).
fn inverted_tree(package: &str, edges: &str, scope: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--locked", "--offline", "-e", edges])
        .args(scope)
        .args(["-i", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || stderr.contains("did not match any packages"),
        "cargo tree failed: {stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const NOTIFY: &[&str] = &["-p", "gatehouse-notify"];

#[test]
fn mail_has_one_crypto_backend() {
    for forbidden in ["ring", "openssl-sys", "native-tls"] {
        assert_eq!(
            inverted_tree(forbidden, "normal,build", NOTIFY),
            "",
            "`{forbidden}` is built for gatehouse-notify"
        );
    }
    assert!(
        inverted_tree("aws-lc-rs", "normal,build", NOTIFY).contains("rustls"),
        "rustls should use aws-lc-rs"
    );
}

#[test]
fn lettre_does_not_log_smtp_commands() {
    // Features unify across a build: checked over the whole workspace, so that no other crate
    // turns them on for the gateway binary either.
    let features = inverted_tree("lettre", "features", &["--workspace"]);
    assert!(
        features.contains("lettre feature \"aws-lc-rs\""),
        "{features}"
    );
    for forbidden in ["tracing", "log", "native-tls", "ring", "rustls-tls"] {
        assert!(
            !features.contains(&format!("lettre feature \"{forbidden}\"")),
            "lettre is built with its `{forbidden}` feature:\n{features}"
        );
    }
}
