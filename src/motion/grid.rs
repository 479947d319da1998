//! A decoded picture shrunk to a small grid of luma averages: what the motion detector looks at.
//!
//! Why a grid of averages: motion worth telling anyone about is an object, not a pixel, and
//! averaging a square cell of pixels divides sensor noise by the cell's side (a 10x10 cell cuts
//! it tenfold) before any decision is made. About 64 cells across is enough to place a person
//! or a car and keeps everything after this step to a few thousand numbers a frame. Only luma
//! is read: brightness carries the shapes; chroma would double the work for little.

use crate::video::jpeg::Image;

/// Cells across the grid, roughly: the cell side is the picture width divided by this.
pub const COLUMNS: u32 = 64;

/// Whether a cell's average may be off because some of its pixels are clipped: then the true
/// average is at least (white) or at most (black) what the cell shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clip {
    #[default]
    None,
    Black,
    White,
}

/// A pixel this dark or bright may be clipped.
const BLACK_PIXEL: u8 = 4;
const WHITE_PIXEL: u8 = 251;
/// A cell with at least this share of clipped pixels (1/16) reads as clipped.
const CLIPPED_SHARE_SHIFT: u32 = 4;

/// Luma averages over square cells, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct LumaGrid {
    pub cols: usize,
    pub rows: usize,
    /// Side of a cell in picture pixels.
    pub cell: u32,
    /// The picture the grid was made from, for turning cells back into fractions.
    pub width: u32,
    pub height: u32,
    pub luma: Vec<u8>,
    /// Which cells hold clipped pixels.
    pub clip: Vec<Clip>,
}

impl LumaGrid {
    /// The grid of `image`. Pixels past the last whole cell (right and bottom edges) are left
    /// out; `None` for a picture smaller than one cell each way.
    pub fn from_image(image: &Image) -> Option<LumaGrid> {
        let cell = (image.width / COLUMNS).max(1);
        let cols = (image.width / cell) as usize;
        let rows = (image.height / cell) as usize;
        if cols == 0 || rows == 0 {
            return None;
        }
        let stride = image.layout.channels();
        let row_bytes = image.width as usize * stride;
        if image.pixels.len() < row_bytes * image.height as usize {
            return None;
        }
        let side = cell as usize;
        // Dividing by the cell's pixel count as a multiply and a shift: a Pi Zero's ARMv6 core
        // has no divide instruction. Exact for cells up to 64x64 pixels (pictures up to the
        // decoder's 4096 wide): the reciprocal's rounding error stays below 1/count.
        let count = (side * side) as u64;
        let reciprocal = (1u64 << 32).div_ceil(count);
        let mut luma = Vec::with_capacity(cols * rows);
        let mut clip = Vec::with_capacity(cols * rows);
        // Per cell of the current row: the sum, and the counts of black and white pixels.
        let mut sums = vec![(0u32, 0u32, 0u32); cols];
        let enough = ((side * side) as u32 >> CLIPPED_SHARE_SHIFT).max(1);
        for row in 0..rows {
            sums.iter_mut().for_each(|s| *s = (0, 0, 0));
            for y in row * side..(row + 1) * side {
                let line = &image.pixels[y * row_bytes..y * row_bytes + cols * side * stride];
                for (cell, chunk) in sums.iter_mut().zip(line.chunks_exact(side * stride)) {
                    for &v in chunk.iter().step_by(stride) {
                        cell.0 += u32::from(v);
                        cell.1 += u32::from(v <= BLACK_PIXEL);
                        cell.2 += u32::from(v >= WHITE_PIXEL);
                    }
                }
            }
            for &(sum, black, white) in &sums {
                let rounded = u64::from(sum) + count / 2;
                luma.push(((rounded * reciprocal) >> 32).min(255) as u8);
                clip.push(if white > black && white >= enough {
                    Clip::White
                } else if black >= enough {
                    Clip::Black
                } else {
                    Clip::None
                });
            }
        }
        Some(LumaGrid {
            cols,
            rows,
            cell,
            width: image.width,
            height: image.height,
            luma,
            clip,
        })
    }

