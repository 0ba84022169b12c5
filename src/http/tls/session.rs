//! One TLS session, either side, driven through rustls's unbuffered API over buffers it owns;
//! no I/O here (the stream in `super` and `http::pollio` move the bytes).
//!
//! Ciphertext read from the socket is appended to [`Session::received`]'s buffer and
//! decrypted there, in place; each record's plaintext is handed to the reader's sink (the
//! connection's own buffer) as it is processed, and what the sink cannot take waits in a
//! stash for the next read. Records to send (handshake flights, alerts, tickets, key update
//! answers, application data) are encrypted straight into one outgoing buffer, which the
//! stream sends whole. Against rustls's buffered API that leaves out a copy of every
//! received record into rustls's own buffer (which grew 4 KiB per read, reallocating and
//! zero-filling, and shrank again when empty) and a copy of every sent record out of
//! rustls's queue.
//!
//! The incoming buffer is only ever appended to (reads) or cut from the front by what rustls
//! says it consumed, so what rustls remembers about partly received handshake messages
//! always refers to the bytes in it. It holds at most one partial record past what was
//! processed, more only while a handshake message spans records (up to
//! [`MAX_INCOMING`], then the session fails).

use std::io;
use std::sync::Arc;

use rustls::client::UnbufferedClientConnection;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};

/// Room asked for the incoming buffer: one maximal record and its header (TLS 1.2's, whose
/// ciphertext may run 2 KiB over the plaintext's 16 KiB).
pub(crate) const RECORD: usize = 16 * 1024 + 2048 + 5;
/// Most ciphertext held while a message is incomplete: a handshake message rustls accepts
/// (64 KiB, a client's certificate chain) spread over records, and one record more.
const MAX_INCOMING: usize = 0xffff + RECORD + 512;
/// Plaintext encrypted per call into the outgoing buffer before the caller sends it (what
/// rustls's buffered API queued at most, 64 KiB).
pub(crate) const OUT_BATCH: usize = 64 * 1024;

fn ended() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "TLS session ended by an error")
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

enum Side {
    Server(UnbufferedServerConnection),
    Client(UnbufferedClientConnection),
}

/// What a pass over the received records is after.
enum Want<'a> {
    /// Plaintext; stop when more ciphertext is needed.
    Read,
    /// Encrypt these bytes once the session can send application data.
    Write(&'a [u8]),
    /// Encrypt a close_notify alert.
    Close,
}

/// What one state of the session did.
enum Step {
    /// Something was processed or encoded: ask again.
    Again,
    /// More ciphertext is needed (or, when reading, the session waits for it).
    Blocked,
    /// The write (or close_notify) is in the outgoing buffer.
    Wrote,
    /// Both sides sent close_notify.
    Closed,
}

/// A TLS session's state and its buffers.
pub(crate) struct Session {
    conn: Side,
    /// Ciphertext received and not yet consumed by rustls.
    inc: Vec<u8>,
    /// `inc` holds no complete record that was not processed: reading it again is useless
    /// until more arrives.
    blocked: bool,
    /// Records to send: `out[..olen]`; `out` is zero-filled up to its length once, so it is
    /// not filled again for every record.
    out: Vec<u8>,
    olen: usize,
    /// Plaintext decrypted that no reader took yet: `plain[ppos..]`.
    plain: Vec<u8>,
    ppos: usize,
    /// The peer sent close_notify: after what was read, the stream ends.
    peer_closed: bool,
    /// An error ended the session: nothing more is processed.
    dead: bool,
}

/// The negotiated parameters: protocol version, ALPN, the peer's certificates, whether the
/// handshake resumed a session, whether it is still running.
impl std::ops::Deref for Session {
    type Target = rustls::CommonState;

    fn deref(&self) -> &rustls::CommonState {
        match &self.conn {
            Side::Server(c) => c,
            Side::Client(c) => c,
        }
    }
}

