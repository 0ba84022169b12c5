//! The request pipeline: the phases one request passes through, in one top-to-bottom
//! function ([`run_phases`]), and the one place where errors become HTTP answers
//! ([`error_response`]).
//!
//! Each phase either passes the request on (`Ok(..)`) or stops it with an [`Error`] that is
//! answered by [`handle`]. Phases still to come (resource policy, authorizers, throttling,
//! validation, cache) slot in where `run_phases` marks them.

pub mod cached;
pub mod ctx;

use std::io::Write;
use std::rc::Rc;

use bytes::Bytes;

use crate::auth::KeyRecord;
use crate::config::{Cluster, OnRedisError};
use crate::error::{Error, Kind, RateInfo};
use crate::http::conn::Conn;
use crate::http::h1::{Framing, RequestHead};
use crate::http::write::{json_message, status_line};
use crate::metrics::Counter;
use crate::route::trie::Lookup;
use crate::shard::{Shard, ShardSnap};
use crate::snapshot::{IntegrationRt, MockIntegration};
use crate::syntax::path::normalise_into;
use crate::syntax::template::Escape;
use crate::syntax::Method;
use crate::throttle::lease::{Decision, Lease};
use ctx::{BodyState, RequestCtx, RequestId};

/// What the connection does after a request.
pub enum Next {
    KeepAlive,
    Close,
    /// Close, draining what the client still sends so it reads the answer.
    Linger,
    /// The upstream switched protocols: relay bytes both ways from now on. Carries the
    /// upstream connection and bytes already read from it.
    Upgrade(crate::upstream::UpStream, Bytes),
}

/// Runs one request and answers it, whatever happens.
pub async fn handle(
    shard: &Rc<Shard>,
    ss: Rc<ShardSnap>,
    conn: &mut Conn,
    head: RequestHead,
) -> Next {
    let request_id = head
        .header(b"x-request-id")
        .and_then(RequestId::from_client)
        .unwrap_or_else(|| shard.request_id());
    let mut ctx = RequestCtx::new(head, request_id, std::mem::take(&mut conn.segs));
    ctx.https = conn.stream.is_tls();
    ctx.client_cert = conn.client_cert.clone();
    let redirect = ss
        .snap
        .config
        .listeners
        .get(conn.listener)
        .is_some_and(|l| l.redirect_https);
    let result = if redirect {
        answer_redirect(conn, &mut ctx, shard.drain.is_on()).await
    } else {
        run_phases(shard, &ss, conn, &mut ctx).await
    };
    let next = match result {
        Ok(next) => next,
        Err(e) => {
            count_error(shard, &e);
            answer_error(conn, &mut ctx, &e, shard.drain.is_on()).await
        }
    };
    if ctx.status != 0 {
        shard.metrics.add(Counter::for_status(ctx.status));
    }
    conn.segs = std::mem::take(&mut ctx.segs);
    next
}

/// The phases, in order. Returns what the connection does next once the answer is written.
async fn run_phases(
    shard: &Rc<Shard>,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
) -> Result<Next, Error> {
    let snap = &ss.snap;
    check_body_size(ctx, snap.limits.max_body)?;
    normalise_path(ctx)?;
    let api = resolve_stage(ss, conn.listener, ctx)?;
    let route = match_route(ss, api, ctx)?;
    // Resource policies and other authorizers slot in here.
    let key = authenticate(ss, ctx, api, route)?;
    throttle(shard, ss, ctx, api, route, key).await?;
    count_quota(shard, ss, key).await?;
    // Request validation slots in here.
    let stage = ctx.stage.map(|s| s.stage).unwrap_or_default();
    let r = &snap.apis[api].routes[route];
    match (&r.per_stage[stage], &r.cache[stage]) {
        (IntegrationRt::Mock(m), _) => answer_mock(conn, ctx, m, shard.drain.is_on()).await,
        (IntegrationRt::Http(h), Some(p)) => {
            let authorized = key.is_some();
            cached::serve(shard, ss, conn, ctx, h, p, api, authorized).await
        }
        (IntegrationRt::Http(h), None) => {
            crate::upstream::proxy::forward(shard, ss, conn, ctx, h).await
        }
    }
}

