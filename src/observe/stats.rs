//! Per-route figures, Amazon CloudWatch's for API Gateway as a guide (Count, 4XXError,
//! 5XXError, Latency, IntegrationLatency, CacheHitCount, CacheMissCount), plus throttles,
//! quotas and authorizer refusals. Each shard counts into plain `Cell`s ([`RouteCells`]);
//! the sweep copies them into plain numbers ([`RouteCounts`]) that the control plane sums
//! over shards and renders when scraped ([`render`]).
//!
//! Latencies go into fixed log-scale buckets (500 µs to 30 s, Prometheus histograms):
//! recording is a short scan and an add, buckets from every shard and every node add up
//! exactly (an HDR histogram's percentiles cannot be merged by Prometheus), and the
//! bounds cover what a gateway sees, from sub-millisecond cache hits to the 29 s
//! integration timeout.

use std::cell::Cell;
use std::fmt::Write;
use std::sync::Arc;

/// Bucket upper bounds in microseconds (`le` in seconds: 0.0005 ... 30); one more bucket
/// (+Inf) holds the rest.
pub(crate) const BOUNDS_US: [u64; 15] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 30_000_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;

/// A latency histogram of one shard.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    buckets: [Cell<u64>; BUCKETS],
    sum_us: Cell<u64>,
}

impl Histogram {
    #[inline]
    pub(crate) fn record(&self, us: u64) {
        let i = BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BOUNDS_US.len());
        let c = &self.buckets[i];
        c.set(c.get() + 1);
        self.sum_us.set(self.sum_us.get() + us);
    }

    fn copy(&self) -> Hist {
        Hist {
            buckets: std::array::from_fn(|i| self.buckets[i].get()),
            sum_us: self.sum_us.get(),
        }
    }
}

/// A histogram's numbers, summed over shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Hist {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Hist {
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn add(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.sum_us += o.sum_us;
    }

    /// The `q` quantile (0-1) in microseconds, interpolated within its bucket (what
    /// Prometheus's `histogram_quantile` does); `None` with no samples.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * n as f64;
        let mut seen = 0u64;
        for (i, &c) in self.buckets.iter().enumerate() {
            if c > 0 && (seen + c) as f64 >= rank {
                let lo = if i == 0 { 0 } else { BOUNDS_US[i - 1] } as f64;
                let Some(&hi) = BOUNDS_US.get(i) else {
                    return Some(lo);
                };
                let within = (rank - seen as f64) / c as f64;
                return Some(lo + (hi as f64 - lo) * within.clamp(0.0, 1.0));
            }
            seen += c;
        }
        Some(BOUNDS_US[BOUNDS_US.len() - 1] as f64)
    }
}

/// How a request ended, for the counters beside the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Throttled,
    Quota,
    /// 401 from an authorizer (or a missing SigV4 signature).
    Unauthorized,
    /// 403 for the caller: authorizer, scopes, API key, resource policy, IAM.
    Forbidden,
    /// The authorizer failed (500).
    AuthorizerError,
}

/// One route's figures on one stage, on one shard.
#[derive(Debug, Default)]
pub struct RouteCells {
    classes: [Cell<u64>; 5],
    latency: Histogram,
    integration: Histogram,
    cache_hits: Cell<u64>,
    cache_misses: Cell<u64>,
    refusals: [Cell<u64>; 5],
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
}

/// What one request adds.
pub struct Sample {
    pub status: u16,
    pub latency_us: u64,
    pub integration_us: Option<u64>,
    /// `X-Cache`: Hit and Stale were served from the cache; Miss, Refresh and Revalidated
    /// went to the integration.
    pub cache: Option<&'static str>,
    pub refusal: Option<Refusal>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

impl RouteCells {
    #[inline]
    pub fn record(&self, s: &Sample) {
        let class = (s.status / 100).clamp(1, 5) as usize - 1;
        bump(&self.classes[class], 1);
        self.latency.record(s.latency_us);
        if let Some(us) = s.integration_us {
            self.integration.record(us);
        }
        match s.cache {
            Some("Hit" | "Stale") => bump(&self.cache_hits, 1),
            Some("Miss" | "Refresh" | "Revalidated") => bump(&self.cache_misses, 1),
            _ => {}
        }
        if let Some(r) = s.refusal {
            bump(&self.refusals[r as usize], 1);
        }
        bump(&self.bytes_in, s.bytes_in);
        bump(&self.bytes_out, s.bytes_out);
    }

