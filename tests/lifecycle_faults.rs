//! Run-time objects that stop compiling (a reload removed the upstream a stage variable
//! names, say) are left out one by one: the stage or canary at fault, never its healthy
//! neighbours on the same deployment; a host whose mapping cannot be served answers 404
//! rather than another domain's API; a refused change names the object as the admin API
//! does; a mapping the file's `[[domains]]` would shadow is refused.

mod common;

use serde_json::json;

use common::*;

fn on(g: &Gw, host: &str, path: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn call(g: &Gw, method: &str, path: &str, body: serde_json::Value) -> Resp {
    admin_with(g.admin(), method, path, &body.to_string())
}

/// Upstreams `a` and `b` (`b` only `with_b`); the file's API "orders" on `*` and on
/// `*.example.test`.
fn toml(a: &Upstream, b: &Upstream, with_b: bool) -> String {
    let mut ups = format!("[[upstreams]]\nname = \"a\"\ntargets = [\"{}\"]\n", a.addr);
    if with_b {
        ups.push_str(&format!(
            "\n[[upstreams]]\nname = \"b\"\ntargets = [\"{}\"]\n",
            b.addr
        ));
    }
    Cfg::new()
        .api("orders")
        .upstream(ups)
        .route(
            "GET /v",
            "integration = { type = \"mock\", body = \"orders\" }",
        )
        .extra(
            "[[domains]]\nhost = \"*.example.test\"\nmappings = [{ base_path = \"\", api = \"orders\", stage = \"prod\" }]",
        )
        .toml()
}

/// Run-time API "shop" (`GET /v` to the stage's `backend`) with deployments D1 and D2.
fn shop(g: &Gw) -> (String, String) {
    let def = json!({"name": "shop", "routes": [{"route": "GET /v", "integration": {"type": "http", "uri": "${stageVariables.backend}/v"}}]});
    let r = call(g, "POST", "/apis", def);
    assert_eq!(r.status, 201, "{}", r.text());
    let id = || {
        let r = call(g, "POST", "/apis/shop/deployments", json!({}));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    };
    (id(), id())
}

fn stage(g: &Gw, name: &str, deployment: &str, backend: &str) {
    let body = json!({"name": name, "deployment": deployment, "variables": {"backend": backend}});
    let r = call(g, "POST", "/apis/shop/stages", body);
    assert_eq!(r.status, 201, "{}", r.text());
}

fn map(g: &Gw, host: &str, stage: &str) {
    let body = json!({"host": host, "base_path": "", "api": "shop", "stage": stage});
    let r = call(g, "POST", "/domains", body);
    assert_eq!(r.status, 201, "{}", r.text());
}

/// `GET /domains`' `serving` for the run-time mapping of `host`.
fn serving(g: &Gw, host: &str) -> serde_json::Value {
    let r = admin(g.admin(), "GET", "/domains", Some(TOKEN));
    let items = r.json()["items"].as_array().unwrap().clone();
    let m = items
        .iter()
        .find(|m| m["host"] == host && m["source"] == "admin")
        .unwrap();
    m["serving"].clone()
}

#[test]
fn a_stage_or_canary_that_stops_compiling_is_left_out_alone() {
    let (a, b) = (
        Upstream::start(|_| respond(200, "a")),
        Upstream::start(|_| respond(200, "b")),
    );
    let g = Gw::start(&toml(&a, &b, true));
    let (_d1, d2) = shop(&g);
    // On D2: "prod" (to a) with a canary whose override goes to b, and "beta" (to b).
    stage(&g, "prod", &d2, "http://a");
    stage(&g, "beta", &d2, "http://b");
    map(&g, "shop.example.test", "prod");
    map(&g, "beta.example.test", "beta");
    let canary = json!({"canary": {"deployment": d2, "percent_traffic": 10.0, "stage_variable_overrides": {"backend": "http://b"}}});
    let r = call(&g, "PATCH", "/apis/shop/stages/prod", canary);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "beta.example.test", "/v").text(), "b");
    assert_eq!(serving(&g, "beta.example.test"), true);

    // Upstream b leaves the file: the reload is taken; the canary and "beta" are not
    // served, "prod" is, and beta's host answers 404, not the wildcard domain's API.
    g.rewrite(&toml(&a, &b, false));
    let r = admin(g.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..50 {
        let r = on(&g, "shop.example.test", "/v");
        assert_eq!((r.status, r.text()), (200, "a".to_string()));
    }
    let r = on(&g, "beta.example.test", "/v");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(serving(&g, "shop.example.test"), true);
    assert_eq!(serving(&g, "beta.example.test"), false);
    // The file's own hosts are served as before.
    assert_eq!(on(&g, "www.example.test", "/v").text(), "orders");
    // A canary already dark is no reason to refuse a change to its stage that keeps the
    // stage served.
    let r = call(
        &g,
        "PATCH",
        "/apis/shop/stages/prod",
        json!({"variables": {"note": "x"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "shop.example.test", "/v").text(), "a");
}

#[test]
fn a_refused_canary_is_named_as_the_admin_api_names_it() {
    let (a, b) = (
        Upstream::start(|_| respond(200, "a")),
        Upstream::start(|_| respond(200, "b")),
    );
    let g = Gw::start(&toml(&a, &b, true));
    let (_d1, d2) = shop(&g);
    stage(&g, "prod", &d2, "http://a");
    map(&g, "shop.example.test", "prod");
    map(&g, "www.shop.test", "prod");
    for (overrides, want) in [
        (
            json!({"backend": "http://a#"}),
            "in stages[\"prod\"].canary (stage_variable_overrides.backend = \"http://a#\"): host \"a#\"",
        ),
        (
            json!({"color": 5}),
            "apis[\"shop\"].stages[\"prod\"].canary.stage_variable_overrides.color: invalid type: integer `5`, expected a string",
        ),
        // A name that is no variable name.
        (
            json!({"a b": "c"}),
            "apis[\"shop\"].stages[\"prod\"].canary.stage_variable_overrides = \"a b\" is not valid",
        ),
    ] {
        let canary = json!({"canary": {"deployment": d2, "percent_traffic": 10.0, "stage_variable_overrides": overrides}});
        let r = call(&g, "PATCH", "/apis/shop/stages/prod", canary);
        assert_eq!(r.status, 400, "{}", r.text());
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(want), "{want}: {message}");
        // Only the canary's own error: no name it is checked under, no place in a list,
        // no mapping said to have lost its stage.
        for not in ["__canary", "stages[0]", "domain mapping", "; "] {
            assert!(!message.contains(not), "{not}: {message}");
        }
        assert_eq!(on(&g, "shop.example.test", "/v").text(), "a");
    }
    let canary = json!({"canary": {"deployment": "nope", "percent_traffic": 10.0}});
    let r = call(&g, "PATCH", "/apis/shop/stages/prod", canary);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["message"],
        "apis[\"shop\"].stages[\"prod\"].canary.deployment = \"nope\": API \"shop\" has no such deployment"
    );
}

