//! A strict MJPEG client for the video tests, and a few JPEG byte checks that do not depend on
//! the server's own code: what a browser or Home Assistant sees on the wire, parsed to the
//! letter of the contract.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{self, IO_TIMEOUT, Response};

/// `multipart/x-mixed-replace` with the boundary the contract names.
pub const CONTENT_TYPE: &str = "multipart/x-mixed-replace; boundary=frame";

/// One part as received.
#[derive(Clone, Debug)]
pub struct Part {
    pub frame_id: u64,
    /// `X-Timestamp`: capture time, Unix seconds.
    pub timestamp: f64,
    pub jpeg: Vec<u8>,
    pub arrived_unix: f64,
}

/// An open `/stream/video` response.
pub struct Mjpeg {
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    /// The closing delimiter came (a clip's stream ends; a live one never does).
    closed: bool,
}

impl Mjpeg {
    /// Opens a stream; any status but 200 comes back as the complete response.
    pub fn open(port: u16, path: &str) -> Result<Mjpeg, Response> {
        Mjpeg::open_with(port, path, &[])
    }

    /// Like [`Mjpeg::open`], with request headers.
    pub fn open_with(
        port: u16,
        path: &str,
        request_headers: &[(&str, &str)],
    ) -> Result<Mjpeg, Response> {
        let mut stream = common::connect(port);
        common::write_request(&mut stream, "GET", path, request_headers, b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let (status, _reason, headers) =
            common::read_head(&mut reader).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        if status != 200 {
            let length: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            return Err(Response {
                status,
                headers,
                body,
            });
        }
        let mut mjpeg = Mjpeg {
            headers,
            reader,
            stream,
            closed: false,
        };
        // (r2) The body opens with the first delimiter; each part then ends with the next.
        mjpeg
            .stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        if let Err(e) = mjpeg.expect_line("--frame").and_then(|rest| {
            if rest.is_empty() {
                Ok(())
            } else {
                Err(invalid(rest))
            }
        }) {
            panic!("GET {path}: the body must open with --frame: {e}");
        }
        Ok(mjpeg)
    }

    /// Opens a stream and checks the response head; panics on anything but an MJPEG 200.
    pub fn connect(port: u16, path: &str) -> Mjpeg {
        let mjpeg = Mjpeg::open(port, path)
            .unwrap_or_else(|r| panic!("GET {path}: {} {}", r.status, r.text()));
        assert_eq!(
            mjpeg.header("content-type"),
            Some(CONTENT_TYPE),
            "{:?}",
            mjpeg.headers
        );
        mjpeg
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if !line.ends_with(b"\r\n") {
            return Err(invalid(format!(
                "part line not ended by CRLF: {:?}",
                String::from_utf8_lossy(&line)
            )));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|e| invalid(e.to_string()))
    }

    fn expect_line(&mut self, prefix: &str) -> io::Result<String> {
        let line = self.line()?;
        line.strip_prefix(prefix)
            .map(str::to_string)
            .ok_or_else(|| invalid(format!("expected {prefix:?}..., got {line:?}")))
    }

    /// Reads one part, checking it is exactly (r2, as ustreamer and mjpg-streamer frame it)
    /// `Content-Type: image/jpeg\r\nContent-Length: N\r\nX-Timestamp: T\r\n
    /// X-Frame-Id: n\r\n\r\n<N bytes>\r\n--frame\r\n` (the delimiter before it came with the
    /// previous part, or opened the body).
    pub fn next_part(&mut self, timeout: Duration) -> io::Result<Part> {
        self.next_part_or_end(timeout)?
            .ok_or_else(|| invalid("the stream ended (closing delimiter)".into()))
    }

    /// Like [`Mjpeg::next_part`], for a stream that ends (a clip): its last part ends with the
    /// closing delimiter `\r\n--frame--\r\n` instead of the next one, and nothing may follow
    /// it; then `None`.
    pub fn next_part_or_end(&mut self, timeout: Duration) -> io::Result<Option<Part>> {
        self.stream.set_read_timeout(Some(timeout))?;
        if self.closed {
            let mut rest = Vec::new();
            self.reader.read_to_end(&mut rest)?;
            if !rest.is_empty() {
                return Err(invalid(format!(
                    "{} bytes after the closing delimiter",
                    rest.len()
                )));
            }
            return Ok(None);
        }
        let content_type = self.expect_line("Content-Type: ")?;
        if content_type != "image/jpeg" {
            return Err(invalid(format!("part Content-Type {content_type:?}")));
        }
        let length: usize = self
            .expect_line("Content-Length: ")?
            .parse()
            .map_err(|_| invalid("Content-Length".into()))?;
        let timestamp: f64 = self
            .expect_line("X-Timestamp: ")?
            .parse()
            .map_err(|_| invalid("X-Timestamp".into()))?;
        let frame_id: u64 = self
            .expect_line("X-Frame-Id: ")?
            .parse()
            .map_err(|_| invalid("X-Frame-Id".into()))?;
        let blank = self.line()?;
        if !blank.is_empty() {
            return Err(invalid(format!("expected the blank line, got {blank:?}")));
        }
        let mut jpeg = vec![0; length];
        self.reader.read_exact(&mut jpeg)?;
        let arrived_unix = common::now_unix();
        let mut end = [0; 11];
        self.reader.read_exact(&mut end)?;
        if &end == b"\r\n--frame--" {
            let mut crlf = [0; 2];
            self.reader.read_exact(&mut crlf)?;
            if &crlf != b"\r\n" {
                return Err(invalid(format!("closing delimiter ended by {crlf:?}")));
            }
            self.closed = true;
        } else if &end != b"\r\n--frame\r\n" {
            return Err(invalid(format!(
                "part not followed by CRLF and the next delimiter: {:?}",
                String::from_utf8_lossy(&end)
            )));
        }
        Ok(Some(Part {
            frame_id,
            timestamp,
            jpeg,
            arrived_unix,
        }))
    }

    /// The next part; panics with the reason if it does not come or is malformed.
    pub fn expect_part(&mut self) -> Part {
        self.next_part(IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("expected an MJPEG part: {e}"))
    }

    /// Parts until their capture times span at least `span`.
    pub fn parts_spanning(&mut self, span: Duration) -> Vec<Part> {
        let mut parts = vec![self.expect_part()];
        while parts.last().unwrap().timestamp - parts[0].timestamp < span.as_secs_f64() {
            parts.push(self.expect_part());
        }
        parts
    }

    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Frames per second of video time in `parts` (by their capture timestamps).
pub fn rate(parts: &[Part]) -> f64 {
    let span = parts.last().unwrap().timestamp - parts[0].timestamp;
    (parts.len() - 1) as f64 / span
}

/// Asserts a stream ran at `expected` fps: never more than 10 % faster (a rate limit or a
/// source's pace is a ceiling, and nothing may burst past it), and not slower than 60 % of it.
/// The floor is loose on purpose: a machine loaded by other work makes frames late, never early,
/// so only the ceiling is exact; the floor catches a stream that stalled or halved.
pub fn assert_rate(measured: f64, expected: f64, what: &str) {
    assert!(
        measured <= expected * 1.10 && measured >= expected * 0.60,
        "{what}: {measured:.2} fps, expected {expected} (at most +10 %, at least -40 %)"
    );
}

// ---------------------------------------------------------------------------------------------
// JPEG bytes
// ---------------------------------------------------------------------------------------------

/// Walks JPEG header segments: (marker, segment body) up to SOS.
fn segments(jpeg: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    if jpeg.len() < 4 || jpeg[..2] != [0xFF, 0xD8] {
        return out;
    }
    let mut pos = 2;
    while pos + 4 <= jpeg.len() && jpeg[pos] == 0xFF {
        let marker = jpeg[pos + 1];
        let length = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        if length < 2 || pos + 2 + length > jpeg.len() {
            break;
        }
        out.push((marker, &jpeg[pos + 4..pos + 2 + length]));
        if marker == 0xDA {
            break;
        }
        pos += 2 + length;
    }
    out
}

/// Width and height from the SOF segment.
pub fn jpeg_size(jpeg: &[u8]) -> Option<(u32, u32)> {
    segments(jpeg)
        .into_iter()
        .find(|(m, _)| matches!(m, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF))
        .map(|(_, body)| {
            let height = u16::from_be_bytes([body[1], body[2]]);
            let width = u16::from_be_bytes([body[3], body[4]]);
            (u32::from(width), u32::from(height))
        })
}

/// The text of the COM segment (the synthetic camera writes `porchlight frame=N t=T`).
pub fn jpeg_comment(jpeg: &[u8]) -> Option<String> {
    segments(jpeg)
        .into_iter()
        .find(|(m, _)| *m == 0xFE)
        .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
}

/// The frame number the synthetic camera wrote into the JPEG.
pub fn synthetic_frame_number(jpeg: &[u8]) -> u64 {
    let comment = jpeg_comment(jpeg).expect("a synthetic frame has a COM segment");
    comment
        .split_whitespace()
        .find_map(|w| w.strip_prefix("frame="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame number in {comment:?}"))
}

/// Asserts a complete JPEG of `size`.
pub fn assert_jpeg(jpeg: &[u8], size: (u32, u32)) {
    assert!(
        jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]),
        "not a complete JPEG ({} bytes)",
        jpeg.len()
    );
    assert_eq!(jpeg_size(jpeg), Some(size));
}

// ---------------------------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------------------------

/// Runs a command to completion within `timeout`; panics (with its stderr) if it does not
/// finish. Returns (success, stdout, stderr).
pub fn run_tool(program: &str, args: &[&str], timeout: Duration) -> (bool, String, String) {
    let finished = common::run_program(program, args, timeout);
    (finished.status.success(), finished.stdout, finished.stderr)
}

/// Makes test footage with ffmpeg's test source: `frames` frames of `size` at `fps`, written
/// as `output` (a `%03d.jpg` pattern for single files, or an `.mjpeg` file).
pub fn make_footage(output: &str, frames: u32, size: (u32, u32), fps: u32) {
    let source = format!("testsrc=size={}x{}:rate={fps}", size.0, size.1);
    let frames = frames.to_string();
    let mut args = vec![
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &source,
        "-frames:v",
        &frames,
        "-q:v",
        "5",
    ];
    if output.ends_with(".mjpeg") {
        args.extend(["-f", "mjpeg"]);
    }
    args.push(output);
    let (ok, _, err) = run_tool("ffmpeg", &args, Duration::from_secs(60));
    assert!(ok, "ffmpeg could not make {output}: {err}");
}

/// Waits until the server's stderr holds a line with every one of `needles`; returns the log.
/// (stderr is read by the harness's own thread, so a line the server wrote just before an
/// answer may reach the test a moment after it: polling the captured text is the only way.)
pub fn wait_log(server: &common::Server, needles: &[&str], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let log = server.stderr();
        if log.lines().any(|l| needles.iter().all(|n| l.contains(n))) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} within {timeout:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
