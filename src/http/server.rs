//! The accept loop and one thread per connection.
//!
//! We run our own loop instead of `tiny_http::Server` (see vendor/tiny_http/PORCHLIGHT-PATCHES.md):
//! its pool grows without limit, sets no socket timeouts and needs a second thread per
//! streaming request. Here each accepted socket gets read/write timeouts and `TCP_NODELAY`, a
//! slot under `max_connections`, and one thread with an explicit small stack that parses
//! requests with tiny_http and answers them in order. When no slot or no thread can be had,
//! the client gets a 503 instead of the server falling over.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tiny_http::{ClientConnection, HeadLimits};

use super::router;
use crate::app::Ctx;

/// Stack of each connection thread. Measured need: SQLite reads and JSON handling stay far
/// below this; only touched pages cost memory, so the figure bounds, not allocates.
pub const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// One accepted connection, as handlers see it.
pub struct Conn {
    pub id: u64,
    pub peer: SocketAddr,
    /// A second handle on the socket, so a stream can be cut from outside (eviction, shutdown)
    /// even while its thread is blocked in a write.
    pub socket: TcpStream,
}

impl Conn {
    /// A hook that closes this connection, for the hubs' eviction.
    pub fn closer(&self) -> Option<Box<dyn FnOnce() + Send>> {
        let socket = self.socket.try_clone().ok()?;
        Some(Box::new(move || {
            socket.shutdown(SocketShutdown::Both).ok();
        }))
    }
}

/// Open connections, so that shutdown can close every one of them.
#[derive(Default)]
pub struct Registry {
    open: Mutex<HashMap<u64, TcpStream>>,
}

impl Registry {
    fn insert(&self, id: u64, socket: TcpStream) {
        self.open.lock().expect("registry lock").insert(id, socket);
    }

    fn remove(&self, id: u64) {
        self.open.lock().expect("registry lock").remove(&id);
    }

    pub fn len(&self) -> usize {
        self.open.lock().expect("registry lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every open connection.
    pub fn close_all(&self) {
        for socket in self.open.lock().expect("registry lock").values() {
            socket.shutdown(SocketShutdown::Both).ok();
        }
    }
}

/// Raises the accept backlog from std's 128 to `connections` (capped by the kernel's somaxconn),
/// so that a burst of clients connecting at once (a dashboard reload on many phones, a
/// benchmark) is queued instead of having SYNs dropped and retried a second later.
pub fn widen_backlog(listener: &TcpListener, connections: usize) {
    let backlog = connections.clamp(128, 4096) as libc::c_int;
    // SAFETY: listen() on a socket that is already listening only updates its backlog.
    unsafe {
        libc::listen(listener.as_raw_fd(), backlog);
    }
}

/// File descriptors one connection can hold: the socket, the registry's and the handler's
/// handles on it, and tiny_http's read/write halves.
const FDS_PER_CONNECTION: u64 = 4;

/// Raises the soft open-file limit to the hard one: the default soft limit (often 1024) would
/// run out at about 250 streaming clients. Warns when even the hard limit cannot hold
/// `connections`.
pub fn raise_open_file_limit(connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let needed = connections as u64 * FDS_PER_CONNECTION + 64;
    // rlim_t is u64 here but u32 on 32-bit ARM (the Pi Zero): the cast is needed there.
    #[allow(clippy::unnecessary_cast)]
    let soft = limit.rlim_cur as u64;
    if soft < needed {
        log::warn!(
            "the open-file limit is {} but max_connections = {connections} may need {needed}; \
             raise LimitNOFILE or lower max_connections",
            limit.rlim_cur
        );
    }
}

/// Wakes a thread blocked in `accept` on `listener` (Linux returns EINVAL from accept once the
/// listening socket is shut down).
pub fn unblock_accept(listener: &TcpListener) {
    // SAFETY: shutdown on a valid fd we own has no memory effects.
    unsafe {
        libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
    }
}

/// Accepts until shutdown. Runs on its own thread.
pub fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, registry: Arc<Registry>) {
    let next_id = AtomicU64::new(1);
    let limits = HeadLimits {
        max_line_bytes: 8 * 1024,
        max_headers: 100,
        head_deadline: Duration::from_secs_f64(ctx.config.request_timeout_s),
    };
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = listener.accept();
        if ctx.shutdown.is_triggered() {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // EMFILE and friends: say so (not more than once a second) and back off a
                // little, instead of spinning.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    log::warn!("accept failed: {err}");
                    last_error_log = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        ctx.metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        if let Err(err) = configure_socket(&stream, &ctx) {
            log::debug!("dropping connection from {peer}: {err}");
            continue;
        }
        let open = ctx.metrics.connections_open.fetch_add(1, Ordering::AcqRel);
        if open >= ctx.config.max_connections {
            ctx.metrics.connections_open.fetch_sub(1, Ordering::AcqRel);
            refuse(stream, "the server has too many connections open");
            ctx.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (socket, registered) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                ctx.metrics.connections_open.fetch_sub(1, Ordering::AcqRel);
                refuse(stream, "the server is out of file descriptors");
                ctx.metrics
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        registry.insert(id, registered);
        // The stream travels in a slot so that, if the thread cannot be spawned, we get it back
        // to answer 503 on it.
        let slot = Arc::new(Mutex::new(Some(stream)));
        let thread_slot = Arc::clone(&slot);
        let thread_ctx = Arc::clone(&ctx);
        let thread_registry = Arc::clone(&registry);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let stream = thread_slot.lock().expect("slot").take();
                if let Some(stream) = stream {
                    let conn = Conn { id, peer, socket };
                    serve_connection(stream, &conn, &thread_ctx, limits);
                }
                thread_registry.remove(id);
                thread_ctx
                    .metrics
                    .connections_open
                    .fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(err) = spawned {
            registry.remove(id);
            ctx.metrics.connections_open.fetch_sub(1, Ordering::AcqRel);
            ctx.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                log::warn!("cannot start a thread for {peer}: {err}; answering 503");
                last_error_log = Some(Instant::now());
            }
            if let Some(stream) = slot.lock().expect("slot").take() {
                refuse(
                    stream,
                    "the server cannot take another connection right now",
                );
            }
        }
    }
    log::debug!("accept loop stopped");
}

fn configure_socket(stream: &TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs_f64(ctx.config.request_timeout_s)))?;
    stream.set_write_timeout(Some(Duration::from_secs_f64(ctx.config.write_timeout_s)))?;
    // Events and frames are small writes that must leave at once, not wait for an ACK.
    stream.set_nodelay(true)?;
    Ok(())
}

/// Answers 503 on a connection we cannot serve, without reading its request.
fn refuse(mut stream: TcpStream, why: &str) {
    let body = serde_json::json!({"error": "unavailable", "message": why}).to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.set_write_timeout(Some(Duration::from_secs(1))).ok();
    stream.write_all(head.as_bytes()).ok();
    stream.write_all(body.as_bytes()).ok();
    stream.shutdown(SocketShutdown::Both).ok();
}

/// Reads and answers requests in order until the client or a handler ends the connection.
fn serve_connection(stream: TcpStream, conn: &Conn, ctx: &Ctx, limits: HeadLimits) {
    let requests = ClientConnection::from_tcp_stream(stream, limits);
    for request in requests {
        let keep_open = router::handle(request, conn, ctx);
        if !keep_open || ctx.shutdown.is_triggered() {
            break;
        }
    }
}
