//! `cors = { ... }` on an API: the CORS configuration of Amazon API Gateway's HTTP APIs.
//! The gateway answers preflight requests itself and adds the headers to every answer of the
//! API; the rules here are the ones the admin API and OpenAPI import use too.

use super::*;

/// The longest `max_age` (24 hours), as Amazon API Gateway allows.
pub(crate) const MAX_CORS_MAX_AGE: u64 = 86_400;

/// An API's CORS configuration, checked: origins, methods and header names in canonical case.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Cors {
    /// Exact origins (`https://app.example.test`), `*`, `https://*` or `http://*`.
    pub allow_origins: Vec<String>,
    /// Upper-case methods, or `*`.
    pub allow_methods: Vec<String>,
    /// Lower-case header names, or `*`.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    /// Seconds a browser may keep a preflight's answer (`Access-Control-Max-Age`); -1 keeps
    /// none (Amazon's `maxAge` takes -1 to 86400).
    pub max_age: Option<i64>,
    pub allow_credentials: bool,
}

/// What `allow_methods` may list.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*",
];

impl Validator {
    pub(super) fn cors(&mut self, key: &str, c: file::CorsFile) -> Cors {
        let origins: Vec<String> = c
            .allow_origins
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, o)| match origin(&o) {
                Ok(o) => Some(o),
                Err(allowed) => {
                    self.bad(&format!("{key}.allow_origins[{i}]"), &o, allowed);
                    None
                }
            })
            .collect();
        let methods = c
            .allow_methods
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let up = m.trim().to_ascii_uppercase();
                if METHODS.contains(&up.as_str()) {
                    Some(up)
                } else {
                    self.bad(
                        &format!("{key}.allow_methods[{i}]"),
                        &m,
                        "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or \"*\"",
                    );
                    None
                }
            })
            .collect();
        let mut names = |field: &str, v: Option<Vec<String>>| -> Vec<String> {
            v.unwrap_or_default()
                .into_iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    let t = h.trim();
                    if t == "*" || (!t.is_empty() && t.bytes().all(crate::syntax::is_tchar)) {
                        Some(t.to_ascii_lowercase())
                    } else {
                        self.bad(
                            &format!("{key}.{field}[{i}]"),
                            &h,
                            "a header name (letters, digits and !#$%&'*+-.^_`|~) or \"*\"",
                        );
                        None
                    }
                })
                .collect()
        };
        let allow_headers = names("allow_headers", c.allow_headers);
        let expose_headers = names("expose_headers", c.expose_headers);
        let max_age = match c.max_age {
            None => None,
            Some(file::SecondsValue::Seconds(n)) if (-1..=MAX_CORS_MAX_AGE as i64).contains(&n) => {
                Some(n)
            }
            Some(file::SecondsValue::Seconds(n)) => {
                self.bad(
                    &format!("{key}.max_age"),
                    n,
                    "seconds from -1 (no caching) to 86400, or a duration up to \"24h\"",
                );
                None
            }
            Some(file::SecondsValue::Text(s)) => match units::parse_duration(&s) {
                Ok(d) if d.as_secs() <= MAX_CORS_MAX_AGE && d.subsec_nanos() == 0 => {
                    Some(d.as_secs() as i64)
                }
                Ok(_) => {
                    self.bad(
                        &format!("{key}.max_age"),
                        &s,
                        "whole seconds up to 24 hours (\"10m\", \"1h\", 600)",
                    );
                    None
                }
                Err(allowed) => {
                    self.bad(&format!("{key}.max_age"), &s, &allowed);
                    None
                }
            },
        };
        let allow_credentials = c.allow_credentials.unwrap_or(false);
        if allow_credentials {
            for o in origins
                .iter()
                .filter(|o| matches!(o.as_str(), "*" | "http://*" | "https://*"))
            {
                // `https://*` admits every host of its scheme, each echoed with credentials: any
                // such site could read answers made with the user's cookies (worse than `*`,
                // which browsers at least refuse with credentials).
                let why = if o == "*" {
                    "browsers refuse credentials with a wildcard origin"
                } else {
                    "every origin of that scheme would be echoed with credentials, so any such site could read answers made with the user's cookies"
                };
                self.err(
                    &format!("{key}.allow_credentials"),
                    format!("cannot be true while allow_origins has {o:?}: {why}; list the origins allowed (\"https://app.example.test\")"),
                );
            }
            if expose_headers.iter().any(|h| h == "*") {
                self.err(
                    &format!("{key}.allow_credentials"),
                    "cannot be true while expose_headers has \"*\": with credentials browsers read \"*\" as a header's name and expose nothing; list the headers to expose",
                );
            }
        }
        Cors {
            allow_origins: origins,
            allow_methods: methods,
            allow_headers,
            expose_headers,
            max_age,
            allow_credentials,
        }
    }
}

