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
    let mut obj = definition.as_object().cloned().unwrap_or_default();
    obj.insert("name".into(), json!(name));
    obj.insert("stages".into(), Value::Array(stages));
    let raw: file::ApiFile = serde_json::from_value(Value::Object(obj))
        .map_err(|e| vec![format!("apis[{name:?}]: {e}")])?;
    let mut v = Validator { errors: Vec::new() };
    let api = v.api(
        cfg.apis.len(),
        raw,
        &cfg.limits,
        &cfg.upstreams,
        cfg.aws_iam.is_some(),
        base,
    );
    if v.errors.is_empty() {
        Ok(api)
    } else {
        Err(v.errors)
    }
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
    match runtime_api(cfg, name, definition, Vec::new(), base) {
        Ok(_) => Ok(()),
        Err(errors) => {
            let errors: Vec<String> = errors.into_iter().filter(|e| *e != no_stages).collect();
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors)
            }
        }
    }
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
    if bp.is_empty() || bp == "/" {
        return Ok(Vec::new());
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
