//! What the relay records about one channel: the terminal stream (asciicast), exec command lines,
//! file transfers seen by the SFTP/SCP inspectors, and how the channel ended.

use gatehouse_core::ChannelSummary;
use gatehouse_recording::scp::ScpInspector;
use gatehouse_recording::sftp::SftpInspector;
use gatehouse_recording::{
    CastHeader, ChannelRecorder, FileProtocol, RecordingEvent, SessionRecording,
};
use std::sync::Arc;

/// The request that started a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Start {
    Shell,
    Exec(String),
    Subsystem(String),
}

/// Terminal requested by the client.
#[derive(Debug, Clone)]
pub(crate) struct Pty {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

#[derive(Clone, Copy)]
enum Way {
    Input,
    Output,
}

enum Inspector {
    None,
    Sftp(Box<SftpInspector>),
    Scp(Box<ScpInspector>),
}

pub(crate) struct ChannelRecording {
    session: Arc<SessionRecording>,
    number: u32,
    kind: String,
    command: Option<String>,
    cast: Option<ChannelRecorder>,
    inspector: Inspector,
    /// Bytes per direction still to be written to the cast (`u64::MAX` for no limit).
    input_budget: u64,
    output_budget: u64,
    truncated: bool,
    /// Exec channels without a terminal: binary data is kept as "binary, N bytes" markers.
    detect_binary: bool,
    /// Bytes of binary data not yet written as a marker, per direction.
    binary_input: u64,
    binary_output: u64,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
    failed: bool,
    files: FileEventBudget,
    /// A run of typing by someone who joined the session, not yet logged.
    joined: Option<JoinedRun>,
}

/// A run of one joiner's typing: logged as one event, at its start, when it ends (a line
/// ended, another person typed, a quiet second, the channel closed).
struct JoinedRun {
    user: String,
    text: String,
    at: std::time::Duration,
}

/// Bytes of file events a channel may log beyond [`FILE_EVENTS_PER_TRAFFIC_BYTE`] times its
/// traffic: a fixed allowance, so a session of many small transfers is logged whole.
const FILE_EVENTS_FREE_BYTES: u64 = 4 * 1024 * 1024;
/// Bytes of file events per byte of the channel's traffic (SFTP metadata of small files is
/// about one to two).
const FILE_EVENTS_PER_TRAFFIC_BYTE: u64 = 4;

/// How much of the event log a channel's file events may take, and what did not fit.
#[derive(Default)]
struct FileEventBudget {
    traffic: u64,
    logged: u64,
    dropped: u64,
}

impl FileEventBudget {
    fn allows(&self) -> bool {
        let allowed = FILE_EVENTS_FREE_BYTES
            .saturating_add(self.traffic.saturating_mul(FILE_EVENTS_PER_TRAFFIC_BYTE));
        self.logged < allowed
    }
}

impl ChannelRecording {
    /// Starts recording a channel. Fails when the recording cannot be written: the caller refuses
    /// the channel rather than run it unrecorded.
    pub fn start(
        session: Arc<SessionRecording>,
        number: u32,
        start: &Start,
        pty: Option<&Pty>,
        title: &str,
        exec_limit: u64,
    ) -> Result<Self, gatehouse_recording::RecordingError> {
        let (kind, command, event) = match start {
            Start::Shell => ("shell".to_string(), None, RecordingEvent::Shell),
            Start::Exec(cmd) => (
                "exec".to_string(),
                Some(cmd.clone()),
                RecordingEvent::Exec {
                    command: cmd.clone(),
                },
            ),
            Start::Subsystem(name) => (
                format!("subsystem:{name}"),
                None,
                RecordingEvent::Subsystem { name: name.clone() },
            ),
        };
        if let Some(p) = pty {
            session.log(
                Some(number),
                RecordingEvent::Pty {
                    term: p.term.clone(),
                    width: p.cols,
                    height: p.rows,
                },
            )?;
        }
        session.log(Some(number), event)?;

        let scp = match start {
            Start::Exec(cmd) => {
                gatehouse_recording::scp::is_scp_command(cmd).map(ScpInspector::new)
            }
            _ => None,
        };
        let inspector = match (start, scp) {
            (_, Some(scp)) => Inspector::Scp(Box::new(scp)),
            (Start::Subsystem(name), None) if name == "sftp" => {
                Inspector::Sftp(Box::new(SftpInspector::new()))
            }
            _ => Inspector::None,
        };
        // File transfers are recorded as events, not as terminal streams.
        let cast = match (&inspector, start) {
            (Inspector::None, Start::Shell | Start::Exec(_)) => {
                let (cols, rows) = pty
                    .map(|p| (p.cols, p.rows))
                    .filter(|&(c, r)| c > 0 && r > 0)
                    .unwrap_or((80, 24));
                let mut header = CastHeader::new(cols, rows).with_title(title);
                if let Some(p) = pty {
                    header = header.with_term(p.term.clone());
                }
                if let Some(cmd) = &command {
                    header = header.with_command(cmd.clone());
                }
                Some(session.channel(number, header)?)
            }
            _ => None,
        };
        let budget = if pty.is_some() || exec_limit == 0 {
            u64::MAX
        } else {
            exec_limit
        };
        Ok(Self {
            session,
            number,
            kind,
            command,
            cast,
            inspector,
            input_budget: budget,
            output_budget: budget,
            truncated: false,
            detect_binary: pty.is_none(),
            binary_input: 0,
            binary_output: 0,
            exit_status: None,
            exit_signal: None,
            failed: false,
            files: FileEventBudget::default(),
            joined: None,
        })
    }

