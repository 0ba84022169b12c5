//! Configuration: the raw file ([`file`]) validated into a typed [`Config`] that the rest of
//! the gateway uses.
//!
//! Validation collects every error, not just the first, and each names the key, the bad value
//! and what is allowed. Keys of features this build does not have yet are refused by name: a
//! route that asks for an API key is never served without the check.

pub mod file;
pub mod units;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::syntax::route_key::{parse_route_path, MethodSel, Seg};
use crate::syntax::template::{Template, UnknownBraces};
use crate::syntax::Method;
pub use crate::throttle::bucket::Rate;
pub use crate::throttle::{Period, Quota};

/// Largest request body accepted (10 MiB); Amazon API Gateway's payload limit, nginx
/// `client_max_body_size`.
pub const DEFAULT_MAX_BODY: u64 = 10 << 20;
/// Integration timeout and its ceiling (29 s); Amazon API Gateway's, nginx `proxy_read_timeout`.
pub const DEFAULT_INTEGRATION_TIMEOUT: Duration = Duration::from_secs(29);
/// The whole request head must arrive within this (10 s); nginx `client_header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections are closed after this (60 s); nginx `keepalive_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head (16 KiB); beyond it 431. nginx `large_client_header_buffers`.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 16 << 10;
/// Concurrent client connections per gateway; nginx `worker_connections` × workers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Upstream connect timeout (3 s); nginx `proxy_connect_timeout` (60 s there, 3 s is saner).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle upstream connections kept per shard per target (32); nginx `keepalive`.
pub const DEFAULT_KEEPALIVE: usize = 32;
/// Idle upstream connections older than this are closed, before the upstream's own keep-alive
/// timeout can race a request (50 s); nginx `keepalive_timeout` in an upstream block.
pub const DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(50);
/// Consecutive failures before a shard stops using a target for `fail_timeout` (3); nginx `max_fails`.
pub const DEFAULT_MAX_FAILS: u32 = 3;
/// How long a failed target is left alone (10 s); nginx `fail_timeout`.
pub const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to finish in-flight requests on SIGTERM (30 s); Envoy `--drain-time-s`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Health check defaults: every 5 s, 2 s timeout, 3 failures down, 2 successes up.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// io_uring submission queue entries per shard.
pub const DEFAULT_URING_ENTRIES: u32 = 1024;

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
}

/// What a node does when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Enforce the node's own share of each limit (`rate / nodes`, `burst / nodes`).
    Local,
    /// Refuse what a fleet-wide limit or quota would have to allow (429).
    Deny,
}

/// `[cluster]`: gateway, stage and usage-plan limits and quotas shared by a fleet.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub redis: SocketAddr,
    /// Nodes in the fleet, for the local fallback share.
    pub nodes: u32,
    pub on_redis_error: OnRedisError,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

/// Redis round-trip timeout (250 ms); past it the node falls back as configured.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// A usage plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    /// (api, stage) indices it covers.
    #[serde(skip)]
    pub stages: Vec<(usize, usize)>,
    /// The same, as "api/stage".
    pub stage_names: Vec<String>,
    pub throttle: Option<Rate>,
    /// (api index, route index, rate): per-route overrides for keys of this plan.
    #[serde(skip)]
    pub route_throttle: Vec<(usize, usize, Rate)>,
    pub route_throttle_keys: Vec<String>,
    pub quota: Option<Quota>,
}

/// An API key declared in the config file.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigKey {
    pub name: String,
    /// Never shown: `GET /config` prints "<redacted>".
    #[serde(serialize_with = "ser_redacted")]
    pub value: String,
    pub description: String,
    pub enabled: bool,
    /// Plan names.
    pub plans: Vec<String>,
}

fn ser_redacted<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// io_uring when the kernel allows it, else epoll (with a log line saying so).
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Shards; 0 = one per online CPU.
    pub workers: usize,
    pub pin: bool,
    pub cpus: Vec<usize>,
    pub state_dir: PathBuf,
    pub driver: Driver,
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    pub uring_entries: u32,
    pub uring_flags: crate::runtime::UringFlags,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    /// TLS termination: the listener's default certificate and handshake settings.
    pub tls: Option<ListenerTls>,
    /// Protocols offered by ALPN on a TLS listener.
    pub alpn: Vec<String>,
    /// A plain listener also takes HTTP/2 with prior knowledge (RFC 9113 3.3).
    pub h2c: bool,
    /// A plain listener that answers every request with 308 to `https://` (same host, path).
    pub redirect_https: bool,
    /// TCP_DEFER_ACCEPT (nginx's `deferred`, HAProxy's `defer-accept`): a connection is
    /// handed to a shard once its first bytes have arrived, not at the handshake.
    pub defer_accept: bool,
}

/// A certificate and key, checked at load.
#[derive(Debug, Clone, Serialize)]
pub struct TlsCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub allow_expired: bool,
    /// The loaded chain and key (not serialised: `GET /config` shows the paths).
    #[serde(skip)]
    pub loaded: Option<crate::tls::LoadedCert>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerTls {
    #[serde(flatten)]
    pub cert: TlsCert,
    /// Refuse handshakes for names no certificate covers (instead of the default one).
    pub sni_strict: bool,
    pub mtls: Option<Mtls>,
}

