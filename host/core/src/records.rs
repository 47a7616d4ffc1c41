//! The records the store keeps. Secrets appear here only sealed ([`SealedSecret`]).

use crate::names::Name;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// A local gateway user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: Name,
    /// PHC string of an argon2id hash; `None` means password login is disabled for this user.
    pub password_hash: Option<String>,
    /// OpenSSH public keys (`ssh-ed25519 AAAA... comment`) the user may log in with.
    pub public_keys: Vec<String>,
    pub groups: Vec<Name>,
    /// Where notifications for this user go (approval requests, decisions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's NT hash (MD4 of the UTF-16LE password), sealed by the vault for this user,
    /// which RDP's NTLM needs. Written whenever the CLI sets the password; users whose password
    /// was set before RDP support have none and cannot use RDP until it is set again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdp_secret: Option<SealedSecret>,
    pub created: Timestamp,
}

/// A group of gateway users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: Name,
    pub description: String,
    /// Groups this group is a member of (nesting); policies see the transitive closure.
    #[serde(default)]
    pub parents: Vec<Name>,
    pub created: Timestamp,
}

/// A group of assets. Asset groups nest like user groups.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssetGroup {
    pub name: Name,
    pub description: String,
    #[serde(default)]
    pub parents: Vec<Name>,
    pub created: Timestamp,
}

/// How the gateway verifies an asset's SSH host key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum HostKeyPolicy {
    /// Only this key (OpenSSH public key line) is accepted.
    Pinned { key: String },
    /// Trust on first use: the first key seen is recorded and becomes pinned.
    TrustOnFirstUse,
}

/// A target machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Asset {
    pub name: Name,
    pub address: String,
    pub port: u16,
    pub host_key: HostKeyPolicy,
    /// Asset groups this asset belongs to.
    #[serde(default)]
    pub groups: Vec<Name>,
    /// Where the asset accepts RDP, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdp: Option<RdpEndpoint>,
    /// Where the asset accepts Telnet, if it does, and how its login prompts read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telnet: Option<TelnetEndpoint>,
    /// Where the asset accepts VNC (RFB), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnc: Option<VncEndpoint>,
    pub created: Timestamp,
}

/// An asset's VNC service: its port. The account's vault password answers VNC authentication
/// (a server without authentication needs none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VncEndpoint {
    pub port: u16,
}

/// An asset's Telnet service: its port, and the patterns (regular expressions, matched
/// case-insensitively at the end of what the target wrote) the gateway answers with the vault's
/// credential. `None`: the usual `login:` / `password:` prompts and failure messages; no
/// `success`: the login succeeded when the target wrote something and then went quiet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelnetEndpoint {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<String>,
}

/// An asset's RDP service: its port and how its TLS key is verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RdpEndpoint {
    pub port: u16,
    pub certificate: RdpCertificatePolicy,
}

/// How the gateway verifies an asset's RDP TLS key (the RDP twin of [`HostKeyPolicy`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RdpCertificatePolicy {
    /// Only this key is accepted: `SHA256:<base64>` of the certificate's SubjectPublicKeyInfo.
    Pinned { pin: String },
    /// Trust on first use: the first key seen is recorded and becomes pinned.
    TrustOnFirstUse,
}

/// A secret sealed by the vault: AEAD ciphertext bound to the account it belongs to.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// Which master key sealed it (for key rotation).
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.ciphertext.len())
    }
}

/// An account on an asset, with the credential the gateway logs in with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub name: Name,
    pub asset: Name,
    /// Stable id, used as the AEAD associated data so ciphertexts cannot move between accounts.
    pub id: String,
    pub password: Option<SealedSecret>,
    pub private_key: Option<SealedSecret>,
    /// When set, the credential comes from this credential-store plugin at each login instead
    /// of the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_plugin: Option<String>,
    /// Change the credential on the target after each check-in of a released secret.
    #[serde(default)]
    pub change_after_checkin: bool,
    /// A credential change is due (set at check-in when `change_after_checkin`; the credential
    /// lifecycle's scheduler clears it once the change is committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_due: Option<Timestamp>,
    pub created: Timestamp,
    pub secret_updated: Timestamp,
}

/// A signed-in portal session (the browser's cookie names it by its token id). Kept in the
/// store, so every control node on one store knows it, and a restart signs nobody out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortalSession {
    pub user: String,
    pub started: Timestamp,
    /// The last request seen (updated at most every few seconds).
    pub last_seen: Timestamp,
    /// The admin actions policy allowed at sign-in (what the portal shows; each call is decided
    /// again).
    #[serde(default)]
    pub may: Vec<String>,
}

/// A secret the operator keeps for plugins (a TOTP seed, an API token), sealed by the vault and
/// bound to its name. A plugin reads it only when its grants name it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginSecret {
    /// `totp-seed/alice`, `vault-token`, ...
    pub name: String,
    pub sealed: SealedSecret,
    pub updated: Timestamp,
}

/// The vault's services, each of which an administrator can turn off. A disabled service refuses
/// new work with a clear message; work already running finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceToggles {
    pub session_requests: bool,
    pub password_requests: bool,
    pub key_requests: bool,
    pub a2a: bool,
    pub check: bool,
    pub change: bool,
    pub discovery: bool,
    /// The control node takes its session nodes' audit events (off: they wait on the nodes).
    pub node_audit: bool,
}

