//! The VNC recording format, its writer (a [`Recorder`]) and reader, and the [`Replayer`]
//! that turns a recording back into frames.
//!
//! ```text
//! file   = magic "GHVNCREC" (8 bytes), version u16 BE (1), flags u16 BE (0), record*
//! record = kind u8, at u64 BE (microseconds since the relay started), length u32 BE,
//!          payload (length bytes)
//! kind   = 0 start: the target's ServerInit, pixel format as set by the gateway
//!          1 from the target: one RFB server message, in that pixel format
//!          2 from the client: one RFB client message, as forwarded to the target
//! ```
//!
//! Payloads are the RFB messages' own bytes, so the reader re-uses the codec (and its
//! limits): a record must hold exactly one whole message. A record longer than
//! [`MAX_RECORD`] is refused before anything is read, and a record's bytes are read as they
//! come (a corrupt length in a short file is [`RecordingError::Truncated`], not an
//! allocation).

use crate::codec::{ClientMessage, Parsed, ServerContext, ServerInit, ServerMessage, limits};
use crate::error::{ProtocolError, RecordError, RecordingError};
use crate::framebuffer::{Frame, Framebuffer};
use crate::relay::{RecordedEvent, RecordedKind, Recorder};
use std::io::{self, Read, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAGIC: [u8; 8] = *b"GHVNCREC";
pub const VERSION: u16 = 1;
/// The largest record: a framebuffer update at the largest desktop and area budget, at 32
/// bits per pixel, with room for its rectangle headers.
pub const MAX_RECORD: u32 =
    ((limits::MAX_DESKTOP_PIXELS * limits::UPDATE_AREA_FACTOR + limits::UPDATE_AREA_SLACK) * 4
        + 65_536 * 16
        + 16) as u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Start,
    FromTarget,
    FromClient,
}

impl RecordKind {
    fn byte(self) -> u8 {
        match self {
            RecordKind::Start => 0,
            RecordKind::FromTarget => 1,
            RecordKind::FromClient => 2,
        }
    }

    fn from_byte(byte: u8) -> Result<RecordKind, RecordingError> {
        match byte {
            0 => Ok(RecordKind::Start),
            1 => Ok(RecordKind::FromTarget),
            2 => Ok(RecordKind::FromClient),
            other => Err(RecordingError::UnknownKind(other)),
        }
    }
}

/// One record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: RecordKind,
    pub at: Duration,
    pub payload: Vec<u8>,
}

/// Writes a recording; a [`Recorder`] for the relay. Give it a buffered writer: it is flushed
/// after every message from the target, so that a reader following the file (the gateway's
/// live view) sees each screen update as it comes (one write per update: the viewer's requests
/// pace them), and after a viewer's message when the last flush is [`FLUSH_EVERY`] old.
pub struct RecordingWriter<W: Write + Send> {
    writer: Mutex<(W, Instant)>,
}

/// How often a [`RecordingWriter`] flushes while records come.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

impl<W: Write + Send> RecordingWriter<W> {
    /// Writes the header.
    pub fn new(mut writer: W) -> io::Result<RecordingWriter<W>> {
        writer.write_all(&MAGIC)?;
        writer.write_all(&VERSION.to_be_bytes())?;
        writer.write_all(&0u16.to_be_bytes())?;
        Ok(RecordingWriter {
            writer: Mutex::new((writer, Instant::now())),
        })
    }

    /// Writes one record.
    pub fn write_record(&self, kind: RecordKind, at: Duration, payload: &[u8]) -> io::Result<()> {
        let length = u32::try_from(payload.len())
            .ok()
            .filter(|length| *length <= MAX_RECORD)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
        let micros = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
        let mut header = [0u8; 13];
        header[0] = kind.byte();
        header[1..9].copy_from_slice(&micros.to_be_bytes());
        header[9..13].copy_from_slice(&length.to_be_bytes());
        let mut state = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (writer, flushed) = &mut *state;
        writer.write_all(&header)?;
        writer.write_all(payload)?;
        if kind == RecordKind::FromTarget || flushed.elapsed() >= FLUSH_EVERY {
            *flushed = Instant::now();
            writer.flush()?;
        }
        Ok(())
    }

    /// Flushes and returns the writer.
    pub fn finish(self) -> io::Result<W> {
        let (mut writer, _) = self.writer.into_inner().unwrap_or_else(|p| p.into_inner());
        writer.flush()?;
        Ok(writer)
    }
}

