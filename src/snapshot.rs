//! The compiled, immutable form of a [`Config`] that shards serve from. The control plane
//! builds one per successful load and publishes it with a new generation number; shards adopt
//! it between requests. Everything here is read-only after compile, so shards share it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;

use crate::auth::KeyTable;
use crate::cache::{CacheClock, CacheRegistry, StageCache};
use crate::config::{Config, Integration, Invalidation, KeyPart, Limits, Plan, Rate, Upstream};
use crate::gateway::target::{parse_uri_target, Authority};
use crate::route::trie::Trie;
use crate::route::Domains;
use crate::syntax::route_key::MethodSel;
use crate::syntax::template::Template;
use crate::syntax::Method;
use crate::throttle::bucket::Bucket;
use crate::tls::client::UpTls;

/// Where an `http` integration goes, resolved for one stage.
#[derive(Debug)]
pub enum Dest {
    /// Index into [`Snapshot::upstreams`].
    Upstream(usize),
    /// Index into [`Snapshot::literal_targets`].
    Literal(usize),
}

#[derive(Debug)]
pub struct HttpIntegration {
    pub dest: Dest,
    pub host_header: String,
    /// Path and query template, starting with '/'.
    pub path: Template,
    pub headers: Vec<(String, Template)>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct MockIntegration {
    pub status: u16,
    pub headers: Vec<(String, Template)>,
    pub body: Template,
    pub has_content_type: bool,
}

#[derive(Debug)]
pub enum IntegrationRt {
    Http(HttpIntegration),
    Mock(MockIntegration),
}

#[derive(Debug)]
pub struct RouteRt {
    pub key: String,
    pub api_key_required: bool,
    /// Route limit per stage: index into [`Compiled::buckets`].
    pub limits: Vec<Option<usize>>,
    /// Indexed by stage.
    pub per_stage: Vec<IntegrationRt>,
    /// The cache settings per stage; `None` where this route is not cached.
    pub cache: Vec<Option<CachePolicy>>,
}

/// How one route caches on one stage: the stage's cache with the route's overrides.
#[derive(Debug)]
pub struct CachePolicy {
    pub cache: Arc<StageCache>,
    pub ttl: Duration,
    pub key: Vec<KeyPart>,
    pub invalidation: Invalidation,
    pub max_entry: u64,
    pub stale_if_error: Duration,
    pub lock_timeout: Duration,
}

#[derive(Debug)]
pub struct ApiRt {
    pub name: String,
    pub stages: Vec<String>,
    pub trie: Trie<usize>,
    pub routes: Vec<RouteRt>,
    /// Stage limit per stage: index into [`Compiled::buckets`].
    pub stage_limits: Vec<Option<usize>>,
    /// The cache per stage, where the stage has one.
    pub caches: Vec<Option<Arc<StageCache>>>,
}

#[derive(Debug)]
pub struct UpstreamRt {
    pub cfg: Upstream,
    /// Active health per target, written by the control plane, read by shards (relaxed).
    pub healthy: Vec<Arc<AtomicBool>>,
    /// Per target: how to speak TLS to it (None: plain TCP).
    pub tls: Vec<Option<UpTls>>,
}

/// A literal integration address and whether it is reached over TLS.
#[derive(Debug, Clone)]
pub struct LiteralTarget {
    pub addr: SocketAddr,
    pub tls: Option<UpTls>,
}

/// What shards serve from: a compiled configuration and the API keys, under one generation
/// number. Key changes publish a new snapshot that shares the compiled part.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub compiled: Arc<Compiled>,
    pub keys: Arc<KeyTable>,
}

impl std::ops::Deref for Snapshot {
    type Target = Compiled;
    fn deref(&self) -> &Compiled {
        &self.compiled
    }
}

/// Limits that survive reloads, keyed by what they limit ("gateway", "stage:api/stage",
/// "route:api/stage/KEY"): a reload that keeps a limit's rate keeps its bucket's state.
pub type BucketRegistry = AHashMap<String, Arc<Bucket>>;

/// A compiled configuration.
#[derive(Debug)]
pub struct Compiled {
    pub config: Arc<Config>,
    /// Gateway, stage and route limits (per-key limits live in [`crate::shard::Shared`]).
    pub buckets: Vec<Arc<Bucket>>,
    /// Parallel to `buckets`: fleet-wide through Redis (`[cluster]` gateway and stage limits).
    pub fleet: Vec<Option<String>>,
    /// Parallel to `buckets`: the node's own share (`rate / nodes`), used while Redis is out.
    pub fallback: Vec<Arc<Bucket>>,
    pub gateway_limit: Option<usize>,
    pub plans: Vec<Plan>,
    pub listener_names: Vec<String>,
    pub domains: Domains,
    pub apis: Vec<ApiRt>,
    pub upstreams: Vec<UpstreamRt>,
    pub literal_targets: Vec<LiteralTarget>,
    pub limits: Limits,
    pub cache_clock: Arc<CacheClock>,
    /// Per listener: the TLS server config (certificates by SNI, ALPN, resumption).
    pub tls: Vec<Option<Arc<rustls::ServerConfig>>>,
}

