//! The credential lifecycle: checking that the vault's credentials still log in to their
//! targets, changing them (passwords from a profile's rule, SSH keys rotated in
//! `authorized_keys`) without ever losing the one that works, discovering the accounts and keys
//! that exist on an asset, and the scheduler that runs all of it inside `gatehouse serve`.
//!
//! A change is two-phase ([`change`]): the new secret is stored as pending (sealed under its own
//! vault label, in the change journal) before the target is touched; after the change, login
//! with the new secret is verified; only then is it committed, in one transaction with the
//! removal of the journal entry. [`reconcile`] repairs whatever a crash left in between by
//! trying the pending and the committed secret against the target.
//!
//! Entry points for other crates: [`check_account`], [`change_account`], [`change_now`],
//! [`reconcile_account`], [`reconcile_all`], [`discovery::discover`], [`scheduler::run`].

pub mod change;
pub mod discovery;
pub mod fault;
mod remote;
pub mod rule;
pub mod schedule;
pub mod scheduler;

pub use change::{ChangeReport, change_account, change_now, reconcile_account, reconcile_all};

use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    Account, AccountLifecycle, Asset, AssetLifecycle, AuditKind, Name, PasswordRule, Profile,
    RunOutcome, SecretString,
};
use gatehouse_ssh::target::DialError;
use gatehouse_store::{
    ACCOUNT_LIFECYCLE, ACCOUNTS, ASSET_LIFECYCLE, ASSETS, PARTITIONS, PROFILES, Store, StoreError,
    Txn, account_key,
};
use gatehouse_vault::{SecretKind, Vault, VaultError};
use remote::{Login, Remote};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Limits for talking to targets.
#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    /// Connecting and logging in.
    pub connect_timeout: Duration,
    /// One command on the target (`passwd`, `chpasswd`, editing `authorized_keys`).
    pub command_timeout: Duration,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(60),
        }
    }
}

/// What the lifecycle works with. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    pub store: Arc<Store>,
    pub vault: Arc<Vault>,
    pub auditor: Auditor,
    pub settings: LifecycleSettings,
}

impl Lifecycle {
    pub fn new(store: Arc<Store>, vault: Arc<Vault>) -> Self {
        Self {
            auditor: Auditor::new(store.clone()),
            store,
            vault,
            settings: LifecycleSettings::default(),
        }
    }
}

/// Why a lifecycle operation could not run. Messages follow the project's style: lowercase,
/// user input in backticks, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("account `{0}` does not exist")]
    UnknownAccount(String),
    #[error("asset `{0}` does not exist")]
    UnknownAsset(String),
    #[error("profile `{0}` does not exist")]
    UnknownProfile(String),
    #[error(
        "the {0} service is disabled: an administrator turned it off, so no new {0} runs start"
    )]
    ServiceDisabled(&'static str),
    #[error("password rule of profile `{profile}`: {reason}")]
    Rule {
        profile: String,
        reason: rule::RuleError,
    },
    #[error(
        "account `{0}` takes its credential from a credential-store plugin; the plugin's store manages it"
    )]
    PluginManaged(String),
    #[error("account `{0}` holds no credential to {1}")]
    NoCredential(String, &'static str),
    #[error(
        "a change of `{0}` is already in progress (or was interrupted); run `gatehouse account reconcile {0}`"
    )]
    ChangeInProgress(String),
    #[error("cannot log in to `{target}` as `{user}`: {reason}")]
    Login {
        target: String,
        user: String,
        reason: String,
    },
    #[error("on `{target}`: {reason}")]
    Target { target: String, reason: String },
    #[error("{0}")]
    ChangeFailed(String),
    #[error("`{0}` is not among the discovered accounts; run `gatehouse discover run {1}` first")]
    NotDiscovered(String, String),
    #[error("account `{0}` is already managed")]
    AlreadyManaged(String),
    #[error(
        "asset `{0}` has no service account and no managed account with a stored credential to run discovery as"
    )]
    NoDiscoveryAccount(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
}

