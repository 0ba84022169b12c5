//! One HTTP/2 stream through the HTTP/1.1 pipeline.
//!
//! The stream's request becomes an HTTP/1.1 head (RFC 9113 8.3 mapped back: `:authority`
//! becomes `Host`, cookies are joined, a body without `content-length` is chunked unless it
//! came whole with the HEADERS) that the
//! same parser, phases, cache and proxy handle; the pipeline writes its HTTP/1.1 answer into
//! [`H2Stream`], which parses it back (the same response parser the proxy uses on upstream
//! answers) into a HEADERS frame and DATA frames sent as flow control allows. What the
//! pipeline sees is a connection like any other: `Conn.stream` is `Stream::H2`.
//!
//! The request body streams the same way: DATA frames are read as the pipeline asks for more,
//! and their flow-control credit is given back as they are taken.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};

use crate::http::body::ChunkedDecoder;
use crate::http::h1::{self, Framing};

/// A response head the pipeline writes is never near this; past it, it is not HTTP.
const MAX_RESPONSE_HEAD: usize = 1 << 20;

/// The stream's sending side, shared with the watch that notices a client's RST_STREAM.
pub(crate) enum Out {
    Head(SendResponse<Bytes>),
    Body(SendStream<Bytes>),
    Done,
}

impl Out {
    /// Ready when the client reset the stream.
    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Reason> {
        let r = match self {
            Out::Head(r) => r.poll_reset(cx),
            Out::Body(s) => s.poll_reset(cx),
            Out::Done => return Poll::Pending,
        };
        r.map(|r| r.unwrap_or(Reason::CANCEL))
    }

    fn reset(&mut self, reason: Reason) {
        match self {
            Out::Head(r) => r.send_reset(reason),
            Out::Body(s) => s.send_reset(reason),
            Out::Done => {}
        }
        *self = Out::Done;
    }
}

fn h2_err(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}

enum Phase {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// What the pipeline reads from and writes to for one stream.
pub(crate) struct H2Stream {
    body: Option<RecvStream>,
    /// The request has no `content-length`: DATA is handed over in chunked framing.
    chunked: bool,
    pub out: Rc<RefCell<Out>>,
    phase: Phase,
    head: BytesMut,
    head_only: bool,
    pub tls: bool,
    /// The answer was cut short (its upstream failed part way): reset, never ended.
    cut: bool,
    first: Option<Bytes>,
}

impl H2Stream {
    pub(crate) fn new(
        body: Option<RecvStream>,
        chunked: bool,
        out: Rc<RefCell<Out>>,
        head_only: bool,
        tls: bool,
    ) -> H2Stream {
        H2Stream {
            body,
            chunked,
            out,
            phase: Phase::Head,
            head: BytesMut::new(),
            head_only,
            tls,
            cut: false,
            first: None,
        }
    }

    /// Body bytes read before the pipeline asked for them ([`peek_body`]), handed over first.
    pub(crate) fn with_first(mut self, first: Option<Bytes>) -> H2Stream {
        self.first = first.filter(|b| !b.is_empty());
        self
    }

    /// Appends request body bytes to `buf`; `Ok(0)` at the end of the stream.
    pub(crate) async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let before = buf.len();
        if let Some(data) = self.first.take() {
            self.put(buf, &data);
            return Ok(buf.len() - before);
        }
        let Some(recv) = self.body.as_mut() else {
            return Ok(0);
        };
        loop {
            match poll_fn(|cx| recv.poll_data(cx)).await {
                Some(Ok(data)) if data.is_empty() => continue,
                Some(Ok(data)) => {
                    let _ = recv.flow_control().release_capacity(data.len());
                    self.put(buf, &data);
                    return Ok(buf.len() - before);
                }
                Some(Err(e)) => return Err(h2_err(e)),
                None => {
                    self.body = None;
                    if self.chunked {
                        buf.extend_from_slice(b"0\r\n\r\n");
                        return Ok(5);
                    }
                    return Ok(0);
                }
            }
        }
    }

