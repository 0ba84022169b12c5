//! Path normalisation and percent coding.
//!
//! [`normalise`] turns a raw request path into decoded segments, refusing before routing
//! anything that could mean two different things to the gateway and the upstream: `.` and
//! `..` segments (raw or encoded), encoded `/` and `\`, NUL and control bytes, bad escapes and
//! non-UTF-8. Empty segments (`//`, a trailing `/`) are dropped for routing, as nginx's
//! `merge_slashes`; a trailing `/` is remembered ([`Segments::trailing_slash`]) so that the
//! upstream hears `/articles/`, not `/articles` (a backend that appends the slash with a
//! redirect would loop).

use std::ops::Range;

/// A request path split into percent-decoded segments, stored in one string.
#[derive(Debug, Default, Clone)]
pub struct Segments {
    decoded: String,
    ranges: Vec<Range<u32>>,
    /// The path ended with `/` after at least one segment.
    trailing: bool,
}

impl Segments {
    /// Whether the path ended with `/` after its last segment (`/articles/`; not `/`).
    pub fn trailing_slash(&self) -> bool {
        self.trailing
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn get(&self, i: usize) -> &str {
        let r = &self.ranges[i];
        &self.decoded[r.start as usize..r.end as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Segments `from..` as a sub-view (after a base path is stripped).
    pub fn skip(&self, n: usize) -> SegView<'_> {
        SegView {
            segs: self,
            start: n.min(self.len()),
        }
    }

    pub fn view(&self) -> SegView<'_> {
        self.skip(0)
    }
}

/// A borrowed tail of [`Segments`].
#[derive(Clone, Copy)]
pub struct SegView<'a> {
    segs: &'a Segments,
    start: usize,
}

impl<'a> SegView<'a> {
    pub fn len(&self) -> usize {
        self.segs.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, i: usize) -> &'a str {
        self.segs.get(self.start + i)
    }
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    DotSegment,
    EncodedSeparator,
    ControlByte,
    NotUtf8,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "Invalid request path: must start with /",
            PathError::BadEscape => "Invalid request path: bad percent-encoding",
            PathError::DotSegment => "Invalid request path: dot segments are not allowed",
            PathError::EncodedSeparator => "Invalid request path: encoded / or \\ is not allowed",
            PathError::ControlByte => "Invalid request path: control characters are not allowed",
            PathError::NotUtf8 => "Invalid request path: not UTF-8",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits and decodes `path` (no query). Reuses `out`'s allocations.
pub(crate) fn normalise_into(path: &[u8], out: &mut Segments) -> Result<(), PathError> {
    out.decoded.clear();
    out.ranges.clear();
    out.trailing = false;
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut bytes: Vec<u8> = std::mem::take(&mut out.decoded).into_bytes();
    for raw in path[1..].split(|&b| b == b'/') {
        if raw.is_empty() {
            continue;
        }
        let start = bytes.len();
        // Most segments hold nothing to decode or refuse: copied whole.
        let mut i = 0;
        if raw
            .iter()
            .all(|&b| b != b'%' && b != b'\\' && b >= 0x20 && b != 0x7f)
        {
            bytes.extend_from_slice(raw);
            i = raw.len();
        }
        while i < raw.len() {
            let b = raw[i];
            let d = if b == b'%' {
                let (h, l) = match (
                    raw.get(i + 1).and_then(|&c| hex(c)),
                    raw.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(PathError::BadEscape),
                };
                i += 3;
                let d = (h << 4) | l;
                if d == b'/' || d == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                d
            } else {
                i += 1;
                if b == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                b
            };
            if d < 0x20 || d == 0x7f {
                return Err(PathError::ControlByte);
            }
            bytes.push(d);
        }
        let seg = &bytes[start..];
        if is_dot_segment(seg) {
            return Err(PathError::DotSegment);
        }
        // Each segment whole UTF-8 on its own: two halves of a character in two segments
        // (`/%C3/%A9`) would pass as one string and be cut inside a character.
        if !seg.is_ascii() && std::str::from_utf8(seg).is_err() {
            return Err(PathError::NotUtf8);
        }
        out.ranges.push(start as u32..bytes.len() as u32);
    }
    out.decoded = String::from_utf8(bytes).map_err(|_| PathError::NotUtf8)?;
    out.trailing = !out.ranges.is_empty() && path.ends_with(b"/");
    Ok(())
}

/// Convenience form of [`normalise_into`].
pub fn normalise(path: &[u8]) -> Result<Segments, PathError> {
    let mut s = Segments::default();
    normalise_into(path, &mut s)?;
    Ok(s)
}

/// Percent-decodes a form-encoded query name or value into `out` (`+` is a space); escapes
/// that are not two hex digits stay as they are.
pub(crate) fn form_decode_into(v: &[u8], out: &mut Vec<u8>) {
    decode_into(v, out, true)
}

/// Whether a decoded segment is `.` or `..`, or one of them with path parameters after a `;`
/// (`..;x`): servlet containers (Tomcat, Jetty) and Spring strip the parameters and then
/// resolve the dot segment, so `/api/..;/admin` reaches their `/admin`.
pub(crate) fn is_dot_segment(seg: &[u8]) -> bool {
    matches!(
        seg,
        [b'.'] | [b'.', b'.'] | [b'.', b';', ..] | [b'.', b'.', b';', ..]
    )
}