/// The record an event is stored as: its kind and payload (the target's bytes as they came
/// when the relay has them, else the message encoded), `None` for an event not stored.
fn record_of(event: &RecordedEvent<'_>) -> Option<(RecordKind, bytes::Bytes)> {
    let mut payload = Vec::new();
    let kind = match event.kind {
        RecordedKind::Start(init) => {
            init.encode(&mut payload);
            RecordKind::Start
        }
        RecordedKind::FromTarget(message) => {
            if let Some(raw) = event.raw {
                return Some((RecordKind::FromTarget, raw.clone()));
            }
            message.encode(&mut payload);
            RecordKind::FromTarget
        }
        RecordedKind::FromClient(message) => {
            message.encode(&mut payload);
            RecordKind::FromClient
        }
        // Already in the update that carried it.
        RecordedKind::DesktopResized { .. } => return None,
    };
    Some((kind, payload.into()))
}

fn write_failed(e: impl std::fmt::Display) -> RecordError {
    RecordError(format!("writing the vnc recording: {e}"))
}

impl<W: Write + Send> Recorder for RecordingWriter<W> {
    fn record(&self, event: &RecordedEvent<'_>) -> Result<(), RecordError> {
        let Some((kind, payload)) = record_of(event) else {
            return Ok(());
        };
        self.write_record(kind, event.at, &payload)
            .map_err(write_failed)
    }
}

/// How many bytes of records a [`BackgroundRecorder`] holds before the relay waits for its
/// thread (the relay's backpressure: a session cannot outrun its disk by more than this).
pub const BACKGROUND_BUDGET: usize = 32 * 1024 * 1024;

/// A [`RecordingWriter`] on a thread of its own: the relay hands each record over (the
/// target's bytes by reference count, no copy) and goes on relaying while the thread writes
/// and flushes, so the file's writes are off the data path. At most [`BACKGROUND_BUDGET`]
/// bytes wait (one record more when it alone is larger); the relay waits for room beyond that.
/// A write error is returned by the next `record` (the session ends) and by `finish`.
pub struct BackgroundRecorder<W: Write + Send + 'static> {
    jobs: Option<std::sync::mpsc::Sender<(RecordKind, Duration, bytes::Bytes)>>,
    budget: std::sync::Arc<Budget>,
    thread: Option<std::thread::JoinHandle<io::Result<W>>>,
}

/// Bytes handed to the thread and not written yet, and whether the thread stopped.
struct Budget {
    state: Mutex<(usize, Option<String>)>,
    room: std::sync::Condvar,
}

impl<W: Write + Send + 'static> BackgroundRecorder<W> {
    pub fn new(writer: RecordingWriter<W>) -> io::Result<BackgroundRecorder<W>> {
        let (jobs, queue) = std::sync::mpsc::channel::<(RecordKind, Duration, bytes::Bytes)>();
        let budget = std::sync::Arc::new(Budget {
            state: Mutex::new((0, None)),
            room: std::sync::Condvar::new(),
        });
        let shared = budget.clone();
        let thread = std::thread::Builder::new()
            .name("vnc-recording".into())
            .spawn(move || {
                let mut result = Ok(());
                for (kind, at, payload) in queue {
                    if result.is_ok() {
                        result = writer.write_record(kind, at, &payload);
                    }
                    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.0 = state.0.saturating_sub(payload.len());
                    if let Err(e) = &result
                        && state.1.is_none()
                    {
                        state.1 = Some(e.to_string());
                    }
                    shared.room.notify_all();
                }
                result.and_then(|()| writer.finish())
            })?;
        Ok(BackgroundRecorder {
            jobs: Some(jobs),
            budget,
            thread: Some(thread),
        })
    }

    /// Waits for every record to be written and flushed; the writer back.
    pub fn finish(mut self) -> io::Result<W> {
        self.jobs = None;
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("the recording thread stopped")),
        }
    }
}

impl<W: Write + Send + 'static> Drop for BackgroundRecorder<W> {
    fn drop(&mut self) {
        // The records handed over are still written: the thread ends with its queue.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<W: Write + Send + 'static> Recorder for BackgroundRecorder<W> {
    fn record(&self, event: &RecordedEvent<'_>) -> Result<(), RecordError> {
        let Some((kind, payload)) = record_of(event) else {
            return Ok(());
        };
        let size = payload.len();
        {
            let mut state = self.budget.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(e) = &state.1 {
                    return Err(write_failed(e));
                }
                if state.0 == 0 || state.0 + size <= BACKGROUND_BUDGET {
                    break;
                }
                state = self
                    .budget
                    .room
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            state.0 += size;
        }
        let sent = self
            .jobs
            .as_ref()
            .map(|jobs| jobs.send((kind, event.at, payload)));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(write_failed("the recording thread stopped")),
        }
    }
}

