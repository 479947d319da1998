//! The REST endpoints of the contract.

use std::io::Read;

use serde_json::{Value, json};
use tiny_http::Request;

use super::caching;
use super::query::{IdFloor, Target, parse_limit};
use super::ranges::{self, Validator};
use super::reply::{self, Reply};
use super::router::Outcome;
use super::server::Conn;
use crate::ctx::Ctx;
use crate::events::event::{MAX_BODY_BYTES, parse_posted_event};
use crate::events::store::MAX_QUERY_TYPES;
use crate::events::{EventQuery, SharedEvent, StoreError};
use crate::metrics::{self, Exposition};
use crate::video::{self, Quality};

/// Default and largest page of `/api/events`.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 500;

/// The 5xx for a store failure: 507 when the disk is full, else 503.
pub fn store_error(err: &StoreError) -> Reply {
    match err {
        StoreError::Full => reply::error(507, "insufficient_storage", &err.to_string()),
        StoreError::ReadOnly(_) => reply::error(503, "store_read_only", &err.to_string()),
        StoreError::Unavailable(_) => reply::error(503, "store_unavailable", &err.to_string())
            .with_header(reply::header("Retry-After", "5")),
    }
}

/// Whether the request says its body is JSON (`application/json`, any parameters, any case).
/// A browser can send `text/plain` across origins without asking first (a "simple" request);
/// it cannot send `application/json` that way, so a JSON route that insists on it cannot be
/// driven by a cross-site form.
fn declares_json(request: &Request) -> bool {
    super::access::header(request, "Content-Type").is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`], declared as `application/json`; the error
/// reply says what was wrong. A body that stops short of its `Content-Length` is a 400 and a
/// body slower than the request's deadline a 408; either closes the connection.
fn read_json_body(request: &mut Request) -> Result<Vec<u8>, Outcome> {
    // A compressed body is not read as if it were plain (which a gzip body is not, and a plain
    // body labelled gzip would be read one way here and another by anything in between).
    if let Some(coding) = super::access::header(request, "Content-Encoding")
        .map(str::trim)
        .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
    {
        return Err(Outcome {
            reply: reply::error(
                415,
                "unsupported_media_type",
                &format!(
                    "Content-Encoding {coding:?} is not supported: send the JSON uncompressed"
                ),
            ),
            close: false,
        });
    }
    if !declares_json(request) {
        return Err(Outcome {
            reply: reply::error(
                415,
                "unsupported_media_type",
                "the body must be JSON, sent with Content-Type: application/json",
            ),
            // The unread body (at most 64 KiB) is drained before the next request is read.
            close: false,
        });
    }
    let too_large = || Outcome {
        reply: reply::error(
            413,
            "payload_too_large",
            &format!("the body must be at most {MAX_BODY_BYTES} bytes"),
        ),
        close: true,
    };
    if request.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body);
    if let Err(err) = read {
        let reply = match err.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => reply::error(
                408,
                "request_timeout",
                "the request did not arrive within request_timeout_s",
            ),
            std::io::ErrorKind::UnexpectedEof => reply::error(
                400,
                "bad_request",
                "the body is shorter than its Content-Length",
            ),
            _ => reply::error(400, "bad_request", "the request body could not be read"),
        };
        return Err(Outcome { reply, close: true });
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(body)
}

fn event_reply(status: u16, event: &SharedEvent) -> Reply {
    reply::json_text(status, event.json.clone())
}

pub fn status(ctx: &Ctx) -> Reply {
    reply::json(200, &ctx.status.sample())
}

pub fn list_events(target: &Target, ctx: &Ctx) -> Reply {
    let parsed = (|| -> Result<EventQuery, String> {
        let limit = match target.get("limit") {
            None => DEFAULT_LIMIT,
            Some(text) => parse_limit(text, MAX_LIMIT)?,
        };
        Ok(EventQuery {
            limit,
            before: target.get_event_id("before", IdFloor::One)?,
            after: target.get_event_id("after", IdFloor::ZeroMeansStart)?,
            event_types: type_filter(target)?,
        })
    })();
    let query = match parsed {
        Ok(query) => query,
        Err(message) => return reply::error(400, "bad_request", &message),
    };
    match ctx.events.reader().query(&query) {
        Ok(events) => {
            let list: Vec<Value> = events.iter().map(|e| e.to_json()).collect();
            reply::json(200, &json!({ "events": list }))
        }
        Err(err) => store_error(&err),
    }
}

/// `type=T` as the contract spells it, or `types=a,b` as the event stream does (a comma list
/// in either): a client that filters the stream with `types` and lists with the same word
/// must not get every type without a word. Both with different lists is a 400, as is a list
/// naming no type or more than [`MAX_QUERY_TYPES`].
fn type_filter(target: &Target) -> Result<Vec<String>, String> {
    let (key, list) = match (target.get("type"), target.get("types")) {
        (None, None) => return Ok(Vec::new()),
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "type={a:?} and types={b:?} name different filters; send one"
            ));
        }
        (Some(list), _) => ("type", list),
        (None, Some(list)) => ("types", list),
    };
    let types = super::query::event_type_list(key, list)?;
    if types.len() > MAX_QUERY_TYPES {
        return Err(format!(
            "{key}= names {} event types; at most {MAX_QUERY_TYPES}",
            types.len()
        ));
    }
    Ok(types)
}

pub fn get_event(id: u64, ctx: &Ctx) -> Reply {
    match ctx.events.reader().get(id) {
        Ok(Some(event)) => reply::json(200, &event.to_json()),
        Ok(None) => reply::error(404, "not_found", &format!("no event {id}")),
        Err(err) => store_error(&err),
    }
}

pub fn event_snapshot(request: &Request, id: u64, ctx: &Ctx) -> Reply {
    match ctx.events.reader().snapshot(id) {
        Ok(Some(jpeg)) => {
            let tag = caching::etag(&format!("{id}-"), &jpeg);
            let validator = Validator::Strong(&tag);
            ranges::reply(request, validator, caching::IMMUTABLE, jpeg, |jpeg| {
                reply::bytes(200, "image/jpeg", jpeg)
            })
        }
        Ok(None) => reply::error(404, "not_found", &format!("event {id} has no snapshot")),
        Err(err) => store_error(&err),
    }
}

pub fn post_event(request: &mut Request, ctx: &Ctx) -> Outcome {
    let body = match read_json_body(request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    let draft = match parse_posted_event(&body) {
        Ok(draft) => draft,
        Err(invalid) => return reply::error(400, "bad_request", &invalid.0).into(),
    };
    // Motion posted without a picture gets the camera's frame of this moment.
    match ctx.events.publish(ctx.control.with_moment(draft)) {
        Ok(event) => event_reply(201, &event).into(),
        Err(err) => store_error(&err).into(),
    }
}

pub fn trigger_doorbell(ctx: &Ctx) -> Reply {
    match ctx.control.trigger_doorbell("api", Default::default()) {
        Ok(event) => event_reply(200, &event),
        Err(err) => store_error(&err),
    }
}

/// `GET /api/snapshot.jpg?quality=Q`: the newest live frame, as `Q` shows it (`source`, the
/// camera's own JPEG, when no quality is named). 503 while the camera shows no live video.
pub fn latest_snapshot(request: &Request, target: &Target, ctx: &Ctx) -> Reply {
    let quality = match target.get("quality") {
        None => Quality::Source,
        Some(text) => match Quality::parse(text) {
            Some(q) => q,
            None => {
                return reply::error(
                    400,
                    "bad_request",
                    &format!("quality={text:?} is not one of source, low, medium, high"),
                );
            }
        },
    };
    let unavailable = |message: &str| {
        reply::error(503, "no_frame", message).with_header(reply::header("Retry-After", "5"))
    };
    let Some(frame) = ctx.camera.live_frame() else {
        let status = ctx.camera.status_json();
        let why = status["error"]
            .as_str()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return unavailable(&format!(
            "the camera has no live frame (state {}){why}",
            status["state"].as_str().unwrap_or("unknown")
        ));
    };
    match ctx.video.frame_as(quality, &frame) {
        // A new picture at each request: no tag, no ranges (a resumed download would splice
        // two frames).
        Ok(frame) => ranges::reply(
            request,
            Validator::Changing,
            "no-store",
            frame.jpeg.to_vec(),
            |jpeg| {
                reply::bytes(200, "image/jpeg", jpeg)
                    .with_header(reply::header(
                        "X-Timestamp",
                        &format!("{:.6}", frame.captured_unix),
                    ))
                    .with_header(reply::header("X-Frame-Id", &frame.number.to_string()))
            },
        ),
        Err(err) => unavailable(&format!("cannot make a {quality} snapshot: {err}")),
    }
}

pub fn metrics(ctx: &Ctx) -> Reply {
    let mut exposition = Exposition::new();
    exposition
        .series(metrics::SERIES, &ctx.metrics)
        .series(video::metrics::SERIES, ctx.video.metrics());
    if let Some(clips) = &ctx.clips {
        exposition.series(crate::clips::metrics::SERIES, clips);
    }
    if let Some(rss) = ctx.status.rss_bytes() {
        exposition.gauge(
            "porchlight_resident_memory_bytes",
            "Resident memory of the server process.",
            // Bytes of a process's memory are far below 2^53, where f64 is exact.
            rss as f64,
        );
    }
    let last_event_id = ctx
        .metrics
        .last_event_id
        .load(std::sync::atomic::Ordering::Relaxed);
    ctx.outbound.write_metrics(&mut exposition, last_event_id);
    let text = exposition.finish();
    reply::bytes(200, "text/plain; version=0.0.4", text.into_bytes())
        .with_header(reply::header("Cache-Control", "no-store"))
}

/// `POST /api/login {"token": T}`: checks the token and sets it as an HttpOnly cookie, so the
/// dashboard's `<img>` and `EventSource` requests carry it.
pub fn login(request: &mut Request, conn: &Conn, ctx: &Ctx) -> Outcome {
    let body = match read_json_body(request) {
        Ok(body) => body,
        Err(outcome) => return outcome,
    };
    // The one route open without a token: its JSON goes through the same depth check as all.
    let token = match crate::json::parse_untrusted(&body) {
        Ok(Value::Object(map)) => match map.get("token") {
            Some(Value::String(t)) => t.clone(),
            _ => {
                return reply::error(400, "bad_request", "body must be {\"token\": \"...\"}")
                    .into();
            }
        },
        _ => return reply::error(400, "bad_request", "body must be {\"token\": \"...\"}").into(),
    };
    let tokens = &ctx.http.tokens;
    if tokens.is_empty() {
        return reply::json(200, &json!({"role": "admin"})).into();
    }
    match tokens.role_of(&token) {
        Some(role) => {
            let cookie = format!(
                "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000",
                super::access::TOKEN_COOKIE
            );
            reply::json(200, &json!({"role": role.name()}))
                .with_header(reply::header("Set-Cookie", &cookie))
                .into()
        }
        None => {
            let address = super::server::client_address(&conn.peer);
            super::router::auth_failed(address, &token, request.method(), "/api/login", ctx);
            reply::error(401, "unauthorized", "the token is not valid").into()
        }
    }
}

/// `GET /api/whoami`: the caller's role, so the dashboard can disable what it may not use
/// without first logging in (with no tokens configured everyone is admin). `login_required`
/// says whether tokens are configured at all, so the page knows whether to offer a token form.
pub fn whoami(request: &Request, target: &Target, ctx: &Ctx) -> Reply {
    let tokens = &ctx.http.tokens;
    match super::access::role_of(request, target, tokens) {
        Ok(role) => reply::json(
            200,
            &json!({"role": role.name(), "login_required": !tokens.is_empty()}),
        ),
        Err(denied) => denied,
    }
}
