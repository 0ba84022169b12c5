//! A connection to the fleet's Redis, for the shards' leases and the control plane alike:
//! plain TCP, or TLS (`cluster.redis = "rediss://HOST:PORT"`, verified as `cluster.tls` says).

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;

use crate::driver::net::TcpStream;
use crate::http::tls::TlsClient;
use crate::tls::client::UpTls;

pub(crate) enum RedisStream {
    Plain(TcpStream),
    Tls(Box<TlsClient>),
}

impl RedisStream {
    /// Connects (and, with `tls`, runs the handshake: Redis's certificate verified against
    /// the roots and the name `tls` holds). Errors start "connecting to Redis": nothing was
    /// sent (the fleet's admin writes tell that from a call that may have run).
    pub(crate) async fn connect(addr: SocketAddr, tls: Option<&UpTls>) -> Result<Self, String> {
        let s = TcpStream::connect_addr(addr)
            .await
            .map_err(|e| format!("connecting to Redis at {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        let Some(t) = tls else {
            return Ok(RedisStream::Plain(s));
        };
        TlsClient::connect(s, t.config.clone(), t.name.clone())
            .await
            .map(|c| RedisStream::Tls(Box::new(c)))
            .map_err(|e| {
                format!(
                    "connecting to Redis at {addr}: TLS handshake (verifying {:?}): {e}",
                    t.name_text()
                )
            })
    }

    /// Appends what Redis sent to `buf`; `Ok(0)` at end of stream.
    pub(crate) async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            RedisStream::Plain(s) => crate::http::conn::read_into(s, buf).await,
            RedisStream::Tls(t) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(crate::http::conn::READ_CHUNK);
                }
                t.read_into(buf).await
            }
        }
    }

    pub(crate) async fn write_all(&mut self, cmd: Vec<u8>) -> io::Result<()> {
        match self {
            RedisStream::Plain(s) => crate::http::conn::write_all(s, cmd).await,
            RedisStream::Tls(t) => t.write_all(&cmd).await,
        }
    }

    /// Whether anything came while the connection idled (bytes, or its end).
    pub(crate) fn has_unread(&self) -> bool {
        match self {
            RedisStream::Plain(s) => s.has_unread(),
            RedisStream::Tls(t) => t.has_unread(),
        }
    }
}
