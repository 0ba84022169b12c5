//! A route's `request_parameters` and `response_parameters`: parameter mapping as Amazon API
//! Gateway's HTTP APIs have it, checked at load (reserved headers refused, path variables
//! known, values parsed) and kept as written for export and the admin API.

use super::*;
use crate::syntax::mapping::{parse_key, parse_value, Action, Piece, Source, Target};

/// Headers a mapping may not set or remove: the gateway's and the connection's own (Amazon
/// API Gateway's reserved headers, less its `x-amz*`/`apigw-*` names, plus `host` and
/// `x-request-id`).
const RESERVED: [&str; 20] = [
    "authorization",
    "connection",
    "content-encoding",
    "content-length",
    "content-location",
    "forwarded",
    "host",
    "keep-alive",
    "origin",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];
const RESERVED_PREFIXES: [&str; 4] = ["access-control-", "apigw-", "x-amz-", "x-amzn-"];

fn reserved(name: &str) -> bool {
    RESERVED.contains(&name)
        || name == "x-request-id"
        || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// One mapping: what to do where, with what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOp {
    pub action: Action,
    pub target: Target,
    pub value: Vec<Piece>,
}

impl MapOp {
    /// Its key as written (`append:header.x-a`), for errors.
    fn key(&self) -> String {
        let action = match self.action {
            Action::Append => "append",
            Action::Overwrite => "overwrite",
            Action::Remove => "remove",
        };
        match &self.target {
            Target::Header(n) => format!("{action}:header.{n}"),
            Target::Query(n) => format!("{action}:querystring.{n}"),
            Target::Path => format!("{action}:path"),
            Target::StatusCode => format!("{action}:statuscode"),
        }
    }
}

/// A route's parameter mapping, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamMapping {
    pub request: Vec<MapOp>,
    /// By the integration's status.
    pub response: Vec<(u16, Vec<MapOp>)>,
}

impl ParamMapping {
    /// The response mapping for an integration status.
    pub fn ops_for(&self, status: u16) -> Option<&[MapOp]> {
        self.response
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, ops)| ops.as_slice())
    }

    /// Whether a request op reads the body (which then has to be read first).
    pub fn reads_body(&self) -> bool {
        self.request.iter().any(|o| {
            o.value
                .iter()
                .any(|p| matches!(p, Piece::Src(Source::Body(_))))
        })
    }

    /// Stage variables and what is fixed per route and stage (`$context.stage`, `apiId`,
    /// `routeKey`) substituted.
    pub fn resolve(
        &self,
        vars: &BTreeMap<String, String>,
        fixed: &[(&str, &str)],
    ) -> Result<ParamMapping, String> {
        let ops = |ops: &[MapOp], table: &str| -> Result<Vec<MapOp>, String> {
            ops.iter()
                .map(|o| {
                    let value = o
                        .value
                        .iter()
                        .map(|p| match p {
                            Piece::Src(Source::StageVar(v)) => {
                                vars.get(v).map(|x| Piece::Lit(x.clone())).ok_or_else(|| {
                                    format!(
                                        "{table}.\"{}\": stage variable {v:?} is not defined on this stage",
                                        o.key()
                                    )
                                })
                            }
                            Piece::Src(Source::Context(c)) => Ok(fixed
                                .iter()
                                .find(|(n, _)| n == c)
                                .map(|(_, x)| Piece::Lit(x.to_string()))
                                .unwrap_or_else(|| p.clone())),
                            _ => Ok(p.clone()),
                        })
                        .collect::<Result<_, String>>()?;
                    Ok(MapOp {
                        action: o.action,
                        target: o.target.clone(),
                        value,
                    })
                })
                .collect()
        };
        Ok(ParamMapping {
            request: ops(&self.request, "request_parameters")?,
            response: self
                .response
                .iter()
                .map(|(s, o)| Ok((*s, ops(o, &format!("response_parameters.\"{s}\""))?)))
                .collect::<Result<_, String>>()?,
        })
    }
}

