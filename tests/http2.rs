//! HTTP/2 on the front, end to end: the `h2` crate as a client (h2c, prior knowledge) for
//! multiplexing, bodies both ways and flow control; raw frames for what a well-behaved client
//! never sends (protocol errors and floods, answered with the RST_STREAM or GOAWAY code RFC
//! 9113 asks for); curl and h2load over TLS for ALPN as real clients negotiate it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::certs::*;
use common::*;

// --- set-up -------------------------------------------------------------------------------

/// A gateway with an h2c listener in front of `up`. `stage` is appended to the stage.
fn conf(up: SocketAddr, limits: &str, http2: &str, stage: &str) -> String {
    Cfg::new()
        .listener("h2c = true")
        .limits(limits)
        .stage_extra(stage)
        .route(
            "ANY /{proxy+}",
            format!("integration = {{ type = \"http\", uri = \"http://{up}/{{proxy}}\" }}"),
        )
        .extra(format!("[http2]\n{http2}"))
        .toml()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

type Client = h2::client::SendRequest<Bytes>;

async fn connect(addr: SocketAddr) -> Client {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn read_body(mut b: h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| b.poll_data(cx)).await {
        let c = chunk.unwrap();
        b.flow_control().release_capacity(c.len()).unwrap();
        out.extend_from_slice(&c);
    }
    out
}

/// Sends a request with `body` in `parts` DATA frames (none: END_STREAM on HEADERS).
async fn request(
    client: &mut Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    parts: usize,
) -> Answer {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://api.test{path}"));
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let mut c = client.clone().ready().await.unwrap();
    let (resp, mut send) = c.send_request(b.body(()).unwrap(), parts == 0).unwrap();
    if parts > 0 {
        let size = body.len().div_ceil(parts).max(1);
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut data = Bytes::copy_from_slice(chunk);
            let last = i + 1 == chunks.len();
            while !data.is_empty() {
                send.reserve_capacity(data.len());
                let cap = std::future::poll_fn(|cx| send.poll_capacity(cx))
                    .await
                    .unwrap()
                    .unwrap();
                let part = data.split_to(cap.min(data.len()));
                send.send_data(part, last && data.is_empty()).unwrap();
            }
        }
    }
    let resp = resp.await.unwrap();
    let (parts, body) = resp.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: read_body(body).await,
    }
}

async fn get(client: &mut Client, path: &str) -> Answer {
    request(client, "GET", path, &[], b"", 0).await
}

// --- through the h2 client ----------------------------------------------------------------

#[test]
fn many_streams_share_one_connection_and_run_the_pipeline() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let addr = gw.addr();
    rt().block_on(async move {
        let client = connect(addr).await;
        let mut tasks = Vec::new();
        for i in 0..100 {
            let mut c = client.clone();
            tasks.push(tokio::spawn(async move {
                (i, get(&mut c, &format!("/s/{i}?q={i}")).await)
            }));
        }
        for t in tasks {
            let (i, a) = t.await.unwrap();
            assert_eq!(a.status, 200);
            assert!(a.header("x-request-id").is_some());
            let echo = a.json();
            assert_eq!(echo["target"], format!("/s/{i}?q={i}"));
            assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
            assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
            assert!(echo["headers"]
                .get("connection")
                .is_none_or(|c| c != "close"));
        }
    });
    assert_eq!(up.count(), 100);
    assert!(metric_reaches(&gw, "tollgate_http2_streams_total", "", 100));
    assert_eq!(metric(&gw, "tollgate_http2_connections_total", ""), 1);
    // The same listener still speaks HTTP/1.1.
    assert_eq!(common::get(addr, "/plain").status, 200);
}

#[test]
fn request_bodies_reach_the_upstream_whole() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "max_body = \"64KiB\"", "", ""));
    let addr = gw.addr();
    let body: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    rt().block_on(async move {
        let mut c = connect(addr).await;
        // With content-length, in four DATA frames.
        let len = body.len().to_string();
        let a = request(&mut c, "POST", "/up", &[("content-length", &len)], &body, 4).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["body"].as_str().unwrap().as_bytes(), &body[..]);
        assert_eq!(a.json()["headers"]["content-length"], len.as_str());
        // Without: chunked to the upstream (or with its length, when every frame was there
        // with the HEADERS), same bytes.
        let a = request(&mut c, "PUT", "/up2", &[], &body, 7).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["body"].as_str().unwrap().as_bytes(), &body[..]);
        let h = &a.json()["headers"];
        assert!(
            h["transfer-encoding"] == "chunked" || h["content-length"] == len.as_str(),
            "{h}"
        );
        // Over max_body: declared, and undeclared.
        let big = vec![b'x'; 100_000];
        let a = request(
            &mut c,
            "POST",
            "/big",
            &[("content-length", "100000")],
            &big,
            2,
        )
        .await;
        assert_eq!(a.status, 413);
        let a = request(&mut c, "POST", "/big2", &[], &big, 5).await;
        assert_eq!(a.status, 413);
        // The connection still serves.
        assert_eq!(get(&mut c, "/after").await.status, 200);
    });
    // A declared length over the limit never reaches the upstream (an undeclared one streams
    // until the limit, then the upstream connection is dropped, as over HTTP/1.1).
    assert_eq!(
        up.requests().iter().filter(|s| s.target == "/big").count(),
        0
    );
}