    fn put(&self, buf: &mut BytesMut, data: &[u8]) {
        if self.chunked {
            use std::fmt::Write;
            let _ = write!(buf, "{:x}\r\n", data.len());
            buf.extend_from_slice(data);
            buf.extend_from_slice(b"\r\n");
        } else {
            buf.extend_from_slice(data);
        }
    }

    /// Takes bytes of the pipeline's HTTP/1.1 answer and sends them as frames.
    pub(crate) async fn write(&mut self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() {
            match &mut self.phase {
                Phase::Head => {
                    self.head.extend_from_slice(&data);
                    data = Bytes::new();
                    if let Some(rest) = self.head_parsed()? {
                        data = rest;
                    }
                }
                Phase::Length(left) => {
                    let k = (*left).min(data.len() as u64) as usize;
                    *left -= k as u64;
                    let end = *left == 0;
                    let part = data.split_to(k);
                    if end {
                        self.phase = Phase::Done;
                    }
                    send(&self.out, part, end).await?;
                }
                Phase::Chunked(dec) => {
                    let mut ranges: smallvec::SmallVec<[std::ops::Range<usize>; 4]> =
                        Default::default();
                    let k = dec
                        .feed(&data, |r| ranges.push(r))
                        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
                    let done = dec.is_done();
                    let part = data.split_to(k);
                    if done {
                        self.phase = Phase::Done;
                    }
                    for r in ranges {
                        send(&self.out, part.slice(r), false).await?;
                    }
                    if done {
                        send(&self.out, Bytes::new(), true).await?;
                    }
                }
                Phase::UntilClose => {
                    send(&self.out, std::mem::take(&mut data), false).await?;
                }
                Phase::Done => return Ok(()),
            }
        }
        Ok(())
    }

    /// Parses the buffered answer head; once whole, sends HEADERS and returns the bytes
    /// after it.
    fn head_parsed(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            // The pipeline's head: the upstream's lines (up to the parser's limit) and the
            // gateway's own (request id, CORS, rate limit, cache...).
            let parsed = h1::parse_response_of::<{ 2 * h1::MAX_HEADERS }>(
                &self.head,
                MAX_RESPONSE_HEAD,
                self.head_only,
            )
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            let Some((len, parts)) = parsed else {
                return Ok(None);
            };
            let raw = self.head.split_to(len).freeze();
            let head = parts.into_head(raw);
            // 100 Continue and other interim answers have no HTTP/2 use here.
            if head.status < 200 {
                continue;
            }
            let mut resp = http::Response::new(());
            *resp.status_mut() = http::StatusCode::from_u16(head.status)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            let mut headers = http::HeaderMap::with_capacity(head.headers.len());
            for h in &head.headers {
                let name = head.slice(&h.name);
                if is_connection_specific(name) {
                    continue;
                }
                // Values are slices of the head's buffer (no copy); the gateway's own names
                // are static (no allocation).
                let value = head.raw.slice(h.value.start as usize..h.value.end as usize);
                let Ok(mut v) = http::HeaderValue::from_maybe_shared(value) else {
                    continue;
                };
                let n = if name.eq_ignore_ascii_case(b"x-request-id") {
                    // Unique per answer: never worth a slot in the HPACK table.
                    v.set_sensitive(true);
                    http::HeaderName::from_static("x-request-id")
                } else if name.eq_ignore_ascii_case(b"x-cache") {
                    http::HeaderName::from_static("x-cache")
                } else {
                    match http::HeaderName::from_bytes(name) {
                        Ok(n) => n,
                        Err(_) => continue,
                    }
                };
                headers.append(n, v);
            }
            *resp.headers_mut() = headers;
            let end = matches!(head.framing, Framing::None | Framing::Length(0));
            self.phase = match head.framing {
                _ if end => Phase::Done,
                Framing::Length(n) => Phase::Length(n),
                Framing::Chunked => Phase::Chunked(ChunkedDecoder::new(u64::MAX)),
                _ => Phase::UntilClose,
            };
            let mut out = self.out.borrow_mut();
            let Out::Head(r) = &mut *out else {
                return Err(io::ErrorKind::BrokenPipe.into());
            };
            let s = r.send_response(resp, end).map_err(h2_err)?;
            *out = if end { Out::Done } else { Out::Body(s) };
            return Ok(Some(self.head.split().freeze()));
        }
    }

    /// The answer's upstream failed part way: [`Self::finish`] resets the stream whatever
    /// the answer's framing (one that ran to the upstream's close would look complete).
    pub(crate) fn cut(&mut self) {
        self.cut = true;
    }

    /// After the pipeline: ends a body that ran to the upstream's close; resets a stream whose
    /// answer was cut short.
    pub(crate) async fn finish(&mut self) -> io::Result<()> {
        match self.phase {
            Phase::Done => Ok(()),
            Phase::UntilClose if !self.cut => {
                self.phase = Phase::Done;
                send(&self.out, Bytes::new(), true).await
            }
            _ => {
                self.phase = Phase::Done;
                self.out.borrow_mut().reset(Reason::INTERNAL_ERROR);
                Ok(())
            }
        }
    }
}

