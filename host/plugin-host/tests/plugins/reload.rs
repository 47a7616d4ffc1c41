//! Reloading a running host: the next call uses the registry's new plugin set, a call already
//! running finishes on the set it started with, caches survive, and a registry that cannot be
//! read keeps the previous set.

use crate::support::*;
use gatehouse_plugin_host::*;
use std::time::{Duration, Instant};

fn verdict_kind(result: &Result<AaVerdict, PluginFailure>) -> String {
    match result {
        Ok(AaVerdict::Accept(accepted)) => format!("accept by {:?}", accepted.plugins),
        Ok(AaVerdict::Deny { plugin, reason }) => format!("deny by {plugin}: {reason}"),
        Ok(AaVerdict::NeedInfo { plugin, .. }) => format!("question from {plugin}"),
        Err(failure) => format!("failure: {failure}"),
    }
}

async fn login(host: &PluginHost) -> String {
    verdict_kind(&authenticate_once(host, &connection("alice")).await)
}

#[tokio::test]
async fn enabling_and_disabling_take_effect_at_the_next_call_after_a_reload() {
    let env = TestEnv::new();
    // Nothing enabled: an empty host.
    let host = env.host();
    assert!(host.aa_plugins().is_empty());
    assert_eq!(login(&host).await, "accept by []");

    env.install_hostile("deny", grants(), "");
    // Not before the reload...
    assert_eq!(login(&host).await, "accept by []");
    let loaded = host.reload().unwrap();
    assert_eq!(
        loaded,
        [LoadedPluginInfo {
            name: "hostile".into(),
            kinds: vec![PluginKind::Aa],
            load_error: None
        }]
    );
    // ...and at once after it, in every clone of the host.
    let clone = host.clone();
    assert_eq!(&*clone.aa_plugins(), ["hostile".to_string()]);
    assert_eq!(
        login(&clone).await,
        "deny by hostile: denied by configuration"
    );

    env.registry.disable("hostile").unwrap();
    assert_eq!(host.reload().unwrap(), []);
    assert_eq!(login(&clone).await, "accept by []");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_finishes_on_the_set_it_started_with() {
    let env = hostile_waiting_on_a_silent_server(1500).await;
    let host = env.host();
    let in_flight = {
        let host = host.clone();
        tokio::spawn(async move { login(&host).await })
    };
    // The call is waiting on the silent server; the plugin is disabled and the host reloaded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.registry.disable("hostile").unwrap();
    host.reload().unwrap();
    let started = Instant::now();
    assert_eq!(login(&host).await, "accept by []");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(
        in_flight.await.unwrap(),
        "failure: plugin `hostile` in aa.authenticate: the plugin did not answer within 1500 ms"
    );
}

#[tokio::test]
async fn a_reload_keeps_the_cache_so_a_used_code_stays_used() {
    let env = TestEnv::with_totp();
    let host = env.host();
    let conn = connection_with("alice", "otp", "287082");
    let first = authenticate_once(&host, &conn).await;
    assert_eq!(verdict_kind(&first), "accept by [\"totp-mfa\"]");
    // Unchanged, reloaded; then with new grants (loaded anew); then disabled and enabled again.
    host.reload().unwrap();
    let mut changed = env.registry.show("totp-mfa").unwrap().grants;
    changed.limits.cpu_ms = 150;
    env.registry.set_grants("totp-mfa", &changed).unwrap();
    host.reload().unwrap();
    env.registry.disable("totp-mfa").unwrap();
    host.reload().unwrap();
    env.registry.enable("totp-mfa").unwrap();
    host.reload().unwrap();
    let replay = authenticate_once(&host, &conn).await;
    assert_eq!(
        verdict_kind(&replay),
        "deny by totp-mfa: one-time code already used"
    );
}

#[tokio::test]
async fn an_unreadable_registry_keeps_the_previous_set_and_a_broken_plugin_fails_closed() {
    let env = TestEnv::new();
    env.install_hostile("deny", grants(), "");
    let host = env.host();
    let grants_file = env.registry.root().join("hostile/grants.toml");
    let good = std::fs::read_to_string(&grants_file).unwrap();
    std::fs::write(&grants_file, "enabled = [").unwrap();
    let error = host.reload().unwrap_err();
    assert!(error.to_string().contains("grants.toml"), "{error}");
    assert_eq!(
        login(&host).await,
        "deny by hostile: denied by configuration"
    );

    // Readable again, but the component is not WebAssembly: listed with its error, and logins
    // fail closed.
    std::fs::write(&grants_file, good).unwrap();
    std::fs::write(env.registry.root().join("hostile/plugin.wasm"), b"not wasm").unwrap();
    let loaded = host.reload().unwrap();
    assert_eq!(loaded.len(), 1);
    let message = loaded[0].load_error.clone().unwrap();
    assert!(message.contains("cannot compile"), "{message}");
    assert_eq!(
        login(&host).await,
        format!(
            "failure: plugin `hostile` in aa.authenticate: the plugin could not be instantiated: {message}"
        )
    );
}
