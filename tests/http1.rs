//! HTTP/1.1 on the client side, end to end: keep-alive, pipelining, framing both ways,
//! Expect: 100-continue, HEAD, HTTP/1.0, and every form of bad input the gateway must refuse.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

fn proxied(up: &Upstream, limits: &str) -> String {
    config(
        limits,
        &format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
            up.addr
        ),
        r#"
  [[apis.routes]]
  route = "ANY /{proxy+}"
  integration = { type = "http", uri = "http://up/{proxy}" }

  [[apis.routes]]
  route = "GET /mock"
  integration = { type = "mock", status = 200, body = "mocked" }
"#,
    )
}

#[test]
fn keep_alive_reuses_the_client_and_upstream_connections() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, ""));
    let mut c = Client::connect(gw.addr());
    for i in 0..5 {
        let r = c.request(format!("GET /a/{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["target"], format!("/a/{i}"));
        assert_eq!(r.header("connection"), None);
    }
    assert_eq!(
        up.conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "upstream connection pooled"
    );
    let r = c.request(b"GET /mock HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, ""));
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /mock HTTP/1.1\r\nHost: h\r\n\r\nPOST /three HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /four HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().json()["target"], "/one");
    assert_eq!(c.read_response(false).unwrap().text(), "mocked");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.json()["target"], "/three");
    assert_eq!(r.json()["body"], "abc");
    assert_eq!(c.read_response(false).unwrap().json()["target"], "/four");
}

#[test]
fn chunked_request_bodies_stream_to_the_upstream() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, ""));
    let mut c = Client::connect(gw.addr());
    c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    std::thread::sleep(Duration::from_millis(20)); // the rest arrives later, as from a real client
    c.send(b"6;ext=1\r\n world\r\n0\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "hello world");
    assert_eq!(r.json()["headers"]["transfer-encoding"], "chunked");
    // A large Content-Length body that arrives in pieces.
    let body = "x".repeat(300_000);
    c.send(
        format!(
            "PUT /big HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for part in body.as_bytes().chunks(70_000) {
        c.send(part);
    }
    let r = c.read_response(false).unwrap();
    assert_eq!(r.json()["body"].as_str().unwrap().len(), 300_000);
}

#[test]
fn chunked_and_close_delimited_responses_reach_the_client() {
    let up = Upstream::start(|s| {
        match s.target.as_str() {
        "/chunked" => Action::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n".to_vec()),
        _ => Action::RawClose(b"HTTP/1.1 200 OK\r\n\r\nuntil-close".to_vec()),
    }
    });
    let gw = Gw::start(&proxied(&up, ""));
    let mut c = Client::connect(gw.addr());
    let r = c.request(b"GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "Wikipedia");
    // Same connection still usable; a close-delimited answer goes on chunked (a cut one
    // would lack its last chunk), and the connection stays.
    let r = c.request(b"GET /eof HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.text(), "until-close");
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("connection"), None);
    assert_eq!(
        c.request(b"GET /chunked HTTP/1.1\r\nHost: h\r\n\r\n")
            .text(),
        "Wikipedia"
    );
    // To an HTTP/1.0 client it ends by close, as it came.
    let mut c10 = Client::connect(gw.addr());
    c10.send(b"GET /eof HTTP/1.0\r\n\r\n");
    let raw = String::from_utf8(c10.read_to_end()).unwrap();
    assert!(raw.ends_with("\r\n\r\nuntil-close"), "{raw}");
    // HTTP/1.0 clients get the chunked answer decoded, ended by close.
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /chunked HTTP/1.0\r\n\r\n");
    let raw = String::from_utf8(c.read_to_end()).unwrap();
    assert!(raw.starts_with("HTTP/1.0 200"), "{raw}");
    assert!(
        !raw.to_ascii_lowercase().contains("transfer-encoding"),
        "{raw}"
    );
    assert!(raw.ends_with("\r\n\r\nWikipedia"), "{raw}");
}

#[test]
fn expect_100_continue_gets_an_interim_answer() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, ""));
    let mut c = Client::connect(gw.addr());
    c.send(b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    let mut buf = [0u8; 25];
    std::io::Read::read_exact(&mut c.stream, &mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"data");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.json()["body"], "data");
    assert!(r.json()["headers"].get("expect").is_none());
    // Over the limit: refused at once, before the body is sent.
    let gw2 = Gw::start(&proxied(&up, "max_body = \"1KiB\""));
    let mut c = Client::connect(gw2.addr());
    let r = c.request(
        b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    );
    assert_eq!(r.status, 413);
}