#[test]
fn answers_stream_under_flow_control_in_every_framing() {
    let big: String = (0..1_000_000u32)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let big2 = big.clone();
    let up = Upstream::start(move |s| {
        match s.target.as_str() {
        "/chunked" => Action::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
        ),
        "/close" => Action::RawClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close".to_vec()),
        "/empty" => Action::Raw(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        // One length said twice, or as a list of equal values.
        "/twice" => Action::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok".to_vec(),
        ),
        "/listed" => Action::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok".to_vec()),
        _ => Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Up: 1\r\nConnection: keep-alive\r\n\r\n{}",
                big2.len(),
                big2
            )
            .into_bytes(),
        ),
    }
    });
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let addr = gw.addr();
    rt().block_on(async move {
        let mut c = connect(addr).await;
        // 1 MB through a 64 KiB client window.
        let a = get(&mut c, "/big").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len(), big.len());
        assert!(a.body == big.as_bytes());
        assert_eq!(a.header("x-up"), Some("1"));
        assert_eq!(a.header("content-length"), Some("1000000"));
        assert!(
            a.header("connection").is_none(),
            "connection-specific header sent"
        );
        let a = get(&mut c, "/chunked").await;
        assert_eq!((a.status, &a.body[..]), (200, &b"hello world"[..]));
        assert!(a.header("transfer-encoding").is_none());
        let a = get(&mut c, "/close").await;
        assert_eq!((a.status, &a.body[..]), (200, &b"until close"[..]));
        let a = get(&mut c, "/empty").await;
        assert_eq!((a.status, a.body.len()), (204, 0));
        for path in ["/twice", "/listed"] {
            let a = get(&mut c, path).await;
            assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]), "{path}");
            let lengths: Vec<_> = a.headers.get_all("content-length").iter().collect();
            assert_eq!(lengths, ["2"], "{path}");
        }
        let a = request(&mut c, "HEAD", "/big", &[], b"", 0).await;
        assert_eq!((a.status, a.body.len()), (200, 0));
        assert_eq!(a.header("content-length"), Some("1000000"));
        // Errors are HTTP answers on their stream, as over HTTP/1.1.
        let a = request(&mut c, "GET", "/../x", &[], b"", 0).await;
        assert_eq!(a.status, 400);
        assert!(a.json()["message"].is_string());
    });
}

#[test]
fn the_cache_serves_http2_clients() {
    let up = Upstream::start(|_| respond(200, "fresh"));
    let gw = Gw::start(&conf(
        up.addr,
        "",
        "",
        "cache = { enabled = true, ttl = \"60s\" }",
    ));
    let addr = gw.addr();
    rt().block_on(async move {
        let mut c = connect(addr).await;
        let a = get(&mut c, "/c").await;
        assert_eq!(
            (a.header("x-cache"), &a.body[..]),
            (Some("Miss"), &b"fresh"[..])
        );
        let a = get(&mut c, "/c").await;
        assert_eq!(
            (a.header("x-cache"), &a.body[..]),
            (Some("Hit"), &b"fresh"[..])
        );
    });
    assert_eq!(up.count(), 1);
}

#[test]
fn a_client_reset_stops_its_stream_only() {
    let up = Upstream::start(|s| {
        if s.target == "/slow" {
            Action::Sleep(Duration::from_secs(60))
        } else {
            respond(200, "ok")
        }
    });
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let addr = gw.addr();
    let count = up.seen.clone();
    rt().block_on(async move {
        let c = connect(addr).await;
        let mut ready = c.clone().ready().await.unwrap();
        let req = http::Request::get("http://api.test/slow").body(()).unwrap();
        let (_resp, mut send) = ready.send_request(req, true).unwrap();
        // Wait until the request is at the upstream, then cancel it.
        while count.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        send.send_reset(h2::Reason::CANCEL);
        let mut c2 = c.clone();
        assert_eq!(get(&mut c2, "/other").await.status, 200);
    });
    assert!(metric_reaches(
        &gw,
        "tollgate_http2_streams_reset_total",
        "",
        1
    ));
    // The reset request leaves through the one exit too: counted as 499 (client closed).
    assert!(metric_reaches(
        &gw,
        "tollgate_responses_total",
        "class=\"4xx\"",
        1
    ));
}

#[test]
fn connect_is_refused_with_405_and_counted() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let addr = gw.addr();
    let (status, headers, body) = rt().block_on(async move {
        let c = connect(addr).await;
        let mut ready = c.ready().await.unwrap();
        let req = http::Request::builder()
            .method("CONNECT")
            .uri("api.test:443")
            .body(())
            .unwrap();
        let (resp, _send) = ready.send_request(req, false).unwrap();
        let (parts, mut body) = resp.await.unwrap().into_parts();
        let mut got = Vec::new();
        while let Some(d) = body.data().await {
            got.extend_from_slice(&d.unwrap());
        }
        (parts.status.as_u16(), parts.headers, got)
    });
    // As every answer the gateway writes itself: JSON, the request id, the date; and Allow.
    assert_eq!(status, 405);
    assert_eq!(body, br#"{"message":"Method Not Allowed"}"#);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-request-id"].len(), 32);
    assert!(headers.contains_key("date"));
    assert!(headers["allow"].to_str().unwrap().contains("GET"));
    assert!(metric_reaches(
        &gw,
        "tollgate_responses_total",
        "class=\"4xx\"",
        1
    ));
    assert_eq!(up.count(), 0);
}

