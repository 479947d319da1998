use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Method};
use crate::util::RefinedTcpStream;
use crate::util::{Deadline, DeadlineStream};
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::{Header, Request, Response, StatusCode};

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<DeadlineStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<DeadlineStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // porchlight patch: bounds on what one request head may cost.
    limits: HeadLimits,

    // porchlight patch: the deadline of the request being read (head and body).
    deadline: Deadline,

    // porchlight patch: set by a request whose answer closes the connection (see
    // `Request::keep_alive` and `util::persistence`): no further request is read after it.
    closing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// porchlight patch: bounds on one request, so that a client cannot make the server allocate
/// without limit (tiny_http 0.12 reads lines byte by byte with no cap) or hold a connection
/// forever by trickling a request one byte at a time.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    /// Longest request line or header line, in bytes (longer: 414 or 431, then close).
    pub max_line_bytes: usize,
    /// Most header lines in one request (more: 431, then close).
    pub max_headers: usize,
    /// Longest time from the first byte of a request to the last byte of its body (past it:
    /// 408, then close). Covers the head, the body as a handler reads it, and the draining
    /// of a body it did not read.
    pub request_deadline: Duration,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_line_bytes: 8 * 1024,
            max_headers: 100,
            request_deadline: Duration::from_secs(10),
        }
    }
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// porchlight patch: the request breaks HTTP/1.1's framing or syntax (RFC 9112): answered
    /// 400 with a JSON error naming what was wrong, then the connection closes — where the
    /// next request would start is unknown.
    Malformed(&'static str),
    /// porchlight patch: a well-formed version other than HTTP/1.0 and HTTP/1.1: 505.
    VersionNotSupported,
    /// porchlight patch: a transfer coding other than `chunked`: 501 (RFC 9112 §6.1).
    NotImplemented(&'static str),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed,
    /// porchlight patch: the request's deadline passed: 408.
    TimedOut,
    /// The connection ended or broke before a request began: close without an answer.
    ReadIoError(#[allow(dead_code)] IoError),
    /// porchlight patch: the request line was longer than `max_line_bytes`.
    RequestLineTooLong,
    /// porchlight patch: a header line was too long, or there were too many.
    HeadersTooLarge,
}

/// porchlight patch: why a head line could not be read.
enum LineError {
    Io(IoError),
    TooLong,
    Malformed(&'static str),
}

impl LineError {
    /// The `ReadError` for this line error; `too_long` is what an overlong line means here.
    fn into_read_error(self, too_long: ReadError) -> ReadError {
        match self {
            LineError::TooLong => too_long,
            LineError::Malformed(why) => ReadError::Malformed(why),
            LineError::Io(e) if e.kind() == ErrorKind::TimedOut => ReadError::TimedOut,
            LineError::Io(e) => ReadError::ReadIoError(e),
        }
    }
}

/// porchlight patch: RFC 9110 `tchar`, what method and header names are made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// porchlight patch: a JSON error answer (`{"error": code, "message": text}`, as porchlight's
/// own errors), after which the connection closes.
fn error_response(status: u16, code: &str, message: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    let escaped: String = message
        .chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c => vec![c],
        })
        .collect();
    let body = format!("{{\"error\": \"{code}\", \"message\": \"{escaped}\"}}");
    let header = |name: &str, value: &str| Header::from_bytes(name, value).unwrap();
    Response::from_data(body.into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header("Connection", "close"))
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let deadline = Deadline::default();
        let read_socket = DeadlineStream::new(read_socket, deadline.clone());
        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            limits: HeadLimits::default(),
            deadline,
            closing: Default::default(),
        }
    }

    /// porchlight patch: a connection over an accepted TCP stream, for servers that run their
    /// own accept loop and thread per connection instead of `Server`'s pool. Dropping it
    /// flushes what it buffered and sends FIN, but does not shut reading down: closing is the
    /// caller's, who must read what the client still sends after the last answer (a lingering
    /// close) so that the client gets that answer instead of a reset.
    pub fn from_tcp_stream(stream: TcpStream, limits: HeadLimits) -> ClientConnection {
        let (read, write) = RefinedTcpStream::new(crate::connection::Connection::from(stream));
        let mut connection = ClientConnection::new(write, read.keep_read_side_open());
        connection.limits = limits;
        connection
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    /// porchlight patch: strict lines. A bare LF or a bare CR, a control byte other than
    /// HTAB (NUL included) or a byte outside ASCII makes the request malformed (400): such
    /// bytes are where request smuggling and header injection live. A line may not exceed
    /// `max_line_bytes`. The first byte of a request starts its deadline.
    fn read_next_line(&mut self) -> Result<AsciiString, LineError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            if buf.len() > self.limits.max_line_bytes {
                return Err(LineError::TooLong);
            }
            let byte = self.next_header_source.by_ref().bytes().next();
            if self.deadline.get().is_none() {
                self.deadline
                    .set(Instant::now() + self.limits.request_deadline);
            }

            let byte = match byte {
                Some(b) => b.map_err(LineError::Io)?,
                None => {
                    return Err(LineError::Io(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };

            if prev_byte_was_cr {
                if byte != b'\n' {
                    return Err(LineError::Malformed("a bare CR in the request head"));
                }
                return AsciiString::from_ascii(buf)
                    .map_err(|_| LineError::Malformed("a byte outside ASCII in the request head"));
            }
            match byte {
                b'\r' => {
                    prev_byte_was_cr = true;
                    continue;
                }
                b'\n' => {
                    return Err(LineError::Malformed(
                        "a bare LF in the request head; lines end with CRLF",
                    ))
                }
                b'\t' => {}
                0 => return Err(LineError::Malformed("a NUL byte in the request head")),
                0x01..=0x1f | 0x7f => {
                    return Err(LineError::Malformed("a control byte in the request head"))
                }
                0x80..=0xff => {
                    return Err(LineError::Malformed(
                        "a byte outside ASCII in the request head",
                    ))
                }
                _ => {}
            }

            buf.push(byte);
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        // porchlight patch: between requests only the socket's idle timeout applies; the next
        // request's deadline starts with its first byte (`read_next_line`).
        self.deadline.clear();
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, authority, version) = {
                // porchlight patch: RFC 9112 §2.2 asks a server to ignore at least one empty
                // line before a request line: some clients end a POST body with an extra CRLF,
                // which arrives ahead of their next keep-alive request. A few are skipped;
                // more is not a client's slip but noise (400).
                let mut line = self
                    .read_next_line()
                    .map_err(|e| e.into_read_error(ReadError::RequestLineTooLong))?;
                let mut skipped = 0;
                while line.is_empty() && skipped < MAX_EMPTY_LINES_BEFORE_REQUEST {
                    skipped += 1;
                    line = self
                        .read_next_line()
                        .map_err(|e| e.into_read_error(ReadError::RequestLineTooLong))?;
                }

                parse_request_line(line.as_str())?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self
                        .read_next_line()
                        .map_err(|e| e.into_read_error(ReadError::HeadersTooLarge))?;

                    if line.is_empty() {
                        break;
                    };
                    if headers.len() >= self.limits.max_headers {
                        return Err(ReadError::HeadersTooLarge);
                    }
                    headers.push(parse_header_line(line.as_str())?);
                }

                // porchlight patch: RFC 9112 §3.2.2: with an absolute-form target the server
                // MUST ignore any `Host` and use the target's authority instead.
                if let Some(authority) = authority {
                    headers.retain(|h: &Header| !h.field.equiv("Host"));
                    headers.push(
                        Header::from_bytes(&b"Host"[..], authority.as_bytes())
                            .map_err(|()| ReadError::Malformed("a header line is malformed"))?,
                    );
                }
                headers
            };

            (method, path, version, headers)
        };

        check_framing(&version, &headers)?;

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version,
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => match e.kind() {
                    ErrorKind::TimedOut => ReadError::TimedOut,
                    // porchlight patch: the client ended its side inside a small body.
                    ErrorKind::ConnectionAborted | ErrorKind::UnexpectedEof => {
                        ReadError::Malformed("the body is shorter than its Content-Length")
                    }
                    _ => ReadError::ReadIoError(e),
                },
                request::RequestCreationError::ExpectationFailed => ReadError::ExpectationFailed,
            }
        })?;

        // return the request
        Ok(request
            .with_deadline(self.deadline.clone())
            .with_closing(self.closing.clone()))
    }
}

