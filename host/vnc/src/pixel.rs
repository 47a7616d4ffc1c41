//! Pixel formats (RFC 6143 section 7.4): reading, writing and converting true-colour pixel
//! values, and the one format the gateway sets on every target ([`PixelFormat::TARGET`]).

use crate::error::ProtocolError;

/// How pixel values are laid out (RFC 6143 section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

impl PixelFormat {
    /// The format the gateway sets on every target: 32 bits, depth 24, little-endian true
    /// colour, red in bits 16-23, green 8-15, blue 0-7 (in memory: blue, green, red, unused).
    /// Recordings are always in this format.
    pub const TARGET: PixelFormat = PixelFormat {
        bits_per_pixel: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        red_max: 255,
        green_max: 255,
        blue_max: 255,
        red_shift: 16,
        green_shift: 8,
        blue_shift: 0,
    };

    /// Reads the 16-byte PIXEL_FORMAT structure (no validation: see [`PixelFormat::validate`]).
    pub fn from_bytes(bytes: &[u8; 16]) -> PixelFormat {
        PixelFormat {
            bits_per_pixel: bytes[0],
            depth: bytes[1],
            big_endian: bytes[2] != 0,
            true_colour: bytes[3] != 0,
            red_max: u16::from_be_bytes([bytes[4], bytes[5]]),
            green_max: u16::from_be_bytes([bytes[6], bytes[7]]),
            blue_max: u16::from_be_bytes([bytes[8], bytes[9]]),
            red_shift: bytes[10],
            green_shift: bytes[11],
            blue_shift: bytes[12],
        }
    }

    /// The 16-byte PIXEL_FORMAT structure.
    pub fn to_bytes(&self) -> [u8; 16] {
        let [rh, rl] = self.red_max.to_be_bytes();
        let [gh, gl] = self.green_max.to_be_bytes();
        let [bh, bl] = self.blue_max.to_be_bytes();
        [
            self.bits_per_pixel,
            self.depth,
            u8::from(self.big_endian),
            u8::from(self.true_colour),
            rh,
            rl,
            gh,
            gl,
            bh,
            bl,
            self.red_shift,
            self.green_shift,
            self.blue_shift,
            0,
            0,
            0,
        ]
    }

    /// Whether this crate can read and write pixels in this format: 8, 16 or 32 bits per
    /// pixel, true colour, every channel's maximum non-zero and inside the pixel.
    /// Colour-mapped formats are refused: the gateway forces true colour on the target and
    /// converts only between true-colour formats.
    pub fn validate(&self) -> Result<(), ProtocolError> {
        let bad = |why: String| Err(ProtocolError::BadPixelFormat(why));
        if !matches!(self.bits_per_pixel, 8 | 16 | 32) {
            return bad(format!("{} bits per pixel", self.bits_per_pixel));
        }
        if !self.true_colour {
            return bad("colour-mapped formats are not supported".to_string());
        }
        let bits = u32::from(self.bits_per_pixel);
        for (name, max, shift) in [
            ("red", self.red_max, self.red_shift),
            ("green", self.green_max, self.green_shift),
            ("blue", self.blue_max, self.blue_shift),
        ] {
            let width = 16 - max.leading_zeros();
            if max == 0 || u32::from(shift) + width > bits {
                return bad(format!("{name} maximum {max} with shift {shift}"));
            }
        }
        Ok(())
    }

    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bits_per_pixel / 8)
    }

    /// The pixel value in `bytes` (exactly [`PixelFormat::bytes_per_pixel`] long).
    pub fn read_pixel(&self, bytes: &[u8]) -> u32 {
        match (bytes, self.big_endian) {
            ([a], _) => u32::from(*a),
            ([a, b], false) => u32::from(u16::from_le_bytes([*a, *b])),
            ([a, b], true) => u32::from(u16::from_be_bytes([*a, *b])),
            ([a, b, c, d], false) => u32::from_le_bytes([*a, *b, *c, *d]),
            ([a, b, c, d], true) => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => 0,
        }
    }

    /// Appends `value` in this format's size and byte order.
    pub fn write_pixel(&self, value: u32, out: &mut Vec<u8>) {
        match (self.bits_per_pixel, self.big_endian) {
            (8, _) => out.push(value as u8),
            (16, false) => out.extend_from_slice(&(value as u16).to_le_bytes()),
            (16, true) => out.extend_from_slice(&(value as u16).to_be_bytes()),
            (_, false) => out.extend_from_slice(&value.to_le_bytes()),
            (_, true) => out.extend_from_slice(&value.to_be_bytes()),
        }
    }

    /// The 8-bit red, green and blue of a true-colour pixel value.
    pub fn rgb(&self, value: u32) -> [u8; 3] {
        let channel = |max: u16, shift: u8| -> u8 {
            let max = u32::from(max.max(1));
            let raw = value.checked_shr(u32::from(shift)).unwrap_or(0) & max;
            ((raw * 255 + max / 2) / max) as u8
        };
        [
            channel(self.red_max, self.red_shift),
            channel(self.green_max, self.green_shift),
            channel(self.blue_max, self.blue_shift),
        ]
    }

    /// The pixel value closest to an 8-bit red, green and blue.
    pub fn pixel(&self, rgb: [u8; 3]) -> u32 {
        let channel = |c: u8, max: u16, shift: u8| -> u32 {
            let max = u32::from(max);
            ((u32::from(c) * max + 127) / 255)
                .checked_shl(u32::from(shift))
                .unwrap_or(0)
        };
        channel(rgb[0], self.red_max, self.red_shift)
            | channel(rgb[1], self.green_max, self.green_shift)
            | channel(rgb[2], self.blue_max, self.blue_shift)
    }
}
