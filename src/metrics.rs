//! Counters and gauges, updated where things happen and read by `/metrics` and the status
//! object. Every figure is counted, never estimated.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::video::Quality;

/// Kinds of long-lived client, each with its own connection limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    Sse,
    WebSocket,
    Video,
}

impl ClientKind {
    pub const ALL: [ClientKind; 3] = [ClientKind::Sse, ClientKind::WebSocket, ClientKind::Video];

    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Sse => "sse",
            ClientKind::WebSocket => "websocket",
            ClientKind::Video => "video",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub http_client_errors: AtomicU64,
    pub http_server_errors: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Refused before a thread was given: over `max_connections` or a failed thread spawn.
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicUsize,
    /// Requests whose handler panicked (the connection was closed, its resources released).
    pub handler_panics: AtomicU64,
    /// Requests refused with 429 because their address failed authentication too often.
    pub auth_throttled: AtomicU64,
    /// Requests that presented a wrong token.
    pub auth_failures: AtomicU64,
    pub events_published: AtomicU64,
    pub events_stored: AtomicU64,
    pub last_event_id: AtomicU64,
    pub store_commits: AtomicU64,
    pub store_errors: AtomicU64,
    pub sse_events_sent: AtomicU64,
    pub ws_events_sent: AtomicU64,
    pub clients_evicted: AtomicU64,
    pub clients_rejected: AtomicU64,
    pub frames_captured: AtomicU64,
    /// Video frames written to clients.
    pub frames_sent: AtomicU64,
    /// Camera frames lost before publishing (the source was late, or sent a corrupt frame).
    pub frames_dropped: AtomicU64,
    pub video: VideoMetrics,
    clients: [AtomicUsize; 3],
    started: Option<Instant>,
}

/// Per-preset video work, indexed by `Quality::index()`. Times are summed so a benchmark can
/// divide them by the counts: the encode time per frame is measured where it happens.
#[derive(Default)]
pub struct VideoMetrics {
    /// JPEG encodes made for a preset (once per frame for all its viewers).
    pub encoded: [AtomicU64; 4],
    pub encode_nanos: [AtomicU64; 4],
    /// Frames a preset passed on untouched (its size equals the source's).
    pub passed_through: [AtomicU64; 4],
    /// Camera frames decoded (at most once per frame, however many presets need it).
    pub decoded: AtomicU64,
    pub decode_nanos: AtomicU64,
    /// Frames a video client never got because a newer one replaced them while it was still
    /// writing (a slow client skips to the newest).
    pub client_skipped_slow: AtomicU64,
    /// Frames not sent because they were identical to the one the client had.
    pub client_skipped_unchanged: AtomicU64,
}

impl VideoMetrics {
    pub fn add_encode(&self, quality: Quality, took: Duration) {
        let i = usize::from(quality.index());
        self.encoded[i].fetch_add(1, Ordering::Relaxed);
        self.encode_nanos[i].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn add_pass_through(&self, quality: Quality) {
        self.passed_through[usize::from(quality.index())].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_decode(&self, took: Duration) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.decode_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Labelled samples of one series: `({label="value"}, value)`.
type Samples = Vec<(String, f64)>;

/// Holds one client slot of a kind; the slot is freed when dropped.
pub struct ClientSlot<'a> {
    gauge: &'a AtomicUsize,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        self.gauge.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Some(Instant::now()),
            ..Default::default()
        }
    }

