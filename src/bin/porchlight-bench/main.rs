//! porchlight-bench: opens many streaming clients against a porchlight, triggers events at a set
//! rate, and prints what the clients saw (latency, loss, order) and what the server spent (CPU,
//! memory, threads, from /proc/PID). Loopback only; every phase is bounded in time.
//!
//! ```text
//! porchlight-bench [--sse N] [--ws M] [--mjpeg K [--quality Q] [--duration S]] [--commands C] [--events E] [--rate PER_S] [--json] [--timeout S]
//!                  [--mqtt] [--idle S] [--server-arg ARG]... [--server-cpus LIST --client-cpus LIST]
//!                  | --url HOST:PORT --pid PID [--token T]
//! porchlight-bench --hostile N [--guesses S] [--slowloris S] ...   (hostile.rs: issue 11's figures)
//! ```
//! `--mqtt` also starts mosquitto and a `mosquitto_sub`, points the server's MQTT bridge at
//! the broker, and reports trigger → subscriber latency; `--idle S` measures idle CPU over S
//! seconds (default 1).
//! Without `--url` it starts `porchlight` from the same folder as itself on a free loopback port
//! with a fresh data dir, and stops it at the end.

mod affinity;
mod hostile;
mod http;
mod mjpeg;
mod mqtt;
mod polled;
mod procstat;
mod record;
mod soak;
mod spawn;
mod sse;
mod stats;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

struct Options {
    sse: usize,
    ws: usize,
    mjpeg: usize,
    quality: String,
    duration: u64,
    commands: usize,
    soak: Option<u64>,
    churn: usize,
    sample_every: u64,
    events: usize,
    rate: f64,
    json: bool,
    timeout: Duration,
    url: Option<SocketAddr>,
    pid: Option<u32>,
    token: Option<String>,
    server_args: Vec<String>,
    mqtt: bool,
    idle_seconds: u64,
    hostile: Option<usize>,
    guesses: Option<f64>,
    slowloris: Option<f64>,
    /// CPUs for the server it starts, and for its own client threads.
    server_cpus: Option<Vec<usize>>,
    client_cpus: Option<Vec<usize>>,
    /// A thread per streaming client instead of one `epoll` thread for all.
    client_threads: bool,
}

