//! The one exit. Every request leaves through [`finish`]: an answer the gateway writes itself
//! (an error, a mock, a redirect: an [`Answer`], rendered here and nowhere else) or one that
//! was already streamed (a proxied or cached answer) is counted by status here, and here the
//! connection's fate (keep-alive, close, linger) is decided. What never reaches a phase leaves
//! through the same counting: a malformed head ([`head_error`]), an HTTP/2 stream refused or
//! reset before its head was usable ([`h2_refused`], [`h2_reset`]), and a request whose
//! client went away mid-way — a dropped pipeline is counted by its [`Exit`] guard.
//!
//! This is the place that will feed the access log and the trace span: it sees the route
//! match, the status and the request id for every request, whichever way it ended.

use std::io::Write;

use bytes::Bytes;
use h2::server::SendResponse;

use super::ctx::{BodyState, RequestCtx};
use super::Next;
use crate::error::{Error, Kind, RateInfo};
use crate::http::conn::Conn;
use crate::http::h1::Framing;
use crate::http::write::{json_message, status_line};
use crate::metrics::Counter;
use crate::shard::Shard;
use crate::syntax::Method;

/// The status counted for a request whose client went away before it was answered (nginx's
/// 499 "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// An answer the gateway writes itself, as a value; [`Answer::render`] is the only place
/// that turns one into bytes (HTTP/1.1, which HTTP/2 streams map to frames).
#[derive(Debug, Default)]
pub struct Answer {
    pub status: u16,
    /// Header lines besides the ones every answer gets, each `name: value\r\n`.
    pub headers: Vec<u8>,
    /// `content-type`, unless `headers` has one.
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
    /// Carries the request's `RateLimit-*` headers (answers made after the throttle phase).
    pub ratelimit: bool,
}

impl Answer {
    /// A gateway error: JSON `{"message": ...}`, `Retry-After` and `RateLimit-*` on 429s,
    /// `Allow` on 405.
    pub fn error(e: &Error) -> Answer {
        let mut body = Vec::with_capacity(64);
        json_message(&mut body, e.client_message());
        let mut headers = Vec::new();
        match &e.kind {
            Kind::Throttled(r) => {
                retry_after(&mut headers, r.retry_after_s);
                ratelimit_headers(&mut headers, r);
            }
            Kind::QuotaExceeded { retry_after_s } => retry_after(&mut headers, *retry_after_s),
            Kind::MethodNotAllowed(allow) => {
                headers.extend_from_slice(b"allow: ");
                for (i, m) in allow.iter().enumerate() {
                    if i > 0 {
                        headers.extend_from_slice(b", ");
                    }
                    headers.extend_from_slice(m.as_str().as_bytes());
                }
                headers.extend_from_slice(b"\r\n");
            }
            _ => {}
        }
        Answer {
            status: e.status(),
            headers,
            content_type: Some("application/json"),
            body,
            ratelimit: false,
        }
    }

    /// Renders the answer: status line, its headers, `content-type`, `content-length`,
    /// `x-request-id`, `RateLimit-*`, `connection`; the body unless `head_only`.
    pub fn render(
        &self,
        out: &mut Vec<u8>,
        minor: u8,
        request_id: &str,
        ratelimit: Option<&RateInfo>,
        keep_alive: bool,
        head_only: bool,
    ) {
        status_line(out, minor, self.status);
        out.extend_from_slice(&self.headers);
        if let Some(ct) = self.content_type {
            out.extend_from_slice(b"content-type: ");
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let _ = write!(
            out,
            "content-length: {}\r\nx-request-id: {}\r\n",
            self.body.len(),
            request_id
        );
        if let (true, Some(r)) = (self.ratelimit, ratelimit) {
            ratelimit_headers(out, r);
        }
        connection_header(out, minor, keep_alive);
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// How the phases end: with an answer for [`finish`] to write, or having streamed one
/// themselves (proxied, cached), with what the connection does next.
pub enum Outcome {
    Answer(Answer),
    Sent(Next),
}

/// Counts a request that never reached [`finish`] — its pipeline was dropped because the
/// client reset the stream or went away — as [`CLIENT_CLOSED`].
pub struct Exit<'a> {
    shard: &'a Shard,
    done: bool,
}

impl<'a> Exit<'a> {
    pub fn new(shard: &'a Shard) -> Exit<'a> {
        Exit { shard, done: false }
    }
}

impl Drop for Exit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shard.metrics.add(Counter::for_status(CLIENT_CLOSED));
        }
    }
}

