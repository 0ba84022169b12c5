//! Stage caches and per-route cache settings.

use super::*;

/// Default time an answer stays in a stage cache (Amazon API Gateway's default).
pub(crate) const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// The longest a cache TTL may be.
pub(crate) const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
pub(crate) const DEFAULT_CACHE_CAPACITY: u64 = 128 << 20;
pub(crate) const DEFAULT_CACHE_MAX_ENTRY: u64 = 1 << 20;
pub(crate) const DEFAULT_CACHE_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A stage's response cache: `cache = { enabled, ttl, capacity, ... }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCache {
    #[serde(serialize_with = "ser_duration")]
    pub ttl: Duration,
    /// Bytes of entries (bodies, headers, keys and a fixed per-entry overhead).
    pub capacity: u64,
    pub client_invalidation: Invalidation,
    /// What a request for a fresh copy without the API key `require_api_key` asks for gets.
    pub unauthorized_invalidation: Unauthorized,
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

/// Amazon's `unauthorizedCacheControlHeaderStrategy`: what happens to a request that asks for
/// a fresh copy without the right to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unauthorized {
    /// Served as if it had not asked, with a `Warning` header (SUCCEED_WITH_RESPONSE_HEADER).
    Warn,
    /// Served as if it had not asked (SUCCEED_WITHOUT_RESPONSE_HEADER).
    Ignore,
    /// 403 (FAIL_WITH_403).
    FailWith403,
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

impl Validator {
    /// A cache TTL: zero allowed (it turns the cache off), at most [`MAX_CACHE_TTL`].
    pub(super) fn cache_ttl(&mut self, key: &str, v: &str) -> Option<Duration> {
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

    pub(super) fn stage_cache(&mut self, key: &str, c: file::StageCacheFile) -> Option<StageCache> {
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
        // (Checked against a capacity that stands: the default follows it.)
        if capacity >= 64 << 10 && (max_entry == 0 || max_entry > capacity / 8) {
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
        let unauthorized_invalidation = match c.unauthorized_invalidation.as_deref() {
            None | Some("warn") => Unauthorized::Warn,
            Some(v) if client_invalidation != Invalidation::RequireApiKey => {
                self.bad(
                    &format!("{key}.unauthorized_invalidation"),
                    v,
                    "only with client_invalidation = \"require_api_key\" (the others refuse no one)",
                );
                Unauthorized::Warn
            }
            Some("ignore") => Unauthorized::Ignore,
            Some("fail_with_403") => Unauthorized::FailWith403,
            Some(other) => {
                self.bad(
                    &format!("{key}.unauthorized_invalidation"),
                    other,
                    "\"warn\", \"ignore\" or \"fail_with_403\"",
                );
                Unauthorized::Warn
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
            unauthorized_invalidation,
            mode,
            max_entry,
            stale_if_error,
            lock_timeout,
        })
    }

    pub(super) fn route_cache(
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
}
