//! Byte ranges and conditional requests on stored media (RFC 9110 §13–14): an event's
//! snapshot, the dashboard's files and a finished clip's download are tagged and served in
//! ranges (`curl -C -` resumes a clip), `If-Range` and `If-Match` are judged, HEAD answers
//! as GET does; what may change between two requests (a clip still recording, the live
//! frame) and the streams are never ranged.

use std::io::{BufReader, Read as _};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const CAMERA: &str = "synthetic:320x240@15";

/// Waits until the camera has a live frame (`/api/snapshot.jpg` answers 200).
fn wait_live(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(port, "/api/snapshot.jpg", None).status != 200 {
        assert!(Instant::now() < deadline, "the camera never went live");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    request(port, "GET", path, headers, b"")
}

/// Asserts a 206 of `full[first..=last]` with its `Content-Range` and length.
fn assert_part(resp: &Response, full: &[u8], first: usize, last: usize) {
    assert_eq!(resp.status, 206, "{:?}", resp.text());
    let range = format!("bytes {first}-{last}/{}", full.len());
    assert_eq!(resp.header("content-range"), Some(range.as_str()));
    let length = (last - first + 1).to_string();
    assert_eq!(resp.header("content-length"), Some(length.as_str()));
    assert_eq!(resp.body, full[first..=last]);
    assert_eq!(resp.header("accept-ranges"), Some("bytes"));
}

/// Asserts a 200 of the whole body, stating its length.
fn assert_whole(resp: &Response, full: &[u8], what: &str) {
    assert_eq!(resp.status, 200, "{what}: {:?}", resp.text());
    assert_eq!(resp.body, full, "{what}");
    assert_eq!(resp.header("content-range"), None, "{what}");
    let length = full.len().to_string();
    assert_eq!(
        resp.header("content-length"),
        Some(length.as_str()),
        "{what}"
    );
}

/// The headers of an answer that a HEAD must repeat (all but `Date`), sorted.
fn head_lines(resp: &Response) -> Vec<(String, String)> {
    let mut lines: Vec<(String, String)> = resp
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("date"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    lines.sort();
    lines
}

/// Every form of `Range` on a body of `full`, tagged `tag`, at `path`.
fn check_ranges(port: u16, path: &str, full: &[u8], tag: &str, extra: &[(&str, &str)]) {
    let len = full.len();
    assert!(len > 100, "{path}: a body too small to cut: {len}");
    let with = |more: &[(&str, &str)]| {
        let mut headers = extra.to_vec();
        headers.extend_from_slice(more);
        get_with(port, path, &headers)
    };
    let ranged = |range: &str| with(&[("Range", range)]);
    assert_part(&ranged("bytes=0-9"), full, 0, 9);
    assert_part(&ranged("bytes=10-"), full, 10, len - 1);
    assert_part(&ranged("bytes=-5"), full, len - 5, len - 1);
    assert_part(&ranged("bytes=5-5"), full, 5, 5);
    assert_part(&ranged(&format!("bytes=50-{}", len * 2)), full, 50, len - 1);
    assert_part(&ranged(&format!("bytes=-{}", len * 2)), full, 0, len - 1);
    // 20 digits, above 2^64: as large as they say, never wrapped.
    assert_part(&ranged("bytes=0-99999999999999999999"), full, 0, len - 1);
    assert_part(&ranged("bytes=-99999999999999999999"), full, 0, len - 1);
    for unsatisfiable in [
        format!("bytes={len}-"),
        format!("bytes={len}-{}", len + 10),
        "bytes=99999999999999999999-".to_string(),
        "bytes=-0".to_string(),
    ] {
        let resp = ranged(&unsatisfiable);
        resp.assert_error(416);
        let star = format!("bytes */{len}");
        assert_eq!(
            resp.header("content-range"),
            Some(star.as_str()),
            "{unsatisfiable}"
        );
    }
    // Outside the grammar, another unit, or several ranges: the whole body.
    for ignored in [
        "bytes=5-3",
        "bytes=-5-",
        "bytes=--5",
        "bytes=+1-2",
        "bytes=a-b",
        "bytes=1",
        "items=0-9",
        "bytes=0-1,5-9",
    ] {
        assert_whole(&ranged(ignored), full, ignored);
    }
    // Two Range fields: not a list, ignored.
    assert_whole(
        &with(&[("Range", "bytes=0-1"), ("Range", "bytes=2-3")]),
        full,
        "two Range fields",
    );

    // If-Range: the part only while the client's copy is this one, by strong comparison.
    let part = |if_range: &str| with(&[("Range", "bytes=0-9"), ("If-Range", if_range)]);
    assert_part(&part(tag), full, 0, 9);
    let weak = format!("W/{tag}");
    for stale in [
        weak.as_str(),
        "\"another\"",
        "Wed, 21 Oct 2015 07:28:00 GMT",
    ] {
        let resp = part(stale);
        assert_whole(&resp, full, stale);
        assert_eq!(resp.header("etag"), Some(tag));
    }

    // If-Range twice: no single validator to compare.
    let twice = with(&[("Range", "bytes=0-9"), ("If-Range", tag), ("If-Range", tag)]);
    assert_whole(&twice, full, "two If-Range fields");

    // If-Match: strong comparison, before anything else.
    let matched = |if_match: &str| with(&[("If-Match", if_match), ("Range", "bytes=0-9")]);
    assert_part(&matched(tag), full, 0, 9);
    assert_part(&matched("*"), full, 0, 9);
    assert_part(&matched(&format!("\"x\", {tag}")), full, 0, 9);
    matched("\"x\"").assert_error(412);
    matched(&weak).assert_error(412);

    // If-None-Match still gets its 304, with or without a Range.
    for headers in [
        vec![("If-None-Match", tag)],
        vec![("If-None-Match", tag), ("Range", "bytes=0-9")],
    ] {
        let resp = with(&headers);
        assert_eq!(resp.status, 304, "{headers:?}");
        assert_eq!(resp.header("etag"), Some(tag));
        assert!(resp.body.is_empty());
    }

    // HEAD: the same status and headers as GET, no body.
    for range in [None, Some("bytes=0-9"), Some("bytes=99999999999999999999-")] {
        let mut headers = extra.to_vec();
        headers.extend(range.map(|r| ("Range", r)));
        let got = get_with(port, path, &headers);
        let head = request(port, "HEAD", path, &headers, b"");
        assert_eq!(head.status, got.status, "{range:?}");
        assert_eq!(head_lines(&head), head_lines(&got), "HEAD with {range:?}");
    }
}

#[test]
fn an_event_snapshot_is_served_in_ranges_under_its_tag() {
    let server = Server::start(&["--camera", CAMERA]);
    let port = server.port();
    wait_live(port);
    let event = trigger(port, None);
    let url = event["snapshot_url"].as_str().expect("a snapshot_url");
    let full = get(port, url, None);
    assert_whole(&full, &full.body, url);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    let tag = full.header("etag").expect("an ETag").to_string();
    assert!(tag.starts_with('"'), "a strong tag: {tag}");
    check_ranges(port, url, &full.body, &tag, &[]);
}

#[test]
fn the_live_snapshot_is_never_ranged() {
    let server = Server::start(&["--camera", CAMERA]);
    let port = server.port();
    wait_live(port);
    // A new picture each time: a range would splice two frames.
    let resp = get_with(port, "/api/snapshot.jpg", &[("Range", "bytes=0-9")]);
    assert_eq!(resp.status, 200);
    assert!(resp.body.len() > 10 && resp.body.starts_with(&[0xFF, 0xD8]));
    assert_eq!(resp.header("accept-ranges"), None);
    assert_eq!(resp.header("etag"), None);
    assert_eq!(resp.header("content-range"), None);
    // No tag: If-Match can only hold for `*`.
    let any = get_with(port, "/api/snapshot.jpg", &[("If-Match", "*")]);
    assert_eq!(any.status, 200);
    get_with(port, "/api/snapshot.jpg", &[("If-Match", "\"x\"")]).assert_error(412);
}

#[test]
fn dashboard_files_are_served_in_ranges_per_coding() {
    let server = Server::start(&[]);
    let port = server.port();
    for coding in [None, Some("gzip")] {
        let extra: Vec<(&str, &str)> = coding.map(|c| ("Accept-Encoding", c)).into_iter().collect();
        let full = get_with(port, "/js/main.js", &extra);
        assert_whole(&full, &full.body, "/js/main.js");
        assert_eq!(full.header("content-encoding"), coding);
        assert_eq!(full.header("accept-ranges"), Some("bytes"));
        let tag = full.header("etag").expect("an ETag").to_string();
        check_ranges(port, "/js/main.js", &full.body, &tag, &extra);
    }
    // The gzip copy's tag is not the plain copy's: If-Range across codings gets the whole body.
    let plain = get(port, "/js/main.js", None);
    let plain_tag = plain.header("etag").unwrap();
    let gzip = [("Accept-Encoding", "gzip")];
    let whole_gzip = get_with(port, "/js/main.js", &gzip);
    let crossed = get_with(
        port,
        "/js/main.js",
        &[
            ("Accept-Encoding", "gzip"),
            ("Range", "bytes=0-9"),
            ("If-Range", plain_tag),
        ],
    );
    assert_whole(
        &crossed,
        &whole_gzip.body,
        "If-Range with the plain copy's tag",
    );
}

/// A server recording clips `pre` s before and `post` s after each doorbell press, with the
/// camera live and the pre-roll full.
fn clip_server(pre: f64, post: f64) -> Server {
    let config = format!("clip_pre_s = {pre:?}\nclip_post_s = {post:?}\n");
    let server = Server::with_config(&config, &["--camera", CAMERA]);
    let held = wait_metric(
        server.port(),
        None,
        "porchlight_clip_preroll_seconds",
        Duration::from_secs(20),
        |s| s >= pre,
    );
    assert!(held.is_some_and(|s| s >= pre), "pre-roll: {held:?}");
    server
}

fn download_url(event: &Value) -> String {
    let url = event["clip_url"].as_str().expect("a clip_url");
    format!("{url}?download=1")
}

/// `curl`, checked to have run; returns its stdout.
fn curl(args: &[&str]) -> String {
    let finished = run_program("curl", args, Duration::from_secs(60));
    assert!(
        finished.status.success(),
        "curl {args:?}: {:?}\n{}",
        finished.status,
        finished.stderr
    );
    finished.stdout
}

/// Python's own HTTP client asks for `range` of `path`, with `If-Range: if_range`; returns
/// the status, `Content-Range` and the body's length as it printed them.
fn python_range(port: u16, path: &str, range: &str, if_range: &str) -> String {
    let script = "import http.client, sys\n\
        c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=30)\n\
        c.request('GET', sys.argv[2], headers={'Range': sys.argv[3], 'If-Range': sys.argv[4]})\n\
        r = c.getresponse()\n\
        body = r.read()\n\
        print(r.status, r.getheader('Content-Range'), len(body))\n";
    let port = port.to_string();
    let finished = run_program(
        "python3",
        &["-c", script, &port, path, range, if_range],
        Duration::from_secs(60),
    );
    assert!(finished.status.success(), "python3: {}", finished.stderr);
    finished.stdout.trim().to_string()
}

#[test]
fn an_interrupted_clip_download_resumes_with_curl() {
    let server = clip_server(1.0, 1.0);
    let port = server.port();
    let event = trigger(port, None);
    let recorded = wait_metric(
        port,
        None,
        "porchlight_clips_recorded_total",
        Duration::from_secs(30),
        |n| n >= 1.0,
    );
    assert!(recorded.is_some_and(|n| n >= 1.0), "no clip: {recorded:?}");
    let path = download_url(&event);
    let full = get(port, &path, None);
    assert_whole(&full, &full.body, &path);
    assert_eq!(full.header("accept-ranges"), Some("bytes"));
    assert_eq!(full.header("content-type"), Some("video/x-matroska"));
    let tag = full
        .header("etag")
        .expect("a finished clip has an ETag")
        .to_string();
    check_ranges(port, &path, &full.body, &tag, &[]);

    // A download cut off mid-body (the connection dropped after the head and part of the
    // file), then `curl -C -` resumes from the bytes saved.
    let url = format!("http://127.0.0.1:{port}{path}");
    let dir = TempDir::new("clip-resume");
    let saved = dir.join("clip.mkv");
    let saved_str = saved.to_str().unwrap();
    let had = full.body.len() / 3;
    std::fs::write(&saved, interrupted(port, &path, had)).unwrap();
    let status = curl(&[
        "-sS",
        "-C",
        "-",
        "-o",
        saved_str,
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(status, "206", "curl resumed with a {status}");
    assert_eq!(std::fs::read(&saved).unwrap(), full.body, "resumed file");

    // Python's http.client, resuming under If-Range.
    let half = full.body.len() / 2;
    let rest = format!("bytes={half}-");
    let expected = format!(
        "206 bytes {half}-{}/{} {}",
        full.body.len() - 1,
        full.body.len(),
        full.body.len() - half
    );
    assert_eq!(python_range(port, &path, &rest, &tag), expected);
    let whole = format!("200 None {}", full.body.len());
    assert_eq!(python_range(port, &path, &rest, "\"stale\""), whole);

    // The replay is a stream: never ranged.
    let replay = event["clip_url"].as_str().unwrap();
    let head = request(port, "HEAD", replay, &[("Range", "bytes=0-9")], b"");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("accept-ranges"), None);
    assert_eq!(head.header("content-range"), None);
}

/// The first `keep` bytes of `path`'s body, read from the socket before hanging up.
fn interrupted(port: u16, path: &str, keep: usize) -> Vec<u8> {
    let mut stream = connect(port);
    write_request(&mut stream, "GET", path, &[], b"").unwrap();
    let mut reader = BufReader::new(stream);
    let (status, _, headers) = read_head(&mut reader).unwrap();
    assert_eq!(status, 200);
    assert!(
        header_of(&headers, "content-length").is_some(),
        "{headers:?}"
    );
    let mut body = vec![0; keep];
    reader.read_exact(&mut body).unwrap();
    body
}

#[test]
fn a_clip_still_recording_is_neither_tagged_nor_ranged() {
    let server = clip_server(1.0, 60.0);
    let port = server.port();
    let event = trigger(port, None);
    let written = wait_metric(
        port,
        None,
        "porchlight_clip_frames_written_total",
        Duration::from_secs(20),
        |n| n >= 20.0,
    );
    assert!(written.is_some_and(|n| n >= 20.0), "frames: {written:?}");
    let path = download_url(&event);
    // Its header is rewritten when it ends: a part of it now and one later would not fit.
    let resp = get_with(port, &path, &[("Range", "bytes=0-9")]);
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert!(resp.body.len() > 10);
    assert_eq!(
        resp.header("content-length"),
        Some(resp.body.len().to_string().as_str())
    );
    assert_eq!(resp.header("accept-ranges"), None);
    assert_eq!(resp.header("etag"), None);
    assert_eq!(resp.header("content-range"), None);
    assert_eq!(get_with(port, &path, &[("If-Match", "*")]).status, 200);
    get_with(port, &path, &[("If-Match", "\"clip1\"")]).assert_error(412);

    // Nor are the live streams.
    for stream in ["/stream/video", "/stream/events", "/stream/system-status"] {
        let head = request(port, "HEAD", stream, &[("Range", "bytes=0-9")], b"");
        assert_eq!(head.status, 200, "{stream}");
        assert_eq!(head.header("accept-ranges"), None, "{stream}");
    }
}
