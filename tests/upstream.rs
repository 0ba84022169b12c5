//! Upstream behaviour, end to end: failures of every kind and the answer each gets, health
//! checks, passive ejection, retries, balancing, pooling and WebSocket pass-through.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn one_route(upstream_block: &str, uri: &str, extra: &str) -> String {
    config(
        "",
        upstream_block,
        &format!(
            r#"
  [[apis.routes]]
  route = "ANY /{{proxy+}}"
  integration = {{ type = "http", uri = "{uri}/{{proxy}}" {extra} }}
"#
        ),
    )
}

fn literal(addr: SocketAddr, extra: &str) -> String {
    one_route("", &format!("http://{addr}"), extra)
}

fn upstream_block(targets: &[SocketAddr], extra: &str) -> String {
    let t: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[upstreams]]\nname = \"up\"\ntargets = [{}]\n{extra}\n",
        t.join(", ")
    )
}

#[test]
fn refused_connections_get_502() {
    let gw = Gw::start(&literal(closed_port(), ""));
    let r = get(gw.addr(), "/x");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["message"], "Bad Gateway");
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn slow_upstreams_get_504_after_the_route_timeout() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_secs(3)));
    let gw = Gw::start(&literal(up.addr, ", timeout = \"300ms\""));
    let start = std::time::Instant::now();
    let r = get(gw.addr(), "/x");
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["message"], "Endpoint request timed out");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn resets_garbage_and_early_closes_get_502() {
    let up = Upstream::start(|s| match s.target.as_str() {
        "/reset" => Action::Reset,
        "/garbage" => Action::RawClose(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()),
        "/badlen" => Action::RawClose(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
        ),
        // A 101 to a request that asked for no upgrade: what follows is another protocol's,
        // never an answer to pass on (RFC 9110 15.2.2).
        "/switch" => Action::Raw(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
                .to_vec(),
        ),
        _ => Action::Close,
    });
    let gw = Gw::start(&literal(up.addr, ""));
    for p in ["/reset", "/garbage", "/badlen", "/close", "/switch"] {
        let r = get(gw.addr(), p);
        assert_eq!(r.status, 502, "{p}");
        assert_eq!(r.json()["message"], "Bad Gateway", "{p}");
    }
    // The gateway keeps serving after all of that.
    let ok = Upstream::echo();
    let gw2 = Gw::start(&literal(ok.addr, ""));
    assert_eq!(get(gw2.addr(), "/fine").status, 200);
}

/// An answer whose status line has no reason phrase, or one that is not ASCII, is passed on
/// with the standard phrase (the upstream's parse gives no place in the head for either).
#[test]
fn answers_without_a_usable_reason_phrase_get_the_standard_one() {
    let up = Upstream::start(|s| match s.target.as_str() {
        "/none" => Action::RawClose(b"HTTP/1.1 201\r\nContent-Length: 2\r\n\r\nok".to_vec()),
        "/latin1" => Action::RawClose(
            b"HTTP/1.1 404 Introuvable \xe9t\xe9\r\nContent-Length: 2\r\n\r\nno".to_vec(),
        ),
        _ => Action::RawClose(b"HTTP/1.1 200 Fine\r\nContent-Length: 2\r\n\r\nhi".to_vec()),
    });
    let gw = Gw::start(&literal(up.addr, ""));
    for (path, line, body) in [
        ("/none", "HTTP/1.1 201 Created\r\n", "ok"),
        ("/latin1", "HTTP/1.1 404 Not Found\r\n", "no"),
        ("/own", "HTTP/1.1 200 Fine\r\n", "hi"),
    ] {
        let mut c = Client::connect(gw.addr());
        c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes());
        let text = String::from_utf8_lossy(&c.read_to_end()).into_owned();
        assert!(text.starts_with(line), "{path}: {text}");
        assert!(text.ends_with(body), "{path}: {text}");
    }
}

