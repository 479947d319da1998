//! Starting the real `porchlight` binary (its data dir, its `listening on` line, signals,
//! its exit) and running other programs to completion.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "porchlight-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path.join(name);
        fs::write(&path, contents).expect("write temp file");
        path
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// What the server wrote to stderr, as the test's reader thread has copied it so far, and a
/// signal for each line it adds. A line the server has written may not be here yet (the
/// reader runs on its own): a test that expects a line waits for it ([`Server::wait_stderr`]).
#[derive(Default)]
struct Log {
    text: Mutex<String>,
    grew: Condvar,
}

impl Log {
    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }
}

/// A running `porchlight`. Dropping it kills the process (SIGKILL) if it is still running.
pub struct Server {
    child: Child,
    port: u16,
    log: Arc<Log>,
    exit: Option<ExitStatus>,
    // Last, so the process is gone before its directories are removed (held, never read).
    _own_dir: Option<TempDir>,
    config_dir: Option<TempDir>,
    _profiles: Option<Profiles>,
}

/// Coverage profiles of a server that runs as another user (a `setpriv` wrapper): it cannot
/// write into the build's profile directory, so it writes into a directory anyone may write,
/// and they are moved to where `cargo llvm-cov report` looks once the server is gone.
struct Profiles {
    dir: TempDir,
    /// The directory `LLVM_PROFILE_FILE` names.
    target: PathBuf,
}

impl Profiles {
    /// Set up when this is an instrumented run (`LLVM_PROFILE_FILE` is set).
    fn for_other_user(command: &mut Command) -> Option<Profiles> {
        let pattern = PathBuf::from(std::env::var_os("LLVM_PROFILE_FILE")?);
        let (target, name) = (pattern.parent()?.to_path_buf(), pattern.file_name()?);
        let dir = TempDir::new("profiles");
        fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .ok()?;
        command.env("LLVM_PROFILE_FILE", dir.path().join(name));
        Some(Profiles { dir, target })
    }
}

impl Drop for Profiles {
    fn drop(&mut self) {
        for entry in fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = fs::copy(entry.path(), self.target.join(entry.file_name()));
        }
    }
}

