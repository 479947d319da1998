//! porchlight's integration tests, in one binary (one link of the bundled SQLite instead of one
//! per file). Each module starts the real `porchlight` binary on a loopback port and talks to it
//! over sockets, the way a browser, a script or a home-automation system would.
//!
//! Run one area with `cargo test --test it sse::` (module path as the filter).

mod common;
mod video_client;

mod auto_quality;
mod bad_http;
mod camera;
mod clips;
mod config;
mod dashboard;
mod device;
mod durability;
mod fanout;
mod faults;
mod gpio_doorbell;
mod hostile;
mod interop;
mod motion;
mod mqtt;
mod probe;
mod probe2;
mod probe3;
mod probe7;
mod probe8;
mod ranges;
mod rest_auth;
mod shutdown;
mod snapshots;
mod sse;
mod video;
mod webhooks;
mod websocket;