#[test]
fn head_and_http10_clients() {
    let up = Upstream::start(|_| respond(200, "body-bytes"));
    let gw = Gw::start(&proxied(&up, ""));
    let mut c = Client::connect(gw.addr());
    c.send(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("10"));
    // The next answer on the connection starts cleanly: no body was sent for HEAD.
    c.send(b"HEAD /mock HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!(r.header("content-length"), Some("6"));
    // Had a body followed the HEAD answers, this would read it as a status line.
    assert_eq!(
        c.request(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n").text(),
        "mocked"
    );
    // HTTP/1.0: closes after the answer unless keep-alive is asked for.
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /x HTTP/1.0\r\n\r\n");
    let raw = String::from_utf8(c.read_to_end()).unwrap();
    assert!(raw.starts_with("HTTP/1.0 200"));
    assert!(raw.ends_with("body-bytes"));
    let mut c = Client::connect(gw.addr());
    let r = c.request(b"GET /mock HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    let r = c.request(b"GET /mock HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.text(), "mocked");
}

/// Each request must get 400 and a closed connection, and never reach the upstream.
#[test]
fn smuggling_and_malformed_requests_get_400_and_close() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, ""));
    let bad: &[&[u8]] = &[
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-Space : a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h\rX-Bare: cr\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /x HTTP/1.1\r\n\r\n",
        b"GET x HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.9.9\r\nHost: h\r\n\r\n",
        // Host values that are not one (RFC 9112 3.2): a port that is not digits, an unclosed
        // IPv6 literal, two ports; an absolute-form authority likewise.
        b"GET /x HTTP/1.1\r\nHost: h:abc\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: h:80:80\r\n\r\n",
        b"GET http://h:x/x HTTP/1.1\r\nHost: h\r\n\r\n",
        // A fragment is no part of a request target (RFC 9112 3.2), in the path or the query.
        b"GET /admin#frag HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /x?a=1#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    ];
    for raw in bad {
        let mut c = Client::connect(gw.addr());
        c.send(raw);
        let r = c
            .read_response(false)
            .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(raw)));
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert!(r.json()["message"].is_string());
        assert!(
            c.is_closed(),
            "connection left open after {:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(up.count(), 0, "a malformed request reached the upstream");
    // A coding the gateway does not implement before a final `chunked`: 501 (RFC 9112 6.1,
    // as nginx answers), and the connection closes (the body cannot be read past).
    let mut c = Client::connect(gw.addr());
    c.send(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 501);
    assert_eq!(r.json()["message"], "Not Implemented");
    assert!(c.is_closed());
    assert_eq!(up.count(), 0);
}

