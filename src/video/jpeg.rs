//! JPEG in and out: decode (zune-jpeg), encode (jpeg-encoder), and the byte-level work that
//! needs no codec: reading the size from the header, adding a comment, adding the standard
//! Huffman tables a webcam left out, and finding the frames in an .mjpeg file.
//!
//! Pixels stay in YCbCr from decode to encode. A JPEG is YCbCr inside, so asking zune-jpeg for
//! YCbCr and handing jpeg-encoder YCbCr skips two colour conversions per frame (about a fifth of
//! the work of a decode-resize-encode on a core without SIMD); the box downscale does not care
//! which three channels it averages.

use std::ops::Range;

use jpeg_encoder::{Encoder, ImageBuffer, JpegColorType, SamplingFactor};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// Largest picture we decode (a bigger one is refused rather than allocated).
pub const MAX_SIDE: u32 = 4096;

/// How pixels are laid out in [`Image::pixels`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Y, Cb, Cr interleaved, one byte each.
    Ycbcr,
    /// One luma byte per pixel (grayscale JPEGs).
    Luma,
}

impl Layout {
    pub fn channels(self) -> usize {
        match self {
            Layout::Ycbcr => 3,
            Layout::Luma => 1,
        }
    }
}

/// A decoded picture.
#[derive(Clone, Debug)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub pixels: Vec<u8>,
}

impl Image {
    /// A picture of one colour (`ycbcr` for colour layouts, its first byte for luma).
    pub fn filled(width: u32, height: u32, layout: Layout, ycbcr: [u8; 3]) -> Image {
        let pixels = match layout {
            Layout::Ycbcr => ycbcr.repeat(width as usize * height as usize),
            Layout::Luma => vec![ycbcr[0]; width as usize * height as usize],
        };
        Image {
            width,
            height,
            layout,
            pixels,
        }
    }
}

/// Decodes a JPEG to YCbCr (or luma for a grayscale one).
pub fn decode(jpeg: &[u8]) -> Result<Image, String> {
    decode_as(jpeg, false)
}

/// Decodes only a JPEG's luma (`Layout::Luma`), for a reader that needs brightness alone
/// (motion detection): the colour planes are entropy-decoded (the format leaves no way to
/// skip them) but neither transformed nor upsampled nor converted, which saves about half the
/// work, and the picture is a third of the size.
pub fn decode_luma(jpeg: &[u8]) -> Result<Image, String> {
    decode_as(jpeg, true)
}

fn decode_as(jpeg: &[u8], luma_only: bool) -> Result<Image, String> {
    let options = DecoderOptions::default()
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
        // A webcam frame with a glitch is still worth showing; strict mode refuses it.
        .set_strict_mode(false);
    let mut decoder = JpegDecoder::new_with_options(jpeg, options);
    decoder
        .decode_headers()
        .map_err(|e| format!("not a JPEG we can read: {e:?}"))?;
    let layout = match decoder.get_input_colorspace() {
        Some(ColorSpace::Luma) => Layout::Luma,
        Some(ColorSpace::YCbCr) if luma_only => Layout::Luma,
        Some(ColorSpace::YCbCr) => Layout::Ycbcr,
        other => return Err(format!("unsupported JPEG colour space {other:?}")),
    };
    let out = match layout {
        Layout::Luma => ColorSpace::Luma,
        Layout::Ycbcr => ColorSpace::YCbCr,
    };
    decoder.set_options(options.jpeg_set_out_colorspace(out));
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| "JPEG without a size".to_string())?;
    let pixels = decoder
        .decode()
        .map_err(|e| format!("JPEG decode failed: {e:?}"))?;
    Ok(Image {
        width: width as u32,
        height: height as u32,
        layout,
        pixels,
    })
}

/// Encodes at `quality` (1-100), always with 4:2:0 chroma. jpeg-encoder would switch to 4:4:4
/// at quality 90 and above, which costs about a third more time and bytes for colour detail a
/// camera never delivered: webcams send 4:2:2 or 4:2:0, and so does every frame we decode.
pub fn encode(image: &Image, quality: u8) -> Result<Vec<u8>, String> {
    let rows = Rows::new(image)?;
    // Typical frames compress to well under a bit per pixel; start there to avoid regrowing.
    let mut out = Vec::with_capacity(image.width as usize * image.height as usize / 6 + 1024);
    let mut encoder = Encoder::new(&mut out, quality);
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder
        .encode_image(rows)
        .map_err(|e| format!("JPEG encode failed: {e}"))?;
    Ok(out)
}

