//! Clients that stop reading their answers: each write waits at most `limits.send_timeout`
//! (nginx's `send_timeout`), and while they wait the rest of the shard keeps serving (on the
//! own runtime their stalled relays do not take the buffer ring the receives need).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Bytes in the big answer: more than the kernel buffers between the gateway and a client
/// that reads nothing can hold.
const BIG: usize = 16 << 20;

/// More than the gateway's side of a client that reads nothing holds (a send buffer of at most
/// 4 MiB, `net.ipv4.tcp_wmem`; the relay's batch and the receive's queue, 1.5 MiB): once a
/// paced upstream has written this much, the gateway has been waiting on the client.
const BEHIND: usize = 6 << 20;

/// What the upstream saw for one big answer.
#[derive(Debug, PartialEq)]
enum Seen {
    /// The gateway took no byte for 300 ms (it stopped reading); from a paced upstream, also
    /// once it took [`BEHIND`] bytes.
    Stalled,
    /// The gateway closed the connection before the whole answer went out.
    Cut,
    /// Every byte went out.
    Sent,
}

/// An upstream answering every request with a 16 MiB body that reports what happened to each
/// answer; small requests (`/small`) get 2 bytes.
fn big_upstream() -> (SocketAddr, mpsc::Receiver<Seen>) {
    upstream(None)
}

/// The body's byte at `off` (a pattern, so that bytes out of order or lost show).
fn body_byte(off: usize) -> u8 {
    (off % 251) as u8
}

/// [`big_upstream`], writing its body `piece` bytes at a time with `pause` before each when
/// paced (a source slower than the gateway: each piece arrives in a receive of its own).
fn upstream(paced: Option<(usize, Duration)>) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                if head.starts_with(b"GET /small ") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    return;
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
                // The body from one 64 KiB pattern, written again and again.
                let chunk: Vec<u8> = (0..(64 << 10) + 251).map(body_byte).collect();
                let piece = paced.map_or(64 << 10, |(n, _)| n);
                let at = |off: usize| {
                    let from = off % 251;
                    &chunk[from..from + (BIG - off).min(piece)]
                };
                // Until the gateway takes no byte for 300 ms (it stopped reading); then
                // without a limit for the rest (an error there is the gateway closing).
                s.set_write_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                let mut off = 0;
                while off < BIG {
                    if let Some((_, pause)) = paced {
                        if off >= BEHIND {
                            break;
                        }
                        std::thread::sleep(pause);
                    }
                    match s.write(at(off)) {
                        Ok(n) => off += n,
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            break
                        }
                        Err(_) => {
                            let _ = tx.send(Seen::Cut);
                            return;
                        }
                    }
                }
                if off < BIG {
                    let _ = tx.send(Seen::Stalled);
                    // A paced upstream reports nothing more: past `BEHIND` the gateway's
                    // receive buffer may still take the rest (the kernel grows it to 32 MiB).
                    let tx = paced.is_none().then_some(&tx);
                    s.set_write_timeout(None).unwrap();
                    while off < BIG {
                        match s.write(at(off)) {
                            Ok(n) if n > 0 => off += n,
                            _ => {
                                let _ = tx.map(|tx| tx.send(Seen::Cut));
                                return;
                            }
                        }
                    }
                    let _ = tx.map(|tx| tx.send(Seen::Sent));
                    return;
                }
                let _ = tx.send(Seen::Sent);
            });
        }
    });
    (addr, rx)
}

/// A client with a small receive buffer that asks for the big answer and reads nothing.
fn stalled_client(gw: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&gw.into()).unwrap();
    let mut s: TcpStream = s.into();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    s
}

fn gateway(upstream: SocketAddr, limits: &str) -> Gw {
    Gw::start(&config(
        limits,
        "",
        &format!(
            r#"
  [[apis.routes]]
  route = "GET /{{proxy+}}"
  integration = {{ type = "http", uri = "http://{upstream}/{{proxy}}" }}
"#
        ),
    ))
}

#[test]
fn a_client_that_stops_reading_is_cut_after_send_timeout() {
    let (up, seen) = big_upstream();
    // 2 s: the upstream must see the gateway stop reading (its buffers full, then 300 ms
    // without progress) before the gateway gives up on the client, also on a loaded machine.
    let gw = gateway(up, r#"send_timeout = "2s""#);
    let mut c = stalled_client(gw.addr());
    // The gateway stops reading the upstream once the client's side is full, then gives up
    // on the client and drops the upstream connection with it.
    assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap(), Seen::Stalled);
    assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap(), Seen::Cut);
    // The client gets the start of the answer, then the end of the connection.
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(
        got.len() < BIG,
        "the whole answer arrived: {} bytes",
        got.len()
    );
    // Others are served as before.
    assert_eq!(get(gw.addr(), "/small").text(), "ok");
}

