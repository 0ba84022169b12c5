//! Request validation (a route's `request_validator`): required parameters, then the body
//! against the model for its content type. Only routes that validate a body buffer it — whole,
//! up to `limits.max_body` — and a chunked one is decoded once and passed on with a length.
//! Routes without validation pay one branch.

use bytes::BytesMut;

use super::ctx::{BodyState, RequestCtx, RouteMatch};
use crate::config::RequiredParam;
use crate::config::BODY_MEMORY_FACTOR;
use crate::error::{Error, Kind};
use crate::http::body::{ChunkError, ChunkedDecoder};
use crate::http::conn::Conn;
use crate::http::h1::Framing;
use crate::shard::ShardSnap;
use crate::syntax::json_doc::Doc;

/// Schema errors named in a refusal's reason (the rest are counted).
const MAX_REASONS: usize = 5;
/// Bytes of each reason kept.
const MAX_REASON_BYTES: usize = 200;

/// Checks the request against its route's validation (400 when it fails).
pub(crate) async fn check(
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    m: RouteMatch,
) -> Result<(), Error> {
    let route = &ss.snap.config.apis[m.api].routes[m.route];
    let Some(v) = &route.validation else {
        return Ok(());
    };
    let missing: Vec<&str> = v
        .required
        .iter()
        .filter(|p| !present(ctx, p))
        .map(RequiredParam::name)
        .collect();
    if !missing.is_empty() {
        return Err(Error::downstream(
            Kind::MissingParameters(missing.join(", ").into()),
            "request validation",
        ));
    }
    if v.models.is_empty() {
        return Ok(());
    }
    let invalid =
        |why: String| Error::downstream(Kind::InvalidBody(why.into()), "request validation");
    // A body checked against one Content-Type while the upstream, which gets every copy,
    // might read it as another: refused.
    let types = ctx
        .head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-type"))
        .take(2)
        .count();
    // One line naming two (`application/json,text/plain`) likewise.
    let listed = ctx.head.header(b"content-type").is_some_and(|c| {
        c.split(|&b| b == b';')
            .next()
            .is_some_and(|t| t.contains(&b','))
    });
    if types > 1 || listed {
        return Err(invalid("[more than one Content-Type header]".into()));
    }
    let ct = media_type(ctx);
    let Some((_, model)) = v
        .models
        .iter()
        .find(|(c, _)| *c == *ct)
        .or_else(|| v.models.iter().find(|(c, _)| c == "$default"))
    else {
        return Ok(());
    };
    let len = read_body(ss, conn, ctx).await?;
    let body = decoded(ss, ctx, &conn.buf[..len])?;
    // An empty body is checked as `{}`, as Amazon API Gateway checks it (a DELETE or a GET
    // on a route whose model takes an empty object passes).
    let empty = body.is_empty();
    let text: &[u8] = if empty { b"{}" } else { &body };
    // Read in place (strings borrowed from the body), not built into a `serde_json::Value`.
    let doc = Doc::parse(text).map_err(|e| invalid(format!("[the body is not JSON: {e}]")))?;
    if model.is_valid(doc.root()) {
        // A request template or a mapping reading the body gets the parse made here.
        if reads_json(route) && !empty {
            ctx.body_json = Some(Box::new(doc.to_value()));
        }
        return Ok(());
    }
    let mut errors = model.iter_errors(doc.root());
    let Some(first) = errors.next() else {
        return Ok(());
    };
    // Each reason is cut short: a schema error quotes the value, which may be most of the body.
    let short = |e: &dyn std::fmt::Display| {
        let mut s = e.to_string();
        if s.len() > MAX_REASON_BYTES {
            let mut cut = MAX_REASON_BYTES;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    };
    // The first few, and whether there are more: errors are not counted (a big body can hold
    // millions, each as costly to find as a valid value to check).
    let mut why: Vec<String> = vec![short(&first)];
    for e in errors.by_ref().take(MAX_REASONS - 1) {
        why.push(short(&e));
    }
    if errors.next().is_some() {
        why.push("and more".to_string());
    }
    Err(invalid(format!("[{}]", why.join(", "))))
}

/// Whether the route reads the body's JSON after validation: a request template that reads
/// it, or a parameter mapping that names the body.
fn reads_json(route: &crate::config::Route) -> bool {
    route.transform.as_ref().is_some_and(|t| {
        t.request
            .iter()
            .any(|(_, t)| t.reads(crate::syntax::vtl::READS_JSON))
    }) || route.mapping.as_ref().is_some_and(|m| m.reads_body())
}

thread_local! {
    /// What this shard's requests hold of `limits.body_memory` (a shard is one thread).
    static HELD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// What a request holds of its shard's body memory, given back when the request ends.
#[derive(Debug, Default)]
pub(crate) struct Held(u64);

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get().saturating_sub(self.0)));
    }
}

