//! Checks of the contract's objects (Event, status) and the small facts they rest on.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Checks the contract's Event object.
pub fn assert_event_shape(event: &Value) {
    let obj = event
        .as_object()
        .unwrap_or_else(|| panic!("event is not an object: {event}"));
    assert!(
        obj.get("id").and_then(Value::as_u64).is_some(),
        "id: {event}"
    );
    let et = obj
        .get("event_type")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("event_type: {event}"));
    assert!(
        valid_event_type(et),
        "event_type {et:?} does not match [a-z0-9_]{{1,64}}"
    );
    assert!(
        obj.get("timestamp").and_then(Value::as_f64).is_some(),
        "timestamp: {event}"
    );
    assert!(obj.contains_key("source"), "source: {event}");
    assert!(
        obj.get("data").is_some_and(Value::is_object),
        "data must be an object: {event}"
    );
    let snap = obj
        .get("snapshot_url")
        .unwrap_or_else(|| panic!("snapshot_url missing: {event}"));
    assert!(snap.is_null() || snap.is_string(), "snapshot_url: {event}");
}

pub fn valid_event_type(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Checks the contract's system status object: every field present, with its type or null.
pub fn assert_status_object(s: &Value) {
    fn num_or_null(s: &Value, path: &str, v: &Value) {
        assert!(
            v.is_number() || v.is_null(),
            "{path} must be a number or null: {s}"
        );
    }
    fn field<'a>(s: &'a Value, obj: &'a Value, path: &str, key: &str) -> &'a Value {
        obj.as_object()
            .unwrap_or_else(|| panic!("{path} is not an object: {s}"))
            .get(key)
            .unwrap_or_else(|| panic!("{path}.{key} missing: {s}"))
    }
    let ts = field(s, s, "status", "timestamp")
        .as_f64()
        .expect("timestamp number");
    assert!(
        (ts - now_unix()).abs() < 60.0,
        "status timestamp {ts} is not now"
    );
    let up = field(s, s, "status", "uptime_s")
        .as_f64()
        .expect("uptime_s number");
    assert!(up >= 0.0, "uptime_s {up}");
    let version = field(s, s, "status", "version");
    assert_eq!(
        version.as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "version: {s}"
    );
    for key in [
        "cpu_percent",
        "rss_bytes",
        "mem_available_bytes",
        "temperature_c",
    ] {
        num_or_null(s, key, field(s, s, "status", key));
    }
    // On Linux these are measurable from /proc, so they must not be null here.
    assert!(
        s["rss_bytes"].as_u64().is_some_and(|v| v > 0),
        "rss_bytes must be a positive integer on Linux: {s}"
    );
    assert!(
        s["mem_available_bytes"].as_u64().is_some_and(|v| v > 0),
        "mem_available_bytes must be a positive integer on Linux: {s}"
    );
    let load = field(s, s, "status", "load_avg");
    if !load.is_null() {
        let arr = load.as_array().expect("load_avg array");
        assert_eq!(arr.len(), 3, "load_avg has 3 numbers: {s}");
        assert!(arr.iter().all(Value::is_number), "load_avg: {s}");
    }
    let camera = field(s, s, "status", "camera");
    let state = field(s, camera, "camera", "state")
        .as_str()
        .expect("camera.state string");
    assert!(
        ["starting", "streaming", "stalled", "offline"].contains(&state),
        "camera.state {state:?}"
    );
    let source = field(s, camera, "camera", "source");
    assert!(source.is_string() || source.is_null(), "camera.source: {s}");
    for key in [
        "width",
        "height",
        "fps_target",
        "fps_measured",
        "frames_captured",
        "frames_dropped",
    ] {
        num_or_null(s, &format!("camera.{key}"), field(s, camera, "camera", key));
    }
    let clients = field(s, s, "status", "clients");
    for key in ["sse", "websocket", "video"] {
        assert!(
            field(s, clients, "clients", key).as_u64().is_some(),
            "clients.{key} must be a count: {s}"
        );
    }
    let events = field(s, s, "status", "events");
    let last = field(s, events, "events", "last_id");
    assert!(last.is_u64() || last.is_null(), "events.last_id: {s}");
    assert!(
        field(s, events, "events", "stored").as_u64().is_some(),
        "events.stored must be a count: {s}"
    );
    let doorbell = field(s, s, "status", "doorbell");
    assert!(
        field(s, doorbell, "doorbell", "source").is_string(),
        "doorbell.source: {s}"
    );
    let pin = field(s, doorbell, "doorbell", "pin");
    assert!(pin.is_null() || pin.is_u64(), "doorbell.pin: {s}");
}
