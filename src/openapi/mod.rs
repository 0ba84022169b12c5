//! OpenAPI export of an API as one stage serves it: OpenAPI 3.0 (`oas30`) or Swagger 2.0
//! (`swagger`), with Amazon API Gateway's extensions (`x-amazon-apigateway-integration`,
//! `-any-method`, `-authorizer`, `-authtype`, `-api-key-source`) or without them (a clean
//! document for the API's consumers). The admin API serves it
//! (`GET /apis/{api}/stages/{stage}/export`), and `tollgate openapi` converts file-managed
//! APIs offline. Import ([`import`]) reads such documents back (and Amazon's), [`merge`]
//! folds one into an existing definition, [`yaml`] reads YAML documents.
//!
//! What Amazon's extensions cannot say, an export keeps in Tollgate's own keys, read back by
//! import, so that export, import and export again give the same document and the same
//! behaviour: `x-tollgate-mock` (a mock's status, headers and body as Tollgate answers them,
//! and whether its `responses` are mapping templates), `x-tollgate-authorizer` (an
//! authorizer's settings Amazon has no field for), `x-tollgate-default-route`,
//! `x-tollgate-response-order` (the order an integration's `responses` are tried in),
//! `x-tollgate-route` (a route's cache and throttle, which Amazon keeps in the stage).

mod import;
mod integration;
mod merge;
mod models;
mod policy;
pub mod yaml;
pub use import::{import, Imported};
pub use merge::{keep_settings, merge};

use serde_json::{json, Map, Value};

use crate::config::{Api, AuthorizerKind, Config, IdentityRef, IdentitySource, Integration, Route};
use crate::syntax::route_key::{MethodSel, Seg};

/// Which specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Oas30,
    Swagger,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "oas30" | "openapi" | "oas3" => Some(Kind::Oas30),
            "swagger" | "swagger2" | "oas2" => Some(Kind::Swagger),
            _ => None,
        }
    }
}

/// Where an exported document keeps the `$default` route (under `paths`).
pub const DEFAULT_ROUTE: &str = "x-tollgate-default-route";

/// A bound on what an import may build from a document: `factor` times the document's size,
/// at least `min` (so that small documents keep some room), at most `max` bytes. Counted
/// before anything is built, so that a small document cannot make the admin thread build (or
/// every later change compile) something out of proportion to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Growth {
    pub factor: usize,
    pub min: usize,
    pub max: usize,
}

impl Growth {
    /// The bytes a document of `input` bytes may grow to.
    pub(crate) fn budget(&self, input: usize) -> usize {
        input.saturating_mul(self.factor).clamp(self.min, self.max)
    }

    /// The rule in words, for refusals.
    fn rule(&self) -> String {
        format!(
            "{} times the document's size, at least {}, at most {}",
            self.factor,
            mib(self.min),
            mib(self.max)
        )
    }
}

