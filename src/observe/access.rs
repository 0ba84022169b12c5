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
    r#"{"requestId":"$context.requestId","extendedRequestId":"$context.extendedRequestId","#,
    r#""ip":"$context.identity.sourceIp","#,
    r#""requestTime":"$context.requestTime","requestTimeEpoch":"$context.requestTimeEpoch","#,
    r#""httpMethod":"$context.httpMethod","routeKey":"$context.routeKey","path":"$context.path","#,
    r#""requestUri":"$context.requestUri","isCanaryRequest":"$context.isCanaryRequest","#,
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
    r#""validationError":"$context.error.validationErrorString","#,
    r#""authorizerError":"$context.authorizer.error","cacheStatus":"$context.cacheStatus","#,
    r#""upstream":"$context.upstreamAddr","tlsVersion":"$context.tlsVersion","#,
    r#""shard":"$context.shard","connectionId":"$context.connectionId","#,
    r#""eventType":"$context.eventType"}"#
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
    IsCanaryRequest,
    ErrorMessage,
    /// `$context.error.messageString`: the message as a quoted JSON string (`"-"` without).
    ErrorMessageString,
    /// `$context.resourcePath`: the route key's path template (`/pets/{id}`).
    ResourcePath,
    ErrorResponseType,
    ValidationError,
    CacheStatus,
    UpstreamAddr,
    TlsVersion,
    Shard,
    /// WebSocket APIs: the connection's id, and `CONNECT`, `MESSAGE` or `DISCONNECT`.
    ConnectionId,
    EventType,
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
    ("isCanaryRequest", Var::IsCanaryRequest),
    ("error.message", Var::ErrorMessage),
    ("error.messageString", Var::ErrorMessageString),
    ("resourcePath", Var::ResourcePath),
    ("error.responseType", Var::ErrorResponseType),
    ("error.validationErrorString", Var::ValidationError),
    ("cacheStatus", Var::CacheStatus),
    ("upstreamAddr", Var::UpstreamAddr),
    ("tlsVersion", Var::TlsVersion),
    ("shard", Var::Shard),
    ("connectionId", Var::ConnectionId),
    ("eventType", Var::EventType),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Box<[u8]>),
    Var(Var),
}

/// A parsed access-log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
    /// Values are escaped as JSON string content (the format starts with `{`).
    json: bool,
}

/// One request as the access log sees it. Strings are the request's own bytes, escaped when
/// rendered.
#[derive(Default)]
pub struct Line<'a> {
    pub request_id: &'a [u8],
    pub source_ip: Option<IpAddr>,
    pub user_agent: Option<&'a [u8]>,
    pub api_key_id: Option<&'a str>,
    /// When the request's head was parsed, in milliseconds since the epoch.
    pub time_ms: u64,
    pub method: Option<&'a str>,
    pub route_key: Option<&'a str>,
    /// The request path as sent, and the query after `?` (`requestUri` is both).
    pub path: Option<&'a [u8]>,
    pub query: Option<&'a [u8]>,
    /// Query parameters whose values are credentials (redacted).
    pub secret_query: &'a [Box<str>],
    pub protocol: Option<&'static str>,
    pub status: u16,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub latency_us: Option<u64>,
    pub integration_latency_us: Option<u64>,
    pub integration_status: Option<u16>,
    pub integration_error: Option<&'a str>,
    pub authorizer_error: Option<&'a str>,
    pub domain: Option<&'a [u8]>,
    pub stage: Option<&'a str>,
    pub api: Option<&'a str>,
    pub error_message: Option<Cow<'a, str>>,
    pub error_type: Option<&'static str>,
    /// Why request validation refused the request.
    pub validation_error: Option<Cow<'a, str>>,
    pub cache: Option<&'static str>,
    pub upstream: Option<SocketAddr>,
    pub tls_version: Option<&'static str>,
    pub shard: usize,
    /// Sent to its stage's canary.
    pub canary: bool,
    pub authorizer: Option<&'a dyn AuthorizerVars>,
    /// WebSocket APIs: the connection and the event.
    pub connection_id: Option<&'a str>,
    pub event_type: Option<&'static str>,
}

