//! Upstreams: choosing a target ([`select`]), per-shard keep-alive pools ([`checkout`],
//! [`checkin`]), passive ejection ([`record_failure`]), the proxy itself ([`proxy`]) and the
//! control plane's active health checks ([`health`]).
//!
//! A target is skipped when the control plane's health check marks it down (one relaxed
//! atomic load) or when this shard saw `max_fails` consecutive failures within
//! `fail_timeout` (nginx's passive health). With no usable target the answer is 503.

pub(crate) mod fetch;
pub(crate) mod h2;
pub(crate) mod health;
pub(crate) mod pool;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::driver::net::TcpStream;
use bytes::BytesMut;

use crate::error::{Error, Kind};
pub(crate) use pool::{Ejection, Idle, TargetLocal, BIG_ANSWER};

/// Pool and failure settings for one destination.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolCfg {
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// The clock is read only for a target that was ejected (not once per request).
pub(crate) fn usable(e: &Ejection, healthy: bool) -> bool {
    healthy && e.down_until.get().is_none_or(|d| Instant::now() >= d)
}

/// A connection to an upstream target: plain TCP, or TLS on top.
pub(crate) enum UpStream {
    Plain(TcpStream),
    Tls(Box<crate::http::tls::TlsClient>),
    /// A stream on the target's shared HTTP/2 connection.
    H2(Box<h2::H2Up>),
}

impl UpStream {
    /// Appends what the upstream sent to `buf`; `Ok(0)` at end of stream.
    pub(crate) async fn read_into(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            UpStream::Plain(s) => crate::http::conn::read_into(s, buf).await,
            UpStream::Tls(t) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(crate::http::conn::READ_CHUNK);
                }
                t.read_into(buf).await
            }
            UpStream::H2(s) => s.read_into(buf).await,
        }
    }

    /// [`UpStream::read_into`] for an answer's head: on plain TCP on Tollgate's own runtime
    /// the body bytes after the first few KiB stay in the received buffer (see
    /// [`crate::http::conn::read_head_into`]).
    pub(crate) async fn read_head_into(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match self {
            UpStream::Plain(s) => crate::http::conn::read_head_into(s, buf).await,
            _ => self.read_into(buf).await,
        }
    }

    /// Moves the bytes [`UpStream::read_head_into`] left in their received buffer into
    /// `buf`. Called before anything other than the relay of the body waits (on the client):
    /// no buffer of the shard's ring is held meanwhile.
    pub(crate) fn settle(&self, buf: &mut BytesMut) {
        if let Some(b) = self.own_plain().and_then(|s| s.take_held()) {
            buf.extend_from_slice(&b);
        }
    }

    /// Receives one buffer per operation (`true`), or multishot (see
    /// `rt::net::TcpStream::set_bounded`); plain TCP on Tollgate's own runtime only.
    pub(crate) fn set_bounded(&self, on: bool) {
        if let UpStream::Plain(s) = self {
            s.set_bounded(on);
        }
    }

    /// Whether anything came that nobody read (see [`TcpStream::has_unread`]); an HTTP/2
    /// stream has none of its own.
    fn has_unread(&self) -> bool {
        match self {
            UpStream::Plain(s) => s.has_unread(),
            UpStream::Tls(t) => t.has_unread(),
            UpStream::H2(_) => false,
        }
    }

    /// The socket when it is plain TCP on Tollgate's own runtime (its received buffers can
    /// be sent on as they are).
    pub(crate) fn own_plain(&self) -> Option<&crate::rt::net::TcpStream> {
        match self {
            UpStream::Plain(s) => s.own(),
            _ => None,
        }
    }

    /// A second handle on a plain TCP upstream's socket, to read its answer while a request
    /// body is still being written to the first; `None` for TLS and HTTP/2 upstreams.
    pub(crate) fn answer_watch(&self) -> Option<TcpStream> {
        let UpStream::Plain(s) = self else {
            return None;
        };
        s.reader()
    }

    /// Writes all of `data`.
    pub(crate) async fn write_all<B: monoio::buf::IoBuf + AsRef<[u8]> + Into<bytes::Bytes>>(
        &mut self,
        data: B,
    ) -> std::io::Result<()> {
        match self {
            UpStream::Plain(s) => crate::http::conn::write_all(s, data).await,
            UpStream::Tls(t) => t.write_all(data.as_ref()).await,
            UpStream::H2(s) => s.write(data.into()).await,
        }
    }
}

/// Most streams one HTTP/2 connection to a target carries at once (fewer where the upstream
/// allows fewer); beyond, another connection opens. Each connection's window is this many
/// streams' windows, so clients that stop reading cannot stall the rest of a connection.
pub(crate) const H2_STREAMS_PER_CONN: usize = 32;

