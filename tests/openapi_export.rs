//! OpenAPI export: an API as a stage serves it, in OpenAPI 3.0 and Swagger 2.0, with and
//! without Amazon API Gateway's extensions; every document passes openapi-spec-validator, and
//! `tollgate openapi` (offline, from the file) prints what the admin API answers. Export,
//! import and export again give the same document, and the copy answers clients as the
//! original does.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

/// openapi-spec-validator's verdict on a document ("" when valid).
fn validate(doc: &serde_json::Value) -> String {
    let mut p = Command::new("python3")
        .args([
            "-c",
            "import json,sys\nfrom openapi_spec_validator import validate\ntry:\n    validate(json.load(sys.stdin))\nexcept Exception as e:\n    print(e)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with openapi-spec-validator (scripts/test.sh installs it)");
    p.stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = p.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn config() -> String {
    let dead = closed_port();
    Cfg::new()
        .api("shop")
        .api_extra(format!(
            "[[apis.authorizers]]\nname = \"users\"\ntype = \"jwt\"\nissuer = \"https://idp.example.test\"\naudience = [\"shop\"]\njwks_uri = \"http://{dead}/jwks\"\nidentity_source = \"$request.querystring.tok\"\n\n[[apis.authorizers]]\nname = \"partners\"\ntype = \"request\"\nuri = \"http://{dead}/authorize\"\nidentity_sources = [\"$request.header.x-partner\"]\nttl = \"60s\"\n"
        ))
        .route(
            "GET /pets/{petId}",
            format!("integration = {{ type = \"http\", uri = \"http://{dead}/pets/{{petId}}\", timeout = \"5s\", headers = {{ \"x-tier\" = \"gold\" }} }}"),
        )
        .route(
            "POST /pets",
            format!("api_key_required = true\nauthorizer = \"users\"\nauthorization_scopes = [\"pets:write\"]\nintegration = {{ type = \"http\", uri = \"http://{dead}/pets\" }}"),
        )
        .route(
            "ANY /files/{proxy+}",
            format!("authorizer = \"partners\"\nintegration = {{ type = \"http\", uri = \"http://{dead}/files/{{proxy}}\" }}"),
        )
        .route(
            "GET /health",
            "integration = { type = \"mock\", status = 203, body = '{\"ok\":true}', headers = { \"content-type\" = \"application/json\" } }",
        )
        .route("$default", "integration = { type = \"mock\", status = 404, body = \"none\" }")
        .extra("[[usage_plans]]\nname = \"p\"\nstages = [\"shop/prod\"]\n")
        .toml()
}

#[test]
fn exports_are_valid_and_carry_the_integrations() {
    let g = Gw::start(&config());
    let export = |q: &str| {
        let r = admin(
            g.admin(),
            "GET",
            &format!("/apis/shop/stages/prod/export{q}"),
            Some(TOKEN),
        );
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.json()
    };
    let oas = export("?type=oas30&extensions=apigateway");
    assert_eq!(validate(&oas), "", "{oas:#}");
    assert_eq!(oas["openapi"], "3.0.1");
    assert_eq!(oas["info"]["title"], "shop");
    let get = &oas["paths"]["/pets/{petId}"]["get"];
    let i = &get["x-amazon-apigateway-integration"];
    assert_eq!(i["type"], "http_proxy");
    assert_eq!(i["httpMethod"], "GET");
    assert!(i["uri"].as_str().unwrap().ends_with("/pets/{petId}"), "{i}");
    assert_eq!(i["timeoutInMillis"], 5000);
    assert_eq!(
        i["requestParameters"]["integration.request.path.petId"],
        "method.request.path.petId"
    );
    assert_eq!(
        i["requestParameters"]["integration.request.header.x-tier"],
        "'gold'"
    );
    assert_eq!(get["parameters"][0]["name"], "petId");
    let post = &oas["paths"]["/pets"]["post"];
    assert_eq!(
        post["security"],
        serde_json::json!([{"api_key": [], "users": ["pets:write"]}])
    );
    assert_eq!(oas["x-amazon-apigateway-api-key-source"], "HEADER");
    let users = &oas["components"]["securitySchemes"]["users"];
    assert_eq!(users["x-amazon-apigateway-authorizer"]["type"], "jwt");
    assert_eq!(
        users["x-amazon-apigateway-authorizer"]["jwtConfiguration"]["issuer"],
        "https://idp.example.test"
    );
    let partners = &oas["components"]["securitySchemes"]["partners"];
    assert_eq!(partners["x-amazon-apigateway-authtype"], "custom");
    assert_eq!(
        partners["x-amazon-apigateway-authorizer"]["identitySource"],
        "$request.header.x-partner"
    );
    assert_eq!(
        partners["x-amazon-apigateway-authorizer"]["authorizerResultTtlInSeconds"],
        60
    );
    let any = &oas["paths"]["/files/{proxy+}"]["x-amazon-apigateway-any-method"];
    assert_eq!(any["x-amazon-apigateway-integration"]["httpMethod"], "ANY");
    let mock = &oas["paths"]["/health"]["get"]["x-amazon-apigateway-integration"];
    assert_eq!(mock["type"], "mock");
    assert_eq!(mock["responses"]["default"]["statusCode"], "203");
    assert_eq!(
        mock["responses"]["default"]["responseTemplates"]["application/json"],
        "{\"ok\":true}"
    );
    assert!(
        oas["paths"]["x-tollgate-default-route"].is_object(),
        "{oas:#}"
    );

    // Without extensions: a clean document, ANY spelled out, no $default.
    let clean = export("");
    assert_eq!(validate(&clean), "", "{clean:#}");
    assert!(
        !clean.to_string().contains("x-amazon-apigateway"),
        "{clean}"
    );
    assert!(!clean.to_string().contains("x-tollgate"), "{clean}");
    assert!(clean["paths"]["/files/{proxy+}"]["delete"].is_object());
    assert_eq!(
        clean["components"]["securitySchemes"]["users"]["type"],
        "openIdConnect"
    );

    for q in ["?type=swagger", "?type=swagger&extensions=apigateway"] {
        let sw = export(q);
        assert_eq!(validate(&sw), "", "{q}: {sw:#}");
        assert_eq!(sw["swagger"], "2.0");
        // Swagger has no OpenID Connect: the token is where the authorizer reads it.
        let users = &sw["securityDefinitions"]["users"];
        assert_eq!(
            (&users["name"], &users["in"]),
            (&json!("tok"), &json!("query")),
            "{users}"
        );
        assert_eq!(
            sw["paths"]["/pets/{petId}"]["get"]["parameters"][0]["type"],
            "string"
        );
    }

    // Refusals.
    let r = admin(
        g.admin(),
        "GET",
        "/apis/shop/stages/nope/export",
        Some(TOKEN),
    );
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no stage \\\"nope\\\""), "{}", r.text());
    let r = admin(
        g.admin(),
        "GET",
        "/apis/shop/stages/prod/export?type=raml",
        Some(TOKEN),
    );
    assert_eq!(r.status, 400);

    // The same document offline, from the file.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["openapi", "--config"])
        .arg(&g.path)
        .args(["--api", "shop", "--extensions"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline, oas);
}

/// A mock body that is text, not a template: `$5` is no reference, `##` no comment, `#set` no
/// directive.
const LITERAL: &str = r###"{"price":"$5","note":"## kept","set":"#set($x = 1)"}"###;

/// An API that uses what Amazon's extensions alone cannot say as Tollgate means it: a
/// resource policy, a literal mock body with `$` and `#` beside a mock whose answer is a
/// template reading its body, mock statuses other than 200, a mock without a content type,
/// an authorizer's timeout, a JWT authorizer's key location, models that refer to each other,
/// a gateway response, response parameters.
fn round_trip_api(authz: SocketAddr, up: SocketAddr) -> Value {
    let tag = json!({"type": "object", "properties": {"n": {"type": "string"}}});
    json!({
        "name": "orig",
        "resource_policy": {"allow": ["127.0.0.0/8", "192.0.2.0/24"], "deny": ["192.0.2.66/32"]},
        "authorizers": [
            // Named as the API key's scheme is by default: the export names that one otherwise.
            {"name": "api_key", "type": "request", "uri": format!("http://{authz}/check"),
             "identity_sources": ["$request.header.x-key"], "ttl": "0s", "timeout": "250ms"},
            {"name": "users", "type": "jwt", "issuer": "https://idp.example.test", "audience": ["shop"],
             "jwks_uri": format!("http://{}/jwks", closed_port()), "leeway": "5s"},
        ],
        "gateway_responses": {"DEFAULT_4XX": {"headers": {"x-gw": "tollgate"}, "body": "{\"denied\":true}"}},
        "models": [
            {"name": "Tag", "schema": tag},
            {"name": "Pet", "schema": {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "tag": {"$ref": "#/definitions/Tag"}},
                "definitions": {"Tag": tag}}},
            // Definitions of its own, which no model copies: the document's schemas too.
            {"name": "Owner", "schema": {"type": "object", "required": ["kind"],
                "properties": {"kind": {"$ref": "#/definitions/kind"}, "n": {"$ref": "#/definitions/a~1b"}},
                "definitions": {"kind": {"type": "string", "enum": ["a", "b"]}, "a/b": {"type": "integer"}}}},
        ],
        "routes": [
            {"route": "GET /literal", "integration": {"type": "mock", "status": 201, "body": LITERAL,
                "headers": {"content-type": "application/json"}}},
            {"route": "GET /plain", "integration": {"type": "mock", "body": "ok"}},
            // A literal with a character a path writes encoded: exported so, and read back.
            {"route": "GET /a%20b", "integration": {"type": "mock", "body": "space"}},
            // The first response whose pattern matches is chosen: 503 is 5\d{2}'s, though
            // 50[34] sorts first as a key of the document's `responses`.
            {"route": "GET /picked", "integration": {"type": "mock",
                "request_templates": {"application/json": "{\"statusCode\": 503}"},
                "responses": [
                    {"selection_pattern": "5\\d{2}", "status": 502, "templates": {"application/json": "{\"which\":\"5xx\"}"}},
                    {"selection_pattern": "50[34]", "status": 503, "templates": {"application/json": "{\"which\":\"503/504\"}"}},
                    {"selection_pattern": "5\\d{2}", "status": 504},
                    {"status": 200}]}},
            {"route": "GET /template", "integration": {"type": "mock", "status": 202, "body": "{\"n\":7}",
                "responses": [{"status": 203, "templates": {"application/json": "#set($x = 5)\n{\"x\": $x, \"n\": $input.json('$.n')} ## a comment"}}]}},
            {"route": "GET /guarded", "authorizer": "api_key", "integration": {"type": "mock", "body": "in"}},
            {"route": "GET /keyed", "api_key_required": true, "integration": {"type": "mock", "body": "k"}},
            {"route": "GET /jwt", "authorizer": "users", "integration": {"type": "mock", "body": "j"}},
            {"route": "POST /pets", "request_validator": "body", "request_models": {"application/json": "Pet"},
                "integration": {"type": "mock", "body": "stored"}},
            {"route": "POST /owners", "request_validator": "body", "request_models": {"application/json": "Owner"},
                "integration": {"type": "mock", "body": "owned"}},
            // Models Swagger's one body cannot all say.
            {"route": "POST /mixed", "request_validator": "body",
                "request_models": {"application/json": "Pet", "text/plain": "Tag", "$default": "Pet"},
                "integration": {"type": "mock", "body": "mixed"}},
            {"route": "GET /up/{id}", "integration": {"type": "http", "uri": format!("http://{up}/x/{{id}}"), "timeout": "3s"},
                "response_parameters": {"200": {"overwrite:header.x-a": "v"}}},
            // What Amazon keeps in the stage's route settings: a cache key part (lost, one
            // caller's cached answer went to another), a route kept out of the cache, a limit.
            {"route": "GET /me/{id}", "cache": {"ttl": "60s", "key": ["header.x-user", "query.v", "path.id"]},
                "integration": {"type": "mock", "body": "me"}},
            {"route": "GET /nocache", "cache": {"enabled": false}, "integration": {"type": "mock", "body": "nc"}},
            {"route": "GET /thr", "throttle": {"rate": 1, "burst": 1}, "integration": {"type": "mock", "body": "t"}},
        ],
    })
}

