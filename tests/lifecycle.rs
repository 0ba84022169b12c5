//! Run-time APIs through the admin API: a definition, immutable deployments, stages that
//! serve a deployment, domain mappings; a changed definition serves nothing until deployed;
//! pointing a stage at an older deployment is the rollback; everything survives a restart;
//! the file's APIs cannot be changed or shadowed; bad input is refused with what is wrong.

mod common;

use serde_json::json;

use common::*;

fn on(g: &Gw, host: &str, path: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn post(g: &Gw, path: &str, body: serde_json::Value) -> Resp {
    admin_with(g.admin(), "POST", path, &body.to_string())
}

/// A change to API "shop"'s stage "prod".
fn patch_prod(g: &Gw, body: serde_json::Value) -> Resp {
    admin_with(
        g.admin(),
        "PATCH",
        "/apis/shop/stages/prod",
        &body.to_string(),
    )
}

fn definition(body: &str, up: std::net::SocketAddr) -> serde_json::Value {
    let _ = up;
    json!({
        "routes": [
            { "route": "GET /pets/{id}", "integration": { "type": "http", "uri": "${stageVariables.backend}/pets/{id}" } },
            { "route": "GET /v", "integration": { "type": "mock", "body": body } },
        ]
    })
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

#[test]
fn run_time_apis_deploy_roll_back_and_survive_a_restart() {
    let up = Upstream::echo();
    let g = Gw::start(&toml());
    let mut def = definition("v1", up.addr);
    def["name"] = json!("shop");
    let r = post(&g, "/apis", def);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["source"], "admin");

    // Refusals: the file's name, a misspelt field, a stage without a deployment.
    let r = post(&g, "/apis", json!({"name": "file", "routes": []}));
    assert_eq!(r.status, 409, "{}", r.text());
    let r = post(
        &g,
        "/apis",
        json!({"name": "x", "routes": [{"route": "GET /a", "integration": {"type": "mock"}, "colour": 1}]}),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unknown field `colour`"), "{}", r.text());
    // A wrong type is named by where it is in the body.
    let r = post(
        &g,
        "/apis",
        json!({"name": "x", "routes": [{"route": "GET /a", "integration": {"type": "mock"}}, {"route": "GET /b", "integration": {"type": "mock", "status": "200"}}]}),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .contains(r#"apis[\"x\"].routes[1].integration.status: invalid type: string \"200\""#),
        "{}",
        r.text()
    );
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "deployment": "nope"}),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("no such deployment"), "{}", r.text());
    assert_eq!(admin_with(g.admin(), "PUT", "/apis/file", "{}").status, 409);

    // Deploy, then a stage serving it: refused while the stage lacks the variable the
    // integration names, served once it has it and a host maps to it.
    let r = post(
        &g,
        "/apis/shop/deployments",
        json!({"description": "first"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let d1 = r.json()["id"].as_str().unwrap().to_string();
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "deployment": d1}),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("stageVariables.backend"), "{}", r.text());
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "deployment": d1, "variables": {"backend": format!("http://{}", up.addr)}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = post(
        &g,
        "/domains",
        json!({"host": "shop.test", "base_path": "", "api": "shop", "stage": "prod"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mapping = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(on(&g, "shop.test", "/v").text(), "v1");
    assert_eq!(on(&g, "shop.test", "/pets/3").json()["target"], "/pets/3");
    // The file's API still answers on every other host.
    assert_eq!(on(&g, "other.test", "/f").text(), "file");

    // A changed definition serves nothing until it is deployed.
    let r = admin_with(
        g.admin(),
        "PUT",
        "/apis/shop",
        &definition("v2", up.addr).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "shop.test", "/v").text(), "v1");
    let r = post(
        &g,
        "/apis/shop/deployments",
        json!({"description": "second", "stage": "prod"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(on(&g, "shop.test", "/v").text(), "v2");
    // Rollback: the stage points at the first deployment again.
    let r = admin_with(
        g.admin(),
        "PATCH",
        "/apis/shop/stages/prod",
        &json!({"deployment": d1}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "shop.test", "/v").text(), "v1");
    // A reload of the file keeps the run-time objects.
    g.rewrite(&toml());
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    assert_eq!(on(&g, "shop.test", "/v").text(), "v1");
    let history = admin(g.admin(), "GET", "/apis/shop/deployments", Some(TOKEN)).json();
    assert_eq!(history["items"].as_array().unwrap().len(), 2);
    let apis = admin(g.admin(), "GET", "/apis", Some(TOKEN)).json();
    let names: Vec<(&str, &str)> = apis["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, vec![("file", "file"), ("shop", "admin")]);
    // The export sees the run-time stage as it serves.
    let doc = admin(
        g.admin(),
        "GET",
        "/apis/shop/stages/prod/export",
        Some(TOKEN),
    )
    .json();
    assert!(doc["paths"]["/v"]["get"].is_object(), "{doc}");

    // A restart serves the same from the state store.
    let dir = g.stop();
    let g = Gw::start_in(dir, &toml());
    assert_eq!(on(&g, "shop.test", "/v").text(), "v1");
    assert_eq!(on(&g, "shop.test", "/pets/9").json()["target"], "/pets/9");

    // Removing the mapping, then the API: the host falls back to the file's "*".
    let r = admin(
        g.admin(),
        "DELETE",
        &format!("/domains/{mapping}"),
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "shop.test", "/v").status, 404);
    let r = admin(g.admin(), "DELETE", "/apis/shop", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        admin(g.admin(), "GET", "/apis/shop", Some(TOKEN)).status,
        404
    );
}

#[test]
fn a_canary_takes_its_share_then_is_promoted_or_removed() {
    let up = Upstream::echo();
    let g = Gw::start(&toml());
    let mut def = definition("base", up.addr);
    def["name"] = json!("shop");
    assert_eq!(post(&g, "/apis", def).status, 201);
    let vars = json!({"backend": format!("http://{}", up.addr)});
    let r = post(&g, "/apis/shop/deployments", json!({}));
    let d1 = r.json()["id"].as_str().unwrap().to_string();
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "deployment": d1, "variables": vars}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        post(
            &g,
            "/domains",
            json!({"host": "shop.test", "api": "shop", "stage": "prod"})
        )
        .status,
        201
    );
    let r = admin_with(
        g.admin(),
        "PUT",
        "/apis/shop",
        &definition("canary", up.addr).to_string(),
    );
    assert_eq!(r.status, 200);
    let d2 = post(&g, "/apis/shop/deployments", json!({"description": "next"})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = |body: serde_json::Value| patch_prod(&g, body);
    for (bad, want) in [
        (
            json!({"canary": {"deployment": d2, "percent_traffic": 150.0}}),
            "expected 0.0 to 100.0",
        ),
        (
            json!({"canary": {"deployment": "nope", "percent_traffic": 5.0}}),
            "canary.deployment",
        ),
        (
            json!({"canary": {"deployment": d2, "percent_traffic": 5.0, "use_stage_cache": 1}}),
            "canary.use_stage_cache: invalid type: integer `1`, expected a boolean",
        ),
        (
            json!({"canary": {"deployment": d2, "pct": 5.0}}),
            "unknown field `pct`",
        ),
    ] {
        let r = patch(bad);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(want), "{want}: {}", r.text());
    }
    let r = patch(json!({"canary": {"deployment": d2, "percent_traffic": 10.0}}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["canary"]["percent_traffic"], 10.0);

    // 10,000 requests, each drawn on its own: about one in ten reaches the canary.
    const N: usize = 10_000;
    let mut c = Client::connect(g.addr());
    let mut to_canary = 0;
    for _ in 0..N {
        let r = c.request(b"GET /v HTTP/1.1\r\nHost: shop.test\r\n\r\n");
        match r.text().as_str() {
            "canary" => to_canary += 1,
            "base" => {}
            other => panic!("{other}"),
        }
    }
    let share = to_canary as f64 * 100.0 / N as f64;
    println!("canary share over {N} requests at 10 %: {share:.2} %");
    // Five standard deviations (0.3 points each at this count) either way.
    assert!((8.5..=11.5).contains(&share), "{share}");
    // Its figures are its own: the stage "prod/Canary".
    let label = r#"api="shop",stage="prod/Canary",route="GET /v",class="2xx""#;
    assert!(eventually(IO_TIMEOUT, || {
        metric(&g, "tollgate_route_responses_total", label) == to_canary as u64
    }));

    // Promoted: the canary's deployment is the stage's, all traffic goes there.
    let r = post(&g, "/apis/shop/stages/prod/canary/promote", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deployment"], d2.as_str());
    assert!(r.json()["canary"].is_null());
    for _ in 0..50 {
        assert_eq!(
            c.request(b"GET /v HTTP/1.1\r\nHost: shop.test\r\n\r\n")
                .text(),
            "canary"
        );
    }
    // A canary of the old deployment at 100 %, then removed: all back to the stage's.
    assert_eq!(
        patch(json!({"canary": {"deployment": d1, "percent_traffic": 100.0}})).status,
        200
    );
    assert_eq!(
        c.request(b"GET /v HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            .text(),
        "base"
    );
    let r = admin(
        g.admin(),
        "DELETE",
        "/apis/shop/stages/prod/canary",
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        c.request(b"GET /v HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            .text(),
        "canary"
    );
    let r = admin(
        g.admin(),
        "DELETE",
        "/apis/shop/stages/prod/canary",
        Some(TOKEN),
    );
    assert_eq!(r.status, 404);
    // A path segment's `+` is itself (only a query's is a space); `%XX` is decoded.
    let r = admin(g.admin(), "GET", "/apis/a+b%21", Some(TOKEN));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "no API \"a+b!\"");
}

#[test]
fn a_reload_that_clashes_with_a_run_time_api_serves_the_file_and_refuses_nothing() {
    let up = Upstream::echo();
    let g = Gw::start(&toml());
    let mut def = definition("rt", up.addr);
    def["name"] = json!("shop");
    assert_eq!(post(&g, "/apis", def).status, 201);
    let r = post(&g, "/apis/shop/deployments", json!({"stage": "prod"}));
    assert_eq!(r.status, 400, "the stage lacks its variable: {}", r.text());
    let d = post(&g, "/apis/shop/deployments", json!({})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let vars = json!({"backend": format!("http://{}", up.addr)});
    assert_eq!(
        post(
            &g,
            "/apis/shop/stages",
            json!({"name": "prod", "deployment": d, "variables": vars})
        )
        .status,
        201
    );
    assert_eq!(
        post(
            &g,
            "/domains",
            json!({"host": "shop.test", "api": "shop", "stage": "prod"})
        )
        .status,
        201
    );
    assert_eq!(on(&g, "shop.test", "/v").text(), "rt");
    // The file now declares an API of the same name: the reload is taken, the file wins,
    // and the run-time API waits (it is not lost); its mapping's host answers 404 meanwhile,
    // not served by the file's API through the "*" domain.
    let clash = Cfg::new()
        .api("shop")
        .route(
            "GET /v",
            "integration = { type = \"mock\", body = \"from-file\" }",
        )
        .toml();
    g.rewrite(&clash);
    let r = admin(g.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(on(&g, "other.test", "/v").text(), "from-file");
    assert_eq!(on(&g, "shop.test", "/v").status, 404);
    // The admin API says which is which: the run-time one is kept, not served.
    let v = admin(g.admin(), "GET", "/apis/shop", Some(TOKEN)).json();
    assert_eq!(
        (v["source"].as_str(), v["serving"].as_bool()),
        (Some("admin"), Some(false)),
        "{v}"
    );
    let list = admin(g.admin(), "GET", "/apis", Some(TOKEN)).json();
    let shops: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["name"] == "shop")
        .collect();
    assert_eq!(shops.len(), 2, "{list}");
    assert!(
        shops
            .iter()
            .any(|a| a["source"] == "admin" && a["serving"] == false),
        "{list}"
    );
    // Other changes are not blocked by what the reload left out.
    assert_eq!(
        post(&g, "/apis", json!({"name": "other", "routes": []})).status,
        201
    );
    let r = post(&g, "/apis/other/deployments", json!({"stage": "s"}));
    assert_eq!(r.status, 201, "{}", r.text());
    // Back to the first file: the run-time API is served again.
    g.rewrite(&toml());
    assert_eq!(admin(g.admin(), "POST", "/reload", Some(TOKEN)).status, 200);
    assert_eq!(on(&g, "shop.test", "/v").text(), "rt");
}

#[test]
fn run_time_objects_survive_sigkill() {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(
        &path,
        Cfg::new()
            .admin("token_env = \"TG_LC_TOKEN\"")
            .api("file")
            .route(
                "GET /f",
                "integration = { type = \"mock\", body = \"file\" }",
            )
            .toml(),
    )
    .unwrap();
    let start = || {
        let p = Proc::start(&path, &[("TG_LC_TOKEN", TOKEN)]);
        let addr: std::net::SocketAddr = p.logged_addr("listening");
        let adm: std::net::SocketAddr = p.logged_addr("admin API listening");
        (p, addr, adm)
    };
    let get_kept = |addr: std::net::SocketAddr| {
        Client::connect(addr)
            .request(b"GET /v HTTP/1.1\r\nHost: kept.test\r\nConnection: close\r\n\r\n")
            .text()
    };
    let (mut p, addr, adm) = start();
    let def = json!({"name": "kept", "routes": [{"route": "GET /v", "integration": {"type": "mock", "body": "kept"}}]});
    assert_eq!(
        admin_with(adm, "POST", "/apis", &def.to_string()).status,
        201
    );
    let r = admin_with(
        adm,
        "POST",
        "/apis/kept/deployments",
        &json!({"stage": "prod"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let m = json!({"host": "kept.test", "api": "kept", "stage": "prod"});
    assert_eq!(
        admin_with(adm, "POST", "/domains", &m.to_string()).status,
        201
    );
    assert_eq!(get_kept(addr), "kept");
    // No drain, no flush: the process is killed.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let (_p, addr, _) = start();
    assert_eq!(get_kept(addr), "kept");
}

/// What the file's check refuses, the admin API refuses too, at once and with the key: two
/// routes of one method and path, a host that is neither an upstream nor an address, names
/// over 128 characters and descriptions over 1024; a second mapping of a host and base path
/// is a conflict (409); an unknown `mode` is named.
#[test]
fn run_time_definitions_are_checked_as_the_file_is() {
    let g = Gw::start(&toml());
    let mock = json!({"type": "mock", "body": "m"});
    for (body, says) in [
        (
            json!({"name": "dup", "routes": [{"route": "GET /v", "integration": mock}, {"route": "GET /v", "integration": mock}]}),
            "another route has the same method and path",
        ),
        (
            json!({"name": "dup", "routes": [{"route": "GET /p/{a}", "integration": mock}, {"route": "GET /p/{b}", "integration": mock}]}),
            "another route has the same method and path",
        ),
        (
            json!({"name": "nohost", "routes": [{"route": "GET /v", "integration": {"type": "http", "uri": "http://nosuch/a"}}]}),
            "neither an [[upstreams]] name nor an address",
        ),
        (
            json!({"name": "a".repeat(129), "routes": []}),
            "1 to 128 letters",
        ),
        // A route no admin path could name again.
        (
            json!({"name": "long", "routes": [{"route": format!("GET /{}", "p".repeat(5000)), "integration": mock}]}),
            "bytes long: at most 4096",
        ),
        // Deeper than the store could read back (accepted, it was lost at the next start).
        (
            json!({"name": "deep", "models": [{"name": "m", "schema": serde_json::from_str::<serde_json::Value>(&format!("{}1{}", "{\"a\":".repeat(120), "}".repeat(120))).unwrap()}], "routes": []}),
            "nest deeper than 100 levels",
        ),
    ]
    .into_iter()
    .chain(
        // URIs the deployment's compile refuses: refused when written, not at every deployment.
        [
            ("http://127.0.0.1:9/a\tb", "spaces, control characters or a fragment"),
            ("http://127.0.0.1:9/a#frag", "spaces, control characters or a fragment"),
            ("http://127.0.0.1:70000/a", "is not valid: expected 1 to 65535"),
            ("http://127.0.0.1:0/a", "port 0 names no server"),
            ("http://u:p@127.0.0.1:9/x", "user information"),
            ("http://[::1/x", "an IPv6 address ends with ]"),
            ("http://[zz]:9/x", "is not an IPv6 address"),
            ("http://a b:9/x", "not a host name or IP address"),
        ]
        .map(|(uri, says)| {
            let i = json!({"type": "http", "uri": uri});
            (
                json!({"name": "uri", "routes": [{"route": "GET /v", "integration": i}]}),
                says,
            )
        }),
    ) {
        let r = post(&g, "/apis", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(says), "{}", r.text());
        assert!(
            r.text().len() < 1000,
            "the message quotes a bounded part of the value"
        );
    }
    // A WebSocket API's routes are keys: `$connect` beside `ping` is no duplicate; `ping`
    // twice is.
    let ws = json!({"name": "chat", "kind": "websocket", "routes": [
        {"route": "$connect", "integration": mock},
        {"route": "ping", "integration": mock},
        {"route": "$default", "integration": mock},
    ]});
    let r = post(&g, "/apis", ws);
    assert_eq!(r.status, 201, "{}", r.text());
    let ws = json!({"name": "chat2", "kind": "websocket", "routes": [
        {"route": "ping", "integration": mock},
        {"route": "ping", "integration": mock},
    ]});
    assert_eq!(post(&g, "/apis", ws).status, 400);
    // The same definitions through PUT, on an API that exists.
    let r = post(
        &g,
        "/apis",
        json!({"name": "shop", "routes": [{"route": "GET /v", "integration": mock}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dup = json!({"routes": [{"route": "GET /v", "integration": mock}, {"route": "GET /v", "integration": mock}]});
    let r = admin_with(g.admin(), "PUT", "/apis/shop", &dup.to_string());
    assert_eq!(r.status, 400, "{}", r.text());
    // A stage name and a deployment description over the limits.
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "s".repeat(200), "auto_deploy": true}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post(
        &g,
        "/apis/shop/deployments",
        json!({"description": "d".repeat(1025)}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("at most 1024"), "{}", r.text());
    // A stage that deploys every change takes no deployment id (a rollback would last until
    // the next edit): refused as Amazon refuses it; turning auto_deploy off with it is a pin.
    let d = post(&g, "/apis/shop/deployments", json!({}));
    assert_eq!(d.status, 201, "{}", d.text());
    let d = d.json()["id"].as_str().unwrap().to_string();
    const AUTO: &str = "Deployment ID cannot be set on this stage because AutoDeploy is enabled";
    // A deployment id that is not a string is named as such (not as missing).
    for body in [
        json!({"name": "x", "deployment": 5}),
        json!({"name": "x", "deployment": null}),
    ] {
        let r = post(&g, "/apis/shop/stages", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .starts_with("deployment: expected a deployment id"),
            "{body}: {}",
            r.text()
        );
    }
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "auto_deploy": true, "deployment": d}),
    );
    assert_eq!((r.status, r.json()["message"].as_str()), (400, Some(AUTO)));
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "auto_deploy": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let patch = |body: serde_json::Value| patch_prod(&g, body);
    let r = patch(json!({"deployment": d}));
    assert_eq!((r.status, r.json()["message"].as_str()), (400, Some(AUTO)));
    let r = patch(json!({"deployment": d, "auto_deploy": false}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deployment"], d.as_str());
    assert_eq!(patch(json!({"auto_deploy": true})).status, 200);
    // A second mapping of the same host and base path.
    let m = json!({"host": "shop.test", "base_path": "v1", "api": "shop", "stage": "prod"});
    assert_eq!(post(&g, "/domains", m.clone()).status, 201);
    let r = post(
        &g,
        "/domains",
        json!({"host": "shop.test", "base_path": "/v1/", "api": "shop", "stage": "prod"}),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(on(&g, "shop.test", "/v1/v").text(), "m");
    // A base path no request's path could hold (a query or fragment mark, a space).
    for bp in ["a?x=1", "a#b", "a b"] {
        let r = post(
            &g,
            "/domains",
            json!({"host": "shop.test", "base_path": bp, "api": "shop", "stage": "prod"}),
        );
        assert_eq!(r.status, 400, "{bp}: {}", r.text());
        assert!(
            r.text().contains("cannot be in a path"),
            "{bp}: {}",
            r.text()
        );
    }
    // A value of the wrong type is said in the configuration's words, as the file's is.
    let r = post(
        &g,
        "/apis",
        json!({"name": "c", "cors": {"max_age": 300.5}, "routes": [{"route": "GET /v", "integration": {"type": "mock"}}]}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("cors.max_age: expected a whole number of seconds"),
        "{}",
        r.text()
    );
    // An unknown mode.
    let r = admin_with(g.admin(), "POST", "/apis?mode=bogus", "{}");
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("mode=\"bogus\""),
        "{}",
        r.text()
    );
    // API keys: PATCH checks a name as POST does; descriptions are bounded either way.
    let r = admin_with(
        g.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "k", "description": "x".repeat(1025)}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = admin_with(
        g.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "k"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    for name in ["a\u{0}\nb".to_string(), "n".repeat(1025), " ".to_string()] {
        let r = admin_with(
            g.admin(),
            "PATCH",
            &format!("/apikeys/{id}"),
            &json!({"name": name}).to_string(),
        );
        assert_eq!(r.status, 400, "{name:?}: {}", r.text());
        assert!(r.text().contains("1 to 1024 characters"), "{}", r.text());
    }
    // Amazon's key files take names up to 1024 characters.
    let r = admin_with(
        g.admin(),
        "PATCH",
        &format!("/apikeys/{id}"),
        &json!({"name": "n".repeat(1024)}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A run-time API "shop" with a mock `GET /v`.
fn mock_shop(g: &Gw) {
    let mock = json!({"type": "mock", "body": "m"});
    let r = post(
        g,
        "/apis",
        json!({"name": "shop", "routes": [{"route": "GET /v", "integration": mock}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

/// Its stage "prod" logging to `shop.log` in `format`, at shop.test; one request through it,
/// and what the log file (at `log`) then holds.
fn logged_request(g: &Gw, format: &str, log: &std::path::Path) -> String {
    let r = post(
        g,
        "/apis/shop/stages",
        json!({"name": "prod", "auto_deploy": true,
               "access_log": {"path": "shop.log", "format": format}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = post(
        g,
        "/domains",
        json!({"host": "shop.test", "base_path": "", "api": "shop", "stage": "prod"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(on(g, "shop.test", "/v").text(), "m");
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        eventually(std::time::Duration::from_secs(10), || read()
            .ends_with('\n')),
        "no line in {}",
        log.display()
    );
    read()
}

#[test]
fn run_time_stages_write_access_logs_only_inside_the_admin_log_folder() {
    let g = Gw::start(&Cfg::new().admin("access_log_dir = \"rt-logs\"").toml());
    let dir = g.dir.0.clone();
    std::fs::create_dir_all(dir.join("rt-logs")).unwrap();
    mock_shop(&g);
    // An absolute path, or one that climbs out, is refused by key, and no file is made.
    let outside = dir.join("outside.log");
    // Nor a file that is not a `.log` (the config or state store, were the folder theirs).
    std::fs::write(dir.join("rt-logs/config.toml"), "x = 1\n").unwrap();
    for path in [
        outside.display().to_string(),
        "../outside.log".into(),
        "a/../../outside.log".into(),
        "config.toml".into(),
        "data/tollgate.redb".into(),
        // Control characters: a file never opened, and a forged line in the gateway's log.
        "a\u{0}\n2026-01-01T00:00:00Z INFO tollgate::audit: forged .log".into(),
        "tab\there.log".into(),
    ] {
        let r = post(
            &g,
            "/apis/shop/stages",
            json!({"name": "prod", "auto_deploy": true, "access_log": {"path": path, "format": "json"}}),
        );
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(
            msg.contains("access_log.path") && msg.contains("admin.access_log_dir"),
            "{msg}"
        );
        assert!(msg.contains(&format!("{path:?}")), "{msg}");
        assert!(!outside.exists(), "{path} made a file outside the folder");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("rt-logs/config.toml")).unwrap(),
        "x = 1\n"
    );
    // Inside the folder: served, and its lines land there.
    let log = dir.join("rt-logs/shop.log");
    assert_eq!(
        logged_request(&g, "$context.status $context.path", &log),
        "200 /v\n"
    );
}

/// A run-time stage's `tracing` without a `[tracing]` table is refused as the file's is (it
/// was stored, and traced nothing).
#[test]
fn a_run_time_stage_cannot_trace_without_a_collector() {
    let g = Gw::start(&Cfg::new().admin("").toml());
    mock_shop(&g);
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "auto_deploy": true, "tracing": {"sample": 0.3}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("apis[\"shop\"].stages[\"prod\"].tracing: needs the [tracing] table"),
        "{}",
        r.text()
    );
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "auto_deploy": true}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin_with(
        g.admin(),
        "PATCH",
        "/apis/shop/stages/prod",
        &json!({"tracing": {"sample": 0.1}}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

/// Open descriptors of this process (the gateway runs in it) on files named `*.log` in `dir`.
fn open_logs(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.starts_with(dir) && t.to_string_lossy().contains(".log"))
        .count()
}

/// A run-time stage's access log moved or deleted through the admin API closes the file it
/// wrote (each change kept one more descriptor open, and a removed file's space, until a
/// reload).
#[test]
fn access_logs_no_stage_names_are_closed() {
    let g = Gw::start(&Cfg::new().admin("").toml());
    mock_shop(&g);
    let dir = g.dir.0.clone();
    assert_eq!(
        logged_request(&g, "$context.status", &dir.join("shop.log")),
        "200\n"
    );
    for i in 0..20 {
        let r = admin_with(
            g.admin(),
            "PATCH",
            "/apis/shop/stages/prod",
            &json!({"access_log": {"path": format!("shop{i}.log"), "format": "$context.status"}})
                .to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(on(&g, "shop.test", "/v").text(), "m");
        let log = dir.join(format!("shop{i}.log"));
        assert!(eventually(std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t == "200\n")
        }));
    }
    // The one the stage names now, at most.
    assert!(open_logs(&dir) <= 1, "{} log files open", open_logs(&dir));
    let listed = admin(g.admin(), "GET", "/domains", Some(TOKEN)).json();
    let id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["host"] == "shop.test")
        .map(|m| m["id"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{listed}"));
    let r = admin(g.admin(), "DELETE", &format!("/domains/{id}"), Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin(g.admin(), "DELETE", "/apis/shop", Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(eventually(
        std::time::Duration::from_secs(10),
        || open_logs(&dir) == 0
    ));
}

#[test]
fn run_time_stages_log_only_to_log_files_by_default() {
    let g = Gw::start(&Cfg::new().admin("").toml());
    mock_shop(&g);
    // Not to the config file beside them, which a log line would otherwise inject into.
    let config = std::fs::read_to_string(&g.path).unwrap();
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod", "auto_deploy": true, "access_log": {"path": "config.toml", "format": "json"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(std::fs::read_to_string(&g.path).unwrap(), config);
    let log = g.dir.0.join("shop.log");
    assert_eq!(logged_request(&g, "$context.status", &log), "200\n");
    // Nor changed to it later.
    let r = admin_with(
        g.admin(),
        "PATCH",
        "/apis/shop/stages/prod",
        &json!({"access_log": {"path": "config.toml", "format": "json"}}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn a_stage_cannot_pose_as_a_canary_and_any_stage_name_takes_one() {
    let g = Gw::start(&toml());
    let mock = |body: &str| json!({"type": "mock", "body": body});
    let r = post(
        &g,
        "/apis",
        json!({"name": "shop", "routes": [{"route": "GET /v", "integration": mock("v1")}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let d1 = post(&g, "/apis/shop/deployments", json!({})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin_with(
        g.admin(),
        "PUT",
        "/apis/shop",
        &json!({"routes": [{"route": "GET /v", "integration": mock("v2")}]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let d2 = post(&g, "/apis/shop/deployments", json!({})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The longest name a stage may have, with a canary taking all traffic.
    let long = "p".repeat(128);
    for (i, stage) in [long.clone(), "prod".into()].iter().enumerate() {
        let r = post(
            &g,
            "/apis/shop/stages",
            json!({"name": stage, "deployment": d1}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let r = admin_with(
            g.admin(),
            "PATCH",
            &format!("/apis/shop/stages/{stage}"),
            &json!({"canary": {"deployment": d2, "percent_traffic": 100.0}}).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let host = format!("s{i}.test");
        let m = json!({"host": host, "api": "shop", "stage": stage});
        assert_eq!(post(&g, "/domains", m).status, 201);
        assert_eq!(on(&g, &host, "/v").text(), "v2");
    }
    // A stage named like a canary is refused; the canary keeps serving its deployment.
    let r = post(
        &g,
        "/apis/shop/stages",
        json!({"name": "prod__canary", "deployment": d1}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("reserved for canaries"), "{}", r.text());
    // Nor made by a deployment that names its stage, nor a name no stage may have.
    for stage in ["prod__canary", "a/b", ""] {
        let r = post(
            &g,
            "/apis/shop/deployments",
            json!({"description": "v3", "stage": stage}),
        );
        assert_eq!(r.status, 400, "{stage:?}: {}", r.text());
    }
    let stages = admin(g.admin(), "GET", "/apis/shop/stages", Some(TOKEN)).text();
    assert!(!stages.contains("prod__canary"), "{stages}");
    assert_eq!(on(&g, "s1.test", "/v").text(), "v2");
}

/// A canary's requests count against its stage's throttle: it has none of its own (Amazon's
/// canary settings have no throttle), so a stage with a canary admits no more than without.
#[test]
fn a_canary_shares_its_stages_throttle() {
    let up = Upstream::echo();
    let g = Gw::start(&toml());
    let mut def = definition("base", up.addr);
    def["name"] = json!("th");
    assert_eq!(post(&g, "/apis", def).status, 201);
    let d1 = post(&g, "/apis/th/deployments", json!({})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let stage = json!({"name": "prod", "deployment": d1, "throttle": {"rate": 1, "burst": 5},
        "variables": {"backend": format!("http://{}", up.addr)}});
    assert_eq!(post(&g, "/apis/th/stages", stage).status, 201);
    let mapping = json!({"host": "th.test", "api": "th", "stage": "prod"});
    assert_eq!(post(&g, "/domains", mapping).status, 201);
    let r = admin_with(
        g.admin(),
        "PUT",
        "/apis/th",
        &definition("canary", up.addr).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let d2 = post(&g, "/apis/th/deployments", json!({})).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let canary = json!({"canary": {"deployment": d2, "percent_traffic": 50.0}});
    let r = admin_with(
        g.admin(),
        "PATCH",
        "/apis/th/stages/prod",
        &canary.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut c = Client::connect(g.addr());
    let started = std::time::Instant::now();
    let mut admitted = 0u64;
    for _ in 0..40 {
        let r = c.request(b"GET /v HTTP/1.1\r\nHost: th.test\r\n\r\n");
        assert!(matches!(r.status, 200 | 429), "{}", r.status);
        admitted += u64::from(r.status == 200);
    }
    // Burst 5 and 1 a second: at most 5 + the seconds the 40 took (two buckets admitted 10).
    let most = 5 + started.elapsed().as_secs() + 1;
    assert!(
        (5..=most).contains(&admitted),
        "{admitted} admitted, at most {most}"
    );
}
