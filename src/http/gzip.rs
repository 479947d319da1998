//! Unpacking the dashboard's files, which are embedded in the binary gzip-compressed.
//!
//! Why: compressed, the dashboard is 24 KB of the binary instead of 61 KB, and a browser (they
//! all accept gzip) is sent those bytes as they are: three times fewer over a weak Wi-Fi link,
//! and no work for the Pi. A client that does not accept gzip (curl, scripts) gets the file
//! unpacked here, once per request. `build.rs` compresses; this is the other half: a DEFLATE
//! decoder (RFC 1951) for a gzip member (RFC 1952), a few KB of code where a crate would be
//! more. Its input is only ever what `build.rs` made, but it refuses malformed data anyway
//! (`None`), never panics or reads out of bounds.

/// The bytes inside a gzip member: its header (no optional fields; `build.rs` writes none),
/// the DEFLATE data, and the unpacked length in the trailer, which must match.
pub fn gunzip(member: &[u8]) -> Option<Vec<u8>> {
    const HEADER: usize = 10;
    const TRAILER: usize = 8;
    if member.len() < HEADER + TRAILER || member[..4] != [0x1f, 0x8b, 8, 0] {
        return None;
    }
    let (data, trailer) = member[HEADER..].split_at(member.len() - HEADER - TRAILER);
    let size = u32::from_le_bytes(trailer[4..8].try_into().ok()?);
    let out = inflate(data)?;
    (u32::try_from(out.len()).ok()? == size).then_some(out)
}

/// Least-significant-bit-first reader of a DEFLATE stream.
struct Bits<'a> {
    data: &'a [u8],
    next: usize,
    buffer: u32,
    held: u32,
}

