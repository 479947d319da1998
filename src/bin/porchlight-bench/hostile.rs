//! `--hostile N`: N hostile requests of every class of issue 11 (each on a fresh connection,
//! four at a time), then the server's RSS, threads and open files against the figures from
//! before, once its connections have settled; `--guesses S`: wrong tokens on one keep-alive
//! connection for S seconds, as fast as the server answers, to measure how many guesses it
//! evaluates a second; `--slowloris S`: for S seconds one address keeps several times
//! `max_connections_per_ip` partial requests open (reopening each one refused or cut), while
//! another address asks for `/api/status` ten times a second: how many of those were served.
//!
//! The attack traffic comes from other loopback addresses than 127.0.0.1 (Linux routes all of
//! 127.0.0.0/8 to lo), so its throttling does not lock the benchmark's own requests out.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::procstat;

/// Where each class of the attack comes from: 127.0.0.(100 + class), so no one source address
/// runs out of ephemeral ports (TIME_WAIT) across the classes.
fn attacker(class: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        0,
        0,
        100u8.saturating_add(u8::try_from(class).unwrap_or(u8::MAX)),
    )
}
/// Where the token guesses come from.
const GUESSER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 67);
/// Requests in flight at once.
const WORKERS: usize = 4;
/// A little more than the time a preset's encoder runs on after its last viewer.
const ENCODER_IDLE_EXIT: Duration = Duration::from_secs(12);
/// How long one hostile exchange may take before the client gives up on it.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to `addr` from `source`.
fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(target) = addr else {
        return Err(std::io::Error::other("IPv4 loopback only"));
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, bound and connected with sockaddr_in values that live on the stack
    // for each call; the fd is owned by the TcpStream from the start.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*target.ip(), target.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        Ok(stream)
    }
}

/// How one hostile request is sent and what is read back.
enum Attack {
    /// Send these bytes, read the status line (if any), close.
    Bytes(Vec<u8>),
    /// Send these bytes and close without reading (a half request, garbage).
    HangUp(Vec<u8>),
    /// Send a stream request, read its head, hang up (a viewer that leaves at once).
    Ghost(String),
}

