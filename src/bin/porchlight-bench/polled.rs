//! The streaming clients in one thread: every SSE and WebSocket receiver's socket in one
//! `epoll`, read as it becomes readable.
//!
//! Why not a thread per client (`sse.rs`, `ws.rs`, still used for the soak and with
//! `--client-threads`): the benchmark shares the server's machine, and 600 client threads woken
//! for every event cost as much CPU as the server itself (a context switch, a read and a parse
//! each), so on 2 cores the figures measured the clients' own scheduling as much as the
//! server. Real clients are phones and home-automation boxes with CPUs of their own; the less
//! the benchmark's clients cost, the closer its latencies are to what the server delivers.
//! Each connection is set up with the ordinary blocking clients (the SSE head and `connected`
//! block; the WebSocket handshake and `subscribe`), then its socket joins the loop.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;

use crate::Kind;
use crate::http::open_stream;
use crate::record::{ClientReport, number_after, unix_nanos};

/// How long the loop waits for readiness before looking at `stop` again.
const POLL_MS: libc::c_int = 200;

/// One receiver in the loop.
struct Receiver {
    kind: Kind,
    socket: TcpStream,
    /// Bytes read and not yet parsed (a partial line or frame).
    pending: Vec<u8>,
    /// SSE: the current block's event name and id.
    event_name: String,
    id: u64,
    report: ClientReport,
    done: bool,
    /// The WebSocket the handshake made, kept so its socket stays open (`socket` is a dup).
    _websocket: Option<tungstenite::WebSocket<TcpStream>>,
}

/// Opens `sse` SSE and `ws` WebSocket receivers (reporting each on `ready`), then reads them
/// all in one thread until each has `expected` bench events or `stop` is set. Returns each
/// client's report with its kind.
pub fn run(
    addr: SocketAddr,
    counts: (usize, usize),
    token_query: &str,
    expected: usize,
    ready: Sender<Result<(), String>>,
    stop: Arc<AtomicBool>,
) -> Vec<(Kind, ClientReport)> {
    let (sse, ws) = counts;
    let mut receivers = Vec::with_capacity(sse + ws);
    let mut failed = Vec::new();
    for (kind, count) in [(Kind::Sse, sse), (Kind::Ws, ws)] {
        for i in 0..count {
            let opened = match kind {
                Kind::Sse => open_sse(addr, i, token_query),
                Kind::Ws => open_ws(addr, i, token_query),
            };
            match opened {
                Ok(receiver) => {
                    ready.send(Ok(())).ok();
                    receivers.push(receiver);
                }
                Err(err) => {
                    ready.send(Err(err.clone())).ok();
                    let mut report = ClientReport::default();
                    report.error = Some(err);
                    failed.push((kind, report));
                }
            }
        }
    }
    if let Err(err) = read_all(&mut receivers, expected, &stop) {
        for receiver in &mut receivers {
            receiver.report.error.get_or_insert_with(|| err.clone());
        }
    }
    receivers
        .into_iter()
        .map(|r| (r.kind, r.report))
        .chain(failed)
        .collect()
}

fn receiver(kind: Kind, socket: TcpStream, pending: Vec<u8>) -> Receiver {
    Receiver {
        kind,
        socket,
        pending,
        event_name: String::new(),
        id: 0,
        report: ClientReport::default(),
        done: false,
        _websocket: None,
    }
}

