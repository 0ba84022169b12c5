//! Chunked transfer coding (RFC 9112 7.1), decoded incrementally so that bodies stream.
//!
//! The decoder tracks where it is in the framing and reports the data ranges of each fed
//! slice. It is strict, because a lenient reader is a smuggling hole: bare LF, a size past 64
//! bits (leading zeros are fine), a chunk line that is not `size *( BWS ";" BWS name [ BWS "=" BWS ( token /
//! quoted-string ) ] )` (so `5 `, `5\t`, `5 zz` and an unterminated quoted value are errors),
//! a chunk line over 4 KiB, a missing CRLF after the data, and a trailer line that is not a
//! well-formed field (no name, a space in the name, obs-fold, NUL or other controls) are all
//! errors. Request bodies are re-framed from the data ranges ([`reframe`]): the upstream sees
//! canonical chunk lines (the size in hex, no extensions) and no trailer fields.
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size {
        /// A digit was read.
        digits: bool,
    },
    /// Whitespace after the size or an extension: only `;` may follow.
    SizeBws,
    /// After `;`: optional whitespace, then an extension name.
    ExtNameStart,
    ExtName,
    /// Whitespace after an extension name: `=` or `;` follows.
    ExtNameBws,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtValStart,
    ExtToken,
    ExtQuoted,
    ExtQuotedEsc,
    ExtAfterQuote,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

use super::is_tchar as tchar;

/// A byte allowed in a field value or a quoted string: HTAB, SP, VCHAR, obs-text.
fn vchar_or_ws(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..0x7f).contains(&b) || b >= 0x80
}

/// What went wrong in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkError {
    Malformed,
    TooLarge,
}

#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    state: State,
    size: u64,
    remaining: u64,
    total: u64,
    limit: u64,
    trailer_bytes: usize,
    /// Bytes of the current chunk line (size and extensions).
    line_bytes: usize,
}

/// Trailer section bytes accepted (then `Malformed`).
const MAX_TRAILER: usize = 16 << 10;
/// Chunk line bytes accepted (then `Malformed`): extensions cannot grow without bound.
const MAX_CHUNK_LINE: usize = 4 << 10;

impl ChunkedDecoder {
    /// `limit` caps the decoded body size (`limits.max_body`).
    pub(crate) fn new(limit: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: false },
            size: 0,
            remaining: 0,
            total: 0,
            limit,
            trailer_bytes: 0,
            line_bytes: 0,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds bytes; returns how many were consumed (all of `input` unless the body ended in
    /// it). `on_data` receives the data ranges within `input`.
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(Range<usize>),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => {
                    if let Some(d) = (b as char).to_digit(16) {
                        // Leading zeros are valid (`1*HEXDIG`): the value is bounded, not the
                        // digits, which count towards the line's bound.
                        self.line_bytes += 1;
                        if self.size >> 60 != 0 || self.line_bytes > MAX_CHUNK_LINE {
                            return Err(ChunkError::Malformed);
                        }
                        self.size = (self.size << 4) | d as u64;
                        self.state = State::Size { digits: true };
                    } else if !digits {
                        return Err(ChunkError::Malformed);
                    } else {
                        self.state = match b {
                            b';' => State::ExtNameStart,
                            b' ' | b'\t' => State::SizeBws,
                            b'\r' => State::SizeLf,
                            _ => return Err(ChunkError::Malformed),
                        };
                    }
                    i += 1;
                }
                State::SizeBws
                | State::ExtNameStart
                | State::ExtName
                | State::ExtNameBws
                | State::ExtValStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedEsc
                | State::ExtAfterQuote => {
                    self.line_bytes += 1;
                    if self.line_bytes > MAX_CHUNK_LINE {
                        return Err(ChunkError::Malformed);
                    }
                    let ws = b == b' ' || b == b'\t';
                    self.state = match (self.state, b) {
                        (State::SizeBws, _) if ws => State::SizeBws,
                        (State::SizeBws, b';') => State::ExtNameStart,
                        (State::ExtNameStart, _) if ws => State::ExtNameStart,
                        (State::ExtNameStart, _) if tchar(b) => State::ExtName,
                        (State::ExtName, _) if tchar(b) => State::ExtName,
                        (State::ExtName, _) if ws => State::ExtNameBws,
                        (State::ExtName | State::ExtNameBws, b'=') => State::ExtValStart,
                        (State::ExtName | State::ExtNameBws, b';') => State::ExtNameStart,
                        (State::ExtNameBws, _) if ws => State::ExtNameBws,
                        (State::ExtName, b'\r') => State::SizeLf,
                        (State::ExtValStart, _) if ws => State::ExtValStart,
                        (State::ExtValStart, b'"') => State::ExtQuoted,
                        (State::ExtValStart, _) if tchar(b) => State::ExtToken,
                        (State::ExtToken, _) if tchar(b) => State::ExtToken,
                        (State::ExtToken | State::ExtAfterQuote, b';') => State::ExtNameStart,
                        (State::ExtToken | State::ExtAfterQuote, _) if ws => State::SizeBws,
                        (State::ExtToken | State::ExtAfterQuote, b'\r') => State::SizeLf,
                        (State::ExtQuoted, b'"') => State::ExtAfterQuote,
                        (State::ExtQuoted, b'\\') => State::ExtQuotedEsc,
                        (State::ExtQuoted | State::ExtQuotedEsc, _) if vchar_or_ws(b) => {
                            State::ExtQuoted
                        }
                        _ => return Err(ChunkError::Malformed),
                    };
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    i += 1;
                    self.line_bytes = 0;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.total = self.total.saturating_add(self.size);
                        if self.total > self.limit {
                            return Err(ChunkError::TooLarge);
                        }
                        self.remaining = self.size;
                        self.state = State::Data;
                    }
                    self.size = 0;
                }
                State::Data => {
                    let n = (self.remaining.min((input.len() - i) as u64)) as usize;
                    on_data(i..i + n);
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::DataLf;
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::Size { digits: false };
                    i += 1;
                }
                State::TrailerStart | State::TrailerName | State::TrailerValue => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER {
                        return Err(ChunkError::Malformed);
                    }
                    // A trailer line is a field: a token, a colon, a value of visible
                    // characters and whitespace. No obs-fold, no empty name, no controls.
                    self.state = match (self.state, b) {
                        (State::TrailerStart, b'\r') => State::EndLf,
                        (State::TrailerStart | State::TrailerName, _) if tchar(b) => {
                            State::TrailerName
                        }
                        (State::TrailerName, b':') => State::TrailerValue,
                        (State::TrailerValue, b'\r') => State::TrailerLf,
                        (State::TrailerValue, _) if vchar_or_ws(b) => State::TrailerValue,
                        _ => return Err(ChunkError::Malformed),
                    };
                    i += 1;
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::TrailerStart;
                    i += 1;
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::Done;
                    return Ok(i + 1);
                }
                State::Done => return Ok(i),
            }
        }
        Ok(i)
    }
}

