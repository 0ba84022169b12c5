//! The gateway's own closes: once the gateway decides to close a connection (`@connections` DELETE, a reload that removes its API) `@connections` answers
//! 410 at once, the close takes effect even while its writer is stalled, and `$disconnect`
//! hears why.

use super::*;

/// `$connect` and `$disconnect` recorded; `big` answers `reply` bytes (two-way).
fn api(reply: usize) -> (Upstream, Gw) {
    let body = "r".repeat(reply);
    let up = Upstream::start(move |s| {
        if s.target == "/big" {
            return respond(200, &body);
        }
        respond(200, "{}")
    });
    let g = Gw::start(&conf(&up, "chat"));
    (up, g)
}

fn conf(up: &Upstream, name: &str) -> String {
    Cfg::new()
        .api(name)
        .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
        .api_extra("kind = \"websocket\"")
        .routes(
            "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n\
             [[apis.routes]]\nroute = \"big\"\nroute_response = true\nintegration = { type = \"http\", uri = \"http://chat/big\" }\n\
             [[apis.routes]]\nroute = \"$disconnect\"\nintegration = { type = \"http\", uri = \"http://chat/disconnect\" }\n",
        )
        .toml()
}

/// The id `$connect` was told of, for the `n`th connection.
fn connection_id(up: &Upstream, n: usize) -> String {
    let ids: Vec<String> = up
        .requests()
        .iter()
        .filter(|s| s.target == "/connect")
        .filter_map(|s| s.header("x-connection-id").map(str::to_string))
        .collect();
    ids[n].clone()
}

/// `$disconnect`'s calls: (connection, status code, reason).
fn disconnects(up: &Upstream) -> Vec<(String, String, String)> {
    up.requests()
        .iter()
        .filter(|s| s.target == "/disconnect")
        .map(|s| {
            let h = |n| s.header(n).unwrap_or_default().to_string();
            (
                h("x-connection-id"),
                h("x-disconnect-status-code"),
                h("x-disconnect-reason"),
            )
        })
        .collect()
}

#[test]
fn a_deleted_connection_is_gone_at_once_though_the_client_has_not_answered() {
    let (up, g) = api(10);
    let mut ws = open(&g, "").unwrap();
    let id = connection_id(&up, 0);
    let at = format!("/@connections/{id}");
    assert_eq!(admin_with(g.admin(), "DELETE", &at, "").status, 204);
    // The client has not read the Close yet: the connection is closing, not there.
    for m in ["GET", "POST", "DELETE"] {
        let r = admin_with(g.admin(), m, &at, "late");
        assert_eq!(r.status, 410, "{m}: {}", r.text());
        assert_eq!(r.header("x-amzn-errortype"), Some("GoneException"));
    }
    assert_eq!(close_code(&mut ws), Some(CloseCode::Normal));
    assert!(eventually(IO_TIMEOUT, || !disconnects(&up).is_empty()));
    assert_eq!(
        disconnects(&up),
        vec![(id, "1000".into(), "closed through @connections".into())]
    );
}

#[test]
fn a_delete_takes_effect_while_the_writer_is_stalled() {
    let (up, g) = api(10);
    let _ws = slow_client(&g);
    let id = connection_id(&up, 0);
    let at = format!("/@connections/{id}");
    // Pushes to a client that reads nothing, until its queue is full.
    let big = "b".repeat(100 << 10);
    assert!(
        (0..2000).any(|_| admin_with(g.admin(), "POST", &at, &big).status == 429),
        "the queue never filled"
    );
    let started = std::time::Instant::now();
    assert_eq!(admin_with(g.admin(), "DELETE", &at, "").status, 204);
    assert_eq!(admin_with(g.admin(), "GET", &at, "").status, 410);
    assert_eq!(admin_with(g.admin(), "POST", &at, "x").status, 410);
    // The client cannot read the Close behind what is queued: the gateway gives up waiting
    // for its answer (3 s), drops what is unwritten and says why.
    assert!(eventually(IO_TIMEOUT, || !disconnects(&up).is_empty()));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(
        disconnects(&up),
        vec![(id, "1000".into(), "closed through @connections".into())]
    );
}

#[test]
fn a_reload_that_removes_the_api_closes_its_connections_and_calls_disconnect() {
    let (up, g) = api(10);
    let mut ws = open(&g, "").unwrap();
    let id = connection_id(&up, 0);
    // The API is renamed: the connection's API is gone.
    g.rewrite(&conf(&up, "other"));
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    // Closed at the reload (1001, as a drain), without the client sending anything.
    assert_eq!(close_code(&mut ws), Some(CloseCode::Away));
    let r = admin_with(g.admin(), "GET", &format!("/@connections/{id}"), "");
    assert_eq!(r.status, 410, "{}", r.text());
    // `$disconnect` of the configuration the connection was opened under.
    assert!(eventually(IO_TIMEOUT, || !disconnects(&up).is_empty()));
    assert_eq!(
        disconnects(&up),
        vec![(id, "1001".into(), "the API or stage is gone".into())]
    );
}

/// A reload that removes the API while a connection's `$connect` still runs (after the other
/// connections were closed for it): once upgraded, the connection is closed as those were,
/// and its `$disconnect` runs with the configuration it was opened under.
#[test]
fn a_connection_whose_api_goes_while_connect_runs_is_closed_and_disconnected() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    // The second `$connect` waits until the test lets it go (at most IO_TIMEOUT).
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let connects = Arc::new(AtomicUsize::new(0));
    let (g2, c2) = (gate.clone(), connects.clone());
    let up = Upstream::start(move |s| {
        if s.target == "/connect" && c2.fetch_add(1, Ordering::SeqCst) == 1 {
            let (open, cv) = &*g2;
            let held = open.lock().unwrap();
            let _unused = cv.wait_timeout_while(held, IO_TIMEOUT, |o| !*o).unwrap();
        }
        respond(200, "{}")
    });
    let g = Gw::start(&conf(&up, "chat"));
    let mut first = open(&g, "").unwrap();
    let addr = g.addr();
    let second = std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tungstenite::client("ws://chat.test/", stream)
            .map(|(ws, _)| ws)
            .ok()
    });
    assert!(eventually(IO_TIMEOUT, || connects.load(Ordering::SeqCst) == 2));
    g.rewrite(&conf(&up, "other"));
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    // The first connection is closed by the reload.
    assert_eq!(close_code(&mut first), Some(CloseCode::Away));
    // Then the second's `$connect` answers: upgraded, and closed the same way.
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    let mut second = second.join().unwrap().expect("upgraded");
    assert_eq!(close_code(&mut second), Some(CloseCode::Away));
    let id = connection_id(&up, 1);
    assert!(eventually(IO_TIMEOUT, || disconnects(&up).len() == 2));
    assert!(
        disconnects(&up).contains(&(id, "1001".into(), "the API or stage is gone".into())),
        "{:?}",
        disconnects(&up)
    );
}
