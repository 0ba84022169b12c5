//! The ring: submissions, completions routed to operation slots, the provided-buffer ring,
//! and the timers.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::wheel::Wheel;

use super::bufs::BufRing;
use super::exec::{self, Runtime, Waiter};

/// The runtime's settings.
#[derive(Debug, Clone)]
pub struct Builder {
    /// Submission queue entries (the completion queue has twice as many).
    pub entries: u32,
    /// Bytes per provided buffer.
    pub buf_size: u32,
    /// Provided buffers per thread (a power of two, at most 32,768).
    pub bufs: u16,
    pub coop_taskrun: bool,
    pub single_issuer: bool,
    pub defer_taskrun: bool,
}

impl Default for Builder {
    fn default() -> Builder {
        Builder {
            entries: 4096,
            buf_size: 4096,
            bufs: 1024,
            coop_taskrun: true,
            single_issuer: true,
            defer_taskrun: false,
        }
    }
}

/// The buffer group of the provided-buffer ring.
pub(crate) const BGID: u16 = 0;
/// user_data of the eventfd's poll (wakes from other threads) and of cancellations.
const EVENTFD_UD: u64 = u64::MAX;
const CANCEL_UD: u64 = u64::MAX - 1;
/// user_data of descriptors closed through the ring (their completions are not awaited).
const CLOSE_UD: u64 = u64::MAX - 2;
/// Results a connection's receive may hold before it is paused: one fast sender cannot take
/// the whole ring. (Its reader then receives one buffer per operation, see
/// [`super::net::TcpStream::poll_recv`].)
const RECV_QUEUE_CAP: usize = 8;
/// Bytes a connection's receive may hold unread before it is paused, whatever their count:
/// with 64 KiB buffers, eight results held 512 KiB (and, copied off the ring, as much heap)
/// for each client that sends and does not read its answers.
const RECV_QUEUE_BYTES: usize = 64 << 10;
/// Bytes a client's multishot receive takes before it ends (Linux 6.17+,
/// `IORING_RECV_MSHOT_LIM`; its reader arms the next when it asks): a pause comes late, as the
/// kernel drains a socket's backlog (32 buffers a wake-up) before the runtime sees any of it.
/// A receive runs at most this far, and a result, ahead of its reader (a submission per 64 KiB).
/// A reader that says how much room it has ([`super::net::TcpStream::want`]) gets receives of
/// that size instead, down to [`RECV_MIN`].
pub(crate) const RECV_LIMIT: u32 = RECV_QUEUE_BYTES as u32;
/// The least a client's receive is limited to, per result and in all.
pub(crate) const RECV_MIN: u32 = 4 << 10;

