//! Models and request validation in OpenAPI documents, both ways: `components.schemas` (OAS
//! 3) or `definitions` (Swagger 2.0) as `[[apis.models]]`; an operation's request body schema
//! as `request_models`; its required parameters as `required_parameters`; Amazon API Gateway's
//! `x-amazon-apigateway-request-validators` / `-request-validator` as `request_validator`.
//!
//! A model is compiled on its own (`crate::config::models`: `$ref`s resolve within the schema
//! only), so a schema that refers to others carries copies of them, each schema it reaches
//! (directly or not) once, under its own `definitions`. Copies are counted before they are
//! made: a document whose schemas refer to each other in a long chain would otherwise make
//! copies that grow with the square of its size; past [`MODELS`] of the document the import
//! is refused. Export takes the copies out again where they are the API's own
//! models, and refers to those, so that the document is valid OpenAPI and imports as it was.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::config::{Api, Route};

/// What the models made from a document may take, copies included: 4 times the document's
/// size, at least 1 MiB, at most 4 MiB. Compiled, a model takes about 100 times its JSON, and
/// every run-time API is compiled again on each change (measured, release build: 1.1 MB of
/// models, 115 MB resident and 0.4 s a change; 9.8 MB, 1.1 GB and 3 to 5 s).
pub(super) const MODELS: super::Growth = super::Growth {
    factor: 4,
    min: 1 << 20,
    max: 4 << 20,
};

/// One of the document's schemas, as the models carry it.
struct Schema {
    /// Refs to the document's schemas rewritten into `#/definitions/NAME`.
    value: Value,
    /// Its length as JSON: what a copy costs.
    len: usize,
    /// The model names it refers to.
    refs: BTreeSet<String>,
}

/// What an import knows of the document's validators and models.
pub(super) struct Imports {
    oas3: bool,
    /// An OpenAPI 3.1 document: its schemas are JSON Schema 2020-12 (the models say so in
    /// `$schema`; without it a model is read as draft 4, as Amazon's are, and 2020-12's
    /// keywords would be ignored).
    dialect_2020_12: bool,
    /// Validator name: (validateRequestBody, validateRequestParameters).
    validators: BTreeMap<String, (bool, bool)>,
    default_validator: Option<String>,
    /// The document's schemas by model name.
    schemas: BTreeMap<String, Schema>,
    /// Bytes the models may still take, and what they could take in all.
    left: usize,
    budget: usize,
    /// Models made so far (the document's, then inline body schemas).
    pub models: Vec<Value>,
    /// The gateway drops request headers with `_` in their names
    /// (`limits.underscores_in_headers`): a required one could never be there.
    underscores_dropped: bool,
}

/// On a Swagger operation: every request model by content type, where one body cannot say
/// them all (written by the export, read by the import).
const OWN_MODELS: &str = "x-tollgate-request-models";

/// A document's media type as a route's `request_models` key: without its parameters
/// (`application/json; charset=utf-8` is the body of any `application/json` request).
fn bare_media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or(ct)
        .trim()
        .to_ascii_lowercase()
}

/// `v` itself, or what its `$ref` points at within the document (`#/components/parameters/Q`,
/// `#/parameters/Q`, `#/components/requestBodies/B`; a chain of them followed); `None`, with
/// a warning naming the route, for a reference that leads nowhere, outside the document or
/// round in a circle.
fn local_ref<'a>(
    doc: &'a Value,
    mut v: &'a Value,
    key: &str,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<&'a Value> {
    const HOPS: usize = 16;
    for _ in 0..HOPS {
        let Some(r) = v.get("$ref") else {
            return Some(v);
        };
        let target = r
            .as_str()
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| doc.pointer(pointer));
        match target {
            Some(t) => v = t,
            None => {
                warnings.push(format!(
                    "{key}: {what} $ref {r} does not lead to a part of this document: not checked"
                ));
                return None;
            }
        }
    }
    warnings.push(format!(
        "{key}: {what} $ref chain longer than {HOPS} (a cycle?): not checked"
    ));
    None
}

