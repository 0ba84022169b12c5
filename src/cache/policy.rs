//! What may be stored and for how long: `Cache-Control` parsing and the two modes' rules.
//!
//! `gateway` mode follows Amazon API Gateway: a 2xx answer to GET is kept for the configured
//! TTL whatever the origin says, except that `no-store` and `private` are honoured.
//! `http` mode is a shared cache per RFC 9111: storability (section 3), freshness from
//! `s-maxage`, `max-age` or `Expires` and heuristics only where section 4.2.2 allows them,
//! `Age` (section 4.2.3), and validators for revalidation (section 4.3).
//!
//! In both modes an answer with `Set-Cookie` or `Vary: *` is not stored: a shared cache that
//! replays one client's cookie to another is a security bug whatever the RFC permits.

use std::time::{Duration, SystemTime};

use crate::config::CacheMode;
use crate::http::{has_token, name_eq};

/// The directives of one or more `Cache-Control` field lines that matter to a shared cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`.
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// Request directives: `only-if-cached`, `max-stale` (`Some(u64::MAX)` without a value),
    /// `min-fresh`.
    pub only_if_cached: bool,
    pub max_stale: Option<u64>,
    pub min_fresh: Option<u64>,
    /// A directive had an invalid or duplicated argument: treat the answer as stale.
    pub invalid: bool,
}

impl CacheControl {
    pub(crate) fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> CacheControl {
        let mut cc = CacheControl::default();
        for v in values {
            for d in split_list(v) {
                let (name, arg) = match d.iter().position(|&b| b == b'=') {
                    Some(i) => (trim(&d[..i]), Some(unquote(trim(&d[i + 1..])))),
                    None => (d, None),
                };
                let seconds = |cc: &mut CacheControl, slot: Option<u64>| -> Option<u64> {
                    let parsed = arg.and_then(|a| {
                        std::str::from_utf8(a)
                            .ok()
                            .and_then(|s| s.parse::<u64>().ok())
                            // RFC 9111 1.2.2: too large a delta means "very large".
                            .or_else(|| a.iter().all(u8::is_ascii_digit).then_some(u64::MAX))
                    });
                    if parsed.is_none() || slot.is_some() {
                        cc.invalid = true;
                    }
                    parsed.or(slot)
                };
                if name_eq(name, b"no-store") {
                    cc.no_store = true;
                } else if name_eq(name, b"no-cache") {
                    // The qualified form (`no-cache="field"`) is treated as unqualified:
                    // stricter, never wrong.
                    cc.no_cache = true;
                } else if name_eq(name, b"private") {
                    cc.private = true;
                } else if name_eq(name, b"public") {
                    cc.public = true;
                } else if name_eq(name, b"must-revalidate") || name_eq(name, b"proxy-revalidate") {
                    cc.must_revalidate = true;
                } else if name_eq(name, b"max-age") {
                    let prev = cc.max_age;
                    cc.max_age = seconds(&mut cc, prev);
                } else if name_eq(name, b"s-maxage") {
                    let prev = cc.s_maxage;
                    cc.s_maxage = seconds(&mut cc, prev);
                } else if name_eq(name, b"only-if-cached") {
                    cc.only_if_cached = true;
                } else if name_eq(name, b"max-stale") {
                    // Without a value: any staleness is acceptable.
                    let prev = cc.max_stale;
                    cc.max_stale = if arg.is_none() {
                        Some(u64::MAX)
                    } else {
                        seconds(&mut cc, prev)
                    };
                } else if name_eq(name, b"min-fresh") {
                    let prev = cc.min_fresh;
                    cc.min_fresh = seconds(&mut cc, prev);
                }
            }
        }
        cc
    }

    /// What a client's request asks of the cache: a fresh copy (`no-cache`, `max-age=0`).
    pub(crate) fn wants_fresh(&self) -> bool {
        self.no_cache || self.max_age == Some(0)
    }
}

fn trim(mut b: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

fn unquote(b: &[u8]) -> &[u8] {
    if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' {
        &b[1..b.len() - 1]
    } else {
        b
    }
}

/// Splits a comma-separated list, ignoring commas inside quoted strings.
pub(crate) fn split_list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut quoted = false;
    let mut i = 0;
    std::iter::from_fn(move || loop {
        if start > v.len() {
            return None;
        }
        if i == v.len() || (v[i] == b',' && !quoted) {
            let item = trim(&v[start..i]);
            i += 1;
            start = i;
            if !item.is_empty() {
                return Some(item);
            }
            continue;
        }
        if v[i] == b'"' {
            quoted = !quoted;
        }
        i += 1;
    })
}

/// Statuses a cache may give a heuristic lifetime to (RFC 9110 15.1).
pub(crate) fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The upstream answer's facts a storage decision needs.
pub(crate) struct Answer<'a, H: Iterator<Item = (&'a [u8], &'a [u8])> + Clone> {
    pub status: u16,
    pub headers: H,
}

/// Why an answer was not stored (counted, and logged at debug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStored {
    Status,
    NoStore,
    Private,
    SetCookie,
    VaryStar,
    Authorization,
    NoFreshness,
}

