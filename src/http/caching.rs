//! Validators: the `ETag`s of stored bytes, and how long they may be cached. What a request's
//! conditions make of them (`If-None-Match` → 304, `If-Match`, `If-Range`, `Range`) is
//! `ranges.rs`.
//!
//! An event's snapshot never changes, so it is cached for a year as `immutable` (a dashboard
//! reloading its event list fetches no picture twice). Its tag is the event id with a digest of
//! the bytes, not the id alone: if the data dir is wiped or replaced, ids start again and a
//! cache must not take a new event's picture for an old one's. Dashboard files are revalidated
//! on every use (`no-cache`) and answered 304 while unchanged.

use crate::video::frame::digest;

/// A strong entity tag for `bytes` (with `prefix`, e.g. the event id), quoted as sent.
pub fn etag(prefix: &str, bytes: &[u8]) -> String {
    format!("\"{prefix}{:016x}\"", digest(bytes))
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
