//! Measures the WebSocket figures of issue 5 against the real release binary and prints them:
//!
//! - event latency, doorbell trigger → `live_event` at each of 100 WebSocket clients, with 100
//!   SSE clients connected too (SSE latency printed alongside);
//! - `get_system_status` command round-trip over a WebSocket, with all those clients connected;
//! - the server's resident memory idle, with 100 WebSocket clients, and with 100 + 100 SSE.
//!
//! ```sh
//! cargo build --release && cargo run --release --example ws_measure
//! ```
//!
//! Options (environment): `PORCHLIGHT_BIN` (default: the release binary next to this example),
//! `WS_CLIENTS` (100), `SSE_CLIENTS` (100), `EVENTS` (200), `COMMANDS` (1000).
//!
//! Figures are printed, never asserted: they depend on the machine. Latency is measured on one
//! clock (this process): from just before the trigger request is sent to when a client thread
//! has read the message. It includes the HTTP request, the fsync that stores the event before
//! anyone is told, the fan-out and the client's own wake-up, on a machine whose cores the 200
//! client threads share with the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::{Message, WebSocket};

type Arrivals = Arc<Mutex<Vec<(u64, Instant)>>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn server_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PORCHLIGHT_BIN") {
        return PathBuf::from(path);
    }
    // target/release/examples/ws_measure → target/release/porchlight
    let me = std::env::current_exe().expect("own path");
    me.parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("porchlight"))
        .expect("target dir")
}

struct Server {
    child: Child,
    port: u16,
    data_dir: PathBuf,
}

impl Server {
    fn start() -> Server {
        let data_dir =
            std::env::temp_dir().join(format!("porchlight-ws-measure-{}", std::process::id()));
        let config = data_dir.with_extension("toml");
        std::fs::write(&config, "max_ws_clients = 1000\nmax_sse_clients = 1000\n")
            .expect("write config");
        let binary = server_binary();
        let mut child = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0", "--log-level", "info", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (build it with cargo build --release)",
                    binary.display()
                )
            });
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("log line");
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                break rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port in the listening line");
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        thread::spawn(move || for _ in lines {});
        Server {
            child,
            port,
            data_dir,
        }
    }

    fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("server /proc status");
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill on the pid of the child we started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.data_dir).ok();
        std::fs::remove_file(self.data_dir.with_extension("toml")).ok();
    }
}

fn open_ws(port: u16, client_id: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).ok();
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let url = format!("ws://127.0.0.1:{port}/ws?client_id={client_id}");
    let (ws, _) = tungstenite::client(url.as_str(), stream).expect("WebSocket handshake");
    ws
}

fn read_json(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// A WebSocket client thread: subscribes to everything, then records when each event arrives.
fn ws_client(
    port: u16,
    n: usize,
    events: usize,
    ready: Arc<Barrier>,
    arrivals: Arrivals,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let mut ws = open_ws(port, &format!("measure-{n}"));
            assert_eq!(read_json(&mut ws)["type"], "connected");
            ws.send(Message::Text(
                r#"{"type":"subscribe","event_types":["*"]}"#.into(),
            ))
            .expect("subscribe");
            assert_eq!(read_json(&mut ws)["type"], "subscribed");
            ready.wait();
            let mut seen = Vec::with_capacity(events);
            while seen.len() < events {
                let message = read_json(&mut ws);
                let at = Instant::now();
                if message["type"] == "live_event" {
                    seen.push((message["event"]["id"].as_u64().expect("id"), at));
                }
            }
            arrivals.lock().unwrap().extend(seen);
            ws.close(None).ok();
        })
        .expect("spawn client")
}

/// An SSE client thread: records when each `id:` line arrives.
fn sse_client(
    port: u16,
    events: usize,
    ready: Arc<Barrier>,
    arrivals: Arrivals,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
            write!(
                stream,
                "GET /stream/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            .expect("request");
            let mut lines = BufReader::new(stream).lines();
            loop {
                let line = lines.next().expect("SSE stream ended").expect("SSE line");
                if line.starts_with("event: connected") {
                    break;
                }
            }
            ready.wait();
            let mut seen = Vec::with_capacity(events);
            while seen.len() < events {
                let line = lines.next().expect("SSE stream ended").expect("SSE line");
                if let Some(id) = line.strip_prefix("id: ") {
                    seen.push((id.parse().expect("id"), Instant::now()));
                }
            }
            arrivals.lock().unwrap().extend(seen);
        })
        .expect("spawn client")
}

