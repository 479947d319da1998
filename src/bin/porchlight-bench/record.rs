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

/// The unsigned integer after the first `"key":` in a JSON text, without parsing the rest.
///
/// The streaming clients read every event of every one of hundreds of connections on the
/// machine that runs the server: a JSON tree per event per client would be their largest
/// cost and would take CPU from the server being measured. The server writes these numbers
/// plainly (no spaces, no exponent), and the key is searched with its opening quote, so
/// `"id":` never matches inside `"request_id":`.
pub fn number_after(json: &str, key: &str) -> Option<u64> {
    let at = json.find(key)? + key.len();
    let digits = &json[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

impl ClientReport {
    /// Records one benchmark event (its id, and the `sent_ns` the trigger put in its data)
    /// received now.
    pub fn record_sent(&mut self, id: u64, sent_ns: Option<u64>) {
        let now = unix_nanos();
        self.record_received(id, sent_ns.unwrap_or(now), now);
    }

    /// Records one benchmark event object (`{"id", "data": {"sent_ns"}}`) received at `now`
    /// (Unix ns, as another process stamped it).
    pub fn record_at(&mut self, id: u64, event: &Value, now: u64) {
        let sent = event["data"]["sent_ns"].as_u64().unwrap_or(now);
        self.record_received(id, sent, now);
    }

    /// Records one benchmark event sent at `sent` and received at `now` (Unix ns).
    pub fn record_received(&mut self, id: u64, sent: u64, now: u64) {
        if !self.seen.insert(id) {
            self.duplicates += 1;
            return;
        }
        if id < self.last_id {
            self.out_of_order += 1;
        }
        self.last_id = self.last_id.max(id);
        self.received += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_after_their_exact_key() {
        let ws = r#"{"type":"live_event","request_id":7,"event":{"id":42,"data":{"seq":3,"sent_ns":1700000000123456789}}}"#;
        assert_eq!(number_after(ws, r#""id":"#), Some(42));
        assert_eq!(
            number_after(ws, r#""sent_ns":"#),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(number_after(ws, r#""missing":"#), None);
        assert_eq!(number_after(r#"{"id":"x"}"#, r#""id":"#), None);
    }
}
