//! Per-shard counters: plain `Cell`s on the request path (no atomic operation per request),
//! published every 100 ms by the shard's sweep into its own row of relaxed atomics in
//! the shard's shared state, and merged on read by the admin API's `GET /metrics`
//! (Prometheus text format).

use std::cell::Cell;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted. The names are the exported metric names without the `tollgate_` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Counter {
    Responses1xx,
    Responses2xx,
    Responses3xx,
    Responses4xx,
    Responses5xx,
    /// Refused by a throttle (429 Too Many Requests).
    Throttled,
    /// Refused by a quota (429 Limit Exceeded).
    QuotaExceeded,
    /// Refused for the API key (403).
    Forbidden,
    /// Malformed or oversized requests (400, 408, 413, 431).
    BadRequests,
    /// Upstream failures answered 502, 503 or 504.
    UpstreamErrors,
    /// Fleet-wide limit or quota decisions taken without Redis.
    RedisFallbacks,
    /// TLS handshakes that failed or timed out.
    TlsHandshakeFailures,
    /// HTTP/2 connections and streams.
    H2Connections,
    H2Streams,
    /// Streams the client reset before their answer was complete.
    H2StreamsReset,
    /// HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM, by kind of flood.
    H2FloodControl,
    H2FloodReset,
    H2FloodContinuation,
    H2FloodWindowUpdate,
    H2FloodLibrary,
    /// HTTP/2 connections closed gracefully (GOAWAY NO_ERROR): idle or draining.
    H2Goaways,
    /// Requests sent to an ejected target because every healthy one was ejected.
    AllTargetsEjected,
    /// Upgraded (WebSocket) connections closed after `limits.upgrade_idle_timeout`.
    UpgradeIdleTimeouts,
    /// Connections closed at once because the process was out of descriptors.
    RefusedAtFdLimit,
    /// Connections closed at once because `limits.max_connections` were open.
    RefusedAtMaxConnections,
    /// TLS handshakes completed with clients, and how many resumed a session.
    TlsHandshakes,
    TlsResumptions,
    /// Connections upgraded (WebSocket) and relayed to an upstream.
    Upgrades,
}

const N: usize = 28;

impl Counter {
    const ALL: [Counter; N] = [
        Counter::Responses1xx,
        Counter::Responses2xx,
        Counter::Responses3xx,
        Counter::Responses4xx,
        Counter::Responses5xx,
        Counter::Throttled,
        Counter::QuotaExceeded,
        Counter::Forbidden,
        Counter::BadRequests,
        Counter::UpstreamErrors,
        Counter::RedisFallbacks,
        Counter::TlsHandshakeFailures,
        Counter::H2Connections,
        Counter::H2Streams,
        Counter::H2StreamsReset,
        Counter::H2FloodControl,
        Counter::H2FloodReset,
        Counter::H2FloodContinuation,
        Counter::H2FloodWindowUpdate,
        Counter::H2FloodLibrary,
        Counter::H2Goaways,
        Counter::AllTargetsEjected,
        Counter::UpgradeIdleTimeouts,
        Counter::RefusedAtFdLimit,
        Counter::RefusedAtMaxConnections,
        Counter::TlsHandshakes,
        Counter::TlsResumptions,
        Counter::Upgrades,
    ];

