//! HTTP: the accept loop and connection threads, routing and access checks, and the handlers
//! (REST, SSE, MJPEG, event clips, WebSocket, static files).

pub mod access;
pub mod api;
pub mod caching;
pub mod chunked;
pub mod clip;
pub mod cors;
pub mod mjpeg;
pub mod panics;
pub mod query;
pub mod reply;
pub mod router;
pub mod server;
pub mod settings;
pub mod sse;
pub mod static_files;
pub mod throttle;
pub mod ws;
