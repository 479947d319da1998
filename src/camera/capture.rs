//! The capture thread and its state machine, and [`Camera`], the handle everyone else holds.
//!
//! ```text
//!            open ok          first frame               no frame for stall_after
//!  starting ────────▶ (waiting) ─────────▶ streaming ───────────────────────────▶ stalled
//!     ▲  │ open fails                          ▲  frame again                        │
//!     │  ▼                                     └──────────────────────────────────────┤
//!     │ offline ◀── source error, or stalled for stall_grace more ◀───────────────────┘
//!     └── after a backoff (1 s, 2 s, 4 s … 30 s), or at once on restart
//! ```
//!
//! Going offline publishes `camera_offline` (once per outage) and coming back publishes
//! `camera_online`, both through the event pipeline, so they are stored, replayable and carry
//! the reason. While there is no live video the thread publishes a "NO LIVE VIDEO" placeholder
//! once a second into the same frame hub, so open streams stay open and show what is going on.

use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use serde_json::{Map, Value, json};

use super::CameraSpec;
use super::health::{Failure, Health, PLACEHOLDER_EVERY, Quiet, Timing};
use super::placeholder;
use super::source::{Captured, Mode, Source, SourceError};
use crate::clips::FrameRing;
use crate::events::{EventDraft, EventHub};
use crate::latest::Latest;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::video::Frame;
use crate::video::rate::FpsMeter;

/// Event types the capture thread publishes.
pub const CAMERA_OFFLINE: &str = "camera_offline";
pub const CAMERA_ONLINE: &str = "camera_online";

/// How long the capture thread waits for a source in one go, so that restart and shutdown are
/// noticed promptly even from a source that delivers one frame a second.
const POLL: Duration = Duration::from_millis(100);
/// Opens a source for a spec (the real [`super::open`], or a fake in tests).
pub type Opener = Box<dyn Fn(&CameraSpec) -> Result<Box<dyn Source>, SourceError> + Send>;
/// How long `restart` waits for the capture thread to acknowledge.
const RESTART_ACK: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraState {
    Starting,
    Streaming,
    Stalled,
    Offline,
}

impl CameraState {
    pub fn name(self) -> &'static str {
        match self {
            CameraState::Starting => "starting",
            CameraState::Streaming => "streaming",
            CameraState::Stalled => "stalled",
            CameraState::Offline => "offline",
        }
    }
}

/// What the status object reports, updated by the capture thread.
struct Status {
    state: CameraState,
    /// What the source granted when it last opened; `None` until one opened.
    mode: Option<Mode>,
    /// Why the camera is not streaming, in words for the user.
    error: Option<String>,
    meter: FpsMeter,
}

enum Command {
    /// Reopen the source; acknowledged once the state is `starting`.
    Restart(Sender<()>),
}

struct Shared {
    spec: CameraSpec,
    frames: Latest<Frame>,
    /// The clips' pre-roll, if clips are recorded: every live frame's `Arc` goes in too.
    history: Option<Arc<FrameRing>>,
    status: Mutex<Status>,
    metrics: Arc<Metrics>,
    commands: Sender<Command>,
}

/// The camera as the rest of the server sees it: frames, state, restart. Cheap to clone.
#[derive(Clone)]
pub struct Camera {
    shared: Arc<Shared>,
}

