//! Motion detection through the real binary, on footage made by ffmpeg and played by a `file:`
//! camera: strong sensor noise for a minute and brightness stepping up and down give no event;
//! a box crossing the frame gives exactly one `motion_detected` (its box where ffmpeg's decode
//! of the event's own picture finds the object) and one `motion_ended`, live over SSE and the
//! WebSocket alike; the same crossing
//! outside the configured zone gives nothing; a box that stops ends its motion after the
//! cooldown while it is still in the picture. Also: bad settings exit 2 naming the key, and
//! `motion = "off"` runs no thread and decodes nothing.
//!
//! The clip scenarios run side by side in one test (each its own server), so the test takes
//! as long as the longest clip (the minute of noise), not the sum.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// Clips are made and played at this rate.
const FPS: u32 = 15;
/// Every clip: a still scene (SMPTE bars) at this size.
const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;
/// The moving object: a white square of this side, its top at `BOX_Y`.
const BOX: u32 = 40;
const BOX_Y: u32 = 60;

/// Makes `seconds` of footage with ffmpeg: the bars, `overlay` (a filter chain applied to
/// them, with `[box]` a white square if it names it), then sensor noise of `noise` strength.
fn make_clip(dir: &Path, name: &str, seconds: u32, overlay: &str, noise: u32) -> PathBuf {
    let out = dir.join(format!("{name}.mjpeg"));
    let scene = format!("smptebars=s={WIDTH}x{HEIGHT}:r={FPS}");
    let square = format!("color=c=white:s={BOX}x{BOX}:r={FPS}");
    let graph = format!("[0]{overlay}[s];[s]noise=alls={noise}:allf=t+u");
    let seconds = seconds.to_string();
    let out_text = out.to_string_lossy().into_owned();
    let args = [
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &scene,
        "-f",
        "lavfi",
        "-i",
        &square,
        "-filter_complex",
        &graph,
        "-t",
        &seconds,
        "-q:v",
        "5",
        "-f",
        "mjpeg",
        &out_text,
    ];
    let made = run_program("ffmpeg", &args, Duration::from_secs(180));
    assert_eq!(made.code(), Some(0), "ffmpeg {name}: {}", made.stderr);
    out
}

/// A box entering from the left at `t0` s moving `speed` px/s, stopping at `stop_x` if given.
fn moving_box(t0: f64, speed: f64, stop_x: Option<u32>) -> String {
    let x = format!("-{BOX}+max(t-{t0}\\,0)*{speed}");
    let x = match stop_x {
        Some(stop) => format!("min({x}\\,{stop})"),
        None => x,
    };
    format!("[1]overlay=x='{x}':y={BOX_Y}:eval=frame")
}

/// A server playing `clip`, with the motion settings in `toml`.
fn serve(clip: &Path, toml: &str) -> Server {
    let camera = format!("file:{}@{FPS}", clip.display());
    Server::with_config(toml, &["--camera", &camera])
}

fn counter(server: &Server, series: &str) -> f64 {
    metric(&metrics(server.port(), None), series).unwrap_or(0.0)
}

/// Waits until the camera has played `seconds` of the clip (its frame count is the clip's
/// clock); fails if that takes far longer than real time.
fn play(server: &Server, seconds: f64) {
    let frames = seconds * f64::from(FPS);
    let patience = Duration::from_secs_f64(seconds * 2.0 + 30.0);
    let got = wait_metric(
        server.port(),
        None,
        "porchlight_frames_captured_total",
        patience,
        |n| n >= frames,
    );
    assert!(
        got.is_some_and(|n| n >= frames),
        "the camera played {got:?} of {frames} frames in {patience:?}"
    );
}

/// Every stored event, oldest first.
fn events(server: &Server) -> Vec<Value> {
    let mut all = all_events(server.port(), None);
    all.sort_by_key(id_of);
    all
}

fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or("?"))
        .collect()
}

