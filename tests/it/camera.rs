//! Camera sources through the real binary: file sources made with ffmpeg (a directory of JPEGs
//! and one .mjpeg file), replayed untouched at their rate; a V4L2 device that does not exist
//! (clear error, `offline`, `camera_offline`, a server that keeps serving, streams that stay
//! open on the "NO LIVE VIDEO" placeholder).

use std::time::Duration;

use crate::common::*;
use crate::video_client::*;

/// Checks that consecutive parts are consecutive frames of `footage` (looping), byte for byte,
/// skipping exactly as many frames as the ids skip.
fn assert_replays(parts: &[Part], footage: &[Vec<u8>]) {
    let index_of = |jpeg: &Vec<u8>| {
        footage
            .iter()
            .position(|f| f == jpeg)
            .expect("a frame that is not one of the files, byte for byte")
    };
    let n = footage.len() as u64;
    for pair in parts.windows(2) {
        let (a, b) = (
            index_of(&pair[0].jpeg) as u64,
            index_of(&pair[1].jpeg) as u64,
        );
        let step = pair[1].frame_id - pair[0].frame_id;
        assert_eq!(
            (a + step) % n,
            b,
            "frame {} then {}",
            pair[0].frame_id,
            pair[1].frame_id
        );
    }
}

fn camera_status(port: u16) -> serde_json::Value {
    let status = get(port, "/api/status", None).json();
    assert_status_object(&status);
    status["camera"].clone()
}

