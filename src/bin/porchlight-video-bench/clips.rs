//! `--clips`: what event clips cost while nobody watches. One server, no viewers; a window
//! with no recording, then a window while one long recording runs (one doorbell press with
//! `clip_post_s = 300`, so nothing else happens during it). For each window: the server's CPU
//! (of one core) and RSS from /proc/PID, and the CPU of its `clip-writer` and `camera` threads
//! from /proc/PID/task; for the recording, the bytes and frames written a second (the server's
//! own counters) and the pre-roll's size.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{fetch, metric, procstat, spawn};

/// Reads the CPU seconds of the server's threads named `name` (summed), from /proc.
fn thread_cpu_seconds(pid: u32, name: &str) -> Option<f64> {
    let mut total = None;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let ticks = porchlight::status::parse_stat_cpu_ticks(&stat)?;
        *total.get_or_insert(0.0) += ticks as f64 / procstat::ticks_per_second();
    }
    total
}

fn post(addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "POST {path}: {}",
            text.lines().next().unwrap_or("")
        ));
    }
    Ok(text)
}

/// One measuring window: CPU of the process and of two threads, and the counters' deltas.
fn window(addr: SocketAddr, pid: u32, seconds: Duration) -> Result<Value, String> {
    let m0 = fetch(addr, "/metrics")?;
    let p0 = procstat::sample(pid).map(|s| (Instant::now(), s));
    let w0 = thread_cpu_seconds(pid, "clip-writer");
    let c0 = thread_cpu_seconds(pid, "camera");
    std::thread::sleep(seconds);
    let w1 = thread_cpu_seconds(pid, "clip-writer");
    let c1 = thread_cpu_seconds(pid, "camera");
    let p1 = procstat::sample(pid).map(|s| (Instant::now(), s));
    let m1 = fetch(addr, "/metrics")?;
    let wall = seconds.as_secs_f64();
    let percent = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a) / wall * 100.0);
    let delta = |series: &str| metric(&m1, series) - metric(&m0, series);
    Ok(json!({
        "cpu_percent": p0.zip(p1).map(|(a, b)| procstat::cpu_percent(a, b)),
        "clip_writer_cpu_percent": percent(w0, w1),
        "camera_thread_cpu_percent": percent(c0, c1),
        "rss_bytes": p1.map(|s| s.1.rss_bytes),
        "clip_bytes_per_s": delta("porchlight_clip_bytes_written_total") / wall,
        "clip_frames_per_s": delta("porchlight_clip_frames_written_total") / wall,
        "camera_fps": delta("porchlight_frames_captured_total") / wall,
        "preroll_bytes": metric(&m1, "porchlight_clip_preroll_bytes"),
        "preroll_frames": metric(&m1, "porchlight_clip_preroll_frames"),
        "preroll_seconds": metric(&m1, "porchlight_clip_preroll_seconds"),
        "recording": metric(&m1, "porchlight_clip_recording"),
    }))
}

/// Runs the idle and recording windows for `camera`.
pub fn run(camera: &str, seconds: Duration, server_args: &[String]) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("porchlight-vbench-clips-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("clips.toml");
    // One press then records for the whole window (a recording may run up to clip_post_s).
    std::fs::write(&config, "clip_post_s = 300.0\n").map_err(|e| e.to_string())?;
    let mut args = vec![
        "--camera".to_string(),
        camera.to_string(),
        "--config".to_string(),
        config.to_string_lossy().into_owned(),
    ];
    args.extend(server_args.iter().cloned());
    let (spawned, addr) = spawn::spawn_server(&args, "vbench-clips")?;
    let pid = spawned.child.id();
    eprintln!(
        "server at http://{addr} (pid {pid}), camera {camera}, {:.0} s per window",
        seconds.as_secs_f64()
    );
    // Let the camera start and the pre-roll fill.
    std::thread::sleep(Duration::from_secs(5));
    eprintln!("measuring: no recording...");
    let idle = window(addr, pid, seconds)?;
    post(addr, "/api/trigger-doorbell")?;
    // Past the pre-roll's write, into the steady state.
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("measuring: recording...");
    let recording = window(addr, pid, seconds)?;
    if recording["recording"].as_f64() != Some(1.0) {
        return Err("the recording ended before the window did".into());
    }
    drop(spawned);
    let _ = std::fs::remove_dir_all(&dir);
    let cpu = |v: &Value| v["cpu_percent"].as_f64();
    Ok(json!({
        "camera": camera,
        "window_s": seconds.as_secs_f64(),
        "idle": idle,
        "recording": recording,
        "recording_cost_cpu_percent": cpu(&recording).zip(cpu(&idle)).map(|(r, i)| r - i),
    }))
}

pub fn print(r: &Value) {
    let num = |v: &Value, digits: usize| {
        v.as_f64()
            .map_or("-".to_string(), |x| format!("{x:.digits$}"))
    };
    let (idle, rec) = (&r["idle"], &r["recording"]);
    println!(
        "camera {}, {} s windows",
        r["camera"].as_str().unwrap_or(""),
        num(&r["window_s"], 0)
    );
    println!(
        "{:<10} {:>7} {:>12} {:>11} {:>8} {:>10} {:>9}",
        "window", "CPU %", "clip-writer %", "camera %", "RSS MB", "clip KB/s", "frames/s"
    );
    for (name, w) in [("idle", idle), ("recording", rec)] {
        println!(
            "{:<10} {:>7} {:>12} {:>11} {:>8} {:>10} {:>9}",
            name,
            num(&w["cpu_percent"], 2),
            num(&w["clip_writer_cpu_percent"], 2),
            num(&w["camera_thread_cpu_percent"], 2),
            num(&w["rss_bytes"].as_f64().map(|b| b / 1e6).into(), 1),
            num(&w["clip_bytes_per_s"].as_f64().map(|b| b / 1e3).into(), 1),
            num(&w["clip_frames_per_s"], 1),
        );
    }
    println!(
        "recording costs {} % of one core; pre-roll {} frames, {} KB over {} s",
        num(&r["recording_cost_cpu_percent"], 2),
        num(&idle["preroll_frames"], 0),
        num(&idle["preroll_bytes"].as_f64().map(|b| b / 1e3).into(), 0),
        num(&idle["preroll_seconds"], 2),
    );
}
