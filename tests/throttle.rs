//! Throttling, API keys, usage plans and quotas, end to end: what a client sees (429 with
//! Retry-After and RateLimit-* headers, 403 for bad keys), the admin API for keys and usage,
//! and state that survives a restart.

mod common;

use std::time::Duration;

use common::*;

const ACME: &str = "acme-0123456789abcdef0123";
const BETA: &str = "beta-0123456789abcdef0123";
const OFF: &str = "off0-0123456789abcdef0123";
const DEV: &str = "devk-0123456789abcdef0123";

/// API "shop": stages prod (at ""), dev and slow, and the keys and plans the tests use.
fn conf() -> Cfg {
    Cfg::new()
        .workers(2)
        .api("shop")
        .stage("dev", "")
        .stage("slow", "throttle = { rate = 1, burst = 3 }")
        .route("GET /open", r#"integration = { type = "mock", body = "open" }"#)
        .route(
            "GET /limited",
            "throttle = { rate = 1, burst = 5 }\nintegration = { type = \"mock\", body = \"limited\" }",
        )
        .route(
            "GET /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
        )
        .route(
            "POST /keyed",
            "api_key_required = true\nintegration = { type = \"mock\", body = \"posted\" }",
        )
        .extra(format!(
            r#"
[throttle]
rate = 100000
burst = 100000

[[usage_plans]]
name = "gold"
stages = ["shop/prod"]
throttle = {{ rate = 1, burst = 4 }}
route_throttle = {{ "POST /keyed" = {{ rate = 1, burst = 2 }} }}

[[usage_plans]]
name = "tiny"
stages = ["shop/dev"]
quota = {{ limit = 3, period = "day" }}

[[api_keys]]
name = "acme"
value = "{ACME}"
plan = "gold"

[[api_keys]]
name = "beta"
value = "{BETA}"
plan = "gold"

[[api_keys]]
name = "off"
value = "{OFF}"
plan = "gold"
enabled = false

[[api_keys]]
name = "devkey"
value = "{DEV}"
plan = "tiny"
"#
        ))
}

fn keyed(addr: std::net::SocketAddr, method: &str, path: &str, key: Option<&str>) -> Resp {
    let k = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    let body = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    Client::connect(addr).request(
        format!("{method} {path} HTTP/1.1\r\nHost: h\r\n{k}{body}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

#[test]
fn a_route_throttle_accepts_its_burst_then_answers_429() {
    let gw = Gw::start(&conf().toml());
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = get(gw.addr(), "/limited");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
        remaining.push(
            r.header("ratelimit-remaining")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
        assert!(r.header("ratelimit-reset").is_some());
    }
    assert_eq!(remaining.last(), Some(&0), "{remaining:?}");
    let r = get(gw.addr(), "/limited");
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["message"], "Too Many Requests");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    // Reset: until the bucket is full again (five tokens at one a second), not the next token.
    let reset: u64 = r.header("ratelimit-reset").unwrap().parse().unwrap();
    assert!((4..=5).contains(&reset), "{reset}");
    // Other routes are not affected; a route without limits of its own still reports the
    // gateway-wide one.
    let r = get(gw.addr(), "/open");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-limit"), Some("100000"));
}

/// An error on a throttled route (a dead upstream's 502) carries its RateLimit-* as a
/// success does.
#[test]
fn errors_on_throttled_routes_say_their_limits() {
    let dead = closed_port();
    let gw = Gw::start(
        &conf()
            .route(
                "GET /down",
                format!("throttle = {{ rate = 1, burst = 5 }}\nintegration = {{ type = \"http\", uri = \"http://{dead}/x\" }}"),
            )
            .toml(),
    );
    let r = get(gw.addr(), "/down");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("ratelimit-limit"), Some("5"));
    assert_eq!(r.header("ratelimit-remaining"), Some("4"));
}

/// An upstream's own `RateLimit-*` on a throttled route give way to the gateway's: each
/// field once, saying the route's limit.
#[test]
fn an_upstreams_ratelimit_fields_give_way_to_the_gateways() {
    let up = Upstream::start(|_| {
        Action::Raw(
            b"HTTP/1.1 200 OK\r\nRateLimit-Limit: 99\r\nRateLimit-Remaining: 98\r\nRateLimit-Reset: 7\r\nRateLimit-Policy: 99;w=1\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    });
    let gw = Gw::start(
        &conf()
            .route(
                "GET /up",
                format!("throttle = {{ rate = 1, burst = 5 }}\nintegration = {{ type = \"http\", uri = \"http://{}/x\" }}", up.addr),
            )
            .toml(),
    );
    let r = get(gw.addr(), "/up");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers_named("ratelimit-limit"), ["5"]);
    assert_eq!(r.headers_named("ratelimit-remaining"), ["4"]);
    assert_eq!(r.headers_named("ratelimit-reset").len(), 1);
    // A field the gateway does not write passes.
    assert_eq!(r.headers_named("ratelimit-policy"), ["99;w=1"]);
}

/// What the configuration sets stands for the route's `RateLimit-*` (a mock's own fields, a
/// response mapping's), each field once; an upgrade's 101 says the route's, as any answer.
#[test]
fn configured_ratelimit_fields_stand_for_the_routes_and_upgrades_say_theirs() {
    let up = Upstream::start(|_| {
        Action::Raw(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nRateLimit-Limit: 999\r\n\r\n"
                .to_vec(),
        )
    });
    let gw = Gw::start(
        &conf()
            .route(
                "GET /mocked",
                "throttle = { rate = 1, burst = 5 }\nintegration = { type = \"mock\", body = \"m\", headers = { \"RateLimit-Limit\" = \"7\" } }",
            )
            .route(
                "GET /ws",
                format!("throttle = {{ rate = 1, burst = 5 }}\nintegration = {{ type = \"http\", uri = \"http://{}/ws\" }}", up.addr),
            )
            .toml(),
    );
    let r = get(gw.addr(), "/mocked");
    assert_eq!(r.text(), "m");
    assert_eq!(r.headers_named("ratelimit-limit"), ["7"]);
    assert!(
        r.headers_named("ratelimit-remaining").is_empty(),
        "{:?}",
        r.headers
    );
    let mut c = Client::connect(gw.addr());
    c.send(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 101, "{r:?}");
    assert_eq!(r.headers_named("ratelimit-limit"), ["5"]);
    assert_eq!(r.headers_named("ratelimit-remaining"), ["4"]);
}

#[test]
fn stage_limits_are_per_stage() {
    let gw = Gw::start(&conf().toml());
    for _ in 0..3 {
        assert_eq!(get(gw.addr(), "/slow/open").status, 200);
    }
    assert_eq!(get(gw.addr(), "/slow/open").status, 429);
    assert_eq!(get(gw.addr(), "/dev/open").status, 200);
    assert_eq!(get(gw.addr(), "/open").status, 200);
}

#[test]
fn routes_that_require_a_key_refuse_missing_unknown_and_disabled_keys() {
    let gw = Gw::start(&conf().toml());
    for key in [
        None,
        Some("not-a-key-not-a-key-not-a-key"),
        Some(OFF),
        Some(DEV),
    ] {
        let r = keyed(gw.addr(), "GET", "/keyed", key);
        assert_eq!(r.status, 403, "{key:?}");
        assert_eq!(r.json()["message"], "Forbidden");
    }
    assert_eq!(
        keyed(gw.addr(), "GET", "/keyed", Some(ACME)).text(),
        "keyed"
    );
    // The dev stage is covered by "tiny", not "gold".
    assert_eq!(
        keyed(gw.addr(), "GET", "/dev/keyed", Some(ACME)).status,
        403
    );
    assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 200);
    // Two keys, the first good: refused (the upstream would get both and might read the
    // second, never checked).
    let r = keyed(
        gw.addr(),
        "GET",
        "/keyed",
        Some(&format!("{ACME}\r\nx-api-key: {OFF}")),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["message"], "Forbidden");
}

#[test]
fn each_key_has_its_own_plan_bucket_and_route_overrides_apply_first() {
    let gw = Gw::start(&conf().toml());
    // Route override for POST /keyed: burst 2 per key.
    assert_eq!(keyed(gw.addr(), "POST", "/keyed", Some(ACME)).status, 200);
    assert_eq!(keyed(gw.addr(), "POST", "/keyed", Some(ACME)).status, 200);
    let r = keyed(gw.addr(), "POST", "/keyed", Some(ACME));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("ratelimit-limit"), Some("2"));
    // The plan bucket (burst 4) has 2 tokens left for acme.
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(ACME)).status, 200);
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(ACME)).status, 200);
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(ACME)).status, 429);
    // Beta is untouched by acme's spending.
    for _ in 0..4 {
        assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(BETA)).status, 200);
    }
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(BETA)).status, 429);
}