/// A multishot receive's entry with a byte limit on each result (`len`; without it a result
/// may fill a whole ring buffer, past the limit) and in all (`optlen`). Set together: a kernel
/// before 6.17 refuses the entry (EINVAL), and the runtime arms without either.
pub(crate) fn recv_limited(e: squeue::Entry, each: u32, all: u32) -> squeue::Entry {
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    // SAFETY: `Entry` is `repr(C)` over the kernel's 64-byte `io_uring_sqe` (asserted above),
    // with no drop glue; bytes 24..28 are its `len` and bytes 44..48 its `optlen` (a union
    // with `file_index`), plain u32s that a multishot receive reads as its limits. Any bit
    // pattern is a valid entry.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(e) };
    raw[24..28].copy_from_slice(&each.to_ne_bytes());
    raw[44..48].copy_from_slice(&all.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}
/// Unread results a receive may keep in ring buffers; later ones are copied out.
pub(crate) const RING_HOLD: usize = 4;
/// `IORING_ENTER_GETEVENTS` and `IORING_CQE_F_BUFFER` (the io-uring crate keeps its constants
/// private).
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_CQE_F_BUFFER: u32 = 1;

/// What an operation slot holds.
pub(super) enum Slot {
    Free,
    /// A one-shot operation in flight, and whom it wakes.
    Waiting(Waiter),
    Done(i32, u32),
    /// A multishot operation: results not yet taken; `ended` once a completion without the
    /// MORE flag came.
    Multi {
        kind: Kind,
        queue: VecDeque<Got>,
        waker: Waiter,
        ended: bool,
        cancelling: bool,
        pause: Pause,
    },
    /// The future was dropped first: what the kernel may still use is kept until the last
    /// completion.
    Orphan(Kind, #[allow(dead_code)] Option<Box<dyn Any>>),
}

impl Slot {
    /// Whether the kernel may still use the operation's memory (its last completion has not
    /// come).
    fn in_kernel(&self) -> bool {
        match self {
            Slot::Free | Slot::Done(..) => false,
            Slot::Multi { ended, .. } => !ended,
            Slot::Waiting(_) | Slot::Orphan(..) => true,
        }
    }
}

/// A multishot operation's result: the completion's result and flags, and for a receive whose
/// reader was behind, the bytes copied out of the ring (its buffer already given back).
pub(crate) struct Got {
    pub(crate) res: i32,
    pub(crate) flags: u32,
    pub(crate) copied: Option<Vec<u8>>,
}

/// What a completion's result is, so an orphaned one can be cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    OneShot,
    /// The result is a new socket: closed if nobody takes it.
    Accept,
    /// The result names a provided buffer: given back if nobody takes it.
    Recv,
}

/// When a multishot operation whose reader is behind is paused (cancelled; the reader arms it
/// again once it has taken what came).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Never: an accept, or a receive the kernel ends at its byte limit ([`RECV_LIMIT`]).
    Never,
    /// At RECV_QUEUE_CAP results not taken (an upstream's receive).
    Results,
    /// Also once RECV_QUEUE_BYTES bytes were waiting when more came (a client's receive on a
    /// kernel without byte limits).
    ResultsOrBytes,
}

impl Pause {
    fn due(self, queue: &VecDeque<Got>) -> bool {
        match self {
            Pause::Never => false,
            Pause::Results => queue.len() >= RECV_QUEUE_CAP,
            Pause::ResultsOrBytes => {
                let waiting = queue.iter().rev().skip(1).map(|g| g.res.max(0) as usize);
                queue.len() >= RECV_QUEUE_CAP || waiting.sum::<usize>() >= RECV_QUEUE_BYTES
            }
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // An operation still in flight (its owner outlived the runtime's shutdown, or none
        // ran) may still be written by the kernel while the ring is torn down.
        if self.leak.get() || self.slots.borrow().iter().any(Slot::in_kernel) {
            // Operations the kernel did not finish keep their memory, and so do the buffers.
            std::mem::forget(std::mem::take(&mut *self.slots.borrow_mut()));
            self.bufs.leak = true;
        }
    }
}

pub(crate) struct Reactor {
    // Dropped before `bufs`: the kernel lets go of the buffers with the ring.
    pub(crate) ring: RefCell<IoUring>,
    pub(super) slots: RefCell<Vec<Slot>>,
    pub(crate) free: RefCell<Vec<u32>>,
    /// Completions reaped while making room in a full queue, dispatched at the next turn.
    pub(crate) backlog: RefCell<Vec<cqueue::Entry>>,
    /// The completions of a turn, reaped then dispatched (kept for its capacity).
    reaped: RefCell<Vec<cqueue::Entry>>,
    pub(crate) bufs: BufRing,
    /// Receives that found no buffer, woken when one is given back.
    pub(crate) buf_waiters: RefCell<Vec<Waker>>,
    /// Buffers the kernel handed over and that were not given back yet.
    pub(crate) bufs_out: Cell<u32>,
    pub(crate) timers: RefCell<Wheel>,
    /// The clock as read once per turn, when its completions were reaped: what timers are
    /// armed from ([`super::time::now`]).
    pub(crate) now: Cell<Instant>,
    /// Wakers of timers due, gathered each turn (kept for its capacity).
    timer_wake: RefCell<Vec<Waiter>>,
    pub(crate) eventfd: i32,
    /// DEFER_TASKRUN is on: completions are posted only by an enter that asks for events.
    pub(crate) defer: bool,
    /// The kernel may still use memory of operations that did not end in time at shutdown:
    /// it is leaked rather than freed.
    pub(crate) leak: Cell<bool>,
    /// Whether multishot receives are armed with a byte limit ([`RECV_LIMIT`]): until the
    /// kernel refuses one (EINVAL, before 6.17).
    pub(crate) recv_limit: Cell<bool>,
}

impl Reactor {
    pub(crate) fn new(b: &Builder, eventfd: i32) -> io::Result<Reactor> {
        // (coop_taskrun, single_issuer, defer_taskrun)
        let build = |(coop, single, defer): (bool, bool, bool)| {
            let mut urb = IoUring::builder();
            if coop {
                urb.setup_coop_taskrun();
                urb.setup_taskrun_flag();
            }
            if single {
                urb.setup_single_issuer();
            }
            if defer {
                urb.setup_defer_taskrun();
            }
            urb.build(b.entries).map(|r| (r, defer))
        };
        // Older kernels refuse newer setup flags with EINVAL: without DEFER_TASKRUN (6.1),
        // then without any.
        let asked = (b.coop_taskrun, b.single_issuer, b.defer_taskrun);
        let (ring, defer) = build(asked)
            .or_else(|_| build((b.coop_taskrun, b.single_issuer, false)))
            .or_else(|_| build((false, false, false)))?;
        let bufs = BufRing::new(b.buf_size as usize, b.bufs)?;
        // SAFETY: the entries stay allocated until the ring is dropped (field order).
        unsafe {
            ring.submitter()
                .register_buf_ring(bufs.entries as u64, bufs.count, BGID)?
        };
        for bid in 0..bufs.count {
            bufs.recycle(bid);
        }
        let r = Reactor {
            ring: RefCell::new(ring),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            backlog: RefCell::new(Vec::new()),
            reaped: RefCell::new(Vec::new()),
            bufs,
            buf_waiters: RefCell::new(Vec::new()),
            bufs_out: Cell::new(0),
            timers: RefCell::new(Wheel::new()),
            now: Cell::new(Instant::now()),
            timer_wake: RefCell::new(Vec::new()),
            eventfd,
            defer,
            leak: Cell::new(false),
            recv_limit: Cell::new(true),
        };
        r.arm_eventfd();
        Ok(r)
    }

