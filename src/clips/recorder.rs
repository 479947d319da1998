//! The clip recorder: which events get a clip, and the writer thread that records them.
//!
//! ```text
//!  capture thread ── Arc<Frame> ──▶ FrameRing (pre-roll + backlog)
//!                                        │
//!  EventHub writer ── plan / stored ──▶ Session (shared, one lock) ──▶ clip-writer thread
//!   (ClipSink: decides as the event        until / cap / motion           pre-roll, then live
//!    is stored, so its clip_url goes                                      frames → clips/N.mkv
//!    out with it)                      ◀── ClipUpdate (finished/failed) ──┘
//! ```
//!
//! **One recording at a time.** An event of a `clip_event_types` type, while the camera is
//! live, starts a recording from `clip_pre_s` before it (the pre-roll, already in the ring)
//! until `clip_post_s` after it. Another such event while it runs *joins* it: the recording
//! then runs until `clip_post_s` after that one, and the later event's clip is the same file,
//! replayed from `clip_pre_s` before the later event. So two presses 2 s apart give one
//! recording of `pre + 2 s + post`, serving two clips that share their frames; a burst of
//! presses costs one write per frame, not one per press. Motion from the built-in detector
//! extends the recording while it goes on (until its `motion_ended`, plus `clip_post_s`). A
//! recording never runs past [`MAX_AFTER_EVENT`] (or `clip_post_s`, if longer) after the event
//! that started it, nor past `max_clip_bytes`; an event that would need it to is given a new
//! recording.
//!
//! The decision is made on the event writer thread as the event is stored ([`ClipSink`]), under
//! the same lock the writer thread takes to end a recording, so an event never joins a
//! recording that has just ended. Nothing here waits for the disk on that thread.
//!
//! **Cost while idle:** the capture thread pushes each frame's `Arc` into the ring (a lock and
//! a pointer); the writer thread sleeps on its job queue. While recording, each frame is one
//! `writev` to the file, and an `fdatasync` once a second.
//!
//! **Disk trouble** stops recording, never the server: a full disk (or less than
//! [`MIN_FREE_BYTES`] left, kept for the event store) ends the recording with what it has,
//! logs a warning, stores one `system_alert` event, and refuses new clips for
//! [`DISK_PAUSE`] before trying again.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use serde_json::{Map, Value};

use super::file::{self, ClipWriter};
use super::metrics::ClipMetrics;
use super::ring::FrameRing;
use crate::camera::{Camera, CameraState};

/// The camera's state, as the recorder asks it (the capture thread's [`Camera`], or a stand-in
/// in tests).
pub type CameraStateFn = Box<dyn Fn() -> CameraState + Send + Sync>;
use crate::events::hub::ClipSink;
use crate::events::{ClipPlan, ClipUpdate, Event, EventDraft, EventHub};
use crate::shutdown::Shutdown;
use crate::video::Frame;

use crate::motion::{MOTION_DETECTED, MOTION_ENDED};

/// The `source` of the built-in motion detector's events (`motion/watcher.rs`): only its
/// motion is known to end with a `motion_ended`, so only it extends a recording while it goes
/// on, and only its own `motion_ended` ends it. A `motion_detected` posted by a producer
/// (source `api` or its own) is a moment, like a doorbell press, and a posted `motion_ended`
/// ends nothing here, whatever `motion_event_id` it names. (A posted event cannot claim this
/// source: `events::builtin`.)
pub const DETECTOR_SOURCE: &str = crate::events::builtin::CAMERA_SOURCE;
/// Event type of the alert stored when the disk stops recording.
pub const SYSTEM_ALERT: &str = "system_alert";

/// How long after the event that started it a recording may run (unless `clip_post_s` is
/// longer): the cap on extension by later events and motion.
pub const MAX_AFTER_EVENT: Duration = Duration::from_secs(120);
/// Free space the recorder leaves on the data dir's disk, for the event store (or a tenth of
/// the disk, on one smaller than 160 MiB).
pub const MIN_FREE_BYTES: u64 = 16 * 1024 * 1024;
/// After the disk refused, how long no new clip is started.
pub const DISK_PAUSE: Duration = Duration::from_secs(60);
/// How often a recording's file is made durable (`fdatasync`): what a power cut may lose.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How long the writer waits for a frame before looking at its deadline, the camera and
/// shutdown again.
const WAIT: Duration = Duration::from_millis(100);
/// Clip jobs queued for the writer at most (one per recording started; it takes them at once).
const JOB_QUEUE: usize = 64;
/// The camera counts as live for a new clip if its newest frame is at most this old.
const LIVE_WITHIN: Duration = Duration::from_secs(2);

