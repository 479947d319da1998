//! Video: quality presets (and, with the video work, the shared per-preset encoders).

mod quality;

pub use quality::Quality;
