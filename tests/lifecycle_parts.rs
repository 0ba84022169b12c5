//! A run-time API's definition edited piece by piece through the admin API: routes, a route's
//! integration, authorizers, a merge patch of the whole; each edit checked by the file's rules
//! (a refused edit changes nothing), served at once on a stage with `auto_deploy`, and only
//! once deployed elsewhere. Deployments are read one by one and deleted when nothing serves them.

mod common;

use serde_json::json;

use common::*;

fn on(g: &Gw, path: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn call(g: &Gw, method: &str, path: &str, body: serde_json::Value) -> Resp {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    admin_with(g.admin(), method, path, &body)
}

fn toml() -> String {
    Cfg::new()
        .api("file")
        .route(
            "GET /f",
            "integration = { type = \"mock\", body = \"file\" }",
        )
        .toml()
}

fn gateway() -> Gw {
    Gw::start(&toml())
}

/// Run-time API `shop` with `GET /v` answering "v1", stage `prod` (with `auto_deploy` as
/// given) served on host shop.test.
fn shop(g: &Gw, auto_deploy: bool) {
    let def = json!({"name": "shop", "routes": [
        {"route": "GET /v", "integration": {"type": "mock", "body": "v1"}}
    ]});
    let r = call(g, "POST", "/apis", def);
    assert_eq!(r.status, 201, "{}", r.text());
    let stage = if auto_deploy {
        json!({"name": "prod", "auto_deploy": true})
    } else {
        let r = call(g, "POST", "/apis/shop/deployments", json!({}));
        json!({"name": "prod", "deployment": r.json()["id"]})
    };
    let r = call(g, "POST", "/apis/shop/stages", stage);
    assert_eq!(r.status, 201, "{}", r.text());
    let m = json!({"host": "shop.test", "api": "shop", "stage": "prod"});
    assert_eq!(call(g, "POST", "/domains", m).status, 201);
    assert_eq!(on(g, "/v").text(), "v1");
}

const W: &str = "/apis/shop/routes/GET%20%2Fw";

#[test]
fn routes_and_integrations_are_edited_one_by_one_and_auto_deployed() {
    let up = Upstream::echo();
    let g = gateway();
    shop(&g, true);

    let w = json!({"route": "GET /w", "integration": {"type": "mock", "body": "w"}});
    let r = call(&g, "POST", "/apis/shop/routes", w.clone());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["route"], "GET /w");
    assert_eq!(on(&g, "/w").text(), "w");
    let r = call(&g, "POST", "/apis/shop/routes", w);
    assert_eq!(r.status, 409, "{}", r.text());

    // The file's rules, with the file's messages; a refused edit changes nothing.
    let r = call(
        &g,
        "POST",
        "/apis/shop/routes",
        json!({"route": "FETCH /x", "integration": {"type": "mock"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("FETCH"), "{}", r.text());
    let r = call(
        &g,
        "PATCH",
        &format!("{W}/integration"),
        json!({"status": 99}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("status = 99 is not valid"),
        "{}",
        r.text()
    );
    assert_eq!(on(&g, "/w").text(), "w");

    // A merge patch of the route, of its integration, and a replaced integration.
    let r = call(&g, "PATCH", W, json!({"integration": {"body": "w2"}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["integration"]["type"], "mock");
    assert_eq!(on(&g, "/w").text(), "w2");
    let r = call(
        &g,
        "PATCH",
        &format!("{W}/integration"),
        json!({"status": 202}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/w").status, 202);
    let http = json!({"type": "http", "uri": format!("http://{}/echo", up.addr)});
    let r = call(
        &g,
        "PUT",
        "/apis/shop/routes/GET%20%2Fv/integration",
        http.clone(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), http);
    assert_eq!(on(&g, "/v").json()["target"], "/echo");
    let r = call(
        &g,
        "GET",
        "/apis/shop/routes/GET%20%2Fv/integration",
        json!(null),
    );
    assert_eq!(r.json(), http);

    let r = call(&g, "GET", "/apis/shop/routes", json!(null));
    let keys: Vec<String> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["GET /v", "GET /w"]);
    assert_eq!(
        call(&g, "GET", W, json!(null)).json()["integration"]["body"],
        "w2"
    );

    // Renaming through the path is refused; a missing route is 404.
    let r = call(&g, "PUT", W, json!({"route": "GET /z"}));
    assert_eq!(r.status, 400, "{}", r.text());
    let r = call(&g, "PATCH", "/apis/shop/routes/GET%20%2Fnone", json!({}));
    assert_eq!(r.status, 404, "{}", r.text());

    // Every edit was a deployment of its own: the history shows them.
    let r = call(&g, "GET", "/apis/shop/deployments", json!(null));
    assert_eq!(
        r.json()["items"].as_array().unwrap().len(),
        5,
        "{}",
        r.text()
    );

    let r = call(&g, "DELETE", W, json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/w").status, 404);
    assert_eq!(call(&g, "DELETE", W, json!(null)).status, 404);

    // The file's API is read here, changed only in the file.
    let r = call(&g, "GET", "/apis/file/routes", json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["source"], "file");
    let r = call(
        &g,
        "POST",
        "/apis/file/routes",
        json!({"route": "GET /x", "integration": {"type": "mock"}}),
    );
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn authorizers_and_merge_patches_keep_the_definition_whole() {
    let up = Upstream::echo();
    let g = gateway();
    shop(&g, false);
    let gate = json!({"name": "gate", "type": "request", "uri": format!("http://{}/auth", up.addr),
        "identity_sources": ["$request.header.authorization"]});
    let r = call(&g, "POST", "/apis/shop/authorizers", gate);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/routes/GET%20%2Fv",
        json!({"authorizer": "gate"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&g, "GET", "/apis/shop/authorizers/gate", json!(null));
    assert_eq!(r.json()["type"], "request");

    // An authorizer a route names cannot go (409, Amazon's words); nor can a default name
    // one that is not there.
    let r = call(&g, "DELETE", "/apis/shop/authorizers/gate", json!(null));
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "Cannot delete authorizer 'gate', is referenced in route: GET /v"
    );
    assert_eq!(
        call(&g, "GET", "/apis/shop/authorizers/gate", json!(null)).status,
        200
    );
    let r = call(
        &g,
        "PATCH",
        "/apis/shop",
        json!({"default_authorizer": "nope"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/routes/GET%20%2Fv",
        json!({"authorizer": null}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("authorizer").is_none(), "{}", r.text());
    let default = |v: serde_json::Value| {
        call(
            &g,
            "PATCH",
            "/apis/shop",
            json!({ "default_authorizer": v }),
        )
        .status
    };
    assert_eq!(default(json!("gate")), 200);
    let r = call(&g, "DELETE", "/apis/shop/authorizers/gate", json!(null));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("default_authorizer"), "{}", r.text());
    assert_eq!(default(json!(null)), 200);
    let r = call(&g, "DELETE", "/apis/shop/authorizers/gate", json!(null));
    assert_eq!(r.status, 200, "{}", r.text());

    // A merge patch of the whole API; the name stays.
    let r = call(
        &g,
        "PATCH",
        "/apis/shop",
        json!({"routes": [{"route": "GET /v", "integration": {"type": "mock", "body": "v2"}}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["definition"]["routes"][0]["integration"]["body"],
        "v2"
    );
    let r = call(&g, "PATCH", "/apis/shop", json!({"name": "other"}));
    assert_eq!(r.status, 400, "{}", r.text());

    // Without auto_deploy nothing of this is served until it is deployed.
    assert_eq!(on(&g, "/v").text(), "v1");
    let r = call(
        &g,
        "POST",
        "/apis/shop/deployments",
        json!({"stage": "prod", "description": "v2"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let d2 = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(on(&g, "/v").text(), "v2");

    // Deployments: one read with its definition and who serves it; deleted only when unused.
    let list = call(&g, "GET", "/apis/shop/deployments", json!(null)).json();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    let d1 = ids.iter().find(|i| **i != d2).unwrap().to_string();
    let r = call(
        &g,
        "GET",
        &format!("/apis/shop/deployments/{d2}"),
        json!(null),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["stages"], json!(["prod"]));
    assert_eq!(
        r.json()["definition"]["routes"][0]["integration"]["body"],
        "v2"
    );
    let r = call(
        &g,
        "DELETE",
        &format!("/apis/shop/deployments/{d2}"),
        json!(null),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r
        .text()
        .contains("Active stages pointing to this deployment"));
    let r = call(
        &g,
        "DELETE",
        &format!("/apis/shop/deployments/{d1}"),
        json!(null),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(
        &g,
        "GET",
        &format!("/apis/shop/deployments/{d1}"),
        json!(null),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    // A rollback to what is gone is refused; the stage keeps serving.
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/stages/prod",
        json!({"deployment": d1}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(on(&g, "/v").text(), "v2");

    // After a restart, the edits are what the store holds.
    let dir = g.stop();
    let g = Gw::start_in(dir, &toml());
    assert_eq!(on(&g, "/v").text(), "v2");
    let r = call(&g, "GET", "/apis/shop/authorizers", json!(null));
    assert_eq!(r.json()["items"], json!([]), "{}", r.text());
}

#[test]
fn a_file_domain_serves_a_run_time_api_once_it_has_the_stage() {
    let toml = Cfg::new()
        .api("file")
        .route("GET /f", "integration = { type = \"mock\", body = \"file\" }")
        .extra(
            "[[domains]]\nhost = \"shop.test\"\nmappings = [{ base_path = \"\", api = \"shop\", stage = \"prod\" }]\n",
        )
        .toml();
    let g = Gw::start(&toml);
    // Nothing of that name yet: the host's mapping waits (404), and says so.
    assert_eq!(on(&g, "/v").status, 404);
    let d = call(&g, "GET", "/domains", json!(null)).json();
    let waiting: Vec<&serde_json::Value> = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["api"] == "shop")
        .collect();
    assert_eq!(waiting.len(), 1, "{d}");
    assert_eq!(waiting[0]["serving"], false);
    assert_eq!(waiting[0]["source"], "file");

    let def = json!({"name": "shop", "routes": [
        {"route": "GET /v", "integration": {"type": "mock", "body": "v1"}}
    ]});
    assert_eq!(call(&g, "POST", "/apis", def).status, 201);
    let r = call(
        &g,
        "POST",
        "/apis/shop/stages",
        json!({"name": "prod", "auto_deploy": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(on(&g, "/v").text(), "v1");
    let d = call(&g, "GET", "/domains", json!(null)).json();
    assert!(
        d["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["api"] == "shop" && m["serving"] == true),
        "{d}"
    );
    // The host's base path is the file's: a run-time mapping of it is refused.
    let m = json!({"host": "shop.test", "api": "shop", "stage": "prod"});
    let r = call(&g, "POST", "/domains", m);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("[[domains]] maps it"), "{}", r.text());

    // A reload and a restart keep it; deleting the stage makes the mapping wait again.
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    assert_eq!(on(&g, "/v").text(), "v1");
    let g = Gw::start_in(g.stop(), &toml);
    assert_eq!(on(&g, "/v").text(), "v1");
    let r = call(&g, "DELETE", "/apis/shop/stages/prod", json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/v").status, 404);
    assert_eq!(
        Client::connect(g.addr())
            .request(b"GET /f HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
            .text(),
        "file"
    );

    // The file's own checks stay: a bad stage of a file API, a run-time name that is no name.
    for (mapping, want) in [
        (
            "api = \"file\", stage = \"nope\"",
            "expected a stage of API",
        ),
        (
            "api = \"shop\", stage = \"\"",
            "the name of an [[apis]] entry or of a run-time API",
        ),
    ] {
        let bad = toml.replace("api = \"shop\", stage = \"prod\"", mapping);
        std::fs::write(&g.path, bad).unwrap();
        let r = admin(g.admin(), "POST", "/reload", Some(TOKEN));
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(want), "{want}: {}", r.text());
    }
}

#[test]
fn a_canary_may_use_its_stage_cache() {
    let up = Upstream::echo();
    let g = gateway();
    let def = |path: &str| {
        json!({"name": "shop", "routes": [{"route": "GET /v", "integration":
            {"type": "http", "uri": format!("http://{}{path}", up.addr)}}]})
    };
    assert_eq!(call(&g, "POST", "/apis", def("/base")).status, 201);
    let d1 = call(&g, "POST", "/apis/shop/deployments", json!({})).json()["id"].clone();
    let stage =
        json!({"name": "prod", "deployment": d1, "cache": {"ttl": "300s", "capacity": "1MiB"}});
    assert_eq!(call(&g, "POST", "/apis/shop/stages", stage).status, 201);
    let m = json!({"host": "shop.test", "api": "shop", "stage": "prod"});
    assert_eq!(call(&g, "POST", "/domains", m).status, 201);
    assert_eq!(on(&g, "/v").json()["target"], "/base");
    assert_eq!(on(&g, "/v").json()["target"], "/base");
    assert_eq!(up.count(), 1, "the stage's cache answers the second");

    // Every request to the canary, which shares the stage's cache: answered from it.
    let r = call(&g, "PUT", "/apis/shop", def("/canary"));
    assert_eq!(r.status, 200, "{}", r.text());
    let d2 = call(&g, "POST", "/apis/shop/deployments", json!({})).json()["id"].clone();
    let canary = |shared: bool| json!({"canary": {"deployment": d2, "percent_traffic": 100.0, "use_stage_cache": shared}});
    let r = call(&g, "PATCH", "/apis/shop/stages/prod", canary(true));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["canary"]["use_stage_cache"], true);
    assert_eq!(on(&g, "/v").json()["target"], "/base");
    assert_eq!(up.count(), 1);
    // With a cache of its own, the canary asks its deployment's backend.
    let r = call(&g, "PATCH", "/apis/shop/stages/prod", canary(false));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/v").json()["target"], "/canary");
    assert_eq!(up.count(), 2);
    // One cache series per cache: the stage's, and the canary's own.
    let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
    let mut hits: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tollgate_cache_hits_total{"))
        .collect();
    hits.sort();
    assert_eq!(
        hits,
        [
            "tollgate_cache_hits_total{stage=\"shop/prod\"} 2",
            "tollgate_cache_hits_total{stage=\"shop/prod/Canary\"} 0"
        ],
        "{text}"
    );
    // The canary's own cache: read, purged and flushed by its name (`prod%2FCanary`), and
    // flushed with its stage's.
    assert_eq!(on(&g, "/v").json()["target"], "/canary");
    assert_eq!(up.count(), 2, "the canary's cache answers");
    let r = admin(
        g.admin(),
        "GET",
        "/apis/shop/stages/prod%2FCanary/cache",
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["entries"], 1, "{}", r.text());
    let r = call(
        &g,
        "DELETE",
        "/apis/shop/stages/prod%2FCanary/cache?path=/v",
        json!(null),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], 1, "{}", r.text());
    assert_eq!(on(&g, "/v").json()["target"], "/canary");
    assert_eq!(up.count(), 3);
    let r = call(&g, "DELETE", "/apis/shop/stages/prod/cache", json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["flushed"],
        2,
        "the stage's entry and the canary's: {}",
        r.text()
    );
    assert_eq!(on(&g, "/v").json()["target"], "/canary");
    assert_eq!(up.count(), 4);
    // auto_deploy: each change is a rollout, and the stage's cache forgets the old answers.
    let r = call(&g, "DELETE", "/apis/shop/stages/prod/canary", json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/v").json()["target"], "/base");
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/stages/prod",
        json!({"auto_deploy": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let uri = json!({"uri": format!("http://{}/third", up.addr)});
    let r = call(&g, "PATCH", "/apis/shop/routes/GET%20%2Fv/integration", uri);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/v").json()["target"], "/third");
}

const KEY: &str = "runtime-key-0123456789abcdef";

#[test]
fn usage_plans_cover_run_time_stages_and_their_canaries() {
    let plans = format!(
        r#"[[usage_plans]]
name = "gold"
stages = ["file/prod", "shop/prod"]
route_throttle = {{ "GET /k" = {{ rate = 1000, burst = 1000 }} }}

[[api_keys]]
name = "k1"
value = "{KEY}"
plan = "gold"
"#
    );
    let toml = Cfg::new()
        .api("file")
        .route(
            "GET /f",
            "integration = { type = \"mock\", body = \"file\" }",
        )
        .extra(plans)
        .toml();
    // The plan names a stage no API has yet: the file loads; the plan covers it once it exists.
    let g = Gw::start(&toml);
    let def = json!({"name": "shop", "routes": [
        {"route": "GET /k", "api_key_required": true, "integration": {"type": "mock", "body": "keyed"}}
    ]});
    assert_eq!(call(&g, "POST", "/apis", def).status, 201);
    let r = call(
        &g,
        "POST",
        "/apis/shop/stages",
        json!({"name": "prod", "auto_deploy": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let m = json!({"host": "shop.test", "api": "shop", "stage": "prod"});
    assert_eq!(call(&g, "POST", "/domains", m).status, 201);
    let keyed = |g: &Gw, key: &str| {
        Client::connect(g.addr()).request(
            format!("GET /k HTTP/1.1\r\nHost: shop.test\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let r = on(&g, "/k");
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["message"], "Forbidden");
    assert_eq!(keyed(&g, "not-a-key-of-any-plan-at-all").status, 403);
    assert_eq!(keyed(&g, KEY).text(), "keyed");

    // A key made through the admin API on the same plan; the canary is the stage's too.
    let r = call(
        &g,
        "POST",
        "/apikeys",
        json!({"name": "k2", "plan": "gold"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let k2 = r.json()["value"].as_str().unwrap().to_string();
    assert_eq!(keyed(&g, &k2).text(), "keyed");
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/routes/GET%20%2Fk",
        json!({"integration": {"body": "canary"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/stages/prod",
        json!({"auto_deploy": false}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/routes/GET%20%2Fk",
        json!({"integration": {"body": "next"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let d = call(&g, "POST", "/apis/shop/deployments", json!({})).json()["id"].clone();
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/stages/prod",
        json!({"canary": {"deployment": d, "percent_traffic": 100.0}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(keyed(&g, KEY).text(), "next");
    assert_eq!(on(&g, "/k").status, 403);

    // The plan's usage counts the run-time stage's requests.
    let today = tollgate::day_string(tollgate::today());
    let q = format!("/usageplans/gold/usage?startDate={today}&endDate={today}");
    let r = call(&g, "GET", &q, json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        eventually(IO_TIMEOUT, || call(&g, "GET", &q, json!(null)).json()
            ["items"]["k1"][0]["used"]
            == 2),
        "{}",
        r.text()
    );
}

/// Every edit of an API with an `auto_deploy` stage makes a deployment; those no stage
/// serves are kept to the newest 20, and the store's copy is what a restart reads.
#[test]
fn auto_deployments_nothing_serves_are_kept_to_the_newest() {
    let g = gateway();
    shop(&g, true);
    // Made by hand, whatever its description says: never pruned.
    let r = call(
        &g,
        "POST",
        "/apis/shop/deployments",
        json!({"description": "auto_deploy"}),
    );
    let mine = r.json()["id"].as_str().unwrap().to_string();
    for i in 0..30 {
        let r = call(
            &g,
            "PATCH",
            "/apis/shop/routes/GET%20%2Fv/integration",
            json!({"body": format!("v{i}")}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(on(&g, "/v").text(), "v29");
    let listed = |g: &Gw| {
        let r = call(g, "GET", "/apis/shop/deployments", serde_json::Value::Null);
        assert_eq!(r.status, 200, "{}", r.text());
        let j = r.json();
        j["items"]
            .as_array()
            .or(j.as_array())
            .map(|a| a.len())
            .unwrap_or_else(|| panic!("{j}"))
    };
    // The one prod serves, the 20 newest before it, and the one made by hand.
    assert_eq!(listed(&g), 22);
    let kept = call(
        &g,
        "GET",
        &format!("/apis/shop/deployments/{mine}"),
        serde_json::Value::Null,
    );
    assert_eq!(kept.status, 200, "{}", kept.text());
    // Such a stage takes no canary: promoting one would roll it back past later edits.
    let r = call(&g, "POST", "/apis/shop/deployments", json!({}));
    let old = r.json()["id"].clone();
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/stages/prod",
        json!({"canary": {"deployment": old, "percent_traffic": 10.0}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("takes no canary"), "{}", r.text());
    let _ = call(
        &g,
        "DELETE",
        &format!("/apis/shop/deployments/{}", old.as_str().unwrap()),
        serde_json::Value::Null,
    );
    let dir = g.stop();
    let g = Gw::start_in(dir, &toml());
    assert_eq!(listed(&g), 22);
    assert_eq!(on(&g, "/v").text(), "v29");
}

/// Turning `auto_deploy` on serves the definition as it is then, as a stage made with it
/// does (it served its last deployment until the next edit).
#[test]
fn turning_auto_deploy_on_deploys_the_definition_as_it_is() {
    let g = gateway();
    shop(&g, false);
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/routes/GET%20%2Fv/integration",
        json!({"body": "v2"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/v").text(), "v1");
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/stages/prod",
        json!({"auto_deploy": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/v").text(), "v2");
    // Already on: a PATCH that says so again makes no deployment.
    let before = r.json()["deployment"].clone();
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/stages/prod",
        json!({"auto_deploy": true}),
    );
    assert_eq!(r.json()["deployment"], before);
}

/// A file API's routes, integrations and deployments are read as its lists are (a read is no
/// change: it answered 409, "change it there"); writes are still refused.
#[test]
fn a_file_apis_parts_are_read_one_by_one() {
    let g = Gw::start(
        &Cfg::new()
            .route("GET /k", "integration = { type = \"mock\", body = \"k\" }")
            .toml(),
    );
    let get = |p: &str| admin(g.admin(), "GET", p, Some(TOKEN));
    let r = get("/apis/api/routes/GET%20%2Fk");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["key"], "GET /k");
    let r = get("/apis/api/routes/GET%20%2Fk/integration");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "mock", "{}", r.text());
    assert_eq!(get("/apis/api/routes/GET%20%2Fnope").status, 404);
    let r = get("/apis/api/deployments");
    assert_eq!(
        (r.status, r.json()["items"].clone()),
        (200, serde_json::json!([]))
    );
    assert_eq!(get("/apis/api/deployments/d1").status, 404);
    let r = admin_with(
        g.admin(),
        "PUT",
        "/apis/api/routes/GET%20%2Fk",
        r#"{"route": "GET /k", "integration": {"type": "mock", "body": "x"}}"#,
    );
    assert_eq!(r.status, 409, "{}", r.text());
}

/// `PATCH /apis/{api}/stages/{stage}` merges objects (RFC 7396, as the API's other PATCHes):
/// raising a canary's share keeps its deployment and variable overrides (they were dropped,
/// and the canary served the stage's variables; without its deployment the call was
/// refused), one variable set keeps the others, a cache's ttl keeps its capacity.
#[test]
fn stage_patches_merge_canaries_variables_and_settings() {
    let g = gateway();
    let def = json!({"name": "shop", "routes": [
        {"route": "GET /v", "integration": {"type": "mock", "body": "${stageVariables.color}-${stageVariables.size}"}}
    ]});
    assert_eq!(call(&g, "POST", "/apis", def).status, 201);
    let d = call(&g, "POST", "/apis/shop/deployments", json!({})).json()["id"].clone();
    let stage = json!({"name": "prod", "deployment": d, "variables": {"color": "red", "size": "m"},
        "cache": {"ttl": "60s", "capacity": "1MiB"}});
    assert_eq!(call(&g, "POST", "/apis/shop/stages", stage).status, 201);
    let m = json!({"host": "shop.test", "api": "shop", "stage": "prod"});
    assert_eq!(call(&g, "POST", "/domains", m).status, 201);
    assert_eq!(on(&g, "/v").text(), "red-m");
    let path = "/apis/shop/stages/prod";
    let canary = json!({"canary": {"deployment": d, "percent_traffic": 0.0, "stage_variable_overrides": {"color": "blue"}}});
    assert_eq!(call(&g, "PATCH", path, canary).status, 200);
    assert_eq!(on(&g, "/v").text(), "red-m");
    let r = call(
        &g,
        "PATCH",
        path,
        json!({"canary": {"percent_traffic": 100.0}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["canary"]["stage_variable_overrides"],
        json!({"color": "blue"})
    );
    assert_eq!(on(&g, "/v").text(), "blue-m");
    let r = call(
        &g,
        "PATCH",
        path,
        json!({"variables": {"size": "l"}, "cache": {"ttl": "1s"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json();
    assert_eq!(s["variables"], json!({"color": "red", "size": "l"}), "{s}");
    assert_eq!(s["cache"], json!({"ttl": "1s", "capacity": "1MiB"}), "{s}");
    assert_eq!(on(&g, "/v").text(), "blue-l");
    // A member set to null goes.
    let r = call(
        &g,
        "PATCH",
        path,
        json!({"canary": {"stage_variable_overrides": {"color": null}}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "/v").text(), "red-l");
}
