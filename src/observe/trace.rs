//! W3C trace context: a request continues the client's trace (`traceparent`, else Amazon's
//! `X-Amzn-Trace-Id`) or starts one; the gateway's server span and its client span for the
//! upstream call carry ids made here, and the upstream is sent the client span as its parent.
//! Spans are plain [`otlp::Span`] values handed to the exporter ([`super::export`]).

use std::cell::Cell;

/// A request's place in a trace.
#[derive(Debug, Clone)]
pub(crate) struct TraceCtx {
    pub trace_id: [u8; 16],
    /// The caller's span, when the request continued a trace.
    pub parent: Option<[u8; 8]>,
    /// The caller's sampling decision (`None`: no caller trace).
    pub parent_sampled: Option<bool>,
    /// The gateway's server span.
    pub span_id: [u8; 8],
    /// The spans of the upstream call and of an external authorizer's call.
    pub client_span: Option<[u8; 8]>,
    pub auth_span: Option<[u8; 8]>,
    /// The caller's `tracestate`, passed on unchanged.
    pub tracestate: Option<String>,
    /// Whether this request is traced (decided once the stage is known).
    pub sampled: Option<bool>,
}

/// Per-shard ids: wyrand, seeded from the OS. Trace and span ids need to be unique and
/// unpredictable enough to not collide, not secret.
#[derive(Debug)]
pub(crate) struct Ids(Cell<u64>);

impl Default for Ids {
    fn default() -> Ids {
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        Ids(Cell::new(u64::from_le_bytes(seed)))
    }
}

impl Ids {
    fn next(&self) -> u64 {
        let s = self.0.get().wrapping_add(0xa076_1d64_78bd_642f);
        self.0.set(s);
        let t = (s as u128).wrapping_mul((s ^ 0xe703_7ed1_a0b4_28db) as u128);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// True with probability `p` (0 to 1).
    pub(crate) fn chance(&self, p: f64) -> bool {
        p >= 1.0 || (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }

    /// A span id (never all zeros).
    pub(crate) fn span(&self) -> [u8; 8] {
        loop {
            let v = self.next();
            if v != 0 {
                return v.to_be_bytes();
            }
        }
    }

    fn trace(&self) -> [u8; 16] {
        let mut t = [0u8; 16];
        t[..8].copy_from_slice(&self.span());
        t[8..].copy_from_slice(&self.span());
        t
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        // Lower case only, as W3C Trace Context (and X-Ray's ids) write them.
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_val(s[2 * i])? << 4 | hex_val(s[2 * i + 1])?;
    }
    Some(out)
}

pub(crate) fn hex(b: &[u8], out: &mut Vec<u8>) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for &x in b {
        out.push(H[(x >> 4) as usize]);
        out.push(H[(x & 15) as usize]);
    }
}

/// `traceparent` (W3C Trace Context, version 00; later versions read as 00 where they
/// parse): (trace id, parent id, sampled). All-zero ids are invalid.
pub(crate) fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], bool)> {
    let v = v.trim_ascii();
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version: [u8; 1] = unhex(&v[..2])?;
    if version[0] == 0xff || (version[0] == 0 && v.len() != 55) {
        return None;
    }
    if v.len() > 55 && v[55] != b'-' {
        return None;
    }
    let trace: [u8; 16] = unhex(&v[3..35])?;
    let parent: [u8; 8] = unhex(&v[36..52])?;
    let flags: [u8; 1] = unhex(&v[53..55])?;
    if trace == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace, parent, flags[0] & 1 == 1))
}

/// A trace id, and the caller's span and decision if it named them.
pub(crate) type AmznTrace = ([u8; 16], Option<[u8; 8]>, Option<bool>);

