//! The motion detector: luma grids and their capture times in, "motion started" and "motion
//! ended" out. Pure logic with no clock and no I/O, so the tests drive it with exact times and
//! made-up pictures.
//!
//! Each grid is compared with a background model of the scene, cell by cell:
//!
//! 1. **Brightness first.** Lights switched on, a cloud, or the camera's auto-exposure change
//!    every cell at once, by an amount that depends on how bright the cell was (and clips at
//!    black and white). The detector fits that change as a smooth tone curve (a quadratic of
//!    the background level, clipped to the frame's range) over the whole picture, robustly:
//!    fitted, the cells it cannot explain left out, fitted again. Only what the curve cannot
//!    explain counts. A curve of three numbers for the whole picture cannot explain a local
//!    change, so a person in front of a uniform door is still seen (a per-level curve, such as
//!    histogram matching, would "explain" the door's cells turning into the person's coat).
//! 2. **Noise next.** A cell counts as changed when it differs from the curve's prediction by
//!    more than the sensitivity's threshold and by more than four times that cell's own usual
//!    deviation (learned while it is calm), so a noisy sensor, a monitor's flicker or a waving
//!    branch raise their own bar instead of ringing.
//! 3. **Area.** Changed cells are joined into regions (8-neighbours); the largest must cover a
//!    minimum share of the picture (less at higher sensitivity). Its bounding box is the
//!    event's box; the share of the watched cells that changed is the score.
//! 4. **Time.** Motion must go on for `min_duration` (one calm frame in between is forgiven)
//!    before it is reported, and it ends after `cooldown` without any.
//!
//! The background follows the scene: calm cells quickly (a second or two); changed cells not
//! at all while something passes over them (no trail behind a moving object), but once a cell
//! has stayed changed for a couple of seconds, something stopped there (a parked car, a
//! parcel) and it is learned: its motion ends about ten seconds after it stopped. When most of the picture changes at
//! once and the tone curve cannot explain it (the camera moved, a scene cut), the model starts
//! over instead of reporting motion everywhere.

use std::time::{Duration, Instant};

use super::Settings;
use super::grid::{Clip, LumaGrid};

/// Time constant of the background for calm cells: it follows slow changes of the scene
/// (shadows moving, brightness settling) within a couple of seconds.
const CALM_TAU_S: f32 = 1.5;
/// A cell changed for this long without a break holds something that stopped there (a
/// parcel, a parked car): from then on it is learned as scene. Before that a changed cell is
/// not learned at all, so an object passing over it leaves no trail behind.
const STOPPED_AFTER_S: f32 = 2.0;
/// Time constant at which a stopped object is learned: two or three of them bring a strong
/// contrast under the threshold, so its motion ends about ten seconds after it stopped.
const STOPPED_TAU_S: f32 = 3.0;
/// Time constant of each cell's learned deviation.
const NOISE_TAU_S: f32 = 5.0;
/// A changed cell differs from the prediction by more than this many of its usual deviations.
const NOISE_FACTOR: f32 = 4.0;
/// Starting deviation of every cell (luma levels), before any has been learned.
const START_DEVIATION: f32 = 2.0;
/// After (re)starting, the model learns for this long before any decision.
const WARM_UP: Duration = Duration::from_secs(1);
/// Longest step the model integrates in one go (the camera paused, the detector was idle).
const MAX_STEP_S: f32 = 2.0;
/// Share of the cells that, changed at once, means a new scene rather than motion.
const SCENE_CHANGE: f32 = 0.7;
/// Fewest cells a region needs to count, whatever the sensitivity.
const MIN_REGION_CELLS: usize = 3;
/// What the detector decided on a frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Motion has gone on for `min_duration`: report it.
    Detected {
        /// Share of the watched cells that changed, 0..1.
        score: f64,
        /// The largest changed region, `[x, y, w, h]` as fractions of the picture.
        region: [f64; 4],
    },
    /// No motion for `cooldown`: the motion that was reported is over. `duration` is from its
    /// first moving frame to its last.
    Ended { duration: Duration },
}

/// What one frame showed (also for logs and tests).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Analysis {
    /// Cells changed inside the zones.
    pub changed: usize,
    /// Cells inside the zones.
    pub watched: usize,
    /// The largest region: its cell count and bounding box in cells (col, row, cols, rows).
    pub largest: Option<(usize, [usize; 4])>,
    /// The largest region is big enough to be motion.
    pub moving: bool,
}

