//! The request target: path and decoded query parameters.

/// A request target split into its path (normalised: see [`normalize_path`]) and `key=value`
/// parameters (percent-decoded).
#[derive(Debug, Default, PartialEq)]
pub struct Target {
    /// The path as every route sees it, normalised (RFC 3986 §6.2.2): `/api/event%73` is
    /// `/api/events`, while `%2F` stays `%2F`, inside its segment.
    pub path: String,
    params: Vec<(String, String)>,
    /// Why the query is malformed (a bad escape), kept for the router to answer 400 once the
    /// method has been judged: a wrong method on a known path is a 405 whatever its query.
    query_error: Option<String>,
}

impl Target {
    /// The target of a request: `Err` (for a 400) when its path holds a malformed escape, so
    /// no route can be chosen for it.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let path = normalize_path(path)?;
        let mut query_error = None;
        let params = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                if query_error.is_none() {
                    query_error = malformed_escape(pair)
                        .map(|at| format!("the query holds a malformed percent-escape: {at:?}"));
                }
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode_component(k, true), decode_component(v, true))
            })
            .collect();
        Ok(Target {
            path,
            params,
            query_error,
        })
    }

    /// Why the query is malformed, if it is (a `%` not followed by two hex digits).
    pub fn query_error(&self) -> Option<&str> {
        self.query_error.as_deref()
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

/// RFC 3986 §2.3: the characters a URI may carry percent-encoded or not, meaning the same.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The first malformed percent-escape in `text` (a `%` not followed by two hex digits), as
/// written, up to three characters.
fn malformed_escape(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let at = bytes.iter().enumerate().position(|(i, b)| {
        *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })?;
    text.get(at..).map(|rest| rest.get(..3).unwrap_or(rest))
}

/// A request path as the routes must see it (RFC 3986 §6.2.2.1, §6.2.2.2): a percent-encoded
/// unreserved character is that character (`/api/event%73` is `/api/events`, `%7E` is `~`),
/// and every other escape keeps its encoding with upper-case hex (`%2f` is `%2F`). So an
/// escaped `/` never becomes a separator, and an escape of anything else reserved (`?`, `#`,
/// `%`, a space, a byte above ASCII) never becomes syntax: they stay inside their segment,
/// for the route to refuse as a bad id or name. Dot segments are not removed (§6.2.2.3):
/// `..`, literal or escaped, is an ordinary segment here that no route matches and the static
/// files refuse, so nothing is ever resolved against a parent. A `%` not followed by two hex
/// digits is malformed: `Err`, answered 400.
pub fn normalize_path(path: &str) -> Result<String, String> {
    if let Some(bad) = malformed_escape(path) {
        return Err(format!(
            "the path holds a malformed percent-escape: {bad:?} (a % must be followed by two \
             hex digits)"
        ));
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(b) if unreserved(b) => out.push(char::from(b)),
            Some(b) => out.push_str(&format!("%{b:02X}")),
            None => {
                // Not an escape: one whole character (tiny_http refuses non-ASCII targets, but
                // this stays correct for any text).
                let ch = path[i..].chars().next().unwrap_or('\u{FFFD}');
                out.push(ch);
                i += ch.len_utf8();
                continue;
            }
        }
        i += 3;
    }
    Ok(out)
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
        let t = Target::parse("/api/events?limit=5&type=door%5Fbell&x=a+b&flag").unwrap();
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
            Target::parse("/a?limit=5&limit=abc")
                .unwrap()
                .conflicting_param(),
            Some("limit")
        );
        assert_eq!(
            Target::parse("/a?x=1&t=a&t=%61&t=b")
                .unwrap()
                .conflicting_param(),
            Some("t")
        );
        assert_eq!(
            Target::parse("/a?t=a&t=a&u=1").unwrap().conflicting_param(),
            None
        );
        assert_eq!(
            Target::parse("/a?t=a&u=a").unwrap().conflicting_param(),
            None
        );
        assert_eq!(Target::parse("/a").unwrap().conflicting_param(), None);
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
        let cursor = |url: &str| stream_cursor(&Target::parse(url).unwrap());
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
    fn paths_are_normalised_before_routing() {
        let norm = |p: &str| normalize_path(p);
        assert_eq!(norm("/api/event%73").as_deref(), Ok("/api/events"));
        assert_eq!(norm("/%61%70%69/%65vents").as_deref(), Ok("/api/events"));
        assert_eq!(
            norm("/api/events/%31%32/clip.mjpeg").as_deref(),
            Ok("/api/events/12/clip.mjpeg")
        );
        assert_eq!(norm("/a%2d%2E%5f%7e").as_deref(), Ok("/a-._~"));
        // Reserved and other characters keep their encoding, with upper-case hex.
        assert_eq!(norm("/api%2fevents").as_deref(), Ok("/api%2Fevents"));
        assert_eq!(norm("/a%2F..%2fb").as_deref(), Ok("/a%2F..%2Fb"));
        assert_eq!(
            norm("/a%3f%23%25%20%c3%a9").as_deref(),
            Ok("/a%3F%23%25%20%C3%A9")
        );
        // Escaped dots become dots, but stay segments: nothing here resolves them.
        assert_eq!(norm("/%2e%2E/x").as_deref(), Ok("/../x"));
        assert_eq!(norm("/").as_deref(), Ok("/"));
        assert_eq!(norm("*").as_deref(), Ok("*"));
        for bad in ["/%zz", "/a%", "/a%0", "/%0g/x", "/%%41", "/a%2", "/%g0"] {
            assert!(norm(bad).is_err(), "{bad:?}");
            assert!(Target::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_malformed_query_escape_is_kept_for_the_router() {
        let t = Target::parse("/api/status?x=%zz").unwrap();
        assert_eq!(t.path, "/api/status");
        assert!(t.query_error().is_some_and(|e| e.contains("%zz")));
        for bad in ["/a?x=%", "/a?x=1%0", "/a?%g1=2"] {
            assert!(
                Target::parse(bad).unwrap().query_error().is_some(),
                "{bad:?}"
            );
        }
        assert_eq!(Target::parse("/a?x=%41+%2f").unwrap().query_error(), None);
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
