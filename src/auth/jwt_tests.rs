use super::*;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const JWKS: &str = include_str!("../../tests/fixtures/jwt/jwks.json");

fn keys() -> KeySet {
    let (set, skipped) = KeySet::parse(JWKS).unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    set
}

fn rules() -> Rules {
    Rules {
        issuer: "https://idp.example.test".into(),
        audience: vec!["petstore".into(), "web-client".into()],
        leeway: 5,
    }
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/jwt/{name}.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn claims() -> serde_json::Value {
    json!({"iss": "https://idp.example.test", "aud": "petstore", "sub": "user-1",
           "exp": NOW + 300, "iat": NOW - 10, "scope": "pets:read pets:write"})
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &str, claims: &serde_json::Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    let k = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem(key)).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem(key)).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem(key)).unwrap(),
    };
    jsonwebtoken::encode(&h, claims, &k).unwrap()
}

fn check(token: &str) -> Result<Verified, Refusal> {
    verify(token.as_bytes(), &keys(), &rules(), NOW)
}

fn refused(token: &str) -> &'static str {
    match check(token) {
        Err(Refusal::Invalid(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_allowed_algorithm_verifies_with_its_key() {
    for (alg, kid, key) in [
        (Algorithm::RS256, "rsa-a", "rsa-a"),
        (Algorithm::RS384, "rsa-a", "rsa-a"),
        (Algorithm::RS512, "rsa-a", "rsa-a"),
        (Algorithm::PS256, "rsa-a", "rsa-a"),
        (Algorithm::PS384, "rsa-a", "rsa-a"),
        (Algorithm::PS512, "rsa-a", "rsa-a"),
        (Algorithm::ES256, "ec-256", "ec-256"),
        (Algorithm::ES384, "ec-384", "ec-384"),
        (Algorithm::EdDSA, "ed", "ed"),
    ] {
        let v = check(&sign(alg, Some(kid), key, &claims()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        assert_eq!(v.claim_text("sub").as_deref(), Some("user-1"));
        assert_eq!(v.exp, NOW + 300);
        assert_eq!(v.scopes, ["pets:read", "pets:write"]);
    }
}

#[test]
fn signatures_and_algorithms_are_checked() {
    // Signed by a key not in the set, under a kid that is.
    let t = sign(Algorithm::RS256, Some("rsa-a"), "rsa-b", &claims());
    assert_eq!(refused(&t), "the token has an invalid signature");
    // A changed payload breaks the signature.
    let good = sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&json!({"iss": "https://idp.example.test", "aud": "petstore", "sub": "admin", "exp": NOW + 300})).unwrap());
    parts[1] = &forged;
    assert_eq!(
        refused(&parts.join(".")),
        "the token has an invalid signature"
    );
    // An EC key cannot verify an RSA algorithm, nor P-256 an ES384 token.
    let t = sign(Algorithm::RS256, Some("ec-256"), "rsa-a", &claims());
    assert_eq!(
        refused(&t),
        "the token's signing algorithm does not match its key"
    );
    let t = sign(Algorithm::ES384, Some("ec-256"), "ec-384", &claims());
    assert_eq!(
        refused(&t),
        "the token's signing algorithm does not match its key"
    );
}

#[test]
fn none_and_hmac_with_the_public_key_are_refused() {
    let enc = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let none = format!(
        "{}.{}.",
        enc(json!({"alg": "none", "kid": "rsa-a"})),
        enc(claims())
    );
    assert_eq!(
        refused(&none),
        "the token's signing algorithm is not allowed"
    );
    // The classic confusion: HS256 keyed with the RSA public key's PEM text.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-a".into());
    let public = pem("rsa-a.pub");
    let t = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&public)).unwrap();
    assert_eq!(refused(&t), "the token's signing algorithm is not allowed");
}

#[test]
fn claims_are_checked_in_order() {
    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims();
        c[k] = v;
        sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)
    };
    let without = |k: &str| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(k);
        sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)
    };
    assert_eq!(
        refused(&with("iss", json!("https://evil.test"))),
        "the token has an invalid issuer"
    );
    assert_eq!(refused(&without("iss")), "the token has an invalid issuer");
    assert_eq!(
        refused(&with("aud", json!("other"))),
        "the token does not have a valid audience"
    );
    assert!(check(&with("aud", json!(["other", "web-client"]))).is_ok());
    // client_id counts only where there is no aud (Cognito's access tokens).
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    c["client_id"] = json!("web-client");
    assert!(check(&sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)).is_ok());
    c["aud"] = json!("other");
    assert!(check(&sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)).is_err());
    assert_eq!(
        refused(&with("exp", json!(NOW - 5))),
        "the token has expired"
    );
    assert!(
        check(&with("exp", json!(NOW - 4))).is_ok(),
        "within the leeway"
    );
    assert_eq!(refused(&without("exp")), "the token has no expiry (exp)");
    assert_eq!(
        refused(&with("exp", json!("soon"))),
        "the token has a malformed time claim"
    );
    assert_eq!(
        refused(&with("nbf", json!(NOW + 60))),
        "the token is not valid yet"
    );
    assert!(check(&with("nbf", json!(NOW + 5))).is_ok());
    assert_eq!(
        refused(&with("iat", json!(NOW + 60))),
        "the token was issued in the future"
    );
}

