//! The vault's workflows: access requests and their approvals, release and check-in of
//! passwords and private keys, access strings for passwords-initiated sessions, the hold of a
//! sessions-initiated connection, and A2A credential retrieval.
//!
//! Every decision is the policy engine's: `request_access` for filing, `auto_approve`, `approve`
//! and `reject` for reviewers, `grant_request` with the approval count, `release_*` with the
//! request in play, `a2a_retrieve` for applications. This crate keeps the states, counts and
//! windows; it never decides by itself who may do what. Transport-free: the HTTPS API and the SSH
//! gateway call it.

mod a2a;
mod access;
mod admin;
mod error;
mod notify;
mod recordings;
mod requests;
mod tokens;

pub use a2a::{A2aCredential, A2aPeer, A2aRegistration, SourceList, cert_thumbprint};
pub use access::{AccessEntry, Way};
pub use admin::{Explanation, PolicyInfo};
pub use error::WorkflowError;
/// What [`Workflow::authorize_admin`] decides.
pub use gatehouse_policy::AdminAction;
pub use notify::{Notify, RequestEvent};
pub use requests::{Actor, NewRequest, Released, RequestChange};
pub use tokens::{ACCESS_OPTION, AccessString};

use gatehouse_audit::Auditor;
use gatehouse_policy::PolicyEngine;
use gatehouse_store::Store;
use gatehouse_vault::Vault;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the workflows (settings.json `requests`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct WorkflowSettings {
    /// A pending request nobody decided in this time expires.
    pub approval_timeout_seconds: u64,
    /// The window of a request filed without a duration.
    pub default_duration_minutes: u32,
    /// The longest window anyone may ask for; policies may allow less.
    pub max_duration_minutes: u32,
    /// How long an access string can be used after it was issued (never past the window).
    pub access_token_seconds: u64,
    /// How users reach the SSH gateway, for access strings: `host` or `host:port` (default:
    /// the address `serve` listens on).
    pub ssh_endpoint: Option<String>,
    /// How users reach the RDP gateway, for `.rdp` files: `host` or `host:port` (default: the
    /// address `serve` listens on for RDP; none when RDP is off).
    pub rdp_endpoint: Option<String>,
    /// A ticketing plugin that must confirm tickets given with requests.
    pub ticketing_plugin: Option<String>,
    /// How long an SSH connection waits for its request to be decided.
    pub connect_hold_seconds: u64,
}

impl Default for WorkflowSettings {
    fn default() -> Self {
        Self {
            approval_timeout_seconds: 3600,
            default_duration_minutes: 60,
            max_duration_minutes: 24 * 60,
            access_token_seconds: 600,
            ssh_endpoint: None,
            rdp_endpoint: None,
            ticketing_plugin: None,
            connect_hold_seconds: 900,
        }
    }
}

impl WorkflowSettings {
    pub fn connect_hold(&self) -> Duration {
        Duration::from_secs(self.connect_hold_seconds)
    }

    pub fn approval_timeout(&self) -> Duration {
        Duration::from_secs(self.approval_timeout_seconds)
    }
}

/// The workflows, shared by the API and the SSH gateway.
pub struct Workflow {
    store: Arc<Store>,
    policy: Arc<PolicyEngine>,
    vault: Arc<Vault>,
    auditor: Auditor,
    plugins: Option<gatehouse_plugin_host::PluginHost>,
    notifier: Option<Arc<dyn Notify>>,
    settings: WorkflowSettings,
    changes: tokio::sync::broadcast::Sender<RequestChange>,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Workflow {
    pub fn new(
        store: Arc<Store>,
        policy: Arc<PolicyEngine>,
        vault: Arc<Vault>,
        auditor: Auditor,
        settings: WorkflowSettings,
    ) -> Self {
        let (changes, _) = tokio::sync::broadcast::channel(256);
        Self {
            store,
            policy,
            vault,
            auditor,
            plugins: None,
            notifier: None,
            settings,
            changes,
        }
    }

    /// Plugins for ticket validation.
    pub fn with_plugins(mut self, plugins: Option<gatehouse_plugin_host::PluginHost>) -> Self {
        self.plugins = plugins;
        self
    }

    /// Where request events are sent (email).
    pub fn with_notifier(mut self, notifier: Arc<dyn Notify>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn settings(&self) -> &WorkflowSettings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn policy(&self) -> &Arc<PolicyEngine> {
        &self.policy
    }

    /// Another control node on the shared store changed requests `ids`: brings this node's
    /// policy links up to date (an approval there permits the session here), then tells this
    /// node's waiters each request's current state.
    pub fn changed_elsewhere(&self, ids: &[String]) {
        if let Some(Err(e)) = self.policy.reload_if_changed() {
            tracing::error!(error = %e, "policy reload after another node's request change failed");
        }
        for id in ids {
            if let Ok(Some(request)) = self.store.get(&gatehouse_store::REQUESTS, id) {
                let _ = self.changes.send(RequestChange {
                    id: request.id,
                    state: request.state,
                });
            }
        }
    }

    /// Request state changes, for waiters (the SSH hold) and running sessions (revocation).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RequestChange> {
        self.changes.subscribe()
    }
}

/// Lowercase hex of SHA-256: how tokens and keys are stored.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A random secret token of `bytes` bytes, lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `entry` with what the audit trail keeps of a refusing decision: the policies that refused
/// and the policy errors.
pub(crate) fn with_refusal(
    entry: gatehouse_audit::Entry,
    decision: &gatehouse_policy::Decision,
) -> gatehouse_audit::Entry {
    entry
        .field("policies", serde_json::json!(decision.reasons()))
        .field("policy_errors", serde_json::json!(decision.errors))
}

/// Compares two strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
