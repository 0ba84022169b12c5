//! The compile step: a validated [`Config`] (plain data) becomes the [`Compiled`] form that
//! shards serve from. This is the only place that builds run-time objects from the config:
//! route tries (`apis`), resolved integrations and templates with stage variables
//! substituted, limit tables (`limits`), upstream health flags and TLS client configs
//! (`upstreams`), and listener TLS server configs with their certificates ([`tls`]).
//!
//! Like validation, it collects every error, and each names the config key it comes from
//! (`apis["pets"].routes["GET /a"].route: ...`), so `tollgate check` — parse, validate,
//! compile — catches everything start-up or a reload would.
//!
//! State that outlives one compile (health flags, bucket states, caches) is passed in as
//! registries: a reload that keeps a target, a limit's rate or a stage's cache keeps its state.

mod apis;
mod limits;
pub(crate) mod tls;
mod upstreams;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster;
#[cfg(test)]
mod tests_values;

use std::sync::Arc;

use crate::cache::CacheRegistry;
use crate::config::{Config, ConfigError};
use crate::route::Domains;
use crate::snapshot::{BucketRegistry, Compiled, HealthRegistry};

/// Errors found while compiling, each "key: message", like validation's.
#[derive(Default)]
pub(crate) struct Errors(Vec<String>);

impl Errors {
    pub(crate) fn err(&mut self, key: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{key}: {msg}"));
    }
}

/// What outlives one compile: kept across reloads where the new config keeps the thing.
#[derive(Default, Clone)]
pub(crate) struct Registries {
    pub health: HealthRegistry,
    pub buckets: BucketRegistry,
    pub caches: CacheRegistry,
}

/// Compiles a validated config. On success the registries hold exactly what the new
/// snapshot uses; on failure they are left as they were.
pub(crate) fn compile(cfg: Arc<Config>, reg: &mut Registries) -> Result<Compiled, ConfigError> {
    let mut errors = Errors::default();
    let tls = tls::listeners(&cfg, &mut errors);
    let upstream_tls = tls::upstream_clients(&cfg, &mut errors);
    let redis_tls = tls::redis_client(&cfg, &mut errors);
    let mut limits = limits::LimitTable::new(&cfg, &reg.buckets);
    let gateway_limit = limits.add("gateway".into(), cfg.throttle);
    let (upstreams, health) = upstreams::compile(&cfg, upstream_tls, &reg.health);
    let mut fresh_caches = ahash::AHashMap::new();
    let mut literal_targets = Vec::new();
    let mut jwks_sources = Vec::new();
    let mut apis = apis::compile(
        &cfg,
        &mut apis::Shared {
            limits: &mut limits,
            caches: &mut reg.caches,
            fresh_caches: &mut fresh_caches,
            literal_targets: &mut literal_targets,
            jwks_sources: &mut jwks_sources,
        },
        &mut errors,
    );
    if !errors.0.is_empty() {
        return Err(ConfigError { errors: errors.0 });
    }
    let (tls, cert_stamps) = tls.unwrap_or_default();
    let listener_names: Vec<String> = cfg.listeners.iter().map(|l| l.name.clone()).collect();
    let limits = limits.finish();
    reg.health = health;
    reg.buckets = limits.registry;
    reg.caches.caches = fresh_caches;
    let (log_sinks, access_log) = access_logs(&cfg, &mut apis);
    let default_sample = cfg.tracing.as_ref().map_or(0.0, |t| t.sample);
    for (api, rt) in cfg.apis.iter().zip(apis.iter_mut()) {
        rt.trace_sample = api
            .stages
            .iter()
            .map(|s| s.trace_sample.unwrap_or(default_sample))
            .collect();
    }
    let mut series = Vec::new();
    for a in &mut apis {
        a.series_base = series.len();
        for st in &a.stages {
            for r in &a.routes {
                series.push(crate::observe::stats::labels(&a.name, st, &r.key));
            }
        }
    }
    Ok(Compiled {
        series,
        log_sinks,
        access_log,
        tls,
        cert_stamps,
        cache_clock: reg.caches.clock.clone(),
        buckets: limits.buckets,
        fleet: limits.fleet,
        fallback: limits.fallback,
        gateway_limit,
        plans: cfg.usage_plans.clone(),
        domains: Domains::compile(&cfg.domains, &listener_names),
        apis,
        upstreams,
        literal_targets,
        jwks_sources,
        limits: cfg.limits.clone(),
        redis_tls,
        config: cfg,
    })
}

/// The access logs' distinct destinations, and each stage's log (its own, else the
/// gateway's, unless it says `"off"`); returns the gateway's for requests that reach no stage.
fn access_logs(
    cfg: &Config,
    apis: &mut [crate::snapshot::ApiRt],
) -> (
    Vec<Arc<crate::observe::writer::Sink>>,
    Option<crate::snapshot::LogRt>,
) {
    let mut sinks: Vec<Arc<crate::observe::writer::Sink>> = Vec::new();
    let mut rt = |a: &crate::config::AccessLog| {
        let sink = match sinks.iter().position(|s| **s == *a.sink) {
            Some(i) => i,
            None => {
                sinks.push(a.sink.clone());
                sinks.len() - 1
            }
        };
        crate::snapshot::LogRt {
            sink,
            format: a.compiled.clone(),
        }
    };
    let gateway = cfg.access_log.as_ref().map(&mut rt);
    for (api, rt_api) in cfg.apis.iter().zip(apis.iter_mut()) {
        rt_api.access_logs = api
            .stages
            .iter()
            .map(|s| match (&s.access_log, s.access_log_off) {
                (_, true) => None,
                (Some(a), false) => Some(rt(a)),
                (None, false) => gateway.clone(),
            })
            .collect();
    }
    (sinks, gateway)
}

/// `tollgate check`: compiles with fresh registries and throws the result away.
pub fn check(cfg: &Config) -> Result<(), ConfigError> {
    compile(Arc::new(cfg.clone()), &mut Registries::default()).map(|_| ())
}

/// Reads, validates and compiles a config file: everything start-up would check.
pub fn check_file(path: &std::path::Path) -> Result<Config, ConfigError> {
    let cfg = Config::load(path)?;
    check(&cfg)?;
    Ok(cfg)
}