/// APIs "a" (`POST /a`), "b" and "c" (each `GET /b`), mapped at base paths a, b and c, all
/// covered by plan "gold" with a route throttle on both route keys, and key "acme" on it.
fn three_apis() -> String {
    let api = |name: &str, route: &str| {
        format!(
            r#"
[[apis]]
name = "{name}"
  [[apis.stages]]
  name = "prod"
  [[apis.routes]]
  route = "{route}"
  api_key_required = true
  integration = {{ type = "mock", body = "{name}" }}
"#
        )
    };
    format!(
        r#"
[server]
workers = 2

[[listeners]]
name = "http"
addr = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"
{}{}{}
[[domains]]
host = "*"
mappings = [
  {{ base_path = "a", api = "a", stage = "prod" }},
  {{ base_path = "b", api = "b", stage = "prod" }},
  {{ base_path = "c", api = "c", stage = "prod" }},
]

[[usage_plans]]
name = "gold"
stages = ["a/prod", "b/prod", "c/prod"]
route_throttle = {{ "POST /a" = {{ rate = 1, burst = 1 }}, "GET /b" = {{ rate = 1, burst = 2 }} }}

[[api_keys]]
name = "acme"
value = "{ACME}"
plan = "gold"
"#,
        api("a", "POST /a"),
        api("b", "GET /b"),
        api("c", "GET /b"),
    )
}

