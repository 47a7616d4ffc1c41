//! Hextile (RFC 6143 section 7.7.4): one walker over a rectangle's 16x16 tiles that the
//! codec uses to find where the rectangle ends, and the framebuffer and the pixel-format
//! conversion use to draw it. Sub-rectangles outside their tile and unknown sub-encoding
//! bits are errors.

use crate::codec::{Cursor, PixelFormat, Stop};
use crate::error::ProtocolError;

const RAW: u8 = 1;
const BACKGROUND: u8 = 2;
const FOREGROUND: u8 = 4;
const ANY_SUBRECTS: u8 = 8;
const SUBRECTS_COLOURED: u8 = 16;

/// One drawing step, in coordinates relative to the rectangle's top-left corner.
pub(crate) enum Tile<'a> {
    /// Pixels of the tile, row by row.
    Raw {
        x: u16,
        y: u16,
        width: u16,
        pixels: &'a [u8],
    },
    Fill {
        x: u16,
        y: u16,
        width: u16,
        height: u16,
        pixel: u32,
    },
}

/// Walks a `width` x `height` hextile rectangle starting at `cursor`, handing every drawing
/// step to `draw`.
pub(crate) fn walk<'a>(
    cursor: &mut Cursor<'a>,
    width: u16,
    height: u16,
    format: &PixelFormat,
    mut draw: impl FnMut(Tile<'a>),
) -> Result<(), Stop> {
    let bpp = format.bytes_per_pixel();
    let mut background = 0u32;
    let mut foreground = 0u32;
    for tile_y in (0..height).step_by(16) {
        let tile_height = (height - tile_y).min(16);
        for tile_x in (0..width).step_by(16) {
            let tile_width = (width - tile_x).min(16);
            let flags = cursor.u8()?;
            if flags & !(RAW | BACKGROUND | FOREGROUND | ANY_SUBRECTS | SUBRECTS_COLOURED) != 0 {
                return Err(ProtocolError::BadHextile("unknown sub-encoding bits").into());
            }
            if flags & RAW != 0 {
                let pixels =
                    cursor.take(usize::from(tile_width) * usize::from(tile_height) * bpp)?;
                draw(Tile::Raw {
                    x: tile_x,
                    y: tile_y,
                    width: tile_width,
                    pixels,
                });
                continue;
            }
            if flags & BACKGROUND != 0 {
                background = format.read_pixel(cursor.take(bpp)?);
            }
            draw(Tile::Fill {
                x: tile_x,
                y: tile_y,
                width: tile_width,
                height: tile_height,
                pixel: background,
            });
            if flags & FOREGROUND != 0 {
                foreground = format.read_pixel(cursor.take(bpp)?);
            }
            if flags & ANY_SUBRECTS == 0 {
                continue;
            }
            let count = cursor.u8()?;
            for _ in 0..count {
                let pixel = if flags & SUBRECTS_COLOURED != 0 {
                    format.read_pixel(cursor.take(bpp)?)
                } else {
                    foreground
                };
                let [xy, wh] = cursor.array::<2>()?;
                let (x, y) = (u16::from(xy >> 4), u16::from(xy & 0xf));
                let (w, h) = (u16::from(wh >> 4) + 1, u16::from(wh & 0xf) + 1);
                if x + w > tile_width || y + h > tile_height {
                    return Err(ProtocolError::BadHextile("sub-rectangle outside its tile").into());
                }
                draw(Tile::Fill {
                    x: tile_x + x,
                    y: tile_y + y,
                    width: w,
                    height: h,
                    pixel,
                });
            }
        }
    }
    Ok(())
}

/// Decodes a validated hextile payload to pixel values, row by row.
pub(crate) fn pixels(
    data: &[u8],
    width: u16,
    height: u16,
    format: &PixelFormat,
) -> Result<Vec<u32>, ProtocolError> {
    let stride = usize::from(width);
    let mut out = vec![0u32; stride * usize::from(height)];
    let bpp = format.bytes_per_pixel();
    let mut cursor = Cursor::new(data);
    let result = walk(&mut cursor, width, height, format, |tile| match tile {
        Tile::Raw {
            x,
            y,
            width,
            pixels,
        } => {
            for (row, line) in pixels.chunks_exact(usize::from(width) * bpp).enumerate() {
                let start = (usize::from(y) + row) * stride + usize::from(x);
                for (slot, pixel) in out[start..start + usize::from(width)]
                    .iter_mut()
                    .zip(line.chunks_exact(bpp))
                {
                    *slot = format.read_pixel(pixel);
                }
            }
        }
        Tile::Fill {
            x,
            y,
            width,
            height,
            pixel,
        } => {
            for row in usize::from(y)..usize::from(y) + usize::from(height) {
                let start = row * stride + usize::from(x);
                out[start..start + usize::from(width)].fill(pixel);
            }
        }
    });
    match result {
        Ok(()) => Ok(out),
        Err(Stop::Bad(error)) => Err(error),
        Err(Stop::Need(_)) => Err(ProtocolError::BadHextile("truncated")),
    }
}
