//! A monoio socket (plain, or TLS as either side) as tokio's poll-style `AsyncRead` and
//! `AsyncWrite`, for what is written against them: the `h2` crate, and the byte relay after
//! a protocol switch (`tokio::io::copy_bidirectional`) when either side is TLS.
//!
//! [`PollIo`] keeps one read and one write in flight at a time, each an owned future holding
//! its socket half and its buffer (no borrowed state across an await, no unsafe). TLS, when
//! there is any, is the TLS session ([`crate::http::tls::session::Session`]) driven in memory
//! between the two, so reads and writes proceed independently; on Tollgate's own runtime its
//! records are decrypted in the ring buffer they arrived in. Writes are write-behind: a
//! `poll_write` copies the bytes (all of a vectored write, so a DATA frame's header and
//! payload leave in one `write`) and reports them taken; the next write or flush waits for
//! that one to finish, which is the backpressure.
//!
//! An HTTP/2 connection also passes every byte it reads through the flood watch
//! ([`crate::http::h2::watch::FrameWatch`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::driver::net::TcpStream;
use bytes::Bytes;
use monoio::buf::IoBuf;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::h2::watch::{FrameWatch, Signal};
use crate::http::tls::session::{Session, OUT_BATCH};

type Op<T> = Pin<Box<dyn Future<Output = T>>>;
type Rd = OwnedReadHalf<TcpStream>;
type Wr = OwnedWriteHalf<TcpStream>;
type ReadOp = Op<(Rd, io::Result<usize>, Vec<u8>)>;
type WriteOp = Op<(Wr, io::Result<()>, Vec<u8>)>;

/// Bytes read per socket read: one maximal TLS record and its header.
const READ_SIZE: usize = 16 * 1024 + 256;
/// After the connection ends: how long and how much to drain so the client reads the GOAWAY
/// rather than a reset.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 << 10;

/// A socket as tokio's `AsyncRead + AsyncWrite`.
pub(crate) struct PollIo {
    rd: Option<Rd>,
    wr: Option<Wr>,
    reading: Option<ReadOp>,
    writing: Option<WriteOp>,
    closing: Option<Op<(Wr, io::Result<()>)>>,
    /// Plain: bytes read and not yet handed over. TLS on monoio's drivers: the read's buffer,
    /// whose bytes go to the session as they come.
    rbuf: Vec<u8>,
    rpos: usize,
    /// A spare write buffer, reused.
    spare: Vec<u8>,
    /// Bytes already read (the h2c preface, a client's bytes after its upgrade request, an
    /// upstream's after its 101), handed over first.
    prefix: Bytes,
    tls: Option<Box<Session>>,
    eof: bool,
    watch: Option<(FrameWatch, Rc<Signal>)>,
    /// A flood was caught: nothing more is read.
    stopped: bool,
    /// Bytes asked of each socket read ([`READ_SIZE`] unless [`PollIo::read_size`] says).
    read_size: usize,
    /// The socket on Tollgate's own runtime: a read waits for bytes on it holding no buffer.
    own: Option<crate::rt::net::TcpStream>,
}

/// Lets `b` through the watch, if there is one; on a flood, stops reading and tells the
/// connection loop (the read then stays pending: an empty read would read as the end of the
/// stream).
fn check(
    watch: &mut Option<(FrameWatch, Rc<Signal>)>,
    stopped: &mut bool,
    cx: &Context<'_>,
    b: &[u8],
) -> bool {
    let Some((watch, signal)) = watch.as_mut() else {
        return true;
    };
    if let Err(f) = watch.scan(b) {
        *stopped = true;
        signal.flood.set(Some(f));
        signal.wake();
        cx.waker().wake_by_ref();
        return false;
    }
    true
}

impl PollIo {
    /// A plain socket; `prefix` is read first.
    pub(crate) fn plain(io: TcpStream, prefix: Bytes) -> PollIo {
        PollIo::new(io, prefix, None)
    }

