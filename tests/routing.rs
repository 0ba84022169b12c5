//! Routing, stages and integrations, end to end: a real gateway on 127.0.0.1:0 and real
//! upstream servers, asserting what a client sees.

mod common;

use common::*;

fn petstore(up: &Upstream, dev: &Upstream) -> String {
    format!(
        r#"
[server]
workers = 2

[[listeners]]
name = "http"
addr = "127.0.0.1:0"

[[upstreams]]
name = "pets"
targets = ["{prod}"]

[[apis]]
name = "petstore"

  [[apis.stages]]
  name = "prod"
  variables = {{ backend = "http://pets", tier = "gold" }}

  [[apis.stages]]
  name = "dev"
  variables = {{ backend = "http://{dev}", tier = "dev" }}

  [[apis.routes]]
  route = "GET /pets"
  integration = {{ type = "http", uri = "${{stageVariables.backend}}/pets", headers = {{ "x-tier" = "${{stageVariables.tier}}" }} }}

  [[apis.routes]]
  route = "GET /pets/{{petId}}"
  integration = {{ type = "http", uri = "${{stageVariables.backend}}/v2/pets/{{petId}}" }}

  [[apis.routes]]
  route = "GET /pets/mine"
  integration = {{ type = "mock", status = 200, body = "mine" }}

  [[apis.routes]]
  route = "POST /pets"
  integration = {{ type = "http", uri = "${{stageVariables.backend}}/pets?src=gw" }}

  [[apis.routes]]
  route = "GET /search/{{term}}"
  integration = {{ type = "http", uri = "${{stageVariables.backend}}/search?role=user&q={{term}}" }}

  [[apis.routes]]
  route = "ANY /files/{{proxy+}}"
  integration = {{ type = "http", uri = "${{stageVariables.backend}}/store/{{proxy}}" }}

  [[apis.routes]]
  route = "GET /hello/{{name}}"
  integration = {{ type = "mock", status = 202, body = '{{"hi":"{{name}}","stage":"${{stageVariables.tier}}","id":"${{context.requestId}}"}}', headers = {{ "content-type" = "application/json", "x-name" = "{{name}}" }} }}

[[apis]]
name = "other"

  [[apis.stages]]
  name = "v1"

  [[apis.routes]]
  route = "GET /things"
  integration = {{ type = "mock", status = 200, body = "other-things" }}

  [[apis.routes]]
  route = "$default"
  integration = {{ type = "mock", status = 404, body = '{{"message":"nothing here"}}' }}

[[domains]]
host = "*"
mappings = [
  {{ base_path = "", api = "petstore", stage = "prod" }},
  {{ base_path = "dev", api = "petstore", stage = "dev" }},
]

[[domains]]
host = "api.example.test"
mappings = [{{ base_path = "v1", api = "other", stage = "v1" }}]

[[domains]]
host = "*.wild.test"
mappings = [{{ base_path = "", api = "other", stage = "v1" }}]
"#,
        prod = up.addr,
        dev = dev.addr
    )
}

