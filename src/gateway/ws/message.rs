//! What a connection's events do once it is open: each message finds its API and stage in
//! the snapshot current then, its route by the selection expression, passes the route's
//! throttles and the key's quota and calls its integration (a two-way route's answer is what
//! goes back; a failure is Amazon's "Internal server error" message); `$disconnect` is called
//! once at the end, best effort. Each message is one access-log line.

use std::rc::Rc;

use serde_json::{json, Value};
use tungstenite::Message;

use super::integration::{integrate, integrate_with, peer};
use super::session::Ended;
use super::Session;
use crate::error::{Error, Kind};
use crate::gateway::ctx::{RequestCtx, RouteMatch};
use crate::shard::{Shard, ShardSnap};
use crate::upstream::fetch::Fetched;

/// The API, stage and route a message goes to, in the snapshot current now.
fn locate(ss: &ShardSnap, s: &Session) -> Option<(usize, usize)> {
    locate_names(ss, &s.api, &s.stage)
}

/// A WebSocket API's and its stage's places in a snapshot, by name.
pub(crate) fn locate_names(ss: &ShardSnap, api: &str, stage: &str) -> Option<(usize, usize)> {
    let a = ss
        .snap
        .apis
        .iter()
        .position(|a| a.name == api && a.ws.is_some())?;
    let st = ss.snap.apis[a].stages.iter().position(|n| n == stage)?;
    Some((a, st))
}

/// The usage plan `$connect`'s API key was counted under (`plan`, by name), found again in
/// `ss`: a reload may have moved it in the list, or removed it (or the stage from it: the
/// key's plan limits then no longer apply to this connection).
fn replan(ss: &ShardSnap, ctx: &mut RequestCtx, at: (usize, usize), plan: &str) {
    let Some(k) = &mut ctx.principal.api_key else {
        return;
    };
    match ss
        .snap
        .plans
        .iter()
        .position(|p| p.name == plan && p.stages.contains(&at))
    {
        Some(i) => k.plan = i,
        None => ctx.principal.api_key = None,
    }
}

/// One message: its route, its integration, and what goes back (two-way routes, errors);
/// `None` when the connection's API or stage is no longer in the snapshot.
pub(super) async fn message(
    shard: &Rc<Shard>,
    s: &Session,
    data: bytes::Bytes,
    text: bool,
) -> Option<Option<Message>> {
    let ss = shard.snapshot();
    let (api, stage) = locate(&ss, s)?;
    let mut ctx = RequestCtx::new(s.head.clone(), shard.request_id(), Default::default());
    ctx.principal = s.principal.clone();
    replan(&ss, &mut ctx, (api, stage), &s.plan);
    ctx.stage = Some(crate::route::StageRef {
        api,
        stage,
        base_len: 0,
    });
    ctx.ws = Some((s.id.as_str().into(), "MESSAGE"));
    let (reply, status) = answer(shard, &ss, s, &mut ctx, &data, text).await;
    ctx.status = status;
    // One access-log line per message, as per request.
    let bytes_out = match &reply {
        Some(Message::Text(t)) => t.len() as u64,
        Some(Message::Binary(b)) => b.len() as u64,
        _ => 0,
    };
    crate::gateway::record::observe(
        shard,
        &ss,
        &crate::gateway::record::Record {
            ctx: Some(&ctx),
            status,
            bytes_in: data.len() as u64,
            bytes_out,
            from: Some(crate::gateway::record::From {
                peer: peer(s),
                tls: s.tls_version,
                h2: s.h2,
            }),
            ..Default::default()
        },
    );
    Some(reply)
}

