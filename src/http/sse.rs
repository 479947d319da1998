//! Server-Sent Events: `/stream/events` and `/stream/system-status`.
//!
//! tiny_http would send a streamed `Response` through an 8 KiB chunk encoder and a 1 KiB
//! `BufWriter` with no flush between reads (see ../shared/spec/CRATE-NOTES.md), so an event
//! would sit in a buffer. Instead we take the connection over (`Request::into_writer`), write
//! the status line and headers ourselves, and send the body chunked ([`StreamBody`]), one
//! chunk per batch of events: each event leaves as soon as it is published, and clients built
//! on urllib3/requests (which wait for a chunk or a full buffer) see it at once.
//!
//! The first block is `retry`, `event: connected` and its `data` together: a block without
//! `data` reaches some client libraries (httpx-sse, sseclient) as an empty message.
//!
//! Replay → live seam: the client subscribes to the hub *before* reading the store, and its
//! [`Cursor`] lets each id through once (see `events::replay`), so a reconnecting client gets
//! every event exactly once, in id order.
//!
//! Live events are written by the event writer itself (`events::fanout`): once the stream is
//! open and replayed, its thread hands the socket over ([`Outlet::settle`]) and sleeps until a
//! heartbeat is due, shutdown, or its socket filled up and the fan-out queued events for it
//! to write (a slow client), after which it hands the socket back.

use std::io::Write;
use std::net::{Shutdown as SocketShutdown, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::select;
use serde_json::json;
use tiny_http::{Method, Request};

use super::chunked::{StreamBody, transfer_encoding_header, uses_chunks, write_all_vectored};
use super::cors;
use super::panics;
use super::query::{IdFloor, Target, client_id, event_type_list, parse_event_id, stream_cursor};
use super::reply;
use super::router::{Handled, respond, respond_and_close, respond_stream_head};
use super::server::{Conn, HangupCheck};
use crate::ctx::Ctx;
use crate::events::fanout::{Backlog, Outlet, Settled, Wire};
use crate::events::{Cursor, ReplayError, Replayed};
use crate::metrics::ClientKind;
use crate::wake::{self, WakeFd};

/// Queued events written in one `writev` when a slow client catches up.
const MAX_BATCH: usize = 64;

const HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\
X-Content-Type-Options: nosniff\r\n";

/// The reconnection delay clients are told, in the first block.
const RETRY: &str = "retry: 3000\n";

/// The response head of a stream, with the framing and CORS lines this request gets (also what
/// a HEAD of the stream is answered with).
fn stream_head(request: &Request, ctx: &Ctx) -> String {
    format!(
        "{HEAD}{}{}\r\n",
        transfer_encoding_header(request.http_version()),
        cors::head_lines(request, &ctx.http.allowed_origins)
    )
}

/// Sends the response head (with the framing and CORS lines this request gets) and returns the
/// body to write events to. Keeps the connection's writer from tiny_http in `held`, unused:
/// the body writes to the socket itself.
fn open_stream<'c>(
    request: Request,
    conn: &'c Conn,
    ctx: &Ctx,
    held: &mut Option<Box<dyn Write + Send>>,
) -> std::io::Result<StreamBody<'c>> {
    let chunked = uses_chunks(request.http_version());
    let head = stream_head(&request, ctx);
    *held = Some(request.into_writer());
    let mut socket = &conn.socket;
    socket.write_all(head.as_bytes())?;
    Ok(StreamBody::new(&conn.socket, chunked))
}

/// What the client asked for in its URL and headers.
struct EventStreamRequest {
    client_id: String,
    types: Option<Vec<String>>,
    last_event_id: Option<u64>,
}

fn parse_request(
    request: &Request,
    target: &Target,
    conn: &Conn,
) -> Result<EventStreamRequest, String> {
    let client_id = client_id(target.get("client_id"), "sse", conn.id)?;
    // A filter naming no type would be a stream that never sends an event, without a word
    // (the WebSocket's `event_types: []` is refused the same way).
    let types = target
        .get("types")
        .map(|list| event_type_list("types", list))
        .transpose()?;
    // Both are checked, whichever is used: a malformed number is a 400 wherever it is.
    let from_url = stream_cursor(target)?;
    // The header is what EventSource resends on reconnect, so it wins over the URL.
    let last_event_id = last_event_id_header(request)?.or(from_url);
    Ok(EventStreamRequest {
        client_id,
        types,
        last_event_id,
    })
}

