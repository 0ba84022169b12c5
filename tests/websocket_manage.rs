//! `@connections` on a WebSocket API's own domain, as backends call Amazon's: botocore's
//! ApiGatewayManagementApi client (tests/websocket/manage_client.py) posts to, reads and
//! closes a connection with SigV4, at `{stage}/@connections/{id}`; a key not allowed
//! `execute-api:ManageConnections` is refused; `connections_authorization = "none"` lets
//! anyone the resource policy admits call it unsigned. And a connection's own message rate
//! (`limits.websocket_message_rate`).

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const SECRETS_KEY: &str = "q0VvXk3pYH5o1cF4n9T2bW8sR6dJ7aL0zE3uM5yG1iQ=";

fn gateway(up: &Upstream, api_extra: &str) -> Gw {
    gateway_connect(up, api_extra, "")
}

/// [`gateway`] with more keys on the `$connect` route.
fn gateway_connect(up: &Upstream, api_extra: &str, connect_extra: &str) -> Gw {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("iam.key"), SECRETS_KEY).unwrap();
    let toml = Cfg::new()
        .admin("")
        .upstream(format!(
            "[aws_iam]\nregion = \"us-east-1\"\nsecrets_key_file = \"iam.key\"\n\n[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n",
            up.addr
        ))
        .api_extra(format!("kind = \"websocket\"\n{api_extra}"))
        .routes(format!(
            "[[apis.routes]]\nroute = \"$connect\"\n{connect_extra}\nintegration = {{ type = \"http\", uri = \"http://chat/connect\" }}\n",
        ))
        .toml();
    Gw::start_in(dir, &toml)
}

/// Opens a connection; its id, as `$connect`'s integration heard it.
fn open(g: &Gw, up: &Upstream) -> (WebSocket<TcpStream>, String) {
    let stream = TcpStream::connect(g.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, _) = tungstenite::client("ws://chat.test/", stream).unwrap();
    let ids: Vec<String> = up
        .requests()
        .iter()
        .filter_map(|s| s.header("x-connection-id").map(str::to_string))
        .collect();
    (ws, ids.last().unwrap().clone())
}

