//! A small HTTP/1.1 GET for the control plane: OpenID discovery documents and JWKS key sets.
//! One request per connection (`Connection: close`), over TLS for `https://` URLs (verified
//! against the system's roots), the answer bounded in size and time. [`read_answer`] (one
//! whole, bounded answer) also serves the shards' calls to external authorizers.

use std::net::ToSocketAddrs;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;

use crate::config::FetchUrl;
use crate::http::body::ChunkedDecoder;
use crate::http::h1::{self, Framing};
use crate::upstream::UpStream;

/// Largest document accepted.
pub(crate) const MAX_DOCUMENT: usize = 1 << 20;

/// GETs `url` and returns its body, if the answer is a 200 within `timeout`.
pub(crate) async fn get(url: &FetchUrl, timeout: Duration) -> Result<String, String> {
    match crate::driver::time::timeout(timeout, get_inner(url)).await {
        Ok(r) => r,
        Err(_) => Err(format!("GET {}: no answer within {timeout:?}", url.text)),
    }
}

async fn get_inner(url: &FetchUrl) -> Result<String, String> {
    let fail = |what: String| format!("GET {}: {what}", url.text);
    let addr = lookup(&url.host, url.port)
        .await
        .map_err(|e| fail(format!("cannot resolve {}: {e}", url.host)))?;
    let tcp = crate::driver::net::TcpStream::connect_addr(addr)
        .await
        .map_err(|e| fail(format!("connect to {addr}: {e}")))?;
    let mut s = if url.tls {
        let config = client_config().map_err(fail)?;
        let name = crate::tls::client::server_name(&url.host).map_err(fail)?;
        UpStream::Tls(Box::new(
            crate::http::tls::TlsClient::connect(tcp, config, name)
                .await
                .map_err(|e| fail(format!("TLS handshake: {e}")))?,
        ))
    } else {
        UpStream::Plain(tcp)
    };
    let mut host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    if url.port != if url.tls { 443 } else { 80 } {
        host = format!("{host}:{}", url.port);
    }
    let req = format!(
        "GET {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: tollgate\r\naccept: application/json\r\nconnection: close\r\n\r\n",
        url.path
    );
    s.write_all(req.into_bytes())
        .await
        .map_err(|e| fail(format!("write: {e}")))?;
    let Fetched { status, body, .. } = read_answer(&mut s, MAX_DOCUMENT).await.map_err(fail)?;
    if status != 200 {
        return Err(fail(format!("answered {status}")));
    }
    String::from_utf8(body).map_err(|_| fail("the document is not UTF-8".into()))
}

/// Resolves a name on a thread of its own: the lookup blocks (a resolver that takes seconds
/// held the control thread — the admin API, `/ping`, reloads and signals — for as long), and
/// the caller waits for it only as long as its fetch's timeout.
async fn lookup(host: &str, port: u16) -> Result<std::net::SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, port));
    }
    let (tx, rx) = flume::bounded(1);
    let name = host.to_string();
    std::thread::Builder::new()
        .name("tollgate-lookup".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map_err(|e| e.to_string())
                .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()));
            // The caller may have given up (its timeout): nothing waits then.
            let _ = tx.send(found);
        })
        .map_err(|e| format!("no thread for the lookup: {e}"))?;
    rx.recv_async()
        .await
        .map_err(|_| "the lookup ended without an answer".to_string())?
}

/// One answer read whole.
pub(crate) struct Fetched {
    pub status: u16,
    /// The head as it came (status line and header lines).
    pub head: BytesMut,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub reusable: bool,
    /// The target that answered, where the caller picked one (see `gateway::call`).
    pub from: Option<std::net::SocketAddr>,
}

impl Fetched {
    /// The first value of header `name` (lower case).
    pub(crate) fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.head[..]
            .split(|&b| b == b'\n')
            .skip(1)
            .filter_map(|l| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                let at = l.iter().position(|&b| b == b':')?;
                Some((&l[..at], l[at + 1..].trim_ascii()))
            })
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Reads one answer: its status, head, body (at most `max` bytes) and whether the connection
/// may carry another request.
pub(crate) async fn read_answer(s: &mut UpStream, max: usize) -> Result<Fetched, String> {
    let mut buf = BytesMut::with_capacity(8192);
    let (head_len, parts) = loop {
        match h1::parse_response(&buf, 16 << 10, false) {
            Ok(Some((n, parts))) if parts.status >= 200 => break (n, parts),
            // An interim answer (100, 103): drop it and read on.
            Ok(Some((n, _))) => {
                let _ = buf.split_to(n);
                continue;
            }
            Ok(None) => {}
            Err(_) => return Err("malformed answer".into()),
        }
        if read_more(s, &mut buf, max).await? == 0 {
            return Err("closed before answering".into());
        }
    };
    let head = buf.split_to(head_len);
    let mut reusable = parts.keep_alive;
    let body = match parts.framing {
        Framing::None => Vec::new(),
        Framing::Length(n) => {
            if n > max as u64 {
                return Err(format!("answer over {max} bytes"));
            }
            while (buf.len() as u64) < n {
                if read_more(s, &mut buf, max).await? == 0 {
                    return Err("closed mid-body".into());
                }
            }
            reusable &= buf.len() as u64 == n;
            buf[..n as usize].to_vec()
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(max as u64);
            let mut out = Vec::new();
            loop {
                let used = dec
                    .feed(&buf, |r| out.extend_from_slice(&buf[r]))
                    .map_err(|e| format!("bad chunked body ({e:?})"))?;
                let _ = buf.split_to(used);
                if dec.is_done() {
                    reusable &= buf.is_empty();
                    break out;
                }
                if read_more(s, &mut buf, max).await? == 0 {
                    return Err("closed mid-body".into());
                }
            }
        }
        Framing::UntilClose => {
            reusable = false;
            while read_more(s, &mut buf, max).await? > 0 {}
            buf.to_vec()
        }
    };
    Ok(Fetched {
        status: parts.status,
        head,
        body,
        reusable,
        from: None,
    })
}

async fn read_more(s: &mut UpStream, buf: &mut BytesMut, max: usize) -> Result<usize, String> {
    if buf.len() > max + (16 << 10) {
        return Err(format!("answer over {max} bytes"));
    }
    buf.reserve(8192);
    s.read_into(buf).await.map_err(|e| format!("read: {e}"))
}

/// The system's roots, ALPN http/1.1: built once.
fn client_config() -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<std::sync::Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| crate::tls::client::client_config(None, None, false))
        .clone()
}
