//! The two-phase credential change and its reconciliation.
//!
//! 1. `begin`: the new secret is sealed under the vault's *pending* label and written to the
//!    change journal (with an audit event) before the target is touched. One change per account
//!    at a time: the journal entry is the lock.
//! 2. The target is changed (a password with `passwd` as the account itself or `sudo chpasswd`
//!    through the asset's service account; a key appended to `authorized_keys`).
//! 3. `resolve`: login with the new secret is tried. If it works, the old key (for a key change)
//!    is removed and the new secret is committed: the account's slot is resealed under the
//!    committed label, the journal entry removed and the change audited, in one transaction. If
//!    only the old secret works, the journal entry is dropped. If the target cannot tell (it is
//!    unreachable), the entry stays for [`reconcile_account`], which runs the same `resolve`.
//!
//! Whatever the point of failure, the vault keeps a secret that logs in: the committed one until
//! the new one is proven, and the pending one in the journal in between.

use crate::fault::{self, Point};
use crate::remote::{Login, Output, Remote};
use crate::{
    Committed, Lifecycle, LifecycleError, Subject, audit, load_subject, managed_subject,
    open_committed, outcome, put_outcome, rule, try_login,
};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    Account, AuditEvent, AuditKind, ChangeKind, ChangePhase, CredentialChange, Name, SecretString,
};
use gatehouse_ssh::target::DialError;
use gatehouse_store::{ACCOUNTS, CREDENTIAL_CHANGES, StoreError, Txn, account_key};
use gatehouse_vault::SecretKind;
use rand::RngCore;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;
use serde::Serialize;
use zeroize::Zeroizing;

/// The result of changing one account's credentials.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeReport {
    pub target: String,
    /// What was changed: `password changed (via service account `svc`)`, `key rotated`, ...
    pub detail: String,
}

/// What a login attempt told us.
enum Attempt {
    Ok,
    /// The target answered and refused the credential.
    Rejected(String),
    /// The target could not be asked (unreachable, timeout, protocol error).
    Unknown(String),
}

async fn attempt(lc: &Lifecycle, subject: &Subject, login: &Login<'_>) -> Attempt {
    match try_login(lc, &subject.asset, subject.account.name.as_str(), login).await {
        Ok(()) => Attempt::Ok,
        Err(
            e @ (DialError::CredentialRejected { .. }
            | DialError::BadPrivateKey(_)
            | DialError::NoCredential),
        ) => Attempt::Rejected(e.to_string()),
        Err(e) => Attempt::Unknown(e.to_string()),
    }
}

/// How the target side of a change ended.
enum Applied {
    Done,
    /// Failed before anything on the target changed: the pending secret can go.
    Untouched(String),
    /// Failed after the change command started: only a login can tell what the target holds.
    Unsure(String),
}

/// Changes the credentials an account holds (`kind: None`: each one it holds; a password when
/// it holds none, through the asset's service account). Refused when the change service is
/// disabled.
pub async fn change_account(
    lc: &Lifecycle,
    asset: &Name,
    account: &Name,
    kind: Option<ChangeKind>,
    reason: &str,
    actor: &str,
) -> Result<ChangeReport, LifecycleError> {
    let result = change_account_inner(lc, asset, account, kind, reason, actor).await;
    // Failures after the journal was written are audited where they happen; the rest here.
    if let Err(e) = &result
        && !matches!(e, LifecycleError::ChangeFailed(_))
    {
        let spec = format!("{account}@{asset}");
        audit(
            lc,
            AuditKind::CredentialChangeFailed,
            actor,
            &spec,
            format!("change of `{spec}` refused ({reason}): {e}"),
        );
    }
    result
}