/// Where a document keeps its schemas, and how a `$ref` names them.
fn schema_place(oas3: bool) -> (&'static str, &'static str) {
    if oas3 {
        ("/components/schemas", "#/components/schemas/")
    } else {
        ("/definitions", "#/definitions/")
    }
}

/// A model name Tollgate takes: letters, digits, `-` and `_`.
fn model_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Rewrites `$ref`s to the document's schemas (`PREFIX NAME`, or deeper: `PREFIX NAME/...`)
/// as refs into the model's own `definitions`, noting the names in `found`.
fn rewrite_refs(v: &mut Value, prefix: &str, found: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(target) = r.strip_prefix(prefix) {
                    let (name, rest) = match target.split_once('/') {
                        Some((n, rest)) => (n, format!("/{rest}")),
                        None => (target, String::new()),
                    };
                    // A JSON pointer's escapes (RFC 6901), then the name as the model has it.
                    let name = model_name(&name.replace("~1", "/").replace("~0", "~"));
                    *r = format!("#/definitions/{name}{rest}");
                    found.insert(name);
                }
            }
            for (_, x) in m.iter_mut() {
                rewrite_refs(x, prefix, found);
            }
        }
        Value::Array(a) => {
            for x in a {
                rewrite_refs(x, prefix, found);
            }
        }
        _ => {}
    }
}

/// The length of `v` as JSON, without writing it anywhere.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing a Value to a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

impl Imports {
    /// A model's schema with the document's dialect named, where it is not draft 4's.
    fn dialected(&self, mut schema: Value) -> Value {
        if self.dialect_2020_12 {
            if let Some(o) = schema.as_object_mut() {
                o.entry("$schema")
                    .or_insert_with(|| json!("https://json-schema.org/draft/2020-12/schema"));
            }
        }
        schema
    }

    /// The document's validators and schemas; its schemas become models at once.
    /// `input_len`: the document's size, which bounds what the models may take ([`MODELS`]).
    /// `Err` when they would take more.
    pub(super) fn new(
        doc: &Value,
        oas3: bool,
        input_len: usize,
        underscores_dropped: bool,
    ) -> Result<Imports, String> {
        let budget = MODELS.budget(input_len);
        let mut validators = BTreeMap::new();
        for (name, v) in doc["x-amazon-apigateway-request-validators"]
            .as_object()
            .into_iter()
            .flatten()
        {
            validators.insert(
                name.clone(),
                (
                    v["validateRequestBody"].as_bool().unwrap_or(false),
                    v["validateRequestParameters"].as_bool().unwrap_or(false),
                ),
            );
        }
        let (place, prefix) = schema_place(oas3);
        let all = doc.pointer(place).and_then(Value::as_object);
        let mut schemas = BTreeMap::new();
        let mut named: BTreeMap<String, &String> = BTreeMap::new();
        for (name, schema) in all.into_iter().flatten() {
            let mut value = schema.clone();
            let mut refs = BTreeSet::new();
            rewrite_refs(&mut value, prefix, &mut refs);
            let len = json_len(&value);
            let model = model_name(name);
            // Two schemas, one model name: the later replaced the earlier without a word,
            // and a body checked against the one was checked against the other.
            if let Some(first) = named.insert(model.clone(), name) {
                return Err(format!(
                    "{place}/{first} and {place}/{name} both become model {model:?} (a model name keeps letters, digits, '-' and '_'): rename one"
                ));
            }
            schemas.insert(model, Schema { value, len, refs });
        }
        let mut out = Imports {
            oas3,
            dialect_2020_12: doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1.") || v == "3.1"),
            validators,
            default_validator: doc["x-amazon-apigateway-request-validator"]
                .as_str()
                .map(str::to_string),
            schemas,
            left: budget,
            budget,
            models: Vec::new(),
            underscores_dropped,
        };
        let names: Vec<String> = out.schemas.keys().cloned().collect();
        for name in names {
            let Some(s) = out.schemas.get(&name) else {
                continue;
            };
            let (value, refs) = (s.value.clone(), s.refs.clone());
            let schema = out.standalone(&name, value, &refs)?;
            let schema = out.dialected(schema);
            out.models.push(json!({
                "name": name,
                "content_type": "application/json",
                "schema": schema,
            }));
        }
        Ok(out)
    }

