//! The `tollgate` binary: `check`, signals (SIGHUP reload, SIGTERM drain), JSON logs, and the
//! admin API refusing to start without its token.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

#[test]
fn check_accepts_the_default_config_and_prints_what_it_serves() {
    let out = bin()
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration OK"));
    assert!(stdout.contains("listener \"http\" on 127.0.0.1:8080"));
    assert!(stdout.contains("route GET /pets/{petId}"));
    assert!(stdout.contains("upstream \"pets\""));
}

#[test]
fn check_names_unsupported_and_bad_keys() {
    let reference = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/reference/config.toml"
    );
    if std::path::Path::new(reference).exists() {
        let out = bin()
            .args(["check", "--config", reference])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        // Every feature it names is built: what is left are the certificate files that are
        // not there beside it.
        let lines: Vec<&str> = err.lines().skip(1).collect();
        assert!(!lines.is_empty(), "{err}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains(".tls: cannot read") && !l.contains("not supported")),
            "{err}"
        );
        assert_eq!(err.matches("is not valid").count(), 0, "{err}");
        assert!(
            !err.contains("throttle")
                && !err.contains("api_key")
                && !err.contains("usage_plans")
                && !err.contains("cache"),
            "{err}"
        );
    }
    let dir = TempDir::new();
    let p = dir.0.join("bad.toml");
    std::fs::write(&p, "[[listeners]]\nname = \"http\"\naddr = \"nowhere\"\n[limits]\nheader_timeout = \"soon\"\nmystery = 1\n").unwrap();
    let out = bin()
        .args(["check", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mystery"), "{err}");
    std::fs::write(
        &p,
        "[[listeners]]\nname = \"http\"\naddr = \"nowhere\"\n[limits]\nheader_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["check", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listeners[\"http\"].addr = \"nowhere\""),
        "{err}"
    );
    assert!(err.contains("limits.header_timeout = \"soon\""), "{err}");
}

/// `tollgate check | head -1`: a reader that closed before the output is written ends the
/// output, with the check's status, not a panic.
#[test]
fn check_output_to_a_closed_pipe_is_not_a_panic() {
    let dir = TempDir::new();
    let p = dir.0.join("c.toml");
    std::fs::write(&p, Cfg::new().toml()).unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin()
        .args(["check", "--config", p.to_str().unwrap()])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

fn conf(body: &str, up: SocketAddr, admin_env: &str) -> String {
    Cfg::new()
        .admin(format!("token_env = \"{admin_env}\""))
        .route(
            "GET /v",
            format!("integration = {{ type = \"mock\", body = \"{body}\" }}"),
        )
        .route(
            "GET /slow",
            format!("integration = {{ type = \"http\", uri = \"http://{up}/slow\" }}"),
        )
        .toml()
}

#[test]
fn sighup_reloads_and_sigterm_drains_then_exits_zero() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_millis(300)));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, conf("one", up.addr, "TG_TEST_TOKEN")).unwrap();
    let mut p = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    let addr: SocketAddr = p.logged_addr("listening");
    let admin_addr: SocketAddr = p.logged_addr("admin API listening");
    assert_eq!(get(addr, "/v").text(), "one");
    assert_eq!(
        admin(admin_addr, "GET", "/healthz", Some("t0ken")).status,
        200
    );

    std::fs::write(&path, conf("two", up.addr, "TG_TEST_TOKEN")).unwrap();
    p.signal("HUP");
    p.wait_for("configuration reloaded");
    assert_eq!(get(addr, "/v").text(), "two");

    std::fs::write(&path, "broken = [").unwrap();
    p.signal("HUP");
    let refused = p.wait_for("reload refused; the previous configuration keeps serving");
    assert!(refused["errors"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(get(addr, "/v").text(), "two");

    // SIGTERM with a request in flight: it completes, then the process exits 0.
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    let ping = admin(admin_addr, "GET", "/ping", None);
    assert_eq!(ping.status, 200);
    assert_eq!(
        (ping.header("content-type"), ping.text().as_str()),
        (Some("text/plain"), "ok\n")
    );
    // HEAD: the head alone; a refused method: the JSON message, said to be JSON.
    let mut head = Client::connect(admin_addr);
    head.send(b"HEAD /ping HTTP/1.1\r\nHost: a\r\n\r\n");
    let raw = String::from_utf8(head.read_to_end()).unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 "), "{raw}");
    assert!(
        raw.contains("content-length: 3\r\n") && raw.ends_with("\r\n\r\n"),
        "{raw}"
    );
    let r = admin(admin_addr, "POST", "/ping", None);
    assert_eq!(
        (r.status, r.header("content-type")),
        (405, Some("application/json"))
    );
    p.signal("TERM");
    // While it drains, load balancers are told to look elsewhere.
    assert!(eventually(Duration::from_secs(5), || admin(
        admin_addr, "GET", "/ping", None
    )
    .status
        == 503));
    let r = c.read_response(false).expect("in-flight request answered");
    assert_eq!(r.status, 200);
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn admin_api_refuses_to_start_without_a_token_but_the_gateway_serves() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, conf("hi", closed_port(), "TG_UNSET_TOKEN_VAR")).unwrap();
    let p = Proc::start(&path, &[]);
    let f = p.wait_for("listening");
    let addr: SocketAddr = f["addr"].as_str().unwrap().parse().unwrap();
    let e = p.wait_for("admin API not started: environment variable TG_UNSET_TOKEN_VAR is not set, or empty (the admin API needs a bearer token)");
    assert_eq!(e["token_env"], "TG_UNSET_TOKEN_VAR");
    assert_eq!(get(addr, "/v").text(), "hi");
    drop(p);
    // White space alone is no token either.
    let p = Proc::start(&path, &[("TG_UNSET_TOKEN_VAR", "   ")]);
    p.wait_for("admin API not started: environment variable TG_UNSET_TOKEN_VAR is not set, or empty (the admin API needs a bearer token)");
}

