//! The Server-Sent Events client: blocks read from a stream with a timeout, and why a stream
//! ended.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{is_chunked, read_chunked, read_line_crlf};
use super::*;

/// One SSE block (the lines up to a blank line).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseBlock {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Vec<String>,
    pub retry: Option<String>,
    pub comments: Vec<String>,
    pub other: Vec<(String, String)>,
}

impl SseBlock {
    fn is_empty(&self) -> bool {
        *self == SseBlock::default()
    }

    /// The event name as a browser's EventSource dispatches it.
    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    /// Whether the block dispatches an event (has data) in a browser.
    pub fn dispatches(&self) -> bool {
        !self.data.is_empty()
    }

    pub fn json(&self) -> Value {
        let text = self.data.join("\n");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {self:?}"))
    }

    pub fn id_num(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("SSE block without a numeric id: {self:?}"))
    }
}

/// How a stream ended.
#[derive(Debug)]
pub enum SseEnd {
    /// Orderly close (FIN).
    Eof,
    /// Nothing within the timeout.
    Timeout,
    /// Reset or another I/O error.
    Error(io::Error),
}

impl SseEnd {
    pub fn is_closed(&self) -> bool {
        match self {
            SseEnd::Eof => true,
            SseEnd::Timeout => false,
            SseEnd::Error(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
        }
    }
}

/// The response body of a stream: raw, or de-chunked if the server chose chunked encoding.
struct StreamBody {
    inner: BufReader<TcpStream>,
    chunked: bool,
    left: usize,
    done: bool,
}

impl Read for StreamBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.chunked {
            return self.inner.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let line = read_line_crlf(&mut self.inner)?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        if self.left == 0 {
            read_line_crlf(&mut self.inner)?;
        }
        Ok(n)
    }
}

/// A streaming client for `/stream/events` and `/stream/system-status`.
pub struct Sse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Data of the `connected` (or `status_connected`) event once the preamble was read.
    pub connected: Option<Value>,
    /// The first bytes of the body exactly as received (up to 4 KiB).
    pub first_bytes: Vec<u8>,
    reader: BufReader<StreamBody>,
    stream: TcpStream,
    line: Vec<u8>,
    block: SseBlock,
}

impl Sse {
    /// Opens a stream; a non-200 answer is returned as the complete response.
    pub fn open(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Sse, Response> {
        let mut stream = connect(port);
        let mut all: Vec<(&str, &str)> = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        write_request(&mut stream, "GET", path, &all, b"")
            .unwrap_or_else(|e| panic!("GET {path}: cannot send: {e}"));
        let mut inner = BufReader::new(stream.try_clone().unwrap());
        let (status, _reason, resp_headers) =
            read_head(&mut inner).unwrap_or_else(|e| panic!("GET {path}: no response head: {e}"));
        if status != 200 {
            let body = if let Some(len) = header_of(&resp_headers, "content-length") {
                let mut body = vec![0; len.parse().unwrap_or(0)];
                inner
                    .read_exact(&mut body)
                    .unwrap_or_else(|e| panic!("GET {path}: {status} body: {e}"));
                body
            } else if is_chunked(&resp_headers) {
                read_chunked(&mut inner).unwrap_or_else(|e| panic!("{status} body: {e}"))
            } else {
                let mut body = Vec::new();
                let _ = inner.read_to_end(&mut body);
                body
            };
            return Err(Response {
                status,
                headers: resp_headers,
                body,
            });
        }
        let chunked = is_chunked(&resp_headers);
        Ok(Sse {
            status,
            headers: resp_headers,
            connected: None,
            first_bytes: Vec::new(),
            reader: BufReader::new(StreamBody {
                inner,
                chunked,
                left: 0,
                done: false,
            }),
            stream,
            line: Vec::new(),
            block: SseBlock::default(),
        })
    }

    /// Opens `/stream/events` (or another stream path) and reads the preamble; panics on
    /// anything but 200 with `retry: 3000` and a `connected`/`status_connected` event.
    pub fn connect(port: u16, path: &str) -> Sse {
        Sse::connect_with(port, path, &[])
    }

    pub fn connect_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut sse = match Sse::open(port, path, headers) {
            Ok(sse) => sse,
            Err(resp) => panic!("GET {path}: {} {:?}", resp.status, resp.text()),
        };
        sse.read_preamble();
        sse
    }

