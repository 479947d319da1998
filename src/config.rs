//! Configuration: defaults, then the TOML file, then command-line flags, validated into one
//! [`Config`]. Every error names the key or flag that was wrong, so the user can fix it from the
//! one line we print (exit status 2).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::auth::{Role, TokenTable};
use crate::camera::CameraSpec;
use crate::doorbell::{ChimeSpec, DoorbellSpec};

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: the dashboard embedded in the binary.
    pub www: Option<PathBuf>,
    pub camera: CameraSpec,
    pub doorbell: DoorbellSpec,
    pub tokens: TokenTable,
    pub insecure_no_auth: bool,
    pub log_level: log::LevelFilter,
    pub allowed_origins: Vec<String>,
    pub heartbeat_s: f64,
    pub status_interval_s: f64,
    pub max_events: u64,
    pub max_snapshot_bytes: u64,
    pub max_connections: usize,
    pub max_sse_clients: usize,
    pub max_ws_clients: usize,
    pub max_video_clients: usize,
    pub client_queue_events: usize,
    pub request_timeout_s: f64,
    pub write_timeout_s: f64,
    /// Where sysfs GPIO lives: `/sys/class/gpio`, or a fake tree in tests.
    pub gpio_sysfs_root: PathBuf,
    /// A press within this long of the last ring is not a new ring.
    pub doorbell_cooldown_ms: u64,
    /// The chime output pulsed on each ring of the GPIO doorbell.
    pub chime: Option<ChimeSpec>,
    pub chime_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("./porchlight-data"),
            www: None,
            camera: CameraSpec::parse("synthetic:640x480@15").expect("valid default camera"),
            doorbell: DoorbellSpec::Sim,
            tokens: TokenTable::default(),
            insecure_no_auth: false,
            log_level: log::LevelFilter::Info,
            allowed_origins: Vec::new(),
            heartbeat_s: 15.0,
            status_interval_s: 2.0,
            max_events: 10_000,
            max_snapshot_bytes: 256 * 1024 * 1024,
            max_connections: 1024,
            max_sse_clients: 600,
            max_ws_clients: 200,
            max_video_clients: 32,
            client_queue_events: 256,
            request_timeout_s: 10.0,
            write_timeout_s: 10.0,
            gpio_sysfs_root: PathBuf::from(crate::doorbell::sysfs::KERNEL_ROOT),
            doorbell_cooldown_ms: 1000,
            chime: None,
            chime_ms: 500,
        }
    }
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

/// Every key the TOML file accepts, with its default as the README documents it. Kept in one
/// table so `--check-config` output, the README and the parser cannot drift apart silently
/// (a unit test checks that every key here is handled by [`Config::set`]).
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "www",
    "camera",
    "doorbell",
    "tokens",
    "insecure_no_auth",
    "log_level",
    "allowed_origins",
    "heartbeat_s",
    "status_interval_s",
    "max_events",
    "max_snapshot_bytes",
    "max_connections",
    "max_sse_clients",
    "max_ws_clients",
    "max_video_clients",
    "client_queue_events",
    "request_timeout_s",
    "write_timeout_s",
    "gpio_sysfs_root",
    "doorbell_cooldown_ms",
    "chime",
    "chime_ms",
];

