//! `GET /status.json`: what the status page shows, from the same figures as `/metrics`.

use super::*;

impl Control {
    /// Totals, per-route figures (requests, error counts, latency quantiles, cache), and
    /// upstream targets (health, connections). Rates are left to the page, which polls.
    pub(crate) fn status_json(&self) -> serde_json::Value {
        let ms = |us: Option<f64>| us.map(|v| (v / 10.0).round() / 100.0);
        let routes: Vec<serde_json::Value> = self
            .route_totals()
            .iter()
            .filter_map(|(labels, c)| {
                let (api, stage, route) = crate::observe::stats::parse_labels(labels)?;
                Some(serde_json::json!({
                    "api": api,
                    "stage": stage,
                    "route": route,
                    "requests": c.requests(),
                    "4xx": c.classes[3],
                    "5xx": c.classes[4],
                    "p50_ms": ms(c.latency.quantile(0.5)),
                    "p99_ms": ms(c.latency.quantile(0.99)),
                    "integration_p50_ms": ms(c.integration.quantile(0.5)),
                    "cache_hits": c.cache_hits,
                    "cache_misses": c.cache_misses,
                }))
            })
            .collect();
        let targets = self.target_totals();
        let mut upstreams = Vec::new();
        for u in &self.compiled.upstreams {
            for (addr, up) in u.cfg.targets.iter().zip(&u.healthy) {
                let t = targets
                    .iter()
                    .find(|(a, _)| a == addr)
                    .map(|(_, t)| *t)
                    .unwrap_or_default();
                upstreams.push(serde_json::json!({
                    "upstream": u.cfg.name,
                    "target": addr.to_string(),
                    "healthy": up.load(Ordering::Relaxed),
                    "opened": t.opened,
                    "connect_errors": t.failed,
                    "ejections": t.ejections,
                    "idle": t.idle,
                    "inflight": t.inflight,
                }));
            }
        }
        let responses: u64 = routes.iter().filter_map(|r| r["requests"].as_u64()).sum();
        let log = &self.shared.access_log;
        serde_json::json!({
            "generation": self.generation,
            "uptime_s": started().elapsed().as_secs(),
            "connections": self.shared.connections.load(Ordering::Relaxed),
            "routed_requests": responses,
            "access_log": {
                "written": log.counts.written.load(Ordering::Relaxed),
                "dropped": log.counts.dropped.load(Ordering::Relaxed),
            },
            "routes": routes,
            "upstreams": upstreams,
        })
    }
}

/// When this process's control plane started.
pub(crate) fn started() -> std::time::Instant {
    static AT: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *AT.get_or_init(std::time::Instant::now)
}
