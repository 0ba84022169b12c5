//! HTTP/2 to upstreams (`protocol = "h2"`), end to end: the upstream is a second Tollgate
//! speaking HTTP/2 (h2c with prior knowledge, or TLS with ALPN h2) in front of an HTTP/1.1
//! echo server, so what the echo sees is what crossed the HTTP/2 hop.

mod common;

use std::net::SocketAddr;

use common::certs::*;
use common::*;

/// The inner gateway, its API "inner" proxying to `echo`; `cfg` says the rest (its listener's
/// keys: h2c or tls).
fn inner(dir: TempDir, echo: SocketAddr, cfg: Cfg) -> Gw {
    let cfg = cfg.api("inner").route(
        "ANY /{proxy+}",
        format!("integration = {{ type = \"http\", uri = \"http://{echo}/{{proxy}}\" }}"),
    );
    Gw::start_in(dir, &cfg.toml())
}

/// The outer gateway, reaching `inner` through upstream "up" (`upstream` holds its extra keys).
fn outer(dir: TempDir, upstream: &str, scheme: &str) -> Gw {
    let cfg = Cfg::new()
        .api("outer")
        .upstream(format!(
            "[[upstreams]]\nname = \"up\"\nprotocol = \"h2\"\n{upstream}"
        ))
        .route(
            "ANY /{proxy+}",
            format!("integration = {{ type = \"http\", uri = \"{scheme}://up/{{proxy}}\" }}"),
        );
    Gw::start_in(dir, &cfg.toml())
}

