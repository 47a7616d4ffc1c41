//! Optional encryption of recordings at rest.
//!
//! A finished recording's files can be encrypted in place ([`encrypt_in_place`]) with the
//! gateway's recording key, a random 256-bit key that the daemon keeps sealed by the vault. Every
//! reader of this crate (and of the RDP replay) opens files through [`open`], which reads a
//! plain file as it is and decrypts an encrypted one with a key of the process's key ring
//! ([`install`]); a reader without the key gets [`RecordingError::KeyMissing`], one naming the
//! key it needs.
//!
//! # Format
//!
//! ```text
//! magic  "GHRENC1\n"                      8 bytes
//! key id first 8 bytes of SHA-256 over the key's label and the key
//! nonce  19 random bytes (the STREAM nonce prefix)
//! frames XChaCha20-Poly1305 in the STREAM construction (big-endian 32-bit counter, last-frame
//!        flag): every frame but the last holds 64 KiB of plaintext; the last holds less (maybe
//!        nothing), so a file cut at a frame boundary is detected.
//! ```
//!
//! The associated data of every frame names the session and the file (`<session>/<name>`): a
//! file copied into another recording, or renamed, does not decrypt. Manifests hash the files
//! as they are on disk, so `audit verify` needs no key.

use crate::error::{RecordingError, Result, io_error};
use gatehouse_vault::stream::{FrameOpener, FrameSealer, NONCE_PREFIX as PREFIX, TAG};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// The first bytes of an encrypted recording file.
pub const MAGIC: &[u8; 8] = b"GHRENC1\n";
/// Plaintext bytes per frame.
const CHUNK: usize = 64 * 1024;
const KEY_ID: usize = 8;
const HEADER: usize = MAGIC.len() + KEY_ID + PREFIX;

/// A recording key. Redacted in `Debug`, zeroized on drop.
#[derive(Clone)]
pub struct RecordingKey {
    id: [u8; KEY_ID],
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for RecordingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordingKey(id={}, [redacted])", self.id())
    }
}

