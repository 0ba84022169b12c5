//! Cache keys: the primary key of a request (path, query, configured parts) and the variant
//! key an answer's `Vary` selects.

use crate::cache::policy;
use crate::config::KeyPart;
use crate::gateway::ctx::RequestCtx;
use crate::http::h1::ResponseHead;
use crate::http::name_eq;

/// The request headers an answer varies on, lower-cased; `None` when it does not vary.
pub(super) fn vary_names(resp: &ResponseHead) -> Option<Vec<Box<[u8]>>> {
    let mut names: Vec<Box<[u8]>> = Vec::new();
    for (_, v) in resp.headers().filter(|(n, _)| name_eq(n, b"vary")) {
        for n in policy::split_list(v) {
            let n: Box<[u8]> = n.to_ascii_lowercase().into();
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.sort();
    (!names.is_empty()).then_some(names)
}

/// The key of the variant that `ctx`'s headers select (RFC 9111 4.1: values compared after
/// joining field lines and trimming whitespace).
pub(super) fn variant_key(primary: &[u8], names: &[Box<[u8]>], ctx: &RequestCtx) -> Vec<u8> {
    let mut k = Vec::with_capacity(primary.len() + 32);
    k.extend_from_slice(primary);
    k.extend_from_slice(b"v\0");
    for n in names {
        k.extend_from_slice(n);
        k.push(b'=');
        header_values(ctx, n, &mut k);
        k.push(0);
    }
    k
}

/// All values of header `name`, joined with ", ".
fn header_values(ctx: &RequestCtx, name: &[u8], out: &mut Vec<u8>) {
    let mut first = true;
    for (_, v) in ctx.head.headers().filter(|(n, _)| name_eq(n, name)) {
        if !first {
            out.extend_from_slice(b", ");
        }
        first = false;
        out.extend_from_slice(v.trim_ascii());
    }
}

/// The cache key: "GET\0" (HEAD shares GET's entries) + the request path + "\0" + (with
/// `whole_query`, http mode) "?query\0" as sent + each configured parameter as
/// "q:NAME=<count><len>v1<len>v2\0", "h:NAME=v\0" or "p:NAME=<len>seg<len>seg\0" (lengths and
/// counts 4 bytes, little-endian). Query values are percent-decoded and sorted, so parameter
/// order and encoding do not split entries; what was decoded is length-prefixed, so no
/// value can pass for two. Header values (as sent, never NUL) are joined with ", ".
pub fn cache_key(ctx: &RequestCtx, parts: &[KeyPart], whole_query: bool) -> Vec<u8> {
    // `mode = "http"` keys on the whole target URI, query included (RFC 9111 2); gateway mode
    // keys on the listed parameters only, as Amazon API Gateway does.
    let mut k = uri_key(
        ctx.head.path_bytes(),
        ctx.head.query_bytes().filter(|_| whole_query),
    );
    origin_part(ctx, &mut k);
    for part in parts {
        match part {
            KeyPart::Query(name) => {
                k.extend_from_slice(b"q:");
                k.extend_from_slice(name.as_bytes());
                k.push(b'=');
                query_values(ctx.head.query_bytes().unwrap_or_default(), name, &mut k);
            }
            KeyPart::Header(name) => {
                k.extend_from_slice(b"h:");
                k.extend_from_slice(name.as_bytes());
                k.push(b'=');
                header_values(ctx, name.as_bytes(), &mut k);
            }
            KeyPart::Path(i, name) => {
                k.extend_from_slice(b"p:");
                k.extend_from_slice(name.as_bytes());
                k.push(b'=');
                // Decoded segments may hold '/', '&' or NUL: each is length-prefixed, so
                // `a%2Fb` and `a/b` are two keys (their upstream URIs differ too).
                ctx.path_var(*i, |s, _| put_value(&mut k, s.as_bytes()));
            }
        }
        k.push(0);
    }
    k
}

/// The scheme and the `Host` as the upstream hears them (`X-Forwarded-Proto`,
/// `X-Forwarded-Host`, the port included), lower-cased: "o:https://a.example:8443\0". They
/// are the target URI's (RFC 9111 2) and an origin may build links or redirects from them:
/// without them in the key, a client sending `Host: a.example:1337` stored what every other
/// client of the host then got.
pub(super) fn origin_part(ctx: &RequestCtx, k: &mut Vec<u8>) {
    k.extend_from_slice(if ctx.https {
        b"o:https://"
    } else {
        b"o:http://"
    });
    if let Some(h) = ctx.head.host_bytes() {
        k.extend(h.iter().map(u8::to_ascii_lowercase));
    }
    k.push(0);
}

/// The key of a URI's entry when the route lists no key parts (http mode: the query as sent).
pub(super) fn uri_key(path: &[u8], query: Option<&[u8]>) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(b"GET\0");
    // As sent: the upstream may hear it so (`$context.path`), so `/p//1` is not `/p/1`'s
    // entry (a purge of `/p/1` takes both, see `StageCache::purge`).
    k.extend_from_slice(if path.is_empty() { b"/" } else { path });
    k.push(0);
    if let Some(q) = query {
        k.push(b'?');
        k.extend_from_slice(q);
        k.push(0);
    }
    k
}

/// Appends the values of query parameter `name`, percent-decoded; several values are sorted
/// and joined with '&'. The common case (one value) allocates nothing.
fn query_values(query: &[u8], name: &str, k: &mut Vec<u8>) {
    let mut found: smallvec::SmallVec<[&[u8]; 2]> = smallvec::SmallVec::new();
    for pair in query.split(|&b| b == b'&') {
        let (n, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if decoded_eq(n, name.as_bytes()) {
            found.push(v);
        }
    }
    // How many values, then each length-prefixed: decoded values may hold '&' or NUL, and
    // `?id=1&id=2` must not share an entry with `?id=1%262` (nor `?id=` with no `id`).
    k.extend_from_slice(&(found.len() as u32).to_le_bytes());
    if found.len() > 1 {
        let mut vals: Vec<Vec<u8>> = found
            .iter()
            .map(|v| {
                let mut d = Vec::new();
                crate::syntax::path::form_decode_into(v, &mut d);
                d
            })
            .collect();
        vals.sort();
        for v in &vals {
            put_value(k, v);
        }
    } else if let Some(v) = found.first() {
        let at = k.len();
        k.extend_from_slice(&[0; 4]);
        crate::syntax::path::form_decode_into(v, k);
        let len = (k.len() - at - 4) as u32;
        k[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// `v` with its length before it (4 bytes, little-endian): a decoded value may hold any
/// byte, so no separator can end it.
fn put_value(k: &mut Vec<u8>, v: &[u8]) {
    k.extend_from_slice(&(v.len() as u32).to_le_bytes());
    k.extend_from_slice(v);
}

/// Is `raw`, decoded, equal to `want`? Without decoding when there is nothing to decode.
fn decoded_eq(raw: &[u8], want: &[u8]) -> bool {
    if !raw.iter().any(|&b| b == b'%' || b == b'+') {
        return raw == want;
    }
    let mut d = Vec::with_capacity(raw.len());
    crate::syntax::path::form_decode_into(raw, &mut d);
    d == want
}

/// Whether the upstream request's header `name` (lower-case) is the gateway's rather than the
/// client's: its own (`Host`, `X-Forwarded-*`, `X-Request-Id`, trace context), the
/// integration's, a client certificate's field, or one the route's mapping or template sets.
pub(super) fn gateway_writes(
    ctx: &RequestCtx,
    integ: &crate::snapshot::HttpIntegration,
    name: &[u8],
) -> bool {
    const OWN: [&[u8]; 8] = [
        b"host",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        b"traceparent",
        b"tracestate",
        b"x-amzn-trace-id",
    ];
    OWN.contains(&name)
        || integ
            .headers
            .iter()
            .any(|(n, _)| name_eq(n.as_bytes(), name))
        || ctx
            .client_cert
            .as_ref()
            .is_some_and(|c| c.names.iter().any(|n| name_eq(n.as_bytes(), name)))
        || ctx.edits.as_ref().is_some_and(|e| e.drops(name))
}