#[test]
fn oversized_heads_get_431_and_oversized_targets_414() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, "max_header_bytes = \"2KiB\""));
    let mut c = Client::connect(gw.addr());
    let r = c.request(
        format!(
            "GET /x HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
            "a".repeat(4000)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 431);
    assert!(c.is_closed());
    // A request line that alone takes the limit: the target is what is too long (414), in a
    // head that arrived whole or is still arriving.
    for tail in ["\r\nHost: h\r\n\r\n", ""] {
        let mut c = Client::connect(gw.addr());
        let r = c.request(format!("GET /{} HTTP/1.1{tail}", "a".repeat(3000)).as_bytes());
        assert_eq!(
            (r.status, r.json()["message"].as_str()),
            (414, Some("URI Too Long"))
        );
        assert!(c.is_closed());
    }
    // An HTTP/1 request line naming a later major version: 505; a garbled one: 400.
    for (line, status) in [
        ("HTTP/2.0", 505),
        ("HTTP/9.9", 505),
        ("HTTP/3", 505),
        ("HTTP/1.x", 400),
    ] {
        let mut c = Client::connect(gw.addr());
        let r = c.request(format!("GET /x {line}\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(r.status, status, "{line}");
    }
    assert_eq!(up.count(), 0);
    // A later minor version of HTTP/1 is served as HTTP/1.1 (RFC 9110 6.2), kept alive.
    let mut c = Client::connect(gw.addr());
    for _ in 0..2 {
        let r = c.request(b"GET /x HTTP/1.2\r\nHost: h\r\n\r\n");
        assert_eq!(r.status, 200);
    }
    assert_eq!(up.count(), 2);
    // Just under the limit is fine.
    let r = get(gw.addr(), &format!("/{}", "a".repeat(1500)));
    assert_eq!(r.status, 200);
}

#[test]
fn bodies_over_the_limit_get_413_in_both_framings() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, "max_body = \"16KiB\""));
    let mut c = Client::connect(gw.addr());
    let r = c.request(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 20000\r\n\r\n");
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["message"], "Request Entity Too Large");
    // Chunked: counted while streaming.
    let mut c = Client::connect(gw.addr());
    c.send(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("2000\r\n{}\r\n", "y".repeat(0x2000));
    for _ in 0..3 {
        c.send(chunk.as_bytes());
    }
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 413);
    assert!(c.is_closed());
    // Exactly at the limit passes.
    let mut c = Client::connect(gw.addr());
    let body = "z".repeat(16 * 1024);
    let r = c.request(
        format!(
            "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn slow_clients_are_cut_by_the_header_timeout() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(
        &up,
        "header_timeout = \"300ms\"\nidle_timeout = \"400ms\"",
    ));
    // Slow-loris: a byte at a time, never finishing the head.
    let mut c = Client::connect(gw.addr());
    let start = Instant::now();
    c.send(b"GET /x HTTP/1.1\r\n");
    let mut cut = false;
    for _ in 0..40 {
        if c.stream.write_all(b"X-A: b\r\n").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if start.elapsed() > Duration::from_millis(600) {
            break;
        }
    }
    let r = c.read_response(false);
    assert!(cut || r.as_ref().is_some_and(|r| r.status == 408), "{r:?}");
    assert!(c.is_closed());
    assert!(start.elapsed() < Duration::from_secs(5));
    // A head that stops part way gets 408 Request Timeout, then the connection closes.
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /x HTTP/1.1\r\nHost: h\r\n");
    let r = c.read_response(false).expect("an answer before the close");
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["message"], "Request Timeout");
    assert!(c.is_closed());
    // A connection that sends nothing is closed quietly.
    let mut c = Client::connect(gw.addr());
    assert!(c.read_response(false).is_none());
    // An idle keep-alive connection is closed after idle_timeout.
    let mut c = Client::connect(gw.addr());
    assert_eq!(
        c.request(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200
    );
    let idle_start = Instant::now();
    assert!(c.is_closed());
    assert!(idle_start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn max_connections_refuses_extra_clients() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, "max_connections = 2"));
    let mut a = Client::connect(gw.addr());
    let mut b = Client::connect(gw.addr());
    assert_eq!(
        a.request(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200
    );
    assert_eq!(
        b.request(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200
    );
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(
        c.read_response(false).is_none(),
        "third connection was served"
    );
    drop(a);
    // Once a slot frees up, new clients are served again.
    assert!(eventually(Duration::from_secs(5), || {
        let mut d = Client::connect(gw.addr());
        d.send(b"GET /mock HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        d.read_response(false).is_some_and(|r| r.status == 200)
    }));
}

#[test]
fn a_malformed_head_is_answered_400_and_counted() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, ""));
    let mut c = Client::connect(gw.addr());
    let r = c.request(b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(c.is_closed());
    assert!(metric_reaches(
        &gw,
        "tollgate_responses_total",
        "class=\"4xx\"",
        1
    ));
    assert!(metric_reaches(&gw, "tollgate_bad_requests_total", "", 1));
}

