//! The HTTP/1.1 server side of one client connection: the keep-alive loop over one owned
//! read buffer. Heads are parsed in place and split off as `Bytes`; whatever follows (a body,
//! or the next pipelined request) stays in the buffer for the next step. Requests on one
//! connection are answered one at a time, so pipelined answers leave in order.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::driver::net::TcpStream;
use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::drain::Drain;
use super::h1::{self, HeadError, RequestHead};
use crate::error::{Error, Kind};

/// Read size when the buffer needs room. 4 KiB holds a typical head (and a small answer);
/// bigger bodies reserve what they need (up to 256 KiB per read). Every idle keep-alive
/// connection holds this much, so it is kept small: 16 KiB cost 1.2 GB more at 100k idle
/// connections, and measured no faster.
pub(crate) const READ_CHUNK: usize = 4 << 10;
/// How long a keep-alive connection waits for its next request with a read buffer in place
/// (1 s); after that it waits for readability with none, so that idle connections hold no
/// buffer (what a connection costs while idle, not while busy).
const IDLE_HOT: Duration = Duration::from_secs(1);

/// Bytes one read takes from the received buffers already there (Tollgate's own runtime).
const MAX_BATCH: usize = 256 << 10;

/// Lingering close: how long and how much to drain from a client we stopped reading.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// A client connection's transport: plain TCP, or TLS terminated here.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<crate::http::tls::TlsConn>),
    /// One HTTP/2 stream: the pipeline's HTTP/1.1 in and out, mapped to frames.
    H2(Box<crate::http::h2::stream::H2Stream>),
}

impl Stream {
    /// Appends what the client sent (decrypted) to `buf`; `Ok(0)` at end of stream.
    pub(crate) async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => read_into(s, buf).await,
            Stream::Tls(t) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(READ_CHUNK);
                }
                t.read_into(buf).await
            }
            Stream::H2(s) => s.read_into(buf).await,
        }
    }

    /// Writes all of `data`.
    pub(crate) async fn write_all<B: monoio::buf::IoBuf + AsRef<[u8]> + Into<bytes::Bytes>>(
        &mut self,
        data: B,
    ) -> io::Result<()> {
        match self {
            Stream::Plain(s) => write_all(s, data).await,
            Stream::Tls(t) => t.write_all(data.as_ref()).await,
            // A Vec or Bytes moves into the frames without a copy.
            Stream::H2(s) => s.write(data.into()).await,
        }
    }

    /// A head and a body: one `writev` on plain TCP (each write waiting at most `limit` for
    /// the client to take bytes); on TLS two records in one send, on HTTP/2 one frame write of each,
    /// within `limit` together.
    pub(crate) async fn write_head_body(
        &mut self,
        head: Vec<u8>,
        body: bytes::Bytes,
        limit: Duration,
    ) -> io::Result<()> {
        use crate::driver::time::timeout as t;
        match self {
            Stream::Plain(s) => write_head_body(s, head, body, limit).await,
            Stream::Tls(s) => t(limit, s.write_all_parts(&[&head, &body]))
                .await
                .map_err(send_timed_out)?,
            Stream::H2(s) => t(limit, async {
                s.write(head.into()).await?;
                s.write(body).await
            })
            .await
            .map_err(send_timed_out)?,
        }
    }

    /// The next write ends the last answer on this connection: on Tollgate's own runtime a
    /// plain socket sends its FIN right behind it, in the kernel (see
    /// `rt::net::TcpStream::fin_after_next_send`). Elsewhere nothing: monoio's drivers close
    /// the socket as soon as the connection ends.
    pub(crate) fn fin_after_next_write(&self) {
        if let Stream::Plain(s) = self {
            if let Some(own) = s.own() {
                own.fin_after_next_send();
            }
        }
    }

    /// A plain connection on Tollgate's own runtime: sends the FIN now if no write took it
    /// along, rather than with the socket's close (queued for the ring's next submission,
    /// after the receive's cancel). The client that asked for `Connection: close` then sees
    /// the end right behind the answer, and the gateway, which closed first, holds the
    /// TIME_WAIT rather than the client (whose ports a load of new connections would use up).
    pub(crate) fn fin_now(&self) {
        if let Stream::Plain(s) = self {
            if let Some(own) = s.own() {
                own.fin_now();
            }
        }
    }

    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(t) => t.shutdown().await,
            Stream::H2(s) => s.finish().await,
        }
    }

    /// Whether [`Stream::readable`] can wait without a buffer (plain TCP; TLS on Tollgate's
    /// own runtime, its buffers released meanwhile; an HTTP/2 stream is not a socket).
    pub(crate) fn can_wait_readable(&self) -> bool {
        match self {
            Stream::Plain(_) => true,
            Stream::Tls(t) => t.can_wait_readable(),
            Stream::H2(_) => false,
        }
    }

    /// Waits until the socket has bytes to read, holding no buffer (TLS: its scratch
    /// buffers are freed first).
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.readable().await,
            Stream::Tls(t) => {
                t.release_buffers();
                t.readable().await
            }
            Stream::H2(_) => Ok(()),
        }
    }

    /// Whether this is an HTTP/2 stream (its writes wait for the client's window).
    pub(crate) fn is_h2(&self) -> bool {
        matches!(self, Stream::H2(_))
    }

    pub(crate) fn is_tls(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(_) => true,
            Stream::H2(s) => s.tls,
        }
    }
}

