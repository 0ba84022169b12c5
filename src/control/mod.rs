//! The control plane: one thread, off the data cores. It loads and validates configuration,
//! compiles snapshots and publishes them to the shards, owns the state store and the API
//! keys, flushes usage counters, runs health checks, serves the admin API, and leads the drain
//! on shutdown.
//!
//! A reload is all or nothing: a file with any error is refused whole (every error logged and,
//! for `POST /reload`, returned) and the old snapshot keeps serving. Shards adopt a new
//! snapshot between requests; a request in flight finishes on the one it started with. Key
//! changes publish a new snapshot that shares the compiled configuration.

pub mod store;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
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
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Idle per-key buckets no shard holds are dropped after this sweep finds them (every 10 s).
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Requests to the control plane from other threads (signals, the embedding program).
pub enum ControlMsg {
    Reload(Option<flume::Sender<Result<u64, Vec<String>>>>),
    Shutdown,
}

/// Why an admin operation failed: the HTTP status and the message.
#[derive(Debug)]
pub struct OpError(pub u16, pub String);

fn bad(msg: impl Into<String>) -> OpError {
    OpError(400, msg.into())
}

/// A key as the admin API shows it (never with its value).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub plans: Vec<String>,
    /// "config" (declared in config.toml) or "api" (created at run time).
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
}

/// What a key creation asks for.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub value: Option<String>,
    #[serde(default)]
    pub description: String,
    pub enabled: Option<bool>,
    pub plan: Option<String>,
    #[serde(default)]
    pub plans: Vec<String>,
}

/// The control plane's state. Lives on the control thread only.
pub struct Control {
    config_path: Option<PathBuf>,
    workers_override: Option<usize>,
    shared: Arc<Shared>,
    /// What a reload keeps: health flags, bucket states, caches.
    registries: Registries,
    /// The configuration generation whose health checks should run; older check tasks stop.
    live: Rc<Cell<u64>>,
    generation: u64,
    compiled: Arc<Compiled>,
    /// `None` once closed at shutdown (the file lock is released then).
    store: Option<Store>,
    stored_keys: Vec<StoredKey>,
}

/// Builds the key table the shards look keys up in, against the compiled plans.
fn key_table(cfg: &Config, compiled: &Compiled, stored: &[StoredKey]) -> KeyTable {
    let plan_index = |names: &[String]| -> Vec<usize> {
        names
            .iter()
            .filter_map(|n| compiled.plans.iter().position(|p| &p.name == n))
            .collect()
    };
    let from_config = cfg.api_keys.iter().map(|k| KeyRecord {
        id: Arc::from(k.name.as_str()),
        hash: auth::hash_key(k.value.as_bytes()),
        enabled: k.enabled,
        plans: plan_index(&k.plans),
    });
    let from_store = stored.iter().filter_map(|k| {
        Some(KeyRecord {
            id: Arc::from(k.id.as_str()),
            hash: auth::unhex(&k.hash)?,
            enabled: k.enabled,
            plans: plan_index(&k.plans),
        })
    });
    KeyTable::new(from_config.chain(from_store))
}

/// Everything the control plane starts with, prepared on the starting thread (so that a bad
/// state store stops start-up there) and moved to the control thread.
pub struct ControlInit {
    config_path: Option<PathBuf>,
    workers_override: Option<usize>,
    /// What a reload keeps: health flags, bucket states, caches.
    registries: Registries,
    compiled: Arc<Compiled>,
    store: Store,
    stored_keys: Vec<StoredKey>,
}

impl ControlInit {
    /// Compiles `cfg` and loads the stored keys; returns the init and the first snapshot.
    pub fn prepare(
        cfg: Config,
        config_path: Option<PathBuf>,
        workers_override: Option<usize>,
        store: Store,
    ) -> Result<(ControlInit, Arc<Snapshot>), String> {
        let mut registries = Registries::default();
        let compiled = Arc::new(
            crate::compile::compile(Arc::new(cfg), &mut registries).map_err(|e| e.to_string())?,
        );
        let stored_keys = store.keys()?;
        let keys = Arc::new(key_table(&compiled.config, &compiled, &stored_keys));
        let snap = Arc::new(Snapshot {
            generation: 1,
            compiled: compiled.clone(),
            keys,
        });
        Ok((
            ControlInit {
                config_path,
                workers_override,
                registries,
                compiled,
                store,
                stored_keys,
            },
            snap,
        ))
    }

