//! OpenAPI import: an OpenAPI 3.x or Swagger 2.0 document (JSON) becomes a run-time API's
//! definition (an `[[apis]]` table as JSON), honouring Amazon API Gateway's extensions where
//! Tollgate has the feature: `x-amazon-apigateway-integration` (`http_proxy`, `http`, `mock`;
//! `uri`, `timeoutInMillis`, `requestParameters` as parameter mapping, `requestTemplates`,
//! `passthroughBehavior` and `responses` as mapping templates and integration responses),
//! `x-amazon-apigateway-cors`, `-gateway-responses`, `-request-validators`, models,
//! `x-amazon-apigateway-any-method`, security schemes with `x-amazon-apigateway-authorizer`
//! (`jwt`, `request`, `token`) or `x-amazon-apigateway-authtype: awsSigv4`,
//! `x-amazon-apigateway-policy` as far as it speaks of source addresses, and Tollgate's own
//! keys that its export writes (`x-tollgate-mock`, `x-tollgate-authorizer`). Everything else
//! is named in the answer's warnings, never dropped silently.

use serde_json::{json, Map, Value};

/// What an import made: the definition, and what it could not take.
#[derive(Debug, Default)]
pub struct Imported {
    /// The API's name from `info.title` (letters, digits, `-` and `_` kept).
    pub title: String,
    pub definition: Value,
    pub warnings: Vec<String>,
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// Extensions Tollgate does not have yet, by their place in the document.
const NOT_YET: [&str; 3] = [
    "x-amazon-apigateway-binary-media-types",
    "x-amazon-apigateway-minimum-compression-size",
    "x-amazon-apigateway-endpoint-configuration",
];

/// Amazon's exports mark their format's version; "1.0" is the only one, and says nothing to
/// act on.
const IMPORTEXPORT_VERSION: &str = "x-amazon-apigateway-importexport-version";

/// Where Amazon's HTTP API documents keep integrations routes share (`$ref`s to them).
const SHARED_INTEGRATIONS: &str = "#/components/x-amazon-apigateway-integrations/";

/// Converts a document of `input_len` bytes (as it came: what bounds the models made of it,
/// [`super::models::MODELS`]). `Err` when it is not OpenAPI 3.x or Swagger 2.0 at all, or
/// when its models would pass that bound.
/// `underscores_dropped`: the gateway drops request headers whose names hold `_`
/// (`limits.underscores_in_headers`), so a required one is not checked (a warning).
/// `max_timeout`: `limits.integration_timeout`, which a longer `timeoutInMillis` (Amazon's
/// HTTP APIs take up to 30 s) is brought down to, with a warning.
pub fn import(
    doc: &Value,
    input_len: usize,
    underscores_dropped: bool,
    max_timeout: std::time::Duration,
) -> Result<Imported, String> {
    let oas3 = doc
        .get("openapi")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("3."));
    // `swagger: 2.0` unquoted in YAML is a number.
    let swagger = match doc.get("swagger") {
        Some(Value::String(v)) => v == "2.0",
        Some(Value::Number(n)) => n.as_f64() == Some(2.0),
        _ => false,
    };
    if !oas3 && !swagger {
        return Err(
            "not an OpenAPI 3.x (\"openapi\": \"3.0.x\"/\"3.1.x\") or Swagger 2.0 (\"swagger\": \"2.0\") document"
                .into(),
        );
    }
    let mut out = Imported {
        title: doc["info"]["title"]
            .as_str()
            .unwrap_or("imported")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .trim_matches('-')
            .to_string(),
        ..Imported::default()
    };
    // A base path is not part of the routes (Amazon's import ignores it by default, too):
    // said, so that `failonwarnings` can catch it.
    let base = if oas3 {
        doc["servers"][0]["url"].as_str().map(|u| {
            // `{var}`s take their defaults; the path is what follows the authority.
            let mut u = u.to_string();
            for (n, v) in doc["servers"][0]["variables"]
                .as_object()
                .into_iter()
                .flatten()
            {
                u = u.replace(&format!("{{{n}}}"), v["default"].as_str().unwrap_or(""));
            }
            let path = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
            let path = if u.contains("://") {
                path.find('/').map_or("", |i| &path[i..])
            } else {
                path
            };
            path.trim_end_matches('/').to_string()
        })
    } else {
        doc["basePath"]
            .as_str()
            .map(|b| b.trim_end_matches('/').to_string())
    };
    if let Some(b) = base.filter(|b| !b.is_empty()) {
        out.warnings.push(format!(
            "base path {b:?} ({}): not part of the routes, which are the paths as written; serve the API under it with a domain mapping's base_path",
            if oas3 { "servers[0].url" } else { "basePath" }
        ));
    }
    for k in NOT_YET {
        if doc.get(k).is_some() {
            out.warnings
                .push(format!("{k}: not supported yet; left out"));
        }
    }
    match doc.get(IMPORTEXPORT_VERSION) {
        None => {}
        Some(v) if v.as_str() == Some("1.0") => {}
        Some(v) => out.warnings.push(format!(
            "{IMPORTEXPORT_VERSION} {v}: only \"1.0\" is known; read as 1.0"
        )),
    }
    let schemes = if oas3 {
        &doc["components"]["securitySchemes"]
    } else {
        &doc["securityDefinitions"]
    };
    let mut authorizers: Vec<Value> = Vec::new();
    let default_security = doc.get("security");
    // API keys come in the x-api-key header unless the document says a Lambda authorizer
    // names them (its usageIdentifierKey).
    let header_keys = match &doc["x-amazon-apigateway-api-key-source"] {
        Value::Null => true,
        Value::String(s) if s.eq_ignore_ascii_case("HEADER") => true,
        Value::String(s) if s.eq_ignore_ascii_case("AUTHORIZER") => false,
        other => {
            out.warnings.push(format!(
                "x-amazon-apigateway-api-key-source {other}: expected \"HEADER\" or \"AUTHORIZER\"; HEADER taken"
            ));
            true
        }
    };
    let mut routes = Vec::new();
    let mut vimp = super::models::Imports::new(doc, oas3, input_len, underscores_dropped)?;
    let empty = Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            out.warnings.push(format!(
                "paths[{path:?}]: not a path item (an object of operations); left out"
            ));
            continue;
        };
        // Amazon's HTTP API exports write the `$default` route as `/$default`, its
        // x-amazon-apigateway-any-method saying `isDefaultRoute: true`.
        let amazons_default = path == "/$default"
            && item
                .get("x-amazon-apigateway-any-method")
                .and_then(|op| op.get("isDefaultRoute"))
                .and_then(Value::as_bool)
                == Some(true);
        if path == super::DEFAULT_ROUTE || amazons_default {
            // The default route is its any-method operation alone: another is said, not lost.
            for key in item.keys().filter(|k| {
                !matches!(
                    k.as_str(),
                    "x-amazon-apigateway-any-method" | "parameters" | "summary" | "description"
                )
            }) {
                out.warnings.push(format!(
                    "paths[{path:?}].{key}: the default route is its x-amazon-apigateway-any-method alone; left out"
                ));
            }
            if let Some(op) = item.get("x-amazon-apigateway-any-method") {
                let r = route(
                    "$default",
                    op,
                    doc,
                    default_security,
                    (schemes, header_keys),
                    &mut authorizers,
                    &mut out.warnings,
                );
                match r {
                    Some(mut r) => {
                        if let Some(o) = r.as_object_mut() {
                            vimp.route(doc, "$default", op, None, o, &mut out.warnings)?;
                        }
                        routes.push(r);
                    }
                    None => routes.push(held("$default", &mut out.warnings)),
                }
            }
            continue;
        }
        if !path.starts_with('/') {
            out.warnings
                .push(format!("paths[{path:?}]: not a path; left out"));
            continue;
        }
        for (key, op) in item {
            let method = if key == "x-amazon-apigateway-any-method" {
                "ANY".to_string()
            } else if METHODS.contains(&key.as_str()) {
                key.to_ascii_uppercase()
            } else if key == "parameters" || key == "summary" || key == "description" {
                continue;
            } else {
                out.warnings
                    .push(format!("paths[{path:?}].{key}: not supported; left out"));
                continue;
            };
            let rkey = format!("{method} {path}");
            let r = route(
                &rkey,
                op,
                doc,
                default_security,
                (schemes, header_keys),
                &mut authorizers,
                &mut out.warnings,
            );
            match r {
                Some(mut r) => {
                    if let Some(o) = r.as_object_mut() {
                        vimp.route(doc, &rkey, op, item.get("parameters"), o, &mut out.warnings)?;
                    }
                    routes.push(r);
                }
                None => routes.push(held(&rkey, &mut out.warnings)),
            }
        }
    }
    let max_ms = max_timeout.as_millis();
    for r in &mut routes {
        let ms = r["integration"]["timeout"]
            .as_str()
            .and_then(|t| t.strip_suffix("ms"))
            .and_then(|t| t.parse::<u128>().ok());
        if let Some(ms) = ms.filter(|&ms| ms > max_ms) {
            out.warnings.push(format!(
                "{}: timeoutInMillis {ms}: over limits.integration_timeout; {max_ms} ms taken",
                r["route"].as_str().unwrap_or("")
            ));
            r["integration"]["timeout"] = json!(format!("{max_ms}ms"));
        }
    }
    let mut def = json!({ "routes": routes });
    if !header_keys {
        def["api_key_source"] = json!("AUTHORIZER");
    }
    if !authorizers.is_empty() {
        def["authorizers"] = Value::Array(authorizers);
    }
    if !vimp.models.is_empty() {
        def["models"] = Value::Array(vimp.models);
    }
    if let Some(g) = doc.get("x-amazon-apigateway-gateway-responses") {
        let g = gateway_responses(g, &mut out.warnings);
        if !g.is_empty() {
            def["gateway_responses"] = Value::Object(g);
        }
    }
    if let Some(c) = doc.get("x-amazon-apigateway-cors") {
        if let Some(c) = cors(c, &mut out.warnings) {
            def["cors"] = c;
        }
    }
    if let Some(p) = doc.get(super::policy::KEY) {
        // A policy that admits everyone is none (null: a merge import still replaces the
        // API's policy with it).
        def["resource_policy"] = super::policy::import(p, &mut out.warnings).unwrap_or(Value::Null);
    }
    out.definition = def;
    Ok(out)
}

