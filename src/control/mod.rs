//! The control plane: one thread, off the data cores. It loads and validates configuration,
//! compiles snapshots and publishes them to the shards, owns the state store and the API
//! keys, flushes usage counters, runs health checks, serves the admin API, and leads the drain
//! on shutdown.
//!
//! A reload is all or nothing: a file with any error is refused whole (every error logged and,
//! for `POST /reload`, returned) and the old snapshot keeps serving. Shards adopt a new
//! snapshot between requests; a request in flight finishes on the one it started with. Key
//! changes publish a new snapshot that shares the compiled configuration.

mod access;
pub(crate) mod fleet;
mod handover;
mod health;
mod jwks;
mod keys;
mod lifecycle;
mod reload;
mod status;
pub(crate) mod store;
pub(crate) mod usage;

pub(crate) use access::{AccessKeyUpdate, NewAccessKey};
pub(crate) use handover::{final_flush, UsageDelta};
pub(crate) use health::start_health_checks;
use keys::key_table;
pub(crate) use keys::{file_key_clashes, NewKey};
pub(crate) use lifecycle::{check_stored, Edit, Part};
use reload::certs_changed;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, KeyRecord, KeyTable};
use crate::compile::Registries;
use crate::config::Config;
use crate::runtime::ShardMsg;
use crate::shard::Shared;
use crate::snapshot::{Compiled, Snapshot};
use crate::throttle::{self, QuotaCell};
use store::{QuotaState, Store, StoredKey};

/// Usage counters reach the state store within this (1 s): a crash loses at most this much
/// counted usage; a clean shutdown loses none.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Idle per-key buckets no shard holds are dropped after this sweep finds them (every 10 s).
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Requests to the control plane from other threads (signals, the embedding program).
pub(crate) enum ControlMsg {
    Reload(Option<flume::Sender<Result<u64, Vec<String>>>>),
    Shutdown,
    /// A successor takes over: flush and close the state store, answer (serving on).
    Release(flume::Sender<Result<(), String>>),
    /// The successor serves: stop accepting and drain.
    Commit,
    /// The successor failed to start after the release: reopen the store, serve on.
    Abort,
    /// Usage a predecessor counted after it handed over the store (exactly one such message
    /// follows `AwaitUsage`: empty when the predecessor went away without sending it).
    AddUsage(Vec<UsageDelta>),
    /// A predecessor drains and will send what it counted meanwhile: this process waits for
    /// it before it stops, so that it reaches this process's store or successor (a second
    /// take-over before the first drain ended lost it).
    AwaitUsage,
}

/// Why an admin operation failed: the HTTP status and the message.
#[derive(Debug)]
pub(crate) struct OpError(pub u16, pub String);

fn bad(msg: impl Into<String>) -> OpError {
    OpError(400, msg.into())
}

/// The longest description an admin object takes (Amazon API Gateway's limit).
const MAX_DESCRIPTION: usize = 1024;

/// The longest name an API key takes (Amazon API Gateway's key files allow 1024 characters;
/// a key is addressed by its id, never by its name).
const MAX_KEY_NAME: usize = 1024;

/// A display name (an API key's): 1 to 1024 characters, no control characters.
fn check_display_name(name: &str) -> Result<(), OpError> {
    if name.trim().is_empty()
        || name.chars().count() > MAX_KEY_NAME
        || name.chars().any(char::is_control)
    {
        return Err(bad("name: 1 to 1024 characters, no control characters"));
    }
    Ok(())
}

/// A description: at most 1024 characters, no control characters but tab and newline.
fn check_description(d: &str) -> Result<(), OpError> {
    if d.chars().count() > MAX_DESCRIPTION
        || d.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(bad(
            "description: at most 1024 characters, no control characters but tab and newline",
        ));
    }
    Ok(())
}

