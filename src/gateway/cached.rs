//! The cache phase: answer from the stage cache, or fetch once (coalescing concurrent
//! misses), store what may be stored, and stand in with a stale entry when the upstream fails.
//!
//! `X-Cache` says what happened: `Hit` (fresh entry), `Miss` (fetched; stored if it may be),
//! `Bypass` (not a cacheable request: not GET/HEAD, a body, an upgrade, or `no-store`),
//! `Refresh` (the client asked for a fresh copy and was allowed to), `Revalidated` (a stale
//! entry confirmed by the upstream with 304) and `Stale` (the upstream failed and the stale
//! entry stood in, within `stale_if_error`).

use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::ctx::RequestCtx;
use super::finish::{next_after, ratelimit_headers, skip_unread_body};
use super::proxy::{self, Extra, Tee};
use super::Next;
use crate::cache::flight::Join;
use crate::cache::policy::{self, Answer, CacheControl};
use crate::cache::{StageCache, Stats, Stored, Val, VaryMarker};
use crate::config::{CacheMode, Invalidation, KeyPart};
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::http::h1::{Framing, ResponseHead};
use crate::http::name_eq;
use crate::http::write::connection_header;
use crate::http::write::status_line;
use crate::shard::{Shard, ShardSnap};
use crate::snapshot::{CachePolicy, HttpIntegration};
use crate::syntax::Method;

/// Bodies up to this size are copied into the head's buffer (one write); larger ones are
/// written from the cache's own memory.
const INLINE_BODY: usize = 2048;

/// Runs the cache phase for an `http` integration on a cached route.
pub(crate) async fn serve(
    shard: &Rc<Shard>,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
    p: &CachePolicy,
) -> Result<Next, Error> {
    let api = ctx.route.map(|m| m.api).unwrap_or_default();
    let authorized = matches!(ctx.principal, super::ctx::Principal::ApiKey { .. });
    let cache = &p.cache;
    let method = ctx.head.method;
    let req_cc = CacheControl::parse(
        ctx.head
            .headers()
            .filter(|(n, _)| name_eq(n, b"cache-control"))
            .map(|(_, v)| v),
    );
    let pragma_no_cache = ctx
        .head
        .header(b"pragma")
        .is_some_and(|v| crate::http::has_token(v, b"no-cache"));
    let cacheable_request = (method == Method::Get || method == Method::Head)
        && ctx.head.framing == Framing::None
        && !ctx.head.upgrade
        && !(cache.mode == CacheMode::Http && req_cc.no_store);
    if !cacheable_request {
        Stats::add(&cache.stats.bypasses);
        ctx.cache_status = Some("Bypass");
        return proxy::forward(shard, ss, conn, ctx, integ).await;
    }

    // Cache-Control: max-age=0 / no-cache (or Pragma: no-cache): a request for a fresh copy.
    // The request's max-age=N and min-fresh (http mode) also make the cache fetch sooner:
    // they are honoured under the same rule.
    let wants_fresh =
        req_cc.wants_fresh() || pragma_no_cache && req_cc.max_age.is_none_or(|a| a == 0);
    let asks = wants_fresh
        || cache.mode == CacheMode::Http
            && (req_cc.max_age.is_some() || req_cc.min_fresh.is_some());
    let mut allowed = false;
    if asks {
        match p.invalidation {
            Invalidation::Ignore => {}
            Invalidation::Allow => allowed = true,
            Invalidation::RequireApiKey => {
                if authorized || key_covers_stage(ss, ctx, api) {
                    allowed = true;
                } else {
                    ctx.cache_warning =
                        Some("cache invalidation ignored: it needs a valid x-api-key");
                }
            }
        }
    }
    let refresh = allowed && wants_fresh;
    let mut req_cc = req_cc;
    if !allowed {
        req_cc.max_age = None;
        req_cc.min_fresh = None;
    }

    let primary = cache_key(ctx, &p.key, cache.mode == CacheMode::Http);
    let (mut variant, mut entry) = lookup(cache, &primary, ctx);
    if !refresh {
        let now = cache.now_ns();
        if let Some((e, how)) = fresh(entry.as_ref(), p, now, &req_cc) {
            Stats::add(&cache.stats.hits);
            return answer_stored(shard, conn, ctx, &e, how, now).await;
        }
    }
    // only-if-cached: nothing usable is stored, and the upstream is not to be asked.
    if req_cc.only_if_cached && cache.mode == CacheMode::Http {
        ctx.cache_status = Some("Miss");
        return Err(Error::downstream(
            Kind::GatewayTimeout,
            "only-if-cached: nothing stored",
        ));
    }

    // A miss (or a stale entry): one request fetches, the others wait for it.
    let mut _leader = None;
    if !refresh {
        match cache.join(variant.as_deref().unwrap_or(&primary)) {
            Join::Leader(l) => _leader = Some(l),
            Join::Follower(f) => {
                Stats::add(&cache.stats.coalesced);
                let _ = monoio::time::timeout(p.lock_timeout, f).await;
                (variant, entry) = lookup(cache, &primary, ctx);
                let now = cache.now_ns();
                if let Some((e, how)) = fresh(entry.as_ref(), p, now, &req_cc) {
                    Stats::add(&cache.stats.hits);
                    return answer_stored(shard, conn, ctx, &e, how, now).await;
                }
                // Still nothing fresh: the answer was not storable, or the fetch failed or
                // took longer than lock_timeout. Fetch for ourselves.
            }
        }
    }
    let miss = Miss {
        primary: &primary,
        variant,
        entry,
        refresh,
    };
    fetch(shard, ss, conn, ctx, integ, p, miss).await
}

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
            let key = uri_key(path, query);
            // Variants hang off a Vary marker under keys of their own: those take the scan.
            let varies = matches!(cache.get(&key), Some(Val::Vary(_)));
            if plain_keys && !varies {
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

/// What the lookup found when the answer has to come from the upstream: the keys, the entry
/// (stale, or to revalidate) and whether the client asked for a fresh copy.
struct Miss<'a> {
    primary: &'a [u8],
    /// The variant's key when the answer varies (a Vary marker was found).
    variant: Option<Vec<u8>>,
    entry: Option<Arc<Stored>>,
    refresh: bool,
}

