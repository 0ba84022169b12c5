//! The admin API's edits of a run-time API's definition piece by piece: its routes, a route's
//! integration, its authorizers, and a JSON merge patch of the whole (RFC 7396). Each edit is
//! checked by the file's rules before it is stored; the definition serves nothing until it is
//! deployed, except on stages with `auto_deploy`, which get a deployment of every change.

use super::*;

/// The lists of a definition edited item by item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Part {
    Route,
    Authorizer,
}

impl Part {
    /// The definition's key holding the list.
    fn list(self) -> &'static str {
        match self {
            Part::Route => "routes",
            Part::Authorizer => "authorizers",
        }
    }
    /// The field that names an item.
    fn key(self) -> &'static str {
        match self {
            Part::Route => "route",
            Part::Authorizer => "name",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Part::Route => "route",
            Part::Authorizer => "authorizer",
        }
    }
}

/// How a body changes an item or a definition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Edit {
    /// `POST`: a new one.
    Create,
    /// `PUT`: replaces it.
    Replace,
    /// `PATCH`: a JSON merge patch (RFC 7396) of it.
    Patch,
}

/// RFC 7396: `null` removes a member, objects merge, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.shift_remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn object(body: Value) -> Result<Map<String, Value>, OpError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(bad("the body must be a JSON object")),
    }
}

impl Control {
    /// Changes run-time API `api`'s definition with `edit`, checks it by the file's rules,
    /// stores it, and deploys it to the API's stages that have `auto_deploy`.
    fn edit_definition<R>(
        &mut self,
        api: &str,
        edit: impl FnOnce(&mut Map<String, Value>) -> Result<R, OpError>,
    ) -> Result<R, OpError> {
        let a = self.runtime_api(api)?.clone();
        let mut def = a.definition.as_object().cloned().unwrap_or_default();
        let r = edit(&mut def)?;
        self.store_definition(a, Value::Object(def))?;
        Ok(r)
    }

    /// Stores `def` as `a`'s definition once it passes the file's rules; stages with
    /// `auto_deploy` serve a new deployment of it (compiled first: nothing changes if that
    /// fails).
    pub(super) fn store_definition(&mut self, mut a: RtApi, def: Value) -> Result<(), OpError> {
        crate::config::check_definition(&self.file_config, &a.name, &def, &self.config_base())
            .map_err(|e| bad(e.join("; ")))?;
        a.definition = def;
        a.updated = now_text();
        let auto: Vec<RtStage> = self
            .objects
            .stages
            .values()
            .filter(|s| s.api == a.name && s.auto_deploy)
            .cloned()
            .collect();
        let mut o = self.objects.clone();
        let mut puts = vec![(api_key(&a.name), to_json(&a)?)];
        o.apis.insert(a.name.clone(), a.clone());
        if auto.is_empty() {
            return self.keep(o, puts, Vec::new());
        }
        let d = auto_deployment(&a)?;
        puts.push((deployment_key(&a.name, &d.id), to_json(&d)?));
        for mut s in auto.clone() {
            s.deployment = d.id.clone();
            s.updated = a.updated.clone();
            puts.push((stage_key(&s.api, &s.name), to_json(&s)?));
            o.stages.insert((s.api.clone(), s.name.clone()), s);
        }
        o.deployments.insert((a.name.clone(), d.id.clone()), d);
        // Deployments made by auto_deploy that no stage or canary serves: the newest stay
        // (to roll back to), older ones go — every change made one, kept for good (600 edits
        // of a 200-route API held 19 MB in the store and ~300 MB of memory).
        let served: ahash::AHashSet<String> = o
            .stages
            .values()
            .filter(|s| s.api == a.name)
            .flat_map(|s| {
                std::iter::once(s.deployment.clone())
                    .chain(s.canary.as_ref().map(|c| c.deployment.clone()))
            })
            .collect();
        let mut idle: Vec<(String, String)> = o
            .deployments
            .values()
            .filter(|x| x.api == a.name && x.auto_deploy && !served.contains(&x.id))
            .map(|x| (x.created.clone(), x.id.clone()))
            .collect();
        idle.sort();
        let mut deletes = Vec::new();
        for (_, id) in idle
            .iter()
            .take(idle.len().saturating_sub(KEEP_AUTO_DEPLOYMENTS))
        {
            o.deployments.remove(&(a.name.clone(), id.clone()));
            deletes.push(deployment_key(&a.name, id));
        }
        // (Answers cached from the previous deployment are flushed: `flush_redeployed`.)
        self.apply(o, puts, deletes)?;
        Ok(())
    }

