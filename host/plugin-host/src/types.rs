//! The plain Rust types of the public API: what the SSH layer hands to hooks and gets back.
//! None of them mention wasmtime.

use gatehouse_core::secret::SecretString;
use std::collections::BTreeMap;
use std::fmt;

/// The protocol the user connected with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Ssh,
    Rdp,
    /// A sign-in to the gateway itself (portal or API): no target, `authenticate` only.
    Web,
    Telnet,
    Vnc,
}

/// What the gateway knows about a connection when it calls a hook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConnectionInfo {
    pub session_id: String,
    pub protocol: Protocol,
    pub client_address: String,
    pub client_port: u16,
    pub gateway_user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub target_asset: String,
    pub target_address: String,
    pub target_port: u16,
    pub target_account: String,
    /// The `key=value` pairs from the in-band username, in order.
    #[serde(default)]
    pub options: Vec<(String, String)>,
}

impl ConnectionInfo {
    /// What plugins are told of `login` by `user` from `client` in session `session_id`: the
    /// target the login names (empty when it names none), at `address` (the asset's address and
    /// port; empty when the asset is unknown, never an error).
    pub fn of_login(
        session_id: &str,
        protocol: Protocol,
        client: std::net::SocketAddr,
        user: &gatehouse_core::User,
        login: &gatehouse_core::LoginSpec,
        address: (String, u16),
    ) -> Self {
        let (target_asset, target_account) = match &login.target {
            Ok(t) => (t.asset.to_string(), t.account.to_string()),
            Err(_) => (String::new(), String::new()),
        };
        ConnectionInfo {
            session_id: session_id.to_string(),
            protocol,
            client_address: client.ip().to_string(),
            client_port: client.port(),
            gateway_user: user.name.to_string(),
            groups: user.groups.iter().map(|g| g.to_string()).collect(),
            target_asset,
            target_address: address.0,
            target_port: address.1,
            target_account,
            options: login.options.clone(),
        }
    }
}

/// One answer the user gave to a plugin's question. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Answer {
    pub key: String,
    /// Answers may be one-time codes or ticket ids; they are not logged.
    pub value: String,
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Answer({:?} = [redacted])", self.key)
    }
}

impl Answer {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Which AA hook ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AaHook {
    Authenticate,
    Authorize,
}

impl fmt::Display for AaHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AaHook::Authenticate => "authenticate",
            AaHook::Authorize => "authorize",
        })
    }
}

/// State the host keeps for one session between hook calls (every call runs in a fresh
/// instance). Create one per session with `SessionCookies::default()` and pass it to every hook
/// of that session.
#[derive(Debug, Clone, Default)]
pub struct SessionCookies {
    pub(crate) per_plugin: BTreeMap<String, String>,
    pub(crate) shared: BTreeMap<String, String>,
    /// Plugins that already accepted a hook in this session, with what they accepted, so a
    /// later call (after a question was answered) does not run them again.
    pub(crate) accepted: BTreeMap<(AaHook, String), Acceptance>,
    /// Tickets validated in this session: (ticketing plugin, request), closed at session end.
    pub(crate) tickets: Vec<(String, TicketRequest)>,
}

impl SessionCookies {
    /// The tickets this session works under, as (ticketing plugin, ticket id).
    pub fn tickets(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tickets
            .iter()
            .map(|(plugin, request)| (plugin.as_str(), request.ticket_id.as_str()))
    }
}

/// What an AA plugin accepted with: its effects on the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acceptance {
    pub rename_user: Option<String>,
    pub set_groups: Option<Vec<String>>,
    pub audit: Vec<(String, String)>,
    pub ticket: Option<String>,
}

/// One piece of audit metadata, with the plugin that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditNote {
    pub plugin: String,
    pub key: String,
    pub value: String,
}

/// The combined outcome of all enabled AA plugins for one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AaVerdict {
    /// Every AA plugin accepted (or none is enabled).
    Accept(Accepted),
    /// A plugin denied. `reason` is for the audit trail; show the user a generic refusal.
    Deny { plugin: String, reason: String },
    /// A plugin needs an answer: ask the user, add an `Answer` with `question.key`, and call
    /// the same hook again with the same `SessionCookies`.
    NeedInfo { plugin: String, question: Question },
}

/// The session after all AA plugins accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The gateway user after renames.
    pub gateway_user: String,
    /// The groups after changes.
    pub groups: Vec<String>,
    /// Metadata for the audit trail.
    pub audit: Vec<AuditNote>,
    /// Plugins that ran (or had already accepted), in order.
    pub plugins: Vec<String>,
}

/// A question for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub key: String,
    pub prompt: String,
    /// Whether the answer is echoed while typed.
    pub echo: bool,
}

/// How a session ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SessionEnd {
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub reason: String,
}

/// What a credential-store plugin is asked for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CredentialRequest {
    pub session_id: String,
    pub gateway_user: String,
    pub target_account: String,
    pub target_asset: String,
    pub target_address: String,
}

impl CredentialRequest {
    /// What a credential-store plugin is asked about session `session_id` of `user` to
    /// `account` on `asset` (with its `address`).
    pub fn new(
        session_id: &str,
        user: &gatehouse_core::User,
        account: &gatehouse_core::Account,
        asset: &gatehouse_core::Asset,
    ) -> Self {
        CredentialRequest {
            session_id: session_id.to_string(),
            gateway_user: user.name.to_string(),
            target_account: account.name.to_string(),
            target_asset: asset.name.to_string(),
            target_address: asset.address.clone(),
        }
    }
}

/// Which credential to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialKind {
    Password,
    PrivateKey,
}

/// A credential from a credential-store plugin. Zeroized on drop, redacted in `Debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Password(SecretString),
    /// An OpenSSH or PEM private key, as text.
    PrivateKey(SecretString),
}

/// A ticket to validate or close.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TicketRequest {
    pub ticket_id: String,
    pub session_id: String,
    pub gateway_user: String,
    pub target_account: String,
    pub target_asset: String,
    pub client_address: String,
}

/// A ticketing plugin's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketVerdict {
    Valid { audit: Vec<(String, String)> },
    Invalid { reason: String },
}

/// A credential-store lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialEvent {
    AuthenticationCompleted { succeeded: bool },
    CheckIn,
    SessionEnded(SessionEnd),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_credentials_do_not_print_their_values() {
        let answer = Answer::new("otp", "123456");
        assert_eq!(format!("{answer:?}"), "Answer(\"otp\" = [redacted])");
        let credential = Credential::Password(SecretString::new("hunter2".into()));
        assert_eq!(
            format!("{credential:?}"),
            "Password(SecretString([redacted]))"
        );
    }
}
