//! A finished recording's manifest: every file of the session's recording directory with its
//! size and SHA-256, written once the recording is complete (the gateway signs it and links it
//! into the audit trail's hash chain). [`Manifest::check`] names each file changed, missing or
//! added since.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// The manifest's file in the session's recording directory.
pub const MANIFEST: &str = "manifest.json";
/// Its detached signature (an SSH signature: `ssh-keygen -Y verify` checks it).
pub const SIGNATURE: &str = "manifest.json.sig";
/// Files made from a recording after it ended (the player's renderings): not sealed, not
/// checked.
pub const DERIVED: &[&str] = &["video.webm", "video.clock.json"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub session: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// A difference between a recording directory and its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum FileProblem {
    Changed { name: String },
    Missing { name: String },
    Added { name: String },
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileProblem::Changed { name } => write!(f, "`{name}` was changed"),
            FileProblem::Missing { name } => write!(f, "`{name}` was removed"),
            FileProblem::Added { name } => write!(f, "`{name}` was added"),
        }
    }
}

/// Whether a file of a recording directory belongs in its manifest.
pub(crate) fn sealed_name(name: &str) -> bool {
    name != MANIFEST && name != SIGNATURE && !DERIVED.contains(&name) && !name.contains(".part")
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file_hash(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hash.update(&buf[..n]);
    }
    let hex = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}

/// The regular files of `dir` that a manifest covers, sorted by name.
fn sealed_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(name) = entry.file_name().to_str()
            && sealed_name(name)
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether the recording in `dir` is finished: its event log ends with the session's close
/// (written last, after every channel and any check that follows the session). An encrypted
/// log is finished: only finished recordings are encrypted.
pub fn is_finished(dir: &Path) -> bool {
    use std::io::{Seek, SeekFrom};
    if crate::crypt::is_encrypted(&dir.join(crate::session::EVENTS_FILE)).unwrap_or(false) {
        return true;
    }
    let Ok(mut file) = std::fs::File::open(dir.join(crate::session::EVENTS_FILE)) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let from = len.saturating_sub(4096);
    if file.seek(SeekFrom::Start(from)).is_err() {
        return false;
    }
    let mut tail = Vec::new();
    if file.read_to_end(&mut tail).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&tail);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .is_some_and(|v| v["type"] == "session_closed")
}

impl Manifest {
    /// The manifest of the recording in `dir` as it is now.
    pub fn build(dir: &Path, session: &str) -> std::io::Result<Manifest> {
        let mut files = Vec::new();
        for name in sealed_files(dir)? {
            let (size, sha256) = file_hash(&dir.join(&name))?;
            files.push(FileEntry { name, size, sha256 });
        }
        Ok(Manifest {
            version: 1,
            session: session.to_string(),
            files,
        })
    }

    /// What differs between `dir` and this manifest (empty: intact).
    pub fn check(&self, dir: &Path) -> std::io::Result<Vec<FileProblem>> {
        let mut problems = Vec::new();
        let present = sealed_files(dir)?;
        for entry in &self.files {
            if !present.contains(&entry.name) {
                problems.push(FileProblem::Missing {
                    name: entry.name.clone(),
                });
                continue;
            }
            let (size, sha256) = file_hash(&dir.join(&entry.name))?;
            if size != entry.size || sha256 != entry.sha256 {
                problems.push(FileProblem::Changed {
                    name: entry.name.clone(),
                });
            }
        }
        for name in present {
            if !self.files.iter().any(|f| f.name == name) {
                problems.push(FileProblem::Added { name });
            }
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_to_a_recording_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("channel-0.cast"),
            b"{\"version\":2}\n[0.1,\"o\",\"hi\"]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("events.jsonl"), b"{}\n").unwrap();
        std::fs::write(dir.path().join("video.webm"), b"derived").unwrap();
        let manifest = Manifest::build(dir.path(), "s-1").unwrap();
        assert_eq!(manifest.files.len(), 2, "{manifest:?}");
        assert!(manifest.check(dir.path()).unwrap().is_empty());
        // Derived files come and go without a problem.
        std::fs::remove_file(dir.path().join("video.webm")).unwrap();
        assert!(manifest.check(dir.path()).unwrap().is_empty());
        std::fs::write(
            dir.path().join("channel-0.cast"),
            b"{\"version\":2}\n[0.1,\"o\",\"hI\"]\n",
        )
        .unwrap();
        std::fs::remove_file(dir.path().join("events.jsonl")).unwrap();
        std::fs::write(dir.path().join("channel-1.cast"), b"x").unwrap();
        assert_eq!(
            manifest.check(dir.path()).unwrap(),
            [
                FileProblem::Changed {
                    name: "channel-0.cast".into()
                },
                FileProblem::Missing {
                    name: "events.jsonl".into()
                },
                FileProblem::Added {
                    name: "channel-1.cast".into()
                },
            ]
        );
    }
}
