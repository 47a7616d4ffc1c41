//! Framing an RFB (VNC) server's stream as a benchmark client reads it: where each server
//! message ends, and how many bytes and rectangles each FramebufferUpdate had, without keeping
//! the pixels. The VNC bench's viewer feeds it what it reads; pixel data (Raw rectangles, cut
//! text, colour maps, cursor shapes) is skipped in place and never copied, and only the few
//! bytes of a header or Hextile tile that a read splits are carried over, so that the client
//! costs as little CPU as possible and the gateway and the target are what is measured.
//!
//! Encodings framed: Raw, CopyRect, Hextile, and the DesktopSize and Cursor pseudo-encodings
//! (what the gateway lets through, docs/vnc.md). Anything else is an error.

use anyhow::{Result, bail};

/// A whole server message, as framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A FramebufferUpdate of `bytes` bytes (header included) with `rectangles` rectangles.
    Update { bytes: u64, rectangles: u32 },
    /// SetColourMapEntries, Bell or ServerCutText, of `bytes` bytes.
    Other { bytes: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a message.
    Message,
    /// Expecting a rectangle header; `left` rectangles remain, this one included.
    Rect { left: u16 },
    /// Expecting the source position of a CopyRect.
    CopyRect { left: u16 },
    /// Inside a Hextile rectangle of `width` x `height`, at the tile whose top left is
    /// (`x`, `y`) relative to the rectangle.
    Tile {
        left: u16,
        width: u16,
        height: u16,
        x: u16,
        y: u16,
    },
    /// Skipping payload; then the rectangle is done (`Some(left)`, rectangles remaining after
    /// it) or the message is (`None`).
    Skip { bytes: u64, then: Option<u16> },
}

/// What one step did with the bytes it was given.
enum Step {
    /// The first `n` bytes were used (maybe 0: a state change without bytes).
    Used(usize),
    /// The unit at hand needs more bytes than given.
    Need,
}

/// The framer of one server stream. See the module documentation.
#[derive(Debug)]
pub struct Framer {
    bytes_per_pixel: usize,
    state: State,
    /// Bytes of a unit (header or tile) that the previous read split.
    carry: Vec<u8>,
    /// The message being framed so far: bytes and rectangles.
    message_bytes: u64,
    rectangles: u32,
    kind_update: bool,
}

/// The largest unit ever carried: a Raw Hextile tile (16 x 16 pixels of 4 bytes, plus the
/// subencoding byte) or one with 255 coloured subrectangles, whichever is larger.
const MAX_UNIT: usize = 1 + 2 * 4 + 1 + 255 * (4 + 2);

impl Framer {
    /// A framer for pixels of `bytes_per_pixel` bytes (1, 2 or 4).
    pub fn new(bytes_per_pixel: usize) -> Framer {
        Framer {
            bytes_per_pixel,
            state: State::Message,
            carry: Vec::new(),
            message_bytes: 0,
            rectangles: 0,
            kind_update: false,
        }
    }

    /// Whether the stream is between messages (nothing of a message is pending).
    pub fn at_boundary(&self) -> bool {
        self.state == State::Message && self.carry.is_empty()
    }

