//! Conditional and range requests on a body of known length (RFC 9110 §13–14): every route
//! that answers with stored bytes — an event's snapshot, a dashboard file, a clip download —
//! asks [`plan`] what to send, so they all judge `If-Match`, `If-None-Match`, `If-Range` and
//! `Range` the same way.
//!
//! Ranges are honoured only on bytes that cannot change under their tag ([`Validator::Strong`]):
//! a client that resumes a download splices what it has with what it gets now, so a body
//! that may differ from one request to the next (a clip still recording, whose header is
//! rewritten when it ends; the live frame) gets no `Accept-Ranges`, no `ETag`, and always
//! the whole body. A request for several ranges also gets the whole body (a 200, which holds
//! every range asked for; RFC 9110 §14.2 lets a server ignore `Range`): `multipart/byteranges`
//! would be a second body format to get right for no client of ours (players and resuming
//! downloads ask for one range). Anything the grammar does not allow — another
//! unit, `bytes=5-3`, a sign, a letter — is ignored as RFC 9110 §14.2 says (200, the whole
//! body); a valid range that starts past the end is a 416.
//!
//! Every number is read saturating at `u64::MAX`, which keeps its meaning: a first byte that
//! large is past any end (416), a last byte or a suffix that large is "to the end".

use std::io::Read;

use tiny_http::{Header, Request, Response};

use super::access::{header, joined};
use super::reply::{self, Reply};

/// What the server can say about the bytes it would send.
#[derive(Clone, Copy, Debug)]
pub enum Validator<'a> {
    /// Bytes that never change under this strong tag (quoted, as sent): tagged and ranged.
    Strong(&'a str),
    /// Bytes that may differ at the next request: neither tagged nor ranged.
    Changing,
}

/// What a `Range` field asks of a body of a given length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// The whole body: no range, one that breaks the grammar, another unit, or several.
    Whole,
    /// Bytes `first..=last`, both within the body.
    Span { first: u64, last: u64 },
    /// A valid range of which the body has no byte: 416.
    Unsatisfiable,
}

/// Reads one `Range` field value for a body of `len` bytes.
pub fn parse(field: &str, len: u64) -> Ask {
    let Some((unit, set)) = field.split_once('=') else {
        return Ask::Whole;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return Ask::Whole;
    }
    // A list: empty elements are allowed and skipped (RFC 9110 §5.6.1).
    let mut specs = set
        .split(',')
        .map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return Ask::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ask::Whole;
    };
    if first.is_empty() {
        // `-n`: the last n bytes.
        return match number(last) {
            None => Ask::Whole,
            Some(0) => Ask::Unsatisfiable,
            // An empty body has nothing to give a suffix a span of; it is sent whole.
            Some(_) if len == 0 => Ask::Whole,
            Some(n) => Ask::Span {
                first: len - n.min(len),
                last: len - 1,
            },
        };
    }
    let Some(first) = number(first) else {
        return Ask::Whole;
    };
    let last = match last {
        "" => u64::MAX,
        text => match number(text) {
            Some(last) if last >= first => last,
            // Not a number, or before the first byte: an invalid range.
            _ => return Ask::Whole,
        },
    };
    if first >= len {
        return Ask::Unsatisfiable;
    }
    Ask::Span {
        first,
        last: last.min(len - 1),
    }
}

/// `1*DIGIT` as a number, saturating at `u64::MAX`; `None` for anything else (empty, a sign,
/// a space, a letter).
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, digit| {
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    }))
}

/// The conditional and range fields of a request.
#[derive(Debug, Default)]
struct Fields<'r> {
    if_match: Option<String>,
    if_none_match: Option<String>,
    /// Two fields join into a list, which no tag equals: the whole body.
    if_range: Option<String>,
    /// `None` also when `Range` is given more than once (it is not a list: ignored).
    range: Option<&'r str>,
}

