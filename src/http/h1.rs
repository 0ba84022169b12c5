//! HTTP/1.1 message heads (RFC 9112): parsing with `httparse`, then the framing rules that
//! `httparse` leaves to us. Anything ambiguous is refused, because a gateway that reads a
//! message differently from its upstream is a request-smuggling hole:
//! `Content-Length` with `Transfer-Encoding`, differing `Content-Length`s, a transfer coding
//! other than a final `chunked`, `Transfer-Encoding` in HTTP/1.0, more than one `Host`.
//! Obsolete line folding, whitespace before the colon and bare CRs are refused by `httparse`.
//!
//! A head is kept as the [`Bytes`] it arrived in plus ranges into it, so parsing copies nothing.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::Bytes;

use super::{name_eq, ConnTokens};
use crate::syntax::Method;

/// Headers per message beyond which the head is refused with 431.
pub(crate) const MAX_HEADERS: usize = 128;

/// Body framing of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body ends when the connection closes.
    UntilClose,
}

/// Why a head was refused. Maps to 400 or 431 (requests) or 502 (responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    Malformed(&'static str),
    TooLarge,
    /// The request line alone does not fit in the head's limit (414, RFC 9112 3).
    UriTooLong,
    /// An HTTP version above 1.x in an HTTP/1 request line (505, RFC 9110 15.6.6).
    VersionNotSupported,
    /// An `Expect` other than `100-continue` (417, RFC 9110 10.1.1).
    Expectation,
    /// CONNECT: the gateway opens no tunnels (405, as over HTTP/2).
    Connect,
    /// A request body in a transfer coding the gateway does not know, before a final
    /// `chunked` (501, RFC 9112 6.1).
    UnknownCoding,
}

/// Header ranges, inline for typical heads: no allocation per message.
pub(crate) type Headers = smallvec::SmallVec<[HeaderRange; 16]>;

#[derive(Debug, Clone)]
pub struct HeaderRange {
    pub name: Range<u32>,
    pub value: Range<u32>,
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub raw: Bytes,
    pub method: Method,
    pub method_range: Range<u32>,
    /// The path (origin-form, without query).
    pub path: Range<u32>,
    /// The query without `?`, if any.
    pub query: Option<Range<u32>>,
    /// HTTP/1.x minor version.
    pub minor: u8,
    pub headers: Headers,
    /// Host header, or the authority of an absolute-form target.
    pub host: Option<Range<u32>>,
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// `Connection: upgrade` with `Upgrade: websocket` (the one protocol relayed), in an
    /// HTTP/1.1 request (RFC 9110 7.8: an HTTP/1.0 request's Upgrade is ignored).
    pub upgrade: bool,
}

impl RequestHead {
    #[inline]
    pub fn slice(&self, r: &Range<u32>) -> &[u8] {
        &self.raw[r.start as usize..r.end as usize]
    }

    pub fn method_bytes(&self) -> &[u8] {
        self.slice(&self.method_range)
    }

    /// The method as sent (`PROPFIND`, not [`Method::Other`]'s name): a token, ASCII.
    pub fn method_text(&self) -> &str {
        std::str::from_utf8(self.method_bytes()).unwrap_or_default()
    }

    pub fn path_bytes(&self) -> &[u8] {
        self.slice(&self.path)
    }

    pub fn query_bytes(&self) -> Option<&[u8]> {
        self.query.as_ref().map(|q| self.slice(q))
    }

    pub fn host_bytes(&self) -> Option<&[u8]> {
        self.host.as_ref().map(|h| self.slice(h))
    }

    /// Iterates (name, value) pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.headers
            .iter()
            .map(|h| (self.slice(&h.name), self.slice(&h.value)))
    }

    /// The first value of a header.
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| name_eq(n, name))
            .map(|(_, v)| v)
    }
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub raw: Bytes,
    pub status: u16,
    pub reason: Range<u32>,
    pub headers: Headers,
    pub framing: Framing,
    /// The upstream will keep the connection open after this response.
    pub keep_alive: bool,
}

impl ResponseHead {
    #[inline]
    pub(crate) fn slice(&self, r: &Range<u32>) -> &[u8] {
        &self.raw[r.start as usize..r.end as usize]
    }

