//! Rewriting heads on the way through: the upstream request head (rendered path and query,
//! end-to-end headers, forwarding headers, the integration's and the cache's additions) and
//! the head sent back to the client.

use super::*;

pub(crate) use crate::http::h1::hop_by_hop;

/// The `Connection` header's value, if it lists any header name beyond the hop-by-hop ones
/// (names listed there are hop-by-hop too). Several `Connection` lines are one list (RFC 9110
/// 5.3): joined, which only a message with more than one pays for. Looked up once per
/// message, not once per header; the usual `keep-alive`, `close` or `upgrade` alone give
/// `None`, so that no header is checked against it.
pub(crate) fn connection_value<'a>(
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<std::borrow::Cow<'a, [u8]>> {
    let mut lines = headers
        .filter(|(n, _)| name_eq(n, b"connection"))
        .map(|(_, v)| v);
    let first = lines.next()?;
    let v = match lines.next() {
        None => std::borrow::Cow::Borrowed(first),
        Some(second) => {
            let mut all = first.to_vec();
            for more in std::iter::once(second).chain(lines) {
                all.push(b',');
                all.extend_from_slice(more);
            }
            std::borrow::Cow::Owned(all)
        }
    };
    v.split(|&b| b == b',')
        .any(|t| {
            let t = t.trim_ascii();
            !t.is_empty() && !name_eq(t, b"close") && !hop_by_hop(t)
        })
        .then_some(v)
}

/// Header lines passed through unchanged, copied as they arrived: adjacent lines with one
/// copy instead of four appends each. A line is copied whole when its value is not empty and
/// ends the line (`\r\n` right after it); any other is written `name: value\r\n`.
pub(crate) struct KeptLines<'a> {
    raw: &'a [u8],
    run: std::ops::Range<usize>,
}

impl<'a> KeptLines<'a> {
    pub(crate) fn new(raw: &'a [u8]) -> KeptLines<'a> {
        KeptLines { raw, run: 0..0 }
    }

    /// Keeps the header `h` (ranges into the raw head).
    pub(crate) fn keep(&mut self, out: &mut Vec<u8>, h: &crate::http::h1::HeaderRange) {
        let (start, end) = (h.name.start as usize, h.value.end as usize);
        if h.value.start < h.value.end && self.raw.get(end..end + 2) == Some(&b"\r\n"[..]) {
            if self.run.end != start || self.run.is_empty() {
                self.flush(out);
                self.run.start = start;
            }
            self.run.end = end + 2;
            return;
        }
        self.flush(out);
        let slice = |r: &std::ops::Range<u32>| &self.raw[r.start as usize..r.end as usize];
        out.extend_from_slice(slice(&h.name));
        out.extend_from_slice(b": ");
        out.extend_from_slice(slice(&h.value));
        out.extend_from_slice(b"\r\n");
    }

    /// Writes the lines kept so far; before anything else goes into `out`.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        if !self.run.is_empty() {
            out.extend_from_slice(&self.raw[self.run.clone()]);
            self.run = 0..0;
        }
    }
}

/// True when `name` is listed in the `Connection` value (other than the standard tokens).
pub(super) fn listed_in_connection(conn: Option<&[u8]>, name: &[u8]) -> bool {
    conn.is_some_and(|v| has_token(v, name))
}

/// Builds the upstream request head: the rendered path and query, the client's end-to-end
/// headers, the forwarding headers and the integration's own. `peer_ip` is the client's IP.
pub fn request_head(peer_ip: &str, ctx: &RequestCtx, integ: &HttpIntegration) -> Vec<u8> {
    request_head_with(peer_ip, ctx, integ, &Extra::default())
}

/// What the cache adds to an upstream request.
#[derive(Default)]
pub(crate) struct Extra {
    /// Header lines ("name: value\r\n") added to the request (conditional headers).
    pub lines: Vec<u8>,
    /// Drop the client's own conditional headers, so that the answer is a full one the cache
    /// can store.
    pub strip_conditionals: bool,
}

pub(super) fn conditional(name: &[u8]) -> bool {
    name_eq(name, b"if-none-match")
        || name_eq(name, b"if-modified-since")
        || name_eq(name, b"if-match")
        || name_eq(name, b"if-unmodified-since")
        || name_eq(name, b"if-range")
        || name_eq(name, b"range")
}

