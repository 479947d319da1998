//! The camera: what `--camera` names. Capture threads, frames and the state machine arrive with
//! the video work (issue 4); until then the status reports the configured source as `offline`.

pub mod discover;
mod spec;

pub use spec::CameraSpec;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::metrics::Metrics;

/// The `camera` part of the status while no capture thread runs: the configured source,
/// `offline`, and the real (zero) frame counters. Sizes and rates are `null`: nothing measured.
pub fn offline_status(spec: &CameraSpec, metrics: &Arc<Metrics>) -> Value {
    let fps_target = match spec {
        CameraSpec::Synthetic { fps, .. } => Some(*fps),
        CameraSpec::V4l2 { mode, .. } => mode.map(|(_, _, fps)| fps),
        CameraSpec::File { .. } => None,
    };
    json!({
        "state": "offline",
        "source": spec.to_string(),
        "width": null,
        "height": null,
        "fps_target": fps_target,
        "fps_measured": null,
        "frames_captured": metrics.frames_captured.load(Ordering::Relaxed),
        "frames_dropped": metrics.frames_dropped.load(Ordering::Relaxed),
    })
}
