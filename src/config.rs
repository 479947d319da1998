//! Configuration: defaults, then the TOML file, then command-line flags, validated into one
//! [`Config`]. Every error names the key or flag that was wrong, so the user can fix it from the
//! one line we print (exit status 2).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::TokenTable;
use crate::camera::CameraSpec;
use crate::doorbell::{ChimeSpec, DoorbellSpec};
use crate::url::ServiceUrl;
use crate::webhooks::{Format, WebhookSettings};

/// How a key can also be given on the command line (flags override the file).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Flag {
    /// File only.
    None,
    /// `--flag VALUE` (or `--flag=VALUE`), with the value's name for `--help`.
    Value(&'static str, &'static str),
    /// `--flag VALUE`, repeatable: the values form the key's list and replace the file's.
    Repeated(&'static str, &'static str),
    /// `--flag` alone sets the (boolean) key to true.
    Switch(&'static str),
}

impl Flag {
    /// The flag's name, if the key has one.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Flag::None => None,
            Flag::Value(name, _) | Flag::Repeated(name, _) | Flag::Switch(name) => Some(name),
        }
    }

    /// The flag as `--help` and the README show it: `--listen ADDR:PORT`.
    pub fn usage(self) -> Option<String> {
        match self {
            Flag::None => None,
            Flag::Value(name, value) | Flag::Repeated(name, value) => {
                Some(format!("{name} {value}"))
            }
            Flag::Switch(name) => Some(name.to_string()),
        }
    }
}

/// One config key. [`KEYS`] holds every one; the TOML parser, `--check-config`, the command
/// line's flags and `--help`, and the README's table (a unit test compares them) all come from it.
pub struct Key {
    pub name: &'static str,
    pub flag: Flag,
    /// What the key means, as the README and `--help` say it.
    pub doc: &'static str,
    set: fn(&mut Config, &toml::Value) -> Result<(), ConfigError>,
    show: fn(&Config) -> String,
}

impl Key {
    /// Looks a key up by name.
    pub fn named(name: &str) -> Option<&'static Key> {
        KEYS.iter().find(|key| key.name == name)
    }

    /// The key's current value in `config`, as TOML.
    pub fn show(&self, config: &Config) -> String {
        (self.show)(config)
    }

    /// The default, printed as TOML (the same text `--check-config` prints for it). Through
    /// `show` rather than a function of its own per key: one per key, each building a whole
    /// default `Config`, was ~10 KB of the binary for `--help` and the README test.
    pub fn default(&self) -> String {
        self.show(&Config::default())
    }

    /// The key's row in the README's configuration table.
    pub fn readme_row(&self) -> String {
        let flag = match self.flag {
            Flag::None => String::new(),
            Flag::Value(name, _) | Flag::Switch(name) => format!("`{name}`"),
            Flag::Repeated(..) => format!(
                "`{}` (repeatable; replaces the file's list)",
                self.flag.usage().unwrap_or_default()
            ),
        };
        let flag = if flag.is_empty() {
            flag
        } else {
            format!(" {flag}")
        };
        format!(
            "| `{}` |{flag} | `{}` | {} |",
            self.name,
            self.default(),
            self.doc
        )
    }
}

/// Declares every config key once: the [`Config`] field (with its type and doc line), its default
/// (any value TOML can hold, parsed by the key's own parser, so a default can never be invalid
/// without a test failing), its command-line flag, its parser (TOML value → field, with bounds;
/// errors name the key) and how `--check-config` prints it. From that one list the macro makes
/// the struct, `Default`, and [`KEYS`]. Adding a key is adding one entry.
macro_rules! config_keys {
    ($(
        #[doc = $doc:literal]
        $name:ident: $ty:ty = $default:expr,
        flag: $flag:expr,
        parse: $parse:expr,
        show: $show:expr;
    )+) => {
        /// The validated configuration the server runs with: one field per entry of [`KEYS`].
        #[derive(Clone, Debug)]
        pub struct Config {
            $( #[doc = $doc] pub $name: $ty, )+
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $( $name: {
                        let parse: fn(&str, &toml::Value) -> Result<$ty, ConfigError> = $parse;
                        parse(stringify!($name), &toml::Value::from($default))
                            .unwrap_or_else(|e| panic!("invalid default: {e}"))
                    }, )+
                }
            }
        }

        /// Every key the config file accepts, in the order `--check-config` and the README list them.
        ///
        /// A `static`, not a `const`: a `const` is copied into every crate that names it, and
        /// `main.rs` (the binary's own crate) does, so each key's closures were compiled twice
        /// (24 KB of the binary).
        pub static KEYS: &[Key] = &[
            $( Key {
                name: stringify!($name),
                flag: $flag,
                doc: $doc.trim_ascii(),
                set: |config, value| {
                    let parse: fn(&str, &toml::Value) -> Result<$ty, ConfigError> = $parse;
                    config.$name = parse(stringify!($name), value)?;
                    Ok(())
                },
                show: |config| {
                    let show: fn(&$ty) -> String = $show;
                    show(&config.$name)
                },
            }, )+
        ];
    };
}

