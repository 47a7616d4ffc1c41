//! A terminal recording for a browser player and for search: the output stream with idle
//! pauses shortened ([`playback`], with the [`IdleCuts`] that map session times onto the
//! shortened clock), and a case-insensitive search of the text the terminal showed
//! ([`output_contains`]).
//!
//! Both read only what the target printed (`"o"`), the resizes and the markers, never the
//! user's keystrokes (`"i"`): what a shell echoes is in its output, and what it does not echo
//! (a password typed at a `sudo` or `read -s` prompt) must be neither searchable nor replayed.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::ansi::AnsiStripper;
use crate::cast::{self, EventKind};
use crate::error::{RecordingError, Result};
use crate::player::CastReader;

/// One shortened pause: the output at `start` and the next at `end` were more than the limit
/// apart.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cut {
    start: f64,
    end: f64,
    /// Seconds removed by this cut and every earlier one.
    removed: f64,
}

/// Where [`playback`] shortened the pauses of a recording, to map a time of the recording
/// (seconds from the cast file's start) onto the shortened clock the player shows.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleCuts {
    limit: f64,
    cuts: Vec<Cut>,
}

impl IdleCuts {
    /// The player's time for recording time `at` (seconds): earlier cuts subtracted, a moment
    /// inside a shortened pause placed at most the limit after its start.
    pub fn playback_time(&self, at: f64) -> f64 {
        let at = at.max(0.0);
        let done = self.cuts.partition_point(|cut| cut.end <= at);
        let removed = done
            .checked_sub(1)
            .and_then(|i| self.cuts.get(i))
            .map_or(0.0, |cut| cut.removed);
        match self.cuts.get(done) {
            Some(cut) if cut.start < at => cut.start - removed + (at - cut.start).min(self.limit),
            _ => at - removed,
        }
    }

    /// Seconds of idle time removed in all.
    pub fn removed(&self) -> f64 {
        self.cuts.last().map_or(0.0, |cut| cut.removed)
    }

    /// How many pauses were shortened.
    pub fn count(&self) -> usize {
        self.cuts.len()
    }
}

/// Writes the cast file at `path` to `out` as an asciicast v2 file for a player: the output,
/// resize and marker events with every pause longer than `max_idle` shortened to it (the
/// header's `idle_time_limit` says so), the input events left out. Returns the cuts made.
/// Streams: memory holds one event and one entry per shortened pause.
pub fn playback(path: &Path, max_idle: Duration, out: &mut impl Write) -> Result<IdleCuts> {
    let limit = max_idle.as_secs_f64();
    let mut reader = CastReader::open(path)?;
    let mut header = reader.header.clone();
    header.idle_time_limit = Some(limit);
    header.duration = None;
    cast::write_header(&mut *out, &header).map_err(RecordingError::Output)?;
    let mut cuts = Vec::new();
    let mut removed = 0.0_f64;
    let mut previous = 0.0_f64;
    while let Some(event) = reader.next_event()? {
        if event.kind == EventKind::Input {
            continue;
        }
        let time = event.time.max(previous);
        let pause = time - previous;
        if pause > limit {
            removed += pause - limit;
            cuts.push(Cut {
                start: previous,
                end: time,
                removed,
            });
        }
        previous = time;
        let shown = Duration::try_from_secs_f64(time - removed).unwrap_or_default();
        cast::write_event(&mut *out, shown, event.kind, &event.data)
            .map_err(RecordingError::Output)?;
    }
    out.flush().map_err(RecordingError::Output)?;
    Ok(IdleCuts { limit, cuts })
}

/// The cuts [`playback`] makes in the cast file at `path`, without writing anything.
pub fn idle_cuts(path: &Path, max_idle: Duration) -> Result<IdleCuts> {
    playback(path, max_idle, &mut std::io::sink())
}