/// `n` bytes in MiB, for messages.
fn mib(n: usize) -> String {
    let m = n as f64 / f64::from(1 << 20);
    if m.fract() == 0.0 {
        format!("{m} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

/// A security scheme's key for an authorizer's settings Amazon has no field for, by
/// Tollgate's names: [`OWN_JWT`] or [`OWN_EXTERNAL`].
const OWN_AUTHORIZER: &str = "x-tollgate-authorizer";
/// In an operation: the route's settings Amazon keeps in the stage ([`own_route`]).
pub(crate) const OWN_ROUTE: &str = "x-tollgate-route";
/// The members of [`OWN_ROUTE`].
pub(crate) const OWN_ROUTE_KEYS: [&str; 2] = ["cache", "throttle"];
/// In an integration: the selection patterns of its `responses` in the order they are tried.
pub(crate) const RESPONSE_ORDER: &str = "x-tollgate-response-order";
/// A JWT authorizer's settings in [`OWN_AUTHORIZER`].
const OWN_JWT: [&str; 5] = [
    "jwks_uri",
    "leeway",
    "jwks_refresh",
    "jwks_cooldown",
    "jwks_timeout",
];
/// A request or token authorizer's settings in [`OWN_AUTHORIZER`].
const OWN_EXTERNAL: [&str; 1] = ["timeout"];

/// A duration as the configuration writes it (`"3s"`, `"250ms"`).
fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The methods `ANY` stands for in a document without extensions.
const ANY_METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

/// Why a WebSocket API is not exported: an OpenAPI document describes an HTTP API (Amazon's
/// ExportApi exports HTTP APIs only); its route keys are not paths.
pub(crate) fn websocket_export(api: &str) -> String {
    format!("API {api:?} is a WebSocket API: only HTTP APIs are exported as OpenAPI (their route keys are methods and paths)")
}

/// The document for `api` as `stage` serves it. `Err` names what does not exist.
pub fn export(
    cfg: &Config,
    api: &str,
    stage: &str,
    kind: Kind,
    extensions: bool,
) -> Result<Value, String> {
    // A run-time API appears once per deployment its stages serve: the one with the stage.
    if !cfg.apis.iter().any(|a| a.name == api) {
        return Err(format!("no API {api:?}"));
    }
    let ai = cfg
        .apis
        .iter()
        .position(|a| a.name == api && a.stages.iter().any(|s| s.name == stage))
        .ok_or_else(|| format!("API {api:?} has no stage {stage:?}"))?;
    let a = &cfg.apis[ai];
    if a.websocket.is_some() {
        return Err(websocket_export(api));
    }
    let si = a.stages.iter().position(|s| s.name == stage).unwrap_or(0);
    // Where the stage is served: the first domain mapping that names it.
    let (host, base) = cfg
        .domains
        .iter()
        .find_map(|d| {
            let m = d.mappings.iter().find(|m| m.api == ai && m.stage == si)?;
            let host = match &d.host {
                crate::config::HostPattern::Exact(h) => Some(h.clone()),
                _ => None,
            };
            Some((host, m.base_path.join("/")))
        })
        .unwrap_or((None, String::new()));
    let tls = cfg.listeners.iter().any(|l| l.tls.is_some());
    let scheme = if tls { "https" } else { "http" };
    let mut paths = Map::new();
    let mut validators = std::collections::BTreeMap::new();
    let mut schemes = Map::new();
    for r in &a.routes {
        let Some((path, params)) = path_of(r) else {
            // `$default` (the catch-all route) is no path: with extensions it goes under the
            // paths object's own extension key (a "$default" path key would not be valid
            // OpenAPI); a clean document has no place for it.
            if extensions {
                let op = operation(cfg, a, r, kind, true, &[], &mut schemes);
                paths.insert(
                    DEFAULT_ROUTE.into(),
                    json!({ "x-amazon-apigateway-any-method": op }),
                );
            }
            continue;
        };
        let entry = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("an object");
        let mut op = operation(cfg, a, r, kind, extensions, &params, &mut schemes);
        if let Value::Object(o) = &mut op {
            models::export_route(r, kind == Kind::Oas30, extensions, o, &mut validators);
        }
        match (&r.method, extensions) {
            (MethodSel::One(m), _) => {
                entry.insert(m.as_str().to_ascii_lowercase(), op);
            }
            (MethodSel::Any, true) => {
                entry.insert("x-amazon-apigateway-any-method".into(), op);
            }
            (MethodSel::Any, false) => {
                for m in ANY_METHODS {
                    // A route for one method wins over ANY on the same path, as in routing.
                    entry.entry(m).or_insert_with(|| op.clone());
                }
            }
        }
    }
    let title = a.name.clone();
    let mut doc = match kind {
        Kind::Oas30 => {
            let server = match &host {
                Some(h) => format!("{scheme}://{h}/{base}"),
                None => format!("/{base}"),
            };
            json!({
                "openapi": "3.0.1",
                "info": { "title": title, "version": stage },
                "servers": [{ "url": server }],
                "paths": paths,
                "components": { "securitySchemes": schemes },
            })
        }
        Kind::Swagger => {
            let mut d = json!({
                "swagger": "2.0",
                "info": { "title": title, "version": stage },
                "basePath": format!("/{base}"),
                "schemes": [scheme],
                "paths": paths,
                "securityDefinitions": schemes,
            });
            if let Some(h) = &host {
                d["host"] = json!(h);
            }
            d
        }
    };
    if extensions
        && (a.routes.iter().any(|r| r.api_key_required)
            || a.api_key_source != crate::config::ApiKeySource::Header)
    {
        doc["x-amazon-apigateway-api-key-source"] = json!(a.api_key_source);
    }
    models::export_models(a, kind == Kind::Oas30, &mut doc);
    if extensions && !validators.is_empty() {
        doc["x-amazon-apigateway-request-validators"] = json!(validators);
    }
    if extensions && !a.gateway_responses.is_empty() {
        let mut g = Map::new();
        for (ty, r) in &a.gateway_responses {
            let mut e = Map::new();
            if let Some(s) = r.status {
                e.insert("statusCode".into(), json!(s));
            }
            if !r.headers.is_empty() {
                let p: Map<String, Value> = r
                    .headers
                    .iter()
                    .map(|(n, v)| {
                        (
                            format!("gatewayresponse.header.{n}"),
                            json!(format!("'{v}'")),
                        )
                    })
                    .collect();
                e.insert("responseParameters".into(), Value::Object(p));
            }
            if let Some(b) = &r.body {
                e.insert("responseTemplates".into(), json!({ "application/json": b }));
            }
            g.insert(ty.clone(), Value::Object(e));
        }
        doc["x-amazon-apigateway-gateway-responses"] = Value::Object(g);
    }
    if let (true, Some(p)) = (extensions, &a.resource_policy) {
        doc[policy::KEY] = policy::export(p);
    }
    if let (true, Some(c)) = (extensions, &a.cors) {
        let mut x = json!({
            "allowOrigins": c.allow_origins,
            "allowMethods": c.allow_methods,
            "allowHeaders": c.allow_headers,
            "exposeHeaders": c.expose_headers,
            "allowCredentials": c.allow_credentials,
        });
        if let Some(m) = c.max_age {
            x["maxAge"] = json!(m);
        }
        doc["x-amazon-apigateway-cors"] = x;
    }
    Ok(doc)
}

/// The route's path in OpenAPI form and its path parameters; `None` for `$default`.
fn path_of(r: &Route) -> Option<(String, Vec<String>)> {
    if r.is_default {
        return None;
    }
    let mut path = String::new();
    let mut params = Vec::new();
    for s in &r.segs {
        path.push('/');
        match s {
            // Decoded in the route: encoded again, as the path a client writes (`/a%20b`),
            // so that the document imports back to the same route.
            Seg::Lit(l) => {
                let mut b = Vec::with_capacity(l.len());
                crate::syntax::path::encode_segment(l, &mut b);
                path.push_str(&String::from_utf8_lossy(&b));
            }
            Seg::Param(p) => {
                path.push_str(&format!("{{{p}}}"));
                params.push(p.clone());
            }
            Seg::Greedy(p) => {
                path.push_str(&format!("{{{p}+}}"));
                params.push(format!("{p}+"));
            }
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    Some((path, params))
}

/// One operation: parameters, responses, security and (with extensions) the integration.
fn operation(
    cfg: &Config,
    a: &Api,
    r: &Route,
    kind: Kind,
    extensions: bool,
    params: &[String],
    schemes: &mut Map<String, Value>,
) -> Value {
    let mut op = Map::new();
    let parameters: Vec<Value> = params
        .iter()
        .map(|p| match kind {
            Kind::Oas30 => {
                json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } })
            }
            Kind::Swagger => json!({ "name": p, "in": "path", "required": true, "type": "string" }),
        })
        .collect();
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }
    let status = match &r.integration {
        Integration::Mock { status, .. } => status.to_string(),
        Integration::Http { .. } => "default".to_string(),
    };
    let description = if status == "default" {
        "The integration's answer".to_string()
    } else {
        format!("{status} response")
    };
    op.insert(
        "responses".into(),
        json!({ status: { "description": description } }),
    );
    // One requirement object naming every scheme: a route asks for all of them (OpenAPI's
    // requirements in a list are alternatives, any one of which would do).
    let mut security = Map::new();
    // The built-in schemes' names are not an authorizer's: one named `api_key` took the key
    // scheme's place (or the key scheme its place), and a route behind the authorizer came
    // back behind an API key alone.
    let free = |base: &str| {
        (0..)
            .map(|i| {
                if i == 0 {
                    base.to_string()
                } else {
                    format!("{base}_{i}")
                }
            })
            .find(|n| !a.authorizers.iter().any(|x| x.name == *n))
            .unwrap_or_else(|| base.to_string())
    };
    if r.api_key_required {
        let name = free("api_key");
        schemes.insert(
            name.clone(),
            json!({ "type": "apiKey", "name": "x-api-key", "in": "header" }),
        );
        security.insert(name, json!([]));
    }
    if r.iam {
        let mut s = json!({ "type": "apiKey", "name": "Authorization", "in": "header" });
        if extensions {
            s["x-amazon-apigateway-authtype"] = json!("awsSigv4");
        }
        let name = free("sigv4");
        schemes.insert(name.clone(), s);
        security.insert(name, json!([]));
    }
    if let Some(auth) = r.authorizer.and_then(|i| a.authorizers.get(i)) {
        schemes.insert(auth.name.clone(), scheme(auth, kind, extensions));
        let scopes = match &auth.kind {
            AuthorizerKind::Jwt(_) => r.authorization_scopes.clone(),
            AuthorizerKind::External(_) => Vec::new(),
        };
        security.insert(auth.name.clone(), json!(scopes));
    }
    if !security.is_empty() {
        op.insert("security".into(), json!([security]));
    }
    if extensions {
        op.insert(
            "x-amazon-apigateway-integration".into(),
            integration(cfg, r, params),
        );
        if let Some(own) = own_route(r) {
            op.insert(OWN_ROUTE.into(), own);
        }
    }
    Value::Object(op)
}

/// A route's settings Amazon keeps in the stage's route settings, not in the document: its
/// cache and its throttle, as a definition writes them (`cache = { ... }`, `throttle = { rate,
/// burst }`). Without them a copy made by import served one caller's cached answer to another
/// (a key part lost) and lifted the route's limit.
fn own_route(r: &Route) -> Option<Value> {
    let mut own = Map::new();
    if let Some(c) = &r.cache {
        let mut v = Map::new();
        if !c.enabled {
            v.insert("enabled".into(), json!(false));
        }
        if let Some(t) = c.ttl {
            v.insert("ttl".into(), json!(duration(t)));
        }
        if !c.key.is_empty() {
            let key: Vec<String> = c
                .key
                .iter()
                .map(|k| match k {
                    crate::config::KeyPart::Query(q) => format!("query.{q}"),
                    crate::config::KeyPart::Header(h) => format!("header.{h}"),
                    crate::config::KeyPart::Path(_, p) => format!("path.{p}"),
                })
                .collect();
            v.insert("key".into(), json!(key));
        }
        own.insert("cache".into(), Value::Object(v));
    }
    if let Some(t) = &r.throttle {
        own.insert(
            "throttle".into(),
            json!({ "rate": t.rate, "burst": t.burst }),
        );
    }
    (!own.is_empty()).then_some(Value::Object(own))
}

/// A security scheme for an authorizer.
fn scheme(auth: &crate::config::Authorizer, kind: Kind, extensions: bool) -> Value {
    match &auth.kind {
        AuthorizerKind::Jwt(j) => {
            let header = match &j.identity_source {
                IdentitySource::Header(h) => format!("$request.header.{h}"),
                IdentitySource::Query(q) => format!("$request.querystring.{q}"),
            };
            let mut s = match kind {
                Kind::Oas30 => json!({
                    "type": "openIdConnect",
                    "openIdConnectUrl": j.discovery_url().text,
                }),
                // Swagger 2.0 has no OpenID Connect: a bearer token where the authorizer reads
                // it (the scopes stay on the requirement, as Amazon's own exports write them).
                Kind::Swagger => match &j.identity_source {
                    IdentitySource::Header(h) => {
                        json!({ "type": "apiKey", "name": h, "in": "header" })
                    }
                    IdentitySource::Query(q) => {
                        json!({ "type": "apiKey", "name": q, "in": "query" })
                    }
                },
            };
            if extensions {
                s["x-amazon-apigateway-authorizer"] = json!({
                    "type": "jwt",
                    "identitySource": header,
                    "jwtConfiguration": { "issuer": j.issuer, "audience": j.audience },
                });
                let mut own = json!({
                    "leeway": duration(j.leeway),
                    "jwks_refresh": duration(j.jwks_refresh),
                    "jwks_cooldown": duration(j.jwks_cooldown),
                    "jwks_timeout": duration(j.jwks_timeout),
                });
                if let Some(u) = &j.jwks_uri {
                    own["jwks_uri"] = json!(u.text);
                }
                s[OWN_AUTHORIZER] = own;
            }
            s
        }
        AuthorizerKind::External(x) => {
            let first = x.identity_sources.iter().find_map(|s| match s {
                IdentityRef::Header(h) => Some(("header", h.clone())),
                IdentityRef::Query(q) => Some(("query", q.clone())),
                _ => None,
            });
            let (place, name) = first.unwrap_or(("header", "Authorization".into()));
            let mut s = json!({ "type": "apiKey", "name": name, "in": place });
            if extensions {
                let sources: Vec<String> = x
                    .identity_sources
                    .iter()
                    .map(|s| match s {
                        IdentityRef::Header(h) => format!("$request.header.{h}"),
                        IdentityRef::Query(q) => format!("$request.querystring.{q}"),
                        IdentityRef::StageVar(v) => format!("$stageVariables.{v}"),
                        IdentityRef::Context(c) => format!("$context.{c}"),
                    })
                    .collect();
                s["x-amazon-apigateway-authtype"] = json!("custom");
                let mut a = json!({
                    "type": if x.token { "token" } else { "request" },
                    "authorizerUri": x.uri,
                    "identitySource": sources.join(", "),
                    "authorizerResultTtlInSeconds": x.ttl.as_secs(),
                    "authorizerPayloadFormatVersion": "2.0",
                    "enableSimpleResponses": true,
                });
                if let Some(re) = &x.identity_validation_expression {
                    a["identityValidationExpression"] = json!(re);
                }
                s["x-amazon-apigateway-authorizer"] = a;
                s[OWN_AUTHORIZER] = json!({ "timeout": duration(x.timeout) });
            }
            s
        }
    }
}

/// `x-amazon-apigateway-integration` for a route.
fn integration(cfg: &Config, r: &Route, params: &[String]) -> Value {
    match &r.integration {
        Integration::Http {
            uri,
            timeout,
            headers,
            ..
        } => {
            let mut request_parameters = Map::new();
            for p in params {
                let name = p.trim_end_matches('+');
                request_parameters.insert(
                    format!("integration.request.path.{name}"),
                    json!(format!("method.request.path.{name}")),
                );
            }
            for (h, v) in headers {
                request_parameters.insert(
                    format!("integration.request.header.{h}"),
                    json!(format!("'{v}'")),
                );
            }
            // Parameter mapping, in an HTTP API's words.
            for (k, v) in &r.request_parameters {
                request_parameters.insert(k.clone(), json!(v));
            }
            let method = match &r.method {
                MethodSel::One(m) => m.as_str(),
                MethodSel::Any => "ANY",
            };
            let mut i = json!({
                "type": if r.transform.is_some() { "http" } else { "http_proxy" },
                "httpMethod": method,
                "uri": uri,
                "passthroughBehavior": "when_no_match",
                "connectionType": "INTERNET",
                "timeoutInMillis": timeout.as_millis().min(cfg.limits.integration_timeout.as_millis()) as u64,
            });
            if !request_parameters.is_empty() {
                i["requestParameters"] = Value::Object(request_parameters);
            }
            if !r.response_parameters.is_empty() {
                i["responseParameters"] = json!(r.response_parameters);
            }
            if let Some(t) = &r.transform {
                templates(t, &mut i);
            }
            i
        }
        Integration::Mock {
            status,
            headers,
            body,
            ..
        } => {
            // How Tollgate answers, whatever Amazon's fields make of it: the body as the
            // definition writes it (Tollgate's `{param}` and `${...}` substitutions, no
            // Velocity: `$5` and `##` are text), the status, the static headers.
            let mut own = json!({ "status": status, "body": body });
            if !headers.is_empty() {
                let h: Map<String, Value> =
                    headers.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
                own["headers"] = Value::Object(h);
            }
            if let Some(t) = &r.transform {
                // Its mapping templates are the route's own, exactly: no default response
                // or request template added for Amazon's sake.
                let mut i = json!({ "type": "mock" });
                templates(t, &mut i);
                own["templates"] = json!(true);
                i["x-tollgate-mock"] = own;
                return i;
            }
            let response_parameters: Map<String, Value> = headers
                .iter()
                .map(|(h, v)| {
                    (
                        format!("method.response.header.{h}"),
                        json!(format!("'{v}'")),
                    )
                })
                .collect();
            let content_type = headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case("content-type"))
                .map_or("application/json", |(_, v)| v.as_str());
            let mut default = json!({
                "statusCode": status.to_string(),
                "responseTemplates": { content_type: body },
            });
            if !response_parameters.is_empty() {
                default["responseParameters"] = Value::Object(response_parameters);
            }
            json!({
                "type": "mock",
                "requestTemplates": { "application/json": "{\"statusCode\": 200}" },
                "passthroughBehavior": "when_no_match",
                "responses": { "default": default },
                "x-tollgate-mock": own,
            })
        }
    }
}