/// The `Last-Event-ID` header's id: `None` when absent or empty (EventSource sends none before
/// its first event), else every copy must be the same valid id — two different cursors in one
/// request are as ambiguous as two different `Content-Length`s, so neither is guessed at.
fn last_event_id_header(request: &Request) -> Result<Option<u64>, String> {
    let mut found = None;
    for value in request
        .headers()
        .iter()
        .filter(|h| h.field.equiv("Last-Event-ID"))
        .map(|h| h.value.as_str().trim())
        .filter(|text| !text.is_empty())
    {
        let id = parse_event_id(value, IdFloor::ZeroMeansStart)
            .map_err(|why| format!("Last-Event-ID {value:?} {why}"))?;
        if found.is_some_and(|first| first != id) {
            return Err("Last-Event-ID is sent twice with different ids".into());
        }
        found = Some(id);
    }
    Ok(found)
}

/// One open event stream.
struct EventStream<'a> {
    out: StreamBody<'a>,
    /// How each event is framed on this stream (chunked or not).
    wire: Wire,
    types: Option<Vec<String>>,
    /// Which ids were already handled (sent, or skipped by the filter).
    cursor: Cursor,
    sent: u64,
    ctx: &'a Ctx,
}

impl EventStream<'_> {
    fn wants(&self, event_type: &str) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == event_type))
    }

    /// Writes queued events (those new to the cursor and wanted) in one `writev` of their
    /// shared bytes, after the rest of the first one if the fan-out sent part of it.
    #[inline(never)]
    fn write_backlog(&mut self, socket: &TcpStream, backlog: &Backlog) -> std::io::Result<()> {
        self.cursor.skip_to(backlog.handled);
        let mut parts: Vec<&[u8]> = Vec::with_capacity(backlog.events.len());
        for (i, event) in backlog.events.iter().enumerate() {
            let bytes = self.wire.bytes(event);
            if i == 0 && backlog.head_sent > 0 {
                // Its first bytes are on the wire: the rest must follow before anything else.
                self.cursor.advance(event.event.id);
                parts.push(&bytes[backlog.head_sent..]);
            } else if self.cursor.advance(event.event.id) && self.wants(&event.event.event_type) {
                parts.push(bytes);
            } else {
                continue;
            }
            self.sent += 1;
        }
        let written = u64::try_from(parts.len()).unwrap_or(u64::MAX);
        self.ctx
            .metrics
            .sse_events_sent
            .fetch_add(written, std::sync::atomic::Ordering::Relaxed);
        write_all_vectored(&mut { socket }, &parts)
    }

    fn write_if_wanted(&mut self, event_type: &str, block: &[u8]) -> std::io::Result<()> {
        if self.wants(event_type) {
            self.out.write_all(block)?;
            self.sent += 1;
            self.ctx
                .metrics
                .sse_events_sent
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Sends a `gap` if events after `after` were deleted, then every stored event after it;
    /// or a `reset` if `after` is beyond every stored id.
    fn replay(&mut self, after: u64) -> Result<(), ReplayError<std::io::Error>> {
        let mut cursor = std::mem::take(&mut self.cursor);
        let result = cursor.replay(self.ctx.events.reader(), after, |item| {
            match item {
                Replayed::Gap { from, to } => {
                    let gap = crate::json::text(&json!({"from": from, "to": to}));
                    write!(self.out, "event: gap\ndata: {gap}\n\n")
                }
                Replayed::Reset {
                    last_event_id,
                    newest_id,
                } => {
                    let reset = crate::json::text(
                        &json!({"last_event_id": last_event_id, "newest_id": newest_id}),
                    );
                    write!(self.out, "event: reset\ndata: {reset}\n\n")
                }
                // The cursor has already let this id through.
                Replayed::Event(event) if self.wants(&event.event_type) => {
                    let block = crate::events::event::sse_block(
                        event,
                        &crate::json::text(&event.to_json()),
                    );
                    self.write_if_wanted(&event.event_type, &block)
                }
                Replayed::Event(_) => Ok(()),
                Replayed::PageEnd => self.out.flush(),
            }
        });
        self.cursor = cursor;
        result
    }
}

/// `GET /stream/events`: opens the stream (parsing, subscribing, the `connected` block, the
/// replay) and returns its wait, which the connection thread runs from its outermost frame
/// once the deep, wide frames of routing and opening are gone ([`Handled::Stream`]).
#[inline(never)]
pub fn events<'c>(request: Request, target: &Target, conn: &'c Conn, ctx: &'c Ctx) -> Handled<'c> {
    match open_events(request, target, conn, ctx) {
        Err(keep_alive) => Handled::Answered(keep_alive),
        // Boxed: the open stream's state stays on the heap, off the waiting thread's stack.
        Ok(open) => {
            let mut open = Box::new(open);
            Handled::Stream(Box::new(move || open.run(conn, ctx)))
        }
    }
}

/// An event stream opened and replayed, with what must live as long as it does.
/// Fields drop in this order: the stream, tiny_http's writer, the subscription, the slot.
struct OpenEvents<'c> {
    stream: EventStream<'c>,
    /// tiny_http's writer for this connection, unused: the stream writes to the socket itself.
    _held_writer: Option<Box<dyn Write + Send>>,
    outlet: Outlet,
    /// Made readable by the fan-out when it queued events for this thread (or evicted it).
    wake: Arc<WakeFd>,
    client_id: String,
    /// This stream's place under `max_sse_clients`.
    _slot: crate::metrics::ClientSlot<'c>,
}