/// `x-amazon-apigateway-gateway-responses` as the definition's `gateway_responses`: status,
/// static headers (`gatewayresponse.header.NAME = "'value'"`) and the JSON template (else the
/// first one). Headers mapped from the request are left out, with a warning.
fn gateway_responses(g: &Value, warnings: &mut Vec<String>) -> Map<String, Value> {
    const KEY: &str = "x-amazon-apigateway-gateway-responses";
    let mut out = Map::new();
    let Some(g) = g.as_object() else {
        warnings.push(format!("{KEY}: not an object; left out"));
        return out;
    };
    for (ty, r) in g {
        let mut entry = Map::new();
        match &r["statusCode"] {
            Value::Number(n) => {
                entry.insert("status".into(), Value::Number(n.clone()));
            }
            Value::String(s) => match s.parse::<u16>() {
                Ok(n) => {
                    entry.insert("status".into(), n.into());
                }
                Err(_) => warnings.push(format!(
                    "{KEY}.{ty}.statusCode {s:?}: not a status; left out"
                )),
            },
            _ => {}
        }
        let mut headers = Map::new();
        for (k, v) in r["responseParameters"].as_object().into_iter().flatten() {
            let (Some(name), Some(v)) = (k.strip_prefix("gatewayresponse.header."), v.as_str())
            else {
                warnings.push(format!(
                    "{KEY}.{ty}.responseParameters {k:?}: not supported; left out"
                ));
                continue;
            };
            match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(text) => {
                    headers.insert(name.to_ascii_lowercase(), text.into());
                }
                None => warnings.push(format!(
                    "{KEY}.{ty}.responseParameters {k:?} = {v:?}: only static values ('text') are supported; left out"
                )),
            }
        }
        if !headers.is_empty() {
            entry.insert("headers".into(), Value::Object(headers));
        }
        if let Some(t) = r["responseTemplates"].as_object() {
            let body = t
                .get("application/json")
                .or_else(|| t.values().next())
                .and_then(Value::as_str);
            if let Some(b) = body {
                entry.insert("body".into(), b.into());
            }
        }
        out.insert(ty.clone(), Value::Object(entry));
    }
    out
}