/// Refuses a declared body over `limits.max_body` before reading any of it (413).
fn check_body_size(ctx: &RequestCtx, max: u64) -> Result<(), Error> {
    match ctx.head.framing {
        Framing::Length(n) if n > max => Err(Error::downstream(
            Kind::BodyTooLarge,
            "declared Content-Length",
        )),
        _ => Ok(()),
    }
}

/// Splits and decodes the path; refuses dot segments and ambiguous encodings (400).
fn normalise_path(ctx: &mut RequestCtx) -> Result<(), Error> {
    let head = &ctx.head;
    let path = head.path_bytes();
    if path == b"*" {
        return Err(Error::downstream(Kind::NotFound, "OPTIONS *"));
    }
    let path = if path.is_empty() { &b"/"[..] } else { path };
    normalise_into(path, &mut ctx.segs)
        .map_err(|e| Error::downstream(Kind::BadRequest(e.message()), "path"))
}

/// Picks the API and stage from host and base path (404 when none matches).
fn resolve_stage(ss: &ShardSnap, listener: usize, ctx: &mut RequestCtx) -> Result<usize, Error> {
    let host = ctx.head.host_bytes().unwrap_or_default();
    let st = ss
        .snap
        .domains
        .resolve(listener, host, ctx.segs.view())
        .ok_or_else(|| Error::downstream(Kind::NotFound, "no domain mapping"))?;
    ctx.stage = Some(st);
    Ok(st.api)
}

/// Matches the route in the API's trie (404, or 405 with the allowed methods).
fn match_route(ss: &ShardSnap, api: usize, ctx: &mut RequestCtx) -> Result<usize, Error> {
    let base = ctx.stage.map(|s| s.base_len).unwrap_or_default();
    match ss.snap.apis[api]
        .trie
        .lookup(ctx.head.method, ctx.segs.skip(base))
    {
        Lookup::Found(route, caps) => {
            ctx.captures = caps;
            Ok(*route)
        }
        Lookup::MethodNotAllowed(allow) => {
            Err(Error::downstream(Kind::MethodNotAllowed(allow), "route"))
        }
        Lookup::NotFound => Err(Error::downstream(Kind::NotFound, "route")),
    }
}

/// Checks the API key on routes with `api_key_required` (403 when it is missing, unknown or
/// disabled, or when none of the key's plans covers this stage). Returns the key and its plan.
fn authenticate<'s>(
    ss: &'s ShardSnap,
    ctx: &RequestCtx,
    api: usize,
    route: usize,
) -> Result<Option<(&'s KeyRecord, usize)>, Error> {
    if !ss.snap.apis[api].routes[route].api_key_required {
        return Ok(None);
    }
    let forbidden = |why: &'static str| Error::downstream(Kind::Forbidden, why);
    let stage = ctx.stage.map(|s| s.stage).unwrap_or_default();
    let presented = ctx
        .head
        .header(b"x-api-key")
        .ok_or_else(|| forbidden("no x-api-key"))?;
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
    Ok(Some((key, plan)))
}

/// A stable id for a per-key bucket: the same on every shard.
fn key_bucket_id(key: &str, plan: &str, route: Option<usize>) -> u64 {
    ahash::RandomState::with_seeds(11, 22, 33, 44).hash_one((key, plan, route))
}

/// Turns a throttle decision into the tightest `RateLimit-*` view so far, or a 429.
fn record(tightest: &mut Option<RateInfo>, d: Decision, burst: u64) -> Result<(), Error> {
    match d {
        Decision::Allowed {
            remaining,
            reset_ns,
        } => {
            if tightest.is_none_or(|t| remaining < t.remaining) {
                *tightest = Some(RateInfo {
                    limit: burst,
                    remaining,
                    reset_s: reset_ns.div_ceil(1_000_000_000),
                    retry_after_s: 0,
                });
            }
            Ok(())
        }
        Decision::Refused { retry_ns } => {
            let retry = retry_ns.div_ceil(1_000_000_000).max(1);
            Err(Error::downstream(
                Kind::Throttled(RateInfo {
                    limit: burst,
                    remaining: 0,
                    reset_s: retry,
                    retry_after_s: retry,
                }),
                "throttled",
            ))
        }
    }
}

