//! The one exit. Every request leaves through [`finish`]: an answer the gateway writes itself
//! (an error, a mock, a redirect: an [`Answer`], a value that `http::write` renders) is
//! written here; one already streamed (proxied, or a cache hit written from the stored
//! `Bytes` by `cached`) arrives as [`Outcome::Sent`]. Either way it is counted and recorded
//! here, and here the connection's fate (keep-alive, close, linger) is decided. What never reaches a phase leaves
//! through the same counting: a malformed head ([`head_error`]), an HTTP/2 stream refused or
//! reset before its head was usable ([`h2_refused`], [`h2_reset`]), and a request whose
//! client went away mid-way — a dropped pipeline is counted by its [`Exit`] guard.
//!
//! Every request ends in one [`Record`] handed to [`observe`]: route match, status, bytes in
//! and out, upstream target, cache status, error type, request id. Today that feeds the
//! status counters and a debug event (target `tollgate::request`, off unless the log filter
//! asks for it); the access log, per-route histograms and trace spans plug in there.

use bytes::Bytes;
use h2::server::SendResponse;

use super::ctx::{BodyState, RequestCtx, RouteMatch};
use super::Next;
use crate::error::{Error, Kind, RateInfo};
use crate::http::conn::Conn;
use crate::http::h1::Framing;
use crate::http::write::json_message;
pub(crate) use crate::http::write::Answer;
use crate::metrics::Counter;
use crate::shard::{Shard, ShardSnap};
use crate::syntax::Method;

/// The status counted for a request whose client went away before it was answered (nginx's
/// 499 "client closed request").
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// A gateway error as an [`Answer`]: JSON `{"message": ...}`, `Retry-After` and
/// `RateLimit-*` on 429s, `Allow` on 405, `WWW-Authenticate` on a JWT authorizer's refusals.
pub(crate) fn error_answer(e: &Error) -> Answer {
    let mut body = Vec::with_capacity(64);
    json_message(&mut body, &e.client_message());
    let mut headers = Vec::new();
    match &e.kind {
        Kind::Throttled(r) => {
            retry_after(&mut headers, r.retry_after_s);
            ratelimit_headers(&mut headers, r);
        }
        Kind::QuotaExceeded { retry_after_s } => retry_after(&mut headers, *retry_after_s),
        // RFC 6750 3, in Amazon API Gateway's form.
        Kind::Unauthorized(None) => headers.extend_from_slice(b"www-authenticate: Bearer\r\n"),
        Kind::Unauthorized(Some(why)) => {
            headers.extend_from_slice(
                b"www-authenticate: Bearer scope=\"\" error=\"invalid_token\" error_description=\"",
            );
            headers.extend_from_slice(why.as_bytes());
            headers.extend_from_slice(b"\"\r\n");
        }
        Kind::InsufficientScope(scopes) => {
            headers.extend_from_slice(b"www-authenticate: Bearer scope=\"");
            headers.extend_from_slice(scopes.as_bytes());
            headers.extend_from_slice(
                b"\" error=\"insufficient_scope\" error_description=\"expected scopes: [",
            );
            headers.extend_from_slice(scopes.as_bytes());
            headers.extend_from_slice(b"]\"\r\n");
        }
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

/// How the phases end: with an answer for [`finish`] to write, or having streamed one
/// themselves (proxied, cached), with what the connection does next.
pub(crate) enum Outcome {
    Answer(Answer),
    Sent(Next),
}

/// Counts a request that never reached [`finish`] — its pipeline was dropped because the
/// client reset the stream or went away — as [`CLIENT_CLOSED`].
pub(crate) struct Exit<'a> {
    shard: &'a Shard,
    done: bool,
    /// The connection's counters and buffered bytes when the request's head was taken.
    in_at_start: u64,
    buffered_at_start: usize,
    out_at_start: u64,
    head_len: usize,
}

impl<'a> Exit<'a> {
    /// Armed when a request's head has been parsed (`head_len` bytes, already split off
    /// `conn.buf`).
    pub(crate) fn new(shard: &'a Shard, conn: &Conn, head_len: usize) -> Exit<'a> {
        Exit {
            shard,
            done: false,
            in_at_start: conn.bytes_in,
            buffered_at_start: conn.buf.len(),
            out_at_start: conn.bytes_out,
            head_len,
        }
    }

    /// The request's bytes: its head, and what of the bytes buffered or read since was
    /// consumed (nginx's `$request_length`).
    fn bytes_in(&self, conn: &Conn) -> u64 {
        let read = conn.bytes_in - self.in_at_start;
        let consumed = (self.buffered_at_start as u64 + read).saturating_sub(conn.buf.len() as u64);
        self.head_len as u64 + consumed
    }
}

impl Drop for Exit<'_> {
    fn drop(&mut self) {
        if !self.done {
            observe(
                self.shard,
                None,
                &Record {
                    status: CLIENT_CLOSED,
                    error: Some(Kind::ClientGone.response_type()),
                    ..Record::default()
                },
            );
        }
    }
}

/// Whether anything records request timings (one cached callsite check, no clock read).
pub(crate) fn records_timings() -> bool {
    tracing::enabled!(target: "tollgate::request", tracing::Level::DEBUG)
}

/// One request as it left: what the access log, metrics and traces are fed from.
#[derive(Debug, Default)]
pub(crate) struct Record<'a> {
    pub request_id: &'a str,
    pub method: Option<Method>,
    pub route: Option<RouteMatch>,
    /// The status answered (0: nothing was, e.g. the client went away before a head).
    pub status: u16,
    /// Request bytes taken from the client (head and body), and bytes written back.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream: Option<std::net::SocketAddr>,
    /// `X-Cache` on cached routes.
    pub cache: Option<&'static str>,
    /// The gateway response type of a refusal or failure.
    pub error: Option<&'static str>,
    /// Every healthy target of the upstream was ejected; one was used anyway.
    pub all_ejected: bool,
    /// Microseconds from the start of the phases to an upstream connection being ready, to
    /// the upstream's answer head, and to the end (when timings are recorded).
    pub upstream_connect_us: Option<u64>,
    pub first_byte_us: Option<u64>,
    pub total_us: Option<u64>,
}

