//! A fleet of nodes sharing run-time API keys through a real `redis-server`: a key created on
//! one node works on the others at once, updates and deletes follow, a node started
//! after the changes has them, and while Redis is gone every node keeps serving, admin writes
//! answer 503 and reads say they may be stale; when Redis is back, changes flow again (and a
//! Redis that came back empty gets the nodes' copies back).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;

/// API "shop" with a keyed route, `nodes` nodes sharing Redis, plan "gold" on its stage
/// (with `plan` keys added).
fn shop(redis: SocketAddr, nodes: u32, plan: &str) -> String {
    Cfg::new()
        .api("shop")
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
        )
        .extra(format!(
            "[cluster]\nredis = \"redis://{redis}\"\nnodes = {nodes}\n\n[[usage_plans]]\nname = \"gold\"\nstages = [\"shop/prod\"]\n{plan}"
        ))
        .toml()
}

fn conf(redis: SocketAddr) -> String {
    shop(redis, 3, "")
}

fn keyed(g: &Gw, key: &str) -> u16 {
    let mut c = Client::connect(g.addr());
    c.request(format!("GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: {key}\r\n\r\n").as_bytes())
        .status
}

/// Each node applies the fleet's changes as Redis hands them over: milliseconds
/// (`scripts/fleet_latency.py` measures it); the bound leaves room for a loaded test machine
/// (a node whose sync was reconnecting waits a second, then catches up: 3 s was missed once
/// with the whole suite running on 2 cores).
fn soon(f: impl FnMut() -> bool) -> bool {
    eventually(Duration::from_secs(10), f)
}

const VALUE: &str = "fleet-key-0123456789abcdef";

/// Two-or-more-node quota tests: API "shop" with a keyed route, plan "gold" with a daily
/// quota of `limit` across `nodes` nodes.
fn quota_conf(redis: SocketAddr, nodes: u32, limit: u64) -> String {
    shop(
        redis,
        nodes,
        &format!("quota = {{ limit = {limit}, period = \"day\" }}\n"),
    )
}

