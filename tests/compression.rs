//! Response compression (a stage's `compression`): gzip and brotli by Accept-Encoding, for
//! proxied, cached and mock answers, with `Vary: Accept-Encoding` and weak ETags; never for
//! small, already-encoded, unlisted or unframed answers; cache entries stored once and each
//! encoding made once. Request bodies a validator reads are decoded, and a bomb gets 413.

mod common;

use std::io::{Read, Write};

use common::*;

fn json_body(n: usize) -> String {
    let mut s = String::from("[");
    while s.len() < n {
        s.push_str("{\"name\":\"rex\",\"tag\":\"dog\"},");
    }
    s.push_str("{}]");
    s
}

fn gateway(up: &Upstream, stage: &str) -> Gw {
    Gw::start(
        &Cfg::new()
            .limits("max_body = \"64KiB\"")
            .upstream(format!("[[upstreams]]\nname = \"up\"\ntargets = [\"{}\"]\n", up.addr))
            .stage_extra(format!("compression = {{ min_size = \"1KiB\" }}\n{stage}"))
            .api_extra(
                "\n  [[apis.models]]\n  name = \"Any\"\n  schema = '{\"type\": \"object\", \"required\": [\"name\"]}'\n",
            )
            .route("GET /{what}", "integration = { type = \"http\", uri = \"http://up/{what}\" }")
            .route(
                "GET /mock/big",
                format!("integration = {{ type = \"mock\", body = '{}', headers = {{ \"content-type\" = \"application/json\", \"etag\" = '\"m1\"' }} }}", json_body(3000)),
            )
            .route(
                "GET /mock/identity",
                format!("integration = {{ type = \"mock\", body = '{}', headers = {{ \"content-type\" = \"application/json\", \"content-encoding\" = \"identity\" }} }}", json_body(3000)),
            )
            .route(
                "POST /check",
                "request_validator = \"body\"\nrequest_models = { \"application/json\" = \"Any\" }\nintegration = { type = \"mock\", body = \"valid\" }",
            )
            .toml(),
    )
}

fn upstream() -> Upstream {
    Upstream::start(|s| {
        let body = json_body(4000);
        let (ct, extra, body) = match s.target.as_str() {
            "/small" => ("application/json", "", "{}".to_string()),
            "/png" => ("image/png", "", body),
            "/encoded" => ("application/json", "Content-Encoding: gzip\r\n", body),
            "/identity" => ("application/json", "Content-Encoding: identity\r\n", body),
            "/cond" if s.header("if-none-match").is_some() => {
                return Action::Raw(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec())
            }
            "/chunked" => {
                return Action::Raw(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).into_bytes())
            }
            _ => ("application/json", "ETag: \"v1\"\r\nCache-Control: max-age=60\r\n", body),
        };
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    })
}

fn req(g: &Gw, method: &str, path: &str, ae: &str) -> Resp {
    let ae = if ae.is_empty() {
        String::new()
    } else {
        format!("Accept-Encoding: {ae}\r\n")
    };
    Client::connect(g.addr()).request(
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{ae}Connection: close\r\n\r\n").as_bytes(),
    )
}

fn gunzip(b: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(b)
        .read_to_string(&mut s)
        .unwrap();
    s
}

fn unbrotli(b: &[u8]) -> String {
    let mut s = String::new();
    brotli::Decompressor::new(b, 4096)
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[test]
fn proxied_and_mock_answers_are_compressed_for_clients_that_take_it() {
    let up = upstream();
    let g = gateway(&up, "");
    let plain = json_body(4000);
    let r = req(&g, "GET", "/pets", "gzip, deflate");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    assert_eq!(
        r.header("etag"),
        Some("W/\"v1\""),
        "a compressed body's ETag is weak"
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert!(r.body.len() < plain.len() / 4);
    assert_eq!(gunzip(&r.body), plain);

    let r = req(&g, "GET", "/pets", "gzip;q=0.5, br");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(unbrotli(&r.body), plain);

    // A client that takes neither: the plain body, and a Vary that says why.
    let r = req(&g, "GET", "/pets", "");
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, Some("accept-encoding"))
    );
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert_eq!(r.text(), plain);

    // Not compressed: too small, a type not listed, already encoded, no length (streamed).
    for path in ["/small", "/png", "/chunked"] {
        let r = req(&g, "GET", path, "gzip, br");
        assert_eq!(r.header("content-encoding"), None, "{path}");
        assert_eq!(r.header("vary"), None, "{path}");
    }
    let r = req(&g, "GET", "/encoded", "br");
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "the upstream's own"
    );

    // The gateway's own answers too, their validator weak once encoded (other bytes).
    let r = req(&g, "GET", "/mock/big", "gzip");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&r.body), json_body(3000));
    assert_eq!(r.header("etag"), Some("W/\"m1\""));
    let r = req(&g, "GET", "/mock/big", "identity");
    assert_eq!(r.header("etag"), Some("\"m1\""));
    // `Content-Encoding: identity` is no coding: the body is compressed, and the answer says
    // the one coding applied (two would not decode).
    for path in ["/identity", "/mock/identity"] {
        let r = req(&g, "GET", path, "gzip");
        let codings: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(codings, ["gzip"], "{path}");
        assert!(gunzip(&r.body).starts_with("[{"), "{path}");
    }
}

