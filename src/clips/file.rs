//! The clip file: one Matroska (`.mkv`) file per clip, the camera's JPEGs as they came, each
//! with its capture time and frame number.
//!
//! Why Matroska and not our own format or a bare MJPEG stream: a downloaded clip plays in VLC,
//! mpv and ffmpeg at the pace it was recorded (a bare MJPEG file has no times; players assume
//! 25 fps), and Matroska is made to be written as it goes: the segment's size is "unknown", every
//! frame is a self-contained cluster appended with one `writev`, so the file is valid after every
//! frame — while it grows, and after a power cut. A cluster cut short by a crash is detectable
//! (its declared size runs past the end of the file) and is dropped by [`ClipReader`], never
//! served; recovery truncates it away.
//!
//! Layout:
//!
//! ```text
//! EBML header (DocType "matroska")
//! Segment, unknown size
//!   Info: TimestampScale = 1 µs, DateUTC = first frame's capture time, Title,
//!         an 11-byte Void that becomes Duration when the clip is finished
//!   Tracks: one MJPEG video track (V_MJPEG), and a BlockAddition mapping naming the
//!           frame number we attach to each frame
//!   Cluster per frame: Timestamp (µs since the first frame),
//!                      BlockGroup { Block (the JPEG, untouched),
//!                                   BlockAdditions { BlockMore { id 2, frame number } } }
//! ```
//!
//! A frame's capture time is `DateUTC + Timestamp`; the Timestamp is measured on the monotonic
//! clock from the first frame, so the recorded pace survives a wall-clock step.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use super::ebml::{self, Header, Malformed, id};
use crate::video::Frame;

/// The folder of clip files inside the data dir.
pub const DIR: &str = "clips";
/// File name extension of a clip.
pub const EXTENSION: &str = "mkv";

/// The file of recording `id` (named after the event that started it) in `dir`. Made from a
/// number only, so no request can name a path outside the folder.
pub fn path(dir: &Path, id: u64) -> std::path::PathBuf {
    dir.join(format!("{id}.{EXTENSION}"))
}

/// The recording id a clip file's name says, if it is one of ours (`<id>.mkv`).
pub fn id_from_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|id| *id > 0)
}
/// The MIME type a downloaded clip is sent with.
pub const MIME: &str = "video/x-matroska";

/// Unix time of 2001-01-01T00:00:00Z, Matroska's `DateUTC` epoch.
const MATROSKA_EPOCH_UNIX: f64 = 978_307_200.0;
/// Timestamps are in microseconds.
const TIMESTAMP_SCALE_NS: u64 = 1000;
/// The `BlockAddID` of the frame number attached to each frame.
const FRAME_NUMBER_ADD_ID: u64 = 2;
/// The Void reserved in Info for Duration: ID (2) + size (1) + float (8).
const DURATION_LEN: usize = 11;
/// A cluster larger than this is not one of ours: the file is damaged from there on.
const MAX_CLUSTER: u64 = 64 * 1024 * 1024;
/// Info and Tracks are small; anything larger is damage.
const MAX_HEADER_ELEMENT: u64 = 64 * 1024;

/// Appends frames to a new clip file.
pub struct ClipWriter {
    /// The folder, until its entry for the new file has been synced.
    dir: Option<std::path::PathBuf>,
    file: File,
    /// Bytes written, all of them whole elements: the file's valid length.
    len: u64,
    /// Where the Duration placeholder is.
    duration_at: u64,
    first_at: std::time::Instant,
    last_offset_us: u64,
    frames: u64,
}

