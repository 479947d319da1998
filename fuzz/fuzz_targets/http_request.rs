//! A request as raw bytes, through the same path as the server: the (patched) tiny_http head
//! parser on a real loopback socket, then our target parsing, routing and static-file path
//! checks, and the body read as a handler reads it. Any bytes give requests or a closed
//! connection, never a panic, a hang or a path outside the dashboard root; and every request
//! that gets through has unambiguous framing (the rules of RFC 9112 the patch enforces).
//!
//! Half of the inputs are raw bytes; the other half (first byte odd) are built from pieces that
//! find framing bugs faster than random bytes do: Content-Length and Transfer-Encoding headers
//! in every combination, repeated, listed, signed, hex, overlong, and control bytes (NUL, bare
//! CR, bare LF, DEL, obs-fold, non-ASCII) spliced into the head, followed by a second request
//! that would be smuggled if the first one's end were misjudged. Every input is also read as a
//! `Range` field on its own (`check_range`).
#![no_main]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use porchlight::http::query::{IdFloor, Target, parse_event_id, parse_limit};
use porchlight::http::ranges::{self, Ask};
use porchlight::http::router::resolve;
use porchlight::http::static_files::relative_path;
use tiny_http::{ClientConnection, HeadLimits, Request};

fn listener() -> &'static TcpListener {
    static LISTENER: OnceLock<TcpListener> = OnceLock::new();
    LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
}

const LENGTHS: &[&str] = &[
    "0", "5", "25", "70", "007", "-1", "+5", "0x2", "2, 40", "5, 5", "5,5", "", " ", "1e3",
    "12345678901234567890123", "18446744073709551615", "5 5", "\t5",
];
const CODINGS: &[&str] = &[
    "chunked", "Chunked", "gzip", "chunked, gzip", "gzip, chunked", "chunked, chunked", "",
    "xchunked", "chunked;q=1", " chunked",
];
const SPLICES: &[&[u8]] = &[
    b"\0", b"\r", b"\n", b"\x01", b"\x7f", b"\xc3\xa9", b"\r\n ", b"\r\n\t", b" ", b":", b"\r\n",
];
const BODIES: &[&[u8]] = &[
    b"",
    b"{\"event_type\":\"x\"}",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"ffffffffffffffffff\r\nx\r\n",
    b"0\r\n\r\n",
    b"3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
];
const SMUGGLED: &[u8] = b"POST /api/trigger-doorbell HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";

/// Builds a request from `data`: each byte picks the next piece.
fn framed(data: &[u8]) -> Vec<u8> {
    let mut picks = data.iter().copied().chain(std::iter::repeat(0));
    let mut pick = |n: usize| usize::from(picks.next().unwrap_or(0)) % n;
    let mut head = String::from(["POST", "GET", "PUT"][pick(3)]);
    head.push_str(" /api/events ");
    head.push_str(["HTTP/1.1", "HTTP/1.0", "HTTP/1.2"][pick(3)]);
    head.push_str("\r\n");
    if pick(4) != 0 {
        head.push_str("Host: x\r\n");
    }
    for _ in 0..pick(4) {
        head.push_str(&format!("Content-Length: {}\r\n", LENGTHS[pick(LENGTHS.len())]));
    }
    for _ in 0..pick(3) {
        head.push_str(&format!("Transfer-Encoding: {}\r\n", CODINGS[pick(CODINGS.len())]));
    }
    head.push_str("Content-Type: application/json\r\n\r\n");
    let mut bytes = head.into_bytes();
    for _ in 0..pick(3) {
        let at = pick(bytes.len());
        let splice = SPLICES[pick(SPLICES.len())];
        bytes.splice(at..at, splice.iter().copied());
    }
    bytes.extend_from_slice(BODIES[pick(BODIES.len())]);
    bytes.extend_from_slice(SMUGGLED);
    bytes
}

