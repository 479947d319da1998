//! WebSocket client messages: any text is a valid message or a refusal with an error code,
//! never a panic (deep nesting included); the `error` reply to a refusal is valid JSON that
//! echoes the request id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porchlight::http::ws::protocol::{self, ClientMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::parse(text) {
        Ok(ClientMessage::Subscribe(types) | ClientMessage::Unsubscribe(types)) => {
            assert!(!types.is_empty());
            let reply: serde_json::Value =
                serde_json::from_str(&protocol::subscription_changed("subscribed", &types, None))
                    .expect("subscribed reply is JSON");
            assert_eq!(
                reply["event_types"].as_array().map(Vec::len),
                Some(types.len())
            );
        }
        Ok(_) => {}
        Err(refusal) => {
            let reply: serde_json::Value =
                serde_json::from_str(&protocol::error(&refusal)).expect("error reply is JSON");
            assert_eq!(reply["type"], "error");
            assert_eq!(reply["code"], refusal.code.as_str());
            if let Some(id) = &refusal.request_id {
                let sent: serde_json::Value =
                    serde_json::from_str(id.text()).expect("a request id is JSON as sent");
                assert_eq!(reply["request_id"], sent);
            }
        }
    }
});
