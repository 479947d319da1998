//! `GET /api/events/{id}/clip.mjpeg`: an event's clip replayed as MJPEG at the pace it was
//! recorded, then the stream ends (so it plays in an `<img>`, ffmpeg, VLC, Home Assistant);
//! `?download=1`: the clip file itself (Matroska) as an attachment. 404 if the event has none.
//!
//! A clip may still be recording: the replay follows the file as it grows (it runs
//! `clip_pre_s` behind the camera, so it rarely has to wait), and a download sends the whole
//! frames written so far. A torn last frame (a crash mid-write) is never sent. Only a
//! finished clip's download is tagged and served in byte ranges (`ranges.rs`); the replay is
//! a stream and never is.
//!
//! The stream is framed like the live one (`mjpeg.rs`: the same head, the body opening with
//! the first delimiter, each part one `writev` of its head, the JPEG and the next delimiter);
//! the last part ends with the closing delimiter `--frame--` instead, so a client knows the
//! clip is over rather than cut off.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tiny_http::{Method, Request, Response};

use super::api::store_error;
use super::chunked::write_all_vectored;
use super::cors;
use super::mjpeg;
use super::query::Target;
use super::ranges::{self, Plan, Validator};
use super::reply;
use super::router::{respond, respond_and_close};
use super::server::Conn;
use crate::clips::file::{self, ClipFrame, ClipReader, Read};
use crate::ctx::Ctx;
use crate::metrics::ClientKind;
use crate::video::Frame;
use crate::video::frame::{MULTIPART_OPENING, PART_END};

/// How long a replay waits for a clip being recorded to grow before looking at shutdown again.
const GROWTH_WAIT: Duration = Duration::from_millis(500);
/// How long a replay waits for a clip that is being recorded but has no frame yet.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(5);
/// Pacing sleeps at most this long at a time, so shutdown is noticed.
const PACE_SLICE: Duration = Duration::from_millis(250);

/// `GET /api/events/{id}/clip.mjpeg[?download=1]`. Returns whether the connection may carry
/// another request (only after a download or an error reply).
#[inline(never)]
pub fn serve(request: Request, id: u64, target: &Target, conn: &Conn, ctx: &Ctx) -> bool {
    let download = match target.get("download") {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            let message = format!("download={other:?} must be 1 or 0");
            return respond(request, reply::error(400, "bad_request", &message), ctx);
        }
    };
    let location = match ctx.events.reader().clip(id) {
        Ok(Some(location)) => location,
        Ok(None) => {
            let message = format!("event {id} has no clip");
            return respond(request, reply::error(404, "not_found", &message), ctx);
        }
        Err(err) => return respond(request, store_error(&err), ctx),
    };
    let clip = Clip {
        file_id: location.file_id,
        path: file::path(&clips_dir(ctx), location.file_id),
        from_unix: location.event_timestamp - ctx.http.clip_pre_s,
    };
    if download {
        return send_file(request, id, &clip, ctx);
    }
    replay(request, id, &clip, conn, ctx)
}

/// One event's clip: a recording, and where in it the event's part starts.
struct Clip {
    file_id: u64,
    path: PathBuf,
    /// Capture time the event's clip starts at (`clip_pre_s` before the event).
    from_unix: f64,
}

fn clips_dir(ctx: &Ctx) -> PathBuf {
    match &ctx.clips {
        Some(recorder) => recorder.dir().to_path_buf(),
        None => ctx.http.data_dir.join(file::DIR),
    }
}

fn growing(ctx: &Ctx, file_id: u64) -> bool {
    ctx.clips.as_ref().is_some_and(|r| r.is_growing(file_id))
}

/// Opens the clip, waiting a little for a recording that has not written its first frame.
fn open(clip: &Clip, ctx: &Ctx) -> io::Result<ClipReader> {
    let deadline = Instant::now() + FIRST_FRAME_WAIT;
    loop {
        match ClipReader::open(&clip.path) {
            Ok(reader) => return Ok(reader),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
                ) && growing(ctx, clip.file_id)
                    && Instant::now() < deadline
                    && !ctx.shutdown.is_triggered() =>
            {
                if let Some(recorder) = &ctx.clips {
                    recorder.wait_growth(clip.file_id, 0, GROWTH_WAIT);
                }
            }
            Err(err) => return Err(err),
        }
    }
}