    /// Frames `input`, appending every message it completes to `done`.
    pub fn feed(&mut self, mut input: &[u8], done: &mut Vec<Message>) -> Result<()> {
        while !input.is_empty() || self.settles_without_bytes() {
            if self.carry.is_empty() {
                match self.step(input, done)? {
                    Step::Used(n) => input = &input[n..],
                    Step::Need => {
                        self.carry.extend_from_slice(input);
                        return Ok(());
                    }
                }
            } else {
                let before = self.carry.len();
                let take = input.len().min(MAX_UNIT);
                self.carry.extend_from_slice(&input[..take]);
                let carry = std::mem::take(&mut self.carry);
                match self.step(&carry, done)? {
                    Step::Used(n) => {
                        // The carried bytes alone were not enough, so the unit ends in `input`.
                        input = &input[n.saturating_sub(before).min(take)..];
                    }
                    Step::Need => {
                        self.carry = carry;
                        input = &input[take..];
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the next step needs no bytes: the end of an update or of an empty payload
    /// (done at once, so that a message ending with a read is reported with it).
    fn settles_without_bytes(&self) -> bool {
        self.carry.is_empty()
            && matches!(
                self.state,
                State::Rect { left: 0 } | State::Skip { bytes: 0, .. }
            )
    }

    fn step(&mut self, data: &[u8], done: &mut Vec<Message>) -> Result<Step> {
        let bpp = self.bytes_per_pixel;
        let step = match self.state {
            State::Message => {
                let Some(&kind) = data.first() else {
                    return Ok(Step::Need);
                };
                self.message_bytes = 0;
                self.rectangles = 0;
                self.kind_update = kind == 0;
                match kind {
                    0 => {
                        let Some(header) = data.get(..4) else {
                            return Ok(Step::Need);
                        };
                        let count = u16::from_be_bytes([header[2], header[3]]);
                        self.state = State::Rect { left: count };
                        Step::Used(4)
                    }
                    1 => {
                        let Some(header) = data.get(..6) else {
                            return Ok(Step::Need);
                        };
                        let count = u16::from_be_bytes([header[4], header[5]]);
                        self.state = State::Skip {
                            bytes: u64::from(count) * 6,
                            then: None,
                        };
                        Step::Used(6)
                    }
                    2 => {
                        self.state = State::Skip {
                            bytes: 0,
                            then: None,
                        };
                        Step::Used(1)
                    }
                    3 => {
                        let Some(header) = data.get(..8) else {
                            return Ok(Step::Need);
                        };
                        let length =
                            u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                        self.state = State::Skip {
                            bytes: u64::from(length),
                            then: None,
                        };
                        Step::Used(8)
                    }
                    other => bail!("unknown server message type {other}"),
                }
            }
            State::Rect { left: 0 } => {
                self.finish(done);
                Step::Used(0)
            }
            State::Rect { left } => {
                let Some(header) = data.get(..12) else {
                    return Ok(Step::Need);
                };
                let field = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
                let (width, height) = (field(4), field(6));
                let encoding = i32::from_be_bytes([header[8], header[9], header[10], header[11]]);
                let area = u64::from(width) * u64::from(height);
                self.rectangles += 1;
                let after = left - 1;
                self.state = match encoding {
                    0 => State::Skip {
                        bytes: area * bpp as u64,
                        then: Some(after),
                    },
                    1 => State::CopyRect { left },
                    5 if area == 0 => State::Rect { left: after },
                    5 => State::Tile {
                        left,
                        width,
                        height,
                        x: 0,
                        y: 0,
                    },
                    // DesktopSize: no payload.
                    -223 => State::Rect { left: after },
                    // Cursor: pixels, then a bit mask of whole bytes per row.
                    -239 => State::Skip {
                        bytes: area * bpp as u64 + u64::from(width).div_ceil(8) * u64::from(height),
                        then: Some(after),
                    },
                    other => bail!("rectangle encoding {other} is not one this client asked for"),
                };
                Step::Used(12)
            }
            State::CopyRect { left } => {
                if data.len() < 4 {
                    return Ok(Step::Need);
                }
                self.state = State::Rect { left: left - 1 };
                Step::Used(4)
            }
            State::Tile {
                left,
                width,
                height,
                x,
                y,
            } => {
                let tile_w = usize::from((width - x).min(16));
                let tile_h = usize::from((height - y).min(16));
                let Some(length) = hextile_tile_len(data, tile_w, tile_h, bpp)? else {
                    return Ok(Step::Need);
                };
                let next_x = x + tile_w as u16;
                self.state = if next_x < width {
                    State::Tile {
                        left,
                        width,
                        height,
                        x: next_x,
                        y,
                    }
                } else if y + (tile_h as u16) < height {
                    State::Tile {
                        left,
                        width,
                        height,
                        x: 0,
                        y: y + tile_h as u16,
                    }
                } else {
                    State::Rect { left: left - 1 }
                };
                Step::Used(length)
            }
            State::Skip { bytes, then } => {
                let n = bytes.min(data.len() as u64);
                let bytes = bytes - n;
                if bytes > 0 {
                    self.state = State::Skip { bytes, then };
                } else {
                    match then {
                        Some(left) => self.state = State::Rect { left },
                        None => {
                            self.message_bytes += n;
                            self.finish(done);
                            return Ok(Step::Used(n as usize));
                        }
                    }
                }
                Step::Used(n as usize)
            }
        };
        if let Step::Used(n) = step {
            self.message_bytes += n as u64;
        }
        Ok(step)
    }

    /// The message is complete: report it and wait for the next.
    fn finish(&mut self, done: &mut Vec<Message>) {
        done.push(if self.kind_update {
            Message::Update {
                bytes: self.message_bytes,
                rectangles: self.rectangles,
            }
        } else {
            Message::Other {
                bytes: self.message_bytes,
            }
        });
        self.state = State::Message;
        self.message_bytes = 0;
        self.rectangles = 0;
    }
}

/// The length of the Hextile tile of `width` x `height` pixels at the start of `data` (RFC 6143
/// 7.7.4), or `None` if `data` ends inside it.
pub fn hextile_tile_len(
    data: &[u8],
    width: usize,
    height: usize,
    bytes_per_pixel: usize,
) -> Result<Option<usize>> {
    let Some(&subencoding) = data.first() else {
        return Ok(None);
    };
    if subencoding & 0xe0 != 0 {
        bail!("Hextile subencoding {subencoding:#04x} has unknown bits");
    }
    // Raw: the tile's pixels follow, and the other bits do not count.
    if subencoding & 1 != 0 {
        let length = 1 + width * height * bytes_per_pixel;
        return Ok((data.len() >= length).then_some(length));
    }
    let mut length = 1;
    if subencoding & 2 != 0 {
        length += bytes_per_pixel; // background
    }
    if subencoding & 4 != 0 {
        length += bytes_per_pixel; // foreground
    }
    if subencoding & 8 != 0 {
        let Some(&count) = data.get(length) else {
            return Ok(None);
        };
        let each = 2 + if subencoding & 16 != 0 {
            bytes_per_pixel
        } else {
            0
        };
        length += 1 + usize::from(count) * each;
    }
    Ok((data.len() >= length).then_some(length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(out: &mut Vec<u8>, x: u16, y: u16, w: u16, h: u16, encoding: i32) {
        for v in [x, y, w, h] {
            out.extend(v.to_be_bytes());
        }
        out.extend(encoding.to_be_bytes());
    }

    /// An update with a Raw, a CopyRect, a DesktopSize, a Hextile (20x17: four tiles of
    /// 16x16, 4x16, 16x1 and 4x1, each with another subencoding) and a Cursor rectangle;
    /// then a Bell, a ServerCutText and an empty update.
    fn stream() -> (Vec<u8>, Vec<Message>) {
        let mut out = vec![0, 0, 0, 5];
        rect(&mut out, 0, 0, 3, 2, 0);
        out.extend([7u8; 3 * 2 * 4]);
        rect(&mut out, 4, 4, 2, 2, 1);
        out.extend([0, 1, 0, 2]);
        rect(&mut out, 0, 0, 640, 480, -223);
        rect(&mut out, 0, 0, 20, 17, 5);
        // Tile 1: raw (with other bits set, which raw ignores).
        out.push(1 | 2 | 8);
        out.extend([1u8; 16 * 16 * 4]);
        // Tile 2: background only.
        out.push(2);
        out.extend([2u8; 4]);
        // Tile 3: background, foreground, two plain subrectangles.
        out.extend([2 | 4 | 8, 3, 3, 3, 3, 4, 4, 4, 4, 2, 0x00, 0x11, 0x20, 0x00]);
        // Tile 4: three coloured subrectangles, nothing else.
        out.extend([8 | 16, 3]);
        for _ in 0..3 {
            out.extend([9, 9, 9, 9, 0x00, 0x00]);
        }
        rect(&mut out, 1, 1, 9, 2, -239);
        out.extend([5u8; 9 * 2 * 4 + 2 * 2]);
        let update = out.len() as u64;
        out.push(2);
        out.extend([3, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c']);
        out.extend([0, 0, 0, 0]);
        let expected = vec![
            Message::Update {
                bytes: update,
                rectangles: 5,
            },
            Message::Other { bytes: 1 },
            Message::Other { bytes: 11 },
            Message::Update {
                bytes: 4,
                rectangles: 0,
            },
        ];
        (out, expected)
    }

    #[test]
    fn frames_every_message_whatever_the_reads() {
        let (bytes, expected) = stream();
        for chunk in [1, 2, 3, 5, 7, 13, 64, 1000, bytes.len()] {
            let mut framer = Framer::new(4);
            let mut done = Vec::new();
            for piece in bytes.chunks(chunk) {
                framer.feed(piece, &mut done).unwrap();
            }
            assert_eq!(done, expected, "reads of {chunk} bytes");
            assert!(framer.at_boundary());
        }
        // Every split into two reads.
        for split in 0..bytes.len() {
            let mut framer = Framer::new(4);
            let mut done = Vec::new();
            framer.feed(&bytes[..split], &mut done).unwrap();
            framer.feed(&bytes[split..], &mut done).unwrap();
            assert_eq!(done, expected, "split at {split}");
        }
    }

    #[test]
    fn a_partial_message_is_pending() {
        let (bytes, _) = stream();
        let mut framer = Framer::new(4);
        let mut done = Vec::new();
        framer.feed(&bytes[..100], &mut done).unwrap();
        assert!(done.is_empty());
        assert!(!framer.at_boundary());
    }

    #[test]
    fn unknown_messages_and_encodings_are_errors() {
        let mut done = Vec::new();
        assert!(Framer::new(4).feed(&[9], &mut done).is_err());
        let mut update = vec![0, 0, 0, 1];
        rect(&mut update, 0, 0, 1, 1, 16); // ZRLE, never asked for
        assert!(Framer::new(4).feed(&update, &mut done).is_err());
        assert!(hextile_tile_len(&[0x20], 16, 16, 4).is_err());
    }

    #[test]
    fn hextile_tile_lengths() {
        assert_eq!(hextile_tile_len(&[], 16, 16, 4).unwrap(), None);
        assert_eq!(hextile_tile_len(&[0], 16, 16, 4).unwrap(), Some(1));
        assert_eq!(hextile_tile_len(&[1], 2, 3, 4).unwrap(), None);
        assert_eq!(hextile_tile_len(&[1; 25], 2, 3, 4).unwrap(), Some(25));
        assert_eq!(
            hextile_tile_len(&[2 | 8, 0, 0, 0, 0], 16, 16, 4).unwrap(),
            None
        );
        assert_eq!(
            hextile_tile_len(&[2 | 8, 0, 0, 0, 0, 1, 0, 0], 16, 16, 4).unwrap(),
            Some(8)
        );
        assert_eq!(
            hextile_tile_len(&[8 | 16, 2, 0], 16, 16, 1).unwrap(),
            None,
            "two coloured subrectangles of 1-byte pixels need 3 + 2 * 3 bytes"
        );
        assert_eq!(
            hextile_tile_len(&[8 | 16, 2, 0, 0, 0, 0, 0, 0], 16, 16, 1).unwrap(),
            Some(8)
        );
    }
}
