//! `[[apis.authorizers]]`: JWT authorizers (any OpenID Connect provider, Cognito user pools),
//! and the routes' `authorizer`, `authorization` and `authorization_scopes`.

use super::*;

/// One authorizer of an API.
#[derive(Debug, Clone, Serialize)]
pub struct Authorizer {
    pub name: String,
    #[serde(flatten)]
    pub kind: AuthorizerKind,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthorizerKind {
    Jwt(JwtAuthorizer),
    /// `type = "request"` or `"token"`: an HTTP service that decides (Amazon's Lambda
    /// authorizers, called over HTTP).
    External(ExternalAuthorizer),
}

/// An external authorizer: the gateway POSTs Amazon's authorizer event to `uri` and caches
/// the answer per identity for `ttl`.
#[derive(Debug, Clone, Serialize)]
pub struct ExternalAuthorizer {
    /// `type = "token"`: one header, Amazon's `TOKEN` event; else the `REQUEST` event
    /// (payload format 2.0).
    pub token: bool,
    /// Shown with the values of secret-named query parameters redacted.
    #[serde(serialize_with = "ser_redacted_uri")]
    pub uri: String,
    #[serde(skip)]
    pub template: Template,
    /// What identifies a caller: the cache key, and a request without them gets 401.
    pub identity_sources: Vec<IdentityRef>,
    /// Token authorizers: the token must match it (else 401, without a call).
    pub identity_validation_expression: Option<String>,
    /// How long an answer counts for an identity (0: every request asks).
    #[serde(serialize_with = "ser_duration")]
    pub ttl: Duration,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
}

/// One identity source of an external authorizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IdentityRef {
    /// Lower-case header name.
    Header(String),
    Query(String),
    StageVar(String),
    /// `$context.NAME`: `identity.sourceIp`, `requestId`, `stage`, `routeKey`, `httpMethod`.
    Context(String),
}

impl IdentityRef {
    pub fn parse(s: &str) -> Option<IdentityRef> {
        if let Some(src) = IdentitySource::parse(s) {
            return Some(match src {
                IdentitySource::Header(h) => IdentityRef::Header(h),
                IdentitySource::Query(q) => IdentityRef::Query(q),
            });
        }
        if let Some(v) = s.strip_prefix("$stageVariables.") {
            return crate::syntax::template::is_ident(v).then(|| IdentityRef::StageVar(v.into()));
        }
        let c = s.strip_prefix("$context.")?;
        [
            "identity.sourceIp",
            "requestId",
            "stage",
            "routeKey",
            "httpMethod",
        ]
        .contains(&c)
        .then(|| IdentityRef::Context(c.into()))
    }
}

/// A JWT authorizer: tokens signed by `issuer`'s keys, for one of `audience`.
#[derive(Debug, Clone, Serialize)]
pub struct JwtAuthorizer {
    pub issuer: String,
    pub audience: Vec<String>,
    /// Where the keys are; `None`: from `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<FetchUrl>,
    pub identity_source: IdentitySource,
    #[serde(serialize_with = "ser_duration")]
    pub leeway: Duration,
    /// How often the keys are fetched again.
    #[serde(serialize_with = "ser_duration")]
    pub jwks_refresh: Duration,
    /// The shortest time between two fetches asked for by tokens naming an unknown key.
    #[serde(serialize_with = "ser_duration")]
    pub jwks_cooldown: Duration,
    /// Each fetch (discovery, then keys) must finish within this.
    #[serde(serialize_with = "ser_duration")]
    pub jwks_timeout: Duration,
}

impl JwtAuthorizer {
    /// Where the keys come from, as one string: authorizers with the same source share one
    /// key set and one fetcher.
    pub fn key_source(&self) -> String {
        match &self.jwks_uri {
            Some(u) => format!("jwks {}", u.text),
            // The issuer too: the discovery document is checked against it, and issuers
            // that differ only by a trailing `/` share a discovery URL.
            None => format!(
                "discovery {} for {}",
                self.discovery_url().text,
                self.issuer
            ),
        }
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> FetchUrl {
        let base = self.issuer.trim_end_matches('/');
        // The issuer was checked to be a URL at load.
        FetchUrl::parse(&format!("{base}/.well-known/openid-configuration")).unwrap_or_else(|_| {
            FetchUrl {
                text: String::new(),
                tls: false,
                host: String::new(),
                port: 0,
                path: "/".into(),
            }
        })
    }
}

/// Where a request carries its token: `$request.header.NAME` or `$request.querystring.NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IdentitySource {
    /// Lower-case header name.
    Header(String),
    Query(String),
}

