//! Access-log lines: a format (`json`, `clf`, or a template of `$context` variables with
//! Amazon API Gateway's names) parsed once at load, and rendered per request from a [`Line`]
//! into the shard's buffer. A value that is absent is written `-`, as Amazon API Gateway
//! does. Values are escaped so that no client can break a line or forge another: in a JSON
//! format (one that starts with `{`) as JSON string content, otherwise nginx's way (`"`, `\`
//! and bytes outside printable ASCII as `\xHH`).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use crate::syntax::template::AuthorizerVars;

/// A format's longest accepted text.
pub(crate) const MAX_FORMAT: usize = 4096;

/// The built-in `json` format: every variable Tollgate logs, one JSON object per line.
pub(crate) const JSON: &str = concat!(
    r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","#,
    r#""requestTime":"$context.requestTime","requestTimeEpoch":"$context.requestTimeEpoch","#,
    r#""httpMethod":"$context.httpMethod","routeKey":"$context.routeKey","path":"$context.path","#,
    r#""protocol":"$context.protocol","status":"$context.status","#,
    r#""responseLength":"$context.responseLength","requestLength":"$context.requestLength","#,
    r#""responseLatency":"$context.responseLatency","#,
    r#""integrationLatency":"$context.integrationLatency","#,
    r#""integrationStatus":"$context.integrationStatus","#,
    r#""integrationError":"$context.integration.error","#,
    r#""domainName":"$context.domainName","apiId":"$context.apiId","stage":"$context.stage","#,
    r#""apiKeyId":"$context.identity.apiKeyId","userAgent":"$context.identity.userAgent","#,
    r#""errorMessage":"$context.error.message","#,
    r#""errorResponseType":"$context.error.responseType","#,
    r#""authorizerError":"$context.authorizer.error","cacheStatus":"$context.cacheStatus","#,
    r#""upstream":"$context.upstreamAddr","tlsVersion":"$context.tlsVersion","#,
    r#""shard":"$context.shard"}"#
);

/// The built-in `clf` format: the Common Log Format, with the request id last (as Amazon
/// API Gateway's CLF example has it).
pub(crate) const CLF: &str = concat!(
    r#"$context.identity.sourceIp - - [$context.requestTime] "#,
    r#""$context.httpMethod $context.requestUri $context.protocol" "#,
    r#"$context.status $context.responseLength $context.requestId"#
);

/// A variable a format may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Var {
    RequestId,
    ExtendedRequestId,
    SourceIp,
    UserAgent,
    ApiKeyId,
    RequestTime,
    RequestTimeEpoch,
    HttpMethod,
    RouteKey,
    Path,
    RequestUri,
    Protocol,
    Status,
    ResponseLength,
    RequestLength,
    ResponseLatency,
    IntegrationLatency,
    IntegrationStatus,
    IntegrationError,
    AuthorizerError,
    DomainName,
    Stage,
    ApiId,
    ErrorMessage,
    ErrorResponseType,
    CacheStatus,
    UpstreamAddr,
    TlsVersion,
    Shard,
    /// `$context.authorizer.claims.NAME`.
    Claim(String),
    /// `$context.authorizer.NAME` (an external authorizer's context, or `principalId`).
    AuthorizerValue(String),
}

/// The names after `$context.`, Amazon API Gateway's where it has one.
const NAMES: &[(&str, Var)] = &[
    ("requestId", Var::RequestId),
    ("extendedRequestId", Var::ExtendedRequestId),
    ("identity.sourceIp", Var::SourceIp),
    ("identity.userAgent", Var::UserAgent),
    ("identity.apiKeyId", Var::ApiKeyId),
    ("requestTime", Var::RequestTime),
    ("requestTimeEpoch", Var::RequestTimeEpoch),
    ("httpMethod", Var::HttpMethod),
    ("routeKey", Var::RouteKey),
    ("path", Var::Path),
    ("requestUri", Var::RequestUri),
    ("protocol", Var::Protocol),
    ("status", Var::Status),
    ("responseLength", Var::ResponseLength),
    ("requestLength", Var::RequestLength),
    ("responseLatency", Var::ResponseLatency),
    ("integrationLatency", Var::IntegrationLatency),
    ("integration.latency", Var::IntegrationLatency),
    ("integrationStatus", Var::IntegrationStatus),
    ("integration.status", Var::IntegrationStatus),
    ("integration.error", Var::IntegrationError),
    ("integrationErrorMessage", Var::IntegrationError),
    ("authorizer.error", Var::AuthorizerError),
    ("domainName", Var::DomainName),
    ("stage", Var::Stage),
    ("apiId", Var::ApiId),
    ("error.message", Var::ErrorMessage),
    ("error.responseType", Var::ErrorResponseType),
    ("cacheStatus", Var::CacheStatus),
    ("upstreamAddr", Var::UpstreamAddr),
    ("tlsVersion", Var::TlsVersion),
    ("shard", Var::Shard),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Box<[u8]>),
    Var(Var),
}

