//! Per-core state. A shard owns its view of the current snapshot, its upstream connection
//! pools and per-target counters, and its drain signal; everything here is `Rc`/`Cell`/
//! `RefCell` and is touched by one thread only. What shards share is [`Shared`]: the published
//! snapshot (a generation number read with one relaxed load per request) and the gateway-wide
//! connection count (one atomic per connection, not per request).

// `Shared` is what shards share on purpose: the published snapshot (locked once per new
// generation, not per request), per-key buckets and quota cells (locked when a shard first
// meets a key). Per-request state below stays Rc/Cell/RefCell.
#![allow(clippy::disallowed_types)]

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ahash::AHashMap;

pub(crate) use crate::http::drain::Drain;
use crate::observe::stats::{RouteCells, RouteCounts};
use crate::snapshot::Snapshot;
use crate::throttle::bucket::{Bucket, Rate};
use crate::throttle::lease::Lease;
use crate::throttle::redis::RedisPool;
use crate::throttle::QuotaCell;
pub(crate) use crate::upstream::pool::{Ejection, TargetLocal, UpstreamLocal};

/// How long a per-key lease may sit unused before the shard drops it (60 s).
pub(crate) const KEY_LEASE_IDLE_NS: u64 = 60_000_000_000;

/// Usage counters by (plan name, key id).
pub(crate) type QuotaCells = AHashMap<(Arc<str>, Arc<str>), Arc<QuotaCell>>;

/// How long a deleted key's id stays refused a counter: longer than any request admitted
/// before the deletion can take (an integration's limit is 29 s; a slow body's a few minutes).
pub(crate) const GONE_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// State shared by all shards and the control plane.
pub(crate) struct Shared {
    /// Bumped after `snapshot` is replaced; shards compare it with their own per request.
    pub generation: AtomicU64,
    /// The newest snapshot. Locked only by the control plane on publish and by a shard when
    /// it sees a new generation: never on the per-request path.
    pub snapshot: Mutex<Arc<Snapshot>>,
    /// Set on SIGTERM: stop accepting, finish in-flight requests, close idle connections.
    pub draining: AtomicBool,
    /// Open client connections across all shards (for `limits.max_connections`).
    pub connections: AtomicUsize,
    /// Connections the drain had to cut at `server.drain_timeout` (the exit status says so).
    pub cut: AtomicUsize,
    /// Number of shards (lease sizes depend on it).
    pub shards: usize,
    /// Per-key buckets (usage plan throttles), created on first use. Locked only when a shard
    /// meets a key it has no lease for, and by the control plane's idle sweep.
    pub key_buckets: Mutex<AHashMap<u64, Arc<Bucket>>>,
    /// Quota and usage counters per (plan, key id). Locked on a shard's first use of a key,
    /// and by the control plane's flush.
    pub quotas: Mutex<QuotaCells>,
    /// Key ids deleted in the last [`GONE_FOR`] (at most 10,000), and when: a request
    /// admitted before its key was deleted counts nowhere, rather than bringing the key's
    /// counters back. A key put again under the id (an import of the same name) is taken
    /// off at once. Locked after `quotas`.
    pub gone_keys: Mutex<AHashMap<Arc<str>, std::time::Instant>>,
    /// One published counter row per shard (written by that shard every 100 ms).
    pub metrics: Vec<Arc<crate::metrics::Published>>,
    /// Shards ask the control plane for JWT signing keys they lack here.
    pub key_requests: (
        flume::Sender<crate::auth::jwt::KeyRequest>,
        flume::Receiver<crate::auth::jwt::KeyRequest>,
    ),
    /// The access-log writer thread.
    pub access_log: Arc<crate::observe::writer::LogWriter>,
    /// The trace exporter thread.
    pub traces: Arc<crate::observe::export::Exporter>,
    /// Per shard: its per-route figures as of its last sweep, by label set (written by that
    /// shard every 100 ms when it served requests, read when `/metrics` is scraped).
    pub route_stats: Vec<Mutex<RouteRows>>,
    /// Per shard: its upstream targets' figures as of its last sweep.
    pub target_stats: Vec<Mutex<Vec<(SocketAddr, crate::observe::stats::TargetCounts)>>>,
    /// Per shard: `@connections` commands for the WebSocket connections it holds.
    pub ws_cmds: Vec<(flume::Sender<WsCmd>, flume::Receiver<WsCmd>)>,
    /// This process's number in the fleet (random at start): connection ids carry it, so
    /// that an `@connections` call reaching another node is sent on to this one.
    pub node_id: u32,
    /// `@connections` calls for a connection another node holds, for the control plane to
    /// send on through the fleet's Redis.
    pub remote_ws: (flume::Sender<RemoteWs>, flume::Receiver<RemoteWs>),
    /// Where the fleet's Redis is now (the primary the Sentinels name, with
    /// `cluster.sentinels`).
    pub redis_primary: crate::throttle::redis::Primary,
}