/// An RFC 8441 extended CONNECT to an http API (no WebSocket API there) gets a 405 that says
/// what is allowed.
#[test]
fn an_extended_connect_to_an_http_api_is_405_with_allow() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let addr = gw.addr();
    let (status, allow) = rt().block_on(async move {
        let c = connect(addr).await;
        let mut ready = c.ready().await.unwrap();
        // The server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) arrive after the handshake.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.is_extended_connect_protocol_enabled() {
            assert!(
                std::time::Instant::now() < deadline,
                "no SETTINGS_ENABLE_CONNECT_PROTOCOL"
            );
            ready = ready.ready().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let req = http::Request::builder()
            .method("CONNECT")
            .uri("http://api.test/ws")
            .header("sec-websocket-version", "13")
            .extension(h2::ext::Protocol::from_static("websocket"))
            .body(())
            .unwrap();
        let (resp, _send) = ready.send_request(req, false).unwrap();
        let parts = resp.await.unwrap().into_parts().0;
        (
            parts.status.as_u16(),
            parts.headers["allow"].to_str().unwrap().to_string(),
        )
    });
    assert_eq!(status, 405);
    assert!(allow.contains("GET"), "{allow:?}");
    assert_eq!(up.count(), 0);
}

// --- raw frames -----------------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().unwrap())
    }
}

struct Raw {
    s: TcpStream,
}

impl Raw {
    /// Connects with the preface and an empty SETTINGS frame.
    fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut r = Raw { s };
        r.s.write_all(PREFACE).unwrap();
        r.send(SETTINGS, 0, 0, &[]);
        r
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len() as u32;
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.s
            .write_all(&Raw::frame(kind, flags, stream, payload))
            .unwrap();
    }

    /// Writes many frames at once; the server may stop reading part way (that is the point).
    fn flood(&mut self, frames: &[u8]) {
        let _ = self.s.write_all(frames);
    }

    fn read(&mut self) -> Option<Frame> {
        let mut h = [0u8; 9];
        self.s.read_exact(&mut h).ok()?;
        let n = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
        let mut payload = vec![0; n];
        self.s.read_exact(&mut payload).ok()?;
        Some(Frame {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes(h[5..9].try_into().unwrap()) & 0x7fff_ffff,
            payload,
        })
    }

    /// Reads until a frame of `kind` (on `stream`, if given) or the end.
    fn until(&mut self, kind: u8, stream: Option<u32>) -> Option<Frame> {
        loop {
            let f = self.read()?;
            if f.kind == kind && stream.is_none_or(|s| s == f.stream) {
                return Some(f);
            }
        }
    }
}

/// An HPACK header block: GET `path` on `authority`, plus literal headers.
fn block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.push(0x01); // :authority
    b.push(8);
    b.extend_from_slice(b"api.test");
    for (n, v) in extra {
        b.push(0x00);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[test]
fn settings_advertise_the_configured_limits_and_extra_streams_are_refused() {
    let up = Upstream::echo();
    let http2 =
        "max_concurrent_streams = 3\nstream_window = \"256KiB\"\nmax_frame_size = \"32KiB\"";
    let gw = Gw::start(&conf(up.addr, "max_header_bytes = \"8KiB\"", http2, ""));
    let mut r = Raw::connect(gw.addr());
    let s = r.until(SETTINGS, Some(0)).unwrap();
    assert_eq!(s.flags & 1, 0, "the server's own SETTINGS come first");
    let mut settings = std::collections::HashMap::new();
    for e in s.payload.chunks(6) {
        let id = u16::from_be_bytes([e[0], e[1]]);
        settings.insert(id, u32::from_be_bytes(e[2..6].try_into().unwrap()));
    }
    assert_eq!(settings.get(&0x3), Some(&3), "MAX_CONCURRENT_STREAMS");
    assert_eq!(
        settings.get(&0x4),
        Some(&(256 << 10)),
        "INITIAL_WINDOW_SIZE"
    );
    assert_eq!(settings.get(&0x5), Some(&(32 << 10)), "MAX_FRAME_SIZE");
    // Twice max_header_bytes: the gateway checks its own limit, and answers past it itself.
    assert_eq!(
        settings.get(&0x6),
        Some(&(16 << 10)),
        "MAX_HEADER_LIST_SIZE"
    );
    r.send(SETTINGS, 1, 0, &[]);
    // Three streams left open (no END_STREAM: they wait for a body), then a fourth.
    for id in [1, 3, 5, 7] {
        r.send(HEADERS, END_HEADERS, id, &block("/open", &[]));
    }
    let rst = r.until(RST_STREAM, Some(7)).unwrap();
    assert_eq!(rst.code(), REFUSED_STREAM);
}

#[test]
fn malformed_requests_get_stream_and_connection_errors() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let mut r = Raw::connect(gw.addr());
    // A connection-specific header: stream error PROTOCOL_ERROR (RFC 9113 8.2.2).
    r.send(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &block("/a", &[("connection", "close")]),
    );
    assert_eq!(r.until(RST_STREAM, Some(1)).unwrap().code(), PROTOCOL_ERROR);
    // TE other than "trailers": the same.
    r.send(
        HEADERS,
        END_HEADERS | END_STREAM,
        3,
        &block("/b", &[("te", "gzip")]),
    );
    assert_eq!(r.until(RST_STREAM, Some(3)).unwrap().code(), PROTOCOL_ERROR);
    // The connection still serves a good request.
    r.send(HEADERS, END_HEADERS | END_STREAM, 5, &block("/c", &[]));
    let h = r.until(HEADERS, Some(5)).unwrap();
    assert_eq!(h.payload[0], 0x88, "an indexed :status 200");
    // An upper-case field name fails HPACK decoding in h2: a connection error.
    r.send(
        HEADERS,
        END_HEADERS | END_STREAM,
        7,
        &block("/d", &[("X-Up", "1")]),
    );
    assert_eq!(r.until(GOAWAY, None).unwrap().code(), PROTOCOL_ERROR);
    // DATA on stream 0: connection error PROTOCOL_ERROR (6.1).
    let mut r = Raw::connect(gw.addr());
    r.send(DATA, 0, 0, b"x");
    assert_eq!(r.until(GOAWAY, None).unwrap().code(), PROTOCOL_ERROR);
    assert_eq!(up.count(), 1);
}

