//! What every request leaves behind: one [`Record`], handed to [`observe`] by the one exit
//! ([`super::finish`]), by the answers to heads that never became requests, and by the
//! [`Exit`] guard of a request whose client went away mid-way. `observe` counts the status
//! and writes the request's access-log line (the stage's log, or the gateway's for requests
//! that reach no stage) into the shard's buffer.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use super::ctx::RequestCtx;
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::metrics::Counter;
use crate::observe::access::Line;
use crate::observe::stats::{Refusal, Sample};
use crate::shard::{Shard, ShardSnap};

/// The status counted for a request whose client went away before it was answered (nginx's
/// 499 "client closed request").
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// Holds a request's state while its phases run, and records it if the pipeline is dropped
/// before [`super::finish::finish`] (the client reset the stream or went away) as
/// [`CLIENT_CLOSED`].
pub(crate) struct Exit<'a> {
    shard: &'a Shard,
    pub ss: Rc<ShardSnap>,
    pub ctx: RequestCtx,
    pub(super) done: bool,
    /// The connection's counters and buffered bytes when the request's head was taken.
    in_at_start: u64,
    buffered_at_start: usize,
    pub(super) out_at_start: u64,
    head_len: usize,
    pub(super) from: From,
}

/// What the access log says about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct From {
    pub peer: SocketAddr,
    pub tls: Option<&'static str>,
    pub h2: bool,
}

impl From {
    pub(crate) fn of(conn: &Conn) -> From {
        From {
            peer: conn.peer,
            tls: conn.tls_version,
            h2: matches!(conn.stream, crate::http::conn::Stream::H2(_)),
        }
    }
}

impl<'a> Exit<'a> {
    /// Armed when a request's head has been parsed (`head_len` bytes, already split off
    /// `conn.buf`).
    #[inline(always)]
    pub(crate) fn new(
        shard: &'a Shard,
        ss: Rc<ShardSnap>,
        conn: &Conn,
        head_len: usize,
        ctx: RequestCtx,
    ) -> Exit<'a> {
        Exit {
            shard,
            ss,
            ctx,
            done: false,
            in_at_start: conn.bytes_in,
            buffered_at_start: conn.buf.len(),
            out_at_start: conn.bytes_out,
            head_len,
            from: From::of(conn),
        }
    }

    /// The request's bytes: its head, and what of the bytes buffered or read since was
    /// consumed (nginx's `$request_length`).
    pub(super) fn bytes_in(&self, conn: &Conn) -> u64 {
        let read = conn.bytes_in - self.in_at_start;
        let consumed = (self.buffered_at_start as u64 + read).saturating_sub(conn.buf.len() as u64);
        self.head_len as u64 + consumed
    }
}

impl Drop for Exit<'_> {
    fn drop(&mut self) {
        if !self.done {
            // An answer whose head went out (an HTTP/2 stream reset part way through its
            // body) keeps that status, as a cut HTTP/1.1 answer does; nothing sent is 499.
            let status = if self.ctx.status != 0 {
                self.ctx.status
            } else {
                CLIENT_CLOSED
            };
            observe(
                self.shard,
                &self.ss,
                &Record {
                    ctx: Some(&self.ctx),
                    status,
                    response_type: Some(Kind::ClientGone.response_type()),
                    bytes_in: self.head_len as u64,
                    from: Some(self.from),
                    ..Record::default()
                },
            );
        }
    }
}

/// One request as it left: what the access log, metrics and traces are fed from.
#[derive(Default)]
pub(crate) struct Record<'a> {
    /// The request's state (absent for a head that could not be parsed, or an HTTP/2
    /// stream refused before it had one).
    pub ctx: Option<&'a RequestCtx>,
    /// The request id, where there is no `ctx`.
    pub request_id: &'a str,
    /// The status answered (0: nothing was).
    pub status: u16,
    /// Request bytes taken from the client (head and body), and bytes written back.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The gateway response type of a refusal or failure, where `ctx` has no failure.
    pub response_type: Option<&'static str>,
    /// The error that stopped a request that has no `ctx`.
    pub failure: Option<&'a Error>,
    pub from: Option<From>,
    /// Where there is no `ctx`: how long before now the request began (a head that timed out
    /// began `header_timeout` before), for `requestTime` and `responseLatency`.
    pub waited: Option<std::time::Duration>,
}