/// Builds each TLS listener's server config: its own certificate as the default, and the
/// certificates of the domains served on it, by host.
fn tls_configs(cfg: &Config) -> Result<Vec<Option<Arc<rustls::ServerConfig>>>, String> {
    use crate::config::HostPattern;
    cfg.listeners
        .iter()
        .map(|l| {
            let Some(t) = &l.tls else { return Ok(None) };
            let Some(default) = &t.cert.loaded else {
                return Err(format!("listener {:?}: certificate not loaded", l.name));
            };
            let mut r = crate::tls::SniResolver::new(default.key.clone(), t.sni_strict);
            for d in &cfg.domains {
                let on = d.listeners.as_ref().is_none_or(|ls| ls.contains(&l.name));
                let (Some(dt), true) = (&d.tls, on) else {
                    continue;
                };
                let Some(loaded) = &dt.loaded else { continue };
                match &d.host {
                    HostPattern::Exact(h) => r.add(h, loaded.key.clone()),
                    HostPattern::Suffix(sfx) => r.add(&format!("*{sfx}"), loaded.key.clone()),
                    HostPattern::Any => {}
                }
            }
            crate::tls::server_config(r, &l.alpn, t.mtls.as_ref()).map(Some)
        })
        .collect()
}

/// A node's share of a fleet-wide limit: `rate / nodes` and `burst / nodes`, at least 1.
pub fn share(rate: Rate, nodes: u64) -> Rate {
    Rate {
        rate: (rate.rate / nodes.max(1)).max(1),
        burst: (rate.burst / nodes.max(1)).max(1),
    }
}

/// Health flags that survive reloads, keyed by (upstream name, target).
pub type HealthRegistry = AHashMap<(String, SocketAddr), Arc<AtomicBool>>;

