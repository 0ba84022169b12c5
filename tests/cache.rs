//! The response cache end to end: a real upstream that counts what reaches it, clients that
//! read `X-Cache`, `Age` and bodies, and the admin API. Time is moved with the gateway's
//! cache clock, never slept through.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;

const KEY: &str = "cache-0123456789abcdef01";

/// A gateway with one API and three stages that differ in cache settings:
/// `/g/...` gateway mode (client_invalidation from `inv`), `/h/...` http mode,
/// `/n/...` no cache. `stage_extra` is added to the g and h stages' cache tables.
fn conf(upstream: std::net::SocketAddr, inv: &str, stage_extra: &str) -> String {
    format!(
        r#"
[server]
workers = 2

[[listeners]]
name = "http"
addr = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"

[[upstreams]]
name = "app"
targets = ["{upstream}"]

[[usage_plans]]
name = "basic"
stages = ["shop/g"]

[[api_keys]]
name = "k"
value = "{KEY}"
plan = "basic"

[[apis]]
name = "shop"

  [[apis.stages]]
  name = "g"
  cache = {{ ttl = "300s", capacity = "1MiB", client_invalidation = "{inv}" {stage_extra} }}

  [[apis.stages]]
  name = "h"
  cache = {{ ttl = "3600s", capacity = "1MiB", mode = "http", client_invalidation = "allow" {stage_extra} }}

  [[apis.stages]]
  name = "n"

  [[apis.routes]]
  route = "GET /items"
  cache = {{ key = ["query.limit", "header.Accept"] }}
  integration = {{ type = "http", uri = "http://app/items" }}

  [[apis.routes]]
  route = "GET /items/{{id}}"
  integration = {{ type = "http", uri = "http://app/items/{{id}}" }}

  [[apis.routes]]
  route = "GET /short"
  cache = {{ ttl = "10s" }}
  integration = {{ type = "http", uri = "http://app/short" }}

  [[apis.routes]]
  route = "GET /nocache"
  cache = {{ enabled = false }}
  integration = {{ type = "http", uri = "http://app/nocache" }}

  [[apis.routes]]
  route = "ANY /any"
  integration = {{ type = "http", uri = "http://app/any" }}

  [[apis.routes]]
  route = "GET /pair"
  integration = {{ type = "http", uri = "http://app/pair-get" }}

  [[apis.routes]]
  route = "HEAD /pair"
  integration = {{ type = "http", uri = "http://app/pair-head" }}

  [[apis.routes]]
  route = "GET /{{proxy+}}"
  integration = {{ type = "http", uri = "http://app/{{proxy}}" }}

[[domains]]
host = "*"
mappings = [
  {{ base_path = "g", api = "shop", stage = "g" }},
  {{ base_path = "h", api = "shop", stage = "h" }},
  {{ base_path = "n", api = "shop", stage = "n" }},
]
"#
    )
}

/// An upstream answering `200` with a body naming the request's path and a sequence number,
/// so a test can tell a cached answer from a fresh one. `headers` are added to every answer.
fn numbered(headers: &'static str) -> (Upstream, Arc<AtomicUsize>) {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let up = Upstream::start(move |s| {
        let i = n2.fetch_add(1, Ordering::SeqCst) + 1;
        let body = format!("{} #{i}", s.target);
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{headers}Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    (up, n)
}

