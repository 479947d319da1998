//! The accept loop and one thread per connection.
//!
//! We run our own loop instead of `tiny_http::Server` (see vendor/tiny_http/PORCHLIGHT-PATCHES.md):
//! its pool grows without limit, sets no socket timeouts and needs a second thread per
//! streaming request. Here each accepted socket gets read/write timeouts and `TCP_NODELAY`, a
//! slot under `max_connections`, and one thread with an explicit small stack that parses
//! requests with tiny_http and answers them in order. When no slot or no thread can be had,
//! the client gets a 503 instead of the server falling over.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown as SocketShutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tiny_http::{ClientConnection, HeadLimits};

use super::router::{self, Handled};
use crate::ctx::Ctx;
use crate::deadline::ReadBy;
use crate::metrics::Metrics;

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
    /// Whether the client has hung up (or the connection broke), found without reading or
    /// writing: a stream that is waiting — MJPEG between frames, SSE between heartbeats — asks
    /// this every second or so, so a viewer that left frees its slot at once instead of when a
    /// write finally fails. `POLLRDHUP` is the client's FIN (it closed, or shut down its
    /// sending side, which no streaming client does while it still wants the stream).
    pub fn client_gone(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll on one pollfd we own, with a zero timeout; it only writes `revents`.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// A hook that closes this connection, for the hubs' eviction.
    pub fn closer(&self) -> Option<Box<dyn FnOnce() + Send>> {
        let socket = self.socket.try_clone().ok()?;
        Some(Box::new(move || {
            socket.shutdown(SocketShutdown::Both).ok();
        }))
    }
}

/// The server's books on open connections: every socket (so shutdown can close them all) and
/// how many each client address holds (for `max_connections_per_ip`). Entries are only ever
/// added by [`Registry::admit`] and removed by the [`Admission`] it returns, whose `Drop` runs
/// however the connection's thread ends — normally, by an error, or by a panic.
#[derive(Default)]
pub struct Registry {
    books: Mutex<Books>,
}

#[derive(Default)]
struct Books {
    open: HashMap<u64, TcpStream>,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// `max_connections` are open.
    Full,
    /// This client address already holds `max_connections_per_ip`.
    AddressFull(usize),
}

/// Limits [`Registry::admit`] enforces.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub total: usize,
    pub per_address: usize,
}

/// One admitted connection's place in the books: its registry entry, its share of its address's
/// count and of `connections_open`. Dropping it gives all three back; it is owned by the
/// connection's thread (or, if that thread never starts, by the closure that failed to spawn),
/// so no path out of a connection — a panic included — can leak them.
pub struct Admission {
    id: u64,
    address: IpAddr,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry.release(self.id, self.address);
        self.metrics.connections_open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The address a limit is counted against: an IPv4 client reaching an IPv6 socket as
/// `::ffff:a.b.c.d` is the IPv4 address it is.
pub fn client_address(peer: &SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Registry {
    /// A poisoned lock still holds consistent books (nothing panics while holding it), and a
    /// release must work during unwinding: take the guard either way.
    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits connection `id` from `peer` under `limits`, keeping `socket` (a second handle)
    /// so shutdown can close it.
    pub fn admit(
        self: &Arc<Self>,
        id: u64,
        peer: &SocketAddr,
        socket: TcpStream,
        limits: ConnectionLimits,
        metrics: &Arc<Metrics>,
    ) -> Result<Admission, Refusal> {
        let address = client_address(peer);
        let mut books = self.books();
        if books.open.len() >= limits.total {
            return Err(Refusal::Full);
        }
        let held = books.per_address.get(&address).copied().unwrap_or(0);
        if held >= limits.per_address {
            return Err(Refusal::AddressFull(held));
        }
        books.open.insert(id, socket);
        *books.per_address.entry(address).or_insert(0) += 1;
        metrics.connections_open.fetch_add(1, Ordering::AcqRel);
        Ok(Admission {
            id,
            address,
            registry: Arc::clone(self),
            metrics: Arc::clone(metrics),
        })
    }

    fn release(&self, id: u64, address: IpAddr) {
        let mut books = self.books();
        books.open.remove(&id);
        if let Some(held) = books.per_address.get_mut(&address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                books.per_address.remove(&address);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.books().open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections `address` holds now.
    #[cfg(test)]
    pub fn held_by(&self, address: IpAddr) -> usize {
        self.books().per_address.get(&address).copied().unwrap_or(0)
    }

    /// Closes every open connection.
    pub fn close_all(&self) {
        for socket in self.books().open.values() {
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
    let head_limits = HeadLimits {
        max_line_bytes: 8 * 1024,
        max_headers: 100,
        request_deadline: ctx.http.request_timeout,
    };
    let limits = ConnectionLimits {
        total: ctx.http.max_connections,
        per_address: ctx.http.max_connections_per_ip,
    };
    let mut last_error_log: Option<Instant> = None;
    let mut last_address_log: Option<Instant> = None;
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
        let refuse_counted = |stream: TcpStream, why: &str| {
            ctx.metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            refuse(stream, why);
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (socket, registered) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                refuse_counted(stream, "the server is out of file descriptors");
                continue;
            }
        };
        let admission = match registry.admit(id, &peer, registered, limits, &ctx.metrics) {
            Ok(admission) => admission,
            Err(Refusal::Full) => {
                refuse_counted(stream, "the server has too many connections open");
                continue;
            }
            Err(Refusal::AddressFull(held)) => {
                if last_address_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    log::warn!(
                        "refusing connections from {}: it holds {held} \
                         (max_connections_per_ip = {})",
                        peer.ip(),
                        limits.per_address
                    );
                    last_address_log = Some(Instant::now());
                }
                refuse_counted(
                    stream,
                    "this address has too many connections open (max_connections_per_ip)",
                );
                continue;
            }
        };
        // The stream travels in a slot so that, if the thread cannot be spawned, we get it back
        // to answer 503 on it. The admission travels into the thread: if spawning fails, the
        // closure is dropped here and the admission with it.
        let slot = Arc::new(Mutex::new(Some(stream)));
        let thread_slot = Arc::clone(&slot);
        let thread_ctx = Arc::clone(&ctx);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let _admission = admission;
                let stream = thread_slot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(stream) = stream {
                    let conn = Conn { id, peer, socket };
                    serve_connection(stream, &conn, &thread_ctx, head_limits);
                }
            });
        if let Err(err) = spawned {
            if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                log::warn!("cannot start a thread for {peer}: {err}; answering 503");
                last_error_log = Some(Instant::now());
            }
            let stream = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(stream) = stream {
                refuse_counted(
                    stream,
                    "the server cannot take another connection right now",
                );
            }
        }
    }
    log::debug!("accept loop stopped");
}