impl Config {
    /// Applies a whole TOML document on top of `self`.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            ConfigError::new("config file", format!("not valid TOML: {}", e.message()))
        })?;
        for (key, value) in &table {
            self.set(key, value)?;
        }
        Ok(())
    }

    /// Sets one key from a TOML value; the error names the key.
    pub fn set(&mut self, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        let err = |msg: String| ConfigError::new(key, msg);
        match key {
            "listen" => self.listen = parse_listen(as_str(key, value)?).map_err(err)?,
            "data_dir" => self.data_dir = non_empty_path(key, as_str(key, value)?)?,
            "www" => {
                let text = as_str(key, value)?;
                self.www = if text.is_empty() {
                    None
                } else {
                    Some(PathBuf::from(text))
                };
            }
            "camera" => self.camera = CameraSpec::parse(as_str(key, value)?).map_err(err)?,
            "doorbell" => self.doorbell = DoorbellSpec::parse(as_str(key, value)?).map_err(err)?,
            "tokens" => {
                let mut table = TokenTable::default();
                for item in as_array(key, value)? {
                    let text = item
                        .as_str()
                        .ok_or_else(|| err("each entry must be a string \"ROLE:TOKEN\"".into()))?;
                    table.add_spec(text).map_err(err)?;
                }
                self.tokens = table;
            }
            "insecure_no_auth" => self.insecure_no_auth = as_bool(key, value)?,
            "log_level" => self.log_level = parse_log_level(as_str(key, value)?).map_err(err)?,
            "allowed_origins" => {
                let mut origins = Vec::new();
                for item in as_array(key, value)? {
                    let text = item.as_str().ok_or_else(|| {
                        err("each entry must be a string like \"http://door.local:8080\"".into())
                    })?;
                    origins.push(parse_origin(text).map_err(err)?);
                }
                self.allowed_origins = origins;
            }
            "heartbeat_s" => self.heartbeat_s = seconds(key, value, 0.05, 3600.0)?,
            "status_interval_s" => self.status_interval_s = seconds(key, value, 0.05, 3600.0)?,
            "max_events" => self.max_events = count(key, value, 1, 100_000_000)?,
            "max_snapshot_bytes" => self.max_snapshot_bytes = count(key, value, 0, u64::MAX / 2)?,
            "max_connections" => self.max_connections = count(key, value, 1, 100_000)? as usize,
            "max_sse_clients" => self.max_sse_clients = count(key, value, 0, 100_000)? as usize,
            "max_ws_clients" => self.max_ws_clients = count(key, value, 0, 100_000)? as usize,
            "max_video_clients" => self.max_video_clients = count(key, value, 0, 10_000)? as usize,
            "client_queue_events" => {
                self.client_queue_events = count(key, value, 1, 1_000_000)? as usize
            }
            "request_timeout_s" => self.request_timeout_s = seconds(key, value, 0.1, 3600.0)?,
            "write_timeout_s" => self.write_timeout_s = seconds(key, value, 0.1, 3600.0)?,
            "gpio_sysfs_root" => self.gpio_sysfs_root = non_empty_path(key, as_str(key, value)?)?,
            "doorbell_cooldown_ms" => self.doorbell_cooldown_ms = count(key, value, 0, 600_000)?,
            "chime" => self.chime = ChimeSpec::parse(as_str(key, value)?).map_err(err)?,
            "chime_ms" => self.chime_ms = count(key, value, 10, 60_000)?,
            _ => {
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
                return Err(ConfigError::new(
                    shown,
                    format!("unknown key (known keys: {})", KEYS.join(", ")),
                ));
            }
        }
        Ok(())
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

    /// The effective configuration as TOML, for `--check-config`. Token secrets are masked.
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| serde_json::to_string(s).expect("strings serialise");
        let list = |items: Vec<String>| {
            let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
            format!("[{}]", quoted.join(", "))
        };
        let tokens = self
            .tokens
            .roles()
            .map(|role| format!("{}:********", role.name()))
            .collect();
        let lines = [
            format!("listen = {}", quote(&self.listen.to_string())),
            format!("data_dir = {}", quote(&self.data_dir.to_string_lossy())),
            format!(
                "www = {}",
                quote(
                    &self
                        .www
                        .as_ref()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            ),
            format!("camera = {}", quote(&self.camera.to_string())),
            format!("doorbell = {}", quote(&self.doorbell.to_string())),
            format!("tokens = {}", list(tokens)),
            format!("insecure_no_auth = {}", self.insecure_no_auth),
            format!(
                "log_level = {}",
                quote(&self.log_level.to_string().to_lowercase())
            ),
            format!("allowed_origins = {}", list(self.allowed_origins.clone())),
            format!("heartbeat_s = {:?}", self.heartbeat_s),
            format!("status_interval_s = {:?}", self.status_interval_s),
            format!("max_events = {}", self.max_events),
            format!("max_snapshot_bytes = {}", self.max_snapshot_bytes),
            format!("max_connections = {}", self.max_connections),
            format!("max_sse_clients = {}", self.max_sse_clients),
            format!("max_ws_clients = {}", self.max_ws_clients),
            format!("max_video_clients = {}", self.max_video_clients),
            format!("client_queue_events = {}", self.client_queue_events),
            format!("request_timeout_s = {:?}", self.request_timeout_s),
            format!("write_timeout_s = {:?}", self.write_timeout_s),
            format!(
                "gpio_sysfs_root = {}",
                quote(&self.gpio_sysfs_root.to_string_lossy())
            ),
            format!("doorbell_cooldown_ms = {}", self.doorbell_cooldown_ms),
            format!(
                "chime = {}",
                quote(
                    &self
                        .chime
                        .as_ref()
                        .map(|c| c.to_string())
                        .unwrap_or_default()
                )
            ),
            format!("chime_ms = {}", self.chime_ms),
        ];
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

fn type_error(key: &str, wanted: &str, value: &toml::Value) -> ConfigError {
    ConfigError::new(
        key,
        format!("expected {wanted}, found a {}", value.type_str()),
    )
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

fn count(key: &str, value: &toml::Value, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n = value
        .as_integer()
        .ok_or_else(|| type_error(key, "a whole number", value))?;
    if n < 0 || (n as u64) < min || (n as u64) > max {
        return Err(ConfigError::new(
            key,
            format!("{n} is out of range ({min} to {max})"),
        ));
    }
    Ok(n as u64)
}

fn seconds(key: &str, value: &toml::Value, min: f64, max: f64) -> Result<f64, ConfigError> {
    let n = match value {
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

/// An origin as browsers send it: `scheme://host[:port]`, no path.
fn parse_origin(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains('/') => Ok(text.to_string()),
        _ => Err(format!(
            "{text:?} is not an origin like \"http://door.local:8080\" (scheme and host, no path)"
        )),
    }
}

/// Which role a `--token ROLE:TOKEN` grants; used by the token table.
pub fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("role {text:?} is not one of viewer, control, admin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_key_is_handled() {
        for key in KEYS {
            let mut config = Config::default();
            let err = config.set(key, &toml::Value::Table(toml::Table::new()));
            let err = err.expect_err("a table is never a valid value");
            assert!(
                !err.message.starts_with("unknown key"),
                "{key} is listed but not handled"
            );
        }
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