/// `X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1`
/// as (trace id, parent id, sampled): the root's time and random parts make the W3C trace id.
pub(crate) fn parse_amzn(v: &[u8]) -> Option<AmznTrace> {
    let s = std::str::from_utf8(v).ok()?;
    let (mut root, mut parent, mut sampled) = (None, None, None);
    for part in s.split(';') {
        let part = part.trim();
        if part.is_empty() {
            // `Root=...;Sampled=1;`: an empty element is no error.
            continue;
        }
        let (k, val) = part.split_once('=')?;
        match k {
            "Root" => {
                let mut it = val.split('-');
                let (Some("1"), Some(time), Some(rand), None) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return None;
                };
                // Eight hex digits of time, 24 of randomness.
                if time.len() != 8 || rand.len() != 24 {
                    return None;
                }
                root = unhex::<16>(format!("{time}{rand}").as_bytes());
            }
            // An all-zero id is none (W3C Trace Context 3.2.2.4): no parent.
            "Parent" => parent = unhex::<8>(val.as_bytes()).filter(|p| *p != [0; 8]),
            // `Sampled=?` (or anything else) is no decision: the receiver makes it.
            "Sampled" => {
                sampled = match val {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Some((root.filter(|r| *r != [0; 16])?, parent, sampled))
}

/// A `tracestate` value's list members, without the empty ones (an empty header, `a=1,`):
/// W3C Trace Context 3.3.2 has them accepted and not sent on. `None` when none is left, and
/// when the list is not one (3.3.1: more than 32 members, a member that is not `key=value` in
/// its grammar, a key twice): it is then not sent on at all.
fn list_members(v: &[u8]) -> Option<String> {
    let v = std::str::from_utf8(v).ok()?;
    let mut out = String::with_capacity(v.len());
    let mut keys: Vec<&str> = Vec::new();
    for m in v.split(',').map(|m| m.trim_matches([' ', '\t'])) {
        if m.is_empty() {
            continue;
        }
        let (key, value) = m.split_once('=')?;
        if !state_key(key) || !state_value(value) || keys.contains(&key) || keys.len() == 32 {
            return None;
        }
        keys.push(key);
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(m);
    }
    (!out.is_empty()).then_some(out)
}

/// A `tracestate` key (W3C 3.3.1.3.1): `simple-key`, or `tenant-id@system-id`.
fn state_key(k: &str) -> bool {
    let rest = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(&b))
    };
    match k.split_once('@') {
        None => k.starts_with(|c: char| c.is_ascii_lowercase()) && rest(&k[1..], 255),
        Some((tenant, system)) => {
            tenant.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && rest(&tenant[1..], 240)
                && system.starts_with(|c: char| c.is_ascii_lowercase())
                && rest(&system[1..], 13)
        }
    }
}

/// A `tracestate` value (W3C 3.3.1.3.2): 1 to 256 printable characters but `,` and `=`, the
/// last not a space.
fn state_value(v: &str) -> bool {
    (1..=256).contains(&v.len())
        && !v.ends_with(' ')
        && v.bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
}

impl TraceCtx {
    /// Continues the caller's trace from the request headers, or starts one.
    pub(crate) fn from_headers(
        traceparent: Option<&[u8]>,
        tracestate: Option<&[u8]>,
        amzn: Option<&[u8]>,
        ids: &Ids,
    ) -> TraceCtx {
        let (trace_id, parent, parent_sampled, state) =
            match traceparent.and_then(parse_traceparent) {
                Some((t, p, s)) => (
                    t,
                    Some(p),
                    Some(s),
                    // Optional whitespace (spaces and tabs) around members is no part of the
                    // list, nor of its 512 characters (W3C Trace Context 3.3.1.5).
                    tracestate
                        .filter(|v| {
                            v.iter()
                                .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t')
                        })
                        .and_then(list_members)
                        .filter(|list| list.len() <= 512),
                ),
                None => match amzn.and_then(parse_amzn) {
                    Some((t, p, s)) => (t, p, s, None),
                    None => (ids.trace(), None, None, None),
                },
            };
        TraceCtx {
            trace_id,
            parent,
            parent_sampled,
            span_id: ids.span(),
            client_span: None,
            auth_span: None,
            tracestate: state,
            sampled: None,
        }
    }

    /// Whether to trace: the caller's decision when it made one, else `ratio` of traces,
    /// chosen by trace id (so every gateway and service that samples by ratio agrees).
    pub(crate) fn decide(&mut self, ratio: f64) -> bool {
        let s = self.sampled_at(ratio);
        self.sampled = Some(s);
        s
    }

    /// What [`TraceCtx::decide`] decided, or would decide with `ratio`.
    pub(crate) fn sampled_at(&self, ratio: f64) -> bool {
        self.sampled.unwrap_or_else(|| {
            self.parent_sampled.unwrap_or_else(|| {
                let r = u64::from_be_bytes(self.trace_id[8..].try_into().unwrap_or([0; 8]));
                ratio >= 1.0 || (r as f64) < ratio * (u64::MAX as f64)
            })
        })
    }

    /// Header lines for the upstream: `traceparent` naming `span` as the parent,
    /// `tracestate` as received, and `X-Amzn-Trace-Id` with the same ids.
    pub(crate) fn upstream_headers(&self, span: [u8; 8], sampled: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"traceparent: 00-");
        hex(&self.trace_id, out);
        out.push(b'-');
        hex(&span, out);
        out.extend_from_slice(if sampled { b"-01\r\n" } else { b"-00\r\n" });
        if let Some(s) = &self.tracestate {
            out.extend_from_slice(b"tracestate: ");
            out.extend_from_slice(s.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-amzn-trace-id: Root=1-");
        hex(&self.trace_id[..4], out);
        out.push(b'-');
        hex(&self.trace_id[4..], out);
        out.extend_from_slice(b";Parent=");
        hex(&span, out);
        out.extend_from_slice(if sampled {
            b";Sampled=1\r\n"
        } else {
            b";Sampled=0\r\n"
        });
    }
}

/// The OTLP messages Tollgate sends (opentelemetry/proto/trace/v1/trace.proto and
/// collector/trace/v1/trace_service.proto; only the fields it fills).
pub(crate) mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(string, tag = "3")]
        pub trace_state: String,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        /// 2 server, 3 client.
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
        /// W3C trace flags (bit 0: sampled).
        #[prost(fixed32, tag = "16")]
        pub flags: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        /// 0 unset, 1 ok, 2 error.
        #[prost(int32, tag = "3")]
        pub code: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
        pub value: Option<Value>,
    }

    // The variants keep the proto's names.
    #[allow(clippy::enum_variant_names)]
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Value {
        #[prost(string, tag = "1")]
        StringValue(String),
        #[prost(bool, tag = "2")]
        BoolValue(bool),
        #[prost(int64, tag = "3")]
        IntValue(i64),
        #[prost(double, tag = "4")]
        DoubleValue(f64),
    }

    /// Longest string attribute value kept, in bytes (OpenTelemetry's attribute value length
    /// limit): what a client sends (a path, a query, a `User-Agent`, up to the head's limit)
    /// is cut here, so the bounded span queue bounds memory too, and a batch stays well under
    /// a collector's request limit.
    pub(crate) const MAX_ATTRIBUTE: usize = 1024;

    /// A string attribute, cut at [`MAX_ATTRIBUTE`] bytes (on a character boundary).
    pub(crate) fn s(key: &str, v: impl Into<String>) -> KeyValue {
        let mut v: String = v.into();
        if v.len() > MAX_ATTRIBUTE {
            let mut at = MAX_ATTRIBUTE;
            while !v.is_char_boundary(at) {
                at -= 1;
            }
            v.truncate(at);
            v.shrink_to_fit();
        }
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v)),
            }),
        }
    }

    /// An integer attribute.
    pub(crate) fn i(key: &str, v: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(v)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, p, s) = parse_traceparent(v).unwrap();
        assert_eq!(t[0], 0x4b);
        assert_eq!(p[7], 0xb7);
        assert!(s);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            // Lower-case hex only.
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A later version with more fields is read as version 00.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-xyz")
                .is_some()
        );
    }

    #[test]
    fn amazon_trace_ids_continue_the_trace() {
        let (t, p, s) = parse_amzn(
            b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        let mut out = Vec::new();
        hex(&t, &mut out);
        assert_eq!(out, b"5759e988bd862e3fe1be46a994272793");
        assert_eq!(p.unwrap()[0], 0x53);
        assert_eq!(s, Some(true));
        assert!(parse_amzn(b"Root=2-5759e988-bd862e3fe1be46a994272793").is_none());
        // An empty element is none; the time part is eight digits.
        assert!(parse_amzn(b"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1;").is_some());
        for (v, want) in [
            ("1", Some(true)),
            ("0", Some(false)),
            ("?", None),
            ("x", None),
        ] {
            let h = format!("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled={v}");
            assert_eq!(parse_amzn(h.as_bytes()).unwrap().2, want, "{v}");
        }
        assert!(parse_amzn(b"Root=1-5759-e988bd862e3fe1be46a994272793").is_none());
    }

    #[test]
    fn sampling_follows_the_caller_else_the_ratio() {
        let ids = Ids::default();
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let mut t = TraceCtx::from_headers(Some(v), None, None, &ids);
        assert!(!t.decide(1.0), "the caller said no");
        let mut sampled = 0;
        for _ in 0..10_000 {
            let mut t = TraceCtx::from_headers(None, None, None, &ids);
            sampled += usize::from(t.decide(0.25));
        }
        assert!((2_000..3_000).contains(&sampled), "{sampled}");
        let mut t = TraceCtx::from_headers(None, None, None, &ids);
        assert!(t.decide(1.0) && t.decide(0.0), "decided once");
    }

    #[test]
    fn upstream_headers_name_the_client_span() {
        let ids = Ids::default();
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceCtx::from_headers(Some(v), Some(b"congo=t61rcWkgMzE"), None, &ids);
        let mut out = Vec::new();
        t.upstream_headers([1, 2, 3, 4, 5, 6, 7, 8], true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01\r\ntracestate: congo=t61rcWkgMzE\r\n"
        ), "{text}");
        assert!(text.contains("x-amzn-trace-id: Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=0102030405060708;Sampled=1"), "{text}");
    }

    /// Empty `tracestate` values and list members are taken and not sent on (W3C 3.3.2).
    #[test]
    fn empty_tracestate_members_are_not_sent_on() {
        let ids = Ids::default();
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for (state, want) in [
            (&b""[..], None),
            (b" , ", None),
            (b"foo=1,", Some("foo=1")),
            (b"foo=1, ,bar=2 ", Some("foo=1,bar=2")),
            (b"t@sys=v, a-b_c*/d=x y", Some("t@sys=v,a-b_c*/d=x y")),
            // Optional whitespace is spaces and tabs (the W3C suite's OWS case).
            (b"foo=1 \t , \t bar=2, \t baz=3", Some("foo=1,bar=2,baz=3")),
            (b"foo=1\t \t,\t \tbar=2", Some("foo=1,bar=2")),
            // Not a list the grammar allows: not sent on at all.
            (b"Foo Bar", None),
            (b"foo=1,foo=2", None),
            (b"foo=", None),
            (b"foo=a=b", None),
            (b"9foo=1", None),
        ] {
            let t = TraceCtx::from_headers(Some(v), Some(state), None, &ids);
            assert_eq!(t.tracestate.as_deref(), want, "{state:?}");
        }
        let members = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let t = TraceCtx::from_headers(Some(v), Some(members(32).as_bytes()), None, &ids);
        assert!(t.tracestate.is_some());
        let t = TraceCtx::from_headers(Some(v), Some(members(33).as_bytes()), None, &ids);
        assert_eq!(t.tracestate, None);
        // 512 characters of list, not counting the whitespace around its members.
        let long = |sep: &str, n: usize| {
            (0..11)
                .map(|i| format!("k{i:02}={}", "v".repeat(n)))
                .collect::<Vec<_>>()
                .join(sep)
        };
        let fits = long("  ,  ", 41);
        assert!(fits.len() > 512 && long(",", 41).len() <= 512);
        let t = TraceCtx::from_headers(Some(v), Some(fits.as_bytes()), None, &ids);
        assert_eq!(t.tracestate.as_deref(), Some(long(",", 41).as_str()));
        let over = long(",", 42);
        assert!(over.len() > 512);
        let t = TraceCtx::from_headers(Some(v), Some(over.as_bytes()), None, &ids);
        assert_eq!(t.tracestate, None);
    }
}
