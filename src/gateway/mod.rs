//! The request pipeline: the phases one request passes through, in one top-to-bottom
//! function ([`run_phases`]), over a typed [`ctx::RequestCtx`], and the one exit
//! ([`finish::finish`]) every request leaves through.
//!
//! Each phase is a function that passes the request on (`Ok(..)`), or stops it with an
//! [`Error`] (which `finish` answers), or answers it ([`finish::Outcome`]). Files by phase:
//! routing is here; [`policy`] checks the resource policy; [`authorizer`] runs the route's
//! authorizer; [`api_key`] authenticates; [`limits`] throttles and counts quotas;
//! [`cached`] serves the stage cache; [`proxy`] is the `http` integration; [`answers`] holds
//! the answers made without an upstream (mock, redirect); [`validate`] checks parameters and
//! bodies; [`cors`] and [`responses`] shape what the API answers; [`conn`] plugs the pipeline
//! into the HTTP/1.1 and HTTP/2 connections.

pub(crate) mod answers;
pub(crate) mod api_key;
pub(crate) mod authorizer;
pub(crate) mod cached;
pub(crate) mod call;
pub(crate) mod compress;
pub(crate) mod conn;
pub(crate) mod ctx;
pub(crate) mod finish;
pub(crate) mod limits;
pub(crate) mod mapping;
pub(crate) mod policy;
pub(crate) mod proxy;
pub(crate) mod record;
pub(crate) mod responses;
pub(crate) mod target;
pub(crate) mod transform;
pub(crate) mod validate;
pub(crate) mod ws;

use std::rc::Rc;

use bytes::Bytes;

use crate::cache::Stats;
use crate::config::CacheMode;
use crate::config::Underscores;
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::http::h1::{Framing, RequestHead};
use crate::route::trie::Lookup;
use crate::shard::{Shard, ShardSnap};
use crate::snapshot::IntegrationRt;
use crate::syntax::path::normalise_into;
use crate::syntax::Method;
use ctx::{RequestCtx, RequestId, RouteMatch};
use finish::{Exit, Outcome};

/// What the connection does after a request.
pub(crate) enum Next {
    KeepAlive,
    Close,
    /// Close, draining what the client still sends so it reads the answer.
    Linger,
    /// The upstream switched protocols: relay bytes both ways from now on. Carries the
    /// upstream connection and bytes already read from it.
    Upgrade(crate::upstream::UpStream, Bytes),
    /// A WebSocket API's connection, upgraded: served message by message from now on.
    WebSocket(Box<ws::Session>),
}

/// Runs one request and answers it, whatever happens.
pub(crate) async fn handle(
    shard: &Rc<Shard>,
    ss: Rc<ShardSnap>,
    conn: &mut Conn,
    head: RequestHead,
) -> Next {
    let request_id = head
        .header(b"x-request-id")
        .and_then(RequestId::from_client)
        .unwrap_or_else(|| shard.request_id());
    let head_len = head.raw.len();
    let segs = std::mem::take(&mut conn.segs);
    // Holds the request from here on, and records it even if this future is dropped (an
    // HTTP/2 stream the client resets). The state is built in it, not moved into it.
    let mut exit = Exit::new(
        shard,
        ss.clone(),
        conn,
        head_len,
        RequestCtx::new(head, request_id, segs),
    );
    let ctx = &mut exit.ctx;
    let trusted = &ss.snap.config.server.trusted_proxies;
    if !trusted.is_empty() {
        let peer = conn.peer.ip();
        let ip = policy::source_ip(peer, ctx, trusted);
        if ip != peer {
            ctx.forwarded = Some(Box::new((ip, ip.to_string().into())));
        }
    }
    ctx.https = conn.stream.is_tls();
    ctx.h2 = matches!(conn.stream, crate::http::conn::Stream::H2(_));
    ctx.client_cert = conn.client_cert.clone();
    if ss.snap.config.tracing.is_some() {
        let h = &ctx.head;
        let lines = |name: &'static [u8]| {
            h.headers()
                .filter(move |(n, _)| crate::http::name_eq(n, name))
                .map(|(_, v)| v)
        };
        // W3C Trace Context: two traceparent lines are no parent (the trace restarts);
        // several tracestate lines are one list.
        let mut parents = lines(b"traceparent");
        let parent = parents.next().filter(|_| parents.next().is_none());
        let mut states = lines(b"tracestate");
        let state: Option<std::borrow::Cow<[u8]>> = states.next().map(|first| {
            let mut rest = states.peekable();
            if rest.peek().is_none() {
                first.into()
            } else {
                let mut all = first.to_vec();
                for v in rest {
                    all.push(b',');
                    all.extend_from_slice(v);
                }
                all.into()
            }
        });
        let mut t = crate::observe::trace::TraceCtx::from_headers(
            parent,
            state.as_deref(),
            h.header(b"x-amzn-trace-id"),
            &shard.ids,
        );
        t.client_span = Some(shard.ids.span());
        t.auth_span = Some(shard.ids.span());
        ctx.trace = Some(t);
    }
    let redirect = ss
        .snap
        .config
        .listeners
        .get(conn.listener)
        .is_some_and(|l| l.redirect_https);
    let result = if redirect {
        answers::redirect(&exit.ctx).map(Outcome::Answer)
    } else {
        run_phases(shard, &ss, conn, &mut exit.ctx).await
    };
    // By reference: the request state (over a kilobyte) is not moved into the exit's future.
    finish::finish(shard, conn, result, &mut exit).await
}

