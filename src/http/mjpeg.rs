//! `GET /stream/video[/{client_id}]?quality=Q&fps=N`: MJPEG as `multipart/x-mixed-replace`.
//!
//! One thread per viewer, reading its preset's latest-wins hub: when the socket is ready for
//! the next part, the viewer takes the newest frame, so a slow viewer skips frames instead of
//! queueing them and never delays the encoder, the camera or another viewer. Each part is one
//! `writev` of the part head, the shared JPEG bytes and the part's end with the next boundary
//! (no copy of the frame per client), written straight to the socket like the SSE streams do
//! (tiny_http would buffer it; see ../shared/spec/CRATE-NOTES.md). Framing as ustreamer and
//! mjpg-streamer: the body opens with the first delimiter and each part's closing delimiter
//! leaves with its JPEG, so a browser paints a frame as soon as it arrives (see
//! [`crate::video::frame::PART_END`]). A viewer that accepts no bytes for `write_timeout_s`
//! is dropped by the socket's write timeout.
//!
//! The send buffer is kept small (see [`SEND_BUFFER`]), so a viewer that stops reading holds
//! at most a frame or two in flight and, when it reads again, is on the newest frame at once.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tiny_http::{Method, Request};

use super::chunked::write_all_vectored;
use super::cors;
use super::panics;
use super::query::{Target, client_id};
use super::reply;
use super::router::{respond, respond_and_close, respond_stream_head};
use super::server::{Conn, HangupCheck};
use crate::ctx::Ctx;
use crate::latest::Next;
use crate::metrics::ClientKind;
use crate::video::adapt::{self, Adapter, Written};
use crate::video::frame::{MULTIPART_OPENING, PART_END};
use crate::video::rate::Decimator;
use crate::video::{Quality, StreamQuality};

/// Requested socket send buffer (the kernel doubles it for bookkeeping). Large enough for a
/// `medium` frame to leave in one write on a LAN; small enough that a stalled viewer does not
/// sit on seconds of stale video.
const SEND_BUFFER: libc::c_int = 64 * 1024;
/// A picture that does not change is not sent again, except this often, so that the viewer
/// sees the stream is alive and a dead connection is noticed by a failing write.
const RESEND_UNCHANGED: Duration = Duration::from_secs(1);
/// How long the loop waits for a frame before checking shutdown and resending.
const WAIT: Duration = Duration::from_millis(500);
/// Lowest `fps=` accepted (the contract's bound): one frame every ten seconds. Anything slower
/// is not video, and tiny rates overflowed the frame interval (`1e-320` panicked).
const MIN_FPS: f64 = 0.1;
/// `fps=` is capped at the preset's own rate; `source` has no fixed one, so at this.
const SOURCE_MAX_FPS: f64 = 120.0;

pub(super) const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: multipart/x-mixed-replace; boundary=frame\r\n\
Cache-Control: no-store, no-cache, must-revalidate, max-age=0\r\n\
Pragma: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\
X-Content-Type-Options: nosniff\r\n";

/// What the viewer asked for.
struct VideoRequest {
    client_id: String,
    quality: Quality,
    /// `quality=auto`: the preset follows how the viewer takes frames (`video/adapt.rs`).
    auto: bool,
    fps: Option<f64>,
}

fn parse_request(target: &Target, conn: &Conn, ctx: &Ctx) -> Result<VideoRequest, String> {
    let from_path = target
        .path
        .strip_prefix("/stream/video/")
        .filter(|id| !id.is_empty());
    let from_query = target.get("client_id");
    if let (Some(path), Some(query)) = (from_path, from_query)
        && path != query
    {
        return Err(format!(
            "client_id is given twice with different values: {path:?} in the path, {query:?} \
             in the query"
        ));
    }
    let client_id = client_id(from_path.or(from_query), "video", conn.id)?;
    let asked = match target.get("quality") {
        None => ctx.control.default_quality(),
        Some(text) => StreamQuality::parse(text).ok_or_else(|| StreamQuality::choices(text))?,
    };
    let (quality, auto) = match asked {
        StreamQuality::Preset(quality) => (quality, false),
        // The highest preset `auto` may reach (what bounds `fps=`); it starts lower.
        StreamQuality::Auto => (Quality::High, true),
    };
    let fps = match target.get("fps") {
        None => None,
        Some(text) => Some(parse_fps(text, quality)?),
    };
    Ok(VideoRequest {
        client_id,
        quality,
        auto,
        fps,
    })
}

