//! Limit tables: every gateway, stage and route limit becomes one bucket, indexed by position.
//! Buckets are keyed by what they limit ("gateway", "stage:api/stage", "route:api/stage/KEY")
//! so that a reload keeping a limit's rate keeps its bucket's state.

use std::sync::Arc;

use crate::config::{Config, Rate};
use crate::snapshot::{share, BucketRegistry};
use crate::throttle::bucket::Bucket;

/// The buckets of one compile, built up as limits are met.
pub(super) struct LimitTable<'a> {
    previous: &'a BucketRegistry,
    /// `Some(nodes)` with `[cluster]`: gateway and stage limits are fleet-wide.
    nodes: Option<u64>,
    out: Limits,
    /// This compile's fallback buckets by name: a name met twice (a stage and its canary)
    /// shares one, as it shares its bucket.
    fallbacks: ahash::AHashMap<String, Arc<Bucket>>,
}

/// The finished table.
pub(super) struct Limits {
    pub buckets: Vec<Arc<Bucket>>,
    /// Parallel to `buckets`: the Redis name of a fleet-wide limit.
    pub fleet: Vec<Option<String>>,
    /// Parallel to `buckets`: the node's own share, used while Redis is out.
    pub fallback: Vec<Arc<Bucket>>,
    /// What the next reload starts from.
    pub registry: BucketRegistry,
}

impl<'a> LimitTable<'a> {
    pub(super) fn new(cfg: &Config, previous: &'a BucketRegistry) -> LimitTable<'a> {
        LimitTable {
            previous,
            nodes: cfg.cluster.as_ref().map(|c| c.nodes as u64),
            out: Limits {
                buckets: Vec::new(),
                fleet: Vec::new(),
                fallback: Vec::new(),
                registry: BucketRegistry::new(),
            },
            fallbacks: Default::default(),
        }
    }

    /// Adds the limit named `name` if it has a rate; returns its index.
    pub(super) fn add(&mut self, name: String, rate: Option<Rate>) -> Option<usize> {
        let rate = rate?;
        let out = &mut self.out;
        let shared = self.nodes.is_some() && (name == "gateway" || name.starts_with("stage:"));
        out.fleet.push(shared.then(|| name.clone()));
        let node_share = share(rate, self.nodes.unwrap_or(1));
        let fallback = match self.fallbacks.get(&name) {
            Some(f) if f.rate == node_share => f.clone(),
            _ => Arc::new(Bucket::new(node_share)),
        };
        self.fallbacks.insert(name.clone(), fallback.clone());
        out.fallback.push(fallback);
        // A name met twice in one compile (a stage and its canary) is one bucket.
        // A reload that changes the rate keeps what is in use (no fresh burst at once).
        let b = match out.registry.get(&name).or_else(|| self.previous.get(&name)) {
            Some(b) if b.rate == rate => b.clone(),
            Some(b) => Arc::new(Bucket::after(b, rate, crate::throttle::now_ns())),
            None => Arc::new(Bucket::new(rate)),
        };
        out.registry.insert(name, b.clone());
        out.buckets.push(b);
        Some(out.buckets.len() - 1)
    }

    pub(super) fn finish(self) -> Limits {
        self.out
    }
}
