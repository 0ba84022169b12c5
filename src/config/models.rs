//! `[[apis.models]]` and a route's request validation (`request_validator`, `request_models`,
//! `required_parameters`): Amazon API Gateway's models and request validators. A model is a
//! JSON Schema (draft 4 unless its `$schema` names another), compiled once at load.

use std::sync::Arc;

use super::*;
use crate::syntax::json_doc::Body;

/// An API's model: a JSON Schema, compiled.
#[derive(Clone, Serialize)]
pub struct Model {
    pub name: String,
    pub content_type: String,
    pub schema: serde_json::Value,
    pub description: Option<String>,
    #[serde(skip)]
    pub validator: Arc<jsonschema::Validator<Body>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// A parameter a route requires (`required_parameters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequiredParam {
    Query(String),
    /// As configured (matched without regard to case; named so in the message).
    Header(String),
    /// Index into the route's path variables, and its name.
    Path(usize, String),
}

impl RequiredParam {
    /// The name a client is told is missing.
    pub fn name(&self) -> &str {
        match self {
            RequiredParam::Query(n) | RequiredParam::Header(n) | RequiredParam::Path(_, n) => n,
        }
    }
}

/// What a route checks before its integration runs.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// `params` or `all`: these must be present and not empty.
    pub required: Vec<RequiredParam>,
    /// `body` or `all`: the model per content type (lower-case; `$default` for any other).
    pub models: Vec<(String, Arc<jsonschema::Validator<Body>>)>,
}

/// A route's validation as written (kept for export and the admin API).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ValidationSpec {
    pub request_validator: Option<String>,
    pub request_models: BTreeMap<String, String>,
    pub required_parameters: Vec<String>,
}

impl Validator {
    pub(super) fn models(&mut self, key: &str, models: Vec<file::ModelFile>) -> Vec<Model> {
        let mut out: Vec<Model> = Vec::new();
        self.refused_models.clear();
        for (j, m) in models.into_iter().enumerate() {
            let mkey = format!("{key}.{}", item("models", j, m.name.as_ref()));
            let name = self.name(&format!("{mkey}.name"), m.name);
            if out.iter().any(|o| o.name == name) {
                self.err(&format!("{mkey}.name"), "is used by two models of this API");
            }
            let content_type = m
                .content_type
                .unwrap_or_else(|| "application/json".into())
                .to_ascii_lowercase();
            let schema = match m.schema {
                None => {
                    self.err(&format!("{mkey}.schema"), "is required (a JSON Schema)");
                    self.refused_models.push(name);
                    continue;
                }
                Some(serde_json::Value::String(text)) => match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(e) => {
                        self.err(&format!("{mkey}.schema"), format!("is not JSON: {e}"));
                        self.refused_models.push(name);
                        continue;
                    }
                },
                Some(v) => v,
            };
            match compile_schema(&schema) {
                Ok(validator) => out.push(Model {
                    name,
                    content_type,
                    schema,
                    description: m.description,
                    validator: Arc::new(validator),
                }),
                Err(e) => {
                    self.err(&format!("{mkey}.schema"), e);
                    self.refused_models.push(name);
                }
            }
        }
        out
    }

    /// The route's validation, checked against the API's models and the route's path.
    pub(super) fn route_validation(
        &mut self,
        rkey: &str,
        spec: &ValidationSpec,
        models: &[Model],
        params: &[String],
        underscores: super::Underscores,
    ) -> Option<Arc<Validation>> {
        let (body, check_params) = match spec.request_validator.as_deref() {
            None => (false, false),
            Some("body") => (true, false),
            Some("params") => (false, true),
            Some("all") => (true, true),
            Some(other) => {
                self.bad(
                    &format!("{rkey}.request_validator"),
                    other,
                    "\"body\", \"params\" or \"all\"",
                );
                (false, false)
            }
        };
        let mut v = Validation::default();
        for (ct, name) in &spec.request_models {
            if let Some((other, _)) = spec
                .request_models
                .iter()
                .find(|(o, _)| *o < ct && o.eq_ignore_ascii_case(ct))
            {
                // Media types are matched without case: one of the two would never be used.
                self.err(
                    &format!("{rkey}.request_models.{ct}"),
                    format!("is {other:?} again (media types match without regard to case)"),
                );
                continue;
            }
            if ct != "$default" && !super::transform::is_media_type(ct) {
                // It would never match a request: its body would go unchecked.
                self.err(
                    &format!("{rkey}.request_models.{ct}"),
                    "is not a media type: expected \"type/subtype\" (\"application/json\"), without parameters or wildcards, or \"$default\"",
                );
                continue;
            }
            match models.iter().find(|m| &m.name == name) {
                Some(m) => v
                    .models
                    .push((ct.to_ascii_lowercase(), m.validator.clone())),
                // Its schema was refused, and said so.
                None if self.refused_models.contains(name) => {}
                None => self.bad(
                    &format!("{rkey}.request_models.{ct}"),
                    name,
                    "the name of one of the API's [[apis.models]]",
                ),
            }
        }
        for (i, p) in spec.required_parameters.iter().enumerate() {
            let pkey = format!("{rkey}.required_parameters[{i}]");
            let bare = p.strip_prefix("method.request.").unwrap_or(p);
            let parsed = match bare.split_once('.') {
                Some(("querystring", n)) if !n.is_empty() => Some(RequiredParam::Query(n.into())),
                Some(("header", n))
                    if n.contains('_') && underscores == super::Underscores::Drop =>
                {
                    // Checked here, then dropped before the upstream.
                    self.err(
                        &pkey,
                        format!("{p:?}: a header with \"_\" in its name is dropped before the upstream (limits.underscores_in_headers = \"drop\", the default): set it to \"allow\", or name a header without \"_\""),
                    );
                    continue;
                }
                Some(("header", n)) if !n.is_empty() && n.bytes().all(crate::syntax::is_tchar) => {
                    Some(RequiredParam::Header(n.into()))
                }
                Some(("path", n)) => match params.iter().position(|x| x == n) {
                    Some(k) => Some(RequiredParam::Path(k, n.into())),
                    None => {
                        self.bad(&pkey, p, "a path variable of the route");
                        continue;
                    }
                },
                _ => None,
            };
            match parsed {
                Some(r) => v.required.push(r),
                None => self.bad(
                    &pkey,
                    p,
                    "\"querystring.NAME\", \"header.NAME\" or \"path.NAME\" (optionally after \"method.request.\")",
                ),
            }
        }
        if !body {
            v.models.clear();
        }
        if !check_params {
            v.required.clear();
        }
        (!v.models.is_empty() || !v.required.is_empty()).then(|| Arc::new(v))
    }
}

