//! Harness shared by the integration tests, one file per job (`server`, `http`, `sse`,
//! `metrics`, `assertions`, `broker`): start the real `porchlight` binary on a loopback
//! port, talk HTTP/1.1 and Server-Sent Events to it over plain `std::net::TcpStream`s, the way a
//! browser or a script would, and send it signals.
//!
//! Nothing here sleeps in place of a signal: the server's readiness is the `listening on` line on
//! its stderr, and every socket read has a timeout so a hung server fails a test instead of
//! hanging it.

use std::time::Duration;

pub mod assertions;
pub mod broker;
pub mod http;
pub mod metrics;
pub mod server;
pub mod sse;
pub mod ws;

pub use assertions::*;
pub use http::*;
pub use metrics::*;
pub use server::*;
pub use sse::*;
pub use ws::*;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_porchlight");
/// How long any single exchange with the server may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server left running by a test gets to exit after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Tokens used by the tests that configure roles.
pub const VIEWER: &str = "viewer-token-0001";
pub const CONTROL: &str = "control-token-0002";
pub const ADMIN: &str = "admin-token-0003";
