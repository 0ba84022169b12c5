//! Reloads: the config file re-read, validated and compiled, refused whole when a change
//! needs a restart or anything is wrong; certificate files watched for changes.

use super::*;

impl Control {
    /// Reloads the config file; on success publishes it and returns the new generation.
    pub(crate) fn reload(&mut self) -> Result<u64, Vec<String>> {
        let result = self.try_reload();
        match &result {
            Ok(g) => {
                tracing::info!(generation = g, "configuration reloaded");
                // Files no longer named are closed; the rest reopen on their next lines.
                self.shared.access_log.reopen();
                self.shared
                    .traces
                    .set_endpoint(self.compiled.config.tracing.as_ref().map(|t| t.endpoint()));
            }
            // One record for the whole refusal, every error in it.
            Err(errors) => tracing::error!(
                errors = %errors.join("; "),
                count = errors.len(),
                "reload refused; the previous configuration keeps serving"
            ),
        }
        result
    }

    pub(super) fn try_reload(&mut self) -> Result<u64, Vec<String>> {
        let Some(path) = &self.config_path else {
            return Err(vec![
                "this gateway was started without a config file; nothing to reload".into(),
            ]);
        };
        // A config read from a pipe (`--config <(envsubst ...)`) was read once: opening it
        // again waits for a writer that may never come, and the control plane (the admin
        // API, `/ping`, signals) with it.
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(vec![format!(
                "{}: the configuration was read from a pipe, which a reload cannot read again; restart to change it",
                path.display()
            )]);
        }
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
        // The token is read once, at start: a new variable would show in /config while the
        // old token stays in force.
        if cfg.admin.as_ref().map(|a| &a.token_env) != old.admin.as_ref().map(|a| &a.token_env) {
            errors.push(
                "admin.token_env: changing the admin token's variable needs a restart".to_string(),
            );
        }
        if let Err(e) = fleet_change(&mut cfg, old) {
            errors.push(e);
        }
        if cfg.server.state_dir != old.server.state_dir {
            errors.push("server.state_dir: moving the state store needs a restart".to_string());
        }
        if let Err(c) = super::keys::refuse_clashes(
            &cfg,
            super::keys::file_key_clashes(&cfg, &self.stored_keys),
        ) {
            errors.extend(c);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if cfg.server.workers != old.server.workers
            || cfg.server.driver != old.server.driver
            || cfg.server.cpus != old.server.cpus
            || cfg.server.pin != old.server.pin
            || cfg.server.uring_entries != old.server.uring_entries
            || cfg.server.uring_flags != old.server.uring_flags
        {
            tracing::warn!(
                "server.workers, server.driver, server.cpus, server.pin, server.uring_entries and server.uring_flags take effect at the next restart"
            );
        }
        // Run-time objects merge into the new file; one that no longer fits is skipped and
        // said, never a reason to refuse the file.
        let (merged, skipped, waiting) = self.objects.merge(&cfg, &self.config_base());
        for e in &skipped {
            tracing::warn!(error = %e, "a run-time object is not served as stored");
        }
        for w in &waiting {
            tracing::warn!(what = %w, "waits for a run-time stage");
        }
        // Compiled against a copy of the registries (caches, throttle buckets, health): a
        // reload refused below leaves them as the serving configuration has them (the next
        // admin change served the refused file's, a stage's cache dropped).
        let mut registries = self.registries.clone();
        let compiled =
            lifecycle::compile_merged(merged, &cfg, &mut registries).map_err(|e| e.errors)?;
        let clashes = super::keys::stored_key_plan_clashes(&compiled, &self.stored_keys);
        super::keys::refuse_clashes(&cfg, clashes)?;
        self.registries = registries;
        self.file_config = Arc::new(cfg);
        Ok(self.install(compiled))
    }

    /// Certificate, key or client CA files changed on disk: the configuration as loaded is
    /// compiled again with them (and the run-time objects), and served. `config.toml` is not
    /// read: an edit not meant to go live yet (or one half made) neither goes live with a
    /// renewal nor holds the renewal back.
    pub(crate) fn reload_certificates(&mut self) -> Result<u64, Vec<String>> {
        let cfg = (*self.file_config).clone();
        let (merged, _, _) = self.objects.merge(&cfg, &self.config_base());
        let compiled =
            lifecycle::compile_merged(merged, &cfg, &mut self.registries).map_err(|e| e.errors)?;
        Ok(self.install(compiled))
    }

    /// Serves a new compiled configuration: a new snapshot generation, health checks and
    /// JWKS fetches for it.
    pub(super) fn install(&mut self, compiled: Compiled) -> u64 {
        // The writer hears which access-log files are named whenever that changes: one
        // nothing names any more (a run-time stage deleted, its log moved) is closed (kept
        // open, each such change held a descriptor, and a removed file's space, until a
        // reload), and a new one is kept open.
        let changed = self.compiled.log_sinks.len() != compiled.log_sinks.len()
            || self
                .compiled
                .log_sinks
                .iter()
                .any(|s| !compiled.log_sinks.contains(s));
        self.compiled = Arc::new(compiled);
        if changed {
            self.shared.access_log.live(self.compiled.log_sinks.clone());
        }
        self.secrets_key = access::secrets_key(&self.compiled.config);
        self.access = Arc::new(access::access_table(&self.secrets_key, &self.stored_access));
        let generation = self.publish();
        self.live.set(generation);
        start_health_checks(&self.compiled, generation, &self.live);
        self.start_jwks();
        generation
    }
}