    pub(crate) fn copy(&self) -> RouteCounts {
        RouteCounts {
            classes: std::array::from_fn(|i| self.classes[i].get()),
            latency: self.latency.copy(),
            integration: self.integration.copy(),
            cache_hits: self.cache_hits.get(),
            cache_misses: self.cache_misses.get(),
            refusals: std::array::from_fn(|i| self.refusals[i].get()),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
        }
    }
}

/// One route's figures as numbers (one shard's, or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RouteCounts {
    pub classes: [u64; 5],
    pub latency: Hist,
    pub integration: Hist,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub refusals: [u64; 5],
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl RouteCounts {
    pub(crate) fn add(&mut self, o: &RouteCounts) {
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            *a += b;
        }
        self.latency.add(&o.latency);
        self.integration.add(&o.integration);
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
        for (a, b) in self.refusals.iter_mut().zip(&o.refusals) {
            *a += b;
        }
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }

    pub(crate) fn requests(&self) -> u64 {
        self.classes.iter().sum()
    }
}

/// One upstream target's figures on one shard.
#[derive(Debug, Default)]
pub(crate) struct TargetCells {
    opened: Cell<u64>,
    failed: Cell<u64>,
    ejections: Cell<u64>,
    connect: Histogram,
}

impl TargetCells {
    /// A connection attempt ended (opened or failed) after `us` microseconds.
    pub(crate) fn connected(&self, ok: bool, us: u64) {
        bump(if ok { &self.opened } else { &self.failed }, 1);
        if ok {
            self.connect.record(us);
        }
    }

    pub(crate) fn ejected(&self) {
        bump(&self.ejections, 1);
    }

    /// With the pool's gauges: idle connections and requests in flight.
    pub(crate) fn copy(&self, idle: u64, inflight: u64) -> TargetCounts {
        TargetCounts {
            opened: self.opened.get(),
            failed: self.failed.get(),
            ejections: self.ejections.get(),
            connect: self.connect.copy(),
            idle,
            inflight,
        }
    }
}

/// One target's figures as numbers (one shard's, or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TargetCounts {
    pub opened: u64,
    pub failed: u64,
    pub ejections: u64,
    pub connect: Hist,
    pub idle: u64,
    pub inflight: u64,
}

impl TargetCounts {
    pub(crate) fn add(&mut self, o: &TargetCounts) {
        self.opened += o.opened;
        self.failed += o.failed;
        self.ejections += o.ejections;
        self.connect.add(&o.connect);
        self.idle += o.idle;
        self.inflight += o.inflight;
    }
}

/// The per-target families (summed over shards), by target address.
pub(crate) fn render_targets(out: &mut String, targets: &[(std::net::SocketAddr, TargetCounts)]) {
    if targets.is_empty() {
        return;
    }
    for (name, kind, help, pick) in [
        (
            "connections_opened_total",
            "counter",
            "Connections opened to an upstream target.",
            (|c: &TargetCounts| c.opened) as fn(&TargetCounts) -> u64,
        ),
        (
            "connect_errors_total",
            "counter",
            "Connection attempts to an upstream target that failed or timed out.",
            |c| c.failed,
        ),
        (
            "ejections_total",
            "counter",
            "Times a target was ejected after max_fails consecutive failures.",
            |c| c.ejections,
        ),
        (
            "idle_connections",
            "gauge",
            "Idle keep-alive connections pooled for a target.",
            |c| c.idle,
        ),
        (
            "inflight_requests",
            "gauge",
            "Requests in flight to a target.",
            |c| c.inflight,
        ),
    ] {
        let _ = writeln!(out, "# HELP tollgate_upstream_target_{name} {help}\n# TYPE tollgate_upstream_target_{name} {kind}");
        for (t, c) in targets {
            let _ = writeln!(
                out,
                "tollgate_upstream_target_{name}{{target=\"{t}\"}} {}",
                pick(c)
            );
        }
    }
    let name = "tollgate_upstream_target_connect_seconds";
    let _ = writeln!(out, "# HELP {name} Time to open a connection to a target (TCP, TLS and HTTP/2 handshakes).\n# TYPE {name} histogram");
    for (t, c) in targets {
        histogram(out, name, &format!("target=\"{t}\""), &c.connect);
    }
}

