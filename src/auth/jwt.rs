//! JSON Web Tokens for `type = "jwt"` authorizers: the signing keys of an issuer (a JWKS
//! document, parsed by the control plane), and the checks a token passes, in Amazon API
//! Gateway's order: the algorithm and signature with the key its `kid` names, then `iss`,
//! `aud` (or `client_id` when there is no `aud`), `exp`, `nbf` and `iat`. Scopes (`scope` or
//! `scp`) are checked per route by the caller.
//!
//! No I/O here, and no clock: `now` is passed in (seconds since the epoch), so that every
//! check is a plain function. The signature maths is `jsonwebtoken`'s (ring); only asymmetric
//! algorithms are accepted — `none` and the HMAC family are refused before any key is looked
//! at, so a public key can never be used as an HMAC secret.

use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// Longest token looked at (the request head limit bounds it too).
pub(crate) const MAX_TOKEN: usize = 16 << 10;
/// Most keys kept from one JWKS document.
const MAX_KEYS: usize = 100;

/// One usable signing key.
pub struct Key {
    pub kid: Option<String>,
    /// What it may verify: the JWK's `alg`, or every algorithm its type and curve allow.
    pub algs: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({:?}, {:?})", self.kid, self.algs)
    }
}

/// An issuer's signing keys, as one JWKS document gave them.
#[derive(Debug)]
pub struct KeySet {
    pub keys: Vec<Key>,
    /// The document's text, to tell a changed set from a refetched one.
    pub source: Arc<str>,
}

/// A key request from a shard that met a `kid` it does not know (or no keys at all): the
/// control plane refetches the JWKS (at most once per cool-down) and answers with the set it
/// has then.
pub(crate) struct KeyRequest {
    /// The key source (`JwksSource::key`).
    pub source: Arc<str>,
    /// The keys the shard has (from its snapshot): when the control plane has newer ones,
    /// it answers with those and fetches nothing.
    pub had: Option<Arc<KeySet>>,
    pub reply: flume::Sender<Option<Arc<KeySet>>>,
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures here (encryption keys,
    /// symmetric keys, unknown types or curves, malformed members) are skipped and named in
    /// the second value. A well-formed document with no usable key is a set of none: the
    /// provider withdrew its keys, and the ones it published before stop verifying.
    pub fn parse(text: &str) -> Result<(KeySet, Vec<String>), String> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWKS document: no \"keys\" array")?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (i, k) in list.iter().enumerate() {
            if keys.len() == MAX_KEYS {
                skipped.push(format!("keys after the first {MAX_KEYS}"));
                break;
            }
            match one_key(k) {
                Ok(key) => keys.push(key),
                Err(why) => {
                    let kid = k.get("kid").and_then(Value::as_str).unwrap_or("");
                    skipped.push(format!("keys[{i}] (kid {kid:?}): {why}"));
                }
            }
        }
        Ok((
            KeySet {
                keys,
                source: text.into(),
            },
            skipped,
        ))
    }

    /// The key a token's header names. Without a `kid`, a set of one key is used. Keys of
    /// different types may share a `kid` (RFC 7517 4.5): the first of them for the token's
    /// algorithm, else the first of them.
    fn find(&self, kid: Option<&str>, alg: jsonwebtoken::Algorithm) -> Option<&Key> {
        match kid {
            Some(k) => {
                let mut named = self.keys.iter().filter(|key| key.kid.as_deref() == Some(k));
                let first = named.clone().next();
                named.find(|key| key.algs.contains(&alg)).or(first)
            }
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
    }
}

fn one_key(k: &Value) -> Result<Key, &'static str> {
    let s = |name: &str| k.get(name).and_then(Value::as_str);
    if s("use").is_some_and(|u| u != "sig") {
        return Err("not a signing key (use is not \"sig\")");
    }
    let kind_algs: &[Algorithm] = match (s("kty"), s("crv")) {
        (Some("RSA"), _) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        (Some("EC"), Some("P-256")) => &[Algorithm::ES256],
        (Some("EC"), Some("P-384")) => &[Algorithm::ES384],
        (Some("EC"), _) => return Err("unsupported curve (P-256 and P-384 are)"),
        (Some("OKP"), Some("Ed25519")) => &[Algorithm::EdDSA],
        (Some("OKP"), _) => return Err("unsupported curve (Ed25519 is)"),
        (Some("oct"), _) => return Err("symmetric keys are never accepted"),
        _ => return Err("unsupported key type (RSA, EC and OKP are)"),
    };
    let algs = match s("alg") {
        None => kind_algs.to_vec(),
        Some(a) => match parse_alg(a) {
            Some(alg) if kind_algs.contains(&alg) => vec![alg],
            _ => return Err("its alg is not one this key type can verify here"),
        },
    };
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(k.clone()).map_err(|_| "malformed key members")?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "malformed key members")?;
    Ok(Key {
        kid: s("kid").map(str::to_string),
        algs,
        key,
    })
}

