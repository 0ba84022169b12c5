//! The fleet's Redis over TLS (`cluster.redis = "rediss://..."`, a real `redis-server` with
//! no plain port): nodes share a quota through it (the shards' leases) and a key made on one
//! node serves on the other (the control plane's change stream); a Redis whose certificate
//! is not trusted, or names another host, is an outage (`on_redis_error` decides); and the
//! settings that cannot work are refused at load, naming the key.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::certs::{write_pair, Ca};
use common::*;
use serde_json::json;

const KEY: &str = "fleet-tls-0123456789abcdef";

/// A TLS-only Redis whose certificate names `redis.test`, signed by a CA written to
/// `dir/ca.pem`.
fn tls_redis(dir: &TempDir) -> Redis {
    let ca = Ca::new();
    let (cert, key, _) = ca.leaf(&["redis.test"], false);
    write_pair(dir, "redis", &cert, &key);
    std::fs::write(dir.0.join("ca.pem"), ca.cert.pem()).unwrap();
    Redis::with_tls(
        &dir.0.join("redis.pem"),
        &dir.0.join("redis.key"),
        &dir.0.join("ca.pem"),
    )
}

fn conf(redis: SocketAddr, tls: &str) -> String {
    Cfg::new()
        .api("shop")
        .route(
            "GET /open",
            r#"integration = { type = "mock", body = "open" }"#,
        )
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
        )
        .extra(format!(
            r#"
[throttle]
rate = 100000
burst = 100000

[cluster]
redis = "rediss://{redis}"
nodes = 2
on_redis_error = "deny"
tls = {tls}

[[usage_plans]]
name = "gold"
stages = ["shop/prod"]
quota = {{ limit = 10, period = "day" }}

[[api_keys]]
name = "fleet"
value = "{KEY}"
plan = "gold"
"#
        ))
        .toml()
}

fn keyed(g: &Gw, key: &str) -> Resp {
    Client::connect(g.addr()).request(
        format!("GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

#[test]
fn a_fleet_shares_quotas_and_keys_through_redis_over_tls() {
    let dir = TempDir::new();
    let redis = tls_redis(&dir);
    let tls = format!(
        "{{ ca = \"{}\", server_name = \"redis.test\" }}",
        dir.0.join("ca.pem").display()
    );
    let (a, b) = (
        Gw::start(&conf(redis.addr, &tls)),
        Gw::start(&conf(redis.addr, &tls)),
    );
    // Ten for the fleet, taken on both nodes; then both refuse.
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(keyed(gw, KEY).status, 200, "request {i}");
    }
    for gw in [&a, &b] {
        let r = keyed(gw, KEY);
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["message"], "Limit Exceeded");
    }
    // A key made on A reaches B through the fleet's change stream.
    let made = "fleet-tls-made-on-a-0123456789";
    let r = admin_with(
        a.admin(),
        "POST",
        "/apikeys",
        &json!({"name": "partner", "value": made, "plan": "gold"}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(eventually(Duration::from_secs(10), || keyed(&b, made)
        .status
        == 200));
}

#[test]
fn a_redis_not_trusted_or_named_otherwise_is_an_outage() {
    let dir = TempDir::new();
    let redis = tls_redis(&dir);
    // Another CA's certificate: the handshake fails, Redis counts as out, `deny` refuses
    // what a fleet-wide limit would have to allow.
    let other = TempDir::new();
    std::fs::write(other.0.join("ca.pem"), Ca::new().cert.pem()).unwrap();
    let untrusted = Gw::start(&conf(
        redis.addr,
        &format!(
            "{{ ca = \"{}\", server_name = \"redis.test\" }}",
            other.0.join("ca.pem").display()
        ),
    ));
    let misnamed = Gw::start(&conf(
        redis.addr,
        &format!(
            "{{ ca = \"{}\", server_name = \"cache.test\" }}",
            dir.0.join("ca.pem").display()
        ),
    ));
    let trusted = Gw::start(&conf(
        redis.addr,
        &format!(
            "{{ ca = \"{}\", server_name = \"redis.test\" }}",
            dir.0.join("ca.pem").display()
        ),
    ));
    for g in [&untrusted, &misnamed] {
        let r = get(g.addr(), "/open");
        assert_eq!(
            (r.status, r.json()["message"].as_str()),
            (429, Some("Too Many Requests"))
        );
    }
    assert_eq!(get(trusted.addr(), "/open").status, 200);
}

fn refused(toml: &str, want: &str) {
    let (ok, text) = check_config(toml);
    assert!(!ok, "loaded: {toml}");
    assert!(text.contains(want), "{want:?} not in: {text}");
}

#[test]
fn tls_settings_that_cannot_work_are_refused_by_key() {
    let cluster = |c: &str| Cfg::new().extra(format!("[cluster]\n{c}\n")).toml();
    refused(
        &cluster("redis = \"redis://127.0.0.1:6379\"\ntls = { server_name = \"r.test\" }"),
        "cluster.redis = \"redis://127.0.0.1:6379\" is not valid: expected \"rediss://HOST:PORT\" with cluster.tls",
    );
    refused(
        &cluster("sentinels = [\"127.0.0.1:26379\"]\nsentinel_master = \"m\"\ntls = {}"),
        "cluster.tls: is not supported with cluster.sentinels yet",
    );
    refused(
        &cluster("redis = \"rediss://127.0.0.1:6379\"\ntls = { cert = \"c.pem\" }"),
        "cluster.tls: a client certificate needs both cert and key",
    );
    refused(
        &cluster("redis = \"rediss://127.0.0.1:6379\"\ntls = { ca = \"/nonexistent/ca.pem\" }"),
        "cluster.tls: ",
    );
    refused(
        &cluster("redis = \"rediss://127.0.0.1:6379\"\ntls = { server_name = \"a b\" }"),
        "cluster.tls.server_name = \"a b\" is not valid",
    );
    refused(
        &cluster("redis = \"rediss://127.0.0.1:6379\"\ntls = { sni = \"x\" }"),
        "sni",
    );
    // Credentials in the URL are refused without echoing them.
    let (ok, text) = check_config(&cluster(
        "redis = \"rediss://u:hunter2secret@127.0.0.1:6380\"",
    ));
    assert!(!ok && text.contains("cluster.password_env names"), "{text}");
    assert!(!text.contains("hunter2secret"), "{text}");
    // The address alone: verified as the address (a certificate can hold an IP).
    let (ok, text) = check_config(&cluster("redis = \"rediss://127.0.0.1:6379\""));
    assert!(ok, "{text}");
}
