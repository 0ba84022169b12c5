//! The client side: a raw HTTP/1.1 connection ([`Client`]) that reads answers into [`Resp`],
//! and one-shot helpers for the gateway ([`get`]) and its admin API ([`admin`], [`admin_with`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use std::time::Duration;

use super::{eventually, Gw, IO_TIMEOUT, TOKEN};

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

    /// Every value of a header, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        values_named(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// Every value of header `name` among `headers`, in order.
pub fn values_named<'h>(headers: &'h [(String, String)], name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
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

/// A counter summed over shards; `label` (such as `kind="reset"`) narrows it.
pub fn metric(gw: &Gw, name: &str, label: &str) -> u64 {
    let text = admin(gw.admin(), "GET", "/metrics", Some(TOKEN)).text();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Shards publish their counters every 100 ms.
pub fn metric_reaches(gw: &Gw, name: &str, label: &str, want: u64) -> bool {
    eventually(Duration::from_secs(5), || metric(gw, name, label) >= want)
}

/// A WebSocket client of `ws://chat.test/` whose receive buffer is 4 KiB and which reads
/// nothing after the upgrade (until the test does).
pub fn slow_client(g: &Gw) -> tungstenite::WebSocket<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&g.addr().into()).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    tungstenite::client("ws://chat.test/", stream)
        .map_err(|e| format!("{e:?}"))
        .unwrap()
        .0
}
