//! Resource policies end to end: who may call an API, by source address, before anything
//! else; the source address taken from X-Forwarded-For only behind a trusted proxy.

mod common;

use common::*;

fn gw(policy: &str, trusted: &str) -> Gw {
    let up = Upstream::echo();
    Gw::start(
        &Cfg::new()
            .server(trusted)
            .api_extra(format!("resource_policy = {policy}"))
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .route(
                "GET /pets",
                "integration = { type = \"http\", uri = \"http://up/pets\" }",
            )
            .route("GET /m", "integration = { type = \"mock\", body = \"ok\" }")
            .toml(),
    )
}

fn ask(gw: &Gw, path: &str, xff: Option<&str>) -> Resp {
    let xff = xff
        .map(|x| format!("X-Forwarded-For: {x}\r\n"))
        .unwrap_or_default();
    Client::connect(gw.addr()).request(
        format!("GET {path} HTTP/1.1\r\nHost: h\r\n{xff}Connection: close\r\n\r\n").as_bytes(),
    )
}

/// An allow list admits only what it names; a deny entry wins over an allow; the refusals are
/// 403 with Amazon API Gateway's words (an explicit deny says so), and reach no upstream.
#[test]
fn allow_and_deny_lists_decide_by_source_address() {
    let g = gw(r#"{ allow = ["127.0.0.0/8", "::1/128"] }"#, "");
    assert_eq!(ask(&g, "/m", None).text(), "ok");
    let g = gw(r#"{ allow = ["10.0.0.0/8"] }"#, "");
    let r = ask(&g, "/pets", None);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["message"],
        "User: anonymous is not authorized to perform: execute-api:Invoke on resource: arn:aws:execute-api:local:000000000000:api/prod/GET/pets"
    );
    let g = gw(
        r#"{ allow = ["127.0.0.0/8"], deny = ["127.0.0.1/32"] }"#,
        "",
    );
    let r = ask(&g, "/m", None);
    assert_eq!(r.status, 403);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("/prod/GET/m with an explicit deny"),
        "{}",
        r.text()
    );
    // Deny alone: everything else is allowed.
    let g = gw(r#"{ deny = ["10.66.0.0/16"] }"#, "");
    assert_eq!(ask(&g, "/m", None).status, 200);
}

/// Behind a trusted proxy the caller is the rightmost X-Forwarded-For hop that is not a
/// trusted proxy; from any other peer X-Forwarded-For is ignored (a client cannot talk its
/// way past the policy).
#[test]
fn x_forwarded_for_counts_only_behind_trusted_proxies() {
    let policy = r#"{ allow = ["10.0.0.0/8"], deny = ["10.66.0.0/16"] }"#;
    let g = gw(policy, "trusted_proxies = [\"127.0.0.0/8\"]");
    assert_eq!(ask(&g, "/m", Some("10.1.2.3")).status, 200);
    // The client's own entries (left) do not count; the hop the proxy appended does.
    assert_eq!(ask(&g, "/m", Some("10.1.2.3, 192.0.2.7")).status, 403);
    assert_eq!(ask(&g, "/m", Some("192.0.2.7, 10.1.2.3")).status, 200);
    // Trusted hops are skipped from the right.
    assert_eq!(ask(&g, "/m", Some("10.1.2.3, 127.0.0.5")).status, 200);
    let r = ask(&g, "/m", Some("10.66.1.1"));
    assert_eq!(r.status, 403);
    assert!(r.text().contains("explicit deny"));
    // A hop written with its port (as some load balancers write it) is its address.
    assert_eq!(ask(&g, "/m", Some("10.1.2.3:5555")).status, 200);
    let r = ask(&g, "/m", Some("10.66.1.1:5555"));
    assert_eq!(r.status, 403);
    assert!(r.text().contains("explicit deny"), "{}", r.text());
    // Garbage in the proxy's hop: the peer counts (127.0.0.1 is not allowed here).
    assert_eq!(ask(&g, "/m", Some("not-an-ip")).status, 403);
    // Empty entries are none; a bracketed IPv6 hop is its address.
    assert_eq!(ask(&g, "/m", Some("10.1.2.3,")).status, 200);
    assert_eq!(ask(&g, "/m", Some("[2001:db8::1]")).status, 403);
    // Peer not trusted: X-Forwarded-For is ignored.
    let g = gw(policy, "trusted_proxies = [\"192.0.2.0/24\"]");
    assert_eq!(ask(&g, "/m", Some("10.1.2.3")).status, 403);
    // A caller inside the trusted range (trusted_proxies naming the whole network): every hop
    // is trusted, and the caller is the leftmost, as nginx's real_ip_recursive has it (it was
    // the proxy, and a deny naming the caller did not apply).
    let g = gw(
        r#"{ allow = ["10.0.0.0/8"], deny = ["10.66.0.0/16"] }"#,
        "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
    );
    let r = ask(&g, "/m", Some("10.66.1.1"));
    assert_eq!(r.status, 403);
    assert!(r.text().contains("explicit deny"), "{}", r.text());
    assert_eq!(ask(&g, "/m", Some("10.66.1.1, 10.0.0.3")).status, 403);
    assert_eq!(ask(&g, "/m", Some("10.1.2.3, 10.0.0.3")).status, 200);
}

/// Bad ranges are refused at load, naming the key and the value.
#[test]
fn bad_ranges_are_refused_at_load() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(
        &path,
        Cfg::new()
            .server("trusted_proxies = [\"10.0.0.1/8\"]")
            .api_extra("resource_policy = { allow = [\"nope\"], deny = [\"::1/200\"] }")
            .route("GET /m", "integration = { type = \"mock\", body = \"ok\" }")
            .toml(),
    )
    .unwrap();
    let e = tollgate::Config::load(&path).unwrap_err().errors.join("\n");
    assert!(
        e.contains("server.trusted_proxies[0]") && e.contains("host bits set"),
        "{e}"
    );
    assert!(
        e.contains("resource_policy.allow[0]") && e.contains("not an IP address"),
        "{e}"
    );
    assert!(
        e.contains("resource_policy.deny[0]") && e.contains("prefix length"),
        "{e}"
    );
}

