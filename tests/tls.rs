//! TLS termination end to end: certificates made by rcgen in the test, a rustls client that
//! checks what the server presents, SNI selection (exact, wildcard, default, strict), load
//! errors, certificate reload under load, redirects from plain listeners.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::certs::*;
use common::*;
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

fn conf(upstream: SocketAddr, listener_tls: &str, domains: &str) -> String {
    format!(
        r#"
[server]
workers = 2

[[listeners]]
name = "https"
addr = "127.0.0.1:0"
tls = {{ cert = "default.pem", key = "default.key" {listener_tls} }}

[[listeners]]
name = "http"
addr = "127.0.0.1:0"
redirect_https = true

[admin]
addr = "127.0.0.1:0"

[[apis]]
name = "api"

  [[apis.stages]]
  name = "prod"

  [[apis.routes]]
  route = "ANY /{{proxy+}}"
  integration = {{ type = "http", uri = "http://{upstream}/{{proxy}}" }}

{domains}

[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "api", stage = "prod" }}]
"#
    )
}

const DOMAINS: &str = r#"
[[domains]]
host = "api.test"
tls = { cert = "api.pem", key = "api.key" }
mappings = [{ base_path = "", api = "api", stage = "prod" }]

[[domains]]
host = "*.wild.test"
tls = { cert = "wild.pem", key = "wild.key" }
mappings = [{ base_path = "", api = "api", stage = "prod" }]
"#;

/// What a TLS client saw.
#[derive(Debug)]
#[allow(dead_code)]
struct TlsResp {
    status: u16,
    head: String,
    body: String,
    cert: CertificateDer<'static>,
    version: rustls::ProtocolVersion,
    alpn: Option<Vec<u8>>,
}

fn client_config(roots: Arc<rustls::RootCertStore>, tls12_only: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ClientConfig::builder_with_provider(provider);
    let b = if tls12_only {
        b.with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
    } else {
        b.with_safe_default_protocol_versions().unwrap()
    };
    let mut c = b.with_root_certificates(roots).with_no_client_auth();
    // An HTTP/1.1-only client (the listener offers h2 too).
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

fn tls_get(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<TlsResp, String> {
    tls_get_after(addr, sni, cfg, path, b"")
}

/// `tls_get`, with `preface` sent in clear before the handshake (a PROXY protocol header).
fn tls_get_after(
    addr: SocketAddr,
    sni: &str,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    preface: &[u8],
) -> Result<TlsResp, String> {
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(preface).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from(sni.to_string()).unwrap())
        .map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
    let status = head[9..12].parse().map_err(|_| "bad status")?;
    Ok(TlsResp {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
        cert: s.conn.peer_certificates().unwrap()[0].clone(),
        version: s.conn.protocol_version().unwrap(),
        alpn: s.conn.alpn_protocol().map(|a| a.to_vec()),
    })
}

struct Setup {
    gw: Gw,
    ca: Ca,
    default: CertificateDer<'static>,
    api: CertificateDer<'static>,
    wild: CertificateDer<'static>,
    up: Upstream,
}

fn setup(listener_tls: &str) -> Setup {
    let up = Upstream::echo();
    let ca = Ca::new();
    let dir = TempDir::new();
    let (c, k, default) = ca.leaf(&["default.test"], false);
    write_pair(&dir, "default", &c, &k);
    let (c, k, api) = ca.leaf(&["api.test"], false);
    write_pair(&dir, "api", &c, &k);
    let (c, k, wild) = ca.leaf(&["*.wild.test"], false);
    write_pair(&dir, "wild", &c, &k);
    let gw = Gw::start_in(dir, &conf(up.addr, listener_tls, DOMAINS));
    Setup {
        gw,
        ca,
        default,
        api,
        wild,
        up,
    }
}

fn https(gw: &Gw) -> SocketAddr {
    gw.gw.as_ref().unwrap().addr("https").unwrap()
}

#[test]
fn terminates_tls_and_proxies_with_forwarded_proto() {
    let s = setup("");
    let cfg = client_config(s.ca.roots(), false);
    let r = tls_get(https(&s.gw), "api.test", cfg, "/hello?x=1").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.version, rustls::ProtocolVersion::TLSv1_3);
    assert_eq!(
        r.alpn.as_deref(),
        Some(&b"http/1.1"[..]),
        "a client that offers only http/1.1 gets it"
    );
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["target"], "/hello?x=1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    // TLS 1.2 clients are served too.
    let r12 = tls_get(
        https(&s.gw),
        "api.test",
        client_config(s.ca.roots(), true),
        "/a",
    )
    .unwrap();
    assert_eq!(
        (r12.status, r12.version),
        (200, rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(s.up.count(), 2);
}

/// Reads what the server sent until rustls has no more to give, without blocking for more.
fn plaintext(conn: &mut rustls::ClientConnection, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("reading plaintext: {e}"),
        }
    }
}

