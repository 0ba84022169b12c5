//! Gateway responses (`gateway_responses` on an API): the answers the gateway writes itself,
//! customised by response type, with DEFAULT_4XX / DEFAULT_5XX for the rest; the same from
//! an OpenAPI import (`x-amazon-apigateway-gateway-responses`) and back out in an export.

mod common;

use serde_json::json;

use common::*;

fn req(gw: &Gw, path: &str, headers: &str) -> Resp {
    Client::connect(gw.addr()).request(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: probe/1\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

#[test]
fn errors_are_answered_as_the_api_customised_them() {
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"gone\"\ntargets = [\"{}\"]\n",
                closed_port()
            ))
            .api_extra(
                r#"cors = { allow_origins = ["https://app.example.test"] }
gateway_responses = { THROTTLED = { status = 429, headers = { "retry-after" = "7", "RateLimit-Limit" = "77" }, body = '{"error":"slow down","requestId":"$context.requestId"}' }, DEFAULT_4XX = { headers = { "x-gw" = "$context.error.responseType" }, body = '{"msg":$context.error.messageString,"type":"$context.error.responseType","stage":"$context.stage","who":"$stageVariables.who","route":"$context.routeKey","ua":"$context.identity.userAgent","price":"$5"}' }, INVALID_API_KEY = { status = 401, headers = { "content-type" = "text/plain" }, body = "key please, $context.identity.sourceIp" }, DEFAULT_5XX = { headers = { "ratelimit-policy" = "mine", "ratelimit-limit" = "10" }, body = '{"down":"$context.error.message","path":"$context.path"}' } }"#,
            )
            .route(
                "GET /slow",
                "throttle = { rate = 1, burst = 1 }\nintegration = { type = \"mock\", body = \"ok\" }",
            )
            .route(
                "GET /keyed",
                "api_key_required = true\nintegration = { type = \"mock\", body = \"ok\" }",
            )
            .route(
                "GET /broken",
                "throttle = { rate = 1, burst = 5 }\nintegration = { type = \"http\", uri = \"http://gone/x\" }",
            )
            .toml(),
    );
    assert_eq!(req(&g, "/slow", "").status, 200);
    let r = req(&g, "/slow", "X-Request-Id: rid-123\r\n");
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        json!({"error": "slow down", "requestId": "rid-123"})
    );
    assert_eq!(
        r.header("retry-after"),
        Some("7"),
        "the configured header replaces the gateway's"
    );
    assert_eq!(
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
            .count(),
        1
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    // A configured RateLimit-* field stands for all three of the gateway's.
    assert_eq!(r.header("ratelimit-limit"), Some("77"));
    assert_eq!(r.header("ratelimit-remaining"), None, "{:?}", r.headers);

    // Types not named fall back to DEFAULT_4XX, keeping their own status.
    let r = req(&g, "/nowhere", "Origin: https://app.example.test\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"msg": "Not Found", "type": "RESOURCE_NOT_FOUND", "stage": "prod", "who": "prod", "route": "", "ua": "probe/1", "price": "$5"})
    );
    assert_eq!(r.header("x-gw"), Some("RESOURCE_NOT_FOUND"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.test"),
        "CORS headers still come with a customised answer"
    );

    let r = req(&g, "/keyed", "");
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "key please, 127.0.0.1");
    assert_eq!(r.header("content-type"), Some("text/plain"));

    let r = req(&g, "/broken", "");
    assert_eq!(r.status, 502);
    assert_eq!(r.json(), json!({"down": "Bad Gateway", "path": "/broken"}));
    // A configured RateLimit-* field stands for the throttled route's own (none added).
    assert_eq!(r.headers_named("ratelimit-limit"), ["10"]);
    assert!(
        r.headers_named("ratelimit-remaining").is_empty(),
        "{:?}",
        r.headers
    );
}

