//! A shard's drain signal: set once when the shard starts draining; every connection waiting
//! for its next request (or an HTTP/2 connection between streams) wakes and closes.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use std::collections::BTreeMap;
use std::time::Instant;

/// Wakes the connections of one shard when draining starts.
#[derive(Default)]
pub(crate) struct Drain {
    on: Cell<bool>,
    /// A soft drain (a successor took over): connections that are in the middle of talking
    /// (read within the last second) may send one more request, answered with
    /// `Connection: close`, rather than be closed under a request already on its way.
    soft: Cell<bool>,
    /// Waits that only a hard drain ends ([`Drain::hard_wait`]).
    hard_waiters: RefCell<Waiters>,
    waiters: RefCell<Waiters>,
    clock: IdleClock,
}

/// The wakers of the waits registered with a drain, each at a slot it keeps while it lives
/// (a connection registers once per request it waits for: no hashing, and no waker clone
/// when the task polling it is the same).
#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Waiters {
    /// Registers `w` at `key`'s slot, taking a slot first if `key` has none.
    fn set(&mut self, key: &mut Option<usize>, w: &Waker) -> usize {
        match *key {
            Some(k) => {
                let slot = &mut self.slots[k];
                if !slot.as_ref().is_some_and(|old| old.will_wake(w)) {
                    *slot = Some(w.clone());
                }
                k
            }
            None => {
                let k = match self.free.pop() {
                    Some(k) => {
                        self.slots[k] = Some(w.clone());
                        k
                    }
                    None => {
                        self.slots.push(Some(w.clone()));
                        self.slots.len() - 1
                    }
                };
                *key = Some(k);
                k
            }
        }
    }

    fn remove(&mut self, k: usize) {
        if let Some(slot) = self.slots.get_mut(k) {
            if slot.take().is_some() {
                self.free.push(k);
            }
        }
    }

    /// Wakes every registered wait; their slots stay theirs until they go.
    fn wake_all(&mut self) {
        for w in self.slots.iter().flatten() {
            w.wake_by_ref();
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

impl Drain {
    pub(crate) fn is_on(&self) -> bool {
        self.on.get()
    }

    /// A soft drain (see `soft`).
    pub(crate) fn is_soft(&self) -> bool {
        self.on.get() && self.soft.get()
    }

    pub(crate) fn start(&self) {
        self.on.set(true);
        self.soft.set(false);
        self.waiters.borrow_mut().wake_all();
        self.hard_waiters.borrow_mut().wake_all();
    }

    /// Drains for a successor: accepting stops and idle connections close, but a connection
    /// in the middle of talking keeps its next request (see `soft`).
    pub(crate) fn start_soft(&self) {
        self.on.set(true);
        self.soft.set(true);
        self.waiters.borrow_mut().wake_all();
    }

    /// Resolves at a hard drain only (a soft one lets the waiter finish what it is reading).
    pub(crate) fn hard_wait(self: &Rc<Self>) -> DrainWait {
        DrainWait {
            drain: self.clone(),
            key: None,
            hard: true,
        }
    }

    /// Resolves once draining starts.
    pub(crate) fn wait(self: &Rc<Self>) -> DrainWait {
        DrainWait {
            drain: self.clone(),
            key: None,
            hard: false,
        }
    }

    /// The waiters a wait registers with: a hard-only wait is woken by a hard drain alone.
    fn waiters_for(&self, hard: bool) -> &RefCell<Waiters> {
        if hard {
            &self.hard_waiters
        } else {
            &self.waiters
        }
    }
}

pub(crate) struct DrainWait {
    drain: Rc<Drain>,
    key: Option<usize>,
    /// Only a hard drain ends it ([`Drain::hard_wait`]).
    hard: bool,
}

impl Future for DrainWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.on.get() && !(self.hard && self.drain.soft.get()) {
            return Poll::Ready(());
        }
        let me = &mut *self;
        me.drain
            .waiters_for(me.hard)
            .borrow_mut()
            .set(&mut me.key, cx.waker());
        Poll::Pending
    }
}

impl Drop for DrainWait {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.drain.waiters_for(self.hard).borrow_mut().remove(k);
        }
    }
}

/// What ended an [`IdleWait`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    Drained,
    Expired,
}

/// The shard's clock for idle connections: deadlines in one ordered map, served by one timer
/// task per shard. A waiting connection holds a key (tens of bytes) rather than a runtime
/// timer of its own (640 bytes each in monoio), so that ten thousand idle connections cost
/// ten thousand small map entries.
#[derive(Default)]
pub(crate) struct IdleClock {
    deadlines: RefCell<BTreeMap<(Instant, usize), Waker>>,
    /// The timer task's waker while it sleeps, and the deadline it sleeps until.
    sweeper: RefCell<Option<(Waker, Instant)>>,
    running: Cell<bool>,
}

