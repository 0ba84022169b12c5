//! `@connections` across the fleet: a connection id names the node holding it; a call that
//! reaches another node is published on that node's Redis channel (`tollgate:ws:{node}`),
//! which every node subscribes to, and the answer comes back on the caller's. Redis pub/sub
//! fits here as it does not for changes: a call is worth nothing once its caller gave up,
//! and a node that is gone has no connections. A publish no node receives, again for 1.2 s
//! (a node resubscribing after a Redis blip), is 410: the node and its connections are gone.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::resp::Resp;
use super::Link;
use crate::shard::{RemoteWs, Shared};

/// How long a caller waits for the node holding the connection.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// A call no node received is published again this many times, this far apart, before it is
/// answered 410: a node holding the connection may be resubscribing.
const RETRIES: usize = 12;
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Calls to other nodes, and calls from them, in flight at once (each way): past it a call
/// to another node is answered 503 at once, and one from another node is dropped (its caller
/// answers 503 when its wait ends) — no caller can make this node hold unbounded tasks.
const MAX_IN_FLIGHT: usize = 1024;

/// Counts a call in flight for as long as it lives.
struct InFlight(Rc<Cell<usize>>);

impl InFlight {
    fn enter(n: &Rc<Cell<usize>>) -> Option<InFlight> {
        (n.get() < MAX_IN_FLIGHT).then(|| {
            n.set(n.get() + 1);
            InFlight(n.clone())
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

fn channel(node: u32) -> String {
    format!("tollgate:ws:{node}")
}

/// Serves the shards' calls for other nodes' connections, and other nodes' calls for this
/// node's, for as long as the control plane runs.
pub(crate) async fn serve(shared: Arc<Shared>, link: Rc<Link>, stop: Rc<Cell<bool>>) {
    crate::driver::spawn(subscribe(shared.clone(), link.clone(), stop.clone()));
    let rx = shared.remote_ws.1.clone();
    let (sending, me) = (Rc::new(Cell::new(0)), shared.node_id);
    while let Ok(call) = rx.recv_async().await {
        let Some(guard) = InFlight::enter(&sending) else {
            let busy = json!({ "message": "too many @connections calls to other nodes in flight; try again" });
            let _ = call.reply.try_send((503, busy.to_string()));
            continue;
        };
        let link = link.clone();
        crate::driver::spawn(async move {
            send(me, link, call).await;
            drop(guard);
        });
    }
}

/// One call to another node: published, then its answer awaited.
async fn send(me: u32, link: Rc<Link>, call: RemoteWs) {
    let req = link.next_req.get() + 1;
    link.next_req.set(req);
    let (tx, rx) = flume::bounded(1);
    link.waiters.borrow_mut().insert(req, tx);
    let payload = json!({
        "from": me,
        "req": req,
        "method": String::from_utf8_lossy(&call.method),
        "id": call.id,
        "body": base64::engine::general_purpose::STANDARD.encode(&call.body),
        "api": call.scope.as_ref().map(|s| &s.api),
        "stage": call.scope.as_ref().map(|s| &s.stage),
    })
    .to_string();
    let message = |status: u16, m: &str| (status, json!({ "message": m }).to_string());
    // Nobody subscribed: the node is gone — or between connections to Redis (it reconnects
    // every second, and subscribes as it starts): asked again for a little while first.
    let mut published = link.publish(&channel(call.node), &payload).await;
    for _ in 0..RETRIES {
        if !matches!(published, Ok(0)) {
            break;
        }
        crate::driver::time::sleep(RETRY_PAUSE).await;
        published = link.publish(&channel(call.node), &payload).await;
    }
    let answer = match published {
        Ok(0) => message(410, "GoneException: the connection is not there"),
        Ok(_) => match crate::driver::time::timeout(ANSWER_WAIT, rx.recv_async()).await {
            Ok(Ok(a)) => a,
            _ => message(503, "the node holding the connection did not answer"),
        },
        Err(e) => message(
            503,
            &format!("the fleet's Redis cannot be reached ({e}) to reach the node holding the connection"),
        ),
    };
    link.waiters.borrow_mut().remove(&req);
    let _ = call.reply.try_send(answer);
}

/// This node's channel: calls from other nodes (answered) and answers to this node's calls.
async fn subscribe(shared: Arc<Shared>, link: Rc<Link>, stop: Rc<Cell<bool>>) {
    let mine = channel(shared.node_id);
    let serving = Rc::new(Cell::new(0));
    while !stop.get() {
        let (at, mut c) = match link.connect().await {
            Ok(c) => c,
            Err(_) => {
                crate::driver::time::sleep(super::POLL).await;
                continue;
            }
        };
        if c.call(&[b"SUBSCRIBE", mine.as_bytes()], link.timeout)
            .await
            .is_err()
        {
            crate::driver::time::sleep(super::POLL).await;
            continue;
        }
        // Until the Sentinels name another primary: then subscribe there.
        while !stop.get() && !link.moved(at) {
            match c.next(super::POLL).await {
                Ok(None) => continue,
                Ok(Some(r)) => {
                    let items = r.items();
                    if items.first().and_then(Resp::text) != Some("message") {
                        continue;
                    }
                    let Some(v) = items
                        .get(2)
                        .and_then(Resp::bytes)
                        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    else {
                        continue;
                    };
                    handle(&shared, &link, &serving, v);
                }
                Err(_) => break,
            }
        }
    }
}

fn handle(shared: &Arc<Shared>, link: &Rc<Link>, serving: &Rc<Cell<usize>>, v: Value) {
    if let Some(re) = v["re"].as_u64() {
        // An answer to one of this node's calls.
        let waiter = link.waiters.borrow_mut().remove(&re);
        if let Some(tx) = waiter {
            let status = v["status"].as_u64().unwrap_or(503) as u16;
            let _ = tx.try_send((status, v["body"].as_str().unwrap_or_default().to_string()));
        }
        return;
    }
    let (Some(from), Some(req), Some(method), Some(id)) = (
        v["from"].as_u64(),
        v["req"].as_u64(),
        v["method"].as_str(),
        v["id"].as_str(),
    ) else {
        return;
    };
    let body = base64::engine::general_purpose::STANDARD
        .decode(v["body"].as_str().unwrap_or_default())
        .unwrap_or_default();
    let Some(guard) = InFlight::enter(serving) else {
        tracing::debug!(
            "fleet: an @connections call from another node dropped: too many in flight"
        );
        return;
    };
    let (shared, link) = (shared.clone(), link.clone());
    let (method, id) = (method.as_bytes().to_vec(), id.to_string());
    // A call made through an API's domain reaches that API's and stage's connections only.
    let scope = match (v["api"].as_str(), v["stage"].as_str()) {
        (Some(api), Some(stage)) => Some(crate::shard::WsScope {
            api: api.to_string(),
            stage: stage.to_string(),
        }),
        _ => None,
    };
    crate::driver::spawn(async move {
        let _guard = guard;
        let max = shared.current().limits.websocket_message as usize;
        let (status, body) =
            crate::shard::ws_command(&shared, &method, &id, body, max, scope).await;
        let answer = json!({ "re": req, "status": status, "body": body }).to_string();
        let _ = link.publish(&channel(from as u32), &answer).await;
    });
}
