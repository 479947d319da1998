//! `synthetic:WxH@FPS`: a generated moving picture, encoded to real JPEG frames, that shows its
//! own frame number and capture time, so drops and latency can be seen by eye (and read by a
//! program: the same two values are in the JPEG's COM segment as
//! `porchlight frame=N t=UNIX_SECONDS`).
//!
//! The picture is cheap to make: colour bars that scroll sideways (one row computed, then copied
//! down), a box that bounces, and a black band with the text. Making a frame costs far less
//! than encoding it, so the synthetic camera's CPU use is that of a JPEG encode per frame, close
//! to what a YUYV webcam costs.

use std::time::{Duration, Instant};

use super::source::{Captured, Mode, Source, SourceError};
use crate::clock::clock_text;
use crate::video::jpeg::{self, Image, Layout};
use crate::video::rate::Ticker;
use crate::video::text;

/// JPEG quality of the generated frames: that of the `medium` preset, so a 640x480 synthetic
/// camera's frames pass through `medium` exactly as that preset would have encoded them.
const QUALITY: u8 = 80;

/// SMPTE-like bars in YCbCr: white, yellow, cyan, green, magenta, red, blue, black.
const BARS: [[u8; 3]; 8] = [
    [235, 128, 128],
    [210, 16, 146],
    [170, 166, 16],
    [145, 54, 34],
    [106, 202, 222],
    [81, 90, 240],
    [41, 240, 110],
    [16, 128, 128],
];

const WHITE: [u8; 3] = [235, 128, 128];
const BLACK: [u8; 3] = [16, 128, 128];

pub struct Synthetic {
    mode: Mode,
    ticker: Ticker,
    /// The picture is redrawn in place every frame.
    image: Image,
}

/// Where the text goes and how big it is, for a picture of this size.
pub struct TextLayout {
    pub scale: u32,
    pub x: u32,
    pub number_y: u32,
    pub time_y: u32,
    pub band_height: u32,
}

/// Characters of the time line: `HH:MM:SS.mmm`.
pub const TIME_CHARS: usize = 12;

pub fn text_layout(width: u32, height: u32) -> TextLayout {
    let scale = (width / (text::ADVANCE * TIME_CHARS as u32 + 2))
        .min(height / (2 * text::GLYPH_H + 6))
        .clamp(1, 8);
    let gap = scale * 2;
    TextLayout {
        scale,
        x: scale,
        number_y: gap,
        time_y: gap * 2 + text::GLYPH_H * scale,
        band_height: gap * 3 + 2 * text::GLYPH_H * scale,
    }
}

impl Synthetic {
    pub fn new(width: u32, height: u32, fps: u32) -> Synthetic {
        Synthetic {
            mode: Mode { width, height, fps },
            ticker: Ticker::new(fps),
            image: Image::filled(width, height, Layout::Ycbcr, BLACK),
        }
    }

    /// Draws frame `number` captured at `unix` into the picture.
    fn draw(&mut self, number: u64, unix: f64) {
        let (w, h) = (self.mode.width, self.mode.height);
        let image = &mut self.image;
        // Bars scroll one bar width every two seconds or so.
        let bar_w = (w / 8).max(1);
        let shift = (number as u32 * (bar_w / 30).max(1)) % w;
        let row: Vec<u8> = (0..w)
            .flat_map(|x| BARS[(((x + shift) % w) / bar_w).min(7) as usize])
            .collect();
        for line in image.pixels.chunks_exact_mut(row.len()) {
            line.copy_from_slice(&row);
        }
        // A box bouncing left and right under the text band.
        let layout = text_layout(w, h);
        let side = (h / 6).max(4);
        let travel = w.saturating_sub(side).max(1);
        let step = (number as u32 * (w / 60).max(1)) % (2 * travel);
        let box_x = if step < travel {
            step
        } else {
            2 * travel - step
        };
        let box_y = (layout.band_height + (h.saturating_sub(layout.band_height) / 2))
            .min(h.saturating_sub(side));
        text::fill_rect(image, box_x, box_y, side, side, WHITE);
        text::fill_rect(image, 0, 0, w, layout.band_height, BLACK);
        text::draw_text(
            image,
            layout.x,
            layout.number_y,
            layout.scale,
            &format!("#{number}"),
            WHITE,
        );
        text::draw_text(
            image,
            layout.x,
            layout.time_y,
            layout.scale,
            &clock_text(unix),
            WHITE,
        );
    }
}

impl Source for Synthetic {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn next_frame(
        &mut self,
        number: u64,
        timeout: Duration,
    ) -> Result<Option<Captured>, SourceError> {
        let Some(missed) = self.ticker.wait(timeout) else {
            return Ok(None);
        };
        let captured_at = Instant::now();
        let captured_unix = crate::clock::unix_now();
        self.draw(number, captured_unix);
        let encoded = jpeg::encode(&self.image, QUALITY)?;
        let jpeg = jpeg::with_comment(
            &encoded,
            &format!("porchlight frame={number} t={captured_unix:.6}"),
        );
        Ok(Some(Captured {
            jpeg,
            width: self.mode.width,
            height: self.mode.height,
            captured_unix,
            captured_at,
            missed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_line(image: &Image, y: u32, chars: usize, layout: &TextLayout) -> String {
        text::read_text(image, layout.x, y, layout.scale, chars, "#0123456789:.")
            .into_iter()
            .map(|c| c.unwrap_or('?'))
            .collect::<String>()
            .trim_end()
            .to_string()
    }

    #[test]
    fn frames_show_their_number_and_time_legibly_after_jpeg() {
        let mut camera = Synthetic::new(640, 480, 30);
        let frame = camera
            .next_frame(123_456, Duration::from_secs(1))
            .unwrap()
            .expect("a frame");
        assert_eq!((frame.width, frame.height), (640, 480));
        assert_eq!(jpeg::probe_size(&frame.jpeg), Some((640, 480)));
        let comment = jpeg::comment(&frame.jpeg).unwrap();
        assert!(
            comment.starts_with("porchlight frame=123456 t="),
            "{comment}"
        );
        // Read the drawn digits back from the decoded JPEG.
        let image = jpeg::decode(&frame.jpeg).unwrap();
        let layout = text_layout(640, 480);
        assert_eq!(read_line(&image, layout.number_y, 7, &layout), "#123456");
        assert_eq!(
            read_line(&image, layout.time_y, TIME_CHARS, &layout),
            clock_text(frame.captured_unix)
        );
    }

    #[test]
    fn the_picture_moves() {
        let mut camera = Synthetic::new(160, 120, 60);
        let a = camera
            .next_frame(1, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        let b = camera
            .next_frame(2, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_ne!(a.jpeg, b.jpeg);
        assert!(b.captured_at > a.captured_at);
    }
}
