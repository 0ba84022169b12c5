//! Request coalescing: concurrent misses for one key wait for a single upstream fetch.
//!
//! The first miss for a key becomes the leader and holds a [`Leader`] guard while it fetches;
//! later misses for the same key get a [`Follower`] future that resolves when the leader is
//! done. A leader may hand its result to its followers ([`Leader::finish`]: an authorizer's
//! decision, or its failure, which the followers then share rather than each asking again);
//! a leader dropped without finishing (the answer stored, found uncacheable, the fetch
//! failed or its request went away) resolves them with `None`, and they look the key up
//! again; if there is still nothing they fetch for themselves, so an uncacheable answer never
//! serialises requests. Leader and followers may be on different shards: the wakers are
//! thread-safe and the table is one short-held mutex per cache segment.

// The single-flight table is shared by every shard (concurrent misses for one key meet
// here, once per miss, not per request); its segments are locked briefly.
#![allow(clippy::disallowed_types)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use ahash::AHashMap;

enum State<T> {
    /// The leader is fetching; these followers wait.
    Waiting(Vec<Waker>),
    /// The leader is done, with the result it handed over, if any.
    Done(Option<T>),
}

struct Flight<T> {
    state: Mutex<State<T>>,
}

/// The in-flight fetches of one cache, keyed by key hash, split in segments; `T` is what a
/// leader hands its followers (nothing, for the response cache).
pub(crate) struct Flights<T = ()> {
    segments: Box<[Segment<T>]>,
}

type Segment<T> = Mutex<AHashMap<u64, Arc<Flight<T>>>>;

pub enum Join<T = ()> {
    Leader(Leader<T>),
    Follower(Follower<T>),
}

impl<T> Flights<T> {
    pub(crate) fn new(segments: usize) -> Flights<T> {
        Flights {
            segments: (0..segments.max(1)).map(|_| Default::default()).collect(),
        }
    }

    fn segment(&self, hash: u64) -> &Segment<T> {
        &self.segments[(hash >> 7) as usize % self.segments.len()]
    }

    /// Becomes the leader for `hash`, or follows the fetch already under way.
    pub(crate) fn join(self: &Arc<Self>, hash: u64) -> Join<T> {
        let mut map = self.segment(hash).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = map.get(&hash) {
            return Join::Follower(Follower {
                flight: f.clone(),
                registered: false,
            });
        }
        let f = Arc::new(Flight {
            state: Mutex::new(State::Waiting(Vec::new())),
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

/// Held by the request that fetches; finishing or dropping it releases the followers.
pub struct Leader<T = ()> {
    flights: Arc<Flights<T>>,
    hash: u64,
    flight: Arc<Flight<T>>,
}

impl<T> Leader<T> {
    /// Hands `result` to the followers and releases them.
    pub(crate) fn finish(self, result: T) {
        self.complete(Some(result));
    }

    fn complete(&self, result: Option<T>) {
        {
            let mut map = self
                .flights
                .segment(self.hash)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Only this flight: a later one for the same key is another leader's.
            if map
                .get(&self.hash)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.hash);
            }
        }
        let waiters = {
            let mut state = self.flight.state.lock().unwrap_or_else(|e| e.into_inner());
            match std::mem::replace(&mut *state, State::Done(None)) {
                State::Waiting(w) => {
                    *state = State::Done(result);
                    w
                }
                // Finished already: the result handed over stays.
                done @ State::Done(_) => {
                    *state = done;
                    Vec::new()
                }
            }
        };
        for w in waiters {
            w.wake();
        }
    }
}

impl<T> Drop for Leader<T> {
    fn drop(&mut self) {
        self.complete(None);
    }
}

/// Resolves when the leader is done, with what it handed over (`None`: nothing; look again).
pub struct Follower<T = ()> {
    flight: Arc<Flight<T>>,
    registered: bool,
}

impl<T: Clone> Future for Follower<T> {
    type Output = Option<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let flight = self.flight.clone();
        let mut state = flight.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::Done(result) => Poll::Ready(result.clone()),
            State::Waiting(list) => {
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
        let f = Arc::new(Flights::<()>::new(4));
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

    #[test]
    fn followers_get_what_the_leader_hands_over() {
        let f = Arc::new(Flights::<u32>::new(4));
        let Join::Leader(lead) = f.join(7) else {
            panic!("first join must lead")
        };
        let Join::Follower(mut fol) = f.join(7) else {
            panic!("second join must follow")
        };
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut fol).poll(&mut cx).is_pending());
        lead.finish(42);
        assert_eq!(Pin::new(&mut fol).poll(&mut cx), Poll::Ready(Some(42)));
        assert!(f.is_empty());
        // A leader dropped without finishing hands over nothing; a later leader for the
        // same key is not disturbed by an earlier one's release.
        let Join::Leader(lead) = f.join(7) else {
            panic!("must lead")
        };
        let Join::Follower(mut fol) = f.join(7) else {
            panic!("must follow")
        };
        drop(lead);
        assert_eq!(Pin::new(&mut fol).poll(&mut cx), Poll::Ready(None));
        let Join::Leader(_next) = f.join(7) else {
            panic!("must lead")
        };
        assert_eq!(f.len(), 1);
    }
}