/// A counter of `gw`'s, summed over shards.
fn counter(gw: &Gw, name: &str) -> u64 {
    let text = admin(gw.admin(), "GET", "/metrics", Some(TOKEN)).text();
    text.lines()
        .filter(|l| l.starts_with(&format!("tollgate_{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn h2_streams(gw: &Gw) -> u64 {
    counter(gw, "http2_streams_total")
}

fn h2_connections(gw: &Gw) -> u64 {
    counter(gw, "http2_connections_total")
}

#[test]
fn requests_cross_an_h2c_hop_on_one_shared_connection() {
    let echo = Upstream::echo();
    let b = inner(TempDir::new(), echo.addr, Cfg::new().listener("h2c = true"));
    let a = outer(
        TempDir::new(),
        &format!("targets = [\"{}\"]", b.addr()),
        "http",
    );
    // Concurrent clients: their requests share the one HTTP/2 connection.
    let addr = a.addr();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for j in 0..5 {
                    let r = c.request(
                        format!("GET /g/{i}/{j}?x=1 HTTP/1.1\r\nHost: outer.test\r\n\r\n")
                            .as_bytes(),
                    );
                    assert_eq!(r.status, 200);
                    assert_eq!(r.json()["target"], format!("/g/{i}/{j}?x=1"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Bodies both ways: with a length, and chunked.
    let mut c = Client::connect(a.addr());
    let r =
        c.request(b"POST /p HTTP/1.1\r\nHost: outer.test\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "hello world");
    let r = c.request(
        b"PUT /c HTTP/1.1\r\nHost: outer.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "hello world");
    c.send(b"HEAD /h HTTP/1.1\r\nHost: outer.test\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_some());
    // An error from the inner gateway comes back as it was sent.
    let r = c.request(b"GET /../x HTTP/1.1\r\nHost: outer.test\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(echo.count(), 40 + 2 + 1);
    // The inner gateway saw HTTP/2 streams, all on one connection.
    assert!(eventually(
        std::time::Duration::from_secs(5),
        || h2_streams(&b) >= 43
    ));
    assert_eq!(h2_connections(&b), 1);
}

#[test]
fn h2_over_tls_uses_alpn_and_verifies() {
    let echo = Upstream::echo();
    let ca = Ca::new();
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["inner.test"], false);
    write_pair(&dir, "inner", &c, &k);
    let b = inner(
        dir,
        echo.addr,
        Cfg::new().listener("tls = { cert = \"inner.pem\", key = \"inner.key\" }"),
    );
    let dir = TempDir::new();
    std::fs::write(dir.0.join("ca.pem"), ca.cert.pem()).unwrap();
    let a = outer(
        dir,
        &format!(
            "targets = [\"{}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"inner.test\" }}",
            b.addr()
        ),
        "https",
    );
    for i in 0..3 {
        let r = get(a.addr(), &format!("/t/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["target"], format!("/t/{i}"));
        assert_eq!(
            j["headers"]["x-forwarded-proto"], "https",
            "the inner hop was TLS"
        );
    }
    assert!(eventually(
        std::time::Duration::from_secs(5),
        || h2_streams(&b) >= 3
    ));
    assert_eq!(h2_connections(&b), 1);
}

#[test]
fn a_closed_h2_connection_is_replaced_without_failing_requests() {
    let echo = Upstream::echo();
    // The inner gateway closes idle HTTP/2 connections (GOAWAY) after 200 ms.
    let b = inner(
        TempDir::new(),
        echo.addr,
        Cfg::new()
            .listener("h2c = true")
            .limits("idle_timeout = \"200ms\""),
    );
    let a = outer(
        TempDir::new(),
        &format!("targets = [\"{}\"]", b.addr()),
        "http",
    );
    assert_eq!(get(a.addr(), "/one").status, 200);
    // The inner gateway says GOAWAY on the idle connection (counted once it has).
    assert!(eventually(std::time::Duration::from_secs(10), || {
        counter(&b, "http2_goaways_total") >= 1
    }));
    // The next requests open a new connection and succeed: a POST first (never sent on the
    // closed connection, so it goes on a new one whatever its method).
    let r = Client::connect(a.addr()).request(
        b"POST /post HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], "abc");
    for i in 0..3 {
        assert_eq!(get(a.addr(), &format!("/again/{i}")).status, 200);
    }
    assert!(eventually(
        std::time::Duration::from_secs(5),
        || h2_connections(&b) == 2
    ));
}

#[test]
fn protocol_h2_is_checked_at_load() {
    let e = tollgate::Config::parse(
        "[[listeners]]\naddr = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:9\"]\nprotocol = \"h3\"\n",
        std::path::Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(
            "upstreams[\"u\"].protocol = \"h3\" is not valid: expected \"http/1.1\" or \"h2\""
        ),
        "{e}"
    );
}

#[test]
fn health_checks_speak_h2_to_h2_upstreams() {
    let echo = Upstream::echo();
    let b = inner(TempDir::new(), echo.addr, Cfg::new().listener("h2c = true"));
    let a = outer(
        TempDir::new(),
        &format!(
            "targets = [\"{}\"]\nhealth = {{ path = \"/healthz\", interval = \"50ms\", unhealthy_after = 1 }}",
            b.addr()
        ),
        "http",
    );
    // Probes reach the echo server, and reach the inner gateway as HTTP/2 streams (nothing
    // else has been sent yet).
    assert!(eventually(std::time::Duration::from_secs(10), || {
        echo.requests()
            .iter()
            .filter(|s| s.target == "/healthz")
            .count()
            >= 3
    }));
    assert!(eventually(
        std::time::Duration::from_secs(5),
        || h2_streams(&b) >= 3
    ));
    assert_eq!(get(a.addr(), "/after-probes").status, 200);
}

/// A client that goes away while the target's HTTP/2 connection is being opened (its stream
/// reset mid-TLS-handshake) does not leave the target waiting for that opening for ever: the
/// next request opens a connection of its own.
#[test]
fn a_client_gone_during_the_opening_does_not_block_the_target() {
    use std::io::Write;
    let echo = Upstream::echo();
    let ca = Ca::new();
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["inner.test"], false);
    write_pair(&dir, "inner", &c, &k);
    let b = inner(
        dir,
        echo.addr,
        Cfg::new().listener("tls = { cert = \"inner.pem\", key = \"inner.key\" }"),
    );
    // A relay to the inner gateway that holds its first connection silent (the TLS handshake
    // never completes) and passes the later ones through.
    let (relay_addr, first_rx) = silent_first_relay(b.addr());
    let dir = TempDir::new();
    std::fs::write(dir.0.join("ca.pem"), ca.cert.pem()).unwrap();
    let a = Gw::start_in(
        dir,
        &Cfg::new()
            .listener("h2c = true")
            .limits("integration_timeout = \"3s\"")
            .api("outer")
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\nprotocol = \"h2\"\nconnect_timeout = \"20s\"\ntargets = [\"{relay_addr}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"inner.test\" }}"
            ))
            .route(
                "ANY /{proxy+}",
                "integration = { type = \"http\", uri = \"https://up/{proxy}\" }",
            )
            .toml(),
    );
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let lit = |n: &[u8], v: &[u8]| {
        let mut o = vec![0u8, n.len() as u8];
        o.extend_from_slice(n);
        o.push(v.len() as u8);
        o.extend_from_slice(v);
        o
    };
    let mut c = std::net::TcpStream::connect(a.addr()).unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, b""));
    let mut block = b"\x82\x86".to_vec();
    block.extend(lit(b":authority", b"outer.test"));
    block.extend(lit(b":path", b"/first"));
    out.extend(frame(1, 0x5, 1, &block));
    c.write_all(&out).unwrap();
    // The gateway is opening the target's connection for this request: the client cancels it.
    first_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the gateway connects to its target");
    c.write_all(&frame(3, 0, 1, &8u32.to_be_bytes())).unwrap();
    // Counted once the gateway has dropped the stream.
    assert!(eventually(std::time::Duration::from_secs(10), || {
        counter(&a, "http2_streams_reset_total") >= 1
    }));
    let r = get(a.addr(), "/second");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/second");
}

/// A target's HTTP/2 connection that never answers (its peer accepted it and went silent:
/// the handshake does not wait for the server's preface) costs the request that waited on it
/// a 504, not every later one: the next request opens another connection.
#[test]
fn a_silent_h2_connection_is_replaced_after_a_timeout() {
    let echo = Upstream::echo();
    let b = inner(TempDir::new(), echo.addr, Cfg::new().listener("h2c = true"));
    let (relay_addr, _first) = silent_first_relay(b.addr());
    let a = Gw::start_in(
        TempDir::new(),
        &Cfg::new()
            .limits("integration_timeout = \"1s\"")
            .api("outer")
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\nprotocol = \"h2\"\ntargets = [\"{relay_addr}\"]"
            ))
            .route(
                "ANY /{proxy+}",
                "integration = { type = \"http\", uri = \"http://up/{proxy}\" }",
            )
            .toml(),
    );
    assert_eq!(get(a.addr(), "/first").status, 504);
    let r = get(a.addr(), "/second");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/second");
}

/// A relay to `inner` that holds its first connection silent (accepted, never answered:
/// a handshake on it never completes) and passes the later ones through: its address, and
/// a receiver told when the first connection came.
fn silent_first_relay(inner: SocketAddr) -> (SocketAddr, std::sync::mpsc::Receiver<()>) {
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = relay.local_addr().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (i, c) in relay.incoming().enumerate() {
            let Ok(c) = c else { break };
            if i == 0 {
                held.push(c);
                let _ = first_tx.send(());
                continue;
            }
            let Ok(up) = std::net::TcpStream::connect(inner) else {
                break;
            };
            let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            let (mut c, mut up) = (c, up);
            std::thread::spawn(move || std::io::copy(&mut c2, &mut up2));
            std::thread::spawn(move || std::io::copy(&mut up, &mut c));
        }
    });
    (addr, first_rx)
}

/// A minimal HTTP/2 upstream: records each request (method, path and query), answers 200,
/// but resets `/pay` (INTERNAL_ERROR) once it has read its body, and refuses the first
/// request for each `/refuse-once/...` path (REFUSED_STREAM, before reading its body; the
/// answered one is recorded with its body's length).
fn h2_origin() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let refused = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((tcp, _)) = listener.accept().await {
                let log = log.clone();
                let refused = refused.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        let log = log.clone();
                        let refused = refused.clone();
                        tokio::spawn(async move {
                            let (parts, mut body) = req.into_parts();
                            let path = parts.uri.path().to_string();
                            if path == "/early" {
                                // Refuses the upload at once: 413, the body never read.
                                let resp = http::Response::builder().status(413).body(()).unwrap();
                                let _ = respond.send_response(resp, true);
                                log.lock()
                                    .unwrap()
                                    .push(format!("early {} {path}", parts.method));
                                drop(body);
                                return;
                            }
                            if path == "/big" {
                                // 64 MiB, sent as the gateway's windows allow.
                                static BIG: std::sync::OnceLock<bytes::Bytes> =
                                    std::sync::OnceLock::new();
                                let big = BIG.get_or_init(|| vec![b'b'; 64 << 20].into()).clone();
                                let resp = http::Response::builder().status(200).body(()).unwrap();
                                if let Ok(mut s) = respond.send_response(resp, false) {
                                    let _ = s.send_data(big, true);
                                    // Held until the gateway lets the stream go.
                                    let _ = std::future::poll_fn(|cx| s.poll_reset(cx)).await;
                                }
                                return;
                            }
                            if path == "/nolen" || path == "/trailers" {
                                // No content-length; a HEAD's answer ends with its head; the
                                // other path ends with trailers it announced.
                                let head = parts.method == http::Method::HEAD;
                                let resp = http::Response::builder()
                                    .status(200)
                                    .header("trailer", "grpc-status")
                                    .body(())
                                    .unwrap();
                                if let Ok(mut s) = respond.send_response(resp, head) {
                                    if !head {
                                        let _ = s.send_data(
                                            bytes::Bytes::from_static(b"0123456789"),
                                            false,
                                        );
                                        let mut t = http::HeaderMap::new();
                                        t.insert(
                                            "grpc-status",
                                            http::HeaderValue::from_static("0"),
                                        );
                                        let _ = s.send_trailers(t);
                                    }
                                }
                                return;
                            }
                            if path == "/noread" {
                                // Takes the stream and never reads its body (no window given
                                // back) nor answers, for longer than any test waits.
                                log.lock().unwrap().push(format!("noread {}", parts.method));
                                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                                drop((body, respond));
                                return;
                            }
                            let once = path.starts_with("/refuse-once/");
                            if once && refused.lock().unwrap().insert(path.clone()) {
                                log.lock()
                                    .unwrap()
                                    .push(format!("refused {} {path}", parts.method));
                                respond.send_reset(h2::Reason::REFUSED_STREAM);
                                return;
                            }
                            let mut len = 0;
                            while let Some(Ok(chunk)) = body.data().await {
                                len += chunk.len();
                                let _ = body.flow_control().release_capacity(chunk.len());
                            }
                            let pq = parts.uri.path_and_query().map(|p| p.to_string());
                            let size = if once {
                                format!(" {len}")
                            } else {
                                String::new()
                            };
                            log.lock().unwrap().push(format!(
                                "{} {}{size}",
                                parts.method,
                                pq.unwrap_or_default()
                            ));
                            if parts.uri.path() == "/pay" {
                                respond.send_reset(h2::Reason::INTERNAL_ERROR);
                                return;
                            }
                            let resp = http::Response::builder().status(200).body(()).unwrap();
                            if let Ok(mut s) = respond.send_response(resp, false) {
                                let _ = s.send_data(bytes::Bytes::from_static(b"ok"), true);
                            }
                        });
                    }
                });
            }
        });
    });
    (addr, seen)
}