/// An account with everything the lifecycle needs to act on it.
pub(crate) struct Subject {
    pub account: Account,
    pub asset: Asset,
    pub asset_settings: AssetLifecycle,
    pub profile: Option<Profile>,
    pub key: String,
}

impl Subject {
    /// `account@asset`, as the CLI and the audit trail spell it.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.account.name, self.asset.name)
    }

    pub fn rule(&self) -> PasswordRule {
        self.profile
            .as_ref()
            .map(|p| p.password_rule.clone())
            .unwrap_or_default()
    }

    pub fn profile_name(&self) -> String {
        self.profile
            .as_ref()
            .map(|p| p.name.to_string())
            .unwrap_or_else(|| "(default)".into())
    }
}

/// The profile an account follows: its own, else its asset's partition's.
pub fn effective_profile(
    store: &Store,
    account: &Account,
) -> Result<Option<Profile>, LifecycleError> {
    let key = account_key(account.asset.as_str(), account.name.as_str());
    let own: Option<AccountLifecycle> = store.get(&ACCOUNT_LIFECYCLE, &key)?;
    let name = match own.and_then(|o| o.profile) {
        Some(name) => Some(name),
        None => {
            let asset: Option<AssetLifecycle> =
                store.get(&ASSET_LIFECYCLE, account.asset.as_str())?;
            match asset.and_then(|a| a.partition) {
                Some(partition) => store
                    .get(&PARTITIONS, partition.as_str())?
                    .and_then(|p: gatehouse_core::Partition| p.profile),
                None => None,
            }
        }
    };
    match name {
        Some(name) => store
            .get(&PROFILES, name.as_str())?
            .map(Some)
            .ok_or_else(|| LifecycleError::UnknownProfile(name.to_string())),
        None => Ok(None),
    }
}

/// The account for a run of the `service` (`check`, `change`): refused when the service is
/// disabled, the account does not exist, or a credential-store plugin manages its secret.
pub(crate) fn managed_subject(
    lc: &Lifecycle,
    service: &'static str,
    asset: &Name,
    account: &Name,
) -> Result<Subject, LifecycleError> {
    services_allow(&lc.store, service)?;
    let subject = load_subject(lc, asset, account)?;
    if subject.account.credential_plugin.is_some() {
        return Err(LifecycleError::PluginManaged(subject.spec()));
    }
    Ok(subject)
}

pub(crate) fn load_subject(
    lc: &Lifecycle,
    asset: &Name,
    account: &Name,
) -> Result<Subject, LifecycleError> {
    let key = account_key(asset.as_str(), account.as_str());
    let record: Account = lc
        .store
        .get(&ACCOUNTS, &key)?
        .ok_or_else(|| LifecycleError::UnknownAccount(format!("{account}@{asset}")))?;
    let asset_record: Asset = lc
        .store
        .get(&ASSETS, asset.as_str())?
        .ok_or_else(|| LifecycleError::UnknownAsset(asset.to_string()))?;
    let asset_settings = lc
        .store
        .get(&ASSET_LIFECYCLE, asset.as_str())?
        .unwrap_or_default();
    let profile = effective_profile(&lc.store, &record)?;
    Ok(Subject {
        account: record,
        asset: asset_record,
        asset_settings,
        profile,
        key,
    })
}

/// The committed secrets of an account, opened.
pub(crate) struct Committed {
    pub password: Option<SecretString>,
    pub private_key: Option<SecretString>,
}

impl Committed {
    /// The login these secrets give: the private key when there is one, else the password.
    pub(crate) fn login(&self) -> Option<Login<'_>> {
        match (&self.private_key, &self.password) {
            (Some(key), _) => Some(Login::PrivateKey(key)),
            (None, Some(password)) => Some(Login::Password(password)),
            (None, None) => None,
        }
    }
}

