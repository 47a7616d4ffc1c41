//! The vault: seals target credentials with the master key and opens them for the dialer.
//!
//! Secrets are sealed with XChaCha20-Poly1305. The associated data binds a ciphertext to the
//! account id and the kind of secret, so a sealed password copied onto another account (or into
//! the private-key slot) fails to open. Plaintexts only live in zeroizing [`SecretBytes`] /
//! [`SecretString`] holders.

pub mod stream;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use gatehouse_core::{Account, SealedSecret, SecretBytes, SecretString};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Which slot of an account a secret belongs to. Part of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretKind {
    Password,
    PrivateKey,
    /// A password being changed, not yet committed (its own label, so it can never be opened
    /// as the committed password).
    PendingPassword,
    /// A private key being rotated, not yet committed.
    PendingPrivateKey,
}

impl SecretKind {
    fn label(self) -> &'static str {
        match self {
            SecretKind::Password => "password",
            SecretKind::PrivateKey => "private-key",
            SecretKind::PendingPassword => "pending-password",
            SecretKind::PendingPrivateKey => "pending-private-key",
        }
    }
}

/// Which secret of a gateway user a sealed value is. Part of the associated data, which names
/// `user:` rather than `account:`, so a user's secret can never be opened as an account's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserSecretKind {
    /// The NT hash of the user's password, for RDP's NTLM.
    RdpNtHash,
}

impl UserSecretKind {
    fn label(self) -> &'static str {
        match self {
            UserSecretKind::RdpNtHash => "rdp-nt-hash",
        }
    }
}

/// Why the vault could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("master key at `{path}`: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("master key from environment variable `{var}`: {reason}")]
    KeyEnv { var: String, reason: String },
    #[error("the secret does not belong to this account or was sealed with another master key")]
    OpenFailed,
    #[error("the secret was sealed with master key `{found}`, but the loaded key is `{loaded}`")]
    WrongKey { found: String, loaded: String },
    #[error("sealing failed")]
    SealFailed,
    #[error("the stored secret is not valid UTF-8 text")]
    NotText,
}

/// Where the master key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A file holding 64 hex characters (the default is `<data-dir>/master.key`, mode 0600).
    File(PathBuf),
    /// An environment variable holding 64 hex characters.
    Env(String),
}

/// The 256-bit master key. Zeroized on drop, never printed.
pub struct MasterKey {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id={}, [redacted])", self.id)
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self::from_bytes(key)
    }

    fn from_bytes(key: Zeroizing<[u8; 32]>) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"gatehouse master key id v1");
        hasher.update(key.as_ref());
        let id = hex::encode(&hasher.finalize()[..6]);
        Self { key, id }
    }

    /// Parses 64 hex characters (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text, key.as_mut())
            .map_err(|_| "expected 64 hexadecimal characters".to_string())?;
        Ok(Self::from_bytes(key))
    }

    /// A short public identifier of the key (not secret: a hash prefix).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Loads the key from where the operator keeps it.
    pub fn load(source: &KeySource) -> Result<Self, VaultError> {
        match source {
            KeySource::File(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    VaultError::KeyFile {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    }
                })?);
                check_file_mode(path)?;
                Self::from_hex(&text).map_err(|reason| VaultError::KeyFile {
                    path: path.display().to_string(),
                    reason,
                })
            }
            KeySource::Env(var) => {
                let text = Zeroizing::new(std::env::var(var).map_err(|_| VaultError::KeyEnv {
                    var: var.clone(),
                    reason: "not set or not valid text".into(),
                })?);
                Self::from_hex(&text).map_err(|reason| VaultError::KeyEnv {
                    var: var.clone(),
                    reason,
                })
            }
        }
    }

    /// Writes the key as hex to a new file with mode 0600. Refuses to overwrite.
    pub fn write_new_file(&self, path: &Path) -> Result<(), VaultError> {
        let err = |e: std::io::Error| VaultError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(err)?;
        let text = Zeroizing::new(hex::encode(self.key.as_ref()));
        file.write_all(text.as_bytes()).map_err(err)?;
        file.write_all(b"\n").map_err(err)?;
        file.sync_all().map_err(err)?;
        Ok(())
    }
}

