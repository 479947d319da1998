//! Third black-box probe of the release binary: what a strict HTTP client, a browser page on a
//! listed origin (written the way people write URLs) and a producer posting large numbers rely
//! on. Each test failed on the binary before its fix.

use std::io::{BufReader, Write};

use crate::common::*;

/// Headers a response must carry at most once: a browser joins repeated CORS lines with ", "
/// and then matches no origin.
const SINGLE_CORS_HEADERS: [&str; 2] = [
    "access-control-allow-origin",
    "access-control-allow-credentials",
];

fn assert_cors_once(response: &Response, origin: &str, what: &str) {
    for name in SINGLE_CORS_HEADERS {
        assert_eq!(
            response.headers_named(name).len(),
            1,
            "{what}: {name} must appear once: {:?}",
            response.headers
        );
    }
    assert_eq!(response.header("access-control-allow-origin"), Some(origin));
    let vary_origin = response
        .headers_named("vary")
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|v| v.trim().eq_ignore_ascii_case("origin"))
        .count();
    assert_eq!(vary_origin, 1, "{what}: {:?}", response.headers);
}

/// A page's POST of an event, from `origin`.
fn post_event_from(port: u16, origin: &str) -> Response {
    request(
        port,
        "POST",
        "/api/events",
        &[("Origin", origin), ("Content-Type", "application/json")],
        br#"{"event_type": "probe3", "data": {}}"#,
    )
}

