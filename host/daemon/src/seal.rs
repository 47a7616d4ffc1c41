//! Sealing finished recordings: a manifest of every file with its SHA-256
//! (`gatehouse_recording::manifest`), signed with the gateway's recording key (Ed25519, made on
//! first use and sealed by the vault; the signature is an SSH signature, so `ssh-keygen -Y
//! verify` checks it with stock tools), and a `recording_sealed` audit event carrying the
//! manifest's hash, which links the recording into the audit trail's hash chain. `gatehouse
//! audit verify` then names a recording whose files, manifest or signature changed, or which
//! is gone. With a time stamping authority configured, `timestamp.rs` adds an RFC 3161 token
//! of each manifest (`manifest.json.tsr`).

use anyhow::{Context, Result, anyhow};
use gatehouse_audit::{Auditor, Entry};
use gatehouse_core::{AuditKind, SessionRecord};
use gatehouse_recording::manifest::{self, Manifest};
use gatehouse_store::{SESSIONS, SETTINGS, Store};
use gatehouse_vault::{SecretKind, Vault};
use russh::keys::ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const SIGNER_KEY: &str = "recording_signer";
const SIGNER_BINDING: &str = "recording:signer";
/// The SSH signature namespace of manifests (`ssh-keygen -Y verify -n gatehouse-recording`).
pub const NAMESPACE: &str = "gatehouse-recording";
/// A recording is sealed once none of its files changed for this long.
const QUIET: Duration = Duration::from_secs(2);
const SCAN_EVERY: Duration = Duration::from_secs(3);
/// Recordings sealed per scan at most (a first start with many old recordings catches up).
const PER_SCAN: usize = 200;

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSigner {
    /// The public key, as an OpenSSH line (readable without the master key).
    public: String,
    sealed_key: gatehouse_core::SealedSecret,
}

/// The recording key's public half, if one was made.
pub fn signer_public(store: &Store) -> Result<Option<PublicKey>> {
    let Some(value) = store.get(&SETTINGS, SIGNER_KEY)? else {
        return Ok(None);
    };
    let stored: StoredSigner =
        serde_json::from_value(value).context("the recording key record is damaged")?;
    Ok(Some(
        PublicKey::from_openssh(&stored.public).context("the recording key record is damaged")?,
    ))
}

