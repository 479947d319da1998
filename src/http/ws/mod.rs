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

use std::sync::Arc;

use tiny_http::{Method, Request, Response};

use self::handshake::Opening;
use self::session::{EvictionLatch, Opened, Session};
use self::transport::Upgraded;
use super::access::{self, header};
use super::query::Target;
use super::reply::{self, Reply};
use super::router::respond;
use super::server::Conn;
use crate::ctx::Ctx;
use crate::events::fanout::Wire;
use crate::metrics::ClientKind;
use crate::wake::WakeFd;

pub use self::session::MAX_MESSAGE_BYTES;

/// `GET /ws`. Returns false: the session (or the refusal) ends the connection.
#[inline(never)]
pub fn serve(request: Request, target: &Target, conn: &Conn, ctx: &Ctx) -> bool {
    let (opened, accept_key) = match check(&request, target, conn, ctx) {
        Ok(checked) => checked,
        Err(reply) => {
            respond(request, reply, ctx);
            return false;
        }
    };
    // A HEAD gets what a GET without a handshake would; with one, it still cannot upgrade.
    if *request.method() == Method::Head {
        let reply = reply::error(
            400,
            "bad_request",
            "a WebSocket is opened with GET; HEAD cannot upgrade",
        );
        respond(request, reply, ctx);
        return false;
    }
    let Some(_slot) = ctx
        .metrics
        .admit(ClientKind::WebSocket, ctx.http.max_ws_clients)
    else {
        let limit = ctx.http.max_ws_clients;
        respond(request, reply::over_limit("WebSocket client", limit), ctx);
        return false;
    };
    // Every descriptor the session needs, before the upgrade: running out is a 503.
    let descriptors = (conn.socket.try_clone(), WakeFd::new(), ctx.shutdown.fd());
    let (Ok(sink_socket), Ok(wake), Ok(stop)) = descriptors else {
        let busy = reply::error(503, "unavailable", "the server is out of file descriptors")
            .with_header(reply::header("Retry-After", "5"));
        respond(request, busy, ctx);
        return false;
    };
    let wake = Arc::new(wake);
    // Subscribe before anything else: the replay seam (events::replay) depends on it.
    let latch = EvictionLatch::new();
    let outlet = ctx.events.subscribe_stream_polled(
        sink_socket,
        Wire::WebSocket,
        ctx.http.client_queue_events,
        Some(latch.hook()),
        Arc::clone(&wake),
    );
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
            return false;
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
    let session = Session::new(&conn.socket, early, ctx, opened, latch, wake, stop);
    let (reason, sent) = session.run(outlet);
    drop(upgraded);
    log::info!("WebSocket client {client_id} disconnected: {reason} ({sent} events sent)");
    false
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
    let accept_key = handshake::accept_key(&Opening {
        upgrade: header(request, "Upgrade"),
        connection: header(request, "Connection"),
        version: header(request, "Sec-WebSocket-Version"),
        key: header(request, "Sec-WebSocket-Key"),
    })?;
    let bad_request = |message: String| reply::error(400, "bad_request", &message);
    let client_id =
        super::query::client_id(target.get("client_id"), "ws", conn.id).map_err(bad_request)?;
    let last_event_id = target
        .get_event_id("last_event_id", super::query::IdFloor::ZeroMeansStart)
        .map_err(bad_request)?;
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
