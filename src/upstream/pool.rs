//! A shard's view of its upstream targets: per target the idle keep-alive connections, the
//! shared HTTP/2 connection, in-flight and failure counts. Touched by its shard only.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// An idle upstream connection and when it was parked.
pub(crate) struct Idle {
    pub stream: super::UpStream,
    pub since: Instant,
}

/// One of a target's HTTP/2 connections on this shard.
pub(crate) struct H2Conn {
    pub sender: h2::client::SendRequest<bytes::Bytes>,
    pub id: u64,
    /// Streams under way on it, from checkout until their answer is relayed (each
    /// [`super::h2::H2Up`] holds one).
    pub active: std::rc::Rc<Cell<usize>>,
}

/// One upstream target as this shard sees it.
pub(crate) struct TargetLocal {
    pub addr: SocketAddr,
    /// TLS to this target (the config is replaced on reload; pooled connections stay).
    pub tls: RefCell<Option<crate::tls::client::UpTls>>,
    /// Spoken to over HTTP/2 (`protocol = "h2"`), through shared connections.
    pub h2: Cell<bool>,
    /// Its HTTP/2 connections, the first kept while idle; more open while each carries
    /// [`super::H2_STREAMS_PER_CONN`] streams, and go once idle.
    pub h2_conns: RefCell<Vec<H2Conn>>,
    /// Counts the connections opened: a stream knows which one it went on.
    pub h2_conn_id: Cell<u64>,
    /// A connection is being opened; requests that need one wait here.
    pub h2_opening: Cell<bool>,
    pub h2_waiters: RefCell<Vec<std::task::Waker>>,
    /// Idle keep-alive connections, most recently used last (LIFO reuse keeps few warm).
    pub idle: RefCell<std::collections::VecDeque<Idle>>,
    /// Requests in flight from this shard (least_request).
    pub inflight: Cell<u32>,
    /// The most requests in flight at once in the current demand window, and in the one
    /// before (how many connections the pool keeps; see `upstream::checkin`).
    pub peak: Cell<u32>,
    pub prev_peak: Cell<u32>,
    pub peak_since: Cell<Instant>,
    /// Connections opened and failed, ejections, connect times (for `/metrics`).
    pub stats: crate::observe::stats::TargetCells,
    /// It answered more than [`BIG_ANSWER`] (or without a length) at least once: its
    /// connections receive one buffer per operation, so that a client that reads a big
    /// answer slowly cannot make the shard hold it; a target that only answers small keeps
    /// multishot receives (no operation per answer). A new connection is bounded until its
    /// first answer shows it small.
    pub big: Cell<bool>,
    /// The longest `keepalive_timeout` of the upstreams that name this target: an idle
    /// connection older than that is closed by the shard's sweep ([`TargetLocal::prune`]),
    /// not kept open until the next request.
    pub idle_for: Cell<Duration>,
}

impl TargetLocal {
    /// Closes the idle connections that no checkout would take any more (older than
    /// [`TargetLocal::idle_for`]); the oldest are at the front.
    pub(crate) fn prune(&self, now: Instant) {
        let limit = self.idle_for.get();
        let mut idle = self.idle.borrow_mut();
        while idle
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.since) >= limit)
        {
            idle.pop_front();
        }
    }
}

/// An answer over this many bytes (one receive buffer) marks its target [`TargetLocal::big`].
pub(crate) const BIG_ANSWER: u64 = 64 << 10;

impl TargetLocal {
    pub(crate) fn new(addr: SocketAddr) -> Rc<TargetLocal> {
        Rc::new(TargetLocal {
            addr,
            tls: RefCell::new(None),
            h2: Cell::new(false),
            h2_conns: RefCell::new(Vec::new()),
            h2_conn_id: Cell::new(0),
            h2_opening: Cell::new(false),
            h2_waiters: RefCell::new(Vec::new()),
            idle: RefCell::new(std::collections::VecDeque::new()),
            inflight: Cell::new(0),
            peak: Cell::new(0),
            prev_peak: Cell::new(0),
            peak_since: Cell::new(Instant::now()),
            stats: Default::default(),
            big: Cell::new(false),
            idle_for: Cell::new(Duration::ZERO),
        })
    }
}

/// One upstream's passive-ejection state for one of its targets. Upstreams that name the same
/// address share its connections, not its failures: each counts its own against its own
/// `max_fails` (0: never ejected by this upstream, whatever another sees).
#[derive(Debug, Default)]
pub(crate) struct Ejection {
    /// Consecutive failures.
    pub fails: Cell<u32>,
    /// Not used until then after `max_fails` consecutive failures.
    pub down_until: Cell<Option<Instant>>,
}

pub(crate) struct UpstreamLocal {
    pub targets: Vec<Rc<TargetLocal>>,
    /// Each target's ejection state, in this upstream.
    pub eject: Vec<Rc<Ejection>>,
    /// Round-robin cursor.
    pub rr: Cell<usize>,
}
