//! One directory per session: a cast file per terminal channel and an event log for everything else.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cast::CastHeader;
use crate::error::{RecordingError, Result, io_error};
use crate::player::{self, CastRecording};
use crate::recorder::ChannelRecorder;
use crate::transfer::FileEvent;

/// Name of the event log inside a session directory.
pub const EVENTS_FILE: &str = "events.jsonl";

/// File name of a channel's cast file inside a session directory.
pub fn channel_file_name(channel: u32) -> String {
    format!("channel-{channel}.cast")
}

fn channel_from_file_name(name: &str) -> Option<u32> {
    let number = name.strip_prefix("channel-")?.strip_suffix(".cast")?;
    let channel: u32 = number.parse().ok()?;
    (channel_file_name(channel) == name).then_some(channel)
}

/// Which file-transfer protocol a [`FileEvent`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileProtocol {
    /// The sftp subsystem (also used by OpenSSH 9 `scp` without `-O`).
    Sftp,
    /// The legacy scp protocol over an exec channel.
    Scp,
}

/// Something that happened in a session besides terminal bytes; one line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordingEvent {
    /// A channel's cast file was started; logged by [`SessionRecording::channel`]. The event's time is
    /// the zero of the cast file's clock.
    RecordingStarted {
        /// The cast file's name inside the session directory.
        file: String,
    },
    /// The client asked for a pty.
    Pty {
        /// The terminal type.
        term: String,
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// The client started a shell.
    Shell,
    /// The client ran a command.
    Exec {
        /// The command line as sent.
        command: String,
    },
    /// The client started a subsystem such as `sftp`.
    Subsystem {
        /// The subsystem name.
        name: String,
    },
    /// A file operation seen by the SFTP or SCP inspector.
    File {
        /// Where it was seen.
        protocol: FileProtocol,
        /// What happened.
        #[serde(flatten)]
        event: FileEvent,
    },
    /// File events of a channel that were not logged: the channel's file events outgrew their
    /// budget (a fixed allowance plus a multiple of the channel's traffic), so that a stream of
    /// tiny transfers in deeply nested directories cannot grow the event log far faster than the
    /// traffic. Logged once, when the channel closes; the transfers themselves went through.
    FileEventsDropped {
        /// Where they were seen.
        protocol: FileProtocol,
        /// How many events were not logged.
        events: u64,
    },
    /// The client sent a signal.
    Signal {
        /// The signal name without `SIG`, e.g. `INT`.
        name: String,
    },
    /// A channel closed.
    ChannelClosed {
        /// The exit status the target reported, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_status: Option<u32>,
        /// The signal that ended the command, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_signal: Option<String>,
    },
    /// The session ended; logged by [`SessionRecording::finish`].
    SessionClosed,
    /// A run of typing in a graphical (RDP) session: characters as typed, special keys as
    /// `<Enter>`, `<Ctrl+C>`, ...; `end` is when the run ended (seconds, the session clock).
    Keys { text: String, end: f64 },
    /// One side of a graphical session offered its clipboard in these formats.
    ClipboardOffer {
        /// `client` or `target`.
        from: String,
        formats: Vec<String>,
    },
    /// Clipboard data crossed: the text for text formats, the size and format for others.
    Clipboard {
        /// `client` (pasted towards the target) or `target` (copied out of it).
        from: String,
        format: String,
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default)]
        truncated: bool,
    },
    /// Someone joined the session live: `mode` is `read-only` or `keyboard`.
    Joined { user: String, mode: String },
    /// Someone who joined left.
    Left { user: String },
    /// What a person who joined with the keyboard typed (it is in the cast's input stream too,
    /// at the same moment); runs of typing are one event.
    JoinedInput { user: String, text: String },
    /// Whether the recorded graphics of an RDP session decode (checked after the session).
    Graphics {
        /// `decodable`, `partially` or `not_decodable`.
        verdict: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// One line of `events.jsonl`: an event with when and where it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Seconds since the session recording was created, microsecond precision.
    pub time: f64,
    /// The channel it concerns; `None` for session-wide events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u32>,
    /// What happened.
    #[serde(flatten)]
    pub event: RecordingEvent,
}

/// Checks that a session id is safe to use as a directory name.
fn check_session_id(session_id: &str) -> Result<()> {
    let allowed = |character: char| character.is_ascii_alphanumeric() || "-_.".contains(character);
    let valid = (1..=128).contains(&session_id.len())
        && !session_id.starts_with('.')
        && session_id.chars().all(allowed);
    if valid {
        Ok(())
    } else {
        Err(RecordingError::InvalidSessionId(session_id.to_owned()))
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("sync", dir))
}