/// A client connection.
pub(crate) struct Conn {
    pub stream: Stream,
    /// Bytes read and not yet used: the rest of a body or the next pipelined request.
    pub buf: BytesMut,
    pub peer: SocketAddr,
    /// Index of the listener it arrived on.
    pub listener: usize,
    /// The client's IP as text, for X-Forwarded-For: formatted once per connection.
    pub peer_ip: Rc<str>,
    /// Scratch for decoded path segments, reused by every request on the connection.
    pub segs: crate::syntax::path::Segments,
    /// mTLS: header lines from the verified client certificate, and the names the listener
    /// forwards (a client's own headers of those names are dropped).
    pub client_cert: Option<ClientCertHeaders>,
    /// Bytes read from and written to the client so far (what the exit records per request).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The TLS version negotiated (`TLSv1.3`), for the access log.
    pub tls_version: Option<&'static str>,
    /// `limits.send_timeout`: one write waits this long at most for the client to take
    /// bytes, then the connection is closed.
    pub send_timeout: Duration,
}

/// A write that waited `limits.send_timeout` for the client to read.
fn send_timed_out(_: crate::driver::time::Elapsed) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client did not read for limits.send_timeout",
    )
}

/// A negotiated TLS version's name as OpenSSL (and nginx's `$ssl_protocol`) spells it.
pub(crate) fn tls_version_name(v: Option<rustls::ProtocolVersion>) -> Option<&'static str> {
    Some(match v? {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "TLS",
    })
}

#[derive(Clone)]
pub struct ClientCertHeaders {
    pub lines: Rc<[u8]>,
    pub names: Rc<[String]>,
    /// Every field of the verified certificate (`CertField as usize`), for templates'
    /// `${context.identity.clientCert.*}`; None when the client sent none.
    pub fields: Option<Rc<[String]>>,
    /// Why the connection's client certificate is not accepted (mTLS listeners): its
    /// requests are answered 403.
    pub refused: Option<std::sync::Arc<str>>,
    /// The certificate it sent, checked again as its verdict ages (mTLS listeners).
    pub(crate) recheck: Option<Rc<crate::tls::client_auth::Recheck>>,
}

/// Appends what the socket has to `buf`; `Ok(0)` at end of stream.
pub(crate) async fn read_into(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if let TcpStream::Own(s) = stream {
        // The receive takes about the room the caller has, or what the connection expects
        // if more (see `rt::TcpStream::want`, `Conn::expect`): a client that sends and does
        // not read holds that much here, as with a plain read.
        let room = (buf.capacity() - buf.len()).clamp(READ_CHUNK, MAX_BATCH);
        s.want_at_least(room);
        // A received buffer of the ring, taken whole (at most one ring buffer per read, so
        // nothing is left behind holding one), and what else already arrived (the rest of a
        // body in a burst) up to the room (at most MAX_BATCH): one reservation, one copy of
        // each buffer.
        let Some(b) = s.recv().await? else {
            return Ok(0);
        };
        let mut got: smallvec::SmallVec<[crate::rt::RecvBuf; 4]> = smallvec::smallvec![b];
        let mut n = got[0].len();
        while n < room {
            let Some(b) = s.try_recv() else { break };
            n += b.len();
            got.push(b);
        }
        if buf.capacity() - buf.len() < n {
            buf.reserve(n.max(READ_CHUNK));
        }
        for b in &got {
            buf.extend_from_slice(b);
        }
        return Ok(n);
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_CHUNK);
    }
    let b = std::mem::take(buf);
    let (len, cap) = (b.len(), b.capacity());
    let (res, slice) = stream.read(b.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    res
}

