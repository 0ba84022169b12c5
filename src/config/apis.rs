//! `[[apis]]`: stages, stage variables, routes and their integrations (`http`, `mock`).

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct Api {
    pub name: String,
    pub stages: Vec<Stage>,
    pub routes: Vec<Route>,
    /// Who may call the API at all, by source address (before any authorizer).
    pub resource_policy: Option<ResourcePolicy>,
    pub authorizers: Vec<Authorizer>,
    /// `[[apis.models]]`: JSON Schemas routes validate request bodies with.
    pub models: Vec<Model>,
    /// `cors = { ... }`: the gateway answers preflights and adds CORS headers.
    pub cors: Option<Cors>,
    /// By response type: how the answers the gateway writes itself are customised.
    pub gateway_responses: BTreeMap<String, GatewayResponse>,
    /// `kind = "websocket"`: routes are route keys chosen per message.
    pub websocket: Option<WebSocket>,
    /// `api_key_source`: where routes that require an API key read it.
    pub api_key_source: ApiKeySource,
}

/// Amazon API Gateway's `apiKeySource` (a WebSocket API's `apiKeySelectionExpression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApiKeySource {
    /// The `x-api-key` header.
    #[default]
    Header,
    /// The `usageIdentifierKey` an external authorizer answered with.
    Authorizer,
}

/// A WebSocket API's `route_selection_expression`.
#[derive(Debug, Clone, Serialize)]
pub struct WebSocket {
    /// As written (`$request.body.action`, `${request.body.a.b}`).
    pub route_selection_expression: String,
    /// The JSON members it reads, outermost first.
    #[serde(skip)]
    pub selection: Vec<String>,
    /// `subprotocols`: what `Sec-WebSocket-Protocol` may be answered with, preferred first.
    pub subprotocols: Vec<String>,
    /// `connections_authorization`: whether `@connections` on the API's own domain takes
    /// SigV4-signed callers allowed `execute-api:ManageConnections` (`"aws_iam"`, the default,
    /// as Amazon's) or anyone its resource policy lets in (`"none"`).
    pub connections_iam: bool,
}

impl WebSocket {
    /// Parses a route selection expression: `$request.body.PATH` or `${request.body.PATH}`,
    /// PATH being member names separated by dots.
    fn parse(expr: &str) -> Result<WebSocket, String> {
        let inner = expr
            .strip_prefix("${")
            .and_then(|e| e.strip_suffix('}'))
            .or_else(|| expr.strip_prefix('$'))
            .unwrap_or(expr);
        let path = inner
            .strip_prefix("request.body.")
            .ok_or("\"$request.body.NAME\" or \"${request.body.a.b}\"")?;
        let selection: Vec<String> = path.split('.').map(str::to_string).collect();
        if selection.iter().any(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }) {
            return Err("member names of letters, digits, '_' and '-' separated by dots".into());
        }
        Ok(WebSocket {
            route_selection_expression: expr.to_string(),
            selection,
            subprotocols: Vec::new(),
            connections_iam: true,
        })
    }
}

/// A resource policy by source address, with Amazon's semantics: an explicit deny wins; with an
/// allow list, only what it names is allowed.
#[derive(Debug, Clone, Serialize)]
pub struct ResourcePolicy {
    pub allow: Vec<crate::syntax::cidr::Cidr>,
    pub deny: Vec<crate::syntax::cidr::Cidr>,
}

/// What a resource policy says of a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyVerdict {
    Allow,
    /// Not in the allow list.
    ImplicitDeny,
    /// In the deny list.
    ExplicitDeny,
}