#[test]
fn a_plans_route_throttle_limits_each_apis_route_on_its_own() {
    let gw = Gw::start(&three_apis());
    let call = |method: &str, path: &str| {
        let r = keyed(gw.addr(), method, path, Some(ACME));
        (r.status, r.header("ratelimit-limit").map(str::to_string))
    };
    let one = Some("1".to_string());
    let two = Some("2".to_string());
    // Alternating between the routes of two APIs: each keeps its own bucket (one token on
    // POST /a, two on GET /b), whatever the other does.
    assert_eq!(call("POST", "/a/a"), (200, one.clone()));
    assert_eq!(call("GET", "/b/b"), (200, two.clone()));
    assert_eq!(call("POST", "/a/a"), (429, one.clone()));
    assert_eq!(call("GET", "/b/b"), (200, two.clone()));
    assert_eq!(call("POST", "/a/a"), (429, one));
    assert_eq!(call("GET", "/b/b"), (429, two.clone()));
    // The same route key with the same limit in another API has a bucket of its own.
    assert_eq!(call("GET", "/c/b"), (200, two.clone()));
    assert_eq!(call("GET", "/c/b"), (200, two.clone()));
    assert_eq!(call("GET", "/c/b"), (429, two));
}

#[test]
fn quotas_answer_limit_exceeded_once_spent() {
    let gw = Gw::start(&conf().toml());
    for _ in 0..3 {
        assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 200);
    }
    let r = keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV));
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["message"], "Limit Exceeded");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    // Refused before any limit was asked: it took no token, and says no RateLimit-*.
    assert_eq!(r.header("ratelimit-limit"), None);
    // The admin API reports the usage and can reset the quota.
    let today = chrono_today();
    let u = admin(
        gw.admin(),
        "GET",
        &format!("/usageplans/tiny/usage?startDate={today}&endDate={today}"),
        Some(TOKEN),
    );
    assert_eq!(u.status, 200, "{}", u.text());
    assert_eq!(u.json()["items"]["devkey"][0]["used"], 3);
    assert_eq!(u.json()["items"]["devkey"][0]["remaining"], 0);
    let r = admin(
        gw.admin(),
        "POST",
        "/usageplans/tiny/keys/devkey/quota/reset",
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 200);
    let r = admin_with(
        gw.admin(),
        "PUT",
        "/usageplans/tiny/keys/devkey/quota",
        r#"{"used": 3}"#,
    );
    assert_eq!(r.json()["remaining"], 0);
    assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 429);
}

#[test]
fn usage_reports_take_dates_only_as_yyyy_mm_dd() {
    let gw = Gw::start(&conf().toml());
    assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 200);
    let today = chrono_today();
    let usage = |start: &str, end: &str| {
        admin(
            gw.admin(),
            "GET",
            &format!("/usageplans/tiny/usage?startDate={start}&endDate={end}"),
            Some(TOKEN),
        )
    };
    let r = usage(&today, &today);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"]["devkey"][0]["used"], 1);
    // Today without its zeros, or with a sign, is not a date as the API takes them: refused
    // rather than read as another range.
    let (y, m, d) = (&today[..4], &today[5..7], &today[8..]);
    let unpadded = format!(
        "{y}-{}-{}",
        m.trim_start_matches('0'),
        d.trim_start_matches('0')
    );
    for (start, end, bad) in [
        (today.clone(), format!("%2B{today}"), "endDate"),
        (format!("%2B{today}"), today.clone(), "startDate"),
        (today.clone(), format!("{y}-{m}-{d}0"), "endDate"),
        (today.clone(), format!("{today}%20"), "endDate"),
        ("1-01-01".to_string(), today.clone(), "startDate"),
    ] {
        let r = usage(&start, &end);
        assert_eq!(r.status, 400, "{start} {end}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap().to_string();
        assert!(msg.contains(bad) && msg.contains("YYYY-MM-DD"), "{msg}");
    }
    if unpadded != today {
        let r = usage(&today, &unpadded);
        assert_eq!(r.status, 400, "{unpadded}: {}", r.text());
    }
    // A start given unpadded would have reported from another day on.
    let r = usage("2026-1-01", &today);
    assert_eq!(r.status, 400, "{}", r.text());
}

/// The report as Amazon's GetUsage answers it: `values`, one `[used, remaining]` per day of
/// the range (a day without requests too), pages by `limit` and `position`, a `keyId` not on
/// the plan 404.
#[test]
fn usage_reports_have_amazons_shape() {
    let gw = Gw::start(&conf().toml());
    for _ in 0..2 {
        assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 200);
    }
    let today = tollgate::today();
    let (start, end) = (tollgate::day_string(today - 2), tollgate::day_string(today));
    let usage = |q: &str| {
        admin(
            gw.admin(),
            "GET",
            &format!("/usageplans/{q}&startDate={start}&endDate={end}"),
            Some(TOKEN),
        )
    };
    let r = usage("tiny/usage?keyId=devkey");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    // A day quota of 3: two days without requests, today 2 of them.
    assert_eq!(
        v["values"]["devkey"],
        serde_json::json!([[0, 3], [0, 3], [2, 1]]),
        "{v}"
    );
    assert_eq!(v["items"]["devkey"][0]["used"], 2, "{v}");
    assert_eq!(
        (v["usagePlanId"].as_str(), v.get("position")),
        (Some("tiny"), None)
    );
    for q in ["tiny/usage?keyId=nobody", "tiny/usage?keyId=acme"] {
        let r = usage(q);
        assert_eq!(r.status, 404, "{q}: {}", r.text());
    }
    // Two keys with requests on gold (no quota: remaining null), one per page.
    for k in [ACME, BETA] {
        assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(k)).status, 200);
    }
    let r = usage("gold/usage?limit=1");
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json();
    assert_eq!(first["values"].as_object().unwrap().len(), 1, "{first}");
    assert_eq!(
        first["values"]["acme"],
        serde_json::json!([[0, null], [0, null], [1, null]])
    );
    let pos = first["position"].as_str().unwrap().to_string();
    let second = usage(&format!("gold/usage?limit=1&position={pos}")).json();
    assert_eq!(second["values"].as_object().unwrap().len(), 1, "{second}");
    assert!(second["values"]["beta"].is_array(), "{second}");
    assert_eq!(second.get("position"), None);
    for bad in ["0", "501", "x"] {
        assert_eq!(
            usage(&format!("gold/usage?limit={bad}")).status,
            400,
            "{bad}"
        );
    }
}