impl IdentitySource {
    pub fn parse(s: &str) -> Option<IdentitySource> {
        if let Some(h) = s.strip_prefix("$request.header.") {
            let ok = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            return ok.then(|| IdentitySource::Header(h.to_ascii_lowercase()));
        }
        let q = s.strip_prefix("$request.querystring.")?;
        (!q.is_empty() && !q.contains(['&', '=', '#', ' ']))
            .then(|| IdentitySource::Query(q.into()))
    }
}

/// An `http://` or `https://` URL the control plane fetches (OpenID discovery, JWKS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FetchUrl {
    /// As written (shown with the values of secret-named query parameters redacted).
    #[serde(serialize_with = "ser_redacted_uri")]
    pub text: String,
    #[serde(skip)]
    pub tls: bool,
    /// Host name or address (no brackets).
    #[serde(skip)]
    pub host: String,
    #[serde(skip)]
    pub port: u16,
    /// Path and query, starting with '/'.
    #[serde(skip)]
    pub path: String,
}

impl FetchUrl {
    /// An `http(s)://host[:port][/path][?query]` URL; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<FetchUrl, String> {
        let (rest, tls) = if let Some(r) = s.strip_prefix("https://") {
            (r, true)
        } else if let Some(r) = s.strip_prefix("http://") {
            (r, false)
        } else {
            return Err("it does not start with http:// or https://".into());
        };
        if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("it contains spaces or control characters".into());
        }
        if s.contains('#') {
            return Err("it carries a #fragment, which is never sent".into());
        }
        let (auth, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        if auth.contains('@') {
            return Err("it carries credentials (user@)".into());
        }
        let default_port = if tls { 443 } else { 80 };
        let port_of = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .ok()
                .filter(|n| *n > 0 && p.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("its port {p:?} is not a port from 1 to 65535"))
        };
        let (host, port) = if let Some(r) = auth.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or("its host has an unclosed '['")?;
            let port = match after.strip_prefix(':') {
                Some(p) => port_of(p)?,
                None if after.is_empty() => default_port,
                None => return Err(format!("its host {auth:?} is not a host")),
            };
            (h.to_string(), port)
        } else {
            match auth.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), port_of(p)?),
                None => (auth.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err("it has no host".into());
        }
        Ok(FetchUrl {
            text: s.to_string(),
            tls,
            host,
            port,
            path,
        })
    }
}

impl Validator {
    /// The API's authorizers that are valid, and the names of all of them (a route naming an
    /// invalid one is not a second error).
    pub(super) fn authorizers(
        &mut self,
        key: &str,
        list: Vec<file::AuthorizerFile>,
        ctx: (&Limits, &[Upstream]),
    ) -> (Vec<Authorizer>, Vec<String>) {
        let mut out: Vec<Authorizer> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (j, a) in list.into_iter().enumerate() {
            let akey = format!("{key}.{}", item("authorizers", j, a.name.as_ref()));
            let name = self.name(&format!("{akey}.name"), a.name.clone());
            if names.contains(&name) {
                self.err(
                    &format!("{akey}.name"),
                    "is used by two authorizers of this API",
                );
            }
            names.push(name.clone());
            let kind = match a.kind.as_deref() {
                Some("jwt") => self.jwt(&akey, a).map(AuthorizerKind::Jwt),
                Some(t @ ("request" | "token")) => {
                    let token = t == "token";
                    self.external(&akey, a, token, ctx)
                        .map(AuthorizerKind::External)
                }
                Some(other) => {
                    self.bad(
                        &format!("{akey}.type"),
                        other,
                        "\"jwt\", \"request\" or \"token\"",
                    );
                    None
                }
                None => {
                    self.err(
                        &format!("{akey}.type"),
                        "is required: \"jwt\", \"request\" or \"token\"",
                    );
                    None
                }
            };
            if let Some(kind) = kind {
                out.push(Authorizer { name, kind });
            }
        }
        (out, names)
    }

