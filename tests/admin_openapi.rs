//! The admin API describes itself (`GET /openapi.json`), and what it documents is what it
//! serves: every documented path and method is known to the server (never its 404 for an
//! unknown path, never 405), a method not documented for a path is 405 with `Allow` naming
//! exactly the documented ones, and every answer's status line has its reason phrase.

mod common;

use std::io::{Read, Write};

use common::*;

/// A raw admin call: (status line, body).
fn call(g: &Gw, method: &str, path: &str, body: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(g.admin()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// A raw admin call without a body: the whole answer as text.
fn raw_call(g: &Gw, line: &str) -> String {
    let mut s = std::net::TcpStream::connect(g.admin()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(s, "{line} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn every_documented_call_is_served_and_nothing_else() {
    let g = Gw::start(
        &Cfg::new()
            .route("GET /m", "integration = { type = \"mock\", body = \"m\" }")
            .toml(),
    );
    let (status, body) = call(&g, "GET", "/openapi.json", "");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 15);
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", "no-such-id")
            .replace("{plan}", "no-such-plan")
            .replace("{api}", "api")
            .replace("{stage}", "prod")
            .replace("{route}", "GET%20%2Fm")
            .replace("{authorizer}", "jwt");
        let methods: Vec<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        for m in &methods {
            // DELETE of the cache is left out: the test's stage has none (it would be 404 for
            // that reason, which is fine, but a flush is not what this test is about).
            let body = if matches!(m.as_str(), "POST" | "PUT" | "PATCH") {
                "{}"
            } else {
                ""
            };
            let (status, answer) = call(&g, m, &concrete, body);
            let code: u16 = status.split(' ').nth(1).unwrap().parse().unwrap();
            assert!(
                status.splitn(3, ' ').nth(2).is_some_and(|r| !r.is_empty()),
                "no reason phrase: {status}"
            );
            assert_ne!(code, 405, "{m} {concrete}: {status} {answer}");
            assert!(
                !(code == 404 && answer.contains("\"Not Found\"")),
                "{m} {concrete} is documented but unknown to the server: {answer}"
            );
            let documented = doc["paths"][path][m.to_lowercase()]["responses"]
                .as_object()
                .unwrap()
                .contains_key(&code.to_string());
            assert!(
                documented,
                "{m} {concrete} answered {code}, not documented: {answer}"
            );
        }
        // HEAD wherever GET: the GET's status and length, no body.
        if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
            let (get_status, get_body) = call(&g, "GET", &concrete, "");
            let raw = raw_call(&g, &format!("HEAD {concrete}"));
            let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
            assert_eq!(head.lines().next(), Some(get_status.as_str()), "{raw}");
            assert_eq!(rest, "", "HEAD {concrete}");
            // The metrics and the status change between calls; the rest are the same bytes.
            if !concrete.contains("metrics") && !concrete.contains("status") {
                let len = format!("content-length: {}", get_body.len());
                assert!(head.lines().any(|l| l == len), "HEAD {concrete}: {raw}");
            }
        }
        // A method the path does not take: 405, and Allow names the documented ones.
        let other = ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .find(|m| !methods.iter().any(|d| d == m));
        if let Some(other) = other {
            let out = raw_call(&g, &format!("{other} {concrete}"));
            assert!(
                out.starts_with("HTTP/1.1 405 Method Not Allowed"),
                "{other} {concrete}: {out}"
            );
            let allow = out
                .lines()
                .find_map(|l| l.strip_prefix("allow: "))
                .unwrap_or_else(|| panic!("no Allow: {out}"));
            let mut allowed: Vec<&str> = allow.split(", ").collect();
            // HEAD goes wherever GET does.
            let mut want: Vec<&str> = methods.iter().map(String::as_str).collect();
            if want.contains(&"GET") && !want.contains(&"HEAD") {
                want.push("HEAD");
            }
            allowed.sort();
            want.sort();
            assert_eq!(allowed, want, "{other} {concrete}");
        }
    }
    let (status, body) = call(&g, "GET", "/nowhere", "");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, r#"{"message":"Not Found"}"#);
    // A body is validated with the field named.
    let (status, body) = call(&g, "POST", "/apikeys", r#"{"name":"a","colour":"red"}"#);
    assert!(status.starts_with("HTTP/1.1 400 "), "{status}");
    assert!(body.contains("unknown field `colour`"), "{body}");
    // A value of the wrong type: the field is named.
    let (status, body) = call(&g, "POST", "/apikeys", r#"{"name":"a","description":5}"#);
    assert!(status.starts_with("HTTP/1.1 400 "), "{status}");
    assert!(
        body.contains("description: invalid type: integer"),
        "{body}"
    );
}

/// HTTP details of the admin API: a HEAD refused before its handler is the head alone; a
/// client that waits for `100 Continue` gets it before it sends its body; a cache purge
/// takes one path (a second one was left out without a word); an access-log path that names
/// a directory is refused (every line was dropped).
#[test]
fn admin_http_details() {
    let g = Gw::start(
        &Cfg::new()
            .stage_extra("cache = { ttl = \"60s\" }")
            .route(
                "GET /c/{p}",
                "integration = { type = \"mock\", body = \"c\" }",
            )
            .toml(),
    );
    // HEAD without the token: 401, the head alone.
    let mut s = std::net::TcpStream::connect(g.admin()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"HEAD /apis HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "a body after the head: {out:?}");
    // Expect: 100-continue: the interim answer comes before the body is sent.
    let body = serde_json::json!({"name": "k1", "plan": null}).to_string();
    let mut s = std::net::TcpStream::connect(g.admin()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        s,
        "POST /apikeys HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 "), "{out}");
    // Two paths to purge: refused, naming the rule.
    let (status, body) = call(
        &g,
        "DELETE",
        "/apis/api/stages/prod/cache?path=/c/a&path=/c/b",
        "",
    );
    assert!(status.contains(" 400 "), "{status} {body}");
    assert!(body.contains("one path"), "{body}");
    // An access log path naming a directory.
    let r = admin_with(g.admin(), "POST", "/apis", &serde_json::json!({"name": "rt", "routes": [{"route": "GET /x", "integration": {"type": "mock", "body": "x"}}]}).to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin_with(
        g.admin(),
        "POST",
        "/apis/rt/deployments",
        &serde_json::json!({"stage": "prod"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin_with(
        g.admin(),
        "PATCH",
        "/apis/rt/stages/prod",
        &serde_json::json!({"access_log": {"path": "x.log/"}}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("x.log/"), "{}", r.text());
    let (ok, out) = check_config(
        &Cfg::new()
            .stage_extra("access_log = { path = \"new.log/\" }")
            .toml(),
    );
    assert!(!ok, "{out}");
}
