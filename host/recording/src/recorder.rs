//! Writes one channel's terminal stream to an asciicast v2 file as it flows, in bounded memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cast::{self, CastHeader, EventKind};
use crate::error::{Result, io_error};
use crate::utf8::Utf8Decoder;

/// Size of the write buffer; the recorder never holds more than this plus one chunk of text.
pub const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Buffered events are flushed to the file on the first write after this much time since the last
/// flush, so a crash loses about this much of the session at most.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Totals of a finished channel recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelTotals {
    /// Bytes the user sent (recorded as `"i"` events).
    pub bytes_in: u64,
    /// Bytes the target sent (recorded as `"o"` events).
    pub bytes_out: u64,
    /// Time from the start of the channel recording to [`ChannelRecorder::finish`].
    pub duration: Duration,
}

/// Records one channel as an asciicast v2 file.
///
/// Synchronous on purpose: writes go to a 64 KiB buffer and reach the file only when it is full or a
/// second has passed, so the relay task that owns the recorder rarely blocks. Call
/// [`finish`](Self::finish) when the channel closes; dropping the recorder flushes the buffer but
/// skips the fsync and loses an incomplete trailing UTF-8 sequence.
#[derive(Debug)]
pub struct ChannelRecorder {
    path: PathBuf,
    writer: BufWriter<File>,
    started: Instant,
    last_flush: Duration,
    output_decoder: Utf8Decoder,
    input_decoder: Utf8Decoder,
    text: String,
    bytes_in: u64,
    bytes_out: u64,
}

impl ChannelRecorder {
    /// Writes the header to a freshly created `file` at `path` and starts the clock.
    pub(crate) fn start(path: PathBuf, file: File, header: &CastHeader) -> Result<Self> {
        let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        cast::write_header(&mut writer, header)
            .and_then(|()| writer.flush())
            .map_err(io_error("write", &path))?;
        Ok(Self {
            path,
            writer,
            started: Instant::now(),
            last_flush: Duration::ZERO,
            output_decoder: Utf8Decoder::new(),
            input_decoder: Utf8Decoder::new(),
            text: String::new(),
            bytes_in: 0,
            bytes_out: 0,
        })
    }

    /// The cast file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records bytes the target sent to the terminal.
    pub fn output(&mut self, bytes: &[u8]) -> Result<()> {
        self.output_at(self.started.elapsed(), bytes)
    }

    /// Records bytes the user typed.
    pub fn input(&mut self, bytes: &[u8]) -> Result<()> {
        self.input_at(self.started.elapsed(), bytes)
    }

    /// Records a terminal size change.
    pub fn resize(&mut self, cols: u32, rows: u32) -> Result<()> {
        self.resize_at(self.started.elapsed(), cols, rows)
    }

    /// Records a marker, e.g. where a policy warning was shown.
    pub fn marker(&mut self, label: &str) -> Result<()> {
        self.event_at(self.started.elapsed(), EventKind::Marker, label)
    }

