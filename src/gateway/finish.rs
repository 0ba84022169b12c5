//! The one exit. Every request leaves through [`finish`]: an answer the gateway writes itself
//! (an error, a mock, a redirect: an [`Answer`], a value that `http::write` renders) is
//! written here; one already streamed (proxied, or a cache hit written from the stored
//! `Bytes` by `cached`) arrives as [`Outcome::Sent`]. Either way it is recorded here
//! ([`super::record`]: counters, the access log), and here the connection's fate
//! (keep-alive, close, linger) is decided. What never reaches a phase leaves through the same
//! recording: a malformed head ([`head_error`]), an HTTP/2 stream refused or reset before its
//! head was usable ([`h2_refused`], [`h2_reset`]), and a request whose client went away
//! mid-way — a dropped pipeline is recorded by its [`Exit`] guard.

use bytes::Bytes;
use h2::server::SendResponse;

use super::ctx::{BodyState, RequestCtx};
use super::record::{observe, From, Record};
pub(crate) use super::record::{Exit, CLIENT_CLOSED};
use super::Next;
use crate::error::{Error, Kind, RateInfo};
use crate::http::conn::Conn;
use crate::http::h1::Framing;
use crate::http::write::json_message;
pub(crate) use crate::http::write::Answer;
use crate::metrics::Counter;
use crate::shard::Shard;
use crate::syntax::Method;

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
        // RFC 9110 7.8: who sends Upgrade names it in Connection (a line of its own beside the
        // writer's close or keep-alive; HTTP/2 drops both).
        Kind::UpgradeRequired => headers.extend_from_slice(
            b"upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\n",
        ),
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
        Kind::UnsupportedEncoding => {
            headers.extend_from_slice(b"accept-encoding: ");
            headers.extend_from_slice(super::compress::DECODES.as_bytes());
            headers.extend_from_slice(b"\r\n");
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
        // Every answer on a throttled route says its limits (a 429 says its own, above).
        ratelimit: !matches!(e.kind, Kind::Throttled(_)),
    }
}

/// How the phases end: with an answer for [`finish`] to write, or having streamed one
/// themselves (proxied, cached), with what the connection does next.
pub(crate) enum Outcome {
    Answer(Answer),
    Sent(Next),
}

/// The one exit: writes the answer the phases produced (or the error that stopped them),
/// counts the request, and decides whether the connection stays.
pub(crate) async fn finish(
    shard: &Shard,
    conn: &mut Conn,
    result: Result<Outcome, Error>,
    exit: &mut Exit<'_>,
) -> Next {
    let draining = shard.drain.is_on();
    let ctx = &mut exit.ctx;
    let next = match result {
        Ok(Outcome::Sent(next)) => next,
        Ok(Outcome::Answer(a)) => write_answer(conn, ctx, a, draining, true).await,
        Err(e) if e.kind == Kind::ClientGone => {
            ctx.status = ctx.status.max(CLIENT_CLOSED);
            ctx.failure = Some(e);
            Next::Close
        }
        Err(e) => {
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
            let mut a = error_answer(&e);
            super::responses::customise(&exit.ss, ctx, &conn.peer_ip, &e, &mut a);
            let next = write_answer(conn, ctx, a, draining, !e.closes_connection()).await;
            ctx.failure = Some(e);
            next
        }
    };
    exit.done = true;
    observe(
        shard,
        &exit.ss,
        &Record {
            ctx: Some(&exit.ctx),
            status: exit.ctx.status,
            bytes_in: exit.bytes_in(conn),
            bytes_out: conn.bytes_out - exit.out_at_start,
            from: Some(exit.from),
            ..Record::default()
        },
    );
    conn.segs = std::mem::take(&mut exit.ctx.segs);
    next
}

/// Writes an answer the gateway made; `may_keep` is false when the answer itself ends the
/// connection (an error that leaves the stream unusable).
async fn write_answer(
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    mut a: Answer,
    draining: bool,
    may_keep: bool,
) -> Next {
    let body_ok = skip_unread_body(conn, ctx);
    let keep = ctx.head.keep_alive && may_keep && body_ok && !draining;
    ctx.status = a.status;
    let head_only = ctx.head.method == Method::Head;
    let extra = answer_lines(ctx, &mut a);
    let mut out = Vec::with_capacity(256 + a.body.len());
    a.render(
        &mut out,
        ctx.head.minor,
        ctx.request_id.as_str(),
        &extra,
        keep,
        head_only,
    );
    if !keep {
        conn.fin_after_next_write();
    }
    if conn.write_all(out).await.is_err() {
        return Next::Close;
    }
    next_after(keep, body_ok)
}

