//! What sends take: buffers that stay put while the kernel reads them ([`IoBuf`],
//! [`IoVecs`]), and received buffers sent on in order ([`RecvBufs`]).

use super::bufs::RecvBuf;

/// Buffers for a vectored send, as the kernel reads them.
///
/// # Safety
/// `iovecs()` must describe memory (the iovec array and every range it names) that stays at
/// the same address, readable, for as long as the value lives, however it moves.
pub unsafe trait IoVecs: 'static {
    fn iovecs(&self) -> (*const libc::iovec, usize);
}

/// Bytes a send may point the kernel at while the value moves: heap-backed or static.
///
/// # Safety
/// `as_ref()` must return the same bytes, at the same address, before and after the value is
/// moved, for as long as it lives (an array held inline does not qualify).
pub unsafe trait IoBuf: AsRef<[u8]> + 'static {}

// SAFETY: the bytes are on the heap (or static) and do not move with the handle.
unsafe impl IoBuf for Vec<u8> {}
// SAFETY: as above.
unsafe impl IoBuf for Box<[u8]> {}
// SAFETY: as above.
unsafe impl IoBuf for &'static [u8] {}
// SAFETY: a ring buffer or a heap copy; neither moves with the handle.
unsafe impl IoBuf for RecvBuf {}

/// Received buffers (and bytes made here, as heap [`RecvBuf`]s) sent in order with one
/// vectored send ([`super::net::TcpStream::send_vectored`]; [`RecvBufs::advance`] past what a partial
/// send took).
pub struct RecvBufs {
    bufs: Vec<RecvBuf>,
    iov: Vec<libc::iovec>,
}

impl RecvBufs {
    pub fn new(bufs: Vec<RecvBuf>) -> RecvBufs {
        let mut r = RecvBufs {
            bufs,
            iov: Vec::new(),
        };
        r.describe();
        r
    }

    /// Adds a buffer behind the others (not while a send holds the value: it owns it then).
    pub fn push(&mut self, b: RecvBuf) {
        self.iov.push(libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        });
        self.bufs.push(b);
    }

    /// Drops every buffer (the capacity stays).
    pub fn clear(&mut self) {
        self.bufs.clear();
        self.iov.clear();
    }

    /// How many buffers are held.
    pub fn count(&self) -> usize {
        self.bufs.len()
    }

    fn describe(&mut self) {
        self.iov.clear();
        self.iov.extend(self.bufs.iter().map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
    }

    /// Drops the first `n` bytes (sent).
    pub fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        for b in &mut self.bufs {
            if n < b.len() {
                b.advance(n);
                break;
            }
            n -= b.len();
            done += 1;
        }
        self.bufs.drain(..done);
        self.describe();
    }

    pub fn is_empty(&self) -> bool {
        self.bufs.iter().all(|b| b.is_empty())
    }

    /// Copies the bytes still in ring buffers to the heap and gives those buffers back (not
    /// while a send holds the value): for bytes about to wait on a slow peer, so that the
    /// buffers every receive of the shard needs are not held meanwhile.
    pub fn off_ring(&mut self) {
        for b in &mut self.bufs {
            if b.in_ring() {
                *b = std::mem::replace(b, RecvBuf::heap(Vec::new())).into_heap();
            }
        }
        self.describe();
    }

    /// Bytes left to send.
    pub fn len(&self) -> usize {
        self.bufs.iter().map(|b| b.len()).sum()
    }
}

// SAFETY: the iovec array is a Vec's heap memory and each range is a RecvBuf's bytes (a ring
// buffer or a heap Vec): neither moves when the value does, and `describe` is only called
// while no operation holds the value.
unsafe impl IoVecs for RecvBufs {
    fn iovecs(&self) -> (*const libc::iovec, usize) {
        (self.iov.as_ptr(), self.iov.len())
    }
}

/// An owned buffer seen from an offset (for the rest of a partial send).
pub(super) struct Offset<B>(pub(super) B, pub(super) usize);

impl<B: AsRef<[u8]>> AsRef<[u8]> for Offset<B> {
    fn as_ref(&self) -> &[u8] {
        &self.0.as_ref()[self.1..]
    }
}

// SAFETY: a view into `B`'s bytes, which do not move (B: IoBuf).
unsafe impl<B: IoBuf> IoBuf for Offset<B> {}