config_keys! {
    /// address and port to listen on (`:0` picks a free port, logged at start)
    listen: SocketAddr = "127.0.0.1:8080",
        flag: Flag::Value("--listen", "ADDR:PORT"),
        parse: |key, value| parse_listen(as_str(key, value)?).map_err(|e| ConfigError::new(key, e)),
        show: quoted_display;
    /// event store (`events.sqlite3`), snapshots and clips (`clips/`); survives restarts and power cuts
    data_dir: PathBuf = "./porchlight-data",
        flag: Flag::Value("--data-dir", "DIR"),
        parse: |key, value| non_empty_path(key, as_str(key, value)?),
        show: |path| quoted_path(path);
    /// serve the dashboard from this folder instead of the copy inside the binary (`""`: the embedded copy)
    www: Option<PathBuf> = "",
        flag: Flag::Value("--www", "DIR"),
        parse: |key, value| {
            let text = as_str(key, value)?;
            if text.is_empty() {
                return Ok(None);
            }
            // Every page would be a 404: say so now rather than serve nothing.
            match std::fs::metadata(text) {
                Ok(meta) if meta.is_dir() => Ok(Some(PathBuf::from(text))),
                Ok(_) => Err(ConfigError::new(key, format!("{text} is not a directory"))),
                Err(e) => Err(ConfigError::new(key, format!("cannot use {text}: {e}"))),
            }
        },
        show: |www| quoted_path(&www.clone().unwrap_or_default());
    /// `synthetic:WxH@FPS`, `v4l2:/dev/videoN[:WxH@FPS]` or `file:PATH[@FPS]` (see "Live video")
    camera: CameraSpec = "synthetic:640x480@15",
        flag: Flag::Value("--camera", "SPEC"),
        parse: |key, value| CameraSpec::parse(as_str(key, value)?).map_err(|e| ConfigError::new(key, e)),
        show: quoted_display;
    /// `sim` (pressed through the API) or `gpio:PIN[:active-low][:debounce=MS]`
    doorbell: DoorbellSpec = "sim",
        flag: Flag::Value("--doorbell", "SPEC"),
        parse: |key, value| DoorbellSpec::parse(as_str(key, value)?).map_err(|e| ConfigError::new(key, e)),
        show: quoted_display;
    /// who may do what: `ROLE:TOKEN` entries (`["admin:SECRET", "viewer:OTHER"]`); roles `viewer` ⊂ `control` ⊂ `admin`; tokens are at least 8 characters of `A-Z a-z 0-9 - . _ ~ / =`
    tokens: TokenTable = Vec::<String>::new(),
        flag: Flag::Repeated("--token", "ROLE:TOKEN"),
        parse: parse_tokens,
        show: |tokens| string_list(tokens.roles().map(|role| format!("{}:********", role.name())));
    /// allow a non-loopback listener without tokens (everyone is admin)
    insecure_no_auth: bool = false,
        flag: Flag::Switch("--insecure-no-auth"),
        parse: as_bool,
        show: |on| on.to_string();
    /// `error`, `warn`, `info`, `debug`, `trace`
    log_level: log::LevelFilter = "info",
        flag: Flag::Value("--log-level", "LEVEL"),
        parse: |key, value| parse_log_level(as_str(key, value)?).map_err(|e| ConfigError::new(key, e)),
        show: |level| quoted(&level.to_string().to_lowercase());
    /// extra browser origins (`"http://door.local:8080"`) allowed to POST and open the WebSocket; the page's own origin always is
    allowed_origins: Vec<String> = Vec::<String>::new(),
        flag: Flag::None,
        parse: |key, value| {
            let mut origins = Vec::new();
            for item in as_array(key, value)? {
                let text = item.as_str().ok_or_else(|| {
                    ConfigError::new(key, "each entry must be a string like \"http://door.local:8080\"")
                })?;
                origins.push(parse_origin(text).map_err(|e| ConfigError::new(key, e))?);
            }
            Ok(origins)
        },
        show: |origins| string_list(origins.iter().cloned());
    /// without tokens, host names besides loopback and the listen address that requests may use (`["door.local"]`); any other `Host` gets 403, so no web page can reach porchlight by DNS rebinding
    allowed_hosts: Vec<String> = Vec::<String>::new(),
        flag: Flag::None,
        parse: |key, value| {
            let mut hosts = Vec::new();
            for item in as_array(key, value)? {
                let text = item.as_str().ok_or_else(|| {
                    ConfigError::new(key, "each entry must be a string like \"door.local\"")
                })?;
                hosts.push(parse_allowed_host(text).map_err(|e| ConfigError::new(key, e))?);
            }
            Ok(hosts)
        },
        show: |hosts| string_list(hosts.iter().cloned());
    /// SSE heartbeat interval when no event flows (seconds, 0.05 to 3600); also the WebSocket keep-alive: a client silent this long is pinged, and dropped if it stays silent as long again
    heartbeat_s: f64 = 15.0,
        flag: Flag::None,
        parse: |key, value| seconds(key, value, 0.05, 3600.0),
        show: float;
    /// how often `/stream/system-status` sends the status object (seconds, 0.05 to 3600)
    status_interval_s: f64 = 2.0,
        flag: Flag::None,
        parse: |key, value| seconds(key, value, 0.05, 3600.0),
        show: float;
    /// events kept; the oldest are deleted first (1 to 100000000)
    max_events: u64 = 10_000,
        flag: Flag::None,
        parse: |key, value| count(key, value, 1, 100_000_000),
        show: number;
    /// snapshot bytes kept (256 MiB by default); the oldest pictures are deleted first
    max_snapshot_bytes: u64 = 256 * 1024 * 1024,
        flag: Flag::None,
        parse: |key, value| count(key, value, 0, u64::MAX / 2),
        show: number;
    /// open TCP connections; past it new ones get 503 (1 to 100000)
    max_connections: usize = 1024,
        flag: Flag::None,
        parse: |key, value| count(key, value, 1, 100_000),
        show: number;
    /// open TCP connections from one client address; past it that address gets 503 while others are served (1 to 100000; behind a proxy, every client is the proxy)
    max_connections_per_ip: usize = 32,
        flag: Flag::None,
        parse: |key, value| count(key, value, 1, 100_000),
        show: number;
    /// SSE streams (events and status together); past it 503 with `Retry-After`
    max_sse_clients: usize = 600,
        flag: Flag::None,
        parse: |key, value| count(key, value, 0, 100_000),
        show: number;
    /// WebSocket sessions
    max_ws_clients: usize = 200,
        flag: Flag::None,
        parse: |key, value| count(key, value, 0, 100_000),
        show: number;
    /// MJPEG viewers
    max_video_clients: usize = 32,
        flag: Flag::None,
        parse: |key, value| count(key, value, 0, 10_000),
        show: number;
    /// events queued for one streaming client; a client that falls this far behind is disconnected and replays on reconnect
    client_queue_events: usize = 256,
        flag: Flag::None,
        parse: |key, value| count(key, value, 1, 1_000_000),
        show: number;
    /// the time a client has to send a whole request, head and body (past it: 408 and close), and the idle keep-alive timeout (seconds)
    request_timeout_s: f64 = 10.0,
        flag: Flag::None,
        parse: |key, value| seconds(key, value, 0.1, 3600.0),
        show: float;
    /// a client that accepts no bytes for this long is dropped (seconds)
    write_timeout_s: f64 = 10.0,
        flag: Flag::None,
        parse: |key, value| seconds(key, value, 0.1, 3600.0),
        show: float;
    /// where sysfs GPIO lives (tests point it at a fake tree)
    gpio_sysfs_root: PathBuf = crate::doorbell::sysfs::KERNEL_ROOT,
        flag: Flag::None,
        parse: |key, value| non_empty_path(key, as_str(key, value)?),
        show: |path| quoted_path(path);
    /// a GPIO press this soon after the last ring is not a new ring (0 to 600000)
    doorbell_cooldown_ms: u64 = 1000,
        flag: Flag::None,
        parse: |key, value| count(key, value, 0, 600_000),
        show: number;
    /// `gpio:PIN[:active-low]`: an output (buzzer, relay) switched on for `chime_ms` on every GPIO ring; needs a `gpio:` doorbell on another pin (`""`: none)
    chime: Option<ChimeSpec> = "",
        flag: Flag::None,
        parse: |key, value| ChimeSpec::parse(as_str(key, value)?).map_err(|e| ConfigError::new(key, e)),
        show: |chime| quoted(&chime.as_ref().map(|c| c.to_string()).unwrap_or_default());
    /// how long the chime stays on (10 to 60000)
    chime_ms: u64 = 500,
        flag: Flag::None,
        parse: |key, value| count(key, value, 10, 60_000),
        show: number;
    /// `"on"` or `"off"`: motion detection on the camera's picture (see "Motion detection"); off, it costs nothing
    motion: bool = "on",
        flag: Flag::None,
        parse: |key, value| crate::motion::parse_switch(value).map_err(|e| ConfigError::new(key, e)),
        show: |on| quoted(if *on { "on" } else { "off" });
    /// 1 to 100: higher notices smaller and fainter changes
    motion_sensitivity: u8 = 50,
        flag: Flag::None,
        parse: |key, value| count(key, value, 1, 100),
        show: number;
    /// where motion counts: a list of `[x, y, w, h]` fractions of the picture, like `[[0.0, 0.5, 1.0, 0.5]]` for its lower half (`[]`: all of it)
    motion_zones: Vec<crate::motion::Zone> = Vec::<Vec<f64>>::new(),
        flag: Flag::None,
        parse: |key, value| crate::motion::parse_zones(value).map_err(|e| ConfigError::new(key, e)),
        show: |zones| {
            let shown: Vec<String> = zones
                .iter()
                .map(|z| format!("[{}]", z.to_array().map(|v| float(&v)).join(", ")))
                .collect();
            format!("[{}]", shown.join(", "))
        };
    /// how long change must go on before `motion_detected` (seconds, 0 to 60)
    motion_min_s: f64 = 0.5,
        flag: Flag::None,
        parse: |key, value| seconds(key, value, 0.0, 60.0),
        show: float;
    /// how long without change ends a motion with `motion_ended` (seconds, 0 to 3600)
    motion_cooldown_s: f64 = 10.0,
        flag: Flag::None,
        parse: |key, value| seconds(key, value, 0.0, 3600.0),
        show: float;
    /// camera frames a second the detector examines (0.2 to 30; never more than the camera sends)
    motion_fps: f64 = 5.0,
        flag: Flag::None,
        parse: |key, value| frame_rate(key, value, 0.2, 30.0),
        show: float;
    /// seconds of video before an event that its clip starts with (0 to 30; the pre-roll is also held to 16 MiB of frames, see "Event clips")
    clip_pre_s: f64 = 3.0,
        flag: Flag::None,
        parse: |key, value| seconds(key, value, 0.0, 30.0),
        show: float;
    /// seconds of video after an event that its clip goes on for (0 to 300); a later event joins the recording and extends it, and so does motion while it goes on, up to 120 s after the event
    clip_post_s: f64 = 7.0,
        flag: Flag::None,
        parse: |key, value| seconds(key, value, 0.0, 300.0),
        show: float;
    /// event types that get a clip while the camera is live (`[]`: none)
    clip_event_types: Vec<String> = vec!["doorbell_pressed", "motion_detected"],
        flag: Flag::None,
        parse: parse_event_types,
        show: |types| string_list(types.iter().cloned());
    /// clip bytes kept (512 MiB by default); the oldest clips are deleted first; `0` records none
    max_clip_bytes: u64 = 512 * 1024 * 1024,
        flag: Flag::None,
        parse: |key, value| count(key, value, 0, u64::MAX / 2),
        show: number;
    /// where people reach the dashboard (`"http://door.local:8080"`): links in notifications, webhooks and Home Assistant (`""`: none)
    public_url: Option<String> = "",
        flag: Flag::None,
        parse: |key, value| optional(key, value, crate::url::parse_public_url),
        show: |url| quoted(url.as_deref().unwrap_or_default());
    /// MQTT broker, `mqtt://[user:pass@]host[:port]` (see "MQTT and Home Assistant"; `""`: no MQTT)
    mqtt_url: Option<ServiceUrl> = "",
        flag: Flag::None,
        parse: |key, value| optional(key, value, crate::mqtt::parse_url),
        show: |url| quoted(&url.as_ref().map(masked_url).unwrap_or_default());
    /// this door's name on the broker and in Home Assistant, `[a-z0-9_-]` (`""`: the host name)
    device_id: String = "",
        flag: Flag::None,
        parse: |key, value| {
            let text = as_str(key, value)?;
            if !text.is_empty() {
                crate::mqtt::check_device_id(text).map_err(|e| ConfigError::new(key, e))?;
            }
            Ok(text.to_string())
        },
        show: |id| quoted(id);
    /// topic prefix of everything the device publishes (`""`: `porchlight/<device_id>`)
    mqtt_prefix: String = "",
        flag: Flag::None,
        parse: |key, value| {
            let text = as_str(key, value)?;
            if !text.is_empty() {
                crate::mqtt::check_topic_prefix(text).map_err(|e| ConfigError::new(key, e))?;
            }
            Ok(text.to_string())
        },
        show: |prefix| quoted(prefix);
    /// announce the device to Home Assistant by MQTT discovery; `false` removes it
    ha_discovery: bool = true,
        flag: Flag::None,
        parse: as_bool,
        show: |on| on.to_string();
    /// Home Assistant's discovery prefix
    ha_discovery_prefix: String = "homeassistant",
        flag: Flag::None,
        parse: |key, value| {
            let text = as_str(key, value)?;
            crate::mqtt::check_topic_prefix(text).map_err(|e| ConfigError::new(key, e))?;
            Ok(text.to_string())
        },
        show: |prefix| quoted(prefix);
    /// run the WebSocket commands published to `<prefix>/command/<name>` (the broker's ACL decides who may)
    mqtt_commands: bool = false,
        flag: Flag::None,
        parse: as_bool,
        show: |on| on.to_string();
    /// `[{url = "http://host/path", types = ["doorbell_pressed"], format = "json"}]`: POST each matching event (`types` absent: all, never `[]`; `format` `json` or `ntfy`; see "Webhooks and ntfy")
    webhooks: Vec<WebhookSettings> = Vec::<String>::new(),
        flag: Flag::None,
        parse: parse_webhooks,
        show: |hooks| show_webhooks(hooks);
}

