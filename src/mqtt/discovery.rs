//! Home Assistant MQTT discovery: the retained configs under
//! `<ha_discovery_prefix>/<component>/<device_id>/<object>/config` that make one porchlight
//! appear in Home Assistant as one device with its entities, no YAML needed.
//!
//! Keys are Home Assistant's documented option names, written out in full (discovery also
//! accepts abbreviations; full names are what a person debugging with `mosquitto_sub` can
//! read). The unit tests check every key against the options Home Assistant documents for the
//! component (`homeassistant/components/mqtt/*.py` schemas and the `*.mqtt` integration pages).
//!
//! Every entity has a `unique_id` (so Home Assistant lets users rename it and keeps its
//! history), the device block (so all of them group under one device, linked to the dashboard
//! by `configuration_url`), and the availability topic (so they show `unavailable` when the
//! porchlight is off or gone — the broker publishes the Last Will for us on a crash).

use serde_json::{Map, Value, json};

use super::MqttSettings;

/// The topic holding the motion state (`ON`/`OFF`, retained), set from `motion_detected` and
/// `motion_ended` events.
pub const MOTION_TOPIC: &str = "motion";
/// The retained picture of the latest event that has one.
pub const SNAPSHOT_TOPIC: &str = "snapshot";
/// The retained status object.
pub const STATUS_TOPIC: &str = "status";
pub const AVAILABILITY_TOPIC: &str = "availability";

/// One entity: where its config goes and what it says.
pub struct Entity {
    pub component: &'static str,
    pub object: &'static str,
    /// Only announced with `mqtt_commands` on (a button that runs a command).
    pub needs_commands: bool,
    /// The entity's own options, in the order they are written.
    fields: &'static [(&'static str, Field)],
}

/// The value of one of an entity's own options. The configs are data, read by one loop: a
/// `json!` closure per entity compiled to ~2 KB of code each (16 KB for the eight) for what
/// is a table, and discovery runs once per broker connection, so nothing is slower.
enum Field {
    Text(&'static str),
    /// A topic under the bridge's prefix (`mqtt_prefix`/suffix).
    Topic(&'static str),
    Texts(&'static [&'static str]),
}

use Field::{Text, Texts, Topic};

/// Every entity porchlight can announce, in the order they are published.
pub const ENTITIES: &[Entity] = &[
    Entity {
        component: "event",
        object: "doorbell",
        needs_commands: false,
        fields: &[
            ("name", Text("Doorbell")),
            ("device_class", Text("doorbell")),
            ("state_topic", Topic("events/doorbell_pressed")),
            ("event_types", Texts(&["doorbell_pressed"])),
        ],
    },
    Entity {
        component: "binary_sensor",
        object: "motion",
        needs_commands: false,
        fields: &[
            ("name", Text("Motion")),
            ("device_class", Text("motion")),
            ("state_topic", Topic(MOTION_TOPIC)),
            ("payload_on", Text("ON")),
            ("payload_off", Text("OFF")),
        ],
    },
    Entity {
        component: "camera",
        object: "snapshot",
        needs_commands: false,
        fields: &[
            ("name", Text("Last event")),
            ("topic", Topic(SNAPSHOT_TOPIC)),
        ],
    },
    Entity {
        component: "sensor",
        object: "cpu",
        needs_commands: false,
        fields: &[
            ("name", Text("CPU")),
            ("state_topic", Topic(STATUS_TOPIC)),
            ("value_template", Text("{{ value_json.cpu_percent }}")),
            ("unit_of_measurement", Text("%")),
            ("state_class", Text("measurement")),
            ("entity_category", Text("diagnostic")),
            ("icon", Text("mdi:cpu-32-bit")),
        ],
    },
    Entity {
        component: "sensor",
        object: "temperature",
        needs_commands: false,
        fields: &[
            ("name", Text("Temperature")),
            ("device_class", Text("temperature")),
            ("state_topic", Topic(STATUS_TOPIC)),
            // `null` (no thermal zone) renders as None: Home Assistant shows "unknown".
            ("value_template", Text("{{ value_json.temperature_c }}")),
            ("unit_of_measurement", Text("°C")),
            ("state_class", Text("measurement")),
            ("entity_category", Text("diagnostic")),
        ],
    },
    Entity {
        component: "sensor",
        object: "viewers",
        needs_commands: false,
        fields: &[
            ("name", Text("Video viewers")),
            ("state_topic", Topic(STATUS_TOPIC)),
            ("value_template", Text("{{ value_json.clients.video }}")),
            ("state_class", Text("measurement")),
            ("icon", Text("mdi:eye")),
        ],
    },
    Entity {
        component: "button",
        object: "ring",
        needs_commands: true,
        fields: &[
            ("name", Text("Ring test doorbell")),
            ("command_topic", Topic("command/trigger_doorbell")),
            ("payload_press", Text("{}")),
            ("icon", Text("mdi:bell-ring")),
        ],
    },
    Entity {
        component: "button",
        object: "restart_camera",
        needs_commands: true,
        fields: &[
            ("name", Text("Restart camera")),
            ("device_class", Text("restart")),
            ("command_topic", Topic("command/restart_pipeline")),
            ("payload_press", Text("{}")),
            ("entity_category", Text("config")),
        ],
    },
];

impl Entity {
    pub fn config_topic(&self, settings: &MqttSettings) -> String {
        format!(
            "{}/{}/{}/{}/config",
            settings.ha_discovery_prefix, self.component, settings.device_id, self.object
        )
    }

