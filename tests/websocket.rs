//! WebSocket APIs (`kind = "websocket"`), with a real client (tungstenite): `$connect` runs
//! before the upgrade (its integration's refusal refuses it), messages are routed by the
//! route selection expression to http and mock integrations, two-way routes answer on the
//! socket, unknown keys go to `$default` (or get Amazon's "Forbidden" message), protocol
//! violations close with RFC 6455's codes, and `$disconnect` hears how the connection ended.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use common::*;

#[path = "websocket/closing.rs"]
mod closing;
#[path = "websocket/handshake.rs"]
mod handshake;
#[path = "websocket/headers.rs"]
mod headers;
#[path = "websocket/plans.rs"]
mod plans;
#[path = "websocket/waiting.rs"]
mod waiting;

fn backend() -> Upstream {
    Upstream::start(|s| {
        if s.target.starts_with("/connect") && s.target.contains("deny=1") {
            return respond(403, r#"{"message":"go away"}"#);
        }
        if s.target.starts_with("/connect") && s.target.contains("slow=1") {
            return Action::Sleep(std::time::Duration::from_millis(50));
        }
        let seen = json!({
            "target": s.target,
            "event": s.header("x-event-type"),
            "route": s.header("x-route-key"),
            "connection": s.header("x-connection-id"),
            "stage": s.header("x-stage"),
            "body": String::from_utf8_lossy(&s.body),
        });
        respond(200, &seen.to_string())
    })
}

fn gateway(up: &Upstream, with_default: bool) -> Gw {
    let default = if with_default {
        "[[apis.routes]]\nroute = \"$default\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"message\":\"unknown action\"}' }\n"
    } else {
        ""
    };
    Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"\nroute_selection_expression = \"${request.body.action}\"")
            .routes(format!(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = {{ type = \"http\", uri = \"http://chat/connect\" }}\n\
                 [[apis.routes]]\nroute = \"sendmessage\"\nroute_response = true\nintegration = {{ type = \"http\", uri = \"http://chat/message\" }}\n\
                 [[apis.routes]]\nroute = \"quiet\"\nintegration = {{ type = \"http\", uri = \"http://chat/quiet\" }}\n\
                 [[apis.routes]]\nroute = \"ping\"\nroute_response = true\nintegration = {{ type = \"mock\", status = 200, body = '{{\"pong\":true}}' }}\n\
                 [[apis.routes]]\nroute = \"$disconnect\"\nintegration = {{ type = \"http\", uri = \"http://chat/disconnect\" }}\n{default}"
            ))
            .toml(),
    )
}

fn open(g: &Gw, query: &str) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    let stream = TcpStream::connect(g.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tungstenite::client(format!("ws://chat.test/{query}"), stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("interrupted handshake"),
        })
}

/// An upgrade carrying extra request headers: the socket and the gateway's answer.
fn open_with(
    g: &Gw,
    headers: &[(&str, &str)],
) -> Result<
    (
        WebSocket<TcpStream>,
        tungstenite::handshake::client::Response,
    ),
    String,
> {
    use tungstenite::client::IntoClientRequest;
    let stream = TcpStream::connect(g.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = "ws://chat.test/".into_client_request().unwrap();
    for (n, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    tungstenite::client(req, stream).map_err(|e| format!("{e:?}"))
}

fn next_text(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn messages_are_routed_by_their_key_and_two_way_routes_answer() {
    let up = backend();
    let g = gateway(&up, true);
    let mut ws = open(&g, "?user=ann").expect("upgrade");
    // $connect reached the integration with the client's query, before the 101.
    let connect = up.requests();
    let c = connect
        .iter()
        .find(|s| s.target.starts_with("/connect"))
        .unwrap();
    assert_eq!(c.target, "/connect?user=ann");
    assert_eq!(c.header("x-event-type"), Some("CONNECT"));
    let id = c.header("x-connection-id").unwrap().to_string();
    assert!(id.len() >= 16, "{id}");

    ws.send(Message::text(r#"{"action":"sendmessage","text":"hi"}"#))
        .unwrap();
    let r = next_text(&mut ws);
    assert_eq!(r["target"], "/message");
    assert_eq!(r["event"], "MESSAGE");
    assert_eq!(r["route"], "sendmessage");
    assert_eq!(r["connection"], id.as_str());
    assert_eq!(r["stage"], "prod");
    assert_eq!(r["body"], r#"{"action":"sendmessage","text":"hi"}"#);

    // A mock route answers without a backend; a non-JSON message goes to $default.
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"pong": true}));
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(next_text(&mut ws), json!({"message": "unknown action"}));
    ws.send(Message::text(r#"{"action":"nobody"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"message": "unknown action"}));

    // A one-way route's integration is called; nothing comes back. The ping after it is
    // answered first and alone.
    ws.send(Message::text(r#"{"action":"quiet","n":1}"#))
        .unwrap();
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"pong": true}));
    assert!(up.requests().iter().any(|s| s.target == "/quiet"));

    // A fragmented message is one message.
    ws.write(Message::Frame(
        tungstenite::protocol::frame::Frame::message(
            &b"{\"action\":\"pi"[..],
            tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Text,
            ),
            false,
        ),
    ))
    .unwrap();
    ws.write(Message::Frame(
        tungstenite::protocol::frame::Frame::message(
            &b"ng\"}"[..],
            tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Continue,
            ),
            true,
        ),
    ))
    .unwrap();
    ws.flush().unwrap();
    assert_eq!(next_text(&mut ws), json!({"pong": true}));

    // The client closes: $disconnect hears the code and reason, once.
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    while ws.read().is_ok() {}
    assert!(eventually(Duration::from_secs(10), || up
        .requests()
        .iter()
        .any(|s| s.target == "/disconnect")));
    let d: Vec<Seen> = up
        .requests()
        .into_iter()
        .filter(|s| s.target == "/disconnect")
        .collect();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].header("x-connection-id"), Some(id.as_str()));
    assert_eq!(d[0].header("x-event-type"), Some("DISCONNECT"));
    assert_eq!(d[0].header("x-disconnect-status-code"), Some("1000"));
    assert_eq!(d[0].header("x-disconnect-reason"), Some("bye"));
}

