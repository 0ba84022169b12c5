//! External (`request` and `token`) authorizers, Amazon's Lambda authorizers called over
//! HTTP: the identity sources are read (401 without them, or when a token does not match the
//! validation expression — no call is made); the node's cache answers for an identity it saw
//! on the same stage within `ttl`; otherwise one request (concurrent ones for the same
//! identity and stage wait for it, whichever shard they are on, and share its decision or its
//! failure, never longer than the authorizer's timeout) POSTs Amazon's authorizer event to the
//! authorizer and reads its decision, which is then evaluated against this request's ARN-like
//! resource.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::super::ctx::{RequestCtx, RouteMatch};
use super::super::policy::{either, head_as_get, route_arn, source_ip};
use crate::auth::external::{Decision, Outcome, Verdict, MAX_ANSWER};
use crate::cache::flight::Join;
use crate::config::IdentityRef;
use crate::error::{Error, Kind};
use crate::shard::ShardSnap;
use crate::snapshot::ExternalRt;

/// Runs the authorizer for this request; the decision that allowed it.
pub(super) async fn authorize(
    ss: &ShardSnap,
    peer: std::net::SocketAddr,
    ctx: &RequestCtx,
    m: RouteMatch,
    x: &ExternalRt,
) -> Result<Arc<Decision>, Error> {
    let ip = source_ip(peer.ip(), ctx, &ss.snap.config.server.trusted_proxies);
    let values = identity_values(ss, ctx, m, x, ip)?;
    if let Some(re) = &x.validation {
        let token = std::str::from_utf8(values.first().map_or(&[][..], |v| &v[..])).unwrap_or("");
        if !re.is_match(token) {
            return Err(Error::downstream(
                Kind::Unidentified,
                format!(
                    "authorizer {:?}: the token does not match identity_validation_expression",
                    x.name
                ),
            ));
        }
    }
    // Built only where it is needed: a call's event, or a policy to evaluate.
    let resource = || route_arn(ss, ctx, m);
    let decision = if x.ttl.is_zero() {
        call(ss, peer, ctx, m, x, &values, &resource(), ip, x.timeout).await?
    } else {
        let key = cache_key(ss, m, &values);
        let hash = x.cache.hash(&key);
        // Whoever waits for the call in flight waits no longer than a call of its own would.
        let deadline = Instant::now() + x.timeout;
        loop {
            if let Some(d) = x.cache.get(hash, &key, Instant::now()) {
                break d;
            }
            match x.cache.flights.join(hash) {
                Join::Follower(f) => match crate::driver::time::timeout_at(deadline, f).await {
                    // The leader's decision, or its failure: one call's answer for all.
                    Ok(Some(result)) => break result?,
                    // The leader's request went away before its call ended: look again
                    // (lead, if nobody else does), within what is left of the timeout.
                    Ok(None) => continue,
                    Err(_) => {
                        return Err(Error::upstream(
                            Kind::AuthorizerFailed { config: false },
                            format!(
                                "authorizer {:?}: no answer within {:?} (waiting for the call in flight)",
                                x.name, x.timeout
                            ),
                        ))
                    }
                },
                Join::Leader(guard) => {
                    // The answer may have landed between the miss and the join.
                    if let Some(d) = x.cache.get(hash, &key, Instant::now()) {
                        break d;
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    let result = call(ss, peer, ctx, m, x, &values, &resource(), ip, left).await;
                    if let Ok(d) = &result {
                        x.cache.insert(hash, &key, d.clone(), x.ttl);
                    }
                    guard.finish(result.clone());
                    break result?;
                }
            }
        }
    };
    let refuse = |msg: &'static str| {
        Err(Error::downstream(
            Kind::AccessDenied(msg),
            format!("authorizer {:?}: {msg}", x.name),
        ))
    };
    let outcome = match decision.verdict {
        Verdict::Simple(true) => Outcome::Allow,
        Verdict::Simple(false) => Outcome::Denied,
        // A policy names resources: evaluated for this request's (a HEAD that a GET route
        // serves under both its names).
        _ => {
            let arn = resource();
            let alias = head_as_get(ss, ctx, m, &arn);
            either(
                decision.evaluate(&arn),
                alias.map(|a| decision.evaluate(&a)),
            )
        }
    };
    match outcome {
        Outcome::Allow => Ok(decision),
        // The resource policy allowed the caller, and the authorizer's policy did not name
        // the resource: admitted (Amazon's Table A).
        Outcome::ImplicitDeny if ctx.policy_allowed => Ok(decision),
        Outcome::Denied => refuse("Forbidden"),
        Outcome::ImplicitDeny => refuse("User is not authorized to access this resource"),
        Outcome::ExplicitDeny => {
            refuse("User is not authorized to access this resource with an explicit deny")
        }
    }
}