/// A session being recorded: the directory `root/<session_id>/`.
///
/// Share it between channel tasks behind an `Arc`; [`log`](Self::log) takes `&self`.
#[derive(Debug)]
pub struct SessionRecording {
    id: String,
    dir: PathBuf,
    started: Instant,
    events_path: PathBuf,
    events: Mutex<File>,
}

impl SessionRecording {
    /// Creates `root/<session_id>/` (and `root` if needed) with an empty event log and starts the
    /// session clock. Fails if that directory exists: recordings are never overwritten.
    pub fn create(root: &Path, session_id: &str) -> Result<Self> {
        check_session_id(session_id)?;
        fs::create_dir_all(root).map_err(io_error("create", root))?;
        let dir = root.join(session_id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RecordingError::SessionExists(dir));
            }
            Err(error) => return Err(io_error("create", &dir)(error)),
        }
        let events_path = dir.join(EVENTS_FILE);
        let events = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&events_path)
            .map_err(io_error("create", &events_path))?;
        sync_dir(&dir)?;
        sync_dir(root)?;
        Ok(Self {
            id: session_id.to_owned(),
            dir,
            started: Instant::now(),
            events_path,
            events: Mutex::new(events),
        })
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Time since [`create`](Self::create).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Starts recording channel `channel` to `channel-<channel>.cast` and logs
    /// [`RecordingEvent::RecordingStarted`]. The header's timestamp is set to now if unset.
    ///
    /// Channel numbers must be unique within the session: SSH reuses channel ids after a close, so
    /// number channels in the order they open rather than by their SSH id.
    pub fn channel(&self, channel: u32, header: CastHeader) -> Result<ChannelRecorder> {
        let file_name = channel_file_name(channel);
        let path = self.dir.join(&file_name);
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RecordingError::ChannelExists(channel));
            }
            Err(error) => return Err(io_error("create", &path)(error)),
        };
        let mut header = header;
        if header.timestamp.is_none() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            header.timestamp = Some(now.as_secs());
        }
        let recorder = ChannelRecorder::start(path, file, &header)?;
        self.log(
            Some(channel),
            RecordingEvent::RecordingStarted { file: file_name },
        )?;
        Ok(recorder)
    }

    /// Appends `event` to `events.jsonl`, stamped with the session time and `channel`.
    pub fn log(&self, channel: Option<u32>, event: RecordingEvent) -> Result<()> {
        self.log_at(self.started.elapsed(), channel, event)
    }

    /// Appends `event` stamped with `at` (session time), for events observed on another
    /// clock that starts with the session (the RDP relay's).
    pub fn log_at(&self, at: Duration, channel: Option<u32>, event: RecordingEvent) -> Result<()> {
        self.log_counted_at(at, channel, event).map(drop)
    }

    /// Like [`log`](Self::log), returning the bytes the event took in the log.
    pub fn log_counted(&self, channel: Option<u32>, event: RecordingEvent) -> Result<usize> {
        self.log_counted_at(self.started.elapsed(), channel, event)
    }

    fn log_counted_at(
        &self,
        at: Duration,
        channel: Option<u32>,
        event: RecordingEvent,
    ) -> Result<usize> {
        let micros = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
        let record = EventRecord {
            time: micros as f64 / 1e6,
            channel,
            event,
        };
        let mut line = serde_json::to_vec(&record)
            .map_err(|error| io_error("write", &self.events_path)(io::Error::other(error)))?;
        line.push(b'\n');
        // One write per line on an append-mode file: concurrent loggers never interleave.
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        events
            .write_all(&line)
            .map_err(io_error("write", &self.events_path))?;
        Ok(line.len())
    }

    /// Logs [`RecordingEvent::SessionClosed`] and fsyncs the event log and the directory. Channel
    /// recorders are finished separately.
    pub fn finish(&self) -> Result<()> {
        self.log(None, RecordingEvent::SessionClosed)?;
        let events = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        events
            .sync_all()
            .map_err(io_error("sync", &self.events_path))?;
        sync_dir(&self.dir)
    }
}

/// A session recording on disk, opened for reading.
#[derive(Debug, Clone)]
pub struct RecordedSession {
    id: String,
    dir: PathBuf,
}

impl RecordedSession {
    /// Opens `root/<session_id>/`.
    pub fn open(root: &Path, session_id: &str) -> Result<Self> {
        check_session_id(session_id)?;
        let dir = root.join(session_id);
        if !dir.is_dir() {
            return Err(RecordingError::SessionNotFound(dir));
        }
        Ok(Self {
            id: session_id.to_owned(),
            dir,
        })
    }

