//! Parsing JSON from clients within a fixed stack budget.
//!
//! serde_json parses nested arrays and objects recursively and stops only at 128 levels. On a
//! connection thread's small stack (`CONNECTION_STACK_BYTES`) an unoptimised build overflows
//! well before that: a 10 KB body of `[[[[…` aborted the whole server. So nesting is counted
//! first, in one flat pass, and anything deeper than any real message is refused before
//! serde_json sees it.
//!
//! An object naming the same key twice is refused too: serde_json keeps the last value, other
//! parsers the first, so `{"type": "ping", "type": "subscribe"}` would mean one thing to a proxy
//! or logger that checked it and another to us.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// `value` as one line of JSON: the same bytes as `Value`'s `Display` (`value.to_string()`,
/// `{value}` in `format!`), written by the `Vec` serializer that `serde_json::to_string` and
/// `to_vec` use everywhere else. `Display` writes through a `fmt::Formatter` adapter and
/// compiles a compact and a pretty copy of the serializer beside that one (~13 KB of the
/// binary, BENCHMARKS.md "Binary size"), and costs a `Formatter` call per piece written.
/// Serialising a `Value` (or a `Map`) cannot fail: its keys are strings, its numbers finite.
pub fn text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("JSON values always serialise")
}

/// Deepest nesting of arrays and objects accepted from a client. Events and WebSocket
/// messages need a handful of levels; this leaves room for any real `data` object.
pub const MAX_DEPTH: usize = 32;

/// Parses `bytes` as JSON, refusing nesting deeper than [`MAX_DEPTH`] and objects that name a
/// key twice. The error text says what was wrong.
pub fn parse_untrusted(bytes: &[u8]) -> Result<Value, String> {
    if nesting_exceeds(bytes, MAX_DEPTH) {
        return Err(format!(
            "JSON nested deeper than {MAX_DEPTH} levels is not accepted"
        ));
    }
    // UTF-8 first, then the text: serde_json's reader for `&str` is the one the event store
    // already uses, where `from_slice` would link a second copy of the parser for byte slices
    // (17 KB) only to check the same UTF-8 string by string.
    match std::str::from_utf8(bytes) {
        Ok(text) => unique_keys_from_str(text).map_err(|e| e.to_string()),
        Err(e) => Err(format!(
            "JSON text must be UTF-8; byte {} is not",
            e.valid_up_to()
        )),
    }
}

/// `serde_json::from_str::<Value>(text)` (the same reader, so no second parser is linked),
/// refusing an object's second use of a key.
fn unique_keys_from_str(text: &str) -> serde_json::Result<Value> {
    let mut parser = serde_json::Deserializer::from_str(text);
    let value = UniqueKeys.deserialize(&mut parser)?;
    parser.end()?;
    Ok(value)
}

/// Builds a [`Value`] as serde_json does, but fails on an object's second use of a key.
/// Recursion is bounded by the [`MAX_DEPTH`] check that runs first.
#[derive(Clone, Copy)]
struct UniqueKeys;