impl Camera {
    /// Starts the capture thread for `spec`. The source is opened on that thread, so a missing
    /// device makes the camera `offline` (with a `camera_offline` event), never a failed start.
    /// `history`: the clips' pre-roll ring, which gets every live frame (`None`: no clips).
    pub fn start(
        spec: CameraSpec,
        history: Option<Arc<FrameRing>>,
        events: EventHub,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> std::io::Result<(Camera, JoinHandle<()>)> {
        Camera::start_with(
            spec,
            Box::new(super::open),
            Timing::default(),
            history,
            events,
            metrics,
            shutdown,
        )
    }

    /// [`Camera::start`] with the source opener and delays given (tests drive fake sources).
    pub fn start_with(
        spec: CameraSpec,
        opener: Opener,
        timing: Timing,
        history: Option<Arc<FrameRing>>,
        events: EventHub,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> std::io::Result<(Camera, JoinHandle<()>)> {
        let (commands, command_rx) = crossbeam_channel::bounded(4);
        let shared = Arc::new(Shared {
            spec,
            frames: Latest::new(),
            history,
            status: Mutex::new(Status {
                state: CameraState::Starting,
                mode: None,
                error: None,
                meter: FpsMeter::new(Duration::from_secs(2)),
            }),
            metrics,
            commands,
        });
        let capture = Capture {
            shared: Arc::clone(&shared),
            opener,
            health: Health::new(timing),
            events,
            shutdown,
            commands: command_rx,
            next_number: 1,
        };
        let handle = std::thread::Builder::new()
            .name("camera".into())
            .stack_size(512 * 1024)
            .spawn(move || {
                crate::priority::yield_to_events("camera");
                capture.run()
            })?;
        Ok((Camera { shared }, handle))
    }

    /// The camera's frame hub: live frames, or placeholders while there is no live video.
    pub fn frames(&self) -> &Latest<Frame> {
        &self.shared.frames
    }

    /// The newest frame if the camera is streaming it now: what a snapshot shows.
    pub fn live_frame(&self) -> Option<Arc<Frame>> {
        if self.state() != CameraState::Streaming {
            return None;
        }
        self.shared
            .frames
            .current()
            .map(|(_, frame)| frame)
            .filter(|frame| frame.live)
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.shared.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> CameraState {
        self.status().state
    }

    /// Closes and reopens the source. Returns once the capture thread has taken the request
    /// and the state is `starting`.
    pub fn restart(&self) -> Result<(), String> {
        let (ack, acked) = crossbeam_channel::bounded(1);
        self.shared
            .commands
            .send_timeout(Command::Restart(ack), RESTART_ACK)
            .map_err(|_| "the camera thread is not running".to_string())?;
        acked
            .recv_timeout(RESTART_ACK)
            .map_err(|_| "the camera thread did not answer the restart".to_string())
    }

    /// The `camera` part of the status object, measured now.
    pub fn status_json(&self) -> Value {
        let metrics = &self.shared.metrics;
        let spec = &self.shared.spec;
        let mut status = self.status();
        let fps_measured = (status.meter.fps(Instant::now()) * 10.0).round() / 10.0;
        let mode = status.mode;
        let fps_target = mode.map(|m| m.fps).or(match spec {
            CameraSpec::Synthetic { fps, .. } | CameraSpec::File { fps, .. } => Some(*fps),
            CameraSpec::V4l2 { mode, .. } => mode.map(|(_, _, fps)| fps),
        });
        json!({
            "state": status.state.name(),
            "source": spec.to_string(),
            "width": mode.map(|m| m.width),
            "height": mode.map(|m| m.height),
            "fps_target": fps_target,
            "fps_measured": fps_measured,
            "frames_captured": metrics.frames_captured.load(std::sync::atomic::Ordering::Relaxed),
            "frames_dropped": metrics.frames_dropped.load(std::sync::atomic::Ordering::Relaxed),
            "error": status.error.clone(),
        })
    }
}

/// Why one streaming session of a source ended.
enum End {
    Restart,
    Shutdown,
    Failed(Failure),
}

/// How a wait between open attempts ended.
enum Waited {
    Elapsed,
    Restart,
    Shutdown,
}

/// State owned by the capture thread: the I/O. What to do when is [`Health`]'s to decide.
struct Capture {
    shared: Arc<Shared>,
    opener: Opener,
    health: Health,
    events: EventHub,
    shutdown: Shutdown,
    commands: Receiver<Command>,
    /// Number of the next frame published (live or placeholder): `X-Frame-Id`.
    next_number: u64,
}

impl Capture {
    fn run(mut self) {
        log::info!("camera {}: starting", self.shared.spec);
        while !self.shutdown.is_triggered() {
            self.health.opening();
            self.show_state();
            let failure = match (self.opener)(&self.shared.spec) {
                Err(reason) => Failure::Open(reason),
                Ok(source) => match self.stream(source) {
                    End::Restart => continue,
                    End::Shutdown => break,
                    End::Failed(failure) => failure,
                },
            };
            self.go_offline(failure);
            let delay = self.health.retry_delay();
            match self.wait_offline(delay) {
                Waited::Elapsed => {}
                Waited::Restart => {} // acknowledge_restart reset the backoff
                Waited::Shutdown => break,
            }
        }
        self.shared.frames.close();
        log::debug!("camera thread stopped");
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        self.shared.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the state machine's state into the status others read.
    fn show_state(&self) {
        self.status().state = self.health.state();
    }

    /// Takes a restart request if one is waiting: state `starting`, then the acknowledgement.
    fn take_restart(&mut self) -> bool {
        match self.commands.try_recv() {
            Ok(Command::Restart(ack)) => {
                self.acknowledge_restart(ack);
                true
            }
            Err(_) => false,
        }
    }

    fn acknowledge_restart(&mut self, ack: Sender<()>) {
        self.health.restarted();
        self.show_state();
        log::info!("camera {}: restart requested", self.shared.spec);
        ack.send(()).ok();
    }

    /// Reads frames until the source fails, stalls for too long, or a restart or shutdown
    /// comes, and says why.
    fn stream(&mut self, mut source: Box<dyn Source>) -> End {
        let mode = source.mode();
        self.status().mode = Some(mode);
        self.health.opened(Instant::now(), mode.fps);
        loop {
            if self.take_restart() {
                return End::Restart;
            }
            if self.shutdown.is_triggered() {
                return End::Shutdown;
            }
            match source.next_frame(self.next_number, POLL) {
                Ok(Some(captured)) => self.publish_live(captured),
                Ok(None) => match self.health.quiet(Instant::now()) {
                    Quiet::Waiting => {}
                    Quiet::Stalled { first } => {
                        if first {
                            self.show_state();
                            self.status().meter.clear();
                            log::warn!("camera {}: stalled (no frame arriving)", self.shared.spec);
                        }
                        self.placeholder_if_due("CAMERA STALLED");
                    }
                    Quiet::GiveUp(failure) => return End::Failed(failure),
                },
                Err(reason) => return End::Failed(Failure::Source(reason)),
            }
        }
    }

    fn publish_live(&mut self, captured: Captured) {
        let number = self.next_number;
        self.next_number += 1;
        let metrics = &self.shared.metrics;
        metrics
            .frames_captured
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if captured.missed > 0 {
            metrics
                .frames_dropped
                .fetch_add(captured.missed, std::sync::atomic::Ordering::Relaxed);
        }
        let at = captured.captured_at;
        let frame = Frame::new(
            number,
            captured.captured_unix,
            at,
            (captured.width, captured.height),
            captured.jpeg,
            true,
        );
        let arrived = self.health.frame(at);
        // The state first: whoever sees a live frame sees `streaming`.
        {
            let mut status = self.status();
            status.meter.record(at);
            status.error = None;
            status.state = self.health.state();
        }
        let frame = Arc::new(frame);
        self.shared.frames.publish(Arc::clone(&frame));
        // The clips' pre-roll keeps it too (after the publish, so the live frame is never later
        // for it).
        if let Some(history) = &self.shared.history {
            history.push(frame);
        }
        if arrived.started_streaming {
            let spec = self.shared.spec.to_string();
            log::info!(
                "camera {spec}: streaming {}x{}",
                captured.width,
                captured.height
            );
        }
        if let Some(offline) = arrived.outage_ended {
            let mut data = Map::new();
            data.insert("source".into(), Value::String(self.shared.spec.to_string()));
            data.insert("width".into(), captured.width.into());
            data.insert("height".into(), captured.height.into());
            data.insert(
                "offline_s".into(),
                json!(crate::clock::round_ms(offline.as_secs_f64())),
            );
            self.publish_event(CAMERA_ONLINE, data);
        }
    }

    fn go_offline(&mut self, failure: Failure) {
        let reason = failure.to_string();
        let offline = self.health.failed(Instant::now(), failure);
        {
            let mut status = self.status();
            status.state = self.health.state();
            status.error = Some(reason.clone());
            status.meter.clear();
        }
        let spec = self.shared.spec.to_string();
        if offline.new_cause {
            log::warn!("camera {spec}: offline: {reason}");
        } else {
            log::debug!("camera {spec}: still offline: {reason}");
        }
        if offline.announce {
            let mut data = Map::new();
            data.insert("source".into(), Value::String(spec));
            data.insert("reason".into(), Value::String(reason));
            self.publish_event(CAMERA_OFFLINE, data);
        }
        // Frames from before the outage are nobody's pre-roll; let their memory go.
        if let Some(history) = &self.shared.history {
            history.clear();
        }
        self.placeholder_if_due("CAMERA OFFLINE");
    }

    fn publish_event(&self, event_type: &str, data: Map<String, Value>) {
        if let Err(err) = self.events.publish(EventDraft::new(
            event_type,
            crate::events::builtin::CAMERA_SOURCE,
            data,
        )) {
            log::error!("could not store the {event_type} event: {err}");
        }
    }

    /// Waits `delay` before the next open attempt, showing the placeholder.
    fn wait_offline(&mut self, delay: Duration) -> Waited {
        let deadline = Instant::now() + delay;
        let stop = self.shutdown.signal();
        loop {
            self.placeholder_if_due("CAMERA OFFLINE");
            let now = Instant::now();
            if now >= deadline {
                return Waited::Elapsed;
            }
            let wait = (deadline - now).min(PLACEHOLDER_EVERY);
            select! {
                recv(self.commands) -> command => match command {
                    Ok(Command::Restart(ack)) => {
                        self.acknowledge_restart(ack);
                        return Waited::Restart;
                    }
                    Err(_) => return Waited::Shutdown,
                },
                recv(stop) -> _ => return Waited::Shutdown,
                default(wait) => {}
            }
        }
    }

    /// Publishes a placeholder frame if one is due.
    fn placeholder_if_due(&mut self, detail: &str) {
        if !self.health.placeholder_due(Instant::now()) {
            return;
        }
        let (width, height) = self.placeholder_size();
        let unix = crate::clock::unix_now();
        let clock = format!("{} UTC", &crate::clock::clock_text(unix)[..8]);
        match placeholder::render(width, height, &clock, detail) {
            Ok(jpeg) => {
                let number = self.next_number;
                self.next_number += 1;
                let frame = Frame::new(number, unix, Instant::now(), (width, height), jpeg, false);
                self.shared.frames.publish(Arc::new(frame));
            }
            Err(err) => log::error!("cannot draw the placeholder frame: {err}"),
        }
    }

    /// The size viewers last saw, else what the spec asks for, else 640x480.
    fn placeholder_size(&self) -> (u32, u32) {
        if let Some(mode) = self.status().mode {
            return (mode.width, mode.height);
        }
        match &self.shared.spec {
            CameraSpec::Synthetic { width, height, .. } => (*width, *height),
            CameraSpec::V4l2 {
                mode: Some((w, h, _)),
                ..
            } => (*w, *h),
            _ => (640, 480),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Retention, SharedEvent, Store, StoreReader};
    use crate::hub::Subscription;
    use crate::latest::Next;
    use crate::video::jpeg::{self, Image, Layout};
    use std::collections::VecDeque;
    use std::path::PathBuf;

    /// What a fake source does next.
    enum Step {
        Frame,
        Fail(&'static str),
    }

    struct FakeSource {
        steps: Receiver<Step>,
        jpeg: Vec<u8>,
    }

    impl Source for FakeSource {
        fn mode(&self) -> Mode {
            Mode {
                width: 32,
                height: 16,
                fps: 30,
            }
        }

        fn next_frame(
            &mut self,
            _number: u64,
            timeout: Duration,
        ) -> Result<Option<Captured>, SourceError> {
            match self.steps.recv_timeout(timeout) {
                Ok(Step::Frame) => Ok(Some(Captured {
                    jpeg: self.jpeg.clone(),
                    width: 32,
                    height: 16,
                    captured_unix: crate::clock::unix_now(),
                    captured_at: Instant::now(),
                    missed: 0,
                })),
                Ok(Step::Fail(why)) => Err(why.to_string().into()),
                Err(_) => Ok(None),
            }
        }
    }

    /// A camera whose opens follow a script: each open takes the next entry (a fake device fed
    /// through the returned sender, or an error); past the script, opens fail. Every open
    /// attempt is reported on `attempts`.
    struct Rig {
        camera: Camera,
        events: EventHub,
        subscription: Subscription<SharedEvent>,
        attempts: Receiver<()>,
        shutdown: Shutdown,
        thread: Option<JoinHandle<()>>,
        dir: PathBuf,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.shutdown.trigger();
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
            self.events.stop();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn rig(tag: &str, script: Vec<Result<Receiver<Step>, &'static str>>, timing: Timing) -> Rig {
        let dir =
            std::env::temp_dir().join(format!("porchlight-capture-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let metrics = Arc::new(Metrics::new());
        let retention = Retention {
            max_events: 1000,
            max_snapshot_bytes: 1 << 20,
            max_clip_bytes: 1 << 20,
        };
        let store = Store::open(&dir, retention);
        let reader = Arc::new(StoreReader::new(&dir));
        let (events, _writer) = EventHub::start(store, reader, Arc::clone(&metrics)).unwrap();
        let subscription = events.subscribe(64, None);
        let jpeg = jpeg::encode(&Image::filled(32, 16, Layout::Ycbcr, [90, 128, 128]), 80).unwrap();
        let script = Mutex::new(VecDeque::from(script));
        let (attempt_tx, attempts) = crossbeam_channel::unbounded();
        let opener: Opener = Box::new(move |_spec| {
            attempt_tx.send(()).ok();
            match script.lock().unwrap().pop_front() {
                Some(Ok(steps)) => Ok(Box::new(FakeSource {
                    steps,
                    jpeg: jpeg.clone(),
                }) as Box<dyn Source>),
                Some(Err(why)) => Err(SourceError::new(std::io::ErrorKind::NotFound, why)),
                None => Err(SourceError::new(std::io::ErrorKind::NotFound, "no device")),
            }
        });
        let shutdown = Shutdown::new();
        let spec = CameraSpec::parse("synthetic:32x16@30").unwrap();
        let (camera, thread) = Camera::start_with(
            spec,
            opener,
            timing,
            None,
            events.clone(),
            metrics,
            shutdown.clone(),
        )
        .unwrap();
        Rig {
            camera,
            events,
            subscription,
            attempts,
            shutdown,
            thread: Some(thread),
            dir,
        }
    }

    impl Rig {
        fn next_frame(&self, after: u64) -> Arc<Frame> {
            match self
                .camera
                .frames()
                .wait_newer(after, Duration::from_secs(10))
            {
                Next::Item(_, frame) => frame,
                other => panic!("no frame: {other:?}"),
            }
        }

        fn next_event(&self) -> SharedEvent {
            self.subscription
                .rx
                .recv_timeout(Duration::from_secs(15))
                .expect("an event")
        }

        fn attempt(&self, within: Duration) -> bool {
            self.attempts.recv_timeout(within).is_ok()
        }
    }

    fn quick() -> Timing {
        Timing {
            stall_grace: Duration::from_millis(300),
            backoff_first: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
        }
    }

    #[test]
    fn streaming_stalls_goes_offline_and_comes_back_with_events() {
        let (tx1, rx1) = crossbeam_channel::unbounded();
        let (tx2, rx2) = crossbeam_channel::unbounded();
        let rig = rig("cycle", vec![Ok(rx1), Ok(rx2)], quick());
        tx1.send(Step::Frame).unwrap();
        let first = rig.next_frame(0);
        assert!(first.live);
        assert_eq!(rig.camera.state(), CameraState::Streaming);
        assert!(rig.camera.live_frame().is_some());

        // No more frames: after the stall threshold the placeholder appears, state stalled.
        let stalled = rig.next_frame(first.number);
        assert!(!stalled.live);
        assert!(stalled.number > first.number);
        assert_eq!(rig.camera.state(), CameraState::Stalled);
        assert!(rig.camera.live_frame().is_none());

        // Past the grace the source is closed: offline, one camera_offline event.
        let offline = rig.next_event();
        assert_eq!(offline.event.event_type, CAMERA_OFFLINE);
        assert_eq!(offline.event.source, "camera");
        let reason = offline.event.data["reason"].as_str().unwrap();
        assert!(reason.contains("no frame"), "{reason}");

        // The reopen gets the second device; its frame brings the camera back online.
        tx2.send(Step::Frame).unwrap();
        let online = rig.next_event();
        assert_eq!(online.event.event_type, CAMERA_ONLINE);
        assert_eq!(rig.camera.state(), CameraState::Streaming);
        let status = rig.camera.status_json();
        assert_eq!(status["state"], "streaming");
        assert!(status["error"].is_null());
        assert_eq!(status["width"], 32);
    }

    #[test]
    fn a_missing_device_is_offline_once_and_restart_retries_at_once() {
        let timing = Timing {
            backoff_first: Duration::from_secs(60),
            backoff_max: Duration::from_secs(60),
            ..quick()
        };
        let rig = rig("missing", vec![Err("no such device")], timing);
        assert!(rig.attempt(Duration::from_secs(10)));
        let offline = rig.next_event();
        assert_eq!(offline.event.event_type, CAMERA_OFFLINE);
        assert_eq!(offline.event.data["reason"], "no such device");
        // The placeholder keeps streams alive.
        assert!(!rig.next_frame(0).live);
        let status = rig.camera.status_json();
        assert_eq!(status["state"], "offline");
        assert_eq!(status["error"], "no such device");
        assert_eq!(status["fps_measured"], 0.0);
        // The backoff is a minute; a restart reopens now, and the failure is not announced
        // again.
        assert!(!rig.attempt(Duration::from_millis(200)));
        rig.camera.restart().unwrap();
        assert!(rig.attempt(Duration::from_secs(5)));
        assert!(
            rig.subscription
                .rx
                .recv_timeout(Duration::from_millis(300))
                .is_err(),
            "a second camera_offline for the same outage"
        );
    }

    #[test]
    fn restart_reopens_a_streaming_source() {
        let (tx1, rx1) = crossbeam_channel::unbounded();
        let (tx2, rx2) = crossbeam_channel::unbounded();
        let rig = rig("restart", vec![Ok(rx1), Ok(rx2)], quick());
        assert!(rig.attempt(Duration::from_secs(10)));
        tx1.send(Step::Frame).unwrap();
        let before = rig.next_frame(0);
        rig.camera.restart().unwrap();
        // The restart closed the first device and opened the second.
        assert!(rig.attempt(Duration::from_secs(5)));
        assert!(
            tx1.send(Step::Frame).is_err(),
            "the old device is still open"
        );
        tx2.send(Step::Frame).unwrap();
        let after = rig.next_frame(before.number);
        assert!(after.live && after.number > before.number);
        // A restart is not an outage: no events.
        assert!(rig.subscription.rx.try_recv().is_err());
    }

    #[test]
    fn a_source_error_takes_the_camera_offline_at_once() {
        let (tx1, rx1) = crossbeam_channel::unbounded();
        let rig = rig("error", vec![Ok(rx1)], quick());
        tx1.send(Step::Frame).unwrap();
        rig.next_frame(0);
        tx1.send(Step::Fail("unplugged")).unwrap();
        let offline = rig.next_event();
        assert_eq!(offline.event.data["reason"], "unplugged");
        assert_eq!(rig.camera.state(), CameraState::Offline);
    }
}
