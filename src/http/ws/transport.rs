//! The bytes under a WebSocket session: one thread both waits for its client and is woken for
//! its own work, with no second thread and no async runtime.
//!
//! The session waits in one `poll(2)` on {the socket, its eventfd the fan-out makes readable
//! when it queued events for it, the server's shutdown descriptor} with its ping deadline as
//! the timeout (`session.rs`), then feeds what the client sent to tungstenite through
//! [`Transport`]. Its reads never block: each is one `recv(MSG_DONTWAIT)` straight into
//! tungstenite's own read buffer (no copy, no buffer of ours), and "nothing yet" is
//! `WouldBlock`, which tungstenite treats as "no message yet". Writes go straight to the
//! socket and block, bounded by its write timeout (`write_timeout_s`); the socket itself stays
//! blocking (no `O_NONBLOCK`, which would turn those writes non-blocking too), only each read
//! asks not to wait.
//!
//! (Until this design a small reader thread per session blocked on the socket and passed
//! chunks through a channel to a `select!`: a blocking read cannot be woken by a channel, and
//! a short read timeout would delay every push. Polling a descriptor the fan-out can wake
//! removed that thread, its stack and its buffers.)
//!
//! [`Transport`] also follows the client's frames as they pass (only their headers' lengths and
//! flags: [`Frames`]), so the session knows when tungstenite holds nothing of the client's — no
//! part of a frame, no part of a fragmented message — and can drop tungstenite's state and its
//! buffers while it waits (`session.rs`, "parked").
//!
//! tiny_http may have read bytes past the upgrade request's head into its own buffer — a
//! client may send its first frame in the same packet as the handshake. Those belong to the
//! WebSocket: [`Upgraded::open`] takes them out of the upgraded stream before the session
//! starts, and [`Transport`] hands them to tungstenite before anything from the socket.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

use tiny_http::ReadWrite;

/// The upgraded connection for as long as its session runs. Dropping it — the session ended,
/// or its thread is unwinding from a panic — shuts the socket down, so the client sees the
/// end at once and nothing of the connection outlives the session.
pub struct Upgraded<'a> {
    socket: &'a TcpStream,
    /// tiny_http's stream, drained (see [`Upgraded::open`]) and never read again; kept so the
    /// connection's reader and writer end with the session, not before it.
    _stream: Box<dyn ReadWrite + Send>,
}

impl Drop for Upgraded<'_> {
    fn drop(&mut self) {
        self.socket.shutdown(Shutdown::Both).ok();
    }
}

impl<'a> Upgraded<'a> {
    /// Takes over `stream` (what `Request::upgrade` returned over `socket`), and returns with
    /// it every byte tiny_http had already buffered behind the request head (possibly also
    /// some that were waiting in the socket): the first bytes the session must read.
    ///
    /// tiny_http's buffer is behind a `dyn Read` and its reads block, so for this one moment
    /// the socket is non-blocking: reading the stream until `WouldBlock` empties its buffer
    /// without waiting for the client. Nothing writes to the socket meanwhile (the 101 is
    /// flushed, and the fan-out only queues until the session first settles).
    pub fn open(
        mut stream: Box<dyn ReadWrite + Send>,
        socket: &'a TcpStream,
    ) -> io::Result<(Upgraded<'a>, Vec<u8>)> {
        let mut early = Vec::new();
        socket.set_nonblocking(true)?;
        let drained = drain(&mut stream, &mut early);
        let restored = socket.set_nonblocking(false);
        let upgraded = Upgraded {
            socket,
            _stream: stream,
        };
        drained.and(restored)?;
        Ok((upgraded, early))
    }
}

/// Reads `stream` into `into` until it has nothing more without waiting (or ends).
fn drain(stream: &mut dyn Read, into: &mut Vec<u8>) -> io::Result<()> {
    // As large as tiny_http's buffer, so once that is empty a read goes to the socket itself.
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk) {
            // The client closed already: the session's first read sees that again.
            Ok(0) => return Ok(()),
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            // A broken connection: the session's first read finds out (and ends it) too.
            Err(_) => return Ok(()),
        }
    }
}

/// The session's side of the connection, under tungstenite.
pub struct Transport<'a> {
    /// Bytes tiny_http read before the upgrade, from `early_pos` on; freed once taken.
    early: Vec<u8>,
    early_pos: usize,
    socket: &'a TcpStream,
    /// A read found the end of the client's stream (it closed, or the connection broke).
    ended: bool,
    /// Where the bytes handed out so far leave the client's frames.
    frames: Frames,
}

