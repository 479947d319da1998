//! Command line and config file: exit 2 with one line naming the key, flags over the file,
//! `--check-config`, `--version`, `--help`, and the LAN-without-token refusal.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every key the README's configuration table documents, with its default as printed there:
/// the user's reference, read independently of the code, so a key that disappears from the
/// binary (or changes its default) fails here.
fn readme_keys() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let start = readme
        .find("| key | flag | default | meaning |")
        .expect("README has the configuration table");
    readme[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|row| {
            // | `key` | flag | `default` | meaning (last, so a `|` inside it is harmless)
            let cells: Vec<&str> = row.split('|').collect();
            let unquote = |cell: &str| cell.trim().trim_matches('`').to_string();
            (unquote(cells[1]), unquote(cells[3]))
        })
        .collect()
}

/// Parses `--check-config` output: flat `key = value` lines. Values are read as JSON where
/// they are JSON-compatible TOML (strings, numbers, booleans, arrays of strings), else kept raw.
fn parse_flat_toml(text: &str) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key = value line: {line:?}"));
        let value = value.trim();
        let parsed = serde_json::from_str(value)
            .unwrap_or_else(|_| Value::String(value.trim_matches('\'').to_string()));
        out.insert(key.trim().to_string(), parsed);
    }
    out
}

fn assert_one_line_naming(result: &Finished, needles: &[&str], what: &str) {
    assert_eq!(
        result.code(),
        Some(2),
        "{what}: exit status {:?}, stderr {:?}",
        result.status,
        result.stderr
    );
    let lines = result.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected exactly one stderr line, got {lines:?}"
    );
    assert!(
        needles.iter().any(|n| lines[0].contains(n)),
        "{what}: {:?} names none of {needles:?}",
        lines[0]
    );
}

/// A bad config file gives exit 2 and one line naming the key, both with `--check-config`
/// and when starting the server with `--config`.
fn check_bad_file(contents: &str, needles: &[&str]) {
    let dir = TempDir::new("badcfg");
    let path = dir.write("bad.toml", contents);
    let path = path.to_string_lossy().into_owned();
    let data = dir.join("data").to_string_lossy().into_owned();
    let what = format!("config {contents:?}");

    let checked = run_to_exit(&["--check-config", &path], EXIT_TIMEOUT);
    assert_one_line_naming(&checked, needles, &format!("--check-config with {what}"));
    assert!(
        checked.stdout.trim().is_empty(),
        "--check-config printed a config for a bad file: {:?}",
        checked.stdout
    );

    let started = run_to_exit(
        &[
            "--config",
            &path,
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
        ],
        EXIT_TIMEOUT,
    );
    assert_one_line_naming(&started, needles, &format!("--config with {what}"));
}

#[test]
fn bad_config_keys_exit_2_naming_the_key() {
    let cases: &[(&str, &[&str])] = &[
        ("colour = \"red\"\n", &["colour"]),
        ("max_events = \"many\"\n", &["max_events"]),
        ("max_events = 0\n", &["max_events"]),
        ("max_events = -5\n", &["max_events"]),
        ("heartbeat_s = 0.01\n", &["heartbeat_s"]),
        ("heartbeat_s = \"fast\"\n", &["heartbeat_s"]),
        ("status_interval_s = -1\n", &["status_interval_s"]),
        ("client_queue_events = 0\n", &["client_queue_events"]),
        ("max_connections = 0\n", &["max_connections"]),
        ("request_timeout_s = 0\n", &["request_timeout_s"]),
        ("write_timeout_s = true\n", &["write_timeout_s"]),
        ("listen = \"nowhere\"\n", &["listen"]),
        ("listen = \"127.0.0.1:99999\"\n", &["listen"]),
        ("listen = 8080\n", &["listen"]),
        ("camera = \"usb:/dev/video0\"\n", &["camera"]),
        ("camera = \"synthetic:0x480@15\"\n", &["camera"]),
        ("camera = \"synthetic:640x480@0\"\n", &["camera"]),
        ("camera = \"v4l2:video0\"\n", &["camera"]),
        ("doorbell = \"gpio:99\"\n", &["doorbell"]),
        ("doorbell = \"gpio:17:loud\"\n", &["doorbell"]),
        ("doorbell = \"button\"\n", &["doorbell"]),
        ("tokens = [\"admin:short\"]\n", &["tokens"]),
        ("tokens = [\"boss:long-enough-token\"]\n", &["tokens"]),
        ("tokens = [\"no-colon-at-all\"]\n", &["tokens"]),
        ("tokens = \"admin:long-enough-token\"\n", &["tokens"]),
        ("tokens = [\"admin:has space inside\"]\n", &["tokens"]),
        ("log_level = \"loud\"\n", &["log_level"]),
        ("insecure_no_auth = \"yes\"\n", &["insecure_no_auth"]),
        ("allowed_origins = [\"door.local\"]\n", &["allowed_origins"]),
        ("data_dir = \"\"\n", &["data_dir"]),
        ("[section]\nmax_events = 5\n", &["section"]),
        // Topics starting with '$' are the broker's ($SYS): a client's publishes there are
        // refused or dropped, and '#' never matches them.
        ("mqtt_prefix = \"$SYS/porch\"\n", &["mqtt_prefix"]),
        (
            "ha_discovery_prefix = \"$homeassistant\"\n",
            &["ha_discovery_prefix"],
        ),
    ];
    for (contents, needles) in cases {
        check_bad_file(contents, needles);
    }
}

