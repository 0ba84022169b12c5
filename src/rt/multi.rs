//! A multishot operation (accept, receive): its results as the kernel makes them.

use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll};

use io_uring::squeue;

use super::exec::{self, Runtime, Waiter};
use super::reactor::{Got, Kind, Pause, Slot};

/// A multishot operation's results as they come.
pub(crate) struct Multi {
    rt: Rc<Runtime>,
    idx: u32,
    kind: Kind,
}

impl Multi {
    /// # Safety
    /// As [`Op::submit`]: the entry points to no memory that may go away before it ends.
    pub(crate) unsafe fn submit(kind: Kind, pause: Pause, entry: squeue::Entry) -> Multi {
        exec::with(|rt| {
            let idx = rt.reactor.slot(Slot::Multi {
                kind,
                // Room for one result: an idle connection keeps 32 bytes, not the 128 that
                // a first push grows an empty queue to.
                queue: VecDeque::with_capacity(1),
                waker: Waiter::NONE,
                ended: false,
                cancelling: false,
                pause,
            });
            // SAFETY: the caller's promise.
            unsafe { rt.reactor.push(entry.user_data(idx as u64)) };
            Multi {
                rt: rt.clone(),
                idx,
                kind,
            }
        })
    }

    /// The next result with its flags; `None` once the operation has ended and every
    /// result was taken.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Got>> {
        let mut slots = self.rt.reactor.slots.borrow_mut();
        match &mut slots[self.idx as usize] {
            Slot::Multi {
                queue,
                waker,
                ended,
                ..
            } => {
                if let Some(r) = queue.pop_front() {
                    return Poll::Ready(Some(r));
                }
                if *ended {
                    return Poll::Ready(None);
                }
                waker.set(cx.waker());
                Poll::Pending
            }
            _ => Poll::Ready(None),
        }
    }

    /// Asks the kernel to end the operation; results already made still come, then `None`.
    pub(crate) fn cancel(&self) {
        self.rt.reactor.cancel(self.idx);
    }

    /// The next result if it is already there and holds bytes (an end or an error stays for
    /// [`Multi::poll_next`]).
    pub(crate) fn take_data(&self) -> Option<Got> {
        let mut slots = self.rt.reactor.slots.borrow_mut();
        let Slot::Multi { queue, .. } = &mut slots[self.idx as usize] else {
            return None;
        };
        match queue.front() {
            Some(g) if g.res > 0 || g.copied.is_some() => queue.pop_front(),
            _ => None,
        }
    }

    /// Whether all that is left of the operation is the end a cancellation gave it (one
    /// [`Multi::cancel`] asked for, or a paused receive's): then that end is taken, and the
    /// caller drops the operation. Nothing was received after it, so it tells a reader nothing.
    pub(crate) fn take_cancelled_end(&self) -> bool {
        let mut slots = self.rt.reactor.slots.borrow_mut();
        let Slot::Multi { queue, ended, .. } = &mut slots[self.idx as usize] else {
            return false;
        };
        let only_cancelled = *ended
            && queue.len() == 1
            && queue
                .front()
                .is_some_and(|g| g.res == -libc::ECANCELED && g.copied.is_none());
        if only_cancelled {
            queue.clear();
        }
        only_cancelled
    }

    /// Whether a result waits to be taken (bytes, an end or an error).
    pub(crate) fn has_results(&self) -> bool {
        match &self.rt.reactor.slots.borrow()[self.idx as usize] {
            Slot::Multi { queue, ended, .. } => !queue.is_empty() || *ended,
            _ => true,
        }
    }

    /// Whether the kernel may still make results (no completion without the MORE flag came).
    #[cfg(test)]
    pub(crate) fn running(&self) -> bool {
        matches!(
            &self.rt.reactor.slots.borrow()[self.idx as usize],
            Slot::Multi { ended: false, .. }
        )
    }

    pub(crate) fn next(&self) -> impl Future<Output = Option<Got>> + '_ {
        std::future::poll_fn(move |cx| self.poll_next(cx))
    }

    pub(crate) fn rt(&self) -> &Rc<Runtime> {
        &self.rt
    }
}

impl Drop for Multi {
    fn drop(&mut self) {
        let r = &self.rt.reactor;
        let slot = std::mem::replace(
            &mut r.slots.borrow_mut()[self.idx as usize],
            Slot::Orphan(self.kind, None),
        );
        let Slot::Multi { queue, ended, .. } = slot else {
            return;
        };
        for g in queue {
            if g.copied.is_none() {
                r.discard(self.kind, g.res, g.flags);
            }
        }
        if ended {
            r.release(self.idx);
        } else {
            r.cancel(self.idx);
        }
    }
}