/// Sends DATA as the peer's flow-control window allows.
async fn send(out: &RefCell<Out>, data: Bytes, end: bool) -> io::Result<()> {
    super::flow::send_data(&mut Shared(out), data, end, h2_err).await
}

/// The stream's sending side as the reset watch shares it.
struct Shared<'a>(&'a RefCell<Out>);

impl super::flow::DataSink for Shared<'_> {
    fn with<R>(&mut self, f: impl FnOnce(&mut SendStream<Bytes>) -> R) -> Option<R> {
        match &mut *self.0.borrow_mut() {
            Out::Body(s) => Some(f(s)),
            _ => None,
        }
    }

    fn ended(&mut self) {
        *self.0.borrow_mut() = Out::Done;
    }
}

/// Headers HTTP/2 forbids (RFC 9113 8.2.2).
fn is_connection_specific(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
        b"te",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Whether `host` names the same entity as `authority`: equal but for case and the scheme's
/// default port (RFC 3986 6.2.3).
fn same_authority(authority: &[u8], host: &[u8], scheme: Option<&str>) -> bool {
    let default = match scheme {
        Some("https") => &b":443"[..],
        _ => b":80",
    };
    fn bare<'a>(v: &'a [u8], default: &[u8]) -> &'a [u8] {
        let v = v.strip_suffix(default).unwrap_or(v);
        v.strip_suffix(b":").unwrap_or(v)
    }
    bare(authority, default).eq_ignore_ascii_case(bare(host, default))
}

/// What a request's body turned out to be, from the frames already received when its
/// HEADERS were (a client that ends the stream with an empty DATA frame, or sends a small
/// body in one frame right behind its HEADERS, without `content-length`).
pub(crate) enum Peeked {
    /// Not known yet: the body streams, chunked.
    Streams,
    /// The stream ended with no body.
    Empty,
    /// The whole body, already here (its length goes upstream as `content-length`).
    Whole(Bytes),
    /// The body's first bytes; more follow.
    First(Bytes),
    /// The stream was reset, or its connection failed.
    Gone,
}

/// Looks at the frames already received for the stream, without waiting for more.
pub(crate) fn peek_body(recv: &mut RecvStream) -> Peeked {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Frames already buffered are bounded by the stream's window.
    let mut got = Bytes::new();
    let mut more = BytesMut::new();
    let mut take = |data: Bytes| {
        if got.is_empty() {
            got = data;
        } else {
            if more.is_empty() {
                more.extend_from_slice(&got);
            }
            more.extend_from_slice(&data);
        }
    };
    let ended = loop {
        match recv.poll_data(&mut cx) {
            Poll::Ready(Some(Ok(data))) => {
                let _ = recv.flow_control().release_capacity(data.len());
                take(data);
            }
            Poll::Ready(None) => break true,
            Poll::Ready(Some(Err(_))) => return Peeked::Gone,
            Poll::Pending => break false,
        }
    };
    let got = if more.is_empty() { got } else { more.freeze() };
    match (ended, got.is_empty()) {
        (true, true) => Peeked::Empty,
        (true, false) => Peeked::Whole(got),
        (false, true) => Peeked::Streams,
        (false, false) => Peeked::First(got),
    }
}