    /// Model `name`'s schema standing alone: `schema` (refs rewritten), with a copy of every
    /// schema it reaches from `refs` under `definitions`. Counted before anything is copied.
    fn standalone(
        &mut self,
        name: &str,
        mut schema: Value,
        refs: &BTreeSet<String>,
    ) -> Result<Value, String> {
        let mut cost = json_len(&schema);
        let mut reached = BTreeSet::new();
        let mut todo: Vec<&String> = refs.iter().collect();
        while let Some(n) = todo.pop() {
            if !reached.insert(n.as_str()) {
                continue;
            }
            // A ref to no schema stays as it is: the model's compilation names it.
            if let Some(s) = self.schemas.get(n) {
                cost = cost.saturating_add(s.len);
                if cost > self.left {
                    break;
                }
                todo.extend(s.refs.iter());
            }
        }
        if cost > self.left {
            let place = if self.oas3 {
                "components.schemas"
            } else {
                "definitions"
            };
            return Err(format!(
                "model {name:?}: the models made of the document's {place} would take more than {}, each carrying a copy of every schema it refers to, directly or not (the bound: {}): refused, not built",
                super::mib(self.budget),
                MODELS.rule(),
            ));
        }
        self.left -= cost;
        if !refs.is_empty() {
            let defs: Map<String, Value> = reached
                .iter()
                .filter_map(|n| Some((n.to_string(), self.schemas.get(*n)?.value.clone())))
                .collect();
            if let Some(obj) = schema.as_object_mut() {
                obj.insert("definitions".into(), Value::Object(defs));
            }
        }
        Ok(schema)
    }

