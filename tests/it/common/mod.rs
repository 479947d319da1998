//! Harness shared by the integration tests: start the real `porchlight` binary on a loopback
//! port, talk HTTP/1.1 and Server-Sent Events to it over plain `std::net::TcpStream`s, the way a
//! browser or a script would, and send it signals.
//!
//! Nothing here sleeps in place of a signal: the server's readiness is the `listening on` line on
//! its stderr, and every socket read has a timeout so a hung server fails a test instead of
//! hanging it.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub mod broker;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_porchlight");
/// How long any single exchange with the server may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server left running by a test gets to exit after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Tokens used by the tests that configure roles.
pub const VIEWER: &str = "viewer-token-0001";
pub const CONTROL: &str = "control-token-0002";
pub const ADMIN: &str = "admin-token-0003";

// ---------------------------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------------------------

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

/// A running `porchlight`. Dropping it kills the process (SIGKILL) if it is still running.
pub struct Server {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
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
        let log = Arc::new(Mutex::new(String::new()));
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
                        let mut log = log.lock().unwrap();
                        if log.len() < 8 << 20 {
                            log.push_str(&text);
                        }
                    }
                    if !announced && let Some(port) = parse_listening(&text) {
                        announced = true;
                        let _ = tx.send(port);
                    }
                }
            });
        }
        let captured = |log: &Arc<Mutex<String>>| log.lock().unwrap().clone();
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

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().clone()
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

/// Resident set size of a process in bytes, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response {} is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts `status` and the contract's error shape `{"error": code, "message": text}`.
    pub fn assert_error(&self, status: u16) -> &Response {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {} {:?}",
            self.status,
            self.text()
        );
        self.assert_error_shape();
        self
    }

    /// Asserts the error shape without pinning the status (any 4xx/5xx).
    pub fn assert_error_shape(&self) -> &Response {
        assert!(
            self.status >= 400,
            "expected an error status, got {} {:?}",
            self.status,
            self.text()
        );
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.contains("application/json"),
            "error {} has content-type {ct:?}, body {:?}",
            self.status,
            self.text()
        );
        let v = self.json();
        let code = v.get("error").and_then(Value::as_str);
        let message = v.get("message").and_then(Value::as_str);
        assert!(
            code.is_some_and(|c| !c.is_empty()),
            "error body lacks a string \"error\": {v}"
        );
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "error body lacks a string \"message\": {v}"
        );
        self
    }
}

/// A TCP connection to the server with read/write timeouts and Nagle off.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Writes one request. Adds `Host`, and `Content-Length` when there is a body or the method is
/// POST/PUT (unless the caller set one).
pub fn write_request(
    stream: &mut impl Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_length = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !has_length && (!body.is_empty() || method == "POST" || method == "PUT") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    stream.write_all(&bytes)?;
    stream.flush()
}

fn read_line_crlf(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response head",
        ));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Response headers in the order received.
pub type Headers = Vec<(String, String)>;

/// Reads a status line and headers.
pub fn read_head(r: &mut impl BufRead) -> io::Result<(u16, String, Headers)> {
    let status_line = read_line_crlf(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {status_line:?}"),
        ));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad status line {status_line:?}"),
        )
    })?;
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line_crlf(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad header {line:?}"))
        })?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((status, reason, headers))
}

pub fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn is_chunked(headers: &[(String, String)]) -> bool {
    header_of(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

fn read_chunked(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line_crlf(r)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                if read_line_crlf(r)?.is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        read_line_crlf(r)?;
    }
}

/// Reads one complete response (head and body) from `r`.
pub fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<Response> {
    let (status, _reason, headers) = read_head(r)?;
    let body = if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Vec::new()
    } else if is_chunked(&headers) {
        read_chunked(r)?
    } else if let Some(len) = header_of(&headers, "content-length") {
        let len: usize = len.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad content-length {len:?}"),
            )
        })?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        body
    } else {
        let mut body = Vec::new();
        r.read_to_end(&mut body)?;
        body
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// One request on a fresh connection (`Connection: close`); errors are returned.
pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        all.push(("Connection", "close"));
    }
    write_request(&mut stream, method, path, &all, body)?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, method)
}

/// One request on a fresh connection; panics (naming the request) if the exchange fails.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: no complete response: {e}"))
}

