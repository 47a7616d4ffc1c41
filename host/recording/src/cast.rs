//! The asciicast v2 format: header and event lines, written and parsed in one place so both agree.
//!
//! Format reference: <https://docs.asciinema.org/manual/asciicast/v2/>.

use std::io::{self, Write};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The first line of a cast file: terminal size and what was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CastHeader {
    /// Terminal width in columns.
    pub width: u32,
    /// Terminal height in rows.
    pub height: u32,
    /// Start of the recording, seconds since the Unix epoch; filled in when the recording starts if
    /// left `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    /// Length of the recording in seconds, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
    /// Players compress pauses longer than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_time_limit: Option<f64>,
    /// The command run in the channel (for exec channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A human title, e.g. "alice@root@db1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The terminal environment.
    #[serde(default, skip_serializing_if = "CastEnv::is_empty")]
    pub env: CastEnv,
}

/// The `env` object of the header; other variables in files written elsewhere are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CastEnv {
    /// `TERM` as requested by the client's pty request.
    #[serde(rename = "TERM", default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    /// `SHELL` of the target account, when known.
    #[serde(rename = "SHELL", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
}

impl CastEnv {
    fn is_empty(&self) -> bool {
        self.term.is_none() && self.shell.is_none()
    }
}

impl CastHeader {
    /// A header for a terminal of `width` columns and `height` rows, everything else unset.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            timestamp: None,
            duration: None,
            idle_time_limit: None,
            command: None,
            title: None,
            env: CastEnv::default(),
        }
    }

    /// Sets `env.TERM`.
    pub fn with_term(mut self, term: impl Into<String>) -> Self {
        self.env.term = Some(term.into());
        self
    }

    /// Sets `env.SHELL`.
    pub fn with_shell(mut self, shell: impl Into<String>) -> Self {
        self.env.shell = Some(shell.into());
        self
    }

    /// Sets the command line.
    pub fn with_command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// Sets the title.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
}

/// The header as written: `version` first, as players expect.
#[derive(Serialize)]
struct HeaderLine<'a> {
    version: u8,
    #[serde(flatten)]
    header: &'a CastHeader,
}

/// Writes the header line, newline included.
pub(crate) fn write_header(out: &mut impl Write, header: &CastHeader) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &HeaderLine { version: 2, header })?;
    out.write_all(b"\n")
}

/// The kind of an event line (its second element).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `"o"`: bytes the terminal showed.
    Output,
    /// `"i"`: bytes the user typed.
    Input,
    /// `"r"`: the terminal was resized; data is `COLSxROWS`.
    Resize,
    /// `"m"`: a marker; data is its label.
    Marker,
}

impl EventKind {
    /// The one-letter code used in the file.
    pub fn code(self) -> &'static str {
        match self {
            EventKind::Output => "o",
            EventKind::Input => "i",
            EventKind::Resize => "r",
            EventKind::Marker => "m",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        match code {
            "o" => Some(EventKind::Output),
            "i" => Some(EventKind::Input),
            "r" => Some(EventKind::Resize),
            "m" => Some(EventKind::Marker),
            _ => None,
        }
    }
}

/// One event line: `[time, code, data]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CastEvent {
    /// Seconds since the start of the recording.
    pub time: f64,
    /// What happened.
    pub kind: EventKind,
    /// The text (output, input), `COLSxROWS` (resize) or label (marker).
    pub data: String,
}

/// Writes one event line with microsecond precision, newline included.
pub(crate) fn write_event(
    out: &mut impl Write,
    time: Duration,
    kind: EventKind,
    data: &str,
) -> io::Result<()> {
    write!(
        out,
        "[{}.{:06}, \"{}\", ",
        time.as_secs(),
        time.subsec_micros(),
        kind.code()
    )?;
    serde_json::to_writer(&mut *out, data)?;
    out.write_all(b"]\n")
}

/// Parses the header line.
pub(crate) fn parse_header(line: &str) -> Result<CastHeader, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|error| format!("header is not JSON: {error}"))?;
    if !value.is_object() {
        return Err("header is not a JSON object, expected an asciicast v2 header".to_owned());
    }
    match value.get("version") {
        Some(version) if version.as_u64() == Some(2) => {}
        Some(version) => {
            return Err(format!(
                "unsupported asciicast version `{version}`, expected `2`"
            ));
        }
        None => return Err("header has no `version`, expected asciicast v2".to_owned()),
    }
    serde_json::from_value(value).map_err(|error| format!("invalid header: {error}"))
}

