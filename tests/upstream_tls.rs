//! TLS to upstreams, end to end: a real TLS upstream (rustls, certificates from rcgen) that
//! reports what it saw — the SNI name, the client certificate, whether the session was
//! resumed, which connection carried the request — behind a gateway with `tls` upstreams.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::certs::*;
use common::*;
use rustls::pki_types::pem::PemObject;

/// A TLS upstream on 127.0.0.1:0 answering every request with JSON about the connection.
struct TlsUpstream {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

impl TlsUpstream {
    fn start(ca: &Ca, names: &[&str], client_ca: Option<&Ca>) -> TlsUpstream {
        let (cert, key, _) = ca.leaf(names, false);
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let b = match client_ca {
            None => b.with_no_client_auth(),
            Some(c) => {
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    c.roots(),
                    provider,
                )
                .build()
                .unwrap();
                b.with_client_cert_verifier(v)
            }
        };
        let cfg = Arc::new(b.with_single_cert(chain, key).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c2 = conns.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { break };
                let id = c2.fetch_add(1, Ordering::SeqCst);
                let cfg = cfg.clone();
                std::thread::spawn(move || serve(tcp, cfg, id));
            }
        });
        TlsUpstream { addr, conns }
    }
}

fn serve(tcp: std::net::TcpStream, cfg: Arc<rustls::ServerConfig>, id: usize) {
    tcp.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let conn = rustls::ServerConnection::new(cfg).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut r = Vec::new();
    loop {
        // Read one request head (and a Content-Length body).
        let mut line = String::new();
        let mut br = BufReader::new(&mut s);
        if br.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let target = line.split(' ').nth(1).unwrap_or_default().to_string();
        let mut len = 0;
        let mut upgrade = false;
        loop {
            let mut h = String::new();
            if br.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim_end().is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            upgrade |= lower.starts_with("upgrade:");
        }
        r.resize(len, 0);
        if br.read_exact(&mut r).is_err() {
            return;
        }
        drop(br);
        if upgrade {
            // 101, then echo whatever comes, over TLS.
            let _ = s.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            );
            let _ = s.flush();
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() || s.flush().is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let client_cn = s.conn.peer_certificates().and_then(|c| c.first()).map(|c| {
            let (_, x) = x509_parser::parse_x509_certificate(c).unwrap();
            x.subject().to_string()
        });
        let body = serde_json::json!({
            "target": target,
            "sni": s.conn.server_name(),
            "client": client_cn,
            "resumed": s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            "conn": id,
        })
        .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).is_err() || s.flush().is_err() {
            return;
        }
    }
}

/// A gateway whose `/{proxy+}` goes to `integration`; `upstreams` is the [[upstreams]] text.
fn gateway(dir: TempDir, upstreams: &str, integration: &str) -> Result<Gw, String> {
    let toml = Cfg::new()
        .upstream(upstreams)
        .route(
            "ANY /{proxy+}",
            format!("integration = {{ type = \"http\", uri = \"{integration}/{{proxy}}\" }}"),
        )
        .route(
            "GET /local",
            r#"integration = { type = "mock", status = 200, body = "still here" }"#,
        )
        .toml();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, &toml).unwrap();
    match tollgate::check_file(&path) {
        Ok(_) => Ok(Gw::start_in(dir, &toml)),
        Err(e) => Err(e.to_string()),
    }
}

fn with_ca(ca: &Ca) -> TempDir {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("ca.pem"), ca.cert.pem()).unwrap();
    dir
}