#[test]
fn clients_that_stop_reading_do_not_starve_the_others() {
    let (up, seen) = big_upstream();
    let gw = gateway(up, "");
    // 72 answers stalled at once, each relay with a send waiting on its client: more than the
    // own runtime's 64 ring buffers, were each stalled relay to keep one (a relay that falls
    // behind has its bytes copied off the ring).
    let stalled: Vec<TcpStream> = (0..72).map(|_| stalled_client(gw.addr())).collect();
    for _ in 0..stalled.len() {
        assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap(), Seen::Stalled);
    }
    for _ in 0..3 {
        assert_eq!(get(gw.addr(), "/small").text(), "ok");
    }
    // The stalled answers are whole once their clients read (two of them read here).
    for c in stalled.into_iter().take(2) {
        read_whole_answer(c);
    }
}

/// Reads a stalled client's answer to its end: every byte of the body, in order.
fn read_whole_answer(mut c: TcpStream) {
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = vec![0u8; 64 << 10];
    let mut n = 0usize;
    let mut in_body = false;
    while n < BIG {
        let k = c.read(&mut got).unwrap();
        assert!(k > 0, "the answer ended after {n} bytes of its body");
        let mut body = &got[..k];
        if !in_body {
            let at = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            body = &body[at + 4..];
            in_body = true;
        }
        for (i, b) in body.iter().enumerate() {
            assert_eq!(*b, body_byte(n + i), "body byte {} out of place", n + i);
        }
        n += body.len();
    }
    assert_eq!(n, BIG);
}

/// An upstream slower than the gateway (each piece of its body in a receive of its own): a
/// relay whose client stops reading has its last bytes in the ring's buffers when its send
/// waits. Those are copied off the ring first, so 72 clients that stop reading (more than
/// the 64 buffers of the shard's ring) leave the others served; their answers are whole once
/// they read.
#[test]
fn clients_that_stop_reading_hold_no_ring_buffer() {
    let (up, seen) = upstream(Some((64 << 10, Duration::from_millis(1))));
    // The first stalled answers are read last: no send may give up on them meanwhile.
    let gw = gateway(up, r#"send_timeout = "600s""#);
    // One at a time: a relay alone on the shard keeps up with its upstream until its client
    // stops reading, so what its send holds then came straight from the ring.
    let mut stalled = Vec::new();
    for _ in 0..72 {
        stalled.push(stalled_client(gw.addr()));
        assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap(), Seen::Stalled);
    }
    for _ in 0..3 {
        assert_eq!(get(gw.addr(), "/small").text(), "ok");
    }
    for c in stalled.into_iter().take(2) {
        read_whole_answer(c);
    }
}

/// Over TLS too (asking to close): the answer's write gives up after `send_timeout` and the
/// connection ends, rather than wait on the client for ever.
#[test]
fn a_tls_client_that_stops_reading_is_cut_too() {
    let (up, seen) = big_upstream();
    let dir = TempDir::new();
    let ca = common::certs::Ca::new();
    let (cert, key, _) = ca.leaf(&["api.test"], false);
    common::certs::write_pair(&dir, "api", &cert, &key);
    let toml = Cfg::new()
        .limits(r#"send_timeout = "2s""#)
        .listener(r#"tls = { cert = "api.pem", key = "api.key" }"#)
        .routes(format!(
            r#"
  [[apis.routes]]
  route = "GET /{{proxy+}}"
  integration = {{ type = "http", uri = "http://{up}/{{proxy}}" }}
"#
        ))
        .toml();
    let gw = Gw::start_in(dir, &toml);
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&gw.addr().into()).unwrap();
    let mut tcp: TcpStream = s.into();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(ca.roots())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name).unwrap();
    conn.complete_io(&mut tcp).unwrap();
    conn.writer()
        .write_all(b"GET /big HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut tcp).unwrap();
    }
    assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap(), Seen::Stalled);
    assert_eq!(seen.recv_timeout(IO_TIMEOUT).unwrap(), Seen::Cut);
    // The client gets the start of the answer, then the end of the connection (not a wait
    // that only its own read timeout ends).
    let mut got = 0;
    let mut b = [0u8; 64 << 10];
    let end = loop {
        match tcp.read(&mut b) {
            Ok(0) => break Ok(()),
            Ok(n) => got += n,
            Err(e) => break Err(e),
        }
    };
    assert!(
        matches!(&end, Ok(())) || matches!(&end, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "after {got} bytes: {end:?}"
    );
    assert!(got > 0 && got < BIG, "{got} bytes");
}
