//! `quality=auto`: which preset a viewer gets, from how it takes frames. Pure logic fed with
//! the caller's clock, so the tests drive it with exact times.
//!
//! A viewer on a weak link shows it in two ways at once: writing a frame to its socket blocks
//! (the link is busy), and frames go by while it is blocked (the preset published frames the
//! viewer never took). Either alone is not enough: a viewer asking for `fps=2` skips nothing but
//! waits by choice, and a fast viewer of a camera that has gone slow blocks for nothing. So:
//!
//! - **down** a preset when, over a couple of seconds, it was blocked writing at least half the
//!   time *and* missed at least a quarter of the frames;
//! - **up** a preset when it has kept up (almost nothing missed, blocked under a fifth of the
//!   time) for a while: 8 s from the start, 15 s after a step down. A viewer that takes a lower
//!   preset at ease shows nothing about whether the link would carry the next (a stream is
//!   sent at its own pace, not as fast as the link goes), so stepping up is a try; one that has
//!   to be taken back soon after doubles the wait before the next (up to two minutes), so a link
//!   that carries one preset but not the next costs a few seconds of slow frames rarely, not
//!   every few seconds; holding the higher preset for a minute resets it;
//! - **never** two changes within 4 s of each other.
//!
//! It starts at `medium`, or lower if the camera's picture is no bigger than `low`'s, and only
//! moves among presets that differ for this camera: with a 640x480 camera `high` would be the
//! same picture as `medium`, so `medium` is the top. The camera's picture size is checked again
//! at each judgement ([`Adapter::source_is`]): a viewer that arrived before the camera's first
//! frame (its size then unknown) or a camera that came back at another size gets the ladder of
//! the picture it is actually sent.

use std::time::{Duration, Instant};

use super::Quality;
use super::resize;

/// How long one judgement covers.
const WINDOW: Duration = Duration::from_secs(2);
/// No two changes closer than this.
const MIN_CHANGE: Duration = Duration::from_secs(4);
/// Behind: blocked this share of the time, and missed this share of the frames.
const BEHIND_BLOCKED: f64 = 0.5;
const BEHIND_MISSED: f64 = 0.25;
/// Keeping up: missed at most this share, blocked at most this share.
const UP_MISSED: f64 = 0.05;
const UP_BLOCKED: f64 = 0.2;
/// How long a viewer must keep up before it gets the next preset: from the start, and after a
/// step down (doubled after each failed try, up to the maximum).
const UP_AFTER_START: Duration = Duration::from_secs(8);
const UP_AFTER_DOWN: Duration = Duration::from_secs(15);
const UP_AFTER_MAX: Duration = Duration::from_secs(120);
/// A step down this soon after a step up means the higher preset was too much.
const FAILED_TRY: Duration = Duration::from_secs(20);
/// Holding a preset reached by a step up this long means the link carries it.
const HELD: Duration = Duration::from_secs(60);

/// The presets `auto` moves among for a camera picture of `source` size, smallest first: each
/// one bigger than the one before (a preset that would give the same picture as the one below
/// it is left out, since presets never upscale).
pub fn ladder(source: (u32, u32)) -> Vec<Quality> {
    let mut out: Vec<Quality> = Vec::new();
    let mut last = None;
    for quality in [Quality::Low, Quality::Medium, Quality::High] {
        let size = quality.max_size().map(|max| resize::fit(source, max));
        if size != last {
            out.push(quality);
            last = size;
        }
    }
    out
}

/// What happened since the last report: one frame written.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written {
    /// How long the write blocked.
    pub blocked: Duration,
    /// Frames the viewer looked at since the last report (this one included; also those it
    /// did not need to send: thinned by `fps=`, or unchanged).
    pub taken: u64,
    /// Frames its preset published that it never took, being busy.
    pub missed: u64,
}

/// One viewer's choice of preset.
#[derive(Debug)]
pub struct Adapter {
    ladder: Vec<Quality>,
    level: usize,
    last_change: Instant,
    /// The judgement in progress: since when, and what it has seen.
    window_start: Instant,
    seen: Written,
    /// Since when the viewer has kept up without a break (whole windows).
    keeping_up_since: Option<Instant>,
    /// How long keeping up earns the next preset now, and after the next step down.
    up_after: Duration,
    up_after_down: Duration,
    /// When the current preset was reached by a step up.
    stepped_up_at: Option<Instant>,
}

