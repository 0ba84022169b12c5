//! TCP on this thread's runtime. [`TcpStream`] implements monoio's `AsyncReadRent` and
//! `AsyncWriteRent` (and may be split), so that what is written over those — the HTTP/1.1
//! connection, TLS, the HTTP/2 adapter, the relays — runs on either runtime.
//!
//! On Tollgate's own runtime a read takes the next received buffer from the ring, copies
//! what fits into the caller's buffer and keeps the rest for the next read; a write sends
//! from the caller's buffer, which the operation keeps until the kernel is done with it.

#![allow(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::BufResult;

use crate::rt::net as own;

/// A connected socket.
pub(crate) enum TcpStream {
    Mono(monoio::net::TcpStream),
    Own(own::TcpStream),
}

impl TcpStream {
    /// Connects to `addr`.
    pub(crate) async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
        if super::own() {
            own::TcpStream::connect(addr).await.map(TcpStream::Own)
        } else {
            monoio::net::TcpStream::connect_addr(addr)
                .await
                .map(TcpStream::Mono)
        }
    }

    /// Takes a connected std socket (one taken off a listening socket's queue with a plain
    /// `accept(2)`). The epoll driver wants it non-blocking; the io_uring drivers take it as
    /// their own accepts give it, blocking.
    pub(crate) fn from_std(s: std::net::TcpStream, nonblocking: bool) -> io::Result<TcpStream> {
        s.set_nonblocking(nonblocking)?;
        if super::own() {
            Ok(TcpStream::Own(own::TcpStream::from_std(s)))
        } else {
            monoio::net::TcpStream::from_std(s).map(TcpStream::Mono)
        }
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            TcpStream::Mono(s) => s.set_nodelay(on),
            TcpStream::Own(s) => s.set_nodelay(on),
        }
    }

    /// On Tollgate's own runtime, receives one buffer per operation instead of a multishot
    /// receive (see `rt::net::TcpStream::set_bounded`); monoio reads into the caller's buffer
    /// already.
    pub(crate) fn set_bounded(&self, on: bool) {
        if let TcpStream::Own(s) = self {
            s.set_bounded(on);
        }
    }

    /// Waits until a read would not wait (bytes, the end of the stream or an error), holding
    /// no buffer of the caller's: on monoio a readiness poll; on Tollgate's own runtime the
    /// receive's next buffer, kept for the next read.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        match self {
            TcpStream::Mono(s) => s.readable(false).await,
            TcpStream::Own(s) => std::future::poll_fn(|cx| s.poll_readable(cx)).await,
        }
    }

    /// Whether the peer closed its side (or reset), once [`TcpStream::readable`] said a read
    /// would not wait: `false` when bytes wait instead (a pipelined request).
    pub(crate) fn peer_closed(&self) -> bool {
        match self {
            TcpStream::Own(s) => s.at_eof(),
            TcpStream::Mono(s) => own::peek_closed(s.as_raw_fd()),
        }
    }

    /// A second handle that reads what this socket receives (to read an upstream's answer
    /// while a request body is still being written through the first): on Tollgate's own
    /// runtime the same socket, sharing its receive; on monoio a duplicated descriptor.
    pub(crate) fn reader(&self) -> Option<TcpStream> {
        match self {
            TcpStream::Own(s) => Some(TcpStream::Own(s.clone())),
            TcpStream::Mono(s) => {
                use std::os::fd::BorrowedFd;
                // SAFETY: the descriptor belongs to `s`, which outlives this borrow; it is
                // only duplicated (the duplicate is owned, and closed by its own drop).
                let fd = unsafe { BorrowedFd::borrow_raw(s.as_raw_fd()) };
                let owned = fd.try_clone_to_owned().ok()?;
                monoio::net::TcpStream::from_std(std::net::TcpStream::from(owned))
                    .ok()
                    .map(TcpStream::Mono)
            }
        }
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            TcpStream::Mono(s) => s.as_raw_fd(),
            TcpStream::Own(s) => s.as_raw_fd(),
        }
    }
}

