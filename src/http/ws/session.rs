//! One WebSocket session, on its connection thread and no other: waits in one `poll(2)` on the
//! client's socket, its fan-out wake-up, shutdown and its ping deadline (see `transport.rs`),
//! answers each client message, pushes each subscribed event, and ends with a close frame that
//! says why.
//!
//! While it waits, live events are written by the event writer itself (`events::fanout`): the
//! session hands its socket over before it sleeps ([`Outlet::settle`]) and takes it back
//! ([`Outlet::detach`]) before it writes anything of its own, so only one side writes at a time
//! and frames never interleave.

use std::io::{ErrorKind, Write};
use std::net::{Shutdown as SocketShutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role as WsRole, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use super::commands::{self, Outcome};
use super::protocol::{self, ClientMessage, CommandName, ErrorCode, Refusal};
use super::subscriptions::Subscriptions;
use super::transport::{self, Transport};
use crate::auth::Role;
use crate::ctx::Ctx;
use crate::events::event::live_event_frame;
use crate::events::fanout::StreamEvictHook;
use crate::events::fanout::{Backlog, Outlet, Settled};
use crate::events::{Cursor, ReplayError, Replayed};
use crate::http::chunked::write_all_vectored;
use crate::wake::WakeFd;

/// Largest message a client may send (the contract's 64 KiB); larger closes with 1009.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Our own messages are small; tungstenite may hold at most this much unsent.
const MAX_WRITE_BUFFER_BYTES: usize = 256 * 1024;
/// Events written between two checks of the other inputs when a burst is queued.
const MAX_BATCH: usize = 64;
/// Client messages answered between two checks of the other inputs (events queued for us,
/// shutdown) when a client sends many at once.
const MAX_MESSAGES_PER_TURN: usize = 16;
/// How long a closing connection may take to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The write timeout while closing: a client that reads nothing must not hold shutdown up.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Payload of our keep-alive pings.
const PING_PAYLOAD: &[u8] = b"porchlight";

/// How tungstenite is set up: the contract's message limit (checked on each frame header, so a
/// client announcing a huge frame is refused before it is buffered), and every message written
/// out at once (nothing waits in a buffer; raw `live_event` frames may follow directly).
pub fn config() -> WebSocketConfig {
    WebSocketConfig {
        max_message_size: Some(MAX_MESSAGE_BYTES),
        max_frame_size: Some(MAX_MESSAGE_BYTES),
        write_buffer_size: 0,
        max_write_buffer_size: MAX_WRITE_BUFFER_BYTES,
        ..WebSocketConfig::default()
    }
}

/// Lets the event hub evict this session the right way. The hub evicts from its own thread
/// when the session's queue is full. If the session is waiting in `poll`, its wake-up fires
/// and it sends a close frame (1013) itself; if it is busy — possibly blocked
/// writing to a client that reads nothing — the socket is shut down so the write fails at once
/// instead of after `write_timeout_s`.
pub struct EvictionLatch {
    evicted: AtomicBool,
    busy: AtomicBool,
}

impl EvictionLatch {
    pub fn new() -> Arc<EvictionLatch> {
        Arc::new(EvictionLatch {
            evicted: AtomicBool::new(false),
            busy: AtomicBool::new(false),
        })
    }

    pub fn hook(self: &Arc<Self>) -> StreamEvictHook {
        let latch = Arc::clone(self);
        Box::new(move |socket: &TcpStream| {
            // SeqCst on both sides: either the hook sees `busy`, or the session sees `evicted`.
            latch.evicted.store(true, Ordering::SeqCst);
            if latch.busy.load(Ordering::SeqCst) {
                socket.shutdown(SocketShutdown::Both).ok();
            }
        })
    }

    fn was_evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Marks the session busy (or idle) and says whether it has been evicted.
    fn set_busy(&self, busy: bool) -> bool {
        self.busy.store(busy, Ordering::SeqCst);
        self.evicted.load(Ordering::SeqCst)
    }
}

/// What the session learned from the handshake.
pub struct Opened {
    pub client_id: String,
    pub role: Role,
    /// `?last_event_id=N`: replay stored events after N when the client first subscribes.
    pub last_event_id: Option<u64>,
}

/// What happens after a close frame has been sent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Closing {
    /// Wait (briefly) for the client's close frame, then close TCP: the clean handshake.
    AwaitReply,
    /// The stream can no longer be parsed (an oversized or malformed frame): half-close so the
    /// client sees the close frame and then EOF, discard what it still sends, then close.
    Drain,
    /// Close TCP at once (the client does not answer, or the server is stopping).
    Cut,
}

