//! X keysyms (what RFB KeyEvents carry) to searchable text.
//!
//! A VNC client sends the keysym of the character the user's layout produced (`A`, not
//! Shift plus `a`), so unlike RDP scancodes no layout is needed: printable Latin-1 keysyms
//! and Unicode keysyms (`0x0100_0000 + code point`) are their characters. Return becomes a
//! newline and Tab a tab; other keys are written `<Name>` with the names the RDP keystroke
//! search uses (`<Backspace>`, `<Escape>`, `<Up>`, ...), and a character typed with Control,
//! Alt or Super held is written as a chord (`<Ctrl+C>`).

/// What one keysym means for text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyText {
    Char(char),
    /// A key with a name, written `<Name>` in text (Return and Tab are characters).
    Named(&'static str),
    Modifier(Modifier),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    Shift,
    Control,
    Alt,
    Super,
}

/// What `keysym` produces, or `None` for keys that mean nothing in text (dead keys, lock
/// keys, media keys, unknown keysyms).
pub fn keysym_text(keysym: u32) -> Option<KeyText> {
    let named = |name| Some(KeyText::Named(name));
    match keysym {
        0x20..=0x7e | 0xa0..=0xff => char::from_u32(keysym).map(KeyText::Char),
        0x0100_0100..=0x0110_ffff => char::from_u32(keysym - 0x0100_0000)
            .filter(|c| !c.is_control())
            .map(KeyText::Char),
        0xff0d | 0xff8d => Some(KeyText::Char('\n')),
        0xff09 | 0xff89 => Some(KeyText::Char('\t')),
        0xff80 => Some(KeyText::Char(' ')),
        0xffb0..=0xffb9 => char::from_u32(u32::from(b'0') + (keysym - 0xffb0)).map(KeyText::Char),
        0xffaa => Some(KeyText::Char('*')),
        0xffab => Some(KeyText::Char('+')),
        0xffad => Some(KeyText::Char('-')),
        0xffae => Some(KeyText::Char('.')),
        0xffaf => Some(KeyText::Char('/')),
        0xffbd => Some(KeyText::Char('=')),
        0xff08 => named("Backspace"),
        0xff1b => named("Escape"),
        0xffff | 0xff9f => named("Delete"),
        0xff50 | 0xff95 => named("Home"),
        0xff51 | 0xff96 => named("Left"),
        0xff52 | 0xff97 => named("Up"),
        0xff53 | 0xff98 => named("Right"),
        0xff54 | 0xff99 => named("Down"),
        0xff55 | 0xff9a => named("PageUp"),
        0xff56 | 0xff9b => named("PageDown"),
        0xff57 | 0xff9c => named("End"),
        0xff63 | 0xff9e => named("Insert"),
        0xff61 => named("PrintScreen"),
        0xff13 => named("Pause"),
        0xff67 => named("Menu"),
        0xffbe..=0xffc9 => Some(KeyText::Named(FUNCTION_KEYS[(keysym - 0xffbe) as usize])),
        0xffe1 | 0xffe2 => Some(KeyText::Modifier(Modifier::Shift)),
        0xffe3 | 0xffe4 => Some(KeyText::Modifier(Modifier::Control)),
        0xffe7..=0xffea => Some(KeyText::Modifier(Modifier::Alt)),
        0xffeb | 0xffec => Some(KeyText::Modifier(Modifier::Super)),
        _ => None,
    }
}

const FUNCTION_KEYS: [&str; 12] = [
    "F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8", "F9", "F10", "F11", "F12",
];

/// The most bytes [`TypedText`] holds before it drops keystrokes (take the text regularly).
pub const MAX_TYPED_TEXT: usize = 64 * 1024;

/// Turns a stream of key events into text: characters as typed, `\n` for Return, `<Name>`
/// for other keys, `<Ctrl+C>`-style chords. Key releases only update the modifier state.
#[derive(Debug, Clone, Default)]
pub struct TypedText {
    text: String,
    control: bool,
    alt: bool,
    super_key: bool,
    dropped: u64,
}

impl TypedText {
    pub fn new() -> TypedText {
        TypedText::default()
    }