    fn external(
        &mut self,
        akey: &str,
        a: file::AuthorizerFile,
        token: bool,
        (limits, upstreams): (&Limits, &[Upstream]),
    ) -> Option<ExternalAuthorizer> {
        for (k, present) in [
            ("issuer", a.issuer.is_some()),
            ("audience", a.audience.is_some()),
            ("jwks_uri", a.jwks_uri.is_some()),
            ("leeway", a.leeway.is_some()),
            ("jwks_refresh", a.jwks_refresh.is_some()),
            ("jwks_cooldown", a.jwks_cooldown.is_some()),
            ("jwks_timeout", a.jwks_timeout.is_some()),
        ] {
            if present {
                self.err(
                    &format!("{akey}.{k}"),
                    "belongs to type = \"jwt\" authorizers",
                );
            }
        }
        let uri = match a.uri {
            Some(u) => u,
            None => {
                self.err(&format!("{akey}.uri"), "is required: where the authorizer is (http://UPSTREAM/path or http(s)://host:port/path)");
                return None;
            }
        };
        let template = match Template::parse(&uri, &[], UnknownBraces::Error)
            .and_then(|t| crate::config::target::parse_uri_target(&t, upstreams).map(|_| t))
        {
            // Called at one address for every stage: `${stageVariables.NAME}` (or any other
            // `${...}`) would have no value to take, and the path is not a template.
            Ok(t) if t.as_literal().is_none() => {
                self.bad(
                    &format!("{akey}.uri"),
                    &uri,
                    "a literal URL (http://UPSTREAM/path or http(s)://host:port/path): an authorizer's uri is not a template, ${stageVariables.NAME} and other ${...} are not substituted in it",
                );
                return None;
            }
            Ok(t) => t,
            Err(e) => {
                self.bad(
                    &format!("{akey}.uri"),
                    &uri,
                    &format!("a URI the gateway can reach ({e})"),
                );
                return None;
            }
        };
        let mut identity_sources = Vec::new();
        let list: Vec<String> = match (&a.identity_sources, &a.identity_source) {
            (Some(v), _) => v.clone(),
            (None, Some(one)) => vec![one.clone()],
            (None, None) if token => vec!["$request.header.Authorization".into()],
            (None, None) => Vec::new(),
        };
        for s in &list {
            match IdentityRef::parse(s) {
                Some(IdentityRef::Header(h)) if token => identity_sources.push(IdentityRef::Header(h)),
                Some(_) if token => self.bad(&format!("{akey}.identity_sources"), s, "one \"$request.header.NAME\" for a token authorizer"),
                Some(r) => identity_sources.push(r),
                None => self.bad(
                    &format!("{akey}.identity_sources"),
                    s,
                    "$request.header.NAME, $request.querystring.NAME, $stageVariables.NAME or $context.(identity.sourceIp|requestId|stage|routeKey|httpMethod)",
                ),
            }
        }
        if token && list.len() != 1 {
            self.err(
                &format!("{akey}.identity_sources"),
                "a token authorizer reads exactly one header",
            );
        }
        let ttl = self.duration_or_zero_in(
            &format!("{akey}.ttl"),
            a.ttl.as_ref(),
            Duration::from_secs(300),
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        if !ttl.is_zero() && identity_sources.is_empty() {
            self.err(
                &format!("{akey}.identity_sources"),
                "is required while answers are cached (ttl above 0): they are the cache key",
            );
        }
        let identity_validation_expression = a.identity_validation_expression;
        if let Some(re) = &identity_validation_expression {
            if !token {
                self.err(
                    &format!("{akey}.identity_validation_expression"),
                    "belongs to type = \"token\" authorizers",
                );
            } else if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
                self.bad(
                    &format!("{akey}.identity_validation_expression"),
                    re,
                    &format!("a regular expression ({e})"),
                );
            }
        }
        let timeout = self.duration_in(
            &format!("{akey}.timeout"),
            a.timeout.as_ref(),
            Duration::from_secs(10).min(limits.integration_timeout),
            Duration::from_millis(50),
            limits.integration_timeout,
        );
        Some(ExternalAuthorizer {
            token,
            uri,
            template,
            identity_sources,
            identity_validation_expression,
            ttl,
            timeout,
        })
    }