/// The learned scene, for one grid size.
struct Model {
    cols: usize,
    rows: usize,
    background: Vec<f32>,
    /// Whether each background level was learned from clipped pixels (then the true level
    /// may lie further out).
    background_clip: Vec<Clip>,
    /// Each cell's usual squared deviation from the prediction.
    variance: Vec<f32>,
    /// How long each cell has been changed without a break (seconds).
    changed_for: Vec<f32>,
    /// Cells inside the zones.
    watched: Vec<bool>,
    watched_count: usize,
    /// Capture time of the last frame seen.
    last: Instant,
    /// No decisions before this.
    learning_until: Instant,
}

enum State {
    Calm {
        /// Motion seen but not yet for `min_duration`: since when, and how many calm frames
        /// followed its last moving one (one is forgiven).
        pending: Option<Pending>,
    },
    Moving {
        since: Instant,
        last_moving: Instant,
    },
}

#[derive(Clone, Copy)]
struct Pending {
    since: Instant,
    calm_frames: u8,
}

pub struct Detector {
    settings: Settings,
    threshold: f32,
    min_area: f32,
    model: Option<Model>,
    state: State,
}

impl Detector {
    pub fn new(settings: Settings) -> Detector {
        // Sensitivity 1..100: the luma difference a cell needs (35.8 .. 4) and the share of the
        // picture the largest region needs (2.2 % .. 0.2 %). 50 gives 16 levels and 1.2 %: a
        // person or a car at a door, not a moth.
        let s = f32::from(settings.sensitivity.clamp(1, 100));
        let threshold = 4.0 + (100.0 - s) * 0.24;
        let min_area = 0.002 + (100.0 - s) / 100.0 * 0.02;
        Detector {
            settings,
            threshold,
            min_area,
            model: None,
            state: State::Calm { pending: None },
        }
    }

    /// True between `Detected` and `Ended`.
    #[cfg(test)]
    pub fn is_moving(&self) -> bool {
        matches!(self.state, State::Moving { .. })
    }

    /// Forgets the scene (the camera went away, or restarted). Motion in progress ends now,
    /// with the duration seen so far.
    pub fn reset(&mut self) -> Option<Decision> {
        self.model = None;
        let ended = match self.state {
            State::Moving { since, last_moving } => Some(Decision::Ended {
                duration: last_moving.saturating_duration_since(since),
            }),
            State::Calm { .. } => None,
        };
        self.state = State::Calm { pending: None };
        ended
    }

    /// Looks at one grid captured at `now` (capture times must not go backwards).
    pub fn observe(&mut self, now: Instant, grid: &LumaGrid) -> (Analysis, Option<Decision>) {
        let fits = self
            .model
            .as_ref()
            .is_some_and(|m| m.cols == grid.cols && m.rows == grid.rows);
        if !fits {
            // A new picture size is a new scene: whatever moved in the old one has ended.
            let ended = self.reset();
            self.model = Some(self.new_model(now, grid));
            return (Analysis::default(), ended);
        }
        let model = self.model.as_mut().expect("model checked above");
        let step = now.saturating_duration_since(model.last).as_secs_f32();
        let step = step.min(MAX_STEP_S);
        model.last = now;
        let learning = now < model.learning_until;
        let (analysis, scene_changed) = analyse(model, grid, self.threshold, self.min_area, step);
        if scene_changed {
            log::debug!("motion: the whole picture changed; learning the new scene");
            let ended = self.reset();
            self.model = Some(self.new_model(now, grid));
            return (Analysis::default(), ended);
        }
        let decision = if learning {
            None
        } else {
            self.decide(now, &analysis, grid)
        };
        (analysis, decision)
    }

    fn new_model(&self, now: Instant, grid: &LumaGrid) -> Model {
        let watched = watched_cells(&self.settings, grid);
        Model {
            cols: grid.cols,
            rows: grid.rows,
            background: grid.luma.iter().map(|&v| f32::from(v)).collect(),
            background_clip: grid.clip.clone(),
            variance: vec![START_DEVIATION * START_DEVIATION; grid.len()],
            changed_for: vec![0.0; grid.len()],
            watched_count: watched.iter().filter(|&&w| w).count(),
            watched,
            last: now,
            learning_until: now + WARM_UP,
        }
    }

