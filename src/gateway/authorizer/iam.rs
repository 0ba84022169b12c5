//! SigV4-signed callers (`authorization = "aws_iam"`): the signature is checked against the
//! access key it names (its secret from the snapshot's table), for service `execute-api` in
//! the configured region, within five minutes of the signer's clock; the body is read first
//! (up to `limits.max_body`) to check the payload hash the client signed, unless it signed
//! `UNSIGNED-PAYLOAD`; then the key's policy must allow `execute-api:Invoke` on the route's
//! ARN. Refusals are 403 with Amazon's messages.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::super::ctx::{RequestCtx, RouteMatch};
use super::super::policy::{head_as_get, route_arn};
use crate::auth::external::{evaluate_action, Outcome};
use crate::auth::sigv4::{self, SigHeader, UNSIGNED_PAYLOAD};
use crate::error::{Error, Kind};
use crate::http::conn::Conn;
use crate::shard::{Shard, ShardSnap};

/// Largest signer clock skew accepted, either way (Amazon's).
const SKEW: u64 = 300;
const SERVICE: &str = "execute-api";

fn deny(message: impl Into<Box<str>>, response_type: &'static str) -> Error {
    let message: Box<str> = message.into();
    let context = format!("aws_iam: {message}");
    Error::downstream(
        Kind::Iam {
            message,
            response_type,
        },
        context,
    )
}

const BAD_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const BAD_TOKEN: &str = "The security token included in the request is invalid.";

/// Checks the signature and the key's policy; the access key id of an allowed caller.
pub(super) async fn authorize(
    shard: &Shard,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    m: RouteMatch,
) -> Result<Arc<str>, Error> {
    let resource = route_arn(ss, ctx, m);
    let alias = head_as_get(ss, ctx, m, &resource);
    allowed(shard, ss, conn, ctx, "Invoke", &resource, alias.as_deref()).await
}

