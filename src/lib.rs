//! porchlight: a doorbell camera and security-event server for Raspberry Pi Zero-class boards.
//!
//! The binary (`src/main.rs`) is a thin command line over this library; ARCHITECTURE.md maps
//! the modules and the invariants they keep.

pub mod app;
pub mod auth;
pub mod camera;
pub mod clips;
pub mod clock;
pub mod config;
pub mod control;
pub mod ctx;
pub mod doorbell;
pub mod events;
pub mod http;
pub mod hub;
pub mod json;
pub mod latest;
pub mod metrics;
pub mod motion;
pub mod mqtt;
pub mod outbound;
pub mod sdnotify;
pub mod shutdown;
pub mod stack;
pub mod status;
pub mod url;
pub mod video;
pub mod webhooks;
