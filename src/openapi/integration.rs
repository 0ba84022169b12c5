//! An operation's `x-amazon-apigateway-integration` as a route's integration: `http_proxy`
//! and `http` (the URI, its path variables renamed as `requestParameters` say, the timeout,
//! parameter mapping, mapping templates and integration responses) and `mock` (Tollgate's own
//! as its export wrote it, or Amazon's templates).

use serde_json::{json, Map, Value};

/// The integration of the route `key`; `None` (with a warning) when it cannot be served as
/// written.
pub(super) fn integration(key: &str, i: &Value, warnings: &mut Vec<String>) -> Option<Value> {
    let kind = i["type"].as_str().unwrap_or("").to_ascii_lowercase();
    match kind.as_str() {
        "http_proxy" | "http" => {
            let uri = i["uri"].as_str().unwrap_or("");
            // A URI whose scheme and host a stage variable gives (as Tollgate exports
            // `${stageVariables.backend}/pets/{id}`) is checked when a stage deploys it.
            if !(uri.starts_with("http://")
                || uri.starts_with("https://")
                || uri.starts_with("${stageVariables."))
            {
                warnings.push(format!(
                    "{key}: integration uri {uri:?} is not an http(s) URL; left out"
                ));
                return None;
            }
            let templated = kind == "http";
            if i["connectionType"].as_str() == Some("VPC_LINK") {
                warnings.push(format!("{key}: VPC links are not supported; left out"));
                return None;
            }
            // The client's method goes to the integration: another one is not kept.
            let method = key.split(' ').next().unwrap_or("");
            if let Some(m) = i["httpMethod"].as_str() {
                if !m.eq_ignore_ascii_case(method)
                    && !m.eq_ignore_ascii_case("ANY")
                    && method != "ANY"
                {
                    warnings.push(format!(
                        "{key}: integration httpMethod {m:?}: the integration is called with the client's method ({method}); left out"
                    ));
                }
            }
            // Fields of Amazon's integration this import does not take, named.
            for k in i.as_object().into_iter().flatten().map(|(k, _)| k.as_str()) {
                let taken = matches!(
                    k,
                    "type"
                        | "uri"
                        | "httpMethod"
                        | "timeoutInMillis"
                        | "requestParameters"
                        | "requestTemplates"
                        | "passthroughBehavior"
                        | "responseParameters"
                        | "responses"
                        | "connectionType"
                        | "payloadFormatVersion"
                        | super::RESPONSE_ORDER
                );
                if !taken {
                    warnings.push(format!(
                        "{key}: integration field {k:?} is not supported; left out"
                    ));
                }
            }
            let mut out = json!({ "type": "http", "uri": uri });
            match &i["timeoutInMillis"] {
                Value::Null => {}
                v => match v.as_u64() {
                    Some(ms) => out["timeout"] = json!(format!("{ms}ms")),
                    None => warnings.push(format!(
                        "{key}: timeoutInMillis {v}: not a whole number of milliseconds; left out (the default applies)"
                    )),
                },
            }
            let mut headers = Map::new();
            let mut mapping = Map::new();
            let mut renames = std::collections::BTreeMap::new();
            for (k, v) in i["requestParameters"].as_object().into_iter().flatten() {
                let v = v.as_str().unwrap_or("");
                // An HTTP API's parameter mapping is already in Tollgate's words.
                if k.starts_with("append:")
                    || k.starts_with("overwrite:")
                    || k.starts_with("remove:")
                {
                    mapping.insert(k.clone(), json!(v));
                    continue;
                }
                // A REST API's: a request value, or a static one.
                let source = v
                    .strip_prefix("method.request.")
                    .map(|s| format!("$request.{s}"));
                // The same name from the client: what a proxy sends anyway.
                let identity = k
                    .strip_prefix("integration.request.")
                    .is_some_and(|x| v.strip_prefix("method.request.") == Some(x));
                if identity && !k.starts_with("integration.request.path.") {
                    continue;
                }
                if let Some(h) = k.strip_prefix("integration.request.header.") {
                    match (v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')), source) {
                        (Some(lit), _) => {
                            headers.insert(h.to_string(), json!(lit));
                        }
                        (None, Some(s)) => {
                            mapping.insert(format!("overwrite:header.{h}"), json!(s));
                        }
                        (None, None) => warnings.push(format!(
                            "{key}: requestParameters {k:?} = {v:?}: only static values ('...') and method.request.* are supported; left out"
                        )),
                    }
                } else if let Some(q) = k.strip_prefix("integration.request.querystring.") {
                    match (v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')), source) {
                        (Some(lit), _) => {
                            mapping.insert(format!("overwrite:querystring.{q}"), json!(lit));
                        }
                        (None, Some(s)) => {
                            mapping.insert(format!("overwrite:querystring.{q}"), json!(s));
                        }
                        (None, None) => warnings.push(format!(
                            "{key}: requestParameters {k:?} = {v:?}: only static values ('...') and method.request.* are supported; left out"
                        )),
                    }
                } else if let Some(p) = k.strip_prefix("integration.request.path.") {
                    // The URI names path variables itself: one named otherwise than the
                    // route's is renamed in it (`{id}` from `method.request.path.petId`).
                    match v.strip_prefix("method.request.path.") {
                        Some(m) if m == p => {}
                        Some(m) => {
                            renames.insert(p.to_string(), m.to_string());
                        }
                        None => warnings.push(format!("{key}: requestParameters {k:?} = {v:?}: a path variable of the URI comes from one of the route's; left out")),
                    }
                } else {
                    warnings.push(format!(
                        "{key}: requestParameters {k:?}: not supported yet; left out"
                    ));
                }
            }
            let uri = rename_vars(uri, &renames);
            let route_vars = braced(key.split_once(' ').map_or(key, |(_, p)| p));
            if let Some(v) = braced(&uri).into_iter().find(|v| !route_vars.contains(v)) {
                warnings.push(format!(
                    "{key}: integration uri {uri:?} names {{{v}}}, which is no path variable of the route; left out"
                ));
                return None;
            }
            out["uri"] = json!(uri);
            if !headers.is_empty() {
                out["headers"] = Value::Object(headers);
            }
            if !mapping.is_empty() {
                // Moved to the route by the caller.
                out["request_parameters"] = Value::Object(mapping);
            }
            // A REST API's (non-proxy) templates and integration responses.
            if templated {
                transform(i, &mut out, warnings, key);
            }
            // An HTTP API's response mapping, by status.
            if let Some(rp) = i["responseParameters"]
                .as_object()
                .filter(|m| m.values().all(Value::is_object))
            {
                out["response_parameters"] = Value::Object(rp.clone());
            }
            Some(out)
        }
        // As Tollgate's export wrote it: restored exactly.
        "mock" if i["x-tollgate-mock"].is_object() => Some(own_mock(key, i, warnings)),
        "mock"
            if i["responses"].as_object().is_some_and(|r| {
                // Responses chosen by pattern (the request template's `statusCode` picks
                // one, as Amazon's mock does): all of them kept, not `default` alone.
                r.keys().any(|k| k != "default")
                    || r.values().any(|x| {
                        x["responseTemplates"].as_object().is_some_and(|t| {
                            t.values().any(|b| {
                                b.as_str()
                                    .is_some_and(|b| b.contains('$') || b.contains('#'))
                            })
                        })
                    })
            }) || i["requestTemplates"]
                .as_object()
                .is_some_and(|t| !t.is_empty()) =>
        {
            // Templates that read something, or responses to choose from: rendered per
            // request.
            let mut out = json!({ "type": "mock", "status": 200 });
            // What Tollgate's earlier exports (before `x-tollgate-mock`) said a mock answers
            // before its templates run.
            if let Some(b) = i["x-tollgate-mock-body"].as_str() {
                out["body"] = json!(b);
            }
            transform(i, &mut out, warnings, key);
            Some(out)
        }
        "mock" => {
            let d = &i["responses"]["default"];
            let status: u16 = match &d["statusCode"] {
                Value::Null => 200,
                v => match v
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| v.as_u64().and_then(|n| u16::try_from(n).ok()))
                    .filter(|s| (200..=599).contains(s))
                {
                    Some(s) => s,
                    None => {
                        warnings.push(format!(
                            "{key}: mock responses.default.statusCode {v}: not a status from 200 to 599; 200 is answered"
                        ));
                        200
                    }
                },
            };
            let (ctype, body) = d["responseTemplates"]
                .as_object()
                .and_then(|t| t.iter().next())
                .map(|(c, b)| (c.clone(), b.as_str().unwrap_or("").to_string()))
                .unwrap_or_default();
            let mut headers = Map::new();
            for (k, v) in d["responseParameters"].as_object().into_iter().flatten() {
                if let (Some(h), Some(lit)) = (
                    k.strip_prefix("method.response.header."),
                    v.as_str()
                        .and_then(|v| v.strip_prefix('\''))
                        .and_then(|v| v.strip_suffix('\'')),
                ) {
                    headers.insert(h.to_string(), json!(lit));
                }
            }
            if !ctype.is_empty()
                && !body.is_empty()
                && !headers
                    .keys()
                    .any(|h| h.eq_ignore_ascii_case("content-type"))
            {
                headers.insert("content-type".into(), json!(ctype));
            }
            let mut out = json!({ "type": "mock", "status": status, "body": body });
            if !headers.is_empty() {
                out["headers"] = Value::Object(headers);
            }
            Some(out)
        }
        other => {
            warnings.push(format!(
                "{key}: integration type {other:?} (Lambda or AWS service) is not supported; left out"
            ));
            None
        }
    }
}