/// Client certificates: verified against `client_ca`; `required` refuses handshakes without
/// one. `headers` forwards fields of the verified certificate to the upstream.
#[derive(Debug, Clone, Serialize)]
pub struct Mtls {
    pub client_ca: PathBuf,
    pub required: bool,
    /// (lower-cased header name, field)
    pub headers: Vec<(String, crate::syntax::CertField)>,
    #[serde(skip)]
    pub roots: Option<std::sync::Arc<rustls::RootCertStore>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Admin {
    pub addr: SocketAddr,
    pub token_env: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_body: u64,
    #[serde(serialize_with = "ser_duration")]
    pub integration_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub header_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

/// `[http2]`: HTTP/2 settings and flood limits, for every listener that speaks it.
#[derive(Debug, Clone, Serialize)]
pub struct Http2 {
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams a client may have open at once.
    pub max_concurrent_streams: u32,
    /// Initial flow-control window of each stream, and of the whole connection.
    pub stream_window: u32,
    pub connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE the gateway accepts.
    pub max_frame_size: u32,
    /// PING, SETTINGS, PRIORITY and empty DATA frames: a token bucket per connection; a
    /// client past it gets GOAWAY ENHANCE_YOUR_CALM.
    pub control_frames_per_second: u32,
    pub control_frames_burst: u32,
    /// RST_STREAM frames from the client (rapid reset, CVE-2023-44487): likewise.
    pub resets_per_second: u32,
    pub resets_burst: u32,
    /// CONTINUATION frames in one header block (CONTINUATION floods).
    pub max_continuation_frames: u32,
}

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            max_concurrent_streams: 128,
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_frame_size: 16 << 10,
            control_frames_per_second: 100,
            control_frames_burst: 1000,
            resets_per_second: 100,
            resets_burst: 400,
            max_continuation_frames: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Hash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    ClientIp,
    /// Lower-cased header name.
    Header(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Upstream {
    pub name: String,
    pub targets: Vec<SocketAddr>,
    /// Each target's host as written: the name TLS verifies unless `tls.server_name` says.
    pub hosts: Vec<String>,
    /// TLS to the targets (`https://NAME/...` integrations).
    pub tls: Option<UpstreamTls>,
    /// `protocol = "h2"`: one multiplexed HTTP/2 connection per target per shard (over TLS
    /// with ALPN h2, or h2c with prior knowledge).
    pub h2: bool,
    pub balance: Balance,
    pub keepalive: usize,
    #[serde(serialize_with = "ser_duration")]
    pub keepalive_timeout: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: Duration,
    pub max_fails: u32,
    #[serde(serialize_with = "ser_duration")]
    pub fail_timeout: Duration,
    pub health: Option<Health>,
}

/// `tls` on an upstream: verify against `ca` (else the system's roots) and `server_name`
/// (else each target's host), present `cert`/`key` when the upstream asks for one.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(skip)]
    pub client: Option<std::sync::Arc<rustls::ClientConfig>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub path: String,
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Api {
    pub name: String,
    pub stages: Vec<Stage>,
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    pub throttle: Option<Rate>,
    #[serde(serialize_with = "ser_redacted_vars")]
    pub variables: BTreeMap<String, String>,
    /// The stage's response cache; `None` when off.
    pub cache: Option<StageCache>,
}

/// Default time an answer stays in a stage cache (Amazon API Gateway's default).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// The longest a cache TTL may be.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_CACHE_CAPACITY: u64 = 128 << 20;
pub const DEFAULT_CACHE_MAX_ENTRY: u64 = 1 << 20;
pub const DEFAULT_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A stage's response cache: `cache = { enabled, ttl, capacity, ... }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCache {
    #[serde(serialize_with = "ser_duration")]
    pub ttl: Duration,
    /// Bytes of entries (bodies, headers, keys and a fixed per-entry overhead).
    pub capacity: u64,
    pub client_invalidation: Invalidation,
    pub mode: CacheMode,
    /// Larger answers pass through uncached.
    pub max_entry: u64,
    /// How long past expiry an entry may stand in for a failed upstream; zero: never.
    #[serde(serialize_with = "ser_duration")]
    pub stale_if_error: Duration,
    /// How long concurrent misses wait for the one fetch before fetching themselves.
    #[serde(serialize_with = "ser_duration")]
    pub lock_timeout: Duration,
}

/// Who may ask for a fresh copy with `Cache-Control: max-age=0` (or `no-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invalidation {
    Ignore,
    Allow,
    RequireApiKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Amazon API Gateway's semantics: 2xx GET answers kept for the configured TTL.
    Gateway,
    /// A shared cache per RFC 9111.
    Http,
}

/// A route's cache settings: `cache = { ttl, key = [...], enabled }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteCache {
    pub enabled: bool,
    #[serde(serialize_with = "ser_opt_duration")]
    pub ttl: Option<Duration>,
    pub key: Vec<KeyPart>,
}