    /// Loads the stored counters into the shards' shared state: before any shard starts, so
    /// that no request counts against a fresh cell.
    pub fn load_counters(&self, shared: &Shared) -> Result<(), String> {
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
    pub fn start(self, shared: Arc<Shared>) -> Control {
        Control {
            config_path: self.config_path,
            workers_override: self.workers_override,
            shared,
            registries: self.registries,
            live: Rc::new(Cell::new(1)),
            generation: 1,
            compiled: self.compiled,
            store: Some(self.store),
            stored_keys: self.stored_keys,
        }
    }
}

impl Control {
    fn store(&self) -> Result<&Store, String> {
        self.store
            .as_ref()
            .ok_or_else(|| "the state store is closed (shutting down)".to_string())
    }

    /// A stage's response cache, for the admin API.
    pub fn stage_cache(
        &self,
        api: &str,
        stage: &str,
    ) -> Result<Arc<crate::cache::StageCache>, OpError> {
        let a = self
            .compiled
            .apis
            .iter()
            .find(|a| a.name == api)
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

    /// `GET /metrics`: every shard's published counters, and the caches' counters.
    pub fn metrics_text(&self) -> String {
        let mut out = crate::metrics::render(
            &self.shared.metrics,
            self.shared.connections.load(Ordering::Relaxed) as u64,
            self.generation,
        );
        let caches: Vec<_> = self
            .compiled
            .apis
            .iter()
            .flat_map(|a| a.caches.iter().flatten())
            .collect();
        crate::cache::render_metrics(&mut out, &caches);
        out
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn config(&self) -> Arc<Config> {
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
        });
        self.shared.publish(snap);
        self.generation
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
        let old = &self.compiled.config;
        let mut errors = Vec::new();
        let same_listeners = cfg.listeners.len() == old.listeners.len()
            && cfg
                .listeners
                .iter()
                .zip(&old.listeners)
                .all(|(a, b)| a.name == b.name && a.addr == b.addr);
        if !same_listeners {
            errors.push("listeners: adding, removing or moving listeners needs a restart; the reload changes them".to_string());
        } else if let Some((a, _)) = cfg
            .listeners
            .iter()
            .zip(&old.listeners)
            .find(|(a, b)| a.defer_accept != b.defer_accept)
        {
            errors.push(format!(
                "listeners[{:?}].defer_accept: changing it needs a restart (it is set on the listening sockets)",
                a.name
            ));
        }
        if cfg.admin.as_ref().map(|a| a.addr) != old.admin.as_ref().map(|a| a.addr) {
            errors.push("admin.addr: moving the admin API needs a restart".to_string());
        }
        if cfg.server.state_dir != old.server.state_dir {
            errors.push("server.state_dir: moving the state store needs a restart".to_string());
        }
        // A config key may not take the value of a key created through the admin API.
        for k in &cfg.api_keys {
            let h = auth::hex(&auth::hash_key(k.value.as_bytes()));
            if self.stored_keys.iter().any(|s| s.hash == h) {
                errors.push(format!("api_keys[{:?}].value: the same value belongs to a key created through the admin API", k.name));
            }
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
        let compiled =
            crate::compile::compile(Arc::new(cfg), &mut self.registries).map_err(|e| e.errors)?;
        self.compiled = Arc::new(compiled);
        let generation = self.publish();
        self.live.set(generation);
        start_health_checks(&self.compiled, generation, &self.live);
        Ok(generation)
    }

    // ---- API keys -----------------------------------------------------------------------

    fn views(&self) -> Vec<KeyView> {
        let cfg = &self.compiled.config;
        let mut v: Vec<KeyView> = cfg
            .api_keys
            .iter()
            .map(|k| KeyView {
                id: k.name.clone(),
                name: k.name.clone(),
                description: k.description.clone(),
                enabled: k.enabled,
                plans: k.plans.clone(),
                source: "config",
                created: None,
            })
            .collect();
        v.extend(self.stored_keys.iter().map(|k| KeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            description: k.description.clone(),
            enabled: k.enabled,
            plans: k.plans.clone(),
            source: "api",
            created: Some(k.created),
        }));
        v
    }