fn auth_headers(token: Option<&str>) -> Vec<(String, String)> {
    token
        .map(|t| vec![("Authorization".to_string(), format!("Bearer {t}"))])
        .unwrap_or_default()
}

/// GET with an optional Bearer token.
pub fn get(port: u16, path: &str, token: Option<&str>) -> Response {
    let owned = auth_headers(token);
    let headers: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    request(port, "GET", path, &headers, b"")
}

/// POST a body as `application/json` with an optional Bearer token.
pub fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> Response {
    let mut owned = auth_headers(token);
    owned.push(("Content-Type".into(), "application/json".into()));
    let headers: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    request(port, "POST", path, &headers, body.as_bytes())
}

/// POST /api/events, asserting 201; returns the stored event.
pub fn post_event(port: u16, token: Option<&str>, event_type: &str, data: Value) -> Value {
    let body = serde_json::json!({"event_type": event_type, "data": data}).to_string();
    let resp = post(port, "/api/events", token, &body);
    assert_eq!(
        resp.status,
        201,
        "POST /api/events {event_type}: {} {:?}",
        resp.status,
        resp.text()
    );
    let event = resp.json();
    assert_event_shape(&event);
    event
}

/// POST /api/trigger-doorbell, asserting 200; returns the stored event.
pub fn trigger(port: u16, token: Option<&str>) -> Value {
    let resp = post(port, "/api/trigger-doorbell", token, "");
    assert_eq!(
        resp.status,
        200,
        "POST /api/trigger-doorbell: {} {:?}",
        resp.status,
        resp.text()
    );
    let event = resp.json();
    assert_event_shape(&event);
    assert_eq!(event["event_type"], "doorbell_pressed", "{event}");
    assert_eq!(event["source"], "api", "{event}");
    event
}

pub fn id_of(event: &Value) -> u64 {
    event["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("event without an integer id: {event}"))
}

/// `GET /api/events?QUERY` → the `events` array (asserting 200).
pub fn list_events(port: u16, token: Option<&str>, query: &str) -> Vec<Value> {
    let resp = get(port, &format!("/api/events?{query}"), token);
    assert_eq!(
        resp.status,
        200,
        "GET /api/events?{query}: {} {:?}",
        resp.status,
        resp.text()
    );
    let v = resp.json();
    v["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array: {v}"))
        .clone()
}

/// Every stored event, oldest first, paging through `/api/events` with `limit` and `before`.
pub fn all_events(port: u16, token: Option<&str>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let query = match before {
            Some(b) => format!("limit=97&before={b}"),
            None => "limit=97".to_string(),
        };
        let page = list_events(port, token, &query);
        if page.is_empty() {
            break;
        }
        for pair in page.windows(2) {
            assert!(
                id_of(&pair[0]) > id_of(&pair[1]),
                "/api/events?{query} not newest first"
            );
        }
        if let Some(b) = before {
            assert!(id_of(&page[0]) < b, "before={b} is not exclusive");
        }
        before = Some(id_of(page.last().unwrap()));
        out.extend(page);
        assert!(out.len() < 1_000_000, "paging never ends");
    }
    out.reverse();
    out
}

/// Checks the contract's Event object.
pub fn assert_event_shape(event: &Value) {
    let obj = event
        .as_object()
        .unwrap_or_else(|| panic!("event is not an object: {event}"));
    assert!(
        obj.get("id").and_then(Value::as_u64).is_some(),
        "id: {event}"
    );
    let et = obj
        .get("event_type")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("event_type: {event}"));
    assert!(
        valid_event_type(et),
        "event_type {et:?} does not match [a-z0-9_]{{1,64}}"
    );
    assert!(
        obj.get("timestamp").and_then(Value::as_f64).is_some(),
        "timestamp: {event}"
    );
    assert!(obj.contains_key("source"), "source: {event}");
    assert!(
        obj.get("data").is_some_and(Value::is_object),
        "data must be an object: {event}"
    );
    let snap = obj
        .get("snapshot_url")
        .unwrap_or_else(|| panic!("snapshot_url missing: {event}"));
    assert!(snap.is_null() || snap.is_string(), "snapshot_url: {event}");
}

