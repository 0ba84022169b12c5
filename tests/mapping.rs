//! Parameter mapping (`request_parameters`, `response_parameters`): headers, query strings and
//! the path of the upstream request rewritten from the request, its body, the context and
//! stage variables; the answer's status and headers by the integration's status — for fresh
//! and cached answers alike. Reserved headers and bad keys are refused at load.

mod common;

use common::*;

fn gateway(up: &Upstream) -> Gw {
    Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .stage_extra("cache = { ttl = \"300s\", capacity = \"1MiB\" }")
            .route(
                "ANY /svc/{proxy+}",
                r#"cache = { enabled = false }
request_parameters = { "append:header.x-a" = "$request.header.y", "overwrite:header.x-user" = "static-$stageVariables.who", "remove:header.x-secret" = "''", "overwrite:path" = "/v2/$request.path.proxy", "remove:querystring.debug" = "", "overwrite:querystring.page" = "${request.querystring.p}", "append:querystring.tenant" = "$request.body.tenant.id", "append:header.x-ctx" = "$context.httpMethod $context.stage $context.routeKey $context.requestId" }
response_parameters = { "404" = { "overwrite:statuscode" = "410", "append:header.x-was" = "$response.header.x-origin", "remove:header.x-internal" = "" } }
integration = { type = "http", uri = "http://up/ignored" }"#,
            )
            .route(
                "GET /d",
                r#"response_parameters = { "200" = { "overwrite:header.date" = "Mon, 01 Jan 2024 00:00:00 GMT" } }
integration = { type = "http", uri = "http://up/d" }"#,
            )
            .route(
                "GET /c",
                r#"response_parameters = { "200" = { "overwrite:header.x-m" = "mapped for $context.identity.sourceIp" } }
integration = { type = "http", uri = "http://up/c" }"#,
            )
            .toml(),
    )
}

