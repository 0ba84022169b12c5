//! The fake upstream: a real HTTP/1.1 server on 127.0.0.1:0 ([`Upstream`]) that records what
//! reached it ([`Seen`]) and answers as a test scripts it ([`Action`], [`respond`]). Std only:
//! blocking sockets with timeouts, one thread per connection.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::IO_TIMEOUT;

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
        super::client::values_named(&self.headers, name)
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

/// An origin that records the raw bytes of each request's body (a chunked one, up to and
/// including its last chunk `0\r\n\r\n`, or one of Content-Length), answers 200 and closes.
pub struct RawOrigin {
    pub addr: SocketAddr,
    pub bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl RawOrigin {
    pub fn start() -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b2 = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { break };
                let b = b2.clone();
                std::thread::spawn(move || {
                    s.set_read_timeout(Some(IO_TIMEOUT)).ok();
                    let mut got = Vec::new();
                    let mut buf = [0u8; 65536];
                    let body_start = loop {
                        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&got[..body_start]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok());
                    loop {
                        let body = &got[body_start..];
                        let complete = match length {
                            Some(n) => body.len() >= n,
                            None => body.ends_with(b"0\r\n\r\n"),
                        };
                        if complete {
                            break;
                        }
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    b.lock().unwrap().push(got[body_start..].to_vec());
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                });
            }
        });
        RawOrigin { addr, bodies }
    }

    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.bodies.lock().unwrap().clone()
    }
}
