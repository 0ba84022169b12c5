//! Header rewrite: building the upstream request head from the client's (hop-by-hop headers
//! dropped, forwarding headers added, the path rendered from the integration template)
//! against a naive baseline that collects headers into a `HashMap<String, String>`, edits it
//! and formats the result, as a proxy built on a generic header map does. The same for a
//! route's parameter mapping (headers from the query and the context, a header removed, the
//! path and a query parameter rewritten) beside the same edits made by hand on that map.

use std::collections::HashMap;
use std::fmt::Write;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::internals::normalise;
use tollgate::internals::parse_request;
use tollgate::internals::request_head;
use tollgate::internals::Capture;
use tollgate::internals::StageRef;
use tollgate::internals::{map_op, mapped_request_head, ParamMapping};
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
        path_identity: false,
        headers: Vec::new(),
        timeout: std::time::Duration::from_secs(29),
        drop_underscores: true,
        whole_path: false,
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

    // Parameter mapping: a header from the query, a header from the context, a header
    // removed, the path rewritten from a path variable and a query parameter overwritten.
    let ops = [
        ("overwrite:header.x-user", "$request.querystring.limit"),
        ("append:header.x-trace", "req-$context.requestId"),
        ("remove:header.cookie", "''"),
        ("overwrite:path", "/v3/pets/$request.path.id"),
        ("overwrite:querystring.page", "1"),
    ];
    let mapping = ParamMapping {
        request: ops.iter().map(|(k, v)| map_op(k, v).unwrap()).collect(),
        response: Vec::new(),
    };
    let mapped = HttpIntegration {
        mapping: Some(std::sync::Arc::new(mapping)),
        ..integ
    };
    let params = vec!["id".to_string()];
    let mut mctx = self::ctx();
    let out = mapped_request_head("127.0.0.1", &mut mctx, &mapped, &params);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("GET /v3/pets/12345?limit=10&page=1 HTTP/1.1\r\n"),
        "{text}"
    );
    assert!(
        text.contains("x-user: 10\r\n") && !text.contains("Cookie"),
        "{text}"
    );
    let mut g = c.benchmark_group("parameter_mapping");
    g.bench_function("tollgate", |b| {
        b.iter(|| mapped_request_head(black_box("127.0.0.1"), &mut mctx, &mapped, &params).len())
    });
    g.bench_function("naive_hashmap_and_format", |b| {
        b.iter(|| naive_mapped(black_box(&ctx), black_box("127.0.0.1")).len())
    });
    g.finish();
}

/// [`naive`] with the mapping's edits made by hand on the header map.
fn naive_mapped(ctx: &RequestCtx, peer: &str) -> String {
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
    let query = String::from_utf8_lossy(ctx.head.query_bytes().unwrap_or_default()).into_owned();
    let mut q: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect();
    if let Some((_, v)) = q.iter().find(|(k, _)| k == "limit") {
        h.insert("x-user".into(), v.clone());
    }
    h.insert("x-trace".into(), format!("req-{}", ctx.request_id));
    h.remove("cookie");
    q.retain(|(k, _)| k != "page");
    q.push(("page".into(), "1".into()));
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
    let q: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = format!("GET /v3/pets/{id}?{} HTTP/1.1\r\n", q.join("&"));
    for (n, v) in &h {
        let _ = write!(out, "{n}: {v}\r\n");
    }
    out.push_str("\r\n");
    out
}

criterion_group!(benches, bench);
criterion_main!(benches);