/// TLS 1.3: the session tickets the server issues once the handshake is done go out with the
/// first answer, in one send (the client is woken once for both), not ahead of it on their
/// own; the next connection resumes with one of them.
#[test]
fn session_tickets_ride_with_the_first_answer_and_resume() {
    let s = setup("");
    let cfg = client_config(s.ca.roots(), false);
    let mut tcp = TcpStream::connect(https(&s.gw)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("api.test").unwrap();
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name.clone()).unwrap();
    conn.complete_io(&mut tcp).unwrap();
    assert!(!conn.is_handshaking());
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
    // The client's Finished and the request leave together.
    conn.writer()
        .write_all(b"GET /first HTTP/1.1\r\nHost: api.test\r\n\r\n")
        .unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut tcp).unwrap();
    }
    // The first bytes back: the tickets (a record) and the answer, in one read.
    let mut raw = vec![0u8; 1 << 16];
    let n = tcp.read(&mut raw).unwrap();
    let (mut records, mut i) = (0, 0);
    while i + 5 <= n {
        i += 5 + u16::from_be_bytes([raw[i + 3], raw[i + 4]]) as usize;
        records += 1;
    }
    conn.read_tls(&mut &raw[..n]).unwrap();
    conn.process_new_packets().unwrap();
    let mut got = Vec::new();
    plaintext(&mut conn, &mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "the first read holds the answer, not the tickets alone ({records} records, {n} bytes): {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        records >= 2,
        "tickets and answer: {records} records, {n} bytes, {}",
        String::from_utf8_lossy(&got)
    );
    // The next connection resumes the session.
    let mut tcp = TcpStream::connect(https(&s.gw)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
    conn.complete_io(&mut tcp).unwrap();
    assert_eq!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    let mut s3 = rustls::Stream::new(&mut conn, &mut tcp);
    s3.write_all(b"GET /third HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut third = Vec::new();
    let _ = s3.read_to_end(&mut third);
    assert!(String::from_utf8_lossy(&third).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(s.up.count(), 2);
}

#[test]
fn sni_picks_exact_wildcard_or_default() {
    let s = setup("");
    let cfg = client_config(s.ca.roots(), false);
    let a = https(&s.gw);
    assert_eq!(
        tls_get(a, "api.test", cfg.clone(), "/").unwrap().cert,
        s.api
    );
    assert_eq!(
        tls_get(a, "x.wild.test", cfg.clone(), "/").unwrap().cert,
        s.wild
    );
    // An unknown name gets the listener's certificate (which the client then refuses).
    let e = tls_get(a, "other.test", cfg.clone(), "/").unwrap_err();
    assert!(
        e.contains("NotValidForName") || e.contains("not valid"),
        "{e}"
    );
    assert_eq!(
        tls_get(a, "default.test", cfg, "/").unwrap().cert,
        s.default
    );
}

#[test]
fn sni_strict_refuses_unknown_names() {
    let s = setup(", sni_strict = true");
    let cfg = client_config(s.ca.roots(), false);
    let a = https(&s.gw);
    assert_eq!(
        tls_get(a, "api.test", cfg.clone(), "/x").unwrap().status,
        200
    );
    // The listener's own certificate's name is a known name too.
    let r = tls_get(a, "default.test", cfg.clone(), "/x").unwrap();
    assert_eq!((r.status, r.cert), (200, s.default.clone()));
    let e = tls_get(a, "other.test", cfg, "/").unwrap_err();
    assert!(!e.is_empty());
    let m = admin(s.gw.admin(), "GET", "/metrics", Some(TOKEN)).text();
    assert!(m.contains("tollgate_tls_handshake_failures_total"), "{m}");
}

#[test]
fn plain_http_to_a_tls_port_and_garbage_are_cut() {
    let s = setup("");
    let mut c = Client::connect(https(&s.gw));
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.read_to_end().len() < 64, "no HTTP answer in clear text");
    // The listener keeps serving.
    let cfg = client_config(s.ca.roots(), false);
    assert_eq!(
        tls_get(https(&s.gw), "api.test", cfg, "/x").unwrap().status,
        200
    );
}

#[test]
fn plain_listener_redirects_to_https() {
    let s = setup("");
    let http = s.gw.gw.as_ref().unwrap().addr("http").unwrap();
    let mut c = Client::connect(http);
    let r = c.request(b"GET /pets/1?x=2 HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://api.test/pets/1?x=2"));
    // Keep-alive holds; an explicit :80 is dropped, other ports kept.
    let r = c.request(b"GET / HTTP/1.1\r\nHost: api.test:80\r\n\r\n");
    assert_eq!(r.header("location"), Some("https://api.test/"));
    // `OPTIONS *` names no path: the root's, not `https://api.test*`.
    let r = c.request(b"OPTIONS * HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(r.header("location"), Some("https://api.test/"));
    let r = c.request(b"GET / HTTP/1.1\r\nHost: api.test:8080\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("location"), Some("https://api.test:8080/"));
    assert_eq!(s.up.count(), 0);
}

#[test]
fn websocket_upgrades_relay_over_tls() {
    let up = Upstream::start(|_| Action::UpgradeEcho);
    let ca = Ca::new();
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["default.test"], false);
    write_pair(&dir, "default", &c, &k);
    let gw = Gw::start_in(dir, &conf(up.addr, "", ""));
    let cfg = client_config(ca.roots(), false);
    let tcp = TcpStream::connect(https(&gw)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from("default.test").unwrap()).unwrap();
    let mut t = rustls::StreamOwned::new(conn, tcp);
    // The first frame rides with the upgrade request: it must reach the upstream after it.
    t.write_all(
        b"GET /ws HTTP/1.1\r\nHost: default.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nfirst",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"first") {
        let n = t.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    for msg in [&b"hello over wss"[..], &[0u8, 1, 2, 255][..]] {
        t.write_all(msg).unwrap();
        let mut echo = vec![0u8; msg.len()];
        t.read_exact(&mut echo).unwrap();
        assert_eq!(echo, msg);
    }
    assert_eq!(up.count(), 1);
}

/// A large WebSocket message sent as 64 KiB (and 32 KiB) fragments, one write per frame,
/// crosses a TLS listener whole, both ways: a read that brings a whole TLS record and the start
/// of the next must not overfill rustls' plaintext buffer and cut the connection.
#[test]
fn large_fragmented_websocket_messages_cross_tls_whole() {
    let up = Upstream::start(|_| Action::UpgradeEcho);
    let ca = Ca::new();
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["default.test"], false);
    write_pair(&dir, "default", &c, &k);
    let gw = Gw::start_in(dir, &conf(up.addr, "", ""));
    for (size, count) in [(64 << 10, 16), (32 << 10, 8)] {
        // Room for the whole echo, which is read only once everything was sent.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(8 << 20).unwrap();
        sock.connect(&https(&gw).into()).unwrap();
        let tcp: TcpStream = sock.into();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ClientConnection::new(
            client_config(ca.roots(), false),
            ServerName::try_from("default.test").unwrap(),
        )
        .unwrap();
        let mut t = rustls::StreamOwned::new(conn, tcp);
        t.write_all(
            b"GET /ws HTTP/1.1\r\nHost: default.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(t.read(&mut b).unwrap(), 1, "closed before the 101");
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        // Each frame is one TLS write (its own records: full ones and a short last one), and
        // all of them reach the socket together, so the gateway's reads bring the end of one
        // frame and the start of the next at once. The echo waits in the socket buffers.
        t.conn.set_buffer_limit(None);
        let mut sent = Vec::new();
        for i in 0..count {
            // A binary (then continuation) frame header, 64-bit length, and the payload.
            let first = if i == 0 { 0x02 } else { 0x00 };
            let fin = if i == count - 1 { 0x80 } else { 0 };
            let mut frame = vec![first | fin, 127];
            frame.extend_from_slice(&(size as u64).to_be_bytes());
            frame.extend((0..size).map(|j| (i * 7 + j % 251) as u8));
            t.conn.writer().write_all(&frame).unwrap();
            sent.extend_from_slice(&frame);
        }
        t.flush().unwrap();
        let mut echo = vec![0u8; sent.len()];
        t.read_exact(&mut echo)
            .unwrap_or_else(|e| panic!("{count} x {size}: {e}"));
        assert!(echo == sent, "{count} x {size} came back changed");
    }
}

#[test]
fn bad_certificates_are_refused_at_load_with_the_reason() {
    let ca = Ca::new();
    let up = Upstream::echo();
    type Make<'a> = Box<dyn Fn(&TempDir) + 'a>;
    let cases: Vec<(&str, Make, &str)> = vec![
        ("missing", Box::new(|_d: &TempDir| {}), "cannot read"),
        (
            "mismatched",
            Box::new(|d: &TempDir| {
                let (c, _, _) = ca.leaf(&["default.test"], false);
                let (_, k, _) = ca.leaf(&["default.test"], false);
                write_pair(d, "default", &c, &k);
            }),
            "does not match",
        ),
        (
            "expired",
            Box::new(|d: &TempDir| {
                let (c, k, _) = ca.leaf(&["default.test"], true);
                write_pair(d, "default", &c, &k);
            }),
            "expired",
        ),
        (
            "not PEM",
            Box::new(|d: &TempDir| write_pair(d, "default", "hello", "world")),
            "no certificate",
        ),
    ];
    for (what, make, want) in cases {
        let dir = TempDir::new();
        make(&dir);
        let path = dir.0.join("config.toml");
        std::fs::write(&path, conf(up.addr, "", "")).unwrap();
        let err = tollgate::check_file(&path).expect_err(what).to_string();
        assert!(
            err.contains("listeners[\"https\"].tls") && err.contains(want),
            "{what}: {err}"
        );
    }
    // allow_expired serves an expired certificate.
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["default.test"], true);
    write_pair(&dir, "default", &c, &k);
    let gw = Gw::start_in(dir, &conf(up.addr, ", allow_expired = true", ""));
    assert!(https(&gw).port() > 0);
}

#[test]
fn certificates_reload_under_load_without_failed_requests() {
    let s = setup("");
    let a = https(&s.gw);
    let cfg = client_config(s.ca.roots(), false);
    // One kept-alive connection opened before the reload keeps working after it.
    let tcp = TcpStream::connect(a).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(cfg.clone(), ServerName::try_from("api.test").unwrap())
            .unwrap();
    let mut old = rustls::StreamOwned::new(conn, tcp);
    let ask = |t: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        t.write_all(b"GET /k HTTP/1.1\r\nHost: api.test\r\n\r\n")
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = t.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    assert!(ask(&mut old).starts_with("HTTP/1.1 200"));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, cfg) = (stop.clone(), ok.clone(), failed.clone(), cfg.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match tls_get(a, "api.test", cfg.clone(), "/load") {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    // New certificate for api.test, then a reload; and a bad one, which is refused.
    let (c, k, new_api) = s.ca.leaf(&["api.test"], false);
    for _ in 0..5 {
        write_pair(&s.gw.dir, "api", &c, &k);
        s.gw.gw.as_ref().unwrap().reload().unwrap();
    }
    assert_eq!(
        tls_get(a, "api.test", cfg.clone(), "/").unwrap().cert,
        new_api
    );
    std::fs::write(s.gw.dir.0.join("api.key"), "not a key").unwrap();
    let err = s.gw.gw.as_ref().unwrap().reload().unwrap_err().join("\n");
    assert!(err.contains("domains") && err.contains("api.key"), "{err}");
    assert_eq!(
        tls_get(a, "api.test", cfg.clone(), "/").unwrap().cert,
        new_api
    );
    stop.store(true, Ordering::SeqCst);
    load.join().unwrap();
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(
        ask(&mut old).starts_with("HTTP/1.1 200"),
        "the old connection still serves"
    );
    assert_ne!(s.api, new_api);
}

#[test]
fn certificate_files_changing_on_disk_are_picked_up() {
    let s = setup("");
    let a = https(&s.gw);
    let cfg = client_config(s.ca.roots(), false);
    // An edit of the config file under way (not loadable yet) neither goes live with a
    // renewal nor holds it back: certificates are reloaded with the configuration as loaded.
    s.gw.rewrite("[[listeners]\nname = \"half written");
    let (c, k, new_api) = s.ca.leaf(&["api.test"], false);
    write_pair(&s.gw.dir, "api", &c, &k);
    // The control plane looks at the files every second.
    assert!(eventually(Duration::from_secs(10), || {
        tls_get(a, "api.test", cfg.clone(), "/x").map(|r| r.cert) == Ok(new_api.clone())
    }));
    assert_eq!(
        tls_get(a, "api.test", cfg.clone(), "/x").unwrap().status,
        200
    );
}

/// A listener with mTLS (`mode`), the clients' CA written to `clients-ca.pem`.
fn mtls_setup(mode: &str) -> (Setup, Ca) {
    let s = setup("");
    let clients = Ca::new();
    std::fs::write(s.gw.dir.0.join("clients-ca.pem"), clients.cert.pem()).unwrap();
    let text = std::fs::read_to_string(&s.gw.path).unwrap().replacen(
        "\n\n[[listeners]]\nname = \"http\"",
        &format!("\nmtls = {{ client_ca = \"clients-ca.pem\", mode = \"{mode}\", headers = {{ \"X-Client-Subject\" = \"subjectDN\", \"x-client-serial\" = \"serialNumber\", \"x-client-fp\" = \"fingerprint\", \"x-client-sans\" = \"sans\" }} }}\n\n[[listeners]]\nname = \"http\""),
        1,
    );
    s.gw.rewrite(&text);
    s.gw.gw.as_ref().unwrap().reload().unwrap();
    (s, clients)
}

fn with_client_cert(
    roots: Arc<rustls::RootCertStore>,
    ca: &Ca,
    cn: &str,
) -> Arc<rustls::ClientConfig> {
    with_client_cert_params(roots, ca, cn, |_| {})
}

fn with_client_cert_params(
    roots: Arc<rustls::RootCertStore>,
    ca: &Ca,
    cn: &str,
    edit: impl FnOnce(&mut CertificateParams),
) -> Arc<rustls::ClientConfig> {
    let mut p = CertificateParams::new(vec![format!("{cn}.clients.test")]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    edit(&mut p);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.der().clone()], der_key)
        .unwrap();
    Arc::new(c)
}

fn tls_get_with(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    extra: &str,
) -> Result<(u16, serde_json::Value), String> {
    tls_request(addr, cfg, extra).map(|(s, b, _)| (s, b))
}

/// One GET of /m on a new connection: the status, the JSON body, and whether the session
/// was resumed.
fn tls_request(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    extra: &str,
) -> Result<(u16, serde_json::Value, bool), String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn = rustls::ClientConnection::new(cfg, ServerName::try_from("api.test").unwrap())
        .map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(
        format!("GET /m HTTP/1.1\r\nHost: api.test\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let resumed = s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
    Ok((
        head[9..12].parse().unwrap(),
        serde_json::from_str(body).unwrap_or_default(),
        resumed,
    ))
}

#[test]
fn mtls_required_verifies_and_forwards_the_client_certificate() {
    let (s, clients) = mtls_setup("required");
    let a = https(&s.gw);
    // No client certificate, or one from another CA: the handshake completes and the
    // request is answered 403, as Amazon API Gateway answers it.
    let forbidden = (403, serde_json::json!({"message": "Forbidden"}));
    assert_eq!(
        tls_get_with(a, client_config(s.ca.roots(), false), "").unwrap(),
        forbidden
    );
    let stranger = Ca::new();
    let eve = with_client_cert(s.ca.roots(), &stranger, "eve");
    assert_eq!(tls_get_with(a, eve.clone(), "").unwrap(), forbidden);
    // The refused client's session resumes (its ticket holds its certificate): still refused.
    let (status, body, resumed) = tls_request(a, eve, "").unwrap();
    assert!(
        resumed,
        "the second connection resumes the first one's session"
    );
    assert_eq!((status, body), forbidden);
    // A good one: served, its fields forwarded; a client's own copy of those headers dropped.
    let (status, echo) = tls_get_with(
        a,
        with_client_cert(s.ca.roots(), &clients, "client-a"),
        "X-Client-Subject: CN=admin\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    let h = &echo["headers"];
    assert_eq!(h["x-client-subject"], "CN=client-a");
    assert_eq!(h["x-client-fp"].as_str().unwrap().len(), 64);
    assert!(!h["x-client-serial"].as_str().unwrap().is_empty());
    assert!(
        h["x-client-sans"]
            .as_str()
            .unwrap()
            .contains("client-a.clients.test"),
        "{h}"
    );
    // A listener without mTLS serving the same API drops a client's copy too: it would reach
    // the upstream as a certificate's field the client made up.
    let text = std::fs::read_to_string(&s.gw.path).unwrap();
    s.gw.rewrite(&text.replacen("redirect_https = true\n", "", 1));
    s.gw.gw.as_ref().unwrap().reload().unwrap();
    let r = Client::connect(s.gw.addr_of("http")).request(
        b"GET /m HTTP/1.1\r\nHost: api.test\r\nX-Client-Subject: CN=admin\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["headers"].get("x-client-subject").is_none(),
        "{}",
        r.text()
    );
}

/// Replacing the clients' CA file is picked up as certificates are (every second), without a
/// reload: clients of the new CA are served, those of the old one refused.
#[test]
fn a_client_ca_file_changing_on_disk_is_picked_up() {
    let (s, old) = mtls_setup("required");
    let a = https(&s.gw);
    let roots = s.ca.roots();
    assert_eq!(
        tls_get_with(a, with_client_cert(roots.clone(), &old, "old"), "")
            .unwrap()
            .0,
        200
    );
    let new = Ca::new();
    std::fs::write(s.gw.dir.0.join("clients-ca.pem"), new.cert.pem()).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        tls_get_with(a, with_client_cert(roots.clone(), &new, "new"), "").is_ok_and(|r| r.0 == 200)
    }));
    assert_eq!(
        tls_get_with(a, with_client_cert(roots, &old, "old"), "")
            .unwrap()
            .0,
        403
    );
}

