//! Reads cast files back: parsing with line numbers, timed playback, plain-text extraction and export.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ansi::AnsiStripper;
use crate::cast::{self, CastEvent, CastHeader, EventKind};
use crate::error::{RecordingError, Result, io_error};
use crate::session::channel_file_name;

/// A whole cast file in memory. Prefer [`play`], [`text`] and [`export`] for long recordings: they
/// stream the file.
#[derive(Debug, Clone, PartialEq)]
pub struct CastRecording {
    /// The header line.
    pub header: CastHeader,
    /// The event lines, in file order.
    pub events: Vec<CastEvent>,
}

/// Reads and checks a whole cast file.
///
/// A final line without a newline that does not parse is what a crash leaves behind; it is dropped.
/// Any other malformed line is an error naming its line number.
pub fn read_cast(path: &Path) -> Result<CastRecording> {
    let mut reader = CastReader::open(path)?;
    let header = reader.header.clone();
    let mut events = Vec::new();
    while let Some(event) = reader.next_event()? {
        events.push(event);
    }
    Ok(CastRecording { header, events })
}

/// Writes the output of the cast file at `path` to `out` with its original timing divided by `speed`.
///
/// Pauses longer than `max_idle` (or the header's `idle_time_limit` when `max_idle` is `None`) are
/// shortened to it before the speed is applied. Input, resize and marker events are not written.
/// Output before `from` seconds of the recording is written at once (the screen as it was then),
/// the timing starts there: a search hit's moment is played from its `cast_time`.
pub fn play(
    path: &Path,
    speed: f64,
    max_idle: Option<Duration>,
    from: f64,
    out: &mut impl Write,
) -> Result<()> {
    play_with(path, speed, max_idle, from, out, std::thread::sleep)
}

/// [`play`] with the sleeping function supplied, so the timing can be checked without waiting.
pub(crate) fn play_with(
    path: &Path,
    speed: f64,
    max_idle: Option<Duration>,
    from: f64,
    out: &mut impl Write,
    mut sleep: impl FnMut(Duration),
) -> Result<()> {
    if !speed.is_finite() || speed <= 0.0 {
        return Err(RecordingError::InvalidSpeed(speed));
    }
    let mut reader = CastReader::open(path)?;
    let max_idle = max_idle.or_else(|| {
        reader
            .header
            .idle_time_limit
            .filter(|limit| limit.is_finite() && *limit > 0.0)
            .and_then(|limit| Duration::try_from_secs_f64(limit).ok())
    });
    let mut previous = if from.is_finite() { from.max(0.0) } else { 0.0 };
    while let Some(event) = reader.next_event()? {
        if event.kind != EventKind::Output {
            continue;
        }
        let mut pause =
            Duration::try_from_secs_f64((event.time - previous).max(0.0)).unwrap_or_default();
        previous = previous.max(event.time);
        if let Some(limit) = max_idle {
            pause = pause.min(limit);
        }
        let pause =
            Duration::try_from_secs_f64(pause.as_secs_f64() / speed).unwrap_or(Duration::MAX);
        if !pause.is_zero() {
            sleep(pause);
        }
        out.write_all(event.data.as_bytes())
            .and_then(|()| out.flush())
            .map_err(RecordingError::Output)?;
    }
    Ok(())
}

/// The output of the cast file at `path` as plain text: escape sequences, `\r` and other control
/// characters removed, newlines and tabs kept.
pub fn text(path: &Path) -> Result<String> {
    let mut reader = CastReader::open(path)?;
    let mut stripper = AnsiStripper::new();
    let mut out = String::new();
    while let Some(event) = reader.next_event()? {
        if event.kind == EventKind::Output {
            stripper.push(&event.data, &mut out);
        }
    }
    Ok(out)
}

/// Writes channel `channel` of the session recorded in `session_dir` to `dest` as a standalone cast
/// file that asciinema 2.x plays.
///
/// The file is checked line by line and rewritten; a line cut short by a crash at the end is dropped.
pub fn export(session_dir: &Path, channel: u32, dest: &Path) -> Result<()> {
    let source = session_dir.join(channel_file_name(channel));
    if !source.is_file() {
        return Err(RecordingError::ChannelNotFound(channel));
    }
    let mut reader = CastReader::open(&source)?;
    let file = File::create(dest).map_err(io_error("create", dest))?;
    let mut writer = BufWriter::new(file);
    cast::write_header(&mut writer, &reader.header).map_err(io_error("write", dest))?;
    while let Some(event) = reader.next_event()? {
        let time = Duration::try_from_secs_f64(event.time).unwrap_or_default();
        cast::write_event(&mut writer, time, event.kind, &event.data)
            .map_err(io_error("write", dest))?;
    }
    writer.flush().map_err(io_error("write", dest))
}

