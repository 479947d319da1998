//! Frame-rate primitives: a [`Decimator`] that thins a stream to a target rate (a preset's
//! maximum, a client's `fps=`), a [`Ticker`] that paces a generated source, and an
//! [`FpsMeter`] that measures the rate actually achieved.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Lets through at most `fps` frames a second, spread evenly, judged by capture time.
///
/// It keeps a schedule (`due`) rather than "time since the last frame", so 15 fps thinned to
/// 10 gives exactly 10 (two of every three frames) instead of 7.5 (every other frame). A frame
/// a little early (jitter) still counts, and after a gap the schedule restarts instead of
/// letting a burst through to catch up.
#[derive(Clone, Debug)]
pub struct Decimator {
    interval: Option<Duration>,
    due: Option<Instant>,
}

impl Decimator {
    /// `None`, a non-positive rate, or one whose interval no `Duration` holds: every frame
    /// passes. (Callers bound client rates first; this only refuses to panic.)
    pub fn new(fps: Option<f64>) -> Decimator {
        let interval = fps
            .filter(|f| f.is_finite() && *f > 0.0)
            .and_then(|f| Duration::try_from_secs_f64(1.0 / f).ok());
        Decimator {
            interval,
            due: None,
        }
    }

    /// Whether the frame captured at `at` should be sent.
    pub fn accept(&mut self, at: Instant) -> bool {
        let Some(interval) = self.interval else {
            return true;
        };
        let Some(due) = self.due else {
            self.due = Some(at + interval);
            return true;
        };
        // Capture times jitter by a few milliseconds: a frame that little early is on time.
        let tolerance = (interval / 8).min(Duration::from_millis(10));
        if at + tolerance < due {
            return false;
        }
        self.due = Some((due + interval).max(at + interval / 2));
        true
    }
}

/// The ticks of a source that makes frames at a fixed rate.
pub struct Ticker {
    interval: Duration,
    next: Instant,
}

impl Ticker {
    pub fn new(fps: u32) -> Ticker {
        Ticker {
            interval: Duration::from_secs(1) / fps.max(1),
            next: Instant::now(),
        }
    }

    /// Sleeps until the next tick, or for `timeout` if that comes first (`None`). On a tick,
    /// returns how many ticks were missed because the caller was late (frames not made).
    pub fn wait(&mut self, timeout: Duration) -> Option<u64> {
        let now = Instant::now();
        if now < self.next {
            let wait = self.next - now;
            if wait > timeout {
                std::thread::sleep(timeout);
                return None;
            }
            std::thread::sleep(wait);
        }
        let late = Instant::now().saturating_duration_since(self.next);
        let missed = (late.as_nanos() / self.interval.as_nanos().max(1)) as u64;
        self.next += self.interval * (missed as u32 + 1);
        Some(missed)
    }
}

/// Measured frames per second over the last couple of seconds.
pub struct FpsMeter {
    window: Duration,
    times: VecDeque<Instant>,
}

impl FpsMeter {
    pub fn new(window: Duration) -> FpsMeter {
        FpsMeter {
            window,
            times: VecDeque::new(),
        }
    }

    pub fn record(&mut self, at: Instant) {
        self.times.push_back(at);
        self.trim(at);
    }

    fn trim(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.window)
            || self.times.len() > 1024
        {
            self.times.pop_front();
        }
    }

    /// Frames per second between the oldest and newest frame still in the window; 0 when fewer
    /// than two frames arrived in it.
    pub fn fps(&mut self, now: Instant) -> f64 {
        self.trim(now);
        match (self.times.front(), self.times.back()) {
            (Some(first), Some(last)) if self.times.len() >= 2 && last > first => {
                (self.times.len() - 1) as f64 / last.duration_since(*first).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    pub fn clear(&mut self) {
        self.times.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thin(source_fps: f64, target: Option<f64>, seconds: u32, jitter_ms: &[i64]) -> usize {
        let start = Instant::now();
        let mut decimator = Decimator::new(target);
        let frames = (source_fps * f64::from(seconds)) as usize;
        (0..frames)
            .filter(|&i| {
                let mut t = start + Duration::from_secs_f64(i as f64 / source_fps);
                let j = jitter_ms[i % jitter_ms.len()];
                t = if j >= 0 {
                    t + Duration::from_millis(j as u64)
                } else {
                    t - Duration::from_millis((-j) as u64)
                };
                decimator.accept(t)
            })
            .count()
    }

    #[test]
    fn thins_to_the_target_rate() {
        assert_eq!(thin(15.0, Some(10.0), 10, &[0]), 100);
        assert_eq!(thin(15.0, Some(5.0), 10, &[0]), 50);
        assert_eq!(thin(30.0, Some(1.0), 10, &[0]), 10);
        assert_eq!(thin(15.0, None, 10, &[0]), 150);
        assert_eq!(thin(15.0, Some(30.0), 10, &[0]), 150);
    }

    /// Found by a hostile client: `fps=1e-320` made `1 / fps` infinite and the interval
    /// conversion panicked. A rate no interval can hold lets every frame through instead.
    #[test]
    fn an_impossible_rate_does_not_panic() {
        for fps in [
            1e-320,
            f64::MIN_POSITIVE,
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
        ] {
            assert_eq!(thin(15.0, Some(fps), 1, &[0]), 15, "{fps}");
        }
    }

    #[test]
    fn jitter_does_not_lose_frames() {
        let n = thin(15.0, Some(10.0), 10, &[0, 4, -4, 2, -3]);
        assert!((99..=101).contains(&n), "{n}");
        let n = thin(15.0, Some(15.0), 10, &[0, 4, -4, 2, -3]);
        assert!((148..=150).contains(&n), "{n}");
    }

    #[test]
    fn no_burst_after_a_gap() {
        let start = Instant::now();
        let mut d = Decimator::new(Some(10.0));
        assert!(d.accept(start));
        // Nothing for 5 s, then frames at 15 fps again: no catch-up burst.
        let after = start + Duration::from_secs(5);
        let sent = (0..15)
            .filter(|i| d.accept(after + Duration::from_secs_f64(*i as f64 / 15.0)))
            .count();
        assert!(sent <= 11, "{sent}");
    }

    #[test]
    fn meter_measures_and_forgets() {
        let start = Instant::now();
        let mut meter = FpsMeter::new(Duration::from_secs(2));
        for i in 0..30 {
            meter.record(start + Duration::from_millis(i * 100));
        }
        let now = start + Duration::from_millis(2900);
        assert!((meter.fps(now) - 10.0).abs() < 0.01);
        assert_eq!(meter.fps(start + Duration::from_secs(10)), 0.0);
    }
}
