//! APIs: per API a route trie, and per route and stage the integration with stage variables
//! substituted (`http` resolved to an upstream or a literal address, `mock` rendered down to
//! what varies per request), the route's limit and its cache policy.

use std::sync::Arc;

use ahash::AHashMap;

use crate::auth::jwt::Rules;
use crate::cache::{CacheRegistry, StageCache};
use crate::config::target::{parse_uri_target, Authority};
use crate::config::{item, Api, Config, Integration, Route, Stage, Underscores};
use crate::config::{Authorizer, AuthorizerKind};
use crate::route::trie::Trie;
use crate::snapshot::{
    ApiRt, AuthorizerRt, CachePolicy, Dest, ExternalRt, HttpIntegration, IntegrationRt, JwksSource,
    JwtRt, LiteralTarget, MockIntegration, RouteAuth, RouteRt,
};
use crate::syntax::route_key::MethodSel;
use crate::syntax::template::Template;
use crate::syntax::Method;
use crate::tls::client::UpTls;
use std::sync::atomic::{AtomicU64, Ordering};

use super::limits::LimitTable;
use super::Errors;

/// What every API's compile adds to.
pub(super) struct Shared<'a, 'l> {
    pub limits: &'a mut LimitTable<'l>,
    pub caches: &'a mut CacheRegistry,
    pub fresh_caches: &'a mut AHashMap<(String, String), Arc<StageCache>>,
    pub literal_targets: &'a mut Vec<LiteralTarget>,
    pub jwks_sources: &'a mut Vec<JwksSource>,
}

pub(super) fn compile(cfg: &Config, sh: &mut Shared<'_, '_>, errors: &mut Errors) -> Vec<ApiRt> {
    cfg.apis
        .iter()
        .enumerate()
        .map(|(i, api)| compile_api(cfg, i, api, sh, errors))
        .collect()
}

