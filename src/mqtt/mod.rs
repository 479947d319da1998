//! The MQTT bridge: porchlight on a home's broker, for Home Assistant and anything else that
//! speaks MQTT (`../shared/spec/API.md`, "MQTT and Home Assistant").
//!
//! - `codec.rs` — MQTT 3.1.1 packets encoded and decoded with no I/O (the fuzzable part).
//! - `connection.rs` — one broker connection: TCP, CONNECT/CONNACK, a reader thread.
//! - `outbox.rs` — QoS 1 bookkeeping: packet ids, the in-flight window, which event ids the
//!   broker has acknowledged (the only thing that moves the delivery cursor).
//! - `discovery.rs` — Home Assistant discovery configs.
//! - `commands.rs` — `<prefix>/command/<name>` → the WebSocket command of that name.
//! - `bridge.rs` — the thread: connect, publish from the store, reconnect with backoff.
//!
//! The bridge is one thread (plus a reader thread per connection) with blocking sockets. It
//! reads events from the store after its persisted cursor ([`crate::events::Feed`]), so the
//! broker being slow or away never touches the event writer, streams or video: the hub only
//! ever `try_send`s to the bridge's bounded live queue, like to any client.

pub(crate) mod bridge;
pub mod codec;
mod commands;
mod connection;
pub(crate) mod discovery;
mod outbox;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::events::DeliveryCursor;
use crate::url::ServiceUrl;

pub use bridge::start;

/// The broker port when `mqtt_url` names none.
pub const DEFAULT_PORT: u16 = 1883;

/// What the bridge needs to know, validated (`mqtt_url`, `device_id`, `mqtt_prefix`,
/// `ha_discovery`, `ha_discovery_prefix`, `mqtt_commands`, `public_url`).
#[derive(Clone, Debug)]
pub struct MqttSettings {
    pub broker: ServiceUrl,
    pub device_id: String,
    /// Topic prefix of everything the device publishes (`porchlight/<device_id>` by default).
    pub prefix: String,
    pub ha_discovery: bool,
    pub ha_discovery_prefix: String,
    pub commands: bool,
    /// Where people reach the dashboard (`configuration_url` of the Home Assistant device).
    pub public_url: Option<String>,
}

impl MqttSettings {
    /// Settings for `broker` with every other key at its default.
    pub fn new(broker: ServiceUrl) -> MqttSettings {
        let device_id = default_device_id();
        MqttSettings {
            broker,
            prefix: default_prefix(&device_id),
            device_id,
            ha_discovery: true,
            ha_discovery_prefix: "homeassistant".into(),
            commands: false,
            public_url: None,
        }
    }

    /// The MQTT client id: unique per device on the broker (a second connection with the same
    /// id makes the broker drop the first).
    pub fn client_id(&self) -> String {
        format!("porchlight-{}", self.device_id)
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.prefix)
    }

    /// The key of this bridge's delivery cursor: a different broker or prefix is a different
    /// audience, which starts from the newest event rather than replaying history to it.
    pub fn cursor_name(&self) -> String {
        format!("mqtt {} {}", self.broker.host_port(), self.prefix)
    }
}

/// `mqtt_url`: `mqtt://[user:pass@]host[:port]`.
pub fn parse_url(text: &str) -> Result<ServiceUrl, String> {
    let url = ServiceUrl::parse(
        text,
        |scheme| (scheme == "mqtt").then_some(DEFAULT_PORT),
        "mqtt://[user:pass@]host[:port]",
    )
    .map_err(|why| {
        if text.to_ascii_lowercase().starts_with("mqtts://") {
            "mqtts:// (TLS) is not supported: use mqtt:// to a broker on the local network, \
             or a TLS tunnel such as stunnel on this device"
                .to_string()
        } else {
            why
        }
    })?;
    if url.path != "/" {
        return Err(format!(
            "an MQTT URL has no path (got {:?}): mqtt://[user:pass@]host[:port]",
            url.path
        ));
    }
    Ok(url)
}

/// `device_id`: `[a-z0-9_-]{1,64}`, so it can stand in topics and entity ids as it is.
pub fn check_device_id(text: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("{text:?} must match [a-z0-9_-]{{1,64}}"))
    }
}

