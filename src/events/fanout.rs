//! Write-through fan-out: the event writer sends each event's shared bytes to every client's
//! socket itself, and a client's own thread only wakes when its socket is full.
//!
//! Waking a thread per client per event is what used to cost the most (500 clients × 50
//! events/s = 25 000 wake-ups and context switches a second, on one core of a Pi Zero). Here
//! each client is a [`Sink`] in one of two modes:
//!
//! - **direct** (the common case): the fan-out writes the event's pre-serialised bytes (the
//!   SSE chunk or the WebSocket frame, built once and shared by every client) to the socket
//!   with one non-blocking `sendmsg` — no queue, no wake-up, no context switch;
//! - **owned**: the client's connection thread owns the socket and writes everything itself
//!   (its handshake, replay, heartbeats, command answers — whatever may block). The fan-out
//!   then only queues events for it (at most `capacity`, past which the client is evicted)
//!   and wakes it.
//!
//! A sink goes from direct to owned when a send does not take the whole event (the socket is
//! full: a slow client) — the bytes left, and every later event, are queued for the thread,
//! which writes them with blocking, time-limited writes — or when its thread wants to write
//! something of its own ([`Outlet::detach`]). It goes back to direct only when its thread says so
//! with nothing queued ([`Outlet::settle`]). Every mode change happens under the sink's lock,
//! and the fan-out writes only while holding it in direct mode, so exactly one side writes to
//! a socket at any time, and only between whole events.
//!
//! An owned client's thread is woken through its eventfd ([`WakeFd`]), which it waits on in one
//! `poll(2)` together with its socket (an SSE stream watching for the client's hang-up, a
//! WebSocket session reading its client) and the shutdown descriptor.
//!
//! Exactly once, in order: the sink keeps the id of the last event handled (sent, or skipped by
//! its filter) while direct, and the thread's [`Cursor`](super::Cursor) hands its own over on
//! attaching, so an event that a replay already read from the store is never sent again live.
//!
//! Shared passes: on a machine with more than one CPU (a Pi Zero 2 has four), a pass over many
//! clients ([`Split::min_clients`]) is shared with one helper thread: both take the next few
//! clients until none are left, so the last client is written up to about half as late. Each
//! client is written by one of them, under its lock, and the pass ends before `publish`
//! returns, so everything above holds per client as in a serial pass. With one CPU (a Pi Zero,
//! `taskset -c 0`), a cgroup quota of one, or no thread to be had, passes stay serial.
//!
//! Fair turns: each pass starts at a different client and wraps around the list (the starts
//! spread evenly, [`Slots::next_start`]), so the few milliseconds a pass over hundreds of
//! clients takes are shared by all of them instead of always falling on the latest subscribers.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::event::{PublishedEvent, SharedEvent};
use crate::wake::WakeFd;

/// Which of an event's shared byte forms a client's stream is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// SSE in a chunked HTTP/1.1 body: the event's block as one chunk.
    SseChunked,
    /// SSE to an HTTP/1.0 client (body until close): the bare block.
    SsePlain,
    /// The complete, unmasked WebSocket `live_event` text frame.
    WebSocket,
}

impl Wire {
    pub fn bytes(self, event: &PublishedEvent) -> &[u8] {
        match self {
            Wire::SseChunked => event.sse_chunk(),
            Wire::SsePlain => event.sse(),
            Wire::WebSocket => &event.ws_frame,
        }
    }
}

/// Which event types a client wants (`None` on a sink: every type).
pub type Interest = Box<dyn Fn(&str) -> bool + Send>;

/// Runs once, on the writer thread, when a client is evicted; it gets the client's socket (to
/// shut it down, so a thread blocked writing to a client that reads nothing is freed at once).
pub type StreamEvictHook = Box<dyn FnOnce(&TcpStream) + Send>;

/// Sends `parts` without blocking; `Ok(n)` is how many bytes the socket took (0 when it is
/// full). Never raises SIGPIPE.
///
/// One part (one event: the usual batch) goes out with `send(2)`, which hands the kernel the
/// buffer directly; `sendmsg(2)` first copies a message header and an iovec array in from user
/// memory, work done once per client per event.
fn send_now(socket: &TcpStream, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        let sent = send_once(socket.as_raw_fd(), parts);
        if let Ok(sent) = usize::try_from(sent) {
            return Ok(sent);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(err),
        }
    }
}

/// One non-blocking send of `parts` to `fd`: the system call's result.
fn send_once(fd: std::os::fd::RawFd, parts: &[IoSlice<'_>]) -> isize {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    if let [only] = parts {
        // SAFETY: send reads `only.len()` bytes from `only`, valid for the call.
        return unsafe { libc::send(fd, only.as_ptr().cast(), only.len(), flags) };
    }
    // SAFETY: a zeroed msghdr is valid (no name, no control data); IoSlice is guaranteed to be
    // ABI-compatible with iovec on Unix, and `parts` outlives the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = parts.as_ptr() as *mut libc::iovec;
    message.msg_iovlen = parts.len() as _;
    // SAFETY: sendmsg reads the iovecs described by `message`, all valid for the call.
    unsafe { libc::sendmsg(fd, &message, flags) }
}

/// One client, as the fan-out sees it.
struct Sink {
    /// A handle on the client's socket for the fan-out's own sends.
    socket: TcpStream,
    wire: Wire,
    /// Events queued for the thread at most; one more evicts the client.
    capacity: usize,
    state: Mutex<SinkState>,
}

struct SinkState {
    /// The fan-out writes to the socket (true) or queues for the client's thread (false).
    direct: bool,
    /// Events for the thread to write, in id order; only ever non-empty while owned.
    queue: VecDeque<SharedEvent>,
    /// Bytes of `queue[0]` the fan-out sent before the socket filled up.
    head_sent: usize,
    interest: Option<Interest>,
    /// While direct: the last event id handled (sent, or not wanted).
    handled: u64,
    /// Events the fan-out sent itself.
    sent: u64,
    last_send: Option<Instant>,
    evicted: bool,
}

impl SinkState {
    fn wants(&self, event_type: &str) -> bool {
        self.interest.as_ref().is_none_or(|wants| wants(event_type))
    }
}

