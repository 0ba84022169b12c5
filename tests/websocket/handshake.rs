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