/// The integration URI's path and query for this request, rendered into `out`.
pub(crate) fn integration_path(
    out: &mut Vec<u8>,
    peer_ip: &str,
    ctx: &RequestCtx,
    integ: &HttpIntegration,
) {
    let start = out.len();
    let overridden = ctx
        .edits
        .as_deref()
        .map(|e| e.path_vars.as_slice())
        .unwrap_or_default();
    integ
        .path
        .render(out, &ctx.vars(peer_ip, Escape::Uri), |i, o| {
            // In the URI's query a value is one query value: `&`, `=` and `+` encoded too (a
            // variable `a&role=admin` added a parameter); in its path, a segment.
            let encode = if o[start..].contains(&b'?') {
                |s: &str, o: &mut Vec<u8>| crate::syntax::path::encode_component(s.as_bytes(), o)
            } else {
                encode_segment
            };
            if let Some((_, v)) = overridden.iter().find(|(k, _)| *k == i) {
                // A template's override: its segments encoded, its `/` kept.
                for (n, seg) in v.split('/').enumerate() {
                    if n > 0 {
                        o.push(b'/');
                    }
                    encode(seg, o);
                }
                return;
            }
            ctx.path_var(i, |s, more| {
                encode(s, o);
                if more {
                    o.push(b'/');
                }
            })
        });
    if integ.whole_path {
        default_path(out, start, ctx);
    } else if ctx.segs.trailing_slash() {
        trailing_slash(out, start, ctx, integ, overridden);
    }
}

/// A request path that ends with `/` (`/files/dir/`) keeps it where the URI's path ends with
/// the variable that took the path's last segment (`http://b/f/{proxy}`: `/f/dir/`).
#[cold]
fn trailing_slash(
    out: &mut Vec<u8>,
    start: usize,
    ctx: &RequestCtx,
    integ: &HttpIntegration,
    overridden: &[(usize, String)],
) {
    let Some(i) = integ.path.path_ends_with_var() else {
        return;
    };
    if overridden.iter().any(|(k, _)| *k == i) || !ctx.capture_reaches_end(i) {
        return;
    }
    let at = out[start..]
        .iter()
        .position(|&b| b == b'?')
        .map_or(out.len(), |q| start + q);
    if out[start..at].last() != Some(&b'/') {
        out.insert(at, b'/');
    }
}

/// The `$default` route: the request's path (its one capture) goes after the URI's path,
/// before the URI's query (`http://b/base?x=1` and `/store/checkout`:
/// `/base/store/checkout?x=1`).
#[cold]
fn default_path(out: &mut Vec<u8>, start: usize, ctx: &RequestCtx) {
    let mut path = Vec::with_capacity(64);
    ctx.path_var(0, |s, more| {
        encode_segment(s, &mut path);
        if more {
            path.push(b'/');
        }
    });
    if path.is_empty() {
        return;
    }
    if ctx.segs.trailing_slash() {
        path.push(b'/');
    }
    // Segments are encoded: the first `?` is the URI's query.
    let at = out[start..]
        .iter()
        .position(|&b| b == b'?')
        .map_or(out.len(), |q| start + q);
    if out[start..at].last() != Some(&b'/') {
        path.insert(0, b'/');
    }
    out.splice(at..at, path);
}