#[cfg(unix)]
fn check_file_mode(path: &Path) -> Result<(), VaultError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| VaultError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(VaultError::KeyFile {
            path: path.display().to_string(),
            reason: format!(
                "permissions {:o} are too open; run `chmod 600` on it",
                mode & 0o777
            ),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_file_mode(_path: &Path) -> Result<(), VaultError> {
    Ok(())
}

/// Seals and opens account secrets with the master key.
#[derive(Debug)]
pub struct Vault {
    key: MasterKey,
}

fn associated_data(account_id: &str, kind: SecretKind) -> Vec<u8> {
    format!("gatehouse:v1:account:{account_id}:{}", kind.label()).into_bytes()
}

fn user_associated_data(user: &str, kind: UserSecretKind) -> Vec<u8> {
    format!("gatehouse:v1:user:{user}:{}", kind.label()).into_bytes()
}

impl Vault {
    pub fn new(key: MasterKey) -> Self {
        Self { key }
    }

    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.key.key.as_ref().into())
    }

    /// Seals `plaintext` for one slot of one account.
    pub fn seal(
        &self,
        account_id: &str,
        kind: SecretKind,
        plaintext: &[u8],
    ) -> Result<SealedSecret, VaultError> {
        self.seal_with(&associated_data(account_id, kind), plaintext)
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Result<SealedSecret, VaultError> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| VaultError::SealFailed)?;
        Ok(SealedSecret {
            key_id: self.key.id().to_string(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Seals `plaintext` as one secret of one gateway user.
    pub fn seal_user_secret(
        &self,
        user: &str,
        kind: UserSecretKind,
        plaintext: &[u8],
    ) -> Result<SealedSecret, VaultError> {
        self.seal_with(&user_associated_data(user, kind), plaintext)
    }

    /// Opens a secret sealed by [`Vault::seal_user_secret`] for the same user and kind.
    pub fn open_user_secret(
        &self,
        user: &str,
        kind: UserSecretKind,
        sealed: &SealedSecret,
    ) -> Result<SecretBytes, VaultError> {
        self.open_with(&user_associated_data(user, kind), sealed)
    }

    /// Opens a sealed secret of one slot of one account.
    pub fn open(
        &self,
        account_id: &str,
        kind: SecretKind,
        sealed: &SealedSecret,
    ) -> Result<SecretBytes, VaultError> {
        self.open_with(&associated_data(account_id, kind), sealed)
    }

    fn open_with(&self, aad: &[u8], sealed: &SealedSecret) -> Result<SecretBytes, VaultError> {
        if sealed.key_id != self.key.id() {
            return Err(VaultError::WrongKey {
                found: sealed.key_id.clone(),
                loaded: self.key.id().to_string(),
            });
        }
        if sealed.nonce.len() != 24 {
            return Err(VaultError::OpenFailed);
        }
        let plaintext = self
            .cipher()
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .map_err(|_| VaultError::OpenFailed)?;
        Ok(SecretBytes::new(plaintext))
    }

    /// Opens a sealed secret that must be text (passwords, OpenSSH private keys).
    pub fn open_text(
        &self,
        account_id: &str,
        kind: SecretKind,
        sealed: &SealedSecret,
    ) -> Result<SecretString, VaultError> {
        let bytes = self.open(account_id, kind, sealed)?;
        let text = std::str::from_utf8(bytes.expose()).map_err(|_| VaultError::NotText)?;
        Ok(SecretString::new(text.to_string()))
    }

    /// A 256-bit key for another purpose (signing API tokens, ...), derived from the master key
    /// with HMAC-SHA256 under a label, so it changes with the master key and is never stored.
    pub fn derive_key(&self, label: &str) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(self.key.key.as_ref())
            .map_err(|_| VaultError::SealFailed)?;
        mac.update(b"gatehouse:v1:derive:");
        mac.update(label.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        Ok(out)
    }

    /// The credential the gateway logs in to an account with.
    pub fn credential(&self, account: &Account) -> Result<TargetCredential, VaultError> {
        let password = account
            .password
            .as_ref()
            .map(|s| self.open_text(&account.id, SecretKind::Password, s))
            .transpose()?;
        let private_key = account
            .private_key
            .as_ref()
            .map(|s| self.open_text(&account.id, SecretKind::PrivateKey, s))
            .transpose()?;
        Ok(TargetCredential {
            password,
            private_key,
        })
    }
}

/// An opened credential for one account. Redacted in `Debug`, zeroized on drop.
#[derive(Debug)]
pub struct TargetCredential {
    pub password: Option<SecretString>,
    /// OpenSSH-format private key text.
    pub private_key: Option<SecretString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let vault = Vault::new(MasterKey::generate());
        let sealed = vault
            .seal("acct-1", SecretKind::Password, b"s3cret")
            .unwrap();
        assert_eq!(
            vault
                .open("acct-1", SecretKind::Password, &sealed)
                .unwrap()
                .expose(),
            b"s3cret"
        );
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"s3cret"));
        // Moved to another account: refused.
        assert!(matches!(
            vault.open("acct-2", SecretKind::Password, &sealed),
            Err(VaultError::OpenFailed)
        ));
        // Moved to another slot: refused.
        assert!(matches!(
            vault.open("acct-1", SecretKind::PrivateKey, &sealed),
            Err(VaultError::OpenFailed)
        ));
        // A pending secret is never taken for the committed one, nor the reverse.
        let pending = vault
            .seal("acct-1", SecretKind::PendingPassword, b"n3w")
            .unwrap();
        assert!(matches!(
            vault.open("acct-1", SecretKind::Password, &pending),
            Err(VaultError::OpenFailed)
        ));
        assert!(matches!(
            vault.open("acct-1", SecretKind::PendingPassword, &sealed),
            Err(VaultError::OpenFailed)
        ));
        // Tampered: refused.
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(
            vault
                .open("acct-1", SecretKind::Password, &tampered)
                .is_err()
        );
        // Another master key: refused with a clear reason.
        let other = Vault::new(MasterKey::generate());
        assert!(matches!(
            other.open("acct-1", SecretKind::Password, &sealed),
            Err(VaultError::WrongKey { .. })
        ));
    }

    #[test]
    fn user_secrets_are_bound_to_the_user_and_never_open_as_account_secrets() {
        let vault = Vault::new(MasterKey::generate());
        let sealed = vault
            .seal_user_secret("alice", UserSecretKind::RdpNtHash, b"0123456789abcdef")
            .unwrap();
        assert_eq!(
            vault
                .open_user_secret("alice", UserSecretKind::RdpNtHash, &sealed)
                .unwrap()
                .expose(),
            b"0123456789abcdef"
        );
        assert!(matches!(
            vault.open_user_secret("bob", UserSecretKind::RdpNtHash, &sealed),
            Err(VaultError::OpenFailed)
        ));
        assert!(matches!(
            vault.open("alice", SecretKind::Password, &sealed),
            Err(VaultError::OpenFailed)
        ));
        let account = vault.seal("alice", SecretKind::Password, b"pw").unwrap();
        assert!(matches!(
            vault.open_user_secret("alice", UserSecretKind::RdpNtHash, &account),
            Err(VaultError::OpenFailed)
        ));
    }

    #[test]
    fn key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate();
        key.write_new_file(&path).unwrap();
        let loaded = MasterKey::load(&KeySource::File(path.clone())).unwrap();
        assert_eq!(loaded.id(), key.id());
        assert!(key.write_new_file(&path).is_err(), "must not overwrite");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterKey::load(&KeySource::File(path)).unwrap_err();
        assert!(err.to_string().contains("too open"), "{err}");
        assert!(!format!("{key:?}").contains(&hex::encode(key.key.as_ref())));
    }

    #[test]
    fn bad_hex_is_refused() {
        assert!(MasterKey::from_hex("zz").is_err());
        assert!(MasterKey::from_hex(&"ab".repeat(31)).is_err());
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
    }
}