/// The classes, each a rotation of request shapes.
fn classes(host: &str, token: &str) -> Vec<(&'static str, Vec<Attack>)> {
    let auth = format!("Authorization: Bearer {token}\r\n");
    let get = |path: &str, extra: &str| {
        Attack::Bytes(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}{extra}Connection: close\r\n\r\n"
            )
            .into_bytes(),
        )
    };
    let raw = |text: &str| Attack::Bytes(text.as_bytes().to_vec());
    let post = |headers: &str, body: &str| {
        Attack::Bytes(
            format!("POST /api/events HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n{headers}\r\n{body}POST /api/trigger-doorbell HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 0\r\n\r\n")
                .into_bytes(),
        )
    };
    let event = r#"{"event_type":"smuggled"}"#;
    let mut long_header = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Long: ").into_bytes();
    long_header.extend(std::iter::repeat_n(b'h', 9000));
    long_header.extend_from_slice(b"\r\n\r\n");
    let mut endless_chunk = format!(
        "POST /api/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    // Past the 1 MiB the server reads of a chunked body: it must cut the line off.
    endless_chunk.extend(std::iter::repeat_n(b'1', 1100 * 1024));
    let mut garbage = Vec::with_capacity(2048);
    let mut seed: u32 = 0x9e37_79b9;
    for _ in 0..2048 {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        garbage.push(seed.to_be_bytes()[0]);
    }
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    vec![
        (
            "numbers",
            vec![
                get("/stream/video?fps=1e-320", ""),
                get("/stream/video?fps=0.0000001", ""),
                get("/stream/events", "Last-Event-ID: 18446744073709551615\r\n"),
                get("/stream/events?last_event_id=9223372036854775808", ""),
                get("/api/events?after=18446744073709551615&limit=0", ""),
                get("/api/events/99999999999999999999999", ""),
                get("/api/events?before=-1", ""),
                get("/ws?last_event_id=18446744073709551616", ws),
            ],
        ),
        (
            "framing",
            vec![
                post("Content-Length: 0\r\nContent-Length: 70\r\n", event),
                post("Content-Length: 2, 40\r\n", event),
                post("Content-Length: 0x2\r\n", event),
                post("Content-Length: 25\r\nTransfer-Encoding: chunked\r\n", event),
                post("Transfer-Encoding: gzip, chunked\r\n", event),
                post("X-A: a\0b\r\nContent-Length: 25\r\n", event),
                post("X-A: a\rb\r\nContent-Length: 25\r\n", event),
                raw("GET /api/status HTTP/1.1\nHost: x\n\n"),
                raw("GET /api/status HTTP/2.0\r\nHost: x\r\n\r\n"),
                raw("GET /api/st\u{e9}tus HTTP/1.1\r\nHost: x\r\n\r\n"),
                raw("GET /api/status HTTP/1.1\r\n\r\n"),
            ],
        ),
        (
            "head_of_streams",
            vec![
                Attack::Bytes(
                    format!("HEAD /stream/events HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n")
                        .into_bytes(),
                ),
                Attack::Bytes(
                    format!("HEAD /stream/video HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n")
                        .into_bytes(),
                ),
                Attack::Bytes(
                    format!("HEAD /stream/system-status HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n")
                        .into_bytes(),
                ),
            ],
        ),
        (
            "ghost_viewers",
            vec![
                Attack::Ghost(format!("/stream/video?fps=0.1&quality=low&token={token}")),
                Attack::Ghost(format!("/stream/events?token={token}")),
                Attack::Ghost(format!("/stream/system-status?token={token}")),
            ],
        ),
        (
            "partial_and_garbage",
            vec![
                Attack::HangUp(b"GET /api/sta".to_vec()),
                Attack::HangUp(
                    format!("POST /api/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 16000\r\n\r\n{{\"tok")
                        .into_bytes(),
                ),
                Attack::HangUp(garbage),
                Attack::HangUp(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
            ],
        ),
        (
            "oversize",
            vec![
                Attack::Bytes(long_header),
                post("Content-Length: 1000000000\r\n", "{"),
                Attack::Bytes(endless_chunk),
            ],
        ),
        (
            "cross_site",
            vec![
                Attack::Bytes(
                    format!("POST /api/login HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\n{{\"token\":\"whatever\"}}")
                        .into_bytes(),
                ),
                Attack::Bytes(
                    format!("POST /api/events HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: text/plain\r\nContent-Length: 25\r\n\r\n{event}")
                        .into_bytes(),
                ),
                Attack::Bytes(
                    format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\n{auth}{ws}\r\n")
                        .into_bytes(),
                ),
            ],
        ),
        (
            "wrong_tokens",
            (0..40)
                .map(|n| {
                    Attack::Bytes(
                        format!(
                            "GET /api/status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer \
                             wrong-token-{n:04}\r\nConnection: close\r\n\r\n"
                        )
                        .into_bytes(),
                    )
                })
                .collect(),
        ),
    ]
}

/// Runs one attack; returns the status answered (0: none, the connection just closed).
fn run_attack(source: Ipv4Addr, addr: SocketAddr, attack: &Attack) -> u16 {
    let Ok(mut stream) = connect_from(source, addr) else {
        return 0;
    };
    let status_of = |stream: &TcpStream| {
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).ok();
        line.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    match attack {
        Attack::Bytes(bytes) => {
            let _ = stream.write_all(bytes);
            status_of(&stream)
        }
        Attack::HangUp(bytes) => {
            let _ = stream.write_all(bytes);
            0
        }
        Attack::Ghost(path) => {
            let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", addr);
            let _ = stream.write_all(head.as_bytes());
            status_of(&stream)
        }
    }
}

/// The server's figures and open connections, read with the benchmark's own token.
fn settle(addr: SocketAddr, token: &str, pid: Option<u32>, timeout: Duration) -> Value {
    let started = Instant::now();
    let mut open = None;
    let mut clients = Value::Null;
    while started.elapsed() < timeout {
        let metrics = fetch(addr, "/metrics", token).unwrap_or_default();
        open = metrics
            .lines()
            .find_map(|l| l.strip_prefix("porchlight_connections_open "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        let status: Value =
            serde_json::from_str(&fetch(addr, "/api/status", token).unwrap_or_default())
                .unwrap_or_default();
        clients = status["clients"].clone();
        let idle = clients == json!({"sse": 0, "websocket": 0, "video": 0});
        // The thread that served the asking connection ends just after its answer: give it
        // that moment and check it has gone, so it is not counted in or out by chance.
        std::thread::sleep(Duration::from_millis(100));
        if open == Some(1.0) && idle && pid.is_none_or(|pid| connection_threads(pid) == 0) {
            break;
        }
    }
    let sample = pid.and_then(procstat::sample).unwrap_or_default();
    json!({
        "settled_after_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "connections_open": open,
        "clients": clients,
        "rss_bytes": sample.rss_bytes,
        "threads": sample.threads,
        "open_files": pid.map(open_files),
        "cpu_seconds": sample.cpu_seconds,
    })
}

/// The server's connection threads (named `conn-N`) alive now.
fn connection_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("conn-"))
        })
        .count()
}

