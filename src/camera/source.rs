//! The `Source` trait: what the capture thread needs from a camera, whatever kind it is.

use std::time::{Duration, Instant};

use super::CameraSpec;

/// One frame as a source delivers it: always a JPEG (a source that captures raw pixels encodes
/// them itself, once per frame).
pub struct Captured {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub captured_unix: f64,
    pub captured_at: Instant,
    /// Frames the source lost just before this one (it was late, or a frame was corrupt).
    pub missed: u64,
}

/// What an opened source delivers: what the device granted, not what was asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mode {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// A camera the capture thread reads. Dropping it closes the device.
pub trait Source: Send {
    fn mode(&self) -> Mode;

    /// Waits at most `timeout` for the next frame: `Ok(None)` if none came in that time (the
    /// capture thread decides when that becomes a stall), `Err` if the source failed and must
    /// be reopened. `number` is the frame number the frame will carry, for sources that draw it.
    fn next_frame(&mut self, number: u64, timeout: Duration) -> Result<Option<Captured>, String>;
}

/// Opens the source `spec` names. The error says what is wrong in words a user can act on.
pub fn open(spec: &CameraSpec) -> Result<Box<dyn Source>, String> {
    match spec {
        CameraSpec::Synthetic { width, height, fps } => Ok(Box::new(
            super::synthetic::Synthetic::new(*width, *height, *fps),
        )),
        CameraSpec::File { path, fps } => Ok(Box::new(super::file::FileSource::open(path, *fps)?)),
        CameraSpec::V4l2 { device, mode } => super::v4l2::open(device, *mode),
    }
}
