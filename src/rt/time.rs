//! Timers: one ordered map per runtime, served by the ring's wait.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::exec::{self, Runtime};

/// Resolves after `d`.
pub fn sleep(d: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now().checked_add(d),
        key: None,
        rt: None,
    }
}

/// Resolves at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline: Some(deadline),
        key: None,
        rt: None,
    }
}

pub struct Sleep {
    deadline: Option<Instant>,
    key: Option<(Instant, u64)>,
    rt: Option<Rc<Runtime>>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        let rt = self
            .rt
            .get_or_insert_with(|| exec::with(|rt| rt.clone()))
            .clone();
        let timers = &rt.reactor.timers;
        if Instant::now() >= deadline {
            if let Some(k) = self.key.take() {
                timers.borrow_mut().remove(&k);
            }
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let seq = rt.reactor.timer_seq.get();
                rt.reactor.timer_seq.set(seq + 1);
                self.key = Some((deadline, seq));
                (deadline, seq)
            }
        };
        timers.borrow_mut().insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Sleep {
    /// Resolves at `deadline` instead (again, if it had resolved).
    pub fn reset(&mut self, deadline: Instant) {
        if let (Some(k), Some(rt)) = (self.key.take(), &self.rt) {
            rt.reactor.timers.borrow_mut().remove(&k);
        }
        self.deadline = Some(deadline);
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let (Some(k), Some(rt)) = (self.key.take(), &self.rt) {
            rt.reactor.timers.borrow_mut().remove(&k);
        }
    }
}
