//! Discovery: the accounts of a Linux asset (from its user database, `getent passwd`, filtered
//! by uid range and name patterns) and the public keys in their `~/.ssh/authorized_keys`
//! (other users' files are read through the asset's service account with `sudo`). Discovered
//! accounts are kept in the store and listed as unmanaged until an administrator manages them.

use crate::remote::{Remote, shell_quote};
use crate::{Lifecycle, LifecycleError, audit, open_committed, services_allow};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{
    Account, Asset, AssetLifecycle, AuditKind, DiscoveredAccount, DiscoveredKey, Name,
};
use gatehouse_store::{ACCOUNTS, ASSET_LIFECYCLE, ASSETS, DISCOVERED, Store, account_key};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Which accounts of the user database are reported.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DiscoveryFilter {
    pub min_uid: u32,
    pub max_uid: u32,
    /// Name patterns to keep (`*` matches any run of characters); empty keeps all.
    pub include: Vec<String>,
    /// Name patterns to drop.
    pub exclude: Vec<String>,
    /// Drop accounts whose shell is `nologin` or `false`.
    pub login_shells_only: bool,
}

impl Default for DiscoveryFilter {
    fn default() -> Self {
        Self {
            min_uid: 1000,
            max_uid: 60000,
            include: Vec::new(),
            exclude: Vec::new(),
            login_shells_only: false,
        }
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

impl DiscoveryFilter {
    fn keeps(&self, entry: &PasswdEntry) -> bool {
        (self.min_uid..=self.max_uid).contains(&entry.uid)
            && (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, &entry.name)))
            && !self.exclude.iter().any(|p| glob_match(p, &entry.name))
            && !(self.login_shells_only
                && (entry.shell.ends_with("nologin") || entry.shell.ends_with("false")))
    }
}

/// One line of the user database.
#[derive(Clone, Debug, PartialEq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() != 7 {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_string(),
                shell: fields[6].to_string(),
            })
        })
        .collect()
}

/// A public key from an `authorized_keys` line (options before the key are skipped).
fn parse_key_line(line: &str) -> Option<DiscoveredKey> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let tokens: Vec<&str> = line.split_whitespace().collect();
    (0..tokens.len().min(16)).find_map(|start| {
        let key = russh::keys::PublicKey::from_openssh(&tokens[start..].join(" ")).ok()?;
        Some(DiscoveredKey {
            algorithm: key.algorithm().as_str().to_string(),
            fingerprint: key.fingerprint(Default::default()).to_string(),
            comment: key.comment().to_string(),
        })
    })
}

/// What a discovery run found, and what the store now lists for the asset.
#[derive(Clone, Debug, Serialize)]
pub struct DiscoveryReport {
    pub asset: String,
    pub found: usize,
    pub new: usize,
    pub gone: usize,
    pub keys: usize,
    pub accounts: Vec<DiscoveredView>,
}

/// A discovered account and whether an administrator manages it.
#[derive(Clone, Debug, Serialize)]
pub struct DiscoveredView {
    #[serde(flatten)]
    pub account: DiscoveredAccount,
    pub managed: bool,
}

/// The discovered accounts in the store (of one asset, or all), with their managed flag.
pub fn list_discovered(
    store: &Store,
    asset: Option<&str>,
) -> Result<Vec<DiscoveredView>, LifecycleError> {
    store.read(|txn| -> Result<Vec<DiscoveredView>, LifecycleError> {
        let mut out = Vec::new();
        for account in txn.list(&DISCOVERED)? {
            if asset.is_some_and(|a| account.asset.as_str() != a) {
                continue;
            }
            let key = account_key(account.asset.as_str(), &account.name);
            let managed = txn.get(&ACCOUNTS, &key)?.is_some();
            out.push(DiscoveredView { account, managed });
        }
        Ok(out)
    })
}