    pub fn uptime_s(&self) -> f64 {
        self.started.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    fn gauge(&self, kind: ClientKind) -> &AtomicUsize {
        &self.clients[kind as usize]
    }

    pub fn clients(&self, kind: ClientKind) -> usize {
        self.gauge(kind).load(Ordering::Relaxed)
    }

    /// Takes a slot if fewer than `limit` clients of `kind` are connected.
    pub fn admit(&self, kind: ClientKind, limit: usize) -> Option<ClientSlot<'_>> {
        let gauge = self.gauge(kind);
        let admitted = gauge
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            Some(ClientSlot { gauge })
        } else {
            self.clients_rejected.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, extra_gauges: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "porchlight_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            &[("", self.uptime_s())],
        );
        let clients: Vec<(String, f64)> = ClientKind::ALL
            .iter()
            .map(|k| {
                (
                    format!("{{kind=\"{}\"}}", k.name()),
                    self.clients(*k) as f64,
                )
            })
            .collect();
        let client_refs: Vec<(&str, f64)> = clients.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "porchlight_clients",
            "gauge",
            "Streaming clients connected, by kind.",
            &client_refs,
        );
        metric(
            "porchlight_connections_open",
            "gauge",
            "TCP connections open.",
            &[("", self.connections_open.load(Ordering::Relaxed) as f64)],
        );
        let counters: [(&str, &str, &AtomicU64); 18] = [
            (
                "porchlight_http_requests_total",
                "HTTP requests answered.",
                &self.http_requests,
            ),
            (
                "porchlight_http_client_errors_total",
                "Requests answered with a 4xx status.",
                &self.http_client_errors,
            ),
            (
                "porchlight_http_server_errors_total",
                "Requests answered with a 5xx status.",
                &self.http_server_errors,
            ),
            (
                "porchlight_connections_accepted_total",
                "TCP connections accepted.",
                &self.connections_accepted,
            ),
            (
                "porchlight_connections_refused_total",
                "Connections refused with 503 (connection cap or no thread).",
                &self.connections_refused,
            ),
            (
                "porchlight_events_total",
                "Events stored and fanned out.",
                &self.events_published,
            ),
            (
                "porchlight_store_commits_total",
                "Store transactions committed (one fsync each; events_total/commits is the group-commit batch size).",
                &self.store_commits,
            ),
            (
                "porchlight_store_errors_total",
                "Store transactions that failed.",
                &self.store_errors,
            ),
            (
                "porchlight_sse_events_sent_total",
                "Event blocks written to SSE clients.",
                &self.sse_events_sent,
            ),
            (
                "porchlight_ws_events_sent_total",
                "live_event messages written to WebSocket clients.",
                &self.ws_events_sent,
            ),
            (
                "porchlight_clients_evicted_total",
                "Streaming clients disconnected for falling behind.",
                &self.clients_evicted,
            ),
            (
                "porchlight_clients_rejected_total",
                "Streaming clients refused over their kind's limit.",
                &self.clients_rejected,
            ),
            (
                "porchlight_frames_captured_total",
                "Camera frames captured.",
                &self.frames_captured,
            ),
            (
                "porchlight_frames_dropped_total",
                "Camera frames lost before publishing (source late or frame corrupt).",
                &self.frames_dropped,
            ),
            (
                "porchlight_handler_panics_total",
                "Requests whose handler panicked (connection closed, everything it held released).",
                &self.handler_panics,
            ),
            (
                "porchlight_auth_failures_total",
                "Requests that presented a wrong token.",
                &self.auth_failures,
            ),
            (
                "porchlight_auth_throttled_total",
                "Requests refused with 429 after too many failed tokens from their address.",
                &self.auth_throttled,
            ),
            (
                "porchlight_last_event_id",
                "Largest event id assigned.",
                &self.last_event_id,
            ),
        ];
        for (name, help, value) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            metric(name, kind, help, &[("", load(value))]);
        }
        let video = &self.video;
        let per_kind = |value: &AtomicU64| vec![("{kind=\"video\"}".to_string(), load(value))];
        let per_preset = |values: &[AtomicU64; 4], scale: f64| -> Samples {
            Quality::ALL
                .iter()
                .map(|q| {
                    (
                        format!("{{quality=\"{}\"}}", q.name()),
                        load(&values[usize::from(q.index())]) * scale,
                    )
                })
                .collect()
        };
        let labelled: [(&str, &str, Samples); 8] = [
            (
                "porchlight_frames_sent_total",
                "Video frames written to clients, by client kind.",
                per_kind(&self.frames_sent),
            ),
            (
                "porchlight_client_frames_skipped_total",
                "Frames a slow client never got because a newer one replaced them.",
                per_kind(&video.client_skipped_slow),
            ),
            (
                "porchlight_client_frames_unchanged_total",
                "Frames not sent to a client because they equalled the one it had.",
                per_kind(&video.client_skipped_unchanged),
            ),
            (
                "porchlight_frames_encoded_total",
                "JPEG encodes made for a preset (once per frame for all its viewers).",
                per_preset(&video.encoded, 1.0),
            ),
            (
                "porchlight_encode_seconds_total",
                "Time spent resizing and encoding for a preset (decoding is counted apart).",
                per_preset(&video.encode_nanos, 1e-9),
            ),
            (
                "porchlight_frames_passed_through_total",
                "Frames a preset passed on untouched (same size as the source).",
                per_preset(&video.passed_through, 1.0),
            ),
            (
                "porchlight_frames_decoded_total",
                "Camera frames decoded (at most once each, shared by all presets).",
                vec![(String::new(), load(&video.decoded))],
            ),
            (
                "porchlight_decode_seconds_total",
                "Time spent decoding camera frames.",
                vec![(String::new(), load(&video.decode_nanos) * 1e-9)],
            ),
        ];
        for (name, help, samples) in &labelled {
            let refs: Vec<(&str, f64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            metric(name, "counter", help, &refs);
        }
        metric(
            "porchlight_events_stored",
            "gauge",
            "Events held by the store after retention.",
            &[("", load(&self.events_stored))],
        );
        for (name, help, value) in extra_gauges {
            metric(name, "gauge", help, &[("", *value)]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_respects_the_limit_and_frees_on_drop() {
        let metrics = Metrics::new();
        let a = metrics.admit(ClientKind::Sse, 2).unwrap();
        let _b = metrics.admit(ClientKind::Sse, 2).unwrap();
        assert!(metrics.admit(ClientKind::Sse, 2).is_none());
        assert!(metrics.admit(ClientKind::Video, 2).is_some());
        drop(a);
        assert!(metrics.admit(ClientKind::Sse, 2).is_some());
        assert_eq!(metrics.clients_rejected.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::new();
        metrics.events_published.fetch_add(3, Ordering::Relaxed);
        let text = metrics.render(&[("porchlight_rss_bytes", "Resident memory.", 1234.0)]);
        assert!(
            text.contains("# TYPE porchlight_events_total counter\nporchlight_events_total 3\n")
        );
        assert!(text.contains("porchlight_clients{kind=\"sse\"} 0\n"));
        assert!(text.contains("porchlight_rss_bytes 1234\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }
}
