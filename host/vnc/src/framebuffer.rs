//! The decoded screen: [`Framebuffer`] applies framebuffer updates (Raw, CopyRect, Hextile,
//! DesktopSize) to an RGBA buffer and hands out [`Frame`]s of the same shape as the RDP
//! replayer's (`gatehouse_rdp_replay::Frame`: RGBA rows, width, height, time of the last
//! change), so the video export can take either.
//!
//! Cursor shapes (the Cursor pseudo-encoding) are not drawn: a server that sends them leaves
//! the pointer out of its framebuffer, and the recording shows the screen without it, as the
//! RDP recordings do. Pointer positions are in the recording's client events.

use crate::codec::{FramebufferUpdate, PixelFormat, RectanglePayload, check_desktop};
use crate::error::ProtocolError;
use crate::hextile;
use std::time::Duration;

/// The screen at some moment.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// `width * height` pixels, 4 bytes each: red, green, blue, alpha (255 wherever the target
    /// drew; the screen starts all zero, transparent black, until it does).
    pub rgba: &'a [u8],
    pub width: u16,
    pub height: u16,
    /// When the screen last changed (time since the relay started).
    pub at: Duration,
}

/// An RGBA screen that framebuffer updates are drawn on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framebuffer {
    width: u16,
    height: u16,
    rgba: Vec<u8>,
    changed_at: Duration,
}

impl Framebuffer {
    /// A transparent black screen; fails for a desktop over the [`crate::limits`].
    pub fn new(width: u16, height: u16) -> Result<Framebuffer, ProtocolError> {
        check_desktop(width, height)?;
        Ok(Framebuffer {
            width,
            height,
            rgba: vec![0; usize::from(width) * usize::from(height) * 4],
            changed_at: Duration::ZERO,
        })
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn height(&self) -> u16 {
        self.height
    }

    pub fn rgba(&self) -> &[u8] {
        &self.rgba
    }

    /// The red, green, blue and alpha at (`x`, `y`).
    pub fn pixel(&self, x: u16, y: u16) -> Option<[u8; 4]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let at = (usize::from(y) * usize::from(self.width) + usize::from(x)) * 4;
        let mut out = [0u8; 4];
        out.copy_from_slice(self.rgba.get(at..at + 4)?);
        Some(out)
    }

