//! `http-credstore` fetches target credentials from a Vault-KV-v2-shaped server started here.

use crate::support::*;
use gatehouse_plugin_host::*;

const TOKEN: &str = "hvs.test-token";

async fn env(granted: bool) -> (TestEnv, u16) {
    let (port, _seen) = http_server(|request| {
        let token_ok = request
            .headers
            .iter()
            .any(|(k, v)| k == "x-vault-token" && v == TOKEN);
        if !token_ok {
            return (403, r#"{"errors":["permission denied"]}"#.into());
        }
        match request.path.as_str() {
            "/v1/secret/data/gatehouse/db1/root" => (
                200,
                r#"{"data":{"data":{"password":"s3cret-from-vault","private_key":"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"},"metadata":{"version":3}}}"#.into(),
            ),
            "/v1/secret/data/gatehouse/db1/oracle" => (200, r#"{"data":{"data":{"password":"only-a-password"}}}"#.into()),
            _ => (404, r#"{"errors":[]}"#.into()),
        }
    })
    .await;
    let mut env = TestEnv::new();
    env.secret("http-credstore", "vault-token", TOKEN);
    env.install(
        "http-credstore",
        Grants {
            http: if granted {
                vec![format!("127.0.0.1:{port}")]
            } else {
                Vec::new()
            },
            secrets: vec!["vault-token".into()],
            ..grants()
        },
        &format!("address = \"http://127.0.0.1:{port}\""),
    );
    (env, port)
}

fn request(account: &str) -> CredentialRequest {
    CredentialRequest {
        session_id: "s-1".into(),
        gateway_user: "alice".into(),
        target_account: account.into(),
        target_asset: "db1".into(),
        target_address: "10.0.0.5".into(),
    }
}

fn describe(result: Result<Option<Credential>, PluginFailure>) -> String {
    match result {
        Ok(Some(Credential::Password(secret))) => format!("password {}", secret.expose()),
        Ok(Some(Credential::PrivateKey(secret))) => {
            format!(
                "private key {}",
                secret.expose().lines().next().unwrap_or("")
            )
        }
        Ok(None) => "none".into(),
        Err(failure) => format!("failure: {failure}"),
    }
}

#[tokio::test]
async fn credentials_come_from_the_http_store() {
    let (env, _port) = env(true).await;
    let host = env.host();
    let cases = [
        (
            "root",
            CredentialKind::Password,
            "password s3cret-from-vault",
        ),
        (
            "root",
            CredentialKind::PrivateKey,
            "private key -----BEGIN OPENSSH PRIVATE KEY-----",
        ),
        (
            "oracle",
            CredentialKind::Password,
            "password only-a-password",
        ),
        ("oracle", CredentialKind::PrivateKey, "none"),
        ("nobody", CredentialKind::Password, "none"),
    ];
    for (account, kind, expected) in cases {
        let result = host
            .credential("http-credstore", kind, &request(account))
            .await;
        assert_eq!(describe(result), expected, "{account} {kind:?}");
    }
    // The secret never shows in Debug output.
    let credential = host
        .credential("http-credstore", CredentialKind::Password, &request("root"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        format!("{credential:?}"),
        "Password(SecretString([redacted]))"
    );
    // Life-cycle events run.
    for event in [
        CredentialEvent::AuthenticationCompleted { succeeded: true },
        CredentialEvent::CheckIn,
        CredentialEvent::SessionEnded(SessionEnd::default()),
    ] {
        host.credential_event("http-credstore", &request("root"), event)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn credential_store_without_the_http_grant_is_refused() {
    let (env, port) = env(false).await;
    let host = env.host();
    let failure = host
        .credential("http-credstore", CredentialKind::Password, &request("root"))
        .await
        .unwrap_err();
    assert_eq!(
        failure.to_string(),
        "plugin `http-credstore` in credential-store.get-password: the plugin reported an error: request refused: HttpRequestDenied"
    );
    assert_eq!(
        failure.denied,
        vec![format!(
            "http destination `127.0.0.1:{port}` is not granted"
        )]
    );
}