/// Whether a path, percent-decoded, has a `.` or `..` segment (split at `/` and `\`; see
/// [`is_dot_segment`]).
pub(crate) fn has_dot_segment(path: &[u8]) -> bool {
    let mut decoded = Vec::with_capacity(path.len());
    path_decode_into(path, &mut decoded);
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .any(is_dot_segment)
}

/// Percent-decodes a path as sent into `out` (`+` is itself); escapes that are not two hex
/// digits stay as they are.
pub(crate) fn path_decode_into(v: &[u8], out: &mut Vec<u8>) {
    decode_into(v, out, false)
}

fn decode_into(v: &[u8], out: &mut Vec<u8>, plus_is_space: bool) {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < v.len() {
        match (
            v[i],
            v.get(i + 1).copied().and_then(hex),
            v.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// Percent-encodes a value that must stay one component (a query name or value, a path
/// segment from untrusted text): everything but RFC 3986 unreserved characters.
pub(crate) fn encode_component(v: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

/// Percent-encodes one decoded path segment for the upstream request: everything but RFC
/// 3986 unreserved characters and the sub-delims that are safe in a segment.
pub(crate) fn encode_segment(seg: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in seg.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Result<Vec<String>, PathError> {
        normalise(p.as_bytes()).map(|s| s.iter().map(str::to_string).collect())
    }

    #[test]
    fn decodes_and_merges_slashes() {
        assert_eq!(segs("/pets//42/").unwrap(), vec!["pets", "42"]);
        assert_eq!(segs("/a%20b/%C3%A9").unwrap(), vec!["a b", "é"]);
        assert_eq!(segs("/").unwrap(), Vec::<String>::new());
        let trailing = |p: &str| normalise(p.as_bytes()).unwrap().trailing_slash();
        assert!(trailing("/pets/") && trailing("/pets//") && trailing("/a/b/"));
        assert!(!trailing("/") && !trailing("//") && !trailing("/pets"));
    }

    #[test]
    fn refuses_ambiguous_paths() {
        assert_eq!(segs("pets"), Err(PathError::NotAbsolute));
        assert_eq!(segs("/a/../b"), Err(PathError::DotSegment));
        assert_eq!(segs("/a/%2e%2e/b"), Err(PathError::DotSegment));
        assert_eq!(segs("/a/%2E/b"), Err(PathError::DotSegment));
        assert_eq!(segs("/a/./b"), Err(PathError::DotSegment));
        // With path parameters, as servlet containers strip them before resolving.
        assert_eq!(segs("/a/..;/b"), Err(PathError::DotSegment));
        assert_eq!(segs("/a/..;x=1/b"), Err(PathError::DotSegment));
        assert_eq!(segs("/a/%2e%2e%3b/b"), Err(PathError::DotSegment));
        assert_eq!(segs("/a/.;/b"), Err(PathError::DotSegment));
        assert!(segs("/a/...;/b").is_ok());
        assert!(segs("/a/..x;/b").is_ok());
        assert!(segs("/a/;..;/b").is_ok());
        assert!(has_dot_segment(b"/a/..;/b"));
        assert!(!has_dot_segment(b"/a/b;..;/c"));
        assert_eq!(segs("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(segs("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(segs("/a\\b"), Err(PathError::EncodedSeparator));
        assert_eq!(segs("/a%00b"), Err(PathError::ControlByte));
        assert_eq!(segs("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(segs("/a%4"), Err(PathError::BadEscape));
        assert_eq!(segs("/%ff%fe"), Err(PathError::NotUtf8));
        // Two halves of one character in two segments are two bad segments, not one good
        // string.
        assert_eq!(segs("/%C3/%A9"), Err(PathError::NotUtf8));
        assert_eq!(
            normalise(b"/\xd5/\xa7").map(|_| ()),
            Err(PathError::NotUtf8)
        );
        assert_eq!(segs("/%C3%A9/%C3%A9").unwrap(), vec!["\u{e9}", "\u{e9}"]);
        // The same refusals for raw bytes as for escaped ones.
        let raw = |p: &[u8]| normalise(p).map(|_| ());
        assert_eq!(raw(b"/ok/a\x01b"), Err(PathError::ControlByte));
        assert_eq!(raw(b"/ok/a\x7fb"), Err(PathError::ControlByte));
        assert_eq!(raw(b"/ok/\xff\xfe"), Err(PathError::NotUtf8));
        assert_eq!(raw(b"/ok/.."), Err(PathError::DotSegment));
        assert_eq!(segs("/caf\u{e9}/x").unwrap(), vec!["caf\u{e9}", "x"]);
        // Dots inside a name are fine.
        assert_eq!(
            segs("/a..b/.well-known").unwrap(),
            vec!["a..b", ".well-known"]
        );
    }

    #[test]
    fn encodes_what_a_segment_cannot_carry() {
        let mut out = Vec::new();
        encode_segment("a b/c?d#é", &mut out);
        assert_eq!(out, b"a%20b%2Fc%3Fd%23%C3%A9");
    }
}