/// The account discovery logs in as: the asset's service account, else the first managed
/// account on the asset with a stored credential.
fn discovery_login_account(
    store: &Store,
    asset: &Asset,
) -> Result<(Account, bool), LifecycleError> {
    let settings: AssetLifecycle = store
        .get(&ASSET_LIFECYCLE, asset.name.as_str())?
        .unwrap_or_default();
    if let Some(svc) = settings.service_account {
        let account = store
            .get(&ACCOUNTS, &account_key(asset.name.as_str(), svc.as_str()))?
            .ok_or_else(|| LifecycleError::UnknownAccount(format!("{svc}@{}", asset.name)))?;
        return Ok((account, true));
    }
    let accounts: Vec<Account> = store.list(&ACCOUNTS)?;
    accounts
        .into_iter()
        .find(|a| {
            a.asset == asset.name
                && a.credential_plugin.is_none()
                && (a.password.is_some() || a.private_key.is_some())
        })
        .map(|a| (a, false))
        .ok_or_else(|| LifecycleError::NoDiscoveryAccount(asset.name.to_string()))
}

/// Discovers the accounts of `asset` and their keys, and stores what was found (accounts no
/// longer present are dropped from the list). Refused when the discovery service is disabled.
pub async fn discover(
    lc: &Lifecycle,
    asset: &Name,
    filter: &DiscoveryFilter,
    actor: &str,
) -> Result<DiscoveryReport, LifecycleError> {
    let result = discover_inner(lc, asset, filter, actor).await;
    if let Err(e) = &result {
        audit(
            lc,
            AuditKind::DiscoveryFailed,
            actor,
            asset.as_str(),
            format!("discovery on asset `{asset}` failed: {e}"),
        );
    }
    result
}

async fn discover_inner(
    lc: &Lifecycle,
    asset: &Name,
    filter: &DiscoveryFilter,
    actor: &str,
) -> Result<DiscoveryReport, LifecycleError> {
    services_allow(&lc.store, "discovery")?;
    let asset_record: Asset = lc
        .store
        .get(&ASSETS, asset.as_str())?
        .ok_or_else(|| LifecycleError::UnknownAsset(asset.to_string()))?;
    let found = run_discovery(lc, &asset_record, filter).await?;
    let now = Timestamp::now();
    let (new, gone) = lc
        .store
        .write(|txn| -> Result<(usize, usize), LifecycleError> {
            let existing: BTreeMap<String, DiscoveredAccount> = txn
                .list(&DISCOVERED)?
                .into_iter()
                .filter(|d| d.asset == *asset)
                .map(|d| (d.name.clone(), d))
                .collect();
            let mut new = 0;
            for account in &found {
                let mut record = account.clone();
                match existing.get(&account.name) {
                    Some(old) => record.first_seen = old.first_seen,
                    None => new += 1,
                }
                record.last_seen = now;
                txn.put(
                    &DISCOVERED,
                    &account_key(asset.as_str(), &record.name),
                    &record,
                )?;
            }
            let mut gone = 0;
            for name in existing.keys() {
                if !found.iter().any(|f| f.name == *name) {
                    txn.delete(&DISCOVERED, &account_key(asset.as_str(), name))?;
                    gone += 1;
                }
            }
            Ok((new, gone))
        })?;
    let keys = found.iter().map(|a| a.keys.len()).sum();
    audit(
        lc,
        AuditKind::AccountsDiscovered,
        actor,
        asset.as_str(),
        format!(
            "discovered {} account(s) with {keys} key(s) on asset `{asset}` ({new} new, {gone} gone)",
            found.len()
        ),
    );
    Ok(DiscoveryReport {
        asset: asset.to_string(),
        found: found.len(),
        new,
        gone,
        keys,
        accounts: list_discovered(&lc.store, Some(asset.as_str()))?,
    })
}

