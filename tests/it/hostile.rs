//! Hostile clients (issue 11): a device on the LAN or a web page someone at home opens must not
//! be able to take porchlight down, wedge it, or act through it. Each test attacks a class of
//! defect over real sockets against the real binary, with more shapes than the one example that
//! found it: every route, every transport, other numbers, other header shapes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::fd::FromRawFd;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A connection to 127.0.0.1:`port` from the loopback address `source`, so one test can be
/// several client addresses (Linux routes all of 127.0.0.0/8 to lo).
fn connect_from(source: Ipv4Addr, port: u16) -> io::Result<TcpStream> {
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with sockaddr_in values that live on the
    // stack for the duration of each call; on success the fd is owned by the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let remote = sockaddr(Ipv4Addr::LOCALHOST, port);
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(stream)
    }
}

/// One request from `source`, `Connection: close`.
fn request_from(
    source: Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let mut stream = connect_from(source, port)?;
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    write_request(&mut stream, method, path, &all, b"")?;
    read_response(&mut BufReader::new(stream), method)
}

/// Sends raw bytes on a fresh connection (half-closing after them if `half_close`), then reads
/// one response and whether the server closed the connection after it.
fn raw_exchange(port: u16, bytes: &[u8], half_close: bool) -> (Option<Response>, bool) {
    let stream = connect(port);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let bytes = bytes.to_vec();
        thread::spawn(move || {
            let _ = stream.write_all(&bytes);
            if half_close {
                let _ = stream.shutdown(std::net::Shutdown::Write);
            }
        })
    };
    let mut reader = BufReader::new(stream);
    let method = if bytes.starts_with(b"HEAD ") {
        "HEAD"
    } else {
        "GET"
    };
    let response = read_response(&mut reader, method).ok();
    let mut rest = [0u8; 256];
    let closed = loop {
        match reader.read(&mut rest) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break false;
            }
            Err(_) => break true,
        }
    };
    let _ = writer.join();
    (response, closed)
}

/// CPU time (user + system) the process has used, from /proc/PID/stat, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clients(port: u16, token: Option<&str>) -> Value {
    get(port, "/api/status", token).json()["clients"].clone()
}