#[test]
fn kids_pick_keys_and_unknown_ones_ask_for_a_refresh() {
    let t = sign(Algorithm::RS256, Some("rotated"), "rsa-a", &claims());
    assert!(matches!(check(&t), Err(Refusal::UnknownKey)));
    // No kid with several keys: unknown; with one key, that key.
    let t = sign(Algorithm::RS256, None, "rsa-a", &claims());
    assert!(matches!(check(&t), Err(Refusal::UnknownKey)));
    let one = r#"{"keys":[JWK]}"#.replace(
        "JWK",
        &serde_json::to_string(
            &serde_json::from_str::<serde_json::Value>(JWKS).unwrap()["keys"][0],
        )
        .unwrap(),
    );
    let (set, _) = KeySet::parse(&one).unwrap();
    assert!(verify(t.as_bytes(), &set, &rules(), NOW).is_ok());
}

#[test]
fn scopes_come_from_scope_or_scp() {
    let mut c = claims();
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["a", "b"]);
    let v = check(&sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)).unwrap();
    assert_eq!(v.scopes, ["a", "b"]);
    assert!(v.has_scope(&["b".into(), "z".into()]));
    assert!(!v.has_scope(&["z".into()]));
    assert!(v.has_scope(&[]));
    assert!(v.live(NOW + 299, 0));
    assert!(!v.live(NOW + 300, 0));
    // Both claims count; an empty `scope` does not hide `scp`.
    c["scope"] = json!("");
    c["scp"] = json!(["pets:write"]);
    let v = check(&sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)).unwrap();
    assert!(v.has_scope(&["pets:write".into()]));
    c["scope"] = json!("pets:read");
    let v = check(&sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &c)).unwrap();
    assert!(v.has_scope(&["pets:read".into()]) && v.has_scope(&["pets:write".into()]));
}

#[test]
fn malformed_tokens_and_documents_never_panic() {
    for t in [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9..",
        "%%%.%%%.%%%",
    ] {
        assert!(check(t).is_err(), "{t:?}");
    }
    assert!(verify(&[0xff, b'.', b'.'], &keys(), &rules(), NOW).is_err());
    assert!(verify(&vec![b'a'; MAX_TOKEN + 1], &keys(), &rules(), NOW).is_err());
    for doc in ["", "{}", "[]", r#"{"keys": 3}"#] {
        assert!(KeySet::parse(doc).is_err(), "{doc}");
    }
    // A document with no usable key is a set of none (the provider withdrew its keys), the
    // unusable ones named.
    for (doc, skipped) in [
        (r#"{"keys": []}"#, 0),
        (r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#, 1),
        (r#"{"keys": [{"kty": "RSA", "n": "!!", "e": 5}]}"#, 1),
        (
            r#"{"keys": [{"kty": "EC", "crv": "P-521", "x": "", "y": ""}]}"#,
            1,
        ),
    ] {
        let (set, why) = KeySet::parse(doc).unwrap();
        assert!(set.keys.is_empty(), "{doc}");
        assert_eq!(why.len(), skipped, "{doc}");
    }
    // One bad key does not spoil the rest.
    let mixed =
        r#"{"keys": [{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}, JWK]}"#
            .replace(
                "JWK",
                &serde_json::to_string(
                    &serde_json::from_str::<serde_json::Value>(JWKS).unwrap()["keys"][1],
                )
                .unwrap(),
            );
    let (set, skipped) = KeySet::parse(&mixed).unwrap();
    assert_eq!(set.keys.len(), 1);
    assert_eq!(skipped.len(), 1);
}

#[test]
fn bearer_prefix_is_optional() {
    assert_eq!(strip_bearer(b"Bearer abc"), b"abc");
    assert_eq!(strip_bearer(b"bearer   abc "), b"abc");
    assert_eq!(strip_bearer(b"abc"), b"abc");
    assert_eq!(strip_bearer(b"Bearer"), b"Bearer");
}

#[test]
fn the_token_cache_answers_only_for_the_same_token_authorizer_and_keys() {
    let keys = Arc::new(keys());
    let t = sign(Algorithm::RS256, Some("rsa-a"), "rsa-a", &claims());
    let v = std::rc::Rc::new(check(&t).unwrap());
    let mut c = TokenCache::new(1 << 20);
    assert!(c.get(1, t.as_bytes(), &keys).is_none());
    c.insert(1, t.as_bytes(), keys.clone(), v.clone());
    assert!(std::rc::Rc::ptr_eq(
        &c.get(1, t.as_bytes(), &keys).unwrap(),
        &v
    ));
    assert!(
        c.get(2, t.as_bytes(), &keys).is_none(),
        "another authorizer"
    );
    let fresh = Arc::new(KeySet::parse(JWKS).unwrap().0);
    assert!(
        c.get(1, t.as_bytes(), &fresh).is_none(),
        "keys fetched again"
    );
    let mut other = t.clone().into_bytes();
    other.pop();
    assert!(c.get(1, &other, &keys).is_none());
    // Bounded in bytes: a flood of distinct tokens keeps it small.
    let mut small = TokenCache::new(64 << 10);
    for i in 0..10_000u32 {
        small.insert(1, format!("{t}{i}").as_bytes(), keys.clone(), v.clone());
    }
    assert!(small.len() < 100, "{}", small.len());
}