/// A histogram's `_bucket`, `_sum` and `_count` lines.
fn histogram(out: &mut String, name: &str, labels: &str, h: &Hist) {
    let mut cum = 0;
    for (i, n) in h.buckets.iter().enumerate() {
        cum += n;
        match BOUNDS_US.get(i) {
            Some(b) => {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"{}\"}} {cum}",
                    *b as f64 / 1e6
                );
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
}

/// `api="...",stage="...",route="..."`, escaped for the Prometheus text format.
pub(crate) fn labels(api: &str, stage: &str, route: &str) -> Arc<str> {
    let mut s = String::new();
    for (i, (k, v)) in [("api", api), ("stage", stage), ("route", route)]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    Arc::from(s)
}

/// The (api, stage, route) of a label set made by [`labels`].
pub(crate) fn parse_labels(l: &str) -> Option<(String, String, String)> {
    let mut vals = Vec::with_capacity(3);
    let mut rest = l;
    for key in ["api=\"", ",stage=\"", ",route=\""] {
        rest = rest.strip_prefix(key)?;
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                (i, '"') => break i,
                (_, c) => v.push(c),
            }
        };
        vals.push(v);
        rest = &rest[end + 1..];
    }
    let route = vals.pop()?;
    let stage = vals.pop()?;
    Some((vals.pop()?, stage, route))
}