#[test]
fn mtls_optional_serves_both_and_forwards_only_verified_fields() {
    let (s, clients) = mtls_setup("optional");
    let a = https(&s.gw);
    let (status, echo) = tls_get_with(
        a,
        client_config(s.ca.roots(), false),
        "X-Client-Subject: CN=admin\r\n",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        echo["headers"].get("x-client-subject").is_none(),
        "spoofed header dropped: {echo}"
    );
    let bob = with_client_cert(s.ca.roots(), &clients, "client-b");
    let (status, echo) = tls_get_with(a, bob.clone(), "").unwrap();
    assert_eq!(
        (status, echo["headers"]["x-client-subject"].as_str()),
        (200, Some("CN=client-b"))
    );
    // A resumed session keeps its verified certificate's fields.
    let (status, echo, resumed) = tls_request(a, bob, "").unwrap();
    assert!(resumed);
    assert_eq!(
        (status, echo["headers"]["x-client-subject"].as_str()),
        (200, Some("CN=client-b"))
    );
    // A certificate presented is checked in optional mode too: one from another CA, or an
    // expired one from the trusted CA, is answered 403 (not served as if none were sent).
    let forbidden = (403, serde_json::json!({"message": "Forbidden"}));
    let stranger = Ca::new();
    assert_eq!(
        tls_get_with(a, with_client_cert(s.ca.roots(), &stranger, "eve"), "").unwrap(),
        forbidden
    );
    let expired = with_client_cert_params(s.ca.roots(), &clients, "old", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    assert_eq!(tls_get_with(a, expired, "").unwrap(), forbidden);
}

/// A TLS listener behind a proxy that speaks the PROXY protocol: the header comes before the
/// handshake, and the client it names (from a trusted proxy) is the request's source.
#[test]
fn proxy_protocol_before_tls_names_the_client() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["default.test"], false);
    write_pair(&dir, "default", &c, &k);
    let gw = Gw::start_in(
        dir,
        r#"
[server]
workers = 1
trusted_proxies = ["127.0.0.0/8"]

[[listeners]]
name = "https"
addr = "127.0.0.1:0"
proxy_protocol = true
tls = { cert = "default.pem", key = "default.key" }

[[apis]]
name = "api"

  [[apis.stages]]
  name = "prod"

  [[apis.routes]]
  route = "GET /ip"
  integration = { type = "mock", body = "${context.identity.sourceIp}" }

[[domains]]
host = "*"
mappings = [{ base_path = "", api = "api", stage = "prod" }]
"#,
    );
    let addr = gw.gw.as_ref().unwrap().addr("https").unwrap();
    let cfg = client_config(ca.roots(), false);
    let r = tls_get_after(
        addr,
        "default.test",
        cfg.clone(),
        "/ip",
        b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 443\r\n",
    )
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "198.51.100.9"));
    // Without the header the connection is refused.
    assert!(tls_get(addr, "default.test", cfg, "/ip").is_err());
}