pub(crate) fn open_committed(lc: &Lifecycle, account: &Account) -> Result<Committed, VaultError> {
    let open = |sealed: &Option<gatehouse_core::SealedSecret>, kind| {
        sealed
            .as_ref()
            .map(|s| lc.vault.open_text(&account.id, kind, s))
            .transpose()
    };
    Ok(Committed {
        password: open(&account.password, SecretKind::Password)?,
        private_key: open(&account.private_key, SecretKind::PrivateKey)?,
    })
}

/// Tries one login; `Ok(())` when the target accepted it.
pub(crate) async fn try_login(
    lc: &Lifecycle,
    asset: &Asset,
    user: &str,
    login: &Login<'_>,
) -> Result<(), DialError> {
    let remote = Remote::login(lc, asset, user, login).await?;
    remote.close().await;
    Ok(())
}

/// The result of checking one account.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub target: String,
    pub ok: bool,
    /// One entry per stored credential: `password: ok`, `publickey: rejected ...`.
    pub detail: String,
}

fn services_allow(store: &Store, service: &'static str) -> Result<(), LifecycleError> {
    let toggles = store.services()?;
    let on = toggles.get(service).unwrap_or(false);
    if on {
        Ok(())
    } else {
        Err(LifecycleError::ServiceDisabled(service))
    }
}

pub(crate) fn audit(lc: &Lifecycle, kind: AuditKind, actor: &str, target: &str, detail: String) {
    lc.auditor.record_best_effort(
        Entry::new(kind, detail)
            .user(actor.to_string())
            .target(target.to_string())
            .client("lifecycle"),
    );
}

/// Records the outcome of a check or change in the account's lifecycle status.
pub(crate) fn record_outcome(
    lc: &Lifecycle,
    key: &str,
    check: Option<RunOutcome>,
    change: Option<RunOutcome>,
) -> Result<(), StoreError> {
    lc.store.write(|txn| put_outcome(txn, key, check, change))
}

/// [`record_outcome`] inside a transaction.
pub(crate) fn put_outcome(
    txn: &mut Txn<'_>,
    key: &str,
    check: Option<RunOutcome>,
    change: Option<RunOutcome>,
) -> Result<(), StoreError> {
    let mut status: AccountLifecycle = txn.get(&ACCOUNT_LIFECYCLE, key)?.unwrap_or_default();
    if let Some(c) = check {
        status.last_check = Some(c);
    }
    if let Some(c) = change {
        status.last_change = Some(c);
    }
    txn.put(&ACCOUNT_LIFECYCLE, key, &status)
}

/// How a check or change run ended, now.
pub(crate) fn outcome(ok: bool, detail: impl Into<String>) -> RunOutcome {
    RunOutcome {
        time: Timestamp::now(),
        ok,
        detail: detail.into(),
    }
}

/// Checks that the account's stored credentials still log in to its asset (each stored
/// credential on its own connection). A failed login is a report with `ok: false`, audited as
/// `credential_check_failed`; an error means the check could not run at all.
pub async fn check_account(
    lc: &Lifecycle,
    asset: &Name,
    account: &Name,
    actor: &str,
) -> Result<CheckReport, LifecycleError> {
    let result = check_account_inner(lc, asset, account, actor).await;
    if let Err(e) = &result {
        let spec = format!("{account}@{asset}");
        audit(
            lc,
            AuditKind::CredentialCheckFailed,
            actor,
            &spec,
            format!("check of `{spec}` refused: {e}"),
        );
    }
    result
}

