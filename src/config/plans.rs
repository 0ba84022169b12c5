//! Usage plans, API keys declared in the file, and `[cluster]` (fleet-wide limits through
//! Redis).

use super::*;

/// A quota's period, counted in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

/// A usage plan's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quota {
    pub limit: u64,
    pub period: Period,
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
    /// The Redis server (unused with `sentinels`).
    pub redis: SocketAddr,
    /// Sentinels that name the primary of `sentinel_master` (asked every second, in order,
    /// until one answers); empty for one fixed server.
    pub sentinels: Vec<SocketAddr>,
    pub sentinel_master: String,
    /// Nodes in the fleet, for the local fallback share.
    pub nodes: u32,
    pub on_redis_error: OnRedisError,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Where the password comes from (the variable's name, not its value), and the ACL user.
    pub password_env: Option<String>,
    pub username: Option<String>,
    /// `AUTH [username] password` as sent on each new connection to the Redis server (not to
    /// Sentinels); `None` without `password_env`.
    #[serde(skip)]
    pub auth: Option<std::sync::Arc<Vec<u8>>>,
    /// `redis` and `sentinels` as the file writes them (host names, not what they resolved
    /// to): a reload compares these.
    #[serde(skip)]
    pub written: Vec<String>,
    /// TLS to Redis (`rediss://`): what the server is verified against, the name it must
    /// hold (`tls.server_name`, else the URL's host) and the client certificate to present.
    /// The compile step builds the client config.
    pub tls: Option<RedisTls>,
}

/// `cluster.tls`, with the name the server's certificate is verified against.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RedisTls {
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub server_name: String,
}

/// Redis round-trip timeout (250 ms); past it the node falls back as configured.
pub(crate) const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

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
    /// Per-route overrides for keys of this plan: one for each route of each stage it covers.
    #[serde(skip)]
    pub route_throttle: Vec<RouteThrottle>,
    pub route_throttle_keys: Vec<String>,
    pub quota: Option<Quota>,
    /// Stages of APIs the file does not declare ("api", "stage"): run-time APIs' stages, added
    /// to `stages` (with their canaries) when the run-time objects are merged in.
    #[serde(skip)]
    pub pending_stages: Vec<(String, String)>,
    /// Route throttles for routes of those stages, resolved with them.
    #[serde(skip)]
    pub pending_route_throttle: Vec<(String, Rate)>,
}

/// A plan's `route_throttle` on one route of one stage it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteThrottle {
    /// Indices of the API, its stage and the route.
    pub at: (usize, usize, usize),
    pub rate: Rate,
    /// "api/stage/METHOD /path": names the key's bucket in Redis (`[cluster]`).
    pub name: String,
    /// The key's bucket on this route, hashed from the plan's and the route's names: unique
    /// across APIs and stages (route indices are not), and the same after a reload that adds
    /// routes. A canary shares its stage's bucket.
    pub bucket: u64,
}

