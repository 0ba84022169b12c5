//! The cache's memory stays within `capacity` plus a small documented overhead: this test
//! counts every byte the process allocates while a stage cache is filled far past its
//! capacity with answers of several sizes, and compares the live heap with the capacity.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tollgate::internals::Lifetime;
use tollgate::internals::{CacheMode, Invalidation, StageCacheConfig as Cfg};
use tollgate::internals::{StageCache, Stored, Val};

struct Counting;

// SAFETY: every method forwards to the system allocator with the same arguments and only
// adds a relaxed counter update; a counting allocator cannot be written without `unsafe`.

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn stored(c: &StageCache, body: usize) -> Val {
    Val::Stored(Arc::new(Stored {
        status: 200,
        reason: Bytes::from_static(b"OK"),
        headers: Bytes::from(
            b"content-type: application/json\r\ndate: Sun, 22 Nov 2026 10:00:00 GMT\r\n".to_vec(),
        ),
        body: Bytes::from(vec![7u8; body]),
        stored_ns: c.now_ns(),
        epoch: c.epoch(),
        lifetime: Lifetime {
            fresh_for: None,
            initial_age: 0,
            no_cache: false,
            must_revalidate: false,
        },
        etag: Some(Bytes::from_static(b"\"abc\"")),
        last_modified: None,
        encoded: Default::default(),
    }))
}

fn fill(sizes: [usize; 4]) {
    const CAPACITY: u64 = 8 << 20;
    let cfg = Cfg {
        ttl: Duration::from_secs(300),
        capacity: CAPACITY,
        client_invalidation: Invalidation::Allow,
        unauthorized_invalidation: tollgate::internals::Unauthorized::Warn,
        mode: CacheMode::Gateway,
        max_entry: 1 << 20,
        stale_if_error: Duration::ZERO,
        lock_timeout: Duration::from_secs(5),
    };
    let before = LIVE.load(Ordering::Relaxed);
    let cache = StageCache::new("api/stage".into(), &cfg, Default::default());
    // Small, medium and large answers, three times the capacity in all.
    let mut written = 0u64;
    let mut i = 0u64;
    while written < 3 * CAPACITY {
        let size = sizes[(i % 4) as usize];
        let key = format!("GET\0/items/{i}\0q:limit=10\0").into_bytes();
        cache.insert(key.into_boxed_slice(), stored(&cache, size));
        written += size as u64;
        i += 1;
        assert!(cache.weight() <= CAPACITY);
    }
    let heap = (LIVE.load(Ordering::Relaxed) - before) as u64;
    let entries = cache.len() as u64;
    eprintln!(
        "sizes {sizes:?}: capacity {CAPACITY} B, weighed {} B, live heap {heap} B, {entries} entries, {} B over capacity",
        cache.weight(),
        heap.saturating_sub(CAPACITY)
    );
    // The documented bound: capacity plus 5 % (table, policy queues, ghost list).
    assert!(
        heap <= CAPACITY + CAPACITY / 20,
        "heap {heap} B for capacity {CAPACITY} B"
    );
    // And the cache is actually used, not starved by its weigher.
    assert!(
        cache.weight() >= CAPACITY * 8 / 10,
        "weighed {} B",
        cache.weight()
    );
    drop(cache);
    let after = (LIVE.load(Ordering::Relaxed) - before).max(0);
    assert!(
        after < 64 << 10,
        "{after} B still allocated after the cache was dropped"
    );
}

#[test]
fn heap_stays_within_capacity_plus_overhead() {
    // Tiny answers (the overhead per entry dominates), then a mix of sizes.
    fill([60, 60, 60, 60]);
    fill([60, 700, 4 << 10, 50 << 10]);
}