fn compile_api(
    cfg: &Config,
    i: usize,
    api: &Api,
    sh: &mut Shared<'_, '_>,
    errors: &mut Errors,
) -> ApiRt {
    let akey = item("apis", i, Some(&api.name));
    let caches: Vec<Option<Arc<StageCache>>> = api
        .stages
        .iter()
        .map(|s| {
            s.cache.as_ref().map(|c| {
                let owner = s.shared_cache.as_deref().unwrap_or(&s.name);
                sh.caches.take(sh.fresh_caches, &api.name, owner, c)
            })
        })
        .collect();
    let authorizers: Vec<AuthorizerRt> = api
        .authorizers
        .iter()
        .enumerate()
        .filter_map(|(j, a)| match authorizer(cfg, a, sh) {
            Ok(rt) => Some(rt),
            Err(e) => {
                let key = format!("{akey}.{}.uri", item("authorizers", j, Some(&a.name)));
                errors.err(&key, e);
                None
            }
        })
        .collect();
    let mut trie = Trie::default();
    let mut routes = Vec::with_capacity(api.routes.len());
    for (ri, r) in api.routes.iter().enumerate() {
        let rkey = format!("{akey}.{}", item("routes", ri, Some(&r.key)));
        let placed = if api.websocket.is_some() {
            // Route keys, not paths: chosen per message (below).
            Ok(())
        } else if r.is_default {
            trie.set_default(ri)
        } else {
            trie.insert(r.method, &r.segs, ri)
        };
        if let Err(e) = placed {
            errors.err(&format!("{rkey}.route"), e);
        }
        let mut per_stage = Vec::with_capacity(api.stages.len());
        for s in &api.stages {
            match integration(cfg, (&api.name, r, s), sh.literal_targets) {
                Ok(rt) => per_stage.push(rt),
                // A mapping's error names its own key (`request_parameters."append:header.x"`).
                Err(e)
                    if e.starts_with("request_parameters.")
                        || e.starts_with("response_parameters.") =>
                {
                    let (key, e) = e.split_once(": ").unwrap_or((&e, ""));
                    errors.err(
                        &format!("{rkey}.{key}"),
                        format_args!("on stage {:?}: {e}", s.name),
                    );
                }
                Err(e) => {
                    errors.err(
                        &format!("{rkey}.integration"),
                        format_args!("on stage {:?}: {e}", s.name),
                    );
                }
            }
        }
        let limits = api
            .stages
            .iter()
            .map(|s| {
                sh.limits.add(
                    format!("route:{}/{}/{}", api.name, limited_as(&s.name), r.key),
                    r.throttle,
                )
            })
            .collect();
        let cache = api
            .stages
            .iter()
            .zip(&caches)
            .map(|(s, c)| cache_policy(r, s, c.as_ref()?))
            .collect();
        routes.push(RouteRt {
            key: r.key.clone(),
            api_key_required: r.api_key_required,
            iam: r.iam,
            auth: r.authorizer.map(|authorizer| RouteAuth {
                authorizer,
                scopes: r.authorization_scopes.clone(),
            }),
            limits,
            per_stage,
            cache,
        });
    }
    let stage_limits = api
        .stages
        .iter()
        .map(|s| {
            sh.limits.add(
                format!("stage:{}/{}", api.name, limited_as(&s.name)),
                s.throttle,
            )
        })
        .collect();
    let plain_keys = (0..api.stages.len())
        .map(|i| {
            routes
                .iter()
                .all(|r| r.cache[i].as_ref().is_none_or(|p| p.key.is_empty()))
        })
        .collect();
    let mut secret_query: Vec<Box<str>> = Vec::new();
    for a in &authorizers {
        let names: Vec<&str> = match a {
            AuthorizerRt::Jwt(j) => match &j.source {
                crate::config::IdentitySource::Query(n) => vec![n.as_str()],
                crate::config::IdentitySource::Header(_) => vec![],
            },
            AuthorizerRt::External(x) => x
                .sources
                .iter()
                .filter_map(|s| match s {
                    crate::config::IdentityRef::Query(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect(),
        };
        for n in names {
            if !secret_query.iter().any(|q| &**q == n) {
                secret_query.push(n.into());
            }
        }
    }
    ApiRt {
        secret_query,
        key_from_authorizer: api.api_key_source == crate::config::ApiKeySource::Authorizer,
        name: api.name.clone(),
        stages: api.stages.iter().map(|s| s.name.clone()).collect(),
        trie,
        routes,
        stage_limits,
        caches,
        plain_keys,
        authorizers,
        access_logs: Vec::new(),
        series_base: 0,
        trace_sample: Vec::new(),
        canaries: api.stages.iter().map(|s| s.canary).collect(),
        compression: api
            .stages
            .iter()
            .map(|s| s.compression.clone().map(Arc::new))
            .collect(),
        cors: api
            .cors
            .as_ref()
            .map(|c| Arc::new(crate::http::cors::CorsRt::new(c))),
        ws: api.websocket.as_ref().map(|w| {
            let mut rt = crate::snapshot::WsRt {
                selection: w.selection.clone(),
                keys: Default::default(),
                connect: None,
                disconnect: None,
                default: None,
                subprotocols: w.subprotocols.clone(),
                connections_iam: w.connections_iam,
            };
            for (ri, r) in api.routes.iter().enumerate() {
                let slot = match r.key.as_str() {
                    "$connect" => &mut rt.connect,
                    "$disconnect" => &mut rt.disconnect,
                    "$default" => &mut rt.default,
                    k => {
                        if rt.keys.insert(k.to_string(), ri).is_some() {
                            errors.err(
                                &format!("{akey}.{}.route", item("routes", ri, Some(&r.key))),
                                "is the key of another route of this API",
                            );
                        }
                        continue;
                    }
                };
                if slot.replace(ri).is_some() {
                    errors.err(
                        &format!("{akey}.{}.route", item("routes", ri, Some(&r.key))),
                        "is the key of another route of this API",
                    );
                }
            }
            rt
        }),
    }
}

/// An authorizer, compiled: a JWT authorizer shares the key source of any other with the
/// same issuer and `jwks_uri`.
fn authorizer(
    cfg: &Config,
    a: &Authorizer,
    sh: &mut Shared<'_, '_>,
) -> Result<AuthorizerRt, String> {
    static IDS: AtomicU64 = AtomicU64::new(1);
    let sources = &mut *sh.jwks_sources;
    Ok(match &a.kind {
        AuthorizerKind::External(x) => {
            let target = parse_uri_target(&x.template, &cfg.upstreams)?;
            let dest = match target.authority {
                Authority::Named(i) => {
                    if cfg.upstreams[i].h2 {
                        return Err(format!(
                            "upstream {:?} speaks HTTP/2; an authorizer is called over HTTP/1.1",
                            cfg.upstreams[i].name
                        ));
                    }
                    Dest::Upstream(i)
                }
                Authority::Addr { addr, host, tls } => {
                    Dest::Literal(literal_target(addr, &host, tls, sh.literal_targets)?)
                }
            };
            // The configuration refuses a uri that is not literal (a path with stage
            // variables would otherwise be called at `/`).
            let path = target
                .path
                .as_literal()
                .ok_or_else(|| format!("authorizer {:?}: its uri is not a literal URL", a.name))?
                .to_string();
            let validation = match &x.identity_validation_expression {
                Some(re) => {
                    Some(regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())?)
                }
                None => None,
            };
            AuthorizerRt::External(ExternalRt {
                name: a.name.clone(),
                token: x.token,
                dest,
                host_header: target.host_header,
                path,
                sources: x.identity_sources.clone(),
                validation,
                ttl: x.ttl,
                timeout: x.timeout,
                cache: Default::default(),
            })
        }
        AuthorizerKind::Jwt(j) => {
            let key = j.key_source();
            let slot = match sources.iter().position(|s| *s.key == *key) {
                Some(i) => {
                    let s = &mut sources[i];
                    s.refresh = s.refresh.min(j.jwks_refresh);
                    s.cooldown = s.cooldown.min(j.jwks_cooldown);
                    s.timeout = s.timeout.min(j.jwks_timeout);
                    i
                }
                None => {
                    sources.push(JwksSource {
                        key: key.into(),
                        issuer: j.issuer.clone(),
                        discovery: j.jwks_uri.is_none().then(|| j.discovery_url()),
                        jwks_uri: j.jwks_uri.clone(),
                        refresh: j.jwks_refresh,
                        cooldown: j.jwks_cooldown,
                        timeout: j.jwks_timeout,
                    });
                    sources.len() - 1
                }
            };
            AuthorizerRt::Jwt(JwtRt {
                name: a.name.clone(),
                rules: Rules {
                    issuer: j.issuer.clone(),
                    audience: j.audience.clone(),
                    leeway: j.leeway.as_secs(),
                },
                source: j.identity_source.clone(),
                slot,
                id: IDS.fetch_add(1, Ordering::Relaxed),
            })
        }
    })
}

/// How route `r` caches on stage `s` (whose cache is `c`): the stage's settings with the
/// route's overrides. Only GET routes (and ANY) cache: a HEAD request they take is served
/// from their GET entries. A route of its own for HEAD does not, or it would answer from
/// (and be answered by) the GET route's entries, whose integration is another.
fn cache_policy(r: &Route, s: &Stage, c: &Arc<StageCache>) -> Option<CachePolicy> {
    let sc = s.cache.as_ref()?;
    let cacheable_method = match r.method {
        MethodSel::Any => true,
        MethodSel::One(m) => m == Method::Get,
    };
    let rc = r.cache.as_ref();
    // An integration response renders each answer: nothing stored to serve it from.
    let rendered = r
        .transform
        .as_ref()
        .is_some_and(|t| !t.responses.is_empty());
    if !cacheable_method || rendered || rc.is_some_and(|rc| !rc.enabled) {
        return None;
    }
    Some(CachePolicy {
        cache: c.clone(),
        ttl: rc.and_then(|rc| rc.ttl).unwrap_or(sc.ttl),
        key: rc.map(|rc| rc.key.clone()).unwrap_or_default(),
        invalidation: sc.client_invalidation,
        unauthorized: sc.unauthorized_invalidation,
        max_entry: sc.max_entry,
        stale_if_error: sc.stale_if_error,
        lock_timeout: sc.lock_timeout,
    })
}

/// Route `r`'s integration on stage `s`, stage variables substituted.
fn integration(
    cfg: &Config,
    (api_name, r, s): (&str, &Route, &Stage),
    literal_targets: &mut Vec<LiteralTarget>,
) -> Result<IntegrationRt, String> {
    let resolve_headers = |hs: &[(String, Template)]| -> Result<Vec<(String, Template)>, String> {
        hs.iter()
            .map(|(n, t)| Ok((n.clone(), t.with_stage(&s.variables)?)))
            .collect()
    };
    Ok(match &r.integration {
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
                    Dest::Literal(literal_target(addr, &host, tls, literal_targets)?)
                }
            };
            IntegrationRt::Http(HttpIntegration {
                dest,
                host_header: target.host_header,
                path_identity: target.path.identity_in_path(),
                path: target.path,
                headers: resolve_headers(header_templates)?,
                timeout: *timeout,
                drop_underscores: cfg.limits.underscores_in_headers == Underscores::Drop,
                whole_path: r.is_default,
                mapping: match &r.mapping {
                    None => None,
                    Some(m) => Some(Arc::new(m.resolve(
                        &s.variables,
                        &[
                            ("stage", crate::config::stage_of(&s.name)),
                            ("apiId", api_name),
                            ("routeKey", r.key.as_str()),
                        ],
                    )?)),
                },
            })
        }
        Integration::Mock {
            status,
            header_templates,
            body_template,
            ..
        } => {
            let body = body_template.with_stage(&s.variables)?;
            // A fixed body that integration responses' templates read: parsed here, once.
            let json = match body.pieces.as_slice() {
                [] => None,
                pieces => pieces
                    .iter()
                    .map(|p| match p {
                        crate::syntax::template::Piece::Lit(t) => Some(t.as_str()),
                        _ => None,
                    })
                    .collect::<Option<String>>(),
            }
            .filter(|_| {
                r.transform.as_ref().is_some_and(|t| {
                    t.responses.iter().any(|x| {
                        x.templates
                            .iter()
                            .any(|(_, t)| t.reads(crate::syntax::vtl::READS_JSON))
                    })
                })
            })
            .and_then(|text| serde_json::from_str(&text).ok())
            .map(Arc::new);
            IntegrationRt::Mock(MockIntegration {
                status: *status,
                headers: resolve_headers(header_templates)?,
                body,
                has_content_type: header_templates.iter().any(|(n, _)| n == "content-type"),
                json,
            })
        }
    })
}

/// The index of a literal integration address (`http://10.0.0.1:8080/...`), shared by every
/// route that names the same address and TLS name.
fn literal_target(
    addr: std::net::SocketAddr,
    host: &str,
    tls: bool,
    literal_targets: &mut Vec<LiteralTarget>,
) -> Result<usize, String> {
    let tls = if tls {
        let h = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        Some(UpTls {
            config: crate::tls::client::client_config(None, None, false)?,
            name: crate::tls::client::server_name(h)?,
            trust: UpTls::trust_of(None, None),
        })
    } else {
        None
    };
    let name = tls.as_ref().map(UpTls::name_text);
    Ok(literal_targets
        .iter()
        .position(|l| l.addr == addr && l.tls.as_ref().map(UpTls::name_text) == name)
        .unwrap_or_else(|| {
            literal_targets.push(LiteralTarget { addr, tls });
            literal_targets.len() - 1
        }))
}

/// The stage whose limits a stage's requests count against: a canary's are its stage's (its
/// share of the traffic is the stage's, as Amazon's canary settings have no throttle).
fn limited_as(stage: &str) -> &str {
    stage.strip_suffix(crate::config::CANARY).unwrap_or(stage)
}