/// `x-amazon-apigateway-cors` as the definition's `cors`; its values are checked with the
/// rest of the definition.
fn cors(c: &Value, warnings: &mut Vec<String>) -> Option<Value> {
    const KEY: &str = "x-amazon-apigateway-cors";
    let Some(c) = c.as_object() else {
        warnings.push(format!("{KEY}: not an object; left out"));
        return None;
    };
    let mut out = Map::new();
    for (k, v) in c {
        let to = match k.as_str() {
            "allowOrigins" => "allow_origins",
            "allowMethods" => "allow_methods",
            "allowHeaders" => "allow_headers",
            "exposeHeaders" => "expose_headers",
            "maxAge" => "max_age",
            "allowCredentials" => "allow_credentials",
            _ => {
                warnings.push(format!("{KEY}.{k}: not supported; left out"));
                continue;
            }
        };
        out.insert(to.into(), v.clone());
    }
    Some(Value::Object(out))
}

/// What stands for a route left out: its key, answering 403. Left out altogether, its
/// requests would be taken by a less specific route (`$default`, `ANY /{proxy+}`, `ANY` on
/// the path) without the protection the document gives it.
fn held(key: &str, warnings: &mut Vec<String>) -> Value {
    warnings.push(format!(
        "{key}: answers 403 Forbidden until it can be imported whole (left out, a less specific route would take its requests)"
    ));
    serde_json::json!({
        "route": key,
        "integration": {"type": "mock", "status": 403, "body": "{\"message\":\"Forbidden\"}"}
    })
}

