//! Fleet-wide limits and quotas through a real `redis-server` (installed by `scripts/test.sh`):
//! two gateway processes sharing one limit admit, together, what one would; a quota is counted across
//! both; and when Redis goes away each node falls back as `on_redis_error` says.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const KEY: &str = "fleet-0123456789abcdef0123";

fn conf(redis: SocketAddr, on_error: &str, rate: u64, burst: u64) -> String {
    Cfg::new()
        .workers(2)
        .no_admin()
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
rate = {rate}
burst = {burst}

[cluster]
redis = "redis://{redis}"
nodes = 2
on_redis_error = "{on_error}"

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

/// Offers load to every address from two threads each for `for_`, from the moment every
/// thread is connected; returns (accepted, refused, seconds from that moment to the last
/// answer).
fn hammer(addrs: &[SocketAddr], for_: Duration) -> (usize, usize, f64) {
    let ok = Arc::new(AtomicUsize::new(0));
    let no = Arc::new(AtomicUsize::new(0));
    let targets: Vec<SocketAddr> = addrs.iter().flat_map(|a| [*a, *a]).collect();
    let ready = Arc::new(std::sync::Barrier::new(targets.len() + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let threads: Vec<_> = targets
        .into_iter()
        .map(|a| {
            let (ok, no, ready, start) = (ok.clone(), no.clone(), ready.clone(), start.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(a);
                ready.wait();
                let until = *start.get_or_init(Instant::now) + for_;
                while Instant::now() < until {
                    match c.request(b"GET /open HTTP/1.1\r\nHost: h\r\n\r\n").status {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        429 => no.fetch_add(1, Ordering::Relaxed),
                        s => panic!("unexpected status {s}"),
                    };
                }
            })
        })
        .collect();
    ready.wait();
    let t0 = *start.get_or_init(Instant::now);
    for t in threads {
        t.join().unwrap();
    }
    (
        ok.load(Ordering::Relaxed),
        no.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    )
}

/// A `tollgate` process on `toml`, in its own directory; returns it and its address.
fn process(toml: &str) -> (Proc, SocketAddr, TempDir) {
    let dir = TempDir::new();
    let path = dir.0.join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let p = Proc::start(&path, &[]);
    let addr = p.wait_for("listening")["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (p, addr, dir)
}

#[test]
fn two_gateway_processes_share_one_limit_within_five_percent() {
    let redis = Redis::start();
    let (_a, a, _da) = process(&conf(redis.addr, "local", 100, 50));
    let (_b, b, _db) = process(&conf(redis.addr, "local", 100, 50));
    // One request each first: shards running and connected to Redis before the window opens
    // (a full bucket accrues nothing, so a slow start would look like lost tokens).
    for addr in [a, b] {
        assert_eq!(get(addr, "/open").status, 200);
    }
    let (ok, no, secs) = hammer(&[a, b], Duration::from_secs(2));
    let allowed = 50.0 + 100.0 * secs;
    let ratio = ok as f64 / allowed;
    eprintln!("fleet limit: accepted {ok}, refused {no}, allowed {allowed:.0} over {secs:.2} s: ratio {ratio:.3}");
    assert!(no > 0, "nothing was refused: the limit was not reached");
    // Each node alone would admit about as much: twice that would mean no sharing.
    assert!(
        (0.95..=1.05).contains(&ratio),
        "accepted {ok} of {allowed:.0} allowed over {secs:.2} s (ratio {ratio:.3})"
    );
}

fn keyed(addr: SocketAddr) -> Resp {
    Client::connect(addr).request(
        format!("GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
}

#[test]
fn a_quota_is_counted_across_the_fleet() {
    let redis = Redis::start();
    let a = Gw::start(&conf(redis.addr, "local", 100_000, 100_000));
    let b = Gw::start(&conf(redis.addr, "local", 100_000, 100_000));
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(keyed(gw.addr()).status, 200, "request {i}");
    }
    for gw in [&a, &b] {
        let r = keyed(gw.addr());
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["message"], "Limit Exceeded");
    }
}

#[test]
fn without_redis_nodes_fall_back_as_configured() {
    let mut redis = Redis::start();
    let local = Gw::start(&conf(redis.addr, "local", 100_000, 100_000));
    let deny = Gw::start(&conf(redis.addr, "deny", 100_000, 100_000));
    assert_eq!(get(local.addr(), "/open").status, 200);
    assert_eq!(get(deny.addr(), "/open").status, 200);
    redis.stop();
    // Leases already held may serve a few more; after that the fallback decides.
    // Every one of 200 requests is sent; the last answer is the steady state.
    let tail = |addr| (0..200).fold(0, |_, _| get(addr, "/open").status);
    assert_eq!(
        tail(local.addr()),
        200,
        "local fallback keeps serving the node's share"
    );
    assert_eq!(tail(deny.addr()), 429, "deny refuses while Redis is out");
    // Quotas follow the same rule.
    assert_eq!(keyed(local.addr()).status, 200);
    assert_eq!(keyed(deny.addr()).status, 429);
}

/// A Redis that hangs (SIGSTOP) costs one request the `cluster.timeout`; the rest fall back at
/// once, and once Redis answers again the shard goes back to it.
#[test]
fn a_hanging_redis_trips_the_circuit_and_requests_do_not_wait() {
    let redis = Redis::start();
    let toml = Cfg::new()
        .api("shop")
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
        )
        .extra(format!(
            r#"
[cluster]
redis = "redis://{}"
nodes = 1
timeout = "500ms"
on_redis_error = "local"

[[usage_plans]]
name = "gold"
stages = ["shop/prod"]
quota = {{ limit = 100000, period = "day" }}

[[api_keys]]
name = "fleet"
value = "{KEY}"
plan = "gold"
"#,
            redis.addr
        ))
        .toml();
    // With one node and one shard, the quota is leased 100 requests at a time: every
    // hundredth request asks Redis. The counter there shows who counted.
    let gw = Gw::start(&toml);
    let mut c = Client::connect(gw.addr());
    let mut keyed = || {
        let t = Instant::now();
        let r = c.request(
            format!("GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: {KEY}\r\n\r\n").as_bytes(),
        );
        (r.status, t.elapsed())
    };
    assert_eq!(keyed().0, 200);
    let counted = || -> u64 {
        let keys = redis.cli(&["--raw", "KEYS", "tollgate:quota:*"]);
        keys.lines()
            .map(|k| redis.cli(&["GET", k]).parse::<u64>().unwrap_or(0))
            .sum()
    };
    assert_eq!(counted(), 100, "the first lease came from Redis");
    redis.pause(true);
    // 500 requests need five new leases: the first call waits out the timeout, the rest
    // fall back at once.
    let mut slow = 0;
    for i in 0..500 {
        let (status, took) = keyed();
        assert_eq!(status, 200, "request {i}");
        if took >= Duration::from_millis(400) {
            slow += 1;
        }
    }
    assert!(slow <= 1, "{slow} requests waited for the paused Redis");
    redis.pause(false);
    // Only the call that was in flight when Redis hung is counted there (it runs when Redis
    // resumes); the other leases were not asked for.
    assert!(counted() <= 200, "{} counted in Redis", counted());
    // Once a probe gets an answer, leases come from Redis again.
    assert!(
        eventually(Duration::from_secs(10), || {
            for _ in 0..100 {
                keyed();
            }
            counted() > 200
        }),
        "the shard never went back to Redis"
    );
}
