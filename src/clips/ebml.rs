//! EBML, the binary element format Matroska is built from: just what the clip file needs.
//!
//! An element is an ID (1–4 bytes, its length marked by its first byte's leading zeros), a size
//! (a variable-length integer, 1–8 bytes, the same way), and the payload. The all-ones size means
//! "unknown": a segment whose end is not known yet, which is how a file that is still being
//! written (or was cut off by a power cut) stays valid.

/// Element IDs, as the Matroska specification numbers them (marker bits included).
pub mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const VOID: u32 = 0xEC;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const DATE_UTC: u32 = 0x4461;
    pub const TITLE: u32 = 0x7BA9;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const CODEC_ID: u32 = 0x86;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const BLOCK_ADDITION_MAPPING: u32 = 0x41E4;
    pub const BLOCK_ADD_ID_VALUE: u32 = 0x41F0;
    pub const BLOCK_ADD_ID_NAME: u32 = 0x41A4;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_ADDITIONS: u32 = 0x75A1;
    pub const BLOCK_MORE: u32 = 0xA6;
    pub const BLOCK_ADD_ID: u32 = 0xEE;
    pub const BLOCK_ADDITIONAL: u32 = 0xA5;
}

/// The 8-byte "unknown" size.
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

pub fn put_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8).min(3) as usize;
    out.extend_from_slice(&bytes[skip..]);
}

