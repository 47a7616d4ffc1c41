//! The recording key: with settings.json `recordings.encrypt` on, finished recordings are
//! encrypted at rest with it when they are sealed (`gatehouse_recording::crypt`). It is a random
//! 256-bit key made on first use and kept in `<data-dir>/recordings.key` sealed by the vault
//! (bound to its purpose), so reading an encrypted recording needs the data directory and the
//! master key, like opening a credential. Once made it is loaded by every process that reads
//! recordings, also after encryption is turned off again (what was encrypted stays readable).

use crate::datadir::DataDir;
use anyhow::{Context, Result, anyhow};
use gatehouse_core::SealedSecret;
use gatehouse_recording::crypt::{self, RecordingKey};
use gatehouse_vault::{KeySource, SecretKind, Vault};
use rand::RngCore;
use std::path::{Path, PathBuf};

/// The key's file in the data directory.
pub const FILE: &str = "recordings.key";
const BINDING: &str = "recording:data-key";

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredKey {
    /// The key's id, as encrypted files name it (readable without the master key).
    id: String,
    sealed: SealedSecret,
}

fn path(dir: &DataDir) -> PathBuf {
    dir.root().join(FILE)
}

fn read(path: &Path, vault: &Vault) -> Result<RecordingKey> {
    let text = std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?;
    let stored: StoredKey = serde_json::from_slice(&text)
        .with_context(|| format!("`{}` is damaged", path.display()))?;
    let bytes = vault
        .open(BINDING, SecretKind::PrivateKey, &stored.sealed)
        .with_context(|| {
            format!(
                "opening the recording key `{}` (is this the master key it was sealed with?)",
                path.display()
            )
        })?;
    let bytes: [u8; 32] = bytes
        .expose()
        .try_into()
        .map_err(|_| anyhow!("`{}` does not hold a 256-bit key", path.display()))?;
    let key = RecordingKey::from_bytes(&bytes);
    if key.id() != stored.id {
        anyhow::bail!(
            "`{}` is damaged: its key is not the one it names",
            path.display()
        );
    }
    Ok(key)
}

/// The recording key of `dir`, if one was made.
pub fn load(dir: &DataDir, vault: &Vault) -> Result<Option<RecordingKey>> {
    let path = path(dir);
    if !path.exists() {
        return Ok(None);
    }
    read(&path, vault).map(Some)
}

/// The recording key of `dir`, made and saved on first use.
pub fn load_or_create(dir: &DataDir, vault: &Vault) -> Result<RecordingKey> {
    if let Some(key) = load(dir, vault)? {
        return Ok(key);
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let key = RecordingKey::from_bytes(&bytes);
    let sealed = vault.seal(BINDING, SecretKind::PrivateKey, bytes.as_ref())?;
    let record = serde_json::to_vec_pretty(&StoredKey {
        id: key.id(),
        sealed,
    })?;
    let path = path(dir);
    let partial = dir
        .root()
        .join(format!("{FILE}.{}.part", std::process::id()));
    let _ = std::fs::remove_file(&partial);
    crate::datadir::write_private_file(&partial, &record)?;
    // Linked into place, never over an existing key: of two processes racing, the first wins
    // and the other uses its key.
    let linked = std::fs::hard_link(&partial, &path);
    let _ = std::fs::remove_file(&partial);
    match linked {
        Ok(()) => {
            if let Ok(root) = std::fs::File::open(dir.root()) {
                let _ = root.sync_all();
            }
            tracing::info!(key = %key.id(), file = %path.display(), "recording key created: back it up with the master key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path, vault),
        Err(e) => Err(e).with_context(|| format!("saving `{}`", path.display())),
    }
}

/// Makes this process able to read `dir`'s encrypted recordings: installs its recording key
/// (when there is one) in the reader's key ring.
pub fn install(dir: &DataDir, vault: &Vault) -> Result<()> {
    if let Some(key) = load(dir, vault)? {
        crypt::install(key);
    }
    Ok(())
}

/// Like [`install`] for a command that has no vault yet: loads the master key only when the
/// data directory has a recording key.
pub fn install_for_reading(dir: &DataDir, overrides: Option<KeySource>) -> Result<()> {
    if !path(dir).exists() {
        return Ok(());
    }
    let vault = Vault::new(
        dir.load_master_key(overrides)
            .context("this gateway encrypts recordings: reading them needs its master key")?,
    );
    install(dir, &vault)
}