fn req(addr: std::net::SocketAddr, method: &str, host: &str, path: &str) -> Resp {
    Client::connect(addr).request(
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn stage_variable_values_are_refused_unless_uri_characters() {
    // A value is pasted into request lines and header values: CR, LF, spaces, quotes, other
    // bytes and overlong values are refused by key, from the file and the admin API alike.
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let good = petstore(&prod, &dev);
    for bad in [
        "gold\\r\\nx-evil: 1",
        "a b",
        "\\\"q\\\"",
        "caf\u{e9}",
        "",
        &"x".repeat(2049),
    ] {
        let toml = good.replace("tier = \"gold\"", &format!("tier = \"{bad}\""));
        assert_ne!(toml, good);
        let dir = TempDir::new();
        let path = dir.0.join("config.toml");
        std::fs::write(&path, toml).unwrap();
        let e = tollgate::Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("apis[\"petstore\"].stages[\"prod\"].variables.tier = ")
                && e.contains("1 to 2048 of the characters a URI may hold"),
            "{bad:?}: {e}"
        );
    }
    // What a URI may hold passes: an IPv6 address, percent-encoding, AWS's own set.
    let toml = good.replace(
        "tier = \"gold\"",
        "tier = \"http://[::1]:8080/a%20b?x=1&y=2#f,~._-@!$'()*+;=\"",
    );
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    tollgate::Config::load(&path).unwrap();
    // Through the admin API (a run-time stage, and a canary's overrides).
    let gw = Gw::start(&Cfg::new().toml());
    let def = serde_json::json!({"name": "shop", "routes": [{"route": "GET /v", "integration": {"type": "mock", "body": "m"}}]});
    let r = admin_with(gw.admin(), "POST", "/apis", &def.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let stage = serde_json::json!({"name": "prod", "auto_deploy": true, "variables": {"tier": "a\r\nx-evil: 1"}});
    let r = admin_with(gw.admin(), "POST", "/apis/shop/stages", &stage.to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("variables.tier"), "{}", r.text());
    let stage =
        serde_json::json!({"name": "prod", "auto_deploy": true, "variables": {"tier": "gold"}});
    let r = admin_with(gw.admin(), "POST", "/apis/shop/stages", &stage.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin_with(gw.admin(), "POST", "/apis/shop/deployments", "{}");
    assert_eq!(r.status, 201, "{}", r.text());
    let d = r.json()["id"].as_str().unwrap().to_string();
    let canary = serde_json::json!({"canary": {"deployment": d, "percent_traffic": 10, "stage_variable_overrides": {"tier": "x\ny"}}});
    let r = admin_with(
        gw.admin(),
        "PATCH",
        "/apis/shop/stages/prod",
        &canary.to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn stages_pick_their_upstream_and_variables() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    let r = get(gw.addr(), "/pets?limit=2&x=%20y");
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["target"], "/pets?limit=2&x=%20y");
    assert_eq!(j["headers"]["x-tier"], "gold");
    assert_eq!(j["headers"]["host"], "pets");
    let r = get(gw.addr(), "/dev/pets");
    assert_eq!(r.json()["headers"]["x-tier"], "dev");
    assert_eq!(prod.count(), 1);
    assert_eq!(dev.count(), 1);
}

#[test]
fn path_variables_are_decoded_for_matching_and_encoded_upstream() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    assert_eq!(get(gw.addr(), "/pets/42").json()["target"], "/v2/pets/42");
    assert_eq!(
        get(gw.addr(), "/pets/a%20b%3F").json()["target"],
        "/v2/pets/a%20b%3F"
    );
    assert_eq!(
        get(gw.addr(), "/pets/caf%C3%A9").json()["target"],
        "/v2/pets/caf%C3%A9"
    );
    // Literal beats {param}.
    assert_eq!(get(gw.addr(), "/pets/mine").text(), "mine");
    // Greedy variable, query passes through.
    assert_eq!(
        get(gw.addr(), "/files/a/b%20c/d.txt?v=1").json()["target"],
        "/store/a/b%20c/d.txt?v=1"
    );
    // A query in the integration URI is merged with the client's.
    let r = Client::connect(gw.addr()).request(
        b"POST /pets?q=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!(r.json()["target"], "/pets?src=gw&q=1");
    assert_eq!(r.json()["body"], "hi");
    // A variable in the URI's query is one query value: `&`, `=` and `+` encoded (it added
    // parameters of its own, `role=admin` after the URI's `role=user`).
    for (path, want) in [
        (
            "/search/a&role=admin",
            "/search?role=user&q=a%26role%3Dadmin",
        ),
        (
            "/search/a%26role%3Dadmin",
            "/search?role=user&q=a%26role%3Dadmin",
        ),
        ("/search/a%2Bb", "/search?role=user&q=a%2Bb"),
        ("/search/caf%C3%A9", "/search?role=user&q=caf%C3%A9"),
    ] {
        assert_eq!(get(gw.addr(), path).json()["target"], want, "{path}");
    }
}

#[test]
fn any_route_forwards_every_method() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    for m in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"] {
        let r = req(gw.addr(), m, "h", "/files/x");
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.json()["method"], m);
    }
    // A known method in another case is no method the API knows (RFC 9110 9.1), and would
    // pass `ANY` to an upstream that upper-cases it around a GET route's checks: 400.
    for m in ["get", "Get", "post", "head", "track"] {
        let r = req(gw.addr(), m, "h", "/files/x");
        assert_eq!(r.status, 400, "{m}: {}", r.text());
    }
    assert_eq!(prod.requests().len(), 6);
}