/// What clips are recorded, from the configuration.
#[derive(Clone, Debug)]
pub struct ClipSettings {
    pub pre: Duration,
    pub post: Duration,
    pub event_types: Vec<String>,
    pub max_bytes: u64,
    /// The clip folder, `<data dir>/clips`.
    pub dir: PathBuf,
}

impl ClipSettings {
    /// Clips are recorded at all: some event type gets one, and there is a byte budget.
    pub fn enabled(&self) -> bool {
        !self.event_types.is_empty() && self.max_bytes > 0
    }

    /// The longest a recording runs after the event that started it.
    fn cap(&self) -> Duration {
        self.post.max(MAX_AFTER_EVENT)
    }
}

/// The recording being made, shared by the planner (event writer thread) and the clip writer.
#[derive(Debug)]
struct Session {
    /// The event that started it, once stored (0 while it is being stored).
    file_id: u64,
    /// `clip_post_s` after the last event that joined it.
    until: Instant,
    /// The latest it may run to.
    cap: Instant,
    /// The writer decided it is over: nothing joins it any more.
    ended: bool,
}

/// Motion from the detector, as far as events have told.
#[derive(Clone, Copy, Debug, Default)]
enum Motion {
    #[default]
    Still,
    /// Since the `motion_detected` event `id` at `since`.
    Ongoing { id: u64, since: Instant },
    /// The last motion ended at this moment.
    Ended(Instant),
}

#[derive(Debug, Default)]
struct State {
    session: Option<Session>,
    motion: Motion,
    /// No new clip before this (the disk refused).
    paused_until: Option<Instant>,
    /// A `system_alert` went out for the current disk trouble.
    alerted: bool,
}

impl State {
    /// When the current session ends, given the motion.
    fn session_end(&self, post: Duration) -> Option<Instant> {
        let session = self.session.as_ref()?;
        let end = match self.motion {
            Motion::Ongoing { .. } => session.cap,
            Motion::Ended(at) => session.until.max(at + post),
            Motion::Still => session.until,
        };
        Some(end.min(session.cap))
    }
}

/// Recordings being written, for readers that follow a clip as it grows.
#[derive(Default)]
struct Growing {
    /// file id → bytes written so far.
    files: Mutex<HashMap<u64, u64>>,
    changed: Condvar,
}

struct Shared {
    settings: ClipSettings,
    ring: Arc<FrameRing>,
    camera_state: CameraStateFn,
    state: Mutex<State>,
    growing: Growing,
    metrics: ClipMetrics,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn files(&self) -> MutexGuard<'_, HashMap<u64, u64>> {
        self.growing.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The recorder's handle: what the HTTP layer and metrics ask. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

/// What the planner tells the writer.
enum Job {
    /// Record the session started by event `file_id` (of `event_type`) at `at`.
    Start {
        file_id: u64,
        event_type: String,
        at: Instant,
    },
}

/// The monotonic moment of an event stamped `timestamp` (Unix seconds), no earlier than the
/// ring can reach back.
fn instant_of(timestamp: f64, keep: Duration) -> Instant {
    let now = Instant::now();
    let ago = (crate::clock::unix_now() - timestamp).clamp(0.0, keep.as_secs_f64());
    now.checked_sub(Duration::from_secs_f64(ago)).unwrap_or(now)
}

impl Recorder {
    /// Starts the clip writer thread, and hands the event hub the planner. `ring` must be the
    /// one the camera fills.
    pub fn start(
        settings: ClipSettings,
        ring: Arc<FrameRing>,
        camera: Camera,
        events: EventHub,
        shutdown: Shutdown,
    ) -> io::Result<(Recorder, JoinHandle<()>)> {
        std::fs::create_dir_all(&settings.dir)?;
        let shared = Arc::new(Shared {
            settings,
            ring,
            camera_state: Box::new(move || camera.state()),
            state: Mutex::new(State::default()),
            growing: Growing::default(),
            metrics: ClipMetrics::default(),
        });
        let (jobs, job_rx) = crossbeam_channel::bounded(JOB_QUEUE);
        let writer = Writer {
            shared: Arc::clone(&shared),
            jobs: job_rx,
            events: events.clone(),
            shutdown,
            cursor: 0,
            recording: None,
        };
        let handle = std::thread::Builder::new()
            .name("clip-writer".into())
            .stack_size(256 * 1024)
            .spawn(move || writer.run())?;
        events.set_clip_sink(Box::new(Planner {
            shared: Arc::clone(&shared),
            jobs,
            batch_new: false,
        }));
        let settings = &shared.settings;
        log::info!(
            "clips: from {} before to {} after each {} event, kept within {} MiB in {}",
            describe_seconds(settings.pre),
            describe_seconds(settings.post),
            settings.event_types.join("/"),
            settings.max_bytes / (1024 * 1024),
            settings.dir.display()
        );
        Ok((Recorder { shared }, handle))
    }

