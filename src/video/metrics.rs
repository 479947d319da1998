//! What the video pipeline and its viewers count: encodes, decodes and their time per preset,
//! frames sent and skipped. The pipeline owns these (`Video::metrics`); `/metrics` prints them
//! through [`SERIES`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::{Samples, Series};
use crate::video::Quality;

/// Per-preset arrays are indexed by `Quality::index()`. Times are summed so a benchmark can
/// divide them by the counts: the encode time per frame is measured where it happens.
#[derive(Default)]
pub struct VideoMetrics {
    /// JPEG encodes made for a preset (once per frame for all its viewers).
    pub encoded: [AtomicU64; 4],
    pub encode_nanos: [AtomicU64; 4],
    /// Frames a preset passed on untouched (its size equals the source's).
    pub passed_through: [AtomicU64; 4],
    /// Camera frames decoded (at most once per frame, however many presets need it).
    pub decoded: AtomicU64,
    pub decode_nanos: AtomicU64,
    /// Frames written to video clients.
    pub frames_sent: AtomicU64,
    /// Frames a video client never got because a newer one replaced them while it was still
    /// writing (a slow client skips to the newest).
    pub client_skipped_slow: AtomicU64,
    /// Frames not sent because they were identical to the one the client had.
    pub client_skipped_unchanged: AtomicU64,
    /// Camera frames the motion detector examined, and its time on them (decoding apart:
    /// that is in `decode_nanos`, shared with the presets).
    pub motion_frames: AtomicU64,
    pub motion_nanos: AtomicU64,
}

impl VideoMetrics {
    pub fn add_encode(&self, quality: Quality, took: Duration) {
        let i = usize::from(quality.index());
        self.encoded[i].fetch_add(1, Ordering::Relaxed);
        self.encode_nanos[i].fetch_add(nanos(took), Ordering::Relaxed);
    }

    pub fn add_pass_through(&self, quality: Quality) {
        self.passed_through[usize::from(quality.index())].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_decode(&self, took: Duration) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.decode_nanos.fetch_add(nanos(took), Ordering::Relaxed);
    }

    pub fn add_motion(&self, took: Duration) {
        self.motion_frames.fetch_add(1, Ordering::Relaxed);
        self.motion_nanos.fetch_add(nanos(took), Ordering::Relaxed);
    }

    /// Encodes so far for `quality`.
    pub fn encodes(&self, quality: Quality) -> u64 {
        self.encoded[usize::from(quality.index())].load(Ordering::Relaxed)
    }
}

/// A duration in nanoseconds, saturating (a u64 of nanoseconds is 584 years).
fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
}

/// Counters stay far below 2^53, where f64 is exact.
fn load(value: &AtomicU64) -> f64 {
    value.load(Ordering::Relaxed) as f64
}

fn per_preset(values: &[AtomicU64; 4], scale: f64, out: &mut Samples<'_>) {
    for quality in Quality::ALL {
        let value = load(&values[usize::from(quality.index())]) * scale;
        out.labelled("quality", quality.name(), value);
    }
}

/// What `/metrics` shows of [`VideoMetrics`], in the order they are printed.
pub const SERIES: &[Series<VideoMetrics>] = &[
    Series::counter(
        "porchlight_frames_sent_total",
        "Video frames written to clients, by client kind.",
        |m, out| out.labelled("kind", "video", load(&m.frames_sent)),
    ),
    Series::counter(
        "porchlight_client_frames_skipped_total",
        "Frames a slow client never got because a newer one replaced them.",
        |m, out| out.labelled("kind", "video", load(&m.client_skipped_slow)),
    ),
    Series::counter(
        "porchlight_client_frames_unchanged_total",
        "Frames not sent to a client because they equalled the one it had.",
        |m, out| out.labelled("kind", "video", load(&m.client_skipped_unchanged)),
    ),
    Series::counter(
        "porchlight_frames_encoded_total",
        "JPEG encodes made for a preset (once per frame for all its viewers).",
        |m, out| per_preset(&m.encoded, 1.0, out),
    ),
    Series::counter(
        "porchlight_encode_seconds_total",
        "Time spent resizing and encoding for a preset (decoding is counted apart).",
        |m, out| per_preset(&m.encode_nanos, 1e-9, out),
    ),
    Series::counter(
        "porchlight_frames_passed_through_total",
        "Frames a preset passed on untouched (same size as the source).",
        |m, out| per_preset(&m.passed_through, 1.0, out),
    ),
    Series::counter(
        "porchlight_frames_decoded_total",
        "Camera frames decoded (at most once each, shared by all presets).",
        |m, out| out.atomic(&m.decoded),
    ),
    Series::counter(
        "porchlight_decode_seconds_total",
        "Time spent decoding camera frames.",
        |m, out| out.value(load(&m.decode_nanos) * 1e-9),
    ),
    Series::counter(
        "porchlight_motion_frames_total",
        "Camera frames the motion detector examined.",
        |m, out| out.atomic(&m.motion_frames),
    ),
    Series::counter(
        "porchlight_motion_seconds_total",
        "Time the motion detector spent on them (decoding is counted apart).",
        |m, out| out.value(load(&m.motion_nanos) * 1e-9),
    ),
];