#[test]
fn a_listed_origin_gets_each_cors_header_once_on_every_answer() {
    let listed = "http://door.local:3000";
    let server = Server::with_config(&format!("allowed_origins = [\"{listed}\"]\n"), &[]);
    let port = server.port();
    let origin = [("Origin", listed)];

    // The preflight, which is what a page's fetch() with a token waits for: with two
    // Access-Control-Allow-Origin lines the browser refuses it and the POST is never sent.
    let preflight = request(
        port,
        "OPTIONS",
        "/api/events",
        &[
            ("Origin", listed),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        b"",
    );
    assert_eq!(preflight.status, 204, "{}", preflight.text());
    assert_cors_once(&preflight, listed, "preflight");

    // The actual requests and refusals the page then reads.
    let posted = post_event_from(port, listed);
    assert_eq!(posted.status, 201, "{}", posted.text());
    assert_cors_once(&posted, listed, "POST");
    for path in ["/api/status", "/api/events?limit=1", "/api/events/999999"] {
        let answer = request(port, "GET", path, &origin, b"");
        assert_cors_once(&answer, listed, path);
    }
    let refused = request(port, "DELETE", "/api/events", &origin, b"");
    assert_eq!(refused.status, 405);
    assert_cors_once(&refused, listed, "405");
}

#[test]
fn an_allowed_origin_written_with_its_default_port_or_capitals_still_matches() {
    // People copy an origin from an address bar or a URL they typed; the browser sends it
    // lower-cased and without the scheme's default port. The entry used to be kept as written
    // and so never matched, without a word.
    let server = Server::with_config(
        "allowed_origins = [\"HTTP://Door.Local:80\", \"https://Kiosk.local:443\"]\n",
        &[],
    );
    let port = server.port();
    for sent in ["http://door.local", "https://kiosk.local"] {
        let preflight = request(
            port,
            "OPTIONS",
            "/api/events",
            &[("Origin", sent), ("Access-Control-Request-Method", "POST")],
            b"",
        );
        assert_eq!(preflight.status, 204, "{sent}: {}", preflight.text());
        assert_eq!(preflight.header("access-control-allow-origin"), Some(sent));
        let posted = post_event_from(port, sent);
        assert_eq!(posted.status, 201, "{sent}: {}", posted.text());
    }

    // An entry no browser could ever send is a configuration error naming the key.
    let dir = TempDir::new("probe3-origins");
    for bad in [
        "http://door.local/",
        "http://user@door.local",
        "http://door.local:99999",
    ] {
        let path = dir.write("origins.toml", &format!("allowed_origins = [{bad:?}]\n"));
        let checked = run_to_exit(
            &["--check-config", &path.to_string_lossy()],
            std::time::Duration::from_secs(10),
        );
        assert_eq!(checked.code(), Some(2), "{bad}: {}", checked.stderr);
        assert!(
            checked.stderr.contains("allowed_origins"),
            "{bad}: {}",
            checked.stderr
        );
    }
}

#[test]
fn no_content_length_on_an_interim_100_or_a_204() {
    let listed = "http://door.local:3000";
    let server = Server::with_config(&format!("allowed_origins = [\"{listed}\"]\n"), &[]);
    let port = server.port();

    // RFC 9110 §8.6: a server MUST NOT send Content-Length in a 1xx or 204 answer.
    let preflight = request(
        port,
        "OPTIONS",
        "/api/events",
        &[
            ("Origin", listed),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("content-length"),
        None,
        "{:?}",
        preflight.headers
    );

    // A client that waits for `100 Continue` before it sends its body.
    let body = br#"{"event_type": "probe3", "data": {}}"#;
    let mut stream = connect(port);
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (status, _, headers) = read_head(&mut reader).unwrap();
    assert_eq!(status, 100);
    assert_eq!(header_of(&headers, "content-length"), None, "{headers:?}");
    stream.write_all(body).unwrap();
    let created = read_response(&mut reader, "POST").unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
}

/// Sends `head` (a whole request head) on a fresh connection and reads the answer.
fn raw_exchange(port: u16, head: &str) -> Response {
    let mut stream = connect(port);
    stream.write_all(head.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream), "GET").unwrap()
}

#[test]
fn an_absolute_form_request_target_is_served_with_its_authority_as_host() {
    // RFC 9112 §3.2.2: a server MUST accept `GET http://host/path`; clients pointed at
    // porchlight through their proxy setting, and some camera viewers, send it. It was a 400.
    let server = Server::start(&[]);
    let port = server.port();
    for target in [
        format!("http://127.0.0.1:{port}/api/status"),
        format!("HTTP://localhost:{port}/api/status?client_id=a"),
    ] {
        let answer = raw_exchange(
            port,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(answer.status, 200, "{target}: {}", answer.text());
        assert_status_object(&answer.json());
    }
    // HTTP/1.0 sends no Host: the authority is the host.
    let old = raw_exchange(
        port,
        &format!("GET http://127.0.0.1:{port}/api/whoami HTTP/1.0\r\n\r\n"),
    );
    assert_eq!(old.status, 200, "{}", old.text());
    assert_eq!(old.json()["role"], "admin");
    // An empty path is `/`.
    let root = raw_exchange(
        port,
        &format!("GET http://127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(root.status, 200, "{}", root.text());

    // The target's authority replaces Host, so the DNS-rebinding rule judges that name.
    let rebound = raw_exchange(
        port,
        &format!(
            "GET http://evil.example:{port}/api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Connection: close\r\n\r\n"
        ),
    );
    rebound.assert_error(403);
    assert_eq!(rebound.json()["error"], "host_not_allowed");

    // What is not an origin server's target is still a 400.
    for target in [
        format!("http://user@127.0.0.1:{port}/api/status"),
        "http:///api/status".to_string(),
        format!("ftp://127.0.0.1:{port}/api/status"),
    ] {
        let refused = raw_exchange(
            port,
            &format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        );
        refused.assert_error(400);
    }
}

#[test]
fn an_answer_says_whether_its_connection_stays_open() {
    let server = Server::start(&[]);
    let port = server.port();

    // HTTP/1.0 with keep-alive: the connection is kept, and the answer must say so, or the
    // client takes it as closing (RFC 9112 Appendix C.2.2).
    let mut stream = connect(port);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..2 {
        stream
            .write_all(b"GET /api/whoami HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let answer = read_response(&mut reader, "GET").unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.header("connection").map(str::to_ascii_lowercase),
            Some("keep-alive".into()),
            "{:?}",
            answer.headers
        );
    }

    // A refusal after which the server closes says so: the parser's own (a malformed head)
    // and porchlight's (a body too large to read).
    let malformed = raw_exchange(port, "GET /api/status HTTP/1.1\r\nHost: a b\r\n\r\n");
    malformed.assert_error(400);
    assert_eq!(malformed.header("connection"), Some("close"));
    let mut stream = connect(port);
    stream
        .write_all(
            b"POST /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 100000\r\n\r\n",
        )
        .unwrap();
    let too_large = read_response(&mut BufReader::new(stream), "POST").unwrap();
    too_large.assert_error(413);
    assert_eq!(too_large.header("connection"), Some("close"));

    // HTTP/1.1 keeps connections by default: its answers need no Connection header.
    let mut stream = connect(port);
    stream
        .write_all(b"GET /api/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let kept = read_response(&mut BufReader::new(stream), "GET").unwrap();
    assert_eq!(kept.status, 200);
    assert_eq!(kept.header("connection"), None, "{:?}", kept.headers);
}

#[test]
fn a_posted_integer_beyond_64_bits_is_refused_not_stored_rounded() {
    let server = Server::start(&[]);
    let port = server.port();
    let before = list_events(port, None, "limit=500").len();
    for body in [
        r#"{"event_type": "probe3", "data": {"badge": 123456789012345678901234567890}}"#,
        r#"{"event_type": "probe3", "data": {"n": [1, 18446744073709551616]}}"#,
        r#"{"event_type": "probe3", "data": {"n": -9223372036854775809}}"#,
    ] {
        let refused = post(port, "/api/events", None, body);
        refused.assert_error(400);
        assert!(
            refused.json()["message"]
                .as_str()
                .unwrap()
                .contains("beyond 64 bits"),
            "{body}: {}",
            refused.text()
        );
    }
    assert_eq!(list_events(port, None, "limit=500").len(), before);

    // What fits is kept exactly, and the same digits inside a string are only text.
    let kept = post_event(
        port,
        None,
        "probe3",
        serde_json::from_str(
            r#"{"max": 18446744073709551615, "min": -9223372036854775808, "text": "123456789012345678901234567890", "f": 1.5e300}"#,
        )
        .unwrap(),
    );
    let stored = get(port, &format!("/api/events/{}", id_of(&kept)), None);
    let text = stored.text();
    for exact in [
        r#""max":18446744073709551615"#,
        r#""min":-9223372036854775808"#,
        r#""text":"123456789012345678901234567890""#,
    ] {
        assert!(text.contains(exact), "{exact} in {text}");
    }
}
