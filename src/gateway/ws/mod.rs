//! WebSocket APIs (`kind = "websocket"`): the upgrade request runs the `$connect` route —
//! resource policy, authorizer, API key, throttles, quota, then its integration, whose non-2xx
//! answer refuses the upgrade with that status — and is answered `101` with a new
//! `connectionId`; from then on each message is routed by the API's
//! `route_selection_expression` ([`session`]).

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

use super::ctx::{Principal, RequestCtx, RouteMatch};
use super::finish::Outcome;
use super::Next;
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::http::h1::RequestHead;
use crate::http::write::Answer;
use crate::shard::{Closing, Shard, ShardSnap};

mod ahead;
mod integration;
mod manage;
mod message;
mod session;

pub(crate) use manage::{manage, serve_commands, target, PUSH_QUEUE};

pub(crate) use session::run;

/// After a reload, closes this shard's connections whose API or stage the new snapshot does
/// not have (1001, as a drain): they leave `Shard::ws` at once (`@connections` answers 410)
/// and their sessions call `$disconnect` with the snapshot that had their API. Called by the
/// shard's housekeeping; nothing to do without connections or without a new snapshot.
pub(crate) fn reap(shard: &Shard) {
    if shard.ws.borrow().is_empty() {
        // No connection to close: no old snapshot kept alive either.
        shard.ws_seen.borrow_mut().take();
        return;
    }
    let now = shard.snapshot();
    let old = {
        let mut seen = shard.ws_seen.borrow_mut();
        match seen.as_ref() {
            Some(p) if Rc::ptr_eq(p, &now) => return,
            _ => seen.replace(now.clone()),
        }
    };
    let Some(old) = old else {
        return;
    };
    shard.ws.borrow_mut().retain(|_, h| {
        let keep = message::locate_names(&now, &h.api, &h.stage).is_some();
        if !keep {
            let _ = h.close.try_send(Closing::Gone(old.clone()));
        }
        keep
    });
}

