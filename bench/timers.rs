//! A shard's timers per proxied request: two armed (say the header or idle timeout and the
//! upstream's) and cancelled when the answer comes, among `live` other timers (idle
//! connections). The runtime's timer wheel (`tollgate::rt::wheel`) against the ordered map it
//! replaced (`BTreeMap<(deadline, seq), Waker>`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate::rt::wheel::Wheel;

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn timers(c: &mut Criterion) {
    let waker = Waker::from(Arc::new(Noop));
    let mut g = c.benchmark_group("two timers armed and cancelled");
    for live in [100u64, 10_000, 100_000] {
        g.bench_with_input(BenchmarkId::new("btree", live), &live, |b, &live| {
            let base = Instant::now();
            let mut m: BTreeMap<(Instant, u64), Waker> = BTreeMap::new();
            for i in 0..live {
                m.insert((base + Duration::from_millis(60_000 + i), i), waker.clone());
            }
            let mut seq = live;
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let now = base + Duration::from_micros(i);
                let k1 = (now + Duration::from_secs(30), seq);
                let k2 = (now + Duration::from_secs(60), seq + 1);
                seq += 2;
                m.insert(k1, waker.clone());
                m.insert(k2, waker.clone());
                black_box(m.remove(&k1));
                black_box(m.remove(&k2));
            })
        });
        g.bench_with_input(BenchmarkId::new("wheel", live), &live, |b, &live| {
            let base = Instant::now();
            let mut w = Wheel::new();
            for i in 0..live {
                w.insert(base + Duration::from_millis(60_000 + i), &waker);
            }
            let mut wake = Vec::new();
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                let now = base + Duration::from_micros(i);
                let a = w.insert(now + Duration::from_secs(30), &waker);
                let b = w.insert(now + Duration::from_secs(60), &waker);
                black_box(w.poll(a, &waker));
                w.remove(a);
                w.remove(b);
                // A turn every 16 requests, as under load.
                if i.is_multiple_of(16) {
                    w.advance(now, &mut wake);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, timers);
criterion_main!(benches);