/// A new stream on the first of the target's HTTP/2 connections with room for one, if any.
/// Connections past the first that carry nothing are let go (a burst's extras).
fn h2_stream(t: &TargetLocal) -> Option<UpStream> {
    let mut conns = t.h2_conns.borrow_mut();
    let room = |c: &pool::H2Conn| {
        c.active.get() < H2_STREAMS_PER_CONN.min(c.sender.current_max_send_streams().max(1))
    };
    let at = conns.iter().position(room)?;
    let up = h2::H2Up::new(&conns[at], t.tls.borrow().is_some());
    let mut i = 0;
    conns.retain(|c| {
        i += 1;
        i == 1 || c.active.get() > 0
    });
    Some(UpStream::H2(Box::new(up)))
}

/// A pooled connection if one is fresh enough, else `None`.
/// `now`: the caller's clock reading (one read per request serves the deadline and this).
pub(crate) fn checkout(t: &TargetLocal, cfg: &PoolCfg, now: Instant) -> Option<UpStream> {
    if t.h2.get() {
        return h2_stream(t);
    }
    let mut idle = t.idle.borrow_mut();
    // Newest first (the warmest connection); anything past keepalive_timeout is closed.
    while let Some(c) = idle.pop_back() {
        // One that got anything while idle (bytes past its last answer, its close) is
        // closed, as nginx does: a stray answer must not be taken for the next request's.
        if now.saturating_duration_since(c.since) < cfg.keepalive_timeout && !c.stream.has_unread()
        {
            c.stream.set_bounded(t.big.get());
            return Some(c.stream);
        }
    }
    None
}

/// The most idle connections a shard keeps per target when that many requests were in
/// flight to it at once recently (see [`checkin`]).
const KEEP_FOR_DEMAND: usize = 1024;
/// How far back "recently" reaches: one to two windows.
const DEMAND_WINDOW: Duration = Duration::from_secs(5);

/// Parks a connection whose exchange ended cleanly.
pub(crate) fn checkin(t: &TargetLocal, cfg: &PoolCfg, stream: UpStream) {
    if matches!(stream, UpStream::H2(_)) {
        // The connection stays shared; the stream is done.
        return;
    }
    // The pool keeps `keepalive` idle connections, or as many as were in flight to the
    // target at once recently (up to KEEP_FOR_DEMAND): under 1,000 concurrent requests a pool
    // capped at 32 closed most connections as answers finished and opened as many for the
    // next requests (connect storms: p99 ten times higher, throughput halved). Beyond that,
    // the oldest go first; none is kept past keepalive_timeout.
    let now = crate::driver::time::now();
    // Demand: the most requests in flight at once over the last DEMAND_WINDOW or two.
    if now.saturating_duration_since(t.peak_since.get()) >= DEMAND_WINDOW {
        t.prev_peak.set(t.peak.get());
        t.peak.set(t.inflight.get());
        t.peak_since.set(now);
    }
    let demand = (t.peak.get().max(t.prev_peak.get()) as usize).min(KEEP_FOR_DEMAND);
    // keepalive = 0 turns pooling off altogether.
    let keep = if cfg.keepalive == 0 {
        0
    } else {
        cfg.keepalive.max(demand)
    };
    let mut idle = t.idle.borrow_mut();
    while idle.front().is_some_and(|c| {
        idle.len() >= keep || now.saturating_duration_since(c.since) >= cfg.keepalive_timeout
    }) {
        idle.pop_front();
    }
    if keep > 0 {
        idle.push_back(Idle { stream, since: now });
    }
}

/// Opens a new connection to a target (and, for a TLS target, completes the handshake)
/// within `connect_timeout`. A certificate that does not verify is a 502.
pub(crate) async fn connect_target(t: &TargetLocal, timeout: Duration) -> Result<UpStream, Error> {
    if t.h2.get() {
        // One HTTP/2 connection per target: requests that find one being opened wait for it
        // (and, when it failed, the first of them to run opens the next) — all within this
        // request's `timeout`, however many openings fail before it.
        let deadline = Instant::now() + timeout;
        while t.h2_opening.get() {
            let wait = std::future::poll_fn(|cx| {
                if t.h2_opening.get() {
                    t.h2_waiters.borrow_mut().push(cx.waker().clone());
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(())
                }
            });
            if crate::driver::time::timeout_at(deadline, wait)
                .await
                .is_err()
            {
                return Err(Error::upstream(
                    Kind::GatewayTimeout,
                    format!("{}: waiting for its HTTP/2 connection to open", t.addr),
                ));
            }
            if let Some(up) = h2_stream(t) {
                return Ok(up);
            }
        }
        t.h2_opening.set(true);
        // Cleared however the opening ends: a client that goes away (an HTTP/2 stream reset)
        // drops this future mid-handshake, and the flag left set kept every later request
        // waiting for a connection no one was opening.
        let _opening = Opening(t);
        let left = deadline.saturating_duration_since(Instant::now());
        return connect_new(t, left).await;
    }
    connect_new(t, timeout).await
}