/// Why a session ends.
enum End {
    /// The client closed, or the connection broke: nothing more to send.
    Gone(String),
    /// Send a close frame with `code` and `reason`; `log` says why in the server log.
    Close {
        code: CloseCode,
        reason: String,
        log: String,
        then: Closing,
    },
}

impl End {
    fn close(code: CloseCode, reason: &str, log: String, then: Closing) -> End {
        End::Close {
            code,
            reason: reason.to_string(),
            log,
            then,
        }
    }

    /// The hub cut the socket while we were writing to a client that had stopped reading.
    fn evicted_while_writing() -> End {
        End::Gone("fell behind (queue full) while not reading; it will replay on reconnect".into())
    }

    fn write_failed(err: &WsError, latch: &EvictionLatch) -> End {
        if latch.was_evicted() {
            return End::evicted_while_writing();
        }
        match err {
            WsError::Io(e) if e.kind() == ErrorKind::TimedOut => {
                End::Gone("stopped reading (no bytes accepted within write_timeout_s)".into())
            }
            _ => End::Gone(format!("went away ({err})")),
        }
    }
}

pub struct Session<'a> {
    /// The client's bytes and our writes.
    transport: Transport<'a>,
    /// tungstenite's protocol state, with its read buffer (4 KiB + what it holds) and write
    /// buffer. `None` while *parked*: between messages (nothing of the client's held, nothing
    /// of ours pending) the session drops it before it waits, and a fresh one — identical, as
    /// a server's state between messages is only "open" — is made when the client next sends
    /// something or the session writes a frame of its own.
    ws: Option<WebSocketContext>,
    socket: &'a TcpStream,
    ctx: &'a Ctx,
    opened: Opened,
    subscriptions: Subscriptions,
    cursor: Cursor,
    pending_replay: Option<u64>,
    latch: Arc<EvictionLatch>,
    heartbeat: Duration,
    heard_at: Instant,
    ping_sent_at: Option<Instant>,
    events_sent: u64,
    /// The session's place in the fan-out, from `run` until the session closes.
    outlet: Option<Outlet>,
    /// Made readable by the fan-out when it queued events for us or evicted us.
    wake: Arc<WakeFd>,
    /// Readable once the server is shutting down.
    stop: BorrowedFd<'a>,
}

