//! What a hook sends for an event.
//!
//! - `json`: the event object (as SSE and MQTT carry it) with `snapshot_url` and `clip_url`
//!   made absolute with `public_url`, so the receiver can fetch them; relative when no
//!   `public_url` is set.
//! - `ntfy`: ntfy's publish form — the message as the body, `Title`, `Tags` (ntfy shows known
//!   tags as emoji), `Priority` (high for the doorbell, so the phone rings through), `Click`
//!   (the dashboard) and `Attach` (the event's picture) as headers. `Click` and `Attach` need
//!   `public_url`, and the phone must be able to open them (a porchlight with tokens asks the
//!   phone's browser to log in; the ntfy app itself fetches `Attach` without a token).
//!
//! Header values are built only from validated parts (event types, ids, `public_url`,
//! `device_id`), never from event data, so no header can be injected.

use serde_json::Value;

use super::Format;
use crate::events::Event;

/// A request body and the headers that go with it (`Content-Type` included).
#[derive(Debug, PartialEq)]
pub struct Request {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Where links point and which door this is.
pub struct Context<'a> {
    pub public_url: Option<&'a str>,
    pub device_id: &'a str,
}

pub fn build(format: Format, event: &Event, json: &str, cx: &Context<'_>) -> Request {
    match format {
        Format::Json => as_json(event, json, cx),
        Format::Ntfy => as_ntfy(event, cx),
    }
}

fn as_json(event: &Event, json: &str, cx: &Context<'_>) -> Request {
    let body = match (cx.public_url, serde_json::from_str::<Value>(json)) {
        (Some(base), Ok(mut object)) => {
            for key in ["snapshot_url", "clip_url"] {
                if let Some(Value::String(path)) = object.get_mut(key)
                    && path.starts_with('/')
                {
                    *path = format!("{base}{path}");
                }
            }
            crate::json::text(&object).into_bytes()
        }
        _ => json.as_bytes().to_vec(),
    };
    Request {
        headers: vec![
            ("Content-Type", "application/json".into()),
            ("X-Porchlight-Event-Id", event.id.to_string()),
            ("X-Porchlight-Event-Type", event.event_type.clone()),
        ],
        body,
    }
}

/// Title, message, ntfy tags and priority for an event type.
fn describe(event: &Event) -> (String, String, &'static str, &'static str) {
    let data = |key: &str| event.data.get(key).and_then(Value::as_f64);
    match event.event_type.as_str() {
        "doorbell_pressed" => (
            "Doorbell".into(),
            "Someone rang the doorbell.".into(),
            "bell",
            "high",
        ),
        "motion_detected" => (
            "Motion".into(),
            match data("score") {
                Some(score) => format!("Motion at the door (score {score:.2})."),
                None => "Motion at the door.".into(),
            },
            "eyes",
            "default",
        ),
        "motion_ended" => (
            "Motion ended".into(),
            match data("duration_s") {
                Some(s) => format!("Motion ended after {s:.0} s."),
                None => "Motion ended.".into(),
            },
            "eyes",
            "low",
        ),
        "camera_offline" => (
            "Camera offline".into(),
            "The camera stopped sending pictures.".into(),
            "warning",
            "default",
        ),
        "camera_online" => (
            "Camera online".into(),
            "The camera is sending pictures again.".into(),
            "white_check_mark",
            "low",
        ),
        "system_alert" => (
            "System alert".into(),
            match event.data.get("message").and_then(Value::as_str) {
                Some(message) => message.to_string(),
                None => crate::json::text(&event.data),
            },
            "rotating_light",
            "high",
        ),
        other => {
            let mut title = other.replace('_', " ");
            if let Some(first) = title.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            let message = if event.data.is_empty() {
                format!("{title}.")
            } else {
                crate::json::text(&event.data)
            };
            (title, message, "house", "default")
        }
    }
}