/// A body that stops coming gets 408 after `body_timeout`; a small one is read before the
/// upstream is asked, so a stalled upload never reaches (or holds) an upstream connection.
#[test]
fn stalled_uploads_get_408_and_small_ones_never_reach_the_upstream() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(
        &up,
        "body_timeout = \"300ms\"\nrequest_buffering = \"1KiB\"",
    ));
    // Buffered: 100 bytes announced, 10 sent.
    let mut c = Client::connect(gw.addr());
    let start = Instant::now();
    c.send(b"POST /small HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789");
    let r = c.read_response(false).expect("an answer");
    assert_eq!(r.status, 408);
    assert_eq!(r.json()["message"], "Request Timeout");
    assert!(c.is_closed());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(
        up.count(),
        0,
        "the upstream was asked before the body was in"
    );
    // Streamed (over request_buffering): the upstream sees the request start, the client gets
    // 408 when the body stops, and the upstream connection is closed rather than reused.
    let mut c = Client::connect(gw.addr());
    c.send(b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\n\r\n");
    c.send(&[b'x'; 2000]);
    let r = c.read_response(false).expect("an answer");
    assert_eq!(r.status, 408);
    assert!(c.is_closed());
    // The gateway keeps serving.
    assert_eq!(get(gw.addr(), "/after").status, 200);
}

/// With `body_min_rate`, a body that trickles in is cut even though each read comes in time.
#[test]
fn uploads_slower_than_body_min_rate_get_408() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(
        &up,
        "body_timeout = \"1s\"\nbody_min_rate = 1000\nrequest_buffering = 0",
    ));
    let mut c = Client::connect(gw.addr());
    let start = Instant::now();
    c.send(b"POST /trickle HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n");
    // 10 bytes every 50 ms (200 B/s): each read well within body_timeout.
    let mut cut = false;
    while start.elapsed() < Duration::from_secs(8) {
        if c.stream.write_all(b"0123456789").is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if c.stream.peek(&mut [0u8; 1]).unwrap_or(0) > 0 {
            break;
        }
    }
    let r = c.read_response(false);
    assert!(
        r.as_ref().is_some_and(|r| r.status == 408) || cut,
        "{r:?} after {:?}",
        start.elapsed()
    );
    assert!(start.elapsed() < Duration::from_secs(8), "never cut");
    // A body at a decent rate goes through.
    let mut c = Client::connect(gw.addr());
    let r = c.request(b"POST /fine HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 200);
}

/// A keep-alive connection idle for longer than the first second (when it gives up its read
/// buffer and waits for readability instead) still serves its next request.
#[test]
fn connections_idle_past_the_first_second_still_serve() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, ""));
    let mut c = Client::connect(gw.addr());
    assert_eq!(
        c.request(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n").status,
        200
    );
    // The idleness is what is tested: wait past the 1 s the buffer is kept.
    std::thread::sleep(Duration::from_millis(1500));
    let r = c.request(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 200);
    assert_eq!(
        c.request(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n").text(),
        "mocked"
    );
}

/// A connection idle past the first second (waiting with no buffer, on the shard's idle clock)
/// is still closed at `idle_timeout`.
#[test]
fn connections_idle_past_the_first_second_are_closed_at_idle_timeout() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, "idle_timeout = \"1500ms\""));
    let mut quiet = Client::connect(gw.addr());
    assert_eq!(
        quiet
            .request(b"GET /mock HTTP/1.1\r\nHost: h\r\n\r\n")
            .status,
        200
    );
    let start = Instant::now();
    assert!(quiet.is_closed());
    let idle = start.elapsed();
    assert!(idle >= Duration::from_millis(1400), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(5), "closed after {idle:?}");
}

