//! Mapping templates (REST APIs): request templates by content type with the passthrough
//! behaviours (415 as Amazon API Gateway), integration responses chosen by a regex on the
//! integration's status with their status, headers and response templates — for http and
//! mock integrations — and bounded evaluation (a runaway template is a 500, not a hung shard).

mod common;

use serde_json::json;

use common::*;

const PETS: &str = r#"[ { "id": 1, "type": "dog", "price": 249.99 }, { "id": 2, "type": "cat", "price": 124.99 }, { "id": 3, "type": "fish", "price": 0.99 } ]"#;

/// The developer guide's PetStore response template.
const PETSTORE: &str = "#set($inputRoot = $input.path('$'))\n[\n#foreach($elem in $inputRoot)\n  {\n    \"description\" : \"Item $elem.id is a $elem.type.\",\n    \"askingPrice\" : $elem.price\n  }#if($foreach.hasNext),#end\n\n#end\n]";

fn gateway(up: &Upstream) -> Gw {
    let tpl = |s: &str| serde_json::to_string(s).unwrap();
    Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route(
                "POST /dogs",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://up/dogs\", request_templates = {{ \"application/json\" = {} }}, passthrough_behavior = \"never\" }}",
                    tpl("#set($inputRoot = $input.path('$'))\n{\n  \"dogId\" : \"dog_$inputRoot.id\",\n  \"Age\": $inputRoot.Age,\n  \"stage\": \"$context.stage\",\n  \"tenant\": \"$input.params('x-tenant')\"\n}")
                ),
            )
            .route(
                "POST /open",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://up/open\", request_templates = {{ \"application/json\" = {} }} }}",
                    tpl("{\"wrapped\": $input.json('$')}")
                ),
            )
            .route(
                "POST /maybe",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://up/open\", request_templates = {{ \"application/json\" = {} }} }}",
                    tpl("#if($input.params('x-tenant') == 'json'){\"v\": $input.json('$.v')}#else{\"raw\": \"$util.escapeJavaScript($input.body)\"}#end")
                ),
            )
            .route(
                "GET /big",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://up/big\", request_templates = {{ \"application/json\" = {} }} }}",
                    tpl(&format!("#foreach($i in [1..700]){}#end", "x".repeat(100)))
                ),
            )
            .route(
                "POST /range",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://up/range\", request_templates = {{ \"application/json\" = {} }} }}",
                    tpl("#set($r = $input.path('$'))#foreach($i in [$r.from..$r.to])$i,#end")
                ),
            )
            .route(
                "POST /strict",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://up/open\", request_templates = {{ \"application/xml\" = {} }}, passthrough_behavior = \"when_no_templates\" }}",
                    tpl("<x/>")
                ),
            )
            .route(
                "GET /pets/{status}",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://up/pets/{{status}}\", responses = [ {{ status = 200, templates = {{ \"application/json\" = {} }} }}, {{ selection_pattern = \"4\\\\d{{2}}\", status = 400, headers = {{ \"x-mapped\" = \"yes\" }}, templates = {{ \"application/json\" = {} }} }} ] }}",
                    tpl(PETSTORE),
                    tpl("{\"error\": \"$input.path('$.message')\", \"was\": \"$context.resourcePath\"}")
                ),
            )
            .route(
                "GET /mock",
                format!(
                    "integration = {{ type = \"mock\", status = 200, body = '{PETS}', responses = [ {{ templates = {{ \"application/json\" = {} }} }} ] }}",
                    tpl(PETSTORE)
                ),
            )
            .route(
                "GET /runaway",
                format!(
                    "integration = {{ type = \"mock\", body = \"x\", responses = [ {{ templates = {{ \"application/json\" = {} }} }} ] }}",
                    tpl("#foreach($a in [1..999])#foreach($b in [1..999])x#end#end")
                ),
            )
            .toml(),
    )
}

fn post(g: &Gw, path: &str, ct: &str, body: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nx-tenant: t9\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    )
}