fn access_key(g: &Gw, name: &str, action: &str) -> (String, String) {
    let body = json!({"name": name, "policy": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": action, "Resource": "arn:aws:execute-api:*:*:*/prod/*/@connections/*"}]}});
    let r = admin_with(g.admin(), "POST", "/accesskeys", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secretAccessKey"].as_str().unwrap().to_string(),
    )
}

#[test]
fn backends_manage_connections_on_the_apis_domain_with_sigv4() {
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = gateway(&up, "");
    let (mut ws, id) = open(&g, &up);
    let ops = access_key(&g, "ops", "execute-api:ManageConnections");
    let invoker = access_key(&g, "invoker", "execute-api:Invoke");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/websocket/manage_client.py"
    );
    let out = Command::new("python3")
        .args([script, &format!("http://{}/prod", g.addr()), "us-east-1"])
        .args([&ops.0, &ops.1, &id, &invoker.0, &invoker.1])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "botocore client failed (pip install botocore):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();

    // PostToConnection: the message reaches the client.
    assert_eq!(r["post"]["status"], 200, "{}", r["post"]);
    assert_eq!(
        ws.read().unwrap(),
        Message::text(r#"{"hello":"from boto"}"#)
    );
    // GetConnection: the SDK parses what the gateway knows of it.
    assert_eq!(r["get"]["status"], 200, "{}", r["get"]);
    assert_eq!(r["get"]["result"]["Identity"]["SourceIp"], "127.0.0.1");
    assert!(
        r["get"]["result"]["ConnectedAt"].as_str().is_some(),
        "{}",
        r["get"]
    );
    // A key allowed only to invoke routes may not manage connections.
    assert_eq!(r["denied"]["status"], 403, "{}", r["denied"]);
    let why = r["denied"]["message"].as_str().unwrap();
    assert!(
        why.contains("is not authorized to perform: execute-api:ManageConnections on resource: arn:aws:execute-api:local:000000000000:api/prod/POST/@connections/"),
        "{why}"
    );
    // A message over 128 KiB is PayloadTooLargeException, by name.
    assert_eq!(r["too_large"]["status"], 413, "{}", r["too_large"]);
    assert_eq!(
        r["too_large"]["code"], "PayloadTooLargeException",
        "{}",
        r["too_large"]
    );
    // DeleteConnection closes it; a connection that is not there is GoneException.
    assert_eq!(r["delete"]["status"], 204, "{}", r["delete"]);
    let code = loop {
        match ws.read() {
            Ok(Message::Close(f)) => {
                let _ = ws.flush();
                break f.map(|f| f.code);
            }
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(r["gone"]["status"], 410, "{}", r["gone"]);
    assert_eq!(r["gone"]["code"], "GoneException", "{}", r["gone"]);

    // Unsigned, by default: Amazon's refusal, and the connection is untouched.
    let (mut ws2, id2) = open(&g, &up);
    let mut c = Client::connect(g.addr());
    let r = c.request(
        format!(
            "POST /@connections/{id2} HTTP/1.1\r\nhost: chat.test\r\ncontent-length: 2\r\n\r\nhi"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["message"], "Missing Authentication Token");
    ws2.send(Message::Ping(vec![1].into())).unwrap();
    assert!(matches!(ws2.read().unwrap(), Message::Pong(_)));
}

/// A `$connect` route with `authorization = "aws_iam"` admits a presigned URL, as browsers
/// open IAM-signed connections (they cannot set an Authorization header): signed by
/// botocore's query signer (tests/sigv4/presign.py).
#[test]
fn connect_admits_a_presigned_url() {
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = gateway_connect(&up, "", "authorization = \"aws_iam\"");
    let body = json!({"name": "browser", "policy": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "arn:aws:execute-api:*:*:*/prod/$connect"}]}});
    let r = admin_with(g.admin(), "POST", "/accesskeys", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json();
    let (id, secret) = (
        key["id"].as_str().unwrap(),
        key["secretAccessKey"].as_str().unwrap(),
    );
    let presign = |secret: &str| -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sigv4/presign.py");
        let out = Command::new("python3")
            .args([script, "http://chat.test/?room=1", "us-east-1", id, secret])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "botocore presigner failed (pip install botocore):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .replacen("http://", "ws://", 1)
    };
    // Connected, or the status of the refusal.
    let connect = |url: &str| {
        let stream = TcpStream::connect(g.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tungstenite::client(url, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => r.status(),
            e => panic!("{e}"),
        })
    };
    // Unsigned: refused before $connect's integration is called.
    assert_eq!(
        connect("ws://chat.test/?room=1").err(),
        Some(403.try_into().unwrap())
    );
    // Signed with another secret: refused.
    assert_eq!(
        connect(&presign("x".repeat(40).as_str())).err(),
        Some(403.try_into().unwrap())
    );
    assert_eq!(up.count(), 0);
    // Presigned: connected, and $connect's integration hears the signed query.
    let url = presign(secret);
    let (mut ws, resp) = connect(&url).unwrap();
    assert_eq!(resp.status(), 101);
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    let target = &seen[0].target;
    assert!(
        target.contains("room=1") && target.contains("X-Amz-Signature="),
        "{target}"
    );
    ws.send(Message::Ping(vec![1].into())).unwrap();
    assert!(matches!(ws.read().unwrap(), Message::Pong(_)));
}

#[test]
fn connections_authorization_none_admits_what_the_resource_policy_admits() {
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = gateway(
        &up,
        "connections_authorization = \"none\"\nresource_policy = { allow = [\"127.0.0.0/8\"] }",
    );
    let (mut ws, id) = open(&g, &up);
    let mut c = Client::connect(g.addr());
    // Without the stage in the path too (after the base path), and chunked.
    let r = c.request(
        format!("POST /@connections/{id} HTTP/1.1\r\nhost: chat.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap(), Message::text("hello"));
    // The same connection carries on: a GET, then a message over the limit.
    let r = c.request(
        format!("GET /prod/@connections/{id} HTTP/1.1\r\nhost: chat.test\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["connectedAt"].as_str().unwrap().ends_with('Z'));
    let big = "x".repeat(129 << 10);
    let r = c.request(
        format!("POST /@connections/{id} HTTP/1.1\r\nhost: chat.test\r\ncontent-length: {}\r\n\r\n{big}", big.len())
            .as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("PayloadTooLargeException")
    );
    // The body was not read: that connection is closed after the answer.
    let mut c = Client::connect(g.addr());
    // Another stage's name, or more path, is neither @connections nor the API: not found
    // (not 426, which would tell a backend with a wrong callback URL to upgrade).
    let r = c.request(
        format!("GET /dev/@connections/{id} HTTP/1.1\r\nhost: chat.test\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // Other methods: 405 saying which are allowed (RFC 9110 15.5.6); the connection stays.
    let r = c.request(
        format!("PUT /prod/@connections/{id} HTTP/1.1\r\nhost: chat.test\r\ncontent-length: 2\r\n\r\nhi")
            .as_bytes(),
    );
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.header("allow"), Some("GET, POST, DELETE"));
    assert_eq!(r.json(), json!({"message": "Method Not Allowed"}));
    let r = c.request(
        format!("DELETE /@connections/{id} HTTP/1.1\r\nhost: chat.test\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(matches!(ws.read().unwrap(), Message::Close(_)));
}

#[test]
fn connections_authorization_is_checked_at_load() {
    let check = |api_extra: &str| -> String {
        let dir = TempDir::new();
        let path = dir.0.join("c.toml");
        std::fs::write(&path, Cfg::new().api_extra(api_extra).toml()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("--config")
            .arg(&path)
            .arg("check")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{api_extra}: accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check("kind = \"websocket\"\nconnections_authorization = \"jwt\"");
    assert!(
        err.contains("connections_authorization = \"jwt\" is not valid: expected \"aws_iam\""),
        "{err}"
    );
    let err = check("kind = \"websocket\"\nconnections_authorization = \"aws_iam\"");
    assert!(
        err.contains("connections_authorization") && err.contains("[aws_iam]"),
        "{err}"
    );
    let err = check("connections_authorization = \"none\"");
    assert!(err.contains("WebSocket API's key"), "{err}");
}

#[test]
fn a_connections_own_message_rate_holds_whatever_the_route() {
    let g = Gw::start(
        &Cfg::new()
            .limits("websocket_message_rate = { rate = 1, burst = 4 }")
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$default\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"ok\":true}' }\n",
            )
            .toml(),
    );
    let stream = TcpStream::connect(g.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client("ws://chat.test/", stream).unwrap();
    // Twelve at once: at most the burst (and what refills meanwhile) reach the route.
    for _ in 0..12 {
        ws.send(Message::text("hello")).unwrap();
    }
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..12 {
        let Message::Text(t) = ws.read().unwrap() else {
            panic!("a text answer")
        };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["message"] == "Too Many Requests" {
            assert!(v["connectionId"].as_str().is_some(), "{v}");
            refused += 1;
        } else {
            assert_eq!(v, json!({"ok": true}));
            ok += 1;
        }
    }
    assert!((4..=8).contains(&ok), "{ok} admitted");
    assert_eq!(ok + refused, 12);
    // Another connection has its own budget.
    let stream = TcpStream::connect(g.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut other, _) = tungstenite::client("ws://chat.test/", stream).unwrap();
    other.send(Message::text("hello")).unwrap();
    assert_eq!(other.read().unwrap(), Message::text(r#"{"ok":true}"#));
}

#[test]
fn a_push_up_to_the_message_limit_fits_an_empty_queue() {
    // The queue's byte budget (1 MiB) bounds what waits, not one message: up to
    // `limits.websocket_message` goes to a connection with nothing queued.
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = Gw::start(
        &Cfg::new()
            .limits("websocket_message = \"4MiB\"")
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n",
            )
            .toml(),
    );
    let (mut ws, id) = open(&g, &up);
    let big = "p".repeat(2 << 20);
    let r = admin_with(g.admin(), "POST", &format!("/@connections/{id}"), &big);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap(), Message::text(big));
}

/// A call on one API's domain reaches that API's (and stage's) connections only: another
/// API's connection answers 410, as an unknown id (Amazon's callback URL names one API and
/// stage); the admin listener's calls reach any.
#[test]
fn connections_of_another_api_are_not_reached_through_this_one() {
    let up = Upstream::start(|_| respond(200, "{}"));
    let api = |name: &str| {
        format!(
            "[[apis]]\nname = \"{name}\"\nkind = \"websocket\"\nconnections_authorization = \"none\"\n\n  [[apis.stages]]\n  name = \"prod\"\n\n  [[apis.routes]]\n  route = \"$connect\"\n  integration = {{ type = \"http\", uri = \"http://chat/connect\" }}\n\n"
        )
    };
    let toml = format!(
        "[server]\nworkers = 1\n\n[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:0\"\n\n[admin]\naddr = \"127.0.0.1:0\"\n\n[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n\n{}{}[[domains]]\nhost = \"chat.test\"\nmappings = [{{ base_path = \"\", api = \"chat\", stage = \"prod\" }}]\n\n[[domains]]\nhost = \"secret.test\"\nmappings = [{{ base_path = \"\", api = \"secret\", stage = \"prod\" }}]\n",
        up.addr,
        api("chat"),
        api("secret")
    );
    let g = Gw::start(&toml);
    let stream = TcpStream::connect(g.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client("ws://secret.test/", stream).unwrap();
    let id = up
        .requests()
        .iter()
        .filter_map(|s| s.header("x-connection-id").map(str::to_string))
        .next_back()
        .unwrap();
    for (method, body) in [("GET", ""), ("POST", "injected"), ("DELETE", "")] {
        let r = Client::connect(g.addr()).request(
            format!(
                "{method} /@connections/{id} HTTP/1.1\r\nhost: chat.test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 410, "{method}: {}", r.text());
    }
    // Its own API's domain, and the admin listener, reach it.
    let r = Client::connect(g.addr()).request(
        format!("POST /@connections/{id} HTTP/1.1\r\nhost: secret.test\r\ncontent-length: 4\r\nconnection: close\r\n\r\nmine").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap(), Message::text("mine"));
    let r = admin(
        g.admin(),
        "GET",
        &format!("/@connections/{id}"),
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A stage's canary share is the stage to clients: `wss://host/prod` connects, `@connections`
/// at `prod/` reaches the connection whichever share took either request, and the
/// integration is told the stage `prod`.
#[test]
fn a_canary_share_is_its_stage_to_clients() {
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = Gw::start(
        &Cfg::new()
            .admin("")
            .upstream(format!(
                "[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .route("GET /f", "integration = { type = \"mock\", body = \"f\" }")
            .toml(),
    );
    let call = |method: &str, path: &str, body: Value| {
        let r = admin_with(g.admin(), method, path, &body.to_string());
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
        r.json()
    };
    let connect = json!({"type": "http", "uri": "http://chat/connect"});
    call(
        "POST",
        "/apis",
        json!({"name": "chat", "kind": "websocket", "connections_authorization": "none",
               "routes": [{"route": "$connect", "integration": connect}]}),
    );
    let d1 = call("POST", "/apis/chat/deployments", json!({}))["id"].clone();
    let d2 = call("POST", "/apis/chat/deployments", json!({}))["id"].clone();
    call(
        "POST",
        "/apis/chat/stages",
        json!({"name": "prod", "deployment": d1}),
    );
    call(
        "PATCH",
        "/apis/chat/stages/prod",
        json!({"canary": {"deployment": d2, "percent_traffic": 100.0}}),
    );
    call(
        "POST",
        "/domains",
        json!({"host": "chat.test", "base_path": "", "api": "chat", "stage": "prod"}),
    );
    let stream = TcpStream::connect(g.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client("ws://chat.test/prod", stream).unwrap();
    let seen = up.requests();
    let connected = seen.last().unwrap();
    assert_eq!(connected.header("x-stage"), Some("prod"));
    let id = connected.header("x-connection-id").unwrap().to_string();
    let r = Client::connect(g.addr()).request(
        format!("POST /prod/@connections/{id} HTTP/1.1\r\nhost: chat.test\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap(), Message::text("hi"));
    // The canary ends: connections it made are still the stage's.
    let r = admin_with(g.admin(), "DELETE", "/apis/chat/stages/prod/canary", "");
    assert!(r.status < 300, "{}", r.text());
    let r = Client::connect(g.addr()).request(
        format!("POST /prod/@connections/{id} HTTP/1.1\r\nhost: chat.test\r\ncontent-length: 5\r\nconnection: close\r\n\r\nagain").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap(), Message::text("again"));
}