/// A token is taken without the white space around it, as a request's is; the scheme is
/// `Bearer` in any case (RFC 9110 11.1).
#[test]
fn the_admin_token_is_read_as_requests_send_it() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, quota_conf("TG_SPACED_TOKEN")).unwrap();
    let p = Proc::start(&path, &[("TG_SPACED_TOKEN", " s3cret\n")]);
    let admin_addr: SocketAddr = p.logged_addr("admin API listening");
    for auth in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"] {
        let r = Client::connect(admin_addr).request(
            format!("GET /apikeys HTTP/1.1\r\nHost: a\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200, "{auth}: {}", r.text());
    }
    // Refusals are said in the log, at most one line a minute with how many there were.
    for auth in ["Bearer wrong", "Basic czNjcmV0"] {
        let r = Client::connect(admin_addr).request(
            format!("GET /apikeys HTTP/1.1\r\nHost: a\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 401, "{auth}");
    }
    let line = p.wait_for("admin API: a request without the right token was refused (refused: how many since the last such line; at most one a minute)");
    assert_eq!(line["refused"], 1, "{line}");
}

fn quota_conf(admin_env: &str) -> String {
    Cfg::new()
        .workers(2)
        .admin(format!("token_env = \"{admin_env}\""))
        .api("shop")
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
        )
        .extra(
            r#"
[[usage_plans]]
name = "gold"
stages = ["shop/prod"]
quota = { limit = 100000, period = "month" }

[[api_keys]]
name = "acme"
value = "acme-0123456789abcdef0123"
plan = "gold"
"#,
        )
        .toml()
}

fn used_today(admin_addr: SocketAddr, token: &str) -> u64 {
    let today = tollgate::day_string(tollgate::today());
    let r = Client::connect(admin_addr).request(
        format!("GET /usageplans/gold/usage?startDate={today}&endDate={today}&keyId=acme HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    r.json()["items"]["acme"][0]["used"].as_u64().unwrap_or(0)
}

#[test]
fn sigkill_loses_no_flushed_usage_and_keys_survive() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, quota_conf("TG_KILL_TOKEN")).unwrap();
    let env = [("TG_KILL_TOKEN", "k1ll")];
    let mut p = Proc::start(&path, &env);
    let addr: SocketAddr = p.logged_addr("listening");
    let admin_addr: SocketAddr = p.logged_addr("admin API listening");
    // A key created at run time must survive too.
    let body = r#"{"name":"late","plan":"gold"}"#;
    let created = Client::connect(admin_addr).request(
        format!("POST /apikeys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k1ll\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let late = created.json()["value"].as_str().unwrap().to_string();
    let mut c = Client::connect(addr);
    for _ in 0..200 {
        let r = c.request(
            b"GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: acme-0123456789abcdef0123\r\n\r\n",
        );
        assert_eq!(r.status, 200);
    }
    // Counted usage reaches the store within the flush interval (1 s).
    assert!(eventually(Duration::from_secs(5), || used_today(
        admin_addr, "k1ll"
    ) == 200));
    // Mid-load: more requests in flight while the process is killed.
    let mut c2 = Client::connect(addr);
    c2.send(b"GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: acme-0123456789abcdef0123\r\n\r\n");
    p.signal("KILL");
    let _ = p.child.wait();
    drop(p);

    let p = Proc::start(&path, &env);
    let addr: SocketAddr = p.logged_addr("listening");
    let admin_addr: SocketAddr = p.logged_addr("admin API listening");
    let used = used_today(admin_addr, "k1ll");
    assert!((200..=201).contains(&used), "usage after SIGKILL: {used}");
    let r = Client::connect(addr).request(
        format!("GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: {late}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "the key created before the kill is gone");
}

/// Every request leaves through one exit, which records it: with the `tollgate::request`
/// target at debug level, one event per request carries its route, status and sizes.
#[test]
fn the_exit_records_each_request() {
    let up = Upstream::echo();
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, conf("hello", up.addr, "TG_TEST_TOKEN")).unwrap();
    let p = Proc::start(&path, &[("TOLLGATE_LOG", "info,tollgate::request=debug")]);
    let addr: SocketAddr = p.logged_addr("listening");
    let raw = b"GET /v HTTP/1.1\r\nHost: a\r\nx-request-id: rec-1\r\n\r\n";
    let mut c = Client::connect(addr);
    let r = c.request(raw);
    assert_eq!(r.status, 200);
    let rec = p.wait_for("request");
    assert_eq!(rec["request_id"], "rec-1");
    assert_eq!(rec["method"], "GET");
    assert_eq!(rec["route"], "api/prod/GET /v");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["bytes_in"], raw.len() as u64);
    assert!(
        rec["bytes_out"].as_u64().unwrap() > "hello".len() as u64,
        "{rec}"
    );
    // A request no route takes is recorded with its error type.
    assert_eq!(
        c.request(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n").status,
        404
    );
    let rec = p.wait_for("request");
    assert_eq!(rec["status"], 404);
    assert_eq!(rec["error"], "RESOURCE_NOT_FOUND");
    assert!(rec["route"].is_null(), "{rec}");
    // A proxied request names its upstream target and, with the event on, its timings.
    assert_eq!(
        c.request(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );
    let rec = p.wait_for("request");
    assert_eq!(rec["upstream"], up.addr.to_string());
    let us = |k: &str| rec[k].as_u64().unwrap_or_else(|| panic!("{k}: {rec}"));
    assert!(us("upstream_connect_us") <= us("first_byte_us"), "{rec}");
    assert!(us("first_byte_us") <= us("total_us"), "{rec}");
}

/// An upstream outage under load is one log line per target and kind of failure, then a
/// count per `server.log_summary_interval`, not a line per failed request.
#[test]
fn repeated_failures_are_summarised_not_logged_one_by_one() {
    let dead = closed_port();
    let toml = Cfg::new()
        .server("log_summary_interval = \"300ms\"")
        .api_extra(format!(
            "[[apis.authorizers]]\nname = \"auth\"\ntype = \"request\"\nuri = \"http://{dead}/auth\"\nidentity_sources = [\"$request.header.x-token\"]\nttl = \"0s\"\n"
        ))
        .route(
            "GET /down",
            format!("integration = {{ type = \"http\", uri = \"http://{dead}/down\" }}"),
        )
        .route(
            "GET /guarded",
            "authorizer = \"auth\"\nintegration = { type = \"mock\", body = \"m\" }",
        )
        .toml();
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let p = Proc::start(&path, &[]);
    let addr: SocketAddr = p.logged_addr("listening");
    let mut c = Client::connect(addr);
    for _ in 0..50 {
        assert_eq!(
            c.request(b"GET /down HTTP/1.1\r\nHost: a\r\n\r\n").status,
            502
        );
    }
    let lines = p.lines_until("request failed: ");
    let full = lines
        .iter()
        .filter(|l| l["message"] == "request failed")
        .count();
    assert_eq!(full, 1, "{lines:?}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["count"], 49, "{summary}");
    assert_eq!(summary["target_addr"], dead.to_string());
    assert_eq!(summary["status"], 502);
    // An authorizer that cannot be reached: the same, one line naming it, then a count.
    for _ in 0..50 {
        assert_eq!(
            c.request(b"GET /guarded HTTP/1.1\r\nHost: a\r\nx-token: t\r\n\r\n")
                .status,
            500
        );
    }
    let lines = p.lines_until("request failed: ");
    let full: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "request failed")
        .collect();
    assert_eq!(full.len(), 1, "{lines:?}");
    assert!(
        full[0]["error"]
            .as_str()
            .unwrap()
            .contains("authorizer \"auth\""),
        "{}",
        full[0]
    );
    assert!(
        !lines.iter().any(|l| l["message"] == "authorizer failed"),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap()["count"], 49);
}

/// SIGUSR1 (logrotate's "reopen your logs") neither kills nor stops the gateway.
#[test]
fn sigusr1_is_harmless() {
    let up = Upstream::start(|_| respond(200, "x"));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, conf("one", up.addr, "TG_TEST_TOKEN")).unwrap();
    let mut p = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    let addr: SocketAddr = p.logged_addr("listening");
    p.signal("USR1");
    p.wait_for("SIGUSR1: reopening the access-log files");
    assert_eq!(get(addr, "/v").text(), "one");
    assert!(p.child.try_wait().unwrap().is_none(), "the gateway exited");
    p.signal("TERM");
    assert!(p.child.wait().unwrap().success());
}

/// The take-over socket's file removed while the gateway runs (a state folder cleaned up
/// under it) does not hold the exit: SIGTERM still ends the process.
#[test]
fn a_removed_take_over_socket_does_not_hold_the_exit() {
    let up = Upstream::start(|_| respond(200, "x"));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, conf("one", up.addr, "TG_TEST_TOKEN")).unwrap();
    let mut p = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    let addr: SocketAddr = p.logged_addr("listening");
    let sock = p.wait_for("a successor may take over (tollgate --take-over)")["path"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(&sock).unwrap();
    assert_eq!(get(addr, "/v").text(), "one");
    p.signal("TERM");
    assert!(
        eventually(Duration::from_secs(10), || p
            .child
            .try_wait()
            .unwrap()
            .is_some()),
        "the gateway did not exit"
    );
    assert!(p.child.wait().unwrap().success());
}

/// At the open-file limit, failed accepts pause accepting briefly and are logged once per
/// interval, not once per failure (before: 11,377 WARN lines in 78 s under `ulimit -n 64`).
/// `tollgate check` warns when `limits.max_connections` cannot fit in the limit.
#[test]
fn the_open_file_limit_is_checked_and_exhaustion_is_not_logged_per_failure() {
    let up = Upstream::start(|_| respond(200, "x"));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, conf("one", up.addr, "TG_TEST_TOKEN")).unwrap();
    let out = Command::new("prlimit")
        .args(["--nofile=64:64", env!("CARGO_BIN_EXE_tollgate"), "--config"])
        .arg(&path)
        .arg("check")
        .output()
        .expect("prlimit (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: limits.max_connections = 100000 may need up to 200256 open files")
            && text.contains("the open-file limit is 64"),
        "{text}"
    );
    // The limit holds from the start: a multishot accept (Tollgate's own io_uring runtime)
    // reads the limit once, when it is armed, so a limit lowered later applies from the next
    // time accepting is re-armed (as it is after any failed accept).
    let mut p = Proc::start_limited(&path, &[("TG_TEST_TOKEN", "t0ken")], 64);
    let addr: SocketAddr = p.logged_addr("listening");
    let admin_addr: SocketAddr = p.logged_addr("admin API listening");
    let start = std::time::Instant::now();
    let mut clients: Vec<_> = (0..120)
        .map(|_| {
            let mut c = Client::connect(addr);
            c.send(b"GET /v HTTP/1.1\r\nHost: h\r\n\r\n");
            c
        })
        .collect();
    // Each client is answered (and kept) or refused at once (closed): none is left hanging.
    let (mut served, mut refused) = (0, 0);
    for c in clients.iter_mut() {
        match c.read_response(false) {
            Some(r) if r.status == 200 => served += 1,
            Some(r) => panic!("{}", r.status),
            None => refused += 1,
        }
    }
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "clients were left waiting"
    );
    // The admin API still answers while the clients hold every descriptor. (Refused
    // connections seen in full parallel runs came from a control plane whose ring could not
    // be made once the clients held every descriptor: shards now accept only after the control
    // plane's runtime is up.)
    if let Err(e) = std::net::TcpStream::connect(admin_addr) {
        panic!(
            "admin API refused ({e}); the process: {:?}",
            p.child.try_wait()
        );
    }
    assert_eq!(admin(admin_addr, "GET", "/ping", None).status, 200);
    drop(clients);
    // Serves again once the gateway has seen those connections close.
    assert!(eventually(Duration::from_secs(5), || {
        let mut c = Client::connect(addr);
        c.send(b"GET /v HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        c.read_response(false).is_some_and(|r| r.text() == "one")
    }));
    p.signal("TERM");
    let lines = p.lines_until("stopping");
    let failures = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("accept failed"))
        })
        .count();
    assert!(
        (1..=3).contains(&failures),
        "{failures} accept-failure lines"
    );
    assert!(p.child.wait().unwrap().success());
}

