//! Where an `http` integration sends a request: a named `[[upstreams]]` entry
//! (`http://pets/...`, or `https://pets/...` for an upstream with `tls`) or a literal address
//! (`http://127.0.0.1:9001/...`, `https://api.example.com/...` verified against the system's
//! roots), plus the path and query template that follows the authority.

use std::net::SocketAddr;

use super::Upstream;
use crate::syntax::template::{Piece, Template};

/// The authority part of an integration URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Authority {
    /// Index into `Config::upstreams`.
    Named(usize),
    /// A literal address; `host` is what the `Host` header carries (and, over TLS, the name
    /// verified and sent as SNI).
    Addr {
        addr: SocketAddr,
        host: String,
        tls: bool,
    },
}

/// A parsed integration URI, stage variables already substituted.
#[derive(Debug, Clone)]
pub(crate) struct UriTarget {
    pub authority: Authority,
    /// The `Host` header sent upstream (nginx's `$proxy_host`).
    pub host_header: String,
    /// Path and optional query, starting with `/`.
    pub path: Template,
}

/// Splits a stage-resolved URI template into authority and path.
/// An integration path's written part: no spaces, control characters or fragment.
pub(crate) fn path_syntax(s: &str) -> Result<(), String> {
    if s.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err("path contains spaces, control characters or a fragment".into());
    }
    Ok(())
}

/// An address authority as written — `host:port`, `[v6]:port`, or a host alone, which takes
/// the scheme's port — checked without a name lookup (the admin API checks a definition with
/// it, and resolves when a stage serves it); returns it with its port.
pub(crate) fn address_syntax(auth: &str, tls: bool) -> Result<String, String> {
    if auth.contains('@') {
        return Err(format!(
            "host {auth:?} has user information (user:password@), which is not sent: give credentials in the integration's headers"
        ));
    }
    let (host, port) = match auth.strip_prefix('[') {
        Some(v6) => {
            let (addr, rest) = v6
                .split_once(']')
                .ok_or_else(|| format!("host {auth:?}: an IPv6 address ends with ]"))?;
            addr.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("host {auth:?}: [{addr}] is not an IPv6 address"))?;
            match rest {
                "" => (&auth[..addr.len() + 2], None),
                r => match r.strip_prefix(':') {
                    Some(p) => (&auth[..addr.len() + 2], Some(p)),
                    None => return Err(format!("host {auth:?}: expected :port after ]")),
                },
            }
        }
        None => match auth.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        },
    };
    let name_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if !name_ok {
        return Err(format!(
            "host {auth:?} is not a host name or IP address (an IPv6 address goes in brackets)"
        ));
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err(format!("host {auth:?}: port 0 names no server")),
            Ok(n) if p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(format!(
                    "host {auth:?}: port {p:?} is not valid: expected 1 to 65535"
                ))
            }
        },
    };
    if tls {
        crate::syntax::server_name(host.trim_start_matches('[').trim_end_matches(']'))?;
    }
    Ok(format!("{host}:{port}"))
}

pub(crate) fn parse_uri_target(t: &Template, upstreams: &[Upstream]) -> Result<UriTarget, String> {
    let first = match t.pieces.first() {
        Some(Piece::Lit(s)) => s.as_str(),
        _ => return Err("must start with http://host".into()),
    };
    let (rest, tls) = if let Some(r) = first.strip_prefix("http://") {
        (r, false)
    } else if let Some(r) = first.strip_prefix("https://") {
        (r, true)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let end = rest.find(['/', '?']);
    if end.is_none() && t.pieces.len() > 1 {
        return Err("the host part must not contain variables".into());
    }
    let (auth, path_start) = match end {
        Some(e) => (&rest[..e], &rest[e..]),
        None => (rest, ""),
    };
    if auth.is_empty() {
        return Err("has no host".into());
    }
    let authority = if let Some(i) = upstreams.iter().position(|u| u.name == auth) {
        match (tls, upstreams[i].tls.is_some()) {
            (true, false) => {
                return Err(format!(
                    "https://{auth} needs TLS on upstream {auth:?}: give it tls = {{}} (the system's roots) or tls = {{ ca = \"ca.pem\" }}"
                ))
            }
            (false, true) => {
                return Err(format!(
                    "upstream {auth:?} speaks TLS (it has tls): write https://{auth}"
                ))
            }
            _ => Authority::Named(i),
        }
    } else if tls || auth.contains(':') || auth.parse::<std::net::IpAddr>().is_ok() {
        let with_port = address_syntax(auth, tls)?;
        let addr = super::resolve(&with_port)
            .map_err(|e| format!("host {auth:?} does not resolve: {e}"))?;
        Authority::Addr {
            addr,
            host: auth.to_string(),
            tls,
        }
    } else {
        return Err(format!(
            "host {auth:?} is neither an [[upstreams]] name nor an address with a port"
        ));
    };
    let mut pieces = Vec::with_capacity(t.pieces.len());
    if path_start.starts_with('?') || path_start.is_empty() {
        pieces.push(Piece::Lit(format!("/{path_start}")));
    } else {
        pieces.push(Piece::Lit(path_start.to_string()));
    }
    pieces.extend(t.pieces.iter().skip(1).cloned());
    for p in &mut pieces {
        let Piece::Lit(s) = p else { continue };
        path_syntax(s)?;
        // A request line is ASCII (RFC 9112 3.2): `é` goes as `%C3%A9`, as a client writes
        // it (and as a route's `/é` matches it).
        if !s.is_ascii() {
            let mut out = String::with_capacity(s.len() * 2);
            for b in s.bytes() {
                if b.is_ascii() {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            *s = out;
        }
    }
    let path = Template { pieces };
    // An authorizer's or certificate's value in the path is refused when the rendered path
    // has a dot segment (`check_identity_path`): a literal one would refuse every request.
    if path.identity_in_path() && path.literal_dot_segment() {
        return Err("has a `.` or `..` segment in its path beside an authorizer's or client certificate's value: \
                    every request would be refused (400); write the path without it"
            .into());
    }
    Ok(UriTarget {
        authority,
        host_header: auth.to_string(),
        path,
    })
}