async fn change_account_inner(
    lc: &Lifecycle,
    asset: &Name,
    account: &Name,
    kind: Option<ChangeKind>,
    reason: &str,
    actor: &str,
) -> Result<ChangeReport, LifecycleError> {
    let subject = managed_subject(lc, "change", asset, account)?;
    let spec = subject.spec();
    if lc.store.get(&CREDENTIAL_CHANGES, &subject.key)?.is_some() {
        return Err(LifecycleError::ChangeInProgress(spec));
    }
    let kinds = match kind {
        Some(k) => vec![k],
        None => {
            let mut kinds = Vec::new();
            if subject.account.password.is_some() || subject.account.private_key.is_none() {
                kinds.push(ChangeKind::Password);
            }
            if subject.account.private_key.is_some() {
                kinds.push(ChangeKind::SshKey);
            }
            kinds
        }
    };
    let mut details = Vec::new();
    for kind in kinds {
        // Reload between kinds: the first change committed a new secret.
        let subject = load_subject(lc, asset, account)?;
        let detail = match kind {
            ChangeKind::Password => change_password(lc, &subject, reason, actor).await,
            ChangeKind::SshKey => change_key(lc, &subject, reason, actor).await,
        }?;
        details.push(detail);
    }
    Ok(ChangeReport {
        target: spec,
        detail: details.join("; "),
    })
}

/// Changes an account's credentials now. This is what the access-request workflow calls after
/// a check-in when the account has `change_after_checkin` (or it sets `Account::change_due` and
/// lets the scheduler do it); `reason` lands in the audit trail (`check-in`).
pub async fn change_now(
    lc: &Lifecycle,
    asset: &Name,
    account: &Name,
    reason: &str,
    actor: &str,
) -> Result<ChangeReport, LifecycleError> {
    change_account(lc, asset, account, None, reason, actor).await
}

fn pending_kind(kind: ChangeKind) -> SecretKind {
    match kind {
        ChangeKind::Password => SecretKind::PendingPassword,
        ChangeKind::SshKey => SecretKind::PendingPrivateKey,
    }
}

fn committed_kind(kind: ChangeKind) -> SecretKind {
    match kind {
        ChangeKind::Password => SecretKind::Password,
        ChangeKind::SshKey => SecretKind::PrivateKey,
    }
}

fn kind_word(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Password => "password",
        ChangeKind::SshKey => "SSH key",
    }
}

fn event(kind: AuditKind, actor: &str, target: &str, detail: String) -> AuditEvent {
    AuditEvent {
        seq: 0,
        time: Timestamp::now(),
        kind,
        session: None,
        user: Some(actor.to_string()),
        target: Some(target.to_string()),
        client: Some("lifecycle".into()),
        detail,
        fields: Default::default(),
        chain: None,
    }
}

fn log_event(event: &AuditEvent) {
    tracing::info!(audit.kind = ?event.kind, audit.target = event.target.as_deref().unwrap_or(""), "{}", event.detail);
}

/// Phase 1: the pending secret goes into the journal before the target is touched.
#[allow(clippy::too_many_arguments)]
fn begin(
    lc: &Lifecycle,
    subject: &Subject,
    kind: ChangeKind,
    secret: &str,
    new_public_key: Option<String>,
    old_public_key: Option<String>,
    reason: &str,
    actor: &str,
) -> Result<CredentialChange, LifecycleError> {
    let spec = subject.spec();
    let pending = lc
        .vault
        .seal(&subject.account.id, pending_kind(kind), secret.as_bytes())?;
    let now = Timestamp::now();
    let journal = CredentialChange {
        id: uuid::Uuid::now_v7().to_string(),
        asset: subject.asset.name.clone(),
        account: subject.account.name.clone(),
        account_id: subject.account.id.clone(),
        kind,
        phase: ChangePhase::Pending,
        pending,
        new_public_key,
        old_public_key,
        reason: reason.to_string(),
        started: now,
        updated: now,
    };
    let detail = format!(
        "started a {} change of `{spec}` ({reason}); the new secret is pending",
        kind_word(kind)
    );
    let stored = lc
        .store
        .write(|txn| -> Result<AuditEvent, LifecycleError> {
            if txn.get(&CREDENTIAL_CHANGES, &subject.key)?.is_some() {
                return Err(LifecycleError::ChangeInProgress(spec.clone()));
            }
            txn.put(&CREDENTIAL_CHANGES, &subject.key, &journal)?;
            Ok(txn.append_audit(event(
                AuditKind::CredentialChangeStarted,
                actor,
                &spec,
                detail.clone(),
            ))?)
        })?;
    log_event(&stored);
    Ok(journal)
}

