//! Running one hook of one installed plugin against a fixture file, for `gatehouse plugin
//! test` and for tests. The plugin runs exactly as in the gateway (same limits, grants and
//! configuration) whether or not it is enabled; secrets and the clock come from the fixture.
//!
//! ```toml
//! hook = "authenticate"        # authenticate | authorize | get-password | get-private-key | validate-ticket
//! now-unix-ms = 1700000000000  # optional: a fixed clock
//! answers = { otp = "123456" }
//! secrets = { "totp-seed/alice" = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" }   # test values only
//! ticket-id = "CHG123456"      # for validate-ticket
//!
//! [connection]
//! session-id = "00000000-0000-0000-0000-000000000001"
//! protocol = "ssh"
//! client-address = "192.0.2.7"
//! client-port = 50000
//! gateway-user = "alice"
//! groups = ["ops"]
//! target-asset = "db1"
//! target-address = "10.0.0.5"
//! target-port = 22
//! target-account = "root"
//! options = [["otp", "123456"]]
//! ```

use crate::error::HostError;
use crate::host::{HostOptions, PluginHost};
use crate::registry::Registry;
use crate::secrets::{Clock, StaticSecrets};
use crate::types::*;
use gatehouse_core::secret::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A fixture file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Fixture {
    pub hook: String,
    #[serde(default)]
    pub now_unix_ms: Option<u64>,
    #[serde(default)]
    pub answers: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub ticket_id: Option<String>,
    pub connection: ConnectionInfo,
}

impl Fixture {
    pub fn parse(text: &str) -> Result<Self, HostError> {
        toml::from_str(text).map_err(|e| HostError::Load {
            plugin: "fixture".into(),
            message: e.message().to_owned(),
        })
    }
}

/// What the hook said, ready to print; `accepted` is false for deny, need-info and failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureOutcome {
    pub accepted: bool,
    pub text: String,
}

/// Runs `fixture.hook` of `plugin` once.
pub async fn run(
    registry: &Registry,
    plugin: &str,
    fixture: &Fixture,
) -> Result<FixtureOutcome, HostError> {
    let mut secrets = StaticSecrets::new();
    for (name, value) in &fixture.secrets {
        secrets.insert(plugin, name, SecretString::new(value.clone()));
    }
    let options = HostOptions {
        secrets: Arc::new(secrets),
        clock: fixture.now_unix_ms.map(Clock::fixed).unwrap_or_default(),
        ..HostOptions::default()
    };
    let host =
        PluginHost::start_selected(registry, options, |installed| installed.name() == plugin)?;
    if let Some(error) = host.plugins().into_iter().find_map(|p| p.load_error) {
        return Err(HostError::Load {
            plugin: plugin.to_owned(),
            message: error,
        });
    }
    let conn = &fixture.connection;
    let answers: Vec<Answer> = fixture
        .answers
        .iter()
        .map(|(key, value)| Answer::new(key.clone(), value.clone()))
        .collect();
    let mut cookies = SessionCookies::default();
    let request = CredentialRequest {
        session_id: conn.session_id.clone(),
        gateway_user: conn.gateway_user.clone(),
        target_account: conn.target_account.clone(),
        target_asset: conn.target_asset.clone(),
        target_address: conn.target_address.clone(),
    };
    let failed = |failure: crate::error::PluginFailure| FixtureOutcome {
        accepted: false,
        text: format!("failure: {failure}{}", denied_suffix(&failure.denied)),
    };
    Ok(match fixture.hook.as_str() {
        "authenticate" | "authorize" => {
            let verdict = if fixture.hook == "authenticate" {
                host.authenticate(conn, &mut cookies, &answers).await
            } else {
                host.authorize(conn, &mut cookies, &answers).await
            };
            match verdict {
                Ok(verdict) => render_verdict(&verdict),
                Err(failure) => failed(failure),
            }
        }
        "get-password" | "get-private-key" => {
            let kind = if fixture.hook == "get-password" {
                CredentialKind::Password
            } else {
                CredentialKind::PrivateKey
            };
            match host.credential(plugin, kind, &request).await {
                Ok(Some(credential)) => {
                    let length = match &credential {
                        Credential::Password(secret) | Credential::PrivateKey(secret) => {
                            secret.expose().len()
                        }
                    };
                    FixtureOutcome {
                        accepted: true,
                        text: format!("credential: {length} bytes (not shown)"),
                    }
                }
                Ok(None) => FixtureOutcome {
                    accepted: false,
                    text: "no credential".into(),
                },
                Err(failure) => failed(failure),
            }
        }
        "validate-ticket" => {
            let ticket = TicketRequest {
                ticket_id: fixture.ticket_id.clone().unwrap_or_default(),
                session_id: conn.session_id.clone(),
                gateway_user: conn.gateway_user.clone(),
                target_account: conn.target_account.clone(),
                target_asset: conn.target_asset.clone(),
                client_address: conn.client_address.clone(),
            };
            match host.validate_ticket(plugin, &ticket).await {
                Ok(TicketVerdict::Valid { audit }) => FixtureOutcome {
                    accepted: true,
                    text: format!("valid{}", render_pairs(&audit)),
                },
                Ok(TicketVerdict::Invalid { reason }) => FixtureOutcome {
                    accepted: false,
                    text: format!("invalid: {reason}"),
                },
                Err(failure) => failed(failure),
            }
        }
        other => return Err(HostError::UnknownHook(other.to_owned())),
    })
}

fn denied_suffix(denied: &[String]) -> String {
    denied.iter().map(|d| format!("\n  refused: {d}")).collect()
}

fn render_pairs(pairs: &[(String, String)]) -> String {
    pairs.iter().map(|(k, v)| format!("\n  {k}={v}")).collect()
}

/// One verdict as the CLI prints it.
pub fn render_verdict(verdict: &AaVerdict) -> FixtureOutcome {
    match verdict {
        AaVerdict::Accept(accepted) => {
            let mut text = format!(
                "accept\n  user: {}\n  groups: {}",
                accepted.gateway_user,
                accepted.groups.join(", ")
            );
            for note in &accepted.audit {
                text.push_str(&format!(
                    "\n  audit: {} {}={}",
                    note.plugin, note.key, note.value
                ));
            }
            FixtureOutcome {
                accepted: true,
                text,
            }
        }
        AaVerdict::Deny { plugin, reason } => FixtureOutcome {
            accepted: false,
            text: format!("deny by `{plugin}`: {reason}"),
        },
        AaVerdict::NeedInfo { plugin, question } => FixtureOutcome {
            accepted: false,
            text: format!(
                "need-info from `{plugin}`: key `{}`, echo {}, prompt {:?}",
                question.key,
                if question.echo { "on" } else { "off" },
                question.prompt
            ),
        },
    }
}