/// The most of a received buffer [`read_head_into`] copies: a head and the first bytes of the
/// body; the rest of the buffer stays where it arrived, for the body to be sent on from it.
const HEAD_PEEK: usize = 4 << 10;

/// [`read_into`] for reading an answer's head: on Tollgate's own runtime, at most
/// [`HEAD_PEEK`] bytes of one received buffer are copied and the rest of it is put back,
/// uncopied (a body that follows is sent on from the ring, see `proxy::respond`); elsewhere,
/// as [`read_into`].
pub(crate) async fn read_head_into(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    let Some(s) = stream.own() else {
        return read_into(stream, buf).await;
    };
    let Some(mut b) = s.recv().await? else {
        return Ok(0);
    };
    let n = b.len().min(HEAD_PEEK);
    buf.extend_from_slice(&b[..n]);
    b.advance(n);
    s.unrecv_ring(b);
    Ok(n)
}

/// Writes all of `data`.
pub(crate) async fn write_all<B: monoio::buf::IoBuf>(
    stream: &mut TcpStream,
    data: B,
) -> io::Result<()> {
    let (res, _) = stream.write_all(data).await;
    res.map(|_| ())
}

/// A head and a body written with one `writev`: the body goes out from its own memory (a
/// cached answer's `Bytes`), not copied behind the head.
pub(crate) struct HeadBody {
    /// Boxed: the kernel reads the iovecs where they were when the write was queued, and the
    /// value moves into the operation after that.
    iov: Box<[libc::iovec; 2]>,
    head: Vec<u8>,
    body: bytes::Bytes,
}

impl HeadBody {
    pub(crate) fn new(head: Vec<u8>, body: bytes::Bytes) -> HeadBody {
        let iov = Box::new([
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            },
        ]);
        // The pointers stay valid: the Vec's and the Bytes' memory does not move with them.
        HeadBody { iov, head, body }
    }
}

// SAFETY: the iovecs (boxed) point into memory owned by the struct (heap memory of the Vec
// and the Bytes) and never mutated while it lives; none of it moves when the value does.
// monoio takes vectored buffers only through this trait.
#[allow(unsafe_code)]
unsafe impl monoio::buf::IoVecBuf for HeadBody {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }
    fn read_iovec_len(&self) -> usize {
        2
    }
}

/// Writes all of `data`, each write waiting at most `limit` for the client to take bytes
/// (nginx's `send_timeout`: the time between two successive writes, not the whole answer's).
pub(crate) async fn write_all_within<B: monoio::buf::IoBuf>(
    stream: &mut TcpStream,
    data: B,
    limit: Duration,
) -> io::Result<()> {
    let len = data.bytes_init();
    let (mut off, mut data) = (0, data);
    while off < len {
        let write = crate::driver::time::timeout(limit, stream.write(data.slice(off..)));
        let (res, rest) = write.await.map_err(send_timed_out)?;
        data = rest.into_inner();
        match res? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => off += n,
        }
    }
    Ok(())
}

/// Writes a head and a body in one vectored write; if the socket takes less, the rest with
/// plain writes, each write waiting at most `limit` (see [`write_all_within`]). (Not monoio's
/// `write_vectored_all`: after a partial write it sends bytes again and reads iovecs past its
/// own.)
pub(crate) async fn write_head_body(
    stream: &mut TcpStream,
    head: Vec<u8>,
    body: bytes::Bytes,
    limit: Duration,
) -> io::Result<()> {
    let total = head.len() + body.len();
    let write = crate::driver::time::timeout(limit, stream.writev(HeadBody::new(head, body)));
    let (res, hb) = write.await.map_err(send_timed_out)?;
    let n = res?;
    if n >= total {
        return Ok(());
    }
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    let HeadBody { head, body, .. } = hb;
    if n < head.len() {
        write_all_within(stream, bytes::Bytes::from(head).slice(n..), limit).await?;
        return write_all_within(stream, body, limit).await;
    }
    write_all_within(stream, body.slice(n - head.len()..), limit).await
}