/// The phases, in order.
async fn run_phases(
    shard: &Rc<Shard>,
    ss: &Rc<ShardSnap>,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
) -> Result<Outcome, Error> {
    let snap = &ss.snap;
    // mTLS: a connection without a certificate its listener accepts is answered 403 before
    // anything else, as Amazon API Gateway answers it (the domain refuses, whatever the path).
    if let Some(c) = &ctx.client_cert {
        let why = match &c.recheck {
            // A certificate sent: its verdict, checked again once it is a minute old.
            Some(r) => r.refusal(
                snap.tls
                    .get(conn.listener)
                    .and_then(|t| t.as_ref())
                    .and_then(|t| t.clients.as_deref()),
            ),
            None => c.refused.clone(),
        };
        if let Some(why) = why {
            return Err(Error::downstream(
                Kind::AccessDenied("Forbidden"),
                format!("client certificate refused: {why}"),
            ));
        }
    }
    normalise_path(ctx)?;
    resolve_stage(ss, conn.listener, ctx)?;
    canary(shard, ss, ctx);
    if let Some(st) = ctx.stage {
        if let Some(Some(c)) = snap
            .apis
            .get(st.api)
            .and_then(|a| a.compression.get(st.stage))
        {
            ctx.compress = Some((c.clone(), compress::accepted(&ctx.head)));
        }
    }
    if let Some(a) = cors(ss, ctx) {
        return Ok(Outcome::Answer(a));
    }
    // After the stage: these refusals carry the API's CORS headers and gateway responses.
    // TRACE (and TRACK) would send the request back, cookies and the gateway's own headers
    // included (cross-site tracing): refused whatever the route, as nginx refuses them.
    let h = &ctx.head;
    if h.method == Method::Trace || (h.method == Method::Other && h.method_bytes() == b"TRACK") {
        return Err(Error::downstream(
            Kind::MethodNotAllowed(Method::ANY.to_vec()),
            "TRACE request",
        ));
    }
    // Methods are case-sensitive (RFC 9110 9.1): `get` is no GET, and would pass an `ANY`
    // route to an upstream that upper-cases it (Django, Werkzeug) around the GET route's
    // checks. Refused, as nginx refuses any method with a small letter.
    if h.method == Method::Other && other_spelling(h.method_bytes()) {
        return Err(Error::downstream(
            Kind::BadRequest("Invalid method: methods are case-sensitive"),
            "a known method spelt in another case",
        ));
    }
    let ws_api = ctx.stage.is_some_and(|st| snap.apis[st.api].ws.is_some());
    let manage = ws_api.then(|| ws::target(ss, ctx)).flatten();
    if manage.is_none() {
        // `@connections` refuses a message over its limit itself, as Amazon's API does.
        check_body_size(ctx, snap.limits.max_body)?;
    }
    check_header_names(ctx, snap.limits.underscores_in_headers)?;
    if ws_api {
        // Sampled as an http route's request is, before anything (an authorizer, `$connect`'s
        // integration) is told the trace.
        if let (Some(t), Some(st)) = (ctx.trace.as_mut(), ctx.stage) {
            t.decide(snap.apis[st.api].trace_sample[st.stage]);
        }
        if let Some(id) = manage {
            return ws::manage(shard, ss, conn, ctx, id).await;
        }
        return ws::connect(shard, ss, conn, ctx).await;
    }
    if ctx.head.upgrade && matches!(conn.stream, crate::http::conn::Stream::H2(_)) {
        // An RFC 8441 extended CONNECT is for WebSocket APIs only (there is no tunnel to
        // relay it into over HTTP/2).
        // The 405 lists what is allowed (RFC 9110 15.5.6), as a plain CONNECT's does.
        return Err(Error::downstream(
            Kind::MethodNotAllowed(Method::ANY.to_vec()),
            "extended CONNECT to an http API",
        ));
    }
    let m = match_route(ss, ctx)?;
    if let Some(t) = ctx.trace.as_mut() {
        t.decide(snap.apis[m.api].trace_sample[m.stage]);
    }
    // (Checked here: routes without a policy or a key pay a branch, not a call.)
    if snap.config.apis[m.api].resource_policy.is_some() {
        policy::phase(ss, conn.peer.ip(), ctx, m)?;
    }
    authorizer::authorize(shard, ss, conn, ctx, m).await?;
    api_key::authenticate(ss, ctx, m)?;
    if ctx.principal.api_key.is_some() {
        limits::quota_spent(shard, ss, ctx)?;
    }
    limits::throttle(shard, ss, ctx, m).await?;
    validate::check(ss, conn, ctx, m).await?;
    limits::count_quota(shard, ss, ctx).await?;
    let api = &snap.apis[m.api];
    let r = &api.routes[m.route];
    if let IntegrationRt::Http(h) = &r.per_stage[m.stage] {
        mapping::prepare(ss, conn, ctx, m, h).await?;
        mapping::check_identity_path(ctx, &conn.peer_ip, h)?;
    }
    let http = matches!(r.per_stage[m.stage], IntegrationRt::Http(_));
    // Checked here: a route without templates does not build (and copy) their future.
    let mock_status = if snap.config.apis[m.api].routes[m.route].transform.is_some() {
        transform::request(ss, conn, ctx, m, http).await?
    } else {
        None
    };
    // An unsafe method on a stage with an http-mode cache invalidates what it changed.
    let invalidates = api.caches[m.stage]
        .as_ref()
        .filter(|c| c.mode == CacheMode::Http && !ctx.head.method.is_safe());
    match (&r.per_stage[m.stage], &r.cache[m.stage], invalidates) {
        (IntegrationRt::Mock(mock), _, _) => {
            let mut a = answers::mock(ctx, &conn.peer_ip, mock);
            if let Some(s) = mock_status {
                a.status = s;
            }
            match &ctx.transform {
                Some((t, vars)) => {
                    let mut headers: Vec<(&[u8], &[u8])> =
                        crate::http::h1::header_lines(&a.headers).collect();
                    if let Some(c) = a.content_type {
                        headers.push((b"content-type", c.as_bytes()));
                    }
                    let out = transform::respond(
                        t,
                        vars,
                        transform::Answered {
                            status: a.status,
                            headers,
                            body: &a.body,
                            json: mock.json.as_deref(),
                        },
                    )?;
                    Ok(Outcome::Answer(out.unwrap_or(a)))
                }
                None => Ok(Outcome::Answer(a)),
            }
        }
        (IntegrationRt::Http(h), p, Some(c)) => {
            if p.is_some() {
                // A cached route: this request bypasses the cache, as any non-GET does.
                Stats::add(&c.stats.bypasses);
                ctx.cache_status = Some("Bypass");
            }
            let plain_keys = api.plain_keys[m.stage];
            cached::forward_invalidating(shard, ss, conn, ctx, h, c, plain_keys)
                .await
                .map(Outcome::Sent)
        }
        (IntegrationRt::Http(h), Some(p), None) => cached::serve(shard, ss, conn, ctx, h, p)
            .await
            .map(Outcome::Sent),
        (IntegrationRt::Http(h), None, None) => proxy::forward(shard, ss, conn, ctx, h)
            .await
            .map(Outcome::Sent),
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

/// With `limits.underscores_in_headers = "reject"`, refuses header names with `_` (400).
fn check_header_names(ctx: &RequestCtx, policy: Underscores) -> Result<(), Error> {
    if policy == Underscores::Reject && ctx.head.headers().any(|(n, _)| n.contains(&b'_')) {
        return Err(Error::downstream(
            Kind::BadRequest("Invalid header name"),
            "underscore in a header name",
        ));
    }
    Ok(())
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
fn resolve_stage(ss: &ShardSnap, listener: usize, ctx: &mut RequestCtx) -> Result<(), Error> {
    let host = ctx.head.host_bytes().unwrap_or_default();
    let st = ss
        .snap
        .domains
        .resolve(listener, host, ctx.segs.view())
        .ok_or_else(|| Error::downstream(Kind::NotFound, "no domain mapping"))?;
    ctx.stage = Some(st);
    Ok(())
}

/// A stage with a canary sends that share of its requests to the canary's stage, each
/// request drawn on its own (as Amazon API Gateway does).
fn canary(shard: &Shard, ss: &ShardSnap, ctx: &mut RequestCtx) {
    let Some(st) = ctx.stage else { return };
    let Some(Some(c)) = ss
        .snap
        .apis
        .get(st.api)
        .and_then(|a| a.canaries.get(st.stage))
    else {
        return;
    };
    if shard.ids.chance(c.percent / 100.0) {
        ctx.stage = Some(crate::route::StageRef {
            api: c.api,
            stage: c.stage,
            base_len: st.base_len,
        });
        ctx.canary = true;
    }
}

/// On an API with `cors`: answers a preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) whatever the path, before routing, authorizers and
/// throttles, as Amazon API Gateway does; any other request carries the API's CORS headers
/// to its answer, errors included.
fn cors(ss: &ShardSnap, ctx: &mut RequestCtx) -> Option<finish::Answer> {
    let st = ctx.stage?;
    let c = ss.snap.apis.get(st.api)?.cors.as_ref()?;
    let h = &ctx.head;
    if h.method == crate::syntax::Method::Options {
        // A preflight names the method it asks for: an empty one is no preflight.
        if let (Some(origin), Some(method)) = (
            h.header(b"origin"),
            h.header(b"access-control-request-method")
                .filter(|m| !m.is_empty()),
        ) {
            return Some(c.preflight(origin, method, h.header(b"access-control-request-headers")));
        }
    }
    ctx.cors = Some(c.clone());
    None
}

/// Matches the route in the API's trie (404, or 405 with the allowed methods).
fn match_route(ss: &ShardSnap, ctx: &mut RequestCtx) -> Result<RouteMatch, Error> {
    let st = ctx
        .stage
        .ok_or_else(|| Error::downstream(Kind::NotFound, "no stage"))?;
    match ss.snap.apis[st.api]
        .trie
        .lookup(ctx.head.method, ctx.segs.skip(st.base_len))
    {
        Lookup::Found(route, caps) => {
            ctx.captures = caps;
            let m = RouteMatch {
                api: st.api,
                stage: st.stage,
                route: *route,
            };
            ctx.route = Some(m);
            Ok(m)
        }
        Lookup::MethodNotAllowed(allow) => {
            Err(Error::downstream(Kind::MethodNotAllowed(allow), "route"))
        }
        Lookup::NotFound => Err(Error::downstream(Kind::NotFound, "route")),
    }
}

/// `X-Cache` and, when a client's request for a fresh copy was ignored, a `Warning`.
pub(crate) fn cache_headers(out: &mut Vec<u8>, ctx: &RequestCtx) {
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

/// A known method (or TRACK) in another case than its own: `get`, `Post`, `track`.
#[cold]
fn other_spelling(m: &[u8]) -> bool {
    m.eq_ignore_ascii_case(b"TRACK") || Method::from_bytes(&m.to_ascii_uppercase()) != Method::Other
}