impl Session {
    /// The server side of a new session.
    pub(crate) fn server(cfg: Arc<rustls::ServerConfig>) -> io::Result<Session> {
        let c = UnbufferedServerConnection::new(cfg).map_err(tls_err)?;
        Ok(Session::new(Side::Server(c)))
    }

    /// The client side of a new session: SNI `name`, the server's chain verified against the
    /// config's roots and `name`.
    pub(crate) fn client(
        cfg: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<Session> {
        let c = UnbufferedClientConnection::new(cfg, name).map_err(tls_err)?;
        Ok(Session::new(Side::Client(c)))
    }

    fn new(conn: Side) -> Session {
        Session {
            conn,
            inc: Vec::new(),
            blocked: false,
            out: Vec::new(),
            olen: 0,
            plain: Vec::new(),
            ppos: 0,
            peer_closed: false,
            dead: false,
        }
    }

    /// Lends the incoming buffer to a read that owns it while it runs, when it holds nothing
    /// (rustls may keep a partly received handshake message in place there, and would index
    /// bytes that a read cut short had taken away); it comes back through
    /// [`Session::put_incoming`]. `None` while it holds bytes: the read goes to a buffer of
    /// its own, appended with [`Session::received`].
    pub(crate) fn lend_incoming(&mut self) -> Option<Vec<u8>> {
        if !self.inc.is_empty() {
            return None;
        }
        self.room();
        Some(std::mem::take(&mut self.inc))
    }

    pub(crate) fn put_incoming(&mut self, inc: Vec<u8>) {
        self.inc = inc;
        self.blocked = false;
    }

    /// Appends ciphertext read elsewhere.
    pub(crate) fn received(&mut self, b: &[u8]) {
        self.inc.extend_from_slice(b);
        self.blocked = false;
    }

    /// Makes room in the incoming buffer for at least one record past what it holds.
    fn room(&mut self) {
        let spare = self.inc.capacity() - self.inc.len();
        if spare < RECORD {
            self.inc.reserve(RECORD);
        }
    }

    /// Whether ciphertext that may hold a whole record waits to be processed.
    pub(crate) fn has_unprocessed(&self) -> bool {
        !self.inc.is_empty() && !self.blocked
    }

    /// Plaintext decrypted and not read yet.
    pub(crate) fn stashed(&self) -> &[u8] {
        &self.plain[self.ppos..]
    }

    /// Marks `n` stashed bytes read.
    pub(crate) fn consume_stash(&mut self, n: usize) {
        self.ppos += n;
        if self.ppos >= self.plain.len() {
            self.plain.clear();
            self.ppos = 0;
        }
    }

    /// Whether the peer ended the session with close_notify (after what was read).
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether there are records to send (in the outgoing buffer: rustls's own
    /// `CommonState::wants_write` says nothing on the unbuffered API).
    pub(crate) fn wants_write(&self) -> bool {
        self.olen > 0
    }

    /// The outgoing buffer and how many of its bytes are records to send; the session starts
    /// a new one (or gets this one back through [`Session::put_outgoing`]).
    pub(crate) fn take_outgoing(&mut self) -> (Vec<u8>, usize) {
        let n = std::mem::take(&mut self.olen);
        (std::mem::take(&mut self.out), n)
    }

    /// Gives a sent outgoing buffer back for reuse, unless a new one is in use already.
    pub(crate) fn put_outgoing(&mut self, out: Vec<u8>) {
        if self.olen == 0 && out.capacity() > self.out.capacity() {
            self.out = out;
        }
    }

    /// Frees the buffers while the connection idles (ciphertext or plaintext not yet read,
    /// and records not yet sent, are kept).
    pub(crate) fn release_buffers(&mut self) {
        self.release_reads();
        if self.olen == 0 {
            self.out = Vec::new();
        }
    }

    /// [`Session::release_buffers`] for the read side only (a connection whose writes go on
    /// while it waits to read: HTTP/2, a relay).
    pub(crate) fn release_reads(&mut self) {
        // A partial record is kept, in a buffer its size (a burst that ended in one must not
        // pin a ring buffer's worth while the connection idles).
        if self.inc.is_empty() {
            self.inc = Vec::new();
        } else if self.inc.capacity() > RECORD {
            self.inc.shrink_to(self.inc.len().max(RECORD));
        }
        if self.stashed().is_empty() {
            self.plain = Vec::new();
            self.ppos = 0;
        }
    }

    /// Processes the received ciphertext until more is needed: handshake messages, alerts,
    /// key updates, and application data, whose plaintext goes to `sink` (which returns how
    /// much it took; the rest is stashed: `|_| 0` stashes it all). Records it answers
    /// with wait in the outgoing buffer. On an error, the alert that says why is in the
    /// outgoing buffer.
    pub(crate) fn read(&mut self, sink: &mut dyn FnMut(&[u8]) -> usize) -> io::Result<()> {
        self.drive(Want::Read, sink, None)?;
        self.blocked = true;
        Ok(())
    }

    /// [`Session::received`] and [`Session::read`] in one, for bytes the caller lets rustls
    /// decrypt where they are (a ring buffer): the records are processed in `buf` and only
    /// what is left (part of a record) is copied in. When the session holds the first part
    /// of a record, the bytes that complete it are copied in first; if anything else waits in
    /// the session, `buf` is appended and read as usual.
    pub(crate) fn read_from(
        &mut self,
        mut buf: &mut [u8],
        sink: &mut dyn FnMut(&[u8]) -> usize,
    ) -> io::Result<()> {
        if !self.inc.is_empty() {
            let need = self.to_complete(buf);
            if need == 0 || need > buf.len() {
                self.received(buf);
                return self.read(sink);
            }
            let (head, rest) = buf.split_at_mut(need);
            self.received(head);
            self.read(sink)?;
            buf = rest;
            if !self.inc.is_empty() {
                self.received(buf);
                return self.read(sink);
            }
        }
        self.drive(Want::Read, sink, Some(buf))?;
        self.blocked = true;
        Ok(())
    }

    /// How many bytes of `next` complete the one record the incoming buffer holds the first
    /// part of; 0 when it may hold more than that (bytes rustls has processed and keeps: part
    /// of a handshake message that spans records), or when `next` does not show it.
    fn to_complete(&self, next: &[u8]) -> usize {
        const HEADER: usize = 5;
        let have = self.inc.len();
        let mut header = [0u8; HEADER];
        let from_inc = have.min(HEADER);
        header[..from_inc].copy_from_slice(&self.inc[..from_inc]);
        if have < HEADER {
            // Fewer bytes than a header: nothing rustls could have processed.
            if next.len() < HEADER - have {
                return 0;
            }
            header[have..].copy_from_slice(&next[..HEADER - have]);
        }
        let len = HEADER + u16::from_be_bytes([header[3], header[4]]) as usize;
        // A record wholly here was seen by rustls, which keeps it only while a handshake
        // message spans it and the next: leave that case to the plain path.
        if len <= have {
            return 0;
        }
        len - have
    }

    /// Encrypts `data` into the outgoing buffer (records received meanwhile are processed,
    /// their plaintext stashed).
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.send(Want::Write(data))
    }

    /// Puts a close_notify alert into the outgoing buffer.
    pub(crate) fn close_notify(&mut self) -> io::Result<()> {
        self.send(Want::Close)
    }

    fn send(&mut self, want: Want<'_>) -> io::Result<()> {
        match self.drive(want, &mut |_| 0, None)? {
            Step::Wrote => Ok(()),
            Step::Closed => Err(io::ErrorKind::BrokenPipe.into()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS session cannot send application data",
            )),
        }
    }