/// A client's IP as text (X-Forwarded-For, `$context.identity.sourceIp`), made once per
/// connection: an IPv4 address is written out directly, one allocation and no formatter.
pub(crate) fn ip_text(ip: std::net::IpAddr) -> Rc<str> {
    let std::net::IpAddr::V4(v4) = ip else {
        return Rc::from(ip.to_string());
    };
    let mut out = [0u8; 15];
    let mut n = 0;
    for (i, o) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[n] = b'.';
            n += 1;
        }
        let mut b = itoa::Buffer::new();
        let digits = b.format(o).as_bytes();
        out[n..n + digits.len()].copy_from_slice(digits);
        n += digits.len();
    }
    Rc::from(std::str::from_utf8(&out[..n]).unwrap_or_default())
}

impl Conn {
    pub(crate) fn new(stream: Stream, buf: BytesMut, peer: SocketAddr, listener: usize) -> Conn {
        Conn {
            buf,
            peer,
            listener,
            peer_ip: ip_text(peer.ip()),
            segs: Default::default(),
            client_cert: None,
            bytes_in: 0,
            bytes_out: 0,
            send_timeout: crate::config::DEFAULT_SEND_TIMEOUT,
            tls_version: match &stream {
                Stream::Tls(t) => tls_version_name(t.tls.protocol_version()),
                _ => None,
            },
            stream,
        }
    }

    /// Bytes of the client's taken by requests so far (received, less what waits in `buf`).
    pub(crate) fn consumed(&self) -> u64 {
        self.bytes_in.saturating_sub(self.buf.len() as u64)
    }

    /// Says how much the client is expected to send next (on Tollgate's own runtime its
    /// receives take that much at a time, see `rt::TcpStream::want`, until the next call):
    /// between requests four times the last request's size, so that a client sending 16 KiB
    /// bodies gets several in one receive while one pipelining small requests whose answers
    /// it does not read gets 4 KiB at a time; for a chunked body, as much as a read takes.
    pub(crate) fn expect(&self, bytes: u64) {
        if let Stream::Plain(TcpStream::Own(s)) = &self.stream {
            s.want(bytes.min(u32::MAX as u64) as usize);
        }
    }

    /// Appends what the client sent to `buf`; `Ok(0)` at end of stream.
    pub(crate) async fn read_more(&mut self) -> io::Result<usize> {
        let n = self.stream.read_into(&mut self.buf).await?;
        self.bytes_in += n as u64;
        Ok(n)
    }

    /// Ends the connection's write side (TLS: close_notify first), waiting at most
    /// `send_timeout` for a client that does not read.
    pub(crate) async fn shutdown(&mut self) {
        let _ = crate::driver::time::timeout(self.send_timeout, self.stream.shutdown()).await;
    }

    /// Writes all of `data` to the client.
    pub(crate) async fn write_all<B: monoio::buf::IoBuf + AsRef<[u8]> + Into<bytes::Bytes>>(
        &mut self,
        data: B,
    ) -> io::Result<()> {
        self.bytes_out += data.as_ref().len() as u64;
        let limit = self.send_timeout;
        match &mut self.stream {
            Stream::Plain(s) => write_all_within(s, data, limit).await,
            s => crate::driver::time::timeout(limit, s.write_all(data))
                .await
                .map_err(send_timed_out)?,
        }
    }

    /// The client's socket when it is plain TCP on Tollgate's own runtime (bytes received
    /// elsewhere can be sent from the ring's buffers, see [`Conn::send_received`]).
    pub(crate) fn own_plain(&self) -> Option<&crate::rt::net::TcpStream> {
        match &self.stream {
            Stream::Plain(s) => s.own(),
            _ => None,
        }
    }