/// An [`Image`] as jpeg-encoder reads it: one row at a time into its component buffers.
///
/// Why not `Encoder::encode(pixels, w, h, ColorType)`: that entry point instantiates the whole
/// encoder once per colour type it knows (nine) although we only ever hand it YCbCr or luma —
/// 71 KB of binary for nothing (BENCHMARKS.md, "Binary size"). One buffer type for both
/// layouts is one instantiation; the per-row `match` costs nothing next to the row's DCT.
struct Rows<'a> {
    image: &'a Image,
    width: u16,
    height: u16,
}

impl<'a> Rows<'a> {
    fn new(image: &'a Image) -> Result<Rows<'a>, String> {
        let width = u16::try_from(image.width).map_err(|_| "picture too wide".to_string())?;
        let height = u16::try_from(image.height).map_err(|_| "picture too tall".to_string())?;
        let needed = usize::from(width) * usize::from(height) * image.layout.channels();
        if image.pixels.len() < needed {
            return Err(format!(
                "JPEG encode failed: {} bytes of pixels for a {width}x{height} picture",
                image.pixels.len()
            ));
        }
        Ok(Rows {
            image,
            width,
            height,
        })
    }
}

impl ImageBuffer for Rows<'_> {
    fn get_jpeg_color_type(&self) -> JpegColorType {
        match self.image.layout {
            Layout::Ycbcr => JpegColorType::Ycbcr,
            Layout::Luma => JpegColorType::Luma,
        }
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let channels = self.image.layout.channels();
        let row_bytes = usize::from(self.width) * channels;
        let start = usize::from(y) * row_bytes;
        let row = &self.image.pixels[start..start + row_bytes];
        match self.image.layout {
            Layout::Luma => buffers[0].extend_from_slice(row),
            Layout::Ycbcr => {
                let [y, cb, cr, _] = buffers;
                for pixel in row.chunks_exact(3) {
                    y.push(pixel[0]);
                    cb.push(pixel[1]);
                    cr.push(pixel[2]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Byte-level: markers
// ---------------------------------------------------------------------------------------------

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;
const COM: u8 = 0xFE;

/// One marker segment found by [`segments`]: its marker byte and where it starts (at the 0xFF).
#[derive(Debug, PartialEq)]
struct Segment {
    marker: u8,
    start: usize,
}

/// Why a header walk stopped short.
#[derive(Debug, PartialEq)]
enum Short {
    /// The bytes end before the structure does (more may come from a stream).
    Incomplete,
    /// The bytes are not a JPEG here.
    Invalid,
}

/// Walks the header segments of a JPEG from SOI up to and including SOS. Returns them and the
/// offset where entropy-coded data begins, or `None` if the bytes are not a JPEG header.
fn segments(jpeg: &[u8]) -> Option<(Vec<Segment>, usize)> {
    if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != SOI {
        return None;
    }
    walk_header(jpeg, 2).ok()
}

/// Walks marker segments from `pos` (a marker) up to and including the next SOS.
fn walk_header(jpeg: &[u8], mut pos: usize) -> Result<(Vec<Segment>, usize), Short> {
    let byte = |at: usize| jpeg.get(at).copied().ok_or(Short::Incomplete);
    let mut found = Vec::new();
    loop {
        if byte(pos)? != 0xFF {
            return Err(Short::Invalid);
        }
        let start = pos;
        // Fill bytes: any number of 0xFF before the marker byte.
        while byte(pos)? == 0xFF {
            pos += 1;
        }
        let marker = byte(pos)?;
        pos += 1;
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            continue;
        }
        if marker == EOI || marker == SOI || marker == 0x00 {
            return Err(Short::Invalid);
        }
        let length = usize::from(u16::from_be_bytes([byte(pos)?, byte(pos + 1)?]));
        if length < 2 {
            return Err(Short::Invalid);
        }
        if pos + length > jpeg.len() {
            return Err(Short::Incomplete);
        }
        found.push(Segment { marker, start });
        pos += length;
        if marker == SOS {
            return Ok((found, pos));
        }
    }
}

/// Width and height from the SOF header, without decoding.
pub fn probe_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    let (segments, _) = segments(jpeg)?;
    let sof = segments
        .iter()
        .find(|s| matches!(s.marker, 0xC0..=0xCF) && !matches!(s.marker, DHT | 0xC8 | 0xCC))?;
    // FF Cn, length (2), precision (1), height (2), width (2)
    let at = sof.start + 5;
    let height = u16::from_be_bytes([*jpeg.get(at)?, *jpeg.get(at + 1)?]);
    let width = u16::from_be_bytes([*jpeg.get(at + 2)?, *jpeg.get(at + 3)?]);
    (width > 0 && height > 0).then_some((u32::from(width), u32::from(height)))
}

/// The JPEG with a COM segment holding `text` right after SOI.
pub fn with_comment(jpeg: &[u8], text: &str) -> Vec<u8> {
    let text = &text.as_bytes()[..text.len().min(60_000)];
    let mut out = Vec::with_capacity(jpeg.len() + text.len() + 4);
    out.extend_from_slice(&jpeg[..2]);
    out.extend_from_slice(&[0xFF, COM]);
    out.extend_from_slice(&((text.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(text);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The text of the first COM segment, if any.
#[cfg(test)]
pub fn comment(jpeg: &[u8]) -> Option<&str> {
    let (segments, _) = segments(jpeg)?;
    let com = segments.iter().find(|s| s.marker == COM)?;
    let length = usize::from(u16::from_be_bytes([
        jpeg[com.start + 2],
        jpeg[com.start + 3],
    ]));
    std::str::from_utf8(&jpeg[com.start + 4..com.start + 2 + length]).ok()
}

/// The standard Huffman tables of JPEG Annex K.3, as one DHT segment. USB webcams send MJPEG
/// frames without a DHT segment (the format assumes these tables); decoders built for files,
/// including browsers', refuse such frames. mjpg-streamer inserts this same segment.
const STANDARD_DHT: &[u8] = &[
    0xFF, 0xC4, 0x01, 0xA2, // DHT, length 418
    // Luma DC
    0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
    // Chroma DC
    0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B,
    // Luma AC
    0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01,
    0x7D, 0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
    0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1,
    0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27,
    0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6,
    0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4,
    0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1,
    0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7,
    0xF8, 0xF9, 0xFA, // Chroma AC
    0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02,
    0x77, 0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61,
    0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52,
    0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A,
    0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47,
    0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67,
    0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86,
    0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4,
    0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2,
    0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9,
    0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7,
    0xF8, 0xF9, 0xFA,
];

/// The frame as is if it has Huffman tables, else with the standard ones inserted before SOS
/// (the only change made to a camera's MJPEG frame). `None` if the bytes are not a JPEG.
pub fn with_huffman_tables(jpeg: Vec<u8>) -> Option<Vec<u8>> {
    let (segments, _) = segments(&jpeg)?;
    if segments.iter().any(|s| s.marker == DHT) {
        return Some(jpeg);
    }
    let sos = segments.iter().find(|s| s.marker == SOS)?.start;
    let mut out = Vec::with_capacity(jpeg.len() + STANDARD_DHT.len());
    out.extend_from_slice(&jpeg[..sos]);
    out.extend_from_slice(STANDARD_DHT);
    out.extend_from_slice(&jpeg[sos..]);
    Some(out)
}

/// Where the JPEG that starts at `start` (an SOI) ends: just past its EOI.
fn frame_end(bytes: &[u8], start: usize) -> Result<usize, Short> {
    let (_, mut data) = walk_header(bytes, start + 2)?;
    // A progressive JPEG has several scans: after each scan's data, walk the next header.
    loop {
        // Entropy-coded data: 0xFF is followed by 0x00 (a stuffed byte), RSTn or fill inside
        // it; any other marker ends the scan.
        let mut i = data;
        loop {
            let ff = i + bytes[i..]
                .iter()
                .position(|&b| b == 0xFF)
                .ok_or(Short::Incomplete)?;
            let next = *bytes.get(ff + 1).ok_or(Short::Incomplete)?;
            if next == 0x00 || (0xD0..=0xD7).contains(&next) || next == 0xFF {
                i = ff + 1;
                continue;
            }
            if next == EOI {
                return Ok(ff + 2);
            }
            data = walk_header(bytes, ff)?.1;
            break;
        }
    }
}

/// Finds the complete JPEGs in a stretch of an .mjpeg stream (concatenated JPEGs, as ffmpeg's
/// `-f mjpeg` writes). Returns their ranges and how many bytes were used up: a frame cut off at
/// the end is left for the next read; bytes that are not a JPEG are skipped.
pub fn split_frames(bytes: &[u8]) -> (Vec<Range<usize>>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos + 1 < bytes.len() {
        let Some(offset) = bytes[pos..].windows(2).position(|w| w == [0xFF, SOI]) else {
            // Keep a trailing 0xFF: it may be the first half of the next SOI.
            let keep = usize::from(bytes.last() == Some(&0xFF));
            return (frames, bytes.len() - keep);
        };
        let start = pos + offset;
        match frame_end(bytes, start) {
            Ok(end) => {
                frames.push(start..end);
                pos = end;
            }
            Err(Short::Incomplete) => return (frames, start),
            Err(Short::Invalid) => pos = start + 2,
        }
    }
    (frames, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32) -> Image {
        let mut pixels = Vec::new();
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&[(x * 255 / width) as u8, (y * 255 / height) as u8, 128]);
            }
        }
        Image {
            width,
            height,
            layout: Layout::Ycbcr,
            pixels,
        }
    }

    #[test]
    fn rows_encode_the_same_bytes_as_jpeg_encoders_own_entry_point() {
        // `encode` hands jpeg-encoder our own row reader (one instantiation of the encoder)
        // instead of calling `Encoder::encode` with a colour type: the file must not change.
        let colour = gradient(61, 37);
        let luma = Image {
            layout: Layout::Luma,
            pixels: colour.pixels.iter().step_by(3).copied().collect(),
            ..colour.clone()
        };
        for (image, color) in [
            (&colour, jpeg_encoder::ColorType::Ycbcr),
            (&luma, jpeg_encoder::ColorType::Luma),
        ] {
            let mut expected = Vec::new();
            let mut encoder = Encoder::new(&mut expected, 75);
            encoder.set_sampling_factor(SamplingFactor::F_2_2);
            encoder.encode(&image.pixels, 61, 37, color).unwrap();
            assert_eq!(encode(image, 75).unwrap(), expected, "{:?}", image.layout);
        }
    }

    #[test]
    fn too_few_pixels_is_an_error_not_a_panic() {
        let mut image = gradient(16, 8);
        image.pixels.truncate(16 * 8 * 3 - 1);
        let err = encode(&image, 80).unwrap_err();
        assert!(
            err.contains("383 bytes of pixels for a 16x8 picture"),
            "{err}"
        );
    }

    #[test]
    fn encode_then_decode_keeps_size_and_picture() {
        let image = gradient(64, 48);
        let jpeg = encode(&image, 90).unwrap();
        assert_eq!(probe_size(&jpeg), Some((64, 48)));
        let back = decode(&jpeg).unwrap();
        assert_eq!(
            (back.width, back.height, back.layout),
            (64, 48, Layout::Ycbcr)
        );
        let worst = image
            .pixels
            .iter()
            .zip(&back.pixels)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst < 16, "lossy beyond reason: {worst}");
    }

    #[test]
    fn luma_only_is_the_colour_decode_s_luma() {
        let jpeg = encode(&gradient(64, 48), 85).unwrap();
        let colour = decode(&jpeg).unwrap();
        let luma = decode_luma(&jpeg).unwrap();
        assert_eq!(
            (luma.width, luma.height, luma.layout),
            (64, 48, Layout::Luma)
        );
        let y: Vec<u8> = colour.pixels.iter().step_by(3).copied().collect();
        assert_eq!(luma.pixels, y);
        // A grayscale JPEG is luma either way.
        let gray = encode(&Image::filled(32, 16, Layout::Luma, [90, 0, 0]), 80).unwrap();
        assert_eq!(
            decode_luma(&gray).unwrap().pixels,
            decode(&gray).unwrap().pixels
        );
    }

    #[test]
    fn grayscale_round_trip() {
        let image = Image::filled(32, 16, Layout::Luma, [200, 0, 0]);
        let jpeg = encode(&image, 80).unwrap();
        let back = decode(&jpeg).unwrap();
        assert_eq!(back.layout, Layout::Luma);
        assert_eq!(back.pixels.len(), 32 * 16);
        assert!(back.pixels.iter().all(|p| p.abs_diff(200) < 4));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(b"\xFF\xD8\xFF\xE0garbage").is_err());
        assert!(probe_size(b"\xFF\xD8\xFF").is_none());
        assert!(with_huffman_tables(b"not a jpeg".to_vec()).is_none());
    }

    #[test]
    fn comments_are_added_and_read_back() {
        let jpeg = encode(&gradient(16, 16), 80).unwrap();
        let tagged = with_comment(&jpeg, "frame=42");
        assert_eq!(comment(&tagged), Some("frame=42"));
        assert_eq!(comment(&jpeg), None);
        assert_eq!(
            decode(&tagged).unwrap().pixels,
            decode(&jpeg).unwrap().pixels
        );
    }

    /// A webcam-style frame: the same JPEG with its DHT segments removed.
    fn strip_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let (segments, _) = segments(jpeg).unwrap();
        let mut out = jpeg[..2].to_vec();
        let mut pos = 2;
        for segment in segments.iter() {
            let length = usize::from(u16::from_be_bytes([
                jpeg[segment.start + 2],
                jpeg[segment.start + 3],
            ]));
            if segment.marker == DHT {
                out.extend_from_slice(&jpeg[pos..segment.start]);
                pos = segment.start + 2 + length;
            }
        }
        out.extend_from_slice(&jpeg[pos..]);
        out
    }

    #[test]
    fn standard_huffman_tables_make_a_webcam_frame_decodable() {
        // jpeg-encoder writes the Annex K tables, so stripping them and inserting ours must give
        // back a picture identical to the original.
        let jpeg = encode(&gradient(48, 32), 80).unwrap();
        let webcam = strip_huffman_tables(&jpeg);
        assert!(webcam.len() < jpeg.len());
        assert!(!segments(&webcam).unwrap().0.iter().any(|s| s.marker == DHT));
        let fixed = with_huffman_tables(webcam).unwrap();
        assert_eq!(
            decode(&fixed).unwrap().pixels,
            decode(&jpeg).unwrap().pixels
        );
        // A frame that has tables is returned untouched.
        assert_eq!(with_huffman_tables(jpeg.clone()).unwrap(), jpeg);
    }

    #[test]
    fn splits_a_stream_of_jpegs() {
        let a = encode(&gradient(16, 16), 80).unwrap();
        let b = encode(&gradient(32, 8), 50).unwrap();
        let mut stream = b"junk".to_vec();
        stream.extend_from_slice(&a);
        stream.extend_from_slice(&b);
        stream.extend_from_slice(&a[..a.len() / 2]); // truncated tail
        let (frames, used) = split_frames(&stream);
        assert_eq!(frames.len(), 2);
        assert_eq!(&stream[frames[0].clone()], &a[..]);
        assert_eq!(&stream[frames[1].clone()], &b[..]);
        // The truncated frame is left for the next read.
        assert_eq!(used, 4 + a.len() + b.len());
        // Fed in small pieces, the same frames come out.
        let mut pending = Vec::new();
        let mut found = Vec::new();
        for piece in stream.chunks(7) {
            pending.extend_from_slice(piece);
            let (frames, used) = split_frames(&pending);
            found.extend(frames.into_iter().map(|r| pending[r].to_vec()));
            pending.drain(..used);
        }
        assert_eq!(found, vec![a.clone(), b.clone()]);
    }
}
