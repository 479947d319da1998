//! A real MQTT broker for the tests: Debian's `mosquitto` on a free loopback port with a
//! password file, started and stopped (or killed) by the test; and `mosquitto_sub` /
//! `mosquitto_pub` as the other clients — MQTT implementations that are not ours.
//!
//! Readiness is mosquitto's own "running" log line, and a subscriber is ready once
//! `mosquitto_sub -d` reports the broker's SUBACK: no sleeps stand in for either.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::TempDir;

/// The user porchlight connects as, and the one the test clients use.
pub const DEVICE_USER: (&str, &str) = ("porchlight", "door-pass-1");
pub const TEST_USER: (&str, &str) = ("tester", "test-pass-2");

const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `mosquitto` is in /usr/sbin, which a non-root PATH may lack.
fn mosquitto_bin() -> String {
    for candidate in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if std::path::Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "mosquitto".into()
}

pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Broker {
    /// A broker on a free port that knows both users.
    pub fn start() -> Broker {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().unwrap().port()
        };
        let mut broker = Broker {
            child: None,
            port,
            dir: TempDir::new("mosquitto"),
        };
        broker.write_users(&[DEVICE_USER, TEST_USER]);
        broker.launch();
        broker
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `mqtt_url` porchlight is given.
    pub fn url(&self) -> String {
        format!(
            "mqtt://{}:{}@127.0.0.1:{}",
            DEVICE_USER.0, DEVICE_USER.1, self.port
        )
    }

    fn password_file(&self) -> PathBuf {
        self.dir.join("passwords")
    }

    /// Writes the password file holding exactly `users`.
    pub fn write_users(&self, users: &[(&str, &str)]) {
        let file = self.password_file();
        std::fs::write(&file, "").unwrap();
        for (user, password) in users {
            let out = Command::new("mosquitto_passwd")
                .arg("-b")
                .arg(&file)
                .args([user, password])
                .output()
                .expect("run mosquitto_passwd (Debian package mosquitto)");
            assert!(out.status.success(), "mosquitto_passwd: {out:?}");
        }
    }

    fn launch(&mut self) {
        let config = format!(
            "listener {} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n\
             log_type notice\nlog_type information\n",
            self.port,
            self.password_file().display()
        );
        let config_file = self.dir.write("mosquitto.conf", &config);
        let mut child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosquitto (Debian package mosquitto)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.push_str(&line);
                log.push('\n');
                if line.contains(" running") {
                    tx.send(Ok(())).ok();
                }
            }
            tx.send(Err(log)).ok();
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => {}
            other => {
                child.kill().ok();
                child.wait().ok();
                panic!("mosquitto did not start on port {}: {other:?}", self.port)
            }
        }
        self.child = Some(child);
    }

    /// `kill -9` (a crash: no goodbye to anyone).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Starts again on the same port (after [`Broker::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill the broker first");
        self.launch();
    }

    /// Re-reads the password file (SIGHUP), without dropping anyone.
    pub fn reload(&self) {
        let pid = self.child.as_ref().expect("broker running").id();
        super::send_signal(pid, "HUP");
    }

    /// A subscriber (as the test user) to `filters`, ready once this returns.
    pub fn subscribe(&self, filters: &[&str]) -> Subscriber {
        Subscriber::start(self.port, filters)
    }

    /// Publishes with `mosquitto_pub` at QoS 1.
    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        let mut command = Command::new("mosquitto_pub");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        command.args(["-u", TEST_USER.0, "-P", TEST_USER.1, "-q", "1"]);
        command.args(["-t", topic, "-m", payload]);
        if retain {
            command.arg("-r");
        }
        let out = command.output().expect("run mosquitto_pub");
        assert!(out.status.success(), "mosquitto_pub: {out:?}");
    }

    /// Every retained message under `filter` right now.
    pub fn retained(&self, filter: &str) -> Vec<Message> {
        let marker = "porchlight-test/marker";
        let subscriber = self.subscribe(&[filter, marker]);
        self.publish(marker, "end", false);
        let mut messages = Vec::new();
        loop {
            let message = subscriber
                .next(Duration::from_secs(10))
                .expect("the marker message never came back");
            if message.topic == marker {
                return messages;
            }
            if message.retained {
                messages.push(message);
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A message as `mosquitto_sub` received it.
#[derive(Clone, Debug)]
pub struct Message {
    pub retained: bool,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.topic, self.text()))
    }
}