/// A drain that has to cut requests at `server.drain_timeout` says how many and exits with
/// status 3, so a supervisor can tell it from a clean stop (status 0).
#[test]
fn a_drain_cut_short_exits_non_zero() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_secs(5)));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = Cfg::new()
        .server("drain_timeout = \"300ms\"")
        .admin("token_env = \"TG_TEST_TOKEN\"")
        .route(
            "GET /slow",
            format!(
                "integration = {{ type = \"http\", uri = \"http://{}/slow\" }}",
                up.addr
            ),
        )
        .toml();
    std::fs::write(&path, toml).unwrap();
    let mut p = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    let addr: SocketAddr = p.logged_addr("listening");
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    p.signal("TERM");
    let last = p.wait_for("stopped after cutting connections still open at server.drain_timeout");
    assert_eq!(last["cut"], 1);
    let status = p.child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{status:?}");
}

/// A reload's `drain_timeout` is the one the next drain keeps (the shards kept the one they
/// started with, which `GET /config` no longer showed).
#[test]
fn a_reloaded_drain_timeout_applies() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_secs(5)));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = |t: &str| {
        Cfg::new()
            .server(format!("drain_timeout = \"{t}\""))
            .admin("token_env = \"TG_TEST_TOKEN\"")
            .route(
                "GET /slow",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://{}/slow\" }}",
                    up.addr
                ),
            )
            .toml()
    };
    std::fs::write(&path, toml("60s")).unwrap();
    let mut p = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    let addr: SocketAddr = p.logged_addr("listening");
    std::fs::write(&path, toml("300ms")).unwrap();
    p.signal("HUP");
    p.wait_for("configuration reloaded");
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    p.signal("TERM");
    let last = p.wait_for("stopped after cutting connections still open at server.drain_timeout");
    assert_eq!(last["cut"], 1);
    assert_eq!(p.child.wait().unwrap().code(), Some(3));
}

/// SIGQUIT (nginx's graceful stop) drains as SIGTERM does: the request in flight is
/// answered and the process exits 0 (it dumped core, cutting the request).
#[test]
fn sigquit_drains_as_sigterm_does() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_millis(300)));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = Cfg::new()
        .server("drain_timeout = \"20s\"")
        .route(
            "GET /slow",
            format!(
                "integration = {{ type = \"http\", uri = \"http://{}/slow\" }}",
                up.addr
            ),
        )
        .toml();
    std::fs::write(&path, toml).unwrap();
    let mut p = Proc::start(&path, &[]);
    let addr: SocketAddr = p.logged_addr("listening");
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    p.signal("QUIT");
    assert_eq!(p.wait_for("stopping")["signal"], 3);
    let r = c
        .read_response(false)
        .expect("the request in flight is answered");
    assert_eq!(r.status, 200);
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// A successor's side of the take-over socket, spoken by hand (Python's `socket.recv_fds`):
/// it takes the listening sockets, has the store released, says `COMMIT` when told to on
/// its standard input, then holds the sockets until its input closes.
const FAKE_SUCCESSOR: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"HELLO\n")
msg, fds, _, _ = socket.recv_fds(s, 65536, 16)
s.sendall(b"RELEASE\n")
f = s.makefile("rb")
print(f.readline().decode().strip(), flush=True)
sys.stdin.readline()
s.sendall(b"COMMIT\n")
print("COMMITTED", flush=True)
sys.stdin.read()
"#;