/// Holds enough of the shard's body memory for `bytes` of body read whole (counted
/// [`BODY_MEMORY_FACTOR`] times); 503 when the shard's other requests hold the rest. A
/// request alone on its shard always gets what it needs (up to `limits.max_body`).
fn hold(ss: &ShardSnap, ctx: &mut RequestCtx, bytes: u64) -> Result<(), Error> {
    let more = fits(ss, ctx, bytes)?;
    if more > 0 {
        HELD.with(|h| h.set(h.get() + more));
        ctx.held.0 += more;
    }
    Ok(())
}

/// What holding `bytes` of body would add to what the request holds; 503 when that does not
/// fit beside the shard's other requests. Holds nothing.
fn fits(ss: &ShardSnap, ctx: &RequestCtx, bytes: u64) -> Result<u64, Error> {
    let want = bytes.saturating_mul(BODY_MEMORY_FACTOR);
    let more = want.saturating_sub(ctx.held.0);
    if more == 0 {
        return Ok(0);
    }
    HELD.with(|h| {
        let others = h.get() - ctx.held.0.min(h.get());
        if others > 0 && h.get() + more > ss.snap.limits.body_memory {
            return Err(Error::downstream(
                Kind::BodiesOverBudget,
                "limits.body_memory: the shard holds as many request bodies as it may",
            ));
        }
        Ok(more)
    })
}

/// The body as the client meant it: a gzip or br `Content-Encoding` is decoded, up to
/// `limits.max_body` (413 beyond: a compression bomb stops there); another coding is 415.
pub(crate) fn decoded<'b>(
    ss: &ShardSnap,
    ctx: &mut RequestCtx,
    raw: &'b [u8],
) -> Result<std::borrow::Cow<'b, [u8]>, Error> {
    use super::compress::{decode_request, DecodeError};
    let codings = ctx
        .head
        .headers()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-encoding"))
        .map(|(_, v)| v);
    let out = decode_request(codings, raw, ss.snap.limits.max_body).map_err(|e| match e {
        DecodeError::TooLarge => Error::downstream(Kind::BodyTooLarge, "decoded request body"),
        DecodeError::Corrupt => Error::downstream(
            Kind::InvalidBody("[the body does not decode as its Content-Encoding says]".into()),
            "request body",
        ),
        DecodeError::Unsupported => Error::downstream(
            Kind::UnsupportedEncoding,
            "request body: Content-Encoding other than gzip or br",
        ),
    });
    let out = out?;
    if let std::borrow::Cow::Owned(d) = &out {
        hold(ss, ctx, (raw.len() + d.len()) as u64)?;
    }
    Ok(out)
}

/// The request's media type, lower-case and without parameters; without a Content-Type,
/// JSON (as Amazon API Gateway assumes). Models and templates are chosen by it.
/// Borrowed from the request when it is written in lower case.
pub(crate) fn media_type(ctx: &RequestCtx) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let Some(c) = ctx.head.header(b"content-type") else {
        return Cow::Borrowed("application/json");
    };
    let c = c
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    // An empty one (`Content-Type:`, `Content-Type: ;charset=utf-8`) says no more than none.
    if c.is_empty() {
        return Cow::Borrowed("application/json");
    }
    match std::str::from_utf8(c) {
        Ok(s) if !s.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(s),
        _ => Cow::Owned(String::from_utf8_lossy(c).to_ascii_lowercase()),
    }
}