/// The one exit: writes the answer the phases produced (or the error that stopped them),
/// counts the request, and decides whether the connection stays.
pub async fn finish(
    shard: &Shard,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    result: Result<Outcome, Error>,
    mut exit: Exit<'_>,
) -> Next {
    let draining = shard.drain.is_on();
    let next = match result {
        Ok(Outcome::Sent(next)) => next,
        Ok(Outcome::Answer(a)) => write_answer(conn, ctx, &a, draining, true).await,
        Err(e) if e.kind == Kind::ClientGone => {
            ctx.status = ctx.status.max(CLIENT_CLOSED);
            Next::Close
        }
        Err(e) => {
            match e.status() {
                500..=599 => {
                    tracing::warn!(request_id = %ctx.request_id, status = e.status(), error = %e, "request failed")
                }
                _ => {
                    tracing::debug!(request_id = %ctx.request_id, status = e.status(), error = %e, "request refused")
                }
            }
            count_error(shard, &e);
            write_answer(
                conn,
                ctx,
                &Answer::error(&e),
                draining,
                !e.closes_connection(),
            )
            .await
        }
    };
    if ctx.status != 0 {
        shard.metrics.add(Counter::for_status(ctx.status));
    }
    exit.done = true;
    next
}

/// Writes an answer the gateway made; `may_keep` is false when the answer itself ends the
/// connection (an error that leaves the stream unusable).
async fn write_answer(
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    a: &Answer,
    draining: bool,
    may_keep: bool,
) -> Next {
    let body_ok = skip_unread_body(conn, ctx);
    let keep = ctx.head.keep_alive && may_keep && body_ok && !draining;
    ctx.status = a.status;
    let mut out = Vec::with_capacity(256 + a.body.len());
    a.render(
        &mut out,
        ctx.head.minor,
        ctx.request_id.as_str(),
        ctx.ratelimit.as_ref(),
        keep,
        ctx.head.method == Method::Head,
    );
    if conn.stream.write_all(out).await.is_err() {
        return Next::Close;
    }
    next_after(keep, body_ok)
}

/// A request head that could not be parsed (400, 408, 431): answered, counted, and the
/// connection closes. Returns whether the answer was written (then linger before closing).
pub async fn head_error(shard: &Shard, conn: &mut Conn, e: &Error) -> bool {
    count_error(shard, e);
    shard.metrics.add(Counter::for_status(e.status()));
    let rid = shard.request_id();
    let mut out = Vec::with_capacity(256);
    Answer::error(e).render(&mut out, 1, rid.as_str(), None, false, false);
    conn.stream.write_all(out).await.is_ok()
}

/// An HTTP/2 stream answered with a bare status before it reached the pipeline (CONNECT: 405).
pub fn h2_refused(shard: &Shard, respond: &mut SendResponse<Bytes>, status: http::StatusCode) {
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    let _ = respond.send_response(resp, true);
    shard.metrics.add(Counter::for_status(status.as_u16()));
}

/// An HTTP/2 stream whose request cannot be mapped to a head: reset, counted as a bad request.
pub fn h2_reset(shard: &Shard, respond: &mut SendResponse<Bytes>, reason: h2::Reason) {
    shard.metrics.add(Counter::BadRequests);
    shard.metrics.add(Counter::for_status(400));
    respond.send_reset(reason);
}

/// `Retry-After: N`.
fn retry_after(out: &mut Vec<u8>, seconds: u64) {
    out.extend_from_slice(b"retry-after: ");
    out.extend_from_slice(itoa::Buffer::new().format(seconds).as_bytes());
    out.extend_from_slice(b"\r\n");
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