#[test]
fn deleting_a_key_deletes_its_usage() {
    let gw = Gw::start(&conf().toml());
    let (id, value) = new_key(&gw, "brief", "tiny");
    assert_eq!(
        keyed(gw.addr(), "GET", "/dev/keyed", Some(&value)).status,
        200
    );
    assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 200);
    let today = chrono_today();
    let usage = || {
        let r = admin(
            gw.admin(),
            "GET",
            &format!("/usageplans/tiny/usage?startDate={today}&endDate={today}"),
            Some(TOKEN),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"].clone()
    };
    assert_eq!(usage()[&id][0]["used"], 1);
    let r = admin(gw.admin(), "DELETE", &format!("/apikeys/{id}"), Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    let items = usage();
    assert!(items.get(&id).is_none(), "{items}");
    // Other keys' usage stays.
    assert_eq!(items["devkey"][0]["used"], 1);
}

/// A key made through the admin API on `plan`: its id and value.
fn new_key(gw: &Gw, name: &str, plan: &str) -> (String, String) {
    let body = serde_json::json!({"name": name, "plan": plan}).to_string();
    let r = admin_with(gw.admin(), "POST", "/apikeys", &body);
    assert_eq!(r.status, 201, "{}", r.text());
    let field = |f: &str| r.json()[f].as_str().unwrap().to_string();
    (field("id"), field("value"))
}

/// Today as YYYY-MM-DD (UTC), from the gateway's own calendar code.
fn chrono_today() -> String {
    tollgate::day_string(tollgate::today())
}

#[test]
fn keys_created_through_the_admin_api_work_and_are_never_shown_again() {
    let gw = Gw::start(&conf().toml());
    let r = admin_with(
        gw.admin(),
        "POST",
        "/apikeys",
        r#"{"name": "partner", "plan": "gold", "description": "a partner"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    let value = j["value"].as_str().unwrap().to_string();
    let id = j["id"].as_str().unwrap().to_string();
    assert!(value.len() >= 40);
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(&value)).status, 200);
    // Listing and getting never show values.
    let list = admin(gw.admin(), "GET", "/apikeys", Some(TOKEN));
    assert!(!list.text().contains(&value));
    assert!(!list.text().contains(ACME));
    let one = admin(gw.admin(), "GET", &format!("/apikeys/{id}"), Some(TOKEN));
    assert_eq!(one.json()["name"], "partner");
    assert!(one.json().get("value").is_none());
    // The same value twice is refused, as is a short one.
    let dup = admin_with(
        gw.admin(),
        "POST",
        "/apikeys",
        &format!(r#"{{"name": "again", "value": "{value}"}}"#),
    );
    assert_eq!(dup.status, 409);
    let dup = admin_with(
        gw.admin(),
        "POST",
        "/apikeys",
        &format!(r#"{{"name": "again", "value": "{ACME}"}}"#),
    );
    assert_eq!(dup.status, 409);
    assert_eq!(
        admin_with(
            gw.admin(),
            "POST",
            "/apikeys",
            r#"{"name": "s", "value": "short"}"#
        )
        .status,
        400
    );
    assert_eq!(
        admin_with(
            gw.admin(),
            "POST",
            "/apikeys",
            r#"{"name": "p", "plan": "nope"}"#
        )
        .status,
        400
    );
    assert_eq!(
        admin_with(
            gw.admin(),
            "POST",
            "/apikeys",
            r#"{"name": "p", "plans": ["gold", "gold"]}"#
        )
        .status,
        400,
        "a plan named twice is a bad request, not a conflict with another plan"
    );
    assert_eq!(
        admin_with(gw.admin(), "POST", "/apikeys", "not json").status,
        400
    );
    // Disable, enable, delete.
    let r = admin_with(
        gw.admin(),
        "PATCH",
        &format!("/apikeys/{id}"),
        r#"{"enabled": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(&value)).status, 403);
    admin_with(
        gw.admin(),
        "PATCH",
        &format!("/apikeys/{id}"),
        r#"{"enabled": true}"#,
    );
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(&value)).status, 200);
    assert_eq!(
        admin(gw.admin(), "DELETE", &format!("/apikeys/{id}"), Some(TOKEN)).status,
        200
    );
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(&value)).status, 403);
    assert_eq!(
        admin(gw.admin(), "GET", &format!("/apikeys/{id}"), Some(TOKEN)).status,
        404
    );
    // Config keys are changed in the config file.
    assert_eq!(
        admin(gw.admin(), "DELETE", "/apikeys/acme", Some(TOKEN)).status,
        409
    );
}

