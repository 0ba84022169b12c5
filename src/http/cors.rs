//! CORS at run time: an API's [`crate::config::Cors`] rendered once per snapshot into the
//! header lines an answer gets, and the preflight answer. Routes of APIs without `cors` never
//! reach this module.

use super::name_eq;
use super::write::Answer;
use crate::config::Cors;

/// An API's CORS configuration, ready to write.
#[derive(Debug)]
pub(crate) struct CorsRt {
    /// `allow_origins` has `*` (answered as `*`: credentials are refused with it at load).
    any: bool,
    /// `https://*`, `http://*`: any origin of that scheme (echoed).
    schemes: Vec<Box<[u8]>>,
    /// Exact origins, lower-case (echoed).
    exact: Vec<Box<[u8]>>,
    /// After `access-control-allow-origin` on every answer: credentials and exposed headers.
    actual: Box<[u8]>,
    /// After it on a preflight: credentials and max-age.
    preflight: Box<[u8]>,
    /// `access-control-allow-methods: ...`, or `None` with `echo_methods` or none configured.
    methods: Option<Box<[u8]>>,
    echo_methods: bool,
    headers: Option<Box<[u8]>>,
    echo_headers: bool,
}

fn line(out: &mut Vec<u8>, name: &str, values: &[String]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(values.join(", ").as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl CorsRt {
    pub(crate) fn new(c: &Cors) -> CorsRt {
        let star = |v: &[String]| v.iter().any(|x| x == "*");
        let mut actual = Vec::new();
        let mut preflight = Vec::new();
        if c.allow_credentials {
            actual.extend_from_slice(b"access-control-allow-credentials: true\r\n");
            preflight.extend_from_slice(b"access-control-allow-credentials: true\r\n");
        }
        if !c.expose_headers.is_empty() {
            line(
                &mut actual,
                "access-control-expose-headers",
                &c.expose_headers,
            );
        }
        if let Some(s) = c.max_age {
            preflight.extend_from_slice(format!("access-control-max-age: {s}\r\n").as_bytes());
        }
        let list = |name: &str, v: &[String]| {
            (!v.is_empty() && !star(v)).then(|| {
                let mut l = Vec::new();
                line(&mut l, name, v);
                l.into_boxed_slice()
            })
        };
        CorsRt {
            any: c.allow_origins.iter().any(|o| o == "*"),
            schemes: c
                .allow_origins
                .iter()
                .filter_map(|o| o.strip_suffix('*'))
                .filter(|p| !p.is_empty())
                .map(|p| p.as_bytes().into())
                .collect(),
            exact: c
                .allow_origins
                .iter()
                .filter(|o| !o.ends_with('*'))
                .map(|o| o.as_bytes().into())
                .collect(),
            actual: actual.into(),
            preflight: preflight.into(),
            methods: list("access-control-allow-methods", &c.allow_methods),
            echo_methods: star(&c.allow_methods),
            headers: list("access-control-allow-headers", &c.allow_headers),
            echo_headers: star(&c.allow_headers),
        }
    }

    /// What `access-control-allow-origin` says to this origin; `None`: not allowed.
    fn allow<'a>(&self, origin: &'a [u8]) -> Option<&'a [u8]> {
        if self.any {
            return Some(b"*");
        }
        let ok = self.exact.iter().any(|o| name_eq(o, origin))
            || self.schemes.iter().any(|s| {
                origin.len() > s.len() && name_eq(&origin[..s.len()], s) && is_origin(origin)
            });
        ok.then_some(origin)
    }

    /// The lines every answer of the API gets: `vary: origin`, and for an allowed origin
    /// `access-control-allow-origin` with credentials and exposed headers.
    pub(crate) fn actual(&self, out: &mut Vec<u8>, origin: Option<&[u8]>) {
        out.extend_from_slice(b"vary: origin\r\n");
        if let Some(o) = origin.and_then(|o| self.allow(o)) {
            out.extend_from_slice(b"access-control-allow-origin: ");
            out.extend_from_slice(o);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&self.actual);
        }
    }

    /// The answer to a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`):
    /// 204 with the allowed origin, methods, headers, max-age and credentials; for an origin
    /// not allowed, 204 without them (the browser then refuses the call).
    pub(crate) fn preflight(&self, origin: &[u8], method: &[u8], headers: Option<&[u8]>) -> Answer {
        let mut h = Vec::with_capacity(256);
        h.extend_from_slice(
            b"vary: origin, access-control-request-method, access-control-request-headers\r\n",
        );
        if let Some(o) = self.allow(origin) {
            h.extend_from_slice(b"access-control-allow-origin: ");
            h.extend_from_slice(o);
            h.extend_from_slice(b"\r\n");
            h.extend_from_slice(&self.preflight);
            if self.echo_methods {
                h.extend_from_slice(b"access-control-allow-methods: ");
                h.extend_from_slice(method);
                h.extend_from_slice(b"\r\n");
            } else if let Some(m) = &self.methods {
                h.extend_from_slice(m);
            }
            match (self.echo_headers, headers) {
                (true, Some(req)) if !req.trim_ascii().is_empty() => {
                    h.extend_from_slice(b"access-control-allow-headers: ");
                    h.extend_from_slice(req.trim_ascii());
                    h.extend_from_slice(b"\r\n");
                }
                (true, _) => {}
                (false, _) => {
                    if let Some(l) = &self.headers {
                        h.extend_from_slice(l);
                    }
                }
            }
        }
        Answer {
            status: 204,
            headers: h,
            content_type: None,
            body: Vec::new(),
            ratelimit: false,
        }
    }
}

