//! porchlight patch: a strict, bounded decoder for chunked request bodies (RFC 9112 §7.1),
//! replacing chunked_transfer's, which buffered a chunk-size line until its CR however long
//! it was, took any text `usize::from_str_radix` would, and accepted a bare LF after the size.
//!
//! Here a chunk-size line is at most [`MAX_LINE`] bytes: hex digits (at most 15, so the size
//! fits any integer), an optional extension, then CRLF. Chunk data is followed by CRLF;
//! trailer lines are bounded in length and number. Anything else is `InvalidData`; a body that
//! ends early is `UnexpectedEof`.

use std::io::{Error, ErrorKind, Read, Result};

/// Longest chunk-size or trailer line, CRLF included.
const MAX_LINE: usize = 1024;
/// Most trailer lines after the last chunk.
const MAX_TRAILERS: usize = 32;
/// Most hex digits in a chunk size.
const MAX_SIZE_DIGITS: usize = 15;

enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailers(usize),
    Done,
}

pub struct ChunkedDecoder<R> {
    source: R,
    state: State,
}

fn invalid(why: &'static str) -> Error {
    Error::new(ErrorKind::InvalidData, why)
}

impl<R: Read> ChunkedDecoder<R> {
    pub fn new(source: R) -> ChunkedDecoder<R> {
        ChunkedDecoder {
            source,
            state: State::Size,
        }
    }

    fn byte(&mut self) -> Result<u8> {
        let mut one = [0u8; 1];
        loop {
            match self.source.read(&mut one) {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::UnexpectedEof,
                        "the chunked body ended early",
                    ))
                }
                Ok(_) => return Ok(one[0]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// One line without its CRLF, at most `MAX_LINE` bytes, printable ASCII or HTAB only.
    fn line(&mut self) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            let b = self.byte()?;
            match b {
                b'\r' => {
                    return if self.byte()? == b'\n' {
                        Ok(line)
                    } else {
                        Err(invalid("a bare CR in the chunked body's framing"))
                    };
                }
                b'\n' => return Err(invalid("a bare LF in the chunked body's framing")),
                b'\t' | 0x20..=0x7e => line.push(b),
                _ => return Err(invalid("a control byte in the chunked body's framing")),
            }
            if line.len() + 2 > MAX_LINE {
                return Err(invalid("a chunk-size or trailer line is too long"));
            }
        }
    }

    fn chunk_size(&mut self) -> Result<u64> {
        let line = self.line()?;
        let digits_end = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let (digits, rest) = line.split_at(digits_end);
        if digits.is_empty() || digits.len() > MAX_SIZE_DIGITS {
            return Err(invalid("a chunk size is not 1 to 15 hex digits"));
        }
        // An extension (`;name=value`, ignored) may follow, after optional whitespace.
        let rest = rest
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .map_or(&rest[rest.len()..], |at| &rest[at..]);
        if !rest.is_empty() && rest[0] != b';' {
            return Err(invalid("a chunk size is followed by something other than ;"));
        }
        let text = std::str::from_utf8(digits).map_err(|_| invalid("a chunk size"))?;
        u64::from_str_radix(text, 16).map_err(|_| invalid("a chunk size"))
    }
}

impl<R: Read> Read for ChunkedDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Size => {
                    let size = self.chunk_size()?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(0);
                    }
                    let room = buf
                        .len()
                        .min(std::convert::TryFrom::try_from(left).unwrap_or(usize::MAX));
                    let n = self.source.read(&mut buf[..room])?;
                    if n == 0 {
                        return Err(Error::new(
                            ErrorKind::UnexpectedEof,
                            "the chunked body ended inside a chunk",
                        ));
                    }
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(n);
                }
                State::DataEnd => {
                    if !self.line()?.is_empty() {
                        return Err(invalid("a chunk's data is longer than its size"));
                    }
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    if self.line()?.is_empty() {
                        self.state = State::Done;
                    } else if seen + 1 >= MAX_TRAILERS {
                        return Err(invalid("too many trailer lines"));
                    } else {
                        self.state = State::Trailers(seen + 1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkedDecoder;
    use std::io::{ErrorKind, Read};

    fn decode(input: &[u8]) -> Result<Vec<u8>, ErrorKind> {
        let mut out = Vec::new();
        ChunkedDecoder::new(input)
            .read_to_end(&mut out)
            .map(|_| out)
            .map_err(|e| e.kind())
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        assert_eq!(decode(b"3\r\nhel\r\nB\r\nlo world!!!\r\n0\r\n\r\n").unwrap(), b"hello world!!!");
        assert_eq!(decode(b"3;ext=1\r\nabc\r\n0 ;x\r\nTrailer: y\r\n\r\n").unwrap(), b"abc");
        assert_eq!(decode(b"0\r\n\r\n").unwrap(), b"");
        assert_eq!(decode(b"0003\r\nabc\r\n0\r\n\r\n").unwrap(), b"abc");
    }

    #[test]
    fn refuses_what_is_not_strict_chunked_framing() {
        for bad in [
            &b"3\nabc\r\n0\r\n\r\n"[..],
            b"3\rabc\r\n0\r\n\r\n",
            b"x\r\nabc\r\n0\r\n\r\n",
            b"-3\r\nabc\r\n0\r\n\r\n",
            b"+3\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b" 3\r\nabc\r\n0\r\n\r\n",
            b"3 4\r\nabcd\r\n0\r\n\r\n",
            b"ffffffffffffffffff\r\nx\r\n",
            b"3\r\nabcd\r\n0\r\n\r\n",
            b"3\r\nabc0\r\n\r\n",
        ] {
            let result = decode(bad);
            assert!(
                matches!(result, Err(ErrorKind::InvalidData) | Err(ErrorKind::UnexpectedEof)),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_long_size_line_is_cut_at_the_limit() {
        let mut endless = vec![b'1'; 10 << 20];
        endless.extend_from_slice(b"\r\n");
        let mut decoder = ChunkedDecoder::new(&endless[..]);
        let mut out = Vec::new();
        assert_eq!(decoder.read_to_end(&mut out).unwrap_err().kind(), ErrorKind::InvalidData);
        // It read at most a line's worth of the input.
        let mut rest = Vec::new();
        decoder.source.read_to_end(&mut rest).unwrap();
        assert!(endless.len() - rest.len() <= super::MAX_LINE);
    }

    #[test]
    fn a_body_that_ends_early_is_unexpected_eof() {
        assert_eq!(decode(b"5\r\nab"), Err(ErrorKind::UnexpectedEof));
        assert_eq!(decode(b"5\r\nabcde\r\n"), Err(ErrorKind::UnexpectedEof));
        assert_eq!(decode(b""), Err(ErrorKind::UnexpectedEof));
    }
}