/// A configuration error: which key or flag, and what was wrong with it.
#[derive(Debug, PartialEq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Applies a whole TOML document on top of `self`.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        // `str::parse` (toml's `FromStr for Table`, which is `toml::from_str`) rather than
        // `toml::from_str::<Table>` here: the same parse, but instantiated in the toml crate,
        // which is built for size (Cargo.toml), instead of a second copy of toml's deserializer
        // in ours at `opt-level = 3`.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new("config file", format!("not valid TOML: {}", e.message()))
        })?;
        for (key, value) in &table {
            self.set(key, value)?;
        }
        Ok(())
    }

    /// Sets one key from a TOML value; the error names the key.
    pub fn set(&mut self, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        match Key::named(key) {
            Some(entry) => (entry.set)(self, value),
            None => {
                // Quote a key that is empty or odd (`"" = 1` is valid TOML) so the one-line
                // error still shows which key it was.
                let plain = !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                let shown = if plain {
                    key.to_string()
                } else {
                    format!("{key:?}")
                };
                let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
                Err(ConfigError::new(
                    shown,
                    format!("unknown key (known keys: {})", known.join(", ")),
                ))
            }
        }
    }

    /// Checks what no single key can: a LAN listener must have tokens; a chime needs a GPIO
    /// doorbell on another pin.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(chime) = &self.chime {
            match self.doorbell.pin() {
                None => {
                    return Err(ConfigError::new(
                        "chime",
                        "the chime rings on GPIO button presses: set doorbell = \"gpio:PIN\" too",
                    ));
                }
                Some(pin) if pin == chime.pin => {
                    return Err(ConfigError::new(
                        "chime",
                        format!("GPIO {pin} is already the doorbell button; use another pin"),
                    ));
                }
                Some(_) => {}
            }
        }
        if !self.listen.ip().is_loopback() && self.tokens.is_empty() && !self.insecure_no_auth {
            return Err(ConfigError::new(
                "listen",
                format!(
                    "{} is not a loopback address and no token is configured: add \
                     --token admin:SECRET (or tokens = [\"admin:SECRET\"] in the config file), \
                     or pass --insecure-no-auth to allow anyone on the network",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `--check-config`: every key, in [`KEYS`] order.
    /// Token secrets are masked.
    pub fn to_toml(&self) -> String {
        KEYS.iter()
            .map(|key| format!("{} = {}\n", key.name, key.show(self)))
            .collect()
    }
}

fn type_error(key: &str, wanted: &str, value: &toml::Value) -> ConfigError {
    let found = value.type_str();
    let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    ConfigError::new(key, format!("expected {wanted}, found {article} {found}"))
}

fn as_str<'a>(key: &str, value: &'a toml::Value) -> Result<&'a str, ConfigError> {
    value
        .as_str()
        .ok_or_else(|| type_error(key, "a string", value))
}

fn as_bool(key: &str, value: &toml::Value) -> Result<bool, ConfigError> {
    value
        .as_bool()
        .ok_or_else(|| type_error(key, "true or false", value))
}

fn as_array<'a>(key: &str, value: &'a toml::Value) -> Result<&'a Vec<toml::Value>, ConfigError> {
    value
        .as_array()
        .ok_or_else(|| type_error(key, "an array", value))
}

