//! Response compression on stages with `compression`: gzip or brotli, by the client's
//! `Accept-Encoding` (q-values honoured; brotli preferred at equal weight), for answers of a
//! listed media type between `min_size` and `max_size` that are not encoded already and are
//! not partial. Answers the gateway holds whole are compressed: its own (mocks, errors), cache
//! hits (each encoding made once per entry and kept with it), and proxied answers of known
//! length up to `max_size` (read whole first; larger or unframed ones stream as they are).
//! Stages without it pay one branch.

use std::io::Write;

use crate::config::Compression;
use crate::http::h1::RequestHead;

/// A content coding Tollgate writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Gzip,
    Br,
}

impl Encoding {
    pub(crate) fn token(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Br => "br",
        }
    }

    /// Index into per-encoding storage.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The encoding the client accepts best, if any (RFC 9110 12.5.3).
pub(crate) fn accepted(head: &RequestHead) -> Option<Encoding> {
    let mut best: Option<(u16, Encoding)> = None;
    let mut star: Option<u16> = None;
    // `*` stands for the codings not listed: gzip, when it is not.
    let mut gzip_listed = false;
    for v in head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"accept-encoding"))
        .map(|(_, v)| v)
    {
        for item in v.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let coding = parts.next().unwrap_or_default().trim_ascii();
            let q = parts.find_map(|p| {
                let p = p.trim_ascii();
                p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q="))
            });
            // A malformed weight (`q=abc`, `q=1.5`) makes the entry one not to honour, as
            // nginx does: neither taken nor refused.
            let Some(q) = q.map_or(Some(1000), qvalue) else {
                continue;
            };
            let enc = if coding.eq_ignore_ascii_case(b"br") {
                Encoding::Br
            } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip")
            {
                Encoding::Gzip
            } else {
                if coding == b"*" {
                    star = Some(q);
                }
                continue;
            };
            if enc == Encoding::Gzip {
                gzip_listed = true;
            }
            let better = match best {
                None => true,
                Some((bq, be)) => {
                    q > bq || (q == bq && enc == Encoding::Br && be == Encoding::Gzip)
                }
            };
            if q > 0 && better {
                best = Some((q, enc));
            }
        }
    }
    match (best, star) {
        (Some((bq, _)), Some(sq)) if sq > bq && !gzip_listed => Some(Encoding::Gzip),
        (Some((_, e)), _) => Some(e),
        (None, Some(sq)) if sq > 0 && !gzip_listed => Some(Encoding::Gzip),
        (None, _) => None,
    }
}

/// An RFC 9110 12.4.2 weight in thousandths: `0`, `0.` and up to three digits, `1`, or `1.`
/// and up to three zeros; `None` for anything else.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(i) => (&v[..i], Some(&v[i + 1..])),
        None => (v, None),
    };
    let frac = frac.unwrap_or_default();
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = frac
        .iter()
        .chain(std::iter::repeat(&b'0'))
        .take(3)
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Whether an answer would be compressed for a client that accepts it: a status with a
/// whole body, a listed type, no encoding yet, and a size within bounds.
pub(crate) fn eligible<'h>(
    c: &Compression,
    status: u16,
    mut headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    len: usize,
) -> bool {
    if !matches!(status, 200..=203 | 400..=599)
        || (len as u64) < c.min_size
        || (len as u64) > c.max_size
    {
        return false;
    }
    let mut typed = false;
    for (n, v) in headers.by_ref() {
        if n.eq_ignore_ascii_case(b"content-encoding")
            && !v.trim_ascii().eq_ignore_ascii_case(b"identity")
        {
            return false;
        }
        if n.eq_ignore_ascii_case(b"content-range") {
            return false;
        }
        if n.eq_ignore_ascii_case(b"cache-control") && crate::http::has_token(v, b"no-transform") {
            return false;
        }
        if n.eq_ignore_ascii_case(b"content-type") {
            typed = c.type_matches(v);
        }
    }
    typed
}

thread_local! {
    /// Bytes of answers this shard holds whole, to compress or to render them (a shard is one
    /// thread).
    static HELD: Cell<u64> = const { Cell::new(0) };
    /// Bytes of answers this shard collects to store in a stage cache: an account of its own,
    /// so that an answer collected and compressed does not compete with itself.
    static CACHED: Cell<u64> = const { Cell::new(0) };
}

use std::cell::Cell;

/// Which of the shard's accounts a [`Held`] counts in.
type Account = &'static std::thread::LocalKey<Cell<u64>>;

