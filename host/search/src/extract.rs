//! What of a recording is searchable, as fragments with the moment each starts at: the text an
//! SSH terminal showed (escape sequences removed), the lines typed at it that the terminal
//! echoed, and the events (commands, subsystems, file names, RDP typing, clipboard text).
//!
//! Typed input is indexed only where the terminal showed it back: a password typed at a prompt
//! that does not echo is in the input stream alone, and stays out of the index.

use gatehouse_recording::{
    AnsiStripper, CastReader, EventKind, FileEvent, RecordedSession, RecordingEvent,
};
use std::collections::HashMap;

/// A fragment of terminal output is closed at its last line end once it holds this much...
const FRAGMENT_BYTES: usize = 1024;
/// ...or when output comes this many seconds after it began, so a hit lands the player near
/// its moment.
const FRAGMENT_SECONDS: f64 = 2.0;
/// A fragment is cut here even without a line end.
const FRAGMENT_MAX_BYTES: usize = 8 * 1024;
/// A typed line longer than this is not indexed (no one types it; a paste is in the output).
const LINE_MAX_CHARS: usize = 1024;
/// How much of what the terminal showed since a line was started is kept to find its echo.
const ECHO_WINDOW_BYTES: usize = 16 * 1024;

/// What a fragment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentKind {
    /// Text a terminal showed.
    Output,
    /// A line typed at a terminal, which the terminal echoed.
    Input,
    /// A command run without a shell (`ssh host cmd`) or a subsystem (`sftp`).
    Command,
    /// A file transfer or file operation (SFTP, SCP): its path names.
    File,
    /// Typing in a graphical (RDP) session.
    Keys,
    /// Clipboard text that crossed.
    Clipboard,
}

impl FragmentKind {
    /// The name used in the index and in queries (`kind:output`).
    pub fn name(self) -> &'static str {
        match self {
            FragmentKind::Output => "output",
            FragmentKind::Input => "input",
            FragmentKind::Command => "command",
            FragmentKind::File => "file",
            FragmentKind::Keys => "keys",
            FragmentKind::Clipboard => "clipboard",
        }
    }
}

/// One searchable piece of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    pub kind: FragmentKind,
    /// The channel it happened on (`None`: session-wide, or an RDP session).
    pub channel: Option<u32>,
    /// Seconds since the session's recording started (the clock of `events.jsonl`).
    pub time: f64,
    /// Seconds into the channel's terminal recording (its cast file's clock), for output and
    /// input.
    pub cast_time: Option<f64>,
    pub text: String,
}

/// The fragments of the recorded session, in channel order, then by time within a channel.
pub fn fragments(
    recorded: &RecordedSession,
    emit: &mut dyn FnMut(Fragment),
) -> gatehouse_recording::Result<()> {
    // A damaged event log costs its events, not the terminal's text.
    let events = recorded.events().unwrap_or_else(|error| {
        tracing::warn!(session = recorded.id(), %error, "indexing without the session's events");
        Vec::new()
    });
    // Where each channel's cast clock starts on the session clock.
    let mut starts: HashMap<u32, f64> = HashMap::new();
    for record in &events {
        if let (Some(channel), RecordingEvent::RecordingStarted { .. }) =
            (record.channel, &record.event)
        {
            starts.entry(channel).or_insert(record.time);
        }
        if let Some((kind, text)) = event_text(&record.event) {
            emit(Fragment {
                kind,
                channel: record.channel,
                time: record.time,
                cast_time: None,
                text,
            });
        }
    }
    for channel in recorded.channels()? {
        let start = starts.get(&channel).copied().unwrap_or(0.0);
        terminal(recorded, channel, start, emit)?;
    }
    Ok(())
}

