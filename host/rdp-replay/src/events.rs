//! Searchable events from a recorded (or live) PDU stream: typed text from fast-path and
//! slow-path input, and clipboard transfers on the `cliprdr` static virtual channel.
//!
//! [`InputTracker`] is built to run on the gateway's data path for every PDU: graphics from the
//! target are dismissed after one byte, input is parsed in place without allocating, and
//! every buffer is bounded (clipboard reassembly, text runs, format lists). Hostile input ends
//! the parse of that PDU, never the tracker.

use crate::keymap::{Key, key};
use crate::pdus::{Direction, Framing, Pdu};
use ironrdp_pdu::mcs::{ConnectInitial, ConnectResponse, SendDataRequest};
use ironrdp_pdu::x224::{X224, X224Data};
use std::time::Duration;

/// The most characters one text run holds; a longer burst of typing becomes several runs.
pub const MAX_RUN_CHARS: usize = 1024;
/// A pause in typing this long ends a run.
pub const RUN_GAP: Duration = Duration::from_secs(5);
/// The most bytes of one clipboard message kept for parsing; larger data is reported with
/// its size and the text it starts with.
pub const MAX_CLIPBOARD_BYTES: usize = 256 * 1024;
/// The most characters of clipboard text kept in an event.
pub const MAX_CLIPBOARD_TEXT: usize = 64 * 1024;
const MAX_FORMATS: usize = 32;
const MAX_FORMAT_NAME: usize = 64;

