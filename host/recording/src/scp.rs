//! Recognises legacy scp commands and follows their protocol stream to report file transfers, in
//! bounded memory and without ever failing the relay.
//!
//! The remote side of `scp` runs `scp -t <target>` (sink: the user uploads) or `scp -f <source>`
//! (source: the user downloads). The sending side writes control lines (`C0644 <size> <name>`,
//! `D0755 0 <dir>`, `E`, `T<times>`), each file's content, and a status byte after it. OpenSSH 9 `scp`
//! uses the sftp subsystem instead unless given `-O`; [`crate::sftp`] covers that case.

use crate::transfer::{Direction, FileEvent, MAX_PATH_BYTES, path_from_bytes};

/// Longest control line accepted: a type letter, mode, size and a name.
const MAX_LINE: usize = 64 + MAX_PATH_BYTES;

/// Deepest directory nesting followed.
const MAX_DEPTH: usize = 64;

/// Most events held until [`ScpInspector::take_events`]; further ones are dropped.
pub const MAX_PENDING_EVENTS: usize = 4096;

/// What an scp exec command asks the target to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScpMode {
    /// `-t` (sink) is an upload, `-f` (source) a download.
    pub direction: Direction,
    /// The operands: the one target of `-t`, the sources of `-f`.
    pub paths: Vec<String>,
    /// `-r` was given.
    pub recursive: bool,
    /// `-d` was given: the target must be a directory.
    pub target_is_dir: bool,
}