impl RouteThrottle {
    /// `stage` is the stage's name; a canary passes its stage's.
    pub fn new(
        plan: &str,
        api: &str,
        stage: &str,
        route: &str,
        at: (usize, usize, usize),
        rate: Rate,
    ) -> RouteThrottle {
        let name = format!("{api}/{stage}/{route}");
        let bucket = ahash::RandomState::with_seeds(5, 6, 7, 8).hash_one((plan, &name));
        RouteThrottle {
            at,
            rate,
            name,
            bucket,
        }
    }
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

/// `HOST:PORT` of `redis://HOST:PORT` or `rediss://HOST:PORT` (a trailing `/` allowed).
fn redis_host_port(url: &str) -> Option<&str> {
    url.strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .map(|r| r.trim_end_matches('/'))
}

fn ser_redacted<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

impl Validator {
    pub(super) fn cluster(&mut self, c: file::ClusterFile, base: &std::path::Path) -> Cluster {
        let tls = self.redis_tls(&c, base);
        let written: Vec<String> = c
            .redis
            .iter()
            .chain(c.sentinels.iter().flatten())
            .cloned()
            .collect();
        let mut sentinels = Vec::new();
        for (i, s) in c.sentinels.iter().flatten().enumerate() {
            match resolve(s) {
                Ok(a) => sentinels.push(a),
                Err(_) => self.bad(
                    &format!("cluster.sentinels[{i}]"),
                    s,
                    "\"HOST:PORT\" of a Redis Sentinel, that resolves",
                ),
            }
        }
        let sentinel_master = match (&c.sentinels, c.sentinel_master) {
            (Some(list), _) if list.is_empty() => {
                self.err(
                    "cluster.sentinels",
                    "is empty: name one Sentinel or more, or use cluster.redis",
                );
                String::new()
            }
            (Some(_), Some(m)) if !m.is_empty() => m,
            (Some(_), _) => {
                self.err("cluster.sentinel_master", "is required with cluster.sentinels: the name the Sentinels monitor the primary under (their `sentinel monitor <name> ...`)");
                String::new()
            }
            (None, Some(_)) => {
                self.err("cluster.sentinel_master", "needs cluster.sentinels");
                String::new()
            }
            (None, None) => String::new(),
        };
        // The Redis server's password (Sentinels are asked without one).
        let auth = self.redis_auth(c.password_env.as_deref(), c.username.as_deref());
        if c.sentinels.is_some() {
            if let Some(u) = &c.redis {
                self.bad(
                    "cluster.redis",
                    u,
                    "absent with cluster.sentinels (they name the primary): give one or the other",
                );
            }
            if c.tls.is_some() {
                self.err(
                    "cluster.tls",
                    "is not supported with cluster.sentinels yet (TLS is for one server named by cluster.redis = \"rediss://HOST:PORT\")",
                );
            }
            return Cluster {
                redis: SocketAddr::from(([127, 0, 0, 1], 6379)),
                sentinels,
                sentinel_master,
                nodes: self.int_in("cluster.nodes", c.nodes, 1, 1, 10_000) as u32,
                on_redis_error: self.on_redis_error(c.on_redis_error.as_deref()),
                timeout: self.duration(
                    "cluster.timeout",
                    c.timeout.as_ref(),
                    DEFAULT_REDIS_TIMEOUT,
                ),
                password_env: c.password_env,
                username: c.username,
                auth,
                written,
                tls: None,
            };
        }
        let redis = match c.redis.as_deref() {
            Some(u) => match redis_host_port(u).and_then(|r| resolve(r).ok()) {
                Some(a) => a,
                None if u.contains('@') => {
                    self.bad(
                        "cluster.redis",
                        "redis://...@...",
                        "\"redis://HOST:PORT\" without credentials: the password goes in the environment variable cluster.password_env names",
                    );
                    SocketAddr::from(([127, 0, 0, 1], 6379))
                }
                None => {
                    self.bad(
                        "cluster.redis",
                        u,
                        "\"redis://HOST:PORT\" (or \"rediss://HOST:PORT\" for TLS) that resolves",
                    );
                    SocketAddr::from(([127, 0, 0, 1], 6379))
                }
            },
            None => {
                self.err("cluster.redis", "is required: \"redis://HOST:PORT\" (or cluster.sentinels and cluster.sentinel_master)");
                SocketAddr::from(([127, 0, 0, 1], 6379))
            }
        };
        Cluster {
            redis,
            sentinels,
            sentinel_master,
            nodes: self.int_in("cluster.nodes", c.nodes, 1, 1, 10_000) as u32,
            on_redis_error: self.on_redis_error(c.on_redis_error.as_deref()),
            timeout: self.duration("cluster.timeout", c.timeout.as_ref(), DEFAULT_REDIS_TIMEOUT),
            password_env: c.password_env,
            username: c.username,
            auth,
            written,
            tls,
        }
    }

