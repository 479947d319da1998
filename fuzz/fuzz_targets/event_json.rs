//! Posted event validation: any body is accepted or refused with a message, never a panic; an
//! accepted event serialises to one SSE block whose data is a single line (no injected fields)
//! and whose JSON parses back to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porchlight::events::event::{Event, PublishedEvent, parse_posted_event};

fuzz_target!(|data: &[u8]| {
    let Ok(draft) = parse_posted_event(data) else {
        return;
    };
    let event = Event {
        id: 1,
        event_type: draft.event_type.clone(),
        timestamp: draft.timestamp,
        source: draft.source.clone(),
        data: draft.data.clone(),
        has_snapshot: false,
        clip_file: None,
    };
    let published = PublishedEvent::new(event.clone());
    let block = std::str::from_utf8(published.sse()).expect("SSE block is UTF-8");
    assert_eq!(
        block.matches('\n').count(),
        4,
        "event data broke out of its line: {block:?}"
    );
    assert!(block.starts_with("id: 1\nevent: "));
    // The chunk an HTTP/1.1 stream sends is that block framed: size line, block, CRLF.
    let chunk = published.sse_chunk();
    let size_line = format!("{:x}\r\n", block.len());
    assert!(chunk.starts_with(size_line.as_bytes()) && chunk.ends_with(b"\r\n"));
    assert_eq!(&chunk[size_line.len()..chunk.len() - 2], block.as_bytes());
    let back: serde_json::Value = serde_json::from_str(&published.json).unwrap();
    assert_eq!(back, event.to_json());
});
