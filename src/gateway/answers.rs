//! Answers the gateway makes itself without an upstream: a `mock` integration's, and the 308
//! of a `redirect_https` listener. Both are built as an [`Answer`] that [`super::finish`]
//! writes.

use super::ctx::RequestCtx;
use crate::error::{Error, Kind};
use crate::http::write::Answer;
use crate::snapshot::MockIntegration;
use crate::syntax::template::Escape;

/// `redirect_https` listeners: 308 to the same host and path (and query) over https.
pub(crate) fn redirect(ctx: &RequestCtx) -> Result<Answer, Error> {
    let host = ctx
        .head
        .host_bytes()
        .filter(|h| !h.is_empty() && h.iter().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Error::downstream(
                Kind::BadRequest("A Host header is needed to redirect to https"),
                "redirect",
            )
        })?;
    // Drop an explicit :80; keep any other port as written.
    let host = host.strip_suffix(b":80").unwrap_or(host);
    let mut headers = Vec::with_capacity(64 + host.len());
    headers.extend_from_slice(b"location: https://");
    headers.extend_from_slice(host);
    // The asterisk form (`OPTIONS *`) names no path: the root's.
    let path = ctx.head.path_bytes();
    headers.extend_from_slice(if path.is_empty() || path == b"*" {
        b"/"
    } else {
        path
    });
    if let Some(q) = ctx.head.query_bytes() {
        headers.push(b'?');
        headers.extend_from_slice(q);
    }
    headers.extend_from_slice(b"\r\n");
    Ok(Answer {
        status: 308,
        headers,
        ..Answer::default()
    })
}

/// A `mock` integration's answer: status, headers and body with variables substituted.
pub(crate) fn mock(ctx: &RequestCtx, peer_ip: &str, m: &MockIntegration) -> Answer {
    let mut body = Vec::new();
    m.body
        .render(&mut body, &ctx.vars(peer_ip, Escape::Raw), |i, out| {
            ctx.path_var(i, |s, more| {
                out.extend_from_slice(s.as_bytes());
                if more {
                    out.push(b'/');
                }
            })
        });
    let mut headers = Vec::with_capacity(128);
    for (name, t) in &m.headers {
        headers.extend_from_slice(name.as_bytes());
        headers.extend_from_slice(b": ");
        t.render(&mut headers, &ctx.vars(peer_ip, Escape::Header), |i, o| {
            ctx.path_var(i, |s, more| {
                // Header values cannot carry control bytes; decoded path text could.
                o.extend(s.bytes().filter(|&b| crate::http::is_value_byte(b)));
                if more {
                    o.push(b'/');
                }
            })
        });
        headers.extend_from_slice(b"\r\n");
    }
    // Amazon API Gateway's default for mock answers.
    let content_type = (!m.has_content_type && !body.is_empty()).then_some("application/json");
    Answer {
        status: m.status,
        headers,
        content_type,
        body,
        ratelimit: true,
    }
}