/// SIGTERM while the store is released to a successor that has not said it serves yet: the
/// gateway stops once the take-over ends, and leaves the listening sockets to the successor
/// (it shut them, which ended them for the successor too: the addresses had no server).
#[test]
fn sigterm_during_a_take_over_leaves_the_successor_its_sockets() {
    use std::io::{BufRead, Write};
    let up = Upstream::start(|_| respond(200, "x"));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, conf("one", up.addr, "TG_TEST_TOKEN")).unwrap();
    let mut old = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    let addr: SocketAddr = old.logged_addr("listening");
    let sock = old.wait_for("a successor may take over (tollgate --take-over)")["path"]
        .as_str()
        .unwrap()
        .to_string();
    let mut fake = Command::new("python3")
        .args(["-c", FAKE_SUCCESSOR, &sock])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(fake.stdout.take().unwrap()).lines();
    assert_eq!(said.next().unwrap().unwrap(), "RELEASED");
    old.signal("TERM");
    old.wait_for("stopping once the take-over under way ends (the new process serves, or fails and this one drains)");
    // Still serving meanwhile.
    assert_eq!(get(addr, "/v").text(), "one");
    let mut input = fake.stdin.take().unwrap();
    input.write_all(b"go\n").unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "COMMITTED");
    assert!(old.child.wait().unwrap().success());
    // The old process is gone; the successor's copies of the sockets still listen (a
    // connection is queued for it).
    assert!(
        std::net::TcpStream::connect(addr).is_ok(),
        "nobody listens on {addr}"
    );
    drop(input);
    let _ = fake.wait();
}

/// A second take-over asked of a gateway that has handed over already and drains (a second
/// SIGUSR2 before the new process put its own take-over socket in place): refused at once,
/// saying why (the successor waited for the whole drain, then failed on a reset).
#[test]
fn a_take_over_of_a_gateway_that_handed_over_is_refused_at_once() {
    use std::io::{BufRead, Write};
    let up = Upstream::start(|_| Action::Sleep(Duration::from_secs(30)));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = Cfg::new()
        .server("drain_timeout = \"60s\"")
        .route(
            "GET /slow",
            format!(
                "integration = {{ type = \"http\", uri = \"http://{}/slow\" }}",
                up.addr
            ),
        )
        .toml();
    std::fs::write(&path, toml).unwrap();
    let old = Proc::start(&path, &[]);
    let addr: SocketAddr = old.logged_addr("listening");
    let sock = old.wait_for("a successor may take over (tollgate --take-over)")["path"]
        .as_str()
        .unwrap()
        .to_string();
    // A request that holds the old process's drain.
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    // The first successor (by hand: it leaves the socket file as it was) takes over.
    let mut fake = Command::new("python3")
        .args(["-c", FAKE_SUCCESSOR, &sock])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = std::io::BufReader::new(fake.stdout.take().unwrap()).lines();
    assert_eq!(said.next().unwrap().unwrap(), "RELEASED");
    let mut input = fake.stdin.take().unwrap();
    input.write_all(b"go\n").unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "COMMITTED");
    old.wait_for("shutting down: draining connections");
    // A second one, while the old process drains.
    let mut second = Proc::start_with(&path, &[], &["--take-over"]);
    assert!(
        eventually(Duration::from_secs(10), || second
            .child
            .try_wait()
            .unwrap()
            .is_some()),
        "the second successor waited for the drain"
    );
    assert!(!second.child.wait().unwrap().success());
    let why = second.wait_for("cannot start")["error"].to_string();
    assert!(
        why.contains("has handed over to another process already"),
        "{why}"
    );
    drop(input);
    let _ = fake.kill();
    let _ = fake.wait();
}

/// A reload asked of a draining gateway (POST /reload; SIGHUP the same) is refused at once,
/// saying why: it went unanswered until the exit (and SIGHUP held the signal thread).
#[test]
fn a_draining_gateway_refuses_a_reload_at_once() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_secs(30)));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = Cfg::new()
        .server("drain_timeout = \"60s\"")
        .admin("token_env = \"TG_TEST_TOKEN\"")
        .route(
            "GET /slow",
            format!(
                "integration = {{ type = \"http\", uri = \"http://{}/slow\" }}",
                up.addr
            ),
        )
        .toml();
    std::fs::write(&path, toml).unwrap();
    let old = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    let addr: SocketAddr = old.logged_addr("listening");
    let admin_addr: SocketAddr = old.logged_addr("admin API listening");
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    old.signal("TERM");
    old.wait_for("shutting down: draining connections");
    let r = admin(admin_addr, "POST", "/reload", Some("t0ken"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "the gateway is stopping (draining): not reloaded"
    );
    // SIGHUP is answered too: the signal thread hears the next signal.
    old.signal("HUP");
    old.signal("USR1");
    old.wait_for("SIGUSR1: reopening the access-log files");
}

/// A take-over asked of a gateway that is draining after SIGTERM is refused: the successor
/// exits non-zero at once, and the stopping gateway finishes its request and exits 0 (it
/// waited for good for a control plane that no longer listened, and kept its ports).
#[test]
fn a_draining_gateway_refuses_a_take_over_and_still_exits() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_millis(1500)));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = Cfg::new()
        .server("drain_timeout = \"20s\"")
        .admin("token_env = \"TG_TEST_TOKEN\"")
        .route(
            "GET /slow",
            format!(
                "integration = {{ type = \"http\", uri = \"http://{}/slow\" }}",
                up.addr
            ),
        )
        .toml();
    std::fs::write(&path, toml).unwrap();
    let env = [("TG_TEST_TOKEN", "t0ken")];
    let mut old = Proc::start(&path, &env);
    let addr: SocketAddr = old.logged_addr("listening");
    old.wait_for("a successor may take over (tollgate --take-over)");
    let mut c = Client::connect(addr);
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    old.signal("TERM");
    old.wait_for("shutting down: draining connections");
    let mut new = Proc::start_with(&path, &env, &["--take-over"]);
    assert!(!new.child.wait().unwrap().success());
    // It says why (it logged an empty reason).
    let why = new.wait_for("cannot start")["error"].to_string();
    assert!(why.contains("stopping"), "{why}");
    let r = c
        .read_response(false)
        .expect("the request in flight is answered");
    assert_eq!(r.status, 200);
    let status = old.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// A take-over whose config drops a listener and moves the admin API: the addresses the new