impl Adapter {
    /// A viewer starting at `now` on a camera picture of `source` size.
    pub fn new(now: Instant, source: (u32, u32)) -> Adapter {
        let ladder = ladder(source);
        let level = ladder
            .iter()
            .rposition(|q| *q == Quality::Medium)
            .unwrap_or(ladder.len() - 1);
        Adapter {
            ladder,
            level,
            last_change: now,
            window_start: now,
            seen: Written::default(),
            keeping_up_since: None,
            up_after: UP_AFTER_START,
            up_after_down: UP_AFTER_DOWN,
            stepped_up_at: None,
        }
    }

    /// The preset the viewer should get now.
    pub fn quality(&self) -> Quality {
        self.ladder[self.level]
    }

    /// Whether the report of a frame written at `now` closes a judgement: the caller then
    /// tells [`Adapter::source_is`] the camera's picture size first (read once per window,
    /// not per frame).
    pub fn judging(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.window_start) >= WINDOW
    }

    /// The camera's picture is `source` big: the ladder becomes that picture's, and the viewer
    /// keeps its preset if the new ladder has it, else gets the biggest one below it (the
    /// smallest if none is). Returns the new preset when that changes it.
    pub fn source_is(&mut self, source: (u32, u32)) -> Option<Quality> {
        let ladder = ladder(source);
        if ladder == self.ladder {
            return None;
        }
        let current = self.quality();
        let rank = |q: Quality| {
            [Quality::Low, Quality::Medium, Quality::High]
                .iter()
                .position(|r| *r == q)
        };
        let level = ladder
            .iter()
            .rposition(|q| rank(*q) <= rank(current))
            .unwrap_or(0);
        self.ladder = ladder;
        self.level = level;
        (self.quality() != current).then(|| self.quality())
    }

    /// Reports one frame written at `now`; returns the new preset when it changes.
    pub fn written(&mut self, now: Instant, written: Written) -> Option<Quality> {
        self.seen.blocked += written.blocked;
        self.seen.taken += written.taken;
        self.seen.missed += written.missed;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < WINDOW {
            return None;
        }
        let seen = std::mem::take(&mut self.seen);
        let window_start = std::mem::replace(&mut self.window_start, now);
        let offered = (seen.taken + seen.missed).max(1) as f64;
        let missed = seen.missed as f64 / offered;
        let blocked = seen.blocked.as_secs_f64() / elapsed.as_secs_f64();
        let behind = blocked >= BEHIND_BLOCKED && missed >= BEHIND_MISSED;
        let keeping_up = missed <= UP_MISSED && blocked <= UP_BLOCKED;
        self.keeping_up_since = if keeping_up {
            Some(self.keeping_up_since.unwrap_or(window_start))
        } else {
            None
        };
        if self
            .stepped_up_at
            .is_some_and(|at| now.saturating_duration_since(at) >= HELD)
        {
            self.stepped_up_at = None;
            self.up_after_down = UP_AFTER_DOWN;
        }
        if now.saturating_duration_since(self.last_change) < MIN_CHANGE {
            return None;
        }
        if behind && self.level > 0 {
            if self
                .stepped_up_at
                .is_some_and(|at| now.saturating_duration_since(at) < FAILED_TRY)
            {
                self.up_after_down = (self.up_after_down * 2).min(UP_AFTER_MAX);
            }
            self.up_after = self.up_after_down;
            self.stepped_up_at = None;
            return Some(self.change(now, self.level - 1));
        }
        let kept_up_for = self
            .keeping_up_since
            .map(|since| now.saturating_duration_since(since));
        if kept_up_for.is_some_and(|d| d >= self.up_after) && self.level + 1 < self.ladder.len() {
            self.stepped_up_at = Some(now);
            return Some(self.change(now, self.level + 1));
        }
        None
    }

    fn change(&mut self, now: Instant, level: usize) -> Quality {
        self.level = level;
        self.last_change = now;
        self.keeping_up_since = None;
        self.ladder[level]
    }
}