/// Where the white square is in a JPEG, as `[x, y, w, h]` fractions, found by ffmpeg's own
/// decoder (not porchlight's): the columns and rows of the square's band that are nearly white.
fn white_square_in(jpeg: &[u8], dir: &Path) -> [f64; 4] {
    let path = dir.join("moment.jpg");
    std::fs::write(&path, jpeg).unwrap();
    let raw = dir.join("moment.gray");
    let (input, output) = (path.to_string_lossy(), raw.to_string_lossy());
    let args = [
        "-v", "error", "-y", "-i", &input, "-f", "rawvideo", "-pix_fmt", "gray", &output,
    ];
    let done = run_program("ffmpeg", &args, Duration::from_secs(60));
    assert_eq!(done.code(), Some(0), "{}", done.stderr);
    let gray = std::fs::read(&raw).unwrap();
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    assert_eq!(gray.len(), w * h);
    // Column means over the square's rows (inset against the noise's ragged edge).
    let rows = (BOX_Y + 5) as usize..(BOX_Y + BOX - 5) as usize;
    let white: Vec<usize> = (0..w)
        .filter(|&x| {
            let sum: usize = rows.clone().map(|y| usize::from(gray[y * w + x])).sum();
            sum / rows.len() >= 225
        })
        .collect();
    assert!(!white.is_empty(), "no white square in the event's picture");
    let (left, right) = (white[0], *white.last().unwrap());
    [
        left as f64 / w as f64,
        f64::from(BOX_Y) / h as f64,
        (right + 1 - left) as f64 / w as f64,
        f64::from(BOX) / h as f64,
    ]
}

fn bytes(port: u16, path: &str) -> Vec<u8> {
    let response = get(port, path, None);
    assert_eq!(response.status, 200, "GET {path}: {}", response.text());
    response.body
}

/// The next event on `sse` (within a minute: the clips are played in real time).
fn next_event(sse: &mut Sse, expected: &str) -> Value {
    let wait = Duration::from_secs(60);
    sse.next_event(wait)
        .unwrap_or_else(|end| panic!("no {expected} within {wait:?}: {end:?}"))
        .json()
}

fn check_detected(event: &Value) -> ([f64; 4], f64) {
    assert_event_shape(event);
    assert_eq!(event["event_type"], "motion_detected");
    assert_eq!(event["source"], "camera");
    assert!(event["snapshot_url"].is_string(), "{event}");
    let score = event["data"]["score"].as_f64().expect("a score");
    assert!(score > 0.0 && score <= 1.0, "{event}");
    let region: Vec<f64> = event["data"]["box"]
        .as_array()
        .expect("a box")
        .iter()
        .map(|v| v.as_f64().expect("box numbers"))
        .collect();
    let region: [f64; 4] = region.try_into().expect("box [x, y, w, h]");
    assert!(region.iter().all(|v| (0.0..=1.0).contains(v)), "{event}");
    assert!(region[0] + region[2] <= 1.0001 && region[1] + region[3] <= 1.0001);
    (region, score)
}

fn check_ended(event: &Value, detected: &Value) -> f64 {
    assert_event_shape(event);
    assert_eq!(event["event_type"], "motion_ended");
    assert_eq!(event["data"]["motion_event_id"], detected["id"], "{event}");
    let duration = event["data"]["duration_s"].as_f64().expect("duration_s");
    assert!(duration >= 0.0, "{event}");
    duration
}

type Ws = tungstenite::WebSocket<std::net::TcpStream>;

/// A WebSocket client on `/ws`, subscribed to `types`.
fn ws_subscribed(port: u16, types: &[&str]) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/ws?client_id=motion-test");
    let (mut ws, _) = tungstenite::client::client(url.as_str(), connect(port))
        .unwrap_or_else(|e| panic!("WebSocket handshake to {url}: {e}"));
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(ws_json(&mut ws)["type"], "connected");
    let subscribe = serde_json::json!({"type": "subscribe", "event_types": types});
    ws.send(tungstenite::Message::Text(subscribe.to_string()))
        .unwrap();
    assert_eq!(ws_json(&mut ws)["type"], "subscribed");
    ws
}

fn ws_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a WebSocket message") {
            tungstenite::Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

/// The next `live_event`'s event.
fn ws_live_event(ws: &mut Ws) -> Value {
    let message = ws_json(ws);
    assert_eq!(message["type"], "live_event", "{message}");
    message["event"].clone()
}

fn near(a: [f64; 4], b: [f64; 4], tolerance: f64) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance)
}

/// Noise for a minute: the whole clip played, the detector ran all along, no event.
fn noise_for_a_minute(dir: &Path) -> String {
    let clip = make_clip(dir, "noise", 60, "null", 40);
    let server = serve(&clip, "");
    play(&server, 59.5);
    let examined = counter(&server, "porchlight_motion_frames_total");
    assert!(examined >= 250.0, "the detector examined {examined} frames");
    let got = events(&server);
    assert!(got.is_empty(), "noise gave events: {got:?}");
    format!("noise 60 s: {examined} frames examined, no event")
}