/// Copies the next received bytes into `buf` (what does not fit waits for the next read). The
/// socket's receive takes at least `buf`'s room before its reader asks again, more where the
/// reader said it expects more (`rt::net::TcpStream::want`).
async fn own_read<T: IoBufMut>(s: &own::TcpStream, mut buf: T) -> BufResult<usize, T> {
    let room = buf.bytes_total();
    if room == 0 {
        return (Ok(0), buf);
    }
    s.want_at_least(room);
    let mut got = match s.recv().await {
        Ok(Some(b)) => b,
        Ok(None) => return (Ok(0), buf),
        Err(e) => return (Err(e), buf),
    };
    let n = room.min(got.len());
    // SAFETY: `write_ptr` has room for `bytes_total` bytes (n ≤ room); the received buffer
    // is a separate allocation; `set_init` marks only what was written.
    unsafe {
        std::ptr::copy_nonoverlapping(got.as_ptr(), buf.write_ptr(), n);
        buf.set_init(n);
    }
    if n < got.len() {
        got.advance(n);
        s.unrecv(got);
    }
    (Ok(n), buf)
}

/// [`own_read`] over several buffers, filled in order.
async fn own_readv<T: IoVecBufMut>(s: &own::TcpStream, mut buf: T) -> BufResult<usize, T> {
    let iov = (buf.write_iovec_ptr(), buf.write_iovec_len());
    if iov.0.is_null() || iov.1 == 0 {
        return (Ok(0), buf);
    }
    // SAFETY: the IoVecBufMut promise: `len` live iovecs at `ptr`, each naming writable
    // memory, for as long as `buf` lives (it is not touched while this slice is used).
    let iov = unsafe { std::slice::from_raw_parts(iov.0, iov.1) };
    let room: usize = iov.iter().map(|v| v.iov_len).sum();
    if room == 0 {
        return (Ok(0), buf);
    }
    s.want_at_least(room);
    let mut got = match s.recv().await {
        Ok(Some(b)) => b,
        Ok(None) => return (Ok(0), buf),
        Err(e) => return (Err(e), buf),
    };
    let mut n = 0;
    for v in iov {
        let k = v.iov_len.min(got.len() - n);
        // SAFETY: as above; `k` bytes fit in this iovec and come from the received buffer.
        unsafe { std::ptr::copy_nonoverlapping(got.as_ptr().add(n), v.iov_base as *mut u8, k) };
        n += k;
        if n == got.len() {
            break;
        }
    }
    // SAFETY: the first `n` bytes across the iovecs were written above.
    unsafe { buf.set_init(n) };
    if n < got.len() {
        got.advance(n);
        s.unrecv(got);
    }
    (Ok(n), buf)
}

/// A monoio buffer as the runtime's send buffer.
struct Out<T>(T);

impl<T> Out<T> {
    /// Whether `p` points into the value itself (bytes that would move with it).
    fn inside(&self, p: *const u8) -> bool {
        let at = &self.0 as *const T as usize;
        (at..at + std::mem::size_of::<T>()).contains(&(p as usize))
    }
}

impl<T: IoBuf> AsRef<[u8]> for Out<T> {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the IoBuf promise: `bytes_init` bytes at `read_ptr`, live while it lives.
        unsafe { std::slice::from_raw_parts(self.0.read_ptr(), self.0.bytes_init()) }
    }
}

// SAFETY: monoio's own promise is weaker (its runtime pins the buffer in a box), but every
// buffer written through here is one whose bytes are on the heap or static (Vec, Box, Bytes,
// BytesMut, their slices, the crate's own): they stay put when the value moves. A buffer type
// with its bytes inline must not be written on the own runtime; the debug assertion in
// `TcpStream::write` catches one in tests.
unsafe impl<T: IoBuf> own::IoBuf for Out<T> {}

// SAFETY: as above, for the iovec array and the memory it names.
unsafe impl<T: IoVecBuf> own::IoVecs for Out<T> {
    fn iovecs(&self) -> (*const libc::iovec, usize) {
        (self.0.read_iovec_ptr(), self.0.read_iovec_len())
    }
}

impl AsyncReadRent for TcpStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            TcpStream::Mono(s) => s.read(buf).await,
            TcpStream::Own(s) => own_read(s, buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            TcpStream::Mono(s) => s.readv(buf).await,
            TcpStream::Own(s) => own_readv(s, buf).await,
        }
    }
}

impl TcpStream {
    /// Whether anything came that nobody read (bytes, the end, an error): a pooled idle
    /// connection that got any is out of step with its requests or closed.
    pub(crate) fn has_unread(&self) -> bool {
        match self {
            TcpStream::Own(s) => s.has_unread(),
            TcpStream::Mono(s) => own::peek_unread(s.as_raw_fd()),
        }
    }

