//! A shard's lease on a global [`Bucket`]: a few tokens taken at once with one CAS, spent
//! locally with no atomic operation, and given back when the lease grows old.
//!
//! Accuracy: tokens are spent only after the global bucket granted them, so a limit never
//! admits more than `burst + rate * T` over any window `T`. What a shard holds but has not
//! spent is the only slack the other way: at most `shards * size` tokens, with `size` chosen by
//! [`lease_size`] so that this stays within a few percent of `burst + rate * 1 s`. Unspent
//! tokens go back to the bucket when the lease is older than [`LEASE_TTL_NS`] (checked on the
//! next take, and by the shard's periodic sweep).

use std::cell::Cell;
use std::sync::Arc;

use super::bucket::{Bucket, Rate};

/// Unspent tokens older than this go back to the global bucket (50 ms).
pub(crate) const LEASE_TTL_NS: u64 = 50_000_000;

/// Tokens per lease: about 1/50 s of a shard's share of the rate, at most 1/8 of its share
/// of the burst, at least 1, at most 256.
pub(crate) fn lease_size(rate: Rate, shards: usize) -> u64 {
    let shards = shards.max(1) as u64;
    (rate.rate / (shards * 50))
        .min(rate.burst / (shards * 8))
        .clamp(1, 256)
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` tokens (approximately) and `reset_ns` until full, for headers.
    Allowed { remaining: u64, reset_ns: u64 },
    /// Refused; retry after this many nanoseconds.
    Refused { retry_ns: u64 },
}

/// One shard's lease on one limit.
#[derive(Debug)]
pub struct Lease {
    pub bucket: Arc<Bucket>,
    size: u64,
    tokens: Cell<u64>,
    taken_at: Cell<u64>,
    /// The global bucket's remaining tokens when the lease was taken (for RateLimit-Remaining).
    remaining_hint: Cell<u64>,
    reset_hint: Cell<u64>,
    /// Last time this lease was used (for evicting idle per-key leases).
    pub last_used: Cell<u64>,
    /// A fleet-wide limit refused until then: refusals are answered locally, so an
    /// overloaded limit costs Redis one call per refill interval, not one per request.
    pub refused_until: Cell<u64>,
}

impl Lease {
    pub fn new(bucket: Arc<Bucket>, shards: usize) -> Lease {
        let size = lease_size(bucket.rate, shards);
        Lease {
            bucket,
            size,
            tokens: Cell::new(0),
            taken_at: Cell::new(0),
            remaining_hint: Cell::new(0),
            reset_hint: Cell::new(0),
            last_used: Cell::new(0),
            refused_until: Cell::new(0),
        }
    }

    /// Spends one token, taking a new lease from the global bucket when needed.
    pub fn take(&self, now: u64) -> Decision {
        self.last_used.set(now);
        let fresh = now.saturating_sub(self.taken_at.get()) < LEASE_TTL_NS;
        let left = self.tokens.get();
        if left > 0 && fresh {
            self.tokens.set(left - 1);
            return Decision::Allowed {
                remaining: self.remaining_hint.get() + left - 1,
                reset_ns: self.reset_hint.get(),
            };
        }
        if left > 0 {
            self.bucket.give_back(left, now);
            self.tokens.set(0);
        }
        let g = self.bucket.take_up_to(self.size, now);
        if g.granted == 0 {
            return Decision::Refused {
                retry_ns: g.wait_ns,
            };
        }
        self.tokens.set(g.granted - 1);
        self.taken_at.set(now);
        self.remaining_hint.set(g.remaining);
        self.reset_hint.set(g.reset_ns);
        Decision::Allowed {
            remaining: g.remaining + g.granted - 1,
            reset_ns: g.reset_ns,
        }
    }

    /// Spends one token from the lease if it holds a fresh one (no shared memory touched);
    /// `None` when a new lease is needed.
    pub fn take_local(&self, now: u64) -> Option<Decision> {
        self.last_used.set(now);
        let left = self.tokens.get();
        if left > 0 && now.saturating_sub(self.taken_at.get()) < LEASE_TTL_NS {
            self.tokens.set(left - 1);
            return Some(Decision::Allowed {
                remaining: self.remaining_hint.get() + left - 1,
                reset_ns: self.reset_hint.get(),
            });
        }
        // Stale tokens of a fleet-wide lease simply lapse (they were counted in Redis).
        self.tokens.set(0);
        None
    }

    /// Installs a lease granted elsewhere (by Redis) and spends its first token.
    pub fn fill(&self, granted: u64, remaining: u64, reset_ns: u64, now: u64) -> Decision {
        self.tokens.set(granted.saturating_sub(1));
        self.taken_at.set(now);
        self.remaining_hint.set(remaining);
        self.reset_hint.set(reset_ns);
        Decision::Allowed {
            remaining: remaining + granted.saturating_sub(1),
            reset_ns,
        }
    }

    /// Tokens asked for per lease.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Gives unspent tokens back if the lease is old (periodic sweep) or `force`d (the shard
    /// drops the lease).
    pub fn release(&self, now: u64, force: bool) {
        let left = self.tokens.get();
        if left > 0 && (force || now.saturating_sub(self.taken_at.get()) >= LEASE_TTL_NS) {
            self.bucket.give_back(left, now);
            self.tokens.set(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// N shards, each offered `demand` requests per millisecond, for `secs` seconds from a
    /// full bucket: returns the requests accepted in all.
    fn simulate(rate: Rate, shards: usize, secs: u64, demand: u64) -> u64 {
        let bucket = Arc::new(Bucket::new(rate));
        let leases: Vec<Lease> = (0..shards)
            .map(|_| Lease::new(bucket.clone(), shards))
            .collect();
        let start = 1000 * S;
        let mut accepted = 0;
        for ms in 0..secs * 1000 {
            let now = start + ms * 1_000_000;
            // Interleave the shards' requests within the millisecond, as real cores would.
            for k in 0..demand {
                for (i, l) in leases.iter().enumerate() {
                    let t =
                        now + (k * shards as u64 + i as u64) * 1_000_000 / (demand * shards as u64);
                    if let Decision::Allowed { .. } = l.take(t) {
                        accepted += 1;
                    }
                }
            }
            if ms % 100 == 0 {
                for l in &leases {
                    l.release(now, false);
                }
            }
        }
        accepted
    }

    fn check(rate: Rate, shards: usize, secs: u64, demand: u64) {
        let allowed = rate.burst + rate.rate * secs;
        let got = simulate(rate, shards, secs, demand);
        let slack = shards as u64 * lease_size(rate, shards);
        assert!(got <= allowed, "{rate:?} x{shards}: {got} > {allowed}");
        let floor = (allowed as f64 * 0.97) as u64;
        assert!(
            got + slack >= floor,
            "{rate:?} x{shards} over {secs}s: {got} accepted, expected at least {floor} - {slack}"
        );
    }

    #[test]
    fn shards_together_honour_one_rate_and_burst() {
        for shards in [1, 2, 4, 16] {
            check(
                Rate {
                    rate: 1000,
                    burst: 2000,
                },
                shards,
                3,
                5,
            );
            check(
                Rate {
                    rate: 10_000,
                    burst: 5000,
                },
                shards,
                2,
                20,
            );
            check(
                Rate {
                    rate: 50,
                    burst: 100,
                },
                shards,
                5,
                1,
            );
            check(
                Rate {
                    rate: 100,
                    burst: 1,
                },
                shards,
                2,
                1,
            );
        }
    }

    #[test]
    fn a_burst_from_idle_is_accepted_at_once() {
        let bucket = Arc::new(Bucket::new(Rate {
            rate: 100,
            burst: 500,
        }));
        let leases: Vec<Lease> = (0..4).map(|_| Lease::new(bucket.clone(), 4)).collect();
        let now = 10 * S;
        let mut accepted = 0;
        for i in 0..1000 {
            if let Decision::Allowed { .. } = leases[i % 4].take(now) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 500);
    }

    #[test]
    fn refusals_carry_the_wait() {
        let bucket = Arc::new(Bucket::new(Rate { rate: 1, burst: 1 }));
        let l = Lease::new(bucket, 1);
        assert!(matches!(l.take(S), Decision::Allowed { .. }));
        assert_eq!(l.take(S), Decision::Refused { retry_ns: S });
    }

    #[test]
    fn lease_sizes_stay_small_against_the_limit() {
        assert_eq!(
            lease_size(
                Rate {
                    rate: 10_000,
                    burst: 5000
                },
                2
            ),
            100
        );
        assert_eq!(
            lease_size(
                Rate {
                    rate: 50,
                    burst: 100
                },
                2
            ),
            1
        );
        assert_eq!(
            lease_size(
                Rate {
                    rate: 1_000_000,
                    burst: 1_000_000
                },
                1
            ),
            256
        );
    }
}
