//! Dependency invariants from docs/ARCHITECTURE.md, checked over `cargo metadata`: each heavy
//! engine is known to exactly one crate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;

/// (dependency, the only workspace crate allowed to depend on it directly)
const OWNERS: &[(&str, &str)] = &[
    ("cedar-policy", "gatehouse-policy"),
    ("redb", "gatehouse-store"),
    ("tokio-postgres", "gatehouse-store"),
    ("deadpool-postgres", "gatehouse-store"),
    ("chacha20poly1305", "gatehouse-vault"),
    ("wasmtime", "gatehouse-plugin-host"),
    ("tantivy", "gatehouse-search"),
    ("ldap3", "gatehouse-directory"),
    ("socket2", "gatehouse-net"),
];

/// The workspace's packages, from `cargo metadata`.
fn workspace_metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn each_engine_has_one_owner() {
    let meta = workspace_metadata();
    let mut users: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for package in meta["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_string();
        for dep in package["dependencies"].as_array().unwrap() {
            if dep["kind"].as_str().is_some() {
                continue; // dev- and build-dependencies (benchmarks, tests) are not the code map
            }
            let dep_name = dep["name"].as_str().unwrap();
            if let Some((engine, _)) = OWNERS.iter().find(|(e, _)| *e == dep_name) {
                users.entry(engine).or_default().push(name.clone());
            }
        }
    }
    for (engine, owner) in OWNERS {
        for user in users.get(engine).cloned().unwrap_or_default() {
            assert_eq!(
                &user, owner,
                "`{user}` depends on `{engine}`; only `{owner}` may"
            );
        }
    }
    assert_eq!(users["cedar-policy"], ["gatehouse-policy"]);
    assert_eq!(users["redb"], ["gatehouse-store"]);
    assert_eq!(users["tokio-postgres"], ["gatehouse-store"]);
}

/// The exporter reads a `FrameSource` and the daemon adapts VNC recordings to it, so neither
/// protocol crate pulls in the other (nor IronRDP into `gatehouse-vnc`).
#[test]
fn the_rdp_replay_and_vnc_crates_do_not_depend_on_each_other() {
    let meta = workspace_metadata();
    let dependencies = |package: &str| -> Vec<String> {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == package)
            .unwrap_or_else(|| panic!("no package `{package}`"))["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect()
    };
    let replay = dependencies("gatehouse-rdp-replay");
    assert!(!replay.iter().any(|d| d == "gatehouse-vnc"), "{replay:?}");
    let vnc = dependencies("gatehouse-vnc");
    assert!(
        !vnc.iter()
            .any(|d| d == "gatehouse-rdp-replay" || d.starts_with("ironrdp")),
        "{vnc:?}"
    );
}
