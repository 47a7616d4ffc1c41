//! The on-disk registry: install, list, show, enable, disable, remove, the fixture runner, and
//! the compile cache that makes restarts fast.

use crate::support::*;
use gatehouse_plugin_host::fixture::{Fixture, run};
use gatehouse_plugin_host::*;
use std::time::Instant;

#[test]
fn install_list_enable_disable_remove() {
    let env = TestEnv::new();
    let installed = env.registry.install(&package("totp-mfa")).unwrap();
    assert_eq!(installed.name(), "totp-mfa");
    assert!(
        !installed.grants.enabled,
        "installed plugins start disabled"
    );
    assert_eq!(installed.component_sha256.len(), 64);
    assert_eq!(
        env.registry
            .install(&package("totp-mfa"))
            .unwrap_err()
            .to_string(),
        "plugin `totp-mfa` is already installed (remove it first)"
    );
    env.registry.install(&package("ticket-required")).unwrap();
    let names: Vec<String> = env
        .registry
        .list()
        .unwrap()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    assert_eq!(names, ["ticket-required", "totp-mfa"]);
    assert!(env.registry.enable("totp-mfa").unwrap().grants.enabled);
    assert!(!env.registry.disable("totp-mfa").unwrap().grants.enabled);
    env.registry.remove("totp-mfa").unwrap();
    assert_eq!(
        env.registry.show("totp-mfa").unwrap_err().to_string(),
        "plugin `totp-mfa` is not installed"
    );
    assert_eq!(
        env.registry.show("../etc").unwrap_err().to_string(),
        "plugin `../etc` is not installed"
    );
}

#[test]
fn disabled_plugins_are_not_loaded() {
    let env = TestEnv::new();
    env.registry.install(&package("totp-mfa")).unwrap();
    let host = PluginHost::start(&env.registry, env.options()).unwrap();
    assert_eq!(host.plugins(), Vec::new());
}

#[tokio::test]
async fn fixture_runs_one_hook() {
    let env = TestEnv::new();
    env.registry.install(&package("totp-mfa")).unwrap();
    env.registry
        .set_grants(
            "totp-mfa",
            &Grants {
                secrets: vec!["totp-seed/*".into()],
                ..Grants::default()
            },
        )
        .unwrap();
    let fixture = Fixture::parse(&format!(
        r#"
        hook = "authenticate"
        now-unix-ms = 59000
        answers = {{ otp = "287082" }}
        secrets = {{ "totp-seed/alice" = "{RFC_SEED}" }}
        [connection]
        session-id = "s-1"
        protocol = "ssh"
        client-address = "192.0.2.7"
        client-port = 50000
        gateway-user = "alice"
        groups = ["ops"]
        target-asset = "db1"
        target-address = "10.0.0.5"
        target-port = 22
        target-account = "root"
        "#
    ))
    .unwrap();
    let outcome = run(&env.registry, "totp-mfa", &fixture).await.unwrap();
    assert_eq!(
        outcome.text,
        "accept\n  user: alice\n  groups: ops\n  audit: totp-mfa mfa=totp"
    );
    assert!(outcome.accepted);
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let env = TestEnv::new();
    env.install("hostile", Grants::default(), "");
    let cache = env.dir.path().join("compile-cache");
    let options = HostOptions {
        compile_cache_dir: Some(cache.clone()),
        ..env.options()
    };
    let started = Instant::now();
    PluginHost::start(&env.registry, options.clone()).unwrap();
    let cold = started.elapsed();
    let files = walk(&cache);
    assert!(files > 0, "nothing cached in {}", cache.display());
    let started = Instant::now();
    PluginHost::start(&env.registry, options).unwrap();
    let warm = started.elapsed();
    assert!(
        warm * 2 < cold,
        "warm start {warm:?} is not faster than cold start {cold:?}"
    );
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