/// porchlight patch: the values of every header named `name`, each comma-separated list
/// split into its trimmed elements.
fn list_values<'a>(headers: &'a [Header], name: &'static str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|h| h.field.equiv(name))
        .flat_map(|h| h.value.as_str().split(','))
        .map(|v| v.trim_matches(|c| c == ' ' || c == '\t'))
        .collect()
}

/// porchlight patch: the request framing rules of RFC 9112 §6 that tiny_http did not check,
/// so that no two parsers (ours and a proxy's in front of us) can disagree on where a request
/// ends. `Content-Length`: digits only, and every copy the same value. `Transfer-Encoding`:
/// only `chunked`, never beside `Content-Length`, never in HTTP/1.0. HTTP/1.1 needs exactly one
/// valid `Host`.
fn check_framing(version: &HTTPVersion, headers: &[Header]) -> Result<(), ReadError> {
    let hosts: Vec<&Header> = headers.iter().filter(|h| h.field.equiv("Host")).collect();
    match hosts.as_slice() {
        [] if *version >= HTTPVersion(1, 1) => {
            return Err(ReadError::Malformed("an HTTP/1.1 request needs a Host header"))
        }
        [] => {}
        [host] if valid_host(host.value.as_str()) => {}
        [_] => return Err(ReadError::Malformed("the Host header is not a valid host[:port]")),
        _ => return Err(ReadError::Malformed("more than one Host header")),
    }

    let lengths = list_values(headers, "Content-Length");
    if !lengths.is_empty() {
        let mut value: Option<u64> = None;
        for text in &lengths {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ReadError::Malformed(
                    "Content-Length must be a non-negative decimal integer",
                ));
            }
            let n: u64 = text
                .parse()
                .map_err(|_| ReadError::Malformed("Content-Length is too large"))?;
            if value.is_some_and(|v| v != n) {
                return Err(ReadError::Malformed(
                    "Content-Length is given more than once with different values",
                ));
            }
            value = Some(n);
        }
        if value.is_some_and(|n| std::convert::TryFrom::try_from(n).map_or(true, |_: usize| false)) {
            return Err(ReadError::Malformed("Content-Length is too large"));
        }
    }

    let codings = list_values(headers, "Transfer-Encoding");
    if headers.iter().any(|h| h.field.equiv("Transfer-Encoding")) {
        if !lengths.is_empty() {
            return Err(ReadError::Malformed(
                "Transfer-Encoding and Content-Length together are ambiguous",
            ));
        }
        if *version < HTTPVersion(1, 1) {
            return Err(ReadError::Malformed(
                "Transfer-Encoding is not allowed in an HTTP/1.0 request",
            ));
        }
        if codings.iter().any(|c| c.is_empty()) {
            return Err(ReadError::Malformed("an empty Transfer-Encoding"));
        }
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            return Err(ReadError::NotImplemented(
                "the only transfer coding accepted is chunked",
            ));
        }
    }
    Ok(())
}

