//! CORS for the origins listed in `allowed_origins`, and for no other (no `*`, ever).
//!
//! A page served from a listed origin (a home dashboard on another port, a kiosk page) may read
//! porchlight's answers: each gets `Access-Control-Allow-Origin` echoing that origin, with
//! credentials allowed (the origin is trusted by configuration, as it already is for POSTs and
//! WebSockets). Its preflight is answered before authentication, since a browser sends
//! preflights without credentials. Every answer carries `Vary: Origin` while the list is not
//! empty, so a cache never hands one origin's answer to another.

use tiny_http::{Method, Request};

use super::access::header;
use super::reply::{self, Reply};

/// Methods a listed origin may use (what the routes accept).
const METHODS: &str = "GET, HEAD, POST";
/// Request headers a listed origin's script may send.
const HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";
/// How long a browser may reuse a preflight answer, seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The request's `Origin` if it is listed in `allowed`.
pub fn listed_origin<'r>(request: &'r Request, allowed: &[String]) -> Option<&'r str> {
    let origin = header(request, "Origin")?;
    allowed.iter().any(|a| a == origin).then_some(origin)
}

/// Whether this is a browser's CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn is_preflight(request: &Request) -> bool {
    *request.method() == Method::Options
        && header(request, "Origin").is_some()
        && header(request, "Access-Control-Request-Method").is_some()
}

/// The answer to a preflight: 204 with what the origin may do, or 403 for an origin that is not
/// listed (without CORS headers, so the browser refuses the real request).
pub fn preflight(request: &Request, allowed: &[String]) -> Reply {
    if listed_origin(request, allowed).is_none() {
        return reply::error(
            403,
            "forbidden_origin",
            "cross-origin requests are refused; add the page's origin to allowed_origins",
        );
    }
    let requested = header(request, "Access-Control-Request-Method").unwrap_or("");
    if !METHODS.split(", ").any(|m| m == requested) {
        return reply::error(
            405,
            "method_not_allowed",
            &format!("{requested} is not allowed; use {METHODS}"),
        )
        .with_header(reply::header("Allow", METHODS));
    }
    // The origin's allowance and `Vary: Origin` are added by `decorate`, as on every answer:
    // a second copy here made browsers read `"o, o"` and refuse the preflight.
    reply::bytes(204, "text/plain; charset=utf-8", Vec::new())
        .with_header(reply::header("Access-Control-Allow-Methods", METHODS))
        .with_header(reply::header("Access-Control-Allow-Headers", HEADERS))
        .with_header(reply::header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE))
        .with_header(reply::header(
            "Vary",
            "Access-Control-Request-Method, Access-Control-Request-Headers",
        ))
}

/// The CORS header lines for a response to `request`, each ending in CRLF: for a listed origin
/// the allowance, and `Vary: Origin` whenever any origin is listed. Empty when none is. Used by
/// the streams, which write their heads themselves.
pub fn head_lines(request: &Request, allowed: &[String]) -> String {
    if allowed.is_empty() {
        return String::new();
    }
    let mut lines = String::from("Vary: Origin\r\n");
    if let Some(origin) = listed_origin(request, allowed) {
        lines.push_str(&format!(
            "Access-Control-Allow-Origin: {origin}\r\nAccess-Control-Allow-Credentials: true\r\n"
        ));
    }
    lines
}

/// `reply` with the CORS headers for `request` (see [`head_lines`]). The one place a
/// non-stream answer gets them, preflights included: a browser joins repeated
/// `Access-Control-Allow-Origin` lines into `"o, o"`, which matches no origin.
pub fn decorate(reply: Reply, request: &Request, allowed: &[String]) -> Reply {
    if allowed.is_empty() {
        return reply;
    }
    let reply = reply.with_header(reply::header("Vary", "Origin"));
    match listed_origin(request, allowed) {
        Some(origin) => reply
            .with_header(reply::header("Access-Control-Allow-Origin", origin))
            .with_header(reply::header("Access-Control-Allow-Credentials", "true")),
        None => reply,
    }
}
