//! Contract r2 wire details that third-party clients depend on (issue 13): chunked SSE with one
//! chunk per event, MJPEG framed as ustreamer/mjpg-streamer frame it, Basic auth with the token
//! as the password (without a browser's own password prompt), CORS for `allowed_origins` only,
//! and validators (ETag, 304) for event snapshots and dashboard files. The third-party clients
//! themselves (sseclient-py, httpx-sse, eventsource, aiohttp, ffmpeg, mpv, VLC) run against the
//! binary in tests/python/test_interop_*.py and tests/browser/eventsource.test.mjs.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::video_client::Mjpeg;
use serde_json::json;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes())
    )
}

fn tokens() -> Vec<String> {
    vec![
        "--token".into(),
        format!("viewer:{VIEWER}"),
        "--token".into(),
        format!("control:{CONTROL}"),
        "--token".into(),
        format!("admin:{ADMIN}"),
    ]
}

fn start_with_tokens(extra: &[&str]) -> Server {
    let owned = tokens();
    let mut args: Vec<&str> = owned.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Reads a CRLF-terminated line from a raw socket reader.
fn raw_line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read line");
    line
}

#[test]
fn sse_sends_one_chunk_per_event_and_http_1_0_gets_no_chunks() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut stream = connect(port);
    write_request(&mut stream, "GET", "/stream/events", &[], b"").unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream);
    let (status, _, headers) = read_head(&mut reader).unwrap();
    assert_eq!(status, 200);
    assert_eq!(header_of(&headers, "transfer-encoding"), Some("chunked"));
    // The first chunk is the whole first block: retry, connected and its data.
    let size = usize::from_str_radix(raw_line(&mut reader).trim_end(), 16).unwrap();
    let mut first = vec![0; size];
    reader.read_exact(&mut first).unwrap();
    let first = String::from_utf8(first).unwrap();
    assert!(
        first.starts_with("retry: 3000\nevent: connected\ndata: {") && first.ends_with("}\n\n"),
        "first chunk {first:?}"
    );
    assert_eq!(first.matches("\n\n").count(), 1, "one block: {first:?}");
    assert_eq!(raw_line(&mut reader), "\r\n");
    // A posted event arrives as a chunk of its own, exactly its block.
    let event = post_event(port, None, "doorbell_pressed", json!({"n": 1}));
    let size = usize::from_str_radix(raw_line(&mut reader).trim_end(), 16).unwrap();
    let mut block = vec![0; size];
    reader.read_exact(&mut block).unwrap();
    let block = String::from_utf8(block).unwrap();
    assert!(
        block.starts_with(&format!(
            "id: {}\nevent: doorbell_pressed\ndata: {{",
            event["id"]
        )) && block.ends_with("}\n\n"),
        "event chunk {block:?}"
    );
    assert_eq!(raw_line(&mut reader), "\r\n");

    // HTTP/1.0 has no chunked encoding: the body runs until close, the same blocks as they are.
    let mut old = connect(port);
    std::io::Write::write_all(
        &mut old,
        b"GET /stream/events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .unwrap();
    old.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(old);
    let (status, _, headers) = read_head(&mut reader).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        header_of(&headers, "transfer-encoding"),
        None,
        "{headers:?}"
    );
    assert_eq!(raw_line(&mut reader), "retry: 3000\n");
    assert_eq!(raw_line(&mut reader), "event: connected\n");
}

/// (r2) Each part's closing delimiter leaves with its JPEG: at 1 frame a second, the delimiter
/// after a part must not wait for the next frame (that made Firefox show every frame late).
#[test]
fn mjpeg_sends_the_closing_delimiter_with_the_jpeg() {
    let server = Server::start(&["--camera", "synthetic:320x240@10"]);
    let mut stream = connect(server.port());
    write_request(
        &mut stream,
        "GET",
        "/stream/video?quality=low&fps=1",
        &[],
        b"",
    )
    .unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (status, _, _) = read_head(&mut reader).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        raw_line(&mut reader),
        "--frame\r\n",
        "the body opens with it"
    );
    for _ in 0..3 {
        let mut length = None;
        loop {
            let line = raw_line(&mut reader);
            if line == "\r\n" {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length: ") {
                length = Some(n.trim().parse::<usize>().unwrap());
            }
        }
        let mut jpeg = vec![0; length.expect("Content-Length")];
        reader.read_exact(&mut jpeg).unwrap();
        assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
        let jpeg_done = Instant::now();
        // The next frame is a second away; the delimiter must come well before it.
        stream
            .set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        let mut end = [0; 11];
        reader.read_exact(&mut end).unwrap_or_else(|e| {
            panic!(
                "no delimiter within {:?} of the JPEG's end: {e}",
                jpeg_done.elapsed()
            )
        });
        assert_eq!(&end, b"\r\n--frame\r\n");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    }
}