#[test]
fn unknown_paths_get_404_and_wrong_methods_405_with_allow() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    let r = get(gw.addr(), "/nothing/here");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "Not Found");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = req(gw.addr(), "DELETE", "h", "/pets");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    assert_eq!(r.json()["message"], "Method Not Allowed");
    assert_eq!(prod.count(), 0);
}

#[test]
fn base_paths_no_request_could_reach_are_refused_at_load() {
    for bp in ["v1?x=1", "v1#top"] {
        let (ok, text) = check_config(&Cfg::new().extra(format!(
            "[[domains]]\nhost = \"b.example.test\"\nmappings = [{{ base_path = \"{bp}\", api = \"api\", stage = \"prod\" }}]\n"
        )).toml());
        assert!(!ok, "{bp}: {text}");
        assert!(
            text.contains("base_path") && text.contains("cannot be in a path"),
            "{bp}: {text}"
        );
    }
}

#[test]
fn hosts_and_base_paths_pick_the_api() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    assert_eq!(
        req(gw.addr(), "GET", "api.example.test", "/v1/things").text(),
        "other-things"
    );
    assert_eq!(
        req(gw.addr(), "GET", "API.Example.Test:8080", "/v1/things").text(),
        "other-things"
    );
    // The exact host has only "v1": other paths are not found there.
    assert_eq!(
        req(gw.addr(), "GET", "api.example.test", "/pets").status,
        404
    );
    // An absolute name (one trailing dot) is the same host: its exact and wildcard domains
    // serve it, the "*" domain does not.
    for (host, path, want) in [
        ("api.example.test.", "/v1/things", 200),
        ("API.example.test.:8080", "/v1/things", 200),
        ("api.example.test.", "/pets", 404),
        ("a.wild.test.", "/things", 200),
    ] {
        let r = req(gw.addr(), "GET", host, path);
        assert_eq!(r.status, want, "{host}{path}: {}", r.text());
        if want == 200 {
            assert_eq!(r.text(), "other-things", "{host}{path}");
        }
    }
    // A mock answer without its own content-type is JSON, as in Amazon API Gateway.
    let r = req(gw.addr(), "GET", "api.example.test", "/v1/things");
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Wildcard host; $default catches what no route matches.
    assert_eq!(
        req(gw.addr(), "GET", "a.wild.test", "/things").text(),
        "other-things"
    );
    let r = req(gw.addr(), "DELETE", "a.wild.test", "/things");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "nothing here");
    // Absolute-form targets route by their authority.
    let r = Client::connect(gw.addr()).request(
        b"GET http://api.example.test/v1/things HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.text(), "other-things");
}

