//! Dependency invariants, checked over `cargo metadata`: only `gatehouse-plugin-host` depends on
//! wasmtime, and its dependency graph has one crypto backend (aws-lc-rs: no ring, no OpenSSL).

use std::collections::BTreeSet;
use std::process::Command;

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(rustc).arg("-vV").output().expect("rustc runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host")
}

/// The resolved graph for this machine's platform (what gets built; no download needed).
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn only_plugin_host_depends_on_wasmtime() {
    let metadata = metadata();
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let mut offenders = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        if !members.contains(package["id"].as_str().unwrap()) {
            continue;
        }
        let name = package["name"].as_str().unwrap();
        for dependency in package["dependencies"].as_array().unwrap() {
            let dependency = dependency["name"].as_str().unwrap();
            if dependency.starts_with("wasmtime") && name != "gatehouse-plugin-host" {
                offenders.push(format!("{name} -> {dependency}"));
            }
        }
    }
    assert_eq!(offenders, Vec::<String>::new());
}

/// `cargo tree -i <package>` for the plugin host: what in its build depends on the package
/// (empty when nothing does, or when the package is not in the lock file at all).
fn inverted_tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--locked", "--offline", "-e", "normal,build"])
        .args(["-p", "gatehouse-plugin-host", "-i", package])
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

#[test]
fn plugin_host_has_one_crypto_backend() {
    // The lock file may name `ring` (an optional dependency of rustls-webpki); what matters is
    // that nothing built for the plugin host uses it.
    for forbidden in ["ring", "openssl-sys"] {
        assert_eq!(
            inverted_tree(forbidden),
            "",
            "`{forbidden}` is built for the plugin host"
        );
    }
    assert!(
        inverted_tree("aws-lc-rs").contains("rustls"),
        "rustls should use aws-lc-rs"
    );
}
