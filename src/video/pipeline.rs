//! The shared per-preset encoders: camera frames in, one stream per preset out.
//!
//! Each of `low`, `medium` and `high` has a latest-wins hub and, while it has viewers, an
//! encoder thread. The thread is started by the preset's first viewer and ends after the preset
//! has had none for [`IDLE_EXIT`], so an unwatched preset costs no decode, no encode and no
//! thread. With viewers it takes the newest camera frame, thins it to the preset's maximum rate,
//! and publishes one frame for all of them:
//!
//! - if the preset's size equals the frame's (it never upscales), the camera's own `Arc<Frame>`
//!   is passed on: no decode, no encode, no copy;
//! - otherwise the frame is decoded (once, shared by every preset that needs it, see
//!   [`DecodeCache`]), box-downscaled and encoded at the preset's quality.
//!
//! `source` has no encoder: its viewers read the camera hub itself.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::jpeg::{self, Image};
use super::rate::Decimator;
use super::resize;
use super::{Frame, Quality, VideoMetrics};
use crate::latest::{Latest, Next};
use crate::shutdown::Shutdown;

/// Presets with an encoder, in `Quality::index()` order after `source`.
const ENCODED: [Quality; 3] = [Quality::Low, Quality::Medium, Quality::High];

/// How often idle and waiting loops look at the shutdown flag.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// An encoder thread whose preset has had no viewer this long ends (the next viewer starts a
/// new one): viewers that come and go do not pay a thread start each, and an unwatched server
/// runs no encoder threads at all.
pub const IDLE_EXIT: Duration = Duration::from_secs(10);

/// Viewer count and whether the encoder thread runs, under one lock so that a viewer arriving
/// as the thread decides to end either keeps it or starts a new one.
#[derive(Default)]
struct PresetState {
    viewers: usize,
    running: bool,
}

struct Preset {
    quality: Quality,
    out: Latest<Frame>,
    state: Mutex<PresetState>,
    watched: Condvar,
}

impl Preset {
    fn state(&self) -> std::sync::MutexGuard<'_, PresetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn viewers(&self) -> usize {
        self.state().viewers
    }
}

/// Decoded camera frames, so that a frame is decoded at most once however many presets (and
/// snapshots) need it. Holds the two newest: encoders running a frame apart still share.
#[derive(Default)]
struct DecodeCache {
    entries: Mutex<Vec<(u64, Arc<Image>)>>,
}

impl DecodeCache {
    fn clear(&self) {
        let old = std::mem::take(&mut *self.entries.lock().unwrap_or_else(|e| e.into_inner()));
        drop(old);
    }
}

struct Shared {
    camera: Latest<Frame>,
    presets: [Preset; 3],
    decoded: DecodeCache,
    metrics: VideoMetrics,
    shutdown: Shutdown,
    idle_exit: Duration,
}

/// The video pipeline's handle; cheap to clone.
#[derive(Clone)]
pub struct Video {
    shared: Arc<Shared>,
}

/// A viewer's registration with a preset: while it lives, the preset is encoded. Dropping it
/// unregisters (and lets the encoder sleep when it was the last).
pub struct Watch {
    video: Video,
    quality: Quality,
}

impl Watch {
    /// The hub this viewer reads.
    pub fn frames(&self) -> &Latest<Frame> {
        self.video.hub(self.quality)
    }

    /// The preset watched (an `auto` viewer's `X-Quality` and its log lines).
    pub fn quality(&self) -> Quality {
        self.quality
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(preset) = self.video.preset(self.quality) else {
            return;
        };
        let last = {
            let mut state = preset.state();
            state.viewers -= 1;
            state.viewers == 0
        };
        if last {
            // A viewer arriving later must not get a frame from before it came.
            preset.out.clear();
            // Decoded pictures are megabytes: keep none while no preset encodes.
            if ENCODED.iter().all(|q| self.video.viewers(*q) == 0) {
                self.video.shared.decoded.clear();
            }
        }
    }
}