const USAGE: &str = "usage: porchlight-bench [--sse N] [--ws M] [--mjpeg K [--quality Q] [--duration S]] [--commands C] [--soak S [--churn N] [--sample S]] [--events E] [--rate PER_S] [--json] \
[--timeout S] [--mqtt] [--idle S] [--hostile N] [--guesses S] [--slowloris S] [--server-arg ARG]... [--server-cpus LIST --client-cpus LIST] [--client-threads] | --url HOST:PORT --pid PID [--token T]";

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        sse: 50,
        ws: 0,
        mjpeg: 0,
        quality: "medium".into(),
        duration: 5,
        commands: 0,
        soak: None,
        churn: 20,
        sample_every: 10,
        events: 100,
        rate: 50.0,
        json: false,
        timeout: Duration::from_secs(60),
        url: None,
        pid: None,
        token: None,
        server_args: Vec::new(),
        mqtt: false,
        idle_seconds: 1,
        hostile: None,
        guesses: None,
        slowloris: None,
        server_cpus: None,
        client_cpus: None,
        client_threads: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--sse" => o.sse = value("--sse")?.parse().map_err(|_| "--sse: a number")?,
            "--ws" => o.ws = value("--ws")?.parse().map_err(|_| "--ws: a number")?,
            "--commands" => {
                o.commands = value("--commands")?
                    .parse()
                    .map_err(|_| "--commands: a number")?
            }
            "--soak" => o.soak = Some(value("--soak")?.parse().map_err(|_| "--soak: seconds")?),
            "--churn" => o.churn = value("--churn")?.parse().map_err(|_| "--churn: a number")?,
            "--sample" => {
                o.sample_every = value("--sample")?
                    .parse()
                    .map_err(|_| "--sample: seconds")?
            }
            "--mjpeg" => o.mjpeg = value("--mjpeg")?.parse().map_err(|_| "--mjpeg: a number")?,
            "--quality" => o.quality = value("--quality")?,
            "--duration" => {
                o.duration = value("--duration")?
                    .parse()
                    .map_err(|_| "--duration: seconds")?
            }
            "--events" => {
                o.events = value("--events")?
                    .parse()
                    .map_err(|_| "--events: a number")?
            }
            "--rate" => o.rate = value("--rate")?.parse().map_err(|_| "--rate: a number")?,
            "--timeout" => {
                o.timeout = Duration::from_secs(
                    value("--timeout")?
                        .parse()
                        .map_err(|_| "--timeout: seconds")?,
                )
            }
            "--json" => o.json = true,
            "--client-threads" => o.client_threads = true,
            "--mqtt" => o.mqtt = true,
            "--idle" => o.idle_seconds = value("--idle")?.parse().map_err(|_| "--idle: seconds")?,
            "--url" => {
                let text = value("--url")?;
                let addr: SocketAddr = text
                    .parse()
                    .map_err(|_| format!("--url {text}: HOST:PORT"))?;
                if !addr.ip().is_loopback() {
                    return Err(
                        "--url must be a loopback address: the benchmark never loads another host"
                            .into(),
                    );
                }
                o.url = Some(addr);
            }
            "--pid" => o.pid = Some(value("--pid")?.parse().map_err(|_| "--pid: a number")?),
            "--token" => o.token = Some(value("--token")?),
            "--server-arg" => o.server_args.push(value("--server-arg")?),
            "--hostile" => {
                o.hostile = Some(
                    value("--hostile")?
                        .parse()
                        .map_err(|_| "--hostile: a number")?,
                )
            }
            "--guesses" => {
                o.guesses = Some(
                    value("--guesses")?
                        .parse()
                        .map_err(|_| "--guesses: seconds")?,
                )
            }
            "--slowloris" => {
                o.slowloris = Some(
                    value("--slowloris")?
                        .parse()
                        .map_err(|_| "--slowloris: seconds")?,
                )
            }
            "--server-cpus" => {
                o.server_cpus = Some(affinity::parse_cpus(&value("--server-cpus")?)?)
            }
            "--client-cpus" => {
                o.client_cpus = Some(affinity::parse_cpus(&value("--client-cpus")?)?)
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.rate <= 0.0 {
        return Err("--rate must be above 0".into());
    }
    Ok(o)
}

/// Which kind of streaming client.
#[derive(Clone, Copy)]
enum Kind {
    Sse,
    Ws,
}

/// The streaming clients: one thread each (`--client-threads`, the soak), or all in one
/// thread's `epoll` (`polled.rs`, the default).
enum Clients {
    Threads(Vec<(Kind, std::thread::JoinHandle<record::ClientReport>)>),
    Polled(std::thread::JoinHandle<Vec<(Kind, record::ClientReport)>>),
}

impl Clients {
    fn all_finished(&self) -> bool {
        match self {
            Clients::Threads(threads) => threads.iter().all(|(_, c)| c.is_finished()),
            Clients::Polled(thread) => thread.is_finished(),
        }
    }

    /// The reports of the clients that finished (the others are left running; the process
    /// ends soon after). Call after `stop` is set: the polled thread then ends.
    fn take_finished(&mut self) -> Result<Vec<(Kind, record::ClientReport)>, String> {
        match std::mem::replace(self, Clients::Threads(Vec::new())) {
            Clients::Threads(threads) => threads
                .into_iter()
                .filter(|(_, c)| c.is_finished())
                .map(|(kind, c)| {
                    c.join()
                        .map(|report| (kind, report))
                        .map_err(|_| "a client thread panicked".to_string())
                })
                .collect(),
            Clients::Polled(thread) => thread
                .join()
                .map_err(|_| "the client thread panicked".into()),
        }
    }
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(message) = run(options) {
        eprintln!("porchlight-bench: {message}");
        std::process::exit(1);
    }
}

