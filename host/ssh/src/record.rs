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
    exit_status: Option<u32>,
    exit_signal: Option<String>,
    failed: bool,
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
            exit_status: None,
            exit_signal: None,
            failed: false,
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
        match &mut self.inspector {
            Inspector::Sftp(i) => i.client_to_server(data),
            Inspector::Scp(i) => i.client_to_server(data),
            Inspector::None => {}
        }
        self.drain_events();
        self.write_cast(data, Way::Input);
    }

    /// Bytes from the target to the user: `stderr` false for the channel's data stream, true for
    /// its extended (stderr) stream, which the transfer inspectors must not see.
    pub fn output(&mut self, data: &[u8], stderr: bool) {
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
        let written = match (self.cast.as_mut(), way) {
            (Some(cast), Way::Input) => cast.input(keep),
            (Some(cast), Way::Output) => cast.output(keep),
            (None, _) => Ok(()),
        };
        if let Err(e) = written {
            self.note_failure(e);
        }
    }

    /// Writes buffered terminal data to disk (called when the channel goes quiet).
    pub fn flush(&mut self) {
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
        for event in events {
            if let Err(e) = self
                .session
                .log(Some(self.number), RecordingEvent::File { protocol, event })
            {
                self.note_failure(e);
            }
        }
    }

    /// Flushes everything and returns the channel's summary for the session record.
    pub fn finish(mut self) -> ChannelSummary {
        let (protocol, events) = match &mut self.inspector {
            Inspector::Sftp(i) => (FileProtocol::Sftp, i.finish()),
            Inspector::Scp(i) => (FileProtocol::Scp, i.finish()),
            Inspector::None => (FileProtocol::Sftp, Vec::new()),
        };
        for event in events {
            if let Err(e) = self
                .session
                .log(Some(self.number), RecordingEvent::File { protocol, event })
            {
                self.note_failure(e);
            }
        }
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
    use super::clamp;

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