/// A fleet-wide limit: the shard's lease when it holds tokens, else one Redis round trip for
/// a new lease; while Redis is out, the node's own share (`local`) or a refusal (`deny`).
async fn fleet_take(
    shard: &Shard,
    c: &Cluster,
    lease: &Lease,
    name: impl FnOnce() -> String,
    fallback: impl FnOnce(u64) -> Decision,
) -> Decision {
    let now = crate::throttle::now_ns();
    if let Some(d) = lease.take_local(now) {
        return d;
    }
    if now < lease.refused_until.get() {
        return Decision::Refused {
            retry_ns: lease.refused_until.get() - now,
        };
    }
    match shard
        .redis(c)
        .take(&name(), lease.bucket.rate, lease.size())
        .await
    {
        Ok((0, _, wait_ns)) => {
            shard.redis_ok();
            lease.refused_until.set(crate::throttle::now_ns() + wait_ns);
            Decision::Refused { retry_ns: wait_ns }
        }
        Ok((granted, remaining, reset_ns)) => {
            shard.redis_ok();
            lease.fill(granted, remaining, reset_ns, crate::throttle::now_ns())
        }
        Err(e) => {
            shard.redis_failed(&e, c.on_redis_error);
            match c.on_redis_error {
                OnRedisError::Local => fallback(crate::throttle::now_ns()),
                OnRedisError::Deny => Decision::Refused {
                    retry_ns: 1_000_000_000,
                },
            }
        }
    }
}

/// Salt for the per-key fallback buckets (the node's share while Redis is out).
const FALLBACK_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Applies the limits in order — key + route, key (plan), route, stage, gateway — and refuses
/// with 429 at the first that has no token. Records the tightest for `RateLimit-*` headers.
/// With `[cluster]`, gateway, stage and plan limits are fleet-wide (leased from Redis).
async fn throttle(
    shard: &Shard,
    ss: &ShardSnap,
    ctx: &mut RequestCtx,
    api: usize,
    route: usize,
    key: Option<(&KeyRecord, usize)>,
) -> Result<(), Error> {
    let stage = ctx.stage.map(|s| s.stage).unwrap_or_default();
    let snap = &ss.snap;
    let r = &snap.apis[api].routes[route];
    let key_limits = key.map(|(k, p)| (k, &snap.plans[p]));
    let any = key_limits.is_some_and(|(_, p)| p.throttle.is_some() || !p.route_throttle.is_empty())
        || r.limits[stage].is_some()
        || snap.apis[api].stage_limits[stage].is_some()
        || snap.gateway_limit.is_some();
    if !any {
        return Ok(());
    }
    let cluster = snap.config.cluster.as_ref();
    let mut tightest: Option<RateInfo> = None;
    if let Some((k, plan)) = key_limits {
        let route_rate = plan
            .route_throttle
            .iter()
            .find(|(a, ri, _)| *a == api && *ri == route)
            .map(|&(_, _, rate)| rate);
        for (rate, on_route) in [(route_rate, true), (plan.throttle, false)] {
            let Some(rate) = rate else { continue };
            let id = key_bucket_id(&k.id, &plan.name, on_route.then_some(route));
            let d = match cluster {
                None => shard.key_lease(id, rate).take(crate::throttle::now_ns()),
                Some(c) => {
                    let lease = shard.key_lease_for(id, rate, c.nodes as usize);
                    // The node's share is only materialised while Redis is out.
                    let fallback = |now| {
                        shard
                            .key_lease(
                                id ^ FALLBACK_SALT,
                                crate::snapshot::share(rate, c.nodes as u64),
                            )
                            .take(now)
                    };
                    let name = || {
                        if on_route {
                            format!("key:{}:{}:{}", plan.name, k.id, r.key)
                        } else {
                            format!("key:{}:{}", plan.name, k.id)
                        }
                    };
                    fleet_take(shard, c, &lease, name, fallback).await
                }
            };
            record(&mut tightest, d, rate.burst)?;
        }
    }
    for idx in [
        r.limits[stage],
        snap.apis[api].stage_limits[stage],
        snap.gateway_limit,
    ]
    .into_iter()
    .flatten()
    {
        let lease = &ss.leases[idx];
        let d = match (cluster, &snap.fleet[idx]) {
            (Some(c), Some(name)) => {
                fleet_take(
                    shard,
                    c,
                    lease,
                    || name.clone(),
                    |now| ss.fallback_leases[idx].take(now),
                )
                .await
            }
            _ => lease.take(crate::throttle::now_ns()),
        };
        record(&mut tightest, d, lease.bucket.rate.burst)?;
    }
    ctx.ratelimit = tightest;
    Ok(())
}