/// Writes the request as an HTTP/1.1 head into `buf`. Returns whether the body is handed
/// over chunked. A request HTTP/2 calls malformed gets the stream error it asks for.
pub(crate) fn synthesize(
    parts: &http::request::Parts,
    end: bool,
    whole: Option<usize>,
    buf: &mut BytesMut,
) -> Result<bool, Reason> {
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .ok_or(Reason::PROTOCOL_ERROR)?;
    if pq.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Reason::PROTOCOL_ERROR);
    }
    buf.reserve(256 + pq.len());
    buf.put_slice(parts.method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(pq.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority();
    if let Some(a) = authority {
        buf.put_slice(b"host: ");
        buf.put_slice(a.as_str().as_bytes());
        buf.put_slice(b"\r\n");
    }
    let mut cookies: Option<Vec<u8>> = None;
    let mut has_length = false;
    for (name, value) in &parts.headers {
        let v = value.as_bytes();
        if v.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Reason::PROTOCOL_ERROR);
        }
        match name.as_str() {
            "host" => match authority {
                // RFC 9113 8.3.1: a Host naming another entity than :authority is malformed.
                Some(a) if same_authority(a.as_str().as_bytes(), v, parts.uri.scheme_str()) => {
                    continue
                }
                Some(_) => return Err(Reason::PROTOCOL_ERROR),
                None => {}
            },
            "te" | "expect" => continue,
            n if is_connection_specific(n.as_bytes()) => return Err(Reason::PROTOCOL_ERROR),
            "cookie" => {
                let c = cookies.get_or_insert_with(Vec::new);
                if !c.is_empty() {
                    c.extend_from_slice(b"; ");
                }
                c.extend_from_slice(v);
                continue;
            }
            "content-length" => has_length = true,
            _ => {}
        }
        buf.put_slice(name.as_str().as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(v);
        buf.put_slice(b"\r\n");
    }
    if let Some(c) = cookies {
        buf.put_slice(b"cookie: ");
        buf.put_slice(&c);
        buf.put_slice(b"\r\n");
    }
    if let (Some(n), false) = (whole, has_length) {
        use std::fmt::Write;
        let _ = write!(buf, "content-length: {n}\r\n");
        has_length = true;
    }
    let chunked = !end && !has_length;
    if chunked {
        buf.put_slice(b"transfer-encoding: chunked\r\n");
    }
    buf.put_slice(b"\r\n");
    Ok(chunked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn request_becomes_an_http11_head() {
        let p = parts(
            http::Request::builder()
                .method("POST")
                .uri("https://api.example.test/pets?limit=2")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("x-one", "1")
                .header("te", "trailers")
                .body(())
                .unwrap(),
        );
        let mut buf = BytesMut::new();
        let chunked = synthesize(&p, false, None, &mut buf).unwrap();
        assert!(chunked);
        let text = std::str::from_utf8(&buf).unwrap();
        assert_eq!(
            text,
            "POST /pets?limit=2 HTTP/1.1\r\nhost: api.example.test\r\nx-one: 1\r\n\
             cookie: a=1; b=2\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        let (_, head) = h1::parse_request(&buf, 4096).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn length_is_kept_and_forbidden_headers_refused() {
        let p = parts(
            http::Request::builder()
                .method("PUT")
                .uri("http://h/x")
                .header("content-length", "3")
                .body(())
                .unwrap(),
        );
        let mut buf = BytesMut::new();
        assert!(!synthesize(&p, false, None, &mut buf).unwrap());
        assert!(std::str::from_utf8(&buf)
            .unwrap()
            .contains("content-length: 3\r\n"));

        let p = parts(
            http::Request::builder()
                .uri("http://h/x")
                .header("connection", "close")
                .body(())
                .unwrap(),
        );
        assert_eq!(
            synthesize(&p, true, None, &mut BytesMut::new()),
            Err(Reason::PROTOCOL_ERROR)
        );
    }
}
