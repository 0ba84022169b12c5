//! HTTP/2 to upstreams (`protocol = "h2"`): multiplexed connections per target per shard
//! (one while it has room, see [`super::H2_STREAMS_PER_CONN`]), each request a stream.
//!
//! The proxy speaks HTTP/1.1 to whatever `UpStream` it holds, so a stream here takes the
//! HTTP/1.1 request the proxy writes (parsed with the same head parser, its chunked framing
//! decoded) and sends it as HEADERS and DATA; the answer comes back as an HTTP/1.1 head and a
//! body in chunked framing (or as its `content-length` says). Everything above — retries,
//! streaming both ways, the cache's tee, errors — is unchanged.

use std::future::poll_fn;
use std::io;

use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};

use crate::http::body::ChunkedDecoder;
use crate::http::h1::{self, Framing};
use crate::http::pollio::PollIo;

/// A request head the proxy writes is never near this.
const MAX_HEAD: usize = 1 << 20;

fn h2_err(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, e)
}

/// The connection could not take the stream (closed, or going away): nothing of the request
/// was sent, whatever its method.
fn not_sent(e: h2::Error) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, e)
}

/// Whether a failed stream's request is known not to have been processed by the upstream
/// (RFC 9113 8.7): a stream it refused (REFUSED_STREAM), one a GOAWAY left out, or one the
/// connection never took.
pub(crate) fn unprocessed(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::NotConnected {
        return true;
    }
    e.get_ref()
        .and_then(|x| x.downcast_ref::<h2::Error>())
        .is_some_and(|h| {
            h.reason() == Some(h2::Reason::REFUSED_STREAM) || h.is_go_away() && h.is_remote()
        })
}