/// An origin as `allow_origins` may list it, lower-cased: `*`, `http://*`, `https://*`, or
/// `scheme://host[:port]` with nothing after it.
fn origin(o: &str) -> Result<String, &'static str> {
    const ALLOWED: &str = "an origin (\"https://app.example.test\", \"http://localhost:3000\"), \"*\", \"https://*\" or \"http://*\"";
    let o = o.trim().to_ascii_lowercase();
    if matches!(o.as_str(), "*" | "http://*" | "https://*") {
        return Ok(o);
    }
    let Some((scheme, rest)) = o.split_once("://") else {
        return Err(ALLOWED);
    };
    let scheme_ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    // An IPv6 literal keeps its colons: the port, if any, follows its `]`.
    let (host, port) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((_, after)) => {
            let host = &rest[..rest.len() - after.len()];
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(ALLOWED),
            }
        }
        None if rest.starts_with('[') => return Err(ALLOWED),
        None => match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
        }
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }
    };
    // A port a browser could send in `Origin`: 1 to 65535.
    let port_ok = port.is_none_or(|p| {
        p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0)
    });
    if !(scheme_ok && host_ok && port_ok) {
        return Err(ALLOWED);
    }
    // A browser leaves a scheme's default port out of `Origin` (RFC 6454 6.1): listed with
    // it, the origin would never match.
    let default = match scheme {
        "https" | "wss" => Some("443"),
        "http" | "ws" => Some("80"),
        _ => None,
    };
    if port.is_some() && port == default {
        return Ok(format!("{scheme}://{host}"));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://App.Example.test").unwrap(),
            "https://app.example.test"
        );
        assert_eq!(
            origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        assert_eq!(origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(origin("http://[::1]").unwrap(), "http://[::1]");
        assert_eq!(
            origin("https://[2001:db8::1]:443").unwrap(),
            "https://[2001:db8::1]"
        );
        assert!(origin("https://a.test:65535").is_ok());
        // A default port is what browsers leave out of `Origin`.
        assert_eq!(origin("https://a.test:443").unwrap(), "https://a.test");
        assert_eq!(origin("http://a.test:80").unwrap(), "http://a.test");
        assert_eq!(origin("http://a.test:443").unwrap(), "http://a.test:443");
        assert!(origin("https://*").is_ok());
        assert!(origin("*").is_ok());
        for bad in [
            "example.test",
            "https://a.test/path",
            "https://",
            "https://a.test:x",
            "https://a.test:99999",
            "https://a.test:65536",
            "https://a.test:0",
            "https://a.test:",
            "https://a.test:+80",
            "http://[::1]x",
            "http://[::1",
            "ftp://*",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod config_tests {
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str = r#"
[[listeners]]
name = "http"
addr = "127.0.0.1:0"
[[apis]]
name = "a"
CORS
  [[apis.stages]]
  name = "p"
  [[apis.routes]]
  route = "GET /m"
  integration = { type = "mock" }
[[domains]]
host = "*"
mappings = [{ base_path = "", api = "a", stage = "p" }]
"#;

    fn parse(cors: &str) -> Result<Config, String> {
        Config::parse(&BASE.replace("CORS", cors), Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_reference_shape_loads() {
        let c = parse(r#"cors = { allow_origins = ["https://App.example.test"], allow_methods = ["get", "POST"], allow_headers = ["Content-Type"], expose_headers = ["x-request-id"], max_age = "10m", allow_credentials = true }"#).unwrap();
        let cors = c.apis[0].cors.as_ref().unwrap();
        assert_eq!(cors.allow_origins, ["https://app.example.test"]);
        assert_eq!(cors.allow_methods, ["GET", "POST"]);
        assert_eq!(cors.allow_headers, ["content-type"]);
        assert_eq!(cors.max_age, Some(600));
        let c = parse("cors = { allow_origins = [\"*\"], max_age = 300 }").unwrap();
        assert_eq!(c.apis[0].cors.as_ref().unwrap().max_age, Some(300));
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        for (cors, want) in [
            (
                r#"cors = { allow_origins = ["*"], allow_credentials = true }"#,
                "apis[\"a\"].cors.allow_credentials: cannot be true while allow_origins has \"*\"",
            ),
            (
                r#"cors = { allow_origins = ["https://a.test", "HTTPS://*"], allow_credentials = true }"#,
                "apis[\"a\"].cors.allow_credentials: cannot be true while allow_origins has \"https://*\": every origin of that scheme",
            ),
            (
                r#"cors = { allow_origins = ["https://a.test"], expose_headers = ["*"], allow_credentials = true }"#,
                "apis[\"a\"].cors.allow_credentials: cannot be true while expose_headers has \"*\"",
            ),
            (
                r#"cors = { allow_origins = ["example.test"] }"#,
                "apis[\"a\"].cors.allow_origins[0] = \"example.test\" is not valid: expected an origin",
            ),
            (
                r#"cors = { allow_methods = ["FETCH"] }"#,
                "apis[\"a\"].cors.allow_methods[0] = \"FETCH\" is not valid",
            ),
            (
                r#"cors = { allow_headers = ["x a"] }"#,
                "apis[\"a\"].cors.allow_headers[0] = \"x a\" is not valid",
            ),
            (r#"cors = { max_age = 86401 }"#, "apis[\"a\"].cors.max_age = 86401 is not valid"),
            (r#"cors = { max_age = "2d" }"#, "apis[\"a\"].cors.max_age"),
            (r#"cors = { allow_origin = ["*"] }"#, "allow_origin"),
        ] {
            let err = parse(cors).expect_err(cors);
            assert!(err.contains(want), "{err}\nlacks: {want}");
        }
    }
}