impl Sink {
    /// Never panics while unwinding: a poisoned lock still holds a consistent state (nothing
    /// in it is left half-changed by a panic).
    fn lock(&self) -> MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers `events` (in id order) to this client: sends them now if the sink is direct,
    /// queues them for its thread otherwise.
    fn offer<'e>(
        &self,
        events: &'e [SharedEvent],
        now: Instant,
        scratch: &mut Scratch<'e>,
    ) -> Offer {
        let mut state = self.lock();
        let mut offer = Offer::default();
        let mut rest = events;
        if state.direct {
            scratch.parts.clear();
            scratch.wanted.clear();
            for (i, event) in events.iter().enumerate() {
                if event.event.id > state.handled && state.wants(&event.event.event_type) {
                    scratch.parts.push(IoSlice::new(self.wire.bytes(event)));
                    scratch.wanted.push(i);
                }
            }
            // A broken socket takes nothing, like a full one: the thread's own write then
            // finds the error and ends the stream.
            let sent = if scratch.parts.is_empty() {
                0
            } else {
                send_now(&self.socket, &scratch.parts).unwrap_or(0)
            };
            // Which events went out whole, and where the send stopped.
            let mut covered = 0;
            let mut whole = 0;
            for &i in &scratch.wanted {
                let len = self.wire.bytes(&events[i]).len();
                if covered + len > sent {
                    break;
                }
                covered += len;
                whole += 1;
            }
            state.sent += whole as u64;
            offer.sent = whole;
            if whole > 0 {
                state.last_send = Some(now);
            }
            let Some(&first_unsent) = scratch.wanted.get(whole) else {
                if let Some(last) = events.last() {
                    state.handled = state.handled.max(last.event.id);
                }
                return offer;
            };
            // The socket is full: from the first event not sent whole, everything goes to the
            // client's thread, which finishes that event's bytes before anything else.
            state.handled = events[first_unsent].event.id - 1;
            state.direct = false;
            state.head_sent = sent - covered;
            rest = &events[first_unsent..];
            offer.handed_off = true;
        }
        if state.queue.len() + rest.len() > self.capacity {
            state.evicted = true;
            offer.evict = true;
            return offer;
        }
        state.queue.extend(rest.iter().cloned());
        offer.queued = !rest.is_empty();
        offer
    }
}

/// Buffers one publish reuses for every sink.
struct Scratch<'e> {
    parts: Vec<IoSlice<'e>>,
    /// Indexes of the events in `parts`.
    wanted: Vec<usize>,
}

/// What offering events to one sink did.
#[derive(Default)]
struct Offer {
    /// Events the fan-out sent whole.
    sent: usize,
    /// Something was queued: wake the thread.
    queued: bool,
    /// The socket filled up just now: the thread takes over.
    handed_off: bool,
    /// The queue would exceed its capacity: the client is evicted.
    evict: bool,
}

struct Slot {
    id: u64,
    sink: Arc<Sink>,
    /// The thread's eventfd: readable until the thread clears it, so a wake-up given while it
    /// is busy is not lost, and any number of them are one.
    wake: Arc<WakeFd>,
    on_evict: Option<StreamEvictHook>,
}

/// A client as a pass reaches it: what the writer and the helper share.
struct Target {
    sink: Arc<Sink>,
    wake: Arc<WakeFd>,
}

/// The clients, in subscription order.
struct Slots {
    list: Vec<Slot>,
    /// Where the next pass starts in `list` ([`Slots::next_start`]).
    phase: u32,
    /// `list` as a split pass shares it with the helper thread (same order); made again at the
    /// first split pass after the list changed.
    targets: Option<Arc<[Target]>>,
}

/// Steps `Slots::phase` by the golden ratio of its range (a Weyl sequence), so consecutive
/// passes start far apart and any run of passes spreads its starts evenly over the list.
const PHASE_STEP: u32 = 0x9E37_79B9;

/// The list index of the client at `place` in a pass over `len` clients that begins at
/// `start` and wraps around (both below `len`).
fn index_at(start: usize, place: usize, len: usize) -> usize {
    // start < len and place < len: the sum is below 2 len.
    let i = start + place;
    if i >= len { i - len } else { i }
}

/// Steps `phase` and gives the place in a list of `len` it points at (0 for an empty list).
fn next_start(phase: &mut u32, len: usize) -> usize {
    *phase = phase.wrapping_add(PHASE_STEP);
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    // phase / 2^32 of the way into the list: always below `len`.
    usize::try_from((u64::from(*phase) * len) >> 32).unwrap_or(0)
}

impl Slots {
    /// Where a pass over the list starts. A pass takes time (a send each, some microseconds
    /// per client), so the client written last waits the whole pass: if every pass began at the
    /// first subscriber, the same clients (the ones that subscribed last) would always wait
    /// longest, and a group of them (say the WebSockets that connected after the SSE streams)
    /// would see their whole latency distribution shifted by most of a pass. Starting each pass
    /// somewhere else shares that wait among all clients. Each client still gets every event in
    /// order: a pass ends before the next begins.
    fn next_start(&mut self) -> usize {
        next_start(&mut self.phase, self.list.len())
    }

    fn targets(&mut self) -> Arc<[Target]> {
        let list = &self.list;
        Arc::clone(self.targets.get_or_insert_with(|| {
            list.iter()
                .map(|slot| Target {
                    sink: Arc::clone(&slot.sink),
                    wake: Arc::clone(&slot.wake),
                })
                .collect()
        }))
    }

    /// Removes the clients at `evicted` (indexes into `list`) and returns their hooks.
    fn evict(&mut self, evicted: &[usize]) -> Vec<(Arc<Sink>, Option<StreamEvictHook>)> {
        if evicted.is_empty() {
            return Vec::new();
        }
        let hooks = evicted
            .iter()
            .map(|&i| {
                let slot = &mut self.list[i];
                (Arc::clone(&slot.sink), slot.on_evict.take())
            })
            .collect();
        let mut i = 0;
        self.list.retain(|_| {
            i += 1;
            !evicted.contains(&(i - 1))
        });
        self.targets = None;
        hooks
    }
}

/// Offers `events` to one client and counts what happened in `pass`; `index` is its place in
/// the slots' list.
fn offer_to<'e>(
    index: usize,
    sink: &Sink,
    wake: &WakeFd,
    events: &'e [SharedEvent],
    now: Instant,
    scratch: &mut Scratch<'e>,
    pass: &mut Pass,
) {
    let offer = sink.offer(events, now, scratch);
    if offer.evict {
        pass.evicted.push(index);
        // Its thread is woken and sees `Evicted` once it has taken what was queued.
        wake.wake();
        return;
    }
    match sink.wire {
        Wire::WebSocket => pass.counts.ws_sent += offer.sent as u64,
        Wire::SseChunked | Wire::SsePlain => pass.counts.sse_sent += offer.sent as u64,
    }
    if offer.handed_off {
        pass.counts.handed_off += 1;
    }
    if offer.queued {
        wake.wake();
    }
}

