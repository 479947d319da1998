//! A video frame: one JPEG with the moment it shows. Shared as `Arc<Frame>` from the capture
//! thread to every preset and every client; nothing downstream ever copies the bytes.

use std::sync::Arc;
use std::time::Instant;

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
    /// This frame's MJPEG part head (boundary, `Content-Type`, `Content-Length`, `X-Timestamp`,
    /// `X-Frame-Id`), built once here so that sending the frame to any number of viewers is
    /// one `writev` of shared bytes, with no formatting per viewer.
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
            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\
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
    fn digest_tells_frames_apart() {
        let a = vec![1u8; 1000];
        let mut b = a.clone();
        b[999] = 2;
        assert_eq!(digest(&a), digest(&a.clone()));
        assert_ne!(digest(&a), digest(&b));
        assert_ne!(digest(&a[..999]), digest(&a));
    }
}
