//! Headers between the client and `$connect`'s integration: what the client sends reaches the
//! integration as an http route's request would (no `_` names by default, none that spell the
//! gateway's own), and the integration's refusal reaches the client with its headers.

use super::*;

/// `$connect` records what reaches it and accepts.
fn recording_gateway(limits: &str) -> (Upstream, Gw) {
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = Gw::start(
        &Cfg::new()
            .limits(limits)
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n",
            )
            .toml(),
    );
    (up, g)
}

const FORGED: [(&str, &str); 5] = [
    ("X_Source_Ip", "6.6.6.6"),
    ("X_Connection_Id", "forged-id"),
    ("X_Authorizer_Principal_Id", "admin"),
    ("X_Event_Type", "DISCONNECT"),
    ("X_Tenant", "under"),
];

#[test]
fn underscore_header_names_do_not_reach_connect_by_default() {
    let (up, g) = recording_gateway("");
    let _ws = open_with(&g, &FORGED).unwrap();
    let seen = up.requests();
    let c = seen.iter().find(|s| s.target == "/connect").unwrap();
    let underscored: Vec<_> = c.headers.iter().filter(|(n, _)| n.contains('_')).collect();
    assert!(underscored.is_empty(), "{underscored:?}");
    assert_eq!(c.headers_named("x-source-ip"), vec!["127.0.0.1"]);
    assert_eq!(c.headers_named("x-event-type"), vec!["CONNECT"]);
    assert_eq!(c.headers_named("x-connection-id").len(), 1);
    assert!(c.header("x-authorizer-principal-id").is_none());
}

#[test]
fn allowed_underscore_names_that_spell_the_gateways_own_are_left_out() {
    let (up, g) = recording_gateway("underscores_in_headers = \"allow\"");
    let _ws = open_with(&g, &FORGED).unwrap();
    let seen = up.requests();
    let c = seen.iter().find(|s| s.target == "/connect").unwrap();
    // Others' `_` names are forwarded, as "allow" says; the gateway's, spelt with `_`, not.
    assert_eq!(c.header("x_tenant"), Some("under"));
    for (n, _) in &FORGED[..4] {
        assert!(c.header(n).is_none(), "{n} reached $connect");
    }
    assert_eq!(c.headers_named("x-source-ip"), vec!["127.0.0.1"]);
}

#[test]
fn rejected_underscore_names_refuse_the_upgrade() {
    let (up, g) = recording_gateway("underscores_in_headers = \"reject\"");
    let Err(e) = open_with(&g, &FORGED[..1]) else {
        panic!("upgraded with an underscore header name");
    };
    assert!(e.contains("400"), "{e}");
    assert!(!up.requests().iter().any(|s| s.target == "/connect"));
}

#[test]
fn a_connect_refusal_reaches_the_client_with_its_headers() {
    let up = Upstream::start(|s| {
        let (status, extra) = if s.target.contains("login") {
            (302, "Location: https://login.test/\r\n")
        } else {
            (
                401,
                "WWW-Authenticate: Bearer realm=\"chat\"\r\nRetry-After: 7\r\n",
            )
        };
        Action::Raw(
            format!(
                "HTTP/1.1 {status} No\r\n{extra}Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Type: text/html\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nContent-Length: 4\r\n\r\nnope"
            )
            .into_bytes(),
        )
    });
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n",
            )
            .toml(),
    );
    let upgrade = |query: &str| {
        format!(
            "GET /{query} HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .into_bytes()
    };
    let r = Client::connect(g.addr()).request(&upgrade("?login=1"));
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.header("location"), Some("https://login.test/"));
    let r = Client::connect(g.addr()).request(&upgrade(""));
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"chat\""));
    assert_eq!(r.header("retry-after"), Some("7"));
    let named = |n: &str| -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(named("set-cookie"), vec!["a=1", "b=2"]);
    // The backend's type, once; not its hop-by-hop headers, framing or request id.
    assert_eq!(named("content-type"), vec!["text/html"]);
    assert_eq!(named("content-length"), vec!["4"]);
    assert!(r.header("x-hop").is_none() && r.header("keep-alive").is_none());
    assert_ne!(r.header("x-request-id"), Some("theirs"));
    assert_eq!(r.text(), "nope");
}
