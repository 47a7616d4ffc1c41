//! Records of the credential lifecycle: profiles (password rules and schedules), partitions,
//! per-asset and per-account lifecycle settings, the two-phase change journal, and discovered
//! accounts. Pending secrets appear here only sealed, under their own vault label.

use crate::names::Name;
use crate::records::SealedSecret;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// What a generated password must look like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PasswordRule {
    pub length: u16,
    pub min_lower: u16,
    pub min_upper: u16,
    pub min_digit: u16,
    pub min_symbol: u16,
    /// The symbols a password may contain (empty: no symbols at all).
    pub symbols: String,
    /// Characters never used (look-alikes such as `l1O0`, or characters a target refuses).
    pub exclude: String,
}

/// The symbols a [`PasswordRule`] uses unless told otherwise: printable, no quotes, no
/// backslash, no space.
pub const DEFAULT_SYMBOLS: &str = "!#$%&()*+,-./:;<=>?@[]^_{|}~";

impl Default for PasswordRule {
    fn default() -> Self {
        Self {
            length: 24,
            min_lower: 1,
            min_upper: 1,
            min_digit: 1,
            min_symbol: 1,
            symbols: DEFAULT_SYMBOLS.to_string(),
            exclude: String::new(),
        }
    }
}

/// When a check or change runs. Times of day are UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// Every `seconds` after the last run.
    Interval { seconds: u64 },
    /// Every day at `minute` minutes after midnight UTC.
    Daily { minute: u16 },
    /// Every week on `weekday` (0 = Monday) at `minute` minutes after midnight UTC.
    Weekly { weekday: u8, minute: u16 },
}

/// A lifecycle profile: the password rule and the check and change schedules of the accounts it
/// governs (through their partition, or set on the account).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: Name,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub password_rule: PasswordRule,
    #[serde(default)]
    pub check: Option<Schedule>,
    #[serde(default)]
    pub change: Option<Schedule>,
    pub created: Timestamp,
}

/// A partition: a set of assets managed alike, with the profile their accounts follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub name: Name,
    #[serde(default)]
    pub description: String,
    pub profile: Option<Name>,
    pub created: Timestamp,
}

/// Lifecycle settings of one asset (keyed by asset name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AssetLifecycle {
    pub partition: Option<Name>,
    /// An account on the same asset that may run `sudo` (password changes with `chpasswd`,
    /// discovery of other users' authorized keys).
    pub service_account: Option<Name>,
}

/// The outcome of one check or change run, kept for the status view and the scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    pub time: Timestamp,
    pub ok: bool,
    /// What happened (never a secret).
    pub detail: String,
}

/// Lifecycle settings and status of one account (keyed like the account: `asset/account`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountLifecycle {
    /// A profile for this account, overriding its partition's.
    pub profile: Option<Name>,
    pub last_check: Option<RunOutcome>,
    pub last_change: Option<RunOutcome>,
}

/// Which credential a change replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Password,
    SshKey,
}

/// Where a two-phase change stands. Whatever the phase, reconcile decides by trying the pending
/// and the committed secret against the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangePhase {
    /// The new secret is stored; the target may or may not have been changed.
    Pending,
    /// The change command ran on the target; login with the new secret not yet verified.
    TargetChanged,
}

/// The change journal: one record per account with a change in flight (keyed like the account).
/// It is written, with the pending secret, before the target is touched, and removed in the
/// transaction that commits the new secret (or once the old secret is known to still work).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CredentialChange {
    pub id: String,
    pub asset: Name,
    pub account: Name,
    /// The account's id when the change began (the pending secret is bound to it).
    pub account_id: String,
    pub kind: ChangeKind,
    pub phase: ChangePhase,
    /// Sealed under the vault's pending label: it cannot be opened as the committed secret.
    pub pending: SealedSecret,
    /// For key changes: the new public key line installed in `authorized_keys`.
    #[serde(default)]
    pub new_public_key: Option<String>,
    /// For key changes: the old public key line to remove.
    #[serde(default)]
    pub old_public_key: Option<String>,
    /// Why: `manual`, `schedule`, `check-in`, ...
    pub reason: String,
    pub started: Timestamp,
    pub updated: Timestamp,
}

/// One public key found in an account's `authorized_keys`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredKey {
    /// `ssh-ed25519`, `ssh-rsa`, ...
    pub algorithm: String,
    /// `SHA256:...`
    pub fingerprint: String,
    pub comment: String,
}

/// An account found on an asset by discovery (keyed `asset/account`). It is unmanaged until an
/// administrator manages it (an [`crate::Account`] with the same name exists on the asset).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredAccount {
    pub asset: Name,
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    #[serde(default)]
    pub keys: Vec<DiscoveredKey>,
    /// Whether discovery could read the account's `authorized_keys` (it needs a service account
    /// for other users' files).
    #[serde(default)]
    pub keys_read: bool,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}