/// porchlight patch: `host[:port]` as RFC 9110 §7.2 allows it: a reg-name or IPv4 address, or
/// an IPv6 address in brackets, then an optional decimal port.
fn valid_host(value: &str) -> bool {
    let port_ok = |port: &str| port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = value.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        return (after.is_empty() || after.strip_prefix(':').map_or(false, port_ok))
            && !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    }
    let (host, port) = value.split_once(':').unwrap_or((value, ""));
    port_ok(port)
        && !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests || self.closing.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }

        let rq = match self.read() {
            Ok(rq) => rq,
            // porchlight patch: every refusal is a JSON error, and the connection closes after
            // it: where the next request would start is unknown.
            Err(ReadError::ReadIoError(_)) => return None,
            Err(err) => {
                let response = match err {
                    ReadError::Malformed(why) => error_response(400, "bad_request", why),
                    ReadError::VersionNotSupported => error_response(
                        505,
                        "http_version_not_supported",
                        "only HTTP/1.0 and HTTP/1.1 are supported",
                    ),
                    ReadError::NotImplemented(why) => error_response(501, "not_implemented", why),
                    ReadError::ExpectationFailed => error_response(
                        417,
                        "expectation_failed",
                        "the only Expect accepted is 100-continue",
                    ),
                    ReadError::TimedOut => error_response(
                        408,
                        "request_timeout",
                        "the request did not arrive within request_timeout_s",
                    ),
                    ReadError::RequestLineTooLong => error_response(
                        414,
                        "uri_too_long",
                        "the request line is longer than 8 KiB",
                    ),
                    ReadError::HeadersTooLarge => error_response(
                        431,
                        "headers_too_large",
                        "a header line is longer than 8 KiB, or there are more than 100",
                    ),
                    ReadError::ReadIoError(_) => unreachable!("handled above"),
                };
                // Flushed here, so the answer leaves before the caller starts closing.
                let mut writer = self.sink.next().unwrap();
                response
                    .raw_print(&mut writer, HTTPVersion(1, 1), &[], false, None, false)
                    .and_then(|()| writer.flush())
                    .ok();
                return None;
            }
        };

        // porchlight patch: whether the connection persists is the request's one decision
        // (`util::persistence`, token lists over every `Connection` line), which its answer
        // also follows; upstream tested the first header for substrings here.
        if !rq.keep_alive() {
            self.no_more_requests = true;
        }

        // returning the request
        Some(rq)
    }
}