    /// The socket on Tollgate's own runtime, for what only it does (receiving into and sending
    /// from the ring's buffers); `None` on monoio's drivers.
    pub(crate) fn own(&self) -> Option<&own::TcpStream> {
        match self {
            TcpStream::Own(s) => Some(s),
            TcpStream::Mono(_) => None,
        }
    }
}

impl AsyncWriteRent for TcpStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            TcpStream::Mono(s) => s.write(buf).await,
            TcpStream::Own(s) => {
                let out = Out(buf);
                debug_assert!(
                    !out.inside(out.0.read_ptr()),
                    "a buffer with its bytes inline"
                );
                let (r, b) = s.send(out).await;
                (r, b.0)
            }
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            TcpStream::Mono(s) => s.writev(buf).await,
            TcpStream::Own(s) => {
                let out = Out(buf);
                debug_assert!(
                    !out.inside(out.0.read_iovec_ptr() as *const u8),
                    "iovecs inline"
                );
                let (r, b) = s.send_vectored(out).await;
                (r, b.0)
            }
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            TcpStream::Mono(s) => s.flush().await,
            TcpStream::Own(_) => Ok(()),
        }
    }

    // Not an `async fn`: the write side is shut when this is called, as monoio's own does (a
    // split writer's drop calls it without awaiting).
    #[allow(clippy::manual_async_fn)]
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> {
        let (mono, own) = match self {
            TcpStream::Mono(s) => (Some(s.shutdown()), None),
            TcpStream::Own(s) => (None, Some(s.shutdown(std::net::Shutdown::Write))),
        };
        async move {
            match (mono, own) {
                (Some(f), _) => f.await,
                (_, Some(r)) => r,
                (None, None) => Ok(()),
            }
        }
    }
}

// SAFETY: reads and writes are independent on both: monoio's stream is `Split` itself; on
// Tollgate's own runtime a read touches only the receive's state and a write only the
// descriptor.
unsafe impl Split for TcpStream {}

/// A listening socket.
pub(crate) enum TcpListener {
    Mono {
        l: monoio::net::TcpListener,
        canceller: monoio::io::Canceller,
        stopped: bool,
    },
    Own {
        l: own::TcpListener,
        stopped: bool,
    },
}

impl TcpListener {
    /// Takes a bound, listening, non-blocking std socket.
    pub(crate) fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        if super::own() {
            Ok(TcpListener::Own {
                l: own::TcpListener::from_std(l),
                stopped: false,
            })
        } else {
            Ok(TcpListener::Mono {
                l: monoio::net::TcpListener::from_std(l)?,
                canceller: monoio::io::Canceller::new(),
                stopped: false,
            })
        }
    }

    /// The next connection, until `stop` resolves; then the connections the kernel had
    /// already handed over (served, not dropped: a successor sharing the socket gets the
    /// rest of its queue), then `None`.
    pub(crate) async fn accept_until(
        &mut self,
        stop: impl Future<Output = ()>,
    ) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        match self {
            TcpListener::Mono {
                l,
                canceller,
                stopped,
            } => {
                if *stopped {
                    return None;
                }
                let accept = l.cancelable_accept(canceller.handle());
                let mut accept = std::pin::pin!(accept);
                let r = monoio::select! {
                    r = &mut accept => r,
                    _ = stop => {
                        // On io_uring the kernel may already have taken a connection off
                        // the queue: the cancelled accept is awaited, and that one served.
                        *stopped = true;
                        let c = std::mem::replace(canceller, monoio::io::Canceller::new());
                        drop(c.cancel());
                        match accept.await {
                            Ok(conn) => Ok(conn),
                            Err(_) => return None,
                        }
                    }
                };
                Some(r.map(|(s, peer)| (TcpStream::Mono(s), peer)))
            }
            TcpListener::Own { l, stopped } => {
                let mut stop = std::pin::pin!(stop);
                loop {
                    let r = if *stopped {
                        match l.accept().await {
                            Ok(s) => Ok(s),
                            Err(_) => return None,
                        }
                    } else {
                        let r = monoio::select! {
                            r = l.accept() => Some(r),
                            _ = &mut stop => None,
                        };
                        match r {
                            Some(r) => r,
                            None => {
                                *stopped = true;
                                l.stop();
                                continue;
                            }
                        }
                    };
                    match r {
                        // A client that reset before we looked has no address: skip it.
                        Ok(s) => {
                            if let Ok(peer) = s.peer_addr() {
                                return Some(Ok((TcpStream::Own(s), peer)));
                            }
                        }
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }
}
