//! The response cache: one per stage, bounded in bytes, segmented by key hash, coalesced.
//!
//! Storage and eviction are `quick_cache`'s: a segmented (sharded) table with an S3-FIFO-like
//! CLOCK-Pro policy (scan resistant) and a weigher, so `capacity` counts bytes — body, header
//! block, key and a fixed [`ENTRY_OVERHEAD`] per entry for the entry's own bookkeeping.
//! Values are `Arc`s whose body is a `Bytes`: a hit clones two pointers and writes the body
//! from the cache's memory. Concurrent misses are coalesced by [`flight::Flights`].
//!
//! A flush is O(1) for requests: it bumps the cache's epoch (entries of an older epoch are
//! misses from then on) and the control plane then drains the old entries segment by segment,
//! one entry per lock hold. TTLs are applied at lookup against the current configuration,
//! so a reload that shortens a TTL takes effect at once.

pub(crate) mod decisions;
pub(crate) mod flight;
pub(crate) mod policy;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

use crate::config::{CacheMode, StageCache as StageCacheCfg};
use flight::{Flights, Join};

/// Bytes counted per entry beyond its key, headers and body: the `Arc`ed entry struct, the
/// table slot and the policy's queue node (measured: see `tests/cache_memory.rs`), and the
/// two slots for compressed copies (empty until a compressing stage fills them).
pub(crate) const ENTRY_OVERHEAD: u64 = 464;

/// The cache's clock: monotonic nanoseconds plus an offset that tests (and drills) can move
/// forward instead of sleeping through a TTL.
#[derive(Debug, Default)]
pub struct CacheClock {
    offset_ns: AtomicU64,
}

impl CacheClock {
    pub fn now_ns(&self) -> u64 {
        crate::throttle::now_ns() + self.offset_ns.load(Ordering::Relaxed)
    }

