//! A WebSocket client for the tests: tungstenite's own client handshake, as any library client
//! would connect, then text messages as JSON.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use super::http::connect;

pub type Ws = tungstenite::WebSocket<TcpStream>;

/// A session on `/ws?QUERY`, past its `connected` message. Reads give up after 30 s, so a
/// message that never comes fails the test instead of hanging it.
pub fn ws_connect(port: u16, query: &str) -> Ws {
    let stream = connect(port);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws?{query}");
    let (mut ws, response) = tungstenite::client::client(url.as_str(), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake to {url}: {e}"));
    assert_eq!(response.status().as_u16(), 101);
    let hello = ws_next(&mut ws);
    assert_eq!(hello["type"], "connected", "{hello}");
    ws
}

/// The next text message (pings and pongs skipped).
pub fn ws_next_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("WebSocket message") {
            tungstenite::Message::Text(text) => return text.to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

/// The next text message as JSON.
pub fn ws_next(ws: &mut Ws) -> Value {
    serde_json::from_str(&ws_next_text(ws)).unwrap()
}
