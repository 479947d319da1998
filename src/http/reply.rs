//! Building responses: JSON bodies, the contract's error shape, and the headers every answer
//! carries.

use std::io::Cursor;

use serde_json::{Value, json};
use tiny_http::{Header, Response};

pub type Reply = Response<Cursor<Vec<u8>>>;

/// A header from text we wrote. Not inlined: ~45 call sites each had their own copy of the
/// check and its panic path, for a call per header of a response.
#[inline(never)]
pub fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("header names and values are ASCII")
}

/// A body with a content type; API answers are never cached and never sniffed.
pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
    Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("X-Content-Type-Options", "nosniff"))
}

pub fn json_text(status: u16, body: String) -> Reply {
    bytes(status, "application/json", body.into_bytes())
        .with_header(header("Cache-Control", "no-store"))
}

pub fn json(status: u16, value: &Value) -> Reply {
    json_text(status, crate::json::text(value))
}

/// `{"error": code, "message": text}` with `status`.
pub fn error(status: u16, code: &str, message: &str) -> Reply {
    json(status, &json!({"error": code, "message": message}))
}

/// 503 with `Retry-After`, for a full connection limit.
pub fn over_limit(what: &str, limit: usize) -> Reply {
    error(
        503,
        "too_many_clients",
        &format!("{what} limit of {limit} reached; retry later"),
    )
    .with_header(header("Retry-After", "5"))
}

/// 503 for a stream the server cannot give the file descriptors it needs.
pub fn out_of_descriptors() -> Reply {
    error(503, "unavailable", "the server is out of file descriptors")
        .with_header(header("Retry-After", "5"))
}
