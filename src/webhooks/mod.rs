//! Webhooks (`../shared/spec/API.md`, "Webhooks"): each matching stored event POSTed to a
//! receiver, at least once, in id order per hook, retried with backoff while the receiver is
//! away, from the store and across restarts.
//!
//! - `format.rs` — the request for an event: `json` (the event object with absolute URLs) or
//!   `ntfy` (ntfy's publish form, so a phone rings).
//! - `client.rs` — one HTTP POST with timeouts; no async runtime.
//! - `sender.rs` — the thread per hook: its own delivery cursor, feed and backoff.
//!
//! Each hook has a thread of its own so a receiver that is slow or away delays only itself,
//! never another hook, the MQTT bridge, streams or video.

mod client;
pub(crate) mod format;
mod sender;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::events::DeliveryCursor;
use crate::url::ServiceUrl;

pub use client::HTTPS_SUPPORTED;
pub use sender::{Identity, start};

/// How a hook's request is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Ntfy,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "json" => Ok(Format::Json),
            "ntfy" => Ok(Format::Ntfy),
            other => Err(format!("format {other:?} is not one of json, ntfy")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ntfy => "ntfy",
        }
    }
}

/// One entry of `webhooks`, validated.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub url: ServiceUrl,
    /// Event types sent; empty: every type.
    pub types: Vec<String>,
    pub format: Format,
}

impl WebhookSettings {
    /// `url`: `http://` or `https://` (the latter only in a build with the `https` feature),
    /// with optional `user:password@` sent as Basic auth (ntfy access tokens go as the
    /// password).
    pub fn parse_url(text: &str) -> Result<ServiceUrl, String> {
        let url = ServiceUrl::parse(text, crate::url::http_port, "http:// or https://")?;
        if url.scheme == "https" && !HTTPS_SUPPORTED {
            return Err(
                "https:// needs a porchlight built with the `https` feature \
                 (cargo build --release --features https); this one speaks http:// only"
                    .into(),
            );
        }
        Ok(url)
    }

    pub fn wants(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == event_type)
    }

    /// The key of this hook's delivery cursor. The whole URL is in it: another receiver is
    /// another audience, which starts with the newest event rather than the history.
    pub fn cursor_name(&self) -> String {
        let url = &self.url;
        format!(
            "webhook {} {}://{}{} {}",
            self.format.name(),
            url.scheme,
            url.host_port(),
            url.path,
            self.types.join(",")
        )
    }
}

/// A hook's delivery, measured where it happens, for `/api/status` and `/metrics`.
pub struct HookStatus {
    /// Scheme, host and port only: the path (an ntfy topic) and credentials can be secrets.
    pub target: String,
    pub format: Format,
    pub cursor: Arc<DeliveryCursor>,
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    pub failing: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

impl HookStatus {
    pub fn new(settings: &WebhookSettings, cursor: Arc<DeliveryCursor>) -> HookStatus {
        HookStatus {
            target: settings.url.redacted(),
            format: settings.format,
            cursor,
            delivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
        }
    }

    /// Stored events this hook has not handled yet (delivered, or skipped by its types).
    pub fn backlog(&self, last_event_id: u64) -> u64 {
        last_event_id.saturating_sub(self.cursor.position())
    }

    pub fn to_json(&self, last_event_id: u64) -> Value {
        json!({
            "target": self.target,
            "format": self.format.name(),
            "last_delivered_id": self.cursor.position(),
            "backlog": self.backlog(last_event_id),
            "failing": self.failing.load(Ordering::Relaxed),
            "last_error": *self.last_error.lock().expect("hook status"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_filters() {
        assert_eq!(Format::parse("ntfy"), Ok(Format::Ntfy));
        assert!(Format::parse("slack").unwrap_err().contains("json, ntfy"));
        let hook = WebhookSettings {
            url: WebhookSettings::parse_url("http://u:p@h:8/x?y").unwrap(),
            types: vec!["doorbell_pressed".into()],
            format: Format::Json,
        };
        assert!(hook.wants("doorbell_pressed"));
        assert!(!hook.wants("motion_detected"));
        assert_eq!(
            hook.cursor_name(),
            "webhook json http://h:8/x?y doorbell_pressed"
        );
        assert!(WebhookSettings::parse_url("ftp://h").is_err());
        assert_eq!(
            WebhookSettings::parse_url("https://ntfy.sh/door").is_ok(),
            HTTPS_SUPPORTED
        );
    }
}