/// One searchable event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// Microseconds since the relay started (the recording's clock), at the event's start.
    pub at_micros: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A run of typing: characters as typed (US layout, Shift and Caps Lock applied), special
    /// keys as `<Enter>`, `<Backspace>`, `<Tab>`, `<Ctrl+C>`, ... A run ends at Enter, a
    /// mouse click, a clipboard event, a pause of [`RUN_GAP`] or [`MAX_RUN_CHARS`].
    Keys {
        text: String,
        end_micros: u64,
        /// Key events whose meaning is unknown (scancodes outside the US layout).
        #[serde(skip_serializing_if = "is_zero")]
        unknown_keys: u32,
    },
    /// A side announced what it has on its clipboard (CLIPRDR Format List).
    ClipboardFormats {
        from: Direction,
        formats: Vec<ClipboardFormat>,
    },
    /// A side asked for the other side's clipboard in one format (Format Data Request).
    ClipboardRequest {
        from: Direction,
        format: ClipboardFormat,
    },
    /// Clipboard data crossed (Format Data Response): text for CF_UNICODETEXT, CF_TEXT and
    /// CF_OEMTEXT, the size and format for anything else.
    ClipboardData {
        from: Direction,
        format: ClipboardFormat,
        ok: bool,
        size: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Only the first [`MAX_CLIPBOARD_BYTES`] were kept (or the text was cut at
        /// [`MAX_CLIPBOARD_TEXT`] characters).
        truncated: bool,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A clipboard format: its id, and its name (standard formats are named, registered formats
/// carry the name the owner announced).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClipboardFormat {
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

const CF_TEXT: u32 = 1;
const CF_OEMTEXT: u32 = 7;
const CF_UNICODETEXT: u32 = 13;

fn standard_format_name(id: u32) -> Option<&'static str> {
    Some(match id {
        1 => "CF_TEXT",
        2 => "CF_BITMAP",
        3 => "CF_METAFILEPICT",
        7 => "CF_OEMTEXT",
        8 => "CF_DIB",
        13 => "CF_UNICODETEXT",
        14 => "CF_ENHMETAFILE",
        15 => "CF_HDROP",
        16 => "CF_LOCALE",
        17 => "CF_DIBV5",
        _ => return None,
    })
}

#[derive(Default)]
struct Keyboard {
    shift_left: bool,
    shift_right: bool,
    ctrl: bool,
    alt: bool,
    win: bool,
    caps: bool,
    num: bool,
    /// A UTF-16 high surrogate waiting for its low half.
    high_surrogate: Option<u16>,
}

struct Run {
    text: String,
    chars: usize,
    start: Duration,
    last: Duration,
    unknown: u32,
}

/// Reassembles one direction's chunks of one static virtual channel.
#[derive(Default)]
struct Reassembly {
    buffer: Vec<u8>,
    declared: u64,
    active: bool,
}

#[derive(Default)]
struct Clipboard {
    /// Per direction (index: [`side`]).
    reassembly: [Reassembly; 2],
    /// Whether each side announced CB_USE_LONG_FORMAT_NAMES.
    long_names: [bool; 2],
    /// The formats each side announced last, with names.
    formats: [Vec<(u32, String)>; 2],
    /// The format each side asked the other for last.
    requested: [Option<u32>; 2],
}

/// Watches PDUs in order and produces [`Event`]s.
#[derive(Default)]
pub struct InputTracker {
    io_channel: Option<u16>,
    /// Index of `cliprdr` among the client's channels (Connect Initial).
    cliprdr_index: Option<usize>,
    cliprdr_channel: Option<u16>,
    keyboard: Keyboard,
    run: Option<Run>,
    clipboard: Clipboard,
    /// Client PDUs the tracker could not parse as input (counted, for diagnostics).
    malformed: u64,
    /// When the user last pressed a key or moved or clicked the mouse (recording clock).
    last_input: Option<Duration>,
}

fn side(direction: Direction) -> usize {
    match direction {
        Direction::ClientToTarget => 0,
        Direction::TargetToClient => 1,
    }
}

fn other(direction: Direction) -> Direction {
    match direction {
        Direction::ClientToTarget => Direction::TargetToClient,
        Direction::TargetToClient => Direction::ClientToTarget,
    }
}

fn micros(at: Duration) -> u64 {
    u64::try_from(at.as_micros()).unwrap_or(u64::MAX)
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    match bytes.get(offset..offset.checked_add(2)?)? {
        &[a, b] => Some(u16::from_le_bytes([a, b])),
        _ => None,
    }
}

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    match bytes.get(offset..offset.checked_add(4)?)? {
        &[a, b, c, d] => Some(u32::from_le_bytes([a, b, c, d])),
        _ => None,
    }
}

/// Whether the slow-path PDU carries this BER application tag right after TPKT and X.224
/// (0x7f 0x65: MCS Connect Initial, 0x7f 0x66: Connect Response).
fn is_mcs_connect(bytes: &[u8], tag: u8) -> bool {
    bytes.get(7..9) == Some(&[0x7f, tag][..])
}

impl InputTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The MCS channel id of `cliprdr`, once the Connect Response was seen.
    pub fn cliprdr_channel(&self) -> Option<u16> {
        self.cliprdr_channel
    }

    /// Client PDUs that looked like input but could not be parsed.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// When the user last pressed a key or moved or clicked the mouse (the PDUs' clock);
    /// `None` before any input.
    pub fn last_input(&self) -> Option<Duration> {
        self.last_input
    }

    /// Looks at one PDU (in recording order) and appends any finished events to `out`.
    pub fn observe(&mut self, pdu: &Pdu<'_>, out: &mut Vec<Event>) {
        if let Some(run) = &self.run
            && pdu.at.saturating_sub(run.last) >= RUN_GAP
        {
            self.close_run(out);
        }
        match (pdu.direction, pdu.framing) {
            (Direction::ClientToTarget, Framing::FastPath) => self.fast_path_input(pdu, out),
            (_, Framing::X224) => self.slow_path(pdu, out),
            // Graphics and unframed chunks carry no input.
            _ => {}
        }
    }

    /// Ends the open text run (at the end of a session).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.close_run(out);
    }

    fn close_run(&mut self, out: &mut Vec<Event>) {
        if let Some(run) = self.run.take()
            && (run.chars > 0 || run.unknown > 0)
        {
            out.push(Event {
                at_micros: micros(run.start),
                kind: EventKind::Keys {
                    text: run.text,
                    end_micros: micros(run.last),
                    unknown_keys: run.unknown,
                },
            });
        }
    }

    fn run_mut(&mut self, at: Duration) -> &mut Run {
        let run = self.run.get_or_insert_with(|| Run {
            text: String::with_capacity(32),
            chars: 0,
            start: at,
            last: at,
            unknown: 0,
        });
        run.last = at;
        run
    }

    fn push_char(&mut self, at: Duration, c: char, out: &mut Vec<Event>) {
        if self.run.as_ref().is_some_and(|r| r.chars >= MAX_RUN_CHARS) {
            self.close_run(out);
        }
        let run = self.run_mut(at);
        run.text.push(c);
        run.chars += 1;
    }

    fn push_named(&mut self, at: Duration, name: &str, plain: Option<char>, out: &mut Vec<Event>) {
        let k = &self.keyboard;
        let (ctrl, alt, win, shift) = (k.ctrl, k.alt, k.win, k.shift_left || k.shift_right);
        let mut label = String::with_capacity(16);
        label.push('<');
        for (on, prefix) in [(ctrl, "Ctrl+"), (alt, "Alt+"), (win, "Win+")] {
            if on {
                label.push_str(prefix);
            }
        }
        if shift && plain.is_none() {
            label.push_str("Shift+");
        }
        match plain {
            Some(c) => label.push(c.to_ascii_uppercase()),
            None => label.push_str(name),
        }
        label.push('>');
        if self
            .run
            .as_ref()
            .is_some_and(|r| r.chars + label.len() > MAX_RUN_CHARS)
        {
            self.close_run(out);
        }
        let run = self.run_mut(at);
        run.text.push_str(&label);
        run.chars += label.len();
        if name == "Enter" {
            self.close_run(out);
        }
    }

    /// A scancode event: `extended` is the 0xE0 prefix flag.
    fn scancode(
        &mut self,
        at: Duration,
        code: u8,
        extended: bool,
        released: bool,
        out: &mut Vec<Event>,
    ) {
        self.last_input = Some(at);
        let key = key(code, extended);
        let k = &mut self.keyboard;
        match key {
            Key::Shift => {
                if code == 0x36 {
                    k.shift_right = !released;
                } else {
                    k.shift_left = !released;
                }
                return;
            }
            Key::Ctrl => {
                k.ctrl = !released;
                return;
            }
            Key::Alt => {
                k.alt = !released;
                return;
            }
            Key::Win => {
                k.win = !released;
                return;
            }
            _ => {}
        }
        if released {
            return;
        }
        let shift = k.shift_left || k.shift_right;
        let modified = k.ctrl || k.alt || k.win;
        match key {
            Key::CapsLock => k.caps = !k.caps,
            Key::NumLock => k.num = !k.num,
            Key::Char {
                plain,
                shifted,
                letter,
            } => {
                if modified {
                    self.push_named(at, "", Some(plain), out);
                } else {
                    let upper = shift ^ (letter && k.caps);
                    self.push_char(at, if upper { shifted } else { plain }, out);
                }
            }
            Key::Keypad { digit, name } => {
                if k.num && !modified {
                    self.push_char(at, digit, out);
                } else {
                    self.push_named(at, name, None, out);
                }
            }
            Key::Named(name) => self.push_named(at, name, None, out),
            Key::Unknown => self.run_mut(at).unknown += 1,
            Key::Shift | Key::Ctrl | Key::Alt | Key::Win => {}
        }
    }

    fn unicode(&mut self, at: Duration, unit: u16, released: bool, out: &mut Vec<Event>) {
        self.last_input = Some(at);
        if released {
            return;
        }
        let k = &mut self.keyboard;
        let c = match (k.high_surrogate.take(), unit) {
            (_, 0xd800..=0xdbff) => {
                k.high_surrogate = Some(unit);
                return;
            }
            (Some(high), 0xdc00..=0xdfff) => char::decode_utf16([high, unit]).next(),
            (_, unit) => char::decode_utf16([unit]).next(),
        };
        match c {
            Some(Ok('\r' | '\n')) => self.push_named(at, "Enter", None, out),
            Some(Ok('\t')) => self.push_named(at, "Tab", None, out),
            Some(Ok('\u{8}')) => self.push_named(at, "Backspace", None, out),
            Some(Ok(c)) if !c.is_control() => self.push_char(at, c, out),
            _ => self.run_mut(at).unknown += 1,
        }
    }

    fn sync(&mut self, flags: u32) {
        self.keyboard.caps = flags & 0x4 != 0;
        self.keyboard.num = flags & 0x2 != 0;
    }

    fn mouse(&mut self, at: Duration, pointer_flags: u16, out: &mut Vec<Event>) {
        self.last_input = Some(at);
        // PTRFLAGS_DOWN with a button: a click may move the focus, so the run ends.
        if pointer_flags & 0x8000 != 0 {
            self.close_run(out);
        }
    }

    /// TS_FP_INPUT_PDU ([MS-RDPBCGR] 2.2.8.1.2).
    fn fast_path_input(&mut self, pdu: &Pdu<'_>, out: &mut Vec<Event>) {
        if self.parse_fast_path_input(pdu, out).is_none() {
            self.malformed += 1;
        }
    }

    fn parse_fast_path_input(&mut self, pdu: &Pdu<'_>, out: &mut Vec<Event>) -> Option<()> {
        let bytes = pdu.bytes;
        let header = *bytes.first()?;
        if header & 0x3 != 0 || header & 0x80 != 0 {
            // Not a fast-path action, or encrypted (not with TLS): nothing readable.
            return None;
        }
        let mut events = usize::from((header >> 2) & 0xf);
        let first = *bytes.get(1)?;
        let mut offset = if first & 0x80 != 0 { 3 } else { 2 };
        if header & 0x40 != 0 {
            // FASTPATH_INPUT_SECURE_CHECKSUM: an 8-byte signature.
            offset += 8;
        }
        if events == 0 {
            events = usize::from(*bytes.get(offset)?);
            offset += 1;
        }
        for _ in 0..events {
            let event = *bytes.get(offset)?;
            offset += 1;
            let flags = event & 0x1f;
            match event >> 5 {
                0 => {
                    let code = *bytes.get(offset)?;
                    offset += 1;
                    self.scancode(pdu.at, code, flags & 0x02 != 0, flags & 0x01 != 0, out);
                }
                1 | 2 => {
                    let pointer_flags = u16_at(bytes, offset)?;
                    offset += 6;
                    self.mouse(pdu.at, pointer_flags, out);
                }
                3 => self.sync(u32::from(flags)),
                4 => {
                    let unit = u16_at(bytes, offset)?;
                    offset += 2;
                    self.unicode(pdu.at, unit, flags & 0x01 != 0, out);
                }
                5 | 6 => offset += 4,
                _ => return None,
            }
        }
        Some(())
    }

    fn slow_path(&mut self, pdu: &Pdu<'_>, out: &mut Vec<Event>) {
        let bytes = pdu.bytes;
        match pdu.direction {
            Direction::ClientToTarget => {
                if self.cliprdr_index.is_none() && is_mcs_connect(bytes, 0x65) {
                    self.connect_initial(bytes);
                    return;
                }
                let Ok(X224(request)) = ironrdp_pdu::decode::<X224<SendDataRequest<'_>>>(bytes)
                else {
                    return;
                };
                if Some(request.channel_id) == self.cliprdr_channel {
                    self.channel_chunk(pdu, &request.user_data, out);
                } else if Some(request.channel_id) == self.io_channel
                    && self
                        .slow_path_input(pdu.at, &request.user_data, out)
                        .is_none()
                {
                    self.malformed += 1;
                }
            }
            Direction::TargetToClient => {
                if self.cliprdr_channel.is_none() && is_mcs_connect(bytes, 0x66) {
                    self.connect_response(bytes);
                    return;
                }
                let Some(cliprdr) = self.cliprdr_channel else {
                    return;
                };
                if let Ok(indication) = ironrdp_pdu::mcs::decode_send_data_indication(bytes)
                    && indication.channel_id == cliprdr
                {
                    self.channel_chunk(pdu, indication.user_data, out);
                }
            }
        }
    }

    fn connect_initial(&mut self, bytes: &[u8]) {
        let Ok(X224(data)) = ironrdp_pdu::decode::<X224<X224Data<'_>>>(bytes) else {
            return;
        };
        let Ok(initial) = ironrdp_pdu::decode::<ConnectInitial>(data.data.as_ref()) else {
            return;
        };
        if let Some(network) = &initial.conference_create_request.gcc_blocks().network {
            self.cliprdr_index = network.channels.iter().position(|channel| {
                channel
                    .name
                    .as_bytes()
                    .iter()
                    .map(u8::to_ascii_lowercase)
                    .eq(b"cliprdr\0".iter().copied())
            });
        }
    }

    fn connect_response(&mut self, bytes: &[u8]) {
        let Ok(X224(data)) = ironrdp_pdu::decode::<X224<X224Data<'_>>>(bytes) else {
            return;
        };
        let Ok(response) = ironrdp_pdu::decode::<ConnectResponse>(data.data.as_ref()) else {
            return;
        };
        let network = &response.conference_create_response.gcc_blocks().network;
        self.io_channel = Some(network.io_channel);
        self.cliprdr_channel = self
            .cliprdr_index
            .and_then(|i| network.channel_ids.get(i).copied());
    }

    /// TS_INPUT_PDU_DATA inside a Share Data PDU ([MS-RDPBCGR] 2.2.8.1.1.3).
    fn slow_path_input(&mut self, at: Duration, data: &[u8], out: &mut Vec<Event>) -> Option<()> {
        let pdu_type = u16_at(data, 2)?;
        if pdu_type & 0xf != 0x7 {
            return Some(()); // not a Data PDU (Confirm Active, ...)
        }
        let pdu_type2 = *data.get(14)?;
        let compressed = *data.get(15)?;
        if pdu_type2 != 0x1c || compressed & 0x20 != 0 {
            return Some(());
        }
        let events = usize::from(u16_at(data, 18)?);
        let mut offset = 22usize;
        for _ in 0..events {
            let message_type = u16_at(data, offset.checked_add(4)?)?;
            let a = u16_at(data, offset.checked_add(6)?)?;
            let b = u16_at(data, offset.checked_add(8)?)?;
            match message_type {
                0x0004 => {
                    let code = u8::try_from(b).ok()?;
                    self.scancode(at, code, a & 0x0100 != 0, a & 0x8000 != 0, out);
                }
                0x0005 => self.unicode(at, b, a & 0x8000 != 0, out),
                0x0000 => self.sync(u32_at(data, offset.checked_add(8)?)?),
                0x8001 | 0x8002 => self.mouse(at, a, out),
                _ => {}
            }
            offset = offset.checked_add(12)?;
        }
        Some(())
    }

    /// One CHANNEL_PDU_HEADER and chunk on `cliprdr`.
    fn channel_chunk(&mut self, pdu: &Pdu<'_>, data: &[u8], out: &mut Vec<Event>) {
        let (Some(length), Some(flags)) = (u32_at(data, 0), u32_at(data, 4)) else {
            self.malformed += 1;
            return;
        };
        let chunk = data.get(8..).unwrap_or_default();
        let reassembly = &mut self.clipboard.reassembly[side(pdu.direction)];
        const FIRST: u32 = 0x1;
        const LAST: u32 = 0x2;
        const COMPRESSED: u32 = 0x0020_0000;
        if flags & COMPRESSED != 0 {
            // Compressed virtual channel data (not negotiated by the steering): skipped.
            reassembly.active = false;
            self.malformed += 1;
            return;
        }
        if flags & FIRST != 0 {
            reassembly.buffer.clear();
            reassembly.declared = u64::from(length);
            reassembly.active = true;
            // One allocation of at most the cap: growth never doubles past it.
            let wanted = usize::try_from(length)
                .unwrap_or(usize::MAX)
                .min(MAX_CLIPBOARD_BYTES);
            reassembly.buffer.reserve_exact(wanted);
        }
        if !reassembly.active {
            return;
        }
        let room = MAX_CLIPBOARD_BYTES.saturating_sub(reassembly.buffer.len());
        let take = chunk.get(..room.min(chunk.len())).unwrap_or_default();
        if reassembly.buffer.len() + take.len() > reassembly.buffer.capacity() {
            // More than the header declared: grow exactly, still within the cap.
            reassembly.buffer.reserve_exact(take.len());
        }
        reassembly.buffer.extend_from_slice(take);
        if flags & LAST != 0 {
            reassembly.active = false;
            let message = std::mem::take(&mut reassembly.buffer);
            let declared = reassembly.declared;
            self.cliprdr(pdu.direction, pdu.at, &message, declared, out);
            // Keep the allocation for the next message, bounded by the cap.
            let reassembly = &mut self.clipboard.reassembly[side(pdu.direction)];
            reassembly.buffer = message;
            reassembly.buffer.clear();
        }
    }

    /// One whole CLIPRDR PDU ([MS-RDPECLIP] 2.2.1); `declared` is its full length.
    fn cliprdr(
        &mut self,
        from: Direction,
        at: Duration,
        message: &[u8],
        declared: u64,
        out: &mut Vec<Event>,
    ) {
        let (Some(msg_type), Some(msg_flags), Some(data_len)) =
            (u16_at(message, 0), u16_at(message, 2), u32_at(message, 4))
        else {
            return;
        };
        let body = message.get(8..).unwrap_or_default();
        let body = body
            .get(..body.len().min(data_len as usize))
            .unwrap_or(body);
        let at_micros = micros(at);
        match msg_type {
            // CB_CLIP_CAPS: the general capability set's CB_USE_LONG_FORMAT_NAMES.
            0x0007 => {
                let general_flags = u32_at(body, 12).unwrap_or(0);
                self.clipboard.long_names[side(from)] = general_flags & 0x2 != 0;
            }
            // CB_FORMAT_LIST
            0x0002 => {
                self.close_run(out);
                let long = self.clipboard.long_names.iter().all(|&l| l) || body.len() % 36 != 0;
                let formats = parse_format_list(body, long, msg_flags & 0x4 != 0);
                let event_formats = formats
                    .iter()
                    .map(|(id, name)| ClipboardFormat {
                        id: *id,
                        name: format_name(*id, Some(name)),
                    })
                    .collect();
                self.clipboard.formats[side(from)] = formats;
                out.push(Event {
                    at_micros,
                    kind: EventKind::ClipboardFormats {
                        from,
                        formats: event_formats,
                    },
                });
            }
            // CB_FORMAT_DATA_REQUEST
            0x0004 => {
                let Some(id) = u32_at(body, 0) else { return };
                self.close_run(out);
                self.clipboard.requested[side(from)] = Some(id);
                out.push(Event {
                    at_micros,
                    kind: EventKind::ClipboardRequest {
                        from,
                        format: self.format(other(from), id),
                    },
                });
            }
            // CB_FORMAT_DATA_RESPONSE: answers the other side's last request.
            0x0005 => {
                self.close_run(out);
                let requested = self.clipboard.requested[side(other(from))].take();
                let ok = msg_flags & 0x1 != 0;
                let size = u64::from(data_len);
                let kept_all = declared <= MAX_CLIPBOARD_BYTES as u64;
                let (text, cut) = match requested {
                    Some(CF_UNICODETEXT) if ok => utf16_text(body),
                    Some(CF_TEXT | CF_OEMTEXT) if ok => ansi_text(body),
                    _ => (None, false),
                };
                let format = match requested {
                    Some(id) => self.format(from, id),
                    None => ClipboardFormat { id: 0, name: None },
                };
                out.push(Event {
                    at_micros,
                    kind: EventKind::ClipboardData {
                        from,
                        format,
                        ok,
                        size,
                        text,
                        truncated: cut || !kept_all,
                    },
                });
            }
            _ => {}
        }
    }

    /// The format `id` as announced by `owner`.
    fn format(&self, owner: Direction, id: u32) -> ClipboardFormat {
        let announced = self.clipboard.formats[side(owner)]
            .iter()
            .find(|(f, _)| *f == id)
            .map(|(_, name)| name.as_str());
        ClipboardFormat {
            id,
            name: format_name(id, announced),
        }
    }
}