/// An integration's mapping templates and integration responses, as Amazon API Gateway's
/// `requestTemplates`, `passthroughBehavior` and `responses` say them.
fn templates(t: &crate::config::Transform, i: &mut Value) {
    use crate::config::Passthrough;
    let by_type = |ts: &[(String, crate::syntax::vtl::Template)]| -> Map<String, Value> {
        ts.iter()
            .map(|(ct, t)| (ct.clone(), json!(t.source())))
            .collect()
    };
    if !t.request.is_empty() {
        i["requestTemplates"] = Value::Object(by_type(&t.request));
    }
    i["passthroughBehavior"] = json!(match t.passthrough {
        Passthrough::WhenNoMatch => "when_no_match",
        Passthrough::WhenNoTemplates => "when_no_templates",
        Passthrough::Never => "never",
    });
    if t.responses.is_empty() {
        return;
    }
    let mut responses = Map::new();
    let mut order = Vec::new();
    for r in &t.responses {
        let mut out = Map::new();
        if let Some(s) = r.status {
            out.insert("statusCode".into(), json!(s.to_string()));
        }
        let params: Map<String, Value> = r
            .headers
            .iter()
            .map(|(n, src)| (format!("method.response.header.{n}"), json!(src.source())))
            .collect();
        if !params.is_empty() {
            out.insert("responseParameters".into(), Value::Object(params));
        }
        if !r.templates.is_empty() {
            out.insert(
                "responseTemplates".into(),
                Value::Object(by_type(&r.templates)),
            );
        }
        // In the order they are tried (the document keeps it); a second response with the
        // same pattern is never chosen, and is left out rather than written over the first.
        let key = r.pattern.as_ref().map_or("default", |(_, p)| p.as_str());
        if !responses.contains_key(key) {
            order.push(json!(key));
            responses.insert(key.to_string(), Value::Object(out));
        }
    }
    i["responses"] = Value::Object(responses);
    // The order they are tried in, which the object above does not keep (its keys come out
    // sorted, and a reader may take them in any order).
    if order.len() > 1 {
        i[RESPONSE_ORDER] = Value::Array(order);
    }
}