fn set_phase(lc: &Lifecycle, key: &str, id: &str, phase: ChangePhase) -> Result<(), StoreError> {
    lc.store.write(|txn| -> Result<(), StoreError> {
        if let Some(mut journal) = txn.get(&CREDENTIAL_CHANGES, key)?
            && journal.id == id
        {
            journal.phase = phase;
            journal.updated = Timestamp::now();
            txn.put(&CREDENTIAL_CHANGES, key, &journal)?;
        }
        Ok(())
    })
}

/// Records how the change of account `key` ended.
fn put_change_outcome(
    txn: &mut Txn<'_>,
    key: &str,
    ok: bool,
    detail: &str,
) -> Result<(), StoreError> {
    put_outcome(txn, key, None, Some(outcome(ok, detail)))
}

/// The account key of a journal entry's account.
fn journal_key(journal: &CredentialChange) -> String {
    account_key(journal.asset.as_str(), journal.account.as_str())
}

/// `account@asset` of a journal entry.
fn journal_spec(journal: &CredentialChange) -> String {
    format!("{}@{}", journal.account, journal.asset)
}

/// Phase 3: the new secret becomes the account's, in one transaction with the removal of the
/// journal entry, the status and the audit event.
fn commit(
    lc: &Lifecycle,
    journal: &CredentialChange,
    secret: &SecretString,
    detail: &str,
    actor: &str,
) -> Result<(), LifecycleError> {
    let key = journal_key(journal);
    let spec = journal_spec(journal);
    let sealed = lc.vault.seal(
        &journal.account_id,
        committed_kind(journal.kind),
        secret.expose().as_bytes(),
    )?;
    let stored = lc
        .store
        .write(|txn| -> Result<AuditEvent, LifecycleError> {
            let mut account: Account = txn
                .get(&ACCOUNTS, &key)?
                .ok_or_else(|| LifecycleError::UnknownAccount(spec.clone()))?;
            if account.id != journal.account_id {
                return Err(LifecycleError::UnknownAccount(spec.clone()));
            }
            match journal.kind {
                ChangeKind::Password => account.password = Some(sealed.clone()),
                ChangeKind::SshKey => account.private_key = Some(sealed.clone()),
            }
            account.secret_updated = Timestamp::now();
            account.change_due = None;
            txn.put(&ACCOUNTS, &key, &account)?;
            txn.delete(&CREDENTIAL_CHANGES, &key)?;
            put_change_outcome(txn, &key, true, detail)?;
            Ok(txn.append_audit(event(
                AuditKind::CredentialChanged,
                actor,
                &spec,
                format!("{detail} for `{spec}` ({}); committed", journal.reason),
            ))?)
        })?;
    log_event(&stored);
    Ok(())
}

/// Drops the journal entry: the committed secret stays (it works, or there was none).
fn discard(
    lc: &Lifecycle,
    journal: &CredentialChange,
    detail: &str,
    actor: &str,
) -> Result<(), LifecycleError> {
    let key = journal_key(journal);
    let spec = journal_spec(journal);
    let stored = lc
        .store
        .write(|txn| -> Result<AuditEvent, LifecycleError> {
            if let Some(current) = txn.get(&CREDENTIAL_CHANGES, &key)?
                && current.id == journal.id
            {
                txn.delete(&CREDENTIAL_CHANGES, &key)?;
            }
            if txn.get(&ACCOUNTS, &key)?.is_some() {
                put_change_outcome(txn, &key, false, detail)?;
            }
            Ok(txn.append_audit(event(
                AuditKind::CredentialChangeFailed,
                actor,
                &spec,
                format!(
                    "{} change of `{spec}` failed: {detail}",
                    kind_word(journal.kind)
                ),
            ))?)
        })?;
    log_event(&stored);
    Ok(())
}

