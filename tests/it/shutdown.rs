//! SIGTERM/SIGINT: exit 0 within 2 s even with 200 streaming clients; streams end cleanly;
//! data intact after a restart.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

#[test]
fn sigterm_with_200_streaming_clients_exits_0_within_2_s() {
    let dir = TempDir::new("shutdown");
    let dir_s = dir.path_str();
    // Every test client is 127.0.0.1: lift the per-address cap.
    let mut server =
        Server::with_config("max_connections_per_ip = 1000\n", &["--data-dir", &dir_s]);
    let port = server.port();

    let mut stored: Vec<Value> = (0..10)
        .map(|i| post_event(port, None, "before_shutdown", json!({"i": i})))
        .collect();
    let mut clients: Vec<Sse> = (0..200)
        .map(|i| Sse::connect(port, &format!("/stream/events?client_id=down{i}")))
        .collect();
    // Every client is live: each gets this event.
    let last = trigger(port, None);
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.expect_event().json(), last, "client {i}");
    }
    stored.push(last);
    // Also a half-sent request and an idle keep-alive connection.
    let mut stalled = connect(port);
    stalled
        .write_all(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let _idle = connect(port);

    let took = server.stop();
    eprintln!("SIGTERM -> exit with 200 SSE clients: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} with 200 clients"
    );

    // Every client sees the end of its stream, and no half-written event.
    for (i, client) in clients.iter_mut().enumerate() {
        let (blocks, end, residue) = client.read_to_end(Duration::from_secs(5));
        assert!(end.is_closed(), "client {i}: {end:?}");
        assert_eq!(
            residue, 0,
            "client {i}: the stream ended in the middle of a block"
        );
        assert!(
            client.body_complete(),
            "client {i}: the chunked body was cut, not ended with its last chunk"
        );
        assert!(
            blocks
                .iter()
                .all(|b| !b.dispatches() || b.name() == "heartbeat"),
            "client {i}: unexpected events at shutdown: {blocks:?}"
        );
    }

    // The data survived.
    let server = Server::start(&["--data-dir", &dir_s]);
    let port = server.port();
    assert_eq!(all_events(port, None), stored);
    let next = trigger(port, None);
    assert!(id_of(&next) > id_of(stored.last().unwrap()));
}

#[test]
fn sigint_exits_0_promptly() {
    let mut server = Server::start(&[]);
    let port = server.port();
    let mut sse = Sse::connect(port, "/stream/events");
    let started = Instant::now();
    server.signal("INT");
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("no exit within 5 s of SIGINT");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "exit after SIGINT: {status}");
    assert!(
        took < Duration::from_secs(2),
        "SIGINT -> exit took {took:?}"
    );
    let (_, end, _) = sse.read_to_end(Duration::from_secs(5));
    assert!(end.is_closed(), "{end:?}");
    assert!(sse.body_complete(), "the chunked body was cut");
}

#[test]
fn sigterm_during_a_burst_keeps_every_acknowledged_event() {
    let dir = TempDir::new("termburst");
    let dir_s = dir.path_str();
    let mut server = Server::start(&["--data-dir", &dir_s]);
    let port = server.port();

    let (tx, rx) = mpsc::channel::<Value>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0.. {
                    let body = json!({"event_type": "term_test", "data": {"t": t, "i": i}});
                    match try_request(
                        port,
                        "POST",
                        "/api/events",
                        &[("Content-Type", "application/json")],
                        body.to_string().as_bytes(),
                    ) {
                        Ok(resp) if resp.status == 201 => {
                            if tx.send(resp.json()).is_err() {
                                return;
                            }
                        }
                        // Refused while shutting down (503) or the connection went away.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut acked: Vec<Value> = Vec::new();
    while acked.len() < 100 {
        acked.push(
            rx.recv_timeout(Duration::from_secs(10))
                .expect("producers stalled"),
        );
    }
    let took = server.stop();
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} during a burst"
    );
    for p in producers {
        p.join().expect("producer panicked");
    }
    acked.extend(rx.try_iter());

    let server = Server::start(&["--data-dir", &dir_s]);
    let port = server.port();
    let stored = all_events(port, None);
    let stored_ids: BTreeSet<u64> = stored.iter().map(id_of).collect();
    for event in &acked {
        assert!(
            stored_ids.contains(&id_of(event)),
            "acknowledged event {} lost over a clean shutdown",
            id_of(event)
        );
    }
    let next = trigger(port, None);
    assert!(id_of(&next) > *stored_ids.last().unwrap());
}
