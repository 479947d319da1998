//! Event clips: the seconds around a doorbell press or motion, not just one picture.
//!
//! - `ring.rs` — the pre-roll: the camera's last seconds as the `Arc<Frame>`s it already
//!   made, bounded in time and bytes; also the clip writer's backlog.
//! - `file.rs` — the clip file (Matroska, one cluster per frame, valid after every write) and
//!   its reader, which never hands out a torn frame.
//! - `ebml.rs` — the bits of EBML the file needs.
//! - `metrics.rs` — what the recorder counts, as `/metrics` shows it.
//! - `recorder.rs` — which events get a clip (decided as they are stored), and the clip
//!   writer thread: one recording at a time, joined and extended by later events and motion.

pub(crate) mod ebml;
pub(crate) mod file;
pub(crate) mod metrics;
pub(crate) mod recorder;
pub(crate) mod ring;

pub use recorder::{ClipSettings, Recorder};
pub use ring::FrameRing;
