//! The provided-buffer ring and the buffers a receive hands out.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::task::Poll;

use io_uring::types;

use super::exec::Runtime;

/// The provided-buffer ring: `count` buffers of `size` bytes and the ring of entries that
/// offers them to the kernel.
pub(crate) struct BufRing {
    pub(crate) entries: *mut types::BufRingEntry,
    pub(crate) layout: std::alloc::Layout,
    /// The buffers' memory, an anonymous mapping of `size * count` bytes: only ever seen
    /// through one buffer's slice at a time (the kernel writes the others meanwhile). Its
    /// pages become resident as receives first write them, not when the ring is made (a
    /// zeroed allocation may be written through at once).
    pub(crate) mem: *mut u8,
    pub(crate) mem_len: usize,
    pub(crate) size: usize,
    pub(crate) count: u16,
    pub(crate) tail: Cell<u16>,
    pub(crate) leak: bool,
}

impl BufRing {
    pub(crate) fn new(size: usize, count: u16) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "provided buffers: a power of two up to 32768, of at least one byte",
            ));
        }
        let layout = std::alloc::Layout::from_size_align(count as usize * 16, 4096)
            .map_err(io::Error::other)?;
        // SAFETY: a non-zero-sized layout.
        let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mem_len = size
            .checked_mul(count as usize)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: a new anonymous private mapping (no address hint, no file) of a non-zero
        // length; the result is checked for MAP_FAILED before use.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: allocated just above with this layout.
            unsafe { std::alloc::dealloc(entries as *mut u8, layout) };
            return Err(e);
        }
        let mem = mem as *mut u8;
        Ok(BufRing {
            entries,
            layout,
            mem,
            mem_len,
            size,
            count,
            tail: Cell::new(0),
            leak: false,
        })
    }

    pub(crate) fn ptr(&self, bid: u16) -> *const u8 {
        assert!(bid < self.count, "buffer id out of range");
        // SAFETY: in bounds of the allocation (bid < count).
        unsafe { self.mem.add(bid as usize * self.size) }
    }

    /// The first `len` bytes of buffer `bid`, which must be out of the kernel's hands (a
    /// completion named it and it was not given back yet).
    pub(crate) fn slice(&self, bid: u16, len: usize) -> &[u8] {
        // SAFETY: `ptr` checks the id; `len` is clamped to the buffer's size; the kernel does
        // not write to a buffer it handed over until it is offered again.
        unsafe { std::slice::from_raw_parts(self.ptr(bid), len.min(self.size)) }
    }

    /// Offers buffer `bid` to the kernel again.
    pub(crate) fn recycle(&self, bid: u16) {
        let tail = self.tail.get();
        // SAFETY: the entry index is masked into the ring's `count` entries; the tail store is
        // a release so the kernel sees the entry's fields before the new tail.
        unsafe {
            let e = &mut *self.entries.add((tail & (self.count - 1)) as usize);
            e.set_addr(self.ptr(bid) as u64);
            e.set_len(self.size as u32);
            e.set_bid(bid);
            let t = types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*t).store(tail.wrapping_add(1), std::sync::atomic::Ordering::Release);
        }
        self.tail.set(tail.wrapping_add(1));
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            return;
        }
        // SAFETY: allocated and mapped in `new` with this layout and length; the ring that used
        // them is gone (the reactor drops its ring first).
        unsafe {
            std::alloc::dealloc(self.entries as *mut u8, self.layout);
            libc::munmap(self.mem.cast(), self.mem_len);
        }
    }
}

/// Bytes the kernel received into a provided buffer (given back to the ring when this is
/// dropped), or copied out of one when its reader was behind.
pub struct RecvBuf {
    from: From,
    start: u32,
    len: u32,
}

enum From {
    Ring(Rc<Runtime>, u16),
    Heap(Vec<u8>),
}

impl RecvBuf {
    pub(crate) fn ring(rt: Rc<Runtime>, bid: u16, len: u32) -> Option<RecvBuf> {
        let b = &rt.reactor.bufs;
        if bid >= b.count {
            return None;
        }
        let len = len.min(b.size as u32);
        Some(RecvBuf {
            from: From::Ring(rt, bid),
            start: 0,
            len,
        })
    }

    /// Bytes made here, to be sent beside received ones.
    pub fn heap(v: Vec<u8>) -> RecvBuf {
        RecvBuf {
            len: v.len() as u32,
            from: From::Heap(v),
            start: 0,
        }
    }

    /// The same bytes off the ring (copied to the heap when they are in a ring buffer), for
    /// bytes kept a while: a ring buffer held is one the kernel cannot fill.
    pub fn into_heap(self) -> RecvBuf {
        match self.from {
            From::Heap(_) => self,
            From::Ring(..) => RecvBuf::heap(self.to_vec()),
        }
    }

    /// Whether the bytes are in a buffer of the ring (not copied to the heap).
    pub fn in_ring(&self) -> bool {
        matches!(self.from, From::Ring(..))
    }

    /// Keeps only the first `n` bytes.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n.min(u32::MAX as usize) as u32);
    }

    /// Drops the first `n` bytes (they were used).
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.len as usize) as u32;
        self.start += n;
        self.len -= n;
    }
}

impl std::ops::Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all = match &self.from {
            From::Ring(rt, bid) => rt
                .reactor
                .bufs
                .slice(*bid, (self.start + self.len) as usize),
            From::Heap(v) => v,
        };
        &all[self.start as usize..(self.start + self.len) as usize]
    }
}

impl RecvBuf {
    /// The bytes, writable (to decrypt them where they are): a ring buffer is this value's
    /// alone until it is dropped.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.start as usize, (self.start + self.len) as usize);
        match &mut self.from {
            From::Ring(rt, bid) => {
                let b = &rt.reactor.bufs;
                let end = end.min(b.size);
                // SAFETY: the kernel handed buffer `bid` over and writes to it only once it
                // is offered again, at this value's drop; one `RecvBuf` is made per buffer
                // handed over (never cloned), and `&mut self` keeps this borrow the only one.
                // `ptr` checks the id; `end` is clamped to the buffer's size.
                unsafe {
                    let p = b.ptr(*bid) as *mut u8;
                    &mut std::slice::from_raw_parts_mut(p, end)[start.min(end)..]
                }
            }
            From::Heap(v) => &mut v[start..end],
        }
    }
}

impl AsRef<[u8]> for RecvBuf {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        if let From::Ring(rt, bid) = &self.from {
            rt.reactor.give_back(*bid);
        }
    }
}

/// Ready once the ring has a buffer to offer (a receive found it empty).
pub(crate) fn poll_buffer_freed(rt: &Rc<Runtime>, cx: &mut std::task::Context<'_>) -> Poll<()> {
    let r = &rt.reactor;
    if r.bufs_out.get() < r.bufs.count as u32 {
        return Poll::Ready(());
    }
    let mut waiters = r.buf_waiters.borrow_mut();
    if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
        waiters.push(cx.waker().clone());
    }
    Poll::Pending
}