fn as_ntfy(event: &Event, cx: &Context<'_>) -> Request {
    let (title, message, tag, priority) = describe(event);
    let mut headers = vec![
        ("Content-Type", "text/plain; charset=utf-8".into()),
        ("Title", format!("{title} - {}", cx.device_id)),
        ("Tags", format!("{tag},{}", event.event_type)),
        ("Priority", priority.into()),
        ("X-Porchlight-Event-Id", event.id.to_string()),
    ];
    if let Some(base) = cx.public_url {
        headers.push(("Click", format!("{base}/")));
        if let Some(path) = event.snapshot_url() {
            headers.push(("Attach", format!("{base}{path}")));
        }
    }
    Request {
        headers,
        body: message.into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, data: Value, has_snapshot: bool) -> Event {
        let Value::Object(data) = data else { panic!() };
        Event {
            id: 42,
            event_type: event_type.into(),
            timestamp: 1.5,
            source: "gpio".into(),
            data,
            has_snapshot,
            clip_file: None,
        }
    }

    const CX: Context<'static> = Context {
        public_url: Some("http://door.local:8080"),
        device_id: "front",
    };

    fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
        request
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn json_makes_urls_absolute_and_keeps_the_rest() {
        let e = event("doorbell_pressed", json!({"k": 1}), true);
        let mut object = e.to_json();
        object["clip_url"] = json!("/api/events/42/clip.mjpeg");
        let request = build(Format::Json, &e, &object.to_string(), &CX);
        let sent: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            sent["snapshot_url"],
            "http://door.local:8080/api/events/42/snapshot.jpg"
        );
        assert_eq!(
            sent["clip_url"],
            "http://door.local:8080/api/events/42/clip.mjpeg"
        );
        assert_eq!(sent["id"], 42);
        assert_eq!(sent["data"]["k"], 1);
        assert_eq!(header(&request, "Content-Type"), Some("application/json"));
        // Without public_url: exactly the event as streams send it.
        let plain = Context {
            public_url: None,
            device_id: "front",
        };
        let json = e.to_json().to_string();
        assert_eq!(build(Format::Json, &e, &json, &plain).body, json.as_bytes());
    }

    #[test]
    fn ntfy_rings_with_title_tags_click_and_attach() {
        let e = event("doorbell_pressed", json!({}), true);
        let request = build(Format::Ntfy, &e, "", &CX);
        assert_eq!(request.body, b"Someone rang the doorbell.");
        assert_eq!(header(&request, "Title"), Some("Doorbell - front"));
        assert_eq!(header(&request, "Tags"), Some("bell,doorbell_pressed"));
        assert_eq!(header(&request, "Priority"), Some("high"));
        assert_eq!(header(&request, "Click"), Some("http://door.local:8080/"));
        assert_eq!(
            header(&request, "Attach"),
            Some("http://door.local:8080/api/events/42/snapshot.jpg")
        );
        let without_picture = build(
            Format::Ntfy,
            &event("camera_offline", json!({}), false),
            "",
            &CX,
        );
        assert_eq!(header(&without_picture, "Attach"), None);
        let plain = Context {
            public_url: None,
            device_id: "front",
        };
        let no_links = build(Format::Ntfy, &e, "", &plain);
        assert_eq!(header(&no_links, "Click"), None);
        assert_eq!(header(&no_links, "Attach"), None);
    }

    #[test]
    fn ntfy_headers_never_carry_event_data() {
        let e = event("face_recognized", json!({"who": "Eve\r\nX-Evil: 1"}), false);
        let request = build(Format::Ntfy, &e, "", &CX);
        assert_eq!(header(&request, "Title"), Some("Face recognized - front"));
        for (_, value) in &request.headers {
            assert!(!value.contains(['\r', '\n']), "{value}");
        }
        assert!(String::from_utf8(request.body).unwrap().contains("Eve"));
        let motion = build(
            Format::Ntfy,
            &event("motion_detected", json!({"score": 0.4567}), true),
            "",
            &CX,
        );
        assert_eq!(motion.body, b"Motion at the door (score 0.46).");
    }
}
