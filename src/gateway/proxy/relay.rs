//! After `101 Switching Protocols`: bytes relayed both ways until either side closes or no
//! byte has moved either way for `limits.upgrade_idle_timeout` (where WebSocket support
//! grows).

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use super::*;

/// Relays bytes both ways after a `101 Switching Protocols` until either side closes, or
/// until no byte has moved for `idle` (then returns `true`). Plain to plain copies on split
/// sockets; when either side is TLS, both become poll-style streams (`PollIo`) and tokio's
/// `copy_bidirectional` moves the bytes.
pub(crate) async fn relay(conn: Conn, up: UpStream, from_upstream: Bytes, idle: Duration) -> bool {
    use crate::http::conn::Stream;
    use crate::http::pollio::PollIo;
    let last = Cell::new(Instant::now());
    let Conn { stream, buf, .. } = conn;
    let work = async {
        match (stream, up) {
            (Stream::Plain(s), UpStream::Plain(u)) => {
                relay_plain(s, u, buf, from_upstream, &last).await
            }
            (stream, up) => {
                let client = match stream {
                    Stream::Plain(s) => PollIo::plain(s, buf.freeze()),
                    Stream::Tls(t) => t.into_poll_io(buf.freeze()),
                    // HTTP/2 streams never carry an upgrade.
                    Stream::H2(_) => return,
                };
                let upstream = match up {
                    UpStream::Plain(u) => PollIo::plain(u, from_upstream),
                    UpStream::Tls(t) => t.into_poll_io(from_upstream),
                    // Upgrades are refused before they reach an HTTP/2 upstream.
                    UpStream::H2(_) => return,
                };
                let (mut client, mut upstream) = (
                    Active {
                        io: client,
                        last: &last,
                    },
                    Active {
                        io: upstream,
                        last: &last,
                    },
                );
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    // Either side may end a tunnel abruptly; kept at debug, as nginx does.
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
        }
    };
    let watch = async {
        loop {
            let due = last.get() + idle;
            if Instant::now() >= due {
                return;
            }
            crate::driver::time::sleep_until(due).await;
        }
    };
    monoio::select! {
        _ = work => false,
        _ = watch => true,
    }
}

/// A poll-style stream that notes when bytes arrive (for the idle timeout).
struct Active<'a, T> {
    io: T,
    last: &'a Cell<Instant>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Active<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Active<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

pub(super) async fn relay_plain(
    mut stream: crate::driver::net::TcpStream,
    mut up: crate::driver::net::TcpStream,
    buf: BytesMut,
    from_upstream: Bytes,
    last: &Cell<Instant>,
) {
    if !buf.is_empty() && write_all(&mut up, buf.freeze()).await.is_err() {
        return;
    }
    if !from_upstream.is_empty() && write_all(&mut stream, from_upstream).await.is_err() {
        return;
    }
    // The client's receives take what a relay read has room for, whatever the keep-alive
    // loop expected before the switch.
    if let Some(own) = stream.own() {
        own.want(RELAY_READ);
    }
    let (mut cr, mut cw) = stream.into_split();
    let (mut ur, mut uw) = up.into_split();
    let a = async {
        pump(&mut cr, &mut uw, last).await;
        let _ = uw.shutdown().await;
    };
    let b = async {
        pump(&mut ur, &mut cw, last).await;
        let _ = cw.shutdown().await;
    };
    monoio::join!(a, b);
}

/// Bytes a relay reads at a time, either way.
const RELAY_READ: usize = 16 << 10;

/// Copies until end of stream or an error, noting when bytes move.
async fn pump(r: &mut impl AsyncReadRent, w: &mut impl AsyncWriteRentExt, last: &Cell<Instant>) {
    let mut buf = Vec::with_capacity(RELAY_READ);
    loop {
        let (res, b) = r.read(buf).await;
        buf = b;
        match res {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        last.set(Instant::now());
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return;
        }
        buf.clear();
    }
}