/// process does not serve refuse connections at once, while the old process still drains a
/// request (they were left listening, unanswered, until its drain ended).
#[test]
fn a_take_over_closes_the_addresses_it_does_not_serve() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_secs(4)));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let sa = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (keep, drop, admin_old, admin_new) = (
        sa(free_port()),
        sa(free_port()),
        sa(free_port()),
        sa(free_port()),
    );
    let toml = |ports: &[SocketAddr], admin: SocketAddr| {
        let mut listeners = String::new();
        for (i, p) in ports.iter().enumerate() {
            listeners += &format!("[[listeners]]\nname = \"l{i}\"\naddr = \"{p}\"\n");
        }
        Cfg::new()
            .listeners(listeners)
            .server("drain_timeout = \"20s\"")
            .no_admin()
            .extra(format!(
                "[admin]\naddr = \"{admin}\"\ntoken_env = \"TG_TEST_TOKEN\"\n"
            ))
            .route(
                "GET /slow",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://{}/slow\" }}",
                    up.addr
                ),
            )
            .toml()
    };
    std::fs::write(&path, toml(&[keep, drop], admin_old)).unwrap();
    let env = [("TG_TEST_TOKEN", "t0ken")];
    let mut old = Proc::start(&path, &env);
    old.wait_for("a successor may take over (tollgate --take-over)");
    let mut c = Client::connect(drop);
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(eventually(Duration::from_secs(5), || up.count() == 1));
    std::fs::write(&path, toml(&[keep], admin_new)).unwrap();
    let new = Proc::start_with(&path, &env, &["--take-over"]);
    new.wait_for("took over the listening sockets and the state store");
    new.wait_for("a successor may take over (tollgate --take-over)");
    // The old process still drains its request; the addresses only it had refuse.
    for gone in [drop, admin_old] {
        assert!(
            eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
                gone
            )
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)),
            "{gone} still takes connections"
        );
    }
    assert_eq!(admin(admin_new, "GET", "/ping", None).status, 200);
    let r = c
        .read_response(false)
        .expect("the request in flight is answered");
    assert_eq!(r.status, 200);
    assert!(old.child.wait().unwrap().success());
}