    /// Adds an operation's validation to its route.
    pub(super) fn route(
        &mut self,
        doc: &Value,
        key: &str,
        op: &Value,
        path_params: Option<&Value>,
        r: &mut Map<String, Value>,
        warnings: &mut Vec<String>,
    ) -> Result<(), String> {
        let mut required = Vec::new();
        let mut models = Map::new();
        // Each parameter once, by name and place: the operation's own override the path's
        // (OpenAPI's Operation Object), `$ref`s read where they point.
        let mut params: Vec<&Value> = Vec::new();
        let op_params = op["parameters"].as_array().into_iter().flatten();
        let path_level = path_params.and_then(Value::as_array).into_iter().flatten();
        for (from_op, p) in op_params
            .map(|p| (true, p))
            .chain(path_level.map(|p| (false, p)))
        {
            let Some(p) = local_ref(doc, p, key, "parameter", warnings) else {
                continue;
            };
            let same = |q: &&Value| q["name"] == p["name"] && q["in"] == p["in"];
            if from_op || !params.iter().any(same) {
                params.push(p);
            }
        }
        for p in params {
            let (Some(name), Some(place_in)) = (p["name"].as_str(), p["in"].as_str()) else {
                warnings.push(format!(
                    "{key}: a parameter without a name or an \"in\": not checked"
                ));
                continue;
            };
            if place_in == "body" {
                // The body's schema is the model of every type the operation consumes.
                let consumes = op["consumes"]
                    .as_array()
                    .or_else(|| doc["consumes"].as_array())
                    .filter(|c| !c.is_empty());
                let types: Vec<&str> = match consumes {
                    Some(c) => c.iter().filter_map(Value::as_str).collect(),
                    None => vec!["application/json"],
                };
                for ct in types {
                    let ct = if ct == "*/*" { "$default" } else { ct };
                    if let Some(m) = self.body_model(key, ct, &p["schema"])? {
                        models.insert(bare_media_type(ct), json!(m));
                    }
                }
                continue;
            }
            if p["required"].as_bool() != Some(true) {
                continue;
            }
            match place_in {
                "query" => required.push(format!("querystring.{name}")),
                "header" if self.underscores_dropped && name.contains('_') => {
                    warnings.push(format!(
                        "{key}: required header parameter {name:?}: a name with \"_\" is dropped by the gateway (limits.underscores_in_headers), so it could never be there; not checked"
                    ))
                }
                "header" => required.push(format!("header.{name}")),
                "path" => required.push(format!("path.{}", name.trim_end_matches('+'))),
                _ => warnings.push(format!(
                    "{key}: required {place_in} parameter {name:?}: not checked"
                )),
            }
        }
        let body = match op.get("requestBody") {
            Some(b) => local_ref(doc, b, key, "requestBody", warnings),
            None => None,
        };
        for (ct, media) in body
            .and_then(|b| b["content"].as_object())
            .into_iter()
            .flatten()
        {
            // A media-type range: the model for any type, as Swagger's `consumes` says it.
            let ct = if ct == "*/*" { "$default" } else { ct.as_str() };
            if let Some(m) = self.body_model(key, ct, &media["schema"])? {
                models.insert(bare_media_type(ct), json!(m));
            }
        }
        let validator = op["x-amazon-apigateway-request-validator"]
            .as_str()
            .map(str::to_string)
            .or_else(|| self.default_validator.clone());
        if let Some(v) = validator {
            match self.validators.get(&v) {
                Some((true, true)) => {
                    r.insert("request_validator".into(), json!("all"));
                }
                Some((true, false)) => {
                    r.insert("request_validator".into(), json!("body"));
                }
                Some((false, true)) => {
                    r.insert("request_validator".into(), json!("params"));
                }
                Some((false, false)) => {}
                None => warnings.push(format!(
                    "{key}: request validator {v:?} is not in x-amazon-apigateway-request-validators; the route validates nothing"
                )),
            }
        }
        if !required.is_empty() {
            r.insert("required_parameters".into(), json!(required));
        }
        // What a Swagger document's one body cannot say, Tollgate's export says here.
        if let Some(own) = op[OWN_MODELS].as_object() {
            for (ct, m) in own {
                if let Some(m) = m.as_str() {
                    models.insert(bare_media_type(ct), json!(m));
                }
            }
        }
        if !models.is_empty() {
            r.insert("request_models".into(), Value::Object(models));
        }
        Ok(())
    }

    /// The model for a request body's schema: the document's by `$ref`, else a new one.
    fn body_model(
        &mut self,
        key: &str,
        ct: &str,
        schema: &Value,
    ) -> Result<Option<String>, String> {
        if schema.is_null() {
            return Ok(None);
        }
        let prefix = schema_place(self.oas3).1;
        let named = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix(prefix))
            .filter(|n| !n.contains('/'));
        if let Some(name) = named {
            return Ok(Some(model_name(
                &name.replace("~1", "/").replace("~0", "~"),
            )));
        }
        let name = format!(
            "{}_{}",
            model_name(key.trim_start_matches('$')),
            model_name(ct)
        );
        let mut value = schema.clone();
        let mut refs = BTreeSet::new();
        rewrite_refs(&mut value, prefix, &mut refs);
        let schema = self.standalone(&name, value, &refs)?;
        let schema = self.dialected(schema);
        self.models.push(json!({
            "name": name,
            "content_type": ct,
            "schema": schema,
        }));
        Ok(Some(name))
    }
}