/// The asymmetric algorithms accepted; anything else (`none`, `HS256`, unknown) is refused.
fn parse_alg(a: &str) -> Option<Algorithm> {
    Some(match a {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// What a token must say, besides being signed by one of the issuer's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub issuer: String,
    /// Matched against `aud` (any of its values), or `client_id` when there is no `aud`.
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway: u64,
}

/// Why a token was refused: the `error_description` a client sees in `WWW-Authenticate`
/// (Amazon API Gateway's wording where it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The token names a key the set does not have: the set may be stale.
    UnknownKey,
    Invalid(&'static str),
}

/// A token that passed every check, with what later phases and templates read.
#[derive(Debug)]
pub struct Verified {
    pub claims: Map<String, Value>,
    /// `exp`, seconds since the epoch.
    pub exp: u64,
    /// From `scope` (space-separated) or `scp` (a list or a string).
    pub scopes: Vec<String>,
}

impl Verified {
    /// Whether the token is still within `exp` (a cached result is checked again per use).
    pub fn live(&self, now: u64, leeway: u64) -> bool {
        now < self.exp.saturating_add(leeway)
    }

    /// Whether the token carries at least one of `wanted` (none wanted: yes).
    pub(crate) fn has_scope(&self, wanted: &[String]) -> bool {
        wanted.is_empty() || wanted.iter().any(|w| self.scopes.iter().any(|s| s == w))
    }

    /// A claim as text for templates and headers: strings as they are, anything else as JSON.
    pub(crate) fn claim_text(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        match self.claims.get(name)? {
            Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
            Value::Null => None,
            other => Some(std::borrow::Cow::Owned(other.to_string())),
        }
    }
}

/// The token in an `Authorization`-style value: `Bearer ` (any case) is optional.
pub(crate) fn strip_bearer(v: &[u8]) -> &[u8] {
    let v = v.trim_ascii();
    if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
        v[7..].trim_ascii_start()
    } else {
        v
    }
}

fn b64(part: &str) -> Result<Vec<u8>, Refusal> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Refusal::Invalid("the token is malformed"))
}

/// Checks a token against an issuer's keys and the authorizer's rules at time `now`.
pub fn verify(token: &[u8], keys: &KeySet, rules: &Rules, now: u64) -> Result<Verified, Refusal> {
    let malformed = Refusal::Invalid("the token is malformed");
    if token.len() > MAX_TOKEN {
        return Err(malformed);
    }
    let token = std::str::from_utf8(token).map_err(|_| malformed)?;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let header: Value = serde_json::from_slice(&b64(h)?).map_err(|_| malformed)?;
    // RFC 7515 4.1.11: an extension listed as critical that is not understood makes the
    // token invalid; Tollgate understands none.
    if header.get("crit").is_some() {
        return Err(Refusal::Invalid(
            "the token names critical extensions (crit) that are not supported",
        ));
    }
    let alg = header.get("alg").and_then(Value::as_str).ok_or(malformed)?;
    let alg = parse_alg(alg).ok_or(Refusal::Invalid(
        "the token's signing algorithm is not allowed",
    ))?;
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(malformed),
    };
    let key = keys.find(kid, alg).ok_or(Refusal::UnknownKey)?;
    if !key.algs.contains(&alg) {
        return Err(Refusal::Invalid(
            "the token's signing algorithm does not match its key",
        ));
    }
    let message_len = h.len() + 1 + p.len();
    let signed = jsonwebtoken::crypto::verify(sig, &token.as_bytes()[..message_len], &key.key, alg)
        .unwrap_or(false);
    if !signed {
        return Err(Refusal::Invalid("the token has an invalid signature"));
    }
    let claims: Map<String, Value> = serde_json::from_slice(&b64(p)?).map_err(|_| malformed)?;
    check_claims(claims, rules, now)
}