fn format_name(id: u32, announced: Option<&str>) -> Option<String> {
    match announced {
        Some(name) if !name.is_empty() => Some(name.to_owned()),
        _ => standard_format_name(id).map(str::to_owned),
    }
}

/// Format ids and names, at most [`MAX_FORMATS`], names cut at [`MAX_FORMAT_NAME`] characters.
fn parse_format_list(body: &[u8], long: bool, ascii: bool) -> Vec<(u32, String)> {
    let mut formats = Vec::new();
    let mut offset = 0usize;
    while formats.len() < MAX_FORMATS {
        let Some(id) = u32_at(body, offset) else {
            break;
        };
        offset += 4;
        let rest = body.get(offset..).unwrap_or_default();
        let (name, used) = if long {
            // Null-terminated UTF-16LE.
            let units = rest
                .chunks_exact(2)
                .map(|p| u16::from_le_bytes([p[0], p[1]]))
                .take_while(|&u| u != 0);
            let name: String = char::decode_utf16(units)
                .map(|c| c.unwrap_or('\u{fffd}'))
                .take(MAX_FORMAT_NAME)
                .collect();
            let count = rest
                .chunks_exact(2)
                .position(|p| p == [0, 0])
                .map_or(rest.len(), |i| (i + 1) * 2);
            (name, count)
        } else {
            let field = rest.get(..32).unwrap_or(rest);
            let name = if ascii {
                field
                    .iter()
                    .take_while(|&&b| b != 0)
                    .map(|&b| char::from(b))
                    .take(MAX_FORMAT_NAME)
                    .collect()
            } else {
                char::decode_utf16(
                    field
                        .chunks_exact(2)
                        .map(|p| u16::from_le_bytes([p[0], p[1]]))
                        .take_while(|&u| u != 0),
                )
                .map(|c| c.unwrap_or('\u{fffd}'))
                .take(MAX_FORMAT_NAME)
                .collect()
            };
            (name, 32)
        };
        formats.push((id, name));
        offset = offset.saturating_add(used);
        if offset >= body.len() {
            break;
        }
    }
    formats
}

