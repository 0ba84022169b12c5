//! Reload and the admin API, end to end: valid files are published without failing a
//! request, invalid ones are refused whole while the old config keeps serving.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Upstream "up", a second stage "secrets" (mapped by no domain) and routes `/mock` (answering
/// `body`) and `/proxy`.
fn cfg(body: &str, up: &Upstream) -> Cfg {
    Cfg::new()
        .upstream(format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]",
            up.addr
        ))
        .routes(
            r#"  [[apis.stages]]
  name = "secrets"
  variables = { api_token = "hunter2", region = "eu" }
"#,
        )
        .route(
            "GET /mock",
            format!("integration = {{ type = \"mock\", status = 200, body = \"{body}\" }}"),
        )
        .route(
            "GET /proxy",
            r#"integration = { type = "http", uri = "http://up/proxy" }"#,
        )
}

#[test]
fn admin_api_requires_the_bearer_token() {
    let up = Upstream::echo();
    let gw = Gw::start(&cfg("v1", &up).toml());
    assert_eq!(admin(gw.admin(), "GET", "/healthz", None).status, 401);
    let r = admin(gw.admin(), "GET", "/healthz", Some("wrong-token"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["message"], "Unauthorized");
    let r = admin(gw.admin(), "GET", "/healthz", Some(TOKEN));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(admin(gw.admin(), "GET", "/nope", Some(TOKEN)).status, 404);
    assert_eq!(
        admin(gw.admin(), "DELETE", "/reload", Some(TOKEN)).status,
        405
    );
    // Without the token, a body is not waited for: 401 as soon as the head is in (a client
    // announcing 32 MiB and sending none is answered at once, not held until it sends them).
    // Nor on the paths that need no token, which take no body.
    for path in ["/apikeys", "/ping"] {
        let mut c = Client::connect(gw.admin());
        let r = c.request(
            format!("POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 33554432\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"));
    }
    // A body sent with a wrong token: the client reads the 401, not a reset.
    let body = "x".repeat(200_000);
    let mut c = Client::connect(gw.admin());
    let r = c.request(
        format!(
            "POST /apikeys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer wrong\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 401, "{}", r.text());
}

#[test]
fn admin_config_shows_the_effective_config_with_secrets_redacted() {
    let up = Upstream::echo();
    let gw = Gw::start(&cfg("v1", &up).toml());
    let r = admin(gw.admin(), "GET", "/config", Some(TOKEN));
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["generation"], 1);
    assert_eq!(j["config"]["limits"]["integration_timeout"], "29s");
    assert_eq!(
        j["config"]["apis"][0]["stages"][1]["variables"]["region"],
        "eu"
    );
    assert_eq!(
        j["config"]["apis"][0]["stages"][1]["variables"]["api_token"],
        "<redacted>"
    );
    assert!(!r.text().contains("hunter2"));
}

#[test]
fn admin_config_hides_upstream_credentials_in_integrations() {
    let up = Upstream::echo();
    let gw = Gw::start(
        &cfg("v1", &up)
            .route(
                "GET /sec",
                r#"request_parameters = { "overwrite:header.x-upstream-token" = "sk-mapped-secret", "append:header.x-from" = "$request.header.y", "overwrite:querystring.sig" = "plain" }
integration = { type = "http", uri = "http://up/sec?api_key=Zsecret&page=2&key2=${context.requestId}", headers = { authorization = "Bearer Xsecret", "x-api-key" = "Ysecret", cookie = "sid=Csecret", "x-tier" = "gold" } }"#,
            )
            .toml(),
    );
    let r = admin(gw.admin(), "GET", "/config", Some(TOKEN));
    assert_eq!(r.status, 200);
    for secret in [
        "Xsecret",
        "Ysecret",
        "Zsecret",
        "Csecret",
        "sk-mapped-secret",
    ] {
        assert!(!r.text().contains(secret), "{secret} shown: {}", r.text());
    }
    let j = r.json();
    let route = j["config"]["apis"][0]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "GET /sec")
        .unwrap()
        .clone();
    let i = &route["integration"];
    assert_eq!(
        i["uri"], "http://up/sec?api_key=<redacted>&page=2&key2=${context.requestId}",
        "{i}"
    );
    let headers: std::collections::BTreeMap<String, String> = i["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().into(), h[1].as_str().unwrap().into()))
        .collect();
    assert_eq!(headers["authorization"], "<redacted>");
    assert_eq!(headers["x-api-key"], "<redacted>");
    assert_eq!(headers["cookie"], "<redacted>");
    assert_eq!(headers["x-tier"], "gold");
    let p = &route["request_parameters"];
    assert_eq!(p["overwrite:header.x-upstream-token"], "<redacted>");
    assert_eq!(p["append:header.x-from"], "$request.header.y");
    assert_eq!(p["overwrite:querystring.sig"], "plain");
    // The upstream still gets them.
    let r = Client::connect(gw.addr()).request(b"GET /sec HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Bearer Xsecret"), "{}", r.text());
}

#[test]
fn reload_publishes_a_valid_file_and_refuses_an_invalid_one_whole() {
    let up = Upstream::echo();
    let gw = Gw::start(&cfg("v1", &up).toml());
    assert_eq!(get(gw.addr(), "/mock").text(), "v1");
    gw.rewrite(&cfg("v2", &up).toml());
    let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["generation"], 2);
    assert_eq!(get(gw.addr(), "/mock").text(), "v2");

    // Two errors in one file: both reported, nothing applied.
    let bad = cfg("v3", &up)
        .limits("max_body = \"lots\"\nidle_timeout = \"5 parsecs\"")
        .toml();
    gw.rewrite(&bad);
    let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 400);
    let errors = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("limits.max_body") && e.contains("lots")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("limits.idle_timeout")),
        "{errors:?}"
    );
    assert_eq!(get(gw.addr(), "/mock").text(), "v2");

    // Unparseable TOML too.
    gw.rewrite("this is [not toml");
    assert_eq!(
        admin(gw.admin(), "POST", "/reload", Some(TOKEN)).status,
        400
    );
    assert_eq!(get(gw.addr(), "/mock").text(), "v2");
    // Listener changes need a restart and say so.
    gw.rewrite(
        &cfg("v4", &up)
            .listeners("[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:1\"")
            .toml(),
    );
    let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("restart"), "{}", r.text());
    assert_eq!(get(gw.addr(), "/mock").text(), "v2");
    // So does another variable for the admin token (read once, at start): /config would show
    // it while the old token stays in force.
    gw.rewrite(&cfg("v5", &up).admin("token_env = \"OTHER_TOKEN\"").toml());
    let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("admin.token_env"), "{}", r.text());
    assert_eq!(get(gw.addr(), "/mock").text(), "v2");
}

