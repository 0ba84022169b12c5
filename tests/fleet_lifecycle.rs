//! Run-time APIs, deployments, stages, canaries and domain mappings shared by a fleet through
//! a real `redis-server`: what one node's admin API makes, every node serves; a refused change
//! reaches no node; a node started afterwards has it all; while Redis is gone such a change
//! answers 503 and changes nothing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn conf(redis: std::net::SocketAddr) -> String {
    Cfg::new()
        .api("file")
        .route(
            "GET /f",
            "integration = { type = \"mock\", body = \"file\" }",
        )
        .extra(format!(
            "[cluster]\nredis = \"redis://{redis}\"\nnodes = 3\n"
        ))
        .toml()
}

fn on(g: &Gw, host: &str, path: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn read(g: &Gw, path: &str) -> Resp {
    admin_with(g.admin(), "GET", path, "")
}

fn call(g: &Gw, method: &str, path: &str, body: Value) -> Resp {
    admin_with(g.admin(), method, path, &body.to_string())
}

fn definition(body: &str) -> Value {
    json!({ "routes": [ { "route": "GET /v", "integration": { "type": "mock", "body": body } } ] })
}

/// Each node applies the fleet's changes as Redis hands them over: milliseconds
/// (`scripts/fleet_latency.py` measures it); the bound leaves room for a loaded test machine.
fn soon(f: impl FnMut() -> bool) -> bool {
    eventually(Duration::from_secs(3), f)
}

fn serves(g: &Gw, body: &str) -> bool {
    let r = on(g, "orders.test", "/v");
    r.status == 200 && r.text() == body
}

#[test]
fn run_time_apis_made_on_one_node_serve_on_every_node() {
    let redis = Redis::start();
    let nodes: Vec<Gw> = (0..3).map(|_| Gw::start(&conf(redis.addr))).collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    // The definition, made on A, is known to B.
    let mut def = definition("v1");
    def["name"] = json!("orders");
    let r = call(a, "POST", "/apis", def);
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(soon(|| read(b, "/apis/orders").status == 200));

    // A change the compile step refuses reaches no node.
    let r = call(
        b,
        "POST",
        "/apis/orders/stages",
        json!({"name": "prod", "deployment": "nope"}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no such deployment"), "{}", r.text());

    // Deployed to a stage on A, mapped to a host on C (once C has the stage): every node
    // serves it.
    let r = call(
        a,
        "POST",
        "/apis/orders/deployments",
        json!({"stage": "prod"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let d1 = r.json()["id"].as_str().unwrap().to_string();
    assert!(soon(|| read(c, "/apis/orders/stages/prod").status == 200));
    let r = call(
        c,
        "POST",
        "/domains",
        json!({"host": "orders.test", "base_path": "", "api": "orders", "stage": "prod"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mapping = r.json()["id"].as_str().unwrap().to_string();
    for n in &nodes {
        assert!(soon(|| serves(n, "v1")));
        // The file's API is each node's own, and still answers.
        assert_eq!(on(n, "other.test", "/f").text(), "file");
    }

    // A new definition (on B), deployed without a stage, then a canary taking all traffic
    // (on A), then promoted (on C).
    let r = call(b, "PUT", "/apis/orders", definition("v2"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(b, "POST", "/apis/orders/deployments", json!({}));
    assert_eq!(r.status, 201, "{}", r.text());
    let d2 = r.json()["id"].as_str().unwrap().to_string();
    assert!(soon(|| read(a, &format!("/apis/orders/deployments/{d2}"))
        .status
        == 200));
    let r = call(
        a,
        "PATCH",
        "/apis/orders/stages/prod",
        json!({"canary": {"deployment": d2, "percent_traffic": 100.0}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for n in &nodes {
        assert!(soon(|| serves(n, "v2")));
    }
    assert!(soon(|| read(c, "/apis/orders/stages/prod").json()
        ["canary"]["deployment"]
        == d2.as_str()));
    let r = call(
        c,
        "POST",
        "/apis/orders/stages/prod/canary/promote",
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for n in &nodes {
        assert!(soon(|| {
            let s = read(n, "/apis/orders/stages/prod").json();
            s["deployment"] == d2.as_str() && s.get("canary").is_none()
        }));
        assert!(serves(n, "v2"));
    }
    // The first deployment, served by nothing now, deleted on B: gone everywhere.
    let r = call(
        b,
        "DELETE",
        &format!("/apis/orders/deployments/{d1}"),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A node started after all this has it.
    let d = Gw::start(&conf(redis.addr));
    assert!(soon(|| serves(&d, "v2")));
    assert!(soon(|| read(&d, &format!("/apis/orders/deployments/{d1}"))
        .status
        == 404));
    assert_eq!(
        read(&d, &format!("/apis/orders/deployments/{d2}")).status,
        200
    );

    // The API deleted on D (its mapping first: an API a mapping serves is not deleted): no
    // node serves it, nor keeps its stages or mapping.
    let r = call(&d, "DELETE", "/apis/orders", json!({}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains(&mapping), "{}", r.text());
    let r = call(&d, "DELETE", &format!("/domains/{mapping}"), json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&d, "DELETE", "/apis/orders", json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["generation"].as_u64().is_some(), "{}", r.text());
    for n in nodes.iter().chain([&d]) {
        assert!(soon(|| on(n, "orders.test", "/v").status == 404));
        assert!(soon(|| read(n, "/apis/orders").status == 404));
        let domains = read(n, "/domains").text();
        assert!(!domains.contains("orders.test"), "{domains}");
    }
}

#[test]
fn without_redis_a_run_time_api_change_answers_503_and_changes_nothing() {
    let mut redis = Redis::start();
    let addr = redis.addr;
    let (a, b) = (Gw::start(&conf(addr)), Gw::start(&conf(addr)));
    let mut def = definition("v1");
    def["name"] = json!("orders");
    let r = call(&a, "POST", "/apis", def.clone());
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(soon(|| read(&b, "/apis/orders").status == 200));

    redis.stop();
    let r = call(
        &b,
        "POST",
        "/apis/orders/deployments",
        json!({"stage": "prod"}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("nothing was changed"), "{}", r.text());
    assert_eq!(read(&b, "/apis/orders/stages/prod").status, 404);
    assert_eq!(
        read(&b, "/apis/orders/deployments").json()["items"],
        json!([])
    );
    // Reads say they may be stale.
    let listed = read(&a, "/apis");
    assert_eq!(listed.status, 200);
    assert!(soon(|| read(&a, "/apis")
        .header("x-tollgate-fleet")
        .is_some_and(|h| h.starts_with("stale"))));

    // Redis back (empty): the nodes send what they hold, and a change made then reaches both.
    let _redis = Redis::start_on(addr);
    assert!(eventually(Duration::from_secs(10), || {
        call(
            &b,
            "POST",
            "/apis/orders/deployments",
            json!({"stage": "prod"}),
        )
        .status
            == 201
    }));
    assert!(eventually(Duration::from_secs(5), || read(
        &a,
        "/apis/orders/stages/prod"
    )
    .status
        == 200));
}

#[test]
fn a_change_planned_on_a_copy_the_fleet_moved_past_is_refused_409() {
    let redis = Redis::start();
    let (a, b) = (Gw::start(&conf(redis.addr)), Gw::start(&conf(redis.addr)));
    let mut def = definition("v1");
    def["name"] = json!("orders");
    assert_eq!(call(&a, "POST", "/apis", def).status, 201);
    assert!(soon(|| read(&b, "/apis/orders").status == 200));
    // The fleet's copy changes behind the nodes' backs (as a change another node made, not
    // yet read here, would look): B's copy is now older than the fleet's.
    let held = redis.cli(&["hget", "tollgate:fleet:objects", "api/orders"]);
    let mut newer: serde_json::Value = serde_json::from_str(&held).unwrap();
    newer["updated"] = json!("2030-01-01T00:00:00.000Z");
    redis.cli(&[
        "hset",
        "tollgate:fleet:objects",
        "api/orders",
        &newer.to_string(),
    ]);
    let r = call(&b, "PUT", "/apis/orders", definition("v2"));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("api/orders was changed on another node"),
        "{}",
        r.text()
    );
    // Nothing was changed: the fleet keeps its object, the stream got no entry.
    assert_eq!(
        redis.cli(&["hget", "tollgate:fleet:objects", "api/orders"]),
        newer.to_string()
    );
    assert_eq!(
        read(&b, "/apis/orders").json()["definition"]["routes"][0]["integration"]["body"],
        "v1"
    );
}

#[test]
fn a_node_joining_with_apis_of_its_own_keeps_the_fleets_and_adds_the_rest() {
    let redis = Redis::start();
    // C, alone at first (no fleet), makes two APIs.
    let alone = Cfg::new()
        .api("file")
        .route(
            "GET /f",
            "integration = { type = \"mock\", body = \"file\" }",
        )
        .toml();
    let c = Gw::start(&alone);
    for (name, body) in [("orders", "c-orders"), ("solo", "c-solo")] {
        let mut def = definition(body);
        def["name"] = json!(name);
        assert_eq!(call(&c, "POST", "/apis", def).status, 201);
    }
    let dir = c.stop();
    // The fleet has its own "orders".
    let a = Gw::start(&conf(redis.addr));
    let mut def = definition("fleet-orders");
    def["name"] = json!("orders");
    assert_eq!(call(&a, "POST", "/apis", def).status, 201);
    // C joins: the fleet's "orders" wins; C's "solo" joins the fleet.
    let c = Gw::start_in(dir, &conf(redis.addr));
    let body = |g: &Gw, api: &str| {
        read(g, &format!("/apis/{api}")).json()["definition"]["routes"][0]["integration"]["body"]
            .clone()
    };
    assert!(
        soon(|| body(&c, "orders") == "fleet-orders"),
        "{}",
        body(&c, "orders")
    );
    assert!(
        soon(|| body(&a, "solo") == "c-solo"),
        "{}",
        body(&a, "solo")
    );
    assert_eq!(body(&c, "solo"), "c-solo");
}

#[test]
fn moving_the_fleets_redis_needs_a_restart() {
    let redis = Redis::start();
    let a = Gw::start(&conf(redis.addr));
    let other = Redis::start();
    a.rewrite(&conf(other.addr));
    let r = admin_with(a.admin(), "POST", "/reload", "");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("cluster: adding, removing or moving the fleet's Redis"),
        "{}",
        r.text()
    );
}
