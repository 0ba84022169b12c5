//! Route matching in a 1,000-route table: the trie against a naive baseline that tries every
//! route's pattern in turn (what a regex-list router does).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::internals::normalise;
use tollgate::internals::Method;
use tollgate::internals::{parse_route_path, MethodSel, Seg};
use tollgate::internals::{Lookup, Trie};

fn routes() -> Vec<(Method, String)> {
    let mut v = Vec::new();
    for i in 0..250 {
        v.push((Method::Get, format!("/svc{i}/items")));
        v.push((Method::Get, format!("/svc{i}/items/{{id}}")));
        v.push((Method::Post, format!("/svc{i}/items")));
        v.push((Method::Delete, format!("/svc{i}/items/{{id}}/tags/{{tag}}")));
    }
    v
}

fn naive_match<'a>(
    table: &'a [(Method, Vec<Seg>, usize)],
    m: Method,
    path: &[&str],
) -> Option<&'a usize> {
    table.iter().find_map(|(rm, segs, v)| {
        if *rm != m || segs.len() != path.len() {
            return None;
        }
        segs.iter()
            .zip(path)
            .all(|(s, p)| match s {
                Seg::Lit(l) => l == p,
                _ => true,
            })
            .then_some(v)
    })
}

fn bench(c: &mut Criterion) {
    let mut trie = Trie::default();
    let mut naive = Vec::new();
    for (i, (m, p)) in routes().into_iter().enumerate() {
        let segs = parse_route_path(&p).unwrap();
        trie.insert(MethodSel::One(m), &segs, i).unwrap();
        naive.push((m, segs, i));
    }
    let path = normalise(b"/svc200/items/12345").unwrap();
    let parts: Vec<&str> = path.iter().collect();
    let mut g = c.benchmark_group("route_match_1000");
    g.bench_function("trie", |b| {
        b.iter(|| match trie.lookup(Method::Get, black_box(&path).view()) {
            Lookup::Found(v, _) => *v,
            _ => usize::MAX,
        })
    });
    g.bench_function("naive_linear_scan", |b| {
        b.iter(|| naive_match(&naive, Method::Get, black_box(&parts)).copied())
    });
    g.finish();
    c.bench_function("path_normalise", |b| {
        b.iter(|| {
            normalise(black_box(b"/svc200/items/a%20b/c"))
                .unwrap()
                .len()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
