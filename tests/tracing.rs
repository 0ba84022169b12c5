//! Tracing: a request continues the caller's W3C trace (or Amazon's X-Amzn-Trace-Id) or
//! starts one; the upstream is sent the gateway's client span as its parent; sampled
//! requests and every error reach an OTLP/HTTP collector as a server span and a client
//! span, decoded here with the official protobuf definitions (tests/otlp/receiver.py).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};

use common::*;

/// The receiver, started once for this test binary: its port and the spans it decoded.
struct Collector {
    port: u16,
    spans: Mutex<(mpsc::Receiver<serde_json::Value>, Vec<serde_json::Value>)>,
    _child: Mutex<Child>,
}

fn collector() -> &'static Collector {
    static C: OnceLock<Collector> = OnceLock::new();
    C.get_or_init(|| {
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/otlp/receiver.py"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with opentelemetry-proto (scripts/test.sh installs it)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first
            .trim()
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("receiver said {first:?}"))
            .parse()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Collector {
            port,
            spans: Mutex::new((rx, Vec::new())),
            _child: Mutex::new(child),
        }
    })
}

/// Makes the collector refuse its next `count` exports with `status` (and `Retry-After`).
fn refuse_next(count: u32, status: u16, retry_after: Option<&str>) {
    let mut path = format!("/fail?count={count}&status={status}");
    if let Some(a) = retry_after {
        path += &format!("&retry_after={a}");
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", collector().port)).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!(
            "POST {path} HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 204"), "{answer}");
}

/// The statuses the collector refused exports with so far, waiting until there are `n`.
fn refusals(n: usize) -> Vec<u64> {
    let c = collector();
    let mut g = c.spans.lock().unwrap();
    let end = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let have: Vec<u64> = g.1.iter().filter_map(|s| s["refused"].as_u64()).collect();
        if have.len() >= n {
            return have;
        }
        match g
            .0
            .recv_timeout(end.saturating_duration_since(std::time::Instant::now()))
        {
            Ok(v) => g.1.push(v),
            Err(_) => panic!("{} of {n} refusals: {have:?}", have.len()),
        }
    }
}

/// The spans of `trace` once `n` have arrived.
fn spans_of(trace: &str, n: usize) -> Vec<serde_json::Value> {
    let c = collector();
    let mut g = c.spans.lock().unwrap();
    let end = std::time::Instant::now() + IO_TIMEOUT;
    loop {
        let have: Vec<_> =
            g.1.iter()
                .filter(|s| s["trace_id"] == trace)
                .cloned()
                .collect();
        if have.len() >= n {
            return have;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        match g.0.recv_timeout(left) {
            Ok(v) => g.1.push(v),
            Err(_) => panic!("{} of {n} spans of trace {trace}: {have:?}", have.len()),
        }
    }
}

fn gateway(upstream: std::net::SocketAddr) -> Gw {
    Gw::start(
        &Cfg::new()
            .stage("all", "tracing = { sample = 1.0 }")
            .route(
                "GET /pets/{id}",
                format!("integration = {{ type = \"http\", uri = \"http://{upstream}/pets/{{id}}\" }}"),
            )
            .route(
                "GET /down",
                format!("integration = {{ type = \"http\", uri = \"http://{}/down\" }}", closed_port()),
            )
            .extra(format!(
                "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\nsample = 0.0\nservice_name = \"edge\"\n",
                collector().port
            ))
            .toml(),
    )
}

fn attr<'a>(span: &'a serde_json::Value, k: &str) -> &'a serde_json::Value {
    &span["attributes"][k]
}

