//! A message waiting on a slow integration: replies to earlier messages and pushes still go
//! out, other connections are not held, later messages are answered after it, in order; and
//! `@connections` DELETE, idle, lifetime, a drain and the client's Close end the wait rather
//! than wait for it, and the client's pings are answered meanwhile.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};

use super::*;

/// A backend's answers held until the test lets them go.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<(usize, bool)>, Condvar)>);

impl Gate {
    /// Called by the backend: counts the call, then waits until [`Gate::open`].
    fn hold(&self) {
        let (m, c) = &*self.0;
        let mut g = m.lock().unwrap();
        g.0 += 1;
        c.notify_all();
        let _ = c.wait_timeout_while(g, IO_TIMEOUT * 3, |g| !g.1).unwrap();
    }

    /// Waits until `n` calls are held (the gateway is waiting on them).
    fn held(&self, n: usize) {
        let (m, c) = &*self.0;
        let g = m.lock().unwrap();
        let (g, _) = c.wait_timeout_while(g, IO_TIMEOUT, |g| g.0 < n).unwrap();
        assert!(g.0 >= n, "{} calls held, expected {n}", g.0);
    }

    fn open(&self) {
        let (m, c) = &*self.0;
        m.lock().unwrap().1 = true;
        c.notify_all();
    }
}

/// `slow` (held by the gate) and `echo` answer the message's body back; `ping` is a mock.
fn gateway_with_gate(limits: &str) -> (Gw, Upstream, Gate) {
    let gate = Gate::default();
    let held = gate.clone();
    let up = Upstream::start(move |s| {
        if s.target == "/slow" {
            held.hold();
        }
        respond(200, &String::from_utf8_lossy(&s.body))
    });
    let g = Gw::start(
        &Cfg::new()
            .limits(limits)
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n\
                 [[apis.routes]]\nroute = \"echo\"\nroute_response = true\nintegration = { type = \"http\", uri = \"http://chat/echo\" }\n\
                 [[apis.routes]]\nroute = \"slow\"\nroute_response = true\nintegration = { type = \"http\", uri = \"http://chat/slow\" }\n\
                 [[apis.routes]]\nroute = \"ping\"\nroute_response = true\nintegration = { type = \"mock\", status = 200, body = '{\"pong\":true}' }\n\
                 [[apis.routes]]\nroute = \"$disconnect\"\nintegration = { type = \"http\", uri = \"http://chat/disconnect\" }\n",
            )
            .toml(),
    );
    (g, up, gate)
}

/// Masked text frames, to be sent in one write.
pub(crate) fn frames(texts: &[&str]) -> Vec<u8> {
    let mask = [7u8, 1, 9, 4];
    let mut out = Vec::new();
    for t in texts {
        out.push(0x81);
        match t.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(t.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }
    out
}

/// The id `$connect`'s integration heard last.
fn last_id(up: &Upstream) -> String {
    up.requests()
        .iter()
        .rev()
        .find(|s| s.target == "/connect")
        .and_then(|s| s.header("x-connection-id").map(str::to_string))
        .unwrap()
}

/// The `$disconnect` calls the backend got, once there is one.
fn disconnects(up: &Upstream) -> Vec<Seen> {
    assert!(eventually(Duration::from_secs(10), || up
        .requests()
        .iter()
        .any(|s| s.target == "/disconnect")));
    up.requests()
        .into_iter()
        .filter(|s| s.target == "/disconnect")
        .collect()
}

/// Reads until the gateway's Close, answers it: its code and reason.
fn close_frame(ws: &mut WebSocket<TcpStream>) -> Option<(CloseCode, String)> {
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => {
                let _ = ws.flush();
                return f.map(|f| (f.code, f.reason.to_string()));
            }
            Ok(_) => continue,
            Err(e) => panic!("no Close: {e}"),
        }
    }
}

