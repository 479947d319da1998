//! `/stream/events` and `/stream/system-status` against API.md "Server-Sent Events".

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

fn valid_client_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[test]
fn connected_preamble() {
    let server = Server::start(&[]);
    let port = server.port();

    let mut sse = Sse::open(port, "/stream/events?client_id=test-Client_1", &[])
        .unwrap_or_else(|r| panic!("{} {:?}", r.status, r.text()));
    let ct = sse.header("content-type").unwrap_or("").to_string();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct:?}");
    let cc = sse.header("cache-control").unwrap_or("").to_string();
    assert!(cc.contains("no-cache"), "cache-control {cc:?}");
    assert!(
        sse.header("content-length").is_none(),
        "a stream must not announce a length"
    );
    // (r2) Chunked, so that clients built on urllib3/requests see each event at once.
    assert_eq!(
        sse.header("transfer-encoding"),
        Some("chunked"),
        "{:?}",
        sse.headers
    );

    sse.read_preamble();
    // (r2) One first block: `retry`, `event: connected` and its data together (a block
    // without data reaches httpx-sse and sseclient as an empty message).
    let first = String::from_utf8_lossy(&sse.first_bytes).into_owned();
    let first_block = first.split("\n\n").next().unwrap();
    assert!(
        first_block.starts_with("retry: 3000\nevent: connected\ndata: {"),
        "the first block must be retry + connected + data: {first:?}"
    );
    let connected = sse.connected.clone().unwrap();
    assert_eq!(connected["client_id"], "test-Client_1", "{connected}");
    let server_time = connected["server_time"]
        .as_f64()
        .unwrap_or_else(|| panic!("server_time must be a number: {connected}"));
    assert!(
        (server_time - now_unix()).abs() < 60.0,
        "server_time {server_time} is not now"
    );
    assert!(
        connected.get("capabilities").is_some_and(|c| !c.is_null()),
        "capabilities missing: {connected}"
    );

    // Without a client_id the server makes one up; two connections get different ones.
    let a = Sse::connect(port, "/stream/events");
    let b = Sse::connect(port, "/stream/events");
    let id_a = a.connected.as_ref().unwrap()["client_id"]
        .as_str()
        .expect("client_id string")
        .to_string();
    let id_b = b.connected.as_ref().unwrap()["client_id"]
        .as_str()
        .expect("client_id string")
        .to_string();
    assert!(valid_client_id(&id_a), "made-up client_id {id_a:?}");
    assert!(valid_client_id(&id_b), "made-up client_id {id_b:?}");
    assert_ne!(id_a, id_b, "two clients got the same made-up id");

    // An id outside [A-Za-z0-9_-]{1,64} is never echoed back (it goes into logs).
    let long = "x".repeat(65);
    for bad in ["bad%20id%0Aevent:%20x", "semi;colon", long.as_str()] {
        match Sse::open(port, &format!("/stream/events?client_id={bad}"), &[]) {
            Err(resp) => {
                assert!(
                    (400..500).contains(&resp.status),
                    "client_id={bad}: {} {:?}",
                    resp.status,
                    resp.text()
                );
                resp.assert_error_shape();
            }
            Ok(mut sse) => {
                sse.read_preamble();
                let id = sse.connected.as_ref().unwrap()["client_id"]
                    .as_str()
                    .expect("client_id string")
                    .to_string();
                assert!(
                    valid_client_id(&id),
                    "client_id={bad} was answered with client_id {id:?}"
                );
            }
        }
    }
}