fn configure_socket(stream: &TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    stream.set_read_timeout(Some(ctx.http.request_timeout))?;
    stream.set_write_timeout(Some(ctx.http.write_timeout))?;
    // Events and frames are small writes that must leave at once, not wait for an ACK.
    stream.set_nodelay(true)?;
    detect_dead_peers(stream);
    Ok(())
}

/// Idle time before the first keep-alive probe of a silent connection.
const KEEPALIVE_IDLE_S: libc::c_int = 15;
/// Between keep-alive probes.
const KEEPALIVE_INTERVAL_S: libc::c_int = 5;
/// Unanswered probes before the kernel gives up on the peer.
const KEEPALIVE_PROBES: libc::c_int = 3;

/// A client that vanished without closing (Wi-Fi gone, phone asleep, a half-open attacker)
/// sends no FIN, so [`Conn::client_gone`] cannot see it while a stream is idle between frames
/// or heartbeats. So the kernel probes silent connections (keep-alive: after 15 s, then every
/// 5 s, three times) and errors the socket when the peer is gone, which `client_gone` and the
/// next write both see. (A stream that is writing meets `write_timeout_s` instead. Not
/// `TCP_USER_TIMEOUT`: recent kernels also abort on a zero window held that long, which would
/// cut a slow but live viewer.) Best effort: a failure leaves the defaults.
fn detect_dead_peers(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt on a socket we own, with a pointer to a c_int on our stack and its
        // size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_S);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES);
}

/// Answers 503 on a connection we cannot serve, without reading its request.
fn refuse(mut stream: TcpStream, why: &str) {
    let body = crate::json::text(&serde_json::json!({"error": "unavailable", "message": why}));
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.set_write_timeout(Some(Duration::from_secs(1))).ok();
    stream.write_all(head.as_bytes()).ok();
    stream.write_all(body.as_bytes()).ok();
    // FIN after the answer, then the request the client already sent read and discarded, so
    // that closing sends no reset (which could reach the client before the 503 does). This
    // runs on the accept thread, so it does not wait for more (see `linger_close`).
    stream.shutdown(SocketShutdown::Write).ok();
    discard_queued(&stream);
}