    /// A TLS connection, either side, with what its session holds (ciphertext not yet
    /// processed, plaintext not yet read); `prefix` is plaintext read first.
    pub(crate) fn tls(io: TcpStream, tls: Box<Session>, prefix: Bytes) -> PollIo {
        PollIo::new(io, prefix, Some(tls))
    }

    /// Reads at most `n` bytes per socket read (a WebSocket connection: its buffer is
    /// mostly idle).
    pub(crate) fn read_size(mut self, n: usize) -> PollIo {
        self.read_size = n;
        self
    }

    /// On Tollgate's own runtime, lets the socket's receive take up to `n` bytes before its
    /// reader asks again, not just one read's room (an HTTP/2 connection, whose frames are
    /// read as they come). A reader that stops (the `h2` crate waiting on a write to a client
    /// that does not read) then holds up to `n` received ahead, where it held one read's room.
    pub(crate) fn read_ahead(self, n: usize) -> PollIo {
        if let Some(own) = &self.own {
            own.want(n);
        }
        self
    }

    /// Hands `bufs` to the socket (or the TLS session): how many bytes it took.
    fn write_bufs(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self;
        let mut n = 0;
        if let Some(tls) = me.tls.as_mut() {
            // Encrypted straight into the session's outgoing buffer, up to a batch a write.
            for b in bufs.iter().filter(|b| !b.is_empty()) {
                let k = b.len().min(OUT_BATCH - n);
                if k == 0 {
                    break;
                }
                if let Err(e) = tls.write(&b[..k]) {
                    // The alert that says why, if there is one.
                    let _ = me.start_tls_write(cx);
                    return Poll::Ready(Err(e));
                }
                n += k;
                if k < b.len() {
                    break;
                }
            }
            me.start_tls_write(cx)?;
            return Poll::Ready(Ok(n));
        }
        let mut buf = std::mem::take(&mut me.spare);
        for b in bufs {
            buf.extend_from_slice(b);
            n += b.len();
        }
        if buf.is_empty() {
            me.spare = buf;
        } else {
            let len = buf.len();
            me.start_write(cx, buf, len)?;
        }
        Poll::Ready(Ok(n))
    }

    /// Passes everything read through an HTTP/2 flood watch.
    pub(crate) fn watched(mut self, watch: FrameWatch, signal: Rc<Signal>) -> PollIo {
        self.watch = Some((watch, signal));
        self
    }

    fn new(io: TcpStream, prefix: Bytes, tls: Option<Box<Session>>) -> PollIo {
        let own = io.own().cloned();
        let (rd, wr) = io.into_split();
        // Sized at the first read (by `read_size`).
        let rbuf = Vec::new();
        PollIo {
            rd: Some(rd),
            wr: Some(wr),
            reading: None,
            writing: None,
            closing: None,
            rbuf,
            rpos: 0,
            spare: Vec::new(),
            prefix,
            tls,
            eof: false,
            watch: None,
            stopped: false,
            read_size: READ_SIZE,
            own,
        }
    }

    /// Drives the write in flight, if any, to completion.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(op) = self.writing.as_mut() {
            let (wr, res, mut buf) = std::task::ready!(op.as_mut().poll(cx));
            self.writing = None;
            self.wr = Some(wr);
            match self.tls.as_mut() {
                Some(tls) => tls.put_outgoing(buf),
                None => {
                    buf.clear();
                    self.spare = buf;
                }
            }
            res?;
        }
        Poll::Ready(Ok(()))
    }

    /// Starts writing `buf[..n]` and polls it once, so the write is submitted now.
    fn start_write(&mut self, cx: &mut Context<'_>, buf: Vec<u8>, n: usize) -> io::Result<()> {
        let Some(mut wr) = self.wr.take() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        self.writing = Some(Box::pin(async move {
            let (res, buf) = wr.write_all(buf.slice(..n)).await;
            (wr, res.map(|_| ()), buf.into_inner())
        }));
        match self.poll_written(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }

    /// TLS: records the session has ready (handshake messages, alerts, key updates, data).
    fn start_tls_write(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        if !tls.wants_write() || self.writing.is_some() {
            return Ok(());
        }
        let (buf, n) = tls.take_outgoing();
        self.start_write(cx, buf, n)
    }
}

