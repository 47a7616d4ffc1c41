//! Directory users in the store: what the gateway learnt from the directory is mirrored into
//! user and group records, so Cedar (and grants, and requests) see directory users and groups
//! like local ones. The book of which records came from the directory is one settings value
//! (`directory`); a local user or group of the same name is never touched.

use gatehouse_core::time::Timestamp;
use gatehouse_core::{Group, Name, SealedSecret, User};
use gatehouse_directory::{Directory, DirectoryUser};
use gatehouse_store::{GROUPS, SETTINGS, Store, StoreError, Txn, USERS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The settings key of the book.
pub const BOOK_KEY: &str = "directory";

/// Which users and groups came from the directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirectoryBook {
    #[serde(default)]
    pub users: BTreeMap<String, UserLink>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupLink>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserLink {
    pub dn: String,
    /// When the user's groups were last looked up.
    pub groups_checked: Timestamp,
    /// The directory no longer has the user: no groups, no RDP secret, no login.
    #[serde(default)]
    pub missing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupLink {
    pub dn: String,
}

/// Logins of users the directory knows, for the [`crate::Authenticator`].
pub struct DirectoryLogins {
    pub directory: Arc<Directory>,
    /// Runs the directory's calls from the blocking thread a login is checked on.
    pub runtime: tokio::runtime::Handle,
    /// Seals a directory user's NT hash for RDP from the password that just bound (the
    /// daemon's vault; `None`: RDP stays off for directory users).
    pub rdp_secret: Option<RdpSecretFn>,
}

/// (user, password) -> the sealed NT hash.
pub type RdpSecretFn = Box<dyn Fn(&str, &str) -> Option<SealedSecret> + Send + Sync>;

pub fn book(store: &Store) -> Result<DirectoryBook, StoreError> {
    Ok(store
        .get(&SETTINGS, BOOK_KEY)?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

fn book_in(txn: &Txn<'_>) -> Result<DirectoryBook, StoreError> {
    Ok(txn
        .get(&SETTINGS, BOOK_KEY)?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default())
}

fn save_book(txn: &mut Txn<'_>, book: &DirectoryBook) -> Result<(), StoreError> {
    let value = serde_json::to_value(book).unwrap_or_default();
    txn.put(&SETTINGS, BOOK_KEY, &value)
}

/// Mirrors the directory's groups (name -> (dn, the groups it is in)) into group records:
/// new ones are made, directory ones get their nesting; local ones of the same name are left
/// and returned as conflicts.
fn mirror_groups(
    txn: &mut Txn<'_>,
    book: &mut DirectoryBook,
    groups: &BTreeMap<String, (Option<String>, Vec<String>)>,
) -> Result<Vec<String>, StoreError> {
    let mut conflicts = Vec::new();
    for (name, (dn, parents)) in groups {
        let Ok(valid) = Name::new(name) else {
            conflicts.push(name.clone());
            continue;
        };
        let existing: Option<Group> = txn.get(&GROUPS, name)?;
        let ours = book.groups.contains_key(name);
        if existing.is_some() && !ours {
            conflicts.push(name.clone());
            continue;
        }
        let parents: Vec<Name> = parents
            .iter()
            .filter(|p| groups.contains_key(*p))
            .filter_map(|p| Name::new(p).ok())
            .collect();
        let group = match existing {
            Some(mut group) => {
                group.parents = parents;
                group
            }
            None => Group {
                name: valid,
                description: "from the directory".into(),
                parents,
                created: Timestamp::now(),
            },
        };
        txn.put(&GROUPS, name, &group)?;
        let dn = dn
            .clone()
            .or_else(|| book.groups.get(name).map(|l| l.dn.clone()))
            .unwrap_or_default();
        book.groups.insert(name.clone(), GroupLink { dn });
    }
    Ok(conflicts)
}

/// The groups of `user` as mirrors want them: name -> (dn, parents).
fn user_groups(user: &DirectoryUser) -> BTreeMap<String, (Option<String>, Vec<String>)> {
    let mut groups: BTreeMap<String, (Option<String>, Vec<String>)> = BTreeMap::new();
    for name in user.all_groups() {
        groups.entry(name).or_default();
    }
    for (child, parent) in &user.nesting {
        let entry = groups.entry(child.clone()).or_default();
        if !entry.1.contains(parent) {
            entry.1.push(parent.clone());
        }
    }
    groups
}

/// What a mirror changed for a user: groups added and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Change {
    pub user: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub missing: bool,
}

/// Mirrors a directory user (with fresh groups when `groups_looked_up`), keeping what the
/// gateway holds of its own (public keys, e-mail it was given); `rdp_secret` replaces the
/// kept one when given. Fails with `Ok(None)` when a local user has the name.
pub fn mirror_user(
    store: &Store,
    user: &DirectoryUser,
    groups_looked_up: bool,
    rdp_secret: Option<SealedSecret>,
) -> Result<Option<(User, Change)>, StoreError> {
    store.write(|txn| -> Result<_, StoreError> {
        let mut book = book_in(txn)?;
        let existing: Option<User> = txn.get(&USERS, &user.name)?;
        if existing.is_some() && !book.users.contains_key(&user.name) {
            return Ok(None);
        }
        let Ok(name) = Name::new(&user.name) else {
            return Ok(None);
        };
        let before: Vec<String> = existing
            .as_ref()
            .map(|u| u.groups.iter().map(|g| g.to_string()).collect())
            .unwrap_or_default();
        let groups = if groups_looked_up {
            let wanted = user_groups(user);
            let conflicts = mirror_groups(txn, &mut book, &wanted)?;
            for conflict in &conflicts {
                tracing::warn!(group = %conflict, user = %user.name, "a directory group has the name of a local group or no valid name: not mirrored");
            }
            user.groups
                .iter()
                .filter(|g| !conflicts.contains(g))
                .filter_map(|g| Name::new(g).ok())
                .collect()
        } else {
            existing
                .as_ref()
                .map(|u| u.groups.clone())
                .unwrap_or_default()
        };
        let after: Vec<String> = groups.iter().map(|g: &Name| g.to_string()).collect();
        let record = User {
            name,
            password_hash: None,
            public_keys: existing
                .as_ref()
                .map(|u| u.public_keys.clone())
                .unwrap_or_default(),
            groups,
            email: existing
                .as_ref()
                .and_then(|u| u.email.clone())
                .or_else(|| user.email.clone()),
            rdp_secret: rdp_secret.or_else(|| existing.as_ref().and_then(|u| u.rdp_secret.clone())),
            created: existing
                .as_ref()
                .map(|u| u.created)
                .unwrap_or_else(Timestamp::now),
        };
        txn.put(&USERS, &user.name, &record)?;
        let checked = if groups_looked_up {
            Timestamp::now()
        } else {
            book.users
                .get(&user.name)
                .map(|l| l.groups_checked)
                .unwrap_or_else(Timestamp::now)
        };
        book.users.insert(
            user.name.clone(),
            UserLink {
                dn: user.dn.clone(),
                groups_checked: checked,
                missing: false,
            },
        );
        save_book(txn, &book)?;
        let change = Change {
            user: user.name.clone(),
            added: after.iter().filter(|g| !before.contains(g)).cloned().collect(),
            removed: before.iter().filter(|g| !after.contains(g)).cloned().collect(),
            missing: false,
        };
        Ok(Some((record, change)))
    })
}

/// The directory no longer has `name`: its mirror loses its groups and RDP secret.
pub fn mark_missing(store: &Store, name: &str) -> Result<Option<Change>, StoreError> {
    store.write(|txn| -> Result<_, StoreError> {
        let mut book = book_in(txn)?;
        let Some(link) = book.users.get_mut(name) else {
            return Ok(None);
        };
        let already = link.missing;
        link.missing = true;
        let mut removed = Vec::new();
        if let Some(mut user) = txn.get::<User>(&USERS, name)? {
            removed = user.groups.iter().map(|g| g.to_string()).collect();
            user.groups.clear();
            user.rdp_secret = None;
            txn.put(&USERS, name, &user)?;
        }
        save_book(txn, &book)?;
        Ok((!already || !removed.is_empty()).then(|| Change {
            user: name.to_string(),
            added: Vec::new(),
            removed,
            missing: true,
        }))
    })
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub users: usize,
    pub changes: Vec<Change>,
    /// Users the directory could not be asked about (it stopped answering).
    pub failed: Vec<String>,
    pub error: Option<String>,
    /// The directory stopped answering: the sync did not finish.
    pub unavailable: bool,
}

/// Looks every mirrored user up again: groups brought up to date, users gone from the
/// directory marked missing.
pub async fn sync(store: &Store, directory: &Directory) -> Result<SyncReport, StoreError> {
    let book = book(store)?;
    let mut report = SyncReport {
        users: book.users.len(),
        ..Default::default()
    };
    for name in book.users.keys() {
        match directory.lookup(name).await {
            Ok(Some(user)) => {
                if let Some((_, change)) = mirror_user(store, &user, true, None)?
                    && (!change.added.is_empty() || !change.removed.is_empty())
                {
                    report.changes.push(change);
                }
            }
            Ok(None) => {
                if let Some(change) = mark_missing(store, name)? {
                    report.changes.push(change);
                }
            }
            Err(e) => {
                report.failed.push(name.clone());
                if report.error.is_none() {
                    report.error = Some(e.to_string());
                }
                if e.is_unavailable() {
                    report.unavailable = true;
                    break;
                }
            }
        }
    }
    Ok(report)
}
