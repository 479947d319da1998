//! Counters and gauges, updated where things happen and read by `/metrics` and the status
//! object. Every figure is counted, never estimated.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

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
    /// Requests that presented a wrong token.
    pub auth_failures: AtomicU64,
    /// Requests refused with 429 because their address failed authentication too often.
    pub auth_throttled: AtomicU64,
    pub events_published: AtomicU64,
    pub events_stored: AtomicU64,
    pub last_event_id: AtomicU64,
    pub store_commits: AtomicU64,
    /// Time spent committing event batches (without their fsync), in nanoseconds: every
    /// event's latency to its clients includes it, since none is sent before it is committed.
    pub store_commit_nanos: AtomicU64,
    /// fsyncs of the store's WAL by the syncer thread, and the time they took (nanoseconds):
    /// what a producer's acknowledgement waits for after its event was fanned out.
    pub store_syncs: AtomicU64,
    pub store_sync_nanos: AtomicU64,
    /// Checkpoints (WAL copied into the database file) by the syncer thread.
    pub store_checkpoints: AtomicU64,
    pub store_errors: AtomicU64,
    pub sse_events_sent: AtomicU64,
    pub ws_events_sent: AtomicU64,
    pub clients_evicted: AtomicU64,
    /// An event client's socket was full, so its own thread took over sending to it.
    pub event_handoffs: AtomicU64,
    pub clients_rejected: AtomicU64,
    pub frames_captured: AtomicU64,
    /// Camera frames lost before publishing (the source was late, or sent a corrupt frame).
    pub frames_dropped: AtomicU64,
    /// Bytes held by finished clip files (what `max_clip_bytes` limits), set by the event
    /// writer as the store changes them.
    pub clip_bytes_stored: AtomicU64,
    /// Clip recordings finished and committed to the store.
    pub clips_recorded: AtomicU64,
    clients: [AtomicUsize; 3],
    started: Option<Instant>,
}

/// What `/metrics` shows of [`Metrics`], one entry per series, in the order they are printed.
pub const SERIES: &[Series<Metrics>] = &[
    Series::gauge(
        "porchlight_uptime_seconds",
        "Seconds since the server started.",
        |m, out| out.value(m.uptime_s()),
    ),
    Series::gauge(
        "porchlight_clients",
        "Streaming clients connected, by kind.",
        |m, out| {
            for kind in ClientKind::ALL {
                out.labelled("kind", kind.name(), count(m.clients(kind)));
            }
        },
    ),
    Series::gauge(
        "porchlight_connections_open",
        "TCP connections open.",
        |m, out| out.value(count(m.connections_open.load(Ordering::Relaxed))),
    ),
    Series::counter(
        "porchlight_http_requests_total",
        "HTTP requests answered.",
        |m, out| out.atomic(&m.http_requests),
    ),
    Series::counter(
        "porchlight_http_client_errors_total",
        "Requests answered with a 4xx status.",
        |m, out| out.atomic(&m.http_client_errors),
    ),
    Series::counter(
        "porchlight_http_server_errors_total",
        "Requests answered with a 5xx status.",
        |m, out| out.atomic(&m.http_server_errors),
    ),
    Series::counter(
        "porchlight_connections_accepted_total",
        "TCP connections accepted.",
        |m, out| out.atomic(&m.connections_accepted),
    ),
    Series::counter(
        "porchlight_connections_refused_total",
        "Connections refused with 503 (connection cap or no thread).",
        |m, out| out.atomic(&m.connections_refused),
    ),
    Series::counter(
        "porchlight_events_total",
        "Events stored and fanned out.",
        |m, out| out.atomic(&m.events_published),
    ),
    Series::counter(
        "porchlight_store_commits_total",
        "Event batches committed (events_total/commits is the group-commit batch size).",
        |m, out| out.atomic(&m.store_commits),
    ),
    Series::counter(
        "porchlight_store_commit_seconds_total",
        "Time spent committing events, without the fsync (each event reaches its clients after it; divided by store_commits_total: the mean).",
        |m, out| out.value(m.store_commit_nanos.load(Ordering::Relaxed) as f64 * 1e-9),
    ),
    Series::counter(
        "porchlight_store_syncs_total",
        "fsyncs of the event store, each for every commit before it (producers are acknowledged after it).",
        |m, out| out.atomic(&m.store_syncs),
    ),
    Series::counter(
        "porchlight_store_sync_seconds_total",
        "Time spent in those fsyncs (divided by store_syncs_total: the mean a producer's acknowledgement waits for the disk).",
        |m, out| out.value(m.store_sync_nanos.load(Ordering::Relaxed) as f64 * 1e-9),
    ),
    Series::counter(
        "porchlight_store_checkpoints_total",
        "Checkpoints of the event store's WAL into its database file, off the event writer's path.",
        |m, out| out.atomic(&m.store_checkpoints),
    ),
    Series::counter(
        "porchlight_store_errors_total",
        "Store transactions that failed.",
        |m, out| out.atomic(&m.store_errors),
    ),
    Series::counter(
        "porchlight_sse_events_sent_total",
        "Event blocks written to SSE clients.",
        |m, out| out.atomic(&m.sse_events_sent),
    ),
    Series::counter(
        "porchlight_ws_events_sent_total",
        "live_event messages written to WebSocket clients.",
        |m, out| out.atomic(&m.ws_events_sent),
    ),
    Series::counter(
        "porchlight_clients_evicted_total",
        "Streaming clients disconnected for falling behind.",
        |m, out| out.atomic(&m.clients_evicted),
    ),
    Series::counter(
        "porchlight_event_handoffs_total",
        "Times an event client's socket was full, so its own thread took over sending to it \
         from the event writer (it hands back once it has caught up).",
        |m, out| out.atomic(&m.event_handoffs),
    ),
    Series::counter(
        "porchlight_clients_rejected_total",
        "Streaming clients refused over their kind's limit.",
        |m, out| out.atomic(&m.clients_rejected),
    ),
    Series::counter(
        "porchlight_frames_captured_total",
        "Camera frames captured.",
        |m, out| out.atomic(&m.frames_captured),
    ),
    Series::counter(
        "porchlight_frames_dropped_total",
        "Camera frames lost before publishing (source late or frame corrupt).",
        |m, out| out.atomic(&m.frames_dropped),
    ),
    Series::counter(
        "porchlight_handler_panics_total",
        "Requests whose handler panicked (connection closed, everything it held released).",
        |m, out| out.atomic(&m.handler_panics),
    ),
    Series::counter(
        "porchlight_auth_failures_total",
        "Requests that presented a wrong token.",
        |m, out| out.atomic(&m.auth_failures),
    ),
    Series::counter(
        "porchlight_auth_throttled_total",
        "Requests refused with 429 after too many failed tokens from their address.",
        |m, out| out.atomic(&m.auth_throttled),
    ),
    Series::gauge(
        "porchlight_last_event_id",
        "Largest event id assigned.",
        |m, out| out.atomic(&m.last_event_id),
    ),
    Series::gauge(
        "porchlight_events_stored",
        "Events held by the store after retention.",
        |m, out| out.atomic(&m.events_stored),
    ),
    Series::gauge(
        "porchlight_clip_bytes_stored",
        "Bytes held by finished clip files (limited by max_clip_bytes).",
        |m, out| out.atomic(&m.clip_bytes_stored),
    ),
    Series::counter(
        "porchlight_clips_recorded_total",
        "Clip recordings finished and committed to the store.",
        |m, out| out.atomic(&m.clips_recorded),
    ),
];

