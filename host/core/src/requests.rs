//! Access requests and application (A2A) registrations: the records of the vault's workflows.

use crate::names::Name;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    /// A session through the gateway (SSH now, RDP later).
    Session,
    /// The account's password, shown to the requester.
    Password,
    /// The account's private key (OpenSSH format), shown to the requester.
    PrivateKey,
}

impl AccessKind {
    /// The name policies and the API use: `session`, `password`, `private_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::Session => "session",
            AccessKind::Password => "password",
            AccessKind::PrivateKey => "private_key",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "session" => Some(AccessKind::Session),
            "password" => Some(AccessKind::Password),
            "private_key" | "private-key" | "key" => Some(AccessKind::PrivateKey),
            _ => None,
        }
    }

    /// The service toggle that governs requests of this kind.
    pub fn service(self) -> &'static str {
        match self {
            AccessKind::Session => "session-requests",
            AccessKind::Password => "password-requests",
            AccessKind::PrivateKey => "key-requests",
        }
    }
}

impl std::fmt::Display for AccessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request is in its life.
///
/// ```text
/// pending_approval ──approve(s)──▶ available ──view / connect──▶ checked_out ──check-in──▶ complete
///        │                             │                              │            (checked_in while a
///        ├─deny──▶ denied              ├─cancel──▶ cancelled          │             credential change
///        ├─cancel──▶ cancelled         ├─revoke──▶ revoked            ├─revoke──▶ revoked      is due)
///        └─timeout──▶ expired          └─window ends──▶ expired       └─window ends──▶ expired
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    PendingApproval,
    Available,
    /// A secret was shown, or a session was started ("session initialized").
    CheckedOut,
    /// Checked in; the account's credential change after check-in is still due.
    CheckedIn,
    Complete,
    Expired,
    Denied,
    Cancelled,
    Revoked,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::PendingApproval => "pending_approval",
            RequestState::Available => "available",
            RequestState::CheckedOut => "checked_out",
            RequestState::CheckedIn => "checked_in",
            RequestState::Complete => "complete",
            RequestState::Expired => "expired",
            RequestState::Denied => "denied",
            RequestState::Cancelled => "cancelled",
            RequestState::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            RequestState::PendingApproval,
            RequestState::Available,
            RequestState::CheckedOut,
            RequestState::CheckedIn,
            RequestState::Complete,
            RequestState::Expired,
            RequestState::Denied,
            RequestState::Cancelled,
            RequestState::Revoked,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// Approved and inside its window: the access it grants may be used.
    pub fn is_granted(self) -> bool {
        matches!(self, RequestState::Available | RequestState::CheckedOut)
    }

    /// Nothing more can happen to the request.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Complete
                | RequestState::Expired
                | RequestState::Denied
                | RequestState::Cancelled
                | RequestState::Revoked
        )
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One approver's decision on a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub by: Name,
    pub at: Timestamp,
    #[serde(default)]
    pub comment: String,
    /// The policies that permitted the reviewer to decide.
    #[serde(default)]
    pub policies: Vec<String>,
}

/// An access request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    pub requester: Name,
    pub asset: Name,
    pub account: Name,
    pub access: AccessKind,
    pub reason: String,
    /// The ticket given with the request ("" when none).
    #[serde(default)]
    pub ticket: String,
    /// A ticketing plugin verified the ticket.
    #[serde(default)]
    pub ticket_verified: bool,
    /// Filed as emergency ("break glass"); policies decide what that changes.
    #[serde(default)]
    pub emergency: bool,
    pub duration_minutes: u32,
    pub state: RequestState,
    pub created: Timestamp,
    /// Where the request came from: `api`, `ssh` (held at connect), `broker:<application>`.
    pub origin: String,
    /// Approvals needed when it was filed (what `grant_request` said), for display.
    #[serde(default)]
    pub approvals_needed: Option<u32>,
    #[serde(default)]
    pub approvals: Vec<Review>,
    #[serde(default)]
    pub denial: Option<Review>,
    /// A pending request not decided by then expires.
    pub approval_deadline: Timestamp,
    /// The window in which the access may be used (set when approved).
    #[serde(default)]
    pub window_start: Option<Timestamp>,
    #[serde(default)]
    pub window_end: Option<Timestamp>,
    #[serde(default)]
    pub checked_out: Option<Timestamp>,
    #[serde(default)]
    pub checked_in: Option<Timestamp>,
    #[serde(default)]
    pub ended: Option<Timestamp>,
    /// Who cancelled or revoked it, or why it expired.
    #[serde(default)]
    pub end_note: String,
    /// How many times the secret was shown.
    #[serde(default)]
    pub views: u32,
    /// Gateway sessions opened under this request.
    #[serde(default)]
    pub sessions: Vec<String>,
    /// The policies that granted it (`grant_request` or `auto_approve`).
    #[serde(default)]
    pub granted_by: Vec<String>,
}

impl AccessRequest {
    /// `account@asset`.
    pub fn target(&self) -> String {
        format!("{}@{}", self.account, self.asset)
    }

    /// Granted and inside its window at `now`.
    pub fn usable_at(&self, now: Timestamp) -> bool {
        self.state.is_granted()
            && self.window_start.is_some_and(|s| s <= now)
            && self.window_end.is_some_and(|e| now < e)
    }
}

/// A single-use token of a passwords-initiated session ("access string"). Stored under the
/// SHA-256 of the token; the token itself is shown once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AccessToken {
    pub request: String,
    pub user: Name,
    pub asset: Name,
    pub account: Name,
    pub created: Timestamp,
    pub expires: Timestamp,
    /// Set when the token was redeemed; a used token is refused.
    #[serde(default)]
    pub used: Option<Timestamp>,
}

/// An application registered for A2A credential retrieval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Application {
    pub name: Name,
    #[serde(default)]
    pub description: String,
    /// SHA-256 of the client certificate (DER), lowercase hex: the mutual-TLS pin.
    pub cert_sha256: String,
    /// Source addresses or networks (`10.0.0.0/8`, `192.0.2.7`); empty means any.
    #[serde(default)]
    pub allowed_sources: Vec<String>,
    /// Groups the application is in, for policies (`principal in Group::"..."`).
    #[serde(default)]
    pub groups: Vec<Name>,
    /// May file access requests on behalf of users (the access-request broker).
    #[serde(default)]
    pub broker: bool,
    #[serde(default)]
    pub disabled: bool,
    pub created: Timestamp,
}

/// What an A2A API key opens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum A2aScope {
    /// Retrieval of one account's credential.
    Credential { asset: Name, account: Name },
    /// Filing access requests for users (applications registered as brokers).
    Broker,
}

/// An A2A API key, stored under the SHA-256 of the key; the key itself is shown once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct A2aKey {
    /// A short public id to name the key in listings and the audit trail.
    pub id: String,
    pub application: Name,
    pub scope: A2aScope,
    pub created: Timestamp,
}
