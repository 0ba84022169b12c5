//! Gateway responses: an API's `gateway_responses` applied to the answers the gateway writes
//! itself, in the one exit. The error's response type picks the entry; `DEFAULT_4XX` or
//! `DEFAULT_5XX` stands in for types not named. APIs without them pay one branch.

use super::ctx::RequestCtx;
use crate::config::GatewayResponse;
use crate::error::Error;
use crate::http::write::Answer;
use crate::shard::ShardSnap;
use crate::syntax::refs::Ref;

/// The API's gateway response for this error, if it has one.
fn entry<'a>(ss: &'a ShardSnap, ctx: &RequestCtx, e: &Error) -> Option<&'a GatewayResponse> {
    let st = ctx.stage?;
    let map = &ss.snap.config.apis.get(st.api)?.gateway_responses;
    if map.is_empty() {
        return None;
    }
    map.get(e.kind.response_type()).or_else(|| {
        map.get(if e.status() >= 500 {
            "DEFAULT_5XX"
        } else {
            "DEFAULT_4XX"
        })
    })
}

/// Customises `a`, the gateway's answer to `e`, by the API's gateway responses.
pub(crate) fn customise(
    ss: &ShardSnap,
    ctx: &RequestCtx,
    peer_ip: &str,
    e: &Error,
    a: &mut Answer,
) {
    let Some(g) = entry(ss, ctx, e) else { return };
    let message = e.client_message();
    let value = |r: &Ref, out: &mut Vec<u8>| {
        let st = ctx.stage;
        match r {
            Ref::ErrorMessage => out.extend_from_slice(message.as_bytes()),
            Ref::ErrorMessageString => out.extend_from_slice(
                serde_json::to_string(&*message)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            Ref::ErrorResponseType => out.extend_from_slice(e.kind.response_type().as_bytes()),
            Ref::ValidationError => {
                // Escaped for a JSON string (its quotes as \"), as Amazon API Gateway's is.
                if let Some(v) = e.validation_error() {
                    let quoted = serde_json::to_string(&*v).unwrap_or_default();
                    out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
                }
            }
            Ref::RequestId => out.extend_from_slice(ctx.request_id.as_bytes()),
            Ref::Stage => {
                if let Some(s) = st.and_then(|s| ss.snap.apis[s.api].stages.get(s.stage)) {
                    out.extend_from_slice(crate::config::stage_of(s).as_bytes());
                }
            }
            Ref::ApiId => {
                if let Some(s) = st {
                    out.extend_from_slice(ss.snap.apis[s.api].name.as_bytes());
                }
            }
            Ref::DomainName => out.extend_from_slice(ctx.domain_name()),
            Ref::HttpMethod => out.extend_from_slice(ctx.head.method_bytes()),
            Ref::Path => out.extend_from_slice(ctx.head.path_bytes()),
            Ref::RouteKey => {
                if let Some(m) = ctx.route {
                    out.extend_from_slice(
                        ss.snap.config.apis[m.api].routes[m.route].key.as_bytes(),
                    );
                }
            }
            Ref::ResourcePath => {
                if let Some(m) = ctx.route {
                    let key = &ss.snap.config.apis[m.api].routes[m.route].key;
                    out.extend_from_slice(resource_path(key).as_bytes());
                }
            }
            Ref::SourceIp => out.extend_from_slice(ctx.source_ip(peer_ip).as_bytes()),
            Ref::UserAgent => {
                out.extend_from_slice(ctx.head.header(b"user-agent").unwrap_or_default())
            }
            Ref::Protocol => out.extend_from_slice(ctx.protocol().as_bytes()),
            Ref::StageVar(v) => {
                if let Some(s) = st {
                    if let Some(x) = ss.snap.config.apis[s.api]
                        .stages
                        .get(s.stage)
                        .and_then(|stage| stage.variables.get(v))
                    {
                        out.extend_from_slice(x.as_bytes());
                    }
                }
            }
        }
    };
    if let Some(s) = g.status {
        a.status = s;
    }
    if !g.header_templates.is_empty() {
        // The gateway's own lines (Retry-After, Allow...) give way to configured ones; a
        // configured `RateLimit-*` field stands for the route's (the gateway adds none).
        let own_ratelimit = g
            .header_templates
            .iter()
            .any(|(n, _)| super::finish::is_ratelimit_field(n.as_bytes()));
        if own_ratelimit {
            a.ratelimit = false;
        }
        fn field(l: &[u8]) -> Option<&[u8]> {
            l.iter().position(|&b| b == b':').map(|i| &l[..i])
        }
        let mut headers: Vec<u8> = a
            .headers
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| {
                let configured = g.header_templates.iter().any(|(n, _)| {
                    l.len() > n.len()
                        && l[n.len()] == b':'
                        && l[..n.len()].eq_ignore_ascii_case(n.as_bytes())
                });
                let replaced =
                    own_ratelimit && field(l).is_some_and(super::finish::is_ratelimit_field);
                !configured && !replaced
            })
            .flatten()
            .copied()
            .collect();
        for (name, t) in &g.header_templates {
            headers.extend_from_slice(name.as_bytes());
            headers.extend_from_slice(b": ");
            let at = headers.len();
            t.render(&mut headers, value);
            // A header value cannot hold a control byte (a line break, DEL), whatever the
            // request said.
            let mut clean: Vec<u8> = headers.split_off(at);
            clean.retain(|&b| crate::http::is_value_byte(b));
            headers.extend_from_slice(&clean);
            headers.extend_from_slice(b"\r\n");
            if name == "content-type" {
                a.content_type = None;
            }
        }
        a.headers = headers;
    }
    if let Some(t) = &g.body_template {
        let mut body = Vec::with_capacity(a.body.len() + 64);
        t.render(&mut body, value);
        a.body = body;
    }
}

/// `$context.resourcePath`: a route key's path template (`GET /pets/{id}` → `/pets/{id}`;
/// `$default` as it is).
pub(crate) fn resource_path(key: &str) -> &str {
    key.split_once(' ').map_or(key, |(_, p)| p)
}