/// The per-route families, in the Prometheus text format, for series summed over shards
/// (label set, figures), in a stable order.
pub(crate) fn render(out: &mut String, series: &[(Arc<str>, RouteCounts)]) {
    if series.is_empty() {
        return;
    }
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(
            out,
            "# HELP tollgate_route_{name} {help}\n# TYPE tollgate_route_{name} {kind}"
        );
    };
    family(out, "responses_total", "counter", "Answers per API, stage and route, by status class (CloudWatch's Count, 4XXError and 5XXError).");
    for (l, c) in series {
        for (i, n) in c.classes.iter().enumerate() {
            let _ = writeln!(
                out,
                "tollgate_route_responses_total{{{l},class=\"{}xx\"}} {n}",
                i + 1
            );
        }
    }
    for (name, help, pick) in [
        (
            "latency_seconds",
            "Time from a request's head to its answer's end (CloudWatch's Latency).",
            (|c: &RouteCounts| c.latency) as fn(&RouteCounts) -> Hist,
        ),
        (
            "integration_latency_seconds",
            "Time from the upstream connection being ready to the upstream answer's head (CloudWatch's IntegrationLatency).",
            |c: &RouteCounts| c.integration,
        ),
    ] {
        family(out, name, "histogram", help);
        for (l, c) in series {
            histogram(out, &format!("tollgate_route_{name}"), l, &pick(c));
        }
    }
    for (name, help, pick) in [
        (
            "cache_hits_total",
            "Answers served from the stage cache (CloudWatch's CacheHitCount).",
            (|c: &RouteCounts| c.cache_hits) as fn(&RouteCounts) -> u64,
        ),
        (
            "cache_misses_total",
            "Cacheable requests that went to the integration (CloudWatch's CacheMissCount).",
            |c| c.cache_misses,
        ),
        (
            "throttled_total",
            "Requests refused by a throttle (429).",
            |c| c.refusals[Refusal::Throttled as usize],
        ),
        (
            "quota_exceeded_total",
            "Requests refused by a usage plan's quota (429).",
            |c| c.refusals[Refusal::Quota as usize],
        ),
        (
            "received_bytes_total",
            "Request bytes taken from clients (heads and bodies).",
            |c| c.bytes_in,
        ),
        ("sent_bytes_total", "Bytes written to clients.", |c| {
            c.bytes_out
        }),
    ] {
        family(out, name, "counter", help);
        for (l, c) in series {
            let _ = writeln!(out, "tollgate_route_{name}{{{l}}} {}", pick(c));
        }
    }
    family(out, "auth_refusals_total", "counter", "Requests refused for their caller: unauthorized (401), forbidden (403: authorizer, scopes, API key, resource policy, IAM), or authorizer errors (500).");
    for (l, c) in series {
        for (reason, r) in [
            ("unauthorized", Refusal::Unauthorized),
            ("forbidden", Refusal::Forbidden),
            ("error", Refusal::AuthorizerError),
        ] {
            let _ = writeln!(
                out,
                "tollgate_route_auth_refusals_total{{{l},reason=\"{reason}\"}} {}",
                c.refusals[r as usize]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_and_interpolate_quantiles() {
        let h = Histogram::default();
        for us in [100, 400, 900, 3_000, 40_000_000] {
            h.record(us);
        }
        let c = h.copy();
        assert_eq!(c.count(), 5);
        assert_eq!(c.buckets[0], 2, "<= 500 µs");
        assert_eq!(c.buckets[1], 1, "<= 1 ms");
        assert_eq!(c.buckets[3], 1, "<= 5 ms");
        assert_eq!(c.buckets[BUCKETS - 1], 1, "+Inf");
        assert_eq!(c.sum_us, 40_004_400);
        // The median is the third sample, in the (500 µs, 1 ms] bucket.
        let p50 = c.quantile(0.5).unwrap();
        assert!((500.0..=1000.0).contains(&p50), "{p50}");
        assert_eq!(Hist::default().quantile(0.5), None);
    }

    #[test]
    fn routes_render_as_valid_families() {
        let cells = RouteCells::default();
        cells.record(&Sample {
            status: 200,
            latency_us: 700,
            integration_us: Some(300),
            cache: Some("Hit"),
            refusal: None,
            bytes_in: 10,
            bytes_out: 20,
        });
        cells.record(&Sample {
            status: 429,
            latency_us: 50,
            integration_us: None,
            cache: None,
            refusal: Some(Refusal::Throttled),
            bytes_in: 10,
            bytes_out: 20,
        });
        let mut sum = RouteCounts::default();
        sum.add(&cells.copy());
        sum.add(&cells.copy());
        let mut out = String::new();
        render(&mut out, &[(labels("a\"b", "prod", "GET /x"), sum)]);
        let l = r#"api="a\"b",stage="prod",route="GET /x""#;
        assert!(
            out.contains(&format!(
                "tollgate_route_responses_total{{{l},class=\"2xx\"}} 2"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "tollgate_route_responses_total{{{l},class=\"4xx\"}} 2"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "tollgate_route_latency_seconds_bucket{{{l},le=\"0.0005\"}} 2"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "tollgate_route_latency_seconds_bucket{{{l},le=\"0.001\"}} 4"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("tollgate_route_latency_seconds_count{{{l}}} 4")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "tollgate_route_integration_latency_seconds_count{{{l}}} 2"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("tollgate_route_cache_hits_total{{{l}}} 2")),
            "{out}"
        );
        assert!(
            out.contains(&format!("tollgate_route_throttled_total{{{l}}} 2")),
            "{out}"
        );
        assert_eq!(
            out.matches("# TYPE tollgate_route_latency_seconds histogram")
                .count(),
            1
        );
        assert_eq!(
            parse_labels(&labels("a\"b\\", "prod", "GET /x")),
            Some(("a\"b\\".into(), "prod".into(), "GET /x".into()))
        );
    }
}