/// Where every request's [`Record`] goes.
pub(crate) fn observe(shard: &Shard, ss: &ShardSnap, r: &Record<'_>) {
    if r.status != 0 {
        shard.metrics.add(Counter::for_status(r.status));
    }
    let ctx = r.ctx;
    if ctx.is_some_and(|c| c.all_ejected) {
        let upstream = ctx.and_then(|c| c.upstream);
        shard.metrics.add(Counter::AllTargetsEjected);
        if shard.log_first("every target of an upstream is ejected", upstream, 0) {
            tracing::warn!(
                target_addr = upstream.map(tracing::field::display),
                "every healthy target of the upstream is ejected (max_fails): balancing over them anyway"
            );
        }
    }
    let now = Instant::now();
    if let (Some(c), Some(m)) = (ctx, ctx.and_then(|c| c.route)) {
        if let Some(api) = ss.snap.apis.get(m.api) {
            let t = c.timings;
            let sample = Sample {
                status: r.status,
                latency_us: micros(t.received, now),
                integration_us: t
                    .upstream_connected
                    .zip(t.first_byte)
                    .map(|(a, b)| micros(a, b)),
                cache: c.cache_status,
                refusal: c.failure.as_ref().and_then(|e| refusal(&e.kind)),
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
            };
            shard.with_route(ss, api.series(m.stage, m.route), |cells| {
                cells.record(&sample)
            });
        }
    }
    if let Some((c, t)) = ctx.and_then(|c| Some((c, c.trace.as_ref()?))) {
        // Not decided yet (no route matched: a 404, a 405, a preflight): the stage's ratio
        // where the request reached one, else `[tracing]`'s.
        let ratio = c
            .stage
            .and_then(|st| {
                ss.snap
                    .apis
                    .get(st.api)?
                    .trace_sample
                    .get(st.stage)
                    .copied()
            })
            .unwrap_or_else(|| ss.snap.config.tracing.as_ref().map_or(0.0, |t| t.sample));
        // Errors are always traced.
        let sampled = t.sampled_at(ratio);
        if sampled || r.status >= 500 {
            spans(shard, ss, c, t, r, now, sampled);
        }
    }
    let log = match ctx.and_then(|c| c.stage) {
        Some(st) => ss
            .snap
            .apis
            .get(st.api)
            .and_then(|a| a.access_logs.get(st.stage))
            .and_then(Option::as_ref),
        None => ss.snap.access_log.as_ref(),
    };
    let debug = tracing::enabled!(target: "tollgate::request", tracing::Level::DEBUG);
    if log.is_none() && !debug {
        return;
    }
    let line = line(shard, ss, r, now);
    if let Some(log) = log {
        if let Some(sink) = ss.snap.log_sinks.get(log.sink) {
            shard
                .logs
                .borrow_mut()
                .write(sink, log.sink, &shard.shared.access_log, |out| {
                    log.format.render(&line, out)
                });
        }
    }
    if debug {
        let t = ctx.map(|c| c.timings);
        let since = |at: Option<Instant>| Some(micros(t?.received, at?));
        tracing::debug!(
            target: "tollgate::request",
            request_id = std::str::from_utf8(line.request_id).unwrap_or_default(),
            method = line.method,
            route = line
                .route_key
                .map(|k| format!("{}/{}/{k}", line.api.unwrap_or("-"), line.stage.unwrap_or("-"))),
            status = r.status,
            bytes_in = line.bytes_in,
            bytes_out = line.bytes_out,
            upstream = line.upstream.map(tracing::field::display),
            cache = line.cache,
            error = line.error_type,
            upstream_connect_us = since(t.and_then(|t| t.upstream_connected)),
            first_byte_us = since(t.and_then(|t| t.first_byte)),
            total_us = line.latency_us,
            "request"
        );
    }
}