/// The host name, lower-cased, with anything outside `[a-z0-9_-]` turned into `-`
/// (`Door.local` → `door-local`); `porchlight` if there is none.
pub fn default_device_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    device_id_from_host(host.trim())
}

fn device_id_from_host(host: &str) -> String {
    let id: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '-',
        })
        .take(64)
        .collect();
    let id = id.trim_matches('-').to_string();
    if id.is_empty() {
        "porchlight".into()
    } else {
        id
    }
}

pub fn default_prefix(device_id: &str) -> String {
    format!("porchlight/{device_id}")
}

/// `mqtt_prefix` and `ha_discovery_prefix`: a topic with no wildcard, no empty level, no
/// leading or trailing `/`, at most 200 bytes (topics are built by appending to it), and not
/// starting with `$`: such topics belong to the broker (MQTT 3.1.1, 4.7.2: `$SYS/...`), which
/// may refuse or drop a client's publishes there, and a `#` subscription never matches them,
/// so the device would look silent.
pub fn check_topic_prefix(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > 200 {
        return Err("must be 1 to 200 bytes long".into());
    }
    if text.starts_with('$') {
        return Err(format!(
            "{text:?} starts with '$': topics starting with '$' are the broker's own ($SYS)"
        ));
    }
    if text.contains(['+', '#', '\0']) {
        return Err(format!(
            "{text:?} cannot contain the wildcards + or # (or NUL)"
        ));
    }
    if text.split('/').any(str::is_empty) {
        return Err(format!(
            "{text:?} has an empty level (a leading, trailing or double '/')"
        ));
    }
    Ok(())
}

/// What the bridge is doing, measured where it happens, for `/api/status` and `/metrics`.
pub struct BridgeStatus {
    pub broker: String,
    pub connected: AtomicBool,
    pub cursor: Arc<DeliveryCursor>,
    /// Events published and acknowledged by the broker.
    pub events_published: AtomicU64,
    /// Connections made (the first and every reconnect).
    pub connects: AtomicU64,
    /// Connection attempts that failed, and connections lost.
    pub failures: AtomicU64,
    /// Events deleted by retention before they were published.
    pub events_lost: AtomicU64,
}

impl BridgeStatus {
    pub fn new(broker: String, cursor: Arc<DeliveryCursor>) -> BridgeStatus {
        BridgeStatus {
            broker,
            connected: AtomicBool::new(false),
            cursor,
            events_published: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            events_lost: AtomicU64::new(0),
        }
    }

    /// Stored events not yet acknowledged by the broker: the newest id minus the cursor.
    pub fn backlog(&self, last_event_id: u64) -> u64 {
        last_event_id.saturating_sub(self.cursor.position())
    }

    /// The `mqtt` part of the status object.
    pub fn to_json(&self, last_event_id: u64) -> Value {
        json!({
            "broker": self.broker,
            "connected": self.connected.load(Ordering::Relaxed),
            "last_published_id": self.cursor.position(),
            "backlog": self.backlog(last_event_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        let url = parse_url("mqtt://ha:secret@broker.lan").unwrap();
        assert_eq!(url.host_port(), "broker.lan:1883");
        assert_eq!(url.password.as_deref(), Some("secret"));
        assert!(parse_url("mqtt://broker.lan/x").is_err());
        assert!(parse_url("http://broker.lan").is_err());
        assert!(parse_url("mqtts://broker.lan").unwrap_err().contains("TLS"));
    }

    #[test]
    fn device_ids_and_prefixes() {
        assert_eq!(device_id_from_host("Door.Local"), "door-local");
        assert_eq!(device_id_from_host(""), "porchlight");
        assert_eq!(device_id_from_host("..."), "porchlight");
        assert!(check_device_id("front_door-2").is_ok());
        for bad in ["", "Door", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_device_id(bad).is_err(), "{bad}");
        }
        assert!(check_topic_prefix("porchlight/door").is_ok());
        assert!(check_topic_prefix("a/$b").is_ok());
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/+",
            "a/#",
            "$SYS/x",
            "$porch",
            &"x".repeat(201),
        ] {
            assert!(check_topic_prefix(bad).is_err(), "{bad}");
        }
    }
}
