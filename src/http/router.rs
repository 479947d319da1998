//! Routing: every request is authenticated, matched to a route, checked against the route's
//! role, then answered. Handlers return a [`Outcome`]; streaming handlers write the socket
//! themselves and end the connection when they finish.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tiny_http::{Method, Request};

use super::access;
use super::query::{IdFloor, Target, parse_event_id};
use super::reply::{self, Reply};
use super::server::{self, Conn};
use super::throttle::{self, AfterFailure};
use super::{api, clip, cors, mjpeg, panics, sse, static_files, ws};
use crate::auth::Role;
use crate::ctx::Ctx;
use crate::metrics::ClientKind;

/// What a handler answers: send `reply`; keep the connection for the next request unless
/// `close`.
pub struct Outcome {
    pub reply: Reply,
    pub close: bool,
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Self {
        Outcome {
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

/// What a 405 lists in `Allow` for a route answering GET (which always answers HEAD too).
pub const ALLOW_GET: &str = "GET, HEAD";
/// ... for a route answering POST only.
pub const ALLOW_POST: &str = "POST";
/// ... for `/api/events`.
pub const ALLOW_GET_POST: &str = "GET, HEAD, POST";
/// Every method the server answers somewhere: the routes' methods, and OPTIONS (`OPTIONS *`
/// and CORS preflights).
pub const ALLOW_ANYWHERE: &str = "GET, HEAD, POST, OPTIONS";

/// The 405 for `method` on a route that allows `allowed`, with `Allow` as RFC 9110 asks.
pub fn method_not_allowed(method: &Method, allowed: &str) -> Reply {
    reply::error(
        405,
        "method_not_allowed",
        &format!("{method} is not allowed here; use {allowed}"),
    )
    .with_header(reply::header("Allow", allowed))
}

/// The answer to a request whose target is `*` (asterisk-form, RFC 9112 §3.2.4). `OPTIONS *`
/// asks about the server in general (RFC 9110 §9.3.7): 200, no body, `Allow` listing every
/// method some route answers. It needs no token and no Host check: it says nothing the
/// contract does not. `*` is a target for OPTIONS only; any other method with it is a 400.
pub fn asterisk(method: &Method) -> Reply {
    if *method != Method::Options {
        return reply::error(
            400,
            "bad_request",
            &format!("the target * is for OPTIONS only, not {method}"),
        );
    }
    tiny_http::Response::from_data(Vec::new())
        .with_status_code(200)
        .with_header(reply::header("Allow", ALLOW_ANYWHERE))
}

/// The methods a path answers.
#[derive(Clone, Copy)]
enum Allow {
    Get,
    Post,
    GetPost,
}

impl Allow {
    fn permits(self, method: &Method) -> bool {
        let get = matches!(method, Method::Get | Method::Head);
        let post = *method == Method::Post;
        match self {
            Allow::Get => get,
            Allow::Post => post,
            Allow::GetPost => get || post,
        }
    }

    fn header(self) -> &'static str {
        match self {
            Allow::Get => ALLOW_GET,
            Allow::Post => ALLOW_POST,
            Allow::GetPost => ALLOW_GET_POST,
        }
    }
}

/// A path the routes know, before its parameters are read.
enum Known<'p> {
    Route(Route),
    /// `/api/events`: the list for GET and HEAD, a new event for POST.
    Events,
    /// A route with an event id in its path, and the id as written.
    WithId(fn(u64) -> Route, &'p str),
}

/// The route a (normalised) path names and the methods it answers, or the 404. Nothing of
/// the path is parsed here beyond its shape.
fn known(path: &str) -> Result<(Allow, Known<'_>), Reply> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let known = match segments.as_slice() {
        ["api", "login"] => (Allow::Post, Known::Route(Route::Login)),
        ["api", "whoami"] => (Allow::Get, Known::Route(Route::WhoAmI)),
        ["api", "status"] => (Allow::Get, Known::Route(Route::Status)),
        ["api", "events"] => (Allow::GetPost, Known::Events),
        ["api", "events", id] => (Allow::Get, Known::WithId(Route::Event, id)),
        ["api", "events", id, "snapshot.jpg"] => {
            (Allow::Get, Known::WithId(Route::EventSnapshot, id))
        }
        ["api", "events", id, "clip.mjpeg"] => (Allow::Get, Known::WithId(Route::EventClip, id)),
        ["api", "trigger-doorbell"] => (Allow::Post, Known::Route(Route::TriggerDoorbell)),
        ["api", "snapshot.jpg"] => (Allow::Get, Known::Route(Route::Snapshot)),
        ["stream", "events"] => (Allow::Get, Known::Route(Route::StreamEvents)),
        ["stream", "system-status"] => (Allow::Get, Known::Route(Route::StreamStatus)),
        ["stream", "video"] | ["stream", "video", _] => {
            (Allow::Get, Known::Route(Route::StreamVideo))
        }
        ["ws"] => (Allow::Get, Known::Route(Route::WebSocket)),
        ["metrics"] => (Allow::Get, Known::Route(Route::Metrics)),
        ["api", ..] | ["stream", ..] => {
            return Err(reply::error(
                404,
                "not_found",
                &format!("no such endpoint: {path}"),
            ));
        }
        _ => (Allow::Get, Known::Route(Route::Static)),
    };
    Ok(known)
}

/// The route for a method and a normalised path (`Target::path`), or the 4xx to answer
/// (public for the fuzz targets). The method is judged before anything in the path is
/// parsed: a method the path does not answer is a 405 with its `Allow` whatever its id or
/// query (`DELETE /api/events/abc` is a 405, not a 400 for the id).
pub fn resolve(method: &Method, path: &str) -> Result<Route, Reply> {
    let (allow, known) = known(path)?;
    if !allow.permits(method) {
        return Err(method_not_allowed(method, allow.header()));
    }
    match known {
        Known::Route(route) => Ok(route),
        Known::Events if *method == Method::Post => Ok(Route::EventsPost),
        Known::Events => Ok(Route::EventsList),
        Known::WithId(route, id) => parse_id(id).map(route),
    }
}

fn parse_id(text: &str) -> Result<u64, Reply> {
    parse_event_id(text, IdFloor::One)
        .map_err(|why| reply::error(400, "bad_request", &format!("event id {text:?} {why}")))
}

/// What answering one request left its connection with.
pub enum Handled<'c> {
    /// Answered: whether the connection may carry another request.
    Answered(bool),
    /// An event stream took the connection over and is open. The wait runs it until it ends,
    /// after which the connection closes. The connection thread calls it from its outermost
    /// frame, after this request's routing and opening frames are gone: an idle stream then
    /// keeps two stack pages resident rather than four (see `crate::stack`).
    Stream(StreamWait<'c>),
}

/// The rest of a stream's life, from its first wait to its end.
pub type StreamWait<'c> = Box<dyn FnOnce() + 'c>;

impl<'c> Handled<'c> {
    /// Keeps `scope` (which names the request in a panic's log line) for as long as the
    /// stream runs.
    fn scoped(self, scope: panics::RequestScope) -> Handled<'c> {
        match self {
            Handled::Stream(wait) => Handled::Stream(Box::new(move || {
                let _scope = scope;
                wait();
            })),
            answered => answered,
        }
    }
}