    pub(crate) fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.headers
            .iter()
            .map(|h| (self.slice(&h.name), self.slice(&h.value)))
    }
}

/// Where `part`, a slice of `base` (as httparse gives a line's parts), lies in it.
fn offset(base: &[u8], part: &[u8]) -> Range<u32> {
    let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    debug_assert!(start <= base.len(), "a part outside the head");
    start as u32..(start + part.len()) as u32
}

/// [`offset`] for what may not be a slice of `base`: httparse gives a static `""` for a missing
/// or non-ASCII reason phrase, which is the empty range at 0.
fn offset_checked(base: &[u8], part: &[u8]) -> Range<u32> {
    let (b, p) = (base.as_ptr() as usize, part.as_ptr() as usize);
    match p.checked_sub(b) {
        Some(start) if start + part.len() <= base.len() => {
            start as u32..(start + part.len()) as u32
        }
        _ => 0..0,
    }
}

/// The bytes a `Host` value may hold: a reg-name, an IPv4 or bracketed IPv6 address, a port.
const HOST_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b':' | b'[' | b']');
        b += 1;
    }
    t
};

/// Whether a `Host` value (or an absolute-form target's authority) is one (RFC 9110 7.2,
/// RFC 3986 3.2.2): a reg-name or IPv4 address of at most 255 bytes, or a bracketed IPv6
/// address; then, optionally, `:` and a port of up to 5 digits. `x:abc`, `[::1`, `a:1:2`
/// and a name over 255 bytes are not (400, RFC 9112 3.2).
fn valid_host(hv: &[u8]) -> bool {
    if hv.is_empty() || !hv.iter().all(|&b| HOST_CHARS[b as usize]) {
        return false;
    }
    let (name, port) = if hv[0] == b'[' {
        let Some(close) = hv.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &hv[1..close];
        if inside.is_empty()
            || !inside
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &hv[close + 1..] {
            [] => (&hv[..0], None),
            [b':', port @ ..] => (&hv[..0], Some(port)),
            _ => return false,
        }
    } else {
        match hv.iter().position(|&b| b == b':') {
            Some(i) => (&hv[..i], Some(&hv[i + 1..])),
            None => (hv, None),
        }
    };
    if name.len() > 255 || name.iter().any(|&b| b == b'[' || b == b']') {
        return false;
    }
    if hv[0] != b'[' && name.is_empty() {
        return false;
    }
    // A port is digits up to 65535 (or empty, RFC 3986 3.2.3).
    port.is_none_or(|p| {
        p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && p.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65535
    })
}

/// Parses one `Content-Length` value list ("5" or "5, 5"), requiring all entries equal.
fn content_length(v: &[u8], seen: &mut Option<u64>) -> Result<(), HeadError> {
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        // At most 19 digits: below 10^19, so no overflow of u64.
        if part.is_empty() || part.len() > 19 {
            return Err(HeadError::Malformed("Invalid Content-Length"));
        }
        let mut n = 0u64;
        for &b in part {
            if !b.is_ascii_digit() {
                return Err(HeadError::Malformed("Invalid Content-Length"));
            }
            n = n * 10 + u64::from(b - b'0');
        }
        match seen {
            Some(prev) if *prev != n => {
                return Err(HeadError::Malformed("Conflicting Content-Length headers"))
            }
            _ => *seen = Some(n),
        }
    }
    Ok(())
}

/// Checks the transfer codings: only a single final `chunked` is understood. Other codings
/// before a final `chunked` are ones the gateway does not implement (a request's 501, RFC
/// 9112 6.1); anything else (no final `chunked`, `chunked` twice) is malformed framing (400).
fn transfer_encoding(values: &[&[u8]]) -> Result<bool, HeadError> {
    let codings = || {
        values
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(|c| c.trim_ascii())
            .filter(|c| !c.is_empty())
    };
    let chunked = |c: &[u8]| c.eq_ignore_ascii_case(b"chunked");
    let mut all = codings();
    match (all.next(), all.next()) {
        (Some(c), None) if chunked(c) => Ok(true),
        (Some(_), Some(_))
            if codings().next_back().is_some_and(chunked)
                && codings().filter(|c| chunked(c)).count() == 1 =>
        {
            Err(HeadError::UnknownCoding)
        }
        _ => Err(HeadError::Malformed("Unsupported Transfer-Encoding")),
    }
}