async fn run_discovery(
    lc: &Lifecycle,
    asset: &Asset,
    filter: &DiscoveryFilter,
) -> Result<Vec<DiscoveredAccount>, LifecycleError> {
    let (account, is_service) = discovery_login_account(&lc.store, asset)?;
    let spec = format!("{}@{}", account.name, asset.name);
    let committed = open_committed(lc, &account)?;
    let Some(login) = committed.login() else {
        return Err(LifecycleError::NoCredential(spec, "log in with"));
    };
    let remote = Remote::login(lc, asset, account.name.as_str(), &login)
        .await
        .map_err(|e| LifecycleError::Login {
            target: asset.name.to_string(),
            user: account.name.to_string(),
            reason: e.to_string(),
        })?;
    let result = read_accounts(lc, &remote, asset, filter, is_service, &committed).await;
    remote.close().await;
    result
}

async fn read_accounts(
    lc: &Lifecycle,
    remote: &Remote,
    asset: &Asset,
    filter: &DiscoveryFilter,
    is_service: bool,
    committed: &crate::Committed,
) -> Result<Vec<DiscoveredAccount>, LifecycleError> {
    let target_error = |reason: String| LifecycleError::Target {
        target: asset.name.to_string(),
        reason,
    };
    let passwd = remote
        .exec(lc, "getent passwd || cat /etc/passwd", b"")
        .await
        .map_err(target_error)?;
    if !passwd.success() {
        return Err(target_error(format!(
            "reading the user database failed ({})",
            passwd.complaint()
        )));
    }
    let entries: Vec<PasswdEntry> = parse_passwd(&String::from_utf8_lossy(&passwd.stdout))
        .into_iter()
        .filter(|e| filter.keeps(e))
        .collect();
    let marker = format!("GATEHOUSE-{}", uuid::Uuid::new_v4().simple());
    let script = format!(
        "i=0; while IFS= read -r h; do i=$((i+1)); f=\"$h/.ssh/authorized_keys\"; \
         if [ ! -e \"$f\" ]; then echo \"{marker} none $i\"; \
         elif [ -r \"$f\" ]; then echo \"{marker} ok $i\"; cat -- \"$f\"; echo; \
         else echo \"{marker} unreadable $i\"; fi; done"
    );
    let homes: String = entries.iter().map(|e| format!("{}\n", e.home)).collect();
    let sh = format!("sh -c {}", shell_quote(&script));
    let (command, input) = if is_service {
        let nopasswd = matches!(remote.exec(lc, "sudo -n true", b"").await, Ok(o) if o.success());
        match (&committed.password, nopasswd) {
            (_, true) => (format!("sudo -n {sh}"), Zeroizing::new(homes)),
            (Some(p), false) => (
                format!("sudo -k -S -p '' {sh}"),
                Zeroizing::new(format!("{}\n{homes}", p.expose())),
            ),
            (None, false) => (sh, Zeroizing::new(homes)),
        }
    } else {
        (sh, Zeroizing::new(homes))
    };
    let keys_out = remote
        .exec(lc, &command, input.as_bytes())
        .await
        .map_err(target_error)?;
    let mut keys: BTreeMap<usize, (bool, Vec<DiscoveredKey>)> = BTreeMap::new();
    let mut current: Option<usize> = None;
    for line in String::from_utf8_lossy(&keys_out.stdout).lines() {
        if let Some(rest) = line.strip_prefix(&format!("{marker} ")) {
            let mut words = rest.split_whitespace();
            let state = words.next().unwrap_or_default();
            let index: usize = words.next().and_then(|i| i.parse().ok()).unwrap_or(0);
            keys.insert(index, (state != "unreadable", Vec::new()));
            current = (state == "ok").then_some(index);
        } else if let (Some(index), Some(key)) = (current, parse_key_line(line))
            && let Some((_, list)) = keys.get_mut(&index)
        {
            list.push(key);
        }
    }
    let now = Timestamp::now();
    Ok(entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let (keys_read, found) = keys.remove(&(i + 1)).unwrap_or((false, Vec::new()));
            DiscoveredAccount {
                asset: asset.name.clone(),
                name: e.name,
                uid: e.uid,
                gid: e.gid,
                home: e.home,
                shell: e.shell,
                keys: found,
                keys_read,
                first_seen: now,
                last_seen: now,
            }
        })
        .collect())
}