/// A whole number in `min..=max`, converted to the field's type without a cast.
fn count<T: TryFrom<u64>>(
    key: &str,
    value: &toml::Value,
    min: u64,
    max: u64,
) -> Result<T, ConfigError> {
    let n = value
        .as_integer()
        .ok_or_else(|| type_error(key, "a whole number", value))?;
    let out_of_range = || ConfigError::new(key, format!("{n} is out of range ({min} to {max})"));
    let n = u64::try_from(n).map_err(|_| out_of_range())?;
    if n < min || n > max {
        return Err(out_of_range());
    }
    T::try_from(n).map_err(|_| out_of_range())
}

fn seconds(key: &str, value: &toml::Value, min: f64, max: f64) -> Result<f64, ConfigError> {
    let n = match value {
        // TOML integers are i64; every one in a sane range of seconds is exact as f64.
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        other => return Err(type_error(key, "a number of seconds", other)),
    };
    if !n.is_finite() || n < min || n > max {
        return Err(ConfigError::new(
            key,
            format!("{n} is out of range ({min} to {max} seconds)"),
        ));
    }
    Ok(n)
}

fn frame_rate(key: &str, value: &toml::Value, min: f64, max: f64) -> Result<f64, ConfigError> {
    let n = match value {
        toml::Value::Integer(i) => *i as f64,
        toml::Value::Float(f) => *f,
        other => return Err(type_error(key, "a number of frames a second", other)),
    };
    if !n.is_finite() || n < min || n > max {
        return Err(ConfigError::new(
            key,
            format!("{n} is out of range ({min} to {max} frames a second)"),
        ));
    }
    Ok(n)
}