/// Brightness stepping by a quarter of the range up and down every two seconds.
fn brightness_steps(dir: &Path) -> String {
    let steps = "eq=brightness='if(lt(mod(t\\,4)\\,2)\\,0.25\\,-0.25)':eval=frame";
    let clip = make_clip(dir, "brightness", 20, steps, 20);
    let server = serve(&clip, "");
    play(&server, 19.5);
    let examined = counter(&server, "porchlight_motion_frames_total");
    assert!(examined >= 80.0, "the detector examined {examined} frames");
    let got = events(&server);
    assert!(got.is_empty(), "brightness steps gave events: {got:?}");
    format!("brightness steps 20 s: {examined} frames examined, no event")
}

/// A box crossing the frame (in at 3 s, out by 6.6 s; the clip is 12 s, then loops): one
/// `motion_detected` with the square's box, delivered live over SSE, then one `motion_ended`.
fn box_crossing(dir: &Path) -> String {
    let clip = make_clip(dir, "crossing", 12, &moving_box(3.0, 100.0, None), 20);
    let server = serve(&clip, "motion_cooldown_s = 2\n");
    let mut sse = Sse::connect(server.port(), "/stream/events");
    let mut ws = ws_subscribed(server.port(), &["motion_detected", "motion_ended"]);
    let detected = next_event(&mut sse, "motion_detected");
    let (region, score) = check_detected(&detected);
    let ended = next_event(&mut sse, "motion_ended");
    let duration = check_ended(&ended, &detected);
    // The WebSocket subscriber got the same two, live.
    assert_eq!(ws_live_event(&mut ws), detected);
    assert_eq!(ws_live_event(&mut ws), ended);
    // Nothing else before the clip loops.
    play(&server, 11.5);
    let got = events(&server);
    assert_eq!(types(&got), ["motion_detected", "motion_ended"], "{got:#?}");
    assert_eq!(got[0], detected);
    // The box is where the square is in the event's own picture.
    let url = detected["snapshot_url"].as_str().unwrap();
    let square = white_square_in(&bytes(server.port(), url), dir);
    assert!(
        near(region, square, 0.05),
        "box {region:?}, square at {square:?}"
    );
    // In view from about 3.1 s to 6.5 s; reported after 0.5 s of it.
    assert!((2.0..=4.5).contains(&duration), "duration {duration}");
    format!(
        "crossing: one motion_detected (score {score}, box {region:?}; square at {square:?}), \
         one motion_ended after {duration} s"
    )
}

/// The same crossing with a zone over the bottom of the picture only: nothing.
fn crossing_outside_the_zone(dir: &Path) -> String {
    let clip = make_clip(dir, "crossing-zone", 12, &moving_box(3.0, 100.0, None), 20);
    let server = serve(&clip, "motion_zones = [[0.0, 0.6, 1.0, 0.4]]\n");
    play(&server, 11.5);
    let examined = counter(&server, "porchlight_motion_frames_total");
    assert!(examined >= 40.0, "the detector examined {examined} frames");
    let got = events(&server);
    assert!(got.is_empty(), "a crossing outside the zone gave {got:?}");
    format!("crossing outside the zone: {examined} frames examined, no event")
}

/// A box that comes in and stops at x = 140 (from 4.8 s on, to the end of the 40 s clip):
/// motion ends after the background learns it and the cooldown, while it is still there.
fn box_that_stops(dir: &Path) -> String {
    let clip = make_clip(dir, "stops", 40, &moving_box(3.0, 100.0, Some(140)), 20);
    let server = serve(&clip, "motion_cooldown_s = 2\n");
    let mut sse = Sse::connect(server.port(), "/stream/events");
    let detected = next_event(&mut sse, "motion_detected");
    check_detected(&detected);
    let ended = next_event(&mut sse, "motion_ended");
    let duration = check_ended(&ended, &detected);
    let played = counter(&server, "porchlight_frames_captured_total") / f64::from(FPS);
    assert!(played < 39.0, "ended only at {played} s of the clip");
    // The square is still in the picture, where it stopped.
    let square = white_square_in(&bytes(server.port(), "/api/snapshot.jpg"), dir);
    assert!(
        near(
            square,
            [140.0 / 320.0, 0.25, 0.125, BOX as f64 / 240.0],
            0.03
        ),
        "{square:?}"
    );
    format!(
        "stopping box: motion_detected, then motion_ended at {played:.1} s of the clip \
         (stopped at 4.8 s; duration {duration} s) with the box still in the picture"
    )
}