fn run(mut o: Options) -> Result<(), String> {
    let hostile_mode = o.hostile.is_some() || o.guesses.is_some() || o.slowloris.is_some();
    if hostile_mode && o.url.is_none() && o.token.is_none() {
        // The hostile figures are taken with tokens configured, as on a LAN.
        let token = format!("bench-admin-{}", std::process::id());
        o.server_args
            .extend(["--token".into(), format!("admin:{token}")]);
        // The attack must meet the defaults (max_connections_per_ip above all), not the
        // benchmark's own config that lifts the cap for its many clients on 127.0.0.1.
        o.server_args
            .extend(["--config".into(), "/dev/null".into()]);
        o.token = Some(token);
    }
    let mqtt = match o.mqtt {
        true if o.url.is_some() => return Err("--mqtt starts its own server: no --url".into()),
        true => Some(mqtt::start()?),
        false => None,
    };
    let mut server_args = o.server_args.clone();
    if let Some(mqtt) = &mqtt {
        server_args.push("--config".into());
        server_args.push(mqtt.config.to_string_lossy().into_owned());
    }
    let (spawned, addr, pid) = match o.url {
        Some(addr) => (None, addr, o.pid),
        None => {
            // The server inherits the CPUs this thread runs on when it is started.
            if let Some(cpus) = &o.server_cpus {
                affinity::pin_current_thread(cpus)?;
            }
            let (spawned, addr) = spawn::spawn_server(&server_args, "bench")?;
            let pid = spawned.child.id();
            (Some(spawned), addr, Some(pid))
        }
    };
    // Every client thread is started from this one, after this.
    if let Some(cpus) = &o.client_cpus {
        affinity::pin_current_thread(cpus)?;
    }
    eprintln!(
        "server at http://{addr} (pid {})",
        pid.map_or("unknown".into(), |p| p.to_string())
    );
    let proc_now = || pid.and_then(procstat::sample).map(|s| (Instant::now(), s));
    if hostile_mode {
        let mut report = serde_json::Map::new();
        if let Some(seconds) = o.guesses {
            report.insert("guesses".into(), hostile::guesses(addr, seconds));
        }
        if let Some(per_class) = o.hostile {
            let token = o
                .token
                .as_deref()
                .ok_or("--hostile needs --token with --url")?;
            report.insert("hostile".into(), hostile::run(addr, pid, token, per_class));
        }
        if let Some(seconds) = o.slowloris {
            let token = o
                .token
                .as_deref()
                .ok_or("--slowloris needs --token with --url")?;
            report.insert("slowloris".into(), hostile::slowloris(addr, token, seconds));
        }
        println!("{:#}", serde_json::Value::Object(report));
        drop(spawned);
        return Ok(());
    }

    // Idle figures: let start-up settle, then measure `--idle` seconds of idling.
    std::thread::sleep(Duration::from_millis(500));
    let idle_start = proc_now();
    std::thread::sleep(Duration::from_secs(o.idle_seconds.max(1)));
    let idle_end = proc_now();

    let token_query = o
        .token
        .as_ref()
        .map(|t| format!("&token={t}"))
        .unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    // How many events each client waits for: all of them, or (soak) unknown until the end.
    let expected = Arc::new(AtomicUsize::new(if o.soak.is_some() {
        usize::MAX
    } else {
        o.events
    }));
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let connect_started = Instant::now();
    let total = o.sse + o.ws;
    let mut clients = if o.client_threads || o.soak.is_some() {
        // The soak's clients live for minutes beside churning ones: a thread each.
        let mut threads = Vec::with_capacity(total);
        for (kind, count) in [(Kind::Sse, o.sse), (Kind::Ws, o.ws)] {
            for i in 0..count {
                let ready = ready_tx.clone();
                let stop = Arc::clone(&stop);
                let token_query = token_query.clone();
                let expected = Arc::clone(&expected);
                let handle = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || match kind {
                        Kind::Sse => sse::run(addr, i, &token_query, expected, ready, stop),
                        Kind::Ws => ws::receive(addr, i, &token_query, expected, ready, stop),
                    })
                    .map_err(|e| format!("cannot start client thread {i}: {e}"))?;
                threads.push((kind, handle));
            }
        }
        Clients::Threads(threads)
    } else {
        let (ready, stop, token_query) = (ready_tx.clone(), Arc::clone(&stop), token_query.clone());
        let counts = (o.sse, o.ws);
        let events = o.events;
        let handle = std::thread::Builder::new()
            .name("clients".into())
            .spawn(move || polled::run(addr, counts, &token_query, events, ready, stop))
            .map_err(|e| format!("cannot start the client thread: {e}"))?;
        Clients::Polled(handle)
    };
    let video_stop = Arc::new(AtomicBool::new(false));
    let mut viewers = Vec::with_capacity(o.mjpeg);
    for i in 0..o.mjpeg {
        let (ready, stop) = (ready_tx.clone(), Arc::clone(&video_stop));
        let (quality, token_query) = (o.quality.clone(), token_query.clone());
        let handle = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || mjpeg::watch(addr, i, &quality, &token_query, ready, stop))
            .map_err(|e| format!("cannot start viewer thread {i}: {e}"))?;
        viewers.push(handle);
    }
    let mut failed_to_connect = 0;
    for n in 0..total + o.mjpeg {
        match ready_rx.recv_timeout(o.timeout) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                failed_to_connect += 1;
                if failed_to_connect <= 3 {
                    eprintln!("client failed to connect: {err}");
                }
            }
            Err(_) => return Err("clients did not connect in time".into()),
        }
        if (n + 1) % 100 == 0 || n + 1 == total + o.mjpeg {
            eprintln!("connected {}/{} clients", n + 1, total + o.mjpeg);
        }
    }
    let connect_time = connect_started.elapsed();
    let loaded_idle = proc_now();
    if let Some(seconds) = o.soak {
        let options = soak::SoakOptions {
            seconds,
            churners: o.churn,
            sample_every: Duration::from_secs(o.sample_every.max(1)),
            rate: o.rate,
        };
        let (mut report, posted) = soak::run(addr, pid, o.token.clone(), &options)?;
        // One last event after the bar is set wakes every client that already has the rest.
        expected.store(posted as usize + 1, Ordering::Relaxed);
        let mut producer =
            http::KeepAlive::connect(addr, o.token.clone()).map_err(|e| e.to_string())?;
        let last = json!({"event_type": "bench", "data": {"seq": posted, "sent_ns": record::unix_nanos()}});
        producer
            .request("POST", "/api/events", last.to_string().as_bytes())
            .map_err(|e| format!("posting the last event: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while !clients.all_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        let mut lost = 0;
        let mut duplicated = 0;
        let mut stayed = 0;
        for (_, client) in clients.take_finished()? {
            lost += (posted as usize + 1).saturating_sub(client.received);
            duplicated += client.duplicates;
            stayed += 1;
        }
        report["clients_stayed"] = json!(total);
        report["clients_finished"] = json!(stayed);
        report["events_lost_by_stayers"] = json!(lost + (total - stayed) * (posted as usize + 1));
        report["events_duplicated_for_stayers"] = json!(duplicated);
        if o.json {
            println!("{report:#}");
        } else {
            let mut short = report.clone();
            short.as_object_mut().map(|m| m.remove("curve"));
            println!("{short:#}");
        }
        drop(spawned);
        return Ok(());
    }

    // Trigger the events at the set rate, each carrying its send time.
    let mut producer =
        http::KeepAlive::connect(addr, o.token.clone()).map_err(|e| e.to_string())?;
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    let load_start = proc_now();
    let started = Instant::now();
    let mut first_id = None;
    for seq in 0..o.events {
        let due = started + interval * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body =
            json!({"event_type": "bench", "data": {"seq": seq, "sent_ns": record::unix_nanos()}});
        let (status, reply) = producer
            .request("POST", "/api/events", body.to_string().as_bytes())
            .map_err(|e| format!("posting event {seq}: {e}"))?;
        if status != 201 {
            return Err(format!(
                "posting event {seq}: status {status}: {}",
                String::from_utf8_lossy(&reply)
            ));
        }
        if first_id.is_none() {
            let value: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
            first_id = value["id"].as_u64();
        }
        if (seq + 1) % 100 == 0 || seq + 1 == o.events {
            eprintln!("triggered {}/{} events", seq + 1, o.events);
        }
    }
    // Video viewers watch for at least --duration seconds of the load phase.
    let watch_until = started + Duration::from_secs(o.duration);
    if let Some(wait) = watch_until.checked_duration_since(Instant::now())
        && o.mjpeg > 0
    {
        std::thread::sleep(wait);
    }
    // Wait for the clients to finish (they stop when they have every event), bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !clients.all_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mqtt_report = mqtt
        .as_ref()
        .map(|m| m.report(o.events, Duration::from_secs(10)));
    let load_end = proc_now();
    let storing = store_commits(&mut producer);
    video_stop.store(true, Ordering::Relaxed);
    let video = summarise_viewers(viewers, &o.quality)?;

    // get_system_status round-trips, with every client still connected.
    let commands = match o.commands {
        0 => None,
        n => Some(stats::summarise(&mut ws::command_round_trips(
            addr,
            &token_query,
            n,
        )?)),
    };
    stop.store(true, Ordering::Relaxed);

    // Reconnect: a new client asking for everything after the first bench event's predecessor.
    let reconnect = first_id.map(|first| {
        let t = Instant::now();
        let (tx, _rx) = crossbeam_channel::unbounded();
        let query = format!("{token_query}&last_event_id={}", first - 1);
        let report = sse::run(
            addr,
            total,
            &query,
            Arc::new(AtomicUsize::new(o.events)),
            tx,
            Arc::new(AtomicBool::new(false)),
        );
        (t.elapsed(), report.received)
    });

    let mut sse_totals = record::KindTotals::default();
    let mut ws_totals = record::KindTotals::default();
    let finished_reports = clients.take_finished()?;
    let finished = finished_reports
        .iter()
        .filter(|(_, report)| report.received >= o.events || report.error.is_some())
        .count();
    for (kind, report) in finished_reports {
        match kind {
            Kind::Sse => sse_totals.add(report),
            Kind::Ws => ws_totals.add(report),
        }
    }
    let expected = total * o.events;
    let received = sse_totals.received + ws_totals.received;
    let cpu = |a: Option<(Instant, procstat::ProcSample)>,
               b: Option<(Instant, procstat::ProcSample)>| {
        a.zip(b).map(|(a, b)| procstat::cpu_percent(a, b))
    };
    let idle = idle_end.map(|s| s.1);
    let loaded = load_end.map(|s| s.1);
    let report = json!({
        "scenario": {"sse_clients": o.sse, "ws_clients": o.ws, "events": o.events, "rate_per_s": o.rate},
        "event_latency_sse": stats::summarise(&mut sse_totals.latencies_ns),
        "event_latency_ws": stats::summarise(&mut ws_totals.latencies_ns),
        "mqtt": mqtt_report.map(|mut r| json!({
            "event_latency": stats::summarise(&mut r.latencies_ns),
            "received": r.received,
            "lost": o.events.saturating_sub(r.received),
            "duplicated": r.duplicates,
            "out_of_order": r.out_of_order,
            "error": r.error,
        })),
        "command_round_trip": commands,
        "mjpeg": video,
        "events_expected": expected,
        "events_received": received,
        "events_lost": expected.saturating_sub(received),
        "events_duplicated": sse_totals.duplicates + ws_totals.duplicates,
        "events_out_of_order": sse_totals.out_of_order + ws_totals.out_of_order,
        "clients_unfinished": total - finished,
        "client_errors": sse_totals.errors + ws_totals.errors,
        "clients_failed_to_connect": failed_to_connect,
        "connect_all_s": connect_time.as_secs_f64(),
        "server": {
            "cpu_percent_idle": cpu(idle_start, idle_end),
            "cpu_percent_load": cpu(load_start, load_end),
            "rss_idle_bytes": idle.map(|s| s.rss_bytes),
            "rss_connected_bytes": loaded_idle.map(|s| s.1.rss_bytes),
            "rss_load_bytes": loaded.map(|s| s.rss_bytes),
            "rss_peak_bytes": loaded.map(|s| s.peak_rss_bytes),
            "threads_idle": idle.map(|s| s.threads),
            "threads_connected": loaded_idle.map(|s| s.1.threads),
            "threads_load": loaded.map(|s| s.threads),
        },
        "store": storing.map(|s| json!({
            "commits": s.commits,
            "seconds": s.commit_seconds,
            "mean_ms": mean_ms(s.commit_seconds, s.commits),
            "syncs": s.syncs,
            "sync_mean_ms": s.syncs.map(|n| mean_ms(s.sync_seconds.unwrap_or(0.0), n)),
        })),
        "reconnect_replay": reconnect.map(|(t, n)| json!({"seconds": t.as_secs_f64(), "events_replayed": n})),
    });
    if o.json {
        println!("{report:#}");
    } else {
        print_table(&report);
    }
    drop(spawned);
    Ok(())
}

fn mean_ms(seconds: f64, count: f64) -> f64 {
    if count > 0.0 {
        seconds / count * 1e3
    } else {
        0.0
    }
}

/// What the server's store did during the run, from `/metrics`.
struct Storing {
    commits: f64,
    commit_seconds: f64,
    /// Absent from servers whose commit included the fsync.
    syncs: Option<f64>,
    sync_seconds: Option<f64>,
}

/// The server's store commits and syncs and the seconds they took, from `/metrics` (absent
/// from servers older than the series).
fn store_commits(connection: &mut http::KeepAlive) -> Option<Storing> {
    let (status, body) = connection.request("GET", "/metrics", b"").ok()?;
    if status != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&body);
    let read = |name: &str| {
        text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
    };
    Some(Storing {
        commits: read("porchlight_store_commits_total")?,
        commit_seconds: read("porchlight_store_commit_seconds_total")?,
        syncs: read("porchlight_store_syncs_total"),
        sync_seconds: read("porchlight_store_sync_seconds_total"),
    })
}

