//! Calling a WebSocket route's integration for an event (`CONNECT`, `MESSAGE`,
//! `DISCONNECT`): a mock answers its body; an http integration gets a `POST` of the message
//! with the connection's context as headers (and, for `$connect`, the client's query and
//! headers), within the route's timeout (a 504 error past it, 502 when the call fails).

use super::{now_ms, Session};
use crate::error::{Error, Kind};
use crate::gateway::ctx::{RequestCtx, RouteMatch};
use crate::shard::ShardSnap;
use crate::snapshot::IntegrationRt;
use crate::upstream::fetch::Fetched;

/// Calls route `m`'s integration for an event: `Ok(None)` when the route has none to call,
/// else the integration's status and body; an error of kind `GatewayTimeout` when the route's
/// `timeout` passed first or the connect timed out, `BadGateway` when the call failed.
pub(super) async fn integrate(
    ss: &ShardSnap,
    s: &Session,
    m: RouteMatch,
    event: &str,
    body: &[u8],
    request_id: Option<&str>,
) -> Result<Option<Fetched>, Error> {
    integrate_with(ss, s, m, event, body, request_id, "").await
}

pub(super) async fn integrate_with(
    ss: &ShardSnap,
    s: &Session,
    m: RouteMatch,
    event: &str,
    body: &[u8],
    request_id: Option<&str>,
    extra: &str,
) -> Result<Option<Fetched>, Error> {
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
    ctx.client_cert = s.client_cert.clone();
    ctx.https = s.https;
    match &route.per_stage[m.stage] {
        IntegrationRt::Mock(mock) => {
            let a = crate::gateway::answers::mock(&ctx, &s.peer_ip, mock);
            // Its headers as an answer's head, for a `$connect` refusal to relay
            // (`WWW-Authenticate`, `Retry-After`...).
            let mut head = format!("HTTP/1.1 {}\r\n", a.status).into_bytes();
            head.extend_from_slice(&a.headers);
            if let Some(ct) = a.content_type {
                head.extend_from_slice(b"content-type: ");
                head.extend_from_slice(ct.as_bytes());
                head.extend_from_slice(b"\r\n");
            }
            Ok(Some(Fetched {
                status: a.status,
                head: bytes::BytesMut::from(&head[..]),
                body: a.body,
                reusable: false,
                from: None,
            }))
        }
        IntegrationRt::Http(h) => {
            let mut path = Vec::new();
            h.path.render(
                &mut path,
                &ctx.vars(&s.peer_ip, crate::syntax::template::Escape::Uri),
                |_, _| {},
            );
            if h.path_identity {
                crate::gateway::mapping::identity_path_ok(&path)?;
            }
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
                let mut xff: Vec<&[u8]> = Vec::new();
                // With `[tracing]` the gateway owns trace context: a client's own (perhaps
                // invalid: W3C's rules restart it) is not handed on.
                let traced = ss.snap.config.tracing.is_some();
                // The client's headers, as the upgrade request carried them (its
                // `Sec-WebSocket-*` ones too, as Amazon's: the integration may choose among
                // the subprotocols offered).
                for (n, v) in s.head.headers() {
                    if h.drop_underscores && n.contains(&b'_') {
                        // `limits.underscores_in_headers = "drop"`, as on http routes: an
                        // origin that folds `_` into `-` would read `X_Source_Ip` as ours.
                        continue;
                    }
                    // Compared as such an origin reads them (`"allow"` forwards `_` names,
                    // but not ones that spell the gateway's own).
                    let lower: Vec<u8> = n
                        .iter()
                        .map(|&b| {
                            if b == b'_' {
                                b'-'
                            } else {
                                b.to_ascii_lowercase()
                            }
                        })
                        .collect();
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
                        || is_forwarding_header(&lower)
                        || traced
                            && matches!(
                                lower.as_slice(),
                                b"traceparent" | b"tracestate" | b"x-amzn-trace-id"
                            )
                        || h.headers
                            .iter()
                            .any(|(x, _)| x.as_bytes().eq_ignore_ascii_case(&lower))
                        || s.client_cert.as_ref().is_some_and(|c| {
                            c.names
                                .iter()
                                .any(|x| x.as_bytes().eq_ignore_ascii_case(&lower))
                        })
                    {
                        if lower == b"x-forwarded-for" {
                            xff.push(v);
                        }
                        continue;
                    }
                    req.extend_from_slice(n);
                    req.extend_from_slice(b": ");
                    req.extend_from_slice(v);
                    req.extend_from_slice(b"\r\n");
                }
                // As an http route's: the client's X-Forwarded-For with the peer appended,
                // the gateway's own X-Forwarded-Proto (a client's -Proto, -Host, -Port and
                // -Prefix are dropped above).
                req.extend_from_slice(b"x-forwarded-for: ");
                for v in xff {
                    req.extend_from_slice(v);
                    req.extend_from_slice(b", ");
                }
                req.extend_from_slice(s.tcp_peer.as_bytes());
                req.extend_from_slice(if s.https {
                    b"\r\nx-forwarded-proto: https\r\n"
                } else {
                    b"\r\nx-forwarded-proto: http\r\n"
                });
            }
            // The verified client certificate's fields (`mtls.headers`), on every call.
            if let Some(c) = &s.client_cert {
                req.extend_from_slice(&c.lines);
            }
            // The integration's own headers (`headers = { ... }`), rendered as an http
            // route's are; a client's of those names were left out above.
            for (name, t) in &h.headers {
                req.extend_from_slice(name.as_bytes());
                req.extend_from_slice(b": ");
                t.render(
                    &mut req,
                    &ctx.vars(&s.peer_ip, crate::syntax::template::Escape::Header),
                    |_, _| {},
                );
                req.extend_from_slice(b"\r\n");
            }
            let ss_stage =
                crate::config::stage_of(&ss.snap.config.apis[m.api].stages[m.stage].name);
            // `$context.domainName`: the Host without its port.
            let domain = String::from_utf8_lossy(crate::route::host_without_port(
                s.head.host_bytes().unwrap_or_default(),
            ));
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
            .map_err(|_| Error::upstream(Kind::GatewayTimeout, "integration timed out"))??;
            Ok(Some(answer))
        }
    }
}

