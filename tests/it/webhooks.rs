//! Webhooks against a local receiver the test runs: every matching event arrives, in id order,
//! through failures (5xx, `Retry-After`) and while the receiver is down, also across a
//! `kill -9` of porchlight; and the ntfy form carries ntfy's headers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

/// One request the receiver answered.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// What the receiver answered.
    status: u16,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A webhook receiver on a fixed port: answers the first `fail_first` requests with 503 (the
/// first of them with `Retry-After: 1`), then 200; can be taken down and brought back.
struct Receiver {
    port: u16,
    fail_first: Arc<AtomicUsize>,
    received: mpsc::Receiver<Received>,
    sender: mpsc::Sender<Received>,
    stop: Option<Arc<AtomicBool>>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, received) = mpsc::channel();
        let mut receiver = Receiver {
            port,
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            received,
            sender,
            stop: None,
            accept: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: TcpListener) {
        let stopping = Arc::new(AtomicBool::new(false));
        let fail_first = Arc::clone(&self.fail_first);
        let sender = self.sender.clone();
        let flag = Arc::clone(&stopping);
        self.accept = Some(thread::spawn(move || {
            let mut answered = 0usize;
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let failing = fail_first
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                answered += 1;
                if let Some(request) = answer(stream, failing, answered == 1) {
                    sender.send(request).ok();
                }
            }
        }));
        self.stop = Some(stopping);
    }

    /// Closes the listening socket: connections are refused until [`Receiver::up`].
    fn down(&mut self) {
        if let Some(stopping) = self.stop.take() {
            stopping.store(true, Ordering::SeqCst);
            // Wakes the blocking accept, which then sees the flag and drops the listener.
            TcpStream::connect(("127.0.0.1", self.port)).ok();
        }
        if let Some(accept) = self.accept.take() {
            accept.join().unwrap();
        }
    }

    fn up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("the same port again");
        self.serve(listener);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Requests answered 2xx until `count` of them came; panics after `timeout`.
    fn accepted(&self, count: usize, timeout: Duration) -> (Vec<Received>, usize) {
        let deadline = Instant::now() + timeout;
        let mut accepted = Vec::new();
        let mut failed = 0;
        while accepted.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            let request = self
                .received
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("only {} of {count} delivered", accepted.len()));
            if request.status == 200 {
                accepted.push(request);
            } else {
                failed += 1;
            }
        }
        (accepted, failed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

/// A request as the receiver read it: path, headers, body.
struct Request {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Reads one whole request (head, then a `Content-Length` body); `None` if it did not come
/// whole within 5 s.
fn read_request(stream: &TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))?
        .1
        .parse()
        .ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        path,
        headers,
        body,
    })
}

/// Reads one request and answers it.
fn answer(mut stream: TcpStream, fail: bool, first: bool) -> Option<Received> {
    let Request {
        path,
        headers,
        body,
    } = read_request(&stream)?;
    let status = if fail { 503 } else { 200 };
    let retry = if fail && first {
        "Retry-After: 1\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\n{retry}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    Some(Received {
        path,
        headers,
        body,
        status,
    })
}

