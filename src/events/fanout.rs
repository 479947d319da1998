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
//! something of its own ([`Feed::detach`]). It goes back to direct only when its thread says so
//! with nothing queued ([`Feed::settle`]). Every mode change happens under the sink's lock,
//! and the fan-out writes only while holding it in direct mode, so exactly one side writes to
//! a socket at any time, and only between whole events.
//!
//! Exactly once, in order: the sink keeps the id of the last event handled (sent, or skipped by
//! its filter) while direct, and the thread's [`Cursor`](super::Cursor) hands its own over on
//! attaching, so an event that a replay already read from the store is never sent again live.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::event::{PublishedEvent, SharedEvent};

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
pub type EvictHook = Box<dyn FnOnce(&TcpStream) + Send>;

/// Sends `parts` without blocking; `Ok(n)` is how many bytes the socket took (0 when it is
/// full). Never raises SIGPIPE.
fn send_now(socket: &TcpStream, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data); IoSlice is guaranteed to be
    // ABI-compatible with iovec on Unix, and `parts` outlives the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = parts.as_ptr() as *mut libc::iovec;
    message.msg_iovlen = parts.len() as _;
    loop {
        // SAFETY: sendmsg reads the iovecs described by `message`, all valid for the call.
        let sent = unsafe {
            libc::sendmsg(
                socket.as_raw_fd(),
                &message,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
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
    fn offer<'e>(&self, events: &'e [SharedEvent], now: Instant, scratch: &mut Scratch<'e>) -> Offer {
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
    wake: Sender<()>,
    on_evict: Option<EvictHook>,
}

struct Shared {
    slots: Mutex<Vec<Slot>>,
    next_id: AtomicU64,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
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
        Fanout {
            shared: Arc::new(Shared {
                slots: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Adds a client whose stream is `socket` framed as `wire`. It starts *owned*: nothing is
    /// sent to it until its thread [`Feed::settle`]s (after its handshake and replay); events
    /// published meanwhile are queued, at most `capacity` of them.
    pub fn subscribe(
        &self,
        socket: TcpStream,
        wire: Wire,
        capacity: usize,
        on_evict: Option<EvictHook>,
    ) -> Feed {
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
        // One pending wake-up is all a thread needs: it then takes whatever is queued.
        let (wake, woken) = crossbeam_channel::bounded(1);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.slots().push(Slot {
            id,
            sink: Arc::clone(&sink),
            wake,
            on_evict,
        });
        Feed {
            id,
            sink,
            woken,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Offers `events` (one committed batch, in id order) to every client: one send per
    /// direct client, a queue entry and a wake-up per owned one. Never blocks on a client.
    pub fn publish(&self, events: &[SharedEvent]) -> Published {
        let mut published = Published::default();
        if events.is_empty() {
            return published;
        }
        let now = Instant::now();
        let mut evicted = Vec::new();
        {
            let mut scratch = Scratch {
                parts: Vec::with_capacity(events.len()),
                wanted: Vec::with_capacity(events.len()),
            };
            let mut slots = self.shared.slots();
            slots.retain_mut(|slot| {
                let offer = slot.sink.offer(events, now, &mut scratch);
                if offer.evict {
                    evicted.push((Arc::clone(&slot.sink), slot.on_evict.take()));
                    // Dropping the slot drops its `wake` sender: the thread sees the
                    // disconnection once it has taken what was queued.
                    return false;
                }
                match slot.sink.wire {
                    Wire::WebSocket => published.ws_sent += offer.sent as u64,
                    Wire::SseChunked | Wire::SsePlain => published.sse_sent += offer.sent as u64,
                }
                if offer.handed_off {
                    published.handed_off += 1;
                }
                if offer.queued {
                    // Full means a wake-up is already pending: nothing is lost.
                    slot.wake.try_send(()).ok();
                }
                true
            });
        }
        // Hooks run outside the lock: they do I/O (shutting a socket down).
        published.evicted = evicted.len() as u64;
        for (sink, hook) in evicted {
            if let Some(hook) = hook {
                hook(&sink.socket);
            }
        }
        published
    }

    /// Clients subscribed.
    pub fn len(&self) -> usize {
        self.shared.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a client's thread finds when it looks at its sink ([`Feed::settle`]).
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
pub struct Feed {
    id: u64,
    sink: Arc<Sink>,
    woken: Receiver<()>,
    shared: Arc<Shared>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        // Also runs while a panicking connection thread unwinds: never panic here.
        self.shared.slots().retain(|slot| slot.id != self.id);
    }
}

impl Feed {
    /// Ready when the fan-out queued something (or evicted the client): wait on it with
    /// `select!`, then [`Feed::settle`].
    pub fn woken(&self) -> &Receiver<()> {
        &self.woken
    }

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
    /// from now on events are queued for it. Returns the last id the fan-out handled.
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