/// What the patched parser promises about every request it lets through.
fn assert_unambiguous(request: &Request) {
    let named = |name: &'static str| {
        request
            .headers()
            .iter()
            .filter(move |h| h.field.equiv(name))
            .map(|h| h.value.as_str())
    };
    let lengths: Vec<&str> = named("Content-Length").flat_map(|v| v.split(',')).collect();
    let codings: Vec<&str> = named("Transfer-Encoding").collect();
    assert!(
        lengths.is_empty() || codings.is_empty(),
        "both Content-Length and Transfer-Encoding let through"
    );
    let values: Vec<&str> = lengths.iter().map(|v| v.trim()).collect();
    assert!(
        values.iter().all(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())),
        "a Content-Length that is not digits let through: {values:?}"
    );
    assert!(
        values.windows(2).all(|w| w[0].parse::<u64>().ok() == w[1].parse::<u64>().ok()),
        "different Content-Lengths let through: {values:?}"
    );
    assert!(
        codings.is_empty() || (codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked")),
        "a transfer coding other than chunked let through: {codings:?}"
    );
    if *request.http_version() == (1, 1) {
        assert_eq!(named("Host").count(), 1, "an HTTP/1.1 request without exactly one Host");
    }
    for header in request.headers() {
        let value = header.value.as_str();
        assert!(
            value.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)),
            "a control or non-ASCII byte in a header value let through: {value:?}"
        );
    }
    let url = request.url();
    assert!(url.starts_with('/') || url == "*", "target {url:?}");
    assert!(url.bytes().all(|b| (0x21..0x7f).contains(&b)), "target {url:?}");
}

/// A `Range` field as the stored-body routes read it (`http::ranges`): whatever it says, a
/// span it grants lies inside the body.
fn check_range(field: &str) {
    for len in [0, 1, 7, 1 << 20, u64::MAX] {
        if let Ask::Span { first, last } = ranges::parse(field, len) {
            assert!(first <= last && last < len, "{first}-{last} of {len} from {field:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The input as a Range field on its own too: random text reaches the parser far more often
    // than through a request head.
    check_range(&String::from_utf8_lossy(data));
    if data.len() > 48 * 1024 {
        // Stays within loopback socket buffers so one thread can write, then read.
        return;
    }
    let bytes = match data.split_first() {
        Some((mode, rest)) if mode & 1 == 1 => framed(rest),
        _ => data.to_vec(),
    };
    let listener = listener();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    client.write_all(&bytes).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let limits = HeadLimits {
        request_deadline: Duration::from_millis(500),
        ..HeadLimits::default()
    };
    for mut request in ClientConnection::from_tcp_stream(server, limits).take(64) {
        assert_unambiguous(&request);
        // A malformed escape in the path is a 400 before routing: nothing more to check.
        let Ok(target) = Target::parse(request.url()) else {
            continue;
        };
        let _ = target.get_event_id("after", IdFloor::ZeroMeansStart);
        if let Some(limit) = target.get("limit") {
            if let Ok(n) = parse_limit(limit, 500) {
                assert!((1..=500).contains(&n));
            }
        }
        if let Some(id) = target.path.rsplit('/').next() {
            if let Ok(id) = parse_event_id(id, IdFloor::One) {
                assert!(id >= 1 && i64::try_from(id).is_ok());
            }
        }
        let _ = resolve(request.method(), &target.path);
        for field in request.headers().iter().filter(|h| h.field.equiv("Range")) {
            check_range(field.value.as_str());
        }
        if let Some(relative) = relative_path(&target.path) {
            assert!(
                !relative
                    .split('/')
                    .any(|s| s == ".." || s.is_empty() || s.starts_with('.')),
                "unsafe static path {relative:?} from {:?}",
                target.path
            );
        }
        // The body as a handler reads it: bounded, and it ends (deadline, length or EOF).
        let mut body = Vec::new();
        let _ = request.as_reader().take(64 * 1024).read_to_end(&mut body);
    }
});