/// The searchable text of an event, if it has any.
fn event_text(event: &RecordingEvent) -> Option<(FragmentKind, String)> {
    match event {
        RecordingEvent::Exec { command } => Some((FragmentKind::Command, command.clone())),
        RecordingEvent::Subsystem { name } => Some((FragmentKind::Command, name.clone())),
        RecordingEvent::File { event, .. } => Some((
            FragmentKind::File,
            match event {
                FileEvent::Transfer { path, .. }
                | FileEvent::Remove { path }
                | FileEvent::Mkdir { path }
                | FileEvent::Rmdir { path }
                | FileEvent::SetStat { path } => path.clone(),
                FileEvent::Rename { from, to } => format!("{from} {to}"),
            },
        )),
        RecordingEvent::Keys { text, .. } => Some((FragmentKind::Keys, text.clone())),
        // What a second person typed into a joined terminal is in the cast's input stream,
        // indexed like the owner's typing: only where the terminal echoed it.
        RecordingEvent::Clipboard {
            text: Some(text), ..
        } => Some((FragmentKind::Clipboard, text.clone())),
        _ => None,
    }
}

/// A typed line waiting for the terminal to show it back.
struct Pending {
    at: f64,
    text: String,
    echo: String,
    /// Given up after this moment (cast clock).
    until: f64,
}

/// How long after its Enter a typed line may still be echoed (a client sends a whole line at
/// once; the echo follows).
const ECHO_WAIT_SECONDS: f64 = 2.0;

/// A line being typed, and finished lines waiting for their echo.
#[derive(Default)]
struct TypedLine {
    text: String,
    /// When its first character was typed (cast clock).
    started: Option<f64>,
    /// Cursor keys, completion or other editing made the line differ from what was typed.
    edited: bool,
    /// What the terminal showed since the line was started.
    echo: String,
    pending: Vec<Pending>,
}

fn keep_tail(text: &mut String) {
    if text.len() > ECHO_WINDOW_BYTES {
        let mut cut = text.len() - ECHO_WINDOW_BYTES;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text.drain(..cut);
    }
}

impl TypedLine {
    fn clear(&mut self) {
        self.text.clear();
        self.started = None;
        self.edited = false;
        self.echo.clear();
    }

    /// The line ends (Enter at `at`): worth indexing when typed as is, once it is shown back.
    fn finish(&mut self, at: f64, done: &mut Vec<(f64, String)>) {
        let text = self.text.trim().to_string();
        if !text.is_empty() && !self.edited {
            self.pending.push(Pending {
                at: self.started.unwrap_or(at),
                text,
                echo: std::mem::take(&mut self.echo),
                until: at + ECHO_WAIT_SECONDS,
            });
        }
        self.clear();
        self.settle(at, done);
    }

    /// Lines shown back are done; lines not shown back in time are dropped.
    fn settle(&mut self, now: f64, done: &mut Vec<(f64, String)>) {
        self.pending.retain(|line| {
            if line.echo.contains(&line.text) {
                done.push((line.at, line.text.clone()));
                false
            } else {
                now <= line.until
            }
        });
    }

    fn typed(&mut self, at: f64, data: &str, done: &mut Vec<(f64, String)>) {
        for character in data.chars() {
            match character {
                '\r' | '\n' => self.finish(at, done),
                '\u{7f}' | '\u{8}' => {
                    self.text.pop();
                }
                // Ctrl-C and Ctrl-U drop the line.
                '\u{3}' | '\u{15}' => self.clear(),
                c if c.is_control() => self.edited = true,
                c => {
                    if self.started.is_none() {
                        self.started = Some(at);
                    }
                    if self.text.chars().count() < LINE_MAX_CHARS {
                        self.text.push(c);
                    } else {
                        self.edited = true;
                    }
                }
            }
        }
    }

    fn shown(&mut self, at: f64, plain: &str, done: &mut Vec<(f64, String)>) {
        if self.started.is_some() {
            self.echo.push_str(plain);
            keep_tail(&mut self.echo);
        }
        for line in &mut self.pending {
            line.echo.push_str(plain);
            keep_tail(&mut line.echo);
        }
        self.settle(at, done);
    }
}