/// File descriptors the server holds now.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| fds.count())
}

/// One GET with the benchmark's token on a fresh connection from 127.0.0.1: the body.
fn fetch(addr: SocketAddr, path: &str, token: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Before the first figures, what ordinary use does: the routes, a snapshot, and a burst of 64
/// connections open at once (from two addresses, within the per-address cap), so that "before"
/// is a server whose thread stacks and allocator have been used, not a cold start.
fn warm_up(addr: SocketAddr, token: &str) {
    for path in [
        "/api/status",
        "/api/events",
        "/metrics",
        "/api/snapshot.jpg",
    ] {
        fetch(addr, path, token).ok();
    }
    let burst: Vec<TcpStream> = (0..64u8)
        .filter_map(|i| {
            let source = Ipv4Addr::new(127, 0, 0, 90 + i % 2);
            let mut stream = connect_from(source, addr).ok()?;
            write!(
                stream,
                "GET /api/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .ok()?;
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).ok()?;
            Some(stream)
        })
        .collect();
    drop(burst);
}

/// `--hostile N`: every class N times; the report.
pub fn run(addr: SocketAddr, pid: Option<u32>, token: &str, per_class: usize) -> Value {
    let host = addr.to_string();
    warm_up(addr, token);
    let before = settle(addr, token, pid, Duration::from_secs(5));
    let mut report = serde_json::Map::new();
    for (class, (name, shapes)) in classes(&host, token).into_iter().enumerate() {
        let source = attacker(class);
        let started = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let shapes = Arc::new(shapes);
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let (next, shapes) = (Arc::clone(&next), Arc::clone(&shapes));
                std::thread::spawn(move || {
                    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= per_class {
                            return statuses;
                        }
                        let status = run_attack(source, addr, &shapes[i % shapes.len()]);
                        *statuses.entry(status).or_default() += 1;
                    }
                })
            })
            .collect();
        let mut statuses = std::collections::BTreeMap::<String, usize>::new();
        for worker in workers {
            for (status, n) in worker.join().unwrap_or_default() {
                let key = if status == 0 {
                    "closed".to_string()
                } else {
                    status.to_string()
                };
                *statuses.entry(key).or_default() += n;
            }
        }
        let took = started.elapsed().as_secs_f64();
        let sample = pid.and_then(procstat::sample).unwrap_or_default();
        let files = pid.map(open_files);
        eprintln!(
            "hostile {name}: {per_class} requests in {took:.1} s: {statuses:?}; right after: RSS \
             {:.1} MB, {} threads, {} open files",
            sample.rss_bytes as f64 / 1e6,
            sample.threads,
            files.map_or("?".into(), |n| n.to_string())
        );
        report.insert(
            name.to_string(),
            json!({"requests": per_class, "seconds": (took * 100.0).round() / 100.0,
                   "answers": statuses, "rss_bytes_right_after": sample.rss_bytes,
                   "threads_right_after": sample.threads, "open_files_right_after": files}),
        );
    }
    settle(addr, token, pid, Duration::from_secs(30));
    // A preset's encoder thread ends 10 s after its last viewer (the ghosts were viewers).
    std::thread::sleep(ENCODER_IDLE_EXIT);
    let after = settle(addr, token, pid, Duration::from_secs(5));
    json!({
        "per_class": per_class,
        "classes": report,
        "before": before,
        "after": after,
    })
}

/// `--guesses S`: wrong tokens on one keep-alive connection for `seconds`, from one address.
/// Counts the tokens the server evaluated (401) and the requests it refused without evaluating
/// (429), reconnecting whenever the server closes.
pub fn guesses(addr: SocketAddr, seconds: f64) -> Value {
    let started = Instant::now();
    let (mut evaluated, mut throttled, mut other, mut reconnects) = (0u64, 0u64, 0u64, 0u64);
    let mut first_retry_after = None;
    let mut last_retry_after = None;
    'outer: while started.elapsed().as_secs_f64() < seconds {
        let Ok(stream) = connect_from(GUESSER, addr) else {
            break;
        };
        reconnects += 1;
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let mut n: u64 = 0;
        while started.elapsed().as_secs_f64() < seconds {
            n += 1;
            let request = format!(
                "GET /api/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer guess-{n:012}\r\n\r\n"
            );
            if writer.write_all(request.as_bytes()).is_err() {
                continue 'outer;
            }
            let Ok((status, headers)) = crate::http::read_head(&mut reader) else {
                continue 'outer;
            };
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue 'outer;
            }
            match status {
                401 => evaluated += 1,
                429 => {
                    throttled += 1;
                    let retry = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                        .map(|(_, v)| v.clone());
                    first_retry_after = first_retry_after.or(retry.clone());
                    last_retry_after = retry;
                }
                _ => other += 1,
            }
        }
    }
    let took = started.elapsed().as_secs_f64();
    json!({
        "seconds": (took * 10.0).round() / 10.0,
        "tokens_evaluated": evaluated,
        "guesses_per_second": (evaluated as f64 / took * 10.0).round() / 10.0,
        "refused_429": throttled,
        "other_answers": other,
        "connections": reconnects,
        "first_retry_after": first_retry_after,
        "last_retry_after": last_retry_after,
    })
}

