//! RFB 3.8 (RFC 6143) messages in both directions, parsed from and encoded to bytes.
//!
//! Parsing is synchronous and works on a byte slice: [`ClientMessage::parse`] and
//! [`ServerMessage::parse`] return [`Parsed::Incomplete`] with the total length needed so far
//! when the slice ends early, so the relay reads until it has that many bytes and tries again
//! (no re-parse per byte), and the recording reader uses the same code on a whole record.
//! A framebuffer update can only be framed by parsing its rectangles, so the server parser
//! knows the pixel format and the desktop size ([`ServerContext`]) and accepts only the
//! encodings the relay lets the client ask for ([`encoding::RELAYED`]). Every length is
//! bounded ([`limits`]): a rectangle outside the desktop, an update covering absurdly many
//! pixels, an over-long cut text or name is a typed [`ProtocolError`], never an allocation.

use crate::error::ProtocolError;
use crate::hextile;
pub use crate::pixel::PixelFormat;

/// Bounds on what a peer may make the gateway hold.
pub mod limits {
    /// The widest or tallest desktop accepted.
    pub const MAX_DIMENSION: u16 = 8192;
    /// The most pixels of a desktop (4096x4096, or 7680x2160 with a little room): 64 MiB at
    /// 32 bits per pixel.
    pub const MAX_DESKTOP_PIXELS: u64 = 16_777_216;
    /// One framebuffer update may cover at most this many times the desktop's pixels (servers
    /// send non-overlapping rectangles; some overlap is tolerated) ...
    pub const UPDATE_AREA_FACTOR: u64 = 4;
    /// ... plus this many pixels, so that a tiny desktop still gets useful updates.
    pub const UPDATE_AREA_SLACK: u64 = 65_536;
    /// The widest or tallest cursor shape accepted.
    pub const MAX_CURSOR: u16 = 512;
    /// The longest cut text (clipboard) accepted in either direction.
    pub const MAX_CUT_TEXT: u32 = 1024 * 1024;
    /// The most encodings in one SetEncodings message.
    pub const MAX_ENCODINGS: u16 = 1024;
    /// The longest desktop name accepted in a ServerInit.
    pub const MAX_NAME: u32 = 65_536;
    /// The longest reason string accepted from a peer.
    pub const MAX_REASON: u32 = 4096;
}

/// RFB encoding numbers this crate knows.
pub mod encoding {
    pub const RAW: i32 = 0;
    pub const COPY_RECT: i32 = 1;
    pub const HEXTILE: i32 = 5;
    /// Pseudo-encoding: the server may change the desktop size.
    pub const DESKTOP_SIZE: i32 = -223;
    /// Pseudo-encoding: the server sends the cursor's shape for the client to draw.
    pub const CURSOR: i32 = -239;
    /// What the relay lets through a client's SetEncodings (in the client's order): the
    /// encodings this crate can frame, decode to a framebuffer and convert between pixel
    /// formats. Raw is always allowed by the protocol, listed or not.
    pub const RELAYED: [i32; 5] = [HEXTILE, COPY_RECT, RAW, DESKTOP_SIZE, CURSOR];
}

/// The result of parsing a message from the start of a byte slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole message, `length` bytes long.
    Complete { message: T, length: usize },
    /// The slice ends inside the message; at least `needed` bytes (from the slice's start)
    /// are required before trying again.
    Incomplete { needed: usize },
}

/// Why a parse stopped: more bytes are needed, or the bytes are bad.
pub(crate) enum Stop {
    Need(usize),
    Bad(ProtocolError),
}

impl From<ProtocolError> for Stop {
    fn from(error: ProtocolError) -> Self {
        Stop::Bad(error)
    }
}

/// A read position in a byte slice whose reads fail with [`Stop::Need`] past its end.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| Stop::Bad(ProtocolError::Unexpected("length overflows".to_string())))?;
        match self.buf.get(self.pos..end) {
            Some(slice) => {
                self.pos = end;
                Ok(slice)
            }
            None => Err(Stop::Need(end)),
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Stop> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Stop> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, Stop> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
}

