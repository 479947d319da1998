//! Benchmark WebSocket clients: event receivers (subscribed to `bench`, recorded like SSE
//! clients) and a commander that times `get_system_status` round-trips.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use serde_json::Value;
use tungstenite::{Message, WebSocket};

use crate::record::{ClientReport, number_after};

pub type Socket = WebSocket<TcpStream>;

fn open(addr: SocketAddr, client_id: &str, token_query: &str) -> Result<Socket, String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).ok();
    // Short enough to notice `stop`, long enough not to spin.
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok();
    let mut socket = upgrade(
        stream,
        addr,
        &format!("/ws?client_id={client_id}{token_query}"),
    )?;
    let hello = read_json(&mut socket, None)?;
    if hello["type"] != "connected" {
        return Err(format!("expected connected, got {hello}"));
    }
    Ok(socket)
}

/// The client's side of the opening handshake (RFC 6455 §4.1): the GET with its upgrade
/// headers, then the server's `101` head, whose `Sec-WebSocket-Accept` must answer our key.
/// Written here because the server's binary is built without tungstenite's `handshake`
/// feature (which would bring `tungstenite::client`), and a benchmark binary shares it.
/// Bytes after the head (the server's `connected` message may come in the same read) go to
/// the session.
fn upgrade(mut stream: TcpStream, addr: SocketAddr, path: &str) -> Result<Socket, String> {
    use std::io::{Read, Write};
    // Any 16 bytes will do for a benchmark; the server only checks their form.
    const KEY: &str = "cG9yY2hsaWdodGJlbmNoIQ==";
    const ACCEPT: &str = "Sec-WebSocket-Accept: ";
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if received.len() > 16 * 1024 {
            return Err("the upgrade answer's head is over 16 KiB".into());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("closed during the upgrade".into()),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading the upgrade answer: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&received[..end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        return Err(format!(
            "upgrade refused: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    let expected = porchlight::http::ws::derive_accept(KEY);
    let answered = head
        .lines()
        .find_map(|line| line.strip_prefix(ACCEPT))
        .map(str::trim);
    if answered != Some(expected.as_str()) {
        return Err(format!(
            "Sec-WebSocket-Accept {answered:?}, expected {expected}"
        ));
    }
    Ok(WebSocket::from_partially_read(
        stream,
        received[end..].to_vec(),
        tungstenite::protocol::Role::Client,
        None,
    ))
}

/// The next text message as JSON; `Ok(Value::Null)` when the read timed out and `stop` is set.
fn read_json(socket: &mut Socket, stop: Option<&AtomicBool>) -> Result<Value, String> {
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => {
                return serde_json::from_str(&text).map_err(|e| e.to_string());
            }
            Ok(Message::Close(frame)) => return Err(format!("closed by the server: {frame:?}")),
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return Ok(Value::Null);
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The next text message, unparsed; `Ok(None)` when the read timed out (so the caller can
/// look at its stop flag) or the message was not text.
fn read_text(socket: &mut Socket) -> Result<Option<String>, String> {
    match socket.read() {
        Ok(Message::Text(text)) => Ok(Some(text)),
        Ok(Message::Close(frame)) => Err(format!("closed by the server: {frame:?}")),
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// A session subscribed to `bench`, its `subscribed` answer read.
pub fn open_subscribed(
    addr: SocketAddr,
    client: usize,
    token_query: &str,
) -> Result<Socket, String> {
    let mut socket = open(addr, &format!("bench-ws-{client}"), token_query)?;
    socket
        .send(Message::Text(
            r#"{"type":"subscribe","event_types":["bench"]}"#.into(),
        ))
        .map_err(|e| e.to_string())?;
    let answer = read_json(&mut socket, None)?;
    if answer["type"] != "subscribed" {
        return Err(format!("expected subscribed, got {answer}"));
    }
    Ok(socket)
}

/// One receiving client: subscribe to `bench`, report ready, record until `expected` events.
pub fn receive(
    addr: SocketAddr,
    client: usize,
    token_query: &str,
    expected: Arc<AtomicUsize>,
    ready: Sender<Result<(), String>>,
    stop: Arc<AtomicBool>,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut socket = match open_subscribed(addr, client, token_query) {
        Ok(socket) => socket,
        Err(err) => {
            ready.send(Err(err.clone())).ok();
            report.error = Some(err);
            return report;
        }
    };
    ready.send(Ok(())).ok();
    while report.received < expected.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        match read_text(&mut socket) {
            Ok(Some(text)) if text.starts_with(r#"{"type":"live_event""#) => {
                let id = number_after(&text, r#""id":"#).unwrap_or(0);
                report.record_sent(id, number_after(&text, r#""sent_ns":"#));
            }
            Ok(_) => {}
            Err(err) => {
                report.error = Some(err);
                break;
            }
        }
    }
    socket.close(None).ok();
    report
}

/// Times `count` `get_system_status` commands on one connection (nanoseconds each).
pub fn command_round_trips(
    addr: SocketAddr,
    token_query: &str,
    count: usize,
) -> Result<Vec<u64>, String> {
    let mut socket = open(addr, "bench-commander", token_query)?;
    let mut samples = Vec::with_capacity(count);
    for n in 0..count {
        let started = Instant::now();
        let command = format!(
            r#"{{"type":"system_command","command":"get_system_status","params":{{}},"request_id":{n}}}"#
        );
        socket
            .send(Message::Text(command))
            .map_err(|e| e.to_string())?;
        loop {
            let answer = read_json(&mut socket, None)?;
            if answer["type"] == "command_result" && answer["request_id"] == n {
                if answer["success"] != true {
                    return Err(format!("get_system_status failed: {answer}"));
                }
                break;
            }
        }
        samples.push(started.elapsed().as_nanos() as u64);
    }
    socket.close(None).ok();
    Ok(samples)
}