fn check_claims(claims: Map<String, Value>, rules: &Rules, now: u64) -> Result<Verified, Refusal> {
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer.as_str()) {
        return Err(Refusal::Invalid("the token has an invalid issuer"));
    }
    let wanted = |v: &str| rules.audience.iter().any(|a| a == v);
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => wanted(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(wanted),
        Some(_) => false,
        None => claims
            .get("client_id")
            .and_then(Value::as_str)
            .is_some_and(wanted),
    };
    if !audience_ok {
        return Err(Refusal::Invalid("the token does not have a valid audience"));
    }
    let time = |name: &str| -> Result<Option<u64>, Refusal> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(t) if t >= 0.0 && t.is_finite() => Ok(Some(t as u64)),
                _ => Err(Refusal::Invalid("the token has a malformed time claim")),
            },
        }
    };
    let exp = time("exp")?.ok_or(Refusal::Invalid("the token has no expiry (exp)"))?;
    if now >= exp.saturating_add(rules.leeway) {
        return Err(Refusal::Invalid("the token has expired"));
    }
    if time("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(rules.leeway)) {
        return Err(Refusal::Invalid("the token is not valid yet"));
    }
    if time("iat")?.is_some_and(|iat| iat > now.saturating_add(rules.leeway)) {
        return Err(Refusal::Invalid("the token was issued in the future"));
    }
    // The scopes of `scope` and of `scp` together (a space-separated string or a list in
    // either): a token may carry both, and an empty `scope` must not hide `scp`.
    let mut scopes: Vec<String> = Vec::new();
    for claim in ["scope", "scp"] {
        match claims.get(claim) {
            Some(Value::String(s)) => scopes.extend(s.split_ascii_whitespace().map(str::to_string)),
            Some(Value::Array(list)) => {
                scopes.extend(list.iter().filter_map(Value::as_str).map(str::to_string))
            }
            _ => {}
        }
    }
    Ok(Verified {
        claims,
        exp,
        scopes,
    })
}

/// A token a shard verified, kept for its next uses.
pub(crate) struct CachedToken {
    token: Box<[u8]>,
    /// The authorizer (`JwtRt::id`) that verified it, with which keys.
    authorizer: u64,
    keys: Arc<KeySet>,
    pub verified: std::rc::Rc<Verified>,
    weight: u64,
}

#[derive(Clone)]
struct ByWeight;

impl quick_cache::Weighter<u64, std::rc::Rc<CachedToken>> for ByWeight {
    fn weight(&self, _: &u64, v: &std::rc::Rc<CachedToken>) -> u64 {
        v.weight
    }
}

/// A shard's verified tokens, bounded in bytes: a repeated token costs a hash and a compare
/// instead of a signature check. An entry counts only for the authorizer and key set that
/// verified it (new keys or a reload verify again), and only until the token's `exp`.
pub struct TokenCache {
    cache: quick_cache::unsync::Cache<u64, std::rc::Rc<CachedToken>, ByWeight>,
    hasher: ahash::RandomState,
}

impl TokenCache {
    pub fn new(bytes: u64) -> TokenCache {
        TokenCache {
            cache: quick_cache::unsync::Cache::with_weighter(1024, bytes, ByWeight),
            hasher: ahash::RandomState::new(),
        }
    }

    fn hash(&self, authorizer: u64, token: &[u8]) -> u64 {
        self.hasher.hash_one((authorizer, token))
    }

    /// The cached result for `token`, if `authorizer` verified it with `keys`.
    pub fn get(
        &self,
        authorizer: u64,
        token: &[u8],
        keys: &Arc<KeySet>,
    ) -> Option<std::rc::Rc<Verified>> {
        let e = self.cache.get(&self.hash(authorizer, token))?;
        (e.authorizer == authorizer && Arc::ptr_eq(&e.keys, keys) && *e.token == *token)
            .then(|| e.verified.clone())
    }

    pub fn insert(
        &mut self,
        authorizer: u64,
        token: &[u8],
        keys: Arc<KeySet>,
        verified: std::rc::Rc<Verified>,
    ) {
        // The token, its claims decoded (about its size again) and the entry itself.
        let weight = 2 * token.len() as u64 + 256;
        let h = self.hash(authorizer, token);
        self.cache.insert(
            h,
            std::rc::Rc::new(CachedToken {
                token: token.into(),
                authorizer,
                keys,
                verified,
                weight,
            }),
        );
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
