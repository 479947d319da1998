//! The `Source` trait: what the capture thread needs from a camera, whatever kind it is.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

/// Why a source could not open or stopped delivering. The capture thread branches on `kind`
/// (is this the problem it already reported?); `message` says it in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError {
    /// The class of the problem: the OS error's kind where there is one (no such device,
    /// permission denied, busy…), `InvalidData` for unusable frames, `Unsupported` for a device
    /// that is not a camera we can read, `Other` for the rest.
    pub kind: io::ErrorKind,
    pub message: String,
}

impl SourceError {
    pub fn new(kind: io::ErrorKind, message: impl Into<String>) -> SourceError {
        SourceError {
            kind,
            message: message.into(),
        }
    }

    /// An OS error, with what failed in front of it.
    pub fn io(what: &str, err: &io::Error) -> SourceError {
        SourceError::new(err.kind(), format!("{what}: {err}"))
    }
}

/// A failure without an OS cause.
impl From<String> for SourceError {
    fn from(message: String) -> SourceError {
        SourceError::new(io::ErrorKind::Other, message)
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

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
    fn next_frame(
        &mut self,
        number: u64,
        timeout: Duration,
    ) -> Result<Option<Captured>, SourceError>;
}