#[test]
fn mock_integrations_substitute_variables() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    let r = Client::connect(gw.addr()).request(b"GET /hello/Ann%20Lee HTTP/1.1\r\nHost: h\r\nX-Request-Id: abc-123\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 202);
    assert_eq!(r.header("x-name"), Some("Ann Lee"));
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let j = r.json();
    assert_eq!(j["hi"], "Ann Lee");
    assert_eq!(j["stage"], "gold");
    assert_eq!(j["id"], "abc-123");
    // A client id that would change the JSON it is pasted into is replaced by a generated one.
    let r = Client::connect(gw.addr()).request(b"GET /hello/x HTTP/1.1\r\nHost: h\r\nX-Request-Id: x\",\"isAdmin\":true,\"y\":\"\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 202);
    let j = r.json();
    assert_eq!(j.get("isAdmin"), None, "{j}");
    let id = r.header("x-request-id").unwrap();
    assert_eq!(j["id"], id);
    assert_eq!(id.len(), 32, "{id}");
    // Nor one that would climb out of an integration's path.
    for bad in ["../../admin", ".."] {
        let r = Client::connect(gw.addr()).request(
            format!("GET /hello/x HTTP/1.1\r\nHost: h\r\nX-Request-Id: {bad}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.header("x-request-id").map(str::len), Some(32), "{bad}");
    }
    let r = get(gw.addr(), "/dev/hello/bo");
    assert_eq!(r.json()["stage"], "dev");
    // Generated request ids are unique and echoed.
    let a = get(gw.addr(), "/hello/x")
        .header("x-request-id")
        .unwrap()
        .to_string();
    let b = get(gw.addr(), "/hello/x")
        .header("x-request-id")
        .unwrap()
        .to_string();
    assert_ne!(a, b);
    assert_eq!(a.len(), 32);
}

#[test]
fn ambiguous_paths_are_refused_before_routing() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    for p in [
        "/files/../etc/passwd",
        "/files/%2e%2e/x",
        "/files/a%2fb",
        "/files/a%5cb",
        "/files/%00",
        "/files/%zz",
        "/files/./x",
        // A dot segment with path parameters: servlet containers strip `;x` and resolve it.
        "/files/..;/admin",
        "/files/%2e%2e;x=1/admin",
        "/files/.;/x",
        // Two halves of one character in two segments.
        "/files/%C3/%A9",
    ] {
        let r = get(gw.addr(), p);
        assert_eq!(r.status, 400, "{p}");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid request path"),
            "{p}"
        );
    }
    assert_eq!(prod.count(), 0);
}

#[test]
fn forwarding_headers_are_added_and_hop_by_hop_removed() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    let r = Client::connect(gw.addr()).request(
        b"GET /pets HTTP/1.1\r\nHost: shop.test:8080\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\nX-Keep: yes\r\nX-Forwarded-Port: 1337\r\nX-Forwarded-Prefix: /evil\r\nX-Forwarded-Proto: https\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = &prod.requests()[0];
    assert_eq!(seen.header("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.test:8080"));
    assert_eq!(seen.header("x-keep"), Some("yes"));
    for h in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "connection",
        // A client's own: frameworks build links from them, and no cache key holds them.
        "x-forwarded-port",
        "x-forwarded-prefix",
    ] {
        assert_eq!(seen.header(h), None, "{h} was forwarded");
    }
    let rid = seen.header("x-request-id").unwrap();
    assert_eq!(r.header("x-request-id"), Some(rid));
}

