//! Run-time objects (APIs, stages and domain mappings created through the admin API) are
//! checked by the same rules as the file: each goes through the file's validators, and the
//! errors read like the file's (`apis["shop"].stages["prod"].variables...`).

use serde_json::{json, Value};

use super::*;

/// An API definition (an `[[apis]]` table without its stages, as JSON) served by `stages`
/// (`[[apis.stages]]` tables as JSON), validated like the file's against `cfg`'s upstreams,
/// limits and `[aws_iam]`.
pub(crate) fn runtime_api(
    cfg: &Config,
    name: &str,
    definition: &Value,
    stages: Vec<Value>,
    base: &Path,
) -> Result<Api, Vec<String>> {
    let (api, errors) = validate(cfg, name, definition, stages, base)?;
    if errors.is_empty() {
        Ok(api)
    } else {
        Err(errors)
    }
}

/// A JSON body read into `T`; the error names where in the body it went wrong
/// (`routes[1].timeout: invalid type: integer 5, expected a string`), as the file's errors
/// name their key.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    v: Value,
    prefix: &str,
) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        // In the configuration's words, as the file's errors are.
        let inner = super::plain(&e.into_inner().to_string());
        match (prefix, path.as_str()) {
            ("", ".") => inner.to_string(),
            (p, ".") => format!("{p}: {inner}"),
            ("", path) => format!("{path}: {inner}"),
            (p, path) => format!("{p}.{path}: {inner}"),
        }
    })
}

/// The definition with `stages`, through the file's validators: the API and what they said
/// (`Err` when it is not even an `[[apis]]` table).
fn validate(
    cfg: &Config,
    name: &str,
    definition: &Value,
    stages: Vec<Value>,
    base: &Path,
) -> Result<(Api, Vec<String>), Vec<String>> {
    let mut obj = definition.as_object().cloned().unwrap_or_default();
    obj.insert("name".into(), json!(name));
    obj.insert("stages".into(), Value::Array(stages));
    let raw: file::ApiFile =
        from_json(Value::Object(obj), &format!("apis[{name:?}]")).map_err(|e| vec![e])?;
    let dir = cfg
        .admin
        .as_ref()
        .map_or(".", |a| a.access_log_dir.as_str());
    let mut v = Validator {
        errors: Vec::new(),
        log_root: Some(base.join(dir)),
        refused_models: Vec::new(),
    };
    let api = v.api(
        cfg.apis.len(),
        raw,
        &cfg.limits,
        &cfg.upstreams,
        cfg.aws_iam.is_some(),
        base,
    );
    Ok((api, v.errors))
}

