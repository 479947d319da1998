//! `GET /ws`: the dashboard's two-way channel. Live events pushed to subscribers, commands
//! answered at once; the messages are the contract's (`../shared/spec/API.md`, "WebSocket").
//!
//! - `handshake.rs` — the opening handshake, checked in full before upgrading.
//! - `protocol.rs` — client messages parsed (no I/O) and server messages built.
//! - `subscriptions.rs` — which event types a client receives.
//! - `commands.rs` — `system_command`s, with their roles, acting through `Control`.
//! - `transport.rs` — the socket under tungstenite: non-blocking reads, one `poll` for every
//!   input, the bytes read before the upgrade.
//! - `session.rs` — the loop: client bytes, events, shutdown and pings in one `poll`, on the
//!   connection's own thread (a WebSocket costs one thread, like every connection).
//!
//! Everything a plain HTTP request is refused for is refused here *before* the upgrade, with
//! the usual JSON error: token and role (the router), a foreign `Origin` (403), a malformed
//! handshake (400/426), bad parameters (400), and the `max_ws_clients` limit (503).

pub(crate) mod commands;
mod handshake;
pub mod protocol;
mod session;
mod subscriptions;
mod transport;

use tiny_http::{Method, Request, Response};

use self::handshake::Opening;
pub use self::handshake::derive_accept;
use self::session::{EvictionLatch, Opened, Session};
use self::transport::{Transport, Upgraded};
use super::access::{self, header};
use super::query::Target;
use super::reply::{self, Reply};
use super::router::{Handled, respond_and_close};
use super::server::Conn;
use crate::ctx::Ctx;
use crate::events::fanout::Wire;
use crate::metrics::{ClientKind, ClientSlot};

pub use self::session::MAX_MESSAGE_BYTES;

/// `GET /ws`: checks and upgrades, then returns the session, which the connection thread runs
/// from its outermost frame once the deep, wide frames of routing and opening are gone
/// ([`Handled::Stream`]). A refusal is answered here and ends the connection.
#[inline(never)]
pub fn serve<'c>(request: Request, target: &Target, conn: &'c Conn, ctx: &'c Ctx) -> Handled<'c> {
    match open(request, target, conn, ctx) {
        None => Handled::Answered(false),
        // Boxed: the session's state stays on the heap, off the waiting thread's stack.
        Some(open) => {
            let mut open = Box::new(open);
            Handled::Stream(Box::new(move || open.run()))
        }
    }
}

/// An upgraded WebSocket with what must live as long as its session. Fields drop in this
/// order: the session (and its fan-out subscription), the upgraded stream (which shuts the
/// socket down), the slot.
struct OpenSession<'c> {
    session: Session<'c>,
    _upgraded: Upgraded<'c>,
    client_id: String,
    /// This session's place under `max_ws_clients`.
    _slot: ClientSlot<'c>,
}

impl OpenSession<'_> {
    fn run(&mut self) {
        let (reason, sent) = self.session.run();
        log::info!(
            "WebSocket client {} disconnected: {reason} ({sent} events sent)",
            self.client_id
        );
    }
}

