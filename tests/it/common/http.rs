//! The HTTP/1.1 client: requests over plain `TcpStream`s, responses read with a timeout, and
//! the REST calls the tests make (post, trigger, list events).

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;

use serde_json::Value;

use super::*;

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts `status` and the contract's error shape `{"error": code, "message": text}`.
    pub fn assert_error(&self, status: u16) -> &Response {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {} {:?}",
            self.status,
            self.text()
        );
        self.assert_error_shape();
        self
    }

    /// Asserts the error shape without pinning the status (any 4xx/5xx).
    pub fn assert_error_shape(&self) -> &Response {
        assert!(
            self.status >= 400,
            "expected an error status, got {} {:?}",
            self.status,
            self.text()
        );
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.contains("application/json"),
            "error {} has content-type {ct:?}, body {:?}",
            self.status,
            self.text()
        );
        let v = self.json();
        let code = v.get("error").and_then(Value::as_str);
        let message = v.get("message").and_then(Value::as_str);
        assert!(
            code.is_some_and(|c| !c.is_empty()),
            "error body lacks a string \"error\": {v}"
        );
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "error body lacks a string \"message\": {v}"
        );
        self
    }
}

/// A TCP connection to the server with read/write timeouts and Nagle off.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Writes one request. Adds `Host`, and `Content-Length` when there is a body or the method is
/// POST/PUT (unless the caller set one).
pub fn write_request(
    stream: &mut impl Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !has_length && (!body.is_empty() || method == "POST" || method == "PUT") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    stream.flush()
}

pub(super) fn read_line_crlf(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response head",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Response headers in the order received.
pub type Headers = Vec<(String, String)>;

/// Reads a status line and headers.
pub fn read_head(r: &mut impl BufRead) -> io::Result<(u16, String, Headers)> {
    let status_line = read_line_crlf(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {status_line:?}"),
        ));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {status_line:?}"),
        )
    })?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line_crlf(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad header {line:?}"))
        })?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((status, reason, headers))
}

pub fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(super) fn is_chunked(headers: &[(String, String)]) -> bool {
    header_of(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

pub(super) fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line_crlf(r)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                if read_line_crlf(r)?.is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        read_line_crlf(r)?;
    }
}

/// Reads one complete response (head and body) from `r`.
pub fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let (status, _reason, headers) = read_head(r)?;
    let body = if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Vec::new()
    } else if is_chunked(&headers) {
        read_chunked(r)?
    } else if let Some(len) = header_of(&headers, "content-length") {
        let len: usize = len.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad content-length {len:?}"),
            )
        })?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body)?;
        body
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// One request on a fresh connection (`Connection: close`); errors are returned.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        all.push(("Connection", "close"));
    }
    write_request(&mut stream, method, path, &all, body)?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, method)
}

/// One request on a fresh connection; panics (naming the request) if the exchange fails.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: no complete response: {e}"))
}

fn auth_headers(token: Option<&str>) -> Vec<(String, String)> {
    token
        .map(|t| vec![("Authorization".to_string(), format!("Bearer {t}"))])
        .unwrap_or_default()
}

/// GET with an optional Bearer token.
pub fn get(port: u16, path: &str, token: Option<&str>) -> Response {
    let owned = auth_headers(token);
    let headers: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    request(port, "GET", path, &headers, b"")
}

/// POST a body as `application/json` with an optional Bearer token.
pub fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> Response {
    let mut owned = auth_headers(token);
    owned.push(("Content-Type".into(), "application/json".into()));
    let headers: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    request(port, "POST", path, &headers, body.as_bytes())
}

/// POST /api/events, asserting 201; returns the stored event.
pub fn post_event(port: u16, token: Option<&str>, event_type: &str, data: Value) -> Value {
    let body = serde_json::json!({"event_type": event_type, "data": data}).to_string();
    let resp = post(port, "/api/events", token, &body);
    assert_eq!(
        resp.status,
        201,
        "POST /api/events {event_type}: {} {:?}",
        resp.status,
        resp.text()
    );
    let event = resp.json();
    assert_event_shape(&event);
    event
}

/// POST /api/trigger-doorbell, asserting 200; returns the stored event.
pub fn trigger(port: u16, token: Option<&str>) -> Value {
    let resp = post(port, "/api/trigger-doorbell", token, "");
    assert_eq!(
        resp.status,
        200,
        "POST /api/trigger-doorbell: {} {:?}",
        resp.status,
        resp.text()
    );
    let event = resp.json();
    assert_event_shape(&event);
    assert_eq!(event["event_type"], "doorbell_pressed", "{event}");
    assert_eq!(event["source"], "api", "{event}");
    event
}

pub fn id_of(event: &Value) -> u64 {
    event["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("event without an integer id: {event}"))
}

/// `GET /api/events?QUERY` → the `events` array (asserting 200).
pub fn list_events(port: u16, token: Option<&str>, query: &str) -> Vec<Value> {
    let resp = get(port, &format!("/api/events?{query}"), token);
    assert_eq!(
        resp.status,
        200,
        "GET /api/events?{query}: {} {:?}",
        resp.status,
        resp.text()
    );
    let v = resp.json();
    v["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array: {v}"))
        .clone()
}

/// Every stored event, oldest first, paging through `/api/events` with `limit` and `before`.
pub fn all_events(port: u16, token: Option<&str>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let query = match before {
            Some(b) => format!("limit=97&before={b}"),
            None => "limit=97".to_string(),
        };
        let page = list_events(port, token, &query);
        if page.is_empty() {
            break;
        }
        for pair in page.windows(2) {
            assert!(
                id_of(&pair[0]) > id_of(&pair[1]),
                "/api/events?{query} not newest first"
            );
        }
        if let Some(b) = before {
            assert!(id_of(&page[0]) < b, "before={b} is not exclusive");
        }
        before = Some(id_of(page.last().unwrap()));
        out.extend(page);
        assert!(out.len() < 1_000_000, "paging never ends");
    }
    out.reverse();
    out
}