    fn note_failure(&mut self, e: gatehouse_recording::RecordingError) {
        if !self.failed {
            self.failed = true;
            tracing::error!(error = %e, channel = self.number, "recording failed");
        }
    }

    fn truncate_note(&mut self) {
        if !self.truncated {
            self.truncated = true;
            if let Some(cast) = self.cast.as_mut()
                && let Err(e) =
                    cast.marker("recording limit reached: further data is counted, not kept")
            {
                self.note_failure(e);
            }
        }
    }

    /// Bytes from the user to the target.
    pub fn input(&mut self, data: &[u8]) {
        self.files.traffic += data.len() as u64;
        match &mut self.inspector {
            Inspector::Sftp(i) => i.client_to_server(data),
            Inspector::Scp(i) => i.client_to_server(data),
            Inspector::None => {}
        }
        self.drain_events();
        self.write_cast(data, Way::Input);
    }

    /// Bytes a person who joined the session typed: in the cast's input stream like the user's,
    /// and attributed to them in the event log.
    pub fn joined_input(&mut self, user: &str, data: &[u8]) {
        self.input(data);
        let text = String::from_utf8_lossy(data);
        match &mut self.joined {
            Some(run) if run.user == user => run.text.push_str(&text),
            _ => {
                self.end_joined_run();
                self.joined = Some(JoinedRun {
                    user: user.to_string(),
                    text: text.into_owned(),
                    at: self.session.elapsed(),
                });
            }
        }
        if data.iter().any(|&b| b == b'\r' || b == b'\n') {
            self.end_joined_run();
        }
    }

    fn end_joined_run(&mut self) {
        if let Some(run) = self.joined.take() {
            let event = RecordingEvent::JoinedInput {
                user: run.user,
                text: run.text,
            };
            if let Err(e) = self.session.log_at(run.at, Some(self.number), event) {
                self.note_failure(e);
            }
        }
    }

    /// Bytes from the target to the user: `stderr` false for the channel's data stream, true for
    /// its extended (stderr) stream, which the transfer inspectors must not see.
    pub fn output(&mut self, data: &[u8], stderr: bool) {
        self.files.traffic += data.len() as u64;
        if !stderr {
            match &mut self.inspector {
                Inspector::Sftp(i) => i.server_to_client(data),
                Inspector::Scp(i) => i.server_to_client(data),
                Inspector::None => {}
            }
            self.drain_events();
        }
        self.write_cast(data, Way::Output);
    }