/// The cache's key for an identity: the API and stage it was decided for (each stage keeps
/// its own answers, a canary's `prod/Canary` included, as Amazon's authorizer cache belongs
/// to a stage: the event the authorizer decided on named the stage, its variables and its
/// ARN), then the identity sources' values. Each part length-prefixed: no two lists of parts
/// share a key.
fn cache_key(ss: &ShardSnap, m: RouteMatch, values: &[Vec<u8>]) -> Vec<u8> {
    let api = &ss.snap.config.apis[m.api];
    let scope = [api.name.as_bytes(), api.stages[m.stage].name.as_bytes()];
    let parts = scope.into_iter().chain(values.iter().map(|v| &v[..]));
    let mut key = Vec::with_capacity(parts.clone().map(|v| v.len() + 4).sum());
    for v in parts {
        key.extend_from_slice(&(v.len() as u32).to_be_bytes());
        key.extend_from_slice(v);
    }
    key
}

/// The identity sources' values, in order; 401 when one is missing or empty.
fn identity_values(
    ss: &ShardSnap,
    ctx: &RequestCtx,
    m: RouteMatch,
    x: &ExternalRt,
    ip: std::net::IpAddr,
) -> Result<Vec<Vec<u8>>, Error> {
    let api = &ss.snap.config.apis[m.api];
    let mut out = Vec::with_capacity(x.sources.len());
    for s in &x.sources {
        let v: Option<Vec<u8>> = match s {
            IdentityRef::Header(h) => {
                let mut vals = ctx
                    .head
                    .headers()
                    .filter(|(n, _)| crate::http::name_eq(n, h.as_bytes()))
                    .map(|(_, v)| v);
                vals.next().map(|first| {
                    let mut v = first.to_vec();
                    for more in vals {
                        v.push(b',');
                        v.extend_from_slice(more);
                    }
                    v
                })
            }
            IdentityRef::Query(q) => super::query_value(ctx, q),
            IdentityRef::StageVar(name) => api.stages[m.stage]
                .variables
                .get(name)
                .map(|v| v.as_bytes().to_vec()),
            IdentityRef::Context(c) => Some(match c.as_str() {
                "identity.sourceIp" => ip.to_string().into_bytes(),
                "requestId" => ctx.request_id.as_str().as_bytes().to_vec(),
                "stage" => crate::config::stage_of(&api.stages[m.stage].name)
                    .as_bytes()
                    .to_vec(),
                "routeKey" => api.routes[m.route].key.as_bytes().to_vec(),
                _ => ctx.head.method_bytes().to_vec(),
            }),
        };
        match v {
            Some(v) if !v.is_empty() => out.push(v),
            _ => {
                return Err(Error::downstream(
                    Kind::Unidentified,
                    format!("authorizer {:?}: an identity source is missing", x.name),
                ))
            }
        }
    }
    Ok(out)
}

/// One call to the authorizer, within `limit` (its timeout, or what a wait left of it).
#[allow(clippy::too_many_arguments)]
async fn call(
    ss: &ShardSnap,
    peer: std::net::SocketAddr,
    ctx: &RequestCtx,
    m: RouteMatch,
    x: &ExternalRt,
    values: &[Vec<u8>],
    resource: &str,
    ip: std::net::IpAddr,
    limit: std::time::Duration,
) -> Result<Arc<Decision>, Error> {
    let event = if x.token {
        json!({
            "type": "TOKEN",
            "authorizationToken": String::from_utf8_lossy(&values[0]),
            "methodArn": resource,
        })
    } else {
        request_event(ss, ctx, m, values, resource, ip)
    };
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let fail = |config: bool, why: String| {
        // The error names the authorizer and why; the request's failure line carries it,
        // summarised per interval (`server.log_summary_interval`): one line per request
        // here would let a failing authorizer write the log at the request rate.
        tracing::debug!(authorizer = %x.name, reason = %why, "authorizer failed");
        Error::upstream(
            Kind::AuthorizerFailed { config },
            format!("authorizer {:?}: {why}", x.name),
        )
    };
    let start = Instant::now();
    let answer = crate::driver::time::timeout(limit, exchange(ss, peer, ctx, x, body)).await;
    ctx.authorizer_call
        .set(Some(crate::gateway::ctx::AuthorizerCall {
            start,
            end: Instant::now(),
            status: match &answer {
                Ok(Ok((s, _))) => *s,
                _ => 0,
            },
        }));
    let (status, answer) = match answer {
        Err(_) => return Err(fail(false, format!("no answer within {limit:?}"))),
        Ok(Err(e)) => return Err(fail(false, e)),
        Ok(Ok(a)) => a,
    };
    match status {
        200 => Decision::parse(&answer)
            .map(Arc::new)
            .map_err(|e| fail(true, e.to_string())),
        // The authorizer's own "Unauthorized" (a Lambda authorizer's error of that name).
        401 => Err(Error::downstream(
            Kind::Unidentified,
            format!("authorizer {:?} answered 401", x.name),
        )),
        403 => Err(Error::downstream(
            Kind::AccessDenied("Forbidden"),
            format!("authorizer {:?} answered 403", x.name),
        )),
        s => Err(fail(false, format!("answered {s}"))),
    }
}

