//! What the clip recorder counts, and how `/metrics` shows it (with the pre-roll's size, read
//! from the ring when asked).

use std::sync::atomic::AtomicU64;

use super::Recorder;
use crate::metrics::{Series, count};

/// The clip writer's counters.
#[derive(Default)]
pub struct ClipMetrics {
    /// Recordings started (one may serve several events).
    pub started: AtomicU64,
    /// 1 while a recording is being written.
    pub recording: AtomicU64,
    pub frames_written: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Frames a recording missed because the writer fell further behind than the pre-roll ring
    /// reaches (a very slow disk).
    pub frames_lost: AtomicU64,
    /// Recordings cut short or not started because the disk refused (full, or failing).
    pub write_errors: AtomicU64,
}

/// What `/metrics` shows of the clip recorder.
pub const SERIES: &[Series<Recorder>] = &[
    Series::gauge(
        "porchlight_clip_preroll_bytes",
        "Bytes of camera frames held for the clips' pre-roll (bounded by time and by 16 MiB).",
        |r, out| out.value(count(r.ring().stats().bytes)),
    ),
    Series::gauge(
        "porchlight_clip_preroll_frames",
        "Camera frames held for the clips' pre-roll.",
        |r, out| out.value(count(r.ring().stats().frames)),
    ),
    Series::gauge(
        "porchlight_clip_preroll_seconds",
        "Capture time the pre-roll spans, oldest to newest frame.",
        |r, out| out.value(r.ring().stats().span.as_secs_f64()),
    ),
    Series::counter(
        "porchlight_clips_started_total",
        "Clip recordings started (one may serve several events).",
        |r, out| out.atomic(&r.metrics().started),
    ),
    Series::gauge(
        "porchlight_clip_recording",
        "1 while a clip is being recorded.",
        |r, out| out.atomic(&r.metrics().recording),
    ),
    Series::counter(
        "porchlight_clip_frames_written_total",
        "Frames written to clip files.",
        |r, out| out.atomic(&r.metrics().frames_written),
    ),
    Series::counter(
        "porchlight_clip_bytes_written_total",
        "Bytes written to clip files.",
        |r, out| out.atomic(&r.metrics().bytes_written),
    ),
    Series::counter(
        "porchlight_clip_frames_lost_total",
        "Frames a clip missed because its writer fell further behind than the pre-roll reaches.",
        |r, out| out.atomic(&r.metrics().frames_lost),
    ),
    Series::counter(
        "porchlight_clip_write_errors_total",
        "Clips cut short or not started because the disk refused.",
        |r, out| out.atomic(&r.metrics().write_errors),
    ),
];
