//! The WebSocket opening handshake (RFC 6455 §4.2.1), checked in full before the connection is
//! upgraded, so that a request that is not a WebSocket handshake gets a plain HTTP error with
//! the contract's JSON body instead of a half-open upgrade.

use super::super::reply::{self, Reply};

/// The only protocol version there is (RFC 6455).
pub const VERSION: &str = "13";

/// The handshake headers of a request, as sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Opening<'a> {
    pub upgrade: Option<&'a str>,
    pub connection: Option<&'a str>,
    pub version: Option<&'a str>,
    pub key: Option<&'a str>,
}

/// Whether the comma-separated header `value` holds `token` (case-insensitive).
fn lists(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// A `Sec-WebSocket-Key` is 16 random bytes in base64: 24 characters ending in `==`.
fn valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The `Sec-WebSocket-Accept` value that completes this handshake, or the HTTP error to answer:
/// 426 when the request is not a WebSocket upgrade or asks for another version, 400 when its
/// key is malformed.
pub fn accept_key(opening: &Opening<'_>) -> Result<String, Reply> {
    if !lists(opening.upgrade, "websocket") || !lists(opening.connection, "upgrade") {
        return Err(reply::error(
            426,
            "upgrade_required",
            "/ws is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if opening.version.map(str::trim) != Some(VERSION) {
        return Err(reply::error(
            426,
            "unsupported_version",
            &format!(
                "Sec-WebSocket-Version must be {VERSION}, not {:?}",
                opening.version.unwrap_or("")
            ),
        )
        .with_header(reply::header("Sec-WebSocket-Version", VERSION)));
    }
    match opening.key.map(str::trim) {
        Some(key) if valid_key(key) => Ok(derive_accept(key)),
        _ => Err(reply::error(
            400,
            "bad_request",
            "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters)",
        )),
    }
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2): the base64 of the SHA-1 of the key
/// followed by the protocol's GUID. Ours rather than tungstenite's `derive_accept_key`: that one
/// comes with tungstenite's `handshake` feature, whose HTTP types and client handshake are 24 KB
/// of the binary a server upgrading from tiny_http never uses. Public for the benchmark's
/// client, which checks the server's answer with it.
pub fn derive_accept(key: &str) -> String {
    use sha1::{Digest, Sha1};
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(GUID);
    data_encoding::BASE64.encode(&sha1.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: Opening<'static> = Opening {
        upgrade: Some("websocket"),
        connection: Some("Upgrade"),
        version: Some("13"),
        key: Some("dGhlIHNhbXBsZSBub25jZQ=="),
    };

    #[test]
    fn accepts_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(&GOOD).ok().as_deref(),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        let listed = Opening {
            upgrade: Some("WebSocket"),
            connection: Some("keep-alive, Upgrade"),
            ..GOOD
        };
        assert!(accept_key(&listed).is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_version_13_handshake() {
        let status = |opening: Opening<'_>| match accept_key(&opening) {
            Ok(_) => 101,
            Err(reply) => reply.status_code().0,
        };
        assert_eq!(status(Opening::default()), 426);
        assert_eq!(
            status(Opening {
                upgrade: None,
                ..GOOD
            }),
            426
        );
        assert_eq!(
            status(Opening {
                connection: Some("keep-alive"),
                ..GOOD
            }),
            426
        );
        assert_eq!(
            status(Opening {
                upgrade: Some("h2c"),
                ..GOOD
            }),
            426
        );
        assert_eq!(
            status(Opening {
                version: Some("8"),
                ..GOOD
            }),
            426
        );
        assert_eq!(
            status(Opening {
                version: None,
                ..GOOD
            }),
            426
        );
        assert_eq!(status(Opening { key: None, ..GOOD }), 400);
        assert_eq!(
            status(Opening {
                key: Some("short=="),
                ..GOOD
            }),
            400
        );
        assert_eq!(
            status(Opening {
                key: Some("dGhlIHNhbXBsZSBub25j!Q=="),
                ..GOOD
            }),
            400
        );
    }
}