/// `connectedAt` (`x-connected-at`) is one time for the connection's life: `$connect`'s call
/// and every later one carry the same, however long `$connect`'s integration took.
#[test]
fn a_connection_has_one_connected_at() {
    let up = backend();
    let g = gateway(&up, true);
    let mut ws = open(&g, "?slow=1").expect("upgrade");
    ws.send(Message::text(r#"{"action":"sendmessage","text":"hi"}"#))
        .unwrap();
    next_text(&mut ws);
    let seen = up.requests();
    let at = |path: &str| {
        seen.iter()
            .find(|s| s.target.starts_with(path))
            .and_then(|s| s.header("x-connected-at"))
            .map(str::to_string)
    };
    assert!(at("/connect").is_some());
    assert_eq!(at("/connect"), at("/message"));
}

/// A WebSocket API is not exported as OpenAPI (its route keys are no paths; Amazon's
/// ExportApi takes HTTP APIs only): 400 saying so, not a document of the wrong API.
#[test]
fn a_websocket_api_is_not_exported_as_openapi() {
    let up = backend();
    let g = gateway(&up, true);
    let r = admin(
        g.admin(),
        "GET",
        "/apis/api/stages/prod/export?type=oas30",
        Some(TOKEN),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("is a WebSocket API"), "{}", r.text());
}

#[test]
fn connect_refusals_and_plain_requests_get_http_answers() {
    let up = backend();
    let g = gateway(&up, false);
    // The $connect integration's 403 is the client's answer: no upgrade.
    match open(&g, "?deny=1") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // A request that is not an upgrade: 426, with the version the gateway speaks.
    let r = get(g.addr(), "/");
    assert_eq!(r.status, 426);
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    assert_eq!(r.json(), json!({"message": "Upgrade Required"}));
    // Without $default, an unknown key gets Amazon's answer on the socket.
    let mut ws = open(&g, "").expect("upgrade");
    ws.send(Message::text(r#"{"action":"nobody"}"#)).unwrap();
    let r = next_text(&mut ws);
    assert_eq!(r["message"], "Forbidden");
    assert!(r["connectionId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(r["requestId"].as_str().is_some_and(|s| !s.is_empty()));
}

#[test]
fn protocol_violations_close_with_their_codes() {
    let up = backend();
    let g = gateway(&up, true);
    // A message over 128 KiB: 1009.
    let mut ws = open(&g, "").expect("upgrade");
    let big = format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(130 << 10));
    let _ = ws.send(Message::text(big));
    assert_eq!(close_code(&mut ws), Some(CloseCode::Size));

    // An unmasked client frame: 1002.
    let mut ws = open(&g, "").expect("upgrade");
    use std::io::Write;
    ws.get_mut().write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(close_code(&mut ws), Some(CloseCode::Protocol));

    // Text that is not UTF-8: 1007.
    let mut ws = open(&g, "").expect("upgrade");
    let bad = [0xc3u8, 0x28];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(bad.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.get_mut().write_all(&frame).unwrap();
    assert_eq!(close_code(&mut ws), Some(CloseCode::Invalid));

    // The gateway still serves.
    let mut ws = open(&g, "").expect("upgrade");
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"pong": true}));
}

/// Reads until the gateway's close frame: its code.
fn close_code(ws: &mut WebSocket<TcpStream>) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => {
                // Answers the close (the gateway waits for it before closing the socket).
                let _ = ws.flush();
                return f.map(|f| f.code);
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn backends_push_read_and_close_connections_through_at_connections() {
    let admin_addr: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>> =
        Default::default();
    let seen_admin = admin_addr.clone();
    // The backend answers a "broadcast" by pushing back through the admin API, as a backend
    // calls Amazon's @connections.
    let up = Upstream::start(move |s| {
        if s.target == "/broadcast" {
            let id = s.header("x-connection-id").unwrap_or_default().to_string();
            let admin = seen_admin.lock().unwrap().expect("admin address");
            let body = format!("pushed:{}", String::from_utf8_lossy(&s.body));
            let r = admin_with(admin, "POST", &format!("/@connections/{id}"), &body);
            return respond(200, &format!("{{\"push\":{}}}", r.status));
        }
        respond(200, "{}")
    });
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n\
                 [[apis.routes]]\nroute = \"broadcast\"\nintegration = { type = \"http\", uri = \"http://chat/broadcast\" }\n",
            )
            .toml(),
    );
    *admin_addr.lock().unwrap() = Some(g.admin());
    let (mut ws, _) = open_with(&g, &[("User-Agent", "chat-test/1")]).unwrap();
    let id = up
        .requests()
        .iter()
        .find(|s| s.target == "/connect")
        .and_then(|s| s.header("x-connection-id").map(str::to_string))
        .unwrap();

    // A backend's push from inside a message's integration call.
    ws.send(Message::text(r#"{"action":"broadcast","n":7}"#))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::text(r#"pushed:{"action":"broadcast","n":7}"#)
    );
    // Pushes from the admin API, in order.
    for i in 0..3 {
        let r = admin_with(
            g.admin(),
            "POST",
            &format!("/@connections/{id}"),
            &format!("m{i}"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for i in 0..3 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("m{i}")));
    }
    let r = admin_with(g.admin(), "GET", &format!("/@connections/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let info = r.json();
    assert_eq!(info["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(info["identity"]["userAgent"], "chat-test/1");
    assert!(
        info["connectedAt"].as_str().unwrap().ends_with('Z'),
        "{info}"
    );
    assert!(info["lastActiveAt"].as_str().is_some(), "{info}");
    // Without the admin token: 401.
    let r = admin(g.admin(), "GET", &format!("/@connections/{id}"), None);
    assert_eq!(r.status, 401);

    // DELETE closes it; from then on the connection is gone (410).
    let r = admin_with(g.admin(), "DELETE", &format!("/@connections/{id}"), "");
    assert_eq!(r.status, 204, "{}", r.text());
    // A 204 carries no Content-Length (RFC 9110 8.6), nor a Content-Type for no content.
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("content-type"), None);
    assert_eq!(close_code(&mut ws), Some(CloseCode::Normal));
    assert!(eventually(Duration::from_secs(10), || admin_with(
        g.admin(),
        "GET",
        &format!("/@connections/{id}"),
        ""
    )
    .status
        == 410));
    let r = admin_with(g.admin(), "POST", &format!("/@connections/{id}"), "late");
    assert_eq!(r.status, 410);
    // Amazon's exception by name, as on the API's own domain.
    assert_eq!(r.header("x-amzn-errortype"), Some("GoneException"));

    // A client that does not read: its queue fills and pushes answer 429 (bounded memory),
    // after at most the queue's bytes, the writer's batches and what the sockets buffer.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&g.addr().into()).unwrap();
    let stream: TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (_slow, _) = tungstenite::client("ws://chat.test/", stream)
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let slow_id = up
        .requests()
        .iter()
        .filter(|s| s.target == "/connect")
        .filter_map(|s| s.header("x-connection-id").map(str::to_string))
        .find(|x| *x != id)
        .unwrap();
    let big = "b".repeat(100 << 10);
    let mut refused_after = None;
    for i in 0..2000 {
        let r = admin_with(g.admin(), "POST", &format!("/@connections/{slow_id}"), &big);
        if r.status == 429 {
            refused_after = Some(i);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // Refused once 1 MiB waits for it (not only after 256 messages: 25 MiB of these), after
    // what the writer and the sockets hold.
    let n = refused_after.expect("pushes to a client that does not read are refused");
    assert!((10..256).contains(&n), "refused after {n}");
    let r = admin_with(g.admin(), "POST", &format!("/@connections/{slow_id}"), &big);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-amzn-errortype"), Some("LimitExceededException"));
    let r = admin_with(
        g.admin(),
        "POST",
        &format!("/@connections/{slow_id}"),
        &"x".repeat(129 << 10),
    );
    assert_eq!(r.status, 413);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("PayloadTooLargeException")
    );
    assert_eq!(
        admin_with(g.admin(), "POST", "/@connections/not-an-id", "x").status,
        410
    );
}

#[test]
fn messages_are_throttled_by_their_route() {
    let g = Gw::start(
        &Cfg::new()
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"limited\"\nroute_response = true\nthrottle = { rate = 1, burst = 3 }\nintegration = { type = \"mock\", status = 200, body = '{\"ok\":true}' }\n\
                 [[apis.routes]]\nroute = \"free\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"free\":true}' }\n",
            )
            .toml(),
    );
    let mut ws = open(&g, "").expect("upgrade");
    for _ in 0..3 {
        ws.send(Message::text(r#"{"action":"limited"}"#)).unwrap();
        assert_eq!(next_text(&mut ws), json!({"ok": true}));
    }
    ws.send(Message::text(r#"{"action":"limited"}"#)).unwrap();
    let r = next_text(&mut ws);
    assert_eq!(r["message"], "Too Many Requests", "{r}");
    assert!(r["connectionId"].as_str().is_some(), "{r}");
    // Another route has its own budget, and the connection stays open.
    ws.send(Message::text(r#"{"action":"free"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"free": true}));
}

/// A usage plan's quota counts `$connect` and each message of a connection opened with the
/// plan's key: a message past it gets Amazon's "Limit Exceeded" on a connection that stays
/// open, and a new connection is refused with 429.
#[test]
fn a_keys_quota_counts_connections_and_messages() {
    const KEY: &str = "ws-key-0123456789abcdef0123";
    let g = Gw::start(
        &Cfg::new()
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\napi_key_required = true\nintegration = { type = \"mock\", status = 200, body = '' }\n\
                 [[apis.routes]]\nroute = \"ping\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"pong\":true}' }\n",
            )
            .extra(format!(
                "[[usage_plans]]\nname = \"p\"\nstages = [\"api/prod\"]\nquota = {{ limit = 3, period = \"day\" }}\n\n\
                 [[api_keys]]\nname = \"k\"\nvalue = \"{KEY}\"\nplan = \"p\"\n"
            ))
            .toml(),
    );
    let (mut ws, _) = open_with(&g, &[("x-api-key", KEY)]).expect("upgrade");
    for _ in 0..2 {
        ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
        assert_eq!(next_text(&mut ws), json!({"pong": true}));
    }
    // The connection and two messages spent the quota of 3.
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    let r = next_text(&mut ws);
    assert_eq!(r["message"], "Limit Exceeded", "{r}");
    assert!(
        r["connectionId"].as_str().is_some_and(|s| !s.is_empty()),
        "{r}"
    );
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut ws)["message"], "Limit Exceeded");
    // (`open_with`'s refusal shows the answer's body as its bytes.)
    let body = |b: &[u8]| format!("body: Some({:?})", b.to_vec());
    let e = open_with(&g, &[("x-api-key", KEY)])
        .map(|_| ())
        .unwrap_err();
    assert!(e.contains("status: 429"), "{e}");
    assert!(e.contains(&body(br#"{"message":"Limit Exceeded"}"#)), "{e}");
    // Without the key: refused before the quota.
    let e = open_with(&g, &[]).map(|_| ()).unwrap_err();
    assert!(e.contains("status: 403"), "{e}");
    assert!(e.contains(&body(br#"{"message":"Forbidden"}"#)), "{e}");
}

/// Connections whose API a reload removes while they send messages: each message finds the
/// API gone and closes the connection (1001), and `$disconnect` is still called for every
/// one, with the configuration that had the API (it was skipped when the message found the
/// API gone before the shard's housekeeping did, and the client answered the Close late).
#[test]
fn a_reload_that_removes_the_api_still_disconnects_busy_connections() {
    let up = backend();
    let g = gateway(&up, false);
    let mut conns: Vec<_> = (0..5).map(|_| open(&g, "").expect("upgrade")).collect();
    assert!(eventually(Duration::from_secs(10), || up
        .requests()
        .iter()
        .filter(|s| s.target == "/connect")
        .count()
        == 5));
    let renamed = Cfg::new()
        .api("renamed")
        .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
        .api_extra("kind = \"websocket\"")
        .routes("[[apis.routes]]\nroute = \"$default\"\nintegration = { type = \"mock\", status = 200 }\n")
        .toml();
    g.rewrite(&renamed);
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    // At once, as a busy client would; the gateway's Close is never answered (it waits for
    // it, then gives up).
    for ws in &mut conns {
        ws.send(Message::text(r#"{"action":"quiet"}"#)).unwrap();
    }
    let disconnects = || {
        up.requests()
            .iter()
            .filter(|s| s.target == "/disconnect")
            .count()
    };
    assert!(
        eventually(Duration::from_secs(15), || disconnects() == 5),
        "{} of 5 connections had $disconnect",
        disconnects()
    );
    drop(conns);
}

#[test]
fn a_reload_reroutes_later_messages_and_a_drain_closes_with_1001() {
    let conf = |body: &str| {
        Cfg::new()
            .api(if body.is_empty() { "renamed" } else { "api" })
            .api_extra("kind = \"websocket\"")
            .routes(format!(
                "[[apis.routes]]\nroute = \"ping\"\nroute_response = true\nintegration = {{ type = \"mock\", status = 200, body = '{body}' }}\n"
            ))
            .toml()
    };
    let mut g = Gw::start(&conf(r#"{"v":1}"#));
    let mut ws = open(&g, "").expect("upgrade");
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"v": 1}));
    g.rewrite(&conf(r#"{"v":2}"#));
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    // The same connection: its next message goes by the new routes.
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"v": 2}));
    // A reload that renames the API: the connection's next message finds no API, and the
    // connection is closed with 1001 rather than left without answers.
    let mut ws2 = open(&g, "").expect("upgrade");
    g.rewrite(&conf(""));
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    ws2.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(close_code(&mut ws2), Some(CloseCode::Away));
    g.rewrite(&conf(r#"{"v":3}"#));
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"v": 3}));
    // Shutting down drains: the connection is closed with 1001 (going away).
    let stopper = std::thread::spawn(move || g.shutdown());
    assert_eq!(close_code(&mut ws), Some(CloseCode::Away));
    stopper.join().unwrap();
}

#[test]
fn connections_and_messages_are_in_the_access_log() {
    let dir = TempDir::new();
    let log = dir.0.join("ws.log");
    let g = Gw::start(
        &Cfg::new()
            .api_extra("kind = \"websocket\"")
            .stage_extra(format!(
                "access_log = {{ path = \"{}\", format = '$context.eventType $context.connectionId $context.routeKey $context.status $context.error.responseType' }}",
                log.display()
            ))
            .routes(
                "[[apis.routes]]\nroute = \"ping\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"pong\":true}' }\n\
                 [[apis.routes]]\nroute = \"once\"\nroute_response = true\nthrottle = { rate = 1, burst = 1 }\nintegration = { type = \"mock\", status = 200, body = '{\"ok\":true}' }\n\
                 [[apis.routes]]\nroute = \"$disconnect\"\nintegration = { type = \"mock\", status = 200, body = 'bye' }\n",
            )
            .toml(),
    );
    let mut ws = open(&g, "").expect("upgrade");
    ws.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"pong": true}));
    ws.send(Message::text(r#"{"action":"nobody"}"#)).unwrap();
    assert_eq!(next_text(&mut ws)["message"], "Forbidden");
    // A throttled message says why, as a throttled request does.
    ws.send(Message::text(r#"{"action":"once"}"#)).unwrap();
    assert_eq!(next_text(&mut ws), json!({"ok": true}));
    ws.send(Message::text(r#"{"action":"once"}"#)).unwrap();
    assert_eq!(next_text(&mut ws)["message"], "Too Many Requests");
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || read().lines().count() >= 6),
        "{}",
        read()
    );
    let text = read();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines[0][0], "CONNECT", "{text}");
    assert_eq!(lines[0][3], "101", "{text}");
    let id = lines[0][1];
    assert_eq!(id.len(), 20, "{text}");
    assert_eq!(lines[1][..4], ["MESSAGE", id, "ping", "200"], "{text}");
    // The gateway's own refusal says its type, as a request's does.
    assert_eq!(
        lines[2],
        vec!["MESSAGE", id, "-", "403", "ACCESS_DENIED"],
        "{text}"
    );
    assert_eq!(
        lines[4],
        vec!["MESSAGE", id, "once", "429", "THROTTLED"],
        "{text}"
    );
    // `$disconnect` has its line too.
    assert_eq!(
        lines[5][..4],
        ["DISCONNECT", id, "$disconnect", "200"],
        "{text}"
    );
    assert!(metric_reaches(
        &g,
        "tollgate_route_throttled_total",
        "route=\"once\"",
        1
    ));
}

/// Bytes in and out for a client-side protocol layer (the frames travel in HTTP/2 DATA).
#[derive(Default)]
struct Mem {
    inb: std::collections::VecDeque<u8>,
    out: Vec<u8>,
}

impl std::io::Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.inb.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.inb.len());
        for (i, b) in self.inb.drain(..n).enumerate() {
            buf[i] = b;
        }
        Ok(n)
    }
}

impl std::io::Write for Mem {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn websockets_run_over_http2_extended_connect() {
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = Gw::start(
        &Cfg::new()
            .listener("h2c = true")
            .api_extra("kind = \"websocket\"")
            .stage_extra("access_log = { path = \"a.log\", format = \"$context.routeKey $context.status $context.protocol\" }")
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n\
                 [[apis.routes]]\nroute = \"ping\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"pong\":true}' }\n",
            )
            .toml(),
    );
    let addr = g.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut client = extended_connect_client(addr).await;
        let req = http::Request::builder()
            .method("CONNECT")
            .uri("http://chat.test/")
            .header("sec-websocket-version", "13")
            // HTTP/2 clients may send cookies as separate fields.
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .extension(h2::ext::Protocol::from_static("websocket"))
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut recv = resp.into_body();
        let mut ws =
            tungstenite::protocol::WebSocketContext::new(tungstenite::protocol::Role::Client, None);
        let mut mem = Mem::default();
        for _ in 0..2 {
            ws.write(&mut mem, Message::text(r#"{"action":"ping"}"#))
                .unwrap();
            ws.flush(&mut mem).unwrap();
            send.send_data(std::mem::take(&mut mem.out).into(), false)
                .unwrap();
            let got = loop {
                match ws.read(&mut mem) {
                    Ok(m) => break m,
                    Err(tungstenite::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock =>
                    {
                        let data = recv.data().await.expect("a frame").unwrap();
                        let _ = recv.flow_control().release_capacity(data.len());
                        mem.inb.extend(data.iter());
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(got, Message::text(r#"{"pong":true}"#));
        }
    });
    // $connect's integration got the cookies as one header, as HTTP/1.1 carries them.
    let connect = &up.requests()[0];
    assert_eq!(connect.headers_named("cookie"), vec!["a=1; b=2"]);
    // RFC 8441 carries no key: the one $connect sees is made afresh (RFC 6455 4.1's form), not
    // RFC 6455's sample nonce.
    let key = connect.header("sec-websocket-key").unwrap();
    assert_eq!(key.len(), 24, "{key}");
    assert_ne!(key, "dGhlIHNhbXBsZSBub25jZQ==");
    // The access log says what the client got and on what: 200 to the extended CONNECT (not
    // 101), and HTTP/2.0 for its messages (they said HTTP/1.1).
    let log = g.dir.0.join("a.log");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || read().lines().count() >= 3),
        "{}",
        read()
    );
    let text = read();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "$connect 200 HTTP/2.0",
            "ping 200 HTTP/2.0",
            "ping 200 HTTP/2.0"
        ],
        "{text}"
    );
}

/// A WebSocket API whose `$connect` asks the request authorizer at `/auth` (identity: the
/// `token` query parameter) and whose two-way `$default` route goes to `integration`.
fn gated(up: &Upstream, integration: &str) -> Gw {
    Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra(
                "kind = \"websocket\"\n\n  [[apis.authorizers]]\n  name = \"gate\"\n  type = \"request\"\n  uri = \"http://chat/auth\"\n  identity_sources = [\"$request.querystring.token\"]\n  ttl = \"0s\"\n",
            )
            .routes(format!(
                "[[apis.routes]]\nroute = \"$connect\"\nauthorizer = \"gate\"\nintegration = {{ type = \"mock\", status = 200, body = '' }}\n\
                 [[apis.routes]]\nroute = \"$default\"\nroute_response = true\nintegration = {integration}\n",
            ))
            .toml(),
    )
}

#[test]
fn connect_authorizers_read_the_query_and_their_context_reaches_each_message() {
    let up = Upstream::start(|s| {
        if s.target.starts_with("/auth") {
            // Amazon's WebSocket REQUEST event: a methodArn ending in the route key, the
            // connection's id and event type; answered with a policy on `$connect`, as
            // Amazon's WebSocket examples write it.
            let event: Value = serde_json::from_slice(&s.body).unwrap_or_default();
            let ok = event["identitySource"].to_string().contains("letmein")
                && event["type"] == "REQUEST"
                && event["methodArn"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(":api/prod/$connect"))
                && event["requestContext"]["eventType"] == "CONNECT"
                && event["requestContext"]["routeKey"] == "$connect"
                && event["requestContext"]["connectionId"]
                    .as_str()
                    .is_some_and(|c| c.len() == 20)
                && event["queryStringParameters"]["token"] == "letmein";
            let effect = if ok { "Allow" } else { "Deny" };
            return respond(
                200,
                &json!({"principalId": "u", "context": {"tenant": "t1"}, "policyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": effect, "Action": "execute-api:Invoke",
                                   "Resource": "arn:aws:execute-api:*:*:api/*/$connect"}]}})
                .to_string(),
            );
        }
        let seen = json!({
            "message": s.header("x-message-id"),
            "context": s.header("x-authorizer-context"),
        });
        respond(200, &seen.to_string())
    });
    let g = gated(&up, r#"{ type = "http", uri = "http://chat/message" }"#);
    // No token, or a wrong one: the upgrade is refused (401 / 403), as a request would be.
    match open(&g, "") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    match open(&g, "?token=nope") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    let mut ws = open(&g, "?token=letmein").expect("upgrade");
    ws.send(Message::text("hello")).unwrap();
    let r = next_text(&mut ws);
    assert_eq!(r["context"], r#"{"tenant":"t1"}"#, "{r}");
    let first = r["message"].as_str().unwrap().to_string();
    ws.send(Message::text("again")).unwrap();
    let r = next_text(&mut ws);
    assert!(
        !first.is_empty() && r["message"].as_str() != Some(first.as_str()),
        "{r}"
    );
}

#[test]
fn a_message_refused_by_the_gateway_or_timed_out_gets_its_own_words() {
    let up = Upstream::start(|s| {
        if s.target.starts_with("/auth") {
            let event: Value = serde_json::from_slice(&s.body).unwrap_or_default();
            let tenant = if event["queryStringParameters"]["token"] == "dots" {
                ".."
            } else {
                "t1"
            };
            return respond(
                200,
                &json!({"principalId": "u", "context": {"tenant": tenant}, "policyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke",
                                   "Resource": "arn:aws:execute-api:*:*:api/*/$connect"}]}})
                .to_string(),
            );
        }
        if s.body == b"slow" {
            // Past the route's integration timeout (the test does not wait for it).
            std::thread::sleep(Duration::from_secs(3));
        }
        respond(200, &json!({"target": s.target}).to_string())
    });
    let g = gated(
        &up,
        r#"{ type = "http", uri = "http://chat/t/${context.authorizer.tenant}/inbox", timeout = "300ms" }"#,
    );
    let mut ws = open(&g, "?token=ok").expect("upgrade");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(next_text(&mut ws)["target"], "/t/t1/inbox");
    // An integration past its timeout: Amazon's words for it; the next message goes through.
    ws.send(Message::text("slow")).unwrap();
    assert_eq!(next_text(&mut ws)["message"], "Endpoint request timed out");
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(next_text(&mut ws)["target"], "/t/t1/inbox");
    // `..` would take the upstream's path up a level: the message is refused as a request
    // would be (400, the same words), and the connection stays open.
    let mut ws = open(&g, "?token=dots").expect("upgrade");
    ws.send(Message::text("hello")).unwrap();
    let r = next_text(&mut ws);
    assert_eq!(
        r["message"], "Invalid request path: dot segments are not allowed",
        "{r}"
    );
    assert!(
        r["connectionId"].is_string() && r["requestId"].is_string(),
        "{r}"
    );
    ws.send(Message::text("again")).unwrap();
    assert_eq!(
        next_text(&mut ws)["message"],
        "Invalid request path: dot segments are not allowed"
    );
}

#[test]
fn a_client_cannot_forge_the_headers_the_gateway_adds() {
    let up = backend();
    let g = gateway(&up, true);
    let _ws = open_with(
        &g,
        &[
            ("X-Source-Ip", "6.6.6.6"),
            ("X-Authorizer-Principal-Id", "admin"),
            ("X-Event-Type", "MESSAGE"),
            ("X-Tenant", "kept"),
        ],
    )
    .unwrap();
    let seen = up.requests();
    let c = seen.iter().find(|s| s.target == "/connect").unwrap();
    assert_eq!(c.headers_named("x-source-ip"), vec!["127.0.0.1"]);
    assert_eq!(c.headers_named("x-event-type"), vec!["CONNECT"]);
    assert!(c.headers_named("x-authorizer-principal-id").is_empty());
    assert_eq!(c.header("x-tenant"), Some("kept"));
}

/// `X-Domain-Name` is `$context.domainName`: the Host without its port.
#[test]
fn the_domain_name_header_has_no_port() {
    let up = backend();
    let g = gateway(&up, true);
    let stream = TcpStream::connect(g.addr()).unwrap();
    let (_ws, _) = tungstenite::client("ws://chat.test:8080/", stream).expect("upgrade");
    let seen = up.requests();
    let c = seen.iter().find(|s| s.target == "/connect").unwrap();
    assert_eq!(c.header("x-domain-name"), Some("chat.test"));
}

#[test]
fn keys_a_websocket_route_cannot_use_are_refused_at_load() {
    for (route, key) in [
        (
            "route = \"sendmessage\"\napi_key_required = true",
            "api_key_required",
        ),
        (
            "route = \"sendmessage\"\ncache = { ttl = \"10s\" }",
            "cache",
        ),
        (
            "route = \"$default\"\nrequest_parameters = { \"overwrite:header.x-a\" = \"b\" }",
            "request_parameters",
        ),
        (
            "route = \"$default\"\nresponse_parameters = { \"200\" = { \"overwrite:header.x\" = \"1\" } }",
            "response_parameters",
        ),
        // Refused whether or not it would find anything to check.
        (
            "route = \"sendmessage\"\nrequest_validator = \"all\"",
            "request_validator",
        ),
    ] {
        let toml = Cfg::new()
            .api_extra("kind = \"websocket\"")
            .routes(format!(
                "[[apis.routes]]\n{route}\nintegration = {{ type = \"mock\", status = 200, body = 'x' }}\n"
            ))
            .toml();
        let dir = TempDir::new();
        let path = dir.0.join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&path)
            .arg("check")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{route}: accepted");
        assert!(
            text.contains(&format!("{key}: is not used here")),
            "{route}: {text}"
        );
    }
}

#[test]
fn subprotocols_are_chosen_from_the_apis_list() {
    let g = Gw::start(
        &Cfg::new()
            .api_extra("kind = \"websocket\"\nsubprotocols = [\"chat.v2\", \"graphql-ws\"]")
            .routes(
                "[[apis.routes]]\nroute = \"$default\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = 'x' }\n",
            )
            .toml(),
    );
    let ask = |offer: &str| open_with(&g, &[("Sec-WebSocket-Protocol", offer)]).map(|(_, r)| r);
    // The API's preference wins among what the client offers.
    let r = ask("graphql-ws, chat.v2").unwrap();
    assert_eq!(
        r.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("chat.v2")
    );
    let r = ask("graphql-ws").unwrap();
    assert_eq!(
        r.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("graphql-ws")
    );
    // Nothing shared: no header, and a client that needs one gives up (RFC 6455 4.1).
    assert!(ask("mqtt").is_err());
}

#[test]
fn connects_integration_may_choose_the_subprotocol() {
    // The backend picks the last protocol the client offers, as a Lambda integration may.
    let up = Upstream::start(|s| {
        let offered = s.header("sec-websocket-protocol").unwrap_or_default();
        let mut pick = offered
            .rsplit(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if pick == "mqtt" {
            pick = "stomp".into(); // not offered
        }
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nSec-WebSocket-Protocol: {pick}\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
        )
    });
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"\nsubprotocols = [\"chat.v2\", \"graphql-ws\"]")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n",
            )
            .toml(),
    );
    let protocol = |offer: &str| {
        open_with(&g, &[("Sec-WebSocket-Protocol", offer)]).map(|(_, r)| {
            r.headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string())
        })
    };
    // The integration's choice wins over the API's preference...
    assert_eq!(
        protocol("chat.v2, graphql-ws").unwrap().as_deref(),
        Some("graphql-ws")
    );
    // ...when the client offered it (in the API's list or not); an answer naming something
    // the client did not offer is not passed on.
    assert_eq!(protocol("chat.v2, soap").unwrap().as_deref(), Some("soap"));
    assert_eq!(
        protocol("chat.v2, mqtt").unwrap().as_deref(),
        Some("chat.v2")
    );
}

/// A WebSocket route's integration is timed and named as a request's: `$connect`'s and a
/// message's lines carry `integrationLatency`, `integrationStatus` and `upstream`, and the
/// route's integration-latency histogram counts them. A binary message is routed by its
/// JSON as a text one is.
#[test]
fn websocket_integrations_are_timed_and_binary_messages_routed() {
    let up = backend();
    let dir = TempDir::new();
    let log = dir.0.join("ws.log");
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .stage_extra(format!(
                "access_log = {{ path = \"{}\", format = \"json\" }}",
                log.display()
            ))
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n\
                 [[apis.routes]]\nroute = \"sendmessage\"\nroute_response = true\nintegration = { type = \"http\", uri = \"http://chat/message\" }\n\
                 [[apis.routes]]\nroute = \"ping\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"pong\":true}' }\n",
            )
            .toml(),
    );
    let mut ws = open(&g, "").expect("upgrade");
    ws.send(Message::binary(br#"{"action":"ping"}"#.to_vec()))
        .unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], br#"{"pong":true}"#),
        other => panic!("{other:?}"),
    }
    ws.send(Message::text(r#"{"action":"sendmessage"}"#))
        .unwrap();
    assert_eq!(next_text(&mut ws)["route"], "sendmessage");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || read().lines().count() >= 3),
        "{}",
        read()
    );
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let upstream = up.addr.to_string();
    for (line, route) in [(&lines[0], "$connect"), (&lines[2], "sendmessage")] {
        assert_eq!(line["routeKey"], route, "{line}");
        assert_eq!(line["integrationStatus"], "200", "{line}");
        assert_eq!(line["upstream"], upstream.as_str(), "{line}");
        assert_ne!(line["integrationLatency"], "-", "{line}");
    }
    assert_eq!(lines[1]["routeKey"], "ping");
    let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
    assert!(
        text.contains(
            "tollgate_route_integration_latency_seconds_count{api=\"api\",stage=\"prod\",route=\"sendmessage\"} 1"
        ),
        "{text}"
    );
}

/// A message longer than 32 KB goes to the client in frames of at most 32 KB, as Amazon API
/// Gateway splits them (here a push through `@connections`).
#[test]
fn long_messages_go_out_in_32_kb_frames() {
    use std::io::Read;
    let up = backend();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n",
            )
            .toml(),
    );
    let mut ws = open(&g, "").unwrap();
    let id = up
        .requests()
        .iter()
        .find(|s| s.target.starts_with("/connect"))
        .and_then(|s| s.header("x-connection-id").map(str::to_string))
        .unwrap();
    let body = "m".repeat(40_000);
    let r = admin_with(g.admin(), "POST", &format!("/@connections/{id}"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    // The frames as they come: text, not final, 32,768 bytes; then the final continuation.
    let raw = ws.get_mut();
    let mut frame = |want_head: u8| -> usize {
        let mut h = [0u8; 2];
        raw.read_exact(&mut h).unwrap();
        assert_eq!(h[0], want_head, "{h:?}");
        let len = match h[1] {
            126 => {
                let mut l = [0u8; 2];
                raw.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        raw.read_exact(&mut payload).unwrap();
        assert!(payload.iter().all(|&b| b == b'm'));
        len
    };
    assert_eq!(frame(0x01), 32_768);
    assert_eq!(frame(0x80), 40_000 - 32_768);
}

/// A client that goes after `$connect` accepted it but before it had the 101 still gets its
/// `$disconnect` (the backend counted a connection that never ended).
#[test]
fn a_client_gone_before_the_101_is_disconnected() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rx = std::sync::Mutex::new(rx);
    let (arrived_tx, arrived) = std::sync::mpsc::channel::<()>();
    let arrived_tx = std::sync::Mutex::new(arrived_tx);
    let up = Upstream::start(move |s| {
        if s.target.starts_with("/connect") {
            let _ = arrived_tx.lock().unwrap().send(());
            let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(20));
        }
        respond(200, "{}")
    });
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n\
                 [[apis.routes]]\nroute = \"$disconnect\"\nintegration = { type = \"http\", uri = \"http://chat/disconnect\" }\n",
            )
            .toml(),
    );
    let mut s = TcpStream::connect(g.addr()).unwrap();
    use std::io::Write;
    s.write_all(b"GET / HTTP/1.1\r\nHost: chat.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("$connect called");
    // Gone with a reset, while $connect is still out.
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    tx.send(()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || up
            .requests()
            .iter()
            .any(|r| r.target == "/disconnect")),
        "{:?}",
        up.requests()
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>()
    );
}

