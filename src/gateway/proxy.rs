//! The `http` integration: forward one request to an upstream over a pooled HTTP/1.1
//! connection and stream the answer back.
//!
//! Bodies stream both ways: bytes read from one socket are written to the other from the
//! buffer they arrived in (`BytesMut::split_to(..).freeze()`), so nothing is copied and
//! nothing is held beyond one read. A chunked body's framing passes through unchanged while a
//! decoder checks it and counts it against `limits.max_body`.
//!
//! Failures before the answer began become 502/503/504 via the caller; failures after it
//! began can only cut the client connection, which is what the client then sees.
//! A request whose body is already in memory (no body, or a small one that arrived with the
//! head) can be replayed: once on another target when the connection could not be opened,
//! and once on a fresh connection when a pooled one turns out to be closed — for idempotent
//! methods only.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncWriteRent, Splitable};

use crate::config::Limits;
use crate::error::{Error, Kind};
use crate::gateway::ctx::{BodyState, RequestCtx};
use crate::gateway::finish::connection_header;
use crate::gateway::target::select;
use crate::gateway::Next;
use crate::http::body::{ChunkError, ChunkedDecoder};
use crate::http::conn::{write_all, Conn, READ_CHUNK};
use crate::http::h1::{self, Framing, HeadError, ResponseHead};
use crate::http::{has_token, name_eq};
use crate::shard::{Shard, ShardSnap, TargetLocal};
use crate::snapshot::HttpIntegration;
use crate::syntax::path::encode_segment;
use crate::syntax::template::Escape;
use crate::syntax::Method;
use crate::upstream::{
    checkin, checkout, connect_target, record_failure, record_success, PoolCfg, UpStream,
};

/// Largest upstream response head accepted (then 502).
const MAX_RESPONSE_HEAD: usize = 64 << 10;
/// Largest single read while streaming a big body: fewer, larger reads and writes.
const MAX_READ: usize = 256 << 10;
/// A body that arrived with its head is copied into the upstream write up to this size, so
/// head and body leave in one write.
const COALESCE_BODY: usize = 64 << 10;

pub use crate::http::h1::hop_by_hop;

/// The `Connection` header's value, if any: names listed there are hop-by-hop too. Looked
/// up once per message, not once per header.
fn connection_value<'a>(
    mut headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Option<&'a [u8]> {
    headers
        .find(|(n, _)| name_eq(n, b"connection"))
        .map(|(_, v)| v)
}

/// True when `name` is listed in the `Connection` value (other than the standard tokens).
fn listed_in_connection(conn: Option<&[u8]>, name: &[u8]) -> bool {
    conn.is_some_and(|v| has_token(v, name))
}

/// Keeps the in-flight count of a target right, whatever path the request takes.
struct InFlight(Rc<TargetLocal>);

impl InFlight {
    fn new(t: Rc<TargetLocal>) -> InFlight {
        t.inflight.set(t.inflight.get() + 1);
        InFlight(t)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.set(self.0.inflight.get().saturating_sub(1));
    }
}

/// Builds the upstream request head: the rendered path and query, the client's end-to-end
/// headers, the forwarding headers and the integration's own. `peer_ip` is the client's IP.
pub fn request_head(peer_ip: &str, ctx: &RequestCtx, integ: &HttpIntegration) -> Vec<u8> {
    request_head_with(peer_ip, ctx, integ, &Extra::default())
}

/// What the cache adds to an upstream request.
#[derive(Default)]
pub struct Extra {
    /// Header lines ("name: value\r\n") added to the request (conditional headers).
    pub lines: Vec<u8>,
    /// Drop the client's own conditional headers, so that the answer is a full one the cache
    /// can store.
    pub strip_conditionals: bool,
}

fn conditional(name: &[u8]) -> bool {
    name_eq(name, b"if-none-match")
        || name_eq(name, b"if-modified-since")
        || name_eq(name, b"if-match")
        || name_eq(name, b"if-unmodified-since")
        || name_eq(name, b"if-range")
        || name_eq(name, b"range")
}

