//! Configuration: the raw file ([`file`]) validated into a typed [`Config`] that the rest of
//! the gateway uses.
//!
//! Validation collects every error, not just the first, and each names the key, the bad value
//! and what is allowed. Keys of features this build does not have yet are refused by name: a
//! route that asks for an API key is never served without the check.

mod apis;
mod authorizers;
mod cache;
mod compression;
mod cors;
mod domains;
pub(crate) mod file;
mod listeners;
mod mapping;
mod models;
mod observe;
mod plans;
pub(crate) mod redact;
mod responses;
mod runtime;
mod server;
pub(crate) mod target;
mod transform;
pub(crate) mod units;
mod upstreams;
mod ws_routes;
pub(crate) use apis::*;
pub(crate) use authorizers::*;
pub use cache::*;
pub(crate) use compression::*;
pub(crate) use cors::*;
pub(crate) use domains::*;
pub(crate) use listeners::*;
pub use mapping::{MapOp, ParamMapping};
pub(crate) use models::*;
pub(crate) use observe::*;
pub(crate) use plans::*;
use redact::{ser_redacted_headers, ser_redacted_params, ser_redacted_uri, ser_redacted_vars};
pub(crate) use responses::*;
pub(crate) use runtime::*;
pub use server::*;
pub(crate) use transform::*;
pub(crate) use upstreams::*;

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::syntax::route_key::{parse_route_path, MethodSel, Seg};
use crate::syntax::template::{Template, UnknownBraces};
use crate::syntax::Method;

/// Largest request body accepted (10 MiB); Amazon API Gateway's payload limit, nginx
/// `client_max_body_size`.
/// The suffix of a canary's stage in the compiled configuration (its metrics and logs say
/// `prod/Canary`, as Amazon's do); it counts against its stage's limits, not limits of its own.
pub(crate) const CANARY: &str = "/Canary";

/// The stage a compiled stage's requests are on: a canary's (`prod/Canary`) are on `prod`, as
/// Amazon runs a canary on its stage. What authorization (a policy's resource, an authorizer's
/// `methodArn` and `stage`) and templates (`$context.stage`) see; metrics, logs and caches keep
/// the canary apart.
pub(crate) fn stage_of(name: &str) -> &str {
    name.strip_suffix(CANARY).unwrap_or(name)
}
pub(crate) const DEFAULT_MAX_BODY: u64 = 10 << 20;
/// `limits.body_memory`: per shard, enough for three 10 MiB JSON bodies parsed at once.
pub(crate) const DEFAULT_BODY_MEMORY: u64 = 512 << 20;
/// A body read whole is counted this many times its size: a parsed JSON tree takes up to
/// about 16 bytes per byte of text (measured on a 10 MiB array of small objects).
pub(crate) const BODY_MEMORY_FACTOR: u64 = 16;
/// Integration timeout and its ceiling (29 s); Amazon API Gateway's, nginx `proxy_read_timeout`.
pub(crate) const DEFAULT_INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);
/// The whole request head must arrive within this (10 s); nginx `client_header_timeout`.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections are closed after this (60 s); nginx `keepalive_timeout`.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head (16 KiB); beyond it 431. nginx `large_client_header_buffers`.
pub(crate) const DEFAULT_MAX_HEADER_BYTES: u64 = 16 << 10;
/// Concurrent client connections per gateway; nginx `worker_connections` × workers.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Upstream connect timeout (3 s); nginx `proxy_connect_timeout` (60 s there, 3 s is saner).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle upstream connections kept per shard per target (32); nginx `keepalive`.
pub(crate) const DEFAULT_KEEPALIVE: usize = 32;
/// Idle upstream connections older than this are closed, before the upstream's own keep-alive
/// timeout can race a request (50 s); nginx `keepalive_timeout` in an upstream block.
pub(crate) const DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(50);
/// Consecutive failures before a shard stops using a target for `fail_timeout` (3); nginx `max_fails`.
pub(crate) const DEFAULT_MAX_FAILS: u32 = 3;
/// How long a failed target is left alone (10 s); nginx `fail_timeout`.
pub(crate) const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to finish in-flight requests on SIGTERM (30 s); Envoy `--drain-time-s`.
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upgraded connections idle this long are closed (10 min); Amazon API Gateway's WebSocket
/// idle timeout.
pub(crate) const DEFAULT_UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for the next bytes of a request body (60 s); nginx `client_body_timeout`.
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a write to a client may wait for it to take bytes (60 s); nginx `send_timeout`.
pub(crate) const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Bodies of known length up to this size are read before the upstream is asked (64 KiB);
/// nginx `client_body_buffer_size` with `proxy_request_buffering on`.
pub(crate) const DEFAULT_REQUEST_BUFFERING: u64 = 64 << 10;
/// The most `limits.request_buffering` may be: memory held per request while it uploads.
pub(crate) const MAX_REQUEST_BUFFERING: u64 = 16 << 20;
/// How often repeated failures are summarised (10 s): the first of a kind is logged in
/// full, the rest counted (a failing upstream under load is one line per target per 10 s).
pub(crate) const DEFAULT_LOG_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Health check defaults: every 5 s, 2 s timeout, 3 failures down, 2 successes up.
pub(crate) const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// io_uring submission queue entries per shard.
pub(crate) const DEFAULT_URING_ENTRIES: u32 = 1024;