impl AsyncRead for PollIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            if me.stopped {
                return Poll::Pending;
            }
            if out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if !me.prefix.is_empty() {
                let k = me.prefix.len().min(out.remaining());
                let b = me.prefix.split_to(k);
                if !check(&mut me.watch, &mut me.stopped, cx, &b) {
                    return Poll::Pending;
                }
                out.put_slice(&b);
                return Poll::Ready(Ok(()));
            }
            if let Some(tls) = me.tls.as_mut() {
                let stashed = tls.stashed();
                if !stashed.is_empty() {
                    let k = stashed.len().min(out.remaining());
                    if !check(&mut me.watch, &mut me.stopped, cx, &stashed[..k]) {
                        return Poll::Pending;
                    }
                    out.put_slice(&stashed[..k]);
                    tls.consume_stash(k);
                    return Poll::Ready(Ok(()));
                }
                let before = out.filled().len();
                let mut sink = |b: &[u8]| {
                    let k = b.len().min(out.remaining());
                    out.put_slice(&b[..k]);
                    k
                };
                let read = if tls.has_unprocessed() {
                    // Ciphertext already read (the rest of the last read, or what came with
                    // the hand-over) is processed before the socket is read again.
                    Some(tls.read(&mut sink))
                } else if me.eof || tls.peer_closed() {
                    return Poll::Ready(Ok(()));
                } else if let Some(own) = me.own.as_ref() {
                    // Tollgate's own runtime: the records are decrypted in the ring buffer
                    // they arrived in (part of one left at its end is copied into the
                    // session); no buffer is held while none come.
                    own.want_at_least(me.read_size);
                    match own.poll_recv(cx) {
                        Poll::Pending => {
                            tls.release_reads();
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(Some(mut b))) => {
                            Some(tls.read_from(b.bytes_mut(), &mut sink))
                        }
                        Poll::Ready(Ok(None)) => {
                            me.eof = true;
                            continue;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    }
                } else {
                    // monoio's drivers: read below, into `rbuf`.
                    None
                };
                if let Some(read) = read {
                    // Key updates and the like are answered as they come, alerts before
                    // failing.
                    if let Err(e) = read {
                        // (After the write in flight, if it is done.)
                        let _ = me.poll_written(cx);
                        let _ = me.start_tls_write(cx);
                        return Poll::Ready(Err(e));
                    }
                    me.start_tls_write(cx)?;
                    if out.filled().len() > before {
                        if !check(&mut me.watch, &mut me.stopped, cx, &out.filled()[before..]) {
                            return Poll::Pending;
                        }
                        return Poll::Ready(Ok(()));
                    }
                    continue;
                }
            } else if me.rpos < me.rbuf.len() {
                let k = (me.rbuf.len() - me.rpos).min(out.remaining());
                let b = &me.rbuf[me.rpos..me.rpos + k];
                if !check(&mut me.watch, &mut me.stopped, cx, b) {
                    return Poll::Pending;
                }
                out.put_slice(b);
                me.rpos += k;
                return Poll::Ready(Ok(()));
            } else if me.eof {
                return Poll::Ready(Ok(()));
            }
            // Need bytes from the socket.
            if me.reading.is_none() {
                // Tollgate's own runtime: wait for them holding no buffer (an idle connection
                // keeps none); what arrives stays in its ring buffer for the read below.
                if let Some(own) = me.own.as_ref() {
                    match own.poll_recv(cx) {
                        Poll::Pending => {
                            me.rbuf = Vec::new();
                            me.rpos = 0;
                            return Poll::Pending;
                        }
                        Poll::Ready(Ok(Some(b))) => own.unrecv_ring(b),
                        Poll::Ready(Ok(None)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    }
                }
                let Some(mut rd) = me.rd.take() else {
                    return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
                };
                let mut buf = std::mem::take(&mut me.rbuf);
                buf.clear();
                if buf.capacity() < me.read_size {
                    buf.reserve(me.read_size);
                }
                me.reading = Some(Box::pin(async move {
                    let (res, buf) = rd.read(buf).await;
                    (rd, res, buf)
                }));
            }
            let op = me.reading.as_mut().expect("a read in flight");
            let (rd, res, buf) = std::task::ready!(op.as_mut().poll(cx));
            me.reading = None;
            me.rd = Some(rd);
            me.rbuf = buf;
            me.rpos = 0;
            match res {
                Ok(0) => me.eof = true,
                Ok(_) => {
                    // TLS on monoio's drivers: the bytes go to the session.
                    if let Some(tls) = me.tls.as_mut() {
                        tls.received(&me.rbuf);
                        me.rbuf.clear();
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for PollIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        std::task::ready!(me.poll_written(cx))?;
        let n = std::task::ready!(me.write_bufs(cx, bufs))?;
        if let Some((watch, _)) = me.watch.as_mut() {
            // The flood watch counts the DATA frames among what was taken.
            let mut left = n;
            for b in bufs {
                let k = b.len().min(left);
                watch.sent(&b[..k]);
                left -= k;
                if left == 0 {
                    break;
                }
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        loop {
            std::task::ready!(me.poll_written(cx))?;
            match me.tls.as_ref() {
                Some(tls) if tls.wants_write() => me.start_tls_write(cx)?,
                _ => return Poll::Ready(Ok(())),
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.closing.is_none() {
            if let Some(tls) = me.tls.as_mut() {
                // A session that cannot send one any more (closed, failed) just ends.
                let _ = tls.close_notify();
            }
            loop {
                std::task::ready!(me.poll_written(cx))?;
                match me.tls.as_ref() {
                    Some(tls) if tls.wants_write() => me.start_tls_write(cx)?,
                    _ => break,
                }
            }
            let Some(mut wr) = me.wr.take() else {
                return Poll::Ready(Ok(()));
            };
            me.closing = Some(Box::pin(async move {
                let res = wr.shutdown().await;
                (wr, res)
            }));
        }
        let op = me.closing.as_mut().expect("a shutdown in flight");
        let (wr, res) = std::task::ready!(op.as_mut().poll(cx));
        me.closing = None;
        me.wr = Some(wr);
        Poll::Ready(res)
    }
}

impl Drop for PollIo {
    /// Lingers: reads and discards what the client still sends for a moment, so that it
    /// reads the last frames (a GOAWAY) instead of a reset.
    fn drop(&mut self) {
        if self.eof {
            return;
        }
        let reading = self.reading.take();
        let rd = self.rd.take();
        let wr = self.wr.take();
        crate::driver::spawn(crate::driver::guarded(async move {
            let _wr = wr;
            let deadline = Instant::now() + LINGER_TIME;
            let (mut rd, mut buf) = match (reading, rd) {
                (Some(op), _) => match crate::driver::time::timeout_at(deadline, op).await {
                    Ok((rd, Ok(n), buf)) if n > 0 => (rd, buf),
                    _ => return,
                },
                (None, Some(rd)) => (rd, Vec::with_capacity(READ_SIZE)),
                (None, None) => return,
            };
            let mut drained = 0;
            while drained < LINGER_BYTES {
                buf.clear();
                let (res, b) = match crate::driver::time::timeout_at(deadline, rd.read(buf)).await {
                    Ok(r) => r,
                    Err(_) => return,
                };
                buf = b;
                match res {
                    Ok(n) if n > 0 => drained += n,
                    _ => return,
                }
            }
        }));
    }
}
