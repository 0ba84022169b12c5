//! A throttle decision on the hot path: a shard spending its lease on a global GCRA bucket
//! (no atomic operation while the lease lasts), beside a naive baseline that keeps every
//! bucket in a `Mutex<HashMap<String, _>>` refilled on each request, as a shared in-process
//! limiter does. Also the raw CAS take on the global bucket that a lease refill costs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::internals::{Bucket, Rate};
use tollgate::internals::{Decision, Lease};

struct Naive {
    buckets: Mutex<HashMap<String, (f64, u64)>>,
    rate: f64,
    burst: f64,
}

impl Naive {
    fn allow(&self, key: &str, now: u64) -> bool {
        let mut m = self.buckets.lock().unwrap();
        let e = m.entry(key.to_string()).or_insert((self.burst, now));
        let elapsed = (now - e.1) as f64 / 1e9;
        e.0 = (e.0 + elapsed * self.rate).min(self.burst);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

fn bench(c: &mut Criterion) {
    // A limit that never refuses at this rate of calls: the cost of saying yes.
    let rate = Rate {
        rate: 1_000_000_000,
        burst: 1_000_000_000,
    };
    let bucket = Arc::new(Bucket::new(rate));
    let lease = Lease::new(bucket.clone(), 2);
    let naive = Naive {
        buckets: Mutex::new(HashMap::new()),
        rate: 1e9,
        burst: 1e9,
    };
    let mut now = 1_000_000_000u64;
    let mut g = c.benchmark_group("throttle_decision");
    g.bench_function("lease_on_gcra_bucket", |b| {
        b.iter(|| {
            now += 1;
            matches!(lease.take(black_box(now)), Decision::Allowed { .. })
        })
    });
    g.bench_function("global_bucket_cas_take", |b| {
        b.iter(|| {
            now += 1;
            bucket.take_up_to(black_box(1), now).granted
        })
    });
    g.bench_function("naive_mutex_hashmap", |b| {
        b.iter(|| {
            now += 1;
            naive.allow(black_box("route:shop/prod/GET /pets"), now)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