/// Writes `size` as a variable-length integer of the fewest bytes (never the all-ones value,
/// which would mean "unknown").
pub fn put_size(out: &mut Vec<u8>, size: u64) {
    let mut len = 1;
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    let marked = size | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

/// How many bytes [`put_size`] writes for `size`.
pub fn size_len(size: u64) -> usize {
    let mut out = Vec::with_capacity(8);
    put_size(&mut out, size);
    out.len()
}

pub fn put_uint(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = ((value.leading_zeros() / 8) as usize).min(7);
    put_id(out, id);
    put_size(out, (8 - skip) as u64);
    out.extend_from_slice(&bytes[skip..]);
}

pub fn put_int8(out: &mut Vec<u8>, id: u32, value: i64) {
    put_id(out, id);
    put_size(out, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_float(out: &mut Vec<u8>, id: u32, value: f64) {
    put_id(out, id);
    put_size(out, 8);
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, id: u32, value: &[u8]) {
    put_id(out, id);
    put_size(out, value.len() as u64);
    out.extend_from_slice(value);
}

pub fn put_master(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_bytes(out, id, body);
}

/// An element header read from bytes: its ID, its payload size (`None`: unknown) and how many
/// bytes the header took.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    pub id: u32,
    pub size: Option<u64>,
    pub len: usize,
}

/// Why a header could not be read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Malformed {
    /// The bytes end inside the header: more may come (a file being written).
    Short,
    /// Not an element header at all.
    Invalid,
}

/// Reads the element header at the start of `bytes`.
pub fn read_header(bytes: &[u8]) -> Result<Header, Malformed> {
    let first = *bytes.first().ok_or(Malformed::Short)?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 {
        return Err(Malformed::Invalid);
    }
    let id_bytes = bytes.get(..id_len).ok_or(Malformed::Short)?;
    let id = id_bytes.iter().fold(0u32, |v, b| (v << 8) | u32::from(*b));
    let rest = &bytes[id_len..];
    let first = *rest.first().ok_or(Malformed::Short)?;
    let size_len = first.leading_zeros() as usize + 1;
    if size_len > 8 {
        return Err(Malformed::Invalid);
    }
    let size_bytes = rest.get(..size_len).ok_or(Malformed::Short)?;
    let mask = if size_len == 8 { 0 } else { 0xFFu8 >> size_len };
    let mut value = u64::from(size_bytes[0] & mask);
    let mut all_ones = size_bytes[0] & mask == mask;
    for b in &size_bytes[1..] {
        value = (value << 8) | u64::from(*b);
        all_ones &= *b == 0xFF;
    }
    Ok(Header {
        id,
        size: (!all_ones).then_some(value),
        len: id_len + size_len,
    })
}

/// The unsigned integer payload of an element (1–8 bytes; 0 bytes is 0).
pub fn read_uint(payload: &[u8]) -> Option<u64> {
    if payload.len() > 8 {
        return None;
    }
    Some(payload.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
}

/// Walks the child elements of a master element's payload: `(id, payload)` each, stopping at
/// the first malformed or overlong one.
pub fn children(mut payload: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    std::iter::from_fn(move || {
        let header = read_header(payload).ok()?;
        let size = usize::try_from(header.size?).ok()?;
        let end = header.len.checked_add(size)?;
        let body = payload.get(header.len..end)?;
        payload = &payload[end..];
        Some((header.id, body))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_at_every_length() {
        for size in [
            0u64,
            1,
            126,
            127,
            128,
            16_382,
            16_383,
            1 << 20,
            (1 << 35) + 7,
            (1 << 56) - 2,
        ] {
            let mut out = Vec::new();
            put_id(&mut out, id::CLUSTER);
            put_size(&mut out, size);
            assert_eq!(out.len(), 4 + size_len(size));
            let header = read_header(&out).unwrap();
            assert_eq!(header.id, id::CLUSTER);
            assert_eq!(header.size, Some(size), "size {size}");
            assert_eq!(header.len, out.len());
        }
        // 127 in one byte would be all ones, i.e. "unknown": it takes two.
        assert_eq!(size_len(126), 1);
        assert_eq!(size_len(127), 2);
    }

    #[test]
    fn the_unknown_size_is_read_as_unknown() {
        let mut out = Vec::new();
        put_id(&mut out, id::SEGMENT);
        out.extend_from_slice(&UNKNOWN_SIZE);
        let header = read_header(&out).unwrap();
        assert_eq!(
            (header.id, header.size, header.len),
            (id::SEGMENT, None, 12)
        );
        assert_eq!(
            read_header(&[0x1F, 0x43, 0xB6, 0x75, 0xFF]).unwrap().size,
            None
        );
    }

    #[test]
    fn short_and_invalid_headers_are_told_apart() {
        assert_eq!(read_header(&[]), Err(Malformed::Short));
        assert_eq!(read_header(&[0x1A, 0x45]), Err(Malformed::Short));
        assert_eq!(
            read_header(&[0x1A, 0x45, 0xDF, 0xA3]),
            Err(Malformed::Short)
        );
        assert_eq!(
            read_header(&[0x1A, 0x45, 0xDF, 0xA3, 0x01]),
            Err(Malformed::Short)
        );
        // Zeros (what a power cut can leave) are no element.
        assert_eq!(read_header(&[0, 0, 0, 0, 0]), Err(Malformed::Invalid));
        assert_eq!(read_header(&[0x81, 0x00]), Err(Malformed::Invalid));
    }

    #[test]
    fn uints_use_the_fewest_bytes_and_children_are_walked() {
        let mut body = Vec::new();
        put_uint(&mut body, id::TRACK_NUMBER, 1);
        put_uint(&mut body, id::TIMESTAMP, 0);
        put_uint(&mut body, id::PIXEL_WIDTH, 1920);
        put_uint(&mut body, id::TIMESTAMP_SCALE, u64::MAX);
        put_bytes(&mut body, id::CODEC_ID, b"V_MJPEG");
        assert_eq!(&body[..3], &[0xD7, 0x81, 0x01]);
        let walked: Vec<_> = children(&body).collect();
        assert_eq!(walked.len(), 5);
        assert_eq!(read_uint(walked[0].1), Some(1));
        assert_eq!(read_uint(walked[1].1), Some(0));
        assert_eq!(read_uint(walked[2].1), Some(1920));
        assert_eq!(read_uint(walked[3].1), Some(u64::MAX));
        assert_eq!(walked[4], (id::CODEC_ID, &b"V_MJPEG"[..]));
        // A child that claims more than is there ends the walk.
        let mut cut = body.clone();
        cut.truncate(cut.len() - 1);
        assert_eq!(children(&cut).count(), 4);
    }
}
