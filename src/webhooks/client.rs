//! One HTTP POST to a webhook receiver, with timeouts, on the calling (sender) thread.
//!
//! `http://` is a small HTTP/1.1 client of our own (a request per connection, `Connection:
//! close`; only the status line and `Retry-After` of the answer matter). `https://` goes
//! through `ureq` with rustls, compiled in only with the `https` cargo feature: TLS is most of
//! what such a client weighs (README, "Webhooks and ntfy", has the measured sizes).

use std::io::{self, BufRead, BufReader, Write};
use std::time::Duration;

use crate::deadline::ReadBy;
use crate::url::ServiceUrl;

/// Whether this build can POST to `https://` receivers.
pub const HTTPS_SUPPORTED: bool = cfg!(feature = "https");

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Sending the request, and reading the answer's head, each: a deadline for the whole head,
/// not a timeout per read, or a receiver that trickles a byte every few seconds would hold
/// the hook (and every event after it) for hours.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer head longer than this is not from a sane receiver.
const MAX_HEAD: usize = 16 * 1024;
/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What the receiver answered.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds (429/503), at most [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
}

/// POSTs `body` with `headers` to `url`. `Err` says why no answer came.
pub fn post(url: &ServiceUrl, headers: &[(&str, String)], body: &[u8]) -> Result<Answer, String> {
    match url.scheme.as_str() {
        "http" => post_http(url, headers, body),
        #[cfg(feature = "https")]
        "https" => post_https(url, headers, body),
        other => Err(format!("{other}:// is not supported by this build")),
    }
}

fn post_http(url: &ServiceUrl, headers: &[(&str, String)], body: &[u8]) -> Result<Answer, String> {
    let target = url.host_port();
    let mut stream = crate::url::connect(&target, &url.host, CONNECT_TIMEOUT)?;
    let io = |e: io::Error| format!("talking to {}: {e}", url.redacted());
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    stream.set_nodelay(true).map_err(io)?;
    let head = request_head(url, headers, body.len());
    // One write for head and body: the receiver sees the request in one segment.
    let mut request = Vec::with_capacity(head.len() + body.len());
    request.extend_from_slice(head.as_bytes());
    request.extend_from_slice(body);
    stream.write_all(&request).map_err(io)?;
    read_answer(&mut BufReader::new(ReadBy::new(&stream, IO_TIMEOUT))).map_err(io)
}

fn request_head(url: &ServiceUrl, headers: &[(&str, String)], body_len: usize) -> String {
    let host = url.authority(80);
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: porchlight/{}\r\n\
         Content-Length: {body_len}\r\nConnection: close\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    if let Some(user) = &url.user {
        let credentials = format!("{user}:{}", url.password.as_deref().unwrap_or(""));
        head.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(credentials.as_bytes())
        ));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Reads the status line and headers of the final answer; the body is not needed. Interim
