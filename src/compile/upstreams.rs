//! Upstreams: per target, the health flag shards read (kept across reloads for targets that
//! stay) and how to speak TLS to it.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ahash::AHashMap;

use crate::config::Config;
use crate::snapshot::{HealthRegistry, UpstreamRt};
use crate::tls::client::UpTls;

/// Builds each upstream's run-time form; `clients` holds each upstream's TLS client config
/// (from [`super::tls::upstream_clients`]). Returns the health flags the next reload keeps.
pub(super) fn compile(
    cfg: &Config,
    clients: Vec<Option<Arc<rustls::ClientConfig>>>,
    previous: &HealthRegistry,
) -> (Vec<UpstreamRt>, HealthRegistry) {
    let mut fresh: HealthRegistry = AHashMap::new();
    let upstreams = cfg
        .upstreams
        .iter()
        .zip(clients)
        .map(|(u, client)| UpstreamRt {
            cfg: u.clone(),
            healthy: u
                .targets
                .iter()
                .map(|t| {
                    let key = (u.name.clone(), *t);
                    // What the checks found so far stays; without checks now, a target is
                    // up (one they had marked down stayed down for good).
                    let flag = previous
                        .get(&key)
                        .filter(|_| u.health.is_some())
                        .cloned()
                        .unwrap_or_else(|| Arc::new(AtomicBool::new(true)));
                    fresh.insert(key, flag.clone());
                    flag
                })
                .collect(),
            tls: u
                .targets
                .iter()
                .zip(&u.hosts)
                .map(|(_, host)| {
                    let t = u.tls.as_ref()?;
                    let name = t.server_name.as_deref().unwrap_or(host);
                    let cert = t.cert.as_deref().zip(t.key.as_deref());
                    Some(UpTls {
                        config: client.clone()?,
                        name: crate::tls::client::server_name(name).ok()?,
                        trust: UpTls::trust_of(t.ca.as_deref(), cert),
                    })
                })
                .collect(),
        })
        .collect();
    (upstreams, fresh)
}
