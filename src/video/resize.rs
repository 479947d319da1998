//! Downscaling by area averaging (a box filter), and the size a preset gets from a source.
//!
//! Why a box filter: presets only ever shrink (never upscale past the source), mostly by whole
//! factors (640x480 → 320x240, 1280x720 → 640x360); for those, averaging each source box is the
//! textbook-correct filter (no aliasing, no ringing), and it reads every source pixel exactly
//! once with integer adds. Bilinear sampling would be as cheap but aliases badly when shrinking
//! by 2 or more; Lanczos would look marginally better at several times the cost. The box needs
//! only integer adds, and its divisions are reciprocal multiplies (a Pi Zero's ARMv6 has no
//! hardware divide).

use super::jpeg::Image;

/// The size a preset limited to `max` makes from a `source`-sized picture: the source size if
/// it fits (never upscale), else the largest size within `max` with the source's aspect ratio.
pub fn fit(source: (u32, u32), max: (u32, u32)) -> (u32, u32) {
    let (w, h) = source;
    let (mw, mh) = max;
    if w <= mw && h <= mh {
        return source;
    }
    // Compare mw/w and mh/h without floats: the tighter side decides.
    if u64::from(mw) * u64::from(h) <= u64::from(mh) * u64::from(w) {
        let th = (u64::from(h) * u64::from(mw) + u64::from(w) / 2) / u64::from(w);
        (mw, (th as u32).clamp(1, mh))
    } else {
        let tw = (u64::from(w) * u64::from(mh) + u64::from(h) / 2) / u64::from(h);
        ((tw as u32).clamp(1, mw), mh)
    }
}

/// Source ranges `[start, end)` for each of `to` output positions over `from` inputs.
fn spans(from: u32, to: u32) -> Vec<(usize, usize)> {
    (0..to)
        .map(|i| {
            let start = (u64::from(i) * u64::from(from) / u64::from(to)) as usize;
            let end = (u64::from(i + 1) * u64::from(from) / u64::from(to)) as usize;
            (start, end.max(start + 1))
        })
        .collect()
}

/// Shrinks `image` to `width` x `height` (each at most the source's) by averaging boxes.
pub fn downscale(image: &Image, width: u32, height: u32) -> Image {
    assert!(
        width >= 1 && height >= 1 && width <= image.width && height <= image.height,
        "downscale only shrinks"
    );
    match image.layout.channels() {
        1 => downscale_channels::<1>(image, width, height),
        _ => downscale_channels::<3>(image, width, height),
    }
}

/// The box filter for `C` interleaved channels (a constant, so the inner loops unroll).
fn downscale_channels<const C: usize>(image: &Image, width: u32, height: u32) -> Image {
    let row_len = image.width as usize * C;
    let columns = spans(image.width, width);
    let rows = spans(image.height, height);
    let mut out = vec![0u8; width as usize * height as usize * C];
    // Column sums of the current band of source rows.
    let mut band = vec![0u32; row_len];
    // round(sum / area) as a multiply by a 2^-24 fixed-point reciprocal (there is no hardware
    // divide on an ARMv6); recomputed only when the band height changes.
    let mut reciprocals = vec![0u64; columns.len()];
    let mut reciprocals_for = 0;
    let mut out_rows = out.chunks_exact_mut(width as usize * C);
    for &(y0, y1) in &rows {
        let band_height = y1 - y0;
        let first = &image.pixels[y0 * row_len..(y0 + 1) * row_len];
        for (sum, &value) in band.iter_mut().zip(first) {
            *sum = u32::from(value);
        }
        for y in y0 + 1..y1 {
            let row = &image.pixels[y * row_len..(y + 1) * row_len];
            for (sum, &value) in band.iter_mut().zip(row) {
                *sum += u32::from(value);
            }
        }
        if reciprocals_for != band_height {
            reciprocals_for = band_height;
            for (r, &(x0, x1)) in reciprocals.iter_mut().zip(&columns) {
                let area = (band_height * (x1 - x0)) as u64;
                *r = ((1u64 << 24) + area / 2) / area;
            }
        }
        let out_row = out_rows.next().expect("one output row per band");
        for ((px, &(x0, x1)), &r) in out_row.chunks_exact_mut(C).zip(&columns).zip(&reciprocals) {
            let mut acc = [0u32; C];
            for source in band[x0 * C..x1 * C].chunks_exact(C) {
                for c in 0..C {
                    acc[c] += source[c];
                }
            }
            for c in 0..C {
                px[c] = ((u64::from(acc[c]) * r + (1 << 23)) >> 24).min(255) as u8;
            }
        }
    }
    Image {
        width,
        height,
        layout: image.layout,
        pixels: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::jpeg::Layout;

    #[test]
    fn fit_never_upscales_and_keeps_the_aspect() {
        assert_eq!(fit((640, 480), (320, 240)), (320, 240));
        assert_eq!(fit((640, 480), (1280, 720)), (640, 480));
        assert_eq!(fit((320, 240), (640, 480)), (320, 240));
        assert_eq!(fit((1280, 720), (320, 240)), (320, 180));
        assert_eq!(fit((1920, 1080), (1280, 720)), (1280, 720));
        assert_eq!(fit((480, 640), (320, 240)), (180, 240));
        assert_eq!(fit((4096, 16), (320, 240)), (320, 1));
    }

    #[test]
    fn halving_averages_each_two_by_two_box() {
        // 4x2 luma: boxes [10,20,30,40] and [0,0,255,255].
        let image = Image {
            width: 4,
            height: 2,
            layout: Layout::Luma,
            pixels: vec![10, 20, 0, 0, 30, 40, 255, 255],
        };
        let half = downscale(&image, 2, 1);
        assert_eq!(half.pixels, vec![25, 128]);
    }

    #[test]
    fn channels_stay_apart_and_flat_colours_stay_flat() {
        let image = Image::filled(640, 480, Layout::Ycbcr, [81, 90, 240]);
        let small = downscale(&image, 213, 160);
        assert_eq!(small.pixels.len(), 213 * 160 * 3);
        assert!(small.pixels.chunks(3).all(|p| p == [81, 90, 240]));
    }

    #[test]
    fn same_size_is_a_copy() {
        let image = Image {
            width: 3,
            height: 1,
            layout: Layout::Ycbcr,
            pixels: (0..9).collect(),
        };
        assert_eq!(downscale(&image, 3, 1).pixels, image.pixels);
    }
}
