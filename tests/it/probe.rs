//! Black-box probes of the release contract (API.md) that found defects: a client that says one
//! thing twice with different values (a JSON key, a query parameter, a header) must be refused,
//! not read whichever way a parser happens to settle it, and must change nothing.

use std::io::{BufReader, Read, Write};

use serde_json::{Value, json};
use tungstenite::Message;

use crate::common::*;

/// A server with a token for each role (so every route checks one).
fn start_with_tokens() -> Server {
    let args: Vec<String> = [("viewer", VIEWER), ("control", CONTROL), ("admin", ADMIN)]
        .iter()
        .flat_map(|(role, token)| ["--token".to_string(), format!("{role}:{token}")])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

fn ws_exchange(ws: &mut Ws, text: &str) -> Value {
    ws.send(Message::Text(text.into())).unwrap();
    ws_next(ws)
}

fn stored(port: u16) -> u64 {
    get(port, "/api/status", Some(ADMIN)).json()["events"]["stored"]
        .as_u64()
        .expect("events.stored")
}

/// The status of `GET path` and, unless it is a 200 (which may be an endless stream), its body.
fn refusal_of(port: u16, path: &str) -> (u16, String) {
    let mut stream = connect(port);
    write_request(&mut stream, "GET", path, &[("Connection", "close")], b"").unwrap();
    let mut reader = BufReader::new(stream);
    let (status, _, _) = read_head(&mut reader).unwrap();
    let mut body = String::new();
    if status != 200 {
        reader.read_to_string(&mut body).unwrap();
    }
    (status, body)
}

#[test]
fn a_json_key_named_twice_is_refused_on_every_json_input_and_changes_nothing() {
    let server = start_with_tokens();
    let port = server.port();
    let before = stored(port);

    // REST: an event whose type (or any key, at any depth) is given twice is not stored as
    // whichever one the parser kept.
    for body in [
        r#"{"event_type": "harmless", "event_type": "doorbell_pressed"}"#,
        r#"{"event_type": "x", "data": {"k": 1, "k": 2}}"#,
        r#"{"event_type": "x", "data": {"list": [{"a": 1, "a": 1}]}}"#,
        r#"{"event_type": "x", "source": "a", "source": "b"}"#,
    ] {
        let resp = post(port, "/api/events", Some(ADMIN), body);
        resp.assert_error(400);
        assert!(
            resp.json()["message"]
                .as_str()
                .unwrap()
                .contains("appears twice"),
            "{body}: {:?}",
            resp.text()
        );
    }
    assert_eq!(stored(port), before, "a refused post was stored");
    // The same key in sibling objects is ordinary JSON.
    let resp = post(
        port,
        "/api/events",
        Some(ADMIN),
        r#"{"event_type": "x", "data": {"a": {"k": 1}, "b": {"k": 2}}}"#,
    );
    assert_eq!(resp.status, 201, "{:?}", resp.text());
    assert_eq!(resp.json()["data"], json!({"a": {"k": 1}, "b": {"k": 2}}));

    // Login: a body naming two tokens logs nobody in.
    let body = format!(r#"{{"token": "{VIEWER}", "token": "{ADMIN}"}}"#);
    let resp = post(port, "/api/login", None, &body);
    resp.assert_error(400);
    assert!(resp.header("Set-Cookie").is_none());

    // WebSocket: refused as bad JSON, and the session goes on.
    let mut ws = ws_connect(port, &format!("token={CONTROL}"));
    for text in [
        r#"{"type": "ping", "type": "subscribe", "event_types": ["*"]}"#,
        r#"{"type": "system_command", "command": "get_system_status", "command": "trigger_doorbell", "request_id": 7}"#,
        r#"{"type": "subscribe", "event_types": ["x"], "event_types": ["*"]}"#,
    ] {
        let reply = ws_exchange(&mut ws, text);
        assert_eq!(reply["type"], "error", "{text}: {reply}");
        assert_eq!(reply["code"], "bad_json", "{text}: {reply}");
    }
    assert_eq!(ws_exchange(&mut ws, r#"{"type": "ping"}"#)["type"], "pong");
    // Nothing was subscribed and nothing rang: the next event is not sent to this session,
    // and the store holds only the one valid post.
    assert_eq!(stored(port), before + 1);
    let reply = ws_exchange(&mut ws, r#"{"type": "subscribe", "event_types": ["y"]}"#);
    assert_eq!(reply["type"], "subscribed");
    post_event(port, Some(ADMIN), "x", json!({}));
    post_event(port, Some(ADMIN), "y", json!({}));
    let live = ws_next(&mut ws);
    assert_eq!(live["type"], "live_event");
    assert_eq!(live["event"]["event_type"], "y", "{live}");
}

#[test]
fn a_query_parameter_or_header_given_twice_with_different_values_is_a_400() {
    let server = start_with_tokens();
    let port = server.port();
    let before = stored(port);
    let admin = format!("Bearer {ADMIN}");
    let viewer = format!("Bearer {VIEWER}");

    // Every route, before anything else is looked at: a value a check accepted must be the
    // value used.
    for path in [
        "/api/events?limit=2&limit=abc".to_string(),
        "/api/events?after=0&after=18446744073709551616".to_string(),
        format!("/api/status?token={VIEWER}&token=wrong-token-9999"),
        format!("/api/status?token=wrong-token-9999&token={VIEWER}"),
        format!("/stream/events?token={VIEWER}&types=a&types=b"),
        format!("/stream/video?token={VIEWER}&quality=low&quality=bogus"),
        format!("/api/snapshot.jpg?token={VIEWER}&quality=low&quality=high"),
        format!("/ws?token={VIEWER}&last_event_id=1&last_event_id=2"),
        format!("/stream/video/door-1?token={VIEWER}&client_id=door-2"),
    ] {
        let (status, body) = refusal_of(port, &path);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("twice"), "{path}: {body}");
    }
    // A query of thousands of parameters is refused before any pair is compared; 32 pass.
    let (status, body) = refusal_of(port, &format!("/api/status?{}", "a&".repeat(3000)));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than 32 query parameters"), "{body}");
    let resp = get(
        port,
        &format!("/api/status?{}token={ADMIN}", "a=1&".repeat(31)),
        None,
    );
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    // The same value twice is only repetition.
    let resp = get(
        port,
        &format!("/api/events?limit=2&limit=2&token={ADMIN}"),
        None,
    );
    assert_eq!(resp.status, 200, "{:?}", resp.text());

    // Two different tokens: neither is taken, whatever their order.
    for (first, second) in [(&viewer, &admin), (&admin, &viewer)] {
        let resp = request(
            port,
            "POST",
            "/api/trigger-doorbell",
            &[("Authorization", first), ("Authorization", second)],
            b"",
        );
        resp.assert_error(400);
    }
    // Two different origins on a POST: the one the origin check read is not the one to trust.
    let body = br#"{"event_type": "cross_site"}"#;
    let resp = request(
        port,
        "POST",
        "/api/events",
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json"),
            ("Origin", "http://127.0.0.1"),
            ("Origin", "http://evil.example"),
        ],
        body,
    );
    resp.assert_error(400);
    // Two different content types.
    let resp = request(
        port,
        "POST",
        "/api/events",
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json"),
            ("Content-Type", "text/plain"),
        ],
        body,
    );
    resp.assert_error(400);
    assert_eq!(
        stored(port),
        before,
        "an ambiguous request changed the store"
    );
    // A WebSocket handshake with two keys: no upgrade answering one of them.
    let resp = request(
        port,
        "GET",
        &format!("/ws?token={VIEWER}"),
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ],
        b"",
    );
    resp.assert_error(400);

    // A header repeated with the same value is fine.
    let resp = request(
        port,
        "POST",
        "/api/trigger-doorbell",
        &[("Authorization", &admin), ("Authorization", &admin)],
        b"",
    );
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert_eq!(stored(port), before + 1);
}

#[test]
fn an_empty_line_before_a_request_is_ignored_as_rfc_9112_asks() {
    let server = Server::start(&[]);
    let port = server.port();
    let stream = connect(port);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // A client that ends its POST body with an extra CRLF, then sends its next request on the
    // same connection: both are answered and the connection stays usable.
    let body = r#"{"event_type": "crlf_after_body"}"#;
    write!(
        writer,
        "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}\r\n",
        body.len()
    )
    .unwrap();
    let posted = read_response(&mut reader, "POST").unwrap();
    assert_eq!(posted.status, 201, "{:?}", posted.text());
    writer
        .write_all(b"GET /api/events?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let listed = read_response(&mut reader, "GET").unwrap();
    assert_eq!(listed.status, 200, "{:?}", listed.text());
    assert_eq!(listed.json()["events"][0]["event_type"], "crlf_after_body");
    // Two empty lines are still a slip; a run of them is not a request (400, closed).
    writer
        .write_all(b"\r\n\r\nGET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut reader, "GET").unwrap().status, 200);
    writer
        .write_all(b"\r\n\r\n\r\n\r\nGET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    read_response(&mut reader, "GET").unwrap().assert_error(400);
}

#[test]
fn a_websocket_handshake_over_http_1_0_is_refused_not_upgraded() {
    let server = Server::start(&[]);
    let port = server.port();
    let handshake = |version: &str| {
        let mut stream = connect(port);
        write!(
            stream,
            "GET /ws {version}\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .unwrap();
        read_head(&mut BufReader::new(stream)).unwrap().0
    };
    assert_eq!(handshake("HTTP/1.0"), 426);
    assert_eq!(handshake("HTTP/1.1"), 101);
}