/// Waits until `/api/status` shows no streaming client of any kind.
fn wait_no_clients(port: u16, token: Option<&str>, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let now = clients(port, token);
        if now == json!({"sse": 0, "websocket": 0, "video": 0}) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {now} after {within:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the only open connection is the one asking.
fn wait_connections_settle(port: u16, token: Option<&str>, what: &str) {
    let open = wait_metric(
        port,
        token,
        "porchlight_connections_open",
        Duration::from_secs(5),
        |v| v == 1.0,
    );
    assert_eq!(open, Some(1.0), "{what}: connections still open");
}

/// Opens a stream (`GET`) and reads its head, then hangs up.
fn open_stream_head(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Headers, TcpStream) {
    let mut stream = connect(port);
    write_request(&mut stream, "GET", path, headers, b"").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (status, _, headers) = read_head(&mut reader).unwrap();
    (status, headers, stream)
}

const WS_HANDSHAKE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

fn ws_send(ws: &mut tungstenite::WebSocket<TcpStream>, text: &str) {
    ws.send(tungstenite::Message::Text(text.into())).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Panics release everything
// ---------------------------------------------------------------------------------------------

/// The debug binary's test instrumentation makes these handlers panic: a plain route before its
/// handler runs, and each kind of stream once it holds its slot, hub subscription and socket.
const PANIC_POINTS: &str = "route:/api/status,route:/api/events,stream:/stream/video,\
stream:/stream/events,stream:/stream/system-status,stream:/ws";

#[test]
fn a_panicking_handler_releases_everything_and_is_logged_once() {
    let server = Server::try_start_wrapped(
        &["env", &format!("PORCHLIGHT_TEST_PANIC={PANIC_POINTS}")],
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let port = server.port();
    assert_eq!(get(port, "/metrics", None).status, 200);
    let baseline_threads = threads(server.pid());
    const ROUNDS: usize = 15;
    let cases: [(&str, &[(&str, &str)]); 6] = [
        ("/api/status", &[]),
        ("/api/events", &[]),
        ("/stream/video", &[]),
        ("/stream/events", &[]),
        ("/stream/system-status", &[]),
        ("/ws", &WS_HANDSHAKE),
    ];
    for _ in 0..ROUNDS {
        for (path, headers) in cases {
            // The connection ends (tiny_http's 500 for a dropped request, or a plain close),
            // never hangs.
            let mut stream = connect(port);
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            write_request(&mut stream, "GET", path, headers, b"").unwrap();
            let mut all = Vec::new();
            match stream.read_to_end(&mut all) {
                Ok(_) => {}
                Err(e) => assert!(
                    !matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ),
                    "GET {path}: the connection of a panicked handler stayed open"
                ),
            }
        }
    }
    let panics = (ROUNDS * cases.len()) as f64;
    let counted = wait_metric(
        port,
        None,
        "porchlight_handler_panics_total",
        Duration::from_secs(5),
        |v| v == panics,
    );
    assert_eq!(counted, Some(panics));
    // Everything was given back: connections, stream slots, threads.
    wait_connections_settle(port, None, "after panicking handlers");
    let text = metrics(port, None);
    for kind in ["sse", "websocket", "video"] {
        assert_eq!(
            metric(&text, &format!("porchlight_clients{{kind=\"{kind}\"}}")),
            Some(0.0),
            "{kind} slots leaked"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads(server.pid()) > baseline_threads + 1 {
        assert!(
            Instant::now() < deadline,
            "threads: {} after, {baseline_threads} before",
            threads(server.pid())
        );
        thread::sleep(Duration::from_millis(50));
    }
    // Each panic is one log line naming its request, and no default-hook noise.
    let wanted = |path: &str| format!("panic while answering GET \"{path}\" from 127.0.0.1:");
    let log = server.wait_stderr(|log| {
        cases
            .iter()
            .all(|(path, _)| log.matches(&wanted(path)).count() >= ROUNDS)
    });
    for (path, _) in cases {
        let wanted = wanted(path);
        assert_eq!(log.matches(&wanted).count(), ROUNDS, "{wanted}\n{log}");
    }
    assert!(!log.contains("panicked at"), "default panic output:\n{log}");
    // And the server serves as before (other paths do not panic), streams included.
    let event = trigger(port, None);
    let stored = get(port, &format!("/api/events/{}", id_of(&event)), None);
    assert_eq!(stored.json(), event);
    let (status, _, _) = open_stream_head(port, "/stream/video/after", &[]);
    assert_eq!(status, 200);
}

#[test]
fn hostile_fps_values_are_refused_and_hold_nothing() {
    let server = Server::start(&[]);
    let port = server.port();
    for fps in [
        "1e-320",
        "0",
        "0.0",
        "-1",
        "0.0000001",
        "0.09",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "infinity",
        "",
        "abc",
        "0x10",
        "%2B5",
        "1e",
        "1,5",
        "5fps",
    ] {
        for path in ["/stream/video", "/stream/video/phone-1"] {
            let resp = get(port, &format!("{path}?quality=low&fps={fps}"), None);
            resp.assert_error(400);
            assert!(resp.text().contains("fps"), "{fps}: {}", resp.text());
        }
    }
    // Above the preset's rate is the preset's rate, not an error.
    for fps in ["0.1", "1e308", "1e999", "99999"] {
        let (status, _, stream) = open_stream_head(port, &format!("/stream/video?fps={fps}"), &[]);
        assert_eq!(status, 200, "fps={fps}");
        drop(stream);
    }
    wait_no_clients(port, None, Duration::from_secs(5), "after the fps probes");
    wait_connections_settle(port, None, "after the fps probes");
}

#[test]
fn viewers_that_hang_up_free_their_slots_within_seconds() {
    let server = Server::with_config(
        "max_video_clients = 4\nheartbeat_s = 60\nstatus_interval_s = 60\n",
        &[],
    );
    let port = server.port();
    // MJPEG viewers at the slowest rate: nothing is due for ten seconds after the first frame.
    for round in 0..2 {
        let viewers: Vec<TcpStream> = (0..4)
            .map(|_| open_stream_head(port, "/stream/video?quality=low&fps=0.1", &[]).2)
            .collect();
        assert_eq!(clients(port, None)["video"], 4);
        let over = get(port, "/stream/video?fps=0.1", None);
        over.assert_error(503);
        drop(viewers);
        let gone = Instant::now();
        wait_no_clients(port, None, Duration::from_secs(4), "MJPEG viewers hung up");
        eprintln!(
            "round {round}: 4 MJPEG ghosts freed in {:?}",
            gone.elapsed()
        );
    }
    // Event and status streams between heartbeats (60 s here).
    let streams: Vec<Sse> = (0..6)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/stream/events"
            } else {
                "/stream/system-status"
            };
            Sse::connect(port, path)
        })
        .collect();
    assert_eq!(clients(port, None)["sse"], 6);
    drop(streams);
    wait_no_clients(port, None, Duration::from_secs(4), "SSE clients hung up");
    // A WebSocket that vanishes.
    let ws = ws_connect(port, "");
    assert_eq!(clients(port, None)["websocket"], 1);
    drop(ws);
    wait_no_clients(port, None, Duration::from_secs(4), "a WebSocket hung up");
    wait_connections_settle(port, None, "after the ghosts");
}

// ---------------------------------------------------------------------------------------------
// HEAD and 405
// ---------------------------------------------------------------------------------------------

/// Headers whose values may differ between two answers of the same route.
const VOLATILE: [&str; 4] = ["date", "content-length", "x-timestamp", "x-frame-id"];

fn header_names(headers: &Headers) -> Vec<String> {
    let mut names: Vec<String> = headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    names.sort();
    names
}

fn stable_headers(headers: &Headers) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .filter(|(k, _)| !VOLATILE.contains(&k.as_str()))
        .collect();
    kept.sort();
    kept
}

/// A HEAD with `Connection: close`: its head, and every byte after it (must be none).
fn head(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Headers, Vec<u8>, Duration) {
    let started = Instant::now();
    let mut stream = connect(port);
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    write_request(&mut stream, "HEAD", path, &all, b"").unwrap();
    let mut reader = BufReader::new(stream);
    let (status, _, headers) = read_head(&mut reader).unwrap();
    let mut body = Vec::new();
    reader
        .read_to_end(&mut body)
        .unwrap_or_else(|e| panic!("HEAD {path}: not closed after the head: {e}"));
    (status, headers, body, started.elapsed())
}

#[test]
fn head_answers_like_get_on_every_get_route_and_opens_nothing() {
    let server = Server::with_config("max_video_clients = 1\n", &[]);
    let port = server.port();
    let event = trigger(port, None);
    let id = id_of(&event);
    let streams = [
        "/stream/events",
        "/stream/events?types=doorbell_pressed",
        "/stream/system-status",
        "/stream/video",
        "/stream/video/cam-1?quality=low&fps=2",
    ];
    let plain = [
        "/".to_string(),
        "/index.html".to_string(),
        "/js/main.js".to_string(),
        "/no-such-file.css".to_string(),
        "/api/status".to_string(),
        "/api/whoami".to_string(),
        "/api/events".to_string(),
        "/api/events?limit=1".to_string(),
        format!("/api/events/{id}"),
        "/api/events/99999".to_string(),
        format!("/api/events/{id}/snapshot.jpg"),
        "/api/snapshot.jpg".to_string(),
        "/api/snapshot.jpg?quality=low".to_string(),
        "/metrics".to_string(),
        "/ws".to_string(),
        "/api/events/abc".to_string(),
        "/stream/video?fps=0".to_string(),
        "/stream/events?last_event_id=x".to_string(),
        "/api/nothing".to_string(),
    ];
    // Bodies that change from one answer to the next (so their lengths may too).
    let changing = [
        "/api/status",
        "/metrics",
        "/api/snapshot.jpg",
        "/api/snapshot.jpg?quality=low",
    ];
    for path in &plain {
        let got = request(port, "GET", path, &[], b"");
        let (status, headers, body, _) = head(port, path, &[]);
        assert_eq!(status, got.status, "HEAD {path}");
        assert!(
            body.is_empty(),
            "HEAD {path} sent a body of {} bytes",
            body.len()
        );
        assert_eq!(
            header_names(&headers),
            header_names(&got.headers),
            "HEAD {path}"
        );
        assert_eq!(
            stable_headers(&headers),
            stable_headers(&got.headers),
            "HEAD {path}"
        );
        if got.header("content-length").is_some() && !changing.contains(&path.as_str()) {
            assert_eq!(
                headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.as_str()),
                got.header("content-length"),
                "HEAD {path}: Content-Length"
            );
        }
    }
    for path in streams {
        let (get_status, get_headers, stream) = open_stream_head(port, path, &[]);
        drop(stream);
        wait_no_clients(port, None, Duration::from_secs(4), path);
        let (status, headers, body, took) = head(port, path, &[]);
        assert_eq!(status, get_status, "HEAD {path}");
        assert!(body.is_empty(), "HEAD {path} streamed {} bytes", body.len());
        assert!(took < Duration::from_secs(2), "HEAD {path} took {took:?}");
        assert_eq!(
            stable_headers(&headers),
            stable_headers(&get_headers),
            "HEAD {path}"
        );
        assert_eq!(
            clients(port, None),
            json!({"sse": 0, "websocket": 0, "video": 0}),
            "HEAD {path}"
        );
    }
    // Over a stream's limit, HEAD says what GET would: 503.
    let (_, _, viewer) = open_stream_head(port, "/stream/video", &[]);
    let refused = get(port, "/stream/video", None);
    let (status, headers, _, _) = head(port, "/stream/video", &[]);
    assert_eq!((status, refused.status), (503, 503));
    assert!(
        headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
    );
    drop(viewer);
    // HEAD of /ws with a handshake cannot upgrade; it opens nothing.
    let (status, _, body, _) = head(port, "/ws", &WS_HANDSHAKE);
    assert_eq!(status, 400);
    assert!(body.is_empty());
    wait_no_clients(port, None, Duration::from_secs(4), "after the HEADs");
    wait_connections_settle(port, None, "after the HEADs");
}