#[test]
fn reloads_under_load_fail_no_request() {
    let up = Upstream::echo();
    let gw = Gw::start(&cfg("a", &up).workers(2).toml());
    let addr = gw.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for k in 0..4 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        clients.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                // Half the clients keep their connection across reloads, half reconnect.
                let mut c = Client::connect(addr);
                for _ in 0..if k % 2 == 0 { 50 } else { 1 } {
                    let path = if n % 2 == 0 { "/mock" } else { "/proxy" };
                    n += 1;
                    c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
                    match c.read_response(false) {
                        Some(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {:?}", other.map(|r| (r.status, r.text())))),
                    }
                }
            }
        }));
    }
    for i in 0..20 {
        gw.rewrite(&cfg(&format!("b{i}"), &up).workers(2).toml());
        let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
        assert_eq!(r.status, 200);
        // Let some requests through on this generation before the next reload.
        let seen = ok.load(Ordering::Relaxed);
        assert!(eventually(Duration::from_secs(5), || ok
            .load(Ordering::Relaxed)
            > seen + 20));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(ok.load(Ordering::Relaxed) > 400);
    assert_eq!(get(addr, "/mock").text(), "b19");
}

#[test]
fn shutdown_finishes_in_flight_requests() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_millis(300)));
    let mut gw = Gw::start(&cfg("x", &up).toml());
    let addr = gw.addr();
    let mut c = Client::connect(addr);
    c.send(b"GET /proxy HTTP/1.1\r\nHost: h\r\n\r\n");
    // The request is in flight at the upstream before shutdown begins.
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    let waiter = std::thread::spawn(move || {
        let r = c.read_response(false);
        (r, c.is_closed())
    });
    gw.shutdown();
    let (r, closed) = waiter.join().unwrap();
    let r = r.expect("in-flight request answered");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed);
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn defer_accept_listeners_serve_and_changing_it_needs_a_restart() {
    let up = Upstream::echo();
    let with = |body: &str, on: bool| {
        cfg(body, &up)
            .listener(format!("defer_accept = {on}"))
            .toml()
    };
    let gw = Gw::start(&with("v1", true));
    // The kernel hands the connection over with its first bytes: requests are served as usual,
    // on new and kept-alive connections alike.
    for _ in 0..3 {
        assert_eq!(get(gw.addr(), "/mock").text(), "v1");
    }
    assert_eq!(get(gw.addr(), "/proxy").status, 200);
    // The option lives on the listening sockets: a reload may not flip it.
    gw.rewrite(&with("v2", false));
    let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("defer_accept") && r.text().contains("restart"),
        "{}",
        r.text()
    );
    assert_eq!(get(gw.addr(), "/mock").text(), "v1");
    // Anything else in the same file is fine once the listener matches.
    gw.rewrite(&with("v2", true));
    assert_eq!(
        admin(gw.admin(), "POST", "/reload", Some(TOKEN)).status,
        200
    );
    assert_eq!(get(gw.addr(), "/mock").text(), "v2");
}