/// Deploys `api` to stage "live" and maps `host` to it.
fn serve(g: &Gw, api: &str, host: &str) {
    let r = admin_with(
        g.admin(),
        "POST",
        &format!("/apis/{api}/deployments"),
        &json!({"stage": "live"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let m = json!({"host": host, "api": api, "stage": "live"});
    let r = admin_with(g.admin(), "POST", "/domains", &m.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn export_import_export_gives_the_same_document_and_the_same_answers() {
    // The authorizer allows everyone, one of them after a second: past the authorizer's
    // timeout, so that the gateway answers 500 without waiting for it.
    let authz = Upstream::start(|s| {
        let event: Value = serde_json::from_slice(&s.body).unwrap_or_default();
        if event["identitySource"][0] == "slow" {
            std::thread::sleep(Duration::from_secs(1));
        }
        let body = r#"{"isAuthorized":true}"#;
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let up = Upstream::echo();
    // Behind a trusted proxy (the test), X-Forwarded-For is the caller the policy judges.
    let g = Gw::start(
        &Cfg::new()
            .server("trusted_proxies = [\"127.0.0.0/8\"]")
            .toml(),
    );
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis",
        &round_trip_api(authz.addr, up.addr).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    serve(&g, "orig", "orig.test");
    let export = |api: &str| {
        let r = admin(
            g.admin(),
            "GET",
            &format!("/apis/{api}/stages/live/export?extensions=apigateway"),
            Some(TOKEN),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let first = export("orig");
    assert_eq!(validate(&first), "", "{first:#}");
    let schemes = &first["components"]["securitySchemes"];
    assert!(
        schemes["api_key"]["x-amazon-apigateway-authorizer"].is_object(),
        "{schemes:#}"
    );
    assert_eq!(schemes["api_key_1"]["name"], "x-api-key", "{schemes:#}");
    assert!(first["paths"]["/a%20b"]["get"].is_object(), "{first:#}");
    assert!(first["x-amazon-apigateway-policy"].is_object(), "{first:#}");
    // A model for any content type is the media type range `*/*`, not `$default`.
    let content = &first["paths"]["/mixed"]["post"]["requestBody"]["content"];
    assert!(
        content["*/*"].is_object() && content.get("$default").is_none(),
        "{content:#}"
    );
    // Models refer to each other as the document's schemas, not through copies.
    assert_eq!(
        first["components"]["schemas"]["Pet"]["properties"]["tag"]["$ref"],
        "#/components/schemas/Tag"
    );
    // A model's own definitions are the document's schemas (`#/definitions/kind` there would
    // name the document's, which has none).
    let schemas = &first["components"]["schemas"];
    assert_eq!(
        schemas["Owner"]["properties"]["kind"]["$ref"],
        "#/components/schemas/Owner_kind"
    );
    assert_eq!(
        schemas["Owner_kind"]["enum"],
        json!(["a", "b"]),
        "{schemas:#}"
    );
    // A name with a JSON pointer's escape (`a~1b` is `a/b`).
    assert_eq!(
        schemas["Owner"]["properties"]["n"]["$ref"],
        "#/components/schemas/Owner_a_b"
    );
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=copy&failonwarnings=true",
        &first.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["warnings"], json!([]));
    serve(&g, "copy", "copy.test");
    let mut second = export("copy");
    // Only the name and where it is served differ.
    assert_eq!(second["info"]["title"], "copy");
    assert_eq!(second["servers"], json!([{"url": "http://copy.test/"}]));
    second["info"] = first["info"].clone();
    second["servers"] = first["servers"].clone();
    assert_eq!(first, second);

    // What clients see: the same from both, and what the original means.
    let ask = |host: &str, method: &str, path: &str, headers: &str, body: &str| {
        let r = Client::connect(g.addr()).request(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let header = |n: &str| r.header(n).map(str::to_string);
        (
            r.status,
            header("content-type"),
            header("x-gw"),
            header("x-a"),
            r.text(),
        )
    };
    let json_body = "Content-Type: application/json\r\n";
    let cases: [(&str, &str, &str, &str, u16); 14] = [
        ("GET", "/literal", "", "", 201),
        ("GET", "/picked", "", "", 502),
        ("GET", "/plain", "", "", 200),
        ("GET", "/template", "", "", 203),
        ("GET", "/guarded", "x-key: fast\r\n", "", 200),
        ("GET", "/guarded", "x-key: slow\r\n", "", 500),
        // No key (and no plan): refused, where the authorizer's route needs none.
        ("GET", "/keyed", "", "", 403),
        ("GET", "/jwt", "", "", 401),
        (
            "POST",
            "/pets",
            json_body,
            r#"{"name":"rex","tag":{"n":"a"}}"#,
            200,
        ),
        (
            "POST",
            "/pets",
            json_body,
            r#"{"name":"rex","tag":{"n":5}}"#,
            400,
        ),
        ("GET", "/up/7", "", "", 200),
        ("GET", "/plain", "X-Forwarded-For: 192.0.2.7\r\n", "", 200),
        ("GET", "/plain", "X-Forwarded-For: 192.0.2.66\r\n", "", 403),
        (
            "GET",
            "/plain",
            "X-Forwarded-For: 198.51.100.1\r\n",
            "",
            403,
        ),
    ];
    for (method, path, headers, body, status) in cases {
        let orig = ask("orig.test", method, path, headers, body);
        let copy = ask("copy.test", method, path, headers, body);
        assert_eq!(orig.0, status, "{method} {path} {headers}: {orig:?}");
        // The echo names the request id it was sent; everything else is the same.
        if path.starts_with("/up/") {
            assert_eq!(orig.3.as_deref(), Some("v"), "{orig:?}");
            assert_eq!(
                (&orig.0, &orig.3),
                (&copy.0, &copy.3),
                "{method} {path} {headers}"
            );
            continue;
        }
        assert_eq!(orig, copy, "{method} {path} {headers}");
    }
    // Through Swagger 2.0 (one body per operation) too, with Tollgate's own keys.
    let r = admin(
        g.admin(),
        "GET",
        "/apis/orig/stages/live/export?type=swagger&extensions=apigateway",
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sw = r.json();
    assert_eq!(validate(&sw), "", "{sw:#}");
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=swcopy&failonwarnings=true",
        &sw.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    serve(&g, "swcopy", "swcopy.test");
    for (ct, body, status) in [
        ("application/json", r#"{"name":"rex"}"#, 200),
        ("application/json", r#"{"n":"a"}"#, 400),
        ("text/plain", r#"{"n":"a"}"#, 200),
        ("text/plain", r#"{"n":5}"#, 400),
        ("application/xml", r#"{"n":"a"}"#, 400),
    ] {
        let headers = format!("Content-Type: {ct}\r\n");
        let orig = ask("orig.test", "POST", "/mixed", &headers, body);
        let copy = ask("swcopy.test", "POST", "/mixed", &headers, body);
        assert_eq!(orig.0, status, "{ct} {body}: {orig:?}");
        assert_eq!(copy.0, status, "{ct} {body}: {copy:?}");
    }
    let literal = ask("copy.test", "GET", "/literal", "", "");
    assert_eq!(literal.4, LITERAL);
    assert_eq!(literal.1.as_deref(), Some("application/json"));
    let template = ask("copy.test", "GET", "/template", "", "");
    assert_eq!(template.4.trim_end(), r#"{"x": 5, "n": 7}"#);
    let denied = ask(
        "copy.test",
        "GET",
        "/plain",
        "X-Forwarded-For: 192.0.2.66\r\n",
        "",
    );
    assert_eq!(denied.2.as_deref(), Some("tollgate"));
    assert_eq!(denied.4, r#"{"denied":true}"#);

    // The route's limit holds in the copy.
    let thr: Vec<u16> = (0..3)
        .map(|_| ask("copy.test", "GET", "/thr", "", "").0)
        .collect();
    assert_eq!(thr[0], 200);
    assert!(thr.contains(&429), "{thr:?}");
    // A document without them (Amazon's, or edited) leaves the routes' cache and throttle
    // as they were, on overwrite and on merge, as Amazon's stage route settings stay.
    let mut bare = first.clone();
    for item in bare["paths"].as_object_mut().unwrap().values_mut() {
        for op in item.as_object_mut().unwrap().values_mut() {
            if let Some(o) = op.as_object_mut() {
                o.remove("x-tollgate-route");
            }
        }
    }
    for mode in ["overwrite", "merge"] {
        let r = admin_with(
            g.admin(),
            "PUT",
            &format!("/apis/copy?mode={mode}"),
            &bare.to_string(),
        );
        assert_eq!(r.status, 200, "{mode}: {}", r.text());
        let def = admin(g.admin(), "GET", "/apis/copy", Some(TOKEN)).json();
        let route = |k: &str| {
            def["definition"]["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["route"] == k)
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            route("GET /thr")["throttle"],
            json!({"rate": 1, "burst": 1}),
            "{mode}: {def:#}"
        );
        assert_eq!(
            route("GET /nocache")["cache"],
            json!({"enabled": false}),
            "{mode}"
        );
        assert_eq!(
            route("GET /me/{id}")["cache"]["key"],
            json!(["header.x-user", "query.v", "path.id"]),
            "{mode}"
        );
    }
}
