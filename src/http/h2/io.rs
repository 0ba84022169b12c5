//! The bytes under an HTTP/2 connection: the `h2` crate wants tokio's poll-style
//! `AsyncRead`/`AsyncWrite`; monoio's sockets take owned buffers. [`H2Io`] bridges them with
//! one read and one write in flight at a time, each an owned future holding its socket half
//! and its buffer (no borrowed state across an await, no unsafe). TLS, when there is any, is
//! rustls' session driven in memory between the two.
//!
//! Writes are write-behind: a `poll_write` copies the frames (all of a vectored write, so a
//! DATA frame's header and payload leave in one `write`) and reports them taken; the next
//! write or flush waits for that one to finish, which is the backpressure.
//!
//! Every byte the client sends passes [`FrameWatch`], which reads frame headers only and
//! counts the frames that floods are made of (PING, SETTINGS, PRIORITY, empty DATA,
//! RST_STREAM, CONTINUATION). Past a limit it stops handing bytes to h2 and raises the flag
//! that makes the connection loop send GOAWAY ENHANCE_YOUR_CALM.

use std::cell::Cell;
use std::future::Future;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::Http2;

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

/// A flood the watch caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// PING, SETTINGS, PRIORITY or empty DATA frames past the bucket.
    Control,
    /// RST_STREAM frames past the bucket (rapid reset).
    Reset,
    /// Too many CONTINUATION frames in one header block.
    Continuation,
}

/// State the I/O shares with the connection loop: the flood flag and the loop's waker.
#[derive(Default)]
pub struct Signal {
    pub flood: Cell<Option<Flood>>,
    waker: Cell<Option<Waker>>,
}

impl Signal {
    pub fn register(&self, w: &Waker) {
        self.waker.set(Some(w.clone()));
    }