    /// Sends bytes received on another socket of the own runtime straight from the ring
    /// buffers they arrived in, in one vectored send (each buffer goes back once the kernel
    /// has copied it). That send does not wait: what the client cannot take at once is
    /// copied off the ring before the wait for it, so that clients that stop reading cannot
    /// hold the buffers every receive on the shard needs.
    /// `bufs` comes back empty, for the next batch, with whether the client was behind.
    pub(crate) async fn send_received(
        &mut self,
        bufs: crate::rt::net::RecvBufs,
    ) -> io::Result<(crate::rt::net::RecvBufs, bool)> {
        self.bytes_out += bufs.len() as u64;
        // Only the relay of an own-runtime plain connection calls this.
        let Some(s) = self.own_plain() else {
            return Err(io::Error::other(
                "not a plain connection on the own runtime",
            ));
        };
        let (res, mut bufs) = s.send_vectored_now(bufs).await;
        match res {
            Ok(n) => bufs.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // A kernel that refuses a send without waiting (RWF_NOWAIT on a socket): the
            // waiting send below, from the heap.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {}
            Err(e) => return Err(e),
        }
        let behind = !bufs.is_empty();
        if behind {
            bufs.off_ring();
        }
        while !bufs.is_empty() {
            let send = crate::driver::time::timeout(self.send_timeout, s.send_vectored(bufs));
            let (res, b) = send.await.map_err(send_timed_out)?;
            bufs = b;
            match res? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => bufs.advance(n),
            }
        }
        bufs.clear();
        Ok((bufs, behind))
    }

    /// The next write ends the last answer on this connection (see
    /// [`Stream::fin_after_next_write`]).
    pub(crate) fn fin_after_next_write(&self) {
        self.stream.fin_after_next_write();
    }

    /// A head and a body: one `writev` on plain TCP, within `limits.send_timeout`.
    pub(crate) async fn write_head_body(
        &mut self,
        head: Vec<u8>,
        body: bytes::Bytes,
    ) -> io::Result<()> {
        self.bytes_out += (head.len() + body.len()) as u64;
        let limit = self.send_timeout;
        self.stream.write_head_body(head, body, limit).await
    }
}

/// What reading a request head gave.
// The head is moved once per request; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum HeadRead {
    Head(RequestHead),
    Closed,
    Failed(Error),
}

/// h2c with prior knowledge: reads until the bytes are the HTTP/2 preface (`Some(true)`) or
/// cannot be (`Some(false)`: HTTP/1.1, parsed as usual). `None`: closed or timed out first.
pub(crate) async fn sniff_preface(conn: &mut Conn, timeout: Duration) -> Option<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = conn.buf.len().min(crate::http::h2::PREFACE.len());
        if conn.buf[..n] != crate::http::h2::PREFACE[..n] {
            return Some(false);
        }
        if n == crate::http::h2::PREFACE.len() {
            return Some(true);
        }
        match crate::driver::time::timeout_at(deadline, conn.read_more()).await {
            Ok(Ok(k)) if k > 0 => {}
            // A short, preface-like request that stops: let the HTTP/1.1 path answer it.
            Ok(Ok(_)) if !conn.buf.is_empty() => return Some(false),
            _ => return None,
        }
    }
}