    /// Whether these settings announce the entity (else its config is removed).
    pub fn announced(&self, settings: &MqttSettings) -> bool {
        settings.ha_discovery && (!self.needs_commands || settings.commands)
    }

    /// The whole config: the entity's own fields plus what every entity carries.
    pub fn config(&self, settings: &MqttSettings) -> Value {
        let mut config = Map::new();
        for (key, field) in self.fields {
            let value = match field {
                Text(text) => Value::from(*text),
                Topic(suffix) => Value::from(settings.topic(suffix)),
                Texts(texts) => Value::from(texts.to_vec()),
            };
            config.insert(key.to_string(), value);
        }
        config.insert(
            "unique_id".into(),
            format!("porchlight_{}_{}", settings.device_id, self.object).into(),
        );
        config.insert(
            "availability_topic".into(),
            settings.topic(AVAILABILITY_TOPIC).into(),
        );
        config.insert("payload_available".into(), "online".into());
        config.insert("payload_not_available".into(), "offline".into());
        config.insert("device".into(), device(settings));
        config.insert(
            "origin".into(),
            json!({"name": "porchlight", "sw_version": env!("CARGO_PKG_VERSION")}),
        );
        Value::Object(config)
    }
}

/// The device block shared by every entity: the same `identifiers` tie them together.
fn device(settings: &MqttSettings) -> Value {
    let mut device = json!({
        "identifiers": [format!("porchlight_{}", settings.device_id)],
        "name": format!("porchlight {}", settings.device_id),
        "manufacturer": "porchlight",
        "model": "Doorbell camera",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(url) = &settings.public_url {
        device["configuration_url"] = Value::String(url.clone());
    }
    device
}

/// `(topic, retained payload)` for every entity: its config, or an empty payload (which
/// deletes the retained config, and the entity with it) when not announced.
pub fn messages(settings: &MqttSettings) -> Vec<(String, Vec<u8>)> {
    ENTITIES
        .iter()
        .map(|entity| {
            let payload = if entity.announced(settings) {
                crate::json::text(&entity.config(settings)).into_bytes()
            } else {
                Vec::new()
            };
            (entity.config_topic(settings), payload)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::ServiceUrl;

    fn settings(commands: bool, discovery: bool) -> MqttSettings {
        let broker =
            ServiceUrl::parse("mqtt://broker", |_| Some(1883), "mqtt://").expect("valid url");
        let mut s = MqttSettings::new(broker);
        s.device_id = "front".into();
        s.prefix = "porchlight/front".into();
        s.commands = commands;
        s.ha_discovery = discovery;
        s.public_url = Some("http://door.local:8080".into());
        s
    }

    /// Options every MQTT entity accepts (`MQTT_ENTITY_COMMON_SCHEMA` with the availability
    /// schema, and `MQTT_BASE_SCHEMA`'s qos/encoding), as Home Assistant documents them.
    const COMMON: &[&str] = &[
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "payload_available",
        "payload_not_available",
        "device",
        "enabled_by_default",
        "entity_category",
        "entity_picture",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "object_id",
        "default_entity_id",
        "origin",
        "unique_id",
        "qos",
        "encoding",
    ];

    /// Each component's own options (its `PLATFORM_SCHEMA` / `DISCOVERY_SCHEMA`).
    fn own_options(component: &str) -> &'static [&'static str] {
        match component {
            "event" => &[
                "device_class",
                "event_types",
                "state_topic",
                "value_template",
            ],
            "binary_sensor" => &[
                "device_class",
                "expire_after",
                "force_update",
                "off_delay",
                "payload_off",
                "payload_on",
                "state_topic",
                "value_template",
            ],
            "camera" => &["topic", "image_encoding"],
            "sensor" => &[
                "device_class",
                "expire_after",
                "force_update",
                "last_reset_value_template",
                "options",
                "state_class",
                "state_topic",
                "suggested_display_precision",
                "unit_of_measurement",
                "value_template",
            ],
            "button" => &[
                "command_template",
                "command_topic",
                "device_class",
                "payload_press",
                "retain",
            ],
            other => panic!("no documented options for {other}"),
        }
    }

    /// The options each component requires.
    fn required(component: &str) -> &'static [&'static str] {
        match component {
            "event" => &["state_topic", "event_types"],
            "binary_sensor" | "sensor" => &["state_topic"],
            "camera" => &["topic"],
            "button" => &["command_topic"],
            _ => &[],
        }
    }

    const DEVICE_OPTIONS: &[&str] = &[
        "configuration_url",
        "connections",
        "hw_version",
        "identifiers",
        "manufacturer",
        "model",
        "model_id",
        "name",
        "serial_number",
        "suggested_area",
        "sw_version",
        "via_device",
    ];

    /// Device classes, state classes and entity categories Home Assistant defines, for the
    /// ones used here.
    fn valid_value(component: &str, key: &str, value: &str) -> bool {
        match (component, key) {
            ("event", "device_class") => ["button", "doorbell", "motion"].contains(&value),
            ("binary_sensor", "device_class") => value == "motion",
            ("sensor", "device_class") => value == "temperature",
            ("button", "device_class") => ["identify", "restart", "update"].contains(&value),
            (_, "state_class") => ["measurement", "total", "total_increasing"].contains(&value),
            (_, "entity_category") => ["config", "diagnostic"].contains(&value),
            _ => true,
        }
    }

    #[test]
    fn every_key_is_a_documented_option_and_every_required_one_is_there() {
        let s = settings(true, true);
        for entity in ENTITIES {
            let config = entity.config(&s);
            let object = config.as_object().unwrap();
            for key in object.keys() {
                assert!(
                    COMMON.contains(&key.as_str())
                        || own_options(entity.component).contains(&key.as_str()),
                    "{}/{}: {key} is not a documented option",
                    entity.component,
                    entity.object
                );
                if let Some(text) = object[key].as_str() {
                    assert!(
                        valid_value(entity.component, key, text),
                        "{}: {key} = {text}",
                        entity.component
                    );
                }
            }
            for key in required(entity.component) {
                assert!(
                    object.contains_key(*key),
                    "{}: {key} missing",
                    entity.object
                );
            }
            for key in object["device"].as_object().unwrap().keys() {
                assert!(DEVICE_OPTIONS.contains(&key.as_str()), "device.{key}");
            }
            assert_eq!(
                object["unique_id"],
                format!("porchlight_front_{}", entity.object)
            );
            assert_eq!(
                object["availability_topic"],
                "porchlight/front/availability"
            );
            assert_eq!(object["device"]["identifiers"][0], "porchlight_front");
            assert_eq!(
                object["device"]["configuration_url"],
                "http://door.local:8080"
            );
            assert_eq!(object["origin"]["name"], "porchlight");
        }
    }

    #[test]
    fn unique_ids_are_unique_and_topics_follow_the_contract() {
        let s = settings(true, true);
        let mut ids: Vec<String> = ENTITIES
            .iter()
            .map(|e| e.config(&s)["unique_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ENTITIES.len());
        let topics: Vec<String> = messages(&s).into_iter().map(|(t, _)| t).collect();
        assert!(topics.contains(&"homeassistant/event/front/doorbell/config".to_string()));
        assert!(topics.contains(&"homeassistant/camera/front/snapshot/config".to_string()));
        assert!(topics.contains(&"homeassistant/button/front/ring/config".to_string()));
    }

    #[test]
    fn buttons_only_with_commands_and_nothing_without_discovery() {
        let without_commands = messages(&settings(false, true));
        for (topic, payload) in &without_commands {
            assert_eq!(
                payload.is_empty(),
                topic.contains("/button/"),
                "{topic}: buttons removed, the rest announced"
            );
        }
        assert!(
            messages(&settings(true, false))
                .iter()
                .all(|(_, payload)| payload.is_empty()),
            "discovery off removes every config"
        );
    }

    /// Each entity's own options as published (the rest of every config is [`tail`]).
    const GOLDEN: &[(&str, &str)] = &[
        (
            "homeassistant/event/front/doorbell/config",
            r#""name":"Doorbell","device_class":"doorbell","state_topic":"porchlight/front/events/doorbell_pressed","event_types":["doorbell_pressed"]"#,
        ),
        (
            "homeassistant/binary_sensor/front/motion/config",
            r#""name":"Motion","device_class":"motion","state_topic":"porchlight/front/motion","payload_on":"ON","payload_off":"OFF""#,
        ),
        (
            "homeassistant/camera/front/snapshot/config",
            r#""name":"Last event","topic":"porchlight/front/snapshot""#,
        ),
        (
            "homeassistant/sensor/front/cpu/config",
            r#""name":"CPU","state_topic":"porchlight/front/status","value_template":"{{ value_json.cpu_percent }}","unit_of_measurement":"%","state_class":"measurement","entity_category":"diagnostic","icon":"mdi:cpu-32-bit""#,
        ),
        (
            "homeassistant/sensor/front/temperature/config",
            r#""name":"Temperature","device_class":"temperature","state_topic":"porchlight/front/status","value_template":"{{ value_json.temperature_c }}","unit_of_measurement":"°C","state_class":"measurement","entity_category":"diagnostic""#,
        ),
        (
            "homeassistant/sensor/front/viewers/config",
            r#""name":"Video viewers","state_topic":"porchlight/front/status","value_template":"{{ value_json.clients.video }}","state_class":"measurement","icon":"mdi:eye""#,
        ),
        (
            "homeassistant/button/front/ring/config",
            r#""name":"Ring test doorbell","command_topic":"porchlight/front/command/trigger_doorbell","payload_press":"{}","icon":"mdi:bell-ring""#,
        ),
        (
            "homeassistant/button/front/restart_camera/config",
            r#""name":"Restart camera","device_class":"restart","command_topic":"porchlight/front/command/restart_pipeline","payload_press":"{}","entity_category":"config""#,
        ),
    ];

    /// What every config ends with, after its own options.
    fn tail(object: &str) -> String {
        format!(
            r#""unique_id":"porchlight_front_{object}","availability_topic":"porchlight/front/availability","payload_available":"online","payload_not_available":"offline","device":{{"identifiers":["porchlight_front"],"name":"porchlight front","manufacturer":"porchlight","model":"Doorbell camera","sw_version":"{VERSION}","configuration_url":"http://door.local:8080"}},"origin":{{"name":"porchlight","sw_version":"{VERSION}"}}"#,
            VERSION = env!("CARGO_PKG_VERSION")
        )
    }

    /// Every config byte for byte, as published: they stay retained on the broker, so a
    /// change here is a change Home Assistant sees.
    #[test]
    fn configs_are_published_byte_for_byte() {
        let published: Vec<(String, String)> = messages(&settings(true, true))
            .into_iter()
            .map(|(topic, payload)| (topic, String::from_utf8(payload).unwrap()))
            .collect();
        let expected: Vec<(String, String)> = GOLDEN
            .iter()
            .map(|(topic, own)| {
                let object = topic.split('/').nth(3).unwrap();
                (topic.to_string(), format!("{{{own},{}}}", tail(object)))
            })
            .collect();
        assert_eq!(published, expected);
    }

    #[test]
    fn without_public_url_there_is_no_configuration_url() {
        let mut s = settings(false, true);
        s.public_url = None;
        let config = ENTITIES[0].config(&s);
        assert!(config["device"].get("configuration_url").is_none());
    }
}