/// One operation as a route; `None` (with a warning) when it cannot be served as written.
#[allow(clippy::too_many_arguments)]
fn route(
    key: &str,
    op: &Value,
    doc: &Value,
    default_security: Option<&Value>,
    (schemes, header_keys): (&Value, bool),
    authorizers: &mut Vec<Value>,
    warnings: &mut Vec<String>,
) -> Option<Value> {
    let mut r = Map::new();
    r.insert("route".into(), json!(key));
    let integration = match op.get("x-amazon-apigateway-integration") {
        None => {
            warnings.push(format!(
                "{key}: no x-amazon-apigateway-integration; imported as a mock answering 501"
            ));
            json!({ "type": "mock", "status": 501, "body": "{\"message\":\"Not Implemented\"}", "headers": { "content-type": "application/json" } })
        }
        Some(i) => {
            // An integration the document shares between routes, by reference.
            let i = match i.get("$ref").and_then(Value::as_str) {
                None => i,
                Some(r) => {
                    let shared = r.strip_prefix(SHARED_INTEGRATIONS).and_then(|name| {
                        let name = name.replace("~1", "/").replace("~0", "~");
                        doc["components"]["x-amazon-apigateway-integrations"].get(name)
                    });
                    match shared {
                        Some(s) if s.is_object() => s,
                        _ => {
                            warnings.push(format!(
                                "{key}: x-amazon-apigateway-integration $ref {r:?}: leads to no integration under components.x-amazon-apigateway-integrations; the route is left out"
                            ));
                            return None;
                        }
                    }
                }
            };
            super::integration::integration(key, i, warnings)?
        }
    };
    let mut integration = integration;
    for moved in ["request_parameters", "response_parameters"] {
        if let Some(m) = integration.as_object_mut().and_then(|o| o.remove(moved)) {
            r.insert(moved.into(), m);
        }
    }
    r.insert("integration".into(), integration);
    if let Some(own) = op.get(super::OWN_ROUTE) {
        match own.as_object() {
            Some(o) => {
                for (k, v) in o {
                    if super::OWN_ROUTE_KEYS.contains(&k.as_str()) {
                        r.insert(k.clone(), v.clone());
                    } else {
                        warnings.push(format!(
                            "{key}: {}.{k} is not supported; left out",
                            super::OWN_ROUTE
                        ));
                    }
                }
            }
            None => warnings.push(format!(
                "{key}: {} {own}: expected an object; left out",
                super::OWN_ROUTE
            )),
        }
    }
    // Amazon's per-method extension: `{"type": "AWS_IAM"}` or `"NONE"`.
    match op.get("x-amazon-apigateway-auth") {
        None => {}
        Some(a) => match a["type"].as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("AWS_IAM") => {
                r.insert("authorization".into(), json!("aws_iam"));
            }
            Some("NONE") => {}
            _ => {
                warnings.push(format!(
                    "{key}: x-amazon-apigateway-auth {a}: expected {{\"type\": \"AWS_IAM\"}} or {{\"type\": \"NONE\"}}; the route is left out rather than served without it"
                ));
                return None;
            }
        },
    }
    // `security` is an array of requirement objects; anything else (a YAML `security:` with
    // no value is null) is not read as "none": the route is left out.
    let security = match op.get("security") {
        Some(own) => Some(own),
        None => default_security,
    };
    let requirements = match security {
        None => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(other) => {
            warnings.push(format!(
                "{key}: security {other}: not an array of security requirement objects; the route is left out rather than served without it"
            ));
            return None;
        }
    };
    for requirement in requirements {
        let Some(req) = requirement.as_object() else {
            warnings.push(format!(
                "{key}: security requirement {requirement}: not an object naming security schemes; the route is left out rather than served without it"
            ));
            return None;
        };
        for (name, scopes) in req {
            let scheme = &schemes[name];
            let ext = &scheme["x-amazon-apigateway-authorizer"];
            let authtype = scheme["x-amazon-apigateway-authtype"]
                .as_str()
                .unwrap_or("");
            if authtype.eq_ignore_ascii_case("awsSigv4") {
                r.insert("authorization".into(), json!("aws_iam"));
            } else if ext.is_object() {
                // A route takes one authorizer (as Amazon's): one requirement naming two, or
                // two requirements naming one each, cannot be served as written.
                if let Some(other) = r.get("authorizer").and_then(Value::as_str) {
                    if other != name {
                        warnings.push(format!(
                            "{key}: security names authorizers {other:?} and {name:?}: a route takes one authorizer; the route is left out rather than served behind only one of them"
                        ));
                        return None;
                    }
                }
                let a = authorizer(name, ext, &scheme[super::OWN_AUTHORIZER], warnings)?;
                if !authorizers.iter().any(|x| x["name"] == a["name"]) {
                    authorizers.push(a);
                }
                r.insert("authorizer".into(), json!(name));
                if let Some(s) = scopes.as_array().filter(|s| !s.is_empty()) {
                    r.insert("authorization_scopes".into(), Value::Array(s.clone()));
                }
            } else if scheme["type"] == "apiKey"
                && scheme["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("x-api-key"))
            {
                r.insert("api_key_required".into(), json!(true));
            } else {
                warnings.push(format!(
                    "{key}: security scheme {name:?} has no x-amazon-apigateway-authorizer Tollgate can use; the route is left out rather than served without it"
                ));
                return None;
            }
        }
    }
    // Keys from the authorizer: the route's must be one that can name them.
    if !header_keys && r.contains_key("api_key_required") {
        let external = r
            .get("authorizer")
            .and_then(Value::as_str)
            .and_then(|n| authorizers.iter().find(|a| a["name"] == n))
            .is_some_and(|a| a["type"] != "jwt");
        if !external {
            warnings.push(format!(
                "{key}: x-amazon-apigateway-api-key-source AUTHORIZER: the route requires an API key but has no Lambda (request or token) authorizer to name it; the route is left out rather than refusing every request"
            ));
            return None;
        }
    }
    Some(Value::Object(r))
}

