//! Outbound delivery: the MQTT bridge and the webhooks, as the app starts them and as
//! `/api/status` and `/metrics` show them. Each has a delivery cursor in the store
//! ([`crate::events::delivery`]); the figures here are read from the cursors and the counters
//! the threads keep, never estimated.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use serde_json::Value;

use crate::app::Ctx;
use crate::events::EventHub;
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
    /// No thread starts yet: see [`Outbound::start`].
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

    /// Starts the bridge and one sender per hook. Nothing here waits for a broker or a
    /// receiver: an unreachable one is retried by its own thread.
    pub fn start(
        &self,
        settings: &OutboundSettings,
        ctx: &Arc<Ctx>,
    ) -> Result<Vec<(String, JoinHandle<()>)>, String> {
        let mut threads = Vec::new();
        if let (Some(mqtt), Some(status)) = (&settings.mqtt, &self.mqtt) {
            let handle = crate::mqtt::start(mqtt.clone(), Arc::clone(status), Arc::clone(ctx))
                .map_err(|e| format!("cannot start the MQTT thread: {e}"))?;
            threads.push(("mqtt".to_string(), handle));
        }
        let identity = crate::webhooks::Identity {
            public_url: settings.public_url.clone(),
            device_id: settings.device_id.clone(),
        };
        for (index, (hook, status)) in settings.webhooks.iter().zip(&self.webhooks).enumerate() {
            let handle = crate::webhooks::start(
                index,
                hook.clone(),
                Arc::clone(status),
                identity.clone(),
                &ctx.events,
                ctx.shutdown.clone(),
            )
            .map_err(|e| format!("cannot start webhook {index}'s thread: {e}"))?;
            threads.push((format!("webhook-{index}"), handle));
        }
        Ok(threads)
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

    /// Prometheus text for the bridge and the hooks (hooks labelled by their index in the
    /// config: their URLs may hold secrets).
    pub fn metrics_text(&self, last_event_id: u64) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            if samples.is_empty() {
                return;
            }
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |value: u64| vec![(String::new(), value)];
        if let Some(m) = &self.mqtt {
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            metric(
                "porchlight_mqtt_connected",
                "gauge",
                "1 while connected to the MQTT broker.",
                &one(u64::from(m.connected.load(Ordering::Relaxed))),
            );
            metric(
                "porchlight_mqtt_last_published_id",
                "gauge",
                "Every event up to this id is acknowledged by the broker.",
                &one(m.cursor.position()),
            );
            metric(
                "porchlight_mqtt_backlog_events",
                "gauge",
                "Stored events the broker has not acknowledged yet.",
                &one(m.backlog(last_event_id)),
            );
            metric(
                "porchlight_mqtt_events_published_total",
                "counter",
                "Events published and acknowledged (PUBACK).",
                &one(load(&m.events_published)),
            );
            metric(
                "porchlight_mqtt_connects_total",
                "counter",
                "Connections made to the broker.",
                &one(load(&m.connects)),
            );
            metric(
                "porchlight_mqtt_failures_total",
                "counter",
                "Failed connection attempts and lost connections.",
                &one(load(&m.failures)),
            );
            metric(
                "porchlight_mqtt_events_lost_total",
                "counter",
                "Events deleted by retention before they could be published.",
                &one(load(&m.events_lost)),
            );
        }
        let per_hook = |value: &dyn Fn(&HookStatus) -> u64| -> Vec<(String, u64)> {
            self.webhooks
                .iter()
                .enumerate()
                .map(|(i, h)| (format!("{{hook=\"{i}\"}}"), value(h)))
                .collect()
        };
        metric(
            "porchlight_webhook_last_delivered_id",
            "gauge",
            "Every event up to this id is delivered to the hook (or not of its types).",
            &per_hook(&|h| h.cursor.position()),
        );
        metric(
            "porchlight_webhook_backlog_events",
            "gauge",
            "Stored events the hook has not handled yet.",
            &per_hook(&|h| h.backlog(last_event_id)),
        );
        metric(
            "porchlight_webhook_delivered_total",
            "counter",
            "Events the receiver accepted with a 2xx.",
            &per_hook(&|h| h.delivered.load(Ordering::Relaxed)),
        );
        metric(
            "porchlight_webhook_failures_total",
            "counter",
            "Delivery attempts that failed (no answer, or not 2xx).",
            &per_hook(&|h| h.failures.load(Ordering::Relaxed)),
        );
        out
    }
}