/// A head over the limit: 414 when its request line alone takes the limit (the target is
/// what is too long), 431 when the header fields do.
fn too_large(buf: &[u8], max_bytes: usize) -> HeadError {
    let limit = max_bytes.min(buf.len());
    // Empty lines before the request line (RFC 9112 2.2 lets a server ignore them) are not it.
    let start = buf[..limit]
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(limit);
    if buf[start..limit].contains(&b'\n') {
        HeadError::TooLarge
    } else {
        HeadError::UriTooLong
    }
}

/// A request line whose version httparse refused: 505 for a version above 1.x (`HTTP/2.0`
/// sent as HTTP/1, or `HTTP/3` as HTTP/3 writes it), 400 for anything else.
fn version_error(buf: &[u8]) -> HeadError {
    match request_version(buf).1 {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() && *major >= b'2' =>
        {
            HeadError::VersionNotSupported
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() && *major >= b'2' => {
            HeadError::VersionNotSupported
        }
        _ => HeadError::Malformed("Unsupported HTTP version"),
    }
}

/// The version that ends the request line (empty lines before it skipped), and where it
/// starts in `buf`.
fn request_version(buf: &[u8]) -> (usize, &[u8]) {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = buf[start..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let at = line.iter().rposition(|&b| b == b' ').map_or(0, |i| i + 1);
    (start + at, &line[at..])
}

/// Where the minor digit of an `HTTP/1.2` to `HTTP/1.9` request line is: such a request is
/// read as HTTP/1.1, the highest minor version Tollgate speaks (RFC 9110 6.2: a recipient
/// processes a higher minor version of a major version it implements as its own).
fn higher_minor(buf: &[u8]) -> Option<usize> {
    match request_version(buf) {
        (at, [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor])
            if (b'2'..=b'9').contains(minor) =>
        {
            Some(at + 7)
        }
        _ => None,
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete (the caller reads
/// more, or answers 431 once `max_bytes` is reached). `Ok(Some(len))`: the head is
/// `buf[..len]` and `parts` describes it (ranges relative to `buf`).
pub fn parse_request(
    buf: &[u8],
    max_bytes: usize,
) -> Result<Option<(usize, RequestParts)>, HeadError> {
    // Uninitialised slots: no 4 KiB of zeroing per parse.
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_bytes {
                Err(too_large(buf, max_bytes))
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        // The version is judged on the whole request line: httparse refuses `HTTP/2` before
        // the rest of it (`.0`) has arrived.
        Err(httparse::Error::Version) if !buf.contains(&b'\n') && buf.len() < max_bytes => {
            return Ok(None)
        }
        Err(httparse::Error::Version) => {
            return match higher_minor(buf) {
                // Parsed as the same line with `HTTP/1.1`: the ranges are the same in both.
                Some(at) => {
                    let mut as_11 = buf.to_vec();
                    as_11[at] = b'1';
                    parse_request(&as_11, max_bytes)
                }
                None => Err(version_error(buf)),
            };
        }
        Err(_) => return Err(HeadError::Malformed("Malformed request")),
    };
    if len > max_bytes {
        return Err(too_large(buf, max_bytes));
    }
    let method_s = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    let minor = req.version.unwrap_or(1);
    let method = Method::from_bytes(method_s.as_bytes());

    let mut host: Option<Range<u32>> = None;
    let mut hosts = 0;
    let mut cl: Option<u64> = None;
    let mut te: Vec<&[u8]> = Vec::new();
    let mut conn = ConnTokens::default();
    let mut has_upgrade = false;
    let mut expect_continue = false;
    let mut out = Headers::new();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        out.push(HeaderRange {
            name: offset(buf, name),
            value: offset(buf, value),
        });
        if name_eq(name, b"host") {
            hosts += 1;
            host = Some(offset(buf, value));
        } else if name_eq(name, b"content-length") {
            content_length(value, &mut cl)?;
        } else if name_eq(name, b"transfer-encoding") {
            te.push(value);
        } else if name_eq(name, b"connection") {
            conn.add(value);
        } else if name_eq(name, b"upgrade") {
            // Only WebSocket upgrades are relayed: `h2c` or any other protocol would open a
            // tunnel past routes, keys and throttles. The header is hop-by-hop, so for those
            // it is dropped and the request is an ordinary one.
            has_upgrade = value.trim_ascii().eq_ignore_ascii_case(b"websocket");
        } else if name_eq(name, b"expect") {
            if value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(HeadError::Expectation);
            }
        }
    }
    if hosts > 1 {
        return Err(HeadError::Malformed("More than one Host header"));
    }
    if minor == 1 && hosts == 0 {
        return Err(HeadError::Malformed("Missing Host header"));
    }
    if let Some(h) = &host {
        if !valid_host(&buf[h.start as usize..h.end as usize]) {
            return Err(HeadError::Malformed("Invalid Host header"));
        }
    }
    let framing = if !te.is_empty() {
        if minor == 0 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding is not allowed in HTTP/1.0",
            ));
        }
        if cl.is_some() {
            return Err(HeadError::Malformed(
                "Both Content-Length and Transfer-Encoding",
            ));
        }
        transfer_encoding(&te)?;
        Framing::Chunked
    } else {
        match cl {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    if method == Method::Connect {
        return Err(HeadError::Connect);
    }
    // Request target: origin-form, absolute-form (proxies), or "*" for OPTIONS. None has a
    // fragment (RFC 9112 3.2): a `#` would reach the upstream as path or query data.
    let tb = target.as_bytes();
    if tb.contains(&b'#') {
        return Err(HeadError::Malformed("Invalid request target"));
    }
    let (path, query) = if tb.first() == Some(&b'/') {
        split_query(buf, tb)
    } else if let Some(rest) =
        strip_prefix_ci(tb, b"http://").or_else(|| strip_prefix_ci(tb, b"https://"))
    {
        let slash = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        let authority = &rest[..slash];
        if !valid_host(authority) {
            return Err(HeadError::Malformed("Invalid request target"));
        }
        // RFC 9112 3.2.2: the target's authority replaces Host.
        host = Some(offset(buf, authority));
        if slash == rest.len() || rest[slash] == b'?' {
            // "http://host" or "http://host?q": the path is "/".
            let (_, q) = split_query(buf, &rest[slash..]);
            (offset(buf, &rest[slash..slash]), q)
        } else {
            split_query(buf, &rest[slash..])
        }
    } else if tb == b"*" && method == Method::Options {
        (offset(buf, tb), None)
    } else {
        return Err(HeadError::Malformed("Invalid request target"));
    };
    let keep_alive = if minor == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    Ok(Some((
        len,
        RequestParts {
            method,
            method_range: offset(buf, method_s.as_bytes()),
            path,
            query,
            minor,
            headers: out,
            host,
            framing,
            keep_alive,
            expect_continue: expect_continue && minor >= 1,
            // RFC 9110 7.8: an HTTP/1.0 request's Upgrade is ignored.
            upgrade: conn.upgrade && has_upgrade && minor >= 1,
        },
    )))
}

fn strip_prefix_ci<'a>(s: &'a [u8], p: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p) {
        Some(&s[p.len()..])
    } else {
        None
    }
}