impl OpenEvents<'_> {
    /// Waits out the stream's life (see [`live`]) and logs why it ended.
    fn run(&mut self, conn: &Conn, ctx: &Ctx) {
        let reason = live(&mut self.stream, &self.outlet, &self.wake, conn, ctx);
        log::info!(
            "SSE client {} disconnected: {reason} ({} events sent)",
            self.client_id,
            self.stream.sent + self.outlet.sent()
        );
    }
}

/// Everything before the wait: answers the request itself when no stream opens (`Err`: whether
/// the connection may carry another request).
#[inline(never)]
fn open_events<'c>(
    request: Request,
    target: &Target,
    conn: &'c Conn,
    ctx: &'c Ctx,
) -> Result<OpenEvents<'c>, bool> {
    let asked = match parse_request(&request, target, conn) {
        Ok(asked) => asked,
        Err(message) => {
            return Err(respond(
                request,
                reply::error(400, "bad_request", &message),
                ctx,
            ));
        }
    };
    if *request.method() == Method::Head {
        let limit = (ClientKind::Sse, "SSE client", ctx.http.max_sse_clients);
        let head = stream_head(&request, ctx);
        return Err(respond_stream_head(request, head.as_bytes(), limit, ctx));
    }
    let Some(_slot) = ctx.metrics.admit(ClientKind::Sse, ctx.http.max_sse_clients) else {
        return Err(refuse_over_limit(request, ctx));
    };
    // Subscribe first: see the module doc for why this makes the seam exact.
    let wire = if uses_chunks(request.http_version()) {
        Wire::SseChunked
    } else {
        Wire::SsePlain
    };
    // Every descriptor the stream needs, before anything is sent: running out is a 503.
    let subscribed = ctx.shutdown.fd().and_then(|_| {
        ctx.events.subscribe_stream(
            &conn.socket,
            wire,
            ctx.http.client_queue_events,
            Some(Box::new(|socket: &TcpStream| {
                socket.shutdown(SocketShutdown::Both).ok();
            })),
        )
    });
    let Ok((outlet, wake)) = subscribed else {
        return Err(respond(request, reply::out_of_descriptors(), ctx));
    };
    if let Some(types) = &asked.types {
        let types = types.clone();
        outlet.set_interest(Some(Box::new(move |event_type: &str| {
            types.iter().any(|t| t == event_type)
        })));
    }
    let mut held_writer = None;
    let Ok(out) = open_stream(request, conn, ctx, &mut held_writer) else {
        return Err(false);
    };
    let mut stream = EventStream {
        out,
        wire,
        types: asked.types,
        cursor: Cursor::new(),
        sent: 0,
        ctx,
    };
    let connected = crate::json::text(&json!({
        "client_id": asked.client_id,
        "server_time": crate::clock::round_ms(crate::clock::unix_now()),
        "capabilities": ["replay", "types", "heartbeat", "gap"],
    }));
    let opened = write!(stream.out, "{RETRY}event: connected\ndata: {connected}\n\n")
        .and_then(|()| stream.out.flush());
    if opened.is_err() {
        return Err(false);
    }
    log::info!(
        "SSE client {} connected from {}{}",
        asked.client_id,
        conn.peer,
        asked
            .last_event_id
            .map(|n| format!(", replaying after event {n}"))
            .unwrap_or_default()
    );
    panics::injected("stream", &target.path);
    if let Some(Err(err)) = asked.last_event_id.map(|after| stream.replay(after)) {
        log::info!(
            "SSE client {} dropped during replay: {err}",
            asked.client_id
        );
        return Err(false);
    }
    Ok(OpenEvents {
        stream,
        _held_writer: held_writer,
        outlet,
        wake,
        client_id: asked.client_id,
        _slot,
    })
}

