//! The data of the built-in event types, checked on events posted from outside.
//!
//! Consumers read these shapes: the dashboard frames `motion_detected`'s `box` on the picture,
//! ntfy and webhooks print its `score`, `motion_ended`'s `duration_s` and `system_alert`'s
//! `message`, the clip recorder ends the detector's motion at the `motion_ended` naming it, and
//! Home Assistant sees every event object as it was stored. A posted built-in event therefore
//! obeys the contract (API.md, "Objects") and the shapes the server's own producers write
//! (README: camera, motion, clips): each key listed here, when present, has its type and
//! bounds, or the post is refused naming `data.<key>`.
//!
//! Why present-then-typed and not required: posting built-in types is a documented use — a PIR
//! sensor or another detector posts `motion_detected` (README: "a `motion_detected` event
//! posted without a picture" gets the camera's frame), and every consumer already treats a
//! missing key as unknown — while none can make sense of a key of the wrong type. Keys not
//! listed are the producer's own details (`zone`, `note`) and stay free-form, as does the
//! `data` of every other type (`face_recognized`).
//!
//! Posted events may not claim a source the server's own producers use ([`RESERVED_SOURCES`]):
//! the clip recorder takes a `motion_detected` from `camera` for the detector's (whose motion
//! extends a recording until its `motion_ended`), and a `gpio` press reads as the real button.

use serde_json::{Map, Value};

use crate::camera::{CAMERA_OFFLINE, CAMERA_ONLINE};
use crate::clips::recorder::SYSTEM_ALERT;
use crate::control::DOORBELL_PRESSED;
use crate::motion::{MOTION_DETECTED, MOTION_ENDED};

/// The `source` of the capture thread's `camera_offline`/`camera_online` and of the motion
/// detector's events.
pub const CAMERA_SOURCE: &str = "camera";
/// The `source` of the doorbell button's presses.
pub const GPIO_SOURCE: &str = "gpio";
/// The `source` of the clip recorder's `system_alert`s.
pub const CLIPS_SOURCE: &str = "clips";

/// The `source`s of the server's own producers, which a posted event may not claim. The
/// producers publish with these constants, so the list cannot miss one of them.
pub const RESERVED_SOURCES: &[&str] = &[CAMERA_SOURCE, GPIO_SOURCE, CLIPS_SOURCE];

/// What a listed key of a built-in type's data must hold.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// A number from 0 to 1 (`score`).
    Fraction,
    /// `[x, y, w, h]`: four fractions of the picture, the region inside it.
    Region,
    /// A number of seconds, 0 or more.
    Seconds,
    /// An event id: an integer in 1..2^63-1 (API.md, "Numbers").
    EventId,
    /// A count or a pin number: an integer in 0..2^32-1.
    Count,
    /// A string.
    Text,
}

impl Shape {
    fn accepts(self, value: &Value) -> bool {
        let fraction = |v: &Value| v.as_f64().filter(|f| (0.0..=1.0).contains(f));
        match self {
            Shape::Fraction => fraction(value).is_some(),
            Shape::Region => region_inside_picture(value),
            Shape::Seconds => value.as_f64().is_some_and(|s| s >= 0.0 && s.is_finite()),
            Shape::EventId => value.as_i64().is_some_and(|id| id >= 1),
            Shape::Count => value.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
            Shape::Text => value.is_string(),
        }
    }

    fn wanted(self) -> &'static str {
        match self {
            Shape::Fraction => "a number from 0 to 1",
            Shape::Region => {
                "[x, y, w, h]: four numbers from 0 to 1, fractions of the picture, with \
                 x + w <= 1 and y + h <= 1"
            }
            Shape::Seconds => "a number of seconds, 0 or more",
            Shape::EventId => "an event id, an integer from 1 to 2^63-1",
            Shape::Count => "an integer from 0 to 4294967295",
            Shape::Text => "a string",
        }
    }
}

/// `[x, y, w, h]`, each a fraction, the region inside the picture. A sum may exceed 1 by a
/// rounding error of the producer's arithmetic (0.1 + 0.9), never by more.
fn region_inside_picture(value: &Value) -> bool {
    const ROUNDING: f64 = 1e-9;
    let Some([x, y, w, h]) = value.as_array().and_then(|items| {
        let numbers: Option<Vec<f64>> = items.iter().map(Value::as_f64).collect();
        <[f64; 4]>::try_from(numbers?).ok()
    }) else {
        return false;
    };
    [x, y, w, h].iter().all(|f| (0.0..=1.0).contains(f))
        && x + w <= 1.0 + ROUNDING
        && y + h <= 1.0 + ROUNDING
}

/// Each built-in type and the keys of its data that have a defined shape.
const BUILT_IN: &[(&str, &[(&str, Shape)])] = &[
    (DOORBELL_PRESSED, &[("pin", Shape::Count)]),
    (
        MOTION_DETECTED,
        &[("score", Shape::Fraction), ("box", Shape::Region)],
    ),
    (
        MOTION_ENDED,
        &[
            ("duration_s", Shape::Seconds),
            ("motion_event_id", Shape::EventId),
        ],
    ),
    (
        CAMERA_OFFLINE,
        &[("source", Shape::Text), ("reason", Shape::Text)],
    ),
    (
        CAMERA_ONLINE,
        &[
            ("source", Shape::Text),
            ("width", Shape::Count),
            ("height", Shape::Count),
            ("offline_s", Shape::Seconds),
        ],
    ),
    (
        SYSTEM_ALERT,
        &[("reason", Shape::Text), ("message", Shape::Text)],
    ),
];