#[test]
fn request_templates_rewrite_the_body_and_passthrough_refuses_as_configured() {
    let up = Upstream::echo();
    let g = gateway(&up);
    // The guide's request example: {"id": 1, "type": "dog", "Age": 11} becomes the dog.
    let r = post(
        &g,
        "/dogs",
        "application/json",
        r#"{"id": 1, "type": "dog", "Age": 11}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen: serde_json::Value = serde_json::from_str(r.json()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen,
        json!({"dogId": "dog_1", "Age": 11, "stage": "prod", "tenant": "t9"})
    );
    // "never": no template for the type, 415.
    let r = post(&g, "/dogs", "text/plain", "hi");
    assert_eq!(
        (r.status, r.json()),
        (415, json!({"message": "Unsupported Media Type"}))
    );
    // "when_no_match" (the default): passed on as it is.
    let r = post(&g, "/open", "text/plain", "hi");
    assert_eq!(r.json()["body"], "hi");
    let r = post(&g, "/open", "application/json", r#"{"a":[1,2]}"#);
    assert_eq!(r.json()["body"], r#"{"wrapped": {"a":[1,2]}}"#);
    // A body the template reads as JSON and that is none: Amazon's 400, the upstream not
    // called.
    let r = post(&g, "/open", "application/json", "not json");
    assert_eq!(r.status, 400, "{}", r.text());
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with(
            "Could not parse request body into json: Could not parse payload into json: "
        ),
        "{m}"
    );
    // Nested past the parser's depth: refused saying so (the reason was empty).
    let deep = format!("{}1{}", "[".repeat(130), "]".repeat(130));
    let r = post(&g, "/open", "application/json", &deep);
    assert_eq!(r.status, 400, "{}", r.text());
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(m.contains("recursion limit exceeded"), "{m}");
    // A body the template writes for a request that came without one, bigger than what goes
    // out with the head: streamed after it.
    for length in ["", "Content-Length: 0\r\n"] {
        let r = Client::connect(g.addr()).request(
            format!("GET /big HTTP/1.1\r\nHost: t\r\n{length}Connection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "{length:?}: {}", r.text());
        assert_eq!(r.json()["body"].as_str().map(str::len), Some(70_000));
    }
    // Read only in a branch taken: a body that is not JSON fails where the template reads it.
    let r = post(&g, "/maybe", "application/json", "plain text");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], r#"{"raw": "plain text"}"#);
    let json_tenant = |body: &str| {
        Client::connect(g.addr()).request(
            format!("POST /maybe HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nx-tenant: json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        )
    };
    let r = json_tenant("plain text");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("Could not parse payload into json"),
        "{}",
        r.text()
    );
    assert_eq!(json_tenant(r#"{"v": 3}"#).json()["body"], r#"{"v": 3}"#);
    // A range whose bounds come from the request: bounded like any loop, whatever the
    // numbers (i64's extremes included), and the shard goes on answering.
    for bounds in [
        r#"{"from":-1e19,"to":1e19}"#,
        r#"{"from":-9223372036854775808,"to":9223372036854775807}"#,
    ] {
        let r = post(&g, "/range", "application/json", bounds);
        assert_eq!(
            (r.status, r.json()),
            (500, json!({"message": "Internal server error"})),
            "{bounds}"
        );
    }
    let r = post(&g, "/range", "application/json", r#"{"from":1,"to":3}"#);
    assert_eq!(r.json()["body"], "1,2,3,");
    // "when_no_templates" with templates for other types: 415.
    assert_eq!(post(&g, "/strict", "application/json", "{}").status, 415);
    assert_eq!(
        up.requests().iter().filter(|s| s.target == "/dogs").count(),
        1
    );
}

/// A compressed body is decoded for the template, and what the template writes goes on
/// without the client's `Content-Encoding` (it is not encoded); a header the template reads
/// with `$input.params` is found whatever the case the client wrote its name in.
#[test]
fn a_rendered_body_goes_on_decoded_and_header_names_match_without_case() {
    use std::io::Write;
    let up = Upstream::echo();
    let g = gateway(&up);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(br#"{"id": 2, "Age": 3}"#).unwrap();
    let gz = e.finish().unwrap();
    let mut req = format!(
        "POST /dogs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nX-Tenant: T2\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    req.extend_from_slice(&gz);
    let r = Client::connect(g.addr()).request(&req);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0];
    assert_eq!(seen.header("content-encoding"), None, "{seen:?}");
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        body,
        json!({"dogId": "dog_2", "Age": 3, "stage": "prod", "tenant": "T2"})
    );
    // Passed on as it came (no template for the type): still encoded, and says so.
    let mut req = format!(
        "POST /open HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    req.extend_from_slice(&gz);
    assert_eq!(Client::connect(g.addr()).request(&req).status, 200);
    let seen = &up.requests()[1];
    assert_eq!(seen.header("content-encoding"), Some("gzip"));
    assert_eq!(seen.body, gz);
}

#[test]
fn integration_responses_are_chosen_by_status_and_rendered() {
    let up = Upstream::start(|s| {
        let (status, body) = if s.target.ends_with("/ok") {
            (200, PETS.to_string())
        } else {
            (404, r#"{"message":"no such pet"}"#.to_string())
        };
        Action::Raw(format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nx-upstream: 1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
    });
    let g = gateway(&up);
    let r = get(g.addr(), "/pets/ok");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!([
            {"description": "Item 1 is a dog.", "askingPrice": 249.99},
            {"description": "Item 2 is a cat.", "askingPrice": 124.99},
            {"description": "Item 3 is a fish.", "askingPrice": 0.99}
        ])
    );
    assert_eq!(
        r.header("x-upstream"),
        None,
        "only what the response maps reaches the client"
    );
    let r = get(g.addr(), "/pets/missing");
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-mapped"), Some("yes"));
    assert_eq!(
        r.json(),
        json!({"error": "no such pet", "was": "/pets/{status}"})
    );
    // A mock's body goes through its response template too.
    let r = get(g.addr(), "/mock");
    assert_eq!(r.json()[2]["description"], "Item 3 is a fish.");
    // A template that runs away stops with a 500, and the shard goes on serving.
    let r = get(g.addr(), "/runaway");
    assert_eq!(
        (r.status, r.json()),
        (500, json!({"message": "Internal server error"}))
    );
    assert_eq!(get(g.addr(), "/mock").status, 200);
}

#[test]
fn bad_templates_are_refused_at_load() {
    // Past 10,000 operands in one chain: refused, not a stack overflow on the first request.
    let long_chain = format!(
        "request_templates = {{ \"application/json\" = \"#set($a = 1{})$a\" }}",
        " + 1".repeat(10_000)
    );
    for (integ, want) in [
        (
            long_chain.as_str(),
            "request_templates.application/json: more than 10000 operands in one chain of operators at byte",
        ),
        (
            "request_templates = { \"application/json\" = \"#if(true)\" }",
            "request_templates.application/json: #if without #end",
        ),
        // A JSONPath or a regular expression that could never run: refused at load, not a 500
        // on every request.
        (
            "request_templates = { \"application/json\" = \"$input.path('$..x')\" }",
            "request_templates.application/json: $input.path('$..x'): JSONPath",
        ),
        (
            "request_templates = { \"text/plain\" = \"{\\\"a\\\": $input.json('a.b')}\" }",
            "request_templates.text/plain: $input.json('a.b'): JSONPath \"a.b\" does not start with $",
        ),
        (
            "responses = [ { templates = { \"application/json\" = \"#set($x='a')$x.matches('(')\" } } ]",
            "responses[0].templates.application/json: .matches('('): not a regular expression",
        ),
        (
            "passthrough_behavior = \"sometimes\"",
            "passthrough_behavior = \"sometimes\" is not valid",
        ),
        (
            "responses = [ { selection_pattern = \"4(\" } ]",
            "responses[0].selection_pattern = \"4(\" is not valid: expected a regular expression",
        ),
        (
            "responses = [ { status = 204 } ]",
            "responses[0].status = 204 is not valid",
        ),
        ("responses = [ {}, {} ]", "two default responses"),
        (
            "responses = [ { headers = { \"x-a\" = \"integration.response.body..a\" } } ]",
            "responses[0].headers.x-a = \"integration.response.body..a\" is not valid",
        ),
        (
            "responses = [ { headers = { \"x-a\" = \"integration.response.header.\" } } ]",
            "names no header",
        ),
        // Keys are media types: any other would never be chosen.
        (
            "request_templates = { \"not a type\" = \"x\" }",
            "request_templates.not a type: is not a media type",
        ),
        (
            "request_templates = { \"application/json; charset=utf-8\" = \"x\" }",
            "request_templates.application/json; charset=utf-8: is not a media type",
        ),
        (
            "responses = [ { templates = { \"json\" = \"x\" } } ]",
            "responses[0].templates.json: is not a media type",
        ),
        // A wildcard is compared as written: it would match only `Content-Type: */*`.
        (
            "request_templates = { \"*/*\" = \"x\" }",
            "request_templates.*/*: is not a media type",
        ),
        (
            "request_templates = { \"text/*\" = \"x\" }",
            "request_templates.text/*: is not a media type",
        ),
        // Types are matched without case: one of two such keys would never be used.
        (
            "request_templates = { \"application/json\" = \"a\", \"Application/JSON\" = \"b\" }",
            "request_templates.application/json: is \"Application/JSON\" again",
        ),
    ] {
        let toml = Cfg::new()
            .route(
                "GET /m",
                format!("integration = {{ type = \"mock\", {integ} }}"),
            )
            .toml();
        let (ok, text) = check_config(&toml);
        assert!(!ok && text.contains(want), "{integ}: {text}");
    }
}

/// A mock's `headers` may not set the headers the gateway frames its answer with (two
/// Content-Lengths, or Transfer-Encoding beside one, break whatever reads the answer): refused
/// at load, as in gateway and integration responses.
#[test]
fn mock_headers_may_not_frame_the_answer() {
    let check = |headers: &str| {
        let toml = Cfg::new()
            .route(
                "GET /m",
                format!(
                    "integration = {{ type = \"mock\", body = \"x\", headers = {{ {headers} }} }}"
                ),
            )
            .toml();
        check_config(&toml)
    };
    for name in [
        "Content-Length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "x-request-id",
    ] {
        let (ok, text) = check(&format!("\"{name}\" = \"100\""));
        assert!(
            !ok && text.contains(&format!(
                "integration.headers = \"{name}\" is not valid: expected a header other than the gateway's own"
            )),
            "{name}: {text}"
        );
    }
    let (ok, text) = check("\"content-type\" = \"text/plain\", \"x-a\" = \"1\"");
    assert!(ok, "{text}");
    let g = Gw::start(
        &Cfg::new()
            .route(
                "GET /m",
                "integration = { type = \"mock\", body = \"x\", headers = { \"x-a\" = \"1\" } }",
            )
            .toml(),
    );
    let r = get(g.addr(), "/m");
    assert_eq!((r.status, r.text().as_str()), (200, "x"));
    assert_eq!(r.header("x-a"), Some("1"));
    assert_eq!(r.header("content-length"), Some("1"));
}

#[test]
fn openapi_import_takes_templates_and_integration_responses() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .route("GET /f", "integration = { type = \"mock\" }")
            .toml(),
    );
    let doc = json!({"swagger": "2.0", "info": {"title": "tpl", "version": "1"}, "paths": {
        "/hello/{name}": {"get": {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "mock", "requestTemplates": {"application/json": "{\"statusCode\": 200}"},
                "responses": {"default": {"statusCode": "200", "responseTemplates": {"application/json": "{\"hello\": \"$input.params('name')\"}"}}}}}},
        "/dogs": {"post": {"responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {"type": "http", "httpMethod": "POST", "uri": format!("http://{}/dogs", up.addr),
                "passthroughBehavior": "WHEN_NO_TEMPLATES",
                "requestTemplates": {"application/json": "{\"dog\": \"dog_$input.path('$.id')\"}"},
                "responses": {"default": {"statusCode": "201", "responseTemplates": {"application/json": "{\"sent\": $input.path('$.body')}"}}}}}}}});
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &doc.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["warnings"], json!([]));
    for (m, p, b) in [
        ("POST", "/apis/tpl/deployments", json!({"stage": "test"})),
        (
            "POST",
            "/domains",
            json!({"host": "tpl.test", "api": "tpl", "stage": "test"}),
        ),
    ] {
        assert_eq!(admin_with(g.admin(), m, p, &b.to_string()).status, 201);
    }
    let r = Client::connect(g.addr())
        .request(b"GET /hello/rex HTTP/1.1\r\nHost: tpl.test\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.json()), (200, json!({"hello": "rex"})));
    let body = r#"{"id": 7}"#;
    let r = Client::connect(g.addr()).request(
        format!("POST /dogs HTTP/1.1\r\nHost: tpl.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // The upstream echoes what it got as a string; the template writes it in place.
    assert_eq!(r.json(), json!({"sent": {"dog": "dog_7"}}));
    let r = Client::connect(g.addr()).request(
        b"POST /dogs HTTP/1.1\r\nHost: tpl.test\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(r.status, 415);
}

#[test]
fn a_mocks_request_template_chooses_its_integration_response() {
    let tpl = |s: &str| serde_json::to_string(s).unwrap();
    let g = Gw::start(
        &Cfg::new()
            .route(
                "GET /m",
                format!(
                    "integration = {{ type = \"mock\", request_templates = {{ \"application/json\" = {} }}, responses = [ {{ templates = {{ \"application/json\" = {} }} }}, {{ selection_pattern = \"5\\\\d{{2}}\", status = 503, templates = {{ \"application/json\" = {} }} }} ] }}",
                    tpl("#if($input.params('fail') == 'yes'){\"statusCode\": 500}#else{\"statusCode\": 200}#end"),
                    tpl("{\"ok\": true}"),
                    tpl("{\"ok\": false, \"id\": \"$context.requestId\"}")
                ),
            )
            .toml(),
    );
    let r = get(g.addr(), "/m");
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let r = Client::connect(g.addr()).request(
        b"GET /m?fail=yes HTTP/1.1\r\nHost: t\r\nX-Request-Id: r-5\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.json()),
        (503, json!({"ok": false, "id": "r-5"}))
    );
}

#[test]
fn integration_responses_map_headers_from_the_integrations_answer() {
    let up = Upstream::start(|_| {
        let body =
            r#"{"redirect": {"url": "https://example.test/next"}, "id": 42, "tags": ["a", "b"]}"#;
        Action::Raw(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-userid: u-7\r\nx-multi: one\r\nx-multi: two\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
    });
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route(
                "GET /m",
                "integration = { type = \"http\", uri = \"http://up/m\", responses = [ { headers = { \
                 \"Location\" = \"integration.response.body.redirect.url\", \
                 \"x-user-id\" = \"integration.response.header.X-UserId\", \
                 \"x-all\" = \"integration.response.multivalueheader.x-multi\", \
                 \"x-tags\" = \"integration.response.body.tags\", \
                 \"x-missing\" = \"integration.response.header.x-nope\", \
                 \"x-who\" = \"stageVariables.who\", \
                 \"x-rid\" = \"context.requestId\", \
                 \"x-quoted\" = \"'static'\", \
                 \"x-plain\" = \"plain text\" } } ] }",
            )
            .toml(),
    );
    let r = Client::connect(g.addr())
        .request(b"GET /m HTTP/1.1\r\nHost: t\r\nX-Request-Id: rid-9\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("location"), Some("https://example.test/next"));
    assert_eq!(r.header("x-user-id"), Some("u-7"));
    assert_eq!(r.header("x-all"), Some("one,two"));
    assert_eq!(r.header("x-tags"), Some(r#"["a","b"]"#));
    assert_eq!(
        r.header("x-missing"),
        None,
        "an absent source leaves the header out"
    );
    assert_eq!(r.header("x-who"), Some("prod"));
    assert_eq!(r.header("x-rid"), Some("rid-9"));
    assert_eq!(r.header("x-quoted"), Some("static"));
    assert_eq!(r.header("x-plain"), Some("plain text"));
    assert_eq!(
        r.header("x-userid"),
        None,
        "only what the response maps reaches the client"
    );
    // Without a template, the body goes as it came.
    assert_eq!(r.json()["id"], 42);
}

#[test]
fn templates_and_integration_responses_export_and_import_back() {
    let tpl = |s: &str| serde_json::to_string(s).unwrap();
    let g = Gw::start(
        &Cfg::new()
            .route(
                "GET /m/{name}",
                format!(
                    "integration = {{ type = \"mock\", body = '{PETS}', request_templates = {{ \"application/json\" = {} }}, passthrough_behavior = \"when_no_templates\", responses = [ {{ status = 200, headers = {{ \"x-first\" = \"integration.response.body[0].type\" }}, templates = {{ \"application/json\" = {} }} }}, {{ selection_pattern = \"5\\\\d{{2}}\", status = 502, templates = {{ \"application/json\" = {} }} }} ] }}",
                    tpl("#if($input.params('name') == 'bad'){\"statusCode\": 500}#else{\"statusCode\": 200}#end"),
                    tpl(PETSTORE),
                    tpl("{\"failed\": \"$input.params('name')\"}")
                ),
            )
            .toml(),
    );
    let r = admin_with(
        g.admin(),
        "GET",
        "/apis/api/stages/prod/export?extensions=apigateway",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    let i = &doc["paths"]["/m/{name}"]["get"]["x-amazon-apigateway-integration"];
    assert_eq!(i["type"], "mock");
    assert_eq!(i["passthroughBehavior"], "when_no_templates");
    assert!(i["requestTemplates"]["application/json"]
        .as_str()
        .unwrap()
        .contains("statusCode\": 500"));
    assert_eq!(i["responses"]["default"]["statusCode"], "200");
    assert_eq!(
        i["responses"]["default"]["responseTemplates"]["application/json"],
        PETSTORE
    );
    assert_eq!(
        i["responses"]["default"]["responseParameters"]["method.response.header.x-first"],
        "integration.response.body[0].type"
    );
    assert_eq!(i["responses"]["5\\d{2}"]["statusCode"], "502");

    // The exported document imports as an API that answers the same.
    let mut doc = doc;
    doc["info"]["title"] = json!("again");
    let r = admin_with(g.admin(), "POST", "/apis?mode=import", &doc.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    for (m, p, b) in [
        ("POST", "/apis/again/deployments", json!({"stage": "test"})),
        (
            "POST",
            "/domains",
            json!({"host": "again.test", "api": "again", "stage": "test"}),
        ),
    ] {
        assert_eq!(admin_with(g.admin(), m, p, &b.to_string()).status, 201);
    }
    for host in ["t", "again.test"] {
        let ask = |path: &str| {
            Client::connect(g.addr()).request(
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
        };
        let r = ask("/m/rex");
        assert_eq!(r.status, 200, "{host}: {}", r.text());
        assert_eq!(r.header("x-first"), Some("dog"), "{host}");
        assert_eq!(r.json()[1]["description"], "Item 2 is a cat.", "{host}");
        let r = ask("/m/bad");
        assert_eq!(
            (r.status, r.json()),
            (502, json!({"failed": "bad"})),
            "{host}"
        );
    }
}

/// Values a template builds count against a budget (16 MiB plus 4 bytes per byte of body)
/// when they are made: a list doubled in a loop, a body split at every comma or a replace
/// that inserts the body between its own characters stop with 500, as the output limit does,
/// instead of taking the shard's memory and time; small ones answer as before.
#[test]
fn values_templates_build_are_bounded() {
    let up = Upstream::echo();
    let tpl = |s: &str| serde_json::to_string(s).unwrap();
    let route = |path: &str, t: &str| {
        (
            format!("POST {path}"),
            format!(
                "integration = {{ type = \"http\", uri = \"http://up{path}\", request_templates = {{ \"text/plain\" = {} }} }}",
                tpl(t)
            ),
        )
    };
    let mut cfg = Cfg::new()
        .upstream(format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
            up.addr
        ))
        .route(
            "GET /ping",
            "integration = { type = \"mock\", body = \"pong\" }",
        );
    for (path, t) in [
        (
            "/double",
            "#set($l=[1])#foreach($i in [1..$input.body])#set($l=[$l,$l])#end$l.size()",
        ),
        ("/split", "#set($p = $input.body.split(\",\"))$p.size()"),
        (
            "/replace",
            "#set($b = $input.body)$b.replace(\"\", $b).length()",
        ),
    ] {
        let (k, v) = route(path, t);
        cfg = cfg.route(&k, v);
    }
    let g = Gw::start(&cfg.toml());
    let refused = |path: &str, body: &str| {
        let r = post(&g, path, "text/plain", body);
        assert_eq!(
            (r.status, r.json()),
            (500, json!({"message": "Internal server error"})),
            "{path}"
        );
    };
    let passed = |path: &str, body: &str| post(&g, path, "text/plain", body).json()["body"].clone();
    assert_eq!(passed("/double", "4"), "2");
    refused("/double", "20");
    assert_eq!(passed("/split", "a,b,c"), "3");
    refused("/split", &",".repeat(1 << 20));
    assert_eq!(passed("/replace", "ab"), "8");
    refused("/replace", &"b".repeat(6000));
    assert_eq!(get(g.addr(), "/ping").text(), "pong");
    assert_eq!(
        up.count(),
        3,
        "refused requests never reach the integration"
    );
}

/// An integration's answer that no integration response matches (none without a pattern
/// either) is Amazon's 500, not the integration's answer as it came: its headers (`Server`,
/// cookies) and error pages stay behind the gateway. A GET's and a HEAD's alike, and the
/// connection goes on.
#[test]
fn an_answer_no_integration_response_matches_is_a_500() {
    let up = Upstream::start(|s| {
        let body = if s.method == "HEAD" {
            ""
        } else {
            "internal trace"
        };
        Action::Raw(
            format!("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nServer: secret/1.0\r\nContent-Length: 14\r\n\r\n{body}").into_bytes(),
        )
    });
    let g = Gw::start(
        &Cfg::new()
            .route(
                "GET /t",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://{}/t\", responses = [ {{ selection_pattern = \"4\\\\d{{2}}\", status = 400 }} ] }}",
                    up.addr
                ),
            )
            .toml(),
    );
    let mut c = Client::connect(g.addr());
    c.send(b"GET /t HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.read_response(false).expect("an answer");
    assert_eq!(
        (r.status, r.text()),
        (500, r#"{"message":"Internal server error"}"#.to_string())
    );
    assert_eq!(r.header("server"), None);
    c.send(b"HEAD /t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.read_response(true).expect("a second answer");
    assert_eq!(r.status, 500);
}

/// An integration's answer is rendered decoded: the integration is asked for it as it is
/// (the client's `Accept-Encoding` stays with the gateway), and one encoded anyway is
/// decoded first — with or without a template.
#[test]
fn integration_responses_read_the_answer_decoded() {
    let up = Upstream::start(|s| {
        if s.target == "/empty" {
            // Encoded, and empty (a HEAD's, say): nothing to decode.
            return Action::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n".to_vec(),
            );
        }
        let body =
            json!({"msg": "hi", "ae": s.header("accept-encoding").unwrap_or("none")}).to_string();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, body.as_bytes()).unwrap();
        let z = e.finish().unwrap();
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
            z.len()
        )
        .into_bytes();
        out.extend_from_slice(&z);
        Action::Raw(out)
    });
    let tpl =
        serde_json::to_string("{\"m\": \"$input.path('$.msg')\", \"ae\": \"$input.path('$.ae')\"}")
            .unwrap();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route(
                "GET /gz",
                format!("integration = {{ type = \"http\", uri = \"http://up/gz\", responses = [ {{ status = 200, templates = {{ \"application/json\" = {tpl} }} }} ] }}"),
            )
            .route(
                "GET /plain",
                "integration = { type = \"http\", uri = \"http://up/gz\", responses = [ { status = 200 } ] }",
            )
            .route(
                "GET /empty",
                "integration = { type = \"http\", uri = \"http://up/empty\", responses = [ { status = 201 } ] }",
            )
            .toml(),
    );
    let get = |path: &str| {
        Client::connect(g.addr()).request(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip, br\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let r = get("/gz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"m": "hi", "ae": "identity"}));
    let r = get("/plain");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"msg": "hi", "ae": "identity"}));
    assert_eq!(r.header("content-encoding"), None);
    let r = get("/empty");
    assert_eq!((r.status, r.text()), (201, String::new()));
}

/// `$context.requestOverride` in a request template and `$context.responseOverride` in a
/// response template, as Amazon API Gateway's overrides: final, over the client's header and
/// query; the answer's status and a header chosen from what the integration answered.
#[test]
fn templates_override_request_and_answer_parameters() {
    let up = Upstream::echo();
    let tpl = |s: &str| serde_json::to_string(s).unwrap();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route(
                "POST /ov/{id}",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://up/ov/{{id}}\", request_templates = {{ \"application/json\" = {} }}, responses = [ {{ status = 200, templates = {{ \"application/json\" = {} }} }} ] }}",
                    tpl("#set($b = $input.path('$'))#set($context.requestOverride.header.X-Tenant = $b.tenant)#set($context.requestOverride.querystring['q'] = 'a b')#set($context.requestOverride.path.id = \"$b.tenant x/y\")$input.json('$')"),
                    tpl("#set($r = $input.path('$'))$input.json('$.headers.x-tenant')#if($r.target.contains('q=a%20b'))#set($context.responseOverride.status = 418)#set($context.responseOverride.header['X-Why'] = \"teapot for $r.method\")#end"),
                ),
            )
            .route(
                "GET /interim",
                format!(
                    "integration = {{ type = \"mock\", body = \"x\", responses = [ {{ templates = {{ \"application/json\" = {} }} }} ] }}",
                    tpl("#set($context.responseOverride.status = 100)b"),
                ),
            )
            .toml(),
    );
    // No interim status for a final answer (its body would read as the next answer).
    let r = get(g.addr(), "/interim");
    assert_eq!(r.status, 500, "{}", r.text());
    let body = r#"{"tenant": "t1"}"#;
    let r = Client::connect(g.addr()).request(
        format!("POST /ov/7?q=client&keep=1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nX-Tenant: evil\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    );
    assert_eq!(r.status, 418, "{}", r.text());
    assert_eq!(r.header("x-why"), Some("teapot for POST"));
    assert_eq!(r.text(), "\"t1\"");
    let seen = &up.requests()[0];
    assert_eq!(seen.headers_named("x-tenant"), vec!["t1"]);
    assert_eq!(seen.target, "/ov/t1%20x/y?keep=1&q=a%20b");
    // An override that makes a `.` or `..` segment is refused, as a mapped path's is: the
    // upstream would resolve it to a path the route does not name.
    // (The template writes "TENANT x/y".)
    // Decoded, and `\` a separator too, as a mapped path is checked.
    for tenant in ["../", "../admin/", "a/./", "..\\", "%2e%2e/"] {
        let body = serde_json::json!({ "tenant": tenant }).to_string();
        let r = Client::connect(g.addr()).request(
            format!("POST /ov/7 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        );
        assert_eq!(r.status, 400, "{tenant}: {}", r.text());
    }
    assert_eq!(up.requests().len(), 1);
    // An override of a header the gateway writes itself, or of the other side's, is refused
    // at load, naming it.
    for (t, want) in [
        ("#set($context.requestOverride.header.Host = 'x')", "Host"),
        (
            "#set($context.responseOverride.status = 500)",
            "only a response template",
        ),
        (
            "#set($context.requestOverride.path.p = 'x')",
            "no path variable of the route",
        ),
    ] {
        let toml = Cfg::new()
            .route(
                "POST /x",
                format!("integration = {{ type = \"http\", uri = \"http://127.0.0.1:9/x\", request_templates = {{ \"application/json\" = {} }} }}", tpl(t)),
            )
            .toml();
        let (ok, text) = check_config(&toml);
        assert!(!ok, "{t}");
        assert!(text.contains(want), "{want}: {text}");
    }
}

/// Amazon's `$context` names a ported template reads: the request's time, the API key it
/// came with, and those Tollgate has no value for as empty strings (a ported template read
/// its own text, and sent invalid JSON).
#[test]
fn templates_read_amazons_context_names() {
    let key = "tmpl-0123456789abcdef0123";
    let g = Gw::start(
        &Cfg::new()
            .route(
                "GET /ctx",
                "api_key_required = true\nintegration = { type = \"mock\", body = \"{}\", responses = [ { templates = { \"application/json\" = '{\"t\": $context.requestTimeEpoch, \"rt\": \"$context.requestTime\", \"k\": \"$context.identity.apiKeyId\", \"kv\": \"$context.identity.apiKey\", \"acct\": \"$context.identity.accountId\", \"user\": \"$context.identity.user\", \"res\": \"$context.resourceId\"}' } } ] }",
            )
            .extra(format!(
                "[[usage_plans]]\nname = \"p\"\nstages = [\"api/prod\"]\n\n[[api_keys]]\nname = \"kk\"\nvalue = \"{key}\"\nplan = \"p\"\n"
            ))
            .toml(),
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let r = Client::connect(g.addr()).request(
        format!("GET /ctx HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let t = v["t"].as_u64().unwrap();
    assert!(t + 1000 >= before && t <= before + 60_000, "{v}");
    let rt = v["rt"].as_str().unwrap();
    assert!(rt.len() == 26 && rt.ends_with(" +0000"), "{rt}");
    assert_eq!(
        (&v["k"], &v["kv"], &v["acct"], &v["user"], &v["res"]),
        (
            &json!("kk"),
            &json!(key),
            &json!(""),
            &json!(""),
            &json!("")
        ),
        "{v}"
    );
}

/// On a route without an authorizer, `$context.authorizer.principalId` is an empty string, as
/// the other names that do not apply are (it came out as its own text).
#[test]
fn the_authorizers_principal_is_empty_without_one() {
    let t = r#"'{"p":"$context.authorizer.principalId","k":"$context.identity.apiKey"}'"#;
    let g = Gw::start(
        &Cfg::new()
            .route(
                "GET /m",
                format!("integration = {{ type = \"mock\", body = \"x\", responses = [ {{ templates = {{ \"application/json\" = {t} }} }} ] }}"),
            )
            .toml(),
    );
    let r = get(g.addr(), "/m");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"p": "", "k": ""}));
}