/// `POST /api/trigger-doorbell` on a kept-alive connection; returns the event id.
fn trigger(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>) -> u64 {
    stream
        .write_all(
            b"POST /api/trigger-doorbell HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        )
        .expect("trigger");
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("response head");
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some(value) = trimmed.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().expect("content length");
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("response body");
    let event: Value = serde_json::from_slice(&body).expect("event JSON");
    event["id"].as_u64().expect("event id")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(*samples.last().expect("samples"))
    );
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    let ws_clients = env_usize("WS_CLIENTS", 100);
    let sse_clients = env_usize("SSE_CLIENTS", 100);
    let events = env_usize("EVENTS", 200);
    let commands = env_usize("COMMANDS", 1000);
    let server = Server::start();
    let port = server.port;
    println!(
        "porchlight {} on 127.0.0.1:{port}; {ws_clients} WebSocket + {sse_clients} SSE clients, {events} events, {commands} commands",
        server_binary().display()
    );
    // Let start-up settle (status sampler, first allocations) before the idle figure.
    thread::sleep(Duration::from_millis(300));
    let rss_idle = server.rss_bytes();

    let ws_arrivals: Arrivals = Arc::default();
    let sse_arrivals: Arrivals = Arc::default();
    let ws_ready = Arc::new(Barrier::new(ws_clients + 1));
    let mut handles: Vec<_> = (0..ws_clients)
        .map(|n| {
            ws_client(
                port,
                n,
                events,
                Arc::clone(&ws_ready),
                Arc::clone(&ws_arrivals),
            )
        })
        .collect();
    ws_ready.wait();
    let rss_ws = server.rss_bytes();
    let threads_ws = server.threads();

    let sse_ready = Arc::new(Barrier::new(sse_clients + 1));
    handles.extend((0..sse_clients).map(|_| {
        sse_client(
            port,
            events,
            Arc::clone(&sse_ready),
            Arc::clone(&sse_arrivals),
        )
    }));
    sse_ready.wait();
    let rss_all = server.rss_bytes();

    // Command round-trips first, while everyone is connected and idle.
    let mut commander = open_ws(port, "measure-commands");
    assert_eq!(read_json(&mut commander)["type"], "connected");
    let mut round_trips = Vec::with_capacity(commands);
    for n in 0..commands {
        let message = format!(
            r#"{{"type":"system_command","command":"get_system_status","params":{{}},"request_id":{n}}}"#
        );
        let started = Instant::now();
        commander
            .send(Message::Text(message))
            .expect("send command");
        let reply = read_json(&mut commander);
        round_trips.push(started.elapsed());
        assert_eq!(reply["request_id"], n);
        assert_eq!(reply["success"], true);
    }

    // Then events, one at a time, so that each one's latency is its own.
    let mut http = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    http.set_nodelay(true).ok();
    let mut http_reader = BufReader::new(http.try_clone().expect("clone"));
    let mut triggered = std::collections::HashMap::new();
    let mut trigger_round_trips = Vec::with_capacity(events);
    for _ in 0..events {
        let started = Instant::now();
        let id = trigger(&mut http, &mut http_reader);
        trigger_round_trips.push(started.elapsed());
        triggered.insert(id, started);
        thread::sleep(Duration::from_millis(10));
    }
    for handle in handles {
        handle.join().expect("client thread");
    }
    let latencies = |arrivals: &Arrivals| -> Vec<Duration> {
        arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|(id, at)| at.duration_since(triggered[id]))
            .collect()
    };
    let ws_latency = latencies(&ws_arrivals);
    let sse_latency = latencies(&sse_arrivals);
    assert_eq!(
        ws_latency.len(),
        ws_clients * events,
        "a WebSocket client missed events"
    );
    assert_eq!(
        sse_latency.len(),
        sse_clients * events,
        "an SSE client missed events"
    );

    println!();
    summary("event latency trigger -> WebSocket client", ws_latency);
    summary("event latency trigger -> SSE client      ", sse_latency);
    summary("get_system_status round-trip             ", round_trips);
    // The trigger's answer comes after the fsync and the fan-out: most of the latency above.
    summary(
        "trigger request round-trip (store+fanout)",
        trigger_round_trips,
    );
    println!(
        "server RSS: idle {}, with {ws_clients} WebSocket clients {} ({} threads), with {ws_clients} WebSocket + {sse_clients} SSE {}",
        mib(rss_idle),
        mib(rss_ws),
        threads_ws,
        mib(rss_all)
    );
    println!(
        "per WebSocket client: {:.1} KiB",
        (rss_ws.saturating_sub(rss_idle)) as f64 / 1024.0 / ws_clients.max(1) as f64
    );
}
