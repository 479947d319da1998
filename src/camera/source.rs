//! The `Source` trait: what the capture thread needs from a camera, whatever kind it is.

use std::time::{Duration, Instant};

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