/// [`request_head`] with the cache's additions.
pub(crate) fn request_head_with(
    peer_ip: &str,
    ctx: &RequestCtx,
    integ: &HttpIntegration,
    extra: &Extra,
) -> Vec<u8> {
    let head = &ctx.head;
    let mut out = Vec::with_capacity(256 + head.raw.len());
    out.extend_from_slice(head.method_bytes());
    out.push(b' ');
    let mut has_query = false;
    let edits = ctx.edits.as_deref();
    match edits.and_then(|e| e.path.as_deref()) {
        Some(p) => out.extend_from_slice(p),
        None => integration_path(&mut out, peer_ip, ctx, integ),
    }
    if out.contains(&b'?') {
        has_query = true;
    }
    let query = match edits.and_then(|e| e.query.as_deref()) {
        Some(q) => Some(q),
        None => head.query_bytes(),
    };
    if let Some(q) = query {
        if !q.is_empty() {
            out.push(if has_query { b'&' } else { b'?' });
            out.extend_from_slice(q);
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(integ.host_header.as_bytes());
    out.extend_from_slice(b"\r\n");
    // The client's X-Forwarded-For; several lines are one list (RFC 9110 5.3), joined below.
    let mut xff: Option<&[u8]> = None;
    let mut xff_lines = 0u32;
    let conn_hdr = connection_value(head.headers());
    let mut kept = KeptLines::new(&head.raw);
    for h in &head.headers {
        let (name, value) = (head.slice(&h.name), head.slice(&h.value));
        if hop_by_hop(name)
            || name_eq(name, b"host")
            || name_eq(name, b"content-length")
            || name_eq(name, b"expect")
            || name_eq(name, b"x-request-id")
            || name_eq(name, b"x-forwarded-proto")
            || name_eq(name, b"x-forwarded-host")
            // Frameworks build absolute links from these too (Rails, Django, Spring's
            // ForwardedHeaderFilter), and they are in no cache key: a client's own would
            // reach a cached answer every client then gets.
            || name_eq(name, b"x-forwarded-port")
            || name_eq(name, b"x-forwarded-prefix")
            || (ctx.trace.is_some()
                && (name_eq(name, b"traceparent")
                    || name_eq(name, b"tracestate")
                    || name_eq(name, b"x-amzn-trace-id")))
            || (integ.drop_underscores && name.contains(&b'_'))
            || edits.is_some_and(|e| e.drops(name))
            || integ
                .headers
                .iter()
                .any(|(n, _)| name_eq(name, n.as_bytes()))
        {
            continue;
        }
        if name_eq(name, b"x-forwarded-for") {
            xff = Some(value);
            xff_lines += 1;
            continue;
        }
        if listed_in_connection(conn_hdr.as_deref(), name)
            || (extra.strip_conditionals && conditional(name))
            || ctx
                .client_cert
                .as_ref()
                .is_some_and(|c| c.names.iter().any(|n| name_eq(name, n.as_bytes())))
        {
            continue;
        }
        kept.keep(&mut out, h);
    }
    kept.flush(&mut out);
    out.extend_from_slice(&extra.lines);
    if let Some(t) = &ctx.trace {
        // The upstream's parent is the gateway's client span for this call.
        if let Some(span) = t.client_span {
            t.upstream_headers(span, t.sampled.unwrap_or(false), &mut out);
        }
    }
    if let Some(c) = &ctx.client_cert {
        out.extend_from_slice(&c.lines);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if xff_lines > 1 {
        for (n, v) in head.headers() {
            if name_eq(n, b"x-forwarded-for") {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    } else if let Some(x) = xff {
        out.extend_from_slice(x);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer_ip.as_bytes());
    out.extend_from_slice(if ctx.https {
        &b"\r\nx-forwarded-proto: https\r\n"[..]
    } else {
        &b"\r\nx-forwarded-proto: http\r\n"[..]
    });
    if let Some(h) = head.host_bytes() {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(ctx.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, t) in &integ.headers {
        // A parameter mapping's `overwrite`/`remove` or a template's override of the same
        // header replaces it (the upstream would get both).
        if edits.is_some_and(|e| e.drops(name.as_bytes())) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        t.render(&mut out, &ctx.vars(peer_ip, Escape::Header), |i, o| {
            ctx.path_var(i, |s, more| {
                o.extend(s.bytes().filter(|&b| crate::http::is_value_byte(b)));
                // A greedy variable's segments keep their `/`.
                if more {
                    o.push(b'/');
                }
            })
        });
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = edits {
        out.extend_from_slice(&e.add);
    }
    match head.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {
            if head.header(b"content-length").is_some() {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    if head.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(head.header(b"upgrade").unwrap_or_default());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What compression does to an answer's head.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Comp {
    No,
    /// Not compressed for this client, but it would be for another.
    Vary,
    /// Compressed, to this many bytes (`None`: a HEAD's answer, whose compressed length is
    /// not known, so none is said).
    Encoded(crate::gateway::compress::Encoding, Option<usize>),
    /// A 304 to a client revalidating the weak ETag of an answer it got compressed: it says
    /// the ETag and Vary that answer said (RFC 9110 15.4.5).
    Revalidated,
}

/// Builds the head sent to the client from the upstream's; returns the status it says (the
/// upstream's, unless the route's response mapping changes it).
///
/// An answer that runs to the upstream's close goes to an HTTP/1.1 client chunked (as nginx
/// and Envoy send it): a cut is then told from the end, and the client's connection can be
/// kept. (HTTP/2 ends or resets the stream instead; HTTP/1.0 has no chunks.)
pub(super) fn rechunked(resp: &ResponseHead, ctx: &RequestCtx, upgrade: bool) -> bool {
    resp.framing == Framing::UntilClose
        && ctx.head.minor >= 1
        && !ctx.h2
        && !upgrade
        && !(resp.status == 204 || resp.status < 200)
}

pub(super) fn response_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    ctx: &RequestCtx,
    (keep, upgrade, dechunk): (bool, bool, bool),
    comp: Comp,
) -> u16 {
    let minor = ctx.head.minor;
    let mapped = crate::gateway::mapping::response_ops(ctx, resp.status);
    let status = mapped.map_or(resp.status, |ops| {
        crate::gateway::mapping::mapped_status(ops, resp.status)
    });
    out.extend_from_slice(if minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    // An upstream's own reason phrase is kept; none (or one that is not ASCII, which is not
    // kept) gets the standard one.
    if status == resp.status && !resp.reason.is_empty() {
        out.extend_from_slice(resp.slice(&resp.reason));
    } else {
        out.extend_from_slice(crate::http::write::reason(status).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let conn_hdr = connection_value(resp.headers());
    // A 204 or 1xx has no body, so no Content-Length either (RFC 9110 8.6), whatever the
    // origin said; the body it may have sent anyway is not relayed.
    let bodiless = resp.status == 204 || resp.status < 200;
    // `Transfer-Encoding: chunked` goes on with a body relayed in its chunks: never with a
    // 204 or 1xx (RFC 9112 6.1), nor to an HTTP/1.0 client (a HEAD's answer included).
    // `Trailer` goes with it, as the trailers do; where the chunks are undone (HTTP/1.0,
    // HTTP/2) the trailers are dropped, and so is the field that announces them. (The
    // HTTP/2 side reads its framing from this head, then drops the field itself.)
    let chunks_relayed = !dechunk && !bodiless && minor >= 1;
    let trailers_relayed = chunks_relayed && resp.framing == Framing::Chunked && !ctx.h2;
    let mut kept = KeptLines::new(&resp.raw);
    let mut length_said = false;
    // An answer forwarded without a `Date` gets one (RFC 9110 6.6.1: a recipient with a
    // clock MUST add it); interim answers need none, and one whose response mapping names
    // `Date` has what the mapping says.
    let mut date_said = resp.status < 200
        || mapped.is_some_and(|ops| crate::gateway::mapping::names_header(ops, b"date"));
    for h in &resp.headers {
        let (name, value) = (resp.slice(&h.name), resp.slice(&h.value));
        // Which hop-by-hop fields go on anyway: asked only of those (few answers have any).
        let kept_hop = || {
            (chunks_relayed && name_eq(name, b"transfer-encoding"))
                || (trailers_relayed && name_eq(name, b"trailer"))
                || (upgrade && name_eq(name, b"upgrade"))
        };
        // `Connection: content-length` does not take the answer's length away: the body is
        // relayed by it, and a kept-alive answer without one would run into the next.
        let hop = hop_by_hop(name)
            || (listed_in_connection(conn_hdr.as_deref(), name)
                && !name_eq(name, b"content-length"));
        if (hop && !kept_hop())
            || (bodiless && name_eq(name, b"content-length"))
            || name_eq(name, b"x-request-id")
            || (ctx.cors.is_some() && crate::http::cors::is_cors_header(name))
            // The gateway's own say the route's limit, once (an upstream's would contradict).
            || (ctx.ratelimit.is_some() && crate::gateway::finish::is_ratelimit_field(name))
            || mapped.is_some_and(|ops| crate::gateway::mapping::drops_header(ops, name))
        {
            continue;
        }
        if let Comp::Encoded(..) = comp {
            // The length is the coded body's; a `Content-Encoding: identity` (which is no
            // coding, RFC 9110 8.4.1) gives way to the coding applied; ranges the upstream
            // serves are of the identity body, not of this one (as nginx's gzip clears
            // Accept-Ranges).
            if name_eq(name, b"content-length")
                || crate::gateway::compress::replaced_by_coding(name)
            {
                continue;
            }
        }
        date_said = date_said || name_eq(name, b"date");
        if matches!(comp, Comp::Encoded(..) | Comp::Revalidated) && name_eq(name, b"etag") {
            kept.flush(out);
            crate::gateway::cached::weak_etag(out, value);
            continue;
        }
        // One length however the upstream repeated it (`2, 2`, or on two lines, which the
        // parser took as equal): RFC 9110 8.6 takes identical values only as one, and an
        // HTTP/2 client refuses the stream otherwise.
        if name_eq(name, b"content-length") {
            if length_said {
                continue;
            }
            length_said = true;
            if let Some(first) = value
                .split(|&b| b == b',')
                .next()
                .filter(|_| value.contains(&b','))
            {
                kept.flush(out);
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(first.trim_ascii());
                out.extend_from_slice(b"\r\n");
                continue;
            }
        }
        kept.keep(out, h);
    }
    kept.flush(out);
    if !date_said {
        crate::http::write::date_header(out);
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(ctx.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(ops) = mapped {
        crate::gateway::mapping::add_headers(ops, ctx, resp.headers(), out);
    }
    match comp {
        Comp::No => {}
        Comp::Vary | Comp::Revalidated => crate::gateway::compress::lines(out, None),
        Comp::Encoded(e, len) => {
            if let Some(len) = len {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            crate::gateway::compress::lines(out, Some(e));
        }
    }
    if rechunked(resp, ctx, upgrade) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    crate::gateway::cache_headers(out, ctx);
    ctx.cors_lines(out);
    // (A response mapping that sets one of them stands for the route's.)
    if let Some(r) = ctx
        .ratelimit
        .as_ref()
        .filter(|_| !mapped.is_some_and(crate::gateway::mapping::names_ratelimit))
    {
        crate::gateway::finish::ratelimit_headers(out, r);
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else {
        connection_header(out, minor, keep);
    }
    out.extend_from_slice(b"\r\n");
    status
}

#[cfg(test)]
mod tests {
    use super::KeptLines;
    use crate::http::h1::{header_lines, parse_response};

    /// Keeps the headers `keep` selects from `head` and reads back what was written.
    fn kept(head: &[u8], keep: impl Fn(&[u8]) -> bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (len, parts) = parse_response(head, 1 << 16, false).unwrap().unwrap();
        let resp = parts.into_head(bytes::Bytes::copy_from_slice(&head[..len]));
        let mut out = Vec::new();
        let mut lines = KeptLines::new(&resp.raw);
        for h in &resp.headers {
            if keep(resp.slice(&h.name)) {
                lines.keep(&mut out, h);
            }
        }
        lines.flush(&mut out);
        assert!(out.is_empty() || out.ends_with(b"\r\n"), "{out:?}");
        assert!(
            !out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "bare LF in {out:?}"
        );
        header_lines(&out)
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        p.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn kept_lines_read_back_as_they_were_sent() {
        let head = b"HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nC:   3  \r\nD:\r\nE: 5\nF: six\r\n\r\n";
        assert_eq!(
            kept(head, |_| true),
            pairs(&[
                ("A", "1"),
                ("B", "2"),
                ("C", "3"),
                ("D", ""),
                ("E", "5"),
                ("F", "six")
            ])
        );
        // Gaps in the run: each kept line once, in order.
        assert_eq!(
            kept(head, |n| n != b"B" && n != b"E"),
            pairs(&[("A", "1"), ("C", "3"), ("D", ""), ("F", "six")])
        );
        assert_eq!(kept(head, |n| n == b"F"), pairs(&[("F", "six")]));
        assert_eq!(kept(head, |_| false), pairs(&[]));
    }
}
