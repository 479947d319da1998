//! Motion detection: the camera notices someone at the door who does not ring.
//!
//! - `grid.rs` — a decoded picture → a small grid of luma averages (pure).
//! - `detector.rs` — grids and capture times → "motion detected" / "motion ended" (pure).
//! - `watcher.rs` — the thread: camera frames at `motion_fps`, decoded through the video
//!   pipeline's shared cache (never twice), into the detector, out as `motion_detected` and
//!   `motion_ended` events.
//!
//! - `cost.rs` — what the three steps cost per frame, for `porchlight-video-bench --motion-cost`.
//!
//! With `motion = "off"` none of it runs: no thread, no decode.

pub(crate) mod cost;
pub(crate) mod detector;
pub(crate) mod grid;
pub(crate) mod watcher;

use std::time::Duration;

pub use detector::{Decision, Detector};
pub use grid::LumaGrid;
pub use watcher::{Wiring, start_configured};

/// Event type of motion the camera saw (and of motion a producer posts).
pub const MOTION_DETECTED: &str = "motion_detected";
/// Event type of the end of a motion the camera saw.
pub const MOTION_ENDED: &str = "motion_ended";

/// A rectangle of the picture where motion counts, as fractions of its width and height.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Zone {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Zone {
    /// `[x, y, w, h]`: each a fraction 0..1, the rectangle not empty and inside the picture.
    pub fn new([x, y, w, h]: [f64; 4]) -> Result<Zone, String> {
        if ![x, y, w, h].iter().all(|v| v.is_finite()) {
            return Err("a zone's numbers must be finite".into());
        }
        if !(0.0..1.0).contains(&x) || !(0.0..1.0).contains(&y) {
            return Err(format!(
                "zone [{x}, {y}, {w}, {h}] starts outside the frame: x and y are fractions from 0 to below 1"
            ));
        }
        if w <= 0.0 || h <= 0.0 {
            return Err(format!(
                "zone [{x}, {y}, {w}, {h}] is empty: w and h must be above 0"
            ));
        }
        // A little slack for fractions like 1/3 + 2/3 written as decimals.
        if x + w > 1.0 + 1e-6 || y + h > 1.0 + 1e-6 {
            return Err(format!(
                "zone [{x}, {y}, {w}, {h}] reaches outside the frame: x + w and y + h must be at most 1"
            ));
        }
        Ok(Zone { x, y, w, h })
    }

    /// Whether the point `(x, y)` (fractions) lies inside.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        x >= self.x && x < self.x + self.w && y >= self.y && y < self.y + self.h
    }

    pub fn to_array(self) -> [f64; 4] {
        [self.x, self.y, self.w, self.h]
    }
}

/// Parses `motion_zones`: a list of `[x, y, w, h]` lists of numbers.
pub fn parse_zones(value: &toml::Value) -> Result<Vec<Zone>, String> {
    let example = "a list of [x, y, w, h] fractions, like [[0.0, 0.5, 1.0, 0.5]]";
    let items = value
        .as_array()
        .ok_or_else(|| format!("must be {example}"))?;
    if items.len() > 32 {
        return Err(format!("at most 32 zones (got {})", items.len()));
    }
    items
        .iter()
        .map(|item| {
            let numbers: Vec<f64> = item
                .as_array()
                .ok_or_else(|| format!("each zone must be [x, y, w, h]; {example}"))?
                .iter()
                .map(|n| n.as_float().or_else(|| n.as_integer().map(|i| i as f64)))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("a zone holds numbers only; {example}"))?;
            let rect: [f64; 4] = numbers.try_into().map_err(|n: Vec<f64>| {
                format!("a zone has 4 numbers [x, y, w, h], not {}", n.len())
            })?;
            Zone::new(rect)
        })
        .collect()
}

/// Parses `motion`: `"on"` or `"off"` (TOML `true`/`false` too).
pub fn parse_switch(value: &toml::Value) -> Result<bool, String> {
    match value {
        toml::Value::String(s) if s == "on" => Ok(true),
        toml::Value::String(s) if s == "off" => Ok(false),
        toml::Value::Boolean(on) => Ok(*on),
        other => Err(format!(
            "must be \"on\" or \"off\", not {}",
            describe(other)
        )),
    }
}

/// A TOML value as the user wrote it, for error messages.
fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_str()),
    }
}

/// How the detector judges a scene (the `motion_*` config keys).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// 1..100: higher notices smaller and fainter changes.
    pub sensitivity: u8,
    /// Where change counts; empty: the whole picture.
    pub zones: Vec<Zone>,
    /// How long change must go on before it is reported.
    pub min_duration: Duration,
    /// How long without change ends a motion.
    pub cooldown: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sensitivity: 50,
            zones: Vec::new(),
            min_duration: Duration::from_millis(500),
            cooldown: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones(text: &str) -> Result<Vec<Zone>, String> {
        let table: toml::Table = toml::from_str(&format!("z = {text}")).unwrap();
        parse_zones(&table["z"])
    }

    #[test]
    fn zones_inside_the_frame_are_accepted() {
        assert_eq!(zones("[]").unwrap(), vec![]);
        let z = zones("[[0, 0.5, 1, 0.5], [0.25, 0.0, 0.5, 0.25]]").unwrap();
        assert_eq!(z[0].to_array(), [0.0, 0.5, 1.0, 0.5]);
        assert!(z[0].contains(0.5, 0.75));
        assert!(!z[0].contains(0.5, 0.25));
        assert!(zones("[[0.3333333, 0, 0.6666667, 1]]").is_ok());
    }

    #[test]
    fn zones_outside_the_frame_or_malformed_are_refused() {
        for (text, says) in [
            ("[[0.5, 0.5, 0.6, 0.1]]", "outside the frame"),
            ("[[-0.1, 0, 0.5, 0.5]]", "outside the frame"),
            ("[[0, 1.0, 0.5, 0.5]]", "outside the frame"),
            ("[[0, 0, 0, 0.5]]", "empty"),
            ("[[0, 0, 0.5]]", "4 numbers"),
            ("[[0, 0, \"a\", 0.5]]", "numbers only"),
            ("[0, 0, 1, 1]", "[x, y, w, h]"),
            ("\"all\"", "list"),
            ("[[nan, 0, 0.5, 0.5]]", "finite"),
        ] {
            let err = zones(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_switch_is_on_or_off() {
        let value =
            |t: &str| toml::from_str::<toml::Table>(&format!("m = {t}")).unwrap()["m"].clone();
        assert_eq!(parse_switch(&value("\"on\"")), Ok(true));
        assert_eq!(parse_switch(&value("\"off\"")), Ok(false));
        assert_eq!(parse_switch(&value("false")), Ok(false));
        assert!(
            parse_switch(&value("\"auto\""))
                .unwrap_err()
                .contains("\"on\" or \"off\"")
        );
        assert!(parse_switch(&value("1")).is_err());
    }
}