    fn arm_eventfd(&self) {
        let e = opcode::PollAdd::new(types::Fd(self.eventfd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(EVENTFD_UD);
        // SAFETY: the poll refers to no memory; the eventfd outlives the ring.
        unsafe { self.push(e) };
    }

    /// Queues a submission; a full queue is flushed to the kernel first.
    ///
    /// # Safety
    /// Whatever memory the entry points to must stay valid until its last completion.
    pub(crate) unsafe fn push(&self, e: squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: the caller's promise.
            if unsafe { ring.submission().push(&e) }.is_ok() {
                return;
            }
            if ring.submit().is_err() {
                // The completion queue is full (EBUSY): reap it for the next turn.
                let mut backlog = self.backlog.borrow_mut();
                backlog.extend(ring.completion());
            }
        }
    }

    pub(super) fn slot(&self, s: Slot) -> u32 {
        let mut slots = self.slots.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i as usize] = s;
                i
            }
            None => {
                slots.push(s);
                (slots.len() - 1) as u32
            }
        }
    }

    pub(super) fn release(&self, idx: u32) {
        // What the slot held is dropped after the borrow ends (an orphan's buffers may give
        // a ring buffer back and wake its waiters).
        let old = std::mem::replace(&mut self.slots.borrow_mut()[idx as usize], Slot::Free);
        self.free.borrow_mut().push(idx);
        drop(old);
    }

    /// Cancels the operation in slot `idx`. Its own completion comes as ever; the
    /// cancellation's comes only when it failed (the operation had ended): one completion
    /// fewer to post and reap for each closed connection (Linux 5.17's CQE_SKIP_SUCCESS).
    pub(super) fn cancel(&self, idx: u32) {
        let e = opcode::AsyncCancel::new(idx as u64)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(CANCEL_UD);
        // SAFETY: a cancellation refers to no memory.
        unsafe { self.push(e) };
    }

    /// Closes `fd` after every entry already queued: those name it by number, and the kernel
    /// looks the number up only when it takes them, so it must not be reused before. No
    /// completion unless it failed (nothing waits for it).
    pub(crate) fn close(&self, fd: std::os::fd::RawFd) {
        let e = opcode::Close::new(types::Fd(fd))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(CLOSE_UD);
        // SAFETY: a close refers to no memory.
        unsafe { self.push(e) };
    }

    /// Submits what is queued and dispatches completions; when `idle` (nothing runnable),
    /// waits for one, or for the next timer.
    pub(crate) fn turn(&self, idle: bool) -> io::Result<()> {
        self.turn_with(idle, None)
    }

    /// [`Reactor::turn`]; `cap` bounds an idle wait.
    fn turn_with(&self, idle: bool, cap: Option<Duration>) -> io::Result<()> {
        let mut cqes = std::mem::take(&mut *self.reaped.borrow_mut());
        cqes.append(&mut self.backlog.borrow_mut());
        let idle = idle && cqes.is_empty();
        {
            let mut ring = self.ring.borrow_mut();
            let mut next = self.timers.borrow().next_deadline();
            if let Some(cap) = cap {
                let until = Instant::now() + cap;
                next = Some(next.map_or(until, |t| t.min(until)));
            }
            let res = match (idle, next) {
                // Under DEFER_TASKRUN completions wait for an enter that asks for events.
                (false, _) if self.defer => {
                    let pending = ring.submission().len() as u32;
                    // SAFETY: no argument pointer is passed.
                    unsafe {
                        ring.submitter().enter::<libc::sigset_t>(
                            pending,
                            0,
                            IORING_ENTER_GETEVENTS,
                            None,
                        )
                    }
                }
                // Nothing to submit and no completion work waiting in the kernel (the
                // TASKRUN flag, with COOP_TASKRUN): no system call, the queue is reaped as is.
                (false, _) => {
                    let sq = ring.submission();
                    let quiet = sq.is_empty() && !sq.taskrun() && !sq.cq_overflow();
                    drop(sq);
                    if quiet {
                        Ok(0)
                    } else {
                        ring.submit()
                    }
                }
                (true, None) => ring.submit_and_wait(1),
                (true, Some(t)) => {
                    let d = t.saturating_duration_since(Instant::now());
                    if d.is_zero() {
                        ring.submit()
                    } else {
                        let ts = types::Timespec::new()
                            .sec(d.as_secs())
                            .nsec(d.subsec_nanos());
                        let args = types::SubmitArgs::new().timespec(&ts);
                        ring.submitter().submit_with_args(1, &args)
                    }
                }
            };
            match res {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                    ) => {}
                Err(e) => return Err(e),
            }
            cqes.extend(ring.completion());
        }
        self.now.set(Instant::now());
        for cqe in cqes.drain(..) {
            self.dispatch(cqe.user_data(), cqe.result(), cqe.flags());
        }
        *self.reaped.borrow_mut() = cqes;
        self.fire_timers();
        Ok(())
    }

    fn dispatch(&self, ud: u64, res: i32, flags: u32) {
        match ud {
            EVENTFD_UD => {
                let mut v: u64 = 0;
                // SAFETY: reads 8 bytes into a live u64 from the nonblocking eventfd.
                unsafe { libc::read(self.eventfd, &mut v as *mut u64 as *mut libc::c_void, 8) };
                if !cqueue::more(flags) {
                    self.arm_eventfd();
                }
                return;
            }
            CANCEL_UD | CLOSE_UD => return,
            _ => {}
        }
        let mut flags = flags;
        if let Some(bid) = cqueue::buffer_select(flags) {
            self.bufs_out.set(self.bufs_out.get() + 1);
            // A buffer named with no bytes in it (end of stream, an error) goes straight back.
            if res <= 0 {
                self.give_back(bid);
                flags &= !IORING_CQE_F_BUFFER;
            }
        }
        let idx = ud as u32;
        let more = cqueue::more(flags);
        let mut slots = self.slots.borrow_mut();
        let Some(slot) = slots.get_mut(idx as usize) else {
            return;
        };
        match slot {
            Slot::Waiting(w) => {
                let w = w.take();
                *slot = Slot::Done(res, flags);
                drop(slots);
                w.wake();
            }
            Slot::Multi {
                kind,
                queue,
                waker,
                ended,
                cancelling,
                pause,
            } => {
                // A reader that is behind (RING_HOLD results already wait) does not hold more
                // ring buffers: the bytes are copied out and the buffer given back, so
                // connections that do not read cannot take the ring from those that do. (A
                // burst, a 64 KiB body, stays in the ring: its reader takes it all at once.)
                let copied = match cqueue::buffer_select(flags) {
                    Some(bid) if *kind == Kind::Recv && queue.len() >= RING_HOLD && res > 0 => {
                        Some(self.copy_out(bid, res as usize))
                    }
                    _ => None,
                };
                // A receive the kernel ends at its byte limit adds what it copies out to the
                // result before, when that was copied out too: a client that trickles bytes,
                // one per segment, makes one heap buffer, not a result and an allocation per
                // byte. (Other receives pause at a count of results, so theirs stay apart.)
                let merged = match (copied, queue.back_mut()) {
                    (Some(v), Some(prev)) if *pause == Pause::Never && prev.res > 0 => {
                        match (prev.copied.as_mut(), prev.res.checked_add(res)) {
                            (Some(held), Some(sum)) => {
                                held.extend_from_slice(&v);
                                prev.res = sum;
                                prev.flags = flags;
                                None
                            }
                            _ => Some(Some(v)),
                        }
                    }
                    (copied, _) => Some(copied),
                };
                if let Some(copied) = merged {
                    queue.push_back(Got { res, flags, copied });
                }
                let starved = *kind == Kind::Recv && res == -libc::ENOBUFS;
                // A receive holding RECV_QUEUE_CAP results or RECV_QUEUE_BYTES bytes its
                // reader has not taken is paused (cancelled); its reader re-arms it once it
                // has taken them.
                let pause = if !more {
                    *ended = true;
                    false
                } else if !*cancelling && pause.due(queue) {
                    *cancelling = true;
                    true
                } else {
                    false
                };
                let w = waker.take();
                drop(slots);
                if pause {
                    self.cancel(idx);
                }
                if starved {
                    self.copy_out_all();
                }
                w.wake();
            }
            Slot::Orphan(kind, _) => {
                let kind = *kind;
                drop(slots);
                self.discard(kind, res, flags);
                if kind == Kind::OneShot || !more {
                    self.release(idx);
                }
            }
            // Not expected (a slot ends only at its last completion); a buffer is not lost.
            Slot::Free | Slot::Done(..) => {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    drop(slots);
                    self.give_back(bid);
                }
            }
        }
    }

    /// A result nobody will take: a socket is closed, a buffer given back.
    pub(super) fn discard(&self, kind: Kind, res: i32, flags: u32) {
        match kind {
            Kind::Accept if res >= 0 => {
                // SAFETY: the kernel just made this descriptor for us; nothing else has it.
                unsafe { libc::close(res) };
            }
            Kind::Recv => {
                if let Some(bid) = cqueue::buffer_select(flags) {
                    self.give_back(bid);
                }
            }
            _ => {}
        }
    }

    /// Copies a received buffer's bytes to the heap and gives the buffer back.
    fn copy_out(&self, bid: u16, len: usize) -> Vec<u8> {
        // The kernel filled `len` bytes of it and gets it back only below.
        let v = self.bufs.slice(bid, len).to_vec();
        self.give_back(bid);
        v
    }

    /// The ring ran dry: every result waiting in a queue gives its buffer back (its bytes
    /// copied out), so that only buffers a reader holds right now stay out.
    fn copy_out_all(&self) {
        let mut slots = self.slots.borrow_mut();
        for slot in slots.iter_mut() {
            let Slot::Multi {
                kind: Kind::Recv,
                queue,
                ..
            } = slot
            else {
                continue;
            };
            for g in queue.iter_mut() {
                if g.copied.is_some() || g.res <= 0 {
                    continue;
                }
                if let Some(bid) = cqueue::buffer_select(g.flags) {
                    g.copied = Some(self.copy_out(bid, g.res as usize));
                }
            }
        }
    }

    pub(crate) fn give_back(&self, bid: u16) {
        self.bufs.recycle(bid);
        debug_assert!(self.bufs_out.get() > 0, "a buffer given back twice");
        self.bufs_out.set(self.bufs_out.get().saturating_sub(1));
        // Every starved receive is woken (a waiter may be gone: its task ended, or stopped
        // reading): those that find the ring empty again wait again.
        if self.buf_waiters.borrow().is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut *self.buf_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    pub(crate) fn shutdown(&self) {
        // Cancel what is in flight and wait (bounded) for the kernel to finish with it, so
        // that no buffer it may still write to is freed under it.
        let pending: Vec<u32> = self
            .slots
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s, Slot::Free | Slot::Done(..)))
            .map(|(i, _)| i as u32)
            .collect();
        for idx in &pending {
            self.cancel(*idx);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let busy = self.slots.borrow().iter().any(Slot::in_kernel);
            if !busy {
                // Closes and cancellations still queued go to the kernel.
                let _ = self.ring.borrow_mut().submit();
                return;
            }
            if Instant::now() >= deadline {
                // Freeing what the kernel may still write to is worse than leaking it once.
                self.leak.set(true);
                return;
            }
            if self
                .turn_with(true, Some(Duration::from_millis(10)))
                .is_err()
            {
                self.leak.set(true);
                return;
            }
        }
    }

    /// Wakes the timers due at this turn's clock.
    fn fire_timers(&self) {
        let mut wake = std::mem::take(&mut *self.timer_wake.borrow_mut());
        {
            let mut t = self.timers.borrow_mut();
            if !t.is_empty() {
                t.advance(self.now.get(), &mut wake);
            }
        }
        for w in wake.drain(..) {
            w.wake();
        }
        *self.timer_wake.borrow_mut() = wake;
    }
}