    pub fn frame(&self) -> Frame<'_> {
        Frame {
            rgba: &self.rgba,
            width: self.width,
            height: self.height,
            at: self.changed_at,
        }
    }

    /// Changes the size, keeping what overlaps the old screen.
    pub fn resize(&mut self, width: u16, height: u16) -> Result<(), ProtocolError> {
        check_desktop(width, height)?;
        let mut resized = vec![0u8; usize::from(width) * usize::from(height) * 4];
        let keep = usize::from(width.min(self.width)) * 4;
        for row in 0..usize::from(height.min(self.height)) {
            let from = row * usize::from(self.width) * 4;
            let to = row * usize::from(width) * 4;
            resized[to..to + keep].copy_from_slice(&self.rgba[from..from + keep]);
        }
        self.width = width;
        self.height = height;
        self.rgba = resized;
        Ok(())
    }

    /// Draws `update`, whose pixels are in `format`, as of `at`. Returns whether the screen
    /// changed. Rectangles outside the screen are errors (the relay refuses them before they
    /// get here); the rectangles before the bad one stay drawn.
    pub fn apply(
        &mut self,
        update: &FramebufferUpdate,
        format: &PixelFormat,
        at: Duration,
    ) -> Result<bool, ProtocolError> {
        format.validate()?;
        let bpp = format.bytes_per_pixel();
        let mut changed = false;
        for rectangle in &update.rectangles {
            let (x, y, width, height) =
                (rectangle.x, rectangle.y, rectangle.width, rectangle.height);
            if !matches!(
                rectangle.payload,
                RectanglePayload::DesktopSize | RectanglePayload::Cursor { .. }
            ) {
                self.check_inside(x, y, width, height)?;
            }
            match &rectangle.payload {
                RectanglePayload::Raw(bytes) => {
                    let expected = usize::from(width) * usize::from(height) * bpp;
                    if bytes.len() != expected {
                        return Err(ProtocolError::Unexpected(format!(
                            "raw rectangle of {} bytes, expected {expected}",
                            bytes.len()
                        )));
                    }
                    self.put_raw(x, y, width, bytes, format);
                }
                RectanglePayload::CopyRect { src_x, src_y } => {
                    self.check_inside(*src_x, *src_y, width, height)?;
                    self.copy(*src_x, *src_y, x, y, width, height);
                }
                RectanglePayload::Hextile(data) => {
                    let pixels = hextile::pixels(data, width, height, format)?;
                    self.put_values(x, y, width, &pixels, format);
                }
                RectanglePayload::DesktopSize => self.resize(width, height)?,
                RectanglePayload::Cursor { .. } => continue,
            }
            changed = true;
        }
        if changed {
            self.changed_at = at;
        }
        Ok(changed)
    }

    fn check_inside(&self, x: u16, y: u16, width: u16, height: u16) -> Result<(), ProtocolError> {
        if u32::from(x) + u32::from(width) > u32::from(self.width)
            || u32::from(y) + u32::from(height) > u32::from(self.height)
        {
            return Err(ProtocolError::RectangleOutOfBounds {
                x,
                y,
                width,
                height,
                fb_width: self.width,
                fb_height: self.height,
            });
        }
        Ok(())
    }

    fn row_start(&self, x: u16, y: usize) -> usize {
        (y * usize::from(self.width) + usize::from(x)) * 4
    }

    fn put_raw(&mut self, x: u16, y: u16, width: u16, bytes: &[u8], format: &PixelFormat) {
        if width == 0 {
            return;
        }
        let bpp = format.bytes_per_pixel();
        let fast = *format == PixelFormat::TARGET;
        for (row, line) in bytes.chunks_exact(usize::from(width) * bpp).enumerate() {
            let start = self.row_start(x, usize::from(y) + row);
            let out = &mut self.rgba[start..start + usize::from(width) * 4];
            for (rgba, pixel) in out.chunks_exact_mut(4).zip(line.chunks_exact(bpp)) {
                let [r, g, b] = if fast {
                    [pixel[2], pixel[1], pixel[0]]
                } else {
                    format.rgb(format.read_pixel(pixel))
                };
                rgba.copy_from_slice(&[r, g, b, 255]);
            }
        }
    }

    fn put_values(&mut self, x: u16, y: u16, width: u16, values: &[u32], format: &PixelFormat) {
        if width == 0 {
            return;
        }
        for (row, line) in values.chunks_exact(usize::from(width)).enumerate() {
            let start = self.row_start(x, usize::from(y) + row);
            let out = &mut self.rgba[start..start + usize::from(width) * 4];
            for (rgba, value) in out.chunks_exact_mut(4).zip(line) {
                let [r, g, b] = format.rgb(*value);
                rgba.copy_from_slice(&[r, g, b, 255]);
            }
        }
    }

    fn copy(&mut self, src_x: u16, src_y: u16, x: u16, y: u16, width: u16, height: u16) {
        let row_bytes = usize::from(width) * 4;
        let mut source = Vec::with_capacity(row_bytes * usize::from(height));
        for row in 0..usize::from(height) {
            let start = self.row_start(src_x, usize::from(src_y) + row);
            source.extend_from_slice(&self.rgba[start..start + row_bytes]);
        }
        if row_bytes == 0 {
            return;
        }
        for (row, line) in source.chunks_exact(row_bytes).enumerate() {
            let start = self.row_start(x, usize::from(y) + row);
            self.rgba[start..start + row_bytes].copy_from_slice(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Rectangle;

    fn rect(x: u16, y: u16, width: u16, height: u16, payload: RectanglePayload) -> Rectangle {
        Rectangle {
            x,
            y,
            width,
            height,
            payload,
        }
    }

    fn update(rectangles: Vec<Rectangle>) -> FramebufferUpdate {
        FramebufferUpdate { rectangles }
    }

    /// A target-format (BGRX) raw rectangle of one colour.
    fn solid(width: u16, height: u16, [r, g, b]: [u8; 3]) -> RectanglePayload {
        RectanglePayload::Raw([b, g, r, 0].repeat(usize::from(width) * usize::from(height)))
    }

    #[test]
    fn raw_copy_rect_and_resize() {
        let mut fb = Framebuffer::new(4, 4).unwrap();
        let format = PixelFormat::TARGET;
        let changed = fb
            .apply(
                &update(vec![
                    rect(0, 0, 2, 2, solid(2, 2, [255, 0, 0])),
                    rect(
                        2,
                        2,
                        2,
                        2,
                        RectanglePayload::CopyRect { src_x: 0, src_y: 0 },
                    ),
                ]),
                &format,
                Duration::from_secs(3),
            )
            .unwrap();
        assert!(changed);
        assert_eq!(fb.pixel(1, 1), Some([255, 0, 0, 255]));
        assert_eq!(fb.pixel(3, 3), Some([255, 0, 0, 255]));
        assert_eq!(fb.pixel(2, 0), Some([0, 0, 0, 0]));
        assert_eq!(fb.frame().at, Duration::from_secs(3));

        fb.apply(
            &update(vec![rect(0, 0, 2, 6, RectanglePayload::DesktopSize)]),
            &format,
            Duration::from_secs(4),
        )
        .unwrap();
        assert_eq!((fb.width(), fb.height()), (2, 6));
        assert_eq!(fb.pixel(0, 0), Some([255, 0, 0, 255]));
        assert_eq!(fb.pixel(1, 5), Some([0, 0, 0, 0]));
    }

    #[test]
    fn sixteen_bit_pixels() {
        let format = PixelFormat {
            bits_per_pixel: 16,
            depth: 16,
            big_endian: true,
            true_colour: true,
            red_max: 31,
            green_max: 63,
            blue_max: 31,
            red_shift: 11,
            green_shift: 5,
            blue_shift: 0,
        };
        let mut fb = Framebuffer::new(1, 1).unwrap();
        let mut bytes = Vec::new();
        format.write_pixel(format.pixel([0, 255, 0]), &mut bytes);
        fb.apply(
            &update(vec![rect(0, 0, 1, 1, RectanglePayload::Raw(bytes))]),
            &format,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(fb.pixel(0, 0), Some([0, 255, 0, 255]));
    }

    #[test]
    fn hextile_background_and_subrectangles() {
        // One 4x4 tile: background blue, one red 2x1 sub-rectangle at (1, 2).
        let format = PixelFormat::TARGET;
        let mut data = vec![2 | 8 | 16];
        format.write_pixel(format.pixel([0, 0, 255]), &mut data);
        data.push(1);
        format.write_pixel(format.pixel([255, 0, 0]), &mut data);
        data.extend_from_slice(&[0x12, 0x10]);
        let mut fb = Framebuffer::new(4, 4).unwrap();
        fb.apply(
            &update(vec![rect(0, 0, 4, 4, RectanglePayload::Hextile(data))]),
            &format,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(fb.pixel(0, 0), Some([0, 0, 255, 255]));
        assert_eq!(fb.pixel(1, 2), Some([255, 0, 0, 255]));
        assert_eq!(fb.pixel(2, 2), Some([255, 0, 0, 255]));
        assert_eq!(fb.pixel(3, 2), Some([0, 0, 255, 255]));
    }

    #[test]
    fn rectangles_outside_are_refused() {
        let mut fb = Framebuffer::new(4, 4).unwrap();
        let error = fb
            .apply(
                &update(vec![rect(3, 3, 2, 2, solid(2, 2, [1, 2, 3]))]),
                &PixelFormat::TARGET,
                Duration::ZERO,
            )
            .unwrap_err();
        assert!(matches!(error, ProtocolError::RectangleOutOfBounds { .. }));
        assert!(Framebuffer::new(9000, 10).is_err());
    }
}