    /// Runs the session towards `want` over the incoming buffer, or over `fresh` (the incoming
    /// buffer being empty: what rustls leaves of it is then copied in); plaintext to `sink`
    /// (what it does not take, and all of it while the stash holds some, is stashed).
    fn drive(
        &mut self,
        want: Want<'_>,
        sink: &mut dyn FnMut(&[u8]) -> usize,
        fresh: Option<&mut [u8]>,
    ) -> io::Result<Step> {
        if self.dead {
            return Err(ended());
        }
        let plain = &mut self.plain;
        let mut take = |b: &[u8]| {
            let n = if plain.is_empty() {
                sink(b).min(b.len())
            } else {
                0
            };
            plain.extend_from_slice(&b[n..]);
        };
        let (conn, out, olen, closed) = (
            &mut self.conn,
            &mut self.out,
            &mut self.olen,
            &mut self.peer_closed,
        );
        // What rustls consumed is cut from the front once; what is left stays at the front of
        // the incoming buffer, where rustls expects it at the next call.
        let r = match fresh {
            Some(buf) => {
                let (used, r) = run(conn, buf, out, olen, closed, want, &mut take);
                self.inc.extend_from_slice(&buf[used..]);
                r
            }
            None => {
                let (used, r) = run(conn, &mut self.inc, out, olen, closed, want, &mut take);
                if used > 0 {
                    self.inc.copy_within(used.., 0);
                    self.inc.truncate(self.inc.len() - used);
                }
                r
            }
        };
        r.map_err(|e| self.failed(e))
    }