/// Answers the gateway writes itself carry `Date`; an `Expect` it cannot meet gets 417.
#[test]
fn gateway_answers_carry_date_and_unknown_expectations_get_417() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxied(&up, ""));
    let r = get(gw.addr(), "/mock");
    let date = r.header("date").expect("a Date header");
    assert!(httpdate_like(date), "{date}");
    // An error answer (no Host: 400) too.
    let r = Client::connect(gw.addr()).request(b"GET /x HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(r.header("date").is_some());
    let mut c = Client::connect(gw.addr());
    let r =
        c.request(b"PUT /x HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(r.status, 417);
    assert_eq!(r.json()["message"], "Expectation Failed");
    assert!(c.is_closed());
    assert_eq!(up.count(), 0);
}

/// "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate).
fn httpdate_like(v: &str) -> bool {
    v.len() == 29 && v.ends_with(" GMT") && v.as_bytes()[3] == b','
}

/// Header names with `_` are dropped by default (nginx's way), forwarded with `allow`, and
/// refused with `reject`.
#[test]
fn underscores_in_header_names_are_dropped_allowed_or_refused() {
    let up = Upstream::echo();
    let raw = b"GET /u HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nX-Fine: yes\r\n\r\n";
    let gw = Gw::start(&proxied(&up, ""));
    assert_eq!(Client::connect(gw.addr()).request(raw).status, 200);
    let seen = up.requests().pop().unwrap();
    assert!(
        seen.header("x_forwarded_for").is_none(),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("x-fine"), Some("yes"));
    let gw = Gw::start(&proxied(&up, "underscores_in_headers = \"allow\""));
    assert_eq!(Client::connect(gw.addr()).request(raw).status, 200);
    assert_eq!(
        up.requests().pop().unwrap().header("x_forwarded_for"),
        Some("6.6.6.6")
    );
    let gw = Gw::start(&proxied(&up, "underscores_in_headers = \"reject\""));
    let before = up.count();
    let r = Client::connect(gw.addr()).request(raw);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["message"], "Invalid header name");
    assert_eq!(up.count(), before);
}

fn raw_proxied(origin: &RawOrigin) -> String {
    config(
        "",
        "",
        &format!(
            r#"
  [[apis.routes]]
  route = "ANY /{{proxy+}}"
  integration = {{ type = "http", uri = "http://{}/{{proxy}}" }}
"#,
            origin.addr
        ),
    )
}