/// A one-shot operation: its slot, and the memory the kernel uses until it completes.
pub(crate) struct Op<T: 'static> {
    rt: Rc<Runtime>,
    idx: u32,
    data: Option<T>,
}

impl<T: 'static> Op<T> {
    /// Submits `entry` (built over `data`'s memory) and returns its future.
    ///
    /// # Safety
    /// The entry may point only into `data` (whose heap memory does not move when `data`
    /// does) or to memory that outlives the operation.
    pub(crate) unsafe fn submit(data: T, entry: squeue::Entry) -> Op<T> {
        exec::with(|rt| {
            let idx = rt.reactor.slot(Slot::Waiting(Waiter::NONE));
            // SAFETY: the caller's promise; `data` stays here or in the slot until the last
            // completion.
            unsafe { rt.reactor.push(entry.user_data(idx as u64)) };
            Op {
                rt: rt.clone(),
                idx,
                data: Some(data),
            }
        })
    }
}

// The data is never pinned: it moves out when the operation completes.
impl<T: 'static> Unpin for Op<T> {}

impl<T: 'static> Future for Op<T> {
    /// The result (a negative errno on failure), the completion's flags, and the data back.
    type Output = (i32, u32, T);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Its slot may belong to another operation once this one completed.
        assert!(
            self.data.is_some(),
            "an operation polled after it completed"
        );
        let r = &self.rt.reactor;
        let mut slots = r.slots.borrow_mut();
        match &mut slots[self.idx as usize] {
            Slot::Done(res, flags) => {
                let (res, flags) = (*res, *flags);
                drop(slots);
                r.release(self.idx);
                let data = self.data.take().expect("polled after completion");
                Poll::Ready((res, flags, data))
            }
            Slot::Waiting(w) => {
                w.set(cx.waker());
                Poll::Pending
            }
            _ => Poll::Pending,
        }
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(data) = self.data.take() else { return };
        let r = &self.rt.reactor;
        let done = matches!(r.slots.borrow()[self.idx as usize], Slot::Done(..));
        if done {
            r.release(self.idx);
            return;
        }
        r.slots.borrow_mut()[self.idx as usize] = Slot::Orphan(Kind::OneShot, Some(Box::new(data)));
        r.cancel(self.idx);
    }
}