#[test]
fn bad_toml_exits_2_with_one_line() {
    for contents in [
        "max_events = \n",
        "max_events = 1\nmax_events = 2\n",
        "listen = \"unterminated\n",
        "this is not toml\n",
    ] {
        let dir = TempDir::new("badtoml");
        let path = dir.write("broken.toml", contents);
        let path_s = path.to_string_lossy().into_owned();
        let result = run_to_exit(&["--check-config", &path_s], EXIT_TIMEOUT);
        assert_one_line_naming(
            &result,
            &["TOML", "toml", "broken.toml"],
            &format!("bad TOML {contents:?}"),
        );
    }
    // A missing config file is a configuration error too, naming the file.
    let result = run_to_exit(
        &["--check-config", "/nonexistent/porchlight.toml"],
        EXIT_TIMEOUT,
    );
    assert_one_line_naming(&result, &["/nonexistent/porchlight.toml"], "missing file");
    let dir = TempDir::new("nofile");
    let data = dir.path_str();
    let result = run_to_exit(
        &[
            "--config",
            "/nonexistent/porchlight.toml",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data,
        ],
        EXIT_TIMEOUT,
    );
    assert_one_line_naming(&result, &["/nonexistent/porchlight.toml"], "missing file");
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let dir = TempDir::new("badflags");
    let data = dir.path_str();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--listen", "nowhere"], &["listen"]),
        (&["--listen"], &["listen"]),
        (&["--camera", "usb:0"], &["camera"]),
        (&["--doorbell", "gpio:x"], &["doorbell"]),
        (&["--token", "admin:short"], &["token"]),
        (&["--token", "no-colon-here"], &["token"]),
        (&["--token", "boss:long-enough-token"], &["token"]),
        (&["--log-level", "loud"], &["log-level", "log_level"]),
        (&["--data-dir", ""], &["data-dir", "data_dir"]),
        (&["--no-such-flag"], &["--no-such-flag"]),
        (&["stray-argument"], &["stray-argument"]),
        // A flag whose value is missing, followed by another flag: named, not the next one.
        (&["--listen", "--log-level", "info"], &["listen"]),
        (&["--www", "/nonexistent/porchlight-www"], &["www"]),
        (&["--www", "/etc/hostname"], &["www"]),
        // An endless file is refused at a size bound, not read until the memory is gone.
        (&["--config", "/dev/zero"], &["--config"]),
        (&["--check-config", "/dev/zero"], &["--check-config"]),
    ];
    for (flags, needles) in cases {
        let mut args: Vec<&str> = Vec::new();
        if !flags.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        if !flags.contains(&"--data-dir") {
            args.extend(["--data-dir", &data]);
        }
        args.extend_from_slice(flags);
        let result = run_to_exit(&args, EXIT_TIMEOUT);
        assert_one_line_naming(&result, needles, &format!("flags {flags:?}"));
    }
}

