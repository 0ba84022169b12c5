//! SigV4-signed callers (`authorization = "aws_iam"`) end to end, signed by a real signer:
//! botocore's `SigV4Auth` (tests/sigv4/botocore_client.py) — GET and POST with query
//! strings, repeated and odd-case headers, a unicode path, UNSIGNED-PAYLOAD, and the
//! refusals (tampered, wrong secret, unknown or disabled key, expired, denied by policy);
//! access keys made through the admin API, their secrets sealed at rest.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

const SECRETS_KEY: &str = "q0VvXk3pYH5o1cF4n9T2bW8sR6dJ7aL0zE3uM5yG1iQ=";

fn toml(up: &Upstream) -> String {
    toml_with(up, "")
}

/// [`toml`] with `api` (keys of the `[[apis]]` table) added.
fn toml_with(up: &Upstream, api: &str) -> String {
    Cfg::new()
        .admin("")
        .api_extra(api)
        .upstream(format!(
            "[aws_iam]\nregion = \"us-east-1\"\nsecrets_key_file = \"iam.key\"\n\n[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n",
            up.addr
        ))
        .route(
            "ANY /pets",
            "authorization = \"aws_iam\"\nintegration = { type = \"http\", uri = \"http://up/pets\", headers = { \"x-key\" = \"${context.authorizer.principalId}\" } }",
        )
        .route(
            "ANY /pets/{proxy+}",
            "authorization = \"aws_iam\"\nintegration = { type = \"http\", uri = \"http://up/pets/{proxy}\" }",
        )
        .route("GET /open", "integration = { type = \"mock\", body = \"open\" }")
        .toml()
}

fn start(dir: TempDir, up: &Upstream) -> Gw {
    std::fs::write(dir.0.join("iam.key"), SECRETS_KEY).unwrap();
    Gw::start_in(dir, &toml(up))
}

