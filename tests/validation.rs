//! Request validation: `[[apis.models]]` (JSON Schema) and a route's `request_validator`,
//! `request_models` and `required_parameters`. Refusals answer as Amazon API Gateway does
//! (400 "Invalid request body", "Missing required request parameters: [...]") and never reach
//! the integration; valid requests reach it unchanged (a chunked body decoded, with a length).

mod common;

use serde_json::json;

use common::*;

const PET: &str = r#"{ "type": "object", "required": ["name"], "properties": { "name": { "type": "string" }, "tag": { "type": "string" }, "price": { "type": "number", "maximum": 100, "exclusiveMaximum": true } } }"#;

fn gateway(up: &Upstream, log: &std::path::Path) -> Gw {
    Gw::start(
        &Cfg::new()
            .limits("max_body = \"1KiB\"")
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .stage_extra(format!(
                "access_log = {{ path = \"{}\", format = '$context.status $context.error.responseType $context.error.validationErrorString' }}",
                log.display()
            ))
            .api_extra(format!(
                "gateway_responses = {{ BAD_REQUEST_BODY = {{ body = '{{\"message\":\"Invalid request body\",\"why\":$context.error.messageString,\"detail\":\"$context.error.validationErrorString\"}}' }} }}\n\n  [[apis.models]]\n  name = \"Pet\"\n  content_type = \"application/json\"\n  schema = '''{PET}'''\n\n  [[apis.models]]\n  name = \"Anything\"\n  schema = '''{{ \"type\": \"object\" }}'''\n"
            ))
            .route(
                "DELETE /pets/{id}",
                r#"request_validator = "body"
request_models = { "application/json" = "Anything" }
integration = { type = "mock", body = "gone" }"#,
            )
            .route(
                "POST /pets",
                r#"request_validator = "all"
request_models = { "application/json" = "Pet" }
required_parameters = ["method.request.header.X-Tenant", "querystring.limit"]
integration = { type = "http", uri = "http://up/pets" }"#,
            )
            .route(
                "POST /loose",
                r#"request_validator = "params"
request_models = { "application/json" = "Pet" }
integration = { type = "http", uri = "http://up/loose" }"#,
            )
            .route(
                "POST /any/{id}",
                r#"request_validator = "body"
request_models = { "$default" = "Pet" }
required_parameters = ["path.id"]
integration = { type = "mock", body = "ok" }"#,
            )
            .toml(),
    )
}

