//! TCP on the runtime: a listener whose accepts are one multishot operation, and streams whose
//! receives are one multishot operation into the provided-buffer ring.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::{cqueue, opcode, types};

use super::addr::{sockaddr, SockAddr};
use super::bufs::{poll_buffer_freed, RecvBuf};
use super::exec;
use super::multi::Multi;
use super::reactor::{recv_limited, Got, Kind, Op, Pause, BGID, RECV_LIMIT, RECV_MIN};
use super::sendbufs::Offset;
pub use super::sendbufs::{IoBuf, IoVecs, RecvBufs};

/// What a non-blocking peek at a socket finds (nothing is consumed).
#[derive(PartialEq, Eq)]
enum Peeked {
    /// Nothing yet.
    Nothing,
    /// Bytes wait to be read.
    Bytes,
    /// The peer closed its side, or the socket failed (a reset).
    Closed,
}

fn peek(fd: RawFd) -> Peeked {
    let mut b = 0u8;
    // SAFETY: one writable byte; MSG_PEEK leaves it in the socket, MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Peeked::Closed,
        n if n > 0 => Peeked::Bytes,
        _ => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN | libc::EINTR) => Peeked::Nothing,
            _ => Peeked::Closed,
        },
    }
}

/// Whether the socket has bytes to read, has reached its end, or has failed (asked with a
/// non-blocking peek; nothing is consumed).
pub fn peek_unread(fd: RawFd) -> bool {
    peek(fd) != Peeked::Nothing
}

/// Whether the peer has closed its side or reset the connection (asked with a non-blocking
/// peek; nothing is consumed): `false` while bytes wait to be read, or nothing came yet.
pub fn peek_closed(fd: RawFd) -> bool {
    peek(fd) == Peeked::Closed
}

/// A listening socket; [`TcpListener::accept`] is fed by one multishot accept.
pub struct TcpListener {
    fd: Fd,
    accepts: Option<Multi>,
    stopped: bool,
}

impl TcpListener {
    /// Takes a bound, listening socket.
    pub fn from_std(l: std::net::TcpListener) -> TcpListener {
        TcpListener {
            fd: Fd::from(OwnedFd::from(l)),
            accepts: None,
            stopped: false,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sockaddr(self.fd.as_raw_fd(), libc::getsockname)
    }

    /// The next connection. An error (out of descriptors, say) is returned once; the next
    /// call accepts again.
    /// After [`TcpListener::stop`]: the connections the kernel had already taken, then an
    /// error of kind `ConnectionAborted`. Dropping the future loses nothing.
    pub async fn accept(&mut self) -> io::Result<TcpStream> {
        loop {
            if self.stopped && self.accepts.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the listener stopped accepting",
                ));
            }
            let fd = self.fd.as_raw_fd();
            let multi = self.accepts.get_or_insert_with(|| {
                let e = opcode::AcceptMulti::new(types::Fd(fd))
                    .flags(libc::SOCK_CLOEXEC)
                    .build();
                // SAFETY: the accept refers to no memory; the listener's descriptor outlives
                // it (the Multi is dropped, and so cancelled, before the descriptor closes).
                unsafe { Multi::submit(Kind::Accept, Pause::Never, e) }
            });
            match multi.next().await {
                Some(Got { res, flags, .. }) => {
                    if !cqueue::more(flags) {
                        self.accepts = None;
                    }
                    if res == -libc::ECANCELED && self.stopped {
                        continue;
                    }
                    if res < 0 {
                        return Err(io::Error::from_raw_os_error(-res));
                    }
                    // The kernel made this descriptor for us; we own it from here.
                    return Ok(TcpStream::from_owned(Fd(res), true));
                }
                None => self.accepts = None,
            }
        }
    }
}

impl TcpListener {
    /// Stops accepting: the multishot accept is cancelled; connections it already took are
    /// still returned by [`TcpListener::accept`] (a successor sharing the socket gets the
    /// rest of the queue).
    pub fn stop(&mut self) {
        self.stopped = true;
        if let Some(m) = &self.accepts {
            m.cancel();
        }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        // The accept is cancelled before the descriptor closes (field order would do it too).
        self.accepts = None;
    }
}