mod ws;
#[cfg(test)]
pub(crate) use ws::connection_home;
pub(crate) use ws::{
    ws_command, Closing, RemoteWs, WsCmd, WsHandle, WsOp, WsPush, WsReply, WsScope,
    CONNECTION_ID_BYTES,
};

/// Per-route figures by label set, as a shard last published them.
pub(crate) type RouteRows = Vec<(Arc<str>, RouteCounts)>;

/// A shard's per-route cells for the compiled config it serves: by series index (the
/// request path's lookup), and by label set (what a reload keeps).
#[derive(Default)]
pub(crate) struct RouteStats {
    /// `Arc::as_ptr` of the `Compiled` that `cells` is indexed for.
    compiled: usize,
    cells: Vec<Rc<RouteCells>>,
    by_label: AHashMap<Arc<str>, Rc<RouteCells>>,
    /// Something was recorded since the last publish.
    dirty: bool,
}

impl Shared {
    pub(crate) fn new(
        snap: Arc<Snapshot>,
        shards: usize,
        access_log: Arc<crate::observe::writer::LogWriter>,
        traces: Arc<crate::observe::export::Exporter>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            generation: AtomicU64::new(snap.generation),
            snapshot: Mutex::new(snap),
            draining: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            cut: AtomicUsize::new(0),
            shards,
            key_buckets: Mutex::new(AHashMap::new()),
            quotas: Mutex::new(AHashMap::new()),
            gone_keys: Mutex::new(Default::default()),
            metrics: (0..shards).map(|_| Default::default()).collect(),
            key_requests: flume::bounded(4096),
            access_log,
            traces,
            route_stats: (0..shards).map(|_| Default::default()).collect(),
            target_stats: (0..shards).map(|_| Default::default()).collect(),
            ws_cmds: (0..shards).map(|_| flume::bounded(4096)).collect(),
            node_id: {
                let mut b = [0u8; 4];
                let _ = getrandom::getrandom(&mut b);
                u32::from_be_bytes(b)
            },
            remote_ws: flume::bounded(4096),
            redis_primary: Default::default(),
        })
    }

    /// Publishes a new snapshot (control plane).
    pub(crate) fn publish(&self, snap: Arc<Snapshot>) {
        let gen = snap.generation;
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snap;
        self.generation.store(gen, Ordering::Release);
    }

    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A target's identity across reloads: its address, over TLS the name it is verified
/// against, and whether it speaks HTTP/2.
type TargetKey = (SocketAddr, Option<String>, bool);
/// An upstream's name and one of its targets.
type EjectionKey = (Arc<str>, TargetKey);

/// A snapshot adopted by a shard, with the shard's per-target state attached.
pub(crate) struct ShardSnap {
    pub snap: Arc<Snapshot>,
    /// This shard's leases on the gateway, stage and route limits (parallel to
    /// `snap.buckets`).
    pub leases: Rc<Vec<Lease>>,
    /// Leases on the node's own share of each limit, used while Redis is out.
    pub fallback_leases: Rc<Vec<Lease>>,
    pub upstreams: Vec<UpstreamLocal>,
    pub literals: Vec<Rc<TargetLocal>>,
}

