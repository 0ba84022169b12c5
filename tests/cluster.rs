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
    let addr = p.logged_addr("listening");
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
    // Quotas follow the same rule; `deny` says "try again shortly", not that the quota is
    // spent until the period ends.
    assert_eq!(keyed(local.addr()).status, 200);
    let r = keyed(deny.addr());
    assert_eq!(
        (
            r.status,
            r.json()["message"].as_str(),
            r.header("retry-after")
        ),
        (429, Some("Too Many Requests"), Some("1"))
    );
}

#[test]
fn a_spent_fleet_quota_stays_spent_while_redis_is_out() {
    let mut redis = Redis::start();
    let a = Gw::start(&conf(redis.addr, "local", 100_000, 100_000));
    let b = Gw::start(&conf(redis.addr, "local", 100_000, 100_000));
    for i in 0..10 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(keyed(gw.addr()).status, 200, "request {i}");
    }
    // Both nodes (each shard) hear from Redis that it is spent.
    for gw in [&a, &b] {
        for _ in 0..4 {
            assert_eq!(keyed(gw.addr()).json()["message"], "Limit Exceeded");
        }
    }
    redis.stop();
    // Without Redis a node grants at most its share, and nothing of a quota it knows spent.
    for gw in [&a, &b] {
        for i in 0..10 {
            let r = keyed(gw.addr());
            assert_eq!(
                (r.status, r.json()["message"].as_str()),
                (429, Some("Limit Exceeded")),
                "request {i}"
            );
        }
    }
    // A reload that raises the plan's quota makes it not spent: the node grants its share
    // of the new one (15 of 30 over two nodes; what Redis granted is Redis's count).
    a.rewrite(&conf(redis.addr, "local", 100_000, 100_000).replace("limit = 10,", "limit = 30,"));
    a.gw.as_ref().unwrap().reload().expect("reload");
    let granted = (0..20).filter(|_| keyed(a.addr()).status == 200).count();
    assert_eq!(granted, 15);
}

#[test]
fn a_node_without_redis_grants_only_its_share_of_a_quota() {
    let mut redis = Redis::start();
    let a = Gw::start(&conf(redis.addr, "local", 100_000, 100_000));
    assert_eq!(get(a.addr(), "/open").status, 200);
    redis.stop();
    // Two nodes: this one's share of 10 is 5.
    let granted = (0..10).filter(|_| keyed(a.addr()).status == 200).count();
    assert_eq!(granted, 5);
}

#[test]
fn a_redis_that_closed_idle_connections_is_no_outage() {
    let redis = Redis::start();
    // Quota 10 over 2 nodes and 2 shards: leased one request at a time, so every keyed
    // request asks Redis, on a pooled connection once there is one.
    let gw = Gw::start(&conf(redis.addr, "deny", 100_000, 100_000));
    for _ in 0..2 {
        assert_eq!(keyed(gw.addr()).status, 200);
    }
    // What Redis's `timeout`, a proxy's idle limit or a restart does to pooled connections.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    for i in 0..4 {
        let r = keyed(gw.addr());
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}

/// A fake Redis that answers every command with `reply`.
fn fake_redis(reply: &'static [u8]) -> SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut b = [0u8; 4096];
                while matches!(c.read(&mut b), Ok(n) if n > 0) {
                    if c.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn replies_no_redis_sends_are_an_outage_not_a_crash() {
    for reply in [
        &b"*576460752303423488\r\n"[..],
        b"*9223372036854775807\r\n",
        b"*-1\r\n",
        b"$5\r\nhello\r\n",
    ] {
        let fake = fake_redis(reply);
        let local = Gw::start(&conf(fake, "local", 100_000, 100_000));
        let deny = Gw::start(&conf(fake, "deny", 100_000, 100_000));
        let what = String::from_utf8_lossy(reply);
        for _ in 0..3 {
            assert_eq!(keyed(local.addr()).status, 200, "{what}");
            assert_eq!(get(local.addr(), "/open").status, 200, "{what}");
            assert_eq!(keyed(deny.addr()).status, 429, "{what}");
        }
    }
    // A reply that never ends is cut off, not buffered: an answer still comes.
    let endless: &'static [u8] = Box::leak(vec![b'a'; 64 << 10].into_boxed_slice());
    let fake = fake_redis(endless);
    let local = Gw::start(&conf(fake, "local", 100_000, 100_000));
    assert_eq!(keyed(local.addr()).status, 200);
}

/// A reload of `cluster.timeout` applies to the shards' calls to Redis (their pool kept the
/// one it was made with).
#[test]
fn a_reloaded_redis_timeout_applies() {
    let redis = Redis::start();
    let toml = |timeout: &str| {
        Cfg::new()
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
timeout = "{timeout}"
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
            .toml()
    };
    let gw = Gw::start(&toml("20s"));
    let mut c = Client::connect(gw.addr());
    let mut keyed = || {
        let t = Instant::now();
        let r = c.request(
            format!("GET /keyed HTTP/1.1\r\nHost: h\r\nx-api-key: {KEY}\r\n\r\n").as_bytes(),
        );
        (r.status, t.elapsed())
    };
    assert_eq!(keyed().0, 200);
    gw.rewrite(&toml("200ms"));
    assert_eq!(
        admin(gw.admin(), "POST", "/reload", Some(TOKEN)).status,
        200
    );
    redis.pause(true);
    // The next lease is asked for within 100 requests: it waits 200 ms, not 20 s.
    let mut longest = Duration::ZERO;
    for _ in 0..150 {
        let (status, took) = keyed();
        assert_eq!(status, 200);
        longest = longest.max(took);
    }
    redis.pause(false);
    assert!(
        longest >= Duration::from_millis(150),
        "no request asked Redis: {longest:?}"
    );
    assert!(
        longest < Duration::from_secs(10),
        "the old timeout held: {longest:?}"
    );
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

/// The fleet-wide take keeps a rate's interval with its fraction: a rate of 700,000 a second
/// is 1.43 µs apart, which whole microseconds made 1 (admitting 37 % over; 2,000,000 a second
/// was halved). Taking the whole burst at once leaves the bucket full again only after
/// `burst / rate`: 100,000 / 700,000 s.
#[test]
fn fleet_rates_keep_their_fraction_of_a_microsecond() {
    let redis = Redis::start();
    for (rate, burst) in [(700_000u64, 100_000u64), (2_000_000, 100_000), (3, 7)] {
        let (script, args) = tollgate::internals::fleet_take_command(rate, burst, burst);
        let key = format!("tollgate:test-{rate}");
        let mut cli = vec!["EVAL", script, "1", key.as_str()];
        cli.extend(args.iter().map(String::as_str));
        let out = redis.cli(&cli);
        let nums: Vec<f64> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
        assert_eq!(nums[0], burst as f64, "{rate}: {out}");
        // µs until full again: burst / rate seconds, to the µs.
        let want = burst as f64 * 1e6 / rate as f64;
        assert!(
            (nums[2] - want).abs() <= 2.0,
            "{rate}: {} against {want}",
            nums[2]
        );
    }
}
