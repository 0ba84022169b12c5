//! Parameter mapping at run time (a route's `request_parameters` / `response_parameters`):
//! the edits to the upstream request, worked out once before it is written, and the mapped
//! status and headers of the answer. Routes without a mapping pay one branch.

use std::sync::Arc;

use super::ctx::{RequestCtx, RouteMatch};
use crate::config::{MapOp, ParamMapping};
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::shard::ShardSnap;
use crate::snapshot::HttpIntegration;
use crate::syntax::mapping::{body_text, Action, Piece, Source, Target};
use crate::syntax::path::{encode_component, encode_segment};

/// The largest body `$request.body.PATH` reads (Amazon API Gateway's 100 KB).
const MAX_BODY_PATH: usize = 100 << 10;

/// What the mapping changes in the upstream request.
#[derive(Debug, Default)]
pub(crate) struct RequestEdits {
    /// Client headers left out (lower-case names).
    pub drop: Vec<String>,
    /// Header lines added.
    pub add: Vec<u8>,
    /// The query sent instead of the client's (without `?`).
    pub query: Option<Vec<u8>>,
    /// The path sent instead of the integration's.
    pub path: Option<Vec<u8>>,
    /// Path variables a request template's `$context.requestOverride.path.NAME` set (by
    /// index), used in the integration URI instead of the request's.
    pub path_vars: Vec<(usize, String)>,
    /// The mapped path would hold a dot segment once decoded (`..%2Fadmin` from a header):
    /// refused, as a client's own is, since origins that decode before they resolve dot
    /// segments would climb out of the path.
    pub dot_segment: bool,
}

impl RequestEdits {
    pub(crate) fn drops(&self, name: &[u8]) -> bool {
        self.drop
            .iter()
            .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
    }
}

/// Where a value is written, and so how it is escaped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Into {
    Header,
    Query,
    Path,
}

/// Works out the request's edits (reading the body first when a value names it) and keeps
/// the response mapping for the answer.
pub(crate) async fn prepare(
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    m: RouteMatch,
    h: &HttpIntegration,
) -> Result<(), Error> {
    let Some(map) = &h.mapping else {
        return Ok(());
    };
    if !map.response.is_empty() {
        ctx.response_map = Some((map.clone(), conn.peer_ip.clone()));
    }
    if map.request.is_empty() {
        return Ok(());
    }
    let body = if map.reads_body() {
        let len = super::validate::read_body(ss, conn, ctx).await?;
        // A body that does not decode maps as empty (the request still goes on as sent).
        super::validate::decoded(ss, ctx, &conn.buf[..len])
            .ok()
            .map(|b| b.into_owned())
    } else {
        None
    };
    // As Amazon API Gateway: JSON paths read the first 100 KiB of the body at most.
    let parsed: Option<serde_json::Value> = match &ctx.body_json {
        Some(_) => None,
        None => body
            .as_deref()
            .filter(|b| b.len() <= MAX_BODY_PATH)
            .and_then(|b| serde_json::from_slice(b).ok()),
    };
    let json = match &ctx.body_json {
        Some(v) if body.as_ref().is_some_and(|b| b.len() <= MAX_BODY_PATH) => Some(&**v),
        _ => parsed.as_ref(),
    };
    let params = &ss.snap.config.apis[m.api].routes[m.route].params;
    let src = RequestSources {
        ctx,
        peer_ip: &conn.peer_ip,
        params,
        body: body.as_deref(),
        json,
    };
    let e = edits(map, &src);
    if e.dot_segment {
        return Err(Error::downstream(
            Kind::BadRequest(crate::syntax::path::PathError::DotSegment.message()),
            "overwrite:path",
        ));
    }
    ctx.edits = Some(Box::new(e));
    Ok(())
}

