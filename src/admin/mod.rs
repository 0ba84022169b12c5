//! The admin API, served by the control plane on `[admin].addr` only. Every call needs
//! `Authorization: Bearer <token>` with the token from the environment variable named by
//! `admin.token_env`; without that variable the admin API does not start (and says why).
//!
//! - `GET /ping` (no token): 200 `ok` while serving, 503 `draining` once the gateway stops
//!   taking traffic — for load balancers; it says nothing else
//! - `GET /healthz`: `{"status":"ok","generation":N}`
//! - `GET /config`: the effective configuration as JSON, secrets redacted
//! - `POST /reload`: reload the config file; 200 `{"generation":N}` or 400 with every error
//! - `GET /apikeys`, `POST /apikeys`, `POST /apikeys/import` (CSV), `GET|PATCH|DELETE
//!   /apikeys/{id}`: API keys (values are shown once, in the answer to their creation)
//! - `GET /accesskeys`, `POST /accesskeys`, `GET|PATCH|DELETE /accesskeys/{id}`: SigV4
//!   access keys (the secret is shown once, in the answer to their creation)
//! - `GET /metrics`: counters per shard and gauges, Prometheus text format
//! - `GET /usageplans/{plan}/usage?startDate=&endDate=[&keyId=]`: daily usage per key
//! - `PUT /usageplans/{plan}/keys/{id}/quota` `{"used": n}`, `POST .../quota/reset`

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::driver::net::{TcpListener, TcpStream};
use bytes::BytesMut;

use crate::control::{Control, Edit, OpError, Part};
use crate::http::conn::{read_into, write_all_within};
use crate::http::h1::{self, Framing};
use crate::http::write::status_line;

mod fleet;
use fleet::fleet_write;