#[test]
fn requests_are_rewritten_before_the_upstream() {
    let up = Upstream::echo();
    let g = gateway(&up);
    let body = r#"{"tenant":{"id":"t 9"}}"#;
    let r = Client::connect(g.addr()).request(
        format!("POST /svc/a/b%20c?debug=1&page=3&p=7&keep=1 HTTP/1.1\r\nHost: test\r\ny: yy\r\nx-secret: s\r\nx-user: client\r\nX-Request-Id: rid-1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0];
    // The client's pairs less those replaced, then the new ones (in the keys' order).
    assert_eq!(seen.target, "/v2/a/b%20c?p=7&keep=1&tenant=t%209&page=7");
    assert_eq!(seen.header("x-a"), Some("yy"));
    assert_eq!(seen.headers_named("x-user"), ["static-prod"]);
    assert_eq!(seen.header("x-secret"), None);
    assert_eq!(
        seen.header("x-ctx"),
        Some("POST prod ANY /svc/{proxy+} rid-1")
    );
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        body,
        "the body goes on unchanged"
    );
    // Without `p` (what `page` is overwritten from), the client's own `page` is dropped all
    // the same: an overwrite from a missing value adds nothing and keeps nothing.
    let r = Client::connect(g.addr()).request(
        b"GET /svc/x?page=admin&keep=1 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests()[1].target, "/v2/x?keep=1");
}

#[test]
fn answers_are_mapped_by_the_integrations_status() {
    let up = Upstream::start(|s| {
        let (status, extra) = if s.target.starts_with("/v2/bare") {
            (404, "")
        } else if s.target.starts_with("/v2/") {
            (404, "x-origin: shelf-3\r\nx-internal: secret\r\n")
        } else {
            (200, "Cache-Control: max-age=60\r\nx-m: upstream\r\n")
        };
        Action::Raw(
            format!("HTTP/1.1 {status} X\r\n{extra}Content-Length: 4\r\n\r\nbody").into_bytes(),
        )
    });
    let g = gateway(&up);
    let r = get(g.addr(), "/svc/gone");
    assert_eq!(r.status, 410);
    assert_eq!(r.header("x-was"), Some("shelf-3"));
    assert_eq!(r.header("x-origin"), Some("shelf-3"));
    assert_eq!(r.header("x-internal"), None);
    assert_eq!(r.text(), "body");
    // A header read from what the answer does not have is not added (not added empty).
    let r = get(g.addr(), "/svc/bare");
    assert_eq!(r.status, 410);
    assert!(
        r.headers.iter().all(|(n, _)| n != "x-was"),
        "{:?}",
        r.headers
    );
    // A cached answer is mapped the same way, when stored and when served.
    for want in ["Miss", "Hit"] {
        let r = get(g.addr(), "/c");
        assert_eq!(r.header("x-cache"), Some(want));
        let mapped: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "x-m")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(mapped, ["mapped for 127.0.0.1"], "{want}");
    }
}

#[test]
fn bad_mappings_are_refused_at_load() {
    let dir = TempDir::new();
    for (keys, want) in [
        (r#"request_parameters = { "overwrite:header.host" = "x" }"#, "request_parameters = \"overwrite:header.host\" is not valid: expected a header other than the reserved ones"),
        (r#"request_parameters = { "append:header.x-amz-date" = "x" }"#, "\"append:header.x-amz-date\" is not valid"),
        // The trace context is the gateway's: two traceparents restart the trace.
        (r#"request_parameters = { "overwrite:header.traceparent" = "$request.header.x-tp" }"#, "\"overwrite:header.traceparent\" is not valid"),
        (r#"request_parameters = { "overwrite:path" = "/$request.path.nope" }"#, "is not valid: expected path variables of the route (id)"),
        (r#"request_parameters = { "remove:header.x-a" = "v" }"#, "remove takes no value"),
        (r#"request_parameters = { "rename:header.x-a" = "v" }"#, "expected append|overwrite|remove:header.NAME"),
        (r#"request_parameters = { "append:header.x-a" = "$request.cookie.c" }"#, "$request.cookie.c: expected"),
        (r#"response_parameters = { "200" = { "overwrite:statuscode" = "204" } }"#, "other than 204 and 304"),
        (r#"response_parameters = { "2xx" = { "append:header.x" = "1" } }"#, "response_parameters = \"2xx\" is not valid"),
        // A stage variable the stage lacks: the mapping's key is named, not the integration.
        (r#"request_parameters = { "append:header.x-st" = "$stageVariables.nope" }"#, "routes[\"GET /p/{id}\"].request_parameters.\"append:header.x-st\": on stage \"prod\": stage variable \"nope\" is not defined on this stage"),
        (r#"response_parameters = { "404" = { "append:header.x-st" = "$stageVariables.nope" } }"#, "routes[\"GET /p/{id}\"].response_parameters.\"404\".\"append:header.x-st\": on stage \"prod\": stage variable"),
        // Filters, slices and wildcards, braced or not (not pasted in after the value as text).
        (r#"request_parameters = { "append:header.x-a" = "$request.body.a[?(@.b)]" }"#, "$request.body.a[?(@.b)]: wildcards, slices and filter expressions are not supported"),
        (r#"request_parameters = { "append:header.x-a" = "$request.body.a[0:1]" }"#, "$request.body.a[0:1]: wildcards, slices and filter expressions are not supported"),
        (r#"request_parameters = { "append:header.x-a" = "v-$request.body.a.* x" }"#, "$request.body.a.*: wildcards, slices and filter expressions are not supported"),
        (r#"request_parameters = { "append:header.x-a" = "${request.body.a[?(@.b)]}" }"#, "recursive descent, wildcards and filter expressions are not supported"),
        // Recursive descent below the top, not pasted in after the value as text either.
        (r#"request_parameters = { "overwrite:header.x-b" = "$request.body.a..b" }"#, "$request.body.a..: recursive descent ($request.body..NAME) is not supported"),
    ] {
        let toml = Cfg::new()
            .route("GET /p/{id}", format!("{keys}\nintegration = {{ type = \"http\", uri = \"http://127.0.0.1:9/x\" }}"))
            .toml();
        let path = dir.0.join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["--config"])
            .arg(&path)
            .arg("check")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{keys}");
        assert!(text.contains(want), "{keys}: {text}");
    }
    let toml = Cfg::new()
        .route("GET /m", "request_parameters = { \"append:header.x\" = \"1\" }\nintegration = { type = \"mock\" }")
        .toml();
    let path = dir.0.join("m.toml");
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("this route's is a mock")
            || String::from_utf8_lossy(&out.stderr).contains("this route's is a mock")
    );
}

#[test]
fn mappings_go_through_openapi_export_and_import() {
    let up = Upstream::echo();
    let g = gateway(&up);
    let out = admin(
        g.admin(),
        "GET",
        "/apis/api/stages/prod/export?extensions=apigateway",
        Some(TOKEN),
    )
    .json();
    let i = &out["paths"]["/svc/{proxy+}"]["x-amazon-apigateway-any-method"]
        ["x-amazon-apigateway-integration"];
    assert_eq!(
        i["requestParameters"]["overwrite:path"],
        "/v2/$request.path.proxy"
    );
    assert_eq!(
        i["responseParameters"]["404"]["overwrite:statuscode"],
        "410"
    );
    let doc = out.to_string().replace(&up.addr.to_string(), "127.0.0.1:9");
    let r = admin_with(g.admin(), "POST", "/apis?mode=import&name=again", &doc);
    assert_eq!(r.status, 201, "{}", r.text());
    let routes = r.json()["definition"]["routes"].clone();
    let svc = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "ANY /svc/{proxy+}")
        .unwrap()
        .clone();
    assert_eq!(svc["request_parameters"]["remove:header.x-secret"], "''");
    assert_eq!(
        svc["response_parameters"]["404"]["remove:header.x-internal"],
        ""
    );
}

#[test]
fn values_from_the_request_cannot_escape_their_place() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route(
                "GET /f/{id}",
                r#"request_parameters = { "overwrite:path" = "/users/$request.querystring.u/$request.path.id", "overwrite:querystring.q" = "$request.querystring.q", "append:header.x-h" = "$request.querystring.h" }
integration = { type = "http", uri = "http://up/x" }"#,
            )
            .toml(),
    );
    let r = get(
        g.addr(),
        "/f/7?u=v..w&q=a%26admin%3Dtrue&h=x%0D%0Ainjected:%201",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0];
    // An `&` from the query stays inside its component.
    assert_eq!(
        seen.target,
        "/users/v..w/7?u=v..w&h=x%0D%0Ainjected:%201&q=a%26admin%3Dtrue"
    );
    assert_eq!(seen.header("x-h"), Some("xinjected: 1"));
    assert_eq!(seen.header("injected"), None);
    let r = get(g.addr(), "/f/7?u=a/b");
    assert_eq!(r.status, 200);
    assert!(
        up.requests()[1].target.starts_with("/users/a%2Fb/7"),
        "{}",
        up.requests()[1].target
    );
    // A value that would be a dot segment once an origin decodes it (nginx serves
    // `/users/..%2Fadmin` as `/admin`) is refused, as a client's own path would be.
    for u in ["..", ".", "..%2Fadmin", "%2E%2E", "a%5C..%5Cb", "../x"] {
        let r = get(g.addr(), &format!("/f/7?u={u}"));
        assert_eq!(r.status, 400, "{u}: {}", r.text());
        assert_eq!(
            r.json()["message"],
            "Invalid request path: dot segments are not allowed",
            "{u}"
        );
    }
    assert_eq!(
        up.requests().len(),
        2,
        "a refused request reached the origin"
    );
}

/// A response mapping that sets `Date` is the answer's one `Date` (the gateway adds one only
/// to an answer that came without and whose mapping says none).
#[test]
fn a_mapped_date_is_the_only_date() {
    let up = Upstream::echo();
    let g = gateway(&up);
    let r = get(g.addr(), "/d");
    assert_eq!(r.status, 200, "{}", r.text());
    let dates: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("date"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(dates, ["Mon, 01 Jan 2024 00:00:00 GMT"]);
}

/// An integration's own `headers` give way to the route's mapping of the same header
/// (`overwrite` replaces it, `remove` removes it: the upstream gets one value, the mapped
/// one), and a greedy path variable in them keeps its `/`.
#[test]
fn mappings_replace_the_integrations_own_headers() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route(
                "GET /dup/{id}",
                "request_parameters = { \"overwrite:header.x-t\" = \"mapped\", \"remove:header.x-r\" = \"''\" }\nintegration = { type = \"http\", uri = \"http://up/dup\", headers = { \"x-t\" = \"integ\", \"x-r\" = \"integ-r\", \"x-k\" = \"kept\" } }",
            )
            .route(
                "GET /g/{proxy+}",
                "integration = { type = \"http\", uri = \"http://up/g/{proxy}\", headers = { \"x-p\" = \"{proxy}\" } }",
            )
            .toml(),
    );
    let r = Client::connect(g.addr())
        .request(b"GET /dup/1 HTTP/1.1\r\nHost: h\r\nX-T: client\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.requests()[0];
    assert_eq!(seen.headers_named("x-t"), ["mapped"]);
    assert!(seen.headers_named("x-r").is_empty(), "{:?}", seen.headers);
    assert_eq!(seen.headers_named("x-k"), ["kept"]);
    let r = get(g.addr(), "/g/a/b/c");
    assert_eq!(r.status, 200);
    assert_eq!(up.requests()[1].header("x-p"), Some("a/b/c"));
}
