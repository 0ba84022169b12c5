//! Test support: start a gateway in-process on 127.0.0.1:0, talk to it with a raw HTTP/1.1
//! client, and stand up real upstream servers with scripted behaviour. Std only: blocking
//! sockets with timeouts, one thread per upstream connection.

#![allow(dead_code)]

pub mod certs;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollgate::config::{Config, Driver};
use tollgate::{Gateway, Options};

pub const TOKEN: &str = "test-admin-token";
/// Upper bound for any single socket wait in tests; a hang fails instead of blocking CI.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The driver under test: `TOLLGATE_TEST_DRIVER=epoll|io_uring|auto` (default auto).
pub fn driver() -> Driver {
    match std::env::var("TOLLGATE_TEST_DRIVER").as_deref() {
        Ok("epoll") => Driver::Epoll,
        Ok("io_uring") => Driver::IoUring,
        _ => Driver::Auto,
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tollgate-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A gateway running in this process.
pub struct Gw {
    pub gw: Option<Gateway>,
    pub dir: TempDir,
    pub path: PathBuf,
}

impl Gw {
    /// Starts a gateway from TOML text (`{{name}}` placeholders already filled in).
    pub fn start(toml: &str) -> Gw {
        Gw::start_in(TempDir::new(), toml)
    }

    /// Starts a gateway whose config (and state store, `data/`) live in `dir`.
    pub fn start_in(dir: TempDir, toml: &str) -> Gw {
        Gw::try_start_in(dir, toml).unwrap_or_else(|(_, e)| panic!("gateway did not start: {e}"))
    }

    pub fn try_start_in(dir: TempDir, toml: &str) -> Result<Gw, (TempDir, String)> {
        let path = dir.0.join("config.toml");
        std::fs::write(&path, toml).unwrap();
        let mut cfg = Config::load(&path).unwrap_or_else(|e| panic!("config refused:\n{e}"));
        cfg.server.driver = driver();
        match Gateway::start(
            cfg,
            Options {
                config_path: Some(path.clone()),
                workers: None,
                admin_token: Some(TOKEN.into()),
            },
        ) {
            Ok(gw) => Ok(Gw {
                gw: Some(gw),
                dir,
                path,
            }),
            Err(e) => Err((dir, e.to_string())),
        }
    }

    /// Stops the gateway and hands back its directory (to start another on the same state).
    pub fn stop(mut self) -> TempDir {
        self.shutdown();
        std::mem::replace(&mut self.dir, TempDir(std::path::PathBuf::new()))
    }

    pub fn addr(&self) -> SocketAddr {
        self.gw
            .as_ref()
            .unwrap()
            .addr("http")
            .expect("listener \"http\"")
    }

    pub fn admin(&self) -> SocketAddr {
        self.gw.as_ref().unwrap().admin_addr().expect("admin API")
    }

    /// Rewrites the config file (for reload tests).
    pub fn rewrite(&self, toml: &str) {
        std::fs::write(&self.path, toml).unwrap();
    }

    pub fn shutdown(&mut self) {
        if let Some(g) = self.gw.take() {
            g.shutdown();
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A minimal config: one listener, one API with the given routes, one stage, host "*".
/// `extra` is appended at the end of the file (upstreams, more stages...).
pub fn config(limits: &str, upstreams: &str, routes: &str) -> String {
    format!(
        r#"
[server]
workers = 1

[[listeners]]
name = "http"
addr = "127.0.0.1:0"

[admin]
addr = "127.0.0.1:0"

[limits]
{limits}

{upstreams}

[[apis]]
name = "api"

  [[apis.stages]]
  name = "prod"
  variables = {{ who = "prod" }}

{routes}

[[domains]]
host = "*"
mappings = [{{ base_path = "", api = "api", stage = "prod" }}]
"#
    )
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// A raw HTTP/1.1 client connection.
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write");
    }

    /// Sends and reads one response.
    pub fn request(&mut self, raw: &[u8]) -> Resp {
        self.send(raw);
        self.read_response(false).expect("a response")
    }

    /// Reads one response; `head_only` for answers to HEAD. `None` if the connection closed
    /// before a status line.
    pub fn read_response(&mut self, head_only: bool) -> Option<Resp> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                self.reader.read_line(&mut h).ok()?;
                let h = h.trim_end_matches(['\r', '\n']);
                if h.is_empty() {
                    break;
                }
                let (n, v) = h.split_once(':')?;
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
            if (100..200).contains(&status) && status != 101 {
                continue; // interim
            }
            let mut resp = Resp {
                status,
                headers,
                body: Vec::new(),
            };
            if head_only || status == 204 || status == 304 || status == 101 {
                return Some(resp);
            }
            if let Some(cl) = resp.header("content-length") {
                let n: usize = cl.parse().ok()?;
                let mut body = vec![0; n];
                self.reader.read_exact(&mut body).ok()?;
                resp.body = body;
            } else if resp
                .header("transfer-encoding")
                .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
            {
                loop {
                    let mut size = String::new();
                    self.reader.read_line(&mut size).ok()?;
                    let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
                    if n == 0 {
                        let mut end = String::new();
                        self.reader.read_line(&mut end).ok()?;
                        break;
                    }
                    let mut chunk = vec![0; n + 2];
                    self.reader.read_exact(&mut chunk).ok()?;
                    resp.body.extend_from_slice(&chunk[..n]);
                }
            } else {
                self.reader.read_to_end(&mut resp.body).ok()?;
            }
            return Some(resp);
        }
    }

    /// True when the server closed the connection (EOF or reset) within the timeout.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.reader.read(&mut b), Ok(0) | Err(_))
    }

    /// Reads exactly `buf.len()` bytes (after a protocol switch).
    pub fn read_exact(&mut self, buf: &mut [u8]) {
        self.reader.read_exact(buf).expect("read");
    }

    /// Reads whatever arrives until EOF.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.reader.read_to_end(&mut v);
        v
    }
}