    /// Writes what fits in the direction's budget to the cast file.
    fn write_cast(&mut self, data: &[u8], way: Way) {
        if self.cast.is_none() {
            return;
        }
        let budget = match way {
            Way::Input => &mut self.input_budget,
            Way::Output => &mut self.output_budget,
        };
        let keep = clamp(data, budget);
        if keep.len() < data.len() {
            self.truncate_note();
        }
        if keep.is_empty() {
            return;
        }
        if self.detect_binary && looks_binary(keep) {
            // Whole lines of text before the binary data (`echo start; cat file.bin`) stay.
            let text = text_lines_before_binary(keep);
            if !text.is_empty() {
                self.end_binary_run(way);
                self.write_text(text, way);
            }
            let binary = (keep.len() - text.len()) as u64;
            match way {
                Way::Input => self.binary_input += binary,
                Way::Output => self.binary_output += binary,
            }
            return;
        }
        self.end_binary_run(way);
        self.write_text(keep, way);
    }

    fn write_text(&mut self, keep: &[u8], way: Way) {
        let written = match (self.cast.as_mut(), way) {
            (Some(cast), Way::Input) => cast.input(keep),
            (Some(cast), Way::Output) => cast.output(keep),
            (None, _) => Ok(()),
        };
        if let Err(e) = written {
            self.note_failure(e);
        }
    }

    /// Writes the marker for a run of binary data in `way` that has ended.
    fn end_binary_run(&mut self, way: Way) {
        let (pending, what) = match way {
            Way::Input => (&mut self.binary_input, "input"),
            Way::Output => (&mut self.binary_output, "output"),
        };
        if *pending == 0 {
            return;
        }
        let label = format!("binary {what}, {} bytes (not kept as text)", *pending);
        *pending = 0;
        if let Some(cast) = self.cast.as_mut()
            && let Err(e) = cast.marker(&label)
        {
            self.note_failure(e);
        }
    }

    /// Writes buffered terminal data to disk (called when the channel goes quiet).
    pub fn flush(&mut self) {
        self.end_joined_run();
        if let Some(cast) = self.cast.as_mut()
            && let Err(e) = cast.flush()
        {
            self.note_failure(e);
        }
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        if let Some(cast) = self.cast.as_mut()
            && let Err(e) = cast.resize(cols, rows)
        {
            self.note_failure(e);
        }
    }

    pub fn signal(&mut self, name: &str) {
        let event = RecordingEvent::Signal {
            name: name.to_string(),
        };
        if let Err(e) = self.session.log(Some(self.number), event) {
            self.note_failure(e);
        }
    }

    pub fn exit_status(&mut self, status: u32) {
        self.exit_status = Some(status);
    }

    pub fn exit_signal(&mut self, name: &str) {
        self.exit_signal = Some(name.to_string());
    }

    fn drain_events(&mut self) {
        let (protocol, events) = match &mut self.inspector {
            Inspector::Sftp(i) => (FileProtocol::Sftp, i.take_events()),
            Inspector::Scp(i) => (FileProtocol::Scp, i.take_events()),
            Inspector::None => return,
        };
        self.log_file_events(protocol, events);
    }

    /// Logs file events while the channel's budget lasts; counts the rest.
    fn log_file_events(
        &mut self,
        protocol: FileProtocol,
        events: Vec<gatehouse_recording::FileEvent>,
    ) {
        for event in events {
            if !self.files.allows() {
                if self.files.dropped == 0 {
                    tracing::warn!(
                        channel = self.number,
                        logged_bytes = self.files.logged,
                        traffic_bytes = self.files.traffic,
                        "file events outgrew the channel's budget; counting the rest"
                    );
                }
                self.files.dropped += 1;
                continue;
            }
            match self
                .session
                .log_counted(Some(self.number), RecordingEvent::File { protocol, event })
            {
                Ok(bytes) => self.files.logged += bytes as u64,
                Err(e) => self.note_failure(e),
            }
        }
    }

