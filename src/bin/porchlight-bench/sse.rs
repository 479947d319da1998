//! One benchmark SSE client: reads every event, records trigger → receive latency from the
//! `sent_ns` the trigger put in the event's data, and checks order, loss and duplicates.

use std::collections::HashSet;
use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;

use crate::http::open_stream;

/// What one client saw.
#[derive(Default)]
pub struct ClientReport {
    pub latencies_ns: Vec<u64>,
    pub received: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    pub error: Option<String>,
}

pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Connects, reports readiness on `ready`, then reads until `expected` bench events arrived or
/// `stop` is set (checked whenever a block arrives; heartbeats keep that regular).
pub fn run(
    addr: SocketAddr,
    client: usize,
    token_query: &str,
    expected: usize,
    ready: Sender<Result<(), String>>,
    stop: Arc<AtomicBool>,
) -> ClientReport {
    let mut report = ClientReport::default();
    let path = format!("/stream/events?client_id=bench-{client}&types=bench{token_query}");
    let mut reader = match open_stream(addr, &path, "") {
        Ok(reader) => reader,
        Err(err) => {
            ready.send(Err(err.to_string())).ok();
            report.error = Some(err.to_string());
            return report;
        }
    };
    let mut line = String::new();
    let mut connected = false;
    let mut seen = HashSet::new();
    let mut last_id = 0u64;
    let mut event_name = String::new();
    let mut id = 0u64;
    while report.received < expected && !stop.load(Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                report.error = Some("server closed the stream".into());
                break;
            }
            Ok(_) => {}
            Err(err) => {
                report.error = Some(err.to_string());
                break;
            }
        }
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix("event: ") {
            event_name = name.to_string();
        } else if let Some(text) = line.strip_prefix("id: ") {
            id = text.parse().unwrap_or(0);
        } else if let Some(data) = line.strip_prefix("data: ") {
            if event_name == "connected" && !connected {
                connected = true;
                ready.send(Ok(())).ok();
            } else if event_name == "bench" {
                let now = unix_nanos();
                let value: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
                let sent = value["data"]["sent_ns"].as_u64().unwrap_or(now);
                if !seen.insert(id) {
                    report.duplicates += 1;
                    continue;
                }
                if id < last_id {
                    report.out_of_order += 1;
                }
                last_id = last_id.max(id);
                report.received += 1;
                report.latencies_ns.push(now.saturating_sub(sent));
            }
        } else if line.is_empty() {
            event_name.clear();
        }
    }
    if !connected {
        ready.send(Err("no connected event".into())).ok();
    }
    report
}
