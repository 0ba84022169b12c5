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
use crate::config::{CacheMode, Invalidation, Unauthorized};
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::http::h1::{Framing, ResponseHead};
use crate::http::name_eq;
use crate::http::write::connection_header;
use crate::http::write::status_line;
use crate::shard::{Shard, ShardSnap};
use crate::snapshot::{CachePolicy, HttpIntegration};
use crate::syntax::Method;

mod invalidate;
mod key;

pub(crate) use invalidate::forward_invalidating;
pub use key::cache_key;
use key::{variant_key, vary_names};

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
    let authorized = ctx.principal.api_key.is_some();
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
        && (ctx.head.framing == Framing::None || ctx.body_rendered)
        && !ctx.head.upgrade
        && !(cache.mode == CacheMode::Http && req_cc.no_store);
    if !cacheable_request {
        Stats::add(&cache.stats.bypasses);
        ctx.cache_status = Some("Bypass");
        return proxy::forward(shard, ss, conn, ctx, integ).await;
    }

    // A request for a fresh copy: in gateway mode `Cache-Control: max-age=0` alone, as
    // Amazon API Gateway takes it (clients that send `no-cache` by default, as Postman and
    // browsers' reloads do, are served as usual: not refused under `fail_with_403`). In http
    // mode also no-cache (or Pragma: no-cache), and the request's max-age=N and min-fresh
    // make the cache fetch sooner: they are honoured under the same rule.
    let wants_fresh = match cache.mode {
        CacheMode::Gateway => req_cc.max_age == Some(0),
        CacheMode::Http => {
            req_cc.wants_fresh() || pragma_no_cache && req_cc.max_age.is_none_or(|a| a == 0)
        }
    };
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
                    match p.unauthorized {
                        Unauthorized::Warn => {
                            ctx.cache_warning =
                                Some("cache invalidation ignored: it needs a valid x-api-key")
                        }
                        // Only a request for a fresh copy is refused (Amazon's strategy
                        // covers `max-age=0`); an http-mode `max-age=N` or `min-fresh` is
                        // served as if unsaid.
                        Unauthorized::Ignore => {}
                        Unauthorized::FailWith403 if !wants_fresh => {}
                        Unauthorized::FailWith403 => {
                            return Err(Error::downstream(
                                Kind::AccessDenied(
                                    "Not authorized to invalidate the cache: it needs a valid x-api-key",
                                ),
                                "cache invalidation without the API key",
                            ));
                        }
                    }
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

    // A byte range of an answer not stored goes to the upstream as asked, and fills nothing
    // (fetched whole instead, a resumed download or a video's seek got the whole answer).
    if !refresh && ctx.head.header(b"range").is_some() {
        Stats::add(&cache.stats.bypasses);
        ctx.cache_status = Some("Miss");
        return proxy::forward(shard, ss, conn, ctx, integ).await;
    }
    // A miss (or a stale entry): one request fetches, the others wait for it.
    let mut leader = None;
    if !refresh {
        match cache.join(variant.as_deref().unwrap_or(&primary)) {
            Join::Leader(l) => leader = Some(l),
            Join::Follower(f) => {
                Stats::add(&cache.stats.coalesced);
                let _ = crate::driver::time::timeout(p.lock_timeout, f).await;
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
        leader,
    };
    fetch(shard, ss, conn, ctx, integ, p, miss).await
}

/// What the lookup found when the answer has to come from the upstream: the keys, the entry
/// (stale, or to revalidate) and whether the client asked for a fresh copy.
struct Miss<'a> {
    primary: &'a [u8],
    /// The variant's key when the answer varies (a Vary marker was found).
    variant: Option<Vec<u8>>,
    entry: Option<Arc<Stored>>,
    refresh: bool,
    /// This request leads the fetch its key's other misses wait for: let go as soon as the
    /// outcome is known (stored, or not to be stored), not when its client has the answer
    /// (a client reading slowly held the others for `lock_timeout`).
    leader: Option<crate::cache::flight::Leader>,
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
        mut leader,
    } = miss;
    let cache = &p.cache;
    let epoch = cache.epoch();
    let purges = cache.purges();
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
                drop(leader);
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
        // Confirmed: update the stored headers from the 304 (RFC 9111 4.3.4) and answer with
        // them. When the updated answer may not be stored (the 304 brought `Set-Cookie`,
        // `private` or `no-store`), this client still gets it, and the old entry goes.
        let (updated, storable) = revalidated(cache, e, &ex.resp, p, epoch);
        ex.finish_bodiless();
        if storable {
            let key = variant.unwrap_or_else(|| primary.to_vec());
            cache.insert_fetched(key.into_boxed_slice(), Val::Stored(updated.clone()), purges);
        } else {
            cache.remove(primary);
        }
        drop(leader);
        Stats::add(&cache.stats.revalidated);
        return answer_stored(shard, conn, ctx, &updated, "Revalidated", cache.now_ns()).await;
    }
    if matches!(status, 500 | 502 | 503 | 504) {
        if let Some(s) = &stale {
            if shard.log_first("upstream error; stale answer served", ctx.upstream, status) {
                tracing::warn!(request_id = %ctx.request_id, status, "upstream answered an error; serving the stale cached answer");
            }
            drop(ex);
            drop(leader);
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
        let names = vary_names(&ex.resp);
        if declared.is_some_and(|n| n > max) {
            Stats::add(&cache.stats.too_large);
        } else if names
            .as_ref()
            .is_some_and(|ns| ns.iter().any(|n| key::gateway_writes(ctx, integ, n)))
        {
            // It varies on a header the upstream heard from the gateway, not from the client
            // (a value made of the caller's address or certificate, a mapped one): the
            // client's own header would select it, and hand one caller's answer to others.
            Stats::add(&cache.stats.not_stored);
        } else if ex.resp.framing == Framing::UntilClose {
            // A body ended by close cannot be told from a truncated one: not stored.
            Stats::add(&cache.stats.not_stored);
        } else {
            // Stored the moment the body is complete, before its last bytes go to the
            // client: a client that has the whole answer finds it in the cache.
            let (reason, headers, etag, last_modified) = stored_parts(&ex.resp);
            let keys = match names {
                Some(names) => {
                    let vk = variant_key(primary, &names, ctx);
                    (vk.into_boxed_slice(), Some(names))
                }
                None => (primary.into(), None),
            };
            let primary: Box<[u8]> = primary.into();
            let counted = cache.clone();
            let cache = cache.clone();
            // The leader goes when the body is stored, or found too large to be.
            let leader = Rc::new(std::cell::Cell::new(leader.take()));
            let leader2 = leader.clone();
            let mut t = Tee::new(
                max,
                declared.unwrap_or(16 << 10),
                ss.snap.limits.body_memory,
            );
            // A refresh whose answer turns out too large to store still invalidates (as
            // one that brings nothing storable does): the old answer is not served again.
            let stale = refresh.then(|| primary.clone());
            t.on_too_large = Some(Box::new(move || {
                Stats::add(&counted.stats.too_large);
                if let Some(key) = &stale {
                    counted.remove(key);
                }
                drop(leader2.take());
            }));
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
                    encoded: Default::default(),
                });
                let (key, vary) = keys;
                if let Some(names) = vary {
                    let marker = Val::Vary(Arc::new(VaryMarker { names, epoch }));
                    cache.insert_fetched(primary, marker, purges);
                }
                cache.insert_fetched(key, Val::Stored(stored), purges);
                drop(leader.take());
            }));
            tee = Some(t);
        }
    } else {
        Stats::add(&cache.stats.not_stored);
    }
    if tee.is_none() {
        // Nothing will be stored: the other misses fetch for themselves now.
        drop(leader.take());
        if refresh {
            // A refresh the client was allowed that brings nothing storable (a 404,
            // `no-store`) still invalidates: the old answer is not served again. Its
            // variants go with it.
            cache.remove(primary);
        }
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
    let mut dated = false;
    // Every `Connection` line's names, as on a live answer (RFC 9110 5.3, 7.6.1).
    let conn = proxy::connection_value(resp.headers());
    for (name, value) in resp.headers() {
        if !keep_header(name)
            || conn
                .as_deref()
                .is_some_and(|c| crate::http::has_token(c, name))
        {
            continue;
        }
        if name_eq(name, b"etag") {
            etag = Some(Bytes::copy_from_slice(value));
        } else if name_eq(name, b"last-modified") {
            last_modified = Some(Bytes::copy_from_slice(value));
        }
        dated = dated || name_eq(name, b"date");
        push_header(&mut headers, name, value);
    }
    if !dated {
        // Stored with the time it arrived, as it was forwarded (RFC 9110 6.6.1).
        crate::http::write::date_header(&mut headers);
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
    // An upstream's `RateLimit-*` said how much was left then, not at a hit.
    !(proxy::hop_by_hop(name)
        || DROP.iter().any(|d| name_eq(name, d))
        || crate::gateway::finish::is_ratelimit_field(name))
}

/// Does the request carry an enabled API key whose plan covers this stage?
fn key_covers_stage(ss: &ShardSnap, ctx: &RequestCtx, api: usize) -> bool {
    let stage = ctx.stage.map(|s| s.stage).unwrap_or_default();
    let Some(k) = crate::gateway::api_key::presented(ss, ctx, api)
        .ok()
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

/// The entry updated with a 304's headers (RFC 9111 4.3.4), and whether it may still be
/// stored.
fn revalidated(
    cache: &StageCache,
    e: &Stored,
    resp: &ResponseHead,
    p: &CachePolicy,
    epoch: u64,
) -> (Arc<Stored>, bool) {
    let (_, fresh_headers, etag, last_modified) = stored_parts(resp);
    let mut merged = Vec::with_capacity(e.headers.len() + fresh_headers.len());
    merged.extend_from_slice(&fresh_headers);
    for line in e.headers.split_inclusive(|&b| b == b'\n') {
        let name = &line[..line.iter().position(|&b| b == b':').unwrap_or(0)];
        // The 304's `Date` (or its arrival's, which `stored_parts` adds) replaces the entry's.
        let replaced = name_eq(name, b"date") || resp.headers().any(|(n, _)| name_eq(n, name));
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
    );
    let storable = lifetime.is_ok();
    let updated = Arc::new(Stored {
        status: e.status,
        reason: e.reason.clone(),
        headers: Bytes::from(merged.clone()),
        body: e.body.clone(),
        stored_ns: cache.now_ns(),
        epoch,
        lifetime: lifetime.unwrap_or_else(|_| e.lifetime.clone()),
        etag: etag.or_else(|| e.etag.clone()),
        last_modified: last_modified.or_else(|| e.last_modified.clone()),
        encoded: Default::default(),
    });
    (updated, storable)
}

/// Splits stored header lines into (name, value) pairs.
fn parse_lines(block: &[u8]) -> Vec<(&[u8], &[u8])> {
    crate::http::h1::header_lines(block).collect()
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
pub fn hit_head(
    out: &mut Vec<u8>,
    ctx: &mut RequestCtx,
    e: &Stored,
    age: u64,
    keep: bool,
) -> Option<Bytes> {
    let nm = e.status == 200 && not_modified(ctx, e);
    let head_only = nm || ctx.head.method == Method::Head;
    // On a compressing stage: the body in the client's encoding, made once per entry.
    let (vary, enc) = match &ctx.compress {
        Some((c, enc))
            if super::compress::eligible(
                c,
                e.status,
                crate::http::h1::header_lines(&e.headers),
                e.body.len(),
            ) =>
        {
            // A HEAD gets the coding and length a GET would (RFC 9110 9.3.2), not the body.
            (true, enc.filter(|_| !nm))
        }
        _ => (false, None),
    };
    let body = match (enc, &ctx.compress) {
        (Some(x), Some((c, _))) => e.encoded[x.index()]
            .get_or_init(|| Bytes::from(super::compress::compress(c, x, &e.body)))
            .clone(),
        _ => e.body.clone(),
    };
    // A route's response mapping applies to stored answers as to fresh ones.
    let map = match &ctx.response_map {
        Some((m, _)) if !nm => Some(m.clone()),
        _ => None,
    };
    let mapped = map.as_deref().and_then(|m| m.ops_for(e.status));
    let status = match mapped {
        _ if nm => 304,
        Some(ops) => crate::gateway::mapping::mapped_status(ops, e.status),
        None => e.status,
    };
    ctx.status = status;
    if nm || status != e.status || e.reason.is_empty() {
        status_line(out, ctx.head.minor, status);
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
    // The ETag is weak whenever this client gets (or, on a 304 or HEAD, would get) an encoded body.
    let weak = vary && ctx.compress.as_ref().is_some_and(|(_, a)| a.is_some());
    if ctx.cors.is_some() || mapped.is_some() || weak {
        // The API's CORS headers, not the ones stored with the answer; less what the
        // mapping replaces; a compressed body's ETag is weak (RFC 9110 8.8.1).
        for l in e.headers.split_inclusive(|&b| b == b'\n') {
            let name = &l[..l.iter().position(|&b| b == b':').unwrap_or(0)];
            let cors = ctx.cors.is_some() && crate::http::cors::is_cors_header(l);
            let replaced =
                mapped.is_some_and(|ops| crate::gateway::mapping::drops_header(ops, name));
            // An encoded body: the stored `Content-Encoding: identity` gives way to the
            // coding (said below), and byte ranges of the identity body are not offered.
            let encoded = weak && crate::gateway::compress::replaced_by_coding(name);
            if cors || replaced || encoded {
                continue;
            }
            if weak && name.eq_ignore_ascii_case(b"etag") {
                weak_etag(out, &l[name.len() + 1..]);
            } else {
                out.extend_from_slice(l);
            }
        }
        if let Some(ops) = mapped {
            let lines = parse_lines(&e.headers);
            crate::gateway::mapping::add_headers(ops, ctx, lines.iter().copied(), out);
        }
    } else {
        out.extend_from_slice(&e.headers);
    }
    out.extend_from_slice(b"age: ");
    out.extend_from_slice(itoa::Buffer::new().format(age).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !nm && e.status != 204 && !(100..200).contains(&e.status) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if vary {
        super::compress::lines(out, enc);
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(ctx.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    super::cache_headers(out, ctx);
    ctx.cors_lines(out);
    if let Some(r) = &ctx.ratelimit {
        ratelimit_headers(out, r);
    }
    connection_header(out, ctx.head.minor, keep);
    out.extend_from_slice(b"\r\n");
    (!head_only && !body.is_empty()).then_some(body)
}

/// `etag: W/"..."`: the stored (identity) answer's validator, weak for an encoded body.
pub(crate) fn weak_etag(out: &mut Vec<u8>, value: &[u8]) {
    let v = value.trim_ascii();
    out.extend_from_slice(b"etag: ");
    if !v.starts_with(b"W/") {
        out.extend_from_slice(b"W/");
    }
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
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
    let body = hit_head(&mut out, ctx, e, e.age_s(now_ns), keep);
    let gone = |_| Error::downstream(Kind::ClientGone, "writing cached answer");
    match body {
        Some(b) if b.len() <= INLINE_BODY => {
            out.extend_from_slice(&b);
            conn.write_all(out).await.map_err(gone)?;
        }
        // The body goes out from the cache's memory in the same writev: a refcount, no copy.
        Some(b) => conn.write_head_body(out, b).await.map_err(gone)?,
        None => conn.write_all(out).await.map_err(gone)?,
    }
    Ok(next_after(keep, body_ok))
}
