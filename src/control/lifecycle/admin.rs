//! The admin API's operations on run-time APIs, deployments, stages and canaries (domain
//! mappings: `domains.rs`): each change is compiled before it is stored.

use super::*;

impl Control {
    /// A run-time stage, by API and name (404 when there is none).
    fn rt_stage(&self, api: &str, stage: &str) -> Result<RtStage, OpError> {
        self.objects
            .stages
            .get(&(api.to_string(), stage.to_string()))
            .cloned()
            .ok_or_else(|| OpError(404, format!("API {api:?} has no stage {stage:?}")))
    }

    /// The folder relative config paths are resolved against.
    pub(in crate::control) fn config_base(&self) -> PathBuf {
        self.config_path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Compiles the file's configuration with `objects`; on success stores the change
    /// (`puts`, `deletes`) and serves it. Nothing changes when any step fails.
    /// While the change is planned for the fleet (`Control::plan_objects`), it is only
    /// checked and noted: the fleet's Redis takes it first, and every node applies it from
    /// there (`Control::apply_fleet_objects`).
    pub(super) fn apply(
        &mut self,
        objects: Objects,
        puts: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> Result<u64, OpError> {
        self.objects_store()?;
        let base = self.config_base();
        let (merged, errors, _) = objects.merge(&self.file_config, &base);
        // What is already not served (after a reload, say) does not block other changes.
        let (before_cfg, before, _) = self.objects.merge(&self.file_config, &base);
        let new: Vec<String> = errors
            .iter()
            .filter(|e| !before.contains(e))
            .cloned()
            .collect();
        if !new.is_empty() {
            return Err(OpError(400, new.join("; ")));
        }
        // Judged by what is served, not by the errors' words (an error that names no stage,
        // an authorizer's, is the same text for every stage put on its deployment): a stage
        // or canary served before and kept, or one this change writes, must be served after.
        let after = super::domains::served(&merged);
        let before_served = super::domains::served(&before_cfg);
        // A stage (or canary) already dark before is left to be fixed: not a reason to
        // refuse changes around it.
        let was_dark =
            |k: &(String, String)| self.objects.has_stage(&k.0, &k.1) && !before_served.contains(k);
        let kept_dark = before_served
            .iter()
            .filter(|k| !after.contains(*k) && objects.has_stage(&k.0, &k.1))
            .cloned();
        let written_dark = puts
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("stage/")?.split_once('/'))
            .flat_map(|(api, stage)| {
                let canary = objects
                    .stages
                    .get(&(api.to_string(), stage.to_string()))
                    .is_some_and(|s| s.canary.is_some())
                    .then(|| (api.to_string(), format!("{stage}{CANARY}")));
                std::iter::once((api.to_string(), stage.to_string())).chain(canary)
            })
            .filter(|k| !after.contains(k) && !was_dark(k));
        let dark: BTreeSet<(String, String)> = kept_dark.chain(written_dark).collect();
        if !dark.is_empty() {
            let list: Vec<String> = dark
                .iter()
                .map(|(a, s)| format!("stage {s:?} of API {a:?}"))
                .collect();
            return Err(OpError(
                400,
                format!(
                    "{} would not be served: {}",
                    list.join(", "),
                    errors.join("; ")
                ),
            ));
        }
        // Compiled against a copy of the registries: they change only with the store.
        let mut registries = self.registries.clone();
        let compiled = crate::compile::compile(Arc::new(merged), &mut registries)
            .map_err(|e| OpError(400, e.errors.join("; ")))?;
        if self.note_planned(&puts, &deletes) {
            self.objects = objects;
            return Ok(self.generation());
        }
        self.objects_store()?
            .write_objects(&puts, &deletes)
            .map_err(|e| OpError(500, format!("the state store refused the change: {e}")))?;
        self.registries = registries;
        let before = std::mem::replace(&mut self.objects, objects);
        let generation = self.install(compiled);
        self.flush_redeployed(&before);
        Ok(generation)
    }

    /// Stores a change that serves nothing new (an API's definition, a deployment no stage
    /// serves yet) and keeps it as the run-time objects.
    pub(super) fn keep(
        &mut self,
        objects: Objects,
        puts: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> Result<(), OpError> {
        if self.note_planned(&puts, &deletes) {
            self.objects = objects;
            return Ok(());
        }
        self.objects_store()?
            .write_objects(&puts, &deletes)
            .map_err(|e| OpError(500, format!("the state store refused the change: {e}")))?;
        self.objects = objects;
        Ok(())
    }

    /// While a change is planned: notes its writes (the later of two to one object wins)
    /// and says so.
    fn note_planned(&mut self, puts: &[(String, String)], deletes: &[String]) -> bool {
        let Some((_, plan)) = self.planned.as_mut() else {
            return false;
        };
        for (k, v) in puts {
            plan.insert(k.clone(), Some(v.clone()));
        }
        for k in deletes {
            plan.insert(k.clone(), None);
        }
        true
    }

    /// Answers cached from a stage's previous deployment are not its new one's: the caches
    /// of stages (and canaries) whose deployment changed since `before` are flushed — on
    /// every node of a fleet, as each applies the change.
    pub(in crate::control) fn flush_redeployed(&self, before: &Objects) {
        for (k, s) in &self.objects.stages {
            let Some(b) = before.stages.get(k) else {
                continue;
            };
            if b.deployment != s.deployment {
                if let Ok(c) = self.stage_cache(&s.api, &s.name) {
                    c.flush();
                }
            }
            let canary = |x: &RtStage| x.canary.as_ref().map(|c| c.deployment.clone());
            if canary(b).is_some() && canary(s).is_some() && canary(b) != canary(s) {
                if let Ok(c) = self.stage_cache(&s.api, &format!("{}{CANARY}", s.name)) {
                    c.flush();
                }
            }
        }
    }

    pub(super) fn objects_store(&self) -> Result<&Store, OpError> {
        self.store().map_err(|e| OpError(503, e))
    }

    pub(super) fn runtime_api(&self, name: &str) -> Result<&RtApi, OpError> {
        if let Some(a) = self.objects.apis.get(name) {
            return Ok(a);
        }
        if self.file_config.apis.iter().any(|a| a.name == name) {
            return Err(OpError(
                409,
                format!("API {name:?} is declared in the configuration file: change it there"),
            ));
        }
        Err(OpError(404, format!("no API {name:?}")))
    }

    /// `GET /apis`: the file's APIs and the run-time ones.
    pub(crate) fn list_apis(&self) -> Value {
        let mut items: Vec<Value> = self
            .file_config
            .apis
            .iter()
            .map(|a| {
                json!({
                    "name": a.name,
                    "source": "file",
                    "stages": a.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        for a in self.objects.apis.values() {
            items.push(self.api_view(a));
        }
        json!({ "items": items })
    }

    pub(super) fn api_view(&self, a: &RtApi) -> Value {
        let stages: Vec<&str> = self
            .objects
            .stages
            .values()
            .filter(|s| s.api == a.name)
            .map(|s| s.name.as_str())
            .collect();
        let mut v = json!({
            "name": a.name,
            "source": "admin",
            "created": a.created,
            "updated": a.updated,
            "stages": stages,
            "definition": a.definition,
        });
        // The file declared an API of this name since (a reload): that one is served, and
        // the stages, routes and exports of this name are its; this one waits.
        if self.file_config.apis.iter().any(|f| f.name == a.name) {
            v["serving"] = json!(false);
            v["shadowed"] = json!(
                "the configuration file declares an API of this name: that one is served; this one is kept, and served again once the file no longer declares it"
            );
        }
        v
    }

    /// `GET /apis/{api}`.
    pub(crate) fn get_api(&self, name: &str) -> Result<Value, OpError> {
        if let Some(a) = self.objects.apis.get(name) {
            return Ok(self.api_view(a));
        }
        let a = self
            .file_config
            .apis
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| OpError(404, format!("no API {name:?}")))?;
        Ok(json!({ "name": a.name, "source": "file", "definition": a }))
    }

    /// `POST /apis?mode=import` and `PUT /apis/{api}?mode=overwrite|merge`: an OpenAPI 3.x or
    /// Swagger 2.0 document (JSON or YAML) as a run-time API's definition (merge: folded into
    /// the API's, `crate::openapi::merge`); with `failonwarnings`, any warning refuses the
    /// import. The answer lists the warnings.
    pub(crate) fn import_api(
        &mut self,
        existing: Option<&str>,
        name: Option<String>,
        mode: &str,
        fail_on_warnings: bool,
        body: &[u8],
    ) -> Result<Value, OpError> {
        // A byte-order mark may open either (YAML 1.2, RFC 8259 8.1): editors write one.
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        // JSON when it reads as JSON; else YAML (of which JSON is a part: a document in flow
        // style that is not JSON is YAML too).
        let yaml = || {
            std::str::from_utf8(body)
                .map_err(|_| "the document must be JSON or YAML in UTF-8".to_string())
                .and_then(crate::openapi::yaml::to_json)
        };
        let doc: Value = if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            match crate::syntax::json_strict::from_slice(body) {
                Ok(v) => v,
                Err(e) => yaml().map_err(|_| bad(format!("invalid JSON: {e}")))?,
            }
        } else {
            yaml().map_err(bad)?
        };
        let underscores_dropped =
            self.file_config.limits.underscores_in_headers == crate::config::Underscores::Drop;
        let imported = crate::openapi::import(
            &doc,
            body.len(),
            underscores_dropped,
            self.file_config.limits.integration_timeout,
        )
        .map_err(bad)?;
        if fail_on_warnings && !imported.warnings.is_empty() {
            return Err(OpError(
                400,
                format!(
                    "import refused (failonwarnings): {}",
                    imported.warnings.join("; ")
                ),
            ));
        }
        // A null member says "none" to a merge (a resource policy that admits everyone
        // replaces the API's); a definition of its own leaves it out.
        let own = |mut def: Value| {
            if let Some(o) = def.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            def
        };
        let mut view = match existing {
            None => {
                let name = name.unwrap_or(imported.title);
                let mut def = own(imported.definition);
                def["name"] = json!(name);
                self.create_api(def)?
            }
            Some(api) => {
                let def = match mode {
                    "overwrite" => crate::openapi::keep_settings(
                        &self.runtime_api(api)?.definition,
                        own(imported.definition),
                    ),
                    "merge" => crate::openapi::merge(
                        &self.runtime_api(api)?.definition,
                        &imported.definition,
                    ),
                    other => {
                        return Err(bad(format!("mode={other:?}: expected overwrite or merge")))
                    }
                };
                self.put_api(api, def)?
            }
        };
        view["warnings"] = json!(imported.warnings);
        Ok(view)
    }

    /// `POST /apis`: a new run-time API (its definition: an `[[apis]]` table without stages).
    pub(crate) fn create_api(&mut self, body: Value) -> Result<Value, OpError> {
        let mut def = body
            .as_object()
            .cloned()
            .ok_or_else(|| bad("the body must be a JSON object"))?;
        let name = match def.shift_remove("name") {
            Some(Value::String(n)) => n,
            _ => return Err(bad("name: is required (letters, digits, '_' or '-')")),
        };
        super::super::check_object_name(&name)?;
        if self.file_config.apis.iter().any(|a| a.name == name) {
            return Err(OpError(
                409,
                format!("API {name:?} is declared in the configuration file"),
            ));
        }
        if self.objects.apis.contains_key(&name) {
            return Err(OpError(409, format!("API {name:?} exists")));
        }
        let def = Value::Object(def);
        crate::config::check_definition(&self.file_config, &name, &def, &self.config_base())
            .map_err(|e| bad(e.join("; ")))?;
        let now = now_text();
        let a = RtApi {
            name: name.clone(),
            definition: def,
            created: now.clone(),
            updated: now,
        };
        let mut o = self.objects.clone();
        o.apis.insert(name.clone(), a.clone());
        self.keep(o, vec![(api_key(&name), to_json(&a)?)], Vec::new())?;
        Ok(self.api_view(&a))
    }

    /// `PUT /apis/{api}`: replaces the definition. Stages keep serving their deployments
    /// until one is made of it.
    pub(crate) fn put_api(&mut self, name: &str, body: Value) -> Result<Value, OpError> {
        let a = self.runtime_api(name)?.clone();
        let mut def = body
            .as_object()
            .cloned()
            .ok_or_else(|| bad("the body must be a JSON object"))?;
        match def.shift_remove("name") {
            Some(Value::String(n)) if n != name => {
                return Err(bad(format!("name: {n:?} differs from the path's {name:?}")))
            }
            _ => {}
        }
        self.store_definition(a, Value::Object(def))?;
        let a = self.runtime_api(name)?.clone();
        Ok(self.api_view(&a))
    }

    /// `DELETE /apis/{api}`: the API, its deployments and stages; refused while a domain
    /// mapping serves one of them.
    pub(crate) fn delete_api(&mut self, name: &str) -> Result<Value, OpError> {
        self.runtime_api(name)?;
        let mut o = self.objects.clone();
        o.apis.remove(name);
        let mut deletes = vec![api_key(name)];
        o.deployments.retain(|(a, id), _| {
            let keep = a != name;
            if !keep {
                deletes.push(deployment_key(a, id));
            }
            keep
        });
        o.stages.retain(|(a, s), _| {
            let keep = a != name;
            if !keep {
                deletes.push(stage_key(a, s));
            }
            keep
        });
        self.unmapped(name, None)?;
        let generation = self.apply(o, Vec::new(), deletes)?;
        Ok(json!({ "deleted": name, "generation": generation }))
    }

    /// `POST /apis/{api}/deployments`: an immutable snapshot of the definition; with
    /// `"stage"`, that stage (created if missing) serves it at once.
    pub(crate) fn create_deployment(&mut self, api: &str, body: Value) -> Result<Value, OpError> {
        let a = self.runtime_api(api)?.clone();
        let body = body
            .as_object()
            .cloned()
            .ok_or_else(|| bad("the body must be a JSON object"))?;
        if body.get("stage").is_some_and(|s| !s.is_string()) {
            return Err(bad("stage: expected a stage name"));
        }
        if body.get("description").is_some_and(|s| !s.is_string()) {
            return Err(bad("description: expected text"));
        }
        for k in body.keys() {
            if !["description", "stage"].contains(&k.as_str()) {
                return Err(bad(format!(
                    "unknown field `{k}`: a deployment takes description, stage"
                )));
            }
        }
        let description = body.get("description").and_then(Value::as_str);
        if let Some(d) = description {
            super::super::check_description(d)?;
        }
        let d = parts::new_deployment(&a, description.unwrap_or_default())?;
        let view = json!({ "id": d.id, "description": d.description, "created": d.created });
        let mut o = self.objects.clone();
        o.deployments
            .insert((api.to_string(), d.id.clone()), d.clone());
        let mut puts = vec![(deployment_key(api, &d.id), to_json(&d)?)];
        if let Some(stage) = body.get("stage").and_then(Value::as_str) {
            let now = now_text();
            let s = match o.stages.get(&(api.to_string(), stage.to_string())) {
                Some(s) => RtStage {
                    deployment: d.id.clone(),
                    updated: now,
                    ..s.clone()
                },
                None => RtStage {
                    api: api.to_string(),
                    name: {
                        check_stage_name(stage)?;
                        stage.to_string()
                    },
                    deployment: d.id.clone(),
                    settings: Map::new(),
                    canary: None,
                    auto_deploy: false,
                    created: now.clone(),
                    updated: now,
                },
            };
            puts.push((stage_key(api, stage), to_json(&s)?));
            o.stages.insert((api.to_string(), stage.to_string()), s);
            self.apply(o, puts, Vec::new())?;
        } else {
            self.keep(o, puts, Vec::new())?;
        }
        Ok(view)
    }

    /// `GET /apis/{api}/deployments`: the history, oldest first.
    pub(crate) fn list_deployments(&self, api: &str) -> Result<Value, OpError> {
        // A file API has no deployments: it serves as the file says.
        if self.file_config.apis.iter().any(|a| a.name == api) {
            return Ok(json!({ "items": [], "source": "file" }));
        }
        self.runtime_api(api)?;
        let mut items: Vec<&RtDeployment> = self
            .objects
            .deployments
            .values()
            .filter(|d| d.api == api)
            .collect();
        items.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        let items: Vec<Value> = items
            .iter()
            .map(|d| json!({ "id": d.id, "description": d.description, "created": d.created }))
            .collect();
        Ok(json!({ "items": items }))
    }

    /// `GET /apis/{api}/stages`.
    pub(crate) fn list_stages(&self, api: &str) -> Result<Value, OpError> {
        if let Some(a) = self.file_config.apis.iter().find(|a| a.name == api) {
            let items: Vec<Value> = a
                .stages
                .iter()
                .map(|s| json!({ "name": s.name, "source": "file" }))
                .collect();
            return Ok(json!({ "items": items }));
        }
        self.runtime_api(api)?;
        let items: Vec<Value> = self
            .objects
            .stages
            .values()
            .filter(|s| s.api == api)
            .map(stage_view)
            .collect();
        Ok(json!({ "items": items }))
    }

    /// `GET /apis/{api}/stages/{stage}`.
    pub(crate) fn get_stage(&self, api: &str, stage: &str) -> Result<Value, OpError> {
        if let Some(a) = self.file_config.apis.iter().find(|a| a.name == api) {
            let s = a
                .stages
                .iter()
                .find(|s| s.name == stage)
                .ok_or_else(|| OpError(404, format!("API {api:?} has no stage {stage:?}")))?;
            return Ok(json!({ "name": s.name, "source": "file", "stage": s }));
        }
        self.runtime_api(api)?;
        self.objects
            .stages
            .get(&(api.to_string(), stage.to_string()))
            .map(stage_view)
            .ok_or_else(|| OpError(404, format!("API {api:?} has no stage {stage:?}")))
    }

    /// `POST /apis/{api}/stages` and `PATCH /apis/{api}/stages/{stage}`: `name` (POST),
    /// `deployment` (required to create; changing it is a rollout or a rollback), and an
    /// `[[apis.stages]]` table's settings. Compiled before it is stored.
    /// Amazon's words for a deployment given to a stage that deploys every change itself.
    const AUTO_DEPLOYED: &'static str =
        "Deployment ID cannot be set on this stage because AutoDeploy is enabled";

    pub(crate) fn put_stage(
        &mut self,
        api: &str,
        stage: Option<&str>,
        body: Value,
    ) -> Result<Value, OpError> {
        self.runtime_api(api)?;
        let body = body
            .as_object()
            .cloned()
            .ok_or_else(|| bad("the body must be a JSON object"))?;
        let settings = stage_settings(&body)?;
        let auto_deploy = match body.get("auto_deploy") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(bad("auto_deploy: expected true or false")),
        };
        let mut new_deployment: Option<RtDeployment> = None;
        let now = now_text();
        let s = match stage {
            None => {
                let name = match body.get("name") {
                    Some(Value::String(n)) if !n.is_empty() => n.clone(),
                    _ => return Err(bad("name: is required")),
                };
                check_stage_name(&name)?;
                if self
                    .objects
                    .stages
                    .contains_key(&(api.to_string(), name.clone()))
                {
                    return Err(OpError(409, format!("API {api:?} has a stage {name:?}")));
                }
                let deployment = match body.get("deployment") {
                    Some(Value::String(_)) if auto_deploy == Some(true) => {
                        return Err(bad(Self::AUTO_DEPLOYED))
                    }
                    Some(Value::String(d)) => d.clone(),
                    // A stage that deploys every change starts with the definition as it is.
                    None if auto_deploy == Some(true) => {
                        let a = self.runtime_api(api)?.clone();
                        let d = parts::auto_deployment(&a)?;
                        let id = d.id.clone();
                        new_deployment = Some(d);
                        id
                    }
                    None => {
                        return Err(bad(
                            "deployment: is required (an id from POST /apis/{api}/deployments), or auto_deploy: true",
                        ))
                    }
                    Some(_) => {
                        return Err(bad(
                            "deployment: expected a deployment id (a string from POST /apis/{api}/deployments)",
                        ))
                    }
                };
                RtStage {
                    api: api.to_string(),
                    name,
                    deployment,
                    settings,
                    auto_deploy: auto_deploy.unwrap_or(false),
                    canary: canary_of(&body)?.flatten(),
                    created: now.clone(),
                    updated: now,
                }
            }
            Some(stage) => {
                let mut s = self.rt_stage(api, stage)?;
                if let Some(Value::String(n)) = body.get("name") {
                    if n != stage {
                        return Err(bad("name: a stage is not renamed; create another"));
                    }
                }
                match body.get("deployment") {
                    // Rolling an auto-deployed stage back would last until the next edit.
                    Some(Value::String(_)) if auto_deploy.unwrap_or(s.auto_deploy) => {
                        return Err(bad(Self::AUTO_DEPLOYED))
                    }
                    Some(Value::String(d)) => s.deployment = d.clone(),
                    Some(_) => {
                        return Err(bad(
                            "deployment: expected a deployment id (a string from POST /apis/{api}/deployments)",
                        ))
                    }
                    None => {}
                }
                // RFC 7396, as the admin API's other PATCHes: an object merges into the
                // setting's (a member set to null removes it), so raising a cache's ttl keeps
                // its capacity and one variable set keeps the others; anything else replaces.
                for (k, v) in settings {
                    match s.settings.get_mut(&k) {
                        Some(old) if old.is_object() && v.is_object() => {
                            parts::merge_patch(old, &v)
                        }
                        _ => {
                            s.settings.insert(k, v);
                        }
                    }
                }
                // A canary's fields merge the same way: `{"canary": {"percent_traffic": 50}}`
                // keeps its deployment and variable overrides (they were dropped, or the
                // call refused for want of a deployment).
                let canary = match (body.get("canary"), &s.canary) {
                    (Some(p @ Value::Object(_)), Some(cur)) => {
                        let mut merged =
                            serde_json::to_value(cur).map_err(|e| OpError(500, e.to_string()))?;
                        parts::merge_patch(&mut merged, p);
                        canary_of(&Map::from_iter([("canary".to_string(), merged)]))?
                    }
                    _ => canary_of(&body)?,
                };
                if let Some(c) = canary {
                    s.canary = c;
                }
                if let Some(b) = auto_deploy {
                    // Turned on: the stage serves the definition as it is now, as one made
                    // with it does (it served what it was last deployed until the next edit).
                    if b && !s.auto_deploy {
                        let a = self.runtime_api(api)?.clone();
                        let d = parts::auto_deployment(&a)?;
                        s.deployment = d.id.clone();
                        new_deployment = Some(d);
                    }
                    s.auto_deploy = b;
                }
                for (k, v) in &body {
                    if v.is_null() && STAGE_SETTINGS.contains(&k.as_str()) {
                        s.settings.shift_remove(k);
                    }
                }
                s.updated = now;
                s
            }
        };
        if s.auto_deploy && s.canary.is_some() {
            // Its promotion would roll the stage back past every later edit, as a deployment
            // set by hand would (refused above).
            return Err(bad(
                "canary: a stage with auto_deploy serves every change at once and takes no canary",
            ));
        }
        let mut o = self.objects.clone();
        let mut puts = Vec::new();
        if let Some(d) = new_deployment {
            puts.push((deployment_key(api, &d.id), to_json(&d)?));
            o.deployments.insert((api.to_string(), d.id.clone()), d);
        }
        for (what, dep) in std::iter::once(("deployment", &s.deployment)).chain(
            s.canary
                .as_ref()
                .map(|c| ("canary.deployment", &c.deployment)),
        ) {
            if !o.deployments.contains_key(&(api.to_string(), dep.clone())) {
                return Err(bad(format!(
                    "apis[{api:?}].stages[{:?}].{what} = {dep:?}: API {api:?} has no such deployment",
                    s.name
                )));
            }
        }
        puts.push((stage_key(api, &s.name), to_json(&s)?));
        o.stages
            .insert((api.to_string(), s.name.clone()), s.clone());
        // (A rollout flushes the answers cached from the previous deployment:
        // `flush_redeployed`.)
        self.apply(o, puts, Vec::new())?;
        Ok(stage_view(&s))
    }

    /// `DELETE /apis/{api}/stages/{stage}/canary`: all traffic back to the stage's deployment;
    /// `POST .../canary/promote`: the canary's deployment (and its variable overrides) become
    /// the stage's.
    pub(crate) fn end_canary(
        &mut self,
        api: &str,
        stage: &str,
        promote: bool,
    ) -> Result<Value, OpError> {
        self.runtime_api(api)?;
        let mut s = self.rt_stage(api, stage)?;
        let c = s
            .canary
            .take()
            .ok_or_else(|| OpError(404, format!("stage {stage:?} has no canary")))?;
        if promote && s.auto_deploy {
            return Err(bad(Self::AUTO_DEPLOYED));
        }
        if promote {
            s.deployment = c.deployment;
            override_variables(&mut s.settings, &c.stage_variable_overrides);
        }
        s.updated = now_text();
        let mut o = self.objects.clone();
        let json = to_json(&s)?;
        o.stages
            .insert((api.to_string(), stage.to_string()), s.clone());
        self.apply(o, vec![(stage_key(api, stage), json)], Vec::new())?;
        Ok(stage_view(&s))
    }

    /// `DELETE /apis/{api}/stages/{stage}`: refused while a domain mapping serves it.
    pub(crate) fn delete_stage(&mut self, api: &str, stage: &str) -> Result<Value, OpError> {
        self.runtime_api(api)?;
        let mut o = self.objects.clone();
        if o.stages
            .remove(&(api.to_string(), stage.to_string()))
            .is_none()
        {
            return Err(OpError(404, format!("API {api:?} has no stage {stage:?}")));
        }
        self.unmapped(api, Some(stage))?;
        self.apply(o, Vec::new(), vec![stage_key(api, stage)])?;
        Ok(json!({ "deleted": stage }))
    }

    /// `Ok` when no run-time domain mapping names `api` (its `stage`): deleting what a mapping
    /// serves is refused, as Amazon API Gateway refuses it (the host would otherwise fall to
    /// another domain's API, `*`'s say, at once).
    fn unmapped(&self, api: &str, stage: Option<&str>) -> Result<(), OpError> {
        let mapped: Vec<String> = self
            .objects
            .mappings
            .values()
            .filter(|m| m.api == api && stage.is_none_or(|s| m.stage == s))
            .map(|m| format!("{} ({}/{})", m.id, m.host, m.base_path))
            .collect();
        if mapped.is_empty() {
            return Ok(());
        }
        let what = match stage {
            Some(s) => format!("stage {s:?} of API {api:?}"),
            None => format!("API {api:?}"),
        };
        Err(bad(format!(
            "{what} is served by domain mappings {}: delete them first (DELETE /domains/{{id}})",
            mapped.join(", ")
        )))
    }
}

/// A new stage's name: an object name, not one of the names canaries are checked under.
fn check_stage_name(name: &str) -> Result<(), OpError> {
    super::super::check_object_name(name)?;
    if super::reserved_stage_name(name) {
        return Err(bad(format!(
            "name = {name:?} is not valid: names ending in \"__canary\" are reserved for canaries"
        )));
    }
    Ok(())
}