/// An empty body is checked as `{}`: a model that takes any object lets a bodiless DELETE by.
#[test]
fn an_empty_body_is_checked_as_an_empty_object() {
    let up = Upstream::echo();
    let dir = TempDir::new();
    let g = gateway(&up, &dir.0.join("access.log"));
    let del = |body: &str| {
        Client::connect(g.addr()).request(
            format!("DELETE /pets/7 HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                .as_bytes(),
        )
    };
    let r = del("");
    assert_eq!((r.status, r.text()), (200, "gone".to_string()));
    assert_eq!(del("[1]").status, 400);
}

fn post(g: &Gw, target: &str, headers: &str, body: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!(
            "POST {target} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn requests_are_checked_before_the_integration() {
    let up = Upstream::echo();
    let dir = TempDir::new();
    let log = dir.0.join("access.log");
    let g = gateway(&up, &log);
    let ok_params = "x-tenant: t1\r\nContent-Type: application/json\r\n";

    let r = post(
        &g,
        "/pets",
        "Content-Type: application/json\r\n",
        r#"{"name":"rex"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"message": "Missing required request parameters: [X-Tenant, limit]"})
    );
    // An empty value is missing too.
    let r = post(&g, "/pets?limit=", "x-tenant: t1\r\n", r#"{"name":"rex"}"#);
    assert_eq!(
        r.json(),
        json!({"message": "Missing required request parameters: [limit]"})
    );

    for (body, why) in [
        (r#"{"tag":"dog"}"#, "\\\"name\\\" is a required property"),
        (r#"{"name":7}"#, "7 is not of type \\\"string\\\""),
        // Draft 4's boolean exclusiveMaximum.
        (r#"{"name":"rex","price":100}"#, "100"),
        ("not json", "the body is not JSON"),
        // An empty body is checked as `{}` (as Amazon does).
        ("", "\\\"name\\\" is a required property"),
    ] {
        let r = post(&g, "/pets?limit=5", ok_params, body);
        assert_eq!(r.status, 400, "{body}");
        let v = r.json();
        assert_eq!(v["message"], "Invalid request body", "{body}");
        assert_eq!(v["why"], "Invalid request body");
        // Escaped for a JSON string, as Amazon API Gateway's validationErrorString is.
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains(&why.replace("\\\"", "\"")),
            "{body}: {v}"
        );
    }
    assert_eq!(
        up.count(),
        0,
        "refused requests never reach the integration"
    );

    let r = post(
        &g,
        "/pets?limit=5",
        ok_params,
        r#"{"name":"rex","price":99.5}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], r#"{"name":"rex","price":99.5}"#);

    // Another content type has no model here: not checked. "params" routes skip the body.
    let r = post(
        &g,
        "/pets?limit=5",
        "x-tenant: t1\r\nContent-Type: text/plain\r\n",
        "hi",
    );
    assert_eq!(r.status, 200);
    let r = post(&g, "/loose", "Content-Type: application/json\r\n", "{}");
    assert_eq!(r.status, 200);
    // Two Content-Types: the body is not checked against one while the upstream, which gets
    // both, might read it as the other.
    let r = post(
        &g,
        "/pets?limit=5",
        "x-tenant: t1\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\n",
        "{}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "Invalid request body");
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("more than one Content-Type"));
    // One line naming two is refused alike; an empty one, or parameters alone, is checked as
    // JSON, as no Content-Type at all is.
    for ct in ["application/json,text/plain", "", ";charset=utf-8"] {
        let r = post(
            &g,
            "/pets?limit=5",
            &format!("x-tenant: t1\r\nContent-Type: {ct}\r\n"),
            r#"{"name":7}"#,
        );
        assert_eq!(r.status, 400, "{ct:?}: {}", r.text());
    }
    // A required header is there when any copy of it has a value (as a query string is).
    for tenant in [
        "x-tenant: \r\nx-tenant: t1\r\n",
        "x-tenant: t1\r\nx-tenant: \r\n",
    ] {
        let r = post(
            &g,
            "/pets?limit=5",
            &format!("{tenant}Content-Type: application/json\r\n"),
            r#"{"name":"rex"}"#,
        );
        assert_eq!(r.status, 200, "{tenant:?}: {}", r.text());
    }
    // $default covers every content type.
    let r = post(&g, "/any/7", "Content-Type: text/plain\r\n", "{}");
    assert_eq!(r.status, 400);
    let r = post(
        &g,
        "/any/7",
        "Content-Type: text/plain\r\n",
        r#"{"name":"a"}"#,
    );
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));

    // The reason is in the access log (quotes escaped as \x22 in a text format, as nginx does).
    assert!(
        eventually(IO_TIMEOUT, || {
            std::fs::read_to_string(&log).is_ok_and(|t| {
            t.contains("400 BAD_REQUEST_PARAMETERS Missing required request parameters: [X-Tenant, limit]")
                && t.contains("400 BAD_REQUEST_BODY [\\x22name\\x22 is a required property]")
                && t.contains("[100 is greater than or equal to the maximum of 100]")
        })
        }),
        "{:?}",
        std::fs::read_to_string(&log)
    );
}

#[test]
fn chunked_and_expect_continue_bodies_are_buffered_once() {
    let up = Upstream::echo();
    let dir = TempDir::new();
    let g = gateway(&up, &dir.0.join("access.log"));
    let mut c = Client::connect(g.addr());
    // A chunked body in pieces, then a second request on the same connection.
    let first = "POST /pets?limit=1 HTTP/1.1\r\nHost: test\r\nx-tenant: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"nam\r\n9\r\ne\":\"rex\"}\r\n0\r\n\r\n";
    let second =
        "POST /pets?limit=1 HTTP/1.1\r\nHost: test\r\nx-tenant: t\r\nContent-Length: 2\r\n\r\n{}";
    c.send(format!("{first}{second}").as_bytes());
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["body"], r#"{"name":"rex"}"#);
    assert_eq!(seen["headers"]["content-length"], "14");
    assert!(seen["headers"].get("transfer-encoding").is_none());
    let r = c.read_response(false).unwrap();
    assert_eq!(
        r.status, 400,
        "the pipelined request is read after the decoded body"
    );

    // Expect: 100-continue gets its interim answer before the body is sent.
    let mut c = Client::connect(g.addr());
    c.send(b"POST /pets?limit=1 HTTP/1.1\r\nHost: test\r\nx-tenant: t\r\nExpect: 100-continue\r\nContent-Length: 14\r\nConnection: close\r\n\r\n");
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut c.stream, &mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(br#"{"name":"rex"}"#);
    assert_eq!(c.read_response(false).unwrap().status, 200);

    // Over limits.max_body (1 KiB) as chunks: 413, and the connection closes.
    let big = "a".repeat(2000);
    let mut c = Client::connect(g.addr());
    let r = c.request(
        format!("POST /pets?limit=1 HTTP/1.1\r\nHost: test\r\nx-tenant: t\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n{big}\r\n0\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 413);
}

#[test]
fn openapi_models_and_validators_import_serve_and_export() {
    let g = Gw::start(
        &Cfg::new()
            .route("GET /f", "integration = { type = \"mock\" }")
            .toml(),
    );
    let doc = json!({"openapi": "3.0.1", "info": {"title": "shop", "version": "1"},
        "x-amazon-apigateway-request-validators": {
            "everything": {"validateRequestBody": true, "validateRequestParameters": true},
            "none": {"validateRequestBody": false, "validateRequestParameters": false}},
        "x-amazon-apigateway-request-validator": "everything",
        "components": {"schemas": {
            "Category": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
            "Pet": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "category": {"$ref": "#/components/schemas/Category"}}}}},
        "paths": {
            "/pets": {"post": {
                "parameters": [{"name": "dryRun", "in": "query", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Pet"}}}},
                "responses": {"200": {"description": "ok"}},
                "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200"}}}}},
            "/free": {"post": {
                "x-amazon-apigateway-request-validator": "none",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["x"]}}}},
                "responses": {"200": {"description": "ok"}},
                "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200"}}}}}}});
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &doc.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["warnings"], json!([]));
    for (m, p, b) in [
        ("POST", "/apis/shop/deployments", json!({"stage": "test"})),
        (
            "POST",
            "/domains",
            json!({"host": "shop.test", "api": "shop", "stage": "test"}),
        ),
    ] {
        let r = admin_with(g.admin(), m, p, &b.to_string());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let post = |target: &str, body: &str| {
        Client::connect(g.addr()).request(
            format!("POST {target} HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        )
    };
    assert_eq!(
        post("/pets", r#"{"name":"rex"}"#).json(),
        json!({"message": "Missing required request parameters: [dryRun]"})
    );
    // The model's reference to another schema of the document is followed.
    let r = post("/pets?dryRun=1", r#"{"name":"rex","category":{"id":"x"}}"#);
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"message": "Invalid request body"}))
    );
    assert_eq!(
        post("/pets?dryRun=1", r#"{"name":"rex","category":{"id":3}}"#).status,
        200
    );
    assert_eq!(
        post("/free", "{}").status,
        200,
        "validator \"none\" checks nothing"
    );

    let out = admin(
        g.admin(),
        "GET",
        "/apis/shop/stages/test/export?extensions=apigateway",
        Some(TOKEN),
    )
    .json();
    let op = &out["paths"]["/pets"]["post"];
    assert_eq!(op["x-amazon-apigateway-request-validator"], "all");
    assert_eq!(
        out["x-amazon-apigateway-request-validators"]["all"],
        json!({"validateRequestBody": true, "validateRequestParameters": true})
    );
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Pet"
    );
    assert_eq!(op["parameters"][0]["name"], "dryRun");
    assert_eq!(
        out["components"]["schemas"]["Pet"]["required"],
        json!(["name"])
    );
    // The export imports back as the same routes and models.
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis?mode=import&name=again",
        &out.to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let again = r.json()["definition"].clone();
    let first = admin(g.admin(), "GET", "/apis/shop", Some(TOKEN)).json()["definition"].clone();
    assert_eq!(again["routes"], first["routes"]);
    let sorted = |d: &serde_json::Value| {
        let mut m = d["models"].as_array().unwrap().clone();
        m.sort_by_key(|x| x["name"].to_string());
        m
    };
    assert_eq!(sorted(&again), sorted(&first));
}