/// One shard's state.
pub(crate) struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    current: RefCell<Rc<ShardSnap>>,
    generation: Cell<u64>,
    targets: RefCell<AHashMap<TargetKey, Rc<TargetLocal>>>,
    /// Each upstream's ejection state per target, by upstream name and target (kept across
    /// reloads, as the targets' pools are).
    ejections: RefCell<AHashMap<EjectionKey, Rc<Ejection>>>,
    pub drain: Rc<Drain>,
    /// Client connections open on this shard.
    pub active: Cell<usize>,
    id_prefix: u64,
    next_request: Cell<u64>,
    /// Leases on per-key buckets, by bucket id; idle ones are dropped by [`Shard::sweep`].
    key_leases: RefCell<AHashMap<u64, Rc<Lease>>>,
    /// Quota cells this shard has used, by (plan, key) hash.
    quota_cells: RefCell<AHashMap<u64, Arc<QuotaCell>>>,
    /// Connections to Redis (`[cluster]`), this shard's own.
    redis: RefCell<Option<Rc<RedisPool>>>,
    /// Whether the last Redis call failed (for one log line per outage).
    redis_down: Cell<bool>,
    /// This shard's counters.
    pub metrics: crate::metrics::Local,
    /// Fleet-wide quota requests this shard holds: id -> (period, requests left, refused
    /// until (ns) when Redis said the quota is spent, the plan's limit then).
    quota_leases: RefCell<AHashMap<u64, (i64, u64, u64, u64)>>,
    /// Repeated failures, logged once per kind and target, then summarised by the sweep.
    pub repeats: crate::observe::RepeatLog,
    /// Connections refused at `limits.max_connections`, for a warning at most once a minute.
    pub refusals: crate::observe::RefusalLog,
    /// JWTs this shard verified, for their next uses.
    pub tokens: RefCell<crate::auth::jwt::TokenCache>,
    /// The WebSocket connections this shard holds, by connection id.
    pub ws: RefCell<AHashMap<String, WsHandle>>,
    /// The snapshot the WebSocket reaper last compared the connections with (kept while any
    /// are open): the one a connection whose API a reload removed calls `$disconnect` with.
    pub ws_seen: RefCell<Option<Rc<ShardSnap>>>,
    /// SigV4 signing keys derived here, by access key and credential date (four HMACs
    /// saved per signed request); cleared when it reaches 4,096.
    pub sigv4_keys: RefCell<SigningKeys>,
    /// Access-log lines not yet handed to the writer, per destination.
    pub logs: RefCell<crate::observe::writer::Buffers>,
    /// Per-route figures.
    stats: RefCell<RouteStats>,
    /// Trace and span ids.
    pub ids: crate::observe::trace::Ids,
}

impl Drop for Shard {
    /// Connections cut at the drain timeout end (and record their requests) as the shard's
    /// runtime drops them, after its last sweep: their lines still reach the writer.
    fn drop(&mut self) {
        self.flush_logs();
    }
}

/// SigV4 signing keys by (access key id, credential date `YYYYMMDD`), with the region each
/// was derived for (`[aws_iam] region` may change by reload).
pub(crate) type SigningKeys = AHashMap<(Arc<str>, [u8; 8]), (Box<str>, ring::hmac::Key)>;

/// Bytes of verified JWTs a shard keeps (about 4,000 typical tokens).
const TOKEN_CACHE_BYTES: u64 = 8 << 20;

impl Shard {
    pub(crate) fn new(id: usize, shared: Arc<Shared>) -> Rc<Shard> {
        let snap = shared.current();
        let gen = snap.generation;
        let shard = Shard {
            id,
            shared,
            current: RefCell::new(Rc::new(ShardSnap {
                snap: snap.clone(),
                leases: Rc::new(Vec::new()),
                fallback_leases: Rc::new(Vec::new()),
                upstreams: Vec::new(),
                literals: Vec::new(),
            })),
            generation: Cell::new(gen),
            targets: RefCell::new(AHashMap::new()),
            ejections: RefCell::new(AHashMap::new()),
            drain: Rc::new(Drain::default()),
            active: Cell::new(0),
            id_prefix: ahash::RandomState::new().hash_one(id) & 0xffff_ffff_ffff_0000
                | id as u64 & 0xffff,
            next_request: Cell::new(0),
            key_leases: RefCell::new(AHashMap::new()),
            quota_cells: RefCell::new(AHashMap::new()),
            redis: RefCell::new(None),
            redis_down: Cell::new(false),
            metrics: Default::default(),
            quota_leases: RefCell::new(AHashMap::new()),
            repeats: crate::observe::RepeatLog::new(
                snap.config.server.log_summary_interval.as_nanos() as u64,
            ),
            refusals: Default::default(),
            tokens: RefCell::new(crate::auth::jwt::TokenCache::new(TOKEN_CACHE_BYTES)),
            ws: RefCell::new(AHashMap::new()),
            ws_seen: RefCell::new(None),
            sigv4_keys: RefCell::new(AHashMap::new()),
            logs: RefCell::new(Default::default()),
            stats: RefCell::new(Default::default()),
            ids: Default::default(),
        };
        shard.adopt(snap);
        Rc::new(shard)
    }