#[test]
fn a_request_that_names_no_host_is_answered_400() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let mut r = Raw::connect(gw.addr());
    // GET /a with :method, :scheme and :path only: no :authority and no host field.
    let mut b = vec![0x82, 0x86, 0x04, 2];
    b.extend_from_slice(b"/a");
    r.send(HEADERS, END_HEADERS | END_STREAM, 1, &b);
    let h = r.until(HEADERS, Some(1)).unwrap();
    assert_eq!(h.payload[0], 0x8c, "an indexed :status 400");
    let body = r.until(DATA, Some(1)).unwrap();
    assert_eq!(body.payload, br#"{"message":"Bad Request"}"#);
    // The connection still serves a good request; the bad one never reached the upstream.
    r.send(HEADERS, END_HEADERS | END_STREAM, 3, &block("/c", &[]));
    let h = r.until(HEADERS, Some(3)).unwrap();
    assert_eq!(h.payload[0], 0x88, "an indexed :status 200");
    assert_eq!(up.count(), 1);
}

#[test]
fn bodies_already_whole_go_upstream_with_their_length() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let mut r = Raw::connect(gw.addr());
    let seen = |r: &mut Raw, id: u32| -> serde_json::Value {
        serde_json::from_slice(&r.until(DATA, Some(id)).unwrap().payload).unwrap()
    };
    // A GET whose stream is ended by an empty DATA frame, no content-length: no body.
    let mut frames = Raw::frame(HEADERS, END_HEADERS, 1, &block("/e", &[]));
    frames.extend(Raw::frame(DATA, END_STREAM, 1, b""));
    r.flood(&frames);
    let v = seen(&mut r, 1);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["body"], "");
    assert!(v["headers"].get("transfer-encoding").is_none(), "{v}");
    assert!(v["headers"].get("content-length").is_none(), "{v}");
    // A body in frames that came with the HEADERS, ended, without content-length: sent with
    // its length, not chunked.
    let mut b = block("/w", &[]);
    b[0] = 0x83; // :method POST
    let mut frames = Raw::frame(HEADERS, END_HEADERS, 3, &b);
    frames.extend(Raw::frame(DATA, 0, 3, b"hel"));
    frames.extend(Raw::frame(DATA, END_STREAM, 3, b"lo"));
    r.flood(&frames);
    let v = seen(&mut r, 3);
    assert_eq!(v["body"], "hello");
    assert_eq!(v["headers"]["content-length"], "5", "{v}");
    assert!(v["headers"].get("transfer-encoding").is_none(), "{v}");
    // A body whose end comes later streams chunked, the frames read ahead included (the
    // last frame is sent apart: whether it is seen with the HEADERS or not, nothing is lost).
    let mut frames = Raw::frame(HEADERS, END_HEADERS, 5, &b);
    frames.extend(Raw::frame(DATA, 0, 5, b"ab"));
    r.flood(&frames);
    r.send(DATA, END_STREAM, 5, b"cd");
    let v = seen(&mut r, 5);
    assert_eq!(v["body"], "abcd");
    assert_eq!(up.count(), 3);
}

/// Sends `frames` after the handshake and expects GOAWAY ENHANCE_YOUR_CALM, counted under
/// `kind`.
fn expect_calm(http2: &str, frames: Vec<u8>, kind: &str) {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "", http2, ""));
    let mut r = Raw::connect(gw.addr());
    r.flood(&frames);
    let g = r.until(GOAWAY, None).expect("GOAWAY");
    assert_eq!(g.code(), ENHANCE_YOUR_CALM);
    assert!(metric_reaches(
        &gw,
        "tollgate_http2_floods_total",
        &format!("kind=\"{kind}\""),
        1
    ));
    // Other clients are served.
    rt().block_on(async {
        let mut c = connect(gw.addr()).await;
        assert_eq!(get(&mut c, "/fine").await.status, 200);
    });
}

#[test]
fn ping_floods_end_with_enhance_your_calm() {
    let mut f = Vec::new();
    for i in 0..200u64 {
        f.extend(Raw::frame(PING, 0, 0, &i.to_be_bytes()));
    }
    expect_calm(
        "control_frames_burst = 50\ncontrol_frames_per_second = 1",
        f,
        "control",
    );
}

#[test]
fn unsolicited_ping_ack_floods_end_with_enhance_your_calm() {
    let mut f = Vec::new();
    for i in 0..200u64 {
        f.extend(Raw::frame(PING, 1, 0, &i.to_be_bytes()));
    }
    expect_calm(
        "control_frames_burst = 50\ncontrol_frames_per_second = 1",
        f,
        "control",
    );
}

