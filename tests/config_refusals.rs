//! Settings that load but would break requests, or the process, are refused at load (or by
//! the CLI), naming the key, the value and what is allowed: integration headers the gateway
//! writes itself, targets on port 0, two listeners on one socket, `hash_key` names, type
//! errors in the config's words, `--workers` past its range, documents that are not files.

mod common;

use common::*;

fn refused(toml: &str, want: &str) {
    let (ok, text) = check_config(toml);
    assert!(!ok, "loaded: {toml}");
    assert!(text.contains(want), "{want:?} not in: {text}");
}

#[test]
fn settings_that_would_break_requests_are_refused_at_load() {
    let http = |extra: &str| {
        Cfg::new()
            .route(
                "POST /x",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://127.0.0.1:9/x\"{extra} }}"
                ),
            )
            .toml()
    };
    // Framing, the hop and the forwarding fields are the gateway's: set again they would
    // reach the upstream twice, or conflict (Content-Length beside Transfer-Encoding).
    for name in [
        "content-length",
        "Transfer-Encoding",
        "connection",
        "host",
        "x-forwarded-for",
        // The trace context: two traceparents make the upstream start a new trace.
        "traceparent",
        "TraceState",
    ] {
        refused(
            &http(&format!(", headers = {{ \"{name}\" = \"0\" }}")),
            &format!("integration.headers = \"{name}\" is not valid: expected a header other than those the gateway writes itself"),
        );
    }
    let (ok, text) = check_config(&http(", headers = { \"authorization\" = \"Bearer t\" }"));
    assert!(ok, "{text}");
    // Port 0 is nobody's: every request would get 502.
    refused(
        &Cfg::new()
            .upstream("[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:0\"]\n")
            .toml(),
        "upstreams[\"u\"].targets[0] = \"127.0.0.1:0\" is not valid: expected \"host:port\" that resolves (port 0 names no server)",
    );
    refused(
        &Cfg::new()
            .route(
                "GET /x",
                "integration = { type = \"http\", uri = \"http://127.0.0.1:0/x\" }",
            )
            .toml(),
        "port 0 names no server",
    );
    // One socket for two listeners: `check` said OK, and the start failed.
    refused(
        &Cfg::new()
            .listeners("[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:28471\"\n\n[[listeners]]\nname = \"all\"\naddr = \"0.0.0.0:28471\"\n")
            .toml(),
        "listeners[\"all\"].addr: 0.0.0.0:28471 takes the socket of listener \"http\" (127.0.0.1:28471)",
    );
    refused(
        &Cfg::new()
            .listeners("[[listeners]]\nname = \"http\"\naddr = \"127.0.0.1:28471\"\n\n[[listeners]]\nname = \"mapped\"\naddr = \"[::ffff:127.0.0.1]:28471\"\n")
            .toml(),
        "listeners[\"mapped\"].addr: [::ffff:127.0.0.1]:28471 is the socket of listener \"http\" (127.0.0.1:28471)",
    );
    // A header name with a space, and one error for it alone.
    let (ok, text) = check_config(
        &Cfg::new()
            .upstream("[[upstreams]]\nname = \"u\"\ntargets = [\"127.0.0.1:9\"]\nbalance = \"hash\"\nhash_key = \"header.a b\"\n")
            .toml(),
    );
    assert!(!ok);
    assert!(
        text.contains("hash_key = \"header.a b\" is not valid"),
        "{text}"
    );
    assert!(!text.contains("is only used with balance"), "{text}");
    // A client certificate's field (the client's to choose) in the request's framing or the
    // gateway's own fields: a second Host, a stray Transfer-Encoding.
    for name in [
        "host",
        "Transfer-Encoding",
        "x-request-id",
        "x-forwarded-for",
    ] {
        refused(
            &Cfg::new()
                .listener(format!("tls = {{ cert = \"s.pem\", key = \"s.key\" }}\nmtls = {{ client_ca = \"ca.pem\", mode = \"optional\", headers = {{ \"{name}\" = \"subjectDN\" }} }}"))
                .toml(),
            &format!("mtls.headers = \"{name}\" is not valid: expected a header other than those the gateway writes itself"),
        );
    }
    // Type errors say what is wanted in the config's words.
    refused(
        &Cfg::new().stage_extra("cache = 5").toml(),
        "invalid type: integer `5`, expected a table",
    );
    refused(
        &Cfg::new()
            .api_extra("cors = { allow_origins = [\"*\"], max_age = true }")
            .toml(),
        "expected a whole number of seconds or a duration",
    );
}

/// A path literal that is not ASCII goes upstream percent-encoded (a request line is ASCII).
#[test]
fn a_uri_literal_that_is_not_ascii_goes_percent_encoded() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .route(
                "GET /x/{id}",
                format!(
                    "integration = {{ type = \"http\", uri = \"http://{}/café/{{id}}/thé\" }}",
                    up.addr
                ),
            )
            .toml(),
    );
    let r = get(g.addr(), "/x/7");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "/caf%C3%A9/7/th%C3%A9");
}

#[test]
fn the_cli_refuses_what_it_cannot_take() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let dir = TempDir::new();
    let cfg = dir.0.join("c.toml");
    std::fs::write(&cfg, Cfg::new().toml()).unwrap();
    let cfg = cfg.to_str().unwrap();
    // `server.workers` takes 0 to 1024: `--workers` too (a huge one panicked at start).
    for w in ["1025", "99999", "18446744073709551615"] {
        let (ok, text) = run(&["--config", cfg, "--workers", w, "check"]);
        assert!(!ok, "{w}");
        assert!(text.contains("invalid value"), "{text}");
    }
    // A document to import is a file (a device was read without end).
    let (ok, text) = run(&["--config", cfg, "import", "/dev/zero"]);
    assert!(!ok);
    assert!(text.contains("/dev/zero: not a regular file"), "{text}");
    // A recovery's output in a folder that does not exist is named as such.
    let (ok, text) = run(&[
        "--config",
        cfg,
        "state",
        "recover",
        "--out",
        "/nonexistent-tollgate-dir/x.redb",
    ]);
    assert!(!ok);
    assert!(
        text.contains("its folder /nonexistent-tollgate-dir does not exist"),
        "{text}"
    );
}