/// One clip's check: runs in its own folder, returns what it saw for the test's output.
type Scenario = fn(&Path) -> String;

#[test]
fn motion_on_footage() {
    let dir = TempDir::new("motion");
    let scenarios: [(&str, Scenario); 5] = [
        ("noise", noise_for_a_minute),
        ("brightness", brightness_steps),
        ("crossing", box_crossing),
        ("zone", crossing_outside_the_zone),
        ("stops", box_that_stops),
    ];
    let started = Instant::now();
    let runs: Vec<_> = scenarios
        .into_iter()
        .map(|(name, scenario)| {
            let dir = TempDir::new(name);
            (name, thread::spawn(move || scenario(dir.path())))
        })
        .collect();
    let mut failed = Vec::new();
    for (name, run) in runs {
        match run.join() {
            Ok(report) => println!("{report}"),
            Err(_) => failed.push(name),
        }
    }
    drop(dir);
    println!("motion scenarios took {:?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "failed: {failed:?} (their panics are above)"
    );
}

#[test]
fn bad_motion_settings_exit_2_naming_the_key() {
    let dir = TempDir::new("motion-config");
    for (toml, key, says) in [
        (
            "motion_sensitivity = 0",
            "motion_sensitivity",
            "out of range",
        ),
        (
            "motion_sensitivity = 101",
            "motion_sensitivity",
            "out of range",
        ),
        (
            "motion_zones = [[0.5, 0.5, 0.6, 0.1]]",
            "motion_zones",
            "outside the frame",
        ),
        (
            "motion_zones = [[-0.1, 0, 0.5, 0.5]]",
            "motion_zones",
            "outside the frame",
        ),
        ("motion_zones = [[0, 0, 0.5]]", "motion_zones", "4 numbers"),
        ("motion = \"maybe\"", "motion", "\"on\" or \"off\""),
        ("motion_fps = 0", "motion_fps", "out of range"),
        ("motion_min_s = -1", "motion_min_s", "out of range"),
        (
            "motion_cooldown_s = \"long\"",
            "motion_cooldown_s",
            "number",
        ),
    ] {
        let path = dir.write("bad.toml", toml);
        let path = path.to_string_lossy();
        for args in [
            vec!["--check-config", &*path],
            vec!["--config", &*path, "--listen", "127.0.0.1:0"],
        ] {
            let done = run_to_exit(&args, Duration::from_secs(20));
            assert_eq!(done.code(), Some(2), "{toml} {args:?}: {}", done.stderr);
            let lines = done.stderr_lines();
            assert_eq!(lines.len(), 1, "{toml}: {lines:?}");
            assert!(
                lines[0].contains(key) && lines[0].contains(says),
                "{toml}: {}",
                lines[0]
            );
        }
    }
}

fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let mut name = String::new();
            std::fs::File::open(task.ok()?.path().join("comm"))
                .ok()?
                .read_to_string(&mut name)
                .ok()?;
            Some(name.trim().to_string())
        })
        .collect()
}

#[test]
fn motion_off_runs_no_thread_and_decodes_nothing() {
    let dir = TempDir::new("motion-off");
    let clip = make_clip(dir.path(), "still", 4, "null", 20);
    for (toml, on) in [("motion = \"off\"\n", false), ("motion = \"on\"\n", true)] {
        let server = serve(&clip, toml);
        play(&server, 3.0);
        let examined = counter(&server, "porchlight_motion_frames_total");
        let decoded = counter(&server, "porchlight_frames_decoded_total");
        let names = thread_names(server.pid());
        let has_thread = names.iter().any(|n| n == "motion");
        if on {
            assert!(has_thread, "{names:?}");
            assert!(examined >= 5.0 && decoded >= 5.0, "{examined} {decoded}");
            // Nobody watches a preset: each decode was for the detector, one per frame.
            assert!(
                decoded <= examined + 1.0,
                "{decoded} decodes for {examined}"
            );
        } else {
            assert!(!has_thread, "{names:?}");
            assert_eq!((examined, decoded), (0.0, 0.0));
        }
    }
    // The synthetic test picture moves by design: it is not watched, and says so.
    let server = Server::start(&["--camera", "synthetic:320x240@15"]);
    assert!(!thread_names(server.pid()).iter().any(|n| n == "motion"));
    let log = server.stderr_with("synthetic");
    assert!(log.contains("synthetic"), "{log}");
}