#[test]
fn basic_auth_takes_the_token_as_password_without_prompting_browsers() {
    let server = start_with_tokens(&[]);
    let port = server.port();
    let get_with = |headers: &[(&str, &str)]| request(port, "GET", "/api/status", headers, b"");

    // Any user name; the password is the token; the role is the token's.
    for user in ["homeassistant", "", "x"] {
        let auth = basic(user, VIEWER);
        let ok = get_with(&[("Authorization", &auth)]);
        assert_eq!(ok.status, 200, "user {user:?}: {}", ok.text());
    }
    let auth = basic("ha", VIEWER);
    let viewer_trigger = request(
        port,
        "POST",
        "/api/trigger-doorbell",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(viewer_trigger.status, 403, "{}", viewer_trigger.text());
    let auth = basic("ha", CONTROL);
    let rang = request(
        port,
        "POST",
        "/api/trigger-doorbell",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(rang.status, 200, "{}", rang.text());
    // The stream a camera integration opens, and its still image.
    let auth = basic("ha", VIEWER);
    let mut video = Mjpeg::open_with(
        port,
        "/stream/video?quality=low",
        &[("Authorization", &auth)],
    )
    .unwrap_or_else(|r| panic!("{} {}", r.status, r.text()));
    video.expect_part();
    video.close();

    // Wrong, empty and malformed credentials: 401 with the JSON error, never a 500.
    for auth in [
        basic("ha", "not-the-token"),
        basic("ha", ""),
        basic(VIEWER, ""), // the token as the user name is not the password
        "Basic !!!not-base64".to_string(),
        "Basic".to_string(),
        format!("Basic {}", data_encoding::BASE64.encode(b"no colon here")),
    ] {
        let refused = get_with(&[("Authorization", &auth)]);
        refused.assert_error(401);
    }

    // Players that only send `user:token@` when challenged (ffmpeg, VLC, mpv) get a Basic
    // challenge; a browser gets only Bearer, which no browser answers with a password dialog.
    let challenges = |headers: &[(&str, &str)]| -> Vec<String> {
        let r = request(port, "GET", "/stream/video", headers, b"");
        assert_eq!(r.status, 401);
        r.headers_named("www-authenticate")
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    for player in [
        vec![("User-Agent", "Lavf/59.27.100")],
        vec![("User-Agent", "VLC/3.0.18 LibVLC/3.0.18")],
        vec![],
    ] {
        let got = challenges(&player);
        // One header, Basic first: ffmpeg and VLC look only at the scheme it starts with.
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("Basic realm="), "{player:?}: {got:?}");
        assert!(got[0].contains("Bearer realm="), "{got:?}");
    }
    for browser in [
        vec![(
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )],
        vec![("Sec-Fetch-Mode", "no-cors"), ("Sec-Fetch-Dest", "image")],
    ] {
        let got = challenges(&browser);
        assert!(
            !got.iter().any(|c| c.to_ascii_lowercase().contains("basic")),
            "{browser:?}: {got:?}"
        );
        assert!(got.iter().any(|c| c.starts_with("Bearer")), "{got:?}");
    }
}

#[test]
fn cors_only_for_listed_origins() {
    // Without allowed_origins: no CORS headers at all, preflights refused.
    let plain = Server::start(&[]);
    let r = request(
        plain.port(),
        "GET",
        "/api/status",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), None, "nothing varies by Origin");

    let listed = "http://door.local:3000";
    let server = Server::with_config(&format!("allowed_origins = [\"{listed}\"]\n"), &[]);
    let port = server.port();
    let r = request(port, "GET", "/api/status", &[("Origin", listed)], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(listed));
    assert!(r.headers_named("vary").iter().any(|v| v.contains("Origin")));
    for other in ["http://evil.example", "null", "http://door.local:3001"] {
        let r = request(port, "GET", "/api/status", &[("Origin", other)], b"");
        assert_eq!(r.header("access-control-allow-origin"), None, "{other}");
        assert!(r.headers_named("vary").iter().any(|v| v.contains("Origin")));
        assert!(!r.headers.iter().any(|(_, v)| v == "*"), "{:?}", r.headers);
    }

    // The preflight of a token-carrying POST, answered without credentials.
    let preflight = |origin: &str, method: &str| {
        request(
            port,
            "OPTIONS",
            "/api/events",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
                (
                    "Access-Control-Request-Headers",
                    "authorization,content-type",
                ),
            ],
            b"",
        )
    };
    let ok = preflight(listed, "POST");
    assert_eq!(ok.status, 204, "{}", ok.text());
    assert_eq!(ok.header("access-control-allow-origin"), Some(listed));
    let methods = ok.header("access-control-allow-methods").unwrap_or("");
    assert!(
        methods.contains("POST") && methods.contains("GET"),
        "{methods}"
    );
    let allowed = ok
        .header("access-control-allow-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    preflight("http://evil.example", "POST").assert_error(403);
    assert_eq!(preflight(listed, "DELETE").status, 405);

    // The streams carry it too: EventSource and fetch() from the listed origin can read them.
    let sse = Sse::open(port, "/stream/events", &[("Origin", listed)])
        .unwrap_or_else(|r| panic!("{}", r.status));
    assert_eq!(sse.header("access-control-allow-origin"), Some(listed));
    let video = Mjpeg::open_with(port, "/stream/video?quality=low", &[("Origin", listed)])
        .unwrap_or_else(|r| panic!("{}", r.status));
    assert_eq!(video.header("access-control-allow-origin"), Some(listed));
}

#[test]
fn event_snapshots_are_immutable_with_an_etag_and_304() {
    let server = Server::start(&["--camera", "synthetic:320x240@10"]);
    let port = server.port();
    // Wait for the camera's first frame (the stream gives it as soon as there is one): an
    // event posted before it has no picture, which a loaded machine made likely.
    Mjpeg::connect(port, "/stream/video?quality=source").expect_part();
    let event = post_event(port, None, "doorbell_pressed", json!({}));
    let url = event["snapshot_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot: {event}"));
    let full = get(port, url, None);
    assert_eq!(full.status, 200);
    assert_eq!(
        full.header("cache-control"),
        Some("private, max-age=31536000, immutable")
    );
    let tag = full.header("etag").expect("ETag").to_string();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    assert_eq!(get(port, url, None).header("etag"), Some(tag.as_str()));

    for presented in [
        tag.clone(),
        format!("W/{tag}"),
        format!("\"x\", {tag}"),
        "*".into(),
    ] {
        let again = request(port, "GET", url, &[("If-None-Match", &presented)], b"");
        assert_eq!(again.status, 304, "If-None-Match {presented}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(tag.as_str()));
        assert_eq!(
            again.header("cache-control"),
            Some("private, max-age=31536000, immutable")
        );
    }
    let stale = request(port, "GET", url, &[("If-None-Match", "\"other\"")], b"");
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, full.body);

    // Another event's picture has another tag.
    let second = post_event(port, None, "doorbell_pressed", json!({}));
    let other = get(port, second["snapshot_url"].as_str().unwrap(), None);
    assert_ne!(other.header("etag"), Some(tag.as_str()));
}

#[test]
fn dashboard_files_carry_etags_and_answer_304_until_they_change() {
    let www = TempDir::new("www");
    www.write("index.html", "<!doctype html><title>one</title>");
    www.write("app.js", "console.log(1);");
    let server = Server::start(&["--www", &www.path_str()]);
    let port = server.port();
    for path in ["/", "/app.js"] {
        let first = get(port, path, None);
        assert_eq!(first.status, 200);
        assert_eq!(first.header("cache-control"), Some("no-cache"));
        let tag = first.header("etag").expect("ETag").to_string();
        let again = request(port, "GET", path, &[("If-None-Match", &tag)], b"");
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
        assert_eq!(again.header("etag"), Some(tag.as_str()));
    }
    let tag = get(port, "/app.js", None)
        .header("etag")
        .unwrap()
        .to_string();
    www.write("app.js", "console.log(2);");
    let changed = request(port, "GET", "/app.js", &[("If-None-Match", &tag)], b"");
    assert_eq!(changed.status, 200);
    assert_eq!(changed.text(), "console.log(2);");
    assert_ne!(changed.header("etag"), Some(tag.as_str()));
}