impl Format {
    /// Parses `json`, `clf`, or a template. The error says what is wrong, for the config key.
    pub fn parse(text: &str) -> Result<Format, String> {
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
            // `$context.requestId:$context.status`, `$context.status-...`: a known name ends
            // where a `:`, `-`, `_` or `.` follows it, unless the longer name is one (claims
            // and authorizer values take them whole: `authorizer.claims.cognito:groups`).
            if var(&after[..len]).is_err() && !after.starts_with("authorizer.") {
                let known = NAMES
                    .iter()
                    .map(|(n, _)| *n)
                    .filter(|n| {
                        n.len() < len
                            && after[..len].starts_with(n)
                            && !after.as_bytes()[n.len()].is_ascii_alphanumeric()
                    })
                    .map(str::len)
                    .max();
                if let Some(n) = known {
                    len = n;
                }
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
    pub fn render(&self, l: &Line<'_>, out: &mut Vec<u8>) {
        for p in &self.pieces {
            match p {
                Piece::Lit(b) => out.extend_from_slice(b),
                Piece::Var(v) => self.value(v, l, out),
            }
        }
        out.push(b'\n');
    }

    /// Writes one value straight into `out`: numbers and the gateway's own words as they
    /// are, anything a client or the config chose escaped; `-` when there is none.
    fn value(&self, v: &Var, l: &Line<'_>, out: &mut Vec<u8>) {
        use std::io::Write;
        let start = out.len();
        let mut n = itoa::Buffer::new();
        let mut num = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(n.format(v).as_bytes());
        let esc = |out: &mut Vec<u8>, v: &[u8]| self.escape(v, out);
        match v {
            Var::RequestId | Var::ExtendedRequestId => esc(out, l.request_id),
            // IPv4 octet by octet (`Display` goes through the padding machinery: a tenth
            // of a line's cost); IPv6 as `Display` writes it.
            Var::SourceIp => match l.source_ip {
                Some(IpAddr::V4(ip)) => ipv4_into(ip, out),
                Some(ip) => {
                    let _ = write!(out, "{ip}");
                }
                None => {}
            },
            Var::UserAgent => esc(out, l.user_agent.unwrap_or_default()),
            Var::ApiKeyId => esc(out, l.api_key_id.unwrap_or_default().as_bytes()),
            Var::RequestTime => clf_time_into(l.time_ms, out),
            Var::RequestTimeEpoch => num(out, l.time_ms),
            Var::HttpMethod => out.extend_from_slice(l.method.unwrap_or_default().as_bytes()),
            Var::RouteKey => esc(out, l.route_key.unwrap_or_default().as_bytes()),
            Var::ConnectionId => esc(out, l.connection_id.unwrap_or_default().as_bytes()),
            Var::EventType => out.extend_from_slice(l.event_type.unwrap_or_default().as_bytes()),
            Var::Path => esc(out, l.path.unwrap_or_default()),
            Var::RequestUri => {
                if let Some(p) = l.path {
                    esc(out, p);
                    if let Some(q) = l.query {
                        out.push(b'?');
                        esc(out, &crate::auth::sigv4::redact_query(q, l.secret_query));
                    }
                }
            }
            Var::Protocol => out.extend_from_slice(l.protocol.unwrap_or_default().as_bytes()),
            Var::Status => {
                if l.status != 0 {
                    num(out, u64::from(l.status))
                }
            }
            Var::ResponseLength => num(out, l.bytes_out),
            Var::RequestLength => num(out, l.bytes_in),
            Var::ResponseLatency => {
                if let Some(us) = l.latency_us {
                    millis_into(us, out)
                }
            }
            Var::IntegrationLatency => {
                if let Some(us) = l.integration_latency_us {
                    millis_into(us, out)
                }
            }
            Var::IntegrationStatus => {
                if let Some(s) = l.integration_status {
                    num(out, u64::from(s))
                }
            }
            Var::IntegrationError => esc(out, l.integration_error.unwrap_or_default().as_bytes()),
            Var::AuthorizerError => esc(out, l.authorizer_error.unwrap_or_default().as_bytes()),
            Var::DomainName => esc(out, l.domain.unwrap_or_default()),
            Var::Stage => esc(out, l.stage.unwrap_or_default().as_bytes()),
            Var::ApiId => esc(out, l.api.unwrap_or_default().as_bytes()),
            Var::IsCanaryRequest => {
                out.extend_from_slice(if l.canary { b"true" } else { b"false" })
            }
            Var::ErrorMessage => esc(
                out,
                l.error_message.as_deref().unwrap_or_default().as_bytes(),
            ),
            Var::ErrorMessageString => {
                out.push(b'"');
                match l.error_message.as_deref() {
                    Some(m) => escape_json(m.as_bytes(), out),
                    None => out.push(b'-'),
                }
                out.push(b'"');
            }
            Var::ResourcePath => esc(
                out,
                l.route_key
                    .map(|k| k.split_once(' ').map_or(k, |(_, p)| p))
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            Var::ValidationError => esc(
                out,
                l.validation_error.as_deref().unwrap_or_default().as_bytes(),
            ),
            Var::ErrorResponseType => {
                out.extend_from_slice(l.error_type.unwrap_or_default().as_bytes())
            }
            Var::CacheStatus => out.extend_from_slice(l.cache.unwrap_or_default().as_bytes()),
            Var::UpstreamAddr => match l.upstream {
                // As `Display` writes it, without the formatter (a fifth of a line's cost).
                Some(SocketAddr::V4(a)) => {
                    ipv4_into(*a.ip(), out);
                    out.push(b':');
                    num(out, u64::from(a.port()));
                }
                Some(a) => {
                    let _ = write!(out, "{a}");
                }
                None => {}
            },
            Var::TlsVersion => out.extend_from_slice(l.tls_version.unwrap_or_default().as_bytes()),
            Var::Shard => num(out, l.shard as u64),
            Var::Claim(name) => {
                if let Some(c) = l.authorizer.and_then(|a| a.claim(name)) {
                    esc(out, c.as_bytes())
                }
            }
            Var::AuthorizerValue(name) => {
                if let Some(c) = l.authorizer.and_then(|a| a.value(name)) {
                    esc(out, c.as_bytes())
                }
            }
        }
        if out.len() == start {
            out.push(b'-');
        }
    }

    /// A value a client or the config chose, escaped for this format. Printable ASCII
    /// without quotes or backslashes (nearly every value) is copied as it is.
    fn escape(&self, v: &[u8], out: &mut Vec<u8>) {
        if plain(v) {
            out.extend_from_slice(v);
        } else if self.json {
            escape_json(v, out)
        } else {
            escape_text(v, out)
        }
    }
}

/// An IPv4 address as `Display` writes it, octet by octet (`Display` goes through the padding
/// machinery: a tenth of a line's cost).
fn ipv4_into(ip: std::net::Ipv4Addr, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(n.format(o).as_bytes());
    }
}

/// True when every byte is printable ASCII other than `"` and `\\`: nothing to escape.
/// Eight bytes at a time (each test below is exact for "some byte in the word is ..."), then
/// byte by byte.
fn plain(v: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    let mut words = v.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_ne_bytes(w.try_into().unwrap_or_default());
        if x & HIGH != 0 // 0x80 and above
            || x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0 // below 0x20
            || zero_byte(x ^ (ONES * 0x7f))
            || zero_byte(x ^ (ONES * u64::from(b'"')))
            || zero_byte(x ^ (ONES * u64::from(b'\\')))
        {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
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
fn millis_into(us: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(us / 1000).as_bytes());
    let f = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ]);
}

/// `30/Nov/2026:20:58:10 +0000`, the CLF time Amazon API Gateway writes (UTC).
pub(crate) fn clf_time(ms: u64) -> String {
    let mut out = Vec::with_capacity(26);
    clf_time_into(ms, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// [`clf_time`] into `out`, formatted once per second per thread.
pub(crate) fn clf_time_into(ms: u64, out: &mut Vec<u8>) {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<(u64, [u8; 26])> = const { Cell::new((u64::MAX, [0; 26])) };
    }
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let secs = ms / 1000;
    let (at, text) = LAST.with(Cell::get);
    if at == secs {
        out.extend_from_slice(&text);
        return;
    }
    let (y, m, d) = crate::syntax::civil::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    let mut b = [0u8; 26];
    let two = |b: &mut [u8], v: u64| {
        b[0] = b'0' + (v / 10 % 10) as u8;
        b[1] = b'0' + (v % 10) as u8;
    };
    two(&mut b[0..2], u64::from(d));
    b[2] = b'/';
    b[3..6].copy_from_slice(MONTHS[(m as usize).saturating_sub(1) % 12]);
    b[6] = b'/';
    let y = y.clamp(0, 9999) as u64;
    two(&mut b[7..9], y / 100);
    two(&mut b[9..11], y % 100);
    b[11] = b':';
    two(&mut b[12..14], t / 3600);
    b[14] = b':';
    two(&mut b[15..17], t / 60 % 60);
    b[17] = b':';
    two(&mut b[18..20], t % 60);
    b[20..26].copy_from_slice(b" +0000");
    LAST.with(|c| c.set((secs, b)));
    out.extend_from_slice(&b);
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
