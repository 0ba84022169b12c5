//! What `tollgate check` says about a config: one test per validation or compile rule; each
//! bad value is refused with the key's name, the value and what is allowed.

use std::path::Path;

use crate::config::*;

const BASE: &str = r#"
[server]
workers = 2

[[listeners]]
name = "http"
addr = "127.0.0.1:8080"

[[upstreams]]
name = "pets"
targets = ["127.0.0.1:9000"]

[[apis]]
name = "petstore"

  [[apis.stages]]
  name = "prod"
  variables = { backend = "http://pets" }

  [[apis.routes]]
  route = "GET /pets/{petId}"
  integration = { type = "http", uri = "${stageVariables.backend}/pets/{petId}" }

[[domains]]
host = "*"
mappings = [{ base_path = "", api = "petstore", stage = "prod" }]
"#;

/// Parses, validates and compiles, as `tollgate check` does.
pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    let cfg = Config::parse(text, Path::new("."))?;
    super::check(&cfg)?;
    Ok(cfg)
}

/// Applies `from -> to` to the base config and expects an error containing every `want`.
pub(super) fn refused(from: &str, to: &str, want: &[&str]) {
    assert!(BASE.contains(from), "base lacks {from:?}");
    let text = BASE.replacen(from, to, 1);
    let err = parse(&text).expect_err(&format!("accepted: {to}"));
    let all = err.to_string();
    for w in want {
        assert!(all.contains(w), "error {all:?} lacks {w:?}");
    }
}

pub(super) fn with(extra: &str) -> String {
    format!("{BASE}\n{extra}")
}

#[test]
fn base_config_is_valid() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.server.workers, 2);
    assert_eq!(c.limits.max_body, DEFAULT_MAX_BODY);
    assert_eq!(c.limits.integration_timeout, DEFAULT_INTEGRATION_TIMEOUT);
    assert_eq!(c.upstreams[0].keepalive, DEFAULT_KEEPALIVE);
    assert_eq!(c.apis[0].routes[0].params, vec!["petId".to_string()]);
}

#[test]
fn the_shipped_default_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    Config::load(&path).unwrap();
}

#[test]
fn unknown_keys_are_named() {
    refused("workers = 2", "workers = 2\nworkerz = 3", &["workerz"]);
}

#[test]
fn toml_syntax_errors_are_reported() {
    refused("workers = 2", "workers = ", &["config is not valid"]);
}

#[test]
fn workers_must_be_in_range() {
    refused(
        "workers = 2",
        "workers = -1",
        &["server.workers = -1", "an integer from 0 to 1024"],
    );
}

#[test]
fn cpus_must_cover_pinned_workers() {
    refused(
        "workers = 2",
        "workers = 3\npin = true\ncpus = [0]",
        &["server.cpus", "at least one CPU per worker"],
    );
    refused("workers = 2", "cpus = [99999]", &["server.cpus[0] = 99999"]);
}

#[test]
fn driver_must_be_known() {
    refused(
        "workers = 2",
        "driver = \"kqueue\"",
        &[
            "server.driver = \"kqueue\"",
            "\"auto\", \"io_uring\", \"io_uring_basic\" or \"epoll\"",
        ],
    );
}

#[test]
fn durations_need_a_unit() {
    refused(
        "workers = 2",
        "drain_timeout = \"30\"",
        &["server.drain_timeout = \"30\"", "ms, s, m, h or d"],
    );
    let err = parse(&with("[limits]\nheader_timeout = \"0s\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("limits.header_timeout") && err.contains("above zero"),
        "{err}"
    );
}

#[test]
fn sizes_need_a_known_unit() {
    let err = parse(&with("[limits]\nmax_body = \"10 furlongs\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("limits.max_body = \"10 furlongs\"") && err.contains("KiB"),
        "{err}"
    );
    let err = parse(&with("[limits]\nmax_header_bytes = \"10\""))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("limits.max_header_bytes") && err.contains("1KiB to 1MiB"),
        "{err}"
    );
    let err = parse(&with("[limits]\nmax_connections = 0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.max_connections = 0"), "{err}");
}