/// A second gateway started on the addresses of a running one (another config, another state
/// directory) refuses to start, naming the address, instead of sharing the port through
/// SO_REUSEPORT; the first keeps serving.
#[test]
fn a_second_gateway_on_the_same_addresses_refuses_to_start() {
    let first = Gw::start(
        &Cfg::new()
            .route(
                "GET /who",
                "integration = { type = \"mock\", body = \"first\" }",
            )
            .toml(),
    );
    let taken = first.addr();
    let second = Cfg::new()
        .listeners(format!(
            "[[listeners]]\nname = \"http\"\naddr = \"{taken}\"\n"
        ))
        .route(
            "GET /who",
            "integration = { type = \"mock\", body = \"second\" }",
        )
        .toml();
    let err = match Gw::try_start_in(TempDir::new(), &second) {
        Ok(_) => panic!("a second gateway started on {taken}"),
        Err((_, e)) => e,
    };
    assert!(err.contains(&taken.to_string()), "{err}");
    assert!(err.contains("already in use"), "{err}");
    // The admin address too.
    let second = Cfg::new()
        .no_admin()
        .extra(format!("[admin]\naddr = \"{}\"\n", first.admin()))
        .toml();
    let err = match Gw::try_start_in(TempDir::new(), &second) {
        Ok(_) => panic!("a second admin API started on {}", first.admin()),
        Err((_, e)) => e,
    };
    assert!(err.contains("admin.addr"), "{err}");
    for _ in 0..10 {
        assert_eq!(get(taken, "/who").text(), "first");
    }
}

/// A reload that makes two plans of an admin-made key cover one stage is refused, naming the
/// key (it would be served under one of them only, silently), and the gateway serves on.
#[test]
fn a_reload_that_puts_a_key_on_two_plans_of_one_stage_is_refused() {
    let up = Upstream::echo();
    let conf = |silver: &str, cache: &str| {
        Cfg::new()
            .api("shop")
            .stage_extra(cache)
            .stage("beta", "")
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .route(
                "GET /keyed",
                "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
            )
            .route("GET /c", "integration = { type = \"http\", uri = \"http://up/c\" }")
            .extra(format!(
                "[[usage_plans]]\nname = \"gold\"\nstages = [\"shop/prod\"]\n\n[[usage_plans]]\nname = \"silver\"\nstages = [{silver}]\nthrottle = {{ rate = 1, burst = 1 }}\n"
            ))
            .toml()
    };
    let cached = "cache = { ttl = \"300s\" }";
    let gw = Gw::start(&conf("\"shop/beta\"", cached));
    let c = || {
        Client::connect(gw.addr())
            .request(b"GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .header("x-cache")
            .map(str::to_string)
    };
    assert_eq!(c().as_deref(), Some("Miss"));
    assert_eq!(c().as_deref(), Some("Hit"));
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apikeys",
        r#"{"name": "both", "value": "both-0123456789abcdef0123", "plans": ["gold", "silver"]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Refused: and its other changes (the stage's cache gone) are not half taken.
    gw.rewrite(&conf("\"shop/beta\", \"shop/prod\"", ""));
    let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains(&id) && r.text().contains("one plan per stage"),
        "{}",
        r.text()
    );
    let keyed = || {
        Client::connect(gw.addr())
            .request(b"GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: both-0123456789abcdef0123\r\nConnection: close\r\n\r\n")
            .status
    };
    // Still gold's on prod (no throttle there): the old configuration serves.
    for _ in 0..3 {
        assert_eq!(keyed(), 200);
    }
    // An admin change after it serves the old configuration's cache, entries and all.
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apis",
        r#"{"name": "later", "routes": [{"route": "GET /l", "integration": {"type": "mock", "body": "l"}}]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apis/later/deployments",
        r#"{"stage": "prod"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(c().as_deref(), Some("Hit"));
    assert_eq!(up.count(), 1);
}
