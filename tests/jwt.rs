//! JWT authorizers end to end. Hand-made tokens (signed here with the keys in
//! tests/fixtures/jwt, whose public halves a test server publishes as a JWKS) cover every
//! refusal; one test runs a real OpenID provider (the npm package `oidc-provider`, see
//! tests/oidc) for discovery, tokens by `client_credentials`, key rotation, the refresh
//! rate limit and a provider outage.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.example.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": "petstore", "sub": "user-1", "exp": now() + 600,
           "iat": now() - 5, "scope": "pets:read", "cognito:groups": ["admins", "ops"]})
}

fn sign_with(alg: Algorithm, kid: &str, key_file: &str, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let pem = fixture(key_file);
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        Algorithm::HS256 => EncodingKey::from_secret(&pem),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

fn sign(claims: &Value) -> String {
    sign_with(Algorithm::RS256, "rsa-a", "rsa-a.pem", claims)
}

/// A JWKS server (the fixtures' public keys at /jwks), counting fetches.
fn jwks_server() -> Upstream {
    let jwks = String::from_utf8(fixture("jwks.json")).unwrap();
    Upstream::start(move |_| {
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{jwks}",
                jwks.len()
            )
            .into_bytes(),
        )
    })
}

/// A gateway with a JWT authorizer "users" (keys from `jwks`) as the API's default; `routes`
/// adds to the routes below it.
fn gateway(jwks: SocketAddr, api_extra: &str, cfg: impl FnOnce(Cfg) -> Cfg) -> (Gw, Upstream) {
    let up = Upstream::echo();
    let c = Cfg::new()
        .api_extra(format!(
            "default_authorizer = \"users\"\n{api_extra}\n[[apis.authorizers]]\nname = \"users\"\ntype = \"jwt\"\nissuer = \"{ISSUER}\"\naudience = [\"petstore\", \"web\"]\njwks_uri = \"http://{jwks}/jwks\"\nleeway = \"5s\"\n"
        ))
        .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
        .route(
            "GET /pets",
            "integration = { type = \"http\", uri = \"http://up/pets?g=${context.authorizer.claims.cognito:groups}\", headers = { \"x-user\" = \"${context.authorizer.claims.sub}\" } }",
        )
        .route(
            "POST /pets",
            "authorization_scopes = [\"pets:write\", \"pets:admin\"]\nintegration = { type = \"http\", uri = \"http://up/pets\" }",
        )
        .route(
            "GET /open",
            "authorization = \"none\"\nintegration = { type = \"mock\", body = \"open\" }",
        )
        .route(
            "GET /templated",
            "integration = { type = \"http\", uri = \"http://up/t\", request_templates = { \"application/json\" = '{\"sub\": \"$context.authorizer.claims.sub\", \"body\": $input.json(\"$\")}' } }",
        );
    (Gw::start(&cfg(c).toml()), up)
}

