//! HTTP details as a client sees them, over HTTP/1.1 and HTTP/2: methods the gateway refuses
//! whatever the route (TRACE, TRACK, CONNECT), the fields it drops from the answers it relays
//! (hop-by-hop ones named in an interim answer's `Connection`, `Content-Length` on a 204),
//! the transfer codings each client gets, chunk sizes written with leading zeros, and the `Host` values it refuses.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
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

/// Several `Connection` lines are one list (RFC 9110 5.3): a field named in any of them is
/// hop-by-hop, on the request and on the answer.
#[test]
fn every_connection_line_names_hop_by_hop_fields() {
    let up = Upstream::start(|s| {
        let leaked = s.header("x-secret").unwrap_or("none").to_string();
        Action::Raw(
            format!("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: x-foo\r\nX-Foo: bar\r\nContent-Length: {}\r\n\r\n{leaked}", leaked.len())
                .into_bytes(),
        )
    });
    let gw = Gw::start(&proxy_conf(up.addr));
    let got = raw(
        gw.addr(),
        b"GET /echo HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: X-Secret\r\nX-Secret: 1\r\nConnection: close\r\n\r\n",
    );
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("none"), "the upstream got X-Secret: {got}");
    assert!(!got.to_ascii_lowercase().contains("x-foo"), "{got}");
}

/// The methods Amazon API Gateway's `ANY` stands for: what a 405 for TRACE, TRACK or CONNECT
/// allows.
const ALLOW: &str = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE";

#[test]
fn trace_track_and_connect_are_refused_with_405_on_every_route() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxy_conf(up.addr));
    let addr = gw.addr();
    for (req, what) in [
        (
            &b"TRACE /echo HTTP/1.1\r\nHost: h\r\nCookie: s=secret\r\n\r\n"[..],
            "TRACE",
        ),
        (b"TRACK /echo HTTP/1.1\r\nHost: h\r\n\r\n", "TRACK"),
        (
            b"TRACE /mock HTTP/1.1\r\nHost: h\r\n\r\n",
            "TRACE on a GET route",
        ),
        (
            b"CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n",
            "CONNECT",
        ),
    ] {
        let r = Client::connect(addr).request(req);
        assert_eq!(r.status, 405, "{what}: {}", r.text());
        assert_eq!(r.header("allow"), Some(ALLOW), "{what}");
        assert_eq!(r.json()["message"], "Method Not Allowed", "{what}");
    }
    assert_eq!(up.count(), 0, "nothing reached the origin");
    // Other extension methods are still the origin's business on ANY routes.
    let r = Client::connect(addr).request(b"PROPFIND /dav HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["method"], "PROPFIND");

    // HTTP/2: TRACE as well (CONNECT was 405 already).
    let a = h2_request(addr, "TRACE", "/echo", &[]);
    assert_eq!(a.0, 405);
    assert_eq!(a.1.get("allow").unwrap(), ALLOW);
    assert_eq!(up.count(), 1);

    // A route for them could never be served: refused at load.
    for key in ["TRACE /t", "CONNECT /c"] {
        let dir = TempDir::new();
        let path = dir.0.join("config.toml");
        let text = Cfg::new()
            .route(key, r#"integration = { type = "mock" }"#)
            .toml();
        std::fs::write(&path, text).unwrap();
        let e = tollgate::Config::load(&path).unwrap_err().to_string();
        assert!(e.contains("refused whatever the route"), "{key}: {e}");
    }
}

/// One HTTP/2 request (h2c, prior knowledge) on a new connection: the status and headers,
/// or the stream's reset reason.
fn h2_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap) {
    try_h2_request(addr, method, path, headers).unwrap_or_else(|e| panic!("reset: {e}"))
}

fn try_h2_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::HeaderMap), h2::Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://api.test{path}"));
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let mut c = client.ready().await.unwrap();
        let (resp, _) = c.send_request(b.body(()).unwrap(), true).unwrap();
        let (parts, mut body) = resp.await?.into_parts();
        while let Some(d) = body.data().await {
            let _: Bytes = d?;
        }
        Ok((parts.status.as_u16(), parts.headers))
    })
}