#[test]
fn event_arrives_while_the_response_stays_open() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut sse = Sse::connect(port, "/stream/events");

    // Several rounds on the same response: each event must be readable before the next one is
    // published and long before anything closes, i.e. it is not sitting in a buffer.
    for round in 0..3 {
        let started = Instant::now();
        let event = trigger(port, None);
        let block = sse
            .next_event(Duration::from_secs(3))
            .unwrap_or_else(|end| panic!("round {round}: trigger not delivered: {end:?}"));
        let latency = started.elapsed();
        assert_eq!(
            block.id.as_deref(),
            Some(id_of(&event).to_string().as_str())
        );
        assert_eq!(block.name(), "doorbell_pressed");
        assert_eq!(block.data.len(), 1, "data must be one line: {block:?}");
        assert_eq!(
            block.json(),
            event,
            "SSE data differs from the stored event"
        );
        assert!(
            latency < Duration::from_secs(1),
            "round {round}: event took {latency:?}"
        );
    }

    let posted = post_event(
        port,
        None,
        "face_recognized",
        json!({"name": "alice", "confidence": 0.93}),
    );
    let block = sse.expect_event();
    assert_eq!(block.name(), "face_recognized");
    assert_eq!(block.id_num(), id_of(&posted));
    assert_eq!(block.data.len(), 1, "data must be one line: {block:?}");
    assert_eq!(block.json(), posted);
    assert_eq!(block.json()["data"]["name"], "alice");

    // Still open: a short read finds nothing (or a heartbeat), not the end of the stream.
    match sse.next_event(Duration::from_millis(300)) {
        Err(SseEnd::Timeout) => {}
        other => panic!("expected the stream to stay open and quiet, got {other:?}"),
    }
}

#[test]
fn event_data_cannot_break_the_framing() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut sse = Sse::connect(port, "/stream/events");
    let nasty = json!({
        "text": "line1\n\nevent: fake\ndata: {}\n\nid: 999999\r\n",
        "cr": "a\rb",
        "unicode": "t\u{fc}r \u{2028} \u{1f514}",
        "nested": {"list": [1, "two", null, true, 3.5]},
    });
    let posted = post_event(port, None, "framing_test", nasty.clone());
    let block = sse.expect_event();
    assert_eq!(block.name(), "framing_test");
    assert_eq!(block.id_num(), id_of(&posted));
    assert_eq!(block.data.len(), 1, "data must stay one line: {block:?}");
    assert_eq!(block.json()["data"], nasty);
    // Nothing else was injected.
    let next = trigger(port, None);
    let block = sse.expect_event();
    assert_eq!(
        block.id_num(),
        id_of(&next),
        "an injected event appeared: {block:?}"
    );
}

enum Resume {
    Header,
    Query,
}

fn open_resuming(port: u16, last: u64, how: &Resume, extra_query: &str) -> Sse {
    match how {
        Resume::Header => Sse::connect_with(
            port,
            &format!("/stream/events{extra_query}"),
            &[("Last-Event-ID", &last.to_string())],
        ),
        Resume::Query => {
            let sep = if extra_query.is_empty() { "?" } else { "&" };
            Sse::connect(
                port,
                &format!("/stream/events{extra_query}{sep}last_event_id={last}"),
            )
        }
    }
}

fn replay_after_reconnect(how: Resume) {
    let server = Server::start(&[]);
    let port = server.port();

    let mut first = Sse::connect(port, "/stream/events");
    let seen: Vec<Value> = (0..3)
        .map(|i| post_event(port, None, "replay_test", json!({"i": i})))
        .collect();
    for event in &seen {
        assert_eq!(first.expect_event().json(), *event);
    }
    first.close();

    // Published while the client is away.
    let missed: Vec<Value> = (3..6)
        .map(|i| post_event(port, None, "replay_test", json!({"i": i})))
        .collect();

    let mut again = open_resuming(port, id_of(&seen[2]), &how, "");
    for event in &missed {
        let block = again.expect_event();
        assert_eq!(block.id_num(), id_of(event), "replay out of order or lossy");
        assert_eq!(block.name(), "replay_test");
        assert_eq!(block.json(), *event);
    }
    // Then live, with no duplicate of anything replayed.
    let live = post_event(port, None, "replay_test", json!({"i": 6}));
    let block = again.expect_event();
    assert_eq!(
        block.id_num(),
        id_of(&live),
        "expected the live event next, got {block:?}"
    );
    match again.next_event(Duration::from_millis(300)) {
        Err(SseEnd::Timeout) => {}
        other => panic!("nothing more expected, got {other:?}"),
    }

    // From 0: everything stored, in order, no gap (nothing was deleted).
    let mut all = open_resuming(port, 0, &how, "");
    let expected: Vec<&Value> = seen.iter().chain(&missed).chain([&live]).collect();
    for event in expected {
        let block = all.expect_event();
        assert_ne!(block.name(), "gap", "no event was deleted: {block:?}");
        assert_eq!(block.json(), *event);
    }

    // From the newest: nothing replayed, live continues.
    let mut newest = open_resuming(port, id_of(&live), &how, "");
    let next = trigger(port, None);
    assert_eq!(newest.expect_event().id_num(), id_of(&next));
}