/// A list of event types (`[a-z0-9_]{1,64}` each), without repeats.
fn parse_event_types(key: &str, value: &toml::Value) -> Result<Vec<String>, ConfigError> {
    let mut types: Vec<String> = Vec::new();
    for item in as_array(key, value)? {
        let text = item
            .as_str()
            .ok_or_else(|| ConfigError::new(key, "each entry must be an event type string"))?;
        if !crate::events::event::valid_event_type(text) {
            return Err(ConfigError::new(
                key,
                format!("{text:?} is not an event type ([a-z0-9_]{{1,64}})"),
            ));
        }
        if !types.iter().any(|t| t == text) {
            types.push(text.to_string());
        }
    }
    Ok(types)
}

fn parse_tokens(key: &str, value: &toml::Value) -> Result<TokenTable, ConfigError> {
    let mut table = TokenTable::default();
    for item in as_array(key, value)? {
        let text = item
            .as_str()
            .ok_or_else(|| ConfigError::new(key, "each entry must be a string \"ROLE:TOKEN\""))?;
        table.add_spec(text).map_err(|e| ConfigError::new(key, e))?;
    }
    Ok(table)
}

// How `--check-config` prints values: always valid TOML that parses back to the same value.

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialise")
}

fn quoted_display<T: fmt::Display>(value: &T) -> String {
    quoted(&value.to_string())
}