#[test]
fn listeners_need_a_unique_name_and_an_ip_port() {
    refused(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"localhost\"",
        &[
            "listeners[\"http\"].addr = \"localhost\"",
            "IP address and port",
        ],
    );
    refused(
        "[[upstreams]]",
        "[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:8081\"\n\n[[upstreams]]",
        &["used by two listeners"],
    );
    refused(
        "[[upstreams]]",
        "[[listeners]]\nname = \"other\"\naddr = \"127.0.0.1:8080\"\n\n[[upstreams]]",
        &["127.0.0.1:8080 is used by two listeners"],
    );
    refused(
        "name = \"http\"",
        "name = \"bad name\"",
        &["listeners[\"bad name\"].name", "letters, digits"],
    );
    // The admin API cannot share a listener's address (start-up would fail to bind it).
    refused(
        "[[upstreams]]",
        "[admin]\naddr = \"0.0.0.0:8080\"\n\n[[upstreams]]",
        &["admin.addr", "listener \"http\"'s address"],
    );
    // Another family's address on the same port is no clash.
    parse(&BASE.replace(
        "[[upstreams]]",
        "[admin]\naddr = \"[::1]:8080\"\n\n[[upstreams]]",
    ))
    .expect("an IPv6 admin address beside an IPv4 listener");
    refused(
        "workers = 2",
        "workers = 2\nstate_dir = \"/dev/null\"",
        &["server.state_dir", "is not a folder"],
    );
}

#[test]
fn a_config_needs_listeners() {
    let text = BASE.replace(
        "[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:8080\"\n",
        "",
    );
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("at least one [[listeners]]"));
}

#[test]
fn upstreams_need_resolvable_targets_and_known_balance() {
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = []",
        &["upstreams[\"pets\"].targets", "is empty"],
    );
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1\"]",
        &[
            "upstreams[\"pets\"].targets[0] = \"127.0.0.1\"",
            "missing port",
        ],
    );
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1:9000\"]\nbalance = \"random\"",
        &["upstreams[\"pets\"].balance = \"random\""],
    );
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1:9000\"]\nbalance = \"hash\"\nhash_key = \"cookie.x\"",
        &[
            "hash_key = \"cookie.x\"",
            "\"client_ip\" or \"header.NAME\"",
        ],
    );
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1:9000\"]\nhash_key = \"client_ip\"",
        &["only used with balance = \"hash\""],
    );
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1:9000\"]\nkeepalive = -1",
        &["upstreams[\"pets\"].keepalive = -1"],
    );
}

#[test]
fn upstream_names_are_unique() {
    refused(
        "[[apis]]",
        "[[upstreams]]\nname = \"pets\"\ntargets = [\"127.0.0.1:1\"]\n\n[[apis]]",
        &["used by two upstreams"],
    );
}

#[test]
fn health_checks_need_a_path_and_positive_thresholds() {
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1:9000\"]\nhealth = { path = \"healthz\" }",
        &["health.path = \"healthz\"", "starting with /"],
    );
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1:9000\"]\nhealth = { path = \"/h\", unhealthy_after = 0 }",
        &["health.unhealthy_after = 0"],
    );
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"127.0.0.1:9000\"]\nhealth = { interval = \"5s\" }",
        &["health.path: is required"],
    );
}

