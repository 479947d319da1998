//! HTTP: the accept loop and connection threads, routing and access checks, and the handlers
//! (REST, SSE, MJPEG, event clips, WebSocket, static files).

pub(crate) mod access;
pub(crate) mod api;
pub(crate) mod caching;
pub(crate) mod chunked;
pub(crate) mod clip;
pub(crate) mod cors;
pub(crate) mod gzip;
pub(crate) mod mjpeg;
pub(crate) mod panics;
pub mod query;
pub mod ranges;
pub(crate) mod reply;
pub mod router;
pub(crate) mod server;
pub(crate) mod settings;
pub(crate) mod sse;
pub mod static_files;
pub(crate) mod throttle;
pub mod ws;