/// Checks a definition by the file's rules as far as they go without stages: fields and
/// types, route keys, integrations, authorizers and the routes naming them. An integration's
/// URI is resolved (its stage variables, the upstream it names) when a stage serves a
/// deployment of it.
pub(crate) fn check_definition(
    cfg: &Config,
    name: &str,
    definition: &Value,
    base: &Path,
) -> Result<(), Vec<String>> {
    let Some(obj) = definition.as_object() else {
        return Err(vec!["the definition must be a JSON object".into()]);
    };
    if obj.contains_key("stages") {
        return Err(vec![format!(
            "apis[{name:?}].stages: stages are their own objects (POST /apis/{name}/stages)"
        )]);
    }
    let no_stages = format!("apis[{name:?}].stages: {}", apis::STAGES_REQUIRED);
    let (api, errors) = validate(cfg, name, definition, Vec::new(), base)?;
    let mut errors: Vec<String> = errors.into_iter().filter(|e| *e != no_stages).collect();
    if errors.is_empty() {
        // What the file's check finds when it compiles the routes: two routes of the same
        // method and path, and an integration naming a host that is neither an upstream nor
        // an address (where the host is written out, not a stage variable).
        let mut taken = std::collections::HashSet::new();
        for r in &api.routes {
            // A WebSocket API's routes are keys (`$connect`, `ping`), matched whole.
            let shape = if api.websocket.is_some() {
                (r.is_default, r.key.clone(), Vec::new(), false)
            } else {
                route_shape(r)
            };
            if !taken.insert(shape) {
                let what = if r.is_default {
                    "$default is declared twice"
                } else {
                    "another route has the same method and path"
                };
                errors.push(format!("apis[{name:?}].routes[{:?}]: {what}", r.key));
            }
            if let Integration::Http { uri, .. } = &r.integration {
                if let Err(e) = check_written_host(uri, &cfg.upstreams) {
                    errors.push(format!(
                        "apis[{name:?}].routes[{:?}].integration.uri = {uri:?} is not valid: {e}",
                        r.key
                    ));
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What makes two routes the same to the routing table: the method (or any), the literal
/// segments, where the variables are (not their names), and whether a greedy one ends it.
fn route_shape(r: &apis::Route) -> (bool, String, Vec<Option<&str>>, bool) {
    use crate::syntax::route_key::Seg;
    let mut shape = Vec::with_capacity(r.segs.len());
    let mut greedy = false;
    for s in &r.segs {
        match s {
            Seg::Lit(l) => shape.push(Some(l.as_str())),
            Seg::Param(_) => shape.push(None),
            Seg::Greedy(_) => greedy = true,
        }
    }
    (r.is_default, format!("{:?}", r.method), shape, greedy)
}

/// An integration URI's host as the file's check resolves it, when it is written out (a
/// stage variable in it is resolved when a stage serves the API).
fn check_written_host(uri: &str, upstreams: &[Upstream]) -> Result<(), String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(());
    };
    let auth = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    // The path as the compile checks it, now rather than at the first deployment.
    target::path_syntax(&rest[auth.len()..])?;
    if auth.contains(['$', '{']) {
        return Ok(());
    }
    // An upstream's name goes through the file's own parser (TLS on both sides or neither);
    // an address (with a port, an IP, or over https) is resolved when a stage serves the API,
    // not here: the admin API does not wait on a name lookup.
    if upstreams.iter().any(|u| u.name == auth) {
        let t = crate::syntax::template::Template {
            pieces: vec![crate::syntax::template::Piece::Lit(format!(
                "{scheme}://{auth}"
            ))],
        };
        return target::parse_uri_target(&t, upstreams).map(|_| ());
    }
    if scheme == "https" || auth.contains(':') || auth.parse::<std::net::IpAddr>().is_ok() {
        return target::address_syntax(auth, scheme == "https").map(|_| ());
    }
    Err(format!(
        "host {auth:?} is neither an [[upstreams]] name nor an address with a port"
    ))
}

/// A host as `[[domains]]` takes it: a name, `*.suffix` or `*`.
pub(crate) fn host_pattern(h: &str) -> Result<HostPattern, String> {
    if h == "*" {
        return Ok(HostPattern::Any);
    }
    let lower = h.to_ascii_lowercase();
    let (pat, name) = match lower.strip_prefix("*.") {
        Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
        None => (HostPattern::Exact(lower.clone()), lower.clone()),
    };
    let ok = !name.is_empty()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(pat)
    } else {
        Err(format!(
            "host = {h:?} is not valid: expected a host name such as \"api.example.com\", a wildcard \"*.example.com\", or \"*\""
        ))
    }
}

/// A base path's segments (`""` or `/` for none).
pub(crate) fn base_path(bp: &str) -> Result<Vec<String>, String> {
    // `(none)` is how Amazon's REST base path mappings say "no base path": a mapping carried
    // over from one means the domain's root, not a segment spelt `(none)`.
    if bp.is_empty() || bp == "/" || bp == "(none)" {
        return Ok(Vec::new());
    }
    if let Some(c) = bp
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        // A request's path ends before `?` and `#`: no request could reach it.
        return Err(format!(
            "base_path = {bp:?} is not valid: {c:?} cannot be in a path (a request's path ends before a query or fragment); expected a path such as \"v1\" or \"v1/orders\""
        ));
    }
    crate::syntax::path::normalise(format!("/{}", bp.trim_matches('/')).as_bytes())
        .map(|s| s.iter().map(str::to_string).collect())
        .map_err(|e| {
            format!(
                "base_path = {bp:?} is not valid: expected a path such as \"v1\" or \"v1/orders\" ({})",
                e.message()
            )
        })
}

/// Adds a mapping of `host` + `base` to API `api`, stage `stage` (indices into `cfg.apis`):
/// into the file's domain entry for the same host when there is one.
pub(crate) fn add_mapping(
    cfg: &mut Config,
    host: HostPattern,
    base: Vec<String>,
    api: usize,
    stage: usize,
) -> Result<(), String> {
    let m = Mapping {
        base_path: base,
        api,
        stage,
    };
    // An entry kept to some listeners holds its host whole: a mapping beside it would be
    // served on the listeners the entry keeps the host off (as `POST /domains` refuses it).
    if let Some(ls) = cfg
        .domains
        .iter()
        .find(|d| d.host == host)
        .and_then(|d| d.listeners.as_ref())
    {
        return Err(format!(
            "the configuration file's [[domains]] entry for this host is kept to listeners {ls:?}; not served beside it"
        ));
    }
    match cfg
        .domains
        .iter_mut()
        .find(|d| d.host == host && d.listeners.is_none())
    {
        Some(d) => {
            if d.mappings.iter().any(|o| o.base_path == m.base_path) {
                return Err(format!(
                    "/{} on this host is already mapped",
                    m.base_path.join("/")
                ));
            }
            d.mappings.push(m);
        }
        None => cfg.domains.push(Domain {
            host,
            tls: None,
            listeners: None,
            mappings: vec![m],
            pending: Vec::new(),
            reserved: Vec::new(),
        }),
    }
    Ok(())
}

/// A host pattern as written in `[[domains]]`.
pub(crate) fn host_text(h: &HostPattern) -> String {
    match h {
        HostPattern::Any => "*".to_string(),
        HostPattern::Suffix(x) => format!("*{x}"),
        HostPattern::Exact(x) => x.clone(),
    }
}

/// Keeps what a mapping that cannot be served would take: its host and base path answer 404,
/// never served by a shorter base path's API, a wildcard or `*` domain's. The path is
/// reserved in the host's entry served on every listener (one without mappings is added
/// when there is none).
pub(crate) fn reserve_mapping(cfg: &mut Config, host: HostPattern, base: Vec<String>) {
    let at = match cfg
        .domains
        .iter()
        .position(|d| d.host == host && d.listeners.is_none())
    {
        Some(i) => i,
        None => {
            cfg.domains.push(Domain {
                host,
                tls: None,
                listeners: None,
                mappings: Vec::new(),
                pending: Vec::new(),
                reserved: Vec::new(),
            });
            cfg.domains.len() - 1
        }
    };
    let d = &mut cfg.domains[at];
    if !d.reserved.contains(&base) && !d.mappings.iter().any(|m| m.base_path == base) {
        d.reserved.push(base);
    }
}