/// What one answer holds of its shard's memory: counted against `limits.body_memory` (an
/// account of its own beside request bodies', and one for bodies the cache collects), given
/// back as it shrinks and when dropped. Slow clients each pinning a large answer and its
/// compressed copy were bounded by nothing.
pub(crate) struct Held(u64, Account);

impl Held {
    /// `None` when the shard's other answers hold the budget: this one goes uncompressed.
    /// An answer alone on its shard always fits, and so does one of no bytes.
    pub(crate) fn take(bytes: u64, budget: u64) -> Option<Held> {
        Self::take_in(&HELD, bytes, budget)
    }

    /// [`Held::take`] in the account of bodies collected for the cache.
    pub(crate) fn for_cache(bytes: u64, budget: u64) -> Option<Held> {
        Self::take_in(&CACHED, bytes, budget)
    }

    fn take_in(account: Account, bytes: u64, budget: u64) -> Option<Held> {
        account.with(|h| {
            if bytes > 0 && h.get() > 0 && h.get().saturating_add(bytes) > budget {
                return None;
            }
            h.set(h.get() + bytes);
            Some(Held(bytes, account))
        })
    }

    /// Holds nothing (yet), in the cache's account.
    pub(crate) fn none_for_cache() -> Held {
        Held(0, &CACHED)
    }

    /// What it holds.
    pub(crate) fn bytes(&self) -> u64 {
        self.0
    }

    /// Holds `bytes` more, unless the shard's other answers hold the budget (`false`: nothing
    /// more held). One alone on its shard always grows.
    pub(crate) fn grow(&mut self, bytes: u64, budget: u64) -> bool {
        let mine = self.0;
        let ok = self.1.with(|h| {
            if h.get() > mine && h.get().saturating_add(bytes) > budget {
                return false;
            }
            h.set(h.get() + bytes);
            true
        });
        if ok {
            self.0 += bytes;
        }
        ok
    }

    /// Holds only `to` bytes from now on (the plain body dropped, the coded one kept).
    pub(crate) fn shrink(&mut self, to: u64) {
        let less = self.0.saturating_sub(to);
        self.1.with(|h| h.set(h.get().saturating_sub(less)));
        self.0 -= less;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let n = self.0;
        self.1.with(|h| h.set(h.get().saturating_sub(n)));
    }
}

/// Fields of the identity answer a coded body does not carry: a `Content-Encoding` (the
/// coding applied replaces an `identity`, RFC 9110 8.4.1) and `Accept-Ranges` (byte ranges of
/// the identity body, as nginx's gzip clears them).
pub(crate) fn replaced_by_coding(name: &[u8]) -> bool {
    name.trim_ascii().eq_ignore_ascii_case(b"content-encoding")
        || name.trim_ascii().eq_ignore_ascii_case(b"accept-ranges")
}

/// `body` compressed.
pub(crate) fn compress(c: &Compression, enc: Encoding, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() / 3 + 64);
    match enc {
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(&mut out, flate2::Compression::new(c.level));
            let _ = e.write_all(body);
            let _ = e.finish();
        }
        Encoding::Br => {
            // Quality 1..5 from level 1..9: higher qualities cost tens of times the CPU for a
            // few percent, and this runs on the shard; a 64 KiB window is plenty here.
            let quality = (c.level * 5).div_ceil(9).clamp(1, 5);
            let mut w = brotli::CompressorWriter::new(&mut out, 16 << 10, quality, 16);
            let _ = w.write_all(body);
            let _ = w.flush();
            drop(w);
        }
    }
    out
}

