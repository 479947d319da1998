//! The Prometheus text of `/metrics`: fetch it, read one series, wait for a value.

use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// `GET /metrics` as text, asserting 200.
pub fn metrics(port: u16, token: Option<&str>) -> String {
    let resp = get(port, "/metrics", token);
    assert_eq!(resp.status, 200, "/metrics: {:?}", resp.text());
    resp.text()
}

/// The value of one series, written exactly as in the exposition (`name` or `name{k="v"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = split_series(line);
        if name == series {
            return rest.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// Splits a sample line into `name{labels}` and the rest.
pub fn split_series(line: &str) -> (&str, &str) {
    let end = match (line.find('{'), line.find(' ')) {
        (Some(brace), Some(space)) if brace < space => line.find('}').map_or(line.len(), |i| i + 1),
        (_, Some(space)) => space,
        _ => line.len(),
    };
    (&line[..end], line[end..].trim())
}

/// Polls `/metrics` until `series` satisfies `ok` or `timeout` passes; returns the last value.
/// (The server offers no push signal for its gauges, so polling is the only way.)
pub fn wait_metric(
    port: u16,
    token: Option<&str>,
    series: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let value = metric(&metrics(port, token), series);
        if value.is_some_and(&ok) || Instant::now() >= deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