impl Drain {
    /// Resolves when draining starts or after `idle`, whichever comes first (an `idle` too
    /// long for the clock never expires).
    pub(crate) fn idle_for(self: &Rc<Self>, idle: std::time::Duration) -> IdleWait {
        IdleWait {
            drain: self.clone(),
            deadline: Instant::now().checked_add(idle),
            key: None,
        }
    }

    /// One task per shard: sleeps until the earliest deadline and wakes those that are due.
    fn start_sweeper(self: &Rc<Self>) {
        if self.clock.running.replace(true) {
            return;
        }
        let me = self.clone();
        crate::driver::spawn(async move {
            loop {
                let first = me.clock.deadlines.borrow().keys().next().map(|k| k.0);
                let Some(first) = first else {
                    // Nothing waits: stop; the next waiter starts a new sweeper.
                    me.clock.running.set(false);
                    return;
                };
                let now = Instant::now();
                if first > now {
                    let woken = std::future::poll_fn(|cx| {
                        *me.clock.sweeper.borrow_mut() = Some((cx.waker().clone(), first));
                        Poll::Ready(())
                    });
                    woken.await;
                    // Sleeps until `first`, or until a waiter with an earlier deadline wakes
                    // this task (which then re-reads the map).
                    let early = Rearm(me.clone());
                    monoio::select! {
                        _ = crate::driver::time::sleep_until(first) => {},
                        _ = early => {},
                    }
                    me.clock.sweeper.borrow_mut().take();
                    continue;
                }
                // Take the due entries out; each waiter finds its deadline passed when polled.
                let due = {
                    let mut map = me.clock.deadlines.borrow_mut();
                    let rest = map.split_off(&(now, usize::MAX));
                    std::mem::replace(&mut *map, rest)
                };
                for w in due.into_values() {
                    w.wake();
                }
            }
        });
    }
}

/// Resolves when a waiter with an earlier deadline than the sweeper's has taken its waker.
struct Rearm(Rc<Drain>);

impl Future for Rearm {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0.clock.sweeper.borrow().is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

pub(crate) struct IdleWait {
    drain: Rc<Drain>,
    deadline: Option<Instant>,
    key: Option<usize>,
}

impl Future for IdleWait {
    type Output = Woke;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woke> {
        if self.drain.on.get() {
            return Poll::Ready(Woke::Drained);
        }
        let deadline = self.deadline;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Woke::Expired);
        }
        let me = &mut *self;
        let key = me.drain.waiters.borrow_mut().set(&mut me.key, cx.waker());
        if let Some(deadline) = deadline {
            let clock = &self.drain.clock;
            clock
                .deadlines
                .borrow_mut()
                .insert((deadline, key), cx.waker().clone());
            let sweeper = clock.sweeper.borrow_mut().take_if(|(_, at)| deadline < *at);
            if let Some((w, _)) = sweeper {
                w.wake();
            }
            self.drain.start_sweeper();
        }
        Poll::Pending
    }
}

impl Drop for IdleWait {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.drain.waiters.borrow_mut().remove(k);
            if let Some(d) = self.deadline {
                self.drain.clock.deadlines.borrow_mut().remove(&(d, k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn run<F: Future<Output = ()>>(f: F) {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("a runtime")
            .block_on(f);
    }

    /// Lets the spawned tasks run (one thread: they run before this task is polled again).
    async fn yield_once() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    /// Waits expire in deadline order, a later-registered earlier deadline included (the
    /// sweeper re-arms), and a wait dropped early leaves nothing behind.
    #[test]
    fn idle_waits_expire_in_deadline_order() {
        run(async {
            let drain = Rc::new(Drain::default());
            let order = Rc::new(RefCell::new(Vec::new()));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for (name, ms) in [("slow", 300u64), ("fast", 60), ("mid", 150)] {
                let (d, o) = (drain.clone(), order.clone());
                tasks.push(crate::driver::spawn(async move {
                    assert_eq!(d.idle_for(Duration::from_millis(ms)).await, Woke::Expired);
                    assert!(start.elapsed() >= Duration::from_millis(ms));
                    o.borrow_mut().push(name);
                }));
                // Let each register before the next.
                yield_once().await;
            }
            {
                let dropped = drain.idle_for(Duration::from_secs(3600));
                let _ = crate::driver::time::timeout(Duration::from_millis(1), dropped).await;
            }
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), ["fast", "mid", "slow"]);
            assert!(drain.clock.deadlines.borrow().is_empty());
            assert!(drain.waiters.borrow().is_empty());
        });
    }

    /// Draining ends every idle wait at once, whatever its deadline; an overlong one never
    /// expires by itself.
    #[test]
    fn draining_ends_idle_waits() {
        run(async {
            let drain = Rc::new(Drain::default());
            let d = drain.clone();
            let long =
                crate::driver::spawn(async move { d.idle_for(Duration::from_secs(3600)).await });
            let d = drain.clone();
            let never = crate::driver::spawn(async move { d.idle_for(Duration::MAX).await });
            yield_once().await;
            drain.start();
            assert_eq!(long.await, Woke::Drained);
            assert_eq!(never.await, Woke::Drained);
        });
    }
}
