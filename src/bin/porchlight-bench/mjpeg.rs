//! A benchmark MJPEG viewer: reads `multipart/x-mixed-replace` parts from `/stream/video`,
//! counts frames, and records capture → client latency from each part's `X-Timestamp`.

use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::http::open_stream;
use crate::record::unix_nanos;

#[derive(Default)]
pub struct ViewerReport {
    pub frames: u64,
    /// Seconds between the first and the last frame.
    pub span_s: f64,
    pub latencies_ns: Vec<u64>,
    pub last_frame_id: u64,
    pub frame_ids_not_increasing: u64,
    pub bytes: u64,
    pub error: Option<String>,
}

impl ViewerReport {
    pub fn fps(&self) -> f64 {
        if self.frames < 2 || self.span_s <= 0.0 {
            0.0
        } else {
            (self.frames - 1) as f64 / self.span_s
        }
    }
}

/// Reads one part's headers; returns (content length, capture time in ns, frame id).
fn read_part_head(reader: &mut impl BufRead) -> std::io::Result<(usize, Option<u64>, u64)> {
    let mut line = String::new();
    let (mut length, mut timestamp, mut frame_id) = (None, None, 0);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("stream ended"));
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            if length.is_some() {
                break;
            }
            continue; // the blank line after a part's JPEG, before the next boundary
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().ok(),
                "x-timestamp" => {
                    timestamp = value.parse::<f64>().ok().map(|s| (s * 1e9) as u64);
                }
                "x-frame-id" => frame_id = value.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let length = length.ok_or_else(|| std::io::Error::other("part without Content-Length"))?;
    Ok((length, timestamp, frame_id))
}

/// Watches `/stream/video?quality=Q` until `stop`.
pub fn watch(
    addr: SocketAddr,
    client: usize,
    quality: &str,
    token_query: &str,
    ready: Sender<Result<(), String>>,
    stop: Arc<AtomicBool>,
) -> ViewerReport {
    let mut report = ViewerReport::default();
    let path = format!("/stream/video/bench-video-{client}?quality={quality}{token_query}");
    let mut reader = match open_stream(addr, &path, "") {
        Ok(reader) => reader,
        Err(err) => {
            ready.send(Err(err.to_string())).ok();
            report.error = Some(err.to_string());
            return report;
        }
    };
    ready.send(Ok(())).ok();
    let mut first: Option<Instant> = None;
    let mut jpeg = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let (length, timestamp, frame_id) = match read_part_head(&mut reader) {
            Ok(head) => head,
            Err(err) => {
                report.error = Some(err.to_string());
                break;
            }
        };
        jpeg.resize(length, 0);
        if let Err(err) = reader.read_exact(&mut jpeg) {
            report.error = Some(err.to_string());
            break;
        }
        let now = Instant::now();
        let first_at = *first.get_or_insert(now);
        report.span_s = now.duration_since(first_at).as_secs_f64();
        report.frames += 1;
        report.bytes += length as u64;
        if let Some(captured) = timestamp {
            report
                .latencies_ns
                .push(unix_nanos().saturating_sub(captured));
        }
        if frame_id <= report.last_frame_id {
            report.frame_ids_not_increasing += 1;
        }
        report.last_frame_id = frame_id;
    }
    report
}
