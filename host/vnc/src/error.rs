//! The crate's typed errors: what was wrong with the peer's bytes ([`ProtocolError`]), why a
//! handshake with the target or the user failed ([`TargetError`], [`ClientError`]), why a relay
//! ended ([`RelayError`]) and why a recording could not be read ([`RecordingError`]).
//!
//! Messages are for people: lowercase, no final period, the peer's text quoted in backticks.

use std::io;

/// Bytes that are not RFB as this crate speaks it. Every parser returns this instead of
/// panicking or allocating without bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("not an rfb protocol version: `{0}`")]
    BadVersion(String),
    #[error("unsupported rfb protocol version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("unknown {from} message type {kind}")]
    UnknownMessageType { from: &'static str, kind: u8 },
    #[error("the {from} used encoding {encoding}, which was not negotiated")]
    UnsupportedEncoding { from: &'static str, encoding: i32 },
    #[error(
        "rectangle {width}x{height} at ({x}, {y}) is outside the {fb_width}x{fb_height} desktop"
    )]
    RectangleOutOfBounds {
        x: u16,
        y: u16,
        width: u16,
        height: u16,
        fb_width: u16,
        fb_height: u16,
    },
    #[error("desktop size {width}x{height} is larger than the {max_pixels}-pixel limit")]
    DesktopTooLarge {
        width: u16,
        height: u16,
        max_pixels: u64,
    },
    #[error("framebuffer update covers {pixels} pixels, more than the {limit} allowed")]
    UpdateTooLarge { pixels: u64, limit: u64 },
    #[error("{what} of {length} bytes is longer than the {limit} allowed")]
    TooLong {
        what: &'static str,
        length: u64,
        limit: u64,
    },
    #[error("unusable pixel format: {0}")]
    BadPixelFormat(String),
    #[error("malformed hextile data: {0}")]
    BadHextile(&'static str),
    #[error("{what} is not valid utf-8")]
    NotUtf8 { what: &'static str },
    #[error("{0}")]
    Unexpected(String),
}

/// Why the gateway could not open the VNC session on the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("i/o with the target: {0}")]
    Io(#[from] io::Error),
    #[error("the target sent malformed data: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the target refused the connection: `{reason}`")]
    Refused { reason: String },
    #[error("the target offers no security type the gateway supports (offered: {offered:?})")]
    NoSupportedSecurity { offered: Vec<u8> },
    #[error("the target requires a vnc password and none was given")]
    PasswordRequired,
    /// The target rejected the password. `reason` is the target's text (RFB 3.8 only).
    #[error("the target rejected the vnc password{}", reason_suffix(.reason))]
    AuthenticationFailed { reason: Option<String> },
}

fn reason_suffix(reason: &Option<String>) -> String {
    match reason {
        Some(reason) if !reason.is_empty() => format!(": `{reason}`"),
        _ => String::new(),
    }
}

/// Why the user's VNC client could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o with the client: {0}")]
    Io(#[from] io::Error),
    #[error("the client sent malformed data: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("tls with the client failed: {0}")]
    Tls(io::Error),
    #[error("the client chose security type {0}, which was not offered")]
    SecurityNotOffered(u8),
    #[error("the client asked for vencrypt version {major}.{minor}; only 0.2 is supported")]
    VeNCryptVersion { major: u8, minor: u8 },
    #[error("the client chose vencrypt sub-type {0}, which was not offered")]
    SubtypeNotOffered(u32),
    #[error("the client speaks rfb 3.3, which cannot carry the gateway's login")]
    ClientTooOld,
    #[error("no security type is enabled (configure vencrypt or allow none)")]
    NothingToOffer,
}

/// Why a relay ended other than by a clean close. `Display` is for the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("malformed traffic from the {side}: {error}")]
    Protocol {
        side: &'static str,
        error: ProtocolError,
    },
    #[error("i/o with the {side}: {reason}")]
    Io { side: &'static str, reason: String },
    #[error("recording failed: {0}")]
    Recording(#[from] RecordError),
}

/// Why the recorder could not keep an event; the session ends (recording is not optional).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// Why a recording could not be read or replayed.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("not a gatehouse vnc recording (bad magic)")]
    BadMagic,
    #[error("unsupported vnc recording version {0}")]
    UnsupportedVersion(u16),
    #[error("the recording is truncated")]
    Truncated,
    #[error("record of {length} bytes is longer than the {limit} allowed")]
    RecordTooLarge { length: u64, limit: u64 },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("the recording does not start with the session's server init")]
    MissingStart,
    #[error("corrupt record: {0}")]
    Corrupt(#[from] ProtocolError),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}