    fn decide(&mut self, now: Instant, analysis: &Analysis, grid: &LumaGrid) -> Option<Decision> {
        match &mut self.state {
            State::Calm { pending } => {
                if analysis.moving {
                    let since = match pending {
                        Some(p) => p.since,
                        None => now,
                    };
                    if now.saturating_duration_since(since) >= self.settings.min_duration {
                        self.state = State::Moving {
                            since,
                            last_moving: now,
                        };
                        let watched = analysis.watched.max(1);
                        let score = (analysis.changed as f64 / watched as f64).min(1.0);
                        let (_, cells) = analysis.largest.expect("moving has a region");
                        return Some(Decision::Detected {
                            score: round3(score),
                            region: fractions(cells, grid),
                        });
                    }
                    *pending = Some(Pending {
                        since,
                        calm_frames: 0,
                    });
                } else if let Some(p) = pending {
                    p.calm_frames += 1;
                    if p.calm_frames > 1 {
                        *pending = None;
                    }
                }
                None
            }
            State::Moving { since, last_moving } => {
                if analysis.moving {
                    *last_moving = now;
                    return None;
                }
                if now.saturating_duration_since(*last_moving) < self.settings.cooldown {
                    return None;
                }
                let duration = last_moving.saturating_duration_since(*since);
                self.state = State::Calm { pending: None };
                Some(Decision::Ended { duration })
            }
        }
    }
}

/// Which cells of `grid` lie inside a zone (by their centre); all of them without zones.
fn watched_cells(settings: &Settings, grid: &LumaGrid) -> Vec<bool> {
    let mut watched = vec![settings.zones.is_empty(); grid.len()];
    if settings.zones.is_empty() {
        return watched;
    }
    let cell = f64::from(grid.cell);
    let (width, height) = (f64::from(grid.width), f64::from(grid.height));
    for row in 0..grid.rows {
        for col in 0..grid.cols {
            let x = (col as f64 + 0.5) * cell / width;
            let y = (row as f64 + 0.5) * cell / height;
            watched[row * grid.cols + col] = settings.zones.iter().any(|z| z.contains(x, y));
        }
    }
    watched
}