#[test]
fn a_slow_integration_holds_later_messages_not_earlier_replies_pushes_or_other_connections() {
    let (g, up, gate) = gateway_with_gate("");
    let mut ws = open(&g, "").expect("upgrade");
    let id = last_id(&up);
    // One write: a quick message, a slow one, a quick one.
    let (first, slow, third) = (
        r#"{"action":"echo","n":1}"#,
        r#"{"action":"slow","n":2}"#,
        r#"{"action":"echo","n":3}"#,
    );
    ws.get_mut()
        .write_all(&frames(&[first, slow, third]))
        .unwrap();
    // The first is answered while the slow one waits on its integration.
    assert_eq!(ws.read().unwrap(), Message::text(first));
    gate.held(1);
    // A push reaches the client meanwhile.
    let r = admin_with(g.admin(), "POST", &format!("/@connections/{id}"), "pushed");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap(), Message::text("pushed"));
    // Another connection is not held.
    let mut other = open(&g, "").expect("upgrade");
    other.send(Message::text(r#"{"action":"ping"}"#)).unwrap();
    assert_eq!(next_text(&mut other), json!({"pong": true}));
    // Once the slow one is answered, the message after it is, in order.
    gate.open();
    assert_eq!(ws.read().unwrap(), Message::text(slow));
    assert_eq!(ws.read().unwrap(), Message::text(third));
}

#[test]
fn at_connections_delete_ends_a_wait_on_an_integration() {
    let (g, up, gate) = gateway_with_gate("");
    let mut ws = open(&g, "").expect("upgrade");
    let id = last_id(&up);
    let slow: Vec<String> = (0..4)
        .map(|i| format!(r#"{{"action":"slow","i":{i}}}"#))
        .collect();
    let slow: Vec<&str> = slow.iter().map(String::as_str).collect();
    ws.get_mut().write_all(&frames(&slow)).unwrap();
    gate.held(1);
    let r = admin_with(g.admin(), "DELETE", &format!("/@connections/{id}"), "");
    assert_eq!(r.status, 204, "{}", r.text());
    // The client's read timeout (10 s) is well inside the integration's (29 s).
    assert_eq!(
        close_frame(&mut ws),
        Some((CloseCode::Normal, String::new()))
    );
    // $disconnect hears of it once.
    let d = disconnects(&up);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].header("x-disconnect-status-code"), Some("1000"));
    gate.open();
}

#[test]
fn idle_and_lifetime_end_a_wait_on_an_integration() {
    for (limits, why) in [
        ("upgrade_idle_timeout = \"1s\"", "idle"),
        ("websocket_lifetime = \"1s\"", "connection lifetime reached"),
    ] {
        let (_g, _up, gate) = gateway_with_gate(limits);
        let mut ws = open(&_g, "").expect("upgrade");
        ws.send(Message::text(r#"{"action":"slow"}"#)).unwrap();
        gate.held(1);
        assert_eq!(
            close_frame(&mut ws),
            Some((CloseCode::Away, why.to_string())),
            "{limits}"
        );
        gate.open();
    }
}

#[test]
fn a_drain_ends_a_wait_on_an_integration() {
    let (mut g, _up, gate) = gateway_with_gate("");
    let mut ws = open(&g, "").expect("upgrade");
    ws.send(Message::text(r#"{"action":"slow"}"#)).unwrap();
    gate.held(1);
    let stopper = std::thread::spawn(move || g.shutdown());
    assert_eq!(
        close_frame(&mut ws),
        Some((CloseCode::Away, "the gateway is going away".to_string()))
    );
    stopper.join().unwrap();
    gate.open();
}

#[test]
fn pings_are_answered_and_a_close_is_taken_while_a_message_waits() {
    let (g, up, gate) = gateway_with_gate("");
    let mut ws = open(&g, "").expect("upgrade");
    // A slow message, a message after it, then a ping: the ping's pong comes before either
    // message is answered (the client's read timeout, 10 s, is inside the integration's 29 s).
    ws.get_mut()
        .write_all(&frames(&[
            r#"{"action":"slow"}"#,
            r#"{"action":"echo","n":2}"#,
        ]))
        .unwrap();
    gate.held(1);
    ws.send(Message::Ping(vec![1, 2, 3].into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(vec![1, 2, 3].into()));
    // The client's Close is answered and ends the wait: $disconnect hears its code.
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye".into(),
    }))
    .unwrap();
    match ws.read() {
        Ok(Message::Close(f)) => assert_eq!(f.map(|f| f.code), Some(CloseCode::Library(4001))),
        Ok(m) => panic!("{m:?} before the Close"),
        Err(e) => panic!("no Close: {e}"),
    }
    // What the client sent before its Close is still its data: the slow call is waited
    // for, the message behind it is called, then $disconnect (their answers have nowhere to
    // go).
    gate.open();
    let d = disconnects(&up);
    assert_eq!(d[0].header("x-disconnect-status-code"), Some("4001"));
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/connect", "/slow", "/echo", "/disconnect"]);
}

/// A message sent with the Close in one write, to an integration whose connection is not
/// open yet, is called before $disconnect (it was dropped with the connection).
#[test]
fn a_message_sent_with_the_close_is_delivered() {
    let up = Upstream::start(|s| respond(200, &String::from_utf8_lossy(&s.body)));
    // $connect is a mock: no connection to the backend is open when the message comes.
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes(
                "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"mock\" }\n\
                 [[apis.routes]]\nroute = \"echo\"\nintegration = { type = \"http\", uri = \"http://chat/echo\" }\n\
                 [[apis.routes]]\nroute = \"$disconnect\"\nintegration = { type = \"http\", uri = \"http://chat/disconnect\" }\n",
            )
            .toml(),
    );
    let mut ws = open(&g, "").expect("upgrade");
    let mut out = frames(&[r#"{"action":"echo","n":1}"#]);
    // A masked Close, code 1000.
    let mask = [3u8, 5, 7, 9];
    out.extend_from_slice(&[0x88, 0x82]);
    out.extend_from_slice(&mask);
    out.extend(
        [0x03u8, 0xe8]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]),
    );
    ws.get_mut().write_all(&out).unwrap();
    let _ = ws.read();
    disconnects(&up);
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/echo", "/disconnect"]);
}