    /// Pushes buffered events to the file now; for a relay that wants to flush while the channel is idle.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_at(self.started.elapsed())
    }

    /// Bytes the user sent so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes the target sent so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Writes what the decoders still hold, flushes and fsyncs the file.
    pub fn finish(mut self) -> Result<ChannelTotals> {
        let now = self.started.elapsed();
        self.text.clear();
        self.input_decoder.finish(&mut self.text);
        if !self.text.is_empty() {
            self.write_text(now, EventKind::Input)?;
        }
        self.text.clear();
        self.output_decoder.finish(&mut self.text);
        if !self.text.is_empty() {
            self.write_text(now, EventKind::Output)?;
        }
        self.writer.flush().map_err(io_error("write", &self.path))?;
        self.writer
            .get_ref()
            .sync_all()
            .map_err(io_error("sync", &self.path))?;
        Ok(ChannelTotals {
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration: now,
        })
    }

    pub(crate) fn output_at(&mut self, time: Duration, bytes: &[u8]) -> Result<()> {
        self.bytes_out = self.bytes_out.saturating_add(bytes.len() as u64);
        self.text.clear();
        self.output_decoder.decode(bytes, &mut self.text);
        self.write_text(time, EventKind::Output)
    }

    pub(crate) fn input_at(&mut self, time: Duration, bytes: &[u8]) -> Result<()> {
        self.bytes_in = self.bytes_in.saturating_add(bytes.len() as u64);
        self.text.clear();
        self.input_decoder.decode(bytes, &mut self.text);
        self.write_text(time, EventKind::Input)
    }

    pub(crate) fn resize_at(&mut self, time: Duration, cols: u32, rows: u32) -> Result<()> {
        self.event_at(time, EventKind::Resize, &format!("{cols}x{rows}"))
    }

    /// Writes `self.text` as one event, unless the chunk only held part of a character.
    fn write_text(&mut self, time: Duration, kind: EventKind) -> Result<()> {
        if self.text.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.text);
        let written = self.event_at(time, kind, &text);
        self.text = text;
        written
    }

    pub(crate) fn event_at(&mut self, time: Duration, kind: EventKind, data: &str) -> Result<()> {
        cast::write_event(&mut self.writer, time, kind, data)
            .map_err(io_error("write", &self.path))?;
        if time.saturating_sub(self.last_flush) >= FLUSH_INTERVAL {
            self.flush_at(time)?;
        }
        Ok(())
    }

    fn flush_at(&mut self, time: Duration) -> Result<()> {
        self.writer.flush().map_err(io_error("write", &self.path))?;
        self.last_flush = time;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn buffered_len(&self) -> usize {
        self.writer.buffer().len()
    }

    #[cfg(test)]
    pub(crate) fn buffer_capacity(&self) -> usize {
        self.writer.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(dir: &tempfile::TempDir) -> ChannelRecorder {
        let path = dir.path().join("channel-0.cast");
        let file = File::create(&path).unwrap();
        ChannelRecorder::start(path, file, &CastHeader::new(80, 24)).unwrap()
    }

    fn file_lines(recorder: &ChannelRecorder) -> Vec<String> {
        std::fs::read_to_string(recorder.path())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn recorder_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<ChannelRecorder>();
    }

    #[test]
    fn events_reach_the_file_once_a_second_of_session_time_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = recorder(&dir);
        // (time in ms, output, lines in the file afterwards: header + flushed events)
        let steps = [
            (0, "a", 1),
            (400, "b", 1),
            (999, "c", 1),
            (1000, "d", 5),
            (1500, "e", 5),
            (2000, "f", 7),
        ];
        for (millis, text, lines) in steps {
            recorder
                .output_at(Duration::from_millis(millis), text.as_bytes())
                .unwrap();
            assert_eq!(file_lines(&recorder).len(), lines, "after {text}");
        }
    }

    #[test]
    fn memory_stays_bounded_over_a_long_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = recorder(&dir);
        let chunk = vec![b'x'; 4096];
        for step in 0..2_000u64 {
            recorder
                .output_at(Duration::from_millis(step), &chunk)
                .unwrap();
            assert!(recorder.buffered_len() <= WRITE_BUFFER_BYTES);
        }
        assert_eq!(recorder.buffer_capacity(), WRITE_BUFFER_BYTES);
        assert_eq!(recorder.bytes_out(), 2_000 * 4096);
    }

    #[test]
    fn a_character_split_across_chunks_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = recorder(&dir);
        let bytes = "\u{1f600}".as_bytes();
        recorder
            .output_at(Duration::from_millis(1), &bytes[..1])
            .unwrap();
        recorder
            .output_at(Duration::from_millis(2), &bytes[1..3])
            .unwrap();
        recorder
            .output_at(Duration::from_millis(3), &bytes[3..])
            .unwrap();
        recorder
            .input_at(Duration::from_millis(4), b"\xc3")
            .unwrap();
        let totals = recorder.finish().unwrap();
        assert_eq!((totals.bytes_in, totals.bytes_out), (1, 4));
        let text = std::fs::read_to_string(dir.path().join("channel-0.cast")).unwrap();
        let events: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(events.len(), 2, "{text}");
        assert_eq!(events[0], "[0.003000, \"o\", \"\u{1f600}\"]");
        assert!(
            events[1].ends_with(", \"i\", \"\u{fffd}\"]"),
            "{}",
            events[1]
        );
    }
}