fn ids(requests: &[Received]) -> Vec<u64> {
    requests
        .iter()
        .map(|r| {
            r.header("X-Porchlight-Event-Id")
                .expect("event id header")
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn every_matching_event_arrives_in_order_through_failures_and_downtime() {
    let mut receiver = Receiver::start(3);
    let toml = format!(
        "public_url = \"http://door.local:8080\"\n\
         webhooks = [{{url = \"{}\", types = [\"doorbell_pressed\", \"visitor\"], format = \"json\"}}]\n",
        receiver.url("/hook?k=1")
    );
    let server = Server::with_config(&toml, &[]);
    let port = server.port();
    let mut wanted = Vec::new();
    for i in 0..6 {
        let event = post_event(port, None, "visitor", json!({"n": i}));
        wanted.push(event);
        post_event(port, None, "ignored_type", json!({"n": i}));
    }
    wanted.push(trigger(port, None));
    let (got, failed) = receiver.accepted(wanted.len(), WAIT);
    assert_eq!(failed, 3, "the first three were refused and retried");
    assert_eq!(ids(&got), wanted.iter().map(id_of).collect::<Vec<_>>());
    for (request, event) in got.iter().zip(&wanted) {
        assert_eq!(request.path, "/hook?k=1");
        assert_eq!(request.header("Content-Type"), Some("application/json"));
        let mut expected = event.clone();
        for key in ["snapshot_url", "clip_url"] {
            if let Some(url) = event[key].as_str() {
                expected[key] = json!(format!("http://door.local:8080{url}"));
            }
        }
        assert_eq!(request.json(), expected, "the event, URLs made absolute");
    }

    // Down for a while: events wait in the store, then arrive in order.
    receiver.down();
    let waiting: Vec<Value> = (0..5)
        .map(|i| post_event(port, None, "visitor", json!({"down": i})))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let hooks = get(port, "/api/status", None).json()["webhooks"].clone();
        if hooks[0]["failing"] == true {
            assert_eq!(
                hooks[0]["target"],
                format!("http://127.0.0.1:{}", receiver.port)
            );
            assert!(hooks[0]["backlog"].as_u64().unwrap() >= 5, "{hooks}");
            assert!(hooks[0]["last_error"].is_string());
            break;
        }
        assert!(Instant::now() < deadline, "{hooks}");
        thread::sleep(Duration::from_millis(20));
    }
    receiver.up();
    let (got, _) = receiver.accepted(waiting.len(), WAIT);
    assert_eq!(ids(&got), waiting.iter().map(id_of).collect::<Vec<_>>());
    // The receiver saw the last request before porchlight read its answer: wait for that.
    let deadline = Instant::now() + WAIT;
    let metrics = loop {
        let metrics = get(port, "/metrics", None).text();
        if metrics.contains("porchlight_webhook_delivered_total{hook=\"0\"} 12\n") {
            break metrics;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        thread::sleep(Duration::from_millis(20));
    };
    assert!(!metrics.contains("/hook?k=1"), "no receiver URL in metrics");
}

#[test]
fn events_waiting_for_a_receiver_survive_a_kill_9() {
    let mut receiver = Receiver::start(0);
    receiver.down();
    let data = TempDir::new("webhook-restart");
    let args = ["--data-dir", &data.path_str()];
    let toml = format!("webhooks = [{{url = \"{}\"}}]\n", receiver.url("/"));
    let mut server = Server::with_config(&toml, &args);
    let waiting: Vec<u64> = (0..8)
        .map(|i| id_of(&post_event(server.port(), None, "queued", json!({"n": i}))))
        .collect();
    server.kill9();
    receiver.up();
    let _server = Server::with_config(&toml, &args);
    let (got, _) = receiver.accepted(waiting.len(), WAIT);
    assert_eq!(
        ids(&got),
        waiting,
        "stored while nobody listened, sent after the restart"
    );
}

#[test]
fn ntfy_format_rings_a_phone() {
    let receiver = Receiver::start(0);
    let toml = format!(
        "public_url = \"http://door.local:8080\"\ndevice_id = \"front\"\n\
         webhooks = [{{url = \"http://tk_user:tk_secret@127.0.0.1:{}/porch-ring\", types = [\"doorbell_pressed\"], format = \"ntfy\"}}]\n",
        receiver.port
    );
    let server = Server::with_config(&toml, &[]);
    let port = server.port();
    let deadline = Instant::now() + WAIT;
    while get(port, "/api/status", None).json()["camera"]["state"] != "streaming" {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(20));
    }
    let ring = trigger(port, None);
    let (got, _) = receiver.accepted(1, WAIT);
    let request = &got[0];
    assert_eq!(request.path, "/porch-ring");
    assert_eq!(request.header("Title"), Some("Doorbell - front"));
    assert_eq!(request.header("Tags"), Some("bell,doorbell_pressed"));
    assert_eq!(request.header("Priority"), Some("high"));
    assert_eq!(request.header("Click"), Some("http://door.local:8080/"));
    assert_eq!(
        request.header("Attach"),
        Some(
            format!(
                "http://door.local:8080/api/events/{}/snapshot.jpg",
                id_of(&ring)
            )
            .as_str()
        )
    );
    assert_eq!(
        request.header("Authorization"),
        Some("Basic dGtfdXNlcjp0a19zZWNyZXQ="),
        "user:password from the URL as Basic auth"
    );
    assert!(
        request
            .header("Content-Type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    assert_eq!(request.body, b"Someone rang the doorbell.");
    let hooks = get(port, "/api/status", None).json()["webhooks"].clone();
    assert!(!hooks.to_string().contains("tk_secret"), "{hooks}");
    assert!(!hooks.to_string().contains("porch-ring"), "{hooks}");
}

#[test]
fn bad_webhooks_config_exits_2_naming_the_key() {
    for toml in [
        "webhooks = [{url = \"ftp://x/\"}]",
        "webhooks = [{url = \"http://x/\", format = \"slack\"}]",
        "webhooks = [{url = \"http://x/\", types = [\"Bad Type\"]}]",
        "webhooks = [{url = \"http://x/\", colour = \"red\"}]",
        "webhooks = [{format = \"json\"}]",
        "webhooks = \"http://x/\"",
    ] {
        let dir = TempDir::new("webhook-bad-config");
        let file = dir.write("bad.toml", toml);
        let finished = run_to_exit(
            &["--check-config", &file.to_string_lossy()],
            Duration::from_secs(10),
        );
        assert_eq!(
            finished.code(),
            Some(2),
            "{toml}: {:?}",
            finished.stderr_lines()
        );
        assert!(
            finished
                .stderr_lines()
                .iter()
                .any(|l| l.contains("webhooks")),
            "{toml}: {:?}",
            finished.stderr_lines()
        );
    }
}

/// A receiver that answers every request with `status` and these extra header lines, counting
/// the requests.
fn answering_all(status: u16, extra: &'static str) -> (u16, Arc<AtomicUsize>) {
    answering_all_with(format!(
        "HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    ))
}

/// A receiver that answers every request with the bytes `answer`, counting the requests.
fn answering_all_with(answer: String) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            // The whole request first: closing with unread bytes would reset the connection
            // and the client would see no answer at all.
            if read_request(&stream).is_none() {
                continue;
            }
            stream.write_all(answer.as_bytes()).ok();
        }
    });
    (port, count)
}

/// `Retry-After: 0` (some proxies send it with every 503) is no licence to reconnect as fast
/// as the receiver answers: the retries keep at least the first backoff apart.
#[test]
fn retry_after_zero_does_not_turn_retries_into_a_busy_loop() {
    let (port, count) = answering_all(503, "Retry-After: 0\r\n");
    let toml = format!("webhooks = [{{url = \"http://127.0.0.1:{port}/\"}}]\n");
    let server = Server::with_config(&toml, &[]);
    post_event(server.port(), None, "ping", json!({}));
    let deadline = Instant::now() + WAIT;
    while count.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the hook never posted");
        thread::sleep(Duration::from_millis(10));
    }
    // The window measured: with a 1 s floor, at most one retry per second plus the first try.
    let window = Duration::from_secs(3);
    let start = count.load(Ordering::SeqCst);
    let began = Instant::now();
    thread::sleep(window);
    let tries = count.load(Ordering::SeqCst) - start;
    let allowed = usize::try_from(began.elapsed().as_secs()).unwrap() + 1;
    assert!(
        tries <= allowed,
        "{tries} requests in {:?} (at most {allowed})",
        began.elapsed()
    );
    assert!(tries >= 1, "it keeps retrying");
}

/// A receiver may send interim answers before its final one, asked or not (RFC 9110 §15.2):
/// `100 Continue`, `103 Early Hints`. The delivery is the final answer's, a 2xx here: the
/// event counts as delivered at the first try.
#[test]
fn interim_answers_before_the_final_one_are_skipped() {
    let (port, count) = answering_all_with(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
         HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
            .to_string(),
    );
    let toml = format!("webhooks = [{{url = \"http://127.0.0.1:{port}/\"}}]\n");
    let server = Server::with_config(&toml, &[]);
    let event = post_event(server.port(), None, "ping", json!({}));
    let deadline = Instant::now() + WAIT;
    let hook = loop {
        let hooks = get(server.port(), "/api/status", None).json()["webhooks"].clone();
        if hooks[0]["last_delivered_id"] == event["id"] {
            break hooks[0].clone();
        }
        assert!(Instant::now() < deadline, "never delivered: {hooks}");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(hook["failing"], false, "{hook}");
    assert!(hook["last_error"].is_null(), "{hook}");
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "delivered at the first try"
    );
}
