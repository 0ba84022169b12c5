//! `PUT /apis/{api}?mode=merge`: an imported definition folded into an API's, as Amazon API
//! Gateway's merge import does. Routes (by route key), authorizers and models (by name) and
//! gateway responses (by response type) are added, or replace those of the same key; the
//! document's CORS configuration and resource policy, when it has them, replace the API's.
//! Everything the document does not mention stays as it was, and so do a replaced route's
//! cache and throttle when the document has none for it (Amazon keeps them in the stage).

use serde_json::{Map, Value};

/// Lists of items merged by a key of each item.
const BY_KEY: [(&str, &str); 3] = [
    ("routes", "route"),
    ("authorizers", "name"),
    ("models", "name"),
];
/// Objects merged by their keys.
const BY_NAME: [&str; 1] = ["gateway_responses"];
/// Settings of the whole API: the document's, when it has one, replaces the API's.
const WHOLE: [&str; 3] = ["cors", "resource_policy", "api_key_source"];

/// `existing` with `imported` merged into it.
pub fn merge(existing: &Value, imported: &Value) -> Value {
    let mut def = existing.clone();
    for (list, key) in BY_KEY {
        let new = imported[list].as_array().into_iter().flatten();
        let mut items = def[list].as_array().cloned().unwrap_or_default();
        for n in new {
            match items.iter_mut().find(|o| o[key] == n[key]) {
                // In place: the order of the API's items stays.
                Some(old) => {
                    let mut n = n.clone();
                    if list == "routes" {
                        keep_route_settings(old, &mut n);
                    }
                    *old = n;
                }
                None => items.push(n.clone()),
            }
        }
        if !items.is_empty() {
            def[list] = Value::Array(items);
        }
    }
    for name in BY_NAME {
        let Some(new) = imported[name].as_object() else {
            continue;
        };
        let mut all: Map<String, Value> = def[name].as_object().cloned().unwrap_or_default();
        for (k, v) in new {
            all.insert(k.clone(), v.clone());
        }
        def[name] = Value::Object(all);
    }
    for name in WHOLE {
        match imported.get(name) {
            // The document's says "none" (a resource policy that admits everyone).
            Some(Value::Null) => {
                if let Some(o) = def.as_object_mut() {
                    o.remove(name);
                }
            }
            Some(v) => def[name] = v.clone(),
            None => {}
        }
    }
    def
}

/// A route's cache and throttle, kept when the document does not set them: Amazon keeps
/// them in the stage's route settings, which an import (merge or overwrite) leaves alone.
fn keep_route_settings(old: &Value, new: &mut Value) {
    for k in super::OWN_ROUTE_KEYS {
        if new.get(k).is_none() {
            if let Some(v) = old.get(k) {
                new[k] = v.clone();
            }
        }
    }
}

/// `imported` (an overwrite) with the cache and throttle of `existing`'s routes of the same
/// route key, where it does not set them.
pub fn keep_settings(existing: &Value, mut imported: Value) -> Value {
    let olds = existing["routes"].as_array().cloned().unwrap_or_default();
    if let Some(routes) = imported["routes"].as_array_mut() {
        for n in routes {
            if let Some(old) = olds.iter().find(|o| o["route"] == n["route"]) {
                keep_route_settings(old, n);
            }
        }
    }
    imported
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_document_adds_and_replaces_by_key_and_the_rest_stays() {
        let api = json!({
            "routes": [{"route": "GET /a", "integration": {"type": "mock", "body": "a"}},
                       {"route": "GET /b", "integration": {"type": "mock", "body": "b"}}],
            "models": [{"name": "Pet", "schema": {"type": "object"}}],
            "gateway_responses": {"DEFAULT_4XX": {"status": 400}, "THROTTLED": {"status": 429}},
            "cors": {"allow_origins": ["https://old.test"]},
            "default_authorizer": "x",
        });
        let doc = json!({
            "routes": [{"route": "GET /b", "integration": {"type": "mock", "body": "B"}},
                       {"route": "GET /c", "integration": {"type": "mock", "body": "c"}}],
            "models": [{"name": "Pet", "schema": {"type": "string"}}, {"name": "Tag", "schema": {}}],
            "gateway_responses": {"DEFAULT_4XX": {"status": 418}},
            "cors": {"allow_origins": ["https://new.test"]},
            "resource_policy": {"deny": ["10.0.0.0/8"]},
        });
        let m = merge(&api, &doc);
        let keys: Vec<&str> = m["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["route"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["GET /a", "GET /b", "GET /c"]);
        assert_eq!(m["routes"][1]["integration"]["body"], "B");
        assert_eq!(
            m["models"],
            json!([{"name": "Pet", "schema": {"type": "string"}}, {"name": "Tag", "schema": {}}])
        );
        assert_eq!(
            m["gateway_responses"],
            json!({"DEFAULT_4XX": {"status": 418}, "THROTTLED": {"status": 429}})
        );
        assert_eq!(m["cors"], doc["cors"]);
        assert_eq!(m["resource_policy"], doc["resource_policy"]);
        assert_eq!(m["default_authorizer"], "x");
        // A document without them leaves the API's CORS and policy as they were.
        let m = merge(&m, &json!({"routes": []}));
        assert_eq!(m["cors"], doc["cors"]);
        assert_eq!(m["resource_policy"], doc["resource_policy"]);
        // One whose policy admits everyone (imported as null) takes the API's away.
        let m = merge(&m, &json!({"resource_policy": null}));
        assert!(m.get("resource_policy").is_none(), "{m}");
    }
}
