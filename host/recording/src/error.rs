//! The one error type of the crate, so callers match on what went wrong rather than on strings.

use std::io;
use std::path::PathBuf;

/// What can go wrong while recording, reading or playing a session.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The session id cannot be used as a directory name.
    #[error(
        "invalid session id `{0}`: use 1 to 128 characters from letters, digits, `-`, `_` and `.`, not starting with `.`"
    )]
    InvalidSessionId(String),

    /// A recording directory for this session id exists already; recordings are never overwritten.
    #[error("a recording already exists at `{}`", .0.display())]
    SessionExists(PathBuf),

    /// No recording directory exists for this session id.
    #[error("no recording at `{}`", .0.display())]
    SessionNotFound(PathBuf),

    /// This channel number already has a cast file in this session.
    #[error("channel {0} is already recorded in this session")]
    ChannelExists(u32),

    /// This channel number has no cast file in this session.
    #[error("channel {0} is not recorded in this session")]
    ChannelNotFound(u32),

    /// A file system operation failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create" or "read".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// A recording file does not have the expected format.
    #[error("`{}` line {line}: {reason}", path.display())]
    Malformed {
        /// The file that was read.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with that line.
        reason: String,
    },

    /// The file is encrypted with a recording key this process does not hold.
    #[error(
        "`{}` is encrypted with recording key {key}, which this process does not have (run it with the gateway's data directory and master key)",
        path.display()
    )]
    KeyMissing {
        /// The file that was opened.
        path: PathBuf,
        /// The id of the key it needs.
        key: String,
    },

    /// An encrypted file cannot be decrypted or encrypted.
    #[error("`{}` does not decrypt: {reason}", path.display())]
    Undecryptable {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// Playback speed must be a finite number greater than zero.
    #[error("playback speed must be a number greater than zero, got `{0}`")]
    InvalidSpeed(f64),

    /// Writing to the playback or export destination failed.
    #[error("cannot write playback output: {0}")]
    Output(#[source] io::Error),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = RecordingError> = std::result::Result<T, E>;

/// Builds a closure that wraps an [`io::Error`] with the action and path it concerned.
pub(crate) fn io_error(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> RecordingError {
    let path = path.into();
    move |source| RecordingError::Io {
        action,
        path,
        source,
    }
}
