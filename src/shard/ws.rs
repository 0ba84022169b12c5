//! What a shard keeps of the WebSocket connections it holds (its `ws` table), and what
//! reaches a connection's session from outside it.

use std::rc::Rc;

use super::ShardSnap;

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
