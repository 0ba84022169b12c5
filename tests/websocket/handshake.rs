//! The upgrade request: what `$connect` answers when its integration times out, and the
//! requests RFC 6455 and RFC 9110 do not let upgrade.

use super::*;

/// A raw upgrade request to `/` with `extra` header lines (each ending in CRLF), a body after.
fn upgrade(version: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "GET / {version}\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[test]
fn a_connect_integration_that_times_out_is_504() {
    let up = Upstream::start(|s| {
        if s.target == "/connect" {
            // Well past the route's timeout.
            return Action::Sleep(Duration::from_secs(5));
        }
        respond(200, "{}")
    });
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\", timeout = \"200ms\" }\n",
            )
            .toml(),
    );
    let r = Client::connect(g.addr()).request(&upgrade("HTTP/1.1", KEY, b""));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json(), json!({"message": "Endpoint request timed out"}));
}

#[test]
fn a_connect_integration_that_cannot_be_reached_in_time_is_504() {
    let (addr, _listener, _queued) = unanswering_port();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"chat\"\ntargets = [\"{addr}\"]\nconnect_timeout = \"200ms\"\n"
            ))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\", timeout = \"20s\" }\n",
            )
            .toml(),
    );
    let r = Client::connect(g.addr()).request(&upgrade("HTTP/1.1", KEY, b""));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json(), json!({"message": "Endpoint request timed out"}));
}

/// An API whose `$connect` integration records what reaches it.
fn recording() -> (Gw, Upstream) {
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n\
                 [[apis.routes]]\nroute = \"$default\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = 'x' }\n",
            )
            .toml(),
    );
    (g, up)
}

#[test]
fn an_http_1_0_request_does_not_upgrade() {
    let (g, up) = recording();
    // RFC 6455 4.1 asks for HTTP/1.1; RFC 9110 7.8 has Upgrade ignored in HTTP/1.0: the
    // request is answered as one without an upgrade is.
    let r = Client::connect(g.addr()).request(&upgrade("HTTP/1.0", KEY, b""));
    assert_eq!(r.status, 426, "{}", r.text());
    assert_eq!(r.json(), json!({"message": "Upgrade Required"}));
    assert_eq!(up.count(), 0);
    // The same request in HTTP/1.1 upgrades.
    let r = Client::connect(g.addr()).request(&upgrade("HTTP/1.1", KEY, b""));
    assert_eq!(r.status, 101, "{}", r.text());
}

#[test]
fn an_upgrade_request_with_a_body_is_400_before_connect() {
    let (g, up) = recording();
    // A body that is a masked text frame: not read as the client's first message.
    let frame = super::waiting::frames(&[r#"{"action":"sendmessage","x":1}"#]);
    let r = Client::connect(g.addr()).request(&upgrade(
        "HTTP/1.1",
        &format!("{KEY}Content-Length: {}\r\n", frame.len()),
        &frame,
    ));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"message": "An upgrade request has no body"})
    );
    let chunked = format!("{:x}\r\n", frame.len()).into_bytes();
    let chunked = [&chunked[..], &frame, b"\r\n0\r\n\r\n"].concat();
    let r = Client::connect(g.addr()).request(&upgrade(
        "HTTP/1.1",
        &format!("{KEY}Transfer-Encoding: chunked\r\n"),
        &chunked,
    ));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(up.count(), 0, "$connect was called");
    // An empty one is no body.
    let r = Client::connect(g.addr()).request(&upgrade(
        "HTTP/1.1",
        &format!("{KEY}Content-Length: 0\r\n"),
        b"",
    ));
    assert_eq!(r.status, 101, "{}", r.text());
}

#[test]
fn a_repeated_key_is_400_and_426_has_its_reason_phrase() {
    let (g, up) = recording();
    // RFC 6455 11.3.1: Sec-WebSocket-Key must not appear more than once.
    let r = Client::connect(g.addr()).request(&upgrade("HTTP/1.1", &format!("{KEY}{KEY}"), b""));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"message": "Sec-WebSocket-Key appears more than once"})
    );
    assert_eq!(up.count(), 0, "$connect was called");
    // So must Sec-WebSocket-Version (RFC 6455 11.3.5).
    let r = Client::connect(g.addr()).request(&upgrade(
        "HTTP/1.1",
        &format!("{KEY}Sec-WebSocket-Version: 8\r\n"),
        b"",
    ));
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"message": "Sec-WebSocket-Version appears more than once"})
        )
    );
    assert_eq!(up.count(), 0, "$connect was called");
    // A request that is not an upgrade: the status line says what 426 is.
    let mut c = Client::connect(g.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: chat.test\r\nConnection: close\r\n\r\n");
    let raw = String::from_utf8(c.read_to_end()).unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{raw}"
    );
    // RFC 9110 7.8: the Upgrade it sends is named in Connection.
    let lower = raw.to_ascii_lowercase();
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{raw}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{raw}");
    assert!(lower.contains("\r\nconnection: close\r\n"), "{raw}");
}

#[test]
fn the_api_is_at_its_base_path_or_stage_and_takes_an_upgrade_list() {
    let (g, up) = recording();
    let raw = |path: &str, upgrade: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: chat.test\r\nUpgrade: {upgrade}\r\nConnection: Upgrade, HTTP2-Settings\r\nSec-WebSocket-Version: 13\r\n{KEY}\r\n"
        )
        .into_bytes()
    };
    // Another path under the API's is not the API: no $connect, no connection.
    for path in ["/foo/bar", "/foo", "/prod/x"] {
        let r = Client::connect(g.addr()).request(&raw(path, "websocket"));
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    assert_eq!(up.count(), 0, "$connect was called");
    // The stage after the base path is the API (Amazon's `wss://host/{stage}`).
    for path in ["/", "/prod", "/prod/"] {
        let r = Client::connect(g.addr()).request(&raw(path, "websocket"));
        assert_eq!(r.status, 101, "{path}: {}", r.text());
    }
    // RFC 9110 7.8: a list that offers WebSocket among others.
    let r = Client::connect(g.addr()).request(&raw("/", "h2c, websocket"));
    assert_eq!(r.status, 101, "{}", r.text());
    let r = Client::connect(g.addr()).request(&raw("/", "h2c"));
    assert_eq!(r.status, 426, "{}", r.text());
    // `@connections` under a stage the mapping does not serve: not found, not 426.
    let r = Client::connect(g.addr()).request(
        b"POST /dev/@connections/abc HTTP/1.1\r\nHost: chat.test\r\nContent-Length: 1\r\n\r\nx",
    );
    assert_eq!(r.status, 404, "{}", r.text());
}