/// How long a stored answer stays fresh, and what it needs once stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetime {
    /// `None`: the configured TTL (gateway mode).
    pub fresh_for: Option<Duration>,
    /// The answer's age when it arrived (RFC 9111 4.2.3 `corrected_initial_age`), seconds.
    pub initial_age: u64,
    /// Every use needs revalidation (`no-cache`).
    pub no_cache: bool,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub must_revalidate: bool,
}

fn header<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>>(mut h: I, name: &[u8]) -> Option<&'a [u8]> {
    h.find(|(n, _)| name_eq(n, name)).map(|(_, v)| v)
}

fn date(v: Option<&[u8]>) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(v?).ok()?.trim()).ok()
}

/// Decides whether an answer to a GET may be stored, and for how long it is fresh.
/// `authorized`: the request carried `Authorization`. `ttl`: the configured TTL, which in
/// http mode caps the origin's lifetime. `now`: when the answer arrived (wall clock).
pub(crate) fn storable<'a, H: Iterator<Item = (&'a [u8], &'a [u8])> + Clone>(
    mode: CacheMode,
    a: Answer<'a, H>,
    authorized: bool,
    ttl: Duration,
    now: SystemTime,
) -> Result<Lifetime, NotStored> {
    let cc = CacheControl::parse(
        a.headers
            .clone()
            .filter(|(n, _)| name_eq(n, b"cache-control"))
            .map(|(_, v)| v),
    );
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if header(a.headers.clone(), b"set-cookie").is_some() {
        return Err(NotStored::SetCookie);
    }
    if a.headers
        .clone()
        .any(|(n, v)| name_eq(n, b"vary") && has_token(v, b"*"))
    {
        return Err(NotStored::VaryStar);
    }
    match mode {
        CacheMode::Gateway => {
            if !(200..300).contains(&a.status) || a.status == 206 {
                return Err(NotStored::Status);
            }
            Ok(Lifetime {
                fresh_for: None,
                initial_age: 0,
                no_cache: false,
                must_revalidate: false,
            })
        }
        CacheMode::Http => {
            // Final statuses this cache understands; 206 (ranges) and 304 are not stored.
            if a.status < 200 || a.status == 206 || a.status == 304 || a.status > 599 {
                return Err(NotStored::Status);
            }
            // RFC 9111 3.5: answers to requests with Authorization only with explicit leave.
            if authorized && !(cc.must_revalidate || cc.public || cc.s_maxage.is_some()) {
                return Err(NotStored::Authorization);
            }
            let date_v = date(header(a.headers.clone(), b"date"));
            let expires = header(a.headers.clone(), b"expires");
            let last_modified = date(header(a.headers.clone(), b"last-modified"));
            let has_validator = header(a.headers.clone(), b"etag").is_some()
                || header(a.headers.clone(), b"last-modified").is_some();
            let base = date_v.unwrap_or(now);
            let explicit: Option<Duration> = if cc.invalid {
                Some(Duration::ZERO)
            } else if let Some(s) = cc.s_maxage.or(cc.max_age) {
                Some(Duration::from_secs(s.min(u32::MAX as u64)))
            } else {
                // An invalid Expires (e.g. "0") means already expired (RFC 9111 5.3).
                expires.map(|e| {
                    date(Some(e))
                        .and_then(|e| e.duration_since(base).ok())
                        .unwrap_or(Duration::ZERO)
                })
            };
            let lifetime = match explicit {
                Some(d) => d,
                None if heuristically_cacheable(a.status) || cc.public => {
                    // RFC 9111 4.2.2: a tenth of the time since Last-Modified, as is typical.
                    last_modified
                        .and_then(|lm| base.duration_since(lm).ok())
                        .map(|d| (d / 10).min(Duration::from_secs(86_400)))
                        .unwrap_or(Duration::ZERO)
                }
                None => return Err(NotStored::NoFreshness),
            };
            if lifetime.is_zero() && !has_validator && !cc.no_cache {
                return Err(NotStored::NoFreshness);
            }
            // A list (`Age: 7200, 0`) counts by its first member (RFC 9111 5.1); past 2^31
            // seconds, or too long a number to read, it is 2^31 (RFC 9111 1.2.2).
            const MAX_DELTA: u64 = 1 << 31;
            let age_header = header(a.headers.clone(), b"age")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|s| s.split(',').next())
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .map(|s| s.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA)))
                .unwrap_or(0);
            let apparent = date_v
                .and_then(|d| now.duration_since(d).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Ok(Lifetime {
                fresh_for: Some(lifetime.min(ttl)),
                initial_age: age_header.max(apparent),
                no_cache: cc.no_cache,
                must_revalidate: cc.must_revalidate || cc.s_maxage.is_some(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs<'a>(
        list: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone {
        list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    fn http(status: u16, list: &[(&str, &str)]) -> Result<Lifetime, NotStored> {
        storable(
            CacheMode::Http,
            Answer {
                status,
                headers: hs(list),
            },
            false,
            Duration::from_secs(3600),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        )
    }

    const DATE: &str = "Mon, 12 Jan 1970 13:46:40 GMT"; // 1_000_000 s

    #[test]
    fn cache_control_directives() {
        let cc = CacheControl::parse(
            [
                &b"public, max-age=60"[..],
                b"s-maxage=\"30\", no-cache=\"x,y\"",
            ]
            .into_iter(),
        );
        assert!(cc.public && cc.no_cache && !cc.invalid);
        assert_eq!((cc.max_age, cc.s_maxage), (Some(60), Some(30)));
        let dup = CacheControl::parse([&b"max-age=5, max-age=7"[..]].into_iter());
        assert!(dup.invalid);
        let bad = CacheControl::parse([&b"max-age=abc"[..]].into_iter());
        assert!(bad.invalid);
        assert!(CacheControl::parse([&b"max-age=0"[..]].into_iter()).wants_fresh());
    }

    #[test]
    fn http_freshness_order() {
        let l = http(200, &[("cache-control", "max-age=60, s-maxage=10")]).unwrap();
        assert_eq!(l.fresh_for, Some(Duration::from_secs(10)));
        assert!(l.must_revalidate, "s-maxage implies proxy-revalidate");
        let l = http(
            200,
            &[("date", DATE), ("expires", "Mon, 12 Jan 1970 13:48:20 GMT")],
        )
        .unwrap();
        assert_eq!(l.fresh_for, Some(Duration::from_secs(100)));
        // Invalid Expires: stale at once; with no validator, not stored.
        assert_eq!(http(200, &[("expires", "0")]), Err(NotStored::NoFreshness));
        // The configured TTL caps the origin's lifetime.
        let l = http(200, &[("cache-control", "max-age=999999")]).unwrap();
        assert_eq!(l.fresh_for, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn http_heuristics_only_where_allowed() {
        let lm = "Mon, 12 Jan 1970 08:13:20 GMT"; // 20_000 s before Date
        let l = http(200, &[("date", DATE), ("last-modified", lm)]).unwrap();
        assert_eq!(l.fresh_for, Some(Duration::from_secs(2_000)));
        // 302 is not heuristically cacheable.
        assert_eq!(
            http(302, &[("date", DATE), ("last-modified", lm)]),
            Err(NotStored::NoFreshness)
        );
        // Nothing at all: not stored.
        assert_eq!(http(200, &[]), Err(NotStored::NoFreshness));
        // No freshness but a validator: stored, to be revalidated.
        let l = http(200, &[("etag", "\"v1\"")]).unwrap();
        assert_eq!(l.fresh_for, Some(Duration::ZERO));
    }

    #[test]
    fn http_refusals() {
        assert_eq!(
            http(200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            http(200, &[("cache-control", "private, max-age=60")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            http(
                200,
                &[("cache-control", "max-age=60"), ("vary", "accept, *")]
            ),
            Err(NotStored::VaryStar)
        );
        assert_eq!(
            http(
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]
            ),
            Err(NotStored::SetCookie)
        );
        assert_eq!(
            http(206, &[("cache-control", "max-age=60")]),
            Err(NotStored::Status)
        );
        let with_auth = |cc: &str| {
            storable(
                CacheMode::Http,
                Answer {
                    status: 200,
                    headers: hs(&[("cache-control", cc)]),
                },
                true,
                Duration::from_secs(3600),
                SystemTime::now(),
            )
        };
        assert_eq!(with_auth("max-age=60"), Err(NotStored::Authorization));
        assert!(with_auth("max-age=60, public").is_ok());
    }

    #[test]
    fn age_is_the_larger_of_header_and_apparent() {
        let l = http(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("date", "Mon, 12 Jan 1970 13:45:00 GMT"),
                ("age", "30"),
            ],
        )
        .unwrap();
        assert_eq!(l.initial_age, 100);
        // A list counts by its first member: this answer arrives already stale.
        let l = http(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("date", DATE),
                ("age", "7200, 0"),
            ],
        )
        .unwrap();
        assert_eq!(l.initial_age, 7200);
        // Past 2^31 seconds, or too long to read, an age is 2^31 (RFC 9111 1.2.2): an answer
        // that old is stale, never fresh again by wrapping around.
        for age in [
            "43709551615",
            "18446744073709551615",
            "99999999999999999999999",
        ] {
            let l = http(
                200,
                &[
                    ("cache-control", "max-age=600"),
                    ("date", DATE),
                    ("age", age),
                ],
            )
            .unwrap();
            assert_eq!(l.initial_age, 1 << 31, "{age}");
        }
    }

    #[test]
    fn gateway_mode_keeps_2xx_whatever_the_origin_says() {
        let g = |status, list: &[(&str, &str)]| {
            storable(
                CacheMode::Gateway,
                Answer {
                    status,
                    headers: hs(list),
                },
                true,
                Duration::from_secs(60),
                SystemTime::now(),
            )
        };
        assert!(g(200, &[("cache-control", "max-age=0")]).is_ok());
        assert_eq!(g(500, &[]), Err(NotStored::Status));
        assert_eq!(
            g(200, &[("cache-control", "no-store")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            g(200, &[("cache-control", "private")]),
            Err(NotStored::Private)
        );
    }
}
