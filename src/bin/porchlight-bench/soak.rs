//! The soak: clients connect and leave continuously while a steady set of clients stays, events
//! flow at a set rate, and the server's RSS, threads and CPU are sampled on a fixed period. What
//! must hold: the curves stay flat, and the clients that stayed lost nothing.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{self, open_stream};
use crate::procstat;

/// One churning client: open a stream, read a little, leave; again until `stop`.
fn churn(
    addr: SocketAddr,
    n: usize,
    token_query: String,
    stop: Arc<AtomicBool>,
    made: Arc<AtomicU64>,
) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let path = if round.is_multiple_of(3) {
            format!("/stream/system-status?client_id=churn-{n}{token_query}")
        } else {
            format!("/stream/events?client_id=churn-{n}&last_event_id=0{token_query}")
        };
        if let Ok(mut reader) = open_stream(addr, &path, "") {
            made.fetch_add(1, Ordering::Relaxed);
            // Read a few lines (the preamble and some events or a status), then hang up.
            let mut line = String::new();
            for _ in 0..(8 + (round % 20)) {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(
            20 + (round * 37 + n as u64 * 11) % 180,
        ));
    }
}

pub struct SoakOptions {
    pub seconds: u64,
    pub churners: usize,
    pub sample_every: Duration,
    pub rate: f64,
}

/// Runs the soak against `addr`; `stayers` are already connected and recording. Returns the
/// report (curve and totals); the caller stops and joins the stayers.
pub fn run(
    addr: SocketAddr,
    pid: Option<u32>,
    token: Option<String>,
    o: &SoakOptions,
) -> Result<(Value, u64), String> {
    let token_query = token
        .as_ref()
        .map(|t| format!("&token={t}"))
        .unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let churners: Vec<_> = (0..o.churners)
        .map(|n| {
            let (stop, made, token_query) =
                (Arc::clone(&stop), Arc::clone(&made), token_query.clone());
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || churn(addr, n, token_query, stop, made))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;

    let mut producer = http::KeepAlive::connect(addr, token).map_err(|e| e.to_string())?;
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    let started = Instant::now();
    let end = started + Duration::from_secs(o.seconds);
    let mut next_sample = started;
    let mut previous = pid.and_then(procstat::sample).map(|s| (Instant::now(), s));
    let mut curve = Vec::new();
    let mut posted = 0u64;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            if let Some(sample) = pid.and_then(procstat::sample) {
                let at = (Instant::now(), sample);
                let cpu = previous.map(|p| procstat::cpu_percent(p, at));
                previous = Some(at);
                let point = json!({
                    "t_s": started.elapsed().as_secs(),
                    "rss_bytes": sample.rss_bytes,
                    "threads": sample.threads,
                    "cpu_percent": cpu,
                    "connections_made": made.load(Ordering::Relaxed),
                    "events_posted": posted,
                });
                eprintln!(
                    "soak t={:>4}s  RSS {:>6.1} MB  threads {:>4}  CPU {:>5.1} %  churned {:>6}  events {:>6}",
                    started.elapsed().as_secs(),
                    sample.rss_bytes as f64 / 1e6,
                    sample.threads,
                    cpu.unwrap_or(0.0),
                    made.load(Ordering::Relaxed),
                    posted
                );
                curve.push(point);
            }
            next_sample += o.sample_every;
        }
        let body = json!({"event_type": "bench", "data": {"seq": posted, "sent_ns": crate::record::unix_nanos()}});
        let (status, reply) = producer
            .request("POST", "/api/events", body.to_string().as_bytes())
            .map_err(|e| format!("posting event {posted}: {e}"))?;
        if status != 201 {
            return Err(format!(
                "posting event {posted}: {status} {}",
                String::from_utf8_lossy(&reply)
            ));
        }
        posted += 1;
        let due = started + interval * posted as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for handle in churners {
        handle.join().ok();
    }
    let rss: Vec<u64> = curve
        .iter()
        .filter_map(|p| p["rss_bytes"].as_u64())
        .collect();
    let threads: Vec<u64> = curve.iter().filter_map(|p| p["threads"].as_u64()).collect();
    // Flatness: the second half's largest value against the first half's (warm-up included).
    let half = |v: &[u64]| -> (u64, u64) {
        let mid = v.len() / 2;
        (
            v[..mid].iter().copied().max().unwrap_or(0),
            v[mid..].iter().copied().max().unwrap_or(0),
        )
    };
    let (rss_first, rss_second) = half(&rss);
    let (threads_first, threads_second) = half(&threads);
    Ok((
        json!({
            "seconds": o.seconds,
            "churning_clients": o.churners,
            "connections_churned": made.load(Ordering::Relaxed),
            "events_posted": posted,
            "rss_max_first_half_bytes": rss_first,
            "rss_max_second_half_bytes": rss_second,
            "threads_max_first_half": threads_first,
            "threads_max_second_half": threads_second,
            "curve": curve,
        }),
        posted,
    ))
}