#[test]
fn routes_need_a_method_and_a_path() {
    refused(
        "route = \"GET /pets/{petId}\"",
        "route = \"FETCH /pets/{petId}\"",
        &["route = \"FETCH /pets/{petId}\"", "a method of GET"],
    );
    refused(
        "route = \"GET /pets/{petId}\"",
        "route = \"/pets\"",
        &["\"METHOD /path\""],
    );
    refused(
        "route = \"GET /pets/{petId}\"",
        "route = \"GET pets\"",
        &["must start with /"],
    );
    refused(
        "route = \"GET /pets/{petId}\"",
        "route = \"GET /a/{p+}/b\"",
        &["must be the last segment"],
    );
    refused(
        "route = \"GET /pets/{petId}\"",
        "route = \"GET /a/x{y}\"",
        &["must be a whole segment"],
    );
}

#[test]
fn duplicate_routes_are_refused() {
    refused(
        "[[domains]]",
        "  [[apis.routes]]\n  route = \"GET /pets/{other}\"\n  integration = { type = \"mock\" }\n\n[[domains]]",
        &["another route has the same method and path"],
    );
}

#[test]
fn integrations_must_be_complete_and_consistent() {
    refused(
        "integration = { type = \"http\", uri",
        "integration = { type = \"lambda\", uri",
        &["integration.type = \"lambda\"", "\"http\" or \"mock\""],
    );
    refused(
        "integration = { type = \"http\", uri = \"${stageVariables.backend}/pets/{petId}\" }",
        "integration = { type = \"http\" }",
        &["integration.uri: is required"],
    );
    refused(
        "{petId}\" }",
        "{nope}\" }",
        &["{nope} names no path variable"],
    );
    refused(
        "${stageVariables.backend}/pets",
        "${stageVariables.missing}/pets",
        &[
            "${stageVariables.missing} is not defined",
            "in stage \"prod\"",
        ],
    );
    refused(
        "${stageVariables.backend}/pets",
        "http://nowhere/pets",
        &["neither an [[upstreams]] name nor an address"],
    );
    refused(
        "${stageVariables.backend}/pets/{petId}",
        "${stageVariables.backend}/a/../pets/${context.identity.clientCert.subjectDN}",
        &[
            "a `.` or `..` segment in its path beside",
            "every request would be refused",
        ],
    );
    refused(
        "${stageVariables.backend}/pets",
        "https://pets/pets",
        &["https://pets needs TLS on upstream \"pets\""],
    );
    refused(
        "{petId}\" }",
        "{petId}\", timeout = \"60s\" }",
        &[
            "integration.timeout = \"60s\"",
            "at most limits.integration_timeout",
        ],
    );
    refused(
        "{petId}\" }",
        "{petId}\", status = 200 }",
        &["status and body belong to type = \"mock\""],
    );
}

#[test]
fn mock_statuses_are_checked() {
    refused(
        "[[domains]]",
        "  [[apis.routes]]\n  route = \"GET /m\"\n  integration = { type = \"mock\", status = 99 }\n\n[[domains]]",
        &["integration.status = 99", "200 to 599"],
    );
}

#[test]
fn header_names_and_values_are_checked() {
    refused(
        "{petId}\" }",
        "{petId}\", headers = { \"bad name\" = \"x\" } }",
        &["integration.headers = \"bad name\""],
    );
    refused(
        "{petId}\" }",
        "{petId}\", headers = { \"x-a\" = \"a\\r\\nb\" } }",
        &["without control characters"],
    );
}

#[test]
fn stages_are_unique_and_required() {
    refused(
        "  [[apis.routes]]",
        "  [[apis.stages]]\n  name = \"prod\"\n\n  [[apis.routes]]",
        &["used by two stages"],
    );
    let text = BASE.replace(
        "  [[apis.stages]]\n  name = \"prod\"\n  variables = { backend = \"http://pets\" }\n",
        "",
    );
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("at least one [[apis.stages]]"));
}