#[test]
fn replay_with_last_event_id_header() {
    replay_after_reconnect(Resume::Header);
}

#[test]
fn replay_with_last_event_id_query() {
    replay_after_reconnect(Resume::Query);
}

/// Clients keep dropping and reconnecting with their last seen id while two producers publish
/// continuously: every client must end up with exactly the acknowledged ids, in order.
#[test]
fn no_loss_no_duplicate_at_the_replay_live_seam() {
    const PRODUCERS: usize = 2;
    const PER_PRODUCER: usize = 150;
    const CLIENTS: usize = 4;

    let server = Server::start(&[]);
    let port = server.port();
    let base = id_of(&trigger(port, None));

    let posted = Arc::new(Mutex::new(Vec::new()));
    let final_id = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicBool::new(false));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let final_id = Arc::clone(&final_id);
            let started = Arc::clone(&started);
            thread::spawn(move || {
                let mut received: Vec<u64> = Vec::new();
                let mut last = base;
                let mut reconnects = 0usize;
                loop {
                    let how = if reconnects.is_multiple_of(2) {
                        Resume::Header
                    } else {
                        Resume::Query
                    };
                    let mut sse = open_resuming(port, last, &how, &format!("?client_id=seam{c}"));
                    started.store(true, Ordering::SeqCst);
                    // Some connections read nothing at all, most read a few events.
                    let want = if reconnects % 5 == 4 {
                        0
                    } else {
                        1 + (reconnects * 7 + c * 3) % 13
                    };
                    let mut got = 0;
                    let mut waiting_since = Instant::now();
                    while got < want {
                        let f = final_id.load(Ordering::SeqCst);
                        if f != 0 && last >= f {
                            break;
                        }
                        // Short reads, so that the end of publishing is noticed; no progress
                        // for 10 s is a failure.
                        let block = match sse.next_event(Duration::from_millis(100)) {
                            Ok(block) => block,
                            Err(SseEnd::Timeout)
                                if waiting_since.elapsed() < Duration::from_secs(10) =>
                            {
                                continue;
                            }
                            Err(end) => {
                                panic!("client {c}: stream ended after id {last}: {end:?}")
                            }
                        };
                        waiting_since = Instant::now();
                        assert_ne!(block.name(), "gap", "client {c}: nothing was deleted");
                        let id = block.id_num();
                        received.push(id);
                        last = id;
                        got += 1;
                    }
                    sse.close();
                    reconnects += 1;
                    let f = final_id.load(Ordering::SeqCst);
                    if f != 0 && last >= f {
                        return (received, reconnects);
                    }
                }
            })
        })
        .collect();

    // Publish only once at least one client is in its loop (not a correctness requirement,
    // just so that the seam is actually exercised).
    while !started.load(Ordering::SeqCst) {
        thread::yield_now();
    }
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let posted = Arc::clone(&posted);
            thread::spawn(move || {
                for i in 0..PER_PRODUCER {
                    let event = post_event(port, None, "seam_test", json!({"p": p, "i": i}));
                    posted.lock().unwrap().push(id_of(&event));
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer panicked");
    }
    let mut expected = posted.lock().unwrap().clone();
    expected.sort_unstable();
    let unique: BTreeSet<u64> = expected.iter().copied().collect();
    assert_eq!(unique.len(), expected.len(), "the server reused an id");
    assert!(expected[0] > base, "ids must increase");
    final_id.store(*expected.last().unwrap(), Ordering::SeqCst);

    for (c, handle) in clients.into_iter().enumerate() {
        let (received, reconnects) = handle.join().expect("client panicked");
        eprintln!("seam client {c}: {reconnects} connections");
        for pair in received.windows(2) {
            assert!(
                pair[0] < pair[1],
                "client {c}: {} then {} (duplicate or out of order) after {reconnects} reconnects",
                pair[0],
                pair[1]
            );
        }
        let missing: Vec<u64> = unique
            .iter()
            .filter(|id| !received.contains(id))
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "client {c} missed {} events ({missing:?}) over {reconnects} reconnects",
            missing.len()
        );
        assert_eq!(received, expected, "client {c}: unexpected ids");
    }
}

