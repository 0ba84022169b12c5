//! A shard's drain signal: set once when the shard starts draining; every connection waiting
//! for its next request (or an HTTP/2 connection between streams) wakes and closes.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use ahash::AHashMap;

/// Wakes the connections of one shard when draining starts.
#[derive(Default)]
pub(crate) struct Drain {
    on: Cell<bool>,
    next_key: Cell<u64>,
    waiters: RefCell<AHashMap<u64, Waker>>,
}

impl Drain {
    pub(crate) fn is_on(&self) -> bool {
        self.on.get()
    }

    pub(crate) fn start(&self) {
        self.on.set(true);
        for (_, w) in self.waiters.borrow_mut().drain() {
            w.wake();
        }
    }

    /// Resolves once draining starts.
    pub(crate) fn wait(self: &Rc<Self>) -> DrainWait {
        DrainWait {
            drain: self.clone(),
            key: None,
        }
    }
}

pub(crate) struct DrainWait {
    drain: Rc<Drain>,
    key: Option<u64>,
}

impl Future for DrainWait {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.on.get() {
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = self.drain.next_key.get();
                self.drain.next_key.set(k + 1);
                self.key = Some(k);
                k
            }
        };
        self.drain
            .waiters
            .borrow_mut()
            .insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for DrainWait {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.drain.waiters.borrow_mut().remove(&k);
        }
    }
}