#[test]
fn a_sampled_callers_trace_continues_through_the_gateway_to_the_upstream() {
    let up = Upstream::echo();
    let g = gateway(up.addr);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let r = Client::connect(g.addr()).request(
        format!(
            "GET /pets/7?q=1 HTTP/1.1\r\nHost: shop.test:8080\r\nUser-Agent: ua/1\r\ntraceparent: 00-{trace}-{caller}-01\r\ntracestate: vendor=abc\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    // What the upstream was sent: the same trace, the gateway's client span as parent.
    let sent = r.json()["headers"].clone();
    let tp = sent["traceparent"].as_str().unwrap();
    assert!(
        tp.starts_with(&format!("00-{trace}-")) && tp.ends_with("-01"),
        "{tp}"
    );
    assert!(!tp.contains(caller), "{tp}");
    assert_eq!(sent["tracestate"], "vendor=abc");
    let client_span = &tp[36..52];
    assert_eq!(
        sent["x-amzn-trace-id"],
        format!(
            "Root=1-{}-{};Parent={client_span};Sampled=1",
            &trace[..8],
            &trace[8..]
        )
    );

    let spans = spans_of(trace, 2);
    let server = spans.iter().find(|s| s["kind"] == 2).unwrap();
    let client = spans.iter().find(|s| s["kind"] == 3).unwrap();
    assert_eq!(server["parent_span_id"], caller);
    assert_eq!(server["name"], "GET /pets/{id}");
    assert_eq!(server["service"], "edge");
    assert_eq!(server["trace_state"], "vendor=abc");
    assert_eq!(attr(server, "http.route"), "/pets/{id}");
    assert_eq!(attr(server, "http.request.method"), "GET");
    assert_eq!(attr(server, "http.response.status_code"), 200);
    assert_eq!(attr(server, "url.path"), "/pets/7");
    assert_eq!(attr(server, "url.query"), "q=1");
    assert_eq!(attr(server, "server.address"), "shop.test");
    assert_eq!(attr(server, "client.address"), "127.0.0.1");
    assert_eq!(attr(server, "user_agent.original"), "ua/1");
    assert_eq!(attr(server, "tollgate.stage"), "prod");
    assert_eq!(server["status"], 0);
    assert_eq!(client["span_id"], client_span);
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(client["name"], "GET");
    assert_eq!(attr(client, "server.port"), up.addr.port());
    assert_eq!(attr(client, "http.response.status_code"), 200);
    // The client span lies within the server span.
    let t = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    assert!(
        t(server, "start") <= t(client, "start"),
        "{server} {client}"
    );
    assert!(t(client, "start") <= t(client, "end"), "{client}");
    assert!(t(client, "end") <= t(server, "end"), "{server} {client}");

    // W3C Trace Context: several tracestate lines are one list; two traceparent lines are no
    // parent at all (the trace restarts).
    let r = Client::connect(g.addr()).request(
        format!(
            "GET /pets/8 HTTP/1.1\r\nHost: shop.test\r\ntraceparent: 00-{trace}-{caller}-01\r\ntracestate: a=1\r\ntracestate: b=2\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.json()["headers"]["tracestate"], "a=1,b=2");
    let other = "0af7651916cd43dd8448eb211c80319c";
    let r = Client::connect(g.addr()).request(
        format!(
            "GET /pets/9 HTTP/1.1\r\nHost: shop.test\r\ntraceparent: 00-{trace}-{caller}-01\r\ntraceparent: 00-{other}-{caller}-01\r\n\r\n"
        )
        .as_bytes(),
    );
    let tp = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!tp.contains(trace) && !tp.contains(other), "{tp}");
}

#[test]
fn unsampled_requests_propagate_without_export_and_errors_are_always_exported() {
    let up = Upstream::echo();
    let g = gateway(up.addr);
    // The caller said not sampled: the upstream hears the same, nothing is exported.
    let quiet = "11111111111111111111111111111111";
    let r = Client::connect(g.addr()).request(
        format!("GET /pets/1 HTTP/1.1\r\nHost: a\r\ntraceparent: 00-{quiet}-2222222222222222-00\r\n\r\n")
            .as_bytes(),
    );
    let tp = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        tp.starts_with(&format!("00-{quiet}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    // No caller trace, ratio 0: a new trace id, not sampled.
    let r = get(g.addr(), "/pets/2");
    let tp = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tp.ends_with("-00") && !tp.contains(quiet), "{tp}");
    // An error is exported whatever the ratio: the upstream is down (502).
    let amzn = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
    let r = Client::connect(g.addr()).request(
        format!("GET /down HTTP/1.1\r\nHost: a\r\nX-Amzn-Trace-Id: {amzn}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 502);
    let spans = spans_of("5759e988bd862e3fe1be46a994272793", 2);
    let server = spans.iter().find(|s| s["kind"] == 2).unwrap();
    assert_eq!(server["parent_span_id"], "53995c3f42cd8ad8");
    assert_eq!(server["status"], 2);
    assert_eq!(attr(server, "error.type"), "INTEGRATION_FAILURE");
    assert_eq!(attr(server, "http.response.status_code"), 502);
    let client = spans.iter().find(|s| s["kind"] == 3).unwrap();
    assert_eq!(client["status"], 2);
    // Exported for its error, not sampled: the spans' trace flags say so.
    assert_eq!(
        (server["flags"].as_u64(), client["flags"].as_u64()),
        (Some(0), Some(0))
    );
    // An all-zero Parent is none (W3C Trace Context 3.2.2.4).
    let amzn = "Root=1-7759e988-bd862e3fe1be46a994272793;Parent=0000000000000000;Sampled=1";
    let r = Client::connect(g.addr()).request(
        format!("GET /pets/4 HTTP/1.1\r\nHost: a\r\nX-Amzn-Trace-Id: {amzn}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    let spans = spans_of("7759e988bd862e3fe1be46a994272793", 2);
    let server = spans.iter().find(|s| s["kind"] == 2).unwrap();
    assert_eq!(server["parent_span_id"], "");
    assert_eq!(server["flags"], 1);
    // A method token the conventions do not know: `_OTHER` and a span named `HTTP`, the
    // token itself (cut at 64 characters) in `http.request.method_original`.
    let token = format!("M{}", "X".repeat(300));
    let amzn = "Root=1-8759e988-bd862e3fe1be46a994272793;Sampled=1";
    Client::connect(g.addr()).request(
        format!("{token} /pets/5 HTTP/1.1\r\nHost: a\r\nX-Amzn-Trace-Id: {amzn}\r\n\r\n")
            .as_bytes(),
    );
    let spans = spans_of("8759e988bd862e3fe1be46a994272793", 1);
    let server = spans.iter().find(|s| s["kind"] == 2).unwrap();
    assert!(
        server["name"] == "HTTP" || server["name"] == "HTTP /pets/{id}",
        "{}",
        server["name"]
    );
    assert_eq!(attr(server, "http.request.method"), "_OTHER");
    assert_eq!(attr(server, "http.request.method_original"), &token[..64]);
    // A stage that samples everything: a new trace, exported.
    let r = get(g.addr(), "/all/pets/3");
    let tp = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(tp.ends_with("-01"), "{tp}");
    let spans = spans_of(&tp[3..35], 2);
    let server = spans.iter().find(|s| s["kind"] == 2).unwrap();
    assert_eq!(server["parent_span_id"], "");
    assert_eq!(attr(server, "tollgate.stage"), "all");
    // A request of that stage that matches no route (404) follows the stage's ratio too,
    // not `[tracing]`'s (the caller leaves it open: `Sampled=?`).
    let amzn = "Root=1-6759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?";
    let r = Client::connect(g.addr()).request(
        format!("GET /all/nope HTTP/1.1\r\nHost: a\r\nX-Amzn-Trace-Id: {amzn}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 404);
    let spans = spans_of("6759e988bd862e3fe1be46a994272793", 1);
    assert_eq!(attr(&spans[0], "http.response.status_code"), 404);
    // The quiet traces were never exported, and the counters say what was.
    assert!(collector()
        .spans
        .lock()
        .unwrap()
        .1
        .iter()
        .all(|s| s["trace_id"] != quiet));
    let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
    assert!(
        text.contains("tollgate_trace_spans_total{outcome=\"dropped\"} 0"),
        "{text}"
    );
}

#[test]
fn bad_tracing_settings_are_refused_by_key() {
    for (extra, want) in [
        (
            "[tracing]\nsample = 0.5\n",
            "tracing.otlp_endpoint: is required",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\nsample = 2\n",
            "tracing.sample = 2.0 is not valid: expected a ratio from 0 to 1",
        ),
        (
            "[tracing]\notlp_endpoint = \"https://collector.test/v1/traces\"\n",
            "expected an http:// URL",
        ),
        // Each bad URL by its value, what is wrong, and what is allowed.
        (
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:0/v1/traces\"\n",
            "tracing.otlp_endpoint = \"http://127.0.0.1:0/v1/traces\" is not valid: its port \"0\" is not a port from 1 to 65535; expected the collector's OTLP/HTTP traces URL",
        ),
        (
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces#x\"\n",
            "it carries a #fragment, which is never sent",
        ),
        (
            "[tracing]\notlp_endpoint = \"ftp://127.0.0.1/v1/traces\"\n",
            "tracing.otlp_endpoint = \"ftp://127.0.0.1/v1/traces\" is not valid: it does not start with http:// or https://",
        ),
        // A stage's ratio with no collector to send to would trace nothing.
        (
            "",
            "apis[\"api\"].stages[\"prod\"].tracing: needs the [tracing] table",
        ),
    ] {
        let dir = TempDir::new();
        let path = dir.0.join("config.toml");
        let cfg = if extra.is_empty() {
            Cfg::new().stage_extra("tracing = { sample = 0.5 }")
        } else {
            Cfg::new().extra(extra)
        };
        std::fs::write(&path, cfg.toml()).unwrap();
        let e = tollgate::Config::load(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{extra}: {e}");
    }
}

#[test]
fn an_external_authorizers_call_is_a_client_span_and_hears_the_trace() {
    let authz = Upstream::start(|_| {
        let body = r#"{"isAuthorized": true}"#;
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
            .api_extra(format!(
                "[[apis.authorizers]]\nname = \"ext\"\ntype = \"request\"\nuri = \"http://{}/check\"\nidentity_sources = [\"$request.header.x-token\"]\nttl = \"0\"\n",
                authz.addr
            ))
            .route(
                "GET /guarded",
                "authorizer = \"ext\"\nintegration = { type = \"mock\", body = \"in\" }",
            )
            .extra(format!(
                "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\nsample = 1.0\n",
                collector().port
            ))
            .toml(),
    );
    let trace = "abcdef0123456789abcdef0123456789";
    let r = Client::connect(g.addr()).request(
        format!("GET /guarded HTTP/1.1\r\nHost: a\r\nx-token: t\r\ntraceparent: 00-{trace}-1111111111111111-01\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let spans = spans_of(trace, 2);
    let server = spans.iter().find(|s| s["kind"] == 2).unwrap();
    let call = spans.iter().find(|s| s["kind"] == 3).unwrap();
    assert_eq!(call["name"], "authorizer ext");
    assert_eq!(call["parent_span_id"], server["span_id"]);
    assert_eq!(attr(call, "http.response.status_code"), 200);
    // The authorizer heard the call's span as its parent.
    let seen = authz.requests();
    let tp = seen[0].header("traceparent").unwrap();
    assert_eq!(
        tp,
        format!("00-{trace}-{}-01", call["span_id"].as_str().unwrap())
    );
}

#[test]
fn an_export_the_collector_refuses_for_now_is_tried_again_and_others_are_not() {
    let up = Upstream::echo();
    let g = gateway(up.addr);
    let traced = |trace: &str| {
        let r = Client::connect(g.addr()).request(
            format!("GET /pets/1 HTTP/1.1\r\nHost: a\r\ntraceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(r.status, 200);
    };
    // 503 and 429 are transient (OTLP/HTTP): the batch is sent again, as the collector's
    // Retry-After says (0: at once), and arrives whole.
    refuse_next(1, 503, Some("0"));
    let a = "0af7651916cd43dd8448eb211c80319c";
    traced(a);
    assert_eq!(refusals(1), [503]);
    assert_eq!(spans_of(a, 2).len(), 2);
    refuse_next(1, 429, Some("0"));
    let b = "1af7651916cd43dd8448eb211c80319c";
    traced(b);
    assert_eq!(spans_of(b, 2).len(), 2);
    assert_eq!(refusals(2), [503, 429]);
    // 400 is not: the batch is dropped and counted as failed; the next one goes.
    refuse_next(1, 400, None);
    let c = "2af7651916cd43dd8448eb211c80319c";
    traced(c);
    assert_eq!(refusals(3), [503, 429, 400]);
    let d = "3af7651916cd43dd8448eb211c80319c";
    traced(d);
    assert_eq!(spans_of(d, 2).len(), 2);
    // One exporter thread sends in order: what was refused before `d` arrived is not coming.
    assert!(collector()
        .spans
        .lock()
        .unwrap()
        .1
        .iter()
        .all(|s| s["trace_id"] != c));
    assert_eq!(refusals(3).len(), 3);
    // The collector prints spans before it answers: the count follows its answer.
    let counted = || {
        let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
        text.contains("tollgate_trace_spans_total{outcome=\"failed\"} 2")
            && text.contains("tollgate_trace_spans_total{outcome=\"exported\"} 6")
    };
    assert!(eventually(IO_TIMEOUT, counted));
}

/// What a client sends is cut to 1 KiB in a span (OpenTelemetry's attribute value length
/// limit), so the bounded span queue bounds memory whatever the heads carry.
#[test]
fn long_client_values_are_cut_in_spans() {
    let up = Upstream::echo();
    let g = gateway(up.addr);
    let trace = "5bf92f3577b34da6a3ce929d0e0e4747";
    let (ua, q) = ("u".repeat(6000), "q".repeat(6000));
    let r = Client::connect(g.addr()).request(
        format!(
            "GET /pets/{}?{q} HTTP/1.1\r\nHost: h\r\nUser-Agent: é{ua}\r\ntraceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\r\n",
            "p".repeat(3000)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let spans = spans_of(trace, 2);
    let server = spans.iter().find(|s| s["kind"] == 2).unwrap();
    let path = attr(server, "url.path").as_str().unwrap();
    assert!(
        path.starts_with("/pets/ppp") && path.len() == 1024,
        "{}",
        path.len()
    );
    assert_eq!(attr(server, "url.query").as_str().unwrap(), &q[..1024]);
    // Cut on a character boundary: "é" is two bytes.
    let ua_attr = attr(server, "user_agent.original").as_str().unwrap();
    assert_eq!(ua_attr, format!("é{}", &ua[..1022]));
}

/// A WebSocket API's `$connect` continues the caller's trace as an http route does: its
/// integration gets the trace with the gateway's client span as parent and the caller's
/// sampling (it got no trace context, and its span said the upgrade's GET, not POST).
#[test]
fn a_websocket_connect_hands_the_trace_to_its_integration() {
    use tungstenite::client::IntoClientRequest;
    let up = Upstream::start(|_| respond(200, "{}"));
    let g = Gw::start(
        &Cfg::new()
            .upstream(format!("[[upstreams]]\nname = \"chat\"\ntargets = [\"{}\"]\n", up.addr))
            .api_extra("kind = \"websocket\"")
            .routes("[[apis.routes]]\nroute = \"$connect\"\nintegration = { type = \"http\", uri = \"http://chat/connect\" }\n")
            .extra(format!(
                "[tracing]\notlp_endpoint = \"http://127.0.0.1:{}/v1/traces\"\nsample = 0.0\nservice_name = \"edge\"\n",
                collector().port
            ))
            .toml(),
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let stream = std::net::TcpStream::connect(g.addr()).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut req = "ws://chat.test/".into_client_request().unwrap();
    req.headers_mut().insert(
        "traceparent",
        format!("00-{trace}-b7ad6b7169203331-01").parse().unwrap(),
    );
    let (_ws, _) = tungstenite::client(req, stream).unwrap();
    let seen = up.requests();
    let tp = seen[0].header("traceparent").unwrap().to_string();
    assert!(
        tp.starts_with(&format!("00-{trace}-")) && tp.ends_with("-01"),
        "{tp}"
    );
    let spans = spans_of(trace, 2);
    let client = spans.iter().find(|s| s["kind"] == 3).unwrap();
    assert_eq!(client["span_id"], &tp[36..52]);
    assert_eq!(client["name"], "POST");
    assert_eq!(attr(client, "http.request.method"), "POST");
}
