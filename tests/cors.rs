//! CORS (`cors = { ... }` on an API): preflights answered by the gateway on any path, the
//! API's headers on every answer (errors and cache hits included) in place of the
//! integration's, and a real browser (headless Chromium) calling the API from another origin.

mod common;

use std::process::Command;

use common::*;

const CORS: &str = r#"cors = { allow_origins = ["https://app.example.test", "http://localhost:3000"], allow_methods = ["GET", "POST"], allow_headers = ["content-type", "x-custom"], expose_headers = ["x-request-id"], max_age = "10m", allow_credentials = true }"#;

/// An upstream that answers with CORS headers of its own (which the gateway replaces).
fn permissive_upstream() -> Upstream {
    Upstream::start(|_| {
        Action::Raw(
            b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Expose-Headers: x-secret\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        )
    })
}

fn gateway(up: &Upstream, cache: bool) -> Gw {
    let mut cfg = Cfg::new()
        .upstream(format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
            up.addr
        ))
        .api_extra(CORS)
        .route("GET /pets", "integration = { type = \"http\", uri = \"http://up/pets\" }")
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"http\", uri = \"http://up/k\" }",
        )
        .route(
            "GET /mock",
            "integration = { type = \"mock\", body = \"m\", headers = { \"access-control-allow-origin\" = \"*\" } }",
        );
    if cache {
        cfg = cfg.stage_extra("cache = { ttl = \"300s\", capacity = \"1MiB\" }");
    }
    Gw::start(&cfg.toml())
}