    /// Flushes everything and returns the channel's summary for the session record.
    pub fn finish(mut self) -> ChannelSummary {
        self.end_joined_run();
        let (protocol, events) = match &mut self.inspector {
            Inspector::Sftp(i) => (FileProtocol::Sftp, i.finish()),
            Inspector::Scp(i) => (FileProtocol::Scp, i.finish()),
            Inspector::None => (FileProtocol::Sftp, Vec::new()),
        };
        self.log_file_events(protocol, events);
        if self.files.dropped > 0 {
            let dropped = RecordingEvent::FileEventsDropped {
                protocol,
                events: self.files.dropped,
            };
            if let Err(e) = self.session.log(Some(self.number), dropped) {
                self.note_failure(e);
            }
        }
        self.end_binary_run(Way::Input);
        self.end_binary_run(Way::Output);
        let recorded = self.cast.is_some();
        if let Some(cast) = self.cast.take()
            && let Err(e) = cast.finish()
        {
            self.note_failure(e);
        }
        let closed = RecordingEvent::ChannelClosed {
            exit_status: self.exit_status,
            exit_signal: self.exit_signal.clone(),
        };
        if let Err(e) = self.session.log(Some(self.number), closed) {
            self.note_failure(e);
        }
        ChannelSummary {
            number: self.number,
            kind: self.kind.clone(),
            command: self.command.clone(),
            exit_status: self.exit_status,
            recorded,
        }
    }
}

/// Whether a chunk of an exec channel's stream is binary rather than text: a NUL byte, or more
/// than an eighth of it not UTF-8. Escaped into the cast such data is unreadable, unsearchable
/// and the recorder's most expensive work.
fn looks_binary(data: &[u8]) -> bool {
    if data.contains(&0) {
        return true;
    }
    let mut invalid = 0;
    let mut chunks = data.utf8_chunks().peekable();
    while let Some(chunk) = chunks.next() {
        let bad = chunk.invalid();
        // A character cut by the chunk boundary is text, finished in the next chunk.
        let cut_at_end = chunks.peek().is_none() && bad.len() <= 3 && bad.first() >= Some(&0xc2);
        if !cut_at_end {
            invalid += bad.len();
        }
    }
    invalid * 8 > data.len()
}

/// The complete lines of text at the start of `data`, before its first NUL or invalid UTF-8.
fn text_lines_before_binary(data: &[u8]) -> &[u8] {
    let nul = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let valid = match std::str::from_utf8(&data[..nul]) {
        Ok(_) => nul,
        Err(e) => e.valid_up_to(),
    };
    let end = data[..valid]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    &data[..end]
}

/// The part of `data` that fits in `budget`, and the budget reduced by it.
fn clamp<'a>(data: &'a [u8], budget: &mut u64) -> &'a [u8] {
    let keep = usize::try_from(*budget)
        .unwrap_or(usize::MAX)
        .min(data.len());
    if *budget != u64::MAX {
        *budget -= keep as u64;
    }
    &data[..keep]
}

#[cfg(test)]
mod tests {
    use super::{
        ChannelRecording, FILE_EVENTS_FREE_BYTES, FILE_EVENTS_PER_TRAFFIC_BYTE, Start, clamp,
        looks_binary, text_lines_before_binary,
    };
    use gatehouse_recording::{FileEvent, RecordedSession, RecordingEvent, SessionRecording};
    use std::sync::Arc;

    /// One SFTP packet: length, type, payload.
    fn sftp_packet(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut packet = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
        packet.push(kind);
        packet.extend_from_slice(payload);
        packet
    }

