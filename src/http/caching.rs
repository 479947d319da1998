//! Validators and conditional requests: `ETag`, `If-None-Match` and 304.
//!
//! An event's snapshot never changes, so it is cached for a year as `immutable` (a dashboard
//! reloading its event list fetches no picture twice). Its tag is the event id with a digest of
//! the bytes, not the id alone: if the data dir is wiped or replaced, ids start again and a
//! cache must not take a new event's picture for an old one's. Dashboard files are revalidated
//! on every use (`no-cache`) and answered 304 while unchanged.

use tiny_http::{Request, Response};

use super::access::header;
use super::reply::{self, Reply};
use crate::video::frame::digest;

/// A strong entity tag for `bytes` (with `prefix`, e.g. the event id), quoted as sent.
pub fn etag(prefix: &str, bytes: &[u8]) -> String {
    format!("\"{prefix}{:016x}\"", digest(bytes))
}

/// Whether `If-None-Match` names `etag` (or is `*`). Weak comparison, as RFC 9110 asks for
/// `If-None-Match`: `W/"x"` matches `"x"`.
pub fn not_modified(request: &Request, etag: &str) -> bool {
    let Some(list) = header(request, "If-None-Match") else {
        return false;
    };
    list.split(',').map(str::trim).any(|candidate| {
        candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
    })
}

/// The answer to a GET of `body` tagged `etag`: 304 when the client has it, else the body
/// made into a reply by `full`; `cache_control` goes on both.
pub fn conditional(
    request: &Request,
    etag: &str,
    cache_control: &str,
    body: Vec<u8>,
    full: impl FnOnce(Vec<u8>) -> Reply,
) -> Reply {
    if not_modified(request, etag) {
        return unchanged(etag, cache_control, body.len());
    }
    full(body)
        .with_header(reply::header("ETag", etag))
        .with_header(reply::header("Cache-Control", cache_control))
}

/// A 304: no body, the validators again, and the length of the representation the client
/// already has (RFC 9110 allows only that `Content-Length` on a 304; tiny_http would say 0).
fn unchanged(etag: &str, cache_control: &str, length: usize) -> Reply {
    Response::from_data(Vec::new())
        .with_status_code(304)
        .with_header(reply::header("ETag", etag))
        .with_header(reply::header("Cache-Control", cache_control))
        .with_header(reply::header("Content-Length", &length.to_string()))
}

/// How an event snapshot is cached: privately (it is behind a token), for a year, never
/// revalidated while fresh.
pub const IMMUTABLE: &str = "private, max-age=31536000, immutable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_bytes() {
        assert_eq!(etag("7-", b"abc"), etag("7-", b"abc"));
        assert_ne!(etag("7-", b"abc"), etag("7-", b"abd"));
        assert_ne!(etag("7-", b"abc"), etag("8-", b"abc"));
        let tag = etag("", b"x");
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 18);
    }
}