/// The API's models where the document keeps schemas. A model's `definitions` that are
/// copies of the API's other models (as import makes them) are taken out, and its refs point
/// at those models instead; its other `definitions` (a schema's own) become schemas of the
/// document named `MODEL_NAME`, which its refs point at: in the document a `#/definitions/x`
/// names the document's, not the schema's, and would dangle.
pub(super) fn export_models(a: &Api, oas3: bool, doc: &mut Value) {
    if a.models.is_empty() {
        return;
    }
    let by_name: BTreeMap<&str, &Value> = a
        .models
        .iter()
        .map(|m| (m.name.as_str(), &m.schema))
        .collect();
    let prefix = schema_place(oas3).1;
    let mut schemas = Map::new();
    let mut lifted = Vec::new();
    let mut taken: BTreeSet<String> = a.models.iter().map(|m| m.name.clone()).collect();
    for m in &a.models {
        let mut s = m.schema.clone();
        lifted.extend(lift_definitions(
            &mut s, &m.name, &by_name, prefix, &mut taken,
        ));
        if let (Some(d), Some(o)) = (&m.description, s.as_object_mut()) {
            o.entry("description").or_insert_with(|| json!(d));
        }
        schemas.insert(m.name.clone(), s);
    }
    schemas.extend(lifted);
    if oas3 {
        doc["components"]["schemas"] = Value::Object(schemas);
    } else {
        doc["definitions"] = Value::Object(schemas);
    }
}

/// Whether `copy` is `model` without its own `definitions`.
fn is_copy_of(copy: &Value, model: &Value) -> bool {
    match (copy.as_object(), model.as_object()) {
        (Some(c), Some(m)) => {
            !c.contains_key("definitions")
                && c.len() + usize::from(m.contains_key("definitions")) == m.len()
                && c.iter().all(|(k, v)| m.get(k) == Some(v))
        }
        _ => copy == model,
    }
}

/// Takes the schema's `definitions` out: each that is a copy of the model of its name is that
/// model; each other is returned as `MODEL_NAME` (a name not in `taken`, which it joins), its
/// own refs pointed the same way; refs to them point at `PREFIX NAME` / `PREFIX MODEL_NAME`.
fn lift_definitions(
    s: &mut Value,
    model: &str,
    models: &BTreeMap<&str, &Value>,
    prefix: &str,
    taken: &mut BTreeSet<String>,
) -> Vec<(String, Value)> {
    let Some(Value::Object(defs)) = s.as_object_mut().and_then(|o| o.remove("definitions")) else {
        return Vec::new();
    };
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    let mut own = Vec::new();
    for (n, d) in defs {
        if models.get(n.as_str()).is_some_and(|m| is_copy_of(&d, m)) {
            targets.insert(n.clone(), n);
            continue;
        }
        let clean: String = n
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = format!("{model}_{clean}");
        let mut t = base.clone();
        let mut i = 2;
        while taken.contains(&t) {
            t = format!("{base}_{i}");
            i += 1;
        }
        taken.insert(t.clone());
        targets.insert(n, t.clone());
        own.push((t, d));
    }
    point_refs(s, &targets, prefix);
    for (_, d) in &mut own {
        point_refs(d, &targets, prefix);
    }
    own
}

/// `#/definitions/NAME...` refs, for the names `targets` has, as `PREFIX TARGET...`.
fn point_refs(v: &mut Value, targets: &BTreeMap<String, String>, prefix: &str) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(target) = r.strip_prefix("#/definitions/") {
                    let (name, rest) = target.split_at(target.find('/').unwrap_or(target.len()));
                    // A JSON pointer's escapes (RFC 6901): the name as `definitions` has it.
                    let name = name.replace("~1", "/").replace("~0", "~");
                    if let Some(t) = targets.get(&name) {
                        *r = format!("{prefix}{t}{rest}");
                    }
                }
            }
            for (_, x) in m.iter_mut() {
                point_refs(x, targets, prefix);
            }
        }
        Value::Array(a) => {
            for x in a {
                point_refs(x, targets, prefix);
            }
        }
        _ => {}
    }
}