/// Mapping keys a WebSocket route does not apply are refused, naming them.
#[test]
fn websocket_routes_refuse_templates_and_responses() {
    for (extra, key) in [
        (
            "request_templates = { \"application/json\" = '{}' }",
            "integration.request_templates",
        ),
        (
            "responses = [ { status = 200, templates = { \"application/json\" = '{}' } } ]",
            "integration.responses",
        ),
    ] {
        let (ok, text) = check_config(
            &Cfg::new()
                .api_extra("kind = \"websocket\"")
                .routes(format!(
                    "[[apis.routes]]\nroute = \"$default\"\nintegration = {{ type = \"http\", uri = \"http://127.0.0.1:9/m\", {extra} }}\n"
                ))
                .toml(),
        );
        assert!(!ok, "{extra}: accepted");
        assert!(text.contains(&format!("{key}: is not used here")), "{text}");
    }
}

/// A `$connect` mock's refusal carries its headers, as an http integration's does.
#[test]
fn a_connect_mocks_refusal_carries_its_headers() {
    let g = Gw::start(
        &Cfg::new()
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"mock\", status = 401, body = '{\"message\":\"who?\"}', headers = { \"www-authenticate\" = \"Bearer realm=chat\", \"retry-after\" = \"5\" } }\n",
            )
            .toml(),
    );
    match open(&g, "") {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 401);
            assert_eq!(r.headers()["www-authenticate"], "Bearer realm=chat");
            assert_eq!(r.headers()["retry-after"], "5");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// With `[tracing]`, a client's trace headers (here an invalid one) are not handed to