    /// `cluster.tls` and the scheme of `cluster.redis`: TLS with `rediss://` (the server
    /// verified against `tls.ca`, else the system's roots, and `tls.server_name`, else the
    /// URL's host); `tls` with `redis://` is refused as a contradiction.
    fn redis_tls(&mut self, c: &file::ClusterFile, base: &std::path::Path) -> Option<RedisTls> {
        let url = c.redis.as_deref()?;
        if url.contains('@') {
            // Credentials in the URL are refused by `cluster`, without echoing them.
            return None;
        }
        let secure = url.starts_with("rediss://");
        let file = match (&c.tls, secure) {
            (None, false) => return None,
            (Some(_), false) => {
                self.bad(
                    "cluster.redis",
                    url,
                    "\"rediss://HOST:PORT\" with cluster.tls (redis:// is plain TCP)",
                );
                return None;
            }
            (Some(t), true) => file::UpstreamTlsFile {
                ca: t.ca.clone(),
                server_name: t.server_name.clone(),
                cert: t.cert.clone(),
                key: t.key.clone(),
            },
            (None, true) => file::UpstreamTlsFile {
                ca: None,
                server_name: None,
                cert: None,
                key: None,
            },
        };
        let t = self.upstream_tls("cluster.tls", file, base)?;
        let host = redis_host_port(url)?
            .rsplit_once(':')
            .map_or("", |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let server_name = match t.server_name {
            Some(n) => n,
            None => match crate::syntax::server_name(host) {
                Ok(_) => host.to_string(),
                Err(e) => {
                    self.bad(
                        "cluster.redis",
                        url,
                        &format!("a host TLS can verify ({e}), or cluster.tls.server_name set to the name Redis's certificate holds"),
                    );
                    return None;
                }
            },
        };
        Some(RedisTls {
            ca: t.ca,
            cert: t.cert,
            key: t.key,
            server_name,
        })
    }

    /// `AUTH [username] password` from `cluster.password_env` (the password read from the
    /// environment at load, never written in the file) and `cluster.username`.
    fn redis_auth(
        &mut self,
        env: Option<&str>,
        user: Option<&str>,
    ) -> Option<std::sync::Arc<Vec<u8>>> {
        let Some(env) = env else {
            if let Some(u) = user {
                self.bad(
                    "cluster.username",
                    u,
                    "nothing without cluster.password_env",
                );
            }
            return None;
        };
        if env.is_empty() || env.contains('=') || env.contains('\0') {
            self.bad(
                "cluster.password_env",
                env,
                "the name of an environment variable",
            );
            return None;
        }
        let password = match std::env::var(env) {
            Ok(p) if !p.is_empty() => p,
            _ => {
                self.err(
                    "cluster.password_env",
                    format!(
                        "the environment variable {env} is not set (it holds Redis's password)"
                    ),
                );
                return None;
            }
        };
        if user.is_some_and(|u| u.is_empty() || u.bytes().any(|b| b <= b' ')) {
            self.bad(
                "cluster.username",
                user.unwrap_or_default(),
                "an ACL user name, without spaces",
            );
            return None;
        }
        let mut parts: Vec<&[u8]> = vec![b"AUTH"];
        parts.extend(user.map(str::as_bytes));
        parts.push(password.as_bytes());
        let mut cmd = format!("*{}\r\n", parts.len()).into_bytes();
        for p in parts {
            cmd.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
            cmd.extend_from_slice(p);
            cmd.extend_from_slice(b"\r\n");
        }
        Some(std::sync::Arc::new(cmd))
    }

    fn on_redis_error(&mut self, v: Option<&str>) -> OnRedisError {
        match v {
            None | Some("local") => OnRedisError::Local,
            Some("deny") => OnRedisError::Deny,
            Some(other) => {
                self.bad("cluster.on_redis_error", other, "\"local\" or \"deny\"");
                OnRedisError::Local
            }
        }
    }

    pub(super) fn plans(&mut self, raw: Vec<file::PlanFile>, apis: &[Api]) -> Vec<Plan> {
        let mut out: Vec<Plan> = Vec::new();
        for (i, p) in raw.into_iter().enumerate() {
            let key = item("usage_plans", i, p.name.as_ref());
            let name = self.name(&format!("{key}.name"), p.name);
            if out.iter().any(|o| o.name == name) {
                self.err(&format!("{key}.name"), "is used by two usage plans");
            }
            let mut stages = Vec::new();
            let mut pending_stages = Vec::new();
            for (j, s) in p.stages.iter().enumerate() {
                if p.stages[..j].contains(s) {
                    self.err(
                        &format!("{key}.stages[{j}]"),
                        format!("{s:?} is listed twice"),
                    );
                    continue;
                }
                let names = s.split_once('/');
                let found = names.and_then(|(a, st)| {
                    let ai = apis.iter().position(|x| x.name == a)?;
                    let si = apis[ai].stages.iter().position(|x| x.name == st)?;
                    Some((ai, si))
                });
                let is_name = |n: &str| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                };
                match (found, names) {
                    (Some(x), _) => stages.push(x),
                    // Not the file's API: a run-time API's stage, resolved at the merge.
                    (None, Some((a, st)))
                        if !apis.iter().any(|x| x.name == a) && is_name(a) && is_name(st) =>
                    {
                        pending_stages.push((a.to_string(), st.to_string()))
                    }
                    _ => self.bad(
                        &format!("{key}.stages[{j}]"),
                        s,
                        "\"api/stage\" naming an API and one of its stages",
                    ),
                }
            }
            if stages.is_empty() && pending_stages.is_empty() {
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
            let mut pending_route_throttle = Vec::new();
            for (rk, t) in p.route_throttle {
                let rkey = format!("{key}.route_throttle[{rk:?}]");
                let Some(rate) = self.rate(&rkey, t) else {
                    continue;
                };
                let mut hit = false;
                for &(ai, si) in &stages {
                    if let Some(ri) = apis[ai].routes.iter().position(|r| r.key == rk) {
                        let (api, stage) = (&apis[ai].name, &apis[ai].stages[si].name);
                        route_throttle.push(RouteThrottle::new(
                            &name,
                            api,
                            stage,
                            &rk,
                            (ai, si, ri),
                            rate,
                        ));
                        hit = true;
                    }
                }
                // Run-time stages' routes are known at the merge.
                if !pending_stages.is_empty() {
                    pending_route_throttle.push((rk.clone(), rate));
                } else if !hit {
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
                pending_stages,
                pending_route_throttle,
            });
        }
        out
    }

    pub(super) fn keys(&mut self, raw: Vec<file::KeyFile>, plans: &[Plan]) -> Vec<ConfigKey> {
        let mut out: Vec<ConfigKey> = Vec::new();
        // Names and values seen, by hash: tens of thousands of keys check in linear time.
        let mut names_seen: ahash::AHashSet<String> = Default::default();
        let mut values_seen: ahash::AHashSet<String> = Default::default();
        for (i, k) in raw.into_iter().enumerate() {
            let key = item("api_keys", i, k.name.as_ref());
            let name = self.name(&format!("{key}.name"), k.name);
            if !names_seen.insert(name.clone()) {
                self.err(&format!("{key}.name"), "is used by two API keys");
            }
            // A config key's name is its id in the admin API, where /apikeys/import is the
            // CSV import: that key could not be read, changed or deleted there.
            if name == "import" {
                self.err(
                    &format!("{key}.name"),
                    "\"import\" is reserved (POST /apikeys/import is the CSV import): name the key otherwise",
                );
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
            if !value.is_empty() && !values_seen.insert(value.clone()) {
                self.err(
                    &format!("{key}.value"),
                    "is the same as another key's; values must be unique",
                );
            }
            let mut names: Vec<String> = k.plans.unwrap_or_default();
            if let Some(p) = k.plan {
                names.insert(0, p);
            }
            // A plan named twice (in plan and plans, or twice in plans) is said as such, not
            // as two plans that cover one stage.
            let mut seen = std::collections::HashSet::new();
            let mut twice = Vec::new();
            names.retain(|n| {
                let first = seen.insert(n.clone());
                if !first {
                    twice.push(n.clone());
                }
                first
            });
            for n in twice {
                self.bad(
                    &format!("{key}.plans"),
                    &n,
                    "each plan named once (in plan or plans)",
                );
            }
            let mut covered: Vec<(usize, usize)> = Vec::new();
            let mut covered_later: Vec<(String, String)> = Vec::new();
            for n in &names {
                match plans.iter().find(|p| &p.name == n) {
                    None => self.bad(
                        &format!("{key}.plan"),
                        n,
                        "the name of a [[usage_plans]] entry",
                    ),
                    Some(p) => {
                        let mut clash = false;
                        for s in &p.stages {
                            clash |= covered.contains(s);
                            covered.push(*s);
                        }
                        for s in &p.pending_stages {
                            clash |= covered_later.contains(s);
                            covered_later.push(s.clone());
                        }
                        if clash {
                            self.err(&format!("{key}.plans"), format!("plan {n:?} covers a stage another of this key's plans covers; a key belongs to at most one plan per stage"));
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
}
