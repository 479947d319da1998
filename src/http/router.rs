//! Routing: every request is authenticated, matched to a route, checked against the route's
//! role, then answered. Handlers return a [`Outcome`]; streaming handlers write the socket
//! themselves and end the connection when they finish.

use std::sync::atomic::Ordering;

use tiny_http::{Method, Request};

use super::access;
use super::query::Target;
use super::reply::{self, Reply};
use super::server::Conn;
use super::{api, clip, cors, mjpeg, sse, static_files, ws};
use crate::app::Ctx;
use crate::auth::Role;

/// What a handler did with the request.
pub enum Outcome {
    /// Send this reply; keep the connection for the next request unless `close`.
    Reply { reply: Reply, close: bool },
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Self {
        Outcome::Reply {
            reply,
            close: false,
        }
    }
}

/// The routes of the contract.
#[derive(Debug, PartialEq)]
pub enum Route {
    Static,
    /// A dashboard file asked for without a valid token: see [`static_files::serve_untrusted`].
    StaticWithoutToken,
    Login,
    WhoAmI,
    Status,
    EventsList,
    EventsPost,
    Event(u64),
    EventSnapshot(u64),
    EventClip(u64),
    TriggerDoorbell,
    Snapshot,
    StreamEvents,
    StreamStatus,
    StreamVideo,
    WebSocket,
    Metrics,
}

impl Route {
    fn required_role(&self) -> Role {
        match self {
            Route::EventsPost => Role::Admin,
            Route::TriggerDoorbell => Role::Control,
            _ => Role::Viewer,
        }
    }
}

/// The route for a method and path, or the 4xx to answer (public for the fuzz targets).
pub fn resolve(method: &Method, path: &str) -> Result<Route, Reply> {
    let get = matches!(method, Method::Get | Method::Head);
    let post = *method == Method::Post;
    let wrong_method = |allowed: &str| {
        reply::error(
            405,
            "method_not_allowed",
            &format!("{method} is not allowed here; use {allowed}"),
        )
        .with_header(reply::header("Allow", allowed))
    };
    let only_get = |route: Route| {
        if get {
            Ok(route)
        } else {
            Err(wrong_method("GET"))
        }
    };
    let only_post = |route: Route| {
        if post {
            Ok(route)
        } else {
            Err(wrong_method("POST"))
        }
    };
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match segments.as_slice() {
        ["api", "login"] => only_post(Route::Login),
        ["api", "whoami"] => only_get(Route::WhoAmI),
        ["api", "status"] => only_get(Route::Status),
        ["api", "events"] if post => Ok(Route::EventsPost),
        ["api", "events"] => {
            if get {
                Ok(Route::EventsList)
            } else {
                Err(wrong_method("GET, POST"))
            }
        }
        ["api", "events", id] => only_get(Route::Event(parse_id(id)?)),
        ["api", "events", id, "snapshot.jpg"] => only_get(Route::EventSnapshot(parse_id(id)?)),
        ["api", "events", id, "clip.mjpeg"] => only_get(Route::EventClip(parse_id(id)?)),
        ["api", "trigger-doorbell"] => only_post(Route::TriggerDoorbell),
        ["api", "snapshot.jpg"] => only_get(Route::Snapshot),
        ["stream", "events"] => only_get(Route::StreamEvents),
        ["stream", "system-status"] => only_get(Route::StreamStatus),
        ["stream", "video"] | ["stream", "video", _] => only_get(Route::StreamVideo),
        ["ws"] => only_get(Route::WebSocket),
        ["metrics"] => only_get(Route::Metrics),
        ["api", ..] | ["stream", ..] => Err(reply::error(
            404,
            "not_found",
            &format!("no such endpoint: {path}"),
        )),
        _ => only_get(Route::Static),
    }
}

fn parse_id(text: &str) -> Result<u64, Reply> {
    text.parse().map_err(|_| {
        reply::error(
            400,
            "bad_request",
            &format!("event id {text:?} is not a number"),
        )
    })
}