/// A policy that restricts nobody is refused at load rather than served as "admit
/// everyone": `allow = []` admits nobody as written, `{}` (or an empty deny list alone)
/// names nobody; each is refused naming the key, the value and what to write instead.
#[test]
fn policies_that_restrict_nobody_are_refused_at_load() {
    let toml = |policy: &str| {
        Cfg::new()
            .api_extra(format!("resource_policy = {policy}"))
            .route("GET /m", "integration = { type = \"mock\", body = \"ok\" }")
            .toml()
    };
    for (policy, want) in [
        (
            "{ allow = [] }",
            r#"apis["api"].resource_policy.allow = [] is not valid: expected the addresses to admit"#,
        ),
        (
            r#"{ allow = [], deny = ["10.0.0.0/8"] }"#,
            r#"apis["api"].resource_policy.allow = [] is not valid"#,
        ),
        ("{}", r#"apis["api"].resource_policy: restricts nobody"#),
        (
            "{ deny = [] }",
            r#"apis["api"].resource_policy: restricts nobody"#,
        ),
    ] {
        let (ok, text) = check_config(&toml(policy));
        assert!(!ok, "{policy}: {text}");
        assert!(text.contains(want), "{policy}: {text}");
        assert!(
            text.contains("remove resource_policy to admit everyone"),
            "{policy}: {text}"
        );
    }
    let (ok, text) = check_config(&toml(r#"{ deny = ["10.0.0.0/8"] }"#));
    assert!(ok, "a deny list alone: {text}");
}

/// Imported policies stay loadable: one that admits everyone but a range imports as that
/// deny list (no empty allow list), one that admits everyone as no policy, one with no
/// Allow admits nobody.
#[test]
fn imported_policies_say_what_they_mean() {
    let g = Gw::start(
        &Cfg::new()
            .api("file")
            .route("GET /f", "integration = { type = \"mock\", body = \"f\" }")
            .toml(),
    );
    let all = serde_json::json!({"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke", "Resource": "execute-api:/*"});
    let deny = |range: &str| {
        serde_json::json!({"Effect": "Deny", "Principal": "*", "Action": "execute-api:Invoke",
        "Resource": "execute-api:/*", "Condition": {"IpAddress": {"aws:SourceIp": range}}})
    };
    for (n, (statements, want)) in [
        (serde_json::json!([all, deny("10.0.0.0/8")]), 200),
        (serde_json::json!([all]), 200),
        (serde_json::json!([all, deny("127.0.0.0/8")]), 403),
        (serde_json::json!([deny("10.0.0.0/8")]), 403),
    ]
    .into_iter()
    .enumerate()
    {
        let doc = serde_json::json!({"openapi": "3.0.1", "info": {"title": format!("p{n}"), "version": "1"},
            "x-amazon-apigateway-policy": {"Version": "2012-10-17", "Statement": statements},
            "paths": {"/m": {"get": {"responses": {"200": {"description": "ok"}},
                "x-amazon-apigateway-integration": {"type": "mock", "responses": {"default": {"statusCode": "200"}}}}}}});
        let r = admin_with(g.admin(), "POST", "/apis?mode=import", &doc.to_string());
        assert_eq!(r.status, 201, "{n}: {}", r.text());
        let api = r.json()["name"].as_str().unwrap().to_string();
        let r = admin_with(
            g.admin(),
            "POST",
            &format!("/apis/{api}/deployments"),
            &serde_json::json!({"stage": "test"}).to_string(),
        );
        assert_eq!(r.status, 201, "{n}: {}", r.text());
        let host = format!("p{n}.test");
        let m = serde_json::json!({"host": host, "api": api, "stage": "test"});
        let r = admin_with(g.admin(), "POST", "/domains", &m.to_string());
        assert_eq!(r.status, 201, "{n}: {}", r.text());
        let r = Client::connect(g.addr()).request(
            format!("GET /m HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, want, "{n}: {}", r.text());
    }
}

fn proxied(policy: &str, trusted: &str) -> Gw {
    Gw::start(
        &Cfg::new()
            .server(trusted)
            .listener("proxy_protocol = true")
            .api_extra(format!("resource_policy = {policy}"))
            .route(
                "GET /m",
                "integration = { type = \"mock\", body = \"${context.identity.sourceIp}\" }",
            )
            .toml(),
    )
}

fn via(gw: &Gw, preface: &[u8]) -> Option<Resp> {
    let mut c = Client::connect(gw.addr());
    c.send(preface);
    c.send(b"GET /m HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    c.read_response(false)
}

/// Behind a PROXY-protocol load balancer (v1 or v2), the client it names is the source the
/// policy judges — only when the balancer is a trusted proxy; a connection without the header
/// is refused.
#[test]
fn the_proxy_protocol_names_the_client_only_from_trusted_proxies() {
    let policy = r#"{ allow = ["10.0.0.0/8"] }"#;
    let g = proxied(policy, "trusted_proxies = [\"127.0.0.0/8\"]");
    let r = via(&g, b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 80\r\n").unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "10.1.2.3"));
    assert_eq!(
        via(&g, b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n")
            .unwrap()
            .status,
        403
    );
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[
        0x21, 0x11, 0, 12, 10, 9, 8, 7, 127, 0, 0, 1, 0x15, 0xb3, 0, 80,
    ]);
    let r = via(&g, &v2).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "10.9.8.7"));
    // LOCAL (a balancer's own health check) keeps the peer's address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    assert_eq!(via(&g, &local).unwrap().status, 403);
    // No header, or garbage: closed without an answer.
    assert!(via(&g, b"").is_none());
    assert!(via(&g, b"PROXY TCP4 nonsense\r\n").is_none());
    // From a peer that is not a trusted proxy the header is read but not believed.
    let g = proxied(policy, "");
    assert_eq!(
        via(&g, b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 80\r\n")
            .unwrap()
            .status,
        403
    );
}

/// Behind a trusted proxy the forwarded client is the one address everywhere: the policy's,
/// `${context.identity.sourceIp}` in templates, the access log's; and the client's
/// X-Forwarded-For lines reach the upstream as one list (RFC 9110 5.3), the peer appended.
#[test]
fn the_forwarded_client_is_the_source_ip_everywhere() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .server("trusted_proxies = [\"127.0.0.0/8\"]")
            .api_extra("resource_policy = { deny = [\"203.0.113.0/24\"] }")
            .stage_extra(
                "access_log = { path = \"ip.log\", format = \"$context.status $context.identity.sourceIp\" }",
            )
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route(
                "GET /pets",
                "integration = { type = \"http\", uri = \"http://up/pets\" }",
            )
            .route(
                "GET /m",
                "integration = { type = \"mock\", body = \"ip=${context.identity.sourceIp}\" }",
            )
            .toml(),
    );
    assert_eq!(
        ask(&g, "/m", Some("198.51.100.7")).text(),
        "ip=198.51.100.7"
    );
    assert_eq!(ask(&g, "/m", Some("203.0.113.9")).status, 403);
    // Two lines: one list, in order, the peer appended.
    let r = Client::connect(g.addr()).request(
        b"GET /pets HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        up.requests()[0].header("x-forwarded-for"),
        Some("192.0.2.1, 192.0.2.2, 127.0.0.1")
    );
    let log = g.dir.0.join("ip.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(std::time::Duration::from_secs(10), || read()
            .lines()
            .count()
            == 3),
        "{}",
        read()
    );
    assert_eq!(read(), "200 198.51.100.7\n403 203.0.113.9\n200 192.0.2.2\n");
}
