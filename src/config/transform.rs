//! An integration's mapping templates (REST APIs): `request_templates` by content type with
//! `passthrough_behavior`, and integration `responses` chosen by a regex on the integration's
//! status, each with its status, headers and response templates. Templates are Velocity
//! ([`crate::syntax::vtl`]), parsed once at load.

use std::sync::Arc;

use super::*;
use crate::syntax::vtl;

/// What happens to a request whose content type has no template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Passthrough {
    /// Passed on as it is (Amazon's default).
    WhenNoMatch,
    /// Passed on only if the integration has no request template at all; else 415.
    WhenNoTemplates,
    /// 415.
    Never,
}

/// One integration response.
#[derive(Debug, Clone)]
pub struct IntegrationResponse {
    /// Matched against the whole status code (`None`: the default response), and its text.
    pub pattern: Option<(regex::Regex, String)>,
    /// The status answered (`None`: the integration's).
    pub status: Option<u16>,
    pub headers: Vec<(String, HeaderSource)>,
    pub templates: Vec<(String, vtl::Template)>,
}

/// Where an integration response's header value comes from (Amazon API Gateway's
/// `responseParameters` expressions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderSource {
    /// `'text'`, or text that is none of the below.
    Static(String),
    /// `integration.response.header.NAME`: the integration's first value of that header.
    Header(String),
    /// `integration.response.multivalueheader.NAME`: all its values, comma-separated.
    MultiHeader(String),
    /// `integration.response.body` (the whole body), `integration.response.body.a.b` or
    /// `...body[0].a` (the JSONPath `$.a.b`, `$[0].a` into it: a string as it is, anything else
    /// as JSON text).
    Body(Option<String>),
    /// `stageVariables.NAME`.
    StageVariable(String),
    /// `context.NAME` (`requestId`, `stage`, `identity.sourceIp`, ...).
    Context(String),
}

impl HeaderSource {
    fn parse(v: &str) -> Result<HeaderSource, String> {
        let name = |n: &str, what: &str| -> Result<String, String> {
            if !n.is_empty() && n.bytes().all(crate::syntax::is_tchar) {
                Ok(n.to_ascii_lowercase())
            } else {
                Err(format!("{what} names no header"))
            }
        };
        Ok(
            if let Some(n) = v.strip_prefix("integration.response.header.") {
                HeaderSource::Header(name(n, "integration.response.header.")?)
            } else if let Some(n) = v.strip_prefix("integration.response.multivalueheader.") {
                HeaderSource::MultiHeader(name(n, "integration.response.multivalueheader.")?)
            } else if v == "integration.response.body" {
                HeaderSource::Body(None)
            } else if let Some(p) = v
                .strip_prefix("integration.response.body")
                .filter(|p| p.starts_with('.') || p.starts_with('['))
            {
                let path = format!("${p}");
                vtl::select(&serde_json::Value::Null, &path)?;
                HeaderSource::Body(Some(path))
            } else if let Some(n) = v.strip_prefix("stageVariables.") {
                HeaderSource::StageVariable(n.to_string())
            } else if let Some(n) = v.strip_prefix("context.").filter(|n| !n.is_empty()) {
                HeaderSource::Context(n.to_string())
            } else if let Some(t) = v.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
                HeaderSource::Static(t.to_string())
            } else {
                HeaderSource::Static(v.to_string())
            },
        )
    }

    /// The expression in Amazon API Gateway's words (`responseParameters`).
    pub fn source(&self) -> String {
        match self {
            HeaderSource::Static(t) => format!("'{t}'"),
            HeaderSource::Header(n) => format!("integration.response.header.{n}"),
            HeaderSource::MultiHeader(n) => format!("integration.response.multivalueheader.{n}"),
            HeaderSource::Body(None) => "integration.response.body".into(),
            HeaderSource::Body(Some(p)) => format!(
                "integration.response.body{}",
                p.strip_prefix('$').unwrap_or(p)
            ),
            HeaderSource::StageVariable(n) => format!("stageVariables.{n}"),
            HeaderSource::Context(n) => format!("context.{n}"),
        }
    }
}

/// An integration's templates, checked.
#[derive(Debug, Clone)]
pub struct Transform {
    pub request: Vec<(String, vtl::Template)>,
    pub passthrough: Passthrough,
    pub responses: Vec<IntegrationResponse>,
}

impl Transform {
    /// The response for an integration status: the first whose pattern matches, else the
    /// default one.
    pub fn response_for(&self, status: u16) -> Option<&IntegrationResponse> {
        let s = status.to_string();
        self.responses
            .iter()
            .find(|r| r.pattern.as_ref().is_some_and(|(p, _)| p.is_match(&s)))
            .or_else(|| self.responses.iter().find(|r| r.pattern.is_none()))
    }
}

/// Whether a key is a bare media type, `type/subtype` (how templates and models are chosen:
/// by the request's or the answer's type, without case and without its parameters).
/// A wildcard (`*/*`, `text/*`) is none: it is compared as written, so it would only ever
/// match a client that sends `Content-Type: */*`.
pub(super) fn is_media_type(ct: &str) -> bool {
    let token = |s: &str| !s.is_empty() && s != "*" && s.bytes().all(crate::syntax::is_tchar);
    ct.split_once('/')
        .is_some_and(|(a, b)| token(a) && token(b))
}

/// What a key that is not one gets.
pub(super) const NOT_A_MEDIA_TYPE: &str = "is not a media type: expected \"type/subtype\" (\"application/json\", \"text/plain\"), without parameters or wildcards";

