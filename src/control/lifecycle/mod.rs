//! Run-time APIs: definitions, immutable deployments, stages pointing at a deployment, and
//! domain mappings, created through the admin API and kept in the state store. At every
//! compile (start, reload, any change here) they are merged into the file's configuration:
//! each deployment some stage serves becomes an API of the compiled config holding those
//! stages, checked by the file's own validators. A change is compiled before it is stored:
//! what the store holds always compiles, and a refused change leaves everything as it was.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::*;

mod admin;
mod domains;
mod parts;

pub(crate) use parts::{Edit, Part};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RtApi {
    pub name: String,
    pub definition: Value,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RtDeployment {
    pub id: String,
    pub api: String,
    #[serde(default)]
    pub description: String,
    pub created: String,
    pub definition: Value,
    /// Made by `auto_deploy` (only those are pruned: a deployment made by hand stays,
    /// whatever its description says).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_deploy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RtStage {
    pub api: String,
    pub name: String,
    pub deployment: String,
    /// The rest of an `[[apis.stages]]` table: variables, throttle, cache, access_log...
    #[serde(default)]
    pub settings: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<RtCanary>,
    /// Every change of the API's definition is deployed to this stage at once.
    #[serde(default)]
    pub auto_deploy: bool,
    pub created: String,
    pub updated: String,
}

/// A stage's canary: a share of its traffic served by another deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RtCanary {
    pub deployment: String,
    /// 0.0 to 100.0.
    pub percent_traffic: f64,
    #[serde(default)]
    pub stage_variable_overrides: Map<String, Value>,
    #[serde(default)]
    pub use_stage_cache: bool,
}

pub(crate) use crate::config::CANARY;
/// What a canary's stage is called while the validators check it (`/` is no name letter):
/// `{n}__canary`, short whatever the stage's name, and no stage made through the admin API
/// may end so ([`reserved_stage_name`]).
const CANARY_TMP: &str = "__canary";

/// A stage name the admin API refuses: canaries are checked under such names.
pub(crate) fn reserved_stage_name(name: &str) -> bool {
    name.ends_with(CANARY_TMP)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RtMapping {
    pub id: String,
    pub host: String,
    pub base_path: String,
    pub api: String,
    pub stage: String,
}

/// Every run-time object.
#[derive(Debug, Default, Clone)]
pub(crate) struct Objects {
    pub apis: BTreeMap<String, RtApi>,
    pub deployments: BTreeMap<(String, String), RtDeployment>,
    pub stages: BTreeMap<(String, String), RtStage>,
    pub mappings: BTreeMap<String, RtMapping>,
}

fn api_key(name: &str) -> String {
    format!("api/{name}")
}
fn deployment_key(api: &str, id: &str) -> String {
    format!("deployment/{api}/{id}")
}
fn stage_key(api: &str, name: &str) -> String {
    format!("stage/{api}/{name}")
}
fn mapping_key(id: &str) -> String {
    format!("mapping/{id}")
}

/// A stored object as JSON.
fn to_json<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> Result<String, OpError> {
    let text = serde_json::to_string(v).map_err(|e| OpError(500, e.to_string()))?;
    // Kept only what reads back: the store's records are read with serde_json's nesting
    // limit, and a definition that passed it only inside its record (an imported document's
    // models, say) was answered 201 and then lost at the next start.
    if let Err(e) = serde_json::from_str::<T>(&text) {
        return Err(OpError(
            400,
            format!("the definition cannot be kept: {e} (objects and arrays nest at most 128 levels deep, the record's own included)"),
        ));
    }
    Ok(text)
}

/// Now, as RFC 3339 (UTC, milliseconds: deployments made within one second still list in
/// the order they were made).
pub(crate) fn now_text() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let secs = ms / 1000;
    let (y, m, d) = crate::syntax::civil::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t / 3600,
        t / 60 % 60,
        t % 60,
        ms % 1000
    )
}

/// A new id: 10 lower-case letters and digits (Amazon's deployment and mapping ids' shape).
fn new_id() -> Result<String, OpError> {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = [0u8; 10];
    getrandom::getrandom(&mut b)
        .map_err(|e| OpError(500, format!("no randomness for an id: {e}")))?;
    Ok(b.iter().map(|x| A[*x as usize % A.len()] as char).collect())
}