/// The live part of an event stream: the fan-out writes events while this thread sleeps in one
/// `poll(2)`; it wakes to write a heartbeat when the stream has been idle for `heartbeat_s`, to
/// write what was queued for a client whose socket filled up (`wake`), when the client hangs
/// up (the socket's `POLLRDHUP`: noticed at once, with no periodic check), or to stop. Returns
/// why the stream ended.
fn live(
    stream: &mut EventStream,
    outlet: &Outlet,
    wake: &WakeFd,
    conn: &Conn,
    ctx: &Ctx,
) -> String {
    let heartbeat = ctx.http.heartbeat;
    let Ok(stop) = ctx.shutdown.fd() else {
        // Made before the stream opened (`open_events`): cannot fail here.
        return "server shutting down".into();
    };
    let mut last_write = Instant::now();
    // Parsing, routing and replay are done: the rest of this thread's life is shallow, and
    // the stack pages they touched go back (again after each write of its own).
    let mut deep = true;
    loop {
        match outlet.settle(stream.cursor.last_handled(), true, MAX_BATCH) {
            Settled::Backlog(backlog) => {
                if let Err(err) = stream.write_backlog(&conn.socket, &backlog) {
                    return gone(&err);
                }
                last_write = Instant::now();
                deep = true;
                continue;
            }
            Settled::Evicted { .. } => {
                return "fell behind (queue full); it will replay on reconnect".into();
            }
            // The fan-out now sends events straight to the socket.
            Settled::Idle => {}
        }
        if std::mem::take(&mut deep) {
            crate::stack::release_unused();
        }
        let idle_since = outlet.last_send().map_or(last_write, |t| t.max(last_write));
        let wait = (idle_since + heartbeat).saturating_duration_since(Instant::now());
        let ready = wake::wait(
            &conn.socket,
            libc::POLLRDHUP,
            Some(wake.as_fd()),
            Some(stop),
            Some(wait),
        );
        if ready.stop {
            // End the body properly (the last chunk), after anything the fan-out left
            // half-sent: a client then sees a complete response and reconnects.
            if take_socket(stream, outlet, &conn.socket).is_ok() {
                stream.out.finish().ok();
            }
            return "server shutting down".into();
        }
        if ready.woken {
            // Something was queued, or the client was evicted (whose hook also shut the
            // socket down): settle again, which says which.
            wake.clear();
            continue;
        }
        if ready.client {
            return "closed the connection".into();
        }
        if idle_since.elapsed() < heartbeat {
            continue;
        }
        if let Err(reason) = take_socket(stream, outlet, &conn.socket) {
            return reason;
        }
        let idle_since = outlet.last_send().map_or(last_write, |t| t.max(last_write));
        if idle_since.elapsed() < heartbeat {
            continue;
        }
        if let Err(err) = heartbeat_block(&mut stream.out) {
            return gone(&err);
        }
        last_write = Instant::now();
        deep = true;
    }
}