impl ResourcePolicy {
    pub fn evaluate(&self, ip: std::net::IpAddr) -> PolicyVerdict {
        if self.deny.iter().any(|c| c.contains(ip)) {
            PolicyVerdict::ExplicitDeny
        } else if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)) {
            PolicyVerdict::ImplicitDeny
        } else {
            PolicyVerdict::Allow
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: String,
    pub throttle: Option<Rate>,
    #[serde(serialize_with = "ser_redacted_vars")]
    pub variables: BTreeMap<String, String>,
    /// The stage's response cache; `None` when off.
    pub cache: Option<StageCache>,
    /// The stage's access log; `None`: the gateway's `[access_log]`, if any...
    pub access_log: Option<AccessLog>,
    /// ...unless `access_log = "off"`.
    pub access_log_off: bool,
    /// `tracing = { sample }`: this stage's sampling ratio (else `[tracing] sample`).
    pub trace_sample: Option<f64>,
    /// The stage whose response cache this one uses (a canary with `use_stage_cache`);
    /// `None`: its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_cache: Option<String>,
    /// A run-time stage's canary: where that share of its requests goes.
    pub canary: Option<CanaryLink>,
    /// `compression = { ... }`: gzip and brotli answers.
    pub compression: Option<Compression>,
}

/// A canary release: `percent` of a stage's requests go to stage `stage` of API entry `api`
/// (the canary deployment, with the stage's variables overridden).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CanaryLink {
    pub api: usize,
    pub stage: usize,
    pub percent: f64,
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
    /// Index into the API's authorizers (the route's own, or the API's default).
    #[serde(skip)]
    pub authorizer: Option<usize>,
    /// With a JWT authorizer: the token must carry at least one of these.
    pub authorization_scopes: Vec<String>,
    /// `authorization = "aws_iam"`: callers sign with SigV4.
    pub iam: bool,
    /// `request_validator`, `request_models`, `required_parameters` as written.
    #[serde(flatten)]
    pub validation_spec: ValidationSpec,
    /// What the route checks before its integration (`None`: nothing).
    #[serde(skip)]
    pub validation: Option<std::sync::Arc<Validation>>,
    /// Parameter mapping as written (literals written into credentials redacted).
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "ser_redacted_params"
    )]
    pub request_parameters: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub response_parameters: BTreeMap<String, BTreeMap<String, String>>,
    /// Parameter mapping, checked (`None`: none).
    #[serde(skip)]
    pub mapping: Option<ParamMapping>,
    /// The integration's mapping templates and responses (`None`: none).
    #[serde(skip)]
    pub transform: Option<std::sync::Arc<Transform>>,
    /// WebSocket routes: the integration's answer is sent back to the client.
    pub route_response: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Integration {
    Http {
        /// Shown with the values of secret-named query parameters redacted.
        #[serde(serialize_with = "ser_redacted_uri")]
        uri: String,
        #[serde(skip)]
        template: Template,
        #[serde(serialize_with = "ser_duration")]
        timeout: Duration,
        /// Shown with credentials (`authorization`, `x-api-key`...) redacted.
        #[serde(serialize_with = "ser_redacted_headers")]
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

/// The error of an API without stages (a run-time API's definition is checked without them).
pub(super) const STAGES_REQUIRED: &str = "at least one [[apis.stages]] entry is required";

/// A stage variable's value: what Amazon API Gateway allows (`[A-Za-z0-9-._~:/?#&=,]+`, at
/// most 2048 characters) and the rest of a URI's characters (RFC 3986: `[]@!$'()*+;%`, so an
/// IPv6 address or a percent-encoded path fits). Never CR, LF, spaces or quotes: a value is
/// pasted into request lines and header values.
fn is_variable_value(v: &str) -> bool {
    (1..=2048).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b))
}