/// A parsed access-log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format {
    pieces: Vec<Piece>,
    /// Values are escaped as JSON string content (the format starts with `{`).
    json: bool,
}

/// One request as the access log sees it. Strings are the request's own bytes, escaped when
/// rendered.
#[derive(Default)]
pub(crate) struct Line<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) source_ip: Option<IpAddr>,
    pub(crate) user_agent: Option<&'a [u8]>,
    pub(crate) api_key_id: Option<&'a str>,
    /// When the request's head was parsed, in milliseconds since the epoch.
    pub(crate) time_ms: u64,
    pub(crate) method: Option<&'a str>,
    pub(crate) route_key: Option<&'a str>,
    /// The request path as sent, and the query after `?` (`requestUri` is both).
    pub(crate) path: Option<&'a [u8]>,
    pub(crate) query: Option<&'a [u8]>,
    pub(crate) protocol: Option<&'static str>,
    pub(crate) status: u16,
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) latency_us: Option<u64>,
    pub(crate) integration_latency_us: Option<u64>,
    pub(crate) integration_status: Option<u16>,
    pub(crate) integration_error: Option<&'a str>,
    pub(crate) authorizer_error: Option<&'a str>,
    pub(crate) domain: Option<&'a [u8]>,
    pub(crate) stage: Option<&'a str>,
    pub(crate) api: Option<&'a str>,
    pub(crate) error_message: Option<Cow<'a, str>>,
    pub(crate) error_type: Option<&'static str>,
    pub(crate) cache: Option<&'static str>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) tls_version: Option<&'static str>,
    pub(crate) shard: usize,
    pub(crate) authorizer: Option<&'a dyn AuthorizerVars>,
}