/// Whether any certificate, key or client CA file differs from what the running config
/// loaded; returns the files' current hashes (to not retry a refused reload until they change
/// again).
pub(super) fn certs_changed(compiled: &Compiled) -> Option<Vec<u64>> {
    let certs = crate::compile::tls::cert_files(&compiled.config);
    let cas = crate::compile::tls::ca_files(&compiled.config);
    let first_ca = certs.len();
    let mut changed = false;
    let mut now = Vec::with_capacity(certs.len() + cas.len());
    for (i, c) in certs.into_iter().enumerate() {
        let (Ok(cert), Ok(key)) = (crate::tls::read_pem(&c.cert), crate::tls::read_pem(&c.key))
        else {
            now.push(0);
            changed = true;
            continue;
        };
        let h = crate::tls::stamp(&cert, &key);
        changed |= compiled.cert_stamps.get(i).is_some_and(|&s| s != h);
        now.push(h);
    }
    for (j, ca) in cas.into_iter().enumerate() {
        let h = crate::compile::tls::ca_stamp(ca);
        changed |= h == 0
            || compiled
                .cert_stamps
                .get(first_ca + j)
                .is_some_and(|&s| s != h);
        now.push(h);
    }
    changed.then_some(now)
}

/// Whether a reload moves the fleet's Redis, which needs a restart. The addresses are
/// compared, and where they differ, the names as written: a host name that resolves elsewhere
/// now is not a move the file asked for (every reload was refused once one did), so the
/// running gateway keeps the addresses it started with and a restart resolves the names again.
fn fleet_change(cfg: &mut Config, old: &Config) -> Result<(), String> {
    let resolved = |c: &Config| {
        c.cluster
            .as_ref()
            .map(|c| (c.redis, c.sentinels.clone(), c.sentinel_master.clone()))
    };
    let tls = |c: &Config| c.cluster.as_ref().and_then(|c| c.tls.clone());
    if tls(cfg) != tls(old) {
        return Err(
            "cluster: changing TLS to the fleet's Redis (rediss://, cluster.tls) needs a restart"
                .to_string(),
        );
    }
    if resolved(cfg) == resolved(old) {
        return Ok(());
    }
    let written = |c: &Config| {
        c.cluster
            .as_ref()
            .map(|c| (c.written.clone(), c.sentinel_master.clone()))
    };
    let same_names = written(cfg) == written(old);
    match (cfg.cluster.as_mut(), old.cluster.as_ref()) {
        (Some(new), Some(was)) if same_names => {
            tracing::warn!(
                "cluster: the Redis names resolve to other addresses now; this gateway keeps the ones it started with until it restarts"
            );
            new.redis = was.redis;
            new.sentinels = was.sentinels.clone();
            Ok(())
        }
        _ => Err("cluster: adding, removing or moving the fleet's Redis (redis, sentinels, sentinel_master) needs a restart".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(redis: &str) -> Config {
        let url = if redis.contains("://") {
            redis.to_string()
        } else {
            format!("redis://{redis}")
        };
        let text = format!("[server]\nworkers = 1\n[[listeners]]\nname = \"l\"\naddr = \"127.0.0.1:1\"\n[cluster]\nredis = \"{url}\"\n");
        Config::parse(&text, std::path::Path::new(".")).unwrap()
    }

    #[test]
    fn a_redis_name_that_resolves_elsewhere_is_not_a_move() {
        let old = cfg("localhost:6379");
        // The same name, resolved to another address since: kept as it was started.
        let mut now = cfg("localhost:6379");
        now.cluster.as_mut().unwrap().redis = "127.0.0.9:6379".parse().unwrap();
        assert_eq!(fleet_change(&mut now, &old), Ok(()));
        assert_eq!(
            now.cluster.unwrap().redis,
            old.cluster.as_ref().unwrap().redis
        );
        // Written otherwise, the same address: no move either.
        let mut now = cfg("127.0.0.1:6379");
        assert_eq!(fleet_change(&mut now, &old), Ok(()));
        // Another server: a restart.
        let mut now = cfg("127.0.0.1:6380");
        assert!(fleet_change(&mut now, &old)
            .unwrap_err()
            .contains("needs a restart"));
        // The same server over TLS: a restart too (the control plane's connections keep
        // what they started with).
        let mut now = cfg("rediss://127.0.0.1:6379");
        assert_eq!(
            fleet_change(&mut now, &old),
            Err("cluster: changing TLS to the fleet's Redis (rediss://, cluster.tls) needs a restart".to_string())
        );
    }
}
