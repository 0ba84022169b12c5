//! A fleet behind Redis Sentinel (`cluster.sentinels`): the nodes find the primary through a
//! real Sentinel, and when the primary dies and the Sentinel promotes its replica, they move
//! to it — keys made before the failover keep working, changes made after it reach every
//! node.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;

fn conf(sentinel: SocketAddr) -> String {
    Cfg::new()
        .api("shop")
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
        )
        .extra(format!(
            r#"
[cluster]
sentinels = ["{sentinel}"]
sentinel_master = "tg"
nodes = 2

[[usage_plans]]
name = "gold"
stages = ["shop/prod"]
"#
        ))
        .toml()
}

fn keyed(g: &Gw, key: &str) -> u16 {
    let mut c = Client::connect(g.addr());
    c.request(format!("GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: {key}\r\n\r\n").as_bytes())
        .status
}

fn create(g: &Gw, name: &str, value: &str) -> u16 {
    admin_with(
        g.admin(),
        "POST",
        "/apikeys",
        &json!({"name": name, "value": value, "plan": "gold"}).to_string(),
    )
    .status
}

const BEFORE: &str = "sentinel-key-before-0123456789";
const AFTER: &str = "sentinel-key-after-0123456789a";

#[test]
fn the_fleet_follows_a_sentinel_failover() {
    let dir = TempDir::new();
    let mut primary = Redis::start();
    let replica = Redis::replica_of(primary.addr);
    let sentinel = Redis::sentinel(primary.addr, "tg", &dir.0);
    // The Sentinel learns of the replica from the primary.
    assert!(
        eventually(Duration::from_secs(15), || sentinel
            .cli(&["sentinel", "replicas", "tg"])
            .contains(&replica.addr.port().to_string())),
        "the Sentinel did not find the replica"
    );
    let (a, b) = (
        Gw::start(&conf(sentinel.addr)),
        Gw::start(&conf(sentinel.addr)),
    );
    // Found through the Sentinel: a key made on A serves on B.
    assert!(eventually(Duration::from_secs(5), || create(
        &a, "before", BEFORE
    ) == 201));
    assert!(eventually(Duration::from_secs(3), || keyed(&b, BEFORE) == 200));
    // Replicated before the primary dies (the key, and its value's field).
    assert!(eventually(Duration::from_secs(5), || replica
        .cli(&["hlen", "tollgate:fleet:objects"])
        == "2"));

    primary.stop();
    // The Sentinel promotes the replica; the nodes move to it and writes work again.
    assert!(
        eventually(Duration::from_secs(30), || create(&b, "after", AFTER)
            == 201),
        "no write succeeded after the failover"
    );
    assert_eq!(
        sentinel
            .cli(&["sentinel", "get-master-addr-by-name", "tg"])
            .lines()
            .last(),
        Some(replica.addr.port().to_string().as_str())
    );
    assert!(eventually(Duration::from_secs(5), || keyed(&a, AFTER) == 200));
    assert_eq!(keyed(&b, AFTER), 200);
    assert_eq!(keyed(&a, BEFORE), 200);
    assert_eq!(replica.cli(&["hlen", "tollgate:fleet:objects"]), "4");
    let listed = admin_with(a.admin(), "GET", "/apikeys", "");
    assert!(eventually(Duration::from_secs(5), || admin_with(
        a.admin(),
        "GET",
        "/apikeys",
        ""
    )
    .header("x-tollgate-fleet")
    .is_none()));
    assert_eq!(listed.status, 200);
}