#[test]
fn settings_floods_end_with_enhance_your_calm() {
    let mut f = Vec::new();
    for _ in 0..200 {
        f.extend(Raw::frame(SETTINGS, 0, 0, &[]));
    }
    expect_calm(
        "control_frames_burst = 50\ncontrol_frames_per_second = 1",
        f,
        "control",
    );
}

#[test]
fn rapid_reset_ends_with_enhance_your_calm() {
    let mut f = Vec::new();
    for i in 0..100u32 {
        let id = 2 * i + 1;
        f.extend(Raw::frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &block("/r", &[]),
        ));
        f.extend(Raw::frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    expect_calm("resets_burst = 20\nresets_per_second = 1", f, "reset");
}

#[test]
fn continuation_floods_end_with_enhance_your_calm() {
    let mut f = Raw::frame(HEADERS, 0, 1, &[0x82]);
    for _ in 0..40 {
        f.extend(Raw::frame(CONTINUATION, 0, 1, &[]));
    }
    expect_calm("", f, "continuation");
}

/// The h2 library's own limits, tighter than the watch's on some counts, end a connection
/// with its GOAWAY: counted and said as the watch's are (they went unseen). A header block
/// in 7 CONTINUATIONs (the library takes 5 with the default sizes), and 110 empty DATA frames
/// that end no stream (it takes 100 in a connection's life).
#[test]
fn floods_the_h2_library_refuses_are_counted_too() {
    let mut f = Raw::frame(HEADERS, 0, 1, &[0x82]);
    for _ in 0..7 {
        f.extend(Raw::frame(CONTINUATION, 0, 1, &[]));
    }
    expect_calm("", f, "continuation");
    let mut f = Raw::frame(HEADERS, END_HEADERS, 1, &block("/d", &[]));
    for _ in 0..110 {
        f.extend(Raw::frame(DATA, 0, 1, &[]));
    }
    expect_calm("", f, "control");
}

#[test]
fn window_update_floods_end_with_enhance_your_calm() {
    // No DATA was sent to this client: only the first hundred are its due.
    let mut f = Vec::new();
    for _ in 0..2000 {
        f.extend(Raw::frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()));
    }
    expect_calm("", f, "window_update");
}

#[test]
fn a_window_update_allowance_out_of_range_is_refused_by_key() {
    let up = Upstream::echo();
    let (ok, out) = check_config(&conf(up.addr, "", "window_updates_per_data_frame = 0", ""));
    assert!(!ok, "{out}");
    assert!(out.contains("window_updates_per_data_frame"), "{out}");
}

#[test]
fn a_client_that_gives_window_back_for_every_data_frame_is_served() {
    // 1.5 MB in ~100 DATA frames; the client gives each frame's bytes back to the stream and
    // to the connection (two WINDOW_UPDATEs a frame, past the first hundred's allowance).
    let body = "x".repeat(1_500_000);
    let up = Upstream::start(move |_| respond(200, &body));
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    let mut r = Raw::connect(gw.addr());
    let mut updates = 0;
    for id in [1u32, 3] {
        r.send(HEADERS, END_HEADERS | END_STREAM, id, &block("/big", &[]));
        let mut got = 0;
        loop {
            let f = r.read().expect("a frame, not the end");
            assert_ne!(
                f.kind,
                GOAWAY,
                "GOAWAY {:#x} after {updates} updates",
                f.code()
            );
            if f.kind != DATA || f.stream != id {
                continue;
            }
            got += f.payload.len();
            if !f.payload.is_empty() {
                let inc = (f.payload.len() as u32).to_be_bytes();
                r.send(WINDOW_UPDATE, 0, id, &inc);
                r.send(WINDOW_UPDATE, 0, 0, &inc);
                updates += 2;
            }
            if f.flags & END_STREAM != 0 {
                break;
            }
        }
        assert_eq!(got, 1_500_000);
    }
    assert!(updates > 200, "{updates}");
}

#[test]
fn an_idle_connection_is_closed_with_goaway_no_error() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "idle_timeout = \"300ms\"", "", ""));
    let mut r = Raw::connect(gw.addr());
    r.send(HEADERS, END_HEADERS | END_STREAM, 1, &block("/a", &[]));
    assert!(r.until(HEADERS, Some(1)).is_some());
    let g = r.until(GOAWAY, None).expect("GOAWAY after idle_timeout");
    assert_eq!(g.code(), 0, "NO_ERROR");
}

// --- TLS: ALPN with real clients -------------------------------------------------------------

fn tls_conf(up: SocketAddr, alpn: &str, mtls: &str) -> String {
    Cfg::new()
        .listeners(format!(
            r#"
[[listeners]]
name = "https"
addr = "127.0.0.1:0"
tls = {{ cert = "server.pem", key = "server.key" }}
{alpn}
{mtls}
"#
        ))
        .route(
            "ANY /{proxy+}",
            format!("integration = {{ type = \"http\", uri = \"http://{up}/{{proxy}}\" }}"),
        )
        .route(
            "GET /whoami",
            r#"integration = { type = "mock", status = 200, body = "dn=${context.identity.clientCert.subjectDN} ip=${context.identity.sourceIp}" }"#,
        )
        .toml()
}

