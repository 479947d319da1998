//! One benchmark SSE client: reads every `bench` event and records it (see `record.rs`).

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_channel::Sender;

use crate::http::open_stream;
use crate::record::{ClientReport, number_after};

/// Connects, reports readiness on `ready`, then reads until `expected` bench events arrived (a
/// soak raises the bar when it knows how many it posted) or
/// `stop` is set (checked whenever a block arrives; heartbeats keep that regular).
pub fn run(
    addr: SocketAddr,
    client: usize,
    token_query: &str,
    expected: Arc<AtomicUsize>,
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
    let mut event_name = String::new();
    let mut id = 0u64;
    while report.received < expected.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
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
                report.record_sent(id, number_after(data, r#""sent_ns":"#));
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