impl Format {
    /// Parses `json`, `clf`, or a template. The error says what is wrong, for the config key.
    pub(crate) fn parse(text: &str) -> Result<Format, String> {
        let text = match text {
            "json" => JSON,
            "clf" => CLF,
            t => t,
        };
        if text.len() > MAX_FORMAT {
            return Err(format!("is {} bytes; at most {MAX_FORMAT}", text.len()));
        }
        if text.contains(['\n', '\r']) {
            return Err("must be one line (each request writes exactly one)".into());
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut lit = String::new();
        while let Some(at) = rest.find("$context.") {
            lit.push_str(&rest[..at]);
            let after = &rest[at + "$context.".len()..];
            let mut len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')))
                .unwrap_or(after.len());
            // A trailing dot ends the sentence, not the name.
            while len > 0 && after.as_bytes()[len - 1] == b'.' {
                len -= 1;
            }
            let name = &after[..len];
            let var = var(name)?;
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit).into_bytes().into()));
            }
            pieces.push(Piece::Var(var));
            rest = &after[len..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit.into_bytes().into()));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Var(_))) {
            return Err(format!(
                "names no $context variable; use \"json\", \"clf\", or a template such as {CLF:?}"
            ));
        }
        Ok(Format {
            pieces,
            json: text.trim_start().starts_with('{'),
        })
    }

    /// Appends one line (ending in `\n`) for `l`.
    pub(crate) fn render(&self, l: &Line<'_>, out: &mut Vec<u8>) {
        for p in &self.pieces {
            match p {
                Piece::Lit(b) => out.extend_from_slice(b),
                Piece::Var(v) => self.value(v, l, out),
            }
        }
        out.push(b'\n');
    }

    fn value(&self, v: &Var, l: &Line<'_>, out: &mut Vec<u8>) {
        let mut n = itoa::Buffer::new();
        let text: Option<Cow<'_, [u8]>> = match v {
            Var::RequestId | Var::ExtendedRequestId => Some(l.request_id.as_bytes().into()),
            Var::SourceIp => l.source_ip.map(|ip| ip.to_string().into_bytes().into()),
            Var::UserAgent => l.user_agent.map(Cow::Borrowed),
            Var::ApiKeyId => l.api_key_id.map(|s| s.as_bytes().into()),
            Var::RequestTime => Some(clf_time(l.time_ms).into_bytes().into()),
            Var::RequestTimeEpoch => Some(n.format(l.time_ms).as_bytes().to_vec().into()),
            Var::HttpMethod => l.method.map(|s| s.as_bytes().into()),
            Var::RouteKey => l.route_key.map(|s| s.as_bytes().into()),
            Var::Path => l.path.map(Cow::Borrowed),
            Var::RequestUri => l.path.map(|p| match l.query {
                Some(q) => [p, b"?", q].concat().into(),
                None => Cow::Borrowed(p),
            }),
            Var::Protocol => l.protocol.map(|s| s.as_bytes().into()),
            Var::Status => (l.status != 0).then(|| n.format(l.status).as_bytes().to_vec().into()),
            Var::ResponseLength => Some(n.format(l.bytes_out).as_bytes().to_vec().into()),
            Var::RequestLength => Some(n.format(l.bytes_in).as_bytes().to_vec().into()),
            Var::ResponseLatency => l.latency_us.map(|us| millis(us).into_bytes().into()),
            Var::IntegrationLatency => l
                .integration_latency_us
                .map(|us| millis(us).into_bytes().into()),
            Var::IntegrationStatus => l
                .integration_status
                .map(|s| n.format(s).as_bytes().to_vec().into()),
            Var::IntegrationError => l.integration_error.map(|s| s.as_bytes().into()),
            Var::AuthorizerError => l.authorizer_error.map(|s| s.as_bytes().into()),
            Var::DomainName => l.domain.map(Cow::Borrowed),
            Var::Stage => l.stage.map(|s| s.as_bytes().into()),
            Var::ApiId => l.api.map(|s| s.as_bytes().into()),
            Var::ErrorMessage => l.error_message.as_deref().map(|s| s.as_bytes().into()),
            Var::ErrorResponseType => l.error_type.map(|s| s.as_bytes().into()),
            Var::CacheStatus => l.cache.map(|s| s.as_bytes().into()),
            Var::UpstreamAddr => l.upstream.map(|a| a.to_string().into_bytes().into()),
            Var::TlsVersion => l.tls_version.map(|s| s.as_bytes().into()),
            Var::Shard => Some(n.format(l.shard).as_bytes().to_vec().into()),
            Var::Claim(name) => l
                .authorizer
                .and_then(|a| a.claim(name))
                .map(|c| c.into_owned().into_bytes().into()),
            Var::AuthorizerValue(name) => l
                .authorizer
                .and_then(|a| a.value(name))
                .map(|c| c.into_owned().into_bytes().into()),
        };
        match text {
            Some(t) if !t.is_empty() => {
                if self.json {
                    escape_json(&t, out)
                } else {
                    escape_text(&t, out)
                }
            }
            _ => out.push(b'-'),
        }
    }
}

/// The variable a name after `$context.` stands for.
fn var(name: &str) -> Result<Var, String> {
    if let Some((_, v)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Ok(v.clone());
    }
    if name == "identity.apiKey" {
        return Err(
            "$context.identity.apiKey would write API keys to the log; use $context.identity.apiKeyId"
                .into(),
        );
    }
    if let Some(claim) = name.strip_prefix("authorizer.claims.") {
        if !claim.is_empty() {
            return Ok(Var::Claim(claim.to_string()));
        }
    } else if let Some(key) = name.strip_prefix("authorizer.") {
        if !key.is_empty() && !key.contains('.') {
            return Ok(Var::AuthorizerValue(key.to_string()));
        }
    }
    let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
    Err(format!(
        "names an unknown variable $context.{name}; known: $context.{}, $context.authorizer.claims.NAME, $context.authorizer.NAME",
        known.join(", $context.")
    ))
}

/// Microseconds as milliseconds with three decimals (`12.345`): Amazon API Gateway's unit,
/// with the precision a gateway that answers in well under a millisecond needs.
fn millis(us: u64) -> String {
    format!("{}.{:03}", us / 1000, us % 1000)
}

/// `30/Nov/2026:20:58:10 +0000`, the CLF time Amazon API Gateway writes (UTC).
pub(crate) fn clf_time(ms: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms / 1000;
    let (y, m, d) = crate::syntax::civil::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m as usize).saturating_sub(1) % 12],
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// JSON string content: `"`, `\` and control characters escaped; invalid UTF-8 replaced.
fn escape_json(v: &[u8], out: &mut Vec<u8>) {
    let s = String::from_utf8_lossy(v);
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            // Controls, and what some readers take for a line break (NEL, LS, PS).
            c if (c as u32) < 0x20
                || ('\u{7f}'..='\u{9f}').contains(&c)
                || c == '\u{2028}'
                || c == '\u{2029}' =>
            {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
}

/// nginx's default escaping: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn escape_text(v: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            out.extend_from_slice(&[b'\\', b'x', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;
