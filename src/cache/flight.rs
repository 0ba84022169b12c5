//! Request coalescing: concurrent misses for one key wait for a single upstream fetch.
//!
//! The first miss for a key becomes the leader and holds a [`Leader`] guard while it fetches;
//! later misses for the same key get a [`Follower`] future that resolves when the guard is
//! dropped (the answer stored, found uncacheable, or the fetch failed). Followers then look
//! the key up again; if there is still nothing they fetch for themselves, so an uncacheable
//! answer never serialises requests. Leader and followers may be on different shards: the
//! wakers are thread-safe and the table is one short-held mutex per cache segment.

// The single-flight table is shared by every shard (concurrent misses for one key meet
// here, once per miss, not per request); its segments are locked briefly.
#![allow(clippy::disallowed_types)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use ahash::AHashMap;

#[derive(Default)]
struct Flight {
    /// `None` once the leader is done.
    waiters: Mutex<Option<Vec<Waker>>>,
}

/// The in-flight fetches of one cache, keyed by key hash, split in segments.
pub(crate) struct Flights {
    segments: Box<[Segment]>,
}

type Segment = Mutex<AHashMap<u64, Arc<Flight>>>;

pub enum Join {
    Leader(Leader),
    Follower(Follower),
}

impl Flights {
    pub(crate) fn new(segments: usize) -> Flights {
        Flights {
            segments: (0..segments.max(1)).map(|_| Default::default()).collect(),
        }
    }

    fn segment(&self, hash: u64) -> &Segment {
        &self.segments[(hash >> 7) as usize % self.segments.len()]
    }

    /// Becomes the leader for `hash`, or follows the fetch already under way.
    pub(crate) fn join(self: &Arc<Self>, hash: u64) -> Join {
        let mut map = self.segment(hash).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(&hash) {
            return Join::Follower(Follower {
                flight: f.clone(),
                registered: false,
            });
        }
        let f = Arc::new(Flight {
            waiters: Mutex::new(Some(Vec::new())),
        });
        map.insert(hash, f.clone());
        Join::Leader(Leader {
            flights: self.clone(),
            hash,
            flight: f,
        })
    }

    /// Fetches under way.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held by the request that fetches; dropping it releases the followers.
pub struct Leader {
    flights: Arc<Flights>,
    hash: u64,
    flight: Arc<Flight>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.flights
            .segment(self.hash)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.hash);
        let waiters = self
            .flight
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        for w in waiters.into_iter().flatten() {
            w.wake();
        }
    }
}

/// Resolves when the leader is done.
pub struct Follower {
    flight: Arc<Flight>,
    registered: bool,
}

impl Future for Follower {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let flight = self.flight.clone();
        let mut w = flight.waiters.lock().unwrap_or_else(|e| e.into_inner());
        match w.as_mut() {
            None => Poll::Ready(()),
            Some(list) => {
                if !self.registered {
                    list.push(cx.waker().clone());
                    self.registered = true;
                } else if let Some(slot) = list.iter_mut().find(|x| x.will_wake(cx.waker())) {
                    slot.clone_from(cx.waker());
                } else {
                    list.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_join_follows_until_leader_drops() {
        let f = Arc::new(Flights::new(4));
        let Join::Leader(lead) = f.join(7) else {
            panic!("first join must lead")
        };
        let Join::Follower(mut fol) = f.join(7) else {
            panic!("second join must follow")
        };
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut fol).poll(&mut cx).is_pending());
        // Another key leads on its own.
        assert!(matches!(f.join(8), Join::Leader(_)));
        drop(lead);
        assert!(Pin::new(&mut fol).poll(&mut cx).is_ready());
        assert!(matches!(f.join(7), Join::Leader(_)));
        assert!(f.is_empty());
    }
}