fn quoted_path(path: &Path) -> String {
    quoted(&path.to_string_lossy())
}

fn string_list(items: impl Iterator<Item = String>) -> String {
    let quoted: Vec<String> = items.map(|s| quoted(&s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// `{:?}` keeps a float a TOML float (`15.0`, not `15`).
fn float(n: &f64) -> String {
    format!("{n:?}")
}

fn number<T: fmt::Display>(n: &T) -> String {
    n.to_string()
}

fn non_empty_path(key: &str, text: &str) -> Result<PathBuf, ConfigError> {
    if text.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(PathBuf::from(text))
}

/// `ADDR:PORT`, IPv4 or bracketed IPv6; `localhost:PORT` is accepted as 127.0.0.1.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let normalised = match text.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => text.to_string(),
    };
    normalised.parse().map_err(|_| {
        format!("{text:?} is not ADDR:PORT (e.g. 127.0.0.1:8080, 0.0.0.0:8080, [::1]:8080)")
    })
}

pub fn parse_log_level(text: &str) -> Result<log::LevelFilter, String> {
    match text {
        "error" => Ok(log::LevelFilter::Error),
        "warn" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err(format!(
            "{text:?} is not one of error, warn, info, debug, trace"
        )),
    }
}

/// An origin as browsers send it (RFC 6454's serialisation): `http` or `https`, `://`, the
/// host lower-cased (an IPv6 address in brackets, as `Ipv6Addr` prints it), and a port only
/// when it is not the scheme's default. The check compares it with the `Origin` header byte
/// for byte, so an entry written another way (`HTTP://Door.Local:80`) is stored in that form;
/// one that no browser could send (a path, a user, a bad port) is refused rather than kept as
/// an entry that silently never matches.
fn parse_origin(text: &str) -> Result<String, String> {
    let refuse = |why: &str| {
        format!(
            "{text:?} is not an origin like \"http://door.local:8080\" (scheme, host and port \
             only): {why}"
        )
    };
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| refuse("no http:// or https://"))?;
    let (scheme, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "http" => ("http", 80),
        "https" => ("https", 443),
        _ => return Err(refuse("the scheme must be http or https")),
    };
    if let Some(extra) = rest.find(['/', '?', '#', '@']) {
        return Err(refuse(&format!(
            "{:?} has no place in an origin",
            &rest[extra..]
        )));
    }
    let (host, port) = if let Some(inside) = rest.strip_prefix('[') {
        let (address, after) = inside
            .split_once(']')
            .ok_or_else(|| refuse("an IPv6 address needs its closing ]"))?;
        let address: std::net::Ipv6Addr = address
            .parse()
            .map_err(|_| refuse("not an IPv6 address in the brackets"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| refuse("only :PORT may follow the address"))?,
            ),
        };
        (format!("[{address}]"), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let name = host.to_ascii_lowercase();
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !valid {
            return Err(refuse("the host must be a name or an address"));
        }
        (name, port)
    };
    let port = match port {
        None => None,
        Some(digits) => {
            let number = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u16>().ok())
                .flatten()
                .filter(|&n| n != 0)
                .ok_or_else(|| refuse("the port must be 1 to 65535"))?;
            (number != default_port).then_some(number)
        }
    };
    Ok(match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// An `allowed_hosts` entry: a host name or IP address as a `Host` header names it, without a
/// port; kept lower-case, without a trailing dot and IPv6 brackets (as the Host check compares).
fn parse_allowed_host(text: &str) -> Result<String, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    let bare = bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase();
    let is_name = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if is_name || bare.parse::<std::net::IpAddr>().is_ok() {
        Ok(bare)
    } else {
        Err(format!(
            "{text:?} is not a host name like \"door.local\" (a name or address, no scheme or port)"
        ))
    }
}

