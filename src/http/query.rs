//! The request target: path and decoded query parameters.

/// A request target split into its path and `key=value` parameters (percent-decoded).
#[derive(Debug, Default, PartialEq)]
pub struct Target {
    pub path: String,
    params: Vec<(String, String)>,
}

impl Target {
    pub fn parse(url: &str) -> Target {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let params = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_component(k, true), decode_component(v, true))
            })
            .collect();
        Target {
            path: path.to_string(),
            params,
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A numeric parameter: absent → `Ok(None)`, not a non-negative integer → `Err` with a
    /// message naming the parameter.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(text) => text
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("{key}={text:?} is not a non-negative integer")),
        }
    }
}

/// Percent-decodes; `+` is a space in query strings. Invalid escapes are kept literally, and
/// bytes that do not form UTF-8 are replaced, so nothing here can fail.
pub fn decode_component(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A streaming client's id: its own `given` id if valid, `{kind}-{connection}` if it sent none,
/// an error naming the rule if malformed. Shared by SSE, MJPEG and the WebSocket.
pub fn client_id(given: Option<&str>, kind: &str, connection: u64) -> Result<String, String> {
    match given {
        None => Ok(format!("{kind}-{connection}")),
        Some(id) if valid_client_id(id) => Ok(id.to_string()),
        Some(id) => Err(format!("client_id {id:?} must match [A-Za-z0-9_-]{{1,64}}")),
    }
}

/// `[A-Za-z0-9_-]{1,64}`: a client's own id, as the contract allows.
pub fn valid_client_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("/api/events?limit=5&type=door%5Fbell&x=a+b&flag");
        assert_eq!(t.path, "/api/events");
        assert_eq!(t.get("limit"), Some("5"));
        assert_eq!(t.get("type"), Some("door_bell"));
        assert_eq!(t.get("x"), Some("a b"));
        assert_eq!(t.get("flag"), Some(""));
        assert_eq!(t.get_u64("limit"), Ok(Some(5)));
        assert!(t.get_u64("type").is_err());
        assert_eq!(t.get_u64("missing"), Ok(None));
    }

    #[test]
    fn decoding_never_fails() {
        assert_eq!(decode_component("%2e%2E", false), "..");
        assert_eq!(decode_component("%", false), "%");
        assert_eq!(decode_component("%4", false), "%4");
        assert_eq!(decode_component("%zz", false), "%zz");
        assert_eq!(decode_component("%ff", false), "\u{FFFD}");
        assert_eq!(decode_component("a+b", false), "a+b");
    }

    #[test]
    fn client_ids() {
        assert!(valid_client_id("phone-1_A"));
        assert!(!valid_client_id(""));
        assert!(!valid_client_id("a b"));
        assert!(!valid_client_id(&"a".repeat(65)));
    }
}
