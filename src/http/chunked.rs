//! The body of an event stream: HTTP/1.1 chunked transfer encoding, one chunk per flush.
//!
//! A body delimited only by the connection's close reaches clients built on urllib3/requests
//! (sseclient-py, and anything reading `iter_content`) late or never: they wait for a buffer to
//! fill. With one chunk per event or batch, every such client sees each event at once. HTTP/1.0
//! has no chunked encoding, so a 1.0 client still gets the body until close.
//!
//! Writes go straight to the socket in one `writev` per chunk (size line, bytes, CRLF):
//! tiny_http's own writer would buffer them (see ../shared/spec/CRATE-NOTES.md).

use std::io::{self, IoSlice, Write};
use std::net::TcpStream;

/// Writes every byte of `parts` with as few system calls as the socket allows.
pub fn write_all_vectored(out: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match out.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Most buffer capacity a body keeps between flushes.
const KEEP_CAPACITY: usize = 4 * 1024;

/// A streamed response body. `write` collects bytes; `flush` sends what was collected as one
/// chunk (or, for HTTP/1.0, as is).
pub struct StreamBody<'a> {
    socket: &'a TcpStream,
    chunked: bool,
    pending: Vec<u8>,
}

impl<'a> StreamBody<'a> {
    /// A body on `socket`, after the response head was sent. `chunked` must match the head's
    /// `Transfer-Encoding` (see [`transfer_encoding_header`]).
    pub fn new(socket: &'a TcpStream, chunked: bool) -> StreamBody<'a> {
        StreamBody {
            socket,
            chunked,
            // Grows to the largest flush it has sent (a few hundred bytes for an idle stream),
            // not a fixed 1 KiB per client.
            pending: Vec::new(),
        }
    }
}

impl StreamBody<'_> {
    /// Ends the body after what was written: flushes it, then sends the last chunk
    /// (`0\r\n\r\n`) so a client sees a complete response rather than a cut connection (an
    /// HTTP/1.0 body simply ends with the close).
    pub fn finish(&mut self) -> io::Result<()> {
        self.flush()?;
        if self.chunked {
            let mut socket = self.socket;
            socket.write_all(b"0\r\n\r\n")?;
        }
        Ok(())
    }
}

/// The head line that announces the body's framing: chunked for HTTP/1.1 and later, none for
/// HTTP/1.0 (the body then runs until the connection closes).
pub fn transfer_encoding_header(http_version: &tiny_http::HTTPVersion) -> &'static str {
    if uses_chunks(http_version) {
        "Transfer-Encoding: chunked\r\n"
    } else {
        ""
    }
}

pub fn uses_chunks(http_version: &tiny_http::HTTPVersion) -> bool {
    (http_version.0, http_version.1) >= (1, 1)
}

impl Write for StreamBody<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut socket = self.socket;
        let sent = if self.chunked {
            let size = format!("{:x}\r\n", self.pending.len());
            write_all_vectored(&mut socket, &[size.as_bytes(), &self.pending, b"\r\n"])
        } else {
            socket.write_all(&self.pending)
        };
        self.pending.clear();
        // A replay's page may have needed a large buffer; a stream that then idles for hours
        // must not keep it.
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// What `scenario` writes through a body on a real socket pair, as the peer reads it.
    fn sent_by(chunked: bool, scenario: impl FnOnce(&mut StreamBody)) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        {
            let mut body = StreamBody::new(&server, chunked);
            scenario(&mut body);
        }
        drop(server);
        let mut received = Vec::new();
        (&client).read_to_end(&mut received).unwrap();
        received
    }

    #[test]
    fn each_flush_is_one_chunk() {
        let wire = sent_by(true, |body| {
            body.write_all(b"id: 1\n").unwrap();
            body.write_all(b"data: {}\n\n").unwrap();
            body.flush().unwrap();
            body.flush().unwrap(); // nothing collected: no empty chunk (that would end the body)
            write!(body, "event: heartbeat\n\n").unwrap();
            body.flush().unwrap();
        });
        assert_eq!(
            wire,
            b"10\r\nid: 1\ndata: {}\n\n\r\n12\r\nevent: heartbeat\n\n\r\n"
        );
    }

    #[test]
    fn http_1_0_gets_the_bytes_as_they_are() {
        let wire = sent_by(false, |body| {
            body.write_all(b"data: x\n\n").unwrap();
            body.flush().unwrap();
            body.write_all(b"data: y\n\n").unwrap();
            body.finish().unwrap(); // the close ends a 1.0 body: no chunk framing
        });
        assert_eq!(wire, b"data: x\n\ndata: y\n\n");
    }

    #[test]
    fn finishing_sends_what_was_written_then_the_last_chunk() {
        let wire = sent_by(true, |body| {
            body.write_all(b"data: x\n\n").unwrap();
            body.finish().unwrap();
        });
        assert_eq!(wire, b"9\r\ndata: x\n\n\r\n0\r\n\r\n");
    }

    #[test]
    fn framing_follows_the_request_version() {
        use tiny_http::HTTPVersion;
        assert_eq!(transfer_encoding_header(&HTTPVersion(1, 0)), "");
        assert!(uses_chunks(&HTTPVersion(1, 1)));
        assert_eq!(
            transfer_encoding_header(&HTTPVersion(1, 1)),
            "Transfer-Encoding: chunked\r\n"
        );
    }
}