/// The `X-Quality` header line that ends an `auto` part's head, for each preset (static bytes:
/// a viewer's send stays one `writev` of shared bytes).
pub fn quality_line(quality: Quality) -> &'static [u8] {
    match quality {
        Quality::Source => b"X-Quality: source\r\n\r\n",
        Quality::Low => b"X-Quality: low\r\n\r\n",
        Quality::Medium => b"X-Quality: medium\r\n\r\n",
        Quality::High => b"X-Quality: high\r\n\r\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VGA: (u32, u32) = (640, 480);
    const HD: (u32, u32) = (1280, 720);

    #[test]
    fn the_ladder_holds_the_presets_that_differ_for_this_camera() {
        assert_eq!(ladder(HD), [Quality::Low, Quality::Medium, Quality::High]);
        assert_eq!(ladder((1920, 1080)).len(), 3);
        assert_eq!(ladder(VGA), [Quality::Low, Quality::Medium]);
        assert_eq!(ladder((320, 240)), [Quality::Low]);
        assert_eq!(ladder((160, 120)), [Quality::Low]);
        assert_eq!(Adapter::new(Instant::now(), HD).quality(), Quality::Medium);
        assert_eq!(Adapter::new(Instant::now(), VGA).quality(), Quality::Medium);
        assert_eq!(
            Adapter::new(Instant::now(), (320, 240)).quality(),
            Quality::Low
        );
    }

    /// A viewer simulated at `fps` frames a second offered, taking a share `taken` of them and
    /// blocked a share `blocked` of the time, from `from` s to `to` s or until the first change;
    /// returns the change.
    fn drive(
        adapter: &mut Adapter,
        start: Instant,
        (from, to): (f64, f64),
        fps: f64,
        taken: f64,
        blocked: f64,
    ) -> Vec<(f64, Quality)> {
        let mut changes = Vec::new();
        let writes = fps * taken;
        let step = 1.0 / writes;
        let mut t = from;
        while t < to {
            t += step;
            let written = Written {
                blocked: Duration::from_secs_f64(step * blocked),
                taken: 1,
                missed: ((1.0 - taken) / taken).round() as u64,
            };
            if let Some(q) = adapter.written(start + Duration::from_secs_f64(t), written) {
                changes.push((t, q));
                break;
            }
        }
        changes
    }

    #[test]
    fn the_ladder_follows_the_picture_the_camera_sends() {
        let start = Instant::now();
        // Arrived before the first frame: assumed HD, then told it is VGA while on medium.
        let mut a = Adapter::new(start, HD);
        assert_eq!(a.source_is(HD), None);
        assert_eq!(a.source_is(VGA), None, "medium is on VGA's ladder");
        assert_eq!(a.quality(), Quality::Medium);
        // Keeping up for a minute on VGA's ladder never reaches high, which would be medium's
        // picture again.
        assert_eq!(drive(&mut a, start, (0.0, 60.0), 15.0, 1.0, 0.0), []);
        // The camera comes back at 1280x720: high is on the ladder again and is reached.
        assert_eq!(a.source_is(HD), None);
        let got = drive(&mut a, start, (60.0, 90.0), 15.0, 1.0, 0.0);
        assert_eq!(got.iter().map(|c| c.1).collect::<Vec<_>>(), [Quality::High]);
        // And back at 640x480 while on high: medium, the biggest below it.
        assert_eq!(a.source_is(VGA), Some(Quality::Medium));
        assert_eq!(a.quality(), Quality::Medium);
        // A camera as small as low's picture: low, the only preset left.
        assert_eq!(a.source_is((320, 240)), Some(Quality::Low));
        assert_eq!(a.source_is((160, 120)), None);
    }

    #[test]
    fn judging_is_once_a_window() {
        let start = Instant::now();
        let a = Adapter::new(start, HD);
        assert!(!a.judging(start + Duration::from_millis(1999)));
        assert!(a.judging(start + WINDOW));
    }

    #[test]
    fn a_slow_viewer_steps_down_and_stays_down() {
        let start = Instant::now();
        let mut a = Adapter::new(start, HD);
        // Takes a fifth of medium's frames, blocked nearly all the time.
        let got = drive(&mut a, start, (0.0, 30.0), 15.0, 0.2, 0.95);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].1, Quality::Low);
        assert!((3.9..=6.5).contains(&got[0].0), "{got:?}");
        // Never below low, however slow.
        assert_eq!(drive(&mut a, start, (got[0].0, 60.0), 10.0, 0.2, 0.95), []);
        assert_eq!(a.quality(), Quality::Low);
    }

    #[test]
    fn a_viewer_that_keeps_up_climbs_one_step_at_a_time_to_the_top() {
        let start = Instant::now();
        let mut a = Adapter::new(start, HD);
        let got = drive(&mut a, start, (0.0, 40.0), 15.0, 1.0, 0.01);
        assert_eq!(got.iter().map(|c| c.1).collect::<Vec<_>>(), [Quality::High]);
        assert!((7.9..=11.0).contains(&got[0].0), "{got:?}");
        // At the top of a VGA camera's ladder (medium) it just stays.
        let mut a = Adapter::new(start, VGA);
        assert_eq!(drive(&mut a, start, (0.0, 60.0), 15.0, 1.0, 0.0), []);
        assert_eq!(a.quality(), Quality::Medium);
    }

    #[test]
    fn waiting_by_choice_or_a_slow_camera_is_not_falling_behind() {
        let start = Instant::now();
        // fps=2 on a 15 fps preset: takes every frame (thinning is its own choice) but the
        // socket is idle; blocked briefly per write.
        let mut a = Adapter::new(start, HD);
        assert_eq!(
            drive(&mut a, start, (0.0, 6.0), 15.0, 1.0, 0.0).len(),
            0,
            "no change before 8 s of keeping up"
        );
        // Blocked a lot but missing nothing (the camera sends 3 fps): no step down.
        let mut a = Adapter::new(start, HD);
        assert_eq!(drive(&mut a, start, (0.0, 30.0), 3.0, 1.0, 0.7), []);
        // Missing frames while never blocked (a busy server thread, not the link): none either.
        let mut a = Adapter::new(start, HD);
        assert_eq!(drive(&mut a, start, (0.0, 30.0), 15.0, 0.5, 0.1), []);
    }

    #[test]
    fn recovers_when_the_link_does_and_backs_off_from_a_preset_it_cannot_hold() {
        let start = Instant::now();
        let mut a = Adapter::new(start, VGA);
        let down = drive(&mut a, start, (0.0, 10.0), 15.0, 0.2, 0.95);
        assert_eq!(down.last().map(|c| c.1), Some(Quality::Low));
        let t_low = down[0].0;
        // The link gets better: low flows freely; medium is tried after 15 s of that.
        let up = drive(&mut a, start, (t_low, t_low + 30.0), 10.0, 1.0, 0.05);
        assert_eq!(
            up.iter().map(|c| c.1).collect::<Vec<_>>(),
            [Quality::Medium]
        );
        assert!(
            (14.9..=18.0).contains(&(up[0].0 - t_low)),
            "{up:?} after {t_low}"
        );
        // But medium is too much: down after 4 s, and the next try waits twice as long.
        let t_up = up[0].0;
        let down = drive(&mut a, start, (t_up, t_up + 7.0), 15.0, 0.3, 0.9);
        assert_eq!(down.iter().map(|c| c.1).collect::<Vec<_>>(), [Quality::Low]);
        let t_down = down[0].0;
        assert!(t_down - t_up >= 3.9, "{down:?}");
        let retry = drive(&mut a, start, (t_down, t_down + 40.0), 10.0, 1.0, 0.05);
        assert_eq!(retry.len(), 1, "{retry:?}");
        assert!(retry[0].0 - t_down >= 29.9, "{retry:?} after {t_down}");
        // This time it holds: a minute on medium resets the wait after a step down.
        let t_retry = retry[0].0;
        assert_eq!(
            drive(&mut a, start, (t_retry, t_retry + 62.0), 15.0, 1.0, 0.3),
            []
        );
        let down = drive(
            &mut a,
            start,
            (t_retry + 62.0, t_retry + 70.0),
            15.0,
            0.3,
            0.9,
        );
        assert_eq!(down.len(), 1);
        let t_down = down[0].0;
        let again = drive(&mut a, start, (t_down, t_down + 40.0), 10.0, 1.0, 0.05);
        assert!(
            (14.9..=18.0).contains(&(again[0].0 - t_down)),
            "{again:?} after {t_down}"
        );
    }

    #[test]
    fn every_part_says_its_preset() {
        for q in Quality::ALL {
            let line = std::str::from_utf8(quality_line(q)).unwrap();
            assert_eq!(line, format!("X-Quality: {}\r\n\r\n", q.name()));
        }
    }
}