/// `fps=`: a plain decimal number (`2`, `0.5`, `1e1`), at least [`MIN_FPS`]; above the
/// preset's own rate it is that rate. `nan`, `inf`, signs, hex and empty text are refused.
fn parse_fps(text: &str, quality: Quality) -> Result<f64, String> {
    let refuse = || format!("fps={text:?} must be a number of at least {MIN_FPS}");
    let plain = !text.is_empty()
        && text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && text.as_bytes()[0] != b'-'
        && text.as_bytes()[0] != b'+';
    if !plain {
        return Err(refuse());
    }
    let fps: f64 = text.parse().map_err(|_| refuse())?;
    // NaN cannot come from digits; a huge exponent gives infinity, which is "above the rate".
    if fps.is_nan() || fps < MIN_FPS {
        return Err(refuse());
    }
    let max = quality.max_fps().map_or(SOURCE_MAX_FPS, f64::from);
    Ok(fps.min(max))
}

fn set_send_buffer(conn: &Conn) {
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int of the right size.
    unsafe {
        libc::setsockopt(
            conn.socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&SEND_BUFFER as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `GET /stream/video`. Returns false: the stream ends the connection.
#[inline(never)]
pub fn stream(request: Request, target: &Target, conn: &Conn, ctx: &Ctx) -> bool {
    let asked = match parse_request(target, conn, ctx) {
        Ok(asked) => asked,
        Err(message) => return respond(request, reply::error(400, "bad_request", &message), ctx),
    };
    let limit = ctx.http.max_video_clients;
    let mut head = HEAD.to_vec();
    head.extend_from_slice(cors::head_lines(&request, &ctx.http.allowed_origins).as_bytes());
    head.extend_from_slice(b"\r\n");
    // A HEAD says what a GET would get, and starts nothing: no slot, no encoder.
    if *request.method() == Method::Head {
        let limit = (ClientKind::Video, "video client", limit);
        return respond_stream_head(request, &head, limit, ctx);
    }
    let Some(_slot) = ctx.metrics.admit(ClientKind::Video, limit) else {
        return respond_and_close(request, reply::over_limit("video client", limit), ctx);
    };
    let mut adapter = asked.auto.then(|| {
        let camera = ctx.camera.frames().current();
        let source = camera.map_or((1280, 720), |(_, frame)| (frame.width, frame.height));
        Adapter::new(Instant::now(), source)
    });
    let quality = adapter.as_ref().map_or(asked.quality, Adapter::quality);
    let mut watch = match ctx.video.watch(quality) {
        Ok(watch) => watch,
        Err(message) => {
            log::warn!("video client {} refused: {message}", asked.client_id);
            let reply = reply::error(503, "unavailable", &message)
                .with_header(reply::header("Retry-After", "5"));
            return respond_and_close(request, reply, ctx);
        }
    };
    // The head, then the body's opening delimiter, in one write.
    head.extend_from_slice(MULTIPART_OPENING);
    // Taking the writer takes the connection over from tiny_http; frames go straight to the
    // socket (vectored), so the writer itself is only held until the stream ends.
    let _writer = request.into_writer();
    let mut socket = &conn.socket;
    if socket.write_all(&head).is_err() {
        return false;
    }
    set_send_buffer(conn);
    log::info!(
        "video client {} connected from {} (quality {}{}{})",
        asked.client_id,
        conn.peer,
        if asked.auto { "auto, now " } else { "" },
        quality,
        asked.fps.map(|f| format!(", fps {f}")).unwrap_or_default()
    );
    let video_metrics = ctx.video.metrics();
    let mut decimator = Decimator::new(asked.fps);
    let mut last_seq = 0;
    let mut last_sent: Option<(u64, Instant)> = None;
    let mut sent: u64 = 0;
    let mut skipped: u64 = 0;
    // For `auto`: what the viewer took and missed since its last write, and its last frame.
    let (mut taken, mut missed_since, mut last_number) = (0, 0, 0);
    // Nothing is written while no frame is due (a low `fps`, an unchanged picture), so a viewer
    // that left is noticed by checking for its hang-up, not by a failing write.
    let mut hangup = HangupCheck::new();
    panics::injected("stream", &target.path);
    let reason = loop {
        if hangup.client_gone(conn) {
            break "closed the connection";
        }
        let (seq, frame) = match watch.frames().wait_newer(last_seq, WAIT) {
            Next::Item(seq, frame) => (seq, frame),
            Next::Timeout if ctx.shutdown.is_triggered() => break "server shutting down",
            Next::Timeout => continue,
            Next::Closed => break "server shutting down",
        };
        if last_seq != 0 && seq > last_seq + 1 {
            let missed = seq - last_seq - 1;
            skipped += missed;
            missed_since += missed;
            video_metrics
                .client_skipped_slow
                .fetch_add(missed, std::sync::atomic::Ordering::Relaxed);
        }
        last_seq = seq;
        // Another preset's hub (after an `auto` change) may still hold an older moment.
        if frame.number <= last_number {
            continue;
        }
        last_number = frame.number;
        taken += 1;
        if !decimator.accept(frame.captured_at) {
            continue;
        }
        if let Some((digest, at)) = last_sent
            && digest == frame.digest
            && at.elapsed() < RESEND_UNCHANGED
        {
            video_metrics
                .client_skipped_unchanged
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        let started = Instant::now();
        let written = if adapter.is_none() {
            write_all_vectored(&mut socket, &[&frame.part_head, &frame.jpeg, PART_END])
        } else {
            // The part head with `X-Quality` before the blank line that ends it.
            debug_assert!(frame.part_head.ends_with(b"\r\n\r\n"));
            let head = &frame.part_head[..frame.part_head.len() - 2];
            let quality = adapt::quality_line(watch.quality());
            write_all_vectored(&mut socket, &[head, quality, &frame.jpeg, PART_END])
        };
        if let Err(err) = written {
            break match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    "accepted no bytes within write_timeout_s"
                }
                _ => "closed the connection",
            };
        }
        sent += 1;
        video_metrics
            .frames_sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        last_sent = Some((frame.digest, Instant::now()));
        if let Some(adapter) = &mut adapter {
            let report = Written {
                blocked: started.elapsed(),
                taken: std::mem::take(&mut taken),
                missed: std::mem::take(&mut missed_since),
            };
            let now = Instant::now();
            // Once a judgement: the ladder of the picture the camera sends now (unknown for a
            // viewer that came before the first frame; changed by a camera back at another size).
            let resized = if adapter.judging(now) {
                let camera = ctx.camera.frames().current();
                camera.and_then(|(_, frame)| adapter.source_is((frame.width, frame.height)))
            } else {
                None
            };
            if let Some(next) = adapter.written(now, report).or(resized) {
                match ctx.video.watch(next) {
                    Ok(new) => {
                        log::info!(
                            "video client {}: auto quality {} -> {next}",
                            asked.client_id,
                            watch.quality()
                        );
                        watch = new;
                        last_seq = 0;
                    }
                    Err(err) => log::warn!("video client {}: {err}", asked.client_id),
                }
            }
        }
    };
    log::info!(
        "video client {} disconnected: {reason} ({sent} frames sent, {skipped} skipped while it was busy)",
        asked.client_id
    );
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_is_a_plain_number_of_at_least_a_tenth() {
        assert_eq!(parse_fps("2", Quality::Medium), Ok(2.0));
        assert_eq!(parse_fps("0.1", Quality::Medium), Ok(0.1));
        assert_eq!(parse_fps("1e0", Quality::Low), Ok(1.0));
        // Above the preset's rate: the preset's rate.
        assert_eq!(parse_fps("60", Quality::Low), Ok(10.0));
        assert_eq!(parse_fps("1e308", Quality::High), Ok(20.0));
        assert_eq!(parse_fps("1e999", Quality::Medium), Ok(15.0));
        assert_eq!(parse_fps("1e999", Quality::Source), Ok(SOURCE_MAX_FPS));
        for bad in [
            "",
            "0",
            "0.09",
            "1e-320",
            "0.0000001",
            "-1",
            "+5",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "infinity",
            "0x10",
            "1,5",
            " 2",
            "2 ",
            "e",
            ".",
            "1e",
            "--1",
            "5fps",
        ] {
            assert!(
                parse_fps(bad, Quality::Medium).is_err(),
                "{bad:?} was accepted"
            );
        }
    }
}
