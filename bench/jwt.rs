//! A JWT authorizer's cost per request. Cache miss: Tollgate's whole check (header, key by
//! kid, signature, issuer, audience, times, scopes) for RS256 and ES256 tokens, beside plain
//! `jsonwebtoken::decode` with the same key and the same claim checks it can do — the
//! baseline a hand-written middleware would use. Cache hit: a shard's token cache finding a
//! token it verified before (hash, compare, expiry), which is what a repeated token costs.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use tollgate::internals::{verify_jwt, KeySet, Rules, TokenCache};

const JWKS: &str = include_str!("../tests/fixtures/jwt/jwks.json");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(alg: Algorithm, kid: &str, pem: &str) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/jwt/{pem}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let claims = serde_json::json!({"iss": "https://idp.example.test", "aud": "petstore",
        "sub": "user-1", "exp": now() + 3600, "iat": now(), "scope": "pets:read pets:write",
        "email": "user-1@example.test", "cognito:groups": ["admins"]});
    jsonwebtoken::encode(&h, &claims, &key).unwrap()
}

fn bench(c: &mut Criterion) {
    let (keys, _) = KeySet::parse(JWKS).unwrap();
    let keys = Arc::new(keys);
    let rules = Rules {
        issuer: "https://idp.example.test".into(),
        audience: vec!["petstore".into()],
        leeway: 60,
    };
    let jwks: serde_json::Value = serde_json::from_str(JWKS).unwrap();
    let jwk = |kid: &str| -> jsonwebtoken::jwk::Jwk {
        let k = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap();
        serde_json::from_value(k.clone()).unwrap()
    };
    let mut g = c.benchmark_group("jwt_miss");
    for (name, alg, kid, pem) in [
        ("rs256", Algorithm::RS256, "rsa-a", "rsa-a.pem"),
        ("es256", Algorithm::ES256, "ec-256", "ec-256.pem"),
    ] {
        let t = token(alg, kid, pem);
        g.bench_function(format!("tollgate_{name}"), |b| {
            b.iter(|| verify_jwt(black_box(t.as_bytes()), &keys, &rules, now()).unwrap())
        });
        let key = DecodingKey::from_jwk(&jwk(kid)).unwrap();
        let mut v = Validation::new(alg);
        v.set_issuer(&["https://idp.example.test"]);
        v.set_audience(&["petstore"]);
        g.bench_function(format!("jsonwebtoken_{name}"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                    black_box(&t),
                    &key,
                    &v,
                )
                .unwrap()
            })
        });
    }
    g.finish();
    let t = token(Algorithm::RS256, "rsa-a", "rsa-a.pem");
    let mut cache = TokenCache::new(8 << 20);
    // 2,000 other tokens, so the table is not trivially small.
    for i in 0..2_000 {
        let v = std::rc::Rc::new(verify_jwt(t.as_bytes(), &keys, &rules, now()).unwrap());
        cache.insert(7, format!("{t}{i}").as_bytes(), keys.clone(), v);
    }
    let v = std::rc::Rc::new(verify_jwt(t.as_bytes(), &keys, &rules, now()).unwrap());
    cache.insert(7, t.as_bytes(), keys.clone(), v);
    c.bench_function("jwt_cache_hit", |b| {
        b.iter(|| {
            let v = cache.get(7, black_box(t.as_bytes()), &keys).unwrap();
            assert!(v.live(now(), 60));
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
