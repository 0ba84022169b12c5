//! What recording one request costs the shard that served it: its per-route figures (status
//! class, latency and integration-latency histograms, cache, bytes) and its access-log line
//! rendered into the shard's buffer, in the built-in JSON format and in CLF.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::internals::{LogFormat, LogLine, RouteCells, Sample};

fn bench(c: &mut Criterion) {
    let cells = RouteCells::default();
    let mut n = 0u64;
    c.bench_function("route figures: one request", |b| {
        b.iter(|| {
            n = n.wrapping_add(137);
            cells.record(black_box(&Sample {
                status: 200,
                latency_us: 180 + n % 900,
                integration_us: Some(120 + n % 500),
                cache: None,
                refusal: None,
                bytes_in: 92,
                bytes_out: 311,
            }))
        })
    });
    let line = LogLine {
        request_id: b"5f0c3a9e1b2d4c6f8a0b1c2d3e4f5a6b",
        source_ip: Some("10.1.2.3".parse().unwrap()),
        user_agent: Some(b"wrk/4.2.0 (linux)"),
        time_ms: 1_796_072_290_123,
        method: Some("GET"),
        route_key: Some("GET /pets/{petId}"),
        path: Some(b"/pets/42"),
        protocol: Some("HTTP/1.1"),
        status: 200,
        bytes_out: 311,
        bytes_in: 92,
        latency_us: Some(412),
        integration_latency_us: Some(230),
        integration_status: Some(200),
        domain: Some(b"api.example.test"),
        stage: Some("prod"),
        api: Some("petstore"),
        upstream: Some("127.0.0.1:9000".parse().unwrap()),
        shard: 1,
        ..LogLine::default()
    };
    for (name, fmt) in [("json", "json"), ("clf", "clf")] {
        let f = LogFormat::parse(fmt).unwrap();
        let mut buf = Vec::with_capacity(64 << 10);
        c.bench_function(&format!("access-log line: {name}"), |b| {
            b.iter(|| {
                if buf.len() > 60 << 10 {
                    buf.clear();
                }
                f.render(black_box(&line), &mut buf)
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