fn call(gw: &Gw, method: &str, path: &str, auth: Option<&str>) -> Resp {
    let auth = auth
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    Client::connect(gw.addr()).request(
        format!("{method} {path} HTTP/1.1\r\nHost: h\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// A valid token passes, with or without `Bearer`; its claims reach the upstream through the
/// integration's templates; routes with `authorization = "none"` need no token.
#[test]
fn valid_tokens_pass_and_their_claims_reach_the_upstream() {
    let keys = jwks_server();
    let (g, up) = gateway(keys.addr, "", |c| c);
    let t = sign(&claims());
    let r = call(&g, "GET", "/pets", Some(&bearer(&t)));
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["headers"]["x-user"], "user-1");
    assert_eq!(
        seen["target"], "/pets?g=%5B%22admins%22%2C%22ops%22%5D",
        "a list claim as JSON, percent-encoded in a URI"
    );
    // No Bearer prefix; other algorithms and key types.
    assert_eq!(call(&g, "GET", "/pets", Some(&t)).status, 200);
    for (alg, kid, file) in [
        (Algorithm::ES256, "ec-256", "ec-256.pem"),
        (Algorithm::ES384, "ec-384", "ec-384.pem"),
        (Algorithm::EdDSA, "ed", "ed.pem"),
        (Algorithm::PS256, "rsa-a", "rsa-a.pem"),
    ] {
        let t = sign_with(alg, kid, file, &claims());
        assert_eq!(
            call(&g, "GET", "/pets", Some(&bearer(&t))).status,
            200,
            "{alg:?}"
        );
    }
    // The same token again (a cache hit on the shard) still passes.
    assert_eq!(call(&g, "GET", "/pets", Some(&bearer(&t))).status, 200);
    let r = call(&g, "GET", "/open", None);
    assert_eq!(r.text(), "open");
    assert_eq!(up.count(), 7);
}

/// Mapping templates read the token's claims as `$context.authorizer.claims`, and a request
/// without a body as `{}`.
#[test]
fn templates_read_the_claims() {
    let keys = jwks_server();
    let (g, _up) = gateway(keys.addr, "", |c| c);
    let r = call(&g, "GET", "/templated", Some(&bearer(&sign(&claims()))));
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Value = serde_json::from_str(r.json()["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, serde_json::json!({"sub": "user-1", "body": {}}));
}

/// Every refusal is 401 `{"message":"Unauthorized"}` with `WWW-Authenticate` saying why,
/// and reaches no upstream.
#[test]
fn refused_tokens_answer_401_and_say_why() {
    let keys = jwks_server();
    let (g, up) = gateway(keys.addr, "", |c| c);
    let r = call(&g, "GET", "/pets", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"message": "Unauthorized"}));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        sign(&c)
    };
    let enc = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
    };
    let cases = [
        (with("exp", json!(now() - 60)), "the token has expired"),
        (
            with("nbf", json!(now() + 600)),
            "the token is not valid yet",
        ),
        (
            with("iat", json!(now() + 600)),
            "the token was issued in the future",
        ),
        (
            with("iss", json!("https://evil.test")),
            "the token has an invalid issuer",
        ),
        (
            with("aud", json!("someone-else")),
            "the token does not have a valid audience",
        ),
        (
            sign_with(Algorithm::RS256, "rsa-a", "rsa-b.pem", &claims()),
            "the token has an invalid signature",
        ),
        (
            format!(
                "{}.{}.",
                enc(json!({"alg": "none", "kid": "rsa-a"})),
                enc(claims())
            ),
            "the token's signing algorithm is not allowed",
        ),
        (
            sign_with(Algorithm::HS256, "rsa-a", "rsa-a.pub.pem", &claims()),
            "the token's signing algorithm is not allowed",
        ),
        (
            sign_with(Algorithm::RS256, "no-such-kid", "rsa-a.pem", &claims()),
            "the token's signing key (kid) is not known",
        ),
        ("not-a-token".to_string(), "the token is malformed"),
        // Well signed, but it says an extension Tollgate does not know is critical.
        (
            {
                let msg = format!(
                    "{}.{}",
                    enc(
                        json!({"alg": "RS256", "kid": "rsa-a", "crit": ["urn:x:unknown"], "urn:x:unknown": true})
                    ),
                    enc(claims())
                );
                let key = EncodingKey::from_rsa_pem(&fixture("rsa-a.pem")).unwrap();
                let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::RS256);
                format!("{msg}.{}", sig.unwrap())
            },
            "the token names critical extensions (crit) that are not supported",
        ),
        // A valid token given twice (or beside another) is never taken on one copy: the
        // upstream, which gets every copy, might read the other. The copies are joined.
        (
            format!("{}\r\nAuthorization: Bearer junk", sign(&claims())),
            "the token is malformed",
        ),
        (
            format!("junk\r\nAuthorization: Bearer {}", sign(&claims())),
            "the token is malformed",
        ),
    ];
    for (token, why) in cases {
        let r = call(&g, "GET", "/pets", Some(&bearer(&token)));
        assert_eq!(r.status, 401, "{why}: {}", r.text());
        assert_eq!(r.json(), json!({"message": "Unauthorized"}));
        assert_eq!(
            r.header("www-authenticate").unwrap_or_default(),
            format!("Bearer scope=\"\" error=\"invalid_token\" error_description=\"{why}\"")
        );
    }
    assert_eq!(up.count(), 0);
}