    fn jwt(&mut self, akey: &str, a: file::AuthorizerFile) -> Option<JwtAuthorizer> {
        for (k, present) in [
            ("uri", a.uri.is_some()),
            ("identity_sources", a.identity_sources.is_some()),
            ("ttl", a.ttl.is_some()),
            (
                "identity_validation_expression",
                a.identity_validation_expression.is_some(),
            ),
            ("timeout", a.timeout.is_some()),
        ] {
            if present {
                self.err(
                    &format!("{akey}.{k}"),
                    "belongs to type = \"request\" or \"token\" authorizers",
                );
            }
        }
        let issuer = match a.issuer {
            None => {
                self.err(
                    &format!("{akey}.issuer"),
                    "is required: the provider's issuer URL (its tokens' iss)",
                );
                None
            }
            Some(i) => match FetchUrl::parse(&i) {
                Ok(_) => Some(i),
                Err(e) => {
                    self.bad_url(
                        &format!("{akey}.issuer"),
                        &i,
                        &e,
                        "the issuer's https:// URL",
                    );
                    None
                }
            },
        };
        let audience = a.audience.unwrap_or_default();
        if audience.is_empty() || audience.iter().any(String::is_empty) {
            self.err(
                &format!("{akey}.audience"),
                "is required: a list of the audiences accepted (matched against aud, or client_id)",
            );
        }
        let jwks_uri = a.jwks_uri.and_then(|u| match FetchUrl::parse(&u) {
            Ok(f) => Some(f),
            Err(e) => {
                self.bad_url(
                    &format!("{akey}.jwks_uri"),
                    &u,
                    &e,
                    "the http(s):// URL of the provider's JSON Web Key Set",
                );
                None
            }
        });
        let identity_source = match a.identity_source {
            None => IdentitySource::Header("authorization".into()),
            Some(s) => IdentitySource::parse(&s).unwrap_or_else(|| {
                self.bad(
                    &format!("{akey}.identity_source"),
                    &s,
                    "\"$request.header.NAME\" or \"$request.querystring.NAME\"",
                );
                IdentitySource::Header("authorization".into())
            }),
        };
        let leeway = self.duration_or_zero_in(
            &format!("{akey}.leeway"),
            a.leeway.as_ref(),
            Duration::from_secs(60),
            Duration::from_secs(1),
            Duration::from_secs(600),
        );
        let jwks_refresh = self.duration_in(
            &format!("{akey}.jwks_refresh"),
            a.jwks_refresh.as_ref(),
            Duration::from_secs(600),
            Duration::from_secs(10),
            Duration::from_secs(86_400),
        );
        let jwks_cooldown = self.duration_in(
            &format!("{akey}.jwks_cooldown"),
            a.jwks_cooldown.as_ref(),
            Duration::from_secs(10),
            Duration::from_millis(100),
            Duration::from_secs(3_600),
        );
        let jwks_timeout = self.duration_in(
            &format!("{akey}.jwks_timeout"),
            a.jwks_timeout.as_ref(),
            Duration::from_secs(5),
            Duration::from_millis(100),
            Duration::from_secs(60),
        );
        Some(JwtAuthorizer {
            issuer: issuer?,
            audience,
            jwks_uri,
            identity_source,
            leeway,
            jwks_refresh,
            jwks_cooldown,
            jwks_timeout,
        })
    }

    /// Under `api_key_source = "AUTHORIZER"` a route that requires a key reads it from its
    /// external authorizer's `usageIdentifierKey`: one without such an authorizer would
    /// refuse every request.
    pub(super) fn key_from_authorizer(
        &mut self,
        rkey: &str,
        r: &Route,
        authorizers: &[Authorizer],
    ) {
        if !r.api_key_required {
            return;
        }
        let external = r
            .authorizer
            .map(|i| matches!(authorizers[i].kind, AuthorizerKind::External(_)));
        if external != Some(true) {
            self.err(
                &format!("{rkey}.api_key_required"),
                "with api_key_source = \"AUTHORIZER\" the key is the usageIdentifierKey of the route's authorizer, which must be an external one (type = \"request\" or \"token\"); this route has none and would refuse every request",
            );
        }
    }

