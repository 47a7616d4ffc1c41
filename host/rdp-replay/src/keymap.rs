//! Scancodes (set 1, as RDP carries them) to text with a US keyboard layout.

/// What one key press produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    /// A printable character: unshifted and shifted, and whether Caps Lock shifts it.
    Char {
        plain: char,
        shifted: char,
        letter: bool,
    },
    /// A key with a name, written `<Name>` in a text run.
    Named(&'static str),
    Shift,
    Ctrl,
    Alt,
    Win,
    CapsLock,
    NumLock,
    /// A keypad key: its character with Num Lock on, its name with Num Lock off.
    Keypad {
        digit: char,
        name: &'static str,
    },
    Unknown,
}

const fn ch(plain: char, shifted: char) -> Key {
    Key::Char {
        plain,
        shifted,
        letter: false,
    }
}

const fn letter(plain: char) -> Key {
    Key::Char {
        plain,
        shifted: plain.to_ascii_uppercase(),
        letter: true,
    }
}

/// The key for a scancode; `extended` is the KBDFLAGS_EXTENDED (0xE0 prefix) flag.
pub(crate) fn key(code: u8, extended: bool) -> Key {
    if extended {
        return match code {
            0x1c => Key::Named("Enter"),
            0x1d => Key::Ctrl,
            0x35 => ch('/', '/'),
            0x38 => Key::Alt,
            0x47 => Key::Named("Home"),
            0x48 => Key::Named("Up"),
            0x49 => Key::Named("PageUp"),
            0x4b => Key::Named("Left"),
            0x4d => Key::Named("Right"),
            0x4f => Key::Named("End"),
            0x50 => Key::Named("Down"),
            0x51 => Key::Named("PageDown"),
            0x52 => Key::Named("Insert"),
            0x53 => Key::Named("Delete"),
            0x5b | 0x5c => Key::Win,
            0x5d => Key::Named("Menu"),
            0x37 => Key::Named("PrintScreen"),
            _ => Key::Unknown,
        };
    }
    match code {
        0x01 => Key::Named("Esc"),
        0x02 => ch('1', '!'),
        0x03 => ch('2', '@'),
        0x04 => ch('3', '#'),
        0x05 => ch('4', '$'),
        0x06 => ch('5', '%'),
        0x07 => ch('6', '^'),
        0x08 => ch('7', '&'),
        0x09 => ch('8', '*'),
        0x0a => ch('9', '('),
        0x0b => ch('0', ')'),
        0x0c => ch('-', '_'),
        0x0d => ch('=', '+'),
        0x0e => Key::Named("Backspace"),
        0x0f => Key::Named("Tab"),
        0x10 => letter('q'),
        0x11 => letter('w'),
        0x12 => letter('e'),
        0x13 => letter('r'),
        0x14 => letter('t'),
        0x15 => letter('y'),
        0x16 => letter('u'),
        0x17 => letter('i'),
        0x18 => letter('o'),
        0x19 => letter('p'),
        0x1a => ch('[', '{'),
        0x1b => ch(']', '}'),
        0x1c => Key::Named("Enter"),
        0x1d => Key::Ctrl,
        0x1e => letter('a'),
        0x1f => letter('s'),
        0x20 => letter('d'),
        0x21 => letter('f'),
        0x22 => letter('g'),
        0x23 => letter('h'),
        0x24 => letter('j'),
        0x25 => letter('k'),
        0x26 => letter('l'),
        0x27 => ch(';', ':'),
        0x28 => ch('\'', '"'),
        0x29 => ch('`', '~'),
        0x2a | 0x36 => Key::Shift,
        0x2b => ch('\\', '|'),
        0x2c => letter('z'),
        0x2d => letter('x'),
        0x2e => letter('c'),
        0x2f => letter('v'),
        0x30 => letter('b'),
        0x31 => letter('n'),
        0x32 => letter('m'),
        0x33 => ch(',', '<'),
        0x34 => ch('.', '>'),
        0x35 => ch('/', '?'),
        0x37 => ch('*', '*'),
        0x38 => Key::Alt,
        0x39 => ch(' ', ' '),
        0x3a => Key::CapsLock,
        0x3b => Key::Named("F1"),
        0x3c => Key::Named("F2"),
        0x3d => Key::Named("F3"),
        0x3e => Key::Named("F4"),
        0x3f => Key::Named("F5"),
        0x40 => Key::Named("F6"),
        0x41 => Key::Named("F7"),
        0x42 => Key::Named("F8"),
        0x43 => Key::Named("F9"),
        0x44 => Key::Named("F10"),
        0x45 => Key::NumLock,
        0x46 => Key::Named("ScrollLock"),
        0x47 => Key::Keypad {
            digit: '7',
            name: "Home",
        },
        0x48 => Key::Keypad {
            digit: '8',
            name: "Up",
        },
        0x49 => Key::Keypad {
            digit: '9',
            name: "PageUp",
        },
        0x4a => ch('-', '-'),
        0x4b => Key::Keypad {
            digit: '4',
            name: "Left",
        },
        0x4c => Key::Keypad {
            digit: '5',
            name: "Clear",
        },
        0x4d => Key::Keypad {
            digit: '6',
            name: "Right",
        },
        0x4e => ch('+', '+'),
        0x4f => Key::Keypad {
            digit: '1',
            name: "End",
        },
        0x50 => Key::Keypad {
            digit: '2',
            name: "Down",
        },
        0x51 => Key::Keypad {
            digit: '3',
            name: "PageDown",
        },
        0x52 => Key::Keypad {
            digit: '0',
            name: "Insert",
        },
        0x53 => Key::Keypad {
            digit: '.',
            name: "Delete",
        },
        0x57 => Key::Named("F11"),
        0x58 => Key::Named("F12"),
        _ => Key::Unknown,
    }
}