    pub fn advance(&self, d: Duration) {
        self.offset_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// A stored answer.
#[derive(Debug)]
pub struct Stored {
    pub status: u16,
    pub reason: Bytes,
    /// End-to-end header lines ("name: value\r\n"), without framing, `Age` or `x-request-id`.
    pub headers: Bytes,
    pub body: Bytes,
    /// Cache clock at storage.
    pub stored_ns: u64,
    pub epoch: u64,
    pub lifetime: policy::Lifetime,
    pub etag: Option<Bytes>,
    pub last_modified: Option<Bytes>,
    /// The body compressed, per encoding (gzip, br), made on the first request that takes it.
    pub encoded: [std::sync::OnceLock<Bytes>; 2],
}

impl Stored {
    /// Current age in seconds (RFC 9111 4.2.3).
    pub fn age_s(&self, now_ns: u64) -> u64 {
        self.lifetime
            .initial_age
            .saturating_add(now_ns.saturating_sub(self.stored_ns) / 1_000_000_000)
    }

    /// Current age in nanoseconds (saturating: an origin's `Age` is at most 2^31 s).
    fn age_ns(&self, now_ns: u64) -> u64 {
        self.lifetime
            .initial_age
            .saturating_mul(1_000_000_000)
            .saturating_add(now_ns.saturating_sub(self.stored_ns))
    }

    /// Fresh for `ttl` (gateway mode) or for the origin's lifetime (http mode)?
    pub fn is_fresh(&self, now_ns: u64, ttl: Duration) -> bool {
        if self.lifetime.no_cache {
            return false;
        }
        let lifetime = self.lifetime.fresh_for.unwrap_or(ttl).min(ttl);
        let age_ns = self.age_ns(now_ns);
        (age_ns as u128) < lifetime.as_nanos()
    }

    /// Fresh for `ttl` (or the origin's lifetime), with `min_fresh` seconds to spare.
    pub fn fresh_for_at_least(&self, now_ns: u64, ttl: Duration, min_fresh: u64) -> bool {
        if self.lifetime.no_cache {
            return false;
        }
        let lifetime = self.lifetime.fresh_for.unwrap_or(ttl).min(ttl);
        let age_ns = self.age_ns(now_ns);
        (age_ns as u128) + (min_fresh as u128) * 1_000_000_000 < lifetime.as_nanos()
    }

    /// How long past freshness this entry has been stale, in nanoseconds.
    pub fn stale_for_ns(&self, now_ns: u64, ttl: Duration) -> u64 {
        let lifetime = self.lifetime.fresh_for.unwrap_or(ttl).min(ttl);
        let age_ns = self.age_ns(now_ns);
        age_ns.saturating_sub(lifetime.as_nanos() as u64)
    }

    pub fn can_revalidate(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }

    fn weight(&self) -> u64 {
        (self.reason.len()
            + self.headers.len()
            + self.body.len()
            + self.etag.as_ref().map_or(0, Bytes::len)
            + self.last_modified.as_ref().map_or(0, Bytes::len)) as u64
    }
}

/// What a key maps to: an answer, or — for answers that vary — the request headers that
/// select the variant, whose entries live under the key extended with those headers' values.
#[derive(Debug, Clone)]
pub enum Val {
    Stored(Arc<Stored>),
    Vary(Arc<VaryMarker>),
}

#[derive(Debug)]
pub struct VaryMarker {
    /// Lower-cased header names.
    pub names: Vec<Box<[u8]>>,
    pub epoch: u64,
}

impl Val {
    fn epoch(&self) -> u64 {
        match self {
            Val::Stored(s) => s.epoch,
            Val::Vary(v) => v.epoch,
        }
    }
}

#[derive(Clone)]
struct Weigh;

impl Weighter<Box<[u8]>, Val> for Weigh {
    fn weight(&self, key: &Box<[u8]>, val: &Val) -> u64 {
        let v = match val {
            Val::Stored(s) => s.weight(),
            Val::Vary(m) => m.names.iter().map(|n| n.len() as u64 + 16).sum(),
        };
        key.len() as u64 + v + ENTRY_OVERHEAD
    }
}

/// Collects what an insert pushed out, to be counted (see [`StageCache::insert`]) and dropped
/// after the segment lock is released.
#[derive(Clone)]
struct Evictions;

impl Lifecycle<Box<[u8]>, Val> for Evictions {
    type RequestState = Vec<(Box<[u8]>, Val)>;

    fn on_evict(&self, state: &mut Self::RequestState, key: Box<[u8]>, val: Val) {
        state.push((key, val));
    }
}

/// Per-stage counters (relaxed atomics; read by the admin API and the metrics export).
#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bypasses: AtomicU64,
    pub refreshes: AtomicU64,
    pub revalidated: AtomicU64,
    pub stale_served: AtomicU64,
    pub not_stored: AtomicU64,
    pub too_large: AtomicU64,
    pub coalesced: AtomicU64,
    /// Unsafe requests that dropped stored entries (RFC 9111 4.4).
    pub invalidated: AtomicU64,
    pub evictions: Arc<AtomicU64>,
}

impl Stats {
    pub fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

type Store = Cache<Box<[u8]>, Val, Weigh, ahash::RandomState, Evictions>;

/// One stage's cache.
pub struct StageCache {
    /// "api/stage".
    pub name: String,
    pub mode: CacheMode,
    /// The store's segments (see [`StageCache::segments_for`]).
    segments: usize,
    store: Store,
    flights: Arc<Flights>,
    epoch: AtomicU64,
    /// Purges made so far, and the latest of them (their number, decoded path, exact): an
    /// answer fetched before a purge of its path is not stored after it.
    purged: AtomicU64,
    // Shared by every shard; locked by a purge, and by an insert only when a purge was made
    // during its fetch (a miss reads `purged` alone).
    #[allow(clippy::disallowed_types)]
    recent_purges: std::sync::Mutex<std::collections::VecDeque<(u64, Vec<u8>, bool)>>,
    capacity: AtomicU64,
    pub clock: Arc<CacheClock>,
    pub stats: Stats,
    hasher: ahash::RandomState,
}

impl std::fmt::Debug for StageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageCache")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl StageCache {
    /// Segments hold at least 8 of the largest entries each; at most 64 segments, a power of
    /// two. (The store refuses, without a word, an entry larger than one segment.)
    fn segments_for(cfg: &StageCacheCfg) -> usize {
        let segments = (cfg.capacity / (8 * cfg.max_entry.max(1))).clamp(1, 64);
        1usize << (63 - segments.leading_zeros())
    }

