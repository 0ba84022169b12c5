//! HTTP details as a client sees them, over HTTP/1.1 and HTTP/2: methods the gateway refuses
//! whatever the route (TRACE, TRACK, CONNECT), the fields it drops from the answers it relays
//! (hop-by-hop ones named in an interim answer's `Connection`, `Content-Length` on a 204),
//! chunk sizes written with leading zeros, and the `Host` values it refuses.

mod common;

use std::net::SocketAddr;

use common::*;

/// `ANY /{proxy+}` to `up`, over a listener that also speaks h2c.
fn proxy_conf(up: SocketAddr) -> String {
    Cfg::new()
        .listener("h2c = true")
        .route(
            "ANY /{proxy+}",
            format!("integration = {{ type = \"http\", uri = \"http://{up}/{{proxy}}\" }}"),
        )
        .route(
            "GET /mock",
            r#"integration = { type = "mock", body = "m" }"#,
        )
        .toml()
}

/// Sends `req` on a new connection and reads everything until the gateway closes it.
fn raw(addr: SocketAddr, req: &[u8]) -> String {
    let mut c = Client::connect(addr);
    c.send(req);
    String::from_utf8_lossy(&c.read_to_end()).into_owned()
}

#[test]
fn interim_answers_drop_the_fields_their_connection_header_names() {
    let up = Upstream::start(|_| {
        Action::Raw(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: x-secret\r\nX-Secret: s\r\nContent-Length: 0\r\n\r\n\
              HTTP/1.1 200 OK\r\nConnection: x-internal\r\nX-Internal: i\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let gw = Gw::start(&proxy_conf(up.addr));
    let got = raw(
        gw.addr(),
        b"GET /hints HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    let (hints, rest) = got.split_once("\r\n\r\n").unwrap();
    assert!(hints.starts_with("HTTP/1.1 103 Early Hints\r\n"), "{got}");
    let hints = hints.to_ascii_lowercase();
    assert!(hints.contains("link: </a.css>; rel=preload"), "{hints}");
    for dropped in ["x-secret", "connection", "content-length"] {
        assert!(!hints.contains(dropped), "{dropped} relayed: {hints}");
    }
    // As on the final answer.
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "{rest}");
    assert!(!rest.to_ascii_lowercase().contains("x-internal"), "{rest}");
    assert!(rest.ends_with("ok"), "{rest}");
}
