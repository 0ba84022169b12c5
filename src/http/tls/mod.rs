//! A TLS connection over a socket, driven by rustls directly (so the pipeline can read the
//! SNI name and the client certificate from the session): the server side for listeners
//! ([`TlsConn`]), the client side for upstreams ([`TlsClient`]).
//!
//! The session ([`session::Session`], rustls's unbuffered API) owns the ciphertext buffers:
//! reads append to its incoming buffer (on Tollgate's own runtime, straight from the ring
//! buffer the bytes arrived in) and records are decrypted there, in place; plaintext is
//! copied once more, into the connection's buffer. Writes encrypt into its outgoing buffer,
//! which is sent as it is. A read future dropped part way (a timeout) on monoio's drivers
//! loses what it had read, so the caller closes the connection then — which is what every
//! caller does on a timeout.

pub(crate) mod session;

use std::io;
use std::sync::Arc;

use crate::driver::net::TcpStream;
use bytes::BytesMut;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use session::{Session, OUT_BATCH, RECORD};

pub(crate) struct TlsStream {
    pub io: TcpStream,
    pub tls: Session,
    /// TLS 1.3, server side: what rustls queues after the handshake (session tickets, key
    /// update answers) is not awaited by the client, so it waits for the connection's next
    /// write and goes out in the same send (one segment, one wakeup of the client less).
    hold: bool,
}

/// A listener's side of a TLS connection.
pub(crate) type TlsConn = TlsStream;
/// The gateway's side of a TLS connection to an upstream.
pub(crate) type TlsClient = TlsStream;

impl TlsStream {
    /// Runs the server side of the handshake; `read` is ciphertext already read from the
    /// socket (after a PROXY protocol header), usually none.
    pub(crate) async fn accept_after(
        io: TcpStream,
        cfg: Arc<rustls::ServerConfig>,
        read: Vec<u8>,
    ) -> io::Result<TlsConn> {
        let mut tls = Session::server(cfg)?;
        if !read.is_empty() {
            tls.received(&read);
        }
        let mut c = TlsStream::handshake(io, tls).await?;
        // In TLS 1.2 the server's last flight (its Finished) is what the client waits for.
        c.hold = c.tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        if !c.hold {
            c.flush().await?;
        }
        Ok(c)
    }