#[test]
fn gap_after_retention() {
    let server = Server::with_config("max_events = 5\n", &[]);
    let port = server.port();
    let ids: Vec<u64> = (0..12)
        .map(|i| id_of(&post_event(port, None, "gap_test", json!({"i": i}))))
        .collect();
    let stored = all_events(port, None);
    assert!(
        !stored.is_empty() && stored.len() <= 5,
        "max_events = 5 but {} events stored",
        stored.len()
    );
    let stored_ids: Vec<u64> = stored.iter().map(id_of).collect();
    assert_eq!(
        stored_ids,
        ids[ids.len() - stored.len()..],
        "retention must delete the oldest first"
    );
    let first_available = stored_ids[0];
    let status = get(port, "/api/status", None).json();
    assert_eq!(status["events"]["stored"], stored.len(), "{status}");
    assert_eq!(status["events"]["last_id"].as_u64(), ids.last().copied());

    let check_gap = |mut sse: Sse, from: u64, stored: &[Value]| {
        let first_available = id_of(&stored[0]);
        let gap = sse.expect_event();
        assert_eq!(gap.name(), "gap", "expected a gap event first, got {gap:?}");
        assert_eq!(gap.json(), json!({"from": from, "to": first_available}));
        for event in stored {
            let block = sse.expect_event();
            assert_eq!(block.json(), *event);
        }
        sse
    };
    check_gap(
        Sse::connect_with(
            port,
            "/stream/events",
            &[("Last-Event-ID", &ids[0].to_string())],
        ),
        ids[0],
        &stored,
    );
    // From 0 everything up to the first kept event was deleted: a gap from 0.
    check_gap(
        Sse::connect_with(port, "/stream/events", &[("Last-Event-ID", "0")]),
        0,
        &stored,
    );
    // Resuming right before the first kept event: nothing after it is missing, so no gap.
    let mut sse = Sse::connect_with(
        port,
        "/stream/events",
        &[("Last-Event-ID", &(first_available - 1).to_string())],
    );
    let block = sse.expect_event();
    assert_ne!(
        block.name(),
        "gap",
        "no event after {} was deleted",
        first_available - 1
    );
    assert_eq!(block.id_num(), first_available);

    let mut sse = check_gap(
        Sse::connect(port, &format!("/stream/events?last_event_id={}", ids[0])),
        ids[0],
        &stored,
    );
    // Live continues after the replay; the new event pushes the oldest one out.
    let live = trigger(port, None);
    assert_eq!(sse.expect_event().id_num(), id_of(&live));
    let stored = all_events(port, None);
    assert_eq!(stored.last(), Some(&live));
    assert!(stored.len() <= 5);
    assert!(
        id_of(&stored[0]) > first_available,
        "retention after a live event"
    );
    check_gap(
        Sse::connect_with(
            port,
            "/stream/events",
            &[("Last-Event-ID", &ids[0].to_string())],
        ),
        ids[0],
        &stored,
    );
}

#[test]
fn types_filter() {
    let server = Server::start(&[]);
    let port = server.port();
    let mut filtered = Sse::connect(
        port,
        "/stream/events?types=doorbell_pressed,face_recognized",
    );
    let mut everything = Sse::connect(port, "/stream/events");

    let published = [
        post_event(port, None, "package_delivered", json!({})),
        trigger(port, None),
        post_event(port, None, "face_recognized", json!({"name": "bob"})),
        post_event(port, None, "car_detected", json!({})),
        trigger(port, None),
    ];
    for event in &published {
        assert_eq!(everything.expect_event().json(), *event);
    }
    // Excluded events would come between the included ones (delivery is in id order).
    for index in [1, 2, 4] {
        let block = filtered.expect_event();
        assert_eq!(
            block.json(),
            published[index],
            "filtered stream delivered the wrong event"
        );
    }

    // The filter applies to the replay too.
    let mut replay = Sse::connect_with(
        port,
        "/stream/events?types=face_recognized",
        &[("Last-Event-ID", "0")],
    );
    assert_eq!(replay.expect_event().json(), published[2]);
    post_event(port, None, "package_delivered", json!({}));
    trigger(port, None);
    let sentinel = post_event(port, None, "face_recognized", json!({"name": "carol"}));
    let block = replay.expect_event();
    assert_eq!(
        block.id_num(),
        id_of(&sentinel),
        "only face_recognized expected, got {block:?}"
    );
}