#[test]
fn very_long_paths_route_without_harm() {
    let (prod, dev) = (Upstream::echo(), Upstream::echo());
    let gw = Gw::start(&petstore(&prod, &dev));
    // 6,000 segments under a greedy variable: forwarded whole.
    let deep = "/s".repeat(6000);
    let r = get(gw.addr(), &format!("/files{deep}"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["target"].as_str().unwrap().len(),
        "/store".len() + deep.len()
    );
    // The same depth where nothing matches: 404, and the gateway keeps serving.
    assert_eq!(get(gw.addr(), &format!("/nothing{deep}")).status, 404);
    assert_eq!(get(gw.addr(), "/pets/1").status, 200);
}

#[test]
fn route_keys_a_request_path_cannot_hold_are_refused_at_load() {
    for (route, ch) in [
        ("GET /a b", "' '"),
        ("GET /q?x=1", "'?'"),
        ("GET /p#f", "'#'"),
        ("GET /x/a|b", "'|'"),
    ] {
        let toml = Cfg::new()
            .route(route, "integration = { type = \"mock\", body = \"m\" }")
            .toml();
        let e = tollgate::Config::parse(&toml, std::path::Path::new("."))
            .expect_err(route)
            .to_string();
        assert!(
            e.contains(&format!("holds {ch}, which a path cannot")),
            "{route}: {e}"
        );
    }
    // Percent-encoded, the same characters make a route to the decoded path.
    let toml = Cfg::new()
        .route(
            "GET /a%20b",
            "integration = { type = \"mock\", body = \"spaced\" }",
        )
        .toml();
    let gw = Gw::start(&toml);
    assert_eq!(get(gw.addr(), "/a%20b").text(), "spaced");
}

#[test]
fn a_host_declared_twice_on_one_listener_is_refused_at_load() {
    // What loading the file (`tollgate check`, a start, a reload) says, if it refuses it.
    let refusal = |toml: String| {
        let dir = TempDir::new();
        let path = dir.0.join("config.toml");
        std::fs::write(&path, toml).unwrap();
        tollgate::Config::load(&path).err().map(|e| e.to_string())
    };
    let toml = |a: &str, b: &str| {
        let entry = |ls: &str| {
            format!("[[domains]]\nhost = \"API.example.test\"\n{ls}\nmappings = [{{ base_path = \"\", api = \"api\", stage = \"prod\" }}]\n")
        };
        Cfg::new()
            .listeners("[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"tls\"\naddr = \"127.0.0.1:0\"\n")
            .route("GET /x", "integration = { type = \"mock\" }")
            .extra(format!("{}\n{}", entry(a), entry(b)))
            .toml()
    };
    let all = "";
    for (a, b, on) in [
        (all, "listeners = [\"http\"]", " on listener \"http\""),
        ("listeners = [\"tls\"]", all, " on listener \"tls\""),
        (
            "listeners = [\"http\", \"tls\"]",
            "listeners = [\"tls\", \"http\"]",
            " on listener \"tls\"",
        ),
        (
            "listeners = [\"http\"]",
            "listeners = [\"tls\", \"http\"]",
            " on listener \"http\"",
        ),
        (all, all, ""),
    ] {
        let text = refusal(toml(a, b)).unwrap_or_else(|| panic!("{a} / {b}: loaded"));
        let want = format!(
            "domains[2].host: \"api.example.test\" is declared twice{on} (also domains[1])"
        );
        assert!(text.contains(&want), "{a} / {b}: {want}: {text}");
    }
    // Apart, each listener has its own entry.
    let apart = refusal(toml("listeners = [\"http\"]", "listeners = [\"tls\"]"));
    assert_eq!(apart, None);
}

/// The `$default` route's integration gets the request's whole path (below the base path)
/// after the URI's own path, as Amazon API Gateway sends it.
#[test]
fn the_default_route_sends_the_whole_path() {
    let up = Upstream::echo();
    let gw = Gw::start(
        &Cfg::new()
            .route(
                "$default",
                format!("integration = {{ type = \"http\", uri = \"http://{}/base?x=1\" }}", up.addr),
            )
            .route(
                "GET /plain",
                format!("integration = {{ type = \"http\", uri = \"http://{}/p\" }}", up.addr),
            )
            .extra("[[domains]]\nhost = \"nested.test\"\nmappings = [{ base_path = \"b/c\", api = \"api\", stage = \"prod\" }]")
            .toml(),
    );
    for (host, path, want) in [
        (
            "h",
            "/store/check%20out?y=2",
            "/base/store/check%20out?x=1&y=2",
        ),
        ("h", "/", "/base?x=1"),
        (
            "nested.test",
            "/b/c/store/checkout",
            "/base/store/checkout?x=1",
        ),
        ("h", "/plain", "/p"),
    ] {
        let r = req(gw.addr(), "GET", host, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["target"], want, "{host}{path}");
    }
}

/// A trailing `/` reaches the upstream where the request's path ends there: `$default` and a
/// greedy variable at the end of the URI keep it (a backend that redirects `/x` to `/x/`
/// looped when it heard `/x`); a variable inside the URI's path takes none.
#[test]
fn a_trailing_slash_reaches_the_upstream() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .route(
                "$default",
                "integration = { type = \"http\", uri = \"http://up/base\" }",
            )
            .route(
                "ANY /files/{proxy+}",
                "integration = { type = \"http\", uri = \"http://up/f/{proxy}?from=gw\" }",
            )
            .route(
                "GET /a/{id}",
                "integration = { type = \"http\", uri = \"http://up/x/{id}/tail\" }",
            )
            .toml(),
    );
    for (path, heard) in [
        ("/articles/", "/base/articles/"),
        ("/articles", "/base/articles"),
        ("/deep/er//", "/base/deep/er/"),
        ("/files/dir/", "/f/dir/?from=gw"),
        ("/files/dir/sub/?q=1", "/f/dir/sub/?from=gw&q=1"),
        ("/files/dir", "/f/dir?from=gw"),
        ("/a/5/", "/x/5/tail"),
        ("/", "/base"),
    ] {
        let r = get(g.addr(), path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["target"], heard, "{path}");
    }
}

/// `(none)`, Amazon's REST spelling of "no base path", maps the domain's root.
#[test]
fn a_none_base_path_is_the_domains_root() {
    let g = Gw::start(
        &Cfg::new()
            .route("GET /r", "integration = { type = \"mock\", body = \"root\" }")
            .extra("[[domains]]\nhost = \"none.test\"\nmappings = [{ base_path = \"(none)\", api = \"api\", stage = \"prod\" }]\n")
            .toml(),
    );
    let r = Client::connect(g.addr())
        .request(b"GET /r HTTP/1.1\r\nHost: none.test\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.text()), (200, "root".to_string()));
}
