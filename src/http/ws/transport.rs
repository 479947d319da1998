//! The bytes under a WebSocket session: how one thread can both wait for the client and push
//! events the moment they are published.
//!
//! A blocking read cannot be woken by a channel, and a short read timeout would delay every
//! push by up to that timeout. So a small *reader thread* does nothing but block on the socket
//! and pass each chunk it reads into a bounded channel; the session thread waits with one
//! `select!` on {bytes from the client, events from the hub, shutdown, its ping timer} and
//! feeds the bytes to tungstenite through [`Transport`], whose reads never block (no bytes yet
//! is `WouldBlock`, which tungstenite treats as "nothing yet") and whose writes go straight to
//! the socket. Only the session thread ever writes, so frames never interleave.
//!
//! The reader thread reads the stream that `Request::upgrade` returned, not a fresh clone of
//! the socket: bytes tiny_http had already buffered behind the request head belong to the
//! WebSocket and must not be lost.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use tiny_http::ReadWrite;

/// Largest chunk one socket read passes on.
const CHUNK_BYTES: usize = 4 * 1024;
/// Chunks waiting for the session at most. When the session is busy, the reader blocks and
/// TCP flow control pushes back on the client; memory stays bounded.
const CHUNKS_QUEUED: usize = 4;
/// The reader only copies bytes; it needs little stack.
const READER_STACK_BYTES: usize = 64 * 1024;

/// The session's side of the connection.
pub struct Transport<'a> {
    /// Bytes received and not yet taken by tungstenite, from `read_pos` on.
    inbox: Vec<u8>,
    read_pos: usize,
    socket: &'a TcpStream,
}

impl<'a> Transport<'a> {
    pub fn new(socket: &'a TcpStream) -> Transport<'a> {
        Transport {
            inbox: Vec::new(),
            read_pos: 0,
            socket,
        }
    }

    /// Makes `bytes` from the client readable.
    pub fn feed(&mut self, bytes: Vec<u8>) {
        if self.read_pos == self.inbox.len() {
            self.inbox = bytes;
        } else {
            self.inbox.drain(..self.read_pos);
            self.inbox.extend_from_slice(&bytes);
        }
        self.read_pos = 0;
    }
}

impl Read for Transport<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let waiting = &self.inbox[self.read_pos..];
        if waiting.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = waiting.len().min(buf.len());
        buf[..n].copy_from_slice(&waiting[..n]);
        self.read_pos += n;
        Ok(n)
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

/// The reader thread, owned by the session's connection thread. Dropping it — when the
/// session ends, or while unwinding from a panic — shuts the socket down, which ends the
/// thread's blocking read, and joins it: a session never leaves its reader (and the reader's
/// handle on the socket) behind.
pub struct Reader<'a> {
    socket: &'a TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        self.socket.shutdown(std::net::Shutdown::Both).ok();
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

/// Starts the reader thread over the upgraded `stream` (whose socket is `socket`). The channel
/// disconnects when the client closes its side or the socket is shut down (which is how the
/// returned [`Reader`] stops the thread).
pub fn spawn_reader<'a>(
    mut stream: Box<dyn ReadWrite + Send>,
    name: String,
    socket: &'a TcpStream,
) -> io::Result<(Receiver<Vec<u8>>, Reader<'a>)> {
    let (tx, rx) = crossbeam_channel::bounded(CHUNKS_QUEUED);
    let handle = std::thread::Builder::new()
        .name(name)
        .stack_size(READER_STACK_BYTES)
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    // The socket's read timeout (`request_timeout_s`) only bounds each wait
                    // here; whether the client is alive is the session's ping's business.
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) => {}
                    Err(_) => break,
                }
            }
        })?;
    let reader = Reader {
        socket,
        thread: Some(handle),
    };
    Ok((rx, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reads_what_was_fed_then_would_block() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut transport = Transport::new(&socket);
        let mut buf = [0u8; 4];
        assert_eq!(
            transport.read(&mut buf).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
        transport.feed(b"abcdef".to_vec());
        assert_eq!(transport.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        transport.feed(b"gh".to_vec());
        let mut rest = [0u8; 8];
        assert_eq!(transport.read(&mut rest).unwrap(), 4);
        assert_eq!(&rest[..4], b"efgh");
        assert_eq!(
            transport.read(&mut rest).unwrap_err().kind(),
            ErrorKind::WouldBlock
        );
    }
}
