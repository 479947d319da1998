//! Outbound delivery: the MQTT bridge and the webhooks, as the app starts them and as
//! `/api/status` and `/metrics` show them. Each has a delivery cursor in the store
//! ([`crate::events::delivery`]); the figures here are read from the cursors and the counters
//! the threads keep, never estimated.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::events::EventHub;
use crate::metrics::{Exposition, Samples, Series};
use crate::mqtt::{BridgeStatus, MqttSettings};
use crate::webhooks::{HookStatus, WebhookSettings};

/// What to deliver where (from the config).
#[derive(Clone, Debug, Default)]
pub struct OutboundSettings {
    pub mqtt: Option<MqttSettings>,
    pub webhooks: Vec<WebhookSettings>,
    pub public_url: Option<String>,
    /// Names this door in notifications.
    pub device_id: String,
}

impl OutboundSettings {
    /// The delivery settings in `config`, with the defaults that depend on other keys
    /// (`device_id` from the host name, `mqtt_prefix` from `device_id`) filled in.
    pub fn from_config(config: &crate::config::Config) -> OutboundSettings {
        let device_id = match config.device_id.as_str() {
            "" => crate::mqtt::default_device_id(),
            id => id.to_string(),
        };
        let mqtt = config.mqtt_url.as_ref().map(|broker| MqttSettings {
            broker: broker.clone(),
            prefix: match config.mqtt_prefix.as_str() {
                "" => crate::mqtt::default_prefix(&device_id),
                prefix => prefix.to_string(),
            },
            device_id: device_id.clone(),
            ha_discovery: config.ha_discovery,
            ha_discovery_prefix: config.ha_discovery_prefix.clone(),
            commands: config.mqtt_commands,
            public_url: config.public_url.clone(),
        });
        OutboundSettings {
            mqtt,
            webhooks: config.webhooks.clone(),
            public_url: config.public_url.clone(),
            device_id,
        }
    }
}

/// The delivery threads' status, shared with status and metrics.
#[derive(Clone, Default)]
pub struct Outbound {
    pub mqtt: Option<Arc<BridgeStatus>>,
    pub webhooks: Vec<Arc<HookStatus>>,
}

impl Outbound {
    /// Registers every consumer's delivery cursor (where it left off, read from the store).
    /// No thread starts yet: `app` starts them once the server listens.
    pub fn prepare(settings: &OutboundSettings, events: &EventHub) -> Outbound {
        let cursors = events.delivery_cursors();
        let mqtt = settings.mqtt.as_ref().map(|mqtt| {
            let cursor = cursors.register(&mqtt.cursor_name(), events.reader());
            Arc::new(BridgeStatus::new(mqtt.broker.redacted(), cursor))
        });
        let webhooks = settings
            .webhooks
            .iter()
            .map(|hook| {
                let cursor = cursors.register(&hook.cursor_name(), events.reader());
                Arc::new(HookStatus::new(hook, cursor))
            })
            .collect();
        Outbound { mqtt, webhooks }
    }

    /// The status object's `mqtt` (or `null` when off) and `webhooks` parts.
    pub fn status_json(&self, last_event_id: u64) -> (Value, Value) {
        let mqtt = self
            .mqtt
            .as_ref()
            .map_or(Value::Null, |m| m.to_json(last_event_id));
        let hooks = self
            .webhooks
            .iter()
            .map(|h| h.to_json(last_event_id))
            .collect();
        (mqtt, Value::Array(hooks))
    }

    /// Writes the bridge's and the hooks' series (hooks labelled by their index in the config:
    /// their URLs may hold secrets); nothing for what is not configured.
    pub fn write_metrics(&self, exposition: &mut Exposition, last_event_id: u64) {
        if let Some(bridge) = &self.mqtt {
            exposition.series(MQTT_SERIES, &BridgeFigures::read(bridge, last_event_id));
        }
        if !self.webhooks.is_empty() {
            let hooks: Vec<HookFigures> = self
                .webhooks
                .iter()
                .map(|hook| HookFigures::read(hook, last_event_id))
                .collect();
            exposition.series(WEBHOOK_SERIES, &hooks);
        }
    }
}

