//! What the SFTP and SCP inspectors report, shared so the event log stores both the same way.

use serde::{Deserialize, Serialize};

/// Which way file content went, seen from the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the user to the target.
    Upload,
    /// From the target to the user.
    Download,
}

/// A file operation seen inside an SFTP or SCP channel. Paths are as the client sent them (lossily
/// decoded, at most [`MAX_PATH_BYTES`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FileEvent {
    /// A file was read or written.
    Transfer {
        /// Upload or download.
        direction: Direction,
        /// The file on the target.
        path: String,
        /// Content bytes seen.
        bytes: u64,
        /// `true` when the file ended normally (SFTP `CLOSE`; SCP content followed by an OK status);
        /// `false` when the channel ended first.
        complete: bool,
    },
    /// SFTP `REMOVE`.
    Remove {
        /// The file removed.
        path: String,
    },
    /// SFTP `RENAME` or `posix-rename@openssh.com`.
    Rename {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
    /// SFTP `MKDIR`.
    Mkdir {
        /// The directory created.
        path: String,
    },
    /// SFTP `RMDIR`.
    Rmdir {
        /// The directory removed.
        path: String,
    },
    /// SFTP `SETSTAT` or `FSETSTAT` (permissions, owner, times).
    SetStat {
        /// The file whose attributes changed.
        path: String,
    },
}

/// Longest path kept in an event; longer paths are cut at a character boundary and end in `…`.
pub const MAX_PATH_BYTES: usize = 4096;

/// Decodes a path from the wire, bounded to [`MAX_PATH_BYTES`].
pub(crate) fn path_from_bytes(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= MAX_PATH_BYTES {
        return text.into_owned();
    }
    let mut end = MAX_PATH_BYTES - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        let long = "\u{e9}".repeat(MAX_PATH_BYTES);
        let cases = [
            ("/tmp/x".to_owned(), "/tmp/x".to_owned()),
            ("a".repeat(MAX_PATH_BYTES), "a".repeat(MAX_PATH_BYTES)),
            (
                "a".repeat(MAX_PATH_BYTES + 1),
                format!("{}…", "a".repeat(MAX_PATH_BYTES - 3)),
            ),
            (
                long.clone(),
                format!("{}…", "\u{e9}".repeat((MAX_PATH_BYTES - 4) / 2)),
            ),
        ];
        for (input, expected) in cases {
            let path = path_from_bytes(input.as_bytes());
            assert!(path.len() <= MAX_PATH_BYTES);
            assert_eq!(path, expected);
        }
        assert_eq!(path_from_bytes(b"/tmp/\xff"), "/tmp/\u{fffd}");
    }

    #[test]
    fn events_serialize_with_an_op_tag() {
        let event = FileEvent::Transfer {
            direction: Direction::Upload,
            path: "/etc/motd".to_owned(),
            bytes: 12,
            complete: true,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"op":"transfer","direction":"upload","path":"/etc/motd","bytes":12,"complete":true}"#
        );
        assert_eq!(serde_json::from_str::<FileEvent>(&json).unwrap(), event);
    }
}