/// The header lines of a compressed answer: its coding, and that it depends on what the
/// client accepts.
pub(crate) fn lines(out: &mut Vec<u8>, enc: Option<Encoding>) {
    if let Some(e) = enc {
        out.extend_from_slice(b"content-encoding: ");
        out.extend_from_slice(e.token().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"vary: accept-encoding\r\n");
}

/// A request body decoded as its `Content-Encoding` lines say (`codings`, in order): gzip
/// (every member), br or deflate, up to `max` bytes (`TooLarge` past it — a compression bomb). Empty
/// entries and `identity` are skipped (RFC 9110 8.4.1); a body with no other coding is returned
/// as it is. Codings applied one over another are undone last first.
pub(crate) fn decode_request<'b, 'h>(
    codings: impl Iterator<Item = &'h [u8]>,
    body: &'b [u8],
    max: u64,
) -> Result<std::borrow::Cow<'b, [u8]>, DecodeError> {
    let mut applied: Vec<Coding> = Vec::new();
    for c in codings.flat_map(|v| v.split(|&b| b == b',')) {
        let c = c.trim_ascii();
        if c.is_empty() || c.eq_ignore_ascii_case(b"identity") {
            continue;
        }
        applied.push(
            if c.eq_ignore_ascii_case(b"gzip") || c.eq_ignore_ascii_case(b"x-gzip") {
                Coding::Gzip
            } else if c.eq_ignore_ascii_case(b"br") {
                Coding::Br
            } else if c.eq_ignore_ascii_case(b"deflate") {
                Coding::Deflate
            } else {
                return Err(DecodeError::Unsupported);
            },
        );
    }
    let mut out = std::borrow::Cow::Borrowed(body);
    for enc in applied.into_iter().rev() {
        out = std::borrow::Cow::Owned(decode_one(enc, &out, max)?);
    }
    Ok(out)
}

/// A request body's coding.
#[derive(Clone, Copy)]
enum Coding {
    Gzip,
    Br,
    Deflate,
}

/// `body` decoded from one coding, up to `max` bytes.
fn decode_one(enc: Coding, body: &[u8], max: u64) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let mut out = Vec::new();
    let limit = max + 1;
    let read = match enc {
        // Every member, as gzip readers (and so origins) do: a body of several members was
        // checked on its first alone.
        Coding::Gzip => flate2::read::MultiGzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        Coding::Br => brotli::Decompressor::new(body, 16 << 10)
            .take(limit)
            .read_to_end(&mut out),
        // "deflate" is the zlib format (RFC 9110 8.4.1.2); some clients send the raw
        // deflate stream under that name, which readers take too.
        Coding::Deflate => {
            let zlib = body.first().is_some_and(|&b| b & 0x0f == 8)
                && body.len() >= 2
                && (u16::from(body[0]) << 8 | u16::from(body[1])) % 31 == 0;
            let as_zlib = zlib.then(|| {
                flate2::read::ZlibDecoder::new(body)
                    .take(limit)
                    .read_to_end(&mut out)
            });
            match as_zlib {
                Some(Ok(n)) => Ok(n),
                // A raw stream whose first bytes happen to read as a zlib header.
                _ => {
                    out.clear();
                    flate2::read::DeflateDecoder::new(body)
                        .take(limit)
                        .read_to_end(&mut out)
                }
            }
        }
    };
    match read {
        Ok(_) if out.len() as u64 > max => Err(DecodeError::TooLarge),
        Ok(_) => Ok(out),
        Err(_) => Err(DecodeError::Corrupt),
    }
}

