//! Snapshots: `/api/snapshot.jpg` from the latest frame, and the picture of the moment stored
//! with doorbell and motion events (the right frame, surviving a restart, under retention).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::*;
use crate::video_client::*;

const CAMERA_640: &[&str] = &["--camera", "synthetic:640x480@15"];

fn snapshot_of(port: u16, event: &serde_json::Value) -> Vec<u8> {
    let url = event["snapshot_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot_url: {event}"));
    assert_eq!(url, format!("/api/events/{}/snapshot.jpg", id_of(event)));
    let resp = get(port, url, None);
    assert_eq!(resp.status, 200, "{url}: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some("image/jpeg"));
    resp.body
}

#[test]
fn a_doorbell_event_keeps_the_frame_of_the_moment_across_a_restart() {
    let data = TempDir::new("snapdata");
    let data_dir = data.path_str();
    let mut args = vec!["--data-dir", data_dir.as_str()];
    args.extend_from_slice(CAMERA_640);
    let mut server = Server::start(&args);
    let port = server.port();

    // A viewer of the camera's own frames tells which frame is current at any moment.
    let current = Arc::new(AtomicU64::new(0));
    let watcher = {
        let current = Arc::clone(&current);
        thread::spawn(move || {
            let mut stream = Mjpeg::connect(port, "/stream/video?quality=source");
            while let Ok(part) = stream.next_part(Duration::from_secs(2)) {
                current.store(part.frame_id, Ordering::SeqCst);
            }
        })
    };
    while current.load(Ordering::SeqCst) == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    let mut rings = Vec::new();
    for _ in 0..3 {
        let before = current.load(Ordering::SeqCst);
        let event = trigger(port, None);
        let after = current.load(Ordering::SeqCst);
        let jpeg = snapshot_of(port, &event);
        assert_jpeg(&jpeg, (640, 480));
        // The synthetic camera writes each frame's number into it.
        let shown = synthetic_frame_number(&jpeg);
        assert!(
            before.saturating_sub(1) <= shown && shown <= after + 1,
            "snapshot shows frame {shown}; frames {before}..{after} were current at the trigger"
        );
        rings.push((event, jpeg));
        thread::sleep(Duration::from_millis(150));
    }
    // Three moments, three different pictures.
    assert_ne!(rings[0].1, rings[1].1);
    assert_ne!(rings[1].1, rings[2].1);
    server.stop();
    watcher.join().unwrap();

    let server = Server::start(&args);
    for (event, jpeg) in &rings {
        let stored = get(
            server.port(),
            &format!("/api/events/{}", id_of(event)),
            None,
        )
        .json();
        assert_eq!(stored["snapshot_url"], event["snapshot_url"]);
        assert_eq!(
            &snapshot_of(server.port(), &stored),
            jpeg,
            "snapshot changed on restart"
        );
    }
}

#[test]
fn motion_posted_without_a_picture_gets_one_and_other_types_do_not() {
    let server = Server::start(CAMERA_640);
    let port = server.port();
    // Wait for the first frame (the stream gives it as soon as there is one).
    Mjpeg::connect(port, "/stream/video?quality=source").expect_part();
    let motion = post_event(
        port,
        None,
        "motion_detected",
        serde_json::json!({"zone": "porch"}),
    );
    assert_jpeg(&snapshot_of(port, &motion), (640, 480));
    let doorbell = post_event(port, None, "doorbell_pressed", serde_json::json!({}));
    assert_jpeg(&snapshot_of(port, &doorbell), (640, 480));
    let face = post_event(
        port,
        None,
        "face_recognized",
        serde_json::json!({"who": "x"}),
    );
    assert!(face["snapshot_url"].is_null(), "{face}");
    get(
        port,
        &format!("/api/events/{}/snapshot.jpg", id_of(&face)),
        None,
    )
    .assert_error(404);
}

#[test]
fn latest_snapshot_at_each_quality() {
    let server = Server::start(&["--camera", "synthetic:1280x720@10"]);
    let port = server.port();
    Mjpeg::connect(port, "/stream/video?quality=source").expect_part();
    let source = get(port, "/api/snapshot.jpg", None);
    assert_eq!(source.status, 200, "{}", source.text());
    assert_eq!(source.header("content-type"), Some("image/jpeg"));
    assert_eq!(source.header("cache-control"), Some("no-store"));
    assert_jpeg(&source.body, (1280, 720));
    // Untouched camera frame: its own number, as the X-Frame-Id header says.
    let id: u64 = source.header("x-frame-id").unwrap().parse().unwrap();
    assert_eq!(synthetic_frame_number(&source.body), id);
    let stamp: f64 = source.header("x-timestamp").unwrap().parse().unwrap();
    assert!((now_unix() - stamp).abs() < 2.0);
    for (quality, size) in [
        ("low", (320, 180)),
        ("medium", (640, 360)),
        ("high", (1280, 720)),
    ] {
        let resp = get(port, &format!("/api/snapshot.jpg?quality={quality}"), None);
        assert_eq!(resp.status, 200, "{quality}: {}", resp.text());
        assert_jpeg(&resp.body, size);
    }
    get(port, "/api/snapshot.jpg?quality=huge", None).assert_error(400);
}

#[test]
fn old_snapshots_give_way_under_max_snapshot_bytes() {
    // Synthetic 640x480 frames are 10-15 KB: room for two or so.
    let server = Server::with_config("max_snapshot_bytes = 30000\n", CAMERA_640);
    let port = server.port();
    Mjpeg::connect(port, "/stream/video?quality=source").expect_part();
    let mut kept = Vec::new();
    let events: Vec<_> = (0..6).map(|_| trigger(port, None)).collect();
    for event in &events {
        let stored = get(port, &format!("/api/events/{}", id_of(event)), None).json();
        if stored["snapshot_url"].is_string() {
            kept.push(snapshot_of(port, &stored).len());
        } else {
            get(
                port,
                &format!("/api/events/{}/snapshot.jpg", id_of(event)),
                None,
            )
            .assert_error(404);
        }
    }
    assert!(
        !kept.is_empty() && kept.len() < 6,
        "kept {} snapshots",
        kept.len()
    );
    assert!(kept.iter().sum::<usize>() <= 30_000);
    // The newest always has its picture.
    let newest = get(port, &format!("/api/events/{}", id_of(&events[5])), None).json();
    assert!(newest["snapshot_url"].is_string());
}
