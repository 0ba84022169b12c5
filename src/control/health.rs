//! Active health checks: one probe task per target of every upstream with `health`, for
//! the configuration generation that is live.

use super::*;

/// Spawns one check task per target of every upstream with `health`.
pub(crate) fn start_health_checks(compiled: &Compiled, generation: u64, live: &Rc<Cell<u64>>) {
    crate::upstream::health::keep_runs(|name, addr| {
        compiled
            .upstreams
            .iter()
            .any(|u| u.cfg.name == name && u.cfg.health.is_some() && u.cfg.targets.contains(&addr))
    });
    for u in &compiled.upstreams {
        let Some(h) = &u.cfg.health else { continue };
        for (i, addr) in u.cfg.targets.iter().enumerate() {
            let target = crate::upstream::health::Probe {
                upstream: u.cfg.name.clone(),
                addr: *addr,
                tls: u.tls[i].clone(),
                h2: u.cfg.h2,
            };
            crate::driver::spawn(crate::upstream::health::run_checks(
                target,
                h.clone(),
                u.healthy[i].clone(),
                generation,
                live.clone(),
            ));
        }
    }
}