impl Objects {
    /// What the store holds.
    pub(crate) fn load(store: &Store) -> Result<Objects, String> {
        let mut o = Objects::default();
        for (k, v) in store.objects()? {
            o.set(&k, Some(&v));
        }
        Ok(o)
    }

    /// Whether a stored object's key names one of these (rather than a node's own records).
    pub(crate) fn is_object_key(k: &str) -> bool {
        ["api/", "deployment/", "stage/", "mapping/"]
            .iter()
            .any(|p| k.starts_with(p))
    }

    /// Sets (`Some` JSON) or removes (`None`) the object stored under `k`. A record this
    /// version cannot read is skipped and said, never a reason not to start.
    pub(crate) fn set(&mut self, k: &str, v: Option<&str>) {
        let Some(v) = v else {
            let mut parts = k.splitn(3, '/');
            let (kind, a, b) = (parts.next(), parts.next(), parts.next());
            let pair = |a: Option<&str>, b: Option<&str>| {
                (
                    a.unwrap_or_default().to_string(),
                    b.unwrap_or_default().to_string(),
                )
            };
            match kind {
                Some("api") => {
                    self.apis.remove(a.unwrap_or_default());
                }
                Some("deployment") => {
                    self.deployments.remove(&pair(a, b));
                }
                Some("stage") => {
                    self.stages.remove(&pair(a, b));
                }
                Some("mapping") => {
                    self.mappings.remove(a.unwrap_or_default());
                }
                _ => {}
            }
            return;
        };
        let r = if k.starts_with("api/") {
            serde_json::from_str::<RtApi>(v).map(|mut a| {
                stored_policy(k, &mut a.definition);
                self.apis.insert(a.name.clone(), a);
            })
        } else if k.starts_with("deployment/") {
            serde_json::from_str::<RtDeployment>(v).map(|mut d| {
                stored_policy(k, &mut d.definition);
                self.deployments.insert((d.api.clone(), d.id.clone()), d);
            })
        } else if k.starts_with("stage/") {
            serde_json::from_str::<RtStage>(v).map(|s| {
                self.stages.insert((s.api.clone(), s.name.clone()), s);
            })
        } else if k.starts_with("mapping/") {
            serde_json::from_str::<RtMapping>(v).map(|m| {
                self.mappings.insert(m.id.clone(), m);
            })
        } else {
            Ok(())
        };
        if let Err(e) = r {
            tracing::warn!(object = %k, error = %e, "a run-time object cannot be read; it is not served");
        }
    }

