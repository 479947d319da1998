//! Seventh probe: how the server reads a request target and a connection's lifetime, as a
//! strict or unusual HTTP client writes them — percent-encoded paths (RFC 3986 §6.2.2),
//! `Connection` token lists (RFC 9112 §9.3, §9.6), `OPTIONS *` (RFC 9110 §9.3.7), and 405
//! judged before any parameter. Each test failed on the server before its fix.

use std::io::{BufReader, Read};
use std::net::TcpStream;

use crate::common::*;

/// One exchange on an open connection: `raw` is the whole request, head and body.
fn exchange(reader: &mut BufReader<TcpStream>, raw: &str, method: &str) -> Response {
    use std::io::Write;
    reader.get_mut().write_all(raw.as_bytes()).unwrap();
    read_response(reader, method).unwrap_or_else(|e| panic!("{raw:?}: no answer: {e}"))
}

fn open(port: u16) -> BufReader<TcpStream> {
    BufReader::new(connect(port))
}

/// Whether the server ended the connection: EOF (or a reset) before any byte, within the
/// read timeout.
fn closed(reader: &mut BufReader<TcpStream>) -> bool {
    let mut byte = [0u8; 1];
    matches!(reader.read(&mut byte), Ok(0) | Err(_))
}

/// The `Connection` tokens of an answer, lower-cased.
fn connection_tokens(response: &Response) -> Vec<String> {
    response
        .headers_named("connection")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

fn says_close(response: &Response) -> bool {
    connection_tokens(response).iter().any(|t| t == "close")
}

fn get11(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n")
}

#[test]
fn an_answer_says_connection_close_exactly_when_the_connection_ends() {
    let server = Server::with_config("max_sse_clients = 0\nmax_ws_clients = 0\n", &[]);
    let port = server.port();

    // HTTP/1.1 that asks to close, however the token list is written.
    for header in [
        "Connection: close\r\n",
        "Connection: CLOSE\r\n",
        "Connection: keep-alive, Close\r\n",
        "Connection: keep-alive\r\nConnection: close\r\n",
        "Connection: foo,close , bar\r\n",
    ] {
        for path in [
            "/api/status",
            "/api/no-such",
            "/api/events?limit=zero",
            "/index.html",
        ] {
            let mut reader = open(port);
            let answer = exchange(&mut reader, &get11(path, header), "GET");
            assert!(
                says_close(&answer),
                "{header:?} {path}: {:?}",
                answer.headers
            );
            assert!(
                closed(&mut reader),
                "{header:?} {path}: the connection stayed open"
            );
        }
    }

    // HTTP/1.1 that does not: no `close`, and the connection carries the next request, also
    // when a token merely contains the letters.
    for header in [
        "",
        "Connection: keep-alive\r\n",
        "Connection: x-closed, enclosed\r\n",
    ] {
        let mut reader = open(port);
        for path in ["/api/status", "/api/no-such", "/api/events/abc"] {
            let answer = exchange(&mut reader, &get11(path, header), "GET");
            assert!(
                !says_close(&answer),
                "{header:?} {path}: {:?}",
                answer.headers
            );
        }
    }

    // Answers after which the server ends the connection itself say so: streams over their
    // limit, a refused WebSocket, a stream's own head.
    for (path, extra) in [
        ("/stream/events", ""),
        ("/stream/system-status", ""),
        ("/ws", ""),
        (
            "/ws",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
        ("/ws", "Connection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n"),
    ] {
        let mut reader = open(port);
        let answer = exchange(&mut reader, &get11(path, extra), "GET");
        assert!(answer.status >= 400, "{path}: {}", answer.status);
        assert!(
            says_close(&answer),
            "{path} {extra:?}: {:?}",
            answer.headers
        );
        assert!(closed(&mut reader), "{path}: the connection stayed open");
    }
}

/// HTTP/1.0 keeps its connection only when it asked for `keep-alive` (a token, not a
/// substring), and the answer says what the connection then does: one decision, not two
/// (tiny_http once tested substrings to keep the connection and tokens to answer).
#[test]
fn an_http_1_0_answer_and_its_connection_make_one_decision() {
    let server = Server::start(&[]);
    let port = server.port();
    // HTTP/1.0: closes unless it asked for keep-alive, and says which.
    for (header, keeps) in [
        ("", false),
        ("Connection: keep-alive\r\n", true),
        ("Connection: Keep-Alive, foo\r\n", true),
        ("Connection: foo\r\nConnection: keep-alive\r\n", true),
        ("Connection: keep-alive, close\r\n", false),
        ("Connection: x-keep-alive-not\r\n", false),
        ("Connection: keep-alives\r\n", false),
    ] {
        let mut reader = open(port);
        let raw = format!("GET /api/status HTTP/1.0\r\n{header}\r\n");
        let answer = exchange(&mut reader, &raw, "GET");
        assert_eq!(answer.status, 200);
        let tokens = connection_tokens(&answer);
        if keeps {
            assert_eq!(tokens, ["keep-alive"], "{header:?}");
            let again = exchange(&mut reader, &raw, "GET");
            assert_eq!(again.status, 200, "{header:?}: second request");
        } else {
            assert_eq!(tokens, ["close"], "{header:?}");
            assert!(
                closed(&mut reader),
                "{header:?}: the connection stayed open"
            );
        }
    }
}

#[test]
fn percent_encoded_unreserved_characters_route_as_the_characters() {
    let server = Server::start(&[]);
    let port = server.port();
    let event = post_event(port, None, "probe7", serde_json::json!({}));
    let id = id_of(&event);
    let encoded_id: String = id
        .to_string()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();

    // Every kind of route, with parts of its path escaped.
    let same = [
        ("/api/event%73".to_string(), "/api/events".to_string()),
        ("/%61pi/%73tatus".into(), "/api/status".into()),
        (
            "/api/events%3Flimit=1".into(),
            "/api/events%3flimit=1".into(),
        ),
        ("/api%2Devents".into(), "/api-events".into()),
        ("/%6Detrics".into(), "/metrics".into()),
        (
            format!("/api/events/{encoded_id}"),
            format!("/api/events/{id}"),
        ),
        (
            format!("/api/events/{encoded_id}/snapshot%2Ejpg"),
            format!("/api/events/{id}/snapshot.jpg"),
        ),
        (
            format!("/api/events/{encoded_id}/clip%2emjpeg"),
            format!("/api/events/{id}/clip.mjpeg"),
        ),
        (
            "/api/events/%31%32%33456789/clip.mjpeg".into(),
            "/api/events/123456789/clip.mjpeg".into(),
        ),
        ("/index%2Ehtml".into(), "/index.html".into()),
        ("/%69ndex.html".into(), "/index.html".into()),
    ];
    for (escaped, plain) in same {
        let a = get(port, &escaped, None);
        let b = get(port, &plain, None);
        assert_eq!(a.status, b.status, "{escaped} vs {plain}: {}", a.text());
        if !plain.contains("status") && !plain.contains("metrics") {
            assert_eq!(a.body, b.body, "{escaped} vs {plain}");
        }
    }
    assert_eq!(get(port, "/api/event%73", None).status, 200);
    assert_eq!(
        get(port, &format!("/api/events/{encoded_id}"), None).json()["id"],
        id
    );

    // The streams and the WebSocket, escaped.
    let sse = Sse::open(port, "/stream/event%73", &[]).map(|_| ());
    assert!(sse.is_ok(), "escaped SSE path: {:?}", sse.err());
    let status = Sse::open(port, "/%73tream/system-status", &[]).map(|_| ());
    assert!(status.is_ok(), "escaped status path: {:?}", status.err());
    let mut reader = open(port);
    let upgrade = exchange(
        &mut reader,
        &get11(
            "/w%73",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
        "GET",
    );
    assert_eq!(upgrade.status, 101, "{}", upgrade.text());
    let mut reader = open(port);
    let raw = "HEAD /stream/vide%6F?quality=low HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    let video = exchange(&mut reader, raw, "HEAD");
    assert_eq!(video.status, 200);
    assert!(
        video
            .header("content-type")
            .unwrap_or("")
            .starts_with("multipart/x-mixed-replace"),
        "{:?}",
        video.headers
    );
}

#[test]
fn an_escaped_slash_or_dot_segment_never_steers_a_route() {
    let server = Server::start(&[]);
    let port = server.port();
    post_event(port, None, "probe7", serde_json::json!({}));
    for path in [
        "/api%2Fevents",
        "/api%2fstatus",
        "/api/events%2F1",
        "/stream%2Fevents",
        "/api/%2E%2E/metrics",
        "/api/events/%2E%2E/status",
        "/api/events/1%2F..%2F..%2Fstatus",
        "/api/events/1/%2E%2E/clip.mjpeg",
        "/%2E%2E/api/status",
        "/api/status/%2E%2E",
        "/%2E%2E%2Fapi%2Fstatus",
        "/ws%2F",
        "/stream/video/%2E%2E",
        "/stream/video/a%2Fb",
    ] {
        let answer = get(port, path, None);
        assert!(
            (400..500).contains(&answer.status),
            "{path} was routed: {} {}",
            answer.status,
            answer.text()
        );
        assert!(
            !answer.text().contains("\"uptime_s\"") && !answer.text().contains("\"events\""),
            "{path} reached a route it does not name: {}",
            answer.text()
        );
    }
    // Malformed escapes are a clear 400, on every kind of route.
    for path in [
        "/%zz",
        "/api/events/%",
        "/api/status%0",
        "/api/events/1%2/clip.mjpeg",
        "/stream/events%G0",
        "/ws%",
        "/index.html%",
    ] {
        get(port, path, None).assert_error(400);
    }
}

#[test]
fn options_asterisk_describes_the_server() {
    let server = Server::start(&["--token", &format!("viewer:{VIEWER}")]);
    let port = server.port();
    for version in ["HTTP/1.1", "HTTP/1.0"] {
        let mut reader = open(port);
        let raw = format!("OPTIONS * {version}\r\nHost: 127.0.0.1\r\n\r\n");
        let answer = exchange(&mut reader, &raw, "OPTIONS");
        assert!(
            answer.status == 200 || answer.status == 204,
            "{version}: {} {}",
            answer.status,
            answer.text()
        );
        assert!(answer.body.is_empty(), "{}", answer.text());
        let allow: Vec<&str> = answer
            .header("allow")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .collect();
        for method in ["GET", "HEAD", "POST", "OPTIONS"] {
            assert!(allow.contains(&method), "Allow {allow:?} lacks {method}");
        }
    }
    // Then the connection carries other requests as usual.
    let mut reader = open(port);
    let raw = "OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_eq!(exchange(&mut reader, raw, "OPTIONS").status, 200);
    let auth = format!("Authorization: Bearer {VIEWER}\r\n");
    assert_eq!(
        exchange(&mut reader, &get11("/api/status", &auth), "GET").status,
        200
    );

    // `*` is for OPTIONS only.
    for method in ["GET", "HEAD", "POST", "DELETE"] {
        let mut reader = open(port);
        let raw = format!("{method} * HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
        let answer = exchange(&mut reader, &raw, method);
        assert_eq!(answer.status, 400, "{method} *");
        if method != "HEAD" {
            answer.assert_error(400);
        }
    }
}

#[test]
fn the_method_is_judged_before_any_parameter_on_every_route() {
    let server = Server::start(&["--token", &format!("admin:{ADMIN}")]);
    let port = server.port();
    let get_only = "GET, HEAD";
    for (method, path, allow) in [
        ("DELETE", "/api/events/abc", get_only),
        ("PUT", "/api/events/0", get_only),
        ("DELETE", "/api/events/99999999999999999999", get_only),
        ("POST", "/api/events/-1/snapshot.jpg", get_only),
        (
            "DELETE",
            "/api/events/x/clip.mjpeg?download=maybe",
            get_only,
        ),
        ("PATCH", "/api/events/%31/clip.mjpeg", get_only),
        (
            "DELETE",
            "/api/events?limit=zero&limit=0",
            "GET, HEAD, POST",
        ),
        ("PUT", "/api/events?x=%zz", "GET, HEAD, POST"),
        ("GET", "/api/login?x=%zz", "POST"),
        ("DELETE", "/api/trigger-doorbell?a=1&a=2", "POST"),
        ("POST", "/api/status?x=%", get_only),
        ("POST", "/api/snapshot.jpg?quality=nonsense", get_only),
        ("PUT", "/stream/events?last_event_id=abc", get_only),
        ("POST", "/stream/system-status?client_id=bad%20id", get_only),
        (
            "DELETE",
            "/stream/video/bad%20id?quality=nope&fps=-1",
            get_only,
        ),
        ("POST", "/ws?last_event_id=x", get_only),
        ("DELETE", "/metrics?x=%0", get_only),
        ("PUT", "/index.html?x=%zz", get_only),
    ] {
        let answer = request(port, method, path, &[], b"");
        answer.assert_error(405);
        let allowed: Vec<&str> = answer.header("allow").unwrap_or("").split(", ").collect();
        let expected: Vec<&str> = allow.split(", ").collect();
        assert_eq!(allowed, expected, "{method} {path}");
    }
    // With the right method, the parameter is then judged.
    let auth = format!("Bearer {ADMIN}");
    let headers = [("Authorization", auth.as_str())];
    request(port, "GET", "/api/events/abc", &headers, b"").assert_error(400);
    request(port, "GET", "/api/status?x=%zz", &headers, b"").assert_error(400);
}
