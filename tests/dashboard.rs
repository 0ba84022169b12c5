//! The Grafana dashboard in dist/grafana is valid JSON, and every series its queries name
//! is one the gateway exports (a family `GET /metrics` declares with `# TYPE`).

mod common;

use std::collections::BTreeSet;

use common::*;

#[test]
fn the_dashboard_names_only_series_tollgate_exports() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/grafana/tollgate.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(dash["uid"], "tollgate-overview");
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id: {p}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{p}");
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }

    // A gateway with a route, a cache and an upstream exports every family.
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .stage_extra("cache = { enabled = true, ttl = \"60s\", capacity = \"1MiB\" }")
            .route(
                "GET /p",
                "integration = { type = \"http\", uri = \"http://up/p\" }",
            )
            .toml(),
    );
    assert_eq!(get(g.addr(), "/p").status, 200);
    // Shards publish their figures every 100 ms.
    let scrape = || admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
    assert!(eventually(IO_TIMEOUT, || scrape().contains(
        "# TYPE tollgate_upstream_target_connections_opened_total"
    )));
    let metrics = scrape();
    let families: BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut named = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find(|c: char| c.is_ascii_lowercase()) {
            rest = &rest[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            if word.starts_with("tollgate_") || word.starts_with("process_") {
                named.insert(word.to_string());
            }
            rest = &rest[end..];
        }
    }
    assert!(named.len() >= 20, "{named:?}");
    for name in &named {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains(f)))
            .unwrap_or(name);
        assert!(
            families.contains(family),
            "the dashboard names {name}, which /metrics does not export:\n{metrics}"
        );
    }
}