/// Answers one request, or opens the stream it asks for.
#[inline(never)]
pub fn handle<'c>(mut request: Request, conn: &'c Conn, ctx: &'c Ctx) -> Handled<'c> {
    ctx.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    if request.url() == "*" {
        let reply = asterisk(request.method());
        return Handled::Answered(respond(request, reply, ctx));
    }
    let target = match Target::parse(request.url()) {
        Ok(target) => target,
        Err(message) => {
            let reply = reply::error(400, "bad_request", &message);
            return Handled::Answered(respond(request, reply, ctx));
        }
    };
    let scope = panics::RequestScope::enter(request.method().as_str(), &target.path, &conn.peer);
    panics::injected("route", &target.path);
    if cors::is_preflight(&request) {
        let reply = cors::preflight(&request, &ctx.http.allowed_origins);
        return Handled::Answered(respond(request, reply, ctx));
    }
    let (reply, close) = match admit(&mut request, &target, conn, ctx) {
        Err(reply) => (reply, false),
        // Streams take the connection over and end it when they finish.
        Ok(Route::StreamEvents) => return sse::events(request, &target, conn, ctx).scoped(scope),
        Ok(Route::StreamStatus) => {
            return Handled::Answered(sse::status(request, &target, conn, ctx));
        }
        Ok(Route::StreamVideo) => {
            return Handled::Answered(mjpeg::stream(request, &target, conn, ctx));
        }
        Ok(Route::EventClip(id)) => {
            return Handled::Answered(clip::serve(request, id, &target, conn, ctx));
        }
        Ok(Route::WebSocket) => return ws::serve(request, &target, conn, ctx).scoped(scope),
        Ok(route) => {
            let Outcome { reply, close } = answer(route, &mut request, &target, conn, ctx);
            (reply, close)
        }
    };
    log::debug!(
        "{} {} {} -> {}",
        conn.peer,
        request.method(),
        target.path,
        reply.status_code().0
    );
    let reply = if close { closing(reply) } else { reply };
    Handled::Answered(respond(request, reply, ctx))
}