/// UTF-16LE text up to its terminator; whether it was cut at [`MAX_CLIPBOARD_TEXT`].
fn utf16_text(body: &[u8]) -> (Option<String>, bool) {
    let units = body
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .take_while(|&u| u != 0);
    let mut text = String::new();
    let mut cut = false;
    for (i, c) in char::decode_utf16(units).enumerate() {
        if i >= MAX_CLIPBOARD_TEXT {
            cut = true;
            break;
        }
        text.push(c.unwrap_or('\u{fffd}'));
    }
    (Some(text), cut)
}

/// 8-bit text up to its terminator, as UTF-8 where it is, Latin-1 where it is not.
fn ansi_text(body: &[u8]) -> (Option<String>, bool) {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let bytes = body.get(..end.min(MAX_CLIPBOARD_TEXT)).unwrap_or_default();
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    };
    (Some(text), end > MAX_CLIPBOARD_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironrdp_pdu::mcs::SendDataIndication;
    use std::borrow::Cow;

    const IO: u16 = 1003;
    const CLIP: u16 = 1005;

    fn tracker() -> InputTracker {
        InputTracker {
            io_channel: Some(IO),
            cliprdr_channel: Some(CLIP),
            ..InputTracker::default()
        }
    }

    /// A fast-path input PDU with these events (each: header byte and data).
    fn fast_path(events: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = events.concat();
        let mut pdu = vec![(events.len() as u8) << 2, (2 + body.len()) as u8];
        pdu.extend(body);
        pdu
    }

    fn key(code: u8, extended: bool, released: bool) -> Vec<u8> {
        vec![u8::from(released) | (u8::from(extended) << 1), code]
    }

    fn feed(tracker: &mut InputTracker, at_ms: u64, bytes: &[u8], out: &mut Vec<Event>) {
        tracker.observe(
            &Pdu {
                direction: Direction::ClientToTarget,
                framing: Framing::FastPath,
                at: Duration::from_millis(at_ms),
                bytes,
            },
            out,
        );
    }

    fn press(tracker: &mut InputTracker, at_ms: u64, codes: &[(u8, bool)], out: &mut Vec<Event>) {
        for &(code, extended) in codes {
            let down = key(code, extended, false);
            let up = key(code, extended, true);
            feed(tracker, at_ms, &fast_path(&[&down, &up]), out);
        }
    }

    fn texts(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Keys { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect()
    }

    const SHIFT: u8 = 0x2a;

    #[test]
    fn scancodes_become_us_text_with_shift_caps_and_named_keys() {
        let mut t = tracker();
        let mut out = Vec::new();
        // "Hi, you!" with Shift held by hand for H and !
        feed(
            &mut t,
            0,
            &fast_path(&[&key(SHIFT, false, false), &key(0x23, false, false)]),
            &mut out,
        );
        feed(
            &mut t,
            0,
            &fast_path(&[&key(0x23, false, true), &key(SHIFT, false, true)]),
            &mut out,
        );
        press(
            &mut t,
            10,
            &[
                (0x17, false),
                (0x33, false),
                (0x39, false),
                (0x15, false),
                (0x18, false),
                (0x16, false),
            ],
            &mut out,
        );
        feed(
            &mut t,
            20,
            &fast_path(&[
                &key(0x36, false, false),
                &key(0x02, false, false),
                &key(0x36, false, true),
            ]),
            &mut out,
        );
        // Caps Lock: letters upper, digits not; Shift under Caps gives lower case.
        press(
            &mut t,
            30,
            &[(0x3a, false), (0x1e, false), (0x02, false)],
            &mut out,
        );
        feed(
            &mut t,
            40,
            &fast_path(&[
                &key(SHIFT, false, false),
                &key(0x1e, false, false),
                &key(SHIFT, false, true),
            ]),
            &mut out,
        );
        press(&mut t, 50, &[(0x3a, false)], &mut out);
        // Named keys, an extended arrow, Ctrl+C.
        press(
            &mut t,
            60,
            &[(0x0e, false), (0x0f, false), (0x48, true)],
            &mut out,
        );
        feed(
            &mut t,
            70,
            &fast_path(&[
                &key(0x1d, false, false),
                &key(0x2e, false, false),
                &key(0x1d, false, true),
            ]),
            &mut out,
        );
        assert!(texts(&out).is_empty(), "the run is still open");
        // Enter ends the run.
        press(&mut t, 80, &[(0x1c, false)], &mut out);
        assert_eq!(
            texts(&out),
            vec!["Hi, you!A1a<Backspace><Tab><Up><Ctrl+C><Enter>".to_string()]
        );
        assert_eq!(out[0].at_micros, 0);
        assert!(matches!(
            out[0].kind,
            EventKind::Keys {
                end_micros: 80_000,
                ..
            }
        ));
    }

    #[test]
    fn keypad_follows_num_lock_from_sync_events() {
        let mut t = tracker();
        let mut out = Vec::new();
        // Sync with Num Lock on (flags 0x02).
        feed(&mut t, 0, &fast_path(&[&[(3 << 5) | 0x02]]), &mut out);
        press(&mut t, 0, &[(0x4f, false), (0x50, false)], &mut out);
        feed(&mut t, 0, &fast_path(&[&[3 << 5]]), &mut out);
        press(&mut t, 0, &[(0x4f, false)], &mut out);
        t.finish(&mut out);
        assert_eq!(texts(&out), vec!["12<End>".to_string()]);
    }

    #[test]
    fn unicode_events_pauses_clicks_and_the_cap_split_runs() {
        let mut t = tracker();
        let mut out = Vec::new();
        let unicode = |unit: u16, released: bool| -> Vec<u8> {
            let [a, b] = unit.to_le_bytes();
            vec![(4 << 5) | u8::from(released), a, b]
        };
        for unit in [0x00e9u16, 0xd83d, 0xde00] {
            feed(
                &mut t,
                0,
                &fast_path(&[&unicode(unit, false), &unicode(unit, true)]),
                &mut out,
            );
        }
        // A pause longer than RUN_GAP: a new run.
        press(&mut t, 6_000, &[(0x10, false)], &mut out);
        // A mouse click (PTRFLAGS_DOWN | BUTTON1): the run ends.
        let click = [1 << 5, 0x00, 0x90, 10, 0, 10, 0];
        feed(&mut t, 6_100, &fast_path(&[&click]), &mut out);
        // A long burst is cut at MAX_RUN_CHARS.
        for _ in 0..(MAX_RUN_CHARS + 10) {
            press(&mut t, 7_000, &[(0x1e, false)], &mut out);
        }
        t.finish(&mut out);
        let runs = texts(&out);
        assert_eq!(runs[0], "é😀");
        assert_eq!(runs[1], "q");
        assert_eq!(runs[2].len(), MAX_RUN_CHARS);
        assert_eq!(runs[3].len(), 10);
    }

    #[test]
    fn slow_path_input_pdus_are_read_too() {
        let mut t = tracker();
        let mut out = Vec::new();
        let mut events = Vec::new();
        for (code, flags) in [
            (0x2a, 0x0000u16),
            (0x14, 0),
            (0x14, 0x8000),
            (0x2a, 0x8000),
            (0x12, 0),
            (0x1f, 0),
            (0x14, 0),
            (0x1c, 0),
        ] {
            events.extend_from_slice(&0u32.to_le_bytes());
            events.extend_from_slice(&0x0004u16.to_le_bytes());
            events.extend_from_slice(&flags.to_le_bytes());
            events.extend_from_slice(&u16::from(code as u8).to_le_bytes());
            events.extend_from_slice(&0u16.to_le_bytes());
        }
        let mut data = Vec::new();
        let total = (18 + 4 + events.len()) as u16;
        data.extend_from_slice(&total.to_le_bytes());
        data.extend_from_slice(&0x0017u16.to_le_bytes());
        data.extend_from_slice(&1007u16.to_le_bytes());
        data.extend_from_slice(&0x0001_03eau32.to_le_bytes());
        data.extend_from_slice(&[0, 1]);
        data.extend_from_slice(&0u16.to_le_bytes());
        data.extend_from_slice(&[0x1c, 0]);
        data.extend_from_slice(&0u16.to_le_bytes());
        data.extend_from_slice(&8u16.to_le_bytes());
        data.extend_from_slice(&0u16.to_le_bytes());
        data.extend_from_slice(&events);
        let pdu = ironrdp_pdu::encode_vec(&X224(SendDataRequest {
            initiator_id: 1007,
            channel_id: IO,
            user_data: Cow::Owned(data),
        }))
        .unwrap();
        t.observe(
            &Pdu {
                direction: Direction::ClientToTarget,
                framing: Framing::X224,
                at: Duration::ZERO,
                bytes: &pdu,
            },
            &mut out,
        );
        assert_eq!(texts(&out), vec!["Test<Enter>".to_string()]);
    }

    /// A cliprdr message in channel chunks of at most `chunk` bytes.
    fn clip_chunks(
        from: Direction,
        msg_type: u16,
        flags: u16,
        body: &[u8],
        chunk: usize,
    ) -> Vec<Vec<u8>> {
        let mut message = Vec::new();
        message.extend_from_slice(&msg_type.to_le_bytes());
        message.extend_from_slice(&flags.to_le_bytes());
        message.extend_from_slice(&(body.len() as u32).to_le_bytes());
        message.extend_from_slice(body);
        let pieces: Vec<&[u8]> = message.chunks(chunk).collect();
        let count = pieces.len();
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let mut flags = 0u32;
                if i == 0 {
                    flags |= 1;
                }
                if i + 1 == count {
                    flags |= 2;
                }
                let mut data = (message.len() as u32).to_le_bytes().to_vec();
                data.extend_from_slice(&flags.to_le_bytes());
                data.extend_from_slice(piece);
                match from {
                    Direction::ClientToTarget => ironrdp_pdu::encode_vec(&X224(SendDataRequest {
                        initiator_id: 1007,
                        channel_id: CLIP,
                        user_data: Cow::Owned(data),
                    })),
                    Direction::TargetToClient => {
                        ironrdp_pdu::encode_vec(&X224(SendDataIndication {
                            initiator_id: 1002,
                            channel_id: CLIP,
                            user_data: Cow::Owned(data),
                        }))
                    }
                }
                .unwrap()
            })
            .collect()
    }

    fn send(t: &mut InputTracker, from: Direction, chunks: Vec<Vec<u8>>, out: &mut Vec<Event>) {
        for bytes in chunks {
            t.observe(
                &Pdu {
                    direction: from,
                    framing: Framing::X224,
                    at: Duration::from_secs(1),
                    bytes: &bytes,
                },
                out,
            );
        }
    }

    fn utf16z(text: &str) -> Vec<u8> {
        text.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    #[test]
    fn clipboard_transfers_are_reassembled_and_reported() {
        let (c, s) = (Direction::ClientToTarget, Direction::TargetToClient);
        let mut t = tracker();
        let mut out = Vec::new();
        // Both sides announce long format names (general capability set, flags 0x2).
        let caps = [1u8, 0, 0, 0, 1, 0, 12, 0, 2, 0, 0, 0, 2, 0, 0, 0];
        send(&mut t, s, clip_chunks(s, 7, 0, &caps, 1600), &mut out);
        send(&mut t, c, clip_chunks(c, 7, 0, &caps, 1600), &mut out);
        // The target offers Unicode text and HTML.
        let mut list = 13u32.to_le_bytes().to_vec();
        list.extend(utf16z(""));
        list.extend(0xc004u32.to_le_bytes());
        list.extend(utf16z("HTML Format"));
        send(&mut t, s, clip_chunks(s, 2, 0, &list, 1600), &mut out);
        // The client asks for text; the answer comes in 3 chunks.
        send(
            &mut t,
            c,
            clip_chunks(c, 4, 0, &13u32.to_le_bytes(), 1600),
            &mut out,
        );
        let secret = "copied from the target: s3cr3t";
        send(
            &mut t,
            s,
            clip_chunks(s, 5, 1, &utf16z(secret), 25),
            &mut out,
        );
        // Then HTML, which is reported by size and name only.
        send(
            &mut t,
            c,
            clip_chunks(c, 4, 0, &0xc004u32.to_le_bytes(), 1600),
            &mut out,
        );
        send(
            &mut t,
            s,
            clip_chunks(s, 5, 1, &[b'<'; 100], 1600),
            &mut out,
        );

        let html = ClipboardFormat {
            id: 0xc004,
            name: Some("HTML Format".into()),
        };
        let text = ClipboardFormat {
            id: 13,
            name: Some("CF_UNICODETEXT".into()),
        };
        let kinds: Vec<_> = out.iter().map(|e| e.kind.clone()).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::ClipboardFormats {
                    from: s,
                    formats: vec![text.clone(), html.clone()]
                },
                EventKind::ClipboardRequest {
                    from: c,
                    format: text.clone()
                },
                EventKind::ClipboardData {
                    from: s,
                    format: text,
                    ok: true,
                    size: (secret.len() as u64 + 1) * 2,
                    text: Some(secret.into()),
                    truncated: false
                },
                EventKind::ClipboardRequest {
                    from: c,
                    format: html.clone()
                },
                EventKind::ClipboardData {
                    from: s,
                    format: html,
                    ok: true,
                    size: 100,
                    text: None,
                    truncated: false
                },
            ]
        );
        let json = serde_json::to_string(&out[2]).unwrap();
        assert!(json.contains("\"type\":\"clipboard_data\""), "{json}");
        assert!(json.contains("\"from\":\"target_to_client\""), "{json}");
    }

    #[test]
    fn short_names_cf_text_and_oversized_data_are_bounded() {
        let (c, s) = (Direction::ClientToTarget, Direction::TargetToClient);
        let mut t = tracker();
        let mut out = Vec::new();
        // Short (32-byte) ASCII names, no capabilities exchanged.
        let mut list = 1u32.to_le_bytes().to_vec();
        list.extend([0u8; 32]);
        send(&mut t, c, clip_chunks(c, 2, 0x4, &list, 1600), &mut out);
        send(
            &mut t,
            s,
            clip_chunks(s, 4, 0, &1u32.to_le_bytes(), 1600),
            &mut out,
        );
        let big = vec![b'x'; MAX_CLIPBOARD_BYTES + 100_000];
        send(&mut t, c, clip_chunks(c, 5, 1, &big, 1600), &mut out);
        assert!(
            t.clipboard
                .reassembly
                .iter()
                .all(|r| r.buffer.capacity() <= MAX_CLIPBOARD_BYTES + 1600)
        );
        match &out.last().unwrap().kind {
            EventKind::ClipboardData {
                from,
                format,
                size,
                text,
                truncated,
                ..
            } => {
                assert_eq!(*from, c);
                assert_eq!(format.name.as_deref(), Some("CF_TEXT"));
                assert_eq!(*size, big.len() as u64);
                assert_eq!(text.as_ref().unwrap().len(), MAX_CLIPBOARD_TEXT);
                assert!(*truncated);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let mut t = tracker();
        let mut out = Vec::new();
        let mut seed = 0x1234_5678u32;
        for len in 0..400usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            for (direction, framing) in [
                (Direction::ClientToTarget, Framing::FastPath),
                (Direction::ClientToTarget, Framing::X224),
                (Direction::TargetToClient, Framing::X224),
            ] {
                t.observe(
                    &Pdu {
                        direction,
                        framing,
                        at: Duration::ZERO,
                        bytes: &bytes,
                    },
                    &mut out,
                );
            }
            // The same bytes as a cliprdr message from either side.
            for from in [Direction::ClientToTarget, Direction::TargetToClient] {
                if bytes.len() >= 2 {
                    let msg_type = u16::from(bytes[0] % 12);
                    let chunks = clip_chunks(from, msg_type, u16::from(bytes[1]), &bytes, 64);
                    send(&mut t, from, chunks, &mut out);
                }
            }
        }
        t.finish(&mut out);
    }
}
