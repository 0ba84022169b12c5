//! Request bodies streamed to an upstream, and the route's `timeout`: a slow upload is the
//! client's time (paced by the body limits, answered 408), not the target's; an upstream that
//! stops taking the body gets 504 after the route's timeout, not an endless wait.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::*;

/// One route to `up` with a 400 ms timeout; every body streams (no request buffering).
fn gateway(up: SocketAddr, upstream_extra: &str) -> Gw {
    Gw::start(&config(
        r#"request_buffering = 0
max_body = "64MiB"
body_timeout = "5s""#,
        &format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{up}\"]\n{upstream_extra}\n"),
        r#"
  [[apis.routes]]
  route = "ANY /{proxy+}"
  integration = { type = "http", uri = "http://up/{proxy}", timeout = "400ms" }
"#,
    ))
}

/// A client that sends its body in two halves, 1 s apart (longer than the route's timeout,
/// well within the body's own limits), to an upstream that answers 150 ms after the body,
/// gets the upstream's answer, for a Content-Length and a chunked body (before, 504: the
/// timeout ran from before the body).
#[test]
fn a_slow_upload_is_not_the_upstreams_timeout() {
    let up = Upstream::start(|_| Action::Sleep(Duration::from_millis(150)));
    let gw = gateway(up.addr, "");
    for chunked in [false, true] {
        let mut c = Client::connect(gw.addr());
        let (head, first, second) = if chunked {
            (
                "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                "3\r\nabc\r\n",
                "3\r\ndef\r\n0\r\n\r\n",
            )
        } else {
            (
                "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\n",
                "abc",
                "def",
            )
        };
        c.send(format!("{head}{first}").as_bytes());
        // The client's pace, what the test is about: not a synchronisation.
        std::thread::sleep(Duration::from_secs(1));
        c.send(second.as_bytes());
        let r = c.read_response(false).expect("an answer");
        assert_eq!(r.status, 200, "chunked {chunked}: {}", r.text());
        assert_eq!(r.text(), "slow");
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == b"abcdef"));
}

/// An upstream that reads the request head and then nothing of the body: once the kernel's
/// buffers are full, the body's next part waits for the route's timeout, and the client gets
/// 504 (before, the gateway waited until the upstream gave up, and answered 502).
#[test]
fn an_upstream_that_stops_reading_the_body_gets_504() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => return,
            }
        }
        // Holds the connection, reading nothing, until the test is over (at most 60 s).
        let _ = done_rx.recv_timeout(Duration::from_secs(60));
    });
    let gw = gateway(addr, "");
    const SIZE: usize = 32 << 20;
    let mut c = Client::connect(gw.addr());
    c.send(format!("POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes());
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let piece = vec![b'x'; 64 << 10];
        for _ in 0..SIZE / piece.len() {
            if w.write_all(&piece).is_err() {
                return;
            }
        }
    });
    let r = c.read_response(false).expect("an answer");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["message"], "Endpoint request timed out");
    drop(c);
    let _ = done_tx.send(());
    let _ = writer.join();
}

/// `GET /{p}` to `up`, with a JSON access log in `logs/gw.log`.
fn logged_gateway(up: SocketAddr) -> Gw {
    let toml = config(
        "",
        "",
        &format!(
            "  [[apis.routes]]\n  route = \"GET /{{p}}\"\n  integration = {{ type = \"http\", uri = \"http://{up}/{{p}}\" }}\n"
        ),
    ) + "\n[access_log]\npath = \"logs/gw.log\"\nformat = \"json\"\n";
    Gw::start(&toml)
}

/// A client that closes while its answer is slow in coming gets nothing more: logged 499 at
/// once, not 200 when the upstream answers (nginx's `proxy_ignore_client_abort off`). A client
/// that sends its next request meanwhile (pipelining) is answered both.
#[test]
fn a_client_that_leaves_a_slow_answer_is_logged_499() {
    let up = Upstream::start(|s| {
        if s.target == "/slow" {
            Action::Sleep(Duration::from_secs(3))
        } else {
            Action::Sleep(Duration::from_millis(150))
        }
    });
    let g = logged_gateway(up.addr);
    let mut c = Client::connect(g.addr());
    c.send(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n");
    drop(c);
    let log = g.dir.0.join("logs/gw.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(IO_TIMEOUT, || read().contains("\"status\":\"499\"")),
        "{}",
        read()
    );
    // Pipelined: the second request arrives while the first's answer is awaited.
    let mut c = Client::connect(g.addr());
    c.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    for _ in 0..2 {
        let r = c.read_response(false).expect("an answer");
        assert_eq!(r.status, 200);
    }
}

/// An answer cut part way (the upstream closed early, the client went away) keeps the
/// status its head carried, and its access-log line says what cut it.
#[test]
fn an_answer_cut_part_way_says_why_in_the_log() {
    let big = vec![b'x'; 8 << 20];
    let up = Upstream::start(move |s| {
        if s.target == "/short" {
            Action::RawClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b".to_vec())
        } else {
            let mut a =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
            a.extend_from_slice(&big);
            Action::Raw(a)
        }
    });
    let g = logged_gateway(up.addr);
    let mut c = Client::connect(g.addr());
    c.send(b"GET /short HTTP/1.1\r\nHost: h\r\n\r\n");
    let _ = c.read_to_end();
    // The client reads the head of the big one and goes.
    let mut c = Client::connect(g.addr());
    c.send(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut head = [0u8; 64];
    c.read_exact(&mut head);
    drop(c);
    let log = g.dir.0.join("logs/gw.log");
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    assert!(
        eventually(IO_TIMEOUT, || lines().len() >= 2),
        "{:?}",
        lines()
    );
    let l = lines();
    let short = l.iter().find(|x| x["path"] == "/short").unwrap();
    assert_eq!(short["status"], "200", "{short}");
    assert!(
        short["integrationError"]
            .as_str()
            .unwrap()
            .contains("the answer ended part way"),
        "{short}"
    );
    let big = l.iter().find(|x| x["path"] == "/big").unwrap();
    assert_eq!(big["status"], "200", "{big}");
    assert_eq!(big["errorResponseType"], "CLIENT_CLOSED", "{big}");
}