/// A target's HTTP/2 connection being opened: when it ends, done or dropped, the requests
/// waiting for it go on.
struct Opening<'a>(&'a TargetLocal);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.h2_opening.set(false);
        let waiters = std::mem::take(&mut *self.0.h2_waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// Opens a connection (TCP, then TLS and HTTP/2 where the target speaks them), counted in
/// the target's figures.
async fn connect_new(t: &TargetLocal, timeout: Duration) -> Result<UpStream, Error> {
    let start = Instant::now();
    let r = open_new(t, timeout).await;
    let us = start.elapsed().as_micros() as u64;
    t.stats.connected(r.is_ok(), us);
    r
}

async fn open_new(t: &TargetLocal, timeout: Duration) -> Result<UpStream, Error> {
    let tls = t.tls.borrow().clone();
    let deadline = Instant::now() + timeout;
    let tcp = connect(t.addr, timeout).await?;
    // One receive buffer at a time, so that a client that stops reading a big answer pins one
    // buffer here, not the ring's worth of bytes (see `rt::net::TcpStream::set_bounded` and
    // `TargetLocal::big`): a plain HTTP/1.1 connection until its first answer shows its
    // target small (each answer may switch it); under TLS or HTTP/2, whose socket the answer
    // does not see, for its life when the target has answered big before.
    tcp.set_bounded((tls.is_none() && !t.h2.get()) || t.big.get());
    let Some(tls) = tls else {
        if t.h2.get() {
            let io = crate::http::pollio::PollIo::plain(tcp, bytes::Bytes::new());
            return h2_open(t, io, deadline, false).await;
        }
        return Ok(UpStream::Plain(tcp));
    };
    let name = tls.name_text();
    let hs = crate::http::tls::TlsClient::connect(tcp, tls.config, tls.name);
    match crate::driver::time::timeout_at(deadline, hs).await {
        Ok(Ok(c)) if t.h2.get() => {
            h2_open(t, c.into_poll_io(bytes::Bytes::new()), deadline, true).await
        }
        Ok(Ok(c)) => Ok(UpStream::Tls(Box::new(c))),
        Ok(Err(e)) => Err(Error::upstream(
            Kind::BadGateway,
            format!("TLS handshake with {} ({name}): {e}", t.addr),
        )),
        Err(_) => Err(Error::upstream(
            Kind::GatewayTimeout,
            format!("TLS handshake with {} ({name}): timed out", t.addr),
        )),
    }
}

/// Runs the HTTP/2 handshake on a new connection and makes it the target's shared one.
async fn h2_open(
    t: &TargetLocal,
    io: crate::http::pollio::PollIo,
    deadline: Instant,
    tls: bool,
) -> Result<UpStream, Error> {
    match crate::driver::time::timeout_at(deadline, h2::handshake(io)).await {
        Ok(Ok(sender)) => {
            t.h2_conn_id.set(t.h2_conn_id.get() + 1);
            let c = pool::H2Conn {
                sender,
                id: t.h2_conn_id.get(),
                active: std::rc::Rc::new(std::cell::Cell::new(0)),
            };
            let up = h2::H2Up::new(&c, tls);
            t.h2_conns.borrow_mut().push(c);
            Ok(UpStream::H2(Box::new(up)))
        }
        Ok(Err(e)) => Err(Error::upstream(
            Kind::BadGateway,
            format!("HTTP/2 handshake with {}: {e}", t.addr),
        )),
        Err(_) => Err(Error::upstream(
            Kind::GatewayTimeout,
            format!("HTTP/2 handshake with {}: timed out", t.addr),
        )),
    }
}

/// Opens a new TCP connection within `connect_timeout`.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Error> {
    match crate::driver::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(Error::upstream(
            Kind::BadGateway,
            format!("connect to {addr}: {e}"),
        )),
        Err(_) => Err(Error::upstream(
            Kind::GatewayTimeout,
            format!("connect to {addr}: timed out"),
        )),
    }
}

/// Counts a failure; after `max_fails` in a row the target rests for `fail_timeout`.
/// `eject` is the upstream's state for the target (none for a literal URI's target: never
/// ejected).
pub(crate) fn record_failure(t: &TargetLocal, eject: Option<&Ejection>, cfg: &PoolCfg) {
    let Some(e) = eject else {
        return;
    };
    // Failures of requests already in flight when the target was ejected change nothing: it
    // is ejected (and said so) once per rest, not once per `max_fails` of them.
    if e.down_until.get().is_some_and(|d| d > Instant::now()) {
        return;
    }
    let f = e.fails.get() + 1;
    e.fails.set(f);
    if cfg.max_fails > 0 && f >= cfg.max_fails {
        tracing::warn!(target_addr = %t.addr, fails = f, "upstream target ejected for {:?}", cfg.fail_timeout);
        e.down_until.set(Some(Instant::now() + cfg.fail_timeout));
        t.stats.ejected();
        e.fails.set(0);
        t.idle.borrow_mut().clear();
    }
}

pub(crate) fn record_success(eject: Option<&Ejection>) {
    if let Some(e) = eject {
        if e.fails.get() != 0 {
            e.fails.set(0);
        }
    }
}