/// An optional string setting: `""` is none, anything else goes through `parse`.
fn optional<T>(
    key: &str,
    value: &toml::Value,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match as_str(key, value)? {
        "" => Ok(None),
        text => parse(text).map(Some).map_err(|e| ConfigError::new(key, e)),
    }
}

/// A URL as `--check-config` prints it: a password masked like a token.
fn masked_url(url: &ServiceUrl) -> String {
    let userinfo = match (&url.user, &url.password) {
        (Some(user), Some(_)) => format!("{user}:********@"),
        (Some(user), None) => format!("{user}@"),
        _ => String::new(),
    };
    let path = if url.path == "/" { "" } else { &url.path };
    format!("{}://{userinfo}{}{path}", url.scheme, url.host_port())
}

/// `webhooks`: an array of `{url, types, format}` tables; errors name `webhooks[i].field`.
fn parse_webhooks(key: &str, value: &toml::Value) -> Result<Vec<WebhookSettings>, ConfigError> {
    let mut hooks = Vec::new();
    for (i, item) in as_array(key, value)?.iter().enumerate() {
        let name = format!("{key}[{i}]");
        let field = |f: &str| format!("{name}.{f}");
        let table = item.as_table().ok_or_else(|| {
            ConfigError::new(
                &name,
                "each webhook is a table: {url = \"http://host/path\"}",
            )
        })?;
        if let Some(unknown) = table
            .keys()
            .find(|k| !["url", "types", "format"].contains(&k.as_str()))
        {
            return Err(ConfigError::new(
                field(unknown),
                "unknown field (allowed: url, types, format)",
            ));
        }
        let url = match table.get("url") {
            Some(url) => WebhookSettings::parse_url(as_str(&field("url"), url)?)
                .map_err(|e| ConfigError::new(field("url"), e))?,
            None => return Err(ConfigError::new(field("url"), "is required")),
        };
        let mut types = Vec::new();
        if let Some(list) = table.get("types") {
            for item in as_array(&field("types"), list)? {
                match item.as_str() {
                    Some(t) if crate::events::event::valid_event_type(t) => {
                        types.push(t.to_string())
                    }
                    Some(t) => {
                        return Err(ConfigError::new(
                            field("types"),
                            format!("{t:?} is not an event type ([a-z0-9_]{{1,64}})"),
                        ));
                    }
                    None => return Err(type_error(&field("types"), "event type strings", item)),
                }
            }
            // An empty list would read as "nothing" to one person and "everything" to another
            // (and `clip_event_types = []` is none): say which way to write either.
            if types.is_empty() {
                return Err(ConfigError::new(
                    field("types"),
                    "is empty: leave types out to send every event type, or remove the webhook \
                     to send none",
                ));
            }
        }
        let format = match table.get("format") {
            Some(format) => Format::parse(as_str(&field("format"), format)?)
                .map_err(|e| ConfigError::new(field("format"), e))?,
            None => Format::Json,
        };
        hooks.push(WebhookSettings { url, types, format });
    }
    Ok(hooks)
}