fn create(gw: &Gw, name: &str, resource: &str) -> (String, String) {
    let body = json!({"name": name, "policy": {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": resource}]}});
    let r = admin_with(gw.admin(), "POST", "/accesskeys", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_string(),
        v["secretAccessKey"].as_str().unwrap().to_string(),
    )
}

fn botocore(gw: &Gw, ops: &(String, String), reader: &(String, String)) -> Value {
    botocore_in(gw, "us-east-1", ops, reader)
}

fn botocore_in(gw: &Gw, region: &str, ops: &(String, String), reader: &(String, String)) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sigv4/botocore_client.py"
    );
    let out = Command::new("python3")
        .args([script, &format!("http://{}", gw.addr()), region])
        .args([&ops.0, &ops.1, &reader.0, &reader.1])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "botocore client failed (pip install botocore):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const BAD_SIGNATURE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const BAD_TOKEN: &str = "The security token included in the request is invalid.";

fn message(r: &Value) -> String {
    serde_json::from_str::<Value>(r["body"].as_str().unwrap()).unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn botocore_signed_requests_pass_and_forgeries_do_not() {
    let up = Upstream::echo();
    let g = start(TempDir::new(), &up);
    let ops = create(&g, "ops", "arn:aws:execute-api:*:*:api/prod/*");
    let reader = create(&g, "reader", "arn:aws:execute-api:*:*:api/prod/GET/pets/*");
    let r = botocore(&g, &ops, &reader);
    for case in [
        "get_query",
        "post_json",
        "odd_case_repeated_headers",
        "unicode_path",
        "unsigned_payload",
        "reader_get",
        "date_header",
        "double_slashes",
        "extension_method",
        "presigned_get",
        "presigned_unsigned_payload",
        "presigned_post",
        "presigned_ten_minutes_ago",
        "absolute_same_host",
    ] {
        assert_eq!(r[case]["status"], 200, "{case}: {}", r[case]);
    }
    let seen: Value = serde_json::from_str(r["get_query"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["target"], "/pets?limit=10&q=a%20b%2Fc&empty=");
    assert_eq!(seen["headers"]["x-key"], ops.0.as_str());
    let seen: Value = serde_json::from_str(r["post_json"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        seen["body"], r#"{"name": "Rex"}"#,
        "the body read for its hash still reaches the upstream"
    );
    // A presigned URL's parameters reach the upstream with the rest of the query.
    let seen: Value = serde_json::from_str(r["presigned_get"]["body"].as_str().unwrap()).unwrap();
    let target = seen["target"].as_str().unwrap();
    assert!(
        target.starts_with("/pets?limit=10&q=a%20b&X-Amz-Algorithm=AWS4-HMAC-SHA256&")
            && target.contains("&X-Amz-Signature="),
        "{target}"
    );
    let seen: Value =
        serde_json::from_str(r["presigned_unsigned_payload"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["body"], "anything");
    let seen: Value = serde_json::from_str(r["unicode_path"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(seen["target"], "/pets/caf%C3%A9%20%E2%98%83");
    for (case, status, msg) in [
        ("tampered_header", 403, BAD_SIGNATURE),
        ("tampered_body", 403, BAD_SIGNATURE),
        ("wrong_secret", 403, BAD_SIGNATURE),
        ("presigned_tampered_body", 403, BAD_SIGNATURE),
        ("presigned_tampered_query", 403, BAD_SIGNATURE),
        ("absolute_other_host", 403, BAD_SIGNATURE),
        ("presigned_absolute_other_host", 403, BAD_SIGNATURE),
        (
            "presigned_and_header",
            403,
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
        ),
        (
            "presigned_missing_parameter",
            403,
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders'. Re-examine the query-string parameters.",
        ),
        (
            "presigned_reader_post",
            403,
            "User: arn:aws:iam::000000000000:user/reader is not authorized to perform: execute-api:Invoke on resource: arn:aws:execute-api:local:000000000000:api/prod/POST/pets",
        ),
        ("unknown_key", 403, BAD_TOKEN),
        (
            "two_authorizations",
            403,
            "The Authorization header must be given once.",
        ),
        (
            "reader_post",
            403,
            "User: arn:aws:iam::000000000000:user/reader is not authorized to perform: execute-api:Invoke on resource: arn:aws:execute-api:local:000000000000:api/prod/POST/pets",
        ),
    ] {
        assert_eq!(r[case]["status"], status, "{case}: {}", r[case]);
        assert_eq!(message(&r[case]), msg, "{case}");
    }
    assert_eq!(r["expired"]["status"], 403);
    assert!(
        message(&r["expired"])
            .starts_with("Signature expired: 20150830T123600Z is now earlier than "),
        "{}",
        r["expired"]
    );
    for case in ["presigned_expired", "presigned_ten_minutes_ago_60s"] {
        assert_eq!(r[case]["status"], 403, "{case}: {}", r[case]);
        let m = message(&r[case]);
        assert!(
            m.starts_with("Signature expired: ") && m.ends_with(" - 60 sec.)"),
            "{case}: {m}"
        );
    }
    // Unsigned: Amazon's answer for a missing signature; routes without aws_iam are open.
    let resp = get(g.addr(), "/pets");
    assert_eq!(
        (resp.status, resp.json()),
        (403, json!({"message": "Missing Authentication Token"}))
    );
    assert_eq!(get(g.addr(), "/open").text(), "open");
    // A session token is not supported: refused as an invalid token.
    let resp = Client::connect(g.addr()).request(
        b"GET /pets HTTP/1.1\r\nHost: h\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIAX/20150830/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31\r\nX-Amz-Security-Token: abc\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (resp.status, resp.json()),
        (403, json!({"message": BAD_TOKEN}))
    );
}

/// A reload that changes `[aws_iam] region` applies at once: signing keys derived for the
/// old region are not used for the new one (every caller was refused until midnight UTC).
#[test]
fn a_new_region_applies_at_the_reload() {
    let up = Upstream::echo();
    let g = start(TempDir::new(), &up);
    let ops = create(&g, "ops", "arn:aws:execute-api:*:*:api/prod/*");
    let reader = create(&g, "reader", "arn:aws:execute-api:*:*:api/prod/GET/pets/*");
    assert_eq!(botocore(&g, &ops, &reader)["get_query"]["status"], 200);
    let text = std::fs::read_to_string(&g.path).unwrap();
    g.rewrite(&text.replace("region = \"us-east-1\"", "region = \"eu-west-1\""));
    g.gw.as_ref().unwrap().reload().unwrap();
    let r = botocore_in(&g, "eu-west-1", &ops, &reader);
    assert_eq!(r["get_query"]["status"], 200, "{}", r["get_query"]);
    let r = botocore(&g, &ops, &reader);
    assert_eq!(r["get_query"]["status"], 403, "{}", r["get_query"]);
}

#[test]
fn access_keys_are_managed_through_the_admin_api_and_sealed_at_rest() {
    let up = Upstream::echo();
    let g = start(TempDir::new(), &up);
    let ops = create(&g, "ops", "*");
    let reader = create(&g, "reader", "*");
    // The secret is shown once: never in lists or reads.
    let list = admin(g.admin(), "GET", "/accesskeys", Some(TOKEN)).text();
    assert!(list.contains(&ops.0) && !list.contains(&ops.1), "{list}");
    let one = admin(
        g.admin(),
        "GET",
        &format!("/accesskeys/{}", ops.0),
        Some(TOKEN),
    )
    .json();
    assert_eq!(one["name"], "ops");
    assert!(one.get("secretAccessKey").is_none());
    // Bad input: a clear 400, nothing created.
    let r = admin_with(
        g.admin(),
        "POST",
        "/accesskeys",
        r#"{"name": "x", "policy": {"Statement": [{"Effect": "Perhaps"}]}}"#,
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("policy: "),
        "{}",
        r.text()
    );
    // A Condition (or NotResource, NotAction, Principal) is not evaluated: refused, where
    // ignoring it would make its Allow unconditional.
    let r = admin_with(
        g.admin(),
        "POST",
        "/accesskeys",
        r#"{"name": "cond", "policy": {"Statement": [{"Effect": "Allow", "Action": "execute-api:Invoke", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}}]}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("Condition"), "{}", r.text());
    let r = admin_with(
        g.admin(),
        "POST",
        "/accesskeys",
        r#"{"name": "no spaces allowed", "policy": {"Statement": []}}"#,
    );
    assert_eq!(r.status, 400);
    // Descriptions as an API key's: at most 1024 characters, no control characters.
    for d in ["x".repeat(1025), "a\u{1b}[31m".to_string()] {
        let body = json!({"name": "d", "description": d, "policy": {"Statement": []}});
        let r = admin_with(g.admin(), "POST", "/accesskeys", &body.to_string());
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            r.text().contains("description: at most 1024"),
            "{}",
            r.text()
        );
        let r = admin_with(
            g.admin(),
            "PATCH",
            &format!("/accesskeys/{}", ops.0),
            &json!({ "description": d }).to_string(),
        );
        assert_eq!(r.status, 400, "{}", r.text());
    }
    assert_eq!(
        admin_with(
            g.admin(),
            "POST",
            "/accesskeys",
            &json!({"name": "ops", "policy": {"Statement": []}}).to_string()
        )
        .status,
        409
    );
    // Disabled: refused; enabled again: works.
    let path = format!("/accesskeys/{}", ops.0);
    assert_eq!(
        admin_with(g.admin(), "PATCH", &path, r#"{"enabled": false}"#).status,
        200
    );
    assert_eq!(
        message(&botocore(&g, &ops, &reader)["get_query"]),
        BAD_TOKEN
    );
    assert_eq!(
        admin_with(g.admin(), "PATCH", &path, r#"{"enabled": true}"#).status,
        200
    );
    // At rest the secret is sealed; after a restart it still verifies.
    let dir = g.stop();
    let state: Vec<u8> = std::fs::read_dir(dir.0.join("data"))
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        !state.windows(ops.1.len()).any(|w| w == ops.1.as_bytes()),
        "a secret in clear at rest"
    );
    let g = start(dir, &up);
    assert_eq!(botocore(&g, &ops, &reader)["get_query"]["status"], 200);
    // Deleted: gone.
    assert_eq!(admin(g.admin(), "DELETE", &path, Some(TOKEN)).status, 200);
    assert_eq!(
        message(&botocore(&g, &ops, &reader)["get_query"]),
        BAD_TOKEN
    );
    assert_eq!(admin(g.admin(), "GET", &path, Some(TOKEN)).status, 404);
}

#[test]
fn access_keys_need_aws_iam_and_its_secrets_key() {
    let g = Gw::start(
        &Cfg::new()
            .admin("")
            .route("GET /m", "integration = { type = \"mock\" }")
            .toml(),
    );
    let r = admin_with(
        g.admin(),
        "POST",
        "/accesskeys",
        r#"{"name": "a", "policy": {"Statement": []}}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("[aws_iam]"), "{}", r.text());
    // A route wanting aws_iam without [aws_iam] is refused at load, by key.
    let bad = Cfg::new()
        .route(
            "GET /x",
            "authorization = \"aws_iam\"\nintegration = { type = \"mock\" }",
        )
        .toml();
    let err = tollgate::Config::parse(&bad, std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("routes[\"GET /x\"].authorization: \"aws_iam\" needs an [aws_iam] table"),
        "{err}"
    );
}

/// A resource policy that allows the caller admits what the key's own policy does not name
/// (Amazon's Table A, a caller of the API's own account); a bad signature is still refused.
#[test]
fn a_resource_policy_that_allows_the_caller_admits_what_the_key_does_not_name() {
    let up = Upstream::echo();
    let dir = TempDir::new();
    std::fs::write(dir.0.join("iam.key"), SECRETS_KEY).unwrap();
    let g = Gw::start_in(
        dir,
        &toml_with(
            &up,
            "resource_policy = { allow = [\"127.0.0.0/8\", \"::1/128\"] }\n",
        ),
    );
    let ops = create(&g, "ops", "arn:aws:execute-api:*:*:api/prod/*");
    let reader = create(&g, "reader", "arn:aws:execute-api:*:*:api/prod/GET/pets/*");
    let r = botocore(&g, &ops, &reader);
    assert_eq!(r["reader_post"]["status"], 200, "{}", r["reader_post"]);
    assert_eq!(r["tampered_header"]["status"], 403);
    assert_eq!(message(&r["tampered_header"]), BAD_SIGNATURE);
}
