//! Request-head parsing: Tollgate's parser (httparse plus framing checks, ranges into one
//! buffer, no copies) against a naive baseline that splits lines and allocates a `String` per
//! header, as a hand-rolled parser often does.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::internals::parse_request;

const HEAD: &[u8] = b"GET /svc200/items/12345?limit=10 HTTP/1.1\r\nHost: api.example.test\r\nUser-Agent: wrk/4.2\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\nX-Request-Id: 9f1c1a2b3c4d5e6f\r\nConnection: keep-alive\r\n\r\n";

fn naive(buf: &[u8]) -> usize {
    let text = String::from_utf8_lossy(buf);
    let mut lines = text.split("\r\n");
    let request_line: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split(' ')
        .map(str::to_string)
        .collect();
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    request_line.len() + headers.len()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_head_parse");
    g.bench_function("tollgate", |b| {
        b.iter(|| parse_request(black_box(HEAD), 16 << 10).unwrap().unwrap().0)
    });
    g.bench_function("naive_split_and_allocate", |b| {
        b.iter(|| naive(black_box(HEAD)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