/// `tollgate check` and start-up agree on CPU pinning: a CPU this machine does not have, or
/// fewer CPUs than `--workers`, is refused by both (before: "configuration OK", then
/// unpinned shards).
#[test]
fn check_and_start_agree_on_cpu_pinning() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let write = |server: &str| {
        std::fs::write(&path, Cfg::new().workers(1).server(server).toml()).unwrap();
    };
    write("pin = true\ncpus = [4000]");
    for args in [&["check"][..], &[]] {
        let out = bin()
            .args(["--config", path.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(
            text.contains("CPU 4000 is not one this process may run on"),
            "{args:?}: {text}"
        );
    }
    write("pin = true\ncpus = [0]");
    let out = bin()
        .args([
            "--config",
            path.to_str().unwrap(),
            "--workers",
            "4",
            "check",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("lists 1 CPUs but 4 workers will run"),
        "{text}"
    );
}

/// An admin API listening beyond loopback is flagged by `tollgate check` (it has no TLS).
#[test]
fn check_warns_about_an_admin_api_off_loopback() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(
        &path,
        Cfg::new()
            .no_admin()
            .extra("[admin]\naddr = \"0.0.0.0:0\"\n")
            .toml(),
    )
    .unwrap();
    let out = bin()
        .args(["--config", path.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: admin.addr = 0.0.0.0:0 is not a loopback address"),
        "{text}"
    );
}

/// A route's cache settings on an API none of whose stages has a cache do nothing, as do
/// those of a route that never caches (not GET, not http): `check` says so (and loads it: an
/// upgrade refuses nothing that loaded before).
#[test]
fn check_warns_about_route_caches_without_a_stage_cache() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let with = |stage_cache: &str| {
        Cfg::new()
            .stage_extra(stage_cache)
            .route(
                "GET /c",
                "cache = { key = [\"query.q\"] }\nintegration = { type = \"mock\" }",
            )
            .route(
                "POST /p",
                "cache = { ttl = \"60s\" }\nintegration = { type = \"http\", uri = \"http://127.0.0.1:9/p\" }",
            )
            .route(
                "GET /g",
                "cache = { ttl = \"60s\" }\nintegration = { type = \"http\", uri = \"http://127.0.0.1:9/g\" }",
            )
            .toml()
    };
    let check = |toml: String| {
        std::fs::write(&path, toml).unwrap();
        let out = bin()
            .args(["--config", path.to_str().unwrap(), "check"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = check(with(""));
    assert!(
        text.contains(
            "warning: apis[\"api\"].routes[\"GET /c\"].cache: no stage of API \"api\" has a cache"
        ),
        "{text}"
    );
    let text = check(with("cache = { ttl = \"60s\", capacity = \"1MiB\" }"));
    assert!(!text.contains(".cache: no stage"), "{text}");
    // With a stage cache, settings on routes that never cache are said too; a GET route's
    // are not.
    for want in [
        "apis[\"api\"].routes[\"GET /c\"].cache: only http integrations' answers are cached",
        "apis[\"api\"].routes[\"POST /p\"].cache: only GET routes (and ANY's GETs) are cached",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(!text.contains("routes[\"GET /g\"].cache"), "{text}");
    // A WebSocket API whose @connections takes SigV4 callers (the default) with no [aws_iam]
    // to check them by: said, and not with "none".
    let ws = |extra: &str| {
        Cfg::new()
            .api_extra(format!("kind = \"websocket\"\n{extra}"))
            .routes("[[apis.routes]]\nroute = \"$default\"\nintegration = { type = \"mock\" }\n")
            .toml()
    };
    let text = check(ws(""));
    assert!(
        text.contains("warning: apis[\"api\"].connections_authorization: \"aws_iam\" (the default) without an [aws_iam] table"),
        "{text}"
    );
    let text = check(ws("connections_authorization = \"none\""));
    assert!(!text.contains("connections_authorization"), "{text}");
    // A domain's certificate no TLS listener could offer (the only listener is plain).
    let (cert, key, _) = common::certs::Ca::new().leaf(&["api.example.test"], false);
    std::fs::write(dir.0.join("d.pem"), cert).unwrap();
    std::fs::write(dir.0.join("d.key"), key).unwrap();
    let text = check(
        Cfg::new()
            .route("GET /m", "integration = { type = \"mock\" }")
            .extra("[[domains]]\nhost = \"api.example.test\"\ntls = { cert = \"d.pem\", key = \"d.key\" }\nmappings = [{ base_path = \"\", api = \"api\", stage = \"prod\" }]\n")
            .toml(),
    );
    assert!(
        text.contains(
            "warning: domains[\"api.example.test\"].tls: no TLS listener serves this domain"
        ),
        "{text}"
    );
}

/// Every TOML snippet in the README is valid TOML, and the ones that are whole configs
/// (listeners and APIs) pass `tollgate check`.
#[test]
fn readme_config_snippets_load() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in readme.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => cur = Some(String::new()),
            (Some(_), "```") => blocks.push(cur.take().unwrap()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    assert!(blocks.len() >= 5, "found {} toml blocks", blocks.len());
    let dir = TempDir::new();
    for (i, b) in blocks.iter().enumerate() {
        // Snippets of `[[apis]]` tables are indented; TOML does not mind.
        if let Err(e) = b.parse::<toml::Table>() {
            panic!("README toml block {i} does not parse: {e}\n{b}");
        }
        if b.contains("[[listeners]]") && b.contains("[[apis]]") {
            let path = dir.0.join(format!("readme-{i}.toml"));
            std::fs::write(&path, b).unwrap();
            let out = bin()
                .args(["--config", path.to_str().unwrap(), "check"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "README toml block {i}: {}\n{b}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Zero-downtime upgrades: five successive `tollgate --take-over` processes take the
/// listening sockets and the state store from the running one while clients keep sending
/// (new connections, and a keep-alive client that retries a request its idle connection was
/// closed under, as browsers do): no request fails, no connection is refused, each old process
/// drains and exits 0, and usage counted for the API key carries on across processes. A
/// successor whose config is refused, or that cannot bind a new listener, leaves the running
/// gateway serving.
#[test]
fn take_over_upgrades_lose_no_request() {
    const KEY: &str = "upgr-0123456789abcdef0123";
    let port = free_port();
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = |body: &str, extra_listener: Option<u16>| {
        let mut listeners =
            format!("[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:{port}\"\n");
        if let Some(p) = extra_listener {
            listeners += &format!("[[listeners]]\nname = \"more\"\naddr = \"127.0.0.1:{p}\"\n");
        }
        Cfg::new()
            .listeners(listeners)
            .admin("token_env = \"TG_TEST_TOKEN\"")
            .route(
                "GET /v",
                format!("api_key_required = true\nintegration = {{ type = \"mock\", body = \"{body}\" }}"),
            )
            .extra(format!(
                "[[usage_plans]]\nname = \"p\"\nstages = [\"api/prod\"]\nquota = {{ limit = 1000000, period = \"day\" }}\n\n[[api_keys]]\nname = \"k\"\nvalue = \"{KEY}\"\nplan = \"p\"\n"
            ))
            .toml()
    };
    std::fs::write(&path, toml("gen0", None)).unwrap();
    let env = [("TG_TEST_TOKEN", "t0ken")];
    let mut old = Proc::start(&path, &env);
    old.wait_for("listening");
    let mut admin_addr: SocketAddr = old.logged_addr("admin API listening");
    old.wait_for("a successor may take over (tollgate --take-over)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ask = move |c: &mut Client| -> Option<Resp> {
        c.send(format!("GET /v HTTP/1.1\r\nHost: h\r\nx-api-key: {KEY}\r\n\r\n").as_bytes());
        c.read_response(false)
    };
    // New connection per request.
    let (s1, ask1) = (stop.clone(), ask);
    let fresh = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u64, Vec::new());
        while !s1.load(std::sync::atomic::Ordering::SeqCst) {
            // A refused connection panics here, and the join below fails the test.
            let mut c = Client::connect(addr);
            match ask1(&mut c) {
                Some(r) if r.status == 200 => ok += 1,
                r => failed.push(format!("{:?}", r.map(|r| (r.status, r.text())))),
            }
        }
        (ok, failed)
    });
    // One keep-alive client; a request on a connection closed before any answer is retried
    // once on a new connection (the connection was idle: the request never reached anyone).
    let (s2, ask2) = (stop.clone(), ask);
    let kept = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0u64, Vec::new());
        let mut c = Client::connect(addr);
        while !s2.load(std::sync::atomic::Ordering::SeqCst) {
            let r = match ask2(&mut c) {
                Some(r) => Some(r),
                None => {
                    c = Client::connect(addr);
                    ask2(&mut c)
                }
            };
            match r {
                Some(r) if r.status == 200 => ok += 1,
                r => failed.push(format!("{:?}", r.map(|r| (r.status, r.text())))),
            }
        }
        (ok, failed)
    });
    for generation in 1..=5 {
        std::fs::write(&path, toml(&format!("gen{generation}"), None)).unwrap();
        let new = Proc::start_with(&path, &env, &["--take-over"]);
        new.wait_for("listening");
        admin_addr = new.logged_addr("admin API listening");
        new.wait_for("took over the listening sockets and the state store");
        new.wait_for("a successor may take over (tollgate --take-over)");
        let status = old.child.wait().unwrap();
        assert!(
            status.success(),
            "generation {} exited {status:?}",
            generation - 1
        );
        old = new;
        assert!(eventually(Duration::from_secs(5), || get_keyed(addr, KEY)
            == format!("gen{generation}")));
    }
    // A successor whose config is refused, and one that cannot bind its new listener, give up;
    // the running gateway serves on.
    std::fs::write(&path, "broken = [").unwrap();
    let mut bad = Proc::start_with(&path, &env, &["--take-over"]);
    assert!(!bad.child.wait().unwrap().success());
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    std::fs::write(&path, toml("never", Some(taken))).unwrap();
    let mut bad = Proc::start_with(&path, &env, &["--take-over"]);
    assert!(!bad.child.wait().unwrap().success());
    assert_eq!(get_keyed(addr, KEY), "gen5");
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the running gateway stopped"
    );
    // One that fails after the store was released to it: its file's key has the value of a
    // key made through the admin API (found only once the store is open). The running
    // gateway takes its store back and serves on: requests, and admin writes.
    const RUNTIME: &str = "runtime-key-0123456789abcdef";
    let r = admin_post(
        admin_addr,
        "POST",
        "/apikeys",
        &format!(r#"{{"name": "rt", "value": "{RUNTIME}", "plan": "p"}}"#),
        "t0ken",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    std::fs::write(
        &path,
        format!(
            "{}\n[[api_keys]]\nname = \"clash\"\nvalue = \"{RUNTIME}\"\nplan = \"p\"\n",
            toml("never", None)
        ),
    )
    .unwrap();
    let mut bad = Proc::start_with(&path, &env, &["--take-over"]);
    bad.wait_for("took over the listening sockets and the state store");
    assert!(!bad.child.wait().unwrap().success());
    old.wait_for("the new gateway process did not start after the state store was released: taking the store back; still serving");
    assert_eq!(get_keyed(addr, KEY), "gen5");
    assert!(
        eventually(Duration::from_secs(5), || admin_post(
            admin_addr,
            "POST",
            "/apikeys",
            r#"{"name": "after", "plan": "p"}"#,
            "t0ken"
        )
        .status
            == 201),
        "the store is the running gateway's again"
    );
    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the running gateway stopped"
    );

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok1, failed1) = fresh.join().unwrap();
    let (ok2, failed2) = kept.join().unwrap();
    assert!(failed1.is_empty(), "new connections failed: {failed1:?}");
    assert!(
        failed2.is_empty(),
        "keep-alive requests failed: {failed2:?}"
    );
    assert!(ok1 > 0 && ok2 > 0);
    // Usage carried over: every request counted once, those the old processes served while
    // they drained included (each sent its count to its successor).
    let today = {
        let out = Command::new("date").args(["-u", "+%F"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let total = ok1 + ok2 + KEYED_CALLS.load(std::sync::atomic::Ordering::SeqCst);
    let used = || {
        let u = admin(
            admin_addr,
            "GET",
            &format!("/usageplans/p/usage?startDate={today}&endDate={today}"),
            Some("t0ken"),
        );
        u.json()["items"]["k"][0]["used"].as_u64().unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(5), || used() == total),
        "usage {} for {total} requests",
        used()
    );
    old.signal("TERM");
    assert!(old.child.wait().unwrap().success());
}

/// An admin API call with a body and a bearer token of its own.
fn admin_post(addr: SocketAddr, method: &str, path: &str, body: &str, token: &str) -> Resp {
    Client::connect(addr).request(
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    )
}

static KEYED_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn get_keyed(addr: SocketAddr, key: &str) -> String {
    KEYED_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut c = Client::connect(addr);
    c.request(
        format!("GET /v HTTP/1.1\r\nHost: h\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .text()
}

/// systemd `Type=notify`: READY=1 (with MAINPID) once serving, RELOADING=1 then READY=1 around
/// a SIGHUP reload, STOPPING=1 on SIGTERM; SIGUSR2 starts a successor that takes over and
/// announces itself as the main PID, after which the old process drains and exits 0.
#[test]
fn systemd_notifications_and_sigusr2_take_over() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let port = free_port();
    std::fs::write(
        &path,
        Cfg::new()
            .listeners(format!(
                "[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:{port}\"\n"
            ))
            .route("GET /v", "integration = { type = \"mock\", body = \"ok\" }")
            .toml(),
    )
    .unwrap();
    let notify_path = dir.0.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut p = Proc::start(&path, &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
    let pid = p.child.id();
    assert_eq!(next(), format!("READY=1\nMAINPID={pid}"));
    p.signal("HUP");
    assert!(next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    assert_eq!(next(), "READY=1");
    p.signal("USR2");
    let ready = next();
    let new_pid: u32 = ready
        .strip_prefix("READY=1\nMAINPID=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{ready}"));
    assert_ne!(new_pid, pid);
    // Whatever happens below, the successor does not outlive the test.
    struct StopOnDrop(u32);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.to_string()])
                .status();
        }
    }
    let _guard = StopOnDrop(new_pid);
    assert!(
        p.child.wait().unwrap().success(),
        "the old process drains and exits 0"
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "/v").text(), "ok");
    // The successor is this test's doing: stop it by its PID.
    let ok = Command::new("kill")
        .args(["-TERM", &new_pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(next(), "STOPPING=1");
    assert!(eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).is_err()
    }));
    // The listeners close as the drain starts; the process ends after it (it is no child of
    // this test, so it is waited for by its /proc entry: gone, or a zombie nobody reaps).
    // Leaving earlier would remove the folder of its take-over socket under it.
    let stat = format!("/proc/{new_pid}/stat");
    assert!(
        eventually(Duration::from_secs(30), || {
            std::fs::read_to_string(&stat).map_or(true, |s| {
                s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
            })
        }),
        "the successor did not exit after SIGTERM"
    );
}

/// A successor that SIGUSR2 started and that fails (here: a config it refuses) is reaped, not
/// left a zombie, and the process that keeps serving logs that it failed, with its status.
#[test]
fn a_failed_sigusr2_successor_is_reaped_and_logged() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let cfg = Cfg::new()
        .route("GET /v", "integration = { type = \"mock\", body = \"ok\" }")
        .toml();
    std::fs::write(&path, &cfg).unwrap();
    let p = Proc::start(&path, &[]);
    let addr: SocketAddr = p.logged_addr("listening");
    std::fs::write(&path, format!("{cfg}\n[no_such_table]\nx = 1\n")).unwrap();
    p.signal("USR2");
    let started = p.wait_for("SIGUSR2: started a successor to take over");
    let pid = started["pid"].as_u64().unwrap();
    let failed = p.lines_until("SIGUSR2: the successor failed");
    let failed = failed.last().unwrap();
    assert_eq!(failed["pid"].as_u64(), Some(pid), "{failed}");
    assert_eq!(failed["status"], "exit status: 1", "{failed}");
    // Reaped: no /proc entry left, not even a zombie's.
    let stat = format!("/proc/{pid}/stat");
    assert!(
        eventually(Duration::from_secs(10), || std::fs::read_to_string(&stat)
            .is_err()),
        "the successor is left as {:?}",
        std::fs::read_to_string(&stat)
    );
    assert_eq!(get(addr, "/v").text(), "ok");
}