    pub fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// A token bucket counted in frames.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Bucket {
        Bucket {
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
            at: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        if self.tokens < 1.0 {
            let now = Instant::now();
            let dt = now.duration_since(self.at).as_secs_f64();
            self.at = now;
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Follows the client's frame boundaries and counts what floods are made of.
pub struct FrameWatch {
    /// Client preface bytes still to skip.
    preface: usize,
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload: usize,
    /// Inside a header block (HEADERS without END_HEADERS, then CONTINUATIONs).
    continuations: Option<u32>,
    max_continuations: u32,
    control: Bucket,
    resets: Bucket,
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

impl FrameWatch {
    pub fn new(cfg: &Http2) -> FrameWatch {
        FrameWatch {
            preface: crate::http::h2::PREFACE.len(),
            head: [0; 9],
            head_len: 0,
            payload: 0,
            continuations: None,
            max_continuations: cfg.max_continuation_frames,
            control: Bucket::new(cfg.control_frames_per_second, cfg.control_frames_burst),
            resets: Bucket::new(cfg.resets_per_second, cfg.resets_burst),
        }
    }

    /// Scans bytes as they arrive; a flood stops the scan.
    pub fn scan(&mut self, mut b: &[u8]) -> Result<(), Flood> {
        while !b.is_empty() {
            if self.preface > 0 {
                let k = self.preface.min(b.len());
                self.preface -= k;
                b = &b[k..];
            } else if self.payload > 0 {
                let k = self.payload.min(b.len());
                self.payload -= k;
                b = &b[k..];
            } else {
                let k = (9 - self.head_len).min(b.len());
                self.head[self.head_len..self.head_len + k].copy_from_slice(&b[..k]);
                self.head_len += k;
                b = &b[k..];
                if self.head_len == 9 {
                    self.head_len = 0;
                    self.frame()?;
                }
            }
        }
        Ok(())
    }

    fn frame(&mut self) -> Result<(), Flood> {
        let h = self.head;
        let len = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
        let (kind, flags) = (h[3], h[4]);
        self.payload = len;
        let control = match kind {
            PING | SETTINGS => flags & ACK == 0,
            PRIORITY => true,
            DATA => len == 0 && flags & END_STREAM == 0,
            _ => false,
        };
        if control && !self.control.take() {
            return Err(Flood::Control);
        }
        if kind == RST_STREAM && !self.resets.take() {
            return Err(Flood::Reset);
        }
        match kind {
            HEADERS | PUSH_PROMISE => {
                self.continuations = (flags & END_HEADERS == 0).then_some(0);
            }
            CONTINUATION => {
                if let Some(n) = self.continuations.as_mut() {
                    *n += 1;
                    if *n > self.max_continuations {
                        return Err(Flood::Continuation);
                    }
                }
                if flags & END_HEADERS != 0 {
                    self.continuations = None;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The transport under one HTTP/2 connection.
pub struct H2Io {
    rd: Option<Rd>,
    wr: Option<Wr>,
    reading: Option<ReadOp>,
    writing: Option<WriteOp>,
    closing: Option<Op<(Wr, io::Result<()>)>>,
    /// Plain: bytes read and not yet handed over. TLS: ciphertext not yet given to rustls.
    rbuf: Vec<u8>,
    rpos: usize,
    /// A spare write buffer, reused.
    spare: Vec<u8>,
    /// Bytes read before HTTP/2 was chosen (h2c prior knowledge), handed over first.
    prefix: Bytes,
    tls: Option<Box<rustls::ServerConnection>>,
    eof: bool,
    watch: FrameWatch,
    signal: Rc<Signal>,
    /// A flood was caught: nothing more is read.
    stopped: bool,
}

/// Lets `b` through the watch; on a flood, stops reading and tells the connection loop (the
/// read then stays pending: an empty read would read as the end of the stream).
fn check(
    watch: &mut FrameWatch,
    signal: &Signal,
    stopped: &mut bool,
    cx: &Context<'_>,
    b: &[u8],
) -> bool {
    if let Err(f) = watch.scan(b) {
        *stopped = true;
        signal.flood.set(Some(f));
        signal.wake();
        cx.waker().wake_by_ref();
        return false;
    }
    true
}

impl H2Io {
    pub fn plain(io: TcpStream, prefix: Bytes, cfg: &Http2, signal: Rc<Signal>) -> H2Io {
        H2Io::new(io, prefix, None, Vec::new(), cfg, signal)
    }

    pub fn tls(t: crate::tls::stream::TlsConn, cfg: &Http2, signal: Rc<Signal>) -> H2Io {
        let (io, tls, leftover) = t.into_parts();
        H2Io::new(io, Bytes::new(), Some(Box::new(tls)), leftover, cfg, signal)
    }

    fn new(
        io: TcpStream,
        prefix: Bytes,
        tls: Option<Box<rustls::ServerConnection>>,
        leftover: Vec<u8>,
        cfg: &Http2,
        signal: Rc<Signal>,
    ) -> H2Io {
        let (rd, wr) = io.into_split();
        let mut rbuf = Vec::with_capacity(READ_SIZE);
        rbuf.extend_from_slice(&leftover);
        H2Io {
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
            watch: FrameWatch::new(cfg),
            signal,
            stopped: false,
        }
    }

    /// Drives the write in flight, if any, to completion.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(op) = self.writing.as_mut() {
            let (wr, res, mut buf) = std::task::ready!(op.as_mut().poll(cx));
            self.writing = None;
            self.wr = Some(wr);
            buf.clear();
            self.spare = buf;
            res?;
        }
        Poll::Ready(Ok(()))
    }

    /// Starts writing `buf` and polls it once, so the write is submitted now.
    fn start_write(&mut self, cx: &mut Context<'_>, buf: Vec<u8>) -> io::Result<()> {
        let Some(mut wr) = self.wr.take() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        self.writing = Some(Box::pin(async move {
            let (res, buf) = wr.write_all(buf).await;
            (wr, res.map(|_| ()), buf)
        }));
        match self.poll_written(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }

    /// TLS: records rustls has ready (handshake messages, alerts, key updates, data).
    fn start_tls_write(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        if !tls.wants_write() || self.writing.is_some() {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.spare);
        while tls.wants_write() {
            tls.write_tls(&mut buf)?;
        }
        self.start_write(cx, buf)
    }

    /// Gives rustls what was read; `rbuf[rpos..]` is what it did not take yet.
    fn feed_tls(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        while self.rpos < self.rbuf.len() {
            let mut rd = &self.rbuf[self.rpos..];
            let n = tls.read_tls(&mut rd)?;
            self.rpos += n;
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }
}

impl AsyncRead for H2Io {
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
                if !check(&mut me.watch, &me.signal, &mut me.stopped, cx, &b) {
                    return Poll::Pending;
                }
                out.put_slice(&b);
                return Poll::Ready(Ok(()));
            }
            if let Some(tls) = me.tls.as_mut() {
                let dst = out.initialize_unfilled();
                match tls.reader().read(dst) {
                    Ok(0) => return Poll::Ready(Ok(())),
                    Ok(n) => {
                        if !check(&mut me.watch, &me.signal, &mut me.stopped, cx, &dst[..n]) {
                            return Poll::Pending;
                        }
                        out.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Poll::Ready(Ok(()))
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
                if me.eof {
                    return Poll::Ready(Ok(()));
                }
            } else if me.rpos < me.rbuf.len() {
                let k = (me.rbuf.len() - me.rpos).min(out.remaining());
                let b = &me.rbuf[me.rpos..me.rpos + k];
                if !check(&mut me.watch, &me.signal, &mut me.stopped, cx, b) {
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
                let Some(mut rd) = me.rd.take() else {
                    return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
                };
                let mut buf = std::mem::take(&mut me.rbuf);
                buf.clear();
                if buf.capacity() < READ_SIZE {
                    buf.reserve(READ_SIZE);
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
                Ok(0) => {
                    me.eof = true;
                    if let Some(tls) = me.tls.as_mut() {
                        let _ = tls.read_tls(&mut &[][..]);
                        let _ = tls.process_new_packets();
                    }
                }
                Ok(_) => {
                    if let Err(e) = me.feed_tls() {
                        // Send the alert that says why before failing.
                        let _ = me.start_tls_write(cx);
                        return Poll::Ready(Err(e));
                    }
                    // Key updates and the like are answered as they come.
                    me.start_tls_write(cx)?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for H2Io {
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
        let mut buf = std::mem::take(&mut me.spare);
        let mut n = 0;
        match me.tls.as_mut() {
            Some(tls) => {
                for b in bufs {
                    let k = tls.writer().write(b)?;
                    n += k;
                    if k < b.len() {
                        break;
                    }
                }
                while tls.wants_write() {
                    tls.write_tls(&mut buf)?;
                }
            }
            None => {
                for b in bufs {
                    buf.extend_from_slice(b);
                    n += b.len();
                }
            }
        }
        if buf.is_empty() {
            me.spare = buf;
        } else {
            me.start_write(cx, buf)?;
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
                tls.send_close_notify();
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

impl Drop for H2Io {
    /// Lingers: reads and discards what the client still sends for a moment, so that it
    /// reads the last frames (a GOAWAY) instead of a reset.
    fn drop(&mut self) {
        if self.eof {
            return;
        }
        let reading = self.reading.take();
        let rd = self.rd.take();
        let wr = self.wr.take();
        monoio::spawn(async move {
            let _wr = wr;
            let deadline = Instant::now() + LINGER_TIME;
            let (mut rd, mut buf) = match (reading, rd) {
                (Some(op), _) => match monoio::time::timeout_at(deadline.into(), op).await {
                    Ok((rd, Ok(n), buf)) if n > 0 => (rd, buf),
                    _ => return,
                },
                (None, Some(rd)) => (rd, Vec::with_capacity(READ_SIZE)),
                (None, None) => return,
            };
            let mut drained = 0;
            while drained < LINGER_BYTES {
                buf.clear();
                let (res, b) = match monoio::time::timeout_at(deadline.into(), rd.read(buf)).await {
                    Ok(r) => r,
                    Err(_) => return,
                };
                buf = b;
                match res {
                    Ok(n) if n > 0 => drained += n,
                    _ => return,
                }
            }
        });
    }
}
