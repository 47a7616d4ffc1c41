//! "No permission" tests: one per capability, with the exact error the plugin or the operator
//! gets.

use crate::support::*;
use gatehouse_plugin_host::*;

/// Runs the hostile plugin in `mode` with `grants` and asserts the exact deny reason.
async fn assert_denied(mode: &str, grants: Grants, extra_config: &str, expected: &str) {
    let env = TestEnv::new();
    env.install_hostile(mode, grants, extra_config);
    let host = env.host();
    let reason = match authenticate_once(&host, &connection("alice")).await {
        Ok(AaVerdict::Deny { reason, .. }) => reason,
        other => format!("unexpected: {other:?}"),
    };
    assert_eq!(reason, expected, "mode `{mode}`");
}

#[tokio::test]
async fn http_to_a_host_that_is_not_granted() {
    // Not granted at all.
    assert_denied("http", grants(), "", "request refused: HttpRequestDenied").await;
    // Granted a different host.
    let other_host = Grants {
        http: vec!["127.0.0.1:9".into()],
        ..grants()
    };
    assert_denied(
        "http",
        other_host,
        "url = \"http://127.0.0.2:9/\"",
        "request refused: HttpRequestDenied",
    )
    .await;
}

#[tokio::test]
async fn secret_that_is_not_granted() {
    assert_denied(
        "secret",
        grants(),
        "",
        "HostError::NotGranted(\"secret `not-granted` is not granted to this plugin\")",
    )
    .await;
}

#[tokio::test]
async fn filesystem_is_absent() {
    // No directory is preopened, so no path resolves (44 is WASI's ENOENT).
    assert_denied(
        "read-file",
        grants(),
        "",
        "No such file or directory (os error 44)",
    )
    .await;
}

#[tokio::test]
async fn sockets_are_refused() {
    // TCP and UDP are off and every address is denied (2 is WASI's EACCES); name lookup is off.
    assert_denied("tcp", grants(), "", "Permission denied (os error 2)").await;
    assert_denied(
        "dns",
        grants(),
        "",
        "failed to lookup address information: Non-recoverable error",
    )
    .await;
}

#[tokio::test]
async fn environment_is_empty() {
    assert_denied("env", grants(), "", "0 environment variables").await;
}

#[test]
fn config_not_matching_the_schema_is_refused() {
    let env = TestEnv::new();
    env.registry.install(&package("totp-mfa")).unwrap();
    env.registry.install(&package("http-credstore")).unwrap();
    let cases = [
        (
            "totp-mfa",
            "digits = \"six\"",
            "invalid config for plugin `totp-mfa`: key `digits`: expected an integer, found a string",
        ),
        (
            "totp-mfa",
            "digits = 12",
            "invalid config for plugin `totp-mfa`: key `digits`: 12 is more than 8",
        ),
        (
            "totp-mfa",
            "colour = \"red\"",
            "invalid config for plugin `totp-mfa`: unknown key `colour`",
        ),
    ];
    for (plugin, config, expected) in cases {
        assert_eq!(
            env.registry
                .set_config(plugin, config)
                .unwrap_err()
                .to_string(),
            expected
        );
    }
    // A required key missing: the plugin cannot be enabled.
    assert_eq!(
        env.registry
            .enable("http-credstore")
            .unwrap_err()
            .to_string(),
        "invalid config for plugin `http-credstore`: missing required key `address`"
    );
}

#[test]
fn grants_must_be_declared_in_the_manifest() {
    let env = TestEnv::new();
    env.registry.install(&package("totp-mfa")).unwrap();
    let cases = [
        (
            Grants {
                http: vec!["evil.example".into()],
                ..grants()
            },
            "invalid grants for plugin `totp-mfa`: http destination `evil.example` is not declared in the manifest",
        ),
        (
            Grants {
                secrets: vec!["vault-token".into()],
                ..grants()
            },
            "invalid grants for plugin `totp-mfa`: secret `vault-token` is not declared in the manifest",
        ),
    ];
    for (grants, expected) in cases {
        assert_eq!(
            env.registry
                .set_grants("totp-mfa", &grants)
                .unwrap_err()
                .to_string(),
            expected
        );
    }
}

#[tokio::test]
async fn missing_and_wrong_kind_plugins_fail_closed() {
    let env = TestEnv::with_totp();
    let host = env.host();
    let request = CredentialRequest {
        session_id: "s".into(),
        gateway_user: "alice".into(),
        target_account: "root".into(),
        target_asset: "db1".into(),
        target_address: "10.0.0.5".into(),
    };
    let missing = host
        .credential("vault-plugin", CredentialKind::Password, &request)
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "plugin `vault-plugin` in credential-store.get-password: the plugin is not installed or not enabled"
    );
    let wrong = host
        .credential("totp-mfa", CredentialKind::Password, &request)
        .await
        .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        "plugin `totp-mfa` in credential-store.get-password: the plugin does not implement `credential-store`"
    );
}

#[tokio::test]
async fn a_broken_enabled_plugin_denies_everyone() {
    let env = TestEnv::new();
    env.install("totp-mfa", totp_grants(), "");
    // Someone replaces the component with garbage after installation.
    std::fs::write(
        env.registry.root().join("totp-mfa/plugin.wasm"),
        b"not wasm",
    )
    .unwrap();
    let host = PluginHost::start(&env.registry, env.options()).unwrap();
    let loaded = host.plugins();
    assert_eq!(loaded.len(), 1);
    assert!(
        loaded[0]
            .load_error
            .as_deref()
            .unwrap_or("")
            .starts_with("cannot compile `plugin.wasm`")
    );
    let failure = authenticate_once(&host, &connection("alice"))
        .await
        .unwrap_err();
    assert!(
        failure.to_string().starts_with("plugin `totp-mfa` in aa.authenticate: the plugin could not be instantiated: cannot compile"),
        "{failure}"
    );
}