#[test]
fn check_config_prints_defaults_and_round_trips() {
    let dir = TempDir::new("defaults");
    let empty = dir.write("empty.toml", "");
    let empty = empty.to_string_lossy().into_owned();
    let result = run_to_exit(&["--check-config", &empty], EXIT_TIMEOUT);
    assert_eq!(result.code(), Some(0), "stderr {:?}", result.stderr);
    let config = parse_flat_toml(&result.stdout);
    let documented = readme_keys();
    assert!(documented.len() >= 24, "README table: {documented:?}");
    for (key, default) in &documented {
        let line = format!("{key} = {default}\n");
        assert!(
            result.stdout.contains(&line),
            "--check-config does not print the README's default {line:?}:\n{}",
            result.stdout
        );
    }
    assert_eq!(
        config.len(),
        documented.len(),
        "--check-config prints keys the README lacks:\n{}",
        result.stdout
    );
    let expect = |key: &str, value: Value| {
        let got = &config[key];
        let same = match (got.as_f64(), value.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => *got == value,
        };
        assert!(same, "default {key}: expected {value}, got {got}");
    };
    expect("listen", "127.0.0.1:8080".into());
    expect("camera", "synthetic:640x480@15".into());
    expect("doorbell", "sim".into());
    expect("data_dir", "./porchlight-data".into());
    expect("heartbeat_s", 15.into());
    expect("status_interval_s", 2.into());
    expect("max_events", 10000.into());
    expect("max_snapshot_bytes", (256u64 << 20).into());
    expect("max_connections", 1024.into());
    expect("max_sse_clients", 600.into());
    expect("client_queue_events", 256.into());
    expect("request_timeout_s", 10.into());
    expect("write_timeout_s", 10.into());
    expect("insecure_no_auth", false.into());
    expect("log_level", "info".into());

    // The printed config is itself a valid config that prints the same.
    let printed = dir.write("printed.toml", &result.stdout);
    let printed = printed.to_string_lossy().into_owned();
    let again = run_to_exit(&["--check-config", &printed], EXIT_TIMEOUT);
    assert_eq!(again.code(), Some(0), "stderr {:?}", again.stderr);
    assert_eq!(again.stdout, result.stdout);
}

#[test]
fn flags_override_the_file() {
    let dir = TempDir::new("override");
    let file = dir.write(
        "porchlight.toml",
        "listen = \"127.0.0.1:9000\"\nlog_level = \"debug\"\ncamera = \"synthetic:320x240@5\"\n\
         data_dir = \"/tmp/from-file\"\nheartbeat_s = 3\nmax_events = 77\n\
         tokens = [\"viewer:file-viewer-token\"]\n",
    );
    let file = file.to_string_lossy().into_owned();

    let plain = run_to_exit(&["--check-config", &file], EXIT_TIMEOUT);
    assert_eq!(plain.code(), Some(0), "stderr {:?}", plain.stderr);
    let config = parse_flat_toml(&plain.stdout);
    assert_eq!(config["listen"], "127.0.0.1:9000");
    assert_eq!(config["log_level"], "debug");
    assert_eq!(config["max_events"], 77);

    let result = run_to_exit(
        &[
            "--check-config",
            &file,
            "--listen",
            "127.0.0.1:9100",
            "--log-level",
            "warn",
            "--camera",
            "synthetic:160x120@2",
            "--data-dir",
            "/tmp/from-flag",
            "--doorbell",
            "gpio:17:active-low",
            "--token",
            "admin:flag-admin-token-secret",
        ],
        EXIT_TIMEOUT,
    );
    assert_eq!(result.code(), Some(0), "stderr {:?}", result.stderr);
    let config = parse_flat_toml(&result.stdout);
    assert_eq!(config["listen"], "127.0.0.1:9100");
    assert_eq!(config["log_level"], "warn");
    assert_eq!(config["camera"], "synthetic:160x120@2");
    assert_eq!(config["data_dir"], "/tmp/from-flag");
    assert!(
        config["doorbell"]
            .as_str()
            .is_some_and(|d| d.starts_with("gpio:17") && d.contains("active-low")),
        "doorbell {}",
        config["doorbell"]
    );
    // Untouched keys keep the file's values.
    assert_eq!(config["heartbeat_s"].as_f64(), Some(3.0));
    assert_eq!(config["max_events"], 77);
    // The flag token is there; secrets are never printed.
    let tokens = config["tokens"].to_string();
    assert!(tokens.contains("admin"), "tokens {tokens}");
    assert!(
        !result.stdout.contains("flag-admin-token-secret")
            && !result.stdout.contains("file-viewer-token"),
        "--check-config printed a token secret:\n{}",
        result.stdout
    );

    // The same precedence when running: the file's listen address is overridden by the flag
    // (the file says 9000; the server must come up on the ephemeral port we ask for).
    let server = Server::start(&[
        "--config",
        &file,
        "--token",
        "admin:flag-admin-token-secret",
    ]);
    let resp = get(
        server.port(),
        "/api/status",
        Some("flag-admin-token-secret"),
    );
    assert_eq!(resp.status, 200);
    // Both token sources count? The flag list replaces or extends the file's; either way the
    // viewer token from the file must not grant admin.
    let resp = post(
        server.port(),
        "/api/trigger-doorbell",
        Some("file-viewer-token"),
        "",
    );
    assert!(
        resp.status == 401 || resp.status == 403,
        "a viewer token from the file triggered the doorbell: {}",
        resp.status
    );
}

