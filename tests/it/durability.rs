//! Acknowledged events survive `kill -9`; ids are never reused across restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

/// Checks that every acknowledged event is stored unchanged and returns the stored map.
fn assert_all_present(port: u16, acked: &[Value]) -> BTreeMap<u64, Value> {
    let stored = all_events(port, None);
    let mut by_id = BTreeMap::new();
    for event in &stored {
        assert_event_shape(event);
        assert!(
            by_id.insert(id_of(event), event.clone()).is_none(),
            "id {} stored twice",
            id_of(event)
        );
    }
    let missing: Vec<u64> = acked
        .iter()
        .map(id_of)
        .filter(|id| !by_id.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost after kill -9: {missing:?}",
        missing.len()
    );
    for event in acked {
        assert_eq!(
            by_id[&id_of(event)],
            *event,
            "event changed across the restart"
        );
    }
    by_id
}

#[test]
fn two_hundred_acknowledged_events_survive_kill_9() {
    let dir = TempDir::new("durable");
    let dir_s = dir.path_str();
    let mut server = Server::start(&["--data-dir", &dir_s]);
    let port = server.port();

    let mut acked: Vec<Value> = (0..50).map(|_| trigger(port, None)).collect();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            thread::spawn(move || {
                // Half the threads press the doorbell, half post events.
                (0..25)
                    .map(|i| {
                        if t % 2 == 0 {
                            trigger(port, None)
                        } else {
                            post_event(port, None, "durability_test", json!({"t": t, "i": i}))
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        acked.extend(t.join().expect("producer panicked"));
    }
    assert_eq!(acked.len(), 200);
    let ids: BTreeSet<u64> = acked.iter().map(id_of).collect();
    assert_eq!(ids.len(), 200, "ids reused before the crash");

    server.kill9();
    let server = Server::start(&["--data-dir", &dir_s]);
    let port = server.port();

    let stored = assert_all_present(port, &acked);
    assert_eq!(stored.len(), 200, "unexpected extra events after restart");
    for event in acked.iter().step_by(37) {
        let resp = get(port, &format!("/api/events/{}", id_of(event)), None);
        assert_eq!(resp.status, 200, "{:?}", resp.text());
        assert_eq!(resp.json(), *event);
    }
    let status = get(port, "/api/status", None).json();
    assert_eq!(status["events"]["stored"], 200, "{status}");
    assert_eq!(
        status["events"]["last_id"].as_u64(),
        ids.last().copied(),
        "{status}"
    );

    let max = *ids.last().unwrap();
    let next = trigger(port, None);
    assert!(
        id_of(&next) > max,
        "id {} after restart is not above {max}",
        id_of(&next)
    );
}

/// Producers that stop at the first failure; every 201/200 they read completely is sent on
/// `acks` as it happens.
fn burst(port: u16, threads: usize, acks: mpsc::Sender<Value>) -> Vec<thread::JoinHandle<()>> {
    (0..threads)
        .map(|t| {
            let acks = acks.clone();
            thread::spawn(move || {
                for i in 0.. {
                    let body = json!({"event_type": "crash_test", "data": {"t": t, "i": i}});
                    let result = try_request(
                        port,
                        "POST",
                        "/api/events",
                        &[("Content-Type", "application/json")],
                        body.to_string().as_bytes(),
                    );
                    match result {
                        Ok(resp) if resp.status == 201 => {
                            if acks.send(resp.json()).is_err() {
                                return;
                            }
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect()
}

#[test]
fn kill_9_in_the_middle_of_a_burst_loses_nothing_acknowledged() {
    let dir = TempDir::new("crash");
    let dir_s = dir.path_str();
    let mut acked: Vec<Value> = Vec::new();
    let mut highest_seen = 0;

    for round in 0..3 {
        let mut server = Server::start(&["--data-dir", &dir_s]);
        let port = server.port();
        if round > 0 {
            let stored = assert_all_present(port, &acked);
            highest_seen = highest_seen
                .max(*stored.keys().last().unwrap())
                .max(acked.iter().map(id_of).max().unwrap());
        }

        let (tx, rx) = mpsc::channel();
        let producers = burst(port, 4, tx);
        let mut this_round = 0;
        while this_round < 100 {
            let event = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("producers stalled");
            let id = id_of(&event);
            assert!(
                id > highest_seen,
                "round {round}: id {id} after a restart is not above {highest_seen}"
            );
            acked.push(event);
            this_round += 1;
        }
        server.kill9();
        // Acks that completed before the process died still count.
        for p in producers {
            p.join().expect("producer panicked");
        }
        acked.extend(rx.try_iter());
        let round_ids: Vec<u64> = acked.iter().map(id_of).collect();
        let unique: BTreeSet<u64> = round_ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            round_ids.len(),
            "round {round}: an id was acknowledged twice"
        );
    }

    let server = Server::start(&["--data-dir", &dir_s]);
    let port = server.port();
    let stored = assert_all_present(port, &acked);
    let highest = *stored.keys().last().unwrap();
    let next = trigger(port, None);
    assert!(
        id_of(&next) > highest && id_of(&next) > acked.iter().map(id_of).max().unwrap(),
        "next id {} is not above every earlier id ({highest})",
        id_of(&next)
    );
    // The SSE replay agrees with the store after the crashes.
    let mut sse = Sse::connect_with(port, "/stream/events", &[("Last-Event-ID", "0")]);
    let mut replayed = Vec::new();
    while replayed.len() < stored.len() + 1 {
        let block = sse.expect_event();
        assert_ne!(block.name(), "gap", "nothing was deleted");
        replayed.push(block.id_num());
    }
    let mut expected: Vec<u64> = stored.keys().copied().collect();
    expected.push(id_of(&next));
    assert_eq!(replayed, expected);
}

/// A burst from many producers is committed in batches (group commit) and made durable in
/// groups: fewer store commits, and fewer fsyncs, than events. One of either per event would
/// make it equal to `events`.
#[test]
fn a_concurrent_burst_shares_fsyncs() {
    let server = Server::start(&[]);
    let port = server.port();
    let producers: Vec<_> = (0..16)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..20 {
                    post_event(port, None, "burst", json!({"t": t, "i": i}));
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer panicked");
    }
    let text = metrics(port, None);
    let events = metric(&text, "porchlight_events_total").expect("events_total");
    let commits = metric(&text, "porchlight_store_commits_total").expect("commits_total");
    assert_eq!(events, 320.0);
    let storing = metric(&text, "porchlight_store_commit_seconds_total").expect("commit seconds");
    assert!(
        storing > 0.0 && storing < 320.0,
        "{storing} s spent storing {events} events"
    );
    assert!(
        commits < events,
        "{commits} commits for {events} events: every event paid its own transaction"
    );
    let syncs = metric(&text, "porchlight_store_syncs_total").expect("syncs_total");
    assert!(
        syncs >= 1.0 && syncs < events,
        "{syncs} fsyncs for {events} events: every event paid its own fsync"
    );
    eprintln!("group commit: {events} events in {commits} commits and {syncs} fsyncs");
}

/// A crash can tear the last write (power cut mid-sector). Simulated by cutting bytes off the
/// end of the write-ahead log after `kill -9`: the server must start, keep every event before
/// the torn one, and go on numbering above every id it still holds.
#[test]
fn a_torn_last_write_is_recovered_cleanly() {
    let dir = TempDir::new("torn");
    let dir_s = dir.path_str();
    let mut server = Server::start(&["--data-dir", &dir_s]);
    let port = server.port();
    let acked: Vec<Value> = (0..20).map(|_| trigger(port, None)).collect();
    server.kill9();

    let wal = dir.join("events.sqlite3-wal");
    let length = std::fs::metadata(&wal).expect("a WAL after kill -9").len();
    assert!(length > 100, "WAL unexpectedly small: {length} bytes");
    let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
    file.set_len(length - 100).unwrap();
    drop(file);

    let server = Server::start(&["--data-dir", &dir_s]);
    let port = server.port();
    let stored = all_events(port, None);
    let stored_ids: BTreeSet<u64> = stored.iter().map(id_of).collect();
    // Only the last transaction (the last event) can have been torn away.
    assert!(
        stored.len() == 19 || stored.len() == 20,
        "{} events after a torn write",
        stored.len()
    );
    assert_all_present(port, &acked[..19]);
    let next = trigger(port, None);
    assert!(id_of(&next) > *stored_ids.last().unwrap());
}

/// A data dir that cannot hold the store — a file where the directory should be, or an event
/// database that is not SQLite (another program's file, a card gone bad) — stops the server
/// at start with exit status 1 and one line naming the place, and the file is left exactly as
/// it was: never "repaired" by overwriting somebody's data.
#[test]
fn a_data_dir_that_cannot_hold_the_store_stops_the_start_and_is_left_untouched() {
    let dir = TempDir::new("bad-store");
    let not_a_dir = dir.write("data", "a file, not a directory");
    let data = dir.join("store");
    std::fs::create_dir_all(&data).unwrap();
    let garbage = "this is not an SQLite database, but somebody's notes\n".repeat(200);
    let db = data.join("events.sqlite3");
    std::fs::write(&db, &garbage).unwrap();
    for (data_dir, said) in [
        (not_a_dir.clone(), "cannot create"),
        (data.clone(), "not a database"),
    ] {
        let data_dir = data_dir.to_string_lossy().into_owned();
        let out = run_to_exit(
            &["--listen", "127.0.0.1:0", "--data-dir", &data_dir],
            Duration::from_secs(20),
        );
        assert_eq!(out.code(), Some(1), "{}", out.stderr);
        let line = out
            .stderr_lines()
            .into_iter()
            .find(|l| l.contains("cannot open the event store in"))
            .unwrap_or_else(|| panic!("no line naming the store: {}", out.stderr));
        assert!(line.contains(&data_dir) && line.contains(said), "{line}");
    }
    assert_eq!(
        std::fs::read_to_string(&not_a_dir).unwrap(),
        "a file, not a directory"
    );
    assert_eq!(std::fs::read_to_string(&db).unwrap(), garbage);
    let left: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("events.sqlite3")],
        "files added: {left:?}"
    );
}