/// Writes a `heartbeat` block. Out of line, like everything the wait loop does besides
/// waiting: the loop's frame stays small (see `events`).
#[inline(never)]
fn heartbeat_block(out: &mut StreamBody) -> std::io::Result<()> {
    let beat =
        crate::json::text(&json!({"timestamp": crate::clock::round_ms(crate::clock::unix_now())}));
    write!(out, "event: heartbeat\ndata: {beat}\n\n").and_then(|()| out.flush())
}

/// Takes the socket back from the fan-out so this thread can write something of its own (a
/// heartbeat, the last chunk). A send that filled the socket just before may have left part
/// of an event on the wire, with the rest queued: that is written first, so nothing of ours
/// ever lands inside an event. Err: why the stream ended meanwhile.
#[inline(never)]
fn take_socket(
    stream: &mut EventStream,
    outlet: &Outlet,
    socket: &TcpStream,
) -> Result<(), String> {
    stream.cursor.skip_to(outlet.detach());
    loop {
        match outlet.settle(stream.cursor.last_handled(), false, MAX_BATCH) {
            Settled::Backlog(backlog) => {
                stream
                    .write_backlog(socket, &backlog)
                    .map_err(|e| gone(&e))?;
            }
            Settled::Evicted { .. } => {
                return Err("fell behind (queue full); it will replay on reconnect".into());
            }
            Settled::Idle => return Ok(()),
        }
    }
}

/// Why a stream whose write failed ended, for the log.
fn gone(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            "stopped reading (no bytes accepted within write_timeout_s)".into()
        }
        _ => format!("closed the connection ({err})"),
    }
}

/// Answers 503 with `Retry-After` over `max_sse_clients`; the connection then ends.
fn refuse_over_limit(request: Request, ctx: &Ctx) -> bool {
    respond_and_close(
        request,
        reply::over_limit("SSE client", ctx.http.max_sse_clients),
        ctx,
    )
}

/// `GET /stream/system-status`: `status_connected`, then the status object now and every
/// `status_interval_s`.
#[inline(never)]
pub fn status(request: Request, target: &Target, conn: &Conn, ctx: &Ctx) -> bool {
    let client_id = match client_id(target.get("client_id"), "status", conn.id) {
        Ok(id) => id,
        Err(message) => return respond(request, reply::error(400, "bad_request", &message), ctx),
    };
    if *request.method() == Method::Head {
        let limit = (ClientKind::Sse, "SSE client", ctx.http.max_sse_clients);
        let head = stream_head(&request, ctx);
        return respond_stream_head(request, head.as_bytes(), limit, ctx);
    }
    let Some(_slot) = ctx.metrics.admit(ClientKind::Sse, ctx.http.max_sse_clients) else {
        return refuse_over_limit(request, ctx);
    };
    let subscription = ctx.status.subscribe(conn.closer());
    let mut held_writer = None;
    let Ok(mut out) = open_stream(request, conn, ctx, &mut held_writer) else {
        return false;
    };
    let connected = crate::json::text(&json!({
        "client_id": client_id,
        "server_time": crate::clock::round_ms(crate::clock::unix_now()),
        "interval_s": ctx.http.status_interval_s,
    }));
    let now = crate::json::text(&ctx.status.sample());
    let opened = write!(out, "{RETRY}event: status_connected\ndata: {connected}\n\n")
        .and_then(|()| write!(out, "event: system_status\ndata: {now}\n\n"))
        .and_then(|()| out.flush());
    if opened.is_err() {
        return false;
    }
    log::info!("status client {client_id} connected from {}", conn.peer);
    panics::injected("stream", &target.path);
    let stop = ctx.shutdown.signal();
    let reason = loop {
        select! {
            recv(subscription.rx) -> status => {
                let Ok(status) = status else { break "fell behind" };
                let written = write!(out, "event: system_status\ndata: {status}\n\n")
                    .and_then(|()| out.flush());
                if written.is_err() {
                    break "closed the connection";
                }
            }
            recv(stop) -> _ => break "server shutting down",
            // status_interval_s may be long: notice a client that left in between.
            default(HangupCheck::INTERVAL) => {
                if conn.client_gone() {
                    break "closed the connection";
                }
            }
        }
    };
    log::info!("status client {client_id} disconnected: {reason}");
    false
}
