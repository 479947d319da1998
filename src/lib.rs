//! porchlight: a doorbell camera and security-event server for Raspberry Pi Zero-class boards.
//!
//! The binary (`src/main.rs`) is a thin command line over this library; ARCHITECTURE.md maps
//! the modules and the invariants they keep.

pub mod app;
pub(crate) mod auth;
pub mod camera;
pub(crate) mod clips;
pub(crate) mod clock;
pub mod config;
pub(crate) mod control;
pub(crate) mod ctx;
pub(crate) mod deadline;
pub(crate) mod doorbell;
pub mod events;
pub mod http;
pub(crate) mod hub;
pub(crate) mod json;
pub(crate) mod latest;
pub(crate) mod metrics;
pub(crate) mod motion;
pub mod mqtt;
pub(crate) mod outbound;
pub(crate) mod priority;
pub(crate) mod sdnotify;
pub(crate) mod short_sort;
pub(crate) mod shutdown;
pub(crate) mod stack;
pub mod status;
pub(crate) mod url;
pub(crate) mod video;
pub(crate) mod wake;
pub(crate) mod webhooks;

/// For `porchlight-video-bench --motion-cost`: the motion thread's steps timed in-process.
pub use motion::cost::measure as measure_motion_cost;