/// Everything before the session's loop; `None` when the request was answered (refused) or
/// the upgraded connection cannot be read.
#[inline(never)]
fn open<'c>(
    request: Request,
    target: &Target,
    conn: &'c Conn,
    ctx: &'c Ctx,
) -> Option<OpenSession<'c>> {
    let (opened, accept_key) = match check(&request, target, conn, ctx) {
        Ok(checked) => checked,
        Err(reply) => {
            respond_and_close(request, reply, ctx);
            return None;
        }
    };
    // A HEAD gets what a GET without a handshake would; with one, it still cannot upgrade.
    if *request.method() == Method::Head {
        let reply = reply::error(
            400,
            "bad_request",
            "a WebSocket is opened with GET; HEAD cannot upgrade",
        );
        respond_and_close(request, reply, ctx);
        return None;
    }
    let Some(slot) = ctx
        .metrics
        .admit(ClientKind::WebSocket, ctx.http.max_ws_clients)
    else {
        let limit = ctx.http.max_ws_clients;
        respond_and_close(request, reply::over_limit("WebSocket client", limit), ctx);
        return None;
    };
    // Every descriptor the session needs, before the upgrade: running out is a 503.
    // Subscribe before anything else: the replay seam (events::replay) depends on it.
    let latch = EvictionLatch::new();
    let subscribed = ctx.shutdown.fd().and_then(|stop| {
        let (outlet, wake) = ctx.events.subscribe_stream(
            &conn.socket,
            Wire::WebSocket,
            ctx.http.client_queue_events,
            Some(latch.hook()),
        )?;
        Ok((outlet, wake, stop))
    });
    let Ok((outlet, wake, stop)) = subscribed else {
        respond_and_close(request, reply::out_of_descriptors(), ctx);
        return None;
    };
    let switching =
        Response::empty(101).with_header(reply::header("Sec-WebSocket-Accept", &accept_key));
    let upgraded = request.upgrade("websocket", switching);
    // Dropping `upgraded` (at the end, or while unwinding from a panic) shuts the socket down.
    let (upgraded, early) = match Upgraded::open(upgraded, &conn.socket) {
        Ok(opened) => opened,
        Err(err) => {
            log::warn!(
                "cannot read the upgraded connection of {}: {err}",
                conn.peer
            );
            return None;
        }
    };
    log::info!(
        "WebSocket client {} connected from {} as {}{}",
        opened.client_id,
        conn.peer,
        opened.role,
        opened
            .last_event_id
            .map(|n| format!(", replaying after event {n} on subscribe"))
            .unwrap_or_default()
    );
    let client_id = opened.client_id.clone();
    super::panics::injected("stream", &target.path);
    let transport = Transport::new(&conn.socket, early);
    let session = Session::new(transport, ctx, opened, latch, outlet, wake, stop);
    Some(OpenSession {
        session,
        _upgraded: upgraded,
        client_id,
        _slot: slot,
    })
}

/// Checks everything that must hold before upgrading. Returns what the session needs and the
/// `Sec-WebSocket-Accept` value, or the HTTP error to answer.
fn check(
    request: &Request,
    target: &Target,
    conn: &Conn,
    ctx: &Ctx,
) -> Result<(Opened, String), Reply> {
    if !matches!(request.method(), Method::Get | Method::Head) {
        let allowed = super::router::ALLOW_GET;
        return Err(super::router::method_not_allowed(request.method(), allowed));
    }
    // Browsers let any page open a WebSocket to any host: the Origin check is what keeps a
    // foreign page from driving the doorbell with the user's cookie.
    if !access::origin_allowed(request, &ctx.http.allowed_origins) {
        return Err(reply::error(
            403,
            "forbidden_origin",
            "this page's origin may not open the WebSocket; add it to allowed_origins",
        ));
    }
    // RFC 6455 §4.1: the opening handshake is an HTTP/1.1 request; HTTP/1.0 has no upgrade.
    let version = request.http_version();
    if (version.0, version.1) < (1, 1) {
        return Err(reply::error(
            426,
            "upgrade_required",
            "a WebSocket handshake is an HTTP/1.1 request; this one is HTTP/1.0",
        ));
    }
    // List headers, read over every line they were sent on.
    let (upgrade, connection) = (
        access::joined(request, "Upgrade"),
        access::joined(request, "Connection"),
    );
    let accept_key = handshake::accept_key(&Opening {
        upgrade: upgrade.as_deref(),
        connection: connection.as_deref(),
        version: header(request, "Sec-WebSocket-Version"),
        key: header(request, "Sec-WebSocket-Key"),
    })?;
    let bad_request = |message: String| reply::error(400, "bad_request", &message);
    let client_id =
        super::query::client_id(target.get("client_id"), "ws", conn.id).map_err(bad_request)?;
    let last_event_id = super::query::stream_cursor(target).map_err(bad_request)?;
    // The router has already checked the token; this reads the role it grants.
    let role = access::role_of(request, target, &ctx.http.tokens)?;
    Ok((
        Opened {
            client_id,
            role,
            last_event_id,
        },
        accept_key,
    ))
}