/// Checks the data of a posted event of a built-in type; any other type's data is free-form.
/// The error names the key and says what it must hold.
pub fn check_data(event_type: &str, data: &Map<String, Value>) -> Result<(), String> {
    let Some((_, keys)) = BUILT_IN.iter().find(|(name, _)| *name == event_type) else {
        return Ok(());
    };
    for (key, shape) in keys.iter() {
        if let Some(value) = data.get(*key)
            && !shape.accepts(value)
        {
            return Err(format!(
                "data.{key} of a {event_type} event must be {} (omit it when unknown)",
                shape.wanted()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(event_type: &str, data: Value) -> Result<(), String> {
        let Value::Object(map) = data else {
            panic!("test data must be an object")
        };
        check_data(event_type, &map)
    }

    #[test]
    fn what_the_servers_own_producers_write_passes() {
        // As motion/watcher.rs, camera/capture.rs, clips/recorder.rs and the GPIO poller write them.
        for (event_type, data) in [
            (
                "motion_detected",
                json!({"score": 0.042, "box": [0.41, 0.22, 0.18, 0.61]}),
            ),
            ("motion_detected", json!({"score": 1, "box": [0, 0, 1, 1]})),
            (
                "motion_detected",
                json!({"score": 0.5, "box": [0.1, 0.0, 0.9, 1.0]}),
            ),
            (
                "motion_ended",
                json!({"duration_s": 4.2, "motion_event_id": 57}),
            ),
            (
                "camera_offline",
                json!({"source": "v4l2:/dev/video0", "reason": "gone"}),
            ),
            (
                "camera_online",
                json!({"source": "synthetic:640x480@15", "width": 640, "height": 480, "offline_s": 3.5}),
            ),
            (
                "system_alert",
                json!({"reason": "disk_full", "message": "disk full"}),
            ),
            ("doorbell_pressed", json!({"pin": 17})),
            ("doorbell_pressed", json!({})),
        ] {
            assert_eq!(
                check(event_type, data.clone()),
                Ok(()),
                "{event_type} {data}"
            );
        }
    }

    #[test]
    fn producers_own_keys_and_absent_keys_are_free() {
        assert_eq!(check("motion_detected", json!({"zone": "path"})), Ok(()));
        assert_eq!(check("motion_ended", json!({})), Ok(()));
        assert_eq!(check("doorbell_pressed", json!({"note": [1, 2]})), Ok(()));
        // Types that are not built in carry whatever their producer sends.
        assert_eq!(check("face_recognized", json!({"score": "high"})), Ok(()));
        assert_eq!(check("bench", json!({"seq": 1})), Ok(()));
    }

    #[test]
    fn a_listed_key_of_the_wrong_shape_is_refused_by_name() {
        for (event_type, data, key) in [
            ("motion_detected", json!({"score": "garbage"}), "score"),
            ("motion_detected", json!({"score": 1.5}), "score"),
            ("motion_detected", json!({"score": -0.1}), "score"),
            ("motion_detected", json!({"score": null}), "score"),
            ("motion_detected", json!({"box": "garbage"}), "box"),
            ("motion_detected", json!({"box": [0.1, 0.2, 0.3]}), "box"),
            (
                "motion_detected",
                json!({"box": [0.1, 0.2, 0.3, 0.4, 0.5]}),
                "box",
            ),
            (
                "motion_detected",
                json!({"box": [0.1, 0.2, "w", 0.4]}),
                "box",
            ),
            ("motion_detected", json!({"box": [10, 20, 30, 40]}), "box"),
            (
                "motion_detected",
                json!({"box": [0.5, 0.0, 0.6, 0.1]}),
                "box",
            ),
            (
                "motion_detected",
                json!({"box": [0.0, 0.7, 0.1, 0.4]}),
                "box",
            ),
            ("motion_ended", json!({"duration_s": -1}), "duration_s"),
            ("motion_ended", json!({"duration_s": "4"}), "duration_s"),
            (
                "motion_ended",
                json!({"motion_event_id": 0}),
                "motion_event_id",
            ),
            (
                "motion_ended",
                json!({"motion_event_id": 1.5}),
                "motion_event_id",
            ),
            (
                "motion_ended",
                json!({"motion_event_id": "57"}),
                "motion_event_id",
            ),
            (
                "motion_ended",
                json!({"motion_event_id": 9_223_372_036_854_775_808_u64}),
                "motion_event_id",
            ),
            ("camera_offline", json!({"reason": 5}), "reason"),
            ("camera_online", json!({"width": -640}), "width"),
            ("camera_online", json!({"offline_s": "long"}), "offline_s"),
            (
                "system_alert",
                json!({"message": {"nested": true}}),
                "message",
            ),
            ("doorbell_pressed", json!({"pin": "17"}), "pin"),
            ("doorbell_pressed", json!({"pin": 4_294_967_296_u64}), "pin"),
        ] {
            let err = check(event_type, data.clone()).expect_err(&data.to_string());
            assert!(
                err.starts_with(&format!("data.{key} of a {event_type} event must be")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_detectors_source_is_reserved() {
        assert!(RESERVED_SOURCES.contains(&crate::clips::recorder::DETECTOR_SOURCE));
    }
}
