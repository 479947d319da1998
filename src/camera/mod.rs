//! The camera: what `--camera` names, the sources behind one [`Source`] trait (synthetic, file,
//! V4L2), the capture thread with its state machine ([`Camera`] is its handle), and `discover`
//! (`--list-cameras`).

mod capture;
pub mod discover;
mod file;
mod placeholder;
mod source;
mod spec;
mod synthetic;
mod v4l2;

pub use capture::{CAMERA_OFFLINE, CAMERA_ONLINE, Camera, CameraState, Opener, Timing};
pub use source::{Captured, Mode, Source, open};
pub use spec::{CameraSpec, DEFAULT_FILE_FPS};