#[test]
fn every_405_says_what_is_allowed() {
    let server = Server::start(&[]);
    let port = server.port();
    let get_head = ["GET", "HEAD"];
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        ("POST", "/api/status", get_head.to_vec()),
        ("PUT", "/api/whoami", get_head.to_vec()),
        ("DELETE", "/api/events/1", get_head.to_vec()),
        ("POST", "/api/events/1/snapshot.jpg", get_head.to_vec()),
        ("PATCH", "/api/snapshot.jpg", get_head.to_vec()),
        ("POST", "/stream/events", get_head.to_vec()),
        ("PUT", "/stream/system-status", get_head.to_vec()),
        ("POST", "/stream/video", get_head.to_vec()),
        ("DELETE", "/stream/video/cam", get_head.to_vec()),
        ("POST", "/ws", get_head.to_vec()),
        ("POST", "/metrics", get_head.to_vec()),
        ("POST", "/", get_head.to_vec()),
        ("BREW", "/index.html", get_head.to_vec()),
        ("GET", "/api/login", vec!["POST"]),
        ("HEAD", "/api/trigger-doorbell", vec!["POST"]),
        ("DELETE", "/api/trigger-doorbell", vec!["POST"]),
        ("DELETE", "/api/events", vec!["GET", "HEAD", "POST"]),
        ("PUT", "/api/events", vec!["GET", "HEAD", "POST"]),
    ];
    for (method, path, allowed) in cases {
        let resp = request(
            port,
            method,
            path,
            &[("Content-Type", "application/json")],
            b"",
        );
        assert_eq!(resp.status, 405, "{method} {path}: {:?}", resp.text());
        if method != "HEAD" {
            resp.assert_error(405);
        }
        let allow = resp
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: 405 without Allow"));
        let mut listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        listed.sort();
        let mut wanted = allowed.clone();
        wanted.sort();
        assert_eq!(listed, wanted, "{method} {path}: Allow: {allow}");
    }
    assert!(
        all_events(port, None).is_empty(),
        "a refused method stored something"
    );
}

// ---------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------

/// Ids no event can have, as clients write them.
const BAD_IDS: [&str; 14] = [
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "-1",
    "%2B1",
    "1.0",
    "1e3",
    "0x10",
    "%201",
    "1%20",
    "abc",
    "",
    "%EF%BC%91",
];

#[test]
fn ids_outside_their_domain_are_refused_on_every_route() {
    let server = Server::start(&[]);
    let port = server.port();
    trigger(port, None);
    let ws = |query: &str| request(port, "GET", &format!("/ws?{query}"), &WS_HANDSHAKE, b"");
    for id in BAD_IDS {
        let mut answers = vec![
            (
                format!("/api/events?before={id}"),
                get(port, &format!("/api/events?before={id}"), None),
            ),
            (
                format!("/api/events?after={id}"),
                get(port, &format!("/api/events?after={id}"), None),
            ),
            (
                format!("/stream/events?last_event_id={id}"),
                get(port, &format!("/stream/events?last_event_id={id}"), None),
            ),
            (
                format!("/ws?last_event_id={id}"),
                ws(&format!("last_event_id={id}")),
            ),
        ];
        if !id.is_empty() {
            answers.push((
                format!("/api/events/{id}"),
                get(port, &format!("/api/events/{id}"), None),
            ));
            answers.push((
                format!("/api/events/{id}/snapshot.jpg"),
                get(port, &format!("/api/events/{id}/snapshot.jpg"), None),
            ));
            answers.push((
                format!("/api/events/{id}/clip.mjpeg"),
                get(port, &format!("/api/events/{id}/clip.mjpeg"), None),
            ));
        }
        for (what, resp) in answers {
            assert_eq!(
                resp.status,
                400,
                "{what}: {} {:?}",
                resp.status,
                resp.text()
            );
            resp.assert_error(400);
        }
        // The header form, as EventSource resends it (only header-safe text).
        if !id.contains('%') && !id.is_empty() {
            let refused = Sse::open(port, "/stream/events", &[("Last-Event-ID", id)])
                .err()
                .unwrap_or_else(|| panic!("Last-Event-ID: {id} opened a stream"));
            refused.assert_error(400);
            // A bad URL cursor is refused even where a good header would win over it.
            let refused = Sse::open(
                port,
                &format!("/stream/events?last_event_id={id}"),
                &[("Last-Event-ID", "1")],
            )
            .err()
            .unwrap_or_else(|| panic!("last_event_id={id} beside a header opened a stream"));
            refused.assert_error(400);
        }
    }
    // Two different cursors in one request: neither is guessed at.
    let refused = Sse::open(
        port,
        "/stream/events",
        &[
            ("Last-Event-ID", "1"),
            ("Last-Event-ID", "18446744073709551615"),
        ],
    )
    .err()
    .expect("two different Last-Event-IDs opened a stream");
    refused.assert_error(400);
    // The same one twice is one cursor.
    let mut same = Sse::open(
        port,
        "/stream/events",
        &[("Last-Event-ID", "0"), ("Last-Event-ID", "0")],
    )
    .expect("the same Last-Event-ID twice");
    let hello = same.next_event(Duration::from_secs(5)).expect("connected");
    assert_eq!(hello.name(), "connected");
    drop(same);
    // 0 is "from the start" for a cursor, and no event for an id.
    get(port, "/api/events/0", None).assert_error(400);
    get(port, "/api/events?before=0", None).assert_error(400);
    assert_eq!(list_events(port, None, "after=0").len(), 1);
    assert_eq!(
        list_events(port, None, "before=9223372036854775807").len(),
        1
    );
    get(port, "/api/events/9223372036854775807", None).assert_error(404);
    // limit: 1..500, larger capped, never wrapped.
    for limit in ["0", "-1", "1.5", "%2B3", "ten", ""] {
        get(port, &format!("/api/events?limit={limit}"), None).assert_error(400);
    }
    for limit in [
        "1",
        "500",
        "501",
        "18446744073709551616",
        "99999999999999999999999999",
    ] {
        assert_eq!(
            list_events(port, None, &format!("limit={limit}")).len(),
            1,
            "limit={limit}"
        );
    }
    wait_connections_settle(port, None, "after the id probes");
}