/// Looks up the primary key, following a Vary marker to the variant for this request.
/// Returns the variant's key when the answer varies (else it lives under the primary key),
/// and the entry if any.
fn lookup(
    cache: &StageCache,
    primary: &[u8],
    ctx: &RequestCtx,
) -> (Option<Vec<u8>>, Option<Arc<Stored>>) {
    match cache.get(primary) {
        Some(Val::Stored(s)) => (None, Some(s)),
        Some(Val::Vary(m)) => {
            let k = variant_key(primary, &m.names, ctx);
            let e = match cache.get(&k) {
                Some(Val::Stored(s)) => Some(s),
                _ => None,
            };
            (Some(k), e)
        }
        None => (None, None),
    }
}

/// The entry this request may be answered from, and how (`Hit`, or `Stale` when the
/// client's `max-stale` accepts it). In http mode the request's `max-age`, `min-fresh` and
/// `max-stale` are honoured (RFC 9111 5.2.1); an entry that said `no-cache`,
/// `must-revalidate` or `s-maxage` is never served stale.
fn fresh(
    e: Option<&Arc<Stored>>,
    p: &CachePolicy,
    now: u64,
    req: &CacheControl,
) -> Option<(Arc<Stored>, &'static str)> {
    let e = e?;
    if p.cache.mode == CacheMode::Gateway {
        return e.is_fresh(now, p.ttl).then(|| (e.clone(), "Hit"));
    }
    if req.max_age.is_some_and(|m| e.age_s(now) > m) {
        return None;
    }
    if e.fresh_for_at_least(now, p.ttl, req.min_fresh.unwrap_or(0)) {
        return Some((e.clone(), "Hit"));
    }
    let stale_ok = req.max_stale.is_some_and(|m| {
        !e.lifetime.no_cache
            && !e.lifetime.must_revalidate
            && req.min_fresh.is_none()
            && e.stale_for_ns(now, p.ttl) / 1_000_000_000 <= m
    });
    stale_ok.then(|| (e.clone(), "Stale"))
}

/// May this stale entry stand in for a failed upstream?
fn stale_usable(cache: &StageCache, e: &Stored, p: &CachePolicy) -> bool {
    !p.stale_if_error.is_zero()
        && !e.lifetime.must_revalidate
        && !e.lifetime.no_cache
        && e.stale_for_ns(cache.now_ns(), p.ttl) <= p.stale_if_error.as_nanos() as u64
}