    /// A route's `authorizer` (or the API's `default_authorizer`), `authorization` and
    /// `authorization_scopes`, checked against the API's authorizers: the route's authorizer
    /// as an index into them.
    pub(super) fn route_auth(
        &mut self,
        rkey: &str,
        r: &RouteAuthFile,
        default: Option<&str>,
        (authorizers, declared): (&[Authorizer], &[String]),
        aws_iam: bool,
    ) -> (Option<usize>, Vec<String>, bool) {
        let names = || {
            let list: Vec<String> = declared.iter().map(|n| format!("{n:?}")).collect();
            if list.is_empty() {
                "the name of one of the API's [[apis.authorizers]] (it has none)".to_string()
            } else {
                format!(
                    "the name of one of the API's authorizers ({})",
                    list.join(", ")
                )
            }
        };
        let mut iam = false;
        let none = match r.authorization.as_deref() {
            None => false,
            Some("none") => true,
            Some("aws_iam") => {
                if !aws_iam {
                    self.err(&format!("{rkey}.authorization"), "\"aws_iam\" needs an [aws_iam] table (its region, and the key that seals access-key secrets)");
                }
                iam = true;
                true
            }
            Some(other) => {
                self.bad(
                    &format!("{rkey}.authorization"),
                    other,
                    "\"none\" (no authorizer, even the API's default) or \"aws_iam\"",
                );
                true
            }
        };
        if none && r.authorizer.is_some() {
            self.err(
                &format!("{rkey}.authorizer"),
                format!(
                    "cannot be set with authorization = {:?}",
                    r.authorization.as_deref().unwrap_or_default()
                ),
            );
        }
        let name = if none {
            None
        } else {
            r.authorizer.as_deref().or(default)
        };
        let index = name.and_then(|n| {
            let i = authorizers.iter().position(|a| a.name == n);
            if i.is_none() && !declared.iter().any(|d| d == n) {
                let k = if r.authorizer.is_some() {
                    "authorizer"
                } else {
                    "default_authorizer"
                };
                self.bad(&format!("{rkey}.{k}"), n, &names());
            }
            i
        });
        let scopes = r.authorization_scopes.clone().unwrap_or_default();
        if !scopes.is_empty() {
            // RFC 6749 3.3 scope-token: printable ASCII but space, '"' and '\'.
            let token = |s: &String| {
                !s.is_empty()
                    && s.bytes().all(|b| {
                        b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
                    })
            };
            if !scopes.iter().all(token) {
                self.bad(
                    &format!("{rkey}.authorization_scopes"),
                    &scopes,
                    "scope names of printable ASCII without spaces, '\"' or '\\'",
                );
            }
            let external =
                index.is_some_and(|i| matches!(authorizers[i].kind, AuthorizerKind::External(_)));
            if name.is_none() || external {
                // Scopes are a JWT's claims (Amazon checks them for JWT and Cognito
                // authorizers only); on any other route they would not be enforced.
                self.err(
                    &format!("{rkey}.authorization_scopes"),
                    "needs a JWT authorizer on the route (authorizer = \"...\"): request and token authorizers decide for themselves, and scopes would not be checked",
                );
            }
        }
        (index, scopes, iam)
    }

    pub(super) fn aws_iam(&mut self, a: file::AwsIamFile, base: &Path) -> AwsIam {
        let region = match a.region {
            Some(r)
                if !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                r
            }
            Some(r) => {
                self.bad(
                    "aws_iam.region",
                    &r,
                    "a region name such as \"us-east-1\" (lower-case letters, digits, '-')",
                );
                String::new()
            }
            None => {
                self.err(
                    "aws_iam.region",
                    "is required: the region callers sign for (their credential scope)",
                );
                String::new()
            }
        };
        let secrets_key_env = a
            .secrets_key_env
            .unwrap_or_else(|| "TOLLGATE_IAM_SECRETS_KEY".into());
        if secrets_key_env.is_empty() || secrets_key_env.contains('=') {
            self.bad(
                "aws_iam.secrets_key_env",
                &secrets_key_env,
                "an environment variable name",
            );
        }
        AwsIam {
            region,
            secrets_key_env,
            secrets_key_file: a.secrets_key_file.map(|f| base.join(f)),
        }
    }
}

/// `[aws_iam]`: SigV4-signed callers.
#[derive(Debug, Clone, Serialize)]
pub struct AwsIam {
    /// The region of the credential scope callers sign with (service `execute-api`).
    pub region: String,
    /// The environment variable holding the 32-byte key that seals access-key secrets.
    pub secrets_key_env: String,
    /// Or a file holding it (read when the variable is unset).
    pub secrets_key_file: Option<std::path::PathBuf>,
}

impl AwsIam {
    /// The key's text: the variable, else the file; `Err` says what was looked at.
    pub fn secrets_key_text(&self) -> Result<String, String> {
        if let Ok(v) = std::env::var(&self.secrets_key_env) {
            return Ok(v);
        }
        match &self.secrets_key_file {
            Some(f) => super::units::read_file(f, 64 << 10)
                .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8 text".to_string()))
                .map_err(|e| format!("cannot read aws_iam.secrets_key_file {}: {e}", f.display())),
            None => Err(format!(
                "the environment variable {} is not set (or give aws_iam.secrets_key_file)",
                self.secrets_key_env
            )),
        }
    }
}

/// A route's authorization keys, as written.
pub(super) struct RouteAuthFile {
    pub authorizer: Option<String>,
    pub authorization: Option<String>,
    pub authorization_scopes: Option<Vec<String>>,
}
