//! The compiled, immutable form of a [`Config`] that shards serve from. The control plane
//! builds one per successful load and publishes it with a new generation number; shards adopt
//! it between requests. Everything here is read-only after compile, so shards share it.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;

use crate::auth::jwt::KeySet;
use crate::auth::KeyTable;
use crate::cache::{CacheClock, StageCache};
use crate::config::{
    Config, FetchUrl, IdentityRef, IdentitySource, Invalidation, KeyPart, Limits, Plan, Rate,
    Upstream,
};
use crate::route::trie::Trie;
use crate::route::Domains;
use crate::syntax::template::Template;
use crate::throttle::bucket::Bucket;
use crate::tls::client::UpTls;

/// Where an `http` integration goes, resolved for one stage.
#[derive(Debug)]
pub enum Dest {
    /// Index into [`Compiled::upstreams`].
    Upstream(usize),
    /// Index into [`Compiled::literal_targets`].
    Literal(usize),
}

#[derive(Debug)]
pub struct HttpIntegration {
    pub dest: Dest,
    pub host_header: String,
    /// Path and query template, starting with '/'.
    pub path: Template,
    /// The path holds an authorizer's or a certificate's value: checked once rendered
    /// ([`Template::identity_in_path`]).
    pub path_identity: bool,
    pub headers: Vec<(String, Template)>,
    pub timeout: Duration,
    /// Leave out request headers whose name has `_` (`limits.underscores_in_headers = "drop"`).
    pub drop_underscores: bool,
    /// The route's parameter mapping on this stage (stage variables substituted).
    pub mapping: Option<Arc<crate::config::ParamMapping>>,
    /// The `$default` route's: the request's whole path (below the base path) follows the
    /// URI's path, as Amazon sends it.
    pub whole_path: bool,
}

#[derive(Debug)]
pub(crate) struct MockIntegration {
    pub status: u16,
    pub headers: Vec<(String, Template)>,
    pub body: Template,
    pub has_content_type: bool,
    /// The body as JSON when it is fixed and an integration response's template reads it.
    pub json: Option<Arc<serde_json::Value>>,
}

#[derive(Debug)]
pub(crate) enum IntegrationRt {
    Http(HttpIntegration),
    Mock(MockIntegration),
}

/// A JWT authorizer, compiled.
#[derive(Debug)]
pub(crate) struct JwtRt {
    pub name: String,
    pub rules: crate::auth::jwt::Rules,
    pub source: IdentitySource,
    /// Index into [`Compiled::jwks_sources`] and [`Snapshot::jwks`].
    pub slot: usize,
    /// Unique in the process (each compile makes new ones): the shards' token caches name
    /// the authorizer that verified a token by it.
    pub id: u64,
}

/// An external (`request` or `token`) authorizer, compiled.
#[derive(Debug)]
pub(crate) struct ExternalRt {
    pub name: String,
    pub token: bool,
    pub dest: Dest,
    pub host_header: String,
    /// Path and query, as written.
    pub path: String,
    pub sources: Vec<IdentityRef>,
    /// Token authorizers: the whole token must match.
    pub validation: Option<regex::Regex>,
    pub ttl: Duration,
    pub timeout: Duration,
    /// This node's answers, by identity (a reload starts a new cache).
    pub cache: Arc<crate::cache::decisions::DecisionCache>,
}

#[derive(Debug)]
pub(crate) enum AuthorizerRt {
    Jwt(JwtRt),
    External(ExternalRt),
}

/// A route's authorizer and the scopes it wants.
#[derive(Debug)]
pub(crate) struct RouteAuth {
    /// Index into [`ApiRt::authorizers`].
    pub authorizer: usize,
    pub scopes: Vec<String>,
}