/// How a journal entry was settled.
pub(crate) enum Resolution {
    /// The new secret works and is committed.
    Committed(String),
    /// The new secret does not work; the committed one stays.
    RolledBack(String),
    /// The target could not tell; the entry stays for reconcile.
    InDoubt(String),
}

/// Phase 3 for a change that ran just now or was interrupted: keep whichever secret logs in.
pub(crate) async fn resolve(
    lc: &Lifecycle,
    journal: &CredentialChange,
    failure: Option<&str>,
    actor: &str,
) -> Result<Resolution, LifecycleError> {
    let spec = journal_spec(journal);
    let subject = match load_subject(lc, &journal.asset, &journal.account) {
        Ok(s) if s.account.id == journal.account_id => s,
        Ok(_) | Err(LifecycleError::UnknownAccount(_)) | Err(LifecycleError::UnknownAsset(_)) => {
            let detail = "the account no longer exists".to_string();
            discard(lc, journal, &detail, actor)?;
            return Ok(Resolution::RolledBack(detail));
        }
        Err(e) => return Err(e),
    };
    let pending = lc.vault.open_text(
        &journal.account_id,
        pending_kind(journal.kind),
        &journal.pending,
    )?;
    let new_login = match journal.kind {
        ChangeKind::Password => Login::Password(&pending),
        ChangeKind::SshKey => Login::PrivateKey(&pending),
    };
    let word = kind_word(journal.kind);
    // How the change command failed, if it did: it leads the detail of an uncommitted change.
    let why = failure.map(|f| format!("{f}; ")).unwrap_or_default();
    let new_result = attempt(lc, &subject, &new_login).await;
    let committed = open_committed(lc, &subject.account)?;
    match new_result {
        Attempt::Ok => {
            let mut detail = match journal.kind {
                ChangeKind::Password => "password changed".to_string(),
                ChangeKind::SshKey => "SSH key rotated".to_string(),
            };
            if journal.kind == ChangeKind::SshKey
                && let Some(old) = &journal.old_public_key
                && let Err(e) = remove_key(lc, &subject, &new_login, old).await
            {
                detail.push_str(&format!(" (the old key is still in authorized_keys: {e})"));
            }
            commit(lc, journal, &pending, &detail, actor)?;
            fault::pause_if_asked(Point::AfterCommit).await;
            Ok(Resolution::Committed(detail))
        }
        Attempt::Rejected(new_reason) => {
            let old_login = match journal.kind {
                ChangeKind::Password => committed.password.as_ref().map(Login::Password),
                ChangeKind::SshKey => committed.login(),
            };
            let old_result = match &old_login {
                Some(login) => Some(attempt(lc, &subject, login).await),
                None => None,
            };
            match old_result {
                Some(Attempt::Ok) | None => {
                    if journal.kind == ChangeKind::SshKey
                        && let (Some(new_public), Some(login)) =
                            (&journal.new_public_key, &old_login)
                        && let Err(e) = remove_key(lc, &subject, login, new_public).await
                    {
                        tracing::warn!(target = %spec, error = %e, "could not remove the unused new key");
                    }
                    let kept = if old_login.is_some() {
                        format!("the stored {word} still works and is kept")
                    } else {
                        "the account had no stored secret".to_string()
                    };
                    let detail = format!(
                        "{why}the new {word} does not log in ({new_reason}); {kept}; nothing was lost"
                    );
                    discard(lc, journal, &detail, actor)?;
                    Ok(Resolution::RolledBack(detail))
                }
                Some(Attempt::Rejected(old_reason)) | Some(Attempt::Unknown(old_reason)) => {
                    let detail = format!(
                        "{why}neither the new {word} ({new_reason}) nor the stored one ({old_reason}) logs in; both stay in the vault for `gatehouse account reconcile {spec}`"
                    );
                    in_doubt(lc, journal, &detail, actor)?;
                    Ok(Resolution::InDoubt(detail))
                }
            }
        }
        Attempt::Unknown(reason) => {
            let detail = format!(
                "{why}cannot tell which {word} the target holds ({reason}); both stay in the vault for `gatehouse account reconcile {spec}`"
            );
            in_doubt(lc, journal, &detail, actor)?;
            Ok(Resolution::InDoubt(detail))
        }
    }
}