/// Reads records from a recording.
pub struct RecordingReader<R: Read> {
    reader: R,
}

impl<R: Read> RecordingReader<R> {
    /// Checks the header.
    pub fn new(mut reader: R) -> Result<RecordingReader<R>, RecordingError> {
        let mut header = [0u8; 12];
        read_exact(&mut reader, &mut header)?;
        if header[..8] != MAGIC {
            return Err(RecordingError::BadMagic);
        }
        let version = u16::from_be_bytes([header[8], header[9]]);
        if version != VERSION {
            return Err(RecordingError::UnsupportedVersion(version));
        }
        Ok(RecordingReader { reader })
    }

    /// The next record, or `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Record>, RecordingError> {
        let mut header = [0u8; 13];
        let mut filled = 0;
        while filled < header.len() {
            match self.reader.read(&mut header[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => return Err(RecordingError::Truncated),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let kind = RecordKind::from_byte(header[0])?;
        let mut micros = [0u8; 8];
        micros.copy_from_slice(&header[1..9]);
        let length = u32::from_be_bytes([header[9], header[10], header[11], header[12]]);
        if length > MAX_RECORD {
            return Err(RecordingError::RecordTooLarge {
                length: u64::from(length),
                limit: u64::from(MAX_RECORD),
            });
        }
        let mut payload = Vec::new();
        (&mut self.reader)
            .take(u64::from(length))
            .read_to_end(&mut payload)?;
        if payload.len() != length as usize {
            return Err(RecordingError::Truncated);
        }
        Ok(Some(Record {
            kind,
            at: Duration::from_micros(u64::from_be_bytes(micros)),
            payload,
        }))
    }
}

fn read_exact<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<(), RecordingError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => RecordingError::Truncated,
        _ => RecordingError::Io(e),
    })
}

/// A record, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    Start(ServerInit),
    FromTarget(ServerMessage),
    FromClient(ClientMessage),
}

/// Applies records to a [`Framebuffer`].
#[derive(Debug, Default)]
pub struct Replayer {
    context: Option<ServerContext>,
    framebuffer: Option<Framebuffer>,
}

fn exactly<T>(parsed: Parsed<T>, payload: &[u8]) -> Result<T, RecordingError> {
    match parsed {
        Parsed::Complete { message, length } if length == payload.len() => Ok(message),
        Parsed::Complete { length, .. } => Err(ProtocolError::Unexpected(format!(
            "record of {} bytes holds a message of {length}",
            payload.len()
        ))
        .into()),
        Parsed::Incomplete { .. } => Err(RecordingError::Truncated),
    }
}

impl Replayer {
    pub fn new() -> Replayer {
        Replayer::default()
    }

    /// Parses `record` and draws what it changes; returns the parsed message (for key,
    /// pointer and clipboard events).
    pub fn feed(&mut self, record: &Record) -> Result<Replayed, RecordingError> {
        match record.kind {
            RecordKind::Start => {
                let init = exactly(ServerInit::parse(&record.payload)?, &record.payload)?;
                init.pixel_format.validate()?;
                self.framebuffer = Some(Framebuffer::new(init.width, init.height)?);
                self.context = Some(ServerContext {
                    pixel_format: init.pixel_format,
                    width: init.width,
                    height: init.height,
                });
                Ok(Replayed::Start(init))
            }
            RecordKind::FromTarget => {
                let (Some(context), Some(framebuffer)) =
                    (self.context.as_mut(), self.framebuffer.as_mut())
                else {
                    return Err(RecordingError::MissingStart);
                };
                let message = exactly(
                    ServerMessage::parse(&record.payload, context)?,
                    &record.payload,
                )?;
                if let ServerMessage::FramebufferUpdate(update) = &message {
                    framebuffer.apply(update, &context.pixel_format, record.at)?;
                }
                context.apply(&message);
                Ok(Replayed::FromTarget(message))
            }
            RecordKind::FromClient => {
                if self.context.is_none() {
                    return Err(RecordingError::MissingStart);
                }
                let message = exactly(ClientMessage::parse(&record.payload)?, &record.payload)?;
                Ok(Replayed::FromClient(message))
            }
        }
    }

    /// The screen so far (`None` before the start record).
    pub fn framebuffer(&self) -> Option<&Framebuffer> {
        self.framebuffer.as_ref()
    }

    pub fn frame(&self) -> Option<Frame<'_>> {
        self.framebuffer.as_ref().map(Framebuffer::frame)
    }
}

