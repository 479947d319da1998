//! The pre-roll: the camera's last few seconds, kept as the `Arc<Frame>`s the capture thread
//! already made, so a clip can start before the event that asked for it.
//!
//! Keeping a frame costs a reference count: no decode, no encode, no copy. What it costs in
//! memory is the JPEG bytes of the frames kept, so the ring is bounded twice:
//!
//! - by **time**: frames older than `keep` behind the newest are let go (`keep` is
//!   `clip_pre_s` plus a margin, see [`keep_for`]);
//! - by **bytes**: past `max_bytes` the oldest go first, whatever their age. A camera whose
//!   frames are large (1080p MJPEG at 30 fps is 5–10 MB a second) then gets a shorter pre-roll
//!   instead of taking the board's memory.
//!
//! The same ring is the clip writer's backlog: the writer takes frames "after the last number
//! it wrote", so a writer held up by a slow SD card catches up from here instead of losing
//! frames, as long as it is less than `keep` behind.

use std::collections::VecDeque;
use std::mem::size_of;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::video::Frame;

/// What the pre-roll may hold at most, in bytes of frames (JPEG, part head and the `Frame`
/// itself). 16 MiB is 3 % of a Pi Zero's 512 MB, and holds `clip_pre_s` = 3 s of a 1280x720
/// MJPEG camera at 30 fps (~120 KB frames); a 1080p camera at 30 fps gets ~2 s instead.
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Beyond `clip_pre_s`, how much more the ring keeps: the event's own time is a little before
/// the writer hears of it, and this is the writer's backlog when the disk is slow.
const MARGIN: Duration = Duration::from_secs(1);
/// The least the ring keeps, even with `clip_pre_s = 0`: the writer's backlog.
const MIN_KEEP: Duration = Duration::from_secs(2);

/// How long the ring keeps frames for a pre-roll of `pre`.
pub fn keep_for(pre: Duration) -> Duration {
    (pre + MARGIN).max(MIN_KEEP)
}

/// Bytes a frame holds while it is in the ring.
pub fn frame_cost(frame: &Frame) -> usize {
    frame.jpeg.len() + frame.part_head.len() + size_of::<Frame>()
}

struct State {
    frames: VecDeque<Arc<Frame>>,
    bytes: usize,
    /// Frames let go because of the byte bound (not their age) since the last look.
    trimmed_by_bytes: u64,
    /// The highest number of a frame let go: a reader whose last frame is below it may have
    /// missed frames.
    released_up_to: u64,
}

/// Recent live frames, oldest first. One publisher (the capture thread), any readers.
pub struct FrameRing {
    state: Mutex<State>,
    grew: Condvar,
    keep: Duration,
    max_bytes: usize,
}

/// What the ring holds now, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RingStats {
    pub frames: usize,
    pub bytes: usize,
    /// Capture time from the oldest to the newest frame held.
    pub span: Duration,
}

impl FrameRing {
    pub fn new(keep: Duration, max_bytes: usize) -> FrameRing {
        FrameRing {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                bytes: 0,
                trimmed_by_bytes: 0,
                released_up_to: 0,
            }),
            grew: Condvar::new(),
            keep,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under this lock leaves the ring consistent (a push or a pop), so a
        // poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn keep(&self) -> Duration {
        self.keep
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Adds the newest frame and lets go of what is now too old or over the byte bound. The
    /// frames let go are freed after the lock is released (they may be the last reference).
    pub fn push(&self, frame: Arc<Frame>) {
        let mut released = Vec::new();
        {
            let mut state = self.lock();
            let newest = frame.captured_at;
            state.bytes += frame_cost(&frame);
            state.frames.push_back(frame);
            while let Some(oldest) = state.frames.front() {
                let too_old = newest.saturating_duration_since(oldest.captured_at) > self.keep;
                let too_big = state.bytes > self.max_bytes && state.frames.len() > 1;
                if !too_old && !too_big {
                    break;
                }
                if !too_old {
                    state.trimmed_by_bytes += 1;
                }
                let oldest = state.frames.pop_front().expect("front exists");
                state.bytes -= frame_cost(&oldest);
                state.released_up_to = state.released_up_to.max(oldest.number);
                released.push(oldest);
            }
        }
        self.grew.notify_all();
        drop(released);
    }