fn split_query(buf: &[u8], t: &[u8]) -> (Range<u32>, Option<Range<u32>>) {
    match t.iter().position(|&b| b == b'?') {
        Some(q) => (offset(buf, &t[..q]), Some(offset(buf, &t[q + 1..]))),
        None => (offset(buf, t), None),
    }
}

/// The pieces of [`RequestHead`] before the buffer is frozen.
#[derive(Debug)]
pub struct RequestParts {
    pub method: Method,
    pub method_range: Range<u32>,
    pub path: Range<u32>,
    pub query: Option<Range<u32>>,
    pub minor: u8,
    pub headers: Headers,
    pub host: Option<Range<u32>>,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub upgrade: bool,
}

impl RequestParts {
    pub fn into_head(self, raw: Bytes) -> RequestHead {
        RequestHead {
            raw,
            method: self.method,
            method_range: self.method_range,
            path: self.path,
            query: self.query,
            minor: self.minor,
            headers: self.headers,
            host: self.host,
            framing: self.framing,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            upgrade: self.upgrade,
        }
    }
}

/// Parses a response head; `head_request` and the status decide whether a body follows.
pub(crate) fn parse_response(
    buf: &[u8],
    max_bytes: usize,
    head_request: bool,
) -> Result<Option<(usize, ResponseParts)>, HeadError> {
    parse_response_of::<MAX_HEADERS>(buf, max_bytes, head_request)
}