/// The output and echoed input fragments of one channel's terminal recording.
fn terminal(
    recorded: &RecordedSession,
    channel: u32,
    start: f64,
    emit: &mut dyn FnMut(Fragment),
) -> gatehouse_recording::Result<()> {
    let mut reader = CastReader::open(&recorded.channel_path(channel))?;
    let mut stripper = AnsiStripper::new();
    let mut plain = String::new();
    let mut fragment = String::new();
    let mut fragment_at = 0.0;
    let mut line = TypedLine::default();
    let mut done = Vec::new();
    let fragment_of = |kind, at: f64, text: String| Fragment {
        kind,
        channel: Some(channel),
        time: start + at,
        cast_time: Some(at),
        text,
    };
    while let Some(event) = reader.next_event()? {
        match event.kind {
            EventKind::Output => {
                plain.clear();
                stripper.push(&event.data, &mut plain);
                if plain.is_empty() {
                    continue;
                }
                line.shown(event.time, &plain, &mut done);
                for (at, text) in done.drain(..) {
                    emit(fragment_of(FragmentKind::Input, at, text));
                }
                // Output after a pause starts a new fragment: a hit's moment is within
                // FRAGMENT_SECONDS of what it matched. A line begun before stays whole.
                if !fragment.is_empty() && event.time - fragment_at >= FRAGMENT_SECONDS {
                    let cut = fragment.rfind('\n').map_or(fragment.len(), |at| at + 1);
                    let rest = fragment.split_off(cut);
                    let text = std::mem::replace(&mut fragment, rest);
                    if !text.trim().is_empty() {
                        emit(fragment_of(FragmentKind::Output, fragment_at, text));
                    }
                    fragment_at = event.time;
                }
                if fragment.is_empty() {
                    fragment_at = event.time;
                }
                fragment.push_str(&plain);
                let cut = if fragment.len() >= FRAGMENT_MAX_BYTES {
                    Some(fragment.len())
                } else if fragment.len() >= FRAGMENT_BYTES {
                    fragment.rfind('\n').map(|at| at + 1)
                } else {
                    None
                };
                if let Some(cut) = cut {
                    let rest = fragment.split_off(cut);
                    let text = std::mem::replace(&mut fragment, rest);
                    if !text.trim().is_empty() {
                        emit(fragment_of(FragmentKind::Output, fragment_at, text));
                    }
                    fragment_at = event.time;
                }
            }
            EventKind::Input => {
                line.typed(event.time, &event.data, &mut done);
                for (at, text) in done.drain(..) {
                    emit(fragment_of(FragmentKind::Input, at, text));
                }
            }
            EventKind::Resize | EventKind::Marker => {}
        }
    }
    if !fragment.trim().is_empty() {
        emit(fragment_of(FragmentKind::Output, fragment_at, fragment));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(steps: &[(&str, &str)]) -> Vec<String> {
        let mut line = TypedLine::default();
        let mut done = Vec::new();
        for (i, (kind, data)) in steps.iter().enumerate() {
            let at = i as f64;
            match *kind {
                "i" => line.typed(at, data, &mut done),
                _ => line.shown(at, data, &mut done),
            }
        }
        done.into_iter().map(|(_, text)| text).collect()
    }

    #[test]
    fn an_echoed_line_is_kept_and_an_unechoed_one_is_not() {
        let lines = typed(&[
            ("i", "ls -l"),
            ("o", "ls -l"),
            ("i", "\r"),
            // A whole line sent at once, echoed after.
            ("i", "uptime\n"),
            ("o", "uptime\r\n 12:00 up 3 days"),
            ("o", "\r\nPassword: "),
            ("i", "hunter2\r"),
            ("o", "\r\n"),
        ]);
        assert_eq!(lines, ["ls -l", "uptime"]);
    }

    #[test]
    fn backspace_edits_and_cursor_keys_drop_the_line() {
        let lines = typed(&[
            ("i", "echo hix"),
            ("i", "\u{7f}"),
            ("o", "echo hi"),
            ("i", "\r"),
            ("i", "cat \u{1b}[Af"),
            ("o", "cat f"),
            ("i", "\r"),
            ("i", "abc\u{3}"),
            ("i", "\r"),
        ]);
        assert_eq!(lines, ["echo hi"]);
    }
}