/// What a message gets back, and the status its log line says.
async fn answer(
    shard: &Rc<Shard>,
    ss: &ShardSnap,
    s: &Session,
    ctx: &mut RequestCtx,
    data: &[u8],
    text: bool,
) -> (Option<Message>, u16) {
    let Some(st) = ctx.stage else {
        return (None, 500);
    };
    let Some(ws) = ss.snap.apis[st.api].ws.as_ref() else {
        return (None, 500);
    };
    // A binary message is read as JSON as a text one is (its bytes may well be JSON).
    let key = serde_json::from_slice::<Value>(data).ok().and_then(|v| {
        let found = ws.selection.iter().try_fold(&v, |v, k| v.get(k))?;
        Some(match found {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    });
    let route = key
        .as_deref()
        .and_then(|k| ws.keys.get(k).copied())
        .or(ws.default);
    let request_id = ctx.request_id.as_str().to_string();
    let error = |message: &str, status: u16| {
        (
            Some(Message::text(
                json!({"message": message, "connectionId": s.id, "requestId": request_id})
                    .to_string(),
            )),
            status,
        )
    };
    // Refusals the gateway writes are in the log's error fields, as a request's are.
    let refused = |ctx: &mut RequestCtx, why: &'static str| {
        let e = Error::downstream(Kind::AccessDenied("Forbidden"), why);
        crate::gateway::finish::count_error(shard, &e);
        ctx.failure = Some(e);
    };
    let Some(route) = route else {
        refused(ctx, "no route for the message's key, and no $default route");
        return error("Forbidden", 403);
    };
    // The connection's client certificate, judged again as its verdict ages (a CA replaced,
    // a certificate expired): refused messages reach no integration.
    if let Some(r) = s.client_cert.as_ref().and_then(|c| c.recheck.as_ref()) {
        let certs = ss
            .snap
            .tls
            .get(s.listener)
            .and_then(|t| t.as_ref())
            .and_then(|t| t.clients.as_deref());
        if r.refusal(certs).is_some() {
            refused(
                ctx,
                "the connection's client certificate is no longer trusted",
            );
            return error("Forbidden", 403);
        }
    }
    let m = RouteMatch {
        api: st.api,
        stage: st.stage,
        route,
    };
    ctx.route = Some(m);
    // Each message is throttled as a request is: the route's, the stage's and the key's
    // buckets, with the same leases.
    // A refusal is in the log's error fields and the throttle figures, as a request's. A
    // key whose quota is spent takes nothing from the shared limits.
    if let Err(e) = crate::gateway::limits::quota_spent(shard, ss, ctx) {
        crate::gateway::finish::count_error(shard, &e);
        ctx.failure = Some(e);
        return error("Limit Exceeded", 429);
    }
    if let Err(e) = crate::gateway::limits::throttle(shard, ss, ctx, m).await {
        crate::gateway::finish::count_error(shard, &e);
        ctx.failure = Some(e);
        return error("Too Many Requests", 429);
    }
    // And counted against the quota of `$connect`'s API key's plan, as a request is.
    if let Err(e) = crate::gateway::limits::count_quota(shard, ss, ctx).await {
        crate::gateway::finish::count_error(shard, &e);
        ctx.failure = Some(e);
        return error("Limit Exceeded", 429);
    }
    let two_way = ss.snap.config.apis[st.api].routes[route].route_response;
    // The integration's time and target, for the access log and the route's
    // integration-latency metric, as a request's (connecting included).
    let called = std::time::Instant::now();
    let answer = integrate(ss, s, m, "MESSAGE", data, Some(&request_id)).await;
    ctx.timings.upstream_start = Some(called);
    ctx.timings.upstream_connected = Some(called);
    ctx.timings.first_byte = Some(std::time::Instant::now());
    if let Ok(Some(f)) = &answer {
        ctx.upstream = f.from;
    }
    match answer {
        Ok(Some(Fetched { status, body, .. })) if (200..300).contains(&status) => {
            ctx.integration_status = Some(status);
            // Back as the kind of message that asked (text only if it is UTF-8).
            let reply = two_way.then(|| match (text, String::from_utf8(body)) {
                (true, Ok(t)) => Message::text(t),
                (false, Ok(t)) => Message::binary(t.into_bytes()),
                (_, Err(e)) => Message::binary(e.into_bytes()),
            });
            (reply, 200)
        }
        Ok(None) => (None, 200),
        Ok(Some(Fetched { status, .. })) => {
            ctx.integration_status = Some(status);
            tracing::debug!(connection = %s.id, status, "websocket integration refused a message");
            ctx.failure = Some(Error::upstream(
                Kind::BadGateway,
                format!("the integration answered {status}"),
            ));
            error("Internal server error", 500)
        }
        Err(why) => {
            tracing::debug!(connection = %s.id, error = %why, "websocket integration failed");
            let answer = match why.side {
                // The gateway refused the message itself (an authorizer's value would make a
                // dot segment of the integration's path): its status and words, as a request
                // gets them.
                crate::error::Side::Downstream => error(&why.client_message(), why.status()),
                _ if why.status() == 504 => error("Endpoint request timed out", 504),
                _ => error("Internal server error", 502),
            };
            // What failed, in the log's error fields.
            ctx.failure = Some(why);
            answer
        }
    }
}

/// `$disconnect`, once, best effort.
/// A connection whose API a reload removed uses the snapshot that had it (`old`, else the
/// one [`super::reap`] last saw).
pub(super) async fn disconnect(
    shard: &Rc<Shard>,
    s: &Session,
    ended: Ended,
    old: Option<Rc<ShardSnap>>,
) {
    let seen = shard.ws_seen.borrow().clone();
    let Some((ss, (api, stage))) = [Some(shard.snapshot()), old, seen]
        .into_iter()
        .flatten()
        .find_map(|ss| locate(&ss, s).map(|at| (ss, at)))
    else {
        return;
    };
    let Some(route) = ss.snap.apis[api].ws.as_ref().and_then(|w| w.disconnect) else {
        return;
    };
    let m = RouteMatch { api, stage, route };
    let extra = format!(
        "x-disconnect-status-code: {}\r\nx-disconnect-reason: {}\r\n",
        ended.code,
        ended
            .reason
            .chars()
            .filter(|c| !c.is_control())
            .take(123)
            .collect::<String>()
    );
    let id = shard.request_id();
    let mut ctx = RequestCtx::new(s.head.clone(), id, Default::default());
    ctx.principal = s.principal.clone();
    ctx.stage = Some(crate::route::StageRef {
        api,
        stage,
        base_len: 0,
    });
    ctx.ws = Some((s.id.as_str().into(), "DISCONNECT"));
    ctx.route = Some(m);
    let called = std::time::Instant::now();
    let answer = integrate_with(
        &ss,
        s,
        m,
        "DISCONNECT",
        &[],
        Some(ctx.request_id.as_str()),
        &extra,
    )
    .await;
    ctx.timings.upstream_start = Some(called);
    ctx.timings.upstream_connected = Some(called);
    ctx.timings.first_byte = Some(std::time::Instant::now());
    let status = match answer {
        Ok(Some(f)) => {
            ctx.upstream = f.from;
            ctx.integration_status = Some(f.status);
            if (200..300).contains(&f.status) {
                200
            } else {
                500
            }
        }
        Ok(None) => 200,
        Err(why) => {
            tracing::debug!(connection = %s.id, error = %why, "$disconnect integration failed");
            let status = if why.status() == 504 { 504 } else { 502 };
            ctx.failure = Some(why);
            status
        }
    };
    ctx.status = status;
    // One access-log line and the route's figures, as `$connect` and messages have.
    crate::gateway::record::observe(
        shard,
        &ss,
        &crate::gateway::record::Record {
            ctx: Some(&ctx),
            status,
            from: Some(crate::gateway::record::From {
                peer: peer(s),
                tls: s.tls_version,
                h2: s.h2,
            }),
            ..Default::default()
        },
    );
}