    /// Runs the client side of the handshake: SNI `name`, the server's chain verified against
    /// the config's roots and `name`.
    pub(crate) async fn connect(
        io: TcpStream,
        cfg: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<TlsClient> {
        let tls = Session::client(cfg, name)?;
        let mut c = TlsStream::handshake(io, tls).await?;
        c.flush().await?;
        Ok(c)
    }

    /// Whether anything came that nobody read: ciphertext or plaintext kept, or bytes (or
    /// the end) on the socket.
    pub(crate) fn has_unread(&self) -> bool {
        !self.tls.stashed().is_empty() || self.tls.has_unprocessed() || self.io.has_unread()
    }

    /// The connection as a poll-style stream (for HTTP/2 and relays, which drive the session
    /// themselves); `prefix` is plaintext to hand over first.
    pub(crate) fn into_poll_io(self, prefix: bytes::Bytes) -> crate::http::pollio::PollIo {
        crate::http::pollio::PollIo::tls(self.io, Box::new(self.tls), prefix)
    }

    async fn handshake(io: TcpStream, tls: Session) -> io::Result<TlsStream> {
        let mut c = TlsStream {
            io,
            tls,
            hold: false,
        };
        loop {
            if let Err(e) = c.tls.read(&mut |_| 0) {
                // Send the alert that says why, then give up.
                let _ = c.flush().await;
                return Err(e);
            }
            if !c.tls.is_handshaking() {
                break;
            }
            c.flush().await?;
            if c.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        // What is queued now (the client's Finished, a server's tickets or TLS 1.2 Finished)
        // is the caller's to flush; application data that came with the handshake's last
        // flight waits in the session for the first read.
        Ok(c)
    }

    /// Whether a wait for readability without buffers is possible: on Tollgate's own runtime,
    /// where a read cut short loses no bytes (they stay in the receive's queue).
    pub(crate) fn can_wait_readable(&self) -> bool {
        self.io.own().is_some()
    }

    /// Waits until there is something to read: plaintext or a record already here, or bytes
    /// (or the end) on the socket; holds no buffer of its own meanwhile.
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        if !self.tls.stashed().is_empty() || self.tls.has_unprocessed() {
            return Ok(());
        }
        self.io.readable().await
    }

    /// Once [`TlsStream::readable`] said so, while an answer is awaited: whether the client
    /// left — the end of the stream or a reset (with nothing before it), close_notify, or
    /// records the session refuses — rather than sent a request (pipelined: its records are
    /// decrypted now and the plaintext kept for the next read). One read at most, which does
    /// not wait.
    pub(crate) async fn left(&mut self) -> bool {
        if !self.tls.stashed().is_empty() {
            return false;
        }
        let read = if self.tls.has_unprocessed() {
            self.tls.read(&mut |_| 0)
        } else if self.io.peer_closed() {
            return true;
        } else if let Some(s) = self.io.own() {
            s.want_at_least(RECORD);
            match s.recv().await {
                Ok(Some(mut b)) => self.tls.read_from(b.bytes_mut(), &mut |_| 0),
                Ok(None) | Err(_) => return true,
            }
        } else {
            match self.fill().await {
                Ok(0) | Err(_) => return true,
                Ok(_) => self.tls.read(&mut |_| 0),
            }
        };
        read.is_err() || (self.tls.peer_closed() && self.tls.stashed().is_empty())
    }

    /// Frees the session's buffers while the connection idles (they come back at the next
    /// read and write); bytes not yet read or sent are kept.
    pub(crate) fn release_buffers(&mut self) {
        self.tls.release_buffers();
    }

    /// Reads ciphertext from the socket into the session; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if let Some(s) = self.io.own() {
            // The ring buffer's bytes go straight into the session's buffer.
            s.want_at_least(RECORD);
            return match s.recv().await? {
                Some(b) => {
                    self.tls.received(&b);
                    Ok(b.len())
                }
                None => Ok(0),
            };
        }
        if let Some(inc) = self.tls.lend_incoming() {
            let cap = inc.capacity();
            let (res, inc) = self.io.read(inc.slice_mut(0..cap)).await;
            self.tls.put_incoming(inc.into_inner());
            return res;
        }
        // The rest of a record is there: read beside it (a read cut short then loses only
        // what it read, as on the path above).
        let (res, buf) = self.io.read(Vec::with_capacity(RECORD)).await;
        if let Ok(n) = res {
            self.tls.received(&buf[..n]);
        }
        res
    }

    /// Writes whatever the session has queued (records, alerts, tickets).
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            let (buf, n) = self.tls.take_outgoing();
            let (res, buf) = self.io.write_all(buf.slice(..n)).await;
            self.tls.put_outgoing(buf.into_inner());
            res?;
        }
        Ok(())
    }

    /// Appends decrypted bytes to `dst`; `Ok(0)` when the peer closed.
    pub(crate) async fn read_into(&mut self, dst: &mut BytesMut) -> io::Result<usize> {
        loop {
            let stashed = self.tls.stashed();
            if !stashed.is_empty() {
                let n = stashed.len();
                dst.extend_from_slice(stashed);
                self.tls.consume_stash(n);
                return Ok(n);
            }
            let before = dst.len();
            let mut sink = |b: &[u8]| {
                dst.extend_from_slice(b);
                b.len()
            };
            let read = if self.tls.has_unprocessed() {
                self.tls.read(&mut sink)
            } else if self.tls.peer_closed() {
                return Ok(0);
            } else if let Some(s) = self.io.own() {
                // Tollgate's own runtime: the records are decrypted in the ring buffer they
                // arrived in (part of one left at its end is copied into the session).
                s.want_at_least(RECORD);
                match s.recv().await? {
                    Some(mut b) => self.tls.read_from(b.bytes_mut(), &mut sink),
                    // The peer closed the TCP connection (without close_notify, or after it):
                    // a close (what it means for a request in progress is the caller's call).
                    None => return Ok(0),
                }
            } else {
                if self.fill().await? == 0 {
                    return Ok(0);
                }
                continue;
            };
            // Key updates are answered as they come, alerts before failing (a TLS 1.3
            // server's key update answer waits for its next write, see `hold`).
            if self.tls.wants_write() && (!self.hold || read.is_err()) {
                let flushed = self.flush().await;
                read?;
                flushed?;
            } else {
                read?;
            }
            let n = dst.len() - before;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    /// Encrypts and writes all of `data`.
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all_parts(&[data]).await
    }

    /// Encrypts and writes all of each part, in order, in as few sends as the outgoing
    /// buffer's batch allows (a head and a small body: one).
    pub(crate) async fn write_all_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let mut batch = 0;
        for part in parts {
            for chunk in part.chunks(OUT_BATCH) {
                if let Err(e) = self.tls.write(chunk) {
                    // The alert that says why, if there is one.
                    let _ = self.flush().await;
                    return Err(e);
                }
                batch += chunk.len();
                if batch >= OUT_BATCH {
                    self.flush().await?;
                    batch = 0;
                }
            }
        }
        self.flush().await
    }

    /// Sends close_notify, then shuts the TCP write side.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        // A failed session sends the alert it has instead.
        let _ = self.tls.close_notify();
        let _ = self.flush().await;
        self.io.shutdown().await
    }
}