/// Starts a TLS gateway for `api.test`; returns it and the CA file's path.
fn tls_gateway(up: SocketAddr, alpn: &str, mtls: &str, ca: &Ca) -> (Gw, std::path::PathBuf) {
    let dir = TempDir::new();
    let (c, k, _) = ca.leaf(&["api.test"], false);
    write_pair(&dir, "server", &c, &k);
    let ca_path = dir.0.join("ca.pem");
    std::fs::write(&ca_path, ca.cert.pem()).unwrap();
    let gw = Gw::start_in(dir, &tls_conf(up, alpn, mtls));
    (gw, ca_path)
}

fn https(gw: &Gw) -> SocketAddr {
    gw.gw.as_ref().unwrap().addr("https").unwrap()
}

/// curl, resolving api.test to the gateway. Returns (protocol version, status, body).
fn curl(gw: &Gw, ca: &std::path::Path, path: &str, extra: &[&str]) -> (String, String, String) {
    let a = https(gw);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("api.test:{}:127.0.0.1", a.port())])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .args(extra)
        .arg(format!("https://api.test:{}{path}", a.port()))
        .output()
        .expect("curl (apt install curl)");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').unwrap();
    let (ver, code) = tail.split_once(' ').unwrap();
    (ver.to_string(), code.to_string(), body.to_string())
}

#[test]
fn alpn_offers_h2_and_curl_uses_it() {
    let up = Upstream::echo();
    let ca = Ca::new();
    let (gw, ca_path) = tls_gateway(up.addr, "", "", &ca);
    let (ver, code, body) = curl(&gw, &ca_path, "/over/h2?x=1", &[]);
    assert_eq!((ver.as_str(), code.as_str()), ("2", "200"));
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["target"], "/over/h2?x=1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    // A POST body over TLS and HTTP/2.
    let (ver, code, body) = curl(&gw, &ca_path, "/post", &["--data-binary", "hello over h2"]);
    assert_eq!((ver.as_str(), code.as_str()), ("2", "200"));
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["body"], "hello over h2");
}

#[test]
fn alpn_http11_only_turns_h2_off() {
    let up = Upstream::echo();
    let ca = Ca::new();
    let (gw, ca_path) = tls_gateway(up.addr, "alpn = [\"http/1.1\"]", "", &ca);
    let (ver, code, _) = curl(&gw, &ca_path, "/x", &[]);
    assert_eq!((ver.as_str(), code.as_str()), ("1.1", "200"));
}

#[test]
fn h2load_multiplexes_over_tls() {
    let up = Upstream::echo();
    let ca = Ca::new();
    let (gw, _) = tls_gateway(up.addr, "", "", &ca);
    let out = Command::new("h2load")
        .args(["-n", "400", "-c", "2", "-m", "20", "--connect-to"])
        .arg(https(&gw).to_string())
        .arg(format!("https://api.test:{}/load", https(&gw).port()))
        .output()
        .expect("h2load (apt install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("400 succeeded, 0 failed"),
        "h2load: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert_eq!(up.count(), 400);
}

#[test]
fn mtls_client_certificates_reach_the_upstream_over_h2() {
    let up = Upstream::echo();
    let ca = Ca::new();
    let clients = Ca::new();
    let dir_probe = TempDir::new();
    let (cc, ck, _) = clients.leaf(&["client-a.test"], false);
    write_pair(&dir_probe, "client", &cc, &ck);
    let dir = TempDir::new();
    std::fs::write(dir.0.join("clients.pem"), clients.cert.pem()).unwrap();
    let (c, k, _) = ca.leaf(&["api.test"], false);
    write_pair(&dir, "server", &c, &k);
    let ca_path = dir.0.join("ca.pem");
    std::fs::write(&ca_path, ca.cert.pem()).unwrap();
    let mtls = "mtls = { client_ca = \"clients.pem\", mode = \"required\", headers = { \"x-client-subject\" = \"subjectDN\" } }";
    let gw = Gw::start_in(dir, &tls_conf(up.addr, "", mtls));
    let cert = dir_probe.0.join("client.pem");
    let key = dir_probe.0.join("client.key");
    let (ver, code, body) = curl(
        &gw,
        &ca_path,
        "/who",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "-H",
            "x-client-subject: forged",
        ],
    );
    assert_eq!((ver.as_str(), code.as_str()), ("2", "200"));
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["headers"]["x-client-subject"], "CN=client-a.test");
    // Templates read the certificate too ($context.identity.clientCert).
    let id = [
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ];
    let (_, code, body) = curl(&gw, &ca_path, "/whoami", &id);
    assert_eq!(code, "200");
    assert_eq!(body, "dn=CN=client-a.test ip=127.0.0.1");
    // Without a certificate: 403 over HTTP/2 too, the upstream not reached.
    let (ver, code, body) = curl(&gw, &ca_path, "/who", &[]);
    assert_eq!(
        (ver.as_str(), code.as_str(), body.as_str()),
        ("2", "403", "{\"message\":\"Forbidden\"}")
    );
}

