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
    /// Matched against the whole status code (`None`: the default response).
    pub pattern: Option<regex::Regex>,
    /// The status answered (`None`: the integration's).
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub templates: Vec<(String, vtl::Template)>,
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
            .find(|r| r.pattern.as_ref().is_some_and(|p| p.is_match(&s)))
            .or_else(|| self.responses.iter().find(|r| r.pattern.is_none()))
    }
}

impl Validator {
    /// Templates by content type, parsed.
    fn templates(
        &mut self,
        key: &str,
        m: BTreeMap<String, String>,
    ) -> Vec<(String, vtl::Template)> {
        m.into_iter()
            .filter_map(|(ct, t)| match vtl::Template::parse(&t) {
                Ok(t) => Some((ct.to_ascii_lowercase(), t)),
                Err(e) => {
                    self.err(&format!("{key}.{ct}"), e);
                    None
                }
            })
            .collect()
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
        let request = self.templates(&format!("{ikey}.request_templates"), request);
        let mut out = Vec::new();
        for (j, r) in responses.into_iter().enumerate() {
            let rkey = format!("{ikey}.responses[{j}]");
            let pattern = match r.selection_pattern.as_deref() {
                None | Some("") => None,
                Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
                    Ok(re) => Some(re),
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
                    let ok = !n.is_empty()
                        && n.bytes().all(crate::syntax::is_tchar)
                        && !v.bytes().any(|b| b == b'\r' || b == b'\n')
                        && !matches!(
                            n.to_ascii_lowercase().as_str(),
                            "content-length" | "transfer-encoding" | "connection" | "x-request-id"
                        );
                    if ok {
                        Some((n.to_ascii_lowercase(), v))
                    } else {
                        self.bad(
                            &format!("{rkey}.headers"),
                            &n,
                            "a header the gateway does not set itself, with a one-line value",
                        );
                        None
                    }
                })
                .collect();
            let templates = self.templates(&format!("{rkey}.templates"), r.templates);
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