#[test]
fn http2_bodies_are_validated_too() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .listener("h2c = true")
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra(format!("gateway_responses = {{ BAD_REQUEST_BODY = {{ headers = {{ \"x-why\" = \"$context.error.validationErrorString\" }} }} }}\n\n  [[apis.models]]\n  name = \"Pet\"\n  schema = '''{PET}'''\n"))
            .route(
                "POST /pets",
                "request_validator = \"body\"\nrequest_models = { \"application/json\" = \"Pet\" }\nintegration = { type = \"http\", uri = \"http://up/pets\" }",
            )
            .toml(),
    );
    // A control byte of the body (DEL) quoted in a header the API's gateway response adds:
    // dropped there, so the answer is one HTTP/1.1 and HTTP/2 clients can read.
    let del = "[\"a\u{7f}b\"]";
    let r = Client::connect(g.addr()).request(
        format!(
            "POST /pets HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{del}",
            del.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 400);
    let why = r.header("x-why").unwrap_or_default();
    assert!(
        why.contains("is not of type") && !why.contains('\u{7f}'),
        "{why:?}"
    );
    let addr = g.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        for (body, want) in [
            (r#"{"name":"rex"}"#, 200),
            (r#"{"tag":"x"}"#, 400),
            ("[\"a\u{7f}b\"]", 400),
        ] {
            let req = http::Request::builder()
                .method("POST")
                .uri("http://api.test/pets")
                .body(())
                .unwrap();
            let mut c = client.clone().ready().await.unwrap();
            // No content-length, in three DATA frames.
            let (resp, mut send) = c.send_request(req, false).unwrap();
            let parts: Vec<&[u8]> = body.as_bytes().chunks(5).collect();
            for (i, p) in parts.iter().enumerate() {
                send.send_data(bytes::Bytes::copy_from_slice(p), i + 1 == parts.len())
                    .unwrap();
            }
            let resp = resp.await.unwrap();
            assert_eq!(resp.status().as_u16(), want, "{body}");
            let mut b = resp.into_body();
            let mut got = Vec::new();
            while let Some(chunk) = b.data().await {
                let chunk = chunk.unwrap();
                let _ = b.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            let v: serde_json::Value = serde_json::from_slice(&got).unwrap();
            if want == 200 {
                assert_eq!(v["body"], body);
                assert_eq!(v["headers"]["content-length"], body.len().to_string());
            } else {
                assert_eq!(v, json!({"message": "Invalid request body"}));
            }
        }
    });
}

#[test]
fn bodies_held_whole_are_bounded_per_shard() {
    // 4 KiB of body memory: a body counts 16 times its size as it arrives, so one 200-byte
    // body (3,200) fits, and a second one while the first is held does not.
    use std::sync::{mpsc, Mutex};
    let (arrived_tx, arrived) = mpsc::channel();
    let (gate, gate_rx) = mpsc::channel::<()>();
    let (arrived_tx, gate_rx) = (Mutex::new(arrived_tx), Mutex::new(gate_rx));
    let up = Upstream::start(move |s| {
        if s.target.contains("slow") {
            // Held at the upstream until the test says: the gateway holds its body meanwhile.
            arrived_tx.lock().unwrap().send(()).unwrap();
            let _ = gate_rx.lock().unwrap().recv_timeout(IO_TIMEOUT);
        }
        respond(200, "ok")
    });
    let g = Gw::start(
        &Cfg::new()
            .limits("body_memory = \"4KiB\"")
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra(format!(
                "  [[apis.models]]\n  name = \"Pet\"\n  schema = '''{PET}'''\n"
            ))
            .route(
                "POST /pets",
                "request_validator = \"body\"\nrequest_models = { \"application/json\" = \"Pet\" }\nintegration = { type = \"http\", uri = \"http://up/pets\" }",
            )
            .toml(),
    );
    let body = format!(r#"{{"name": "{}"}}"#, "r".repeat(188));
    assert_eq!(body.len(), 200);
    let head = |target: &str, extra: &str| {
        format!("POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 200\r\n{extra}\r\n")
    };
    // A client that declared a body and sent none yet (its 100 Continue says the gateway is
    // waiting for it) holds nothing: declarations alone cannot fill the budget.
    let mut idle = Client::connect(g.addr());
    idle.send(head("/pets", "Expect: 100-continue\r\n").as_bytes());
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut idle.stream, &mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    // A body read whole is held until its request ends (here: at the upstream, held there).
    let mut first = Client::connect(g.addr());
    first.send(format!("{}{body}", head("/pets?slow=1", "")).as_bytes());
    arrived.recv_timeout(IO_TIMEOUT).unwrap();
    // A second body on the same shard does not fit beside it: 503, and it never reaches the
    // integration.
    let r = Client::connect(g.addr())
        .request(format!("{}{body}", head("/pets", "Connection: close\r\n")).as_bytes());
    assert_eq!(
        (r.status, r.json()),
        (503, json!({"message": "Service Unavailable"}))
    );
    // One that waits to be asked for its body is told at once, before sending it.
    let mut asks = Client::connect(g.addr());
    asks.send(head("/pets", "Expect: 100-continue\r\n").as_bytes());
    assert_eq!(asks.read_response(false).unwrap().status, 503);
    // The first goes through, and what it held is given back: the waiting one and the next
    // requests fit.
    gate.send(()).unwrap();
    assert_eq!(first.read_response(false).unwrap().status, 200);
    idle.send(body.as_bytes());
    assert_eq!(idle.read_response(false).unwrap().status, 200);
    for _ in 0..3 {
        let r = Client::connect(g.addr())
            .request(format!("{}{body}", head("/pets", "Connection: close\r\n")).as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.requests().len(), 5);
}

/// A model's `pattern` runs in time linear in the string it checks: look-around and
/// back-references (which need a backtracking engine, up to a million steps a string, so one
/// request of distinct strings held the shard for seconds) are refused at load with the
/// model's key, and other patterns check as before.
#[test]
fn schema_patterns_run_in_linear_time() {
    let cfg = |pattern: &str| {
        Cfg::new()
            .api_extra(format!(
                "  [[apis.models]]\n  name = \"Words\"\n  schema = {{ type = \"array\", items = {{ type = \"string\", pattern = '{pattern}' }} }}\n"
            ))
            .route(
                "POST /w",
                "request_validator = \"body\"\nrequest_models = { \"application/json\" = \"Words\" }\nintegration = { type = \"mock\", body = \"ok\" }",
            )
            .toml()
    };
    let dir = TempDir::new();
    for pattern in [r"^(\w+\s?)*(?=\s*$)\1$", r"^(?=.*[A-Z]).{8,}$", r"^(a)\1$"] {
        let path = dir.0.join("c.toml");
        std::fs::write(&path, cfg(pattern)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["--config", path.to_str().unwrap(), "check"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && text.contains("models[\"Words\"].schema: is not a valid JSON Schema")
                && text.contains("look-around and back-references are not supported"),
            "{pattern}: {text}"
        );
    }
    let g = Gw::start(&cfg(r"^(\w+\s?)*$"));
    // Distinct failing strings, each a catastrophe for a backtracking engine.
    let words: Vec<String> = (0..200)
        .map(|i| format!("{} {i}!", "ab cd ef gh ij kl mn op".repeat(4)))
        .collect();
    let body = serde_json::to_string(&words).unwrap();
    let r = post(&g, "/w", "Content-Type: application/json\r\n", &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "Invalid request body");
    let r = post(&g, "/w", "", r#"["ab cd", "ef"]"#);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

/// A `request_models` key that is not a bare media type (or `$default`) would never match a
/// request, whose body would then go unchecked: refused at load with its key.
#[test]
fn request_model_keys_that_could_never_match_are_refused() {
    for ct in ["application/json; charset=utf-8", "json", "application/"] {
        let (ok, text) = check_config(
            &Cfg::new()
                .api_extra("  [[apis.models]]\n  name = \"Pet\"\n  schema = { type = \"object\" }\n")
                .route(
                    "POST /p",
                    format!("request_validator = \"body\"\nrequest_models = {{ \"{ct}\" = \"Pet\" }}\nintegration = {{ type = \"mock\", body = \"ok\" }}"),
                )
                .toml(),
        );
        assert!(!ok, "{ct}: {text}");
        assert!(
            text.contains(&format!("request_models.{ct}")) && text.contains("is not a media type"),
            "{ct}: {text}"
        );
    }
}

#[test]
fn validation_that_could_never_hold_is_refused_at_load() {
    let conf = |route: &str, limits: &str| {
        check_config(
            &Cfg::new()
                .limits(limits)
                .api_extra("  [[apis.models]]\n  name = \"Pet\"\n  schema = { type = \"object\" }\n\n  [[apis.models]]\n  name = \"Any\"\n  schema = { type = \"array\" }\n")
                .route("POST /p", format!("{route}\nintegration = {{ type = \"mock\", body = \"ok\" }}"))
                .toml(),
        )
    };
    // Two keys for one media type (matched without case): one would never be used.
    let (ok, text) = conf(
        "request_validator = \"body\"\nrequest_models = { \"application/json\" = \"Pet\", \"Application/JSON\" = \"Any\" }",
        "",
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("request_models.application/json") && text.contains("again"),
        "{text}"
    );
    // A required header the gateway drops before the upstream (underscores, by default).
    let required = "request_validator = \"params\"\nrequired_parameters = [\"header.x_tenant\"]";
    let (ok, text) = conf(required, "");
    assert!(!ok, "{text}");
    assert!(
        text.contains("required_parameters[0]") && text.contains("underscores_in_headers"),
        "{text}"
    );
    let (ok, text) = conf(required, "underscores_in_headers = \"allow\"");
    assert!(ok, "{text}");
}
