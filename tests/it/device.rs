//! What runs the server on a device: systemd's notify protocol (READY=1, WATCHDOG=1, STOPPING=1
//! on a test NOTIFY_SOCKET), the unit file (`systemd-analyze verify` and `security`),
//! `--list-cameras`, cross.toml and the deploy script's checks.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo_path(rel: &str) -> PathBuf {
    Path::new(REPO).join(rel)
}

/// Starts the server with extra `NAME=VALUE` environment variables, through env(1), which execs
/// it: the pid is the server's, as systemd would run it.
fn start_with_env(vars: &[&str]) -> Server {
    let mut wrapper = vec!["env"];
    wrapper.extend_from_slice(vars);
    Server::try_start_wrapped(&wrapper, &[]).unwrap_or_else(|message| panic!("{message}"))
}

/// Receives one datagram as text; panics after `timeout`.
fn recv(socket: &UnixDatagram, timeout: Duration, what: &str) -> String {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no datagram ({what}) within {timeout:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads datagrams until one starts with `prefix`; returns it and the ones before it.
fn recv_until(socket: &UnixDatagram, prefix: &str) -> (String, Vec<String>) {
    let mut before = Vec::new();
    loop {
        let message = recv(socket, Duration::from_secs(10), prefix);
        if message.starts_with(prefix) {
            return (message, before);
        }
        before.push(message);
    }
}

#[test]
fn notify_socket_gets_ready_then_watchdog_while_alive_then_stopping() {
    let dir = TempDir::new("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let path_s = path.to_string_lossy().into_owned();
    // WatchdogSec=200ms: porchlight feeds it every 100 ms.
    let notify_socket = format!("NOTIFY_SOCKET={path_s}");
    let mut server = start_with_env(&[&notify_socket, "WATCHDOG_USEC=200000"]);
    let ready = recv(&socket, Duration::from_secs(10), "READY=1");
    assert_eq!(
        ready,
        format!(
            "READY=1\nSTATUS=listening on http://127.0.0.1:{}",
            server.port()
        ),
        "the first message is READY=1, naming the address"
    );
    // Ready means listening: a request is answered at once.
    assert_eq!(get(server.port(), "/api/status", None).status, 200);
    for i in 0..3 {
        assert_eq!(
            recv(&socket, Duration::from_secs(5), "WATCHDOG=1"),
            "WATCHDOG=1",
            "keep-alive {i}"
        );
    }
    server.signal("TERM");
    let (stopping, before) = recv_until(&socket, "STOPPING=1");
    assert_eq!(stopping, "STOPPING=1\nSTATUS=stopping");
    assert!(
        before.iter().all(|m| m == "WATCHDOG=1"),
        "unexpected notifications before STOPPING=1: {before:?}"
    );
    let status = server.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(status.code(), Some(0), "{}", server.stderr());
}

#[test]
fn abstract_notify_socket_and_no_watchdog_when_not_asked() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let name = format!("porchlight-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    let mut server = start_with_env(&[&format!("NOTIFY_SOCKET=@{name}")]);
    let ready = recv(&socket, Duration::from_secs(10), "READY=1");
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    server.signal("TERM");
    // Without WATCHDOG_USEC nothing is sent between READY=1 and STOPPING=1.
    assert_eq!(
        recv(&socket, Duration::from_secs(10), "STOPPING=1"),
        "STOPPING=1\nSTATUS=stopping"
    );
    let status = server.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(status.code(), Some(0));
}

/// `systemd-analyze`, which ./run-tests installs (Debian package `systemd`).
fn systemd_analyze() -> Command {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "systemd-analyze is missing: apt-get install systemd (./run-tests does)"
    );
    Command::new("systemd-analyze")
}

/// Copies `from` into `to` (files and symlinks, recursively).
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    // A root holding the unit as shipped, the binary where the unit expects it, and the
    // system's own units (for the targets it names): nothing in the unit is rewritten.
    let root = TempDir::new("unit-root");
    copy_tree(
        Path::new("/usr/lib/systemd/system"),
        &root.join("usr/lib/systemd/system"),
    );
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(&units).unwrap();
    fs::copy(
        repo_path("systemd/porchlight.service"),
        units.join("porchlight.service"),
    )
    .unwrap();
    let bin_dir = root.join("usr/local/bin");
    fs::create_dir_all(&bin_dir).unwrap();
    let installed = bin_dir.join("porchlight");
    if fs::hard_link(BIN, &installed).is_err() {
        fs::copy(BIN, &installed).unwrap();
    }
    let out = systemd_analyze()
        .arg("verify")
        .arg(format!("--root={}", root.path_str()))
        .arg("porchlight.service")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "verify failed: {stderr}");
    // verify exits 0 on unknown keys and bad values, with a warning: none allowed.
    assert_eq!(stderr.trim(), "", "systemd-analyze verify warned");

    // And it does look: without the binary the same check fails.
    fs::remove_file(&installed).unwrap();
    let out = systemd_analyze()
        .arg("verify")
        .arg(format!("--root={}", root.path_str()))
        .arg("porchlight.service")
        .output()
        .unwrap();
    assert!(!out.status.success(), "verify passed without the binary");
}

