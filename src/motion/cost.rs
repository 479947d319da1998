//! What motion detection costs per examined frame (`porchlight-video-bench --motion-cost FILE`),
//! in this process and without a server: each frame of an .mjpeg file (ffmpeg's `-f mjpeg`) is decoded (luma only,
//! as the motion thread does while nobody watches; a colour decode is timed beside it for
//! comparison), made into the luma grid and shown to the detector, and the thread's
//! own CPU time for each step is summed (`CLOCK_THREAD_CPUTIME_ID`: other processes on a busy
//! machine do not count, unlike wall time). The three steps are separate `#[inline(never)]`
//! functions, so `valgrind --tool=callgrind` gives their instruction counts too, which a
//! loaded machine cannot disturb at all (README, "Motion detection", has the commands).

use std::time::Duration;

use serde_json::{Value, json};

use super::{Detector, LumaGrid, Settings};
use crate::video::jpeg::{self, Image};

/// The thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer we own.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if ok != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Nobody watching: the motion thread decodes luma only (`Video::decoded_frame`).
#[inline(never)]
fn decode_step(jpeg: &[u8]) -> Result<Image, String> {
    jpeg::decode_luma(jpeg)
}

/// The full colour decode a preset's encoder makes (shared with motion while one is watched):
/// measured for comparison.
#[inline(never)]
fn colour_decode_step(jpeg: &[u8]) -> Result<Image, String> {
    jpeg::decode(jpeg)
}

#[inline(never)]
fn grid_step(image: &Image) -> Option<LumaGrid> {
    LumaGrid::from_image(image)
}

#[inline(never)]
fn detect_step(detector: &mut Detector, at: std::time::Instant, grid: &LumaGrid) -> bool {
    detector.observe(at, grid).1.is_some()
}

/// Runs the first `frames` frames of `path` (looping if it has fewer) at `fps` frames a
/// second of capture time, `motion_fps` of which the detector would examine.
pub fn measure(path: &str, frames: usize, motion_fps: f64) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let (ranges, _) = jpeg::split_frames(&bytes);
    if ranges.is_empty() {
        return Err(format!("{path}: no JPEG frames"));
    }
    let size = jpeg::probe_size(&bytes[ranges[0].clone()]).unwrap_or((0, 0));
    let mut detector = Detector::new(Settings::default());
    let start = std::time::Instant::now();
    let step = Duration::from_secs_f64(1.0 / motion_fps);
    let (mut decode, mut grid_t, mut detect) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut colour = Duration::ZERO;
    let mut decisions = 0;
    let mut jpeg_bytes = 0;
    for n in 0..frames {
        let jpeg = &bytes[ranges[n % ranges.len()].clone()];
        jpeg_bytes += jpeg.len();
        let c0 = thread_cpu();
        drop(colour_decode_step(jpeg)?);
        let t0 = thread_cpu();
        colour += t0 - c0;
        let image = decode_step(jpeg)?;
        let t1 = thread_cpu();
        let grid = grid_step(&image).ok_or("a picture smaller than one cell")?;
        let t2 = thread_cpu();
        let at = start + step * u32::try_from(n).unwrap_or(u32::MAX);
        decisions += usize::from(detect_step(&mut detector, at, &grid));
        let t3 = thread_cpu();
        decode += t1 - t0;
        grid_t += t2 - t1;
        detect += t3 - t2;
    }
    let per_frame = |d: Duration| d.as_secs_f64() * 1e3 / frames as f64;
    let motion_ms = per_frame(grid_t + detect);
    // Nobody watching: every examined frame is decoded for the detector alone.
    let core_percent = (per_frame(decode) + motion_ms) * motion_fps / 10.0;
    Ok(json!({
        "file": path,
        "size": [size.0, size.1],
        "frames": frames,
        "jpeg_kb_mean": jpeg_bytes as f64 / frames as f64 / 1024.0,
        "decode_ms_per_frame": per_frame(decode),
        "colour_decode_ms_per_frame": per_frame(colour),
        "grid_ms_per_frame": per_frame(grid_t),
        "detector_ms_per_frame": per_frame(detect),
        "motion_ms_per_frame": motion_ms,
        "motion_fps": motion_fps,
        "core_percent_nobody_watching": core_percent,
        "core_percent_decode_shared": motion_ms * motion_fps / 10.0,
        "decisions": decisions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::jpeg::Layout;

    /// An .mjpeg file (JPEGs back to back, as ffmpeg's `-f mjpeg` writes) of a still grey scene.
    fn still_clip(name: &str, frames: usize) -> std::path::PathBuf {
        let jpeg = jpeg::encode(&Image::filled(160, 120, Layout::Ycbcr, [90, 128, 128]), 80)
            .expect("encode");
        let path = std::env::temp_dir().join(format!(
            "porchlight-motion-cost-{name}-{}.mjpeg",
            std::process::id()
        ));
        std::fs::write(&path, jpeg.repeat(frames)).unwrap();
        path
    }

    #[test]
    fn every_step_is_measured_per_frame_and_a_still_scene_is_not_motion() {
        let path = still_clip("still", 3);
        // More frames than the file holds: it loops.
        let figures = measure(path.to_str().unwrap(), 7, 5.0).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(figures["size"], json!([160, 120]));
        assert_eq!(figures["frames"], 7);
        assert_eq!(figures["decisions"], 0);
        let ms = |key: &str| figures[key].as_f64().unwrap();
        for key in [
            "decode_ms_per_frame",
            "colour_decode_ms_per_frame",
            "grid_ms_per_frame",
            "detector_ms_per_frame",
        ] {
            assert!(ms(key) >= 0.0, "{key}: {figures}");
        }
        let motion = ms("grid_ms_per_frame") + ms("detector_ms_per_frame");
        assert!((ms("motion_ms_per_frame") - motion).abs() < 1e-9);
        // % of a core at 5 examined frames a second: ms per frame × 5 / 1000 × 100.
        let expected = (ms("decode_ms_per_frame") + motion) * 0.5;
        assert!((ms("core_percent_nobody_watching") - expected).abs() < 1e-9);
        assert!((ms("core_percent_decode_shared") - motion * 0.5).abs() < 1e-9);
    }

    #[test]
    fn a_file_without_frames_or_no_file_is_a_clear_error() {
        let empty = still_clip("empty", 0);
        let err = measure(empty.to_str().unwrap(), 5, 5.0).unwrap_err();
        std::fs::remove_file(&empty).ok();
        assert!(err.ends_with(": no JPEG frames"), "{err}");
        let err = measure("/nonexistent/clip.mjpeg", 5, 5.0).unwrap_err();
        assert!(err.starts_with("/nonexistent/clip.mjpeg: "), "{err}");
    }
}
