//! Eighth black-box probe: what a producer may post as one of the server's own event types, and
//! the parts of the WebSocket channel, query strings and conditional requests the earlier
//! probes left out. Each test failed on the binary before its fix.

use serde_json::{Value, json};

use crate::common::*;

/// POSTs `{"event_type": T, "data": D}` (and `source` when given) as an admin would.
fn post_raw(port: u16, body: &Value) -> Response {
    post(port, "/api/events", None, &body.to_string())
}

#[test]
fn posted_built_in_types_have_the_contracts_data_or_a_400_naming_the_field() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut sse = Sse::connect(port, "/stream/events");

    for (event_type, data, field) in [
        ("motion_detected", json!({"score": "garbage"}), "data.score"),
        ("motion_detected", json!({"score": 7}), "data.score"),
        ("motion_detected", json!({"box": "garbage"}), "data.box"),
        (
            "motion_detected",
            json!({"box": [0.9, 0.1, 0.5, 0.5]}),
            "data.box",
        ),
        ("motion_detected", json!({"box": [1, 2, 3]}), "data.box"),
        ("motion_ended", json!({"duration_s": -3}), "data.duration_s"),
        (
            "motion_ended",
            json!({"motion_event_id": "7"}),
            "data.motion_event_id",
        ),
        ("camera_online", json!({"width": "wide"}), "data.width"),
        ("system_alert", json!({"message": 42}), "data.message"),
        ("doorbell_pressed", json!({"pin": -1}), "data.pin"),
    ] {
        let answer = post_raw(port, &json!({"event_type": event_type, "data": data}));
        answer.assert_error(400);
        let message = answer.json()["message"].as_str().unwrap_or("").to_string();
        assert!(message.contains(field), "{event_type} {data}: {message}");
    }
    // Nothing refused was stored, or sent to a stream.
    assert_eq!(all_events(port, None), Vec::<Value>::new());

    // The shapes the contract gives, a producer's own extra keys, absent keys (a PIR sensor has
    // no box) and every other type's free-form data are stored as posted.
    let motion = post_event(
        port,
        None,
        "motion_detected",
        json!({"score": 0.12, "box": [0.25, 0.5, 0.5, 0.25], "zone": "path"}),
    );
    let ended = post_event(
        port,
        None,
        "motion_ended",
        json!({"duration_s": 4.2, "motion_event_id": id_of(&motion)}),
    );
    let pir = post_event(port, None, "motion_detected", json!({}));
    let face = post_event(
        port,
        None,
        "face_recognized",
        json!({"score": "high", "box": "x"}),
    );
    let bench = post_event(port, None, "bench", json!({"seq": 1}));
    let first = sse.expect_event();
    assert_eq!(
        first.id_num(),
        id_of(&motion),
        "the first event sent is the first valid one"
    );
    assert_eq!(first.json()["data"]["box"], json!([0.25, 0.5, 0.5, 0.25]));
    let stored: Vec<u64> = all_events(port, None).iter().map(id_of).collect();
    assert_eq!(
        stored,
        [&motion, &ended, &pir, &face, &bench].map(id_of).to_vec()
    );
}

#[test]
fn a_posted_event_cannot_claim_a_source_of_the_servers_own() {
    let server = Server::start(&[]);
    let port = server.port();
    // "camera" is the motion detector's source (the clip recorder extends a recording while
    // its motion goes on), "gpio" the real button's, "clips" the recorder's alerts.
    for source in ["camera", "gpio", "clips"] {
        let answer = post_raw(
            port,
            &json!({"event_type": "motion_detected", "source": source, "data": {}}),
        );
        answer.assert_error(400);
        assert!(answer.text().contains("source"), "{}", answer.text());
    }
    assert_eq!(all_events(port, None), Vec::<Value>::new());
    let posted = post_raw(
        port,
        &json!({"event_type": "motion_detected", "source": "frigate", "data": {}}),
    );
    assert_eq!(posted.status, 201, "{}", posted.text());
    assert_eq!(posted.json()["source"], "frigate");
}