fn req(gw: &Gw, path: &str, headers: &str) -> Resp {
    Client::connect(gw.addr()).request(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
}

fn clock(gw: &Gw, secs: u64) {
    gw.gw
        .as_ref()
        .unwrap()
        .advance_cache_clock(Duration::from_secs(secs));
}

fn stats(gw: &Gw, stage: &str) -> serde_json::Value {
    let r = admin(
        gw.admin(),
        "GET",
        &format!("/apis/shop/stages/{stage}/cache"),
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn miss_then_hit_then_expiry() {
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    let a = req(&gw, "/g/items/1", "");
    assert_eq!((a.status, a.header("x-cache")), (200, Some("Miss")));
    assert_eq!(a.text(), "/items/1 #1");
    clock(&gw, 5);
    let b = req(&gw, "/g/items/1", "");
    assert_eq!((b.status, b.header("x-cache")), (200, Some("Hit")));
    assert_eq!(b.text(), "/items/1 #1");
    assert_eq!(b.header("content-type"), Some("text/plain"));
    assert!(b.header("age").unwrap().parse::<u64>().unwrap() >= 5);
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
    assert_eq!(up.count(), 1);
    // Past the stage TTL (300 s): fetched again.
    clock(&gw, 300);
    let c = req(&gw, "/g/items/1", "");
    assert_eq!(
        (c.header("x-cache"), c.text().as_str()),
        (Some("Miss"), "/items/1 #2")
    );
    // A route TTL overrides the stage's.
    req(&gw, "/g/short", "");
    clock(&gw, 11);
    assert_eq!(req(&gw, "/g/short", "").header("x-cache"), Some("Miss"));
    // Uncached stage and a route with the cache off: no X-Cache, always fetched.
    for p in ["/n/items/1", "/g/nocache"] {
        let r1 = req(&gw, p, "");
        let r2 = req(&gw, p, "");
        assert_eq!((r1.header("x-cache"), r2.header("x-cache")), (None, None));
        assert_ne!(r1.text(), r2.text());
    }
}

/// Fields an answer's `Connection` lines name are hop-by-hop (RFC 9110 7.6.1): neither
/// forwarded nor stored, whichever of several `Connection` lines names them.
#[test]
fn fields_named_in_any_connection_line_are_not_stored() {
    let (up, _) = numbered(
        "Connection: keep-alive\r\nConnection: x-secret\r\nX-Secret: internal\r\nX-Kept: yes\r\n",
    );
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    for want in ["Miss", "Hit"] {
        let r = req(&gw, "/g/items/9", "");
        assert_eq!(r.header("x-cache"), Some(want));
        assert_eq!(r.header("x-secret"), None, "{want}: {:?}", r.headers);
        assert_eq!(r.header("x-kept"), Some("yes"), "{want}");
    }
    assert_eq!(up.count(), 1);
}

/// An answer that arrives without `Date` is forwarded, and stored, with one (RFC 9110 6.6.1:
/// a recipient with a clock adds it); an upstream's own `Date` is the one kept.
#[test]
fn answers_without_a_date_get_one_and_dated_answers_keep_theirs() {
    let dates = |r: &Resp| -> Vec<String> {
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("date"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    for path in ["/g/items/1", "/g/items/1", "/n/items/1"] {
        let r = req(&gw, path, "");
        let d = dates(&r);
        assert_eq!(
            d.len(),
            1,
            "{path} {:?}: {:?}",
            r.header("x-cache"),
            r.headers
        );
        let t = httpdate::parse_http_date(&d[0]).expect("an IMF-fixdate");
        let off = t
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(60), "{path}: {d:?}");
    }
    const OLD: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    let (up, _) = numbered("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    for path in ["/g/items/2", "/g/items/2", "/n/items/2"] {
        let r = req(&gw, path, "");
        assert_eq!(dates(&r), [OLD], "{path} {:?}", r.header("x-cache"));
    }
}

#[test]
fn head_shares_get_entries_and_other_methods_bypass() {
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    req(&gw, "/g/any", "");
    let mut c = Client::connect(gw.addr());
    c.send(b"HEAD /g/any HTTP/1.1\r\nHost: t\r\n\r\n");
    let h = c.read_response(true).unwrap();
    assert_eq!((h.status, h.header("x-cache")), (200, Some("Hit")));
    assert_eq!(h.header("content-length"), Some("7"));
    // The connection stays usable after a HEAD hit.
    c.send(b"GET /g/any HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().text(), "/any #1");
    let p = Client::connect(gw.addr()).request(
        b"POST /g/any HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert_eq!((p.status, p.header("x-cache")), (200, Some("Bypass")));
    assert_eq!(up.count(), 2);
    assert_eq!(stats(&gw, "g")["bypasses"], 1);
    // A route of its own for HEAD is not answered from the GET route's entries: its own
    // integration answers, each time.
    assert_eq!(req(&gw, "/g/pair", "").header("x-cache"), Some("Miss"));
    assert_eq!(req(&gw, "/g/pair", "").header("x-cache"), Some("Hit"));
    for _ in 0..2 {
        let mut c = Client::connect(gw.addr());
        c.send(b"HEAD /g/pair HTTP/1.1\r\nHost: t\r\n\r\n");
        let h = c.read_response(true).unwrap();
        assert_eq!((h.status, h.header("x-cache")), (200, None));
    }
    assert_eq!(up.count(), 5);
}

#[test]
fn key_parameters_split_and_share_entries() {
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    let first = req(&gw, "/g/items?limit=1&x=1", "Accept: text/plain\r\n");
    assert_eq!(first.header("x-cache"), Some("Miss"));
    // Unlisted query parameters and header-name case do not split entries.
    for (path, hdr) in [
        ("/g/items?x=2&limit=1", "accept: text/plain\r\n"),
        ("/g/items?limit=%31", "ACCEPT: text/plain\r\n"),
    ] {
        let r = req(&gw, path, hdr);
        assert_eq!(r.header("x-cache"), Some("Hit"), "{path}");
        assert_eq!(r.text(), first.text());
    }
    // Listed ones do.
    for (path, hdr) in [
        ("/g/items?limit=2", "Accept: text/plain\r\n"),
        ("/g/items?limit=1", "Accept: application/json\r\n"),
        ("/g/items?limit=1", ""),
    ] {
        assert_eq!(
            req(&gw, path, hdr).header("x-cache"),
            Some("Miss"),
            "{path} {hdr}"
        );
    }
    assert_eq!(up.count(), 4);
    // Decoded values cannot pass for others: `1%262` is one value "1&2", not 1 and 2; an
    // empty value is not a missing one. Order still does not split.
    let h = "Accept: text/plain\r\n";
    let two = req(&gw, "/g/items?limit=1&limit=2", h);
    assert_eq!(two.header("x-cache"), Some("Miss"));
    let r = req(&gw, "/g/items?limit=2&limit=1", h);
    assert_eq!((r.header("x-cache"), r.text()), (Some("Hit"), two.text()));
    let one = req(&gw, "/g/items?limit=1%262", h);
    assert_eq!(one.header("x-cache"), Some("Miss"));
    for path in ["/g/items?limit=1%00&limit=2", "/g/items?limit=", "/g/items"] {
        assert_eq!(req(&gw, path, h).header("x-cache"), Some("Miss"), "{path}");
    }
    let r = req(&gw, "/g/items?limit=1%262", h);
    assert_eq!((r.header("x-cache"), r.text()), (Some("Hit"), one.text()));
    assert_eq!(up.count(), 9);
}

#[test]
fn gateway_mode_honours_no_store_and_private_only() {
    let kind = Arc::new(Mutex::new("no-store"));
    let k2 = kind.clone();
    let up = Upstream::start(move |_| {
        let cc = *k2.lock().unwrap();
        Action::Raw(
            format!("HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nContent-Length: 2\r\n\r\nok")
                .into_bytes(),
        )
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    for cc in ["no-store", "private, max-age=60"] {
        *kind.lock().unwrap() = cc;
        let path = format!("/g/items/{}", cc.len());
        req(&gw, &path, "");
        assert_eq!(req(&gw, &path, "").header("x-cache"), Some("Miss"), "{cc}");
    }
    // What the origin says about freshness does not matter in gateway mode.
    *kind.lock().unwrap() = "max-age=0, must-revalidate";
    req(&gw, "/g/items/x", "");
    let r = req(&gw, "/g/items/x", "");
    assert_eq!(r.header("x-cache"), Some("Hit"));
    assert_eq!(
        r.header("cache-control"),
        Some("max-age=0, must-revalidate")
    );
    // Errors are not stored.
    let up500 = Upstream::start(|_| respond(500, "boom"));
    let gw2 = Gw::start(&conf(up500.addr, "allow", ""));
    req(&gw2, "/g/items/1", "");
    assert_eq!(req(&gw2, "/g/items/1", "").header("x-cache"), Some("Miss"));
    assert_eq!(up500.count(), 2);
}

#[test]
fn vary_selects_variants_in_both_modes() {
    let up = Upstream::start(|s| {
        let lang = s.header("accept-language").unwrap_or("none").to_string();
        let body = format!("hello in {lang}");
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nVary: Accept-Language\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    for stage in ["g", "h"] {
        let path = format!("/{stage}/items/v");
        let en = "Accept-Language: en\r\n";
        let fr = "Accept-Language: fr\r\n";
        assert_eq!(req(&gw, &path, en).header("x-cache"), Some("Miss"));
        let r = req(&gw, &path, fr);
        assert_eq!(
            (r.header("x-cache"), r.text().as_str()),
            (Some("Miss"), "hello in fr")
        );
        let r = req(&gw, &path, en);
        assert_eq!(
            (r.header("x-cache"), r.text().as_str()),
            (Some("Hit"), "hello in en")
        );
        let r = req(&gw, &path, fr);
        assert_eq!(
            (r.header("x-cache"), r.text().as_str()),
            (Some("Hit"), "hello in fr")
        );
        assert_eq!(req(&gw, &path, "").text(), "hello in none");
    }
    assert_eq!(up.count(), 6);
    // Vary: * is never stored.
    let star = Upstream::start(|_| {
        Action::Raw(b"HTTP/1.1 200 OK\r\nVary: *\r\nCache-Control: max-age=60\r\nContent-Length: 1\r\n\r\nx".to_vec())
    });
    let gw2 = Gw::start(&conf(star.addr, "allow", ""));
    for stage in ["g", "h"] {
        req(&gw2, &format!("/{stage}/a"), "");
        assert_eq!(
            req(&gw2, &format!("/{stage}/a"), "").header("x-cache"),
            Some("Miss")
        );
    }
}

#[test]
fn http_mode_follows_origin_freshness() {
    // max-age, s-maxage over max-age, Expires, no headers, heuristics from Last-Modified.
    let up = Upstream::start(|s| {
        let h = match s.target.as_str() {
            "/maxage" => "Cache-Control: max-age=10\r\n".to_string(),
            "/smaxage" => "Cache-Control: max-age=1000, s-maxage=10\r\n".to_string(),
            "/expires" => format!(
                "Date: {}\r\nExpires: {}\r\n",
                httpdate::fmt_http_date(std::time::SystemTime::now()),
                httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(10))
            ),
            "/aged" => "Cache-Control: max-age=10\r\nAge: 8\r\n".to_string(),
            // A list-valued Age counts by its first member: already stale on arrival.
            "/agelist" => "Cache-Control: max-age=600\r\nAge: 7200, 0\r\n".to_string(),
            "/heuristic" => format!(
                "Date: {}\r\nLast-Modified: {}\r\n",
                httpdate::fmt_http_date(std::time::SystemTime::now()),
                httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(100))
            ),
            "/moved" => "Location: /x\r\n".to_string(),
            _ => String::new(),
        };
        let status = if s.target == "/moved" { 302 } else { 200 };
        Action::Raw(format!("HTTP/1.1 {status} X\r\n{h}Content-Length: 2\r\n\r\nok").into_bytes())
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    for p in [
        "maxage",
        "smaxage",
        "expires",
        "aged",
        "agelist",
        "heuristic",
        "nothing",
        "moved",
    ] {
        req(&gw, &format!("/h/{p}"), "");
    }
    let cached = |p: &str| {
        req(&gw, &format!("/h/{p}"), "")
            .header("x-cache")
            .map(String::from)
    };
    assert_eq!(cached("maxage").as_deref(), Some("Hit"));
    assert_eq!(cached("smaxage").as_deref(), Some("Hit"));
    assert_eq!(cached("expires").as_deref(), Some("Hit"));
    assert_eq!(cached("heuristic").as_deref(), Some("Hit"), "10% of 100 s");
    assert_ne!(
        cached("agelist").as_deref(),
        Some("Hit"),
        "Age: 7200, 0 is stale"
    );
    // No freshness information and no validator; 302 gets no heuristic: not stored.
    assert_eq!(cached("nothing").as_deref(), Some("Miss"));
    assert_eq!(cached("moved").as_deref(), Some("Miss"));
    // Age counts against max-age: 8 s old on arrival, stale 2 s later.
    let aged = req(&gw, "/h/aged", "");
    assert_eq!(aged.header("x-cache"), Some("Hit"));
    assert_eq!(aged.header("age"), Some("8"));
    clock(&gw, 3);
    assert_eq!(cached("aged").as_deref(), Some("Miss"));
    clock(&gw, 8);
    for p in ["maxage", "smaxage", "expires", "heuristic"] {
        assert_eq!(cached(p).as_deref(), Some("Miss"), "{p} after 11 s");
    }
}

#[test]
fn http_mode_revalidates_with_validators() {
    let etag_matches = Arc::new(AtomicUsize::new(0));
    let e2 = etag_matches.clone();
    let up = Upstream::start(move |s| {
        let cc = if s.target == "/always" {
            "no-cache"
        } else {
            "max-age=10"
        };
        if s.header("if-none-match") == Some("\"v1\"") {
            e2.fetch_add(1, Ordering::SeqCst);
            return Action::Raw(
                format!("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: {cc}\r\nX-Fresh: yes\r\n\r\n")
                    .into_bytes(),
            );
        }
        Action::Raw(
            format!("HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nCache-Control: {cc}\r\nX-Fresh: no\r\nContent-Length: 4\r\n\r\nbody")
                .into_bytes(),
        )
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    // The client's own conditional header is not what the cache stores: it gets a full answer.
    let a = req(&gw, "/h/doc", "If-None-Match: \"zzz\"\r\n");
    assert_eq!((a.status, a.text().as_str()), (200, "body"));
    clock(&gw, 11);
    let b = req(&gw, "/h/doc", "");
    assert_eq!((b.status, b.header("x-cache")), (200, Some("Revalidated")));
    assert_eq!(b.text(), "body");
    assert_eq!(
        b.header("x-fresh"),
        Some("yes"),
        "headers updated from the 304"
    );
    assert_eq!(etag_matches.load(Ordering::SeqCst), 1);
    // Fresh again after revalidation.
    assert_eq!(req(&gw, "/h/doc", "").header("x-cache"), Some("Hit"));
    // A matching client validator on a hit gets 304 from the cache.
    let nm = req(&gw, "/h/doc", "If-None-Match: W/\"v1\"\r\n");
    assert_eq!((nm.status, nm.header("x-cache")), (304, Some("Hit")));
    // no-cache: stored, but revalidated on every use.
    req(&gw, "/h/always", "");
    for _ in 0..2 {
        let r = req(&gw, "/h/always", "");
        assert_eq!(
            (r.header("x-cache"), r.text().as_str()),
            (Some("Revalidated"), "body")
        );
    }
    assert_eq!(etag_matches.load(Ordering::SeqCst), 3);
    assert_eq!(up.count(), 5);
}

#[test]
fn http_mode_refuses_what_the_rfc_forbids() {
    let up = Upstream::start(|s| {
        let h = match s.target.as_str() {
            "/nostore" => "Cache-Control: no-store, max-age=60\r\n",
            "/private" => "Cache-Control: private, max-age=60\r\n",
            "/cookie" => "Cache-Control: max-age=60\r\nSet-Cookie: s=1\r\n",
            "/public" => "Cache-Control: public, max-age=60\r\n",
            _ => "Cache-Control: max-age=60\r\n",
        };
        Action::Raw(format!("HTTP/1.1 200 OK\r\n{h}Content-Length: 2\r\n\r\nok").into_bytes())
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    let twice = |p: &str, h: &str| {
        req(&gw, p, h);
        req(&gw, p, h).header("x-cache").map(String::from)
    };
    assert_eq!(twice("/h/nostore", "").as_deref(), Some("Miss"));
    assert_eq!(twice("/h/private", "").as_deref(), Some("Miss"));
    assert_eq!(twice("/h/cookie", "").as_deref(), Some("Miss"));
    // Authorization: only with public (or s-maxage, must-revalidate).
    assert_eq!(
        twice("/h/auth", "Authorization: Bearer x\r\n").as_deref(),
        Some("Miss")
    );
    assert_eq!(
        twice("/h/public", "Authorization: Bearer x\r\n").as_deref(),
        Some("Hit")
    );
    // A request with no-store is passed through and not stored.
    let r = req(&gw, "/h/fresh", "Cache-Control: no-store\r\n");
    assert_eq!(r.header("x-cache"), Some("Bypass"));
    assert_eq!(req(&gw, "/h/fresh", "").header("x-cache"), Some("Miss"));
}

#[test]
fn concurrent_misses_make_one_upstream_request() {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let up = Upstream::start(move |_| {
        // Hold the one fetch until the test has seen every other request wait for it.
        let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(20));
        respond(200, "the one answer")
    });
    let gw = Gw::start(&conf(up.addr, "allow", ", lock_timeout = \"30s\""));
    const N: usize = 12;
    let addr = gw.addr();
    let clients: Vec<_> = (0..N)
        .map(|_| {
            std::thread::spawn(move || {
                Client::connect(addr)
                    .request(b"GET /g/items/hot HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || stats(&gw, "g")["coalesced"]
            == N as u64 - 1),
        "followers: {}",
        stats(&gw, "g")
    );
    tx.send(()).unwrap();
    let answers: Vec<Resp> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(answers
        .iter()
        .all(|r| r.status == 200 && r.text() == "the one answer"));
    assert_eq!(
        answers
            .iter()
            .filter(|r| r.header("x-cache") == Some("Miss"))
            .count(),
        1
    );
    assert_eq!(
        answers
            .iter()
            .filter(|r| r.header("x-cache") == Some("Hit"))
            .count(),
        N - 1
    );
    assert_eq!(up.count(), 1);
}

#[test]
fn uncacheable_answers_release_waiters_to_fetch_themselves() {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let first = Arc::new(AtomicUsize::new(0));
    let up = Upstream::start(move |_| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(20));
        }
        Action::Raw(
            b"HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nContent-Length: 2\r\n\r\nno".to_vec(),
        )
    });
    let gw = Gw::start(&conf(up.addr, "allow", ", lock_timeout = \"30s\""));
    let addr = gw.addr();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                Client::connect(addr)
                    .request(b"GET /g/items/ns HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(10), || stats(&gw, "g")
        ["coalesced"]
        == 3));
    tx.send(()).unwrap();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "no"));
    }
    assert_eq!(up.count(), 4);
}

#[test]
fn lock_timeout_lets_waiters_fetch_for_themselves() {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    let first = Arc::new(AtomicUsize::new(0));
    let started = first.clone();
    let up = Upstream::start(move |_| {
        if first.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = rx.lock().unwrap().recv_timeout(Duration::from_secs(20));
            return respond(200, "slow");
        }
        respond(200, "quick")
    });
    let gw = Gw::start(&conf(up.addr, "allow", ", lock_timeout = \"100ms\""));
    let addr = gw.addr();
    let slow = std::thread::spawn(move || {
        Client::connect(addr)
            .request(b"GET /g/items/t HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    });
    assert!(eventually(Duration::from_secs(10), || started
        .load(Ordering::SeqCst)
        == 1));
    // The leader is stuck; a second request waits 100 ms, then fetches itself.
    let r = req(&gw, "/g/items/t", "");
    assert_eq!((r.status, r.text().as_str()), (200, "quick"));
    tx.send(()).unwrap();
    assert_eq!(slow.join().unwrap().text(), "slow");
}

#[test]
fn stale_if_error_stands_in_for_a_failed_upstream() {
    let mode = Arc::new(AtomicUsize::new(0));
    let m2 = mode.clone();
    let up = Upstream::start(move |_| match m2.load(Ordering::SeqCst) {
        0 => respond(200, "good"),
        1 => respond(503, "down"),
        _ => Action::Close,
    });
    let gw = Gw::start(&conf(up.addr, "allow", ", stale_if_error = \"60s\""));
    assert_eq!(req(&gw, "/g/short", "").text(), "good");
    mode.store(1, Ordering::SeqCst);
    clock(&gw, 15); // stale for 5 s
    let r = req(&gw, "/g/short", "");
    assert_eq!(
        (r.status, r.header("x-cache"), r.text().as_str()),
        (200, Some("Stale"), "good")
    );
    mode.store(2, Ordering::SeqCst);
    let r = req(&gw, "/g/short", "");
    assert_eq!(
        (r.status, r.header("x-cache")),
        (200, Some("Stale")),
        "upstream closed: a 502 would have been answered"
    );
    // Past the stale window: the failure shows.
    clock(&gw, 60);
    assert_eq!(req(&gw, "/g/short", "").status, 502);
    mode.store(1, Ordering::SeqCst);
    assert_eq!(req(&gw, "/g/short", "").status, 503);
    // Without stale_if_error the failure shows at once.
    let gw2 = Gw::start(&conf(up.addr, "allow", ""));
    mode.store(0, Ordering::SeqCst);
    req(&gw2, "/g/short", "");
    mode.store(1, Ordering::SeqCst);
    clock(&gw2, 11);
    assert_eq!(req(&gw2, "/g/short", "").status, 503);
}

#[test]
fn client_invalidation_follows_the_stage_policy() {
    let fresh = "Cache-Control: max-age=0\r\n";
    // ignore: the header changes nothing.
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "ignore", ""));
    req(&gw, "/g/items/1", "");
    let r = req(&gw, "/g/items/1", fresh);
    assert_eq!(
        (r.header("x-cache"), r.text().as_str()),
        (Some("Hit"), "/items/1 #1")
    );
    drop(gw);
    // allow: anyone gets a fresh copy, which replaces the entry.
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    req(&gw, "/g/items/1", "");
    let r = req(&gw, "/g/items/1", fresh);
    assert_eq!(
        (r.header("x-cache"), r.text().as_str()),
        (Some("Refresh"), "/items/1 #2")
    );
    let r = req(&gw, "/g/items/1", "");
    assert_eq!(
        (r.header("x-cache"), r.text().as_str()),
        (Some("Hit"), "/items/1 #2")
    );
    // Only max-age=0 asks for a fresh copy, as Amazon API Gateway has it: no-cache (which
    // Postman and browsers' reloads send) is served from the cache.
    for h in ["Pragma: no-cache\r\n", "Cache-Control: no-cache\r\n"] {
        assert_eq!(
            req(&gw, "/g/items/1", h).header("x-cache"),
            Some("Hit"),
            "{h}"
        );
    }
    drop(gw);
    // allow, and the fresh answer cannot be stored (the resource is gone: 404): the old entry
    // is invalidated all the same, not served again.
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let up = Upstream::start(move |_| match n2.fetch_add(1, Ordering::SeqCst) {
        0 => respond(200, "was here"),
        _ => respond(404, "gone"),
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    assert_eq!(req(&gw, "/g/items/1", "").text(), "was here");
    let r = req(&gw, "/g/items/1", fresh);
    assert_eq!((r.status, r.header("x-cache")), (404, Some("Refresh")));
    let r = req(&gw, "/g/items/1", "");
    assert_eq!((r.status, r.text().as_str()), (404, "gone"));
    drop(gw);
    // Nor when the fresh answer, chunked, turns out too large to store.
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let up = Upstream::start(move |_| match n2.fetch_add(1, Ordering::SeqCst) {
        0 => respond(200, "was here"),
        _ => {
            let big = "b".repeat(200 << 10);
            Action::Raw(
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n", big.len())
                    .into_bytes(),
            )
        }
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    assert_eq!(req(&gw, "/g/items/1", "").text(), "was here");
    let r = req(&gw, "/g/items/1", fresh);
    assert_eq!(
        (r.header("x-cache"), r.body.len()),
        (Some("Refresh"), 200 << 10)
    );
    let r = req(&gw, "/g/items/1", "");
    assert_eq!(
        (r.header("x-cache"), r.body.len()),
        (Some("Miss"), 200 << 10)
    );
    drop(gw);
    // require_api_key: without a valid key the header is ignored, and the answer says so.
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "require_api_key", ""));
    req(&gw, "/g/items/1", "");
    for hdr in [
        String::new(),
        "X-Api-Key: not-a-key-0000000000000\r\n".to_string(),
    ] {
        let r = req(&gw, "/g/items/1", &format!("{fresh}{hdr}"));
        assert_eq!((r.status, r.header("x-cache")), (200, Some("Hit")));
        assert!(
            r.header("warning").unwrap().contains("x-api-key"),
            "{:?}",
            r.header("warning")
        );
    }
    let r = req(&gw, "/g/items/1", &format!("{fresh}X-Api-Key: {KEY}\r\n"));
    assert_eq!(
        (r.header("x-cache"), r.text().as_str()),
        (Some("Refresh"), "/items/1 #2")
    );
    assert_eq!(r.header("warning"), None);
    drop(gw);
    // Amazon's other two strategies for the unauthorized: served without the warning, or 403.
    for (strategy, refused) in [("ignore", false), ("fail_with_403", true)] {
        let (up, _) = numbered("");
        let c = conf(up.addr, "require_api_key", "").replace(
            "client_invalidation = \"require_api_key\"",
            &format!("client_invalidation = \"require_api_key\", unauthorized_invalidation = \"{strategy}\""),
        );
        let gw = Gw::start(&c);
        req(&gw, "/g/items/1", "");
        let r = req(&gw, "/g/items/1", fresh);
        assert_eq!(r.header("warning"), None, "{strategy}");
        if refused {
            assert_eq!(r.status, 403, "{strategy}");
            assert!(r.text().contains("invalidate the cache"), "{}", r.text());
        } else {
            assert_eq!(
                (r.status, r.header("x-cache"), r.text().as_str()),
                (200, Some("Hit"), "/items/1 #1"),
                "{strategy}"
            );
        }
        // Without asking, or with the key, it is served as ever; `no-cache` is no asking.
        assert_eq!(req(&gw, "/g/items/1", "").header("x-cache"), Some("Hit"));
        let r = req(
            &gw,
            "/g/items/1",
            "Cache-Control: no-cache\r\nPragma: no-cache\r\n",
        );
        assert_eq!((r.status, r.header("x-cache")), (200, Some("Hit")));
        let r = req(&gw, "/g/items/1", &format!("{fresh}X-Api-Key: {KEY}\r\n"));
        assert_eq!(
            (r.header("x-cache"), r.text().as_str()),
            (Some("Refresh"), "/items/1 #2")
        );
    }
    // In http mode a `max-age=N` or `min-fresh` a stored answer satisfies is no request for a
    // fresh copy: served, not refused; `max-age=0` is refused.
    let (up, _) = numbered("Cache-Control: max-age=60\r\n");
    let c = conf(up.addr, "allow", "").replace(
        "mode = \"http\", client_invalidation = \"allow\"",
        "mode = \"http\", client_invalidation = \"require_api_key\", unauthorized_invalidation = \"fail_with_403\"",
    );
    let gw = Gw::start(&c);
    req(&gw, "/h/items/1", "");
    for ask in [
        "Cache-Control: max-age=3600\r\n",
        "Cache-Control: min-fresh=1\r\n",
    ] {
        let r = req(&gw, "/h/items/1", ask);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("Hit")), "{ask}");
    }
    assert_eq!(
        req(&gw, "/h/items/1", "Cache-Control: max-age=0\r\n").status,
        403
    );
}

#[test]
fn admin_flush_and_purge() {
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    for p in ["/g/items/1", "/g/items/2", "/g/other", "/g/items/1/x"] {
        req(&gw, p, "");
    }
    let purge = |q: &str| {
        admin(
            gw.admin(),
            "DELETE",
            &format!("/apis/shop/stages/g/cache{q}"),
            Some(TOKEN),
        )
    };
    // Paths are the request's, base path included.
    let r = purge("?path=/g/items/1");
    assert_eq!((r.status, r.json()["purged"].as_u64()), (200, Some(1)));
    assert_eq!(req(&gw, "/g/items/1", "").header("x-cache"), Some("Miss"));
    assert_eq!(req(&gw, "/g/items/2", "").header("x-cache"), Some("Hit"));
    assert_eq!(purge("?prefix=/g/items").json()["purged"], 3);
    assert_eq!(req(&gw, "/g/items/2", "").header("x-cache"), Some("Miss"));
    assert_eq!(req(&gw, "/g/other", "").header("x-cache"), Some("Hit"));
    // A misspelt or valueless parameter is refused, not read as "flush everything".
    for q in [
        "?paht=/g/other",
        "?Path=/g/other",
        "?path",
        "?path=/g/other&x=1",
    ] {
        let r = purge(q);
        assert_eq!(r.status, 400, "{q}");
        assert!(
            r.json()["message"]
                .as_str()
                .unwrap()
                .contains("expected path=/"),
            "{q}: {}",
            r.text()
        );
    }
    assert_eq!(req(&gw, "/g/other", "").header("x-cache"), Some("Hit"));
    let r = purge("");
    assert_eq!((r.status, r.json()["flushed"].as_u64()), (200, Some(2)));
    assert_eq!(req(&gw, "/g/other", "").header("x-cache"), Some("Miss"));
    let s = stats(&gw, "g");
    assert_eq!(s["entries"], 1);
    assert!(
        s["hits"].as_u64().unwrap() >= 2 && s["misses"].as_u64().unwrap() >= 6,
        "{s}"
    );
    // An encoded path is purged by its decoded form; a prefix stops at segment ends.
    for p in ["/g/a%20b", "/g/itemsx"] {
        assert_eq!(req(&gw, p, "").header("x-cache"), Some("Miss"), "{p}");
    }
    assert_eq!(purge("?path=/g/a%20b").json()["purged"], 1);
    assert_eq!(req(&gw, "/g/a%20b", "").header("x-cache"), Some("Miss"));
    assert_eq!(purge("?prefix=/g/items").json()["purged"], 0);
    assert_eq!(req(&gw, "/g/itemsx", "").header("x-cache"), Some("Hit"));
    // Every spelling that routing merges into one path (`//`, a trailing `/`) is an entry of
    // its own (the upstream may hear the path as sent), and a purge of the path takes them
    // all, a prefix too.
    let spellings = [
        "/g/items/7",
        "/g/items//7",
        "//g/items/7",
        "/g/items/7/",
        "/g//items///7//",
    ];
    for p in spellings {
        assert_eq!(req(&gw, p, "").header("x-cache"), Some("Miss"), "{p}");
    }
    assert_eq!(purge("?path=/g/items/7").json()["purged"], 5);
    for p in spellings {
        assert_eq!(req(&gw, p, "").header("x-cache"), Some("Miss"), "{p}");
    }
    assert_eq!(purge("?prefix=/g//items/").json()["purged"], 5);
    assert_eq!(req(&gw, "//g/items/7", "").header("x-cache"), Some("Miss"));
    assert_eq!(purge("?path=/g/items/7").json()["purged"], 1);
    // Bad input gets a clear answer.
    assert_eq!(purge("?path=items").status, 400);
    assert_eq!(purge("?path=/a&prefix=/b").status, 400);
    assert_eq!(
        admin(
            gw.admin(),
            "DELETE",
            "/apis/shop/stages/n/cache",
            Some(TOKEN)
        )
        .status,
        404
    );
    assert_eq!(
        admin(
            gw.admin(),
            "DELETE",
            "/apis/nope/stages/g/cache",
            Some(TOKEN)
        )
        .status,
        404
    );
    assert_eq!(
        admin(gw.admin(), "DELETE", "/apis/shop/stages/g/cache", None).status,
        401
    );
    assert_eq!(
        admin(gw.admin(), "POST", "/apis/shop/stages/g/cache", Some(TOKEN)).status,
        405
    );
    let m = admin(gw.admin(), "GET", "/metrics", Some(TOKEN)).text();
    assert!(
        m.contains("tollgate_cache_hits_total{stage=\"shop/g\"}"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_cache_bytes{stage=\"shop/h\"} 0"),
        "{m}"
    );
}

#[test]
fn capacity_bounds_the_cache_and_big_answers_pass_through() {
    let big = "x".repeat(200 << 10);
    let up = Upstream::start(move |s| {
        if s.target == "/smallchunked" {
            return Action::Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".to_vec());
        }
        if s.target.starts_with("/big") {
            if s.target == "/bigchunked" {
                let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for _ in 0..4 {
                    raw.extend_from_slice(
                        format!("{:x}\r\n{}\r\n", 50 << 10, &big[..50 << 10]).as_bytes(),
                    );
                }
                raw.extend_from_slice(b"0\r\n\r\n");
                return Action::Raw(raw);
            }
            return respond(200, &big);
        }
        respond(200, &"y".repeat(1000))
    });
    let gw = Gw::start(&conf(up.addr, "allow", ", max_entry = \"64KiB\""));
    for i in 0..1500 {
        let r = req(&gw, &format!("/g/items/{i}"), "");
        assert_eq!(r.body.len(), 1000);
    }
    let s = stats(&gw, "g");
    assert!(s["bytes"].as_u64().unwrap() <= 1 << 20, "{s}");
    assert!(s["evictions"].as_u64().unwrap() > 0, "{s}");
    assert!(s["entries"].as_u64().unwrap() > 400, "{s}");
    // Larger than max_entry: streamed whole, not stored, in both framings.
    for p in ["/g/big", "/g/bigchunked"] {
        for _ in 0..2 {
            let r = req(&gw, p, "");
            assert_eq!(
                (r.header("x-cache"), r.body.len()),
                (Some("Miss"), 200 << 10),
                "{p}"
            );
        }
    }
    assert!(stats(&gw, "g")["too_large"].as_u64().unwrap() >= 4);
    // A chunked answer within max_entry is stored and served with Content-Length.
    assert_eq!(req(&gw, "/g/smallchunked", "").text(), "abcde");
    let r = req(&gw, "/g/smallchunked", "");
    assert_eq!(
        (r.header("x-cache"), r.text().as_str()),
        (Some("Hit"), "abcde")
    );
    assert_eq!(
        (r.header("content-length"), r.header("transfer-encoding")),
        (Some("5"), None)
    );
}

#[test]
fn reload_applies_new_cache_settings() {
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    req(&gw, "/g/items/1", "");
    clock(&gw, 20);
    assert_eq!(req(&gw, "/g/items/1", "").header("x-cache"), Some("Hit"));
    // The stage TTL drops to 10 s: the 20 s old entry is stale at once.
    gw.rewrite(&conf(up.addr, "allow", "").replacen("ttl = \"300s\"", "ttl = \"10s\"", 1));
    gw.gw.as_ref().unwrap().reload().unwrap();
    let r = req(&gw, "/g/items/1", "");
    assert_eq!(
        (r.header("x-cache"), r.text().as_str()),
        (Some("Miss"), "/items/1 #2")
    );
    // Turning the cache off: answers stop carrying X-Cache.
    gw.rewrite(&conf(up.addr, "allow", "").replacen(
        "client_invalidation = \"allow\"  }",
        "client_invalidation = \"allow\", enabled = false }",
        1,
    ));
    gw.gw.as_ref().unwrap().reload().unwrap();
    assert_eq!(req(&gw, "/g/items/1", "").header("x-cache"), None);
}

/// A reload to a smaller cache with larger entries stores what fits `max_entry`: the cache
/// kept its many small segments, and the store refused, without a word, anything larger than
/// one of them (200 KB under a 1 MiB `max_entry`).
#[test]
fn a_reload_to_larger_entries_stores_them() {
    let up = Upstream::start(|_| respond(200, &"x".repeat(200_000)));
    let settings = |cache: &str| {
        conf(up.addr, "allow", "").replacen("ttl = \"300s\", capacity = \"1MiB\"", cache, 1)
    };
    let gw = Gw::start(&settings(
        "ttl = \"300s\", capacity = \"128MiB\", max_entry = \"64KiB\"",
    ));
    assert_eq!(req(&gw, "/g/items/1", "").header("x-cache"), Some("Miss"));
    gw.rewrite(&settings(
        "ttl = \"300s\", capacity = \"8MiB\", max_entry = \"1MiB\"",
    ));
    gw.gw.as_ref().unwrap().reload().unwrap();
    assert_eq!(req(&gw, "/g/items/2", "").header("x-cache"), Some("Miss"));
    let r = req(&gw, "/g/items/2", "");
    assert_eq!((r.header("x-cache"), r.body.len()), (Some("Hit"), 200_000));
}

/// In `mode = "http"` the key is the whole target URI: `/u?test=B` is not answered with what
/// was stored for `/u?test=A`. (Gateway mode keys on the listed parameters, as AWS does.)
#[test]
fn http_mode_keys_on_the_whole_query() {
    let (up, n) = numbered("Cache-Control: max-age=60\r\n");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    let a = req(&gw, "/h/u?test=A", "");
    assert_eq!(a.header("x-cache"), Some("Miss"));
    let b = req(&gw, "/h/u?test=B", "");
    assert_eq!(b.header("x-cache"), Some("Miss"), "{}", b.text());
    assert!(b.text().contains("test=B"), "{}", b.text());
    assert_eq!(req(&gw, "/h/u?test=A", "").header("x-cache"), Some("Hit"));
    assert_eq!(n.load(Ordering::SeqCst), 2);
    // Gateway mode: no `query.test` in the key, one entry for both.
    assert_eq!(req(&gw, "/g/v?test=A", "").header("x-cache"), Some("Miss"));
    assert_eq!(req(&gw, "/g/v?test=B", "").header("x-cache"), Some("Hit"));
}

/// http mode: a successful unsafe request (POST, PUT, DELETE, PATCH, an unknown method)
/// drops what the cache holds for its URI and for a same-origin `Location` and
/// `Content-Location`, so the next GET fetches (RFC 9111 4.4); a failed one drops nothing.
#[test]
fn unsafe_methods_invalidate_in_http_mode() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let up = Upstream::start(move |s| {
        if s.method == "GET" {
            let i = n2.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!("{} #{i}", s.target);
            return Action::Raw(format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes());
        }
        if s.target.contains("fail") {
            return respond(500, "no");
        }
        Action::Raw(b"HTTP/1.1 201 Created\r\nLocation: /c/made\r\nContent-Location: http://t/c/other?v=1\r\nContent-Length: 0\r\n\r\n".to_vec())
    });
    // One http-mode stage whose cached route keys on the URI alone (entries removed by key),
    // and one whose route also keys on a header (entries of the path removed by a scan).
    let gw = Gw::start(
        &Cfg::new()
            .upstream(format!(
                "[[upstreams]]\nname = \"app\"\ntargets = [\"{}\"]\n",
                up.addr
            ))
            .stage_extra("cache = { ttl = \"3600s\", capacity = \"1MiB\", mode = \"http\" }")
            .routes(
                r#"
  [[apis.routes]]
  route = "ANY /{proxy+}"
  integration = { type = "http", uri = "http://app/{proxy}" }
"#,
            )
            .toml(),
    );
    let get = |p: &str| req(&gw, p, "");
    let send = |method: &str, p: &str| {
        Client::connect(gw.addr()).request(
            format!("{method} {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
                .as_bytes(),
        )
    };
    for p in ["/c/a?x=1", "/c/made", "/c/other?v=1", "/c/fail"] {
        assert_eq!(get(p).header("x-cache"), Some("Miss"));
        assert_eq!(get(p).header("x-cache"), Some("Hit"), "{p}");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH", "PURGEX"] {
        let r = send(method, "/c/a?x=1");
        assert_eq!(r.status, 201, "{method}");
        let g = get("/c/a?x=1");
        assert_eq!(g.header("x-cache"), Some("Miss"), "after {method}");
        assert_eq!(get("/c/a?x=1").header("x-cache"), Some("Hit"));
    }
    // Location and Content-Location (same origin) went too; the other query did not exist.
    assert_eq!(get("/c/made").header("x-cache"), Some("Miss"));
    assert_eq!(get("/c/other?v=1").header("x-cache"), Some("Miss"));
    // An error answer invalidates nothing.
    assert_eq!(send("POST", "/c/fail").status, 500);
    assert_eq!(get("/c/fail").header("x-cache"), Some("Hit"));
    // Safe methods invalidate nothing.
    let o = Client::connect(gw.addr())
        .request(b"OPTIONS /c/made HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_ne!(o.status, 0);
    assert_eq!(get("/c/made").header("x-cache"), Some("Hit"));
}

/// The same on a stage where a cached route lists key parts: every entry of the path goes
/// (each query), and nothing of other paths.
#[test]
fn unsafe_methods_invalidate_keyed_stages_by_path() {
    let (up, _) = numbered("Cache-Control: max-age=600\r\n");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    for p in ["/h/any?q=1", "/h/any?q=2"] {
        assert_eq!(req(&gw, p, "").header("x-cache"), Some("Miss"));
        assert_eq!(req(&gw, p, "").header("x-cache"), Some("Hit"));
    }
    let h = "Accept: a\r\n";
    assert_eq!(
        req(&gw, "/h/items?limit=1", h).header("x-cache"),
        Some("Miss")
    );
    let r = Client::connect(gw.addr()).request(
        b"POST /h/any HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((r.status, r.header("x-cache")), (200, Some("Bypass")));
    for p in ["/h/any?q=1", "/h/any?q=2"] {
        assert_eq!(req(&gw, p, "").header("x-cache"), Some("Miss"), "{p}");
    }
    assert_eq!(
        req(&gw, "/h/items?limit=1", h).header("x-cache"),
        Some("Hit")
    );
    assert_eq!(stats(&gw, "h")["invalidated"], 1);
}

/// stale_if_error never stands in with an answer that said `no-cache`, `must-revalidate`,
/// `proxy-revalidate` or `s-maxage`.
#[test]
fn stale_if_error_respects_revalidation_directives() {
    let down = Arc::new(AtomicUsize::new(0));
    let d2 = down.clone();
    let up = Upstream::start(move |s| {
        if d2.load(Ordering::SeqCst) == 1 {
            return Action::Close;
        }
        let cc = match s.target.as_str() {
            "/nc" => "no-cache",
            "/mr" => "max-age=10, must-revalidate",
            "/pr" => "max-age=10, proxy-revalidate",
            "/sm" => "s-maxage=10",
            _ => "max-age=10",
        };
        Action::Raw(format!("HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nETag: \"e\"\r\nContent-Length: 2\r\n\r\nok").into_bytes())
    });
    let gw = Gw::start(&conf(up.addr, "allow", ", stale_if_error = \"600s\""));
    for p in ["/nc", "/mr", "/pr", "/sm", "/plain"] {
        assert_eq!(req(&gw, &format!("/h{p}"), "").status, 200);
    }
    down.store(1, Ordering::SeqCst);
    clock(&gw, 20);
    for p in ["/nc", "/mr", "/pr", "/sm"] {
        let r = req(&gw, &format!("/h{p}"), "");
        assert_eq!(
            r.status,
            502,
            "{p} was served stale: {:?}",
            r.header("x-cache")
        );
    }
    let r = req(&gw, "/h/plain", "");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("Stale")));
}

/// Client conditionals and request directives in http mode: `If-Modified-Since` gets 304
/// from a fresh entry with `Last-Modified`; `only-if-cached` gets 504 when nothing usable is
/// stored (and never reaches the origin); `max-stale` accepts a stale entry, `min-fresh` and
/// `max-age=N` refuse one that is too old.
#[test]
fn http_mode_honours_client_conditionals_and_directives() {
    let (up, n) =
        numbered("Cache-Control: max-age=60\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    let r = req(&gw, "/h/doc", "Cache-Control: only-if-cached\r\n");
    assert_eq!(r.status, 504);
    assert_eq!(n.load(Ordering::SeqCst), 0);
    assert_eq!(req(&gw, "/h/doc", "").header("x-cache"), Some("Miss"));
    let r = req(&gw, "/h/doc", "Cache-Control: only-if-cached\r\n");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("Hit")));
    // If-Modified-Since at or after Last-Modified: 304 from the entry; before it: 200.
    let r = req(
        &gw,
        "/h/doc",
        "If-Modified-Since: Tue, 02 Jan 2024 00:00:00 GMT\r\n",
    );
    assert_eq!((r.status, r.header("x-cache")), (304, Some("Hit")));
    assert!(r.text().is_empty());
    let r = req(
        &gw,
        "/h/doc",
        "If-Modified-Since: Sun, 31 Dec 2023 00:00:00 GMT\r\n",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "/doc #1"));
    // An If-None-Match that does not match wins over If-Modified-Since.
    let r = req(
        &gw,
        "/h/doc",
        "If-None-Match: \"x\"\r\nIf-Modified-Since: Tue, 02 Jan 2024 00:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200);
    // 50 s old of 60: min-fresh=20 and max-age=30 want a fresher copy.
    clock(&gw, 50);
    let r = req(&gw, "/h/doc", "Cache-Control: min-fresh=20\r\n");
    assert_eq!(r.text(), "/doc #2");
    clock(&gw, 40);
    let r = req(&gw, "/h/doc", "Cache-Control: max-age=30\r\n");
    assert_eq!(r.text(), "/doc #3");
    // 70 s later (stale by 10 s): max-stale=30 takes it, max-stale=5 does not.
    clock(&gw, 70);
    let r = req(&gw, "/h/doc", "Cache-Control: max-stale=30\r\n");
    assert_eq!(
        (r.text().as_str(), r.header("x-cache")),
        ("/doc #3", Some("Stale"))
    );
    let r = req(&gw, "/h/doc", "Cache-Control: max-stale=5\r\n");
    assert_eq!(r.text(), "/doc #4");
    assert_eq!(n.load(Ordering::SeqCst), 4);
}

/// The key holds the scheme and the Host as the upstream hears them (`X-Forwarded-Proto`,
/// `X-Forwarded-Host`, port included): a client sending `Host: t:1337` stored what every
/// other client of the host then got.
#[test]
fn the_key_holds_the_host_and_scheme_the_upstream_hears() {
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    let on = |host: &str| {
        Client::connect(gw.addr()).request(
            format!("GET /g/items/1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let a = on("t");
    assert_eq!(
        (a.header("x-cache"), a.text().as_str()),
        (Some("Miss"), "/items/1 #1")
    );
    let b = on("t:1337");
    assert_eq!(
        (b.header("x-cache"), b.text().as_str()),
        (Some("Miss"), "/items/1 #2")
    );
    // Host names are compared without case.
    let c = on("T");
    assert_eq!(
        (c.header("x-cache"), c.text().as_str()),
        (Some("Hit"), "/items/1 #1")
    );
    // An unsafe method invalidates its host's entry.
    let r = Client::connect(gw.addr()).request(
        b"POST /g/any HTTP/1.1\r\nHost: t:1337\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
}

/// An answer that varies on a header the gateway writes for the upstream (here the caller's
/// address through an integration header, or `X-Forwarded-For`) is not stored: the client's
/// own header of that name would select it, handing one caller's answer to another.
#[test]
fn answers_varying_on_headers_the_gateway_writes_are_not_stored() {
    let up = Upstream::start(|s| {
        let vary = if s.target.starts_with("/xff") {
            "X-Forwarded-For"
        } else {
            "X-Src"
        };
        let body = format!("for {}", s.header("x-src").unwrap_or("-"));
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nVary: {vary}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let gw = Gw::start(
        &Cfg::new()
            .stage_extra("cache = { ttl = \"300s\", capacity = \"1MiB\" }")
            .route(
                "GET /me",
                format!("integration = {{ type = \"http\", uri = \"http://{}/me\", headers = {{ \"x-src\" = \"${{context.identity.sourceIp}}\" }} }}", up.addr),
            )
            .route(
                "GET /xff",
                format!("integration = {{ type = \"http\", uri = \"http://{}/xff\" }}", up.addr),
            )
            .toml(),
    );
    for path in ["/me", "/xff"] {
        for _ in 0..2 {
            let r = get(gw.addr(), path);
            assert_eq!(
                (r.status, r.header("x-cache")),
                (200, Some("Miss")),
                "{path}"
            );
        }
    }
    assert_eq!(up.count(), 4);
}

/// A purge answered while a fetch of its path is under way is not undone when that fetch
/// ends: the answer from before the purge is not stored (it was, for a whole TTL).
#[test]
fn a_fetch_under_way_does_not_undo_a_purge() {
    let (release, wait) = mpsc::channel::<()>();
    let wait = Mutex::new(wait);
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let up = Upstream::start(move |_| {
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = wait.lock().unwrap().recv_timeout(Duration::from_secs(10));
        }
        respond(200, "answer")
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    let addr = gw.addr();
    let first = std::thread::spawn(move || {
        Client::connect(addr)
            .request(b"GET /g/race HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    });
    assert!(eventually(IO_TIMEOUT, || n.load(Ordering::SeqCst) == 1));
    let r = admin(
        gw.admin(),
        "DELETE",
        "/apis/shop/stages/g/cache?path=/g/race",
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    release.send(()).unwrap();
    assert_eq!(first.join().unwrap().header("x-cache"), Some("Miss"));
    let again = req(&gw, "/g/race", "");
    assert_eq!(again.header("x-cache"), Some("Miss"));
    assert_eq!(n.load(Ordering::SeqCst), 2);
    // Later fetches are stored as ever.
    assert_eq!(req(&gw, "/g/race", "").header("x-cache"), Some("Hit"));
}

/// The request that fetches for the others lets them go as soon as it knows the answer will
/// not be stored (`Set-Cookie`; a chunked body past `max_entry`), not when its own client has
/// the whole answer: a client reading slowly held every other request for `lock_timeout`.
#[test]
fn a_slow_reader_of_an_unstored_answer_does_not_hold_the_others() {
    const BIG: usize = 32 << 20;
    let up = Upstream::start(|s| {
        let body = vec![b'x'; BIG];
        let mut raw = if s.target.ends_with("cookie") {
            format!("HTTP/1.1 200 OK\r\nSet-Cookie: s=1\r\nContent-Length: {BIG}\r\n\r\n")
                .into_bytes()
        } else {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()
        };
        if s.target.ends_with("cookie") {
            raw.extend_from_slice(&body);
        } else {
            for c in body.chunks(1 << 20) {
                raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                raw.extend_from_slice(c);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
        }
        Action::Raw(raw)
    });
    let gw = Gw::start(&conf(up.addr, "allow", ", lock_timeout = \"60s\""));
    for path in ["/g/items/cookie", "/g/items/chunked"] {
        // The first client reads the head and then nothing: the gateway's writes to it stall.
        let mut slow = std::net::TcpStream::connect(gw.addr()).unwrap();
        slow.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        slow.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = slow.read(&mut buf).unwrap();
            assert!(n > 0, "{path}: closed before the head");
            got.extend_from_slice(&buf[..n]);
        }
        // Another client of the same URL is served by a fetch of its own, at once (within
        // the client's 10 s read timeout, where lock_timeout is 60 s).
        let r = req(&gw, path, "");
        assert_eq!((r.status, r.body.len()), (200, BIG), "{path}");
        assert_eq!(r.header("x-cache"), Some("Miss"), "{path}");
        drop(slow);
    }
}

/// http mode: a revalidation whose 304 makes the entry unstorable (it sets a cookie) still
/// answers this client with the 304's fields, and the old entry goes.
#[test]
fn a_304_that_cannot_be_stored_still_reaches_the_client() {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let up = Upstream::start(move |s| {
        let i = n2.fetch_add(1, Ordering::SeqCst) + 1;
        if s.header("if-none-match") == Some("\"v1\"") {
            return Action::Raw(
                format!("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nSet-Cookie: sess={i}\r\nX-From-304: yes\r\n\r\n")
                    .into_bytes(),
            );
        }
        Action::Raw(
            format!("HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nCache-Control: max-age=1\r\nContent-Length: 4\r\n\r\nv1 {}", i % 10)
                .into_bytes(),
        )
    });
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    assert_eq!(req(&gw, "/h/doc", "").header("x-cache"), Some("Miss"));
    clock(&gw, 2);
    let r = req(&gw, "/h/doc", "");
    assert_eq!(
        (
            r.status,
            r.header("x-cache"),
            r.header("set-cookie"),
            r.header("x-from-304")
        ),
        (200, Some("Revalidated"), Some("sess=2"), Some("yes"))
    );
    assert_eq!(r.text(), "v1 1");
    // Not stored with the cookie, and the old entry is gone: the next request fetches.
    let r = req(&gw, "/h/doc", "");
    assert_eq!(
        (r.header("x-cache"), r.header("set-cookie")),
        (Some("Miss"), None)
    );
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

/// A GET whose integration has a request template is cached as the bodiless request it is
/// (it was always Bypass: the rendered body was taken for the client's), and a hit on a
/// kept-alive connection leaves nothing of the body behind for the next request.
#[test]
fn a_get_with_a_request_template_is_cached() {
    let (up, _) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", "").replacen(
        "  [[apis.routes]]\n  route = \"GET /short\"",
        "  [[apis.routes]]\n  route = \"GET /tpl\"\n  cache = { key = [\"query.q\"] }\n  integration = { type = \"http\", uri = \"http://app/tpl\", request_templates = { \"application/json\" = '{\"q\": \"$input.params().querystring.q\"}' } }\n\n  [[apis.routes]]\n  route = \"GET /short\"",
        1,
    ));
    let mut c = Client::connect(gw.addr());
    let get = |c: &mut Client, q: &str| {
        c.request(format!("GET /g/tpl?q={q} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes())
    };
    let r = get(&mut c, "a");
    assert_eq!(
        (r.status, r.header("x-cache")),
        (200, Some("Miss")),
        "{}",
        r.text()
    );
    let first = r.text();
    let r = get(&mut c, "a");
    assert_eq!((r.header("x-cache"), r.text()), (Some("Hit"), first));
    // The same connection serves on: the next request is read as sent.
    let r = get(&mut c, "b");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("Miss")));
    let r = c.request(b"GET /g/items/1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 3);
}

/// A byte range of an answer the cache does not hold goes to the upstream as asked (it was
/// stripped, and the whole answer fetched and sent: a resumed download started over); one
/// the cache holds is answered whole from it, as RFC 9110 14.2 allows.
#[test]
fn a_range_that_misses_goes_to_the_upstream_as_asked() {
    let (up, n) = numbered("");
    let gw = Gw::start(&conf(up.addr, "allow", ""));
    let r = req(&gw, "/g/items/1", "Range: bytes=0-3\r\n");
    assert_eq!(r.header("x-cache"), Some("Miss"));
    assert_eq!(up.requests()[0].header("range"), Some("bytes=0-3"));
    // Nothing was stored from it: the next plain request fills the cache.
    assert_eq!(req(&gw, "/g/items/1", "").header("x-cache"), Some("Miss"));
    let r = req(&gw, "/g/items/1", "Range: bytes=0-3\r\n");
    assert_eq!(
        (r.header("x-cache"), r.text().as_str()),
        (Some("Hit"), "/items/1 #2")
    );
    assert_eq!(n.load(Ordering::SeqCst), 2);
}