#[test]
fn a_host_the_file_keeps_to_some_listeners_takes_no_run_time_mapping() {
    let (a, b) = (
        Upstream::start(|_| respond(200, "a")),
        Upstream::start(|_| respond(200, "b")),
    );
    let listeners = "[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:0\"\n\n[[listeners]]\nname = \"other\"\naddr = \"127.0.0.1:0\"\n";
    let file = toml(&a, &b, true).replacen(
        "[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:0\"\n",
        listeners,
        1,
    ) + "\n[[domains]]\nhost = \"kept.example.test\"\nlisteners = [\"http\"]\nmappings = [{ base_path = \"\", api = \"orders\", stage = \"prod\" }]\n";
    let g = Gw::start(&file);
    let (_d1, d2) = shop(&g);
    stage(&g, "prod", &d2, "http://a");
    // Shadowed on "http", served on "other" where the file keeps the host off: refused, at
    // the file's base path as at any other.
    for base in ["", "v2"] {
        let body =
            json!({"host": "kept.example.test", "base_path": base, "api": "shop", "stage": "prod"});
        let r = call(&g, "POST", "/domains", body);
        assert_eq!(r.status, 409, "{base}: {}", r.text());
        let want = format!("host \"kept.example.test\", base path /{base}: the configuration file's [[domains]] maps it");
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(&want), "{want}: {message}");
    }
    let r = admin(g.admin(), "GET", "/domains", Some(TOKEN));
    assert!(!r.text().contains("\"admin\""), "{}", r.text());
    assert_eq!(on(&g, "kept.example.test", "/v").text(), "orders");
    // A host of the file's on every listener still takes other base paths.
    let body =
        json!({"host": "*.example.test", "base_path": "shop", "api": "shop", "stage": "prod"});
    let r = call(&g, "POST", "/domains", body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(on(&g, "www.example.test", "/shop/v").text(), "a");

    // A mapping made before the file kept its host to some listeners: at the reload that
    // does, it is left out (it was served on the listeners the file keeps the host off),
    // and said so; the file's entries serve.
    map(&g, "later.example.test", "prod");
    let on_other = |host: &str| {
        Client::connect(g.addr_of("other")).request(
            format!("GET /v HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    assert_eq!(on_other("later.example.test").text(), "a");
    g.rewrite(&(file + "\n[[domains]]\nhost = \"later.example.test\"\nlisteners = [\"http\"]\nmappings = [{ base_path = \"\", api = \"orders\", stage = \"prod\" }]\n"));
    let r = admin(g.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "later.example.test", "/v").text(), "orders");
    // On "other", the file's `*.example.test` answers, as for "kept.example.test".
    assert_eq!(on_other("later.example.test").text(), "orders");
    assert_eq!(on_other("kept.example.test").text(), "orders");
    assert_eq!(serving(&g, "later.example.test"), false);
}

/// A stage or an API that a run-time mapping serves is not deleted (Amazon refuses it too):
/// the mapping's host would fall to another domain's API (the file's `*.example.test`) at once.
#[test]
fn what_a_mapping_serves_is_not_deleted() {
    let (a, b) = (
        Upstream::start(|_| respond(200, "a")),
        Upstream::start(|_| respond(200, "b")),
    );
    let g = Gw::start(&toml(&a, &b, true));
    let (_d1, d2) = shop(&g);
    stage(&g, "prod", &d2, "http://a");
    let body =
        json!({"host": "shop.example.test", "base_path": "", "api": "shop", "stage": "prod"});
    let r = call(&g, "POST", "/domains", body);
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    for path in ["/apis/shop/stages/prod", "/apis/shop"] {
        let r = call(&g, "DELETE", path, json!(null));
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("shop.example.test"), "{}", r.text());
    }
    assert_eq!(on(&g, "shop.example.test", "/v").text(), "a");
    // The mapping deleted first: the host is the wildcard domain's again, and the stage and
    // the API go.
    let r = call(&g, "DELETE", &format!("/domains/{id}"), json!(null));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "shop.example.test", "/v").text(), "orders");
    for path in ["/apis/shop/stages/prod", "/apis/shop"] {
        let r = call(&g, "DELETE", path, json!(null));
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// A stage, canary or new stage put on a deployment that does not compile any more (a reload
/// removed the upstream its authorizer calls) is refused, and the stage keeps serving: the
/// error names no stage, so it read as one already there, the change was taken (200), and a
/// live stage went dark (404).
#[test]
fn a_stage_moved_onto_a_deployment_that_cannot_be_served_is_refused() {
    let (a, b) = (
        Upstream::start(|_| respond(200, "a")),
        Upstream::start(|_| respond(200, "b")),
    );
    let g = Gw::start(&toml(&a, &b, true));
    let def = json!({"name": "hole", "routes": [{"route": "GET /v", "integration": {"type": "http", "uri": "http://a/v"}}]});
    assert_eq!(call(&g, "POST", "/apis", def).status, 201);
    let deploy = || {
        let r = call(&g, "POST", "/apis/hole/deployments", json!({}));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    };
    let good = deploy();
    let authz = json!({"name": "z", "type": "request", "uri": "http://b/auth", "identity_sources": ["$request.header.x-token"]});
    let r = call(&g, "POST", "/apis/hole/authorizers", authz);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = call(
        &g,
        "PATCH",
        "/apis/hole/routes/GET%20%2Fv",
        json!({"authorizer": "z"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let broken = deploy();
    for (name, d) in [("prod", &good), ("dev", &broken)] {
        let r = call(
            &g,
            "POST",
            "/apis/hole/stages",
            json!({"name": name, "deployment": d}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = call(
        &g,
        "POST",
        "/domains",
        json!({"host": "hole.example.test", "base_path": "", "api": "hole", "stage": "prod"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(on(&g, "hole.example.test", "/v").text(), "a");
    g.rewrite(&toml(&a, &b, false));
    let r = admin(g.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "hole.example.test", "/v").text(), "a");
    for (method, path, body) in [
        (
            "PATCH",
            "/apis/hole/stages/prod",
            json!({"deployment": broken}),
        ),
        (
            "PATCH",
            "/apis/hole/stages/prod",
            json!({"canary": {"deployment": broken, "percent_traffic": 100.0}}),
        ),
        (
            "POST",
            "/apis/hole/stages",
            json!({"name": "qa", "deployment": broken}),
        ),
    ] {
        let r = call(&g, method, path, body.clone());
        assert_eq!(r.status, 400, "{method} {path} {body}: {}", r.text());
        assert!(r.text().contains("would not be served"), "{}", r.text());
        let r = on(&g, "hole.example.test", "/v");
        assert_eq!((r.status, r.text()), (200, "a".to_string()), "{body}");
    }
    let r = admin(g.admin(), "GET", "/apis/hole/stages/qa", Some(TOKEN));
    assert_eq!(r.status, 404, "{}", r.text());
}

/// A mapping that cannot be served keeps what it would take: its base path answers 404, not a
/// shorter base path's API on the same host — the file's mapping to a run-time stage not
/// deployed yet (or deleted), and a run-time mapping whose stage stopped compiling.
#[test]
fn a_mapping_that_cannot_be_served_answers_404_not_a_shorter_base_path() {
    let (a, b) = (Upstream::echo(), Upstream::echo());
    // The file's API takes every path, so a request let through to it is seen.
    let file = |with_b: bool| {
        toml(&a, &b, with_b).replacen(
            "[[domains]]",
            "[[apis.routes]]\nroute = \"ANY /{proxy+}\"\nintegration = { type = \"mock\", body = \"orders\" }\n\n[[domains]]",
            1,
        ) + "\n[[domains]]\nhost = \"h.test\"\nmappings = [{ base_path = \"\", api = \"orders\", stage = \"prod\" }, { base_path = \"shop\", api = \"shop\", stage = \"prod\" }]\n"
    };
    let g = Gw::start(&file(true));
    assert_eq!(on(&g, "h.test", "/v").text(), "orders");
    // Served by the shop's stage once it exists, 404 before and after.
    assert_eq!(on(&g, "h.test", "/shop/v").status, 404);
    let (d1, _) = shop(&g);
    stage(&g, "prod", &d1, &format!("http://{}", a.addr));
    assert_eq!(on(&g, "h.test", "/shop/v").status, 200);
    let r = call(&g, "DELETE", "/apis/shop/stages/prod", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "h.test", "/shop/v").status, 404);
    // A run-time mapping under the "*" domain's "" whose stage stops compiling.
    stage(&g, "beta", &d1, "http://b");
    let body = json!({"host": "*", "base_path": "rt", "api": "shop", "stage": "beta"});
    assert_eq!(call(&g, "POST", "/domains", body).status, 201);
    assert_eq!(on(&g, "any.test", "/rt/v").status, 200);
    g.rewrite(&file(false));
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    assert_eq!(on(&g, "any.test", "/v").text(), "orders");
    assert_eq!(on(&g, "any.test", "/rt/v").status, 404);
    assert_eq!(on(&g, "any.test", "/rtx/v").text(), "orders");
}