/// The access log's view of a record.
fn line<'a>(shard: &Shard, ss: &'a ShardSnap, r: &'a Record<'a>, now: Instant) -> Line<'a> {
    let ctx = r.ctx;
    let failure = ctx.and_then(|c| c.failure.as_ref()).or(r.failure);
    let latency_us = ctx
        .map(|c| micros(c.timings.received, now))
        .or(r.waited.map(|w| w.as_micros() as u64));
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let stage = ctx.and_then(|c| c.stage);
    let api = stage.and_then(|st| ss.snap.apis.get(st.api));
    let head = ctx.map(|c| &c.head);
    Line {
        request_id: ctx.map_or(r.request_id.as_bytes(), |c| c.request_id.as_bytes()),
        source_ip: ctx
            .and_then(|c| c.forwarded.as_ref().map(|f| f.0))
            .or(r.from.map(|f| f.peer.ip())),
        user_agent: head.and_then(|h| h.header(b"user-agent")),
        api_key_id: ctx.and_then(|c| c.principal.api_key.as_ref().map(|k| &*k.id)),
        time_ms: wall_ms.saturating_sub(latency_us.unwrap_or(0) / 1000),
        method: head.map(|h| h.method_text()),
        route_key: ctx
            .and_then(|c| c.route)
            .and_then(|m| Some(api?.routes.get(m.route)?.key.as_str())),
        path: head.map(|h| h.path_bytes()),
        query: head.and_then(|h| h.query_bytes()),
        secret_query: api.map_or(&[][..], |a| &a.secret_query[..]),
        protocol: match (r.from, head) {
            (Some(f), _) if f.h2 => Some("HTTP/2.0"),
            (_, Some(h)) if h.minor == 0 => Some("HTTP/1.0"),
            _ => Some("HTTP/1.1"),
        },
        status: r.status,
        bytes_out: r.bytes_out,
        bytes_in: r.bytes_in,
        latency_us,
        integration_latency_us: ctx
            .and_then(|c| Some(micros(c.timings.upstream_connected?, c.timings.first_byte?))),
        integration_status: ctx.and_then(|c| c.integration_status),
        // The integration's own failures (an authorizer's are `authorizer_error`'s).
        integration_error: failure
            .filter(|e| {
                e.side == crate::error::Side::Upstream
                    && !matches!(e.kind, Kind::AuthorizerFailed { .. })
            })
            .map(|e| &*e.context),
        authorizer_error: failure.and_then(|e| match &e.kind {
            Kind::Unauthorized(Some(why)) => Some(*why),
            Kind::AuthorizerFailed { .. } => Some(&*e.context),
            _ => None,
        }),
        domain: head.and_then(|h| h.host_bytes()).map(host_name),
        stage: stage.and_then(|st| Some(api?.stages.get(st.stage)?.as_str())),
        api: api.map(|a| a.name.as_str()),
        error_message: failure.map(|e| e.client_message()),
        error_type: failure.map(|e| e.kind.response_type()).or(r.response_type),
        validation_error: failure.and_then(|e| e.validation_error()),
        cache: ctx.and_then(|c| c.cache_status),
        upstream: ctx.and_then(|c| c.upstream),
        tls_version: r.from.and_then(|f| f.tls),
        shard: shard.id,
        canary: ctx.is_some_and(|c| c.canary),
        connection_id: ctx.and_then(|c| c.ws.as_ref()).map(|w| &*w.0),
        event_type: ctx.and_then(|c| c.ws.as_ref()).map(|w| w.1),
        authorizer: ctx.and_then(|c| {
            c.principal
                .authorizer
                .as_ref()
                .map(|a| a as &dyn crate::syntax::template::AuthorizerVars)
        }),
    }
}