impl Validator {
    /// Checks `request_parameters` and `response_parameters` (keys as in `route`'s table).
    pub(super) fn mapping(
        &mut self,
        rkey: &str,
        request: &BTreeMap<String, String>,
        response: &BTreeMap<String, BTreeMap<String, String>>,
        params: &[String],
    ) -> Option<ParamMapping> {
        let mut m = ParamMapping::default();
        for (k, v) in request {
            if let Some(op) =
                self.map_op(&format!("{rkey}.request_parameters"), k, v, false, params)
            {
                m.request.push(op);
            }
        }
        for (status, ops) in response {
            let skey = format!("{rkey}.response_parameters");
            let Some(code) = status
                .parse::<u16>()
                .ok()
                // 1xx, 204 and 304 answers have no body to frame under another status.
                .filter(|c| (200..=599).contains(c) && *c != 204 && *c != 304)
            else {
                self.bad(
                    &skey,
                    status,
                    "an integration status code from 200 to 599 other than 204 and 304",
                );
                continue;
            };
            let ops = ops
                .iter()
                .filter_map(|(k, v)| self.map_op(&format!("{skey}.{status}"), k, v, true, params))
                .collect();
            m.response.push((code, ops));
        }
        (!m.request.is_empty() || !m.response.is_empty()).then_some(m)
    }

    fn map_op(
        &mut self,
        key: &str,
        k: &str,
        v: &str,
        response: bool,
        params: &[String],
    ) -> Option<MapOp> {
        let (action, target) = match parse_key(k, response) {
            Ok(x) => x,
            Err(allowed) => {
                self.bad(key, k, &allowed);
                return None;
            }
        };
        if let Target::Header(h) = &target {
            // On the upstream request, also the trace context and `Expect` the gateway
            // writes itself (two `traceparent`s make a W3C participant restart the trace).
            let own = !response && matches!(h.as_str(), "traceparent" | "tracestate" | "expect");
            if reserved(h) || own {
                self.bad(
                    key,
                    k,
                    "a header other than the reserved ones (access-control-*, apigw-*, authorization, connection, content-encoding, content-length, content-location, forwarded, host, keep-alive, origin, proxy-authenticate, proxy-authorization, te, trailer(s), transfer-encoding, upgrade, via, x-amz-*, x-amzn-*, x-forwarded-for, x-forwarded-host, x-forwarded-proto, x-request-id; on the request also traceparent, tracestate, expect)",
                );
                return None;
            }
        }
        let vkey = format!("{key}.{k}");
        if action == Action::Remove {
            if !(v.is_empty() || v == "''") {
                self.bad(&vkey, v, "\"\" or \"''\" (remove takes no value)");
            }
            return Some(MapOp {
                action,
                target,
                value: Vec::new(),
            });
        }
        let value = match parse_value(v, response) {
            Ok(p) => p,
            Err(e) => {
                self.err(&vkey, e);
                return None;
            }
        };
        for p in &value {
            if let Piece::Src(Source::PathVar(n)) = p {
                if !params.iter().any(|x| x == n) {
                    self.bad(
                        &vkey,
                        v,
                        &format!("path variables of the route ({})", params.join(", ")),
                    );
                    return None;
                }
            }
        }
        // A path written whole with a `.` or `..` segment (or `\`, which some origins read
        // as `/`) would be refused on every request, blaming the client: refused here.
        if target == Target::Path {
            let literal: String = value
                .iter()
                .map(|p| match p {
                    Piece::Lit(s) => s.as_str(),
                    _ => "x",
                })
                .collect();
            if crate::syntax::path::has_dot_segment(literal.as_bytes()) {
                self.bad(
                    &vkey,
                    v,
                    "a path without `.` or `..` segments (every request would be refused)",
                );
                return None;
            }
        }
        if target == Target::StatusCode {
            // The answer's body goes out with it: no status that cannot carry one.
            let ok = matches!(value.as_slice(), [Piece::Lit(s)] if s.parse::<u16>().is_ok_and(|c| (200..=599).contains(&c) && c != 204 && c != 304));
            if !ok {
                self.bad(&vkey, v, "a status code from 200 to 599 other than 204 and 304 (the integration's body is sent with it)");
                return None;
            }
        }
        Some(MapOp {
            action,
            target,
            value,
        })
    }
}