impl Server {
    /// Starts the server with `args`. Adds `--listen 127.0.0.1:0` unless `--listen` is given and
    /// `--data-dir <fresh temp dir>` unless `--data-dir` is given. Waits for the
    /// `listening on http://HOST:PORT` line; panics with the captured stderr if it never comes.
    pub fn start(args: &[&str]) -> Server {
        match Server::try_start(args) {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    /// Like [`Server::start`], but returns the exit status and stderr if it does not come up.
    pub fn try_start(args: &[&str]) -> Result<Server, String> {
        Server::try_start_wrapped(&[], args)
    }

    /// Like [`Server::try_start`], run through `wrapper` (a command that execs the rest of its
    /// arguments, like `setpriv ...` or `prlimit ...`, so the pid stays the server's).
    pub fn try_start_wrapped(wrapper: &[&str], args: &[&str]) -> Result<Server, String> {
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.contains(&"--listen") {
            full.push("--listen".into());
            full.push("127.0.0.1:0".into());
        }
        let own_dir = if args.contains(&"--data-dir") {
            None
        } else {
            let dir = TempDir::new("data");
            full.push("--data-dir".into());
            full.push(dir.path_str());
            Some(dir)
        };
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        let profiles = if wrapper.is_empty() {
            None
        } else {
            Profiles::for_other_user(&mut command)
        };
        let mut child = command
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Log::default());
        let (tx, rx) = mpsc::channel();
        {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                // Keeps draining after readiness so the pipe never fills and blocks the server.
                let mut reader = BufReader::new(stderr);
                let mut line = Vec::new();
                let mut announced = false;
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    {
                        let mut copied = log.text.lock().unwrap();
                        if copied.len() < 8 << 20 {
                            copied.push_str(&text);
                        }
                    }
                    log.grew.notify_all();
                    if !announced && let Some(port) = parse_listening(&text) {
                        announced = true;
                        let _ = tx.send(port);
                    }
                }
            });
        }
        let captured = |log: &Arc<Log>| log.text();
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => Ok(Server {
                child,
                port,
                log,
                exit: None,
                _own_dir: own_dir,
                config_dir: None,
                _profiles: profiles,
            }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("wait for child");
                Err(format!(
                    "porchlight exited ({status}) before listening; args {full:?}; stderr:\n{}",
                    captured(&log)
                ))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(format!(
                    "porchlight printed no `listening on` line within {START_TIMEOUT:?}; \
                     args {full:?}; stderr:\n{}",
                    captured(&log)
                ))
            }
        }
    }

    /// Starts the server with a config file holding `toml`, then `args`.
    pub fn with_config(toml: &str, args: &[&str]) -> Server {
        let dir = TempDir::new("config");
        let path = dir.write("porchlight.toml", toml);
        let path = path.to_string_lossy().into_owned();
        let mut all = vec!["--config", path.as_str()];
        all.extend_from_slice(args);
        let mut server = Server::start(&all);
        server.config_dir = Some(dir);
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything of the server's stderr the test has read so far (see [`Log`]: a line just
    /// written may still be on its way; wait for it with [`Server::wait_stderr`]).
    pub fn stderr(&self) -> String {
        self.log.text()
    }

    /// Waits up to 10 s until `done` holds for the server's stderr as read so far (woken by
    /// each line the reader adds) and returns it; returns it anyway at the deadline, for the
    /// caller's assertion to show.
    pub fn wait_stderr(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut text = self.log.text.lock().unwrap();
        while !done(&text) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            text = self.log.grew.wait_timeout(text, left).unwrap().0;
        }
        text.clone()
    }

    /// The server's stderr once it holds `needle` (or after 10 s without it).
    pub fn stderr_with(&self, needle: &str) -> String {
        self.wait_stderr(|log| log.contains(needle))
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) through the `kill` command.
    pub fn signal(&self, name: &str) {
        send_signal(self.pid(), name);
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling the child is the only portable way to wait with a deadline in std; 2 ms
            // granularity is far below anything the tests measure.
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10))
            .expect("process did not die after SIGKILL");
    }

    /// SIGTERM, wait for exit, assert status 0. Returns how long the exit took.
    pub fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(10)).unwrap_or_else(|| {
            panic!("no exit within 10 s of SIGTERM; stderr:\n{}", self.stderr())
        });
        let took = started.elapsed();
        assert_eq!(
            status.code(),
            Some(0),
            "exit status after SIGTERM: {status}; stderr:\n{}",
            self.stderr()
        );
        took
    }
}

impl Drop for Server {
    /// Stops a server the test left running with SIGTERM, as systemd would, so it shuts down
    /// the way it does in production (and an instrumented build writes its coverage profile);
    /// SIGKILL if it has not exited within [`STOP_TIMEOUT`]. Tests about `kill -9` send it
    /// themselves.
    fn drop(&mut self) {
        if self.exit.is_some() || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_listening(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on http://")? + "listening on http://".len()..];
    let addr = rest.split_whitespace().next()?.trim_end_matches('/');
    addr.rsplit(':').next()?.parse().ok()
}

pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// Runs the binary to completion (for `--check-config`, `--version`, bad configurations) with a
/// deadline; a process still running at the deadline is killed and the test fails.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

pub fn run_to_exit(args: &[&str], timeout: Duration) -> Finished {
    run_program(BIN, args, timeout)
}

/// Runs any program (the binary, ffmpeg, systemd-analyze…) to completion with a deadline; one
/// still running at the deadline is killed and the test fails with its stderr.
pub fn run_program(program: &str, args: &[&str], timeout: Duration) -> Finished {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (./run-tests installs it): {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_thread = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_thread.join().unwrap();
            panic!(
                "{program} {args:?} still running after {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    Finished {
        status,
        stdout: String::from_utf8_lossy(&out_thread.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned(),
    }
}

/// The first number of a `/proc/PID/status` line (`VmRSS:`, `Threads:`, ...).
fn status_number(pid: u32, key: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} number in /proc/{pid}/status"))
}

/// Resident set size of a process in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    status_number(pid, "VmRSS:") * 1024
}

/// The process's thread count, from /proc.
pub fn threads(pid: u32) -> usize {
    usize::try_from(status_number(pid, "Threads:")).expect("a thread count fits usize")
}

/// The process's open file descriptors, from /proc.
pub fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc fd")
        .count()
}
