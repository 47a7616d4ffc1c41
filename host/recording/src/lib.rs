//! Session recording for the gateway: terminal channels as asciicast v2 files, everything else
//! (commands, subsystems, file transfers, exits) as a JSON-lines event log, and the readers that
//! play, search and export them.
//!
//! # Layout on disk
//!
//! ```text
//! <root>/<session id>/
//!     events.jsonl        one EventRecord per line: {"time":1.25,"channel":0,"type":"exec",...}
//!     channel-0.cast      asciicast v2: header line, then [time, "o"|"i"|"r"|"m", data] lines
//!     channel-1.cast
//! ```
//!
//! `time` in `events.jsonl` counts seconds from the session's creation; times in a cast file count
//! from that channel's start, which the log records as a `recording_started` event.
//!
//! # Recording (the SSH relay)
//!
//! ```no_run
//! # fn main() -> Result<(), gatehouse_recording::RecordingError> {
//! use gatehouse_recording::{CastHeader, FileProtocol, RecordingEvent, SessionRecording, sftp};
//! # let root = std::path::Path::new("/var/lib/gatehouse/recordings");
//! let session = SessionRecording::create(root, "0190c2e8-8a4b-7d2e-9f00-1234567890ab")?;
//! session.log(Some(0), RecordingEvent::Shell)?;
//! let mut terminal = session.channel(0, CastHeader::new(80, 24).with_term("xterm-256color"))?;
//! terminal.output(b"$ ")?;          // target -> user
//! terminal.input(b"ls\r")?;         // user -> target
//! terminal.resize(120, 40)?;
//! let totals = terminal.finish()?;  // flush + fsync
//!
//! // An sftp subsystem channel: feed both directions, log what the inspector saw.
//! let mut inspector = sftp::SftpInspector::new();
//! # let (from_client, from_server): (&[u8], &[u8]) = (b"", b"");
//! inspector.client_to_server(from_client);
//! inspector.server_to_client(from_server);
//! for event in inspector.take_events().into_iter().chain(inspector.finish()) {
//!     session.log(Some(1), RecordingEvent::File { protocol: FileProtocol::Sftp, event })?;
//! }
//! session.log(Some(0), RecordingEvent::ChannelClosed { exit_status: Some(0), exit_signal: None })?;
//! session.finish()?;
//! # let _ = totals; Ok(()) }
//! ```
//!
//! An exec channel whose command [`scp::is_scp_command`] recognises gets an [`scp::ScpInspector`]
//! the same way. OpenSSH 9 `scp` uses the sftp subsystem unless given `-O`, so the sftp inspector
//! covers it.
//!
//! # Reading
//!
//! [`RecordedSession`] lists channels and reads the event log; [`read_cast`], [`play`], [`text`]
//! and [`export`] work on one cast file; [`playback`] writes one for a browser player (idle
//! pauses shortened, keystrokes left out) and [`output_contains`] searches what it showed.
//!
//! # Guarantees
//!
//! - Memory does not grow with session length: a channel recorder holds a 64 KiB write buffer and
//!   one chunk of text; the inspectors skip file contents by count and follow at most
//!   [`sftp::MAX_TRACKED`] requests.
//! - A crash loses about a second of terminal data at most: buffers are flushed on the first write
//!   after a second has passed (and by [`ChannelRecorder::flush`]); readers drop a last line cut
//!   short.
//! - UTF-8 split across chunks is reassembled; invalid bytes become U+FFFD.
//! - The inspectors never fail the relay: on a stream they do not understand they stop reporting.
//! - Nothing here logs terminal or file bytes through `tracing`.

mod ansi;
mod cast;
mod error;
mod playback;
mod player;
mod recorder;
mod session;
mod transfer;
mod utf8;

pub mod crypt;
pub mod manifest;
pub mod scp;
pub mod sftp;

pub use ansi::{AnsiStripper, strip as strip_escapes};
pub use cast::{CastEnv, CastEvent, CastHeader, EventKind};
pub use error::{RecordingError, Result};
pub use playback::{IdleCuts, idle_cuts, output_contains, playback};
pub use player::{CastReader, CastRecording, export, play, read_cast, text};
pub use recorder::{ChannelRecorder, ChannelTotals, FLUSH_INTERVAL, WRITE_BUFFER_BYTES};
pub use session::{
    EVENTS_FILE, EventRecord, FileProtocol, RecordedSession, RecordingEvent, SessionRecording,
    channel_file_name,
};
pub use transfer::{Direction, FileEvent, MAX_PATH_BYTES};
pub use utf8::Utf8Decoder;