    /// The file's configuration with these objects merged in; what could not be (an object
    /// that no longer compiles against a reloaded file: skipped, and said); and the file's
    /// `[[domains]]` mappings that name a run-time stage not there (yet).
    pub(crate) fn merge(&self, file: &Config, base: &Path) -> (Config, Vec<String>, Vec<String>) {
        let mut cfg = file.clone();
        let mut errors = Vec::new();
        let mut placed: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        // Stages (not canaries) left out for their own errors, already said.
        let mut failed: BTreeSet<(String, String)> = BTreeSet::new();
        for name in self.apis.keys() {
            if file.apis.iter().any(|a| &a.name == name) {
                errors.push(format!(
                    "apis[{name:?}]: the configuration file declares an API of this name; the run-time one is not served"
                ));
                continue;
            }
            let mut by_deployment: BTreeMap<&str, Vec<&RtStage>> = BTreeMap::new();
            // A canary is a stage of its own, served by the canary's deployment with the
            // stage's settings and the overridden variables.
            // Checked as `{n}__canary`, renamed `{stage}/Canary` once compiled.
            let mut canary_of: BTreeMap<String, &RtStage> = BTreeMap::new();
            let canaries: Vec<RtStage> = self
                .stages
                .values()
                .filter(|s| &s.api == name)
                .filter_map(|s| {
                    let c = s.canary.as_ref()?;
                    let mut settings = s.settings.clone();
                    override_variables(&mut settings, &c.stage_variable_overrides);
                    let tmp = format!("{}{CANARY_TMP}", canary_of.len());
                    canary_of.insert(tmp.clone(), s);
                    Some(RtStage {
                        name: tmp,
                        deployment: c.deployment.clone(),
                        settings,
                        canary: None,
                        ..s.clone()
                    })
                })
                .collect();
            for s in self
                .stages
                .values()
                .filter(|s| &s.api == name)
                .chain(&canaries)
            {
                by_deployment.entry(&s.deployment).or_default().push(s);
            }
            for (dep, stages) in by_deployment {
                let Some(d) = self.deployments.get(&(name.clone(), dep.to_string())) else {
                    errors.push(format!("apis[{name:?}]: no deployment {dep:?}"));
                    continue;
                };
                let group = Group {
                    cfg: &cfg,
                    deployment: d,
                    canary_of: &canary_of,
                    base,
                };
                let Some(mut a) = group.compile(&stages, &mut errors, &mut failed) else {
                    continue;
                };
                let i = cfg.apis.len();
                for (si, st) in a.stages.iter_mut().enumerate() {
                    if let Some(s) = canary_of.get(&st.name) {
                        st.name = format!("{}{CANARY}", s.name);
                    }
                    placed.insert((name.clone(), st.name.clone()), (i, si));
                }
                cfg.apis.push(a);
            }
        }
        // As the file's stages: a sampling ratio without a collector would trace nothing
        // (refused by the admin API; a stored one is served without it, and said).
        if cfg.tracing.is_none() {
            let at = file.apis.len();
            for a in &mut cfg.apis[at..] {
                for st in a.stages.iter_mut().filter(|st| st.trace_sample.is_some()) {
                    st.trace_sample = None;
                    if !st.name.ends_with(CANARY) {
                        errors.push(format!(
                            "apis[{:?}].stages[{:?}].tracing: needs the [tracing] table (otlp_endpoint, the collector to send spans to): without it nothing is traced",
                            a.name, st.name
                        ));
                    }
                }
            }
        }
        for s in self.stages.values() {
            let Some(c) = &s.canary else { continue };
            let key = |stage: String| (s.api.clone(), stage);
            if let (Some(&(ai, si)), Some(&(ci, csi))) = (
                placed.get(&key(s.name.clone())),
                placed.get(&key(format!("{}{CANARY}", s.name))),
            ) {
                if c.use_stage_cache {
                    cfg.apis[ci].stages[csi].shared_cache = Some(s.name.clone());
                }
                cfg.apis[ai].stages[si].canary = Some(crate::config::CanaryLink {
                    api: ci,
                    stage: csi,
                    percent: c.percent_traffic,
                });
            }
        }
        // Usage plans that name run-time stages cover them, with their canaries.
        let mut waiting = Vec::new();
        for plan in &mut cfg.usage_plans {
            let before = plan.stages.len();
            for (api, stage) in &plan.pending_stages {
                for st in [stage.clone(), format!("{stage}{CANARY}")] {
                    if let Some(&at) = placed.get(&(api.clone(), st)) {
                        plan.stages.push(at);
                    }
                }
            }
            for (rk, rate) in &plan.pending_route_throttle {
                let mut hit = plan.stages[..before]
                    .iter()
                    .any(|&(ai, _)| cfg.apis[ai].routes.iter().any(|r| &r.key == rk));
                for &(ai, si) in &plan.stages[before..] {
                    let a = &cfg.apis[ai];
                    if let Some(ri) = a.routes.iter().position(|r| &r.key == rk) {
                        hit = true;
                        let stage = &a.stages[si].name;
                        let stage = stage.strip_suffix(CANARY).unwrap_or(stage);
                        plan.route_throttle.push(crate::config::RouteThrottle::new(
                            &plan.name,
                            &a.name,
                            stage,
                            rk,
                            (ai, si, ri),
                            *rate,
                        ));
                    }
                }
                if !hit && plan.stages.len() > before {
                    waiting.push(format!(
                        "usage_plans[{:?}].route_throttle[{rk:?}]: no stage this plan covers has that route (yet)",
                        plan.name
                    ));
                }
            }
        }
        // The file's mappings to run-time stages come before those made at run time.
        for (di, d) in file.domains.iter().enumerate() {
            for p in &d.pending {
                let Some(&(api, stage)) = placed.get(&(p.api.clone(), p.stage.clone())) else {
                    waiting.push(format!(
                        "{}: API {:?} has no stage {:?} (neither in the file nor among run-time APIs' deployed stages); served once it has",
                        p.key, p.api, p.stage
                    ));
                    continue;
                };
                cfg.domains[di].mappings.push(crate::config::Mapping {
                    base_path: p.base_path.clone(),
                    api,
                    stage,
                });
            }
        }
        for m in self.mappings.values() {
            let key = (m.api.clone(), m.stage.clone());
            let reserve = |cfg: &mut crate::config::Config| {
                if let (Ok(h), Ok(b)) = (
                    crate::config::host_pattern(&m.host),
                    crate::config::base_path(&m.base_path),
                ) {
                    crate::config::reserve_mapping(cfg, h, b);
                }
            };
            let Some(&(ai, si)) = placed.get(&key) else {
                // What it would take answers 404, never served by another mapping's API.
                reserve(&mut cfg);
                let text = format!(
                    "domain mapping {} (host {:?}): API {:?} has no deployed stage {:?}",
                    m.id, m.host, m.api, m.stage
                );
                if failed.contains(&key) {
                    // The stage's own errors say why; this follows from them.
                    waiting.push(format!("{text} that compiles; its requests answer 404"));
                } else {
                    errors.push(text);
                }
                continue;
            };
            let r = crate::config::host_pattern(&m.host)
                .and_then(|h| Ok((h, crate::config::base_path(&m.base_path)?)))
                .and_then(|(h, b)| crate::config::add_mapping(&mut cfg, h, b, ai, si));
            if let Err(e) = r {
                errors.push(format!("domain mapping {}: {e}", m.id));
            }
        }
        (cfg, errors, waiting)
    }
}

