//! The configuration keys the HTTP side reads, converted once at start-up: durations as
//! [`Duration`], limits as numbers. Every key http uses is listed here, so a reader can tell
//! which of the config's keys shape the server without searching the handlers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::TokenTable;
use crate::config::Config;

/// What the connection threads need from the config.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// `listen`: the address requests may name in `Host` (with loopback and `allowed_hosts`).
    pub listen: SocketAddr,
    /// `tokens`: who may do what.
    pub tokens: TokenTable,
    /// `allowed_origins`: the web pages that may make cross-origin requests.
    pub allowed_origins: Vec<String>,
    /// `allowed_hosts`: further `Host` names accepted without tokens.
    pub allowed_hosts: Vec<String>,
    /// `www`: serve the dashboard from this directory instead of the built-in copy.
    pub www: Option<PathBuf>,
    /// `data_dir`: where event clips are read from.
    pub data_dir: PathBuf,
    /// `max_connections`: open connections in all.
    pub max_connections: usize,
    /// `max_connections_per_ip`: open connections from one client address.
    pub max_connections_per_ip: usize,
    /// `max_sse_clients`: open SSE streams.
    pub max_sse_clients: usize,
    /// `max_ws_clients`: open WebSocket sessions.
    pub max_ws_clients: usize,
    /// `max_video_clients`: open MJPEG streams and clip downloads.
    pub max_video_clients: usize,
    /// `client_queue_events`: events queued for one stream before it is evicted.
    pub client_queue_events: usize,
    /// `heartbeat_s`: SSE comment / WebSocket ping interval.
    pub heartbeat: Duration,
    /// `request_timeout_s`: a request's head and body must arrive within this; also the
    /// socket's read timeout.
    pub request_timeout: Duration,
    /// `write_timeout_s`: a client that accepts no bytes for this long is dropped.
    pub write_timeout: Duration,
    /// `status_interval_s`, as configured: the status stream's hello reports it.
    pub status_interval_s: f64,
    /// `clip_pre_s`, as configured: a clip starts this many seconds before its event.
    pub clip_pre_s: f64,
}

impl HttpSettings {
    pub fn from_config(config: &Config) -> HttpSettings {
        HttpSettings {
            listen: config.listen,
            tokens: config.tokens.clone(),
            allowed_origins: config.allowed_origins.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            www: config.www.clone(),
            data_dir: config.data_dir.clone(),
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            max_sse_clients: config.max_sse_clients,
            max_ws_clients: config.max_ws_clients,
            max_video_clients: config.max_video_clients,
            client_queue_events: config.client_queue_events,
            heartbeat: Duration::from_secs_f64(config.heartbeat_s),
            request_timeout: Duration::from_secs_f64(config.request_timeout_s),
            write_timeout: Duration::from_secs_f64(config.write_timeout_s),
            status_interval_s: config.status_interval_s,
            clip_pre_s: config.clip_pre_s,
        }
    }
}