/// Connections over `limits.max_connections` are closed at once, counted in
/// `tollgate_connections_refused_total{reason="max_connections"}` and told in a warning that
/// names how many (at most one a minute per shard).
#[test]
fn connections_over_max_connections_are_counted_and_logged() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let cfg = Cfg::new()
        .admin("token_env = \"TG_TEST_TOKEN\"")
        .limits("max_connections = 1")
        .route("GET /v", "integration = { type = \"mock\", body = \"ok\" }")
        .toml();
    std::fs::write(&path, &cfg).unwrap();
    let p = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    let addr: SocketAddr = p.logged_addr("listening");
    let admin_addr: SocketAddr = p.logged_addr("admin API listening");
    let mut held = Client::connect(addr);
    assert_eq!(
        held.request(b"GET /v HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200
    );
    for _ in 0..3 {
        let mut c = Client::connect(addr);
        c.send(b"GET /v HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(c.read_response(false).is_none(), "served over the limit");
    }
    let warned = p.lines_until("limits.max_connections reached");
    let warned = warned.last().unwrap();
    assert_eq!(warned["refused"], 1, "{warned}");
    assert_eq!(warned["max_connections"], 1, "{warned}");
    let refused = || {
        admin(admin_addr, "GET", "/metrics", Some("t0ken"))
            .text()
            .lines()
            .find_map(|l| {
                l.strip_prefix("tollgate_connections_refused_total{")
                    .filter(|l| l.contains("reason=\"max_connections\""))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            })
    };
    assert!(
        eventually(Duration::from_secs(5), || refused() == Some(3)),
        "{:?}",
        refused()
    );
    let text = admin(admin_addr, "GET", "/metrics", Some("t0ken")).text();
    assert!(
        text.contains("# HELP tollgate_connections_refused_total Client connections closed at once, by reason"),
        "{text}"
    );
}

/// The shipped systemd unit passes `systemd-analyze verify` (with this build's binary in
/// place of /usr/bin/tollgate).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dist/tollgate.service"
    ))
    .unwrap()
    .replace("/usr/bin/tollgate", env!("CARGO_BIN_EXE_tollgate"));
    let dir = TempDir::new();
    let path = dir.0.join("tollgate.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (the systemd package)");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("tollgate.service"), "{text}");
}

