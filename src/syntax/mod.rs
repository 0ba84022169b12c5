//! The grammar of what the config and requests spell out, parsed into inert values: HTTP
//! methods, request paths and their percent coding ([`path`]), route keys ([`route_key`]),
//! `${...}` templates ([`template`]) and client-certificate field names ([`CertField`]).
//!
//! A leaf: it imports no other module of the crate, so the config, the route trie, the
//! protocol layer and the pipeline can all share these types without depending on each other.

pub(crate) mod cidr;
pub(crate) mod civil;
pub(crate) mod json_doc;
pub(crate) mod json_strict;
pub(crate) mod mapping;
pub(crate) mod path;
pub(crate) mod refs;
pub(crate) mod route_key;
pub(crate) mod template;
pub(crate) mod vtl;

/// `tchar` (RFC 9110 5.6.2): the characters of a token (a header name, a method).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a byte may stand in a header field's value as the gateway writes one (RFC 9110
/// 5.5: visible ASCII, space, tab and obs-text): every other control byte, CR, LF, NUL and
/// DEL included, is dropped from values a request, a template or a claim put there.
#[inline]
pub(crate) fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// The methods a route can name. Anything else is still forwarded (for `ANY` routes and
/// `$default`), under [`Method::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Trace,
    Connect,
    Other,
}

impl Method {
    /// Every method a route key may name, in the order `Allow` lists them.
    pub const NAMED: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Patch,
        Method::Options,
        Method::Trace,
        Method::Connect,
    ];

    /// The methods an `ANY` route stands for in Amazon API Gateway, in the order `Allow`
    /// lists them when a method is refused whatever the route (TRACE, TRACK, CONNECT).
    pub const ANY: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Options,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
    ];

    pub fn from_bytes(b: &[u8]) -> Method {
        match b {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"PATCH" => Method::Patch,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Parses a route key's method; `None` for unknown names, and for TRACE and CONNECT,
    /// which the gateway refuses whatever the route.
    pub fn from_route_name(s: &str) -> Option<Method> {
        match Method::from_bytes(s.as_bytes()) {
            Method::Other | Method::Trace | Method::Connect => None,
            m => Some(m),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Connect => "CONNECT",
            Method::Other => "OTHER",
        }
    }

    /// Index into per-method tables (`Other` has none).
    pub fn index(self) -> Option<usize> {
        Method::NAMED.iter().position(|m| *m == self)
    }

    /// Methods a retry may repeat (RFC 9110 9.2.2).
    /// Safe methods (RFC 9110 9.2.1): the others (and unknown ones) may change the resource,
    /// so a cache invalidates what it stored for the target after a successful one.
    pub fn is_safe(self) -> bool {
        matches!(
            self,
            Method::Get | Method::Head | Method::Options | Method::Trace
        )
    }

    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }
}

/// A field of a verified client certificate, forwarded as a header (names as in Amazon API
/// Gateway's `$context.identity.clientCert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CertField {
    SubjectDN,
    IssuerDN,
    SerialNumber,
    /// SHA-256 of the DER certificate, hex.
    Fingerprint,
    /// DNS, email, URI and IP subject alternative names, comma-separated.
    Sans,
    NotBefore,
    NotAfter,
    /// The leaf certificate, PEM, URL-encoded (as nginx's `$ssl_client_escaped_cert`).
    ClientCertPem,
}

impl CertField {
    pub const ALL: [CertField; 8] = [
        CertField::SubjectDN,
        CertField::IssuerDN,
        CertField::SerialNumber,
        CertField::Fingerprint,
        CertField::Sans,
        CertField::NotBefore,
        CertField::NotAfter,
        CertField::ClientCertPem,
    ];

    pub const HELP: &'static str = "one of subjectDN, issuerDN, serialNumber, fingerprint, sans, notBefore, notAfter, clientCertPem";

    pub fn parse(s: &str) -> Option<CertField> {
        Some(match s {
            "subjectDN" => CertField::SubjectDN,
            "issuerDN" => CertField::IssuerDN,
            "serialNumber" => CertField::SerialNumber,
            "fingerprint" => CertField::Fingerprint,
            "sans" => CertField::Sans,
            "notBefore" => CertField::NotBefore,
            "notAfter" => CertField::NotAfter,
            "clientCertPem" => CertField::ClientCertPem,
            _ => return None,
        })
    }
}

/// The SNI name for a host as written (`api.internal`, `10.0.0.7`, `[::1]`).
pub(crate) fn server_name(host: &str) -> Result<rustls_pki_types::ServerName<'static>, String> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(h.to_string())
        .map_err(|_| format!("{host:?} is not a DNS name or IP address"))
}
