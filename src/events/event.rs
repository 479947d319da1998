//! The event object of the contract, what producers may post, and the bytes an event is sent as.

use std::sync::Arc;

use serde_json::{Map, Value, json};

/// A stored event, as the contract shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: u64,
    pub event_type: String,
    pub timestamp: f64,
    pub source: String,
    pub data: Map<String, Value>,
    pub has_snapshot: bool,
}

impl Event {
    pub fn snapshot_url(&self) -> Option<String> {
        self.has_snapshot
            .then(|| format!("/api/events/{}/snapshot.jpg", self.id))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "source": self.source,
            "data": self.data,
            "snapshot_url": self.snapshot_url(),
        })
    }
}

/// An event before the store gives it an id.
#[derive(Clone, Debug)]
pub struct EventDraft {
    pub event_type: String,
    pub source: String,
    pub data: Map<String, Value>,
    pub timestamp: f64,
    /// The JPEG of the moment, stored next to the event.
    pub snapshot: Option<Arc<Vec<u8>>>,
}

impl EventDraft {
    pub fn new(event_type: &str, source: &str, data: Map<String, Value>) -> EventDraft {
        EventDraft {
            event_type: event_type.to_string(),
            source: source.to_string(),
            data,
            timestamp: crate::clock::round_ms(crate::clock::unix_now()),
            snapshot: None,
        }
    }
}

/// Largest `POST /api/events` body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// `[a-z0-9_]{1,64}`.
pub fn valid_event_type(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `[A-Za-z0-9_.:-]{1,64}`: names a producer in logs and the dashboard.
fn valid_source(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// Why a posted event was refused; the text is shown to the producer as the error message.
#[derive(Debug, PartialEq)]
pub struct InvalidEvent(pub String);

/// Validates a `POST /api/events` body: `{"event_type": T, "data": {...}, "source": S}` with
/// `data` and `source` optional. Anything else is refused with a message that says what to fix.
pub fn parse_posted_event(body: &[u8]) -> Result<EventDraft, InvalidEvent> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| InvalidEvent(format!("body is not valid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(InvalidEvent("body must be a JSON object".into()));
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !["event_type", "data", "source"].contains(&k.as_str()))
    {
        return Err(InvalidEvent(format!(
            "unknown field {unknown:?} (allowed: event_type, data, source)"
        )));
    }
    let event_type = match object.remove("event_type") {
        Some(Value::String(t)) if valid_event_type(&t) => t,
        Some(Value::String(t)) => {
            return Err(InvalidEvent(format!(
                "event_type {t:?} must match [a-z0-9_]{{1,64}}"
            )));
        }
        Some(_) => return Err(InvalidEvent("event_type must be a string".into())),
        None => return Err(InvalidEvent("event_type is required".into())),
    };
    let data = match object.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(InvalidEvent("data must be a JSON object".into())),
    };
    let source = match object.remove("source") {
        None => "api".to_string(),
        Some(Value::String(s)) if valid_source(&s) => s,
        Some(_) => {
            return Err(InvalidEvent(
                "source must be a string matching [A-Za-z0-9_.:-]{1,64}".into(),
            ));
        }
    };
    Ok(EventDraft::new(&event_type, &source, data))
}

/// An event as it leaves the server: serialised once, shared by every client (`Arc`).
/// (The WebSocket's `live_event` text joins these bytes when the WebSocket lands.)
#[derive(Debug)]
pub struct PublishedEvent {
    pub event: Event,
    /// The event object as one line of JSON (REST answers, WebSocket `live_event`).
    pub json: String,
    /// The whole SSE block: `id`, `event`, `data` lines and the blank line.
    pub sse: Vec<u8>,
}

pub type SharedEvent = Arc<PublishedEvent>;

impl PublishedEvent {
    pub fn new(event: Event) -> PublishedEvent {
        let json = event.to_json().to_string();
        let sse = format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            event.id, event.event_type, json
        )
        .into_bytes();
        PublishedEvent { event, json, sse }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        assert!(valid_event_type("doorbell_pressed"));
        assert!(valid_event_type("a1"));
        assert!(!valid_event_type(""));
        assert!(!valid_event_type("Doorbell"));
        assert!(!valid_event_type("door-bell"));
        assert!(!valid_event_type(&"a".repeat(65)));
    }

    #[test]
    fn posted_events() {
        let draft =
            parse_posted_event(br#"{"event_type":"face_recognized","data":{"who":"x"}}"#).unwrap();
        assert_eq!(draft.event_type, "face_recognized");
        assert_eq!(draft.source, "api");
        assert_eq!(draft.data["who"], "x");
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"event_type":5}"#,
            br#"{"event_type":"BAD"}"#,
            br#"{"event_type":"ok","data":[]}"#,
            br#"{"event_type":"ok","extra":1}"#,
            br#"{"event_type":"ok","source":"has space"}"#,
        ] {
            assert!(
                parse_posted_event(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn sse_block_is_one_data_line() {
        let mut data = Map::new();
        data.insert("note".into(), Value::String("two\nlines".into()));
        let published = PublishedEvent::new(Event {
            id: 7,
            event_type: "doorbell_pressed".into(),
            timestamp: 1.5,
            source: "api".into(),
            data,
            has_snapshot: false,
        });
        let text = String::from_utf8(published.sse.clone()).unwrap();
        assert!(text.starts_with("id: 7\nevent: doorbell_pressed\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 4);
        let object: Value = serde_json::from_str(&published.json).unwrap();
        assert_eq!(object["id"], 7);
        assert!(object["snapshot_url"].is_null());
    }
}
