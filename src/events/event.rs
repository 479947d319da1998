//! The event object of the contract, what producers may post, and the bytes an event is sent as.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::clip_rows::ClipPlan;

/// A stored event, as the contract shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: u64,
    pub event_type: String,
    pub timestamp: f64,
    pub source: String,
    pub data: Map<String, Value>,
    pub has_snapshot: bool,
    /// The recording holding the event's clip (being written, or written), named after the
    /// event that started it: see `crate::clips`. `None`: no clip.
    pub clip_file: Option<u64>,
}

impl Event {
    pub fn snapshot_url(&self) -> Option<String> {
        self.has_snapshot
            .then(|| format!("/api/events/{}/snapshot.jpg", self.id))
    }

    pub fn clip_url(&self) -> Option<String> {
        self.clip_file
            .is_some()
            .then(|| format!("/api/events/{}/clip.mjpeg", self.id))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "source": self.source,
            "data": self.data,
            "snapshot_url": self.snapshot_url(),
            "clip_url": self.clip_url(),
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
    /// Whether and how the event gets a clip: decided on the event writer thread as the event
    /// is stored (by the clip recorder's [`crate::events::hub::ClipSink`]), never by producers.
    pub clip: Option<ClipPlan>,
}

impl EventDraft {
    pub fn new(event_type: &str, source: &str, data: Map<String, Value>) -> EventDraft {
        EventDraft {
            event_type: event_type.to_string(),
            source: source.to_string(),
            data,
            timestamp: crate::clock::round_ms(crate::clock::unix_now()),
            snapshot: None,
            clip: None,
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
/// `data` and `source` optional. A built-in type's data has its contract's shape, and `source`
/// is not one of the server's own (`builtin.rs`). Anything else is refused with a message that
/// says what to fix.
pub fn parse_posted_event(body: &[u8]) -> Result<EventDraft, InvalidEvent> {
    let value = crate::json::parse_untrusted(body)
        .map_err(|e| InvalidEvent(format!("body is not valid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(InvalidEvent("body must be a JSON object".into()));
    };
    // An integer serde_json would store rounded is refused.
    if let Some(number) = crate::json::integer_beyond_64_bits(body) {
        return Err(InvalidEvent(format!(
            "the integer {number} is beyond 64 bits and would be stored rounded; send it as a \
             string"
        )));
    }
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
    super::builtin::check_data(&event_type, &data).map_err(InvalidEvent)?;
    let source = match object.remove("source") {
        None => "api".to_string(),
        Some(Value::String(s)) if super::builtin::RESERVED_SOURCES.contains(&s.as_str()) => {
            return Err(InvalidEvent(format!(
                "source {s:?} names one of the server's own producers (reserved: {}); name \
                 yours",
                super::builtin::RESERVED_SOURCES.join(", ")
            )));
        }
        Some(Value::String(s)) if valid_source(&s) => s,
        Some(_) => {
            return Err(InvalidEvent(
                "source must be a string matching [A-Za-z0-9_.:-]{1,64}".into(),
            ));
        }
    };
    Ok(EventDraft::new(&event_type, &source, data))
}

/// An event as it leaves the server: serialised once, on the event writer thread, and shared by
/// every client (`Arc`), so fan-out costs a pointer per client and sending costs one write.
#[derive(Debug)]
pub struct PublishedEvent {
    pub event: Event,
    /// The event object as one line of JSON (REST answers).
    pub json: String,
    /// The SSE block (`id`, `event`, `data` lines and the blank line) framed as one chunk of a
    /// chunked body: size line, block, CRLF. Every HTTP/1.1 stream sends exactly these bytes;
    /// an HTTP/1.0 one sends the block inside ([`PublishedEvent::sse`]).
    sse_chunk: Vec<u8>,
    /// Where the block starts in `sse_chunk` (after the size line).
    sse_start: usize,
    /// The WebSocket message `{"type": "live_event", "event": {...}}` as one complete text
    /// frame. Server frames are never masked, so these exact bytes are right for every
    /// WebSocket client: a session writes them as they are instead of framing a copy per client.
    pub ws_frame: Vec<u8>,
}

pub type SharedEvent = Arc<PublishedEvent>;

impl PublishedEvent {
    pub fn new(event: Event) -> PublishedEvent {
        let json = crate::json::text(&event.to_json());
        let block = sse_block(&event, &json);
        let size_line = format!("{:x}\r\n", block.len());
        let mut sse_chunk = Vec::with_capacity(size_line.len() + block.len() + 2);
        sse_chunk.extend_from_slice(size_line.as_bytes());
        sse_chunk.extend_from_slice(&block);
        sse_chunk.extend_from_slice(b"\r\n");
        let ws_frame = live_event_frame(&json);
        PublishedEvent {
            event,
            json,
            sse_chunk,
            sse_start: size_line.len(),
            ws_frame,
        }
    }

    /// The SSE block: `id`, `event`, `data` lines and the blank line.
    pub fn sse(&self) -> &[u8] {
        &self.sse_chunk[self.sse_start..self.sse_chunk.len() - 2]
    }

    /// The SSE block as one chunk of a chunked HTTP/1.1 body.
    pub fn sse_chunk(&self) -> &[u8] {
        &self.sse_chunk
    }
}

/// The SSE block of `event` whose one-line JSON is `json`. Also used on its own by a replay,
/// which needs only the form its client speaks.
pub fn sse_block(event: &Event, json: &str) -> Vec<u8> {
    format!(
        "id: {}\nevent: {}\ndata: {json}\n\n",
        event.id, event.event_type
    )
    .into_bytes()
}

/// The WebSocket `live_event` message for the event whose one-line JSON is `json`, as one
/// complete text frame.
pub fn live_event_frame(json: &str) -> Vec<u8> {
    websocket_text_frame(format!(r#"{{"type":"live_event","event":{json}}}"#))
}

/// `text` as one final, unmasked WebSocket text frame (what a server sends).
fn websocket_text_frame(text: String) -> Vec<u8> {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let frame = Frame::message(text.into_bytes(), OpCode::Data(Data::Text), true);
    let mut bytes = Vec::with_capacity(frame.len());
    frame
        .format(&mut bytes)
        .expect("writing a frame into a Vec cannot fail");
    bytes
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
            br#"{"event_type":"ok","source":"camera"}"#,
            br#"{"event_type":"motion_detected","data":{"score":"garbage"}}"#,
            br#"{"event_type":"motion_detected","data":{"box":[0,0,2,2]}}"#,
            br#"{"event_type":"motion_ended","data":{"motion_event_id":0}}"#,
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
            clip_file: None,
        });
        let text = String::from_utf8(published.sse().to_vec()).unwrap();
        assert!(text.starts_with("id: 7\nevent: doorbell_pressed\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 4);
        let object: Value = serde_json::from_str(&published.json).unwrap();
        assert_eq!(object["id"], 7);
        // The chunk is the block with its size line and CRLF: what a chunked body sends.
        let chunk = published.sse_chunk();
        let size_line = format!("{:x}\r\n", text.len());
        assert_eq!(&chunk[..size_line.len()], size_line.as_bytes());
        assert_eq!(&chunk[size_line.len()..chunk.len() - 2], text.as_bytes());
        assert!(chunk.ends_with(b"\r\n"));
        assert!(object["snapshot_url"].is_null());
        assert!(object["clip_url"].is_null());
    }

    #[test]
    fn ws_frame_is_one_unmasked_text_frame_of_the_live_event() {
        let event = |data_len: usize| {
            let mut data = Map::new();
            data.insert("pad".into(), Value::String("x".repeat(data_len)));
            PublishedEvent::new(Event {
                id: 9,
                event_type: "motion_detected".into(),
                timestamp: 2.0,
                source: "api".into(),
                data,
                has_snapshot: true,
                clip_file: Some(9),
            })
        };
        // A 16-bit and a 64-bit payload length.
        for published in [event(10), event(70_000)] {
            let frame = &published.ws_frame;
            assert_eq!(frame[0], 0x81, "FIN + text opcode");
            assert_eq!(frame[1] & 0x80, 0, "a server frame is not masked");
            let (declared, header_len) = match frame[1] & 0x7f {
                126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                short => (short as usize, 2),
            };
            let payload = &frame[header_len..];
            assert_eq!(declared, payload.len());
            let message: Value = serde_json::from_slice(payload).unwrap();
            assert_eq!(message["type"], "live_event");
            assert_eq!(
                message["event"],
                serde_json::from_str::<Value>(&published.json).unwrap()
            );
            assert_eq!(
                message["event"]["snapshot_url"],
                "/api/events/9/snapshot.jpg"
            );
            assert_eq!(message["event"]["clip_url"], "/api/events/9/clip.mjpeg");
        }
    }
}