/// What an answer the gateway made gets from the request: its `RateLimit-*` and CORS lines
/// (a mock's own CORS headers give way to the API's), and compression — on a HEAD too, so
/// that it says what a GET would get (RFC 9110 9.3.2: coding and length), without the body.
/// Returns the extra header lines.
pub(crate) fn answer_lines(ctx: &RequestCtx, a: &mut Answer) -> Vec<u8> {
    let mut extra = Vec::new();
    // A mock's own `RateLimit-*` (as configured) stands for the route's.
    if let (true, Some(r)) = (a.ratelimit, &ctx.ratelimit) {
        if !crate::http::h1::header_lines(&a.headers).any(|(n, _)| is_ratelimit_field(n)) {
            ratelimit_headers(&mut extra, r);
        }
    }
    ctx.cors_lines(&mut extra);
    if ctx.cors.is_some()
        && a.headers
            .windows(15)
            .any(|w| w.eq_ignore_ascii_case(b"access-control-"))
    {
        // A mock's own CORS headers give way to the API's.
        a.headers = a
            .headers
            .split_inclusive(|&b| b == b'\n')
            .filter(|l| !crate::http::cors::is_cors_header(l))
            .flatten()
            .copied()
            .collect();
    }
    if let Some((c, enc)) = &ctx.compress {
        let lines = crate::http::h1::header_lines(&a.headers);
        let typed = a.content_type.map(|t| (&b"content-type"[..], t.as_bytes()));
        if super::compress::eligible(c, a.status, lines.chain(typed), a.body.len()) {
            let enc = *enc;
            if let Some(e) = enc {
                a.body = super::compress::compress(c, e, &a.body);
                // Other bytes than the identity answer's: its validator becomes weak (RFC
                // 9110 8.8.1), as a proxied answer's does; a `Content-Encoding: identity`
                // gives way to the coding applied.
                let etag = |l: &[u8]| l.len() > 5 && l[..5].eq_ignore_ascii_case(b"etag:");
                // (What the identity answer says that the coded one does not carry.)
                let coding = |l: &[u8]| {
                    l.iter()
                        .position(|&b| b == b':')
                        .is_some_and(|i| super::compress::replaced_by_coding(&l[..i]))
                };
                if a.headers
                    .split_inclusive(|&b| b == b'\n')
                    .any(|l| etag(l) || coding(l))
                {
                    let mut headers = Vec::with_capacity(a.headers.len() + 2);
                    for l in a.headers.split_inclusive(|&b| b == b'\n') {
                        if coding(l) {
                            continue;
                        }
                        if etag(l) {
                            let value = l[5..].strip_suffix(b"\r\n").unwrap_or(&l[5..]);
                            super::cached::weak_etag(&mut headers, value);
                        } else {
                            headers.extend_from_slice(l);
                        }
                    }
                    a.headers = headers;
                }
            }
            super::compress::lines(&mut extra, enc);
        }
    }
    extra
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
        &shard.snapshot(),
        &Record {
            request_id: rid.as_str(),
            status: e.status(),
            bytes_in: in0,
            bytes_out: conn.bytes_out - out0,
            failure: Some(e),
            from: Some(From::of(conn)),
            // A head that timed out began `header_timeout` before (its first byte, or the
            // connection's start for its first request); the others were refused at once.
            waited: (e.kind == Kind::HeadTimeout)
                .then(|| shard.snapshot().snap.limits.header_timeout),
            ..Record::default()
        },
    );
    written
}

/// An HTTP/2 stream answered with a bare status before it reached the pipeline (CONNECT: 405).
pub(crate) fn h2_refused(
    shard: &Shard,
    from: Option<From>,
    respond: &mut SendResponse<Bytes>,
    status: http::StatusCode,
) {
    // As every answer the gateway writes itself: a JSON message, the request id and the
    // date; a 405 says what is allowed (RFC 9110 15.5.6).
    let request_id = shard.request_id();
    let reason = status.canonical_reason().unwrap_or("Refused");
    let body = Bytes::from(format!("{{\"message\":\"{reason}\"}}"));
    let mut date = Vec::with_capacity(40);
    crate::http::write::date_header(&mut date);
    let mut resp = http::Response::new(());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(body.len()),
    );
    if let Ok(v) = http::HeaderValue::from_str(request_id.as_str()) {
        h.insert("x-request-id", v);
    }
    // `date: <value>\r\n` as the HTTP/1.1 answers write it.
    let date = std::str::from_utf8(&date)
        .ok()
        .and_then(|d| d.strip_prefix("date: "))
        .map(str::trim_end);
    if let Some(v) = date.and_then(|d| http::HeaderValue::from_str(d).ok()) {
        h.insert(http::header::DATE, v);
    }
    if status == http::StatusCode::METHOD_NOT_ALLOWED {
        h.insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE"),
        );
    }
    if let Ok(mut s) = respond.send_response(resp, false) {
        let _ = s.send_data(body, true);
    }
    observe(
        shard,
        &shard.snapshot(),
        &Record {
            request_id: request_id.as_str(),
            status: status.as_u16(),
            response_type: Some("DEFAULT_4XX"),
            from,
            ..Record::default()
        },
    );
}

/// An HTTP/2 stream whose request cannot be mapped to a head: reset, counted as a bad request.
pub(crate) fn h2_reset(
    shard: &Shard,
    from: Option<From>,
    respond: &mut SendResponse<Bytes>,
    reason: h2::Reason,
) {
    shard.metrics.add(Counter::BadRequests);
    respond.send_reset(reason);
    observe(
        shard,
        &shard.snapshot(),
        &Record {
            request_id: shard.request_id().as_str(),
            status: 400,
            response_type: Some("DEFAULT_4XX"),
            from,
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
/// One of the fields [`ratelimit_headers`] writes.
pub(crate) fn is_ratelimit_field(name: &[u8]) -> bool {
    name.len() > 10
        && name[..10].eq_ignore_ascii_case(b"ratelimit-")
        && [&b"limit"[..], b"remaining", b"reset"]
            .iter()
            .any(|f| name[10..].eq_ignore_ascii_case(f))
}

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
        | Kind::InvalidBody(_)
        | Kind::MissingParameters(_)
        | Kind::HeadTooLarge
        | Kind::UriTooLong
        | Kind::VersionNotSupported
        | Kind::CodingNotImplemented
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