/// Parses an event line.
pub(crate) fn parse_event(line: &str) -> Result<CastEvent, String> {
    let (time, code, data): (f64, String, String) =
        serde_json::from_str(line).map_err(|error| {
            format!("expected an event `[time, \"o\"|\"i\"|\"r\"|\"m\", data]`: {error}")
        })?;
    if time < 0.0 {
        return Err(format!("event time `{time}` is negative"));
    }
    if Duration::try_from_secs_f64(time).is_err() {
        return Err(format!("event time `{time}` is out of range"));
    }
    let kind = EventKind::from_code(&code)
        .ok_or_else(|| format!("unknown event type `{code}`, expected one of o, i, r, m"))?;
    Ok(CastEvent { time, kind, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_line_puts_version_first_and_omits_unset_fields() {
        let cases = [
            (
                CastHeader::new(80, 24),
                r#"{"version":2,"width":80,"height":24}"#,
            ),
            (
                CastHeader {
                    timestamp: Some(1_700_000_000),
                    ..CastHeader::new(120, 40)
                        .with_term("xterm-256color")
                        .with_shell("/bin/bash")
                        .with_title("alice@root@db1")
                        .with_command("ls -l")
                },
                r#"{"version":2,"width":120,"height":40,"timestamp":1700000000,"command":"ls -l","title":"alice@root@db1","env":{"TERM":"xterm-256color","SHELL":"/bin/bash"}}"#,
            ),
        ];
        for (header, expected) in cases {
            let mut out = Vec::new();
            write_header(&mut out, &header).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), format!("{expected}\n"));
            assert_eq!(parse_header(expected).unwrap(), header);
        }
    }

    #[test]
    fn event_lines_have_microsecond_times() {
        let cases = [
            (
                Duration::ZERO,
                EventKind::Output,
                "$ ",
                "[0.000000, \"o\", \"$ \"]\n",
            ),
            (
                Duration::from_nanos(1_234_567_890),
                EventKind::Input,
                "ls\r",
                "[1.234567, \"i\", \"ls\\r\"]\n",
            ),
            (
                Duration::from_secs(3600),
                EventKind::Output,
                "\u{1b}[0m\u{e9}",
                "[3600.000000, \"o\", \"\\u001b[0m\u{e9}\"]\n",
            ),
            (
                Duration::from_millis(5),
                EventKind::Resize,
                "100x30",
                "[0.005000, \"r\", \"100x30\"]\n",
            ),
            (
                Duration::from_micros(1),
                EventKind::Marker,
                "sudo",
                "[0.000001, \"m\", \"sudo\"]\n",
            ),
        ];
        for (time, kind, data, expected) in cases {
            let mut out = Vec::new();
            write_event(&mut out, time, kind, data).unwrap();
            let line = String::from_utf8(out).unwrap();
            assert_eq!(line, expected);
            let parsed = parse_event(line.trim_end()).unwrap();
            assert_eq!((parsed.kind, parsed.data.as_str()), (kind, data));
            assert!((parsed.time - time.as_secs_f64()).abs() < 1e-6);
        }
    }

    #[test]
    fn malformed_lines_are_explained() {
        let headers = [
            ("not json", "header is not JSON"),
            ("[0.1, \"o\", \"x\"]", "header is not a JSON object"),
            (
                r#"{"version":1,"width":80,"height":24}"#,
                "unsupported asciicast version `1`",
            ),
            (r#"{"width":80,"height":24}"#, "header has no `version`"),
            (
                r#"{"version":2,"width":80}"#,
                "invalid header: missing field `height`",
            ),
        ];
        for (line, expected) in headers {
            let error = parse_header(line).unwrap_err();
            assert!(error.starts_with(expected), "{line}: {error}");
        }
        let events = [
            ("[1.0, \"o\"]", "expected an event"),
            ("{\"time\": 1}", "expected an event"),
            ("[-1.0, \"o\", \"x\"]", "event time `-1` is negative"),
            ("[1.0, \"x\", \"data\"]", "unknown event type `x`"),
            ("[1.0, \"o\", 5]", "expected an event"),
        ];
        for (line, expected) in events {
            let error = parse_event(line).unwrap_err();
            assert!(error.starts_with(expected), "{line}: {error}");
        }
    }
}
