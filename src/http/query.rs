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

    /// How many `key=value` parameters the query has.
    pub fn param_count(&self) -> usize {
        self.params.len()
    }

    /// A parameter given more than once with different values (`limit=5&limit=abc`), which
    /// would otherwise mean whichever one a reader happens to take: the request is refused.
    /// The same value repeated is harmless and allowed.
    pub fn conflicting_param(&self) -> Option<&str> {
        self.params
            .iter()
            .enumerate()
            .find_map(|(i, (key, value))| {
                self.params[..i]
                    .iter()
                    .any(|(k, v)| k == key && v != value)
                    .then_some(key.as_str())
            })
    }

    /// The value of `key` (see [`Target::conflicting_param`] for one given twice).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An event id parameter (see [`parse_event_id`]): absent → `Ok(None)`, else the id or an
    /// error naming the parameter.
    pub fn get_event_id(&self, key: &str, from: IdFloor) -> Result<Option<u64>, String> {
        self.get(key)
            .map(|text| parse_event_id(text, from).map_err(|why| format!("{key}={text:?} {why}")))
            .transpose()
    }
}

/// A stream's resume cursor from the URL: `last_event_id=N`, or `after=N` as `/api/events`
/// spells the same "events after N" (a client paging the list and then following the stream
/// uses one word for both). Naming both with different ids is a 400, never a guess.
pub fn stream_cursor(target: &Target) -> Result<Option<u64>, String> {
    let last_event_id = target.get_event_id("last_event_id", IdFloor::ZeroMeansStart)?;
    let after = target.get_event_id("after", IdFloor::ZeroMeansStart)?;
    match (last_event_id, after) {
        (Some(a), Some(b)) if a != b => Err(format!(
            "last_event_id={a} and after={b} name different cursors; send one"
        )),
        (cursor, other) => Ok(cursor.or(other)),
    }
}

/// Largest event id: SQLite's integers are signed 64-bit, so ids are 1..=2^63-1.
pub const MAX_EVENT_ID: u64 = i64::MAX.unsigned_abs();

/// Whether an id parameter may be 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IdFloor {
    /// A cursor (`last_event_id`, `after`): 0 means "from the start".
    ZeroMeansStart,
    /// A bound or an event (`before`, `/api/events/{id}`): ids start at 1.
    One,
}

/// An event-type filter, `key=a,b` (`types` on the streams, `type`/`types` on the list): the
/// names in order, repeats dropped, each checked as an event type; a list naming none is an
/// error, since it would silently match nothing.
pub fn event_type_list(key: &str, list: &str) -> Result<Vec<String>, String> {
    let mut types: Vec<String> = Vec::new();
    for name in list.split(',').filter(|t| !t.is_empty()) {
        if !crate::events::event::valid_event_type(name) {
            return Err(format!("{key}: {name:?} must match [a-z0-9_]{{1,64}}"));
        }
        if !types.iter().any(|t| t == name) {
            types.push(name.to_string());
        }
    }
    if types.is_empty() {
        return Err(format!(
            "{key}={list:?} names no event type: leave {key} out for every type"
        ));
    }
    Ok(types)
}

/// An event id as a client writes it: decimal digits only (no sign, space, hex or exponent),
/// in 1..=2^63-1 (0 allowed for a cursor). Every id a client sends goes through here, so no
/// larger number ever reaches the store, where it would wrap negative. The error says why, for
/// the caller to put after the parameter's name.
pub fn parse_event_id(text: &str, floor: IdFloor) -> Result<u64, String> {
    let lowest = match floor {
        IdFloor::ZeroMeansStart => 0,
        IdFloor::One => 1,
    };
    let refuse = || format!("must be an event id, an integer from {lowest} to {MAX_EVENT_ID}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse());
    }
    match text.parse::<u64>() {
        Ok(id) if (lowest..=MAX_EVENT_ID).contains(&id) => Ok(id),
        _ => Err(refuse()),
    }
}

/// `limit=`: digits only; 1 to `max`, larger is `max` (however many digits), 0 is refused.
pub fn parse_limit(text: &str, max: u64) -> Result<u64, String> {
    let refuse = || format!("limit={text:?} must be an integer from 1 to {max}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse());
    }
    match text.parse::<u64>() {
        Ok(0) => Err(refuse()),
        Ok(n) => Ok(n.min(max)),
        // More digits than a u64 holds: still just "larger than max".
        Err(_) => Ok(max),
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
        assert_eq!(t.get_event_id("limit", IdFloor::One), Ok(Some(5)));
        assert!(t.get_event_id("type", IdFloor::One).is_err());
        assert_eq!(t.get_event_id("missing", IdFloor::One), Ok(None));
    }

    #[test]
    fn a_parameter_repeated_with_another_value_is_a_conflict() {
        assert_eq!(
            Target::parse("/a?limit=5&limit=abc").conflicting_param(),
            Some("limit")
        );
        assert_eq!(
            Target::parse("/a?x=1&t=a&t=%61&t=b").conflicting_param(),
            Some("t")
        );
        assert_eq!(Target::parse("/a?t=a&t=a&u=1").conflicting_param(), None);
        assert_eq!(Target::parse("/a?t=a&u=a").conflicting_param(), None);
        assert_eq!(Target::parse("/a").conflicting_param(), None);
    }

    #[test]
    fn event_ids_are_bounded_decimal_integers() {
        use IdFloor::*;
        assert_eq!(parse_event_id("1", One), Ok(1));
        assert_eq!(parse_event_id("0", ZeroMeansStart), Ok(0));
        assert_eq!(parse_event_id("007", One), Ok(7));
        assert_eq!(
            parse_event_id("9223372036854775807", One),
            Ok(9_223_372_036_854_775_807)
        );
        for bad in [
            "0",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "1e3",
            "0x10",
            "",
            "one",
            "١",
        ] {
            assert!(parse_event_id(bad, One).is_err(), "{bad:?}");
        }
        assert!(parse_event_id("-0", ZeroMeansStart).is_err());
        let message = parse_event_id("18446744073709551615", ZeroMeansStart).unwrap_err();
        assert!(message.contains("9223372036854775807"), "{message}");
    }

    #[test]
    fn an_event_type_list_is_checked_deduplicated_and_never_empty() {
        assert_eq!(
            event_type_list("types", "a,b,,a"),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert!(event_type_list("types", ",,").is_err());
        assert!(event_type_list("type", "a,B").is_err());
    }

    #[test]
    fn a_stream_cursor_is_last_event_id_or_after_never_two_different_ones() {
        let cursor = |url: &str| stream_cursor(&Target::parse(url));
        assert_eq!(cursor("/s"), Ok(None));
        assert_eq!(cursor("/s?last_event_id=4"), Ok(Some(4)));
        assert_eq!(cursor("/s?after=4"), Ok(Some(4)));
        assert_eq!(cursor("/s?after=0"), Ok(Some(0)));
        assert_eq!(cursor("/s?after=4&last_event_id=4"), Ok(Some(4)));
        assert!(cursor("/s?after=4&last_event_id=5").is_err());
        assert!(cursor("/s?after=-1").is_err());
    }

    #[test]
    fn limits_are_capped_not_wrapped() {
        assert_eq!(parse_limit("5", 500), Ok(5));
        assert_eq!(parse_limit("500", 500), Ok(500));
        assert_eq!(parse_limit("501", 500), Ok(500));
        assert_eq!(parse_limit("18446744073709551616", 500), Ok(500));
        for bad in ["0", "-1", "", "1.5", "+3", "ten", "1e2"] {
            assert!(parse_limit(bad, 500).is_err(), "{bad:?}");
        }
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