impl ClipWriter {
    /// Creates the file at `path` for a clip whose first frame is `first` (not written yet:
    /// [`ClipWriter::append`] it like the others) and writes its header. Nothing is synced
    /// yet, so the first frames follow at once (a `kill -9` loses nothing written; a power cut
    /// loses what the first [`ClipWriter::sync`] had not made durable).
    pub fn create(path: &Path, first: &Frame, title: &str) -> io::Result<ClipWriter> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let (header, duration_at) = file_header(first, title);
        file.write_all(&header)?;
        Ok(ClipWriter {
            dir: path.parent().map(Path::to_path_buf),
            file,
            len: header.len() as u64,
            duration_at: duration_at as u64,
            first_at: first.captured_at,
            last_offset_us: 0,
            frames: 0,
        })
    }

    /// Appends one frame with one `writev` (the JPEG is not copied). On error the file is cut
    /// back to its last whole frame, as far as the disk lets us.
    pub fn append(&mut self, frame: &Frame) -> io::Result<u64> {
        let offset_us = u64::try_from(
            frame
                .captured_at
                .saturating_duration_since(self.first_at)
                .as_micros(),
        )
        .unwrap_or(u64::MAX);
        let (prefix, suffix) = cluster_around(offset_us, frame.number, frame.jpeg.len());
        let total = (prefix.len() + frame.jpeg.len() + suffix.len()) as u64;
        let written = write_all_at_end(&mut self.file, &[&prefix, &frame.jpeg, &suffix]);
        if let Err(err) = written {
            // A torn cluster would be dropped on read anyway; cutting it keeps the file clean.
            let _ = self.file.set_len(self.len);
            return Err(err);
        }
        self.len += total;
        self.frames += 1;
        self.last_offset_us = offset_us;
        Ok(total)
    }

    /// Makes what was written so far durable (`fdatasync`; the first time, the folder's
    /// entry for the file too).
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        if let Some(dir) = self.dir.take() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The file's length, all of it whole frames.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Writes the Duration and syncs. Returns the file's length.
    pub fn finish(mut self) -> io::Result<u64> {
        let duration_us = clip_duration_us(self.frames, self.last_offset_us);
        write_duration(&self.file, self.duration_at, duration_us)?;
        self.sync()?;
        Ok(self.len)
    }
}

/// A clip's duration: to the end of its last frame, taking the last frame to last as long as
/// the average one.
fn clip_duration_us(frames: u64, last_offset_us: u64) -> f64 {
    if frames < 2 {
        return 0.0;
    }
    last_offset_us as f64 * frames as f64 / (frames - 1) as f64
}

fn write_duration(file: &File, at: u64, duration_us: f64) -> io::Result<()> {
    let mut element = Vec::with_capacity(DURATION_LEN);
    ebml::put_float(&mut element, id::DURATION, duration_us);
    debug_assert_eq!(element.len(), DURATION_LEN);
    file.write_all_at(&element, at)
}

fn write_all_at_end(file: &mut File, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The EBML header, the Segment's start, Info and Tracks; and where the Duration goes.
fn file_header(first: &Frame, title: &str) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(256);
    let mut ebml_body = Vec::new();
    ebml::put_uint(&mut ebml_body, id::EBML_VERSION, 1);
    ebml::put_uint(&mut ebml_body, id::EBML_READ_VERSION, 1);
    ebml::put_uint(&mut ebml_body, id::EBML_MAX_ID_LENGTH, 4);
    ebml::put_uint(&mut ebml_body, id::EBML_MAX_SIZE_LENGTH, 8);
    ebml::put_bytes(&mut ebml_body, id::DOC_TYPE, b"matroska");
    ebml::put_uint(&mut ebml_body, id::DOC_TYPE_VERSION, 4);
    ebml::put_uint(&mut ebml_body, id::DOC_TYPE_READ_VERSION, 2);
    ebml::put_master(&mut out, id::EBML, &ebml_body);

    ebml::put_id(&mut out, id::SEGMENT);
    out.extend_from_slice(&ebml::UNKNOWN_SIZE);

    let app = concat!("porchlight ", env!("CARGO_PKG_VERSION"));
    let mut info = Vec::new();
    ebml::put_uint(&mut info, id::TIMESTAMP_SCALE, TIMESTAMP_SCALE_NS);
    ebml::put_bytes(&mut info, id::MUXING_APP, app.as_bytes());
    ebml::put_bytes(&mut info, id::WRITING_APP, app.as_bytes());
    let date_ns = ((first.captured_unix - MATROSKA_EPOCH_UNIX) * 1e9).round();
    // Inside i64 for any date between 1709 and 2293; a clock that far off is clamped.
    let date_ns = date_ns.clamp(i64::MIN as f64, i64::MAX as f64) as i64;
    ebml::put_int8(&mut info, id::DATE_UTC, date_ns);
    ebml::put_bytes(&mut info, id::TITLE, title.as_bytes());
    // The Void placeholder: ID, a one-byte size of 9, nine zero bytes.
    let duration_in_info = info.len();
    info.push(id::VOID as u8);
    ebml::put_size(&mut info, (DURATION_LEN - 2) as u64);
    info.resize(duration_in_info + DURATION_LEN, 0);
    ebml::put_id(&mut out, id::INFO);
    ebml::put_size(&mut out, info.len() as u64);
    let duration_at = out.len() + duration_in_info;
    out.extend_from_slice(&info);

    let mut video = Vec::new();
    ebml::put_uint(&mut video, id::PIXEL_WIDTH, u64::from(first.width));
    ebml::put_uint(&mut video, id::PIXEL_HEIGHT, u64::from(first.height));
    let mut mapping = Vec::new();
    ebml::put_uint(&mut mapping, id::BLOCK_ADD_ID_VALUE, FRAME_NUMBER_ADD_ID);
    ebml::put_bytes(
        &mut mapping,
        id::BLOCK_ADD_ID_NAME,
        b"porchlight camera frame number (u64, big-endian)",
    );
    let mut track = Vec::new();
    ebml::put_uint(&mut track, id::TRACK_NUMBER, 1);
    ebml::put_uint(&mut track, id::TRACK_UID, 1);
    ebml::put_uint(&mut track, id::TRACK_TYPE, 1);
    ebml::put_uint(&mut track, id::FLAG_LACING, 0);
    ebml::put_bytes(&mut track, id::CODEC_ID, b"V_MJPEG");
    ebml::put_master(&mut track, id::VIDEO, &video);
    ebml::put_master(&mut track, id::BLOCK_ADDITION_MAPPING, &mapping);
    let mut tracks = Vec::new();
    ebml::put_master(&mut tracks, id::TRACK_ENTRY, &track);
    ebml::put_master(&mut out, id::TRACKS, &tracks);
    (out, duration_at)
}

