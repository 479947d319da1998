//! The WebSocket session's own mechanics, seen from outside: what a connection costs in threads,
//! bytes sent together with the handshake, and many messages in one packet. (The contract's
//! messages, close codes and client libraries are tested in tests/python.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;
use tungstenite::protocol::Role;

use crate::common::*;

type Ws = tungstenite::WebSocket<TcpStream>;

fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a WebSocket message") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.into())).unwrap();
}

fn open(port: u16) -> Ws {
    let stream = connect(port);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let (mut ws, response) = tungstenite::client::client(url.as_str(), stream).unwrap();
    assert_eq!(response.status().as_u16(), 101);
    assert_eq!(next_json(&mut ws)["type"], "connected");
    ws
}

/// A masked client text frame (RFC 6455 §5.3), for payloads under 126 bytes.
fn client_frame(text: &str) -> Vec<u8> {
    raw_frame(0x81, text.as_bytes())
}

/// A masked client frame with its first byte (FIN and opcode) as given.
fn raw_frame(first: u8, text: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let len = u8::try_from(text.len()).unwrap();
    assert!(len < 126);
    let mut frame = vec![first, 0x80 | len];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn handshake(port: u16) -> Vec<u8> {
    format!(
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Reads the 101 answer's head byte by byte (so nothing after it is taken) and returns the
/// stream as a client WebSocket.
fn after_head(mut stream: TcpStream) -> Ws {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tungstenite::WebSocket::from_raw_socket(stream, Role::Client, None)
}

fn expect_pongs(ws: &mut Ws, count: usize) {
    for i in 0..count {
        let message = next_json(ws);
        assert_eq!(message["type"], "pong", "message {i}: {message}");
    }
}

/// Each WebSocket client costs the server one thread (its connection's), not two; all of them
/// get a live event; and the threads go when the clients do.
#[test]
fn each_websocket_client_costs_one_thread() {
    const CLIENTS: usize = 20;
    let server = Server::start(&[]);
    let port = server.port();
    let before = threads(server.pid());
    let mut clients: Vec<Ws> = (0..CLIENTS).map(|_| open(port)).collect();
    for ws in &mut clients {
        send(
            ws,
            r#"{"type":"subscribe","event_types":["doorbell_pressed"]}"#,
        );
        assert_eq!(next_json(ws)["type"], "subscribed");
    }
    let with_clients = threads(server.pid());
    // Exact ceiling (a thread per client; the harness's own earlier connection may still be
    // ending, which can only lower the count), loose floor.
    assert!(
        with_clients <= before + CLIENTS,
        "{CLIENTS} WebSocket clients took {} threads",
        with_clients.saturating_sub(before)
    );
    assert!(
        with_clients + 2 >= before + CLIENTS,
        "{before} threads before, {with_clients} with {CLIENTS} clients"
    );
    let event = trigger(port, None);
    for ws in &mut clients {
        let message = next_json(ws);
        assert_eq!(message["type"], "live_event", "{message}");
        assert_eq!(message["event"]["id"], event["id"]);
    }
    // Every session's descriptors (socket, the fan-out's handle, eventfd) go with it; the
    // shutdown eventfd, made by the first session, stays.
    let fds_with_clients = open_fds(server.pid());
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads(server.pid()) > before || open_fds(server.pid()) > fds_with_clients - 3 * CLIENTS
    {
        assert!(
            Instant::now() < deadline,
            "{} threads and {} descriptors left after the clients went, {before} threads before",
            threads(server.pid()),
            open_fds(server.pid())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client may send its first messages in the same packet as its handshake: the server read
/// them together with the request head, and they must still be answered, all of them, though
/// there are more than the session answers in one turn.
#[test]
fn messages_sent_with_the_handshake_are_answered() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut packet = handshake(port);
    for _ in 0..40 {
        packet.extend(client_frame(r#"{"type":"ping"}"#));
    }
    let mut stream = connect(port);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&packet).unwrap();
    let mut ws = after_head(stream);
    assert_eq!(next_json(&mut ws)["type"], "connected");
    expect_pongs(&mut ws, 40);
}

/// Many messages in one packet, later in the session: all are answered, also those tungstenite
/// read ahead while the session answered the first ones (a `poll` on the socket cannot see
/// them).
#[test]
fn a_burst_of_messages_in_one_packet_is_answered_in_full() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut ws = open(port);
    let burst: Vec<u8> = (0..100)
        .flat_map(|_| client_frame(r#"{"type":"ping"}"#))
        .collect();
    ws.get_mut().write_all(&burst).unwrap();
    expect_pongs(&mut ws, 100);
    // The session still waits for more.
    send(&mut ws, r#"{"type":"ping"}"#);
    expect_pongs(&mut ws, 1);
}

/// The session lets go of tungstenite's state while it waits between messages, and must not
/// while a message is only partly sent: a message in two fragments, with a ping between them
/// whose pong shows the server handled the first fragment and went back to waiting, is
/// answered whole (a fresh protocol state would take the second fragment for a protocol error);
/// and so is a frame that arrives in two pieces.
#[test]
fn a_message_split_across_waits_is_answered_whole() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut ws = open(port);
    let stream = ws.get_mut();
    // Text frame without FIN, a ping, then the final continuation frame.
    stream.write_all(&raw_frame(0x01, b"{\"type\":")).unwrap();
    stream.write_all(&raw_frame(0x89, b"between")).unwrap();
    match ws.read().expect("the pong") {
        Message::Pong(payload) => assert_eq!(&payload[..], b"between"),
        other => panic!("expected the pong, got {other:?}"),
    }
    ws.get_mut()
        .write_all(&raw_frame(0x80, b"\"ping\"}"))
        .unwrap();
    expect_pongs(&mut ws, 1);
    // One frame in two writes; no signal shows the server read the first piece, so the pause
    // only gives it the chance to (the answer is checked either way).
    let frame = client_frame(r#"{"type":"ping"}"#);
    let (first, rest) = frame.split_at(5);
    ws.get_mut().write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    ws.get_mut().write_all(rest).unwrap();
    expect_pongs(&mut ws, 1);
}

/// A session that panics while it runs (deep in its loop, from its connection thread's
/// outermost frame) gives everything back as the thread unwinds: its thread, its descriptors
/// (the socket, the fan-out's handle on it, its eventfd), its slot; and the client sees the
/// connection end.
#[test]
fn a_session_that_panics_leaks_no_descriptor_thread_or_slot() {
    const CLIENTS: usize = 10;
    let server = Server::try_start_wrapped(&["env", "PORCHLIGHT_TEST_PANIC=session:/ws"], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let port = server.port();
    let pid = server.pid();
    let series = "porchlight_clients{kind=\"websocket\"}";
    let no_session = |what: &str| {
        let left = wait_metric(port, None, series, Duration::from_secs(10), |v| v == 0.0);
        assert_eq!(left, Some(0.0), "{what}: WebSocket slots leaked");
    };
    // A first session makes the shutdown eventfd (once per process); it panics too, at the
    // hang-up. After it the baseline is steady.
    drop(open(port));
    no_session("after the first client");
    let (fds, threads_before) = (open_fds(pid), threads(pid));
    let mut clients: Vec<Ws> = (0..CLIENTS).map(|_| open(port)).collect();
    assert!(
        open_fds(pid) >= fds + 2 * CLIENTS,
        "each session holds descriptors"
    );
    for ws in &mut clients {
        send(ws, r#"{"type":"ping"}"#);
        // The panic ends the connection: no answer, the stream just ends.
        match ws.read() {
            Err(_) | Ok(Message::Close(_)) => {}
            Ok(other) => panic!("the session answered {other:?} instead of panicking"),
        }
    }
    no_session("after panicking sessions");
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > fds || threads(pid) > threads_before {
        assert!(
            Instant::now() < deadline,
            "{} descriptors and {} threads left, {fds} and {threads_before} before",
            open_fds(pid),
            threads(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The last panic's line may still be in the pipe to the test's log reader: wait for it.
    let panic_line = "panic while answering GET \"/ws\"";
    let log = server.wait_stderr(|log| log.matches(panic_line).count() > CLIENTS);
    assert_eq!(log.matches(panic_line).count(), CLIENTS + 1, "{log}");
    drop(clients);
}
