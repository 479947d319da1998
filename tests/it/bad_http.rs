//! Malformed, oversized and stalled requests: the bad connection gets a 4xx or is closed, and
//! the server keeps answering everyone else promptly while it is open.

use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const CONFIG: &str = "request_timeout_s = 1\n";

/// What became of a bad connection.
#[derive(Debug)]
enum Outcome {
    Response(Response),
    Closed(String),
    Timeout,
}

fn outcome(stream: &TcpStream, timeout: Duration) -> Outcome {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut reader = BufReader::new(stream);
    match read_response(&mut reader, "GET") {
        Ok(resp) => Outcome::Response(resp),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Outcome::Timeout
        }
        Err(e) => Outcome::Closed(e.to_string()),
    }
}

/// Another client is served, quickly, right now.
fn assert_responsive(port: u16, while_what: &str) {
    let started = Instant::now();
    let resp = get(port, "/api/status", None);
    let took = started.elapsed();
    assert_eq!(resp.status, 200, "while {while_what}: {:?}", resp.text());
    assert!(
        took < Duration::from_secs(1),
        "GET /api/status took {took:?} while {while_what}"
    );
}

/// The bad connection must get `expected` (or some 4xx if `expected` is empty) or be closed.
fn assert_rejected(stream: &TcpStream, expected: &[u16], what: &str) {
    match outcome(stream, Duration::from_secs(5)) {
        Outcome::Response(resp) => {
            if expected.is_empty() {
                assert!(
                    (400..500).contains(&resp.status),
                    "{what}: {} {:?}",
                    resp.status,
                    resp.text()
                );
            } else {
                assert!(
                    expected.contains(&resp.status),
                    "{what}: expected {expected:?}, got {} {:?}",
                    resp.status,
                    resp.text()
                );
            }
        }
        Outcome::Closed(how) => eprintln!("{what}: closed without an answer ({how})"),
        Outcome::Timeout => panic!("{what}: neither answered nor closed within 5 s"),
    }
}

/// Writes `bytes` from another thread (the server may close before it has read them all).
fn write_in_background(stream: &TcpStream, bytes: Vec<u8>) -> thread::JoinHandle<io::Result<()>> {
    let mut stream = stream.try_clone().unwrap();
    thread::spawn(move || stream.write_all(&bytes))
}

#[test]
fn garbage_bytes() {
    let server = Server::with_config(CONFIG, &[]);
    let port = server.port();
    let mut seed: u32 = 0x1234_5678;
    let garbage: Vec<u8> = (0..4096)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        })
        .chain(*b"\r\n\r\n")
        .collect();
    let mut bad = connect(port);
    let _ = bad.write_all(&garbage);
    assert_responsive(port, "a connection sent garbage");
    assert_rejected(&bad, &[], "garbage bytes");

    // (r2) A malformed request is a 400 and an unknown HTTP version a 505, with the JSON error.
    for (what, bytes, expected) in [
        ("no version", &b"GET /api/status\r\n\r\n"[..], 400),
        ("bad version", &b"GET /api/status HTTP/9.9\r\nHost: localhost\r\n\r\n"[..], 505),
        ("header without colon", &b"GET /api/status HTTP/1.1\r\nHost x\r\n\r\n"[..], 400),
        ("NUL in request line", &b"GET /api/\0status HTTP/1.1\r\nHost: localhost\r\n\r\n"[..], 400),
        (
            "bad content-length",
            &b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n{}"[..],
            400,
        ),
        (
            "negative content-length",
            &b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n{}"[..],
            400,
        ),
        (
            "conflicting content-lengths",
            &b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}"[..],
            400,
        ),
    ] {
        let mut bad = connect(port);
        let _ = bad.write_all(bytes);
        assert_responsive(port, what);
        assert_rejected(&bad, &[expected], what);
    }
    // Nothing of that was stored.
    assert!(all_events(port, None).is_empty());

    // An unknown method is the client's mistake: 4xx, never 5xx.
    let resp = request(port, "BREW", "/api/status", &[], b"");
    assert!(
        (400..500).contains(&resp.status),
        "BREW: {} {:?}",
        resp.status,
        resp.text()
    );
}

#[test]
fn http2_request_lines_are_answered_or_closed() {
    let server = Server::with_config(CONFIG, &[]);
    let port = server.port();
    for (what, bytes) in [
        ("HTTP/2 preface", &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]),
        (
            "HTTP/2.0 GET",
            &b"GET /api/status HTTP/2.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"[..],
        ),
    ] {
        let mut bad = connect(port);
        let _ = bad.write_all(bytes);
        assert_responsive(port, what);
        // 505 (HTTP Version Not Supported) is what an HTTP/1.1 server says here; a 4xx or
        // closing are acceptable too. Hanging is not.
        match outcome(&bad, Duration::from_secs(5)) {
            Outcome::Response(resp) => assert!(
                resp.status == 505 || (400..500).contains(&resp.status),
                "{what}: {} {:?}",
                resp.status,
                resp.text()
            ),
            Outcome::Closed(_) => {}
            Outcome::Timeout => {
                panic!("{what}: neither answered nor closed within 5 s (request_timeout_s = 1)")
            }
        }
    }
}