pub fn valid_event_type(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Checks the contract's system status object: every field present, with its type or null.
pub fn assert_status_object(s: &Value) {
    fn num_or_null(s: &Value, path: &str, v: &Value) {
        assert!(
            v.is_number() || v.is_null(),
            "{path} must be a number or null: {s}"
        );
    }
    fn field<'a>(s: &'a Value, obj: &'a Value, path: &str, key: &str) -> &'a Value {
        obj.as_object()
            .unwrap_or_else(|| panic!("{path} is not an object: {s}"))
            .get(key)
            .unwrap_or_else(|| panic!("{path}.{key} missing: {s}"))
    }
    let ts = field(s, s, "status", "timestamp")
        .as_f64()
        .expect("timestamp number");
    assert!(
        (ts - now_unix()).abs() < 60.0,
        "status timestamp {ts} is not now"
    );
    let up = field(s, s, "status", "uptime_s")
        .as_f64()
        .expect("uptime_s number");
    assert!(up >= 0.0, "uptime_s {up}");
    let version = field(s, s, "status", "version");
    assert_eq!(
        version.as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "version: {s}"
    );
    for key in [
        "cpu_percent",
        "rss_bytes",
        "mem_available_bytes",
        "temperature_c",
    ] {
        num_or_null(s, key, field(s, s, "status", key));
    }
    // On Linux these are measurable from /proc, so they must not be null here.
    assert!(
        s["rss_bytes"].as_u64().is_some_and(|v| v > 0),
        "rss_bytes must be a positive integer on Linux: {s}"
    );
    assert!(
        s["mem_available_bytes"].as_u64().is_some_and(|v| v > 0),
        "mem_available_bytes must be a positive integer on Linux: {s}"
    );
    let load = field(s, s, "status", "load_avg");
    if !load.is_null() {
        let arr = load.as_array().expect("load_avg array");
        assert_eq!(arr.len(), 3, "load_avg has 3 numbers: {s}");
        assert!(arr.iter().all(Value::is_number), "load_avg: {s}");
    }
    let camera = field(s, s, "status", "camera");
    let state = field(s, camera, "camera", "state")
        .as_str()
        .expect("camera.state string");
    assert!(
        ["starting", "streaming", "stalled", "offline"].contains(&state),
        "camera.state {state:?}"
    );
    let source = field(s, camera, "camera", "source");
    assert!(source.is_string() || source.is_null(), "camera.source: {s}");
    for key in [
        "width",
        "height",
        "fps_target",
        "fps_measured",
        "frames_captured",
        "frames_dropped",
    ] {
        num_or_null(s, &format!("camera.{key}"), field(s, camera, "camera", key));
    }
    let clients = field(s, s, "status", "clients");
    for key in ["sse", "websocket", "video"] {
        assert!(
            field(s, clients, "clients", key).as_u64().is_some(),
            "clients.{key} must be a count: {s}"
        );
    }
    let events = field(s, s, "status", "events");
    let last = field(s, events, "events", "last_id");
    assert!(last.is_u64() || last.is_null(), "events.last_id: {s}");
    assert!(
        field(s, events, "events", "stored").as_u64().is_some(),
        "events.stored must be a count: {s}"
    );
    let doorbell = field(s, s, "status", "doorbell");
    assert!(
        field(s, doorbell, "doorbell", "source").is_string(),
        "doorbell.source: {s}"
    );
    let pin = field(s, doorbell, "doorbell", "pin");
    assert!(pin.is_null() || pin.is_u64(), "doorbell.pin: {s}");
}

// ---------------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------------

/// `GET /metrics` as text, asserting 200.
pub fn metrics(port: u16, token: Option<&str>) -> String {
    let resp = get(port, "/metrics", token);
    assert_eq!(resp.status, 200, "/metrics: {:?}", resp.text());
    resp.text()
}

/// The value of one series, written exactly as in the exposition (`name` or `name{k="v"}`).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = split_series(line);
        if name == series {
            return rest.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// Splits a sample line into `name{labels}` and the rest.
pub fn split_series(line: &str) -> (&str, &str) {
    let end = match (line.find('{'), line.find(' ')) {
        (Some(brace), Some(space)) if brace < space => line.find('}').map_or(line.len(), |i| i + 1),
        (_, Some(space)) => space,
        _ => line.len(),
    };
    (&line[..end], line[end..].trim())
}

/// Polls `/metrics` until `series` satisfies `ok` or `timeout` passes; returns the last value.
/// (The server offers no push signal for its gauges, so polling is the only way.)
pub fn wait_metric(
    port: u16,
    token: Option<&str>,
    series: &str,
    timeout: Duration,
    ok: impl Fn(f64) -> bool,
) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    loop {
        let value = metric(&metrics(port, token), series);
        if value.is_some_and(&ok) || Instant::now() >= deadline {
            return value;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events client
// ---------------------------------------------------------------------------------------------

/// One SSE block (the lines up to a blank line).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseBlock {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Vec<String>,
    pub retry: Option<String>,
    pub comments: Vec<String>,
    pub other: Vec<(String, String)>,
}

impl SseBlock {
    fn is_empty(&self) -> bool {
        *self == SseBlock::default()
    }

    /// The event name as a browser's EventSource dispatches it.
    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }

    /// Whether the block dispatches an event (has data) in a browser.
    pub fn dispatches(&self) -> bool {
        !self.data.is_empty()
    }

    pub fn json(&self) -> Value {
        let text = self.data.join("\n");
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {self:?}"))
    }

    pub fn id_num(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("SSE block without a numeric id: {self:?}"))
    }
}

/// How a stream ended.
#[derive(Debug)]
pub enum SseEnd {
    /// Orderly close (FIN).
    Eof,
    /// Nothing within the timeout.
    Timeout,
    /// Reset or another I/O error.
    Error(io::Error),
}

impl SseEnd {
    pub fn is_closed(&self) -> bool {
        match self {
            SseEnd::Eof => true,
            SseEnd::Timeout => false,
            SseEnd::Error(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
        }
    }
}

/// The response body of a stream: raw, or de-chunked if the server chose chunked encoding.
struct StreamBody {
    inner: BufReader<TcpStream>,
    chunked: bool,
    left: usize,
    done: bool,
}

impl Read for StreamBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.chunked {
            return self.inner.read(buf);
        }
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let line = read_line_crlf(&mut self.inner)?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n;
        if self.left == 0 {
            read_line_crlf(&mut self.inner)?;
        }
        Ok(n)
    }
}