    /// The clip folder.
    pub fn dir(&self) -> &Path {
        &self.shared.settings.dir
    }

    pub fn settings(&self) -> &ClipSettings {
        &self.shared.settings
    }

    pub fn ring(&self) -> &FrameRing {
        &self.shared.ring
    }

    pub fn metrics(&self) -> &ClipMetrics {
        &self.shared.metrics
    }

    /// Whether recording `file_id` is being written now.
    pub fn is_growing(&self, file_id: u64) -> bool {
        self.shared.files().contains_key(&file_id)
    }

    /// Waits until recording `file_id` has grown past `len` bytes or stopped growing, at most
    /// `timeout`. Returns whether it is still being written.
    pub fn wait_growth(&self, file_id: u64, len: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut files = self.shared.files();
        loop {
            match files.get(&file_id) {
                None => return false,
                Some(&written) if written > len => return true,
                Some(_) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            files = self
                .shared
                .growing
                .changed
                .wait_timeout(files, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn describe_seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The planner, on the event writer thread.
struct Planner {
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    /// The batch being stored has planned a new recording (later clips in it join that one).
    batch_new: bool,
}

impl Planner {
    fn camera_is_live(&self) -> bool {
        (self.shared.camera_state)() == CameraState::Streaming
            && self
                .shared
                .ring
                .newest()
                .is_some_and(|f| f.captured_at.elapsed() <= LIVE_WITHIN)
    }
}

impl ClipSink for Planner {
    fn plan(&mut self, draft: &EventDraft) -> Option<ClipPlan> {
        let settings = &self.shared.settings;
        if !settings.event_types.contains(&draft.event_type) {
            return None;
        }
        let at = instant_of(draft.timestamp, self.shared.ring.keep());
        let mut state = self.shared.state();
        if state
            .paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            return None;
        }
        if !self.camera_is_live() {
            return None;
        }
        let post_end = at + settings.post;
        if let Some(session) = state.session.as_mut()
            && !session.ended
            && post_end <= session.cap
        {
            session.until = session.until.max(post_end);
            return Some(if self.batch_new {
                ClipPlan::JoinBatch
            } else {
                ClipPlan::Join(session.file_id)
            });
        }
        // A new recording; one still running (that this event would take past its cap) ends
        // when the writer sees it replaced.
        state.session = Some(Session {
            file_id: 0,
            until: post_end,
            cap: at + settings.cap(),
            ended: false,
        });
        self.batch_new = true;
        Some(ClipPlan::New)
    }

    fn stored(&mut self, event: &Event) -> bool {
        self.batch_new = false;
        let keep = self.shared.ring.keep();
        match event.event_type.as_str() {
            MOTION_DETECTED if event.source == DETECTOR_SOURCE => {
                self.shared.state().motion = Motion::Ongoing {
                    id: event.id,
                    since: instant_of(event.timestamp, keep),
                };
            }
            MOTION_ENDED if event.source == DETECTOR_SOURCE => {
                let mut state = self.shared.state();
                if let Motion::Ongoing { id, since } = state.motion
                    && event.data.get("motion_event_id").and_then(Value::as_u64) == Some(id)
                {
                    let lasted = event
                        .data
                        .get("duration_s")
                        .and_then(Value::as_f64)
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64);
                    let now = Instant::now();
                    let ended = lasted.and_then(|d| since.checked_add(d)).unwrap_or(now);
                    state.motion = Motion::Ended(ended.min(now));
                }
            }
            _ => {}
        }
        if event.clip_file != Some(event.id) {
            // No clip, or one joining a recording already under way: nothing to start.
            return true;
        }
        {
            let mut state = self.shared.state();
            match state.session.as_mut() {
                Some(session) if session.file_id == 0 => session.file_id = event.id,
                _ => return false,
            }
        }
        let job = Job::Start {
            file_id: event.id,
            event_type: event.event_type.clone(),
            at: instant_of(event.timestamp, keep),
        };
        match self.jobs.try_send(job) {
            Ok(()) => {
                // Readers may ask for the clip before the writer has taken the job.
                self.shared.files().insert(event.id, 0);
                true
            }
            Err(err) => {
                let why = match err {
                    TrySendError::Full(_) => "its queue is full",
                    TrySendError::Disconnected(_) => "it has stopped",
                };
                log::warn!("clip for event {} not recorded: {why}", event.id);
                self.shared.state().session = None;
                false
            }
        }
    }

    fn not_stored(&mut self) {
        self.batch_new = false;
        let mut state = self.shared.state();
        if state.session.as_ref().is_some_and(|s| s.file_id == 0) {
            state.session = None;
        }
    }
}

/// One recording being written.
struct Recording {
    file_id: u64,
    title: String,
    path: PathBuf,
    /// Frames captured before this belong to no clip of it.
    from: Instant,
    writer: Option<ClipWriter>,
    last_sync: Instant,
    started: Instant,
    lost: u64,
}

/// Why a recording ended.
enum Ended {
    Done,
    Superseded,
    CameraOffline,
    Budget,
    Shutdown,
    Disk(io::Error),
}

/// The clip writer thread.
struct Writer {
    shared: Arc<Shared>,
    jobs: Receiver<Job>,
    events: EventHub,
    shutdown: Shutdown,
    /// The number of the last frame handed to a recording (or skipped).
    cursor: u64,
    recording: Option<Recording>,
}

impl Writer {
    fn run(mut self) {
        let stop = self.shutdown.signal();
        loop {
            if self.recording.is_none() {
                select! {
                    recv(self.jobs) -> job => match job {
                        Ok(job) => self.start(job, false),
                        Err(_) => break,
                    },
                    recv(stop) -> _ => break,
                }
                continue;
            }
            let (frames, lost) = self.shared.ring.wait_after(self.cursor, WAIT);
            if lost > 0 {
                self.shared
                    .metrics
                    .frames_lost
                    .fetch_add(lost, Ordering::Relaxed);
                if let Some(recording) = self.recording.as_mut() {
                    recording.lost += lost;
                }
            }
            for frame in frames {
                self.cursor = frame.number;
                // A frame captured after the recording's end is not part of it.
                if let Some(why) = self.why_end(frame.captured_at) {
                    self.end(why);
                }
                if let Err(err) = self.write(&frame) {
                    self.end(Ended::Disk(err));
                }
            }
            if let Some(why) = self.why_end(Instant::now()) {
                self.end(why);
            }
            while let Ok(job) = self.jobs.try_recv() {
                let continuing = self.recording.is_some();
                if continuing {
                    self.end(Ended::Superseded);
                }
                self.start(job, continuing);
            }
            if self.shutdown.is_triggered() {
                break;
            }
        }
        if self.recording.is_some() {
            self.end(Ended::Shutdown);
        }
        // Jobs taken by the planner but never started: their events keep no clip.
        while let Ok(Job::Start { file_id, .. }) = self.jobs.try_recv() {
            self.forget(file_id);
            self.events.clip_update(ClipUpdate::Failed { file_id });
        }
        log::debug!("clip writer stopped");
    }

    /// Starts recording. `continuing`: a recording ran until now, so the frames up to the
    /// cursor were handled and the ones after it come live; otherwise the writer was idle and
    /// the live part starts after what the ring holds now.
    fn start(&mut self, job: Job, continuing: bool) {
        let Job::Start {
            file_id,
            event_type,
            at,
        } = job;
        let settings = &self.shared.settings;
        let from = at.checked_sub(settings.pre).unwrap_or(at);
        let recording = Recording {
            file_id,
            title: format!("porchlight event {file_id} ({event_type})"),
            path: file::path(&settings.dir, file_id),
            from,
            writer: None,
            last_sync: Instant::now(),
            started: Instant::now(),
            lost: 0,
        };
        log::info!("clip {file_id}: recording ({event_type})");
        self.shared.metrics.started.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.recording.store(1, Ordering::Relaxed);
        self.recording = Some(recording);
        if let Err(err) = check_free_space(&self.shared.settings.dir) {
            self.end(Ended::Disk(err));
            return;
        }
        // The pre-roll: what the ring holds from `from` on, up to the cursor; later frames come
        // through the live loop.
        if !continuing && let Some(newest) = self.shared.ring.newest() {
            self.cursor = newest.number;
        }
        let pre_roll = self.shared.ring.since(from);
        if self.shared.ring.take_trimmed_by_bytes() > 0
            && let Some(first) = pre_roll.first()
            && first.captured_at > from
        {
            log::info!(
                "clip {file_id}: {:.1} s of pre-roll, not {:.1} s: the pre-roll's {} MiB holds \
                 no more of this camera's frames",
                at.saturating_duration_since(first.captured_at)
                    .as_secs_f64(),
                settings.pre.as_secs_f64(),
                self.shared.ring.max_bytes() / (1024 * 1024)
            );
        }
        let cursor = self.cursor;
        for frame in pre_roll.iter().filter(|f| f.number <= cursor) {
            if let Err(err) = self.write(frame) {
                self.end(Ended::Disk(err));
                return;
            }
        }
    }

    /// Appends `frame` to the recording if it belongs there.
    fn write(&mut self, frame: &Arc<Frame>) -> io::Result<()> {
        let Some(recording) = self.recording.as_mut() else {
            return Ok(());
        };
        if !frame.live || frame.captured_at < recording.from {
            return Ok(());
        }
        let writer = match recording.writer.as_mut() {
            Some(writer) => writer,
            None => recording.writer.insert(ClipWriter::create(
                &recording.path,
                frame,
                &recording.title,
            )?),
        };
        let added = writer.append(frame)?;
        let len = writer.len();
        let metrics = &self.shared.metrics;
        metrics.frames_written.fetch_add(1, Ordering::Relaxed);
        metrics.bytes_written.fetch_add(added, Ordering::Relaxed);
        if recording.last_sync.elapsed() >= SYNC_EVERY {
            recording.last_sync = Instant::now();
            writer.sync()?;
            check_free_space(&self.shared.settings.dir)?;
        }
        self.shared.files().insert(recording.file_id, len);
        self.shared.growing.changed.notify_all();
        Ok(())
    }

    /// Whether the recording should end at `now`, and why. Decided under the session lock,
    /// and marked there, so that no event joins a recording once it is decided to end.
    fn why_end(&self, now: Instant) -> Option<Ended> {
        let recording = self.recording.as_ref()?;
        let offline = (self.shared.camera_state)() == CameraState::Offline;
        let full = recording
            .writer
            .as_ref()
            .is_some_and(|w| w.len() >= self.shared.settings.max_bytes);
        let mut state = self.shared.state();
        let end = state.session_end(self.shared.settings.post);
        let Some(session) = state
            .session
            .as_mut()
            .filter(|s| s.file_id == recording.file_id)
        else {
            return Some(Ended::Superseded);
        };
        let why = if offline {
            Ended::CameraOffline
        } else if full {
            Ended::Budget
        } else if end.is_some_and(|end| now >= end) {
            Ended::Done
        } else {
            return None;
        };
        session.ended = true;
        Some(why)
    }

    /// Ends the recording: finishes its file and reports it to the store.
    fn end(&mut self, why: Ended) {
        let Some(recording) = self.recording.take() else {
            return;
        };
        let file_id = recording.file_id;
        {
            // Nothing joins it from now on (unless a newer session already replaced it).
            let mut state = self.shared.state();
            if let Some(session) = state.session.as_mut()
                && session.file_id == file_id
            {
                session.ended = true;
            }
        }
        self.shared.metrics.recording.store(0, Ordering::Relaxed);
        let reason = match &why {
            Ended::Done => "done".to_string(),
            Ended::Superseded => "a new recording took over".to_string(),
            Ended::CameraOffline => "the camera went offline".to_string(),
            Ended::Budget => "it reached max_clip_bytes".to_string(),
            Ended::Shutdown => "the server is stopping".to_string(),
            Ended::Disk(err) => format!("the disk refused: {err}"),
        };
        let frames = recording.writer.as_ref().map_or(0, ClipWriter::frames);
        let finished = match recording.writer {
            Some(writer) if frames > 0 => {
                let len = writer.len();
                match writer.finish() {
                    Ok(len) => Some(len),
                    Err(err) => {
                        log::warn!("clip {file_id}: could not finish the file: {err}");
                        Some(len)
                    }
                }
            }
            _ => None,
        };
        self.forget(file_id);
        let seconds = recording.started.elapsed().as_secs_f64();
        match finished {
            Some(bytes) => {
                log::info!(
                    "clip {file_id}: {frames} frames, {:.1} MB, recorded in {seconds:.1} s ({reason}{})",
                    bytes as f64 / 1e6,
                    if recording.lost > 0 {
                        format!("; {} frames lost to a slow disk", recording.lost)
                    } else {
                        String::new()
                    }
                );
                self.events
                    .clip_update(ClipUpdate::Finished { file_id, bytes });
            }
            None => {
                log::warn!("clip {file_id}: no frame recorded ({reason}); the event has no clip");
                let _ = std::fs::remove_file(&recording.path);
                self.events.clip_update(ClipUpdate::Failed { file_id });
            }
        }
        if let Ended::Disk(err) = why {
            self.disk_refused(&err);
        }
    }

    /// The recording no longer grows: readers following it stop at its end.
    fn forget(&self, file_id: u64) {
        self.shared.files().remove(&file_id);
        self.shared.growing.changed.notify_all();
    }

    /// Stops new clips for a while and tells the user, once per spell of trouble.
    fn disk_refused(&self, err: &io::Error) {
        self.shared
            .metrics
            .write_errors
            .fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut state = self.shared.state();
            state.paused_until = Some(Instant::now() + DISK_PAUSE);
            !std::mem::replace(&mut state.alerted, true)
        };
        let full = is_disk_full(err);
        let message = if full {
            format!(
                "clip recording stopped: the data dir's disk is full ({err}); free some space or \
                 lower max_clip_bytes. Retrying in {} s.",
                DISK_PAUSE.as_secs()
            )
        } else {
            format!(
                "clip recording stopped: writing a clip failed ({err}). Retrying in {} s.",
                DISK_PAUSE.as_secs()
            )
        };
        log::warn!("{message}");
        if !first {
            return;
        }
        let mut data = Map::new();
        data.insert(
            "reason".into(),
            Value::String(
                if full {
                    "disk_full"
                } else {
                    "clip_write_failed"
                }
                .into(),
            ),
        );
        data.insert("message".into(), Value::String(message));
        let alert = EventDraft::new(SYSTEM_ALERT, crate::events::builtin::CLIPS_SOURCE, data);
        if let Err(err) = self.events.publish(alert) {
            log::error!("could not store the system_alert about clips: {err}");
        }
    }
}

fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || err.raw_os_error() == Some(libc::ENOSPC)
}

/// `Err` (as a full disk) if the clip folder's disk has less free for unprivileged writers
/// than the reserve kept for the event store: [`MIN_FREE_BYTES`], or a tenth of a small disk.
fn check_free_space(dir: &Path) -> io::Result<()> {
    let (free, total) = disk_space(dir)?;
    let reserve = MIN_FREE_BYTES.min(total / 10);
    if free < reserve {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "{:.1} MiB free, below the {:.1} MiB kept for the event store",
                free as f64 / 1048576.0,
                reserve as f64 / 1048576.0
            ),
        ));
    }
    Ok(())
}