/// `$connect`'s integration: the gateway owns trace context, and sends its own.
#[test]
fn connect_does_not_pass_a_clients_trace_context_on() {
    let up = backend();
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes("[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n")
            .extra("[tracing]\notlp_endpoint = \"http://127.0.0.1:9/v1/traces\"\nsample = 0.0\n")
            .toml(),
    );
    let _ws = open_with(
        &g,
        &[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", "evil=1"),
            ("x-amzn-trace-id", "Root=1-0-0;Sampled=1"),
        ],
    )
    .unwrap();
    let seen = up.requests();
    let c = seen.iter().find(|s| s.target == "/connect").unwrap();
    assert!(c.headers_named("tracestate").is_empty());
    // The gateway's own trace context only (a new trace: the client's was invalid).
    assert_eq!(
        c.headers_named("x-amzn-trace-id").len(),
        1,
        "{:?}",
        c.headers_named("x-amzn-trace-id")
    );
    assert!(!c.headers_named("x-amzn-trace-id")[0].contains("Root=1-0-0"));
    assert_eq!(c.headers_named("traceparent").len(), 1);
    assert!(
        !c.headers_named("traceparent")
            .iter()
            .any(|v| v.contains("00000000000000000000000000000000")),
        "{:?}",
        c.headers_named("traceparent")
    );
}