/// The bytes of one frame's cluster before and after the JPEG.
fn cluster_around(offset_us: u64, number: u64, jpeg_len: usize) -> (Vec<u8>, Vec<u8>) {
    // After the JPEG: BlockAdditions { BlockMore { BlockAddID, BlockAdditional } }.
    let mut more = Vec::with_capacity(16);
    ebml::put_uint(&mut more, id::BLOCK_ADD_ID, FRAME_NUMBER_ADD_ID);
    ebml::put_bytes(&mut more, id::BLOCK_ADDITIONAL, &number.to_be_bytes());
    let mut additions = Vec::with_capacity(24);
    ebml::put_master(&mut additions, id::BLOCK_MORE, &more);
    let mut suffix = Vec::with_capacity(28);
    ebml::put_master(&mut suffix, id::BLOCK_ADDITIONS, &additions);

    // The Block: track 1, timestamp 0 relative to the cluster, no flags (a BlockGroup's block
    // without a ReferenceBlock is a keyframe, which every JPEG is).
    let block_len = 4 + jpeg_len as u64;
    let mut block_head = Vec::with_capacity(12);
    ebml::put_id(&mut block_head, id::BLOCK);
    ebml::put_size(&mut block_head, block_len);
    block_head.extend_from_slice(&[0x81, 0, 0, 0]);

    let group_len = block_head.len() as u64 + jpeg_len as u64 + suffix.len() as u64;
    let mut timestamp = Vec::with_capacity(10);
    ebml::put_uint(&mut timestamp, id::TIMESTAMP, offset_us);
    let cluster_len = timestamp.len() as u64 + 1 + ebml::size_len(group_len) as u64 + group_len;

    let mut prefix = Vec::with_capacity(40);
    ebml::put_id(&mut prefix, id::CLUSTER);
    ebml::put_size(&mut prefix, cluster_len);
    prefix.extend_from_slice(&timestamp);
    ebml::put_id(&mut prefix, id::BLOCK_GROUP);
    ebml::put_size(&mut prefix, group_len);
    prefix.extend_from_slice(&block_head);
    (prefix, suffix)
}

/// One frame read back.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipFrame {
    /// The camera's frame number (`X-Frame-Id` when it was live).
    pub number: u64,
    /// Capture time, Unix seconds.
    pub captured_unix: f64,
    /// Capture time after the clip's first frame.
    pub offset: Duration,
    pub jpeg: Vec<u8>,
}

/// What reading the next frame found.
#[derive(Debug)]
pub enum Read {
    Frame(ClipFrame),
    /// Nothing more now: the end of the file, or a frame cut short. A file still being
    /// written may have more later.
    End,
    /// Bytes that are not a frame: nothing after them is read.
    Damaged,
}

/// Reads a clip file frame by frame, from a file that may still be growing.
pub struct ClipReader {
    file: File,
    /// Where the next cluster starts: the end of everything read and whole.
    pos: u64,
    date_unix: f64,
    scale_ns: u64,
    pub width: u32,
    pub height: u32,
}

