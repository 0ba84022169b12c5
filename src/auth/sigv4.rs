//! AWS Signature Version 4, the checking side: the `Authorization` header's parts, the
//! canonical request (method, path and query as the client sent them, re-encoded the way
//! every AWS SDK encodes them; the signed headers, values trimmed and folded; the payload's
//! SHA-256), the string to sign and the signature. The HMACs and hashes are ring's and sha2's;
//! only the composition SigV4 defines is here. No I/O and no clock.

use ring::hmac;
use sha2::{Digest, Sha256};

pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash a client may sign instead of the body's.
pub(crate) const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SigHeader {
    pub access_key: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case, as listed (sorted by the signer).
    pub signed_headers: Vec<String>,
    pub signature: Vec<u8>,
}

/// Parses the header; the error is the message an AWS client sees.
pub(crate) fn parse_authorization(v: &[u8]) -> Result<SigHeader, &'static str> {
    const MALFORMED: &str =
        "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters";
    let v = std::str::from_utf8(v).map_err(|_| MALFORMED)?;
    let rest = v
        .trim()
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or("Only AWS4-HMAC-SHA256 signatures are supported")?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, val) = part.trim().split_once('=').ok_or(MALFORMED)?;
        match k.trim() {
            "Credential" => cred = Some(val.trim()),
            "SignedHeaders" => signed = Some(val.trim()),
            "Signature" => sig = Some(val.trim()),
            _ => return Err(MALFORMED),
        }
    }
    let (Some(cred), Some(signed), Some(sig)) = (cred, signed, sig) else {
        return Err(MALFORMED);
    };
    sig_parts(cred, signed, sig, MALFORMED)
}

/// The credential scope, signed headers and signature, from a header or a query string.
fn sig_parts(
    cred: &str,
    signed: &str,
    sig: &str,
    malformed: &'static str,
) -> Result<SigHeader, &'static str> {
    let mut c = cred.split('/');
    let (Some(access_key), Some(date), Some(region), Some(service), Some("aws4_request"), None) =
        (c.next(), c.next(), c.next(), c.next(), c.next(), c.next())
    else {
        return Err("Credential should be scoped to a valid region, and a valid service, as in KEY/YYYYMMDD/REGION/SERVICE/aws4_request");
    };
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) || access_key.is_empty() {
        return Err("Credential should be scoped to a valid date, as in KEY/YYYYMMDD/REGION/SERVICE/aws4_request");
    }
    let signature = unhex(sig).ok_or(malformed)?;
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    // Lower case, each once, in order (as every signer lists them), and not too many.
    if signed_headers.len() > 64
        || signed_headers
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
        || signed_headers.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(malformed);
    }
    Ok(SigHeader {
        access_key: access_key.into(),
        date: date.into(),
        region: region.into(),
        service: service.into(),
        signed_headers,
        signature,
    })
}

/// The query string's parameter that carries a presigned URL's signature (left out of the
/// canonical query string).
pub(crate) const QUERY_SIGNATURE: &str = "X-Amz-Signature";
/// The longest a presigned URL may be valid (a week, Amazon's limit).
pub(crate) const MAX_EXPIRES: u64 = 604_800;