/// One request parameter that is part of the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    Query(String),
    /// Lower-cased.
    Header(String),
    /// Index of the route's path variable (and its name).
    Path(usize, String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// As written: "GET /pets/{petId}" or "$default".
    pub key: String,
    #[serde(skip)]
    pub method: MethodSel,
    /// Empty for `$default`.
    #[serde(skip)]
    pub segs: Vec<Seg>,
    pub is_default: bool,
    pub throttle: Option<Rate>,
    pub api_key_required: bool,
    /// Names of the path variables, in order.
    pub params: Vec<String>,
    pub integration: Integration,
    pub cache: Option<RouteCache>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Integration {
    Http {
        uri: String,
        #[serde(skip)]
        template: Template,
        #[serde(serialize_with = "ser_duration")]
        timeout: Duration,
        headers: Vec<(String, String)>,
        #[serde(skip)]
        header_templates: Vec<(String, Template)>,
    },
    Mock {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        #[serde(skip)]
        header_templates: Vec<(String, Template)>,
        #[serde(skip)]
        body_template: Template,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPattern {
    Any,
    /// Lower-cased suffix including the leading dot: ".example.com".
    Suffix(String),
    Exact(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub host: HostPattern,
    /// The certificate served for this host (SNI) on TLS listeners.
    pub tls: Option<TlsCert>,
    /// Listener names this domain is served on; `None` = all.
    pub listeners: Option<Vec<String>>,
    pub mappings: Vec<Mapping>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mapping {
    /// Decoded segments of the base path; empty for "".
    pub base_path: Vec<String>,
    pub api: usize,
    pub stage: usize,
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_duration(d, s),
        None => s.serialize_none(),
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        s.serialize_str(&format!("{}s", ms / 1000))
    } else {
        s.serialize_str(&format!("{ms}ms"))
    }
}

/// Stage variables whose names suggest a secret are shown as "<redacted>".
fn ser_redacted_vars<S: serde::Serializer>(
    v: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = v
        .iter()
        .map(|(k, val)| {
            let lk = k.to_ascii_lowercase();
            let secret = ["secret", "token", "password", "passwd", "key", "credential"]
                .iter()
                .any(|w| lk.contains(w));
            (k.as_str(), if secret { "<redacted>" } else { val.as_str() })
        })
        .collect();
    shown.serialize(s)
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

impl Config {
    /// Reads, parses and validates a file. Relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            errors: vec![format!("cannot read config file {}: {e}", path.display())],
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &base)
    }

    /// Parses and validates TOML text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: file::File = toml::from_str(text).map_err(|e| ConfigError {
            errors: vec![format!("config is not valid: {}", e.to_string().trim_end())],
        })?;
        let mut v = Validator { errors: Vec::new() };
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
}

/// Names a table in an array for error messages: `apis["petstore"]` or `apis[0]`.
fn item(prefix: &str, i: usize, name: Option<&String>) -> String {
    match name {
        Some(n) => format!("{prefix}[{n:?}]"),
        None => format!("{prefix}[{i}]"),
    }
}

impl Validator {
    fn err(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{key}: {msg}"));
    }

    fn bad(&mut self, key: &str, value: impl std::fmt::Debug, allowed: &str) {
        self.errors.push(format!(
            "{key} = {value:?} is not valid: expected {allowed}"
        ));
    }

    fn unsupported(&mut self, key: &str, feature: &str) {
        self.errors.push(format!(
            "{key}: not supported yet: this version of Tollgate does not have {feature}; remove the key to run without it"
        ));
    }

    fn cluster(&mut self, c: file::ClusterFile) -> Cluster {
        let redis = match c.redis.as_deref() {
            Some(u) => match u
                .strip_prefix("redis://")
                .map(|r| r.trim_end_matches('/'))
                .and_then(|r| resolve(r).ok())
            {
                Some(a) => a,
                None => {
                    self.bad("cluster.redis", u, "\"redis://HOST:PORT\" that resolves");
                    SocketAddr::from(([127, 0, 0, 1], 6379))
                }
            },
            None => {
                self.err("cluster.redis", "is required: \"redis://HOST:PORT\"");
                SocketAddr::from(([127, 0, 0, 1], 6379))
            }
        };
        let on_redis_error = match c.on_redis_error.as_deref() {
            None | Some("local") => OnRedisError::Local,
            Some("deny") => OnRedisError::Deny,
            Some(other) => {
                self.bad("cluster.on_redis_error", other, "\"local\" or \"deny\"");
                OnRedisError::Local
            }
        };
        Cluster {
            redis,
            nodes: self.int_in("cluster.nodes", c.nodes, 1, 1, 10_000) as u32,
            on_redis_error,
            timeout: self.duration("cluster.timeout", c.timeout.as_ref(), DEFAULT_REDIS_TIMEOUT),
        }
    }

    /// `{ rate, burst }`: both required, 1 to 1,000,000,000.
    fn rate(&mut self, key: &str, r: file::RateFile) -> Option<Rate> {
        const MAX: i64 = 1_000_000_000;
        let mut get = |v: Option<i64>, what: &str| match v {
            Some(n) if (1..=MAX).contains(&n) => Some(n as u64),
            Some(n) => {
                self.bad(
                    &format!("{key}.{what}"),
                    n,
                    "an integer from 1 to 1000000000",
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

    fn plans(&mut self, raw: Vec<file::PlanFile>, apis: &[Api]) -> Vec<Plan> {
        let mut out: Vec<Plan> = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let key = item("usage_plans", i, p.name.as_ref());
            let name = self.name(&format!("{key}.name"), p.name);
            if out.iter().any(|o| o.name == name) {
                self.err(&format!("{key}.name"), "is used by two usage plans");
            }
            let mut stages = Vec::new();
            for (j, s) in p.stages.iter().enumerate() {
                let found = s.split_once('/').and_then(|(a, st)| {
                    let ai = apis.iter().position(|x| x.name == a)?;
                    let si = apis[ai].stages.iter().position(|x| x.name == st)?;
                    Some((ai, si))
                });
                match found {
                    Some(x) => stages.push(x),
                    None => self.bad(
                        &format!("{key}.stages[{j}]"),
                        s,
                        "\"api/stage\" naming an API and one of its stages",
                    ),
                }
            }
            if stages.is_empty() {
                self.err(
                    &format!("{key}.stages"),
                    "lists no stage: a plan applies to at least one \"api/stage\"",
                );
            }
            let throttle = p
                .throttle
                .and_then(|t| self.rate(&format!("{key}.throttle"), t));
            let mut route_throttle = Vec::new();
            let mut route_throttle_keys = Vec::new();
            for (rk, t) in p.route_throttle {
                let rkey = format!("{key}.route_throttle[{rk:?}]");
                let Some(rate) = self.rate(&rkey, t) else {
                    continue;
                };
                let mut hit = false;
                for &(ai, _) in &stages {
                    if let Some(ri) = apis[ai].routes.iter().position(|r| r.key == rk) {
                        if !route_throttle.iter().any(|&(a, r, _)| a == ai && r == ri) {
                            route_throttle.push((ai, ri, rate));
                        }
                        hit = true;
                    }
                }
                if !hit {
                    self.bad(
                        &rkey,
                        &rk,
                        "a route key (\"METHOD /path\") of an API this plan covers",
                    );
                }
                route_throttle_keys.push(rk);
            }
            let quota = p.quota.and_then(|q| {
                let limit = match q.limit {
                    Some(n) if n >= 1 => Some(n as u64),
                    Some(n) => {
                        self.bad(
                            &format!("{key}.quota.limit"),
                            n,
                            "a positive number of requests",
                        );
                        None
                    }
                    None => {
                        self.err(&format!("{key}.quota.limit"), "is required");
                        None
                    }
                };
                let period = match q.period.as_deref() {
                    Some("day") => Some(Period::Day),
                    Some("week") => Some(Period::Week),
                    Some("month") => Some(Period::Month),
                    other => {
                        self.bad(
                            &format!("{key}.quota.period"),
                            other.unwrap_or(""),
                            "\"day\", \"week\" or \"month\"",
                        );
                        None
                    }
                };
                Some(Quota {
                    limit: limit?,
                    period: period?,
                })
            });
            out.push(Plan {
                name,
                description: p.description.unwrap_or_default(),
                stage_names: p.stages,
                stages,
                throttle,
                route_throttle,
                route_throttle_keys,
                quota,
            });
        }
        out
    }

    fn keys(&mut self, raw: Vec<file::KeyFile>, plans: &[Plan]) -> Vec<ConfigKey> {
        let mut out: Vec<ConfigKey> = Vec::new();
        for (i, k) in raw.into_iter().enumerate() {
            let key = item("api_keys", i, k.name.as_ref());
            let name = self.name(&format!("{key}.name"), k.name);
            if out.iter().any(|o| o.name == name) {
                self.err(&format!("{key}.name"), "is used by two API keys");
            }
            let value = match k.value {
                Some(v) if crate::auth::valid_key_value(&v) => v,
                Some(_) => {
                    // The value itself is a secret: never echo it.
                    self.err(&format!("{key}.value"), "is not valid: expected 20 to 128 visible ASCII characters (the value is not shown)");
                    String::new()
                }
                None => {
                    self.err(
                        &format!("{key}.value"),
                        "is required (at least 20 characters; sent as the x-api-key header)",
                    );
                    String::new()
                }
            };
            if !value.is_empty() && out.iter().any(|o| o.value == value) {
                self.err(
                    &format!("{key}.value"),
                    "is the same as another key's; values must be unique",
                );
            }
            let mut names: Vec<String> = k.plans.unwrap_or_default();
            if let Some(p) = k.plan {
                names.insert(0, p);
            }
            let mut covered: Vec<(usize, usize)> = Vec::new();
            for n in &names {
                match plans.iter().find(|p| &p.name == n) {
                    None => self.bad(
                        &format!("{key}.plan"),
                        n,
                        "the name of a [[usage_plans]] entry",
                    ),
                    Some(p) => {
                        for s in &p.stages {
                            if covered.contains(s) {
                                self.err(&format!("{key}.plans"), format!("plan {n:?} covers a stage another of this key's plans covers; a key belongs to at most one plan per stage"));
                            }
                            covered.push(*s);
                        }
                    }
                }
            }
            out.push(ConfigKey {
                name,
                value,
                description: k.description.unwrap_or_default(),
                enabled: k.enabled.unwrap_or(true),
                plans: names,
            });
        }
        out
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
            Some(s) if crate::syntax::template::is_ident(&s) => s,
            Some(s) => {
                self.bad(key, s, "a name of letters, digits, '_' or '-'");
                String::new()
            }
            None => {
                self.err(key, "is required");
                String::new()
            }
        }
    }

    fn config(&mut self, raw: file::File, base: &Path) -> Config {
        let server = self.server(raw.server, base);
        let listeners = self.listeners(raw.listeners, base);
        let admin = raw.admin.map(|a| self.admin(a));
        let limits = self.limits(raw.limits);
        let http2 = self.http2(raw.http2);
        let throttle = raw.throttle.and_then(|t| self.rate("throttle", t));
        let cluster = raw.cluster.map(|c| self.cluster(c));
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
            .map(|(i, a)| self.api(i, a, &limits, &upstreams))
            .collect();
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
        for i in 0..domains.len() {
            for j in 0..i {
                if domains[i].host == domains[j].host
                    && domains[i].listeners == domains[j].listeners
                {
                    self.err(
                        &format!("domains[{i}].host"),
                        format!(
                            "{:?} is declared twice (also domains[{j}])",
                            domains[i].host
                        ),
                    );
                }
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
        }
    }

    fn server(&mut self, s: file::ServerFile, base: &Path) -> Server {
        let workers = self.int_in("server.workers", s.workers, 0, 0, 1024) as usize;
        let cpus: Vec<usize> = s
            .cpus
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| {
                if (0..4096).contains(&c) {
                    Some(c as usize)
                } else {
                    self.bad(
                        &format!("server.cpus[{i}]"),
                        c,
                        "a CPU number from 0 to 4095",
                    );
                    None
                }
            })
            .collect();
        let pin = s.pin.unwrap_or(false);
        if pin && !cpus.is_empty() && workers > cpus.len() {
            self.err("server.cpus", format!("lists {} CPUs but server.workers = {workers}; list at least one CPU per worker", cpus.len()));
        }
        let driver = match s.driver.as_deref() {
            None | Some("auto") => Driver::Auto,
            Some("io_uring") => Driver::IoUring,
            Some("epoll") => Driver::Epoll,
            Some(other) => {
                self.bad(
                    "server.driver",
                    other,
                    "\"auto\", \"io_uring\" or \"epoll\"",
                );
                Driver::Auto
            }
        };
        let state_dir = base.join(s.state_dir.unwrap_or_else(|| "data".into()));
        let mut uring_flags = crate::runtime::UringFlags::DEFAULT;
        if let Some(flags) = s.uring_flags {
            uring_flags = crate::runtime::UringFlags::default();
            for (i, f) in flags.iter().enumerate() {
                match f.as_str() {
                    "coop_taskrun" => uring_flags.coop_taskrun = true,
                    "single_issuer" => uring_flags.single_issuer = true,
                    "defer_taskrun" => uring_flags.defer_taskrun = true,
                    _ => self.bad(
                        &format!("server.uring_flags[{i}]"),
                        f,
                        "\"coop_taskrun\", \"single_issuer\" or \"defer_taskrun\"",
                    ),
                }
            }
            if uring_flags.defer_taskrun && !uring_flags.single_issuer {
                self.err(
                    "server.uring_flags",
                    "\"defer_taskrun\" needs \"single_issuer\" too",
                );
            }
        }
        Server {
            workers,
            pin,
            cpus,
            state_dir,
            driver,
            drain_timeout: self.duration(
                "server.drain_timeout",
                s.drain_timeout.as_ref(),
                DEFAULT_DRAIN_TIMEOUT,
            ),
            uring_flags,
            uring_entries: self.int_in(
                "server.uring_entries",
                s.uring_entries,
                DEFAULT_URING_ENTRIES as i64,
                256,
                32768,
            ) as u32,
        }
    }

    fn socket_addr(&mut self, key: &str, s: Option<String>) -> Option<SocketAddr> {
        match s {
            None => {
                self.err(key, "is required");
                None
            }
            Some(s) => match s.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.bad(
                        key,
                        s,
                        "an IP address and port such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    );
                    None
                }
            },
        }
    }

    /// Loads and checks a certificate and key (paths relative to the config file).
    fn tls_cert(&mut self, key: &str, t: file::TlsFile, base: &Path) -> Option<TlsCert> {
        let (Some(cert), Some(k)) = (t.cert, t.key) else {
            self.err(
                key,
                "needs cert and key: { cert = \"server.pem\", key = \"server.key\" } (PEM files)",
            );
            return None;
        };
        let (cert, k) = (base.join(cert), base.join(k));
        let allow_expired = t.allow_expired.unwrap_or(false);
        match crate::tls::load_cert(&cert, &k, allow_expired) {
            Ok(loaded) => Some(TlsCert {
                cert,
                key: k,
                allow_expired,
                loaded: Some(loaded),
            }),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    fn mtls(&mut self, key: &str, m: file::MtlsFile, base: &Path) -> Option<Mtls> {
        let required = match m.mode.as_deref() {
            None | Some("required") => true,
            Some("optional") => false,
            Some(other) => {
                self.bad(
                    &format!("{key}.mode"),
                    other,
                    "\"required\" or \"optional\"",
                );
                true
            }
        };
        let mut headers = Vec::new();
        for (name, field) in m.headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                self.bad(&format!("{key}.headers"), &name, "a header name");
                continue;
            }
            match crate::syntax::CertField::parse(&field) {
                Some(f) => headers.push((name.to_ascii_lowercase(), f)),
                None => self.bad(
                    &format!("{key}.headers.{name}"),
                    &field,
                    crate::syntax::CertField::HELP,
                ),
            }
        }
        let Some(ca) = m.client_ca else {
            self.err(
                &format!("{key}.client_ca"),
                "is required: a PEM file of the CA certificates client certificates must chain to",
            );
            return None;
        };
        let client_ca = base.join(ca);
        match crate::tls::load_roots(&client_ca) {
            Ok(roots) => Some(Mtls {
                client_ca,
                required,
                headers,
                roots: Some(roots),
            }),
            Err(e) => {
                self.err(&format!("{key}.client_ca"), e);
                None
            }
        }
    }

    fn listeners(&mut self, raw: Vec<file::ListenerFile>, base: &Path) -> Vec<Listener> {
        if raw.is_empty() {
            self.err("listeners", "at least one [[listeners]] entry is required");
        }
        let mut out: Vec<Listener> = Vec::new();
        for (i, l) in raw.into_iter().enumerate() {
            let key = item("listeners", i, l.name.as_ref());
            let name = self.name(&format!("{key}.name"), l.name);
            if l.mtls.is_some() && l.tls.is_none() {
                self.err(&format!("{key}.mtls"), "needs tls on the same listener");
            }
            let has_tls = l.tls.is_some();
            let mtls = l
                .mtls
                .and_then(|m| self.mtls(&format!("{key}.mtls"), m, base));
            let tls = l.tls.and_then(|t| {
                let strict = t.sni_strict.unwrap_or(false);
                self.tls_cert(&format!("{key}.tls"), t, base)
                    .map(|cert| ListenerTls {
                        cert,
                        sni_strict: strict,
                        mtls,
                    })
            });
            let h2c = l.h2c.unwrap_or(false);
            if h2c && has_tls {
                self.err(
                    &format!("{key}.h2c"),
                    "belongs on a plain listener: a TLS listener offers HTTP/2 by ALPN (alpn)",
                );
            }
            let alpn = l
                .alpn
                .unwrap_or_else(|| vec!["h2".to_string(), "http/1.1".to_string()]);
            if alpn.is_empty() {
                self.bad(
                    &format!("{key}.alpn"),
                    "[]",
                    "a list of \"h2\" and/or \"http/1.1\"",
                );
            }
            for (j, p) in alpn.iter().enumerate() {
                match p.as_str() {
                    "http/1.1" | "h2" if alpn[..j].contains(p) => {
                        self.bad(&format!("{key}.alpn"), p, "each protocol once")
                    }
                    "http/1.1" | "h2" => {}
                    other => self.bad(&format!("{key}.alpn"), other, "\"h2\" or \"http/1.1\""),
                }
            }
            let defer_accept = l.defer_accept.unwrap_or(false);
            let redirect_https = l.redirect_https.unwrap_or(false);
            if redirect_https && tls.is_some() {
                self.err(
                    &format!("{key}.redirect_https"),
                    "belongs on a plain listener: this one already serves HTTPS",
                );
            }
            let Some(addr) = self.socket_addr(&format!("{key}.addr"), l.addr) else {
                continue;
            };
            if out.iter().any(|o| o.name == name && !name.is_empty()) {
                self.err(
                    &format!("{key}.name"),
                    "is used by two listeners; names must be unique",
                );
            }
            if addr.port() != 0 && out.iter().any(|o| o.addr == addr) {
                self.err(
                    &format!("{key}.addr"),
                    format!("{addr} is used by two listeners"),
                );
            }
            out.push(Listener {
                name,
                addr,
                tls,
                alpn,
                h2c,
                redirect_https,
                defer_accept,
            });
        }
        out
    }

    fn admin(&mut self, a: file::AdminFile) -> Admin {
        let addr = self
            .socket_addr("admin.addr", a.addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let token_env = match a.token_env {
            Some(s) if !s.is_empty() => s,
            Some(s) => {
                self.bad(
                    "admin.token_env",
                    s,
                    "the name of an environment variable that holds the admin token",
                );
                String::new()
            }
            None => "TOLLGATE_ADMIN_TOKEN".into(),
        };
        Admin { addr, token_env }
    }

    fn limits(&mut self, l: file::LimitsFile) -> Limits {
        let max_header_bytes = self.size(
            "limits.max_header_bytes",
            l.max_header_bytes.as_ref(),
            DEFAULT_MAX_HEADER_BYTES,
        );
        let max_header_bytes = if (1024..=1 << 20).contains(&max_header_bytes) {
            max_header_bytes as usize
        } else {
            self.bad(
                "limits.max_header_bytes",
                max_header_bytes,
                "a size from 1KiB to 1MiB",
            );
            DEFAULT_MAX_HEADER_BYTES as usize
        };
        Limits {
            max_body: self.size("limits.max_body", l.max_body.as_ref(), DEFAULT_MAX_BODY),
            integration_timeout: self.duration(
                "limits.integration_timeout",
                l.integration_timeout.as_ref(),
                DEFAULT_INTEGRATION_TIMEOUT,
            ),
            header_timeout: self.duration(
                "limits.header_timeout",
                l.header_timeout.as_ref(),
                DEFAULT_HEADER_TIMEOUT,
            ),
            idle_timeout: self.duration(
                "limits.idle_timeout",
                l.idle_timeout.as_ref(),
                DEFAULT_IDLE_TIMEOUT,
            ),
            max_header_bytes,
            max_connections: self.int_in(
                "limits.max_connections",
                l.max_connections,
                DEFAULT_MAX_CONNECTIONS as i64,
                1,
                10_000_000,
            ) as usize,
        }
    }

    fn http2(&mut self, h: file::Http2File) -> Http2 {
        let d = Http2::default();
        let window = |me: &mut Self, key: &str, v: Option<&file::SizeValue>, default: u32| {
            let n = me.size(key, v, default as u64);
            if (65_535..=(1u64 << 31) - 1).contains(&n) {
                n as u32
            } else {
                me.bad(
                    key,
                    n,
                    "a size from 65535 bytes to 2GiB - 1 (RFC 9113 6.9.2)",
                );
                default
            }
        };
        let stream_window = window(
            self,
            "http2.stream_window",
            h.stream_window.as_ref(),
            d.stream_window,
        );
        let connection_window = window(
            self,
            "http2.connection_window",
            h.connection_window.as_ref(),
            d.connection_window,
        );
        let frame = self.size(
            "http2.max_frame_size",
            h.max_frame_size.as_ref(),
            d.max_frame_size as u64,
        );
        let max_frame_size = if (16_384..=16_777_215).contains(&frame) {
            frame as u32
        } else {
            self.bad(
                "http2.max_frame_size",
                frame,
                "a size from 16KiB to 16MiB - 1 (RFC 9113 6.5.2)",
            );
            d.max_frame_size
        };
        let mut int = |key: &str, v: Option<i64>, default: u32, lo: i64, hi: i64| {
            self.int_in(&format!("http2.{key}"), v, default as i64, lo, hi) as u32
        };
        Http2 {
            max_concurrent_streams: int(
                "max_concurrent_streams",
                h.max_concurrent_streams,
                d.max_concurrent_streams,
                1,
                65_536,
            ),
            stream_window,
            connection_window,
            max_frame_size,
            control_frames_per_second: int(
                "control_frames_per_second",
                h.control_frames_per_second,
                d.control_frames_per_second,
                1,
                1_000_000,
            ),
            control_frames_burst: int(
                "control_frames_burst",
                h.control_frames_burst,
                d.control_frames_burst,
                1,
                1_000_000,
            ),
            resets_per_second: int(
                "resets_per_second",
                h.resets_per_second,
                d.resets_per_second,
                1,
                1_000_000,
            ),
            resets_burst: int("resets_burst", h.resets_burst, d.resets_burst, 1, 1_000_000),
            max_continuation_frames: int(
                "max_continuation_frames",
                h.max_continuation_frames,
                d.max_continuation_frames,
                1,
                1024,
            ),
        }
    }

    fn upstream_tls(
        &mut self,
        key: &str,
        t: file::UpstreamTlsFile,
        base: &Path,
        h2: bool,
    ) -> Option<UpstreamTls> {
        let ca = t.ca.map(|c| base.join(c));
        let cert = t.cert.map(|c| base.join(c));
        let k = t.key.map(|c| base.join(c));
        if cert.is_some() != k.is_some() {
            self.err(
                key,
                "a client certificate needs both cert and key (PEM files)",
            );
            return None;
        }
        if let Some(n) = &t.server_name {
            if let Err(e) = crate::tls::client::server_name(n) {
                self.bad(
                    &format!("{key}.server_name"),
                    n,
                    &format!("a host name ({e})"),
                );
                return None;
            }
        }
        let client = cert.as_deref().zip(k.as_deref());
        match crate::tls::client::client_config(ca.as_deref(), client, h2) {
            Ok(c) => Some(UpstreamTls {
                ca,
                server_name: t.server_name,
                cert,
                key: k,
                client: Some(c),
            }),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    fn upstream(&mut self, i: usize, u: file::UpstreamFile, base: &Path) -> Upstream {
        let key = item("upstreams", i, u.name.as_ref());
        let name = self.name(&format!("{key}.name"), u.name);
        let h2 = match u.protocol.as_deref() {
            None | Some("http/1.1") => false,
            Some("h2") => true,
            Some(p) => {
                self.bad(&format!("{key}.protocol"), p, "\"http/1.1\" or \"h2\"");
                false
            }
        };
        let tls = u
            .tls
            .and_then(|t| self.upstream_tls(&format!("{key}.tls"), t, base, h2));
        let mut hosts = Vec::new();
        let mut targets = Vec::new();
        match u.targets {
            None => self.err(
                &format!("{key}.targets"),
                "is required: a list of \"host:port\"",
            ),
            Some(t) if t.is_empty() => self.err(
                &format!("{key}.targets"),
                "is empty: list at least one \"host:port\"",
            ),
            Some(t) => {
                for (j, s) in t.into_iter().enumerate() {
                    match resolve(&s) {
                        Ok(a) => {
                            targets.push(a);
                            let host = s.rsplit_once(':').map_or(s.as_str(), |(h, _)| h);
                            hosts.push(host.to_string());
                        }
                        Err(e) => self.bad(
                            &format!("{key}.targets[{j}]"),
                            s,
                            &format!("\"host:port\" that resolves ({e})"),
                        ),
                    }
                }
            }
        }
        let balance = match u.balance.as_deref() {
            None | Some("round_robin") => Balance::RoundRobin,
            Some("least_request") => Balance::LeastRequest,
            Some("hash") => match u.hash_key.as_deref() {
                None | Some("client_ip") => Balance::Hash(HashKey::ClientIp),
                Some(h) => match h.strip_prefix("header.") {
                    Some(n) if !n.is_empty() => {
                        Balance::Hash(HashKey::Header(n.to_ascii_lowercase()))
                    }
                    _ => {
                        self.bad(
                            &format!("{key}.hash_key"),
                            h,
                            "\"client_ip\" or \"header.NAME\"",
                        );
                        Balance::RoundRobin
                    }
                },
            },
            Some(other) => {
                self.bad(
                    &format!("{key}.balance"),
                    other,
                    "\"round_robin\", \"least_request\" or \"hash\"",
                );
                Balance::RoundRobin
            }
        };
        if u.hash_key.is_some() && !matches!(balance, Balance::Hash(_)) {
            self.err(
                &format!("{key}.hash_key"),
                "is only used with balance = \"hash\"",
            );
        }
        let health = u.health.map(|h| {
            let hk = format!("{key}.health");
            let path = match h.path {
                Some(p) if p.starts_with('/') => p,
                Some(p) => {
                    self.bad(&format!("{hk}.path"), p, "a path starting with /");
                    "/".into()
                }
                None => {
                    self.err(&format!("{hk}.path"), "is required");
                    "/".into()
                }
            };
            Health {
                path,
                interval: self.duration(
                    &format!("{hk}.interval"),
                    h.interval.as_ref(),
                    DEFAULT_HEALTH_INTERVAL,
                ),
                timeout: self.duration(
                    &format!("{hk}.timeout"),
                    h.timeout.as_ref(),
                    DEFAULT_HEALTH_TIMEOUT,
                ),
                unhealthy_after: self.int_in(
                    &format!("{hk}.unhealthy_after"),
                    h.unhealthy_after,
                    3,
                    1,
                    1000,
                ) as u32,
                healthy_after: self.int_in(
                    &format!("{hk}.healthy_after"),
                    h.healthy_after,
                    2,
                    1,
                    1000,
                ) as u32,
            }
        });
        Upstream {
            name,
            targets,
            hosts,
            tls,
            h2,
            balance,
            keepalive: self.int_in(
                &format!("{key}.keepalive"),
                u.keepalive,
                DEFAULT_KEEPALIVE as i64,
                0,
                100_000,
            ) as usize,
            keepalive_timeout: self.duration(
                &format!("{key}.keepalive_timeout"),
                u.keepalive_timeout.as_ref(),
                DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
            ),
            connect_timeout: self.duration(
                &format!("{key}.connect_timeout"),
                u.connect_timeout.as_ref(),
                DEFAULT_CONNECT_TIMEOUT,
            ),
            max_fails: self.int_in(
                &format!("{key}.max_fails"),
                u.max_fails,
                DEFAULT_MAX_FAILS as i64,
                0,
                1000,
            ) as u32,
            fail_timeout: self.duration(
                &format!("{key}.fail_timeout"),
                u.fail_timeout.as_ref(),
                DEFAULT_FAIL_TIMEOUT,
            ),
            health,
        }
    }

    fn api(&mut self, i: usize, a: file::ApiFile, limits: &Limits, upstreams: &[Upstream]) -> Api {
        let key = item("apis", i, a.name.as_ref());
        let name = self.name(&format!("{key}.name"), a.name);
        match a.kind.as_deref() {
            None | Some("http") => {}
            Some("websocket") => self.unsupported(
                &format!("{key}.kind"),
                "WebSocket APIs (kind = \"websocket\"; WebSocket upgrades on http routes do work)",
            ),
            Some(other) => self.bad(&format!("{key}.kind"), other, "\"http\" or \"websocket\""),
        }
        if a.stages.is_empty() {
            self.err(
                &format!("{key}.stages"),
                "at least one [[apis.stages]] entry is required",
            );
        }
        let mut stages: Vec<Stage> = Vec::new();
        for (j, s) in a.stages.into_iter().enumerate() {
            let skey = format!("{key}.{}", item("stages", j, s.name.as_ref()));
            let sname = self.name(&format!("{skey}.name"), s.name);
            if stages.iter().any(|o| o.name == sname) {
                self.err(&format!("{skey}.name"), "is used by two stages of this API");
            }
            let throttle = s
                .throttle
                .and_then(|t| self.rate(&format!("{skey}.throttle"), t));
            let cache = s
                .cache
                .and_then(|c| self.stage_cache(&format!("{skey}.cache"), c));
            for k in s.variables.keys() {
                if !crate::syntax::template::is_ident(k) {
                    self.bad(
                        &format!("{skey}.variables"),
                        k,
                        "variable names of letters, digits, '_' or '-'",
                    );
                }
            }
            stages.push(Stage {
                name: sname,
                throttle,
                variables: s.variables,
                cache,
            });
        }
        let mut routes: Vec<Route> = Vec::new();
        let mut trie = crate::route::trie::Trie::<()>::default();
        for (j, r) in a.routes.into_iter().enumerate() {
            let rkey = format!("{key}.{}", item("routes", j, r.route.as_ref()));
            if let Some(route) = self.route(&rkey, r, limits, upstreams, &stages) {
                let dup = if route.is_default {
                    trie.set_default(())
                } else {
                    trie.insert(route.method, &route.segs, ())
                };
                if let Err(e) = dup {
                    self.err(&format!("{rkey}.route"), e);
                }
                routes.push(route);
            }
        }
        Api {
            name,
            stages,
            routes,
        }
    }

    fn route(
        &mut self,
        rkey: &str,
        r: file::RouteFile,
        limits: &Limits,
        upstreams: &[Upstream],
        stages: &[Stage],
    ) -> Option<Route> {
        let api_key_required = r.api_key_required.unwrap_or(false);
        let throttle = r
            .throttle
            .and_then(|t| self.rate(&format!("{rkey}.throttle"), t));
        let Some(key) = r.route else {
            self.err(
                &format!("{rkey}.route"),
                "is required: \"METHOD /path\" or \"$default\"",
            );
            return None;
        };
        let (method, segs, is_default) = if key == "$default" {
            (MethodSel::Any, Vec::new(), true)
        } else {
            let Some((m, p)) = key.split_once(' ') else {
                self.bad(
                    &format!("{rkey}.route"),
                    &key,
                    "\"METHOD /path\" (e.g. \"GET /pets/{petId}\") or \"$default\"",
                );
                return None;
            };
            let method = if m == "ANY" {
                MethodSel::Any
            } else if let Some(m) = Method::from_route_name(m) {
                MethodSel::One(m)
            } else {
                self.bad(&format!("{rkey}.route"), &key, "a method of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT or ANY");
                return None;
            };
            match parse_route_path(p.trim()) {
                Ok(segs) => (method, segs, false),
                Err(e) => {
                    self.err(&format!("{rkey}.route"), e);
                    return None;
                }
            }
        };
        let params: Vec<String> = segs
            .iter()
            .filter_map(|s| match s {
                Seg::Param(n) | Seg::Greedy(n) => Some(n.clone()),
                Seg::Lit(_) => None,
            })
            .collect();
        let Some(integ) = r.integration else {
            self.err(&format!("{rkey}.integration"), "is required");
            return None;
        };
        let ikey = format!("{rkey}.integration");
        let cache = r
            .cache
            .and_then(|c| self.route_cache(&format!("{rkey}.cache"), c, &params));
        let integration = self.integration(&ikey, integ, &params, limits, upstreams, stages)?;
        Some(Route {
            key,
            method,
            segs,
            is_default,
            throttle,
            api_key_required,
            params,
            integration,
            cache,
        })
    }

    /// A cache TTL: zero allowed (it turns the cache off), at most [`MAX_CACHE_TTL`].
    fn cache_ttl(&mut self, key: &str, v: &str) -> Option<Duration> {
        match units::parse_duration(v) {
            Ok(d) if d > MAX_CACHE_TTL => {
                self.bad(key, v, "a duration from \"0s\" (off) to \"3600s\"");
                None
            }
            Ok(d) => Some(d),
            Err(allowed) => {
                self.bad(key, v, &allowed);
                None
            }
        }
    }

    fn stage_cache(&mut self, key: &str, c: file::StageCacheFile) -> Option<StageCache> {
        let ttl = match &c.ttl {
            None => DEFAULT_CACHE_TTL,
            Some(v) => self.cache_ttl(&format!("{key}.ttl"), v)?,
        };
        let capacity = self.size(
            &format!("{key}.capacity"),
            c.capacity.as_ref(),
            DEFAULT_CACHE_CAPACITY,
        );
        if capacity < 64 << 10 {
            self.bad(&format!("{key}.capacity"), capacity, "at least 64KiB");
        }
        let max_entry = self.size(
            &format!("{key}.max_entry"),
            c.max_entry.as_ref(),
            DEFAULT_CACHE_MAX_ENTRY.min(capacity / 8),
        );
        if max_entry == 0 || max_entry > capacity / 8 {
            self.bad(
                &format!("{key}.max_entry"),
                max_entry,
                "from 1 byte to an eighth of capacity",
            );
        }
        let client_invalidation = match c.client_invalidation.as_deref() {
            None | Some("require_api_key") => Invalidation::RequireApiKey,
            Some("ignore") => Invalidation::Ignore,
            Some("allow") => Invalidation::Allow,
            Some(other) => {
                self.bad(
                    &format!("{key}.client_invalidation"),
                    other,
                    "\"ignore\", \"allow\" or \"require_api_key\"",
                );
                Invalidation::RequireApiKey
            }
        };
        let mode = match c.mode.as_deref() {
            None | Some("gateway") => CacheMode::Gateway,
            Some("http") => CacheMode::Http,
            Some(other) => {
                self.bad(&format!("{key}.mode"), other, "\"gateway\" or \"http\"");
                CacheMode::Gateway
            }
        };
        let stale_if_error = match &c.stale_if_error {
            None => Duration::ZERO,
            Some(v) => match units::parse_duration(v) {
                Ok(d) if d <= Duration::from_secs(86_400) => d,
                Ok(_) => {
                    self.bad(&format!("{key}.stale_if_error"), v, "at most \"1d\"");
                    Duration::ZERO
                }
                Err(allowed) => {
                    self.bad(&format!("{key}.stale_if_error"), v, &allowed);
                    Duration::ZERO
                }
            },
        };
        let lock_timeout = self.duration(
            &format!("{key}.lock_timeout"),
            c.lock_timeout.as_ref(),
            DEFAULT_CACHE_LOCK_TIMEOUT,
        );
        if c.enabled == Some(false) || ttl.is_zero() {
            return None;
        }
        Some(StageCache {
            ttl,
            capacity,
            client_invalidation,
            mode,
            max_entry,
            stale_if_error,
            lock_timeout,
        })
    }

    fn route_cache(
        &mut self,
        key: &str,
        c: file::RouteCacheFile,
        params: &[String],
    ) -> Option<RouteCache> {
        let ttl = match &c.ttl {
            None => None,
            Some(v) => Some(self.cache_ttl(&format!("{key}.ttl"), v)?),
        };
        let mut parts = Vec::new();
        for p in c.key.unwrap_or_default() {
            let k = format!("{key}.key");
            let part = match p.split_once('.') {
                Some(("query", n)) if !n.is_empty() => KeyPart::Query(n.to_string()),
                Some(("header", n))
                    if !n.is_empty()
                        && n.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
                        }) =>
                {
                    KeyPart::Header(n.to_ascii_lowercase())
                }
                Some(("path", n)) => match params.iter().position(|x| x == n) {
                    Some(i) => KeyPart::Path(i, n.to_string()),
                    None => {
                        self.bad(
                            &k,
                            &p,
                            "\"path.NAME\" with NAME a variable of this route's path",
                        );
                        continue;
                    }
                },
                _ => {
                    self.bad(&k, &p, "\"query.NAME\", \"header.NAME\" or \"path.NAME\"");
                    continue;
                }
            };
            if parts.contains(&part) {
                self.bad(&k, &p, "each parameter once");
                continue;
            }
            parts.push(part);
        }
        Some(RouteCache {
            enabled: c.enabled.unwrap_or(true) && ttl != Some(Duration::ZERO),
            ttl,
            key: parts,
        })
    }

    fn header_templates(
        &mut self,
        key: &str,
        headers: BTreeMap<String, String>,
        params: &[String],
    ) -> (Vec<(String, String)>, HeaderTemplates) {
        let mut raw = Vec::new();
        let mut parsed = Vec::new();
        for (name, value) in headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                self.bad(
                    &format!("{key}.headers"),
                    &name,
                    "a header name (RFC 9110 token characters)",
                );
                continue;
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                self.bad(
                    &format!("{key}.headers.{name}"),
                    &value,
                    "a value without CR, LF or NUL",
                );
                continue;
            }
            match Template::parse(&value, params, UnknownBraces::Literal) {
                Ok(t) => parsed.push((name.to_ascii_lowercase(), t)),
                Err(e) => self.err(&format!("{key}.headers.{name}"), e),
            }
            raw.push((name, value));
        }
        (raw, parsed)
    }

    fn integration(
        &mut self,
        ikey: &str,
        i: file::IntegrationFile,
        params: &[String],
        limits: &Limits,
        upstreams: &[Upstream],
        stages: &[Stage],
    ) -> Option<Integration> {
        let (headers, header_templates) = self.header_templates(ikey, i.headers, params);
        match i.kind.as_deref() {
            Some("http") => {
                if i.status.is_some() || i.body.is_some() {
                    self.err(ikey, "status and body belong to type = \"mock\"");
                }
                let Some(uri) = i.uri else {
                    self.err(&format!("{ikey}.uri"), "is required for type = \"http\"");
                    return None;
                };
                let timeout = self.duration(
                    &format!("{ikey}.timeout"),
                    i.timeout.as_ref(),
                    limits.integration_timeout,
                );
                if timeout > limits.integration_timeout {
                    self.bad(
                        &format!("{ikey}.timeout"),
                        i.timeout.unwrap_or_default(),
                        &format!(
                            "at most limits.integration_timeout ({}s)",
                            limits.integration_timeout.as_secs_f64()
                        ),
                    );
                }
                let template = match Template::parse(&uri, params, UnknownBraces::Error) {
                    Ok(t) => t,
                    Err(e) => {
                        self.err(&format!("{ikey}.uri"), e);
                        return None;
                    }
                };
                // Every stage must turn the URI into a target the gateway can reach.
                for s in stages {
                    let resolved = template.with_stage(&s.variables).and_then(|t| {
                        crate::gateway::target::parse_uri_target(&t, upstreams).map(|_| ())
                    });
                    if let Err(e) = resolved {
                        self.err(
                            &format!("{ikey}.uri"),
                            format!("{uri:?} in stage {:?}: {e}", s.name),
                        );
                    }
                }
                Some(Integration::Http {
                    uri,
                    template,
                    timeout,
                    headers,
                    header_templates,
                })
            }
            Some("mock") => {
                if i.uri.is_some() || i.timeout.is_some() {
                    self.err(ikey, "uri and timeout belong to type = \"http\"");
                }
                let status = match i.status {
                    None => 200,
                    Some(s) if (200..=599).contains(&s) => s as u16,
                    Some(s) => {
                        self.bad(
                            &format!("{ikey}.status"),
                            s,
                            "an HTTP status from 200 to 599",
                        );
                        200
                    }
                };
                let body = i.body.unwrap_or_default();
                let body_template = match Template::parse(&body, params, UnknownBraces::Literal) {
                    Ok(t) => t,
                    Err(e) => {
                        self.err(&format!("{ikey}.body"), e);
                        Template::default()
                    }
                };
                Some(Integration::Mock {
                    status,
                    headers,
                    body,
                    header_templates,
                    body_template,
                })
            }
            Some(other) => {
                self.bad(&format!("{ikey}.type"), other, "\"http\" or \"mock\"");
                None
            }
            None => {
                self.err(&format!("{ikey}.type"), "is required: \"http\" or \"mock\"");
                None
            }
        }
    }

    fn domain(
        &mut self,
        i: usize,
        d: file::DomainFile,
        apis: &[Api],
        listeners: &[Listener],
        base: &Path,
    ) -> Domain {
        let key = item("domains", i, d.host.as_ref());
        let host = match d.host.as_deref() {
            None => {
                self.err(
                    &format!("{key}.host"),
                    "is required: a host name, \"*.suffix\" or \"*\"",
                );
                HostPattern::Any
            }
            Some("*") => HostPattern::Any,
            Some(h) => {
                let lower = h.to_ascii_lowercase();
                let (pat, name) = match lower.strip_prefix("*.") {
                    Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
                    None => (HostPattern::Exact(lower.clone()), lower.clone()),
                };
                let ok = !name.is_empty()
                    && name.split('.').all(|l| {
                        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !ok {
                    self.bad(&format!("{key}.host"), h, "a host name such as \"api.example.com\", a wildcard \"*.example.com\", or \"*\"");
                }
                pat
            }
        };
        let tls = d.tls.and_then(|t| {
            if host == HostPattern::Any {
                self.err(
                    &format!("{key}.tls"),
                    "a certificate for every host belongs on the listener (listeners.tls)",
                );
                return None;
            }
            self.tls_cert(&format!("{key}.tls"), t, base)
        });
        if let Some(ls) = &d.listeners {
            for l in ls {
                if !listeners.iter().any(|x| &x.name == l) {
                    self.bad(
                        &format!("{key}.listeners"),
                        l,
                        "the name of a [[listeners]] entry",
                    );
                }
            }
        }
        if d.mappings.is_empty() {
            self.err(
                &format!("{key}.mappings"),
                "at least one mapping { base_path, api, stage } is required",
            );
        }
        let mut mappings: Vec<Mapping> = Vec::new();
        for (j, m) in d.mappings.into_iter().enumerate() {
            let mkey = format!("{key}.mappings[{j}]");
            let bp = m.base_path.unwrap_or_default();
            let base_path: Vec<String> = if bp.is_empty() || bp == "/" {
                Vec::new()
            } else {
                match crate::syntax::path::normalise(
                    format!("/{}", bp.trim_matches('/')).as_bytes(),
                ) {
                    Ok(s) => s.iter().map(str::to_string).collect(),
                    Err(e) => {
                        self.bad(
                            &format!("{mkey}.base_path"),
                            &bp,
                            &format!("a path such as \"v1\" or \"v1/orders\" ({})", e.message()),
                        );
                        continue;
                    }
                }
            };
            let Some(api_name) = m.api else {
                self.err(&format!("{mkey}.api"), "is required");
                continue;
            };
            let Some(api) = apis.iter().position(|a| a.name == api_name) else {
                self.bad(
                    &format!("{mkey}.api"),
                    api_name,
                    "the name of an [[apis]] entry",
                );
                continue;
            };
            let stage_name = m.stage.unwrap_or_default();
            let Some(stage) = apis[api].stages.iter().position(|s| s.name == stage_name) else {
                let names: Vec<&str> = apis[api].stages.iter().map(|s| s.name.as_str()).collect();
                self.bad(
                    &format!("{mkey}.stage"),
                    stage_name,
                    &format!("a stage of API {api_name:?}: {names:?}"),
                );
                continue;
            };
            if mappings.iter().any(|o| o.base_path == base_path) {
                self.err(
                    &format!("{mkey}.base_path"),
                    format!("{bp:?} is mapped twice in this domain"),
                );
            }
            mappings.push(Mapping {
                base_path,
                api,
                stage,
            });
        }
        Domain {
            host,
            tls,
            listeners: d.listeners,
            mappings,
        }
    }
}

/// Resolves "host:port" once, at load (blocking DNS is fine on the control plane).
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err("missing port".into());
    }
    s.to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "no address".into())
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
        "shards: {} (driver {:?}, pin {})",
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
            "upstream {:?}: {} ({:?}, keepalive {}{})",
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