/// Streams the events of a cast file after checking its header: memory holds one line.
pub struct CastReader {
    path: PathBuf,
    lines: BufReader<Box<dyn std::io::Read + Send>>,
    line_number: usize,
    buffer: String,
    /// The time of the last event returned: times never go backwards.
    last_time: f64,
    /// The parsed header.
    pub header: CastHeader,
}

impl CastReader {
    /// Opens the cast file at `path` (decrypted when it is encrypted: [`crate::crypt`]) and
    /// reads its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = crate::crypt::open(path)?;
        let mut reader = Self {
            path: path.to_owned(),
            lines: BufReader::new(file),
            line_number: 0,
            buffer: String::new(),
            last_time: 0.0,
            header: CastHeader::new(0, 0),
        };
        match reader.next_line()? {
            Some(_) => {}
            None => {
                return Err(reader.malformed("the file is empty, expected an asciicast v2 header"));
            }
        }
        reader.header = cast::parse_header(reader.buffer.trim_end())
            .map_err(|reason| reader.malformed(reason))?;
        Ok(reader)
    }

    /// The next event, `None` at the end of the file.
    pub fn next_event(&mut self) -> Result<Option<CastEvent>> {
        loop {
            let Some(terminated) = self.next_line()? else {
                return Ok(None);
            };
            let line = self.buffer.trim_end();
            if line.is_empty() {
                continue;
            }
            return match cast::parse_event(line) {
                // The recorder's clock is monotonic: an earlier time is not a recording of ours.
                Ok(event) if event.time < self.last_time => Err(self.malformed(format!(
                    "event time `{}` is before the previous event's `{}`",
                    event.time, self.last_time
                ))),
                Ok(event) => {
                    self.last_time = event.time;
                    Ok(Some(event))
                }
                // A crash mid-write leaves an unterminated last line: the recording ends before it.
                Err(_) if !terminated => Ok(None),
                Err(reason) => Err(self.malformed(reason)),
            };
        }
    }

    /// Reads the next line into `self.buffer`; returns whether it ended with a newline.
    fn next_line(&mut self) -> Result<Option<bool>> {
        self.buffer.clear();
        let read = self
            .lines
            .read_line(&mut self.buffer)
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::InvalidData => RecordingError::Malformed {
                    path: self.path.clone(),
                    line: self.line_number + 1,
                    reason: "the line is not valid UTF-8".to_owned(),
                },
                _ => io_error("read", &self.path)(error),
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.line_number += 1;
        Ok(Some(self.buffer.ends_with('\n')))
    }

    fn malformed(&self, reason: impl Into<String>) -> RecordingError {
        RecordingError::Malformed {
            path: self.path.clone(),
            line: self.line_number.max(1),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"{"version":2,"width":80,"height":24,"timestamp":1700000000}"#;

    fn cast_file(dir: &tempfile::TempDir, content: &str) -> PathBuf {
        let path = dir.path().join("channel-0.cast");
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn malformed_files_name_the_line() {
        let cases = [
            ("", 1, "the file is empty"),
            (
                "{\"version\":2}\n",
                1,
                "invalid header: missing field `width`",
            ),
            ("[0.1, \"o\", \"x\"]\n", 1, "header is not a JSON object"),
            (
                &format!("{HEADER}\n[0.1, \"o\", \"a\"]\n[0.2, \"q\", \"b\"]\n"),
                3,
                "unknown event type `q`",
            ),
            (
                &format!("{HEADER}\n[0.1, \"o\", \"a\"]\nnot json\n[0.3, \"o\", \"b\"]\n"),
                3,
                "expected an event",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (content, line, reason) in cases {
            let path = cast_file(&dir, content);
            match read_cast(&path) {
                Err(RecordingError::Malformed {
                    line: found,
                    reason: found_reason,
                    ..
                }) => {
                    assert_eq!(found, line, "{content:?}");
                    assert!(
                        found_reason.starts_with(reason),
                        "{content:?}: {found_reason}"
                    );
                }
                other => panic!("{content:?}: expected a malformed error, got {other:?}"),
            }
        }
    }

    /// Found by the `cast_reader` fuzz target (fuzz/, docs/FUZZING.md): an event earlier than the
    /// one before it was returned, and `play` then paused for a negative time.
    #[test]
    fn time_going_backwards_is_a_malformed_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = cast_file(
            &dir,
            &format!(
                "{HEADER}\n[0.000000, \"o\", \"$ \"]\n[0.530000, \"o\", \"x\"]\n\
                 [0.000000, \"r\", \"120x40\"]\n[2.25, \"m\", \"sudo\"]\n"
            ),
        );
        for error in [
            read_cast(&path).unwrap_err(),
            text(&path).unwrap_err(),
            play(&path, 1.0, None, 0.0, &mut Vec::new()).unwrap_err(),
        ] {
            match error {
                RecordingError::Malformed { line, reason, .. } => {
                    assert_eq!(line, 4);
                    assert_eq!(
                        reason,
                        "event time `0` is before the previous event's `0.53`"
                    );
                }
                other => panic!("expected a malformed error, got {other:?}"),
            }
        }
        // Equal times are fine (several chunks in one microsecond).
        let path = cast_file(
            &dir,
            &format!("{HEADER}\n[0.5, \"o\", \"a\"]\n[0.5, \"o\", \"b\"]\n"),
        );
        assert_eq!(read_cast(&path).unwrap().events.len(), 2);
    }

    #[test]
    fn invalid_utf8_is_a_malformed_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.cast");
        std::fs::write(
            &path,
            [HEADER.as_bytes(), b"\n[0.1, \"o\", \"\xff\"]\n"].concat(),
        )
        .unwrap();
        let error = read_cast(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("`{}` line 2: the line is not valid UTF-8", path.display())
        );
    }

    #[test]
    fn a_line_cut_off_by_a_crash_ends_the_recording() {
        let dir = tempfile::tempdir().unwrap();
        let path = cast_file(
            &dir,
            &format!("{HEADER}\n[0.1, \"o\", \"a\"]\n\n[0.2, \"o\", \"b"),
        );
        let recording = read_cast(&path).unwrap();
        assert_eq!(recording.events.len(), 1);
        assert_eq!(text(&path).unwrap(), "a");
    }

    #[test]
    fn playback_sleeps_the_scaled_and_capped_pauses() {
        let content = format!(
            "{HEADER}\n[0.5, \"o\", \"a\"]\n[0.6, \"i\", \"x\"]\n[1.5, \"o\", \"b\"]\n[11.5, \"o\", \"c\"]\n[11.5, \"o\", \"d\"]\n[12.0, \"m\", \"end\"]\n"
        );
        // (speed, max idle, expected pauses in ms)
        let cases: [(f64, Option<Duration>, &[u64]); 3] = [
            (1.0, None, &[500, 1000, 10_000]),
            (2.0, None, &[250, 500, 5000]),
            (1.0, Some(Duration::from_secs(2)), &[500, 1000, 2000]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = cast_file(&dir, &content);
        for (speed, max_idle, expected) in cases {
            let mut out = Vec::new();
            let mut pauses = Vec::new();
            play_with(&path, speed, max_idle, 0.0, &mut out, |pause| {
                pauses.push(pause.as_millis() as u64)
            })
            .unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), "abcd");
            assert_eq!(pauses, expected, "speed {speed} max idle {max_idle:?}");
        }
    }

    #[test]
    fn playback_from_a_moment_writes_what_came_before_at_once() {
        let content = format!(
            "{HEADER}\n[0.5, \"o\", \"a\"]\n[1.5, \"o\", \"b\"]\n[11.5, \"o\", \"c\"]\n[12.0, \"o\", \"d\"]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = cast_file(&dir, &content);
        let mut out = Vec::new();
        let mut pauses = Vec::new();
        play_with(&path, 1.0, None, 11.0, &mut out, |pause| {
            pauses.push(pause.as_millis() as u64)
        })
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "abcd");
        assert_eq!(pauses, [500, 500]);
    }

    #[test]
    fn playback_uses_the_header_idle_limit_when_none_is_given() {
        let content = "{\"version\":2,\"width\":80,\"height\":24,\"idle_time_limit\":1.5}\n[20.0, \"o\", \"a\"]\n";
        let dir = tempfile::tempdir().unwrap();
        let path = cast_file(&dir, content);
        let mut pauses = Vec::new();
        play_with(&path, 1.0, None, 0.0, &mut Vec::new(), |pause| {
            pauses.push(pause)
        })
        .unwrap();
        assert_eq!(pauses, [Duration::from_millis(1500)]);
    }

    #[test]
    fn playback_rejects_a_speed_that_is_not_positive() {
        let dir = tempfile::tempdir().unwrap();
        let path = cast_file(&dir, &format!("{HEADER}\n"));
        for speed in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = play(&path, speed, None, 0.0, &mut Vec::new()).unwrap_err();
            assert!(
                matches!(error, RecordingError::InvalidSpeed(_)),
                "{speed}: {error}"
            );
        }
    }
}