/// Reads up to `buf.len()` bytes at `at`; fewer at the end of the file.
fn read_up_to(file: &File, at: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], at + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn damaged(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl ClipReader {
    /// Opens a clip and reads its header. `UnexpectedEof` if the header is not all there yet
    /// (a clip whose file was just created), `InvalidData` if this is not a clip file.
    pub fn open(path: &Path) -> io::Result<ClipReader> {
        let file = File::open(path)?;
        let mut reader = ClipReader {
            file,
            pos: 0,
            date_unix: 0.0,
            scale_ns: 1_000_000,
            width: 0,
            height: 0,
        };
        reader.read_file_header()?;
        Ok(reader)
    }

    /// The header of the element at `at`, or why there is none.
    fn header_at(&self, at: u64) -> io::Result<Result<Header, Malformed>> {
        let mut buf = [0u8; 12];
        let got = read_up_to(&self.file, at, &mut buf)?;
        Ok(ebml::read_header(&buf[..got]))
    }

    /// Reads an element's payload of `size` bytes at `at`; `UnexpectedEof` if not all there.
    fn payload_at(&self, at: u64, size: u64) -> io::Result<Vec<u8>> {
        let len = usize::try_from(size).map_err(|_| damaged("element too large"))?;
        let mut payload = vec![0; len];
        self.file.read_exact_at(&mut payload, at)?;
        Ok(payload)
    }

    fn read_file_header(&mut self) -> io::Result<()> {
        let short = || io::Error::from(io::ErrorKind::UnexpectedEof);
        let header = |r: &ClipReader, at| match r.header_at(at)? {
            Ok(h) => Ok(h),
            Err(Malformed::Short) => Err(short()),
            Err(Malformed::Invalid) => Err(damaged("not a clip file")),
        };
        let ebml_head = header(self, 0)?;
        let ebml_size = ebml_head
            .size
            .filter(|s| *s <= 256)
            .ok_or_else(|| damaged("EBML header"))?;
        if ebml_head.id != id::EBML {
            return Err(damaged("not an EBML file"));
        }
        let body = self.payload_at(ebml_head.len as u64, ebml_size)?;
        let doc_type = ebml::children(&body).find(|(i, _)| *i == id::DOC_TYPE);
        if doc_type.map(|(_, v)| v) != Some(&b"matroska"[..]) {
            return Err(damaged("not a Matroska file"));
        }
        let mut at = ebml_head.len as u64 + ebml_size;
        let segment = header(self, at)?;
        if segment.id != id::SEGMENT {
            return Err(damaged("no Segment"));
        }
        at += segment.len as u64;
        let (mut info, mut tracks) = (false, false);
        while !(info && tracks) {
            let element = header(self, at)?;
            let size = element
                .size
                .filter(|s| *s <= MAX_HEADER_ELEMENT)
                .ok_or_else(|| damaged("header element size"))?;
            let body_at = at + element.len as u64;
            match element.id {
                id::INFO => {
                    let body = self.payload_at(body_at, size)?;
                    for (child, value) in ebml::children(&body) {
                        match child {
                            id::TIMESTAMP_SCALE => {
                                self.scale_ns = ebml::read_uint(value)
                                    .filter(|s| *s > 0)
                                    .ok_or_else(|| damaged("TimestampScale"))?;
                            }
                            id::DATE_UTC => {
                                let bytes: [u8; 8] =
                                    value.try_into().map_err(|_| damaged("DateUTC"))?;
                                self.date_unix =
                                    i64::from_be_bytes(bytes) as f64 / 1e9 + MATROSKA_EPOCH_UNIX;
                            }
                            _ => {}
                        }
                    }
                    info = true;
                }
                id::TRACKS => {
                    let body = self.payload_at(body_at, size)?;
                    let video = ebml::children(&body)
                        .filter(|(i, _)| *i == id::TRACK_ENTRY)
                        .flat_map(|(_, entry)| ebml::children(entry))
                        .find(|(i, _)| *i == id::VIDEO);
                    if let Some((_, video)) = video {
                        for (child, value) in ebml::children(video) {
                            let value = ebml::read_uint(value).and_then(|v| u32::try_from(v).ok());
                            match child {
                                id::PIXEL_WIDTH => self.width = value.unwrap_or(0),
                                id::PIXEL_HEIGHT => self.height = value.unwrap_or(0),
                                _ => {}
                            }
                        }
                    }
                    tracks = true;
                }
                id::CLUSTER => return Err(damaged("a cluster before Info and Tracks")),
                _ => {}
            }
            at = body_at + size;
        }
        self.pos = at;
        Ok(())
    }

    /// Where the next frame starts: the length of the file's whole part read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The capture time of the frame at `at`, read from its cluster's Timestamp (which the
    /// writer puts first) without reading its picture; `None` if that is not how it looks, or
    /// it is not all in the file yet (`file_len`). Also returns where the frame ends.
    fn frame_time_at(&self, at: u64, file_len: u64) -> io::Result<Option<(f64, u64)>> {
        let Ok(header) = self.header_at(at)? else {
            return Ok(None);
        };
        let Some(size) = header.size.filter(|s| *s <= MAX_CLUSTER) else {
            return Ok(None);
        };
        let body_at = at + header.len as u64;
        let end = body_at + size;
        if header.id != id::CLUSTER || end > file_len {
            return Ok(None);
        }
        let mut head = [0u8; 20];
        let got = read_up_to(&self.file, body_at, &mut head)?;
        let Ok(child) = ebml::read_header(&head[..got]) else {
            return Ok(None);
        };
        let value = child
            .size
            .and_then(|len| usize::try_from(len).ok())
            .and_then(|len| head.get(child.len..child.len + len));
        match (child.id, value.and_then(ebml::read_uint)) {
            (id::TIMESTAMP, Some(ticks)) => {
                let offset = Duration::from_nanos(ticks.saturating_mul(self.scale_ns));
                Ok(Some((self.date_unix + offset.as_secs_f64(), end)))
            }
            _ => Ok(None),
        }
    }

    /// Steps over the whole frames captured before `unix` without reading their pictures:
    /// where the clip of an event that joined a recording under way starts.
    pub fn skip_before(&mut self, unix: f64) -> io::Result<()> {
        let file_len = self.file.metadata()?.len();
        while let Some((at, end)) = self.frame_time_at(self.pos, file_len)? {
            if at >= unix {
                break;
            }
            self.pos = end;
        }
        Ok(())
    }

    /// The next whole frame, if it is there.
    pub fn next_frame(&mut self) -> io::Result<Read> {
        loop {
            let header = match self.header_at(self.pos)? {
                Ok(header) => header,
                Err(Malformed::Short) => return Ok(Read::End),
                Err(Malformed::Invalid) => return Ok(Read::Damaged),
            };
            let Some(size) = header.size.filter(|s| *s <= MAX_CLUSTER) else {
                return Ok(Read::Damaged);
            };
            let body_at = self.pos + header.len as u64;
            let body = match self.payload_at(body_at, size) {
                Ok(body) => body,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Read::End),
                Err(e) => return Err(e),
            };
            if header.id != id::CLUSTER {
                // Something else at the top level (a Void, tags): step over it.
                self.pos = body_at + size;
                continue;
            }
            let Some(frame) = self.parse_cluster(body) else {
                return Ok(Read::Damaged);
            };
            self.pos = body_at + size;
            return Ok(Read::Frame(frame));
        }
    }

    fn parse_cluster(&self, mut body: Vec<u8>) -> Option<ClipFrame> {
        let mut timestamp = None;
        let mut jpeg_range = None;
        let mut number = 0;
        let base = body.as_ptr() as usize;
        for (child, value) in ebml::children(&body) {
            match child {
                id::TIMESTAMP => timestamp = ebml::read_uint(value),
                id::BLOCK_GROUP => {
                    for (part, value) in ebml::children(value) {
                        match part {
                            id::BLOCK => jpeg_range = block_payload(value, base),
                            id::BLOCK_ADDITIONS => {
                                if let Some(n) = frame_number(value) {
                                    number = n;
                                }
                            }
                            _ => {}
                        }
                    }
                }
                id::SIMPLE_BLOCK => jpeg_range = block_payload(value, base),
                _ => {}
            }
        }
        let (start, len) = jpeg_range?;
        let ticks = timestamp?;
        body.truncate(start + len);
        body.drain(..start);
        if !body.starts_with(&[0xFF, 0xD8]) {
            return None;
        }
        let offset_ns = ticks.checked_mul(self.scale_ns)?;
        let offset = Duration::from_nanos(offset_ns);
        Some(ClipFrame {
            number,
            captured_unix: self.date_unix + offset.as_secs_f64(),
            offset,
            jpeg: body,
        })
    }
}