/// An API's `default_authorizer` on a WebSocket API is `$connect`'s, the one route authorized
/// (it was refused as set on every other route, which the operator never wrote).
#[test]
fn a_websocket_apis_default_authorizer_guards_connect() {
    let up = Upstream::start(|s| {
        let ok =
            s.target.starts_with("/auth") && String::from_utf8_lossy(&s.body).contains("letmein");
        let effect = if ok { "Allow" } else { "Deny" };
        respond(
            200,
            &json!({"principalId": "u", "policyDocument": {"Version": "2012-10-17",
                "Statement": [{"Effect": effect, "Action": "execute-api:Invoke",
                               "Resource": "arn:aws:execute-api:*:*:api/*/$connect"}]}})
            .to_string(),
        )
    });
    let toml = Cfg::new()
        .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
        .api_extra(
            "kind = \"websocket\"\ndefault_authorizer = \"gate\"\n\n  [[apis.authorizers]]\n  name = \"gate\"\n  type = \"request\"\n  uri = \"http://chat/auth\"\n  identity_sources = [\"$request.querystring.token\"]\n  ttl = \"0s\"\n",
        )
        .routes(
            "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"mock\", status = 200, body = '' }\n\
             [[apis.routes]]\nroute = \"$default\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = 'hi' }\n",
        )
        .toml();
    let (ok, text) = check_config(&toml);
    assert!(ok, "{text}");
    let g = Gw::start(&toml);
    match open(&g, "?token=nope") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut ws = open(&g, "?token=letmein").unwrap();
    ws.send(Message::text("x")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("hi"));
}

