//! A WebSocket connection after `101`: RFC 6455 framing by `tungstenite`'s protocol layer over
//! this connection's own buffers (masked client frames required, fragments joined, control
//! frames between fragments, UTF-8 checked across fragments, the close handshake), each
//! message routed by the API's `route_selection_expression` to its route's integration, the
//! answer of a two-way route sent back as a message, and `$disconnect` called once at the end.

use std::io::{self, Read, Write};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::{now_ms, Session};
use crate::gateway::ctx::{RequestCtx, RouteMatch};
use crate::http::conn::{Conn, Stream};
use crate::shard::{Shard, ShardSnap, WsHandle, WsPush};
use crate::snapshot::IntegrationRt;
use crate::upstream::fetch::Fetched;

/// How long a write to a client that does not read may wait before the connection is
/// dropped.
const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes copied out of the socket layer per read.
const READ_CHUNK: usize = 4 << 10;
/// Replies queued beyond this are handed to the writer before more messages are read: a
/// client that sends many small messages and reads nothing holds at most the writer's queue.
const OUT_BATCH: usize = 64 << 10;

/// Bytes in and out for the protocol layer: reads what arrived (`WouldBlock` when nothing
/// has), writes into `out` for the writer task.
#[derive(Default)]
struct Mem {
    inb: BytesMut,
    out: Vec<u8>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inb.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.inb.len());
        buf[..n].copy_from_slice(&self.inb.split_to(n));
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the connection's bytes go.
enum Transport {
    Split {
        rd: tokio::io::ReadHalf<crate::http::pollio::PollIo>,
        tx: flume::Sender<Vec<u8>>,
    },
    H2(Box<crate::http::h2::stream::H2Stream>),
}

impl Transport {
    /// Appends what arrives to `inb` (`Ok(0)`: the other side is done).
    async fn read(&mut self, inb: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Split { rd, .. } => {
                // A buffer on the stack for each poll: nothing is held while the read waits
                // (the socket layer reads into its own buffer, then copies out).
                std::future::poll_fn(|cx| {
                    let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
                    let mut b = tokio::io::ReadBuf::uninit(&mut chunk);
                    std::task::ready!(std::pin::Pin::new(&mut *rd).poll_read(cx, &mut b))?;
                    inb.extend_from_slice(b.filled());
                    std::task::Poll::Ready(Ok(b.filled().len()))
                })
                .await
            }
            Transport::H2(h) => h.read_into(inb).await,
        }
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        match self {
            Transport::Split { tx, .. } => tx.send_async(bytes).await.map_err(|_| ()),
            Transport::H2(h) => {
                match crate::driver::time::timeout(WRITE_STALL, h.write(Bytes::from(bytes))).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(()),
                }
            }
        }
    }

    /// Ends the stream: the writer task finishes what is queued; HTTP/2 sends END_STREAM.
    async fn finish(self) {
        match self {
            Transport::Split { tx, .. } => drop(tx),
            Transport::H2(mut h) => {
                let _ = h.finish().await;
            }
        }
    }
}