/// Where a block's frame data is inside the cluster buffer starting at address `base`: after
/// the track number (a one-byte vint for track 1), the 16-bit relative time and the flags.
fn block_payload(block: &[u8], base: usize) -> Option<(usize, usize)> {
    if block.len() < 4 || block[0] != 0x81 {
        return None;
    }
    let data = &block[4..];
    Some((data.as_ptr() as usize - base, data.len()))
}

fn frame_number(additions: &[u8]) -> Option<u64> {
    ebml::children(additions)
        .filter(|(i, _)| *i == id::BLOCK_MORE)
        .find_map(|(_, more)| {
            let mut add_id = 1;
            let mut value = None;
            for (child, v) in ebml::children(more) {
                match child {
                    id::BLOCK_ADD_ID => add_id = ebml::read_uint(v)?,
                    id::BLOCK_ADDITIONAL => value = Some(v),
                    _ => {}
                }
            }
            (add_id == FRAME_NUMBER_ADD_ID)
                .then_some(value?)
                .and_then(|v| v.try_into().ok())
                .map(u64::from_be_bytes)
        })
}

/// The length of a clip file's whole part (its header and whole frames), reading only the
/// frames' headers: what a download sends while the clip may still be growing.
pub fn whole_length(path: &Path) -> io::Result<u64> {
    let mut reader = ClipReader::open(path)?;
    let file_len = reader.file.metadata()?.len();
    while let Some((_, end)) = reader.frame_time_at(reader.pos, file_len)? {
        reader.pos = end;
    }
    Ok(reader.pos)
}