/// A limit's settings: `rate` tokens per second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    pub rate: u64,
    pub burst: u64,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: Server,
    pub listeners: Vec<Listener>,
    pub admin: Option<Admin>,
    pub limits: Limits,
    pub http2: Http2,
    pub upstreams: Vec<Upstream>,
    pub apis: Vec<Api>,
    pub domains: Vec<Domain>,
    /// Gateway-wide limit ("account level").
    pub throttle: Option<Rate>,
    pub usage_plans: Vec<Plan>,
    pub api_keys: Vec<ConfigKey>,
    /// Fleet-wide limits and quotas through Redis.
    pub cluster: Option<Cluster>,
    /// SigV4-signed callers (routes with `authorization = "aws_iam"`).
    pub aws_iam: Option<AwsIam>,
    /// The access log of requests that reach no stage, or a stage without its own.
    pub access_log: Option<AccessLog>,
    /// Trace spans exported over OTLP.
    pub tracing: Option<Tracing>,
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        s.serialize_str(&format!("{}s", ms / 1000))
    } else {
        s.serialize_str(&format!("{ms}ms"))
    }
}

/// Every problem found in a file, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub errors: Vec<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A schema error in the config's words, not the parser's types: `expected struct
/// StageCacheFile` is `expected a table`; the untagged seconds-or-duration value says so.
pub(crate) fn plain(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("expected struct ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "expected struct ".len()..];
        let name_len = after
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(after.len());
        if after[..name_len].ends_with("File") {
            out.push_str("expected a table");
        } else {
            out.push_str(&rest[i..i + "expected struct ".len() + name_len]);
        }
        rest = &after[name_len..];
    }
    out.push_str(rest);
    out.replace(
        "data did not match any variant of untagged enum SecondsValue",
        "expected a whole number of seconds or a duration (600, \"10m\")",
    )
    .replace(
        "data did not match any variant of untagged enum SizeValue",
        "expected a size: a number of bytes or a string with a unit (65536, \"64KiB\")",
    )
}

/// Deserializes the file, reporting every schema error at once (unknown or misspelt keys,
/// wrong types), not only the first: after each, the offending line is blanked (to a comment
/// of the same length, so that later errors keep their line numbers) and the text is read
/// again. A syntax error, or an error that blanking cannot get past, ends the list.
fn schema(text: &str) -> Result<file::File, Vec<String>> {
    const MAX_ERRORS: usize = 32;
    let mut cur = text.to_string();
    let mut errors = Vec::new();
    loop {
        let e = match toml::from_str::<file::File>(&cur) {
            Ok(f) if errors.is_empty() => return Ok(f),
            Ok(_) => return Err(errors),
            Err(e) => e,
        };
        let msg = format!("config is not valid: {}", plain(e.to_string().trim_end()));
        let recoverable = ["unknown field", "invalid type", "invalid value"]
            .iter()
            .any(|m| msg.contains(m));
        let span = e.span();
        // A syntax error in a text the blanking made (a value spanning lines keeps its
        // continuation lines) is not the operator's: the list ends with the real ones.
        if !recoverable && !errors.is_empty() && toml::from_str::<toml::Table>(&cur).is_err() {
            return Err(errors);
        }
        errors.push(msg);
        let (Some(span), true) = (span, recoverable && errors.len() < MAX_ERRORS) else {
            return Err(errors);
        };
        // Spans fall on token boundaries; anything else ends the list rather than panic.
        let Some(before) = cur.get(..span.start.min(cur.len())) else {
            return Err(errors);
        };
        let start = before.rfind('\n').map_or(0, |i| i + 1);
        let end = cur[start..].find('\n').map_or(cur.len(), |i| start + i);
        let line = &cur[start..end];
        if line.trim_start().starts_with('#') || line.trim_start().starts_with('[') {
            // Already blanked, or a table header: blanking it would not help.
            return Err(errors);
        }
        let blank = format!("#{}", " ".repeat(line.len().saturating_sub(1)));
        cur.replace_range(start..end, &blank);
    }
}

