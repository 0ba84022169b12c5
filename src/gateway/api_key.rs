//! The API key phase: `x-api-key` (or the key an external authorizer named with
//! `usageIdentifierKey`) checked against the key table, and the usage plan that covers the
//! stage chosen.

use super::ctx::{ApiKeyUse, Authorized, RequestCtx, RouteMatch};
use crate::error::{Error, Kind};
use crate::shard::ShardSnap;

/// Checks the API key on routes with `api_key_required` (403 when it is missing, unknown or
/// disabled, or when none of the key's plans covers this stage); sets `ctx.principal` to the
/// key and its plan.
pub(crate) fn authenticate(
    ss: &ShardSnap,
    ctx: &mut RequestCtx,
    m: RouteMatch,
) -> Result<(), Error> {
    let RouteMatch { api, route, .. } = m;
    if !ss.snap.apis[api].routes[route].api_key_required {
        return Ok(());
    }
    let forbidden = |why: &'static str| Error::downstream(Kind::Forbidden, why);
    let stage = ctx.stage.map(|s| s.stage).unwrap_or_default();
    // An external authorizer's usageIdentifierKey names the key, where it gives one.
    let from_authorizer = match &ctx.principal.authorizer {
        Some(Authorized::External(d)) => d.usage_key.as_deref().map(str::as_bytes),
        _ => None,
    };
    let presented = match from_authorizer {
        Some(k) => k,
        None => {
            let mut sent = ctx
                .head
                .headers()
                .filter(|(n, _)| crate::http::name_eq(n, b"x-api-key"))
                .map(|(_, v)| v);
            let first = sent.next().ok_or_else(|| forbidden("no x-api-key"))?;
            // Two keys: the upstream, which gets both, might read the one not checked (as
            // Amazon merges them, `a,b` names no key).
            if sent.next().is_some() {
                return Err(forbidden("x-api-key given more than once"));
            }
            first
        }
    };
    let key = ss
        .snap
        .keys
        .find(presented)
        .ok_or_else(|| forbidden("unknown API key"))?;
    if !key.enabled {
        return Err(forbidden("disabled API key"));
    }
    let plan = key
        .plans
        .iter()
        .copied()
        .find(|&p| {
            ss.snap
                .plans
                .get(p)
                .is_some_and(|pl| pl.stages.contains(&(api, stage)))
        })
        .ok_or_else(|| forbidden("the key's plans do not cover this stage"))?;
    ctx.principal.api_key = Some(ApiKeyUse {
        id: key.id.clone(),
        plan,
    });
    Ok(())
}