/// `scripts/package.sh` builds a .deb with the binary, the unit, a default config (a conffile
/// that passes `tollgate check`), the state directory and maintainer scripts that create the
/// `tollgate` user; unpacked, its binary runs.
#[test]
fn the_package_holds_what_an_install_needs() {
    let out = TempDir::new();
    let built = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package.sh"))
        .args(["--bin", env!("CARGO_BIN_EXE_tollgate"), "--out"])
        .arg(&out.0)
        .arg("--fast")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = String::from_utf8(built.stdout).unwrap().trim().to_string();
    let contents = Command::new("dpkg-deb")
        .args(["--contents", &deb])
        .output()
        .unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout);
    for path in [
        "./usr/bin/tollgate",
        "./lib/systemd/system/tollgate.service",
        "./etc/tollgate/config.toml",
        "./var/lib/tollgate/",
        "./usr/share/doc/tollgate/README.md",
        "./usr/share/tollgate/grafana/tollgate.json",
    ] {
        assert!(contents.contains(path), "{path} missing:\n{contents}");
    }
    let field = |f: &str| {
        let o = Command::new("dpkg-deb")
            .args(["--field", &deb, f])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "tollgate");
    assert!(field("Depends").contains("adduser"));
    let root = out.0.join("root");
    let ctl = out.0.join("control");
    assert!(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&ctl)
        .status()
        .unwrap()
        .success());
    assert_eq!(
        std::fs::read_to_string(ctl.join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/tollgate/config.toml"
    );
    let postinst = std::fs::read_to_string(ctl.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    for script in ["postinst", "prerm", "postrm"] {
        let ok = Command::new("sh")
            .arg("-n")
            .arg(ctl.join(script))
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script} is not valid sh");
    }
    let check = Command::new(root.join("usr/bin/tollgate"))
        .arg("--config")
        .arg(root.join("etc/tollgate/config.toml"))
        .arg("check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// With `--log-format json`, a config refused at start-up is one JSON record naming every
/// error, and `check` and start-up print names as the config spells them.
#[test]
fn json_logs_cover_start_up_errors_and_names_are_the_configs() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, "[server]\nworkers = \"many\"\n").unwrap();
    let out = bin()
        .args(["--config", path.to_str().unwrap(), "--log-format", "json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(records[0]["fields"]["message"], "configuration refused");
    assert!(records[0]["fields"]["errors"]
        .as_str()
        .unwrap()
        .contains("workers"));
    let out = bin()
        .args([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
            "check",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("driver auto") && text.contains("(round_robin,"),
        "{text}"
    );
}

/// Two take-overs in a row, the second before the first process's drain ended (a slow
/// request holds it) while clients keep sending: what the first process counted after it
/// released the store (it serves until the second says it serves) reaches the third through
/// the second, which waits for it before it stops. No counted request is lost.
#[test]
fn back_to_back_take_overs_lose_no_counted_request() {
    const KEY: &str = "back-0123456789abcdef0123";
    let slow = Upstream::start(|_| Action::Sleep(Duration::from_secs(2)));
    let port = free_port();
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = Cfg::new()
        .listeners(format!(
            "[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:{port}\"\n"
        ))
        .admin("token_env = \"TG_TEST_TOKEN\"")
        .upstream(format!(
            "[[upstreams]]\nname = \"slow\"\ntargets = [\"{}\"]\n",
            slow.addr
        ))
        .route(
            "GET /slow",
            "integration = { type = \"http\", uri = \"http://slow/\" }",
        )
        .route(
            "GET /v",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"v\" }",
        )
        .extra(format!(
            "[[usage_plans]]\nname = \"p\"\nstages = [\"api/prod\"]\nquota = {{ limit = 10000000, period = \"day\" }}\n\n[[api_keys]]\nname = \"k\"\nvalue = \"{KEY}\"\nplan = \"p\"\n"
        ))
        .toml();
    std::fs::write(&path, &toml).unwrap();
    let env = [("TG_TEST_TOKEN", "t0ken")];
    let mut a = Proc::start(&path, &env);
    a.wait_for("a successor may take over (tollgate --take-over)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Keyed requests, a new connection each, all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s1 = stop.clone();
    let load = std::thread::spawn(move || {
        let mut ok = 0u64;
        while !s1.load(std::sync::atomic::Ordering::SeqCst) {
            let r = Client::connect(addr).request(
                format!(
                    "GET /v HTTP/1.1\r\nHost: h\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            assert_eq!(r.status, 200, "{}", r.text());
            ok += 1;
        }
        ok
    });
    // A's drain lasts as long as this request.
    let held = std::thread::spawn(move || get(addr, "/slow").status);
    assert!(eventually(Duration::from_secs(5), || slow.count() == 1));
    let mut b = Proc::start_with(&path, &env, &["--take-over"]);
    a.wait_for("the new process serves: no longer accepting; draining");
    b.wait_for("a successor may take over (tollgate --take-over)");
    let mut c = Proc::start_with(&path, &env, &["--take-over"]);
    let admin_addr: SocketAddr = c.logged_addr("admin API listening");
    b.wait_for("waiting for the usage the previous process counts while it drains");
    assert_eq!(held.join().unwrap(), 200);
    assert!(a.child.wait().unwrap().success());
    assert!(b.child.wait().unwrap().success());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let ok = load.join().unwrap();
    let today = {
        let out = Command::new("date").args(["-u", "+%F"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let used = || {
        admin(
            admin_addr,
            "GET",
            &format!("/usageplans/p/usage?startDate={today}&endDate={today}"),
            Some("t0ken"),
        )
        .json()["items"]["k"][0]["used"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(5), || used() == ok),
        "usage {} for {ok} requests",
        used()
    );
    c.signal("TERM");
    assert!(c.child.wait().unwrap().success());
}

/// A config read from a pipe (`--config <(envsubst < tmpl)`) is read once: a reload is
/// refused, saying why, and the control plane answers on (reopening the pipe waited for a
/// writer for good, with `/ping` and SIGTERM behind it).
#[test]
fn a_reload_of_a_config_read_from_a_pipe_is_refused_without_waiting() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_millis(1)));
    let dir = TempDir::new();
    let path = dir.0.join("config.fifo");
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.unwrap().success());
    let text = conf("piped", up.addr, "TG_TEST_TOKEN");
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || std::fs::write(&path, text).unwrap())
    };
    let mut p = Proc::start(&path, &[("TG_TEST_TOKEN", "t0ken")]);
    writer.join().unwrap();
    let addr: SocketAddr = p.logged_addr("listening");
    let admin_addr: SocketAddr = p.logged_addr("admin API listening");
    assert_eq!(get(addr, "/v").text(), "piped");
    let r = admin(admin_addr, "POST", "/reload", Some("t0ken"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("read from a pipe"), "{}", r.text());
    p.signal("HUP");
    p.wait_for("reload refused; the previous configuration keeps serving");
    assert_eq!(admin(admin_addr, "GET", "/ping", None).status, 200);
    assert_eq!(get(addr, "/v").text(), "piped");
    p.signal("TERM");
    assert!(p.child.wait().unwrap().success());
}

/// Admin changes are audited; a message a backend sends to a connection
/// (`POST /@connections/{id}`) is traffic, not a change, and writes no audit line.
#[test]
fn admin_changes_are_audited_and_connection_pushes_are_not() {
    let up = Upstream::start(|_| respond(200, "{}"));
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    let toml = Cfg::new()
        .admin("token_env = \"TG_TEST_TOKEN\"")
        .upstream(format!(
            "[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n",
            up.addr
        ))
        .api_extra("kind = \"websocket\"\nconnections_authorization = \"none\"")
        .routes("[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n")
        .toml();
    std::fs::write(&path, toml).unwrap();
    let p = Proc::start(&path, &[("TG_TEST_TOKEN", TOKEN)]);
    let addr: SocketAddr = p.logged_addr("listening");
    let admin_addr: SocketAddr = p.logged_addr("admin API listening");
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (mut ws, _) = tungstenite::client("ws://chat.test/", stream).unwrap();
    let id = up.requests()[0]
        .header("x-connection-id")
        .unwrap()
        .to_string();
    let mut c = Client::connect(admin_addr);
    let r = c.request(
        format!("POST /@connections/{id} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 2\r\n\r\nhi").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap().into_text().unwrap().as_str(), "hi");
    let body = r#"{"name": "audited", "value": "audited-key-0123456789abcdef"}"#;
    let r = admin_with(admin_addr, "POST", "/apikeys", body);
    assert_eq!(r.status, 201, "{}", r.text());
    let lines = p.lines_until("admin change");
    let audited: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "admin change")
        .collect();
    assert_eq!(audited.len(), 1, "{lines:?}");
    assert_eq!(audited[0]["path"], "/apikeys");
}