fn finish<T>(result: Result<T, Stop>, cursor: &Cursor<'_>) -> Result<Parsed<T>, ProtocolError> {
    match result {
        Ok(message) => Ok(Parsed::Complete {
            message,
            length: cursor.position(),
        }),
        Err(Stop::Need(needed)) => Ok(Parsed::Incomplete { needed }),
        Err(Stop::Bad(error)) => Err(error),
    }
}

/// An RFB protocol version this crate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProtocolVersion {
    V3_3,
    V3_7,
    V3_8,
}

impl ProtocolVersion {
    /// The 12-byte ProtocolVersion message.
    pub fn message(self) -> &'static [u8; 12] {
        match self {
            ProtocolVersion::V3_3 => b"RFB 003.003\n",
            ProtocolVersion::V3_7 => b"RFB 003.007\n",
            ProtocolVersion::V3_8 => b"RFB 003.008\n",
        }
    }

    /// Reads a ProtocolVersion message and maps it to the version to speak: 3.8 for 3.8 and
    /// anything later in the 3.x line, 3.7, or 3.3 for 3.3 to 3.6 (RFC 6143 section 7.1.1
    /// says an unknown 3.x below 3.7 is 3.3).
    pub fn parse(bytes: &[u8; 12]) -> Result<ProtocolVersion, ProtocolError> {
        let bad =
            || ProtocolError::BadVersion(String::from_utf8_lossy(bytes).escape_debug().to_string());
        if &bytes[..4] != b"RFB " || bytes[7] != b'.' || bytes[11] != b'\n' {
            return Err(bad());
        }
        let number = |digits: &[u8]| -> Option<u16> {
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(digits).ok()?.parse().ok()
        };
        let (Some(major), Some(minor)) = (number(&bytes[4..7]), number(&bytes[8..11])) else {
            return Err(bad());
        };
        match (major, minor) {
            (3, 8..) => Ok(ProtocolVersion::V3_8),
            (3, 7) => Ok(ProtocolVersion::V3_7),
            (3, 3..=6) => Ok(ProtocolVersion::V3_3),
            _ => Err(ProtocolError::UnsupportedVersion { major, minor }),
        }
    }
}

/// Security types (RFC 6143 section 7.2 and the VeNCrypt extension).
pub mod security {
    pub const INVALID: u8 = 0;
    pub const NONE: u8 = 1;
    pub const VNC_AUTH: u8 = 2;
    pub const VENCRYPT: u8 = 19;
    /// VeNCrypt sub-type: TLS without certificate checks, then plain user and password.
    pub const TLS_PLAIN: u32 = 259;
    /// VeNCrypt sub-type: TLS with an X.509 certificate, then plain user and password.
    pub const X509_PLAIN: u32 = 262;
}

/// The server's ServerInit message: the desktop's size, natural pixel format and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInit {
    pub width: u16,
    pub height: u16,
    pub pixel_format: PixelFormat,
    /// The desktop name (RFB says Latin-1 or UTF-8; kept as bytes decoded lossily).
    pub name: String,
}

impl ServerInit {
    pub fn parse(buf: &[u8]) -> Result<Parsed<ServerInit>, ProtocolError> {
        let mut cursor = Cursor::new(buf);
        let result = (|| {
            let width = cursor.u16()?;
            let height = cursor.u16()?;
            check_desktop(width, height)?;
            let pixel_format = PixelFormat::from_bytes(&cursor.array()?);
            let length = cursor.u32()?;
            check_length("desktop name", length, limits::MAX_NAME)?;
            let name = String::from_utf8_lossy(cursor.take(length as usize)?).into_owned();
            Ok(ServerInit {
                width,
                height,
                pixel_format,
                name,
            })
        })();
        finish(result, &cursor)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.pixel_format.to_bytes());
        let name = &self.name.as_bytes()[..self.name.len().min(limits::MAX_NAME as usize)];
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name);
    }
}

pub(crate) fn check_length(
    what: &'static str,
    length: u32,
    limit: u32,
) -> Result<(), ProtocolError> {
    if length > limit {
        return Err(ProtocolError::TooLong {
            what,
            length: u64::from(length),
            limit: u64::from(limit),
        });
    }
    Ok(())
}