/// A request the HTTP/2 upstream took and reset is not sent again unless it is idempotent (a
/// POST was replayed on a new connection: the charge ran twice); a query an HTTP/1.1
/// request line carries but the URI type refuses is sent percent-encoded (it was a 502), and
/// a request HTTP/2 has no form for is refused without counting against the target.
#[test]
fn an_h2_upstreams_reset_is_not_replayed_for_a_post() {
    let (origin, seen) = h2_origin();
    let a = outer(
        TempDir::new(),
        &format!("targets = [\"{origin}\"]\nmax_fails = 1\nfail_timeout = \"30s\""),
        "http",
    );
    assert_eq!(get(a.addr(), "/warm").status, 200);
    let r = Client::connect(a.addr()).request(
        b"POST /pay HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nConnection: close\r\n\r\namount=1000",
    );
    assert_eq!(r.status, 502, "{}", r.text());
    let pays = || {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| s.starts_with("POST /pay"))
            .count()
    };
    assert_eq!(pays(), 1, "{:?}", seen.lock().unwrap());
    // The target was counted failed once (max_fails = 1): it comes back after fail_timeout;
    // a fresh gateway for the rest.
    let a = outer(
        TempDir::new(),
        &format!("targets = [\"{origin}\"]\nmax_fails = 1\nfail_timeout = \"30s\""),
        "http",
    );
    let r = get(a.addr(), "/search?q=\"x\"<y>");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s == "GET /search?q=%22x%22%3Cy%3E"),
        "{:?}",
        seen.lock().unwrap()
    );
    for _ in 0..3 {
        let r = Client::connect(a.addr()).request(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
        assert_eq!(r.status, 502, "{}", r.text());
    }
    // Not ejected: still served.
    assert_eq!(get(a.addr(), "/warm").status, 200);
    // A header value that is not UTF-8 (an obs-text byte HTTP/1.1 allows) leaves the target
    // alone (the request went to "/").
    let r = Client::connect(a.addr()).request(
        b"GET /latin?x=1 HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        seen.lock().unwrap().iter().any(|s| s == "GET /latin?x=1"),
        "{:?}",
        seen.lock().unwrap()
    );
}