/// Voluntary context switches of each of the server's connection threads, by thread id.
fn connection_thread_switches(pid: u32) -> std::collections::HashMap<String, u64> {
    let mut switches = std::collections::HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("conn-") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let count = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        switches.insert(task.file_name().to_string_lossy().into_owned(), count);
    }
    switches
}

/// How often the connection threads alive both at `before` and now woke in between: the idle
/// streams' (all open before `before`). A harness connection that ended meanwhile took its
/// count with it, and one that started meanwhile is no idle stream: neither counts.
fn connection_thread_wakeups_since(
    pid: u32,
    before: &std::collections::HashMap<String, u64>,
) -> u64 {
    connection_thread_switches(pid)
        .iter()
        .filter_map(|(tid, now)| Some(now.saturating_sub(*before.get(tid)?)))
        .sum()
}

/// An idle stream's thread sleeps until something happens: no periodic check (a Pi Zero with
/// hundreds of idle clients would pay for each), yet a client that hangs up is noticed at once
/// (its socket's hang-up wakes the thread), and events still flow.
#[test]
fn idle_streams_sleep_and_notice_a_hang_up_at_once() {
    const CLIENTS: usize = 5;
    let server = Server::with_config("heartbeat_s = 60\n", &[]);
    let port = server.port();
    let mut clients: Vec<Sse> = (0..CLIENTS)
        .map(|_| Sse::connect(port, "/stream/events"))
        .collect();
    let sse_clients = r#"porchlight_clients{kind="sse"}"#;
    let open = wait_metric(port, None, sse_clients, Duration::from_secs(10), |n| {
        n == CLIENTS as f64
    });
    assert_eq!(open, Some(CLIENTS as f64));
    let before = connection_thread_switches(server.pid());
    // A measurement window, not a wait for something: a thread that polled once a second
    // would wake CLIENTS × 2 times in it.
    thread::sleep(Duration::from_millis(2500));
    let woke = connection_thread_wakeups_since(server.pid(), &before);
    // The harness's last /metrics connection may still be closing in the window.
    assert!(
        woke <= 3,
        "{CLIENTS} idle streams woke {woke} times in 2.5 s"
    );
    let event = trigger(port, None);
    for sse in &mut clients {
        assert_eq!(sse.expect_event().json(), event);
    }
    // With heartbeat_s = 60 nothing else would show the thread that its client left: the
    // slot is freed well within a minute only if the hang-up itself wakes the thread.
    drop(clients.pop());
    let left = wait_metric(port, None, sse_clients, Duration::from_secs(10), |n| {
        n == (CLIENTS - 1) as f64
    });
    assert_eq!(
        left,
        Some((CLIENTS - 1) as f64),
        "the hang-up was not noticed"
    );
}

#[test]
fn heartbeat_when_idle() {
    let server = Server::with_config("heartbeat_s = 0.2\n", &[]);
    let port = server.port();
    let mut sse = Sse::connect(port, "/stream/events");
    let started = Instant::now();
    let mut beats: Vec<(Instant, f64)> = Vec::new();
    while beats.len() < 4 {
        let block = sse
            .next_block(Duration::from_secs(3))
            .unwrap_or_else(|end| panic!("no heartbeat (have {}): {end:?}", beats.len()));
        if block.name() != "heartbeat" {
            assert!(
                !block.dispatches(),
                "unexpected event on an idle stream: {block:?}"
            );
            continue;
        }
        assert!(
            block.id.is_none(),
            "a heartbeat must not carry an id (it would move the browser's Last-Event-ID): {block:?}"
        );
        let ts = block.json()["timestamp"]
            .as_f64()
            .unwrap_or_else(|| panic!("heartbeat data needs a numeric timestamp: {block:?}"));
        assert!((ts - now_unix()).abs() < 60.0, "heartbeat timestamp {ts}");
        beats.push((Instant::now(), ts));
    }
    let total = started.elapsed();
    assert!(
        total < Duration::from_millis(2000),
        "4 heartbeats at 0.2 s took {total:?}"
    );
    for pair in beats.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap > Duration::from_millis(50) && gap < Duration::from_millis(900),
            "heartbeats {gap:?} apart with heartbeat_s = 0.2"
        );
        assert!(pair[1].1 > pair[0].1, "heartbeat timestamps must increase");
    }
    // Events still flow between heartbeats.
    let event = trigger(port, None);
    assert_eq!(sse.expect_event().json(), event);
}