async fn check_account_inner(
    lc: &Lifecycle,
    asset: &Name,
    account: &Name,
    actor: &str,
) -> Result<CheckReport, LifecycleError> {
    let subject = managed_subject(lc, "check", asset, account)?;
    let spec = subject.spec();
    let committed = open_committed(lc, &subject.account)?;
    let mut logins = Vec::new();
    if let Some(key) = &committed.private_key {
        logins.push(Login::PrivateKey(key));
    }
    if let Some(password) = &committed.password {
        logins.push(Login::Password(password));
    }
    if logins.is_empty() {
        return Err(LifecycleError::NoCredential(spec, "check"));
    }
    let mut ok = true;
    let mut parts = Vec::new();
    for login in &logins {
        match try_login(lc, &subject.asset, subject.account.name.as_str(), login).await {
            Ok(()) => parts.push(format!("{}: ok", login.method())),
            Err(reason) => {
                ok = false;
                parts.push(format!("{}: {reason}", login.method()));
            }
        }
    }
    let detail = parts.join("; ");
    record_outcome(lc, &subject.key, Some(outcome(ok, detail.clone())), None)?;
    let (kind, verb) = if ok {
        (AuditKind::CredentialChecked, "verified")
    } else {
        (AuditKind::CredentialCheckFailed, "check failed for")
    };
    audit(
        lc,
        kind,
        actor,
        &spec,
        format!("{verb} the credential of `{spec}` ({detail})"),
    );
    Ok(CheckReport {
        target: spec,
        ok,
        detail,
    })
}

/// Marks an account's credential change as due (what the access-request workflow does at
/// check-in when `change_after_checkin` is set); the scheduler changes it and clears the mark on
/// commit. Returns whether the mark was set (false when the account does not ask for a change
/// after check-in).
pub fn mark_checked_in(
    lc: &Lifecycle,
    asset: &Name,
    account: &Name,
    actor: &str,
) -> Result<bool, LifecycleError> {
    let key = account_key(asset.as_str(), account.as_str());
    let spec = format!("{account}@{asset}");
    let marked = lc.store.write(|txn| -> Result<bool, LifecycleError> {
        let mut record: Account = txn
            .get(&ACCOUNTS, &key)?
            .ok_or_else(|| LifecycleError::UnknownAccount(spec.clone()))?;
        if !record.change_after_checkin {
            return Ok(false);
        }
        record.change_due = Some(Timestamp::now());
        txn.put(&ACCOUNTS, &key, &record)?;
        Ok(true)
    })?;
    if marked {
        audit(
            lc,
            AuditKind::AdminChange,
            actor,
            &spec,
            format!("checked in `{spec}`: its credential change is due"),
        );
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::ServiceToggles;
    use gatehouse_vault::MasterKey;

    fn lifecycle(dir: &std::path::Path) -> Lifecycle {
        let store = Arc::new(Store::open(&dir.join("store.redb")).unwrap());
        Lifecycle::new(store, Arc::new(Vault::new(MasterKey::generate())))
    }

    #[tokio::test]
    async fn disabled_services_refuse_new_runs() {
        let dir = tempfile::tempdir().unwrap();
        let lc = lifecycle(dir.path());
        lc.store
            .write(|txn| {
                txn.put_services(&ServiceToggles {
                    check: false,
                    change: false,
                    discovery: false,
                    ..Default::default()
                })
            })
            .unwrap();
        let (asset, account) = (Name::new("db1").unwrap(), Name::new("root").unwrap());
        let check = check_account(&lc, &asset, &account, "t").await.unwrap_err();
        assert_eq!(
            check.to_string(),
            "the check service is disabled: an administrator turned it off, so no new check runs start"
        );
        let change = change_account(&lc, &asset, &account, None, "manual", "t")
            .await
            .unwrap_err();
        assert!(matches!(change, LifecycleError::ServiceDisabled("change")));
        let discover = discovery::discover(&lc, &asset, &Default::default(), "t")
            .await
            .unwrap_err();
        assert!(matches!(
            discover,
            LifecycleError::ServiceDisabled("discovery")
        ));
        // Every refusal is audited.
        let kinds: Vec<AuditKind> = lc
            .store
            .list_audit(None)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(kinds.contains(&AuditKind::CredentialCheckFailed));
        assert!(kinds.contains(&AuditKind::CredentialChangeFailed));
        assert!(kinds.contains(&AuditKind::DiscoveryFailed));
    }
}
