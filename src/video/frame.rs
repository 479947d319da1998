//! A video frame: one JPEG with the moment it shows. Shared as `Arc<Frame>` from the capture
//! thread to every preset and every client; nothing downstream ever copies the bytes.

use std::sync::Arc;
use std::time::Instant;

/// How an MJPEG body (`boundary=frame`) opens: the first delimiter, so that every part can end with the next one.
pub const MULTIPART_OPENING: &[u8] = b"--frame\r\n";

/// What follows each part's JPEG: the CRLF that ends the part and the delimiter of the next.
///
/// Sent in the same write as the JPEG, as ustreamer and mjpg-streamer do. A browser paints a
/// part of `multipart/x-mixed-replace` only once it sees the boundary after it: with the
/// delimiter sent before each part instead (the old framing), Firefox showed every picture one
/// frame late, and a change followed by a still scene (repeats are not resent) about 1 s late.
pub const PART_END: &[u8] = b"\r\n--frame\r\n";

#[derive(Debug)]
pub struct Frame {
    /// Increases by one for every frame the camera hub publishes (live or placeholder), across
    /// source restarts; a preset's frame keeps the number of the camera frame it was made from.
    /// Sent as `X-Frame-Id`.
    pub number: u64,
    /// Capture time, Unix seconds (`X-Timestamp`).
    pub captured_unix: f64,
    /// Capture time on the monotonic clock, for pacing and staleness.
    pub captured_at: Instant,
    pub width: u32,
    pub height: u32,
    /// The JPEG. An `Arc<Vec<u8>>` because that is what an event's snapshot holds: attaching the
    /// frame of the moment to a doorbell event costs a reference count, not a copy.
    pub jpeg: Arc<Vec<u8>>,
    /// Digest of the JPEG bytes, computed once, so a client can skip a frame identical to the
    /// one it sent last with one comparison.
    pub digest: u64,
    /// False for the "NO LIVE VIDEO" placeholder shown while the camera is down.
    pub live: bool,
    /// This frame's MJPEG part head (`Content-Type`, `Content-Length`, `X-Timestamp`,
    /// `X-Frame-Id` and the blank line), built once here so that sending the frame to any
    /// number of viewers is one `writev` of shared bytes (`part_head`, `jpeg`, [`PART_END`]),
    /// with no formatting per viewer. The boundary before it was sent with the previous part
    /// (or [`MULTIPART_OPENING`]).
    pub part_head: Box<[u8]>,
}

impl Frame {
    pub fn new(
        number: u64,
        captured_unix: f64,
        captured_at: Instant,
        (width, height): (u32, u32),
        jpeg: Vec<u8>,
        live: bool,
    ) -> Frame {
        let digest = digest(&jpeg);
        let part_head = format!(
            "Content-Type: image/jpeg\r\nContent-Length: {}\r\n\
             X-Timestamp: {captured_unix:.6}\r\nX-Frame-Id: {number}\r\n\r\n",
            jpeg.len()
        )
        .into_bytes()
        .into_boxed_slice();
        Frame {
            number,
            captured_unix,
            captured_at,
            width,
            height,
            jpeg: Arc::new(jpeg),
            digest,
            live,
            part_head,
        }
    }

    /// The same moment at another size: what a preset makes from a camera frame.
    pub fn derived(&self, (width, height): (u32, u32), jpeg: Vec<u8>) -> Frame {
        Frame::new(
            self.number,
            self.captured_unix,
            self.captured_at,
            (width, height),
            jpeg,
            self.live,
        )
    }
}

/// FNV-1a over 8 bytes at a time: a few microseconds for a 40 KB frame, and good enough to tell
/// a repeated picture from a new one (equal JPEG bytes mean an equal picture; a collision would
/// cost one skipped frame, never a wrong one, since the next different frame is sent).
pub fn digest(bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        hash = (hash ^ word).wrapping_mul(PRIME);
    }
    for &byte in chunks.remainder() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_is_its_head_the_jpeg_and_the_next_delimiter() {
        let frame = Frame::new(7, 1.5, Instant::now(), (2, 2), vec![0xFF, 0xD8], true);
        let head = std::str::from_utf8(&frame.part_head).unwrap();
        assert_eq!(
            head,
            "Content-Type: image/jpeg\r\nContent-Length: 2\r\nX-Timestamp: 1.500000\r\n\
             X-Frame-Id: 7\r\n\r\n"
        );
        // `boundary=frame` in the stream's Content-Type.
        assert_eq!(MULTIPART_OPENING, b"--frame\r\n");
        assert_eq!(PART_END, b"\r\n--frame\r\n");
    }

    #[test]
    fn digest_tells_frames_apart() {
        let a = vec![1u8; 1000];
        let mut b = a.clone();
        b[999] = 2;
        assert_eq!(digest(&a), digest(&a.clone()));
        assert_ne!(digest(&a), digest(&b));
        assert_ne!(digest(&a[..999]), digest(&a));
    }
}