    /// Lets every frame go (the camera stopped: its old frames belong to no later clip).
    pub fn clear(&self) {
        let old = {
            let mut state = self.lock();
            state.bytes = 0;
            if let Some(newest) = state.frames.back() {
                state.released_up_to = state.released_up_to.max(newest.number);
            }
            std::mem::take(&mut state.frames)
        };
        drop(old);
    }

    /// The newest frame held, if any.
    pub fn newest(&self) -> Option<Arc<Frame>> {
        self.lock().frames.back().cloned()
    }

    /// Frames captured at or after `from`, oldest first: a clip's pre-roll.
    pub fn since(&self, from: Instant) -> Vec<Arc<Frame>> {
        let state = self.lock();
        let start = state.frames.partition_point(|f| f.captured_at < from);
        state.frames.range(start..).cloned().collect()
    }

    /// Frames numbered above `number`, oldest first, and how many frames between `number` and
    /// the first of them the ring no longer holds (let go before the caller came back).
    pub fn after(&self, number: u64) -> (Vec<Arc<Frame>>, u64) {
        let state = self.lock();
        Self::after_locked(&state, number)
    }

    fn after_locked(state: &State, number: u64) -> (Vec<Arc<Frame>>, u64) {
        let start = state.frames.partition_point(|f| f.number <= number);
        let frames: Vec<_> = state.frames.range(start..).cloned().collect();
        // Frame numbers also count placeholders, which never enter the ring, so a gap in the
        // numbers is only a loss when the ring let go of frames the caller had not taken; then
        // the numbers between say how many.
        let lost = match frames.first() {
            Some(first) if state.released_up_to > number => first.number.saturating_sub(number + 1),
            _ => 0,
        };
        (frames, lost)
    }

    /// Like [`FrameRing::after`], but waits up to `timeout` for a frame if there is none yet.
    pub fn wait_after(&self, number: u64, timeout: Duration) -> (Vec<Arc<Frame>>, u64) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if state.frames.back().is_some_and(|f| f.number > number) {
                return Self::after_locked(&state, number);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (Vec::new(), 0);
            }
            state = self
                .grew
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn stats(&self) -> RingStats {
        let state = self.lock();
        let span = match (state.frames.front(), state.frames.back()) {
            (Some(a), Some(b)) => b.captured_at.saturating_duration_since(a.captured_at),
            _ => Duration::ZERO,
        };
        RingStats {
            frames: state.frames.len(),
            bytes: state.bytes,
            span,
        }
    }