/// A streaming client for `/stream/events` and `/stream/system-status`.
pub struct Sse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Data of the `connected` (or `status_connected`) event once the preamble was read.
    pub connected: Option<Value>,
    /// The first bytes of the body exactly as received (up to 4 KiB).
    pub first_bytes: Vec<u8>,
    reader: BufReader<StreamBody>,
    stream: TcpStream,
    line: Vec<u8>,
    block: SseBlock,
}

impl Sse {
    /// Opens a stream; a non-200 answer is returned as the complete response.
    pub fn open(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Sse, Response> {
        let mut stream = connect(port);
        let mut all: Vec<(&str, &str)> = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        write_request(&mut stream, "GET", path, &all, b"")
            .unwrap_or_else(|e| panic!("GET {path}: cannot send: {e}"));
        let mut inner = BufReader::new(stream.try_clone().unwrap());
        let (status, _reason, resp_headers) =
            read_head(&mut inner).unwrap_or_else(|e| panic!("GET {path}: no response head: {e}"));
        if status != 200 {
            let body = if let Some(len) = header_of(&resp_headers, "content-length") {
                let mut body = vec![0; len.parse().unwrap_or(0)];
                inner
                    .read_exact(&mut body)
                    .unwrap_or_else(|e| panic!("GET {path}: {status} body: {e}"));
                body
            } else if is_chunked(&resp_headers) {
                read_chunked(&mut inner).unwrap_or_else(|e| panic!("{status} body: {e}"))
            } else {
                let mut body = Vec::new();
                let _ = inner.read_to_end(&mut body);
                body
            };
            return Err(Response {
                status,
                headers: resp_headers,
                body,
            });
        }
        let chunked = is_chunked(&resp_headers);
        Ok(Sse {
            status,
            headers: resp_headers,
            connected: None,
            first_bytes: Vec::new(),
            reader: BufReader::new(StreamBody {
                inner,
                chunked,
                left: 0,
                done: false,
            }),
            stream,
            line: Vec::new(),
            block: SseBlock::default(),
        })
    }

    /// Opens `/stream/events` (or another stream path) and reads the preamble; panics on
    /// anything but 200 with `retry: 3000` and a `connected`/`status_connected` event.
    pub fn connect(port: u16, path: &str) -> Sse {
        Sse::connect_with(port, path, &[])
    }

    pub fn connect_with(port: u16, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut sse = match Sse::open(port, path, headers) {
            Ok(sse) => sse,
            Err(resp) => panic!("GET {path}: {} {:?}", resp.status, resp.text()),
        };
        sse.read_preamble();
        sse
    }

    /// Reads blocks up to the `connected` (or `status_connected`) event and stores its data.
    pub fn read_preamble(&mut self) {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let block = self.next_block(IO_TIMEOUT).unwrap_or_else(|end| {
                panic!("stream ended in its preamble: {end:?}; got {seen:?}")
            });
            let name = block.event.clone();
            seen.push(block);
            if matches!(
                name.as_deref(),
                Some("connected") | Some("status_connected")
            ) {
                let block = seen.last().unwrap();
                self.connected = Some(block.json());
                assert_eq!(
                    block.retry.as_deref(),
                    Some("3000"),
                    "(r2) `retry: 3000` belongs in the connected block itself: {seen:?}"
                );
                return;
            }
        }
        panic!("no connected event in the first blocks: {seen:?}");
    }

