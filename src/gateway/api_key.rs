//! The API key phase: `x-api-key` (or, with `api_key_source = "AUTHORIZER"`, the key an
//! external authorizer named with `usageIdentifierKey`) checked against the key table, and
//! the usage plan that covers the stage chosen.

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
    let presented = presented(ss, ctx, api).map_err(forbidden)?;
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

/// The key the request presents, from the API's `api_key_source`: the one `x-api-key`
/// header, or the `usageIdentifierKey` of the external authorizer that ran for it. `Err` says
/// why there is none.
pub(crate) fn presented<'a>(
    ss: &'a ShardSnap,
    ctx: &'a RequestCtx,
    api: usize,
) -> Result<&'a [u8], &'static str> {
    if ss.snap.apis[api].key_from_authorizer {
        return match &ctx.principal.authorizer {
            Some(Authorized::External(d)) => d
                .usage_key
                .as_deref()
                .map(str::as_bytes)
                .ok_or("the authorizer gave no usageIdentifierKey"),
            _ => Err("no authorizer gave a usageIdentifierKey"),
        };
    }
    if let Some(Authorized::External(d)) = &ctx.principal.authorizer {
        // Before `api_key_source`, an authorizer's key was taken whatever the API said: said
        // once per process, so that an upgraded configuration's 403s have their reason.
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if d.usage_key.is_some() && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(api = %ss.snap.apis[api].name, "an external authorizer named an API key (usageIdentifierKey), which api_key_source = \"HEADER\" (the default) ignores: set api_key_source = \"AUTHORIZER\" on the API to use it, as Amazon's apiKeySource");
        }
    }
    let mut sent = ctx
        .head
        .headers()
        .filter(|(n, _)| crate::http::name_eq(n, b"x-api-key"))
        .map(|(_, v)| v);
    let first = sent.next().ok_or("no x-api-key")?;
    // Two keys: the upstream, which gets both, might read the one not checked (as Amazon
    // merges them, `a,b` names no key).
    if sent.next().is_some() {
        return Err("x-api-key given more than once");
    }
    Ok(first)
}