/// A route's scopes: the token must carry one of them (403 otherwise, naming them).
#[test]
fn routes_with_scopes_want_one_of_them() {
    let keys = jwks_server();
    let (g, up) = gateway(keys.addr, "", |c| c);
    let r = call(&g, "POST", "/pets", Some(&bearer(&sign(&claims()))));
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), json!({"message": "Forbidden"}));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer scope=\"pets:write pets:admin\" error=\"insufficient_scope\" error_description=\"expected scopes: [pets:write pets:admin]\"")
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["pets:admin"]);
    assert_eq!(
        call(&g, "POST", "/pets", Some(&bearer(&sign(&c)))).status,
        200
    );
    assert_eq!(up.count(), 1);
}

/// Phase order: the resource policy before the authorizer, the authorizer before the API key.
#[test]
fn the_policy_runs_before_the_authorizer_and_the_authorizer_before_the_key() {
    let keys = jwks_server();
    let (g, _up) = gateway(
        keys.addr,
        "resource_policy = { deny = [\"127.0.0.1/32\"] }",
        |c| c,
    );
    assert_eq!(call(&g, "GET", "/pets", None).status, 403);
    let (g, _up) = gateway(keys.addr, "", |c| {
        c.route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"k\" }",
        )
    });
    // No token and no key: the authorizer answers first.
    assert_eq!(call(&g, "GET", "/keyed", None).status, 401);
    // A good token and no key: the key phase refuses.
    let r = call(&g, "GET", "/keyed", Some(&bearer(&sign(&claims()))));
    assert_eq!(r.status, 403);
    assert_eq!(r.json(), json!({"message": "Forbidden"}));
}

/// The token may come from a query parameter; a provider that cannot be reached leaves
/// tokens unverifiable (401) and everything else serving.
#[test]
fn query_identity_sources_and_unreachable_keys() {
    let keys = jwks_server();
    let up = Upstream::echo();
    let dead = closed_port();
    let g = Gw::start(
        &Cfg::new()
            .api_extra(format!(
                "[[apis.authorizers]]\nname = \"q\"\ntype = \"jwt\"\nissuer = \"{ISSUER}\"\naudience = [\"petstore\"]\njwks_uri = \"http://{}/jwks\"\nidentity_source = \"$request.querystring.access_token\"\n\n[[apis.authorizers]]\nname = \"dead\"\ntype = \"jwt\"\nissuer = \"{ISSUER}\"\naudience = [\"petstore\"]\njwks_uri = \"http://{dead}/jwks\"\njwks_timeout = \"500ms\"\n",
                keys.addr
            ))
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route("GET /q", "authorizer = \"q\"\nintegration = { type = \"http\", uri = \"http://up/q\" }")
            .route("GET /d", "authorizer = \"dead\"\nintegration = { type = \"http\", uri = \"http://up/d\" }")
            .route("GET /m", "integration = { type = \"mock\", body = \"m\" }")
            .toml(),
    );
    let t = sign(&claims());
    assert_eq!(
        call(&g, "GET", &format!("/q?x=1&access_token={t}"), None).status,
        200
    );
    assert_eq!(call(&g, "GET", "/q?x=1", None).status, 401);
    // Given twice: refused, whichever copy is good.
    assert_eq!(
        call(
            &g,
            "GET",
            &format!("/q?access_token={t}&access_token=x"),
            None
        )
        .status,
        401
    );
    // With `Bearer ` before it, as in a header.
    assert_eq!(
        call(&g, "GET", &format!("/q?access_token=Bearer%20{t}"), None).status,
        200
    );
    // The header does not count for a query source.
    assert_eq!(call(&g, "GET", "/q", Some(&bearer(&t))).status, 401);
    let r = call(&g, "GET", "/d", Some(&bearer(&t)));
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .unwrap()
        .contains("the issuer's signing keys are not available"));
    assert_eq!(get(g.addr(), "/m").text(), "m");
}