/// How long the gateway waits for the client's Close after sending its own (RFC 6455 7.1.1:
/// the server closes the TCP connection once the handshake is done).
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// After the gateway's Close: reads (dropping data frames) until the client's Close answers
/// it, the client goes, or [`CLOSE_WAIT`] passes.
async fn await_close(io: &mut Transport, ws: &mut WebSocketContext, mem: &mut Mem) {
    let wait = async {
        loop {
            loop {
                match ws.read(mem) {
                    Ok(Message::Close(_)) => return,
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        break
                    }
                    Err(_) => return,
                }
            }
            match io.read(&mut mem.inb).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = crate::driver::time::timeout(CLOSE_WAIT, wait).await;
}

/// What woke the loop.
enum Event {
    Read(io::Result<usize>),
    Timer,
    Push(Option<WsPush>),
    Drain,
}

/// How the connection ended, for `$disconnect`.
struct Ended {
    code: u16,
    reason: String,
}

/// Serves the connection until either side closes it, then calls `$disconnect`.
pub(crate) async fn run(shard: &Rc<Shard>, conn: Conn, s: Box<Session>) {
    use crate::http::pollio::PollIo;
    let Conn { stream, buf, .. } = conn;
    // A socket is split: a writer task sends what the loop below queues, so that reading
    // never waits on a client that does not read. An HTTP/2 stream (RFC 8441) reads and
    // writes frames of its own, inline.
    let (mut io, writer) = match stream {
        Stream::H2(h) => (Transport::H2(h), None),
        stream => {
            let io = match stream {
                Stream::Plain(t) => PollIo::plain(t, Bytes::new()).read_size(READ_CHUNK),
                Stream::Tls(t) => t.into_poll_io(Bytes::new()),
                Stream::H2(_) => return,
            };
            let (rd, mut wr) = tokio::io::split(io);
            let (tx, rx) = flume::bounded::<Vec<u8>>(8);
            let writer = crate::driver::spawn(crate::driver::guarded(async move {
                while let Ok(bytes) = rx.recv_async().await {
                    // A client that reads nothing for this long is gone: the writer ends,
                    // and with it the connection (the loop's next send fails).
                    let write = async {
                        wr.write_all(&bytes).await?;
                        wr.flush().await
                    };
                    match crate::driver::time::timeout(WRITE_STALL, write).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                let _ = crate::driver::time::timeout(WRITE_STALL, wr.shutdown()).await;
            }));
            (Transport::Split { rd, tx }, Some(writer))
        }
    };
    let (max_frame, max_message, idle, lifetime, rate) = {
        let l = &shard.snapshot().snap.limits;
        (
            l.websocket_frame as usize,
            l.websocket_message as usize,
            l.upgrade_idle_timeout,
            l.websocket_lifetime,
            l.websocket_message_rate,
        )
    };
    // `limits.websocket_message_rate`: this connection's own bucket.
    let bucket = rate.map(crate::throttle::bucket::Bucket::new);
    // Small buffers that grow with what arrives: an idle connection holds little (the
    // defaults reserve 128 KiB each way per connection; frames reserve what they need).
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_frame_size(Some(max_frame))
        .max_message_size(Some(max_message));
    let mut ws = WebSocketContext::new(Role::Server, Some(config));
    // Reachable through `@connections` from here on.
    let (ptx, prx) = flume::bounded::<WsPush>(super::PUSH_QUEUE);
    let (ctx_close, close_rx) = flume::bounded::<()>(1);
    let last = Rc::new(std::cell::Cell::new(now_ms()));
    shard.ws.borrow_mut().insert(
        s.id.clone(),
        WsHandle {
            tx: ptx,
            close: ctx_close,
            connected_at_ms: s.connected_at_ms,
            last_active_ms: last.clone(),
            source_ip: s.peer_ip.clone(),
            user_agent: String::from_utf8_lossy(s.head.header(b"user-agent").unwrap_or_default())
                .into_owned(),
        },
    );
    let mut mem = Mem {
        inb: buf,
        out: Vec::new(),
    };
    let deadline = std::time::Instant::now() + lifetime;
    let ended = 'conn: loop {
        // Every whole message that has arrived, in order.
        loop {
            match ws.read(&mut mem) {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                    last.set(now_ms());
                    let (data, text) = match &m {
                        Message::Text(t) => (t.as_bytes(), true),
                        Message::Binary(b) => (&b[..], false),
                        _ => (&[][..], false),
                    };
                    if bucket
                        .as_ref()
                        .is_some_and(|b| b.take_up_to(1, crate::throttle::now_ns()).granted == 0)
                    {
                        // Over the connection's own rate: refused before any route, unlogged.
                        let refusal = json!({
                            "message": "Too Many Requests",
                            "connectionId": s.id,
                            "requestId": shard.request_id().as_str(),
                        });
                        let _ = ws.write(&mut mem, Message::text(refusal.to_string()));
                        continue;
                    }
                    // Boxed: the integration call's state exists only while a message is
                    // handled, not in every idle connection's task.
                    match crate::memory::boxed(|| message(shard, &s, data, text)).await {
                        Some(Some(reply)) => {
                            let _ = ws.write(&mut mem, reply);
                        }
                        Some(None) => {}
                        None => {
                            // A reload removed the API or its stage: nothing routes this
                            // connection's messages any more.
                            let why = "the API or stage is gone";
                            let _ = ws.close(
                                &mut mem,
                                Some(CloseFrame {
                                    code: CloseCode::Away,
                                    reason: why.into(),
                                }),
                            );
                            let _ = io.send(std::mem::take(&mut mem.out)).await;
                            Box::pin(await_close(&mut io, &mut ws, &mut mem)).await;
                            break 'conn Ended {
                                code: 1001,
                                reason: why.into(),
                            };
                        }
                    }
                    if mem.out.len() > OUT_BATCH
                        && io.send(std::mem::take(&mut mem.out)).await.is_err()
                    {
                        break 'conn Ended {
                            code: 1006,
                            reason: "the connection was lost".into(),
                        };
                    }
                }
                Ok(Message::Close(frame)) => {
                    // The close is answered by the protocol layer; flushed below.
                    let _ = ws.flush(&mut mem);
                    let _ = io.send(std::mem::take(&mut mem.out)).await;
                    break 'conn frame.map_or(
                        Ended {
                            code: 1005,
                            reason: String::new(),
                        },
                        |f| Ended {
                            code: u16::from(f.code),
                            reason: f.reason.to_string(),
                        },
                    );
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break 'conn Ended {
                        code: 1000,
                        reason: String::new(),
                    };
                }
                Err(e) => {
                    // A protocol violation: closed with the code RFC 6455 gives it.
                    let code = match &e {
                        tungstenite::Error::Utf8(_) => CloseCode::Invalid,
                        tungstenite::Error::Capacity(_) => CloseCode::Size,
                        _ => CloseCode::Protocol,
                    };
                    let reason = match code {
                        CloseCode::Size => "message too big",
                        CloseCode::Invalid => "invalid UTF-8",
                        _ => "protocol error",
                    };
                    let _ = ws.close(
                        &mut mem,
                        Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        }),
                    );
                    let _ = io.send(std::mem::take(&mut mem.out)).await;
                    break 'conn Ended {
                        code: u16::from(code),
                        reason: reason.into(),
                    };
                }
            }
        }
        if mem.inb.is_empty() {
            // Nothing half-read: an idle connection keeps no input buffer.
            mem.inb = BytesMut::new();
        }
        let _ = ws.flush(&mut mem);
        if !mem.out.is_empty() && io.send(std::mem::take(&mut mem.out)).await.is_err() {
            break Ended {
                code: 1006,
                reason: "the connection was lost".into(),
            };
        }
        // Closing by the gateway: idle, too old, or the shard drains.
        let going_away = |ws: &mut WebSocketContext, mem: &mut Mem, why: &str| {
            let _ = ws.close(
                mem,
                Some(CloseFrame {
                    code: CloseCode::Away,
                    reason: why.to_string().into(),
                }),
            );
            Ended {
                code: 1001,
                reason: why.into(),
            }
        };
        let now = std::time::Instant::now();
        let wait = idle.min(deadline.saturating_duration_since(now));
        let event = monoio::select! {
            n = io.read(&mut mem.inb) => Event::Read(n),
            _ = crate::driver::time::sleep(wait) => Event::Timer,
            p = prx.recv_async() => Event::Push(p.ok()),
            _ = close_rx.recv_async() => Event::Push(Some(WsPush::Close)),
            _ = shard.drain.wait() => Event::Drain,
        };
        match event {
            Event::Read(Ok(0) | Err(_)) => {
                break Ended {
                    code: 1006,
                    reason: "the connection was lost".into(),
                }
            }
            Event::Read(Ok(_)) => {}
            Event::Timer => {
                let why = if std::time::Instant::now() >= deadline {
                    "connection lifetime reached"
                } else {
                    "idle"
                };
                let e = going_away(&mut ws, &mut mem, why);
                let _ = io.send(std::mem::take(&mut mem.out)).await;
                Box::pin(await_close(&mut io, &mut ws, &mut mem)).await;
                break e;
            }
            Event::Push(p) => match p {
                Some(WsPush::Send(data)) => {
                    last.set(now_ms());
                    let m = match String::from_utf8(data) {
                        Ok(t) => Message::text(t),
                        Err(e) => Message::binary(e.into_bytes()),
                    };
                    let _ = ws.write(&mut mem, m);
                }
                Some(WsPush::Close) | None => {
                    let _ = ws.close(
                        &mut mem,
                        Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        }),
                    );
                    let _ = io.send(std::mem::take(&mut mem.out)).await;
                    Box::pin(await_close(&mut io, &mut ws, &mut mem)).await;
                    break Ended {
                        code: 1000,
                        reason: "closed through @connections".into(),
                    };
                }
            },
            Event::Drain => {
                let e = going_away(&mut ws, &mut mem, "the gateway is going away");
                let _ = io.send(std::mem::take(&mut mem.out)).await;
                Box::pin(await_close(&mut io, &mut ws, &mut mem)).await;
                break e;
            }
        }
    };
    // From here on `@connections` answers 410 for it.
    shard.ws.borrow_mut().remove(&s.id);
    io.finish().await;
    if let Some(w) = writer {
        let _ = w.await;
    }
    crate::memory::boxed(|| disconnect(shard, &s, ended)).await;
}