#[test]
fn csv_imports_are_all_or_nothing() {
    let gw = Gw::start(&conf().toml());
    let good = "Name,Key,Description,Enabled,UsagePlanIds\nk1,imported-key-number-one-0001,first,true,gold\n\"k, two\",imported-key-number-two-0002,\"second, quoted\",TRUE,gold\n";
    let r = admin_with(gw.admin(), "POST", "/apikeys/import", good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["imported"], 2);
    assert_eq!(
        keyed(
            gw.addr(),
            "GET",
            "/keyed",
            Some("imported-key-number-two-0002")
        )
        .status,
        200
    );
    // A spreadsheet's file: a byte-order mark first, a quoted description over two lines.
    let sheet = "\u{feff}Name,Key,Description,UsagePlanIds\r\nk7,imported-key-number-seven-7,\"line1\r\nline2\",gold\r\n";
    let r = admin_with(gw.admin(), "POST", "/apikeys/import", sheet);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["ids"][0].as_str().unwrap().to_string();
    let k = admin(gw.admin(), "GET", &format!("/apikeys/{id}"), Some(TOKEN)).json();
    assert_eq!(k["description"], "line1\nline2");
    // Bad rows (a config key's value, a bad Enabled, an unknown plan): nothing imported,
    // every problem named.
    let bad = format!("Name,Key,Description,Enabled,UsagePlanIds\nk3,imported-key-number-three-03,,true,gold\nk4,{ACME},,true,gold\nk5,imported-key-number-five-005,,maybe,gold\nk6,imported-key-number-six-000006,,true,'gold,nope'\n");
    let r = admin_with(gw.admin(), "POST", "/apikeys/import", &bad);
    assert_eq!(r.status, 400);
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("row 3")
            && msg.contains("row 4")
            && msg.contains("row 5")
            && !msg.contains("row 2"),
        "{msg}"
    );
    assert_eq!(
        keyed(
            gw.addr(),
            "GET",
            "/keyed",
            Some("imported-key-number-three-03")
        )
        .status,
        403
    );
    // A quote never closed took the rows after it into one description (they were not
    // made, and the key whose row opened it got no plan): the file is refused.
    let open = "Name,Key,Description,Enabled,UsagePlanIds\nk8,imported-key-number-eight-8,\"tablet,true,gold\nk9,imported-key-number-nine-09,phone,true,gold\n";
    let r = admin_with(gw.admin(), "POST", "/apikeys/import", open);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("row 2: a field opened with"),
        "{}",
        r.text()
    );
    // Only CSV is a key file (Amazon's ImportApiKeys takes format=csv alone).
    let r = admin_with(gw.admin(), "POST", "/apikeys/import?format=json", "[]");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("only csv"), "{}", r.text());
    // A name starting with an apostrophe is a name.
    let named = "Name,Key,UsagePlanIds\n'90s app,imported-key-number-ten-0010,gold\n";
    let r = admin_with(gw.admin(), "POST", "/apikeys/import?format=CSV", named);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        keyed(
            gw.addr(),
            "GET",
            "/keyed",
            Some("imported-key-number-ten-0010")
        )
        .status,
        200
    );
}

/// As Amazon's import: a key value imported again overwrites the key that has it (its id
/// kept), the last row of a file winning; plans may be listed quoted with `,`.
#[test]
fn a_key_imported_again_is_overwritten() {
    let gw = Gw::start(&conf().toml());
    let first = "Name,Key,Description,Enabled,UsagePlanIds\nk1,imported-key-number-one-0001,first,true,gold\n";
    let r = admin_with(gw.admin(), "POST", "/apikeys/import", first);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["ids"][0].as_str().unwrap().to_string();
    let key = Some("imported-key-number-one-0001");
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", key).status, 200);
    let again = "Name,Key,Description,Enabled,UsagePlanIds\nk1,imported-key-number-one-0001,first,true,gold\nrenamed,imported-key-number-one-0001,second,false,\"gold,tiny\"\n";
    let r = admin_with(gw.admin(), "POST", "/apikeys/import", again);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ids"], serde_json::json!([id]));
    let k = admin(gw.admin(), "GET", &format!("/apikeys/{id}"), Some(TOKEN)).json();
    assert_eq!(k["name"], "renamed");
    assert_eq!(k["description"], "second");
    assert_eq!(k["enabled"], false);
    assert_eq!(k["plans"], serde_json::json!(["gold", "tiny"]));
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", key).status, 403);
    assert_eq!(
        admin(gw.admin(), "GET", "/apikeys", Some(TOKEN)).json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["source"] == "api")
            .count(),
        1
    );
}

#[test]
fn keys_and_counters_survive_a_restart() {
    let gw = Gw::start(&conf().toml());
    let (_, value) = new_key(&gw, "kept", "tiny");
    for _ in 0..2 {
        assert_eq!(
            keyed(gw.addr(), "GET", "/dev/keyed", Some(&value)).status,
            200
        );
    }
    let dir = gw.stop();
    let gw = Gw::start_in(dir, &conf().toml());
    // One request left in the quota of 3, and the key still works.
    assert_eq!(
        keyed(gw.addr(), "GET", "/dev/keyed", Some(&value)).status,
        200
    );
    assert_eq!(
        keyed(gw.addr(), "GET", "/dev/keyed", Some(&value)).status,
        429
    );
}