#[test]
fn version_and_help() {
    let result = run_to_exit(&["--version"], EXIT_TIMEOUT);
    assert_eq!(result.code(), Some(0), "stderr {:?}", result.stderr);
    assert!(
        result.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {:?}",
        result.stdout
    );
    let result = run_to_exit(&["--help"], EXIT_TIMEOUT);
    assert_eq!(result.code(), Some(0), "stderr {:?}", result.stderr);
    for flag in [
        "--config",
        "--listen",
        "--data-dir",
        "--www",
        "--camera",
        "--doorbell",
        "--token",
        "--insecure-no-auth",
        "--log-level",
        "--check-config",
        "--version",
    ] {
        assert!(
            result.stdout.contains(flag),
            "--help does not mention {flag}:\n{}",
            result.stdout
        );
    }
}

#[test]
fn lan_listener_needs_a_token() {
    let dir = TempDir::new("lan");
    let data = dir.path_str();
    let result = run_to_exit(
        &["--listen", "0.0.0.0:0", "--data-dir", &data],
        EXIT_TIMEOUT,
    );
    assert_one_line_naming(&result, &["--token"], "0.0.0.0 without tokens");

    let file = dir.write("lan.toml", "listen = \"0.0.0.0:0\"\n");
    let file = file.to_string_lossy().into_owned();
    let result = run_to_exit(&["--check-config", &file], EXIT_TIMEOUT);
    assert_one_line_naming(&result, &["--token"], "listen = 0.0.0.0 in the file");

    // --insecure-no-auth: it starts, and everyone is let in.
    let server = Server::start(&["--listen", "0.0.0.0:0", "--insecure-no-auth"]);
    assert_eq!(get(server.port(), "/api/status", None).status, 200);
    drop(server);

    // With a token: it starts, and the token is required.
    let server = Server::start(&["--listen", "0.0.0.0:0", "--token", "admin:lan-admin-token"]);
    get(server.port(), "/api/status", None).assert_error(401);
    assert_eq!(
        get(server.port(), "/api/status", Some("lan-admin-token")).status,
        200
    );
}

#[test]
fn config_file_settings_take_effect() {
    let server = Server::with_config(
        "max_sse_clients = 1\ntokens = [\"viewer:cfg-viewer-token\"]\n",
        &[],
    );
    let port = server.port();
    get(port, "/api/status", None).assert_error(401);
    let _one = Sse::connect(port, "/stream/events?token=cfg-viewer-token");
    match Sse::open(port, "/stream/events?token=cfg-viewer-token", &[]) {
        Err(resp) => {
            resp.assert_error(503);
        }
        Ok(_) => panic!("max_sse_clients = 1 from the file was not applied"),
    }
}

#[test]
fn address_in_use_is_a_fatal_error_not_a_config_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("inuse");
    let data = dir.path_str();
    let result = run_to_exit(&["--listen", &addr, "--data-dir", &data], EXIT_TIMEOUT);
    assert_eq!(
        result.code(),
        Some(1),
        "listening on a taken port: exit {:?}, stderr {:?}",
        result.status,
        result.stderr
    );
    assert!(
        result.stderr.contains(&addr) || result.stderr.to_lowercase().contains("in use"),
        "the error should say which address: {:?}",
        result.stderr
    );
}