/// `unauthorized_invalidation` takes Amazon's three strategies, and only where a key is
/// required (elsewhere no one is refused, and the setting would do nothing).
#[test]
fn unauthorized_invalidation_is_checked() {
    let stage = |cache: &str| {
        Cfg::new()
            .stage_extra(format!("cache = {{ {cache} }}"))
            .route("GET /m", "integration = { type = \"mock\", body = \"m\" }")
            .toml()
    };
    for ok in ["warn", "ignore", "fail_with_403"] {
        let (loaded, text) = check_config(&stage(&format!(
            "client_invalidation = \"require_api_key\", unauthorized_invalidation = \"{ok}\""
        )));
        assert!(loaded, "{ok}: {text}");
    }
    refused(
        &stage("unauthorized_invalidation = \"FAIL_WITH_403\""),
        "cache.unauthorized_invalidation = \"FAIL_WITH_403\" is not valid: expected \"warn\", \"ignore\" or \"fail_with_403\"",
    );
    refused(
        &stage("client_invalidation = \"allow\", unauthorized_invalidation = \"ignore\""),
        "only with client_invalidation = \"require_api_key\"",
    );
}

/// A domain that lists no listener would be served nowhere (every request 404): refused,
/// saying how to serve it everywhere.
#[test]
fn a_domain_on_no_listener_is_refused() {
    let toml = Cfg::new()
        .route("GET /m", "integration = { type = \"mock\", body = \"m\" }")
        .extra("[[domains]]\nhost = \"a.example.test\"\nlisteners = []\nmappings = [{ base_path = \"\", api = \"api\", stage = \"prod\" }]\n")
        .toml();
    refused(
        &toml,
        "domains[\"a.example.test\"].listeners: lists no listener",
    );
}

/// Durations that may be 0 (off) say so in their refusal: `leeway` 0 or 1s-600s, an external
/// authorizer's `ttl` 0 or 1s-3600s (the message gave the range without the 0 it took).
#[test]
fn durations_that_may_be_zero_say_so() {
    let jwt = |leeway: &str| {
        Cfg::new()
            .api_extra(format!("[[apis.authorizers]]\nname = \"users\"\ntype = \"jwt\"\nissuer = \"https://issuer.test\"\naudience = [\"a\"]\njwks_uri = \"http://127.0.0.1:9/jwks\"\nleeway = \"{leeway}\"\n"))
            .toml()
    };
    refused(
        &jwt("500ms"),
        "leeway = \"500ms\" is not valid: expected 0, or a duration from 1s to 600s",
    );
    for ok in ["0", "0s", "0ms", "1s", "10m"] {
        let (loaded, text) = check_config(&jwt(ok));
        assert!(loaded, "leeway {ok}: {text}");
    }
    let request = |ttl: &str| {
        Cfg::new()
            .api_extra(format!("[[apis.authorizers]]\nname = \"ext\"\ntype = \"request\"\nuri = \"http://127.0.0.1:9/check\"\nidentity_sources = [\"$request.header.x-token\"]\nttl = \"{ttl}\"\n"))
            .toml()
    };
    refused(
        &request("3601s"),
        "ttl = \"3601s\" is not valid: expected 0, or a duration from 1s to 3600s",
    );
    for ok in ["0", "0s", "300s"] {
        let (loaded, text) = check_config(&request(ok));
        assert!(loaded, "ttl {ok}: {text}");
    }
}

/// What `check` says is what the operator wrote: a bad value spanning lines is one error (not
/// a second, made-up syntax error after it), a size of the wrong type says what a size is, a
/// capacity too small is not also blamed on a `max_entry` never written, `alpn` on a plain
/// listener (where nothing reads it) is refused, and a `state_dir` the gateway could not
/// make is a warning.
#[test]
fn check_names_what_was_written() {
    let (ok, text) = check_config(&Cfg::new().server("max_bdy = \"\"\"a\nb\"\"\"\n").toml());
    assert!(!ok);
    assert!(text.contains("unknown field `max_bdy`"), "{text}");
    assert_eq!(text.matches("config is not valid").count(), 1, "{text}");
    refused(
        &Cfg::new().limits("max_body = true").toml(),
        "expected a size: a number of bytes or a string with a unit (65536, \"64KiB\")",
    );
    let (ok, text) = check_config(
        &Cfg::new()
            .stage_extra("cache = { enabled = true, capacity = 8 }")
            .toml(),
    );
    assert!(!ok);
    assert!(
        text.contains("cache.capacity = 8 is not valid: expected at least 64KiB"),
        "{text}"
    );
    assert!(!text.contains("max_entry"), "{text}");
    refused(
        &Cfg::new().listener("alpn = [\"h2\"]").toml(),
        "listeners[\"http\"].alpn: belongs on a TLS listener",
    );
    let dir = TempDir::new();
    let file = dir.0.join("f");
    std::fs::write(&file, "").unwrap();
    let (ok, text) = check_config(
        &Cfg::new()
            .server(format!("state_dir = {:?}\n", file.join("x")))
            .toml(),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: server.state_dir = ")
            && text.contains("the gateway will not start"),
        "{text}"
    );
    let (ok, text) = check_config(&Cfg::new().toml());
    assert!(ok && !text.contains("state_dir"), "{text}");
}
