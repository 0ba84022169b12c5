//! The admin server's own tables checked against each other.

use super::*;

/// `GET /openapi.json` documents exactly the paths and methods the admin server serves.
#[test]
fn the_openapi_document_matches_the_routes() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut served: Vec<String> = ROUTES
        .iter()
        .flat_map(|(p, ms)| ms.split(", ").map(move |m| format!("{m} {p}")))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    // Every operation says what it answers, and every $ref resolves.
    let text = OPENAPI;
    let mut rest = text;
    while let Some(at) = rest.find("\"$ref\": \"#/components/") {
        let r = &rest[at + 22..];
        let end = r.find('"').unwrap();
        let mut node = &doc["components"];
        for part in r[..end].split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "dangling $ref {}", &r[..end]);
        rest = &r[end..];
    }
}

#[test]
fn paths_match_by_pattern() {
    assert_eq!(
        allowed_methods(&["apikeys", "k1"]),
        Some("GET, PATCH, DELETE")
    );
    assert_eq!(allowed_methods(&["apikeys", "import"]), Some("POST"));
    assert_eq!(
        allowed_methods(&["usageplans", "gold", "keys", "k", "quota", "reset"]),
        Some("POST")
    );
    assert_eq!(allowed_methods(&["apikeys", "k1", "more"]), None);
    assert_eq!(allowed_methods(&[]), None);
}