/// The `Accept-Encoding` of a 415 for a request body in a coding Tollgate does not decode
/// (RFC 9110 15.5.16): the codings it does.
pub(crate) const DECODES: &str = "gzip, br, deflate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    TooLarge,
    Corrupt,
    Unsupported,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(ae: &str) -> RequestHead {
        let raw = format!("GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: {ae}\r\n\r\n");
        let (len, parts) = crate::http::h1::parse_request(raw.as_bytes(), 1 << 14)
            .unwrap()
            .unwrap();
        parts.into_head(bytes::Bytes::copy_from_slice(&raw.as_bytes()[..len]))
    }

    #[test]
    fn accept_encoding_is_weighed() {
        assert_eq!(accepted(&head("gzip, deflate, br")), Some(Encoding::Br));
        assert_eq!(
            accepted(&head("gzip;q=1.0, br;q=0.5")),
            Some(Encoding::Gzip)
        );
        assert_eq!(accepted(&head("br;q=0, gzip;q=0")), None);
        assert_eq!(accepted(&head("identity")), None);
        assert_eq!(accepted(&head("*")), Some(Encoding::Gzip));
        assert_eq!(accepted(&head("deflate")), None);
        assert_eq!(accepted(&head("gzip;q=0, *")), None);
        // `*` weighs the codings not listed (gzip, unless it is).
        assert_eq!(accepted(&head("br;q=0.5, *")), Some(Encoding::Gzip));
        assert_eq!(
            accepted(&head("br;q=0.5, gzip;q=0.4, *")),
            Some(Encoding::Br)
        );
        assert_eq!(accepted(&head("br, *;q=0.5")), Some(Encoding::Br));
        assert_eq!(accepted(&head("br;q=0.5, *;q=0.5")), Some(Encoding::Br));
        assert_eq!(accepted(&head("br;q=0, *")), Some(Encoding::Gzip));
        // Malformed weights: the entry is not honoured (nginx), neither taken nor refused.
        assert_eq!(accepted(&head("gzip;q=abc")), None);
        assert_eq!(accepted(&head("gzip;q=1.5")), None);
        assert_eq!(
            accepted(&head("br;q=0.5x, gzip;q=0.2")),
            Some(Encoding::Gzip)
        );
        assert_eq!(accepted(&head("gzip;q=-1, *")), Some(Encoding::Gzip));
        assert_eq!(accepted(&head("gzip;q=0.001")), Some(Encoding::Gzip));
        assert_eq!(
            accepted(&head("gzip;q=1.000, br;q=0.999")),
            Some(Encoding::Gzip)
        );
        assert_eq!(accepted(&head("gzip;q=0.")), None);
        for (v, q) in [
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("1.", Some(1000)),
            ("0.1234", None),
            ("1.001", None),
            ("", None),
            (".5", None),
        ] {
            assert_eq!(qvalue(v.as_bytes()), q, "{v}");
        }
    }

    #[test]
    fn both_codings_round_trip_and_bombs_are_bounded() {
        let c = Compression {
            min_size: 0,
            max_size: 1 << 20,
            types: vec!["text/*".into()],
            level: 5,
        };
        let body = "hello hello hello ".repeat(200);
        for (enc, name) in [(Encoding::Gzip, &b"gzip"[..]), (Encoding::Br, &b"br"[..])] {
            let z = compress(&c, enc, body.as_bytes());
            assert!(z.len() < body.len() / 5, "{enc:?}");
            assert_eq!(
                &*decode_request(std::iter::once(name), &z, 1 << 20).unwrap(),
                body.as_bytes()
            );
            assert_eq!(
                decode_request(std::iter::once(name), &z, 100),
                Err(DecodeError::TooLarge)
            );
        }
        assert_eq!(
            decode_request(std::iter::once(&b"gzip"[..]), b"not gzip", 100),
            Err(DecodeError::Corrupt)
        );
        // Members are decoded one after the other, within the same bound; bytes after the
        // last one that are not a member are corrupt.
        let (a, b) = (
            compress(&c, Encoding::Gzip, b"hello "),
            compress(&c, Encoding::Gzip, b"world"),
        );
        let two = [a.clone(), b].concat();
        assert_eq!(
            &*decode_request(std::iter::once(&b"gzip"[..]), &two, 100).unwrap(),
            b"hello world"
        );
        assert_eq!(
            decode_request(std::iter::once(&b"gzip"[..]), &two, 8),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            decode_request(
                std::iter::once(&b"gzip"[..]),
                &[a, b"\x00\xffjunk".to_vec()].concat(),
                100
            ),
            Err(DecodeError::Corrupt)
        );
        // identity and empty entries are skipped; codings applied in turn are undone in turn;
        // any other coding is refused.
        let z = compress(&c, Encoding::Gzip, b"x");
        let lines = |l: &'static [&'static [u8]]| l.iter().copied();
        assert_eq!(
            &*decode_request(lines(&[b"", b"identity, gzip"]), &z, 10).unwrap(),
            b"x"
        );
        let zb = compress(&c, Encoding::Br, &z);
        assert_eq!(
            &*decode_request(lines(&[b"gzip", b" br"]), &zb, 100).unwrap(),
            b"x"
        );
        assert!(matches!(
            decode_request(lines(&[b"", b" , identity"]), b"plain", 10),
            Ok(std::borrow::Cow::Borrowed(b"plain"))
        ));
        // deflate: the zlib format, and the raw stream some clients send under its name.
        use std::io::Write;
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(b"zlib body").unwrap();
        let zl = zl.finish().unwrap();
        assert_eq!(
            &*decode_request(lines(&[b"deflate"]), &zl, 100).unwrap(),
            b"zlib body"
        );
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(b"raw body").unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            &*decode_request(lines(&[b"Deflate"]), &raw, 100).unwrap(),
            b"raw body"
        );
        assert_eq!(
            decode_request(lines(&[b"deflate"]), &zl, 4),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            decode_request(lines(&[b"zstd"]), &z, 10),
            Err(DecodeError::Unsupported)
        );
        assert_eq!(
            decode_request(lines(&[b"gzip, compress"]), &z, 10),
            Err(DecodeError::Unsupported)
        );
        assert!(c.type_matches(b"text/html; charset=utf-8"));
        assert!(!c.type_matches(b"image/png"));
    }
}
