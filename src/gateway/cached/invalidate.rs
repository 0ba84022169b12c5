//! Invalidation by unsafe methods (RFC 9111 4.4): what a successful POST, PUT, DELETE or
//! PATCH changed is dropped from the stage's cache.

use std::rc::Rc;
use std::sync::Arc;

use super::key::uri_key;
use crate::cache::{StageCache, Stats, Val};
use crate::error::Error;
use crate::gateway::ctx::RequestCtx;
use crate::gateway::proxy::{self, Extra};
use crate::gateway::Next;
use crate::http::conn::Conn;
use crate::http::name_eq;
use crate::shard::{Shard, ShardSnap};
use crate::snapshot::HttpIntegration;

/// An unsafe method (POST, PUT, DELETE, PATCH, an unknown one) on a stage with an http-mode
/// cache: forwarded as usual; once the origin answers 2xx or 3xx, the entries stored for the
/// target URI, and for a same-origin `Location` or `Content-Location`, are dropped (RFC 9111
/// 4.4), so the next GET fetches the changed resource. By key when the stage's cached routes
/// key on the URI alone (`plain_keys`), else every entry of the path.
pub(crate) async fn forward_invalidating(
    shard: &Rc<Shard>,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
    cache: &Arc<StageCache>,
    plain_keys: bool,
) -> Result<Next, Error> {
    let ex = proxy::send(ss, conn, ctx, integ, &Extra::default()).await?;
    if (200..400).contains(&ex.resp.status) {
        let mut dropped = 0;
        let mut drop_uri = |path: &[u8], query: Option<&[u8]>| {
            let mut key = uri_key(path, query);
            super::key::origin_part(ctx, &mut key);
            // Variants hang off a Vary marker under keys of their own: those take the scan.
            let varies = matches!(cache.get(&key), Some(Val::Vary(_)));
            if plain_keys && !varies {
                // Noted as a purge too: a GET's fetch under way is not stored after it.
                cache.note_purge(&crate::cache::decoded_path(path), true);
                dropped += cache.remove(&key) as usize;
            } else if let Ok(p) = std::str::from_utf8(path) {
                dropped += cache.purge(p, true);
            }
        };
        drop_uri(ctx.head.path_bytes(), ctx.head.query_bytes());
        let host = ctx.head.header(b"host");
        for name in [&b"location"[..], b"content-location"] {
            let Some(v) = ex
                .resp
                .headers()
                .find(|(n, _)| name_eq(n, name))
                .map(|(_, v)| v)
            else {
                continue;
            };
            if let Some((path, query)) = same_origin(v, host) {
                drop_uri(path, query);
            }
        }
        if dropped > 0 {
            Stats::add(&cache.stats.invalidated);
        }
    }
    proxy::answer(shard, conn, ctx, integ, ex, None).await
}

/// The path and query of a `Location`-style URI reference that names this origin: a path
/// (`/a?b`), or an absolute `http(s)://` URI whose authority is the request's `Host`.
fn same_origin<'a>(v: &'a [u8], host: Option<&[u8]>) -> Option<(&'a [u8], Option<&'a [u8]>)> {
    let v = v.trim_ascii();
    let rest = if v.starts_with(b"/") && !v.starts_with(b"//") {
        v
    } else {
        let after = v
            .strip_prefix(b"https://")
            .or_else(|| v.strip_prefix(b"http://"))?;
        let end = after.iter().position(|&b| b == b'/').unwrap_or(after.len());
        if !host.is_some_and(|h| after[..end].eq_ignore_ascii_case(h)) {
            return None;
        }
        &after[end..]
    };
    let rest = rest.split(|&b| b == b'#').next().unwrap_or_default();
    Some(match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    })
}