/// Replays a whole recording and returns the final screen.
pub fn replay<R: Read>(reader: R) -> Result<Framebuffer, RecordingError> {
    let mut reader = RecordingReader::new(reader)?;
    let mut replayer = Replayer::new();
    while let Some(record) = reader.next_record()? {
        replayer.feed(&record)?;
    }
    replayer.framebuffer.ok_or(RecordingError::MissingStart)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails after `ok` writes.
    struct Failing {
        ok: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("disk full"));
            }
            self.ok -= 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_background_recorder_writes_every_record_in_order_the_targets_bytes_as_they_came() {
        use crate::codec::ServerMessage;
        let init = ServerInit {
            width: 8,
            height: 8,
            pixel_format: crate::codec::PixelFormat::TARGET,
            name: "desk".into(),
        };
        let recorder = BackgroundRecorder::new(RecordingWriter::new(Vec::new()).unwrap()).unwrap();
        let event = |at: u64, kind| RecordedEvent {
            at: Duration::from_millis(at),
            kind,
            raw: None,
        };
        recorder
            .record(&event(0, RecordedKind::Start(&init)))
            .unwrap();
        // A Bell from the target whose bytes came with it: those bytes are the record, as is.
        let bell = ServerMessage::Bell;
        let raw = bytes::Bytes::from_static(&[2]);
        for at in 1..=200 {
            recorder
                .record(&RecordedEvent {
                    raw: Some(&raw),
                    ..event(at, RecordedKind::FromTarget(&bell))
                })
                .unwrap();
        }
        let key = crate::codec::ClientMessage::KeyEvent {
            down: true,
            keysym: 0x61,
        };
        recorder
            .record(&event(300, RecordedKind::FromClient(&key)))
            .unwrap();
        let written = recorder.finish().unwrap();
        let mut reader = RecordingReader::new(written.as_slice()).unwrap();
        let mut kinds = Vec::new();
        let mut last = Duration::ZERO;
        while let Some(record) = reader.next_record().unwrap() {
            assert!(record.at >= last, "records in order");
            last = record.at;
            if record.kind == RecordKind::FromTarget {
                assert_eq!(record.payload, [2]);
            }
            kinds.push(record.kind);
        }
        assert_eq!(kinds.len(), 202);
        assert_eq!(kinds[0], RecordKind::Start);
        assert_eq!(kinds[201], RecordKind::FromClient);
    }

    #[test]
    fn a_write_error_ends_the_session_at_the_next_record_and_is_returned_by_finish() {
        // The header takes three writes; the fourth (the first record's header) fails.
        let recorder =
            BackgroundRecorder::new(RecordingWriter::new(Failing { ok: 3 }).unwrap()).unwrap();
        let bell = crate::codec::ServerMessage::Bell;
        let raw = bytes::Bytes::from_static(&[2]);
        let event = RecordedEvent {
            at: Duration::ZERO,
            kind: RecordedKind::FromTarget(&bell),
            raw: Some(&raw),
        };
        // Handed over: the failure comes from the thread, to a later call.
        let _ = recorder.record(&event);
        let refused = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            recorder.record(&event).err()
        });
        let refused = refused.expect("a record after the failure is refused");
        assert!(refused.0.contains("disk full"), "{}", refused.0);
        let finished = recorder.finish().err().expect("finish reports the failure");
        assert!(finished.to_string().contains("disk full"), "{finished}");
    }

    #[test]
    fn a_follower_sees_the_targets_messages_at_once_and_the_viewers_within_the_flush_period() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vnc.rec");
        let file = std::fs::File::create(&path).unwrap();
        let writer = RecordingWriter::new(io::BufWriter::new(file)).unwrap();
        let on_disk = || std::fs::read(&path).unwrap().len();
        // A small update (a Bell) from the target: on disk without waiting.
        writer
            .write_record(RecordKind::FromTarget, Duration::ZERO, &[2])
            .unwrap();
        assert_eq!(on_disk(), 12 + 13 + 1);
        // A viewer's update request right after: buffered.
        let request = [3, 1, 0, 0, 0, 0, 0, 8, 0, 8];
        writer
            .write_record(RecordKind::FromClient, Duration::ZERO, &request)
            .unwrap();
        assert_eq!(on_disk(), 12 + 13 + 1);
        // Another, after the flush period: written with the one before.
        std::thread::sleep(FLUSH_EVERY);
        writer
            .write_record(RecordKind::FromClient, FLUSH_EVERY, &request)
            .unwrap();
        assert_eq!(on_disk(), 12 + 13 + 1 + 2 * (13 + request.len()));
        let file = writer.finish().unwrap();
        drop(file);
        let mut reader = RecordingReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut records = 0;
        while reader.next_record().unwrap().is_some() {
            records += 1;
        }
        assert_eq!(records, 3);
    }
}