    /// (metric name, label) for the export.
    fn export(self) -> (&'static str, &'static str) {
        match self {
            Counter::Responses1xx => ("responses_total", "class=\"1xx\""),
            Counter::Responses2xx => ("responses_total", "class=\"2xx\""),
            Counter::Responses3xx => ("responses_total", "class=\"3xx\""),
            Counter::Responses4xx => ("responses_total", "class=\"4xx\""),
            Counter::Responses5xx => ("responses_total", "class=\"5xx\""),
            Counter::Throttled => ("throttled_total", ""),
            Counter::QuotaExceeded => ("quota_exceeded_total", ""),
            Counter::Forbidden => ("forbidden_total", ""),
            Counter::BadRequests => ("bad_requests_total", ""),
            Counter::UpstreamErrors => ("upstream_errors_total", ""),
            Counter::RedisFallbacks => ("redis_fallbacks_total", ""),
            Counter::TlsHandshakeFailures => ("tls_handshake_failures_total", ""),
            Counter::H2Connections => ("http2_connections_total", ""),
            Counter::H2Streams => ("http2_streams_total", ""),
            Counter::H2StreamsReset => ("http2_streams_reset_total", ""),
            Counter::H2FloodControl => ("http2_floods_total", "kind=\"control\""),
            Counter::H2FloodReset => ("http2_floods_total", "kind=\"reset\""),
            Counter::H2FloodContinuation => ("http2_floods_total", "kind=\"continuation\""),
            Counter::H2FloodWindowUpdate => ("http2_floods_total", "kind=\"window_update\""),
            Counter::H2FloodLibrary => ("http2_floods_total", "kind=\"h2_library\""),
            Counter::H2Goaways => ("http2_goaways_total", ""),
            Counter::AllTargetsEjected => ("upstream_all_ejected_total", ""),
            Counter::UpgradeIdleTimeouts => ("upgrade_idle_timeouts_total", ""),
            Counter::RefusedAtFdLimit => ("connections_refused_total", "reason=\"fd_limit\""),
            Counter::RefusedAtMaxConnections => {
                ("connections_refused_total", "reason=\"max_connections\"")
            }
            Counter::TlsHandshakes => ("tls_handshakes_total", ""),
            Counter::TlsResumptions => ("tls_resumptions_total", ""),
            Counter::Upgrades => ("upgrades_total", ""),
        }
    }

    /// The `# HELP` text of a family.
    fn help(name: &str) -> &'static str {
        match name {
            "responses_total" => "Answers written, by status class.",
            "throttled_total" => "Requests refused by a throttle (429 Too Many Requests).",
            "quota_exceeded_total" => {
                "Requests refused by a usage plan's quota (429 Limit Exceeded)."
            }
            "forbidden_total" => "Requests refused for their API key (403).",
            "bad_requests_total" => {
                "Malformed, oversized or too slow requests (400, 408, 413, 431)."
            }
            "upstream_errors_total" => "Upstream failures answered 502, 503 or 504.",
            "redis_fallbacks_total" => "Fleet-wide limit or quota decisions taken without Redis.",
            "tls_handshake_failures_total" => "TLS handshakes that failed or timed out.",
            "http2_connections_total" => "HTTP/2 connections opened by clients.",
            "http2_streams_total" => "HTTP/2 streams opened by clients.",
            "http2_streams_reset_total" => {
                "HTTP/2 streams the client reset before their answer was complete."
            }
            "http2_floods_total" => {
                "HTTP/2 connections closed with ENHANCE_YOUR_CALM, by kind of flood."
            }
            "http2_goaways_total" => "HTTP/2 connections closed gracefully (GOAWAY NO_ERROR).",
            "upstream_all_ejected_total" => {
                "Requests sent to an ejected target because every healthy one was ejected."
            }
            "upgrade_idle_timeouts_total" => {
                "Upgraded (WebSocket) connections closed after limits.upgrade_idle_timeout."
            }
            "connections_refused_total" => {
                "Client connections closed at once, by reason: out of descriptors (fd_limit), \
                 limits.max_connections open (max_connections)."
            }
            "tls_handshakes_total" => "TLS handshakes completed with clients.",
            "tls_resumptions_total" => {
                "TLS handshakes with clients that resumed a session (tickets or session ids)."
            }
            "upgrades_total" => {
                "Client connections upgraded (WebSocket) and relayed to an upstream."
            }
            _ => "",
        }
    }

    /// The response-class counter for a status.
    pub(crate) fn for_status(status: u16) -> Counter {
        match status {
            100..=199 => Counter::Responses1xx,
            200..=299 => Counter::Responses2xx,
            300..=399 => Counter::Responses3xx,
            400..=499 => Counter::Responses4xx,
            _ => Counter::Responses5xx,
        }
    }
}

/// A shard's counters, touched by that shard only.
#[derive(Debug, Default)]
pub(crate) struct Local {
    counts: [Cell<u64>; N],
}

impl Local {
    #[inline]
    pub(crate) fn add(&self, c: Counter) {
        let cell = &self.counts[c as usize];
        cell.set(cell.get() + 1);
    }