/// Time allowed for an admin request to arrive.
const ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for an admin client to take more of an answer (the time between two
/// writes): one that stops reading lets its connection go.
const ADMIN_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts admin connections until the control plane stops. `reserve`: descriptors kept for
/// the admin API, so that the operator can still reach it when the process runs out (a flood
/// of clients at the open-file limit); taken before the shards accept anything, or a flood
/// from the first moment leaves none to take.
pub(crate) async fn serve(
    mut listener: TcpListener,
    token: Rc<str>,
    ctl: Rc<RefCell<Control>>,
    mut reserve: crate::runtime::Reserve,
) {
    let mut logged = false;
    loop {
        // Once a successor took over, it answers on this socket: stop accepting here (an
        // accept already under way ends with its connection, which is served).
        let handed = async {
            while !ctl.borrow().handed_over() {
                crate::driver::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let Some(accepted) = listener.accept_until(handed).await else {
            return;
        };
        match accepted {
            Ok((stream, peer)) => {
                logged = false;
                crate::driver::spawn(crate::driver::guarded(handle(
                    stream,
                    peer,
                    token.clone(),
                    ctl.clone(),
                )));
            }
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) && reserve.release() => {
                if !std::mem::replace(&mut logged, true) {
                    tracing::warn!(error = %e, "admin accept at the open-file limit: serving on the reserved descriptor");
                }
                // A second, not less: on a loaded machine the accept may be queued to the
                // kernel after a shorter wait ran out, and the descriptor refilled first.
                let one = listener.accept_until(std::future::pending());
                if let Ok(Some(Ok((stream, peer)))) =
                    crate::driver::time::timeout(Duration::from_secs(1), one).await
                {
                    handle(stream, peer, token.clone(), ctl.clone()).await;
                }
                reserve.refill();
                if !reserve.has() {
                    crate::driver::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // No longer listening: a successor that took over with another admin address
            // shut this one down.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!("admin socket shut down: the admin API stops accepting here");
                return;
            }
            Err(e) => {
                if !std::mem::replace(&mut logged, true) {
                    tracing::warn!(error = %e, "admin accept failed (repeats are not logged)");
                }
                crate::driver::time::sleep(Duration::from_millis(50)).await;
                reserve.refill();
            }
        }
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timing.
fn token_ok(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    given
        .iter()
        .zip(want)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Whether the request carries the admin token (`Authorization: Bearer TOKEN`).
fn authorized(head: &crate::http::h1::RequestHead, token: &str) -> bool {
    // The scheme in any case (RFC 9110 11.1).
    head.header(b"authorization")
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case(b"bearer "))
                .map(|_| &v[7..])
        })
        .is_some_and(|t| token_ok(t.trim_ascii(), token.as_bytes()))
}

/// Largest admin request body: a CSV import of 100,000 keys (~4 MiB) fits with room.
const MAX_ADMIN_BODY: usize = 32 << 20;

/// A request refused for want of the admin token, said in the log at most once a minute with
/// how many there were (an operator sees guessing; a client cannot fill the log).
fn refused_token(peer: std::net::SocketAddr) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = SINCE.fetch_add(1, Relaxed) + 1;
    let last = LAST.load(Relaxed);
    if now >= last + 60 && LAST.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        SINCE.store(0, Relaxed);
        tracing::warn!(peer = %peer, refused = n, "admin API: a request without the right token was refused (refused: how many since the last such line; at most one a minute)");
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    token: Rc<str>,
    ctl: Rc<RefCell<Control>>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    let read = async {
        let head = loop {
            match h1::parse_request(&buf, 16 << 10) {
                Ok(Some((len, parts))) => break parts.into_head(buf.split_to(len).freeze()),
                Ok(None) => {}
                Err(h1::HeadError::TooLarge) => {
                    return Ok(Err((431, "Request Header Fields Too Large", false)))
                }
                Err(h1::HeadError::UriTooLong) => return Ok(Err((414, "URI Too Long", false))),
                Err(_) => return Ok(Err((400, "Bad Request", false))),
            }
            if read_into(&mut stream, &mut buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        };
        // The token is checked once the head is in, before any body is read: a client
        // without it holds no more than a head (up to 32 MiB each otherwise). What needs no
        // token takes no body.
        let open = matches!(head.path_bytes(), b"/ping" | b"/status")
            && matches!(head.framing, Framing::None);
        // A HEAD's refusal is the head alone (RFC 9110 9.3.2), as every other answer is.
        let is_head = head.method_bytes() == b"HEAD";
        if !open && !authorized(&head, &token) {
            refused_token(peer);
            return Ok(Err((401, "Unauthorized", is_head)));
        }
        let n = match head.framing {
            Framing::None => 0,
            Framing::Length(n) if n as usize <= MAX_ADMIN_BODY => n as usize,
            Framing::Length(_) => return Ok(Err((413, "Request Entity Too Large", is_head))),
            _ => {
                return Ok(Err((
                    411,
                    "Length Required: send the body with Content-Length",
                    is_head,
                )))
            }
        };
        // A client that waits for `100 Continue` (curl does, for bodies over 1 MiB) is told
        // to send at once (RFC 9110 10.1.1), not after its own wait.
        if buf.len() < n
            && head
                .header(b"expect")
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
        {
            write_all_within(
                &mut stream,
                b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
                ADMIN_SEND_TIMEOUT,
            )
            .await?;
        }
        while buf.len() < n {
            if read_into(&mut stream, &mut buf).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
        }
        Ok(Ok((head, buf.split_to(n).freeze())))
    };
    let (head, body) = match crate::driver::time::timeout(ADMIN_READ_TIMEOUT, read).await {
        Ok(Ok(Ok(x))) => x,
        Ok(Ok(Err((status, msg, is_head)))) => {
            let body = serde_json::json!({"message": msg}).to_string();
            let mut out = respond(status, body, "application/json");
            let kind = crate::error::admin_error_type(status);
            add_line(&mut out, format!("x-amzn-errortype: {kind}\r\n"));
            if is_head {
                if let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                    out.truncate(at + 4);
                }
            }
            let _ = write_all_within(&mut stream, out, ADMIN_SEND_TIMEOUT).await;
            // A body may still be coming: read a little of it so that the client reads the
            // answer rather than a reset (nginx's lingering close).
            let _ = monoio::io::AsyncWriteRent::shutdown(&mut stream).await;
            let mut drained = 0;
            let _ = crate::driver::time::timeout(Duration::from_secs(1), async {
                while drained < 256 << 10 {
                    buf.clear();
                    match read_into(&mut stream, &mut buf).await {
                        Ok(n) if n > 0 => drained += n,
                        _ => break,
                    }
                }
            })
            .await;
            return;
        }
        _ => return,
    };
    let authorized = authorized(&head, &token);
    let is_ping = head.path_bytes() == b"/ping";
    if head.path_bytes() == b"/status" && matches!(head.method_bytes(), b"GET" | b"HEAD") {
        // The page holds no figures: it asks /status.json for them with the token.
        let _ = write_all_within(
            &mut stream,
            status_page(head.method_bytes() == b"HEAD"),
            ADMIN_SEND_TIMEOUT,
        )
        .await;
        return;
    }
    // Amazon's exception name on errors: `@connections`' as the API's own domain gives it,
    // else the management API's.
    let mut errortype = "";
    let mut retry_after = false;
    let (status, body) = if is_ping && matches!(head.method_bytes(), b"GET" | b"HEAD") {
        if ctl.borrow().draining() {
            (503, "draining\n".to_string())
        } else {
            (200, "ok\n".to_string())
        }
    } else if is_ping {
        (405, r#"{"message":"Method Not Allowed"}"#.to_string())
    } else if !authorized {
        (401, r#"{"message":"Unauthorized"}"#.to_string())
    } else if !matches!(head.method_bytes(), b"GET" | b"HEAD") && ctl.borrow().store_released() {
        // Handing over to a successor (`--take-over`): the state store is its now, and it
        // answers on this socket in a moment. A change is retried, not failed.
        retry_after = true;
        (
            503,
            r#"{"message":"The gateway is handing over to its successor; retry shortly"}"#
                .to_string(),
        )
    } else {
        // HEAD is answered wherever GET is, as GET less its body (RFC 9110 9.3.2).
        let method = match head.method_bytes() {
            b"HEAD" => &b"GET"[..],
            m => m,
        };
        let path = String::from_utf8_lossy(head.path_bytes()).into_owned();
        let query = head
            .query_bytes()
            .map(|q| String::from_utf8_lossy(q).into_owned())
            .unwrap_or_default();
        let (status, out) = match path.strip_prefix("/@connections/") {
            Some(id) => {
                let shared = ctl.borrow().shared();
                let max = shared.current().limits.websocket_message as usize;
                let answer =
                    crate::shard::ws_command(&shared, method, id, body.to_vec(), max, None).await;
                errortype = crate::error::connections_error_type(answer.0);
                answer
            }
            None => match fleet_write(&ctl, method, &path, &query, &body).await {
                Some(answer) => answer,
                None => route(method, &path, &query, &body, &ctl),
            },
        };
        // A message sent to a connection (`POST /@connections/{id}`, a backend's push) is
        // traffic, not a change: a busy backend would write a line per message.
        let push = method == b"POST" && path.starts_with("/@connections/");
        if method != b"GET" && status < 400 && !push {
            // The audit trail: every change, who made it (the admin token's holder) and what.
            tracing::info!(
                target: "tollgate::audit",
                who = "admin",
                method = %String::from_utf8_lossy(head.method_bytes()),
                path = %path,
                status,
                "admin change"
            );
        }
        (status, out)
    };
    let content_type = if is_ping && matches!(status, 200 | 503) {
        // `ok` or `draining`.
        "text/plain"
    } else if body.starts_with('#') {
        // The metrics.
        "text/plain; version=0.0.4"
    } else {
        "application/json"
    };
    let mut out = respond(status, body, content_type);
    let mut add = |line: String| add_line(&mut out, line);
    let stale = ctl
        .borrow()
        .fleet_down_since()
        .filter(|_| matches!(head.method_bytes(), b"GET" | b"HEAD"));
    if let Some(since) = stale {
        // What this node answers may be behind the fleet: say so, and since when.
        add(format!(
            "x-tollgate-fleet: stale; redis-unreachable-since={since}\r\n"
        ));
    }
    if errortype.is_empty() && !is_ping {
        errortype = crate::error::admin_error_type(status);
    }
    if !errortype.is_empty() {
        add(format!("x-amzn-errortype: {errortype}\r\n"));
    }
    if retry_after {
        add("retry-after: 1\r\n".to_string());
    }
    if status == 405 {
        let path = String::from_utf8_lossy(head.path_bytes()).into_owned();
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if let Some(allow) = allowed_methods(&segs) {
            let allow = match allow.strip_prefix("GET") {
                Some(rest) if !allow.contains("HEAD") => format!("GET, HEAD{rest}"),
                _ => allow.to_string(),
            };
            add(format!("allow: {allow}\r\n"));
        }
    }
    if head.method_bytes() == b"HEAD" {
        // The head alone, whatever the status (RFC 9110 9.3.2): its Content-Length says
        // what a GET's body would have been.
        if let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            out.truncate(at + 4);
        }
    }
    let _ = write_all_within(&mut stream, out, ADMIN_SEND_TIMEOUT).await;
}

/// Every admin path (`{name}` matches one segment) and the methods it takes: what 405's
/// `Allow` says, and what `GET /openapi.json` documents (a test keeps the two equal).
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("/ping", "GET, HEAD"),
    ("/healthz", "GET"),
    ("/config", "GET"),
    ("/metrics", "GET"),
    ("/status", "GET, HEAD"),
    ("/status.json", "GET"),
    ("/openapi.json", "GET"),
    ("/@connections/{connectionId}", "GET, POST, DELETE"),
    ("/reload", "POST"),
    ("/apikeys", "GET, POST"),
    ("/apikeys/import", "POST"),
    ("/apikeys/{id}", "GET, PATCH, DELETE"),
    ("/accesskeys", "GET, POST"),
    ("/accesskeys/{id}", "GET, PATCH, DELETE"),
    ("/usageplans/{plan}/usage", "GET"),
    ("/usageplans/{plan}/keys/{id}/quota", "PUT"),
    ("/usageplans/{plan}/keys/{id}/quota/reset", "POST"),
    ("/apis", "GET, POST"),
    ("/apis/{api}", "GET, PUT, PATCH, DELETE"),
    ("/apis/{api}/routes", "GET, POST"),
    ("/apis/{api}/routes/{route}", "GET, PUT, PATCH, DELETE"),
    ("/apis/{api}/routes/{route}/integration", "GET, PUT, PATCH"),
    ("/apis/{api}/authorizers", "GET, POST"),
    (
        "/apis/{api}/authorizers/{authorizer}",
        "GET, PUT, PATCH, DELETE",
    ),
    ("/apis/{api}/deployments", "GET, POST"),
    ("/apis/{api}/deployments/{id}", "GET, DELETE"),
    ("/apis/{api}/stages", "GET, POST"),
    ("/apis/{api}/stages/{stage}", "GET, PATCH, DELETE"),
    ("/apis/{api}/stages/{stage}/canary", "DELETE"),
    ("/apis/{api}/stages/{stage}/canary/promote", "POST"),
    ("/domains", "GET, POST"),
    ("/domains/{id}", "DELETE"),
    ("/apis/{api}/stages/{stage}/cache", "GET, DELETE"),
    ("/apis/{api}/stages/{stage}/export", "GET"),
];

/// The methods a known admin path takes (for 405's `Allow`); `None`: no such path (404).
fn allowed_methods(segs: &[&str]) -> Option<&'static str> {
    ROUTES.iter().find_map(|(pattern, methods)| {
        let mut pat = pattern.split('/').filter(|p| !p.is_empty());
        let mut path = segs.iter();
        loop {
            match (pat.next(), path.next()) {
                (None, None) => return Some(*methods),
                (Some(p), Some(s)) if p.starts_with('{') || p == *s => {}
                _ => return None,
            }
        }
    })
}

/// The admin API described in OpenAPI 3.1.
const OPENAPI: &str = include_str!("openapi.json");

/// Decodes `%XX` and `+` in a query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode(v))
}