impl Config {
    /// Reads, parses and validates a file. Relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = units::read_file_or_pipe(path, units::MAX_CONFIG_FILE)
            .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8 text".to_string()))
            .map_err(|e| ConfigError {
                errors: vec![format!("cannot read config file {}: {e}", path.display())],
            })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base)
    }

    /// Parses and validates TOML text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: file::File = schema(text).map_err(|errors| ConfigError { errors })?;
        let mut v = Validator {
            errors: Vec::new(),
            log_root: None,
            refused_models: Vec::new(),
        };
        let cfg = v.config(raw, base);
        if v.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { errors: v.errors })
        }
    }

    /// Number of shards to run: `server.workers`, or one per online CPU.
    pub fn shard_count(&self) -> usize {
        if self.server.workers > 0 {
            self.server.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// Header (name, template) pairs of an integration.
type HeaderTemplates = Vec<(String, Template)>;

struct Validator {
    errors: Vec<String>,
    /// Validating objects made through the admin API: their access logs are relative paths
    /// inside this folder (`admin.access_log_dir`), not any file.
    log_root: Option<PathBuf>,
    /// The API's models whose schema was refused (already said): routes naming them are
    /// not told again that the name is unknown.
    refused_models: Vec<String>,
}

/// Names a table in an array for error messages: `apis["petstore"]` or `apis[0]`.
pub(crate) fn item(prefix: &str, i: usize, name: Option<&String>) -> String {
    match name {
        Some(n) => format!("{prefix}[{n:?}]"),
        None => format!("{prefix}[{i}]"),
    }
}

/// The longest name (of an API, a stage, an upstream, a plan...): Amazon API Gateway's limit.
pub(crate) const MAX_NAME: usize = 128;

/// A key or value as an error quotes it: at most 200 bytes of it, so that a huge value
/// (through the admin API, say) makes a readable message, not a copy of itself.
fn clip(mut s: String) -> String {
    const MAX: usize = 200;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

impl Validator {
    fn err(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.errors
            .push(format!("{}: {msg}", clip(key.to_string())));
    }

    fn bad(&mut self, key: &str, value: impl std::fmt::Debug, allowed: &str) {
        self.errors.push(format!(
            "{} = {} is not valid: expected {allowed}",
            clip(key.to_string()),
            clip(format!("{value:?}"))
        ));
    }

    /// A URL that [`FetchUrl::parse`] refused: the key, the value, what is wrong, what is
    /// allowed.
    fn bad_url(&mut self, key: &str, value: &str, wrong: &str, allowed: &str) {
        self.errors.push(format!(
            "{} = {} is not valid: {wrong}; expected {allowed}",
            clip(key.to_string()),
            clip(format!("{value:?}"))
        ));
    }

    /// `{ rate, burst }`: both required, 1 to 1,000,000,000; or both 0: every request
    /// refused (as Amazon's method throttle of 0 and 0 turns a method off in a usage plan).
    fn rate(&mut self, key: &str, r: file::RateFile) -> Option<Rate> {
        const MAX: i64 = 1_000_000_000;
        if (r.rate, r.burst) == (Some(0), Some(0)) {
            return Some(Rate { rate: 0, burst: 0 });
        }
        let mut get = |v: Option<i64>, what: &str| match v {
            Some(n) if (1..=MAX).contains(&n) => Some(n as u64),
            Some(n) => {
                self.bad(
                    &format!("{key}.{what}"),
                    n,
                    "an integer from 1 to 1000000000 (or rate = 0 with burst = 0: every request refused)",
                );
                None
            }
            None => {
                self.err(
                    &format!("{key}.{what}"),
                    "is required (requests per second, and the burst above it)",
                );
                None
            }
        };
        let rate = get(r.rate, "rate");
        let burst = get(r.burst, "burst");
        Some(Rate {
            rate: rate?,
            burst: burst?,
        })
    }

    fn duration(&mut self, key: &str, v: Option<&String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match units::parse_duration(s) {
                Ok(d) if d.is_zero() => {
                    self.bad(key, s, "a duration above zero");
                    default
                }
                Ok(d) => d,
                Err(allowed) => {
                    self.bad(key, s, &allowed);
                    default
                }
            },
        }
    }

    /// A duration from `lo` to `hi`.
    fn duration_in(
        &mut self,
        key: &str,
        v: Option<&String>,
        default: Duration,
        lo: Duration,
        hi: Duration,
    ) -> Duration {
        self.duration_within(key, v, default, (lo, hi), "")
    }

    /// [`Self::duration_in`], or zero (`"0"`, `"0s"`, `"0ms"`: none, off).
    fn duration_or_zero_in(
        &mut self,
        key: &str,
        v: Option<&String>,
        default: Duration,
        lo: Duration,
        hi: Duration,
    ) -> Duration {
        if v.is_some_and(|v| v == "0" || units::parse_duration(v).is_ok_and(|d| d.is_zero())) {
            return Duration::ZERO;
        }
        self.duration_within(key, v, default, (lo, hi), "0, or ")
    }

    /// A duration in `range`, refused with what is allowed (`also` before the range).
    fn duration_within(
        &mut self,
        key: &str,
        v: Option<&String>,
        default: Duration,
        (lo, hi): (Duration, Duration),
        also: &str,
    ) -> Duration {
        let d = self.duration(key, v, default);
        if d < lo || d > hi {
            self.bad(
                key,
                v.map(String::as_str).unwrap_or_default(),
                &format!("{also}a duration from {lo:?} to {hi:?}"),
            );
            return default;
        }
        d
    }

    fn size(&mut self, key: &str, v: Option<&file::SizeValue>, default: u64) -> u64 {
        match v {
            None => default,
            Some(file::SizeValue::Bytes(n)) if *n >= 0 => *n as u64,
            Some(file::SizeValue::Bytes(n)) => {
                self.bad(key, n, units::SIZE_HELP);
                default
            }
            Some(file::SizeValue::Text(s)) => match units::parse_size(s) {
                Ok(n) => n,
                Err(allowed) => {
                    self.bad(key, s, &allowed);
                    default
                }
            },
        }
    }

    fn int_in(&mut self, key: &str, v: Option<i64>, default: i64, lo: i64, hi: i64) -> i64 {
        match v {
            None => default,
            Some(n) if n >= lo && n <= hi => n,
            Some(n) => {
                self.bad(key, n, &format!("an integer from {lo} to {hi}"));
                default
            }
        }
    }

    fn name(&mut self, key: &str, v: Option<String>) -> String {
        match v {
            Some(s) if s.len() <= MAX_NAME && crate::syntax::template::is_ident(&s) => s,
            Some(s) => {
                self.bad(key, s, "a name of 1 to 128 letters, digits, '_' or '-'");
                String::new()
            }
            None => {
                self.err(key, "is required");
                String::new()
            }
        }
    }

    fn config(&mut self, raw: file::File, base: &Path) -> Config {
        let traces = raw.tracing.is_some();
        let tracing = raw.tracing.and_then(|t| self.tracing(t));
        let access_log = raw
            .access_log
            .and_then(|a| self.access_log("access_log", a, base));
        let aws_iam = raw.aws_iam.map(|a| self.aws_iam(a, base));
        let server = self.server(raw.server, base);
        let listeners = self.listeners(raw.listeners, base);
        let admin = raw.admin.map(|a| self.admin(a));
        if let Some(a) = &admin {
            if let Some(l) = listeners.iter().find(|l| sockets_clash(l.addr, a.addr)) {
                self.err(
                    "admin.addr",
                    format!("{} is listener {:?}'s address", a.addr, l.name),
                );
            }
        }
        let limits = self.limits(raw.limits);
        let http2 = self.http2(raw.http2);
        let throttle = raw.throttle.and_then(|t| self.rate("throttle", t));
        let cluster = raw.cluster.map(|c| self.cluster(c, base));
        let upstreams: Vec<Upstream> = raw
            .upstreams
            .into_iter()
            .enumerate()
            .map(|(i, u)| self.upstream(i, u, base))
            .collect();
        let mut seen = HashSet::new();
        for u in &upstreams {
            if !u.name.is_empty() && !seen.insert(u.name.clone()) {
                self.err(
                    &format!("upstreams[{:?}].name", u.name),
                    "is used by two upstreams; names must be unique",
                );
            }
        }
        let apis: Vec<Api> = raw
            .apis
            .into_iter()
            .enumerate()
            .map(|(i, a)| self.api(i, a, &limits, &upstreams, aws_iam.is_some(), base))
            .collect();
        // A stage's sampling ratio without a collector would trace nothing, silently.
        for a in apis.iter().filter(|_| !traces) {
            for st in a.stages.iter().filter(|st| st.trace_sample.is_some()) {
                self.err(
                    &format!("apis[{:?}].stages[{:?}].tracing", a.name, st.name),
                    "needs the [tracing] table (otlp_endpoint, the collector to send spans to): without it nothing is traced",
                );
            }
        }
        let mut seen = HashSet::new();
        for a in &apis {
            if !a.name.is_empty() && !seen.insert(a.name.clone()) {
                self.err(
                    &format!("apis[{:?}].name", a.name),
                    "is used by two APIs; names must be unique",
                );
            }
        }
        let domains: Vec<Domain> = raw
            .domains
            .into_iter()
            .enumerate()
            .map(|(i, d)| self.domain(i, d, &apis, &listeners, base))
            .collect();
        // Two entries for one host on one listener: the first would serve it, the second
        // never (entries without `listeners` are on every listener).
        for i in 0..domains.len() {
            for j in 0..i {
                let (a, b) = (&domains[i].listeners, &domains[j].listeners);
                let shared = match (a, b) {
                    (Some(a), Some(b)) => a.iter().find(|l| b.contains(l)),
                    (Some(a), None) => a.first(),
                    (None, Some(b)) => b.first(),
                    (None, None) => None,
                };
                if domains[i].host != domains[j].host || (shared.is_none() && a != b) {
                    continue;
                }
                let on = shared.map_or(String::new(), |l| format!(" on listener {l:?}"));
                self.err(
                    &format!("domains[{i}].host"),
                    format!(
                        "{:?} is declared twice{on} (also domains[{j}]); a host's entries must name listeners apart",
                        host_text(&domains[i].host)
                    ),
                );
            }
        }
        if domains.is_empty() && !apis.is_empty() {
            self.err("domains", "no [[domains]] entry maps a host and base path to an API stage, so nothing would be served");
        }
        let usage_plans = self.plans(raw.usage_plans, &apis);
        let api_keys = self.keys(raw.api_keys, &usage_plans);
        Config {
            server,
            listeners,
            admin,
            limits,
            http2,
            upstreams,
            apis,
            domains,
            throttle,
            usage_plans,
            api_keys,
            cluster,
            aws_iam,
            access_log,
            tracing,
        }
    }
}

/// Whether two addresses to listen on would take the same socket: the same port (not 0, an
/// ephemeral one each) and the same address, or one side unspecified — of the same family,
/// or `[::]` (which takes IPv4 too where the system maps it).
pub(crate) fn sockets_clash(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |u: std::net::IpAddr, other: std::net::IpAddr| {
        u.is_unspecified() && (u.is_ipv4() == other.is_ipv4() || u.is_ipv6())
    };
    // An IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`) is the IPv4 address's socket.
    let plain = |ip: std::net::IpAddr| ip.to_canonical();
    let (x, y) = (plain(a.ip()), plain(b.ip()));
    a.port() != 0 && a.port() == b.port() && (x == y || covers(x, y) || covers(y, x))
}

/// Resolves "host:port" once, at load (blocking DNS is fine on the control plane).
pub(crate) fn resolve(s: &str) -> Result<SocketAddr, String> {
    let a = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) if !s.contains(':') => return Err("missing port".into()),
        // `fe80::1:8080` is itself a whole IPv6 address: which part is the port is a guess.
        Err(_) if !s.starts_with('[') && s.matches(':').count() > 1 => {
            return Err("an IPv6 address goes in brackets: \"[2001:db8::1]:8080\"".into())
        }
        Err(_) => s
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?,
    };
    // An address the gateway connects to: port 0 is nobody's (every request would get 502).
    if a.port() == 0 {
        return Err("port 0 names no server".into());
    }
    Ok(a)
}

