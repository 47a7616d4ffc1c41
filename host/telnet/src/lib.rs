//! Telnet for the gateway: the protocol core that lets a user's Telnet client reach a Telnet
//! target through Gatehouse, logged in with a credential the user never sees.
//!
//! The gateway *terminates* Telnet on both legs. Towards the user it is a Telnet server
//! ([`ClientSide`]); towards the target it is a Telnet client ([`TargetSide`]); between them
//! [`relay`] forwards data, never Telnet commands, so each leg negotiates its own options and a
//! peer can only ever talk to the gateway's state machines. This crate knows nothing of policies,
//! the vault or the store: the daemon decides who may go where and hands in the credential.
//!
//! # The path of a session
//! 1. [`ClientSide::accept`] offers `WILL ECHO`, `WILL SGA`, `DO TERMINAL-TYPE`, `DO NAWS` and
//!    waits (bounded by [`ClientConfig::negotiation_timeout`]) to learn the [`Terminal`]: the
//!    terminal type (RFC 1091) and window size (RFC 1073). A client that speaks no Telnet at all
//!    simply gets defaults after the timeout.
//! 2. The daemon asks in-band with [`ClientSide::ask`] (echoed, e.g. `login: ` for
//!    `alice@root@db1`, returned raw) and [`ClientSide::ask_secret`] (not echoed, returned as a
//!    [`SecretString`]), and refuses with [`ClientSide::say`]. The line editor takes backspace
//!    and DEL, Ctrl-U and `IAC EC`/`IAC EL`; CR LF, CR NUL, CR and LF all end a line; Ctrl-C,
//!    Ctrl-D and `IAC IP` abort; answers and type-ahead are bounded.
//! 3. [`TargetSide::connect`] offers the user's terminal type and window size to the target
//!    and [`TargetSide::login`] answers its prompts with the vault's credential, by the rules of
//!    [`LoginScript`]. Nothing the target writes before the password is sent reaches the user
//!    or the recorder (it is the gateway's conversation, it holds the user name and banners
//!    meant for the gateway); what it writes after the password is the start of the user's
//!    session and is shown and recorded, with any echo of the password cut out.
//! 4. [`relay`] copies data both ways through bounded buffers (reading one side stops while the
//!    buffer towards the other is full), mirrors the target's ECHO and SGA towards the client,
//!    translates the client's NAWS changes to the target, forwards the client's interrupt-like
//!    commands (`IP`, `BRK`, `AO`, `AYT`, `EC`, `EL`), and reports every output, input and resize
//!    to a [`Recorder`]. It ends when either side closes and returns the byte counts.
//!
//! # Protocol rules
//! - The decoder ([`codec::Decoder`]) is streaming and bounded: a subnegotiation longer than
//!   its limit, or a stream ending inside a command, is a typed [`ProtocolError`].
//! - Options follow RFC 1143's Q method ([`options`]): we never answer a command that does not
//!   change a state, so an option loop with a hostile or confused peer is impossible, and a peer
//!   flipping an option forever gets at most one 3-byte answer per 3-byte command.
//! - Supported: ECHO (1), SUPPRESS-GO-AHEAD (3), TERMINAL-TYPE (24), NAWS (31). Everything else
//!   (BINARY, LINEMODE, NEW-ENVIRON, AUTHENTICATION, ENCRYPT, TSPEED, ...) is refused once with
//!   `DONT`/`WONT` and ignored after. Without BINARY both legs are NVT streams, so data (CR LF,
//!   CR NUL) is relayed unchanged; only `IAC` is escaped again.
//!
//! # Secrets
//! The password typed by the user and the one injected into the target live in
//! [`SecretString`] (redacted `Debug`, wiped on drop); the crate's own buffers that held them
//! (the line editor, the type-ahead, the read buffers of the login phases, the password line
//! written) are wiped after use. This is best effort: copies left by a vector that grew, and
//! those the kernel keeps in socket buffers, are out of reach. `ClientSide`'s `Debug` shows the
//! type-ahead's length only.
//!
//! # Limits worth knowing
//! - A client that refuses `WILL ECHO` echoes locally: its user sees a secret answer on their
//!   own screen ([`ClientSide::gateway_echoes`] tells), and during the relay sees input twice
//!   if the target echoes too.
//! - The quiet-period rule of [`LoginScript`] cannot tell a slow failure message from a banner
//!   followed by silence; give assets whose failure message is slow a `success` pattern.
//! - Urgent data (`SYNCH`, `IAC DM`) is not forwarded; `IAC IP` is, which is what a user's
//!   Ctrl-C becomes when the client is in `localchars` mode.
//!
//! # Tests
//! `tests/` runs the real thing: Debian's `in.telnetd` (package `inetutils-telnetd`, started per
//! connection as inetd would, with `--exec-login` pointing at a login script so no system user
//! is needed) as the target, and the stock `telnet` (package `inetutils-telnet`, under a pty
//! made by `script` from `bsdutils`) as the user's client.

mod client_side;
pub mod codec;
mod error;
pub mod options;
mod peer;
mod relay;
mod target_side;

pub use client_side::{ClientConfig, ClientSide};
pub use error::{
    ClientError, LoginStage, ProtocolError, RecordError, RelayError, Side, TargetError,
};
pub use gatehouse_core::SecretString;
pub use regex::Regex;
pub use relay::{Recorder, RelayConfig, RelaySummary, relay};
pub use target_side::{Credential, LoggedIn, LoginScript, Pattern, TargetSide};

/// A terminal's size in character cells, as NAWS carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSize {
    pub columns: u16,
    pub rows: u16,
}

/// What the client told us about its terminal; handed to the target leg.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Terminal {
    /// The terminal type name (RFC 1091), as the client sent it (often upper case).
    pub terminal_type: Option<String>,
    pub window: Option<WindowSize>,
}
