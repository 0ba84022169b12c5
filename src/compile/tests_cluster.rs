//! What `tollgate check` says about `[cluster]`: the fleet's Redis, or the Sentinels that
//! name it, and the fallback.

use super::tests::{parse, with};
use crate::config::*;

#[test]
fn cluster_needs_a_redis_address_and_a_known_fallback() {
    let c = parse(&with(
        "[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnodes = 3\non_redis_error = \"deny\"",
    ))
    .unwrap();
    let cl = c.cluster.unwrap();
    assert_eq!((cl.nodes, cl.on_redis_error), (3, OnRedisError::Deny));
    let c = parse(&with(
        "[cluster]\nsentinels = [\"127.0.0.1:26379\", \"127.0.0.1:26380\"]\nsentinel_master = \"tg\"",
    ))
    .unwrap();
    let cl = c.cluster.unwrap();
    assert_eq!((cl.sentinels.len(), cl.sentinel_master.as_str()), (2, "tg"));
    for (text, want) in [
        ("[cluster]\nnodes = 2", "cluster.redis: is required"),
        (
            "[cluster]\nredis = \"127.0.0.1:6379\"",
            "cluster.redis = \"127.0.0.1:6379\"",
        ),
        (
            "[cluster]\nredis = \"redis://127.0.0.1\"",
            "cluster.redis = \"redis://127.0.0.1\"",
        ),
        (
            "[cluster]\nredis = \"redis://127.0.0.1:6379\"\non_redis_error = \"panic\"",
            "cluster.on_redis_error = \"panic\"",
        ),
        (
            "[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnodes = 0",
            "cluster.nodes = 0",
        ),
        (
            "[cluster]\nsentinels = [\"127.0.0.1:26379\"]",
            "cluster.sentinel_master: is required with cluster.sentinels",
        ),
        (
            "[cluster]\nsentinels = []\nsentinel_master = \"tg\"",
            "cluster.sentinels: is empty",
        ),
        (
            "[cluster]\nredis = \"redis://127.0.0.1:6379\"\nsentinels = [\"127.0.0.1:26379\"]\nsentinel_master = \"tg\"",
            "cluster.redis = \"redis://127.0.0.1:6379\" is not valid: expected absent with cluster.sentinels",
        ),
        (
            "[cluster]\nsentinels = [\"nowhere\"]\nsentinel_master = \"tg\"",
            "cluster.sentinels[0] = \"nowhere\"",
        ),
        (
            "[cluster]\nredis = \"redis://127.0.0.1:6379\"\nsentinel_master = \"tg\"",
            "cluster.sentinel_master: needs cluster.sentinels",
        ),
    ] {
        let err = parse(&with(text)).unwrap_err().to_string();
        assert!(err.contains(want), "{err} lacks {want}");
    }
}
