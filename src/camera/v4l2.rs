//! `v4l2:/dev/videoN[:WxH@FPS]`: a real camera through rscam.
//!
//! MJPEG is preferred: its frames are passed on as the camera made them (only the standard
//! Huffman tables are added when a webcam leaves them out, as browsers need them). YUYV is
//! accepted and encoded to JPEG here, once per frame. The size and rate asked for are matched
//! to the nearest the device offers; what it granted is reported in the log and status.
//!
//! rscam's `capture()` blocks in the driver with no timeout, so a reader thread owns the device
//! and hands frames over a one-slot channel: the capture thread waits with a timeout (and can
//! declare a stall), and a frame the capture thread was too slow to take is counted as missed
//! rather than queued.
//!
//! The decisions are apart from the ioctls so that they are tested without a camera: the
//! negotiation ([`negotiate`]) talks to a [`VideoDevice`], the reader thread ([`spawn_reader`]) to
//! a capture function, and a frame is turned into a JPEG from its bytes ([`to_captured`]).
//! Only `open`'s few lines that join them to `rscam::Camera` need a real device.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TrySendError};

use super::device::{self, VideoDevice};
use super::source::{Captured, Mode, Source, SourceError};
use crate::video::jpeg::{self, Image, Layout};

/// Default size and rate when the spec names none.
const DEFAULT_MODE: (u32, u32, u32) = (640, 480, 15);
/// JPEG quality for YUYV frames (what the `source` preset promises).
const YUYV_QUALITY: u8 = 90;
/// The rate asked for when a driver refuses to have its rate set.
const FALLBACK_INTERVAL: (u32, u32) = (1, 30);