    #[test]
    fn file_events_outgrowing_the_traffic_are_counted_not_logged() {
        let root = tempfile::tempdir().unwrap();
        let session = Arc::new(SessionRecording::create(root.path(), "s-budget").unwrap());
        let start = Start::Subsystem("sftp".to_string());
        let mut channel =
            ChannelRecording::start(session.clone(), 0, &start, None, "t", 1 << 20).unwrap();
        let mut traffic = 0u64;
        let mut send = |channel: &mut ChannelRecording, bytes: Vec<u8>| {
            traffic += bytes.len() as u64;
            channel.input(&bytes);
        };
        send(&mut channel, sftp_packet(1, &3u32.to_be_bytes()));
        // MKDIR of a 1000-byte name of control characters: each byte is `\u0001` (six bytes)
        // in the event log, so the log would grow six times as fast as the traffic.
        let name = vec![1u8; 1000];
        let sent = 6000u32;
        for id in 0..sent {
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&(name.len() as u32).to_be_bytes());
            payload.extend_from_slice(&name);
            payload.extend_from_slice(&0u32.to_be_bytes());
            send(&mut channel, sftp_packet(14, &payload));
        }
        channel.finish();

        let events = RecordedSession::open(root.path(), "s-budget")
            .unwrap()
            .events()
            .unwrap();
        let mkdirs = events
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    RecordingEvent::File {
                        event: FileEvent::Mkdir { .. },
                        ..
                    }
                )
            })
            .count() as u64;
        let dropped = events
            .iter()
            .find_map(|e| match e.event {
                RecordingEvent::FileEventsDropped { events, .. } => Some(events),
                _ => None,
            })
            .expect("a FileEventsDropped event");
        assert!(
            mkdirs > 1000,
            "the allowance logs the first events: {mkdirs}"
        );
        assert!(dropped > 0);
        assert_eq!(
            mkdirs + dropped,
            u64::from(sent),
            "every event logged or counted"
        );
        let log_size = std::fs::metadata(root.path().join("s-budget").join("events.jsonl"))
            .unwrap()
            .len();
        let allowed = FILE_EVENTS_FREE_BYTES + FILE_EVENTS_PER_TRAFFIC_BYTE * traffic;
        assert!(
            log_size < allowed + 16 * 1024,
            "event log {log_size} bytes for {traffic} bytes of traffic (allowed {allowed})"
        );
        assert!(
            log_size > allowed - 16 * 1024,
            "the budget is used: {log_size} of {allowed}"
        );
    }

    #[test]
    fn text_lines_before_binary_data() {
        assert_eq!(
            text_lines_before_binary(b"start\nline 2\nhalf\x00\xff"),
            b"start\nline 2\n"
        );
        assert_eq!(text_lines_before_binary(b"no newline\x00"), b"");
        assert_eq!(text_lines_before_binary(b"\xff\xfe\n"), b"");
    }

    #[test]
    fn binary_or_text() {
        assert!(!looks_binary(b"total 12\n-rw-r--r-- 1 root root 0 a\n"));
        assert!(!looks_binary("grüße, 日本語\n".as_bytes()));
        // A character split across two chunks is still text.
        assert!(!looks_binary(&"abcdefghijkl日".as_bytes()[..14]));
        assert!(looks_binary(b"ELF\x02\x01\x01\x00\x00"));
        assert!(looks_binary(&[
            0x8b, 0x1f, 0x08, 0xff, 0xfe, 0x90, 0x91, 0xc3
        ]));
        // Random bytes: a NUL or a lot of invalid UTF-8.
        let random: Vec<u8> = (0u32..4096)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert!(looks_binary(&random));
    }

    #[test]
    fn clamp_budget() {
        let mut budget = 5;
        assert_eq!(clamp(b"abc", &mut budget), b"abc");
        assert_eq!(clamp(b"defg", &mut budget), b"de");
        assert_eq!(clamp(b"h", &mut budget), b"");
        let mut unlimited = u64::MAX;
        assert_eq!(clamp(b"xyz", &mut unlimited), b"xyz");
        assert_eq!(unlimited, u64::MAX);
    }
}