impl Bits<'_> {
    /// The next `n` (≤ 16) bits as a number, first bit lowest.
    fn take(&mut self, n: u32) -> Option<u32> {
        while self.held < n {
            let byte = *self.data.get(self.next)?;
            self.next += 1;
            self.buffer |= u32::from(byte) << self.held;
            self.held += 8;
        }
        let value = self.buffer & ((1 << n) - 1);
        self.buffer >>= n;
        self.held -= n;
        Some(value)
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code order.
struct Code {
    count: [u16; 16],
    symbol: Vec<u16>,
}

impl Code {
    /// The code with these code lengths (0: symbol unused). An over-subscribed set is refused;
    /// an incomplete one is allowed (a single distance code is), its unused codes fail to decode.
    fn new(lengths: &[u8]) -> Option<Code> {
        let mut count = [0u16; 16];
        for &len in lengths {
            count[usize::from(len)] += 1;
        }
        count[0] = 0;
        let mut left: i32 = 1;
        for &n in &count[1..] {
            left = (left << 1) - i32::from(n);
            if left < 0 {
                return None;
            }
        }
        let mut offset = [0u16; 16];
        for len in 1..15 {
            offset[len + 1] = offset[len] + count[len];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (sym, &len) in (0u16..).zip(lengths) {
            if len != 0 {
                let slot = &mut offset[usize::from(len)];
                symbol[usize::from(*slot)] = sym;
                *slot += 1;
            }
        }
        Some(Code { count, symbol })
    }

    /// Reads one symbol, a bit at a time (codes are packed first bit highest).
    fn decode(&self, bits: &mut Bits) -> Option<u16> {
        let (mut code, mut first, mut index) = (0u32, 0u32, 0u32);
        for &count in &self.count[1..] {
            code |= bits.take(1)?;
            let count = u32::from(count);
            if code < first + count {
                return self
                    .symbol
                    .get(usize::try_from(index + code - first).ok()?)
                    .copied();
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        None
    }
}

/// Length symbols 257..=285: base length and extra bits.
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Distance symbols 0..=29: base distance and extra bits.
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order in which a dynamic block lists its code-length code's lengths.
const LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// A raw DEFLATE stream unpacked.
fn inflate(data: &[u8]) -> Option<Vec<u8>> {
    let mut bits = Bits {
        data,
        next: 0,
        buffer: 0,
        held: 0,
    };
    let mut out = Vec::with_capacity(data.len() * 4);
    loop {
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0 => stored(&mut bits, &mut out)?,
            1 => {
                let (literals, distances) = fixed_codes()?;
                codes(&mut bits, &mut out, &literals, &distances)?;
            }
            2 => {
                let (literals, distances) = dynamic_codes(&mut bits)?;
                codes(&mut bits, &mut out, &literals, &distances)?;
            }
            _ => return None,
        }
        if last {
            return Some(out);
        }
    }
}

/// A stored block: from the next byte boundary, a length, its complement, the bytes.
fn stored(bits: &mut Bits, out: &mut Vec<u8>) -> Option<()> {
    bits.buffer = 0;
    bits.held = 0;
    let head = bits.data.get(bits.next..bits.next + 4)?;
    let len = u16::from_le_bytes([head[0], head[1]]);
    if len != !u16::from_le_bytes([head[2], head[3]]) {
        return None;
    }
    let start = bits.next + 4;
    let end = start + usize::from(len);
    out.extend_from_slice(bits.data.get(start..end)?);
    bits.next = end;
    Some(())
}

fn fixed_codes() -> Option<(Code, Code)> {
    let mut lengths = [8u8; 288];
    lengths[144..256].fill(9);
    lengths[256..280].fill(7);
    Some((Code::new(&lengths)?, Code::new(&[5u8; 30])?))
}

/// A dynamic block's codes, themselves sent Huffman-coded after a code-length code.
fn dynamic_codes(bits: &mut Bits) -> Option<(Code, Code)> {
    let literal_count = usize::try_from(bits.take(5)?).ok()? + 257;
    let distance_count = usize::try_from(bits.take(5)?).ok()? + 1;
    let length_count = usize::try_from(bits.take(4)?).ok()? + 4;
    if literal_count > 286 || distance_count > 30 {
        return None;
    }
    let mut length_lengths = [0u8; 19];
    for &slot in &LENGTH_ORDER[..length_count] {
        length_lengths[slot] = u8::try_from(bits.take(3)?).ok()?;
    }
    let length_code = Code::new(&length_lengths)?;
    let total = literal_count + distance_count;
    let mut lengths = Vec::with_capacity(total);
    while lengths.len() < total {
        let (value, repeat) = match length_code.decode(bits)? {
            len @ 0..=15 => (u8::try_from(len).ok()?, 1),
            16 => (*lengths.last()?, 3 + bits.take(2)?),
            17 => (0, 3 + bits.take(3)?),
            18 => (0, 11 + bits.take(7)?),
            _ => return None,
        };
        let repeat = usize::try_from(repeat).ok()?;
        if lengths.len() + repeat > total {
            return None;
        }
        lengths.resize(lengths.len() + repeat, value);
    }
    if lengths[256] == 0 {
        return None; // no end-of-block code
    }
    let (literal_lengths, distance_lengths) = lengths.split_at(literal_count);
    Some((Code::new(literal_lengths)?, Code::new(distance_lengths)?))
}

/// A block's literals and back-references, up to its end-of-block symbol.
fn codes(bits: &mut Bits, out: &mut Vec<u8>, literals: &Code, distances: &Code) -> Option<()> {
    loop {
        let symbol = literals.decode(bits)?;
        match symbol {
            0..=255 => out.push(u8::try_from(symbol).ok()?),
            256 => return Some(()),
            _ => {
                let i = usize::from(symbol - 257);
                let extra = u32::from(*LENGTH_EXTRA.get(i)?);
                let len = usize::from(LENGTH_BASE[i]) + usize::try_from(bits.take(extra)?).ok()?;
                let d = usize::from(distances.decode(bits)?);
                let extra = u32::from(*DISTANCE_EXTRA.get(d)?);
                let distance =
                    usize::from(DISTANCE_BASE[d]) + usize::try_from(bits.take(extra)?).ok()?;
                let from = out.len().checked_sub(distance)?;
                // Byte by byte: a copy may overlap what it is producing (distance < len).
                for k in from..from + len {
                    out.push(out[k]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip member of `data` in a stored (uncompressed) block, checked by hand.
    fn stored_member(data: &[u8]) -> Vec<u8> {
        let mut member = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        let len = u16::try_from(data.len()).unwrap();
        member.push(1); // last block, stored
        member.extend_from_slice(&len.to_le_bytes());
        member.extend_from_slice(&(!len).to_le_bytes());
        member.extend_from_slice(data);
        member.extend_from_slice(&[0; 4]); // CRC (not checked)
        member.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        member
    }

    #[test]
    fn a_stored_block_comes_back_as_it_was() {
        assert_eq!(gunzip(&stored_member(b"porch")).unwrap(), b"porch");
        assert_eq!(gunzip(&stored_member(b"")).unwrap(), b"");
    }

    #[test]
    fn a_fixed_code_block_with_an_overlapping_copy() {
        // `gzip -n -9` of "abcabcabcabc\n": fixed Huffman codes, a back-reference of length 9
        // at distance 3 (overlapping its own output).
        let member = [
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3, 0x4b, 0x4c, 0x4a, 0x4e, 0x84, 0x21, 0x2e, 0x00,
            0x0c, 0x9c, 0x39, 0x13, 0x0d, 0x00, 0x00, 0x00,
        ];
        assert_eq!(gunzip(&member).unwrap(), b"abcabcabcabc\n");
    }

    #[test]
    fn malformed_members_are_refused_not_panicked_on() {
        let good = stored_member(b"porchlight");
        assert!(gunzip(&good[..good.len() - 1]).is_none(), "cut trailer");
        let mut wrong_size = good.clone();
        let at = wrong_size.len() - 4;
        wrong_size[at] = 99;
        assert!(gunzip(&wrong_size).is_none(), "size mismatch");
        let mut bad_complement = good.clone();
        bad_complement[13] ^= 1;
        assert!(gunzip(&bad_complement).is_none());
        let mut bad_type = good.clone();
        bad_type[10] = 0b111; // block type 3
        assert!(gunzip(&bad_type).is_none());
        assert!(gunzip(b"not gzip at all, not even close").is_none());
        // Every truncation and every single-byte change of a compressed member.
        let compressed = crate::http::static_files::embedded_gzip("index.html").unwrap();
        for cut in 0..compressed.len() {
            let _ = gunzip(&compressed[..cut]);
        }
        for at in 10..compressed.len() {
            let mut changed = compressed.to_vec();
            changed[at] ^= 0x5a;
            let _ = gunzip(&changed);
        }
    }
}