fn in_doubt(
    lc: &Lifecycle,
    journal: &CredentialChange,
    detail: &str,
    actor: &str,
) -> Result<(), LifecycleError> {
    let key = journal_key(journal);
    let spec = journal_spec(journal);
    lc.store
        .write(|txn| put_change_outcome(txn, &key, false, detail))?;
    audit(
        lc,
        AuditKind::CredentialChangeFailed,
        actor,
        &spec,
        format!(
            "{} change of `{spec}` unresolved: {detail}",
            kind_word(journal.kind)
        ),
    );
    Ok(())
}

/// Runs phases 2 and 3 after `begin`.
async fn apply_and_resolve(
    lc: &Lifecycle,
    subject: &Subject,
    journal: &CredentialChange,
    applied: Applied,
    actor: &str,
) -> Result<String, LifecycleError> {
    let spec = subject.spec();
    let word = kind_word(journal.kind);
    let failed = |detail: &str| {
        LifecycleError::ChangeFailed(format!("changing the {word} of `{spec}` failed: {detail}"))
    };
    let failure = match applied {
        Applied::Untouched(reason) => {
            let detail =
                format!("{reason}; the target was not changed and the stored {word} is kept");
            discard(lc, journal, &detail, actor)?;
            return Err(failed(&detail));
        }
        Applied::Unsure(reason) => Some(reason),
        Applied::Done => {
            set_phase(lc, &subject.key, &journal.id, ChangePhase::TargetChanged)?;
            None
        }
    };
    fault::pause_if_asked(Point::AfterTargetChange).await;
    match resolve(lc, journal, failure.as_deref(), actor).await? {
        Resolution::Committed(detail) => Ok(detail),
        Resolution::RolledBack(detail) | Resolution::InDoubt(detail) => Err(failed(&detail)),
    }
}

/// Removes `secret` and its like from text that came back from a target.
fn scrub(text: String, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text, |t, s| t.replace(s, "[redacted]"))
}

async fn change_password(
    lc: &Lifecycle,
    subject: &Subject,
    reason: &str,
    actor: &str,
) -> Result<String, LifecycleError> {
    let spec = subject.spec();
    let new = rule::generate(&subject.rule()).map_err(|reason| LifecycleError::Rule {
        profile: subject.profile_name(),
        reason,
    })?;
    let committed = open_committed(lc, &subject.account)?;
    let service = subject
        .asset_settings
        .service_account
        .clone()
        .filter(|s| *s != subject.account.name);
    if service.is_none() && committed.password.is_none() {
        return Err(LifecycleError::NoCredential(
            spec,
            "change its password with (give the asset a service account: `gatehouse account set SVC@ASSET --service-account`)",
        ));
    }
    let journal = begin(
        lc,
        subject,
        ChangeKind::Password,
        new.expose(),
        None,
        None,
        reason,
        actor,
    )?;
    fault::pause_if_asked(Point::BeforeTargetChange).await;
    let applied = match &service {
        Some(svc) => set_password_as_service(lc, subject, svc, &new).await,
        None => set_password_as_self(lc, subject, &committed, &new).await,
    };
    apply_and_resolve(lc, subject, &journal, applied, actor)
        .await
        .map(|d| match service {
            Some(svc) => format!("{d} (through service account `{svc}`)"),
            None => d,
        })
}

