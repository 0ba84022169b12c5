//! `gateway_responses = { TYPE = { status, headers, body } }` on an API: Amazon API Gateway's
//! gateway responses, which customise the answers the gateway writes itself (errors) by
//! response type, with `DEFAULT_4XX` and `DEFAULT_5XX` for the types not named.

use super::*;
use crate::syntax::refs::RefTemplate;

/// The response types, as Amazon API Gateway names them.
pub(crate) const RESPONSE_TYPES: [&str; 21] = [
    "ACCESS_DENIED",
    "API_CONFIGURATION_ERROR",
    "AUTHORIZER_CONFIGURATION_ERROR",
    "AUTHORIZER_FAILURE",
    "BAD_REQUEST_PARAMETERS",
    "BAD_REQUEST_BODY",
    "DEFAULT_4XX",
    "DEFAULT_5XX",
    "EXPIRED_TOKEN",
    "INTEGRATION_FAILURE",
    "INTEGRATION_TIMEOUT",
    "INVALID_API_KEY",
    "INVALID_SIGNATURE",
    "MISSING_AUTHENTICATION_TOKEN",
    "QUOTA_EXCEEDED",
    "REQUEST_TOO_LARGE",
    "RESOURCE_NOT_FOUND",
    "THROTTLED",
    "UNAUTHORIZED",
    "UNSUPPORTED_MEDIA_TYPE",
    "WAF_FILTERED",
];

/// Headers an answer the gateway writes (a gateway response, an integration response, a
/// mock) may not set: the gateway's framing and its own. Two Content-Lengths, or
/// Transfer-Encoding beside one, are a framing error to whatever reads the answer (RFC 9112
/// 6.3).
const RESERVED: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "x-request-id",
];

/// One customised gateway response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GatewayResponse {
    /// The status answered instead of the error's own.
    pub status: Option<u16>,
    /// Headers set on the answer (replacing the gateway's of the same name), as written.
    pub headers: Vec<(String, String)>,
    /// The body template, as written; `None`: the gateway's `{"message": ...}`.
    pub body: Option<String>,
    #[serde(skip)]
    pub header_templates: Vec<(String, RefTemplate)>,
    #[serde(skip)]
    pub body_template: Option<RefTemplate>,
}

