//! porchlight: a doorbell camera and security-event server for Raspberry Pi Zero-class boards.
//!
//! This file is the command line: flags → [`Config`] → [`app::run`], and the exit status
//! (0 clean shutdown, 1 fatal error, 2 bad configuration). Everything else is in the library
//! (`src/lib.rs`), so tests, benchmarks and fuzz targets reach the same code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use porchlight::app;
use porchlight::config::{Config, ConfigError, Flag, KEYS, Key};

/// `--help`: the commands, then every flag from the config table (`config::KEYS`), so a flag
/// and its help cannot drift apart.
fn usage() -> String {
    let mut text = String::from(
        "\
porchlight — doorbell camera and security-event server

USAGE:
    porchlight [--config FILE] [--listen ADDR:PORT] [--data-dir DIR] [--www DIR]
               [--camera SPEC] [--doorbell SPEC] [--token ROLE:TOKEN]... [--insecure-no-auth]
               [--log-level error|warn|info|debug|trace]
    porchlight --check-config FILE    validate, print the effective config, exit 0 or 2
    porchlight --list-cameras         list V4L2 cameras with their formats, sizes and rates
    porchlight --version | --help

OPTIONS:
    --config FILE
        TOML config file (flags override it; every key is in the README)
",
    );
    for key in KEYS {
        let Some(flag) = key.flag.usage() else {
            continue;
        };
        let default = key.default();
        text.push_str(&format!(
            "    {flag}\n        {} [default: {default}]\n",
            key.doc
        ));
    }
    text.push_str(
        "
EXIT STATUS:
    0 clean shutdown on SIGTERM/SIGINT, 1 fatal error, 2 bad configuration
",
    );
    text
}

/// What the command line asked for.
enum Command {
    Run(Config),
    CheckConfig(Config),
    ListCameras,
    Version,
    Help,
}

/// Largest config file read: far above any real one (every key with a long comment is a few
/// KiB). `--config /dev/zero` or an endless pipe stops here instead of filling the memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn read_config_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "the file is larger than {} KiB",
            MAX_CONFIG_BYTES / 1024
        )));
    }
    Ok(text)
}

fn parse_args(args: &[String]) -> Result<Command, ConfigError> {
    let mut config_file: Option<(String, PathBuf)> = None;
    // (key, flag as given, value) in command-line order; a repeated flag's values form a list.
    let mut overrides: Vec<(&Key, String, toml::Value)> = Vec::new();
    let mut lists: Vec<(&Key, String, Vec<toml::Value>)> = Vec::new();
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
            // `--listen --data-dir D` lost the listen address: say so, rather than take
            // `--data-dir` as the address and then refuse `D` as an unknown flag.
            args.get(i)
                .filter(|next| !next.starts_with("--"))
                .cloned()
                .ok_or_else(|| ConfigError::new(flag, "needs a value"))
        };
        match flag {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" | "-V" => return Ok(Command::Version),
            "--list-cameras" => return Ok(Command::ListCameras),
            "--config" => config_file = Some((flag.to_string(), PathBuf::from(value()?))),
            "--check-config" => {
                config_file = Some((flag.to_string(), PathBuf::from(value()?)));
                check = true;
            }
            _ => match KEYS.iter().find(|key| key.flag.name() == Some(flag)) {
                Some(key) => match key.flag {
                    Flag::Switch(_) => {
                        if inline.is_some() {
                            return Err(ConfigError::new(flag, "takes no value"));
                        }
                        overrides.push((key, flag.to_string(), toml::Value::Boolean(true)))
                    }
                    Flag::Repeated(..) => {
                        let item = toml::Value::String(value()?);
                        match lists.iter_mut().find(|(k, ..)| k.name == key.name) {
                            Some((.., items)) => items.push(item),
                            None => lists.push((key, flag.to_string(), vec![item])),
                        }
                    }
                    _ => overrides.push((key, flag.to_string(), toml::Value::String(value()?))),
                },
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
        let text = read_config_file(path).map_err(|e| {
            ConfigError::new(
                flag.as_str(),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        config.apply_toml(&text)?;
    }
    let lists = lists
        .into_iter()
        .map(|(key, flag, items)| (key, flag, toml::Value::Array(items)));
    for (key, flag, value) in overrides.into_iter().chain(lists) {
        config
            .set(key.name, &value)
            .map_err(|e| ConfigError::new(flag, e.message))?;
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
            print!("{}", usage());
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