/// porchlight patch: empty lines ignored ahead of a request line (see `ClientConnection::read`).
const MAX_EMPTY_LINES_BEFORE_REQUEST: usize = 2;

/// Parses a "HTTP/1.1" string. porchlight patch: `HTTP/d.d` other than 1.0 and 1.1 is a
/// version we do not speak (505); anything else is not a version at all (400).
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    match version.as_bytes() {
        b"HTTP/1.0" => Ok(HTTPVersion(1, 0)),
        b"HTTP/1.1" => Ok(HTTPVersion(1, 1)),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(ReadError::VersionNotSupported)
        }
        _ => Err(ReadError::Malformed("the request line's HTTP version is malformed")),
    }
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
/// porchlight patch: exactly `METHOD SP target SP version`; the method a token, the target an
/// absolute path (origin-form, RFC 9112 §3.2.1), `*` (for OPTIONS) or an `http(s)://` URL
/// (absolute-form, §3.2.2, which a server MUST accept): that one is returned as its path (and
/// query) with its authority beside it, which then replaces the `Host` header.
fn parse_request_line(
    line: &str,
) -> Result<(Method, String, Option<String>, HTTPVersion), ReadError> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, path, version] = parts.as_slice() else {
        return Err(ReadError::Malformed(
            "the request line must be METHOD SP target SP HTTP-version",
        ));
    };
    let version = parse_http_version(version)?;
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(ReadError::Malformed("the request method is not a token"));
    }
    if path.contains('\t') {
        return Err(ReadError::Malformed(
            "the request target must be an absolute path",
        ));
    }
    let (authority, path) = match absolute_form(path)? {
        Some((authority, path)) => (Some(authority.to_owned()), path),
        None if path.starts_with('/') || *path == "*" => (None, (*path).to_owned()),
        None => {
            return Err(ReadError::Malformed(
                "the request target must be an absolute path",
            ))
        }
    };
    let method = method
        .parse()
        .map_err(|_| ReadError::Malformed("the request method is not a token"))?;
    Ok((method, path, authority, version))
}

