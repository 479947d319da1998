//! The motion thread: takes the camera's newest frame `motion_fps` times a second, gets its
//! decoded picture from the video pipeline (shared with the presets: a frame an encoder already
//! decoded is not decoded again), shrinks it to a luma grid, and asks the detector. Its
//! decisions become events: `motion_detected` with the frame of that moment, the score and the
//! box, and `motion_ended` with the duration and the id of the event it ends.
//!
//! Placeholder frames (the camera is down) are not looked at: the scene is forgotten and a
//! motion in progress ends, as it does at shutdown, so every `motion_detected` gets its
//! `motion_ended` (a home-automation "motion" sensor never stays on forever).

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{Decision, Detector, LumaGrid, MOTION_DETECTED, MOTION_ENDED, Settings};
use crate::camera::CameraSpec;
use crate::config::Config;
use crate::events::{EventDraft, EventHub};
use crate::latest::{Latest, Next};
use crate::shutdown::Shutdown;
use crate::video::rate::Decimator;
use crate::video::{Frame, Video};

/// How long one wait for a frame lasts before the shutdown flag is checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How many later frames a due frame may pass its turn to, looking for one an encoder decoded.
const MAX_DEFERRED: u8 = 2;
/// The `source` events name the camera as.
const SOURCE: &str = crate::events::builtin::CAMERA_SOURCE;

/// What the watcher needs from the rest of the server.
pub struct Wiring {
    pub camera: Latest<Frame>,
    pub video: Video,
    pub events: EventHub,
    pub shutdown: Shutdown,
}

/// Starts the motion thread if the configuration asks for it: `motion = "on"` and a camera
/// that films a scene. The synthetic test picture is never watched: its bars and box move all
/// the time by design, so it would be one motion that never ends.
pub fn start_configured(
    config: &Config,
    wiring: Wiring,
) -> std::io::Result<Option<JoinHandle<()>>> {
    if !config.motion {
        log::info!("motion detection off");
        return Ok(None);
    }
    if let CameraSpec::Synthetic { .. } = config.camera {
        log::info!(
            "motion detection not run on the synthetic test picture (it moves by design); \
             it watches v4l2: and file: cameras"
        );
        return Ok(None);
    }
    let settings = Settings {
        sensitivity: config.motion_sensitivity,
        zones: config.motion_zones.clone(),
        min_duration: Duration::from_secs_f64(config.motion_min_s),
        cooldown: Duration::from_secs_f64(config.motion_cooldown_s),
    };
    start(settings, config.motion_fps, wiring).map(Some)
}

/// Starts the motion thread, examining `fps` frames a second with `settings`.
pub fn start(settings: Settings, fps: f64, wiring: Wiring) -> std::io::Result<JoinHandle<()>> {
    log::info!(
        "motion detection on: {fps} frames/s, sensitivity {}, {}, reported after {} s, ended after {} s calm",
        settings.sensitivity,
        if settings.zones.is_empty() {
            "whole picture".to_string()
        } else {
            format!("{} zone(s)", settings.zones.len())
        },
        settings.min_duration.as_secs_f64(),
        settings.cooldown.as_secs_f64()
    );
    let watcher = Watcher {
        detector: Detector::new(settings),
        decimator: Decimator::new(Some(fps)),
        wiring,
        open_event: None,
    };
    std::thread::Builder::new()
        .name("motion".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            crate::priority::yield_to_events("motion");
            watcher.run()
        })
}

struct Watcher {
    detector: Detector,
    decimator: Decimator,
    wiring: Wiring,
    /// The stored `motion_detected` of the motion in progress (`None` if storing it failed).
    open_event: Option<u64>,
}

impl Watcher {
    fn run(mut self) {
        let mut last_seq = 0;
        // A frame that is due while an encoder is decoding frames for viewers: examined at the
        // next frame's arrival, from the encoder's decode if it took this one (encoders thin
        // frames to their own rate, so it may not have), else the next frame gets the chance.
        let mut waiting: Option<(Arc<Frame>, u8)> = None;
        let why = loop {
            let frame = match self.wiring.camera.wait_newer(last_seq, CHECK_EVERY) {
                Next::Item(seq, frame) => {
                    last_seq = seq;
                    frame
                }
                Next::Timeout if self.wiring.shutdown.is_triggered() => break "shutting down",
                Next::Timeout => continue,
                Next::Closed => break "the camera stopped",
            };
            if self.wiring.shutdown.is_triggered() {
                break "shutting down";
            }
            if !frame.live {
                // No picture of the scene: forget it; what moved has ended as far as we know.
                waiting = None;
                if let Some(decision) = self.detector.reset() {
                    self.announce(decision, &frame);
                }
                continue;
            }
            if let Some((due, deferred)) = waiting.take() {
                if self.wiring.video.is_decoded(due.number) || deferred >= MAX_DEFERRED {
                    self.examine(&due);
                } else {
                    waiting = Some((frame, deferred + 1));
                    continue;
                }
            }
            if !self.decimator.accept(frame.captured_at) {
                continue;
            }
            if self.wiring.video.decoding_near(frame.number, 3) {
                waiting = Some((frame, 0));
                continue;
            }
            self.examine(&frame);
        };
        if let Some(Decision::Ended { duration }) = self.detector.reset() {
            log::info!("motion ended: {why}");
            self.publish_ended(duration);
        }
    }

    fn examine(&mut self, frame: &Arc<Frame>) {
        let image = match self.wiring.video.decoded_frame(frame) {
            Ok(image) => image,
            Err(err) => {
                log::debug!("motion: frame {} skipped: {err}", frame.number);
                return;
            }
        };
        let started = Instant::now();
        let Some(grid) = LumaGrid::from_image(&image) else {
            return;
        };
        drop(image);
        let (_, decision) = self.detector.observe(frame.captured_at, &grid);
        self.wiring.video.metrics().add_motion(started.elapsed());
        if let Some(decision) = decision {
            self.announce(decision, frame);
        }
    }

    fn announce(&mut self, decision: Decision, frame: &Frame) {
        match decision {
            Decision::Detected { score, region } => {
                let data = object(json!({"score": score, "box": region}));
                let mut draft = EventDraft::new(MOTION_DETECTED, SOURCE, data);
                // The moment motion was confirmed, with the camera's own bytes (shared).
                draft.snapshot = Some(Arc::clone(&frame.jpeg));
                match self.wiring.events.publish(draft) {
                    Ok(event) => {
                        let id = event.event.id;
                        log::info!("motion detected (event {id}, score {score}, box {region:?})");
                        self.open_event = Some(id);
                    }
                    Err(err) => {
                        log::warn!("motion detected but not stored: {err}");
                        self.open_event = None;
                    }
                }
            }
            Decision::Ended { duration } => self.publish_ended(duration),
        }
    }

    fn publish_ended(&mut self, duration: Duration) {
        let Some(id) = self.open_event.take() else {
            log::info!("motion ended after {:.1} s", duration.as_secs_f64());
            return;
        };
        let seconds = (duration.as_secs_f64() * 1000.0).round() / 1000.0;
        let data = object(json!({"duration_s": seconds, "motion_event_id": id}));
        match self
            .wiring
            .events
            .publish(EventDraft::new(MOTION_ENDED, SOURCE, data))
        {
            Ok(event) => log::info!(
                "motion ended after {seconds} s (event {}, ends {id})",
                event.event.id
            ),
            Err(err) => log::warn!("motion ended but not stored: {err}"),
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