impl<'a> Session<'a> {
    /// `transport`: over the client's socket, with the bytes it sent behind its handshake;
    /// `outlet`: its place in the fan-out, subscribed with `wake`, its eventfd; `stop`: the
    /// server's shutdown descriptor.
    pub fn new(
        transport: Transport<'a>,
        ctx: &'a Ctx,
        opened: Opened,
        latch: Arc<EvictionLatch>,
        outlet: Outlet,
        wake: Arc<WakeFd>,
        stop: BorrowedFd<'a>,
    ) -> Session<'a> {
        Session {
            socket: transport.socket(),
            transport,
            ws: None,
            ctx,
            pending_replay: opened.last_event_id,
            opened,
            subscriptions: Subscriptions::default(),
            cursor: Cursor::new(),
            latch,
            heartbeat: ctx.http.heartbeat,
            heard_at: Instant::now(),
            ping_sent_at: None,
            events_sent: 0,
            outlet: Some(outlet),
            wake,
            stop,
        }
    }

    /// Runs the session to its end. Returns why it ended and how many events it pushed. The
    /// caller shuts the socket down afterwards.
    pub fn run(&mut self) -> (String, u64) {
        // Nothing is sent live before the client subscribes.
        self.update_interest();
        let end = self.serve();
        if matches!(end, End::Close { .. }) {
            // A close frame must not land inside an event's frame the fan-out left half-sent:
            // finish what it queued first (a failure here shows again when closing).
            self.begin_work().ok();
            self.drain_queued().ok();
        }
        // Leave the hub before closing: a closing session reads no more events, and the
        // fan-out never writes to the socket again.
        let sent_by_fanout = self.outlet.take().map_or(0, |outlet| outlet.sent());
        let reason = match end {
            End::Gone(reason) => reason,
            End::Close {
                code,
                reason,
                log,
                then,
            } => {
                self.close(code, &reason, then);
                log
            }
        };
        (reason, self.events_sent + sent_by_fanout)
    }

    /// The loop. What it calls for its work is never inlined into it: the session waits for
    /// hours in this frame, and every stack page down to it stays resident (`crate::stack`).
    fn serve(&mut self) -> End {
        if self.outlet.is_none() {
            return End::Gone("not subscribed to events".into());
        }
        self.latch.set_busy(true);
        if let Err(end) = self.send(protocol::connected(&self.opened.client_id)) {
            return end;
        }
        // Whether this thread just did deep work (the handshake, a message, a backlog): the
        // stack pages it touched go back before the wait.
        let mut deep = true;
        // Whether client bytes may wait where `poll` cannot see them: read before the session
        // (behind the handshake), or in tungstenite's buffer after a turn cut short.
        let mut unread = self.transport.has_early_bytes();
        loop {
            if let Err(end) = self.settle() {
                return end;
            }
            if !unread {
                self.park();
            }
            if std::mem::take(&mut deep) {
                crate::stack::release_unused();
            }
            self.latch.set_busy(false);
            let wait = if unread {
                Duration::ZERO
            } else {
                self.next_deadline()
                    .saturating_duration_since(Instant::now())
            };
            let ready = transport::wait(
                self.socket,
                Some(self.wake.as_fd()),
                Some(self.stop),
                Some(wait),
            );
            if ready.stop {
                return End::close(
                    CloseCode::Away,
                    "server shutting down",
                    "server shutting down".into(),
                    Closing::Cut,
                );
            }
            if ready.woken {
                // Events were queued for us (the socket was full, or we held it), or we were
                // evicted: the `settle` at the top of the loop sees which. Cleared before it,
                // so a wake-up given after it is kept for the next wait.
                self.wake.clear();
                deep = true;
            }
            let step = if ready.client || unread {
                deep = true;
                self.received().map(|more| unread = more)
            } else if ready.woken {
                Ok(())
            } else if Instant::now() >= self.next_deadline() {
                self.keep_alive()
            } else {
                // Interrupted by a signal, or woken a moment early: wait again.
                Ok(())
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Writes whatever the fan-out queued for this session; with nothing queued, hands the
    /// socket to the fan-out for the wait (unless a replay is still to come at the first
    /// subscribe: until then live events are only drained).
    #[inline(never)]
    fn settle(&mut self) -> Result<(), End> {
        loop {
            let attach = self.pending_replay.is_none();
            let Some(outlet) = &self.outlet else {
                return Ok(());
            };
            match outlet.settle(self.cursor.last_handled(), attach, MAX_BATCH) {
                Settled::Idle => return Ok(()),
                Settled::Backlog(backlog) => self.push(&backlog)?,
                Settled::Evicted { handled } => {
                    self.cursor.skip_to(handled);
                    return Err(self.fell_behind());
                }
            }
        }
    }

    /// Writes what the fan-out queued, without handing the socket back to it: a send that
    /// filled the socket just before [`begin_work`](Self::begin_work) may have left part of a
    /// frame on the wire with the rest queued, and no frame of ours may land inside it.
    fn drain_queued(&mut self) -> Result<(), End> {
        loop {
            let Some(outlet) = &self.outlet else {
                return Ok(());
            };
            match outlet.settle(self.cursor.last_handled(), false, MAX_BATCH) {
                Settled::Idle => return Ok(()),
                Settled::Backlog(backlog) => self.push(&backlog)?,
                Settled::Evicted { handled } => {
                    self.cursor.skip_to(handled);
                    return Err(self.fell_behind());
                }
            }
        }
    }

    /// Tells the fan-out which event types this client wants (after each (un)subscribe).
    fn update_interest(&self) {
        if let Some(outlet) = &self.outlet {
            let subscriptions = self.subscriptions.clone();
            outlet.set_interest(Some(Box::new(move |event_type: &str| {
                subscriptions.wants(event_type)
            })));
        }
    }

    fn fell_behind(&self) -> End {
        let last = self.cursor.last_handled();
        End::close(
            CloseCode::Again,
            &format!("fell behind; reconnect with last_event_id={last}"),
            "fell behind (queue full); it will replay on reconnect".into(),
            Closing::AwaitReply,
        )
    }

    /// Takes the socket back from the fan-out and marks the session busy; an eviction that
    /// already happened ends it. Before writing a frame of its own, a caller must also
    /// [`drain_queued`](Self::drain_queued).
    fn begin_work(&mut self) -> Result<(), End> {
        if let Some(outlet) = &self.outlet {
            let handled = outlet.detach();
            self.cursor.skip_to(handled);
        }
        if self.latch.set_busy(true) {
            Err(self.fell_behind())
        } else {
            Ok(())
        }
    }

    fn next_deadline(&self) -> Instant {
        self.ping_sent_at.unwrap_or(self.heard_at) + self.heartbeat
    }

    /// Pings a client silent for `heartbeat_s`; drops one that then stays silent as long.
    #[inline(never)]
    fn keep_alive(&mut self) -> Result<(), End> {
        self.begin_work()?;
        self.drain_queued()?;
        let now = Instant::now();
        match self.ping_sent_at {
            Some(sent) if now >= sent + self.heartbeat => Err(End::close(
                CloseCode::Error,
                "keepalive ping timeout",
                format!(
                    "unresponsive (no answer to a ping within {:.1} s)",
                    self.heartbeat.as_secs_f64()
                ),
                Closing::Cut,
            )),
            None if now >= self.heard_at + self.heartbeat => {
                self.send_message(Message::Ping(PING_PAYLOAD.to_vec()))?;
                self.ping_sent_at = Some(now);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The client sent something (or closed): let tungstenite read it and act on every
    /// complete message. Returns true when it stopped after `MAX_MESSAGES_PER_TURN` messages
    /// with more perhaps already read (the caller comes back at once, after its other inputs).
    #[inline(never)]
    fn received(&mut self) -> Result<bool, End> {
        // Tests make this panic, deep in a running session (debug builds only).
        crate::http::panics::injected("session", "/ws");
        self.begin_work()?;
        self.drain_queued()?;
        // Any frame, pong or not, shows the client is alive.
        self.heard_at = Instant::now();
        self.ping_sent_at = None;
        let mut handled = 0;
        loop {
            if handled == MAX_MESSAGES_PER_TURN {
                return Ok(true);
            }
            handled += 1;
            let (ws, transport) = self.protocol();
            match ws.read(transport) {
                Ok(Message::Text(text)) => self.handle_text(&text)?,
                Ok(Message::Binary(_)) => {
                    return Err(End::close(
                        CloseCode::Unsupported,
                        "binary messages are not accepted; send JSON text",
                        "sent a binary message".into(),
                        Closing::AwaitReply,
                    ));
                }
                // Pings are answered by tungstenite (queued, sent by the next read or write),
                // and a close frame's reply likewise; the next read then says ConnectionClosed.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_)) => {
                }
                Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Err(End::Gone("closed the WebSocket".into()));
                }
                // The client's side ended without a close frame (it closed the connection, or
                // the connection broke), seen by our read rather than our write.
                Err(_) if self.transport.ended() => {
                    return Err(End::Gone("closed the connection".into()));
                }
                Err(WsError::Capacity(e)) => {
                    return Err(End::close(
                        CloseCode::Size,
                        "messages are limited to 64 KiB",
                        format!("sent too big a message ({e})"),
                        Closing::Drain,
                    ));
                }
                Err(WsError::Utf8) => {
                    return Err(End::close(
                        CloseCode::Invalid,
                        "text messages must be UTF-8",
                        "sent a text message that is not UTF-8".into(),
                        Closing::AwaitReply,
                    ));
                }
                Err(WsError::Protocol(e)) => {
                    return Err(End::close(
                        CloseCode::Protocol,
                        "protocol error",
                        format!("broke the WebSocket protocol ({e})"),
                        Closing::Drain,
                    ));
                }
                Err(e) => return Err(End::write_failed(&e, &self.latch)),
            }
        }
    }

    fn send(&mut self, text: String) -> Result<(), End> {
        self.send_message(Message::Text(text))
    }

    fn send_message(&mut self, message: Message) -> Result<(), End> {
        let (ws, transport) = self.protocol();
        send_on(ws, transport, message).map_err(|e| End::write_failed(&e, &self.latch))
    }

    /// tungstenite's state (made afresh if parked) and the transport it reads and writes.
    fn protocol(&mut self) -> (&mut WebSocketContext, &mut Transport<'a>) {
        let ws = self
            .ws
            .get_or_insert_with(|| WebSocketContext::new(WsRole::Server, Some(config())));
        (ws, &mut self.transport)
    }

    /// Drops tungstenite's state before a wait if it holds nothing that matters: the client is
    /// between messages — every byte it sent is in frames tungstenite has read whole (it said
    /// `WouldBlock`, so none is left unparsed; the caller knows no turn was cut short) and no
    /// fragmented message is open — and the connection is open with nothing of ours pending
    /// (every write is flushed at once; a pong is flushed by the read that said `WouldBlock`).
    #[inline(never)]
    fn park(&mut self) {
        let idle = self.ws.as_ref().is_some_and(WebSocketContext::can_write)
            && self.transport.between_messages();
        if idle {
            self.ws = None;
        }
    }

    fn refuse(&mut self, refusal: &Refusal) -> Result<(), End> {
        log::debug!(
            "WebSocket client {}: {} ({})",
            self.opened.client_id,
            refusal.code.as_str(),
            refusal.message
        );
        self.send(protocol::error(refusal))
    }

    fn handle_text(&mut self, text: &str) -> Result<(), End> {
        let (message, request_id) = match protocol::parse_with_request_id(text) {
            Ok(parsed) => parsed,
            Err(refusal) => return self.refuse(&refusal),
        };
        let request_id = request_id.as_ref();
        match message {
            ClientMessage::Subscribe(types) => {
                if let Err(message) = self.subscriptions.subscribe(&types) {
                    return self.refuse(&bad_params(message, request_id));
                }
                self.update_interest();
                self.send(protocol::subscription_changed(
                    "subscribed",
                    &types,
                    request_id,
                ))?;
                if let Some(after) = self.pending_replay.take() {
                    self.replay(after)?;
                }
                Ok(())
            }
            ClientMessage::Unsubscribe(types) => {
                if let Err(message) = self.subscriptions.unsubscribe(&types) {
                    return self.refuse(&bad_params(message, request_id));
                }
                self.update_interest();
                self.send(protocol::subscription_changed(
                    "unsubscribed",
                    &types,
                    request_id,
                ))
            }
            ClientMessage::SystemCommand {
                command,
                params,
                request_id,
            } => self.run_command(command, &params, request_id),
            ClientMessage::RequestVideoStream { quality } => {
                let quality = quality.unwrap_or_else(|| self.ctx.control.default_quality());
                let ready =
                    protocol::video_stream_ready(&self.opened.client_id, quality, request_id);
                self.send(ready)
            }
            ClientMessage::Ping => {
                let now = crate::clock::round_ms(crate::clock::unix_now());
                self.send(protocol::pong(now, request_id))
            }
        }
    }

    fn run_command(
        &mut self,
        command: CommandName,
        params: &serde_json::Value,
        request_id: protocol::RequestId,
    ) -> Result<(), End> {
        let outcome = commands::run(command, params, self.opened.role, self.ctx);
        let answer = match outcome {
            Outcome::Done(result) => Ok(result),
            Outcome::Failed(error) => {
                log::warn!(
                    "WebSocket client {}: {} failed: {error}",
                    self.opened.client_id,
                    command.name()
                );
                Err(error)
            }
            Outcome::Refused(code, message) => {
                return self.refuse(&Refusal {
                    code,
                    message,
                    request_id: Some(request_id),
                });
            }
        };
        self.send(protocol::command_result(command, &request_id, answer))
    }

    /// Sends every stored event after `after` that the client subscribes to, before any live
    /// one; live events already sent this way are skipped by the cursor.
    fn replay(&mut self, after: u64) -> Result<(), End> {
        self.protocol();
        let Session {
            ws: Some(ws),
            transport,
            ctx,
            cursor,
            subscriptions,
            events_sent,
            latch,
            ..
        } = self
        else {
            unreachable!("made by `protocol` just above");
        };
        cursor
            .replay(ctx.events.reader(), after, |item| match item {
                Replayed::Gap { from, to } => {
                    send_on(ws, transport, Message::Text(protocol::gap(from, to)))
                }
                Replayed::Reset {
                    last_event_id,
                    newest_id,
                } => send_on(
                    ws,
                    transport,
                    Message::Text(protocol::reset(last_event_id, newest_id)),
                ),
                Replayed::Event(event) if subscriptions.wants(&event.event_type) => {
                    let frame = live_event_frame(&crate::json::text(&event.to_json()));
                    transport
                        .write_all(&frame)
                        .map_err(|e| Box::new(WsError::Io(e)))?;
                    *events_sent += 1;
                    ctx.metrics.ws_events_sent.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Replayed::Event(_) | Replayed::PageEnd => Ok(()),
            })
            .map_err(|err| match err {
                // The client's connection failed (or the hub cut it): like any other write.
                ReplayError::Deliver(err) => End::write_failed(&err, latch),
                ReplayError::Store(_) | ReplayError::Stuck { .. } => {
                    End::Gone(format!("dropped during replay ({err})"))
                }
            })
    }

    /// Events the fan-out queued for this session: the rest of one it had partly sent, then
    /// those new to the cursor and subscribed to, in one `writev` of their shared frames.
    fn push(&mut self, backlog: &Backlog) -> Result<(), End> {
        let evicted = self.begin_work().is_err();
        self.cursor.skip_to(backlog.handled);
        let mut events = backlog.events.iter();
        if backlog.head_sent > 0 {
            // The socket is mid-frame: nothing else may be written before the frame's rest,
            // not even the close frame of an eviction.
            if let Some(head) = events.next() {
                self.cursor.advance(head.event.id);
                self.transport
                    .write_all(&head.ws_frame[backlog.head_sent..])
                    .map_err(|e| End::write_failed(&WsError::Io(e), &self.latch))?;
                self.count_sent(1);
            }
        }
        if evicted {
            return Err(self.fell_behind());
        }
        // A pong tungstenite still holds goes out before our raw frames.
        if let Some(ws) = &mut self.ws {
            ws.flush(&mut self.transport)
                .map_err(|e| End::write_failed(&e, &self.latch))?;
        }
        let mut frames: Vec<&[u8]> = Vec::with_capacity(backlog.events.len());
        for event in events {
            // Until the first subscribe, a client that asked for a replay gets nothing live:
            // everything fanned out is already stored, and the replay will read it from there.
            if self.pending_replay.is_some() {
                continue;
            }
            if self.cursor.advance(event.event.id)
                && self.subscriptions.wants(&event.event.event_type)
            {
                frames.push(&event.ws_frame);
            }
        }
        write_all_vectored(&mut self.transport, &frames)
            .map_err(|e| End::write_failed(&WsError::Io(e), &self.latch))?;
        self.count_sent(frames.len());
        Ok(())
    }

    fn count_sent(&mut self, events: usize) {
        let events = u64::try_from(events).unwrap_or(u64::MAX);
        self.events_sent += events;
        self.ctx
            .metrics
            .ws_events_sent
            .fetch_add(events, Ordering::Relaxed);
    }

    /// Sends our close frame, then finishes as `then` says. Best effort: the connection is
    /// closed afterwards whatever happens here.
    #[inline(never)]
    fn close(&mut self, code: CloseCode, reason: &str, then: Closing) {
        self.socket
            .set_write_timeout(Some(CLOSE_WRITE_TIMEOUT))
            .ok();
        let frame = CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        };
        let (ws, transport) = self.protocol();
        if ws.close(transport, Some(frame)).is_err() {
            return;
        }
        let deadline = Instant::now() + CLOSE_GRACE;
        match then {
            Closing::Cut => {}
            Closing::AwaitReply => loop {
                let (ws, transport) = self.protocol();
                match ws.read(transport) {
                    Ok(_) => {}
                    Err(WsError::Io(e)) if e.kind() == ErrorKind::WouldBlock => {
                        if !self.client_ready_by(deadline) {
                            return;
                        }
                    }
                    // The client's close frame arrived (or the stream broke).
                    Err(_) => return,
                }
            },
            Closing::Drain => {
                self.socket.shutdown(SocketShutdown::Write).ok();
                let mut discard = [0u8; 1024];
                while self.client_ready_by(deadline) {
                    match std::io::Read::read(&mut self.transport, &mut discard) {
                        Ok(n) if n > 0 => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        // The client closed (or the connection broke).
                        _ => return,
                    }
                }
            }
        }
    }

    /// Waits until the client sent something (or closed) or `deadline` passed; true if it did.
    fn client_ready_by(&self, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if transport::wait(self.socket, None, None, Some(left)).client {
                return true;
            }
        }
    }
}

/// Sends `message` now (what `WebSocket::send` does).
fn send_on(
    ws: &mut WebSocketContext,
    transport: &mut Transport<'_>,
    message: Message,
) -> Result<(), Box<WsError>> {
    ws.write(transport, message)?;
    Ok(ws.flush(transport)?)
}

/// A `bad_params` refusal of a message that had `request_id` (echoed).
fn bad_params(message: String, request_id: Option<&protocol::RequestId>) -> Refusal {
    Refusal {
        code: ErrorCode::BadParams,
        message,
        request_id: request_id.cloned(),
    }
}

/// A close frame's reason is at most 123 bytes (RFC 6455 §5.5).
fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_control_frame() {
        assert_eq!(truncate_reason("short"), "short");
        let long = "é".repeat(100);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= 123 && long.starts_with(cut));
    }

    #[test]
    fn config_limits_messages_to_64_kib() {
        let config = config();
        assert_eq!(config.max_message_size, Some(65536));
        assert_eq!(config.max_frame_size, Some(65536));
        assert_eq!(config.write_buffer_size, 0);
    }
}
