//! The resource-policy phase: who may call an API at all, by source address, before any
//! authorizer (DESIGN.md's order). The source address is the peer's, or — when the peer is a
//! trusted proxy (`server.trusted_proxies`) — the rightmost `X-Forwarded-For` hop that is not
//! one: entries to its left are whatever the client wrote and cannot be trusted. When every hop
//! is a trusted address, the leftmost (the caller inside the trusted range), as nginx's
//! `real_ip_recursive` takes it.

use std::net::IpAddr;

use super::ctx::{RequestCtx, RouteMatch};
use crate::auth::external::Outcome;
use crate::config::{PolicyVerdict, ResourcePolicy};
use crate::error::{Error, Kind};
use crate::shard::ShardSnap;
use crate::syntax::cidr::Cidr;

/// The caller's address as the policy sees it.
pub(crate) fn source_ip(peer: IpAddr, ctx: &RequestCtx, trusted: &[Cidr]) -> IpAddr {
    if !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    let hops: Vec<&[u8]> = ctx
        .head
        .headers()
        .filter(|(n, _)| crate::http::name_eq(n, b"x-forwarded-for"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .collect();
    // The last address a trusted hop vouched for.
    let mut last = peer;
    for hop in hops.iter().rev() {
        let Ok(s) = std::str::from_utf8(hop).map(str::trim) else {
            return last;
        };
        // An empty entry (`203.0.113.5,`) is none.
        if s.is_empty() {
            continue;
        }
        // An address, or one with its port (`192.0.2.1:5555`, `[2001:db8::1]:5555`, as some
        // load balancers write them), or a bracketed IPv6 one (`[2001:db8::1]`).
        let Some(ip) = s
            .parse::<IpAddr>()
            .ok()
            .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        else {
            // Not an address: nothing to its left is vouched for.
            return last;
        };
        if !trusted.iter().any(|c| c.contains(ip)) {
            return ip;
        }
        last = ip;
    }
    last
}

/// The resource-policy phase, as Amazon's authorization workflow runs it: on a route with
/// IAM or an external (Lambda-style) authorizer only an explicit deny refuses here, and what
/// the policy said is kept for the authorizer (either allowing admits, as Table A of
/// Amazon's policy evaluation has it for a caller of the API's own account); on other routes
/// (none, API keys, JWT) the policy must allow.
pub(crate) fn phase(
    ss: &ShardSnap,
    peer: IpAddr,
    ctx: &mut RequestCtx,
    m: RouteMatch,
) -> Result<(), Error> {
    let Some(p) = &ss.snap.config.apis[m.api].resource_policy else {
        return Ok(());
    };
    let api = &ss.snap.apis[m.api];
    let r = &api.routes[m.route];
    let two_phase = r.iam
        || r.auth.as_ref().is_some_and(|a| {
            matches!(
                api.authorizers[a.authorizer],
                crate::snapshot::AuthorizerRt::External(_)
            )
        });
    ctx.policy_allowed = check(ss, peer, ctx, m, p, two_phase)?;
    Ok(())
}

/// Refuses the request when the API's resource policy does not allow its source address
/// (with `lenient`, only when it denies it explicitly). Whether it allowed it.
fn check(
    ss: &ShardSnap,
    peer: IpAddr,
    ctx: &RequestCtx,
    m: RouteMatch,
    policy: &ResourcePolicy,
    lenient: bool,
) -> Result<bool, Error> {
    let snap = &ss.snap;
    let ip = source_ip(peer, ctx, &snap.config.server.trusted_proxies);
    let explicit = match policy.evaluate(ip) {
        PolicyVerdict::Allow => return Ok(true),
        PolicyVerdict::ImplicitDeny if lenient => return Ok(false),
        PolicyVerdict::ImplicitDeny => false,
        PolicyVerdict::ExplicitDeny => true,
    };
    Err(Error::downstream(
        Kind::PolicyDenied {
            explicit,
            resource: route_arn(ss, ctx, m).into(),
        },
        "resource policy",
    ))
}

/// What a request calls, as Amazon names it in policies:
/// `arn:aws:execute-api:local:000000000000:API/STAGE/METHOD/PATH`. The path is the one the
/// route matched — decoded, empty segments merged, after the base path — so that no spelling
/// of a path (`%73ecret`, `//secret`) escapes a policy that names it.
///
/// A WebSocket API's routes are keys, not paths: `API/STAGE/$connect` (Amazon's `methodArn`
/// for `$connect` has no method).
pub(crate) fn route_arn(ss: &ShardSnap, ctx: &RequestCtx, m: RouteMatch) -> String {
    let api = &ss.snap.apis[m.api];
    if api.ws.is_some() {
        return format!(
            "arn:aws:execute-api:local:000000000000:{}/{}/{}",
            api.name,
            crate::config::stage_of(&api.stages[m.stage]),
            ss.snap.config.apis[m.api].routes[m.route].key
        );
    }
    let base = ctx.stage.map_or(0, |s| s.base_len);
    // The method as sent, upper-cased: `get` on an `ANY` route must not pass a Deny on
    // `GET/...` (a backend may take it for GET), and an extension method (`PROPFIND`) is
    // named as itself.
    let mut arn = format!(
        "arn:aws:execute-api:local:000000000000:{}/{}/",
        api.name,
        crate::config::stage_of(&api.stages[m.stage]),
    );
    // A method is a token (ASCII), as the parser checked.
    arn.extend(
        ctx.head
            .method_bytes()
            .iter()
            .map(|b| b.to_ascii_uppercase() as char),
    );
    arn.push('/');
    for (i, seg) in ctx.segs.iter().skip(base).enumerate() {
        if i > 0 {
            arn.push('/');
        }
        arn.push_str(seg);
    }
    arn
}

/// A HEAD that a GET route serves runs that route's integration: policies judge it under
/// both names, `HEAD/...` (as Amazon names it) and `GET/...` (the route's), so that a Deny
/// on either holds and an Allow on either covers it. The `GET/...` name of `arn`, for such a
/// request; `None` otherwise.
pub(crate) fn head_as_get(
    ss: &ShardSnap,
    ctx: &RequestCtx,
    m: RouteMatch,
    arn: &str,
) -> Option<String> {
    if ctx.head.method_bytes() != b"HEAD"
        || !ss.snap.config.apis[m.api].routes[m.route]
            .key
            .starts_with("GET ")
    {
        return None;
    }
    let api = &ss.snap.apis[m.api];
    let at = "arn:aws:execute-api:local:000000000000:".len()
        + api.name.len()
        + 1
        + crate::config::stage_of(&api.stages[m.stage]).len()
        + 1;
    (arn.get(at..at + 4) == Some("HEAD")).then(|| format!("{}GET{}", &arn[..at], &arn[at + 4..]))
}

/// A policy's outcome for a request judged under two names (see [`head_as_get`]): a Deny of
/// either refuses, an Allow of either (and no Deny) admits.
pub(crate) fn either(a: Outcome, b: Option<Outcome>) -> Outcome {
    match (a, b) {
        (_, None) => a,
        (Outcome::ExplicitDeny, _) | (_, Some(Outcome::ExplicitDeny)) => Outcome::ExplicitDeny,
        (Outcome::Allow, _) | (_, Some(Outcome::Allow)) => Outcome::Allow,
        _ => a,
    }
}
