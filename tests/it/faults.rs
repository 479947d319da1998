//! Faults the server must ride out: a full or read-only data dir, no thread for a new
//! connection, hundreds of half-open connections, and a client that reads a byte a second.
//!
//! The disk tests mount a small tmpfs and the thread test drops to an unprivileged user with a
//! process limit, so they need root (as in CI); elsewhere they say so and return.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// A small tmpfs mounted for one test; unmounted (lazily, in case a server still holds it) on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0777"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs at {}", path.display());
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "remount {} read-only",
            self.path.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn big_event(port: u16, i: usize) -> Response {
    let body = json!({"event_type": "filler", "data": {"i": i, "pad": "x".repeat(12_000)}});
    request(
        port,
        "POST",
        "/api/events",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

#[test]
fn a_full_disk_refuses_writes_with_507_and_reads_keep_working() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = TempDir::new("full");
    let disk = Tmpfs::mount(&dir.join("disk"), "320k");
    let data = disk.path.join("data");
    let server = Server::start(&["--data-dir", data.to_str().unwrap()]);
    let port = server.port();

    let mut stored = Vec::new();
    let refused = loop {
        let resp = big_event(port, stored.len());
        match resp.status {
            201 => stored.push(resp.json()),
            _ => break resp,
        }
        assert!(
            stored.len() < 200,
            "a 320 KiB disk took 200 events of 12 KB"
        );
    };
    refused.assert_error(507);
    assert_eq!(refused.json()["error"], "insufficient_storage");
    assert!(!stored.is_empty(), "not even one event fitted");

    // Reads keep working and nothing acknowledged is lost.
    let listed = all_events(port, None);
    assert_eq!(listed.len(), stored.len());
    for event in &stored {
        let resp = get(port, &format!("/api/events/{}", id_of(event)), None);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json(), *event);
    }
    assert_eq!(get(port, "/api/status", None).status, 200);
    let sse = Sse::connect(port, "/stream/events");
    // The doorbell is refused the same way, and the server stays up for it.
    trigger_expecting(port, 507);
    assert!(metric(&metrics(port, None), "porchlight_store_errors_total").unwrap() >= 2.0);
    drop(sse);
    drop(server);
}

fn trigger_expecting(port: u16, status: u16) {
    let resp = request(port, "POST", "/api/trigger-doorbell", &[], b"");
    resp.assert_error(status);
}

#[test]
fn a_read_only_data_dir_serves_reads_and_refuses_writes_with_503() {
    if !is_root() {
        eprintln!("skipped: remounting read-only needs root");
        return;
    }
    let dir = TempDir::new("ro");
    let disk = Tmpfs::mount(&dir.join("disk"), "4m");
    let data = disk.path.join("data");
    let data_s = data.to_str().unwrap();
    let mut server = Server::start(&["--data-dir", data_s]);
    let port = server.port();
    let before: Vec<_> = (0..3).map(|_| trigger(port, None)).collect();
    server.stop();
    // (A file system cannot be remounted read-only while the server holds files open for
    // writing, so the read-only case is tested from a start.)
    disk.remount_read_only();

    // Read-only from the start: the server comes up in a degraded mode instead of refusing.
    let server = Server::start(&["--data-dir", data_s]);
    let port = server.port();
    trigger_expecting(port, 503);
    let log = server.stderr_with("read-only");
    assert!(log.contains("read-only"), "no clear log line: {log}");
    let listed = all_events(port, None);
    assert_eq!(listed.len(), 3);
    for event in &before {
        assert_eq!(
            get(port, &format!("/api/events/{}", id_of(event)), None).json(),
            *event
        );
    }
    let resp = request(
        port,
        "POST",
        "/api/events",
        &[("Content-Type", "application/json")],
        br#"{"event_type":"x"}"#,
    );
    resp.assert_error(503);
    assert_eq!(resp.json()["error"], "store_read_only");
    assert_eq!(get(port, "/api/status", None).status, 200);
}

/// A uid that no process on this machine runs as and no account has, picked at random from a
/// wide range so two test runs at once (other checkouts on the same machine) do not share it.
fn unused_uid() -> u32 {
    let mut used = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(status) = std::fs::read_to_string(entry.path().join("status")) {
            for line in status.lines().filter(|l| l.starts_with("Uid:")) {
                used.extend(
                    line.split_whitespace()
                        .skip(1)
                        .filter_map(|v| v.parse::<u32>().ok()),
                );
            }
        }
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    used.extend(
        passwd
            .lines()
            .filter_map(|l| l.split(':').nth(2))
            .filter_map(|v| v.parse::<u32>().ok()),
    );
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id().wrapping_mul(2_654_435_761);
    (0..1000u32)
        .map(|i| 200_000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 1_000_000_000))
        .find(|uid| !used.contains(uid))
        .expect("an unused uid")
}