    pub fn list_keys(&self) -> Vec<KeyView> {
        self.views()
    }

    pub fn get_key(&self, id: &str) -> Option<KeyView> {
        self.views().into_iter().find(|k| k.id == id)
    }

    /// Checks that plans exist and that no two of them cover the same stage.
    fn check_plans(&self, plans: &[String]) -> Result<(), OpError> {
        let mut covered = Vec::new();
        for n in plans {
            let p = self
                .compiled
                .plans
                .iter()
                .find(|p| &p.name == n)
                .ok_or_else(|| bad(format!("usage plan {n:?} does not exist")))?;
            for s in &p.stages {
                if covered.contains(s) {
                    return Err(OpError(409, format!("plan {n:?} covers a stage another of the key's plans covers; a key belongs to at most one plan per stage")));
                }
                covered.push(*s);
            }
        }
        Ok(())
    }

    /// Hashes of every key value in use (config and store).
    fn taken_hashes(&self) -> ahash::AHashSet<String> {
        let cfg = self
            .compiled
            .config
            .api_keys
            .iter()
            .map(|k| auth::hex(&auth::hash_key(k.value.as_bytes())));
        cfg.chain(self.stored_keys.iter().map(|k| k.hash.clone()))
            .collect()
    }

    fn taken_ids(&self) -> ahash::AHashSet<String> {
        self.compiled
            .config
            .api_keys
            .iter()
            .map(|k| k.name.clone())
            .chain(self.stored_keys.iter().map(|k| k.id.clone()))
            .collect()
    }

    /// Validates a new key; returns it and its value (generated if not given).
    /// `hashes` and `ids` are those in use (and, during an import, those of earlier rows).
    fn prepare(
        &self,
        req: NewKey,
        hashes: &mut ahash::AHashSet<String>,
        ids: &mut ahash::AHashSet<String>,
    ) -> Result<(StoredKey, String), OpError> {
        let name = req.name.trim().to_string();
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(bad("name: 1 to 128 characters, no control characters"));
        }
        let value = match req.value {
            Some(v) if auth::valid_key_value(&v) => v,
            Some(_) => {
                return Err(bad(
                    "value: at least 20 and at most 128 visible ASCII characters",
                ))
            }
            None => auth::random_token(auth::GENERATED_KEY_LEN).map_err(|e| OpError(500, e))?,
        };
        let hash = auth::hex(&auth::hash_key(value.as_bytes()));
        if hashes.contains(&hash) {
            return Err(OpError(
                409,
                "value: another key already has this value".into(),
            ));
        }
        let mut plans = req.plans;
        if let Some(p) = req.plan {
            plans.insert(0, p);
        }
        self.check_plans(&plans)?;
        let id = loop {
            let id = auth::random_token(10)
                .map_err(|e| OpError(500, e))?
                .to_ascii_lowercase();
            if !ids.contains(&id) {
                break id;
            }
        };
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        hashes.insert(hash.clone());
        ids.insert(id.clone());
        Ok((
            StoredKey {
                id,
                name,
                hash,
                description: req.description,
                enabled: req.enabled.unwrap_or(true),
                plans,
                created,
            },
            value,
        ))
    }

    /// Creates a key; the answer is the only time its value is shown.
    pub fn create_key(&mut self, req: NewKey) -> Result<serde_json::Value, OpError> {
        let (key, value) = self.prepare(req, &mut self.taken_hashes(), &mut self.taken_ids())?;
        self.store()
            .map_err(|e| OpError(500, e))?
            .put_keys(std::slice::from_ref(&key))
            .map_err(|e| OpError(500, e))?;
        tracing::info!(key_id = %key.id, name = %key.name, "API key created");
        let view = serde_json::json!({"id": key.id, "name": key.name, "description": key.description, "enabled": key.enabled, "plans": key.plans, "value": value});
        self.stored_keys.push(key);
        self.publish();
        Ok(view)
    }