#[test]
fn https_upstreams_are_verified_pooled_and_named() {
    let ca = Ca::new();
    let up = TlsUpstream::start(&ca, &["upstream.test"], None);
    let gw = gateway(
        with_ca(&ca),
        &format!(
            "[[upstreams]]\nname = \"secure\"\ntargets = [\"{}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"upstream.test\" }}",
            up.addr
        ),
        "https://secure",
    )
    .unwrap();
    let mut c = Client::connect(gw.addr());
    for i in 0..3 {
        let r = c.request(format!("GET /p/{i}?q=1 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        assert_eq!(j["target"], format!("/p/{i}?q=1"));
        assert_eq!(j["sni"], "upstream.test");
        assert_eq!(j["client"], serde_json::Value::Null);
    }
    // One pooled TLS connection carried all three.
    assert_eq!(up.conns.load(Ordering::SeqCst), 1);
    // A POST body goes through too.
    let r = c.request(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(r.status, 200);
}

#[test]
fn a_certificate_that_does_not_verify_is_a_502() {
    let ca = Ca::new();
    let other = Ca::new();
    let up = TlsUpstream::start(&other, &["upstream.test"], None);
    let named = TlsUpstream::start(&ca, &["upstream.test"], None);
    let upstreams = format!(
        "[[upstreams]]\nname = \"wrongca\"\ntargets = [\"{}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"upstream.test\" }}\n\n\
         [[upstreams]]\nname = \"wrongname\"\ntargets = [\"{}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"other.test\" }}",
        up.addr, named.addr
    );
    let gw = gateway(with_ca(&ca), &upstreams, "https://wrongca").unwrap();
    let r = get(gw.addr(), "/x");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("Bad Gateway") || r.json()["message"].is_string());
    assert_eq!(get(gw.addr(), "/local").text(), "still here");
    drop(gw);
    let gw = gateway(with_ca(&ca), &upstreams, "https://wrongname").unwrap();
    assert_eq!(get(gw.addr(), "/x").status, 502);
    drop(gw);
    // A literal https:// address is verified against the system's roots, which do not
    // know this test CA.
    let gw = gateway(TempDir::new(), "", &format!("https://{}", named.addr)).unwrap();
    assert_eq!(get(gw.addr(), "/x").status, 502);
}

#[test]
fn client_certificates_are_presented_to_upstreams_that_ask() {
    let ca = Ca::new();
    let clients = Ca::new();
    let up = TlsUpstream::start(&ca, &["upstream.test"], Some(&clients));
    let dir = with_ca(&ca);
    let (c, k, _) = clients.leaf(&["gateway.test"], false);
    write_pair(&dir, "client", &c, &k);
    let with_cert = format!(
        "[[upstreams]]\nname = \"m\"\ntargets = [\"{}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"upstream.test\", cert = \"client.pem\", key = \"client.key\" }}",
        up.addr
    );
    let gw = gateway(dir, &with_cert, "https://m").unwrap();
    let r = get(gw.addr(), "/who");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["client"], "CN=gateway.test");
    drop(gw);
    let without = format!(
        "[[upstreams]]\nname = \"m\"\ntargets = [\"{}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"upstream.test\" }}",
        up.addr
    );
    let dir = with_ca(&ca);
    let log = dir.0.join("access.log");
    let toml = Cfg::new()
        .upstream(&without)
        .stage_extra(
            "access_log = { path = \"access.log\", format = '$context.integration.error' }",
        )
        .route(
            "ANY /{proxy+}",
            "integration = { type = \"http\", uri = \"https://m/{proxy}\" }",
        )
        .toml();
    let gw = Gw::start_in(dir, &toml);
    assert_eq!(get(gw.addr(), "/who").status, 502);
    // Why, in the log: the upstream's alert, not "closed".
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(std::time::Duration::from_secs(10), || read()
            .ends_with('\n')),
        "no line"
    );
    assert!(read().contains("CertificateRequired"), "{}", read());
}

#[test]
fn new_connections_resume_the_tls_session() {
    let ca = Ca::new();
    let up = TlsUpstream::start(&ca, &["upstream.test"], None);
    // keepalive = 0: every request opens a connection.
    let gw = gateway(
        with_ca(&ca),
        &format!(
            "[[upstreams]]\nname = \"s\"\ntargets = [\"{}\"]\nkeepalive = 0\ntls = {{ ca = \"ca.pem\", server_name = \"upstream.test\" }}",
            up.addr
        ),
        "https://s",
    )
    .unwrap();
    let first = get(gw.addr(), "/1").json();
    assert_eq!(first["resumed"], false);
    for i in 2..5 {
        let j = get(gw.addr(), &format!("/{i}")).json();
        assert_eq!(j["resumed"], true, "request {i}: {j}");
    }
    assert_eq!(up.conns.load(Ordering::SeqCst), 4);
}

#[test]
fn websocket_upgrades_relay_to_tls_upstreams() {
    let ca = Ca::new();
    let up = TlsUpstream::start(&ca, &["upstream.test"], None);
    let gw = gateway(
        with_ca(&ca),
        &format!(
            "[[upstreams]]\nname = \"ws\"\ntargets = [\"{}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"upstream.test\" }}",
            up.addr
        ),
        "https://ws",
    )
    .unwrap();
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!(r.status, 101);
    for msg in [&b"ping over TLS"[..], &[9u8; 3000][..]] {
        c.send(msg);
        let mut echo = vec![0u8; msg.len()];
        c.read_exact(&mut echo);
        assert_eq!(echo, msg);
    }
}

