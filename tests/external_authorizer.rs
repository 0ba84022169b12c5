//! External (`request` and `token`) authorizers end to end: a real HTTP authorizer (a test
//! server that decides by the identity it is sent) answering Amazon's simple and IAM-policy
//! formats; the node-wide result cache and its single call per identity; every refusal and
//! failure as Amazon API Gateway answers it.

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "partner-0123456789abcdef0123";

fn ok_json(v: Value) -> Action {
    let body = v.to_string();
    Action::Raw(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// The authorizer: decides by the identity (the token, or the first identity source).
fn authorizer() -> Upstream {
    Upstream::start(|s| {
        let event: Value = serde_json::from_slice(&s.body).unwrap_or_default();
        let id = event["identitySource"][0]
            .as_str()
            .or(event["authorizationToken"].as_str())
            .unwrap_or_default()
            .to_string();
        match id.as_str() {
            "deny" => ok_json(json!({"isAuthorized": false})),
            "policy" => ok_json(
                json!({"principalId": "p-1", "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "arn:aws:execute-api:*:*:api/prod/GET/pets/*"},
                {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": "arn:aws:execute-api:*:*:api/prod/HEAD/pets/8"},
                {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": "arn:aws:execute-api:*:*:api/prod/GET/pets/secret"},
                {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": "arn:aws:execute-api:*:*:api/prod/GET/pets/7"}]},
                "context": {"tenant": "from-policy"}}),
            ),
            "usage" => ok_json(json!({"isAuthorized": true, "usageIdentifierKey": KEY})),
            // Both formats at once: allowed only where both allow.
            "both-deny" => ok_json(
                json!({"isAuthorized": true, "principalId": "u", "policyDocument": {"Statement": [
                {"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": "*"}]}}),
            ),
            "both-elsewhere" => ok_json(
                json!({"isAuthorized": true, "policyDocument": {"Statement": [
                {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "arn:aws:execute-api:*:*:api/prod/POST/pets"}]}}),
            ),
            "twice" => {
                let b = r#"{"isAuthorized": false, "isAuthorized": true}"#;
                Action::Raw(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}", b.len())
                        .into_bytes(),
                )
            }
            "junk" => Action::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nnot json".to_vec()),
            "boom" => respond(500, "oops"),
            "unauth" => respond(401, "no"),
            "slow" => Action::Sleep(Duration::from_secs(3)),
            "coalesce" => {
                // Held long enough that every concurrent request arrives while it is out.
                std::thread::sleep(Duration::from_millis(300));
                ok_json(json!({"isAuthorized": true, "context": {"tenant": "c"}}))
            }
            other => ok_json(json!({"isAuthorized": true, "context": {"tenant": other, "n": 7}})),
        }
    })
}

fn gateway(auth: &Upstream, workers: usize) -> (Gw, Upstream) {
    gateway_with(auth, workers, "")
}

/// [`gateway`] with `api` (keys of the `[[apis]]` table) added.
fn gateway_with(auth: &Upstream, workers: usize, api: &str) -> (Gw, Upstream) {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .workers(workers)
            .api_extra(format!(
                "{api}default_authorizer = \"ext\"\n[[apis.authorizers]]\nname = \"ext\"\ntype = \"request\"\nuri = \"http://authz/check?v=1\"\nidentity_sources = [\"$request.header.x-token\", \"$stageVariables.who\"]\n\n[[apis.authorizers]]\nname = \"impatient\"\ntype = \"request\"\nuri = \"http://authz/check\"\nidentity_sources = [\"$request.header.x-token\"]\nttl = \"0\"\ntimeout = \"200ms\"\n\n[[apis.authorizers]]\nname = \"nocache\"\ntype = \"request\"\nuri = \"http://authz/check\"\nidentity_sources = [\"$request.querystring.t\"]\nttl = \"0\"\n\n[[apis.authorizers]]\nname = \"tok\"\ntype = \"token\"\nuri = \"http://{}/token\"\nidentity_validation_expression = \"Bearer [a-z-]+\"\n",
                auth.addr
            ))
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n\n[[upstreams]]\nname = \"authz\"\ntargets = [\"{}\"]\n",
                up.addr, auth.addr
            ))
            .route(
                "GET /pets/{id}",
                "integration = { type = \"http\", uri = \"http://up/pets/{id}\", headers = { \"x-tenant\" = \"${context.authorizer.tenant}\", \"x-n\" = \"${context.authorizer.n}\", \"x-principal\" = \"${context.authorizer.principalId}\" } }",
            )
            .route(
                "GET /tenants/{id}",
                "integration = { type = \"http\", uri = \"http://up/t/${context.authorizer.tenant}/pets/{id}\" }",
            )
            .route(
                "GET /q/{id}",
                "integration = { type = \"http\", uri = \"http://up/q/{id}?t=${context.authorizer.tenant}\" }",
            )
            .route("POST /pets", "integration = { type = \"http\", uri = \"http://up/pets\" }")
            .route("ANY /pets/secret", "integration = { type = \"http\", uri = \"http://up/pets/secret\" }")
            .route("GET /slow", "authorizer = \"impatient\"\nintegration = { type = \"mock\", body = \"s\" }")
            .route("GET /nocache", "authorizer = \"nocache\"\nintegration = { type = \"mock\", body = \"n\" }")
            .route("GET /tok", "authorizer = \"tok\"\nintegration = { type = \"mock\", body = \"t\" }")
            .route("GET /keyed", "api_key_required = true\nintegration = { type = \"mock\", body = \"k\" }")
            .extra(format!(
                "[[usage_plans]]\nname = \"p\"\nstages = [\"api/prod\"]\n\n[[api_keys]]\nname = \"partner\"\nvalue = \"{KEY}\"\nplan = \"p\"\n"
            ))
            .toml(),
    );
    (g, up)
}

fn call(gw: &Gw, method: &str, path: &str, headers: &str) -> Resp {
    Client::connect(gw.addr()).request(
        format!("{method} {path} HTTP/1.1\r\nHost: api.example.test\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

fn token(t: &str) -> String {
    format!("X-Token: {t}\r\n")
}

/// Extension methods reach the authorizer as sent: `$context.httpMethod` and the event's
/// `http.method` say `PROPFIND`, not a placeholder, and each method is an identity of its own
/// (one method's cached answer is not another's).
#[test]
fn extension_methods_reach_the_authorizer_as_sent() {
    let auth = authorizer();
    let g = Gw::start(
        &Cfg::new()
            .api_extra(format!(
                "[[apis.authorizers]]\nname = \"m\"\ntype = \"request\"\nuri = \"http://{}/check\"\nidentity_sources = [\"$context.httpMethod\"]\nttl = \"300s\"\n",
                auth.addr
            ))
            .route(
                "ANY /dav/{proxy+}",
                "authorizer = \"m\"\nintegration = { type = \"mock\", body = \"d\" }",
            )
            .toml(),
    );
    for m in ["PROPFIND", "MKCOL", "PROPFIND"] {
        assert_eq!(call(&g, m, "/dav/x", "").status, 200, "{m}");
    }
    assert_eq!(auth.count(), 2);
    let events: Vec<Value> = auth
        .requests()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(events[0]["identitySource"], json!(["PROPFIND"]));
    assert_eq!(events[1]["requestContext"]["http"]["method"], "MKCOL");
}

/// An allowed request reaches the upstream with the authorizer's context; the authorizer got
/// Amazon's REQUEST event (payload format 2.0).
#[test]
fn request_authorizers_get_the_event_and_pass_their_context() {
    let auth = authorizer();
    let (g, up) = gateway(&auth, 1);
    let r = call(
        &g,
        "GET",
        "/pets/7?a=1&a=2&b=x%20y",
        &format!(
            "{}Cookie: c1=v1; c2=v2\r\nUser-Agent: ua/1\r\n",
            token("alice")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["headers"]["x-tenant"], "alice");
    assert_eq!(seen["headers"]["x-n"], "7");
    assert_eq!(up.count(), 1);
    let calls = auth.requests();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].target, "/check?v=1");
    assert_eq!(calls[0].header("content-type"), Some("application/json"));
    let e: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(e["version"], "2.0");
    assert_eq!(e["type"], "REQUEST");
    assert_eq!(
        e["routeArn"],
        "arn:aws:execute-api:local:000000000000:api/prod/GET/pets/7"
    );
    assert_eq!(e["identitySource"], json!(["alice", "prod"]));
    assert_eq!(e["routeKey"], "GET /pets/{id}");
    assert_eq!(e["rawPath"], "/pets/7");
    assert_eq!(e["rawQueryString"], "a=1&a=2&b=x%20y");
    assert_eq!(e["queryStringParameters"], json!({"a": "1,2", "b": "x y"}));
    assert_eq!(e["pathParameters"], json!({"id": "7"}));
    assert_eq!(e["cookies"], json!(["c1=v1", "c2=v2"]));
    assert_eq!(e["headers"]["x-token"], "alice");
    assert_eq!(e["stageVariables"]["who"], "prod");
    assert_eq!(e["requestContext"]["http"]["method"], "GET");
    assert_eq!(e["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(e["requestContext"]["http"]["userAgent"], "ua/1");
    assert_eq!(e["requestContext"]["stage"], "prod");
    assert_eq!(e["requestContext"]["domainName"], "api.example.test");
    assert_eq!(e["requestContext"]["http"]["protocol"], "HTTP/1.1");
    // Amazon's format: `12/Mar/2020:19:03:58 +0000`.
    let time = e["requestContext"]["time"].as_str().unwrap();
    let b = time.as_bytes();
    assert!(
        b.len() == 26 && b[2] == b'/' && b[6] == b'/' && b[11] == b':' && time.ends_with(" +0000"),
        "{time}"
    );
}

/// One call per identity per TTL for the whole node (two shards here), concurrent misses
/// included; `ttl = "0"` asks every time.
#[test]
fn answers_are_cached_per_node_and_concurrent_misses_make_one_call() {
    let auth = authorizer();
    let (g, _up) = gateway(&auth, 2);
    for _ in 0..20 {
        assert_eq!(call(&g, "GET", "/pets/1", &token("bob")).status, 200);
    }
    assert_eq!(auth.count(), 1, "one call for 20 requests over two shards");
    assert_eq!(call(&g, "GET", "/pets/1", &token("carol")).status, 200);
    assert_eq!(auth.count(), 2);
    // Eight requests at once for an identity not seen yet: one call.
    let barrier = Arc::new(Barrier::new(8));
    let addr = g.addr();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                b.wait();
                c.request(b"GET /pets/1 HTTP/1.1\r\nHost: h\r\nX-Token: coalesce\r\nConnection: close\r\n\r\n")
                    .status
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(auth.count(), 3);
    for _ in 0..3 {
        assert_eq!(call(&g, "GET", "/nocache?t=dave", "").status, 200);
    }
    assert_eq!(auth.count(), 6, "ttl = 0: every request asks");
}

/// Refusals and failures, as Amazon API Gateway answers them; none reaches the upstream.
#[test]
fn refusals_and_failures_answer_as_amazon_does() {
    let auth = authorizer();
    let (g, up) = gateway(&auth, 1);
    let r = call(&g, "GET", "/pets/1", "");
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"message": "Unauthorized"}))
    );
    // Its identity need not be a bearer token: no challenge names one.
    assert_eq!(r.header("www-authenticate"), None);
    assert_eq!(auth.count(), 0, "no identity: no call");
    let cases = [
        ("deny", "GET", "/pets/1", 403, "Forbidden"),
        (
            "policy",
            "GET",
            "/pets/secret",
            403,
            "User is not authorized to access this resource with an explicit deny",
        ),
        // No spelling of the path escapes the deny.
        (
            "policy",
            "GET",
            "/pets/%73ecret",
            403,
            "User is not authorized to access this resource with an explicit deny",
        ),
        (
            "policy",
            "GET",
            "//pets//secret",
            403,
            "User is not authorized to access this resource with an explicit deny",
        ),
        // Nor a spelling of the method: `get` is refused before any route or authorizer.
        (
            "policy",
            "get",
            "/pets/secret",
            400,
            "Invalid method: methods are case-sensitive",
        ),
        (
            "policy",
            "POST",
            "/pets",
            403,
            "User is not authorized to access this resource",
        ),
        ("unauth", "GET", "/pets/1", 401, "Unauthorized"),
        ("junk", "GET", "/pets/1", 500, "Internal Server Error"),
        ("boom", "GET", "/pets/1", 500, "Internal Server Error"),
        ("slow", "GET", "/slow", 500, "Internal Server Error"),
    ];
    for (id, method, path, status, message) in cases {
        let r = call(&g, method, path, &token(id));
        assert_eq!(
            (r.status, r.json()),
            (status, json!({"message": message})),
            "{id} {method} {path}"
        );
        assert_eq!(r.header("www-authenticate"), None, "{id}");
    }
    assert_eq!(up.count(), 0);
    // The cached policy still allows what it allows, with its context and principal.
    let r = call(&g, "GET", "/pets/9", &token("policy"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-tenant"], "from-policy");
    assert_eq!(r.json()["headers"]["x-principal"], "p-1");
    // A HEAD served by a GET route is judged under both names, HEAD/... and the route's
    // GET/...: allowed by the Allow on `GET/pets/*`, refused by a Deny on `GET/pets/7` or
    // on `HEAD/pets/8` (a HEAD named only as itself passed the first and ran the route's
    // integration; named only GET it passed the second).
    let head = |path: &str| {
        let mut c = Client::connect(g.addr());
        c.send(
            format!("HEAD {path} HTTP/1.1\r\nHost: api.example.test\r\nX-Token: policy\r\n\r\n")
                .as_bytes(),
        );
        c.read_response(true).unwrap().status
    };
    assert_eq!(head("/pets/9"), 200);
    let before = up.count();
    let r = call(&g, "GET", "/pets/7", &token("policy"));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(head("/pets/7"), 403, "HEAD passed the Deny on GET/pets/7");
    assert_eq!(head("/pets/8"), 403, "HEAD passed the Deny on HEAD/pets/8");
    assert_eq!(up.count(), before);
    assert_eq!(call(&g, "GET", "/pets/8", &token("policy")).status, 200);
}

/// Token authorizers: Amazon's TOKEN event; a token that does not match the validation
/// expression is refused without a call.
#[test]
fn token_authorizers_validate_before_calling() {
    let auth = authorizer();
    let (g, _up) = gateway(&auth, 1);
    let r = call(&g, "GET", "/tok", "Authorization: Bearer good-one\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let e: Value = serde_json::from_slice(&auth.requests()[0].body).unwrap();
    assert_eq!(
        e,
        json!({"type": "TOKEN", "authorizationToken": "Bearer good-one", "methodArn": "arn:aws:execute-api:local:000000000000:api/prod/GET/tok"})
    );
    assert_eq!(
        call(&g, "GET", "/tok", "Authorization: Bearer BAD1\r\n").status,
        401
    );
    assert_eq!(call(&g, "GET", "/tok", "").status, 401);
    assert_eq!(auth.count(), 1);
}

/// `api_key_source`, as Amazon's `apiKeySource`: `HEADER` (the default) reads `x-api-key` and
/// ignores an authorizer's `usageIdentifierKey`; `AUTHORIZER` reads only the authorizer's.
#[test]
fn the_api_key_comes_from_the_api_key_source() {
    let auth = authorizer();
    let with_header = |t: &str| format!("{}x-api-key: {KEY}\r\n", token(t));
    let forbidden = (403, json!({"message": "Forbidden"}));
    let (g, _up) = gateway(&auth, 1);
    let r = call(&g, "GET", "/keyed", &token("usage"));
    assert_eq!((r.status, r.json()), forbidden);
    assert_eq!(call(&g, "GET", "/keyed", &with_header("erin")).text(), "k");
    drop(g);
    let (g, _up) = gateway_with(&auth, 1, "api_key_source = \"AUTHORIZER\"\n");
    assert_eq!(call(&g, "GET", "/keyed", &token("usage")).text(), "k");
    // The header names no key here, whatever it holds.
    let r = call(&g, "GET", "/keyed", &with_header("erin"));
    assert_eq!((r.status, r.json()), forbidden);
}

/// `api_key_source = "AUTHORIZER"` on a route that requires a key but has no external
/// authorizer (it would refuse every request), or a source Amazon does not name, is refused
/// at load.
#[test]
fn an_api_key_source_that_cannot_work_is_refused() {
    let toml = Cfg::new()
        .api_extra("api_key_source = \"AUTHORIZER\"\n")
        .route(
            "GET /k",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"k\" }",
        )
        .toml();
    let (ok, text) = check_config(&toml);
    assert!(!ok, "{text}");
    assert!(
        text.contains(r#"apis["api"].routes["GET /k"].api_key_required"#)
            && text.contains("must be an external one"),
        "{text}"
    );
    let toml = Cfg::new()
        .api_extra("api_key_source = \"QUERY\"\n")
        .route("GET /k", "integration = { type = \"mock\", body = \"k\" }")
        .toml();
    let (ok, text) = check_config(&toml);
    assert!(!ok, "{text}");
    assert!(
        text.contains(r#"apis["api"].api_key_source = "QUERY" is not valid: expected "HEADER""#),
        "{text}"
    );
}

/// An authorizer nobody answers at: 500, and the gateway keeps serving.
#[test]
fn an_unreachable_authorizer_is_a_500() {
    let dead = closed_port();
    let g = Gw::start(
        &Cfg::new()
            .api_extra(format!(
                "[[apis.authorizers]]\nname = \"x\"\ntype = \"request\"\nuri = \"http://{dead}/\"\nidentity_sources = [\"$request.header.x-token\"]\n"
            ))
            .stage_extra(
                "access_log = { path = \"a.log\", format = \"$context.status [$context.authorizer.error] [$context.integration.error]\" }",
            )
            .route("GET /a", "authorizer = \"x\"\nintegration = { type = \"mock\", body = \"a\" }")
            .route("GET /b", "integration = { type = \"mock\", body = \"b\" }")
            .toml(),
    );
    let r = call(&g, "GET", "/a", &token("t"));
    assert_eq!(
        (r.status, r.json()),
        (500, json!({"message": "Internal Server Error"}))
    );
    assert_eq!(get(g.addr(), "/b").text(), "b");
    // The access log says the authorizer failed, not the integration (none was called).
    let log = g.dir.0.join("a.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(std::time::Duration::from_secs(10), || read()
            .lines()
            .count()
            == 2),
        "{}",
        read()
    );
    let first = read().lines().next().unwrap().to_string();
    assert!(
        first.starts_with("500 [authorizer \\x22x\\x22: connect to") && first.ends_with("] [-]"),
        "{first}"
    );
}

/// An answer in both formats is allowed only where both allow: an explicit Deny in its
/// policy wins over `isAuthorized: true`, and a policy that does not name the resource does
/// not allow it; an answer naming a member twice (`isAuthorized` false, then true) is no
/// answer (500), not read as its last word.
#[test]
fn answers_in_both_formats_or_with_a_member_twice_do_not_allow() {
    let auth = authorizer();
    let (g, up) = gateway(&auth, 1);
    let r = call(&g, "GET", "/pets/1", &token("both-deny"));
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"message": "User is not authorized to access this resource with an explicit deny"})
        )
    );
    let r = call(&g, "GET", "/pets/1", &token("both-elsewhere"));
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            json!({"message": "User is not authorized to access this resource"})
        )
    );
    // What both allow is allowed.
    assert_eq!(
        call(&g, "POST", "/pets", &token("both-elsewhere")).status,
        200
    );
    let r = call(&g, "GET", "/pets/1", &token("twice"));
    assert_eq!(
        (r.status, r.json()),
        (500, json!({"message": "Internal Server Error"}))
    );
    assert_eq!(up.count(), 1);
}

/// Decides by the stage the event names: a developer's token (`dev-token`) is good on the
/// dev stage only; the answer's context names the stage it was decided for.
fn stage_authorizer() -> Upstream {
    Upstream::start(|s| {
        let e: Value = serde_json::from_slice(&s.body).unwrap_or_default();
        let stage = e["requestContext"]["stage"].as_str().unwrap_or_default();
        let ok = e["identitySource"][0] != "dev-token" || stage == "dev";
        let who = e["stageVariables"]["who"].as_str().unwrap_or_default();
        let arn = e["routeArn"].as_str().unwrap_or_default();
        ok_json(json!({"isAuthorized": ok, "context": {"stage": stage, "who": who, "arn": arn}}))
    })
}

/// The authorizer's settings for [`stage_authorizer`]: cached for 300 s by the token alone.
fn stage_authorizer_table(auth: &Upstream) -> String {
    format!(
        "default_authorizer = \"req\"\n[[apis.authorizers]]\nname = \"req\"\ntype = \"request\"\nuri = \"http://{}/check\"\nidentity_sources = [\"$request.header.x-token\"]\nttl = \"300s\"\n",
        auth.addr
    )
}

/// Each stage keeps its own answers (as Amazon's authorizer cache belongs to a stage): an
/// Allow the authorizer gave for dev is not reused on prod, whose event it never saw, nor
/// is an answer's context.
#[test]
fn each_stage_keeps_its_own_authorizer_answers() {
    let auth = stage_authorizer();
    let g = Gw::start(
        &Cfg::new()
            .api_extra(stage_authorizer_table(&auth))
            .stage("dev", "variables = { who = \"dev\" }")
            .route(
                "GET /data",
                "integration = { type = \"mock\", body = \"${stageVariables.who} ${context.authorizer.stage}\" }",
            )
            .toml(),
    );
    let r = call(&g, "GET", "/dev/data", &token("dev-token"));
    assert_eq!((r.status, r.text()), (200, "dev dev".to_string()));
    let r = call(&g, "GET", "/data", &token("dev-token"));
    assert_eq!(
        (r.status, r.text()),
        (403, r#"{"message":"Forbidden"}"#.to_string()),
        "a dev token on prod"
    );
    assert_eq!(auth.count(), 2);
    // Each stage's answer stays cached for that stage.
    assert_eq!(
        call(&g, "GET", "/dev/data", &token("dev-token")).status,
        200
    );
    assert_eq!(call(&g, "GET", "/data", &token("dev-token")).status, 403);
    assert_eq!(auth.count(), 2);
    assert_eq!(
        call(&g, "GET", "/data", &token("alice")).text(),
        "prod prod"
    );
    assert_eq!(
        call(&g, "GET", "/dev/data", &token("alice")).text(),
        "dev dev"
    );
    assert_eq!(auth.count(), 4);
}

/// A canary (`prod/Canary`) is a stage of its own to the cache, even when it serves its
/// stage's deployment: each request's answer is the one given for the stage that served it
/// (its stage variables). The authorizer hears of the stage the canary runs on, `prod`, as
/// Amazon's does.
#[test]
fn a_canary_keeps_its_own_authorizer_answers() {
    let auth = stage_authorizer();
    let g = Gw::start(
        &Cfg::new()
            .api("file")
            .route("GET /f", "integration = { type = \"mock\", body = \"f\" }")
            .toml(),
    );
    let post = |path: &str, body: Value| admin_with(g.admin(), "POST", path, &body.to_string());
    let def = json!({"name": "shop",
        "default_authorizer": "req",
        "authorizers": [{"name": "req", "type": "request", "uri": format!("http://{}/check", auth.addr),
            "identity_sources": ["$request.header.x-token"], "ttl": "300s"}],
        "routes": [{"route": "GET /data", "integration": {"type": "mock",
            "body": "${stageVariables.who} ${context.authorizer.who} ${context.authorizer.stage} ${context.authorizer.arn}"}}]});
    let r = post("/apis", def);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = post("/apis/shop/deployments", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let d1 = r.json()["id"].as_str().unwrap().to_string();
    let r = post(
        "/apis/shop/stages",
        json!({"name": "prod", "deployment": d1, "variables": {"who": "prod"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = post(
        "/domains",
        json!({"host": "shop.test", "api": "shop", "stage": "prod"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin_with(
        g.admin(),
        "PATCH",
        "/apis/shop/stages/prod",
        &json!({"canary": {"deployment": d1, "percent_traffic": 50.0,
            "stage_variable_overrides": {"who": "canary"}}})
        .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut seen = std::collections::BTreeSet::new();
    let both = eventually(Duration::from_secs(20), || {
        let r = Client::connect(g.addr()).request(
            b"GET /data HTTP/1.1\r\nHost: shop.test\r\nX-Token: alice\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.text();
        assert!(
            body == "prod prod prod arn:aws:execute-api:local:000000000000:shop/prod/GET/data"
                || body
                    == "canary canary prod arn:aws:execute-api:local:000000000000:shop/prod/GET/data",
            "served by one stage, with the answer given for another: {body:?}"
        );
        seen.insert(body);
        seen.len() == 2
    });
    assert!(both, "{seen:?}");
}

/// Concurrent requests for one identity wait for the one call in flight and share its
/// failure: an authorizer that is slow to fail, or that times out, is called once, and
/// nobody waits past its timeout.
#[test]
fn concurrent_requests_share_one_failing_call() {
    let auth = Upstream::start(|s| {
        let e: Value = serde_json::from_slice(&s.body).unwrap_or_default();
        match e["identitySource"][0].as_str().unwrap_or_default() {
            "hang" => Action::Sleep(Duration::from_secs(5)),
            _ => {
                // Long enough that every concurrent request arrives while it is out.
                std::thread::sleep(Duration::from_millis(300));
                respond(500, "oops")
            }
        }
    });
    let g = Gw::start(
        &Cfg::new()
            .workers(2)
            .api_extra(format!(
                "[[apis.authorizers]]\nname = \"slow\"\ntype = \"request\"\nuri = \"http://{}/check\"\nidentity_sources = [\"$request.header.x-token\"]\nttl = \"300s\"\ntimeout = \"1s\"\n",
                auth.addr
            ))
            .route(
                "GET /s",
                "authorizer = \"slow\"\nintegration = { type = \"mock\", body = \"s\" }",
            )
            .toml(),
    );
    for (n, id) in ["fails", "hang"].into_iter().enumerate() {
        let barrier = Arc::new(Barrier::new(6));
        let addr = g.addr();
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let b = barrier.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect(addr);
                    b.wait();
                    let start = std::time::Instant::now();
                    let r = c.request(
                        format!("GET /s HTTP/1.1\r\nHost: h\r\nX-Token: {id}\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    );
                    (r.status, start.elapsed())
                })
            })
            .collect();
        for t in threads {
            let (status, took) = t.join().unwrap();
            assert_eq!(status, 500, "{id}");
            // One timeout (1 s), with room for a slow machine; not two or three of them.
            assert!(took < Duration::from_millis(1900), "{id}: {took:?}");
        }
        assert_eq!(auth.count(), n + 1, "{id}: one call for six requests");
    }
}

/// An authorizer's uri is a literal URL: one with a stage variable in its path was called at
/// `/` (whatever serves it getting every caller's headers); it is refused at load.
#[test]
fn an_authorizer_uri_with_a_stage_variable_is_refused_at_load() {
    let toml = Cfg::new()
        .upstream("[[upstreams]]\nname = \"b\"\ntargets = [\"127.0.0.1:9\"]\n")
        .api_extra(
            "[[apis.authorizers]]\nname = \"req\"\ntype = \"request\"\nuri = \"http://b/auth/${stageVariables.who}\"\nidentity_sources = [\"$request.header.x-token\"]\n",
        )
        .route(
            "GET /a",
            "authorizer = \"req\"\nintegration = { type = \"mock\", body = \"a\" }",
        )
        .toml();
    let (ok, text) = check_config(&toml);
    assert!(!ok, "{text}");
    assert!(
        text.contains(r#"apis["api"].authorizers["req"].uri = "http://b/auth/${stageVariables.who}" is not valid: expected a literal URL"#)
            && text.contains("not substituted"),
        "{text}"
    );
}

/// An authorizer's value pasted into the integration URI's path is percent-encoded, and one
/// that would make a `.` or `..` segment there (which an upstream resolving dot segments would
/// read as another path) is refused as a client's dot segment is: 400, the upstream not
/// called. In the query the same value is only a value.
#[test]
fn an_authorizer_value_that_makes_a_dot_segment_in_the_integration_path_is_refused() {
    let auth = authorizer();
    let (g, up) = gateway(&auth, 1);
    let r = call(&g, "GET", "/tenants/7", &token("acme co"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/t/acme%20co/pets/7");
    let r = call(&g, "GET", "/tenants/7", &token("..."));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/t/.../pets/7");
    let before = up.count();
    for bad in ["..", ".", "a/../admin", "a/./b"] {
        let r = call(&g, "GET", "/tenants/7", &token(bad));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(
            r.json()["message"],
            "Invalid request path: dot segments are not allowed",
            "{bad}"
        );
    }
    assert_eq!(
        up.count(),
        before,
        "no refused request reached the upstream"
    );
    let r = call(&g, "GET", "/q/7", &token(".."));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/q/7?t=..");
}

/// A resource policy beside an external authorizer, as Amazon's authorization workflow runs
/// them: before the authorizer only an explicit deny refuses; after it, either the resource
/// policy or the authorizer's policy allowing admits, and an explicit deny of either refuses
/// (Table A of Amazon's policy evaluation outcomes).
#[test]
fn a_resource_policy_and_an_authorizer_admit_as_amazons_table_a_says() {
    let auth = authorizer();
    let status = |g: &Gw, method: &str, path: &str| call(g, method, path, &token("policy")).status;
    // The policy does not name the caller (127.0.0.1): the authorizer's allow admits.
    let (g, _) = gateway_with(&auth, 1, "resource_policy = { allow = [\"10.0.0.0/8\"] }\n");
    assert_eq!(status(&g, "GET", "/pets/1"), 200);
    assert_eq!(
        status(&g, "GET", "/pets/7"),
        403,
        "the authorizer's explicit deny"
    );
    assert_eq!(status(&g, "POST", "/pets"), 403, "neither allows");
    drop(g);
    // The policy allows the caller: what the authorizer's policy does not name is admitted,
    // what it denies is not.
    let (g, _) = gateway_with(
        &auth,
        1,
        "resource_policy = { allow = [\"127.0.0.0/8\"] }\n",
    );
    assert_eq!(status(&g, "POST", "/pets"), 200);
    assert_eq!(status(&g, "GET", "/pets/7"), 403);
    drop(g);
    // An explicit deny of the caller refuses before the authorizer is asked.
    let (g, _) = gateway_with(
        &auth,
        1,
        "resource_policy = { allow = [\"10.0.0.0/8\"], deny = [\"127.0.0.1\"] }\n",
    );
    let before = auth.count();
    let r = call(&g, "GET", "/pets/1", &token("policy"));
    assert_eq!(r.status, 403);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("with an explicit deny"),
        "{}",
        r.text()
    );
    assert_eq!(auth.count(), before, "the authorizer was not asked");
}