/// `requestTemplates`, `passthroughBehavior` and `responses` (by selection pattern, with
/// `statusCode`, `method.response.header.*` mappings and `responseTemplates`) as the
/// integration's mapping templates.
fn transform(i: &Value, out: &mut Value, warnings: &mut Vec<String>, key: &str) {
    if let Some(t) = i["requestTemplates"].as_object() {
        out["request_templates"] = Value::Object(t.clone());
    }
    if let Some(p) = i["passthroughBehavior"].as_str() {
        out["passthrough_behavior"] = json!(p.to_ascii_lowercase());
    }
    let mut responses = Vec::new();
    // A JSON object has no order, and the first response whose pattern matches is chosen:
    // Tollgate's export lists the order in `x-tollgate-response-order`; patterns it does
    // not name come after, as the document has them.
    let mut listed: Vec<(&String, &Value)> =
        i["responses"].as_object().into_iter().flatten().collect();
    if let Some(order) = i[super::RESPONSE_ORDER].as_array() {
        let rank = |p: &str| {
            order
                .iter()
                .position(|o| o.as_str() == Some(p))
                .unwrap_or(usize::MAX)
        };
        listed.sort_by_key(|(p, _)| rank(p));
    }
    for (pattern, r) in listed {
        let mut entry = Map::new();
        if pattern != "default" {
            entry.insert("selection_pattern".into(), json!(pattern));
        }
        let status = match &r["statusCode"] {
            Value::String(s) => s.parse::<u16>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        };
        if let Some(s) = status {
            entry.insert("status".into(), json!(s));
        }
        let mut headers = Map::new();
        for (k, v) in r["responseParameters"].as_object().into_iter().flatten() {
            // Static values stay quoted: the config reads Amazon's expressions as they are.
            match (k.strip_prefix("method.response.header."), v.as_str()) {
                (Some(h), Some(v)) => {
                    headers.insert(h.to_ascii_lowercase(), json!(v));
                }
                _ => warnings.push(format!(
                    "{key}: responses[{pattern:?}].responseParameters {k:?}: only method.response.header.* is mapped; left out"
                )),
            }
        }
        if !headers.is_empty() {
            entry.insert("headers".into(), Value::Object(headers));
        }
        if let Some(t) = r["responseTemplates"].as_object() {
            entry.insert("templates".into(), Value::Object(t.clone()));
        }
        responses.push(Value::Object(entry));
    }
    if !responses.is_empty() {
        out["responses"] = Value::Array(responses);
    }
}