/// Where an issuer's signing keys come from; authorizers that share one share its keys.
#[derive(Debug, Clone)]
pub(crate) struct JwksSource {
    /// `JwtAuthorizer::key_source`: what identifies it across reloads.
    pub key: Arc<str>,
    /// What a discovery document must name as its issuer.
    pub issuer: String,
    /// The OpenID discovery document to read `jwks_uri` from, when none was given.
    pub discovery: Option<FetchUrl>,
    pub jwks_uri: Option<FetchUrl>,
    /// The shortest of its authorizers' settings.
    pub refresh: Duration,
    pub cooldown: Duration,
    pub timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct RouteRt {
    pub key: String,
    pub api_key_required: bool,
    /// The route's authorizer, if any.
    pub auth: Option<RouteAuth>,
    /// `authorization = "aws_iam"`: callers sign with SigV4.
    pub iam: bool,
    /// Route limit per stage: index into [`Compiled::buckets`].
    pub limits: Vec<Option<usize>>,
    /// Indexed by stage.
    pub per_stage: Vec<IntegrationRt>,
    /// The cache settings per stage; `None` where this route is not cached.
    pub cache: Vec<Option<CachePolicy>>,
}

/// How one route caches on one stage: the stage's cache with the route's overrides.
#[derive(Debug)]
pub(crate) struct CachePolicy {
    pub cache: Arc<StageCache>,
    pub ttl: Duration,
    pub key: Vec<KeyPart>,
    pub invalidation: Invalidation,
    pub unauthorized: crate::config::Unauthorized,
    pub max_entry: u64,
    pub stale_if_error: Duration,
    pub lock_timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct ApiRt {
    pub name: String,
    pub stages: Vec<String>,
    pub trie: Trie<usize>,
    pub routes: Vec<RouteRt>,
    /// Stage limit per stage: index into [`Compiled::buckets`].
    pub stage_limits: Vec<Option<usize>>,
    /// The cache per stage, where the stage has one.
    pub caches: Vec<Option<Arc<StageCache>>>,
    /// Per stage: no cached route lists key parts, so a URI's entry has one key (what an
    /// unsafe method invalidates can be removed by key rather than by a scan).
    pub plain_keys: Vec<bool>,
    pub authorizers: Vec<AuthorizerRt>,
    /// Query parameters the API's authorizers read credentials from: their values are
    /// redacted wherever the query is logged or traced.
    pub secret_query: Vec<Box<str>>,
    /// `api_key_source = "AUTHORIZER"`: keys are the external authorizer's
    /// `usageIdentifierKey`, never `x-api-key`.
    pub key_from_authorizer: bool,
    /// The access log per stage (its own or the gateway's), where it has one.
    pub access_logs: Vec<Option<LogRt>>,
    /// Where this API's routes start in [`Compiled::series`]: route `r` on stage `s` is
    /// `series_base + s * routes.len() + r`.
    pub series_base: usize,
    /// Per stage: the ratio of traces sampled (the stage's, else `[tracing] sample`).
    pub trace_sample: Vec<f64>,
    /// Per stage: its canary, if it has one.
    pub canaries: Vec<Option<crate::config::CanaryLink>>,
    /// The API's CORS headers and preflight answer (`cors = { ... }`), if it has them.
    pub cors: Option<Arc<crate::http::cors::CorsRt>>,
    /// Per stage: its response compression, if it has one.
    pub compression: Vec<Option<Arc<crate::config::Compression>>>,
    /// A WebSocket API's routes by route key.
    pub ws: Option<WsRt>,
}

/// A WebSocket API's routing: the selection expression and the route of each key.
#[derive(Debug)]
pub(crate) struct WsRt {
    /// The JSON members the route key is read from.
    pub selection: Vec<String>,
    pub keys: std::collections::HashMap<String, usize>,
    pub connect: Option<usize>,
    pub disconnect: Option<usize>,
    /// What `Sec-WebSocket-Protocol` may be answered with, preferred first.
    pub subprotocols: Vec<String>,
    pub default: Option<usize>,
    /// `@connections` on the API's domain takes SigV4 callers allowed ManageConnections.
    pub connections_iam: bool,
}

impl ApiRt {
    /// The index of a route on a stage in [`Compiled::series`].
    pub(crate) fn series(&self, stage: usize, route: usize) -> usize {
        self.series_base + stage * self.routes.len() + route
    }
}

/// An access log: the index of its destination in [`Compiled::log_sinks`], and its format.
#[derive(Debug, Clone)]
pub(crate) struct LogRt {
    pub sink: usize,
    pub format: Arc<crate::observe::access::Format>,
}

#[derive(Debug)]
pub(crate) struct UpstreamRt {
    pub cfg: Upstream,
    /// Active health per target, written by the control plane, read by shards (relaxed).
    pub healthy: Vec<Arc<AtomicBool>>,
    /// Per target: how to speak TLS to it (None: plain TCP).
    pub tls: Vec<Option<UpTls>>,
}

/// A literal integration address and whether it is reached over TLS.
#[derive(Debug, Clone)]
pub(crate) struct LiteralTarget {
    pub addr: SocketAddr,
    pub tls: Option<UpTls>,
}

/// What shards serve from: a compiled configuration and the API keys, under one generation
/// number. Key changes publish a new snapshot that shares the compiled part.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub generation: u64,
    pub compiled: Arc<Compiled>,
    pub keys: Arc<KeyTable>,
    /// The signing keys of each JWKS source (parallel to `Compiled::jwks_sources`), as
    /// last fetched; `None` until a fetch succeeds.
    pub jwks: Arc<Vec<Option<Arc<KeySet>>>>,
    /// SigV4 access keys, their secrets opened.
    pub access_keys: Arc<crate::auth::access::AccessKeyTable>,
}

impl std::ops::Deref for Snapshot {
    type Target = Compiled;
    fn deref(&self) -> &Compiled {
        &self.compiled
    }
}

/// Limits that survive reloads, keyed by what they limit ("gateway", "stage:api/stage",
/// "route:api/stage/KEY"): a reload that keeps a limit's rate keeps its bucket's state.
pub(crate) type BucketRegistry = AHashMap<String, Arc<Bucket>>;

/// A compiled configuration.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub config: Arc<Config>,
    /// Gateway, stage and route limits (per-key limits live in [`crate::shard::Shared`]).
    pub buckets: Vec<Arc<Bucket>>,
    /// Parallel to `buckets`: fleet-wide through Redis (`[cluster]` gateway and stage limits).
    pub fleet: Vec<Option<String>>,
    /// Parallel to `buckets`: the node's own share (`rate / nodes`), used while Redis is out.
    pub fallback: Vec<Arc<Bucket>>,
    pub gateway_limit: Option<usize>,
    pub plans: Vec<Plan>,
    pub domains: Domains,
    pub apis: Vec<ApiRt>,
    pub upstreams: Vec<UpstreamRt>,
    pub literal_targets: Vec<LiteralTarget>,
    /// Every distinct source of JWT signing keys the APIs' authorizers use.
    pub jwks_sources: Vec<JwksSource>,
    /// Every distinct access-log destination (shards keep one buffer for each).
    pub log_sinks: Vec<Arc<crate::observe::writer::Sink>>,
    /// The access log of requests that reach no stage.
    pub access_log: Option<LogRt>,
    /// The metric labels of every route on every stage (see [`ApiRt::series`]).
    pub series: Vec<Arc<str>>,
    pub limits: Limits,
    pub cache_clock: Arc<CacheClock>,
    /// Per listener: the TLS server config (certificates by SNI, ALPN, resumption) and the
    /// client-certificate check of mTLS listeners.
    pub tls: Vec<Option<crate::tls::ListenerTls>>,
    /// Stamps of the certificate files loaded, in [`crate::compile::tls::cert_files`] order:
    /// a change on disk triggers a reload.
    pub cert_stamps: Vec<u64>,
    /// TLS to the fleet's Redis (`cluster.redis = "rediss://..."`).
    pub redis_tls: Option<crate::tls::client::UpTls>,
}

/// A node's share of a fleet-wide limit: `rate / nodes` and `burst / nodes`, at least 1 (a
/// limit of 0 and 0, which refuses everything, stays so).
pub(crate) fn share(rate: Rate, nodes: u64) -> Rate {
    if rate.burst == 0 {
        return rate;
    }
    Rate {
        rate: (rate.rate / nodes.max(1)).max(1),
        burst: (rate.burst / nodes.max(1)).max(1),
    }
}

/// Health flags that survive reloads, keyed by (upstream name, target).
pub(crate) type HealthRegistry = AHashMap<(String, SocketAddr), Arc<AtomicBool>>;