impl RecordingKey {
    /// The key with these bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"gatehouse recording key id\0");
        hash.update(bytes);
        let digest = hash.finalize();
        let mut id = [0u8; KEY_ID];
        id.copy_from_slice(&digest[..KEY_ID]);
        Self {
            id,
            key: Zeroizing::new(*bytes),
        }
    }

    /// The key's id in hex (what encrypted files name in their header).
    pub fn id(&self) -> String {
        hex(&self.id)
    }

    /// The key's bytes, for sealing it.
    pub fn expose(&self) -> &[u8; 32] {
        &self.key
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

static KEYRING: RwLock<Vec<Arc<RecordingKey>>> = RwLock::new(Vec::new());

/// Adds `key` to this process's key ring (a key already there is left as it is). Readers find
/// the key an encrypted file names there.
pub fn install(key: RecordingKey) {
    let mut ring = KEYRING
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !ring.iter().any(|k| k.id == key.id) {
        ring.push(Arc::new(key));
    }
}

fn find(id: &[u8; KEY_ID]) -> Option<Arc<RecordingKey>> {
    KEYRING
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .find(|k| &k.id == id)
        .cloned()
}

/// The associated data of the file at `path`: its session (the directory's name) and its name.
fn associated_data(path: &Path) -> Vec<u8> {
    let name = |p: Option<&std::ffi::OsStr>| {
        p.map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let session = name(path.parent().and_then(Path::file_name));
    let file = name(path.file_name());
    format!("gatehouse-recording-v1\0{session}/{file}").into_bytes()
}

/// Whether the file at `path` is an encrypted recording file.
pub fn is_encrypted(path: &Path) -> Result<bool> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let mut magic = [0u8; MAGIC.len()];
    let read = read_full(&mut file, &mut magic).map_err(io_error("read", path))?;
    Ok(read == MAGIC.len() && &magic == MAGIC)
}

/// Opens a recording file for reading: a plain one as it is, an encrypted one decrypted as it
/// is read (a frame at a time: memory does not grow with the file).
pub fn open(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut file = File::open(path).map_err(io_error("open", path))?;
    let mut header = [0u8; HEADER];
    let read = read_full(&mut file, &mut header).map_err(io_error("read", path))?;
    if read < MAGIC.len() || &header[..MAGIC.len()] != MAGIC {
        // Plain: read it again from the start.
        let file = File::open(path).map_err(io_error("open", path))?;
        return Ok(Box::new(file));
    }
    if read < HEADER {
        return Err(RecordingError::Undecryptable {
            path: path.to_owned(),
            reason: "its header is cut short".into(),
        });
    }
    let mut id = [0u8; KEY_ID];
    id.copy_from_slice(&header[MAGIC.len()..MAGIC.len() + KEY_ID]);
    let key = find(&id).ok_or_else(|| RecordingError::KeyMissing {
        path: path.to_owned(),
        key: hex(&id),
    })?;
    let mut prefix = [0u8; PREFIX];
    prefix.copy_from_slice(&header[MAGIC.len() + KEY_ID..]);
    let decryptor = FrameOpener::new(&key.key, &prefix);
    Ok(Box::new(Decrypting {
        file,
        decryptor: Some(decryptor),
        aad: associated_data(path),
        frame: Zeroizing::new(Vec::with_capacity(CHUNK + TAG)),
        plain: Zeroizing::new(Vec::new()),
        at: 0,
        path: path.display().to_string(),
    }))
}

/// Reads all of a recording file (decrypted when it is encrypted).
pub fn read_all(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open(path)?
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    Ok(bytes)
}

/// The plaintext size of a recording file.
pub fn plain_len(path: &Path) -> Result<u64> {
    let len = std::fs::metadata(path)
        .map_err(io_error("read", path))?
        .len();
    if !is_encrypted(path)? {
        return Ok(len);
    }
    let body = len.saturating_sub(HEADER as u64);
    let frame = (CHUNK + TAG) as u64;
    let full = body / frame;
    let last = body % frame;
    Ok(full * CHUNK as u64 + last.saturating_sub(TAG as u64))
}

/// Encrypts the file at `path` in place with `key` (written beside it, synced, then renamed over
/// it). Returns `false`, changing nothing, when it is encrypted already.
pub fn encrypt_in_place(path: &Path, key: &RecordingKey) -> Result<bool> {
    if is_encrypted(path)? {
        return Ok(false);
    }
    let mut partial_name = path.as_os_str().to_owned();
    partial_name.push(".enc.part");
    let partial = std::path::PathBuf::from(partial_name);
    // A partial file a crash left behind is written again.
    let _ = std::fs::remove_file(&partial);
    let result = encrypt_file(path, &partial, key);
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result?;
    std::fs::rename(&partial, path).map_err(io_error("rename", path))?;
    Ok(true)
}

fn encrypt_file(path: &Path, partial: &Path, key: &RecordingKey) -> Result<()> {
    use rand::RngCore;
    let mut source = File::open(path).map_err(io_error("open", path))?;
    let mut out = {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(partial).map_err(io_error("create", partial))?
    };
    let mut prefix = [0u8; PREFIX];
    rand::rngs::OsRng.fill_bytes(&mut prefix);
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&key.id);
    header.extend_from_slice(&prefix);
    out.write_all(&header).map_err(io_error("write", partial))?;
    let aad = associated_data(path);
    let mut encryptor = FrameSealer::new(&key.key, &prefix);
    let mut chunk = Zeroizing::new(vec![0u8; CHUNK]);
    let failed = |_| RecordingError::Undecryptable {
        path: path.to_owned(),
        reason: "encryption failed".into(),
    };
    loop {
        let read = read_full(&mut source, &mut chunk).map_err(io_error("read", path))?;
        if read < CHUNK {
            let frame = encryptor.seal_last(&aad, &chunk[..read]).map_err(failed)?;
            out.write_all(&frame).map_err(io_error("write", partial))?;
            break;
        }
        let frame = encryptor.seal_next(&aad, &chunk[..read]).map_err(failed)?;
        out.write_all(&frame).map_err(io_error("write", partial))?;
    }
    out.sync_all().map_err(io_error("sync", partial))
}