/// Answers one request. Returns whether the connection may carry another request.
pub fn handle(mut request: Request, conn: &Conn, ctx: &Ctx) -> bool {
    ctx.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let target = Target::parse(request.url());
    if cors::is_preflight(&request) {
        let reply = cors::preflight(&request, &ctx.config.allowed_origins);
        return respond(request, reply, ctx);
    }
    let (reply, close) = match admit(&mut request, &target, ctx) {
        Err(reply) => (reply, false),
        // Streams take the connection over and end it when they finish.
        Ok(Route::StreamEvents) => return sse::events(request, &target, conn, ctx),
        Ok(Route::StreamStatus) => return sse::status(request, &target, conn, ctx),
        Ok(Route::StreamVideo) => return mjpeg::stream(request, &target, conn, ctx),
        Ok(Route::EventClip(id)) => return clip::serve(request, id, &target, conn, ctx),
        Ok(Route::WebSocket) => return ws::serve(request, &target, conn, ctx),
        Ok(route) => match answer(route, &mut request, &target, ctx) {
            Outcome::Reply { reply, close } => (reply, close),
        },
    };
    log::debug!(
        "{} {} {} -> {}",
        conn.peer,
        request.method(),
        target.path,
        reply.status_code().0
    );
    respond(request, reply, ctx) && !close
}

/// Sends `reply`, counts it, and says whether the connection may carry another request.
pub fn respond(request: Request, reply: Reply, ctx: &Ctx) -> bool {
    let status = reply.status_code().0;
    if (400..500).contains(&status) {
        ctx.metrics
            .http_client_errors
            .fetch_add(1, Ordering::Relaxed);
    } else if status >= 500 {
        ctx.metrics
            .http_server_errors
            .fetch_add(1, Ordering::Relaxed);
    }
    // A body we did not read (too large, or refused before reading) leaves the connection
    // in an unknown place: close it rather than parse a body as the next request.
    let unread_body = request
        .body_length()
        .is_some_and(|n| n > crate::events::event::MAX_BODY_BYTES)
        || has_chunked_body(&request);
    let reply = cors::decorate(reply, &request, &ctx.config.allowed_origins);
    request.respond(reply).is_ok() && !unread_body
}

fn has_chunked_body(request: &Request) -> bool {
    request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Transfer-Encoding"))
}

/// Resolves the route and checks the caller may use it: token, role, origin.
fn admit(request: &mut Request, target: &Target, ctx: &Ctx) -> Result<Route, Reply> {
    let route = resolve(request.method(), &target.path)?;
    if let Route::Login = route {
        return Ok(route);
    }
    let role = match access::role_of(request, target, &ctx.config.tokens) {
        Ok(role) => role,
        // The dashboard must load to show its login form; its files hold no data.
        Err(_) if route == Route::Static => return Ok(Route::StaticWithoutToken),
        Err(denied) => return Err(denied),
    };
    access::require(role, route.required_role())?;
    if *request.method() == Method::Post
        && !access::origin_allowed(request, &ctx.config.allowed_origins)
    {
        return Err(reply::error(
            403,
            "forbidden_origin",
            "cross-origin requests are refused; add the page's origin to allowed_origins",
        ));
    }
    Ok(route)
}

fn answer(route: Route, request: &mut Request, target: &Target, ctx: &Ctx) -> Outcome {
    match route {
        Route::Static => static_files::serve(request, &target.path, ctx).into(),
        Route::StaticWithoutToken => static_files::serve_untrusted(request, target, ctx).into(),
        Route::Login => api::login(request, ctx),
        Route::WhoAmI => api::whoami(request, target, ctx).into(),
        Route::Status => api::status(ctx).into(),
        Route::EventsList => api::list_events(target, ctx).into(),
        Route::EventsPost => api::post_event(request, ctx),
        Route::Event(id) => api::get_event(id, ctx).into(),
        Route::EventSnapshot(id) => api::event_snapshot(request, id, ctx).into(),
        Route::TriggerDoorbell => api::trigger_doorbell(ctx).into(),
        Route::Snapshot => api::latest_snapshot(target, ctx).into(),
        Route::Metrics => api::metrics(ctx).into(),
        Route::StreamEvents
        | Route::StreamStatus
        | Route::StreamVideo
        | Route::EventClip(_)
        | Route::WebSocket => {
            unreachable!("streams are handled in handle()")
        }
    }
}