/// `failonwarnings=true|false` (the name and value in any case: Amazon's REST API import
/// spells it `failonwarnings`, its HTTP API import `failOnWarnings`; absent: false). Another
/// value is a 400: a caller who asked for a strict import must not get a lenient one. So is
/// a `basepath` other than `ignore`: the document's base path is not prepended or split
/// off (the import warns that it is left out).
fn fail_on_warnings(query: &str) -> Result<bool, (u16, String)> {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode(v))
    };
    if let Some(b) = param("basepath").filter(|b| b != "ignore") {
        return Err(message(
            400,
            format!("basepath={b:?}: only ignore is supported (serve the API under a base path with a domain mapping's base_path)"),
        ));
    }
    match param("failonwarnings") {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(message(
            400,
            format!("failonwarnings={v:?}: expected true or false"),
        )),
    }
}

fn message(status: u16, msg: impl std::fmt::Display) -> (u16, String) {
    (
        status,
        serde_json::json!({"message": msg.to_string()}).to_string(),
    )
}

fn op<T: serde::Serialize>(status: u16, r: Result<T, OpError>) -> (u16, String) {
    match r {
        Ok(v) => (status, serde_json::to_string(&v).unwrap_or_default()),
        Err(OpError(s, m)) => message(s, m),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyUpdate {
    enabled: Option<bool>,
    plans: Option<Vec<String>>,
    name: Option<String>,
    description: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaUpdate {
    used: u64,
}

/// A request body: every admin body is a JSON object (serde would also read a struct from
/// an array, by position: `["name", null, ...]` made a key).
fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, (u16, String)> {
    match body.trim_ascii_start().first() {
        Some(b'{') => {}
        Some(_) => return Err(message(400, "invalid JSON body: expected an object")),
        None => {
            return Err(message(
                400,
                "invalid JSON body: expected an object, got nothing",
            ))
        }
    }
    // A value of the wrong type is named by its field (`description: invalid type: ...`).
    crate::syntax::json_strict::from_slice(body)
        .map_err(|e| e.to_string())
        .and_then(|v| crate::config::from_json(v, ""))
        .map_err(|e| message(400, format!("invalid JSON body: {e}")))
}

/// A path's segments, `%XX` decoded (`prod%2FCanary` names the canary's stage); `+` is itself
/// (only a query's `+` is a space).
fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut out = Vec::with_capacity(s.len());
            crate::syntax::path::path_decode_into(s.as_bytes(), &mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
        .collect()
}

fn route(
    method: &[u8],
    path: &str,
    query: &str,
    body: &[u8],
    ctl: &Rc<RefCell<Control>>,
) -> (u16, String) {
    let segs = segments(path);
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match (method, segs.as_slice()) {
        (b"GET", ["healthz"]) => (200, serde_json::json!({"status": "ok", "generation": ctl.borrow().generation()}).to_string()),
        (b"GET", ["config"]) => {
            let c = ctl.borrow();
            (200, serde_json::json!({"generation": c.generation(), "config": &*c.config()}).to_string())
        }
        // A stopping gateway keeps what it drains with (as SIGHUP then).
        (b"POST", ["reload"]) if ctl.borrow().shared().draining.load(std::sync::atomic::Ordering::Relaxed) => {
            message(503, "the gateway is stopping (draining): not reloaded")
        }
        (b"POST", ["reload"]) => match ctl.borrow_mut().reload() {
            Ok(g) => (200, serde_json::json!({"generation": g}).to_string()),
            Err(errors) => (400, serde_json::json!({"message": "configuration refused; the previous one keeps serving", "errors": errors}).to_string()),
        },
        (b"GET", ["openapi.json"]) => (200, OPENAPI.to_string()),
        (b"GET", ["status.json"]) => (200, ctl.borrow().status_json().to_string()),
        (b"GET", ["metrics"]) => {
            let c = ctl.borrow();
            (200, c.metrics_text())
        }
        (b"GET", ["apikeys"]) => (200, serde_json::json!({"items": ctl.borrow().list_keys()}).to_string()),
        (b"GET", ["apikeys", id]) if *id != "import" => match ctl.borrow().get_key(id) {
            Some(k) => op(200, Ok::<_, OpError>(k)),
            None => message(404, "no such key"),
        },
        (b"GET", ["accesskeys"]) => (200, ctl.borrow().list_access_keys().to_string()),
        (b"GET", ["accesskeys", id]) => op(200, ctl.borrow().get_access_key(id)),
        (b"GET", ["usageplans", plan, "usage"]) => {
            let (Some(start), Some(end)) = (query_param(query, "startDate"), query_param(query, "endDate")) else {
                return message(400, "startDate and endDate are required (YYYY-MM-DD)");
            };
            let key = query_param(query, "keyId");
            let page = match crate::control::usage::Page::parse(query_param(query, "limit"), query_param(query, "position")) {
                Ok(p) => p,
                Err(e) => return message(e.0, e.1),
            };
            op(200, ctl.borrow_mut().usage(plan, (&start, &end), key.as_deref(), &page))
        }
        (b"GET", ["apis"]) => (200, ctl.borrow().list_apis().to_string()),
        (b"POST", ["apis"])
            if query_param(query, "mode").is_some_and(|m| m != "import") =>
        {
            message(
                400,
                format!(
                    "mode={:?}: expected import (or no mode, for a definition in JSON)",
                    query_param(query, "mode").unwrap_or_default()
                ),
            )
        }
        (b"POST", ["apis"]) if query_param(query, "mode").as_deref() == Some("import") => {
            match fail_on_warnings(query) {
                Ok(strict) => op(
                    201,
                    ctl.borrow_mut().import_api(
                        None,
                        query_param(query, "name"),
                        "import",
                        strict,
                        body,
                    ),
                ),
                Err(e) => e,
            }
        }
        (b"POST", ["apis"]) => match json::<serde_json::Value>(body) {
            Ok(v) => op(201, ctl.borrow_mut().create_api(v)),
            Err(e) => e,
        },
        (b"PUT", ["apis", api]) if query_param(query, "mode").is_some() => {
            match fail_on_warnings(query) {
                Ok(strict) => op(
                    200,
                    ctl.borrow_mut().import_api(
                        Some(api),
                        None,
                        &query_param(query, "mode").unwrap_or_default(),
                        strict,
                        body,
                    ),
                ),
                Err(e) => e,
            }
        }
        (b"GET", ["apis", api]) => op(200, ctl.borrow().get_api(api)),
        (b"PUT", ["apis", api]) => match json::<serde_json::Value>(body) {
            Ok(v) => op(200, ctl.borrow_mut().put_api(api, v)),
            Err(e) => e,
        },
        (b"PATCH", ["apis", api]) => match json::<serde_json::Value>(body) {
            Ok(v) => op(200, ctl.borrow_mut().patch_api(api, v)),
            Err(e) => e,
        },
        (b"DELETE", ["apis", api]) => op(200, ctl.borrow_mut().delete_api(api)),
        (m, ["apis", api, list @ ("routes" | "authorizers"), rest @ ..]) if rest.len() <= 1 => {
            let part = if *list == "routes" { Part::Route } else { Part::Authorizer };
            let id = rest.first().copied();
            let edit = match m {
                b"GET" => return match id {
                    None => op(200, ctl.borrow().list_parts(api, part)),
                    Some(id) => op(200, ctl.borrow().get_part(api, part, id)),
                },
                b"DELETE" if id.is_some() => return op(200, ctl.borrow_mut().delete_part(api, part, id.unwrap_or_default())),
                b"POST" if id.is_none() => Edit::Create,
                b"PUT" if id.is_some() => Edit::Replace,
                b"PATCH" if id.is_some() => Edit::Patch,
                _ => return message(405, "Method Not Allowed"),
            };
            match json::<serde_json::Value>(body) {
                Ok(v) => op(if edit == Edit::Create { 201 } else { 200 }, ctl.borrow_mut().put_part(api, part, id, edit, v)),
                Err(e) => e,
            }
        }
        (b"GET", ["apis", api, "routes", route, "integration"]) => op(200, ctl.borrow().get_integration(api, route)),
        (m @ (b"PUT" | b"PATCH"), ["apis", api, "routes", route, "integration"]) => match json::<serde_json::Value>(body) {
            Ok(v) => op(200, ctl.borrow_mut().put_integration(api, route, if m == b"PUT" { Edit::Replace } else { Edit::Patch }, v)),
            Err(e) => e,
        },
        (b"GET", ["apis", api, "deployments", id]) => op(200, ctl.borrow().get_deployment(api, id)),
        (b"DELETE", ["apis", api, "deployments", id]) => op(200, ctl.borrow_mut().delete_deployment(api, id)),
        (b"GET", ["apis", api, "deployments"]) => op(200, ctl.borrow().list_deployments(api)),
        (b"POST", ["apis", api, "deployments"]) => {
            let v = if body.is_empty() { Ok(serde_json::json!({})) } else { json::<serde_json::Value>(body) };
            match v {
                Ok(v) => op(201, ctl.borrow_mut().create_deployment(api, v)),
                Err(e) => e,
            }
        }
        (b"GET", ["apis", api, "stages"]) => op(200, ctl.borrow().list_stages(api)),
        (b"POST", ["apis", api, "stages"]) => match json::<serde_json::Value>(body) {
            Ok(v) => op(201, ctl.borrow_mut().put_stage(api, None, v)),
            Err(e) => e,
        },
        (b"GET", ["apis", api, "stages", stage]) => op(200, ctl.borrow().get_stage(api, stage)),
        (b"PATCH", ["apis", api, "stages", stage]) => match json::<serde_json::Value>(body) {
            Ok(v) => op(200, ctl.borrow_mut().put_stage(api, Some(stage), v)),
            Err(e) => e,
        },
        (b"DELETE", ["apis", api, "stages", stage]) => op(200, ctl.borrow_mut().delete_stage(api, stage)),
        (b"DELETE", ["apis", api, "stages", stage, "canary"]) => op(200, ctl.borrow_mut().end_canary(api, stage, false)),
        (b"POST", ["apis", api, "stages", stage, "canary", "promote"]) => op(200, ctl.borrow_mut().end_canary(api, stage, true)),
        (b"GET", ["domains"]) => (200, ctl.borrow().list_domains().to_string()),
        (b"POST", ["domains"]) => match json::<serde_json::Value>(body) {
            Ok(v) => op(201, ctl.borrow_mut().create_mapping(v)),
            Err(e) => e,
        },
        (b"DELETE", ["domains", id]) => op(200, ctl.borrow_mut().delete_mapping(id)),
        (b"GET", ["apis", api, "stages", stage, "export"]) => {
            let kind = query_param(query, "type").unwrap_or_else(|| "oas30".into());
            let Some(kind) = crate::openapi::Kind::parse(&kind) else {
                return message(400, format!("type={kind:?}: expected oas30 or swagger"));
            };
            let extensions = match query_param(query, "extensions").as_deref() {
                None | Some("") => false,
                Some("apigateway") | Some("integrations") => true,
                Some(other) => {
                    return message(400, format!("extensions={other:?}: expected apigateway"))
                }
            };
            let cfg = ctl.borrow().config();
            if cfg
                .apis
                .iter()
                .any(|a| a.name == *api && a.websocket.is_some())
            {
                return message(400, crate::openapi::websocket_export(api));
            }
            match crate::openapi::export(&cfg, api, stage, kind, extensions) {
                Ok(doc) => (200, doc.to_string()),
                Err(e) => message(404, e),
            }
        }
        (b"GET", ["apis", api, "stages", stage, "cache"]) => {
            op(200, ctl.borrow().stage_cache(api, stage).map(|c| c.stats_json()))
        }
        (_, segs) if allowed_methods(segs).is_some() => message(405, "Method Not Allowed"),
        _ => message(404, "Not Found"),
    }
}

/// The live status page (`GET /status`): one HTML document, no external assets.
const STATUS_PAGE: &str = include_str!("status.html");

fn status_page(head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\ncontent-security-policy: default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'\r\nx-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\nconnection: close\r\n\r\n",
        STATUS_PAGE.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(STATUS_PAGE.as_bytes());
    }
    out
}

/// A header line goes with the head: inserted before the blank line.
fn add_line(out: &mut Vec<u8>, line: String) {
    if let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") {
        out.splice(at + 2..at + 2, line.into_bytes());
    }
}

fn respond(status: u16, body: String, content_type: &str) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(body.len() + 128);
    status_line(&mut out, 1, status);
    if status == 204 {
        // No content, and none of its framing (RFC 9110 8.6: no Content-Length in a 204).
        out.extend_from_slice(b"connection: close\r\n\r\n");
        return out;
    }
    let _ = write!(
        out,
        "content-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if status == 401 {
        out.extend_from_slice(b"www-authenticate: Bearer\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests;
