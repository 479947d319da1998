//! porchlight-video-bench: measures what live video costs the server. For each preset and
//! viewer count it opens that many MJPEG viewers, measures over a fixed window, and prints the
//! server's CPU (of one core) and RSS from /proc/PID, the frame rate each viewer got, capture →
//! viewer latency from `X-Timestamp`, the encode and decode time per frame, and the frames the
//! motion detector examined and its time per frame (decoding apart), from the server's own
//! /metrics counters. Loopback only; every phase is bounded in time.
//!
//! ```text
//! porchlight-video-bench [--camera SPEC] [--quality Q,Q...] [--viewers N,N...]
//!                        [--seconds S] [--json] [--server-arg ARG]...
//! porchlight-video-bench --clips [--camera SPEC] [--seconds S] [--json]
//! porchlight-video-bench --motion-cost FILE.mjpeg [--frames N] [--motion-fps F] [--json]
//! ```
//! `--clips` measures event clips instead (see `clips.rs`): CPU with no viewer while nothing
//! records and while a recording runs, bytes written a second, and the pre-roll's size.
//! `--motion-cost` measures motion detection in-process, no server (see `motion_cost.rs`): the
//! thread CPU time of decoding, the grid and the detector per frame of a file.
//! It starts `porchlight` from the same folder as itself (build both with `--release`) on a
//! free loopback port with a fresh data dir, and stops it at the end.

#[path = "../porchlight-bench/procstat.rs"]
mod procstat;
#[path = "../porchlight-bench/spawn.rs"]
mod spawn;
#[path = "../porchlight-bench/stats.rs"]
mod stats;

mod clips;
mod motion_cost;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const USAGE: &str = "usage: porchlight-video-bench [--camera SPEC] [--quality Q,Q...] \
[--viewers N,N...] [--seconds S] [--json] [--server-arg ARG]...\n       \
porchlight-video-bench --clips [--camera SPEC] [--seconds S] [--json] [--server-arg ARG]...\n       \
porchlight-video-bench --motion-cost FILE.mjpeg [--frames N] [--motion-fps F] [--json]";

