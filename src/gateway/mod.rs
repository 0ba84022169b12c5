//! The request pipeline: the phases one request passes through, in one top-to-bottom
//! function ([`run_phases`]), and the one place where errors become HTTP answers
//! ([`error_response`]).
//!
//! Each phase either passes the request on (`Ok(..)`) or stops it with an [`Error`] that is
//! answered by [`handle`]. Phases still to come (resource policy, authorizers, throttling,
//! validation, cache) slot in where `run_phases` marks them.

pub mod ctx;
pub mod target;
pub mod template;

use std::io::Write;
use std::rc::Rc;

use bytes::Bytes;
use monoio::net::TcpStream;

use crate::error::{Error, Kind};
use crate::http::conn::{write_all, Conn};
use crate::http::h1::{Framing, RequestHead};
use crate::http::write::{json_message, status_line};
use crate::http::Method;
use crate::route::path::normalise_into;
use crate::route::trie::Lookup;
use crate::shard::{Shard, ShardSnap};
use crate::snapshot::{IntegrationRt, MockIntegration};
use ctx::{BodyState, RequestCtx, RequestId};

/// What the connection does after a request.
pub enum Next {
    KeepAlive,
    Close,
    /// Close, draining what the client still sends so it reads the answer.
    Linger,
    /// The upstream switched protocols: relay bytes both ways from now on. Carries the
    /// upstream connection and bytes already read from it.
    Upgrade(TcpStream, Bytes),
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
    let next = match run_phases(shard, &ss, conn, &mut ctx).await {
        Ok(next) => next,
        Err(e) => answer_error(conn, &mut ctx, &e, shard.drain.is_on()).await,
    };
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
    // Resource policy, authorizers, throttling, validation and the cache run here once built.
    let stage = ctx.stage.map(|s| s.stage).unwrap_or_default();
    match &snap.apis[api].routes[route].per_stage[stage] {
        IntegrationRt::Mock(m) => answer_mock(conn, ctx, m, shard.drain.is_on()).await,
        IntegrationRt::Http(h) => crate::upstream::proxy::forward(shard, ss, conn, ctx, h).await,
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

/// Whether the connection can carry another request after an answer made without reading
/// the body: only if the whole body is already buffered, and then it is skipped.
fn skip_unread_body(conn: &mut Conn, ctx: &mut RequestCtx) -> bool {
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
    let mut out = Vec::with_capacity(256);
    error_response(
        &mut out,
        e,
        ctx.head.minor,
        ctx.request_id.as_str(),
        keep,
        ctx.head.method == Method::Head,
    );
    if write_all(&mut conn.stream, out).await.is_err() {
        return Next::Close;
    }
    if keep {
        Next::KeepAlive
    } else if body_ok {
        Next::Close
    } else {
        Next::Linger
    }
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
    m.body.render(&mut body, ctx.request_id.as_str(), |i, out| {
        ctx.path_var(i, |s, more| {
            out.extend_from_slice(s.as_bytes());
            if more {
                out.push(b'/');
            }
        })
    });
    let mut out = Vec::with_capacity(256 + body.len());
    status_line(&mut out, ctx.head.minor, m.status);
    for (name, t) in &m.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        t.render(&mut out, ctx.request_id.as_str(), |i, o| {
            ctx.path_var(i, |s, more| {
                // Header values cannot carry CR/LF; decoded path text could.
                o.extend(s.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
                if more {
                    o.push(b'/');
                }
            })
        });
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(
        out,
        "content-length: {}\r\nx-request-id: {}\r\n",
        body.len(),
        ctx.request_id
    );
    connection_header(&mut out, ctx.head.minor, keep);
    out.extend_from_slice(b"\r\n");
    if ctx.head.method != Method::Head {
        out.extend_from_slice(&body);
    }
    write_all(&mut conn.stream, out)
        .await
        .map_err(|_| Error::downstream(Kind::ClientGone, "writing mock answer"))?;
    Ok(if keep {
        Next::KeepAlive
    } else if body_ok {
        Next::Close
    } else {
        Next::Linger
    })
}
