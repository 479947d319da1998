//! The picture streams show while the camera is down: "NO LIVE VIDEO", the time, and why. Sent
//! once a second, so a viewer's connection stays open and visibly alive, and the picture
//! changes by itself when the camera comes back.

use crate::video::jpeg::{self, Image, Layout};
use crate::video::text;

const BACKGROUND: [u8; 3] = [40, 128, 128];
const FOREGROUND: [u8; 3] = [235, 128, 128];
const DIM: [u8; 3] = [150, 128, 128];
const QUALITY: u8 = 70;

/// Lines drawn, biggest first.
pub const HEADLINE: &str = "NO LIVE VIDEO";

/// A `width` x `height` JPEG: the headline, `clock` (e.g. `12:34:56 UTC`) and `detail` (e.g.
/// `CAMERA OFFLINE`), centred.
pub fn render(width: u32, height: u32, clock: &str, detail: &str) -> Result<Vec<u8>, String> {
    let mut image = Image::filled(width, height, Layout::Ycbcr, BACKGROUND);
    let headline_scale = (width / (text::ADVANCE * HEADLINE.len() as u32 + 4)).clamp(1, 12);
    let small_scale = (headline_scale / 2).max(1);
    let lines = [
        (HEADLINE, headline_scale, FOREGROUND),
        (clock, small_scale, FOREGROUND),
        (detail, small_scale, DIM),
    ];
    let gap = small_scale * text::GLYPH_H;
    let total: u32 = lines
        .iter()
        .map(|(_, scale, _)| scale * text::GLYPH_H)
        .sum::<u32>()
        + gap * 2;
    let mut y = height.saturating_sub(total) / 2;
    for (line, scale, colour) in lines {
        let chars = line.chars().count();
        let x = width.saturating_sub(text::text_width(chars, scale)) / 2;
        text::draw_text(&mut image, x, y, scale, line, colour);
        y += scale * text::GLYPH_H + gap;
    }
    jpeg::encode(&image, QUALITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_readable_headline_at_any_size() {
        for (w, h) in [(640, 480), (160, 120), (16, 16), (1920, 1080)] {
            let jpeg = render(w, h, "12:00:00 UTC", "CAMERA OFFLINE").unwrap();
            assert_eq!(jpeg::probe_size(&jpeg), Some((w, h)));
        }
        // At 640x480 the headline reads back.
        let jpeg = render(640, 480, "12:00:00 UTC", "CAMERA OFFLINE").unwrap();
        let image = jpeg::decode(&jpeg).unwrap();
        let scale = 640 / (text::ADVANCE * 13 + 4);
        let x = (640 - text::text_width(13, scale)) / 2;
        let total = scale * 7 + 2 * (scale / 2) * 7 + 2 * (scale / 2) * 7;
        let y = (480 - total) / 2;
        let read: String = text::read_text(&image, x, y, scale, 13, "NOLIVEDS ")
            .into_iter()
            .map(|c| c.unwrap_or('?'))
            .collect();
        assert_eq!(read, HEADLINE);
    }
}