/// Percent-encodes the bytes of a request target the URI type refuses (`"`, `<`, `>`, `{`,
/// `|`, a space...) which an HTTP/1.1 request line may carry and an origin decodes the same.
fn uri_safe(target: &str) -> std::borrow::Cow<'_, str> {
    let ok = |b: u8| {
        b.is_ascii_graphic()
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
    };
    if target.bytes().all(ok) {
        return target.into();
    }
    let mut out = String::with_capacity(target.len() + 16);
    for b in target.bytes() {
        if ok(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into()
}

/// Each stream's receive window: what the upstream may send ahead of the client's reading,
/// and so what a client that stops reading pins of the gateway's memory (256 KiB: 25 MB/s a
/// stream at a 10 ms round trip).
const STREAM_WINDOW: u32 = 256 << 10;

thread_local! {
    /// Connection drivers alive on this shard (a draining shard waits for them to end).
    static DRIVERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// HTTP/2 upstream connections still open on this shard.
pub(crate) fn drivers() -> usize {
    DRIVERS.with(|d| d.get())
}

/// Opens the connection: the HTTP/2 handshake over `io`, its driver spawned on this shard.
/// The driver ends, closing the socket, once every `SendRequest` for it is dropped and its
/// streams are done (or the upstream closes it).
pub(crate) async fn handshake(io: PollIo) -> io::Result<SendRequest<Bytes>> {
    // The connection's window is every stream's it may carry: streams whose clients stopped
    // reading hold their own windows, never the connection's whole (RFC 9113 5.2.2), so they
    // cannot stall the other streams on it.
    let (sender, conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(STREAM_WINDOW * super::H2_STREAMS_PER_CONN as u32)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(h2_err)?;
    DRIVERS.with(|d| d.set(d.get() + 1));
    // Guarded: it reads frames the upstream controls; a panic ends this connection only.
    crate::driver::spawn(async move {
        crate::driver::guarded(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        })
        .await;
        DRIVERS.with(|d| d.set(d.get() - 1));
    });
    Ok(sender)
}

enum Req {
    /// Collecting the request head.
    Head,
    Length(SendStream<Bytes>, u64),
    Chunked(SendStream<Bytes>, ChunkedDecoder),
    Sent,
}

enum Resp {
    Waiting(ResponseFuture),
    /// The answer's head came while the request was still being sent.
    Answered(http::Response<RecvStream>),
    Body {
        recv: RecvStream,
        chunked: bool,
    },
    Done,
}

/// One request/answer on a shared HTTP/2 connection.
pub(crate) struct H2Up {
    sender: SendRequest<Bytes>,
    /// Which of its target's connections this is ([`super::pool::TargetLocal::h2_conn_id`]).
    pub(crate) conn: u64,
    /// The connection's count of streams under way, this one's part of it until dropped.
    active: std::rc::Rc<std::cell::Cell<usize>>,
    scheme: &'static str,
    /// The request is a HEAD: its answer's head says what a GET's body would be, and no
    /// length is made up for it.
    head_req: bool,
    head: BytesMut,
    req: Req,
    resp: Option<Resp>,
}

impl Drop for H2Up {
    fn drop(&mut self) {
        self.active.set(self.active.get().saturating_sub(1));
    }
}

impl H2Up {
    pub(crate) fn new(c: &super::pool::H2Conn, tls: bool) -> H2Up {
        c.active.set(c.active.get() + 1);
        H2Up {
            sender: c.sender.clone(),
            conn: c.id,
            active: c.active.clone(),
            scheme: if tls { "https" } else { "http" },
            head_req: false,
            head: BytesMut::new(),
            req: Req::Head,
            resp: None,
        }
    }

    /// Takes bytes of the proxy's HTTP/1.1 request. A stream that stops taking them says why
    /// where the upstream told: its reset (REFUSED_STREAM: not processed, sent again whatever
    /// the method) or a GOAWAY that left it out, not a bare broken pipe.
    pub(crate) async fn write(&mut self, data: Bytes) -> io::Result<()> {
        match self.send(data).await {
            Err(e) => Err(self.why_stopped().unwrap_or(e)),
            ok => ok,
        }
    }

    /// Whether the answer's head came while the request was still being sent.
    pub(crate) fn answered(&self) -> bool {
        matches!(self.resp, Some(Resp::Answered(_)))
    }

    /// What the answer's future holds once the stream is gone: the stream's error. An answer
    /// that came early is kept for [`Self::read_into`].
    fn why_stopped(&mut self) -> Option<io::Error> {
        let Some(Resp::Waiting(fut)) = &mut self.resp else {
            return None;
        };
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(std::pin::Pin::new(fut), &mut cx) {
            std::task::Poll::Ready(Ok(answer)) => {
                self.resp = Some(Resp::Answered(answer));
                None
            }
            std::task::Poll::Ready(Err(e)) => {
                self.resp = Some(Resp::Done);
                Some(h2_err(e))
            }
            std::task::Poll::Pending => None,
        }
    }

    async fn send(&mut self, mut data: Bytes) -> io::Result<()> {
        while !data.is_empty() || matches!(self.req, Req::Head) {
            match &mut self.req {
                Req::Head => {
                    self.head.extend_from_slice(&data);
                    match h1::parse_request(&self.head, MAX_HEAD) {
                        Ok(Some((len, parts))) => {
                            let raw = self.head.split_to(len).freeze();
                            let head = parts.into_head(raw);
                            data = self.head.split().freeze();
                            self.start(head).await?;
                        }
                        Ok(None) => return Ok(()),
                        Err(_) => return Err(io::ErrorKind::InvalidInput.into()),
                    }
                }
                Req::Length(send, left) => {
                    let k = (*left).min(data.len() as u64) as usize;
                    *left -= k as u64;
                    let end = *left == 0;
                    send_data(send, data.split_to(k), end).await?;
                    if end {
                        self.req = Req::Sent;
                    }
                }
                Req::Chunked(send, dec) => {
                    let mut ranges: smallvec::SmallVec<[std::ops::Range<usize>; 4]> =
                        Default::default();
                    let k = dec
                        .feed(&data, |r| ranges.push(r))
                        .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
                    let part = data.split_to(k);
                    let done = dec.is_done();
                    for r in ranges {
                        send_data(send, part.slice(r), false).await?;
                    }
                    if done {
                        send_data(send, Bytes::new(), true).await?;
                        self.req = Req::Sent;
                    }
                }
                Req::Sent => return Ok(()),
            }
        }
        Ok(())
    }

    /// Sends the HEADERS frame for a parsed request head.
    async fn start(&mut self, head: h1::RequestHead) -> io::Result<()> {
        if head.upgrade {
            // A protocol switch has no HTTP/2 form here.
            return Err(io::ErrorKind::Unsupported.into());
        }
        let host = head
            .host_bytes()
            .and_then(|h| std::str::from_utf8(h).ok())
            .unwrap_or("localhost");
        // The request target alone (a header value's non-UTF-8 byte must not send the request
        // to "/").
        let rest = &head.raw[head.path.start as usize..];
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let target = std::str::from_utf8(&rest[..end]).unwrap_or("/");
        let uri = format!("{}://{host}{}", self.scheme, uri_safe(target));
        let mut req = http::Request::builder()
            .method(head.method_bytes())
            .uri(uri)
            .body(())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let headers = req.headers_mut();
        for (name, value) in head.headers() {
            if name.eq_ignore_ascii_case(b"host")
                || crate::http::h1::hop_by_hop(name)
                || name.eq_ignore_ascii_case(b"content-length") && head.framing == Framing::Chunked
            {
                continue;
            }
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        let end = matches!(head.framing, Framing::None | Framing::Length(0));
        self.head_req = head.method_bytes() == b"HEAD";
        poll_fn(|cx| self.sender.poll_ready(cx))
            .await
            .map_err(not_sent)?;
        let (resp, send) = self.sender.send_request(req, end).map_err(not_sent)?;
        self.resp = Some(Resp::Waiting(resp));
        self.req = match head.framing {
            _ if end => Req::Sent,
            Framing::Length(n) => Req::Length(send, n),
            _ => Req::Chunked(send, ChunkedDecoder::new(u64::MAX)),
        };
        Ok(())
    }

    /// Appends the answer, as HTTP/1.1, to `buf`; `Ok(0)` once it has all been given.
    pub(crate) async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            match self.resp.take() {
                None | Some(Resp::Done) => {
                    self.resp = Some(Resp::Done);
                    return Ok(0);
                }
                Some(Resp::Waiting(fut)) => {
                    self.resp = Some(Resp::Answered(fut.await.map_err(h2_err)?));
                }
                Some(Resp::Answered(resp)) => {
                    let (parts, recv) = resp.into_parts();
                    let before = buf.len();
                    let end = recv.is_end_stream();
                    let has_length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
                    let chunked = !end && !has_length && !self.head_req;
                    let status = parts.status;
                    buf.extend_from_slice(b"HTTP/1.1 ");
                    buf.extend_from_slice(status.as_str().as_bytes());
                    buf.extend_from_slice(b" ");
                    buf.extend_from_slice(status.canonical_reason().unwrap_or("-").as_bytes());
                    buf.extend_from_slice(b"\r\n");
                    for (n, v) in &parts.headers {
                        // Trailers are relayed in a chunked body alone: announced otherwise,
                        // the client would wait for fields that never come.
                        if !chunked && n == http::header::TRAILER {
                            continue;
                        }
                        buf.extend_from_slice(n.as_str().as_bytes());
                        buf.extend_from_slice(b": ");
                        buf.extend_from_slice(v.as_bytes());
                        buf.extend_from_slice(b"\r\n");
                    }
                    if chunked {
                        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    } else if end
                        && !has_length
                        && !self.head_req
                        && !matches!(status.as_u16(), 204 | 304)
                    {
                        buf.extend_from_slice(b"content-length: 0\r\n");
                    }
                    buf.extend_from_slice(b"\r\n");
                    self.resp = Some(if end {
                        Resp::Done
                    } else {
                        Resp::Body { recv, chunked }
                    });
                    return Ok(buf.len() - before);
                }
                Some(Resp::Body { mut recv, chunked }) => {
                    match poll_fn(|cx| recv.poll_data(cx)).await {
                        Some(Ok(d)) => {
                            let _ = recv.flow_control().release_capacity(d.len());
                            let before = buf.len();
                            if chunked && !d.is_empty() {
                                use std::fmt::Write;
                                let _ = write!(buf, "{:x}\r\n", d.len());
                                buf.extend_from_slice(&d);
                                buf.extend_from_slice(b"\r\n");
                            } else {
                                buf.extend_from_slice(&d);
                            }
                            self.resp = Some(Resp::Body { recv, chunked });
                            if buf.len() > before {
                                return Ok(buf.len() - before);
                            }
                        }
                        Some(Err(e)) => return Err(h2_err(e)),
                        None => {
                            self.resp = Some(Resp::Done);
                            if !chunked {
                                return Ok(0);
                            }
                            // The last chunk, with the upstream's trailers (gRPC's status).
                            let before = buf.len();
                            buf.extend_from_slice(b"0\r\n");
                            if let Ok(Some(fields)) = poll_fn(|cx| recv.poll_trailers(cx)).await {
                                for (n, v) in &fields {
                                    buf.extend_from_slice(n.as_str().as_bytes());
                                    buf.extend_from_slice(b": ");
                                    buf.extend_from_slice(v.as_bytes());
                                    buf.extend_from_slice(b"\r\n");
                                }
                            }
                            buf.extend_from_slice(b"\r\n");
                            return Ok(buf.len() - before);
                        }
                    }
                }
            }
        }
    }
}

/// Sends DATA as the upstream's flow-control window allows.
async fn send_data(send: &mut SendStream<Bytes>, data: Bytes, end: bool) -> io::Result<()> {
    crate::http::h2::flow::send_data(send, data, end, h2_err).await
}