/// Bad authorizer settings are refused at load, each naming its key.
#[test]
fn bad_authorizer_settings_are_refused_by_key() {
    let bad = Cfg::new()
        .api_extra(
            "default_authorizer = \"nobody\"\n[[apis.authorizers]]\nname = \"a\"\ntype = \"jwt\"\nissuer = \"idp.example.test\"\n\n[[apis.authorizers]]\nname = \"b\"\ntype = \"request\"\n\n[[apis.authorizers]]\nname = \"c\"\ntype = \"request\"\nuri = \"http://127.0.0.1:9/auth\"\n",
        )
        .route("GET /z", "authorizer = \"c\"\nauthorization_scopes = [\"s\"]\nintegration = { type = \"mock\" }")
        .route("GET /x", "authorizer = \"zzz\"\nauthorization_scopes = [\"a b\"]\nintegration = { type = \"mock\" }")
        .route("GET /y", "authorization = \"none\"\nauthorization_scopes = [\"s\"]\nintegration = { type = \"mock\" }")
        .toml();
    let err = tollgate::Config::parse(&bad, std::path::Path::new("."))
        .expect_err("a bad config was accepted")
        .to_string();
    for want in [
        "apis[\"api\"].authorizers[\"a\"].issuer = \"idp.example.test\" is not valid: it does not start with http:// or https://; expected the issuer's https:// URL",
        "apis[\"api\"].authorizers[\"a\"].audience: is required",
        "apis[\"api\"].authorizers[\"b\"].uri: is required",
        "apis[\"api\"].routes[\"GET /x\"].authorizer = \"zzz\" is not valid: expected the name of one of the API's authorizers (\"a\", \"b\", \"c\")",
        "apis[\"api\"].routes[\"GET /x\"].authorization_scopes = [\"a b\"] is not valid",
        "apis[\"api\"].routes[\"GET /y\"].authorization_scopes: needs a JWT authorizer",
        "apis[\"api\"].routes[\"GET /z\"].authorization_scopes: needs a JWT authorizer",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// The test OpenID provider (tests/oidc/provider.mjs), stopped when dropped.
struct Provider {
    child: Child,
    issuer: String,
    addr: SocketAddr,
}

impl Provider {
    fn start() -> Provider {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc");
        assert!(
            std::path::Path::new(dir).join("node_modules/oidc-provider").exists(),
            "the test OpenID provider is not installed: npm ci --prefix tests/oidc (scripts/test.sh does it)"
        );
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the OpenID provider did not start");
        let v: Value = serde_json::from_str(&line).expect("the provider's ready line");
        let port = v["port"].as_u64().unwrap() as u16;
        Provider {
            child,
            issuer: v["issuer"].as_str().unwrap().to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn post(&self, path: &str, auth: &str, body: &str) -> Resp {
        Client::connect(self.addr).request(
            format!("POST {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", self.addr, body.len())
                .as_bytes(),
        )
    }

    /// An access token by `client_credentials`.
    fn token(&self, scope: &str) -> String {
        let basic =
            base64::engine::general_purpose::STANDARD.encode("tollgate-test:tollgate-test-secret");
        let r = self.post(
            "/token",
            &format!("Authorization: Basic {basic}\r\n"),
            &format!("grant_type=client_credentials&scope={scope}"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_string()
    }

    fn rotate(&self) {
        assert_eq!(self.post("/__rotate", "", "").status, 200);
    }

    fn jwks_fetches(&self) -> u64 {
        get(self.addr, "/__stats").json()["jwks_fetches"]
            .as_u64()
            .unwrap()
    }

    /// Stops it: closes its stdin, and waits for it to exit.
    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Against a real OpenID provider: keys found by discovery; tokens issued by
/// `client_credentials` pass with their scopes; a key rotated at the provider is picked up
/// without a reload (one fetch), and tokens of the retired key are refused; a flood of made-up
/// kids costs no extra fetch within the cool-down; with the provider gone, the last keys keep
/// serving, across a reload too.
#[test]
fn a_real_openid_provider_end_to_end() {
    let mut idp = Provider::start();
    let up = Upstream::echo();
    let dir = TempDir::new();
    let toml = Cfg::new()
        .admin("")
        .api_extra(format!(
            "default_authorizer = \"idp\"\n[[apis.authorizers]]\nname = \"idp\"\ntype = \"jwt\"\nissuer = \"{}\"\naudience = [\"urn:tollgate:petstore\"]\njwks_cooldown = \"1h\"\njwks_timeout = \"5s\"\n",
            idp.issuer
        ))
        .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
        .route(
            "GET /pets",
            "authorization_scopes = [\"pets:read\"]\nintegration = { type = \"http\", uri = \"http://up/pets\", headers = { \"x-client\" = \"${context.authorizer.claims.client_id}\" } }",
        )
        .toml();
    let g = Gw::start_in(dir, &toml);
    let a = idp.token("pets:read");
    let r = call(&g, "GET", "/pets", Some(&bearer(&a)));
    assert_eq!(
        r.status,
        200,
        "{:?} {}",
        r.header("www-authenticate"),
        r.text()
    );
    assert_eq!(r.json()["headers"]["x-client"], "tollgate-test");
    // Without the route's scope: 403.
    let w = idp.token("pets:write");
    assert_eq!(call(&g, "GET", "/pets", Some(&bearer(&w))).status, 403);

    // Rotation: the new kid makes the gateway fetch the keys once, without a reload.
    idp.rotate();
    let before = idp.jwks_fetches();
    let b = idp.token("pets:read");
    let r = call(&g, "GET", "/pets", Some(&bearer(&b)));
    assert_eq!(r.status, 200, "{:?}", r.header("www-authenticate"));
    assert_eq!(idp.jwks_fetches(), before + 1);
    // The retired key is gone from the set: its tokens no longer pass.
    let r = call(&g, "GET", "/pets", Some(&bearer(&a)));
    assert_eq!(r.status, 401);

    // A flood of made-up kids within the cool-down: refused, and no fetch at all.
    let fetched = idp.jwks_fetches();
    for i in 0..40 {
        let mut c = claims();
        c["iss"] = json!(idp.issuer);
        c["aud"] = json!("urn:tollgate:petstore");
        let t = sign_with(Algorithm::RS256, &format!("random-{i}"), "rsa-a.pem", &c);
        assert_eq!(call(&g, "GET", "/pets", Some(&bearer(&t))).status, 401);
    }
    assert_eq!(idp.jwks_fetches(), fetched);

    // The provider goes away: the keys it last gave keep verifying, across a reload (which
    // makes a new authorizer, so the token is verified again rather than found cached).
    idp.stop();
    let r = admin(g.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&g, "GET", "/pets", Some(&bearer(&b)));
    assert_eq!(r.status, 200, "{:?}", r.header("www-authenticate"));
}

/// Keys of different types may share a `kid` (RFC 7517 4.5): a token is checked with the one
/// for its algorithm.
#[test]
fn keys_that_share_a_kid_are_told_apart_by_algorithm() {
    let mut set: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    for k in set["keys"].as_array_mut().unwrap() {
        if k["kid"] == "ec-256" {
            k["kid"] = json!("rsa-a");
        }
    }
    let jwks = set.to_string();
    let keys = Upstream::start(move |_| {
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{jwks}",
                jwks.len()
            )
            .into_bytes(),
        )
    });
    let (g, _up) = gateway(keys.addr, "", |c| c);
    let rsa = sign_with(Algorithm::RS256, "rsa-a", "rsa-a.pem", &claims());
    let ec = sign_with(Algorithm::ES256, "rsa-a", "ec-256.pem", &claims());
    assert_eq!(call(&g, "GET", "/pets", Some(&bearer(&rsa))).status, 200);
    assert_eq!(call(&g, "GET", "/pets", Some(&bearer(&ec))).status, 200);
    // Signed by neither key of that kid: refused.
    let other = sign_with(Algorithm::RS256, "rsa-a", "rsa-b.pem", &claims());
    assert_eq!(call(&g, "GET", "/pets", Some(&bearer(&other))).status, 401);
}

/// Two authorizers whose issuers differ only by a trailing `/` share a discovery URL, not a
/// check: the one the provider's document names works whatever the other says.
#[test]
fn an_issuer_written_with_a_slash_does_not_break_another() {
    let me = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let me2 = me.clone();
    let jwks = String::from_utf8(fixture("jwks.json")).unwrap();
    let idp = Upstream::start(move |s| {
        let base = me2.get().unwrap();
        let body = if s.target.starts_with("/.well-known/") {
            json!({"issuer": base, "jwks_uri": format!("{base}/jwks")}).to_string()
        } else {
            jwks.clone()
        };
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let base = format!("http://{}", idp.addr);
    me.set(base.clone()).unwrap();
    let g = Gw::start(
        &Cfg::new()
            .api_extra(format!(
                "[[apis.authorizers]]\nname = \"slash\"\ntype = \"jwt\"\nissuer = \"{base}/\"\naudience = [\"petstore\"]\n\n[[apis.authorizers]]\nname = \"users\"\ntype = \"jwt\"\nissuer = \"{base}\"\naudience = [\"petstore\"]\n"
            ))
            .route("GET /b", "authorizer = \"slash\"\nintegration = { type = \"mock\", body = \"b\" }")
            .route("GET /a", "authorizer = \"users\"\nintegration = { type = \"mock\", body = \"a\" }")
            .toml(),
    );
    let mut c = claims();
    c["iss"] = json!(base);
    let t = sign(&c);
    let r = call(&g, "GET", "/a", Some(&bearer(&t)));
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    // The one whose issuer the document does not name has no keys.
    let r = call(&g, "GET", "/b", Some(&bearer(&t)));
    assert_eq!(r.status, 401);
}

/// A provider that withdraws its keys (a well-formed set with none) is taken at its word:
/// tokens its old keys signed are refused, not verified by the last keys fetched.
#[test]
fn keys_the_provider_withdraws_stop_verifying() {
    let served = std::sync::Arc::new(std::sync::Mutex::new(
        String::from_utf8(fixture("jwks.json")).unwrap(),
    ));
    let s2 = served.clone();
    let keys = Upstream::start(move |_| {
        let body = s2.lock().unwrap().clone();
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let (g, _up) = gateway(keys.addr, "", |c| c);
    let token = sign(&claims());
    assert_eq!(call(&g, "GET", "/pets", Some(&bearer(&token))).status, 200);
    *served.lock().unwrap() = r#"{"keys": []}"#.to_string();
    // A token naming a key the gateway does not know makes it fetch the set again.
    let unknown = sign_with(Algorithm::RS256, "rotated-out", "rsa-a.pem", &claims());
    assert_eq!(
        call(&g, "GET", "/pets", Some(&bearer(&unknown))).status,
        401
    );
    assert!(eventually(Duration::from_secs(10), || call(
        &g,
        "GET",
        "/pets",
        Some(&bearer(&token))
    )
    .status
        == 401));
    let r = call(&g, "GET", "/pets", Some(&bearer(&token)));
    assert!(
        r.header("www-authenticate").unwrap().contains("kid"),
        "{:?}",
        r.header("www-authenticate")
    );
}