    /// `PATCH /apis/{api}`: a JSON merge patch of the definition.
    pub(crate) fn patch_api(&mut self, api: &str, body: Value) -> Result<Value, OpError> {
        let patch = object(body)?;
        if let Some(n) = patch.get("name") {
            if n != &json!(api) {
                return Err(bad(
                    "name: an API is not renamed; import it under another name",
                ));
            }
        }
        self.edit_definition(api, |def| {
            let mut whole = Value::Object(std::mem::take(def));
            let mut patch = patch;
            patch.shift_remove("name");
            merge_patch(&mut whole, &Value::Object(patch));
            if let Value::Object(m) = whole {
                *def = m;
            }
            Ok(())
        })?;
        let a = self.runtime_api(api)?.clone();
        Ok(self.api_view(&a))
    }

    /// The items of a definition's list: a run-time API's as stored, a file API's as the
    /// gateway compiled them.
    pub(crate) fn list_parts(&self, api: &str, part: Part) -> Result<Value, OpError> {
        if let Some(a) = self.file_config.apis.iter().find(|a| a.name == api) {
            let items = match part {
                Part::Route => serde_json::to_value(&a.routes),
                Part::Authorizer => serde_json::to_value(&a.authorizers),
            }
            .map_err(|e| OpError(500, e.to_string()))?;
            return Ok(json!({ "items": items, "source": "file" }));
        }
        let a = self.runtime_api(api)?;
        let items = a.definition.get(part.list()).cloned().unwrap_or(json!([]));
        Ok(json!({ "items": items, "source": "admin" }))
    }

    /// One item of an API's list (404 when there is none): a file API's as the gateway
    /// compiled it, as [`Self::list_parts`] lists it (reading is no change: not a 409).
    pub(crate) fn get_part(&self, api: &str, part: Part, id: &str) -> Result<Value, OpError> {
        if let Some(a) = self.file_config.apis.iter().find(|a| a.name == api) {
            let item = match part {
                Part::Route => a
                    .routes
                    .iter()
                    .find(|r| r.key == id)
                    .map(serde_json::to_value),
                Part::Authorizer => a
                    .authorizers
                    .iter()
                    .find(|x| x.name == id)
                    .map(serde_json::to_value),
            };
            return match item {
                Some(v) => v.map_err(|e| OpError(500, e.to_string())),
                None => Err(not_found(api, part, id)),
            };
        }
        let a = self.runtime_api(api)?;
        find(&a.definition, part, id)
            .cloned()
            .ok_or_else(|| not_found(api, part, id))
    }

    /// `POST` (`id` is `None`), `PUT` or `PATCH` of one item; answers the item as stored.
    pub(crate) fn put_part(
        &mut self,
        api: &str,
        part: Part,
        id: Option<&str>,
        how: Edit,
        body: Value,
    ) -> Result<Value, OpError> {
        self.runtime_api(api)?;
        let body = object(body)?;
        let key = part.key();
        let id = match (id, body.get(key)) {
            (Some(id), Some(given)) if given != &json!(id) => {
                return Err(bad(format!(
                    "{key}: {given} differs from the path's {id:?}; a {} is not renamed (create another, delete this one)",
                    part.what()
                )))
            }
            (Some(id), _) => id.to_string(),
            (None, Some(Value::String(given))) => given.clone(),
            (None, _) => return Err(bad(format!("{key}: is required"))),
        };
        self.edit_definition(api, |def| {
            let list = def
                .entry(part.list())
                .or_insert(json!([]))
                .as_array_mut()
                .ok_or_else(|| bad(format!("{}: is not a list", part.list())))?;
            let at = list.iter().position(|o| o[key] == json!(id));
            let item = match (how, at) {
                (Edit::Create, Some(_)) => {
                    return Err(OpError(
                        409,
                        format!("API {api:?} has a {} {id:?}", part.what()),
                    ))
                }
                (Edit::Create | Edit::Replace, _) => {
                    let mut b = body;
                    b.insert(key.into(), json!(id));
                    Value::Object(b)
                }
                (Edit::Patch, Some(i)) => {
                    let mut old = list[i].clone();
                    merge_patch(&mut old, &Value::Object(body));
                    old
                }
                (Edit::Patch, None) => return Err(not_found(api, part, &id)),
            };
            match at {
                Some(i) => list[i] = item.clone(),
                None => list.push(item.clone()),
            }
            Ok(item)
        })
    }

    /// `DELETE` of one item. A route or the default that still names a deleted authorizer
    /// is refused by the file's rules, as in the file.
    pub(crate) fn delete_part(
        &mut self,
        api: &str,
        part: Part,
        id: &str,
    ) -> Result<Value, OpError> {
        self.edit_definition(api, |def| {
            if part == Part::Authorizer {
                // One still in use is not deleted (409, in Amazon's words), whatever the
                // definition's check would then say about the route that names it.
                let routes = def.get("routes").and_then(Value::as_array);
                if let Some(r) = routes
                    .into_iter()
                    .flatten()
                    .find(|r| r["authorizer"] == json!(id))
                {
                    let route = r["route"].as_str().unwrap_or_default();
                    return Err(OpError(
                        409,
                        format!("Cannot delete authorizer '{id}', is referenced in route: {route}"),
                    ));
                }
                if def.get("default_authorizer") == Some(&json!(id)) {
                    return Err(OpError(
                        409,
                        format!("Cannot delete authorizer '{id}', is the API's default_authorizer"),
                    ));
                }
            }
            let list = def
                .get_mut(part.list())
                .and_then(Value::as_array_mut)
                .ok_or_else(|| not_found(api, part, id))?;
            let before = list.len();
            list.retain(|o| o[part.key()] != json!(id));
            if list.len() == before {
                return Err(not_found(api, part, id));
            }
            if list.is_empty() {
                def.shift_remove(part.list());
            }
            Ok(json!({ "deleted": id }))
        })
    }