/// Encrypts every file of the finished recording in `dir` that a manifest covers (and a
/// rendered video) with `key`; files encrypted already are left as they are. Returns how many
/// of its files are encrypted.
pub fn encrypt_recording(dir: &Path, key: &RecordingKey) -> Result<usize> {
    let mut count = 0;
    let entries = std::fs::read_dir(dir).map_err(io_error("read", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("read", dir))?;
        let is_file = entry
            .file_type()
            .map_err(io_error("read", entry.path()))?
            .is_file();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if is_file && (crate::manifest::sealed_name(&name) || name == VIDEO) {
            encrypt_in_place(&entry.path(), key)?;
            count += 1;
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))?;
    Ok(count)
}

/// A rendered video kept beside a recording: as secret as the recording.
const VIDEO: &str = "video.webm";

/// Encrypts `target` with the key `source` is encrypted with, when it is (a rendering of an
/// encrypted recording is encrypted like it). `false` when `source` is plain.
pub fn encrypt_like(source: &Path, target: &Path) -> Result<bool> {
    let mut file = File::open(source).map_err(io_error("open", source))?;
    let mut header = [0u8; HEADER];
    let read = read_full(&mut file, &mut header).map_err(io_error("read", source))?;
    if read < HEADER || &header[..MAGIC.len()] != MAGIC {
        return Ok(false);
    }
    let mut id = [0u8; KEY_ID];
    id.copy_from_slice(&header[MAGIC.len()..MAGIC.len() + KEY_ID]);
    let key = find(&id).ok_or_else(|| RecordingError::KeyMissing {
        path: source.to_owned(),
        key: hex(&id),
    })?;
    encrypt_in_place(target, &key)
}

