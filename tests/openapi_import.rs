//! OpenAPI import: Amazon API Gateway's PetStore-style definition (Swagger 2.0 with its
//! extensions) and the OpenAPI Initiative's petstore (OpenAPI 3.0, no extensions) become
//! run-time APIs that serve once deployed; what cannot be taken is in the warnings; export
//! then import gives back the same API; merge folds a document into an API; documents that
//! would grow past a bound (YAML aliases, schemas copied into models) are refused.

mod common;

use serde_json::json;

use common::*;

const AWS: &str = include_str!("fixtures/openapi/petstore-apigateway.json");
const OAI: &str = include_str!("fixtures/openapi/petstore-oai.json");
/// The same petstore as the OpenAPI Initiative publishes it: in YAML.
const OAI_YAML: &str = include_str!("fixtures/openapi/petstore-oai.yaml");

fn on(g: &Gw, host: &str, path: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn gw() -> Gw {
    Gw::start(
        &Cfg::new()
            .api("file")
            .route(
                "GET /f",
                "integration = { type = \"mock\", body = \"file\" }",
            )
            .toml(),
    )
}

/// Imports, deploys to stage `stage` and maps `host` to it; returns the import's answer.
fn import_and_serve(g: &Gw, query: &str, doc: &str, host: &str) -> serde_json::Value {
    let r = admin_with(g.admin(), "POST", &format!("/apis?mode=import{query}"), doc);
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let name = v["name"].as_str().unwrap().to_string();
    let r = admin_with(
        g.admin(),
        "POST",
        &format!("/apis/{name}/deployments"),
        &json!({"stage": "test"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let m = json!({"host": host, "api": name, "stage": "test"});
    assert_eq!(
        admin_with(g.admin(), "POST", "/domains", &m.to_string()).status,
        201
    );
    v
}

#[test]
fn amazons_petstore_imports_and_serves_end_to_end() {
    let up = Upstream::echo();
    let g = gw();
    // Offline: the example's backend is replaced by a local one.
    let doc = AWS.replace(
        "petstore-demo-endpoint.execute-api.com",
        &up.addr.to_string(),
    );
    // Something it cannot take (a resource policy document) fails an import that says so.
    let warned = doc.replacen(
        "\"swagger\"",
        "\"x-amazon-apigateway-policy\": {}, \"swagger\"",
        1,
    );
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&failonwarnings=true",
        &warned,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("failonwarnings"), "{}", r.text());
    let v = import_and_serve(&g, "", &doc, "pets.test");
    assert_eq!(v["name"], "PetStore");
    let warnings = v["warnings"].to_string();
    // Its query mappings pass the client's parameters on as they are: nothing to say.
    assert!(
        !warnings.contains("integration.request.querystring.page"),
        "{warnings}"
    );
    // Its (non-proxy) integrations' responses are imported as integration responses.
    let routes = v["definition"]["routes"].as_array().unwrap();
    let pets = routes.iter().find(|r| r["route"] == "GET /pets").unwrap();
    assert_eq!(
        pets["integration"]["responses"],
        json!([{"status": 200}]),
        "{pets}"
    );
    let root = on(&g, "pets.test", "/");
    assert_eq!(root.status, 200);
    assert_eq!(root.header("content-type"), Some("text/html"));
    assert!(root.text().contains("Welcome to your Pet Store API"));
    assert_eq!(
        on(&g, "pets.test", "/pets?type=dog").json()["target"],
        "/petstore/pets?type=dog"
    );
    assert_eq!(
        on(&g, "pets.test", "/pets/7").json()["target"],
        "/petstore/pets/7"
    );
    let pre = Client::connect(g.addr())
        .request(b"OPTIONS /pets HTTP/1.1\r\nHost: pets.test\r\nConnection: close\r\n\r\n");
    assert_eq!(pre.status, 200);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));

    // Export, import under another name, export again: the same API.
    let first = admin(
        g.admin(),
        "GET",
        "/apis/PetStore/stages/test/export?extensions=apigateway",
        Some(TOKEN),
    )
    .json();
    let exported = first.to_string();
    let v = import_and_serve(
        &g,
        "&name=again&failonwarnings=true",
        &exported,
        "again.test",
    );
    assert_eq!(v["warnings"], json!([]));
    let second = admin(
        g.admin(),
        "GET",
        "/apis/again/stages/test/export?extensions=apigateway",
        Some(TOKEN),
    )
    .json();
    assert_eq!(first["paths"], second["paths"]);
    assert_eq!(first["components"], second["components"]);
    assert_eq!(
        on(&g, "again.test", "/pets/8").json()["target"],
        "/petstore/pets/8"
    );
}

#[test]
fn a_plain_openapi_document_imports_with_warnings_and_bad_ones_are_refused() {
    let g = gw();
    let v = import_and_serve(&g, "&name=oai", OAI, "oai.test");
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 4, "{w:?}");
    // The document's base path (`servers`), and its three operations without integrations.
    assert!(
        w[0].as_str().unwrap().starts_with("base path \"/v1\""),
        "{w:?}"
    );
    assert!(w[1..].iter().all(|x| x
        .as_str()
        .unwrap()
        .contains("no x-amazon-apigateway-integration")));
    let r = on(&g, "oai.test", "/pets/1");
    assert_eq!(r.status, 501);
    // Merge: a second document adds its routes and replaces those of the same key.
    let more = json!({"openapi": "3.0.1", "info": {"title": "x", "version": "1"}, "paths": {"/pets/{petId}": {"get": {"responses": {"200": {"description": "ok"}}, "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200", "responseTemplates": {"application/json": "{\"pet\":true}"}}}}}}}});
    let r = admin_with(g.admin(), "PUT", "/apis/oai?mode=merge", &more.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let routes = r.json()["definition"]["routes"].as_array().unwrap().len();
    assert_eq!(routes, 3);
    admin_with(
        g.admin(),
        "POST",
        "/apis/oai/deployments",
        &json!({"stage": "test"}).to_string(),
    );
    assert_eq!(on(&g, "oai.test", "/pets/1").text(), "{\"pet\":true}");
    assert_eq!(on(&g, "oai.test", "/pets").status, 501);

    // The YAML original imports as the same API; a YAML bomb or a broken document is refused.
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=oai-yaml",
        OAI_YAML,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let json_def = admin_with(g.admin(), "GET", "/apis/oai", "").json()["definition"].clone();
    let mut yaml = r.json();
    assert_eq!(yaml["warnings"].as_array().unwrap().len(), 4, "{yaml}");
    let r = admin_with(g.admin(), "PUT", "/apis/oai?mode=overwrite", OAI);
    assert_eq!(r.status, 200, "{}", r.text());
    // The same routes and models (the YAML original's Error schema has no "type": "object").
    let json = r.json()["definition"].clone();
    assert_eq!(
        yaml["definition"]["routes"].take(),
        json["routes"],
        "{json_def}"
    );
    let names = |d: &serde_json::Value| -> Vec<String> {
        d["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].to_string())
            .collect()
    };
    assert_eq!(
        names(&yaml["definition"]),
        ["\"Error\"", "\"Pet\"", "\"Pets\""]
    );
    assert_eq!(names(&yaml["definition"]), names(&json));
    let mut bomb = String::from("openapi: 3.0.0\nl0: &l0 [x, x]\n");
    for i in 1..30 {
        bomb.push_str(&format!("l{i}: &l{i} [*l{}, *l{}]\n", i - 1, i - 1));
    }

    for (body, want) in [
        (bomb.as_str(), "more than 500000 nodes"),
        ("openapi: 3.0.0\npaths: [1, 2\n", "invalid YAML"),
        ("hello: 1\n", "not an OpenAPI 3.x"),
        ("{\"hello\": 1}", "not an OpenAPI 3.x"),
        ("{\"openapi\": \"3.0.0\", ", "invalid JSON"),
    ] {
        let r = admin_with(g.admin(), "POST", "/apis?mode=import", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(want), "{want}: {}", r.text());
    }
    // A Lambda integration or an authorizer Tollgate cannot call: the route is left out and
    // said, never served unprotected.
    let lambda = json!({"openapi": "3.0.1", "info": {"title": "lam", "version": "1"},
    "components": {"securitySchemes": {"cog": {"type": "apiKey", "name": "Authorization", "in": "header",
        "x-amazon-apigateway-authorizer": {"type": "cognito_user_pools", "providerARNs": ["arn:aws:cognito-idp:x"]}}}},
    "paths": {
        "/a": {"get": {"responses": {"200": {"description": "ok"}}, "x-amazon-apigateway-integration": {"type": "aws_proxy", "uri": "arn:aws:apigateway:lambda"}}},
        "/b": {"get": {"security": [{"cog": []}], "responses": {"200": {"description": "ok"}}, "x-amazon-apigateway-integration": {"type": "mock"}}}
    }});
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &lambda.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let held = json!({"type": "mock", "status": 403, "body": "{\"message\":\"Forbidden\"}"});
    assert_eq!(
        v["definition"]["routes"],
        json!([{"route": "GET /a", "integration": held}, {"route": "GET /b", "integration": held}])
    );
    let w = v["warnings"].to_string();
    assert!(
        w.contains("aws_proxy") && w.contains("cognito_user_pools"),
        "{w}"
    );
    // Values out of range are said (so failonwarnings refuses them), not silently replaced
    // by the defaults.
    let odd = json!({"openapi": "3.0.1", "info": {"title": "odd", "version": "1"}, "paths": {
        "/t": {"get": {"responses": {"200": {"description": "ok"}}, "x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "GET", "uri": "http://127.0.0.1:9/t", "timeoutInMillis": -5}}},
        "/m": {"get": {"responses": {"200": {"description": "ok"}}, "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "99999"}}}}}
    }});
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&failonwarnings=true",
        &odd.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &odd.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let w = r.json()["warnings"].to_string();
    assert!(w.contains("timeoutInMillis -5"), "{w}");
    assert!(w.contains("statusCode \\\"99999\\\""), "{w}");
}

/// Authorization as Amazon's documents write it is kept, and a `security` Tollgate cannot
/// read leaves the route out (said, so `failonwarnings` refuses it), never served open:
/// `x-amazon-apigateway-auth` AWS_IAM is SigV4; a `security` that is null (YAML `security:`),
/// an object or a list of names is not "no security". And an integration URI whose scheme and
/// host a stage variable gives (as the export writes it) imports.
/// Parameters and request bodies kept with the document's others (`$ref`) are validated as
/// inline ones are; a reference that leads nowhere, or round in a circle, is named in the
/// warnings (and refused with failonwarnings) rather than dropped in silence.
#[test]
fn referenced_parameters_and_bodies_are_validated_and_broken_references_named() {
    let g = gw();
    let mock = json!({"type": "mock", "responses": {"default": {"statusCode": "200"}}});
    let doc = json!({"openapi": "3.0.1", "info": {"title": "refs", "version": "1"},
        "components": {
            "parameters": {"Q": {"name": "q", "in": "query", "required": true, "schema": {"type": "string"}},
                           "Alias": {"$ref": "#/components/parameters/Q"}},
            "requestBodies": {"Pet": {"required": true, "content": {"application/json": {"schema": {
                "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}}}},
        "x-amazon-apigateway-request-validators": {"all": {"validateRequestBody": true, "validateRequestParameters": true}},
        "x-amazon-apigateway-request-validator": "all",
        "paths": {
            "/q": {"get": {"parameters": [{"$ref": "#/components/parameters/Alias"}],
                           "x-amazon-apigateway-integration": mock}},
            "/pets": {"post": {"requestBody": {"$ref": "#/components/requestBodies/Pet"},
                               "x-amazon-apigateway-integration": mock}},
            // The operation's own definition of a parameter overrides the path's.
            "/t": {"parameters": [{"name": "tenant", "in": "query", "required": true, "schema": {"type": "string"}}],
                   "get": {"parameters": [{"name": "tenant", "in": "query", "required": false, "schema": {"type": "string"}}],
                           "x-amazon-apigateway-integration": mock},
                   "put": {"x-amazon-apigateway-integration": mock}}}});
    let v = import_and_serve(&g, "&failonwarnings=true", &doc.to_string(), "refs.test");
    assert_eq!(v["warnings"], json!([]), "{v}");
    let r = on(&g, "refs.test", "/q");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "Missing required request parameters: [q]"
    );
    assert_eq!(on(&g, "refs.test", "/q?q=1").status, 200);
    assert_eq!(on(&g, "refs.test", "/t").status, 200);
    let put = Client::connect(g.addr()).request(
        b"PUT /t HTTP/1.1\r\nHost: refs.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(put.status, 400, "{}", put.text());
    let post = |body: &str| {
        Client::connect(g.addr()).request(
            format!("POST /pets HTTP/1.1\r\nHost: refs.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                .as_bytes(),
        )
    };
    assert_eq!(post(r#"{"nope":1}"#).status, 400);
    assert_eq!(post(r#"{"name":"rex"}"#).status, 200);

    // Broken: nowhere, a cycle, a Swagger 2.0 parameter that is not there.
    let mut broken = doc.clone();
    broken["components"]["parameters"]["Alias"] = json!({"$ref": "#/components/parameters/Loop"});
    broken["components"]["parameters"]["Loop"] = json!({"$ref": "#/components/parameters/Alias"});
    broken["paths"]["/pets"]["post"]["requestBody"] =
        json!({"$ref": "#/components/requestBodies/Gone"});
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=broken",
        &broken.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let w = r.json()["warnings"].to_string();
    assert!(
        w.contains("GET /q: parameter $ref chain longer than"),
        "{w}"
    );
    assert!(
        w.contains(
            "POST /pets: requestBody $ref \\\"#/components/requestBodies/Gone\\\" does not lead"
        ),
        "{w}"
    );
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=broken2&failonwarnings=true",
        &broken.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let swagger = json!({"swagger": "2.0", "info": {"title": "s", "version": "1"},
        "paths": {"/q": {"get": {"parameters": [{"$ref": "#/parameters/Q"}],
                                 "x-amazon-apigateway-integration": mock}}}});
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=sw",
        &swagger.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.json()["warnings"].to_string().contains("#/parameters/Q"),
        "{}",
        r.text()
    );
}

/// What an import does not take is named: an integration's other method or fields Tollgate
/// has no use for, a base path the routes do not carry.
/// A REST API's URI may name its path variables otherwise than the route
/// (`{id}` from `method.request.path.petId`): renamed, and served. One the route has no
/// variable for leaves that route out, named, and the rest of the document imports.
#[test]
fn path_variables_renamed_by_request_parameters_are_served() {
    let g = gw();
    let up = Upstream::echo();
    let doc = json!({"openapi": "3.0.1", "info": {"title": "rename", "version": "1"}, "paths": {
        "/pets/{petId}/toys/{toy}": {"get": {"x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "GET",
            "uri": format!("http://{}/pets/{{id}}/t/{{toy}}", up.addr),
            "requestParameters": {"integration.request.path.id": "method.request.path.petId",
                "integration.request.path.toy": "method.request.path.toy"}}}},
        "/lost/{a}": {"get": {"x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "GET",
            "uri": format!("http://{}/x/{{b}}", up.addr),
            "requestParameters": {"integration.request.path.b": "'fixed'"}}}},
        "/ok": {"get": {"x-amazon-apigateway-integration": {"type": "mock"}}}}});
    let v = import_and_serve(&g, "", &doc.to_string(), "rename.test");
    let w = v["warnings"].to_string();
    assert!(
        w.contains("GET /lost/{a}: integration uri")
            && w.contains("names {b}, which is no path variable of the route"),
        "{w}"
    );
    let r = on(&g, "rename.test", "/pets/7/toys/ball");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/pets/7/t/ball");
    assert_eq!(on(&g, "rename.test", "/ok").status, 200);
    assert_eq!(on(&g, "rename.test", "/lost/1").status, 403);
}

/// A byte-order mark opening a document is skipped (editors write one); a JSON document that
/// names a member twice is refused as a YAML one is (the first would be lost without a word);
/// `failonwarnings` takes true or false in any case, and nothing else.
#[test]
fn documents_with_a_bom_duplicate_keys_or_a_bad_failonwarnings() {
    let g = gw();
    let post = |query: &str, body: &[u8]| {
        let mut c = Client::connect(g.admin());
        let mut req = format!(
            "POST /apis?mode=import{query} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        c.request(&req)
    };
    let yaml = b"\xEF\xBB\xBFopenapi: 3.0.1\ninfo: {title: bom-yaml, version: '1'}\npaths: {}\n";
    let r = post("", yaml);
    assert_eq!(
        (r.status, r.json()["name"].clone()),
        (201, json!("bom-yaml")),
        "{}",
        r.text()
    );
    let json_doc = b"\xEF\xBB\xBF{\"openapi\": \"3.0.1\", \"info\": {\"title\": \"bom-json\", \"version\": \"1\"}, \"paths\": {}}";
    let r = post("", json_doc);
    assert_eq!(
        (r.status, r.json()["name"].clone()),
        (201, json!("bom-json")),
        "{}",
        r.text()
    );

    let dup = r#"{"openapi":"3.0.1","info":{"title":"dup","version":"1"},"paths":{"/a":{"get":{"x-amazon-apigateway-integration":{"type":"mock"}}},"/a":{"post":{"x-amazon-apigateway-integration":{"type":"mock"}}}}}"#;
    let r = post("", dup.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("\\\"/a\\\" appears twice"),
        "{}",
        r.text()
    );
    // The admin API's own JSON bodies too.
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis",
        r#"{"name": "d", "routes": [{"route": "GET /x", "integration": {"type": "mock"}}], "routes": []}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("appears twice"), "{}", r.text());

    let warned =
        br#"{"openapi":"3.0.1","info":{"title":"fw","version":"1"},"paths":{"/x":{"get":{}}}}"#;
    for bad in ["yes", "1", ""] {
        let r = post(&format!("&failonwarnings={bad}"), warned);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.text().contains("expected true or false"), "{}", r.text());
    }
    assert_eq!(post("&failonwarnings=TRUE", warned).status, 400);
    // Amazon's HTTP API import spells it failOnWarnings: as strict.
    assert_eq!(post("&failOnWarnings=true", warned).status, 400);
    // A base path the import would have to prepend or split off: refused, not ignored.
    let r = post("&basepath=prepend", warned);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("only ignore is supported"),
        "{}",
        r.text()
    );
    // Two schemas whose names make one model name: refused, not one silently for both.
    let clash = br#"{"openapi":"3.0.1","info":{"title":"clash","version":"1"},"paths":{},"components":{"schemas":{"Pet.v1":{"type":"object","required":["name"]},"Pet_v1":{"type":"object"}}}}"#;
    let r = post("", clash);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("both become model \\\"Pet_v1\\\""),
        "{}",
        r.text()
    );
    // Deeper than the state store could read back: refused (it was answered 201, then
    // lost at the next start), as JSON and as YAML.
    let deep = format!(
        r#"{{"openapi":"3.0.1","info":{{"title":"deep","version":"1"}},"paths":{{}},"components":{{"schemas":{{"M":{}1{}}}}}}}"#,
        r#"{"type":"object","properties":{"a":"#.repeat(62),
        "}}".repeat(62)
    );
    let r = post("", deep.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("deeper than 100 levels"), "{}", r.text());
    let yaml_deep = format!(
        "openapi: 3.0.1\ninfo: {{title: deepy, version: '1'}}\npaths: {{}}\ncomponents:\n  schemas:\n    M: {}1{}\n",
        "{a: ".repeat(110),
        "}".repeat(110)
    );
    let r = post("", yaml_deep.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("deeper than 100 levels"), "{}", r.text());
    let r = post("&failonwarnings=False", warned);
    assert_eq!(r.status, 201, "{}", r.text());
}

/// A required header whose name holds `_`, which the gateway drops by default: the route
/// imports without that check, and a warning says why (the whole import was refused).
#[test]
fn a_required_header_with_an_underscore_is_a_warning() {
    let g = gw();
    let doc = json!({"openapi": "3.0.1", "info": {"title": "us", "version": "1"},
        "x-amazon-apigateway-request-validators": {"all": {"validateRequestBody": true, "validateRequestParameters": true}},
        "x-amazon-apigateway-request-validator": "all",
        "paths": {"/x": {"get": {
            "parameters": [{"name": "x_tenant", "in": "header", "required": true, "schema": {"type": "string"}},
                {"name": "x-key", "in": "header", "required": true, "schema": {"type": "string"}}],
            "x-amazon-apigateway-integration": {"type": "mock"}}}}});
    let v = import_and_serve(&g, "", &doc.to_string(), "us.test");
    let w = v["warnings"].to_string();
    assert!(
        w.contains("GET /x: required header parameter \\\"x_tenant\\\""),
        "{w}"
    );
    assert_eq!(
        v["definition"]["routes"][0]["required_parameters"],
        json!(["header.x-key"])
    );
    let r = Client::connect(g.addr())
        .request(b"GET /x HTTP/1.1\r\nHost: us.test\r\nx-key: k\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "us.test", "/x").status, 400);
}

#[test]
fn integration_fields_and_base_paths_not_taken_are_named() {
    let g = gw();
    let doc = json!({"openapi": "3.0.1", "info": {"title": "fields", "version": "1"},
        "servers": [{"url": "https://api.example.test/{base}", "variables": {"base": {"default": "v1"}}}],
        "paths": {"/x": {"get": {"x-amazon-apigateway-integration": {
            "type": "http_proxy", "uri": "http://127.0.0.1:9/x", "httpMethod": "POST",
            "tlsConfig": {"serverNameToVerify": "example.com"}, "contentHandling": "CONVERT_TO_TEXT"}}},
            "/y": {"get": {"x-amazon-apigateway-integration": {
            "type": "http_proxy", "uri": "http://127.0.0.1:9/y", "httpMethod": "GET", "payloadFormatVersion": "1.0"}}},
            "/z": "x"}});
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &doc.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let w: Vec<String> = r.json()["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    for want in [
        "GET /x: integration httpMethod \"POST\": the integration is called with the client's method (GET); left out",
        "GET /x: integration field \"tlsConfig\" is not supported; left out",
        "GET /x: integration field \"contentHandling\" is not supported; left out",
        "paths[\"/z\"]: not a path item (an object of operations); left out",
    ] {
        assert!(w.iter().any(|x| x == want), "{want:?} not in {w:#?}");
    }
    assert!(
        w.iter()
            .any(|x| x.starts_with("base path \"/v1\" (servers[0].url): not part of the routes")),
        "{w:#?}"
    );
    assert!(!w.iter().any(|x| x.starts_with("GET /y")), "{w:#?}");
    let swagger = json!({"swagger": "2.0", "info": {"title": "s", "version": "1"}, "basePath": "/v2",
        "paths": {"/x": {"get": {"x-amazon-apigateway-integration": {"type": "http_proxy", "uri": "http://127.0.0.1:9/x"}}}}});
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&failonwarnings=true",
        &swagger.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("base path \"/v2\" (basePath)"),
        "{}",
        r.text()
    );
}

#[test]
fn security_the_import_cannot_read_leaves_the_route_out() {
    let dir = TempDir::new();
    std::fs::write(
        dir.0.join("iam.key"),
        "q0VvXk3pYH5o1cF4n9T2bW8sR6dJ7aL0zE3uM5yG1iQ=",
    )
    .unwrap();
    let g = Gw::start_in(
        dir,
        &Cfg::new()
            .upstream("[aws_iam]\nregion = \"us-east-1\"\nsecrets_key_file = \"iam.key\"\n")
            .route("GET /f", "integration = { type = \"mock\" }")
            .toml(),
    );
    let mock = json!({"type": "mock", "responses": {"default": {"statusCode": "200"}}});
    let authorizer = |path: &str| {
        json!({"type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {"type": "request",
                "authorizerUri": format!("http://127.0.0.1:9/{path}"),
                "identitySource": "$request.header.Authorization",
                "authorizerResultTtlInSeconds": 0}})
    };
    let op = |extra: serde_json::Value| {
        let mut o = json!({"responses": {"200": {"description": "ok"}}, "x-amazon-apigateway-integration": mock});
        o.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        o
    };
    let doc = json!({"openapi": "3.0.1", "info": {"title": "sec", "version": "1"},
    "security": [{"sig": []}],
    "components": {"securitySchemes": {"sig": {"type": "apiKey", "name": "Authorization", "in": "header",
        "x-amazon-apigateway-authtype": "awsSigv4"},
        "deny": authorizer("deny"), "allow": authorizer("allow")}},
    "paths": {
        "/iam": {"get": op(json!({"security": [], "x-amazon-apigateway-auth": {"type": "AWS_IAM"}}))},
        "/none": {"get": op(json!({"security": [], "x-amazon-apigateway-auth": {"type": "NONE"}}))},
        "/inherits": {"get": op(json!({}))},
        "/null": {"get": op(json!({"security": null}))},
        "/object": {"get": op(json!({"security": {"sig": []}}))},
        "/names": {"get": op(json!({"security": ["sig"]}))},
        "/odd-auth": {"get": op(json!({"x-amazon-apigateway-auth": {"type": "COGNITO"}}))},
        // A route takes one authorizer: two, in one requirement or in two, leave it out
        // (not served behind the one the import would have kept).
        "/both": {"get": op(json!({"security": [{"deny": [], "allow": []}]}))},
        "/either": {"get": op(json!({"security": [{"deny": []}, {"allow": []}]}))},
        "/one": {"get": op(json!({"security": [{"deny": []}]}))},
        "/staged": {"get": {"security": [], "responses": {"200": {"description": "ok"}}, "x-amazon-apigateway-integration":
            {"type": "http_proxy", "httpMethod": "GET", "uri": "${stageVariables.backend}/pets"}}}
    }});
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&failonwarnings=true",
        &doc.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &doc.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    // A route left out is held by its key, answering 403: a less specific route must not
    // take its requests without the protection the document gives them.
    let held = json!({"type": "mock", "status": 403, "body": "{\"message\":\"Forbidden\"}"});
    let (held, routes): (Vec<_>, Vec<_>) = v["definition"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["route"].as_str().unwrap().to_string(), r.clone()))
        .partition(|(_, r)| r["integration"] == held);
    let held: std::collections::BTreeSet<String> = held.into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        held.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "GET /both",
            "GET /either",
            "GET /names",
            "GET /null",
            "GET /object",
            "GET /odd-auth"
        ]
    );
    let routes: std::collections::BTreeMap<String, serde_json::Value> =
        routes.into_iter().collect();
    assert_eq!(
        routes.keys().collect::<Vec<_>>(),
        [
            "GET /iam",
            "GET /inherits",
            "GET /none",
            "GET /one",
            "GET /staged"
        ],
        "{v}"
    );
    assert_eq!(routes["GET /one"]["authorizer"], "deny");
    assert_eq!(routes["GET /iam"]["authorization"], "aws_iam");
    assert_eq!(routes["GET /inherits"]["authorization"], "aws_iam");
    assert_eq!(routes["GET /none"].get("authorization"), None);
    assert_eq!(
        routes["GET /staged"]["integration"]["uri"],
        "${stageVariables.backend}/pets"
    );
    let w = v["warnings"].to_string();
    for bad in ["GET /null", "GET /object", "GET /names", "GET /odd-auth"] {
        assert!(w.contains(&format!("{bad}: ")), "{bad}: {w}");
    }
    for bad in ["GET /both", "GET /either"] {
        assert!(
            w.contains(&format!("{bad}: security names authorizers")),
            "{bad}: {w}"
        );
    }
    assert!(w.contains("left out rather than served without it"), "{w}");
}

#[test]
fn the_cli_imports_and_exports_through_the_admin_api() {
    let up = Upstream::echo();
    let g = gw();
    let dir = TempDir::new();
    let doc = dir.0.join("petstore.json");
    // With something it cannot take (a resource policy), so that there is a warning.
    std::fs::write(
        &doc,
        AWS.replace(
            "petstore-demo-endpoint.execute-api.com",
            &up.addr.to_string(),
        )
        .replacen(
            "\"swagger\"",
            "\"x-amazon-apigateway-policy\": {}, \"swagger\"",
            1,
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&g.path)
            .args(args)
            .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let admin_addr = g.admin().to_string();
    let out = cli(&[
        "import",
        doc.to_str().unwrap(),
        "--name",
        "cli",
        "--admin",
        &admin_addr,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "cli");
    assert!(!v["warnings"].as_array().unwrap().is_empty());
    let out = cli(&[
        "import",
        doc.to_str().unwrap(),
        "--name",
        "cli2",
        "--fail-on-warnings",
        "--admin",
        &admin_addr,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400"));
    admin_with(
        g.admin(),
        "POST",
        "/apis/cli/deployments",
        &json!({"stage": "test"}).to_string(),
    );
    let out = cli(&[
        "export",
        "cli",
        "--stage",
        "test",
        "--extensions",
        "--admin",
        &admin_addr,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["paths"]["/pets/{petId}"]["get"]["x-amazon-apigateway-integration"].is_object());
}

#[test]
fn x_amazon_apigateway_cors_imports_serves_and_exports() {
    let g = gw();
    let doc = json!({"openapi": "3.0.1", "info": {"title": "corsy", "version": "1"},
        "x-amazon-apigateway-cors": {"allowOrigins": ["https://app.example.test"], "allowMethods": ["GET"],
            "allowHeaders": ["x-custom"], "exposeHeaders": ["x-request-id"], "maxAge": 300, "allowCredentials": true},
        "paths": {"/pets": {"get": {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200"}}}}}}});
    let v = import_and_serve(&g, "", &doc.to_string(), "corsy.test");
    assert_eq!(v["warnings"], json!([]), "{v}");
    let r = Client::connect(g.addr()).request(
        b"OPTIONS /pets HTTP/1.1\r\nHost: corsy.test\r\nOrigin: https://app.example.test\r\nAccess-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.test")
    );
    assert_eq!(r.header("access-control-allow-headers"), Some("x-custom"));
    assert_eq!(r.header("access-control-max-age"), Some("300"));
    let out = admin(
        g.admin(),
        "GET",
        "/apis/corsy/stages/test/export?extensions=apigateway",
        Some(TOKEN),
    )
    .json();
    assert_eq!(
        out["x-amazon-apigateway-cors"], doc["x-amazon-apigateway-cors"],
        "{out}"
    );
    // The same rules as the configuration file: a wildcard origin with credentials is refused.
    let mut bad = doc.clone();
    bad["x-amazon-apigateway-cors"]["allowOrigins"] = json!(["*"]);
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=bad",
        &bad.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("cors.allow_credentials: cannot be true"),
        "{}",
        r.text()
    );
}

#[test]
fn yaml_aliases_of_long_text_are_refused_by_what_they_would_build() {
    let g = gw();
    // One 1 MB string, repeated by 1,000 aliases: few nodes, a gigabyte of text.
    let long = "x".repeat(1_000_000);
    let doc = |n: usize| {
        format!(
            "openapi: 3.0.1\ninfo: {{title: t, version: '1'}}\npaths: {{}}\nx-a: &a \"{long}\"\nx-b: [{}]\n",
            vec!["*a"; n].join(",")
        )
    };
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=laughs",
        &doc(1000),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("the document expands to more than 16 MiB of text"),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("16 times the document's size"),
        "{}",
        r.text()
    );
    assert_eq!(admin_with(g.admin(), "GET", "/apis/laughs", "").status, 404);
    // Aliases within the bound still work.
    let r = admin_with(g.admin(), "POST", "/apis?mode=import&name=few", &doc(3));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(on(&g, "x", "/f").text(), "file");
}

/// `n` schemas in a chain (each refers to the next), the first one a route's request body.
fn chain(n: usize) -> serde_json::Value {
    let mut schemas = serde_json::Map::new();
    for i in 0..n {
        let mut props = json!({"pad": {"type": "string", "description": "p".repeat(100)}});
        if i + 1 < n {
            props["next"] = json!({"$ref": format!("#/components/schemas/S{}", i + 1)});
        }
        schemas.insert(
            format!("S{i}"),
            json!({"type": "object", "properties": props}),
        );
    }
    json!({"openapi": "3.0.1", "info": {"title": "chain", "version": "1"},
        "x-amazon-apigateway-request-validators": {"all": {"validateRequestBody": true, "validateRequestParameters": true}},
        "components": {"schemas": schemas},
        "paths": {"/a": {"post": {
            "x-amazon-apigateway-request-validator": "all",
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/S0"}}}},
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200"}}}}}}})
}

#[test]
fn schemas_that_refer_to_each_other_are_copied_within_a_bound() {
    let g = gw();
    // 1,000 schemas in a chain (177 KB): each model would carry every schema after it,
    // 158 MB in all. Refused, naming the cause, before anything is built.
    let doc = chain(1000).to_string();
    let r = admin_with(g.admin(), "POST", "/apis?mode=import&name=long", &doc);
    assert_eq!(r.status, 400, "{}", r.text());
    let text = r.text();
    assert!(
        text.contains(
            "the models made of the document's components.schemas would take more than 1 MiB"
        ),
        "{text}"
    );
    assert!(
        text.contains("each carrying a copy of every schema it refers to"),
        "{text}"
    );
    assert_eq!(admin_with(g.admin(), "GET", "/apis/long", "").status, 404);

    // A short chain imports; each model carries only what it reaches, and the references
    // work end to end: a bad value three schemas down is refused.
    let doc = chain(5).to_string();
    let v = import_and_serve(&g, "&name=short", &doc, "short.test");
    let def = &v["definition"];
    assert!(def.to_string().len() < 16 * doc.len(), "{def}");
    let models = def["models"].as_array().unwrap();
    let s3 = models.iter().find(|m| m["name"] == "S3").unwrap();
    assert_eq!(
        s3["schema"]["definitions"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["S4"]
    );
    let post = |body: &str| {
        Client::connect(g.addr()).request(
            format!(
                "POST /a HTTP/1.1\r\nHost: short.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    assert_eq!(
        post(r#"{"next":{"next":{"next":{"pad":"ok"}}}}"#).status,
        200
    );
    let bad = post(r#"{"next":{"next":{"next":{"pad":5}}}}"#);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(bad.json()["message"], "Invalid request body");
}

#[test]
fn merge_takes_the_documents_models_cors_and_gateway_responses() {
    let g = gw();
    let first = json!({"openapi": "3.0.1", "info": {"title": "m", "version": "1"},
        "components": {"schemas": {"Old": {"type": "object"}}},
        "x-amazon-apigateway-gateway-responses": {"THROTTLED": {"statusCode": 429}},
        "paths": {"/a": {"get": {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200", "responseTemplates": {"text/plain": "a"}}}}}}}});
    import_and_serve(&g, "&name=m", &first.to_string(), "m.test");
    let more = json!({"openapi": "3.0.1", "info": {"title": "m", "version": "1"},
        "x-amazon-apigateway-api-key-source": "AUTHORIZER",
        "x-amazon-apigateway-cors": {"allowOrigins": ["https://app.example.test"], "allowMethods": ["POST"]},
        "x-amazon-apigateway-gateway-responses": {"DEFAULT_4XX": {"statusCode": 422,
            "responseParameters": {"gatewayresponse.header.x-merged": "'yes'"},
            "responseTemplates": {"application/json": "{\"merged\":true}"}}},
        "x-amazon-apigateway-request-validators": {"body": {"validateRequestBody": true}},
        "components": {"schemas": {"Pet": {"type": "object", "required": ["name"]}}},
        "paths": {"/b": {"post": {"x-amazon-apigateway-request-validator": "body",
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200", "responseTemplates": {"text/plain": "b"}}}}}}}});
    let r = admin_with(g.admin(), "PUT", "/apis/m?mode=merge", &more.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["warnings"], json!([]), "{v}");
    let def = &v["definition"];
    let names: Vec<&str> = def["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Old", "Pet"], "{def}");
    // A setting of the whole API the document has replaces the API's.
    assert_eq!(def["api_key_source"], "AUTHORIZER", "{def}");
    let mut kinds: Vec<&String> = def["gateway_responses"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["DEFAULT_4XX", "THROTTLED"]);
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis/m/deployments",
        &json!({"stage": "test"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Both routes serve; the merged one validates with the merged model and answers with
    // the merged gateway response and CORS.
    assert_eq!(on(&g, "m.test", "/a").text(), "a");
    let post = |body: &str| {
        Client::connect(g.addr()).request(
            format!(
                "POST /b HTTP/1.1\r\nHost: m.test\r\nOrigin: https://app.example.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
    };
    let ok = post(r#"{"name":"rex"}"#);
    assert_eq!((ok.status, ok.text()), (200, "b".to_string()));
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.test")
    );
    let bad = post("{}");
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert_eq!(bad.header("x-merged"), Some("yes"));
    assert_eq!(bad.json(), json!({"merged": true}));
    // A merge that does not mention them leaves them as they are.
    let r = admin_with(g.admin(), "PUT", "/apis/m?mode=merge", &first.to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let def = &r.json()["definition"];
    assert!(def["cors"].is_object(), "{def}");
    assert_eq!(def["models"].as_array().unwrap().len(), 2, "{def}");
    assert_eq!(def["gateway_responses"]["DEFAULT_4XX"]["status"], 422);
}

/// Amazon's HTTP API exports write the `$default` route as `/$default` with
/// `isDefaultRoute: true`: imported as the catch-all it is, not a literal path.
#[test]
fn amazons_default_route_form_is_the_catch_all() {
    let g = gw();
    let doc = json!({
        "openapi": "3.0.1",
        "info": {"title": "dflt", "version": "1"},
        "paths": {
            "/$default": {"x-amazon-apigateway-any-method": {
                "isDefaultRoute": true,
                "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200", "responseTemplates": {"application/json": "fallback"}}}}
            }},
            "/known": {"get": {"x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200", "responseTemplates": {"application/json": "known"}}}}}},
            // A mock whose request template picks its integration response.
            "/nf": {"get": {"x-amazon-apigateway-integration": {"type": "mock",
                "requestTemplates": {"application/json": "{\"statusCode\": 404}"},
                "responses": {
                    "default": {"statusCode": "200", "responseTemplates": {"application/json": "{\"ok\":true}"}},
                    "404": {"statusCode": "404", "responseTemplates": {"application/json": "{\"msg\":\"nf\"}"}}
                }}}}
        }
    });
    let v = import_and_serve(&g, "&failonwarnings=true", &doc.to_string(), "dflt.test");
    assert_eq!(v["warnings"], json!([]), "{v}");
    assert_eq!(on(&g, "dflt.test", "/known").text(), "known");
    let r = on(&g, "dflt.test", "/anything/else");
    assert_eq!((r.status, r.text()), (200, "fallback".to_string()));
    let r = on(&g, "dflt.test", "/nf");
    assert_eq!((r.status, r.text()), (404, "{\"msg\":\"nf\"}".to_string()));
}

fn post(g: &Gw, host: &str, path: &str, ct: &str, body: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// What Amazon's HTTP API exports write, taken as Amazon takes it: the format's version mark,
/// integrations shared by `$ref`, a 30 s timeout (brought to the gateway's limit, said), a
/// `*/*` request body, REST-style identity sources.
#[test]
fn amazons_http_api_export_forms_are_taken() {
    let g = Gw::start(
        &Cfg::new()
            .api("file")
            .route(
                "GET /f",
                "integration = { type = \"mock\", body = \"file\" }",
            )
            .toml(),
    );
    let up = Upstream::echo();
    let doc = json!({
        "openapi": "3.0.1",
        "info": {"title": "shared", "version": "1"},
        "x-amazon-apigateway-importexport-version": "1.0",
        "x-amazon-apigateway-request-validators": {"all": {"validateRequestBody": true, "validateRequestParameters": true}},
        "x-amazon-apigateway-request-validator": "all",
        "paths": {
            "/a": {"get": {"x-amazon-apigateway-integration": {"$ref": "#/components/x-amazon-apigateway-integrations/up"}}},
            "/b": {"get": {"x-amazon-apigateway-integration": {"$ref": "#/components/x-amazon-apigateway-integrations/up"}}},
            "/any": {"post": {
                "requestBody": {"content": {"*/*": {"schema": {"type": "object", "required": ["n"]}}}},
                "x-amazon-apigateway-integration": {"$ref": "#/components/x-amazon-apigateway-integrations/up"}}},
            "/gone": {"get": {"x-amazon-apigateway-integration": {"$ref": "#/components/x-amazon-apigateway-integrations/nope"}}},
            "/auth": {"get": {"security": [{"rest": []}],
                "x-amazon-apigateway-integration": {"$ref": "#/components/x-amazon-apigateway-integrations/up"}}},
        },
        "components": {
            "x-amazon-apigateway-integrations": {
                "up": {"type": "http_proxy", "httpMethod": "ANY", "uri": format!("http://{}/shared", up.addr),
                       "payloadFormatVersion": "1.0", "timeoutInMillis": 30000},
            },
            "securitySchemes": {"rest": {"type": "apiKey", "name": "Auth", "in": "header",
                "x-amazon-apigateway-authtype": "custom",
                "x-amazon-apigateway-authorizer": {"type": "request", "authorizerUri": format!("http://{}/authz", up.addr),
                    "identitySource": "method.request.header.Auth, stageVariables.s, context.requestId"}}},
        },
    });
    let v = import_and_serve(&g, "", &doc.to_string(), "shared.test");
    let warnings = v["warnings"].to_string();
    // The version mark says nothing to warn about; the timeout and the broken reference do.
    assert!(!warnings.contains("importexport"), "{warnings}");
    assert!(
        warnings.contains(
            "GET /a: timeoutInMillis 30000: over limits.integration_timeout; 29000 ms taken"
        ),
        "{warnings}"
    );
    assert!(
        warnings.contains("GET /gone: x-amazon-apigateway-integration $ref"),
        "{warnings}"
    );
    for p in ["/a", "/b"] {
        let r = on(&g, "shared.test", p);
        assert_eq!(r.status, 200, "{p}: {}", r.text());
        assert_eq!(r.json()["target"], "/shared", "{p}");
    }
    // Left out: held by its key (403), not served by anything else.
    assert_eq!(on(&g, "shared.test", "/gone").status, 403);
    // The `*/*` body's schema is checked whatever the content type.
    assert_eq!(
        post(&g, "shared.test", "/any", "text/plain", "{\"n\":1}").status,
        200
    );
    assert_eq!(
        post(&g, "shared.test", "/any", "application/json", "{}").status,
        400
    );
    let def = admin(g.admin(), "GET", "/apis/shared", Some(TOKEN)).json();
    assert_eq!(
        def["definition"]["authorizers"][0]["identity_sources"],
        json!([
            "$request.header.Auth",
            "$stageVariables.s",
            "$context.requestId"
        ]),
        "{def:#}"
    );
}

/// An OpenAPI 3.1 document's schemas are JSON Schema 2020-12: its keywords are checked, not
/// ignored as draft 4 would (`const`, `prefixItems`, `dependentRequired`), and a numeric
/// `exclusiveMinimum` is taken.
#[test]
fn openapi_3_1_schemas_are_json_schema_2020_12() {
    let g = gw();
    let doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "dialect", "version": "1"},
        "x-amazon-apigateway-request-validators": {"all": {"validateRequestBody": true, "validateRequestParameters": true}},
        "x-amazon-apigateway-request-validator": "all",
        "paths": {"/u": {"post": {
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/U"}}}},
            "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200", "responseTemplates": {"application/json": "ok"}}}}}}},
        "components": {"schemas": {"U": {
            "type": "object", "required": ["role"],
            "properties": {"role": {"const": "user"}, "age": {"exclusiveMinimum": 17},
                           "ids": {"prefixItems": [{"type": "integer"}]}},
            "dependentRequired": {"card": ["cvv"]}}}},
    });
    import_and_serve(&g, "", &doc.to_string(), "d.test");
    for (body, status) in [
        (r#"{"role":"user","age":18,"ids":[1,"b"]}"#, 200),
        (r#"{"role":"admin"}"#, 400),
        (r#"{"role":"user","card":"1"}"#, 400),
        (r#"{"role":"user","ids":["a"]}"#, 400),
        (r#"{"role":"user","age":17}"#, 400),
    ] {
        let r = post(&g, "d.test", "/u", "application/json", body);
        assert_eq!(r.status, status, "{body}: {}", r.text());
    }
}

/// `x-amazon-apigateway-api-key-source: AUTHORIZER`: routes that require a key read it from
/// their Lambda authorizer's `usageIdentifierKey` (the header names none), a route that
/// requires one without such an authorizer is left out with a warning, and the export says
/// the source again.
#[test]
fn keys_named_by_a_lambda_authorizer_import_serve_and_export() {
    const KEY: &str = "partner-0123456789abcdef0123";
    let authz = Upstream::start(|s| {
        let event: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
        let mut v = json!({"principalId": "u", "policyDocument": {"Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}]}});
        if event["headers"]["authorization"] == "with-key" {
            v["usageIdentifierKey"] = json!(KEY);
        }
        let body = v.to_string();
        Action::Raw(
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                .into_bytes(),
        )
    });
    let g = Gw::start(
        &Cfg::new()
            .api("file")
            .route("GET /f", "integration = { type = \"mock\" }")
            .extra(format!(
                "[[usage_plans]]\nname = \"p\"\nstages = [\"keysrc/test\"]\n\n[[api_keys]]\nname = \"partner\"\nvalue = \"{KEY}\"\nplan = \"p\"\n"
            ))
            .toml(),
    );
    let mock = json!({"type": "mock", "responses": {"default": {"statusCode": "200"}}});
    let op = |security: serde_json::Value| {
        json!({"security": security, "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": mock})
    };
    let doc = json!({"openapi": "3.0.1", "info": {"title": "keysrc", "version": "1"},
    "x-amazon-apigateway-api-key-source": "AUTHORIZER",
    "components": {"securitySchemes": {
        "api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"},
        "lambda": {"type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {"type": "request",
                "authorizerUri": format!("http://{}/authorize", authz.addr),
                "identitySource": "method.request.header.Authorization",
                "authorizerResultTtlInSeconds": 0}}}},
    "paths": {
        "/keyed": {"get": op(json!([{"api_key": []}, {"lambda": []}]))},
        "/bare": {"get": op(json!([{"api_key": []}]))},
    }});
    let v = import_and_serve(&g, "", &doc.to_string(), "keysrc.test");
    assert_eq!(v["definition"]["api_key_source"], "AUTHORIZER", "{v}");
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("GET /bare: x-amazon-apigateway-api-key-source AUTHORIZER"),
        "{warnings}"
    );
    let call = |headers: &str| {
        Client::connect(g.addr()).request(
            format!(
                "GET /keyed HTTP/1.1\r\nHost: keysrc.test\r\n{headers}Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    assert_eq!(call("Authorization: with-key\r\n").status, 200);
    // The authorizer named no key: the header's does not count.
    let r = call(&format!("Authorization: without\r\nx-api-key: {KEY}\r\n"));
    assert_eq!(r.status, 403, "{}", r.text());
    // Left out (a key but no authorizer to name it): held, 403.
    assert_eq!(on(&g, "keysrc.test", "/bare").status, 403);
    let oas = admin(
        g.admin(),
        "GET",
        "/apis/keysrc/stages/test/export?type=oas30&extensions=apigateway",
        Some(TOKEN),
    )
    .json();
    assert_eq!(
        oas["x-amazon-apigateway-api-key-source"], "AUTHORIZER",
        "{oas}"
    );
}

/// A route the import cannot take whole answers 403 by its key: left out, `$default` (or
/// `ANY /{proxy+}`) took its requests, unprotected.
#[test]
fn a_route_left_out_is_not_served_by_a_catch_all() {
    let up = Upstream::echo();
    let g = gw();
    let doc = json!({"openapi": "3.0.1", "info": {"title": "held", "version": "1"},
    "components": {"securitySchemes": {"cog": {"type": "apiKey", "name": "Authorization", "in": "header",
        "x-amazon-apigateway-authorizer": {"type": "cognito_user_pools", "providerARNs": ["arn:aws:cognito-idp:x"]}}}},
    "paths": {
        "/admin": {"get": {"security": [{"cog": []}], "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "GET", "uri": format!("http://{}/admin", up.addr), "payloadFormatVersion": "1.0"}}},
        "/$default": {"x-amazon-apigateway-any-method": {"isDefaultRoute": true, "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "http_proxy", "httpMethod": "ANY", "uri": format!("http://{}/", up.addr), "payloadFormatVersion": "1.0"}}}
    }});
    import_and_serve(&g, "", &doc.to_string(), "held.test");
    let r = on(&g, "held.test", "/admin");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.count(), 0);
    assert_eq!(on(&g, "held.test", "/other").status, 200);
}

/// What the import does not take is said, so that `failonwarnings=true` refuses it: another
/// operation beside the default route's, a request authorizer's payload format 1.0 or its
/// credentials (each was dropped without a word).
#[test]
fn what_is_not_taken_is_said() {
    let g = gw();
    let any = json!({"isDefaultRoute": true, "x-amazon-apigateway-integration": {"type": "mock"}});
    let docs = [
        (
            json!({"openapi": "3.0.1", "info": {"title": "d1", "version": "1"}, "paths": {
                "/$default": {"x-amazon-apigateway-any-method": any,
                    "post": {"x-amazon-apigateway-integration": {"type": "mock"}}}}}),
            "paths[\"/$default\"].post: the default route is its x-amazon-apigateway-any-method alone",
        ),
        (
            json!({"openapi": "3.0.1", "info": {"title": "d2", "version": "1"},
                "components": {"securitySchemes": {"lam": {"type": "apiKey", "name": "Authorization", "in": "header",
                    "x-amazon-apigateway-authorizer": {"type": "request", "authorizerUri": "http://127.0.0.1:9/auth",
                        "authorizerPayloadFormatVersion": "1.0", "authorizerCredentials": "arn:aws:iam::1:role/x",
                        "identitySource": "$request.header.Authorization"}}}},
                "paths": {"/a": {"get": {"security": [{"lam": []}], "x-amazon-apigateway-integration": {"type": "mock"}}}}}),
            "authorizerPayloadFormatVersion \"1.0\": the gateway sends payload format 2.0",
        ),
    ];
    for (doc, want) in docs {
        let r = admin_with(g.admin(), "POST", "/apis?mode=import", &doc.to_string());
        assert_eq!(r.status, 201, "{}", r.text());
        let warnings = r.json()["warnings"].clone();
        assert!(
            warnings
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w.as_str().unwrap().contains(want)),
            "{want}: {warnings}"
        );
        let mut strict = doc.clone();
        strict["info"]["title"] = json!(format!("{}s", doc["info"]["title"].as_str().unwrap()));
        let r = admin_with(
            g.admin(),
            "POST",
            "/apis?mode=import&failonwarnings=true",
            &strict.to_string(),
        );
        assert_eq!(r.status, 400, "{}", r.text());
    }
}