    /// The snapshot to serve the next request with; adopts a newer one if published.
    /// One relaxed load when nothing changed.
    /// On drain, after the last client connection: drops pooled upstream connections and the
    /// HTTP/2 connections' handles (their drivers then end and close the sockets).
    pub(crate) fn release_upstreams(&self) {
        for t in self.targets.borrow().values() {
            t.h2_conns.borrow_mut().clear();
            t.idle.borrow_mut().clear();
        }
    }

    pub(crate) fn snapshot(&self) -> Rc<ShardSnap> {
        // Acquire (a plain load on x86): a snapshot published before an admin answer is seen by
        // any request that follows it.
        if self.shared.generation.load(Ordering::Acquire) != self.generation.get() {
            let snap = self.shared.current();
            if snap.generation != self.generation.get() {
                self.adopt(snap);
            }
        }
        self.current.borrow().clone()
    }

    /// Attaches this shard's per-target state (pools survive reloads) to a new snapshot.
    fn adopt(&self, snap: Arc<Snapshot>) {
        self.logs
            .borrow_mut()
            .reset(&snap.log_sinks, &self.shared.access_log);
        let compiled = Arc::as_ptr(&snap.compiled) as usize;
        let mut stats = self.stats.borrow_mut();
        if stats.compiled != compiled {
            // Figures of routes the new config keeps carry on; the others go.
            let mut old = std::mem::take(&mut stats.by_label);
            let cells: Vec<Rc<RouteCells>> = snap
                .series
                .iter()
                .map(|l| old.remove(l).unwrap_or_default())
                .collect();
            stats.by_label = snap
                .series
                .iter()
                .cloned()
                .zip(cells.iter().cloned())
                .collect();
            stats.cells = cells;
            stats.compiled = compiled;
            stats.dirty = true;
        }
        drop(stats);
        self.repeats
            .set_interval(snap.config.server.log_summary_interval.as_nanos() as u64);
        let mut targets = self.targets.borrow_mut();
        for t in targets.values() {
            t.idle_for.set(std::time::Duration::ZERO);
        }
        // A target is its address and, over TLS, the name it is verified against; its idle
        // connections are kept as long as the upstream that keeps them longest says.
        let mut get = |a: SocketAddr,
                       tls: &Option<crate::tls::client::UpTls>,
                       h2: bool,
                       keep: std::time::Duration| {
            let key = (a, tls.as_ref().map(|t| t.pool_key()), h2);
            let t = targets
                .entry(key)
                .or_insert_with(|| TargetLocal::new(a))
                .clone();
            *t.tls.borrow_mut() = tls.clone();
            t.h2.set(h2);
            t.idle_for.set(t.idle_for.get().max(keep));
            t
        };
        let mut ejections = self.ejections.borrow_mut();
        let mut eject_used = ahash::AHashSet::new();
        let upstreams = snap
            .upstreams
            .iter()
            .map(|u| UpstreamLocal {
                eject: u
                    .cfg
                    .targets
                    .iter()
                    .zip(&u.tls)
                    .map(|(a, tls)| {
                        let key: Arc<str> = u.cfg.name.as_str().into();
                        let k = (key, (*a, tls.as_ref().map(|t| t.pool_key()), u.cfg.h2));
                        eject_used.insert(k.clone());
                        ejections.entry(k).or_default().clone()
                    })
                    .collect(),
                targets: u
                    .cfg
                    .targets
                    .iter()
                    .zip(&u.tls)
                    .map(|(a, tls)| get(*a, tls, u.cfg.h2, u.cfg.keepalive_timeout))
                    .collect(),
                rr: Cell::new(self.id),
            })
            .collect();
        let literals = snap
            .literal_targets
            .iter()
            .map(|l| {
                let keep = crate::config::DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT;
                get(l.addr, &l.tls, false, keep)
            })
            .collect();
        // Targets no longer named anywhere lose their pools.
        let used: ahash::AHashSet<TargetKey> = snap
            .upstreams
            .iter()
            .flat_map(|u| {
                u.cfg
                    .targets
                    .iter()
                    .zip(&u.tls)
                    .map(|(a, t)| (*a, t.as_ref().map(|t| t.pool_key()), u.cfg.h2))
            })
            .chain(
                snap.literal_targets
                    .iter()
                    .map(|l| (l.addr, l.tls.as_ref().map(|t| t.pool_key()), false)),
            )
            .collect();
        targets.retain(|a, _| used.contains(a));
        ejections.retain(|k, _| eject_used.contains(k));
        drop(ejections);
        // Same compiled config (only the keys changed): keep the leases.
        let (leases, fallback_leases) = {
            let cur = self.current.borrow();
            if Arc::ptr_eq(&cur.snap.compiled, &snap.compiled)
                && cur.leases.len() == snap.buckets.len()
            {
                (cur.leases.clone(), cur.fallback_leases.clone())
            } else {
                // Fleet-wide leases are sized for every shard of every node.
                let nodes = snap
                    .config
                    .cluster
                    .as_ref()
                    .map(|c| c.nodes as usize)
                    .unwrap_or(1);
                let leases = snap
                    .buckets
                    .iter()
                    .zip(&snap.fleet)
                    .map(|(b, f)| {
                        Lease::new(
                            b.clone(),
                            self.shared.shards * if f.is_some() { nodes } else { 1 },
                        )
                    })
                    .collect();
                let fallback = snap
                    .fallback
                    .iter()
                    .map(|b| Lease::new(b.clone(), self.shared.shards))
                    .collect();
                (Rc::new(leases), Rc::new(fallback))
            }
        };
        self.generation.set(snap.generation);
        tracing::debug!(
            shard = self.id,
            generation = snap.generation,
            "adopted configuration"
        );
        *self.current.borrow_mut() = Rc::new(ShardSnap {
            snap,
            leases,
            fallback_leases,
            upstreams,
            literals,
        });
    }