/// After an error answer the server closes the connection (it cannot know where the next
/// request would start).
fn assert_closed_soon(stream: &TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut reader = stream;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("{what}: the connection stayed open after the error answer")
            }
            Err(_) => return,
        }
    }
}

#[test]
fn request_line_of_64_kib() {
    let server = Server::with_config(CONFIG, &[]);
    let port = server.port();
    let bad = connect(port);
    let mut bytes = b"GET /".to_vec();
    bytes.extend(std::iter::repeat_n(b'a', 64 * 1024));
    bytes.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let writer = write_in_background(&bad, bytes);
    assert_responsive(port, "a 64 KiB request line was being sent");
    assert_rejected(&bad, &[414], "64 KiB request line");
    assert_closed_soon(&bad, "64 KiB request line");
    let _ = writer.join();
    assert_responsive(port, "after a 64 KiB request line");

    // Just under the limit is an ordinary (unknown) path.
    let path = format!("/{}", "b".repeat(8000));
    let resp = get(port, &path, None);
    assert_eq!(
        resp.status,
        404,
        "8000-byte path: {} {:?}",
        resp.status,
        resp.text()
    );
}

#[test]
fn header_line_of_64_kib_and_too_many_headers() {
    let server = Server::with_config(CONFIG, &[]);
    let port = server.port();

    let bad = connect(port);
    let mut bytes = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nX-Big: ".to_vec();
    bytes.extend(std::iter::repeat_n(b'h', 64 * 1024));
    bytes.extend_from_slice(b"\r\n\r\n");
    let writer = write_in_background(&bad, bytes);
    assert_responsive(port, "a 64 KiB header line was being sent");
    assert_rejected(&bad, &[431], "64 KiB header line");
    assert_closed_soon(&bad, "64 KiB header line");
    let _ = writer.join();

    // A long but legal header (a big cookie, say) is fine.
    let long = "c".repeat(8000);
    let resp = request(port, "GET", "/api/status", &[("X-Long", &long)], b"");
    assert_eq!(resp.status, 200, "an 8000-byte header: {:?}", resp.text());

    // 100 header lines (Host included) are allowed, 101 are not.
    let head_with = |n: usize| {
        let mut head =
            String::from("GET /api/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for i in 0..n - 2 {
            head.push_str(&format!("X-H-{i}: v\r\n"));
        }
        head.push_str("\r\n");
        head
    };
    let mut ok = connect(port);
    ok.write_all(head_with(100).as_bytes()).unwrap();
    match outcome(&ok, Duration::from_secs(5)) {
        Outcome::Response(resp) => assert_eq!(resp.status, 200, "100 headers: {:?}", resp.text()),
        other => panic!("100 headers: {other:?}"),
    }
    let mut bad = connect(port);
    let _ = bad.write_all(head_with(101).as_bytes());
    assert_responsive(port, "a request with 101 headers");
    assert_rejected(&bad, &[431], "101 headers");
    assert_closed_soon(&bad, "101 headers");
}

#[test]
fn huge_header_line_does_not_grow_memory() {
    let server = Server::with_config(CONFIG, &[]);
    let port = server.port();
    assert_responsive(port, "warming up");
    let before = rss_bytes(server.pid());
    let bad = connect(port);
    let mut bytes = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nX-Huge: ".to_vec();
    bytes.extend(std::iter::repeat_n(b'm', 16 << 20));
    let writer = write_in_background(&bad, bytes);
    assert_rejected(&bad, &[431], "16 MiB header line");
    drop(bad);
    let _ = writer.join().expect("writer thread");
    assert_responsive(port, "after a 16 MiB header line");
    let after = rss_bytes(server.pid());
    assert!(
        after < before + (4 << 20),
        "RSS grew from {before} to {after} bytes for one oversized header"
    );
}

#[test]
fn half_a_request_then_silence_is_dropped() {
    let server = Server::with_config(CONFIG, &[]);
    let port = server.port();
    let mut stalled = connect(port);
    stalled
        .write_all(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let sent = Instant::now();
    assert_responsive(port, "a half-sent request is open");
    match outcome(&stalled, Duration::from_secs(5)) {
        Outcome::Closed(_) => {}
        Outcome::Response(resp) => assert_eq!(
            resp.status,
            408,
            "half request: {} {:?}",
            resp.status,
            resp.text()
        ),
        Outcome::Timeout => {
            panic!("a half-sent request was kept open for 5 s (request_timeout_s = 1)")
        }
    }
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(4) && took > Duration::from_millis(500),
        "dropped after {took:?} with request_timeout_s = 1"
    );

    // Also with only the first few bytes of the request line.
    let mut stalled = connect(port);
    stalled.write_all(b"GE").unwrap();
    assert_responsive(port, "two bytes of a request are open");
    assert!(
        !matches!(outcome(&stalled, Duration::from_secs(5)), Outcome::Timeout),
        "a 2-byte request was kept open"
    );
}