/// Reads and discards, without waiting, what the client has already sent (at most
/// [`LINGER_BYTES`]): Linux answers the close of a socket with unread bytes with a reset.
fn discard_queued(stream: &TcpStream) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut reader = stream;
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// Reads and answers requests in order until the client or a handler ends the connection. A
/// handler that panics ends the connection: the panic is logged once, with its request
/// (`panics::install_hook`), and everything the connection held is released by the guards
/// that own it as the stack unwinds (slots, subscriptions, the registry entry, the socket).
#[inline(never)]
fn serve_connection(stream: TcpStream, conn: &Conn, ctx: &Ctx, limits: HeadLimits) {
    // Declared before the parser, so dropped after it (which flushes what it still buffers,
    // an error answer to a malformed request, and sends FIN): however this function is left —
    // the client or a handler ended the connection, a handler panicked, or the parser did —
    // the connection closes the lingering way.
    let _close = LingeringClose(&conn.socket);
    let mut requests = ClientConnection::from_tcp_stream(stream, limits);
    while let Some(request) = next_request(&mut requests) {
        let handled = panic::catch_unwind(AssertUnwindSafe(|| router::handle(request, conn, ctx)))
            .and_then(|handled| match handled {
                Handled::Answered(keep_alive) => Ok(keep_alive),
                // The stream's long wait runs from here, not from under the router's frames.
                Handled::Stream(wait) => {
                    panic::catch_unwind(AssertUnwindSafe(wait)).map(|()| false)
                }
            });
        match handled {
            Ok(true) if !ctx.shutdown.is_triggered() => {}
            Ok(_) => break,
            Err(_) => {
                ctx.metrics.handler_panics.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Closes a connection with [`linger_close`] when dropped.
struct LingeringClose<'a>(&'a TcpStream);

impl Drop for LingeringClose<'_> {
    fn drop(&mut self) {
        linger_close(self.0, LINGER_TIME);
    }
}

/// Reads and parses the next request head. Out of line: parsing needs kilobytes of stack,
/// which must be gone again before a handler settles into a long wait under this frame (an
/// event stream keeps every page of its call chain resident; see `crate::stack`).
#[inline(never)]
fn next_request(requests: &mut ClientConnection) -> Option<tiny_http::Request> {
    requests.next()
}

/// Paces [`Conn::client_gone`] checks in a loop that may wake often (a poll a frame would be
/// cheap, but a second is soon enough).
pub struct HangupCheck {
    every: Duration,
    last: Instant,
}

impl HangupCheck {
    /// How long a waiting stream may take to notice a client that left.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    pub fn new() -> HangupCheck {
        HangupCheck {
            every: HangupCheck::INTERVAL,
            last: Instant::now(),
        }
    }

    /// Whether `conn`'s client has gone, checked at most once per interval.
    pub fn client_gone(&mut self, conn: &Conn) -> bool {
        if self.last.elapsed() < self.every {
            return false;
        }
        self.last = Instant::now();
        conn.client_gone()
    }
}

impl Default for HangupCheck {
    fn default() -> Self {
        Self::new()
    }
}

/// Most the server reads and discards from a client after its last answer.
const LINGER_BYTES: usize = 64 * 1024;
/// Longest the server waits for a client to close after its last answer.
const LINGER_TIME: Duration = Duration::from_millis(500);

/// Closes the way RFC 9112 §9.6 asks: send FIN first, then read what the client still sends
/// (for at most `within` and [`LINGER_BYTES`]) before closing. Linux answers with a reset both
/// the close of a socket with unread bytes in it and any byte that arrives once reading is
/// shut down, and a reset "might erase the client's unacknowledged input buffers before they
/// can be read" (RFC 9112 §9.6): the answer we just wrote — exactly when it matters, after a
/// malformed, refused or too slow request whose rest is still arriving. So nothing may shut
/// reading down before this (tiny_http does not: see `ClientConnection::from_tcp_stream`).
///
/// Never inlined: its 4 KiB buffer would otherwise sit in the connection thread's outermost
/// frame, under which an event stream waits for hours, and push every page of the stream's
/// call chain 4 KiB deeper (one more resident page per idle stream; see `crate::stack`).
#[inline(never)]
fn linger_close(socket: &TcpStream, within: Duration) {
    if socket.shutdown(SocketShutdown::Write).is_err() {
        return;
    }
    let mut reader = ReadBy::new(socket, within);
    let mut discarded = 0;
    let mut buf = [0u8; 4096];
    while discarded < LINGER_BYTES {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    const LIMITS: ConnectionLimits = ConnectionLimits {
        total: 3,
        per_address: 2,
    };

    /// The admission is what a panicking connection thread owns: unwinding must give back its
    /// registry entry, its address's share and the open-connection gauge.
    #[test]
    fn a_panic_releases_the_admission() {
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new());
        let (_client, server) = socket_pair();
        let peer: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let admission = registry
            .admit(1, &peer, server, LIMITS, &metrics)
            .expect("admitted");
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.held_by(peer.ip()), 1);
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 1);
        let result = panic::catch_unwind(AssertUnwindSafe(move || {
            let _owned = admission;
            panic!("a handler bug");
        }));
        assert!(result.is_err());
        assert_eq!(registry.len(), 0);
        assert_eq!(registry.held_by(peer.ip()), 0);
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn limits_count_per_address_and_in_all() {
        let registry = Arc::new(Registry::default());
        let metrics = Arc::new(Metrics::new());
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        // The same IPv4 client seen through an IPv6 socket counts as the same address.
        let a_mapped: SocketAddr = "[::ffff:192.0.2.1]:2".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        let c: SocketAddr = "[2001:db8::3]:1".parse().unwrap();
        let mut held = Vec::new();
        let mut admit = |id, peer: &SocketAddr| {
            let (client, server) = socket_pair();
            held.push(client);
            registry.admit(id, peer, server, LIMITS, &metrics)
        };
        let first = admit(1, &a).unwrap();
        let second = admit(2, &a_mapped).unwrap();
        assert_eq!(admit(3, &a).err(), Some(Refusal::AddressFull(2)));
        let third = admit(4, &b).unwrap();
        assert_eq!(admit(5, &c).err(), Some(Refusal::Full));
        drop(first);
        assert_eq!(admit(6, &c).map(|_| ()).err(), None);
        drop((second, third));
        assert!(registry.is_empty());
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 0);
    }

    /// A half-open client (no FIN ever comes) cannot be made on loopback, where the kernel
    /// acknowledges everything; what can be checked is that the kernel was asked to find it.
    #[test]
    fn dead_peers_are_probed_and_given_up_on() {
        let (_client, server) = socket_pair();
        detect_dead_peers(&server);
        let get = |level, name| {
            let mut value: libc::c_int = -1;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt into a c_int on our stack, with its size.
            let rc = unsafe {
                libc::getsockopt(
                    server.as_raw_fd(),
                    level,
                    name,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(rc, 0);
            value
        };
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), KEEPALIVE_IDLE_S);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), KEEPALIVE_PROBES);
    }

    /// Reads `client` to its end: it must begin with `status_line` and end with FIN, with no
    /// reset pending on the socket (a reset can erase an answer before it is read).
    fn assert_answer_then_clean_end(client: &mut TcpStream, status_line: &[u8]) {
        let mut answer = Vec::new();
        client
            .read_to_end(&mut answer)
            .expect("the answer, then the end");
        assert!(
            answer.starts_with(status_line),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_eq!(
            client.take_error().unwrap().map(|e| e.to_string()),
            None,
            "the connection was reset"
        );
    }

    /// A client that is still sending when its error answer comes gets that answer and a
    /// clean end, not a reset. tiny_http used to shut reading down as the connection was
    /// dropped; Linux then answered the client's next byte with a reset, which can destroy the
    /// answer before the client reads it (the dripping client of
    /// hostile::a_slow_request_is_cut_at_its_deadline sends exactly such bytes). Here the byte
    /// comes after the parser is gone, before the lingering close.
    #[test]
    fn a_client_still_sending_after_an_error_answer_gets_it_and_no_reset() {
        let (mut client, server) = socket_pair();
        let socket = server.try_clone().unwrap();
        // A control byte in a header: 400, and the rest of the request is still to come.
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: \x01")
            .unwrap();
        let (answered, wait_answered) = std::sync::mpsc::channel();
        let (sent_more, wait_sent_more) = std::sync::mpsc::channel();
        let closing = std::thread::spawn(move || {
            let mut requests = ClientConnection::from_tcp_stream(server, HeadLimits::default());
            assert!(requests.next().is_none(), "a malformed request was parsed");
            drop(requests);
            answered.send(()).unwrap();
            wait_sent_more.recv().unwrap();
            // Far longer than the client needs, so only a reset can make this test fail.
            linger_close(&socket, Duration::from_secs(30));
        });
        wait_answered.recv().unwrap();
        client.write_all(&[b' '; 1000]).unwrap();
        client
            .shutdown(SocketShutdown::Write)
            .expect("the connection still open, not reset");
        sent_more.send(()).unwrap();
        closing.join().unwrap();
        assert_answer_then_clean_end(&mut client, b"HTTP/1.1 400 ");
    }

    /// The same for a connection refused on the accept thread: its request, already sent, is
    /// read and discarded before the close, which then sends no reset after the 503.
    #[test]
    fn a_refused_client_gets_its_503_and_no_reset() {
        let (mut client, server) = socket_pair();
        client
            .write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // The request has arrived (refuse does not wait for it).
        server.peek(&mut [0u8; 1]).unwrap();
        refuse(server, "testing");
        assert_answer_then_clean_end(&mut client, b"HTTP/1.1 503 ");
    }

    #[test]
    fn a_client_that_closed_is_noticed_without_io() {
        let (client, server) = socket_pair();
        let conn = Conn {
            id: 1,
            peer: client.local_addr().unwrap(),
            socket: server,
        };
        assert!(!conn.client_gone());
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !conn.client_gone() {
            assert!(Instant::now() < deadline, "a closed client was not noticed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
