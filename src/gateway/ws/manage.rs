//! `@connections`: backends push a message to a connection (`POST`), read what is known of
//! it (`GET`) or close it (`DELETE`), through the admin listener or on the WebSocket API's own
//! domain (`{base path}/@connections/{id}` or `{base path}/{stage}/@connections/{id}`,
//! SigV4-signed and allowed `execute-api:ManageConnections` unless the API says
//! `connections_authorization = "none"`). Whichever shard receives the call, the command goes
//! through the channel of the shard holding the connection, which answers it.

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use super::super::ctx::RequestCtx;
use super::super::finish::Outcome;
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::http::write::Answer;
use crate::shard::{Shard, ShardSnap};

/// How many messages `@connections` may queue for a connection whose client is not reading;
/// past it a push answers 429.
pub(crate) const PUSH_QUEUE: usize = 256;
/// How many bytes of pushes may wait for one connection (its session takes them off as it
/// writes them; a client that does not read stops that): past it a push answers 429 (a push
/// to an empty queue is taken whatever its size). With
/// 128 KiB messages the count alone let a client that stopped reading hold 32 MiB.
pub(crate) const PUSH_BYTES: usize = 1 << 20;

/// Serves this shard's `@connections` commands, for as long as the shard runs.
pub(crate) async fn serve_commands(shard: Rc<Shard>) {
    use crate::shard::{WsOp, WsPush, WsReply, WsScope};
    let rx = shard.shared.ws_cmds[shard.id].1.clone();
    while let Ok(cmd) = rx.recv_async().await {
        if matches!(cmd.op, WsOp::Delete) {
            // Closing from now on: later commands answer 410, as Amazon's, whether or not
            // the client has read the Close yet (its own channel: a full queue does not
            // keep a connection open).
            let h = {
                let mut conns = shard.ws.borrow_mut();
                match conns.get(&cmd.id) {
                    Some(h) if WsScope::admits(&cmd.scope, h) => conns.remove(&cmd.id),
                    _ => None,
                }
            };
            let reply = match h.map(|h| h.close.try_send(crate::shard::Closing::Deleted)) {
                Some(Ok(()) | Err(flume::TrySendError::Full(_))) => WsReply::Done,
                _ => WsReply::Gone,
            };
            let _ = cmd.reply.try_send(reply);
            continue;
        }
        let reply = {
            let conns = shard.ws.borrow();
            match conns.get(&cmd.id) {
                Some(h) if !WsScope::admits(&cmd.scope, h) => WsReply::Gone,
                None => WsReply::Gone,
                Some(h) => match cmd.op {
                    WsOp::Post(data) => {
                        let n = data.len();
                        // One message always fits an empty queue (it may be up to
                        // `limits.websocket_message`, which may be over the budget).
                        if h.queued.get() > 0 && h.queued.get() + n > PUSH_BYTES {
                            WsReply::Full
                        } else {
                            match h.tx.try_send(WsPush::Send(data)) {
                                Ok(()) => {
                                    h.queued.set(h.queued.get() + n);
                                    WsReply::Done
                                }
                                Err(flume::TrySendError::Full(_)) => WsReply::Full,
                                Err(flume::TrySendError::Disconnected(_)) => WsReply::Gone,
                            }
                        }
                    }
                    WsOp::Delete => WsReply::Gone,
                    WsOp::Get => WsReply::Info(serde_json::json!({
                        "connectedAt": rfc3339(h.connected_at_ms),
                        "lastActiveAt": rfc3339(h.last_active_ms.get()),
                        "identity": { "sourceIp": &*h.source_ip, "userAgent": h.user_agent },
                    })),
                },
            }
        };
        let _ = cmd.reply.try_send(reply);
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC), as Amazon's `@connections` writes times.
fn rfc3339(ms: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    let s = httpdate::fmt_http_date(t);
    // "Tue, 01 Dec 2026 05:55:08 GMT" -> "2026-12-01T05:55:08Z"
    let p: Vec<&str> = s.split(' ').collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| Some(m) == p.get(2))
    .map_or(1, |i| i + 1);
    match p.as_slice() {
        [_, d, _, y, hms, _] => format!("{y}-{month:02}-{d}T{hms}Z"),
        _ => s,
    }
}

