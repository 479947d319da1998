//! `GET /ws`: the dashboard's two-way channel. Live events pushed to subscribers, commands
//! answered at once; the messages are the contract's (`../shared/spec/API.md`, "WebSocket").
//!
//! - `handshake.rs` — the opening handshake, checked in full before upgrading.
//! - `protocol.rs` — client messages parsed (no I/O) and server messages built.
//! - `subscriptions.rs` — which event types a client receives.
//! - `commands.rs` — `system_command`s, with their roles, acting through `Control`.
//! - `transport.rs` — the reader thread and the non-blocking stream under tungstenite.
//! - `session.rs` — the loop: client bytes, events, shutdown and pings in one `select!`.
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

use std::net::Shutdown as SocketShutdown;

use tiny_http::{Method, Request, Response};
use tungstenite::WebSocket;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

use self::handshake::Opening;
use self::session::{EvictionLatch, Opened, Session};
use self::transport::Transport;
use super::access::{self, header};
use super::query::Target;
use super::reply::{self, Reply};
use super::router::respond;
use super::server::Conn;
use crate::ctx::Ctx;
use crate::events::fanout::Wire;
use crate::metrics::ClientKind;

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
    let Ok(sink_socket) = conn.socket.try_clone() else {
        let busy = reply::error(503, "unavailable", "the server is out of file descriptors")
            .with_header(reply::header("Retry-After", "5"));
        respond(request, busy, ctx);
        return false;
    };
    // Subscribe before anything else: the replay seam (events::replay) depends on it.
    let latch = EvictionLatch::new();
    let outlet = ctx.events.subscribe_stream(
        sink_socket,
        Wire::WebSocket,
        ctx.http.client_queue_events,
        Some(latch.hook()),
    );
    let switching =
        Response::empty(101).with_header(reply::header("Sec-WebSocket-Accept", &accept_key));
    let upgraded = request.upgrade("websocket", switching);
    let (incoming, reader) =
        match transport::spawn_reader(upgraded, format!("ws-read-{}", conn.id), &conn.socket) {
            Ok(started) => started,
            Err(err) => {
                log::warn!("cannot start a reader thread for {}: {err}", conn.peer);
                refuse_after_upgrade(conn);
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
    let (reason, sent) = Session::new(&conn.socket, ctx, opened, latch).run(&incoming, outlet);
    // Dropping `reader` (here, or while unwinding from a panic) shuts the socket down, which
    // ends the reader thread, and joins it.
    drop(reader);
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

/// The upgrade was sent but no session can run: say so with a close frame (1013, try again
/// later) and close.
fn refuse_after_upgrade(conn: &Conn) {
    let mut ws = WebSocket::from_raw_socket(
        Transport::new(&conn.socket),
        tungstenite::protocol::Role::Server,
        Some(session::config()),
    );
    let frame = CloseFrame {
        code: CloseCode::Again,
        reason: "the server is busy; try again".into(),
    };
    ws.close(Some(frame)).ok();
    conn.socket.shutdown(SocketShutdown::Both).ok();
}