/// Forwarding headers the gateway writes (or drops) itself, as on http routes.
fn is_forwarding_header(lower: &[u8]) -> bool {
    matches!(
        lower,
        b"x-forwarded-for"
            | b"x-forwarded-proto"
            | b"x-forwarded-host"
            | b"x-forwarded-port"
            | b"x-forwarded-prefix"
    )
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

/// The end-to-end header lines of an integration's answer, as the client gets them with a
/// `$connect` refusal (`Location`, `WWW-Authenticate`, `Retry-After`, `Set-Cookie`, its
/// `Content-Type`...): not hop-by-hop ones (nor those its `Connection` names), nor its
/// framing, nor the lines the gateway writes itself (`x-request-id`, `RateLimit-*`).
pub(super) fn relayed_headers(f: &Fetched) -> Vec<u8> {
    use crate::http::h1::{header_lines, hop_by_hop};
    let lines = f.head.splitn(2, |&b| b == b'\n').nth(1).unwrap_or_default();
    let listed: Vec<&[u8]> = header_lines(lines)
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(|t| t.trim_ascii())
        .collect();
    let mut out = Vec::new();
    for (n, v) in header_lines(lines) {
        let lower = n.to_ascii_lowercase();
        if n.is_empty()
            || hop_by_hop(n)
            || matches!(lower.as_slice(), b"content-length" | b"x-request-id")
            || lower.starts_with(b"ratelimit")
            || listed.iter().any(|t| t.eq_ignore_ascii_case(n))
        {
            continue;
        }
        out.extend_from_slice(n);
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub(super) fn peer(s: &Session) -> std::net::SocketAddr {
    std::net::SocketAddr::new(
        s.peer_ip
            .parse()
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        0,
    )
}
