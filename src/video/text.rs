//! Draws text into a picture with a built-in 5x7 bitmap font: the frame number and time on the
//! synthetic camera's frames, "NO LIVE VIDEO" on the placeholder. Blocky on purpose: each font
//! pixel becomes a `scale` x `scale` square, so the text survives JPEG compression and
//! downscaling and can be read back by a program as well as by eye.

use super::jpeg::{Image, Layout};

/// Glyph cell: 5 columns by 7 rows, one column of space after each character.
pub const GLYPH_W: u32 = 5;
pub const GLYPH_H: u32 = 7;
pub const ADVANCE: u32 = GLYPH_W + 1;

/// Rows top to bottom; bit 4 is the leftmost column.
pub fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '/' => [0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10],
        '#' => [0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        ' ' => [0; 7],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04], // '?'
    }
}

/// Width in pixels of `chars` characters at `scale` (without the trailing space).
pub fn text_width(chars: usize, scale: u32) -> u32 {
    (chars as u32 * ADVANCE).saturating_sub(1) * scale
}

/// Paints a rectangle (clipped to the picture) in a YCbCr colour.
pub fn fill_rect(image: &mut Image, x: u32, y: u32, w: u32, h: u32, ycbcr: [u8; 3]) {
    if x >= image.width || y >= image.height {
        return;
    }
    let channels = image.layout.channels();
    let x_end = (x + w).min(image.width) as usize;
    let y_end = (y + h).min(image.height) as usize;
    let stride = image.width as usize * channels;
    for row in (y as usize)..y_end {
        let line = &mut image.pixels[row * stride..(row + 1) * stride];
        for px in line[x as usize * channels..x_end * channels].chunks_exact_mut(channels) {
            match image.layout {
                Layout::Ycbcr => px.copy_from_slice(&ycbcr),
                Layout::Luma => px[0] = ycbcr[0],
            }
        }
    }
}

/// Draws `text` with its top-left corner at (`x`, `y`); characters past the edge are clipped.
pub fn draw_text(image: &mut Image, x: u32, y: u32, scale: u32, text: &str, ycbcr: [u8; 3]) {
    for (i, c) in text.chars().enumerate() {
        let left = x + i as u32 * ADVANCE * scale;
        if left >= image.width {
            break;
        }
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (0x10 >> col) != 0 {
                    fill_rect(
                        image,
                        left + col * scale,
                        y + row as u32 * scale,
                        scale,
                        scale,
                        ycbcr,
                    );
                }
            }
        }
    }
}

/// Reads back characters drawn by [`draw_text`] (from `alphabet`), sampling the centre of each
/// font pixel: `None` where a cell matches no glyph. Lets tests prove that what a frame shows
/// is what it says.
#[cfg(test)]
pub fn read_text(
    image: &Image,
    x: u32,
    y: u32,
    scale: u32,
    chars: usize,
    alphabet: &str,
) -> Vec<Option<char>> {
    let channels = image.layout.channels();
    let lit = |px: u32, py: u32| -> bool {
        let at = (py as usize * image.width as usize + px as usize) * channels;
        image.pixels.get(at).is_some_and(|&luma| luma >= 128)
    };
    (0..chars)
        .map(|i| {
            let left = x + i as u32 * ADVANCE * scale;
            let mut seen = [0u8; 7];
            for (row, bits) in seen.iter_mut().enumerate() {
                for col in 0..GLYPH_W {
                    let cx = left + col * scale + scale / 2;
                    let cy = y + row as u32 * scale + scale / 2;
                    if lit(cx, cy) {
                        *bits |= 0x10 >> col;
                    }
                }
            }
            alphabet.chars().find(|&c| glyph(c) == seen)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_are_distinct() {
        let alphabet = "0123456789:.-/# ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        for (i, a) in alphabet.chars().enumerate() {
            for b in alphabet.chars().skip(i + 1) {
                assert_ne!(glyph(a), glyph(b), "{a} and {b} look the same");
            }
        }
    }

    #[test]
    fn drawn_text_reads_back() {
        let mut image = Image::filled(200, 40, Layout::Ycbcr, [16, 128, 128]);
        draw_text(&mut image, 4, 4, 2, "12:34.5", [235, 128, 128]);
        let read: String = read_text(&image, 4, 4, 2, 7, "0123456789:.")
            .into_iter()
            .map(|c| c.unwrap_or('?'))
            .collect();
        assert_eq!(read, "12:34.5");
    }

    #[test]
    fn text_is_clipped_at_the_edges() {
        let mut image = Image::filled(20, 10, Layout::Luma, [0, 0, 0]);
        draw_text(&mut image, 15, 5, 3, "WIDE TEXT", [255, 0, 0]);
        assert_eq!(image.pixels.len(), 200);
        assert_eq!(text_width(3, 2), (3 * 6 - 1) * 2);
    }
}