#[test]
fn a_huge_cursor_over_many_events_neither_spins_nor_misses_live_events() {
    let server = Server::start(&["--camera", "synthetic:160x120@1"]);
    let port = server.port();
    // More than a replay page (500) of events.
    let mut stream = connect(port);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let body = br#"{"event_type":"face_recognized","data":{}}"#;
    for _ in 0..510 {
        write_request(
            &mut stream,
            "POST",
            "/api/events",
            &[("Content-Type", "application/json")],
            body,
        )
        .unwrap();
        assert_eq!(read_response(&mut reader, "POST").unwrap().status, 201);
    }
    drop((stream, reader));
    let newest = 510;
    // Past 2^63-1 in every form: refused before any replay.
    for id in ["18446744073709551615", "9223372036854775808"] {
        Sse::open(port, "/stream/events", &[("Last-Event-ID", id)])
            .err()
            .expect("refused")
            .assert_error(400);
        get(port, &format!("/stream/events?last_event_id={id}"), None).assert_error(400);
    }
    // The largest id there can be is ahead of the store: reset, then live events.
    let cpu_before = cpu_ticks(server.pid());
    let mut sse = Sse::connect_with(
        port,
        "/stream/events",
        &[("Last-Event-ID", "9223372036854775807")],
    );
    let reset = sse.next_event(IO_TIMEOUT).expect("a reset event");
    assert_eq!(reset.name(), "reset");
    assert_eq!(
        reset.json(),
        json!({"last_event_id": 9223372036854775807u64, "newest_id": newest})
    );
    let live = trigger(port, None);
    assert_eq!(sse.expect_event().id_num(), id_of(&live));
    sse.close();
    // Nothing keeps working after the client has gone: its thread ended, its connection closed,
    // and the process is idle again (a spinning replay used a core for good).
    wait_no_clients(port, None, Duration::from_secs(4), "after the huge cursor");
    wait_connections_settle(port, None, "after the huge cursor");
    let idle_from = cpu_ticks(server.pid());
    thread::sleep(Duration::from_secs(2));
    let idle_ticks = cpu_ticks(server.pid()) - idle_from;
    assert!(
        idle_ticks < 150,
        "the server used {idle_ticks} ticks of CPU in 2 s with no client ({} since the stream \
         opened)",
        cpu_ticks(server.pid()) - cpu_before
    );
}