pub struct V4l2Source {
    mode: Mode,
    frames: Receiver<Result<Captured, SourceError>>,
    stop: Arc<AtomicBool>,
    missed: Arc<AtomicU64>,
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        // The reader closes the device after its current capture returns (the driver call
        // cannot be interrupted); a reopen meanwhile sees "busy" and is retried.
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn open(
    device: &Path,
    requested: Option<(u32, u32, u32)>,
) -> Result<Box<dyn Source>, SourceError> {
    let name = device.display().to_string();
    let mut camera = device::open(device)?;
    let granted = negotiate(&mut camera, &name, requested)?;
    let yuyv = &granted.format == b"YUYV";
    let capture = move || {
        camera
            .capture()
            .map_err(|e| SourceError::io(&format!("{name}: capture failed"), &e))
            .and_then(|frame| {
                to_captured(&frame, frame.resolution, yuyv)
                    .map_err(|message| SourceError::new(io::ErrorKind::InvalidData, message))
            })
    };
    Ok(Box::new(spawn_reader(granted.mode, capture)?))
}

/// What the device agreed to stream.
#[derive(Debug, PartialEq)]
struct Granted {
    format: [u8; 4],
    mode: Mode,
}

/// Picks the format (MJPEG, else YUYV), the offered size and rate nearest to `requested`, and
/// starts streaming with them. A driver that refuses to have its rate set streams at its own.
fn negotiate(
    camera: &mut dyn VideoDevice,
    name: &str,
    requested: Option<(u32, u32, u32)>,
) -> Result<Granted, SourceError> {
    let formats = camera.formats().map_err(|e| device::open_error(name, &e))?;
    let offered = |fourcc: &[u8; 4]| formats.iter().any(|f| &f.fourcc == fourcc);
    let format = if offered(b"MJPG") {
        *b"MJPG"
    } else if offered(b"YUYV") {
        *b"YUYV"
    } else {
        let names: Vec<String> = formats
            .iter()
            .map(|f| String::from_utf8_lossy(&f.fourcc).into_owned())
            .collect();
        return Err(SourceError::new(
            io::ErrorKind::Unsupported,
            format!(
                "{name}: offers neither MJPEG nor YUYV (it offers {})",
                if names.is_empty() {
                    "no capture format: a metadata, codec or ISP node, not a camera".to_string()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    let (want_w, want_h, want_fps) = requested.unwrap_or(DEFAULT_MODE);
    let size = match camera.resolutions(&format) {
        Ok(info) => nearest_size(&info, (want_w, want_h)),
        Err(_) => (want_w, want_h),
    };
    let interval = match camera.intervals(&format, size) {
        Ok(info) => nearest_interval(&info, want_fps),
        Err(_) => (1, want_fps),
    };
    let config = |interval| rscam::Config {
        interval,
        resolution: size,
        format: &format,
        nbuffers: 4,
        ..Default::default()
    };
    let interval = match camera.start(&config(interval)) {
        Ok(()) => interval,
        // Some drivers refuse to set a rate at all: take whatever they run at.
        Err(rscam::Error::BadInterval) => {
            camera
                .start(&config(FALLBACK_INTERVAL))
                .map_err(|e| start_error(name, e))?;
            FALLBACK_INTERVAL
        }
        Err(rscam::Error::Io(err)) => return Err(device::open_error(name, &err)),
        Err(err) => return Err(start_error(name, err)),
    };
    let fps = (interval.1 / interval.0.max(1)).max(1);
    log::info!(
        "{name}: streaming {} {}x{} at {fps} fps (asked for {want_w}x{want_h}@{want_fps})",
        String::from_utf8_lossy(&format),
        size.0,
        size.1
    );
    Ok(Granted {
        format,
        mode: Mode {
            width: size.0,
            height: size.1,
            fps,
        },
    })
}

/// Starts the thread that owns the device: it calls `capture` until the source is dropped or a
/// capture fails, offering each result in a one-slot channel; a frame the capture thread has
/// not taken when the next is ready is counted as missed, and a failure is passed on last.
fn spawn_reader<F>(mode: Mode, mut capture: F) -> Result<V4l2Source, SourceError>
where
    F: FnMut() -> Result<Captured, SourceError> + Send + 'static,
{
    let (tx, frames) = crossbeam_channel::bounded(1);
    let stop = Arc::new(AtomicBool::new(false));
    let missed = Arc::new(AtomicU64::new(0));
    {
        let stop = Arc::clone(&stop);
        let missed = Arc::clone(&missed);
        std::thread::Builder::new()
            .name("v4l2-reader".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                crate::priority::yield_to_events("v4l2-reader");
                while !stop.load(Ordering::Relaxed) {
                    let result = capture();
                    let failed = result.is_err();
                    let offered = if failed {
                        // The failure must reach the capture thread: wait for the slot.
                        tx.send(result).map_err(|_| ())
                    } else {
                        match tx.try_send(result) {
                            Err(TrySendError::Full(_)) => {
                                missed.fetch_add(1, Ordering::Relaxed);
                                Ok(())
                            }
                            Err(TrySendError::Disconnected(_)) => Err(()),
                            Ok(()) => Ok(()),
                        }
                    };
                    if failed || offered.is_err() {
                        break;
                    }
                }
                // Dropping `capture` (the camera) stops streaming and closes the device.
            })
            .map_err(|e| SourceError::io("cannot start the camera reader thread", &e))?;
    }
    Ok(V4l2Source {
        mode,
        frames,
        stop,
        missed,
    })
}

/// Why the device would not start streaming, for a failure that is not an OS error.
fn start_error(name: &str, err: rscam::Error) -> SourceError {
    match err {
        rscam::Error::Io(err) => device::open_error(name, &err),
        other => SourceError::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: cannot start streaming: {other}"),
        ),
    }
}

/// One captured frame as a JPEG: an MJPEG frame as it is (with Huffman tables added where the
/// camera leaves them out), a YUYV frame encoded.
fn to_captured(bytes: &[u8], (width, height): (u32, u32), yuyv: bool) -> Result<Captured, String> {
    let captured_at = Instant::now();
    let captured_unix = crate::clock::unix_now();
    let jpeg = if yuyv {
        let image = yuyv_to_image(bytes, width, height)?;
        jpeg::encode(&image, YUYV_QUALITY)?
    } else {
        jpeg::with_huffman_tables(bytes.to_vec())
            .ok_or_else(|| "the camera sent a frame that is not a JPEG".to_string())?
    };
    Ok(Captured {
        jpeg,
        width,
        height,
        captured_unix,
        captured_at,
        missed: 0,
    })
}

/// YUYV (Y0 U Y1 V per two pixels) to interleaved YCbCr: both pixels of a pair share U and V.
fn yuyv_to_image(bytes: &[u8], width: u32, height: u32) -> Result<Image, String> {
    let pixels = width as usize * height as usize;
    if bytes.len() < pixels * 2 {
        return Err(format!(
            "short YUYV frame: {} bytes for {width}x{height}",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(pixels * 3);
    for quad in bytes[..pixels * 2].chunks_exact(4) {
        let (y0, u, y1, v) = (quad[0], quad[1], quad[2], quad[3]);
        out.extend_from_slice(&[y0, u, v, y1, u, v]);
    }
    Ok(Image {
        width,
        height,
        layout: Layout::Ycbcr,
        pixels: out,
    })
}

/// The offered size nearest to `want` (by area, then by shape).
fn nearest_size(info: &rscam::ResolutionInfo, want: (u32, u32)) -> (u32, u32) {
    let distance = |(w, h): (u32, u32)| {
        let area = |w: u32, h: u32| i64::from(w) * i64::from(h);
        (
            (area(w, h) - area(want.0, want.1)).abs(),
            (i64::from(w) - i64::from(want.0)).abs(),
        )
    };
    match info {
        rscam::ResolutionInfo::Discretes(sizes) => sizes
            .iter()
            .copied()
            .min_by_key(|s| distance(*s))
            .unwrap_or(want),
        rscam::ResolutionInfo::Stepwise { min, max, step } => {
            let fit = |v: u32, lo: u32, hi: u32, step: u32| {
                let v = v.clamp(lo, hi);
                lo + (v - lo) / step.max(1) * step.max(1)
            };
            (
                fit(want.0, min.0, max.0, step.0),
                fit(want.1, min.1, max.1, step.1),
            )
        }
    }
}

/// The offered frame interval whose rate is nearest to `fps`.
fn nearest_interval(info: &rscam::IntervalInfo, fps: u32) -> (u32, u32) {
    let rate = |(num, den): (u32, u32)| f64::from(den) / f64::from(num.max(1));
    match info {
        rscam::IntervalInfo::Discretes(intervals) => intervals
            .iter()
            .copied()
            .min_by(|a, b| {
                (rate(*a) - f64::from(fps))
                    .abs()
                    .total_cmp(&(rate(*b) - f64::from(fps)).abs())
            })
            .unwrap_or((1, fps)),
        rscam::IntervalInfo::Stepwise { min, max, .. } => {
            // min is the shortest interval (fastest rate).
            let fastest = rate(*min);
            let slowest = rate(*max);
            let fps = f64::from(fps).clamp(slowest, fastest);
            (1, fps.round().max(1.0) as u32)
        }
    }
}

impl Source for V4l2Source {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn next_frame(
        &mut self,
        _number: u64,
        timeout: Duration,
    ) -> Result<Option<Captured>, SourceError> {
        match self.frames.recv_timeout(timeout) {
            Ok(Ok(mut captured)) => {
                captured.missed = self.missed.swap(0, Ordering::Relaxed);
                Ok(Some(captured))
            }
            Ok(Err(err)) => Err(err),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err("the camera reader stopped".to_string().into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::device::fake::FakeDevice;

    fn no_such(errno: i32) -> rscam::Error {
        rscam::Error::Io(std::io::Error::from_raw_os_error(errno))
    }

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let err = open(Path::new("/dev/video-porchlight-missing"), None)
            .err()
            .unwrap();
        assert!(err.message.contains("no such device"), "{err}");
        assert!(
            err.message.contains("/dev/video-porchlight-missing"),
            "{err}"
        );
    }

    #[test]
    fn a_device_that_is_not_v4l2_is_a_clear_error_not_a_hang() {
        let err = open(Path::new("/dev/null"), None).err().unwrap();
        assert!(
            err.message.starts_with("/dev/null: not a V4L2 device"),
            "{err}"
        );
        let err = open(Path::new("Cargo.toml"), None).err().unwrap();
        assert!(
            err.message.contains("not a camera device (a regular file)"),
            "{err}"
        );
    }

    #[test]
    fn mjpeg_is_preferred_then_yuyv() {
        let mut both = FakeDevice::offering(&[b"YUYV", b"MJPG"]);
        let granted = negotiate(&mut both, "/dev/video0", None).unwrap();
        assert_eq!(&granted.format, b"MJPG");
        let mut yuyv = FakeDevice::offering(&[b"GREY", b"YUYV"]);
        assert_eq!(
            &negotiate(&mut yuyv, "/dev/video0", None).unwrap().format,
            b"YUYV"
        );
    }

    #[test]
    fn a_device_without_a_usable_format_says_what_it_offers() {
        let mut other = FakeDevice::offering(&[b"RGB3", b"GREY"]);
        assert_eq!(
            negotiate(&mut other, "/dev/video0", None).unwrap_err(),
            SourceError::new(
                io::ErrorKind::Unsupported,
                "/dev/video0: offers neither MJPEG nor YUYV (it offers RGB3, GREY)"
            )
        );
        let mut metadata = FakeDevice::offering(&[]);
        let err = negotiate(&mut metadata, "/dev/video1", None).unwrap_err();
        assert!(
            err.message
                .contains("(it offers no capture format: a metadata"),
            "{err}"
        );
        assert!(other.started.is_empty() && metadata.started.is_empty());
        let mut not_v4l2 = FakeDevice::offering(&[]);
        not_v4l2.formats = Err(libc::ENOTTY);
        let err = negotiate(&mut not_v4l2, "/dev/video2", None).unwrap_err();
        assert!(
            err.message.starts_with("/dev/video2: not a V4L2 device"),
            "{err}"
        );
    }

    #[test]
    fn the_nearest_offered_size_and_rate_are_asked_for_and_reported() {
        let mut camera = FakeDevice::offering(&[b"MJPG"]);
        camera.sizes = Box::new(|_| {
            Ok(rscam::ResolutionInfo::Discretes(vec![
                (320, 240),
                (1280, 720),
                (1920, 1080),
            ]))
        });
        camera.intervals = Box::new(|_, size| {
            assert_eq!(size, (1280, 720), "rates asked for the chosen size");
            Ok(rscam::IntervalInfo::Discretes(vec![(1, 30), (1, 10)]))
        });
        let granted = negotiate(&mut camera, "/dev/video0", Some((1024, 768, 12))).unwrap();
        assert_eq!(
            granted.mode,
            Mode {
                width: 1280,
                height: 720,
                fps: 10
            }
        );
        assert_eq!(camera.started, vec![(*b"MJPG", (1280, 720), (1, 10))]);
    }

    #[test]
    fn without_a_mode_or_an_answer_the_default_is_asked_for() {
        // A device that lists neither sizes nor rates is asked for exactly what was wanted.
        let mut camera = FakeDevice::offering(&[b"YUYV"]);
        let granted = negotiate(&mut camera, "/dev/video0", None).unwrap();
        assert_eq!(
            granted.mode,
            Mode {
                width: 640,
                height: 480,
                fps: 15
            }
        );
        assert_eq!(camera.started, vec![(*b"YUYV", (640, 480), (1, 15))]);
    }

    #[test]
    fn a_driver_that_refuses_a_rate_streams_at_its_own() {
        let mut camera = FakeDevice::offering(&[b"MJPG"]);
        camera.start = Box::new(|started| {
            if started.2 == FALLBACK_INTERVAL {
                Ok(())
            } else {
                Err(rscam::Error::BadInterval)
            }
        });
        let granted = negotiate(&mut camera, "/dev/video0", Some((640, 480, 5))).unwrap();
        assert_eq!(granted.mode.fps, 30);
        assert_eq!(
            camera.started,
            vec![
                (*b"MJPG", (640, 480), (1, 5)),
                (*b"MJPG", (640, 480), FALLBACK_INTERVAL)
            ]
        );
        // Refused both times: the second refusal is the error.
        camera.start = Box::new(|_| Err(rscam::Error::BadInterval));
        let err = negotiate(&mut camera, "/dev/video0", Some((640, 480, 5))).unwrap_err();
        assert!(
            err.message
                .starts_with("/dev/video0: cannot start streaming: Invalid or unsupported frame"),
            "{err}"
        );
    }

    #[test]
    fn a_device_that_cannot_start_says_why() {
        let mut busy = FakeDevice::offering(&[b"MJPG"]);
        busy.start = Box::new(|_| Err(no_such(libc::EBUSY)));
        assert_eq!(
            negotiate(&mut busy, "/dev/video0", None).unwrap_err(),
            SourceError::new(
                io::ErrorKind::ResourceBusy,
                "/dev/video0: busy; another program is using the camera"
            )
        );
        let mut bad = FakeDevice::offering(&[b"MJPG"]);
        bad.start = Box::new(|_| Err(rscam::Error::BadResolution));
        let err = negotiate(&mut bad, "/dev/video0", None).unwrap_err();
        assert!(
            err.message
                .starts_with("/dev/video0: cannot start streaming: Invalid or unsupported resol"),
            "{err}"
        );
    }

    /// Lets the gated camera's next capture return this (a frame number, or a failure).
    type Go = crossbeam_channel::Sender<Result<u8, SourceError>>;

    /// A capture function that waits for the test's go-ahead before each frame and reports
    /// each call; its frames are numbered JPEG stand-ins.
    fn gated_camera() -> (
        Go,
        crossbeam_channel::Receiver<()>,
        impl FnMut() -> Result<Captured, SourceError> + Send + 'static,
    ) {
        let (go, gate) = crossbeam_channel::unbounded::<Result<u8, SourceError>>();
        let (called, calls) = crossbeam_channel::unbounded();
        let capture = move || {
            called.send(()).ok();
            let n = gate
                .recv()
                .map_err(|_| SourceError::from("test over".to_string()))??;
            Ok(Captured {
                jpeg: vec![n],
                width: 2,
                height: 2,
                captured_unix: 0.0,
                captured_at: Instant::now(),
                missed: 0,
            })
        };
        (go, calls, capture)
    }

    const MODE: Mode = Mode {
        width: 2,
        height: 2,
        fps: 10,
    };
    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn frames_reach_the_capture_thread_and_a_slow_one_counts_what_it_missed() {
        let (go, calls, capture) = gated_camera();
        let mut source = spawn_reader(MODE, capture).unwrap();
        assert_eq!(source.mode(), MODE);
        assert!(source.next_frame(0, Duration::ZERO).unwrap().is_none());
        calls.recv_timeout(WAIT).unwrap();
        go.send(Ok(1)).unwrap();
        let first = source.next_frame(0, WAIT).unwrap().unwrap();
        assert_eq!((first.jpeg, first.missed), (vec![1], 0));
        // Two frames while nobody takes one: the second finds the slot full and is missed.
        calls.recv_timeout(WAIT).unwrap();
        go.send(Ok(2)).unwrap();
        calls.recv_timeout(WAIT).unwrap();
        go.send(Ok(3)).unwrap();
        calls.recv_timeout(WAIT).unwrap();
        let next = source.next_frame(1, WAIT).unwrap().unwrap();
        assert_eq!((next.jpeg, next.missed), (vec![2], 1));
    }

    #[test]
    fn a_failed_capture_reaches_the_capture_thread_and_ends_the_reader() {
        let (go, calls, capture) = gated_camera();
        let mut source = spawn_reader(MODE, capture).unwrap();
        calls.recv_timeout(WAIT).unwrap();
        let unplugged = SourceError::io(
            "/dev/video0: capture failed",
            &io::Error::from_raw_os_error(libc::ENODEV),
        );
        go.send(Err(unplugged.clone())).unwrap();
        assert_eq!(source.next_frame(0, WAIT).err().unwrap(), unplugged);
        assert_eq!(
            source.next_frame(0, WAIT).err().unwrap().message,
            "the camera reader stopped"
        );
        // The reader asked for no frame after the failure.
        assert!(calls.try_recv().is_err());
    }

    #[test]
    fn dropping_the_source_stops_the_reader_and_closes_the_device() {
        let (go, calls, capture) = gated_camera();
        let source = spawn_reader(MODE, capture).unwrap();
        calls.recv_timeout(WAIT).unwrap();
        drop(source);
        // The capture under way returns; the reader then stops and drops the capture
        // function (the camera), which disconnects its call reports.
        go.send(Ok(1)).unwrap();
        let ended = calls.recv_timeout(WAIT);
        assert_eq!(
            ended,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn frames_become_jpegs() {
        // YUYV: encoded at the frame's size.
        let yuyv: Vec<u8> = (0..16 * 8).flat_map(|_| [128u8, 128]).collect();
        let captured = to_captured(&yuyv, (16, 8), true).unwrap();
        let image = jpeg::decode(&captured.jpeg).unwrap();
        assert_eq!((image.width, image.height), (16, 8));
        assert_eq!(
            (captured.width, captured.height, captured.missed),
            (16, 8, 0)
        );
        assert!(
            to_captured(&yuyv[..10], (16, 8), true)
                .err()
                .unwrap()
                .contains("short YUYV frame")
        );
        // MJPEG: passed on as it came.
        let passed = to_captured(&captured.jpeg, (16, 8), false).unwrap();
        assert_eq!(passed.jpeg, captured.jpeg);
        assert_eq!(
            to_captured(b"garbage", (16, 8), false).err().unwrap(),
            "the camera sent a frame that is not a JPEG"
        );
    }

    #[test]
    fn yuyv_pairs_share_chroma() {
        let image = yuyv_to_image(&[10, 100, 20, 200, 30, 101, 40, 201], 4, 1).unwrap();
        assert_eq!(
            image.pixels,
            vec![10, 100, 200, 20, 100, 200, 30, 101, 201, 40, 101, 201]
        );
        assert!(yuyv_to_image(&[0; 6], 4, 1).is_err());
    }

    #[test]
    fn nearest_modes() {
        let sizes = rscam::ResolutionInfo::Discretes(vec![(320, 240), (640, 480), (1280, 720)]);
        assert_eq!(nearest_size(&sizes, (640, 480)), (640, 480));
        assert_eq!(nearest_size(&sizes, (800, 600)), (640, 480));
        assert_eq!(nearest_size(&sizes, (1920, 1080)), (1280, 720));
        assert_eq!(
            nearest_size(&rscam::ResolutionInfo::Discretes(vec![]), (800, 600)),
            (800, 600)
        );
        let step = rscam::ResolutionInfo::Stepwise {
            min: (16, 16),
            max: (2592, 1944),
            step: (16, 8),
        };
        assert_eq!(nearest_size(&step, (650, 490)), (640, 488));
        assert_eq!(nearest_size(&step, (8, 4000)), (16, 1944));
        let rates = rscam::IntervalInfo::Discretes(vec![(1, 30), (1, 15), (1, 5)]);
        assert_eq!(nearest_interval(&rates, 12), (1, 15));
        assert_eq!(nearest_interval(&rates, 60), (1, 30));
        assert_eq!(
            nearest_interval(&rscam::IntervalInfo::Discretes(vec![]), 7),
            (1, 7)
        );
        // A range of intervals: 1/60 s (fastest) to 1/2 s (slowest).
        let range = rscam::IntervalInfo::Stepwise {
            min: (1, 60),
            max: (1, 2),
            step: (1, 1),
        };
        assert_eq!(nearest_interval(&range, 25), (1, 25));
        assert_eq!(nearest_interval(&range, 120), (1, 60));
        assert_eq!(nearest_interval(&range, 1), (1, 2));
    }
}
