//! The control plane: one thread, off the data cores. It loads and validates configuration,
//! compiles snapshots and publishes them to the shards, runs health checks, serves the admin
//! API, and leads the drain on shutdown.
//!
//! A reload is all or nothing: a file with any error is refused whole (every error logged and,
//! for `POST /reload`, returned) and the old snapshot keeps serving. Shards adopt a new
//! snapshot between requests; a request in flight finishes on the one it started with.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::Config;
use crate::runtime::ShardMsg;
use crate::shard::Shared;
use crate::snapshot::{HealthRegistry, Snapshot};

/// Requests to the control plane from other threads (signals, the embedding program).
pub enum ControlMsg {
    Reload(Option<flume::Sender<Result<u64, Vec<String>>>>),
    Shutdown,
}

/// The control plane's state. Lives on the control thread only.
pub struct Control {
    config_path: Option<PathBuf>,
    workers_override: Option<usize>,
    shared: Arc<Shared>,
    health: HealthRegistry,
    /// The generation whose health checks should run; older check tasks see it and stop.
    live: Rc<Cell<u64>>,
    current: Arc<Config>,
}

impl Control {
    pub fn new(
        config_path: Option<PathBuf>,
        workers_override: Option<usize>,
        shared: Arc<Shared>,
        health: HealthRegistry,
    ) -> Control {
        let snap = shared.current();
        Control {
            config_path,
            workers_override,
            live: Rc::new(Cell::new(snap.generation)),
            current: snap.config.clone(),
            shared,
            health,
        }
    }

    pub fn generation(&self) -> u64 {
        self.live.get()
    }

    pub fn config(&self) -> Arc<Config> {
        self.current.clone()
    }

    /// Reloads the config file; on success publishes it and returns the new generation.
    pub fn reload(&mut self) -> Result<u64, Vec<String>> {
        let result = self.try_reload();
        match &result {
            Ok(g) => tracing::info!(generation = g, "configuration reloaded"),
            Err(errors) => {
                for e in errors {
                    tracing::error!(error = %e, "reload refused");
                }
            }
        }
        result
    }

    fn try_reload(&mut self) -> Result<u64, Vec<String>> {
        let Some(path) = &self.config_path else {
            return Err(vec![
                "this gateway was started without a config file; nothing to reload".into(),
            ]);
        };
        let mut cfg = Config::load(path).map_err(|e| e.errors)?;
        if let Some(w) = self.workers_override {
            cfg.server.workers = w;
        }
        let old = &self.current;
        let mut errors = Vec::new();
        let same_listeners = cfg.listeners.len() == old.listeners.len()
            && cfg
                .listeners
                .iter()
                .zip(&old.listeners)
                .all(|(a, b)| a.name == b.name && a.addr == b.addr);
        if !same_listeners {
            errors.push("listeners: adding, removing or moving listeners needs a restart; the reload changes them".to_string());
        }
        if cfg.admin.as_ref().map(|a| a.addr) != old.admin.as_ref().map(|a| a.addr) {
            errors.push("admin.addr: moving the admin API needs a restart".to_string());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if cfg.server.workers != old.server.workers
            || cfg.server.driver != old.server.driver
            || cfg.server.cpus != old.server.cpus
        {
            tracing::warn!(
                "server.workers, server.driver and server.cpus take effect at the next restart"
            );
        }
        let generation = self.live.get() + 1;
        let mut health = self.health.clone();
        let snap =
            Snapshot::compile(Arc::new(cfg), generation, &mut health).map_err(|e| vec![e])?;
        let snap = Arc::new(snap);
        self.health = health;
        self.current = snap.config.clone();
        self.live.set(generation);
        self.shared.publish(snap.clone());
        start_health_checks(&snap, &self.live);
        Ok(generation)
    }
}

/// Spawns one check task per target of every upstream with `health`.
pub fn start_health_checks(snap: &Snapshot, live: &Rc<Cell<u64>>) {
    for u in &snap.upstreams {
        let Some(h) = &u.cfg.health else { continue };
        for (i, addr) in u.cfg.targets.iter().enumerate() {
            monoio::spawn(crate::upstream::health::run_checks(
                u.cfg.name.clone(),
                *addr,
                h.clone(),
                u.healthy[i].clone(),
                snap.generation,
                live.clone(),
            ));
        }
    }
}

/// The control thread's main task: admin API, health checks, and messages until shutdown.
pub async fn run(
    ctl: Rc<RefCell<Control>>,
    rx: flume::Receiver<ControlMsg>,
    admin: Option<(std::net::TcpListener, String)>,
    shards: Vec<flume::Sender<ShardMsg>>,
) {
    {
        let c = ctl.borrow();
        start_health_checks(&c.shared.current(), &c.live);
    }
    if let Some((l, token)) = admin {
        match monoio::net::TcpListener::from_std(l) {
            Ok(l) => {
                monoio::spawn(crate::admin::serve(
                    l,
                    Rc::from(token.as_str()),
                    ctl.clone(),
                ));
            }
            Err(e) => tracing::error!(error = %e, "admin API cannot use its socket"),
        }
    }
    // Runs until a shutdown message, or until every sender is gone.
    while let Ok(ControlMsg::Reload(reply)) = rx.recv_async().await {
        let r = ctl.borrow_mut().reload();
        if let Some(reply) = reply {
            let _ = reply.send(r);
        }
    }
    tracing::info!("shutting down: draining connections");
    let c = ctl.borrow();
    c.shared.draining.store(true, Ordering::Relaxed);
    c.live.set(u64::MAX);
    for s in &shards {
        let _ = s.send(ShardMsg::Drain);
    }
}
