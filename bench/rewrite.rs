//! Header rewrite: building the upstream request head from the client's (hop-by-hop headers
//! dropped, forwarding headers added, the path rendered from the integration template)
//! against a naive baseline that collects headers into a `HashMap<String, String>`, edits it
//! and formats the result, as a proxy built on a generic header map does.

use std::collections::HashMap;
use std::fmt::Write;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::internals::normalise;
use tollgate::internals::parse_request;
use tollgate::internals::request_head;
use tollgate::internals::Capture;
use tollgate::internals::StageRef;
use tollgate::internals::{Dest, HttpIntegration};
use tollgate::internals::{Piece, Template};
use tollgate::internals::{RequestCtx, RequestId};

const HEAD: &[u8] = b"GET /pets/12345?limit=10 HTTP/1.1\r\nHost: api.example.test\r\nUser-Agent: wrk/4.2\r\nAccept: application/json\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: session=abc\r\n\r\n";

fn ctx() -> RequestCtx {
    let (len, parts) = parse_request(HEAD, 16 << 10).unwrap().unwrap();
    let head = parts.into_head(Bytes::copy_from_slice(&HEAD[..len]));
    let segs = normalise(head.path_bytes()).unwrap();
    let mut ctx = RequestCtx::new(head, RequestId::generated(7, 42), segs);
    ctx.stage = Some(StageRef {
        api: 0,
        stage: 0,
        base_len: 0,
    });
    ctx.captures.push(Capture { start: 1, end: 2 });
    ctx
}

fn naive(ctx: &RequestCtx, peer: &str) -> String {
    let mut h: HashMap<String, String> = HashMap::new();
    for (n, v) in ctx.head.headers() {
        h.insert(
            String::from_utf8_lossy(n).to_ascii_lowercase(),
            String::from_utf8_lossy(v).into_owned(),
        );
    }
    for hop in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    ] {
        h.remove(hop);
    }
    let host = h.remove("host").unwrap_or_default();
    let xff = match h.remove("x-forwarded-for") {
        Some(x) => format!("{x}, {peer}"),
        None => peer.to_string(),
    };
    h.insert("x-forwarded-for".into(), xff);
    h.insert("x-forwarded-host".into(), host);
    h.insert("x-forwarded-proto".into(), "http".into());
    h.insert("x-request-id".into(), ctx.request_id.to_string());
    h.insert("host".into(), "pets".into());
    let id = ctx.segs.get(1);
    let mut out = format!("GET /v2/pets/{id}?limit=10 HTTP/1.1\r\n");
    for (n, v) in &h {
        let _ = write!(out, "{n}: {v}\r\n");
    }
    out.push_str("\r\n");
    out
}

fn bench(c: &mut Criterion) {
    let ctx = ctx();
    let integ = HttpIntegration {
        dest: Dest::Upstream(0),
        host_header: "pets".into(),
        path: Template {
            pieces: vec![Piece::Lit("/v2/pets/".into()), Piece::PathVar(0)],
        },
        headers: Vec::new(),
        timeout: std::time::Duration::from_secs(29),
        drop_underscores: true,
        mapping: None,
    };
    let mut g = c.benchmark_group("request_head_rewrite");
    g.bench_function("tollgate", |b| {
        b.iter(|| request_head(black_box("127.0.0.1"), black_box(&ctx), &integ).len())
    });
    g.bench_function("naive_hashmap_and_format", |b| {
        b.iter(|| naive(black_box(&ctx), black_box("127.0.0.1")).len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