#[test]
fn tls_settings_are_checked_at_load() {
    let ca = Ca::new();
    let up = "[[upstreams]]\nname = \"plain\"\ntargets = [\"127.0.0.1:9\"]";
    let e = gateway(with_ca(&ca), up, "https://plain")
        .err()
        .expect("refused");
    assert!(
        e.contains("https://plain needs TLS on upstream \"plain\""),
        "{e}"
    );
    let up = "[[upstreams]]\nname = \"s\"\ntargets = [\"127.0.0.1:9\"]\ntls = { ca = \"ca.pem\" }";
    let e = gateway(with_ca(&ca), up, "http://s")
        .err()
        .expect("refused");
    assert!(e.contains("write https://s"), "{e}");
    let up =
        "[[upstreams]]\nname = \"s\"\ntargets = [\"127.0.0.1:9\"]\ntls = { ca = \"missing.pem\" }";
    let e = gateway(with_ca(&ca), up, "https://s")
        .err()
        .expect("refused");
    assert!(e.contains("upstreams[\"s\"].tls: cannot read"), "{e}");
    let up = "[[upstreams]]\nname = \"s\"\ntargets = [\"127.0.0.1:9\"]\ntls = { cert = \"c.pem\" }";
    let e = gateway(with_ca(&ca), up, "https://s")
        .err()
        .expect("refused");
    assert!(e.contains("needs both cert and key"), "{e}");
    // A target host TLS cannot verify (rustls refuses `127.1`) is refused, not sent plain;
    // with server_name it is fine.
    let up = "[[upstreams]]\nname = \"s\"\ntargets = [\"127.1:9\"]\ntls = { ca = \"ca.pem\" }";
    let e = gateway(with_ca(&ca), up, "https://s")
        .err()
        .expect("refused");
    assert!(
        e.contains("upstreams[\"s\"].targets[0] = \"127.1:9\" is not valid: expected a host TLS can verify"),
        "{e}"
    );
    let up = "[[upstreams]]\nname = \"s\"\ntargets = [\"127.1:9\"]\ntls = { ca = \"ca.pem\", server_name = \"upstream.test\" }";
    assert!(gateway(with_ca(&ca), up, "https://s").is_ok());
}

/// Upstreams naming one address and TLS name, with other CAs or client certificates, keep
/// their own: one whose CA did not sign the target's certificate gets 502 however its
/// neighbour connected, and a client certificate goes only from the upstream it is given to.
#[test]
fn upstreams_sharing_an_address_keep_their_own_trust_and_identity() {
    let ca = Ca::new();
    let other = Ca::new();
    let clients = Ca::new();
    let open = TlsUpstream::start(&ca, &["upstream.test"], None);
    let asks = TlsUpstream::start(&ca, &["upstream.test"], Some(&clients));
    let dir = with_ca(&ca);
    std::fs::write(dir.0.join("other.pem"), other.cert.pem()).unwrap();
    let (c, k, _) = clients.leaf(&["gateway.test"], false);
    write_pair(&dir, "client", &c, &k);
    let tls = |ca: &str, cert: &str| {
        format!("tls = {{ ca = \"{ca}\", server_name = \"upstream.test\"{cert} }}")
    };
    let cert = ", cert = \"client.pem\", key = \"client.key\"";
    let upstreams = format!(
        "[[upstreams]]\nname = \"wrongca\"\ntargets = [\"{o}\"]\n{}\n\n\
         [[upstreams]]\nname = \"good\"\ntargets = [\"{o}\"]\n{}\n\n\
         [[upstreams]]\nname = \"nocert\"\ntargets = [\"{a}\"]\n{}\n\n\
         [[upstreams]]\nname = \"withcert\"\ntargets = [\"{a}\"]\n{}\n",
        tls("other.pem", ""),
        tls("ca.pem", ""),
        tls("ca.pem", ""),
        tls("ca.pem", cert),
        o = open.addr,
        a = asks.addr,
    );
    let route = |path: &str, up: &str| {
        format!("integration = {{ type = \"http\", uri = \"https://{up}/{path}\" }}")
    };
    let toml = Cfg::new()
        .upstream(upstreams)
        .route("GET /wrongca", route("w", "wrongca"))
        .route("GET /good", route("g", "good"))
        .route("GET /nocert", route("n", "nocert"))
        .route("GET /withcert", route("c", "withcert"))
        .toml();
    let gw = Gw::start_in(dir, &toml);
    assert_eq!(get(gw.addr(), "/good").status, 200);
    assert_eq!(get(gw.addr(), "/wrongca").status, 502);
    let r = get(gw.addr(), "/withcert");
    assert_eq!(
        (r.status, r.json()["client"].clone()),
        (200, "CN=gateway.test".into())
    );
    assert_eq!(get(gw.addr(), "/nocert").status, 502);
}

/// A CA file replaced before a reload is the trust from then on: connections pooled under
/// the old one take no new request (they kept being used, keep-alive refreshing them).
#[test]
fn a_reload_with_a_changed_ca_file_leaves_connections_made_under_the_old_one() {
    let (ca, other) = (Ca::new(), Ca::new());
    let up = TlsUpstream::start(&ca, &["upstream.test"], None);
    let dir = with_ca(&ca);
    let ca_file = dir.0.join("ca.pem");
    let gw = gateway(
        dir,
        &format!(
            "[[upstreams]]\nname = \"secure\"\ntargets = [\"{}\"]\ntls = {{ ca = \"ca.pem\", server_name = \"upstream.test\" }}",
            up.addr
        ),
        "https://secure",
    )
    .unwrap();
    let get = || {
        Client::connect(gw.addr())
            .request(b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    };
    assert_eq!(get().status, 200);
    std::fs::write(&ca_file, other.cert.pem()).unwrap();
    assert_eq!(
        admin(gw.admin(), "POST", "/reload", Some(TOKEN)).status,
        200
    );
    assert_eq!(get().status, 502);
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    assert_eq!(
        admin(gw.admin(), "POST", "/reload", Some(TOKEN)).status,
        200
    );
    assert_eq!(get().status, 200);
}