impl Default for ServiceToggles {
    fn default() -> Self {
        Self {
            session_requests: true,
            password_requests: true,
            key_requests: true,
            a2a: true,
            check: true,
            change: true,
            discovery: true,
            node_audit: true,
        }
    }
}

/// The names of the services in [`ServiceToggles`], as the CLI and API spell them.
pub const SERVICE_NAMES: [&str; 8] = [
    "session-requests",
    "password-requests",
    "key-requests",
    "a2a",
    "check",
    "change",
    "discovery",
    "node-audit",
];

impl ServiceToggles {
    /// The toggle called `name` (one of [`SERVICE_NAMES`]).
    pub fn get_mut(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "session-requests" => &mut self.session_requests,
            "password-requests" => &mut self.password_requests,
            "key-requests" => &mut self.key_requests,
            "a2a" => &mut self.a2a,
            "check" => &mut self.check,
            "change" => &mut self.change,
            "discovery" => &mut self.discovery,
            "node-audit" => &mut self.node_audit,
            _ => return None,
        })
    }

    pub fn get(&self, name: &str) -> Option<bool> {
        let mut copy = *self;
        copy.get_mut(name).map(|v| *v)
    }
}

/// Who an entitlement is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Principal {
    User(Name),
    Group(Name),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::User(n) => write!(f, "user:{n}"),
            Principal::Group(n) => write!(f, "group:{n}"),
        }
    }
}

/// An entitlement made by an administrator: a principal may open sessions to an account. The
/// policy engine turns each grant into a link of the Cedar template `grant`, whose policy id
/// `grant:<id>` is what the audit trail names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub principal: Principal,
    pub account: Name,
    pub asset: Name,
    pub created: Timestamp,
}

/// One channel of a recorded session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelSummary {
    pub number: u32,
    /// `shell`, `exec`, `subsystem:sftp`, ...
    pub kind: String,
    pub command: Option<String>,
    pub exit_status: Option<u32>,
    pub recorded: bool,
}

/// One gateway session (one client connection).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub user: String,
    pub account: String,
    pub asset: String,
    pub client: String,
    pub protocol: String,
    pub started: Timestamp,
    pub ended: Option<Timestamp>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub channels: Vec<ChannelSummary>,
    /// Why it ended badly, when it did.
    pub error: Option<String>,
    /// The session node that ran it (`None`: this gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The gateway process (`host/data-dir id`) that runs the session: with several control
    /// nodes on one store, a node starting after a crash closes only its own sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// What happened, for the audit trail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    LoginOk,
    LoginFailed,
    AccessDenied,
    TargetConnectOk,
    TargetConnectFailed,
    HostKeyRecorded,
    ChannelOpened,
    ChannelDenied,
    ChannelClosed,
    SessionEnded,
    AdminChange,
    PolicyReloaded,
    PolicyReloadFailed,
    PluginLog,
    RequestCreated,
    RequestApproved,
    RequestGranted,
    RequestDenied,
    RequestCancelled,
    RequestRevoked,
    RequestExpired,
    RequestCheckedIn,
    RequestRefused,
    CredentialReleased,
    AccessTokenIssued,
    AccessTokenRefused,
    A2aRetrieved,
    A2aRefused,
    ServiceChanged,
    Notification,
    CredentialChecked,
    CredentialCheckFailed,
    CredentialChangeStarted,
    CredentialChanged,
    CredentialChangeFailed,
    CredentialReconciled,
    AccountsDiscovered,
    DiscoveryFailed,
    /// Someone watched (or was refused) a session recording.
    RecordingViewed,
    RecordingRefused,
    /// A recording's graphics could not (all) be decoded.
    RecordingFlagged,
    /// Cluster: a join token was made, a node joined (or rejoined, or was relinked), a join was
    /// refused.
    JoinTokenIssued,
    NodeJoined,
    NodeJoinRefused,
    /// An administrative action over the API was decided (`allowed`, policy ids).
    AdminDecision,
    /// The control node permitted a session on a session node (policy ids, the node).
    SessionAuthorized,
    /// A session node was lent a user's NT hash for one RDP login's NLA exchange.
    NtHashLent,
    /// A finished recording's manifest was signed and linked into the trail (`manifest_sha256`).
    RecordingSealed,
    /// A sealed recording's manifest was timestamped by an RFC 3161 time stamping authority
    /// (`gen_time`, `tsa`, `manifest_sha256`; the token is `manifest.json.tsr`).
    RecordingTimestamped,
    /// Someone searched the recordings over the API (`query`, `hits`, `sessions`).
    RecordingsSearched,
    /// Someone joined a running session live (`joined_by`, `mode`: `read-only` or `keyboard`,
    /// `policies`), or left it.
    SessionJoined,
    SessionLeft,
}

/// An audit event as stored. `seq` is assigned by the store and strictly increasing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub time: Timestamp,
    pub kind: AuditKind,
    pub session: Option<String>,
    pub user: Option<String>,
    pub target: Option<String>,
    pub client: Option<String>,
    /// Human-readable detail (never a secret).
    pub detail: String,
    /// Structured extras: policy ids, byte counts, reasons.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The hash chain (set by the store when it appends the event): hex SHA-256 over the
    /// previous event's `chain` and this event's JSON without it, so an edited, removed or
    /// reordered event breaks the chain (`gatehouse audit verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}