/// Checks the signature, then that the key's policy allows `execute-api:{action}` on
/// `resource` (and its `alias`, see [`head_as_get`]); the access key id of an allowed caller.
pub(crate) async fn allowed(
    shard: &Shard,
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    action: &str,
    resource: &str,
    alias: Option<&str>,
) -> Result<Arc<str>, Error> {
    let Some(iam) = ss.snap.config.aws_iam.as_ref() else {
        // Nothing to check a signature by (`check` warns of it): every caller is refused,
        // signed or not, and the log says why (a signed one was told its token was missing).
        return Err(Error::downstream(
            Kind::AccessDenied("Forbidden"),
            "aws_iam: no [aws_iam] table to check signatures by",
        ));
    };
    // The signature: in the Authorization header, or in the query string (a presigned URL,
    // as browsers open WebSocket connections signed for IAM).
    let presigned = ctx.head.query_bytes().and_then(sigv4::parse_query);
    let auth = ctx.head.header(b"authorization");
    let (h, amz_date, signed_at, expires) = match (presigned, auth) {
        (Some(_), Some(_)) => {
            return Err(deny(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
                "INCOMPLETE_SIGNATURE",
            ))
        }
        (Some(q), None) => {
            let q = q.map_err(|e| deny(e, "INCOMPLETE_SIGNATURE"))?;
            if q.token {
                return Err(deny(BAD_TOKEN, "UNAUTHORIZED"));
            }
            let at = sigv4::parse_amz_date(q.amz_date.as_bytes()).ok_or_else(|| {
                deny(
                    "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
                    "INCOMPLETE_SIGNATURE",
                )
            })?;
            (q.sig, q.amz_date, at, q.expires)
        }
        (None, Some(auth)) => {
            let (h, amz_date, at) = header_signature(ctx, auth)?;
            (h, amz_date, at, None)
        }
        (None, None) => {
            return Err(deny(
                "Missing Authentication Token",
                "MISSING_AUTHENTICATION_TOKEN",
            ))
        }
    };
    let presigned = auth.is_none();
    if ctx.head.header(b"x-amz-security-token").is_some() {
        return Err(deny(BAD_TOKEN, "UNAUTHORIZED"));
    }
    if h.region != iam.region {
        return Err(deny(
            format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                h.region
            ),
            "INVALID_SIGNATURE",
        ));
    }
    if h.service != SERVICE {
        return Err(deny(
            format!("Credential should be scoped to correct service: '{SERVICE}'. "),
            "INVALID_SIGNATURE",
        ));
    }
    if !h.signed_headers.iter().any(|s| s == "host") {
        return Err(deny(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.",
            "INCOMPLETE_SIGNATURE",
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // A presigned URL is good from its date for `X-Amz-Expires` seconds; a signature
    // without one for five minutes either way of the gateway's clock.
    let valid = expires.unwrap_or(SKEW);
    if signed_at + valid < now {
        return Err(deny(
            format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - {})",
                stamp(now.saturating_sub(valid)),
                stamp(now),
                if expires.is_some() {
                    format!("{valid} sec.")
                } else {
                    "5 min.".to_string()
                }
            ),
            "EXPIRED_TOKEN",
        ));
    }
    if signed_at > now + SKEW {
        return Err(deny(
            format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
                stamp(now + SKEW),
                stamp(now)
            ),
            "INVALID_SIGNATURE",
        ));
    }
    if !amz_date.starts_with(&h.date) {
        return Err(deny(
            format!("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.", h.date, &amz_date[..8]),
            "INVALID_SIGNATURE",
        ));
    }
    let key = ss
        .snap
        .access_keys
        .find(&h.access_key)
        .filter(|k| k.enabled)
        .ok_or_else(|| deny(BAD_TOKEN, "UNAUTHORIZED"))?;
    let declared = ctx
        .head
        .header(b"x-amz-content-sha256")
        .map(|v| String::from_utf8_lossy(v).into_owned());
    // The service is fixed and the region the configured one (checked above): the key and
    // the date name the signing key, as long as the region it was derived for is still the
    // configured one (a reload may change it).
    let mut date = [0u8; 8];
    date.copy_from_slice(h.date.as_bytes());
    let cache_key = (key.id.clone(), date);
    let cached = shard
        .sigv4_keys
        .borrow()
        .get(&cache_key)
        .filter(|(region, _)| **region == *h.region)
        .map(|(_, k)| k.clone());
    let signing = match cached {
        Some(k) => k,
        None => {
            let k = sigv4::signing_key(key.secret(), &h.date, &h.region, &h.service);
            let mut keys = shard.sigv4_keys.borrow_mut();
            if keys.len() >= 4096 {
                keys.clear();
            }
            keys.insert(cache_key, (h.region.clone().into(), k.clone()));
            k
        }
    };
    let scope = format!("{}/{}/{}/aws4_request", h.date, h.region, h.service);
    let signs = |ctx: &RequestCtx, payload: &str| -> Result<bool, Error> {
        let head = &ctx.head;
        let header = |name: &str| -> Vec<&[u8]> {
            // The host signed is the one the request is routed by: an absolute-form target's
            // (RFC 9112 3.2.2), not a `Host` line naming another, so that a signature made
            // for one host is not taken by an API served on another.
            if name == "host" {
                return head.host_bytes().into_iter().collect();
            }
            head.headers()
                .filter(|(n, _)| crate::http::name_eq(n, name.as_bytes()))
                .map(|(_, v)| v)
                .collect()
        };
        let canonical = sigv4::canonical_request(
            head.method_text(),
            head.path_bytes(),
            head.query_bytes().unwrap_or_default(),
            presigned.then_some(sigv4::QUERY_SIGNATURE),
            header,
            &h.signed_headers,
            payload,
        )
        .map_err(|e| deny(e, "INVALID_SIGNATURE"))?;
        let sts = sigv4::string_to_sign(&amz_date, &scope, &canonical);
        Ok(sigv4::signature_matches(&signing, &sts, &h.signature))
    };
    let matches = match declared.as_deref() {
        Some(UNSIGNED_PAYLOAD) => signs(ctx, UNSIGNED_PAYLOAD)?,
        // A presigned URL is signed before its body is known: most signers sign
        // UNSIGNED-PAYLOAD, some the body's hash (an empty one's, for a GET).
        None if presigned && signs(ctx, UNSIGNED_PAYLOAD)? => true,
        declared => {
            let actual = body_sha256(ss, conn, ctx).await?;
            if declared.is_some_and(|d| !d.eq_ignore_ascii_case(&actual)) {
                return Err(deny(
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                    "INVALID_SIGNATURE",
                ));
            }
            // Signed as the client sent it.
            signs(ctx, declared.unwrap_or(&actual))?
        }
    };
    if !matches {
        tracing::debug!(access_key = %key.id, "SigV4 signature mismatch");
        return Err(deny(BAD_SIGNATURE, "INVALID_SIGNATURE"));
    }
    let user = format!("arn:aws:iam::000000000000:user/{}", key.name);
    let lower = format!("execute-api:{}", action.to_ascii_lowercase());
    let judged = evaluate_action(&key.policy, &lower, resource);
    let also = alias.map(|a| evaluate_action(&key.policy, &lower, a));
    match super::super::policy::either(judged, also) {
        Outcome::Allow => Ok(key.id.clone()),
        // The resource policy allowed the caller, and the key's policy did not name the
        // resource: admitted (Amazon's Table A, a caller of the API's own account).
        Outcome::ImplicitDeny if ctx.policy_allowed => Ok(key.id.clone()),
        outcome => Err(deny(
            format!(
                "User: {user} is not authorized to perform: execute-api:{action} on resource: {resource}{}",
                if outcome == Outcome::ExplicitDeny { " with an explicit deny" } else { "" }
            ),
            "ACCESS_DENIED",
        )),
    }
}