/// The request's context as Amazon's variables name it: `$context.resourcePath` the route's
/// path template, `$context.routeKey` the whole key, `$context.domainName` the host without
/// its port, `$context.protocol` what the client spoke.
#[test]
fn context_variables_in_gateway_responses_are_amazons() {
    let g = Gw::start(
        &Cfg::new()
            .listener("h2c = true")
            .api_extra(
                r#"gateway_responses = { DEFAULT_4XX = { body = '{"rp":"$context.resourcePath","rk":"$context.routeKey","d":"$context.domainName","p":"$context.protocol"}' } }"#,
            )
            .route(
                "GET /pets/{id}",
                "api_key_required = true\nintegration = { type = \"mock\", body = \"ok\" }",
            )
            .toml(),
    );
    let r = Client::connect(g.addr()).request(
        b"GET /pets/7 HTTP/1.1\r\nHost: api.example.test:8443\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"rp": "/pets/{id}", "rk": "GET /pets/{id}", "d": "api.example.test", "p": "HTTP/1.1"})
    );
    let addr = g.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("http://api.example.test/pets/7")
            .body(())
            .unwrap();
        let (resp, _) = client
            .ready()
            .await
            .unwrap()
            .send_request(req, true)
            .unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status().as_u16(), 403);
        let mut b = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = b.data().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        got
    });
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["p"], "HTTP/2.0");
}

#[test]
fn imports_and_exports_carry_gateway_responses() {
    let g = Gw::start(
        &Cfg::new()
            .route("GET /f", "integration = { type = \"mock\" }")
            .toml(),
    );
    let doc = json!({"openapi": "3.0.1", "info": {"title": "gr", "version": "1"},
        "x-amazon-apigateway-gateway-responses": {
            "MISSING_AUTHENTICATION_TOKEN": {"statusCode": 404, "responseParameters": {"gatewayresponse.header.x-where": "'nowhere'", "gatewayresponse.header.x-from": "method.request.header.from"},
                "responseTemplates": {"application/json": "{\"message\":$context.error.messageString,\"id\":\"$context.requestId\"}"}},
            "RESOURCE_NOT_FOUND": {"statusCode": "410", "responseTemplates": {"application/json": "{\"gone\":true}"}}},
        "paths": {"/pets": {"get": {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200"}}}}}}});
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &doc.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let w = r.json()["warnings"].to_string();
    assert!(
        w.contains("method.request.header.from") && w.contains("only static values"),
        "{w}"
    );
    for (m, p, b) in [
        ("POST", "/apis/gr/deployments", json!({"stage": "test"})),
        (
            "POST",
            "/domains",
            json!({"host": "gr.test", "api": "gr", "stage": "test"}),
        ),
    ] {
        let r = admin_with(g.admin(), m, p, &b.to_string());
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = Client::connect(g.addr())
        .request(b"GET /nope HTTP/1.1\r\nHost: gr.test\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 410);
    assert_eq!(r.json(), json!({"gone": true}));
    let out = admin(
        g.admin(),
        "GET",
        "/apis/gr/stages/test/export?extensions=apigateway",
        Some(TOKEN),
    )
    .json();
    let mut want = doc["x-amazon-apigateway-gateway-responses"].clone();
    want["MISSING_AUTHENTICATION_TOKEN"]["responseParameters"]
        .as_object_mut()
        .unwrap()
        .remove("gatewayresponse.header.x-from");
    want["RESOURCE_NOT_FOUND"]["statusCode"] = json!(410);
    assert_eq!(out["x-amazon-apigateway-gateway-responses"], want);
    // The same rules as the configuration file.
    let bad = json!({"openapi": "3.0.1", "info": {"title": "bad", "version": "1"}, "paths": {},
        "x-amazon-apigateway-gateway-responses": {"SLOWED": {"statusCode": 429}}});
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &bad.to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("gateway_responses = \\\"SLOWED\\\" is not valid"),
        "{}",
        r.text()
    );
}