#[test]
fn chunk_sizes_with_leading_zeros_are_read_by_value() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxy_conf(up.addr));
    let post = |size: &str| {
        Client::connect(gw.addr()).request(
            format!(
                "POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    // 17 and 40 digits, value 3 (RFC 9112 7.1: 1*HEXDIG).
    for size in ["00000000000000003", &format!("{}3", "0".repeat(39))] {
        let r = post(size);
        assert_eq!(r.status, 200, "{size}: {}", r.text());
        assert_eq!(r.json()["body"], "abc");
    }
    // A value past 64 bits is still malformed, however it is written.
    let r = post("fffffffffffffffff3");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(&format!("{}1{}", "0".repeat(10), "0".repeat(16)));
    assert_eq!(r.status, 400, "{}", r.text());
    // And a chunk line is still bounded (4 KiB), zeros included.
    let r = post(&format!("{}3", "0".repeat(5000)));
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn a_204_is_relayed_without_content_length() {
    let up = Upstream::start(|s| {
        if s.target == "/204" {
            Action::Raw(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n".to_vec())
        } else {
            respond(200, "after")
        }
    });
    let gw = Gw::start(&proxy_conf(up.addr));
    let mut c = Client::connect(gw.addr());
    let r = c.request(b"GET /204 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-a"), Some("1"));
    assert_eq!(r.header("content-length"), None, "{:?}", r.headers);
    // The connection goes on: no body was sent with the 204.
    assert_eq!(
        c.request(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n").text(),
        "after"
    );
}

#[test]
fn host_ports_past_65535_or_not_numeric_are_refused() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxy_conf(up.addr));
    for host in ["x:99999", "x:65536", "x:8o", "[::1]:70000"] {
        let r = Client::connect(gw.addr())
            .request(format!("GET /h HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status, 400, "{host}: {}", r.text());
    }
    for host in ["x:65535", "x:", "[::1]:8080"] {
        let r = Client::connect(gw.addr())
            .request(format!("GET /h HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    assert_eq!(up.count(), 3);
}

#[test]
fn http2_host_must_name_the_authority() {
    let up = Upstream::echo();
    let gw = Gw::start(&proxy_conf(up.addr));
    let addr = gw.addr();
    // RFC 9113 8.3.1: a Host naming another entity than :authority is malformed.
    let e = try_h2_request(addr, "GET", "/h", &[("host", "b.example")]).unwrap_err();
    assert_eq!(e.reason(), Some(h2::Reason::PROTOCOL_ERROR), "{e}");
    // The same authority (case and the scheme's default port aside) is fine.
    for host in ["api.test", "API.Test", "api.test:80"] {
        let (status, _) = h2_request(addr, "GET", "/h", &[("host", host)]);
        assert_eq!(status, 200, "{host}");
    }
    assert_eq!(up.count(), 3);
}

/// Transfer codings as the client's side allows them: only `chunked` is relayed (another
/// coding reached clients that could not undo it, without a word: 502, as nginx answers); a
/// 204 carries no `Transfer-Encoding`, an HTTP/1.0 client never gets one (a HEAD's answer
/// included); `Trailer` goes with the trailers it announces, to an HTTP/1.1 client, and not
/// where the chunks are undone (HTTP/1.0).
#[test]
fn transfer_codings_reach_only_clients_that_take_them() {
    let up = Upstream::start(|s| {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n";
        let a = match (s.method.as_str(), s.target.as_str()) {
            (_, "/gzip") => {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nzz"
                    .to_string()
            }
            (_, "/gzip-chunked") => {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n"
                    .to_string()
            }
            (_, "/empty") => {
                "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
            }
            ("HEAD", _) => chunked.to_string(),
            _ => format!("{chunked}2\r\nok\r\n0\r\nX-Sum: 7\r\n\r\n"),
        };
        Action::RawClose(a.into_bytes())
    });
    let gw = Gw::start(&proxy_conf(up.addr));
    let ask = |method: &str, path: &str, version: &str| {
        raw(
            gw.addr(),
            format!("{method} {path} HTTP/{version}\r\nHost: h\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    for path in ["/gzip", "/gzip-chunked"] {
        for version in ["1.1", "1.0"] {
            let got = ask("GET", path, version);
            assert!(got.contains(" 502 "), "{path} over {version}: {got}");
            assert!(!got.contains("zz"), "{got}");
        }
    }
    let got = ask("GET", "/empty", "1.1");
    assert!(got.starts_with("HTTP/1.1 204 "), "{got}");
    assert!(
        !got.to_ascii_lowercase().contains("transfer-encoding"),
        "{got}"
    );

    // HTTP/1.1: the chunks as they came, with the trailer and the field announcing it.
    let got = ask("GET", "/sum", "1.1").to_ascii_lowercase();
    assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
    assert!(got.contains("trailer: x-sum\r\n"), "{got}");
    assert!(
        got.ends_with("\r\n\r\n2\r\nok\r\n0\r\nx-sum: 7\r\n\r\n"),
        "{got}"
    );
    // HTTP/1.0: the body alone, to the close; neither field.
    for method in ["GET", "HEAD"] {
        let got = ask(method, "/sum", "1.0");
        assert!(got.starts_with("HTTP/1.0 200 "), "{method}: {got}");
        let lower = got.to_ascii_lowercase();
        assert!(!lower.contains("transfer-encoding"), "{method}: {got}");
        assert!(!lower.contains("trailer"), "{method}: {got}");
        let body = got.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body, if method == "GET" { "ok" } else { "" }, "{method}");
    }
    // HTTP/2: the trailers are not relayed, nor is the field announcing them.
    let (status, headers) = h2_request(gw.addr(), "GET", "/sum", &[]);
    assert_eq!(status, 200);
    assert!(headers.get("trailer").is_none(), "{headers:?}");
    let (status, _) = h2_request(gw.addr(), "GET", "/gzip-chunked", &[]);
    assert_eq!(status, 502);
}