/// Reads until `buf` is full or the end of `source`; the count read.
fn read_full(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A decrypting reader over one encrypted file.
struct Decrypting {
    file: File,
    /// `None` once the last frame was read.
    decryptor: Option<FrameOpener>,
    aad: Vec<u8>,
    frame: Zeroizing<Vec<u8>>,
    plain: Zeroizing<Vec<u8>>,
    at: usize,
    path: String,
}

impl Decrypting {
    fn broken(&self, reason: &str) -> io::Error {
        // Not `InvalidData`: line readers take that for bad UTF-8.
        io::Error::other(format!(
            "`{}` does not decrypt: {reason} (changed, cut short or moved from another recording)",
            self.path
        ))
    }

    /// Reads and decrypts the next frame into `plain`; `false` at the end.
    fn next_frame(&mut self) -> io::Result<bool> {
        if self.decryptor.is_none() {
            return Ok(false);
        }
        self.frame.resize(CHUNK + TAG, 0);
        let read = read_full(&mut self.file, &mut self.frame)?;
        self.frame.truncate(read);
        let plain = if read == CHUNK + TAG {
            let Some(decryptor) = self.decryptor.as_mut() else {
                return Ok(false);
            };
            decryptor.open_next(&self.aad, &self.frame)
        } else if read < TAG {
            return Err(self.broken("its last frame is missing"));
        } else {
            let Some(decryptor) = self.decryptor.take() else {
                return Ok(false);
            };
            decryptor.open_last(&self.aad, &self.frame)
        };
        match plain {
            Ok(plain) => {
                self.plain = Zeroizing::new(plain);
                self.at = 0;
                Ok(true)
            }
            Err(_) => {
                self.decryptor = None;
                Err(self.broken("a frame fails authentication"))
            }
        }
    }
}

impl Read for Decrypting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at >= self.plain.len() {
            if !self.next_frame()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.plain.len() - self.at);
        buf[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> RecordingKey {
        RecordingKey::from_bytes(&[byte; 32])
    }

    fn round_trip(len: usize) {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s-1");
        std::fs::create_dir(&session).unwrap();
        let path = session.join("channel-0.cast");
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let k = key(1);
        install(key(1));
        assert!(encrypt_in_place(&path, &k).unwrap());
        assert!(!encrypt_in_place(&path, &k).unwrap(), "encrypted twice");
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..8], MAGIC);
        if len > 64 {
            assert!(
                !on_disk.windows(32).any(|w| w == &data[..32]),
                "plaintext on disk"
            );
        }
        assert_eq!(read_all(&path).unwrap(), data, "len {len}");
        assert_eq!(plain_len(&path).unwrap(), len as u64);
    }

    #[test]
    fn every_size_round_trips_around_frame_boundaries() {
        for len in [
            0,
            1,
            100,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK,
            3 * CHUNK + 17,
        ] {
            round_trip(len);
        }
    }

    #[test]
    fn plain_files_read_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n").unwrap();
        assert!(!is_encrypted(&path).unwrap());
        assert_eq!(read_all(&path).unwrap(), b"{\"a\":1}\n");
    }

    fn encrypted(dir: &Path, session: &str, name: &str, data: &[u8]) -> std::path::PathBuf {
        let session = dir.join(session);
        std::fs::create_dir_all(&session).unwrap();
        let path = session.join(name);
        std::fs::write(&path, data).unwrap();
        install(key(2));
        encrypt_in_place(&path, &key(2)).unwrap();
        path
    }

    #[test]
    fn edits_cuts_and_moves_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![b'x'; 2 * CHUNK + 5];
        let path = encrypted(dir.path(), "s-2", "channel-0.cast", &data);
        let good = std::fs::read(&path).unwrap();
        // One flipped byte in each frame and in the header.
        for at in [
            HEADER - 1,
            HEADER + 10,
            HEADER + CHUNK + TAG + 3,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            let err = read_all(&path).unwrap_err().to_string();
            assert!(err.contains("does not decrypt"), "byte {at}: {err}");
        }
        // Cut at a frame boundary (the last frame gone) and inside one.
        for len in [
            HEADER + CHUNK + TAG,
            HEADER + 2 * (CHUNK + TAG),
            good.len() - 3,
        ] {
            std::fs::write(&path, &good[..len]).unwrap();
            let err = read_all(&path).unwrap_err().to_string();
            assert!(err.contains("does not decrypt"), "cut at {len}: {err}");
        }
        // Moved to another session or renamed.
        for (session, name) in [("s-3", "channel-0.cast"), ("s-2", "channel-1.cast")] {
            let other = dir.path().join(session);
            std::fs::create_dir_all(&other).unwrap();
            std::fs::write(other.join(name), &good).unwrap();
            let err = read_all(&other.join(name)).unwrap_err().to_string();
            assert!(err.contains("does not decrypt"), "{session}/{name}: {err}");
        }
    }

    #[test]
    fn a_key_not_in_the_ring_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join("s-4");
        std::fs::create_dir(&session).unwrap();
        let path = session.join("rdp.pdus");
        std::fs::write(&path, b"pdus").unwrap();
        let stranger = key(9);
        encrypt_in_place(&path, &stranger).unwrap();
        match open(&path) {
            Err(RecordingError::KeyMissing { key, .. }) => assert_eq!(key, stranger.id()),
            Err(other) => panic!("expected KeyMissing, got {other}"),
            Ok(_) => panic!("opened without the key"),
        }
        let shown = format!("{stranger:?}");
        assert!(
            shown.contains("redacted") && !shown.contains("0909090909"),
            "{shown}"
        );
    }
}