/// The Authorization header's signature and its signing time (`X-Amz-Date`, else `Date`).
fn header_signature(ctx: &RequestCtx, auth: &[u8]) -> Result<(SigHeader, String, u64), Error> {
    // One signature: with two, the upstream (which gets both) could read the one not checked.
    if ctx
        .head
        .headers()
        .filter(|(n, _)| crate::http::name_eq(n, b"authorization"))
        .nth(1)
        .is_some()
    {
        return Err(deny(
            "The Authorization header must be given once.",
            "INCOMPLETE_SIGNATURE",
        ));
    }
    let h = sigv4::parse_authorization(auth).map_err(|e| deny(e, "INCOMPLETE_SIGNATURE"))?;
    if ctx.head.header(b"x-amz-security-token").is_some() {
        return Err(deny(BAD_TOKEN, "UNAUTHORIZED"));
    }
    // The signing time: `X-Amz-Date`, else an HTTP `Date` (signed in the ISO 8601 basic
    // form, as SigV4 signs either).
    let (amz_date, signed_at) = match (ctx.head.header(b"x-amz-date"), ctx.head.header(b"date")) {
        (Some(d), _) => {
            let at = sigv4::parse_amz_date(d).ok_or_else(|| {
                deny(
                    "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
                    "INCOMPLETE_SIGNATURE",
                )
            })?;
            (String::from_utf8_lossy(d).into_owned(), at)
        }
        (None, Some(d)) => {
            // An HTTP date, or RFC 2822's form of it with a numeric UTC zone (`-0000`, as
            // Python's email.utils.formatdate writes it, which botocore signs with).
            let at = std::str::from_utf8(d)
                .ok()
                .map(|d| {
                    d.strip_suffix(" -0000")
                        .or_else(|| d.strip_suffix(" +0000"))
                        .map_or_else(|| d.to_string(), |d| format!("{d} GMT"))
                })
                .and_then(|d| httpdate::parse_http_date(&d).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .ok_or_else(|| {
                    deny(
                        "Date must be an HTTP date (\"Sun, 06 Nov 1994 08:49:37 GMT\")",
                        "INCOMPLETE_SIGNATURE",
                    )
                })?;
            (stamp(at), at)
        }
        (None, None) => return Err(deny(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            "INCOMPLETE_SIGNATURE",
        )),
    };
    Ok((h, amz_date, signed_at))
}

/// `YYYYMMDDTHHMMSSZ` for a time in seconds.
fn stamp(t: u64) -> String {
    let (days, secs) = (t / 86_400, t % 86_400);
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Reads the whole request body into `conn.buf` (where the integration streams it from
/// afterwards; a chunked one decoded, forwarded with a length) and returns its SHA-256, hex:
/// chunked bodies hash their data, not framing.
async fn body_sha256(
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
) -> Result<String, Error> {
    // Read whole as validation reads it: counted against `limits.body_memory` (503 once the
    // shard's bodies hold it), so requests naming a known key id with a bad signature cannot
    // make the shard hold `max_body` each before the signature is checked.
    let n = crate::gateway::validate::read_body(ss, conn, ctx).await?;
    ctx.head.expect_continue = false;
    Ok(sigv4::hex(&Sha256::digest(&conn.buf[..n])))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stamps() {
        assert_eq!(super::stamp(1_440_938_160), "20150830T123600Z");
        assert_eq!(super::stamp(0), "19700101T000000Z");
        assert_eq!(super::stamp(951_782_400), "20000229T000000Z");
    }
}