    /// This shard's Redis connections for `[cluster]`.
    pub(crate) fn redis(
        &self,
        c: &crate::config::Cluster,
        tls: Option<&crate::tls::client::UpTls>,
    ) -> Rc<RedisPool> {
        let mut r = self.redis.borrow_mut();
        // With Sentinels the primary is read again only when it moved.
        let version = if c.sentinels.is_empty() {
            0
        } else {
            self.shared.redis_primary.version()
        };
        let kept = match &*r {
            // (A reload that changed the password makes a new pool: its connections
            // authenticate with the new one; one that changed the timeout, one that waits
            // that long.)
            Some(p)
                if p.auth != c.auth
                    || p.timeout != c.timeout
                    // TLS by what it verifies and presents, not by the compile that
                    // built it: every recompile (an admin change) made a new one, and a
                    // new pool of handshakes on requests' paths.
                    || p.tls.as_ref().map(|t| (&t.name, &t.trust))
                        != tls.map(|t| (&t.name, &t.trust)) =>
            {
                None
            }
            Some(p) if c.sentinels.is_empty() && p.version == 0 && p.addr == Some(c.redis) => {
                Some(p.clone())
            }
            // (Version 0, no primary named yet: the pool without an address, which fails
            // every call at once.)
            Some(p)
                if !c.sentinels.is_empty()
                    && p.version == version
                    && (version != 0 || p.addr.is_none()) =>
            {
                Some(p.clone())
            }
            _ => None,
        };
        kept.unwrap_or_else(|| {
            let addr = self.shared.redis_primary.addr(c);
            let p = Rc::new(RedisPool::new(
                addr,
                version,
                c.timeout,
                c.auth.clone(),
                tls.cloned(),
            ));
            *r = Some(p.clone());
            p
        })
    }

