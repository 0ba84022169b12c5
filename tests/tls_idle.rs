//! Idle TLS keep-alive connections: past the first second they wait holding no buffer of their
//! own (on Tollgate's own runtime; `scripts/idle_memory.py --tls` measures it), then serve
//! their next request as before, or close at `idle_timeout`. A TLS client that leaves while
//! its answer is slow is noticed, as over plain TCP.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::{write_pair, Ca};
use common::*;

fn gateway(limits: &str) -> (Gw, Ca) {
    let dir = TempDir::new();
    let ca = Ca::new();
    let (cert, key, _) = ca.leaf(&["api.test"], false);
    write_pair(&dir, "api", &cert, &key);
    let toml = Cfg::new()
        .limits(limits)
        .listener(r#"tls = { cert = "api.pem", key = "api.key" }"#)
        .routes(
            r#"
  [[apis.routes]]
  route = "GET /{proxy+}"
  integration = { type = "mock", body = "ok" }
"#,
        )
        .toml();
    (Gw::start_in(dir, &toml), ca)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(gw: &Gw, ca: &Ca, tls12: bool) -> Tls {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(ca.roots())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("api.test").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let tcp = TcpStream::connect(gw.addr()).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One keep-alive GET; the answer's status and body.
fn get_on(s: &mut Tls, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: api.test\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.parse().unwrap())
                })
                .unwrap();
            if body.len() >= len {
                return (head[9..12].parse().unwrap(), body.to_string());
            }
        }
    }
}

#[test]
fn idle_tls_connections_serve_their_next_request() {
    let (gw, ca) = gateway("");
    let mut v13 = connect(&gw, &ca, false);
    let mut v12 = connect(&gw, &ca, true);
    for s in [&mut v13, &mut v12] {
        assert_eq!(get_on(s, "/a"), (200, "ok".into()));
    }
    assert_eq!(
        v13.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        v12.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    // Past the first second: both wait without their buffers now.
    std::thread::sleep(Duration::from_millis(1300));
    for s in [&mut v13, &mut v12] {
        assert_eq!(get_on(s, "/b"), (200, "ok".into()));
        assert_eq!(get_on(s, "/c"), (200, "ok".into()));
    }
}

#[test]
fn idle_tls_connections_close_at_idle_timeout() {
    let (gw, ca) = gateway(r#"idle_timeout = "1500ms""#);
    let mut s = connect(&gw, &ca, false);
    assert_eq!(get_on(&mut s, "/a"), (200, "ok".into()));
    let start = Instant::now();
    let mut b = [0u8; 64];
    // The end of the connection (a close_notify, or the TCP close).
    let end = s.read(&mut b);
    let idle = start.elapsed();
    assert!(matches!(end, Ok(0)) || end.is_err(), "{end:?}");
    assert!(idle >= Duration::from_millis(1400), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(5), "closed after {idle:?}");
}

/// A client over TLS that goes while its answer is slow in coming — closing the TCP
/// connection, or saying close_notify first — gets nothing more: logged 499 at once, the
/// upstream not waited for. One that pipelines its next request meanwhile is answered both.
#[test]
fn a_tls_client_that_leaves_a_slow_answer_is_logged_499() {
    let up = Upstream::start(|s| {
        if s.target == "/slow" {
            Action::Sleep(Duration::from_secs(30))
        } else {
            Action::Sleep(Duration::from_millis(150))
        }
    });
    let dir = TempDir::new();
    let ca = Ca::new();
    let (cert, key, _) = ca.leaf(&["api.test"], false);
    write_pair(&dir, "api", &cert, &key);
    let toml = Cfg::new()
        .listener(r#"tls = { cert = "api.pem", key = "api.key" }"#)
        .route(
            "GET /{p}",
            format!(
                r#"integration = {{ type = "http", uri = "http://{}/{{p}}" }}"#,
                up.addr
            ),
        )
        .extra("[access_log]\npath = \"logs/gw.log\"\nformat = \"json\"\n")
        .toml();
    let gw = Gw::start_in(dir, &toml);
    let log = gw.dir.0.join("logs/gw.log");
    let gone = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("\"status\":\"499\"")
            .count()
    };
    let slow = b"GET /slow HTTP/1.1\r\nHost: api.test\r\n\r\n";
    // TLS 1.3, the TCP connection closed without close_notify.
    let mut s = connect(&gw, &ca, false);
    s.write_all(slow).unwrap();
    s.flush().unwrap();
    drop(s);
    assert!(eventually(IO_TIMEOUT, || gone() == 1), "{}", gone());
    // TLS 1.2, close_notify and the write side shut: the client may still read.
    let mut s = connect(&gw, &ca, true);
    s.write_all(slow).unwrap();
    s.conn.send_close_notify();
    s.flush().unwrap();
    s.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(eventually(IO_TIMEOUT, || gone() == 2), "{}", gone());
    let mut b = [0u8; 64];
    assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
    // Pipelined: the second request's records arrive while the first's answer is awaited.
    for tls12 in [false, true] {
        let mut s = connect(&gw, &ca, tls12);
        s.write_all(
            b"GET /a HTTP/1.1\r\nHost: api.test\r\n\r\nGET /b HTTP/1.1\r\nHost: api.test\r\n\r\n",
        )
        .unwrap();
        s.flush().unwrap();
        let mut got = Vec::new();
        while String::from_utf8_lossy(&got).matches("slow").count() < 2 {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        assert_eq!(
            String::from_utf8_lossy(&got)
                .matches("HTTP/1.1 200 OK")
                .count(),
            2
        );
    }
    assert_eq!(gone(), 2);
}