/// POSTs the event over a pooled connection (a fresh one when a pooled one was stale).
async fn exchange(
    ss: &ShardSnap,
    peer: std::net::SocketAddr,
    ctx: &RequestCtx,
    x: &ExternalRt,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let mut req = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: application/json\r\nuser-agent: tollgate\r\ncontent-length: {}\r\n",
        x.path,
        x.host_header,
        body.len()
    )
    .into_bytes();
    // Traced: the authorizer's parent is the gateway's span for this call.
    if let Some(t) = &ctx.trace {
        if let Some(span) = t.auth_span {
            t.upstream_headers(span, t.sampled.unwrap_or(false), &mut req);
        }
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(&body);
    crate::gateway::call::exchange(ss, &x.dest, ctx, peer, req, MAX_ANSWER).await
}

/// Amazon's `REQUEST` authorizer event, payload format 2.0.
fn request_event(
    ss: &ShardSnap,
    ctx: &RequestCtx,
    m: RouteMatch,
    values: &[Vec<u8>],
    resource: &str,
    ip: std::net::IpAddr,
) -> Value {
    let api = &ss.snap.config.apis[m.api];
    let route = &api.routes[m.route];
    let stage = &api.stages[m.stage];
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (n, v) in ctx.head.headers() {
        let name = text(n).to_ascii_lowercase();
        if name == "cookie" {
            cookies.extend(text(v).split(';').map(|c| Value::from(c.trim())));
            continue;
        }
        match headers.get_mut(&name) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&text(v));
            }
            _ => {
                headers.insert(name, Value::from(text(v)));
            }
        }
    }
    let raw_query = ctx.head.query_bytes().map(text).unwrap_or_default();
    let mut query = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (
            text(&super::percent_decode(k.as_bytes())),
            text(&super::percent_decode(v.as_bytes())),
        );
        match query.get_mut(&k) {
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                query.insert(k, Value::from(v));
            }
        }
    }
    let mut path_params = Map::new();
    for (i, name) in route.params.iter().enumerate() {
        let mut v = String::new();
        ctx.path_var(i, |seg, more| {
            v.push_str(seg);
            if more {
                v.push('/');
            }
        });
        path_params.insert(name.clone(), Value::from(v));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let host = text(ctx.domain_name());
    if ss.snap.apis[m.api].ws.is_some() {
        // A WebSocket API's `$connect`: Amazon's WebSocket REQUEST event (a `methodArn`
        // ending in the route key, the connection's id and event type).
        let mut multi_headers = Map::new();
        for (n, v) in ctx.head.headers() {
            let name = text(n).to_ascii_lowercase();
            if let Value::Array(list) = multi_headers
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                list.push(Value::from(text(v)));
            }
        }
        let (connection_id, event_type) = ctx
            .ws
            .as_ref()
            .map(|(id, ev)| (id.to_string(), *ev))
            .unwrap_or_default();
        let now_ms = now.as_millis() as u64;
        return json!({
            "type": "REQUEST",
            "methodArn": resource,
            "identitySource": values.iter().map(|v| text(v)).collect::<Vec<_>>(),
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": query,
            "stageVariables": stage.variables,
            "requestContext": {
                "routeKey": route.key,
                "eventType": event_type,
                "extendedRequestId": ctx.request_id.as_str(),
                "requestTime": crate::observe::access::clf_time(now_ms),
                "messageDirection": "IN",
                "stage": crate::config::stage_of(&stage.name),
                "connectedAt": now_ms,
                "requestTimeEpoch": now_ms,
                "identity": {
                    "sourceIp": ip.to_string(),
                    "userAgent": ctx.head.header(b"user-agent").map(text).unwrap_or_default(),
                },
                "requestId": ctx.request_id.as_str(),
                "domainName": host,
                "connectionId": connection_id,
                "apiId": api.name,
            },
        });
    }
    let path = text(ctx.head.path_bytes());
    json!({
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": resource,
        "identitySource": values.iter().map(|v| text(v)).collect::<Vec<_>>(),
        "routeKey": route.key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "cookies": cookies,
        "headers": headers,
        "queryStringParameters": query,
        "pathParameters": path_params,
        "stageVariables": stage.variables,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": api.name,
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "http": {
                "method": ctx.head.method_text(),
                "path": path,
                "protocol": ctx.protocol(),
                "sourceIp": ip.to_string(),
                "userAgent": ctx.head.header(b"user-agent").map(text).unwrap_or_default(),
            },
            "requestId": ctx.request_id.as_str(),
            "routeKey": route.key,
            "stage": crate::config::stage_of(&stage.name),
            "time": crate::observe::access::clf_time(now.as_millis() as u64),
            "timeEpoch": now.as_millis() as u64,
        },
    })
}