/// Reads until a whole head is parsed. Before its first byte a kept-alive connection may idle
/// for `idle`; from the first byte the whole head must arrive within `header_timeout`.
pub(crate) async fn read_head(
    drain: &Rc<Drain>,
    conn: &mut Conn,
    max: usize,
    header_timeout: Duration,
    idle: Duration,
    first: bool,
) -> HeadRead {
    let mut deadline = if first {
        Some(Instant::now() + header_timeout)
    } else {
        None
    };
    loop {
        if !conn.buf.is_empty() {
            match h1::parse_request(&conn.buf, max) {
                Ok(Some((len, parts))) => {
                    let raw = conn.buf.split_to(len).freeze();
                    return HeadRead::Head(parts.into_head(raw));
                }
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    return HeadRead::Failed(Error::downstream(Kind::HeadTooLarge, "request head"))
                }
                Err(HeadError::UriTooLong) => {
                    return HeadRead::Failed(Error::downstream(Kind::UriTooLong, "request line"))
                }
                Err(HeadError::VersionNotSupported) => {
                    return HeadRead::Failed(Error::downstream(
                        Kind::VersionNotSupported,
                        "request line",
                    ))
                }
                Err(HeadError::Malformed(m)) => {
                    return HeadRead::Failed(Error::downstream(Kind::BadRequest(m), "request head"))
                }
                Err(HeadError::Connect) => {
                    return HeadRead::Failed(Error::downstream(
                        Kind::MethodNotAllowed(crate::syntax::Method::ANY.to_vec()),
                        "CONNECT request",
                    ))
                }
                Err(HeadError::UnknownCoding) => {
                    return HeadRead::Failed(Error::downstream(
                        Kind::CodingNotImplemented,
                        "request head",
                    ))
                }
                Err(HeadError::Expectation) => {
                    return HeadRead::Failed(Error::downstream(
                        Kind::ExpectationFailed,
                        "request head",
                    ))
                }
            }
            if deadline.is_none() {
                deadline = Some(Instant::now() + header_timeout);
            }
        }
        let res = match deadline {
            Some(d) => {
                // A read cut by the deadline takes the buffer with it: decide by what was
                // there before it.
                let partial = !conn.buf.is_empty();
                match crate::memory::boxed(|| crate::driver::time::timeout_at(d, conn.read_more()))
                    .await
                {
                    Ok(r) => r,
                    // Nothing sent at all: close quietly, as nginx does.
                    Err(_) if !partial => return HeadRead::Closed,
                    Err(_) => {
                        return HeadRead::Failed(Error::downstream(
                            Kind::HeadTimeout,
                            "request head",
                        ))
                    }
                }
            }
            None => {
                // Between requests: a read with a buffer for IDLE_HOT; a connection still
                // idle then holds no buffer while it waits (the cut read took it along), and
                // reads again once the socket is readable. (TLS on monoio's drivers, where
                // a read cut short may lose bytes, waits with one read.)
                let hot = if conn.stream.can_wait_readable() {
                    idle.min(IDLE_HOT)
                } else {
                    idle
                };
                let cold = idle - hot;
                // A soft drain (a successor took over) lets a connection that is talking
                // send its next request; it is answered with `Connection: close`.
                let draining = drain.hard_wait();
                // The reads with a buffer (and their timers) are on the heap for their
                // length: an idle connection's task carries only the bufferless wait below.
                let waited = monoio::select! {
                    r = crate::memory::boxed(|| crate::driver::time::timeout(hot, conn.read_more())) => r,
                    _ = draining => return HeadRead::Closed,
                };
                match waited {
                    Ok(r) => r,
                    Err(_) if cold.is_zero() => return HeadRead::Closed,
                    Err(_) => {
                        conn.buf = BytesMut::new();
                        crate::memory::release_freed_memory_soon();
                        let until = drain.idle_for(cold);
                        monoio::select! {
                            r = conn.stream.readable() => match r {
                                Ok(()) => continue,
                                Err(_) => return HeadRead::Closed,
                            },
                            _ = until => return HeadRead::Closed,
                        }
                    }
                }
            }
        };
        match res {
            Ok(0) => {
                return if conn.buf.is_empty() {
                    HeadRead::Closed
                } else {
                    HeadRead::Failed(Error::downstream(
                        Kind::BadRequest("Incomplete request"),
                        "request head",
                    ))
                };
            }
            // The header deadline starts at the first byte; it is set above, once the bytes
            // turn out not to be a whole head (no clock read for a head that came in one read).
            Ok(_) => {}
            Err(_) => return HeadRead::Closed,
        }
    }
}

/// Closes after an answer while the client may still be sending: stop writing, then read and
/// discard for a short while so the client sees the answer rather than a reset (nginx's
/// lingering close).
pub(crate) async fn linger_close(mut conn: Conn) {
    conn.shutdown().await;
    let deadline = Instant::now() + LINGER_TIME;
    let mut drained = 0;
    conn.buf.clear();
    while drained < LINGER_BYTES {
        conn.buf.clear();
        match crate::driver::time::timeout_at(deadline, conn.read_more()).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Head and body through one `writev` to a socket that takes less at a time: every byte
    /// arrives once, in order, on each runtime.
    fn head_and_body_arrive_whole(
        run: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>),
    ) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 16777216\r\n\r\n".to_vec();
        let body: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
        let mut want = head.clone();
        want.extend_from_slice(&body);
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let (mut c, _) = l.accept().unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            got
        });
        let body = bytes::Bytes::from(body);
        run(Box::pin(async move {
            let mut s = TcpStream::connect_addr(addr).await.unwrap();
            write_head_body(&mut s, head, body, Duration::from_secs(10))
                .await
                .unwrap();
        }));
        assert!(
            reader.join().unwrap() == want,
            "bytes lost, repeated or out of order"
        );
    }

    #[test]
    fn a_partial_vectored_write_sends_the_rest_once() {
        head_and_body_arrive_whole(|f| {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .unwrap();
            rt.block_on(f);
        });
        if crate::rt::supported() {
            head_and_body_arrive_whole(|f| {
                crate::driver::block_on_own(crate::rt::Builder::default(), f).unwrap();
            });
        }
    }

    #[test]
    fn a_client_ip_reads_as_the_standard_library_writes_it() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "9.99.100.255",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(&*ip_text(ip), ip.to_string());
        }
    }
}
