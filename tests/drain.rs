//! Draining for good (SIGTERM, SIGINT, `Gateway::shutdown`), as a client sees it: the
//! listening sockets close at once, so new connects are refused, while requests in flight
//! finish with `Connection: close`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// An origin that holds its one answer until told: it says when the request has arrived, and
/// answers 200 "held" once `release` is sent.
fn held_origin() -> (SocketAddr, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let _ = arrived_tx.send(());
        let _ = release_rx.recv();
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld");
    });
    (addr, arrived, release)
}

fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[test]
fn a_drain_refuses_new_connections_at_once_and_finishes_the_ones_in_flight() {
    let (origin, arrived, release) = held_origin();
    let mut gw = Gw::start(
        &Cfg::new()
            .workers(2)
            .route(
                "GET /held",
                format!("integration = {{ type = \"http\", uri = \"http://{origin}/held\" }}"),
            )
            .route(
                "GET /mock",
                r#"integration = { type = "mock", body = "m" }"#,
            )
            .toml(),
    );
    let addr = gw.addr();
    assert_eq!(get(addr, "/mock").text(), "m");
    let mut c = Client::connect(addr);
    c.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n");
    arrived
        .recv_timeout(IO_TIMEOUT)
        .expect("request at the origin");

    gw.gw.as_ref().unwrap().controller().shutdown();
    // Every shard's socket stops listening: connects are refused (not queued unanswered
    // until the drain ends), whichever socket the kernel would pick.
    assert!(
        eventually(IO_TIMEOUT, || (0..16).all(|_| refused(addr))),
        "connects still accepted while the drain waits for the request in flight"
    );

    // The request in flight is still answered.
    release.send(()).unwrap();
    let r = c.read_response(false).expect("in-flight request answered");
    assert_eq!((r.status, r.text()), (200, "held".to_string()));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed());
    gw.shutdown();
}
