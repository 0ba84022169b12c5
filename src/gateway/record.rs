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
            observe(
                self.shard,
                &self.ss,
                &Record {
                    ctx: Some(&self.ctx),
                    status: CLIENT_CLOSED,
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
            request_id = line.request_id,
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
    let latency_us = ctx.map(|c| micros(c.timings.received, now));
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let stage = ctx.and_then(|c| c.stage);
    let api = stage.and_then(|st| ss.snap.apis.get(st.api));
    let head = ctx.map(|c| &c.head);
    Line {
        request_id: ctx.map_or(r.request_id, |c| c.request_id.as_str()),
        source_ip: r.from.map(|f| f.peer.ip()),
        user_agent: head.and_then(|h| h.header(b"user-agent")),
        api_key_id: ctx.and_then(|c| c.principal.api_key.as_ref().map(|k| &*k.id)),
        time_ms: wall_ms.saturating_sub(latency_us.unwrap_or(0) / 1000),
        method: head.map(|h| h.method.as_str()),
        route_key: ctx
            .and_then(|c| c.route)
            .and_then(|m| Some(api?.routes.get(m.route)?.key.as_str())),
        path: head.map(|h| h.path_bytes()),
        query: head.and_then(|h| h.query_bytes()),
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
        integration_error: failure
            .filter(|e| e.side == crate::error::Side::Upstream)
            .map(|e| &*e.context),
        authorizer_error: failure.and_then(|e| match &e.kind {
            Kind::Unauthorized(Some(why)) => Some(*why),
            Kind::AuthorizerFailed { .. } => Some(&*e.context),
            _ => None,
        }),
        domain: head.and_then(|h| h.host_bytes()),
        stage: stage.and_then(|st| Some(api?.stages.get(st.stage)?.as_str())),
        api: api.map(|a| a.name.as_str()),
        error_message: failure.map(|e| e.client_message()),
        error_type: failure.map(|e| e.kind.response_type()).or(r.response_type),
        cache: ctx.and_then(|c| c.cache_status),
        upstream: ctx.and_then(|c| c.upstream),
        tls_version: r.from.and_then(|f| f.tls),
        shard: shard.id,
        authorizer: ctx.and_then(|c| {
            c.principal
                .authorizer
                .as_ref()
                .map(|a| a as &dyn crate::syntax::template::AuthorizerVars)
        }),
    }
}

/// What a refusal counts as, beside its status.
fn refusal(k: &Kind) -> Option<Refusal> {
    Some(match k {
        Kind::Throttled(_) => Refusal::Throttled,
        Kind::QuotaExceeded { .. } => Refusal::Quota,
        Kind::Unauthorized(_) => Refusal::Unauthorized,
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