/// A count as a sample value. Counts here are far below 2^53, where f64 is exact.
pub fn count(n: usize) -> f64 {
    n as f64
}

/// Prometheus's two kinds of series that porchlight uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SeriesKind {
    /// Only ever goes up (until a restart).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One series of the `/metrics` page, read from a `T` (a metrics struct): a table of these sits
/// next to the struct's fields, so the name, kind and help of a figure are written once, beside
/// the field that holds it.
pub struct Series<T> {
    pub name: &'static str,
    pub kind: SeriesKind,
    pub help: &'static str,
    /// Writes the series' samples from the struct.
    pub read: fn(&T, &mut Samples<'_>),
}

impl<T> Series<T> {
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        read: fn(&T, &mut Samples<'_>),
    ) -> Self {
        Series {
            name,
            kind: SeriesKind::Counter,
            help,
            read,
        }
    }

    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        read: fn(&T, &mut Samples<'_>),
    ) -> Self {
        Series {
            name,
            kind: SeriesKind::Gauge,
            help,
            read,
        }
    }
}

/// The sample lines of one series being written.
pub struct Samples<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Samples<'_> {
    /// An unlabelled sample.
    ///
    /// Not inlined (nor `labelled`): each of the ~60 series' read functions calls it, and an
    /// inlined copy of the formatting in each was ~2 KB of the binary for a call per series
    /// per `/metrics` scrape.
    #[inline(never)]
    pub fn value(&mut self, value: f64) {
        let _ = writeln!(self.out, "{} {value}", self.name);
    }

    /// An unlabelled sample read from a counter.
    pub fn atomic(&mut self, value: &AtomicU64) {
        // Counters stay far below 2^53, where f64 is exact.
        self.value(value.load(Ordering::Relaxed) as f64);
    }

    /// A sample with one label (`name{label="value"} sample`).
    #[inline(never)]
    pub fn labelled(&mut self, label: &str, label_value: &str, value: f64) {
        let _ = writeln!(
            self.out,
            "{}{{{label}=\"{label_value}\"}} {value}",
            self.name
        );
    }
}

/// The Prometheus text exposition (format 0.0.4), written series by series.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(4096),
        }
    }

    /// Writes every series of `table`, read from `source`.
    pub fn series<T>(&mut self, table: &[Series<T>], source: &T) -> &mut Self {
        for series in table {
            self.head(series.name, series.kind, series.help);
            (series.read)(
                source,
                &mut Samples {
                    out: &mut self.out,
                    name: series.name,
                },
            );
        }
        self
    }

    /// Writes one gauge measured outside the metrics structs (e.g. the process's memory).
    pub fn gauge(&mut self, name: &'static str, help: &str, value: f64) -> &mut Self {
        self.head(name, SeriesKind::Gauge, help);
        Samples {
            out: &mut self.out,
            name,
        }
        .value(value);
        self
    }

    fn head(&mut self, name: &str, kind: SeriesKind, help: &str) {
        let kind = match kind {
            SeriesKind::Counter => "counter",
            SeriesKind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

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
        let mut exposition = Exposition::new();
        exposition.series(SERIES, &metrics).gauge(
            "porchlight_rss_bytes",
            "Resident memory.",
            1234.0,
        );
        let text = exposition.finish();
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

    #[test]
    fn counters_end_in_total_and_names_are_unique() {
        for (i, series) in SERIES.iter().enumerate() {
            assert_eq!(
                series.kind == SeriesKind::Counter,
                series.name.ends_with("_total"),
                "{}",
                series.name
            );
            assert!(SERIES[i + 1..].iter().all(|s| s.name != series.name));
        }
    }
}
