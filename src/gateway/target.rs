//! Target selection: which target of an upstream a request goes to (round robin, least
//! request, or a stable hash of the client address or a header), skipping ejected and
//! unhealthy targets, and the pool settings for a destination.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::ctx::RequestCtx;
use crate::config::{
    Balance, HashKey, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE,
    DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
};
use crate::error::{Error, Kind};
use crate::shard::ShardSnap;
use crate::snapshot::Dest;
use crate::upstream::{usable, Ejection, PoolCfg, TargetLocal};

impl PoolCfg {
    /// Pool and failure settings for a destination.
    pub(crate) fn for_dest(ss: &ShardSnap, dest: &Dest) -> PoolCfg {
        match dest {
            Dest::Upstream(u) => {
                let c = &ss.snap.upstreams[*u].cfg;
                PoolCfg {
                    keepalive: c.keepalive,
                    keepalive_timeout: c.keepalive_timeout,
                    connect_timeout: c.connect_timeout,
                    max_fails: c.max_fails,
                    fail_timeout: c.fail_timeout,
                }
            }
            // A literal address is one target: never ejected (nginx ignores max_fails with a
            // single server), pooled with the defaults.
            Dest::Literal(_) => PoolCfg {
                keepalive: DEFAULT_KEEPALIVE,
                keepalive_timeout: DEFAULT_UPSTREAM_KEEPALIVE_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
                max_fails: 0,
                fail_timeout: Duration::ZERO,
            },
        }
    }
}

/// Fixed seeds: the same key picks the same target on every shard and every node.
fn stable_hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(0x7f4a_7c15, 0x9e37_79b9, 0x6a09_e667, 0xbb67_ae85)
}

/// A target as [`select`] chose it: its connections (shared by the upstreams that name the
/// same address), the upstream's ejection state for it (none for a literal URI's target), and
/// whether every healthy target was ejected (so ejection was set aside).
pub(crate) struct Picked {
    pub target: Rc<TargetLocal>,
    pub eject: Option<Rc<Ejection>>,
    pub all_ejected: bool,
}

/// Chooses a target for a request, skipping `exclude` (a target that just failed). The flag
/// says that every healthy target was ejected (passive health), so ejection was set aside
/// and the target is one of them: the last healthy targets are never all taken out of
/// service (nginx ignores `max_fails` for a single server; Envoy has a panic threshold).
pub(crate) fn select(
    ss: &ShardSnap,
    dest: &Dest,
    ctx: &RequestCtx,
    peer: SocketAddr,
    exclude: Option<SocketAddr>,
) -> Result<Picked, Error> {
    let u = match dest {
        Dest::Literal(i) => {
            return Ok(Picked {
                target: ss.literals[*i].clone(),
                eject: None,
                all_ejected: false,
            })
        }
        Dest::Upstream(u) => *u,
    };
    let local = &ss.upstreams[u];
    let rt = &ss.snap.upstreams[u];
    let n = local.targets.len();
    let ok = |i: usize| {
        let t = &local.targets[i];
        Some(t.addr) != exclude && usable(&local.eject[i], rt.healthy[i].load(Ordering::Relaxed))
    };
    let pick = match &rt.cfg.balance {
        Balance::RoundRobin => {
            let start = local.rr.get();
            local.rr.set(start.wrapping_add(1));
            (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
        }
        Balance::LeastRequest => {
            let start = local.rr.get();
            local.rr.set(start.wrapping_add(1));
            (0..n)
                .map(|k| (start + k) % n)
                .filter(|&i| ok(i))
                .min_by_key(|&i| local.targets[i].inflight.get())
        }
        Balance::Hash(key) => {
            let h = match key {
                // The client behind a trusted proxy, where there is one.
                HashKey::ClientIp => {
                    stable_hasher().hash_one(ctx.forwarded.as_ref().map_or(peer.ip(), |f| f.0))
                }
                HashKey::Header(name) => {
                    stable_hasher().hash_one(ctx.head.header(name.as_bytes()).unwrap_or_default())
                }
            };
            let start = (h % n as u64) as usize;
            (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
        }
    };
    let picked = |i: usize, all_ejected| Picked {
        target: local.targets[i].clone(),
        eject: Some(local.eject[i].clone()),
        all_ejected,
    };
    if let Some(i) = pick {
        return Ok(picked(i, false));
    }
    // Nothing usable. If healthy targets are only ejected, balance over them anyway.
    let healthy =
        |i: usize| Some(local.targets[i].addr) != exclude && rt.healthy[i].load(Ordering::Relaxed);
    let start = local.rr.get();
    local.rr.set(start.wrapping_add(1));
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| healthy(i))
        .map(|i| picked(i, true))
        .ok_or_else(|| {
            Error::upstream(
                Kind::NoHealthyUpstream,
                format!("no healthy target in upstream {:?}", rt.cfg.name),
            )
        })
}