/// Where every request's [`Record`] goes. `ss` (absent for a dropped pipeline) resolves the
/// route match to names for the log.
pub(crate) fn observe(shard: &Shard, ss: Option<&ShardSnap>, r: &Record<'_>) {
    if r.status != 0 {
        shard.metrics.add(Counter::for_status(r.status));
    }
    if r.all_ejected {
        shard.metrics.add(Counter::AllTargetsEjected);
        if shard.log_first("every target of an upstream is ejected", r.upstream, 0) {
            tracing::warn!(
                target_addr = r.upstream.map(tracing::field::display),
                "every healthy target of the upstream is ejected (max_fails): balancing over them anyway"
            );
        }
    }
    let route = |m: RouteMatch| {
        ss.and_then(|ss| {
            let api = ss.snap.apis.get(m.api)?;
            Some(format!(
                "{}/{}/{}",
                api.name,
                api.stages.get(m.stage)?,
                api.routes.get(m.route)?.key
            ))
        })
    };
    tracing::debug!(
        target: "tollgate::request",
        request_id = r.request_id,
        method = r.method.map(Method::as_str),
        route = r.route.and_then(route),
        status = r.status,
        bytes_in = r.bytes_in,
        bytes_out = r.bytes_out,
        upstream = r.upstream.map(tracing::field::display),
        cache = r.cache,
        error = r.error,
        upstream_connect_us = r.upstream_connect_us,
        first_byte_us = r.first_byte_us,
        total_us = r.total_us,
        "request"
    );
}

/// The one exit: writes the answer the phases produced (or the error that stopped them),
/// counts the request, and decides whether the connection stays.
pub(crate) async fn finish(
    shard: &Shard,
    ss: &ShardSnap,
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
            ctx.error = Some(e.kind.response_type());
            Next::Close
        }
        Err(e) => {
            ctx.error = Some(e.kind.response_type());
            match e.status() {
                500..=599 => {
                    if shard.log_first("request failed", ctx.upstream, e.status()) {
                        tracing::warn!(request_id = %ctx.request_id, status = e.status(), error = %e, "request failed")
                    }
                }
                _ => {
                    tracing::debug!(request_id = %ctx.request_id, status = e.status(), error = %e, "request refused")
                }
            }
            count_error(shard, &e);
            write_answer(
                conn,
                ctx,
                &error_answer(&e),
                draining,
                !e.closes_connection(),
            )
            .await
        }
    };
    exit.done = true;
    observe(
        shard,
        Some(ss),
        &Record {
            request_id: ctx.request_id.as_str(),
            method: Some(ctx.head.method),
            route: ctx.route,
            status: ctx.status,
            bytes_in: exit.bytes_in(conn),
            bytes_out: conn.bytes_out - exit.out_at_start,
            upstream: ctx.upstream,
            cache: ctx.cache_status,
            error: ctx.error,
            all_ejected: ctx.all_ejected,
            upstream_connect_us: ctx
                .timings
                .and_then(|t| micros(t.received, t.upstream_connected)),
            first_byte_us: ctx.timings.and_then(|t| micros(t.received, t.first_byte)),
            total_us: ctx
                .timings
                .and_then(|t| micros(t.received, Some(std::time::Instant::now()))),
        },
    );
    next
}

