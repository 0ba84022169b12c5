//! The control plane's Redis client: RESP2 replies of any shape (the shards' lease calls in
//! `throttle::redis` only need integers), over one plain connection per use, each call bounded
//! by a timeout the caller gives.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;

use crate::throttle::redis::command;
use crate::throttle::redis_io::RedisStream;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resp {
    Status(String),
    Int(i64),
    /// `None`: the nil bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None`: the nil array (`XREAD` that timed out).
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub(crate) fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(Some(b)) => Some(b),
            Resp::Status(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    pub(crate) fn text(&self) -> Option<&str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub(crate) fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(Some(a)) => a,
            _ => &[],
        }
    }
}

/// Nesting deeper than this is refused (a reply is never that deep; a broken peer could be).
const MAX_DEPTH: usize = 8;

/// Parses one reply from the front of `buf`: the reply and its length, `Ok(None)` when more
/// bytes are needed, `Err` for a Redis error reply or bytes that are not RESP.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Resp, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err("Redis reply nested too deep".into());
    }
    let Some(end) = buf[at..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + at)
    else {
        return Ok(None);
    };
    if end == at {
        return Err("not a RESP reply".into());
    }
    let line = &buf[at + 1..end];
    let next = end + 2;
    let int = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "bad integer in a Redis reply".to_string())
    };
    match buf[at] {
        b'+' => Ok(Some((
            Resp::Status(String::from_utf8_lossy(line).into_owned()),
            next,
        ))),
        b'-' => Err(format!("Redis: {}", String::from_utf8_lossy(line))),
        b':' => Ok(Some((Resp::Int(int()?), next))),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), next)));
            }
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_REPLY)
                .ok_or("a Redis bulk string too large")?;
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            Ok(Some((
                Resp::Bulk(Some(buf[next..next + n].to_vec())),
                next + n + 2,
            )))
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), next)));
            }
            let mut items = Vec::with_capacity((n as usize).min(1024));
            let mut at = next;
            for _ in 0..n {
                match parse_at(buf, at, depth + 1)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        _ => Err("not a RESP reply".into()),
    }
}

/// Largest reply read (a full sync reads every run-time object at once).
const MAX_REPLY: usize = 256 << 20;

/// One connection to Redis.
pub(crate) struct RedisConn {
    stream: RedisStream,
    buf: BytesMut,
}

impl RedisConn {
    /// Connects to `addr` (over TLS with `tls`: `cluster.redis = "rediss://..."`) within
    /// `timeout`, the handshake included.
    pub(crate) async fn connect(
        addr: SocketAddr,
        tls: Option<&crate::tls::client::UpTls>,
        timeout: Duration,
    ) -> Result<RedisConn, String> {
        let stream = crate::driver::time::timeout(timeout, RedisStream::connect(addr, tls))
            .await
            .map_err(|_| format!("connecting to Redis at {addr} timed out"))??;
        Ok(RedisConn {
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Reads until one whole reply is in the buffer, and takes it.
    async fn reply(&mut self) -> Result<Resp, String> {
        loop {
            if let Some((reply, used)) = parse(&self.buf)? {
                let _ = self.buf.split_to(used);
                return Ok(reply);
            }
            if self.buf.len() > MAX_REPLY {
                return Err("Redis reply too large".to_string());
            }
            let n = self
                .stream
                .read_into(&mut self.buf)
                .await
                .map_err(|e| format!("Redis read: {e}"))?;
            if n == 0 {
                return Err("Redis closed the connection".to_string());
            }
        }
    }

    /// The next reply without sending anything (a subscription's messages): `Ok(None)` when
    /// none came within `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Result<Option<Resp>, String> {
        match crate::driver::time::timeout(wait, self.reply()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Sends a command and reads its reply, within `timeout`. After an `Err` the connection
    /// is in an unknown state: drop it.
    pub(crate) async fn call(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Resp, String> {
        self.send(command(args), timeout).await
    }

    /// Authenticates a new connection with `auth` (an encoded `AUTH` command), where Redis
    /// asks for a password (`cluster.password_env`).
    pub(crate) async fn auth(
        &mut self,
        auth: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(), String> {
        let Some(cmd) = auth else {
            return Ok(());
        };
        self.send(cmd.to_vec(), timeout)
            .await
            .map(|_| ())
            .map_err(|e| format!("authenticating to Redis: {e}"))
    }

    async fn send(&mut self, cmd: Vec<u8>, timeout: Duration) -> Result<Resp, String> {
        let work = async {
            self.stream
                .write_all(cmd)
                .await
                .map_err(|e| format!("Redis write: {e}"))?;
            self.reply().await
        };
        crate::driver::time::timeout(timeout, work)
            .await
            .map_err(|_| "Redis did not answer in time".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_every_shape_parse() {
        let xread =
            b"*1\r\n*2\r\n$3\r\nchg\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nc\r\n$2\r\n{}\r\n";
        let (r, n) = parse(xread).unwrap().unwrap();
        assert_eq!(n, xread.len());
        let entry = &r.items()[0].items()[1].items()[0];
        assert_eq!(entry.items()[0].text(), Some("1-0"));
        assert_eq!(entry.items()[1].items()[1].text(), Some("{}"));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Some((Resp::Array(None), 5)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Resp::Bulk(None), 5)));
        assert_eq!(parse(b":42\r\n").unwrap(), Some((Resp::Int(42), 5)));
        assert!(parse(b"-ERR no\r\n").unwrap_err().contains("ERR no"));
        // Incomplete: more bytes needed, at every cut.
        for cut in 0..xread.len() {
            assert_eq!(parse(&xread[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(b"?x\r\n").is_err());
        // Bytes a broken peer could send: errors, never a panic.
        assert!(parse(b"\r\n").is_err());
        assert!(parse(b"*1\r\n\r\n").is_err());
        assert!(parse(b"$9223372036854775807\r\n").is_err());
        assert!(parse(b"*99999999999\r\n").unwrap().is_none());
    }
}