/// A throttled `$connect`'s acceptance says the route's limit, as its refusals do and as every
/// answer on a throttled route does.
#[test]
fn a_throttled_connects_acceptance_carries_its_ratelimit_fields() {
    let g = Gw::start(
        &Cfg::new()
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nthrottle = { rate = 1, burst = 2 }\nintegration = { type = \"mock\", status = 200, body = '' }\n",
            )
            .toml(),
    );
    let (_ws, r) = open_with(&g, &[]).unwrap();
    assert_eq!(r.status(), 101);
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(h("ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(h("ratelimit-remaining").as_deref(), Some("1"));
    assert!(h("ratelimit-reset").is_some());
}

/// An HTTP/2 client that resets its extended CONNECT while `$connect`'s integration runs: the
/// call ends, and the connection it accepted gets its `$disconnect`, as over HTTP/1.1 (the
/// call was dropped with the stream, and the backend never heard of the connection's end).
#[test]
fn a_connect_reset_while_its_integration_runs_is_still_disconnected() {
    let up = Upstream::start(|s| {
        if s.target.starts_with("/connect") {
            return Action::Sleep(Duration::from_millis(300));
        }
        respond(200, "{}")
    });
    let g = Gw::start(
        &Cfg::new()
            .listener("h2c = true")
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n\
                 [[apis.routes]]\nroute = \"$disconnect\"\nintegration = { type = \"http\", uri = \"http://chat/disconnect\" }\n",
            )
            .toml(),
    );
    let addr = g.addr();
    let seen = up.seen.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut client = extended_connect_client(addr).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let req = http::Request::builder()
            .method("CONNECT")
            .uri("http://chat.test/")
            .header("sec-websocket-version", "13")
            .extension(h2::ext::Protocol::from_static("websocket"))
            .body(())
            .unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        // Once $connect's integration has the call, the client goes.
        while !seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.target.starts_with("/connect"))
        {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        send.send_reset(h2::Reason::CANCEL);
        drop(resp);
        // The runtime runs on (it writes the reset) until the backend hears the end.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.target.starts_with("/disconnect"))
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let d = up
        .requests()
        .into_iter()
        .find(|s| s.target.starts_with("/disconnect"))
        .unwrap();
    assert_eq!(d.header("x-disconnect-status-code"), Some("1006"));
}

/// An HTTP/2 client of the gateway at `addr`, once the gateway's SETTINGS (with
/// ENABLE_CONNECT_PROTOCOL, which arrive after the handshake) have come.
async fn extended_connect_client(
    addr: std::net::SocketAddr,
) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !client.is_extended_connect_protocol_enabled() {
        assert!(
            std::time::Instant::now() < deadline,
            "no SETTINGS_ENABLE_CONNECT_PROTOCOL"
        );
        client = client.ready().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    client
}

/// A client that stops reading its replies is let go after `limits.send_timeout`, as an
/// answer's client is (it was a fixed 30 s, whatever the setting).
#[test]
fn a_client_that_stops_reading_is_let_go_after_send_timeout() {
    let g = Gw::start(
        &Cfg::new()
            .limits("send_timeout = \"1s\"")
            .api_extra("kind = \"websocket\"")
            .routes(format!(
                "[[apis.routes]]\nroute = \"big\"\nroute_response = true\nintegration = {{ type = \"mock\", status = 200, body = '{}' }}\n",
                "r".repeat(32 << 10)
            ))
            .toml(),
    );
    let mut ws = slow_client(&g);
    for _ in 0..100 {
        ws.send(Message::text(r#"{"action":"big"}"#)).unwrap();
    }
    let open = || {
        admin(g.admin(), "GET", "/metrics", Some(TOKEN))
            .text()
            .lines()
            .find_map(|l| {
                l.strip_prefix("tollgate_open_connections ")?
                    .parse::<u64>()
                    .ok()
            })
    };
    assert!(
        eventually(Duration::from_secs(10), || open() == Some(0)),
        "{:?}",
        open()
    );
}