/// The connection id of a request for `@connections` on a WebSocket API's domain: the path
/// after the base path is `@connections/{id}`, or `{stage}/@connections/{id}` naming the
/// mapped stage (the form Amazon's callback URL has).
pub(crate) fn target(ss: &ShardSnap, ctx: &RequestCtx) -> Option<String> {
    let st = ctx.stage?;
    if ctx.head.upgrade {
        return None;
    }
    let rest = ctx.segs.skip(st.base_len);
    let at = match rest.len() {
        2 => 0,
        3 if rest.get(0)
            == crate::config::stage_of(&ss.snap.config.apis[st.api].stages[st.stage].name) =>
        {
            1
        }
        _ => return None,
    };
    (rest.get(at) == "@connections" && !rest.get(at + 1).is_empty())
        .then(|| rest.get(at + 1).to_string())
}

/// `@connections/{id}` on the API's own domain: the API's resource policy, then (by
/// default) a SigV4 signature whose key may `execute-api:ManageConnections` on
/// `arn:...:{api}/{stage}/{METHOD}/@connections/{id}`, then the command.
pub(crate) async fn manage(
    shard: &Rc<Shard>,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    id: String,
) -> Result<Outcome, Error> {
    let Some(st) = ctx.stage else {
        return Err(Error::downstream(Kind::NotFound, "no stage"));
    };
    let a = &ss.snap.config.apis[st.api];
    let resource = format!(
        "arn:aws:execute-api:local:000000000000:{}/{}/{}/@connections/{id}",
        a.name,
        crate::config::stage_of(&a.stages[st.stage].name),
        ctx.head.method.as_str()
    );
    super::door(ss, conn, ctx, resource.clone())?;
    let iam = ss.snap.apis[st.api]
        .ws
        .as_ref()
        .is_some_and(|w| w.connections_iam);
    if iam {
        let key = super::super::authorizer::iam::allowed(
            shard,
            ss,
            conn,
            ctx,
            "ManageConnections",
            &resource,
            None,
        )
        .await?;
        ctx.principal.authorizer = Some(super::super::ctx::Authorized::Iam(key));
    }
    use crate::syntax::Method;
    if !matches!(ctx.head.method, Method::Get | Method::Post | Method::Delete) {
        // With `Allow`, as RFC 9110 15.5.6 requires (and the admin listener's says).
        return Err(Error::downstream(
            Kind::MethodNotAllowed(vec![Method::Get, Method::Post, Method::Delete]),
            "@connections",
        ));
    }
    // A message is at most `limits.websocket_message` (and `limits.max_body`).
    let max = ss
        .snap
        .limits
        .websocket_message
        .min(ss.snap.limits.max_body) as usize;
    let body = if ctx.head.method == Method::Post {
        if matches!(ctx.head.framing, crate::http::h1::Framing::Length(n) if n > max as u64) {
            // Not read: the connection closes after the answer.
            return Ok(answer(ctx, 413, too_large(max)));
        }
        match super::super::validate::read_body(ss, conn, ctx).await {
            Ok(n) => conn.buf[..n].to_vec(),
            // A chunked body past `max_body`.
            Err(e) if e.kind == Kind::BodyTooLarge => return Ok(answer(ctx, 413, too_large(max))),
            Err(e) => return Err(e),
        }
    } else {
        Vec::new()
    };
    // Only a connection of the API and stage the call came through.
    let scope = ctx.stage.and_then(|s| {
        let api = &ss.snap.apis[s.api];
        Some(crate::shard::WsScope {
            api: api.name.to_string(),
            stage: api.stages.get(s.stage)?.to_string(),
        })
    });
    let (status, out) = crate::shard::ws_command(
        &shard.shared,
        ctx.head.method_bytes(),
        &id,
        body,
        max,
        scope,
    )
    .await;
    Ok(answer(ctx, status, out))
}

/// `ws_command`'s 413, for a message refused before it is read.
fn too_large(max: usize) -> String {
    serde_json::json!({ "message": format!("a message is at most {max} bytes") }).to_string()
}

/// An `@connections` answer, with the error's name where SDKs read it (Amazon's management
/// API's exceptions).
fn answer(ctx: &mut RequestCtx, status: u16, out: String) -> Outcome {
    ctx.status = status;
    let error = crate::error::connections_error_type(status);
    Outcome::Answer(Answer {
        status,
        headers: if error.is_empty() {
            Vec::new()
        } else {
            format!("x-amzn-errortype: {error}\r\n").into_bytes()
        },
        content_type: (!out.is_empty()).then_some("application/json"),
        body: out.into_bytes(),
        ratelimit: false,
    })
}
