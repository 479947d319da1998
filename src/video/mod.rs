//! Video: frames, quality presets, JPEG decode/resize/encode, and the shared per-preset encoders.

pub(crate) mod adapt;
pub(crate) mod frame;
pub(crate) mod jpeg;
pub(crate) mod metrics;
pub(crate) mod pipeline;
mod quality;
pub(crate) mod rate;
pub(crate) mod resize;
pub(crate) mod text;

pub use frame::Frame;
pub use metrics::VideoMetrics;
pub use pipeline::Video;
pub use quality::{Quality, StreamQuality};
