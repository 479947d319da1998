//! Second black-box audit of the release contract (API.md): what a client that correlates
//! answers, filters events or runs the server from a terminal relies on. Each test failed on
//! the binary before its fix.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use serde_json::Value;
use tungstenite::Message;

use crate::common::broker::Broker;
use crate::common::*;

/// Sends `text` and returns the next message as the exact text the server sent.
fn ws_answer(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::Text(text.into())).unwrap();
    ws_next_text(ws)
}

#[test]
fn every_websocket_answer_echoes_the_request_id_exactly_as_sent() {
    let server = Server::start(&[]);
    let mut ws = ws_connect(server.port(), "client_id=probe");
    // Ids a JSON round trip would change: trailing zero, a 2^64+1 integer, an escape.
    for id in [
        r#"1.50"#,
        "18446744073709551617",
        r#""\u0041b""#,
        r#"{"n": [1, 2]}"#,
    ] {
        for (message, kind) in [
            (r#""type": "ping""#.to_string(), "pong"),
            (
                r#""type": "subscribe", "event_types": ["doorbell_pressed"]"#.into(),
                "subscribed",
            ),
            (
                r#""type": "unsubscribe", "event_types": ["*"]"#.into(),
                "unsubscribed",
            ),
            (
                r#""type": "request_video_stream", "quality": "low""#.into(),
                "video_stream_ready",
            ),
            (
                r#""type": "system_command", "command": "get_system_status""#.into(),
                "command_result",
            ),
            // Refusals already echoed it; they must go on doing so.
            (r#""type": "subscribe", "event_types": []"#.into(), "error"),
            (r#""type": "nonsense""#.into(), "error"),
        ] {
            let text = format!("{{{message}, \"request_id\": {id}}}");
            let answer = ws_answer(&mut ws, &text);
            let parsed: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(parsed["type"], kind, "{text}: {answer}");
            assert!(
                answer.contains(&format!(r#""request_id":{id}"#)),
                "{text}: the answer does not echo the request_id as sent: {answer}"
            );
        }
    }
    // A message without one gets an answer without one (command_result's is null).
    let answer: Value = serde_json::from_str(&ws_answer(&mut ws, r#"{"type": "ping"}"#)).unwrap();
    assert_eq!(answer["type"], "pong");
    assert!(answer.get("request_id").is_none(), "{answer}");

    // A subscription over the per-connection limit is refused, echoing the id too.
    let many: Vec<String> = (0..300).map(|i| format!("\"t{i}\"")).collect();
    let text = format!(
        r#"{{"type": "subscribe", "event_types": [{}], "request_id": 77}}"#,
        many.join(",")
    );
    let answer: Value = serde_json::from_str(&ws_answer(&mut ws, &text)).unwrap();
    assert_eq!(answer["code"], "bad_params", "{answer}");
    assert_eq!(answer["request_id"], 77, "{answer}");
}

#[test]
fn an_sse_types_filter_naming_no_type_is_a_400_not_a_silent_stream() {
    let server = Server::start(&[]);
    let port = server.port();
    for query in ["types=", "types=,", "types=,,,"] {
        let path = format!("/stream/events?{query}");
        let refused = match Sse::open(port, &path, &[]) {
            Ok(_) => panic!("{path}: a stream that can never send an event was opened"),
            Err(response) => response,
        };
        refused.assert_error(400);
        assert!(
            refused.json()["message"]
                .as_str()
                .unwrap()
                .contains("names no event type"),
            "{path}: {:?}",
            refused.text()
        );
    }
    // A filter with a name in it still works, empty items and all.
    let mut sse = Sse::connect(port, "/stream/events?types=,probe_b,");
    post_event(port, None, "probe_a", serde_json::json!({}));
    let wanted = post_event(port, None, "probe_b", serde_json::json!({}));
    let block = sse.expect_event();
    assert_eq!(block.id_num(), id_of(&wanted));
}

#[test]
fn a_webhook_with_an_empty_types_list_is_a_config_error_not_every_event() {
    let dir = TempDir::new("probe2-hooks");
    let path = dir.write(
        "hooks.toml",
        "webhooks = [{url = \"http://127.0.0.1:9/hook\", types = []}]\n",
    );
    let path = path.to_string_lossy().into_owned();
    let checked = run_to_exit(&["--check-config", &path], Duration::from_secs(10));
    assert_eq!(checked.code(), Some(2), "{}", checked.stderr);
    let lines = checked.stderr_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("webhooks[0].types"), "{lines:?}");
    assert!(lines[0].contains("leave types out"), "{lines:?}");
    // Leaving it out is every type, as the README says.
    let fine = dir.write(
        "fine.toml",
        "webhooks = [{url = \"http://127.0.0.1:9/hook\"}]\n",
    );
    let checked = run_to_exit(
        &["--check-config", &fine.to_string_lossy()],
        Duration::from_secs(10),
    );
    assert_eq!(checked.code(), Some(0), "{}", checked.stderr);
}

#[test]
fn sighup_shuts_down_cleanly_like_sigterm() {
    let mut server = Server::start(&[]);
    let mut sse = Sse::connect(server.port(), "/stream/events");
    server.signal("HUP");
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("no exit within 5 s of SIGHUP");
    assert_eq!(
        status.code(),
        Some(0),
        "SIGHUP must be a clean shutdown, not a kill: {status}"
    );
    // The line may still be in the pipe to the test's log reader after the exit.
    let log = server.stderr_with("SIGHUP received");
    assert!(log.contains("SIGHUP received"), "{log}");
    // The streams were ended properly, not cut.
    let (_, end, _) = sse.read_to_end(Duration::from_secs(5));
    assert!(end.is_closed(), "{end:?}");
    assert!(sse.body_complete(), "the chunked body was cut");
}

#[test]
fn an_mqtt_command_answer_echoes_the_request_id_exactly_as_sent() {
    let broker = Broker::start();
    let sub = broker.subscribe(&["porchlight/p2/command/#"]);
    let toml = format!(
        "mqtt_url = \"{}\"\ndevice_id = \"p2\"\nmqtt_commands = true\n",
        broker.url()
    );
    let server = Server::with_config(&toml, &[]);
    let log = server.stderr_with("MQTT: connected");
    assert!(log.contains("MQTT: connected"), "{log}");
    let topic = "porchlight/p2/command/get_system_status";
    let result = format!("{topic}/result");
    // Published until answered: one sent before the bridge's SUBACK is not seen.
    let answer_to = |payload: &str| -> String {
        for _ in 0..50 {
            broker.publish(topic, payload, false);
            if let Some(m) = (0..20)
                .filter_map(|_| sub.next(Duration::from_millis(100)))
                .find(|m| m.topic == result)
            {
                return m.text();
            }
        }
        panic!("no answer on {result}");
    };
    for id in ["1.50", "18446744073709551617", r#""\u0041b""#] {
        for (payload, kind) in [
            (format!(r#"{{"request_id": {id}}}"#), "command_result"),
            (format!(r#"{{"request_id": {id}, "x": 1}}"#), "error"),
        ] {
            let answer = answer_to(&payload);
            let parsed: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(parsed["type"], kind, "{payload}: {answer}");
            assert!(
                answer.contains(&format!(r#""request_id":{id}"#)),
                "{payload}: the answer does not echo the request_id as sent: {answer}"
            );
        }
    }
}

#[test]
fn a_json_body_with_a_content_encoding_is_a_415_and_changes_nothing() {
    let server = Server::start(&[]);
    let port = server.port();
    let stored = || get(port, "/api/status", None).json()["events"]["stored"].clone();
    let before = stored();
    let body = br#"{"event_type": "encoded", "data": {}}"#;
    // A plain body labelled gzip is not read as plain (nor a gzip one as garbage JSON: 400).
    for coding in ["gzip", "deflate", "br", "gzip, identity"] {
        for path in ["/api/events", "/api/login"] {
            let resp = request(
                port,
                "POST",
                path,
                &[
                    ("Content-Type", "application/json"),
                    ("Content-Encoding", coding),
                ],
                body,
            );
            resp.assert_error(415);
            assert!(
                resp.json()["message"]
                    .as_str()
                    .unwrap()
                    .contains("Content-Encoding"),
                "{path} {coding}: {:?}",
                resp.text()
            );
        }
    }
    assert_eq!(stored(), before, "an encoded body was stored");
    // `identity` is no encoding at all.
    let resp = request(
        port,
        "POST",
        "/api/events",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "identity"),
        ],
        body,
    );
    assert_eq!(resp.status, 201, "{:?}", resp.text());
}

#[test]
fn set_quality_takes_auto_like_a_stream_url_does() {
    let server = Server::start(&["--camera", "synthetic:640x480@15"]);
    let port = server.port();
    let mut ws = ws_connect(port, "");
    let answer: Value = serde_json::from_str(&ws_answer(
        &mut ws,
        r#"{"type": "system_command", "command": "set_quality", "params": {"quality": "auto"}, "request_id": 1}"#,
    ))
    .unwrap();
    assert_eq!(answer["type"], "command_result", "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
    assert_eq!(answer["result"]["quality"], "auto", "{answer}");
    let ready: Value =
        serde_json::from_str(&ws_answer(&mut ws, r#"{"type": "request_video_stream"}"#)).unwrap();
    assert_eq!(ready["quality"], "auto", "{ready}");
    // A stream without quality= is now auto: its parts say which preset they are.
    let head = first_part_head(port, "/stream/video");
    assert!(head.contains("X-Quality: "), "{head}");
    // And back to a preset.
    let answer: Value = serde_json::from_str(&ws_answer(
        &mut ws,
        r#"{"type": "system_command", "command": "set_quality", "params": {"quality": "medium"}}"#,
    ))
    .unwrap();
    assert_eq!(answer["success"], true, "{answer}");
    let head = first_part_head(port, "/stream/video");
    assert!(!head.contains("X-Quality"), "{head}");
    assert!(head.contains("Content-Type: image/jpeg"), "{head}");
}

/// The response head and the first part's head of the MJPEG stream at `path`, as text.
fn first_part_head(port: u16, path: &str) -> String {
    let mut stream = connect(port);
    write_request(&mut stream, "GET", path, &[], b"").unwrap();
    let mut reader = BufReader::new(stream);
    let (status, _, _) = read_head(&mut reader).unwrap();
    assert_eq!(status, 200, "{path}");
    let mut head = String::new();
    // Past the chunk-size or delimiter lines, up to the blank line ending the part head.
    while !head.contains("X-Frame-Id") || !head.ends_with("\r\n\r\n") {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).unwrap();
        assert!(!line.is_empty(), "the stream ended: {head}");
        head.push_str(&String::from_utf8_lossy(&line));
        assert!(head.len() < 4096, "no part head: {head}");
    }
    head
}

#[test]
fn streams_resume_from_after_as_api_events_spells_it() {
    let server = Server::start(&[]);
    let port = server.port();
    let first = post_event(port, None, "resume_a", serde_json::json!({}));
    let second = post_event(port, None, "resume_b", serde_json::json!({}));
    // SSE: `after=` replays like `last_event_id=`; the Last-Event-ID header still wins.
    let mut sse = Sse::connect(port, &format!("/stream/events?after={}", id_of(&first)));
    assert_eq!(sse.expect_event().id_num(), id_of(&second));
    sse.close();
    let mut sse = Sse::connect_with(
        port,
        "/stream/events?after=0",
        &[("Last-Event-ID", &id_of(&first).to_string())],
    );
    assert_eq!(sse.expect_event().id_num(), id_of(&second));
    sse.close();
    // WebSocket: the same, once subscribed.
    let mut ws = ws_connect(port, &format!("after={}", id_of(&first)));
    let subscribed = ws_answer(&mut ws, r#"{"type": "subscribe", "event_types": ["*"]}"#);
    assert!(subscribed.contains("subscribed"), "{subscribed}");
    let live = ws_next(&mut ws);
    assert_eq!(live["type"], "live_event", "{live}");
    assert_eq!(live["event"]["id"], second["id"], "{live}");
    // Two different cursors in one URL are refused on both, before any stream opens.
    let upgrade = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    for path in [
        "/stream/events?after=1&last_event_id=2",
        "/ws?after=1&last_event_id=2",
        "/stream/events?after=x",
        "/ws?after=-1",
    ] {
        let resp = request(port, "GET", path, &upgrade, b"");
        resp.assert_error(400);
    }
}

#[test]
fn the_event_list_filters_by_types_as_the_stream_spells_it_never_ignoring_it() {
    let server = Server::start(&[]);
    let port = server.port();
    let ids =
        |query: &str| -> Vec<u64> { list_events(port, None, query).iter().map(id_of).collect() };
    let a = id_of(&post_event(port, None, "list_a", serde_json::json!({})));
    let b = id_of(&post_event(port, None, "list_b", serde_json::json!({})));
    let c = id_of(&post_event(port, None, "list_c", serde_json::json!({})));
    assert_eq!(ids("type=list_b"), vec![b]);
    assert_eq!(ids("types=list_b"), vec![b], "types= was ignored");
    assert_eq!(ids("types=list_a,list_c"), vec![c, a]);
    assert_eq!(ids("type=list_c,list_a,list_c&limit=1"), vec![c]);
    assert_eq!(ids("type=list_a&types=list_a"), vec![a]);
    for query in [
        "type=list_a&types=list_b",
        "types=",
        "types=,",
        "types=Bad",
        "types=a1,a2,a3,a4,a5,a6,a7,a8,a9",
    ] {
        let resp = get(port, &format!("/api/events?{query}"), None);
        resp.assert_error(400);
    }
}