/// Recognises `scp -t ...` and `scp -f ...` exec commands; anything else, including an `scp` client
/// run on the target, a shell pipeline or a command with shell substitutions, is `None`.
pub fn is_scp_command(command: &str) -> Option<ScpMode> {
    let words = split_words(command)?;
    let (program, arguments) = words.split_first()?;
    if program.rsplit('/').next() != Some("scp") {
        return None;
    }
    let (mut sink, mut source, mut recursive, mut target_is_dir) = (false, false, false, false);
    let mut paths = Vec::new();
    let mut arguments = arguments.iter();
    let mut options_done = false;
    while let Some(word) = arguments.next() {
        if options_done || !word.starts_with('-') || word == "-" {
            paths.push(word.clone());
            continue;
        }
        if word == "--" {
            options_done = true;
            continue;
        }
        for (index, flag) in word.char_indices().skip(1) {
            match flag {
                't' => sink = true,
                'f' => source = true,
                'r' => recursive = true,
                'd' => target_is_dir = true,
                // Options that take a value: the rest of the word or the next word.
                'c' | 'D' | 'F' | 'i' | 'J' | 'l' | 'o' | 'P' | 'S' | 'X' => {
                    if index + flag.len_utf8() == word.len() {
                        arguments.next()?;
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    let direction = match (sink, source) {
        (true, false) if paths.len() == 1 => Direction::Upload,
        (false, true) if !paths.is_empty() => Direction::Download,
        _ => return None,
    };
    Some(ScpMode {
        direction,
        paths,
        recursive,
        target_is_dir,
    })
}

/// Splits a command line like a POSIX shell would, for the simple commands scp clients send.
/// Returns `None` when the line uses anything beyond words and quotes.
fn split_words(command: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut characters = command.chars();
    while let Some(character) = characters.next() {
        match character {
            ' ' | '\t' => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match characters.next()? {
                        '\'' => break,
                        other => current.push(other),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match characters.next()? {
                        '"' => break,
                        '\\' => match characters.next()? {
                            escaped @ ('"' | '\\' | '$' | '`') => current.push(escaped),
                            other => {
                                current.push('\\');
                                current.push(other);
                            }
                        },
                        '$' | '`' => return None,
                        other => current.push(other),
                    }
                }
            }
            '\\' => word
                .get_or_insert_with(String::new)
                .push(characters.next()?),
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' | '\n' | '\r' => return None,
            other => word.get_or_insert_with(String::new).push(other),
        }
    }
    words.extend(word);
    Some(words)
}

fn join(directory: &str, name: &str) -> String {
    if directory.is_empty() {
        name.to_owned()
    } else if directory.ends_with('/') {
        format!("{directory}{name}")
    } else {
        format!("{directory}/{name}")
    }
}

/// `path` without trailing slashes (but `/` stays `/`).
fn trim_slashes(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() && !path.is_empty() {
        "/"
    } else {
        trimmed
    }
}

fn parent(path: &str) -> &str {
    match trim_slashes(path).rfind('/') {
        Some(0) => "/",
        Some(index) => &path[..index],
        None => "",
    }
}

fn base_name(path: &str) -> &str {
    let trimmed = trim_slashes(path);
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Reading a control line.
    Line,
    /// Reading a warning or error message line, which is skipped.
    Message,
    /// Skipping file content.
    Content,
    /// Waiting for the status byte after the content.
    Status,
}

#[derive(Debug)]
struct CurrentFile {
    path: String,
    size: u64,
    seen: u64,
}

/// The stream is not the scp protocol as understood here; inspection stops.
#[derive(Debug)]
struct Garbage;

/// Follows an scp exec channel and reports [`FileEvent::Transfer`]s.
///
/// Only the sending side's stream is parsed (client to server for an upload, server to client for a
/// download); acknowledgements from the receiving side are ignored, so a transfer that the receiver
/// refused to write is still reported as sent. Content is skipped by count; a control line is kept
/// until its newline, at most 4 KiB and a bit. A stream that is not the scp protocol stops the
/// inspection quietly.
#[derive(Debug)]
pub struct ScpInspector {
    mode: ScpMode,
    stage: Stage,
    line: Vec<u8>,
    /// Directories entered with `D`, as full paths.
    directories: Vec<String>,
    file: Option<CurrentFile>,
    events: Vec<FileEvent>,
    stopped: bool,
}

impl ScpInspector {
    /// An inspector for a channel running the command `mode` came from.
    pub fn new(mode: ScpMode) -> Self {
        Self {
            mode,
            stage: Stage::Line,
            line: Vec::new(),
            directories: Vec::new(),
            file: None,
            events: Vec::new(),
            stopped: false,
        }
    }

    /// Bytes the client sent to the server.
    pub fn client_to_server(&mut self, bytes: &[u8]) {
        if self.mode.direction == Direction::Upload {
            self.feed(bytes);
        }
    }

    /// Bytes the server sent to the client.
    pub fn server_to_client(&mut self, bytes: &[u8]) {
        if self.mode.direction == Direction::Download {
            self.feed(bytes);
        }
    }

    /// Events seen since the last call.
    pub fn take_events(&mut self) -> Vec<FileEvent> {
        std::mem::take(&mut self.events)
    }

    /// The channel closed: events not taken yet, then the file being sent, if any, with
    /// `complete: false`.
    pub fn finish(&mut self) -> Vec<FileEvent> {
        if let Some(file) = self.file.take() {
            self.emit_transfer(file, false);
        }
        self.take_events()
    }

    /// Whether inspection stopped because the stream was not the scp protocol.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.stopped {
            return;
        }
        if self.parse(bytes).is_err() {
            tracing::warn!("scp stream not understood; file transfers are no longer inspected");
            self.stopped = true;
            self.line = Vec::new();
            self.directories = Vec::new();
            self.file = None;
        }
    }

    fn parse(&mut self, mut bytes: &[u8]) -> Result<(), Garbage> {
        while !bytes.is_empty() {
            match self.stage {
                Stage::Line | Stage::Message => {
                    let end = bytes.iter().position(|byte| *byte == b'\n');
                    let taken = end.map_or(bytes.len(), |index| index + 1);
                    if self.line.len() + taken > MAX_LINE + 1 {
                        return Err(Garbage);
                    }
                    self.line.extend_from_slice(&bytes[..taken]);
                    bytes = &bytes[taken..];
                    if end.is_some() {
                        let line = std::mem::take(&mut self.line);
                        if self.stage == Stage::Line {
                            self.control_line(&line)?;
                        } else {
                            self.stage = Stage::Line;
                        }
                        self.line = line;
                        self.line.clear();
                    }
                }
                Stage::Content => {
                    let file = self.file.as_mut().ok_or(Garbage)?;
                    let left = file.size - file.seen;
                    let taken = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    file.seen += taken as u64;
                    bytes = &bytes[taken..];
                    if file.seen == file.size {
                        self.stage = Stage::Status;
                    }
                }
                Stage::Status => {
                    let status = bytes[0];
                    bytes = &bytes[1..];
                    let file = self.file.take().ok_or(Garbage)?;
                    match status {
                        0 => {
                            self.emit_transfer(file, true);
                            self.stage = Stage::Line;
                        }
                        1 | 2 => {
                            self.emit_transfer(file, false);
                            self.stage = Stage::Message;
                        }
                        _ => return Err(Garbage),
                    }
                }
            }
        }
        Ok(())
    }

    fn control_line(&mut self, line: &[u8]) -> Result<(), Garbage> {
        let (&kind, rest) = line.split_first().ok_or(Garbage)?;
        let rest = rest.strip_suffix(b"\n").ok_or(Garbage)?;
        match kind {
            b'C' | b'D' => {
                let (size, name) = parse_entry(rest)?;
                let path = self.entry_path(&path_from_bytes(name));
                if kind == b'D' {
                    if self.directories.len() >= MAX_DEPTH {
                        return Err(Garbage);
                    }
                    self.directories.push(path);
                } else {
                    self.file = Some(CurrentFile {
                        path,
                        size,
                        seen: 0,
                    });
                    self.stage = if size == 0 {
                        Stage::Status
                    } else {
                        Stage::Content
                    };
                }
            }
            b'E' if rest.is_empty() => {
                self.directories.pop().ok_or(Garbage)?;
            }
            b'T' if is_times(rest) => {}
            // A warning or error from the sender: "\x01scp: /x: No such file or directory".
            1 | 2 => {}
            _ => return Err(Garbage),
        }
        Ok(())
    }

    /// Where an entry named `name` lands (upload) or comes from (download).
    fn entry_path(&self, name: &str) -> String {
        if let Some(directory) = self.directories.last() {
            return path_from_bytes(join(directory, name).as_bytes());
        }
        let path = match self.mode.direction {
            Direction::Upload => {
                let target = self.mode.paths.first().map_or("", String::as_str);
                let is_dir = self.mode.target_is_dir
                    || target.ends_with('/')
                    || matches!(trim_slashes(target), "" | "." | "~" | "/");
                if is_dir {
                    join(target, name)
                } else {
                    target.to_owned()
                }
            }
            Direction::Download => {
                let named = self.mode.paths.iter().find(|path| base_name(path) == name);
                match named {
                    Some(path) => trim_slashes(path).to_owned(),
                    None => {
                        let first = self.mode.paths.first().map_or("", String::as_str);
                        join(parent(first), name)
                    }
                }
            }
        };
        path_from_bytes(path.as_bytes())
    }

    fn emit_transfer(&mut self, file: CurrentFile, complete: bool) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            return;
        }
        self.events.push(FileEvent::Transfer {
            direction: self.mode.direction,
            path: file.path,
            bytes: file.seen,
            complete,
        });
    }

    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        self.line.capacity()
    }
}

/// Parses `<mode> <size> <name>` of a `C` or `D` line.
fn parse_entry(rest: &[u8]) -> Result<(u64, &[u8]), Garbage> {
    let mut parts = rest.splitn(3, |byte| *byte == b' ');
    let mode = parts.next().ok_or(Garbage)?;
    let size = parts.next().ok_or(Garbage)?;
    let name = parts.next().ok_or(Garbage)?;
    let mode_is_octal =
        (3..=4).contains(&mode.len()) && mode.iter().all(|b| (b'0'..=b'7').contains(b));
    let size: u64 = std::str::from_utf8(size)
        .ok()
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or(Garbage)?;
    let name_is_plain = !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/');
    if mode_is_octal && name_is_plain {
        Ok((size, name))
    } else {
        Err(Garbage)
    }
}

/// Whether `rest` is `<mtime> <usec> <atime> <usec>` of a `T` line.
fn is_times(rest: &[u8]) -> bool {
    let parts: Vec<&[u8]> = rest.split(|byte| *byte == b' ').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.len() <= 20 && part.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
#[path = "scp_tests.rs"]
mod tests;