/// A mock as Tollgate's export marks it (`x-tollgate-mock`): its status, headers and body as
/// the definition wrote them (the body never read as Velocity, whatever `$` or `#` it holds);
/// with `"templates": true`, the integration's `requestTemplates`, `passthroughBehavior` and
/// `responses` are its mapping templates (else they only say the same answer in Amazon's
/// words, and are not read).
fn own_mock(key: &str, i: &Value, warnings: &mut Vec<String>) -> Value {
    let m = &i["x-tollgate-mock"];
    let mut out = json!({ "type": "mock" });
    for k in ["status", "headers", "body"] {
        if let Some(v) = m.get(k).filter(|v| !v.is_null()) {
            out[k] = v.clone();
        }
    }
    if m["templates"] == true {
        transform(i, &mut out, warnings, key);
    }
    out
}

/// The names in `{...}` in a path or a URI (a greedy one without its `+`; a
/// `${stageVariables.x}` is none).
fn braced(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let dollar = rest[..i].ends_with('$');
        let Some(j) = rest[i..].find('}') else { break };
        if !dollar {
            out.push(rest[i + 1..i + j].trim_end_matches('+'));
        }
        rest = &rest[i + j + 1..];
    }
    out
}

/// `uri` with its `{from}` variables named `{to}`, all at once (`{a}`↔`{b}` swaps).
fn rename_vars(uri: &str, renames: &std::collections::BTreeMap<String, String>) -> String {
    if renames.is_empty() {
        return uri.to_string();
    }
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else { break };
        out.push_str(&rest[..=i]);
        let name = &rest[i + 1..i + j];
        let dollar = rest[..i].ends_with('$');
        match renames.get(name).filter(|_| !dollar) {
            Some(to) => out.push_str(to),
            None => out.push_str(name),
        }
        out.push('}');
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}