impl<'e> Scratch<'e> {
    fn new(events: &[SharedEvent]) -> Scratch<'e> {
        Scratch {
            parts: Vec::with_capacity(events.len()),
            wanted: Vec::with_capacity(events.len()),
        }
    }
}

/// What a pass (or one thread's share of it) did.
#[derive(Default)]
struct Pass {
    counts: Published,
    /// The clients it evicted: indexes into the slots' list.
    evicted: Vec<usize>,
}

impl Pass {
    fn add(&mut self, other: Pass) {
        self.counts.sse_sent += other.counts.sse_sent;
        self.counts.ws_sent += other.counts.ws_sent;
        self.counts.handed_off += other.counts.handed_off;
        self.evicted.extend(other.evicted);
    }
}

/// When a pass is shared with the helper thread.
pub struct Split {
    /// Passes over fewer clients stay serial: waking the helper costs about as much as writing
    /// to a few dozen clients, and below this the last client is not written much later.
    pub min_clients: usize,
    /// Clients a thread takes at a time. The writer waits at the end of a pass for the chunk
    /// the helper is writing, never for the helper to start.
    pub chunk: usize,
    /// How many CPUs this process may run on (asked again every `recheck`).
    pub cpus: fn() -> usize,
    pub recheck: Duration,
    /// The helper's stack (it only runs passes: its buffers are on the heap).
    pub helper_stack: usize,
}

impl Default for Split {
    fn default() -> Split {
        Split {
            min_clients: 64,
            chunk: 4,
            cpus: usable_cpus,
            recheck: Duration::from_secs(10),
            helper_stack: 64 * 1024,
        }
    }
}

/// The CPUs this process may use: its affinity mask (`sched_getaffinity`: `taskset`, a
/// systemd `CPUAffinity=`), capped by a cgroup CPU quota when there is one.
fn usable_cpus() -> usize {
    thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The writer's side of splitting: what it last found out, and the helper.
struct SplitState {
    cpus: usize,
    checked: Option<Instant>,
    /// A helper thread could not be started: serial until the next check.
    refused: bool,
    /// The helper (it ends when this is dropped); started at the first split pass.
    helper: Option<HelperHandle>,
}

/// Where the writer leaves a pass for the helper.
#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
    filled: Condvar,
}

#[derive(Default)]
struct InboxState {
    /// The latest pass; one the helper did not take in time is replaced (the writer did it).
    job: Option<Arc<Job>>,
    /// The fan-out is gone: the helper ends.
    closed: bool,
}

impl Inbox {
    fn state(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn offer(&self, job: Arc<Job>) {
        self.state().job = Some(job);
        self.filled.notify_one();
    }

    /// Takes `job` back if the helper has not taken it (so nothing holds the pass's snapshot of
    /// the clients once it has ended).
    fn withdraw(&self, job: &Arc<Job>) {
        let mut state = self.state();
        if state
            .job
            .as_ref()
            .is_some_and(|left| Arc::ptr_eq(left, job))
        {
            state.job = None;
        }
    }

    /// The next pass, or `None` once the fan-out is gone.
    fn take(&self) -> Option<Arc<Job>> {
        let mut state = self.state();
        loop {
            if state.closed {
                return None;
            }
            if let Some(job) = state.job.take() {
                return Some(job);
            }
            state = self
                .filled
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// The writer's hold on the helper: dropping it ends the helper thread.
struct HelperHandle(Arc<Inbox>);

impl Drop for HelperHandle {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.closed = true;
        state.job = None;
        drop(state);
        self.0.filled.notify_one();
    }
}

impl Split {
    /// The helper to share a pass over `clients` clients with at `now`, if any.
    fn helper(&self, state: &mut SplitState, clients: usize, now: Instant) -> Option<Arc<Inbox>> {
        if clients < self.min_clients.max(2) {
            return None;
        }
        if state
            .checked
            .is_none_or(|checked| now.saturating_duration_since(checked) >= self.recheck)
        {
            let cpus = (self.cpus)();
            if state.checked.is_none() || (cpus > 1) != (state.cpus > 1) {
                if cpus > 1 {
                    log::info!(
                        "event fan-out: {cpus} CPUs usable, a helper thread shares passes over \
                         {} or more clients",
                        self.min_clients.max(2)
                    );
                } else {
                    log::info!("event fan-out: one CPU usable, every pass is serial");
                }
            }
            state.cpus = cpus;
            state.checked = Some(now);
            state.refused = false;
            if cpus < 2 {
                // Ends the helper, if there was one.
                state.helper = None;
            }
        }
        if state.cpus < 2 || state.refused {
            return None;
        }
        if state.helper.is_none() {
            let inbox = Arc::new(Inbox::default());
            let jobs = Arc::clone(&inbox);
            match thread::Builder::new()
                .name("fanout-helper".into())
                .stack_size(self.helper_stack)
                .spawn(move || {
                    crate::priority::run_event_fanout_first("fan-out helper");
                    help(&jobs)
                }) {
                Ok(_) => state.helper = Some(HelperHandle(inbox)),
                Err(err) => {
                    state.refused = true;
                    log::warn!(
                        "event fan-out: no helper thread ({err}), passes are serial for {} s",
                        self.recheck.as_secs()
                    );
                    return None;
                }
            }
        }
        state.helper.as_ref().map(|helper| Arc::clone(&helper.0))
    }
}

/// One pass shared by the writer and the helper: each takes the next `chunk` clients until
/// none are left.
struct Job {
    targets: Arc<[Target]>,
    /// The pass begins at this client and wraps around ([`Slots::next_start`]).
    start: usize,
    events: Vec<SharedEvent>,
    now: Instant,
    chunk: usize,
    /// The first place in the pass not taken yet.
    next: AtomicUsize,
    state: Mutex<JobState>,
    /// Signalled when the helper finishes a chunk while the writer waits.
    progress: Condvar,
}

#[derive(Default)]
struct JobState {
    /// Clients the helper has finished.
    finished: usize,
    /// The writer waits for the helper's last chunk.
    waiting: bool,
    /// The helper panicked: the pass is incomplete.
    helper_panicked: bool,
    /// What the helper did.
    pass: Pass,
}

impl Job {
    fn state(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the next chunk of places in the pass, if any is left.
    fn claim(&self) -> Option<Range<usize>> {
        let start = self.next.fetch_add(self.chunk, Ordering::Relaxed);
        (start < self.targets.len()).then(|| start..(start + self.chunk).min(self.targets.len()))
    }

    /// Offers the events to the clients at `places` in this pass's order (which begins at
    /// `start`).
    fn offer<'e>(&'e self, places: Range<usize>, scratch: &mut Scratch<'e>, pass: &mut Pass) {
        let len = self.targets.len();
        for place in places {
            let i = index_at(self.start, place, len);
            let target = &self.targets[i];
            offer_to(
                i,
                &target.sink,
                &target.wake,
                &self.events,
                self.now,
                scratch,
                pass,
            );
        }
    }
}

/// The helper thread: takes chunks of each pass it is given (none, if the writer already took
/// them all) until the fan-out is dropped. A panic here ends the thread and, through
/// `Leaving`, the writer's pass with a panic, as a panic in a serial pass would.
fn help(jobs: &Inbox) {
    /// Tells a waiting writer that the helper panicked.
    struct Leaving<'j>(&'j Job);
    impl Drop for Leaving<'_> {
        fn drop(&mut self) {
            if thread::panicking() {
                self.0.state().helper_panicked = true;
                self.0.progress.notify_one();
            }
        }
    }
    while let Some(job) = jobs.take() {
        let _leaving = Leaving(&job);
        let mut scratch = Scratch::new(&job.events);
        while let Some(clients) = job.claim() {
            let count = clients.len();
            let mut pass = Pass::default();
            job.offer(clients, &mut scratch, &mut pass);
            let mut state = job.state();
            state.pass.add(pass);
            state.finished += count;
            if state.waiting {
                job.progress.notify_one();
            }
        }
    }
}

struct Shared {
    slots: Mutex<Slots>,
    next_id: AtomicU64,
    split: Split,
    split_state: Mutex<SplitState>,
    /// Passes the helper took part in.
    helped_passes: AtomicU64,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The publishing side, owned by the event writer; cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    shared: Arc<Shared>,
}

impl Default for Fanout {
    fn default() -> Self {
        Self::new()
    }
}

/// What one [`Fanout::publish`] did, for the metrics.
#[derive(Debug, Default, PartialEq)]
pub struct Published {
    /// Events the fan-out sent itself, by wire (SSE, WebSocket).
    pub sse_sent: u64,
    pub ws_sent: u64,
    /// Clients whose socket filled up, handed to their own thread.
    pub handed_off: u64,
    pub evicted: u64,
}

impl Fanout {
    pub fn new() -> Fanout {
        Fanout::with_split(Split::default())
    }