/// [`request_head`] with the cache's additions.
pub fn request_head_with(
    peer_ip: &str,
    ctx: &RequestCtx,
    integ: &HttpIntegration,
    extra: &Extra,
) -> Vec<u8> {
    let head = &ctx.head;
    let mut out = Vec::with_capacity(256 + head.raw.len());
    out.extend_from_slice(head.method_bytes());
    out.push(b' ');
    let mut has_query = false;
    integ
        .path
        .render(&mut out, &ctx.vars(peer_ip, Escape::Uri), |i, o| {
            ctx.path_var(i, |s, more| {
                encode_segment(s, o);
                if more {
                    o.push(b'/');
                }
            })
        });
    if out.contains(&b'?') {
        has_query = true;
    }
    if let Some(q) = head.query_bytes() {
        if !q.is_empty() {
            out.push(if has_query { b'&' } else { b'?' });
            out.extend_from_slice(q);
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(integ.host_header.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut xff: Option<&[u8]> = None;
    let conn_hdr = connection_value(head.headers());
    for (name, value) in head.headers() {
        if hop_by_hop(name)
            || name_eq(name, b"host")
            || name_eq(name, b"content-length")
            || name_eq(name, b"expect")
            || name_eq(name, b"x-request-id")
            || name_eq(name, b"x-forwarded-proto")
            || name_eq(name, b"x-forwarded-host")
            || integ
                .headers
                .iter()
                .any(|(n, _)| name_eq(name, n.as_bytes()))
        {
            continue;
        }
        if name_eq(name, b"x-forwarded-for") {
            xff = Some(value);
            continue;
        }
        if listed_in_connection(conn_hdr, name)
            || (extra.strip_conditionals && conditional(name))
            || ctx
                .client_cert
                .as_ref()
                .is_some_and(|c| c.names.iter().any(|n| name_eq(name, n.as_bytes())))
        {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&extra.lines);
    if let Some(c) = &ctx.client_cert {
        out.extend_from_slice(&c.lines);
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(x) = xff {
        out.extend_from_slice(x);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer_ip.as_bytes());
    out.extend_from_slice(if ctx.https {
        &b"\r\nx-forwarded-proto: https\r\n"[..]
    } else {
        &b"\r\nx-forwarded-proto: http\r\n"[..]
    });
    if let Some(h) = head.host_bytes() {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(ctx.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, t) in &integ.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        t.render(&mut out, &ctx.vars(peer_ip, Escape::Header), |i, o| {
            ctx.path_var(i, |s, _| {
                o.extend(s.bytes().filter(|b| *b != b'\r' && *b != b'\n'))
            })
        });
        out.extend_from_slice(b"\r\n");
    }
    match head.framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {
            if head.header(b"content-length").is_some() {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    if head.upgrade {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(head.header(b"upgrade").unwrap_or_default());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How one attempt ended when it did not produce a response head.
enum Failure {
    /// A pooled connection was already closed by the upstream: try a fresh one.
    Stale,
    /// The target failed (counts towards ejection).
    Target(Error),
    /// The client's side failed (bad or oversized body, or it went away).
    Client(Error),
}

/// Forwards the request and streams the answer. `Err` only before any answer was written.
pub async fn forward(
    shard: &Rc<Shard>,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
) -> Result<Next, Error> {
    let ex = send(ss, conn, ctx, integ, &Extra::default()).await?;
    answer(shard, conn, ctx, integ, ex, None).await
}

/// An upstream answer whose head has been read and whose body has not.
pub struct Exchange {
    target: Rc<TargetLocal>,
    cfg: PoolCfg,
    up: UpStream,
    pub resp: ResponseHead,
    ubuf: BytesMut,
}

impl Exchange {
    /// Gives the connection back to the pool when the answer had no body to read (a 304),
    /// else closes it.
    pub fn finish_bodiless(self) {
        let Exchange {
            target,
            cfg,
            up,
            resp,
            ubuf,
        } = self;
        let bodiless = matches!(resp.framing, Framing::None | Framing::Length(0));
        if bodiless && resp.keep_alive && ubuf.is_empty() {
            checkin(&target, &cfg, up);
        }
    }
}

/// Sends the request (with the cache's `extra`) and reads the answer's head. `Err` only
/// before anything was written to the client.
pub async fn send(
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
    extra: &Extra,
) -> Result<Exchange, Error> {
    let cfg = PoolCfg::for_dest(ss, &integ.dest);
    let max_body = ss.snap.limits.max_body;
    let mut head = request_head_with(&conn.peer_ip, ctx, integ, extra);
    // A small body of known length is read whole before anything is sent, as nginx does
    // with client_body_buffer_size: head and body then leave in one write, and the request
    // can be replayed on another connection.
    if let Framing::Length(n) = ctx.head.framing {
        let n = n as usize;
        if n <= COALESCE_BODY && conn.buf.len() < n {
            if ctx.head.expect_continue {
                conn.stream
                    .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                    .await
                    .map_err(|_| Error::downstream(Kind::ClientGone, "writing 100 Continue"))?;
            }
            let idle = ss.snap.limits.idle_timeout;
            while conn.buf.len() < n {
                let want = n - conn.buf.len();
                match monoio::time::timeout(idle, read_exact_hint(conn, want)).await {
                    Ok(Ok(k)) if k > 0 => {}
                    _ => {
                        ctx.body = BodyState::Broken;
                        return Err(Error::downstream(Kind::ClientGone, "reading request body"));
                    }
                }
            }
        }
    }

    // Is the whole body already here? Then it goes out with the head and can be replayed.
    let buffered = match ctx.head.framing {
        Framing::None | Framing::UntilClose => Some(0),
        Framing::Length(n) if (conn.buf.len() as u64) >= n && n as usize <= COALESCE_BODY => {
            Some(n as usize)
        }
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new(max_body);
            match d.feed(&conn.buf, |_| {}) {
                Ok(k) if d.is_done() && k <= COALESCE_BODY => Some(k),
                Ok(_) => None,
                Err(ChunkError::TooLarge) => {
                    return Err(Error::downstream(Kind::BodyTooLarge, "chunked body"))
                }
                Err(ChunkError::Malformed) => {
                    return Err(Error::downstream(
                        Kind::BadRequest("Malformed chunked body"),
                        "chunked body",
                    ))
                }
            }
        }
        _ => None,
    };
    if let Some(n) = buffered {
        head.extend_from_slice(&conn.buf[..n]);
        let _ = conn.buf.split_to(n);
        ctx.body = BodyState::Done;
    }
    let first: Bytes = head.into();
    let replayable = buffered.is_some() && ctx.head.method.is_idempotent();

    let started = Instant::now();
    let deadline = started + integ.timeout;
    let mut exclude = None;
    let mut fresh_only = false;
    let mut tries = 0;
    // When a retry finds no other target, the answer is the failure that caused it.
    let mut last_err: Option<Error> = None;
    let (target, up, resp, ubuf) = loop {
        tries += 1;
        let target = match select(ss, &integ.dest, ctx, conn.peer, exclude) {
            Ok(t) => t,
            Err(e) => return Err(last_err.take().unwrap_or(e)),
        };
        let guard = InFlight::new(target.clone());
        let pooled = if fresh_only {
            None
        } else {
            checkout(&target, &cfg, started)
        };
        let reused = pooled.is_some();
        let mut up = match pooled {
            Some(s) => s,
            None => match connect_target(
                &target,
                cfg.connect_timeout
                    .min(deadline.saturating_duration_since(Instant::now())),
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    record_failure(&target, &cfg);
                    if tries < 3
                        && replayable
                        && !matches!(integ.dest, crate::snapshot::Dest::Literal(_))
                    {
                        tracing::debug!(target_addr = %target.addr, error = %e, "retrying on another target");
                        exclude = Some(target.addr);
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            },
        };
        match exchange(
            conn,
            ctx,
            &mut up,
            first.clone(),
            reused,
            &ss.snap.limits,
            deadline,
        )
        .await
        {
            Ok((resp, ubuf)) => {
                drop(guard);
                break (target, up, resp, ubuf);
            }
            Err(Failure::Stale) if replayable && tries < 3 => {
                fresh_only = true;
                continue;
            }
            Err(Failure::Stale) => {
                record_failure(&target, &cfg);
                return Err(Error::upstream(
                    Kind::BadGateway,
                    format!("{}: connection closed before an answer", target.addr),
                ));
            }
            Err(Failure::Target(e)) => {
                record_failure(&target, &cfg);
                return Err(e);
            }
            Err(Failure::Client(e)) => return Err(e),
        }
    };
    record_success(&target);
    Ok(Exchange {
        target,
        cfg,
        up,
        resp,
        ubuf,
    })
}

/// Where the cache collects a body it means to store, as it streams to the client.
pub struct Tee {
    pub body: BytesMut,
    pub max: usize,
    /// Set when the body outgrew `max` (then collection stopped).
    pub too_large: bool,
    /// Called with the whole body once it has ended where its framing said (and fit within
    /// `max`), before its last bytes are written to the client.
    pub on_complete: Option<Box<dyn FnOnce(Bytes)>>,
    /// Called once when the body outgrows `max`, before the bytes that did it are written
    /// to the client.
    pub on_too_large: Option<Box<dyn FnOnce()>>,
}

impl Tee {
    pub fn new(max: usize, expect: usize) -> Tee {
        Tee {
            body: BytesMut::with_capacity(expect.min(max)),
            max,
            too_large: false,
            on_complete: None,
            on_too_large: None,
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_complete.take() {
            if !self.too_large {
                f(std::mem::take(&mut self.body).freeze());
            }
        }
    }

    fn push(&mut self, b: &[u8]) {
        if self.too_large {
            return;
        }
        if self.body.len() + b.len() > self.max {
            self.too_large = true;
            self.body = BytesMut::new();
            self.on_complete = None;
            if let Some(f) = self.on_too_large.take() {
                f();
            }
            return;
        }
        self.body.extend_from_slice(b);
    }
}

/// Streams the upstream's answer to the client (and into `tee`, when the cache wants it).
pub async fn answer(
    shard: &Rc<Shard>,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
    ex: Exchange,
    tee: Option<&mut Tee>,
) -> Result<Next, Error> {
    let Exchange {
        target,
        cfg,
        mut up,
        resp,
        mut ubuf,
    } = ex;
    let _inflight = InFlight::new(target.clone());

    // The answer's framing towards the client.
    let minor = ctx.head.minor;
    let upgrade = resp.status == 101 && ctx.head.upgrade;
    let dechunk = resp.framing == Framing::Chunked && minor == 0;
    let client_framed = upgrade || !matches!(resp.framing, Framing::UntilClose) && !dechunk;
    let keep = ctx.head.keep_alive
        && ctx.body == BodyState::Done
        && client_framed
        && !upgrade
        && !shard.drain.is_on();

    let mut out = Vec::with_capacity(resp.raw.len() + 128);
    ctx.status = resp.status;
    response_head(&mut out, &resp, ctx, keep, upgrade, dechunk);
    if upgrade {
        conn.stream
            .write_all(out)
            .await
            .map_err(|_| Error::downstream(Kind::ClientGone, "writing 101"))?;
        return Ok(Next::Upgrade(up, ubuf.freeze()));
    }

    let streamed = stream_response(
        conn,
        &mut up,
        &mut ubuf,
        out,
        resp.framing,
        dechunk,
        integ,
        tee,
    )
    .await;
    let pool_ok = match streamed {
        Ok(clean) => clean && resp.keep_alive && ctx.body == BodyState::Done && ubuf.is_empty(),
        Err(side) => {
            if side == Side::Upstream {
                record_failure(&target, &cfg);
                tracing::warn!(request_id = %ctx.request_id, target_addr = %target.addr, "upstream failed mid-answer; closing client connection");
            }
            return Ok(Next::Close);
        }
    };
    if pool_ok {
        checkin(&target, &cfg, up);
    }
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// Sends the request (head, then the body as it streams in) and reads the answer's head.
async fn exchange(
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    up: &mut UpStream,
    first: Bytes,
    reused: bool,
    limits: &Limits,
    deadline: Instant,
) -> Result<(ResponseHead, BytesMut), Failure> {
    let gone = |what: &str| Error::upstream(Kind::BadGateway, what.to_string());
    if up.write_all(first).await.is_err() {
        return Err(if reused {
            Failure::Stale
        } else {
            Failure::Target(gone("writing request head"))
        });
    }
    let streamed = ctx.body == BodyState::Unread;
    if streamed {
        if ctx.head.expect_continue && conn.buf.is_empty() {
            conn.stream
                .write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                .await
                .map_err(|_| {
                    Failure::Client(Error::downstream(Kind::ClientGone, "writing 100 Continue"))
                })?;
        }
        ctx.body = BodyState::Broken;
        stream_request_body(conn, ctx, up, limits).await?;
        ctx.body = BodyState::Done;
    }
    let mut ubuf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if !ubuf.is_empty() {
            match h1::parse_response(&ubuf, MAX_RESPONSE_HEAD, ctx.head.method == Method::Head) {
                Ok(Some((len, parts))) => {
                    if parts.status < 200 && !(parts.status == 101 && ctx.head.upgrade) {
                        // Interim answers (100 Continue, 103 Early Hints) are not relayed.
                        let _ = ubuf.split_to(len);
                        continue;
                    }
                    if parts.status == 101 && !ctx.head.upgrade {
                        return Err(Failure::Target(gone("101 without an upgrade request")));
                    }
                    let raw = ubuf.split_to(len).freeze();
                    return Ok((parts.into_head(raw), ubuf));
                }
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    return Err(Failure::Target(gone("response head too large")))
                }
                Err(HeadError::Malformed(m)) => return Err(Failure::Target(gone(m))),
            }
        }
        match monoio::time::timeout_at(deadline.into(), up.read_into(&mut ubuf)).await {
            Err(_) => {
                return Err(Failure::Target(Error::upstream(
                    Kind::GatewayTimeout,
                    "waiting for the answer",
                )))
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                let nothing = ubuf.is_empty();
                return Err(if reused && nothing && !streamed {
                    Failure::Stale
                } else {
                    Failure::Target(gone("connection closed before a complete answer"))
                });
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads from the client with room for at least `want` more bytes.
async fn read_exact_hint(conn: &mut Conn, want: usize) -> std::io::Result<usize> {
    reserve_for(&mut conn.buf, want);
    conn.read_more().await
}

/// Makes room for up to `want` bytes (capped at MAX_READ), so one read can take them all.
fn reserve_for(buf: &mut BytesMut, want: usize) {
    let want = want.clamp(READ_CHUNK, MAX_READ);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

/// Streams the request body from the client to the upstream, as it arrives.
async fn stream_request_body(
    conn: &mut Conn,
    ctx: &RequestCtx,
    up: &mut UpStream,
    limits: &Limits,
) -> Result<(), Failure> {
    // A client that stops sending its body is cut after idle_timeout, like an idle one.
    let (idle, max_body) = (limits.idle_timeout, limits.max_body);
    let client_gone =
        || Failure::Client(Error::downstream(Kind::ClientGone, "reading request body"));
    let up_gone = || Failure::Target(Error::upstream(Kind::BadGateway, "writing request body"));
    match ctx.head.framing {
        Framing::Length(mut remaining) => loop {
            if !conn.buf.is_empty() {
                let k = remaining.min(conn.buf.len() as u64) as usize;
                let part = conn.buf.split_to(k).freeze();
                up.write_all(part).await.map_err(|_| up_gone())?;
                remaining -= k as u64;
            }
            if remaining == 0 {
                return Ok(());
            }
            reserve_for(&mut conn.buf, remaining.min(MAX_READ as u64) as usize);
            match monoio::time::timeout(idle, conn.read_more()).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(client_gone()),
            }
        },
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(max_body);
            loop {
                if !conn.buf.is_empty() {
                    let k = match dec.feed(&conn.buf, |_| {}) {
                        Ok(k) => k,
                        Err(ChunkError::TooLarge) => {
                            return Err(Failure::Client(Error::downstream(
                                Kind::BodyTooLarge,
                                "chunked body",
                            )))
                        }
                        Err(ChunkError::Malformed) => {
                            return Err(Failure::Client(Error::downstream(
                                Kind::BadRequest("Malformed chunked body"),
                                "chunked body",
                            )))
                        }
                    };
                    let part = conn.buf.split_to(k).freeze();
                    up.write_all(part).await.map_err(|_| up_gone())?;
                }
                if dec.is_done() {
                    return Ok(());
                }
                match monoio::time::timeout(idle, conn.read_more()).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return Err(client_gone()),
                }
            }
        }
        Framing::None | Framing::UntilClose => Ok(()),
    }
}

/// Builds the head sent to the client from the upstream's.
fn response_head(
    out: &mut Vec<u8>,
    resp: &ResponseHead,
    ctx: &RequestCtx,
    keep: bool,
    upgrade: bool,
    dechunk: bool,
) {
    let minor = ctx.head.minor;
    out.extend_from_slice(if minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(itoa::Buffer::new().format(resp.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(resp.slice(&resp.reason));
    out.extend_from_slice(b"\r\n");
    let conn_hdr = connection_value(resp.headers());
    for (name, value) in resp.headers() {
        let keep_te = name_eq(name, b"transfer-encoding") && !dechunk;
        let keep_upgrade = upgrade && name_eq(name, b"upgrade");
        let hop = hop_by_hop(name) || listed_in_connection(conn_hdr, name);
        if (hop && !keep_te && !keep_upgrade) || name_eq(name, b"x-request-id") {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(ctx.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    crate::gateway::cache_headers(out, ctx);
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else {
        if let Some(r) = &ctx.ratelimit {
            crate::gateway::finish::ratelimit_headers(out, r);
        }
        connection_header(out, minor, keep);
    }
    out.extend_from_slice(b"\r\n");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

/// Writes the head and streams the body. `Ok(true)`: the body ended where its framing said.
#[allow(clippy::too_many_arguments)]
async fn stream_response(
    conn: &mut Conn,
    up: &mut UpStream,
    ubuf: &mut BytesMut,
    mut out: Vec<u8>,
    framing: Framing,
    dechunk: bool,
    integ: &HttpIntegration,
    mut tee: Option<&mut Tee>,
) -> Result<bool, Side> {
    let idle = integ.timeout;
    async fn fill(
        up: &mut UpStream,
        ubuf: &mut BytesMut,
        idle: std::time::Duration,
    ) -> Result<usize, Side> {
        match monoio::time::timeout(idle, up.read_into(ubuf)).await {
            Ok(Ok(n)) => Ok(n),
            _ => Err(Side::Upstream),
        }
    }
    match framing {
        Framing::None => {
            if let Some(t) = tee {
                t.finish();
            }
            conn.stream.write_all(out).await.map_err(|_| Side::Client)?;
            Ok(true)
        }
        Framing::Length(n) => {
            let mut remaining = n;
            // Small answers: head and body leave in one write.
            let k = remaining.min(ubuf.len() as u64) as usize;
            if k <= COALESCE_BODY {
                out.extend_from_slice(&ubuf[..k]);
                if let Some(t) = tee.as_deref_mut() {
                    t.push(&ubuf[..k]);
                }
                let _ = ubuf.split_to(k);
                remaining -= k as u64;
            }
            if remaining == 0 {
                if let Some(t) = tee.as_deref_mut() {
                    t.finish();
                }
            }
            conn.stream.write_all(out).await.map_err(|_| Side::Client)?;
            loop {
                if !ubuf.is_empty() && remaining > 0 {
                    let k = remaining.min(ubuf.len() as u64) as usize;
                    let part = ubuf.split_to(k).freeze();
                    remaining -= k as u64;
                    if let Some(t) = tee.as_deref_mut() {
                        t.push(&part);
                        if remaining == 0 {
                            t.finish();
                        }
                    }
                    conn.stream
                        .write_all(part)
                        .await
                        .map_err(|_| Side::Client)?;
                }
                if remaining == 0 {
                    return Ok(true);
                }
                reserve_for(ubuf, remaining.min(MAX_READ as u64) as usize);
                if fill(up, ubuf, idle).await? == 0 {
                    return Err(Side::Upstream);
                }
            }
        }
        Framing::Chunked => {
            conn.stream.write_all(out).await.map_err(|_| Side::Client)?;
            let mut dec = ChunkedDecoder::new(u64::MAX);
            loop {
                if !ubuf.is_empty() {
                    let mut ranges: smallvec::SmallVec<[std::ops::Range<usize>; 4]> =
                        Default::default();
                    let k = dec
                        .feed(ubuf, |r| ranges.push(r))
                        .map_err(|_| Side::Upstream)?;
                    let part = ubuf.split_to(k).freeze();
                    if let Some(t) = tee.as_deref_mut() {
                        for r in &ranges {
                            t.push(&part[r.clone()]);
                        }
                        if dec.is_done() {
                            t.finish();
                        }
                    }
                    if dechunk {
                        for r in ranges {
                            conn.stream
                                .write_all(part.slice(r))
                                .await
                                .map_err(|_| Side::Client)?;
                        }
                    } else {
                        conn.stream
                            .write_all(part)
                            .await
                            .map_err(|_| Side::Client)?;
                    }
                }
                if dec.is_done() {
                    return Ok(true);
                }
                if fill(up, ubuf, idle).await? == 0 {
                    return Err(Side::Upstream);
                }
            }
        }
        Framing::UntilClose => {
            conn.stream.write_all(out).await.map_err(|_| Side::Client)?;
            loop {
                if !ubuf.is_empty() {
                    let part = ubuf.split().freeze();
                    conn.stream
                        .write_all(part)
                        .await
                        .map_err(|_| Side::Client)?;
                }
                if fill(up, ubuf, idle).await? == 0 {
                    return Ok(false);
                }
            }
        }
    }
}

/// Relays bytes both ways after a `101 Switching Protocols` until either side closes. Plain
/// to plain uses monoio's copy on split sockets; when either side is TLS, both become
/// poll-style streams (`PollIo`) and tokio's `copy_bidirectional` moves the bytes.
pub async fn relay(conn: Conn, up: UpStream, from_upstream: Bytes) {
    use crate::http::conn::Stream;
    use crate::http::pollio::PollIo;
    let Conn { stream, buf, .. } = conn;
    match (stream, up) {
        (Stream::Plain(s), UpStream::Plain(u)) => relay_plain(s, u, buf, from_upstream).await,
        (stream, up) => {
            let mut client = match stream {
                Stream::Plain(s) => PollIo::plain(s, buf.freeze()),
                Stream::Tls(t) => t.into_poll_io(buf.freeze()),
                // HTTP/2 streams never carry an upgrade.
                Stream::H2(_) => return,
            };
            let mut upstream = match up {
                UpStream::Plain(u) => PollIo::plain(u, from_upstream),
                UpStream::Tls(t) => t.into_poll_io(from_upstream),
                // Upgrades are refused before they reach an HTTP/2 upstream.
                UpStream::H2(_) => return,
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    }
}

async fn relay_plain(
    mut stream: monoio::net::TcpStream,
    mut up: monoio::net::TcpStream,
    buf: BytesMut,
    from_upstream: Bytes,
) {
    if !buf.is_empty() && write_all(&mut up, buf.freeze()).await.is_err() {
        return;
    }
    if !from_upstream.is_empty() && write_all(&mut stream, from_upstream).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = stream.into_split();
    let (mut ur, mut uw) = up.into_split();
    let a = async {
        let _ = monoio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
    };
    let b = async {
        let _ = monoio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    monoio::join!(a, b);
}