/// `1xx` answers (`100 Continue`, `103 Early Hints`) are skipped: a client must accept them
/// even unasked (RFC 9110, 15.2), and taking one for the answer would fail every delivery to
/// such a receiver. All the heads together stay within [`MAX_HEAD`].
fn read_answer(reader: &mut impl BufRead) -> io::Result<Answer> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut read = 0usize;
    let mut line = String::new();
    let mut next_line = |line: &mut String| -> io::Result<()> {
        line.clear();
        let n = io::Read::take(&mut *reader, (MAX_HEAD - read) as u64).read_line(line)?;
        read += n;
        if n == 0 || !line.ends_with('\n') {
            return Err(bad("the answer ended inside its head"));
        }
        Ok(())
    };
    loop {
        next_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let status = match (parts.next(), parts.next().map(str::parse::<u16>)) {
            (Some(version), Some(Ok(code)))
                if version.starts_with("HTTP/1.") && (100..=599).contains(&code) =>
            {
                code
            }
            _ => return Err(bad("the answer is not HTTP/1.x")),
        };
        let mut retry_after = None;
        loop {
            next_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.trim().eq_ignore_ascii_case("retry-after")
            {
                // Seconds only; an HTTP date falls back to our own backoff.
                retry_after = value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
            }
        }
        if !(100..200).contains(&status) {
            return Ok(Answer {
                status,
                retry_after,
            });
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

#[cfg(feature = "https")]
fn post_https(url: &ServiceUrl, headers: &[(&str, String)], body: &[u8]) -> Result<Answer, String> {
    let target = format!("https://{}{}", url.authority(443), url.path);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(IO_TIMEOUT * 2))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(format!("porchlight/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut request = agent.post(&target);
    if let Some(user) = &url.user {
        let credentials = format!("{user}:{}", url.password.as_deref().unwrap_or(""));
        request = request.header(
            "Authorization",
            format!("Basic {}", base64(credentials.as_bytes())),
        );
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let answer = request
        .send(body)
        .map_err(|e| format!("{}: {e}", url.redacted()))?;
    let retry_after = answer
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    Ok(Answer {
        status: answer.status().as_u16(),
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A receiver that sends its answer's head a byte at a time, slower than nothing but
    /// faster than the per-read timeout: the POST still ends once [`IO_TIMEOUT`] is over.
    #[test]
    fn a_trickling_answer_ends_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let trickler = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ").unwrap();
            // A byte every twentieth of the deadline, until the client hangs up (a write
            // fails), the test ends, or three deadlines passed (so a client without one
            // fails this test instead of hanging it).
            let tick = IO_TIMEOUT / 20;
            let began = Instant::now();
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = done.recv_timeout(tick) {
                if began.elapsed() > IO_TIMEOUT * 3 {
                    return;
                }
                if stream.write_all(b"a").is_err() {
                    return;
                }
            }
        });
        let url =
            ServiceUrl::parse(&format!("http://127.0.0.1:{port}/"), |_| Some(80), "").unwrap();
        let began = Instant::now();
        let result = post(&url, &[], b"{}");
        let took = began.elapsed();
        drop(done_tx);
        trickler.join().unwrap();
        assert!(result.is_err(), "{result:?}");
        assert!(
            took < IO_TIMEOUT + IO_TIMEOUT / 2,
            "took {took:?}, the deadline is {IO_TIMEOUT:?}"
        );
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn the_request_head_has_host_length_auth_and_headers() {
        let url = ServiceUrl::parse(
            "http://tk:s%40cret@ntfy.lan:8081/door?x=1",
            |_| Some(80),
            "",
        )
        .unwrap();
        let head = request_head(&url, &[("Title", "Doorbell".into())], 12);
        assert!(head.starts_with("POST /door?x=1 HTTP/1.1\r\nHost: ntfy.lan:8081\r\n"));
        assert!(head.contains("Content-Length: 12\r\n"));
        assert!(head.contains(&format!(
            "Authorization: Basic {}\r\n",
            base64(b"tk:s@cret")
        )));
        assert!(head.ends_with("Title: Doorbell\r\n\r\n"));
        let default_port = ServiceUrl::parse("http://h/", |_| Some(80), "").unwrap();
        assert!(request_head(&default_port, &[], 0).contains("Host: h\r\n"));
        // An IPv6 host keeps its brackets, with or without a port (RFC 9110 7.2, RFC 3986).
        for (text, host) in [
            ("http://[::1]/", "[::1]"),
            ("http://[fd00::5]:8080/", "[fd00::5]:8080"),
        ] {
            let url = ServiceUrl::parse(text, |_| Some(80), "").unwrap();
            let head = request_head(&url, &[], 0);
            assert!(head.contains(&format!("Host: {host}\r\n")), "{head}");
        }
    }

    #[test]
    fn answers_are_read_from_their_head() {
        let read = |text: &str| read_answer(&mut text.as_bytes());
        assert_eq!(
            read("HTTP/1.1 204 No Content\r\n\r\n").unwrap(),
            Answer {
                status: 204,
                retry_after: None
            }
        );
        assert_eq!(
            read("HTTP/1.0 429 Too Many\r\nretry-after: 7\r\nX: y\r\n\r\nbody").unwrap(),
            Answer {
                status: 429,
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            read("HTTP/1.1 503 x\r\nRetry-After: 99999\r\n\r\n")
                .unwrap()
                .retry_after,
            Some(MAX_RETRY_AFTER)
        );
        for bad in [
            "",
            "HTTP/1.1 200 OK\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 99 x\r\n\r\n",
            "HTTP/2 200\r\n\r\n",
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
        let endless = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(read(&endless).is_err());
    }

    #[test]
    fn interim_answers_are_skipped_within_the_head_limit() {
        let read = |text: &str| read_answer(&mut text.as_bytes());
        let answer = read(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
             HTTP/1.1 201 Created\r\n\r\n",
        )
        .unwrap();
        assert_eq!(answer.status, 201);
        assert!(
            read("HTTP/1.1 100 Continue\r\n\r\n").is_err(),
            "no final answer"
        );
        let endless = "HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_HEAD);
        assert!(
            read(&endless).is_err(),
            "interim heads count against the limit"
        );
    }
}
