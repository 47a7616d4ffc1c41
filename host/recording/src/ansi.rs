//! Removes ANSI/VT escape sequences from terminal output so recordings can be searched as plain text.

/// Where the stripper is inside an escape sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Plain text.
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// After ESC followed by intermediate bytes (0x20..=0x2F), waiting for the final byte.
    EscapeIntermediate,
    /// Inside a control sequence (ESC `[` or CSI), waiting for a final byte in 0x40..=0x7E.
    Csi,
    /// Inside a string (OSC, DCS, SOS, PM, APC), ended by BEL (OSC only) or ST.
    String { bel_ends: bool },
    /// Inside a string, just after an ESC that may start ST (ESC `\`).
    StringEscape { bel_ends: bool },
}

/// Strips escape sequences from text fed in pieces; a sequence may be split across pieces.
///
/// Kept: printable text, `\n` and `\t`. Dropped: escape sequences, `\r` and other control characters.
#[derive(Debug, Default, Clone)]
pub struct AnsiStripper {
    state: State,
}

impl AnsiStripper {
    /// A stripper in the plain-text state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the plain text of `input` to `out`.
    pub fn push(&mut self, input: &str, out: &mut String) {
        for character in input.chars() {
            self.state = self.next(character, out);
        }
    }

    fn next(&self, character: char, out: &mut String) -> State {
        let code = u32::from(character);
        match self.state {
            State::Text => match character {
                '\u{1b}' => State::Escape,
                '\u{9b}' => State::Csi,
                '\u{9d}' => State::String { bel_ends: true },
                '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => State::String { bel_ends: false },
                '\n' | '\t' => {
                    out.push(character);
                    State::Text
                }
                _ if character.is_control() => State::Text,
                _ => {
                    out.push(character);
                    State::Text
                }
            },
            State::Escape => match character {
                '[' => State::Csi,
                ']' => State::String { bel_ends: true },
                'P' | 'X' | '^' | '_' => State::String { bel_ends: false },
                '\u{1b}' => State::Escape,
                _ if (0x20..=0x2f).contains(&code) => State::EscapeIntermediate,
                _ => State::Text,
            },
            State::EscapeIntermediate => match code {
                0x20..=0x2f => State::EscapeIntermediate,
                0x1b => State::Escape,
                _ => State::Text,
            },
            State::Csi => match code {
                0x40..=0x7e => State::Text,
                0x1b => State::Escape,
                0x18 | 0x1a => State::Text,
                _ => State::Csi,
            },
            State::String { bel_ends } => match code {
                0x07 if bel_ends => State::Text,
                0x1b => State::StringEscape { bel_ends },
                0x9c | 0x18 | 0x1a => State::Text,
                _ => State::String { bel_ends },
            },
            State::StringEscape { bel_ends } => match character {
                '\\' => State::Text,
                '\u{1b}' => State::StringEscape { bel_ends },
                _ => State::String { bel_ends },
            },
        }
    }
}

/// Strips escape sequences from a complete piece of text.
pub fn strip(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    AnsiStripper::new().push(input, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASES: &[(&str, &str, &str)] = &[
        ("plain", "hello world\n", "hello world\n"),
        ("crlf", "line one\r\nline two\r\n", "line one\nline two\n"),
        (
            "sgr colours",
            "\x1b[1;31merror\x1b[0m: disk full",
            "error: disk full",
        ),
        ("cursor moves", "\x1b[H\x1b[2J\x1b[10;20Hx", "x"),
        ("private mode", "\x1b[?2004h$ \x1b[?2004l", "$ "),
        ("osc title bel", "\x1b]0;alice@db1: ~\x07$ ls", "$ ls"),
        ("osc title st", "\x1b]2;title\x1b\\prompt", "prompt"),
        ("dcs", "\x1bPq#0;2;0;0;0\x1b\\after", "after"),
        ("charset", "\x1b(B\x1b)0text", "text"),
        ("keypad", "\x1b=\x1b>ok", "ok"),
        ("c1 csi", "\u{9b}31mred", "red"),
        ("bell and backspace", "a\x07b\x08c", "abc"),
        ("tabs kept", "a\tb", "a\tb"),
        (
            "unicode kept",
            "caf\u{e9} \u{2500}\u{1f600}",
            "caf\u{e9} \u{2500}\u{1f600}",
        ),
        ("cancelled csi", "\x1b[12\x18x", "x"),
        (
            "rm -rf",
            "\x1b[01;32mroot@db1\x1b[00m:~# rm -rf /var/lib\r\n",
            "root@db1:~# rm -rf /var/lib\n",
        ),
    ];

    #[test]
    fn escape_sequences_are_removed() {
        for (name, input, expected) in CASES {
            assert_eq!(strip(input), *expected, "{name}");
        }
    }

    #[test]
    fn a_sequence_split_across_pieces_is_still_removed() {
        for (name, input, expected) in CASES {
            let characters: Vec<char> = input.chars().collect();
            for split in 0..=characters.len() {
                let left: String = characters[..split].iter().collect();
                let right: String = characters[split..].iter().collect();
                let mut stripper = AnsiStripper::new();
                let mut out = String::new();
                stripper.push(&left, &mut out);
                stripper.push(&right, &mut out);
                assert_eq!(out, *expected, "{name} split at {split}");
            }
        }
    }
}