/// What a scan of a clip file found: how much of it is whole, and its frames' span.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Scan {
    /// Length of the whole part: header and whole frames.
    pub whole_len: u64,
    pub frames: u64,
    pub first_unix: Option<f64>,
    pub last_unix: Option<f64>,
    pub last_offset_us: u64,
}

/// Reads a clip file through, as recovery after a crash does.
pub fn scan(path: &Path) -> io::Result<Scan> {
    let mut reader = ClipReader::open(path)?;
    let mut scan = Scan {
        whole_len: reader.position(),
        ..Scan::default()
    };
    while let Read::Frame(frame) = reader.next_frame()? {
        scan.frames += 1;
        scan.first_unix.get_or_insert(frame.captured_unix);
        scan.last_unix = Some(frame.captured_unix);
        scan.last_offset_us = u64::try_from(frame.offset.as_micros()).unwrap_or(u64::MAX);
        scan.whole_len = reader.position();
    }
    Ok(scan)
}

/// Makes a clip whose recording was cut off (a crash, a power cut) whole again: drops a torn
/// last frame and writes the Duration. Returns what it found.
pub fn repair(path: &Path) -> io::Result<Scan> {
    let scan = scan(path)?;
    let file = OpenOptions::new().write(true).open(path)?;
    if file.metadata()?.len() != scan.whole_len {
        file.set_len(scan.whole_len)?;
    }
    // The Void placeholder is where the writer put it: find it in Info again.
    if let Some(at) = duration_placeholder(path)? {
        write_duration(
            &file,
            at,
            clip_duration_us(scan.frames, scan.last_offset_us),
        )?;
    }
    file.sync_all()?;
    Ok(scan)
}