/// A desktop of this size is acceptable.
pub fn check_desktop(width: u16, height: u16) -> Result<(), ProtocolError> {
    let pixels = u64::from(width) * u64::from(height);
    if width > limits::MAX_DIMENSION
        || height > limits::MAX_DIMENSION
        || pixels > limits::MAX_DESKTOP_PIXELS
    {
        return Err(ProtocolError::DesktopTooLarge {
            width,
            height,
            max_pixels: limits::MAX_DESKTOP_PIXELS,
        });
    }
    Ok(())
}

/// A message from the client (the viewer) to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    SetPixelFormat(PixelFormat),
    SetEncodings(Vec<i32>),
    FramebufferUpdateRequest {
        incremental: bool,
        x: u16,
        y: u16,
        width: u16,
        height: u16,
    },
    KeyEvent {
        down: bool,
        keysym: u32,
    },
    PointerEvent {
        buttons: u8,
        x: u16,
        y: u16,
    },
    /// Clipboard text, Latin-1 by the protocol.
    ClientCutText(Vec<u8>),
}

impl ClientMessage {
    /// Parses one client message from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Parsed<ClientMessage>, ProtocolError> {
        let mut cursor = Cursor::new(buf);
        let result = Self::parse_from(&mut cursor);
        finish(result, &cursor)
    }

    fn parse_from(cursor: &mut Cursor<'_>) -> Result<ClientMessage, Stop> {
        let kind = cursor.u8()?;
        Ok(match kind {
            0 => {
                cursor.take(3)?;
                ClientMessage::SetPixelFormat(PixelFormat::from_bytes(&cursor.array()?))
            }
            2 => {
                cursor.take(1)?;
                let count = cursor.u16()?;
                check_length(
                    "encoding list",
                    u32::from(count),
                    u32::from(limits::MAX_ENCODINGS),
                )?;
                let mut list = Vec::with_capacity(usize::from(count));
                // Checked before allocating the list's entries one by one.
                cursor.take(usize::from(count) * 4)?;
                let start = cursor.position() - usize::from(count) * 4;
                let mut inner = Cursor::new(&cursor.buf[start..cursor.position()]);
                for _ in 0..count {
                    list.push(inner.i32()?);
                }
                ClientMessage::SetEncodings(list)
            }
            3 => ClientMessage::FramebufferUpdateRequest {
                incremental: cursor.u8()? != 0,
                x: cursor.u16()?,
                y: cursor.u16()?,
                width: cursor.u16()?,
                height: cursor.u16()?,
            },
            4 => {
                let down = cursor.u8()? != 0;
                cursor.take(2)?;
                ClientMessage::KeyEvent {
                    down,
                    keysym: cursor.u32()?,
                }
            }
            5 => ClientMessage::PointerEvent {
                buttons: cursor.u8()?,
                x: cursor.u16()?,
                y: cursor.u16()?,
            },
            6 => {
                cursor.take(3)?;
                ClientMessage::ClientCutText(cut_text(cursor)?)
            }
            kind => {
                return Err(Stop::Bad(ProtocolError::UnknownMessageType {
                    from: "client",
                    kind,
                }));
            }
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ClientMessage::SetPixelFormat(format) => {
                out.extend_from_slice(&[0, 0, 0, 0]);
                out.extend_from_slice(&format.to_bytes());
            }
            ClientMessage::SetEncodings(list) => {
                let list = &list[..list.len().min(usize::from(limits::MAX_ENCODINGS))];
                out.extend_from_slice(&[2, 0]);
                out.extend_from_slice(&(list.len() as u16).to_be_bytes());
                for encoding in list {
                    out.extend_from_slice(&encoding.to_be_bytes());
                }
            }
            ClientMessage::FramebufferUpdateRequest {
                incremental,
                x,
                y,
                width,
                height,
            } => {
                out.extend_from_slice(&[3, u8::from(*incremental)]);
                for value in [x, y, width, height] {
                    out.extend_from_slice(&value.to_be_bytes());
                }
            }
            ClientMessage::KeyEvent { down, keysym } => {
                out.extend_from_slice(&[4, u8::from(*down), 0, 0]);
                out.extend_from_slice(&keysym.to_be_bytes());
            }
            ClientMessage::PointerEvent { buttons, x, y } => {
                out.extend_from_slice(&[5, *buttons]);
                out.extend_from_slice(&x.to_be_bytes());
                out.extend_from_slice(&y.to_be_bytes());
            }
            ClientMessage::ClientCutText(text) => {
                out.extend_from_slice(&[6, 0, 0, 0]);
                encode_cut_text(text, out);
            }
        }
    }
}