/// A gateway proxying every path to the HTTP/2 upstream at `origin` (`limits` its keys).
fn to_origin(origin: SocketAddr, limits: &str) -> Gw {
    Gw::start(
        &Cfg::new()
            .limits(limits)
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\nprotocol = \"h2\"\ntargets = [\"{origin}\"]\n"
            ))
            .route(
                "ANY /{proxy+}",
                "integration = { type = \"http\", uri = \"http://up/{proxy}\" }",
            )
            .toml(),
    )
}

/// A stream the HTTP/2 upstream refuses (REFUSED_STREAM: not processed, RFC 9113 8.7) while
/// a body larger than its flow-control window waits to be sent goes again on a new
/// connection, a POST too, whether the refused stream was on a new connection or a pooled
/// one (the refusal surfaced as a broken pipe, and the POST was answered 502).
#[test]
fn a_refused_stream_with_a_large_body_is_sent_again() {
    let (origin, seen) = h2_origin();
    let g = to_origin(origin, "request_buffering = \"256KiB\"");
    let post = |path: &str| {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            100 << 10
        )
        .into_bytes();
        req.extend_from_slice(&[b'x'; 100 << 10]);
        Client::connect(g.addr()).request(&req)
    };
    // The first request: on a new connection.
    let r = post("/refuse-once/a");
    assert_eq!(r.status, 200, "{}", r.text());
    // An answer the upstream gave before it took the body (and then ended the stream) is
    // relayed: it was a 502.
    let r = post("/early");
    assert_eq!(r.status, 413, "{}", r.text());
    // Then on the pooled one.
    assert_eq!(get(g.addr(), "/warm").status, 200);
    let r = post("/refuse-once/b");
    assert_eq!(r.status, 200, "{}", r.text());
    let log = seen.lock().unwrap().clone();
    for p in ["a", "b"] {
        let want = [
            format!("refused POST /refuse-once/{p}"),
            format!("POST /refuse-once/{p} {}", 100 << 10),
        ];
        for w in &want {
            assert_eq!(log.iter().filter(|s| *s == w).count(), 1, "{w}: {log:?}");
        }
    }
}