/// An SSE stream read up to its `connected` block; what came after it stays pending.
fn open_sse(addr: SocketAddr, client: usize, token_query: &str) -> Result<Receiver, String> {
    let path = format!("/stream/events?client_id=bench-{client}&types=bench{token_query}");
    let mut reader = open_stream(addr, &path, "").map_err(|e| e.to_string())?;
    let mut line = String::new();
    loop {
        line.clear();
        match std::io::BufRead::read_line(&mut reader, &mut line) {
            Ok(0) => return Err("the stream ended before its connected block".into()),
            Ok(_) if line.starts_with("data: ") => break,
            Ok(_) => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    let pending = reader.buffer().to_vec();
    Ok(receiver(Kind::Sse, reader.into_inner(), pending))
}

/// A WebSocket session subscribed to `bench`.
fn open_ws(addr: SocketAddr, client: usize, token_query: &str) -> Result<Receiver, String> {
    let websocket = crate::ws::open_subscribed(addr, client, token_query)?;
    let socket = websocket.get_ref().try_clone().map_err(|e| e.to_string())?;
    let mut receiver = receiver(Kind::Ws, socket, Vec::new());
    receiver._websocket = Some(websocket);
    Ok(receiver)
}

/// The epoll loop: reads every readable socket, parses what it got, until every receiver is
/// done or `stop` is set.
fn read_all(receivers: &mut [Receiver], expected: usize, stop: &AtomicBool) -> Result<(), String> {
    // SAFETY: epoll_create1 takes no pointers; a non-negative result is a descriptor we own.
    let created = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if created < 0 {
        return Err(format!("epoll: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `created` is a new descriptor nothing else owns; closed when this drops.
    let owned = unsafe { OwnedFd::from_raw_fd(created) };
    let epoll = owned.as_raw_fd();
    for (index, receiver) in receivers.iter_mut().enumerate() {
        receiver
            .socket
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: index as u64,
        };
        // SAFETY: registers a socket we own with our epoll; `event` is read for the call.
        let added = unsafe {
            libc::epoll_ctl(
                epoll,
                libc::EPOLL_CTL_ADD,
                receiver.socket.as_raw_fd(),
                &mut event,
            )
        };
        if added < 0 {
            return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
        }
        // Bytes that came with the setup (none, normally) are parsed now.
        receiver.parse(unix_nanos(), expected);
    }
    let mut open = receivers.iter().filter(|r| !r.done).count();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 64 * 1024];
    while open > 0 && !stop.load(Ordering::Relaxed) {
        // SAFETY: epoll_wait writes at most `events.len()` entries into our buffer.
        let ready = unsafe {
            libc::epoll_wait(
                epoll,
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                POLL_MS,
            )
        };
        let Ok(ready) = usize::try_from(ready) else {
            let err = std::io::Error::last_os_error();
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("epoll_wait: {err}"));
        };
        for event in &events[..ready] {
            let Some(receiver) = usize::try_from(event.u64)
                .ok()
                .and_then(|i| receivers.get_mut(i))
            else {
                continue;
            };
            if receiver.done {
                continue;
            }
            receiver.drain(&mut buf, expected);
            if receiver.done {
                open -= 1;
                // SAFETY: removes a descriptor we registered; no event pointer is needed.
                unsafe {
                    libc::epoll_ctl(
                        epoll,
                        libc::EPOLL_CTL_DEL,
                        receiver.socket.as_raw_fd(),
                        std::ptr::null_mut(),
                    );
                }
            }
        }
    }
    Ok(())
}

impl Receiver {
    /// Reads everything the socket has now, then parses it (all of it stamped as received
    /// now: one read's worth arrived together).
    fn drain(&mut self, buf: &mut [u8], expected: usize) {
        loop {
            match self.socket.read(buf) {
                Ok(0) => {
                    self.end("server closed the stream");
                    break;
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.end(&e.to_string());
                    break;
                }
            }
        }
        self.parse(unix_nanos(), expected);
    }

    /// The stream ended before this client had every event (one that has them all is done
    /// and no longer read).
    fn end(&mut self, why: &str) {
        self.report.error.get_or_insert_with(|| why.to_string());
        self.done = true;
    }

    fn parse(&mut self, now: u64, expected: usize) {
        match self.kind {
            Kind::Sse => self.parse_sse(now),
            Kind::Ws => self.parse_ws(now),
        }
        if self.report.received >= expected {
            self.done = true;
        }
    }

    /// Complete lines of the SSE body (the chunk-size lines of a chunked body match nothing).
    fn parse_sse(&mut self, now: u64) {
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.pending[start..start + end]);
            let line = line.trim_end();
            if let Some(name) = line.strip_prefix("event: ") {
                self.event_name = name.to_string();
            } else if let Some(text) = line.strip_prefix("id: ") {
                self.id = text.parse().unwrap_or(0);
            } else if let Some(data) = line.strip_prefix("data: ") {
                if self.event_name == "bench" {
                    let sent = number_after(data, r#""sent_ns":"#).unwrap_or(now);
                    self.report.record_received(self.id, sent, now);
                }
            } else if line.is_empty() {
                self.event_name.clear();
            }
            start += end + 1;
        }
        self.pending.drain(..start);
    }

    /// Complete frames from the server (unmasked): text messages are recorded, pings answered.
    fn parse_ws(&mut self, now: u64) {
        let mut start = 0;
        while let Some((opcode, payload)) = next_frame(&self.pending[start..]) {
            let (header, length) = payload;
            let body = &self.pending[start + header..start + header + length];
            match opcode {
                1 => {
                    let text = String::from_utf8_lossy(body);
                    if text.starts_with(r#"{"type":"live_event""#) {
                        let id = number_after(&text, r#""id":"#).unwrap_or(0);
                        let sent = number_after(&text, r#""sent_ns":"#).unwrap_or(now);
                        self.report.record_received(id, sent, now);
                    }
                }
                9 => {
                    let pong = masked_frame(0xA, body);
                    (&self.socket).write_all(&pong).ok();
                }
                8 => {
                    self.end("closed by the server");
                    return;
                }
                _ => {}
            }
            start += header + length;
        }
        self.pending.drain(..start);
    }
}

/// The opcode, header length and payload length of the complete frame at the start of `bytes`.
fn next_frame(bytes: &[u8]) -> Option<(u8, (usize, usize))> {
    let (&first, &second) = (bytes.first()?, bytes.get(1)?);
    let (header, length): (usize, usize) = match second & 0x7F {
        126 => (
            4,
            usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        ),
        127 => {
            let raw: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
            (10, usize::try_from(u64::from_be_bytes(raw)).ok()?)
        }
        short => (2, usize::from(short)),
    };
    (bytes.len() >= header.checked_add(length)?).then_some((first & 0x0F, (header, length)))
}

/// A final client frame (masked, as RFC 6455 requires of clients) with a short payload.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
    let length = payload.len().min(125);
    let mut frame = vec![0x80 | opcode, 0x80 | length as u8];
    frame.extend_from_slice(&MASK);
    frame.extend(
        payload[..length]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4]),
    );
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_only_when_complete() {
        assert_eq!(next_frame(&[0x81, 0x03, b'a', b'b']), None);
        assert_eq!(
            next_frame(&[0x81, 0x03, b'a', b'b', b'c']),
            Some((1, (2, 3)))
        );
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(next_frame(&long), Some((1, (4, 256))));
        assert_eq!(next_frame(&long[..100]), None);
        assert_eq!(next_frame(&[0x89, 0x00]), Some((9, (2, 0))));
    }

    #[test]
    fn a_pong_is_masked_and_unmasks_to_its_payload() {
        let pong = masked_frame(0xA, b"porchlight");
        assert_eq!(pong[0], 0x8A);
        assert_eq!(pong[1], 0x80 | 10);
        let mask = &pong[2..6];
        let payload: Vec<u8> = pong[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(payload, b"porchlight");
    }
}