    /// After an error: encodes the alert rustls queued (it queues it, then reports the
    /// error), so the caller sends it before giving up. The session is done: rustls would
    /// process the same bytes again (and fail again) if asked.
    fn failed(&mut self, e: io::Error) -> io::Error {
        self.dead = true;
        let (out, olen) = (&mut self.out, &mut self.olen);
        // A handshake record queued ahead of it too (a TLS 1.3 ServerHello, then the alert:
        // RFC 7301's no_application_protocol reached the client as a bare ServerHello). Only
        // while the record encoded is a handshake one is rustls asked again: once its queue is
        // empty it would process the failing bytes again, and fail (and alert) twice.
        for _ in 0..8 {
            let at = *olen;
            let encoded = match &mut self.conn {
                Side::Server(c) => alert(c.process_tls_records(&mut self.inc[..]), out, olen),
                Side::Client(c) => alert(c.process_tls_records(&mut self.inc[..]), out, olen),
            };
            // The record's content type: 22 handshake, 20 change_cipher_spec.
            let handshake = encoded && matches!(out.get(at), Some(22 | 20));
            if !handshake {
                break;
            }
        }
        e
    }
}

/// Encodes the record rustls queued next (an alert after an error), if it queued one;
/// whether it did.
fn alert<Data>(st: UnbufferedStatus<'_, '_, Data>, out: &mut Vec<u8>, olen: &mut usize) -> bool {
    if let Ok(ConnectionState::EncodeTlsData(mut e)) = st.state {
        return encode(|b| e.encode(b), out, olen).is_ok();
    }
    false
}

/// Runs the session's states over `inc` until `want` is met or more ciphertext is needed;
/// returns how many bytes at its front rustls is done with.
fn run(
    conn: &mut Side,
    inc: &mut [u8],
    out: &mut Vec<u8>,
    olen: &mut usize,
    peer_closed: &mut bool,
    want: Want<'_>,
    sink: &mut dyn FnMut(&[u8]),
) -> (usize, io::Result<Step>) {
    // What rustls consumed so far; cut by the caller once, at the end (not after every
    // record, which would move the rest of the buffer once per record).
    let mut start = 0;
    let r = loop {
        let (discard, step) = match conn {
            Side::Server(c) => {
                let st = c.process_tls_records(&mut inc[start..]);
                step(st, &want, out, olen, peer_closed, sink)
            }
            Side::Client(c) => {
                let st = c.process_tls_records(&mut inc[start..]);
                step(st, &want, out, olen, peer_closed, sink)
            }
        };
        start = (start + discard).min(inc.len());
        match step {
            Ok(Step::Again) => {}
            Ok(Step::Blocked)
                if matches!(want, Want::Read) && inc.len() - start >= MAX_INCOMING =>
            {
                break Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS message too large",
                ));
            }
            r => break r,
        }
    };
    (start, r)
}

