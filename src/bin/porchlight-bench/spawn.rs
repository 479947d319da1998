//! Starts the `porchlight` next to this benchmark binary on a free loopback port with a fresh
//! data dir, and stops it (SIGTERM) and removes the dir when dropped. Shared by the benchmarks.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The server under test, when the benchmark started it.
pub struct Spawned {
    pub child: Child,
    data_dir: std::path::PathBuf,
    config: Option<std::path::PathBuf>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // SAFETY: kill with a pid we own.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().ok();
        std::fs::remove_dir_all(&self.data_dir).ok();
        if let Some(config) = &self.config {
            std::fs::remove_file(config).ok();
        }
    }
}

/// What the benchmark's config file sets when `extra` names none: every benchmark client
/// connects from 127.0.0.1, which the default `max_connections_per_ip` (32) would cap.
const BENCH_CONFIG: &str = "max_connections_per_ip = 100000\n";

/// Starts the server with `extra` arguments; returns it and the address it listens on.
pub fn spawn_server(extra: &[String], tag: &str) -> Result<(Spawned, SocketAddr), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let binary = me.with_file_name("porchlight");
    let base = format!("porchlight-{tag}-{}", std::process::id());
    let data_dir = std::env::temp_dir().join(&base);
    let config = if extra
        .iter()
        .any(|a| a == "--config" || a.starts_with("--config="))
    {
        None
    } else {
        let path = std::env::temp_dir().join(format!("{base}.toml"));
        std::fs::write(&path, BENCH_CONFIG)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Some(path)
    };
    let mut command = Command::new(&binary);
    if let Some(config) = &config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        // Read until the server logs its address, then keep draining so the pipe never fills.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                tx.send(rest.split_whitespace().next().unwrap_or("").to_string())
                    .ok();
            } else if line.contains("[WARN]") || line.contains("[ERROR]") {
                eprintln!("server: {line}");
            }
        }
    });
    let spawned = Spawned {
        child,
        data_dir,
        config,
    };
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| "the server did not report its address within 20 s".to_string())?;
    let addr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
    Ok((spawned, addr))
}