/// A WebSocket API over a TLS listener (wss): the handshake, a two-way route's answer, and a
/// message in fragments, through a real client over rustls.
#[test]
fn websocket_apis_serve_over_tls() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["default.test"], false);
    write_pair(&dir, "default", &c, &k);
    let toml = r#"
[server]
workers = 1

[[listeners]]
name = "https"
addr = "127.0.0.1:0"
tls = { cert = "default.pem", key = "default.key" }

[[apis]]
name = "chat"
kind = "websocket"

  [[apis.stages]]
  name = "prod"

  [[apis.routes]]
  route = "echo"
  route_response = true
  integration = { type = "mock", status = 200, body = '{"echoed":true}' }
"#;
    let gw = Gw::start_in(
        dir,
        &format!("{toml}\n[[domains]]\nhost = \"*\"\nmappings = [{{ base_path = \"\", api = \"chat\", stage = \"prod\" }}]\n"),
    );
    let cfg = client_config(ca.roots(), false);
    let tcp = TcpStream::connect(https(&gw)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from("default.test").unwrap()).unwrap();
    let t = rustls::StreamOwned::new(conn, tcp);
    let (mut ws, r) = tungstenite::client("wss://default.test/", t)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    assert_eq!(r.status(), 101);
    use tungstenite::protocol::frame::{coding, Frame};
    use tungstenite::Message;
    ws.send(Message::text(r#"{"action":"echo"}"#)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(r#"{"echoed":true}"#));
    // 96 KiB in 24 KiB fragments (under the 32 KB frame limit), one write per frame.
    let body = format!(r#"{{"action":"echo","pad":"{}"}}"#, "p".repeat(96 << 10));
    let parts: Vec<&[u8]> = body.as_bytes().chunks(24 << 10).collect();
    for (i, p) in parts.iter().enumerate() {
        let op = if i == 0 {
            coding::OpCode::Data(coding::Data::Text)
        } else {
            coding::OpCode::Data(coding::Data::Continue)
        };
        ws.write(Message::Frame(Frame::message(
            p.to_vec(),
            op,
            i + 1 == parts.len(),
        )))
        .unwrap();
        ws.flush().unwrap();
    }
    assert_eq!(ws.read().unwrap(), Message::text(r#"{"echoed":true}"#));
}

/// A client that offers no protocol the listener speaks (ALPN) is told so with the
/// no_application_protocol alert (RFC 7301 3.2), over TLS 1.3 as over 1.2; it got a bare
/// ServerHello and then the end of the stream.
#[test]
fn an_alpn_mismatch_ends_with_its_alert() {
    let s = setup("");
    for tls12 in [false, true] {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider);
        let b = if tls12 {
            b.with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
        } else {
            b.with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
        };
        let mut c = b.with_root_certificates(s.ca.roots()).with_no_client_auth();
        c.alpn_protocols = vec![b"spdy/3".to_vec()];
        let e = tls_get(https(&s.gw), "default.test", Arc::new(c), "/").unwrap_err();
        assert!(e.contains("NoApplicationProtocol"), "TLS 1.2: {tls12}: {e}");
    }
}

/// A WebSocket API's integrations hear the connection's verified certificate as an http
/// route's upstream does: its `mtls.headers` on every call (a client's own copy dropped),
/// its fields in templates; and `$connect` gets the forwarding headers the gateway writes.
#[test]
fn websocket_integrations_hear_the_verified_certificate() {
    let ca = Ca::new();
    let clients = Ca::new();
    let up = Upstream::echo();
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["default.test"], false);
    write_pair(&dir, "default", &c, &k);
    std::fs::write(dir.0.join("clients-ca.pem"), clients.cert.pem()).unwrap();
    let toml = format!(
        r#"
[server]
workers = 1

[[listeners]]
name = "https"
addr = "127.0.0.1:0"
tls = {{ cert = "default.pem", key = "default.key" }}
mtls = {{ client_ca = "clients-ca.pem", mode = "optional", headers = {{ "x-client-subject" = "subjectDN" }} }}

[[upstreams]]
name = "up"
targets = ["{}"]

[[apis]]
name = "chat"
kind = "websocket"

  [[apis.stages]]
  name = "prod"

  [[apis.routes]]
  route = "$connect"
  integration = {{ type = "http", uri = "http://up/connect?cn=${{context.identity.clientCert.subjectDN}}", headers = {{ "x-gw" = "tollgate" }} }}

  [[apis.routes]]
  route = "$default"
  route_response = true
  integration = {{ type = "http", uri = "http://up/message" }}

[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "chat", stage = "prod" }}]
"#,
        up.addr
    );
    let gw = Gw::start_in(dir, &toml);
    let tcp = TcpStream::connect(https(&gw)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cfg = with_client_cert(ca.roots(), &clients, "alice");
    let conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from("default.test").unwrap()).unwrap();
    let t = rustls::StreamOwned::new(conn, tcp);
    use tungstenite::client::IntoClientRequest;
    let mut req = "wss://default.test/".into_client_request().unwrap();
    for (n, v) in [
        ("x-client-subject", "CN=admin"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "evil"),
        ("x-gw", "client"),
    ] {
        req.headers_mut()
            .append(n, http::HeaderValue::from_static(v));
    }
    let (mut ws, r) = tungstenite::client(req, t)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    assert_eq!(r.status(), 101);
    ws.send(tungstenite::Message::text("hello")).unwrap();
    let _ = ws.read().unwrap();
    let seen = up.requests();
    let c = seen
        .iter()
        .find(|s| s.target.starts_with("/connect"))
        .unwrap();
    assert_eq!(c.target, "/connect?cn=CN%3Dalice");
    assert_eq!(c.headers_named("x-client-subject"), vec!["CN=alice"]);
    assert_eq!(
        c.headers_named("x-forwarded-for"),
        vec!["6.6.6.6, 127.0.0.1"]
    );
    assert_eq!(c.headers_named("x-forwarded-proto"), vec!["https"]);
    assert!(c.headers_named("x-forwarded-host").is_empty());
    assert_eq!(c.headers_named("x-gw"), vec!["tollgate"]);
    let m = seen.iter().find(|s| s.target == "/message").unwrap();
    assert_eq!(m.headers_named("x-client-subject"), vec!["CN=alice"]);
}