struct Options {
    camera: String,
    qualities: Vec<String>,
    viewers: Vec<usize>,
    window: Duration,
    json: bool,
    server_args: Vec<String>,
    clips: bool,
    /// `--motion-cost`: the file, how many of its frames, at what motion_fps.
    motion_cost: Option<String>,
    frames: usize,
    motion_fps: f64,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        camera: "synthetic:640x480@15".into(),
        qualities: vec!["medium".into(), "low".into()],
        viewers: vec![0, 1, 5, 20],
        window: Duration::from_secs(10),
        json: false,
        server_args: Vec::new(),
        clips: false,
        motion_cost: None,
        frames: 300,
        motion_fps: 5.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--camera" => o.camera = value("--camera")?,
            "--quality" => {
                o.qualities = value("--quality")?.split(',').map(str::to_string).collect()
            }
            "--viewers" => {
                o.viewers = value("--viewers")?
                    .split(',')
                    .map(|n| {
                        n.parse()
                            .map_err(|_| format!("--viewers: {n} is not a count"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => {
                let s: f64 = value("--seconds")?
                    .parse()
                    .map_err(|_| "--seconds: a number")?;
                if !(1.0..=600.0).contains(&s) {
                    return Err("--seconds: 1 to 600".into());
                }
                o.window = Duration::from_secs_f64(s);
            }
            "--json" => o.json = true,
            "--clips" => o.clips = true,
            "--motion-cost" => o.motion_cost = Some(value("--motion-cost")?),
            "--frames" => {
                o.frames = value("--frames")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or("--frames: 1 to 100000")?
            }
            "--motion-fps" => {
                o.motion_fps = value("--motion-fps")?
                    .parse()
                    .ok()
                    .filter(|f| (0.2..=30.0).contains(f))
                    .ok_or("--motion-fps: 0.2 to 30")?
            }
            "--server-arg" => o.server_args.push(value("--server-arg")?),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.viewers.iter().any(|&n| n > 200) {
        return Err("--viewers: at most 200 (the server's default limit is 32)".into());
    }
    Ok(o)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One GET on a fresh connection; the body as text.
fn fetch(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .ok_or_else(|| format!("GET {path}: no body"))
}

/// The value of one Prometheus series.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// What one viewer saw inside the measuring window.
#[derive(Default)]
struct Seen {
    frames: usize,
    latencies_ns: Vec<u64>,
}

/// One MJPEG viewer: reads parts until `stop`, recording those that arrive while `measuring`.
fn viewer(
    addr: SocketAddr,
    path: String,
    ready: crossbeam_channel::Sender<Result<(), String>>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let result = (|| -> std::io::Result<()> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        write!(
            reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
        )?;
        let mut line = String::new();
        // Response head.
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("closed in the response head"));
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut first = true;
        let mut jpeg = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let (mut length, mut stamp) = (0usize, 0f64);
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Err(std::io::Error::other("stream closed"));
                }
                let text = line.trim_end();
                if text.is_empty() && length > 0 {
                    break;
                }
                if let Some(v) = text.strip_prefix("Content-Length: ") {
                    length = v.parse().unwrap_or(0);
                } else if let Some(v) = text.strip_prefix("X-Timestamp: ") {
                    stamp = v.parse().unwrap_or(0.0);
                }
            }
            jpeg.resize(length + 2, 0);
            reader.read_exact(&mut jpeg)?;
            let arrived = unix_now();
            if first {
                first = false;
                ready.send(Ok(())).ok();
            }
            if measuring.load(Ordering::Relaxed) {
                let mut seen = seen.lock().unwrap();
                seen.frames += 1;
                seen.latencies_ns
                    .push(((arrived - stamp).max(0.0) * 1e9) as u64);
            }
        }
        Ok(())
    })();
    if let Err(err) = result {
        ready.send(Err(err.to_string())).ok();
    }
}

/// Runs one scenario: `count` viewers of `quality`, measured over the window.
fn scenario(
    addr: SocketAddr,
    pid: u32,
    quality: &str,
    count: usize,
    window: Duration,
) -> Result<Value, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
    let mut threads = Vec::new();
    let mut seen = Vec::new();
    for i in 0..count {
        let record = Arc::new(Mutex::new(Seen::default()));
        seen.push(Arc::clone(&record));
        let path = format!("/stream/video/bench-{i}?quality={quality}");
        let (ready, measuring, stop) = (ready_tx.clone(), measuring.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || viewer(addr, path, ready, measuring, stop, record))
                .map_err(|e| e.to_string())?,
        );
    }
    for _ in 0..count {
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(format!("a viewer failed: {err}")),
            Err(_) => return Err("viewers did not get a first frame within 20 s".into()),
        }
    }
    // Settle, then measure.
    std::thread::sleep(Duration::from_secs(1));
    let m0 = fetch(addr, "/metrics")?;
    let p0 = procstat::sample(pid).map(|s| (Instant::now(), s));
    measuring.store(true, Ordering::Relaxed);
    std::thread::sleep(window);
    measuring.store(false, Ordering::Relaxed);
    let p1 = procstat::sample(pid).map(|s| (Instant::now(), s));
    let m1 = fetch(addr, "/metrics")?;
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().map_err(|_| "a viewer thread panicked")?;
    }
    // Wait until the server has let every viewer go before the next scenario.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(
        &fetch(addr, "/metrics")?,
        "porchlight_clients{kind=\"video\"}",
    ) > 0.0
    {
        if Instant::now() > deadline {
            return Err("viewers still connected 20 s after closing".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let delta = |series: &str| metric(&m1, series) - metric(&m0, series);
    let label = format!("{{quality=\"{quality}\"}}");
    let encodes = delta(&format!("porchlight_frames_encoded_total{label}"));
    let encode_s = delta(&format!("porchlight_encode_seconds_total{label}"));
    let decodes = delta("porchlight_frames_decoded_total");
    let decode_s = delta("porchlight_decode_seconds_total");
    let captured = delta("porchlight_frames_captured_total");
    let examined = delta("porchlight_motion_frames_total");
    let motion_s = delta("porchlight_motion_seconds_total");
    let seconds = window.as_secs_f64();
    let mut latencies = Vec::new();
    let mut frames = Vec::new();
    for record in &seen {
        let mut record = record.lock().unwrap();
        frames.push(record.frames as f64 / seconds);
        latencies.append(&mut record.latencies_ns);
    }
    let per_frame_ms = |total_s: f64, count: f64| (count > 0.0).then(|| total_s / count * 1e3);
    Ok(json!({
        "quality": quality,
        "viewers": count,
        "cpu_percent": p0.zip(p1).map(|(a, b)| procstat::cpu_percent(a, b)),
        "rss_bytes": p1.map(|s| s.1.rss_bytes),
        "rss_peak_bytes": p1.map(|s| s.1.peak_rss_bytes),
        "threads": p1.map(|s| s.1.threads),
        "camera_fps": captured / seconds,
        "viewer_fps_min": frames.iter().copied().reduce(f64::min),
        "viewer_fps_mean": (!frames.is_empty()).then(|| frames.iter().sum::<f64>() / frames.len() as f64),
        "latency": stats::summarise(&mut latencies),
        "encodes_per_s": encodes / seconds,
        "encode_ms_per_frame": per_frame_ms(encode_s, encodes),
        "decodes_per_s": decodes / seconds,
        "decode_ms_per_frame": per_frame_ms(decode_s, decodes),
        "motion_frames_per_s": examined / seconds,
        "motion_ms_per_frame": per_frame_ms(motion_s, examined),
    }))
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(message) = run(&options) {
        eprintln!("porchlight-video-bench: {message}");
        std::process::exit(1);
    }
}

fn run(o: &Options) -> Result<(), String> {
    if let Some(path) = &o.motion_cost {
        let result = motion_cost::run(path, o.frames, o.motion_fps)?;
        if o.json {
            println!("{result:#}");
        } else {
            motion_cost::print(&result);
        }
        return Ok(());
    }
    if o.clips {
        let result = clips::run(&o.camera, o.window, &o.server_args)?;
        if o.json {
            println!("{result:#}");
        } else {
            clips::print(&result);
        }
        return Ok(());
    }
    let mut args = vec!["--camera".to_string(), o.camera.clone()];
    args.extend(o.server_args.iter().cloned());
    let (spawned, addr) = spawn::spawn_server(&args, "vbench")?;
    let pid = spawned.child.id();
    eprintln!(
        "server at http://{addr} (pid {pid}), camera {}, {:.0} s per scenario",
        o.camera,
        o.window.as_secs_f64()
    );
    // Let the camera start and the first frames settle.
    std::thread::sleep(Duration::from_secs(2));
    let mut rows = Vec::new();
    for quality in &o.qualities {
        for &count in &o.viewers {
            eprintln!("measuring {count} viewer(s) of {quality}...");
            let row = scenario(addr, pid, quality, count, o.window)?;
            if !o.json {
                print_row(&row, rows.is_empty());
            }
            rows.push(row);
        }
    }
    if o.json {
        println!(
            "{:#}",
            json!({"camera": o.camera, "window_s": o.window.as_secs_f64(), "scenarios": rows})
        );
    }
    drop(spawned);
    Ok(())
}

fn print_row(r: &Value, header: bool) {
    if header {
        println!(
            "{:<8} {:>7} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
            "quality",
            "viewers",
            "CPU %",
            "RSS MB",
            "viewer fps",
            "lat p50",
            "lat p99",
            "encodes/s",
            "encode ms",
            "decode ms",
            "motion/s",
            "motion ms"
        );
    }
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{x:.digits$}"))
    };
    let latency = &r["latency"];
    let count = latency["count"].as_u64().unwrap_or(0);
    let ms = |key: &str| {
        if count == 0 {
            "-".to_string()
        } else {
            format!("{:.1} ms", latency[key].as_f64().unwrap_or(0.0))
        }
    };
    println!(
        "{:<8} {:>7} {:>7} {:>8} {:>10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
        r["quality"].as_str().unwrap_or(""),
        r["viewers"].as_u64().unwrap_or(0),
        num(&r["cpu_percent"], 1),
        num(&r["rss_bytes"].as_f64().map(|b| b / 1e6).into(), 1),
        num(&r["viewer_fps_min"], 1),
        ms("p50_ms"),
        ms("p99_ms"),
        num(&r["encodes_per_s"], 1),
        num(&r["encode_ms_per_frame"], 2),
        num(&r["decode_ms_per_frame"], 2),
        num(&r["motion_frames_per_s"], 1),
        num(&r["motion_ms_per_frame"], 3),
    );
}