#[test]
fn slowloris_drip_is_cut_off_by_the_head_deadline() {
    let server = Server::with_config(CONFIG, &[]);
    let port = server.port();
    let mut drip = connect(port);
    drip.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    drip.write_all(head).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let cut_after = loop {
        // One more byte every ~100 ms (paced by the read timeout): each byte is within the idle
        // timeout, only the deadline for the whole head can stop this.
        if drip.write_all(b"a").is_err() {
            break started.elapsed();
        }
        match drip.read(&mut buf) {
            Ok(_) => break started.elapsed(),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break started.elapsed(),
        }
        if started.elapsed() > Duration::from_secs(8) {
            panic!("a dripping request head was still open after 8 s (request_timeout_s = 1)");
        }
        if started.elapsed().as_millis() % 1000 < 100 {
            assert_responsive(port, "a slowloris client drips");
        }
    };
    assert!(
        cut_after < Duration::from_secs(4),
        "the dripping head was cut after {cut_after:?}"
    );
}

#[test]
fn idle_connections_are_closed() {
    let server = Server::with_config(CONFIG, &[]);
    let port = server.port();

    // Connected, never sends anything.
    let silent = connect(port);
    let started = Instant::now();
    assert_responsive(port, "a silent connection is open");
    assert!(
        !matches!(outcome(&silent, Duration::from_secs(5)), Outcome::Timeout),
        "a silent connection was kept for 5 s"
    );
    assert!(started.elapsed() < Duration::from_secs(4));

    // Keep-alive after one complete request, then idle.
    let mut keep = connect(port);
    write_request(&mut keep, "GET", "/api/status", &[], b"").unwrap();
    let mut reader = BufReader::new(keep.try_clone().unwrap());
    let resp = read_response(&mut reader, "GET").expect("first response");
    assert_eq!(resp.status, 200);
    // A second request on the same connection works (keep-alive)...
    write_request(&mut keep, "GET", "/api/status", &[], b"").unwrap();
    let resp = read_response(&mut reader, "GET").expect("second response on keep-alive");
    assert_eq!(resp.status, 200);
    // ...and then idleness closes it.
    let idle_from = Instant::now();
    keep.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "an idle keep-alive connection was kept for 5 s"
        ),
    }
    assert!(idle_from.elapsed() < Duration::from_secs(4));
}

#[test]
fn many_stalled_connections_do_not_block_others() {
    // Every test client is 127.0.0.1: lift the per-address cap to test the total.
    let server = Server::with_config(
        "request_timeout_s = 5\nmax_connections_per_ip = 1000\n",
        &[],
    );
    let port = server.port();
    let stalled: Vec<TcpStream> = (0..150)
        .map(|i| {
            let mut s = connect(port);
            let part: &[u8] = match i % 3 {
                0 => b"",
                1 => b"GET /api/sta",
                _ => b"POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"ev",
            };
            s.write_all(part).unwrap();
            s
        })
        .collect();
    for i in 0..5 {
        assert_responsive(
            port,
            &format!("150 stalled connections are open (round {i})"),
        );
    }
    // A stream still works too.
    let mut sse = Sse::connect(port, "/stream/events");
    let event = trigger(port, None);
    assert_eq!(sse.expect_event().json(), event);
    drop(stalled);
    assert_responsive(port, "after the stalled connections went away");
    assert_eq!(all_events(port, None).len(), 1, "a stalled body was stored");
}

#[test]
fn connection_cap_answers_503_and_recovers() {
    let server = Server::with_config("request_timeout_s = 10\nmax_connections = 10\n", &[]);
    let port = server.port();
    // No request first: its connection would keep a slot until the server's thread has seen it
    // close, so the 10 below might not fill the cap (the 11th then got 200 under load).
    let stalled: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = connect(port);
            s.write_all(b"GET /api/st").unwrap();
            s
        })
        .collect();
    // The 11th connection is refused promptly (503 or closed), not left hanging.
    let started = Instant::now();
    match try_request(port, "GET", "/api/status", &[], b"") {
        Ok(resp) => {
            resp.assert_error(503);
        }
        Err(e) => assert!(
            !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "over max_connections: hung ({e})"
        ),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(stalled);
    // Once they are gone the server serves again (it learns of the closes asynchronously, so
    // retry briefly).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_request(port, "GET", "/api/status", &[], b"") {
            Ok(resp) if resp.status == 200 => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "not serving 5 s after the stalled connections closed: {other:?}"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