    /// Imports keys from CSV in Amazon API Gateway's format (`Name,Key,Description,Enabled,
    /// UsagePlanIds`, header row first): all or none.
    pub fn import_keys(&mut self, csv: &str) -> Result<serde_json::Value, OpError> {
        let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<String> = parse_csv_line(lines.next().ok_or_else(|| bad("empty CSV"))?)
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let col = |n: &str| header.iter().position(|h| h == n);
        let (Some(ni), Some(ki)) = (col("name"), col("key")) else {
            return Err(bad("the header row must name the columns Name and Key (and optionally Description, Enabled, UsagePlanIds)"));
        };
        let (di, ei, pi) = (col("description"), col("enabled"), col("usageplanids"));
        let mut pending: Vec<StoredKey> = Vec::new();
        let mut errors = Vec::new();
        let (mut hashes, mut ids) = (self.taken_hashes(), self.taken_ids());
        for (i, line) in lines.enumerate() {
            let f = parse_csv_line(line);
            let get = |c: Option<usize>| {
                c.and_then(|c| f.get(c))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default()
            };
            let enabled = match get(ei).to_ascii_lowercase().as_str() {
                "" | "true" => true,
                "false" => false,
                other => {
                    errors.push(format!(
                        "row {}: Enabled = {other:?}: expected true or false",
                        i + 2
                    ));
                    continue;
                }
            };
            let plans: Vec<String> = get(pi)
                .split([';', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let req = NewKey {
                name: get(Some(ni)),
                value: Some(get(Some(ki))),
                description: get(di),
                enabled: Some(enabled),
                plan: None,
                plans,
            };
            match self.prepare(req, &mut hashes, &mut ids) {
                Ok((k, _)) => pending.push(k),
                Err(OpError(_, m)) => errors.push(format!("row {}: {m}", i + 2)),
            }
        }
        if !errors.is_empty() {
            return Err(OpError(400, errors.join("; ")));
        }
        self.store()
            .map_err(|e| OpError(500, e))?
            .put_keys(&pending)
            .map_err(|e| OpError(500, e))?;
        let ids: Vec<String> = pending.iter().map(|k| k.id.clone()).collect();
        tracing::info!(count = ids.len(), "API keys imported");
        self.stored_keys.extend(pending);
        self.publish();
        Ok(serde_json::json!({"imported": ids.len(), "ids": ids}))
    }

    /// Enables or disables a key, or sets its plans.
    pub fn update_key(
        &mut self,
        id: &str,
        enabled: Option<bool>,
        plans: Option<Vec<String>>,
    ) -> Result<KeyView, OpError> {
        if self.compiled.config.api_keys.iter().any(|k| k.name == id) {
            return Err(OpError(
                409,
                "this key is declared in the config file: change it there and reload".into(),
            ));
        }
        let i = self
            .stored_keys
            .iter()
            .position(|k| k.id == id)
            .ok_or_else(|| OpError(404, "no such key".into()))?;
        if let Some(p) = &plans {
            self.check_plans(p)?;
        }
        let mut k = self.stored_keys[i].clone();
        if let Some(e) = enabled {
            k.enabled = e;
        }
        if let Some(p) = plans {
            k.plans = p;
        }
        self.store()
            .map_err(|e| OpError(500, e))?
            .put_keys(std::slice::from_ref(&k))
            .map_err(|e| OpError(500, e))?;
        self.stored_keys[i] = k;
        self.publish();
        self.get_key(id)
            .ok_or_else(|| OpError(404, "no such key".into()))
    }

    pub fn delete_key(&mut self, id: &str) -> Result<(), OpError> {
        if self.compiled.config.api_keys.iter().any(|k| k.name == id) {
            return Err(OpError(
                409,
                "this key is declared in the config file: remove it there and reload".into(),
            ));
        }
        if !self
            .store()
            .map_err(|e| OpError(500, e))?
            .delete_key(id)
            .map_err(|e| OpError(500, e))?
        {
            return Err(OpError(404, "no such key".into()));
        }
        self.stored_keys.retain(|k| k.id != id);
        self.shared
            .quotas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, k), _| &**k != id);
        tracing::info!(key_id = %id, "API key deleted");
        self.publish();
        Ok(())
    }

    // ---- usage ---------------------------------------------------------------------------