    /// `GET /apis/{api}/routes/{route}/integration`.
    pub(crate) fn get_integration(&self, api: &str, route: &str) -> Result<Value, OpError> {
        let r = self.get_part(api, Part::Route, route)?;
        r.get("integration")
            .cloned()
            .ok_or_else(|| OpError(404, format!("route {route:?} has no integration")))
    }

    /// `PUT` (replace) or `PATCH` (merge patch) of a route's integration.
    pub(crate) fn put_integration(
        &mut self,
        api: &str,
        route: &str,
        how: Edit,
        body: Value,
    ) -> Result<Value, OpError> {
        let body = Value::Object(object(body)?);
        let mut r = self.get_part(api, Part::Route, route)?;
        match how {
            Edit::Patch => merge_patch(&mut r["integration"], &body),
            _ => r["integration"] = body,
        }
        self.put_part(api, Part::Route, Some(route), Edit::Replace, r)
            .map(|r| r["integration"].clone())
    }

    /// `GET /apis/{api}/deployments/{id}`: one deployment with the definition it holds and
    /// the stages serving it.
    pub(crate) fn get_deployment(&self, api: &str, id: &str) -> Result<Value, OpError> {
        if self.file_config.apis.iter().any(|a| a.name == api) {
            return Err(OpError(
                404,
                format!("API {api:?} is declared in the configuration file: it has no deployments"),
            ));
        }
        self.runtime_api(api)?;
        let d = self
            .objects
            .deployments
            .get(&(api.to_string(), id.to_string()))
            .ok_or_else(|| OpError(404, format!("API {api:?} has no deployment {id:?}")))?;
        Ok(json!({
            "id": d.id, "description": d.description, "created": d.created,
            "definition": d.definition, "stages": self.stages_serving(api, id),
        }))
    }

    /// The stages (and canaries, as `stage/Canary`) serving deployment `id`.
    fn stages_serving(&self, api: &str, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.objects.stages.values().filter(|s| s.api == api) {
            if s.deployment == id {
                out.push(s.name.clone());
            }
            if s.canary.as_ref().is_some_and(|c| c.deployment == id) {
                out.push(format!("{}{CANARY}", s.name));
            }
        }
        out
    }

    /// `DELETE /apis/{api}/deployments/{id}`: refused while a stage or canary serves it.
    pub(crate) fn delete_deployment(&mut self, api: &str, id: &str) -> Result<Value, OpError> {
        self.get_deployment(api, id)?;
        let serving = self.stages_serving(api, id);
        if !serving.is_empty() {
            return Err(bad(format!(
                "Active stages pointing to this deployment must be moved or deleted: {}",
                serving.join(", ")
            )));
        }
        let mut o = self.objects.clone();
        o.deployments.remove(&(api.to_string(), id.to_string()));
        self.keep(o, Vec::new(), vec![deployment_key(api, id)])?;
        Ok(json!({ "deleted": id }))
    }
}

fn find<'a>(def: &'a Value, part: Part, id: &str) -> Option<&'a Value> {
    def.get(part.list())?
        .as_array()?
        .iter()
        .find(|o| o[part.key()] == json!(id))
}

fn not_found(api: &str, part: Part, id: &str) -> OpError {
    OpError(404, format!("API {api:?} has no {} {id:?}", part.what()))
}

/// A deployment of `a`'s definition as it is now.
/// Deployments made by `auto_deploy` that no stage serves, kept per API (the newest).
pub(crate) const KEEP_AUTO_DEPLOYMENTS: usize = 20;

pub(super) fn new_deployment(a: &RtApi, description: &str) -> Result<RtDeployment, OpError> {
    Ok(RtDeployment {
        id: new_id()?,
        api: a.name.clone(),
        description: description.to_string(),
        created: now_text(),
        definition: a.definition.clone(),
        auto_deploy: false,
    })
}

/// A deployment `auto_deploy` makes of `a` as it now is.
pub(super) fn auto_deployment(a: &RtApi) -> Result<RtDeployment, OpError> {
    Ok(RtDeployment {
        auto_deploy: true,
        ..new_deployment(a, "auto_deploy")?
    })
}
