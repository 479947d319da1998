//! Parsing JSON from clients within a fixed stack budget.
//!
//! serde_json parses nested arrays and objects recursively and stops only at 128 levels. On a
//! connection thread's small stack (`CONNECTION_STACK_BYTES`) an unoptimised build overflows
//! well before that: a 10 KB body of `[[[[…` aborted the whole server. So nesting is counted
//! first, in one flat pass, and anything deeper than any real message is refused before
//! serde_json sees it.

use serde_json::Value;

/// Deepest nesting of arrays and objects accepted from a client. Events and WebSocket
/// messages need a handful of levels; this leaves room for any real `data` object.
pub const MAX_DEPTH: usize = 32;

/// Parses `bytes` as JSON, refusing nesting deeper than [`MAX_DEPTH`]. The error text says what
/// was wrong.
pub fn parse_untrusted(bytes: &[u8]) -> Result<Value, String> {
    if nesting_exceeds(bytes, MAX_DEPTH) {
        return Err(format!(
            "JSON nested deeper than {MAX_DEPTH} levels is not accepted"
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
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

    #[test]
    fn ordinary_errors_are_serde_jsons() {
        assert!(parse_untrusted(b"{\"a\": }").is_err());
        assert_eq!(parse_untrusted(b"{\"a\": [1]}").unwrap()["a"][0], 1);
    }
}