impl Video {
    /// The pipeline over the camera's frame hub. No thread runs until a preset is watched.
    pub fn new(camera: Latest<Frame>, shutdown: Shutdown) -> Video {
        let preset = |quality| Preset {
            quality,
            out: Latest::new(),
            state: Mutex::new(PresetState::default()),
            watched: Condvar::new(),
        };
        Video {
            shared: Arc::new(Shared {
                camera,
                presets: ENCODED.map(preset),
                decoded: DecodeCache::default(),
                metrics: VideoMetrics::default(),
                shutdown,
                idle_exit: IDLE_EXIT,
            }),
        }
    }

    fn preset(&self, quality: Quality) -> Option<&Preset> {
        self.shared.presets.iter().find(|p| p.quality == quality)
    }

    fn hub(&self, quality: Quality) -> &Latest<Frame> {
        self.preset(quality)
            .map_or(&self.shared.camera, |preset| &preset.out)
    }

    /// Registers a viewer of `quality`; its encoder runs while any viewer is registered. `Err`
    /// if the encoder thread cannot be started (the viewer should be refused).
    pub fn watch(&self, quality: Quality) -> Result<Watch, String> {
        if let Some((index, preset)) = self
            .shared
            .presets
            .iter()
            .enumerate()
            .find(|(_, p)| p.quality == quality)
        {
            let mut state = preset.state();
            if !state.running {
                let video = self.clone();
                std::thread::Builder::new()
                    .name(format!("encode-{}", quality.name()))
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        crate::priority::yield_to_events("encoder");
                        video.run_encoder(index)
                    })
                    .map_err(|e| format!("cannot start the {quality} encoder: {e}"))?;
                state.running = true;
            }
            state.viewers += 1;
            preset.watched.notify_all();
        }
        Ok(Watch {
            video: self.clone(),
            quality,
        })
    }

    /// Viewers registered for `quality` (`source` viewers are not counted here).
    pub fn viewers(&self, quality: Quality) -> usize {
        self.preset(quality).map_or(0, Preset::viewers)
    }

    /// Encoder threads running now.
    pub fn encoders_running(&self) -> usize {
        self.shared
            .presets
            .iter()
            .filter(|p| p.state().running)
            .count()
    }

    /// `frame` (a camera frame) as `quality` shows it: the preset's own frame of that moment if
    /// its encoder already made it, else made now (for a snapshot).
    pub fn frame_as(&self, quality: Quality, frame: &Arc<Frame>) -> Result<Arc<Frame>, String> {
        let Some(preset) = self.preset(quality) else {
            return Ok(Arc::clone(frame));
        };
        if let Some((_, made)) = preset.out.current()
            && made.number == frame.number
        {
            return Ok(made);
        }
        self.convert(quality, frame)
    }

    fn run_encoder(&self, index: usize) {
        let preset = &self.shared.presets[index];
        let shutdown = &self.shared.shutdown;
        let mut decimator = Decimator::new(preset.quality.max_fps().map(f64::from));
        let mut last_seq = 0;
        log::debug!("{} encoder started", preset.quality);
        loop {
            // While nobody watches: no decode, no encode; after IDLE_EXIT, no thread.
            {
                let mut state = preset.state();
                let idle_since = Instant::now();
                while state.viewers == 0 {
                    if shutdown.is_triggered() || idle_since.elapsed() >= self.shared.idle_exit {
                        state.running = false;
                        log::debug!("{} encoder stopped (no viewer)", preset.quality);
                        return;
                    }
                    state = preset
                        .watched
                        .wait_timeout(state, CHECK_EVERY)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            let frame = match self.shared.camera.wait_newer(last_seq, CHECK_EVERY) {
                // The last viewer left while this thread waited: leave the frame unconsumed, so
                // that a viewer arriving next gets it at once instead of waiting for the next.
                Next::Item(..) if preset.viewers() == 0 => continue,
                Next::Item(seq, frame) => {
                    last_seq = seq;
                    frame
                }
                Next::Timeout => {
                    if shutdown.is_triggered() {
                        preset.state().running = false;
                        return;
                    }
                    continue;
                }
                Next::Closed => {
                    preset.state().running = false;
                    preset.out.close();
                    return;
                }
            };
            if !decimator.accept(frame.captured_at) {
                continue;
            }
            match self.convert(preset.quality, &frame) {
                Ok(made) => {
                    preset.out.publish(made);
                    // The last viewer may have left while this frame was made: leave no stale
                    // frame for the next one.
                    if preset.viewers() == 0 {
                        preset.out.clear();
                    }
                }
                Err(err) => log::debug!(
                    "{} preset: frame {} skipped: {err}",
                    preset.quality,
                    frame.number
                ),
            }
        }
    }

    /// Makes `quality`'s version of a camera frame: the frame itself when the size matches,
    /// else decode (shared), downscale, encode.
    fn convert(&self, quality: Quality, frame: &Arc<Frame>) -> Result<Arc<Frame>, String> {
        let metrics = &self.shared.metrics;
        let Some(max) = quality.max_size() else {
            return Ok(Arc::clone(frame));
        };
        let target = resize::fit((frame.width, frame.height), max);
        if target == (frame.width, frame.height) {
            metrics.add_pass_through(quality);
            return Ok(Arc::clone(frame));
        }
        let image = self.decoded(frame)?;
        let started = Instant::now();
        let jpeg = if (image.width, image.height) == target {
            // The header lied about the size (a frame the decoder read differently): encode
            // what was decoded.
            jpeg::encode(&image, quality.jpeg_quality())?
        } else if image.width < target.0 || image.height < target.1 {
            return Err(format!(
                "decoded {}x{} but the header said {}x{}",
                image.width, image.height, frame.width, frame.height
            ));
        } else {
            let small = resize::downscale(&image, target.0, target.1);
            jpeg::encode(&small, quality.jpeg_quality())?
        };
        metrics.add_encode(quality, started.elapsed());
        Ok(Arc::new(frame.derived(target, jpeg)))
    }

    /// The decoded picture of a camera frame for a reader beside the encoders (motion
    /// detection): the shared one if a preset decoded this frame already, else decoded now,
    /// and kept for the presets only while one is watched. Unwatched, nothing would reuse it,
    /// so it is not kept and only its luma is decoded (`Layout::Luma`: half the work, a third
    /// of the memory); the reader must take either layout.
    pub fn decoded_frame(&self, frame: &Frame) -> Result<Arc<Image>, String> {
        let keep = ENCODED.iter().any(|q| self.viewers(*q) > 0);
        self.decode_shared(frame, keep)
    }

    /// Whether an encoder is decoding camera frames now: the cache holds one of the `within`
    /// frames up to `number`. A reader beside the encoders then does best to take the frames
    /// they decode rather than others.
    pub fn decoding_near(&self, number: u64, within: u64) -> bool {
        let entries = self
            .shared
            .decoded
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .any(|(n, _)| *n <= number && number - *n < within)
    }

    /// Whether camera frame `number` is decoded and cached.
    pub fn is_decoded(&self, number: u64) -> bool {
        let entries = self
            .shared
            .decoded
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        entries.iter().any(|(n, _)| *n == number)
    }

    /// The decoded picture of `frame`, decoding it only if no preset did yet.
    fn decoded(&self, frame: &Frame) -> Result<Arc<Image>, String> {
        self.decode_shared(frame, true)
    }

    /// The decoded picture of `frame` from the cache, else decoded (and cached if `keep`).
    fn decode_shared(&self, frame: &Frame, keep: bool) -> Result<Arc<Image>, String> {
        // Held across the decode on purpose: a second preset asking for the same frame waits
        // for this decode instead of doing its own.
        let mut entries = self
            .shared
            .decoded
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, image)) = entries.iter().find(|(n, _)| *n == frame.number) {
            return Ok(Arc::clone(image));
        }
        let started = Instant::now();
        // Not kept: a reader beside the encoders alone will use it, and it needs only luma.
        let decode = if keep {
            jpeg::decode
        } else {
            jpeg::decode_luma
        };
        let image = Arc::new(decode(&frame.jpeg)?);
        self.shared.metrics.add_decode(started.elapsed());
        if !keep {
            return Ok(image);
        }
        if entries.len() >= 2 {
            entries.remove(0);
        }
        entries.push((frame.number, Arc::clone(&image)));
        Ok(image)
    }

    /// Encodes so far for `quality` (for tests and status).
    pub fn encoded(&self, quality: Quality) -> u64 {
        self.shared.metrics.encodes(quality)
    }

    /// What the pipeline and its viewers counted (for `/metrics`).
    pub fn metrics(&self) -> &VideoMetrics {
        &self.shared.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::jpeg::Layout;
    use std::sync::atomic::Ordering;

    fn camera_frame(number: u64, size: (u32, u32)) -> Arc<Frame> {
        let image = Image::filled(
            size.0,
            size.1,
            Layout::Ycbcr,
            [(number * 7 % 200) as u8 + 20, 128, 128],
        );
        // Capture times 200 ms apart, so no preset's rate limit thins these frames.
        Arc::new(Frame::new(
            number,
            crate::clock::unix_now(),
            Instant::now() + Duration::from_millis(number * 200),
            size,
            jpeg::encode(&image, 80).unwrap(),
            true,
        ))
    }

    fn next(hub: &Latest<Frame>, after: u64) -> (u64, Arc<Frame>) {
        match hub.wait_newer(after, Duration::from_secs(10)) {
            Next::Item(seq, frame) => (seq, frame),
            other => panic!("no frame: {other:?}"),
        }
    }

    #[test]
    fn encodes_once_per_frame_for_all_viewers_and_never_unwatched() {
        let camera = Latest::new();
        let shutdown = Shutdown::new();
        let video = Video::new(camera.clone(), shutdown.clone());
        // Nobody watches: frames come and nothing is encoded.
        camera.publish(camera_frame(1, (640, 480)));
        camera.publish(camera_frame(2, (640, 480)));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(video.encoders_running(), 0);
        assert_eq!(video.encoded(Quality::Low), 0);
        assert_eq!(video.metrics().decoded.load(Ordering::Relaxed), 0);

        let watchers: Vec<Watch> = (0..5).map(|_| video.watch(Quality::Low).unwrap()).collect();
        // The newest camera frame is made at once for the new viewers.
        let (seq, frame) = next(watchers[0].frames(), 0);
        assert_eq!((frame.number, frame.width, frame.height), (2, 320, 240));
        assert_eq!(jpeg::probe_size(&frame.jpeg), Some((320, 240)));
        assert_eq!(video.encoded(Quality::Low), 1);
        // Every viewer shares the same Arc.
        for watch in &watchers {
            assert!(Arc::ptr_eq(&next(watch.frames(), 0).1, &frame));
        }
        // Medium at the source's size is the camera's own frame, passed through.
        let medium = video.watch(Quality::Medium).unwrap();
        let (_, passed) = next(medium.frames(), 0);
        assert_eq!(passed.number, 2);
        assert!(Arc::ptr_eq(&passed, &camera.current().unwrap().1));
        assert_eq!(video.encoded(Quality::Medium), 0);
        // A new camera frame: one more encode, however many viewers.
        camera.publish(camera_frame(3, (640, 480)));
        for watch in &watchers {
            assert_eq!(next(watch.frames(), seq).1.number, 3);
        }
        assert_eq!(video.encoded(Quality::Low), 2);
        drop(medium);
        drop(watchers);
        shutdown.trigger();
    }

    #[test]
    fn a_frame_is_decoded_once_for_every_preset() {
        let camera = Latest::new();
        let shutdown = Shutdown::new();
        let video = Video::new(camera.clone(), shutdown.clone());
        let low = video.watch(Quality::Low).unwrap();
        let high = video.watch(Quality::High).unwrap();
        camera.publish(camera_frame(1, (1920, 1080)));
        let (_, l) = next(low.frames(), 0);
        let (_, h) = next(high.frames(), 0);
        assert_eq!((l.width, l.height), (320, 180));
        assert_eq!((h.width, h.height), (1280, 720));
        assert_eq!(video.metrics().decoded.load(Ordering::Relaxed), 1);
        // A snapshot at low of the same frame reuses the encoder's frame.
        let snap = video
            .frame_as(Quality::Low, &camera.current().unwrap().1)
            .unwrap();
        assert!(Arc::ptr_eq(&snap, &l));
        assert_eq!(video.encoded(Quality::Low), 1);
        drop((low, high));
        shutdown.trigger();
    }

    #[test]
    fn a_reader_beside_the_encoders_shares_their_decode() {
        let camera = Latest::new();
        let shutdown = Shutdown::new();
        let video = Video::new(camera.clone(), shutdown.clone());
        let decoded = || video.metrics().decoded.load(Ordering::Relaxed);
        // Nobody watches: the motion reader decodes, and nothing is kept for anyone.
        camera.publish(camera_frame(1, (640, 480)));
        let frame = camera.current().unwrap().1;
        let image = video.decoded_frame(&frame).unwrap();
        assert_eq!((image.width, image.height, decoded()), (640, 480, 1));
        // ... and only its luma, which is all the reader needs.
        assert_eq!(image.layout, Layout::Luma);
        assert!(video.shared.decoded.entries.lock().unwrap().is_empty());
        // A low viewer decodes frame 2; the motion reader then gets that same picture. (The
        // encoder may also have made frame 1 first, if its thread started before frame 2 came:
        // so count decodes from here, not from zero.)
        let low = video.watch(Quality::Low).unwrap();
        camera.publish(camera_frame(2, (640, 480)));
        let (mut seq, mut made) = next(low.frames(), 0);
        while made.number != 2 {
            (seq, made) = next(low.frames(), seq);
        }
        let frame = camera.current().unwrap().1;
        let before = decoded();
        let shared = video.decoded_frame(&frame).unwrap();
        assert_eq!(decoded(), before, "the reader decoded frame 2 again");
        assert_eq!(shared.layout, Layout::Ycbcr);
        // And a frame the reader decodes first is there for the encoder.
        camera.publish(camera_frame(3, (640, 480)));
        let frame = camera.current().unwrap().1;
        video.decoded_frame(&frame).unwrap();
        assert_eq!(decoded(), before + 1);
        while made.number != 3 {
            (seq, made) = next(low.frames(), seq);
        }
        assert_eq!(decoded(), before + 1, "the encoder decoded frame 3 again");
        drop((low, shared));
        shutdown.trigger();
    }

    #[test]
    fn encoder_threads_run_only_while_a_preset_is_watched() {
        let camera = Latest::new();
        let mut video = Video::new(camera.clone(), Shutdown::new());
        Arc::get_mut(&mut video.shared).unwrap().idle_exit = Duration::from_millis(100);
        assert_eq!(video.encoders_running(), 0);
        // `source` viewers read the camera hub: no encoder.
        let source = video.watch(Quality::Source).unwrap();
        assert_eq!(video.encoders_running(), 0);
        let low = video.watch(Quality::Low).unwrap();
        let low2 = video.watch(Quality::Low).unwrap();
        assert_eq!(video.encoders_running(), 1);
        camera.publish(camera_frame(1, (640, 480)));
        assert_eq!(next(low.frames(), 0).1.number, 1);
        drop((low, low2, source));
        // Polling: a thread's end has no signal to wait on, and the deadline is generous.
        let deadline = Instant::now() + Duration::from_secs(10);
        while video.encoders_running() > 0 {
            assert!(Instant::now() < deadline, "the idle encoder never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The next viewer starts a new one, which makes the newest camera frame at once.
        camera.publish(camera_frame(2, (640, 480)));
        let again = video.watch(Quality::Low).unwrap();
        assert_eq!(video.encoders_running(), 1);
        assert_eq!(next(again.frames(), 0).1.number, 2);
    }

    #[test]
    fn a_late_viewer_never_gets_a_stale_frame() {
        let camera = Latest::new();
        let shutdown = Shutdown::new();
        let video = Video::new(camera.clone(), shutdown.clone());
        let first = video.watch(Quality::Low).unwrap();
        camera.publish(camera_frame(1, (640, 480)));
        assert_eq!(next(first.frames(), 0).1.number, 1);
        drop(first);
        assert!(video.hub(Quality::Low).current().is_none());
        camera.publish(camera_frame(2, (640, 480)));
        let late = video.watch(Quality::Low).unwrap();
        assert_eq!(next(late.frames(), 0).1.number, 2);
        drop(late);
        shutdown.trigger();
    }
}