impl Validator {
    /// Templates by content type, parsed. A key is a media type (`type/subtype`, compared
    /// without case and without parameters to the request's or the answer's): any other key
    /// would never be chosen.
    fn templates(
        &mut self,
        key: &str,
        m: BTreeMap<String, String>,
        response: bool,
    ) -> Vec<(String, vtl::Template)> {
        let mut out = Vec::with_capacity(m.len());
        for (ct, t) in &m {
            if let Some(other) = m.keys().find(|o| *o < ct && o.eq_ignore_ascii_case(ct)) {
                // Media types are matched without case: one of the two would never be used.
                self.err(
                    &format!("{key}.{ct}"),
                    format!("is {other:?} again (media types match without regard to case)"),
                );
                continue;
            }
            if !is_media_type(ct) {
                self.err(&format!("{key}.{ct}"), NOT_A_MEDIA_TYPE);
                continue;
            }
            match vtl::Template::parse(t) {
                // What a template overrides is its own side's: a request template has no
                // answer yet, a response template's request has gone.
                Ok(t) if !response && t.overrides(vtl::OVERRIDES_RESPONSE) => self.err(
                    &format!("{key}.{ct}"),
                    "sets $context.responseOverride: only a response template (integration responses' templates) has an answer to override",
                ),
                Ok(t) if response && t.overrides(vtl::OVERRIDES_REQUEST) => self.err(
                    &format!("{key}.{ct}"),
                    "sets $context.requestOverride: only a request template has a request to override",
                ),
                Ok(t) => {
                    // Headers the gateway writes itself are not a template's to set.
                    let own = t.overridden_headers().any(|n| {
                        let k = format!("{key}.{ct}: $context override of header");
                        if response {
                            self.framing_header(&k, n)
                        } else {
                            self.request_framing_header(&k, n)
                        }
                    });
                    if !own {
                        out.push((ct.to_ascii_lowercase(), t));
                    }
                }
                Err(e) => self.err(&format!("{key}.{ct}"), e),
            }
        }
        out
    }

    /// A request template's path override names one of the route's path variables.
    pub(super) fn path_overrides(&mut self, ikey: &str, t: Option<&Transform>, params: &[String]) {
        for (ct, t) in t.iter().flat_map(|t| &t.request) {
            for n in t.overridden_paths() {
                if !params.iter().any(|p| p == n) {
                    self.err(
                        &format!("{ikey}.request_templates.{ct}"),
                        format!(
                            "sets $context.requestOverride.path.{n}, which is no path variable of the route (it has: {})",
                            params.join(", ")
                        ),
                    );
                }
            }
        }
    }

    pub(super) fn transform(
        &mut self,
        ikey: &str,
        request: BTreeMap<String, String>,
        passthrough: Option<String>,
        responses: Vec<file::IntegrationResponseFile>,
    ) -> Option<Arc<Transform>> {
        let passthrough = match passthrough.as_deref() {
            None | Some("when_no_match") => Passthrough::WhenNoMatch,
            Some("when_no_templates") => Passthrough::WhenNoTemplates,
            Some("never") => Passthrough::Never,
            Some(other) => {
                self.bad(
                    &format!("{ikey}.passthrough_behavior"),
                    other,
                    "\"when_no_match\", \"when_no_templates\" or \"never\"",
                );
                Passthrough::WhenNoMatch
            }
        };
        let request = self.templates(&format!("{ikey}.request_templates"), request, false);
        let mut out = Vec::new();
        for (j, r) in responses.into_iter().enumerate() {
            let rkey = format!("{ikey}.responses[{j}]");
            let pattern = match r.selection_pattern.as_deref() {
                None | Some("") => None,
                Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
                    Ok(re) => Some((re, p.to_string())),
                    Err(e) => {
                        self.bad(
                            &format!("{rkey}.selection_pattern"),
                            p,
                            &format!("a regular expression ({e})"),
                        );
                        continue;
                    }
                },
            };
            let status = match r.status {
                None => None,
                Some(s) if (200..=599).contains(&s) && s != 204 && s != 304 => Some(s as u16),
                Some(s) => {
                    self.bad(
                        &format!("{rkey}.status"),
                        s,
                        "a status from 200 to 599 other than 204 and 304",
                    );
                    None
                }
            };
            let headers = r
                .headers
                .into_iter()
                .filter_map(|(n, v)| {
                    if self.framing_header(&format!("{rkey}.headers"), &n) {
                        return None;
                    }
                    let ok = !n.is_empty()
                        && n.bytes().all(crate::syntax::is_tchar)
                        && !v.bytes().any(|b| b == b'\r' || b == b'\n');
                    if !ok {
                        self.bad(
                            &format!("{rkey}.headers"),
                            &n,
                            "a header the gateway does not set itself, with a one-line value",
                        );
                        return None;
                    }
                    match HeaderSource::parse(&v) {
                        Ok(src) => Some((n.to_ascii_lowercase(), src)),
                        Err(e) => {
                            self.bad(&format!("{rkey}.headers.{n}"), &v, &format!("a static value or an integration.response.header/body, stageVariables or context expression ({e})"));
                            None
                        }
                    }
                })
                .collect();
            let templates = self.templates(&format!("{rkey}.templates"), r.templates, true);
            out.push(IntegrationResponse {
                pattern,
                status,
                headers,
                templates,
            });
        }
        if out.iter().filter(|r| r.pattern.is_none()).count() > 1 {
            self.err(
                &format!("{ikey}.responses"),
                "has two default responses (without selection_pattern)",
            );
        }
        (!request.is_empty() || !out.is_empty() || passthrough != Passthrough::WhenNoMatch).then(
            || {
                Arc::new(Transform {
                    request,
                    passthrough,
                    responses: out,
                })
            },
        )
    }
}
