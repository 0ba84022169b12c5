//! Access logs: one line per request, whatever happened to it, in the stage's log (or the
//! gateway's, for requests that reach no stage), with Amazon API Gateway's `$context`
//! variables; standard output; SIGUSR1 reopens the files; bad settings are refused by key.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

const KEY: &str = "k-0123456789abcdef0123";

/// The lines of a log file once it has `n` (the writer is asynchronous: lines reach the
/// file within a flush interval).
fn lines(path: &Path, n: usize) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(IO_TIMEOUT, || read().len() >= n),
        "{} has {:?}, wanted {n} lines",
        path.display(),
        read()
    );
    read()
}

fn json_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    lines(path, n)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn every_request_leaves_one_line_in_its_stages_log() {
    let up = Upstream::echo();
    let g = Gw::start(
        &Cfg::new()
            .stage_extra("access_log = { path = \"logs/access.log\", format = \"json\" }")
            .stage("quiet", "access_log = \"off\"")
            .route(
                "GET /pets/{id}",
                format!("integration = {{ type = \"http\", uri = \"http://{}/pets/{{id}}\" }}", up.addr),
            )
            .route(
                "GET /slow",
                "throttle = { rate = 1, burst = 1 }\nintegration = { type = \"mock\", body = \"ok\" }",
            )
            .route(
                "GET /keyed",
                "api_key_required = true\nintegration = { type = \"mock\", body = \"keyed\" }",
            )
            .extra(format!(
                "[access_log]\npath = \"logs/gateway.log\"\nformat = \"clf\"\n\n[[usage_plans]]\nname = \"p\"\nstages = [\"api/prod\"]\n\n[[api_keys]]\nname = \"acme\"\nvalue = \"{KEY}\"\nplan = \"p\"\n"
            ))
            .toml(),
    );
    let mut c = Client::connect(g.addr());
    let r = c.request(b"GET /pets/7?x=1 HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: t\"q\\\r\nX-Request-Id: rid-1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(get(g.addr(), "/nothing").status, 404);
    assert_eq!(get(g.addr(), "/slow").status, 200);
    assert_eq!(get(g.addr(), "/slow").status, 429);
    let r = Client::connect(g.addr())
        .request(format!("GET /keyed HTTP/1.1\r\nHost: a\r\nx-api-key: {KEY}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
    // A stage whose log is off writes nothing; a head that is not HTTP goes to the gateway's.
    assert_eq!(get(g.addr(), "/quiet/nothing").status, 404);
    let r = Client::connect(g.addr()).request(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n");
    assert_eq!(r.status, 400);

    let log = g.dir.0.join("logs/access.log");
    let v = json_lines(&log, 5);
    assert_eq!(v.len(), 5, "{v:?}");
    let pets = &v[0];
    assert_eq!(pets["requestId"], "rid-1");
    assert_eq!(pets["ip"], "127.0.0.1");
    assert_eq!(pets["httpMethod"], "GET");
    assert_eq!(pets["routeKey"], "GET /pets/{id}");
    assert_eq!(pets["path"], "/pets/7");
    assert_eq!(pets["protocol"], "HTTP/1.1");
    assert_eq!(pets["status"], "200");
    assert_eq!(pets["integrationStatus"], "200");
    assert_eq!(pets["userAgent"], "t\"q\\");
    assert_eq!(pets["domainName"], "shop.test");
    assert_eq!(pets["apiId"], "api");
    assert_eq!(pets["stage"], "prod");
    assert_eq!(pets["upstream"], up.addr.to_string());
    assert_eq!(pets["errorResponseType"], "-");
    assert_eq!(pets["tlsVersion"], "-");
    // WebSocket APIs' variables are in the json format too, absent on an http request.
    assert_eq!(pets["connectionId"], "-");
    assert_eq!(pets["eventType"], "-");
    let latency: f64 = pets["responseLatency"].as_str().unwrap().parse().unwrap();
    let integration: f64 = pets["integrationLatency"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(integration > 0.0 && integration <= latency, "{pets}");
    assert!(
        pets["responseLength"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 100
    );
    assert!(
        pets["requestLength"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 50
    );
    let epoch: u64 = pets["requestTimeEpoch"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(epoch <= now && now - epoch < 60_000, "{epoch} {now}");

    let missing = &v[1];
    assert_eq!(missing["status"], "404");
    assert_eq!(missing["routeKey"], "-");
    assert_eq!(missing["stage"], "prod");
    assert_eq!(missing["errorResponseType"], "RESOURCE_NOT_FOUND");
    assert_eq!(missing["errorMessage"], "Not Found");
    assert_eq!(missing["integrationStatus"], "-");

    assert_eq!(v[2]["status"], "200");
    assert_eq!(v[3]["status"], "429");
    assert_eq!(v[3]["errorResponseType"], "THROTTLED");
    assert_eq!(v[3]["errorMessage"], "Too Many Requests");
    // The key's id, never the key.
    assert_eq!(v[4]["apiKeyId"], "acme");
    assert!(!std::fs::read_to_string(&log).unwrap().contains(KEY));

    let gw = lines(&g.dir.0.join("logs/gateway.log"), 1);
    assert_eq!(gw.len(), 1, "{gw:?}");
    assert!(
        gw[0].starts_with("127.0.0.1 - - [") && gw[0].contains("] \"- - HTTP/1.1\" 400 "),
        "{}",
        gw[0]
    );
    let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
    assert!(
        text.contains("tollgate_access_log_dropped_total 0"),
        "{text}"
    );
    let written = || {
        let text = admin(g.admin(), "GET", "/metrics", Some(TOKEN)).text();
        text.lines()
            .find_map(|l| l.strip_prefix("tollgate_access_log_lines_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(eventually(IO_TIMEOUT, || written() >= 6), "{}", written());
}

#[test]
fn the_binary_writes_to_stdout_and_reopens_files_on_sigusr1() {
    let dir = TempDir::new();
    let cfg = dir.0.join("config.toml");
    let port = free_port().port();
    std::fs::write(
        &cfg,
        Cfg::new()
            .listener(format!("addr = \"127.0.0.1:{port}\""))
            .no_admin()
            .stage_extra(
                "access_log = { path = \"a.log\", format = \"$context.requestId $context.status $context.routeKey.\" }",
            )
            .route("GET /m", "integration = { type = \"mock\", body = \"m\" }")
            .extra("[access_log]\npath = \"stdout\"\nformat = \"$context.status $context.error.responseType\"\n")
            .toml()
            .replace("addr = \"127.0.0.1:0\"\naddr", "addr"),
    )
    .unwrap();
    let p = Proc::start(&cfg, &[]);
    p.wait_for("listening");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let first =
        Client::connect(addr).request(b"GET /m HTTP/1.1\r\nHost: a\r\nX-Request-Id: one\r\n\r\n");
    assert_eq!(first.status, 200);
    let log = dir.0.join("a.log");
    assert_eq!(lines(&log, 1), vec!["one 200 GET /m."]);
    // Moved away (logrotate), then SIGUSR1: the next line goes to a new file.
    std::fs::rename(&log, dir.0.join("a.log.1")).unwrap();
    p.signal("USR1");
    p.wait_for("SIGUSR1: reopening the access-log files");
    let second =
        Client::connect(addr).request(b"GET /m HTTP/1.1\r\nHost: a\r\nX-Request-Id: two\r\n\r\n");
    assert_eq!(second.status, 200);
    assert_eq!(lines(&log, 1), vec!["two 200 GET /m."]);
    assert_eq!(lines(&dir.0.join("a.log.1"), 1), vec!["one 200 GET /m."]);
    // A head that never became a request: the gateway's log, on standard output.
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"NOT HTTP\r\n\r\n").unwrap();
    assert_eq!(p.stdout_line(), "400 DEFAULT_4XX");
    p.signal("TERM");
}

#[test]
fn bad_access_log_settings_are_refused_by_key() {
    let cases = [
        (
            "access_log = { path = \"x.log\", format = \"$context.bogus\" }",
            "apis[\"api\"].stages[\"prod\"].access_log.format: \"$context.bogus\" names an unknown variable $context.bogus",
        ),
        (
            "access_log = { path = \"x.log\", format = \"k=$context.identity.apiKey\" }",
            "would write API keys to the log",
        ),
        (
            "access_log = { format = \"json\" }",
            "access_log.path: is required",
        ),
        (
            "access_log = { path = \"/etc/hostname/x.log\" }",
            "access_log.path: cannot append to /etc/hostname/x.log",
        ),
        ("access_log = \"on\"", "access_log = \"on\" is not valid"),
        (
            "access_log = { path = \"x.log\", fmt = \"json\" }",
            "unknown field `fmt`",
        ),
    ];
    for (keys, want) in cases {
        let dir = TempDir::new();
        let path = dir.0.join("config.toml");
        std::fs::write(&path, Cfg::new().stage_extra(keys).toml()).unwrap();
        let e = tollgate::Config::load(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{keys}: {e}");
    }
    // A FIFO would hold the load (opening it waits for a reader), then the writer every
    // log goes through: refused, at once. A device such as /dev/null is taken.
    let dir = TempDir::new();
    let fifo = dir.0.join("fifo.log");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let path = dir.0.join("config.toml");
    let keys = format!("access_log = {{ path = {:?} }}", fifo.display().to_string());
    std::fs::write(&path, Cfg::new().stage_extra(&keys).toml()).unwrap();
    let e = tollgate::Config::load(&path).unwrap_err().to_string();
    assert!(e.contains("is a FIFO or a socket"), "{e}");
    let keys = "access_log = { path = \"/dev/null\" }";
    std::fs::write(&path, Cfg::new().stage_extra(keys).toml()).unwrap();
    tollgate::Config::load(&path).unwrap();
}

/// A head that stops part way gets 408 after `header_timeout`: its line says when it began
/// (`requestTime`: the timeout before the answer, not the moment the gateway gave up) and how
/// long it took (`responseLatency`).
#[test]
fn a_timed_out_head_is_logged_from_when_it_began() {
    let g = Gw::start(
        &Cfg::new()
            .limits("header_timeout = \"1s\"")
            .extra("[access_log]\npath = \"logs/gateway.log\"\nformat = \"json\"\n")
            .toml(),
    );
    let ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let mut c = Client::connect(g.addr());
    c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n");
    let r = c.read_response(false).expect("an answer");
    let answered = ms();
    assert_eq!(r.status, 408);
    let log = g.dir.0.join("logs/gateway.log");
    let line = &json_lines(&log, 1)[0];
    assert_eq!(line["status"], "408");
    let began: u64 = line["requestTimeEpoch"].as_str().unwrap().parse().unwrap();
    assert!(
        began + 500 <= answered,
        "began {began}, answered {answered}"
    );
    let latency: f64 = line["responseLatency"].as_str().unwrap().parse().unwrap();
    assert!(latency >= 1000.0, "{line}");
}

/// A credential an authorizer reads from the query string is not written to the log (nor is a
/// presigned URL's signature): its value is `REDACTED` in `requestUri`.
#[test]
fn credentials_in_the_query_are_redacted() {
    let authz = Upstream::start(|_| {
        let b = r#"{"isAuthorized": true}"#;
        Action::Raw(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
            .into_bytes(),
        )
    });
    let g = Gw::start(
        &Cfg::new()
            .stage_extra("access_log = { path = \"logs/access.log\", format = \"json\" }")
            .api_extra(format!(
                "[[apis.authorizers]]\nname = \"q\"\ntype = \"request\"\nuri = \"http://{}/check\"\nidentity_sources = [\"$request.querystring.token\"]\n",
                authz.addr
            ))
            .route(
                "GET /secure",
                "authorizer = \"q\"\nintegration = { type = \"mock\", body = \"ok\" }",
            )
            .toml(),
    );
    let r = get(g.addr(), "/secure?a=1&token=s3cr3t-value&b=2");
    assert_eq!(r.text(), "ok");
    let log = g.dir.0.join("logs/access.log");
    let l = &json_lines(&log, 1)[0];
    assert_eq!(l["requestUri"], "/secure?a=1&token=REDACTED&b=2", "{l}");
    assert!(!std::fs::read_to_string(&log).unwrap().contains("s3cr3t"));
}