/// A connected socket. Clones are handles on the same socket (one receive, shared): a
/// reader and a writer may each hold one, and the socket closes with the last.
#[derive(Clone)]
pub struct TcpStream {
    inner: Rc<Inner>,
}

struct Inner {
    // Dropped first: the receive is cancelled before the descriptor closes.
    rx: RefCell<Rx>,
    fd: Fd,
    /// Where the FIN stands ([`TcpStream::fin_after_next_send`]).
    fin: Cell<Fin>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fin {
    /// Sent by [`TcpStream::fin_now`] or with the close (also while a send that takes it
    /// along is in flight).
    AtClose,
    /// With the next one-buffer send, on its last segment.
    Next,
    /// Sent: the write side is shut.
    Sent,
}

#[derive(Default)]
struct Rx {
    recv: Option<Multi>,
    eof: bool,
    /// The ring was empty when the kernel last tried: wait for a buffer, then re-arm.
    starved: bool,
    /// Bytes received and not yet taken (a readiness wait, or what a reader put back).
    held: Option<RecvBuf>,
    /// Receive one buffer per operation, not multishot (see [`TcpStream::set_bounded`]).
    bounded: bool,
    /// The receive armed has a byte limit (see `reactor::RECV_LIMIT`).
    limited: bool,
    /// A client's socket: its multishot receives have a byte limit.
    client: bool,
    /// No result of the receive armed was taken yet.
    fresh: bool,
    /// The room its reader last had (see [`TcpStream::want`]); 0 until it says.
    want: u32,
}

impl Rx {
    /// Arms the receive: one buffer (bounded), or multishot, with a byte limit where the kernel
    /// takes one.
    fn arm(&mut self, fd: RawFd) {
        let bounded = self.bounded;
        let limit = !bounded && self.client && exec::with(|rt| rt.reactor.recv_limit.get());
        self.limited = limit;
        self.fresh = true;
        let pause = match (limit, self.client) {
            (true, _) => Pause::Never,
            (false, true) => Pause::ResultsOrBytes,
            (false, false) => Pause::Results,
        };
        let want = match self.want {
            0 => RECV_LIMIT,
            n => n,
        };
        let e = if bounded {
            // One buffer of the ring (at most what a client's reader has room for), then the
            // operation ends (its completion has no MORE flag; the next receive arms another).
            let size = exec::with(|rt| rt.reactor.bufs.size) as u32;
            let len = if self.client { want.min(size) } else { size };
            opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), len)
                .buf_group(BGID)
                .build()
                .flags(io_uring::squeue::Flags::BUFFER_SELECT)
        } else if limit {
            recv_limited(
                opcode::RecvMulti::new(types::Fd(fd), BGID).build(),
                want,
                want,
            )
        } else {
            opcode::RecvMulti::new(types::Fd(fd), BGID).build()
        };
        // SAFETY: the receive writes only into the ring's buffers, which live as long as the
        // runtime; the descriptor outlives the Multi (dropped first).
        self.recv = Some(unsafe { Multi::submit(Kind::Recv, pause, e) });
    }
}

impl TcpStream {
    /// `client`: a socket accepted from a client, whose multishot receives take a byte limit
    /// (see `reactor::RECV_LIMIT`). A socket the gateway connected (to an upstream) receives
    /// without: its reader bounds it when the answer is big (see [`TcpStream::set_bounded`]).
    fn from_owned(fd: Fd, client: bool) -> TcpStream {
        TcpStream {
            inner: Rc::new(Inner {
                rx: RefCell::new(Rx {
                    client,
                    ..Rx::default()
                }),
                fd,
                fin: Cell::new(Fin::AtClose),
            }),
        }
    }