/// Counts the request against the key's plan: the quota (429 "Limit Exceeded" once spent)
/// and the daily usage report. With `[cluster]` the quota is fleet-wide: shards lease chunks
/// of it from Redis.
async fn count_quota(
    shard: &Shard,
    ss: &ShardSnap,
    key: Option<(&KeyRecord, usize)>,
) -> Result<(), Error> {
    let Some((k, p)) = key else { return Ok(()) };
    let plan = &ss.snap.plans[p];
    let cell = shard.quota_cell(&plan.name, &k.id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let day = (now / 86_400) as i64;
    let refuse = |q: Option<crate::config::Quota>| {
        let retry = q
            .map(|q| q.period.seconds_to_next(now))
            .unwrap_or(60)
            .max(1);
        Error::downstream(
            Kind::QuotaExceeded {
                retry_after_s: retry,
            },
            "quota",
        )
    };
    let (Some(c), Some(q)) = (ss.snap.config.cluster.as_ref(), plan.quota) else {
        return cell
            .take(plan.quota, day)
            .map(|_| ())
            .map_err(|_| refuse(plan.quota));
    };
    let period = q.period.index(day);
    let id = key_bucket_id(&k.id, &plan.name, None) ^ FALLBACK_SALT.rotate_left(7);
    match shard.quota_take_local(id, period) {
        Some(true) => {
            let _ = cell.take(None, day);
            return Ok(());
        }
        // Redis said the quota is spent less than a second ago.
        Some(false) => return Err(refuse(Some(q))),
        None => {}
    }
    let chunk = (q.limit / (c.nodes as u64 * shard.shared.shards as u64 * 100)).clamp(1, 100);
    let name = format!("{}:{}:{}", plan.name, k.id, period);
    match shard
        .redis(c)
        .quota(
            &name,
            q.limit,
            chunk,
            q.period.seconds_to_next(now) + 86_400,
        )
        .await
    {
        Ok((0, _)) => {
            shard.redis_ok();
            shard.quota_spent(id, period);
            Err(refuse(Some(q)))
        }
        Ok((granted, _)) => {
            shard.redis_ok();
            shard.quota_fill(id, period, granted - 1);
            let _ = cell.take(None, day);
            Ok(())
        }
        Err(e) => {
            shard.redis_failed(&e, c.on_redis_error);
            match c.on_redis_error {
                OnRedisError::Local => cell
                    .take(plan.quota, day)
                    .map(|_| ())
                    .map_err(|_| refuse(Some(q))),
                OnRedisError::Deny => Err(refuse(Some(q))),
            }
        }
    }
}

/// `RateLimit-Limit`, `-Remaining`, `-Reset` (IETF RateLimit header fields).
pub fn ratelimit_headers(out: &mut Vec<u8>, r: &RateInfo) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"ratelimit-limit: ");
    out.extend_from_slice(n.format(r.limit).as_bytes());
    out.extend_from_slice(b"\r\nratelimit-remaining: ");
    out.extend_from_slice(n.format(r.remaining).as_bytes());
    out.extend_from_slice(b"\r\nratelimit-reset: ");
    out.extend_from_slice(n.format(r.reset_s).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// What the connection does after an answer the gateway wrote itself: stay, close, or — when
/// part of the request body is still unread — close lingering, so the client sees the answer.
pub fn next_after(keep: bool, body_ok: bool) -> Next {
    if keep {
        Next::KeepAlive
    } else if body_ok {
        Next::Close
    } else {
        Next::Linger
    }
}

/// `X-Cache` and, when a client's request for a fresh copy was ignored, a `Warning`.
pub fn cache_headers(out: &mut Vec<u8>, ctx: &RequestCtx) {
    if let Some(s) = ctx.cache_status {
        out.extend_from_slice(b"x-cache: ");
        out.extend_from_slice(s.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(w) = ctx.cache_warning {
        out.extend_from_slice(b"warning: 199 tollgate \"");
        out.extend_from_slice(w.as_bytes());
        out.extend_from_slice(b"\"\r\n");
    }
}

/// Whether the connection can carry another request after an answer made without reading
/// the body: only if the whole body is already buffered, and then it is skipped.
pub fn skip_unread_body(conn: &mut Conn, ctx: &mut RequestCtx) -> bool {
    if ctx.body == BodyState::Done {
        return true;
    }
    if ctx.body == BodyState::Broken {
        return false;
    }
    match ctx.head.framing {
        Framing::None => true,
        Framing::Length(n) if (conn.buf.len() as u64) >= n => {
            let _ = conn.buf.split_to(n as usize);
            ctx.body = BodyState::Done;
            true
        }
        _ => false,
    }
}

/// Writes a gateway error answer: JSON `{"message": ...}`, `x-request-id`, `Allow` on 405.
pub fn error_response(
    out: &mut Vec<u8>,
    e: &Error,
    minor: u8,
    request_id: &str,
    keep_alive: bool,
    head_only: bool,
) {
    let mut body = Vec::with_capacity(64);
    json_message(&mut body, e.client_message());
    status_line(out, minor, e.status());
    let _ = write!(
        out,
        "content-type: application/json\r\ncontent-length: {}\r\nx-request-id: {}\r\n",
        body.len(),
        request_id
    );
    match &e.kind {
        Kind::Throttled(r) => {
            out.extend_from_slice(b"retry-after: ");
            out.extend_from_slice(itoa::Buffer::new().format(r.retry_after_s).as_bytes());
            out.extend_from_slice(b"\r\n");
            ratelimit_headers(out, r);
        }
        Kind::QuotaExceeded { retry_after_s } => {
            out.extend_from_slice(b"retry-after: ");
            out.extend_from_slice(itoa::Buffer::new().format(*retry_after_s).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        _ => {}
    }
    if let Kind::MethodNotAllowed(allow) = &e.kind {
        out.extend_from_slice(b"allow: ");
        for (i, m) in allow.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(m.as_str().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    connection_header(out, minor, keep_alive);
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
}

/// `connection: close` when closing; `connection: keep-alive` for HTTP/1.0 clients that stay.
pub fn connection_header(out: &mut Vec<u8>, minor: u8, keep_alive: bool) {
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
}

/// Counts a refusal or failure by what it was.
pub fn count_error(shard: &Shard, e: &Error) {
    let c = match e.kind {
        Kind::Throttled(_) => Counter::Throttled,
        Kind::QuotaExceeded { .. } => Counter::QuotaExceeded,
        Kind::Forbidden => Counter::Forbidden,
        Kind::BadRequest(_) | Kind::HeadTooLarge | Kind::BodyTooLarge | Kind::HeadTimeout => {
            Counter::BadRequests
        }
        Kind::BadGateway | Kind::NoHealthyUpstream | Kind::GatewayTimeout => {
            Counter::UpstreamErrors
        }
        _ => return,
    };
    shard.metrics.add(c);
}

async fn answer_error(conn: &mut Conn, ctx: &mut RequestCtx, e: &Error, draining: bool) -> Next {
    if e.kind == Kind::ClientGone {
        return Next::Close;
    }
    match e.status() {
        500..=599 => {
            tracing::warn!(request_id = %ctx.request_id, status = e.status(), error = %e, "request failed")
        }
        _ => {
            tracing::debug!(request_id = %ctx.request_id, status = e.status(), error = %e, "request refused")
        }
    }
    let body_ok = skip_unread_body(conn, ctx);
    let keep = ctx.head.keep_alive && !e.closes_connection() && body_ok && !draining;
    ctx.status = e.status();
    let mut out = Vec::with_capacity(256);
    error_response(
        &mut out,
        e,
        ctx.head.minor,
        ctx.request_id.as_str(),
        keep,
        ctx.head.method == Method::Head,
    );
    if conn.stream.write_all(out).await.is_err() {
        return Next::Close;
    }
    next_after(keep, body_ok)
}

/// `redirect_https` listeners: 308 to the same host and path (and query) over https.
async fn answer_redirect(
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    draining: bool,
) -> Result<Next, Error> {
    let host = ctx
        .head
        .host_bytes()
        .filter(|h| !h.is_empty() && h.iter().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Error::downstream(
                Kind::BadRequest("A Host header is needed to redirect to https"),
                "redirect",
            )
        })?;
    // Drop an explicit :80; keep any other port as written.
    let host = host.strip_suffix(b":80").unwrap_or(host).to_vec();
    let body_ok = skip_unread_body(conn, ctx);
    let keep = ctx.head.keep_alive && body_ok && !draining;
    let mut out = Vec::with_capacity(256);
    ctx.status = 308;
    status_line(&mut out, ctx.head.minor, 308);
    out.extend_from_slice(b"location: https://");
    out.extend_from_slice(&host);
    let path = ctx.head.path_bytes();
    out.extend_from_slice(if path.is_empty() { b"/" } else { path });
    if let Some(q) = ctx.head.query_bytes() {
        out.push(b'?');
        out.extend_from_slice(q);
    }
    let _ = write!(
        out,
        "\r\ncontent-length: 0\r\nx-request-id: {}\r\n",
        ctx.request_id
    );
    connection_header(&mut out, ctx.head.minor, keep);
    out.extend_from_slice(b"\r\n");
    conn.stream
        .write_all(out)
        .await
        .map_err(|_| Error::downstream(Kind::ClientGone, "writing redirect"))?;
    Ok(next_after(keep, body_ok))
}

/// Answers from a `mock` integration: status, headers and body with variables substituted.
async fn answer_mock(
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    m: &MockIntegration,
    draining: bool,
) -> Result<Next, Error> {
    let body_ok = skip_unread_body(conn, ctx);
    let keep = ctx.head.keep_alive && body_ok && !draining;
    let mut body = Vec::new();
    m.body.render(
        &mut body,
        &ctx.vars(&conn.peer_ip, Escape::Raw),
        |i, out| {
            ctx.path_var(i, |s, more| {
                out.extend_from_slice(s.as_bytes());
                if more {
                    out.push(b'/');
                }
            })
        },
    );
    let mut out = Vec::with_capacity(256 + body.len());
    ctx.status = m.status;
    status_line(&mut out, ctx.head.minor, m.status);
    for (name, t) in &m.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        t.render(
            &mut out,
            &ctx.vars(&conn.peer_ip, Escape::Header),
            |i, o| {
                ctx.path_var(i, |s, more| {
                    // Header values cannot carry CR/LF; decoded path text could.
                    o.extend(s.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
                    if more {
                        o.push(b'/');
                    }
                })
            },
        );
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(
        out,
        "content-length: {}\r\nx-request-id: {}\r\n",
        body.len(),
        ctx.request_id
    );
    if !m.has_content_type && !body.is_empty() {
        // Amazon API Gateway's default for mock answers.
        out.extend_from_slice(b"content-type: application/json\r\n");
    }
    if let Some(r) = &ctx.ratelimit {
        ratelimit_headers(&mut out, r);
    }
    connection_header(&mut out, ctx.head.minor, keep);
    out.extend_from_slice(b"\r\n");
    if ctx.head.method != Method::Head {
        out.extend_from_slice(&body);
    }
    conn.stream
        .write_all(out)
        .await
        .map_err(|_| Error::downstream(Kind::ClientGone, "writing mock answer"))?;
    Ok(next_after(keep, body_ok))
}