    /// Reads blocks up to the `connected` (or `status_connected`) event and stores its data.
    pub fn read_preamble(&mut self) {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let block = self.next_block(IO_TIMEOUT).unwrap_or_else(|end| {
                panic!("stream ended in its preamble: {end:?}; got {seen:?}")
            });
            let name = block.event.clone();
            seen.push(block);
            if matches!(
                name.as_deref(),
                Some("connected") | Some("status_connected")
            ) {
                let block = seen.last().unwrap();
                self.connected = Some(block.json());
                assert_eq!(
                    block.retry.as_deref(),
                    Some("3000"),
                    "(r2) `retry: 3000` belongs in the connected block itself: {seen:?}"
                );
                return;
            }
        }
        panic!("no connected event in the first blocks: {seen:?}");
    }

    /// The next block with any field. Keeps partial input across timeouts.
    pub fn next_block(&mut self, timeout: Duration) -> Result<SseBlock, SseEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(SseEnd::Timeout);
            }
            self.stream
                .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
                .unwrap();
            let before = self.line.len();
            let result = self.reader.read_until(b'\n', &mut self.line);
            if self.first_bytes.len() < 4096 {
                let take = (self.line.len() - before).min(4096 - self.first_bytes.len());
                self.first_bytes
                    .extend_from_slice(&self.line[before..before + take]);
            }
            match result {
                Ok(0) => return Err(SseEnd::Eof),
                Ok(_) => {
                    if self.line.last() != Some(&b'\n') {
                        // EOF in the middle of a line.
                        return Err(SseEnd::Eof);
                    }
                    let mut line = std::mem::take(&mut self.line);
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if text.is_empty() {
                        let block = std::mem::take(&mut self.block);
                        if !block.is_empty() {
                            return Ok(block);
                        }
                        continue;
                    }
                    if let Some(comment) = text.strip_prefix(':') {
                        self.block.comments.push(comment.trim_start().to_string());
                        continue;
                    }
                    let (field, value) = match text.split_once(':') {
                        Some((f, v)) => {
                            (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string())
                        }
                        None => (text.clone(), String::new()),
                    };
                    match field.as_str() {
                        "id" => self.block.id = Some(value),
                        "event" => self.block.event = Some(value),
                        "data" => self.block.data.push(value),
                        "retry" => self.block.retry = Some(value),
                        _ => self.block.other.push((field, value)),
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(SseEnd::Timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SseEnd::Error(e)),
            }
        }
    }

    /// The next block that dispatches an event other than `heartbeat`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<SseBlock, SseEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let block = self.next_block(remaining)?;
            if block.dispatches() && block.name() != "heartbeat" {
                return Ok(block);
            }
        }
    }

    /// The next non-heartbeat event; panics on timeout or close.
    pub fn expect_event(&mut self) -> SseBlock {
        self.next_event(IO_TIMEOUT)
            .unwrap_or_else(|end| panic!("expected an SSE event, stream: {end:?}"))
    }

    pub fn expect_events(&mut self, n: usize) -> Vec<SseBlock> {
        (0..n)
            .map(|i| {
                self.next_event(IO_TIMEOUT).unwrap_or_else(|end| {
                    panic!("expected SSE event {} of {n}, stream: {end:?}", i + 1)
                })
            })
            .collect()
    }

    /// Reads blocks until the stream ends or `timeout` passes; returns what came and how it
    /// ended. Bytes of an unfinished block at the end are reported in `residue`.
    pub fn read_to_end(&mut self, timeout: Duration) -> (Vec<SseBlock>, SseEnd, usize) {
        let deadline = Instant::now() + timeout;
        let mut blocks = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.next_block(remaining) {
                Ok(block) => blocks.push(block),
                Err(end) => {
                    let residue = self.line.len() + usize::from(!self.block.is_empty());
                    return (blocks, end, residue);
                }
            }
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    /// Whether a chunked body ended with its last chunk (a complete response), rather than
    /// with the connection being cut.
    pub fn body_complete(&self) -> bool {
        let body = self.reader.get_ref();
        body.chunked && body.done
    }

    /// Closes both directions now.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
