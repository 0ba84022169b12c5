//! What a shard keeps of the WebSocket connections it holds (its `ws` table), and what
//! reaches a connection's session from outside it.

use std::rc::Rc;

use super::{ShardSnap, Shared};

/// What a shard knows of a WebSocket connection it holds (in `Shard::ws` from its `101` until
/// the gateway decides to close it or it ends: from then on `@connections` answers 410).
pub(crate) struct WsHandle {
    pub tx: flume::Sender<WsPush>,
    /// Closes the connection whatever its queue holds.
    pub close: flume::Sender<Closing>,
    /// The API and stage it was opened on, by name: a reload that removes them closes it.
    pub api: Rc<str>,
    pub stage: Rc<str>,
    pub connected_at_ms: u64,
    pub last_active_ms: Rc<std::cell::Cell<u64>>,
    /// Bytes of pushes queued for the session and not yet taken (at most
    /// `gateway::ws::manage::PUSH_BYTES`).
    pub queued: Rc<std::cell::Cell<usize>>,
    pub source_ip: Rc<str>,
    pub user_agent: String,
}

/// What reaches a connection's session from `@connections`.
pub(crate) enum WsPush {
    Send(Vec<u8>),
}

/// Why the gateway closes a connection from outside its session.
pub(crate) enum Closing {
    /// `@connections` DELETE (1000).
    Deleted,
    /// A reload removed its API or stage (1001); `$disconnect` is called with the integration
    /// of this snapshot, the last one that had them.
    Gone(Rc<ShardSnap>),
}

/// An `@connections` call for another node: its number, the call, where the answer goes.
pub(crate) struct RemoteWs {
    pub node: u32,
    pub method: Vec<u8>,
    pub id: String,
    pub body: Vec<u8>,
    pub scope: Option<WsScope>,
    pub reply: flume::Sender<(u16, String)>,
}

/// An `@connections` command for the shard that holds connection `id`.
pub(crate) struct WsCmd {
    pub id: String,
    pub op: WsOp,
    pub scope: Option<WsScope>,
    pub reply: flume::Sender<WsReply>,
}

/// The API and stage an `@connections` call came through, on the API's own domain: only a
/// connection opened on that API and stage answers it (another's is `410`, as an unknown id:
/// Amazon's callback URL and its `ManageConnections` resource name one API and stage). The
/// admin listener's calls reach any connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsScope {
    pub api: String,
    pub stage: String,
}

impl WsScope {
    /// Whether `h` answers a call of this scope (`None`: the admin listener's, any). A stage's
    /// canary share is the stage: a call that came through either share reaches connections
    /// made through either.
    pub(crate) fn admits(scope: &Option<WsScope>, h: &WsHandle) -> bool {
        use crate::config::stage_of;
        scope
            .as_ref()
            .is_none_or(|s| *s.api == *h.api && stage_of(&s.stage) == stage_of(&h.stage))
    }
}

pub(crate) enum WsOp {
    /// Send this message to the client.
    Post(Vec<u8>),
    /// What is known of the connection.
    Get,
    /// Close it.
    Delete,
}

pub(crate) enum WsReply {
    Done,
    /// No such connection (any more).
    Gone,
    /// Its outgoing queue is full: the client is not reading.
    Full,
    Info(serde_json::Value),
}

/// The node and shard a connection id was made on (`None`: not a connection id).
pub(crate) fn connection_home(id: &str) -> Option<(u32, usize)> {
    use base64::Engine;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .ok()
        .filter(|b| b.len() == CONNECTION_ID_BYTES)?;
    Some((
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]) as usize,
    ))
}

/// A connection id's bytes: the node (4), the shard (2), random (9); 20 characters.
pub(crate) const CONNECTION_ID_BYTES: usize = 15;

/// `@connections/{id}` through the channel of the shard holding the connection (of `scope`'s
/// API and stage, when the call came through one): the status and JSON body to answer. 410 for a connection that is gone (as Amazon's), 429 when its
/// client does not read and its queue is full, 413 for a message over `max_message`.
pub(crate) async fn ws_command(
    shared: &Shared,
    method: &[u8],
    id: &str,
    body: Vec<u8>,
    max_message: usize,
    scope: Option<WsScope>,
) -> (u16, String) {
    let message =
        |status: u16, msg: &str| (status, serde_json::json!({ "message": msg }).to_string());
    let op = match method {
        b"POST" if body.len() > max_message => {
            return message(413, &format!("a message is at most {max_message} bytes"))
        }
        b"POST" => WsOp::Post(body),
        b"GET" => WsOp::Get,
        b"DELETE" => WsOp::Delete,
        _ => return message(405, "Method Not Allowed"),
    };
    let gone = || message(410, "GoneException: the connection is not there");
    let Some((node, shard)) = connection_home(id) else {
        return gone();
    };
    if node != shared.node_id && shared.current().config.cluster.is_none() {
        // No fleet: no node but this one.
        return gone();
    }
    if node != shared.node_id {
        // Another node's: the control plane sends it on through the fleet's Redis.
        let (tx, rx) = flume::bounded(1);
        let body = match op {
            WsOp::Post(b) => b,
            _ => Vec::new(),
        };
        let call = RemoteWs {
            node,
            method: method.to_vec(),
            id: id.to_string(),
            body,
            scope,
            reply: tx,
        };
        if shared.remote_ws.0.try_send(call).is_err() {
            return message(503, "too many @connections calls for other nodes at once");
        }
        return match crate::driver::time::timeout(
            std::time::Duration::from_secs(6),
            rx.recv_async(),
        )
        .await
        {
            Ok(Ok(answer)) => answer,
            // No fleet (the control plane drops the call): no node but this one.
            Ok(Err(_)) => gone(),
            Err(_) => message(503, "the node holding the connection did not answer"),
        };
    }
    if shard >= shared.ws_cmds.len() {
        return gone();
    }
    let (tx, rx) = flume::bounded(1);
    let cmd = WsCmd {
        id: id.to_string(),
        op,
        scope,
        reply: tx,
    };
    if shared.ws_cmds[shard].0.try_send(cmd).is_err() {
        return message(503, "the shard holding the connection is busy");
    }
    match crate::driver::time::timeout(std::time::Duration::from_secs(5), rx.recv_async()).await {
        Ok(Ok(WsReply::Done)) if method == b"DELETE" => (204, String::new()),
        Ok(Ok(WsReply::Done)) => (200, "{}".to_string()),
        Ok(Ok(WsReply::Info(v))) => (200, v.to_string()),
        Ok(Ok(WsReply::Full)) => message(
            429,
            "the connection's outgoing queue is full: its client is not reading",
        ),
        Ok(Ok(WsReply::Gone)) | Ok(Err(_)) => gone(),
        Err(_) => message(503, "the shard holding the connection did not answer"),
    }
}
