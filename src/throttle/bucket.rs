//! The global token bucket of one limit: GCRA over one atomic word, updated by CAS.
//!
//! The bucket stores its theoretical arrival time (TAT) in nanoseconds since the gateway's
//! clock epoch. With emission interval `t = 1 s / rate` and tolerance `tau = burst * t`,
//! taking `n` tokens at `now` succeeds while `max(tat, now) + n*t - now <= tau`; the bucket is
//! full when `tat <= now`. Shards never take one token at a time: they take a lease of several
//! ([`Bucket::take_up_to`]) and give back what they did not spend ([`Bucket::give_back`]).
//! Everything takes `now` as an argument, so tests and simulations are deterministic.

use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::config::Rate;

const NANOS: u64 = 1_000_000_000;

impl Rate {
    /// Nanoseconds per token.
    pub fn interval(self) -> u64 {
        (NANOS / self.rate.max(1)).max(1)
    }

    /// Tolerance: how far ahead of `now` the TAT may run.
    pub fn tau(self) -> u64 {
        self.interval().saturating_mul(self.burst)
    }
}

/// One limit's shared state.
#[derive(Debug)]
pub struct Bucket {
    pub rate: Rate,
    tat: AtomicU64,
}

/// What a take found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens granted (0: refused).
    pub granted: u64,
    /// Tokens left in the bucket after the grant.
    pub remaining: u64,
    /// Nanoseconds until the next token (when refused) or until the bucket is full again.
    pub wait_ns: u64,
    pub reset_ns: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: Rate) -> Bucket {
        Bucket {
            rate,
            tat: AtomicU64::new(0),
        }
    }

    /// The bucket of a limit whose rate or burst changed (a reload): the tokens in use in
    /// `old` at `now` stay in use (at most the new burst), so that the change does not hand
    /// out a fresh burst on top of what was just admitted.
    pub fn after(old: &Bucket, rate: Rate, now: u64) -> Bucket {
        let used_ns = old.tat.load(Ordering::Relaxed).saturating_sub(now);
        let in_use = used_ns.div_ceil(old.rate.interval()).min(rate.burst);
        Bucket {
            rate,
            tat: AtomicU64::new(now + in_use * rate.interval()),
        }
    }

    /// Takes up to `want` tokens at `now` (nanoseconds): as many as the bucket holds.
    pub fn take_up_to(&self, want: u64, now: u64) -> Grant {
        let t = self.rate.interval();
        let tau = self.rate.tau();
        let mut cur = self.tat.load(Ordering::Relaxed);
        loop {
            let base = cur.max(now);
            let used = base - now; // tokens in use, in nanoseconds
            let available = tau.saturating_sub(used) / t;
            let granted = want.min(available);
            if granted == 0 {
                let wait = (used + t).saturating_sub(tau);
                return Grant {
                    granted: 0,
                    remaining: 0,
                    wait_ns: wait,
                    reset_ns: used,
                };
            }
            let new = base + granted * t;
            match self
                .tat
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    let used = new - now;
                    return Grant {
                        granted,
                        remaining: tau.saturating_sub(used) / t,
                        wait_ns: 0,
                        reset_ns: used,
                    };
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Returns `n` unspent tokens.
    pub fn give_back(&self, n: u64, now: u64) {
        if n == 0 {
            return;
        }
        let back = n * self.rate.interval();
        let mut cur = self.tat.load(Ordering::Relaxed);
        loop {
            // A TAT in the past already means "full": there is nothing to give back to.
            if cur <= now {
                return;
            }
            let new = cur.saturating_sub(back).max(now);
            match self
                .tat
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Nanoseconds since the TAT was last ahead of `now` (0 while tokens are in use): how long
    /// the bucket has been full, for evicting idle per-key buckets.
    pub fn idle_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.tat.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS;

    /// A changed rate keeps the tokens in use: no fresh burst on top of what was admitted.
    #[test]
    fn a_changed_rate_keeps_the_tokens_in_use() {
        let now = 100 * S;
        let old = Bucket::new(Rate {
            rate: 10,
            burst: 20,
        });
        assert_eq!(old.take_up_to(100, now).granted, 20);
        let new = Bucket::after(
            &old,
            Rate {
                rate: 11,
                burst: 20,
            },
            now,
        );
        assert_eq!(new.take_up_to(100, now).granted, 0);
        // A smaller burst caps what is in use; a bucket that was full stays full.
        let new = Bucket::after(&old, Rate { rate: 10, burst: 5 }, now);
        assert_eq!(new.take_up_to(100, now + S).granted, 5);
        let idle = Bucket::new(Rate {
            rate: 10,
            burst: 20,
        });
        let new = Bucket::after(&idle, Rate { rate: 1, burst: 3 }, now);
        assert_eq!(new.take_up_to(100, now).granted, 3);
    }

    #[test]
    fn a_full_bucket_grants_its_burst_at_once_then_the_rate() {
        let b = Bucket::new(Rate { rate: 10, burst: 5 });
        let now = 100 * S;
        assert_eq!(b.take_up_to(100, now).granted, 5);
        assert_eq!(b.take_up_to(1, now).granted, 0);
        // One token every 100 ms.
        assert_eq!(b.take_up_to(1, now + S / 10).granted, 1);
        assert_eq!(b.take_up_to(1, now + S / 10).granted, 0);
        // After a second idle, 5 again at most (never more than burst).
        assert_eq!(b.take_up_to(100, now + 10 * S).granted, 5);
    }

    #[test]
    fn refusals_say_when_to_retry() {
        let b = Bucket::new(Rate { rate: 2, burst: 1 });
        assert_eq!(b.take_up_to(1, S).granted, 1);
        let g = b.take_up_to(1, S);
        assert_eq!(g.granted, 0);
        assert_eq!(g.wait_ns, S / 2);
    }

    #[test]
    fn given_back_tokens_can_be_taken_again() {
        let b = Bucket::new(Rate { rate: 1, burst: 10 });
        assert_eq!(b.take_up_to(10, S).granted, 10);
        b.give_back(4, S);
        assert_eq!(b.take_up_to(10, S).granted, 4);
        // Giving back to a full bucket does not overfill it.
        b.give_back(100, 1000 * S);
        assert_eq!(b.take_up_to(100, 1000 * S).granted, 10);
    }
}
