//! Timers: entries in the runtime's timer wheel (`wheel.rs`), served by the ring's wait.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::exec::{self, Runtime};

/// The time of this thread's runtime turn: the clock as read when the turn's completions
/// were reaped (one read per turn, not one per timer; nginx's cached time), or the clock
/// itself outside a runtime. Earlier than the clock by what the turn's tasks have run so far
/// (a few hundred microseconds for a busy shard's batch of requests): a timer armed from it may
/// end that much early, about the wheel's 1 ms tick, which already rounds deadlines.
pub fn now() -> Instant {
    exec::try_with(|rt| rt.reactor.now.get()).unwrap_or_else(Instant::now)
}

/// Resolves after `d` (from the turn's time, [`now`]).
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        deadline: now().checked_add(d),
        entry: None,
        rt: None,
    }
}

/// Resolves at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline: Some(deadline),
        entry: None,
        rt: None,
    }
}

pub struct Sleep {
    deadline: Option<Instant>,
    /// Its entry in the wheel, while armed (or fired and not yet seen).
    entry: Option<u32>,
    rt: Option<Rc<Runtime>>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        let rt = this.rt.get_or_insert_with(|| exec::with(|rt| rt.clone()));
        let mut wheel = rt.reactor.timers.borrow_mut();
        if let Some(i) = this.entry {
            if wheel.poll(i, cx.waker()) {
                wheel.remove(i);
                this.entry = None;
                return Poll::Ready(());
            }
            return Poll::Pending;
        }
        // The clock is read only for a deadline in the wheel's current or next tick.
        let due = match wheel.is_due(deadline) {
            Some(due) => due,
            None => Instant::now() >= deadline,
        };
        if due {
            return Poll::Ready(());
        }
        this.entry = Some(wheel.insert(deadline, cx.waker()));
        Poll::Pending
    }
}

impl Sleep {
    /// Resolves at `deadline` instead (again, if it had resolved).
    pub fn reset(&mut self, deadline: Instant) {
        self.disarm();
        self.deadline = Some(deadline);
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn disarm(&mut self) {
        if let (Some(i), Some(rt)) = (self.entry.take(), &self.rt) {
            rt.reactor.timers.borrow_mut().remove(i);
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}
