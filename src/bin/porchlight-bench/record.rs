//! What a benchmark client saw: per-event latency (from the `sent_ns` the trigger put in the
//! event's data, on this process's clock), duplicates and order. Shared by every client kind.

use std::collections::HashSet;

use serde_json::Value;

#[derive(Default)]
pub struct ClientReport {
    pub latencies_ns: Vec<u64>,
    pub received: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    pub error: Option<String>,
    seen: HashSet<u64>,
    last_id: u64,
}

pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl ClientReport {
    /// Records one benchmark event object (`{"id", "data": {"sent_ns"}}`) received now.
    pub fn record(&mut self, id: u64, event: &Value) {
        self.record_at(id, event, unix_nanos());
    }

    /// Records one benchmark event received at `now` (Unix ns, as another process stamped it).
    pub fn record_at(&mut self, id: u64, event: &Value, now: u64) {
        if !self.seen.insert(id) {
            self.duplicates += 1;
            return;
        }
        if id < self.last_id {
            self.out_of_order += 1;
        }
        self.last_id = self.last_id.max(id);
        self.received += 1;
        let sent = event["data"]["sent_ns"].as_u64().unwrap_or(now);
        self.latencies_ns.push(now.saturating_sub(sent));
    }
}

/// The totals over many clients of one kind.
#[derive(Default)]
pub struct KindTotals {
    pub latencies_ns: Vec<u64>,
    pub received: usize,
    pub duplicates: usize,
    pub out_of_order: usize,
    pub errors: usize,
}

impl KindTotals {
    pub fn add(&mut self, report: ClientReport) {
        self.received += report.received;
        self.duplicates += report.duplicates;
        self.out_of_order += report.out_of_order;
        self.errors += report.error.is_some() as usize;
        self.latencies_ns.extend(report.latencies_ns);
    }
}