    /// A fan-out that shares its passes with a helper thread as `split` says.
    pub fn with_split(split: Split) -> Fanout {
        Fanout {
            shared: Arc::new(Shared {
                slots: Mutex::new(Slots {
                    list: Vec::new(),
                    phase: 0,
                    targets: None,
                }),
                next_id: AtomicU64::new(1),
                split,
                split_state: Mutex::new(SplitState {
                    cpus: 1,
                    checked: None,
                    refused: false,
                    helper: None,
                }),
                helped_passes: AtomicU64::new(0),
            }),
        }
    }

    /// Adds a client whose stream is `socket` framed as `wire`. It starts *owned*: nothing is
    /// sent to it until its thread [`Outlet::settle`]s (after its handshake and replay); events
    /// published meanwhile are queued, at most `capacity` of them, and the thread is woken by
    /// making `wake` readable (also when it is evicted).
    pub fn subscribe(
        &self,
        socket: TcpStream,
        wire: Wire,
        capacity: usize,
        on_evict: Option<StreamEvictHook>,
        wake: Arc<WakeFd>,
    ) -> Outlet {
        let sink = Arc::new(Sink {
            socket,
            wire,
            capacity: capacity.max(1),
            state: Mutex::new(SinkState {
                direct: false,
                queue: VecDeque::new(),
                head_sent: 0,
                interest: None,
                handled: 0,
                sent: 0,
                last_send: None,
                evicted: false,
            }),
        });
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.shared.slots();
        slots.list.push(Slot {
            id,
            sink: Arc::clone(&sink),
            wake,
            on_evict,
        });
        slots.targets = None;
        drop(slots);
        Outlet {
            id,
            sink,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Offers `events` (one committed batch, in id order) to every client: one send per
    /// direct client, a queue entry and a wake-up per owned one. Never blocks on a client.
    /// A pass over many clients may be shared with a helper thread (see [`Split`]); it has
    /// ended for every client when this returns.
    pub fn publish(&self, events: &[SharedEvent]) -> Published {
        if events.is_empty() {
            return Published::default();
        }
        let now = Instant::now();
        let (mut published, hooks) = {
            let mut slots = self.shared.slots();
            let helper = {
                let mut state = self
                    .shared
                    .split_state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                self.shared.split.helper(&mut state, slots.list.len(), now)
            };
            let pass = match helper {
                Some(helper) => self.shared_pass(&helper, &mut slots, events, now),
                None => {
                    let mut pass = Pass::default();
                    let mut scratch = Scratch::new(events);
                    let start = slots.next_start();
                    let len = slots.list.len();
                    for place in 0..len {
                        let i = index_at(start, place, len);
                        let slot = &slots.list[i];
                        offer_to(
                            i,
                            &slot.sink,
                            &slot.wake,
                            events,
                            now,
                            &mut scratch,
                            &mut pass,
                        );
                    }
                    pass
                }
            };
            (pass.counts, slots.evict(&pass.evicted))
        };
        // Hooks run outside the lock: they do I/O (shutting a socket down).
        published.evicted = hooks.len() as u64;
        for (sink, hook) in hooks {
            if let Some(hook) = hook {
                hook(&sink.socket);
            }
        }
        published
    }

    /// One pass shared with the helper: it is offered the job and takes chunks of clients
    /// beside this thread once it runs; this thread takes every chunk it has not, and then
    /// waits only for a chunk the helper is still writing.
    fn shared_pass(
        &self,
        helper: &Inbox,
        slots: &mut Slots,
        events: &[SharedEvent],
        now: Instant,
    ) -> Pass {
        let start = slots.next_start();
        let job = Arc::new(Job {
            targets: slots.targets(),
            start,
            events: events.to_vec(),
            now,
            chunk: self.shared.split.chunk.max(1),
            next: AtomicUsize::new(0),
            state: Mutex::new(JobState::default()),
            progress: Condvar::new(),
        });
        helper.offer(Arc::clone(&job));
        let mut pass = Pass::default();
        let mut scratch = Scratch::new(events);
        let mut mine = 0;
        while let Some(clients) = job.claim() {
            mine += clients.len();
            job.offer(clients, &mut scratch, &mut pass);
        }
        helper.withdraw(&job);
        let mut state = job.state();
        while state.finished + mine < job.targets.len() {
            assert!(
                !state.helper_panicked,
                "the fan-out's helper panicked during a pass"
            );
            state.waiting = true;
            state = job
                .progress
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.finished > 0 {
            self.shared.helped_passes.fetch_add(1, Ordering::Relaxed);
        }
        pass.add(std::mem::take(&mut state.pass));
        pass
    }

    /// Clients subscribed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shared.slots().list.len()
    }
}

/// What a client's thread finds when it looks at its sink ([`Outlet::settle`]).
pub enum Settled {
    /// Nothing waits; the fan-out now writes to the socket (if the thread allowed it).
    Idle,
    /// Events to write, the thread's to send (it owns the socket).
    Backlog(Backlog),
    /// The client fell `capacity` events behind and was evicted; everything queued before that
    /// has been handed out. `handled` is the last event id it got.
    Evicted { handled: u64 },
}

/// Queued events, taken by the client's thread.
pub struct Backlog {
    pub events: Vec<SharedEvent>,
    /// Bytes of `events[0]` already on the wire: the thread must send the rest of it first,
    /// whatever else it would write.
    pub head_sent: usize,
    /// Every id up to this one was handled by the fan-out.
    pub handled: u64,
}

/// A client's thread's side of its subscription. Dropping it unsubscribes (after which the
/// fan-out never touches the socket again).
pub struct Outlet {
    id: u64,
    sink: Arc<Sink>,
    shared: Arc<Shared>,
}

impl Drop for Outlet {
    fn drop(&mut self) {
        // Also runs while a panicking connection thread unwinds: never panic here.
        let mut slots = self.shared.slots();
        slots.list.retain(|slot| slot.id != self.id);
        // The snapshot for split passes holds a handle on the socket: let it go now.
        slots.targets = None;
    }
}

impl Outlet {
    /// Takes up to `max` queued events for the thread to write. If none are queued and
    /// `attach` is true, hands the socket to the fan-out with `handled` (the thread's cursor)
    /// as the last id already handled: later events go straight out, earlier ones never.
    pub fn settle(&self, handled: u64, attach: bool, max: usize) -> Settled {
        let mut state = self.sink.lock();
        if !state.queue.is_empty() {
            state.direct = false;
            let take = state.queue.len().min(max.max(1));
            let events = state.queue.drain(..take).collect();
            let head_sent = std::mem::take(&mut state.head_sent);
            return Settled::Backlog(Backlog {
                events,
                head_sent,
                handled: state.handled,
            });
        }
        if state.evicted {
            return Settled::Evicted {
                handled: state.handled.max(handled),
            };
        }
        if attach && !state.direct {
            state.handled = state.handled.max(handled);
            state.direct = true;
        }
        Settled::Idle
    }

    /// Takes the socket back from the fan-out before the thread writes anything of its own:
    /// from now on events are queued for it. Returns the last id the fan-out handled. A send
    /// that filled the socket just before may have left part of an event on the wire with the
    /// rest queued: the thread must [`settle`](Self::settle) (without attaching) and write any
    /// backlog before its own bytes.
    pub fn detach(&self) -> u64 {
        let mut state = self.sink.lock();
        state.direct = false;
        state.handled
    }

    /// Sets which event types the fan-out sends this client (`None`: every type). Takes effect
    /// for events published from now on.
    pub fn set_interest(&self, interest: Option<Interest>) {
        self.sink.lock().interest = interest;
    }

    /// Events the fan-out sent to this client itself.
    pub fn sent(&self) -> u64 {
        self.sink.lock().sent
    }

    /// When the fan-out last sent this client something.
    pub fn last_send(&self) -> Option<Instant> {
        self.sink.lock().last_send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    #[test]
    fn passes_start_at_a_different_client_each_time_spread_over_the_list() {
        let mut phase = 0;
        assert_eq!(next_start(&mut phase, 0), 0, "an empty list");
        for len in 1..50 {
            for _ in 0..100 {
                assert!(next_start(&mut phase, len) < len);
            }
        }
        // A pass from any start reaches every client once, in list order after the start.
        for start in 0..7 {
            let order: Vec<usize> = (0..7).map(|place| index_at(start, place, 7)).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..7).collect::<Vec<_>>());
            assert_eq!(order[0], start);
        }
        // Every client of ten is first about as often as the others.
        let mut first = [0u32; 10];
        for _ in 0..1000 {
            first[next_start(&mut phase, 10)] += 1;
        }
        assert!(first.iter().all(|&n| (90..=110).contains(&n)), "{first:?}");
        // The benchmark's shape: 500 SSE clients, then 100 WebSockets, 200 events. Always
        // starting at the first client, the WebSockets' mean place in a pass would be 549.5;
        // taking turns, it is about the middle of the list, as for everyone else.
        let (clients, late) = (600usize, 500..600usize);
        let mut places = 0usize;
        for _ in 0..200 {
            let start = next_start(&mut phase, clients);
            places += late
                .clone()
                .map(|c| (c + clients - start) % clients)
                .sum::<usize>();
        }
        let mean = places / (200 * late.len());
        assert!((270..=330).contains(&mean), "mean place {mean}");
    }

    fn eventfd() -> Arc<WakeFd> {
        Arc::new(WakeFd::new().unwrap())
    }

    fn event(id: u64, event_type: &str, pad: usize) -> SharedEvent {
        let mut data = serde_json::Map::new();
        data.insert("pad".into(), "x".repeat(pad).into());
        Arc::new(PublishedEvent::new(Event {
            id,
            event_type: event_type.into(),
            timestamp: 1.0,
            source: "test".into(),
            data,
            has_snapshot: false,
            clip_file: None,
        }))
    }

    /// (server side, client side) of a loopback connection.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (server, client)
    }

    fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        client.read_exact(&mut got).unwrap();
        got
    }

    fn nothing_more(client: &mut TcpStream) {
        client
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut byte = [0u8];
        let read = client.read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{read:?}"
        );
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
    }

    #[test]
    fn queued_until_settled_then_sent_by_the_writer_without_a_wake_up() {
        let fanout = Fanout::new();
        let (server, mut client) = pair();
        let wake = eventfd();
        let outlet = fanout.subscribe(server, Wire::SseChunked, 8, None, Arc::clone(&wake));
        // Owned at first (the thread writes its handshake and replay): events are queued.
        let first = event(1, "doorbell_pressed", 0);
        assert_eq!(fanout.publish(std::slice::from_ref(&first)).sse_sent, 0);
        assert!(wake.clear());
        let Settled::Backlog(backlog) = outlet.settle(0, true, 64) else {
            panic!("the queued event");
        };
        assert_eq!(backlog.events.len(), 1);
        assert_eq!(backlog.head_sent, 0);
        // Nothing queued now: the writer takes the socket over.
        assert!(matches!(outlet.settle(1, true, 64), Settled::Idle));
        let second = event(2, "doorbell_pressed", 0);
        let published = fanout.publish(std::slice::from_ref(&second));
        assert_eq!(published.sse_sent, 1);
        assert!(!wake.clear(), "the thread was woken");
        assert_eq!(
            read_exactly(&mut client, second.sse_chunk().len()),
            second.sse_chunk()
        );
        assert_eq!(outlet.sent(), 1);
        assert!(outlet.last_send().is_some());
        // Taken back: queued again.
        assert_eq!(outlet.detach(), 2);
        let third = event(3, "doorbell_pressed", 0);
        assert_eq!(fanout.publish(std::slice::from_ref(&third)).sse_sent, 0);
        assert!(wake.clear());
        nothing_more(&mut client);
    }

    #[test]
    fn a_batch_goes_out_in_one_send_and_the_cursor_and_filter_apply() {
        let fanout = Fanout::new();
        let (server, mut client) = pair();
        let outlet = fanout.subscribe(server, Wire::WebSocket, 8, None, eventfd());
        outlet.set_interest(Some(Box::new(|t: &str| t != "motion_detected")));
        // The thread already handled id 2 (say, from a replay of the store).
        assert!(matches!(outlet.settle(2, true, 64), Settled::Idle));
        let batch = [
            event(2, "doorbell_pressed", 0),
            event(3, "motion_detected", 0),
            event(4, "doorbell_pressed", 0),
            event(5, "camera_offline", 0),
        ];
        let published = fanout.publish(&batch);
        assert_eq!(
            published,
            Published {
                ws_sent: 2,
                ..Published::default()
            }
        );
        let expected = [batch[2].ws_frame.clone(), batch[3].ws_frame.clone()].concat();
        assert_eq!(read_exactly(&mut client, expected.len()), expected);
        nothing_more(&mut client);
        // Every id up to the batch's last counts as handled (sent or not wanted).
        assert_eq!(outlet.detach(), 5);
    }

    #[test]
    fn a_full_socket_hands_the_rest_to_the_thread_which_finishes_the_event() {
        let fanout = Fanout::new();
        let (server, mut client) = pair();
        let outlet = fanout.subscribe(server, Wire::SseChunked, 1000, None, eventfd());
        assert!(matches!(outlet.settle(0, true, 64), Settled::Idle));
        // The client reads nothing: publish until the writer has to hand over.
        let mut published = Vec::new();
        let mut handed_off = false;
        for id in 1..=2000 {
            let next = event(id, "bulk", 16 * 1024);
            let outcome = fanout.publish(std::slice::from_ref(&next));
            published.push(next);
            if outcome.handed_off == 1 {
                handed_off = true;
                break;
            }
        }
        assert!(handed_off, "32 MB did not fill a loopback socket");
        // From here on everything is queued.
        let later = event(published.len() as u64 + 1, "bulk", 10);
        fanout.publish(std::slice::from_ref(&later));
        published.push(later);
        let Settled::Backlog(backlog) = outlet.settle(0, true, 64) else {
            panic!("a backlog");
        };
        assert_eq!(backlog.events.len(), 2);
        let handed = &backlog.events[0];
        assert_eq!(backlog.handled, handed.event.id - 1);
        assert!(backlog.head_sent < handed.sse_chunk().len());
        // What the writer sent plus what the thread sends is every byte once, in order.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            client.read_to_end(&mut all).unwrap();
            all
        });
        let mut socket = outlet.sink.socket.try_clone().unwrap();
        use std::io::Write;
        socket
            .write_all(&handed.sse_chunk()[backlog.head_sent..])
            .unwrap();
        socket.write_all(backlog.events[1].sse_chunk()).unwrap();
        drop(socket);
        drop(outlet);
        drop(fanout);
        let all = reader.join().unwrap();
        let expected: Vec<u8> = published
            .iter()
            .flat_map(|e| e.sse_chunk().to_vec())
            .collect();
        assert_eq!(all.len(), expected.len());
        assert!(all == expected);
    }

    /// What a thread that wants to write something of its own (a heartbeat, a close) relies
    /// on: taking the socket back does not lose the half-sent event's rest, which it must
    /// write first, and does not hand the socket back to the fan-out.
    #[test]
    fn detaching_after_a_hand_off_still_yields_the_half_sent_event_first() {
        let fanout = Fanout::new();
        let (server, _client) = pair();
        let outlet = fanout.subscribe(server, Wire::SseChunked, 1000, None, eventfd());
        assert!(matches!(outlet.settle(0, true, 64), Settled::Idle));
        let mut id = 0;
        loop {
            id += 1;
            assert!(id <= 2000, "32 MB did not fill a loopback socket");
            let outcome = fanout.publish(&[event(id, "bulk", 16 * 1024)]);
            if outcome.handed_off == 1 {
                break;
            }
        }
        assert_eq!(outlet.detach(), id - 1);
        let Settled::Backlog(backlog) = outlet.settle(id - 1, false, 64) else {
            panic!("the half-sent event");
        };
        assert_eq!(backlog.events[0].event.id, id);
        assert!(backlog.head_sent > 0);
        // Not attached: the next event is queued for the thread, not sent.
        assert!(matches!(outlet.settle(id, false, 64), Settled::Idle));
        fanout.publish(&[event(id + 1, "bulk", 10)]);
        let Settled::Backlog(next) = outlet.settle(id, false, 64) else {
            panic!("the next event, queued");
        };
        assert_eq!(next.events[0].event.id, id + 1);
        assert_eq!(next.head_sent, 0);
    }

    #[test]
    fn a_client_queued_past_its_capacity_is_evicted_once() {
        let fanout = Fanout::new();
        let (server, _client) = pair();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let wake = eventfd();
        let outlet = fanout.subscribe(
            server,
            Wire::SsePlain,
            2,
            Some(Box::new(move |socket: &TcpStream| {
                socket.shutdown(std::net::Shutdown::Both).ok();
                flag.store(true, Ordering::SeqCst);
            })),
            Arc::clone(&wake),
        );
        let (other, mut other_client) = pair();
        let keeps_up = fanout.subscribe(other, Wire::SsePlain, 2, None, eventfd());
        assert!(matches!(keeps_up.settle(0, true, 64), Settled::Idle));
        // The first is still owned by its thread (say, replaying): its queue fills up.
        let events: Vec<_> = (1..=3).map(|id| event(id, "x", 0)).collect();
        assert_eq!(fanout.publish(&events[..2]).evicted, 0);
        assert_eq!(fanout.publish(&events[2..]).evicted, 1);
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(fanout.len(), 1);
        // What was queued before the eviction is handed out, then the eviction is told.
        let Settled::Backlog(backlog) = outlet.settle(0, true, 64) else {
            panic!("the queued events");
        };
        assert_eq!(backlog.events.len(), 2);
        assert!(matches!(
            outlet.settle(0, true, 64),
            Settled::Evicted { .. }
        ));
        // Its thread was woken to find out.
        assert!(wake.clear());
        // The other client got all three, from the writer.
        let expected: Vec<u8> = events.iter().flat_map(|e| e.sse().to_vec()).collect();
        assert_eq!(read_exactly(&mut other_client, expected.len()), expected);
    }

    #[test]
    fn a_client_is_woken_through_its_eventfd_when_queued_and_when_evicted_never_else() {
        use crate::wake::is_readable;
        use std::os::fd::AsFd;
        let fanout = Fanout::new();
        let (server, mut client) = pair();
        let wake = eventfd();
        let outlet = fanout.subscribe(server, Wire::WebSocket, 2, None, Arc::clone(&wake));
        assert!(!is_readable(wake.as_fd()));
        // Owned (the session is busy): the event is queued and the eventfd made readable.
        let first = event(1, "doorbell_pressed", 0);
        fanout.publish(std::slice::from_ref(&first));
        assert!(is_readable(wake.as_fd()));
        assert!(wake.clear());
        let Settled::Backlog(backlog) = outlet.settle(0, true, 64) else {
            panic!("the queued event");
        };
        assert_eq!(backlog.events.len(), 1);
        // Direct: the writer sends, and nobody is woken.
        assert!(matches!(outlet.settle(1, true, 64), Settled::Idle));
        let second = event(2, "doorbell_pressed", 0);
        assert_eq!(fanout.publish(std::slice::from_ref(&second)).ws_sent, 1);
        assert!(
            !is_readable(wake.as_fd()),
            "woken for an event the writer sent"
        );
        assert_eq!(
            read_exactly(&mut client, second.ws_frame.len()),
            &second.ws_frame[..]
        );
        // Owned again and past its capacity: evicted, and woken to find out.
        outlet.detach();
        let events: Vec<_> = (3..=5).map(|id| event(id, "x", 0)).collect();
        assert_eq!(fanout.publish(&events[..2]).evicted, 0);
        assert!(wake.clear());
        assert_eq!(fanout.publish(&events[2..]).evicted, 1);
        assert!(is_readable(wake.as_fd()), "not woken at eviction");
        assert!(matches!(outlet.settle(2, true, 64), Settled::Backlog(_)));
        assert!(matches!(
            outlet.settle(2, true, 64),
            Settled::Evicted { .. }
        ));
        drop(outlet);
        assert_eq!(
            Arc::strong_count(&wake),
            1,
            "the fan-out let go of the eventfd"
        );
    }

    /// A fan-out that shares every pass over two or more clients with its helper, one client
    /// at a time, as if on `cpus` CPUs.
    fn splitting(cpus: fn() -> usize, helper_stack: usize) -> Fanout {
        Fanout::with_split(Split {
            min_clients: 2,
            chunk: 1,
            cpus,
            recheck: Duration::from_secs(3600),
            helper_stack,
        })
    }

    fn two_cpus() -> usize {
        2
    }

    fn one_cpu() -> usize {
        1
    }

    /// The stack no thread can be given (more than the address space): spawning fails.
    const NO_STACK: usize = 1 << 50;

    fn helped_passes(fanout: &Fanout) -> u64 {
        fanout.shared.helped_passes.load(Ordering::Relaxed)
    }

    fn has_helper(fanout: &Fanout) -> bool {
        fanout.shared.split_state.lock().unwrap().helper.is_some()
    }

    /// `count` clients, settled (direct), alternately SSE and WebSocket, with their reading ends.
    fn direct_clients(fanout: &Fanout, count: usize) -> Vec<(Outlet, TcpStream, Wire)> {
        (0..count)
            .map(|i| {
                let (server, client) = pair();
                let wire = if i % 2 == 0 {
                    Wire::SseChunked
                } else {
                    Wire::WebSocket
                };
                let outlet = fanout.subscribe(server, wire, 8, None, eventfd());
                assert!(matches!(outlet.settle(0, true, 64), Settled::Idle));
                (outlet, client, wire)
            })
            .collect()
    }

    /// Publishes ids 1..=9 in batches of 1, 3 and 5; every client must read all nine, in order,
    /// once. Returns what `publish` said in total.
    fn every_client_gets_every_event_in_order(
        fanout: &Fanout,
        clients: &mut [(Outlet, TcpStream, Wire)],
    ) -> Published {
        let events: Vec<_> = (1..=9).map(|id| event(id, "doorbell_pressed", 0)).collect();
        let mut total = Published::default();
        for batch in [&events[..1], &events[1..4], &events[4..]] {
            let published = fanout.publish(batch);
            total.sse_sent += published.sse_sent;
            total.ws_sent += published.ws_sent;
            total.handed_off += published.handed_off;
            total.evicted += published.evicted;
        }
        for (outlet, client, wire) in clients.iter_mut() {
            let expected: Vec<u8> = events.iter().flat_map(|e| wire.bytes(e).to_vec()).collect();
            assert_eq!(read_exactly(client, expected.len()), expected);
            nothing_more(client);
            assert_eq!(outlet.sent(), 9);
        }
        total
    }

    #[test]
    fn a_shared_pass_gives_every_client_every_event_in_order() {
        let fanout = splitting(two_cpus, Split::default().helper_stack);
        let mut clients = direct_clients(&fanout, 7);
        let published = every_client_gets_every_event_in_order(&fanout, &mut clients);
        // 4 SSE and 3 WebSocket clients, 9 events each.
        assert_eq!(
            published,
            Published {
                sse_sent: 36,
                ws_sent: 27,
                ..Published::default()
            }
        );
        assert!(has_helper(&fanout));
    }

    /// The writer is held up on the first client (its lock is taken here): the helper writes
    /// to the others, evicts the one that fell behind, and the pass ends only once the writer's
    /// client has the event too; the eviction's hook runs after the slots' lock is released.
    #[test]
    fn the_helper_writes_and_evicts_while_the_writer_is_held_up() {
        let fanout = splitting(two_cpus, Split::default().helper_stack);
        let mut clients = direct_clients(&fanout, 2);
        let (server, _owned_client) = pair();
        let fired = Arc::new(AtomicU64::new(0));
        let hook: StreamEvictHook = {
            let fired = Arc::clone(&fired);
            let shared = Arc::downgrade(&fanout.shared);
            Box::new(move |_: &TcpStream| {
                let shared = shared.upgrade().expect("the fan-out is alive");
                assert!(
                    shared.slots.try_lock().is_ok(),
                    "hook run under the slots' lock"
                );
                fired.fetch_add(1, Ordering::SeqCst);
            })
        };
        // Owned by its thread (say, replaying), with room for one event.
        let owned = fanout.subscribe(server, Wire::SsePlain, 1, Some(hook), eventfd());
        clients.extend(direct_clients(&fanout, 1));
        let first = event(1, "x", 0);
        assert_eq!(fanout.publish(std::slice::from_ref(&first)).evicted, 0);
        let second = event(2, "x", 0);
        let first_sink = Arc::clone(&clients[0].0.sink);
        let held = first_sink.lock();
        let publisher = {
            let fanout = fanout.clone();
            let second = Arc::clone(&second);
            std::thread::spawn(move || fanout.publish(std::slice::from_ref(&second)))
        };
        // Clients 1 and 3 get both events while the writer waits for client 0's lock.
        for (_, client, wire) in &mut clients[1..] {
            let expected = [wire.bytes(&first), wire.bytes(&second)].concat();
            assert_eq!(read_exactly(client, expected.len()), expected);
        }
        assert!(!publisher.is_finished(), "the pass ended without client 0");
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        drop(held);
        let published = publisher.join().unwrap();
        assert_eq!(published.evicted, 1);
        assert_eq!(published.sse_sent + published.ws_sent, 3);
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        assert_eq!(fanout.len(), 3);
        assert!(helped_passes(&fanout) >= 1);
        let (_, client, wire) = &mut clients[0];
        let expected = [wire.bytes(&first), wire.bytes(&second)].concat();
        assert_eq!(read_exactly(client, expected.len()), expected);
        assert!(matches!(owned.settle(0, true, 64), Settled::Backlog(_)));
        assert!(matches!(owned.settle(0, true, 64), Settled::Evicted { .. }));
    }

    #[test]
    fn one_cpu_few_clients_or_no_helper_thread_keep_passes_serial_and_complete() {
        for (what, fanout) in [
            ("one CPU", splitting(one_cpu, 64 * 1024)),
            ("no thread to be had", splitting(two_cpus, NO_STACK)),
            ("under the threshold", Fanout::new()),
        ] {
            let mut clients = direct_clients(&fanout, 7);
            let published = every_client_gets_every_event_in_order(&fanout, &mut clients);
            assert_eq!((published.sse_sent, published.ws_sent), (36, 27), "{what}");
            assert!(!has_helper(&fanout), "{what}");
            assert_eq!(helped_passes(&fanout), 0, "{what}");
        }
        // A refused thread is tried again only after the next check of the CPUs.
        let fanout = splitting(two_cpus, NO_STACK);
        let _clients = direct_clients(&fanout, 2);
        fanout.publish(&[event(1, "x", 0)]);
        assert!(fanout.shared.split_state.lock().unwrap().refused);
    }

    #[test]
    fn a_shared_pass_evicts_anywhere_and_runs_the_hooks_after_the_lock() {
        let fanout = splitting(two_cpus, Split::default().helper_stack);
        let fired = Arc::new(AtomicU64::new(0));
        // Clients 0 and 3 stay owned by their threads with room for one event; 1 and 2 are
        // direct.
        let mut owned = Vec::new();
        let mut direct = Vec::new();
        for i in 0..4 {
            let (server, client) = pair();
            let fired = Arc::clone(&fired);
            let shared = Arc::downgrade(&fanout.shared);
            let hook: StreamEvictHook = Box::new(move |socket: &TcpStream| {
                let shared = shared.upgrade().expect("the fan-out is alive");
                assert!(
                    shared.slots.try_lock().is_ok(),
                    "hook run under the slots' lock"
                );
                socket.shutdown(std::net::Shutdown::Both).ok();
                fired.fetch_add(1, Ordering::SeqCst);
            });
            let wake = eventfd();
            let outlet = fanout.subscribe(server, Wire::SsePlain, 1, Some(hook), Arc::clone(&wake));
            if i == 0 || i == 3 {
                owned.push((outlet, wake));
            } else {
                assert!(matches!(outlet.settle(0, true, 64), Settled::Idle));
                direct.push((outlet, client));
            }
        }
        let events: Vec<_> = (1..=2).map(|id| event(id, "x", 0)).collect();
        assert_eq!(fanout.publish(&events[..1]).evicted, 0);
        let published = fanout.publish(&events[1..]);
        assert_eq!(published.evicted, 2);
        assert_eq!(published.sse_sent, 2);
        assert_eq!(fired.load(Ordering::SeqCst), 2);
        assert_eq!(fanout.len(), 2);
        for (outlet, wake) in &owned {
            assert!(wake.clear(), "woken");
            let Settled::Backlog(backlog) = outlet.settle(0, true, 64) else {
                panic!("the event queued before the eviction");
            };
            assert_eq!(backlog.events.len(), 1);
            assert!(matches!(
                outlet.settle(0, true, 64),
                Settled::Evicted { .. }
            ));
        }
        // The clients that kept up got both events, and are still served.
        let third = event(3, "x", 0);
        assert_eq!(fanout.publish(std::slice::from_ref(&third)).sse_sent, 2);
        for (_, client) in &mut direct {
            let expected: Vec<u8> = [&events[0], &events[1], &third]
                .iter()
                .flat_map(|e| e.sse().to_vec())
                .collect();
            assert_eq!(read_exactly(client, expected.len()), expected);
        }
    }

    #[test]
    fn dropping_the_outlet_unsubscribes() {
        let fanout = Fanout::new();
        let (server, _client) = pair();
        let outlet = fanout.subscribe(server, Wire::SseChunked, 2, None, eventfd());
        assert_eq!(fanout.len(), 1);
        drop(outlet);
        assert_eq!(fanout.len(), 0);
    }
}