    /// Feeds one RFB KeyEvent.
    pub fn key(&mut self, down: bool, keysym: u32) {
        let Some(text) = keysym_text(keysym) else {
            return;
        };
        let piece = match text {
            KeyText::Modifier(modifier) => {
                match modifier {
                    Modifier::Control => self.control = down,
                    Modifier::Alt => self.alt = down,
                    Modifier::Super => self.super_key = down,
                    Modifier::Shift => {}
                }
                return;
            }
            _ if !down => return,
            KeyText::Char(c) if !self.chord(c) => c.to_string(),
            KeyText::Char(c) => {
                let name = match c {
                    '\n' => "Enter".to_string(),
                    '\t' => "Tab".to_string(),
                    ' ' => "Space".to_string(),
                    c => c.to_uppercase().collect(),
                };
                self.chord_text(&name)
            }
            KeyText::Named(name) if self.control || self.alt || self.super_key => {
                self.chord_text(name)
            }
            KeyText::Named(name) => format!("<{name}>"),
        };
        if self.text.len() + piece.len() > MAX_TYPED_TEXT {
            self.dropped += 1;
            return;
        }
        self.text.push_str(&piece);
    }

    /// Whether `c` typed now is a chord rather than a character. Alt alone with a symbol is
    /// taken as AltGr (some clients send Alt_R for it) and gives the character.
    fn chord(&self, c: char) -> bool {
        self.control || self.super_key || (self.alt && (c.is_alphanumeric() || c.is_whitespace()))
    }

    fn chord_text(&self, key: &str) -> String {
        let mut out = String::from("<");
        for (held, name) in [
            (self.control, "Ctrl+"),
            (self.alt, "Alt+"),
            (self.super_key, "Super+"),
        ] {
            if held {
                out.push_str(name);
            }
        }
        out.push_str(key);
        out.push('>');
        out
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text so far; the modifier state is kept.
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.text)
    }

    /// Keystrokes dropped because the text was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(events: &[(bool, u32)]) -> String {
        let mut text = TypedText::new();
        for &(down, keysym) in events {
            text.key(down, keysym);
        }
        text.take()
    }

    fn press(keysym: u32) -> [(bool, u32); 2] {
        [(true, keysym), (false, keysym)]
    }

    #[test]
    fn keysyms_to_text() {
        let cases: &[(u32, Option<KeyText>)] = &[
            (0x61, Some(KeyText::Char('a'))),
            (0x41, Some(KeyText::Char('A'))),
            (0xe9, Some(KeyText::Char('é'))),
            (0x0100_20ac, Some(KeyText::Char('€'))),
            (0xff0d, Some(KeyText::Char('\n'))),
            (0xff08, Some(KeyText::Named("Backspace"))),
            (0xffc9, Some(KeyText::Named("F12"))),
            (0xffb7, Some(KeyText::Char('7'))),
            (0xffe3, Some(KeyText::Modifier(Modifier::Control))),
            (0xfe52, None),
            (0x1f, None),
            (0x0100_0007, None),
            (u32::MAX, None),
        ];
        for &(keysym, expected) in cases {
            assert_eq!(keysym_text(keysym), expected, "keysym {keysym:#x}");
        }
    }

    #[test]
    fn typing_becomes_searchable_text() {
        let mut events = Vec::new();
        for keysym in [0x6c, 0x73, 0x20, 0x2d, 0x6c, 0xff08, 0x61, 0xff0d] {
            events.extend(press(keysym));
        }
        events.push((true, 0xffe3));
        events.extend(press(0x63));
        events.push((false, 0xffe3));
        events.push((true, 0xffe9));
        events.extend(press(0x40));
        events.extend(press(0xff09));
        events.push((false, 0xffe9));
        assert_eq!(typed(&events), "ls -l<Backspace>a\n<Ctrl+C>@<Alt+Tab>");
    }

    #[test]
    fn text_is_bounded() {
        let mut text = TypedText::new();
        for _ in 0..MAX_TYPED_TEXT + 10 {
            text.key(true, 0x61);
        }
        assert_eq!(text.text().len(), MAX_TYPED_TEXT);
        assert_eq!(text.dropped(), 10);
    }
}