/// porchlight patch: an absolute-form target (`http://host:port/path?query`, RFC 9112 §3.2.2)
/// as its authority and its origin-form (`/path?query`; an empty path is `/`). `None` for a
/// target that is not one; a malformed authority (empty, with a user, not `host[:port]`) or a
/// fragment is a 400.
fn absolute_form(target: &str) -> Result<Option<(&str, String)>, ReadError> {
    let lower = |n: usize| target.get(..n).map(str::to_ascii_lowercase);
    let rest = if lower(7).as_deref() == Some("http://") {
        &target[7..]
    } else if lower(8).as_deref() == Some("https://") {
        &target[8..]
    } else {
        return Ok(None);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') || !valid_host(authority) || path.contains('#') {
        return Err(ReadError::Malformed(
            "the request target's authority must be host[:port]",
        ));
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok(Some((authority, path)))
}

/// porchlight patch: `name: value`, the name a token right before the colon (no whitespace,
/// RFC 9112 §5.1), no obsolete line folding; the value trimmed of spaces and tabs.
fn parse_header_line(line: &str) -> Result<Header, ReadError> {
    if line.starts_with(' ') || line.starts_with('\t') {
        return Err(ReadError::Malformed("obsolete header line folding"));
    }
    let Some((name, value)) = line.split_once(':') else {
        return Err(ReadError::Malformed("a header line without a colon"));
    };
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(ReadError::Malformed("a header name is not a token"));
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .map_err(|()| ReadError::Malformed("a header line is malformed"))
}

#[cfg(test)]
mod test {
    use super::ReadError;

    #[test]
    fn test_parse_request_line() {
        let (method, path, authority, ver) =
            super::parse_request_line("GET /hello HTTP/1.1").unwrap();
        assert!(authority.is_none());

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }

    #[test]
    fn request_lines_are_strict() {
        for bad in [
            "GET  / HTTP/1.1",
            "GET / HTTP/1.1 ",
            " GET / HTTP/1.1",
            "GET / HTTP/1.1 extra",
            "G(T / HTTP/1.1",
            "GET hello HTTP/1.1",
            "GET http://user@evil/ HTTP/1.1",
            "GET http:// HTTP/1.1",
            "GET http:///x HTTP/1.1",
            "GET http://a b/ HTTP/1.1",
            "GET http://host/#frag HTTP/1.1",
            "GET ftp://host/ HTTP/1.1",
            "CONNECT host:443 HTTP/1.1",
            "GET / HTTP/1",
            "GET / HTTX/1.1",
            "GET / http/1.1",
            "GET / HTTP/10.1",
        ] {
            assert!(
                matches!(super::parse_request_line(bad), Err(ReadError::Malformed(_))),
                "{:?}",
                bad
            );
        }
        for other in ["GET / HTTP/2.0", "GET / HTTP/0.9", "GET / HTTP/1.2", "PRI * HTTP/2.0"] {
            assert!(
                matches!(super::parse_request_line(other), Err(ReadError::VersionNotSupported)),
                "{:?}",
                other
            );
        }
        assert!(super::parse_request_line("OPTIONS * HTTP/1.1").is_ok());
        for (line, authority, path) in [
            ("GET http://door.local:8080/api/status HTTP/1.1", "door.local:8080", "/api/status"),
            ("GET HTTPS://[::1]:8443?limit=1 HTTP/1.1", "[::1]:8443", "/?limit=1"),
            ("GET http://127.0.0.1 HTTP/1.0", "127.0.0.1", "/"),
        ] {
            let (_, got_path, got_authority, _) = super::parse_request_line(line).unwrap();
            assert_eq!(got_authority.as_deref(), Some(authority), "{}", line);
            assert_eq!(got_path, path, "{}", line);
        }
        assert!(super::parse_request_line("BREW /pot HTTP/1.0").is_ok());
    }

    #[test]
    fn header_lines_are_strict() {
        assert!(super::parse_header_line("Host: x").is_ok());
        let h = super::parse_header_line("X-A:\t v \t").unwrap();
        assert_eq!(h.value.as_str(), "v");
        for bad in ["Host : x", " Host: x", "\tcontinued", "Ho st: x", "NoColon", ": x", "X(y): z"] {
            assert!(super::parse_header_line(bad).is_err(), "{:?}", bad);
        }
    }

    fn framing(version: (u8, u8), headers: &[(&str, &str)]) -> Result<(), String> {
        let headers: Vec<crate::Header> = headers
            .iter()
            .map(|(k, v)| crate::Header::from_bytes(*k, *v).unwrap())
            .collect();
        super::check_framing(&crate::common::HTTPVersion(version.0, version.1), &headers)
            .map_err(|e| format!("{:?}", e))
    }

    #[test]
    fn framing_is_unambiguous() {
        let host = ("Host", "example:80");
        assert!(framing((1, 1), &[host]).is_ok());
        assert!(framing((1, 0), &[]).is_ok());
        assert!(framing((1, 1), &[host, ("Content-Length", "12")]).is_ok());
        assert!(framing((1, 1), &[host, ("Content-Length", "5"), ("Content-Length", "5")]).is_ok());
        assert!(framing((1, 1), &[host, ("Content-Length", "5, 5")]).is_ok());
        assert!(framing((1, 1), &[host, ("Transfer-Encoding", "chunked")]).is_ok());
        assert!(framing((1, 1), &[host, ("Transfer-Encoding", "Chunked")]).is_ok());
        for (what, headers) in [
            ("no host", vec![]),
            ("two hosts", vec![host, ("Host", "other")]),
            ("bad host", vec![("Host", "a b")]),
            ("host with path", vec![("Host", "a/b")]),
            ("host with user", vec![("Host", "u@a")]),
            ("empty host", vec![("Host", "")]),
            ("hex length", vec![host, ("Content-Length", "0x2")]),
            ("negative length", vec![host, ("Content-Length", "-1")]),
            ("signed length", vec![host, ("Content-Length", "+1")]),
            ("list of lengths", vec![host, ("Content-Length", "2, 40")]),
            ("23 digits", vec![host, ("Content-Length", "12345678901234567890123")]),
            ("empty length", vec![host, ("Content-Length", "")]),
            ("two lengths", vec![host, ("Content-Length", "0"), ("Content-Length", "70")]),
            ("te and cl", vec![host, ("Transfer-Encoding", "chunked"), ("Content-Length", "3")]),
            ("empty te", vec![host, ("Transfer-Encoding", "")]),
        ] {
            assert!(
                framing((1, 1), &headers)
                    .unwrap_err()
                    .starts_with("Malformed"),
                "{}",
                what
            );
        }
        assert!(framing((1, 0), &[("Transfer-Encoding", "chunked")]).is_err());
        for coding in ["gzip", "gzip, chunked", "chunked, gzip", "chunked, chunked", "xchunked"] {
            assert!(
                framing((1, 1), &[host, ("Transfer-Encoding", coding)])
                    .unwrap_err()
                    .starts_with("NotImplemented"),
                "{}",
                coding
            );
        }
    }

    #[test]
    fn hosts() {
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]", "[::1]:80", "door.local", "a:"] {
            assert!(super::valid_host(ok), "{}", ok);
        }
        for bad in ["", ":80", "[::1", "[]", "a:b", "a:1:2", "[::1]x", "a b", "a/b", "a@b", "[::1]:123456"] {
            assert!(!super::valid_host(bad), "{}", bad);
        }
    }
}
