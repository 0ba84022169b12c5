//! After `101 Switching Protocols`: bytes relayed both ways until either side closes (where
//! WebSocket support grows).

use super::*;

/// Relays bytes both ways after a `101 Switching Protocols` until either side closes. Plain
/// to plain uses monoio's copy on split sockets; when either side is TLS, both become
/// poll-style streams (`PollIo`) and tokio's `copy_bidirectional` moves the bytes.
pub(crate) async fn relay(conn: Conn, up: UpStream, from_upstream: Bytes) {
    use crate::http::conn::Stream;
    use crate::http::pollio::PollIo;
    let Conn { stream, buf, .. } = conn;
    match (stream, up) {
        (Stream::Plain(s), UpStream::Plain(u)) => relay_plain(s, u, buf, from_upstream).await,
        (stream, up) => {
            let mut client = match stream {
                Stream::Plain(s) => PollIo::plain(s, buf.freeze()),
                Stream::Tls(t) => t.into_poll_io(buf.freeze()),
                // HTTP/2 streams never carry an upgrade.
                Stream::H2(_) => return,
            };
            let mut upstream = match up {
                UpStream::Plain(u) => PollIo::plain(u, from_upstream),
                UpStream::Tls(t) => t.into_poll_io(from_upstream),
                // Upgrades are refused before they reach an HTTP/2 upstream.
                UpStream::H2(_) => return,
            };
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    }
}

pub(super) async fn relay_plain(
    mut stream: monoio::net::TcpStream,
    mut up: monoio::net::TcpStream,
    buf: BytesMut,
    from_upstream: Bytes,
) {
    if !buf.is_empty() && write_all(&mut up, buf.freeze()).await.is_err() {
        return;
    }
    if !from_upstream.is_empty() && write_all(&mut stream, from_upstream).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = stream.into_split();
    let (mut ur, mut uw) = up.into_split();
    let a = async {
        let _ = monoio::io::copy(&mut cr, &mut uw).await;
        let _ = uw.shutdown().await;
    };
    let b = async {
        let _ = monoio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    monoio::join!(a, b);
}