fn cut_text(cursor: &mut Cursor<'_>) -> Result<Vec<u8>, Stop> {
    let length = cursor.u32()?;
    // A negative length (the extended clipboard) is never negotiated through the relay.
    check_length("cut text", length, limits::MAX_CUT_TEXT)?;
    Ok(cursor.take(length as usize)?.to_vec())
}

fn encode_cut_text(text: &[u8], out: &mut Vec<u8>) {
    let text = &text[..text.len().min(limits::MAX_CUT_TEXT as usize)];
    out.extend_from_slice(&(text.len() as u32).to_be_bytes());
    out.extend_from_slice(text);
}

/// What the server parser needs to know to frame an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerContext {
    /// The pixel format the server sends (for the relay: [`PixelFormat::TARGET`]).
    pub pixel_format: PixelFormat,
    pub width: u16,
    pub height: u16,
}

impl ServerContext {
    /// Follows desktop size changes announced in `message`.
    pub fn apply(&mut self, message: &ServerMessage) {
        if let ServerMessage::FramebufferUpdate(update) = message {
            for rectangle in &update.rectangles {
                if let RectanglePayload::DesktopSize = rectangle.payload {
                    self.width = rectangle.width;
                    self.height = rectangle.height;
                }
            }
        }
    }
}

/// A message from the server to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    FramebufferUpdate(FramebufferUpdate),
    SetColourMapEntries {
        first_colour: u16,
        /// 16-bit red, green and blue.
        colours: Vec<[u16; 3]>,
    },
    Bell,
    /// Clipboard text, Latin-1 by the protocol.
    ServerCutText(Vec<u8>),
}