impl<'r> Fields<'r> {
    fn of(request: &'r Request) -> Self {
        let ranges = request
            .headers()
            .iter()
            .filter(|h| h.field.equiv("Range"))
            .count();
        Fields {
            if_match: joined(request, "If-Match"),
            if_none_match: joined(request, "If-None-Match"),
            if_range: joined(request, "If-Range"),
            range: if ranges == 1 {
                header(request, "Range")
            } else {
                None
            },
        }
    }
}

/// What to answer, before any byte is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Send(Ask),
    NotModified,
    PreconditionFailed,
}

/// RFC 9110 §13.2.2's order: `If-Match`, then `If-None-Match`, then `Range` under `If-Range`.
/// (No `Last-Modified` is ever sent, so the date conditions have nothing to compare.)
fn decide(fields: &Fields, len: u64, validator: Validator) -> Outcome {
    let tag = match validator {
        Validator::Strong(tag) => Some(tag),
        Validator::Changing => None,
    };
    let members = |list: &str| -> Vec<String> {
        list.split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect()
    };
    if let Some(list) = &fields.if_match {
        // Strong comparison: a weak tag never matches.
        let matched = members(list)
            .iter()
            .any(|m| m == "*" || Some(m.as_str()) == tag);
        if !matched {
            return Outcome::PreconditionFailed;
        }
    }
    if let Some(list) = &fields.if_none_match {
        // Weak comparison: `W/"x"` matches `"x"`.
        let matched = members(list)
            .iter()
            .any(|m| m == "*" || Some(m.strip_prefix("W/").unwrap_or(m)) == tag);
        if matched {
            return Outcome::NotModified;
        }
    }
    let (Some(tag), Some(range)) = (tag, fields.range) else {
        return Outcome::Send(Ask::Whole);
    };
    // `If-Range`: the range only if the client's copy is this one, by strong comparison; a
    // date, a weak tag or another tag get the whole body.
    if fields.if_range.as_deref().is_some_and(|v| v.trim() != tag) {
        return Outcome::Send(Ask::Whole);
    }
    Outcome::Send(parse(range, len))
}

/// How to answer a GET or HEAD of `len` bytes.
pub enum Plan {
    /// An answer with no part of the body (304, 412, 416), complete.
    Refuse(Reply),
    /// Send `count` bytes from `first`; [`Serve::shape`] makes the response say so.
    Serve(Serve),
}

/// A 200 or 206 to serve: which bytes, and the headers that describe them.
pub struct Serve {
    pub first: u64,
    pub count: u64,
    status: u16,
    headers: Vec<Header>,
}

impl Serve {
    /// `response`, made of the planned bytes, with the plan's status and headers. Its length
    /// is always stated (never chunked): a client resuming a download, or checking a 206,
    /// needs it, and a truncated save shows as one.
    pub fn shape<R: Read>(self, response: Response<R>) -> Response<R> {
        let mut response = response
            .with_status_code(self.status)
            .with_chunked_threshold(usize::MAX);
        for header in self.headers {
            response.add_header(header);
        }
        response
    }
}

/// Judges the request's preconditions and `Range` for `len` bytes described by `validator`;
/// `cache_control` goes on every answer but the errors (which are never cached).
pub fn plan(request: &Request, len: u64, validator: Validator, cache_control: &str) -> Plan {
    let mut headers = vec![reply::header("Cache-Control", cache_control)];
    if let Validator::Strong(tag) = validator {
        headers.push(reply::header("ETag", tag));
        headers.push(reply::header("Accept-Ranges", "bytes"));
    }
    let ask = match decide(&Fields::of(request), len, validator) {
        Outcome::Send(ask) => ask,
        Outcome::NotModified => return Plan::Refuse(not_modified(headers, len)),
        Outcome::PreconditionFailed => {
            return Plan::Refuse(reply::error(
                412,
                "precondition_failed",
                "If-Match names no tag of the current representation",
            ));
        }
    };
    match ask {
        Ask::Whole => Plan::Serve(Serve {
            first: 0,
            count: len,
            status: 200,
            headers,
        }),
        Ask::Span { first, last } => {
            let range = format!("bytes {first}-{last}/{len}");
            headers.push(reply::header("Content-Range", &range));
            Plan::Serve(Serve {
                first,
                count: last - first + 1,
                status: 206,
                headers,
            })
        }
        Ask::Unsatisfiable => Plan::Refuse(
            reply::error(
                416,
                "range_not_satisfiable",
                &format!("the range asked for starts past the end of {len} bytes"),
            )
            .with_header(reply::header("Content-Range", &format!("bytes */{len}")))
            .with_header(reply::header("Accept-Ranges", "bytes")),
        ),
    }
}