/// One request: `GET path` with Host and Connection: close.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    Client::connect(addr).request(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// A request as an upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which accepted connection (0, 1, ...) carried it.
    pub conn: usize,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What a scripted upstream does with a request.
pub enum Action {
    /// Write these bytes (a whole response), keep the connection.
    Raw(Vec<u8>),
    /// Write these bytes, then close.
    RawClose(Vec<u8>),
    /// Wait, then respond 200 "slow".
    Sleep(Duration),
    /// Close without answering.
    Close,
    /// Reset the connection (SO_LINGER 0).
    Reset,
    /// Answer 101 and echo everything afterwards.
    UpgradeEcho,
}

/// `HTTP/1.1 <status>` with a body and Content-Length.
pub fn respond(status: u16, body: &str) -> Action {
    Action::Raw(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

type Handler = dyn Fn(&Seen) -> Action + Send + Sync;

/// A real upstream server on 127.0.0.1:0.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub conns: Arc<AtomicUsize>,
}

impl Upstream {
    /// Echo server: answers 200 with a JSON description of the request.
    pub fn echo() -> Upstream {
        Upstream::start(|s| {
            let body = serde_json::json!({
                "method": s.method, "target": s.target, "body": String::from_utf8_lossy(&s.body),
                "headers": s.headers.iter().map(|(n, v)| (n.to_ascii_lowercase(), v.clone())).collect::<HashMap<_, _>>(),
            })
            .to_string();
            Action::Raw(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes())
        })
    }

    pub fn start(handler: impl Fn(&Seen) -> Action + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s2, c2) = (seen.clone(), conns.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let id = c2.fetch_add(1, Ordering::SeqCst);
                let (h, s) = (handler.clone(), s2.clone());
                std::thread::spawn(move || serve_upstream(stream, id, h, s));
            }
        });
        Upstream { addr, seen, conns }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn serve_upstream(
    stream: TcpStream,
    id: usize,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.trim_end().splitn(3, ' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        let mut s = Seen {
            method,
            target,
            headers,
            body: Vec::new(),
            conn: id,
        };
        if let Some(n) = s
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            let mut b = vec![0; n];
            if r.read_exact(&mut b).is_err() {
                return;
            }
            s.body = b;
        } else if s.header("transfer-encoding").is_some() {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).ok();
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if n == 0 {
                    let mut end = String::new();
                    r.read_line(&mut end).ok();
                    break;
                }
                let mut chunk = vec![0; n + 2];
                if r.read_exact(&mut chunk).is_err() {
                    return;
                }
                s.body.extend_from_slice(&chunk[..n]);
            }
        }
        let action = handler(&s);
        seen.lock().unwrap().push(s);
        match action {
            Action::Raw(b) => {
                if w.write_all(&b).is_err() {
                    return;
                }
            }
            Action::RawClose(b) => {
                let _ = w.write_all(&b);
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Action::Sleep(d) => {
                std::thread::sleep(d);
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow");
            }
            Action::Close => {
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Action::Reset => {
                let sock = socket2::SockRef::from(&w);
                let _ = sock.set_linger(Some(Duration::ZERO));
                return;
            }
            Action::UpgradeEcho => {
                let _ = w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
                let mut buf = [0u8; 4096];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A local port with nothing listening (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Polls `f` until it holds, for at most `limit` (for state that changes asynchronously,
/// such as health checks; never used to wait for the gateway's own answers).
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// An admin API call with a body.
pub fn admin_with(addr: SocketAddr, method: &str, path: &str, body: &str) -> Resp {
    Client::connect(addr).request(
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
    )
}

/// An admin API call.
pub fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Resp {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    Client::connect(addr).request(
        format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
}

/// A running binary; killed on drop if still alive.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub fn start(config: &std::path::Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(["--config", config.to_str().unwrap(), "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("TOLLGATE_ADMIN_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proc { child, lines: rx }
    }

    /// Waits for a log line whose message is `msg`; returns its fields.
    pub fn wait_for(&self, msg: &str) -> serde_json::Value {
        loop {
            let line = self
                .lines
                .recv_timeout(IO_TIMEOUT)
                .unwrap_or_else(|_| panic!("no log line {msg:?}"));
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if v["fields"]["message"] == msg {
                return v["fields"].clone();
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