/// Handles one state; returns the bytes to discard from the front of the incoming buffer.
fn step<Data>(
    st: UnbufferedStatus<'_, '_, Data>,
    want: &Want<'_>,
    out: &mut Vec<u8>,
    olen: &mut usize,
    peer_closed: &mut bool,
    sink: &mut dyn FnMut(&[u8]),
) -> (usize, io::Result<Step>) {
    let mut discard = st.discard;
    let step = match st.state {
        Err(e) => Err(tls_err(e)),
        Ok(ConnectionState::ReadTraffic(mut r)) => loop {
            match r.next_record() {
                None => break Ok(Step::Again),
                Some(Err(e)) => break Err(tls_err(e)),
                Some(Ok(rec)) => {
                    discard += rec.discard;
                    sink(rec.payload);
                }
            }
        },
        // Early data is never accepted (no listener enables it).
        Ok(ConnectionState::ReadEarlyData(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TLS early data not accepted",
        )),
        Ok(ConnectionState::EncodeTlsData(mut e)) => {
            encode(|b| e.encode(b), out, olen).map(|_| Step::Again)
        }
        // What was encoded goes out with the outgoing buffer, whenever the stream sends it;
        // everything after it is appended behind it.
        Ok(ConnectionState::TransmitTlsData(t)) => {
            t.done();
            Ok(Step::Again)
        }
        Ok(ConnectionState::BlockedHandshake) => Ok(Step::Blocked),
        Ok(ConnectionState::WriteTraffic(mut w)) => match want {
            Want::Read => Ok(Step::Blocked),
            Want::Write(data) => {
                let mut rest = *data;
                let mut r = Ok(Step::Wrote);
                while !rest.is_empty() {
                    // One record at a time bounds the room asked for (16 KiB and overhead).
                    let k = rest.len().min(16 * 1024);
                    if let Err(e) = encrypt(|b| w.encrypt(&rest[..k], b), out, olen, k) {
                        r = Err(e);
                        break;
                    }
                    rest = &rest[k..];
                }
                r
            }
            Want::Close => encrypt(|b| w.queue_close_notify(b), out, olen, 0).map(|_| Step::Wrote),
        },
        Ok(ConnectionState::PeerClosed) => {
            *peer_closed = true;
            Ok(Step::Again)
        }
        Ok(ConnectionState::Closed) => Ok(Step::Closed),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected TLS state",
        )),
    };
    (discard, step)
}

/// Makes `out` (zero-filled, kept at its length) have `need` bytes of room past `olen`.
fn grow(out: &mut Vec<u8>, olen: usize, need: usize) {
    if out.len() < olen + need {
        out.resize(olen + need, 0);
    }
}

/// Writes a record into the outgoing buffer with `f` (which says how much room it needs when
/// the buffer is short: `short`), growing the buffer then and trying again; `len` is the
/// plaintext's length, room for which is made first.
fn put<E>(
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    short: impl Fn(&E) -> Option<usize>,
    out: &mut Vec<u8>,
    olen: &mut usize,
    len: usize,
) -> io::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    // A record's overhead: header, content type, tag (and TLS 1.2's explicit nonce).
    grow(out, *olen, len + 64);
    let n = match f(&mut out[*olen..]) {
        Ok(n) => n,
        Err(e) => match short(&e) {
            Some(need) => {
                grow(out, *olen, need);
                f(&mut out[*olen..]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            }
            None => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        },
    };
    *olen += n;
    Ok(())
}

/// Encodes a handshake record (its bytes are ready; rustls copies them).
fn encode(
    f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
    out: &mut Vec<u8>,
    olen: &mut usize,
) -> io::Result<()> {
    let short = |e: &EncodeError| match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    };
    put(f, short, out, olen, 0)
}

/// Encrypts `len` plaintext bytes (or an alert: 0) into a record.
fn encrypt(
    f: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
    out: &mut Vec<u8>,
    olen: &mut usize,
    len: usize,
) -> io::Result<()> {
    let short = |e: &EncryptError| match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(*required_size)
        }
        _ => None,
    };
    put(f, short, out, olen, len)
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