    /// The next block with any field. Keeps partial input across timeouts.
    pub fn next_block(&mut self, timeout: Duration) -> Result<SseBlock, SseEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(SseEnd::Timeout);
            }
            self.stream
                .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
                .unwrap();
            let before = self.line.len();
            let result = self.reader.read_until(b'\n', &mut self.line);
            if self.first_bytes.len() < 4096 {
                let take = (self.line.len() - before).min(4096 - self.first_bytes.len());
                self.first_bytes
                    .extend_from_slice(&self.line[before..before + take]);
            }
            match result {
                Ok(0) => return Err(SseEnd::Eof),
                Ok(_) => {
                    if self.line.last() != Some(&b'\n') {
                        // EOF in the middle of a line.
                        return Err(SseEnd::Eof);
                    }
                    let mut line = std::mem::take(&mut self.line);
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if text.is_empty() {
                        let block = std::mem::take(&mut self.block);
                        if !block.is_empty() {
                            return Ok(block);
                        }
                        continue;
                    }
                    if let Some(comment) = text.strip_prefix(':') {
                        self.block.comments.push(comment.trim_start().to_string());
                        continue;
                    }
                    let (field, value) = match text.split_once(':') {
                        Some((f, v)) => {
                            (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string())
                        }
                        None => (text.clone(), String::new()),
                    };
                    match field.as_str() {
                        "id" => self.block.id = Some(value),
                        "event" => self.block.event = Some(value),
                        "data" => self.block.data.push(value),
                        "retry" => self.block.retry = Some(value),
                        _ => self.block.other.push((field, value)),
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(SseEnd::Timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SseEnd::Error(e)),
            }
        }
    }

    /// The next block that dispatches an event other than `heartbeat`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<SseBlock, SseEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let block = self.next_block(remaining)?;
            if block.dispatches() && block.name() != "heartbeat" {
                return Ok(block);
            }
        }
    }

    /// The next non-heartbeat event; panics on timeout or close.
    pub fn expect_event(&mut self) -> SseBlock {
        self.next_event(IO_TIMEOUT)
            .unwrap_or_else(|end| panic!("expected an SSE event, stream: {end:?}"))
    }

    pub fn expect_events(&mut self, n: usize) -> Vec<SseBlock> {
        (0..n)
            .map(|i| {
                self.next_event(IO_TIMEOUT).unwrap_or_else(|end| {
                    panic!("expected SSE event {} of {n}, stream: {end:?}", i + 1)
                })
            })
            .collect()
    }

    /// Reads blocks until the stream ends or `timeout` passes; returns what came and how it
    /// ended. Bytes of an unfinished block at the end are reported in `residue`.
    pub fn read_to_end(&mut self, timeout: Duration) -> (Vec<SseBlock>, SseEnd, usize) {
        let deadline = Instant::now() + timeout;
        let mut blocks = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.next_block(remaining) {
                Ok(block) => blocks.push(block),
                Err(end) => {
                    let residue = self.line.len() + usize::from(!self.block.is_empty());
                    return (blocks, end, residue);
                }
            }
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header_of(&self.headers, name)
    }

    /// Whether a chunked body ended with its last chunk (a complete response), rather than
    /// with the connection being cut.
    pub fn body_complete(&self) -> bool {
        let body = self.reader.get_ref();
        body.chunked && body.done
    }

    /// Closes both directions now.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