/// A small POST the HTTP/2 upstream refuses (REFUSED_STREAM) on a new connection (an upstream
/// refusing streams past its limit before its SETTINGS are known) is sent again: the refusal
/// came while the answer was read, and only a pooled connection's counted as unprocessed.
#[test]
fn a_small_post_refused_on_a_new_connection_is_sent_again() {
    let (origin, seen) = h2_origin();
    let g = to_origin(origin, "");
    let r = Client::connect(g.addr()).request(
        b"POST /refuse-once/small HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nConnection: close\r\n\r\namount=1000",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let log = seen.lock().unwrap().clone();
    assert_eq!(
        log.iter()
            .filter(|s| *s == "POST /refuse-once/small 11")
            .count(),
        1,
        "{log:?}"
    );
}

/// A buffered body the HTTP/2 upstream takes no window for is under the route's timeout like
/// the rest of the request: 504 (it hung, holding the client and the target's in-flight
/// count until the upstream connection ended), and the shared connection serves on.
#[test]
fn a_buffered_body_the_upstream_never_takes_times_out() {
    let (origin, seen) = h2_origin();
    let g = Gw::start(
        &Cfg::new()
            .limits("request_buffering = \"256KiB\"")
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\nprotocol = \"h2\"\ntargets = [\"{origin}\"]\n"
            ))
            .route(
                "ANY /{proxy+}",
                "integration = { type = \"http\", uri = \"http://up/{proxy}\", timeout = \"1s\" }",
            )
            .toml(),
    );
    assert_eq!(get(g.addr(), "/warm").status, 200);
    let mut req = format!(
        "POST /noread HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        100 << 10
    )
    .into_bytes();
    req.extend_from_slice(&[b'x'; 100 << 10]);
    let r = Client::connect(g.addr()).request(&req);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(seen.lock().unwrap().iter().any(|s| s == "noread POST"));
    assert_eq!(get(g.addr(), "/after").status, 200);
}