#[test]
fn domains_must_name_existing_apis_and_stages() {
    // A name the file does not declare may be a run-time API's: kept for the merge.
    let text = BASE.replace(
        "api = \"petstore\", stage = \"prod\"",
        "api = \"nope\", stage = \"prod\"",
    );
    let cfg = parse(&text).unwrap();
    assert!(cfg.domains[0].mappings.is_empty());
    assert_eq!(cfg.domains[0].pending[0].api, "nope");
    refused(
        "api = \"petstore\", stage = \"prod\"",
        "api = \"no pe\", stage = \"prod\"",
        &["domains[\"*\"].mappings[0].api = \"no pe/prod\""],
    );
    refused(
        "api = \"petstore\", stage = \"prod\"",
        "api = \"petstore\", stage = \"beta\"",
        &["mappings[0].stage = \"beta\"", "[\"prod\"]"],
    );
    refused(
        "host = \"*\"",
        "host = \"bad host!\"",
        &["domains[\"bad host!\"].host"],
    );
    refused("{ base_path = \"\", api = \"petstore\", stage = \"prod\" }", "{ base_path = \"\", api = \"petstore\", stage = \"prod\" }, { base_path = \"/\", api = \"petstore\", stage = \"prod\" }", &["mapped twice"]);
    refused(
        "host = \"*\"",
        "host = \"*\"\nlisteners = [\"nope\"]",
        &["listeners = \"nope\""],
    );
    let text = BASE.replace("[[domains]]\nhost = \"*\"\nmappings = [{ base_path = \"\", api = \"petstore\", stage = \"prod\" }]\n", "");
    assert!(parse(&text)
        .unwrap_err()
        .to_string()
        .contains("nothing would be served"));
}

#[test]
fn http2_settings_are_checked() {
    let ok = parse(&BASE.replace(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"127.0.0.1:8080\"\nh2c = true",
    ))
    .unwrap();
    assert!(ok.listeners[0].h2c);
    assert_eq!(ok.http2.max_concurrent_streams, 128);
    refused(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"127.0.0.1:8080\"\nalpn = [\"h3\", \"http/1.1\", \"http/1.1\"]",
        &[
            "listeners[\"http\"].alpn = \"h3\" is not valid: expected \"h2\" or \"http/1.1\"",
            "alpn = \"http/1.1\" is not valid: expected each protocol once",
        ],
    );
    refused(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"127.0.0.1:8080\"\nalpn = []",
        &["alpn = \"[]\" is not valid"],
    );
    refused(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"127.0.0.1:8080\"\nh2c = true\ntls = { cert = \"a.pem\", key = \"a.key\" }",
        &["listeners[\"http\"].h2c: belongs on a plain listener"],
    );
    refused(
        "[[upstreams]]",
        "[http2]\nmax_concurrent_streams = 0\nstream_window = \"1KiB\"\nconnection_window = \"4GiB\"\nmax_frame_size = \"32MiB\"\nresets_burst = -1\nmax_continuation_frames = 5000\n\n[[upstreams]]",
        &[
            "http2.max_concurrent_streams = 0 is not valid",
            "http2.stream_window = 1024 is not valid: expected a size from 65535 bytes",
            "http2.connection_window = 4294967296 is not valid",
            "http2.max_frame_size = 33554432 is not valid: expected a size from 16KiB to 16MiB - 1",
            "http2.resets_burst = -1 is not valid",
            "http2.max_continuation_frames = 5000 is not valid",
        ],
    );
}

#[test]
fn unbuilt_features_are_refused_by_name() {
    refused(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"127.0.0.1:8080\"\nmtls = { client_ca = \"nope.pem\", mode = \"sometimes\", headers = { \"x-c\" = \"colour\" } }",
        &[
            "listeners[\"http\"].mtls: needs tls on the same listener",
            "mtls.mode = \"sometimes\" is not valid",
            "mtls.headers.x-c = \"colour\" is not valid: expected one of subjectDN",
        ],
    );
    refused(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"127.0.0.1:8080\"\ntls = { cert = \"nope.pem\" }",
        &["listeners[\"http\"].tls: needs cert and key"],
    );
    refused(
        "name = \"petstore\"",
        "name = \"petstore\"\nkind = \"websocket\"\nroute_selection_expression = \"$request.query.x\"",
        &["route_selection_expression = \"$request.query.x\" is not valid: expected \"$request.body.NAME\""],
    );
    refused(
        "name = \"petstore\"",
        "name = \"petstore\"\nroute_selection_expression = \"$request.body.action\"",
        &["route_selection_expression = \"$request.body.action\" is not valid: expected nothing on an http API"],
    );
}