fn req(gw: &Gw, method: &str, path: &str, headers: &str) -> Resp {
    Client::connect(gw.addr()).request(
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

fn all(r: &Resp, name: &str) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn preflights_are_answered_by_the_gateway_on_any_path() {
    let up = permissive_upstream();
    let g = gateway(&up, false);
    for path in ["/pets", "/no/such/route"] {
        let r = req(
            &g,
            "OPTIONS",
            path,
            "Origin: https://app.example.test\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type, x-custom\r\n",
        );
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("https://app.example.test")
        );
        assert_eq!(r.header("access-control-allow-methods"), Some("GET, POST"));
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("content-type, x-custom")
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert!(r.header("vary").unwrap().contains("origin"));
        assert_eq!(r.header("content-length"), None, "a 204 has no length");
        assert!(r.body.is_empty());
    }
    // Each origin listed is allowed.
    let r = req(
        &g,
        "OPTIONS",
        "/pets",
        "Origin: http://localhost:3000\r\nAccess-Control-Request-Method: GET\r\n",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    // An origin not allowed gets no CORS headers: the browser refuses the call.
    let r = req(
        &g,
        "OPTIONS",
        "/pets",
        "Origin: https://evil.test\r\nAccess-Control-Request-Method: GET\r\n",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-methods"), None);
    // An OPTIONS that is no preflight is routed as before (no OPTIONS route: 405), with the
    // API's CORS headers.
    let r = req(
        &g,
        "OPTIONS",
        "/pets",
        "Origin: https://app.example.test\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.test")
    );
    assert_eq!(up.count(), 0, "preflights never reach the integration");
}

#[test]
fn every_answer_carries_the_apis_headers_not_the_integrations() {
    let up = permissive_upstream();
    let g = gateway(&up, false);
    let origin = "Origin: https://app.example.test\r\n";
    let r = req(&g, "GET", "/pets", origin);
    assert_eq!(r.status, 200);
    assert_eq!(
        all(&r, "access-control-allow-origin"),
        ["https://app.example.test"],
        "the upstream's '*' is replaced"
    );
    assert_eq!(all(&r, "access-control-expose-headers"), ["x-request-id"]);
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("vary"), Some("origin"));
    // Without Origin: no CORS headers, but the answer says it depends on Origin.
    let r = req(&g, "GET", "/pets", "");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-expose-headers"), None);
    assert_eq!(r.header("vary"), Some("origin"));
    // An origin not allowed: none either.
    let r = req(&g, "GET", "/pets", "Origin: https://evil.test\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    // Errors and mocks carry them too (a browser can read why it was refused).
    for (path, status, extra) in [
        ("/keyed", 403, ""),
        ("/missing", 404, ""),
        ("/mock", 200, ""),
        ("/pets", 413, "Content-Length: 99999999999\r\n"),
    ] {
        let r = req(&g, "GET", path, &format!("{origin}{extra}"));
        assert_eq!(r.status, status, "{path}");
        assert_eq!(
            all(&r, "access-control-allow-origin"),
            ["https://app.example.test"],
            "{path}"
        );
    }
}

#[test]
fn cached_answers_get_each_clients_own_cors_headers() {
    let up = permissive_upstream();
    let g = gateway(&up, true);
    let a = req(&g, "GET", "/pets", "Origin: https://app.example.test\r\n");
    assert_eq!(a.header("x-cache"), Some("Miss"));
    let b = req(&g, "GET", "/pets", "Origin: http://localhost:3000\r\n");
    assert_eq!(b.header("x-cache"), Some("Hit"));
    assert_eq!(
        all(&b, "access-control-allow-origin"),
        ["http://localhost:3000"]
    );
    assert_eq!(all(&b, "access-control-expose-headers"), ["x-request-id"]);
    let c = req(&g, "GET", "/pets", "");
    assert_eq!(c.header("x-cache"), Some("Hit"));
    assert_eq!(c.header("access-control-allow-origin"), None);
    assert_eq!(up.count(), 1);
}

#[test]
fn apis_without_cors_answer_as_before() {
    let up = permissive_upstream();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .route(
                "GET /pets",
                "integration = { type = \"http\", uri = \"http://up/pets\" }",
            )
            .toml(),
    );
    let r = req(
        &g,
        "OPTIONS",
        "/pets",
        "Origin: https://app.example.test\r\nAccess-Control-Request-Method: GET\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = req(&g, "GET", "/pets", "Origin: https://app.example.test\r\n");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "the upstream's own"
    );
    assert_eq!(r.header("vary"), None);
}

/// What `tollgate check` says of a config: whether it passed, and its output.
fn check(toml: &str) -> (bool, String) {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--config", path.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A wildcard origin echoes any origin of its scheme; with credentials that would hand every
/// such site the user's answers, so it is refused at load (as `*` is), and so is
/// `expose_headers = ["*"]` (browsers read it as a header's name then).
#[test]
fn wildcard_origins_with_credentials_are_refused_at_load() {
    let cfg = |cors: &str| {
        Cfg::new()
            .api_extra(cors)
            .route("GET /m", "integration = { type = \"mock\", body = \"m\" }")
            .toml()
    };
    for (cors, want) in [
        (
            r#"cors = { allow_origins = ["https://*"], allow_credentials = true }"#,
            "cors.allow_credentials: cannot be true while allow_origins has \"https://*\"",
        ),
        (
            r#"cors = { allow_origins = ["https://app.example.test", "http://*"], allow_credentials = true }"#,
            "cors.allow_credentials: cannot be true while allow_origins has \"http://*\"",
        ),
        (
            r#"cors = { allow_origins = ["*"], allow_credentials = true }"#,
            "cors.allow_credentials: cannot be true while allow_origins has \"*\"",
        ),
        (
            r#"cors = { allow_origins = ["https://app.example.test"], expose_headers = ["*"], allow_credentials = true }"#,
            "cors.allow_credentials: cannot be true while expose_headers has \"*\"",
        ),
    ] {
        let (ok, text) = check(&cfg(cors));
        assert!(!ok && text.contains(want), "{cors}: {text}");
        assert!(text.contains("list the"), "{text}");
    }
    // Without credentials a wildcard origin is fine: any origin of the scheme is echoed.
    let cors = r#"cors = { allow_origins = ["http://*"], expose_headers = ["*"] }"#;
    assert!(check(&cfg(cors)).0);
    let g = Gw::start(&cfg(cors));
    let r = req(
        &g,
        "OPTIONS",
        "/m",
        "Origin: http://localhost:3000\r\nAccess-Control-Request-Method: GET\r\n",
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);
    // Amazon's `maxAge` takes -1 (no caching): said as written.
    let cors = r#"cors = { allow_origins = ["http://*"], max_age = -1 }"#;
    let g = Gw::start(&cfg(cors));
    let r = req(
        &g,
        "OPTIONS",
        "/m",
        "Origin: http://localhost:3000\r\nAccess-Control-Request-Method: GET\r\n",
    );
    assert_eq!(r.header("access-control-max-age"), Some("-1"));
    let (ok, text) = check(&cfg(r#"cors = { allow_origins = ["*"], max_age = -2 }"#));
    assert!(!ok && text.contains("cors.max_age = -2"), "{text}");
    // Browsers apply no CORS to a WebSocket API: the key is refused there.
    let ws = Cfg::new()
        .api_extra("kind = \"websocket\"\ncors = { allow_origins = [\"*\"] }")
        .routes("[[apis.routes]]\nroute = \"$default\"\nintegration = { type = \"mock\", body = \"m\" }\n")
        .toml();
    let (ok, text) = check(&ws);
    assert!(
        !ok && text.contains("cors: nothing on a WebSocket API"),
        "{text}"
    );
}

/// The page a browser loads from the upstream's origin: it calls the gateway (another
/// origin: another port) in several ways and writes what the browser allowed.
fn page(api: &str, open_api: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out">running</pre><script>
const api = "{api}", open = "{open_api}";
async function attempt(name, url, init, read) {{
  try {{
    const r = await fetch(url, init);
    const v = read ? await read(r) : r.status;
    return [name, "ok " + v];
  }} catch (e) {{
    return [name, "blocked"];
  }}
}}
(async () => {{
  const results = await Promise.all([
    attempt("simple", api + "/pets", {{}}, r => r.text()),
    attempt("custom_header", api + "/pets", {{ headers: {{ "x-custom": "1" }} }}, r => r.text()),
    attempt("header_not_allowed", api + "/pets", {{ headers: {{ "x-other": "1" }} }}),
    attempt("method_not_allowed", api + "/pets", {{ method: "DELETE" }}),
    attempt("credentials", api + "/pets", {{ credentials: "include" }}, r => r.text()),
    attempt("exposed", api + "/pets", {{}}, r => String(r.headers.get("x-request-id") !== null)),
    attempt("error_readable", api + "/keyed", {{}}),
    attempt("open_simple", open + "/pets", {{}}, r => r.text()),
    attempt("open_credentials", open + "/pets", {{ credentials: "include" }}),
  ]);
  document.getElementById("out").textContent = JSON.stringify(Object.fromEntries(results));
}})();
</script></body></html>"#
    )
}

/// The page's DOM after its scripts ran (Chromium's virtual time lets the fetches land).
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium (scripts/test.sh installs Debian's chromium)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_browser_calls_the_api_from_another_origin() {
    let backend = Upstream::start(|s| {
        let body = format!("pets for {}", s.header("x-custom").unwrap_or("anyone"));
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    // The page's origin: this server (127.0.0.1 on a port of its own). Its page names the
    // gateway, which starts after it.
    let html = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let served = html.clone();
    let page_server = Upstream::start(move |_| {
        let html = served.get().cloned().unwrap_or_default();
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{html}",
                html.len()
            )
            .into_bytes(),
        )
    });
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
                backend.addr
            ))
            .api_extra(format!(
                r#"cors = {{ allow_origins = ["http://{}"], allow_methods = ["GET", "POST"], allow_headers = ["x-custom"], expose_headers = ["x-request-id"], allow_credentials = true }}"#,
                page_server.addr
            ))
            .route("GET /pets", "integration = { type = \"http\", uri = \"http://up/pets\" }")
            .route("DELETE /pets", "integration = { type = \"http\", uri = \"http://up/pets\" }")
            .route(
                "GET /keyed",
                "api_key_required = true\nintegration = { type = \"http\", uri = \"http://up/k\" }",
            )
            .extra(
                r#"
[[apis]]
name = "open"
cors = { allow_origins = ["*"] }

  [[apis.stages]]
  name = "prod"

  [[apis.routes]]
  route = "GET /pets"
  integration = { type = "http", uri = "http://up/pets" }

[[domains]]
host = "localhost"
mappings = [{ base_path = "", api = "open", stage = "prod" }]
"#,
            )
            .toml(),
    );
    let port = g.addr().port();
    html.set(page(
        &format!("http://127.0.0.1:{port}"),
        &format!("http://localhost:{port}"),
    ))
    .unwrap();
    let dom = rendered(&format!("http://{}/", page_server.addr));
    let start = dom.find("<pre id=\"out\">").expect("the page") + "<pre id=\"out\">".len();
    let text = &dom[start..start + dom[start..].find("</pre>").unwrap()];
    let got: serde_json::Value = serde_json::from_str(&text.replace("&quot;", "\""))
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(
        got,
        serde_json::json!({
            "simple": "ok pets for anyone",
            "custom_header": "ok pets for 1",
            "header_not_allowed": "blocked",
            "method_not_allowed": "blocked",
            "credentials": "ok pets for anyone",
            "exposed": "ok true",
            "error_readable": "ok 403",
            "open_simple": "ok pets for anyone",
            "open_credentials": "blocked",
        })
    );
    // The DELETE was stopped by the browser after the preflight: it never reached the API.
    assert!(backend.requests().iter().all(|s| s.method != "DELETE"));
}