/// Whether the text the terminal showed in the cast file at `path` (escape sequences and
/// control characters removed, as [`crate::text`]) contains `needle`, ignoring case. Matches
/// across event boundaries; memory holds one event and the needle's length of text.
pub fn output_contains(path: &Path, needle: &str) -> Result<bool> {
    let needle = needle.to_lowercase();
    if needle.is_empty() {
        return Ok(true);
    }
    let keep = needle.chars().count().saturating_sub(1);
    let mut reader = CastReader::open(path)?;
    let mut stripper = AnsiStripper::new();
    let mut plain = String::new();
    let mut window = String::new();
    while let Some(event) = reader.next_event()? {
        if event.kind != EventKind::Output {
            continue;
        }
        plain.clear();
        stripper.push(&event.data, &mut plain);
        window.push_str(&plain.to_lowercase());
        if window.contains(&needle) {
            return Ok(true);
        }
        let chars = window.chars().count();
        if chars > keep {
            let cut = window
                .char_indices()
                .nth(chars - keep)
                .map_or(window.len(), |(i, _)| i);
            window.drain(..cut);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::player::read_cast;

    const HEADER: &str = r#"{"version":2,"width":80,"height":24,"timestamp":1700000000}"#;

    fn cast_file(dir: &tempfile::TempDir, events: &str) -> std::path::PathBuf {
        let path = dir.path().join("channel-0.cast");
        std::fs::write(&path, format!("{HEADER}\n{events}")).unwrap();
        path
    }

    #[test]
    fn long_pauses_are_shortened_and_times_map_through_the_same_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let path = cast_file(
            &dir,
            "[0.5, \"o\", \"$ \"]\n[1.0, \"i\", \"l\"]\n[1.2, \"o\", \"l\"]\n\
             [31.2, \"o\", \"s\"]\n[31.5, \"r\", \"100x30\"]\n[92.0, \"o\", \"\\r\\n\"]\n\
             [92.5, \"m\", \"end\"]\n",
        );
        let mut out = Vec::new();
        let cuts = playback(&path, Duration::from_secs(2), &mut out).unwrap();
        assert_eq!(cuts.count(), 2);
        assert!((cuts.removed() - (28.0 + 58.5)).abs() < 1e-9, "{cuts:?}");

        let written = dir.path().join("played.cast");
        std::fs::write(&written, &out).unwrap();
        let played = read_cast(&written).unwrap();
        assert_eq!(played.header.idle_time_limit, Some(2.0));
        let times: Vec<(f64, &str)> = played
            .events
            .iter()
            .map(|e| (e.time, e.kind.code()))
            .collect();
        assert_eq!(
            times,
            [
                (0.5, "o"),
                (1.2, "o"),
                (3.2, "o"),
                (3.5, "r"),
                (5.5, "o"),
                (6.0, "m")
            ]
        );
        // Every event's own time maps onto where the player shows it.
        let source = read_cast(&path).unwrap();
        for (from, to) in source
            .events
            .iter()
            .filter(|e| e.kind != EventKind::Input)
            .zip(&played.events)
        {
            let mapped = cuts.playback_time(from.time);
            assert!(
                (mapped - to.time).abs() < 1e-5,
                "{from:?} -> {mapped}, not {to:?}"
            );
        }
        // Inside a shortened pause: at most the limit after its start.
        assert!((cuts.playback_time(2.0) - 2.0).abs() < 1e-9);
        assert!((cuts.playback_time(20.0) - 3.2).abs() < 1e-9);
        assert!((cuts.playback_time(100.0) - 13.5).abs() < 1e-9);
        assert_eq!(cuts.playback_time(-1.0), 0.0);
    }

    #[test]
    fn keystrokes_are_never_played_nor_searched() {
        let dir = tempfile::tempdir().unwrap();
        // A password typed at a prompt that does not echo it: only in the input stream.
        let path = cast_file(
            &dir,
            "[0.1, \"o\", \"[sudo] password: \"]\n[0.5, \"i\", \"Hunter2-secret\\r\"]\n\
             [0.6, \"o\", \"\\r\\nok\\r\\n\"]\n",
        );
        let mut out = Vec::new();
        playback(&path, Duration::from_secs(2), &mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("Hunter2"));
        assert!(!output_contains(&path, "hunter2").unwrap());
        assert!(output_contains(&path, "PASSWORD: ").unwrap());
    }

    #[test]
    fn search_ignores_escapes_and_case_and_spans_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = cast_file(
            &dir,
            "[0.1, \"o\", \"\\u001b[1;32muser@host\\u001b[0m:~$ \"]\n[0.2, \"o\", \"ec\"]\n\
             [0.3, \"o\", \"ho Mark\"]\n[0.4, \"o\", \"\\u001b[Ker-\\u00e9t\\u00e9\\r\\n\"]\n",
        );
        for (needle, found) in [
            ("user@host:~$", true),
            ("echo marker-été", true),
            ("MARKER-ÉTÉ", true),
            ("[1;32m", false),
            ("marker-x", false),
            ("", true),
        ] {
            assert_eq!(output_contains(&path, needle).unwrap(), found, "{needle:?}");
        }
    }
}