/// A running `mosquitto_sub`; killed on drop.
pub struct Subscriber {
    child: Child,
    messages: mpsc::Receiver<Message>,
    port: u16,
}

impl Subscriber {
    fn start(port: u16, filters: &[&str]) -> Subscriber {
        // Line-buffered output: its stdout is a pipe, and the SUBACK line must not wait in a
        // buffer (coreutils' stdbuf; mosquitto_sub writes through stdio).
        let mut command = Command::new("stdbuf");
        command.args(["-oL", "mosquitto_sub"]);
        command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        command.args(["-u", TEST_USER.0, "-P", TEST_USER.1, "-d"]);
        // Payloads in hex: JPEG pictures survive the pipe.
        command.args(["-F", "MSG %r %t %x"]);
        for filter in filters {
            command.args(["-t", filter]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub (Debian package mosquitto-clients)");
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (tx, messages) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("received SUBACK") {
                    ready_tx.send(()).ok();
                } else if let Some(message) = line.strip_prefix("MSG ").and_then(parse_message)
                    && tx.send(message).is_err()
                {
                    return;
                }
            }
        });
        if ready_rx.recv_timeout(START_TIMEOUT).is_err() {
            // Not left running after the test.
            child.kill().ok();
            child.wait().ok();
            panic!("mosquitto_sub never got its SUBACK");
        }
        Subscriber {
            child,
            messages,
            port,
        }
    }

    /// After the broker was killed: every message this subscriber received from it, not yet
    /// taken. The subscriber has read all the broker sent once it has closed its end of the
    /// connection (it reads the end of the stream after the last byte), which the kernel's
    /// socket table shows; it is then stopped and its output read to the end.
    pub fn until_disconnected(mut self, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        while connected_to(self.port) {
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub kept its connection"
            );
            // The kernel tells socket states only when asked: poll.
            thread::sleep(Duration::from_millis(10));
        }
        self.child.kill().ok();
        self.child.wait().ok();
        let mut rest = Vec::new();
        while let Ok(message) = self.messages.recv_timeout(timeout) {
            rest.push(message);
        }
        rest
    }

    /// The next message, if one comes within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Message> {
        self.messages.recv_timeout(timeout).ok()
    }

    /// Messages until `done` says enough (given everything so far), or panics after `timeout`.
    pub fn collect_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Message]) -> bool,
    ) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(message) => got.push(message),
                Err(_) => panic!(
                    "timed out after {timeout:?} with {} message(s); last: {:?}",
                    got.len(),
                    got.last().map(|m| (&m.topic, m.text()))
                ),
            }
        }
        got
    }

    /// The first message on `topic`, skipping others; panics after `timeout`.
    pub fn wait_for(&self, topic: &str, timeout: Duration) -> Message {
        let got = self.collect_until(timeout, |got| got.last().is_some_and(|m| m.topic == topic));
        got.into_iter().last().unwrap()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Whether any local TCP socket is connected (or half-closed, unread) to `port`.
fn connected_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let remote_port = fields
            .get(2)
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|hex| u16::from_str_radix(hex, 16).ok());
        // 01 ESTABLISHED, 08 CLOSE_WAIT (the peer closed, this end has not yet).
        remote_port == Some(port) && matches!(fields.get(3), Some(&"01") | Some(&"08"))
    })
}

fn parse_message(line: &str) -> Option<Message> {
    let mut parts = line.splitn(3, ' ');
    let retained = parts.next()? == "1";
    let topic = parts.next()?.to_string();
    let hex = parts.next().unwrap_or("");
    let payload = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()?;
    Some(Message {
        retained,
        topic,
        payload,
    })
}