#[test]
fn oversized_header_lists_are_refused() {
    let up = Upstream::echo();
    let gw = Gw::start(&conf(up.addr, "max_header_bytes = \"4KiB\"", "", ""));
    let addr = gw.addr();
    let big = "x".repeat(6000);
    rt().block_on(async move {
        let mut c = connect(addr).await;
        let req = http::Request::get("http://api.test/big")
            .header("x-big", big.as_str())
            .body(())
            .unwrap();
        let mut ready = c.clone().ready().await.unwrap();
        let (resp, _) = ready.send_request(req, true).unwrap();
        // Past max_header_bytes the stream gets 431, as over HTTP/1.1 (the gateway's JSON and
        // request id), and the connection goes on.
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 431);
        assert!(resp.headers().contains_key("x-request-id"), "{resp:?}");
        assert_eq!(get(&mut c, "/small").await.status, 200);
        // More fields than the parser takes, each small: 431 too (it was a PROTOCOL_ERROR
        // reset), as over HTTP/1.1.
        let mut req = http::Request::get("http://api.test/many");
        for i in 0..200 {
            req = req.header(format!("x-h{i}"), "v");
        }
        let mut ready = c.clone().ready().await.unwrap();
        let (resp, _) = ready.send_request(req.body(()).unwrap(), true).unwrap();
        assert_eq!(resp.await.unwrap().status(), 431);
        // A path that alone passes the limit: 414, as over HTTP/1.1.
        let long = format!("http://api.test/{}", "p".repeat(5000));
        let mut ready = c.clone().ready().await.unwrap();
        let (resp, _) = ready
            .send_request(http::Request::get(long).body(()).unwrap(), true)
            .unwrap();
        assert_eq!(resp.await.unwrap().status(), 414);
        assert_eq!(get(&mut c, "/small").await.status, 200);
    });
    assert_eq!(
        up.requests().iter().filter(|s| s.target == "/big").count(),
        0
    );
}

#[test]
fn draining_finishes_open_streams_and_says_goaway() {
    let up = Upstream::start(|s| {
        if s.target == "/slow" {
            Action::Sleep(Duration::from_millis(300))
        } else {
            respond(200, "ok")
        }
    });
    let mut gw = Gw::start(&conf(up.addr, "", "", ""));
    let addr = gw.addr();
    let seen = up.seen.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    // Once the request is at the upstream, the gateway starts draining.
    let stopper = std::thread::spawn(move || {
        rx.recv().unwrap();
        gw.shutdown();
    });
    rt().block_on(async move {
        let c = connect(addr).await;
        let mut ready = c.clone().ready().await.unwrap();
        let req = http::Request::get("http://api.test/slow").body(()).unwrap();
        let (resp, _) = ready.send_request(req, true).unwrap();
        while seen.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send(()).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(read_body(resp.into_body()).await, b"slow");
        // No new stream is taken after the GOAWAY.
        let refused = match c.clone().ready().await {
            Err(_) => true,
            Ok(mut r) => {
                let req = http::Request::get("http://api.test/late").body(()).unwrap();
                match r.send_request(req, true) {
                    Err(_) => true,
                    Ok((f, _)) => f.await.is_err(),
                }
            }
        };
        assert!(refused, "a stream opened after GOAWAY was served");
    });
    stopper.join().unwrap();
    assert_eq!(up.count(), 1);
}

/// A stream reset part way through its answer's body is counted with the status its head
/// carried (as a cut HTTP/1.1 answer is), not as 499: the client had the 200.
#[test]
fn a_stream_reset_mid_body_keeps_its_status() {
    // An upstream that sends the head and part of the body, then waits: the reset comes
    // while the gateway waits for more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in listener.incoming().take(2) {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).starts_with("GET /other") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    return;
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
                let _ = s.write_all(&[b'x'; 1000]);
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    let gw = Gw::start(&conf(up_addr, "", "", ""));
    let addr = gw.addr();
    rt().block_on(async move {
        let c = connect(addr).await;
        let mut ready = c.clone().ready().await.unwrap();
        let req = http::Request::get("http://api.test/big").body(()).unwrap();
        let (resp, _send) = ready.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = body.data().await.unwrap().unwrap();
        assert!(!first.is_empty());
        // Dropping the body before its end resets the stream (CANCEL).
        drop(body);
        let mut c2 = c.clone();
        assert_eq!(get(&mut c2, "/other").await.status, 200);
    });
    assert!(metric_reaches(
        &gw,
        "tollgate_responses_total",
        "class=\"2xx\"",
        2
    ));
    assert_eq!(metric(&gw, "tollgate_responses_total", "class=\"4xx\""), 0);
}

/// A client's own copy of a header that `mtls.headers` names is dropped on an h2c listener as
/// on every other (it reached the upstream as sent: a client on the plain listener could
/// claim any certificate subject the upstream trusts).
#[test]
fn certificate_headers_a_client_sends_over_h2c_are_dropped() {
    let up = Upstream::echo();
    let ca = Ca::new();
    let clients = Ca::new();
    let dir = TempDir::new();
    std::fs::write(dir.0.join("clients.pem"), clients.cert.pem()).unwrap();
    let (c, k, _) = ca.leaf(&["api.test"], false);
    write_pair(&dir, "server", &c, &k);
    let mtls = "mtls = { client_ca = \"clients.pem\", mode = \"optional\", headers = { \"x-client-subject\" = \"subjectDN\" } }\n\n[[listeners]]\nname = \"plain\"\naddr = \"127.0.0.1:0\"\nh2c = true\n";
    let gw = Gw::start_in(dir, &tls_conf(up.addr, "", mtls));
    let plain = gw.gw.as_ref().unwrap().addr("plain").unwrap();
    for flag in ["--http2-prior-knowledge", "--http1.1"] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", flag])
            .args(["-H", "x-client-subject: CN=admin"])
            .arg(format!("http://127.0.0.1:{}/who", plain.port()))
            .output()
            .expect("curl (apt install curl)");
        assert!(
            out.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let echo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            echo["headers"].get("x-client-subject").is_none(),
            "{flag}: {echo}"
        );
    }
}

