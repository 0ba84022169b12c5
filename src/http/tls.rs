//! A TLS connection over a monoio `TcpStream`, driven by rustls directly (so the pipeline can
//! read the SNI name and the client certificate from the session): the server side for
//! listeners ([`TlsConn`]), the client side for upstreams ([`TlsClient`]).
//!
//! Ciphertext moves through two owned scratch buffers (monoio reads and writes take their
//! buffers by value); plaintext is copied out of rustls once, into the connection's buffer.
//! A read future dropped part way (a timeout) loses what it had read, so the caller closes
//! the connection then — which is what every caller does on a timeout.

use std::io::{self, BufRead, Write};
use std::ops::DerefMut;
use std::sync::Arc;

use crate::driver::net::TcpStream;
use bytes::BytesMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Ciphertext read per socket read: one maximal TLS record and its header.
const RECORD: usize = 16 * 1024 + 256;

pub(crate) struct TlsStream<C> {
    pub io: TcpStream,
    pub tls: C,
    /// Ciphertext read from the socket and not yet given to rustls: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
    /// TLS 1.3, server side: what rustls queues after the handshake (session tickets, key
    /// update answers) is not awaited by the client, so it waits for the connection's next
    /// write and goes out in the same send (one segment, one wakeup of the client less).
    hold: bool,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A listener's side of a TLS connection.
pub(crate) type TlsConn = TlsStream<rustls::ServerConnection>;
/// The gateway's side of a TLS connection to an upstream.
pub(crate) type TlsClient = TlsStream<rustls::ClientConnection>;

impl TlsConn {
    /// Runs the server side of the handshake; `read` is ciphertext already read from the
    /// socket (after a PROXY protocol header), usually none.
    pub(crate) async fn accept_after(
        io: TcpStream,
        cfg: Arc<rustls::ServerConfig>,
        read: Vec<u8>,
    ) -> io::Result<TlsConn> {
        let tls = rustls::ServerConnection::new(cfg).map_err(tls_err)?;
        let mut c = TlsStream::handshake_after(io, tls, read).await?;
        // In TLS 1.2 the server's last flight (its Finished) is what the client waits for.
        c.hold = c.tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
        if !c.hold {
            c.flush().await?;
        }
        Ok(c)
    }
}

impl TlsClient {
    /// Runs the client side of the handshake: SNI `name`, the server's chain verified against
    /// the config's roots and `name`.
    pub(crate) async fn connect(
        io: TcpStream,
        cfg: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<TlsClient> {
        let tls = rustls::ClientConnection::new(cfg, name).map_err(tls_err)?;
        let mut c = TlsStream::handshake(io, tls).await?;
        c.flush().await?;
        Ok(c)
    }
}

impl<C, S> TlsStream<C>
where
    C: DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    /// Whether anything came that nobody read: ciphertext kept, or bytes (or the end) on the
    /// socket.
    pub(crate) fn has_unread(&self) -> bool {
        self.rpos < self.rbuf.len() || self.io.has_unread()
    }

    /// The connection as a poll-style stream (for HTTP/2 and relays, which drive the session
    /// themselves): ciphertext read but not yet given to rustls goes along; `prefix` is
    /// plaintext to hand over first.
    pub(crate) fn into_poll_io(self, prefix: bytes::Bytes) -> crate::http::pollio::PollIo
    where
        C: Into<rustls::Connection>,
    {
        let leftover = self.rbuf[self.rpos..].to_vec();
        crate::http::pollio::PollIo::tls(self.io, self.tls.into(), leftover, prefix)
    }

    async fn handshake(io: TcpStream, tls: C) -> io::Result<TlsStream<C>> {
        Self::handshake_after(io, tls, Vec::with_capacity(RECORD)).await
    }

    async fn handshake_after(io: TcpStream, tls: C, read: Vec<u8>) -> io::Result<TlsStream<C>> {
        let mut rbuf = read;
        rbuf.reserve(RECORD.saturating_sub(rbuf.len()));
        let mut c = TlsStream {
            io,
            tls,
            rbuf,
            rpos: 0,
            wbuf: Vec::with_capacity(RECORD),
            hold: false,
        };
        while c.tls.is_handshaking() {
            c.flush().await?;
            if !c.tls.is_handshaking() {
                break;
            }
            if c.rpos == c.rbuf.len() && c.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Err(e) = c.feed() {
                // Send the alert that says why, then give up.
                let _ = c.flush().await;
                return Err(e);
            }
        }
        // What is queued now (the client's Finished, a server's tickets or TLS 1.2 Finished)
        // is the caller's to flush.
        Ok(c)
    }