impl Validator {
    /// Refuses `name` (under `key`) when it is one of the headers the gateway writes itself
    /// ([`RESERVED`]); true when refused.
    pub(super) fn framing_header(&mut self, key: &str, name: &str) -> bool {
        let reserved = RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name));
        if reserved {
            self.bad(
                key,
                name,
                "a header other than the gateway's own (Content-Length, Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer, X-Request-Id)",
            );
        }
        reserved
    }

    /// Refuses `name` (under `key`) when it is one of the headers the gateway writes itself
    /// on an upstream request: its framing, `Host`, `Expect`, the `X-Forwarded-*` fields and
    /// the trace context (set as well, the upstream would get two, or conflicting framing; two
    /// `traceparent`s make a W3C participant start a new trace); true when refused.
    pub(super) fn request_framing_header(&mut self, key: &str, name: &str) -> bool {
        const OWN: [&str; 8] = [
            "host",
            "expect",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "traceparent",
            "tracestate",
            "x-amzn-trace-id",
        ];
        let refused = RESERVED
            .iter()
            .chain(&OWN)
            .any(|r| r.eq_ignore_ascii_case(name));
        if refused {
            self.bad(
                key,
                name,
                "a header other than those the gateway writes itself (Content-Length, Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer, X-Request-Id, Host, Expect, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, traceparent, tracestate, X-Amzn-Trace-Id)",
            );
        }
        refused
    }

    pub(super) fn gateway_responses(
        &mut self,
        key: &str,
        map: BTreeMap<String, file::GatewayResponseFile>,
    ) -> BTreeMap<String, GatewayResponse> {
        let mut out = BTreeMap::new();
        for (ty, r) in map {
            let rkey = format!("{key}.{ty}");
            if !RESPONSE_TYPES.contains(&ty.as_str()) {
                self.bad(
                    key,
                    &ty,
                    &format!("a response type: {}", RESPONSE_TYPES.join(", ")),
                );
                continue;
            }
            let status = match r.status {
                None => None,
                Some(s) if (200..=599).contains(&s) && s != 204 && s != 304 => Some(s as u16),
                Some(s) => {
                    self.bad(
                        &format!("{rkey}.status"),
                        s,
                        "a status from 200 to 599 other than 204 and 304 (the answer has a body)",
                    );
                    None
                }
            };
            let mut headers = Vec::new();
            let mut header_templates = Vec::new();
            for (name, value) in r.headers {
                let lower = name.to_ascii_lowercase();
                if name.is_empty() || !name.bytes().all(crate::syntax::is_tchar) {
                    self.bad(&format!("{rkey}.headers"), &name, "a header name");
                    continue;
                }
                if self.framing_header(&format!("{rkey}.headers"), &name) {
                    continue;
                }
                // As an integration's headers: a line break would be dropped from the answer
                // (or, kept, split the head).
                if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                    self.bad(
                        &format!("{rkey}.headers.{name}"),
                        &value,
                        "a value without control characters (CR, LF, NUL and the rest; a tab is allowed: RFC 9110 5.5)",
                    );
                    continue;
                }
                match RefTemplate::parse(&value) {
                    Ok(t) => header_templates.push((lower.clone(), t)),
                    Err(e) => {
                        self.err(&format!("{rkey}.headers.{name}"), e);
                        continue;
                    }
                }
                headers.push((lower, value));
            }
            let body_template = r.body.as_deref().and_then(|b| match RefTemplate::parse(b) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.err(&format!("{rkey}.body"), e);
                    None
                }
            });
            out.insert(
                ty,
                GatewayResponse {
                    status,
                    headers,
                    body: r.body,
                    header_templates,
                    body_template,
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(responses: &str) -> Result<Config, String> {
        let text = format!(
            r#"
[[listeners]]
name = "http"
addr = "127.0.0.1:0"
[[apis]]
name = "a"
gateway_responses = {responses}
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "GET /m"
  integration = {{ type = "mock" }}
[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "a", stage = "p" }}]
"#
        );
        Config::parse(&text, Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_reference_shape_loads() {
        let c = parse(r#"{ THROTTLED = { status = 429, headers = { "retry-after" = "1" }, body = '{"error":"slow down","requestId":"$context.requestId"}' } }"#).unwrap();
        let r = &c.apis[0].gateway_responses["THROTTLED"];
        assert_eq!(r.status, Some(429));
        assert_eq!(r.headers, [("retry-after".to_string(), "1".to_string())]);
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        for (text, want) in [
            ("{ SLOW = { status = 429 } }", "apis[\"a\"].gateway_responses = \"SLOW\" is not valid: expected a response type"),
            ("{ THROTTLED = { status = 600 } }", "apis[\"a\"].gateway_responses.THROTTLED.status = 600 is not valid"),
            ("{ DEFAULT_4XX = { headers = { \"content-length\" = \"1\" } } }", "gateway_responses.DEFAULT_4XX.headers = \"content-length\" is not valid"),
            ("{ DEFAULT_4XX = { headers = { \"x-a\" = \"a\\r\\nx: b\" } } }", "gateway_responses.DEFAULT_4XX.headers.x-a = \"a\\r\\nx: b\" is not valid: expected a value without control characters (CR, LF, NUL and the rest; a tab is allowed: RFC 9110 5.5)"),
            ("{ DEFAULT_4XX = { body = '$context.nope' } }", "gateway_responses.DEFAULT_4XX.body: $context.nope is not a variable gateway responses have"),
            ("{ DEFAULT_4XX = { statusCode = 400 } }", "statusCode"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{err}\nlacks: {want}");
        }
    }
}
