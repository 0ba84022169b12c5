//! The admin API's domain mappings (`GET|POST /domains`, `DELETE /domains/{id}`): a run-time
//! API's stage served on a host and base path, beside the file's `[[domains]]`; and which
//! stages a merged configuration serves (what a change must keep served).

use super::*;

impl Control {
    /// `GET /domains`: the file's mappings and the run-time ones.
    pub(crate) fn list_domains(&self) -> Value {
        let cfg = &self.file_config;
        let mut items = Vec::new();
        for d in &cfg.domains {
            for m in &d.mappings {
                items.push(json!({
                    "host": crate::config::host_text(&d.host),
                    "base_path": m.base_path.join("/"),
                    "api": cfg.apis.get(m.api).map(|a| a.name.clone()),
                    "stage": cfg.apis.get(m.api).and_then(|a| a.stages.get(m.stage)).map(|s| s.name.clone()),
                    "source": "file",
                }));
            }
            for p in &d.pending {
                let serving = self.serving(&d.host, &p.base_path, &p.api, &p.stage);
                items.push(json!({
                    "host": crate::config::host_text(&d.host),
                    "base_path": p.base_path.join("/"),
                    "api": p.api, "stage": p.stage, "source": "file", "serving": serving,
                }));
            }
        }
        for m in self.objects.mappings.values() {
            let serving = crate::config::host_pattern(&m.host)
                .and_then(|h| Ok((h, crate::config::base_path(&m.base_path)?)))
                .is_ok_and(|(h, b)| self.serving(&h, &b, &m.api, &m.stage));
            items.push(json!({
                "id": m.id, "host": m.host, "base_path": m.base_path, "api": m.api,
                "stage": m.stage, "source": "admin", "serving": serving,
            }));
        }
        json!({ "items": items })
    }

    /// Whether the configuration served maps that base path of the host to that API's stage.
    fn serving(
        &self,
        host: &crate::config::HostPattern,
        base: &[String],
        api: &str,
        stage: &str,
    ) -> bool {
        let c = &self.compiled.config;
        let named = |ai: usize, si: usize| {
            c.apis
                .get(ai)
                .is_some_and(|a| a.name == api && a.stages.get(si).is_some_and(|s| s.name == stage))
        };
        c.domains
            .iter()
            .filter(|x| &x.host == host)
            .flat_map(|x| &x.mappings)
            .any(|m| m.base_path == base && named(m.api, m.stage))
    }

    /// `POST /domains`: `{host, base_path, api, stage}` (Amazon's API mappings).
    pub(crate) fn create_mapping(&mut self, body: Value) -> Result<Value, OpError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct M {
            host: String,
            #[serde(default)]
            base_path: String,
            api: String,
            stage: String,
        }
        let m: M =
            crate::config::from_json(body, "").map_err(|e| bad(format!("invalid body: {e}")))?;
        let host = crate::config::host_pattern(&m.host).map_err(bad)?;
        let base = crate::config::base_path(&m.base_path).map_err(bad)?;
        // The file's mappings, served or waiting for their run-time stage, keep their place.
        // An entry of the file kept to some listeners holds its host whole: a mapping beside
        // it would be shadowed on those listeners and served on the ones the file keeps the
        // host off.
        let file_has = self.file_config.domains.iter().find(|d| {
            d.host == host
                && (d.listeners.is_some()
                    || d.mappings.iter().any(|x| x.base_path == base)
                    || d.pending.iter().any(|x| x.base_path == base))
        });
        if let Some(d) = file_has {
            let kept = d.listeners.as_ref().map_or(String::new(), |ls| {
                format!(" (its entry for this host is kept to listeners {ls:?})")
            });
            return Err(OpError(
                409,
                format!(
                    "host {:?}, base path /{}: the configuration file's [[domains]] maps it{kept}",
                    m.host,
                    base.join("/")
                ),
            ));
        }
        // Another run-time mapping of the same host and base path: a conflict, as Amazon's
        // CreateApiMapping answers it.
        let taken = self.objects.mappings.values().find(|o| {
            crate::config::host_pattern(&o.host).is_ok_and(|h| h == host)
                && crate::config::base_path(&o.base_path).is_ok_and(|b| b == base)
        });
        if let Some(o) = taken {
            return Err(OpError(
                409,
                format!(
                    "host {:?}, base path /{}: domain mapping {} maps it",
                    m.host,
                    base.join("/"),
                    o.id
                ),
            ));
        }
        if self.file_config.apis.iter().any(|a| a.name == m.api) {
            return Err(bad(format!(
                "api: {:?} is declared in the configuration file: map it in [[domains]]",
                m.api
            )));
        }
        self.runtime_api(&m.api)?;
        if !self
            .objects
            .stages
            .contains_key(&(m.api.clone(), m.stage.clone()))
        {
            return Err(bad(format!(
                "stage: API {:?} has no stage {:?}",
                m.api, m.stage
            )));
        }
        let rt = RtMapping {
            id: new_id()?,
            host: m.host,
            base_path: m.base_path.trim_matches('/').to_string(),
            api: m.api,
            stage: m.stage,
        };
        let mut o = self.objects.clone();
        o.mappings.insert(rt.id.clone(), rt.clone());
        let json = to_json(&rt)?;
        self.apply(o, vec![(mapping_key(&rt.id), json)], Vec::new())?;
        Ok(serde_json::to_value(&rt).unwrap_or_default())
    }

    /// `DELETE /domains/{id}`.
    pub(crate) fn delete_mapping(&mut self, id: &str) -> Result<Value, OpError> {
        let mut o = self.objects.clone();
        if o.mappings.remove(id).is_none() {
            return Err(OpError(404, format!("no domain mapping {id:?}")));
        }
        self.apply(o, Vec::new(), vec![mapping_key(id)])?;
        Ok(json!({ "deleted": id }))
    }
}

/// The (API, stage) pairs a merged configuration serves, canaries (`prod/Canary`) included.
pub(super) fn served(cfg: &Config) -> BTreeSet<(String, String)> {
    cfg.apis
        .iter()
        .flat_map(|a| a.stages.iter().map(|s| (a.name.clone(), s.name.clone())))
        .collect()
}

impl Objects {
    /// Whether `stage` (or the stage whose canary it names) is a run-time stage of `api`
    /// with that canary.
    pub(super) fn has_stage(&self, api: &str, stage: &str) -> bool {
        let (name, canary) = match stage.strip_suffix(CANARY) {
            Some(s) => (s, true),
            None => (stage, false),
        };
        self.stages
            .get(&(api.to_string(), name.to_string()))
            .is_some_and(|s| !canary || s.canary.is_some())
    }
}
