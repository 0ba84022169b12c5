//! OpenAPI export: an API as a stage serves it, in OpenAPI 3.0 and Swagger 2.0, with and
//! without Amazon API Gateway's extensions; every document passes openapi-spec-validator, and
//! `tollgate openapi` (offline, from the file) prints what the admin API answers.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

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
            "[[apis.authorizers]]\nname = \"users\"\ntype = \"jwt\"\nissuer = \"https://idp.example.test\"\naudience = [\"shop\"]\njwks_uri = \"http://{dead}/jwks\"\n\n[[apis.authorizers]]\nname = \"partners\"\ntype = \"request\"\nuri = \"http://{dead}/authorize\"\nidentity_sources = [\"$request.header.x-partner\"]\nttl = \"60s\"\n"
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
        serde_json::json!([{"api_key": []}, {"users": ["pets:write"]}])
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