/// Re-frames what one [`ChunkedDecoder::feed`] consumed of `input`: each data range becomes a
/// canonical chunk (`<hex size>` CRLF data CRLF), and the end of the body (`done`) the last
/// chunk with no trailer fields (`0` CRLF CRLF). Extensions and trailers are not forwarded.
pub(crate) fn reframe(input: &[u8], ranges: &[Range<usize>], done: bool, out: &mut Vec<u8>) {
    use std::io::Write;
    for r in ranges.iter().filter(|r| !r.is_empty()) {
        let _ = write!(out, "{:x}\r\n", r.len());
        out.extend_from_slice(&input[r.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    if done {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], limit: u64) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(limit);
        let mut data = Vec::new();
        let n = d.feed(input, |r| data.extend_from_slice(&input[r]))?;
        Ok((n, data, d.is_done()))
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (n, data, done) = decode(body, 100).unwrap();
        assert_eq!(data, b"hello world");
        assert!(done);
        assert_eq!(&body[n..], b"NEXT");
    }

    #[test]
    fn decodes_byte_by_byte() {
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new(100);
        let mut data = Vec::new();
        for b in body.chunks(1) {
            let n = d.feed(b, |r| data.extend_from_slice(&b[r])).unwrap();
            assert_eq!(n, 1);
        }
        assert!(d.is_done());
        assert_eq!(data, b"0123456789");
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"\r\n",
            b"0\r\n\n",
            b"-1\r\n",
            b"5\r\r\n",
            // Whitespace that leads to no extension, junk after the size, unterminated quotes.
            b"5 \r\n",
            b"5\t\r\n",
            b"5 zz\r\n",
            b"5;a=\"x\r\n",
            b"5;\r\n",
            b"5;a=\r\n",
            b"5;a b\r\n",
            b"5;a=\"\x01\"\r\n",
            // Trailers that are not fields.
            b"0\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            b"0\r\nX-A: 1\r\n folded\r\n\r\n",
            b"0\r\nX-A: a\x00b\r\n\r\n",
            b"0\r\n: v\r\n\r\n",
            b"0\r\nX-A 1\r\n\r\n",
        ] {
            assert_eq!(
                decode(bad, 100).unwrap_err(),
                ChunkError::Malformed,
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn accepts_well_formed_extensions_and_trailers() {
        for good in [
            &b"5;a=b\r\nhello\r\n0\r\n\r\n"[..],
            b"5 ; a = \"x y\" ; c\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"q\\\"x\";b\r\nhello\r\n0;last\r\nX-Sum: 1 2\r\nY:\r\n\r\n",
            // Leading zeros, past 16 digits (the value counts, not the digits).
            b"000000000000000000005\r\nhello\r\n00000000000000000000\r\n\r\n",
        ] {
            let (_, data, done) = decode(good, 100).unwrap_or_else(|e| panic!("{e:?}: {good:?}"));
            assert_eq!(data, b"hello");
            assert!(done);
        }
        // Extensions cannot grow a chunk line without bound.
        let mut long = b"5;a=".to_vec();
        long.extend(std::iter::repeat_n(b'x', 5000));
        assert_eq!(decode(&long, 100).unwrap_err(), ChunkError::Malformed);
        // Nor can zeros.
        let mut zeros = vec![b'0'; 5000];
        zeros.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        assert_eq!(decode(&zeros, 100).unwrap_err(), ChunkError::Malformed);
        // A value past 64 bits, however many zeros lead it.
        assert_eq!(
            decode(b"0000010000000000000000\r\n", 100).unwrap_err(),
            ChunkError::Malformed
        );
    }

    #[test]
    fn reframes_canonically() {
        let input = b"5;ext=\"v\"\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        // Fed in two pieces: the second chunk split across them.
        for piece in [&input[..22], &input[22..]] {
            let mut ranges = Vec::new();
            d.feed(piece, |r| ranges.push(r)).unwrap();
            reframe(piece, &ranges, d.is_done(), &mut out);
        }
        assert_eq!(out, b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n");
    }

    #[test]
    fn counts_against_the_limit() {
        assert_eq!(
            decode(b"5\r\nhello\r\n5\r\nworld\r\n", 8).unwrap_err(),
            ChunkError::TooLarge
        );
        assert!(decode(b"5\r\nhello\r\n0\r\n\r\n", 5).is_ok());
    }
}
