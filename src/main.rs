//! porchlight: a doorbell camera and security-event server for Raspberry Pi Zero-class boards.
//!
//! This file is the command line: flags → [`Config`] → [`app::run`], and the exit status
//! (0 clean shutdown, 1 fatal error, 2 bad configuration). Everything else is in the library
//! (`src/lib.rs`), so tests, benchmarks and fuzz targets reach the same code.

use std::path::PathBuf;
use std::process::ExitCode;

use porchlight::app;
use porchlight::config::{Config, ConfigError};

const USAGE: &str = "\
porchlight — doorbell camera and security-event server

USAGE:
    porchlight [--config FILE] [--listen ADDR:PORT] [--data-dir DIR] [--www DIR]
               [--camera SPEC] [--doorbell SPEC] [--token ROLE:TOKEN]... [--insecure-no-auth]
               [--log-level error|warn|info|debug|trace]
    porchlight --check-config FILE    validate, print the effective config, exit 0 or 2
    porchlight --list-cameras         list V4L2 cameras with their formats, sizes and rates
    porchlight --version | --help

OPTIONS:
    --config FILE          TOML config file (flags override it; keys are listed in the README)
    --listen ADDR:PORT     where to listen [default: 127.0.0.1:8080]
    --data-dir DIR         event store and snapshots [default: ./porchlight-data]
    --www DIR              serve the dashboard from DIR instead of the embedded copy
    --camera SPEC          synthetic:WxH@FPS | v4l2:/dev/videoN[:WxH@FPS] | file:PATH[@FPS]
                           [default: synthetic:640x480@15]
    --doorbell SPEC        sim | gpio:PIN[:active-low][:debounce=MS] [default: sim]
    --token ROLE:TOKEN     grant ROLE (viewer, control, admin) to TOKEN; repeatable
    --insecure-no-auth     allow a non-loopback listener without tokens
    --log-level LEVEL      error, warn, info, debug or trace [default: info]

EXIT STATUS:
    0 clean shutdown on SIGTERM/SIGINT, 1 fatal error, 2 bad configuration
";

/// What the command line asked for.
enum Command {
    Run(Config),
    CheckConfig(Config),
    ListCameras,
    Version,
    Help,
}

/// Flags that take a value, and the config key each one sets.
const VALUE_FLAGS: &[(&str, &str)] = &[
    ("--listen", "listen"),
    ("--data-dir", "data_dir"),
    ("--www", "www"),
    ("--camera", "camera"),
    ("--doorbell", "doorbell"),
    ("--log-level", "log_level"),
];

fn parse_args(args: &[String]) -> Result<Command, ConfigError> {
    let mut config_file: Option<(String, PathBuf)> = None;
    let mut overrides: Vec<(&str, String, String)> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut insecure = false;
    let mut check = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, ConfigError> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| ConfigError::new(flag, "needs a value"))
        };
        match flag {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--list-cameras" => return Ok(Command::ListCameras),
            "--insecure-no-auth" => insecure = true,
            "--config" => config_file = Some((flag.to_string(), PathBuf::from(value()?))),
            "--check-config" => {
                config_file = Some((flag.to_string(), PathBuf::from(value()?)));
                check = true;
            }
            "--token" => tokens.push(value()?),
            _ => match VALUE_FLAGS.iter().find(|(f, _)| *f == flag) {
                Some((_, key)) => overrides.push((key, flag.to_string(), value()?)),
                None => {
                    return Err(ConfigError::new(
                        arg.as_str(),
                        "unknown flag (see porchlight --help)",
                    ));
                }
            },
        }
        i += 1;
    }

    let mut config = Config::default();
    if let Some((flag, path)) = &config_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                flag.as_str(),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        config.apply_toml(&text)?;
    }
    for (key, flag, value) in overrides {
        config
            .set(key, &toml::Value::String(value))
            .map_err(|e| ConfigError::new(flag, e.message))?;
    }
    if !tokens.is_empty() {
        let list = tokens.into_iter().map(toml::Value::String).collect();
        config
            .set("tokens", &toml::Value::Array(list))
            .map_err(|e| ConfigError::new("--token", e.message))?;
    }
    if insecure {
        config.insecure_no_auth = true;
    }
    config.validate()?;
    Ok(if check {
        Command::CheckConfig(config)
    } else {
        Command::Run(config)
    })
}

fn init_logging(level: log::LevelFilter) {
    let log_config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .set_location_level(log::LevelFilter::Off)
        .build();
    // Only fails if a logger is already set, which cannot happen here.
    let _ = simplelog::WriteLogger::init(level, log_config, std::io::stderr());
}

/// glibc gives busy threads their own malloc arenas (up to 8 per core), and memory freed in one
/// arena is not reused by another: with a thread per client that fragments RSS over time.
/// Two arenas keep the server's memory flat under client churn (measured by the soak).
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; called before the server spawns threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Err(err) => {
            eprintln!("porchlight: config error: {err}");
            ExitCode::from(2)
        }
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::ListCameras) => {
            print!("{}", porchlight::camera::discover::list_cameras());
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("porchlight {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::CheckConfig(config)) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Ok(Command::Run(config)) => {
            init_logging(config.log_level);
            limit_malloc_arenas();
            match app::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    log::error!("{err}");
                    eprintln!("porchlight: {err}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