    /// Whether a wait for readability without buffers is possible: on Tollgate's own runtime,
    /// where a read cut short loses no bytes (they stay in the receive's queue).
    pub(crate) fn can_wait_readable(&self) -> bool {
        self.io.own().is_some()
    }

    /// Waits until there is something to read: plaintext or ciphertext already here, or bytes
    /// (or the end) on the socket; holds no buffer of its own meanwhile.
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        if self.rpos < self.rbuf.len() {
            return Ok(());
        }
        match self.tls.reader().fill_buf() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.io.readable().await,
            _ => Ok(()),
        }
    }

    /// Frees the scratch buffers while the connection idles (they come back at the next
    /// read and write); ciphertext not yet given to rustls is kept.
    pub(crate) fn release_buffers(&mut self) {
        if self.rpos >= self.rbuf.len() {
            self.rbuf = Vec::new();
            self.rpos = 0;
        }
        self.wbuf = Vec::new();
    }

    /// Reads ciphertext from the socket into the scratch buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.rbuf);
        buf.clear();
        // Released while idle, or taken by a read cut short.
        if buf.capacity() < RECORD {
            buf.reserve(RECORD);
        }
        let (res, buf) = self.io.read(buf).await;
        self.rbuf = buf;
        self.rpos = 0;
        res
    }

    /// Gives buffered ciphertext to rustls and processes it, stopping once there is
    /// plaintext to hand out (rustls refuses ciphertext while it holds over 16 KiB of
    /// plaintext; the rest is fed after the reader took it).
    fn feed(&mut self) -> io::Result<()> {
        while self.rpos < self.rbuf.len() {
            let mut rd = &self.rbuf[self.rpos..];
            let n = self.tls.read_tls(&mut rd)?;
            self.rpos += n;
            let state = self.tls.process_new_packets().map_err(tls_err)?;
            if n == 0 {
                self.rpos = self.rbuf.len();
                break;
            }
            if state.plaintext_bytes_to_read() > 0 {
                break;
            }
        }
        Ok(())
    }

    /// Writes whatever rustls has queued (records, alerts, tickets).
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            let mut buf = std::mem::take(&mut self.wbuf);
            buf.clear();
            self.tls.write_tls(&mut buf)?;
            let (res, buf) = self.io.write_all(buf).await;
            self.wbuf = buf;
            res?;
        }
        Ok(())
    }

    /// Appends decrypted bytes to `dst`; `Ok(0)` when the peer closed.
    pub(crate) async fn read_into(&mut self, dst: &mut BytesMut) -> io::Result<usize> {
        loop {
            {
                let mut r = self.tls.reader();
                match r.fill_buf() {
                    Ok([]) => return Ok(0),
                    Ok(b) => {
                        let n = b.len();
                        dst.extend_from_slice(b);
                        r.consume(n);
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The peer closed the TCP connection without close_notify: treat as a
                    // close (what it means for a request in progress is the caller's call).
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
            }
            if self.rpos == self.rbuf.len() && self.fill().await? == 0 {
                // Tell rustls the transport ended, so the reader reports it.
                let _ = self.tls.read_tls(&mut &[][..]);
                let _ = self.tls.process_new_packets();
                return Ok(0);
            }
            let fed = self.feed();
            // Key updates are answered as they come, alerts before failing (a TLS 1.3
            // server's key update answer waits for its next write, see `hold`).
            if !self.hold || fed.is_err() {
                self.flush().await?;
            }
            fed?;
        }
    }

    /// Encrypts and writes all of `data`.
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.write_all_parts(&[data]).await
    }

    /// Encrypts and writes all of each part, in order, in as few sends as rustls's buffer
    /// allows (a head and a small body: one).
    pub(crate) async fn write_all_parts(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        for part in parts {
            let mut data = *part;
            let mut flushed = false;
            while !data.is_empty() {
                let n = self.tls.writer().write(data)?;
                if n == 0 && flushed {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                data = &data[n..];
                flushed = false;
                if !data.is_empty() {
                    // rustls's buffer is full: send it, then go on.
                    self.flush().await?;
                    flushed = true;
                }
            }
        }
        self.flush().await
    }

    /// Sends close_notify, then shuts the TCP write side.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        let _ = self.flush().await;
        self.io.shutdown().await
    }
}