/// `reply` saying it is the connection's last (RFC 9112 §9.6), so a client that pipelines or
/// keeps connections for reuse does not send its next request into a closing socket.
/// [`respond`] then reports the connection as ending, and tiny_http reads no further request
/// on it.
fn closing(reply: Reply) -> Reply {
    reply.with_header(reply::header("Connection", "close"))
}

/// Sends `reply` as the connection's last answer (saying `Connection: close`), for a handler
/// that ends the connection after refusing (a stream over its limit, a refused WebSocket).
/// Returns false: the connection may carry no other request.
pub fn respond_and_close(request: Request, reply: Reply, ctx: &Ctx) -> bool {
    respond(request, closing(reply), ctx)
}

/// Sends `reply`, counts it, and says whether the connection may carry another request: the
/// one decision the answer also states. It carries none when the request's own `Connection`
/// tokens or version end it (`Request::keep_alive`; tiny_http then says `Connection: close`)
/// or the answer closes it (`Connection: close`, see [`closing`]).
#[inline(never)]
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
    let reply = cors::decorate(reply, &request, &ctx.http.allowed_origins);
    // A stopping server reads no further request (`server::serve_connection`): say so.
    let reply = if unread_body || ctx.shutdown.is_triggered() {
        closing(reply)
    } else {
        reply
    };
    let keep_alive = request.keeps_alive_after(&reply);
    request.respond(reply).is_ok() && keep_alive
}

/// Answers a HEAD of a stream: the status and headers a GET would get now — 503 over the
/// stream kind's limit, else the stream's own head (`head`, up to its blank line) — and no
/// body. No slot is taken and no stream opened. The connection then closes, as after a stream.
pub fn respond_stream_head(
    request: Request,
    head: &[u8],
    (kind, what, limit): (ClientKind, &str, usize),
    ctx: &Ctx,
) -> bool {
    if ctx.metrics.clients(kind) >= limit {
        return respond_and_close(request, reply::over_limit(what, limit), ctx);
    }
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(head.len(), |at| at + 4);
    let mut out = request.into_writer();
    out.write_all(&head[..end]).and_then(|()| out.flush()).ok();
    false
}

fn has_chunked_body(request: &Request) -> bool {
    request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Transfer-Encoding"))
}

/// Most query parameters a request may carry (a route reads at most six).
const MAX_QUERY_PARAMS: usize = 32;

/// Headers a request may send once: each decides who is asking, how its body is read or what
/// a WebSocket handshake answers (RFC 6455 §11.3.1 allows one `Sec-WebSocket-Key`).
const SINGLE_HEADERS: [&str; 5] = [
    "Authorization",
    "Origin",
    "Content-Type",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
];

/// 400 for a request that says one thing twice with different values: a query parameter
/// (`limit=5&limit=abc`, `token=A&token=B`) or one of [`SINGLE_HEADERS`]. Taking either value
/// would let a client slip one past whatever checked the other.
fn refuse_ambiguous(request: &Request, target: &Target) -> Result<(), Reply> {
    // Checked first: comparing every pair is quadratic, and an 8 KiB request line holds
    // thousands of `a&a&...`; no route reads more than a handful.
    if target.param_count() > MAX_QUERY_PARAMS {
        return Err(reply::error(
            400,
            "bad_request",
            &format!("more than {MAX_QUERY_PARAMS} query parameters"),
        ));
    }
    if let Some(key) = target.conflicting_param() {
        return Err(reply::error(
            400,
            "bad_request",
            &format!("the query parameter {key:?} is given twice with different values"),
        ));
    }
    for name in SINGLE_HEADERS {
        let mut values = request
            .headers()
            .iter()
            .filter(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().trim());
        if let Some(first) = values.next()
            && values.any(|other| other != first)
        {
            return Err(reply::error(
                400,
                "bad_request",
                &format!("{name} is sent twice with different values"),
            ));
        }
    }
    Ok(())
}