/// Refuses a request whose integration path, rendered, would hold a `.` or `..` segment made
/// by an authorizer's or a client certificate's value (a claim `..`, a context value
/// `a/../admin`): an upstream that resolves dot segments would serve another path than the
/// route names. Routes whose URI path has no such value (nearly all) skip it.
pub(crate) fn check_identity_path(
    ctx: &RequestCtx,
    peer_ip: &str,
    h: &HttpIntegration,
) -> Result<(), Error> {
    if !h.path_identity || ctx.edits.as_ref().is_some_and(|e| e.path.is_some()) {
        return Ok(());
    }
    let mut path = Vec::with_capacity(64);
    crate::gateway::proxy::integration_path(&mut path, peer_ip, ctx, h);
    identity_path_ok(&path)
}

/// [`check_identity_path`] on a rendered path and query.
pub(crate) fn identity_path_ok(rendered: &[u8]) -> Result<(), Error> {
    let path = rendered.split(|&b| b == b'?').next().unwrap_or_default();
    if crate::syntax::path::has_dot_segment(path) {
        return Err(Error::downstream(
            Kind::BadRequest(crate::syntax::path::PathError::DotSegment.message()),
            "integration uri: an authorizer's or certificate's value made a dot segment",
        ));
    }
    Ok(())
}

/// A mapping's request edits for a request without a body to read (the benchmarks' entry).
pub(crate) fn request_edits(
    map: &ParamMapping,
    ctx: &RequestCtx,
    peer_ip: &str,
    params: &[String],
) -> RequestEdits {
    let src = RequestSources {
        ctx,
        peer_ip,
        params,
        body: None,
        json: None,
    };
    edits(map, &src)
}

/// What the request ops change, read from `src`.
fn edits(map: &ParamMapping, src: &RequestSources<'_>) -> RequestEdits {
    let ctx = src.ctx;
    let mut e = RequestEdits::default();
    // (what, the name, the value added: `None` adds nothing)
    let mut query_ops: Vec<(Action, &str, Option<Vec<u8>>)> = Vec::new();
    for op in &map.request {
        match &op.target {
            Target::Header(n) => {
                if op.action != Action::Append {
                    e.drop.push(n.clone());
                }
                if op.action != Action::Remove {
                    let mut v = Vec::new();
                    src.render(&op.value, Into::Header, &mut v);
                    // A value read from what the request does not have adds nothing.
                    if !v.is_empty() || is_static(&op.value) {
                        e.add.extend_from_slice(n.as_bytes());
                        e.add.extend_from_slice(b": ");
                        e.add.extend_from_slice(&v);
                        e.add.extend_from_slice(b"\r\n");
                    }
                }
            }
            Target::Query(n) => {
                let mut v = Vec::new();
                src.render(&op.value, Into::Query, &mut v);
                // A value read from what the request does not have adds nothing; an overwrite
                // drops the client's pairs all the same (as a header's does).
                let add = (op.action != Action::Remove && (!v.is_empty() || is_static(&op.value)))
                    .then_some(v);
                if add.is_some() || op.action != Action::Append {
                    query_ops.push((op.action, n, add));
                }
            }
            Target::Path => {
                let mut p = Vec::with_capacity(64);
                src.render(&op.value, Into::Path, &mut p);
                if p.first() != Some(&b'/') {
                    p.insert(0, b'/');
                }
                e.dot_segment = crate::syntax::path::has_dot_segment(&p);
                e.path = Some(p);
            }
            Target::StatusCode => {}
        }
    }
    if !query_ops.is_empty() {
        e.query = Some(edit_query(
            ctx.head.query_bytes().unwrap_or_default(),
            &query_ops,
        ));
    }
    e
}

fn is_static(value: &[Piece]) -> bool {
    value.iter().all(|p| matches!(p, Piece::Lit(_)))
}

/// The client's query with the mapping's changes: overwritten and removed names left out,
/// then the new pairs.
fn edit_query(client: &[u8], ops: &[(Action, &str, Option<Vec<u8>>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(client.len() + 32);
    for pair in client.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        let replaced = ops.iter().any(|(a, n, _)| {
            *a != Action::Append && crate::gateway::authorizer::percent_decode(name) == n.as_bytes()
        });
        if !replaced {
            if !out.is_empty() {
                out.push(b'&');
            }
            out.extend_from_slice(pair);
        }
    }
    for (_, n, v) in ops {
        let Some(v) = v else { continue };
        if !out.is_empty() {
            out.push(b'&');
        }
        encode_component(n.as_bytes(), &mut out);
        out.push(b'=');
        out.extend_from_slice(v);
    }
    out
}

/// What request values read.
struct RequestSources<'a> {
    ctx: &'a RequestCtx,
    peer_ip: &'a str,
    params: &'a [String],
    body: Option<&'a [u8]>,
    json: Option<&'a serde_json::Value>,
}