    /// A grid of one value everywhere (tests).
    #[cfg(test)]
    pub fn filled(cols: usize, rows: usize, value: u8) -> LumaGrid {
        LumaGrid {
            cols,
            rows,
            cell: 10,
            width: cols as u32 * 10,
            height: rows as u32 * 10,
            luma: vec![value; cols * rows],
            clip: vec![Clip::None; cols * rows],
        }
    }

    pub fn len(&self) -> usize {
        self.luma.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::jpeg::Layout;

    fn image(width: u32, height: u32, layout: Layout, luma_at: impl Fn(u32, u32) -> u8) -> Image {
        let stride = layout.channels();
        let mut pixels = vec![128u8; (width * height) as usize * stride];
        for y in 0..height {
            for x in 0..width {
                pixels[(y * width + x) as usize * stride] = luma_at(x, y);
            }
        }
        Image {
            width,
            height,
            layout,
            pixels,
        }
    }

    #[test]
    fn averages_square_cells_of_luma() {
        // 640x480: cells of 10 pixels, 64x48 of them; the left half bright.
        let img = image(
            640,
            480,
            Layout::Ycbcr,
            |x, _| if x < 320 { 200 } else { 40 },
        );
        let grid = LumaGrid::from_image(&img).unwrap();
        assert_eq!((grid.cols, grid.rows, grid.cell), (64, 48, 10));
        assert_eq!(grid.luma[0], 200);
        assert_eq!(grid.luma[31], 200);
        assert_eq!(grid.luma[32], 40);
        assert_eq!(grid.luma[47 * 64 + 63], 40);
        assert!(grid.clip.iter().all(|&c| c == Clip::None));
    }

    #[test]
    fn cells_with_clipped_pixels_say_so() {
        // 640x480, cells of 10x10: column 0 has 10 white pixels a cell (1/10), column 1 has
        // 3 (too few), column 2 has 20 black ones.
        let img = image(640, 480, Layout::Ycbcr, |x, y| {
            match (x / 10, x % 10, y % 10) {
                (0, 0, _) => 255,
                (1, 0, 0..3) => 255,
                (2, 0..2, _) => 0,
                _ => 120,
            }
        });
        let grid = LumaGrid::from_image(&img).unwrap();
        assert_eq!(
            &grid.clip[..4],
            &[Clip::White, Clip::None, Clip::Black, Clip::None]
        );
    }

    #[test]
    fn rounds_the_average_and_reads_luma_only_pictures() {
        // Alternating 0 and 255 columns average to 127.5, rounded up.
        let img = image(
            128,
            64,
            Layout::Luma,
            |x, _| if x % 2 == 0 { 0 } else { 255 },
        );
        let grid = LumaGrid::from_image(&img).unwrap();
        assert_eq!((grid.cols, grid.rows, grid.cell), (64, 32, 2));
        assert!(grid.luma.iter().all(|&v| v == 128), "{:?}", &grid.luma[..4]);
    }

    #[test]
    fn edges_past_the_last_whole_cell_are_left_out() {
        // 650 wide: cell 10, 65 columns; 485 high: 48 rows, the last 5 pixel rows ignored.
        let img = image(
            650,
            485,
            Layout::Ycbcr,
            |_, y| if y >= 480 { 255 } else { 10 },
        );
        let grid = LumaGrid::from_image(&img).unwrap();
        assert_eq!((grid.cols, grid.rows), (65, 48));
        assert!(grid.luma.iter().all(|&v| v == 10));
    }

    #[test]
    fn tiny_or_truncated_pictures_give_no_grid() {
        let mut img = image(64, 48, Layout::Ycbcr, |_, _| 1);
        assert!(LumaGrid::from_image(&img).is_some());
        img.pixels.truncate(100);
        assert!(LumaGrid::from_image(&img).is_none());
        let empty = Image {
            width: 0,
            height: 0,
            layout: Layout::Luma,
            pixels: Vec::new(),
        };
        assert!(LumaGrid::from_image(&empty).is_none());
    }
}