#[test]
fn throttles_need_a_positive_rate_and_burst() {
    let c = parse(&with("[throttle]\nrate = 100\nburst = 50")).unwrap();
    assert_eq!(
        c.throttle,
        Some(Rate {
            rate: 100,
            burst: 50
        })
    );
    let err = parse(&with("[throttle]\nrate = 0\nburst = 5"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("throttle.rate = 0") && err.contains("1 to 1000000000"),
        "{err}"
    );
    let err = parse(&with("[throttle]\nrate = 5"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("throttle.burst: is required"), "{err}");
    refused(
        "variables = { backend = \"http://pets\" }",
        "variables = { backend = \"http://pets\" }\n  throttle = { rate = 1, burst = -1 }",
        &["stages[\"prod\"].throttle.burst = -1"],
    );
    refused(
        "route = \"GET /pets/{petId}\"",
        "route = \"GET /pets/{petId}\"\n  throttle = { rate = 1 }",
        &["routes[\"GET /pets/{petId}\"].throttle.burst: is required"],
    );
    refused("variables = { backend = \"http://pets\" }", "variables = { backend = \"http://pets\" }\n  throttle = { rate = 1, burst = 1, extra = 2 }", &["extra"]);
}

const PLAN: &str = "[[usage_plans]]\nname = \"gold\"\nstages = [\"petstore/prod\"]\nthrottle = { rate = 10, burst = 20 }\nquota = { limit = 1000, period = \"month\" }\nroute_throttle = { \"GET /pets/{petId}\" = { rate = 1, burst = 2 } }\n";

#[test]
fn usage_plans_name_existing_stages_routes_and_periods() {
    let c = parse(&with(PLAN)).unwrap();
    assert_eq!(c.usage_plans[0].stages, vec![(0, 0)]);
    let t = &c.usage_plans[0].route_throttle;
    assert_eq!(t.len(), 1);
    assert_eq!(
        (t[0].at, t[0].rate),
        ((0, 0, 0), Rate { rate: 1, burst: 2 })
    );
    assert_eq!(t[0].name, "petstore/prod/GET /pets/{petId}");
    assert_eq!(
        c.usage_plans[0].quota,
        Some(Quota {
            limit: 1000,
            period: Period::Month
        })
    );
    for (from, to, want) in [
        (
            "petstore/prod",
            "petstore/beta",
            "usage_plans[\"gold\"].stages[0] = \"petstore/beta\"",
        ),
        (
            "[\"petstore/prod\"]",
            "[\"petstore/prod\", \"petstore/prod\"]",
            "usage_plans[\"gold\"].stages[1]: \"petstore/prod\" is listed twice",
        ),
        ("\"month\"", "\"year\"", "quota.period = \"year\""),
        ("limit = 1000", "limit = 0", "quota.limit = 0"),
        (
            "\"GET /pets/{petId}\" =",
            "\"GET /cats\" =",
            "route_throttle[\"GET /cats\"]",
        ),
    ] {
        let err = parse(&with(&PLAN.replace(from, to)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err} lacks {want}");
    }
    let err = parse(&with(&format!("{PLAN}{PLAN}")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("used by two usage plans"), "{err}");
}

#[test]
fn api_keys_need_long_unique_values_and_existing_plans() {
    let key =
        "[[api_keys]]\nname = \"acme\"\nvalue = \"acme-0123456789abcdef0123\"\nplan = \"gold\"\n";
    let c = parse(&with(&format!("{PLAN}{key}"))).unwrap();
    assert_eq!(c.api_keys[0].plans, vec!["gold".to_string()]);
    let err = parse(&with(&format!(
        "{PLAN}{}",
        key.replace("acme-0123456789abcdef0123", "short")
    )))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("api_keys[\"acme\"].value: is not valid") && !err.contains("short"),
        "{err}"
    );
    let err = parse(&with(&format!(
        "{PLAN}{key}{}",
        key.replace("name = \"acme\"", "name = \"other\"")
    )))
    .unwrap_err()
    .to_string();
    assert!(err.contains("values must be unique"), "{err}");
    let err = parse(&with(&format!(
        "{PLAN}{}",
        key.replace("plan = \"gold\"", "plan = \"silver\"")
    )))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("api_keys[\"acme\"].plan = \"silver\""),
        "{err}"
    );
    let two_plans = format!(
        "{PLAN}{}{}",
        PLAN.replace("\"gold\"", "\"gold2\""),
        key.replace("plan = \"gold\"", "plans = [\"gold\", \"gold2\"]")
    );
    let err = parse(&with(&two_plans)).unwrap_err().to_string();
    assert!(err.contains("at most one plan per stage"), "{err}");
    // GET /config never shows the value.
    let shown = serde_json::to_string(&c).unwrap();
    assert!(!shown.contains("acme-0123456789abcdef0123"));
}

#[test]
fn every_error_is_reported_at_once() {
    let text = BASE.replacen("workers = 2", "workers = -5\ndriver = \"x\"", 1);
    let err = parse(&text).unwrap_err();
    assert!(err.errors.len() >= 2, "{err}");
}

#[test]
fn uring_flags_must_be_known_and_consistent() {
    refused(
        "workers = 2",
        "uring_flags = [\"sqpoll\"]",
        &["server.uring_flags[0] = \"sqpoll\""],
    );
    refused(
        "workers = 2",
        "uring_flags = [\"defer_taskrun\"]",
        &["\"defer_taskrun\" needs \"single_issuer\""],
    );
    let c = parse(&BASE.replacen("workers = 2", "uring_flags = []", 1)).unwrap();
    assert_eq!(c.server.uring_flags, crate::config::UringFlags::default());
    assert_eq!(
        parse(BASE).unwrap().server.uring_flags,
        crate::config::UringFlags::DEFAULT
    );
}

#[test]
fn stage_cache_defaults_and_limits() {
    let stage = "variables = { backend = \"http://pets\" }";
    let cfg = parse(&BASE.replacen(
        stage,
        &format!("{stage}\n  cache = {{ enabled = true }}"),
        1,
    ))
    .unwrap();
    let c = cfg.apis[0].stages[0].cache.clone().unwrap();
    assert_eq!(c.ttl, DEFAULT_CACHE_TTL);
    assert_eq!(c.capacity, DEFAULT_CACHE_CAPACITY);
    assert_eq!(c.mode, CacheMode::Gateway);
    assert_eq!(c.client_invalidation, Invalidation::RequireApiKey);
    assert_eq!(c.max_entry, DEFAULT_CACHE_MAX_ENTRY);
    // ttl = 0s and enabled = false turn it off.
    for off in ["ttl = \"0s\"", "enabled = false"] {
        let cfg =
            parse(&BASE.replacen(stage, &format!("{stage}\n  cache = {{ {off} }}"), 1)).unwrap();
        assert!(cfg.apis[0].stages[0].cache.is_none(), "{off}");
    }
    let bad =
        |v: &str, want: &[&str]| refused(stage, &format!("{stage}\n  cache = {{ {v} }}"), want);
    bad(
        "ttl = \"2h\"",
        &["stages[\"prod\"].cache.ttl = \"2h\" is not valid", "3600s"],
    );
    bad("mode = \"rfc\"", &["cache.mode = \"rfc\"", "\"http\""]);
    bad(
        "client_invalidation = \"anyone\"",
        &["cache.client_invalidation", "require_api_key"],
    );
    bad("capacity = \"1KiB\"", &["cache.capacity = 1024", "64KiB"]);
    bad(
        "capacity = \"1MiB\", max_entry = \"1MiB\"",
        &["cache.max_entry", "eighth of capacity"],
    );
    bad("sizes = 3", &["sizes"]);
}

#[test]
fn route_cache_keys_are_checked() {
    let route = "route = \"GET /pets/{petId}\"";
    assert!(BASE.contains(route));
    let cfg = parse(&BASE.replacen(
        route,
        &format!("{route}\ncache = {{ ttl = \"60s\", key = [\"query.limit\", \"header.Accept\", \"path.petId\"] }}"),
        1,
    ))
    .unwrap();
    let rc = cfg.apis[0]
        .routes
        .iter()
        .find_map(|r| r.cache.clone())
        .unwrap();
    assert_eq!(rc.ttl, Some(std::time::Duration::from_secs(60)));
    assert_eq!(
        rc.key,
        vec![
            KeyPart::Query("limit".into()),
            KeyPart::Header("accept".into()),
            KeyPart::Path(0, "petId".into())
        ]
    );
    let bad = |v: &str, want: &[&str]| refused(route, &format!("{route}\ncache = {{ {v} }}"), want);
    bad(
        "key = [\"path.nope\"]",
        &["cache.key = \"path.nope\"", "variable of this route"],
    );
    bad(
        "key = [\"cookie.a\"]",
        &["\"query.NAME\", \"header.NAME\" or \"path.NAME\""],
    );
    bad("key = [\"query.a\", \"query.a\"]", &["each parameter once"]);
    bad("ttl = \"3601s\"", &["cache.ttl = \"3601s\""]);
}

/// Files are read by the compile step, which names the key they were written under.
#[test]
fn unreadable_tls_files_are_named_by_key() {
    let dir = std::env::temp_dir().join(format!("tollgate-compile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["a.test".into()]).unwrap();
    std::fs::write(dir.join("a.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("a.key"), c.key_pair.serialize_pem()).unwrap();
    let text = BASE.replacen(
        "addr = \"127.0.0.1:8080\"",
        "addr = \"127.0.0.1:8080\"\ntls = { cert = \"a.pem\", key = \"a.key\" }\nmtls = { client_ca = \"nope.pem\" }",
        1,
    );
    let cfg = Config::parse(&text, &dir).expect("valid as data");
    let err = super::check(&cfg)
        .expect_err("the CA file is missing")
        .to_string();
    assert!(
        err.contains("listeners[\"http\"].mtls.client_ca: cannot read"),
        "{err}"
    );
    let text = text.replace("a.key", "missing.key");
    let cfg = Config::parse(&text, &dir).expect("valid as data");
    let err = super::check(&cfg)
        .expect_err("the key file is missing")
        .to_string();
    assert!(err.contains("listeners[\"http\"].tls: "), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Schema errors (misspelt keys, wrong types) are reported all at once, each with its line.
#[test]
fn schema_errors_are_reported_together() {
    let text = "[server]\nworkres = 2\nstate_dir = 5\n[limits]\nmax_bodyy = \"1MiB\"\n";
    let errors = Config::parse(text, Path::new(".")).unwrap_err().errors;
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("line 2") && errors[0].contains("unknown field `workres`"));
    assert!(errors[1].contains("line 3") && errors[1].contains("invalid type"));
    assert!(errors[2].contains("line 5") && errors[2].contains("unknown field `max_bodyy`"));
    // A syntax error ends the list: what follows cannot be read.
    let errors = Config::parse("[server\nworkres = 2\n", Path::new("."))
        .unwrap_err()
        .errors;
    assert_eq!(errors.len(), 1, "{errors:#?}");
}