#[test]
fn unit_file_is_hardened_per_systemd_analyze_security() {
    let out = systemd_analyze()
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo_path("systemd/porchlight.service"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let marker = "Overall exposure level for porchlight.service: ";
    let score: f64 = stdout
        .lines()
        .find_map(|line| line.split_once(marker))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{stdout}"));
    eprintln!("systemd-analyze security --offline=true: exposure {score}");
    // 0 is a fully sandboxed unit, 10 an unprotected one; under 2 is "OK" with a network
    // service that must reach the camera and GPIO.
    assert!(score <= 2.0, "exposure {score}:\n{stdout}");
    for must in [
        "ProtectSystem=",
        "ProtectHome=",
        "NoNewPrivileges=",
        "PrivateTmp=",
        "RestrictAddressFamilies=~AF_PACKET",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with('✓') && l.contains(must)),
            "{must} not satisfied:\n{stdout}"
        );
    }
    let unit = fs::read_to_string(repo_path("systemd/porchlight.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "StateDirectory=porchlight",
        "--config /etc/porchlight/porchlight.toml",
        "--data-dir ${STATE_DIRECTORY}",
        "SupplementaryGroups=video gpio",
        "DeviceAllow=char-video4linux rw",
        "MemoryMax=",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}");
    }
}

#[test]
fn list_cameras_lists_every_video_device_or_says_there_is_none() {
    let out = run_to_exit(&["--list-cameras"], Duration::from_secs(20));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let mut devices: Vec<String> = fs::read_dir("/dev")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.strip_prefix("video")
                        .is_some_and(|d| d.parse::<u32>().is_ok())
                })
                .collect()
        })
        .unwrap_or_default();
    devices.sort();
    if devices.is_empty() {
        assert!(
            out.stdout
                .starts_with("No V4L2 video devices (/dev/video*) found.\n"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("synthetic"), "{}", out.stdout);
    } else {
        for device in devices {
            assert!(
                out.stdout.contains(&format!("/dev/{device}")),
                "{device} missing from:\n{}",
                out.stdout
            );
        }
    }
}

#[test]
fn cross_toml_names_the_three_raspberry_pi_targets() {
    let text = fs::read_to_string(repo_path("cross.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).expect("cross.toml is TOML");
    let targets = table["target"].as_table().expect("[target.*] tables");
    for target in [
        "arm-unknown-linux-gnueabihf",
        "armv7-unknown-linux-gnueabihf",
        "aarch64-unknown-linux-gnu",
    ] {
        let image = targets
            .get(target)
            .and_then(|t| t.get("image"))
            .and_then(|i| i.as_str())
            .unwrap_or_else(|| panic!("no image for {target}"));
        assert!(image.contains(target), "{target}: image {image}");
    }
}

#[test]
fn deploy_script_checks_its_arguments_before_touching_the_network() {
    let script = repo_path("deploy/deploy.sh");
    let run = |args: &[&str]| Command::new(&script).args(args).output().unwrap();
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("deploy/deploy.sh install HOST"));
    let no_host = run(&["install"]);
    assert_eq!(no_host.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_host.stderr).contains("which host?"));
    let no_binary = run(&["install", "pi@door.invalid", "/nonexistent/porchlight"]);
    assert_eq!(no_binary.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_binary.stderr).contains("no binary at /nonexistent"));
    let bad_option = run(&["uninstall", "pi@door.invalid", "--everything"]);
    assert_eq!(bad_option.status.code(), Some(2));

    // The scripts themselves: shellcheck (./run-tests installs it) finds nothing.
    let shellcheck = Command::new("shellcheck")
        .arg(&script)
        .arg(repo_path("deploy/remote.sh"))
        .output();
    match shellcheck {
        Ok(out) => assert!(
            out.status.success(),
            "shellcheck:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(e) => {
            panic!("shellcheck is missing ({e}): apt-get install shellcheck (./run-tests does)")
        }
    }
}

#[test]
fn example_config_is_valid() {
    // As deploy/remote.sh writes it: placeholders replaced by generated tokens.
    let text = fs::read_to_string(repo_path("deploy/porchlight.toml"))
        .unwrap()
        .replace("@ADMIN_TOKEN@", "generated-admin-token-123")
        .replace("@VIEWER_TOKEN@", "generated-viewer-token-456");
    let dir = TempDir::new("example-config");
    let path = dir.write("porchlight.toml", &text);
    let out = run_to_exit(
        &["--check-config", &path.to_string_lossy()],
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("doorbell = \"gpio:17:active-low:debounce=50\""),
        "{}",
        out.stdout
    );
}