impl Compiled {
    /// Compiles a validated config. `health` carries the health flags of targets that exist
    /// in both the old and the new config, so a reload does not forget a dead target.
    pub fn compile(
        cfg: Arc<Config>,
        health: &mut HealthRegistry,
        registry: &mut BucketRegistry,
        cache_registry: &mut CacheRegistry,
    ) -> Result<Compiled, String> {
        let mut fresh_caches = AHashMap::new();
        let mut literal_targets: Vec<LiteralTarget> = Vec::new();
        let mut buckets: Vec<Arc<Bucket>> = Vec::new();
        let mut fleet: Vec<Option<String>> = Vec::new();
        let mut fallback: Vec<Arc<Bucket>> = Vec::new();
        let nodes = cfg.cluster.as_ref().map(|c| c.nodes as u64);
        let mut fresh_registry = BucketRegistry::new();
        let mut limit = |name: String, rate: Option<Rate>| -> Option<usize> {
            let rate = rate?;
            let shared = nodes.is_some() && (name == "gateway" || name.starts_with("stage:"));
            fleet.push(shared.then(|| name.clone()));
            fallback.push(Arc::new(Bucket::new(share(rate, nodes.unwrap_or(1)))));
            let b = match registry.get(&name) {
                Some(b) if b.rate == rate => b.clone(),
                _ => Arc::new(Bucket::new(rate)),
            };
            fresh_registry.insert(name, b.clone());
            buckets.push(b);
            Some(buckets.len() - 1)
        };
        let gateway_limit = limit("gateway".into(), cfg.throttle);
        let mut fresh: HealthRegistry = AHashMap::new();
        let upstreams: Vec<UpstreamRt> = cfg
            .upstreams
            .iter()
            .map(|u| UpstreamRt {
                cfg: u.clone(),
                healthy: u
                    .targets
                    .iter()
                    .map(|t| {
                        let key = (u.name.clone(), *t);
                        let flag = health
                            .get(&key)
                            .cloned()
                            .unwrap_or_else(|| Arc::new(AtomicBool::new(true)));
                        fresh.insert(key, flag.clone());
                        flag
                    })
                    .collect(),
                tls: u
                    .targets
                    .iter()
                    .zip(&u.hosts)
                    .map(|(_, host)| {
                        let t = u.tls.as_ref()?;
                        let name = t.server_name.as_deref().unwrap_or(host);
                        Some(UpTls {
                            config: t.client.clone()?,
                            name: crate::tls::client::server_name(name).ok()?,
                        })
                    })
                    .collect(),
            })
            .collect();
        *health = fresh;
        let mut apis = Vec::with_capacity(cfg.apis.len());
        for api in &cfg.apis {
            let caches: Vec<Option<Arc<StageCache>>> = api
                .stages
                .iter()
                .map(|s| {
                    s.cache
                        .as_ref()
                        .map(|c| cache_registry.take(&mut fresh_caches, &api.name, &s.name, c))
                })
                .collect();
            let mut trie = Trie::default();
            let mut routes = Vec::with_capacity(api.routes.len());
            for (ri, r) in api.routes.iter().enumerate() {
                if r.is_default {
                    trie.set_default(ri)?;
                } else {
                    trie.insert(r.method, &r.segs, ri)?;
                }
                let mut per_stage = Vec::with_capacity(api.stages.len());
                for s in &api.stages {
                    let resolve_headers =
                        |hs: &[(String, Template)]| -> Result<Vec<(String, Template)>, String> {
                            hs.iter()
                                .map(|(n, t)| Ok((n.clone(), t.with_stage(&s.variables)?)))
                                .collect()
                        };
                    let rt = match &r.integration {
                        Integration::Http {
                            template,
                            timeout,
                            header_templates,
                            ..
                        } => {
                            let t = template.with_stage(&s.variables)?;
                            let target = parse_uri_target(&t, &cfg.upstreams)?;
                            let dest = match target.authority {
                                Authority::Named(i) => Dest::Upstream(i),
                                Authority::Addr { addr, host, tls } => {
                                    let tls = if tls {
                                        let h = host.rsplit_once(':').map_or(
                                            host.as_str(),
                                            |(h, p)| {
                                                if p.bytes().all(|b| b.is_ascii_digit()) {
                                                    h
                                                } else {
                                                    host.as_str()
                                                }
                                            },
                                        );
                                        Some(UpTls {
                                            config: crate::tls::client::client_config(
                                                None, None, false,
                                            )?,
                                            name: crate::tls::client::server_name(h)?,
                                        })
                                    } else {
                                        None
                                    };
                                    let name = tls.as_ref().map(UpTls::name_text);
                                    let idx = literal_targets
                                        .iter()
                                        .position(|l| {
                                            l.addr == addr
                                                && l.tls.as_ref().map(UpTls::name_text) == name
                                        })
                                        .unwrap_or_else(|| {
                                            literal_targets.push(LiteralTarget { addr, tls });
                                            literal_targets.len() - 1
                                        });
                                    Dest::Literal(idx)
                                }
                            };
                            IntegrationRt::Http(HttpIntegration {
                                dest,
                                host_header: target.host_header,
                                path: target.path,
                                headers: resolve_headers(header_templates)?,
                                timeout: *timeout,
                            })
                        }
                        Integration::Mock {
                            status,
                            header_templates,
                            body_template,
                            ..
                        } => IntegrationRt::Mock(MockIntegration {
                            status: *status,
                            headers: resolve_headers(header_templates)?,
                            body: body_template.with_stage(&s.variables)?,
                            has_content_type: header_templates
                                .iter()
                                .any(|(n, _)| n == "content-type"),
                        }),
                    };
                    per_stage.push(rt);
                }
                let limits = api
                    .stages
                    .iter()
                    .map(|s| {
                        limit(
                            format!("route:{}/{}/{}", api.name, s.name, r.key),
                            r.throttle,
                        )
                    })
                    .collect();
                // Only answers to GET (and HEAD, served from GET's entries) are cached.
                let cacheable_method = match r.method {
                    MethodSel::Any => true,
                    MethodSel::One(m) => m == Method::Get || m == Method::Head,
                };
                let cache = api
                    .stages
                    .iter()
                    .zip(&caches)
                    .map(|(s, c)| {
                        let (sc, c) = (s.cache.as_ref()?, c.as_ref()?);
                        let rc = r.cache.as_ref();
                        if !cacheable_method || rc.is_some_and(|rc| !rc.enabled) {
                            return None;
                        }
                        Some(CachePolicy {
                            cache: c.clone(),
                            ttl: rc.and_then(|rc| rc.ttl).unwrap_or(sc.ttl),
                            key: rc.map(|rc| rc.key.clone()).unwrap_or_default(),
                            invalidation: sc.client_invalidation,
                            max_entry: sc.max_entry,
                            stale_if_error: sc.stale_if_error,
                            lock_timeout: sc.lock_timeout,
                        })
                    })
                    .collect();
                routes.push(RouteRt {
                    key: r.key.clone(),
                    api_key_required: r.api_key_required,
                    limits,
                    per_stage,
                    cache,
                });
            }
            let stage_limits = api
                .stages
                .iter()
                .map(|s| limit(format!("stage:{}/{}", api.name, s.name), s.throttle))
                .collect();
            apis.push(ApiRt {
                name: api.name.clone(),
                stages: api.stages.iter().map(|s| s.name.clone()).collect(),
                trie,
                routes,
                stage_limits,
                caches,
            });
        }
        let listener_names: Vec<String> = cfg.listeners.iter().map(|l| l.name.clone()).collect();
        *registry = fresh_registry;
        cache_registry.caches = fresh_caches;
        let tls = tls_configs(&cfg)?;
        Ok(Compiled {
            tls,
            cache_clock: cache_registry.clock.clone(),
            buckets,
            fleet,
            fallback,
            gateway_limit,
            plans: cfg.usage_plans.clone(),
            domains: Domains::compile(&cfg.domains, &listener_names),
            listener_names,
            apis,
            upstreams,
            literal_targets,
            limits: cfg.limits.clone(),
            config: cfg,
        })
    }
}