/// An operation's required parameters, body model and (with extensions) its validator.
pub(super) fn export_route(
    r: &Route,
    oas3: bool,
    extensions: bool,
    op: &mut Map<String, Value>,
    used: &mut BTreeMap<String, Value>,
) {
    let spec = &r.validation_spec;
    let mut params: Vec<Value> = op
        .remove("parameters")
        .and_then(|p| p.as_array().cloned())
        .unwrap_or_default();
    for p in &spec.required_parameters {
        let bare = p.strip_prefix("method.request.").unwrap_or(p);
        let (place, name) = match bare.split_once('.') {
            Some(("querystring", n)) => ("query", n),
            Some(("header", n)) => ("header", n),
            _ => continue,
        };
        params.push(if oas3 {
            json!({ "name": name, "in": place, "required": true, "schema": { "type": "string" } })
        } else {
            json!({ "name": name, "in": place, "required": true, "type": "string" })
        });
    }
    let prefix = schema_place(oas3).1;
    if oas3 && !spec.request_models.is_empty() {
        let content: Map<String, Value> = spec
            .request_models
            .iter()
            .map(|(ct, m)| {
                // `$default` (any content type) is `*/*` as a media type range, as the
                // import reads it.
                let range = if ct == "$default" { "*/*" } else { ct.as_str() };
                (
                    range.to_string(),
                    json!({ "schema": { "$ref": format!("{prefix}{m}") } }),
                )
            })
            .collect();
        op.insert(
            "requestBody".into(),
            json!({ "content": content, "required": true }),
        );
    } else if let Some((_, m)) = spec
        .request_models
        .iter()
        .find(|(ct, _)| ct.as_str() == "application/json")
        .or_else(|| spec.request_models.iter().next())
    {
        // Swagger 2.0 has one body: its model is JSON's (else the first), for every type
        // that names the same one (`$default`: any, `*/*`); the types naming another go in
        // Tollgate's own key, which its import reads back.
        let models = &spec.request_models;
        let consumes: Vec<&str> = models
            .iter()
            .filter(|(_, n)| n == &m)
            .map(|(ct, _)| if ct == "$default" { "*/*" } else { ct.as_str() })
            .collect();
        params.push(json!({ "name": "body", "in": "body", "required": true, "schema": { "$ref": format!("{prefix}{m}") } }));
        op.insert("consumes".into(), json!(consumes));
        if extensions && models.iter().any(|(_, n)| n != m) {
            op.insert(OWN_MODELS.into(), json!(models));
        }
    }
    if !params.is_empty() {
        op.insert("parameters".into(), Value::Array(params));
    }
    if let (true, Some(v)) = (extensions, &spec.request_validator) {
        op.insert("x-amazon-apigateway-request-validator".into(), json!(v));
        used.insert(
            v.clone(),
            json!({
                "validateRequestBody": v == "body" || v == "all",
                "validateRequestParameters": v == "params" || v == "all",
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(schemas: Value) -> Value {
        json!({"openapi": "3.0.1", "components": {"schemas": schemas}})
    }

    #[test]
    fn a_model_carries_what_it_reaches_and_no_more() {
        let d = doc(json!({
            "A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
            "B": {"type": "array", "items": {"$ref": "#/components/schemas/C/properties/x"}},
            "C": {"type": "object", "properties": {"x": {"type": "string"}}},
            "Lone": {"type": "string"},
        }));
        let i = Imports::new(&d, true, d.to_string().len(), true).unwrap();
        let by = |n: &str| i.models.iter().find(|m| m["name"] == n).unwrap()["schema"].clone();
        let a = by("A");
        let keys: Vec<&String> = a["definitions"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["B", "C"]);
        assert_eq!(
            a["definitions"]["B"]["items"]["$ref"],
            "#/definitions/C/properties/x"
        );
        assert!(by("Lone").get("definitions").is_none());
        assert!(by("C").get("definitions").is_none());
    }

    #[test]
    fn copies_past_the_bound_are_refused_before_they_are_made() {
        let mut schemas = Map::new();
        for i in 0..600 {
            schemas.insert(
                format!("S{i}"),
                json!({"description": "p".repeat(100),
                    "properties": {"next": {"$ref": format!("#/components/schemas/S{}", i + 1)}}}),
            );
        }
        let d = doc(Value::Object(schemas));
        let len = d.to_string().len();
        let e = Imports::new(&d, true, len, true).err().unwrap();
        assert!(e.contains("would take more than 1 MiB"), "{e}");
        assert_eq!(MODELS.budget(len), 1 << 20);
        assert_eq!(MODELS.budget(10 << 20), 4 << 20);
    }
}