/// Offset of the Void (or an earlier Duration) inside Info, if there is one of the right size.
fn duration_placeholder(path: &Path) -> io::Result<Option<u64>> {
    let reader = ClipReader::open(path)?;
    let ebml_head = reader.header_at(0)?.map_err(|_| damaged("EBML header"))?;
    let mut at = ebml_head.len as u64 + ebml_head.size.unwrap_or(0);
    let segment = reader.header_at(at)?.map_err(|_| damaged("Segment"))?;
    at += segment.len as u64;
    loop {
        let element = reader.header_at(at)?.map_err(|_| damaged("header"))?;
        let size = element.size.ok_or_else(|| damaged("header size"))?;
        let body_at = at + element.len as u64;
        if element.id == id::INFO {
            let body = reader.payload_at(body_at, size)?;
            let mut offset = 0usize;
            let mut rest = &body[..];
            while let Ok(child) = ebml::read_header(rest) {
                let Some(len) = child.size.and_then(|s| usize::try_from(s).ok()) else {
                    break;
                };
                let whole = child.len + len;
                if (child.id == id::VOID || child.id == id::DURATION) && whole == DURATION_LEN {
                    return Ok(Some(body_at + offset as u64));
                }
                if whole > rest.len() {
                    break;
                }
                offset += whole;
                rest = &rest[whole..];
            }
            return Ok(None);
        }
        if element.id == id::CLUSTER || size > MAX_HEADER_ELEMENT {
            return Ok(None);
        }
        at = body_at + size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "porchlight-clipfile-{tag}-{}-{}",
            std::process::id(),
            crate::clock::unix_now()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    /// A frame with a small but real JPEG marker frame around `fill`.
    fn frame(base: Instant, number: u64, at_ms: u64, fill: u8, len: usize) -> Frame {
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.resize(len - 2, fill);
        jpeg.extend_from_slice(&[0xFF, 0xD9]);
        Frame::new(
            number,
            1_763_800_000.25 + at_ms as f64 / 1000.0,
            base + Duration::from_millis(at_ms),
            (640, 480),
            jpeg,
            true,
        )
    }

    fn read_all(path: &Path) -> (Vec<ClipFrame>, Read) {
        let mut reader = ClipReader::open(path).unwrap();
        let mut frames = Vec::new();
        loop {
            match reader.next_frame().unwrap() {
                Read::Frame(f) => frames.push(f),
                end => return (frames, end),
            }
        }
    }

    #[test]
    fn file_names_are_made_from_numbers_and_read_back() {
        let dir = Path::new("/data/clips");
        assert_eq!(path(dir, 42), Path::new("/data/clips/42.mkv"));
        assert_eq!(id_from_name("42.mkv"), Some(42));
        for other in [
            "42.mkv.tmp",
            ".mkv",
            "0.mkv",
            "-1.mkv",
            "4a.mkv",
            "42.jpg",
            "+4.mkv",
        ] {
            assert_eq!(id_from_name(other), None, "{other}");
        }
    }

    #[test]
    fn frames_come_back_with_their_numbers_times_and_bytes() {
        let d = dir("roundtrip");
        let path = d.0.join("1.mkv");
        let base = Instant::now();
        let frames: Vec<Frame> = (0..20)
            .map(|i| {
                frame(
                    base,
                    100 + i,
                    i * 66 + (i % 3),
                    i as u8,
                    1000 + i as usize * 37,
                )
            })
            .collect();
        let mut writer = ClipWriter::create(&path, &frames[0], "event 1").unwrap();
        for f in &frames {
            writer.append(f).unwrap();
        }
        let len = writer.finish().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        let reader = ClipReader::open(&path).unwrap();
        assert_eq!((reader.width, reader.height), (640, 480));
        let (read, end) = read_all(&path);
        assert!(matches!(end, Read::End));
        assert_eq!(read.len(), frames.len());
        for (got, sent) in read.iter().zip(&frames) {
            assert_eq!(got.number, sent.number);
            assert_eq!(&got.jpeg[..], &sent.jpeg[..]);
            assert!(
                (got.captured_unix - sent.captured_unix).abs() < 2e-6,
                "{} vs {}",
                got.captured_unix,
                sent.captured_unix
            );
            assert_eq!(
                got.offset,
                sent.captured_at.duration_since(frames[0].captured_at)
            );
        }
        let scan = scan(&path).unwrap();
        assert_eq!(scan.frames, 20);
        assert_eq!(scan.whole_len, len);
        assert_eq!(whole_length(&path).unwrap(), len);
    }

    #[test]
    fn skipping_to_a_time_reads_on_from_the_first_frame_at_or_after_it() {
        let d = dir("skip");
        let path = d.0.join("8.mkv");
        let base = Instant::now();
        let frames: Vec<Frame> = (0..30)
            .map(|i| frame(base, i + 1, i * 100, 0, 300))
            .collect();
        let mut writer = ClipWriter::create(&path, &frames[0], "skip").unwrap();
        for f in &frames {
            writer.append(f).unwrap();
        }
        drop(writer);
        let mut reader = ClipReader::open(&path).unwrap();
        reader.skip_before(frames[12].captured_unix - 0.01).unwrap();
        assert!(matches!(reader.next_frame().unwrap(), Read::Frame(f) if f.number == 13));
        // Before the first frame: nothing skipped; after the last: everything.
        let mut reader = ClipReader::open(&path).unwrap();
        reader.skip_before(0.0).unwrap();
        assert!(matches!(reader.next_frame().unwrap(), Read::Frame(f) if f.number == 1));
        let mut reader = ClipReader::open(&path).unwrap();
        reader.skip_before(f64::MAX).unwrap();
        assert!(matches!(reader.next_frame().unwrap(), Read::End));
        // A torn last frame is neither skipped over nor counted in the whole length.
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 10]).unwrap();
        let mut reader = ClipReader::open(&path).unwrap();
        reader.skip_before(f64::MAX).unwrap();
        assert!(matches!(reader.next_frame().unwrap(), Read::End));
        let cut = whole_length(&path).unwrap();
        assert!(cut < whole.len() as u64 - 10);
        assert_eq!(scan(&path).unwrap().whole_len, cut);
    }

    #[test]
    fn a_growing_file_is_read_as_far_as_it_is_whole_and_then_further() {
        let d = dir("growing");
        let path = d.0.join("2.mkv");
        let base = Instant::now();
        let first = frame(base, 1, 0, 1, 500);
        let mut writer = ClipWriter::create(&path, &first, "growing").unwrap();
        writer.append(&first).unwrap();
        let mut reader = ClipReader::open(&path).unwrap();
        assert!(matches!(reader.next_frame().unwrap(), Read::Frame(f) if f.number == 1));
        assert!(matches!(reader.next_frame().unwrap(), Read::End));
        writer.append(&frame(base, 2, 66, 2, 500)).unwrap();
        assert!(matches!(reader.next_frame().unwrap(), Read::Frame(f) if f.number == 2));
        assert!(matches!(reader.next_frame().unwrap(), Read::End));
    }

    #[test]
    fn a_torn_last_frame_is_dropped_at_every_cut_and_repair_removes_it() {
        let d = dir("torn");
        let path = d.0.join("3.mkv");
        let base = Instant::now();
        let first = frame(base, 1, 0, 1, 300);
        let mut writer = ClipWriter::create(&path, &first, "torn").unwrap();
        writer.append(&first).unwrap();
        writer.append(&frame(base, 2, 66, 2, 300)).unwrap();
        let two = writer.len();
        writer.append(&frame(base, 3, 133, 3, 300)).unwrap();
        let three = writer.len();
        drop(writer);
        let whole = std::fs::read(&path).unwrap();
        // Every cut inside the third frame leaves two frames, none of them torn.
        for cut in two..three {
            std::fs::write(&path, &whole[..cut as usize]).unwrap();
            let (frames, end) = read_all(&path);
            assert_eq!(frames.len(), 2, "cut at {cut}");
            assert!(matches!(end, Read::End), "cut at {cut}");
        }
        std::fs::write(&path, &whole[..(two + 40) as usize]).unwrap();
        let scan = repair(&path).unwrap();
        assert_eq!((scan.frames, scan.whole_len), (2, two));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), two);
        assert_eq!(read_all(&path).0.len(), 2);
    }

    #[test]
    fn zeros_after_a_power_cut_are_damage_not_frames() {
        let d = dir("zeros");
        let path = d.0.join("4.mkv");
        let base = Instant::now();
        let first = frame(base, 1, 0, 1, 300);
        let mut writer = ClipWriter::create(&path, &first, "zeros").unwrap();
        writer.append(&first).unwrap();
        let len = writer.len();
        drop(writer);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend(std::iter::repeat_n(0u8, 4096));
        std::fs::write(&path, &bytes).unwrap();
        let (frames, end) = read_all(&path);
        assert_eq!(frames.len(), 1);
        assert!(matches!(end, Read::Damaged));
        assert_eq!(repair(&path).unwrap().whole_len, len);
    }

    #[test]
    fn a_header_not_yet_written_is_unexpected_eof_and_garbage_is_invalid() {
        let d = dir("header");
        let path = d.0.join("5.mkv");
        let base = Instant::now();
        let first = frame(base, 1, 0, 1, 300);
        drop(ClipWriter::create(&path, &first, "header").unwrap());
        let header = std::fs::read(&path).unwrap();
        for cut in [0, 3, 20, header.len() - 1] {
            std::fs::write(&path, &header[..cut]).unwrap();
            let err = ClipReader::open(&path).err().expect("no reader");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        std::fs::write(&path, b"GIF89a this is not a clip").unwrap();
        let err = ClipReader::open(&path).err().expect("no reader");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn duration_is_written_when_finished_and_by_repair() {
        let d = dir("duration");
        let base = Instant::now();
        let frames: Vec<Frame> = (0..11)
            .map(|i| frame(base, i + 1, i * 100, 0, 200))
            .collect();
        let read_duration = |path: &Path| {
            let bytes = std::fs::read(path).unwrap();
            let at = duration_placeholder(path).unwrap().unwrap() as usize;
            let element = ebml::read_header(&bytes[at..]).unwrap();
            (element.id == id::DURATION)
                .then(|| f64::from_be_bytes(bytes[at + 3..at + 11].try_into().unwrap()))
        };
        let finished = d.0.join("6.mkv");
        let mut writer = ClipWriter::create(&finished, &frames[0], "t").unwrap();
        for f in &frames {
            writer.append(f).unwrap();
        }
        assert_eq!(
            read_duration(&finished),
            None,
            "a growing clip has no Duration"
        );
        writer.finish().unwrap();
        assert_eq!(read_duration(&finished), Some(1_100_000.0));
        // Cut off by a crash: repair writes it.
        let crashed = d.0.join("7.mkv");
        let mut writer = ClipWriter::create(&crashed, &frames[0], "t").unwrap();
        for f in &frames[..6] {
            writer.append(f).unwrap();
        }
        drop(writer);
        repair(&crashed).unwrap();
        assert_eq!(read_duration(&crashed), Some(600_000.0));
        assert_eq!(read_all(&crashed).0.len(), 6);
    }
}
