//! The camera: what `--camera` names, the sources behind one [`Source`] trait (synthetic, file,
//! V4L2), the capture thread with its state machine ([`Camera`] is its handle), and `discover`
//! (`--list-cameras`).

mod capture;
mod device;
pub mod discover;
mod file;
mod health;
mod placeholder;
mod source;
mod spec;
mod synthetic;
mod v4l2;

pub use capture::{CAMERA_OFFLINE, CAMERA_ONLINE, Camera, CameraState, Opener};
pub use health::Timing;
pub use source::{Captured, Mode, Source, SourceError};
pub use spec::{CameraSpec, DEFAULT_FILE_FPS};

/// Opens the source `spec` names: the one place that knows every implementation of [`Source`]
/// (the capture thread only calls this through its `Opener`). The error says what is wrong in words a user can act on.
pub fn open(spec: &CameraSpec) -> Result<Box<dyn Source>, SourceError> {
    match spec {
        CameraSpec::Synthetic { width, height, fps } => {
            Ok(Box::new(synthetic::Synthetic::new(*width, *height, *fps)))
        }
        CameraSpec::File { path, fps } => Ok(Box::new(file::FileSource::open(path, *fps)?)),
        CameraSpec::V4l2 { device, mode } => v4l2::open(device, *mode),
    }
}
