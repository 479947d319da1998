//! Wall-clock time as the contract writes it (Unix seconds, float).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds with sub-second precision.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Rounds to milliseconds so JSON shows `1763800000.125`, not 17 digits of noise.
pub fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