    /// Notes a Redis failure: one log line when an outage starts.
    pub(crate) fn redis_failed(&self, e: &str, fallback: crate::config::OnRedisError) {
        self.metrics.add(crate::metrics::Counter::RedisFallbacks);
        if !self.redis_down.replace(true) {
            tracing::warn!(shard = self.id, error = %e, ?fallback, "Redis unreachable: fleet-wide limits fall back");
        }
    }

    pub(crate) fn redis_ok(&self) {
        if self.redis_down.replace(false) {
            tracing::info!(
                shard = self.id,
                "Redis reachable again: fleet-wide limits restored"
            );
        }
    }

    /// Spends one request of a fleet-wide quota lease held for `period`: `Some(true)` spent,
    /// `Some(false)` refused (Redis said the quota of `limit` is spent less than a second
    /// ago), `None` ask Redis.
    pub(crate) fn quota_take_local(&self, id: u64, period: i64, limit: u64) -> Option<bool> {
        let mut q = self.quota_leases.borrow_mut();
        match q.get_mut(&id) {
            Some((p, left, _, _)) if *p == period && *left > 0 => {
                *left -= 1;
                Some(true)
            }
            Some((p, 0, until, l))
                if *p == period && limit <= *l && crate::throttle::now_ns() < *until =>
            {
                Some(false)
            }
            _ => None,
        }
    }

    /// Whether Redis said less than a second ago that the quota of `limit` is spent in
    /// `period` (as [`Shard::quota_take_local`]'s `Some(false)`, taking nothing).
    pub(crate) fn quota_known_spent(&self, id: u64, period: i64, limit: u64) -> bool {
        matches!(
            self.quota_leases.borrow().get(&id),
            Some((p, 0, until, l))
                if *p == period && limit <= *l && crate::throttle::now_ns() < *until
        )
    }

    pub(crate) fn quota_fill(&self, id: u64, period: i64, left: u64) {
        self.quota_leases
            .borrow_mut()
            .insert(id, (period, left, 0, 0));
    }

    /// Remembers for a second that a fleet-wide quota of `limit` is spent.
    pub(crate) fn quota_spent(&self, id: u64, period: i64, limit: u64) {
        self.quota_leases.borrow_mut().insert(
            id,
            (period, 0, crate::throttle::now_ns() + 1_000_000_000, limit),
        );
    }

    /// This shard's lease on a per-key bucket, created (with its global bucket) on first use.
    pub(crate) fn key_lease(&self, id: u64, rate: Rate) -> Rc<Lease> {
        self.key_lease_for(id, rate, 1)
    }

    /// As [`Shard::key_lease`], with leases sized for `nodes` nodes (fleet-wide limits).
    pub(crate) fn key_lease_for(&self, id: u64, rate: Rate, nodes: usize) -> Rc<Lease> {
        if let Some(l) = self.key_leases.borrow().get(&id) {
            if l.bucket.rate == rate {
                return l.clone();
            }
        }
        let bucket = {
            let mut all = self
                .shared
                .key_buckets
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let b = all.entry(id).or_insert_with(|| Arc::new(Bucket::new(rate)));
            if b.rate != rate {
                *b = Arc::new(Bucket::after(b, rate, crate::throttle::now_ns()));
            }
            b.clone()
        };
        let lease = Rc::new(Lease::new(bucket, self.shared.shards * nodes.max(1)));
        self.key_leases.borrow_mut().insert(id, lease.clone());
        lease
    }