fn unavailable(err: &io::Error, id: u64) -> tiny_http::Response<io::Cursor<Vec<u8>>> {
    log::warn!("clip of event {id} cannot be read: {err}");
    if err.kind() == io::ErrorKind::NotFound {
        // Deleted by retention between the look-up and the open.
        return reply::error(404, "not_found", &format!("event {id} has no clip"));
    }
    reply::error(
        503,
        "clip_unavailable",
        &format!("the clip cannot be read: {err}"),
    )
}

/// `?download=1`: the file's whole part, as an attachment. A finished recording never
/// changes again, so it is tagged and its ranges are served (`curl -C -` resumes a save); one
/// still being written is neither, since its header is rewritten when it ends (and a crash's
/// repair cuts its torn end off): a resumed save would splice two versions.
fn send_file(request: Request, id: u64, clip: &Clip, ctx: &Ctx) -> bool {
    // Asked before the file is read: once a recording is no longer growing it is final.
    let finished = !growing(ctx, clip.file_id);
    let opened = open(clip, ctx).and_then(|_| {
        let len = file::whole_length(&clip.path)?;
        let file = File::open(&clip.path)?;
        let tag = finished
            .then(|| tag(clip.file_id, &file, len))
            .transpose()?;
        Ok((file, len, tag))
    });
    let (mut file, len, tag) = match opened {
        Ok(opened) => opened,
        Err(err) => return respond(request, unavailable(&err, id), ctx),
    };
    let validator = match &tag {
        Some(tag) => Validator::Strong(tag),
        None => Validator::Changing,
    };
    let serve = match ranges::plan(&request, len, validator, "no-store") {
        Plan::Refuse(reply) => return respond(request, reply, ctx),
        Plan::Serve(serve) => serve,
    };
    let (Ok(length), Ok(_)) = (
        usize::try_from(serve.count),
        file.seek(SeekFrom::Start(serve.first)),
    ) else {
        return respond(
            request,
            reply::error(500, "internal", "clip too large"),
            ctx,
        );
    };
    let name = format!("porchlight-event-{id}.{}", file::EXTENSION);
    let count = serve.count;
    let response = Response::new(
        200.into(),
        vec![
            reply::header("Content-Type", file::MIME),
            reply::header(
                "Content-Disposition",
                &format!("attachment; filename=\"{name}\""),
            ),
            reply::header("X-Content-Type-Options", "nosniff"),
        ],
        file.take(count),
        Some(length),
        None,
    );
    // A download says its length (a progress bar, a resumable save of a finished clip, and a
    // truncated save shows as one), never chunked: `shape` states it whatever its size.
    let response = serve.shape(response);
    log::info!("clip of event {id} downloaded ({count} of {len} bytes)");
    let keep_alive = request.keeps_alive_after(&response);
    request.respond(response).is_ok() && keep_alive
}

/// A finished recording's strong tag: its id, the length served, and the file's identity and
/// modification time (a repair or a replaced data dir changes one of them). No digest: that
/// would read megabytes on every request.
fn tag(file_id: u64, file: &File, len: u64) -> io::Result<String> {
    let meta = file.metadata()?;
    let modified = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    Ok(format!(
        "\"clip{file_id}-{:x}-{len:x}-{modified:x}\"",
        meta.ino()
    ))
}

/// What ends the last part instead of [`PART_END`]: the CRLF and the closing delimiter.
const LAST_PART_END: &[u8] = b"\r\n--frame--\r\n";

/// Writes one frame as a part, the way the live stream does (one `writev` of the part head,
/// the JPEG, and the part's end: the next delimiter, or for the last, the closing one).
fn write_part(out: &mut impl Write, frame: &Frame, last: bool) -> io::Result<()> {
    let end = if last { LAST_PART_END } else { PART_END };
    write_all_vectored(out, &[&frame.part_head, &frame.jpeg, end])
}