    /// The ids of the sessions recorded under `root`, sorted.
    pub fn list(root: &Path) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(root).map_err(io_error("read", root))? {
            let entry = entry.map_err(io_error("read", root))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if check_session_id(&name).is_ok() && entry.path().join(EVENTS_FILE).is_file() {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The session directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The recorded channel numbers, sorted.
    pub fn channels(&self) -> Result<Vec<u32>> {
        let mut channels = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("read", &self.dir))? {
            let entry = entry.map_err(io_error("read", &self.dir))?;
            if let Some(channel) = entry.file_name().to_str().and_then(channel_from_file_name) {
                channels.push(channel);
            }
        }
        channels.sort_unstable();
        Ok(channels)
    }

    /// The cast file of `channel` (which may not exist).
    pub fn channel_path(&self, channel: u32) -> PathBuf {
        self.dir.join(channel_file_name(channel))
    }

    /// Reads the whole cast file of `channel`.
    pub fn read_channel(&self, channel: u32) -> Result<CastRecording> {
        let path = self.channel_path(channel);
        if !path.is_file() {
            return Err(RecordingError::ChannelNotFound(channel));
        }
        player::read_cast(&path)
    }

    /// Writes `channel` to `dest` as a standalone cast file; see [`crate::export`].
    pub fn export(&self, channel: u32, dest: &Path) -> Result<()> {
        player::export(&self.dir, channel, dest)
    }

    /// Reads the event log. A final line cut off by a crash is dropped; any other malformed line is an
    /// error naming its line number.
    pub fn events(&self) -> Result<Vec<EventRecord>> {
        let path = self.dir.join(EVENTS_FILE);
        let mut reader = BufReader::new(crate::crypt::open(&path)?);
        let mut records = Vec::new();
        let mut line = String::new();
        let mut line_number = 0;
        loop {
            line.clear();
            let read = reader.read_line(&mut line).map_err(|error| {
                if error.kind() == io::ErrorKind::InvalidData {
                    RecordingError::Malformed {
                        path: path.clone(),
                        line: line_number + 1,
                        reason: "the line is not valid UTF-8".to_owned(),
                    }
                } else {
                    io_error("read", &path)(error)
                }
            })?;
            if read == 0 {
                return Ok(records);
            }
            line_number += 1;
            let terminated = line.ends_with('\n');
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line.trim_end()) {
                Ok(record) => records.push(record),
                Err(_) if !terminated => return Ok(records),
                Err(error) => {
                    return Err(RecordingError::Malformed {
                        path,
                        line: line_number,
                        reason: format!("not a recording event: {error}"),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::Direction;

    #[test]
    fn session_ids_that_could_escape_the_root_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let long = "a".repeat(129);
        for id in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "a b",
            "s\u{e9}ance",
            long.as_str(),
        ] {
            let error = SessionRecording::create(root.path(), id).unwrap_err();
            assert!(
                matches!(error, RecordingError::InvalidSessionId(_)),
                "{id:?}: {error}"
            );
            let error = RecordedSession::open(root.path(), id).unwrap_err();
            assert!(
                matches!(error, RecordingError::InvalidSessionId(_)),
                "{id:?}: {error}"
            );
        }
        for id in ["01J9Z3", "0190c2e8-8a4b-7d2e-9f00-1234567890ab", "s_1.2"] {
            SessionRecording::create(root.path(), id).unwrap();
        }
    }

    #[test]
    fn a_recording_is_never_overwritten() {
        let root = tempfile::tempdir().unwrap();
        let session = SessionRecording::create(root.path(), "s1").unwrap();
        let error = SessionRecording::create(root.path(), "s1").unwrap_err();
        assert!(matches!(error, RecordingError::SessionExists(_)), "{error}");
        let _first = session.channel(0, CastHeader::new(80, 24)).unwrap();
        let error = session.channel(0, CastHeader::new(80, 24)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "channel 0 is already recorded in this session"
        );
    }

    #[test]
    fn events_and_channels_read_back() {
        let root = tempfile::tempdir().unwrap();
        let session = SessionRecording::create(root.path(), "s1").unwrap();
        let mut shell = session
            .channel(0, CastHeader::new(80, 24).with_term("xterm"))
            .unwrap();
        shell.output(b"$ ").unwrap();
        shell.finish().unwrap();
        let logged = [
            (
                Some(0),
                RecordingEvent::Pty {
                    term: "xterm".to_owned(),
                    width: 80,
                    height: 24,
                },
            ),
            (Some(0), RecordingEvent::Shell),
            (
                Some(2),
                RecordingEvent::Exec {
                    command: "scp -t /tmp/x".to_owned(),
                },
            ),
            (
                Some(3),
                RecordingEvent::Subsystem {
                    name: "sftp".to_owned(),
                },
            ),
            (
                Some(3),
                RecordingEvent::File {
                    protocol: FileProtocol::Sftp,
                    event: FileEvent::Transfer {
                        direction: Direction::Download,
                        path: "/etc/hosts".to_owned(),
                        bytes: 220,
                        complete: true,
                    },
                },
            ),
            (
                Some(3),
                RecordingEvent::File {
                    protocol: FileProtocol::Sftp,
                    event: FileEvent::Rename {
                        from: "/a".to_owned(),
                        to: "/b".to_owned(),
                    },
                },
            ),
            (
                Some(0),
                RecordingEvent::Signal {
                    name: "INT".to_owned(),
                },
            ),
            (
                Some(0),
                RecordingEvent::ChannelClosed {
                    exit_status: Some(0),
                    exit_signal: None,
                },
            ),
        ];
        for (channel, event) in logged.clone() {
            session.log(channel, event).unwrap();
        }
        session.finish().unwrap();
        let _second = session.channel(7, CastHeader::new(80, 24)).unwrap();

        let recorded = RecordedSession::open(root.path(), "s1").unwrap();
        assert_eq!(recorded.channels().unwrap(), [0, 7]);
        assert_eq!(RecordedSession::list(root.path()).unwrap(), ["s1"]);
        let events = recorded.events().unwrap();
        let found: Vec<(Option<u32>, RecordingEvent)> = events
            .iter()
            .map(|record| (record.channel, record.event.clone()))
            .collect();
        let mut expected = vec![(
            Some(0),
            RecordingEvent::RecordingStarted {
                file: "channel-0.cast".to_owned(),
            },
        )];
        expected.extend(logged);
        expected.push((None, RecordingEvent::SessionClosed));
        expected.push((
            Some(7),
            RecordingEvent::RecordingStarted {
                file: "channel-7.cast".to_owned(),
            },
        ));
        assert_eq!(found, expected);
        assert!(events.windows(2).all(|pair| pair[0].time <= pair[1].time));
        let header = recorded.read_channel(0).unwrap().header;
        assert!(header.timestamp.is_some());
        assert_eq!(header.env.term.as_deref(), Some("xterm"));
    }

    #[test]
    fn event_lines_are_flat_json() {
        let record = EventRecord {
            time: 1.5,
            channel: Some(3),
            event: RecordingEvent::File {
                protocol: FileProtocol::Scp,
                event: FileEvent::Transfer {
                    direction: Direction::Upload,
                    path: "/tmp/x".to_owned(),
                    bytes: 5,
                    complete: false,
                },
            },
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"time":1.5,"channel":3,"type":"file","protocol":"scp","op":"transfer","direction":"upload","path":"/tmp/x","bytes":5,"complete":false}"#
        );
        assert_eq!(serde_json::from_str::<EventRecord>(&json).unwrap(), record);
    }

    #[test]
    fn a_malformed_event_log_names_the_line() {
        let root = tempfile::tempdir().unwrap();
        let session = SessionRecording::create(root.path(), "s1").unwrap();
        session.log(None, RecordingEvent::Shell).unwrap();
        let path = session.dir().join(EVENTS_FILE);
        let mut content = fs::read_to_string(&path).unwrap();
        content.push_str("{\"time\":1,\"type\":\"teleport\"}\n");
        fs::write(&path, &content).unwrap();
        let recorded = RecordedSession::open(root.path(), "s1").unwrap();
        match recorded.events().unwrap_err() {
            RecordingError::Malformed { line, reason, .. } => {
                assert_eq!(line, 2);
                assert!(
                    reason.starts_with("not a recording event: unknown variant `teleport`"),
                    "{reason}"
                );
            }
            other => panic!("expected a malformed error, got {other}"),
        }
        // A crash mid-line at the end is not an error.
        fs::write(
            &path,
            content.replace("{\"time\":1,\"type\":\"teleport\"}\n", "{\"time\":1,\"ty"),
        )
        .unwrap();
        assert_eq!(recorded.events().unwrap().len(), 1);
    }

    #[test]
    fn channel_file_names_parse_only_in_canonical_form() {
        let cases = [
            ("channel-0.cast", Some(0)),
            ("channel-42.cast", Some(42)),
            ("channel-042.cast", None),
            ("channel-+1.cast", None),
            ("channel-x.cast", None),
            ("channel-1.cast.tmp", None),
            ("events.jsonl", None),
        ];
        for (name, expected) in cases {
            assert_eq!(channel_from_file_name(name), expected, "{name}");
        }
    }
}