    pub fn new(name: String, cfg: &StageCacheCfg, clock: Arc<CacheClock>) -> StageCache {
        let segments = Self::segments_for(cfg);
        let stats = Stats::default();
        let store = Cache::with_options(
            OptionsBuilder::new()
                .shards(segments)
                .estimated_items_capacity((cfg.capacity / 2048).max(64) as usize)
                .weight_capacity(cfg.capacity)
                .build()
                .expect("cache options"),
            Weigh,
            ahash::RandomState::with_seeds(3, 5, 7, 11),
            Evictions,
        );
        StageCache {
            name,
            mode: cfg.mode,
            segments,
            store,
            flights: Arc::new(Flights::new(segments)),
            epoch: AtomicU64::new(0),
            purged: AtomicU64::new(0),
            recent_purges: Default::default(),
            capacity: AtomicU64::new(cfg.capacity),
            clock,
            stats,
            hasher: ahash::RandomState::with_seeds(13, 17, 19, 23),
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The value under `key`, unless a flush has made it obsolete.
    pub fn get(&self, key: &[u8]) -> Option<Val> {
        let v = self.store.get(key)?;
        (v.epoch() >= self.epoch()).then_some(v)
    }

    /// Stores `val` under `key` (refused silently when it is heavier than a segment allows).
    /// Entries pushed out for room are evictions; the entry it replaces under its own key (a
    /// refresh, a revalidation) and a refused insert are not.
    pub fn insert(&self, key: Box<[u8]>, val: Val) {
        if val.epoch() < self.epoch() {
            return;
        }
        let mut gone = Vec::new();
        let own = key.clone();
        self.store.insert_with_lifecycle(key, val, &mut gone);
        let evicted = gone.iter().filter(|(k, _)| *k != own).count() as u64;
        if evicted > 0 {
            self.stats.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// How many purges were made: what a fetch notes when it starts, for
    /// [`StageCache::insert_fetched`].
    pub fn purges(&self) -> u64 {
        self.purged.load(Ordering::Acquire)
    }

    /// [`StageCache::insert`] of an answer whose fetch started when [`StageCache::purges`] was
    /// `started`: refused when a purge made since takes its path (it would bring back what
    /// the purge, answered already, removed), or when too many were made to tell.
    pub fn insert_fetched(&self, key: Box<[u8]>, val: Val, started: u64) {
        if self.purges() != started {
            let recent = self.recent_purges.lock().unwrap_or_else(|e| e.into_inner());
            let known_since = recent.front().is_some_and(|(n, _, _)| *n <= started + 1);
            let path = key_path(&key).map(decoded_path).unwrap_or_default();
            let taken = recent
                .iter()
                .filter(|(n, _, _)| *n > started)
                .any(|(_, want, exact)| path_matches(&path, want, *exact));
            if taken || !known_since {
                return;
            }
        }
        self.insert(key, val);
    }

    /// Notes a purge of `path` (decoded) made now, for [`StageCache::insert_fetched`].
    pub fn note_purge(&self, path: &[u8], exact: bool) {
        const KEPT: usize = 64;
        let mut recent = self.recent_purges.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.purged.fetch_add(1, Ordering::AcqRel) + 1;
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back((n, merge_slashes(path).into_owned(), exact));
    }

    /// Leads or follows the fetch for `key`.
    pub fn join(&self, key: &[u8]) -> Join {
        self.flights.join(self.hasher.hash_one(key))
    }

    /// Applies a reloaded configuration's capacity.
    pub fn set_capacity(&self, capacity: u64) {
        if self.capacity.swap(capacity, Ordering::Relaxed) != capacity {
            self.store.set_capacity(capacity);
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Bytes in use, as weighed against `capacity`.
    pub fn weight(&self) -> u64 {
        self.store.weight()
    }

    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Removes the entry (or Vary marker) under `key`; whether there was one.
    pub fn remove(&self, key: &[u8]) -> bool {
        self.store.remove(key).is_some()
    }

    /// Makes every entry obsolete at once, then frees them one at a time. Returns how many
    /// were dropped.
    pub fn flush(&self) -> usize {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.store.drain().count()
    }

    /// Removes the entries of one path (`exact`) or of every path under a prefix (the path
    /// itself and what lies below it: `/a` takes `/a` and `/a/b`, not `/ab`), for every
    /// method, key parameter and variant. `path` is decoded; an entry's path is compared
    /// percent-decoded too (`/a%20b` as sent is `/a b`). Returns how many were removed.
    pub fn purge(&self, path: &str, exact: bool) -> usize {
        // Paths compared as routing reads them (empty segments merged): a purge takes every
        // spelling of a path (`/p//1`, `/p/1/`), each an entry of its own.
        self.note_purge(path.as_bytes(), exact);
        let want = merge_slashes(path.as_bytes());
        let want = &want[..];
        let mut victims: Vec<Box<[u8]>> = Vec::new();
        for (k, _) in self.store.iter() {
            let Some(p) = key_path(&k) else { continue };
            if path_matches(&decoded_path(p), want, exact) {
                victims.push(k);
            }
        }
        victims
            .iter()
            .filter(|k| self.store.remove(&k[..]).is_some())
            .count()
    }

    pub fn stats_json(&self) -> serde_json::Value {
        let s = &self.stats;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "stage": self.name,
            "mode": self.mode,
            "capacity": self.capacity(),
            "bytes": self.weight(),
            "entries": self.len(),
            "hits": l(&s.hits),
            "misses": l(&s.misses),
            "bypasses": l(&s.bypasses),
            "refreshes": l(&s.refreshes),
            "revalidated": l(&s.revalidated),
            "stale_served": l(&s.stale_served),
            "not_stored": l(&s.not_stored),
            "too_large": l(&s.too_large),
            "coalesced": l(&s.coalesced),
            "invalidated": l(&s.invalidated),
            "evictions": l(&s.evictions),
        })
    }
}

/// A path with its empty segments merged (`//`, a trailing `/`), as routing reads it.
/// Borrowed when there is nothing to merge.
pub(crate) fn merge_slashes(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let clean = path.len() > 1
        && path[0] == b'/'
        && !path.ends_with(b"/")
        && !path.windows(2).any(|w| w == b"//");
    if clean || path == b"/" {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = Vec::with_capacity(path.len());
    for seg in path.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    std::borrow::Cow::Owned(out)
}

/// The path part of a key: keys are "METHOD\0/path\0params...".
/// An entry's path as a purge compares it: percent-decoded, empty segments merged.
pub(crate) fn decoded_path(p: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::with_capacity(p.len());
    crate::syntax::path::path_decode_into(p, &mut decoded);
    merge_slashes(&decoded).into_owned()
}

/// Whether a purge of `want` (`exact`, or the path and what lies below it) takes `path`.
fn path_matches(path: &[u8], want: &[u8], exact: bool) -> bool {
    if exact {
        path == want
    } else {
        path.strip_prefix(want)
            .is_some_and(|rest| rest.is_empty() || want.ends_with(b"/") || rest.starts_with(b"/"))
    }
}

fn key_path(k: &[u8]) -> Option<&[u8]> {
    let rest = &k[k.iter().position(|&b| b == 0)? + 1..];
    Some(&rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())])
}

/// Caches that survive reloads, keyed by (API, stage). A reload keeps a stage's cache when
/// the mode is unchanged (applying a new capacity in place) and starts a fresh one otherwise.
#[derive(Debug, Default, Clone)]
pub(crate) struct CacheRegistry {
    pub clock: Arc<CacheClock>,
    pub caches: AHashMap<(String, String), Arc<StageCache>>,
}

impl CacheRegistry {
    /// The cache for a stage under `cfg`, reusing the previous one where it fits.
    pub(crate) fn take(
        &self,
        fresh: &mut AHashMap<(String, String), Arc<StageCache>>,
        api: &str,
        stage: &str,
        cfg: &StageCacheCfg,
    ) -> Arc<StageCache> {
        let key = (api.to_string(), stage.to_string());
        // Taken already by this compile: a canary sharing its stage's cache.
        if let Some(c) = fresh.get(&key) {
            return c.clone();
        }
        let c = match self.caches.get(&key) {
            // Kept across a reload while its segments still hold the largest entry (more,
            // smaller segments than the new settings want would refuse entries well under
            // `max_entry`); else a new one, empty.
            Some(c) if c.mode == cfg.mode && c.segments <= StageCache::segments_for(cfg) => {
                c.set_capacity(cfg.capacity);
                c.clone()
            }
            _ => Arc::new(StageCache::new(
                format!("{api}/{stage}"),
                cfg,
                self.clock.clone(),
            )),
        };
        fresh.insert(key, c.clone());
        c
    }
}

/// The response caches' counters, one series per stage.
pub(crate) fn render_metrics(out: &mut String, caches: &[&Arc<StageCache>]) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering;
    if caches.is_empty() {
        return;
    }
    fn l(c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    type Pick = fn(&StageCache) -> u64;
    let series: [(&str, &str, &str, Pick); 8] = [
        (
            "cache_hits_total",
            "counter",
            "Answers served from the stage cache.",
            |c| l(&c.stats.hits),
        ),
        (
            "cache_misses_total",
            "counter",
            "Cacheable requests the stage cache did not have.",
            |c| l(&c.stats.misses),
        ),
        (
            "cache_bypasses_total",
            "counter",
            "Requests on cached routes that went past the cache.",
            |c| l(&c.stats.bypasses),
        ),
        (
            "cache_stale_served_total",
            "counter",
            "Stale answers served while the upstream failed (stale_if_error).",
            |c| l(&c.stats.stale_served),
        ),
        (
            "cache_evictions_total",
            "counter",
            "Entries evicted to stay within capacity.",
            |c| l(&c.stats.evictions),
        ),
        (
            "cache_invalidations_total",
            "counter",
            "Entries removed by unsafe methods on their URI.",
            |c| l(&c.stats.invalidated),
        ),
        (
            "cache_bytes",
            "gauge",
            "Bytes the stage cache holds.",
            |c| c.weight(),
        ),
        (
            "cache_capacity_bytes",
            "gauge",
            "The stage cache's capacity in bytes.",
            |c| c.capacity(),
        ),
    ];
    for (name, kind, help, pick) in series {
        let _ = writeln!(out, "# HELP tollgate_{name} {help}");
        let _ = writeln!(out, "# TYPE tollgate_{name} {kind}");
        for c in caches {
            let _ = writeln!(out, "tollgate_{name}{{stage=\"{}\"}} {}", c.name, pick(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Invalidation;

    fn cfg(capacity: u64) -> StageCacheCfg {
        StageCacheCfg {
            ttl: Duration::from_secs(60),
            capacity,
            client_invalidation: Invalidation::Allow,
            unauthorized_invalidation: crate::config::Unauthorized::Warn,
            mode: CacheMode::Gateway,
            max_entry: capacity / 8,
            stale_if_error: Duration::ZERO,
            lock_timeout: Duration::from_secs(1),
        }
    }

    fn entry(c: &StageCache, body: usize) -> Val {
        Val::Stored(Arc::new(Stored {
            status: 200,
            reason: Bytes::from_static(b"OK"),
            headers: Bytes::from_static(b"content-type: text/plain\r\n"),
            body: Bytes::from(vec![b'x'; body]),
            stored_ns: c.now_ns(),
            epoch: c.epoch(),
            lifetime: policy::Lifetime {
                fresh_for: None,
                initial_age: 0,
                no_cache: false,
                must_revalidate: false,
            },
            etag: None,
            last_modified: None,
            encoded: Default::default(),
        }))
    }

    #[test]
    fn weight_stays_under_capacity_and_evicts() {
        let c = StageCache::new("a/s".into(), &cfg(1 << 20), Default::default());
        for i in 0..2000 {
            c.insert(
                format!("GET\0/k/{i}\0").into_bytes().into(),
                entry(&c, 1000),
            );
            assert!(c.weight() <= c.capacity());
        }
        assert!(c.stats.evictions.load(Ordering::Relaxed) > 0);
        assert!(c.len() < 2000 && c.len() > 500, "{}", c.len());
    }

    #[test]
    fn an_entry_replaced_under_its_own_key_is_no_eviction() {
        let c = StageCache::new("a/s".into(), &cfg(1 << 20), Default::default());
        for _ in 0..5 {
            c.insert(b"GET\0/same\0".to_vec().into(), entry(&c, 100));
        }
        assert_eq!(c.len(), 1);
        assert_eq!(c.stats.evictions.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn flush_hides_at_once_and_frees() {
        let c = StageCache::new("a/s".into(), &cfg(1 << 20), Default::default());
        let stale = entry(&c, 10);
        c.insert(b"GET\0/a\0".to_vec().into(), entry(&c, 10));
        assert!(c.get(b"GET\0/a\0").is_some());
        assert_eq!(c.flush(), 1);
        assert!(c.get(b"GET\0/a\0").is_none());
        assert_eq!(c.weight(), 0);
        // An answer fetched before the flush is not stored after it.
        c.insert(b"GET\0/a\0".to_vec().into(), stale);
        assert!(c.get(b"GET\0/a\0").is_none());
    }

    #[test]
    fn slashes_merge_as_routing_merges_them() {
        for (path, want) in [
            ("/", "/"),
            ("", "/"),
            ("//", "/"),
            ("/p/1", "/p/1"),
            ("/p//1", "/p/1"),
            ("//p/1", "/p/1"),
            ("/p/1/", "/p/1"),
            ("/p///1//", "/p/1"),
        ] {
            assert_eq!(
                &merge_slashes(path.as_bytes())[..],
                want.as_bytes(),
                "{path:?}"
            );
        }
        assert!(matches!(
            merge_slashes(b"/p/1"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn purge_by_path_and_prefix() {
        let c = StageCache::new("a/s".into(), &cfg(1 << 20), Default::default());
        for k in [
            "GET\0/pets\0",
            "GET\0/pets/1\0q:a=1\0",
            "GET\0/pets/2\0",
            "GET\0/petshop\0",
            "GET\0/a%20b\0",
            "GET\0/a+b\0",
            "GET\0/toys\0",
        ] {
            c.insert(k.as_bytes().into(), entry(&c, 10));
        }
        assert_eq!(c.purge("/pets/1", true), 1);
        // A prefix takes the path and what lies below it, not `/petshop`.
        assert_eq!(c.purge("/pets", false), 2);
        assert_eq!(c.len(), 4);
        // Paths are compared decoded: the admin API's parameter is decoded, `+` in a path is
        // itself.
        assert_eq!(c.purge("/a b", true), 1);
        assert_eq!(c.purge("/a+b", true), 1);
        assert_eq!(c.purge("/", false), 2);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn freshness_follows_the_clock() {
        let clock = Arc::new(CacheClock::default());
        let c = StageCache::new("a/s".into(), &cfg(1 << 20), clock.clone());
        let Val::Stored(s) = entry(&c, 1) else {
            unreachable!()
        };
        let ttl = Duration::from_secs(60);
        assert!(s.is_fresh(c.now_ns(), ttl));
        clock.advance(Duration::from_secs(61));
        assert!(!s.is_fresh(c.now_ns(), ttl));
        assert!(s.stale_for_ns(c.now_ns(), ttl) >= 1_000_000_000);
        assert!(s.age_s(c.now_ns()) >= 61);
    }

    /// An entry stored with the largest age there is stays stale as the clock runs on: the
    /// age saturates rather than wrapping round to fresh.
    #[test]
    fn an_entry_of_the_largest_age_stays_stale() {
        let clock = Arc::new(CacheClock::default());
        let c = StageCache::new("a/s".into(), &cfg(1 << 20), clock.clone());
        let Val::Stored(s) = entry(&c, 1) else {
            unreachable!()
        };
        let mut s = Arc::try_unwrap(s).unwrap_or_else(|_| unreachable!());
        s.lifetime.initial_age = u64::MAX;
        let ttl = Duration::from_secs(60);
        clock.advance(Duration::from_secs(2));
        assert!(!s.is_fresh(c.now_ns(), ttl));
        assert!(!s.fresh_for_at_least(c.now_ns(), ttl, 1));
        assert!(s.stale_for_ns(c.now_ns(), ttl) > 1_000_000_000);
        assert_eq!(s.age_s(c.now_ns()), u64::MAX);
    }
}
