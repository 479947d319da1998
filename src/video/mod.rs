//! Video: frames, quality presets, JPEG decode/resize/encode, and the shared per-preset encoders.

pub mod adapt;
pub mod frame;
pub mod jpeg;
pub mod metrics;
pub mod pipeline;
mod quality;
pub mod rate;
pub mod resize;
pub mod text;

pub use frame::Frame;
pub use metrics::VideoMetrics;
pub use pipeline::{Video, Watch};
pub use quality::{Quality, StreamQuality};