/// What one `pattern` may take compiled (10 MiB, the `regex` crate's default): checking a
/// string costs at most in proportion to this times the string's length.
const PATTERN_SIZE_LIMIT: usize = 10 << 20;

/// Compiles a schema: draft 4 (Amazon API Gateway's) unless `$schema` names another; `$ref`s
/// resolve within the schema only (nothing is fetched). `pattern` and `patternProperties` run
/// on the `regex` crate's engine, linear in the string checked: a backtracking engine (the
/// crate's default for look-around and back-references) let one request's distinct strings
/// cost up to a million steps each, holding the shard for seconds. Patterns with look-around
/// or back-references are refused here instead.
pub(crate) fn compile_schema(
    schema: &serde_json::Value,
) -> Result<jsonschema::Validator<Body>, String> {
    let mut opts = jsonschema::options_for::<Body>()
        .with_pattern_options(jsonschema::PatternOptions::regex().size_limit(PATTERN_SIZE_LIMIT));
    if schema.get("$schema").is_none() {
        opts = opts.with_draft(jsonschema::Draft::Draft4);
    }
    opts.build(schema).map_err(|e| {
        // Where in the schema (a JSON pointer), unless at its root.
        let at = e.instance_path().to_string();
        let at = if at.is_empty() || at == "/" {
            String::new()
        } else {
            format!(" (at {at})")
        };
        let e = format!("{e}{at}");
        let hint = if e.contains("is not a \"regex\"") {
            " (patterns run on a linear-time engine, compiled within 10 MiB: look-around and back-references are not supported)"
        } else {
            ""
        };
        format!("is not a valid JSON Schema: {e}{hint}")
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(models: &str, route: &str) -> Result<Config, String> {
        let text = format!(
            r#"
[[listeners]]
name = "http"
addr = "127.0.0.1:0"
[[apis]]
name = "a"
{models}
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "POST /m/{{id}}"
  {route}
  integration = {{ type = "mock" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
"#
        );
        Config::parse(&text, Path::new(".")).map_err(|e| e.to_string())
    }

    const PET: &str =
        "[[apis.models]]\nname = \"Pet\"\nschema = '{\"type\":\"object\",\"required\":[\"name\"]}'";

    #[test]
    fn patterns_run_in_linear_time_and_backtracking_ones_are_refused() {
        for p in [
            r"^(?=.*[A-Z]).{8,}$",
            r"^(\w+)\1$",
            r"^a(?!b)",
            "(a{1000}){1000}",
        ] {
            let schema = serde_json::json!({"type": "string", "pattern": p});
            let e = super::compile_schema(&schema).err().unwrap_or_default();
            assert!(e.contains("look-around and back-references"), "{p}: {e}");
        }
        let schema = serde_json::json!({"pattern": "^(\\w+\\s?)*$"});
        let v = super::compile_schema(&schema).unwrap();
        let long = format!("{}!", "ab ".repeat(20_000));
        let text = format!("{long:?}");
        let doc = crate::syntax::json_doc::Doc::parse(text.as_bytes()).unwrap();
        let t = std::time::Instant::now();
        assert!(!v.is_valid(doc.root()));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn models_compile_and_routes_name_them() {
        let c = parse(
            &format!("{PET}\n[[apis.models]]\nname = \"Tag\"\ncontent_type = \"Application/XML\"\nschema = {{ type = \"string\" }}"),
            "request_validator = \"all\"\nrequest_models = { \"application/json\" = \"Pet\" }\nrequired_parameters = [\"path.id\", \"method.request.header.X-Tenant\"]",
        )
        .unwrap();
        let a = &c.apis[0];
        assert_eq!(a.models[1].content_type, "application/xml");
        let doc = |t: &'static str| crate::syntax::json_doc::Doc::parse(t.as_bytes()).unwrap();
        assert!(a.models[0].validator.is_valid(doc(r#"{"name": 1}"#).root()));
        assert!(!a.models[0].validator.is_valid(doc("{}").root()));
        let v = a.routes[0].validation.as_ref().unwrap();
        assert_eq!(v.models.len(), 1);
        assert_eq!(
            v.required,
            [
                super::RequiredParam::Path(0, "id".into()),
                super::RequiredParam::Header("X-Tenant".into())
            ]
        );
        // Models without a validator check nothing (as Amazon API Gateway).
        let c = parse(PET, "request_models = { \"application/json\" = \"Pet\" }").unwrap();
        assert!(c.apis[0].routes[0].validation.is_none());
    }

    #[test]
    fn bad_models_and_validators_are_refused_by_key() {
        for (models, route, want) in [
            (PET, "request_validator = \"strict\"", "routes[\"POST /m/{id}\"].request_validator = \"strict\" is not valid: expected \"body\", \"params\" or \"all\""),
            (PET, "request_validator = \"body\"\nrequest_models = { \"application/json\" = \"Dog\" }", "request_models.application/json = \"Dog\" is not valid: expected the name of one of the API's [[apis.models]]"),
            (PET, "request_validator = \"params\"\nrequired_parameters = [\"path.nope\"]", "required_parameters[0] = \"path.nope\" is not valid: expected a path variable of the route"),
            (PET, "required_parameters = [\"cookie.x\"]", "required_parameters[0] = \"cookie.x\" is not valid"),
            ("[[apis.models]]\nname = \"Bad\"\nschema = '{\"type\": 5}'", "", "models[\"Bad\"].schema: is not a valid JSON Schema"),
            ("[[apis.models]]\nname = \"Bad\"\nschema = '{not json'", "", "models[\"Bad\"].schema: is not JSON"),
            ("[[apis.models]]\nname = \"Bad\"", "", "models[\"Bad\"].schema: is required"),
            ("[[apis.models]]\nname = \"Remote\"\nschema = '{\"$ref\": \"https://example.test/pet.json\"}'", "", "models[\"Remote\"].schema: is not a valid JSON Schema"),
        ] {
            let err = parse(models, route).expect_err(want);
            assert!(err.contains(want), "{err}\nlacks: {want}");
        }
        // A refused schema is said once, where it is wrong; the routes naming its model are
        // not told the name is unknown.
        let err = parse(
            "[[apis.models]]\nname = \"Bad\"\nschema = '{\"properties\": {\"x\": {\"type\": 5}}}'",
            "request_validator = \"body\"\nrequest_models = { \"application/json\" = \"Bad\" }",
        )
        .unwrap_err();
        assert!(err.contains("(at /properties/x/type)"), "{err}");
        assert!(!err.contains("request_models"), "{err}");
    }
}