fn show_webhooks(hooks: &[WebhookSettings]) -> String {
    let tables: Vec<String> = hooks
        .iter()
        .map(|hook| {
            format!(
                "{{url = {}, types = {}, format = {}}}",
                quoted(&masked_url(&hook.url)),
                string_list(hook.types.iter().cloned()),
                quoted(hook.format.name())
            )
        })
        .collect();
    format!("[{}]", tables.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_are_unique() {
        for (i, key) in KEYS.iter().enumerate() {
            for other in &KEYS[i + 1..] {
                assert_ne!(key.name, other.name);
                if key.flag.name().is_some() {
                    assert_ne!(key.flag.name(), other.flag.name(), "{}", key.name);
                }
            }
        }
    }

    #[test]
    fn every_default_prints_and_parses_back() {
        let defaults = Config::default();
        for key in KEYS {
            let printed = key.default();
            let mut config = Config::default();
            config
                .apply_toml(&format!("{} = {printed}", key.name))
                .unwrap_or_else(|e| panic!("default of {} does not parse back: {e}", key.name));
            assert_eq!(key.show(&config), printed);
        }
        assert_eq!(
            defaults.gpio_sysfs_root,
            PathBuf::from(crate::doorbell::sysfs::KERNEL_ROOT)
        );
    }

    /// The README's configuration table is the user's reference: it must list every key, in
    /// order, with the flag, default and meaning the code has. On failure the message is the
    /// table to paste.
    #[test]
    fn readme_table_lists_every_key() {
        let readme = include_str!("../README.md");
        let header = "| key | flag | default | meaning |";
        let start = readme
            .find(header)
            .expect("README has the configuration table");
        let rows: Vec<&str> = readme[start..]
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .collect();
        let expected: Vec<String> = KEYS.iter().map(Key::readme_row).collect();
        assert!(
            rows == expected,
            "README.md's configuration table differs from config::KEYS; it should read:\n\n\
             {header}\n|---|---|---|---|\n{}\n",
            expected.join("\n")
        );
    }

    #[test]
    fn allowed_origins_are_kept_as_browsers_send_them() {
        let mut config = Config::default();
        config
            .apply_toml(
                "allowed_origins = [\"HTTP://Door.Local:80\", \"https://kiosk.local:443\", \
                 \"http://kiosk.local:8123\", \"http://[::FFFF:7f00:1]:3000\", \"https://a.b\"]",
            )
            .unwrap();
        assert_eq!(
            config.allowed_origins,
            [
                "http://door.local",
                "https://kiosk.local",
                "http://kiosk.local:8123",
                "http://[::ffff:127.0.0.1]:3000",
                "https://a.b"
            ]
        );
        for bad in [
            "*",
            "null",
            "door.local",
            "ftp://door.local",
            "http://",
            "http://door.local/",
            "http://door.local?x",
            "http://user@door.local",
            "http://door.local:0",
            "http://door.local:65536",
            "http://door.local:",
            "http://door.local:8o",
            "http://door local",
            "http://[::1",
            "http://[::1]x",
        ] {
            let err = config
                .apply_toml(&format!("allowed_origins = [{bad:?}]"))
                .unwrap_err();
            assert_eq!(err.key, "allowed_origins", "{bad}");
        }
    }

    #[test]
    fn allowed_hosts_are_names_without_ports() {
        let mut config = Config::default();
        config
            .apply_toml("allowed_hosts = [\"Door.Local.\", \"[fe80::1]\", \"192.168.1.5\"]")
            .unwrap();
        assert_eq!(
            config.allowed_hosts,
            ["door.local", "fe80::1", "192.168.1.5"]
        );
        for bad in ["door.local:8080", "http://door.local", "", "a b", "door/x"] {
            let err = config
                .apply_toml(&format!("allowed_hosts = [{bad:?}]"))
                .unwrap_err();
            assert_eq!(err.key, "allowed_hosts", "{bad}");
        }
        assert_eq!(Config::default().max_connections_per_ip, 32);
        assert_eq!(
            config
                .apply_toml("max_connections_per_ip = 0")
                .unwrap_err()
                .key,
            "max_connections_per_ip"
        );
    }

    #[test]
    fn effective_config_round_trips() {
        let mut config = Config::default();
        config
            .apply_toml("heartbeat_s = 1\nmax_events = 5\nlisten = \"127.0.0.1:9000\"\n")
            .unwrap();
        let mut again = Config::default();
        let printed = config.to_toml().replace("tokens = []\n", "");
        again.apply_toml(&printed).unwrap();
        assert_eq!(again.to_toml(), config.to_toml());
        assert_eq!(again.max_events, 5);
    }

    #[test]
    fn errors_name_the_key() {
        let mut config = Config::default();
        let err = config.apply_toml("max_events = \"many\"").unwrap_err();
        assert_eq!(err.key, "max_events");
        let err = config.apply_toml("no_such_key = 1").unwrap_err();
        assert_eq!(err.key, "no_such_key");
        let err = config.apply_toml("heartbeat_s = -1").unwrap_err();
        assert_eq!(err.key, "heartbeat_s");
        let err = config.apply_toml("listen = \"nowhere\"").unwrap_err();
        assert_eq!(err.key, "listen");
        // Found by fuzzing: an empty key must still be named.
        let err = config.apply_toml("'' = 0").unwrap_err();
        assert_eq!(err.key, "\"\"");
        let err = config.apply_toml("'a b' = 0").unwrap_err();
        assert_eq!(err.key, "\"a b\"");
    }

    #[test]
    fn chime_needs_a_gpio_doorbell_on_another_pin() {
        let mut config = Config::default();
        config.apply_toml("chime = \"gpio:27\"").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "chime");
        config.apply_toml("doorbell = \"gpio:27\"").unwrap();
        assert_eq!(config.validate().unwrap_err().key, "chime");
        config.apply_toml("doorbell = \"gpio:17\"").unwrap();
        assert!(config.validate().is_ok());
        let printed = config.to_toml();
        assert!(printed.contains("chime = \"gpio:27\"\n"), "{printed}");
        config.apply_toml("chime = \"\"").unwrap();
        assert_eq!(config.chime, None);
    }

    #[test]
    fn lan_listener_needs_tokens() {
        let mut config = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Default::default()
        };
        assert_eq!(config.validate().unwrap_err().key, "listen");
        config.insecure_no_auth = true;
        assert!(config.validate().is_ok());
        config.insecure_no_auth = false;
        config.tokens.add_spec("viewer:abcdefgh").unwrap();
        assert!(config.validate().is_ok());
    }
}