    /// The usage counters of `key` under `plan`.
    pub(crate) fn quota_cell(&self, plan: &str, key: &Arc<str>) -> Arc<QuotaCell> {
        let h = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one((plan, &**key));
        if let Some(c) = self.quota_cells.borrow().get(&h) {
            return c.clone();
        }
        let cell = {
            let mut all = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            let gone = || {
                self.shared
                    .gone_keys
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&**key)
                    .is_some_and(|at| at.elapsed() < GONE_FOR)
            };
            match all.entry((Arc::from(plan), key.clone())) {
                std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                std::collections::hash_map::Entry::Vacant(_) if gone() => {
                    return Arc::new(QuotaCell::default())
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Default::default()).clone()
                }
            }
        };
        self.quota_cells.borrow_mut().insert(h, cell.clone());
        cell
    }

    /// Periodic housekeeping: gives back stale lease tokens and drops idle per-key leases.
    pub(crate) fn sweep(&self, now: u64) {
        if let Some(row) = self.shared.metrics.get(self.id) {
            self.metrics.publish(row);
        }
        crate::observe::flush_repeats(&self.repeats, self.id, now);
        if let Some(n) = self.refusals.due(now) {
            let max = self.snapshot().snap.limits.max_connections;
            crate::observe::warn_refused(self.id, n, max);
        }
        self.flush_logs();
        self.publish_routes();
        self.publish_targets();
        // Idle upstream connections past their keepalive_timeout are closed, as nginx closes
        // them (not held, with their descriptors, until the next request to the target).
        let clock = crate::driver::time::now();
        for t in self.targets.borrow().values() {
            t.prune(clock);
        }
        for l in self.current.borrow().leases.iter() {
            l.release(now, false);
        }
        self.key_leases.borrow_mut().retain(|_, l| {
            l.release(now, false);
            let keep = now.saturating_sub(l.last_used.get()) < KEY_LEASE_IDLE_NS;
            if !keep {
                l.release(now, true);
            }
            keep
        });
        if self.quota_cells.borrow().len() > 10_000 {
            self.quota_cells.borrow_mut().clear();
        }
        // Fleet-wide quota leases: drop spent ones; a shard holds at most a few requests each.
        let mut q = self.quota_leases.borrow_mut();
        if q.len() > 10_000 {
            q.retain(|_, (_, left, _, _)| *left > 0);
        }
    }

    /// Runs `f` on the cells of route series `i` of the snapshot `ss` (a request that
    /// outlived its snapshot finds its route by label, if the new config kept it).
    pub(crate) fn with_route(&self, ss: &ShardSnap, i: usize, f: impl FnOnce(&RouteCells)) {
        let mut stats = self.stats.borrow_mut();
        stats.dirty = true;
        if stats.compiled == Arc::as_ptr(&ss.snap.compiled) as usize {
            if let Some(c) = stats.cells.get(i) {
                f(c);
            }
        } else if let Some(c) = ss.snap.series.get(i).and_then(|l| stats.by_label.get(l)) {
            f(c);
        }
    }

    /// Copies the upstream targets' figures where the control plane reads them.
    fn publish_targets(&self) {
        let rows = self
            .targets
            .borrow()
            .values()
            .map(|t| {
                let c = t
                    .stats
                    .copy(t.idle.borrow().len() as u64, t.inflight.get() as u64);
                (t.addr, c)
            })
            .collect();
        if let Some(slot) = self.shared.target_stats.get(self.id) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = rows;
        }
    }

    /// Copies the per-route figures where the control plane reads them.
    fn publish_routes(&self) {
        let mut stats = self.stats.borrow_mut();
        if !stats.dirty {
            return;
        }
        stats.dirty = false;
        let rows = stats
            .by_label
            .iter()
            .map(|(l, c)| (l.clone(), c.copy()))
            .collect();
        if let Some(slot) = self.shared.route_stats.get(self.id) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = rows;
        }
    }

    /// Hands the buffered access-log lines to the writer.
    pub(crate) fn flush_logs(&self) {
        self.logs.borrow_mut().flush(&self.shared.access_log);
    }

    /// Whether to log this failure in full: the first of its kind (`what`, target, status)
    /// in the interval is; the rest are counted and summarised by the sweep.
    pub(crate) fn log_first(
        &self,
        what: &'static str,
        target: Option<SocketAddr>,
        status: u16,
    ) -> bool {
        self.repeats
            .first((what, target, status), crate::throttle::now_ns())
    }

    /// A new request id: 32 hex digits, unique per process.
    pub(crate) fn request_id(&self) -> crate::http::RequestId {
        let n = self.next_request.get();
        self.next_request.set(n + 1);
        crate::http::RequestId::generated(self.id_prefix, n)
    }
}