impl<'de> DeserializeSeed<'de> for UniqueKeys {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // serde_json's parser yields only finite floats; anything else would be null, as
        // serde_json's own Value makes it.
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Follows a JSON text byte by byte to tell which bytes belong to a string literal, so the
/// scanners below (which look at the text before or beside the parser) skip brackets and
/// digits inside strings.
#[derive(Default)]
struct Strings {
    inside: bool,
    escaped: bool,
}

impl Strings {
    /// Takes the next byte; whether it is part of a string literal (its quotes included).
    fn holds(&mut self, b: u8) -> bool {
        if self.inside {
            match (self.escaped, b) {
                (true, _) => self.escaped = false,
                (false, b'\\') => self.escaped = true,
                (false, b'"') => self.inside = false,
                _ => {}
            }
            return true;
        }
        self.inside = b == b'"';
        self.inside
    }
}

/// Whether arrays/objects in `bytes` nest deeper than `max` (brackets inside strings do not
/// count). Malformed input is left for the parser to reject.
fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut strings = Strings::default();
    for &b in bytes {
        if strings.holds(b) {
            continue;
        }
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The first integer literal of the JSON text `bytes` (outside strings) that fits neither `i64` nor `u64`,
/// which serde_json turns into the nearest float without a word: a posted
/// `{"badge": 123456789012345678901234567890}` would be stored as `1.2345678901234568e+29`.
/// Data the server keeps must be what the producer sent, so such a body is refused instead
/// (its producer can send the number as a string). Fractions and exponents are floats by
/// their writer's choice and are not looked at.
pub fn integer_beyond_64_bits(bytes: &[u8]) -> Option<&str> {
    let mut strings = Strings::default();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if strings.holds(b) {
            i += 1;
            continue;
        }
        if b == b'-' || b.is_ascii_digit() {
            let start = i;
            while i < bytes.len()
                && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
            {
                i += 1;
            }
            // Only ASCII digits and signs, so always UTF-8.
            let number = std::str::from_utf8(&bytes[start..i]).ok()?;
            let integer = !number.contains(['.', 'e', 'E']);
            if integer && number.parse::<i64>().is_err() && number.parse::<u64>().is_err() {
                return Some(number);
            }
            continue;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_beyond_64_bits_are_found_outside_strings_only() {
        assert_eq!(
            integer_beyond_64_bits(br#"{"a": 18446744073709551615, "b": -9223372036854775808}"#),
            None
        );
        assert_eq!(
            integer_beyond_64_bits(br#"{"a": 1.8446744073709551616e19, "b": 1e400}"#),
            None
        );
        assert_eq!(
            integer_beyond_64_bits(br#"{"s": "18446744073709551616 \" 99999999999999999999"}"#),
            None
        );
        assert_eq!(
            integer_beyond_64_bits(br#"{"a": [1, 18446744073709551616]}"#),
            Some("18446744073709551616")
        );
        assert_eq!(
            integer_beyond_64_bits(br#"{"a":-9223372036854775809}"#),
            Some("-9223372036854775809")
        );
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn accepts_up_to_the_limit_and_refuses_deeper() {
        assert!(parse_untrusted(nested(MAX_DEPTH).as_bytes()).is_ok());
        let err = parse_untrusted(nested(MAX_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(err.contains("nested deeper"), "{err}");
        assert!(parse_untrusted("[".repeat(100_000).as_bytes()).is_err());
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        let text = format!(r#"{{"a": "{}", "b": "\"[[[\\"}}"#, "[".repeat(1000));
        assert!(parse_untrusted(text.as_bytes()).is_ok());
    }

    const BODIES: &[&[u8]] = &[
        br#"{"event_type": "doorbell_pressed", "data": {"note": "caf\u00e9 \" ok", "n": [1, 2.5e3, -0, true, false, null]}}"#,
        b"{\"a\":\n [\"x\\\"y\", \"\\u12\", \"tab\\tz\\n\"]\n, \"b\": 1}",
        br#"{"k" "v"}"#,
        br#"[1,]"#,
        br#"{"s": "unterminated"#,
        br#""\uD800""#,
        b"  nul",
        "{\"\u{e9}\": \"\u{fc}\u{1F600}\"}".as_bytes(),
        b"",
    ];

    #[test]
    fn utf8_bodies_read_as_serde_json_reads_them_and_others_are_refused_naming_the_byte() {
        for body in BODIES {
            let expected = serde_json::from_slice::<Value>(body).map_err(|e| e.to_string());
            assert_eq!(parse_untrusted(body), expected, "{body:?}");
        }
        for (body, at) in [
            (&b"\x80"[..], 0),
            (b"{\"a\": \"caf\xc3\"}", 10),
            (b"{\"\xff\": 1}", 2),
            (b"[1, 2, \xed\xa0\x80]", 7),
        ] {
            assert_eq!(
                parse_untrusted(body),
                Err(format!("JSON text must be UTF-8; byte {at} is not")),
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_key_named_twice_is_refused_at_any_depth() {
        let err = parse_untrusted(br#"{"type": "ping", "type": "subscribe"}"#).unwrap_err();
        assert!(err.contains("\"type\" appears twice"), "{err}");
        assert!(parse_untrusted(br#"{"a": [{"k": 1, "k": 1}]}"#).is_err());
        // The same key in sibling objects is fine, and values come out as serde_json's own.
        let text =
            r#"{"a": {"k": 1}, "b": [{"k": -2}, {"k": 2.5}], "c": null, "d": "\u00e9", "e": true}"#;
        let value = parse_untrusted(text.as_bytes()).unwrap();
        assert_eq!(value, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(
            value.to_string(),
            r#"{"a":{"k":1},"b":[{"k":-2},{"k":2.5}],"c":null,"d":"é","e":true}"#
        );
        assert!(parse_untrusted(b"{} {}").is_err());
        assert!(parse_untrusted(b" [1, 2] ").is_ok());
    }

    #[test]
    fn ordinary_errors_are_serde_jsons() {
        assert!(parse_untrusted(b"{\"a\": }").is_err());
        assert_eq!(parse_untrusted(b"{\"a\": [1]}").unwrap()["a"][0], 1);
    }
}
