//! The crate's one error type for request handling: what went wrong ([`Kind`]), on which
//! side ([`Side`]), and what was being done (`context`, for logs only).
//!
//! [`Error::status`] and [`Error::client_message`] are the single mapping from errors to the
//! HTTP answers the gateway writes itself (DESIGN.md, "Errors the gateway itself returns"), and
//! [`Error::closes_connection`] decides whether the client connection survives the error.

use std::borrow::Cow;
use std::fmt;

use crate::syntax::Method;

/// Which side of the proxy caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Downstream,
    Upstream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Malformed request; the message says what (400).
    BadRequest(&'static str),
    /// Request head over `limits.max_header_bytes` (431).
    HeadTooLarge,
    /// The request line alone over `limits.max_header_bytes` (414).
    UriTooLong,
    /// An HTTP/1 request line with a version above 1.x (505).
    VersionNotSupported,
    /// Body over `limits.max_body` (413).
    BodyTooLarge,
    /// Head did not arrive within `limits.header_timeout` (408).
    HeadTimeout,
    /// An `Expect` other than `100-continue` (417).
    ExpectationFailed,
    /// A request body in a transfer coding other than `chunked` (501, RFC 9112 6.1).
    CodingNotImplemented,
    /// The request body stalled past `limits.body_timeout`, or arrived slower than
    /// `limits.body_min_rate` (408).
    BodyTimeout,
    /// No API, stage or route (404).
    NotFound,
    /// The path exists for other methods (405, with `Allow`).
    MethodNotAllowed(Vec<Method>),
    /// Upstream refused, reset, closed early or answered garbage (502).
    BadGateway,
    /// No healthy target (503).
    NoHealthyUpstream,
    /// Upstream did not answer within the integration timeout (504).
    GatewayTimeout,
    /// Missing, unknown or disabled API key, or a key whose plan does not cover the stage (403).
    Forbidden,
    /// A route's authorizer found no token (`None`) or refused it (the `error_description`
    /// of `WWW-Authenticate`) (401).
    Unauthorized(Option<&'static str>),
    /// An external authorizer's identity sources are missing or fail its validation, or it
    /// answered 401 (401, with no `WWW-Authenticate`: its identity need not be a bearer token).
    Unidentified,
    /// The token carries none of the route's `authorization_scopes` (space-separated) (403).
    InsufficientScope(Box<str>),
    /// An external authorizer said no (403, with Amazon API Gateway's message for the case).
    AccessDenied(&'static str),
    /// A SigV4-signed request refused (403): Amazon's message and gateway response type
    /// (MISSING_AUTHENTICATION_TOKEN, INVALID_SIGNATURE, EXPIRED_TOKEN, ACCESS_DENIED...).
    Iam {
        message: Box<str>,
        response_type: &'static str,
    },
    /// An external authorizer failed: unreachable, timed out, an error status (`config:
    /// false`), or an answer that is not one (`config: true`) (500).
    AuthorizerFailed { config: bool },
    /// The API's resource policy refuses the caller's address (403): `explicit` when a deny
    /// entry names it; `resource` is the ARN-like name of what was called.
    PolicyDenied { explicit: bool, resource: Box<str> },
    /// A throttle refused (429, with Retry-After and RateLimit-* headers).
    Throttled(RateInfo),
    /// The key's usage plan quota is spent for this period (429).
    QuotaExceeded { retry_after_s: u64 },
    /// The request body does not match the route's model (400): why, for the logs and
    /// `$context.error.validationErrorString`.
    InvalidBody(Box<str>),
    /// Parameters the route requires are missing (400): their names, comma-separated.
    MissingParameters(Box<str>),
    /// A mapping template failed (500): why, for the logs.
    TemplateFailed(Box<str>),
    /// A request template reads the body as JSON, and it is not (400, in Amazon API
    /// Gateway's words): the parser's why.
    BodyNotJson(Box<str>),
    /// No request template for the body's content type, and the passthrough behaviour
    /// refuses it (415).
    UnsupportedMediaType,
    /// A request body in a `Content-Encoding` the gateway does not decode, where it must read
    /// the body (415, with `Accept-Encoding` naming the ones it does: RFC 9110 15.5.16).
    UnsupportedEncoding,
    /// A WebSocket API asked for without a WebSocket upgrade (426).
    UpgradeRequired,
    /// The shard holds as many whole request bodies as `limits.body_memory` allows (503).
    BodiesOverBudget,
    /// The client went away; nothing can be written.
    ClientGone,
}

impl Kind {
    /// The gateway response type a client of Amazon API Gateway would see this error as
    /// (`$context.error.responseType`; the names `gateway_responses` keys use).
    pub(crate) fn response_type(&self) -> &'static str {
        match self {
            Kind::BadRequest(_)
            | Kind::HeadTimeout
            | Kind::BodyTimeout
            | Kind::ExpectationFailed
            | Kind::MethodNotAllowed(_) => "DEFAULT_4XX",
            Kind::HeadTooLarge | Kind::UriTooLong | Kind::BodyTooLarge => "REQUEST_TOO_LARGE",
            Kind::VersionNotSupported | Kind::CodingNotImplemented => "DEFAULT_5XX",
            Kind::NotFound => "RESOURCE_NOT_FOUND",
            Kind::BadGateway => "INTEGRATION_FAILURE",
            Kind::GatewayTimeout => "INTEGRATION_TIMEOUT",
            Kind::NoHealthyUpstream | Kind::BodiesOverBudget => "DEFAULT_5XX",
            Kind::UpgradeRequired => "DEFAULT_4XX",
            Kind::Forbidden => "INVALID_API_KEY",
            Kind::Unauthorized(_) | Kind::Unidentified => "UNAUTHORIZED",
            Kind::InsufficientScope(_) | Kind::AccessDenied(_) => "ACCESS_DENIED",
            Kind::Iam { response_type, .. } => response_type,
            Kind::AuthorizerFailed { config: false } => "AUTHORIZER_FAILURE",
            Kind::AuthorizerFailed { config: true } => "AUTHORIZER_CONFIGURATION_ERROR",
            Kind::PolicyDenied { .. } => "ACCESS_DENIED",
            Kind::Throttled(_) => "THROTTLED",
            Kind::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            Kind::InvalidBody(_) | Kind::BodyNotJson(_) => "BAD_REQUEST_BODY",
            Kind::TemplateFailed(_) => "API_CONFIGURATION_ERROR",
            Kind::UnsupportedMediaType | Kind::UnsupportedEncoding => "UNSUPPORTED_MEDIA_TYPE",
            Kind::MissingParameters(_) => "BAD_REQUEST_PARAMETERS",
            Kind::ClientGone => "CLIENT_CLOSED",
        }
    }
}

/// What the `RateLimit-*` headers say about the tightest limit a request passed (or the one
/// that refused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// The limit's burst: what a client may send at once.
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
    /// Seconds until a request would be accepted (refusals only).
    pub retry_after_s: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Error {
    pub kind: Kind,
    pub side: Side,
    pub context: Cow<'static, str>,
}

impl Error {
    pub(crate) fn new(kind: Kind, side: Side, context: impl Into<Cow<'static, str>>) -> Error {
        Error {
            kind,
            side,
            context: context.into(),
        }
    }

    pub(crate) fn downstream(kind: Kind, context: impl Into<Cow<'static, str>>) -> Error {
        Error::new(kind, Side::Downstream, context)
    }

    pub(crate) fn upstream(kind: Kind, context: impl Into<Cow<'static, str>>) -> Error {
        Error::new(kind, Side::Upstream, context)
    }

    pub(crate) fn status(&self) -> u16 {
        match self.kind {
            Kind::BadRequest(_)
            | Kind::InvalidBody(_)
            | Kind::MissingParameters(_)
            | Kind::BodyNotJson(_) => 400,
            Kind::HeadTooLarge => 431,
            Kind::UriTooLong => 414,
            Kind::VersionNotSupported => 505,
            Kind::CodingNotImplemented => 501,
            Kind::BodyTooLarge => 413,
            Kind::HeadTimeout | Kind::BodyTimeout => 408,
            Kind::ExpectationFailed => 417,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed(_) => 405,
            Kind::BadGateway => 502,
            Kind::NoHealthyUpstream | Kind::BodiesOverBudget => 503,
            Kind::UpgradeRequired => 426,
            Kind::GatewayTimeout => 504,
            Kind::Unauthorized(_) | Kind::Unidentified => 401,
            Kind::Forbidden
            | Kind::PolicyDenied { .. }
            | Kind::InsufficientScope(_)
            | Kind::AccessDenied(_)
            | Kind::Iam { .. } => 403,
            Kind::AuthorizerFailed { .. } | Kind::TemplateFailed(_) => 500,
            Kind::UnsupportedMediaType | Kind::UnsupportedEncoding => 415,
            Kind::Throttled(_) | Kind::QuotaExceeded { .. } => 429,
            Kind::ClientGone => 499,
        }
    }

    /// The `message` of the JSON body. Never includes upstream addresses or internals.
    pub(crate) fn client_message(&self) -> Cow<'static, str> {
        if let Kind::PolicyDenied { explicit, resource } = &self.kind {
            // Amazon API Gateway's words for a resource policy's refusal.
            return Cow::Owned(format!(
                "User: anonymous is not authorized to perform: execute-api:Invoke on resource: {resource}{}",
                if *explicit { " with an explicit deny" } else { "" }
            ));
        }
        if let Kind::Iam { message, .. } = &self.kind {
            return Cow::Owned(message.to_string());
        }
        if let Kind::BodyNotJson(why) = &self.kind {
            return Cow::Owned(format!(
                "Could not parse request body into json: Could not parse payload into json: {why}"
            ));
        }
        if let Kind::MissingParameters(names) = &self.kind {
            // Amazon API Gateway's words.
            return Cow::Owned(format!("Missing required request parameters: [{names}]"));
        }
        Cow::Borrowed(match self.kind {
            Kind::BadRequest(m) => m,
            Kind::HeadTooLarge => "Request Header Fields Too Large",
            Kind::UriTooLong => "URI Too Long",
            Kind::VersionNotSupported => "HTTP Version Not Supported",
            Kind::CodingNotImplemented => "Not Implemented",
            Kind::BodyTooLarge => "Request Entity Too Large",
            Kind::HeadTimeout | Kind::BodyTimeout => "Request Timeout",
            Kind::ExpectationFailed => "Expectation Failed",
            Kind::NotFound => "Not Found",
            Kind::MethodNotAllowed(_) => "Method Not Allowed",
            Kind::BadGateway => "Bad Gateway",
            Kind::NoHealthyUpstream | Kind::BodiesOverBudget => "Service Unavailable",
            Kind::UpgradeRequired => "Upgrade Required",
            Kind::GatewayTimeout => "Endpoint request timed out",
            Kind::Forbidden | Kind::InsufficientScope(_) => "Forbidden",
            Kind::Unauthorized(_) | Kind::Unidentified => "Unauthorized",
            Kind::AccessDenied(m) => m,
            Kind::InvalidBody(_) => "Invalid request body",
            Kind::TemplateFailed(_) => "Internal server error",
            Kind::UnsupportedMediaType | Kind::UnsupportedEncoding => "Unsupported Media Type",
            Kind::AuthorizerFailed { .. } => "Internal Server Error",
            Kind::Throttled(_) => "Too Many Requests",
            Kind::QuotaExceeded { .. } => "Limit Exceeded",
            Kind::PolicyDenied { .. }
            | Kind::Iam { .. }
            | Kind::MissingParameters(_)
            | Kind::BodyNotJson(_)
            | Kind::ClientGone => "",
        })
    }

    /// Why request validation refused the request (`$context.error.validationErrorString`).
    pub(crate) fn validation_error(&self) -> Option<Cow<'_, str>> {
        match &self.kind {
            Kind::InvalidBody(why) => Some(Cow::Borrowed(why)),
            Kind::MissingParameters(_) => Some(self.client_message()),
            _ => None,
        }
    }

    /// Whether the client connection must close after the error answer: framing errors leave
    /// the byte stream in an unknown state, so nothing after them can be trusted.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self.kind,
            Kind::BadRequest(_)
                | Kind::HeadTooLarge
                | Kind::BodyTooLarge
                | Kind::HeadTimeout
                | Kind::BodyTimeout
                | Kind::ExpectationFailed
                | Kind::CodingNotImplemented
                | Kind::ClientGone
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?}): {}", self.kind, self.side, self.context)
    }
}

impl std::error::Error for Error {}

/// Amazon's management-API exception name for an admin API error status (botocore and the
/// other SDKs tell errors apart by `x-amzn-ErrorType`); empty for successes and 5xx other than
/// 503.
pub(crate) fn admin_error_type(status: u16) -> &'static str {
    match status {
        401 => "UnauthorizedException",
        403 => "AccessDeniedException",
        404 => "NotFoundException",
        409 => "ConflictException",
        429 => "TooManyRequestsException",
        503 => "ServiceUnavailableException",
        400..=499 => "BadRequestException",
        _ => "",
    }
}

/// The name of Amazon's management-API exception an `@connections` status stands for (what
/// `x-amzn-errortype` says, and SDKs raise by name); empty for the others.
pub(crate) fn connections_error_type(status: u16) -> &'static str {
    match status {
        410 => "GoneException",
        413 => "PayloadTooLargeException",
        429 => "LimitExceededException",
        _ => "",
    }
}