/// A 304: no body, the validators again, and the length of the representation the client
/// already has (RFC 9110 allows only that `Content-Length` on a 304; tiny_http would say 0).
fn not_modified(headers: Vec<Header>, len: u64) -> Reply {
    let mut response = Response::from_data(Vec::new()).with_status_code(304);
    for header in headers {
        response.add_header(header);
    }
    response.with_header(reply::header("Content-Length", &len.to_string()))
}

/// The answer to a GET or HEAD of `body`: 304, 412 or 416, else the planned bytes of it made
/// into a reply by `full` (which sets its type and other headers).
pub fn reply(
    request: &Request,
    validator: Validator,
    cache_control: &str,
    mut body: Vec<u8>,
    full: impl FnOnce(Vec<u8>) -> Reply,
) -> Reply {
    let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
    let serve = match plan(request, len, validator, cache_control) {
        Plan::Refuse(reply) => return reply,
        Plan::Serve(serve) => serve,
    };
    // Both within the body, which is in memory: they fit a usize.
    let first = usize::try_from(serve.first).unwrap_or(0);
    let end = usize::try_from(serve.first.saturating_add(serve.count)).unwrap_or(body.len());
    body.truncate(end);
    body.drain(..first.min(body.len()));
    serve.shape(full(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(first: u64, last: u64) -> Ask {
        Ask::Span { first, last }
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-9", 100), span(0, 9));
        assert_eq!(parse("bytes=10-", 100), span(10, 99));
        assert_eq!(parse("bytes=-5", 100), span(95, 99));
        assert_eq!(parse("bytes=99-99", 100), span(99, 99));
        // Past the end: clipped to it.
        assert_eq!(parse("bytes=90-200", 100), span(90, 99));
        assert_eq!(parse("bytes=-500", 100), span(0, 99));
        // The unit is case-insensitive; spaces around list elements are allowed.
        assert_eq!(parse("Bytes=1-2", 100), span(1, 2));
        assert_eq!(parse("bytes= 1-2 ", 100), span(1, 2));
        assert_eq!(parse("bytes=,1-2,", 100), span(1, 2));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse("bytes=100-", 100), Ask::Unsatisfiable);
        assert_eq!(parse("bytes=100-200", 100), Ask::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Ask::Unsatisfiable);
        assert_eq!(parse("bytes=0-", 0), Ask::Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), Ask::Unsatisfiable);
        // An empty body has no suffix to give: sent whole.
        assert_eq!(parse("bytes=-5", 0), Ask::Whole);
    }

    #[test]
    fn numbers_beyond_64_bits_keep_their_meaning() {
        let huge = "99999999999999999999"; // 20 digits, above u64::MAX
        assert_eq!(parse(&format!("bytes={huge}-"), 100), Ask::Unsatisfiable);
        assert_eq!(parse(&format!("bytes=0-{huge}"), 100), span(0, 99));
        assert_eq!(parse(&format!("bytes=-{huge}"), 100), span(0, 99));
        assert_eq!(
            parse(&format!("bytes={huge}-{huge}"), 100),
            Ask::Unsatisfiable
        );
        assert_eq!(
            parse("bytes=18446744073709551615-", u64::MAX),
            Ask::Unsatisfiable
        );
        assert_eq!(
            parse("bytes=-18446744073709551615", u64::MAX),
            span(0, u64::MAX - 1)
        );
        assert_eq!(number(&"9".repeat(400)), Some(u64::MAX));
    }

    #[test]
    fn what_breaks_the_grammar_is_ignored() {
        for bad in [
            "bytes=5-3",
            "bytes=-",
            "bytes=--5",
            "bytes=-5-",
            "bytes=+5-",
            "bytes=-+5",
            "bytes=5",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=1 -2",
            "bytes=0x1-2",
            "bytes=",
            "bytes",
            "bytes =0-1",
            "items=0-1",
            "=0-1",
            "",
            "bytes=１-2",
        ] {
            assert_eq!(parse(bad, 100), Ask::Whole, "{bad:?}");
        }
    }

    #[test]
    fn several_ranges_get_the_whole_body() {
        assert_eq!(parse("bytes=0-1,3-4", 100), Ask::Whole);
        assert_eq!(parse("bytes=0-1, -5", 100), Ask::Whole);
        assert_eq!(parse("bytes=200-300,400-", 100), Ask::Whole);
    }

    fn fields<'a>(range: Option<&'a str>, if_range: Option<&str>) -> Fields<'a> {
        Fields {
            range,
            if_range: if_range.map(str::to_string),
            ..Fields::default()
        }
    }

    const TAG: &str = "\"abc\"";

    #[test]
    fn if_range_needs_the_same_strong_tag() {
        let strong = Validator::Strong(TAG);
        let partial = Outcome::Send(span(0, 0));
        let whole = Outcome::Send(Ask::Whole);
        assert_eq!(
            decide(&fields(Some("bytes=0-0"), None), 10, strong),
            partial
        );
        assert_eq!(
            decide(&fields(Some("bytes=0-0"), Some(TAG)), 10, strong),
            partial
        );
        for other in ["W/\"abc\"", "\"abd\"", "Wed, 21 Oct 2015 07:28:00 GMT", ""] {
            let asked = fields(Some("bytes=0-0"), Some(other));
            assert_eq!(decide(&asked, 10, strong), whole, "{other}");
        }
        // Bytes that may change are never ranged, whatever the client says.
        let changing = Validator::Changing;
        assert_eq!(
            decide(&fields(Some("bytes=0-0"), None), 10, changing),
            whole
        );
        assert_eq!(
            decide(&fields(Some("bytes=0-0"), Some(TAG)), 10, changing),
            whole
        );
    }

    #[test]
    fn preconditions_in_their_order() {
        let strong = Validator::Strong(TAG);
        let with = |if_match: Option<&str>, if_none_match: Option<&str>| Fields {
            if_match: if_match.map(str::to_string),
            if_none_match: if_none_match.map(str::to_string),
            range: Some("bytes=1-"),
            ..Fields::default()
        };
        let partial = Outcome::Send(span(1, 9));
        assert_eq!(decide(&with(Some(TAG), None), 10, strong), partial);
        assert_eq!(
            decide(&with(Some("\"x\", \"abc\""), None), 10, strong),
            partial
        );
        assert_eq!(decide(&with(Some("*"), None), 10, strong), partial);
        let failed = Outcome::PreconditionFailed;
        assert_eq!(decide(&with(Some("\"x\""), None), 10, strong), failed);
        assert_eq!(decide(&with(Some("W/\"abc\""), None), 10, strong), failed);
        // If-Match before If-None-Match.
        assert_eq!(decide(&with(Some("\"x\""), Some(TAG)), 10, strong), failed);
        let unchanged = Outcome::NotModified;
        assert_eq!(decide(&with(None, Some(TAG)), 10, strong), unchanged);
        assert_eq!(
            decide(&with(None, Some("W/\"abc\"")), 10, strong),
            unchanged
        );
        assert_eq!(decide(&with(None, Some("\"x\"")), 10, strong), partial);
        // Without a tag only `*` matches.
        let changing = Validator::Changing;
        assert_eq!(decide(&with(Some(TAG), None), 10, changing), failed);
        let whole = Outcome::Send(Ask::Whole);
        assert_eq!(decide(&with(Some("*"), None), 10, changing), whole);
        assert_eq!(decide(&with(None, Some(TAG)), 10, changing), whole);
    }
}