#[test]
fn no_thread_for_a_connection_is_answered_with_503_not_a_crash() {
    if !is_root() {
        eprintln!("skipped: dropping to an unprivileged user needs root");
        return;
    }
    let dir = TempDir::new("nproc");
    // The unprivileged user must be able to write its data dir.
    let status = Command::new("chmod")
        .args(["0777", &dir.path_str()])
        .status()
        .unwrap();
    assert!(status.success());
    let data = dir.join("data");
    // A uid no process runs as, with at most 12 threads in all: the server's own 5 leave room
    // for about 7 connection threads. Not `nobody`: RLIMIT_NPROC counts every process of the
    // uid on the machine, so any other `nobody` process (a daemon, another test) broke this.
    let uid = unused_uid();
    let reuid = format!("--reuid={uid}");
    let regid = format!("--regid={uid}");
    let wrapper = [
        "setpriv",
        reuid.as_str(),
        regid.as_str(),
        "--clear-groups",
        "prlimit",
        "--nproc=12",
    ];
    let server = Server::try_start_wrapped(&wrapper, &["--data-dir", data.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e}"));
    let port = server.port();

    // Idle keep-alive connections each hold a thread until request_timeout_s.
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..40 {
        let mut stream = connect(port);
        stream
            .write_all(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        if &head[9..12] == b"503" {
            let mut rest = String::new();
            stream.read_to_string(&mut rest).unwrap();
            refused = Some(rest);
            break;
        }
        assert_eq!(&head[9..12], b"200");
        held.push(stream);
    }
    let refused = refused.expect("40 held connections and never a 503: the limit did not bite");
    assert!(refused.contains("\"error\""), "{refused}");
    assert!(
        held.len() >= 2,
        "only {} connections before 503",
        held.len()
    );

    // Once the held connections go, the server serves again: it did not crash or wedge.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_request(port, "GET", "/api/status", &[], b"") {
            Ok(resp) if resp.status == 200 => break,
            other => {
                assert!(Instant::now() < deadline, "not serving again: {other:?}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // Threads of the dropped connections end one by one: a request may still meet a 503.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        match try_request(port, "GET", "/metrics", &[], b"") {
            Ok(resp) if resp.status == 200 => break resp.text(),
            other => {
                assert!(Instant::now() < deadline, "no /metrics: {other:?}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(metric(&text, "porchlight_connections_refused_total").unwrap() >= 1.0);
}

/// Starts the server as an unused uid allowed 12 threads in all, and holds idle keep-alive
/// connections (one thread each) until the server answers 503: no thread is left.
fn server_out_of_threads(dir: &TempDir) -> (Server, Vec<TcpStream>) {
    let status = Command::new("chmod")
        .args(["0777", &dir.path_str()])
        .status()
        .unwrap();
    assert!(status.success());
    let data = dir.join("data");
    let uid = unused_uid();
    let reuid = format!("--reuid={uid}");
    let regid = format!("--regid={uid}");
    let wrapper = [
        "setpriv",
        reuid.as_str(),
        regid.as_str(),
        "--clear-groups",
        "prlimit",
        "--nproc=12",
    ];
    let server = Server::try_start_wrapped(&wrapper, &["--data-dir", data.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut stream = connect(server.port());
        stream
            .write_all(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        if &head[9..12] == b"503" {
            return (server, held);
        }
        assert_eq!(&head[9..12], b"200");
        held.push(stream);
    }
    panic!("40 held connections and never a 503: the limit did not bite");
}

/// A WebSocket session runs on its connection's thread alone: given the last thread the
/// server may start, it still answers messages and gets live events (no second thread per
/// WebSocket, which the limit would refuse); the server goes on serving.
#[test]
fn a_websocket_given_the_last_thread_runs_its_whole_session() {
    if !is_root() {
        eprintln!("skipped: dropping to an unprivileged user needs root");
        return;
    }
    let dir = TempDir::new("nproc-ws");
    let (server, mut held) = server_out_of_threads(&dir);
    let port = server.port();
    assert!(
        held.len() >= 2,
        "only {} connections before 503",
        held.len()
    );
    // Free exactly one thread: the WebSocket's connection takes it once its owner has ended.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ws = loop {
        let stream = connect(port);
        let url = format!("ws://127.0.0.1:{port}/ws");
        match tungstenite::client::client(url.as_str(), stream) {
            Ok((ws, response)) => {
                assert_eq!(response.status().as_u16(), 101);
                break ws;
            }
            // The freed thread has not ended yet: 503, as for any connection.
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)))
                if response.status().as_u16() == 503 =>
            {
                assert!(
                    Instant::now() < deadline,
                    "the freed thread never came back"
                );
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("WebSocket handshake: {e}"),
        }
    };
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let next = |ws: &mut tungstenite::WebSocket<TcpStream>| loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(text)) => {
                break serde_json::from_str::<serde_json::Value>(&text).unwrap();
            }
            Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    };
    assert_eq!(next(&mut ws)["type"], "connected");
    let send = |ws: &mut tungstenite::WebSocket<TcpStream>, text: &str| {
        ws.send(tungstenite::Message::Text(text.into())).unwrap();
    };
    send(
        &mut ws,
        r#"{"type":"subscribe","event_types":["doorbell_pressed"]}"#,
    );
    assert_eq!(next(&mut ws)["type"], "subscribed");
    // The command is answered and its event arrives live, through the fan-out.
    send(
        &mut ws,
        r#"{"type":"system_command","command":"trigger_doorbell","request_id":"r1"}"#,
    );
    let mut answered = false;
    let mut live = false;
    while !(answered && live) {
        let message = next(&mut ws);
        match message["type"].as_str() {
            Some("command_result") => answered = true,
            Some("live_event") => {
                assert_eq!(
                    message["event"]["event_type"], "doorbell_pressed",
                    "{message}"
                );
                live = true;
            }
            _ => panic!("unexpected {message}"),
        }
    }
    ws.close(None).ok();

    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_request(port, "GET", "/api/status", &[], b"") {
            Ok(resp) if resp.status == 200 => break,
            other => {
                assert!(Instant::now() < deadline, "not serving again: {other:?}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn three_hundred_half_open_connections_do_not_stop_normal_clients() {
    // Every test client is 127.0.0.1: lift the per-address cap to test the total.
    let server = Server::with_config("max_connections_per_ip = 1000\n", &[]);
    let port = server.port();
    let mut stalled = Vec::new();
    for i in 0..300 {
        let mut stream = connect(port);
        // Half a request, then nothing: a slowloris.
        write!(
            stream,
            "GET /api/status?n={i} HTTP/1.1\r\nHost: localhost\r\nX-Slow:"
        )
        .unwrap();
        stalled.push(stream);
    }
    let mut sse = Sse::connect(port, "/stream/events");
    for _ in 0..20 {
        let started = Instant::now();
        let event = trigger(port, None);
        let seen = sse.expect_event();
        assert_eq!(seen.id_num(), id_of(&event));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a trigger took {:?} beside 300 stalled connections",
            started.elapsed()
        );
    }
    assert_eq!(get(port, "/api/status", None).status, 200);
    drop(stalled);
}

#[test]
fn a_client_reading_one_byte_a_second_is_dropped_without_hurting_others() {
    let server = Server::with_config("client_queue_events = 8\n", &[]);
    let port = server.port();
    let mut normal = Sse::connect(port, "/stream/events");

    let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /stream/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow_reader = {
        let stop = std::sync::Arc::clone(&stop);
        thread::spawn(move || {
            // One byte a second until told to stop.
            let mut byte = [0u8; 1];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if matches!(slow.read(&mut byte), Ok(0) | Err(_)) {
                    break;
                }
                thread::sleep(Duration::from_secs(1));
            }
            slow
        })
    };
    wait_metric(
        port,
        None,
        "porchlight_clients{kind=\"sse\"}",
        Duration::from_secs(5),
        |v| v >= 2.0,
    );

    let evicted = || metric(&metrics(port, None), "porchlight_clients_evicted_total").unwrap();
    let mut posted = 0;
    while evicted() < 1.0 {
        assert!(posted < 2000, "the slow client was never dropped");
        let event = big_event(port, posted);
        assert_eq!(event.status, 201, "{}", event.text());
        posted += 1;
        // The normal client keeps receiving every event as it is posted.
        assert_eq!(normal.expect_event().id_num(), id_of(&event.json()));
    }
    // The evicted client's thread frees its slot once its blocked write fails.
    let gauge = wait_metric(
        port,
        None,
        "porchlight_clients{kind=\"sse\"}",
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    assert_eq!(gauge, Some(1.0), "the slow client still holds its slot");
    // The server hung up: what the kernel had buffered drains, then EOF.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut slow = slow_reader.join().unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = Vec::new();
    let end = slow.read_to_end(&mut sink);
    assert!(
        end.is_ok()
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the slow client's socket was not closed: {end:?}"
    );
    // Another event still reaches the normal client at once.
    let last = trigger(port, None);
    assert_eq!(normal.expect_event().id_num(), id_of(&last));
}

/// A default soft limit of 1024 descriptors would run out at about 250 streaming clients: the
/// server raises its soft limit to the hard one at start.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let server = Server::try_start_wrapped(&["prlimit", "--nofile=256:4096"], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
}
