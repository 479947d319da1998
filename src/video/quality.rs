//! The quality presets of the contract: `source`, `low`, `medium` (default), `high`.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quality {
    /// The camera's own frames, passed through untouched.
    Source,
    Low,
    Medium,
    High,
}

impl Quality {
    pub const ALL: [Quality; 4] = [
        Quality::Source,
        Quality::Low,
        Quality::Medium,
        Quality::High,
    ];

    pub fn parse(text: &str) -> Option<Quality> {
        Quality::ALL.into_iter().find(|q| q.name() == text)
    }

    pub fn name(self) -> &'static str {
        match self {
            Quality::Source => "source",
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }

    /// Largest picture size; `None` for `source` (whatever the camera gives). A preset never
    /// upscales past the source.
    pub fn max_size(self) -> Option<(u32, u32)> {
        match self {
            Quality::Source => None,
            Quality::Low => Some((320, 240)),
            Quality::Medium => Some((640, 480)),
            Quality::High => Some((1280, 720)),
        }
    }

    /// JPEG quality when the preset re-encodes.
    pub fn jpeg_quality(self) -> u8 {
        match self {
            Quality::Source => 90,
            Quality::Low => 70,
            Quality::Medium => 80,
            Quality::High => 90,
        }
    }

    /// Highest frame rate; `None` for `source` (the camera's rate).
    pub fn max_fps(self) -> Option<u32> {
        match self {
            Quality::Source => None,
            Quality::Low => Some(10),
            Quality::Medium => Some(15),
            Quality::High => Some(20),
        }
    }

    pub(crate) fn index(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_index(index: u8) -> Quality {
        Quality::ALL
            .into_iter()
            .find(|q| q.index() == index)
            .unwrap_or(Quality::Medium)
    }
}

/// What a stream may ask for: a preset, or `auto` (the server picks the preset per viewer from
/// how it takes frames, see `video/adapt.rs`). Snapshots and the default quality are presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamQuality {
    Preset(Quality),
    Auto,
}

impl StreamQuality {
    pub fn parse(text: &str) -> Option<StreamQuality> {
        match text {
            "auto" => Some(StreamQuality::Auto),
            _ => Quality::parse(text).map(StreamQuality::Preset),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamQuality::Preset(quality) => quality.name(),
            StreamQuality::Auto => "auto",
        }
    }

    /// The error text for a name that is neither.
    pub fn choices(name: &str) -> String {
        format!(
            "quality {name:?} is not one of auto, {}",
            Quality::ALL.map(Quality::name).join(", ")
        )
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for q in Quality::ALL {
            assert_eq!(Quality::parse(q.name()), Some(q));
            assert_eq!(Quality::from_index(q.index()), q);
        }
        assert_eq!(Quality::parse("ultra"), None);
        assert_eq!(Quality::parse("auto"), None);
        assert_eq!(StreamQuality::parse("auto"), Some(StreamQuality::Auto));
        assert_eq!(
            StreamQuality::parse("low").map(StreamQuality::name),
            Some("low")
        );
        assert_eq!(StreamQuality::parse("Auto"), None);
        assert_eq!(Quality::parse("Low"), None);
    }
}