impl RequestSources<'_> {
    fn render(&self, pieces: &[Piece], into: Into, out: &mut Vec<u8>) {
        for p in pieces {
            let mut v: Vec<u8> = Vec::new();
            match p {
                Piece::Lit(l) => v.extend_from_slice(l.as_bytes()),
                Piece::Src(s) => self.source(s, &mut v),
            }
            // In a path, only the written text and the request's own path keep their `/`:
            // a value from a header, the query or the body stays one segment (a path that
            // decodes to a dot segment is refused whole, see `syntax::path::has_dot_segment`).
            let whole_path = matches!(
                p,
                Piece::Lit(_) | Piece::Src(Source::Path | Source::PathVar(_))
            );
            match into {
                Into::Path if !whole_path => encode_component(&v, out),
                _ => write_escaped(&v, into, out),
            }
        }
    }

    fn source(&self, s: &Source, out: &mut Vec<u8>) {
        let ctx = self.ctx;
        match s {
            Source::Header(n) => join(
                ctx.head
                    .headers()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
                    .map(|(_, v)| v.to_vec()),
                out,
            ),
            Source::Query(n) => join(crate::gateway::authorizer::query_values(ctx, n), out),
            Source::Body(steps) if steps.is_empty() => {
                out.extend_from_slice(self.body.unwrap_or_default())
            }
            Source::Body(steps) => {
                if let Some(t) = self.json.and_then(|j| body_text(j, steps)) {
                    out.extend_from_slice(t.as_bytes());
                }
            }
            Source::Path => {
                let base = ctx.stage.map_or(0, |s| s.base_len);
                let segs = ctx.segs.skip(base);
                for i in 0..segs.len() {
                    out.push(b'/');
                    out.extend_from_slice(segs.get(i).as_bytes());
                }
                if out.is_empty() {
                    out.push(b'/');
                }
            }
            Source::PathVar(n) => {
                if let Some(i) = self.params.iter().position(|p| p == n) {
                    ctx.path_var(i, |s, more| {
                        out.extend_from_slice(s.as_bytes());
                        if more {
                            out.push(b'/');
                        }
                    });
                }
            }
            Source::Context(c) => context(ctx, self.peer_ip, c, out),
            // Substituted at compile time; a response value is not read here.
            Source::StageVar(_) | Source::ResponseHeader(_) => {}
        }
    }
}

/// `$context.NAME` for a request.
fn context(ctx: &RequestCtx, peer_ip: &str, c: &str, out: &mut Vec<u8>) {
    use crate::syntax::template::AuthorizerVars;
    match c {
        "requestId" | "extendedRequestId" => out.extend_from_slice(ctx.request_id.as_bytes()),
        "domainName" => out.extend_from_slice(ctx.domain_name()),
        "httpMethod" => out.extend_from_slice(ctx.head.method_bytes()),
        "path" => out.extend_from_slice(ctx.head.path_bytes()),
        "identity.sourceIp" => out.extend_from_slice(ctx.source_ip(peer_ip).as_bytes()),
        "identity.userAgent" => {
            out.extend_from_slice(ctx.head.header(b"user-agent").unwrap_or_default())
        }
        other => {
            let Some(a) = &ctx.principal.authorizer else {
                return;
            };
            let v = match other.strip_prefix("authorizer.claims.") {
                Some(claim) => a.claim(claim),
                None => other.strip_prefix("authorizer.").and_then(|n| a.value(n)),
            };
            if let Some(v) = v {
                out.extend_from_slice(v.as_bytes());
            }
        }
    }
}