fn micros(from: std::time::Instant, to: Option<std::time::Instant>) -> Option<u64> {
    Some(to?.saturating_duration_since(from).as_micros() as u64)
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
    let mut extra = Vec::new();
    if let (true, Some(r)) = (a.ratelimit, &ctx.ratelimit) {
        ratelimit_headers(&mut extra, r);
    }
    a.render(
        &mut out,
        ctx.head.minor,
        ctx.request_id.as_str(),
        &extra,
        keep,
        ctx.head.method == Method::Head,
    );
    if conn.write_all(out).await.is_err() {
        return Next::Close;
    }
    next_after(keep, body_ok)
}

/// A request head that could not be parsed (400, 408, 431): answered, counted, and the
/// connection closes. Returns whether the answer was written (then linger before closing).
pub(crate) async fn head_error(shard: &Shard, conn: &mut Conn, e: &Error) -> bool {
    count_error(shard, e);
    let rid = shard.request_id();
    let mut out = Vec::with_capacity(256);
    error_answer(e).render(&mut out, 1, rid.as_str(), &[], false, false);
    // The bad head is what is buffered; earlier requests on the connection are not counted.
    let (in0, out0) = (conn.buf.len() as u64, conn.bytes_out);
    let written = conn.write_all(out).await.is_ok();
    observe(
        shard,
        None,
        &Record {
            request_id: rid.as_str(),
            status: e.status(),
            bytes_in: in0,
            bytes_out: conn.bytes_out - out0,
            error: Some(e.kind.response_type()),
            ..Record::default()
        },
    );
    written
}

/// An HTTP/2 stream answered with a bare status before it reached the pipeline (CONNECT: 405).
pub(crate) fn h2_refused(
    shard: &Shard,
    respond: &mut SendResponse<Bytes>,
    status: http::StatusCode,
) {
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    let _ = respond.send_response(resp, true);
    observe(
        shard,
        None,
        &Record {
            status: status.as_u16(),
            error: Some("DEFAULT_4XX"),
            ..Record::default()
        },
    );
}

/// An HTTP/2 stream whose request cannot be mapped to a head: reset, counted as a bad request.
pub(crate) fn h2_reset(shard: &Shard, respond: &mut SendResponse<Bytes>, reason: h2::Reason) {
    shard.metrics.add(Counter::BadRequests);
    respond.send_reset(reason);
    observe(
        shard,
        None,
        &Record {
            status: 400,
            error: Some("DEFAULT_4XX"),
            ..Record::default()
        },
    );
}

/// `Retry-After: N`.
fn retry_after(out: &mut Vec<u8>, seconds: u64) {
    out.extend_from_slice(b"retry-after: ");
    out.extend_from_slice(itoa::Buffer::new().format(seconds).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `RateLimit-Limit`, `-Remaining`, `-Reset` (IETF RateLimit header fields).
pub(crate) fn ratelimit_headers(out: &mut Vec<u8>, r: &RateInfo) {
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
pub(crate) fn next_after(keep: bool, body_ok: bool) -> Next {
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
pub(crate) fn skip_unread_body(conn: &mut Conn, ctx: &mut RequestCtx) -> bool {
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

/// Counts a refusal or failure by what it was.
pub(crate) fn count_error(shard: &Shard, e: &Error) {
    let c = match e.kind {
        Kind::Throttled(_) => Counter::Throttled,
        Kind::QuotaExceeded { .. } => Counter::QuotaExceeded,
        Kind::Forbidden | Kind::PolicyDenied { .. } => Counter::Forbidden,
        Kind::BadRequest(_)
        | Kind::HeadTooLarge
        | Kind::BodyTooLarge
        | Kind::HeadTimeout
        | Kind::BodyTimeout
        | Kind::ExpectationFailed => Counter::BadRequests,
        Kind::BadGateway | Kind::NoHealthyUpstream | Kind::GatewayTimeout => {
            Counter::UpstreamErrors
        }
        _ => return,
    };
    shard.metrics.add(c);
}