/// Key "q" of value [`VALUE`] on plan "gold", made on `g`: its id.
fn make_q_key(g: &Gw) -> String {
    let r = admin_with(
        g.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "q", "value": VALUE, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

#[test]
fn api_keys_made_on_one_node_serve_on_every_node() {
    let redis = Redis::start();
    let nodes: Vec<Gw> = (0..3).map(|_| Gw::start(&conf(redis.addr))).collect();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    for n in &nodes {
        assert_eq!(keyed(n, VALUE), 403);
    }
    let r = admin_with(
        a.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "partner", "value": VALUE, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // The node that made it serves it at once; the others soon after.
    assert_eq!(keyed(a, VALUE), 200);
    assert!(soon(|| keyed(b, VALUE) == 200), "B");
    assert!(soon(|| keyed(c, VALUE) == 200), "C");
    let listed = admin_with(c.admin(), "GET", &format!("/apikeys/{id}"), "");
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()["name"], "partner");
    assert_eq!(listed.header("x-tollgate-fleet"), None);

    // Disabled on B: refused everywhere.
    let r = admin_with(
        b.admin(),
        "PATCH",
        &format!("/apikeys/{id}"),
        r#"{"enabled": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["enabled"], false);
    for n in &nodes {
        assert!(soon(|| keyed(n, VALUE) == 403));
    }
    // Enabled again from C, then a node started after all of this has it.
    let r = admin_with(
        c.admin(),
        "PATCH",
        &format!("/apikeys/{id}"),
        r#"{"enabled": true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let d = Gw::start(&conf(redis.addr));
    assert!(soon(|| keyed(&d, VALUE) == 200), "a late node catches up");
    for n in &nodes {
        assert!(soon(|| keyed(n, VALUE) == 200));
    }
    // Deleted on the late node: gone everywhere.
    let r = admin_with(d.admin(), "DELETE", &format!("/apikeys/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    for n in nodes.iter().chain([&d]) {
        assert!(soon(|| keyed(n, VALUE) == 403));
        assert!(soon(|| admin_with(
            n.admin(),
            "GET",
            &format!("/apikeys/{id}"),
            ""
        )
        .status
            == 404));
    }
}

#[test]
fn without_redis_nodes_serve_refuse_writes_and_catch_up_when_it_returns() {
    let mut redis = Redis::start();
    let addr = redis.addr;
    let a = Gw::start(&conf(addr));
    let b = Gw::start(&conf(addr));
    let r = admin_with(
        a.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "before", "value": VALUE, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(soon(|| keyed(&b, VALUE) == 200));

    redis.stop();
    // Both keep serving from their copy.
    assert_eq!(keyed(&a, VALUE), 200);
    assert_eq!(keyed(&b, VALUE), 200);
    // A write that needs the fleet is refused, and changes nothing.
    let later = "fleet-key-later-0123456789abc";
    let r = admin_with(
        b.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "later", "value": later, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("nothing was changed"));
    assert_eq!(keyed(&b, later), 403);
    // Reads say they may be behind the fleet.
    let listed = admin_with(b.admin(), "GET", "/apikeys", "");
    assert_eq!(listed.status, 200);
    assert!(
        listed
            .header("x-tollgate-fleet")
            .is_some_and(|h| h.starts_with("stale")),
        "{:?}",
        listed.header("x-tollgate-fleet")
    );

    // Redis back (empty: it kept nothing): a change made then reaches both.
    let _redis = Redis::start_on(addr);
    assert!(eventually(Duration::from_secs(10), || {
        admin_with(
            b.admin(),
            "POST",
            "/apikeys",
            &json!({"name": "later", "value": later, "plan": "gold"}).to_string(),
        )
        .status
            == 201
    }));
    // (A node retries Redis every second.)
    let after_outage = |f: &mut dyn FnMut() -> bool| eventually(Duration::from_secs(5), f);
    assert!(after_outage(&mut || keyed(&a, later) == 200));
    assert_eq!(keyed(&b, later), 200);
    // The nodes saw Redis come back without its data (a new epoch) and sent it what they
    // hold: a node that joins now gets the key made before the outage too.
    let c = Gw::start(&conf(addr));
    assert!(after_outage(&mut || keyed(&c, later) == 200));
    assert!(after_outage(&mut || keyed(&c, VALUE) == 200));
    assert!(soon(|| admin_with(a.admin(), "GET", "/apikeys", "")
        .header("x-tollgate-fleet")
        .is_none()));
}

#[test]
fn a_cache_purge_on_one_node_empties_every_nodes_copy() {
    let redis = Redis::start();
    let up = Upstream::echo();
    let conf = Cfg::new()
        .api("shop")
        .upstream(format!(
            "[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
            up.addr
        ))
        .stage_extra("cache = { ttl = \"300s\" }")
        .route(
            "GET /c/{p}",
            "integration = { type = \"http\", uri = \"http://up/c/{p}\" }",
        )
        .extra(format!(
            "[cluster]\nredis = \"redis://{}\"\nnodes = 3\n",
            redis.addr
        ))
        .toml();
    let nodes: Vec<Gw> = (0..3).map(|_| Gw::start(&conf)).collect();
    // Every node has synced with the fleet (a node's first sync starts its caches afresh: a
    // purge made before it would be missed) once a key made on one is on all.
    let r = admin_with(
        nodes[0].admin(),
        "POST",
        "/apikeys",
        r#"{"name": "synced"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    for n in &nodes {
        assert!(soon(|| admin_with(
            n.admin(),
            "GET",
            &format!("/apikeys/{id}"),
            ""
        )
        .status
            == 200));
    }
    let entries = |g: &Gw| {
        let r = admin_with(g.admin(), "GET", "/apis/shop/stages/prod/cache", "");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["entries"].as_u64().unwrap()
    };
    for n in &nodes {
        for p in ["a", "b"] {
            assert_eq!(get(n.addr(), &format!("/c/{p}")).status, 200);
        }
        assert!(eventually(Duration::from_secs(5), || entries(n) == 2));
    }
    // One path purged on B: gone on every node, the other path stays.
    let r = admin_with(
        nodes[1].admin(),
        "DELETE",
        "/apis/shop/stages/prod/cache?path=/c/a",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], 1);
    for n in &nodes {
        assert!(soon(|| entries(n) == 1));
    }
    // A flush on C empties them all.
    let r = admin_with(
        nodes[2].admin(),
        "DELETE",
        "/apis/shop/stages/prod/cache",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for n in &nodes {
        assert!(soon(|| entries(n) == 0));
    }
    // A stage that is not there is still 404, and nothing goes to the fleet.
    let r = admin_with(
        nodes[0].admin(),
        "DELETE",
        "/apis/shop/stages/nope/cache",
        "",
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn a_quota_reset_on_one_node_holds_for_the_fleet() {
    let redis = Redis::start();
    let conf = quota_conf(redis.addr, 2, 4);
    let (a, b) = (Gw::start(&conf), Gw::start(&conf));
    let id = make_q_key(&a);
    assert!(soon(|| keyed(&b, VALUE) == 200));
    // Four a day across the fleet (one already spent on B above).
    let mut spent = 1;
    while spent < 4 {
        assert_eq!(keyed(if spent % 2 == 0 { &a } else { &b }, VALUE), 200);
        spent += 1;
    }
    assert_eq!(keyed(&a, VALUE), 429);
    assert_eq!(keyed(&b, VALUE), 429);
    // Reset on B: the fleet's counter starts again, on both nodes.
    let path = format!("/usageplans/gold/keys/{id}/quota");
    let r = admin_with(b.admin(), "POST", &format!("{path}/reset"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["remaining"], 4);
    // The node that reset it admits at once (it answered 429 "Limit Exceeded", with a
    // Retry-After of the next day, for up to a second after the reset said 4 remain).
    assert_eq!(keyed(&b, VALUE), 200);
    assert!(soon(|| keyed(&a, VALUE) == 200), "A admits after the reset");
    // Set to 3 used on A: one more on either node, then refused on both.
    let r = admin_with(a.admin(), "PUT", &path, r#"{"used": 3}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(soon(|| keyed(&b, VALUE) == 200));
    assert!(soon(|| keyed(&a, VALUE) == 429 && keyed(&b, VALUE) == 429));
}

/// Today (UTC) as YYYY-MM-DD.
fn today() -> String {
    day_before(0)
}

/// The day `back` days before today (UTC) as YYYY-MM-DD.
fn day_before(back: i64) -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400
        - back;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[test]
fn usage_reports_count_the_whole_fleet() {
    let redis = Redis::start();
    let (a, b) = (Gw::start(&conf(redis.addr)), Gw::start(&conf(redis.addr)));
    let r = admin_with(
        a.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "u", "value": VALUE, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(soon(|| keyed(&b, VALUE) == 200));
    for _ in 0..3 {
        assert_eq!(keyed(&a, VALUE), 200);
    }
    assert_eq!(keyed(&b, VALUE), 200);
    // Five requests in all (one on B above): either node reports the fleet's count, once each
    // node has added its own (every second).
    let day = today();
    let path = format!("/usageplans/gold/usage?startDate={day}&endDate={day}&keyId={id}");
    for n in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), || {
                let r = admin_with(n.admin(), "GET", &path, "");
                r.status == 200 && r.json()["items"][&id][0]["used"] == 5
            }),
            "{}",
            admin_with(n.admin(), "GET", &path, "").text()
        );
    }
    // A node that stops sends its last counts as it goes: none is lost.
    for _ in 0..2 {
        assert_eq!(keyed(&a, VALUE), 200);
    }
    a.stop();
    assert!(
        eventually(Duration::from_secs(5), || {
            let r = admin_with(b.admin(), "GET", &path, "");
            r.status == 200 && r.json()["items"][&id][0]["used"] == 7
        }),
        "{}",
        admin_with(b.admin(), "GET", &path, "").text()
    );
    // Amazon's shape too: one [used, remaining] per day (no quota on gold).
    let r = admin_with(b.admin(), "GET", &path, "");
    assert_eq!(r.json()["values"][&id], json!([[7, null]]), "{}", r.text());
    // A deleted key's usage goes with it, as on a node alone: asked for by id it is no key
    // of the plan (404, as Amazon answers), and the plan's report has nothing of it.
    let r = admin_with(b.admin(), "DELETE", &format!("/apikeys/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = admin_with(b.admin(), "GET", &path, "");
    assert_eq!(r.status, 404, "{}", r.text());
    let all = format!("/usageplans/gold/usage?startDate={day}&endDate={day}");
    let r = admin_with(b.admin(), "GET", &all, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"], json!({}), "{}", r.text());
    assert_eq!(r.json()["values"], json!({}), "{}", r.text());
}

#[test]
fn at_connections_reach_a_connection_another_node_holds() {
    use tungstenite::Message;
    let redis = Redis::start();
    let up = Upstream::start(|_| respond(200, "{}"));
    let conf = Cfg::new()
        .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
        .api_extra("kind = \"websocket\"\nconnections_authorization = \"none\"")
        .routes(
            "[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n",
        )
        .extra(format!("[cluster]\nredis = \"redis://{}\"\nnodes = 2\n", redis.addr))
        .toml();
    let (a, b) = (Gw::start(&conf), Gw::start(&conf));
    // The client is on B; its id (as $connect's integration heard it) names B.
    let stream = std::net::TcpStream::connect(b.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client("ws://chat.test/", stream).unwrap();
    let id = up.requests()[0]
        .header("x-connection-id")
        .unwrap()
        .to_string();
    // Through A's admin API, and through A's domain (the API's own @connections).
    let r = admin_with(
        a.admin(),
        "POST",
        &format!("/@connections/{id}"),
        "via admin",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap(), Message::text("via admin"));
    let mut c = Client::connect(a.addr());
    let r = c.request(
        format!("POST /@connections/{id} HTTP/1.1\r\nhost: chat.test\r\ncontent-length: 10\r\n\r\nvia domain")
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ws.read().unwrap(), Message::text("via domain"));
    let r = admin_with(a.admin(), "GET", &format!("/@connections/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["identity"]["sourceIp"], "127.0.0.1");
    // Closed from A; then it is gone, whichever node is asked.
    let r = admin_with(a.admin(), "DELETE", &format!("/@connections/{id}"), "");
    assert_eq!(r.status, 204, "{}", r.text());
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => {
                let _ = ws.flush();
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    for n in [&a, &b] {
        assert!(eventually(Duration::from_secs(5), || admin_with(
            n.admin(),
            "GET",
            &format!("/@connections/{id}"),
            ""
        )
        .status
            == 410));
    }
    // A connection id naming a node that is not there: 410 at once.
    let r = admin_with(a.admin(), "POST", "/@connections/AAAAAAAAAAAAAAAAAAAA", "x");
    assert_eq!(r.status, 410, "{}", r.text());
}

#[test]
fn access_keys_are_the_fleets_and_stay_sealed_in_redis() {
    const SECRETS_KEY: &str = "q0VvXk3pYH5o1cF4n9T2bW8sR6dJ7aL0zE3uM5yG1iQ=";
    let redis = Redis::start();
    let node = || {
        let dir = TempDir::new();
        std::fs::write(dir.0.join("iam.key"), SECRETS_KEY).unwrap();
        let toml = Cfg::new()
            .extra(format!(
                "[aws_iam]\nregion = \"us-east-1\"\nsecrets_key_file = \"iam.key\"\n\n[cluster]\nredis = \"redis://{}\"\nnodes = 2\n",
                redis.addr
            ))
            .toml();
        Gw::start_in(dir, &toml)
    };
    let (a, b) = (node(), node());
    let body = json!({"name": "ops", "policy": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*"}]}});
    let r = admin_with(a.admin(), "POST", "/accesskeys", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let secret = r.json()["secretAccessKey"].as_str().unwrap().to_string();
    assert!(soon(|| admin_with(
        b.admin(),
        "GET",
        &format!("/accesskeys/{id}"),
        ""
    )
    .status
        == 200));
    // What Redis holds is the sealed secret, never the secret itself.
    let held = redis.cli(&["HGET", "tollgate:fleet:objects", &format!("access/{id}")]);
    assert!(held.contains("sealed_secret"), "{held}");
    assert!(!held.contains(&secret), "{held}");
    // Disabled on B, then deleted on A: both nodes see each.
    let r = admin_with(
        b.admin(),
        "PATCH",
        &format!("/accesskeys/{id}"),
        r#"{"enabled": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(soon(|| admin_with(
        a.admin(),
        "GET",
        &format!("/accesskeys/{id}"),
        ""
    )
    .json()["enabled"]
        == false));
    let r = admin_with(a.admin(), "DELETE", &format!("/accesskeys/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(soon(|| admin_with(
        b.admin(),
        "GET",
        &format!("/accesskeys/{id}"),
        ""
    )
    .status
        == 404));
}

#[test]
fn a_redis_that_lost_its_data_gets_the_nodes_quota_counts_and_usage_back() {
    let mut redis = Redis::start();
    let addr = redis.addr;
    let conf = quota_conf(addr, 2, 6);
    let (a, b) = (Gw::start(&conf), Gw::start(&conf));
    let id = make_q_key(&a);
    assert!(soon(|| keyed(&b, VALUE) == 200));
    for _ in 0..3 {
        assert_eq!(keyed(&a, VALUE), 200);
    }
    // Four of six spent. Redis restarts empty (no persistence).
    let day = today();
    let path = format!("/usageplans/gold/usage?startDate={day}&endDate={day}&keyId={id}");
    let used = |n: &Gw| {
        let r = admin_with(n.admin(), "GET", &path, "");
        (r.status == 200).then(|| r.json()["items"][&id][0]["used"].clone())
    };
    assert!(eventually(Duration::from_secs(5), || used(&a) == Some(json!(4))));
    redis.stop();
    let redis = Redis::start_on(addr);
    // Both nodes see the new epoch and send what they counted: the usage report is whole
    // again, and the quota has two requests left across the fleet, not six.
    assert!(
        eventually(Duration::from_secs(10), || used(&b) == Some(json!(4))),
        "{:?}",
        used(&b)
    );
    assert_eq!(keyed(&a, VALUE), 200);
    assert_eq!(keyed(&b, VALUE), 200);
    assert_eq!(keyed(&a, VALUE), 429);
    assert_eq!(keyed(&b, VALUE), 429);
    // The same loss on connections that never dropped (FLUSHALL, an eviction): the nodes
    // find the epoch gone at their next read, and give the fleet back its counts and keys.
    assert!(eventually(Duration::from_secs(5), || used(&a) == Some(json!(6))));
    redis.cli(&["FLUSHALL"]);
    assert!(
        eventually(Duration::from_secs(10), || used(&a) == Some(json!(6))
            && redis.cli(&["EXISTS", "tollgate:fleet:epoch"]).trim() == "1"),
        "{:?}",
        used(&a)
    );
    assert_eq!(keyed(&a, VALUE), 429);
    assert_eq!(keyed(&b, VALUE), 429);
    // A node that joins now learns the key from the fleet.
    let c = Gw::start(&conf);
    assert!(soon(|| keyed(&c, VALUE) == 429));
}

#[test]
fn nodes_started_from_one_copied_state_directory_count_usage_apart() {
    let redis = Redis::start();
    // A node's store, copied twice (an image baked with it): both copies hold one usage name,
    // and the 4 requests the first node counted today.
    let first = Gw::start(&conf(redis.addr));
    let r = admin_with(
        first.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "u", "value": VALUE, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    for _ in 0..4 {
        assert_eq!(keyed(&first, VALUE), 200);
    }
    let dir = first.stop();
    let copy = || {
        let to = TempDir::new();
        let ok = std::process::Command::new("cp")
            .args([
                "-a",
                &format!("{}/.", dir.0.display()),
                &to.0.display().to_string(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        to
    };
    let (b, c) = (
        Gw::start_in(copy(), &conf(redis.addr)),
        Gw::start_in(copy(), &conf(redis.addr)),
    );
    for _ in 0..3 {
        assert_eq!(keyed(&b, VALUE), 200);
    }
    for _ in 0..2 {
        assert_eq!(keyed(&c, VALUE), 200);
    }
    // One of them finds the name held by the other and takes a new one (after twice the
    // claim's life: a claim its own previous run left would have lapsed by then); the report
    // then counts both, and the first node's 4 once (they came with both copies): 4 + 3 + 2.
    let day = today();
    let path = format!("/usageplans/gold/usage?startDate={day}&endDate={day}&keyId={id}");
    assert!(
        eventually(Duration::from_secs(20), || {
            let r = admin_with(b.admin(), "GET", &path, "");
            r.status == 200 && r.json()["items"][&id][0]["used"] == 9
        }),
        "{}",
        admin_with(b.admin(), "GET", &path, "").text()
    );
}

/// A Redis that asks for a password: every connection (the shards', the control plane's)
/// authenticates with `cluster.password_env`'s; a variable that is not set is refused at load,
/// naming it.
#[test]
fn a_redis_with_a_password_is_authenticated_to() {
    let redis = Redis::with_password("s3cret pass");
    // Set before the gateway starts its threads, under a name no other test reads.
    std::env::set_var("TOLLGATE_TEST_REDIS_PW", "s3cret pass");
    let toml = |env: &str| {
        Cfg::new()
            .api("shop")
            .route(
                "GET /keyed",
                "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
            )
            .extra(format!(
                "[cluster]\nredis = \"redis://{}\"\nnodes = 1\npassword_env = \"{env}\"\n\n[[usage_plans]]\nname = \"gold\"\nstages = [\"shop/prod\"]\nquota = {{ limit = 2, period = \"day\" }}\n",
                redis.addr
            ))
            .toml()
    };
    let (ok, text) = check_config(&toml("TOLLGATE_TEST_NO_SUCH_VAR"));
    assert!(!ok);
    assert!(
        text.contains(
            "cluster.password_env: the environment variable TOLLGATE_TEST_NO_SUCH_VAR is not set"
        ),
        "{text}"
    );
    // Credentials in the URL are refused (they would be in the file, and in `GET /config`),
    // without echoing them.
    let (ok, text) =
        check_config(&toml("TOLLGATE_TEST_REDIS_PW").replace("redis://", "redis://:s3cret@"));
    assert!(!ok);
    assert!(text.contains("cluster.password_env names"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    let g = Gw::start(&toml("TOLLGATE_TEST_REDIS_PW"));
    // An admin write goes through Redis (503 were it unreachable).
    make_q_key(&g);
    // The shards' quota calls too: the fleet's counter holds what they admitted.
    assert!(soon(|| keyed(&g, VALUE) == 200));
    assert_eq!(keyed(&g, VALUE), 200);
    assert_eq!(keyed(&g, VALUE), 429);
    let keys = redis.cli(&["-a", "s3cret pass", "--no-auth-warning", "KEYS", "*quota*"]);
    assert!(!keys.trim().is_empty(), "no quota counter in Redis");
    // A password Redis refuses is an outage: nothing was sent, so nothing was changed.
    std::env::set_var("TOLLGATE_TEST_REDIS_PW_WRONG", "not it");
    let wrong = Gw::start(&toml("TOLLGATE_TEST_REDIS_PW_WRONG"));
    let r = admin_with(
        wrong.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "w", "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("cannot be reached (authenticating to Redis"),
        "{}",
        r.text()
    );
    let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
    let fallbacks: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tollgate_redis_fallbacks_total"))
        .collect();
    assert!(
        !fallbacks.is_empty() && fallbacks.iter().all(|l| l.ends_with(" 0")),
        "{fallbacks:?}"
    );
}

/// Admin writes on one node go to the fleet one at a time: two at once planned from the same
/// copy undid each other (a key disabled by one call enabled again by another that set its
/// description) and took one key value twice.
#[test]
fn concurrent_key_writes_on_one_node_neither_undo_each_other_nor_share_a_value() {
    let redis = Redis::start();
    let g = Gw::start(&conf(redis.addr));
    let admin = g.admin();
    let made = admin_with(
        admin,
        "POST",
        "/apikeys",
        &json!({"name": "k", "value": VALUE, "plan": "gold"}).to_string(),
    );
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["id"].as_str().unwrap().to_string();
    let path = format!("/apikeys/{id}");
    for round in 0..12 {
        let both = [
            r#"{"enabled": false}"#.to_string(),
            json!({ "description": format!("round {round}") }).to_string(),
        ];
        let answers: Vec<u16> = std::thread::scope(|s| {
            let calls: Vec<_> = both
                .iter()
                .map(|body| s.spawn(|| admin_with(admin, "PATCH", &path, body).status))
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert_eq!(answers, [200, 200], "round {round}");
        // Both (the node applies its own writes at once; its sync, reading older entries
        // meanwhile, does not undo them: the second write was planned from a copy an older
        // entry had rolled back, once in a CI run).
        let want = (json!(false), json!(format!("round {round}")));
        let mut now = serde_json::Value::Null;
        let both = soon(|| {
            now = admin_with(admin, "GET", &path, "").json();
            (now["enabled"].clone(), now["description"].clone()) == want
        });
        assert!(both, "round {round}: {now}");
        assert_eq!(keyed(&g, VALUE), 403, "round {round}");
        let r = admin_with(admin, "PATCH", &path, r#"{"enabled": true}"#);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for round in 0..6 {
        let value = format!("shared-value-{round}-0123456789abcdef");
        let body = json!({"name": "t", "value": value, "plan": "gold"}).to_string();
        let mut answers: Vec<u16> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..4)
                .map(|_| s.spawn(|| admin_with(admin, "POST", "/apikeys", &body).status))
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        answers.sort();
        assert_eq!(answers, [201, 409, 409, 409], "round {round}");
    }
}

/// Key writes planned from a node's copy that the fleet no longer holds are refused (409),
/// not made: a description set on one node undid another node's disable (the key was
/// served again), a delete was undone. A new key whose value another node's key has taken
/// is refused too (both were made, each with its own quota). Another node's change is made
/// here in Redis directly, as a node writes it, so that this node's copy stays the older.
#[test]
fn key_writes_planned_from_a_stale_copy_are_refused() {
    use sha2::Digest;
    const OBJECTS: &str = "tollgate:fleet:objects";
    let redis = Redis::start();
    let (a, b) = (Gw::start(&conf(redis.addr)), Gw::start(&conf(redis.addr)));
    let r = admin_with(
        a.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "partner", "value": VALUE, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(soon(|| keyed(&b, VALUE) == 200), "B has the key");
    let path = format!("/apikeys/{id}");
    let field = format!("key/{id}");
    let mut held: serde_json::Value =
        serde_json::from_str(redis.cli(&["HGET", OBJECTS, &field]).trim()).unwrap();
    held["enabled"] = json!(false);
    redis.cli(&["HSET", OBJECTS, &field, &held.to_string()]);
    let r = admin_with(b.admin(), "PATCH", &path, r#"{"description": "x"}"#);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("changed on another node"), "{}", r.text());
    assert_eq!(admin_with(b.admin(), "DELETE", &path, "").status, 409);
    let now: serde_json::Value =
        serde_json::from_str(redis.cli(&["HGET", OBJECTS, &field]).trim()).unwrap();
    assert_eq!(now, held);
    redis.cli(&["HDEL", OBJECTS, &field]);
    let r = admin_with(b.admin(), "PATCH", &path, r#"{"enabled": true}"#);
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("deleted on another node"), "{}", r.text());
    assert_eq!(redis.cli(&["HEXISTS", OBJECTS, &field]).trim(), "0");
    // A value another node's key has taken.
    let value = "taken-elsewhere-0123456789abcdef";
    let hash: String = sha2::Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    redis.cli(&["HSET", OBJECTS, &format!("keyhash/{hash}"), "elsewhere"]);
    let r = admin_with(
        a.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "t", "value": value, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("another key already has this value"),
        "{}",
        r.text()
    );
    assert_eq!(keyed(&a, value), 403);
    // A key made here names its value in the fleet, and its delete frees it.
    let other = "fresh-value-0123456789abcdef";
    let r = admin_with(
        a.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "f", "value": other, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let fid = r.json()["id"].as_str().unwrap().to_string();
    let ohash: String = sha2::Sha256::digest(other.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let hfield = format!("keyhash/{ohash}");
    assert_eq!(redis.cli(&["HGET", OBJECTS, &hfield]).trim(), fid);
    let r = admin_with(a.admin(), "DELETE", &format!("/apikeys/{fid}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(redis.cli(&["HEXISTS", OBJECTS, &hfield]).trim(), "0");
}

/// A key another node made with the value of a key in this node's file (the nodes' files
/// differ) does not override the file's key here, and does not stop this node reloading or
/// starting again (it overrode a disabled file key, and the next reload or restart was
/// refused: one admin call took a node out).
#[test]
fn a_fleet_key_that_clashes_with_a_nodes_file_neither_overrides_it_nor_stops_the_node() {
    let redis = Redis::start();
    let file_key = format!(
        "{}\n[[api_keys]]\nname = \"partner\"\nvalue = \"{VALUE}\"\nplan = \"gold\"\nenabled = false\n",
        conf(redis.addr)
    );
    let a = Gw::start(&conf(redis.addr));
    let b = Gw::start(&file_key);
    assert_eq!(keyed(&b, VALUE), 403);
    let r = admin_with(
        a.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "partner", "value": VALUE, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(keyed(&a, VALUE), 200);
    // B has it (listed), and serves its own file's key, disabled.
    assert!(soon(|| admin_with(
        b.admin(),
        "GET",
        &format!("/apikeys/{id}"),
        ""
    )
    .status
        == 200));
    assert_eq!(keyed(&b, VALUE), 403);
    let r = admin_with(b.admin(), "POST", "/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(keyed(&b, VALUE), 403);
    let dir = b.stop();
    let b = Gw::start_in(dir, &file_key);
    assert_eq!(keyed(&b, VALUE), 403);
    assert_eq!(keyed(&a, VALUE), 200);
}

/// A node Redis told a key's quota is spent admits nothing more in that period, whatever
/// Redis says later, until an admin sets the count: a counter Redis lost (restarted empty,
/// evicted) granted a second whole quota before the nodes' counts came back. The counter is
/// deleted here alone (the epoch kept: no node restores anything), and requests go on past
/// the second for which a shard remembers the refusal.
#[test]
fn a_spent_quota_stays_spent_when_redis_loses_its_counter() {
    let redis = Redis::start();
    let conf = quota_conf(redis.addr, 2, 2);
    let (a, b) = (Gw::start(&conf), Gw::start(&conf));
    let id = make_q_key(&a);
    assert!(soon(|| keyed(&b, VALUE) == 200));
    assert_eq!(keyed(&a, VALUE), 200);
    assert_eq!(keyed(&a, VALUE), 429);
    assert_eq!(keyed(&b, VALUE), 429);
    let counters = redis.cli(&["KEYS", "tollgate:quota:*"]);
    let counters: Vec<&str> = counters.split_whitespace().collect();
    assert_eq!(counters.len(), 1, "{counters:?}");
    redis.cli(&["DEL", counters[0]]);
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        assert_eq!(keyed(&a, VALUE), 429);
        assert_eq!(keyed(&b, VALUE), 429);
    }
    // An admin's reset is the way back.
    let r = admin_with(
        a.admin(),
        "POST",
        &format!("/usageplans/gold/keys/{id}/quota/reset"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(keyed(&a, VALUE), 200);
    assert!(soon(|| keyed(&b, VALUE) == 200));
}

/// The fleet's usage report gives each day what its quota period had left at its end (every
/// day said the current period's remaining), as a node alone reports it. Yesterday's count is
/// put in the fleet's daily hash as a node sends it.
#[test]
fn fleet_usage_reports_say_each_days_remaining() {
    let redis = Redis::start();
    let conf = quota_conf(redis.addr, 1, 5);
    let a = Gw::start(&conf);
    let id = make_q_key(&a);
    let (yesterday, today) = (day_before(1), today());
    redis.cli(&[
        "HSET",
        &format!("tollgate:usage:gold:{yesterday}"),
        &format!("{id}|elsewhere"),
        "5",
    ]);
    assert_eq!(keyed(&a, VALUE), 200);
    let path = format!("/usageplans/gold/usage?startDate={yesterday}&endDate={today}&keyId={id}");
    let mut v = serde_json::Value::Null;
    let reported = eventually(Duration::from_secs(10), || {
        v = admin_with(a.admin(), "GET", &path, "").json();
        v["values"][&id] == json!([[5, 0], [1, 4]])
    });
    assert!(reported, "{v}");
}

/// A key written to the fleet by a version before values were named (no `keyhash/` field)
/// gets its field when a node reads the fleet whole, so its value cannot be made again by
/// two nodes at once.
#[test]
fn keys_written_before_values_were_named_get_their_value_named() {
    use sha2::Digest;
    let redis = Redis::start();
    let hash: String = sha2::Sha256::digest(VALUE.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let old = json!({"id": "oldkey0001", "name": "old", "hash": hash, "description": "",
        "enabled": true, "plans": ["gold"], "created": 1});
    redis.cli(&[
        "HSET",
        "tollgate:fleet:objects",
        "key/oldkey0001",
        &old.to_string(),
    ]);
    let a = Gw::start(&conf(redis.addr));
    assert!(soon(|| keyed(&a, VALUE) == 200));
    assert_eq!(
        redis
            .cli(&["HGET", "tollgate:fleet:objects", &format!("keyhash/{hash}")])
            .trim(),
        "oldkey0001"
    );
}