/// `passwd` as the account itself, fed the old password and the new one twice.
async fn set_password_as_self(
    lc: &Lifecycle,
    subject: &Subject,
    committed: &Committed,
    new: &SecretString,
) -> Applied {
    let Some(old) = &committed.password else {
        return Applied::Untouched("the account has no stored password".into());
    };
    let remote = match Remote::login(
        lc,
        &subject.asset,
        subject.account.name.as_str(),
        &Login::Password(old),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            return Applied::Untouched(format!(
                "cannot log in as `{}` with the stored password: {e}",
                subject.spec()
            ));
        }
    };
    let input = Zeroizing::new(format!(
        "{}\n{}\n{}\n",
        old.expose(),
        new.expose(),
        new.expose()
    ));
    let result = remote.exec(lc, "passwd", input.as_bytes()).await;
    remote.close().await;
    changed_by("passwd", result, &[old.expose(), new.expose()])
}

/// How the command that changes a password ended: done, or unsure (it may have changed the
/// target before it failed), with `secrets` scrubbed from what it said.
fn changed_by(program: &str, result: Result<Output, String>, secrets: &[&str]) -> Applied {
    match result {
        Ok(out) if out.success() => Applied::Done,
        Ok(out) => Applied::Unsure(scrub(
            format!("`{program}` failed ({})", out.complaint()),
            secrets,
        )),
        Err(e) => Applied::Unsure(e),
    }
}

/// `sudo chpasswd` through the asset's service account.
async fn set_password_as_service(
    lc: &Lifecycle,
    subject: &Subject,
    service: &Name,
    new: &SecretString,
) -> Applied {
    let svc_spec = format!("{service}@{}", subject.asset.name);
    let svc_key = account_key(subject.asset.name.as_str(), service.as_str());
    let svc_account: Account = match lc.store.get(&ACCOUNTS, &svc_key) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Applied::Untouched(format!("service account `{svc_spec}` does not exist"));
        }
        Err(e) => return Applied::Untouched(e.to_string()),
    };
    let svc = match open_committed(lc, &svc_account) {
        Ok(c) => c,
        Err(e) => return Applied::Untouched(format!("service account `{svc_spec}`: {e}")),
    };
    let Some(login) = svc.login() else {
        return Applied::Untouched(format!("service account `{svc_spec}` holds no credential"));
    };
    let remote = match Remote::login(lc, &subject.asset, service.as_str(), &login).await {
        Ok(r) => r,
        Err(e) => {
            return Applied::Untouched(format!("service account `{svc_spec}` cannot log in: {e}"));
        }
    };
    let result = service_chpasswd(lc, &remote, subject, &svc_spec, &svc, new).await;
    remote.close().await;
    result
}

async fn service_chpasswd(
    lc: &Lifecycle,
    remote: &Remote,
    subject: &Subject,
    svc_spec: &str,
    svc: &Committed,
    new: &SecretString,
) -> Applied {
    let line = Zeroizing::new(format!("{}:{}\n", subject.account.name, new.expose()));
    // Without a password (NOPASSWD), or with the service account's password on the first line
    // of standard input; `-k` makes sudo ask for it every time, so that it never reaches chpasswd.
    let nopasswd = matches!(remote.exec(lc, "sudo -n true", b"").await, Ok(o) if o.success());
    let (command, input) = if nopasswd {
        ("sudo -n chpasswd", line)
    } else {
        let Some(svc_password) = &svc.password else {
            return Applied::Untouched(format!(
                "service account `{svc_spec}` needs a password for sudo, and the vault holds none"
            ));
        };
        let probe = Zeroizing::new(format!("{}\n", svc_password.expose()));
        match remote
            .exec(lc, "sudo -k -S -p '' true", probe.as_bytes())
            .await
        {
            Ok(o) if o.success() => {}
            Ok(o) => {
                return Applied::Untouched(scrub(
                    format!(
                        "sudo refused service account `{svc_spec}` ({}); check its password and its sudo rights",
                        o.complaint()
                    ),
                    &[svc_password.expose()],
                ));
            }
            Err(e) => return Applied::Untouched(e),
        }
        (
            "sudo -k -S -p '' chpasswd",
            Zeroizing::new(format!("{}\n{}", svc_password.expose(), line.as_str())),
        )
    };
    let secrets: Vec<&str> = [
        Some(new.expose()),
        svc.password.as_ref().map(|p| p.expose()),
    ]
    .into_iter()
    .flatten()
    .collect();
    changed_by(
        "chpasswd",
        remote.exec(lc, command, input.as_bytes()).await,
        &secrets,
    )
}