/// An object's name (an API's, a stage's): 1 to 128 letters, digits, '_' or '-'.
fn check_object_name(name: &str) -> Result<(), OpError> {
    if name.len() > crate::config::MAX_NAME || !crate::syntax::template::is_ident(name) {
        let shown: String = name.chars().take(64).collect();
        let more = if shown.len() < name.len() { "..." } else { "" };
        return Err(bad(format!(
            "name = \"{shown}{more}\" is not valid: expected 1 to 128 letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}
/// The control plane's state. Lives on the control thread only.
pub(crate) struct Control {
    config_path: Option<PathBuf>,
    workers_override: Option<usize>,
    shared: Arc<Shared>,
    /// What a reload keeps: health flags, bucket states, caches.
    registries: Registries,
    /// The configuration generation whose health checks should run; older check tasks stop.
    live: Rc<Cell<u64>>,
    generation: u64,
    compiled: Arc<Compiled>,
    /// `None` once closed at shutdown (the file lock is released then), or while a store
    /// whose write failed waits to be reopened ([`Control::heal_store`]).
    store: Option<Store>,
    /// The state directory the store lives in (fixed until restart).
    state_dir: PathBuf,
    /// The store is closed because a write failed, not for shutdown.
    store_broken: bool,
    /// A write fault lasts (writes failed since the last one that worked): its start and
    /// end are logged once each, not every reopen while it lasts (a full disk).
    store_fault: bool,
    /// The store was handed to a successor (no more flushes here).
    released: bool,
    /// The successor serves (it answers the admin API now, on the same socket).
    handed_over: bool,
    /// A predecessor's drain usage has not arrived yet.
    awaiting_usage: bool,
    /// The usage counters as they were flushed for the successor: what the drain counts
    /// after that goes to the successor as deltas ([`final_flush`]).
    released_at: ahash::AHashMap<(Arc<str>, Arc<str>), [u64; 4]>,
    /// Writes that failed, and times the store was reopened after one (for `/metrics`).
    store_failures: u64,
    store_reopens: u64,
    stored_keys: Vec<StoredKey>,
    /// JWT signing keys per key source, and the channels their fetches report on.
    jwks: ahash::AHashMap<Arc<str>, jwks::JwksState>,
    channels: jwks::JwksChannels,
    /// SigV4 access keys: the key that seals their secrets (or why there is none), the
    /// stored keys, and the table the shards look callers up in.
    secrets_key: Result<Arc<crate::auth::access::SecretsKey>, String>,
    stored_access: Vec<store::StoredAccessKey>,
    access: Arc<crate::auth::access::AccessKeyTable>,
    /// The configuration as the file says it (run-time objects are merged into a copy).
    file_config: Arc<Config>,
    /// Run-time APIs, deployments, stages and domain mappings.
    objects: lifecycle::Objects,
    /// The fleet's Redis (`[cluster] redis`): the source of truth of run-time objects.
    fleet: Option<Rc<fleet::Link>>,
    /// While an admin call's change of run-time APIs is planned for the fleet: the objects
    /// as they were, and its writes (JSON, or `None` to delete) by stored key.
    planned: Option<(
        lifecycle::Objects,
        std::collections::BTreeMap<String, Option<String>>,
    )>,
}

/// Everything the control plane starts with, prepared on the starting thread (so that a bad
/// state store stops start-up there) and moved to the control thread.
pub(crate) struct ControlInit {
    config_path: Option<PathBuf>,
    workers_override: Option<usize>,
    /// What a reload keeps: health flags, bucket states, caches.
    registries: Registries,
    compiled: Arc<Compiled>,
    store: Store,
    stored_keys: Vec<StoredKey>,
    secrets_key: Result<Arc<crate::auth::access::SecretsKey>, String>,
    stored_access: Vec<store::StoredAccessKey>,
    access: Arc<crate::auth::access::AccessKeyTable>,
    file_config: Arc<Config>,
    objects: lifecycle::Objects,
}

impl ControlInit {
    /// Compiles `cfg` and loads the stored keys; returns the init and the first snapshot.
    pub(crate) fn prepare(
        cfg: Config,
        config_path: Option<PathBuf>,
        workers_override: Option<usize>,
        store: Store,
    ) -> Result<(ControlInit, Arc<Snapshot>), String> {
        let mut registries = Registries::default();
        let objects = lifecycle::Objects::load(&store)?;
        let base = config_path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let (merged, skipped, waiting) = objects.merge(&cfg, &base);
        for e in &skipped {
            tracing::warn!(error = %e, "a run-time object is not served as stored");
        }
        for w in &waiting {
            tracing::warn!(what = %w, "waits for a run-time stage");
        }
        let file_config = Arc::new(cfg);
        let compiled = Arc::new(
            lifecycle::compile_merged(merged, &file_config, &mut registries)
                .map_err(|e| e.to_string())?,
        );
        let stored_keys = store.keys()?;
        let mut clashes = keys::file_key_clashes(&file_config, &stored_keys);
        clashes.extend(keys::stored_key_plan_clashes(&compiled, &stored_keys));
        keys::refuse_clashes(&file_config, clashes).map_err(|c| c.join("\n"))?;
        let keys = Arc::new(key_table(&compiled.config, &compiled, &stored_keys));
        let secrets_key = access::secrets_key(&compiled.config);
        let stored_access = store.access_keys()?;
        let access = Arc::new(access::access_table(&secrets_key, &stored_access));
        let snap = Arc::new(Snapshot {
            generation: 1,
            jwks: Arc::new(vec![None; compiled.jwks_sources.len()]),
            compiled: compiled.clone(),
            keys,
            access_keys: access.clone(),
        });
        Ok((
            ControlInit {
                config_path,
                workers_override,
                registries,
                compiled,
                store,
                stored_keys,
                secrets_key,
                stored_access,
                access,
                file_config,
                objects,
            },
            snap,
        ))
    }

    /// Loads the stored counters into the shards' shared state: before any shard starts, so
    /// that no request counts against a fresh cell.
    pub(crate) fn load_counters(&self, shared: &Shared) -> Result<(), String> {
        let today = throttle::today();
        let mut cells = shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
        for (plan, id, st) in self.store.quotas()? {
            let day_used = if st.day == today { st.day_used } else { 0 };
            cells.insert(
                (Arc::from(plan.as_str()), Arc::from(id.as_str())),
                Arc::new(QuotaCell::new(st.period, st.used, today, day_used)),
            );
        }
        Ok(())
    }

    /// Builds the control plane on its own thread, with the shards' shared state.
    pub(crate) fn start(self, shared: Arc<Shared>) -> Control {
        status::started();
        let fleet = self.compiled.config.cluster.as_ref().map(|c| {
            let saved = self.store.objects().unwrap_or_default();
            let get = |k: &str| saved.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let position = get(fleet::POSITION).and_then(|v| fleet::EntryId::parse(&v));
            let usage_id = get(fleet::USAGE_ID).unwrap_or_else(|| {
                let id = auth::random_token(12).unwrap_or_else(|_| format!("{:x}", shared.node_id));
                if let Err(e) = self
                    .store
                    .write_objects(&[(fleet::USAGE_ID.to_string(), id.clone())], &[])
                {
                    tracing::warn!(error = %e, "fleet: this node's usage name not saved");
                }
                id
            });
            // The day counts the store holds (before this process served anything): should
            // the directory turn out to be another node's copy, they are that node's.
            let found = self
                .store
                .quotas()
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, _, st)| st.day_used > 0)
                .map(|(plan, id, st)| {
                    let key: fleet::PlanKeyDay = (
                        Arc::from(plan.as_str()),
                        Arc::from(id.as_str()),
                        st.day as u64,
                    );
                    (key, st.day_used)
                })
                .collect();
            Rc::new(fleet::Link::new(
                shared.clone(),
                c.clone(),
                self.compiled.redis_tls.clone(),
                position,
                get(fleet::LOCAL_EPOCH),
                usage_id,
                found,
            ))
        });
        Control {
            fleet,
            config_path: self.config_path,
            workers_override: self.workers_override,
            shared,
            registries: self.registries,
            live: Rc::new(Cell::new(1)),
            generation: 1,
            state_dir: self
                .store
                .path
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default(),
            compiled: self.compiled,
            store: Some(self.store),
            store_broken: false,
            store_fault: false,
            released: false,
            handed_over: false,
            awaiting_usage: false,
            released_at: Default::default(),
            store_failures: 0,
            store_reopens: 0,
            stored_keys: self.stored_keys,
            jwks: Default::default(),
            channels: Default::default(),
            secrets_key: self.secrets_key,
            stored_access: self.stored_access,
            access: self.access,
            file_config: self.file_config,
            objects: self.objects,
            planned: None,
        }
    }
}

impl Control {
    /// After a failed write, closes the store and opens it again (redb refuses every write
    /// after an I/O error until reopened); while the fault lasts, tries again at each call
    /// (every flush interval). Usage not yet saved stays in memory and is saved once it works.
    pub(crate) fn heal_store(&mut self) {
        if let Some(s) = &self.store {
            if !s.has_failed() {
                if self.store_fault && s.has_written() {
                    // Writes since the last reopen went through.
                    self.store_fault = false;
                    tracing::info!(path = %s.path.display(), "state store writes work again");
                }
                return;
            }
            self.store_failures += 1;
            if !self.store_fault {
                self.store_fault = true;
                tracing::warn!(path = %s.path.display(), "a state store write failed: reopening the store, and again at each flush while writes fail (said once)");
            } else {
                tracing::debug!(path = %s.path.display(), "a state store write failed again: reopening the store");
            }
            // Closing releases the file lock, so that it can be opened again.
            self.store = None;
            self.store_broken = true;
        }
        if !self.store_broken {
            return;
        }
        match Store::reopen(&self.state_dir) {
            Ok(s) => {
                tracing::debug!(path = %s.path.display(), "state store reopened: writes are tried again");
                self.store = Some(s);
                self.store_broken = false;
                self.store_reopens += 1;
            }
            Err(e) => tracing::debug!(error = %e, "state store still failing"),
        }
    }

    fn store(&self) -> Result<&Store, String> {
        // Failed since the last reopen: redb would refuse the write with its own words
        // ("Previous I/O error occurred"); refused here in the gateway's, until reopened.
        if self.store_broken || self.store.as_ref().is_some_and(Store::has_failed) {
            return Err(format!(
                "the state store in {} failed a write and is being reopened; try again shortly",
                self.state_dir.display()
            ));
        }
        self.store
            .as_ref()
            .ok_or_else(|| "the state store is closed (shutting down)".to_string())
    }

    /// A stage's response cache, for the admin API.
    pub(crate) fn stage_cache(
        &self,
        api: &str,
        stage: &str,
    ) -> Result<Arc<crate::cache::StageCache>, OpError> {
        if !self.compiled.apis.iter().any(|a| a.name == api) {
            return Err(OpError(404, format!("no API named {api:?}")));
        }
        // A run-time API appears once per deployment its stages serve.
        let a = self
            .compiled
            .apis
            .iter()
            .find(|a| a.name == api && a.stages.iter().any(|s| s == stage))
            .or_else(|| self.compiled.apis.iter().find(|a| a.name == api))
            .ok_or_else(|| OpError(404, format!("no API named {api:?}")))?;
        let i = a
            .stages
            .iter()
            .position(|s| s == stage)
            .ok_or_else(|| OpError(404, format!("API {api:?} has no stage {stage:?}")))?;
        a.caches[i]
            .clone()
            .ok_or_else(|| OpError(404, format!("stage {api}/{stage} has no cache")))
    }

    /// Every route of the current config on every stage, its figures summed over shards.
    pub(crate) fn route_totals(&self) -> Vec<(Arc<str>, crate::observe::stats::RouteCounts)> {
        let mut sum: ahash::AHashMap<Arc<str>, crate::observe::stats::RouteCounts> = self
            .compiled
            .series
            .iter()
            .map(|l| (l.clone(), Default::default()))
            .collect();
        for shard in &self.shared.route_stats {
            let rows = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (l, c) in rows.iter() {
                if let Some(s) = sum.get_mut(l) {
                    s.add(c);
                }
            }
        }
        self.compiled
            .series
            .iter()
            .filter_map(|l| Some((l.clone(), sum.remove(l)?)))
            .collect()
    }

    /// Every upstream target's figures summed over shards, by address.
    pub(crate) fn target_totals(
        &self,
    ) -> Vec<(std::net::SocketAddr, crate::observe::stats::TargetCounts)> {
        let mut sum: std::collections::BTreeMap<
            std::net::SocketAddr,
            crate::observe::stats::TargetCounts,
        > = Default::default();
        for shard in &self.shared.target_stats {
            let rows = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (a, c) in rows.iter() {
                sum.entry(*a).or_default().add(c);
            }
        }
        sum.into_iter().collect()
    }

    /// `GET /metrics`: every shard's published counters, and the caches' counters.
    pub(crate) fn metrics_text(&self) -> String {
        let mut out = crate::metrics::render(
            &self.shared.metrics,
            self.shared.connections.load(Ordering::Relaxed) as u64,
            self.generation,
        );
        // A canary that uses its stage's cache holds the same one: one series each.
        let mut caches: Vec<&Arc<crate::cache::StageCache>> = Vec::new();
        for c in self
            .compiled
            .apis
            .iter()
            .flat_map(|a| a.caches.iter().flatten())
        {
            if !caches.iter().any(|x| Arc::ptr_eq(x, c)) {
                caches.push(c);
            }
        }
        crate::cache::render_metrics(&mut out, &caches);
        crate::observe::stats::render(&mut out, &self.route_totals());
        crate::observe::stats::render_targets(&mut out, &self.target_totals());
        crate::metrics::render_process(&mut out);
        use std::fmt::Write;
        let _ = write!(
            out,
            "# HELP tollgate_state_store_write_failures_total State store faults: writes that failed, each closing the store until it is reopened (writes asked meanwhile are refused).\n# TYPE tollgate_state_store_write_failures_total counter\ntollgate_state_store_write_failures_total {}\n# HELP tollgate_state_store_reopens_total Times the state store was reopened after a failed write.\n# TYPE tollgate_state_store_reopens_total counter\ntollgate_state_store_reopens_total {}\n",
            self.store_failures, self.store_reopens
        );
        let log = &self.shared.access_log;
        let _ = write!(
            out,
            "# HELP tollgate_access_log_lines_total Access-log lines written.\n# TYPE tollgate_access_log_lines_total counter\ntollgate_access_log_lines_total {}\n# HELP tollgate_access_log_dropped_total Access-log lines dropped because the writer fell behind or a write failed.\n# TYPE tollgate_access_log_dropped_total counter\ntollgate_access_log_dropped_total {}\n",
            log.counts.written.load(Ordering::Relaxed),
            log.counts.dropped.load(Ordering::Relaxed)
        );
        let tr = &self.shared.traces.counts;
        out.push_str("# HELP tollgate_trace_spans_total Trace spans by outcome: exported (the collector took them), dropped (the export queue was full), failed (the export failed).\n# TYPE tollgate_trace_spans_total counter\n");
        for (outcome, n) in [
            ("exported", &tr.exported),
            ("dropped", &tr.dropped),
            ("failed", &tr.failed),
        ] {
            let _ = writeln!(
                out,
                "tollgate_trace_spans_total{{outcome=\"{outcome}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        // Active health per target, as the checks last saw it (1 up, 0 down).
        if !self.compiled.upstreams.is_empty() {
            out.push_str("# HELP tollgate_upstream_target_healthy Whether a target passes its upstream's active health checks (1) or not (0); 1 without checks.\n# TYPE tollgate_upstream_target_healthy gauge\n");
            for u in &self.compiled.upstreams {
                for (addr, up) in u.cfg.targets.iter().zip(&u.healthy) {
                    let _ = writeln!(
                        out,
                        "tollgate_upstream_target_healthy{{upstream=\"{}\",target=\"{addr}\"}} {}",
                        u.cfg.name,
                        u8::from(up.load(Ordering::Relaxed))
                    );
                }
            }
        }
        out
    }

    /// Whether the gateway has stopped taking traffic (a drain is under way).
    /// What the shards share (the admin API reaches WebSocket connections through it).
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub(crate) fn draining(&self) -> bool {
        self.shared.draining.load(Ordering::Relaxed)
    }

    /// Whether a successor took over (it serves the admin API now, on the same socket).
    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over
    }

    /// Whether the state store was given to a successor that has not taken over yet: writes
    /// wait for it (503), they are not failures.
    pub(crate) fn store_released(&self) -> bool {
        self.released
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        self.compiled.config.clone()
    }

    /// Publishes the current compiled config with a freshly built key table.
    fn publish(&mut self) -> u64 {
        self.generation += 1;
        let keys = Arc::new(key_table(
            &self.compiled.config,
            &self.compiled,
            &self.stored_keys,
        ));
        let snap = Arc::new(Snapshot {
            generation: self.generation,
            compiled: self.compiled.clone(),
            keys,
            jwks: self.jwks_vector(),
            access_keys: self.access.clone(),
        });
        self.shared.publish(snap);
        self.generation
    }
}

/// The control thread's main task: admin API, health checks, flushes, and messages until
/// shutdown.
pub(crate) async fn run<AdminFut: std::future::Future<Output = ()> + 'static>(
    ctl: Rc<RefCell<Control>>,
    rx: flume::Receiver<ControlMsg>,
    admin: Option<impl FnOnce(Rc<RefCell<Control>>) -> AdminFut>,
    shards: Vec<flume::Sender<ShardMsg>>,
    shards_done: impl Fn() -> bool,
) {
    {
        let mut c = ctl.borrow_mut();
        start_health_checks(&c.compiled, c.live.get(), &c.live);
        c.start_jwks();
    }
    let asks = ctl.borrow().shared.key_requests.1.clone();
    jwks::serve(&ctl, asks);
    // The admin API runs on this thread, over this control plane (the admin module depends
    // on control, not the other way round: the caller passes it in).
    if let Some(serve_admin) = admin {
        crate::driver::spawn(serve_admin(ctl.clone()));
    }
    let stop = Rc::new(Cell::new(false));
    let link = ctl.borrow().fleet.clone();
    if let Some(link) = link {
        let shared = ctl.borrow().shared.clone();
        if !link.sentinels().is_empty() {
            crate::driver::spawn(fleet::sentinel::watch(link.clone(), stop.clone()));
        }
        crate::driver::spawn(fleet::ws::serve(shared, link.clone(), stop.clone()));
        crate::driver::spawn(fleet::sync(ctl.clone(), link, stop.clone()));
    }
    let (c2, s2) = (ctl.clone(), stop.clone());
    crate::driver::spawn(async move {
        let mut ticks = 0u64;
        let mut refused: Option<Vec<u64>> = None;
        // Counters the store did not take: one line when that starts, one when it ends.
        let mut unsaved = false;
        while !s2.get() {
            crate::driver::time::sleep(FLUSH_INTERVAL).await;
            ticks += 1;
            c2.borrow_mut().heal_store();
            {
                let c = c2.borrow();
                match c.flush() {
                    // Closed for a hand-over or a stop: the counters go with the drain.
                    Err(_) if c.store.is_none() => {}
                    Err(e) if !unsaved => {
                        unsaved = true;
                        tracing::error!(error = %e, "usage counters not saved; kept in memory until the store takes them");
                    }
                    Err(_) => {}
                    Ok(()) if unsaved => {
                        unsaved = false;
                        tracing::info!("usage counters kept in memory are saved");
                    }
                    Ok(()) => {}
                }
                if ticks
                    .is_multiple_of((SWEEP_INTERVAL.as_secs() / FLUSH_INTERVAL.as_secs()).max(1))
                {
                    c.sweep();
                }
            }
            // Certificate files changed on disk: the loaded configuration compiled again with
            // them (a bad new file is refused, and the old certificate keeps serving until
            // the files change again).
            let changed = certs_changed(&c2.borrow().compiled);
            if let Some(now) = changed.filter(|n| refused.as_ref() != Some(n)) {
                let r = c2.borrow_mut().reload_certificates();
                match r {
                    Ok(g) => {
                        refused = None;
                        tracing::info!(generation = g, "certificate files changed: reloaded them (the configuration as loaded: edits to its file wait for SIGHUP or POST /reload)")
                    }
                    Err(errors) => {
                        refused = Some(now);
                        tracing::error!(?errors, "certificate files changed, but the reload was refused; the old certificates keep serving")
                    }
                }
            }
        }
    });
    // Runs until a shutdown or a successor's commit, or until every sender is gone.
    let mut release = false;
    // A shutdown asked for while the store is released to a successor waits for its commit
    // or abort: draining now would shut the listening sockets the successor holds copies
    // of (`stop_listening`), leaving the addresses with no server.
    let mut shutdown_asked = false;
    loop {
        match rx.recv_async().await {
            Ok(ControlMsg::Reload(reply)) => {
                let r = ctl.borrow_mut().reload();
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Ok(ControlMsg::Release(reply)) => {
                // The successor opens the store next: flush what was counted, close it. This
                // process serves on (accepting too) until the successor says it serves.
                let r = ctl.borrow_mut().release_store();
                if r.is_err() {
                    ctl.borrow_mut().take_store_back();
                }
                let _ = reply.send(r);
            }
            Ok(ControlMsg::Commit) if ctl.borrow().released => {
                ctl.borrow_mut().handed_over = true;
                release = true;
                break;
            }
            Ok(ControlMsg::Commit) => {}
            Ok(ControlMsg::Abort) => {
                if ctl.borrow().released {
                    ctl.borrow_mut().take_store_back();
                }
                if shutdown_asked {
                    break;
                }
            }
            Ok(ControlMsg::AddUsage(deltas)) => ctl.borrow_mut().add_usage(&deltas),
            Ok(ControlMsg::AwaitUsage) => ctl.borrow_mut().awaiting_usage = true,
            Ok(ControlMsg::Shutdown) if ctl.borrow().released => {
                tracing::info!("stopping once the take-over under way ends (the new process serves, or fails and this one drains)");
                shutdown_asked = true;
            }
            Ok(ControlMsg::Shutdown) | Err(_) => break,
        }
    }
    stop.set(true);
    tracing::info!("shutting down: draining connections");
    {
        let c = ctl.borrow();
        c.shared.draining.store(true, Ordering::Relaxed);
        c.live.set(u64::MAX);
        let msg = || {
            if release {
                ShardMsg::SoftDrain
            } else {
                ShardMsg::Drain
            }
        };
        for s in &shards {
            let _ = s.send(msg());
        }
    }
    // The admin API (and its /ping, now 503) stays up while the shards drain. A reload
    // asked meanwhile (SIGHUP, POST /reload) is refused at once: left unanswered, it held
    // its caller (the signal thread: a later SIGUSR1 went unheard) until the exit.
    // What is counted while the shards drain (HTTP/2 streams opened before the GOAWAY, slow
    // answers: up to drain_timeout) is flushed every second as before: a SIGKILL during the
    // drain loses a second of it, not all of it. (A store handed to a successor is its.)
    let mut flushed = std::time::Instant::now();
    while !shards_done() {
        if flushed.elapsed() >= FLUSH_INTERVAL {
            flushed = std::time::Instant::now();
            let c = ctl.borrow();
            if !c.released && c.store.is_some() {
                if let Err(e) = c.flush() {
                    tracing::debug!(error = %e, "usage counters not saved during the drain; tried again");
                }
            }
        }
        while let Ok(m) = rx.try_recv() {
            match m {
                ControlMsg::Reload(Some(reply)) => {
                    let _ = reply.send(Err(vec![
                        "the gateway is stopping (draining): not reloaded".to_string(),
                    ]));
                }
                ControlMsg::Release(reply) => {
                    let _ = reply.send(Err("this gateway is stopping".to_string()));
                }
                ControlMsg::AddUsage(deltas) => ctl.borrow_mut().add_usage(&deltas),
                ControlMsg::AwaitUsage => ctl.borrow_mut().awaiting_usage = true,
                _ => {}
            }
        }
        crate::driver::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A predecessor still draining sends what it counted when its drain ends: waited for
    // (at most a drain's length and a little more), then saved or handed on with the rest.
    if ctl.borrow().awaiting_usage {
        tracing::info!("waiting for the usage the previous process counts while it drains");
        let limit = ctl.borrow().compiled.config.server.drain_timeout + Duration::from_secs(10);
        let until = std::time::Instant::now() + limit;
        while ctl.borrow().awaiting_usage {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match crate::driver::time::timeout(left, rx.recv_async()).await {
                Ok(Ok(ControlMsg::AddUsage(deltas))) => ctl.borrow_mut().add_usage(&deltas),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    let link = ctl.borrow().fleet.clone();
    if let Some(link) = link {
        fleet::push_last_usage(&ctl, &link).await;
    }
}