fn join(values: impl Iterator<Item = Vec<u8>>, out: &mut Vec<u8>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&v);
    }
}

/// A value where it lands: a header loses control bytes; a query value or path is
/// percent-encoded (a path keeps its `/`).
fn write_escaped(v: &[u8], into: Into, out: &mut Vec<u8>) {
    match into {
        Into::Header => out.extend(v.iter().copied().filter(|&b| crate::http::is_value_byte(b))),
        // A query value stays one value: `&`, `=`, `+`, `;` and `#` are escaped too.
        Into::Query => encode_component(v, out),
        Into::Path => {
            for (i, part) in v.split(|&b| b == b'/').enumerate() {
                if i > 0 {
                    out.push(b'/');
                }
                encode_segment(&String::from_utf8_lossy(part), out);
            }
        }
    }
}

/// The response mapping for an answer with `status`, if the route has one.
pub(crate) fn response_ops(ctx: &RequestCtx, status: u16) -> Option<&[MapOp]> {
    ctx.response_map.as_ref()?.0.ops_for(status)
}

/// The status the mapping answers with instead.
pub(crate) fn mapped_status(ops: &[MapOp], status: u16) -> u16 {
    ops.iter()
        .find_map(|o| match (&o.target, o.value.as_slice()) {
            (Target::StatusCode, [Piece::Lit(s)]) => s.parse().ok(),
            _ => None,
        })
        .unwrap_or(status)
}

/// Whether the mapping replaces or removes the answer's header `name`.
pub(crate) fn drops_header(ops: &[MapOp], name: &[u8]) -> bool {
    ops.iter().any(|o| {
        o.action != Action::Append
            && matches!(&o.target, Target::Header(n) if name.eq_ignore_ascii_case(n.as_bytes()))
    })
}

/// Whether any of the mapping's operations names header `name` (sets, appends or removes it).
pub(crate) fn names_header(ops: &[MapOp], name: &[u8]) -> bool {
    ops.iter()
        .any(|o| matches!(&o.target, Target::Header(n) if name.eq_ignore_ascii_case(n.as_bytes())))
}

/// Whether the mapping sets one of the `RateLimit-*` fields the gateway writes (it then
/// stands for the route's).
pub(crate) fn names_ratelimit(ops: &[MapOp]) -> bool {
    ops.iter().any(
        |o| matches!(&o.target, Target::Header(n) if super::finish::is_ratelimit_field(n.as_bytes())),
    )
}

/// Writes the header lines the mapping adds; `answer` is the answer's own headers.
pub(crate) fn add_headers<'h>(
    ops: &[MapOp],
    ctx: &RequestCtx,
    answer: impl Iterator<Item = (&'h [u8], &'h [u8])> + Clone,
    out: &mut Vec<u8>,
) {
    let peer_ip = ctx
        .response_map
        .as_ref()
        .map(|(_, ip)| &**ip)
        .unwrap_or_default();
    for o in ops {
        let (Target::Header(n), Action::Append | Action::Overwrite) = (&o.target, o.action) else {
            continue;
        };
        let start = out.len();
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        let value_at = out.len();
        for p in &o.value {
            let mut v = Vec::new();
            match p {
                Piece::Lit(l) => v.extend_from_slice(l.as_bytes()),
                Piece::Src(Source::ResponseHeader(h)) => join(
                    answer
                        .clone()
                        .filter(|(k, _)| k.eq_ignore_ascii_case(h.as_bytes()))
                        .map(|(_, v)| v.to_vec()),
                    &mut v,
                ),
                Piece::Src(Source::Context(c)) => context(ctx, peer_ip, c, &mut v),
                Piece::Src(_) => {}
            }
            write_escaped(&v, Into::Header, out);
        }
        // A value read from what the answer does not have adds nothing (as on the request).
        if out.len() == value_at && !is_static(&o.value) {
            out.truncate(start);
            continue;
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// The mapping kept for the answer, with the client's address.
pub(crate) type ResponseMap = (Arc<ParamMapping>, std::rc::Rc<str>);