    /// Takes a connected std socket (accepted from a client).
    pub fn from_std(s: std::net::TcpStream) -> TcpStream {
        TcpStream::from_owned(Fd::from(OwnedFd::from(s)), true)
    }

    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let domain = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        // SAFETY: socket takes no pointers.
        let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // A new descriptor, ours alone (closed through the ring if the connect is dropped).
        let fd = Fd(fd);
        let sa = Box::new(SockAddr::from(addr));
        let e = opcode::Connect::new(types::Fd(fd.as_raw_fd()), sa.ptr(), sa.len).build();
        // SAFETY: the entry points into the boxed address, which the operation keeps.
        let (res, _, _sa) = unsafe { Op::submit(sa, e) }.await;
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        Ok(TcpStream::from_owned(fd, false))
    }

    fn fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        let v: libc::c_int = on.into();
        // SAFETY: passes a live c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                self.fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        sockaddr(self.fd(), libc::getpeername)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        sockaddr(self.fd(), libc::getsockname)
    }

    /// The next bytes the peer sent, in a buffer of the ring; `None` at end of stream. The
    /// multishot receive is armed at the first call and re-armed when the kernel ends it
    /// (no buffer was free: this waits until one is given back).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<RecvBuf>>> {
        let mut rx = self.inner.rx.borrow_mut();
        if let Some(b) = rx.held.take() {
            return Poll::Ready(Ok(Some(b)));
        }
        loop {
            if rx.eof {
                return Poll::Ready(Ok(None));
            }
            if rx.starved {
                let rt = exec::with(|rt| rt.clone());
                if poll_buffer_freed(&rt, cx).is_pending() {
                    return Poll::Pending;
                }
                rx.starved = false;
            }
            if rx.recv.is_none() {
                rx.arm(self.fd());
            }
            let Some(multi) = rx.recv.as_ref() else {
                continue;
            };
            let Some(Got { res, flags, copied }) = std::task::ready!(multi.poll_next(cx)) else {
                rx.recv = None;
                continue;
            };
            let rt = multi.rt().clone();
            let fresh = std::mem::take(&mut rx.fresh);
            if !cqueue::more(flags) {
                rx.recv = None;
            }
            if let Some(v) = copied {
                return Poll::Ready(Ok(Some(RecvBuf::heap(v))));
            }
            if res > 0 {
                let Some(bid) = cqueue::buffer_select(flags) else {
                    return Poll::Ready(Err(io::Error::other(
                        "a receive completed without a buffer",
                    )));
                };
                return Poll::Ready(
                    RecvBuf::ring(rt, bid, res as u32)
                        .map(Some)
                        .ok_or_else(|| io::Error::other("the kernel named a buffer out of range")),
                );
            }
            match -res {
                0 => {
                    rx.eof = true;
                    return Poll::Ready(Ok(None));
                }
                // The ring ran dry. A client's receive without a byte limit (see below) may
                // have drained the socket into the ring meanwhile: one buffer per operation
                // from here on.
                libc::ENOBUFS => {
                    rx.starved = true;
                    rx.bounded |= rx.client && !rx.limited;
                }
                // Paused (its reader fell behind) and now drained, or switched to bounded. A
                // client's (one that sends and does not read) receives one buffer per
                // operation from here on, armed when its reader asks, so that what it does
                // not take waits in the kernel (whose window holds the sender back), not in
                // copies off the ring. An upstream's is armed again as it was.
                libc::ECANCELED => rx.bounded |= rx.client && !rx.limited,
                // A kernel without limits on multishot receives (before 6.17) refuses the
                // first: armed again without, the runtime's other receives too.
                libc::EINVAL if rx.limited && fresh => {
                    rx.limited = false;
                    exec::with(|rt| rt.reactor.recv_limit.set(false));
                }
                e => return Poll::Ready(Err(io::Error::from_raw_os_error(e))),
            }
        }
    }

    /// Bytes already received, without waiting: what was put back, else the next result of
    /// the receive if it is there and holds bytes.
    pub fn try_recv(&self) -> Option<RecvBuf> {
        let mut rx = self.inner.rx.borrow_mut();
        if let Some(b) = rx.held.take() {
            return Some(b);
        }
        let multi = rx.recv.as_ref()?;
        let Got { res, flags, copied } = multi.take_data()?;
        let rt = multi.rt().clone();
        rx.fresh = false;
        if !cqueue::more(flags) {
            rx.recv = None;
        }
        if let Some(v) = copied {
            return Some(RecvBuf::heap(v));
        }
        RecvBuf::ring(rt, cqueue::buffer_select(flags)?, res as u32)
    }

    /// The room the reader has for what it reads next: a client's receives armed from now on
    /// take at most that much (between `RECV_MIN` and `RECV_LIMIT`), per result and in all,
    /// before the reader asks again. A client that sends and does not read then holds about
    /// what its reader has room for, as with a plain `read`, not a ring buffer's worth. (A
    /// receive already armed keeps its limit; an upstream's receives have none.)
    pub fn want(&self, bytes: usize) {
        self.inner.rx.borrow_mut().want = (bytes.min(RECV_LIMIT as usize) as u32).max(RECV_MIN);
    }

    /// [`TcpStream::want`], unless the room said before is more.
    pub fn want_at_least(&self, bytes: usize) {
        let mut rx = self.inner.rx.borrow_mut();
        rx.want = rx
            .want
            .max((bytes.min(RECV_LIMIT as usize) as u32).max(RECV_MIN));
    }

    /// Whether to receive one ring buffer per operation (`true`) instead of a multishot
    /// receive, from the next receive armed on (a multishot receive armed now is ended, its
    /// results still read in order). A multishot receive takes what the socket holds, as fast
    /// as the kernel can, until the ring runs dry — before the reader can say it is behind; on
    /// a socket whose peer may send far more than its reader takes (an upstream's big answer
    /// to a client that reads slowly), a reader that stalls would then hold the ring's worth of
    /// bytes (copied out of it) per stall. Bounded, a stalled reader holds one buffer, and the
    /// rest waits in the kernel, whose window stops the sender. The price is an operation
    /// submitted per receive.
    pub fn set_bounded(&self, on: bool) {
        let mut rx = self.inner.rx.borrow_mut();
        if rx.bounded == on {
            return;
        }
        rx.bounded = on;
        if on {
            if let Some(m) = &rx.recv {
                m.cancel();
            }
        }
    }

    /// Whether a receive is armed that the kernel may still feed.
    #[cfg(test)]
    pub(crate) fn receiving(&self) -> bool {
        self.inner
            .rx
            .borrow()
            .recv
            .as_ref()
            .is_some_and(|m| m.running())
    }

    /// [`TcpStream::poll_recv`] as a future.
    pub async fn recv(&self) -> io::Result<Option<RecvBuf>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Ready once bytes (or the end of the stream) can be received without waiting; the bytes
    /// are held (off the ring) for the next receive.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.inner.rx.borrow().held.is_some() {
            return Poll::Ready(Ok(()));
        }
        match std::task::ready!(self.poll_recv(cx)) {
            Ok(Some(b)) => {
                self.inner.rx.borrow_mut().held = Some(b.into_heap());
                Poll::Ready(Ok(()))
            }
            Ok(None) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Puts bytes back: the next receive returns them first (what a reader took and did not
    /// use). Replaces anything already put back. They wait off the ring: a reader that never
    /// reads again must not keep a ring buffer from the other connections.
    pub fn unrecv(&self, b: RecvBuf) {
        if !b.is_empty() {
            self.inner.rx.borrow_mut().held = Some(b.into_heap());
        }
    }

    /// Bytes put back with [`TcpStream::unrecv_ring`] (or [`TcpStream::unrecv`]), taken
    /// without receiving anything new.
    pub fn take_held(&self) -> Option<RecvBuf> {
        self.inner.rx.borrow_mut().held.take()
    }

    /// Puts bytes back in the ring buffer they arrived in, for a reader that takes them again
    /// at once (the rest of a buffer whose start it used): no copy, but the buffer stays out
    /// of the kernel's hands until then. Replaces anything already put back.
    pub fn unrecv_ring(&self, b: RecvBuf) {
        if !b.is_empty() {
            self.inner.rx.borrow_mut().held = Some(b);
        }
    }

    /// Whether the receive reached the end of the stream with no byte left to read (after a
    /// [`TcpStream::poll_readable`] said a read would not wait).
    pub fn at_eof(&self) -> bool {
        let rx = self.inner.rx.borrow();
        rx.eof && rx.held.is_none()
    }

    /// Whether anything came that nobody read: bytes (put back, held, or received), the end
    /// of the stream, or an error. Without a receive armed on the socket (or one the kernel
    /// ended for want of buffers) the socket itself is asked, without waiting.
    /// A receive ended by a cancellation alone (switched to bounded receives, or paused) is
    /// dropped here, and the socket asked: a pooled connection whose receive was switched
    /// while it read an answer is as good as any.
    pub fn has_unread(&self) -> bool {
        let mut rx = self.inner.rx.borrow_mut();
        if rx.held.is_some() || rx.eof {
            return true;
        }
        if rx.recv.as_ref().is_some_and(|m| m.take_cancelled_end()) {
            rx.recv = None;
        }
        match &rx.recv {
            Some(m) if !rx.starved => m.has_results(),
            _ => peek_unread(self.fd()),
        }
    }

    /// Says that the next send of one buffer is the last thing sent on this socket (the end
    /// of an answer that closes the connection): its last segment leaves with the FIN on it,
    /// as soon as the send completes (see `sent_fin`). A client that asked to close then
    /// sees the end with the last bytes, and this side, which closes first, keeps the
    /// TIME_WAIT (not the client, whose ports a load of new connections would use up). A
    /// vectored send of several buffers clears it (the socket's close sends the FIN later).
    pub fn fin_after_next_send(&self) {
        if self.inner.fin.get() == Fin::AtClose {
            self.inner.fin.set(Fin::Next);
        }
    }

    /// Whether the next one-buffer send takes the FIN along.
    pub fn fin_armed(&self) -> bool {
        self.inner.fin.get() == Fin::Next
    }

    /// Sends the FIN now (shuts the write side) unless a send already took it along.
    pub fn fin_now(&self) {
        if self.inner.fin.replace(Fin::Sent) != Fin::Sent {
            let _ = self.shutdown(std::net::Shutdown::Write);
        }
    }

    /// Whether this send takes the FIN along (one buffer; see [`TcpStream::sent_fin`]). The
    /// FIN is back with the close until the send completes whole: a send dropped part way
    /// (a timeout) leaves it to [`TcpStream::fin_now`].
    fn take_fin(&self, one_buffer: bool) -> bool {
        if self.inner.fin.get() != Fin::Next {
            return false;
        }
        self.inner.fin.set(Fin::AtClose);
        one_buffer
    }

    /// Sends from `buf` (which the operation keeps until the kernel is done with it); returns
    /// how much went out.
    pub async fn send<B: IoBuf>(&self, buf: B) -> (io::Result<usize>, B) {
        let (ptr, len) = {
            let s = buf.as_ref();
            (s.as_ptr(), s.len().min(u32::MAX as usize) as u32)
        };
        let fin = self.take_fin(true);
        // SAFETY: `ptr` points into `buf`'s bytes, which do not move when `buf` moves into the
        // operation (the `IoBuf` promise) and live as long as it keeps `buf`.
        let (res, _, buf) = unsafe { self.submit_send(buf, ptr, len, 0, fin) }.await;
        if fin {
            self.sent_fin(res, len);
        }
        if res < 0 {
            return (Err(io::Error::from_raw_os_error(-res)), buf);
        }
        (Ok(res as usize), buf)
    }

    /// Sends the buffers `iov` describes, in order, in one operation; returns how much went
    /// out.
    pub async fn send_vectored<B: IoVecs>(&self, bufs: B) -> (io::Result<usize>, B) {
        self.send_vectored_as(bufs, false).await
    }

    /// [`TcpStream::send_vectored`] without waiting for room: what the socket takes now (a
    /// `WouldBlock` error when it takes nothing). The kernel does not keep the buffers past
    /// this operation's completion, which comes at once.
    pub async fn send_vectored_now<B: IoVecs>(&self, bufs: B) -> (io::Result<usize>, B) {
        self.send_vectored_as(bufs, true).await
    }

    async fn send_vectored_as<B: IoVecs>(&self, bufs: B, now: bool) -> (io::Result<usize>, B) {
        let (ptr, n) = bufs.iovecs();
        // A FIN goes only on one buffer (see `fin_after_next_send`).
        let fin = self.take_fin(n == 1);
        let e = if n == 1 {
            // One buffer (a relayed answer that arrived in one receive, head and body): a
            // plain send, which skips the read/write layer a `writev` goes through (its
            // iovec import, permission hook and modify notification).
            // SAFETY: `ptr` names one iovec that stays put while `bufs` lives (the `IoVecs`
            // promise); it is only read here.
            let one = unsafe { *ptr };
            let len = one.iov_len.min(u32::MAX as usize) as u32;
            // MSG_DONTWAIT: the kernel completes it with what fits, or EAGAIN (5.x+).
            let wait = if now { libc::MSG_DONTWAIT } else { 0 };
            // SAFETY: as above; the bytes stay put while the operation keeps `bufs`.
            let (res, _, bufs) =
                unsafe { self.submit_send(bufs, one.iov_base as *const u8, len, wait, fin) }.await;
            if fin {
                self.sent_fin(res, len);
            }
            if res < 0 {
                return (Err(io::Error::from_raw_os_error(-res)), bufs);
            }
            return (Ok(res as usize), bufs);
        } else {
            // RWF_NOWAIT: the same for a writev on a socket.
            let wait = if now { libc::RWF_NOWAIT } else { 0 };
            opcode::Writev::new(
                types::Fd(self.fd()),
                ptr,
                n.min(libc::UIO_MAXIOV as usize) as u32,
            )
            .rw_flags(wait)
            .build()
        };
        // SAFETY: the iovecs and the bytes they point to stay put and live while the operation
        // keeps `bufs` (the `IoVecs` promise).
        let (res, _, bufs) = unsafe { Op::submit(bufs, e) }.await;
        if res < 0 {
            return (Err(io::Error::from_raw_os_error(-res)), bufs);
        }
        (Ok(res as usize), bufs)
    }

    /// Sends all of `buf`.
    pub async fn send_all<B: IoBuf>(&self, buf: B) -> (io::Result<()>, B) {
        let mut off = 0;
        let mut buf = Offset(buf, 0);
        loop {
            if off >= buf.0.as_ref().len() {
                return (Ok(()), buf.0);
            }
            buf.1 = off;
            let (res, b) = self.send(buf).await;
            buf = b;
            match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf.0),
                Ok(n) => off += n,
                Err(e) => return (Err(e), buf.0),
            }
        }
    }

    /// Submits a send of `len` bytes at `ptr`; with `fin`, its last segment held back
    /// (MSG_MORE) for the FIN that [`TcpStream::sent_fin`] puts on it.
    ///
    /// # Safety
    /// `ptr..ptr + len` must stay readable, at the same address, while the operation keeps
    /// `data`.
    unsafe fn submit_send<T: 'static>(
        &self,
        data: T,
        ptr: *const u8,
        len: u32,
        flags: i32,
        fin: bool,
    ) -> Op<T> {
        let more = if fin { libc::MSG_MORE } else { 0 };
        let e = opcode::Send::new(types::Fd(self.fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL | flags | more)
            .build();
        // SAFETY: the caller's promise.
        unsafe { Op::submit(data, e) }
    }

    /// After a send that took the FIN along: `res` is its result, `len` what it was given.
    /// All sent: the write side is shut now, which puts the FIN on the segment the send held
    /// back, so the client gets the last bytes and the end together and cannot close before
    /// the end reached it. (A shutdown through the ring would run on a worker thread, later,
    /// and could meet the descriptor's number reused.) Part sent: the next send pushes what
    /// was held, and the FIN waits for [`TcpStream::fin_now`] or the close.
    fn sent_fin(&self, res: i32, len: u32) {
        if res >= 0 && res as u32 == len {
            self.inner.fin.set(Fin::Sent);
            let _ = self.shutdown(std::net::Shutdown::Write);
        }
    }

    /// Shuts down one direction or both (a shut-down read side ends pending receives).
    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        let how = match how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown takes no pointers.
        if unsafe { libc::shutdown(self.fd(), how) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

/// An owned descriptor. Operations name it by number and the kernel looks the number up only
/// when it takes them from the queue: it is closed through the ring, after every entry queued
/// before (closed at once, were it reused by then, an entry could reach another socket).
struct Fd(RawFd);

impl From<OwnedFd> for Fd {
    fn from(fd: OwnedFd) -> Fd {
        Fd(fd.into_raw_fd())
    }
}

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let fd = self.0;
        if exec::try_with(|rt| rt.reactor.close(fd)).is_none() {
            // SAFETY: ours, closed once; outside a runtime nothing is queued for it.
            unsafe { libc::close(fd) };
        }
    }
}