/// RFC 6455's GUID, appended to the client's key for `Sec-WebSocket-Accept`.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What a connection keeps from its upgrade request.
pub(crate) struct Session {
    pub id: String,
    /// The API and stage, by name: each message finds them in the snapshot current then.
    pub api: String,
    pub stage: String,
    /// The upgrade request (its headers reach `$connect`, and choose targets by header).
    pub head: RequestHead,
    pub principal: Principal,
    /// The usage plan `$connect`'s API key was counted under, by name (a plan's place in the
    /// snapshot's list changes with reloads); empty without a key.
    pub plan: Box<str>,
    pub peer_ip: Rc<str>,
    /// The TCP peer (a trusted proxy, when `peer_ip` is the client it forwarded): what
    /// `$connect`'s `X-Forwarded-For` ends with, as an http route's does.
    pub tcp_peer: Rc<str>,
    /// Over TLS (`X-Forwarded-Proto` to `$connect`).
    pub https: bool,
    /// The listener it came in on (its client-certificate check, as the configuration has it
    /// when a message comes).
    pub listener: usize,
    /// The connection's verified client certificate (mTLS listeners): its `mtls.headers` on
    /// every integration call, its fields in templates; and the names a client's own
    /// headers may not use.
    pub client_cert: Option<crate::http::conn::ClientCertHeaders>,
    pub connected_at_ms: u64,
    /// The connection's TLS version and protocol, as its messages' log lines say them.
    pub tls_version: Option<&'static str>,
    pub h2: bool,
    /// The configuration the connection was opened under, until its session is registered.
    pub opened: Option<Rc<ShardSnap>>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connection id: the node's and the shard's numbers and random bytes, URL-safe
/// (`/@connections/{id}`); [`crate::shard::connection_home`] reads them back.
fn connection_id(node: u32, shard: usize) -> String {
    let mut b = [0u8; crate::shard::CONNECTION_ID_BYTES];
    b[..4].copy_from_slice(&node.to_be_bytes());
    b[4..6].copy_from_slice(&(shard as u16).to_be_bytes());
    if getrandom::getrandom(&mut b[6..]).is_err() {
        // No randomness: the clock still makes ids that do not repeat on this shard.
        b[6..].copy_from_slice(&now_ms().to_be_bytes()[..8].repeat(2)[..9]);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The upgrade request of a WebSocket API: `$connect`, then `101` and the session.
pub(crate) async fn connect(
    shard: &Rc<Shard>,
    ss: &Rc<ShardSnap>,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
) -> Result<Outcome, Error> {
    let Some(st) = ctx.stage else {
        return Err(Error::downstream(Kind::NotFound, "no stage"));
    };
    // The API is at the mapping's base path, or its stage after it (Amazon's
    // `wss://host/{stage}`); another path under it is not this API.
    let rest = ctx.segs.skip(st.base_len);
    // The stage as clients name it, whichever share (a canary's included) took the request.
    let stage = crate::config::stage_of(&ss.snap.config.apis[st.api].stages[st.stage].name);
    let ours = rest.len() <= 2
        && (0..rest.len()).all(|i| rest.get(i).is_empty() || (i == 0 && rest.get(i) == stage));
    if !ours {
        return Err(Error::downstream(
            Kind::NotFound,
            "not the WebSocket API's path",
        ));
    }
    let key = handshake_key(&ctx.head)?;
    let api = &ss.snap.apis[st.api];
    let ws = api.ws.as_ref().expect("a WebSocket API");
    let id = connection_id(shard.shared.node_id, shard.id);
    ctx.ws = Some((id.as_str().into(), "CONNECT"));
    let mut chosen = None;
    // One `connectedAt` for the connection's life: `$connect`'s, then every later call's.
    let connected_at_ms = now_ms();
    if let Some(route) = ws.connect {
        let m = RouteMatch {
            api: st.api,
            stage: st.stage,
            route,
        };
        ctx.route = Some(m);
        super::policy::phase(ss, conn.peer.ip(), ctx, m)?;
        super::authorizer::authorize(shard, ss, conn, ctx, m).await?;
        super::api_key::authenticate(ss, ctx, m)?;
        super::limits::quota_spent(shard, ss, ctx)?;
        super::limits::throttle(shard, ss, ctx, m).await?;
        // A connection is a request of the key's plan (429 "Limit Exceeded" once spent).
        super::limits::count_quota(shard, ss, ctx).await?;
        let session = session_of(ss, conn, ctx, &id, (st.api, st.stage), connected_at_ms);
        let called = std::time::Instant::now();
        // The call runs on its own: a client that goes meanwhile (an HTTP/2 stream reset drops
        // this request's future) leaves it to end, and a connection it accepted is owed its
        // `$disconnect`, as one whose 101 could not be written is.
        let (tx, rx) = flume::bounded(1);
        let (task_ss, task_shard) = (ss.clone(), shard.clone());
        let request_id = ctx.request_id.as_str().to_string();
        // The integration's parent is the gateway's client span for the call, as an http
        // route's upstream's is.
        let mut trace = Vec::new();
        if let Some(t) = &ctx.trace {
            if let Some(span) = t.client_span {
                t.upstream_headers(span, t.sampled.unwrap_or(false), &mut trace);
            }
        }
        crate::driver::spawn(crate::driver::guarded(async move {
            let answer = integration::integrate_with(
                &task_ss,
                &session,
                m,
                "CONNECT",
                &[],
                Some(&request_id),
                std::str::from_utf8(&trace).unwrap_or_default(),
            )
            .await;
            if let Err(flume::SendError(answer)) = tx.send(answer) {
                let accepted = match &answer {
                    Ok(None) => true,
                    Ok(Some(f)) => (200..300).contains(&f.status),
                    Err(_) => false,
                };
                if accepted {
                    message::disconnect(&task_shard, &session, session::lost(), Some(task_ss))
                        .await;
                }
            }
        }));
        let answer = rx.recv_async().await.unwrap_or_else(|_| {
            Err(Error::upstream(
                Kind::BadGateway,
                "$connect's integration ended",
            ))
        });
        // The integration's time, target and status, for the access log and the route's
        // integration-latency metric, as a request's (connecting included).
        ctx.timings.upstream_start = Some(called);
        ctx.timings.upstream_connected = Some(called);
        ctx.timings.first_byte = Some(std::time::Instant::now());
        if let Ok(Some(f)) = &answer {
            ctx.upstream = f.from;
            ctx.integration_status = Some(f.status);
        }
        match answer {
            Ok(Some(f)) if !(200..300).contains(&f.status) => {
                // The integration refused: the client gets its status, its end-to-end
                // headers and body, not an upgrade.
                let typed = f.header(b"content-type").is_some();
                return Ok(Outcome::Answer(Answer {
                    status: f.status,
                    headers: integration::relayed_headers(&f),
                    content_type: (!typed).then_some("application/json"),
                    body: f.body,
                    ratelimit: true,
                }));
            }
            Ok(Some(f)) => {
                // The integration may choose the subprotocol (as a Lambda integration does
                // by answering the header).
                chosen = f
                    .header(b"sec-websocket-protocol")
                    .map(|p| String::from_utf8_lossy(p).into_owned());
            }
            Ok(None) => {}
            // 504 when the route's timeout passed, 502 when the call failed, as a request's.
            Err(e) => return Err(e),
        }
    }
    if ws.connect.is_none() {
        // Without a $connect route the API's resource policy still stands at the door.
        let a = &ss.snap.config.apis[st.api];
        let resource = format!(
            "arn:aws:execute-api:local:000000000000:{}/{}/$connect",
            a.name,
            crate::config::stage_of(&a.stages[st.stage].name)
        );
        door(ss, conn, ctx, resource)?;
    }
    let mut session = session_of(ss, conn, ctx, &id, (st.api, st.stage), connected_at_ms);
    // Until the session is registered (see `session::run`): a reload meanwhile may have
    // removed the API, and its `$disconnect` runs with the configuration it was opened under.
    session.opened = Some(ss.clone());
    let accept = accept(&key);
    // The first of the API's subprotocols the client offers (none offered or none shared:
    // no header, and a client that insists closes the connection itself, as RFC 6455 says).
    let offered: Vec<&[u8]> = ctx
        .head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"sec-websocket-protocol"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(|p| p.trim_ascii())
        .collect();
    // `$connect`'s integration's choice, if the client offered it; else the API's preference.
    let protocol = chosen
        .filter(|c| offered.contains(&c.as_bytes()))
        .or_else(|| {
            ws.subprotocols
                .iter()
                .find(|p| offered.contains(&p.as_bytes()))
                .cloned()
        })
        .map(|p| format!("sec-websocket-protocol: {p}\r\n"))
        .unwrap_or_default();
    // A throttled `$connect` says its limit on the acceptance too, as on every answer.
    let mut limit = Vec::new();
    if let Some(r) = &ctx.ratelimit {
        crate::gateway::finish::ratelimit_headers(&mut limit, r);
    }
    let limit = String::from_utf8_lossy(&limit);
    let head = if matches!(conn.stream, crate::http::conn::Stream::H2(_)) {
        // RFC 8441: an extended CONNECT is accepted with 200, the stream carrying the frames.
        format!(
            "HTTP/1.1 200 OK\r\n{protocol}{limit}x-request-id: {}\r\n\r\n",
            ctx.request_id.as_str()
        )
    } else {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n{protocol}{limit}x-request-id: {}\r\n\r\n",
            ctx.request_id.as_str()
        )
    };
    if conn.write_all(head.into_bytes()).await.is_err() {
        // The connection was accepted: `$disconnect` is owed it, once, as for any connection
        // that ends (the client went before it had the 101).
        message::disconnect(shard, &session, session::lost(), Some(ss.clone())).await;
        return Err(Error::downstream(Kind::ClientGone, "writing 101"));
    }
    // What the client got: 200 for an HTTP/2 extended CONNECT.
    ctx.status = if session.h2 { 200 } else { 101 };
    Ok(Outcome::Sent(Next::WebSocket(Box::new(session))))
}

/// The API's resource policy, for a call that has no route of its own (`resource` names it).
fn door(ss: &ShardSnap, conn: &Conn, ctx: &RequestCtx, resource: String) -> Result<(), Error> {
    let Some(st) = ctx.stage else {
        return Ok(());
    };
    let Some(p) = &ss.snap.config.apis[st.api].resource_policy else {
        return Ok(());
    };
    let ip = super::policy::source_ip(conn.peer.ip(), ctx, &ss.snap.config.server.trusted_proxies);
    let explicit = match p.evaluate(ip) {
        crate::config::PolicyVerdict::Allow => return Ok(()),
        crate::config::PolicyVerdict::ImplicitDeny => false,
        crate::config::PolicyVerdict::ExplicitDeny => true,
    };
    Err(Error::downstream(
        Kind::PolicyDenied {
            explicit,
            resource: resource.into(),
        },
        "resource policy",
    ))
}

fn session_of(
    ss: &ShardSnap,
    conn: &Conn,
    ctx: &RequestCtx,
    id: &str,
    (api, stage): (usize, usize),
    connected_at_ms: u64,
) -> Session {
    let a = &ss.snap.config.apis[api];
    Session {
        id: id.to_string(),
        api: a.name.clone(),
        stage: a.stages[stage].name.clone(),
        head: ctx.head.clone(),
        principal: ctx.principal.clone(),
        plan: match &ctx.principal.api_key {
            Some(k) => ss.snap.plans[k.plan].name.as_str().into(),
            None => Box::default(),
        },
        // The client a trusted proxy forwarded, if any: what `x-source-ip` and
        // `@connections` GET name.
        peer_ip: match &ctx.forwarded {
            Some(f) => Rc::from(&*f.1),
            None => conn.peer_ip.clone(),
        },
        tcp_peer: conn.peer_ip.clone(),
        https: ctx.https,
        listener: conn.listener,
        client_cert: ctx.client_cert.clone(),
        connected_at_ms,
        tls_version: conn.tls_version,
        h2: matches!(conn.stream, crate::http::conn::Stream::H2(_)),
        opened: None,
    }
}

/// The client's `Sec-WebSocket-Key`, once the request is a WebSocket upgrade RFC 6455 allows
/// (426 with the version this server speaks otherwise; 400 for one with a body, or without
/// one valid key).
fn handshake_key(head: &RequestHead) -> Result<String, Error> {
    let required = |why: &'static str| Error::downstream(Kind::UpgradeRequired, why);
    // `Upgrade: h2c, websocket` offers WebSocket among others (RFC 9110 7.8): here, on a
    // WebSocket API, it is the one taken (the parser's `upgrade`, which proxied requests
    // relay, stays a lone `websocket`).
    let token = |name: &[u8], token: &[u8]| {
        head.headers()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && crate::http::has_token(v, token))
    };
    let upgrade = head.upgrade
        || (head.minor >= 1 && token(b"connection", b"upgrade") && token(b"upgrade", b"websocket"));
    if head.method != crate::syntax::Method::Get || !upgrade {
        return Err(required(
            "a WebSocket API takes a GET with Upgrade: websocket",
        ));
    }
    if head.header(b"sec-websocket-version") != Some(b"13") {
        return Err(required("Sec-WebSocket-Version is not 13"));
    }
    let versions = head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"sec-websocket-version"))
        .count();
    if versions > 1 {
        // RFC 6455 11.3.5: it must not appear more than once in a request.
        return Err(Error::downstream(
            Kind::BadRequest("Sec-WebSocket-Version appears more than once"),
            "websocket handshake",
        ));
    }
    if !matches!(head.framing, crate::http::h1::Framing::None) {
        // Whatever follows the head is the client's frames: a body would be read as them.
        return Err(Error::downstream(
            Kind::BadRequest("An upgrade request has no body"),
            "websocket handshake",
        ));
    }
    let keys = head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"sec-websocket-key"))
        .count();
    if keys > 1 {
        // RFC 6455 11.3.1: it must not appear more than once.
        return Err(Error::downstream(
            Kind::BadRequest("Sec-WebSocket-Key appears more than once"),
            "websocket handshake",
        ));
    }
    let key = head
        .header(b"sec-websocket-key")
        .map(|k| k.trim_ascii())
        .filter(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k)
                .is_ok_and(|d| d.len() == 16)
        })
        .ok_or_else(|| {
            Error::downstream(
                Kind::BadRequest("Sec-WebSocket-Key is missing or not 16 bytes in base64"),
                "websocket handshake",
            )
        })?;
    Ok(String::from_utf8_lossy(key).into_owned())
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 4.2.2).
fn accept(key: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(d.as_ref())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_accept_value_is_rfc_6455s() {
        // RFC 6455 1.3's example.
        assert_eq!(
            super::accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn connection_ids_name_their_node_and_shard() {
        let id = super::connection_id(0xdead_beef, 7);
        assert_eq!(id.len(), 20);
        assert_eq!(crate::shard::connection_home(&id), Some((0xdead_beef, 7)));
        assert_ne!(id, super::connection_id(0xdead_beef, 7));
        assert_eq!(crate::shard::connection_home("nope"), None);
    }
}