/// The request's server span and, when it called an upstream, its client span.
fn spans(
    shard: &Shard,
    ss: &ShardSnap,
    c: &RequestCtx,
    t: &crate::observe::trace::TraceCtx,
    r: &Record<'_>,
    now: Instant,
    sampled: bool,
) {
    use crate::observe::trace::otlp::{i, s, Span, Status};
    // The span context's trace flags: an error exported whatever the decision says so.
    let flags = u32::from(sampled);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let at = |i: Instant| wall.saturating_sub(now.saturating_duration_since(i).as_nanos() as u64);
    // A method the conventions do not know is `_OTHER`, its span `HTTP` (OpenTelemetry's
    // HTTP conventions): a client's made-up tokens make neither span names nor attribute
    // values (the original goes, cut, in `http.request.method_original`).
    let raw_method = c.head.method_text();
    let known = matches!(
        raw_method,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
    );
    let (method, span_method) = if known {
        (raw_method, raw_method)
    } else {
        ("_OTHER", "HTTP")
    };
    let route = c
        .route
        .and_then(|m| Some(ss.snap.apis.get(m.api)?.routes.get(m.route)?.key.as_str()));
    // http.route is the route's template without its method ("/pets/{petId}", "$default").
    let template = route.map(|k| k.split_once(' ').map_or(k, |(_, p)| p));
    let failure = c.failure.as_ref();
    let error_type = failure
        .map(|e| e.kind.response_type())
        .or((r.status >= 500).then_some("DEFAULT_5XX"));
    let status = |error: bool| {
        Some(Status {
            message: if error {
                error_type.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            code: if error { 2 } else { 0 },
        })
    };
    let mut attrs = vec![
        s("http.request.method", method),
        s("url.path", String::from_utf8_lossy(c.head.path_bytes())),
        s("url.scheme", if c.https { "https" } else { "http" }),
        i("http.response.status_code", i64::from(r.status)),
        s("tollgate.request_id", c.request_id.as_str()),
        s(
            "network.protocol.version",
            match (r.from.is_some_and(|f| f.h2), c.head.minor) {
                (true, _) => "2",
                (false, 0) => "1.0",
                _ => "1.1",
            },
        ),
    ];
    if let Some(q) = c.head.query_bytes() {
        let secret = c
            .stage
            .and_then(|st| ss.snap.apis.get(st.api))
            .map_or(&[][..], |a| &a.secret_query[..]);
        let q = crate::auth::sigv4::redact_query(q, secret);
        attrs.push(s("url.query", String::from_utf8_lossy(&q).into_owned()));
    }
    if let Some(tpl) = template {
        attrs.push(s("http.route", tpl));
    }
    if !known {
        let cut = raw_method
            .char_indices()
            .nth(64)
            .map_or(raw_method.len(), |(at, _)| at);
        attrs.push(s("http.request.method_original", &raw_method[..cut]));
    }
    if let Some(h) = c.head.host_bytes() {
        attrs.push(s("server.address", String::from_utf8_lossy(host_name(h))));
    }
    // The client behind any trusted proxy (OpenTelemetry's client.address).
    if let Some(ip) = c
        .forwarded
        .as_ref()
        .map(|f| f.0)
        .or(r.from.map(|f| f.peer.ip()))
    {
        attrs.push(s("client.address", ip.to_string()));
    }
    if let Some(ua) = c.head.header(b"user-agent") {
        attrs.push(s("user_agent.original", String::from_utf8_lossy(ua)));
    }
    if let Some(st) = c.stage {
        if let Some(api) = ss.snap.apis.get(st.api) {
            attrs.push(s("tollgate.api", api.name.as_str()));
            if let Some(stage) = api.stages.get(st.stage) {
                attrs.push(s("tollgate.stage", stage.as_str()));
            }
        }
    }
    if let Some(cs) = c.cache_status {
        attrs.push(s("tollgate.cache.status", cs));
    }
    if let Some(e) = error_type {
        attrs.push(s("error.type", e));
    }
    let exporter = &shard.shared.traces;
    let state = t.tracestate.clone().unwrap_or_default();
    exporter.send(Span {
        trace_id: t.trace_id.to_vec(),
        span_id: t.span_id.to_vec(),
        trace_state: state.clone(),
        parent_span_id: t.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: match template {
            Some(tpl) => format!("{span_method} {tpl}"),
            None => span_method.to_string(),
        },
        kind: 2,
        start_time_unix_nano: at(c.timings.received),
        end_time_unix_nano: at(now),
        attributes: attrs,
        status: status(r.status >= 500),
        flags,
    });
    if let (Some(a), Some(span)) = (c.authorizer_call.get(), t.auth_span) {
        let name = c.route.and_then(|m| {
            let api = ss.snap.apis.get(m.api)?;
            let auth = api.routes.get(m.route)?.auth.as_ref()?;
            Some(match api.authorizers.get(auth.authorizer)? {
                crate::snapshot::AuthorizerRt::External(x) => x.name.clone(),
                crate::snapshot::AuthorizerRt::Jwt(j) => j.name.clone(),
            })
        });
        let mut attrs = vec![s("http.request.method", "POST")];
        if a.status != 0 {
            attrs.push(i("http.response.status_code", i64::from(a.status)));
        }
        if let Some(n) = &name {
            attrs.push(s("tollgate.authorizer", n.as_str()));
        }
        let failed = a.status == 0 || a.status >= 500;
        exporter.send(Span {
            trace_id: t.trace_id.to_vec(),
            span_id: span.to_vec(),
            trace_state: state.clone(),
            parent_span_id: t.span_id.to_vec(),
            name: format!("authorizer {}", name.as_deref().unwrap_or("-")),
            kind: 3,
            start_time_unix_nano: at(a.start),
            end_time_unix_nano: at(a.end),
            attributes: attrs,
            status: status(failed),
            flags,
        });
    }
    let (Some(start), Some(span), Some(up)) = (c.timings.upstream_start, t.client_span, c.upstream)
    else {
        return;
    };
    let upstream_failed = failure.is_some_and(|e| e.side == crate::error::Side::Upstream);
    // A WebSocket API's integration is called with POST, whatever the upgrade's method.
    let up_method = if c.ws.is_some() { "POST" } else { method };
    let mut attrs = vec![
        s("http.request.method", up_method),
        s("server.address", up.ip().to_string()),
        i("server.port", i64::from(up.port())),
        s("network.peer.address", up.ip().to_string()),
    ];
    if let Some(st) = c.integration_status {
        attrs.push(i("http.response.status_code", i64::from(st)));
    }
    if upstream_failed {
        attrs.push(s("error.type", error_type.unwrap_or("INTEGRATION_FAILURE")));
    }
    exporter.send(Span {
        trace_id: t.trace_id.to_vec(),
        span_id: span.to_vec(),
        trace_state: state,
        parent_span_id: t.span_id.to_vec(),
        name: if c.ws.is_some() { "POST" } else { span_method }.to_string(),
        kind: 3,
        start_time_unix_nano: at(start),
        end_time_unix_nano: at(c.timings.first_byte.unwrap_or(now)),
        attributes: attrs,
        status: status(upstream_failed || c.integration_status.is_some_and(|s| s >= 500)),
        flags,
    });
}

/// The host of a `Host` value, without its port (`[::1]:8080` -> `[::1]`).
fn host_name(h: &[u8]) -> &[u8] {
    match h.iter().rposition(|&b| b == b':') {
        Some(i)
            if h[i + 1..].iter().all(u8::is_ascii_digit) && (h[0] != b'[' || h[i - 1] == b']') =>
        {
            &h[..i]
        }
        _ => h,
    }
}

/// What a refusal counts as, beside its status.
fn refusal(k: &Kind) -> Option<Refusal> {
    Some(match k {
        Kind::Throttled(_) => Refusal::Throttled,
        Kind::QuotaExceeded { .. } => Refusal::Quota,
        Kind::Unauthorized(_) | Kind::Unidentified => Refusal::Unauthorized,
        Kind::Forbidden
        | Kind::InsufficientScope(_)
        | Kind::AccessDenied(_)
        | Kind::Iam { .. }
        | Kind::PolicyDenied { .. } => Refusal::Forbidden,
        Kind::AuthorizerFailed { .. } => Refusal::AuthorizerError,
        _ => return None,
    })
}

fn micros(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}