/// Chunked request bodies are re-framed: the origin sees canonical chunk lines (hex size, no
/// extensions) and no trailer fields; chunk lines and trailers that are not well formed get
/// 400 and reach no origin.
#[test]
fn chunked_bodies_are_reframed_and_malformed_framing_is_refused() {
    let origin = RawOrigin::start();
    let gw = Gw::start(&raw_proxied(&origin));
    let post = |body: &[u8]| {
        let mut req = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(body);
        Client::connect(gw.addr()).request(&req)
    };
    // Extensions dropped; trailers (framing ones included) not forwarded.
    let r = post(b"5 ; a = \"x y\"\r\nhello\r\n6;b\r\n world\r\n0;c=d\r\nX-Sum: 1\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(
        origin.bodies().last().unwrap(),
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
    let forwarded = origin.bodies().len();
    for bad in [
        &b"5 \r\nhello\r\n0\r\n\r\n"[..],
        b"5\t\r\nhello\r\n0\r\n\r\n",
        b"5 zz\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-A: 1\r\n folded\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-A: a\x00b\r\n\r\n",
    ] {
        let r = post(bad);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        assert_eq!(r.json()["message"], "Malformed chunked body");
    }
    assert_eq!(
        origin.bodies().len(),
        forwarded,
        "a malformed body reached the origin"
    );
}

/// A large chunked body (streamed, not buffered) is re-framed as it streams: the origin gets
/// the same data in canonical chunks.
#[test]
fn streamed_chunked_bodies_are_reframed() {
    let origin = RawOrigin::start();
    let gw = Gw::start(&raw_proxied(&origin));
    let mut c = Client::connect(gw.addr());
    c.send(b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut sent = Vec::new();
    for i in 0..40u8 {
        let piece = vec![b'a' + i % 26; 8000];
        c.send(format!("{:X};n={i}\r\n", piece.len()).as_bytes());
        c.send(&piece);
        c.send(b"\r\n");
        sent.extend_from_slice(&piece);
    }
    c.send(b"0\r\nX-T: 1\r\n\r\n");
    let r = c.read_response(false).expect("an answer");
    assert_eq!(r.status, 200);
    let raw = origin.bodies().pop().unwrap();
    // Decode what the origin got, requiring canonical lines.
    let (mut data, mut rest) = (Vec::new(), &raw[..]);
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let line = std::str::from_utf8(&rest[..eol]).unwrap();
        assert!(
            line.bytes().all(|b| b.is_ascii_hexdigit()),
            "chunk line {line:?}"
        );
        let n = usize::from_str_radix(line, 16).unwrap();
        rest = &rest[eol + 2..];
        if n == 0 {
            assert_eq!(rest, b"\r\n", "trailers forwarded");
            break;
        }
        data.extend_from_slice(&rest[..n]);
        assert_eq!(&rest[n..n + 2], b"\r\n");
        rest = &rest[n + 2..];
    }
    assert_eq!(data, sent);
}

/// Interim answers from the origin: 103 Early Hints reaches an HTTP/1.1 client before the
/// final answer (its hints, without connection-specific fields); an HTTP/1.0 client gets only
/// the final answer; a cached answer is stored without the interim one.
#[test]
fn early_hints_are_relayed_to_http11_clients_and_never_stored() {
    let up = Upstream::start(|_| {
        Action::Raw(
            b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\nConnection: x\r\n\r\nHTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let gw = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .stage_extra("cache = { ttl = \"60s\", capacity = \"1MiB\", mode = \"http\" }")
            .routes(
                r#"
  [[apis.routes]]
  route = "GET /{proxy+}"
  integration = { type = "http", uri = "http://up/{proxy}" }
"#,
            )
            .toml(),
    );
    let raw = |req: &[u8]| {
        let mut c = Client::connect(gw.addr());
        c.send(req);
        String::from_utf8(c.read_to_end()).unwrap()
    };
    let got = raw(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{got}");
    let (hints, rest) = got.split_once("\r\n\r\n").unwrap();
    assert!(
        hints.contains("link: </s.css>; rel=preload")
            || hints.contains("Link: </s.css>; rel=preload"),
        "{hints}"
    );
    assert!(
        !hints.to_ascii_lowercase().contains("connection"),
        "{hints}"
    );
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(rest.ends_with("ok"));
    // Stored without the interim answer.
    let got = raw(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.to_ascii_lowercase().contains("x-cache: hit"), "{got}");
    // HTTP/1.0: the final answer only.
    let got = raw(b"GET /b HTTP/1.0\r\nHost: h\r\n\r\n");
    assert!(got.starts_with("HTTP/1.0 200 OK\r\n"), "{got}");
    // (Not "103" anywhere: a request id may hold those digits.)
    assert!(
        !got.contains("Early Hints") && !got.contains("s.css"),
        "{got}"
    );
}

/// An answer that runs to the upstream's close and is cut short (the upstream stops past the
/// route's timeout) cannot pass for a whole one: an HTTP/1.1 client gets it chunked without
/// the last chunk, an HTTP/2 client gets the stream reset (it was a clean end of stream, and
/// curl took the part for the whole).
#[test]
fn a_close_delimited_answer_cut_short_does_not_look_complete() {
    let up = Upstream::start(|s| match s.target.as_str() {
        "/cut" => Action::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\npart"
                .to_vec(),
        ),
        _ => Action::RawClose(b"HTTP/1.1 200 OK\r\n\r\nwhole".to_vec()),
    });
    let gw = Gw::start(
        &Cfg::new()
            .listener("h2c = true")
            .route(
                "GET /{p}",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://{}/{{p}}\", timeout = \"300ms\" }}",
                    up.addr
                ),
            )
            .toml(),
    );
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /cut HTTP/1.1\r\nHost: h\r\n\r\n");
    let raw = String::from_utf8(c.read_to_end()).unwrap();
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert!(raw.ends_with("4\r\npart\r\n"), "{raw}");
    let curl = |path: &str| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--http2-prior-knowledge"])
            .arg(format!("http://{}{path}", gw.addr()))
            .output()
            .expect("curl (apt install curl)")
    };
    let out = curl("/cut");
    assert!(
        !out.status.success(),
        "curl took a cut answer for a whole one"
    );
    let out = curl("/whole");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"whole");
}

/// A 205 the gateway writes (a mock's) carries no content and says so with a zero length
/// (RFC 9110 15.3.6), whatever body the mock names; the connection carries on.
#[test]
fn a_205_is_sent_without_content() {
    let gw = Gw::start(
        &Cfg::new()
            .route(
                "POST /form",
                "integration = { type = \"mock\", status = 205, body = \"not sent\" }",
            )
            .route(
                "GET /next",
                "integration = { type = \"mock\", body = \"next\" }",
            )
            .toml(),
    );
    let mut c = Client::connect(gw.addr());
    let r = c.request(b"POST /form HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 205);
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(r.text(), "");
    let r = c.request(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "next"));
}