    #[inline]
    pub(crate) fn add_n(&self, c: Counter, n: u64) {
        let cell = &self.counts[c as usize];
        cell.set(cell.get() + n);
    }

    /// Copies the counts into the shard's published row.
    pub(crate) fn publish(&self, row: &Published) {
        for (cell, slot) in self.counts.iter().zip(&row.counts) {
            slot.store(cell.get(), Ordering::Relaxed);
        }
    }
}

/// A shard's published row, read by the control plane.
#[derive(Debug, Default)]
pub(crate) struct Published {
    counts: [AtomicU64; N],
}

/// Renders every shard's row (and a few gauges) in the Prometheus text format.
pub(crate) fn render(
    rows: &[std::sync::Arc<Published>],
    connections: u64,
    generation: u64,
) -> String {
    let mut out = String::new();
    let mut last = "";
    for c in Counter::ALL {
        let (name, label) = c.export();
        if name != last {
            let _ = writeln!(out, "# HELP tollgate_{name} {}", Counter::help(name));
            let _ = writeln!(out, "# TYPE tollgate_{name} counter");
            last = name;
        }
        for (shard, row) in rows.iter().enumerate() {
            let sep = if label.is_empty() { "" } else { "," };
            let _ = writeln!(
                out,
                "tollgate_{name}{{shard=\"{shard}\"{sep}{label}}} {}",
                row.counts[c as usize].load(Ordering::Relaxed)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP tollgate_open_connections Client connections open now.\n# TYPE tollgate_open_connections gauge\ntollgate_open_connections {connections}"
    );
    let _ = writeln!(
        out,
        "# HELP tollgate_panics_total Panics caught in the tasks serving clients (each closed its connection or stream; the shard went on).\n# TYPE tollgate_panics_total counter\ntollgate_panics_total {}",
        crate::driver::PANICS.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP tollgate_config_generation The generation of the snapshot being served (bumped by reloads and key changes).\n# TYPE tollgate_config_generation gauge\ntollgate_config_generation {generation}"
    );
    out
}

/// A system configuration value (clock ticks per second, page size), or `default`.
#[allow(unsafe_code)]
fn sysconf(name: libc::c_int, default: u64) -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v as u64
    } else {
        default
    }
}

/// The process's own figures under the names every Prometheus client library uses
/// (`process_*`): CPU time, resident memory, open and allowed descriptors, start time. Read
/// from `/proc/self` when scraped; a figure that cannot be read is left out.
pub(crate) fn render_process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces), numbered from 3 (state).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = sysconf(libc::_SC_CLK_TCK, 100);
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}",
            (utime + stime) as f64 / ticks as f64
        );
    }
    if let Some(rss_pages) = field(24) {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size, in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            rss_pages * sysconf(libc::_SC_PAGESIZE, 4096)
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            dir.count()
        );
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if let Some(max) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok())
    {
        let _ = writeln!(
            out,
            "# HELP process_max_fds The open-file limit (soft).\n# TYPE process_max_fds gauge\nprocess_max_fds {max}"
        );
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        let _ = writeln!(
            out,
            "# HELP process_start_time_seconds Start time of the process since the epoch, in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
            boot as f64 + start as f64 / ticks as f64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_process_reports_itself() {
        let mut out = String::new();
        render_process(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in {out}"));
            let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v > 0.0 || name == "process_cpu_seconds_total", "{line}");
        }
    }

    #[test]
    fn every_family_has_help() {
        for c in Counter::ALL {
            assert!(!Counter::help(c.export().0).is_empty(), "{c:?}");
        }
    }

    #[test]
    fn counts_are_published_and_rendered_per_shard() {
        let local = Local::default();
        let row = Arc::new(Published::default());
        local.add(Counter::for_status(200));
        local.add(Counter::for_status(204));
        local.add(Counter::Throttled);
        local.publish(&row);
        let text = render(&[row], 3, 7);
        assert!(
            text.contains("tollgate_responses_total{shard=\"0\",class=\"2xx\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_throttled_total{shard=\"0\"} 1"),
            "{text}"
        );
        assert!(text.contains("tollgate_open_connections 3"));
        assert_eq!(text.matches("# TYPE tollgate_responses_total").count(), 1);
    }
}