/// Is a required parameter there, and not empty (any of its copies, for a header as for a
/// query string)?
fn present(ctx: &RequestCtx, p: &RequiredParam) -> bool {
    match p {
        RequiredParam::Header(n) => ctx
            .head
            .headers()
            .any(|(k, v)| k.eq_ignore_ascii_case(n.as_bytes()) && !v.trim_ascii().is_empty()),
        RequiredParam::Query(n) => super::authorizer::query_values(ctx, n).any(|v| !v.is_empty()),
        RequiredParam::Path(i, _) => {
            let mut any = false;
            ctx.path_var(*i, |s, _| any |= !s.is_empty());
            any
        }
    }
}

/// Reads the whole body into the front of `conn.buf` and returns its length. A chunked body
/// is decoded there and the request carries a length from now on.
pub(crate) async fn read_body(
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
) -> Result<usize, Error> {
    let limits = &ss.snap.limits;
    let mut clock = crate::gateway::proxy::BodyClock::new(limits);
    let continue_first =
        |ctx: &RequestCtx, conn: &Conn| ctx.head.expect_continue && conn.buf.is_empty();
    let broken = |ctx: &mut RequestCtx, e: Error| {
        ctx.body = BodyState::Broken;
        e
    };
    match ctx.head.framing {
        Framing::None | Framing::UntilClose => Ok(0),
        Framing::Length(n) => {
            // Held as the bytes come, not as declared: clients that declare large bodies and
            // send nothing hold none of the shard's budget.
            let n = n as usize;
            if conn.buf.len() < n && continue_first(ctx, conn) {
                // A client that waits to be asked is told before it sends a body that would
                // not fit now.
                if let Err(e) = fits(ss, ctx, n as u64) {
                    return Err(broken(ctx, e));
                }
                send_continue(conn).await?;
            }
            loop {
                if let Err(e) = hold(ss, ctx, conn.buf.len().min(n) as u64) {
                    return Err(broken(ctx, e));
                }
                if conn.buf.len() >= n {
                    break;
                }
                if let Err(e) = clock.read(conn, n - conn.buf.len()).await {
                    return Err(broken(ctx, e));
                }
            }
            Ok(n)
        }
        Framing::Chunked => {
            if continue_first(ctx, conn) {
                send_continue(conn).await?;
            }
            let mut dec = ChunkedDecoder::new(limits.max_body);
            let mut body = Vec::new();
            loop {
                if !conn.buf.is_empty() {
                    let mut ranges = Vec::new();
                    let k = match dec.feed(&conn.buf, |r| ranges.push(r)) {
                        Ok(k) => k,
                        Err(ChunkError::TooLarge) => {
                            return Err(broken(
                                ctx,
                                Error::downstream(Kind::BodyTooLarge, "chunked body"),
                            ))
                        }
                        Err(ChunkError::Malformed) => {
                            return Err(broken(
                                ctx,
                                Error::downstream(
                                    Kind::BadRequest("Malformed chunked body"),
                                    "chunked body",
                                ),
                            ))
                        }
                    };
                    for r in ranges {
                        body.extend_from_slice(&conn.buf[r]);
                    }
                    if let Err(e) = hold(ss, ctx, body.len() as u64) {
                        return Err(broken(ctx, e));
                    }
                    let _ = conn.buf.split_to(k);
                }
                if dec.is_done() {
                    break;
                }
                if let Err(e) = clock.read(conn, 16 << 10).await {
                    return Err(broken(ctx, e));
                }
            }
            // The decoded body, then whatever the client sent after it (a pipelined request).
            let len = body.len();
            let mut buf = BytesMut::with_capacity(len + conn.buf.len());
            buf.extend_from_slice(&body);
            buf.extend_from_slice(&conn.buf);
            conn.buf = buf;
            ctx.head.framing = Framing::Length(len as u64);
            Ok(len)
        }
    }
}

async fn send_continue(conn: &mut Conn) -> Result<(), Error> {
    conn.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
        .await
        .map_err(|_| Error::downstream(Kind::ClientGone, "writing 100 Continue"))
}