/// A FramebufferUpdate: rectangles in the pixel format of its [`ServerContext`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FramebufferUpdate {
    pub rectangles: Vec<Rectangle>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rectangle {
    pub x: u16,
    pub y: u16,
    pub width: u16,
    pub height: u16,
    pub payload: RectanglePayload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RectanglePayload {
    /// `width * height` pixels, row by row.
    Raw(Vec<u8>),
    /// Copy the same-sized rectangle at (`src_x`, `src_y`) here.
    CopyRect { src_x: u16, src_y: u16 },
    /// Hextile data as sent (validated while framing).
    Hextile(Vec<u8>),
    /// The desktop is now `width` x `height`.
    DesktopSize,
    /// A cursor shape of `width` x `height` with its hot spot at (`x`, `y`): pixels, then a
    /// bit mask of `(width + 7) / 8` bytes per row.
    Cursor { pixels: Vec<u8>, mask: Vec<u8> },
}

impl RectanglePayload {
    pub fn encoding(&self) -> i32 {
        match self {
            RectanglePayload::Raw(_) => encoding::RAW,
            RectanglePayload::CopyRect { .. } => encoding::COPY_RECT,
            RectanglePayload::Hextile(_) => encoding::HEXTILE,
            RectanglePayload::DesktopSize => encoding::DESKTOP_SIZE,
            RectanglePayload::Cursor { .. } => encoding::CURSOR,
        }
    }
}

impl ServerMessage {
    /// Parses one server message from the start of `buf`, framing rectangles with `context`.
    pub fn parse(
        buf: &[u8],
        context: &ServerContext,
    ) -> Result<Parsed<ServerMessage>, ProtocolError> {
        context.pixel_format.validate()?;
        let mut cursor = Cursor::new(buf);
        let result = Self::parse_from(&mut cursor, context);
        finish(result, &cursor)
    }

    fn parse_from(cursor: &mut Cursor<'_>, context: &ServerContext) -> Result<ServerMessage, Stop> {
        let kind = cursor.u8()?;
        Ok(match kind {
            0 => {
                cursor.take(1)?;
                ServerMessage::FramebufferUpdate(parse_update(cursor, context)?)
            }
            1 => {
                cursor.take(1)?;
                let first_colour = cursor.u16()?;
                let count = cursor.u16()?;
                cursor.take(usize::from(count) * 6)?;
                let start = cursor.position() - usize::from(count) * 6;
                let mut inner = Cursor::new(&cursor.buf[start..cursor.position()]);
                let mut colours = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    colours.push([inner.u16()?, inner.u16()?, inner.u16()?]);
                }
                ServerMessage::SetColourMapEntries {
                    first_colour,
                    colours,
                }
            }
            2 => ServerMessage::Bell,
            3 => {
                cursor.take(3)?;
                ServerMessage::ServerCutText(cut_text(cursor)?)
            }
            kind => {
                return Err(Stop::Bad(ProtocolError::UnknownMessageType {
                    from: "server",
                    kind,
                }));
            }
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ServerMessage::FramebufferUpdate(update) => update.encode(out),
            ServerMessage::SetColourMapEntries {
                first_colour,
                colours,
            } => {
                let colours = &colours[..colours.len().min(usize::from(u16::MAX))];
                out.extend_from_slice(&[1, 0]);
                out.extend_from_slice(&first_colour.to_be_bytes());
                out.extend_from_slice(&(colours.len() as u16).to_be_bytes());
                for colour in colours {
                    for channel in colour {
                        out.extend_from_slice(&channel.to_be_bytes());
                    }
                }
            }
            ServerMessage::Bell => out.push(2),
            ServerMessage::ServerCutText(text) => {
                out.extend_from_slice(&[3, 0, 0, 0]);
                encode_cut_text(text, out);
            }
        }
    }
}

fn out_of_bounds(x: u16, y: u16, width: u16, height: u16, fb: (u16, u16)) -> ProtocolError {
    ProtocolError::RectangleOutOfBounds {
        x,
        y,
        width,
        height,
        fb_width: fb.0,
        fb_height: fb.1,
    }
}

fn inside(x: u16, y: u16, width: u16, height: u16, fb: (u16, u16)) -> bool {
    u32::from(x) + u32::from(width) <= u32::from(fb.0)
        && u32::from(y) + u32::from(height) <= u32::from(fb.1)
}

/// A rectangle's payload while its update is being framed: byte ranges into the message, so
/// that an update still arriving is not copied on every attempt.
enum Pending {
    Raw(std::ops::Range<usize>),
    CopyRect { src_x: u16, src_y: u16 },
    Hextile(std::ops::Range<usize>),
    DesktopSize,
    Cursor(std::ops::Range<usize>, std::ops::Range<usize>),
}

fn range(cursor: &mut Cursor<'_>, length: usize) -> Result<std::ops::Range<usize>, Stop> {
    let start = cursor.position();
    cursor.take(length)?;
    Ok(start..cursor.position())
}

fn parse_update(
    cursor: &mut Cursor<'_>,
    context: &ServerContext,
) -> Result<FramebufferUpdate, Stop> {
    let count = cursor.u16()?;
    let format = &context.pixel_format;
    let bpp = format.bytes_per_pixel();
    let mut fb = (context.width, context.height);
    let mut budget = area_budget(fb);
    let mut covered = 0u64;
    let mut pending = Vec::new();
    for _ in 0..count {
        let x = cursor.u16()?;
        let y = cursor.u16()?;
        let width = cursor.u16()?;
        let height = cursor.u16()?;
        let encoding = cursor.i32()?;
        let area = u64::from(width) * u64::from(height);
        let pixel_rectangle = matches!(
            encoding,
            encoding::RAW | encoding::COPY_RECT | encoding::HEXTILE
        );
        if pixel_rectangle {
            if !inside(x, y, width, height, fb) {
                return Err(out_of_bounds(x, y, width, height, fb).into());
            }
            covered += area;
            if covered > budget {
                return Err(ProtocolError::UpdateTooLarge {
                    pixels: covered,
                    limit: budget,
                }
                .into());
            }
        }
        let payload = match encoding {
            encoding::RAW => Pending::Raw(range(cursor, area as usize * bpp)?),
            encoding::COPY_RECT => {
                let src_x = cursor.u16()?;
                let src_y = cursor.u16()?;
                if !inside(src_x, src_y, width, height, fb) {
                    return Err(out_of_bounds(src_x, src_y, width, height, fb).into());
                }
                Pending::CopyRect { src_x, src_y }
            }
            encoding::HEXTILE => {
                let start = cursor.position();
                hextile::walk(cursor, width, height, format, |_| {})?;
                Pending::Hextile(start..cursor.position())
            }
            encoding::DESKTOP_SIZE => {
                check_desktop(width, height)?;
                fb = (width, height);
                budget = budget.max(area_budget(fb));
                Pending::DesktopSize
            }
            encoding::CURSOR => {
                if width > limits::MAX_CURSOR || height > limits::MAX_CURSOR {
                    return Err(ProtocolError::TooLong {
                        what: "cursor shape",
                        length: area,
                        limit: u64::from(limits::MAX_CURSOR) * u64::from(limits::MAX_CURSOR),
                    }
                    .into());
                }
                let pixels = range(cursor, area as usize * bpp)?;
                let mask = range(cursor, usize::from(width).div_ceil(8) * usize::from(height))?;
                Pending::Cursor(pixels, mask)
            }
            encoding => {
                return Err(ProtocolError::UnsupportedEncoding {
                    from: "server",
                    encoding,
                }
                .into());
            }
        };
        pending.push((x, y, width, height, payload));
    }
    let bytes = |range: std::ops::Range<usize>| cursor.buf[range].to_vec();
    let rectangles = pending
        .into_iter()
        .map(|(x, y, width, height, payload)| Rectangle {
            x,
            y,
            width,
            height,
            payload: match payload {
                Pending::Raw(r) => RectanglePayload::Raw(bytes(r)),
                Pending::CopyRect { src_x, src_y } => RectanglePayload::CopyRect { src_x, src_y },
                Pending::Hextile(r) => RectanglePayload::Hextile(bytes(r)),
                Pending::DesktopSize => RectanglePayload::DesktopSize,
                Pending::Cursor(p, m) => RectanglePayload::Cursor {
                    pixels: bytes(p),
                    mask: bytes(m),
                },
            },
        })
        .collect();
    Ok(FramebufferUpdate { rectangles })
}

fn area_budget(fb: (u16, u16)) -> u64 {
    u64::from(fb.0) * u64::from(fb.1) * limits::UPDATE_AREA_FACTOR + limits::UPDATE_AREA_SLACK
}

impl FramebufferUpdate {
    pub fn encode(&self, out: &mut Vec<u8>) {
        let rectangles = &self.rectangles[..self.rectangles.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(rectangles.len() as u16).to_be_bytes());
        for rectangle in rectangles {
            for value in [rectangle.x, rectangle.y, rectangle.width, rectangle.height] {
                out.extend_from_slice(&value.to_be_bytes());
            }
            out.extend_from_slice(&rectangle.payload.encoding().to_be_bytes());
            match &rectangle.payload {
                RectanglePayload::Raw(bytes) | RectanglePayload::Hextile(bytes) => {
                    out.extend_from_slice(bytes)
                }
                RectanglePayload::CopyRect { src_x, src_y } => {
                    out.extend_from_slice(&src_x.to_be_bytes());
                    out.extend_from_slice(&src_y.to_be_bytes());
                }
                RectanglePayload::DesktopSize => {}
                RectanglePayload::Cursor { pixels, mask } => {
                    out.extend_from_slice(pixels);
                    out.extend_from_slice(mask);
                }
            }
        }
    }
}