/// Where the slowloris comes from, and where the legitimate client asks from.
const SLOW_ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 68);
const LEGITIMATE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 69);
/// Partial requests the slowloris keeps open: three times the default `max_connections_per_ip`.
const SLOW_CONNECTIONS: usize = 96;
/// How long a legitimate request may take and still count as served.
const SERVED_WITHIN: Duration = Duration::from_secs(2);

/// What the slowloris saw of its own connections.
#[derive(Default)]
struct SlowTally {
    opened: usize,
    refused_503: usize,
    cut_408: usize,
    closed_otherwise: usize,
}

/// `--slowloris S`: the attack and the legitimate client's score.
pub fn slowloris(addr: SocketAddr, token: &str, seconds: f64) -> Value {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attack = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut tally = SlowTally::default();
            let mut held: Vec<Option<(TcpStream, Instant)>> =
                (0..SLOW_CONNECTIONS).map(|_| None).collect();
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                for slot in held.iter_mut() {
                    if let Some((stream, last_drip)) = slot.as_mut() {
                        stream.set_nonblocking(true).ok();
                        let read = stream.read(&mut buf);
                        stream.set_nonblocking(false).ok();
                        match read {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                // Still held: one more header line now and then, as a
                                // slowloris does to look alive.
                                if last_drip.elapsed() > Duration::from_secs(2) {
                                    let _ = stream.write_all(b"X-Slow: 1\r\n");
                                    *last_drip = Instant::now();
                                }
                                continue;
                            }
                            Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 503") => {
                                tally.refused_503 += 1
                            }
                            Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 408") => {
                                tally.cut_408 += 1
                            }
                            _ => tally.closed_otherwise += 1,
                        }
                        *slot = None;
                    }
                    // A refused or cut connection is replaced at once.
                    if let Ok(mut stream) = connect_from(SLOW_ATTACKER, addr) {
                        tally.opened += 1;
                        let _ = stream.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n");
                        *slot = Some((stream, Instant::now()));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tally
        })
    };
    // Let the attack take its share before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let (mut tried, mut served) = (0usize, 0usize);
    let mut latencies = Vec::new();
    let mut open_most = 0.0f64;
    while started.elapsed().as_secs_f64() < seconds {
        tried += 1;
        let asked = Instant::now();
        let status = connect_from(LEGITIMATE, addr).ok().and_then(|mut stream| {
            write!(
                stream,
                "GET /api/status HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
                 Connection: close\r\n\r\n"
            )
            .ok()?;
            let mut reader = BufReader::new(stream);
            crate::http::read_head(&mut reader)
                .ok()
                .map(|(status, _)| status)
        });
        let took = asked.elapsed();
        if status == Some(200) && took <= SERVED_WITHIN {
            served += 1;
            latencies.push(took.as_secs_f64() * 1000.0);
        } else {
            eprintln!("slowloris: a legitimate request got {status:?} after {took:?}");
        }
        if tried % 10 == 0 {
            let metrics = fetch(addr, "/metrics", token).unwrap_or_default();
            let open = metrics
                .lines()
                .find_map(|l| l.strip_prefix("porchlight_connections_open "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            open_most = open_most.max(open);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let tally = attack.join().unwrap_or_default();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map(|ms| (ms * 10.0).round() / 10.0)
    };
    eprintln!(
        "slowloris: one address keeping {SLOW_CONNECTIONS} partial requests open ({} opened, \
         {} refused 503, {} cut 408): another address served {served}/{tried}",
        tally.opened, tally.refused_503, tally.cut_408
    );
    json!({
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "attacker_connections": SLOW_CONNECTIONS,
        "attacker_opened": tally.opened,
        "attacker_refused_503": tally.refused_503,
        "attacker_cut_408": tally.cut_408,
        "attacker_closed_otherwise": tally.closed_otherwise,
        "connections_open_most": open_most,
        "legitimate_served": served,
        "legitimate_tried": tried,
        "legitimate_ms_p50": percentile(0.5),
        "legitimate_ms_max": percentile(1.0),
    })
}