/// Joins the viewers and summarises fps and capture → client latency.
fn summarise_viewers(
    viewers: Vec<std::thread::JoinHandle<mjpeg::ViewerReport>>,
    quality: &str,
) -> Result<serde_json::Value, String> {
    if viewers.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    let count = viewers.len();
    let (mut fps, mut latencies, mut frames, mut regressions, mut errors, mut bytes) =
        (Vec::new(), Vec::new(), 0, 0, 0, 0);
    for handle in viewers {
        let report = handle.join().map_err(|_| "a viewer thread panicked")?;
        fps.push(report.fps());
        frames += report.frames;
        bytes += report.bytes;
        regressions += report.frame_ids_not_increasing;
        errors += report.error.is_some() as usize;
        latencies.extend(report.latencies_ns);
    }
    let (min, max) = fps
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), f| (lo.min(*f), hi.max(*f)));
    Ok(json!({
        "viewers": count,
        "quality": quality,
        "fps_min": min,
        "fps_avg": fps.iter().sum::<f64>() / count as f64,
        "fps_max": max,
        "frames": frames,
        "bytes": bytes,
        "frame_id_regressions": regressions,
        "viewer_errors": errors,
        "capture_to_client_latency": stats::summarise(&mut latencies),
    }))
}

fn print_table(r: &serde_json::Value) {
    let mb = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("n/a".into(), |b| format!("{:.1} MB", b / 1e6))
    };
    let pct = |v: &serde_json::Value| v.as_f64().map_or("n/a".into(), |p| format!("{p:.1} %"));
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let sc = &r["scenario"];
    println!(
        "scenario            {} SSE + {} WebSocket clients, {} events at {}/s",
        sc["sse_clients"], sc["ws_clients"], sc["events"], sc["rate_per_s"]
    );
    for (name, key) in [
        ("event latency SSE", "event_latency_sse"),
        ("event latency WS", "event_latency_ws"),
        ("command round-trip", "command_round_trip"),
    ] {
        let l = &r[key];
        if l["count"].as_u64().unwrap_or(0) > 0 {
            println!(
                "{name:<20}p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} samples)",
                num(&l["p50_ms"]),
                num(&l["p95_ms"]),
                num(&l["p99_ms"]),
                num(&l["max_ms"]),
                l["count"]
            );
        }
    }
    if let Some(m) = r["mqtt"].as_object() {
        let l = &m["event_latency"];
        println!(
            "event latency MQTT  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} received, {} lost, {} duplicated, {} out of order)",
            num(&l["p50_ms"]),
            num(&l["p95_ms"]),
            num(&l["p99_ms"]),
            num(&l["max_ms"]),
            m["received"],
            m["lost"],
            m["duplicated"],
            m["out_of_order"]
        );
    }
    println!(
        "events              expected {}  received {}  lost {}  duplicated {}  out of order {}",
        r["events_expected"],
        r["events_received"],
        r["events_lost"],
        r["events_duplicated"],
        r["events_out_of_order"]
    );
    println!(
        "clients             unfinished {}  errors {}  failed to connect {}  all connected in {:.2} s",
        r["clients_unfinished"],
        r["client_errors"],
        r["clients_failed_to_connect"],
        num(&r["connect_all_s"])
    );
    if let Some(v) = r["mjpeg"].as_object() {
        let l = &v["capture_to_client_latency"];
        println!(
            "MJPEG               {} viewers of {}: fps min {:.1} avg {:.1} max {:.1}; {} frames; id regressions {}; errors {}",
            v["viewers"],
            v["quality"].as_str().unwrap_or("?"),
            num(&v["fps_min"]),
            num(&v["fps_avg"]),
            num(&v["fps_max"]),
            v["frames"],
            v["frame_id_regressions"],
            v["viewer_errors"]
        );
        println!(
            "video latency       capture → client p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            num(&l["p50_ms"]),
            num(&l["p99_ms"]),
            num(&l["max_ms"])
        );
    }
    let s = &r["server"];
    println!(
        "server CPU          idle {}  under load {} (of one core)",
        pct(&s["cpu_percent_idle"]),
        pct(&s["cpu_percent_load"])
    );
    println!(
        "server RSS          idle {}  clients connected {}  under load {}  peak {}",
        mb(&s["rss_idle_bytes"]),
        mb(&s["rss_connected_bytes"]),
        mb(&s["rss_load_bytes"]),
        mb(&s["rss_peak_bytes"])
    );
    println!(
        "server threads      idle {}  clients connected {}  under load {}",
        s["threads_idle"], s["threads_connected"], s["threads_load"]
    );
    if let Some(store) = r["store"].as_object() {
        match store["sync_mean_ms"].as_f64() {
            Some(sync_ms) => println!(
                "storing             {} commits, mean {:.2} ms each (in every event's latency); \
                 {} fsyncs, mean {:.2} ms each (in the producers' acknowledgements only)",
                store["commits"],
                num(&store["mean_ms"]),
                store["syncs"],
                sync_ms
            ),
            None => println!(
                "storing             {} commits, mean {:.2} ms each (transaction + fsync; in every event's latency)",
                store["commits"],
                num(&store["mean_ms"])
            ),
        }
    }
    if let Some(rc) = r["reconnect_replay"].as_object() {
        println!(
            "reconnect + replay  {:.1} ms for {} events",
            num(&rc["seconds"]) * 1e3,
            rc["events_replayed"]
        );
    }
}
