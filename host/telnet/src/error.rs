//! The typed errors of the crate: one enum per stage a caller can act on differently (the
//! protocol itself, the client's login conversation, the target's login, the relay).
//!
//! Messages are lowercase, say what the peer did, and never carry a secret or a transcript.

use std::time::Duration;

/// The peer broke the Telnet protocol in a way we refuse to absorb.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A subnegotiation (`IAC SB ... IAC SE`) grew past the bound before its end.
    #[error("subnegotiation of option {option} longer than {limit} bytes")]
    SubnegotiationTooLong { option: u8, limit: usize },
    /// The stream ended in the middle of a command (`IAC`, `IAC WILL`, or an open `IAC SB`).
    #[error("the stream ended inside a telnet command")]
    Truncated,
}

/// Why the conversation with the user on the client leg ended without an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the client closed the connection")]
    Closed,
    /// The user typed Ctrl-C or Ctrl-D, or the client sent `IAC IP`.
    #[error("the user aborted the login")]
    Aborted,
    #[error("the answer is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("the answer is not valid UTF-8")]
    NotUtf8,
    #[error("the client typed ahead more than {limit} bytes")]
    TooMuchInput { limit: usize },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("telnet protocol error from the client: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("i/o with the client: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the injected login on the target leg was when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStage {
    /// Waiting for the login (user name) prompt.
    UserPrompt,
    /// The user name was sent; waiting for the password prompt.
    PasswordPrompt,
    /// The password was sent; waiting for the shell prompt, a failure message or quiet.
    Verdict,
}

impl std::fmt::Display for LoginStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoginStage::UserPrompt => "waiting for the login prompt",
            LoginStage::PasswordPrompt => "waiting for the password prompt",
            LoginStage::Verdict => "waiting for the login result",
        })
    }
}

/// Why the gateway is not logged in to the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target said no: the failure pattern matched, or it asked for the login again.
    /// `message` is the target's line that matched (it never contains the password).
    #[error("the target refused the login: `{message}`")]
    Refused { message: String },
    #[error("the target closed the connection while {stage}")]
    Closed { stage: LoginStage },
    #[error("the target did not answer in time while {stage}")]
    Timeout { stage: LoginStage },
    /// A user name with a control character would inject more than one line.
    #[error("the target user name has a control character")]
    BadUsername,
    #[error("the target's login output is longer than {limit} bytes without a prompt")]
    TooMuchOutput { limit: usize },
    #[error("telnet protocol error from the target: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("i/o with the target: {0}")]
    Io(#[from] std::io::Error),
}

/// The recorder could not keep an event; the relay ends (recording is not optional).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);

/// Which leg of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Target,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Target => "target",
        })
    }
}

/// Why a relay ended abnormally (a close by either side is a normal end, not an error).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("recording failed: {0}")]
    Recording(#[from] RecordError),
    #[error("telnet protocol error from the {side}: {error}")]
    Protocol { side: Side, error: ProtocolError },
    #[error("i/o with the {side}: {error}")]
    Io { side: Side, error: std::io::Error },
    #[error("no traffic for {0:?}")]
    Idle(Duration),
}