/// Clients that stop reading hold their own streams' windows on the shared HTTP/2 upstream
/// connection, never the connection's whole: five of them (an HTTP/2 client giving no window)
/// stalled every other request to the target on the shard (the connection's window was four
/// streams').
#[test]
fn stalled_readers_do_not_stall_the_shared_connection() {
    let (origin, _seen) = h2_origin();
    let g = Gw::start(
        &Cfg::new()
            .listener("h2c = true")
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\nprotocol = \"h2\"\ntargets = [\"{origin}\"]\n"
            ))
            .route(
                "ANY /{proxy+}",
                "integration = { type = \"http\", uri = \"http://up/{proxy}\", timeout = \"5s\" }",
            )
            .toml(),
    );
    let addr = g.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _stalled = rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut held = Vec::new();
        for _ in 0..6 {
            let req = http::Request::get(format!("http://{addr}/big"))
                .body(())
                .unwrap();
            let (resp, _) = client
                .clone()
                .ready()
                .await
                .unwrap()
                .send_request(req, true)
                .unwrap();
            // The head came: the upstream is sending its body, which no one reads.
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 200);
            held.push(resp);
        }
        (client, held)
    });
    let r = Client::connect(g.addr())
        .request(b"GET /small HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

/// What an HTTP/2 upstream's answer says reaches an HTTP/1.1 client as it was: a HEAD's
/// answer gets no made-up `content-length: 0` (RFC 9110 9.3.2: it would say the GET's body is
/// empty), and trailers the upstream sent follow the last chunk (they were dropped, while
/// their `Trailer` announcement was relayed).
#[test]
fn h2_answers_keep_their_heads_length_and_trailers() {
    use std::io::{Read, Write};
    let (origin, _seen) = h2_origin();
    let g = to_origin(origin, "");
    let raw = |req: &str| {
        let mut s = std::net::TcpStream::connect(g.addr()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let head = raw("HEAD /nolen HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    let got = raw("GET /trailers HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(
        got.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{got}"
    );
    assert!(
        got.ends_with("a\r\n0123456789\r\n0\r\ngrpc-status: 0\r\n\r\n"),
        "{got:?}"
    );
}