    fn plan(&self, name: &str) -> Result<&crate::config::Plan, OpError> {
        self.compiled
            .plans
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| OpError(404, format!("no usage plan {name:?}")))
    }

    /// Daily usage under a plan, as Amazon API Gateway's GetUsage: per key, `[requests,
    /// remaining]` per day from `start` to `end`.
    pub fn usage(
        &mut self,
        plan: &str,
        start: &str,
        end: &str,
        key: Option<&str>,
    ) -> Result<serde_json::Value, OpError> {
        let p = self.plan(plan)?.clone();
        let (Some(s), Some(e)) = (throttle::parse_day(start), throttle::parse_day(end)) else {
            return Err(bad("startDate and endDate: dates as YYYY-MM-DD"));
        };
        if e < s || e - s > 366 {
            return Err(bad(
                "endDate must be on or after startDate, at most a year later",
            ));
        }
        self.flush().map_err(|e| OpError(500, e))?;
        let rows = self
            .store()
            .map_err(|e| OpError(500, e))?
            .usage(plan, start, end, key)
            .map_err(|e| OpError(500, e))?;
        let cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
        let mut items: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
            Default::default();
        for (id, day, n) in rows {
            let remaining = p.quota.map(|q| {
                let used = cells
                    .get(&(Arc::from(plan), Arc::from(id.as_str())))
                    .map(|c| c.used.load(Ordering::Relaxed))
                    .unwrap_or(n);
                q.limit.saturating_sub(used)
            });
            items
                .entry(id)
                .or_default()
                .push(serde_json::json!({"date": day, "used": n, "remaining": remaining}));
        }
        Ok(
            serde_json::json!({"usagePlanId": plan, "startDate": start, "endDate": end, "items": items}),
        )
    }

    /// Sets a key's count for the current quota period (`used`), or resets it.
    pub fn set_quota_used(
        &mut self,
        plan: &str,
        id: &str,
        used: u64,
    ) -> Result<serde_json::Value, OpError> {
        let p = self.plan(plan)?;
        let q = p
            .quota
            .ok_or_else(|| OpError(409, format!("usage plan {plan:?} has no quota")))?;
        if self.get_key(id).is_none() {
            return Err(OpError(404, "no such key".into()));
        }
        let today = throttle::today();
        let cell = {
            let mut cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            cells
                .entry((Arc::from(plan), Arc::from(id)))
                .or_insert_with(|| Arc::new(QuotaCell::new(q.period.index(today), 0, today, 0)))
                .clone()
        };
        cell.period
            .store(q.period.index(today) as u64, Ordering::Relaxed);
        cell.used.store(used, Ordering::Relaxed);
        cell.dirty.store(true, Ordering::Relaxed);
        self.flush().map_err(|e| OpError(500, e))?;
        Ok(
            serde_json::json!({"keyId": id, "usagePlanId": plan, "used": used, "remaining": q.limit.saturating_sub(used)}),
        )
    }

    /// Writes changed counters to the state store.
    pub fn flush(&self) -> Result<(), String> {
        let batch: Vec<(String, String, QuotaState)> = {
            let cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            cells
                .iter()
                .filter(|(_, c)| c.dirty.swap(false, Ordering::Relaxed))
                .map(|((plan, id), c)| {
                    let st = QuotaState {
                        period: c.period.load(Ordering::Relaxed) as i64,
                        used: c.used.load(Ordering::Relaxed),
                        day: c.day.load(Ordering::Relaxed) as i64,
                        day_used: c.day_used.load(Ordering::Relaxed),
                    };
                    (plan.to_string(), id.to_string(), st)
                })
                .collect()
        };
        self.store()?.flush(&batch)
    }

    /// Drops per-key buckets that no shard holds and that have been full for a while.
    fn sweep(&self) {
        let now = throttle::now_ns();
        let mut all = self
            .shared
            .key_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.retain(|_, b| {
            Arc::strong_count(b) > 1 || b.idle_for(now) < crate::shard::KEY_LEASE_IDLE_NS
        });
    }
}

/// Splits one CSV line, with double-quoted fields ("a,b" and "" for a quote).
fn parse_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Spawns one check task per target of every upstream with `health`.
pub fn start_health_checks(compiled: &Compiled, generation: u64, live: &Rc<Cell<u64>>) {
    for u in &compiled.upstreams {
        let Some(h) = &u.cfg.health else { continue };
        for (i, addr) in u.cfg.targets.iter().enumerate() {
            let target = crate::upstream::health::Probe {
                upstream: u.cfg.name.clone(),
                addr: *addr,
                tls: u.tls[i].clone(),
                h2: u.cfg.h2,
            };
            monoio::spawn(crate::upstream::health::run_checks(
                target,
                h.clone(),
                u.healthy[i].clone(),
                generation,
                live.clone(),
            ));
        }
    }
}