/// [`parse_response`] of a head with up to `N` lines: the gateway's own answer heads (an
/// upstream's up to [`MAX_HEADERS`] lines, and the fields the gateway adds) read again.
pub(crate) fn parse_response_of<const N: usize>(
    buf: &[u8],
    max_bytes: usize,
    head_request: bool,
) -> Result<Option<(usize, ResponseParts)>, HeadError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; N];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= max_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("Malformed response")),
    };
    let status = res.code.unwrap_or(0);
    let minor = res.version.unwrap_or(1);
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("Invalid response status"));
    }
    let mut cl: Option<u64> = None;
    let mut te: Vec<&[u8]> = Vec::new();
    let mut conn = ConnTokens::default();
    let mut out = Headers::new();
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        out.push(HeaderRange {
            name: offset(buf, name),
            value: offset(buf, h.value),
        });
        if name_eq(name, b"content-length") {
            content_length(h.value, &mut cl)?;
        } else if name_eq(name, b"transfer-encoding") {
            te.push(h.value);
        } else if name_eq(name, b"connection") {
            conn.add(h.value);
        }
    }
    let mut keep_alive = if minor == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    // Only `chunked` is relayed (as nginx does): a body in another transfer coding would
    // reach a client that cannot undo it (HTTP/1.0, HTTP/2) without a word of it. A 1xx or
    // 204 says nothing of a body, so its codings are not looked at (the field is dropped).
    if !te.is_empty() && status >= 200 && status != 204 {
        transfer_encoding(&te)?;
    }
    // Both lengths: faulty framing (RFC 9112 6.3), refused whether a body follows or not (the
    // answer to a HEAD, a 304), as nginx does, rather than relayed with both.
    if !te.is_empty() && cl.is_some() && status >= 200 && status != 204 {
        return Err(HeadError::Malformed(
            "Both Content-Length and Transfer-Encoding",
        ));
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::None
    } else if !te.is_empty() {
        // An HTTP/1.0 message with a transfer coding has faulty framing (RFC 9112 6.1): read
        // as chunked, the connection is closed after it.
        if minor == 0 {
            keep_alive = false;
        }
        Framing::Chunked
    } else {
        match cl {
            Some(n) => Framing::Length(n),
            None => {
                keep_alive = false;
                Framing::UntilClose
            }
        }
    };
    let reason = offset_checked(buf, res.reason.unwrap_or_default().as_bytes());
    Ok(Some((
        len,
        ResponseParts {
            status,
            reason,
            headers: out,
            framing,
            keep_alive,
        },
    )))
}

#[derive(Debug)]
pub(crate) struct ResponseParts {
    pub status: u16,
    pub reason: Range<u32>,
    pub headers: Headers,
    pub framing: Framing,
    pub keep_alive: bool,
}

impl ResponseParts {
    pub(crate) fn into_head(self, raw: Bytes) -> ResponseHead {
        ResponseHead {
            raw,
            status: self.status,
            reason: self.reason,
            headers: self.headers,
            framing: self.framing,
            keep_alive: self.keep_alive,
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
pub(crate) fn hop_by_hop(name: &[u8]) -> bool {
    // By length first: most names are compared with none of them.
    match name.len() {
        2 => name_eq(name, b"te"),
        7 => name_eq(name, b"trailer") || name_eq(name, b"upgrade"),
        10 => name_eq(name, b"connection") || name_eq(name, b"keep-alive"),
        16 => name_eq(name, b"proxy-connection"),
        17 => name_eq(name, b"transfer-encoding"),
        18 => name_eq(name, b"proxy-authenticate"),
        _ => false,
    }
}

/// Header lines (`name: value\r\n`, as the gateway keeps and writes them) as pairs.
pub(crate) fn header_lines(block: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
    block.split(|&b| b == b'\n').filter_map(|l| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let i = l.iter().position(|&b| b == b':')?;
        Some((&l[..i], l[i + 1..].trim_ascii()))
    })
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