/// What `tollgate check` prints: the listeners, APIs, stages, routes and upstreams a config
/// would serve.
pub fn summary(cfg: &Config, workers: Option<usize>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let mut c = cfg.clone();
    if let Some(w) = workers {
        c.server.workers = w;
    }
    let _ = writeln!(s, "configuration OK");
    let _ = writeln!(
        s,
        "shards: {} (driver {}, pin {})",
        c.shard_count(),
        c.server.driver,
        c.server.pin
    );
    for l in &c.listeners {
        let _ = writeln!(s, "listener {:?} on {}", l.name, l.addr);
    }
    if let Some(a) = &c.admin {
        let _ = writeln!(s, "admin API on {} (token from ${})", a.addr, a.token_env);
    }
    for u in &c.upstreams {
        let targets: Vec<String> = u.targets.iter().map(|t| t.to_string()).collect();
        let _ = writeln!(
            s,
            "upstream {:?}: {} ({}, keepalive {}{})",
            u.name,
            targets.join(", "),
            u.balance,
            u.keepalive,
            if u.health.is_some() {
                ", health checked"
            } else {
                ""
            }
        );
    }
    for d in &c.domains {
        for m in &d.mappings {
            let host = match &d.host {
                HostPattern::Any => "*".to_string(),
                HostPattern::Suffix(x) => format!("*{x}"),
                HostPattern::Exact(x) => x.clone(),
            };
            let api = &c.apis[m.api];
            let _ = writeln!(
                s,
                "domain {host}/{} -> api {:?} stage {:?}",
                m.base_path.join("/"),
                api.name,
                api.stages[m.stage].name
            );
        }
        for p in &d.pending {
            let _ = writeln!(
                s,
                "domain {}/{} -> run-time api {:?} stage {:?} (not in this file: served once the state store has that stage deployed)",
                host_text(&d.host),
                p.base_path.join("/"),
                p.api,
                p.stage
            );
        }
    }
    if let Some(t) = c.throttle {
        let _ = writeln!(s, "gateway throttle: {} req/s, burst {}", t.rate, t.burst);
    }
    for p in &c.usage_plans {
        let _ = writeln!(
            s,
            "usage plan {:?}: stages {:?}{}{}",
            p.name,
            p.stage_names,
            p.throttle
                .map(|t| format!(", throttle {}/s burst {}", t.rate, t.burst))
                .unwrap_or_default(),
            p.quota
                .map(|q| format!(", quota {} per {:?}", q.limit, q.period).to_lowercase())
                .unwrap_or_default()
        );
    }
    if !c.api_keys.is_empty() {
        let _ = writeln!(s, "api keys in the config file: {}", c.api_keys.len());
    }
    for a in &c.apis {
        let stages: Vec<&str> = a.stages.iter().map(|s| s.name.as_str()).collect();
        let _ = writeln!(s, "api {:?} stages {:?}", a.name, stages);
        for r in &a.routes {
            let target = match &r.integration {
                Integration::Http { uri, timeout, .. } => {
                    format!("http {uri} (timeout {}s)", timeout.as_secs_f64())
                }
                Integration::Mock { status, .. } => format!("mock {status}"),
            };
            let mut extra = String::new();
            if r.api_key_required {
                extra.push_str(" [api key]");
            }
            if let Some(t) = r.throttle {
                extra.push_str(&format!(" [throttle {}/s burst {}]", t.rate, t.burst));
            }
            let _ = writeln!(s, "  route {} -> {target}{extra}", r.key);
        }
    }
    s
}
