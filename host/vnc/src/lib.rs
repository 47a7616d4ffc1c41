//! VNC (RFB 3.8, RFC 6143) for the gateway: the protocol core that the daemon wires to its
//! users, policies, vault and store. This crate knows none of those; it speaks RFB to both
//! sides, relays, and records.
//!
//! ```text
//! viewer ──RFB 3.8──► gateway: client_side::accept      VeNCrypt X509Plain/TLSPlain (rustls),
//!                              └─ PendingClient          user name + password returned to the caller
//!                     caller:  authenticate, authorize, fetch the vault password
//!                     gateway ──RFB──► target: target_side::connect   None or VNC Authentication,
//!                                              ServerInit, pixel format forced to PixelFormat::TARGET
//!                     caller:  PendingClient::allow (SecurityResult OK, ClientInit) or ::refuse(reason)
//! viewer ◄══════ relay::relay: ServerInit, then messages both ways, each to the Recorder ══════► target
//! ```
//!
//! Choices, so that every session can be recorded and decoded:
//! - Encodings: the viewer's SetEncodings is cut down to Hextile, CopyRect, Raw and the
//!   pseudo-encodings DesktopSize and Cursor ([`codec::encoding::RELAYED`]). ZRLE and Tight
//!   would save bandwidth but need zlib state (and JPEG for Tight) in the relay and the
//!   player; Hextile is the compact encoding every server has.
//! - Pixel format: the target always sends 32-bit little-endian true colour
//!   ([`PixelFormat::TARGET`]); the relay converts for viewers that ask for another true-colour
//!   format, so recordings have one format and no mid-session format change to track.
//! - Bounds: desktops up to [`limits::MAX_DIMENSION`] and [`limits::MAX_DESKTOP_PIXELS`], an
//!   update's rectangles inside the desktop and covering at most a few desktops' worth of
//!   pixels, cut text and names bounded; anything else is a typed [`ProtocolError`].
//!
//! Tests run real programs (Debian packages `xvfb`, `x11vnc`, `x11-xserver-utils`, `xterm`,
//! `xdotool`, `tigervnc-viewer`): x11vnc serving an Xvfb desktop is the target, TigerVNC's
//! viewer (VeNCrypt X509Plain, credentials from `VNC_USERNAME`/`VNC_PASSWORD`) and the tests'
//! own minimal viewer are the clients.
//!
//! Modules: [`codec`] (messages), [`auth`] (passwords, VNC Authentication), [`target_side`],
//! [`client_side`], [`relay`] (and the [`Recorder`] trait), [`framebuffer`] (RGBA screen and
//! [`Frame`]), [`recording`] (file format, writer, reader, replayer), [`keysym`] (keystrokes
//! to searchable text), [`error`].

pub mod auth;
pub mod client_side;
pub mod codec;
pub mod error;
pub mod framebuffer;
mod framing;
mod hextile;
pub mod keysym;
mod pixel;
pub mod recording;
pub mod relay;
pub mod target_side;

pub use auth::{Password, vnc_auth_response};
pub use client_side::{
    AcceptedClient, ClientSecurity, ClientSideOptions, ClientStream, PendingClient,
    PlainCredentials, accept,
};
pub use codec::{
    ClientMessage, FramebufferUpdate, Parsed, PixelFormat, ProtocolVersion, Rectangle,
    RectanglePayload, ServerContext, ServerInit, ServerMessage, limits,
};
pub use error::{ClientError, ProtocolError, RecordError, RecordingError, RelayError, TargetError};
pub use framebuffer::{Frame, Framebuffer};
pub use keysym::{KeyText, TypedText, keysym_text};
pub use recording::{
    BackgroundRecorder, Record, RecordKind, RecordingReader, RecordingWriter, Replayed, Replayer,
    replay,
};
pub use relay::{
    RecordedEvent, RecordedKind, Recorder, RelayOptions, RelayOutcome, RelaySummary, relay,
};
pub use target_side::{TargetConnection, TargetOptions, connect};