/// A 304 to a client revalidating the weak ETag of an answer it got compressed says that
/// ETag, and the Vary the answer said (RFC 9110 15.4.5), not the upstream's strong one.
#[test]
fn a_304_says_the_etag_and_vary_of_the_compressed_answer() {
    let up = upstream();
    let g = gateway(&up, "");
    let r = req(&g, "GET", "/cond", "gzip");
    assert_eq!((r.status, r.header("etag")), (200, Some("W/\"v1\"")));
    let cond = |inm: &str| {
        Client::connect(g.addr()).request(
            format!("GET /cond HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nIf-None-Match: {inm}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let r = cond("W/\"v1\"");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("W/\"v1\""));
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    // Revalidating the strong one (an uncompressed copy): the upstream's answer as it is.
    let r = cond("\"v1\"");
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
}

/// A coding with a malformed weight (`q=abc`, `q=1.5`) is not honoured, as nginx does: the
/// answer goes uncompressed unless another entry takes it.
#[test]
fn malformed_weights_are_not_honoured() {
    let up = upstream();
    let g = gateway(&up, "");
    for ae in ["gzip;q=abc", "gzip;q=1.5", "br;q=2, gzip;q=-1"] {
        let r = req(&g, "GET", "/pets", ae);
        assert_eq!(
            (r.header("content-encoding"), r.header("vary")),
            (None, Some("accept-encoding")),
            "{ae}"
        );
        assert_eq!(r.text(), json_body(4000));
    }
    let r = req(&g, "GET", "/pets", "br;q=0.5x, gzip;q=0.5");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
}

/// A HEAD gets the header fields a GET would (RFC 9110 9.3.2): the coding, `Vary`, the weak
/// ETag and, where the gateway holds the body, its compressed length; a proxied HEAD says no
/// length (the compressed one is not known without the body). The connection goes on.
#[test]
fn head_answers_say_what_a_get_would() {
    let up = upstream();
    for stage in ["", "cache = { ttl = \"300s\", capacity = \"1MiB\" }"] {
        let g = gateway(&up, stage);
        for path in ["/pets", "/mock/big"] {
            let get = req(&g, "GET", path, "gzip");
            assert_eq!(get.header("content-encoding"), Some("gzip"), "{path}");
            let mut c = Client::connect(g.addr());
            let head = format!("HEAD {path} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
            c.send(head.as_bytes());
            let h = c.read_response(true).unwrap();
            assert_eq!(h.status, 200, "{path} {stage}");
            assert!(h.body.is_empty());
            for name in ["content-encoding", "vary", "etag", "content-type"] {
                assert_eq!(h.header(name), get.header(name), "{path} {stage}: {name}");
            }
            let cached = !stage.is_empty() && h.header("x-cache") == Some("Hit");
            if path == "/pets" && !cached {
                assert_eq!(h.header("content-length"), None, "{path} {stage}");
            } else {
                assert_eq!(
                    h.header("content-length"),
                    get.header("content-length"),
                    "{path} {stage}"
                );
            }
            // Framed right: the next request on the connection is answered.
            c.send(b"GET /small HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            assert_eq!(c.read_response(false).unwrap().text(), "{}");
        }
    }
}

#[test]
fn cached_answers_are_stored_once_and_each_encoding_made_once() {
    let up = upstream();
    let g = gateway(&up, "cache = { ttl = \"300s\", capacity = \"1MiB\" }");
    let plain = json_body(4000);
    let a = req(&g, "GET", "/pets", "gzip");
    assert_eq!(
        (a.header("x-cache"), a.header("content-encoding")),
        (Some("Miss"), Some("gzip"))
    );
    for _ in 0..2 {
        let b = req(&g, "GET", "/pets", "br");
        assert_eq!(
            (b.header("x-cache"), b.header("content-encoding")),
            (Some("Hit"), Some("br"))
        );
        assert_eq!(unbrotli(&b.body), plain);
    }
    let c = req(&g, "GET", "/pets", "");
    assert_eq!(
        (c.header("x-cache"), c.header("content-encoding")),
        (Some("Hit"), None)
    );
    assert_eq!(c.text(), plain);
    let d = req(&g, "GET", "/pets", "gzip");
    assert_eq!(gunzip(&d.body), plain);
    assert_eq!(up.count(), 1, "one upstream request, one stored entry");
}

#[test]
fn encoded_request_bodies_are_decoded_for_validation_and_bombs_stop_at_max_body() {
    let up = upstream();
    let g = gateway(&up, "");
    let post = |body: &[u8], coding: &str| {
        let mut raw = format!("POST /check HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
        raw.extend_from_slice(body);
        Client::connect(g.addr()).request(&raw)
    };
    let gz = |b: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    assert_eq!(post(&gz(br#"{"name":"rex"}"#), "gzip").text(), "valid");
    assert_eq!(post(&gz(br#"{"tag":"x"}"#), "gzip").status, 400);
    assert_eq!(post(b"not gzip at all", "gzip").status, 400);
    // Every gzip member is decoded, as the origin's gzip reader does: validation sees the
    // whole body, not its first member, and bytes after the last member are refused.
    let two = |a: &[u8], b: &[u8]| [gz(a), gz(b)].concat();
    assert_eq!(
        post(&two(br#"{"name":"#, br#""rex"}"#), "gzip").text(),
        "valid"
    );
    assert_eq!(
        post(&two(br#"{"name":"rex"}"#, b" and more"), "gzip").status,
        400
    );
    assert_eq!(
        post(&two(br#"{"name":"rex"}"#, br#"{"tag":"x"}"#), "gzip").status,
        400
    );
    let junk = [gz(br#"{"name":"rex"}"#), b"\x00\xffgarbage".to_vec()].concat();
    assert_eq!(post(&junk, "gzip").status, 400);
    // The bound is on the whole: two members of 40 KiB each pass 64 KiB.
    assert_eq!(
        post(&two(&[b' '; 40 << 10], &[b' '; 40 << 10]), "gzip").status,
        413
    );
    // 10 MiB of zeros in a few KiB: decoding stops at limits.max_body (64 KiB).
    let bomb = gz(&vec![b'0'; 10 << 20]);
    assert!(bomb.len() < 64 << 10);
    assert_eq!(post(&bomb, "gzip").status, 413);
}

/// A body in a coding the gateway does not decode (deflate it does), where it must read the body, is 415 with
/// `Accept-Encoding` naming the codings it does (RFC 9110 15.5.16); an empty value and
/// `identity` entries are no coding at all.
#[test]
fn request_bodies_in_other_codings_get_415_naming_the_ones_decoded() {
    let up = upstream();
    let g = gateway(&up, "");
    let post = |body: &[u8], coding: &str| {
        let mut raw = format!("POST /check HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
        raw.extend_from_slice(body);
        Client::connect(g.addr()).request(&raw)
    };
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(br#"{"name":"rex"}"#).unwrap();
    let gz = e.finish().unwrap();
    for coding in ["zstd", "compress", "gzip, zstd"] {
        let r = post(&gz, coding);
        assert_eq!(r.status, 415, "{coding}");
        assert_eq!(
            r.header("accept-encoding"),
            Some("gzip, br, deflate"),
            "{coding}"
        );
        assert_eq!(
            r.json(),
            serde_json::json!({"message": "Unsupported Media Type"})
        );
    }
    assert_eq!(post(&gz, "identity, gzip").text(), "valid");
    // deflate (zlib) is decoded too, and checked: a bad body is refused as such.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(br#"{"name":"rex"}"#).unwrap();
    assert_eq!(post(&z.finish().unwrap(), "deflate").text(), "valid");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(br#"{"tag":"x"}"#).unwrap();
    assert_eq!(post(&z.finish().unwrap(), "deflate").status, 400);
    assert_eq!(post(&gz, "GZIP , identity").text(), "valid");
    assert_eq!(post(br#"{"name":"rex"}"#, "").text(), "valid");
    assert_eq!(post(br#"{"name":"rex"}"#, "identity").text(), "valid");
    assert_eq!(up.count(), 0);
}

#[test]
fn a_revalidated_cache_hit_carries_the_etag_its_encoding_would() {
    let up = upstream();
    let g = gateway(&up, "cache = { ttl = \"300s\", capacity = \"1MiB\" }");
    let a = req(&g, "GET", "/pets", "gzip");
    assert_eq!(a.header("etag"), Some("W/\"v1\""));
    let r = Client::connect(g.addr()).request(b"GET /pets HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\nIf-None-Match: W/\"v1\"\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("etag")), (304, Some("W/\"v1\"")));
    let r = Client::connect(g.addr()).request(
        b"GET /pets HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"v1\"\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((r.status, r.header("etag")), (304, Some("\"v1\"")));
}

/// `types = ["*/*"]` compresses every type (as Amazon does; it passed the check and
/// compressed nothing); a compressed answer offers no byte ranges (the upstream's are of the
/// identity body: a resuming client glued plain bytes onto gzip ones); a cache hit sends the
/// coding once (a stored `Content-Encoding: identity` went too).
#[test]
fn every_type_ranges_and_the_coding_of_a_hit() {
    let up = Upstream::start(|s| {
        let body = json_body(4000);
        let ct = if s.target == "/custom" {
            "application/x-custom"
        } else {
            "application/json"
        };
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nAccept-Ranges: bytes\r\nContent-Encoding: identity\r\nCache-Control: max-age=60\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let g = Gw::start(
        &Cfg::new()
            .stage_extra("compression = { min_size = \"1KiB\", types = [\"*/*\"] }\ncache = { ttl = \"300s\", capacity = \"1MiB\" }")
            .route(
                "GET /{what}",
                format!("integration = {{ type = \"http\", uri = \"http://{}/{{what}}\" }}", up.addr),
            )
            .toml(),
    );
    let plain = json_body(4000);
    for (path, cache) in [
        ("/custom", "Miss"),
        ("/custom", "Hit"),
        ("/pets", "Miss"),
        ("/pets", "Hit"),
    ] {
        let r = req(&g, "GET", path, "gzip");
        assert_eq!(r.header("x-cache"), Some(cache), "{path}");
        let codings: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(codings, ["gzip"], "{path} {cache}");
        assert_eq!(r.header("accept-ranges"), None, "{path} {cache}");
        assert_eq!(gunzip(&r.body), plain);
    }
    // Uncoded, the upstream's ranges are offered.
    let r = req(&g, "GET", "/pets", "");
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.text(), plain);
    let (ok, text) = check_config(
        &Cfg::new()
            .stage_extra("compression = { types = [\"*/json\"] }")
            .toml(),
    );
    assert!(
        !ok && text.contains("compression.types[0] = \"*/json\" is not valid"),
        "{text}"
    );
}

/// An answer collected for the cache does not compete with its own compression for
/// `limits.body_memory`: a miss that fits the budget alone is compressed (it went out
/// uncompressed once three times its size passed the budget).
#[test]
fn a_cached_miss_is_compressed_within_the_budget() {
    let body = json_body(800 << 10);
    let up = Upstream::start(move |_| {
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let g = Gw::start(
        &Cfg::new()
            .limits("body_memory = \"2MiB\"")
            .stage_extra("compression = { min_size = \"1KiB\", max_size = \"1MiB\" }\ncache = { ttl = \"300s\", capacity = \"16MiB\", max_entry = \"1MiB\" }")
            .route(
                "GET /{what}",
                format!("integration = {{ type = \"http\", uri = \"http://{}/{{what}}\" }}", up.addr),
            )
            .toml(),
    );
    for cache in ["Miss", "Hit"] {
        let r = req(&g, "GET", "/items", "gzip");
        assert_eq!(r.header("x-cache"), Some(cache));
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{cache}");
    }
}
