//! A node's cache of external authorizers' answers: one per authorizer, shared by every
//! shard (an identity costs one call per `ttl` per node, not per shard), bounded in bytes,
//! with concurrent misses for one identity waiting for a single call ([`Flights`]), whose
//! result (a decision, or the failure) the call's leader hands to them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flight::Flights;
use crate::auth::external::Decision;

/// Bytes of answers kept per authorizer.
const CAPACITY: u64 = 16 << 20;

/// What a call's leader hands the requests that waited for it: the decision, or why there is
/// none (the authorizer failed, timed out, or answered 401 or 403).
pub(crate) type CallResult = Result<Arc<Decision>, crate::error::Error>;

pub(crate) struct Entry {
    /// The identity values, to tell two identities whose hashes meet.
    key: Box<[u8]>,
    expires: Instant,
    decision: Arc<Decision>,
    weight: u64,
}

#[derive(Clone)]
struct ByWeight;

impl quick_cache::Weighter<u64, Arc<Entry>> for ByWeight {
    fn weight(&self, _: &u64, v: &Arc<Entry>) -> u64 {
        v.weight
    }
}

pub(crate) struct DecisionCache {
    entries: quick_cache::sync::Cache<u64, Arc<Entry>, ByWeight>,
    pub(crate) flights: Arc<Flights<CallResult>>,
    hasher: ahash::RandomState,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DecisionCache({} entries)", self.entries.len())
    }
}

impl Default for DecisionCache {
    fn default() -> Self {
        DecisionCache {
            entries: quick_cache::sync::Cache::with_weighter(1024, CAPACITY, ByWeight),
            flights: Arc::new(Flights::new(16)),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl DecisionCache {
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The answer for `key`, while it is fresh.
    pub(crate) fn get(&self, hash: u64, key: &[u8], now: Instant) -> Option<Arc<Decision>> {
        let e = self.entries.get(&hash)?;
        if *e.key != *key {
            return None;
        }
        if now >= e.expires {
            self.entries.remove(&hash);
            return None;
        }
        Some(e.decision.clone())
    }

    pub(crate) fn insert(&self, hash: u64, key: &[u8], decision: Arc<Decision>, ttl: Duration) {
        let weight = key.len() as u64 + decision.weight() + 64;
        self.entries.insert(
            hash,
            Arc::new(Entry {
                key: key.into(),
                expires: Instant::now() + ttl,
                decision,
                weight,
            }),
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_count_for_their_identity_until_they_expire() {
        let c = DecisionCache::default();
        let d = Arc::new(Decision::parse(br#"{"isAuthorized": true}"#).unwrap());
        let now = Instant::now();
        let h = c.hash(b"alice");
        assert!(c.get(h, b"alice", now).is_none());
        c.insert(h, b"alice", d.clone(), Duration::from_secs(60));
        assert!(c.get(h, b"alice", now).is_some());
        assert!(
            c.get(h, b"bob", now).is_none(),
            "same hash, another identity"
        );
        assert!(c.get(h, b"alice", now + Duration::from_secs(61)).is_none());
        assert_eq!(c.len(), 0, "an expired answer is dropped");
        // Bounded: a flood of identities keeps it within its bytes.
        for i in 0..200_000u32 {
            let k = i.to_be_bytes();
            c.insert(c.hash(&k), &k, d.clone(), Duration::from_secs(60));
        }
        assert!((c.len() as u64) < CAPACITY / 100, "{}", c.len());
    }
}