/// An upstream answer with as many header lines as the gateway takes reaches an HTTP/2
/// client as it reaches an HTTP/1.1 one: the fields the gateway adds (request id, CORS, rate
/// limit...) took the head past the parser's count, and the stream was reset (logged as the
/// client's abort).
#[test]
fn an_answer_with_many_header_lines_reaches_an_http2_client() {
    let up = Upstream::start(|_| {
        let mut head = String::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n");
        for i in 0..126 {
            head.push_str(&format!("x-h-{i}: v{i}\r\n"));
        }
        head.push_str("\r\nok");
        Action::Raw(head.into_bytes())
    });
    let gw = Gw::start(&conf(up.addr, "", "", ""));
    for flag in ["--http2-prior-knowledge", "--http1.1"] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-D", "-", flag])
            .arg(format!("http://{}/many", gw.addr()))
            .output()
            .expect("curl (apt install curl)");
        assert!(
            out.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.matches("x-h-").count(), 126, "{flag}: {text}");
        assert!(text.ends_with("ok"), "{flag}: {text}");
    }
}

/// Answers held whole to be compressed stay within the shard's `limits.body_memory`: while a
/// client that takes nothing (a zero flow-control window) pins one large compressed answer,
/// the next goes uncompressed (still saying it varies by Accept-Encoding) rather than
/// pinning another (1,000s of such streams took gigabytes).
#[test]
fn answers_held_for_compression_stay_within_the_shards_budget() {
    // Poorly compressible JSON text (base64 of pseudo-random bytes), 600 KiB.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text: String = (0..600 << 10)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % 64) as usize] as char
        })
        .collect();
    let body = format!("\"{text}\"");
    let up = Upstream::start(move |_| {
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let gw = Gw::start(&conf(
        up.addr,
        "body_memory = \"1MiB\"",
        "",
        "compression = { min_size = \"1KiB\", max_size = \"1MiB\" }",
    ));
    let addr = gw.addr();
    rt().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let head = |path: &str| {
            let c = client.clone();
            let req = http::Request::builder()
                .uri(format!("http://api.test{path}"))
                .header("accept-encoding", "gzip")
                .body(())
                .unwrap();
            async move {
                let mut c = c.ready().await.unwrap();
                let (resp, _) = c.send_request(req, true).unwrap();
                resp.await.unwrap()
            }
        };
        // The first is compressed, and held: its client takes none of it.
        let first = head("/a").await;
        assert_eq!(first.headers().get("content-encoding").unwrap(), "gzip");
        let second = head("/b").await;
        assert_eq!(second.status(), 200);
        assert_eq!(second.headers().get("content-encoding"), None);
        assert!(second
            .headers()
            .get("vary")
            .unwrap()
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("accept-encoding"));
        drop((first, second));
    });
}

/// With `limits.body_memory = "1MiB"` and a route whose integration (answering `body` bytes)
/// has `responses`: a first request whose HTTP/2 client takes nothing holds its answer, and
/// a second gets what the budget leaves. The first's head and the second's status.
fn held_then_next(body: usize, responses: &str) -> (http::HeaderMap, u16) {
    let body = "x".repeat(body);
    let up = Upstream::start(move |_| {
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let gw = Gw::start(
        &Cfg::new()
            .listener("h2c = true")
            .limits("body_memory = \"1MiB\"")
            .route(
                "GET /{p}",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://{}/x\", responses = [ {responses} ] }}",
                    up.addr
                ),
            )
            .toml(),
    );
    let addr = gw.addr();
    rt().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let head = |path: &str| {
            let c = client.clone();
            let req = http::Request::builder()
                .uri(format!("http://api.test{path}"))
                .body(())
                .unwrap();
            async move {
                let mut c = c.ready().await.unwrap();
                let (resp, _) = c.send_request(req, true).unwrap();
                resp.await.unwrap()
            }
        };
        // The first is held: its client takes none of it.
        let first = head("/a").await;
        assert_eq!(first.status(), 200);
        let second = head("/b").await;
        (first.headers().clone(), second.status().as_u16())
    })
}

/// An integration answer read whole for its `responses` is held within the shard's
/// `limits.body_memory` too: while a client that takes nothing pins one, the next that would
/// pass the budget gets 503 (slow clients each pinned up to three copies of a 10 MiB answer).
#[test]
fn answers_read_whole_for_integration_responses_stay_within_the_shards_budget() {
    let (first, second) = held_then_next(600 << 10, "{ headers = { \"x-a\" = \"'s'\" } }");
    assert_eq!(first.get("x-a").unwrap(), "s");
    assert_eq!(second, 503);
}

/// A template that writes more than the answer it read holds what it wrote: the budget
/// counts the rendered answer whole (it counted twice the upstream's, whatever the template
/// made of it): 1.2 MiB rendered from 200 KiB.
#[test]
fn rendered_answers_larger_than_their_source_count_whole() {
    let (_, second) = held_then_next(
        200 << 10,
        "{ templates = { \"text/plain\" = \"#foreach($i in [1..6])$input.body#end\" } }",
    );
    assert_eq!(second, 503);
}
