//! Values `tollgate check` refuses that the gateway accepted before and then served wrongly.

use super::tests::{parse, refused, with};

#[test]
fn values_that_would_fail_every_request_are_refused_at_load() {
    // 0 is no limit to nginx; here it would refuse every body.
    for zero in ["0", "\"0\"", "\"0KiB\""] {
        let err = parse(&with(&format!("[limits]\nmax_body = {zero}")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits.max_body") && err.contains("at least 1 byte"),
            "{err}"
        );
    }
    // An IPv6 target without brackets: where its port is would be a guess.
    refused(
        "targets = [\"127.0.0.1:9000\"]",
        "targets = [\"fe80::1:8080\"]",
        &["an IPv6 address goes in brackets"],
    );
    // A mapped path written with a dot segment: refused at load, not on every request.
    refused(
        "{petId}\" }",
        "{petId}\" }\n  request_parameters = { \"overwrite:path\" = \"/v1/../v2/items\" }",
        &["overwrite:path", "without `.` or `..` segments"],
    );
    // Any control character: one passed to an HTTP/2 client failed every answer.
    refused(
        "{petId}\" }",
        "{petId}\", headers = { \"x-a\" = \"a\\u0001b\" } }",
        &["integration.headers.x-a", "without control characters"],
    );
}