/// An authorizer from `x-amazon-apigateway-authorizer` (`a`), with the settings Amazon has no
/// field for from Tollgate's `x-tollgate-authorizer` (`own`).
fn authorizer(name: &str, a: &Value, own: &Value, warnings: &mut Vec<String>) -> Option<Value> {
    let kind = a["type"].as_str().unwrap_or("").to_ascii_lowercase();
    let mut out = authorizer_of(name, &kind, a, warnings)?;
    let keys: &[&str] = if kind == "jwt" {
        &super::OWN_JWT
    } else {
        &super::OWN_EXTERNAL
    };
    for k in keys {
        if let Some(v) = own.get(*k).filter(|v| !v.is_null()) {
            out[*k] = v.clone();
        }
    }
    Some(out)
}

fn authorizer_of(name: &str, kind: &str, a: &Value, warnings: &mut Vec<String>) -> Option<Value> {
    match kind {
        "jwt" => {
            let c = &a["jwtConfiguration"];
            let mut out = json!({
                "name": name, "type": "jwt",
                "issuer": c["issuer"], "audience": c["audience"],
            });
            if let Some(src) = a["identitySource"].as_str() {
                out["identity_source"] = json!(src.split(',').next().unwrap_or(src).trim());
            }
            Some(out)
        }
        "request" | "token" => {
            let uri = a["authorizerUri"].as_str().unwrap_or("");
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                warnings.push(format!(
                    "authorizer {name:?}: authorizerUri {uri:?} is not an http(s) URL (a Lambda function?); routes using it are left out"
                ));
                return None;
            }
            if uri.contains("${") {
                warnings.push(format!(
                    "authorizer {name:?}: authorizerUri {uri:?} has a stage variable (or another ${{...}}), which an authorizer's uri cannot take; routes using it are left out"
                ));
                return None;
            }
            let sources: Vec<Value> = a["identitySource"]
                .as_str()
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(|s| {
                    // REST APIs write method.request.header.X (and stageVariables.X,
                    // context.X); HTTP APIs $request.header.X.
                    let s = s
                        .replace("method.request.header.", "$request.header.")
                        .replace("method.request.querystring.", "$request.querystring.");
                    let s = match (
                        s.strip_prefix("stageVariables."),
                        s.strip_prefix("context."),
                    ) {
                        (Some(v), _) => format!("$stageVariables.{v}"),
                        (_, Some(c)) => format!("$context.{c}"),
                        _ => s,
                    };
                    json!(s)
                })
                .collect();
            let mut out = json!({ "name": name, "type": kind, "uri": uri });
            if !sources.is_empty() {
                out["identity_sources"] = Value::Array(sources);
            }
            if let Some(ttl) = a["authorizerResultTtlInSeconds"].as_u64() {
                out["ttl"] = json!(format!("{ttl}s"));
            }
            if let Some(re) = a["identityValidationExpression"].as_str() {
                out["identity_validation_expression"] = json!(re);
            }
            // What the gateway does otherwise than the document says: said, so that
            // failonwarnings refuses it.
            if let Some(v) = a["authorizerPayloadFormatVersion"]
                .as_str()
                .filter(|v| kind == "request" && *v != "2.0")
            {
                warnings.push(format!(
                    "authorizer {name:?}: authorizerPayloadFormatVersion {v:?}: the gateway sends payload format 2.0 (its answer is read in either form)"
                ));
            }
            if a.get("authorizerCredentials").is_some() {
                warnings.push(format!(
                    "authorizer {name:?}: authorizerCredentials is not taken (the gateway calls the authorizer's URL itself)"
                ));
            }
            Some(out)
        }
        other => {
            warnings.push(format!("authorizer {name:?}: type {other:?} is not supported; routes using it are left out"));
            None
        }
    }
}