/// Cells `[col, row, cols, rows]` as `[x, y, w, h]` fractions of the picture, 3 decimals.
fn fractions(cells: [usize; 4], grid: &LumaGrid) -> [f64; 4] {
    let cell = f64::from(grid.cell);
    let (width, height) = (f64::from(grid.width), f64::from(grid.height));
    [
        round3(cells[0] as f64 * cell / width),
        round3(cells[1] as f64 * cell / height),
        round3(cells[2] as f64 * cell / width),
        round3(cells[3] as f64 * cell / height),
    ]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// How this frame's levels follow the background's: `c0 + c1 x + c2 x²` with
/// `x = (level - 128) / 128`, between the lowest and highest background level it was fitted
/// on; outside them a straight line (a quadratic far from its data can bend anywhere).
#[derive(Clone, Copy, Debug, PartialEq)]
struct ToneCurve {
    c: [f64; 3],
    /// The background levels the fit saw, and the curve's slope (per level) at each end.
    fitted: (f64, f64),
    slopes: (f64, f64),
}

/// The levels a reading of this frame may stand for: a clipped one, anything from it to the
/// end of the range.
fn span(level: f32, clip: Clip) -> (f32, f32) {
    match clip {
        Clip::None => (level, level),
        Clip::Black => (0.0, level),
        Clip::White => (level, 255.0),
    }
}

impl ToneCurve {
    fn shift(shift: f64) -> ToneCurve {
        ToneCurve {
            c: [128.0 + shift, 128.0, 0.0],
            fitted: (0.0, 255.0),
            slopes: (1.0, 1.0),
        }
    }

    fn quadratic(&self, level: f64) -> f64 {
        let x = (level - 128.0) / 128.0;
        self.c[0] + self.c[1] * x + self.c[2] * x * x
    }

    fn predict(&self, level: f32) -> f32 {
        let level = f64::from(level);
        let (low, high) = self.fitted;
        let p = if level < low {
            self.quadratic(low) - self.slopes.0 * (low - level)
        } else if level > high {
            self.quadratic(high) + self.slopes.1 * (level - high)
        } else {
            self.quadratic(level)
        };
        (p as f32).clamp(0.0, 255.0)
    }

    /// How far this frame's reading of a cell is from what the curve predicts for its
    /// background, counting only what clipping cannot explain: a clipped reading stands for a
    /// range (the true level may lie further out), and the distance is between the ranges. (A
    /// dark coat in front of an overexposed wall is still seen; the wall showing its real shade
    /// when the light drops is not motion.)
    fn residual(&self, background: (f32, Clip), luma: (u8, Clip)) -> f32 {
        // A clipped background level is a bound: the scene may lie any distance past it.
        let p = self.predict(background.0);
        let (p_low, p_high) = match background.1 {
            Clip::None => (p, p),
            Clip::Black => (0.0, p),
            Clip::White => (p, 255.0),
        };
        let (g_low, g_high) = span(f32::from(luma.0), luma.1);
        if g_low > p_high {
            g_low - p_high
        } else if g_high < p_low {
            g_high - p_low
        } else {
            0.0
        }
    }

    /// Least squares over the cells `use_cell` picks, leaving out any that may be clipped.
    /// `None` when they do not pin a curve down (too few, or all one level).
    fn fit(model: &Model, grid: &LumaGrid, use_cell: impl Fn(usize) -> bool) -> Option<ToneCurve> {
        // Normal equations of y = c0 + c1 x + c2 x^2: sums of x^0..x^4 and y x^0..x^2.
        let mut sx = [0f64; 5];
        let mut sy = [0f64; 3];
        let (mut low, mut high) = (f64::MAX, f64::MIN);
        for (i, (&b, &g)) in model.background.iter().zip(&grid.luma).enumerate() {
            if !unclipped(model, grid, i) || !use_cell(i) {
                continue;
            }
            let level = f64::from(b);
            (low, high) = (low.min(level), high.max(level));
            let x = (level - 128.0) / 128.0;
            let y = f64::from(g);
            let (x2, x3) = (x * x, x * x * x);
            sx[0] += 1.0;
            sx[1] += x;
            sx[2] += x2;
            sx[3] += x3;
            sx[4] += x2 * x2;
            sy[0] += y;
            sy[1] += y * x;
            sy[2] += y * x2;
        }
        if sx[0] < 16.0 {
            return None;
        }
        let m = [
            [sx[0], sx[1], sx[2]],
            [sx[1], sx[2], sx[3]],
            [sx[2], sx[3], sx[4]],
        ];
        // A straight line through the same cells: the fallback, and the slope beyond the ends.
        let det = sx[0] * sx[2] - sx[1] * sx[1];
        let line = (det.abs() > 1e-6 * sx[0] * sx[0]).then(|| {
            let c1 = (sx[0] * sy[1] - sx[1] * sy[0]) / det;
            [(sy[0] - c1 * sx[1]) / sx[0], c1, 0.0]
        });
        let line_slope = line.map_or(1.0, |l| l[1] / 128.0).clamp(0.1, 10.0);
        let c = solve3(m, sy)
            // A tone curve rises: a quadratic that falls anywhere it was fitted is not one.
            .filter(|c| {
                let slope = |level: f64| (c[1] + 2.0 * c[2] * (level - 128.0) / 128.0) / 128.0;
                slope(low) > 0.0 && slope(high) > 0.0
            })
            .or(line)?;
        let slope = |level: f64| (c[1] + 2.0 * c[2] * (level - 128.0) / 128.0) / 128.0;
        let bound = |s: f64| s.clamp(line_slope / 4.0, line_slope * 4.0);
        Some(ToneCurve {
            c,
            fitted: (low, high),
            slopes: (bound(slope(low)), bound(slope(high))),
        })
    }
}

/// Solves the 3x3 system `m c = y` (Cramer's rule); `None` if it is (nearly) singular.
fn solve3(m: [[f64; 3]; 3], y: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    let scale = m[0][0] * m[1][1] * m[2][2];
    if !d.is_finite() || d.abs() <= 1e-9 * scale.abs().max(1e-12) {
        return None;
    }
    let mut c = [0f64; 3];
    for (k, out) in c.iter_mut().enumerate() {
        let mut mk = m;
        for row in 0..3 {
            mk[row][k] = y[row];
        }
        *out = det(&mk) / d;
    }
    Some(c)
}

/// The tone curve of this frame against the background, fitted robustly: a first guess (the
/// median shift), then a fit over the cells that guess explains roughly, then a refit over the
/// cells the first fit explains within their own noise bar.
fn tone_curve(model: &Model, grid: &LumaGrid, bars: &[f32]) -> ToneCurve {
    let mut shifts: Vec<f32> = (0..grid.len())
        .filter(|&i| unclipped(model, grid, i))
        .map(|i| f32::from(grid.luma[i]) - model.background[i])
        .collect();
    let shift = if shifts.is_empty() {
        0.0
    } else {
        let middle = shifts.len() / 2;
        *shifts.select_nth_unstable_by(middle, f32::total_cmp).1
    };
    let guess = ToneCurve::shift(f64::from(shift));
    let near = |curve: ToneCurve, band: f32| {
        move |i: usize| cell_residual(&curve, model, grid, i).abs() <= band * bars[i]
    };
    let Some(first) = ToneCurve::fit(model, grid, near(guess, 3.0)) else {
        return guess;
    };
    ToneCurve::fit(model, grid, near(first, 1.0)).unwrap_or(first)
}

/// Neither the background nor this frame's reading of cell `i` is clipped.
fn unclipped(model: &Model, grid: &LumaGrid, i: usize) -> bool {
    model.background_clip[i] == Clip::None && grid.clip[i] == Clip::None
}

fn cell_residual(curve: &ToneCurve, model: &Model, grid: &LumaGrid, i: usize) -> f32 {
    curve.residual(
        (model.background[i], model.background_clip[i]),
        (grid.luma[i], grid.clip[i]),
    )
}

/// Compares `grid` with the model, finds the changed regions, and updates the model. Returns
/// the analysis, and whether most of the picture changed at once (a new scene).
fn analyse(
    model: &mut Model,
    grid: &LumaGrid,
    threshold: f32,
    min_area: f32,
    step_s: f32,
) -> (Analysis, bool) {
    let n = grid.len();
    let bars: Vec<f32> = model
        .variance
        .iter()
        .map(|v| threshold.max(NOISE_FACTOR * v.sqrt()))
        .collect();
    let curve = tone_curve(model, grid, &bars);
    let mut changed = vec![false; n];
    let mut residuals = vec![0f32; n];
    let mut over_bar = vec![false; n];
    let mut changed_anywhere = 0usize;
    for i in 0..n {
        let r = cell_residual(&curve, model, grid, i);
        residuals[i] = r;
        if r.abs() > bars[i] {
            changed_anywhere += 1;
            over_bar[i] = true;
            changed[i] = model.watched[i];
        }
    }
    if changed_anywhere as f32 > SCENE_CHANGE * n as f32 {
        return (Analysis::default(), true);
    }
    let rate = |tau: f32| 1.0 - (-step_s / tau).exp();
    let (calm_rate, stopped_rate, noise_rate) =
        (rate(CALM_TAU_S), rate(STOPPED_TAU_S), rate(NOISE_TAU_S));
    for i in 0..n {
        let g = f32::from(grid.luma[i]);
        // The whole model moves to this frame's brightness at once, so that it stays one
        // consistent picture through a change of light (a level pushed past black or white
        // becomes a bound).
        let b = curve.predict(model.background[i]);
        if b <= 0.0 {
            model.background_clip[i] = Clip::Black;
        } else if b >= 255.0 {
            model.background_clip[i] = Clip::White;
        }
        // Outside the zones nothing is reported, but the scene is learned the same way.
        let is_changed = over_bar[i];
        model.background[i] = if !is_changed {
            model.changed_for[i] = 0.0;
            if model.background_clip[i] != Clip::None
                && grid.clip[i] == Clip::None
                && residuals[i] == 0.0
            {
                // The light changed and shows what clipping hid: that is the scene's level.
                model.background_clip[i] = Clip::None;
                g
            } else {
                model.background_clip[i] = grid.clip[i];
                b + calm_rate * (g - b)
            }
        } else {
            // A changed cell keeps the scene behind the object until the object has been
            // there long enough to be scene itself.
            model.changed_for[i] += step_s;
            if model.changed_for[i] >= STOPPED_AFTER_S {
                b + stopped_rate * (g - b)
            } else {
                b
            }
        };
        if !is_changed {
            let v = &mut model.variance[i];
            *v = (*v + noise_rate * (residuals[i] * residuals[i] - *v)).max(1.0);
        }
    }
    let largest = largest_region(&changed, grid.cols, grid.rows);
    let total = n as f32;
    let needed = ((min_area * total).ceil() as usize)
        .max(MIN_REGION_CELLS)
        .min((model.watched_count / 2).max(1));
    let analysis = Analysis {
        changed: changed.iter().filter(|&&c| c).count(),
        watched: model.watched_count,
        moving: largest.is_some_and(|(cells, _)| cells >= needed),
        largest,
    };
    (analysis, false)
}

/// The largest 8-connected region of `changed` cells: its size and bounding box
/// `[col, row, cols, rows]`.
fn largest_region(changed: &[bool], cols: usize, rows: usize) -> Option<(usize, [usize; 4])> {
    let mut seen = vec![false; changed.len()];
    let mut stack = Vec::new();
    let mut best: Option<(usize, [usize; 4])> = None;
    for start in 0..changed.len() {
        if !changed[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut count, mut min_c, mut min_r, mut max_c, mut max_r) =
            (0usize, usize::MAX, usize::MAX, 0usize, 0usize);
        while let Some(i) = stack.pop() {
            count += 1;
            let (c, r) = (i % cols, i / cols);
            (min_c, min_r, max_c, max_r) = (min_c.min(c), min_r.min(r), max_c.max(c), max_r.max(r));
            for dr in [-1isize, 0, 1] {
                for dc in [-1isize, 0, 1] {
                    let (Some(nc), Some(nr)) = (c.checked_add_signed(dc), r.checked_add_signed(dr))
                    else {
                        continue;
                    };
                    if nc >= cols || nr >= rows {
                        continue;
                    }
                    let j = nr * cols + nc;
                    if changed[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if best.is_none_or(|(n, _)| count > n) {
            best = Some((count, [min_c, min_r, max_c - min_c + 1, max_r - min_r + 1]));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::motion::Zone;

    const COLS: usize = 64;
    const ROWS: usize = 48;
    /// Frames a second the tests feed (the default `motion_fps`).
    const FPS: u64 = 5;

    /// A deterministic noise source (xorshift), roughly Gaussian by summing four uniforms.
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }

        /// Mean 0, standard deviation `sigma`.
        fn gauss(&mut self, sigma: f32) -> f32 {
            let sum: f32 = (0..4).map(|_| self.uniform()).sum();
            (sum - 2.0) * sigma * 1.732
        }
    }

    /// A still scene with texture: a gradient, a darker "door", a bright "window".
    fn scene() -> Vec<f32> {
        let mut cells = vec![0f32; COLS * ROWS];
        for r in 0..ROWS {
            for c in 0..COLS {
                let mut v = 60.0 + c as f32 * 1.5 + r as f32 * 0.8;
                if (24..36).contains(&c) && r >= 10 {
                    v = 45.0;
                }
                if (4..14).contains(&c) && (6..16).contains(&r) {
                    v = 200.0;
                }
                cells[r * COLS + c] = v;
            }
        }
        cells
    }

    /// A box of `w`x`h` cells at (`x`, `y`) with level `level` over `cells`.
    fn with_box(cells: &[f32], x: isize, y: usize, (w, h): (usize, usize), level: f32) -> Vec<f32> {
        let mut out = cells.to_vec();
        for r in y..(y + h).min(ROWS) {
            for c in x.max(0)..(x + w as isize).min(COLS as isize) {
                out[r * COLS + c as usize] = level;
            }
        }
        out
    }

    fn grid(cells: &[f32], noise: &mut Noise, sigma: f32, tone: impl Fn(f32) -> f32) -> LumaGrid {
        let mut g = LumaGrid::filled(COLS, ROWS, 0);
        for ((out, clip), &v) in g.luma.iter_mut().zip(&mut g.clip).zip(cells) {
            let level = tone(v) + noise.gauss(sigma);
            *out = level.round().clamp(0.0, 255.0) as u8;
            // As a real cell would: some of its pixels clip long before its average does.
            *clip = if level <= 3.0 * sigma {
                Clip::Black
            } else if level >= 255.0 - 3.0 * sigma {
                Clip::White
            } else {
                Clip::None
            };
        }
        g
    }

    fn settings() -> Settings {
        Settings::default()
    }

    /// Feeds `seconds` of frames made by `frame(t)`; returns (time, decision) for each.
    fn run(
        detector: &mut Detector,
        seconds: u64,
        mut frame: impl FnMut(f32) -> LumaGrid,
    ) -> Vec<(f32, Decision)> {
        let start = Instant::now();
        let mut out = Vec::new();
        for i in 0..seconds * FPS {
            let t = i as f32 / FPS as f32;
            let now = start + Duration::from_millis(i * 1000 / FPS);
            if let (_, Some(decision)) = detector.observe(now, &frame(t)) {
                out.push((t, decision));
            }
        }
        out
    }

    #[test]
    fn strong_noise_for_a_minute_is_not_motion() {
        let mut d = Detector::new(settings());
        let mut noise = Noise(7);
        let base = scene();
        let got = run(&mut d, 60, |_| grid(&base, &mut noise, 5.0, |v| v));
        assert_eq!(got, vec![]);
        // Even at the highest sensitivity, the learned per-cell deviation keeps noise out.
        let mut d = Detector::new(Settings {
            sensitivity: 100,
            ..settings()
        });
        let got = run(&mut d, 60, |_| grid(&base, &mut noise, 3.0, |v| v));
        assert_eq!(got, vec![]);
    }

    #[test]
    fn brightness_stepping_up_and_down_is_not_motion() {
        let base = scene();
        let mut noise = Noise(11);
        let mut d = Detector::new(settings());
        // Every two seconds another global change: brighter (clipping the window), darker,
        // more contrast, a gamma curve like auto-exposure, then back.
        let steps: [fn(f32) -> f32; 6] = [
            |v| v,
            |v| v + 70.0,
            |v| v - 40.0,
            |v| (v - 128.0) * 1.5 + 128.0,
            |v| 255.0 * (v / 255.0).powf(0.6),
            |v| v * 0.5,
        ];
        let got = run(&mut d, 36, |t| {
            let step = steps[(t / 2.0) as usize % steps.len()];
            grid(&base, &mut noise, 2.0, step)
        });
        assert_eq!(got, vec![]);
    }

    #[test]
    fn a_box_crossing_is_one_motion_with_its_box() {
        let base = scene();
        let mut noise = Noise(3);
        let mut d = Detector::new(settings());
        // Still for 3 s, then an 8x8-cell box crosses at row 30, 2 cells a frame, then still.
        let position = |t: f32| -> Option<isize> {
            let x = -8 + ((t - 3.0) * FPS as f32 * 2.0) as isize;
            (t >= 3.0 && x < COLS as isize).then_some(x)
        };
        let got = run(&mut d, 30, |t| match position(t) {
            Some(x) => grid(
                &with_box(&base, x, 30, (8, 8), 230.0),
                &mut noise,
                3.0,
                |v| v,
            ),
            None => grid(&base, &mut noise, 3.0, |v| v),
        });
        assert_eq!(got.len(), 2, "{got:?}");
        let (t0, Decision::Detected { score, region }) = &got[0] else {
            panic!("{got:?}")
        };
        // Reported half a second (min_duration) after enough of the box came in.
        assert!((3.4..=4.4).contains(t0), "{t0}");
        assert!(*score > 0.005 && *score < 0.05, "{score}");
        // Where the box is: rows 30..38 of 48, and the box's x at that moment.
        let x = position(*t0).unwrap().max(0) as f64 / COLS as f64;
        assert!((region[1] - 30.0 / 48.0).abs() < 0.03, "{region:?}");
        assert!((region[3] - 8.0 / 48.0).abs() < 0.05, "{region:?}");
        assert!((region[0] - x).abs() < 0.05, "{region:?} vs x {x}");
        assert!(region[2] <= 8.0 / 64.0 + 0.04, "{region:?}");
        // Ended the cooldown (10 s) after the last frame with enough of the box in the
        // picture (about 9.6 s).
        let (t1, Decision::Ended { duration }) = &got[1] else {
            panic!("{got:?}")
        };
        assert!((19.0..=21.0).contains(t1), "{t1}");
        assert!(
            (5.5..=7.0).contains(&duration.as_secs_f32()),
            "{duration:?}"
        );
    }

    #[test]
    fn outside_the_zones_nothing_counts() {
        let base = scene();
        let crossing = |zones: Vec<Zone>| {
            let mut noise = Noise(5);
            let mut d = Detector::new(Settings {
                zones,
                ..settings()
            });
            run(&mut d, 14, |t| {
                let x = -8 + ((t - 2.0).max(0.0) * 10.0) as isize;
                grid(
                    &with_box(&base, x, 36, (8, 8), 20.0),
                    &mut noise,
                    3.0,
                    |v| v,
                )
            })
        };
        // The box crosses the bottom quarter: a zone over the top half never sees it.
        let top = Zone::new([0.0, 0.0, 1.0, 0.5]).unwrap();
        assert_eq!(crossing(vec![top]), vec![]);
        // A zone over the bottom (with another elsewhere) does.
        let bottom = Zone::new([0.0, 0.7, 1.0, 0.3]).unwrap();
        let got = crossing(vec![top, bottom]);
        assert!(
            matches!(got.first(), Some((_, Decision::Detected { .. }))),
            "{got:?}"
        );
    }

    #[test]
    fn a_box_that_stops_becomes_scene_and_its_motion_ends() {
        let base = scene();
        let mut noise = Noise(9);
        let mut d = Detector::new(Settings {
            cooldown: Duration::from_secs(3),
            ..settings()
        });
        // Moves in from the left for 2 s from t=2, then stays at x=20 for good.
        let got = run(&mut d, 40, |t| {
            let x = (-8 + ((t - 2.0).max(0.0) * 14.0) as isize).min(20);
            grid(
                &with_box(&base, x, 20, (10, 10), 220.0),
                &mut noise,
                3.0,
                |v| v,
            )
        });
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(got[0].1, Decision::Detected { .. }));
        let (t1, Decision::Ended { .. }) = got[1] else {
            panic!("{got:?}")
        };
        // Stopped at about 4 s; learned within ~15 s, then 3 s of cooldown.
        assert!((7.0..=22.0).contains(&t1), "{t1}");
    }

    #[test]
    fn change_shorter_than_min_duration_is_not_reported() {
        let base = scene();
        let mut noise = Noise(13);
        let mut d = Detector::new(Settings {
            min_duration: Duration::from_secs(1),
            ..settings()
        });
        // A box flashes for 0.6 s (3 frames) at 3 s and at 8 s.
        let got = run(&mut d, 14, |t| {
            let on = (3.0..3.5).contains(&t) || (8.0..8.5).contains(&t);
            let cells = if on {
                with_box(&base, 30, 20, (10, 10), 230.0)
            } else {
                base.clone()
            };
            grid(&cells, &mut noise, 2.0, |v| v)
        });
        assert_eq!(got, vec![]);
    }

    #[test]
    fn a_whole_new_scene_is_learned_not_reported() {
        let base = scene();
        // The camera turned to face something else: every cell another level.
        let mut texture = Noise(23);
        let other: Vec<f32> = base
            .iter()
            .map(|_| 30.0 + 190.0 * texture.uniform())
            .collect();
        let mut noise = Noise(17);
        let mut d = Detector::new(settings());
        let got = run(&mut d, 20, |t| {
            let cells = if t < 5.0 { &base } else { &other };
            grid(cells, &mut noise, 2.0, |v| v)
        });
        assert_eq!(got, vec![]);
    }

    #[test]
    fn reset_ends_a_motion_in_progress_and_a_new_size_starts_over() {
        let base = scene();
        let mut noise = Noise(19);
        let mut d = Detector::new(settings());
        let got = run(&mut d, 6, |t| {
            let x = ((t * 10.0) as isize) % 56;
            grid(
                &with_box(&base, x, 10, (8, 8), 240.0),
                &mut noise,
                2.0,
                |v| v,
            )
        });
        assert!(
            matches!(got[..], [(_, Decision::Detected { .. })]),
            "{got:?}"
        );
        assert!(d.is_moving());
        assert!(matches!(d.reset(), Some(Decision::Ended { .. })));
        assert!(!d.is_moving());
        assert_eq!(d.reset(), None);
        // A grid of another size while moving ends the motion too.
        run(&mut d, 6, |t| {
            let x = ((t * 10.0) as isize) % 56;
            grid(
                &with_box(&base, x, 10, (8, 8), 240.0),
                &mut noise,
                2.0,
                |v| v,
            )
        });
        assert!(d.is_moving());
        let (_, ended) = d.observe(
            Instant::now() + Duration::from_secs(60),
            &LumaGrid::filled(32, 24, 9),
        );
        assert!(matches!(ended, Some(Decision::Ended { .. })));
    }

    #[test]
    fn the_tone_curve_fits_a_global_change_and_ignores_a_local_one() {
        let base = scene();
        let mut model = Detector::new(settings())
            .new_model(Instant::now(), &grid(&base, &mut Noise(1), 0.0, |v| v));
        model.background = base.clone();
        let bars = vec![16.0; base.len()];
        // Brighter and more contrast, with a dark box over the door the curve must not explain.
        let changed = with_box(&base, 26, 20, (8, 12), 200.0);
        let frame = grid(&changed, &mut Noise(2), 0.0, |v| (v - 100.0) * 1.3 + 130.0);
        let curve = tone_curve(&model, &frame, &bars);
        for level in [50.0f32, 100.0, 150.0] {
            let want = (level - 100.0) * 1.3 + 130.0;
            assert!(
                (curve.predict(level) - want).abs() < 1.5,
                "{level}: {}",
                curve.predict(level)
            );
        }
    }

    #[test]
    fn the_largest_region_and_its_bounding_box() {
        #[rustfmt::skip]
        let cells = [
            1, 1, 0, 0, 0,
            0, 1, 0, 0, 1,
            0, 0, 1, 0, 1,
            0, 0, 0, 0, 0,
        ].map(|c| c == 1);
        assert_eq!(largest_region(&cells, 5, 4), Some((4, [0, 0, 3, 3])));
        assert_eq!(largest_region(&[false; 20], 5, 4), None);
    }
}