async fn fetch(
    shard: &Rc<Shard>,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
    p: &CachePolicy,
    miss: Miss<'_>,
) -> Result<Next, Error> {
    let Miss {
        primary,
        variant,
        entry,
        refresh,
    } = miss;
    let cache = &p.cache;
    let epoch = cache.epoch();
    // http mode revalidates a stale entry that has a validator instead of fetching it whole.
    let revalidate = entry
        .clone()
        .filter(|e| cache.mode == CacheMode::Http && e.can_revalidate() && !refresh);
    let mut extra = Extra {
        lines: Vec::new(),
        strip_conditionals: true,
    };
    if let Some(e) = &revalidate {
        if let Some(etag) = &e.etag {
            extra.lines.extend_from_slice(b"if-none-match: ");
            extra.lines.extend_from_slice(etag);
            extra.lines.extend_from_slice(b"\r\n");
        }
        if let Some(lm) = &e.last_modified {
            extra.lines.extend_from_slice(b"if-modified-since: ");
            extra.lines.extend_from_slice(lm);
            extra.lines.extend_from_slice(b"\r\n");
        }
    }
    let stale = entry.filter(|e| stale_usable(cache, e, p));
    let ex = match proxy::send(ss, conn, ctx, integ, &extra).await {
        Ok(ex) => ex,
        Err(e) if matches!(e.status(), 502..=504) => match &stale {
            Some(s) => {
                if shard.log_first("upstream failed; stale answer served", ctx.upstream, 0) {
                    tracing::warn!(request_id = %ctx.request_id, error = %e, "upstream failed; serving the stale cached answer");
                }
                Stats::add(&cache.stats.stale_served);
                return answer_stored(shard, conn, ctx, s, "Stale", cache.now_ns()).await;
            }
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let status = ex.resp.status;
    // RFC 9111 4.2.3 response_time: when the answer's head arrived.
    let response_ns = cache.now_ns();
    if let (Some(e), 304) = (&revalidate, status) {
        // Confirmed: update the stored headers from the 304 (RFC 9111 4.3.4) and answer.
        let updated = revalidated(cache, e, &ex.resp, p, epoch);
        ex.finish_bodiless();
        let e = match updated {
            Some(u) => {
                let key = variant.unwrap_or_else(|| primary.to_vec());
                cache.insert(key.into_boxed_slice(), Val::Stored(u.clone()));
                u
            }
            None => e.clone(),
        };
        Stats::add(&cache.stats.revalidated);
        return answer_stored(shard, conn, ctx, &e, "Revalidated", cache.now_ns()).await;
    }
    if matches!(status, 500 | 502 | 503 | 504) {
        if let Some(s) = &stale {
            if shard.log_first("upstream error; stale answer served", ctx.upstream, status) {
                tracing::warn!(request_id = %ctx.request_id, status, "upstream answered an error; serving the stale cached answer");
            }
            drop(ex);
            Stats::add(&cache.stats.stale_served);
            return answer_stored(shard, conn, ctx, s, "Stale", cache.now_ns()).await;
        }
    }

    // Decide now whether the answer may be stored; collect its body while it streams.
    Stats::add(if refresh {
        &cache.stats.refreshes
    } else {
        &cache.stats.misses
    });
    ctx.cache_status = Some(if refresh { "Refresh" } else { "Miss" });
    let decision = if ctx.head.method == Method::Get {
        policy::storable(
            cache.mode,
            Answer {
                status,
                headers: ex.resp.headers(),
            },
            ctx.head.header(b"authorization").is_some(),
            p.ttl,
            SystemTime::now(),
        )
        .map_err(|why| tracing::debug!(?why, "answer not stored"))
        .ok()
    } else {
        None
    };
    let mut tee = None;
    if let Some(lifetime) = decision {
        let max = p.max_entry as usize;
        let declared = match ex.resp.framing {
            Framing::Length(n) => Some(n as usize),
            Framing::None => Some(0),
            _ => None,
        };
        if declared.is_some_and(|n| n > max) {
            Stats::add(&cache.stats.too_large);
        } else if ex.resp.framing == Framing::UntilClose {
            // A body ended by close cannot be told from a truncated one: not stored.
            Stats::add(&cache.stats.not_stored);
        } else {
            // Stored the moment the body is complete, before its last bytes go to the
            // client: a client that has the whole answer finds it in the cache.
            let (reason, headers, etag, last_modified) = stored_parts(&ex.resp);
            let keys = match vary_names(&ex.resp) {
                Some(names) => {
                    let vk = variant_key(primary, &names, ctx);
                    (vk.into_boxed_slice(), Some(names))
                }
                None => (primary.into(), None),
            };
            let primary: Box<[u8]> = primary.into();
            let counted = cache.clone();
            let cache = cache.clone();
            let mut t = Tee::new(max, declared.unwrap_or(16 << 10));
            t.on_too_large = Some(Box::new(move || Stats::add(&counted.stats.too_large)));
            t.on_complete = Some(Box::new(move |body: Bytes| {
                let stored = Arc::new(Stored {
                    status,
                    reason,
                    headers,
                    body,
                    stored_ns: response_ns,
                    epoch,
                    lifetime,
                    etag,
                    last_modified,
                });
                let (key, vary) = keys;
                if let Some(names) = vary {
                    cache.insert(primary, Val::Vary(Arc::new(VaryMarker { names, epoch })));
                }
                cache.insert(key, Val::Stored(stored));
            }));
            tee = Some(t);
        }
    } else {
        Stats::add(&cache.stats.not_stored);
    }
    proxy::answer(shard, conn, ctx, integ, ex, tee.as_mut()).await
}

type Parts = (Bytes, Bytes, Option<Bytes>, Option<Bytes>);

/// What is kept of an answer's head: the reason phrase, the end-to-end header lines (without
/// framing, `Age`, hop-by-hop and per-request headers), and the validators.
fn stored_parts(resp: &ResponseHead) -> Parts {
    let mut headers = Vec::with_capacity(resp.raw.len());
    let mut etag = None;
    let mut last_modified = None;
    let conn = resp
        .headers()
        .find(|(n, _)| name_eq(n, b"connection"))
        .map(|(_, v)| v);
    for (name, value) in resp.headers() {
        if !keep_header(name) || conn.is_some_and(|c| crate::http::has_token(c, name)) {
            continue;
        }
        if name_eq(name, b"etag") {
            etag = Some(Bytes::copy_from_slice(value));
        } else if name_eq(name, b"last-modified") {
            last_modified = Some(Bytes::copy_from_slice(value));
        }
        push_header(&mut headers, name, value);
    }
    (
        Bytes::copy_from_slice(resp.slice(&resp.reason)),
        headers.into(),
        etag,
        last_modified,
    )
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Kept in a stored answer: end-to-end headers, less framing, `Age` and per-answer ones.
fn keep_header(name: &[u8]) -> bool {
    const DROP: [&[u8]; 5] = [
        b"content-length",
        b"age",
        b"x-request-id",
        b"x-cache",
        b"warning",
    ];
    !(proxy::hop_by_hop(name) || DROP.iter().any(|d| name_eq(name, d)))
}

/// The request headers an answer varies on, lower-cased; `None` when it does not vary.
fn vary_names(resp: &ResponseHead) -> Option<Vec<Box<[u8]>>> {
    let mut names: Vec<Box<[u8]>> = Vec::new();
    for (_, v) in resp.headers().filter(|(n, _)| name_eq(n, b"vary")) {
        for n in policy::split_list(v) {
            let n: Box<[u8]> = n.to_ascii_lowercase().into();
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.sort();
    (!names.is_empty()).then_some(names)
}

/// The key of the variant that `ctx`'s headers select (RFC 9111 4.1: values compared after
/// joining field lines and trimming whitespace).
fn variant_key(primary: &[u8], names: &[Box<[u8]>], ctx: &RequestCtx) -> Vec<u8> {
    let mut k = Vec::with_capacity(primary.len() + 32);
    k.extend_from_slice(primary);
    k.extend_from_slice(b"v\0");
    for n in names {
        k.extend_from_slice(n);
        k.push(b'=');
        header_values(ctx, n, &mut k);
        k.push(0);
    }
    k
}

/// All values of header `name`, joined with ", ".
fn header_values(ctx: &RequestCtx, name: &[u8], out: &mut Vec<u8>) {
    let mut first = true;
    for (_, v) in ctx.head.headers().filter(|(n, _)| name_eq(n, name)) {
        if !first {
            out.extend_from_slice(b", ");
        }
        first = false;
        out.extend_from_slice(v.trim_ascii());
    }
}

/// The cache key: "GET\0" (HEAD shares GET's entries) + the request path + "\0" + (with
/// `whole_query`, http mode) "?query\0" as sent + each configured parameter as "q:NAME=v1&v2\0", "h:NAME=v\0" or "p:NAME=v\0". Query values are
/// percent-decoded and sorted, so parameter order and encoding do not split entries.
pub fn cache_key(ctx: &RequestCtx, parts: &[KeyPart], whole_query: bool) -> Vec<u8> {
    // `mode = "http"` keys on the whole target URI, query included (RFC 9111 2); gateway mode
    // keys on the listed parameters only, as Amazon API Gateway does.
    let mut k = uri_key(
        ctx.head.path_bytes(),
        ctx.head.query_bytes().filter(|_| whole_query),
    );
    for part in parts {
        match part {
            KeyPart::Query(name) => {
                k.extend_from_slice(b"q:");
                k.extend_from_slice(name.as_bytes());
                k.push(b'=');
                query_values(ctx.head.query_bytes().unwrap_or_default(), name, &mut k);
            }
            KeyPart::Header(name) => {
                k.extend_from_slice(b"h:");
                k.extend_from_slice(name.as_bytes());
                k.push(b'=');
                header_values(ctx, name.as_bytes(), &mut k);
            }
            KeyPart::Path(i, name) => {
                k.extend_from_slice(b"p:");
                k.extend_from_slice(name.as_bytes());
                k.push(b'=');
                ctx.path_var(*i, |s, more| {
                    k.extend_from_slice(s.as_bytes());
                    if more {
                        k.push(b'/');
                    }
                });
            }
        }
        k.push(0);
    }
    k
}

/// The key of a URI's entry when the route lists no key parts (http mode: the query as sent).
fn uri_key(path: &[u8], query: Option<&[u8]>) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(b"GET\0");
    k.extend_from_slice(if path.is_empty() { b"/" } else { path });
    k.push(0);
    if let Some(q) = query {
        k.push(b'?');
        k.extend_from_slice(q);
        k.push(0);
    }
    k
}

/// Appends the values of query parameter `name`, percent-decoded; several values are sorted
/// and joined with '&'. The common case (one value) allocates nothing.
fn query_values(query: &[u8], name: &str, k: &mut Vec<u8>) {
    let mut found: smallvec::SmallVec<[&[u8]; 2]> = smallvec::SmallVec::new();
    for pair in query.split(|&b| b == b'&') {
        let (n, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if decoded_eq(n, name.as_bytes()) {
            found.push(v);
        }
    }
    if found.len() > 1 {
        let mut vals: Vec<Vec<u8>> = found
            .iter()
            .map(|v| {
                let mut d = Vec::new();
                decode_into(v, &mut d);
                d
            })
            .collect();
        vals.sort();
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                k.push(b'&');
            }
            k.extend_from_slice(v);
        }
    } else if let Some(v) = found.first() {
        decode_into(v, k);
    }
}

/// Percent-decodes (and maps '+' to ' ') a query name or value into `out`; bad escapes stay
/// as they are.
fn decode_into(b: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
}

/// Is `raw`, decoded, equal to `want`? Without decoding when there is nothing to decode.
fn decoded_eq(raw: &[u8], want: &[u8]) -> bool {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return raw == want;
    }
    let mut d = Vec::with_capacity(raw.len());
    decode_into(raw, &mut d);
    d == want
}

/// Does the request carry an enabled API key whose plan covers this stage?
fn key_covers_stage(ss: &ShardSnap, ctx: &RequestCtx, api: usize) -> bool {
    let stage = ctx.stage.map(|s| s.stage).unwrap_or_default();
    let Some(k) = ctx
        .head
        .header(b"x-api-key")
        .and_then(|v| ss.snap.keys.find(v))
    else {
        return false;
    };
    k.enabled
        && k.plans.iter().any(|&p| {
            ss.snap
                .plans
                .get(p)
                .is_some_and(|pl| pl.stages.contains(&(api, stage)))
        })
}

/// The entry updated with a 304's headers (RFC 9111 4.3.4), if it may still be stored.
fn revalidated(
    cache: &StageCache,
    e: &Stored,
    resp: &ResponseHead,
    p: &CachePolicy,
    epoch: u64,
) -> Option<Arc<Stored>> {
    let (_, fresh_headers, etag, last_modified) = stored_parts(resp);
    let mut merged = Vec::with_capacity(e.headers.len() + fresh_headers.len());
    merged.extend_from_slice(&fresh_headers);
    for line in e.headers.split_inclusive(|&b| b == b'\n') {
        let name = &line[..line.iter().position(|&b| b == b':').unwrap_or(0)];
        let replaced = resp.headers().any(|(n, _)| name_eq(n, name));
        if !replaced {
            merged.extend_from_slice(line);
        }
    }
    let lines = parse_lines(&merged);
    let lifetime = policy::storable(
        cache.mode,
        Answer {
            status: e.status,
            headers: lines.iter().map(|(n, v)| (*n, *v)),
        },
        false,
        p.ttl,
        SystemTime::now(),
    )
    .ok()?;
    Some(Arc::new(Stored {
        status: e.status,
        reason: e.reason.clone(),
        headers: Bytes::from(merged.clone()),
        body: e.body.clone(),
        stored_ns: cache.now_ns(),
        epoch,
        lifetime,
        etag: etag.or_else(|| e.etag.clone()),
        last_modified: last_modified.or_else(|| e.last_modified.clone()),
    }))
}

/// Splits stored header lines into (name, value) pairs.
fn parse_lines(block: &[u8]) -> Vec<(&[u8], &[u8])> {
    block
        .split(|&b| b == b'\n')
        .filter_map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let i = l.iter().position(|&b| b == b':')?;
            Some((&l[..i], l[i + 1..].trim_ascii()))
        })
        .collect()
}