/// One deployment of a run-time API and the stages (and canaries) serving it, compiled as
/// one API of the configuration.
struct Group<'a> {
    cfg: &'a Config,
    deployment: &'a RtDeployment,
    /// A canary's temporary stage name → the stage it is the canary of.
    canary_of: &'a BTreeMap<String, &'a RtStage>,
    base: &'a Path,
}

impl Group<'_> {
    /// The API serving `stages`; a stage that does not compile (a canary whose override
    /// names an upstream the file no longer has, say) is left out, its errors said and its
    /// name added to `failed`: one bad stage never takes its neighbours offline.
    fn compile(
        &self,
        stages: &[&RtStage],
        errors: &mut Vec<String>,
        failed: &mut BTreeSet<(String, String)>,
    ) -> Option<crate::config::Api> {
        let good: Vec<&RtStage> = match self.try_compile(stages) {
            Ok(a) => return Some(a),
            Err(e) if stages.len() == 1 => {
                self.fail(stages, e, errors, failed);
                return None;
            }
            // Which of them: each alone (only when the group fails).
            Err(_) => stages
                .iter()
                .copied()
                .filter(|s| match self.try_compile(&[s]) {
                    Ok(_) => true,
                    Err(e) => {
                        self.fail(&[s], e, errors, failed);
                        false
                    }
                })
                .collect(),
        };
        if good.is_empty() {
            return None;
        }
        match self.try_compile(&good) {
            Ok(a) => Some(a),
            Err(e) => {
                self.fail(&good, e, errors, failed);
                None
            }
        }
    }

    fn try_compile(&self, stages: &[&RtStage]) -> Result<crate::config::Api, Vec<String>> {
        let tables = stages
            .iter()
            .map(|s| {
                let mut t = s.settings.clone();
                t.insert("name".into(), json!(s.name));
                Value::Object(t)
            })
            .collect();
        let d = self.deployment;
        crate::config::runtime_api(self.cfg, &d.api, &d.definition, tables, self.base)
    }

    /// Says `e`, the errors of `stages` compiled together, in the admin API's names: a
    /// stage by its name (not its place in the list), a canary as `stages["prod"].canary`
    /// and its overridden variables as `stage_variable_overrides`.
    fn fail(
        &self,
        stages: &[&RtStage],
        e: Vec<String>,
        errors: &mut Vec<String>,
        failed: &mut BTreeSet<(String, String)>,
    ) {
        let api = &self.deployment.api;
        for x in e {
            let mut x = format!("deployment {}: {x}", self.deployment.id);
            for (i, s) in stages.iter().enumerate() {
                let Some(of) = self.canary_of.get(&s.name) else {
                    let key = format!("stages[{:?}]", s.name);
                    x = x.replace(
                        &format!("apis[{api:?}].stages[{i}]"),
                        &format!("apis[{api:?}].{key}"),
                    );
                    continue;
                };
                let key = format!("stages[{:?}].canary", of.name);
                x = x
                    .replace(
                        &format!("apis[{api:?}].stages[{i}]"),
                        &format!("apis[{api:?}].{key}"),
                    )
                    .replace(&format!("stages[{:?}]", s.name), &key)
                    .replace(&format!("in stage {:?}", s.name), &format!("in {key}"));
                // A name that is no variable name: one of the overrides'.
                x = x.replace(
                    &format!("{key}.variables ="),
                    &format!("{key}.stage_variable_overrides ="),
                );
                let overrides = of.canary.iter().flat_map(|c| &c.stage_variable_overrides);
                for (k, v) in overrides {
                    x = x.replace(
                        &format!("{key}.variables.{k}"),
                        &format!("{key}.stage_variable_overrides.{k}"),
                    );
                    // A template the override went into: which override it was.
                    if x.contains(&format!("in {key}"))
                        && x.contains(&format!("stageVariables.{k}}}"))
                    {
                        x = x.replace(
                            &format!("in {key}"),
                            &format!("in {key} (stage_variable_overrides.{k} = {v})"),
                        );
                    }
                }
            }
            if !errors.contains(&x) {
                errors.push(x);
            }
        }
        for s in stages
            .iter()
            .filter(|s| !self.canary_of.contains_key(&s.name))
        {
            failed.insert((s.api.clone(), s.name.clone()));
        }
    }
}

