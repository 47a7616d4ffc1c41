//! Gatehouse's RDP recordings (`rdp.pdus`, written by the relay of `gatehouse-rdp`) back to
//! something a person can watch and search: [`pdus`] reads and writes the recording format,
//! [`decode`] replays the target's graphics to frames with IronRDP's client `ActiveStage` and
//! says whether the recording decodes, [`events`] turns input and clipboard PDUs into searchable
//! events (cheap enough to run live on the gateway's data path), and [`export`] renders a
//! recording to WebM, MP4 or a PNG through the `ffmpeg` program, from `rdp.pdus` or from any
//! other [`FrameSource`] (the daemon feeds it VNC recordings). See docs/rdp.md.

pub mod decode;
pub mod events;
pub mod export;
mod keymap;
pub mod pdus;

pub use decode::{DecodeStats, Frame, ReplayError, Replayer, Verdict};
pub use events::{ClipboardFormat, Event, EventKind, InputTracker};
pub use export::{
    ExportError, ExportOptions, ExportSummary, FrameSource, PduSource, Segment, VideoClock, export,
    export_from,
};
pub use pdus::{Direction, Framing, MAGIC, Pdu, PduError, PduReader, PduWriter};