/// A fresh Ed25519 key pair: the OpenSSH private key text and the public key line.
fn new_key_pair(comment: &str) -> Result<(SecretString, String), String> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(seed.as_mut());
    let mut key = russh::keys::PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| format!("encoding the new key: {e}"))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| format!("encoding the new public key: {e}"))?;
    Ok((SecretString::new(private.to_string()), public))
}

fn public_line_of(private: &SecretString) -> Option<String> {
    russh::keys::decode_secret_key(private.expose(), None)
        .ok()?
        .public_key()
        .to_openssh()
        .ok()
}

/// The base64 blob of a public key line (`type blob comment`).
fn blob(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)
}

const AUTHORIZED_KEYS_READ: &str = "cat ~/.ssh/authorized_keys 2>/dev/null || true";
const AUTHORIZED_KEYS_WRITE: &str = "umask 077 && mkdir -p ~/.ssh && cat > ~/.ssh/authorized_keys.gatehouse-new && mv -f ~/.ssh/authorized_keys.gatehouse-new ~/.ssh/authorized_keys";

/// Rewrites the account's `~/.ssh/authorized_keys` over `login` with `edit`.
async fn edit_authorized_keys(
    lc: &Lifecycle,
    subject: &Subject,
    login: &Login<'_>,
    edit: impl FnOnce(Vec<String>) -> Vec<String>,
) -> Result<(), String> {
    let remote = Remote::login(lc, &subject.asset, subject.account.name.as_str(), login)
        .await
        .map_err(|e| format!("cannot log in as `{}`: {e}", subject.spec()))?;
    let result = async {
        let current = remote.exec(lc, AUTHORIZED_KEYS_READ, b"").await?;
        if !current.success() {
            return Err(format!(
                "reading authorized_keys failed ({})",
                current.complaint()
            ));
        }
        let lines: Vec<String> = String::from_utf8_lossy(&current.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let mut text = edit(lines).join("\n");
        text.push('\n');
        let written = remote
            .exec(lc, AUTHORIZED_KEYS_WRITE, text.as_bytes())
            .await?;
        if written.success() {
            Ok(())
        } else {
            Err(format!(
                "writing authorized_keys failed ({})",
                written.complaint()
            ))
        }
    }
    .await;
    remote.close().await;
    result
}

/// Removes every line holding the key of `public_line` from `authorized_keys`.
async fn remove_key(
    lc: &Lifecycle,
    subject: &Subject,
    login: &Login<'_>,
    public_line: &str,
) -> Result<(), String> {
    let Some(gone) = blob(public_line).map(str::to_string) else {
        return Ok(());
    };
    edit_authorized_keys(lc, subject, login, |lines| {
        lines
            .into_iter()
            .filter(|l| !l.split_whitespace().any(|t| t == gone))
            .collect()
    })
    .await
}

async fn change_key(
    lc: &Lifecycle,
    subject: &Subject,
    reason: &str,
    actor: &str,
) -> Result<String, LifecycleError> {
    let spec = subject.spec();
    let committed = open_committed(lc, &subject.account)?;
    let comment = format!(
        "gatehouse:{spec}:{}",
        humantime::format_rfc3339_seconds(Timestamp::now().to_system_time())
    );
    let (private, public) = new_key_pair(&comment).map_err(|reason| LifecycleError::Target {
        target: spec.clone(),
        reason,
    })?;
    let old_public = committed.private_key.as_ref().and_then(public_line_of);
    let Some(old_login) = committed.login() else {
        return Err(LifecycleError::NoCredential(
            spec,
            "log in with to rotate its key",
        ));
    };
    let journal = begin(
        lc,
        subject,
        ChangeKind::SshKey,
        private.expose(),
        Some(public.clone()),
        old_public.clone(),
        reason,
        actor,
    )?;
    fault::pause_if_asked(Point::BeforeTargetChange).await;
    let new_blob = blob(&public).unwrap_or_default().to_string();
    let line = public.clone();
    let added = edit_authorized_keys(lc, subject, &old_login, move |mut lines| {
        if !lines
            .iter()
            .any(|l| l.split_whitespace().any(|t| t == new_blob))
        {
            lines.push(line);
        }
        lines
    })
    .await;
    let applied = match added {
        Ok(()) => Applied::Done,
        Err(e) if e.starts_with("cannot log in") => Applied::Untouched(e),
        Err(e) => Applied::Unsure(e),
    };
    // The old key is removed in `resolve`, once the new one has logged in.
    apply_and_resolve(lc, subject, &journal, applied, actor).await
}

/// Settles an interrupted change of one account, if there is one: keeps whichever secret logs
/// in (audited as `credential_reconciled`). `Ok(None)` when nothing was pending.
pub async fn reconcile_account(
    lc: &Lifecycle,
    asset: &Name,
    account: &Name,
    actor: &str,
) -> Result<Option<String>, LifecycleError> {
    let key = account_key(asset.as_str(), account.as_str());
    let Some(journal) = lc.store.get(&CREDENTIAL_CHANGES, &key)? else {
        return Ok(None);
    };
    let spec = format!("{account}@{asset}");
    let word = kind_word(journal.kind);
    let (text, result) = match resolve(lc, &journal, None, actor).await? {
        Resolution::Committed(d) => (format!("kept the new {word}: {d}"), Ok(())),
        Resolution::RolledBack(d) => (format!("kept the stored {word}: {d}"), Ok(())),
        Resolution::InDoubt(d) => (format!("unresolved: {d}"), Err(d)),
    };
    audit(
        lc,
        AuditKind::CredentialReconciled,
        actor,
        &spec,
        format!("reconciled the interrupted {word} change of `{spec}`: {text}"),
    );
    match result {
        Ok(()) => Ok(Some(text)),
        Err(d) => Err(LifecycleError::ChangeFailed(format!(
            "reconciling `{spec}`: {d}"
        ))),
    }
}

/// Every account with a change in the journal (interrupted or in flight).
pub fn pending_changes(lc: &Lifecycle) -> Result<Vec<CredentialChange>, LifecycleError> {
    Ok(lc.store.list(&CREDENTIAL_CHANGES)?)
}

/// Reconciles every journal entry (what `gatehouse serve` does at start-up). Returns one line
/// per entry: `(account@asset, outcome)`.
pub async fn reconcile_all(
    lc: &Lifecycle,
    actor: &str,
) -> Result<Vec<(String, Result<String, String>)>, LifecycleError> {
    let mut out = Vec::new();
    for journal in pending_changes(lc)? {
        let spec = journal_spec(&journal);
        let result = reconcile_account(lc, &journal.asset, &journal.account, actor)
            .await
            .map(|r| r.unwrap_or_else(|| "nothing pending".into()))
            .map_err(|e| e.to_string());
        out.push((spec, result));
    }
    Ok(out)
}