/// The bridge's figures at the moment of a scrape.
pub struct BridgeFigures {
    connected: bool,
    last_published_id: u64,
    backlog: u64,
    published: u64,
    connects: u64,
    failures: u64,
    lost: u64,
}

impl BridgeFigures {
    fn read(bridge: &BridgeStatus, last_event_id: u64) -> BridgeFigures {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BridgeFigures {
            connected: bridge.connected.load(Ordering::Relaxed),
            last_published_id: bridge.cursor.position(),
            backlog: bridge.backlog(last_event_id),
            published: load(&bridge.events_published),
            connects: load(&bridge.connects),
            failures: load(&bridge.failures),
            lost: load(&bridge.events_lost),
        }
    }
}

/// Ids and counters stay far below 2^53, where f64 is exact.
fn sample(n: u64) -> f64 {
    n as f64
}

/// What `/metrics` shows of the MQTT bridge.
pub const MQTT_SERIES: &[Series<BridgeFigures>] = &[
    Series::gauge(
        "porchlight_mqtt_connected",
        "1 while connected to the MQTT broker.",
        |b, out| out.value(if b.connected { 1.0 } else { 0.0 }),
    ),
    Series::gauge(
        "porchlight_mqtt_last_published_id",
        "Every event up to this id is acknowledged by the broker.",
        |b, out| out.value(sample(b.last_published_id)),
    ),
    Series::gauge(
        "porchlight_mqtt_backlog_events",
        "Stored events the broker has not acknowledged yet.",
        |b, out| out.value(sample(b.backlog)),
    ),
    Series::counter(
        "porchlight_mqtt_events_published_total",
        "Events published and acknowledged (PUBACK).",
        |b, out| out.value(sample(b.published)),
    ),
    Series::counter(
        "porchlight_mqtt_connects_total",
        "Connections made to the broker.",
        |b, out| out.value(sample(b.connects)),
    ),
    Series::counter(
        "porchlight_mqtt_failures_total",
        "Failed connection attempts and lost connections.",
        |b, out| out.value(sample(b.failures)),
    ),
    Series::counter(
        "porchlight_mqtt_events_lost_total",
        "Events deleted by retention before they could be published.",
        |b, out| out.value(sample(b.lost)),
    ),
];

/// One hook's figures at the moment of a scrape.
pub struct HookFigures {
    last_delivered_id: u64,
    backlog: u64,
    delivered: u64,
    failures: u64,
}

impl HookFigures {
    fn read(hook: &HookStatus, last_event_id: u64) -> HookFigures {
        HookFigures {
            last_delivered_id: hook.cursor.position(),
            backlog: hook.backlog(last_event_id),
            delivered: hook.delivered.load(Ordering::Relaxed),
            failures: hook.failures.load(Ordering::Relaxed),
        }
    }
}

fn per_hook(hooks: &[HookFigures], out: &mut Samples<'_>, value: fn(&HookFigures) -> u64) {
    for (index, hook) in hooks.iter().enumerate() {
        out.labelled("hook", &index.to_string(), sample(value(hook)));
    }
}

/// What `/metrics` shows of the webhooks, one sample per hook.
pub const WEBHOOK_SERIES: &[Series<Vec<HookFigures>>] = &[
    Series::gauge(
        "porchlight_webhook_last_delivered_id",
        "Every event up to this id is delivered to the hook (or not of its types).",
        |hooks, out| per_hook(hooks, out, |h| h.last_delivered_id),
    ),
    Series::gauge(
        "porchlight_webhook_backlog_events",
        "Stored events the hook has not handled yet.",
        |hooks, out| per_hook(hooks, out, |h| h.backlog),
    ),
    Series::counter(
        "porchlight_webhook_delivered_total",
        "Events the receiver accepted with a 2xx.",
        |hooks, out| per_hook(hooks, out, |h| h.delivered),
    ),
    Series::counter(
        "porchlight_webhook_failures_total",
        "Delivery attempts that failed (no answer, or not 2xx).",
        |hooks, out| per_hook(hooks, out, |h| h.failures),
    ),
];