impl<'a> Transport<'a> {
    /// `early`: what the client sent that was read before the session (see [`Upgraded::open`]).
    pub fn new(socket: &'a TcpStream, early: Vec<u8>) -> Transport<'a> {
        Transport {
            early,
            early_pos: 0,
            socket,
            ended: false,
            frames: Frames::default(),
        }
    }

    /// Whether every byte handed out so far ends a frame, and no fragmented message is left
    /// open: a reader that parsed all complete frames (tungstenite, once it says `WouldBlock`)
    /// then holds nothing of the client's.
    pub fn between_messages(&self) -> bool {
        self.frames.between_messages()
    }

    pub fn socket(&self) -> &'a TcpStream {
        self.socket
    }

    /// Whether the client's side has ended: no more bytes will come.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Whether bytes read before the session are still waiting for tungstenite (a `poll` on
    /// the socket cannot see them).
    pub fn has_early_bytes(&self) -> bool {
        self.early_pos < self.early.len()
    }
}

impl Read for Transport<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.has_early_bytes() {
            let waiting = &self.early[self.early_pos..];
            let n = waiting.len().min(buf.len());
            buf[..n].copy_from_slice(&waiting[..n]);
            self.early_pos += n;
            self.frames.pass(&buf[..n]);
            if !self.has_early_bytes() {
                self.early = Vec::new();
                self.early_pos = 0;
            }
            return Ok(n);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            // SAFETY: recv writes at most `buf.len()` bytes into `buf`, which we borrow
            // mutably for the call.
            let got = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if let Ok(got) = usize::try_from(got) {
                if got == 0 {
                    self.ended = true;
                }
                self.frames.pass(&buf[..got]);
                return Ok(got);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                ErrorKind::Interrupted => continue,
                ErrorKind::WouldBlock => return Err(err),
                _ => {
                    self.ended = true;
                    return Err(err);
                }
            }
        }
    }
}

impl Write for Transport<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut socket = self.socket;
        socket.write(buf).map_err(timed_out)
    }

    fn write_vectored(&mut self, parts: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut socket = self.socket;
        socket.write_vectored(parts).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing is buffered here: each write is a send on a TCP_NODELAY socket.
        Ok(())
    }
}

/// The socket blocks with `write_timeout_s`; Linux reports that timeout as WouldBlock, which
/// tungstenite would take for "try again later" and keep the frame buffered. For us it means
/// the client accepts no bytes: a fatal error.
fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        ErrorKind::WouldBlock => io::Error::new(
            ErrorKind::TimedOut,
            "the client accepted no bytes within write_timeout_s",
        ),
        _ => e,
    }
}

/// Follows a client's frames (RFC 6455 §5.2) through their headers: where one ends, and whether
/// a fragmented message is open. It validates nothing — tungstenite does, and ends the session
/// on anything malformed; at worst a malformed stream only looks mid-frame here.
#[derive(Debug, Default)]
struct Frames {
    /// The current frame's header bytes so far (at most 2 + 8 + 4).
    head: [u8; 14],
    head_len: usize,
    /// Payload bytes of the current frame still to come, once its header is complete.
    payload_left: u64,
    /// A data frame without FIN was seen and its message's final frame not yet.
    in_message: bool,
}

impl Frames {
    fn pass(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            self.head[self.head_len] = bytes[0];
            self.head_len += 1;
            bytes = &bytes[1..];
            if self.head_len < 2 {
                continue;
            }
            let (fin, opcode) = (self.head[0] & 0x80 != 0, self.head[0] & 0x0f);
            let masked = self.head[1] & 0x80 != 0;
            let length_bytes = match self.head[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let head_bytes = 2 + length_bytes + if masked { 4 } else { 0 };
            if self.head_len < head_bytes {
                continue;
            }
            self.payload_left = match length_bytes {
                0 => u64::from(self.head[1] & 0x7f),
                _ => self.head[2..2 + length_bytes]
                    .iter()
                    .fold(0, |length, &byte| (length << 8) | u64::from(byte)),
            };
            // Control frames (opcode 8 and up) may come between a message's fragments.
            if opcode < 8 {
                self.in_message = !fin;
            }
            self.head_len = 0;
        }
    }

    fn between_messages(&self) -> bool {
        self.head_len == 0 && self.payload_left == 0 && !self.in_message
    }
}

pub use crate::wake::Ready;

