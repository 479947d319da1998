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
//! rather than queued. Not testable on a machine without a camera beyond "a missing device is a
//! clear error"; the device issue covers running it on a Pi.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TrySendError};

use super::source::{Captured, Mode, Source};
use crate::video::jpeg::{self, Image, Layout};

/// Default size and rate when the spec names none.
const DEFAULT_MODE: (u32, u32, u32) = (640, 480, 15);
/// JPEG quality for YUYV frames (what the `source` preset promises).
const YUYV_QUALITY: u8 = 90;

pub struct V4l2Source {
    mode: Mode,
    frames: Receiver<Result<Captured, String>>,
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

/// What a user should read when the device cannot be opened.
fn open_error(device: &str, err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => format!(
            "{device}: no such device; is the camera plugged in? (`ls /dev/video*` lists cameras)"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{device}: permission denied; add the user running porchlight to the `video` group"
        ),
        _ if err.raw_os_error() == Some(libc::EBUSY) => {
            format!("{device}: busy; another program is using the camera")
        }
        _ => format!("{device}: {err}"),
    }
}

pub fn open(device: &Path, requested: Option<(u32, u32, u32)>) -> Result<Box<dyn Source>, String> {
    let name = device.display().to_string();
    if !device.exists() {
        return Err(open_error(
            &name,
            &std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let mut camera = rscam::Camera::new(&name).map_err(|e| open_error(&name, &e))?;
    let formats: Vec<[u8; 4]> = camera
        .formats()
        .filter_map(|f| f.ok().map(|f| f.format))
        .collect();
    let format: &[u8] = if formats.iter().any(|f| f == b"MJPG") {
        b"MJPG"
    } else if formats.iter().any(|f| f == b"YUYV") {
        b"YUYV"
    } else {
        let names: Vec<String> = formats
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        return Err(format!(
            "{name}: offers neither MJPEG nor YUYV (it offers {})",
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let (want_w, want_h, want_fps) = requested.unwrap_or(DEFAULT_MODE);
    let size = match camera.resolutions(format) {
        Ok(info) => nearest_size(&info, (want_w, want_h)),
        Err(_) => (want_w, want_h),
    };
    let interval = match camera.intervals(format, size) {
        Ok(info) => nearest_interval(&info, want_fps),
        Err(_) => (1, want_fps),
    };
    let config = |interval| rscam::Config {
        interval,
        resolution: size,
        format,
        nbuffers: 4,
        ..Default::default()
    };
    let started = camera.start(&config(interval));
    let interval = match started {
        Ok(()) => interval,
        // Some drivers refuse to set a rate at all: take whatever they run at.
        Err(rscam::Error::BadInterval) => {
            camera
                .start(&config((1, 30)))
                .map_err(|e| format!("{name}: cannot start streaming: {e}"))?;
            (1, 30)
        }
        Err(rscam::Error::Io(err)) => return Err(open_error(&name, &err)),
        Err(err) => return Err(format!("{name}: cannot start streaming: {err}")),
    };
    let fps = (interval.1 / interval.0.max(1)).max(1);
    let mode = Mode {
        width: size.0,
        height: size.1,
        fps,
    };
    log::info!(
        "{name}: streaming {} {}x{} at {fps} fps (asked for {want_w}x{want_h}@{want_fps})",
        String::from_utf8_lossy(format),
        size.0,
        size.1
    );
    let yuyv = format == b"YUYV";
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
                while !stop.load(Ordering::Relaxed) {
                    let result = camera
                        .capture()
                        .map_err(|e| format!("{name}: capture failed: {e}"))
                        .and_then(|frame| to_captured(&frame, yuyv));
                    let failed = result.is_err();
                    match tx.try_send(result) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            missed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Disconnected(_)) => break,
                    }
                    if failed {
                        break;
                    }
                }
                // Dropping the camera stops streaming and closes the device.
            })
            .map_err(|e| format!("cannot start the camera reader thread: {e}"))?;
    }
    Ok(Box::new(V4l2Source {
        mode,
        frames,
        stop,
        missed,
    }))
}

fn to_captured(frame: &rscam::Frame, yuyv: bool) -> Result<Captured, String> {
    let captured_at = Instant::now();
    let captured_unix = crate::clock::unix_now();
    let (width, height) = frame.resolution;
    let jpeg = if yuyv {
        let image = yuyv_to_image(frame, width, height)?;
        jpeg::encode(&image, YUYV_QUALITY)?
    } else {
        jpeg::with_huffman_tables(frame.to_vec())
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

    fn next_frame(&mut self, _number: u64, timeout: Duration) -> Result<Option<Captured>, String> {
        match self.frames.recv_timeout(timeout) {
            Ok(Ok(mut captured)) => {
                captured.missed = self.missed.swap(0, Ordering::Relaxed);
                Ok(Some(captured))
            }
            Ok(Err(err)) => Err(err),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err("the camera reader stopped".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_a_clear_error() {
        let err = open(Path::new("/dev/video-porchlight-missing"), None)
            .err()
            .unwrap();
        assert!(err.contains("no such device"), "{err}");
        assert!(err.contains("/dev/video-porchlight-missing"), "{err}");
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
        let step = rscam::ResolutionInfo::Stepwise {
            min: (16, 16),
            max: (2592, 1944),
            step: (16, 8),
        };
        assert_eq!(nearest_size(&step, (650, 490)), (640, 488));
        let rates = rscam::IntervalInfo::Discretes(vec![(1, 30), (1, 15), (1, 5)]);
        assert_eq!(nearest_interval(&rates, 12), (1, 15));
        assert_eq!(nearest_interval(&rates, 60), (1, 30));
    }
}