/// The recording key, made (and sealed by the vault) on first use.
pub fn load_or_create_signer(store: &Store, vault: &Vault) -> Result<PrivateKey> {
    if let Some(value) = store.get(&SETTINGS, SIGNER_KEY)? {
        let stored: StoredSigner =
            serde_json::from_value(value).context("the recording key record is damaged")?;
        let pem = vault
            .open_text(SIGNER_BINDING, SecretKind::PrivateKey, &stored.sealed_key)
            .context("opening the recording key (is this the master key it was sealed with?)")?;
        return PrivateKey::from_openssh(pem.expose()).context("the recording key is damaged");
    }
    let key = crate::datadir::generate_host_key()?;
    let pem = key.to_openssh(LineEnding::LF)?;
    let sealed_key = vault.seal(SIGNER_BINDING, SecretKind::PrivateKey, pem.as_bytes())?;
    let public = key.public_key().to_openssh()?;
    let record = serde_json::to_value(StoredSigner { public, sealed_key })?;
    store.write(|txn| {
        // Two processes racing: the first key written wins.
        if txn.get(&SETTINGS, SIGNER_KEY)?.is_none() {
            txn.put(&SETTINGS, SIGNER_KEY, &record)?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let stored = signer_public(store)?.ok_or_else(|| anyhow!("the recording key was not saved"))?;
    if &stored == key.public_key() {
        tracing::info!(key = %stored.fingerprint(HashAlg::Sha256), "recording signing key created");
        Ok(key)
    } else {
        load_or_create_signer(store, vault)
    }
}

/// Seals finished recordings as they become complete, until the process stops.
pub async fn seal_loop(
    store: Arc<Store>,
    vault: Arc<Vault>,
    recordings: PathBuf,
    search: Option<Arc<gatehouse_search::SearchIndex>>,
    encrypt: Option<gatehouse_recording::crypt::RecordingKey>,
) {
    let signer = match load_or_create_signer(&store, &vault) {
        Ok(key) => key,
        Err(e) => {
            tracing::error!(error = %e, "recordings are not sealed: no recording key");
            return;
        }
    };
    let auditor = Auditor::new(store.clone());
    // RFC 3161 timestamps of sealed manifests, when a TSA is configured: beside sealing, never
    // in its way (a TSA that is down delays only the timestamps).
    let stamping = crate::timestamp::stamp_loop(store.clone(), auditor.clone(), recordings.clone());
    let sealing = seal_scans(store, auditor, signer, recordings, search, encrypt);
    tokio::join!(sealing, stamping);
}

/// Every few seconds, seals what is due.
async fn seal_scans(
    store: Arc<Store>,
    auditor: Auditor,
    signer: PrivateKey,
    recordings: PathBuf,
    search: Option<Arc<gatehouse_search::SearchIndex>>,
    encrypt: Option<gatehouse_recording::crypt::RecordingKey>,
) {
    let mut sealed = HashSet::new();
    loop {
        tokio::time::sleep(SCAN_EVERY).await;
        let (store, auditor, signer, recordings, search, encrypt, mut done) = (
            store.clone(),
            auditor.clone(),
            signer.clone(),
            recordings.clone(),
            search.clone(),
            encrypt.clone(),
            std::mem::take(&mut sealed),
        );
        let scanned = tokio::task::spawn_blocking(move || {
            let result = seal_due(
                &store,
                &auditor,
                &signer,
                &recordings,
                search.as_deref(),
                encrypt.as_ref(),
                &mut done,
            );
            (result, done)
        })
        .await;
        match scanned {
            Ok((result, done)) => {
                sealed = done;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "sealing recordings");
                }
            }
            Err(e) => tracing::error!(error = %e, "the sealing task failed"),
        }
    }
}

/// The newest modification time among the files of `dir`.
fn newest_change(dir: &Path) -> std::io::Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir)? {
        let modified = entry?.metadata()?.modified()?;
        newest = newest.max(modified);
    }
    Ok(newest)
}

/// Seals the recordings of ended sessions that are complete and not sealed yet.
fn seal_due(
    store: &Store,
    auditor: &Auditor,
    signer: &PrivateKey,
    recordings: &Path,
    search: Option<&gatehouse_search::SearchIndex>,
    encrypt: Option<&gatehouse_recording::crypt::RecordingKey>,
    sealed: &mut HashSet<String>,
) -> Result<()> {
    let entries = match std::fs::read_dir(recordings) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if sealed.contains(&id) || !entry.file_type()?.is_dir() {
            continue;
        }
        let dir = entry.path();
        if dir.join(manifest::MANIFEST).exists() {
            sealed.insert(id);
            continue;
        }
        let record: Option<SessionRecord> = store.get(&SESSIONS, &id)?;
        let Some(record) = record.filter(|r| r.ended.is_some()) else {
            continue;
        };
        // A node's recording is sealed once the node says every file arrived whole.
        if record.node.is_some()
            && store
                .get(&SETTINGS, &gatehouse_cluster::shipping::delivered_key(&id))?
                .is_none()
        {
            continue;
        }
        if !manifest::is_finished(&dir) {
            continue;
        }
        let quiet = newest_change(&dir)?
            .elapsed()
            .map(|age| age >= QUIET)
            .unwrap_or(false);
        if !quiet {
            continue;
        }
        // Encrypted before the manifest: it hashes the files as they stay on disk.
        let encrypted = match encrypt {
            Some(key) => gatehouse_recording::crypt::encrypt_recording(&dir, key)
                .with_context(|| format!("encrypting the recording of session {id}"))?,
            None => 0,
        };
        seal_one(
            auditor,
            signer,
            &dir,
            &record,
            encrypt.map(|k| (k.id(), encrypted)),
        )?;
        // Complete now: searchable from here on.
        if let Some(index) = search {
            crate::search::index_sealed(index, recordings, &record);
        }
        sealed.insert(id);
        count += 1;
        if count >= PER_SCAN {
            break;
        }
    }
    Ok(())
}