/// Whether any certificate or key file differs from what the running config loaded; returns
/// the files' current hashes (to not retry a refused reload until they change again).
fn certs_changed(compiled: &Compiled) -> Option<Vec<u64>> {
    let certs = crate::compile::tls::cert_files(&compiled.config);
    let mut changed = false;
    let mut now = Vec::with_capacity(certs.len());
    for (i, c) in certs.into_iter().enumerate() {
        let (Ok(cert), Ok(key)) = (std::fs::read(&c.cert), std::fs::read(&c.key)) else {
            now.push(0);
            changed = true;
            continue;
        };
        let h = crate::tls::stamp(&cert, &key);
        changed |= compiled.cert_stamps.get(i).is_some_and(|&s| s != h);
        now.push(h);
    }
    changed.then_some(now)
}

/// The control thread's main task: admin API, health checks, flushes, and messages until
/// shutdown.
pub async fn run<AdminFut: std::future::Future<Output = ()> + 'static>(
    ctl: Rc<RefCell<Control>>,
    rx: flume::Receiver<ControlMsg>,
    admin: Option<impl FnOnce(Rc<RefCell<Control>>) -> AdminFut>,
    shards: Vec<flume::Sender<ShardMsg>>,
) {
    {
        let c = ctl.borrow();
        start_health_checks(&c.compiled, c.live.get(), &c.live);
    }
    // The admin API runs on this thread, over this control plane (the admin module depends
    // on control, not the other way round: the caller passes it in).
    if let Some(serve_admin) = admin {
        monoio::spawn(serve_admin(ctl.clone()));
    }
    let stop = Rc::new(Cell::new(false));
    let (c2, s2) = (ctl.clone(), stop.clone());
    monoio::spawn(async move {
        let mut ticks = 0u64;
        let mut refused: Option<Vec<u64>> = None;
        while !s2.get() {
            monoio::time::sleep(FLUSH_INTERVAL).await;
            ticks += 1;
            {
                let c = c2.borrow();
                if let Err(e) = c.flush() {
                    tracing::error!(error = %e, "usage counters not saved");
                }
                if ticks % (SWEEP_INTERVAL.as_secs() / FLUSH_INTERVAL.as_secs()).max(1) == 0 {
                    c.sweep();
                }
            }
            // Certificate files changed on disk: reload (a bad new file is refused, and the
            // old certificate keeps serving until the files change again).
            let changed = certs_changed(&c2.borrow().compiled);
            if let Some(now) = changed.filter(|n| refused.as_ref() != Some(n)) {
                let r = c2.borrow_mut().reload();
                match r {
                    Ok(g) => {
                        refused = None;
                        tracing::info!(generation = g, "certificate files changed: reloaded")
                    }
                    Err(errors) => {
                        refused = Some(now);
                        tracing::error!(?errors, "certificate files changed, but the reload was refused; the old certificates keep serving")
                    }
                }
            }
        }
    });
    // Runs until a shutdown message, or until every sender is gone.
    while let Ok(ControlMsg::Reload(reply)) = rx.recv_async().await {
        let r = ctl.borrow_mut().reload();
        if let Some(reply) = reply {
            let _ = reply.send(r);
        }
    }
    stop.set(true);
    tracing::info!("shutting down: draining connections");
    let c = ctl.borrow();
    c.shared.draining.store(true, Ordering::Relaxed);
    c.live.set(u64::MAX);
    for s in &shards {
        let _ = s.send(ShardMsg::Drain);
    }
}

/// The last flush, after the shards have stopped: a clean shutdown loses no usage. Then the
/// store is closed, releasing its file lock.
pub fn final_flush(ctl: &mut Control) {
    if let Err(e) = ctl.flush() {
        tracing::error!(error = %e, "usage counters not saved at shutdown");
    }
    ctl.store = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_split_with_quotes() {
        assert_eq!(parse_csv_line("a,b,c"), vec!["a", "b", "c"]);
        assert_eq!(
            parse_csv_line("\"x, y\",\"say \"\"hi\"\"\",\r"),
            vec!["x, y", "say \"hi\"", ""]
        );
    }
}
