//! porchlight patch: whether a connection carries another request after this one (RFC 9112
//! §9.3), decided once per request from its version and its `Connection` headers.
//!
//! Upstream decided it twice, differently: `ClientConnection` tested the first `Connection`
//! header for the substrings `close`, `upgrade` and `keep-alive`, and (patch 20) `raw_print`
//! parsed the tokens again to decide whether to answer `Connection: keep-alive`; the two could
//! disagree (`Connection: keep-alive, x-closed`, or `keep-alive` and `close` in two header
//! lines), and an answer then announced what the connection did not do. Now [`keeps_alive`]
//! decides it here from the request's [`ConnectionTokens`]; the `Request` keeps the result,
//! and `Request::keeps_alive_after` (that, unless the answer says `Connection: close`) is what
//! the connection follows and the answer states.

use crate::common::{HTTPVersion, Header};

/// What a request's `Connection` headers ask, read as token lists (RFC 9110 §7.6.1: every
/// `Connection` line, comma-separated, tokens case-insensitive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
}

impl ConnectionTokens {
    pub fn of(headers: &[Header]) -> ConnectionTokens {
        let mut tokens = ConnectionTokens::default();
        let listed = headers
            .iter()
            .filter(|h| h.field.equiv("Connection"))
            .flat_map(|h| h.value.as_str().split(','))
            .map(str::trim);
        for token in listed {
            if token.eq_ignore_ascii_case("close") {
                tokens.close = true;
            } else if token.eq_ignore_ascii_case("keep-alive") {
                tokens.keep_alive = true;
            } else if token.eq_ignore_ascii_case("upgrade") {
                tokens.upgrade = true;
            }
        }
        tokens
    }
}

/// Whether the connection stays open after answering a request of `version` with these
/// `Connection` tokens: never after `close`; never after `upgrade` (the request's body is then
/// the rest of the stream, so where a next request would start is unknown, unless the upgrade
/// happens, after which the connection is no longer HTTP); HTTP/1.1 by default, HTTP/1.0 only
/// when it asked for `keep-alive` (RFC 9112 Appendix C.2.2).
pub fn keeps_alive(version: &HTTPVersion, tokens: ConnectionTokens) -> bool {
    if tokens.close || tokens.upgrade {
        return false;
    }
    *version >= HTTPVersion(1, 1) || tokens.keep_alive
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn headers(values: &[&str]) -> Vec<Header> {
        values
            .iter()
            .map(|v| Header::from_str(&format!("Connection: {v}")).unwrap())
            .collect()
    }

    fn keeps(version: (u8, u8), values: &[&str]) -> bool {
        keeps_alive(&HTTPVersion::from(version), ConnectionTokens::of(&headers(values)))
    }

    #[test]
    fn http_1_1_persists_unless_a_token_says_close() {
        assert!(keeps((1, 1), &[]));
        assert!(keeps((1, 1), &["keep-alive"]));
        assert!(!keeps((1, 1), &["close"]));
        assert!(!keeps((1, 1), &["keep-alive, Close"]));
        assert!(!keeps((1, 1), &["keep-alive", "CLOSE"]));
        assert!(!keeps((1, 1), &["Upgrade"]));
        // Substrings are not tokens.
        assert!(keeps((1, 1), &["x-closed"]));
        assert!(keeps((1, 1), &["enclosed, x-upgraded"]));
    }

    #[test]
    fn http_1_0_persists_only_when_asked_and_not_closed() {
        assert!(!keeps((1, 0), &[]));
        assert!(keeps((1, 0), &["keep-alive"]));
        assert!(keeps((1, 0), &["Keep-Alive"]));
        assert!(keeps((1, 0), &["foo, keep-alive"]));
        assert!(keeps((1, 0), &["foo", "keep-alive"]));
        assert!(!keeps((1, 0), &["keep-alive", "close"]));
        assert!(!keeps((1, 0), &["keep-alives"]));
        assert!(!keeps((1, 0), &["x-keep-alive"]));
    }
}