/// Bytes free for unprivileged writers, and the size, of the disk holding `dir`.
fn disk_space(dir: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the clip folder"))?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The fields are 32-bit on the Pi Zero's ARMv6 (and 64-bit here).
    #[allow(clippy::useless_conversion)]
    let (free, total, block) = (
        u64::from(stat.f_bavail),
        u64::from(stat.f_blocks),
        u64::from(stat.f_frsize),
    );
    Ok((free.saturating_mul(block), total.saturating_mul(block)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_post_after_its_last_event_or_its_motion_and_never_past_its_cap() {
        let t = Instant::now();
        let post = Duration::from_secs(7);
        let mut state = State {
            session: Some(Session {
                file_id: 1,
                until: t + post,
                cap: t + Duration::from_secs(120),
                ended: false,
            }),
            ..State::default()
        };
        assert_eq!(state.session_end(post), Some(t + post));
        state.motion = Motion::Ongoing { id: 5, since: t };
        assert_eq!(state.session_end(post), Some(t + Duration::from_secs(120)));
        state.motion = Motion::Ended(t + Duration::from_secs(20));
        assert_eq!(state.session_end(post), Some(t + Duration::from_secs(27)));
        state.motion = Motion::Ended(t + Duration::from_secs(200));
        assert_eq!(state.session_end(post), Some(t + Duration::from_secs(120)));
        state.session = None;
        assert_eq!(state.session_end(post), None);
    }

    /// A planner over a ring holding one fresh frame, with the camera in `state`.
    fn make_planner(state: CameraState) -> (Planner, Receiver<Job>) {
        let ring = Arc::new(FrameRing::new(Duration::from_secs(4), 1 << 20));
        ring.push(Arc::new(Frame::new(
            1,
            crate::clock::unix_now(),
            Instant::now(),
            (32, 16),
            vec![0xFF, 0xD8, 0xFF, 0xD9],
            true,
        )));
        let shared = Arc::new(Shared {
            settings: ClipSettings {
                pre: Duration::from_secs(3),
                post: Duration::from_secs(7),
                event_types: vec!["doorbell_pressed".into(), MOTION_DETECTED.into()],
                max_bytes: 1 << 30,
                dir: std::env::temp_dir(),
            },
            ring,
            camera_state: Box::new(move || state),
            state: Mutex::new(State::default()),
            growing: Growing::default(),
            metrics: ClipMetrics::default(),
        });
        let (jobs, rx) = crossbeam_channel::bounded(4);
        (
            Planner {
                shared,
                jobs,
                batch_new: false,
            },
            rx,
        )
    }

    fn draft(event_type: &str, ago_s: f64) -> EventDraft {
        let mut draft = EventDraft::new(event_type, "api", Map::new());
        draft.timestamp = crate::clock::unix_now() - ago_s;
        draft
    }

    /// `draft` as the store would give it back, with id `id` and clip file `file`.
    fn stored(draft: &EventDraft, id: u64, file: Option<u64>) -> Event {
        Event {
            id,
            event_type: draft.event_type.clone(),
            timestamp: draft.timestamp,
            source: draft.source.clone(),
            data: draft.data.clone(),
            has_snapshot: false,
            clip_file: file,
        }
    }

    #[test]
    fn the_planner_starts_a_recording_then_lets_later_events_join_it() {
        let (mut planner, jobs) = make_planner(CameraState::Streaming);
        let first = draft("doorbell_pressed", 0.0);
        let second = draft("doorbell_pressed", 0.0);
        // One batch: a new recording, and a second event joining it before it has an id.
        assert_eq!(planner.plan(&first), Some(ClipPlan::New));
        assert_eq!(planner.plan(&second), Some(ClipPlan::JoinBatch));
        assert_eq!(planner.plan(&draft("package_delivered", 0.0)), None);
        assert!(planner.stored(&stored(&first, 5, Some(5))));
        assert!(planner.stored(&stored(&second, 6, Some(5))));
        assert!(matches!(jobs.try_recv(), Ok(Job::Start { file_id: 5, .. })));
        assert!(jobs.try_recv().is_err(), "a join starts nothing");
        // A later batch joins it by its id, and pushes its end out.
        let before = planner
            .shared
            .state()
            .session_end(Duration::from_secs(7))
            .unwrap();
        assert_eq!(
            planner.plan(&draft("motion_detected", 0.0)),
            Some(ClipPlan::Join(5))
        );
        let after = planner
            .shared
            .state()
            .session_end(Duration::from_secs(7))
            .unwrap();
        assert!(after >= before);
        assert!(
            planner.shared.files().contains_key(&5),
            "readers see it growing"
        );
        // Once the writer ended it, the next event starts another.
        planner.shared.state().session.as_mut().unwrap().ended = true;
        assert_eq!(
            planner.plan(&draft("doorbell_pressed", 0.0)),
            Some(ClipPlan::New)
        );
    }

    #[test]
    fn an_event_past_the_recordings_cap_gets_a_new_one() {
        let (mut planner, _jobs) = make_planner(CameraState::Streaming);
        let first = draft("doorbell_pressed", 0.0);
        assert_eq!(planner.plan(&first), Some(ClipPlan::New));
        planner.stored(&stored(&first, 1, Some(1)));
        // Pretend the recording started long ago: its cap is now.
        planner.shared.state().session.as_mut().unwrap().cap = Instant::now();
        assert_eq!(
            planner.plan(&draft("doorbell_pressed", 0.0)),
            Some(ClipPlan::New)
        );
    }

    #[test]
    fn no_clip_while_the_camera_is_not_live_or_the_disk_refused() {
        let (mut planner, _jobs) = make_planner(CameraState::Stalled);
        assert_eq!(planner.plan(&draft("doorbell_pressed", 0.0)), None);
        let (mut planner, _jobs) = make_planner(CameraState::Streaming);
        planner.shared.state().paused_until = Some(Instant::now() + Duration::from_secs(60));
        assert_eq!(planner.plan(&draft("doorbell_pressed", 0.0)), None);
        planner.shared.state().paused_until = Some(Instant::now());
        assert_eq!(
            planner.plan(&draft("doorbell_pressed", 0.0)),
            Some(ClipPlan::New)
        );
        // The batch was not stored: the planned recording is forgotten.
        planner.not_stored();
        assert!(planner.shared.state().session.is_none());
        assert_eq!(
            planner.plan(&draft("doorbell_pressed", 0.0)),
            Some(ClipPlan::New)
        );
    }

    #[test]
    fn the_detectors_motion_holds_a_recording_open_until_it_ends() {
        let (mut planner, _jobs) = make_planner(CameraState::Streaming);
        let post = Duration::from_secs(7);
        let mut motion = draft(MOTION_DETECTED, 0.0);
        motion.source = DETECTOR_SOURCE.into();
        assert_eq!(planner.plan(&motion), Some(ClipPlan::New));
        planner.stored(&stored(&motion, 3, Some(3)));
        let cap = planner.shared.state().session.as_ref().unwrap().cap;
        assert_eq!(planner.shared.state().session_end(post), Some(cap));
        // A motion_ended from another producer, naming that motion, ends nothing.
        let mut posted_end = stored(&draft(MOTION_ENDED, 0.0), 4, None);
        posted_end.data.insert("motion_event_id".into(), 3.into());
        posted_end.data.insert("duration_s".into(), 0.5.into());
        planner.stored(&posted_end);
        assert!(matches!(
            planner.shared.state().motion,
            Motion::Ongoing { id: 3, .. }
        ));
        assert_eq!(planner.shared.state().session_end(post), Some(cap));
        // The end of that motion (2 s long) ends the recording post after it.
        let mut ended = stored(&draft(MOTION_ENDED, 0.0), 4, None);
        ended.source = DETECTOR_SOURCE.into();
        ended.data.insert("motion_event_id".into(), 3.into());
        ended.data.insert("duration_s".into(), 2.0.into());
        planner.stored(&ended);
        let end = planner.shared.state().session_end(post).unwrap();
        assert!(end < cap);
        // Motion posted by another producer is a moment: it does not hold anything open.
        let posted = draft(MOTION_DETECTED, 0.0);
        planner.plan(&posted);
        planner.stored(&stored(&posted, 5, Some(3)));
        assert!(matches!(planner.shared.state().motion, Motion::Ended(_)));
    }

    #[test]
    fn an_event_is_placed_on_the_monotonic_clock_within_the_ring() {
        let keep = Duration::from_secs(4);
        let now = Instant::now();
        let at = instant_of(crate::clock::unix_now() - 1.0, keep);
        let ago = now.saturating_duration_since(at);
        assert!(
            ago >= Duration::from_millis(950) && ago <= Duration::from_millis(1100),
            "{ago:?}"
        );
        // A timestamp from the future (a clock step) is now; one from long ago is the ring's
        // reach.
        assert!(instant_of(crate::clock::unix_now() + 100.0, keep) >= now);
        let far = instant_of(0.0, keep);
        assert!(now.saturating_duration_since(far) <= keep + Duration::from_millis(100));
    }

    #[test]
    fn a_full_disk_is_recognised() {
        assert!(is_disk_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(is_disk_full(&io::Error::new(
            io::ErrorKind::StorageFull,
            "x"
        )));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(libc::EIO)));
        let (free, total) = disk_space(&std::env::temp_dir()).unwrap();
        assert!(free > 0 && total >= free);
    }
}
