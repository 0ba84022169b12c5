//! `GET /metrics` is valid Prometheus text: `promtool check metrics` (Prometheus's own
//! linter) finds nothing to say about it — every family has HELP and TYPE, names and units
//! follow the conventions.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

#[test]
fn metrics_pass_promtool_check() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .workers(2)
            .admin("")
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\", \"{}\"]\n",
                up.addr,
                closed_port()
            ))
            .stage_extra("cache = { enabled = true, ttl = \"60s\", capacity = \"1MiB\" }")
            .route("GET /m", "integration = { type = \"mock\", body = \"m\" }")
            .route(
                "GET /p/{id}",
                "cache = { ttl = \"60s\" }\nintegration = { type = \"http\", uri = \"http://up/p/{id}\" }",
            )
            .route(
                "GET /limited",
                "throttle = { rate = 1, burst = 1 }\nintegration = { type = \"mock\", body = \"l\" }",
            )
            .toml(),
    );
    for _ in 0..3 {
        assert_eq!(get(g.addr(), "/m").status, 200);
    }
    assert_eq!(get(g.addr(), "/nope").status, 404);
    for _ in 0..2 {
        assert_eq!(get(g.addr(), &format!("/p/{}", 1)).status, 200);
    }
    assert_eq!(get(g.addr(), "/limited").status, 200);
    assert_eq!(get(g.addr(), "/limited").status, 429);
    // Each shard publishes its figures every 100 ms, on its own clock: the requests above may
    // have landed on either shard, so wait until every route's figures are in, not just one's.
    let route = r#"api="api",stage="prod",route="GET /m""#;
    let p = r#"api="api",stage="prod",route="GET /p/{id}""#;
    let l = r#"api="api",stage="prod",route="GET /limited""#;
    let published = [
        format!("tollgate_route_latency_seconds_count{{{route}}} 3"),
        format!("tollgate_route_cache_misses_total{{{p}}} 1"),
        format!("tollgate_route_cache_hits_total{{{p}}} 1"),
        format!("tollgate_route_throttled_total{{{l}}} 1"),
        format!(
            "tollgate_upstream_target_connections_opened_total{{target=\"{}\"}} 1",
            up.addr
        ),
    ];
    assert!(eventually(IO_TIMEOUT, || {
        let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
        published.iter().all(|line| text.contains(line.as_str()))
    }));
    let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
    assert!(
        text.contains(&format!(
            "tollgate_route_responses_total{{{route},class=\"2xx\"}} 3"
        )),
        "{text}"
    );
    // Cached: one miss, then hits; proxied: an integration latency and a target's figures.
    assert!(
        text.contains(&format!("tollgate_route_cache_misses_total{{{p}}} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!("tollgate_route_cache_hits_total{{{p}}} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tollgate_route_integration_latency_seconds_count{{{p}}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tollgate_upstream_target_connections_opened_total{{target=\"{}\"}} 1",
            up.addr
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("tollgate_route_throttled_total{{{l}}} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tollgate_route_responses_total{{{l},class=\"4xx\"}} 1"
        )),
        "{text}"
    );
    assert!(text.contains("# HELP tollgate_responses_total "), "{text}");
    assert!(
        text.contains("tollgate_cache_hits_total{stage=\"api/prod\"}"),
        "{text}"
    );
    assert!(text.contains("\nprocess_open_fds "), "{text}");
    assert!(
        text.contains(&format!(
            "tollgate_upstream_target_healthy{{upstream=\"up\",target=\"{}\"}} 1",
            up.addr
        )),
        "{text}"
    );
    assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test.sh installs it from Debian's prometheus package)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}