/// Waits up to `timeout` (`None`: no limit) until the socket has something to read (or has
/// ended), or `woken` or `stop` is readable (see [`crate::wake::wait`]).
pub fn wait(
    socket: &TcpStream,
    woken: Option<std::os::fd::BorrowedFd<'_>>,
    stop: Option<std::os::fd::BorrowedFd<'_>>,
    timeout: Option<std::time::Duration>,
) -> Ready {
    crate::wake::wait(socket, libc::POLLIN, woken, stop, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wake::WakeFd;
    use std::net::TcpListener;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    /// (server side, client side) of a loopback connection.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (server, client)
    }

    fn would_block(transport: &mut Transport<'_>) -> bool {
        let mut buf = [0u8; 8];
        matches!(transport.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }

    #[test]
    fn early_bytes_come_first_then_the_socket_without_blocking() {
        let (server, mut client) = pair();
        server
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut transport = Transport::new(&server, b"abcdef".to_vec());
        assert!(transport.has_early_bytes());
        client.write_all(b"gh").unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(transport.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        assert_eq!(transport.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"ef");
        assert!(!transport.has_early_bytes());
        // The socket's own bytes, once poll says they are there.
        assert!(wait(&server, None, None, Some(Duration::from_secs(10))).client);
        assert_eq!(transport.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"gh");
        // Nothing more: at once, whatever the socket's read timeout.
        let started = Instant::now();
        assert!(would_block(&mut transport));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!transport.ended());
        drop(client);
        assert!(wait(&server, None, None, Some(Duration::from_secs(10))).client);
        assert_eq!(transport.read(&mut buf).unwrap(), 0);
        assert!(transport.ended());
    }

    /// A masked client frame with `payload` (any length), FIN and opcode as given.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
        );
        frame
    }

    #[test]
    fn frames_are_followed_through_any_split_of_the_bytes() {
        let big = vec![b'x'; 70_000];
        let medium = vec![b'y'; 300];
        // (bytes, between messages after them?)
        let stream: Vec<(Vec<u8>, bool)> = vec![
            (frame(true, 1, b"{\"type\":\"ping\"}"), true),
            (frame(true, 1, &medium), true),
            (frame(false, 1, b"first half"), false),
            // A ping between a message's fragments leaves it open.
            (frame(true, 9, b""), false),
            (frame(false, 0, &big), false),
            (frame(true, 0, b"end"), true),
            (frame(true, 10, b"pong"), true),
        ];
        for split in [1, 2, 3, 7, 13, 4096] {
            let mut frames = Frames::default();
            for (bytes, between) in &stream {
                for (i, piece) in bytes.chunks(split).enumerate() {
                    frames.pass(piece);
                    let last = (i + 1) * split >= bytes.len();
                    assert_eq!(
                        frames.between_messages(),
                        last && *between,
                        "split {split}, piece {i} of a {}-byte frame",
                        bytes.len()
                    );
                }
            }
        }
    }

    #[test]
    fn wait_says_which_input_is_ready_and_times_out() {
        let (server, mut client) = pair();
        let woken = WakeFd::new().unwrap();
        let stop = WakeFd::new().unwrap();
        let started = Instant::now();
        let none = wait(
            &server,
            Some(woken.as_fd()),
            Some(stop.as_fd()),
            Some(Duration::from_millis(30)),
        );
        assert_eq!(none, Ready::default());
        assert!(started.elapsed() >= Duration::from_millis(30));
        woken.wake();
        let ready = wait(&server, Some(woken.as_fd()), Some(stop.as_fd()), None);
        assert_eq!(
            ready,
            Ready {
                woken: true,
                ..Ready::default()
            }
        );
        woken.clear();
        stop.wake();
        client.write_all(b"x").unwrap();
        // Both, once the byte has crossed the loopback.
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = loop {
            let ready = wait(&server, Some(woken.as_fd()), Some(stop.as_fd()), None);
            if ready.client || Instant::now() > deadline {
                break ready;
            }
        };
        assert_eq!(
            ready,
            Ready {
                client: true,
                stop: true,
                woken: false
            }
        );
    }

    #[test]
    fn opening_takes_what_the_stream_buffered_and_leaves_the_socket_blocking() {
        let (server, mut client) = pair();
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n\x81\x85frame")
            .unwrap();
        // A buffered reader that has read past the "request head", as tiny_http's does.
        let mut buffered = std::io::BufReader::with_capacity(1024, server.try_clone().unwrap());
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            std::io::BufRead::read_line(&mut buffered, &mut head).unwrap();
        }
        struct Stream<R>(R);
        impl<R: Read> Read for Stream<R> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl<R> Write for Stream<R> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (upgraded, early) = Upgraded::open(Box::new(Stream(buffered)), &server).unwrap();
        assert_eq!(early, b"\x81\x85frame");
        // Still blocking: a read with a timeout waits for it.
        server
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let started = Instant::now();
        let mut byte = [0u8];
        assert!((&server).read(&mut byte).is_err());
        assert!(started.elapsed() >= Duration::from_millis(40));
        // Dropping it shuts the socket down: the client sees the end.
        drop(upgraded);
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(client.read(&mut byte).unwrap(), 0);
    }
}
