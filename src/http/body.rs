//! Chunked transfer coding (RFC 9112 7.1), decoded incrementally so that bodies stream.
//!
//! The decoder tracks where it is in the framing and reports the data ranges of each fed
//! slice; the proxy forwards the raw bytes as they are (the framing passes through unchanged,
//! so nothing is copied) or the data ranges alone (for HTTP/1.0 clients). It is strict: bare
//! LF, a size over 16 hex digits, bytes after the size other than an extension, or a missing
//! CRLF after the data are errors, because a lenient reader is a smuggling hole.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { digits: u8 },
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
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
}

/// Trailer section bytes accepted (then `Malformed`).
const MAX_TRAILER: usize = 16 << 10;

impl ChunkedDecoder {
    /// `limit` caps the decoded body size (`limits.max_body`).
    pub(crate) fn new(limit: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            total: 0,
            limit,
            trailer_bytes: 0,
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
                        if digits >= 16 {
                            return Err(ChunkError::Malformed);
                        }
                        self.size = (self.size << 4) | d as u64;
                        self.state = State::Size { digits: digits + 1 };
                    } else if digits == 0 {
                        return Err(ChunkError::Malformed);
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = State::Ext;
                    } else if b == b'\r' {
                        self.state = State::SizeLf;
                    } else {
                        return Err(ChunkError::Malformed);
                    }
                    i += 1;
                }
                State::Ext => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                        return Err(ChunkError::Malformed);
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    i += 1;
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
                    self.state = State::Size { digits: 0 };
                    i += 1;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::EndLf
                    } else {
                        State::TrailerLine
                    };
                    if b == b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.trailer_bytes += 1;
                    i += 1;
                }
                State::TrailerLine => {
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILER {
                        return Err(ChunkError::Malformed);
                    }
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
        ] {
            assert_eq!(
                decode(bad, 100).unwrap_err(),
                ChunkError::Malformed,
                "accepted {bad:?}"
            );
        }
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