/// `tollgate check`'s look at the state store, read on a copy: the API keys made through the
/// admin API, and what of its run-time objects this configuration would not serve as stored
/// (as a start or a reload would say it). `Ok(None)`: no store yet. The objects are merged
/// and compiled outside the store's read (a panic there is not the store's damage).
/// Also: what start-up would refuse of the stored keys' plans (a key on two plans the file
/// now makes cover one stage).
#[allow(clippy::type_complexity)]
pub(crate) fn check_stored(
    cfg: &Config,
    base: &std::path::Path,
) -> Result<
    Option<(
        Vec<crate::control::store::StoredKey>,
        Vec<String>,
        Vec<String>,
    )>,
    String,
> {
    let Some((keys, objects)) = crate::control::store::on_copy(&cfg.server.state_dir, |s| {
        Ok((s.keys()?, Objects::load(s)?))
    })?
    else {
        return Ok(None);
    };
    let (merged, mut said, waiting) = objects.merge(cfg, base);
    said.extend(
        waiting
            .into_iter()
            .map(|w| format!("waits for a run-time stage: {w}")),
    );
    // As start-up compiles it (the file alone when the run-time objects do not fit).
    let compiled = match crate::compile::compile(Arc::new(merged), &mut Default::default()) {
        Ok(c) => Some(c),
        Err(e) => {
            said.push(format!(
                "run-time APIs would not be served: the configuration does not compile with them: {}",
                e.errors.join("; ")
            ));
            crate::compile::compile(Arc::new(cfg.clone()), &mut Default::default()).ok()
        }
    };
    let clashes = compiled
        .map(|c| crate::control::keys::stored_key_plan_clashes(&c, &keys))
        .unwrap_or_default();
    Ok(Some((keys, said, clashes)))
}

/// Compiles the file's configuration with the run-time objects merged in; when that fails
/// but the file alone compiles (a run-time object that only the compile step refuses), serves
/// the file alone and says which errors kept the run-time objects out. Stored objects never
/// stop a start or a reload.
pub(crate) fn compile_merged(
    merged: Config,
    file: &Config,
    registries: &mut crate::compile::Registries,
) -> Result<Compiled, crate::config::ConfigError> {
    match crate::compile::compile(Arc::new(merged), registries) {
        Ok(c) => Ok(c),
        Err(merged_errors) => {
            let c = crate::compile::compile(Arc::new(file.clone()), registries)?;
            tracing::warn!(
                errors = %merged_errors.errors.join("; "),
                "run-time APIs are not served: the configuration does not compile with them"
            );
            Ok(c)
        }
    }
}

/// A stage's settings with a canary's variable overrides applied.
fn override_variables(settings: &mut Map<String, Value>, overrides: &Map<String, Value>) {
    if overrides.is_empty() {
        return;
    }
    let mut vars = settings
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in overrides {
        vars.insert(k.clone(), v.clone());
    }
    settings.insert("variables".into(), Value::Object(vars));
}

/// A stage's view.
fn stage_view(s: &RtStage) -> Value {
    let mut v = json!({
        "name": s.name,
        "deployment": s.deployment,
        "created": s.created,
        "updated": s.updated,
        "source": "admin",
    });
    for (k, x) in &s.settings {
        v[k] = x.clone();
    }
    if s.auto_deploy {
        v["auto_deploy"] = json!(true);
    }
    if let Some(c) = &s.canary {
        v["canary"] = serde_json::to_value(c).unwrap_or_default();
    }
    v
}

