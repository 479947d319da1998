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

/// `HH:MM:SS.mmm` (UTC) of a Unix time.
pub fn clock_text(unix: f64) -> String {
    // A clock reading, not a client's number: negative or NaN saturate to 0.
    let ms = (unix * 1000.0) as u64;
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_text_is_utc_time_of_day() {
        assert_eq!(clock_text(86_400.0 * 3.0 + 3_723.456), "01:02:03.456");
    }
}