/// Whether `o` is a serialized origin (RFC 6454 6.1): `scheme://host` with an optional
/// `:port` (at most 65535), the host of letters, digits, `-` and `.`, or a bracketed IPv6
/// address. A pattern (`https://*`) echoes only such origins, never whatever the client wrote.
fn is_origin(o: &[u8]) -> bool {
    let Some(i) = o.windows(3).position(|w| w == b"://") else {
        return false;
    };
    let (scheme, rest) = (&o[..i], &o[i + 3..]);
    let scheme_ok = !scheme.is_empty()
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let (host, port) = if rest.first() == Some(&b'[') {
        match rest.iter().position(|&b| b == b']') {
            Some(close) => (&rest[..=close], &rest[close + 1..]),
            None => return false,
        }
    } else {
        let c = rest.iter().position(|&b| b == b':').unwrap_or(rest.len());
        (&rest[..c], &rest[c..])
    };
    let host_ok = if host.first() == Some(&b'[') {
        host.len() > 2
            && host[1..host.len() - 1]
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            (1..=5).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
                && digits
                    .iter()
                    .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
                    <= 65535
        }
        _ => false,
    };
    scheme_ok && host_ok && port_ok
}

/// A CORS header the integration answered with, which an API with `cors` replaces.
pub(crate) fn is_cors_header(name: &[u8]) -> bool {
    name.len() > 15 && name_eq(&name[..15], b"access-control-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(origins: &[&str], credentials: bool) -> CorsRt {
        CorsRt::new(&Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["content-type".into()],
            expose_headers: vec!["x-request-id".into()],
            max_age: Some(600),
            allow_credentials: credentials,
        })
    }

    fn text(v: &[u8]) -> String {
        String::from_utf8_lossy(v).into_owned()
    }

    #[test]
    fn actual_answers_echo_allowed_origins_only() {
        let c = rt(&["https://app.example.test", "http://*"], true);
        let mut out = Vec::new();
        c.actual(&mut out, Some(b"https://app.example.test"));
        assert_eq!(
            text(&out),
            "vary: origin\r\naccess-control-allow-origin: https://app.example.test\r\naccess-control-allow-credentials: true\r\naccess-control-expose-headers: x-request-id\r\n"
        );
        out.clear();
        c.actual(&mut out, Some(b"http://anything.test:81"));
        assert!(text(&out).contains("allow-origin: http://anything.test:81\r\n"));
        out.clear();
        c.actual(&mut out, Some(b"https://evil.test"));
        assert_eq!(text(&out), "vary: origin\r\n");
        out.clear();
        c.actual(&mut out, None);
        assert_eq!(text(&out), "vary: origin\r\n");
    }

    #[test]
    fn preflights() {
        let c = rt(&["*"], false);
        let a = c.preflight(b"https://x.test", b"PUT", Some(b"x-a"));
        assert_eq!(a.status, 204);
        let h = text(&a.headers);
        assert!(h.contains("access-control-allow-origin: *\r\n"), "{h}");
        assert!(
            h.contains("access-control-allow-methods: GET, POST\r\n"),
            "{h}"
        );
        assert!(
            h.contains("access-control-allow-headers: content-type\r\n"),
            "{h}"
        );
        assert!(h.contains("access-control-max-age: 600\r\n"), "{h}");
        assert!(!h.contains("credentials"), "{h}");
        let mut any = Cors {
            allow_origins: vec!["https://a.test".into()],
            allow_methods: vec!["*".into()],
            allow_headers: vec!["*".into()],
            ..Cors::default()
        };
        let a = CorsRt::new(&any).preflight(b"https://a.test", b"DELETE", Some(b"x-a, x-b"));
        let h = text(&a.headers);
        assert!(
            h.contains("access-control-allow-methods: DELETE\r\n"),
            "{h}"
        );
        assert!(
            h.contains("access-control-allow-headers: x-a, x-b\r\n"),
            "{h}"
        );
        // A pattern echoes only what is an origin.
        let pat = rt(&["http://*"], true);
        for bad in [
            &b"http://a b"[..],
            b"http://evil.test:99999",
            b"http://x/path",
            b"http://x:",
        ] {
            let a = pat.preflight(bad, b"GET", None);
            assert!(!text(&a.headers).contains("allow-origin"), "{}", text(bad));
        }
        for good in [
            &b"http://a.test"[..],
            b"http://a.test:8080",
            b"http://[::1]:3000",
        ] {
            let a = pat.preflight(good, b"GET", None);
            assert!(text(&a.headers).contains("allow-origin"), "{}", text(good));
        }
        any.allow_origins = vec!["https://b.test".into()];
        let a = CorsRt::new(&any).preflight(b"https://a.test", b"DELETE", None);
        assert!(
            !text(&a.headers).contains("access-control-allow"),
            "not allowed"
        );
    }
}