/// Manages a discovered account: creates the vault account (without a secret: set one with
/// `gatehouse account set-secret`, or let `gatehouse account change` set a new password through
/// the asset's service account). Audited.
pub fn manage(
    lc: &Lifecycle,
    asset: &Name,
    account: &str,
    actor: &str,
) -> Result<Account, LifecycleError> {
    let spec = format!("{account}@{asset}");
    let name = Name::new(account).map_err(|e| LifecycleError::Target {
        target: spec.clone(),
        reason: format!("the account name cannot be managed: {e}"),
    })?;
    let key = account_key(asset.as_str(), account);
    let record = lc.store.write(|txn| -> Result<Account, LifecycleError> {
        if txn.get(&DISCOVERED, &key)?.is_none() {
            return Err(LifecycleError::NotDiscovered(
                spec.clone(),
                asset.to_string(),
            ));
        }
        if txn.get(&ACCOUNTS, &key)?.is_some() {
            return Err(LifecycleError::AlreadyManaged(spec.clone()));
        }
        let now = Timestamp::now();
        let record = Account {
            name: name.clone(),
            asset: asset.clone(),
            id: uuid::Uuid::new_v4().to_string(),
            password: None,
            private_key: None,
            credential_plugin: None,
            change_after_checkin: false,
            change_due: None,
            created: now,
            secret_updated: now,
        };
        txn.put(&ACCOUNTS, &key, &record)?;
        Ok(record)
    })?;
    audit(
        lc,
        AuditKind::AdminChange,
        actor,
        &spec,
        format!("managed the discovered account `{spec}` (no secret yet)"),
    );
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("ghtest_*", "ghtest_a"));
        assert!(glob_match("*", "x"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxc"));
        assert!(glob_match("root", "root"));
        assert!(!glob_match("root", "rooty"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn passwd_filtering() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                    alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n\
                    svc:x:1001:1001::/home/svc:/usr/sbin/nologin\n\
                    ghtest_a:x:1002:1002::/home/ghtest_a:/bin/bash\n\
                    broken line\n";
        let entries = parse_passwd(text);
        assert_eq!(entries.len(), 5);
        let names = |f: &DiscoveryFilter| -> Vec<String> {
            entries
                .iter()
                .filter(|e| f.keeps(e))
                .map(|e| e.name.clone())
                .collect()
        };
        assert_eq!(
            names(&DiscoveryFilter::default()),
            ["alice", "svc", "ghtest_a"]
        );
        assert_eq!(
            names(&DiscoveryFilter {
                login_shells_only: true,
                ..Default::default()
            }),
            ["alice", "ghtest_a"]
        );
        assert_eq!(
            names(&DiscoveryFilter {
                include: vec!["ghtest_*".into()],
                ..Default::default()
            }),
            ["ghtest_a"]
        );
        assert_eq!(
            names(&DiscoveryFilter {
                min_uid: 0,
                max_uid: 999,
                exclude: vec!["daemon".into()],
                ..Default::default()
            }),
            ["root"]
        );
    }

    #[test]
    fn key_lines_with_options_and_comments() {
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@host";
        let key = parse_key_line(line).unwrap();
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert_eq!(key.comment, "alice@host");
        assert!(key.fingerprint.starts_with("SHA256:"));
        let with_options = format!("command=\"echo hi\",no-pty {line}");
        assert_eq!(parse_key_line(&with_options), Some(key));
        assert_eq!(parse_key_line("# a comment"), None);
        assert_eq!(parse_key_line("garbage"), None);
    }
}