/// Resolves the route and checks the caller may use it: host, token (throttled), role, origin.
#[inline(never)]
fn admit(request: &mut Request, target: &Target, conn: &Conn, ctx: &Ctx) -> Result<Route, Reply> {
    let tokens = &ctx.http.tokens;
    if tokens.is_empty()
        && !access::host_allowed(request, &ctx.http.listen, &ctx.http.allowed_hosts)
    {
        return Err(reply::error(
            403,
            "host_not_allowed",
            "this Host is not this server's: use localhost or its address, or add the name \
             to allowed_hosts",
        ));
    }
    let route = resolve(request.method(), &target.path)?;
    if let Some(malformed) = target.query_error() {
        return Err(reply::error(400, "bad_request", malformed));
    }
    refuse_ambiguous(request, target)?;
    let address = server::client_address(&conn.peer);
    if let Route::Login = route {
        // Open without a token, but not to other origins: a foreign page must not log the
        // browser in with a token of the attacker's choosing (login CSRF).
        refuse_foreign_post(request, ctx)?;
        if !tokens.is_empty() {
            refuse_throttled(address, ctx)?;
        }
        return Ok(route);
    }
    let presented = access::presented_token(request, target).filter(|_| !tokens.is_empty());
    if presented.is_some() {
        refuse_throttled(address, ctx)?;
    }
    let role = match access::role_of(request, target, tokens) {
        Ok(role) => role,
        Err(denied) => {
            if let Some(token) = presented {
                auth_failed(address, &token, request.method(), &target.path, ctx);
            }
            // The dashboard must load to show its login form; its files hold no data.
            if route == Route::Static {
                return Ok(Route::StaticWithoutToken);
            }
            return Err(denied);
        }
    };
    access::require(role, route.required_role())?;
    refuse_foreign_post(request, ctx)?;
    Ok(route)
}

/// 429 with `Retry-After` while `address` is blocked for failed authentication.
fn refuse_throttled(address: IpAddr, ctx: &Ctx) -> Result<(), Reply> {
    match ctx.auth_throttle.blocked(address, Instant::now()) {
        None => Ok(()),
        Some(left) => {
            ctx.metrics.auth_throttled.fetch_add(1, Ordering::Relaxed);
            let secs = throttle::retry_after_secs(left);
            Err(reply::error(
                429,
                "too_many_failures",
                &format!("too many failed authentications from this address; retry in {secs} s"),
            )
            .with_header(reply::header("Retry-After", &secs.to_string())))
        }
    }
}

/// Counts and logs the wrong `token` from `address` (the token itself is never logged).
pub fn auth_failed(address: IpAddr, token: &str, method: &Method, path: &str, ctx: &Ctx) {
    ctx.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
    let shown: String = path.chars().take(100).collect();
    match ctx.auth_throttle.failed(address, token, Instant::now()) {
        AfterFailure::Repeated => log::debug!(
            "authentication failed from {address} on {method} {shown:?}: the same wrong token \
             again"
        ),
        AfterFailure::Counted { failures } => log::warn!(
            "authentication failed from {address} on {method} {shown:?}: wrong token \
             ({failures} in the last minute)"
        ),
        AfterFailure::Blocked(length) => log::warn!(
            "authentication failed from {address} on {method} {shown:?}: wrong token; \
             refusing its tokens for {} s (429)",
            length.as_secs()
        ),
    }
}

/// 403 for a POST from a browser page of another origin (unless listed in `allowed_origins`).
fn refuse_foreign_post(request: &Request, ctx: &Ctx) -> Result<(), Reply> {
    if *request.method() == Method::Post
        && !access::origin_allowed(request, &ctx.http.allowed_origins)
    {
        return Err(reply::error(
            403,
            "forbidden_origin",
            "cross-origin requests are refused; add the page's origin to allowed_origins",
        ));
    }
    Ok(())
}