/// The settings a stage body may carry besides its name and deployment.
const STAGE_SETTINGS: [&str; 6] = [
    "variables",
    "throttle",
    "cache",
    "access_log",
    "tracing",
    "compression",
];

/// A body's `canary`: absent (`None`), `null` to remove it (`Some(None)`), or one.
fn canary_of(body: &Map<String, Value>) -> Result<Option<Option<RtCanary>>, OpError> {
    let Some(v) = body.get("canary") else {
        return Ok(None);
    };
    if v.is_null() {
        return Ok(Some(None));
    }
    let c: RtCanary = crate::config::from_json(v.clone(), "canary")
        .map_err(|e| bad(format!("{e} (a canary takes deployment, percent_traffic, stage_variable_overrides, use_stage_cache)")))?;
    if !(0.0..=100.0).contains(&c.percent_traffic) {
        return Err(bad(format!(
            "canary.percent_traffic = {} is not valid: expected 0.0 to 100.0",
            c.percent_traffic
        )));
    }
    Ok(Some(Some(c)))
}

/// A stage made or changed through the admin API logs to stdout or to a file whose name ends
/// in `.log` (inside `admin.access_log_dir`, checked with the rest): never the config file, the
/// state store or a certificate that may share that folder.
fn check_access_log_path(v: &Value) -> Result<(), OpError> {
    match v.get("path").and_then(Value::as_str) {
        Some(p)
            if p != "stdout"
                && (p.chars().any(char::is_control)
                    || p.ends_with('/')
                    || std::path::Path::new(p)
                        .extension()
                        .is_none_or(|e| e != "log")) =>
        {
            Err(bad(format!(
                "access_log.path = {p:?} is not valid: expected \"stdout\" or a file whose name ends in .log (relative to admin.access_log_dir, without control characters)"
            )))
        }
        _ => Ok(()),
    }
}

fn stage_settings(body: &Map<String, Value>) -> Result<Map<String, Value>, OpError> {
    let mut out = Map::new();
    for (k, v) in body {
        match k.as_str() {
            "name" | "deployment" | "canary" | "auto_deploy" => {}
            k if STAGE_SETTINGS.contains(&k) => {
                if k == "access_log" {
                    check_access_log_path(v)?;
                }
                if !v.is_null() {
                    out.insert(k.to_string(), v.clone());
                }
            }
            other => {
                return Err(bad(format!(
                "unknown field `{other}`: a stage takes name, deployment, auto_deploy, canary, {}",
                STAGE_SETTINGS.join(", ")
            )))
            }
        }
    }
    Ok(out)
}

/// A stored definition's `resource_policy` that restricts nobody (`allow: []`, `{}`: made by
/// an earlier version, which served it as "admit everyone"; the configuration now refuses
/// such a policy) is read as it was served, so that an upgrade does not stop serving it: an
/// empty allow list is dropped, and a policy left naming nobody with it.
fn stored_policy(key: &str, def: &mut Value) {
    let Some(p) = def
        .get_mut("resource_policy")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let empty = |v: Option<&Value>| v.and_then(Value::as_array).is_some_and(Vec::is_empty);
    let mut changed = false;
    if empty(p.get("allow")) {
        p.remove("allow");
        changed = true;
    }
    if p.get("allow").is_none() && (p.get("deny").is_none() || empty(p.get("deny"))) {
        if let Some(d) = def.as_object_mut() {
            d.remove("resource_policy");
        }
        changed = true;
    }
    if changed {
        tracing::info!(object = %key, "a stored resource_policy that restricted nobody is read as it was served: every caller not denied is admitted");
    }
}

#[cfg(test)]
mod stored_policy_tests {
    use super::*;

    #[test]
    fn policies_that_restricted_nobody_read_as_they_were_served() {
        for (before, after) in [
            (json!({"allow": [], "deny": []}), None),
            (json!({}), None),
            (
                json!({"allow": [], "deny": ["10.0.0.0/8"]}),
                Some(json!({"deny": ["10.0.0.0/8"]})),
            ),
            (
                json!({"allow": ["10.0.0.0/8"]}),
                Some(json!({"allow": ["10.0.0.0/8"]})),
            ),
        ] {
            let mut def = json!({"routes": [], "resource_policy": before});
            stored_policy("api/x", &mut def);
            assert_eq!(def.get("resource_policy").cloned(), after);
        }
    }
}
