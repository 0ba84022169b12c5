//! Models and request validation in OpenAPI documents, both ways: `components.schemas` (OAS
//! 3) or `definitions` (Swagger 2.0) as `[[apis.models]]`; an operation's request body schema
//! as `request_models`; its required parameters as `required_parameters`; Amazon API Gateway's
//! `x-amazon-apigateway-request-validators` / `-request-validator` as `request_validator`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::config::{Api, Route};

/// What an import knows of the document's validators and models.
pub(super) struct Imports {
    oas3: bool,
    /// Validator name: (validateRequestBody, validateRequestParameters).
    validators: BTreeMap<String, (bool, bool)>,
    default_validator: Option<String>,
    /// Models made so far (the document's, then inline body schemas).
    pub models: Vec<Value>,
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

/// Rewrites `$ref`s to the document's schemas as refs into the model's own `definitions`;
/// true when there was one.
fn rewrite_refs(v: &mut Value, prefix: &str) -> bool {
    match v {
        Value::Object(m) => {
            let mut any = false;
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(prefix) {
                    *r = format!("#/definitions/{}", model_name(name));
                    any = true;
                }
            }
            for (_, x) in m.iter_mut() {
                any |= rewrite_refs(x, prefix);
            }
            any
        }
        Value::Array(a) => a
            .iter_mut()
            .fold(false, |acc, x| rewrite_refs(x, prefix) | acc),
        _ => false,
    }
}

impl Imports {
    pub(super) fn new(doc: &Value, oas3: bool) -> Imports {
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
        let mut models = Vec::new();
        for (name, schema) in all.into_iter().flatten() {
            models.push(json!({
                "name": model_name(name),
                "content_type": "application/json",
                "schema": Self::standalone(schema, all, prefix),
            }));
        }
        Imports {
            oas3,
            validators,
            default_validator: doc["x-amazon-apigateway-request-validator"]
                .as_str()
                .map(str::to_string),
            models,
        }
    }

    /// A schema that stands alone: refs to the document's schemas point into a copy of them.
    fn standalone(schema: &Value, all: Option<&Map<String, Value>>, prefix: &str) -> Value {
        let mut s = schema.clone();
        if rewrite_refs(&mut s, prefix) {
            if let (Some(all), Some(obj)) = (all, s.as_object_mut()) {
                let mut defs = Map::new();
                for (n, x) in all {
                    let mut x = x.clone();
                    rewrite_refs(&mut x, prefix);
                    defs.insert(model_name(n), x);
                }
                obj.insert("definitions".into(), Value::Object(defs));
            }
        }
        s
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
    ) {
        let (place, prefix) = schema_place(self.oas3);
        let all = doc.pointer(place).and_then(Value::as_object);
        let mut required = Vec::new();
        let mut models = Map::new();
        let params = path_params
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(op["parameters"].as_array().into_iter().flatten());
        for p in params {
            let (Some(name), Some(place_in)) = (p["name"].as_str(), p["in"].as_str()) else {
                continue;
            };
            if place_in == "body" {
                let ct = op["consumes"]
                    .get(0)
                    .or_else(|| doc["consumes"].get(0))
                    .and_then(Value::as_str)
                    .unwrap_or("application/json");
                if let Some(m) = self.body_model(key, ct, &p["schema"], all, prefix) {
                    models.insert(ct.to_string(), json!(m));
                }
                continue;
            }
            if p["required"].as_bool() != Some(true) {
                continue;
            }
            match place_in {
                "query" => required.push(format!("querystring.{name}")),
                "header" => required.push(format!("header.{name}")),
                "path" => required.push(format!("path.{}", name.trim_end_matches('+'))),
                _ => warnings.push(format!(
                    "{key}: required {place_in} parameter {name:?}: not checked"
                )),
            }
        }
        for (ct, media) in op["requestBody"]["content"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if let Some(m) = self.body_model(key, ct, &media["schema"], all, prefix) {
                models.insert(ct.clone(), json!(m));
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
        if !models.is_empty() {
            r.insert("request_models".into(), Value::Object(models));
        }
    }

    /// The model for a request body's schema: the document's by `$ref`, else a new one.
    fn body_model(
        &mut self,
        key: &str,
        ct: &str,
        schema: &Value,
        all: Option<&Map<String, Value>>,
        prefix: &str,
    ) -> Option<String> {
        if schema.is_null() {
            return None;
        }
        if let Some(name) = schema["$ref"].as_str().and_then(|r| r.strip_prefix(prefix)) {
            return Some(model_name(name));
        }
        let name = format!(
            "{}_{}",
            model_name(key.trim_start_matches('$')),
            model_name(ct)
        );
        self.models.push(json!({
            "name": name,
            "content_type": ct,
            "schema": Self::standalone(schema, all, prefix),
        }));
        Some(name)
    }
}

/// The API's models where the document keeps schemas.
pub(super) fn export_models(a: &Api, oas3: bool, doc: &mut Value) {
    if a.models.is_empty() {
        return;
    }
    let schemas: Map<String, Value> = a
        .models
        .iter()
        .map(|m| {
            let mut s = m.schema.clone();
            if let (Some(d), Some(o)) = (&m.description, s.as_object_mut()) {
                o.entry("description").or_insert_with(|| json!(d));
            }
            (m.name.clone(), s)
        })
        .collect();
    if oas3 {
        doc["components"]["schemas"] = Value::Object(schemas);
    } else {
        doc["definitions"] = Value::Object(schemas);
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
                (
                    ct.clone(),
                    json!({ "schema": { "$ref": format!("{prefix}{m}") } }),
                )
            })
            .collect();
        op.insert(
            "requestBody".into(),
            json!({ "content": content, "required": true }),
        );
    } else if let Some((ct, m)) = spec.request_models.iter().next() {
        params.push(json!({ "name": "body", "in": "body", "required": true, "schema": { "$ref": format!("{prefix}{m}") } }));
        op.insert("consumes".into(), json!([ct]));
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