#[test]
fn a_cursor_ahead_of_the_store_gets_reset_then_live_events() {
    let server = Server::start(&[]);
    let port = server.port();
    for _ in 0..3 {
        trigger(port, None);
    }
    // SSE, by header and by query.
    for (path, headers) in [
        ("/stream/events", vec![("Last-Event-ID", "1000")]),
        ("/stream/events?last_event_id=1000", vec![]),
    ] {
        let newest = id_of(&list_events(port, None, "limit=1")[0]);
        let mut sse = Sse::connect_with(port, path, &headers);
        let reset = sse.expect_event();
        assert_eq!(reset.name(), "reset");
        assert_eq!(
            reset.json(),
            json!({"last_event_id": 1000, "newest_id": newest})
        );
        let live = trigger(port, None);
        let got = sse.expect_event();
        assert_eq!(
            (got.name(), got.id_num()),
            ("doorbell_pressed", id_of(&live))
        );
    }
    let newest = id_of(&list_events(port, None, "limit=1")[0]);
    // WebSocket: the reset comes with the first subscribe, then live events.
    let mut ws = ws_connect(port, "last_event_id=1000");
    ws_send(&mut ws, r#"{"type":"subscribe","event_types":["*"]}"#);
    assert_eq!(ws_next(&mut ws)["type"], "subscribed");
    assert_eq!(
        ws_next(&mut ws),
        json!({"type": "reset", "last_event_id": 1000, "newest_id": newest})
    );
    let live = trigger(port, None);
    let message = ws_next(&mut ws);
    assert_eq!(message["type"], "live_event", "{message}");
    assert_eq!(message["event"]["id"], live["id"]);
}

#[test]
fn request_ids_are_echoed_exactly_as_sent() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut ws = ws_connect(port, "");
    let ninety_two = "1".to_string() + &"7".repeat(91);
    for id in [
        ninety_two.as_str(),
        "18446744073709551617",
        "-9223372036854775809",
        "1.10",
        "1E+300",
        "0.1000000000000000055511151231257827",
        r#""r-\u0031""#,
        r#"{"n": 1.50, "k": [1, 2]}"#,
    ] {
        ws_send(
            &mut ws,
            &format!(
                r#"{{"type":"system_command","command":"get_system_status","request_id":{id}}}"#
            ),
        );
        let text = ws_next_text(&mut ws);
        assert!(
            text.contains(&format!(r#""request_id":{id}"#)),
            "sent {id}, got {text}"
        );
        ws_send(
            &mut ws,
            &format!(r#"{{"type":"system_command","command":"nope","request_id":{id}}}"#),
        );
        let text = ws_next_text(&mut ws);
        assert!(text.contains(r#""code":"unknown_command""#), "{text}");
        assert!(
            text.contains(&format!(r#""request_id":{id}"#)),
            "sent {id}, got {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Request framing
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_framing_is_a_json_error_then_close() {
    let server = Server::with_config("request_timeout_s = 2\n", &[]);
    let port = server.port();
    let post = |headers: &str, body: &str| {
        format!("POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{headers}\r\n{body}")
            .into_bytes()
    };
    let event = r#"{"event_type":"smuggled"}"#;
    let mut cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("hex length", post("Content-Length: 0x2\r\n", event), 400),
        (
            "negative length",
            post("Content-Length: -1\r\n", event),
            400,
        ),
        ("signed length", post("Content-Length: +25\r\n", event), 400),
        (
            "list of lengths",
            post("Content-Length: 2, 40\r\n", event),
            400,
        ),
        (
            "23 digits",
            post("Content-Length: 12345678901234567890123\r\n", event),
            400,
        ),
        ("empty length", post("Content-Length: \r\n", event), 400),
        (
            "length with a space",
            post("Content-Length: 2 5\r\n", event),
            400,
        ),
        (
            "two lengths",
            post("Content-Length: 0\r\nContent-Length: 70\r\n", event),
            400,
        ),
        (
            "length and chunked",
            post(
                "Content-Length: 25\r\nTransfer-Encoding: chunked\r\n",
                event,
            ),
            400,
        ),
        (
            "chunked and length",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 25\r\n",
                event,
            ),
            400,
        ),
        (
            "gzip coding",
            post("Transfer-Encoding: gzip\r\n", event),
            501,
        ),
        (
            "chunked, gzip",
            post("Transfer-Encoding: chunked, gzip\r\n", event),
            501,
        ),
        (
            "two codings",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                event,
            ),
            501,
        ),
        (
            "near-chunked",
            post("Transfer-Encoding: xchunked\r\n", event),
            501,
        ),
        (
            "NUL in a value",
            post("X-A: a\0b\r\nContent-Length: 25\r\n", event),
            400,
        ),
        (
            "bare CR in a value",
            post("X-A: a\rb\r\nContent-Length: 25\r\n", event),
            400,
        ),
        (
            "control byte",
            post("X-A: a\x01b\r\nContent-Length: 25\r\n", event),
            400,
        ),
        (
            "DEL",
            post("X-A: a\x7fb\r\nContent-Length: 25\r\n", event),
            400,
        ),
        (
            "space before colon",
            post("Content-Length : 25\r\n", event),
            400,
        ),
        (
            "folded header",
            post("X-A: a\r\n b\r\nContent-Length: 25\r\n", event),
            400,
        ),
        (
            "no colon",
            post("X-A\r\nContent-Length: 25\r\n", event),
            400,
        ),
        (
            "two Hosts",
            post("Host: other\r\nContent-Length: 25\r\n", event),
            400,
        ),
        (
            "request line with two spaces",
            b"GET  /api/status HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "relative target",
            b"GET api/status HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "no Host in HTTP/1.1",
            b"GET /api/status HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bad Host",
            b"GET /api/status HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare LF lines",
            b"GET /api/status HTTP/1.1\nHost: x\n\n".to_vec(),
            400,
        ),
        (
            "bare LF after the request line",
            b"GET /api/status HTTP/1.1\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "lowercase version",
            b"GET /api/status http/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/2.0",
            b"GET /api/status HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
            505,
        ),
        (
            "HTTP/1.2",
            b"GET /api/status HTTP/1.2\r\nHost: x\r\n\r\n".to_vec(),
            505,
        ),
        (
            "HTTP/0.9",
            b"GET /api/status HTTP/0.9\r\nHost: x\r\n\r\n".to_vec(),
            505,
        ),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            505,
        ),
        (
            "chunked in HTTP/1.0",
            b"POST /api/events HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
    ];
    let mut non_ascii_path = b"GET /api/st".to_vec();
    non_ascii_path.extend_from_slice(&[0xC3, 0xA9]);
    non_ascii_path.extend_from_slice(b"tus HTTP/1.1\r\nHost: x\r\n\r\n");
    cases.push(("non-ASCII in the path", non_ascii_path, 400));
    let mut non_ascii_header = b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Name: Jos".to_vec();
    non_ascii_header.extend_from_slice(&[0xC3, 0xA9, b'\r', b'\n', b'\r', b'\n']);
    cases.push(("non-ASCII in a header", non_ascii_header, 400));
    cases.push((
        "NUL in the path",
        b"GET /api/\0status HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        400,
    ));
    cases.push((
        "tab in the path",
        b"GET /api/\tstatus HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        400,
    ));
    let mut long_line = b"GET /".to_vec();
    long_line.extend(std::iter::repeat_n(b'a', 9000));
    long_line.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    cases.push(("a 9000-byte request line", long_line, 414));
    let mut long_header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
    long_header.extend(std::iter::repeat_n(b'h', 9000));
    long_header.extend_from_slice(b"\r\n\r\n");
    cases.push(("a 9000-byte header", long_header, 431));
    for (what, bytes, status) in cases {
        // The bytes a second request would be (smuggled behind a miscounted body).
        let mut bytes = bytes;
        bytes.extend_from_slice(
            b"POST /api/trigger-doorbell HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        );
        let (response, closed) = raw_exchange(port, &bytes, false);
        let response = response.unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(response.status, status, "{what}: {:?}", response.text());
        response.assert_error(status);
        assert!(closed, "{what}: the connection stayed open after {status}");
    }
    assert!(
        all_events(port, None).is_empty(),
        "a malformed request stored an event"
    );
    wait_connections_settle(port, None, "after the malformed requests");
}

#[test]
fn a_body_shorter_than_its_length_is_a_400() {
    let server = Server::start(&[]);
    let port = server.port();
    for length in [30, 5000] {
        let head = format!(
            "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{\"event_type\":\"x\"}}"
        );
        let (response, _) = raw_exchange(port, head.as_bytes(), true);
        let response = response.unwrap_or_else(|| panic!("Content-Length {length}: no answer"));
        response.assert_error(400);
        assert!(response.text().contains("shorter"), "{}", response.text());
    }
    assert!(all_events(port, None).is_empty());
}

#[test]
fn an_endless_chunk_size_line_cannot_grow_memory() {
    let server = Server::start(&[]);
    let port = server.port();
    assert_eq!(get(port, "/api/status", None).status, 200);
    let before = rss_bytes(server.pid());
    // The open login route, a chunked body whose first chunk-size line never ends.
    let mut bytes =
        b"POST /api/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    bytes.extend(std::iter::repeat_n(b'1', 16 << 20));
    let (response, closed) = raw_exchange(port, &bytes, false);
    // The answer may be lost to the reset of a close with megabytes unread; the close is not.
    if let Some(response) = response {
        response.assert_error(400);
    }
    assert!(closed);
    let after = rss_bytes(server.pid());
    assert!(
        after < before + (4 << 20),
        "RSS grew from {before} to {after} bytes for one chunk-size line"
    );
}

/// Sends `head`, then the body one byte every `every`, until the server answers or closes.
/// Returns the answer (if any) and how long the request was held.
fn trickle(
    port: u16,
    head: &str,
    body_len: usize,
    every: Duration,
) -> (Option<Response>, Duration) {
    let mut stream = connect(port);
    let started = Instant::now();
    stream.write_all(head.as_bytes()).unwrap();
    stream.set_read_timeout(Some(every)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..body_len {
        if stream.write_all(b" ").is_err() {
            break;
        }
        match reader.fill_buf() {
            Ok([]) => return (None, started.elapsed()),
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (None, started.elapsed()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still reading after 15 s"
        );
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let response = read_response(&mut reader, "POST").ok();
    (response, started.elapsed())
}

#[test]
fn a_slow_request_is_cut_at_its_deadline() {
    let server = Server::with_config(
        "request_timeout_s = 1.5\n",
        &["--token", &format!("admin:{ADMIN}")],
    );
    let port = server.port();
    let every = Duration::from_millis(200);
    let head = |path: &str, length: usize, token: bool| {
        let auth = if token {
            format!("Authorization: Bearer {ADMIN}\r\n")
        } else {
            String::new()
        };
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {length}\r\n\r\n"
        )
    };
    for (what, head, length) in [
        // The unauthenticated login, a body the handler reads.
        (
            "login, 16000-byte body",
            head("/api/login", 16000, false),
            16000,
        ),
        // A small body, read before any handler runs.
        ("events, 500-byte body", head("/api/events", 500, true), 500),
        // A body nobody reads (401), drained before the next request.
        (
            "events without a token",
            head("/api/events", 3000, false),
            3000,
        ),
    ] {
        let (response, held) = trickle(port, &head, length, every);
        assert!(
            held < Duration::from_millis(3500),
            "{what}: held {held:?} with request_timeout_s = 1.5"
        );
        if let Some(response) = response {
            assert!(
                [408, 401].contains(&response.status),
                "{what}: {} {:?}",
                response.status,
                response.text()
            );
            response.assert_error_shape();
        }
    }
    // The head alone, dripped: 408 as well.
    let (response, held) = trickle(
        port,
        "GET /api/status HTTP/1.1\r\nHost: x\r\nX-Drip: ",
        1000,
        every,
    );
    assert!(
        held < Duration::from_millis(3500),
        "a dripped head held {held:?}"
    );
    response
        .expect("an answer to a dripped head")
        .assert_error(408);
}

#[test]
fn pipelined_and_keep_alive_requests_still_work() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut stream = connect(port);
    let body = br#"{"event_type":"pipelined"}"#;
    let mut bytes = Vec::new();
    for _ in 0..3 {
        bytes.extend_from_slice(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    }
    bytes.extend_from_slice(
        format!(
            "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(b"HEAD /api/events HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
    bytes.extend_from_slice(b"GET /api/events HTTP/1.0\r\n\r\n");
    stream.write_all(&bytes).unwrap();
    let mut reader = BufReader::new(stream);
    for _ in 0..3 {
        assert_eq!(read_response(&mut reader, "GET").unwrap().status, 200);
    }
    assert_eq!(read_response(&mut reader, "POST").unwrap().status, 201);
    assert_eq!(read_response(&mut reader, "HEAD").unwrap().status, 200);
    let last = read_response(&mut reader, "GET").unwrap();
    assert_eq!(last.json()["events"][0]["event_type"], "pipelined");
}

// ---------------------------------------------------------------------------------------------
// DNS rebinding, cross-site requests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_tokenless_server_answers_only_its_own_host_names() {
    let server = Server::start(&[]);
    let port = server.port();
    for host in [
        format!("evil-rebind.example:{port}"),
        "evil-rebind.example".to_string(),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("192.168.1.77:{port}"),
    ] {
        let origin = format!("http://{host}");
        let as_page = [("Host", host.as_str()), ("Origin", origin.as_str())];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut all: Vec<(&str, &str)> = as_page.to_vec();
            all.extend_from_slice(extra);
            all
        };
        let json = [("Content-Type", "application/json")];
        for (method, path, headers, body) in [
            ("POST", "/api/trigger-doorbell", with(&[]), &b""[..]),
            (
                "POST",
                "/api/events",
                with(&json),
                &br#"{"event_type":"rebound"}"#[..],
            ),
            (
                "POST",
                "/api/login",
                with(&json),
                &br#"{"token":"whatever-token"}"#[..],
            ),
            ("GET", "/api/snapshot.jpg", with(&[]), &b""[..]),
            ("GET", "/api/events", with(&[]), &b""[..]),
            ("GET", "/", with(&[("Accept", "text/html")]), &b""[..]),
            ("GET", "/stream/events", with(&[]), &b""[..]),
            ("GET", "/stream/video", with(&[]), &b""[..]),
            ("GET", "/ws", with(&WS_HANDSHAKE), &b""[..]),
            ("HEAD", "/api/status", with(&[]), &b""[..]),
        ] {
            // write_request adds its own Host first; send ours raw instead.
            let mut head = format!("{method} {path} HTTP/1.1\r\n");
            for (k, v) in &headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body);
            let (response, _) = raw_exchange(port, &bytes, false);
            let response =
                response.unwrap_or_else(|| panic!("{method} {path} as {host}: no answer"));
            assert_eq!(
                response.status,
                403,
                "{method} {path} as {host}: {:?}",
                response.text()
            );
            if method != "HEAD" {
                response.assert_error(403);
                assert_eq!(response.json()["error"], "host_not_allowed");
            }
        }
    }
    assert!(
        all_events(port, None).is_empty(),
        "a rebound page stored an event"
    );
    assert_eq!(
        clients(port, None),
        json!({"sse": 0, "websocket": 0, "video": 0})
    );
    // Its own names work.
    for host in [
        format!("localhost:{port}"),
        "LOCALHOST".to_string(),
        format!("127.0.0.1:{port}"),
        "127.3.4.5".to_string(),
        format!("[::1]:{port}"),
    ] {
        let bytes =
            format!("GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (response, _) = raw_exchange(port, bytes.as_bytes(), false);
        assert_eq!(response.map(|r| r.status), Some(200), "Host: {host}");
    }
    // With tokens the token is the gate, whatever the Host.
    let guarded = Server::start(&["--token", &format!("admin:{ADMIN}")]);
    let bytes = format!(
        "GET /api/status HTTP/1.1\r\nHost: door.example:{}\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n",
        guarded.port()
    );
    let (response, _) = raw_exchange(guarded.port(), bytes.as_bytes(), false);
    assert_eq!(response.map(|r| r.status), Some(200));
}

#[test]
fn allowed_hosts_extend_the_names_a_tokenless_server_answers() {
    let server = Server::with_config("allowed_hosts = [\"door.local\", \"192.168.1.77\"]\n", &[]);
    let port = server.port();
    for (host, status) in [
        (format!("door.local:{port}"), 200),
        ("Door.Local.".to_string(), 200),
        (format!("192.168.1.77:{port}"), 200),
        (format!("localhost:{port}"), 200),
        (format!("door.local.evil.example:{port}"), 403),
        (format!("evil.door.local:{port}"), 403),
        (format!("192.168.1.78:{port}"), 403),
    ] {
        let bytes =
            format!("GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (response, _) = raw_exchange(port, bytes.as_bytes(), false);
        assert_eq!(response.map(|r| r.status), Some(status), "Host: {host}");
    }
}

#[test]
fn cross_site_logins_and_non_json_bodies_are_refused() {
    let server = Server::start(&["--token", &format!("admin:{ADMIN}")]);
    let port = server.port();
    let login = |headers: &[(&str, &str)], body: &str| {
        request(port, "POST", "/api/login", headers, body.as_bytes())
    };
    let token_body = format!(r#"{{"token":"{ADMIN}"}}"#);
    // A foreign page, any content type: 403 and no cookie.
    for content_type in [
        "text/plain",
        "application/json",
        "application/x-www-form-urlencoded",
    ] {
        let resp = login(
            &[
                ("Origin", "http://evil.example"),
                ("Content-Type", content_type),
            ],
            &token_body,
        );
        resp.assert_error(403);
        assert!(resp.header("set-cookie").is_none());
    }
    let resp = login(
        &[("Origin", "null"), ("Content-Type", "application/json")],
        &token_body,
    );
    resp.assert_error(403);
    // Same origin (the harness sends `Host: 127.0.0.1`) but not declared JSON: 415, no cookie.
    let own = "http://127.0.0.1".to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/jsonx"),
        Some("multipart/form-data"),
    ] {
        let mut headers = vec![("Origin", own.as_str())];
        headers.extend(content_type.map(|ct| ("Content-Type", ct)));
        let resp = login(&headers, &token_body);
        resp.assert_error(415);
        assert!(resp.header("set-cookie").is_none());
    }
    // The right way still works.
    let resp = login(
        &[
            ("Origin", own.as_str()),
            ("Content-Type", "Application/JSON; charset=utf-8"),
        ],
        &token_body,
    );
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert!(resp.header("set-cookie").is_some());
    // The login body gets the same depth check as every client JSON.
    let deep = format!(r#"{{"token":{}"x"{}}}"#, "[".repeat(5000), "]".repeat(5000));
    login(&[("Content-Type", "application/json")], &deep).assert_error(400);
    // JSON routes insist on application/json.
    let auth = format!("Bearer {ADMIN}");
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let resp = request(
            port,
            "POST",
            "/api/events",
            &[("Authorization", &auth), ("Content-Type", content_type)],
            br#"{"event_type":"posted_as_text"}"#,
        );
        resp.assert_error(415);
    }
    assert!(all_events(port, Some(ADMIN)).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Token guessing
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_tokens_are_throttled_per_address() {
    let server = Server::start(&[
        "--token",
        &format!("viewer:{VIEWER}"),
        "--token",
        &format!("admin:{ADMIN}"),
    ]);
    let port = server.port();
    let guesser = Ipv4Addr::new(127, 0, 0, 21);
    let bearer = |token: &str| format!("Bearer {token}");
    // Ten distinct wrong tokens, over several routes and ways of sending them: 401 each.
    for n in 0..10 {
        let guess = format!("guess-{n:06}");
        let resp = match n % 3 {
            0 => request_from(
                guesser,
                port,
                "GET",
                "/api/status",
                &[("Authorization", &bearer(&guess))],
            ),
            1 => request_from(
                guesser,
                port,
                "GET",
                &format!("/stream/events?token={guess}"),
                &[],
            ),
            _ => request_from(
                guesser,
                port,
                "GET",
                "/metrics",
                &[("Cookie", &format!("porchlight_token={guess}"))],
            ),
        }
        .unwrap();
        resp.assert_error(401);
    }
    // Then 429 with Retry-After, for the right token too, on every route and transport.
    for (path, headers) in [
        ("/api/status", vec![("Authorization", bearer(ADMIN))]),
        ("/api/status", vec![("Authorization", bearer("guess-x"))]),
        ("/stream/video", vec![("Authorization", bearer(VIEWER))]),
        ("/ws", vec![("Authorization", bearer(VIEWER))]),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let resp = request_from(guesser, port, "GET", path, &headers).unwrap();
        resp.assert_error(429);
        let retry: u64 = resp
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(retry >= 1, "Retry-After {retry}");
    }
    let login = {
        let mut stream = connect_from(guesser, port).unwrap();
        let body = format!(r#"{{"token":"{ADMIN}"}}"#);
        write_request(
            &mut stream,
            "POST",
            "/api/login",
            &[
                ("Content-Type", "application/json"),
                ("Connection", "close"),
            ],
            body.as_bytes(),
        )
        .unwrap();
        read_response(&mut BufReader::new(stream), "POST").unwrap()
    };
    login.assert_error(429);
    // Without a token the blocked address is an anonymous client like any other.
    assert_eq!(
        request_from(guesser, port, "GET", "/api/status", &[])
            .unwrap()
            .status,
        401
    );
    // Other addresses are not affected.
    let other = Ipv4Addr::new(127, 0, 0, 22);
    let resp = request_from(
        other,
        port,
        "GET",
        "/api/status",
        &[("Authorization", &bearer(VIEWER))],
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    // The same stale token again and again is one failure, not a guessing run.
    let stale = Ipv4Addr::new(127, 0, 0, 23);
    for _ in 0..40 {
        let resp = request_from(
            stale,
            port,
            "GET",
            "/api/status",
            &[("Cookie", "porchlight_token=old-token-123")],
        )
        .unwrap();
        resp.assert_error(401);
    }
    let resp = request_from(
        stale,
        port,
        "GET",
        "/api/status",
        &[("Authorization", &bearer(ADMIN))],
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    // Failures are logged at warn with the address and the route, never the token.
    let log = server.wait_stderr(|log| {
        log.contains("authentication failed from 127.0.0.21") && log.contains("refusing its tokens")
    });
    assert!(
        log.contains("authentication failed from 127.0.0.21 on GET \"/api/status\""),
        "{log}"
    );
    assert!(log.contains("refusing its tokens for"), "{log}");
    for secret in ["guess-000000", "guess-x", "old-token-123", ADMIN, VIEWER] {
        assert!(!log.contains(secret), "a token reached the log: {secret}");
    }
    let text = metrics(port, Some(ADMIN));
    assert!(metric(&text, "porchlight_auth_throttled_total").unwrap() >= 5.0);
}

// ---------------------------------------------------------------------------------------------
// Connection exhaustion
// ---------------------------------------------------------------------------------------------

/// The issue's figure: a slowloris from one address with several times the per-address cap,
/// reconnecting as it is refused, and another address served every time.
#[test]
fn a_slowloris_from_one_address_cannot_starve_another() {
    const CAP: usize = 16;
    const ATTACKERS: usize = CAP * 3;
    let server = Server::with_config(
        &format!("max_connections = 64\nmax_connections_per_ip = {CAP}\nrequest_timeout_s = 10\n"),
        &[],
    );
    let port = server.port();
    let attacker = Ipv4Addr::new(127, 0, 0, 41);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attack = {
        let (stop, opened) = (stop.clone(), opened.clone());
        thread::spawn(move || {
            let mut held: Vec<Option<TcpStream>> = (0..ATTACKERS).map(|_| None).collect();
            let mut buf = [0u8; 512];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for slot in held.iter_mut() {
                    // A refused or cut connection is replaced at once.
                    let gone = slot.as_mut().is_some_and(|s| {
                        s.set_nonblocking(true).ok();
                        let read = s.read(&mut buf);
                        s.set_nonblocking(false).ok();
                        !matches!(read, Err(ref e) if e.kind() == io::ErrorKind::WouldBlock)
                    });
                    if gone || slot.is_none() {
                        *slot = connect_from(attacker, port).ok().map(|mut s| {
                            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let _ = s.write_all(
                                b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
                            );
                            s
                        });
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // Let the attack fill its share.
    let deadline = Instant::now() + Duration::from_secs(5);
    while opened.load(std::sync::atomic::Ordering::Relaxed) < ATTACKERS {
        assert!(
            Instant::now() < deadline,
            "the attack could not open its connections"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let (mut served, tried) = (0, 40);
    for _ in 0..tried {
        let started = Instant::now();
        match try_request(port, "GET", "/api/status", &[], b"") {
            Ok(resp) if resp.status == 200 && started.elapsed() < Duration::from_secs(2) => {
                served += 1
            }
            other => eprintln!(
                "legitimate request: {other:?} after {:?}",
                started.elapsed()
            ),
        }
        thread::sleep(Duration::from_millis(25));
    }
    let open_during = metric(&metrics(port, None), "porchlight_connections_open").unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    attack.join().unwrap();
    eprintln!(
        "slowloris: one address keeping {ATTACKERS} partial requests open (cap {CAP}; {} \
         connections opened in all, the refused ones reopened at once): legitimate requests \
         from another address served {served}/{tried}",
        opened.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(served, tried, "another address was not served every time");
    assert!(
        open_during <= (CAP + 1) as f64,
        "{open_during} connections open with a per-address cap of {CAP}"
    );
}

// ---------------------------------------------------------------------------------------------
// Start-up order
// ---------------------------------------------------------------------------------------------

#[test]
fn a_taken_port_fails_before_anything_is_started() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("taken-port");
    let data = dir.join("data");
    let listen = format!("127.0.0.1:{port}");
    let finished = run_to_exit(
        &[
            "--listen",
            &listen,
            "--data-dir",
            data.to_str().unwrap(),
            "--camera",
            "file:/nonexistent/porchlight-camera",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(finished.code(), Some(1), "{:?}", finished.stderr);
    assert!(finished.stderr.contains(&listen), "{}", finished.stderr);
    // Neither the store nor the camera was touched: no data dir, no camera_offline event.
    assert!(
        !data.exists(),
        "the data dir was created before the bind failed"
    );
    assert!(
        !finished.stderr.contains("camera"),
        "the camera was started:\n{}",
        finished.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// Everything comes back
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_requests_of_every_class_leave_nothing_behind() {
    let server = Server::with_config(
        "request_timeout_s = 1\nheartbeat_s = 60\n",
        &["--token", &format!("admin:{ADMIN}")],
    );
    let port = server.port();
    let pid = server.pid();
    let auth = format!("Bearer {ADMIN}");
    assert_eq!(get(port, "/api/status", Some(ADMIN)).status, 200);
    let threads_before = threads(pid);
    for round in 0..20 {
        // Numbers, framing, HEAD of streams, ghosts, garbage, half heads.
        let attacks: Vec<Vec<u8>> = vec![
            format!("GET /stream/video?fps=1e-320 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n").into_bytes(),
            format!("GET /stream/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 18446744073709551615\r\nAuthorization: {auth}\r\n\r\n").into_bytes(),
            format!("HEAD /stream/events HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n").into_bytes(),
            format!("HEAD /stream/video HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n").into_bytes(),
            b"POST /api/events HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 70\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\nX: \0\r\n\r\n".to_vec(),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            b"GET /api/sta".to_vec(),
        ];
        for bytes in attacks {
            let mut stream = connect(port);
            let _ = stream.write_all(&bytes);
            drop(stream);
        }
        // A viewer that hangs up at once, at the slowest rate.
        let (_, _, ghost) =
            open_stream_head(port, "/stream/video?fps=0.1", &[("Authorization", &auth)]);
        drop(ghost);
        // A wrong token (from an address of its own, which gets blocked).
        let guess = format!("Bearer wrong-{round:04}");
        let guesser = Ipv4Addr::new(127, 0, 0, 31);
        let _ = request_from(
            guesser,
            port,
            "GET",
            "/api/status",
            &[("Authorization", &guess)],
        );
    }
    wait_no_clients(
        port,
        Some(ADMIN),
        Duration::from_secs(5),
        "after the hostile rounds",
    );
    let open = wait_metric(
        port,
        Some(ADMIN),
        "porchlight_connections_open",
        Duration::from_secs(8),
        |v| v == 1.0,
    );
    assert_eq!(open, Some(1.0), "connections left open");
    let deadline = Instant::now() + Duration::from_secs(8);
    while threads(pid) > threads_before + 1 {
        assert!(
            Instant::now() < deadline,
            "{} threads after, {threads_before} before",
            threads(pid)
        );
        thread::sleep(Duration::from_millis(50));
    }
}
