//! The authorizer phase: on routes with an authorizer, after the resource policy and before
//! the API key. External (`request`, `token`) authorizers are in [`external`], SigV4-signed
//! callers (`authorization = "aws_iam"`) in [`iam`]. A JWT authorizer reads the token from its identity source (401 without one),
//! finds it in the shard's token cache or verifies it against the issuer's keys in the
//! snapshot (asking the control plane for fresh keys when the token names a key the snapshot
//! lacks), and checks the route's scopes (403). The verified claims become the request's
//! principal, for templates (`${context.authorizer.claims.NAME}`) and later phases.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

mod external;
pub(crate) mod iam;

use super::ctx::{Authorized, RequestCtx, RouteMatch};
use crate::auth::jwt::{self, KeyRequest, KeySet, Refusal};
use crate::config::IdentitySource;
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::shard::{Shard, ShardSnap};
use crate::snapshot::{AuthorizerRt, JwtRt};

/// Runs the route's authorizer, if it has one.
pub(crate) async fn authorize(
    shard: &Shard,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    m: RouteMatch,
) -> Result<(), Error> {
    let api = &ss.snap.apis[m.api];
    let route = &api.routes[m.route];
    if route.iam {
        let key = iam::authorize(shard, ss, conn, ctx, m).await?;
        ctx.principal.authorizer = Some(Authorized::Iam(key));
        return Ok(());
    }
    let Some(auth) = &route.auth else {
        return Ok(());
    };
    let peer = conn.peer;
    match &api.authorizers[auth.authorizer] {
        AuthorizerRt::Jwt(j) => {
            let v = jwt_phase(shard, ss, ctx, j).await?;
            if !v.has_scope(&auth.scopes) {
                return Err(Error::downstream(
                    Kind::InsufficientScope(auth.scopes.join(" ").into()),
                    "the token carries none of the route's scopes",
                ));
            }
            ctx.principal.authorizer = Some(Authorized::Jwt(v));
            Ok(())
        }
        AuthorizerRt::External(x) => {
            let d = external::authorize(ss, peer, ctx, m, x).await?;
            ctx.principal.authorizer = Some(Authorized::External(d));
            Ok(())
        }
    }
}

fn refused(j: &JwtRt, why: &'static str) -> Error {
    Error::downstream(
        Kind::Unauthorized(Some(why)),
        format!("authorizer {:?}: {why}", j.name),
    )
}

async fn jwt_phase(
    shard: &Shard,
    ss: &ShardSnap,
    ctx: &RequestCtx,
    j: &JwtRt,
) -> Result<Rc<jwt::Verified>, Error> {
    let token = identity(ctx, &j.source)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::downstream(Kind::Unauthorized(None), "no token"))?;
    let now = unix_now();
    let keys = ss.snap.jwks.get(j.slot).cloned().flatten();
    if let Some(k) = &keys {
        if let Some(v) = shard.tokens.borrow().get(j.id, &token, k) {
            return if v.live(now, j.rules.leeway) {
                Ok(v)
            } else {
                Err(refused(j, "the token has expired"))
            };
        }
    }
    let first = match &keys {
        Some(k) => jwt::verify(&token, k, &j.rules, now),
        None => Err(Refusal::UnknownKey),
    };
    let (result, keys) = match first {
        // The snapshot's keys may be stale (rotated at the provider) or not fetched yet.
        Err(Refusal::UnknownKey) => match ask_keys(shard, ss, j, keys.clone()).await {
            Some(k) => (jwt::verify(&token, &k, &j.rules, now), Some(k)),
            None if keys.is_none() => {
                return Err(refused(j, "the issuer's signing keys are not available"))
            }
            None => (Err(Refusal::UnknownKey), keys),
        },
        other => (other, keys),
    };
    match result {
        Ok(v) => {
            let v = Rc::new(v);
            if let Some(k) = keys {
                shard.tokens.borrow_mut().insert(j.id, &token, k, v.clone());
            }
            Ok(v)
        }
        Err(Refusal::UnknownKey) => Err(refused(j, "the token's signing key (kid) is not known")),
        Err(Refusal::Invalid(why)) => Err(refused(j, why)),
    }
}

/// Asks the control plane for the source's keys (it fetches them again unless it did
/// within the cool-down); `None` when it has none or does not answer in time.
async fn ask_keys(
    shard: &Shard,
    ss: &ShardSnap,
    j: &JwtRt,
    had: Option<Arc<KeySet>>,
) -> Option<Arc<KeySet>> {
    let src = ss.snap.jwks_sources.get(j.slot)?;
    let (tx, rx) = flume::bounded(1);
    let req = KeyRequest {
        source: src.key.clone(),
        had,
        reply: tx,
    };
    // A full queue means the control plane is swamped: answer from what is here.
    shard.shared.key_requests.0.try_send(req).ok()?;
    // Discovery and keys: two fetches, each within the timeout.
    let wait = src.timeout * 2 + Duration::from_millis(500);
    crate::driver::time::timeout(wait, rx.recv_async())
        .await
        .ok()?
        .ok()
        .flatten()
}

/// The token from the identity source: a header (`Bearer ` optional) or a query parameter.
/// A source given more than once is its values joined with `,` (as Amazon merges repeated
/// headers), which no token verifies: the request never passes on one copy while the
/// upstream, which gets them all, reads another.
fn identity<'a>(ctx: &'a RequestCtx, source: &IdentitySource) -> Option<Cow<'a, [u8]>> {
    match source {
        IdentitySource::Header(name) => {
            let mut values = ctx
                .head
                .headers()
                .filter(|(n, _)| crate::http::name_eq(n, name.as_bytes()))
                .map(|(_, v)| v);
            let first = values.next()?;
            match values.next() {
                None => Some(Cow::Borrowed(jwt::strip_bearer(first))),
                Some(second) => {
                    let mut all = [first, second].join(&b","[..]);
                    for v in values {
                        all.push(b',');
                        all.extend_from_slice(v);
                    }
                    Some(Cow::Owned(all))
                }
            }
        }
        // With or without `Bearer `, as in a header.
        IdentitySource::Query(name) => {
            query_value(ctx, name).map(|v| Cow::Owned(jwt::strip_bearer(&v).to_vec()))
        }
    }
}

/// Every value of a query parameter, joined with `,` (as Amazon joins repeated ones).
fn query_value(ctx: &RequestCtx, name: &str) -> Option<Vec<u8>> {
    let vals: Vec<Vec<u8>> = query_values(ctx, name).collect();
    (!vals.is_empty()).then(|| vals.join(&b','))
}

/// The decoded values of query parameter `name`, in order.
pub(crate) fn query_values<'a>(
    ctx: &'a RequestCtx,
    name: &'a str,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let q = ctx.head.query_bytes().unwrap_or_default();
    q.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .filter_map(move |pair| {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            (percent_decode(k) == name.as_bytes()).then(|| percent_decode(v))
        })
}

pub(crate) fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    crate::syntax::path::form_decode_into(v, &mut out);
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
