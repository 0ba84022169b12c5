//! Typed per-request state, built up as the phases run.

use crate::http::h1::{Framing, RequestHead};
pub use crate::http::RequestId;
use crate::route::trie::Captures;
use crate::route::StageRef;
use crate::syntax::path::Segments;

/// How far the request body has been read from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyState {
    /// Nothing has been read yet (or there is no body).
    Unread,
    /// All of it has been read (and forwarded or discarded).
    Done,
    /// Reading stopped part way: the connection cannot be reused.
    Broken,
}

/// Where the request was routed: the API, its stage and the route (indices into the
/// snapshot's tables), set by the routing phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    pub api: usize,
    pub stage: usize,
    pub route: usize,
}

/// Who the caller is, as far as the phases so far established: what the route's authorizer
/// said, then the API key. Only those phases set it; later phases (limits, quotas, the
/// cache's `require_api_key`, templates) read it rather than flags.
#[derive(Debug, Clone, Default)]
pub struct Principal {
    pub(crate) authorizer: Option<Authorized>,
    pub api_key: Option<ApiKeyUse>,
}

/// A valid, enabled API key and the index of the usage plan that covers this stage.
#[derive(Debug, Clone)]
pub struct ApiKeyUse {
    pub id: std::sync::Arc<str>,
    pub plan: usize,
}

/// What an authorizer established.
#[derive(Debug, Clone)]
pub(crate) enum Authorized {
    /// A JWT that passed every check, with its claims.
    Jwt(std::rc::Rc<crate::auth::jwt::Verified>),
    /// An external authorizer's answer that allowed the request.
    External(std::sync::Arc<crate::auth::external::Decision>),
    /// A SigV4-signed caller: its access key id.
    Iam(std::sync::Arc<str>),
}

impl crate::syntax::template::AuthorizerVars for Authorized {
    fn claim(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Authorized::Jwt(v) => v.claim_text(name),
            Authorized::External(_) | Authorized::Iam(_) => None,
        }
    }

    fn value(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        let d = match self {
            Authorized::External(d) => d,
            Authorized::Iam(key) => return (name == "principalId").then(|| Cow::Borrowed(&**key)),
            Authorized::Jwt(_) => return None,
        };
        if name == "principalId" {
            return d.principal_id.as_deref().map(Cow::Borrowed);
        }
        match d.context.get(name)? {
            serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
            other => Some(Cow::Owned(other.to_string())),
        }
    }
}

/// When a request's steps happened, for the access log and latency (marks of arrivals from
/// the turn's clock, [`crate::driver::time::now`]; the others a clock read each).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// The head was parsed and the phases began.
    pub received: std::time::Instant,
    /// The integration began: a target is chosen, then a connection taken or opened.
    pub upstream_start: Option<std::time::Instant>,
    /// An upstream connection was ready (pooled or newly opened), for the last attempt.
    pub upstream_connected: Option<std::time::Instant>,
    /// The upstream answer's head had arrived.
    pub first_byte: Option<std::time::Instant>,
}

/// When an external authorizer was called, and what it answered (0: nothing).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthorizerCall {
    pub start: std::time::Instant,
    pub end: std::time::Instant,
    pub status: u16,
}

/// One request's state.
pub struct RequestCtx {
    pub head: RequestHead,
    pub request_id: RequestId,
    pub segs: Segments,
    pub body: BodyState,
    /// Set by routing: the stage (and the base path's length).
    pub stage: Option<StageRef>,
    /// Set by routing: API, stage and route.
    pub route: Option<RouteMatch>,
    /// Set by authentication.
    pub principal: Principal,
    pub captures: Captures,
    /// Set by the throttle phase on throttled routes: the `RateLimit-*` headers to answer with.
    pub ratelimit: Option<crate::error::RateInfo>,
    /// A request template wrote the body of a request that came without one (a GET): the
    /// cache takes it as the bodiless request it was.
    pub body_rendered: bool,
    /// The status answered (0 until a head is written), for the counters.
    pub status: u16,
    /// `X-Cache` on cached routes: Hit, Miss, Bypass, Refresh, Revalidated or Stale.
    pub cache_status: Option<&'static str>,
    /// Why a client's request for a fresh copy was ignored (answered as a `Warning`).
    pub cache_warning: Option<&'static str>,
    pub timings: Timings,
    /// The status the integration answered with (set when its head arrived).
    pub integration_status: Option<u16>,
    /// The upstream target the answer came from (set by the proxy once a target is chosen).
    pub upstream: Option<std::net::SocketAddr>,
    /// Every healthy target of the upstream was ejected; one was used anyway.
    pub all_ejected: bool,
    /// The API's resource policy allowed the caller outright (an IAM or external
    /// authorizer's implicit deny then admits it: Amazon's Table A).
    pub policy_allowed: bool,
    /// Why the gateway refused or failed the request, for the exit's record.
    pub(crate) failure: Option<crate::error::Error>,
    /// The request came over TLS (X-Forwarded-Proto: https).
    pub https: bool,
    /// The request came as an HTTP/2 stream.
    pub h2: bool,
    /// Sent to its stage's canary.
    pub canary: bool,
    /// The request's trace context (when `[tracing]` is configured).
    pub(crate) trace: Option<crate::observe::trace::TraceCtx>,
    /// An external authorizer's call, when one was made (for its trace span).
    pub(crate) authorizer_call: std::cell::Cell<Option<AuthorizerCall>>,
    /// mTLS headers for the upstream (from the connection).
    pub client_cert: Option<crate::http::conn::ClientCertHeaders>,
    /// The API's CORS headers, added to whatever answers the request (set once the stage is
    /// known, on APIs with `cors`).
    pub(crate) cors: Option<std::sync::Arc<crate::http::cors::CorsRt>>,
    /// What parameter mapping changes in the upstream request.
    pub(crate) edits: Option<Box<super::mapping::RequestEdits>>,
    /// The route's response mapping (with the client's address), for the answer.
    pub(crate) response_map: Option<super::mapping::ResponseMap>,
    /// The stage's compression, and the encoding the client takes best (set on stages with
    /// `compression`).
    /// The route's integration responses, with what their templates read.
    pub(crate) transform: Option<super::transform::Kept>,
    /// The request body as JSON once a validator parsed it (mapping and templates reuse it).
    pub(crate) body_json: Option<Box<serde_json::Value>>,
    /// What the request holds of its shard's `limits.body_memory`.
    pub(crate) held: super::validate::Held,
    /// WebSocket APIs: the connection's id and the event (`CONNECT`, `MESSAGE`, `DISCONNECT`).
    pub(crate) ws: Option<(std::rc::Rc<str>, &'static str)>,
    /// The client a trusted proxy named in `X-Forwarded-For` (`server.trusted_proxies`), when
    /// it is not the connection's peer: `$context.identity.sourceIp` and the access log's.
    pub(crate) forwarded: Option<Box<(std::net::IpAddr, Box<str>)>>,
    pub(crate) compress: Option<(
        std::sync::Arc<crate::config::Compression>,
        Option<super::compress::Encoding>,
    )>,
}

impl RequestCtx {
    /// `$context.protocol`: `HTTP/2.0`, `HTTP/1.1` or `HTTP/1.0`.
    pub(crate) fn protocol(&self) -> &'static str {
        if self.h2 {
            "HTTP/2.0"
        } else if self.head.minor == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }

    /// `$context.domainName`: the request's host, without a port.
    pub(crate) fn domain_name(&self) -> &[u8] {
        crate::route::host_without_port(self.head.host_bytes().unwrap_or_default())
    }

    /// `segs` is the connection's scratch buffer, handed back after the request.
    #[inline(always)]
    pub fn new(head: RequestHead, request_id: RequestId, segs: Segments) -> RequestCtx {
        let body = if head.framing == Framing::None {
            BodyState::Done
        } else {
            BodyState::Unread
        };
        RequestCtx {
            head,
            request_id,
            segs,
            body,
            stage: None,
            route: None,
            principal: Principal::default(),
            captures: Captures::new(),
            ratelimit: None,
            body_rendered: false,
            status: 0,
            cache_status: None,
            cache_warning: None,
            timings: Timings {
                // The turn's clock: read when the head's bytes were reaped, not again.
                received: crate::driver::time::now(),
                upstream_start: None,
                upstream_connected: None,
                first_byte: None,
            },
            integration_status: None,
            upstream: None,
            all_ejected: false,
            policy_allowed: false,
            failure: None,
            https: false,
            h2: false,
            trace: None,
            canary: false,
            authorizer_call: Default::default(),
            client_cert: None,
            cors: None,
            edits: None,
            response_map: None,
            compress: None,
            transform: None,
            body_json: None,
            held: Default::default(),
            ws: None,
            forwarded: None,
        }
    }

    /// The client's address as templates and logs name it: the one a trusted proxy
    /// forwarded, else the connection's peer (`peer_ip`).
    pub(crate) fn source_ip<'a>(&'a self, peer_ip: &'a str) -> &'a str {
        self.forwarded.as_ref().map_or(peer_ip, |f| &f.1)
    }

    /// What templates may name for this request; `source_ip` is the client's address.
    pub fn vars<'a>(
        &'a self,
        source_ip: &'a str,
        escape: crate::syntax::template::Escape,
    ) -> crate::syntax::template::Vars<'a> {
        crate::syntax::template::Vars {
            request_id: self.request_id.as_bytes(),
            source_ip: self.source_ip(source_ip),
            client_cert: self.client_cert.as_ref().and_then(|c| c.fields.as_deref()),
            authorizer: self
                .principal
                .authorizer
                .as_ref()
                .map(|a| a as &dyn crate::syntax::template::AuthorizerVars),
            escape,
        }
    }

    /// The CORS lines for an answer to this request (none on APIs without `cors`).
    pub(crate) fn cors_lines(&self, out: &mut Vec<u8>) {
        if let Some(c) = &self.cors {
            c.actual(out, self.head.header(b"origin"));
        }
    }

    /// Whether path variable `i` took the request path's last segment.
    pub fn capture_reaches_end(&self, i: usize) -> bool {
        match (self.captures.get(i), self.stage) {
            (Some(c), Some(st)) => st.base_len + c.end as usize == self.segs.len(),
            _ => false,
        }
    }

    /// The decoded value of path variable `i`, segments joined with '/'.
    pub fn path_var(&self, i: usize, mut each: impl FnMut(&str, bool)) {
        let (Some(c), Some(st)) = (self.captures.get(i), self.stage) else {
            return;
        };
        for k in c.start..c.end {
            each(self.segs.get(st.base_len + k as usize), k + 1 < c.end);
        }
    }
}