    /// Frames let go because of the byte bound since the last call (for a log line saying the
    /// pre-roll is shorter than asked).
    pub fn take_trimmed_by_bytes(&self) -> u64 {
        std::mem::take(&mut self.lock().trimmed_by_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame `number` captured `at_ms` after `base`, with a JPEG of `len` bytes.
    fn frame(base: Instant, number: u64, at_ms: u64, len: usize) -> Arc<Frame> {
        Arc::new(Frame::new(
            number,
            1_700_000_000.0 + at_ms as f64 / 1000.0,
            base + Duration::from_millis(at_ms),
            (640, 480),
            vec![0xAB; len],
            true,
        ))
    }

    #[test]
    fn keeps_only_the_time_it_is_asked_for() {
        let base = Instant::now();
        let ring = FrameRing::new(Duration::from_millis(1000), 1 << 30);
        // 15 fps for 5 s.
        for n in 0..75 {
            ring.push(frame(base, n + 1, n * 1000 / 15, 100));
        }
        let stats = ring.stats();
        assert!(stats.span <= Duration::from_millis(1000), "{stats:?}");
        assert!(stats.span >= Duration::from_millis(900), "{stats:?}");
        assert_eq!(stats.frames, 16);
        let newest = ring.newest().unwrap();
        assert_eq!(newest.number, 75);
        assert_eq!(stats.bytes, stats.frames * frame_cost(&newest));
        assert_eq!(ring.take_trimmed_by_bytes(), 0);
    }

    #[test]
    fn the_byte_bound_wins_over_time_and_is_never_exceeded() {
        let base = Instant::now();
        let one = frame_cost(&frame(base, 1, 0, 10_000));
        let ring = FrameRing::new(Duration::from_secs(3), one * 10 + one / 2);
        for n in 0..100 {
            ring.push(frame(base, n + 1, n * 33, 10_000));
            assert!(ring.stats().bytes <= ring.max_bytes());
        }
        let stats = ring.stats();
        assert_eq!(stats.frames, 10);
        let held = ring.since(base);
        assert_eq!(
            stats.bytes,
            held.iter().map(|f| frame_cost(f)).sum::<usize>()
        );
        assert_eq!(held.first().unwrap().number, 91);
        assert!(ring.take_trimmed_by_bytes() > 0);
        assert_eq!(ring.take_trimmed_by_bytes(), 0);
    }

    #[test]
    fn one_frame_larger_than_the_bound_is_still_kept_alone() {
        let base = Instant::now();
        let ring = FrameRing::new(Duration::from_secs(3), 1000);
        ring.push(frame(base, 1, 0, 5000));
        ring.push(frame(base, 2, 66, 5000));
        let stats = ring.stats();
        assert_eq!(stats.frames, 1);
        assert_eq!(ring.newest().unwrap().number, 2);
    }

    #[test]
    fn since_and_after_select_by_time_and_number() {
        let base = Instant::now();
        let ring = FrameRing::new(Duration::from_secs(10), 1 << 30);
        for n in 0..10 {
            ring.push(frame(base, n + 1, n * 100, 10));
        }
        let from = base + Duration::from_millis(450);
        let numbers = |frames: Vec<Arc<Frame>>| frames.iter().map(|f| f.number).collect::<Vec<_>>();
        assert_eq!(numbers(ring.since(from)), vec![6, 7, 8, 9, 10]);
        assert_eq!(numbers(ring.since(base)), (1..=10).collect::<Vec<_>>());
        let (frames, lost) = ring.after(7);
        assert_eq!((numbers(frames), lost), (vec![8, 9, 10], 0));
        let (frames, lost) = ring.after(10);
        assert_eq!((frames.len(), lost), (0, 0));
    }

    #[test]
    fn a_reader_that_fell_behind_the_ring_is_told_what_it_lost() {
        let base = Instant::now();
        let ring = FrameRing::new(Duration::from_millis(500), 1 << 30);
        for n in 0..30 {
            ring.push(frame(base, n + 1, n * 100, 10));
        }
        // The ring holds 25..=30 now; a reader that last wrote 10 lost 11..=24.
        let (frames, lost) = ring.after(10);
        assert_eq!(frames.first().unwrap().number, 25);
        assert_eq!(lost, 14);
        // Placeholders take numbers without entering the ring: not a loss.
        ring.push(frame(base, 40, 3100, 10));
        let (frames, lost) = ring.after(30);
        assert_eq!((frames[0].number, lost), (40, 0));
    }

    #[test]
    fn wait_after_wakes_on_push_and_times_out_without() {
        let base = Instant::now();
        let ring = Arc::new(FrameRing::new(Duration::from_secs(3), 1 << 30));
        ring.push(frame(base, 1, 0, 10));
        let (frames, _) = ring.wait_after(1, Duration::from_millis(20));
        assert!(frames.is_empty());
        let waiter = {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || ring.wait_after(1, Duration::from_secs(10)))
        };
        ring.push(frame(base, 2, 66, 10));
        let (frames, lost) = waiter.join().unwrap();
        assert_eq!(frames.iter().map(|f| f.number).collect::<Vec<_>>(), vec![2]);
        assert_eq!(lost, 0);
    }

    #[test]
    fn clear_lets_everything_go() {
        let base = Instant::now();
        let ring = FrameRing::new(Duration::from_secs(3), 1 << 30);
        let kept = frame(base, 1, 0, 10);
        ring.push(Arc::clone(&kept));
        assert_eq!(Arc::strong_count(&kept), 2);
        ring.clear();
        assert_eq!(Arc::strong_count(&kept), 1);
        assert_eq!(ring.stats(), RingStats::default());
    }

    #[test]
    fn keep_covers_the_pre_roll_with_a_margin() {
        assert_eq!(keep_for(Duration::from_secs(3)), Duration::from_secs(4));
        assert_eq!(keep_for(Duration::ZERO), MIN_KEEP);
    }
}