/// The API, stage and route a message goes to, in the snapshot current now.
fn locate(ss: &ShardSnap, s: &Session) -> Option<(usize, usize)> {
    let api = ss.snap.apis.iter().position(|a| a.name == s.api)?;
    let stage = ss.snap.apis[api]
        .stages
        .iter()
        .position(|n| *n == s.stage)?;
    Some((api, stage))
}

/// One message: its route, its integration, and what goes back (two-way routes, errors);
/// `None` when the connection's API or stage is no longer in the snapshot.
async fn message(
    shard: &Rc<Shard>,
    s: &Session,
    data: &[u8],
    text: bool,
) -> Option<Option<Message>> {
    let ss = shard.snapshot();
    let (api, stage) = locate(&ss, s)?;
    let mut ctx = RequestCtx::new(s.head.clone(), shard.request_id(), Default::default());
    ctx.principal = s.principal.clone();
    ctx.stage = Some(crate::route::StageRef {
        api,
        stage,
        base_len: 0,
    });
    ctx.ws = Some((s.id.as_str().into(), "MESSAGE"));
    let (reply, status) = answer(shard, &ss, s, &mut ctx, data, text).await;
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
                tls: None,
                h2: false,
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
    let key = text
        .then(|| serde_json::from_slice::<Value>(data).ok())
        .flatten()
        .and_then(|v| {
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
    let Some(route) = route else {
        return error("Forbidden", 403);
    };
    let m = RouteMatch {
        api: st.api,
        stage: st.stage,
        route,
    };
    ctx.route = Some(m);
    // Each message is throttled as a request is: the route's, the stage's and the key's
    // buckets, with the same leases.
    if crate::gateway::limits::throttle(shard, ss, ctx, m)
        .await
        .is_err()
    {
        return error("Too Many Requests", 429);
    }
    let two_way = ss.snap.config.apis[st.api].routes[route].route_response;
    match integrate(ss, s, m, "MESSAGE", data, Some(&request_id)).await {
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
            error("Internal server error", 500)
        }
        Err(why) => {
            tracing::debug!(connection = %s.id, error = %why, "websocket integration failed");
            error("Internal server error", 502)
        }
    }
}

/// `$disconnect`, once, best effort.
async fn disconnect(shard: &Rc<Shard>, s: &Session, ended: Ended) {
    let ss = shard.snapshot();
    let Some((api, stage)) = locate(&ss, s) else {
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
    if let Err(why) = integrate_with(&ss, s, m, "DISCONNECT", &[], Some(id.as_str()), &extra).await
    {
        tracing::debug!(connection = %s.id, error = %why, "$disconnect integration failed");
    }
}

/// Calls route `m`'s integration for an event: `Ok(None)` when the route has none to call,
/// else the integration's status and body.
pub(super) async fn integrate(
    ss: &ShardSnap,
    s: &Session,
    m: RouteMatch,
    event: &str,
    body: &[u8],
    request_id: Option<&str>,
) -> Result<Option<Fetched>, String> {
    integrate_with(ss, s, m, event, body, request_id, "").await
}

async fn integrate_with(
    ss: &ShardSnap,
    s: &Session,
    m: RouteMatch,
    event: &str,
    body: &[u8],
    request_id: Option<&str>,
    extra: &str,
) -> Result<Option<Fetched>, String> {
    let api = &ss.snap.apis[m.api];
    let route = &api.routes[m.route];
    let mut ctx = RequestCtx::new(
        s.head.clone(),
        request_id
            .and_then(|r| crate::gateway::ctx::RequestId::from_client(r.as_bytes()))
            .unwrap_or_else(|| crate::gateway::ctx::RequestId::generated(0, now_ms())),
        Default::default(),
    );
    ctx.principal = s.principal.clone();
    match &route.per_stage[m.stage] {
        IntegrationRt::Mock(mock) => {
            let a = crate::gateway::answers::mock(&ctx, &s.peer_ip, mock);
            Ok(Some(Fetched {
                status: a.status,
                head: Default::default(),
                body: a.body,
                reusable: false,
            }))
        }
        IntegrationRt::Http(h) => {
            let mut path = Vec::new();
            h.path.render(
                &mut path,
                &ctx.vars(&s.peer_ip, crate::syntax::template::Escape::Uri),
                |_, _| {},
            );
            let mut req = Vec::with_capacity(512 + body.len());
            req.extend_from_slice(b"POST ");
            req.extend_from_slice(&path);
            if event == "CONNECT" {
                // The client's query goes to $connect.
                if let Some(q) = s.head.query_bytes().filter(|q| !q.is_empty()) {
                    req.push(if path.contains(&b'?') { b'&' } else { b'?' });
                    req.extend_from_slice(q);
                }
            }
            req.extend_from_slice(b" HTTP/1.1\r\nhost: ");
            req.extend_from_slice(h.host_header.as_bytes());
            req.extend_from_slice(b"\r\n");
            if event == "CONNECT" {
                // The client's headers, as the upgrade request carried them (its
                // `Sec-WebSocket-*` ones too, as Amazon's: the integration may choose among
                // the subprotocols offered).
                for (n, v) in s.head.headers() {
                    let lower = n.to_ascii_lowercase();
                    if matches!(
                        lower.as_slice(),
                        b"host"
                            | b"connection"
                            | b"upgrade"
                            | b"content-length"
                            | b"transfer-encoding"
                            | b"keep-alive"
                            | b"te"
                            | b"trailer"
                    ) || is_gateway_header(&lower)
                    {
                        continue;
                    }
                    req.extend_from_slice(n);
                    req.extend_from_slice(b": ");
                    req.extend_from_slice(v);
                    req.extend_from_slice(b"\r\n");
                }
            }
            let ss_stage = &ss.snap.config.apis[m.api].stages[m.stage].name;
            let domain = String::from_utf8_lossy(s.head.host_bytes().unwrap_or_default());
            let lines = format!(
                "content-type: application/json\r\ncontent-length: {}\r\nx-connection-id: {}\r\nx-event-type: {event}\r\nx-route-key: {}\r\nx-request-id: {}\r\nx-stage: {ss_stage}\r\nx-api-id: {}\r\nx-domain-name: {domain}\r\nx-connected-at: {}\r\nx-source-ip: {}\r\n{extra}\r\n",
                body.len(),
                s.id,
                route.key,
                ctx.request_id.as_str(),
                s.api,
                s.connected_at_ms,
                s.peer_ip,
            );
            // The message's own id, and what the authorizer established at $connect.
            let mut lines = lines;
            lines.truncate(lines.len() - 2);
            if event == "MESSAGE" {
                lines.push_str(&format!("x-message-id: {}\r\n", ctx.request_id.as_str()));
            }
            let one_line = |v: &str| v.chars().filter(|c| !c.is_control()).collect::<String>();
            match &s.principal.authorizer {
                Some(crate::gateway::ctx::Authorized::Jwt(v)) => {
                    // JSON text: control characters are escaped, so it stays one line.
                    let claims = serde_json::to_string(&v.claims).unwrap_or_default();
                    lines.push_str(&format!("x-authorizer-claims: {claims}\r\n"));
                }
                Some(crate::gateway::ctx::Authorized::External(d)) => {
                    if let Some(p) = &d.principal_id {
                        lines.push_str(&format!("x-authorizer-principal-id: {}\r\n", one_line(p)));
                    }
                    let context = serde_json::to_string(&d.context).unwrap_or_default();
                    lines.push_str(&format!("x-authorizer-context: {context}\r\n"));
                }
                Some(crate::gateway::ctx::Authorized::Iam(key)) => {
                    lines.push_str(&format!("x-authorizer-access-key: {}\r\n", one_line(key)));
                }
                None => {}
            }
            lines.push_str("\r\n");
            req.extend_from_slice(lines.as_bytes());
            req.extend_from_slice(body);
            let answer = crate::driver::time::timeout(
                h.timeout,
                crate::gateway::call::exchange_whole(
                    ss,
                    &h.dest,
                    &ctx,
                    peer(s),
                    req,
                    (ss.snap.limits.websocket_message as usize).max(128 << 10),
                ),
            )
            .await
            .map_err(|_| "integration timed out".to_string())??;
            Ok(Some(answer))
        }
    }
}

/// Headers the gateway writes itself on integration calls: a client's own are left out, so
/// that a backend reading them reads the gateway's.
fn is_gateway_header(lower: &[u8]) -> bool {
    lower.starts_with(b"x-connection-")
        || lower.starts_with(b"x-authorizer-")
        || lower.starts_with(b"x-disconnect-")
        || matches!(
            lower,
            b"x-event-type"
                | b"x-route-key"
                | b"x-request-id"
                | b"x-message-id"
                | b"x-stage"
                | b"x-api-id"
                | b"x-domain-name"
                | b"x-connected-at"
                | b"x-source-ip"
        )
}

fn peer(s: &Session) -> std::net::SocketAddr {
    std::net::SocketAddr::new(
        s.peer_ip
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        0,
    )
}