#[test]
fn a_directory_of_jpegs_is_replayed_untouched_in_a_loop() {
    let dir = TempDir::new("frames");
    make_footage(&dir.join("%03d.jpg").to_string_lossy(), 12, (320, 240), 10);
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let footage: Vec<Vec<u8>> = names.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(footage.len(), 12);

    let spec = format!("file:{}@10", dir.path_str());
    let server = Server::start(&["--camera", &spec]);
    let mut stream = Mjpeg::connect(server.port(), "/stream/video?quality=source");
    stream.expect_part();
    // 30 parts: the 12 files more than twice round.
    let parts = stream.parts_spanning(Duration::from_secs(3));
    assert!(parts.len() >= 25, "{} parts", parts.len());
    assert_replays(&parts, &footage);
    assert_rate(rate(&parts), 10.0, "file source at @10");
    let camera = camera_status(server.port());
    assert_eq!(camera["state"], "streaming");
    assert_eq!(camera["source"], spec.as_str());
    assert_eq!(
        (camera["width"].as_u64(), camera["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(camera["fps_target"], 10);
    let measured = camera["fps_measured"].as_f64().unwrap();
    assert!((measured - 10.0).abs() <= 1.0, "fps_measured {measured}");
}

#[test]
fn an_mjpeg_file_is_replayed_frame_by_frame() {
    let dir = TempDir::new("clip");
    let clip = dir.join("clip.mjpeg");
    make_footage(&clip.to_string_lossy(), 9, (320, 240), 15);
    // The clip is JPEGs back to back: cut it at each start-of-image marker.
    let bytes = std::fs::read(&clip).unwrap();
    let starts: Vec<usize> = bytes
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0xFF, 0xD8, 0xFF])
        .map(|(i, _)| i)
        .collect();
    let footage: Vec<Vec<u8>> = starts
        .iter()
        .zip(starts.iter().skip(1).chain(std::iter::once(&bytes.len())))
        .map(|(&a, &b)| bytes[a..b].to_vec())
        .collect();
    assert_eq!(footage.len(), 9);

    let spec = format!("file:{}", clip.display());
    let server = Server::start(&["--camera", &spec]);
    let mut stream = Mjpeg::connect(server.port(), "/stream/video?quality=source");
    stream.expect_part();
    let parts = stream.parts_spanning(Duration::from_secs(2));
    assert_replays(&parts, &footage);
    // Without @FPS a file plays at 15 fps.
    assert_rate(rate(&parts), 15.0, "file source at the default rate");
    // A preset whose size equals the footage's passes the frames through as they are.
    let mut low = Mjpeg::connect(server.port(), "/stream/video?quality=low");
    let part = low.expect_part();
    assert!(
        footage.contains(&part.jpeg),
        "low re-encoded a frame it could pass through"
    );
}

#[test]
fn a_missing_v4l2_device_is_offline_with_an_event_and_the_server_keeps_serving() {
    let server = Server::start(&["--camera", "v4l2:/dev/video-porchlight-test"]);
    let port = server.port();

    // The camera_offline event is stored and replayable (it may have been stored just
    // before the listening line: replay from 0).
    let mut events = Sse::connect(port, "/stream/events?last_event_id=0");
    let offline = events.expect_event();
    assert_eq!(offline.name(), "camera_offline");
    let event = offline.json();
    assert_eq!(event["source"], "camera");
    assert_eq!(event["data"]["source"], "v4l2:/dev/video-porchlight-test");
    assert!(
        event["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("no such device")
    );
    // One clear line in the log naming the device and what to check.
    wait_log(
        &server,
        &["/dev/video-porchlight-test", "no such device"],
        IO_TIMEOUT,
    );

    let camera = camera_status(port);
    assert_eq!(camera["state"], "offline", "{camera}");
    assert!(
        camera["error"]
            .as_str()
            .is_some_and(|e| e.contains("no such device")),
        "{camera}"
    );
    assert_eq!(camera["fps_measured"], 0.0);
    assert_eq!(camera["frames_captured"], 0);

    // No live frame: 503 JSON for a snapshot, no picture on a doorbell event.
    let snapshot = get(port, "/api/snapshot.jpg", None);
    snapshot.assert_error(503);
    assert!(
        snapshot.json()["message"]
            .as_str()
            .unwrap()
            .contains("offline")
    );
    let rung = trigger(port, None);
    assert!(rung["snapshot_url"].is_null(), "{rung}");

    // A viewer stays connected and sees the placeholder, about once a second.
    let mut stream = Mjpeg::connect(port, "/stream/video?quality=low");
    let first = stream.expect_part();
    let second = stream.expect_part();
    let third = stream.expect_part();
    assert!(first.frame_id < second.frame_id && second.frame_id < third.frame_id);
    assert_jpeg(&first.jpeg, (320, 240));
    let gap = third.timestamp - first.timestamp;
    assert!(
        (1.5..3.0).contains(&gap),
        "placeholders {gap:.2} s apart over two"
    );

    // Retries do not repeat the event for the same outage.
    let more = events.next_event(Duration::from_millis(1500));
    assert!(
        more.as_ref().map_or(true, |b| b.name() != "camera_offline"),
        "camera_offline announced twice: {more:?}"
    );
}

/// `--camera` naming something that is not a camera: a character device that answers no
/// V4L2 ioctl (/dev/null) and a regular file. Each is a clear `offline` reason in the status
/// and the `camera_offline` event, never a capture thread stuck asking it; the server serves.
#[test]
fn a_v4l2_path_that_is_not_a_camera_is_offline_with_the_reason() {
    let dir = TempDir::new("not-a-camera");
    let file = dir.write("video0", "a regular file");
    for (device, reason) in [
        ("/dev/null".to_string(), "not a V4L2 device"),
        (
            file.display().to_string(),
            "not a camera device (a regular file)",
        ),
    ] {
        let spec = format!("v4l2:{device}");
        let server = Server::start(&["--camera", &spec]);
        let port = server.port();
        let mut events = Sse::connect(port, "/stream/events?last_event_id=0");
        let offline = events.expect_event();
        assert_eq!(offline.name(), "camera_offline");
        let event = offline.json();
        assert_eq!(event["data"]["source"], spec.as_str());
        let said = event["data"]["reason"].as_str().unwrap().to_string();
        assert!(said.starts_with(&format!("{device}: {reason}")), "{said}");
        let camera = camera_status(port);
        assert_eq!(camera["state"], "offline", "{camera}");
        assert_eq!(camera["error"], said.as_str(), "{camera}");
        wait_log(&server, &[&device, reason], IO_TIMEOUT);
        assert_eq!(trigger(port, None)["event_type"], "doorbell_pressed");
    }
}

/// A camera that fails mid-stream (its footage vanishes, like a USB camera pulled out): the
/// server says so with `camera_offline`, viewers stay connected on the placeholder, the rest
/// keeps working; when the footage is back the camera comes online again by itself.
#[test]
fn a_camera_failing_mid_stream_goes_offline_and_recovers() {
    let dir = TempDir::new("vanishing");
    let footage = dir.join("footage");
    std::fs::create_dir_all(&footage).unwrap();
    make_footage(
        &footage.join("%03d.jpg").to_string_lossy(),
        6,
        (320, 240),
        10,
    );
    let spec = format!("file:{}@10", footage.display());
    let server = Server::start(&["--camera", &spec]);
    let port = server.port();
    let mut events = Sse::connect(port, "/stream/events?types=camera_offline,camera_online");
    let mut viewer = Mjpeg::connect(port, "/stream/video?quality=source");
    let live = viewer.expect_part();
    assert_jpeg(&live.jpeg, (320, 240));

    // Pull the plug.
    let hidden = dir.join("hidden");
    std::fs::rename(&footage, &hidden).unwrap();
    let offline = events.expect_event();
    assert_eq!(offline.name(), "camera_offline");
    assert_eq!(camera_status(port)["state"], "offline");
    // The viewer is still connected and gets the placeholder; the rest of the server works.
    let placeholder = viewer.expect_part();
    assert!(placeholder.frame_id > live.frame_id);
    get(port, "/api/snapshot.jpg", None).assert_error(503);
    assert_eq!(trigger(port, None)["event_type"], "doorbell_pressed");

    // Plug it back in: the capture thread's retry finds it.
    std::fs::rename(&hidden, &footage).unwrap();
    let online = events.expect_event();
    assert_eq!(online.name(), "camera_online");
    assert_eq!(camera_status(port)["state"], "streaming");
    assert_eq!(get(port, "/api/snapshot.jpg", None).status, 200);
}
