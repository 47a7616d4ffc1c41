//! Gateway authentication: local users with argon2id passwords and OpenSSH public keys, and
//! users of an LDAP directory or Active Directory (`directory.rs`: a bind checks the password,
//! the user and groups are mirrored into the store).

pub mod directory;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use gatehouse_core::{Name, User};
use gatehouse_store::{Store, StoreError, USERS};
use russh::keys::PublicKey;
use std::sync::Arc;

/// Why a login was refused. The client is only ever told "Permission denied"; this is for the
/// audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    #[error("wrong password for `{0}`")]
    WrongPassword(String),
    #[error("password login is disabled for `{0}`")]
    NoPassword(String),
    #[error("public key {fingerprint} is not registered for `{user}`")]
    UnknownKey { user: String, fingerprint: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The directory could not be asked (down, or refusing the gateway's own bind): nothing is
    /// known about the user.
    #[error("directory unavailable: {0}")]
    DirectoryUnavailable(String),
    /// The directory refused the user for another reason (disabled, locked, ambiguous).
    #[error("directory: {0}")]
    DirectoryRefused(String),
}

/// The argon2id parameters used for new hashes (OWASP's second recommended set: 19 MiB, t=2).
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password into a PHC string (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn verify_hash(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Parses an OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
pub fn parse_public_key(line: &str) -> Result<PublicKey, String> {
    PublicKey::from_openssh(line.trim()).map_err(|e| format!("not an OpenSSH public key: {e}"))
}

/// Checks gateway users' credentials against the store (and the directory, when one is set).
pub struct Authenticator {
    store: Arc<Store>,
    /// Verified against for unknown users so that timing does not reveal which users exist.
    dummy_hash: String,
    directory: Option<directory::DirectoryLogins>,
}

impl Authenticator {
    pub fn new(store: Arc<Store>) -> Result<Self, AuthError> {
        Ok(Self {
            store,
            dummy_hash: hash_password("gatehouse timing equaliser")?,
            directory: None,
        })
    }

    /// Lets users the directory knows log in with their directory password.
    pub fn with_directory(mut self, logins: directory::DirectoryLogins) -> Self {
        self.directory = Some(logins);
        self
    }

    /// The directory, when one is set.
    pub fn directory(&self) -> Option<&Arc<gatehouse_directory::Directory>> {
        self.directory.as_ref().map(|d| &d.directory)
    }

    /// A directory user's password: a bind as their entry, then (unless the mirror's groups
    /// are fresh) their groups, mirrored into the store.
    fn verify_directory_password(
        &self,
        logins: &directory::DirectoryLogins,
        name: &Name,
        password: &str,
        local: Option<&User>,
    ) -> Result<User, AuthError> {
        use gatehouse_directory::DirectoryError;
        let book = directory::book(&self.store)?;
        let fresh = local.is_some()
            && book.users.get(name.as_str()).is_some_and(|link| {
                !link.missing
                    && gatehouse_core::time::Timestamp::now().0
                        < link.groups_checked.0.saturating_add(
                            u64::try_from(logins.directory.cache_ttl().as_millis())
                                .unwrap_or(u64::MAX),
                        )
            });
        let checked = logins.runtime.block_on(logins.directory.authenticate(
            name.as_str(),
            password,
            !fresh,
        ));
        match checked {
            Ok(user) => {
                let secret = logins
                    .rdp_secret
                    .as_ref()
                    .and_then(|seal| seal(name.as_str(), password));
                match directory::mirror_user(&self.store, &user, !fresh, secret)? {
                    Some((record, _)) => Ok(record),
                    None => Err(AuthError::DirectoryRefused(format!(
                        "`{name}` is a local user; the directory's user of that name is not used"
                    ))),
                }
            }
            Err(DirectoryError::NoSuchUser(_)) => {
                let _ = directory::mark_missing(&self.store, name.as_str())?;
                Err(AuthError::UnknownUser(name.to_string()))
            }
            Err(DirectoryError::WrongPassword(_)) => {
                Err(AuthError::WrongPassword(name.to_string()))
            }
            Err(e) if e.is_unavailable() => Err(AuthError::DirectoryUnavailable(e.to_string())),
            Err(e) => Err(AuthError::DirectoryRefused(e.to_string())),
        }
    }

    fn user(&self, name: &Name) -> Result<Option<User>, AuthError> {
        Ok(self.store.get(&USERS, name.as_str())?)
    }

    /// Verifies a password. Slow on purpose (argon2id); call from a blocking context.
    pub fn verify_password(&self, name: &Name, password: &str) -> Result<User, AuthError> {
        if let Some(logins) = &self.directory {
            let local = self.user(name)?;
            // Local users (in the store, not mirrored from the directory) log in as always.
            let mirrored = directory::book(&self.store)?
                .users
                .contains_key(name.as_str());
            if local.is_none() || mirrored {
                return self.verify_directory_password(logins, name, password, local.as_ref());
            }
        }
        let Some(user) = self.user(name)? else {
            let _ = verify_hash(&self.dummy_hash, password);
            return Err(AuthError::UnknownUser(name.to_string()));
        };
        let Some(phc) = &user.password_hash else {
            let _ = verify_hash(&self.dummy_hash, password);
            return Err(AuthError::NoPassword(name.to_string()));
        };
        if verify_hash(phc, password) {
            Ok(user)
        } else {
            Err(AuthError::WrongPassword(name.to_string()))
        }
    }

    /// Whether `key` is one of the user's registered keys (ownership is proven by the SSH layer).
    /// A directory user the directory no longer has cannot use their keys either.
    pub fn verify_public_key(&self, name: &Name, key: &PublicKey) -> Result<User, AuthError> {
        let fingerprint = key.fingerprint(Default::default()).to_string();
        let Some(user) = self.user(name)? else {
            return Err(AuthError::UnknownUser(name.to_string()));
        };
        if directory::book(&self.store)?
            .users
            .get(name.as_str())
            .is_some_and(|link| link.missing)
        {
            return Err(AuthError::DirectoryRefused(format!(
                "`{name}` is no longer in the directory"
            )));
        }
        let known = user
            .public_keys
            .iter()
            .filter_map(|line| parse_public_key(line).ok())
            .any(|k| k.key_data() == key.key_data());
        if known {
            Ok(user)
        } else {
            Err(AuthError::UnknownKey {
                user: name.to_string(),
                fingerprint,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::time::Timestamp;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhn7Ne2n6d9dQqT0eqvAvUOMs2DqLZ6b6l3AfpZp4Ij a@test";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOPQ0Xjs3bQzbGb1PfEYl6y6bB8wOCvjyFu4eVO8xPn2 b@test";

    #[test]
    fn passwords_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("s.redb")).unwrap());
        let alice = Name::new("alice").unwrap();
        store
            .write(|t| -> Result<(), StoreError> {
                t.put(
                    &USERS,
                    "alice",
                    &User {
                        name: alice.clone(),
                        password_hash: Some(hash_password("correct horse").unwrap()),
                        public_keys: vec![KEY_A.into()],
                        groups: vec![],
                        email: None,
                        rdp_secret: None,
                        created: Timestamp(0),
                    },
                )
            })
            .unwrap();
        let auth = Authenticator::new(store).unwrap();
        assert!(auth.verify_password(&alice, "correct horse").is_ok());
        assert!(matches!(
            auth.verify_password(&alice, "wrong"),
            Err(AuthError::WrongPassword(_))
        ));
        let bob = Name::new("bob").unwrap();
        assert!(matches!(
            auth.verify_password(&bob, "x"),
            Err(AuthError::UnknownUser(_))
        ));
        let key_a = parse_public_key(KEY_A).unwrap();
        let key_b = parse_public_key(KEY_B).unwrap();
        assert!(auth.verify_public_key(&alice, &key_a).is_ok());
        assert!(matches!(
            auth.verify_public_key(&alice, &key_b),
            Err(AuthError::UnknownKey { .. })
        ));
        assert!(parse_public_key("ssh-ed25519 garbage").is_err());
    }
}
