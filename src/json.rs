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
    match std::str::from_utf8(bytes) {
        Ok(text) => unique_keys_from_str(text).map_err(|e| e.to_string()),
        Err(_) => Err(not_utf8_error(bytes)),
    }
}

/// What `serde_json::from_slice(bytes)` says of `bytes` that are not UTF-8, without linking
/// `from_slice`.
///
/// Why: every client body goes through [`parse_untrusted`], and the event store reads its rows
/// with `from_str`; a `from_slice` beside it was a second copy of serde_json's parser for byte
/// slices (17 KB of code). `from_str` after `str::from_utf8` is the same parse of the same text
/// (it only skips the UTF-8 check of each string, which `from_utf8` did for the whole body) and
/// the same error for everything that is UTF-8. For the rest, this reproduces `from_slice`'s
/// error exactly, so a client sees the same bytes either way (`json::tests` compares the two on
/// many malformed bodies).
///
/// How: each byte of an invalid sequence is replaced by `x`, which serde_json treats as it
/// treats such a byte wherever it stands (no token, escape or hex digit starts with either),
/// so the text is UTF-8 with every byte where it was. Outside a string such a byte is a syntax
/// error, which parsing the replaced text reports at the same place. Inside one, `from_slice`
/// reads the string to its closing quote and then refuses it as "invalid unicode code point",
/// unless the parse failed before that quote.
#[cold]
fn not_utf8_error(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    let mut invalid = Vec::new();
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        invalid.push(text.len()..text.len() + chunk.invalid().len());
        text.extend(std::iter::repeat_n('x', chunk.invalid().len()));
    }
    let parsed = serde_json::from_str::<Value>(&text);
    let Some((open, close, first_invalid)) = first_string_not_utf8(bytes, &invalid) else {
        return parsed.err().map(|e| e.to_string()).unwrap_or_default();
    };
    // serde_json's position of the byte after the closing quote: where it stands when it
    // checks the string.
    let after = close + 1;
    let line_start = bytes[..after]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    let line = 1 + bytes[..line_start].iter().filter(|&&b| b == b'\n').count();
    let column = after - line_start;
    // The string read alone, as the parse reads it once there.
    let decoded = match serde_json::from_str::<String>(&text[open..=close]) {
        Ok(decoded) => decoded,
        // The parse fails inside the string (an escape), before from_slice would check it.
        Err(e) => return parsed.err().unwrap_or(e).to_string(),
    };
    // A failure before the string is that failure; one after it never comes, as from_slice
    // stops at the string.
    if let Err(e) = &parsed
        && (e.line(), e.column()) < (line, column)
    {
        return e.to_string();
    }
    // Like serde_json, point back from the quote by the string's bytes from the first invalid
    // one on (counted after escapes are decoded).
    let valid_prefix =
        serde_json::from_str::<String>(&format!("\"{}\"", &text[open + 1..first_invalid]))
            .map_or(0, |prefix| prefix.len());
    let from_invalid = decoded.len().saturating_sub(valid_prefix);
    format!(
        "invalid unicode code point at line {line} column {}",
        column.saturating_sub(from_invalid)
    )
}

/// The first string in `bytes` that holds a byte of an `invalid` range: the index of its
/// opening and closing quotes and of that byte. An unterminated string does not count: the
/// parse stops at its end, before any UTF-8 check. Strings are read as serde_json reads them:
/// a backslash takes the byte after it, and `\u` the four after that whatever they are.
fn first_string_not_utf8(
    bytes: &[u8],
    invalid: &[std::ops::Range<usize>],
) -> Option<(usize, usize, usize)> {
    let is_invalid = |at: usize| invalid.iter().any(|range| range.contains(&at));
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'"' {
            at += 1;
            continue;
        }
        let open = at;
        let mut first_invalid = None;
        at += 1;
        while at < bytes.len() && bytes[at] != b'"' {
            let taken = match bytes[at..] {
                [b'\\', b'u', ..] => 6,
                [b'\\', ..] => 2,
                _ => 1,
            };
            let end = (at + taken).min(bytes.len());
            if first_invalid.is_none() {
                first_invalid = (at..end).find(|&i| is_invalid(i));
            }
            at = end;
        }
        if at == bytes.len() {
            return None;
        }
        if let Some(bad) = first_invalid {
            return Some((open, at, bad));
        }
        at += 1;
    }
    None
}

/// `serde_json::from_str::<Value>(text)` (the same reader, so no second parser is linked; see
/// [`not_utf8_error`]), refusing an object's second use of a key.
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

/// Whether arrays/objects in `bytes` nest deeper than `max` (brackets inside strings do not
/// count). Malformed input is left for the parser to reject.
fn nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// `parse_untrusted` against `serde_json::from_slice` (what it used to call): the same
    /// value or the same error text.
    fn same_as_from_slice(bytes: &[u8]) {
        if nesting_exceeds(bytes, MAX_DEPTH) {
            return;
        }
        let expected = serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string());
        assert_eq!(
            parse_untrusted(bytes),
            expected,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }

    const BODIES: &[&[u8]] = &[
        br#"{"event_type": "doorbell_pressed", "data": {"note": "caf\u00e9 \" ok", "n": [1, 2.5e3, -0, true, false, null]}}"#,
        b"{\"a\":\n [\"x\\\"y\", \"\\u12\", \"tab\\tz\\n\"]\n, \"b\": 1}",
        br#"{"k" "v"}"#,
        br#"[1,]"#,
        br#"{"s": "unterminated"#,
        br#""\uD800""#,
        br#""\ud83d\ude00" "#,
        b"  nul",
        b"-",
        b"1e",
        br#"["a\qb"]"#,
        "{\"\u{e9}\": \"\u{fc}\u{1F600}\"}".as_bytes(),
        b"",
    ];

    #[test]
    fn errors_are_from_slices_with_bytes_that_are_not_utf8_anywhere() {
        let inserts: &[&[u8]] = &[
            b"\x80",
            b"\xff",
            b"\xc3",
            b"\xe2\x82",
            b"\xc3\xa9",
            b"\xed\xa0\x80",
            b"\xf0\x9f\x98",
            b"\x00",
            b"\n",
            b"\\",
        ];
        for body in BODIES {
            same_as_from_slice(body);
            for at in 0..=body.len() {
                for insert in inserts {
                    let mut mutated = body[..at].to_vec();
                    mutated.extend_from_slice(insert);
                    mutated.extend_from_slice(&body[at..]);
                    same_as_from_slice(&mutated);
                }
            }
        }
    }

    #[test]
    fn errors_are_from_slices_for_random_mutations() {
        const PALETTE: &[u8] = b"\x80\xbf\xc3\xe2\xf0\xff\"\\\nu0e{}[]:, x-.";
        // xorshift64: the same inputs on every run.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % below as u64).unwrap()
        };
        for _ in 0..20_000 {
            let mut bytes = BODIES[next(BODIES.len())].to_vec();
            for _ in 0..1 + next(4) {
                let byte = PALETTE[next(PALETTE.len())];
                let at = next(bytes.len() + 1);
                match next(3) {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, byte),
                }
            }
            same_as_from_slice(&bytes);
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