impl Validator {
    pub(super) fn api(
        &mut self,
        i: usize,
        a: file::ApiFile,
        limits: &Limits,
        upstreams: &[Upstream],
        aws_iam: bool,
        base: &std::path::Path,
    ) -> Api {
        let key = item("apis", i, a.name.as_ref());
        let name = self.name(&format!("{key}.name"), a.name);
        let websocket = match a.kind.as_deref() {
            None | Some("http") => {
                if a.subprotocols.is_some() {
                    self.bad(
                        &format!("{key}.subprotocols"),
                        "[...]",
                        "nothing on an http API (it is a WebSocket API's key)",
                    );
                }
                if let Some(c) = &a.connections_authorization {
                    self.bad(
                        &format!("{key}.connections_authorization"),
                        c,
                        "nothing on an http API (it is a WebSocket API's key)",
                    );
                }
                if let Some(e) = &a.route_selection_expression {
                    self.bad(
                        &format!("{key}.route_selection_expression"),
                        e,
                        "nothing on an http API (it is a WebSocket API's key)",
                    );
                }
                None
            }
            Some("websocket") => {
                let expr = a
                    .route_selection_expression
                    .as_deref()
                    .unwrap_or("$request.body.action");
                match WebSocket::parse(expr) {
                    Ok(mut w) => {
                        for (j, p) in a.subprotocols.iter().flatten().enumerate() {
                            // A token (RFC 6455 4.1): what the header can carry.
                            if p.is_empty() || !p.bytes().all(crate::syntax::is_tchar) {
                                self.bad(
                                    &format!("{key}.subprotocols[{j}]"),
                                    p,
                                    "a token (letters, digits and !#$%&'*+-.^_`|~)",
                                );
                            } else {
                                w.subprotocols.push(p.clone());
                            }
                        }
                        match a.connections_authorization.as_deref() {
                            None => {}
                            Some("none") => w.connections_iam = false,
                            Some("aws_iam") if !aws_iam => self.err(
                                &format!("{key}.connections_authorization"),
                                "\"aws_iam\" needs an [aws_iam] table (its region, and the key that seals access-key secrets)",
                            ),
                            Some("aws_iam") => {}
                            Some(other) => self.bad(
                                &format!("{key}.connections_authorization"),
                                other,
                                "\"aws_iam\" (SigV4 callers allowed execute-api:ManageConnections) or \"none\"",
                            ),
                        }
                        Some(w)
                    }
                    Err(allowed) => {
                        self.bad(&format!("{key}.route_selection_expression"), expr, &allowed);
                        None
                    }
                }
            }
            Some(other) => {
                self.bad(&format!("{key}.kind"), other, "\"http\" or \"websocket\"");
                None
            }
        };
        let is_ws = a.kind.as_deref() == Some("websocket");
        let api_key_source = match a.api_key_source.as_deref() {
            None => ApiKeySource::Header,
            Some(s) if s.eq_ignore_ascii_case("header") => ApiKeySource::Header,
            Some(s) if s.eq_ignore_ascii_case("authorizer") => ApiKeySource::Authorizer,
            Some(other) => {
                self.bad(
                    &format!("{key}.api_key_source"),
                    other,
                    "\"HEADER\" (the x-api-key header) or \"AUTHORIZER\" (an external authorizer's usageIdentifierKey)",
                );
                ApiKeySource::Header
            }
        };
        if a.stages.is_empty() {
            self.err(&format!("{key}.stages"), STAGES_REQUIRED);
        }
        if is_ws && a.cors.is_some() {
            // Browsers apply no CORS to WebSocket connections (Amazon's is an http API's).
            self.err(
                &format!("{key}.cors"),
                "nothing on a WebSocket API (it is an http API's key)",
            );
        }
        let cors = a
            .cors
            .filter(|_| !is_ws)
            .map(|c| self.cors(&format!("{key}.cors"), c));
        let models = self.models(&key, a.models);
        let gateway_responses =
            self.gateway_responses(&format!("{key}.gateway_responses"), a.gateway_responses);
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
            for (k, v) in &s.variables {
                if !crate::syntax::template::is_ident(k) {
                    self.bad(
                        &format!("{skey}.variables"),
                        k,
                        "variable names of letters, digits, '_' or '-'",
                    );
                } else if !is_variable_value(v) {
                    self.bad(
                        &format!("{skey}.variables.{k}"),
                        v,
                        "1 to 2048 of the characters a URI may hold: letters, digits and -._~:/?#[]@!$&'()*+,;=% (a value lands in URIs, headers and templates as it is)",
                    );
                }
            }
            if s.auto_deploy == Some(false) {
                self.err(
                    &format!("{skey}.auto_deploy"),
                    "a file-managed API is deployed by each reload (auto_deploy = true); deployments a stage points at are for APIs managed through the admin API (POST /apis)",
                );
            }
            let access_log_off =
                matches!(&s.access_log, Some(file::AccessLogFile::Off(v)) if v == "off");
            let access_log = s
                .access_log
                .and_then(|a| self.access_log(&format!("{skey}.access_log"), a, base));
            let trace_sample = s
                .tracing
                .and_then(|t| self.ratio(&format!("{skey}.tracing.sample"), t.sample));
            let compression = s
                .compression
                .map(|c| self.compression(&format!("{skey}.compression"), c));
            stages.push(Stage {
                name: sname,
                throttle,
                variables: s.variables,
                cache,
                access_log,
                access_log_off,
                trace_sample,
                canary: None,
                shared_cache: None,
                compression,
            });
        }
        let (authorizers, declared) = self.authorizers(&key, a.authorizers, (limits, upstreams));
        // The default must name one of them even while no route takes it.
        let default_authorizer = a.default_authorizer.filter(|n| {
            let known = declared.iter().any(|d| d == n);
            if !known {
                self.bad(
                    &format!("{key}.default_authorizer"),
                    n,
                    "the name of one of the API's [[apis.authorizers]]",
                );
            }
            known
        });
        let mut routes: Vec<Route> = Vec::new();
        for (j, mut r) in a.routes.into_iter().enumerate() {
            let rkey = format!("{key}.{}", item("routes", j, r.route.as_ref()));
            let auth = authorizers::RouteAuthFile {
                authorizer: r.authorizer.clone(),
                authorization: r.authorization.clone(),
                authorization_scopes: r.authorization_scopes.clone(),
            };
            // A WebSocket API authorizes on `$connect` alone: its default is that route's.
            let default = if is_ws && r.route.as_deref() != Some("$connect") {
                None
            } else {
                default_authorizer.as_deref()
            };
            let (authorizer, authorization_scopes, iam) =
                self.route_auth(&rkey, &auth, default, (&authorizers, &declared), aws_iam);
            let spec = ValidationSpec {
                request_validator: r.request_validator.take(),
                request_models: std::mem::take(&mut r.request_models),
                required_parameters: r.required_parameters.take().unwrap_or_default(),
            };
            let route_response = r.route_response.take();
            if route_response.is_some() && !is_ws {
                self.bad(
                    &format!("{rkey}.route_response"),
                    "true",
                    "nothing on an http API's route (WebSocket routes only)",
                );
            }
            if let Some(mut route) = self.route(&rkey, r, limits, upstreams, &stages, is_ws) {
                route.route_response = route_response.unwrap_or(false);
                route.validation = self.route_validation(
                    &rkey,
                    &spec,
                    &models,
                    &route.params,
                    limits.underscores_in_headers,
                );
                route.validation_spec = spec;
                route.authorizer = authorizer;
                route.authorization_scopes = authorization_scopes;
                route.iam = iam;
                if api_key_source == ApiKeySource::Authorizer {
                    self.key_from_authorizer(&rkey, &route, &authorizers);
                }
                if is_ws {
                    self.websocket_route(&rkey, &route);
                }
                routes.push(route);
            }
        }
        let resource_policy = a.resource_policy.and_then(|p| {
            // A policy that restricts nothing is a mistake somewhere: `allow = []` reads as
            // "admit nobody" (as an imported policy with no Allow does), `{}` as a policy
            // forgotten half-written; neither is served as "admit everyone".
            let rkey = format!("{key}.resource_policy");
            if p.allow.as_ref().is_some_and(Vec::is_empty) {
                self.bad(
                    &format!("{rkey}.allow"),
                    Vec::<String>::new(),
                    "the addresses to admit (allow = [\"203.0.113.0/24\"]): an empty allow list admits nobody as written; remove resource_policy to admit everyone, or keep only its deny list to refuse some",
                );
                return None;
            }
            if p.allow.is_none() && p.deny.as_ref().is_none_or(Vec::is_empty) {
                self.err(
                    &rkey,
                    "restricts nobody (no allow list, no deny list): remove resource_policy to admit everyone, or name addresses in allow (only those are admitted) or deny (those are refused)",
                );
                return None;
            }
            let mut list =
                |field: &str, v: Option<Vec<String>>| -> Vec<crate::syntax::cidr::Cidr> {
                    v.unwrap_or_default()
                        .into_iter()
                        .enumerate()
                        .filter_map(|(j, c)| match crate::syntax::cidr::Cidr::parse(&c) {
                            Ok(c) => Some(c),
                            Err(e) => {
                                self.err(&format!("{key}.resource_policy.{field}[{j}]"), e);
                                None
                            }
                        })
                        .collect()
                };
            let allow = list("allow", p.allow);
            let deny = list("deny", p.deny);
            Some(ResourcePolicy { allow, deny })
        });
        Api {
            name,
            stages,
            routes,
            resource_policy,
            authorizers,
            models,
            cors,
            gateway_responses,
            websocket,
            api_key_source,
        }
    }

    pub(super) fn route(
        &mut self,
        rkey: &str,
        r: file::RouteFile,
        limits: &Limits,
        upstreams: &[Upstream],
        stages: &[Stage],
        websocket: bool,
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
        } else if websocket {
            // A route key: $connect, $disconnect or what the selection expression yields.
            let ok = !key.is_empty()
                && key.len() <= 128
                && !key.bytes().any(|b| b.is_ascii_control() || b == b' ')
                && (!key.starts_with('$') || key == "$connect" || key == "$disconnect");
            if !ok {
                self.bad(
                    &format!("{rkey}.route"),
                    &key,
                    "\"$connect\", \"$disconnect\", \"$default\" or a route key (up to 128 characters, no spaces, not starting with $)",
                );
                return None;
            }
            (MethodSel::Any, Vec::new(), false)
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
                self.bad(&format!("{rkey}.route"), &key, "a method of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS or ANY (TRACE and CONNECT are refused whatever the route)");
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
        let mut integ = integ;
        let transform = self.transform(
            &ikey,
            std::mem::take(&mut integ.request_templates),
            integ.passthrough_behavior.take(),
            std::mem::take(&mut integ.responses),
        );
        self.path_overrides(&ikey, transform.as_deref(), &params);
        let integration = self.integration(&ikey, integ, &params, limits, upstreams, stages)?;
        let (request_parameters, response_parameters) =
            (r.request_parameters, r.response_parameters);
        let mapping = self.mapping(rkey, &request_parameters, &response_parameters, &params);
        if mapping.is_some() && matches!(integration, Integration::Mock { .. }) {
            self.err(
                &format!("{rkey}.request_parameters"),
                "parameter mapping changes what goes to and comes from an http integration; this route's is a mock",
            );
        }
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
            authorizer: None,
            authorization_scopes: Vec::new(),
            iam: false,
            validation_spec: ValidationSpec::default(),
            validation: None,
            request_parameters,
            response_parameters,
            mapping,
            transform,
            route_response: false,
        })
    }

    pub(super) fn header_templates(
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
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                self.bad(
                    &format!("{key}.headers.{name}"),
                    &value,
                    "a value without control characters (CR, LF, NUL and the rest; a tab is allowed: RFC 9110 5.5)",
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

    pub(super) fn integration(
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
                // The gateway frames the upstream request and names its hop itself.
                for (name, _) in &headers {
                    self.request_framing_header(&format!("{ikey}.headers"), name);
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
                        crate::config::target::parse_uri_target(&t, upstreams).map(|_| ())
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
                // The gateway frames the mock's answer itself.
                for (name, _) in &headers {
                    self.framing_header(&format!("{ikey}.headers"), name);
                }
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
}