/// Is the client's copy current (RFC 9110 13.2.2)? `If-None-Match` against the entry's ETag
/// (weak comparison); without it, `If-Modified-Since` against the entry's `Last-Modified` (a
/// GET or HEAD whose date is not earlier than the entry's).
fn not_modified(ctx: &RequestCtx, e: &Stored) -> bool {
    if let Some(inm) = ctx.head.header(b"if-none-match") {
        let Some(etag) = &e.etag else {
            return false;
        };
        let weak = |t: &[u8]| t.strip_prefix(b"W/").unwrap_or(t).to_vec();
        let etag = weak(etag.trim_ascii());
        return policy::split_list(inm).any(|t| t == b"*" || weak(t) == etag);
    }
    let (Some(ims), Some(lm)) = (ctx.head.header(b"if-modified-since"), &e.last_modified) else {
        return false;
    };
    let date = |v: &[u8]| httpdate::parse_http_date(std::str::from_utf8(v).ok()?.trim()).ok();
    matches!(ctx.head.method, Method::Get | Method::Head)
        && matches!((date(ims), date(lm)), (Some(ims), Some(lm)) if lm <= ims)
}

/// Writes the head of an answer from a stored entry (status, stored headers, `Age`,
/// `Content-Length`, `x-request-id`, `X-Cache`, `RateLimit-*`, `Connection`) and sets
/// `ctx.status`. Answers 304 when the client's copy is current. Returns whether the
/// body follows.
pub fn hit_head(out: &mut Vec<u8>, ctx: &mut RequestCtx, e: &Stored, age: u64, keep: bool) -> bool {
    let nm = e.status == 200 && not_modified(ctx, e);
    let status = if nm { 304 } else { e.status };
    ctx.status = status;
    if nm {
        status_line(out, ctx.head.minor, 304);
    } else {
        out.extend_from_slice(if ctx.head.minor == 0 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(&e.reason);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&e.headers);
    out.extend_from_slice(b"age: ");
    out.extend_from_slice(itoa::Buffer::new().format(age).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !nm && e.status != 204 && !(100..200).contains(&e.status) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(e.body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(ctx.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    super::cache_headers(out, ctx);
    if let Some(r) = &ctx.ratelimit {
        ratelimit_headers(out, r);
    }
    connection_header(out, ctx.head.minor, keep);
    out.extend_from_slice(b"\r\n");
    !nm && ctx.head.method != Method::Head && !e.body.is_empty()
}

/// Answers from a stored entry: its status, headers and body, with `Age` and `X-Cache`.
async fn answer_stored(
    shard: &Shard,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    e: &Stored,
    how: &'static str,
    now_ns: u64,
) -> Result<Next, Error> {
    let body_ok = skip_unread_body(conn, ctx);
    let keep = ctx.head.keep_alive && body_ok && !shard.drain.is_on();
    ctx.cache_status = Some(how);
    let mut out = Vec::with_capacity(256 + e.headers.len() + INLINE_BODY);
    let send_body = hit_head(&mut out, ctx, e, e.age_s(now_ns), keep);
    let gone = |_| Error::downstream(Kind::ClientGone, "writing cached answer");
    if send_body && e.body.len() <= INLINE_BODY {
        out.extend_from_slice(&e.body);
        conn.write_all(out).await.map_err(gone)?;
    } else if send_body {
        // The body goes out from the cache's memory in the same writev: a refcount, no copy.
        conn.write_head_body(out, e.body.clone())
            .await
            .map_err(gone)?;
    } else {
        conn.write_all(out).await.map_err(gone)?;
    }
    Ok(next_after(keep, body_ok))
}
