//! A cache hit on the hot path: build the key from the parsed request, look it up in the
//! segmented stage cache, check freshness and render the answer's head — the body goes out
//! from the entry's `Bytes` (a refcount). Beside a naive baseline: one `Mutex<HashMap>`
//! keyed by a formatted `String`, whose hit copies the body into the answer, as a simple
//! in-process cache does. Bodies of 1 KiB and 64 KiB show what the copy costs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::internals::parse_request;
use tollgate::internals::Lifetime;
use tollgate::internals::{cache_key, hit_head};
use tollgate::internals::{CacheMode, Invalidation, KeyPart, StageCacheConfig as Cfg};
use tollgate::internals::{RequestCtx, RequestId};
use tollgate::internals::{StageCache, Stored, Val};

const HEAD: &[u8] = b"GET /pets?limit=10&page=2 HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench/1.0\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\n\r\n";
const HEADERS: &[u8] =
    b"content-type: application/json\r\ndate: Sun, 22 Nov 2026 10:00:00 GMT\r\netag: \"abc\"\r\n";

fn ctx() -> RequestCtx {
    let (len, parts) = parse_request(HEAD, 16 << 10).unwrap().unwrap();
    let head = parts.into_head(Bytes::copy_from_slice(&HEAD[..len]));
    RequestCtx::new(head, RequestId::generated(1, 2), Default::default())
}

/// Status, header block, body.
type NaiveEntry = (u16, Vec<u8>, Vec<u8>);

struct Naive {
    map: Mutex<HashMap<String, NaiveEntry>>,
}

fn bench(c: &mut Criterion) {
    let parts = vec![
        KeyPart::Query("limit".into()),
        KeyPart::Header("accept".into()),
    ];
    let cfg = Cfg {
        ttl: Duration::from_secs(300),
        capacity: 256 << 20,
        client_invalidation: Invalidation::Allow,
        unauthorized_invalidation: tollgate::internals::Unauthorized::Warn,
        mode: CacheMode::Gateway,
        max_entry: 1 << 20,
        stale_if_error: Duration::ZERO,
        lock_timeout: Duration::from_secs(5),
    };
    let mut g = c.benchmark_group("cache_hit");
    for size in [1usize << 10, 64 << 10] {
        let cache = StageCache::new("bench/prod".into(), &cfg, Default::default());
        let mut ctx = ctx();
        // 10,000 other entries, so the table is not trivially small.
        for i in 0..10_000 {
            cache.insert(
                format!("GET\0/other/{i}\0").into_bytes().into(),
                Val::Stored(Arc::new(entry(&cache, Bytes::from(vec![1u8; 100])))),
            );
        }
        let body = Bytes::from(vec![b'x'; size]);
        cache.insert(
            cache_key(&ctx, &parts, false).into_boxed_slice(),
            Val::Stored(Arc::new(entry(&cache, body.clone()))),
        );
        let naive = Naive {
            map: Mutex::new(HashMap::new()),
        };
        naive.map.lock().unwrap().insert(
            "GET /pets limit=10 accept=application/json".to_string(),
            (200, HEADERS.to_vec(), body.to_vec()),
        );
        let mut out = Vec::with_capacity(1024);
        g.bench_function(format!("segmented_zero_copy_{}k", size >> 10), |b| {
            b.iter(|| {
                out.clear();
                let key = cache_key(&ctx, &parts, false);
                let Some(Val::Stored(e)) = cache.get(&key) else {
                    panic!("miss")
                };
                let now = cache.now_ns();
                assert!(e.is_fresh(now, cfg.ttl));
                black_box(hit_head(&mut out, &mut ctx, &e, e.age_s(now), true));
                out.len()
            })
        });
        g.bench_function(format!("naive_mutex_hashmap_copy_{}k", size >> 10), |b| {
            b.iter(|| {
                out.clear();
                let key = format!(
                    "GET {} limit={} accept={}",
                    "/pets",
                    "10",
                    std::str::from_utf8(ctx.head.header(b"accept").unwrap()).unwrap()
                );
                let m = naive.map.lock().unwrap();
                let (status, headers, body) = m.get(black_box(&key)).unwrap();
                out.extend_from_slice(format!("HTTP/1.1 {status} OK\r\n").as_bytes());
                out.extend_from_slice(headers);
                out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
                out.len()
            })
        });
    }
    g.finish();
}

fn entry(c: &StageCache, body: Bytes) -> Stored {
    Stored {
        status: 200,
        reason: Bytes::from_static(b"OK"),
        headers: Bytes::from_static(HEADERS),
        body,
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
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
