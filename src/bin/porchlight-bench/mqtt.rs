//! `--mqtt`: the MQTT bridge's side of the benchmark. Starts Debian's `mosquitto` on a free
//! loopback port and a `mosquitto_sub` on the bench device's event topics (an MQTT client that
//! is not ours), writes the config that points the server at the broker, and turns what the
//! subscriber printed into latencies: trigger (`sent_ns` in the event) → the moment
//! mosquitto_sub received the message (its own `%U` timestamp), per event.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::record::ClientReport;

/// The broker, the subscriber and the server's config file; all stopped and removed on drop.
pub struct MqttBench {
    broker: Child,
    subscriber: Child,
    lines: Receiver<String>,
    dir: PathBuf,
    pub config: PathBuf,
}

impl Drop for MqttBench {
    fn drop(&mut self) {
        self.subscriber.kill().ok();
        self.subscriber.wait().ok();
        self.broker.kill().ok();
        self.broker.wait().ok();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn mosquitto() -> &'static str {
    if std::path::Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    }
}

/// Waits for a line containing `needle` on `lines`.
fn wait_line(lines: &Receiver<String>, needle: &str, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(_) => {}
            Err(_) => return Err(format!("{what}: no {needle:?} line within 10 s")),
        }
    }
}

fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

pub fn start() -> Result<MqttBench, String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let dir = std::env::temp_dir().join(format!("porchlight-bench-mqtt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let broker_config = dir.join("mosquitto.conf");
    std::fs::write(
        &broker_config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut broker = Command::new(mosquitto())
        .arg("-c")
        .arg(&broker_config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start mosquitto (Debian package mosquitto): {e}"))?;
    let broker_log = lines_of(broker.stderr.take().expect("piped"));
    if let Err(e) = wait_line(&broker_log, " running", "mosquitto") {
        broker.kill().ok();
        broker.wait().ok();
        return Err(e);
    }
    let mut subscriber = Command::new("stdbuf")
        .args([
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .args(["-d", "-t", "porchlight/bench/events/#", "-F", "MSG %U %p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start mosquitto_sub (mosquitto-clients): {e}"))?;
    let lines = lines_of(subscriber.stdout.take().expect("piped"));
    if let Err(e) = wait_line(&lines, "received SUBACK", "mosquitto_sub") {
        for child in [&mut subscriber, &mut broker] {
            child.kill().ok();
            child.wait().ok();
        }
        return Err(e);
    }
    let config = dir.join("porchlight.toml");
    std::fs::write(
        &config,
        // Every benchmark client is 127.0.0.1: lift the per-address connection cap.
        format!(
            "mqtt_url = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"bench\"\n\
             max_connections_per_ip = 100000\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    Ok(MqttBench {
        broker,
        subscriber,
        lines,
        dir,
        config,
    })
}

impl MqttBench {
    /// What the subscriber received of `expected` events (waiting at most `timeout` for them).
    pub fn report(&self, expected: usize, timeout: Duration) -> ClientReport {
        let mut report = ClientReport::default();
        let deadline = Instant::now() + timeout;
        while report.received < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                report.error = Some(format!("{} of {expected} arrived", report.received));
                break;
            };
            let Some((stamp, payload)) = line
                .strip_prefix("MSG ")
                .and_then(|rest| rest.split_once(' '))
            else {
                continue;
            };
            let (Ok(seconds), Ok(event)) = (
                stamp.parse::<f64>(),
                serde_json::from_str::<serde_json::Value>(payload),
            ) else {
                continue;
            };
            if event["event_type"] != "bench" {
                continue;
            }
            let Some(id) = event["id"].as_u64() else {
                continue;
            };
            // %U has nanosecond digits; an f64 of today's Unix time keeps about a quarter of a
            // microsecond of them, far below what is measured.
            report.record_at(id, &event, (seconds * 1e9) as u64);
        }
        report
    }
}