#[test]
fn over_the_client_limit_is_503_with_retry_after() {
    let server = Server::with_config("max_sse_clients = 3\nheartbeat_s = 0.2\n", &[]);
    let port = server.port();
    let mut clients: Vec<Sse> = (0..3)
        .map(|i| Sse::connect(port, &format!("/stream/events?client_id=limit{i}")))
        .collect();
    assert_eq!(
        metric(&metrics(port, None), "porchlight_clients{kind=\"sse\"}"),
        Some(3.0)
    );
    let status = get(port, "/api/status", None).json();
    assert_eq!(status["clients"]["sse"], 3, "{status}");

    let resp = match Sse::open(port, "/stream/events", &[]) {
        Ok(_) => panic!("a 4th SSE client was accepted with max_sse_clients = 3"),
        Err(resp) => resp,
    };
    resp.assert_error(503);
    let retry_after = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("503 without Retry-After: {:?}", resp.headers));
    assert!(
        retry_after.trim().parse::<u64>().is_ok(),
        "Retry-After {retry_after:?} is not a number of seconds"
    );
    // The limit is for streams only; the API still answers.
    assert_eq!(get(port, "/api/status", None).status, 200);
    // The connected clients are unaffected.
    let event = trigger(port, None);
    for client in clients.iter_mut() {
        assert_eq!(client.expect_event().json(), event);
    }

    // Closing one frees its slot (the server learns of the close at the latest on its next
    // heartbeat write; there is no signal to wait for, so retry for a while).
    clients.pop().unwrap().close();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Sse::open(port, "/stream/events", &[]) {
            Ok(mut sse) => {
                sse.read_preamble();
                break;
            }
            Err(resp) if resp.status == 503 && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50));
            }
            Err(resp) => panic!(
                "slot not freed after a client left: {} {:?}",
                resp.status,
                resp.text()
            ),
        }
    }
}

#[test]
fn system_status_stream() {
    let server = Server::with_config("status_interval_s = 0.2\n", &[]);
    let port = server.port();
    let mut sse = Sse::open(port, "/stream/system-status", &[])
        .unwrap_or_else(|r| panic!("{} {:?}", r.status, r.text()));
    let ct = sse.header("content-type").unwrap_or("").to_string();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct:?}");
    let first = sse.expect_event();
    assert_eq!(
        first.name(),
        "status_connected",
        "the first event must be status_connected: {first:?}"
    );

    let started = Instant::now();
    let mut last_ts = 0.0;
    for i in 0..3 {
        let block = sse.expect_event();
        assert_eq!(block.name(), "system_status", "{block:?}");
        assert_eq!(block.data.len(), 1, "data must be one line: {block:?}");
        let status = block.json();
        assert_status_object(&status);
        let ts = status["timestamp"].as_f64().unwrap();
        assert!(ts > last_ts, "status {i}: timestamp did not advance");
        last_ts = ts;
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "3 statuses at status_interval_s = 0.2 took {took:?}"
    );

    // The stream reflects new events within a couple of intervals.
    let event = trigger(port, None);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let block = sse.expect_event();
        let status = block.json();
        if status["events"]["last_id"].as_u64() == Some(id_of(&event)) {
            assert!(status["events"]["stored"].as_u64().unwrap() >= 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "system_status never showed last_id {}: {status}",
            id_of(&event)
        );
    }
}