/// An answer's framing is never taken away: `Connection: content-length` still has the
/// length relayed (without it a kept-alive answer ran into the next one), and an answer with
/// both `Content-Length` and `Transfer-Encoding` is 502 for a HEAD and a 304 as for a GET
/// (RFC 9112 6.3), not relayed with both.
#[test]
fn answers_keep_their_framing_and_conflicting_framing_is_refused() {
    let up = Upstream::start(|s| match s.target.as_str() {
        "/named" => Action::Raw(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        "/both" => Action::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 8\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        _ => Action::Raw(
            b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nContent-Length: 8\r\n\r\n"
                .to_vec(),
        ),
    });
    let gw = Gw::start(&literal(up.addr, ""));
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /named HTTP/1.1\r\nHost: h\r\n\r\nGET /named HTTP/1.1\r\nHost: h\r\n\r\n");
    for _ in 0..2 {
        let r = c.read_response(false).expect("an answer");
        assert_eq!(
            (r.status, r.header("content-length"), r.text().as_str()),
            (200, Some("5"), "hello")
        );
    }
    for (method, path) in [("HEAD", "/both"), ("GET", "/both"), ("GET", "/304")] {
        let mut c = Client::connect(gw.addr());
        c.send(format!("{method} {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.read_response(method == "HEAD").expect("an answer");
        assert_eq!(r.status, 502, "{method} {path}: {:?}", r.headers);
    }
}

/// On Tollgate's own runtime an answer that ends the connection carries the FIN on its last
/// segment: a client that has read the answer finds the end already there, so it never closes
/// first (and holds no TIME_WAIT, whose ports a load of new connections would use up).
#[test]
fn the_last_answer_arrives_with_the_end_of_the_connection() {
    use tollgate::Driver;
    if !matches!(driver(), Driver::Auto | Driver::IoUring) || !tollgate::rt::supported() {
        return;
    }
    let up = Upstream::start(|_| respond(200, "hello"));
    let gw = Gw::start(&literal(up.addr, ""));
    // A relayed answer, and one the gateway makes (a path it refuses).
    for (path, status) in [("/x", "200"), ("/a/%2e%2e/x", "400")] {
        let mut s = std::net::TcpStream::connect(gw.addr()).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        // Until the head and as many body bytes as it announces are in.
        while !whole_answer(&got) {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "{path}: the end before the answer: {got:?}");
            got.extend_from_slice(&b[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {text}"
        );
        s.set_nonblocking(true).unwrap();
        assert_eq!(
            s.read(&mut b).map_err(|e| e.kind()),
            Ok(0),
            "{path}: the FIN did not come with the answer"
        );
    }
}

/// Whether `raw` holds a whole answer: a head and the Content-Length it gives.
fn whole_answer(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    raw.len() >= end + 4 + len
}

#[test]
fn an_upstream_dying_mid_body_cuts_the_client_connection() {
    let up = Upstream::start(|_| {
        Action::RawClose(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly-part".to_vec())
    });
    let gw = Gw::start(&literal(up.addr, ""));
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
    let raw = c.read_to_end();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("only-part"), "{text}");
    // Fewer bytes than Content-Length and then EOF: the client knows it is truncated.
}

/// Answers of known length arrive whole and in order however the upstream's bytes were cut
/// (on Tollgate's own runtime the body is sent on from the buffers it arrived in), and bytes
/// an upstream sends past an answer are never taken for the next answer.
#[test]
fn large_answers_arrive_whole_and_bytes_past_an_answer_are_dropped() {
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let with_head = |body: &[u8], tail: &[u8]| {
        let mut r =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        r.extend_from_slice(body);
        r.extend_from_slice(tail);
        r
    };
    let stale = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale";
    let answers = [
        with_head(&big, b""),
        // A body over the few KiB copied with the head, then a stray answer.
        with_head(&big[..9000], stale),
        with_head(b"ok", stale),
    ];
    let up = Upstream::start(move |s| match s.target.as_str() {
        "/big" => Action::Raw(answers[0].clone()),
        "/9000" => Action::Raw(answers[1].clone()),
        "/2" => Action::Raw(answers[2].clone()),
        _ => respond(200, "fresh"),
    });
    let gw = Gw::start(&literal(up.addr, ""));
    let mut c = Client::connect(gw.addr());
    for _ in 0..3 {
        let r = c.request(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), big.len());
        assert!(r.body == big, "the body arrived changed");
    }
    for (path, len) in [("/9000", 9000), ("/2", 2)] {
        let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body.len(), len, "{path}");
        // The next answer comes from the upstream, not from the stray bytes.
        for _ in 0..2 {
            let r = c.request(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(r.text(), "fresh", "after {path}");
        }
    }
}

#[test]
fn health_checks_take_dead_targets_out_and_bring_them_back() {
    let healthy = Arc::new(AtomicBool::new(true));
    let h2 = healthy.clone();
    let up = Upstream::start(move |s| {
        if s.target == "/healthz" {
            if h2.load(Ordering::SeqCst) {
                respond(200, "ok")
            } else {
                respond(500, "sick")
            }
        } else {
            respond(200, "served")
        }
    });
    let block = upstream_block(&[up.addr], "health = { path = \"/healthz\", interval = \"50ms\", unhealthy_after = 2, healthy_after = 1 }");
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    assert_eq!(get(gw.addr(), "/x").text(), "served");
    healthy.store(false, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(5), || get(gw.addr(), "/x")
        .status
        == 503));
    let r = get(gw.addr(), "/x");
    assert_eq!(r.json()["message"], "Service Unavailable");
    healthy.store(true, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(5), || get(gw.addr(), "/x")
        .status
        == 200));
}

/// Runs of failed probes count across reloads (each starts the checks anew): a target that
/// fails every probe goes out, however often the configuration changes; and a reload that
/// takes `health` away puts a target its checks had taken out back in.
#[test]
fn health_check_runs_outlive_reloads_and_removing_checks_brings_targets_back() {
    let up = Upstream::start(|s| {
        if s.target == "/healthz" {
            respond(500, "sick")
        } else {
            respond(200, "served")
        }
    });
    let probes = || {
        up.requests()
            .iter()
            .filter(|s| s.target == "/healthz")
            .count()
    };
    // One probe per generation: the next is an hour away.
    let block = upstream_block(&[up.addr], "health = { path = \"/healthz\", interval = \"1h\", unhealthy_after = 2, healthy_after = 1 }");
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    assert!(eventually(Duration::from_secs(5), || probes() >= 1));
    let mut down = false;
    for _ in 0..20 {
        let before = probes();
        assert_eq!(
            admin(gw.admin(), "POST", "/reload", Some(TOKEN)).status,
            200
        );
        assert!(eventually(Duration::from_secs(5), || probes() > before));
        if eventually(Duration::from_millis(500), || {
            get(gw.addr(), "/x").status == 503
        }) {
            down = true;
            break;
        }
    }
    assert!(down, "a target failing every probe stayed in");
    gw.rewrite(&one_route(&upstream_block(&[up.addr], ""), "http://up", ""));
    assert_eq!(
        admin(gw.admin(), "POST", "/reload", Some(TOKEN)).status,
        200
    );
    let r = get(gw.addr(), "/x");
    assert_eq!((r.status, r.text()), (200, "served".to_string()));
}

/// A health answer preceded by an interim one (103 Early Hints) is judged by its final status.
#[test]
fn health_checks_read_past_interim_answers() {
    let up = Upstream::start(|s| {
        if s.target == "/healthz" {
            Action::Raw(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            )
        } else {
            respond(200, "served")
        }
    });
    let block = upstream_block(
        &[up.addr],
        "health = { path = \"/healthz\", interval = \"50ms\", unhealthy_after = 1, healthy_after = 1 }",
    );
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    let probes = || {
        up.requests()
            .iter()
            .filter(|s| s.target == "/healthz")
            .count()
    };
    assert!(eventually(Duration::from_secs(5), || probes() >= 3));
    assert_eq!(get(gw.addr(), "/x").text(), "served");
}

#[test]
fn idempotent_requests_retry_on_another_target_when_connect_fails() {
    let up = Upstream::echo();
    let block = upstream_block(&[closed_port(), up.addr], "max_fails = 0");
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    let mut c = Client::connect(gw.addr());
    for _ in 0..4 {
        assert_eq!(c.request(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").status, 200);
    }
    // A POST whose connection could not be opened was sent nothing: it goes to the other
    // target too (nginx's `proxy_next_upstream error`).
    for _ in 0..4 {
        assert_eq!(get_post(gw.addr()), 200);
    }
    assert_eq!(
        up.requests().iter().filter(|s| s.method == "POST").count(),
        4
    );
}

fn get_post(addr: SocketAddr) -> u16 {
    Client::connect(addr)
        .request(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
        .status
}

#[test]
fn failing_targets_are_ejected_for_fail_timeout() {
    let up = Upstream::echo();
    let block = upstream_block(
        &[closed_port(), up.addr],
        "max_fails = 1\nfail_timeout = \"60s\"",
    );
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    let mut statuses: Vec<u16> = (0..6).map(|_| get_post(gw.addr())).collect();
    // At most the first attempt on the dead target fails; then it is skipped.
    assert!(
        statuses.iter().filter(|s| **s == 502).count() <= 1,
        "{statuses:?}"
    );
    statuses.retain(|s| *s == 200);
    assert!(statuses.len() >= 5);
}

#[test]
fn hash_balancing_keeps_a_key_on_one_target() {
    let (a, b) = (Upstream::echo(), Upstream::echo());
    let block = upstream_block(
        &[a.addr, b.addr],
        "balance = \"hash\"\nhash_key = \"header.x-user\"",
    );
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    for user in ["alice", "bob", "carol", "dave"] {
        let before = (a.count(), b.count());
        for _ in 0..5 {
            let r = Client::connect(gw.addr()).request(
                format!(
                    "GET /x HTTP/1.1\r\nHost: h\r\nX-User: {user}\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            );
            assert_eq!(r.status, 200);
        }
        let moved = (a.count() - before.0, b.count() - before.1);
        assert!(moved == (5, 0) || moved == (0, 5), "{user}: {moved:?}");
    }
}

#[test]
fn least_request_and_round_robin_spread_load() {
    for balance in ["round_robin", "least_request"] {
        let (a, b) = (Upstream::echo(), Upstream::echo());
        let block = upstream_block(&[a.addr, b.addr], &format!("balance = \"{balance}\""));
        let gw = Gw::start(&one_route(&block, "http://up", ""));
        for _ in 0..10 {
            assert_eq!(get(gw.addr(), "/x").status, 200);
        }
        assert!(
            a.count() >= 3 && b.count() >= 3,
            "{balance}: {} / {}",
            a.count(),
            b.count()
        );
    }
}

#[test]
fn stale_pooled_connections_are_retried_transparently() {
    // Answers keep-alive style, then closes anyway: the gateway's pooled connection is dead
    // the next time it is used.
    let up = Upstream::start(|_| {
        Action::RawClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    });
    let gw = Gw::start(&literal(up.addr, ""));
    let mut c = Client::connect(gw.addr());
    for _ in 0..5 {
        let r = c.request(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "ok");
    }
}

#[test]
fn websocket_upgrades_are_relayed_both_ways() {
    let up = Upstream::start(|_| Action::UpgradeEcho);
    let gw = Gw::start(&literal(up.addr, ""));
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    let seen = &up.requests()[0];
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert_eq!(
        seen.header("sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );
    for msg in [&b"frame-one"[..], b"\x81\x05hello", &[0u8; 5000]] {
        c.stream.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.stream.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn idempotent_requests_retry_on_another_target_when_one_resets_before_answering() {
    // One target accepts and resets every request; the other answers. Ejection is off so
    // that every request can meet the resetting target.
    let bad = Upstream::start(|_| Action::Reset);
    let good = Upstream::start(|_| respond(200, "good"));
    let block = upstream_block(&[bad.addr, good.addr], "max_fails = 0");
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    let mut c = Client::connect(gw.addr());
    for i in 0..40 {
        let r = c.request(format!("GET /x{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.text(), "good");
    }
    assert!(
        bad.count() >= 10,
        "round robin sent {} to the resetting target",
        bad.count()
    );
    // A POST whose body went to the resetting target is not repeated: 502.
    let mut refused = 0;
    for _ in 0..4 {
        let r = c.request(b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi");
        if r.status == 502 {
            refused += 1;
            c = Client::connect(gw.addr());
        }
    }
    assert!(refused >= 1, "no POST met the resetting target");
    assert_eq!(
        good.requests()
            .iter()
            .filter(|s| s.method == "POST")
            .count(),
        4 - refused
    );
}

/// Only WebSocket upgrades are relayed: an `Upgrade: h2c` is not offered to the origin (it
/// would open an HTTP/2 tunnel past routes, keys and throttles); the request is served as an
/// ordinary one.
#[test]
fn h2c_and_other_upgrades_are_not_offered_to_the_origin() {
    let up = Upstream::start(|s| {
        if s.header("upgrade").is_some() {
            Action::Raw(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                    .to_vec(),
            )
        } else {
            respond(200, "plain")
        }
    });
    let gw = Gw::start(&literal(up.addr, ""));
    let mut c = Client::connect(gw.addr());
    for proto in ["h2c", "foo/1.0", "websocket, h2c"] {
        let r = c.request(
            format!("GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {proto}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 200, "{proto}");
        assert_eq!(r.text(), "plain", "{proto}");
    }
    for s in up.requests() {
        assert!(s.header("upgrade").is_none(), "{:?}", s.headers);
        assert!(s.header("http2-settings").is_none(), "{:?}", s.headers);
    }
}

/// Passive ejection never takes the last healthy target out of service: an upstream whose only
/// target dropped a few connections keeps being served (and counted) instead of answering 503
/// for `fail_timeout`.
#[test]
fn the_last_healthy_target_is_never_ejected() {
    let drops = Arc::new(std::sync::atomic::AtomicUsize::new(3));
    let d = drops.clone();
    let up = Upstream::start(move |_| {
        if d.load(Ordering::SeqCst) > 0 {
            d.fetch_sub(1, Ordering::SeqCst);
            Action::Close
        } else {
            respond(200, "back")
        }
    });
    let block = upstream_block(&[up.addr], "max_fails = 2\nfail_timeout = \"30s\"");
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(gw.addr(), "/x").status);
    }
    assert!(statuses.iter().all(|&s| s == 502), "{statuses:?}");
    // The target is ejected for 30 s, but it is the only one: it is used anyway.
    let r = get(gw.addr(), "/x");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "back");
    assert!(metric_reaches(
        &gw,
        "tollgate_upstream_all_ejected_total",
        "",
        1
    ));
}

/// A target is ejected once per rest: failures while it rests (the last target, used anyway)
/// do not eject it again, so its ejections (and their log lines) do not grow with requests.
#[test]
fn a_resting_target_is_not_ejected_again() {
    let dead = closed_port();
    let block = upstream_block(&[dead], "max_fails = 1\nfail_timeout = \"60s\"");
    let gw = Gw::start(&one_route(&block, "http://up", ""));
    for _ in 0..5 {
        assert_eq!(get(gw.addr(), "/x").status, 502);
    }
    let target = format!("target=\"{dead}\"");
    assert!(metric_reaches(
        &gw,
        "tollgate_upstream_target_connect_errors_total",
        &target,
        5
    ));
    assert_eq!(
        metric(&gw, "tollgate_upstream_target_ejections_total", &target),
        1
    );
}

/// An upgraded connection with no bytes either way for `limits.upgrade_idle_timeout` is closed
/// (and counted); one that keeps talking stays open.
#[test]
fn idle_upgraded_connections_are_closed() {
    let up = Upstream::start(|_| Action::UpgradeEcho);
    let toml = config(
        "upgrade_idle_timeout = \"500ms\"",
        "",
        &format!(
            "  [[apis.routes]]\n  route = \"ANY /{{proxy+}}\"\n  integration = {{ type = \"http\", uri = \"http://{}/{{proxy}}\" }}\n",
            up.addr
        ),
    );
    let gw = Gw::start(&toml);
    let upgrade = || {
        let mut c = Client::connect(gw.addr());
        c.send(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        assert_eq!(c.read_response(false).unwrap().status, 101);
        c
    };
    // Talking every 100 ms for 1.5 s (three idle periods' worth): still open.
    let mut c = upgrade();
    for _ in 0..15 {
        c.stream.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        c.stream.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Silent: closed after the idle timeout, and counted.
    let start = std::time::Instant::now();
    assert!(c.is_closed());
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert!(metric_reaches(
        &gw,
        "tollgate_upgrade_idle_timeouts_total",
        "",
        1
    ));
}

/// An origin that answers right after the request head and never reads the body: then
/// half-closes and holds the connection, or closes at once with the body unread (a reset).
/// Returns its address and the number of connections it accepted.
fn early_origin(reset: bool) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = conns.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let answer = if head.starts_with(b"GET ") {
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                } else {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\ndenied"
                };
                let _ = s.write_all(answer.as_bytes());
                if head.starts_with(b"GET ") {
                    // Read nothing more; let the client close.
                    let _ = s.read(&mut b);
                    return;
                }
                if reset {
                    // Closing with unread bytes sends a reset.
                    return;
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
                std::thread::sleep(Duration::from_secs(10));
            });
        }
    });
    (addr, conns)
}

/// Sends a 5 MB body (Content-Length or chunked) from a second thread and reads the answer.
fn post_big(gw: SocketAddr, chunked: bool) -> Option<Resp> {
    const SIZE: usize = 5 << 20;
    let mut c = Client::connect(gw);
    let head = if chunked {
        "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
    } else {
        format!("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: {SIZE}\r\n\r\n")
    };
    c.send(head.as_bytes());
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let piece = vec![b'x'; 64 << 10];
        for _ in 0..SIZE / piece.len() {
            let ok = if chunked {
                w.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .and_then(|_| w.write_all(&piece))
                    .and_then(|_| w.write_all(b"\r\n"))
            } else {
                w.write_all(&piece)
            };
            if ok.is_err() {
                return;
            }
        }
        if chunked {
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    let r = c.read_response(false);
    drop(c);
    let _ = writer.join();
    r
}

/// An origin that answers (401) before reading a large body gets its answer relayed — not a
/// 502 — whether it then half-closes or resets, for Content-Length and chunked bodies; the
/// upstream connection is not reused, and the client connection is closed after the answer.
#[test]
fn early_upstream_answers_are_relayed_while_the_body_streams() {
    for reset in [false, true] {
        let (origin, conns) = early_origin(reset);
        let gw = Gw::start(&literal(origin, ", timeout = \"20s\""));
        for chunked in [false, true] {
            let r = post_big(gw.addr(), chunked)
                .unwrap_or_else(|| panic!("no answer (reset {reset}, chunked {chunked})"));
            assert_eq!(
                r.status,
                401,
                "reset {reset}, chunked {chunked}: {}",
                r.text()
            );
            assert_eq!(r.text(), "denied");
            assert_eq!(r.header("connection"), Some("close"));
        }
        // Each early answer's upstream connection was dropped: a new request opens another.
        let before = conns.load(Ordering::SeqCst);
        assert_eq!(get(gw.addr(), "/after").status, 200);
        assert_eq!(conns.load(Ordering::SeqCst), before + 1);
    }
}

/// The same through the gateway's own mock backend (a route answering without reading the
/// body): the mock's 200 reaches the client through the proxying gateway.
#[test]
fn a_mock_backend_answering_a_large_upload_is_relayed() {
    let backend = Gw::start(&config(
        "",
        "",
        r#"
  [[apis.routes]]
  route = "ANY /{path+}"
  integration = { type = "mock", status = 200, body = "stored" }
"#,
    ));
    let gw = Gw::start(&literal(backend.addr(), ", timeout = \"20s\""));
    for chunked in [false, true] {
        let r = post_big(gw.addr(), chunked).expect("an answer");
        assert_eq!(r.status, 200, "chunked {chunked}: {}", r.text());
        assert_eq!(r.text(), "stored");
    }
}

/// The pool follows demand: waves of 60 concurrent requests reuse the connections the first
/// wave opened, even with `keepalive = 4` — a pool that closed all but 4 after each wave made
/// every wave open ~56 new ones (the connect storms behind HTTP/2 tail latency at 1,000
/// concurrent streams).
#[test]
fn the_pool_keeps_what_recent_demand_needs() {
    const WAVE: usize = 60;
    let up = Upstream::start(|_| Action::Sleep(Duration::from_millis(100)));
    let gw = Gw::start(&one_route(
        &upstream_block(&[up.addr], "keepalive = 4"),
        "http://up",
        "",
    ));
    let addr = gw.addr();
    let barrier = Arc::new(std::sync::Barrier::new(WAVE));
    let clients: Vec<_> = (0..WAVE)
        .map(|_| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for _ in 0..3 {
                    b.wait();
                    let r = c.request(b"GET /w HTTP/1.1\r\nHost: h\r\n\r\n");
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(up.count(), 3 * WAVE);
    let opened = up.conns.load(Ordering::SeqCst);
    assert!(
        opened < WAVE + WAVE / 2,
        "{opened} upstream connections for 3 waves of {WAVE}"
    );
}

#[test]
fn a_pooled_connection_serves_on_after_its_target_first_answers_big() {
    // A target's first answer over 64 KiB switches its connections to one buffer per receive
    // (the rest of a big answer waits in the kernel for a slow client). The connection that
    // carried it is switched while it reads, and it stays in the pool like any other: every
    // request of one client goes over one upstream connection.
    let big = vec![b'b'; 300 * 1024];
    let up = Upstream::start(move |s| match s.target.as_str() {
        "/big" => Action::Raw(
            [
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).as_bytes(),
                &big,
            ]
            .concat(),
        ),
        _ => respond(200, "small"),
    });
    let gw = Gw::start(&literal(up.addr, ""));
    let mut c = Client::connect(gw.addr());
    for path in ["/s", "/s", "/big", "/s", "/big", "/s", "/s"] {
        let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{path}");
        let want = if path == "/big" { 300 * 1024 } else { 5 };
        assert_eq!(r.body.len(), want, "{path}");
    }
    assert_eq!(up.count(), 7);
    assert_eq!(
        up.conns.load(Ordering::SeqCst),
        1,
        "upstream connections opened"
    );
}

/// A health check's path goes into the probe's request line as written: one with a space or
/// a line break (which would add headers of its own) is refused by key.
#[test]
fn a_health_path_that_would_break_the_probe_is_refused() {
    for path in ["/h x", "/h\\r\\nX-Injected: 1", "h"] {
        let block = upstream_block(
            &[closed_port()],
            &format!("health = {{ path = \"{path}\", interval = \"1s\" }}"),
        );
        let (ok, text) = check_config(&one_route(&block, "http://up", ""));
        assert!(!ok, "{path}: {text}");
        assert!(
            text.contains("upstreams[\"up\"].health.path = ")
                && text.contains("in printable ASCII without spaces"),
            "{path}: {text}"
        );
    }
    let block = upstream_block(
        &[closed_port()],
        "health = { path = \"/healthz?deep=1\", interval = \"1s\" }",
    );
    assert!(check_config(&one_route(&block, "http://up", "")).0);
}

/// Upstreams that name the same address share its connections, not its failures: failures
/// through `strict` (max_fails = 1) eject the target there, while `lenient` (max_fails = 0)
/// goes on balancing over it.
#[test]
fn ejection_is_per_upstream_even_on_a_shared_target() {
    let a = Upstream::start(|s| {
        if s.target.starts_with("/fail") {
            Action::Close
        } else {
            respond(200, "a")
        }
    });
    let b = Upstream::start(|_| respond(200, "b"));
    let toml = config(
        "",
        &format!(
            "[[upstreams]]\nname = \"strict\"\ntargets = [\"{}\"]\nmax_fails = 1\nfail_timeout = \"60s\"\n\n\
             [[upstreams]]\nname = \"lenient\"\ntargets = [\"{}\", \"{}\"]\nmax_fails = 0\n",
            a.addr, a.addr, b.addr
        ),
        "  [[apis.routes]]\n  route = \"POST /strict/{proxy+}\"\n  integration = { type = \"http\", uri = \"http://strict/{proxy}\" }\n\
         \n  [[apis.routes]]\n  route = \"GET /lenient/{proxy+}\"\n  integration = { type = \"http\", uri = \"http://lenient/{proxy}\" }\n",
    );
    let gw = Gw::start(&toml);
    let post = |path: &str| {
        Client::connect(gw.addr()).request(
            format!(
                "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    // Closed before an answer (a POST is not retried): a failure, and strict ejects A.
    assert_eq!(post("/strict/fail").status, 502);
    let target = format!("target=\"{}\"", a.addr);
    assert!(metric_reaches(
        &gw,
        "tollgate_upstream_target_ejections_total",
        &target,
        1
    ));
    // lenient still sends every other request to A.
    let bodies: Vec<String> = (0..4)
        .map(|_| get(gw.addr(), "/lenient/x").text())
        .collect();
    assert_eq!(bodies.iter().filter(|b| *b == "a").count(), 2, "{bodies:?}");
    assert_eq!(bodies.iter().filter(|b| *b == "b").count(), 2, "{bodies:?}");
}

/// An idle pooled connection is closed once its upstream's `keepalive_timeout` passes, as
/// nginx closes it: not held open (a descriptor each) until the next request to the target.
#[test]
fn idle_upstream_connections_close_at_keepalive_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        // Then idle: the gateway's close ends this read.
        let closed = matches!(s.read(&mut buf), Ok(0) | Err(_));
        let _ = tx.send(closed);
    });
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{addr}\"]\nkeepalive_timeout = \"1s\"\n"
            ))
            .route(
                "GET /x",
                "integration = { type = \"http\", uri = \"http://up/x\" }",
            )
            .toml(),
    );
    assert_eq!(get(g.addr(), "/x").text(), "ok");
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT),
        Ok(true),
        "the idle connection stayed open"
    );
}