/// A query string as logs and traces may keep it: the values of a presigned URL's
/// `X-Amz-Signature`, `X-Amz-Credential` and `X-Amz-Security-Token` replaced by `REDACTED`
/// (the URL is a credential until it expires, up to a week). Borrowed when there are none.
pub(crate) fn redact_query<'q>(query: &'q [u8], also: &[Box<str>]) -> std::borrow::Cow<'q, [u8]> {
    const SECRET: [&[u8]; 3] = [
        b"X-Amz-Signature",
        b"X-Amz-Credential",
        b"X-Amz-Security-Token",
    ];
    let secret = |name: &[u8]| {
        let sigv4 = if name.contains(&b'%') {
            SECRET.contains(&percent_decode(name).as_slice())
        } else {
            SECRET.contains(&name)
        };
        // The names an authorizer reads, decoded as it decodes them (`+` a space).
        sigv4
            || (!also.is_empty() && {
                let mut n = Vec::with_capacity(name.len());
                crate::syntax::path::form_decode_into(name, &mut n);
                also.iter().any(|a| a.as_bytes() == n.as_slice())
            })
    };
    let name_of = |p: &[u8]| -> usize { p.iter().position(|&b| b == b'=').unwrap_or(p.len()) };
    // Every SigV4 name starts with X (or its encoding): most queries are passed by one scan.
    let short = if also.is_empty() { 6 } else { 0 };
    if !query
        .split(|&b| b == b'&')
        .any(|p| p.len() > short && secret(&p[..name_of(p)]))
    {
        return std::borrow::Cow::Borrowed(query);
    }
    let mut out = Vec::with_capacity(query.len());
    for (i, p) in query.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        let n = name_of(p);
        if n < p.len() && secret(&p[..n]) {
            out.extend_from_slice(&p[..=n]);
            out.extend_from_slice(b"REDACTED");
        } else {
            out.extend_from_slice(p);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A presigned URL's signature: SigV4 in the query string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct QueryAuth {
    pub sig: SigHeader,
    /// `X-Amz-Date`, as signed.
    pub amz_date: String,
    /// `X-Amz-Expires`, seconds; absent, the signature is good for the usual five minutes.
    pub expires: Option<u64>,
    /// Whether `X-Amz-Security-Token` is there.
    pub token: bool,
}

/// The presigned-URL parameters of a query string: `None` when it carries none of
/// `X-Amz-Algorithm`, `X-Amz-Credential` and `X-Amz-Signature`; the error is the message an
/// AWS client sees.
pub(crate) fn parse_query(query: &[u8]) -> Option<Result<QueryAuth, &'static str>> {
    const MISSING: &str = "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders'. Re-examine the query-string parameters.";
    const NAMES: [&str; 7] = [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Signature",
        "X-Amz-Date",
        "X-Amz-SignedHeaders",
        "X-Amz-Expires",
        "X-Amz-Security-Token",
    ];
    let mut found: [Option<Vec<u8>>; 7] = Default::default();
    let mut twice = false;
    for p in query.split(|&b| b == b'&') {
        let (k, v) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &b""[..]),
        };
        // Cheap test first: every name starts "X-Amz-" (or its encoding).
        if k.len() < 6 {
            continue;
        }
        let k = percent_decode(k);
        if let Some(i) = NAMES.iter().position(|n| n.as_bytes() == k.as_slice()) {
            twice |= found[i].is_some();
            found[i] = Some(percent_decode(v));
        }
    }
    if found[..3].iter().all(Option::is_none) {
        return None;
    }
    let text = |i: usize| -> Option<&str> {
        found[i]
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    Some((|| {
        if twice {
            return Err(MISSING);
        }
        let (Some(alg), Some(cred), Some(sig), Some(date), Some(signed)) =
            (text(0), text(1), text(2), text(3), text(4))
        else {
            return Err(MISSING);
        };
        if alg != ALGORITHM {
            return Err("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"");
        }
        let expires = match found[5].as_deref() {
            None => None,
            Some(e) => {
                let e = std::str::from_utf8(e)
                    .ok()
                    .filter(|e| {
                        !e.is_empty() && e.len() <= 10 && e.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|e| e.parse::<u64>().ok())
                    .ok_or("X-Amz-Expires should be a number")?;
                if e > MAX_EXPIRES {
                    return Err(
                        "X-Amz-Expires must be less than a week (in seconds) that is 604800",
                    );
                }
                Some(e)
            }
        };
        Ok(QueryAuth {
            sig: sig_parts(cred, signed, sig, MISSING)?,
            amz_date: date.to_string(),
            expires,
            token: found[6].is_some(),
        })
    })())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    // Hex digits only (`from_str_radix` would also take a sign).
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// RFC 3986 percent-encoding of all but unreserved characters (and `/` where kept), hex in
/// upper case: SigV4's `UriEncode`.
fn uri_encode(b: &[u8], keep_slash: bool, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &c in b {
        if c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && c == b'/')
        {
            out.push(c as char);
        } else {
            out.push('%');
            out.push(HEX[(c >> 4) as usize] as char);
            out.push(HEX[(c & 15) as usize] as char);
        }
    }
}

fn percent_decode(v: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if let (b'%', Some(h), Some(l)) = (
            v[i],
            v.get(i + 1).copied().and_then(hex),
            v.get(i + 2).copied().and_then(hex),
        ) {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// A header value as SigV4 signs it: trimmed, runs of spaces and tabs folded to one space.
/// `None` for bytes a header value cannot carry here (controls, non-UTF-8).
fn canonical_value(v: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(v).ok()?;
    if s.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return None;
    }
    Some(
        s.split([' ', '\t'])
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The canonical request. `path` and `query` are as they arrived (still percent-encoded);
/// `header(name)` gives every value of a header; `payload_hash` is hex or `UNSIGNED-PAYLOAD`.
/// `skip` names a query parameter left out (a presigned URL's signature).
pub(crate) fn canonical_request<'a>(
    method: &str,
    path: &[u8],
    query: &[u8],
    skip: Option<&str>,
    header: impl Fn(&str) -> Vec<&'a [u8]>,
    signed: &[String],
    payload_hash: &str,
) -> Result<String, &'static str> {
    let mut c = String::with_capacity(256);
    c.push_str(method);
    c.push('\n');
    // Every SDK but S3's signs the path it sent without empty and dot segments, encoded
    // once more (botocore's `remove_dot_segments`, which AWS services match).
    uri_encode(&normalize_path(path), true, &mut c);
    c.push('\n');
    let mut pairs: Vec<(String, String)> = query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            let k = percent_decode(k);
            if skip.is_some_and(|s| s.as_bytes() == k.as_slice()) {
                return None;
            }
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(&k, false, &mut ek);
            uri_encode(&percent_decode(v), false, &mut ev);
            Some((ek, ev))
        })
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            c.push('&');
        }
        c.push_str(k);
        c.push('=');
        c.push_str(v);
    }
    c.push('\n');
    for name in signed {
        let values = header(name);
        if values.is_empty() {
            return Err("a signed header is missing from the request");
        }
        c.push_str(name);
        c.push(':');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                c.push(',');
            }
            c.push_str(
                &canonical_value(v).ok_or("a signed header has a value that cannot be signed")?,
            );
        }
        c.push('\n');
    }
    c.push('\n');
    c.push_str(&signed.join(";"));
    c.push('\n');
    c.push_str(payload_hash);
    Ok(c)
}