/// The next whole frame of the clip, waiting while the recording grows. `Ok(None)`: the clip
/// ends here.
fn next_frame(
    reader: &mut ClipReader,
    clip: &Clip,
    ctx: &Ctx,
) -> Result<Option<ClipFrame>, &'static str> {
    loop {
        match reader.next_frame() {
            Ok(Read::Frame(frame)) => return Ok(Some(frame)),
            Ok(Read::End) if growing(ctx, clip.file_id) => {
                if ctx.shutdown.is_triggered() {
                    return Err("the server is stopping");
                }
                if let Some(recorder) = &ctx.clips {
                    recorder.wait_growth(clip.file_id, reader.position(), GROWTH_WAIT);
                }
            }
            Ok(Read::End | Read::Damaged) => return Ok(None),
            Err(err) => {
                log::warn!("clip {}: read failed: {err}", clip.path.display());
                return Ok(None);
            }
        }
    }
}

/// The replay: parts at the recorded pace, the last one ending with the closing delimiter.
fn replay(request: Request, id: u64, clip: &Clip, conn: &Conn, ctx: &Ctx) -> bool {
    let limit = ctx.http.max_video_clients;
    let Some(_slot) = ctx.metrics.admit(ClientKind::Video, limit) else {
        return respond_and_close(request, reply::over_limit("video client", limit), ctx);
    };
    let mut reader = match open(clip, ctx).and_then(|mut reader| {
        reader.skip_before(clip.from_unix)?;
        Ok(reader)
    }) {
        Ok(reader) => reader,
        Err(err) => return respond(request, unavailable(&err, id), ctx),
    };
    let head_only = *request.method() == Method::Head;
    // The first frame before the head: a clip with none (its event's part of the recording
    // was lost) is answered like no clip, not with an empty stream.
    let mut pending = match next_frame(&mut reader, clip, ctx) {
        Ok(Some(frame)) => frame,
        Ok(None) | Err(_) => {
            let message = format!("event {id} has no clip (no frame was recorded for it)");
            return respond(request, reply::error(404, "not_found", &message), ctx);
        }
    };
    let mut head = mjpeg::HEAD.to_vec();
    head.extend_from_slice(cors::head_lines(&request, &ctx.http.allowed_origins).as_bytes());
    head.extend_from_slice(b"\r\n");
    if !head_only {
        head.extend_from_slice(MULTIPART_OPENING);
    }
    let _writer = request.into_writer();
    let mut socket = &conn.socket;
    if socket.write_all(&head).is_err() || head_only {
        return false;
    }
    let started = Instant::now();
    let first_offset = pending.offset;
    let mut sent = 0u64;
    let outcome = loop {
        // Read ahead: whether this part is the last decides how it ends.
        let next = match next_frame(&mut reader, clip, ctx) {
            Ok(next) => next,
            Err(why) => break Err(why),
        };
        if !pace(started + pending.offset.saturating_sub(first_offset), ctx) {
            break Err("the server is stopping");
        }
        let part = Frame::new(
            pending.number,
            pending.captured_unix,
            Instant::now(),
            (reader.width, reader.height),
            pending.jpeg,
            true,
        );
        if write_part(&mut socket, &part, next.is_none()).is_err() {
            break Err("closed the connection");
        }
        sent += 1;
        match next {
            Some(frame) => pending = frame,
            None => break Ok(()),
        }
    };
    match outcome {
        Ok(()) => log::info!(
            "clip of event {id} replayed to {}: {sent} frames in {:.1} s",
            conn.peer,
            started.elapsed().as_secs_f64()
        ),
        Err(why) => log::info!(
            "clip of event {id} replay to {} ended: {why} ({sent} frames sent)",
            conn.peer
        ),
    }
    false
}

/// Waits until `due`; false if the server is stopping.
fn pace(due: Instant, ctx: &Ctx) -> bool {
    loop {
        if ctx.shutdown.is_triggered() {
            return false;
        }
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(PACE_SLICE));
    }
}