/// A client chain of the client's certificate and `n` intermediates under `root`.
fn chained_client(
    roots: Arc<rustls::RootCertStore>,
    root: &Ca,
    n: usize,
) -> Arc<rustls::ClientConfig> {
    let mut made: Vec<(rcgen::Certificate, KeyPair)> = Vec::new();
    for i in 0..n {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("Intermediate {i}"));
        let key = KeyPair::generate().unwrap();
        let cert = match made.last() {
            Some((c, k)) => p.signed_by(&key, c, k).unwrap(),
            None => p.signed_by(&key, &root.cert, &root.key).unwrap(),
        };
        made.push((cert, key));
    }
    let mut p = CertificateParams::new(vec!["deep.clients.test".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "deep");
    let key = KeyPair::generate().unwrap();
    let leaf = match made.last() {
        Some((c, k)) => p.signed_by(&key, c, k).unwrap(),
        None => p.signed_by(&key, &root.cert, &root.key).unwrap(),
    };
    let mut chain = vec![leaf.der().clone()];
    chain.extend(made.iter().rev().map(|(c, _)| c.der().clone()));
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, der_key)
    .unwrap();
    Arc::new(c)
}

/// A client chain longer than Amazon's four certificates is refused without being verified
/// (path building over a long chain cost a shard tens of milliseconds per handshake); four
/// are served.
#[test]
fn mtls_chains_longer_than_four_are_refused() {
    let (s, clients) = mtls_setup("required");
    let a = https(&s.gw);
    let (status, _) = tls_get_with(a, chained_client(s.ca.roots(), &clients, 3), "").unwrap();
    assert_eq!(status, 200);
    let (status, body) = tls_get_with(a, chained_client(s.ca.roots(), &clients, 4), "").unwrap();
    assert_eq!(
        (status, body),
        (403, serde_json::json!({"message": "Forbidden"}))
    );
}

/// A domain's certificate that does not name the domain's host is refused at load: it would
/// be served to that host's clients all the same, and every client that verifies it fails.
#[test]
fn a_domain_certificate_must_name_its_host() {
    let ca = Ca::new();
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["default.test"], false);
    write_pair(&dir, "default", &c, &k);
    let (c, k, _) = ca.leaf(&["api.example.test"], false);
    write_pair(&dir, "other", &c, &k);
    let toml = r#"
[server]
workers = 1

[[listeners]]
name = "https"
addr = "127.0.0.1:0"
tls = { cert = "default.pem", key = "default.key" }

[[apis]]
name = "api"

  [[apis.stages]]
  name = "prod"

  [[apis.routes]]
  route = "GET /x"
  integration = { type = "mock", body = "x" }

[[domains]]
host = "api.other.test"
tls = { cert = "other.pem", key = "other.key" }
mappings = [{ base_path = "", api = "api", stage = "prod" }]
"#;
    match Gw::try_start_in(dir, toml) {
        Ok(_) => panic!("accepted a certificate for another host"),
        Err((_, e)) => assert!(
            e.contains("domains")
                && e.contains("do not cover the domain's host \"api.other.test\""),
            "{e}"
        ),
    }
}