#[test]
fn a_config_key_may_not_take_a_run_time_keys_id() {
    let gw = Gw::start(&conf().toml());
    let (id, value) = new_key(&gw, "leaked", "tiny");
    // A file key named as the run-time key's id: both would answer to one id (PATCH and
    // DELETE refused as "declared in the config file", one quota counter).
    let clash = format!(
        "{}\n[[api_keys]]\nname = \"{id}\"\nvalue = \"file-0123456789abcdef0123\"\nplan = \"tiny\"\n",
        conf().toml()
    );
    gw.rewrite(&clash);
    let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains(&format!("api_keys[\\\"{id}\\\"].name")),
        "{}",
        r.text()
    );
    // The run-time key can still be revoked.
    let r = admin_with(
        gw.admin(),
        "PATCH",
        &format!("/apikeys/{id}"),
        r#"{"enabled": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        keyed(gw.addr(), "GET", "/dev/keyed", Some(&value)).status,
        403
    );
    // Nor does a restart on such a file start.
    let dir = gw.stop();
    let err = Gw::try_start_in(dir, &clash).err().map(|(_, e)| e);
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("a key created through the admin API has this id")),
        "{err:?}"
    );
}

#[test]
fn a_config_key_may_not_be_named_import() {
    let gw = Gw::start(&conf().toml());
    // Its id would be "import": /apikeys/import is the CSV import, so the admin API could
    // neither show, change nor delete that key.
    let named = format!(
        "{}\n[[api_keys]]\nname = \"import\"\nvalue = \"file-0123456789abcdef0123\"\nplan = \"tiny\"\n",
        conf().toml()
    );
    gw.rewrite(&named);
    let r = admin(gw.admin(), "POST", "/reload", Some(TOKEN));
    assert_eq!(r.status, 400, "{}", r.text());
    let errors = r.json()["errors"].clone();
    let msg = errors
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str())
        .find(|e| e.contains(r#"api_keys["import"].name"#))
        .unwrap_or_else(|| panic!("{errors}"))
        .to_string();
    assert!(msg.contains("/apikeys/import"), "{msg}");
    // The gateway goes on with the config it had.
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(ACME)).status, 200);
}

#[test]
fn a_corrupt_state_file_stops_start_up() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.0.join("data")).unwrap();
    std::fs::write(dir.0.join("data/tollgate.redb"), vec![0x5a; 4096]).unwrap();
    let err = match Gw::try_start_in(dir, &conf().toml()) {
        Err((_, e)) => e,
        Ok(_) => panic!("started on a corrupt state file"),
    };
    assert!(
        err.contains("state store") && err.contains("cannot open"),
        "{err}"
    );
}

#[test]
fn many_distinct_keys_do_not_break_throttling() {
    let gw = Gw::start(&conf().toml());
    // Keys are created, used once each, deleted: per-key buckets come and go.
    let mut values = Vec::new();
    for i in 0..20 {
        let r = admin_with(
            gw.admin(),
            "POST",
            "/apikeys",
            &format!(r#"{{"name": "k{i}", "plan": "gold"}}"#),
        );
        values.push(r.json()["value"].as_str().unwrap().to_string());
    }
    for v in &values {
        assert_eq!(keyed(gw.addr(), "GET", "/keyed", Some(v)).status, 200);
    }
}

#[test]
fn proxied_answers_on_throttled_routes_carry_ratelimit_headers() {
    let up = Upstream::echo();
    let gw = Gw::start(
        &conf()
            .route(
                "GET /proxied",
                format!(
                    "throttle = {{ rate = 1, burst = 2 }}\nintegration = {{ type = \"http\", uri = \"http://{}/x\" }}",
                    up.addr
                ),
            )
            .toml(),
    );
    let r = get(gw.addr(), "/proxied");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["target"], "/x");
    assert_eq!(r.header("ratelimit-limit"), Some("2"));
    assert_eq!(r.header("ratelimit-remaining"), Some("1"));
    assert_eq!(get(gw.addr(), "/proxied").status, 200);
    let r = get(gw.addr(), "/proxied");
    assert_eq!(r.status, 429);
    assert_eq!(up.count(), 2, "a throttled request reached the upstream");
}

/// Sums one metric over every shard from `GET /metrics`.
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn counters_reach_the_metrics_endpoint() {
    let gw = Gw::start(&conf().toml());
    for _ in 0..5 {
        assert_eq!(get(gw.addr(), "/limited").status, 200);
    }
    assert_eq!(get(gw.addr(), "/limited").status, 429);
    assert_eq!(keyed(gw.addr(), "GET", "/keyed", None).status, 403);
    assert_eq!(
        Client::connect(gw.addr())
            .request(b"GET /x HTTP/1.1\r\n\r\n")
            .status,
        400
    );
    // Shards publish every 100 ms.
    let mut text = String::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            let r = admin(gw.admin(), "GET", "/metrics", Some(TOKEN));
            assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
            text = r.text();
            // Every count a shard publishes, not one of them: a reader may come between
            // two copies of the same sweep.
            metric(&text, "tollgate_responses_total{") >= 8
                && metric(&text, "tollgate_bad_requests_total") >= 1
                && metric(&text, "tollgate_throttled_total") >= 1
                && metric(&text, "tollgate_forbidden_total") >= 1
        }),
        "{text}"
    );
    assert!(metric(&text, "tollgate_responses_total{") >= 8, "{text}");
    assert_eq!(metric(&text, "tollgate_throttled_total"), 1, "{text}");
    assert_eq!(metric(&text, "tollgate_forbidden_total"), 1, "{text}");
    assert!(text.contains("tollgate_open_connections"));
}