/// Writes the manifest and its signature, then the audit event with the manifest's hash.
fn seal_one(
    auditor: &Auditor,
    signer: &PrivateKey,
    dir: &Path,
    record: &SessionRecord,
    encrypted: Option<(String, usize)>,
) -> Result<()> {
    let manifest = Manifest::build(dir, &record.id)?;
    let mut bytes = serde_json::to_vec_pretty(&manifest)?;
    bytes.push(b'\n');
    let signature = signer
        .sign(NAMESPACE, HashAlg::Sha512, &bytes)
        .context("signing a recording manifest")?
        .to_pem(LineEnding::LF)?;
    let partial = dir.join(format!("{}.part", manifest::SIGNATURE));
    std::fs::write(&partial, signature.as_bytes())?;
    std::fs::rename(&partial, dir.join(manifest::SIGNATURE))?;
    // The manifest lands last: its presence means the recording is sealed.
    let partial = dir.join(format!("{}.part", manifest::MANIFEST));
    std::fs::write(&partial, &bytes)?;
    std::fs::rename(&partial, dir.join(manifest::MANIFEST))?;
    let mut entry = Entry::new(
        AuditKind::RecordingSealed,
        format!(
            "recording of session {} sealed: {} files",
            record.id,
            manifest.files.len()
        ),
    )
    .session(record.id.clone())
    .user(record.user.clone())
    .field("manifest_sha256", manifest::sha256_hex(&bytes))
    .field("files", manifest.files.len());
    if let Some((key, files)) = encrypted {
        entry = entry
            .field("encrypted_with", key)
            .field("encrypted_files", files);
    }
    if let Some(node) = &record.node {
        entry = entry.field("node", node.clone());
    }
    // Several control nodes on one store each keep their own recordings: say whose disk.
    if let Some(gateway) = gatehouse_core::gateway::gateway_id() {
        entry = entry.field("gateway", gateway);
    }
    auditor.record(entry)?;
    Ok(())
}

/// What `audit verify` finds wrong with one sealed recording.
pub fn check_sealed(
    recordings: &Path,
    session: &str,
    manifest_sha256: &str,
    key: Option<&PublicKey>,
) -> Vec<String> {
    let dir = recordings.join(session);
    if !dir.is_dir() {
        return vec!["the recording was removed".into()];
    }
    let bytes = match std::fs::read(dir.join(manifest::MANIFEST)) {
        Ok(bytes) => bytes,
        Err(_) => return vec!["its manifest was removed".into()],
    };
    let mut problems = Vec::new();
    if manifest::sha256_hex(&bytes) != manifest_sha256 {
        problems.push("its manifest was changed (it is not the one the audit trail sealed)".into());
    }
    match (key, std::fs::read_to_string(dir.join(manifest::SIGNATURE))) {
        (None, _) => problems.push("no recording key to check its signature with".into()),
        (Some(_), Err(_)) => problems.push("its signature was removed".into()),
        (Some(key), Ok(pem)) => {
            let valid = SshSig::from_pem(pem.as_bytes())
                .ok()
                .is_some_and(|sig| key.verify(NAMESPACE, &bytes, &sig).is_ok());
            if !valid {
                problems.push("its manifest's signature does not verify".into());
            }
        }
    }
    match serde_json::from_slice::<Manifest>(&bytes) {
        Ok(sealed) => match sealed.check(&dir) {
            Ok(found) => problems.extend(
                found
                    .iter()
                    // The manifest's RFC 3161 token comes after it (timestamp.rs checks it).
                    .filter(|p| {
                        **p != manifest::FileProblem::Added {
                            name: crate::timestamp::TIMESTAMP.into(),
                        }
                    })
                    .map(ToString::to_string),
            ),
            Err(e) => problems.push(format!("cannot read its files: {e}")),
        },
        Err(e) => problems.push(format!("its manifest is unreadable: {e}")),
    }
    problems
}