/// Never inlined, like the stream handlers `handle` dispatches to: whatever the other routes
/// keep on the stack must not widen `handle`'s frame, under which an event stream waits for
/// hours (every page of that chain stays resident per idle stream; see `crate::stack`).
#[inline(never)]
fn answer(route: Route, request: &mut Request, target: &Target, conn: &Conn, ctx: &Ctx) -> Outcome {
    match route {
        Route::Static => static_files::serve(request, &target.path, ctx).into(),
        Route::StaticWithoutToken => static_files::serve_untrusted(request, target, ctx).into(),
        Route::Login => api::login(request, conn, ctx),
        Route::WhoAmI => api::whoami(request, target, ctx).into(),
        Route::Status => api::status(ctx).into(),
        Route::EventsList => api::list_events(target, ctx).into(),
        Route::EventsPost => api::post_event(request, ctx),
        Route::Event(id) => api::get_event(id, ctx).into(),
        Route::EventSnapshot(id) => api::event_snapshot(request, id, ctx).into(),
        Route::TriggerDoorbell => api::trigger_doorbell(ctx).into(),
        Route::Snapshot => api::latest_snapshot(request, target, ctx).into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: Method, path: &str) -> (u16, Option<String>) {
        match resolve(&method, path) {
            Ok(_) => (200, None),
            Err(reply) => {
                let allow = reply
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Allow"))
                    .map(|h| h.value.as_str().to_string());
                (reply.status_code().0, allow)
            }
        }
    }

    /// Every route, with a parameter that would be refused: a method the path does not answer
    /// is a 405 with the path's `Allow` first; with an allowed method the parameter is judged.
    #[test]
    fn the_method_is_judged_before_the_path_parameters() {
        let routes = [
            ("/api/login", ALLOW_POST, None),
            ("/api/whoami", ALLOW_GET, None),
            ("/api/status", ALLOW_GET, None),
            ("/api/events", ALLOW_GET_POST, None),
            ("/api/events/abc", ALLOW_GET, Some(400)),
            ("/api/events/0", ALLOW_GET, Some(400)),
            ("/api/events/-1/snapshot.jpg", ALLOW_GET, Some(400)),
            (
                "/api/events/99999999999999999999/clip.mjpeg",
                ALLOW_GET,
                Some(400),
            ),
            ("/api/trigger-doorbell", ALLOW_POST, None),
            ("/api/snapshot.jpg", ALLOW_GET, None),
            ("/stream/events", ALLOW_GET, None),
            ("/stream/system-status", ALLOW_GET, None),
            ("/stream/video", ALLOW_GET, None),
            ("/stream/video/bad%20id", ALLOW_GET, None),
            ("/ws", ALLOW_GET, None),
            ("/metrics", ALLOW_GET, None),
            ("/index.html", ALLOW_GET, None),
        ];
        let methods = [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Put,
            Method::Delete,
            Method::Patch,
            Method::Options,
            Method::NonStandard("PURGE".parse().unwrap()),
        ];
        for (path, allow, bad_param) in routes {
            for method in methods.clone() {
                let allowed = allow.split(", ").any(|m| m == method.as_str());
                let (got, got_allow) = status(method.clone(), path);
                if allowed {
                    assert_eq!(got, bad_param.unwrap_or(200), "{method} {path}");
                } else {
                    assert_eq!(got, 405, "{method} {path}");
                    assert_eq!(got_allow.as_deref(), Some(allow), "{method} {path}");
                }
            }
        }
    }

    #[test]
    fn asterisk_is_for_options_only() {
        let options = asterisk(&Method::Options);
        assert_eq!(options.status_code().0, 200);
        assert_eq!(options.data_length(), Some(0));
        assert!(
            options
                .headers()
                .iter()
                .any(|h| h.field.equiv("Allow") && h.value.as_str() == ALLOW_ANYWHERE)
        );
        for method in [Method::Get, Method::Head, Method::Post, Method::Delete] {
            assert_eq!(asterisk(&method).status_code().0, 400, "{method}");
        }
    }
}