/// The admin API's edges: unknown paths are 404 and known ones with the wrong method 405
/// with `Allow`; a chunked body gets 411 with its reason phrase; a quota cannot be set or
/// reset for a key that is not on the plan; PATCH renames and re-describes a key; `/ping`
/// answers without a token and says nothing else.
#[test]
fn the_admin_api_answers_its_edges_as_http_says() {
    let gw = Gw::start(&conf().toml());
    let a = gw.admin();
    for p in ["/usageplans", "/apikeys/a/b", "/nothing", "/apis/x"] {
        let r = admin(a, "GET", p, Some(TOKEN));
        assert_eq!(r.status, 404, "{p}");
        // Amazon's exception name, as its management API sends it (SDKs read it).
        assert_eq!(
            r.header("x-amzn-errortype"),
            Some("NotFoundException"),
            "{p}"
        );
    }
    let r = admin(a, "GET", "/apikeys", Some("wrong"));
    assert_eq!(r.header("x-amzn-errortype"), Some("UnauthorizedException"));
    assert_eq!(
        admin(a, "GET", "/apikeys", Some(TOKEN)).header("x-amzn-errortype"),
        None
    );
    for (method, p, allow) in [
        ("DELETE", "/apikeys", "GET, HEAD, POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("GET", "/reload", "POST"),
        ("PUT", "/apikeys/x", "GET, HEAD, PATCH, DELETE"),
        ("POST", "/apis/shop/stages/prod/cache", "GET, HEAD, DELETE"),
    ] {
        let r = admin(a, method, p, Some(TOKEN));
        assert_eq!(r.status, 405, "{method} {p}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {p}");
    }
    let mut c = Client::connect(a);
    c.send(format!("POST /apikeys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n").as_bytes());
    let raw = String::from_utf8_lossy(&c.read_to_end()).into_owned();
    assert!(raw.starts_with("HTTP/1.1 411 Length Required\r\n"), "{raw}");
    // Bodies are JSON objects: an array (which serde reads into a struct by position) is 400.
    for (method, p, body) in [
        ("POST", "/apikeys", r#"["arr", null, "", null, "gold", []]"#),
        ("PUT", "/usageplans/tiny/keys/devkey/quota", "[3]"),
        ("POST", "/apis", "[]"),
    ] {
        let r = admin_with(a, method, p, body);
        assert_eq!(r.status, 400, "{method} {p}: {}", r.text());
        assert_eq!(r.json()["message"], "invalid JSON body: expected an object");
        assert_eq!(r.header("x-amzn-errortype"), Some("BadRequestException"));
    }
    // acme is on "gold", not "tiny": no phantom usage entry for it.
    for (method, p, body) in [
        ("POST", "/usageplans/tiny/keys/acme/quota/reset", ""),
        ("PUT", "/usageplans/tiny/keys/acme/quota", r#"{"used": 1}"#),
    ] {
        let r = admin_with(a, method, p, body);
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(r.text().contains("not on usage plan"), "{}", r.text());
    }
    // A count over the quota's limit (u64's largest, say) is refused, not wrapped to 0;
    // a plan without a quota has no count to set.
    for (p, body, says) in [
        (
            "/usageplans/tiny/keys/devkey/quota",
            r#"{"used": 18446744073709551615}"#,
            "expected 0 to 3",
        ),
        (
            "/usageplans/tiny/keys/devkey/quota",
            r#"{"used": 4}"#,
            "expected 0 to 3",
        ),
        (
            "/usageplans/gold/keys/acme/quota",
            r#"{"used": 1}"#,
            "has no quota",
        ),
    ] {
        let r = admin_with(a, "PUT", p, body);
        assert_eq!(r.status, 400, "{p} {body}: {}", r.text());
        assert!(r.text().contains(says), "{}", r.text());
    }
    let r = admin_with(
        a,
        "PUT",
        "/usageplans/tiny/keys/devkey/quota",
        r#"{"used": 3}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 429);
    let today = chrono_today();
    let u = admin(
        a,
        "GET",
        &format!("/usageplans/tiny/usage?startDate={today}&endDate={today}"),
        Some(TOKEN),
    );
    assert!(u.json()["items"].get("acme").is_none(), "{}", u.text());
    // PATCH: name and description.
    let r = admin_with(a, "POST", "/apikeys", r#"{"name": "p", "plan": "gold"}"#);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = admin_with(
        a,
        "PATCH",
        &format!("/apikeys/{id}"),
        r#"{"name": "partner-2", "description": "renamed"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let one = admin(a, "GET", &format!("/apikeys/{id}"), Some(TOKEN)).json();
    assert_eq!(
        (one["name"].as_str(), one["description"].as_str()),
        (Some("partner-2"), Some("renamed"))
    );
    let r = admin_with(a, "PATCH", &format!("/apikeys/{id}"), r#"{"name": " "}"#);
    assert_eq!(r.status, 400);
    // /ping: no token needed, nothing revealed.
    let r = admin(a, "GET", "/ping", None);
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(admin(a, "GET", "/healthz", None).status, 401);
}

/// A key whose quota is spent is refused before any rate limit is taken ("Limit Exceeded"
/// each time): it takes nothing from the stage's limit that keyless clients share.
#[test]
fn a_spent_quota_takes_nothing_from_shared_limits() {
    let gw = Gw::start(
        &Cfg::new()
            .api("shop")
            .stage("s", "throttle = { rate = 1, burst = 3 }")
            .route(
                "GET /paid",
                "api_key_required = true\nintegration = { type = \"mock\", body = \"paid\" }",
            )
            .route("GET /public", "integration = { type = \"mock\", body = \"public\" }")
            .extra(format!(
                "[[usage_plans]]\nname = \"one\"\nstages = [\"shop/s\"]\nquota = {{ limit = 1, period = \"day\" }}\n\n[[api_keys]]\nname = \"k\"\nvalue = \"{DEV}\"\nplan = \"one\"\n"
            ))
            .toml(),
    );
    assert_eq!(keyed(gw.addr(), "GET", "/s/paid", Some(DEV)).status, 200);
    for _ in 0..5 {
        let r = keyed(gw.addr(), "GET", "/s/paid", Some(DEV));
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["message"], "Limit Exceeded");
    }
    // Two of the stage's three tokens are left for everyone else.
    for _ in 0..2 {
        let r = keyed(gw.addr(), "GET", "/s/public", None);
        assert_eq!((r.status, r.text().as_str()), (200, "public"));
    }
}

/// A request admitted before its key was deleted is served, and counts nowhere: the key's
/// usage does not come back in reports.
#[test]
fn a_request_in_flight_when_its_key_is_deleted_does_not_bring_its_usage_back() {
    let gw = Gw::start(
        &Cfg::new()
            .api("shop")
            .api_extra("  [[apis.models]]\n  name = \"Any\"\n  schema = '{\"type\": \"object\"}'\n")
            .stage("dev", "")
            .route(
                "POST /v",
                "api_key_required = true\nrequest_validator = \"body\"\nrequest_models = { \"application/json\" = \"Any\" }\nintegration = { type = \"mock\", body = \"done\" }",
            )
            .extra("[[usage_plans]]\nname = \"tiny\"\nstages = [\"shop/dev\"]\nquota = { limit = 50, period = \"day\" }\n")
            .toml(),
    );
    let (id, value) = new_key(&gw, "brief", "tiny");
    // Its 100 Continue says the key was checked and the body is awaited.
    let mut c = Client::connect(gw.addr());
    c.send(format!("POST /dev/v HTTP/1.1\r\nHost: t\r\nx-api-key: {value}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n").as_bytes());
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut c.stream, &mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let r = admin(gw.admin(), "DELETE", &format!("/apikeys/{id}"), Some(TOKEN));
    assert_eq!(r.status, 200, "{}", r.text());
    c.send(b"{}");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "done"));
    let today = chrono_today();
    let r = admin(
        gw.admin(),
        "GET",
        &format!("/usageplans/tiny/usage?startDate={today}&endDate={today}"),
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["items"].get(&id).is_none(), "{}", r.text());
    // The key is gone for new requests.
    assert_eq!(keyed(gw.addr(), "POST", "/dev/v", Some(&value)).status, 403);
}

/// A throttle of rate 0 and burst 0 refuses every request (as Amazon's method throttle of 0
/// and 0 turns a method off in a usage plan): on a route, and per key on a plan's route.
#[test]
fn a_throttle_of_zero_refuses_every_request() {
    let gw = Gw::start(
        &Cfg::new()
            .api("shop")
            .stage("dev", "")
            .route(
                "GET /off",
                "throttle = { rate = 0, burst = 0 }\nintegration = { type = \"mock\", body = \"off\" }",
            )
            .route(
                "GET /keyed",
                "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
            )
            .route("GET /open", "integration = { type = \"mock\", body = \"open\" }")
            .extra(format!(
                "[[usage_plans]]\nname = \"p\"\nstages = [\"shop/dev\"]\nroute_throttle = {{ \"GET /keyed\" = {{ rate = 0, burst = 0 }} }}\n\n[[api_keys]]\nname = \"k\"\nvalue = \"{DEV}\"\nplan = \"p\"\n"
            ))
            .toml(),
    );
    for _ in 0..3 {
        let r = keyed(gw.addr(), "GET", "/dev/off", None);
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["message"], "Too Many Requests");
        assert_eq!(keyed(gw.addr(), "GET", "/dev/keyed", Some(DEV)).status, 429);
    }
    assert_eq!(keyed(gw.addr(), "GET", "/dev/open", None).text(), "open");
    // Only both at 0: one alone is refused at load, naming the key.
    let (ok, out) = check_config(
        &Cfg::new()
            .route(
                "GET /x",
                "throttle = { rate = 0, burst = 5 }\nintegration = { type = \"mock\" }",
            )
            .toml(),
    );
    assert!(!ok);
    assert!(
        out.contains("throttle.rate = 0") && out.contains("burst = 0"),
        "{out}"
    );
}