/// RFC 3986's dot-segment removal with empty segments dropped too, as AWS signers normalize
/// a path before signing it: `//a/./b/../c/` is `/a/c/`.
fn normalize_path(path: &[u8]) -> Vec<u8> {
    let mut segs: Vec<&[u8]> = Vec::new();
    for s in path.split(|&b| b == b'/') {
        match s {
            b"" | b"." => {}
            b".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    out.push(b'/');
    for (i, s) in segs.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(s);
    }
    if path.len() > 1 && path.ends_with(b"/") && !segs.is_empty() {
        out.push(b'/');
    }
    out
}

pub(crate) fn hex(b: &[u8]) -> String {
    crate::auth::hex(b)
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// `AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hex(sha256(canonical))}`.
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    )
}

/// The signing key for a secret, date (`YYYYMMDD`), region and service.
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k = step(format!("AWS4{secret}").as_bytes(), date);
    let k = step(k.as_ref(), region);
    let k = step(k.as_ref(), service);
    let k = step(k.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k.as_ref())
}

/// Whether `signature` is the string to sign's HMAC under `key` (compared in constant time).
pub(crate) fn signature_matches(key: &hmac::Key, string_to_sign: &str, signature: &[u8]) -> bool {
    hmac::verify(key, string_to_sign.as_bytes(), signature).is_ok()
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the epoch.
pub(crate) fn parse_amz_date(s: &[u8]) -> Option<u64> {
    if s.len() != 16 || s[8] != b'T' || s[15] != b'Z' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u64> {
        let part = &s[r];
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0u64, |n, &b| n * 10 + u64::from(b - b'0')))
    };
    let (y, mo, d) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (h, mi, se) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe;
    Some((days.checked_sub(719_468)?) * 86_400 + h * 3600 + mi * 60 + se)
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
