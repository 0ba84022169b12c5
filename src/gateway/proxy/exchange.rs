//! One exchange with an upstream: pick a target, check out or open a connection, send the
//! head and stream the body, read the answer's head; with the retry rules (a stale pooled
//! connection, a target that cannot be reached) for requests whose body is in memory.

use super::*;

/// Keeps the in-flight count of a target right, whatever path the request takes.
pub(super) struct InFlight(Rc<TargetLocal>);

impl InFlight {
    pub(super) fn new(t: Rc<TargetLocal>) -> InFlight {
        let n = t.inflight.get() + 1;
        t.inflight.set(n);
        t.peak.set(t.peak.get().max(n));
        InFlight(t)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.set(self.0.inflight.get().saturating_sub(1));
    }
}

/// How one attempt ended when it did not produce a response head.
pub(super) enum Failure {
    /// A pooled connection was already closed by the upstream: try a fresh one.
    Stale,
    /// The target failed (counts towards ejection).
    Target(Error),
    /// A new connection was closed or reset before any byte of an answer, with nothing of
    /// the body streamed: an idempotent request can go to another target.
    Reset(Error),
    /// The client's side failed (bad or oversized body, or it went away).
    Client(Error),
}

/// An upstream answer whose head has been read and whose body has not.
pub(crate) struct Exchange {
    pub(super) target: Rc<TargetLocal>,
    /// The upstream's ejection state for the target (a failure mid-answer counts).
    pub(super) eject: Option<Rc<crate::upstream::Ejection>>,
    pub(super) cfg: PoolCfg,
    pub(super) up: UpStream,
    pub resp: ResponseHead,
    pub(super) ubuf: BytesMut,
}

impl Exchange {
    /// Gives the connection back to the pool when the answer had no body to read (a 304),
    /// else closes it.
    pub(crate) fn finish_bodiless(self) {
        let Exchange {
            target,
            cfg,
            up,
            resp,
            ubuf,
            ..
        } = self;
        let bodiless = matches!(resp.framing, Framing::None | Framing::Length(0));
        if bodiless && resp.keep_alive && ubuf.is_empty() {
            checkin(&target, &cfg, up);
        }
    }
}

/// Sends the request (with the cache's `extra`) and reads the answer's head. `Err` only
/// before anything was written to the client.
pub(crate) async fn send(
    ss: &ShardSnap,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
    extra: &Extra,
) -> Result<Exchange, Error> {
    let cfg = PoolCfg::for_dest(ss, &integ.dest);
    let max_body = ss.snap.limits.max_body;
    let mut head = request_head_with(&conn.peer_ip, ctx, integ, extra);
    // A small body of known length is read whole before anything is sent, as nginx does
    // with client_body_buffer_size: head and body then leave in one write, and the request
    // can be replayed on another connection.
    let limits = &ss.snap.limits;
    let mut clock = BodyClock::new(limits);
    if let Framing::Length(n) = ctx.head.framing {
        if n <= limits.request_buffering && (conn.buf.len() as u64) < n {
            let n = n as usize;
            if ctx.head.expect_continue {
                conn.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                    .await
                    .map_err(|_| Error::downstream(Kind::ClientGone, "writing 100 Continue"))?;
            }
            while conn.buf.len() < n {
                if let Err(e) = clock.read(conn, n - conn.buf.len()).await {
                    ctx.body = BodyState::Broken;
                    return Err(e);
                }
            }
        }
    }

    // Is the whole body already here? Then it goes out with the head and can be replayed.
    let buffered = match ctx.head.framing {
        Framing::None | Framing::UntilClose => Some(0),
        Framing::Length(n)
            if (conn.buf.len() as u64) >= n
                && n <= limits.request_buffering.max(COALESCE_BODY as u64) =>
        {
            Some(n as usize)
        }
        Framing::Chunked => {
            let mut d = ChunkedDecoder::new(max_body);
            let mut ranges = Vec::new();
            match d.feed(&conn.buf, |r| ranges.push(r)) {
                Ok(k) if d.is_done() && k <= COALESCE_BODY => {
                    // Re-framed canonically, after the head.
                    reframe(&conn.buf[..k], &ranges, true, &mut head);
                    let _ = conn.buf.split_to(k);
                    Some(0)
                }
                Ok(_) => None,
                Err(ChunkError::TooLarge) => {
                    return Err(Error::downstream(Kind::BodyTooLarge, "chunked body"))
                }
                Err(ChunkError::Malformed) => {
                    return Err(Error::downstream(
                        Kind::BadRequest("Malformed chunked body"),
                        "chunked body",
                    ))
                }
            }
        }
        _ => None,
    };
    if let Some(n) = buffered {
        head.extend_from_slice(&conn.buf[..n]);
        let _ = conn.buf.split_to(n);
        ctx.body = BodyState::Done;
    }
    let first: Bytes = head.into();
    let replayable = buffered.is_some() && ctx.head.method.is_idempotent();
    // A connection that could not be opened was sent nothing: any method whose body is at
    // hand goes to another target (nginx's `proxy_next_upstream error`).
    let resendable = buffered.is_some();

    let started = Instant::now();
    ctx.timings.upstream_start = Some(started);
    let deadline = started + integ.timeout;
    // When a slow answer's client is watched too (see `wait_head`).
    let watch_from = started + WATCH_CLIENT_AFTER;
    let mut exclude = None;
    let mut fresh_only = false;
    let mut tries = 0;
    // When a retry finds no other target, the answer is the failure that caused it.
    let mut last_err: Option<Error> = None;
    let (target, eject, up, resp, ubuf) = loop {
        tries += 1;
        let (target, eject) = match select(ss, &integ.dest, ctx, conn.peer, exclude) {
            Ok(p) => {
                ctx.all_ejected |= p.all_ejected;
                (p.target, p.eject)
            }
            Err(e) => return Err(last_err.take().unwrap_or(e)),
        };
        ctx.upstream = Some(target.addr);
        let guard = InFlight::new(target.clone());
        let pooled = if fresh_only {
            None
        } else {
            checkout(&target, &cfg, started)
        };
        let reused = pooled.is_some();
        let mut up = match pooled {
            Some(s) => s,
            None => match connect_target(
                &target,
                cfg.connect_timeout
                    .min(deadline.saturating_duration_since(Instant::now())),
            )
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    record_failure(&target, eject.as_deref(), &cfg);
                    if tries < 3
                        && resendable
                        && !matches!(integ.dest, crate::snapshot::Dest::Literal(_))
                    {
                        tracing::debug!(target_addr = %target.addr, error = %e, "retrying on another target");
                        exclude = Some(target.addr);
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            },
        };
        // A pooled connection taken at once was ready when the exchange started.
        ctx.timings.upstream_connected = Some(if reused && tries == 1 {
            started
        } else {
            Instant::now()
        });
        match exchange(
            conn,
            ctx,
            &mut up,
            first.clone(),
            reused,
            &ss.snap.limits,
            (deadline, watch_from),
            integ.timeout,
        )
        .await
        {
            Ok((resp, ubuf)) => {
                drop(guard);
                // The turn's clock (the answer's bytes came in before the turn began); never
                // before the exchange's start (bytes a pooled connection already held).
                ctx.timings.first_byte = Some(crate::driver::time::now().max(started));
                ctx.integration_status = Some(resp.status);
                break (target, eject, up, resp, ubuf);
            }
            // The target's HTTP/2 connection closed (GOAWAY, its idle timeout) before it took
            // the stream, or refused the stream: nothing was processed whatever the method
            // (`exchange` says Stale for those alone). It is dropped, and the request goes
            // on a new one.
            Err(Failure::Stale) if matches!(up, UpStream::H2(_)) && tries < 3 => {
                drop_h2_conn(&target, &up);
                fresh_only = true;
                continue;
            }
            Err(Failure::Stale) if replayable && tries < 3 => {
                fresh_only = true;
                continue;
            }
            Err(Failure::Stale) => {
                record_failure(&target, eject.as_deref(), &cfg);
                return Err(Error::upstream(
                    Kind::BadGateway,
                    format!("{}: connection closed before an answer", target.addr),
                ));
            }
            // Closed or reset before any answer byte: an idempotent request whose body is in
            // memory goes to another target (nginx's proxy_next_upstream error), within the
            // route's timeout; where there is no other target, the answer is this failure.
            Err(Failure::Reset(e)) if replayable && tries < 3 && Instant::now() < deadline => {
                record_failure(&target, eject.as_deref(), &cfg);
                tracing::debug!(target_addr = %target.addr, error = %e, "closed before an answer: retrying on another target");
                exclude = Some(target.addr);
                last_err = Some(e);
                continue;
            }
            Err(Failure::Target(e) | Failure::Reset(e)) => {
                // A stream on the target's shared HTTP/2 connection that got no answer in
                // time: the connection may be a black hole (its peer gone without a reset,
                // or never answering the preface, which the handshake does not wait for),
                // and every later request would wait on it too. The next one opens another;
                // this one's streams end as they may.
                if matches!(e.kind, Kind::GatewayTimeout) {
                    drop_h2_conn(&target, &up);
                }
                record_failure(&target, eject.as_deref(), &cfg);
                return Err(e);
            }
            Err(Failure::Client(e)) => return Err(e),
        }
    };
    record_success(eject.as_deref());
    Ok(Exchange {
        target,
        eject,
        cfg,
        up,
        resp,
        ubuf,
    })
}

/// Leaves the HTTP/2 connection `up` went on to its streams: no new stream goes on it (only
/// that one: many streams timing out on one dead connection must not each drop the next
/// one's replacement).
fn drop_h2_conn(target: &TargetLocal, up: &UpStream) {
    if let UpStream::H2(h) = up {
        target.h2_conns.borrow_mut().retain(|c| c.id != h.conn);
    }
}

/// Sends the request (head, then the body as it streams in) and reads the answer's head,
/// by `deadline` (watching the client from `watch_from`) — or, for a body streamed as it
/// arrives, within `timeout` of its last byte going out: a slow upload is the client's time,
/// paced by the body's own limits, and no fault of the target's (Amazon starts the
/// integration timeout once it has the request).
#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange(
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    up: &mut UpStream,
    first: Bytes,
    reused: bool,
    limits: &Limits,
    (mut deadline, mut watch_from): (Instant, Instant),
    timeout: std::time::Duration,
) -> Result<(ResponseHead, BytesMut), Failure> {
    let gone = |what: &str| Error::upstream(Kind::BadGateway, what.to_string());
    // An HTTP/1.1 client whose answer is slow is watched too (HTTP/2 streams are reset by
    // their client, which the stream sees).
    let mut watch_client = true;
    // An HTTP/2 upstream that answered before it took the whole request (a 413, a 401) and
    // ended the stream: its answer is relayed, as an HTTP/1.1 upstream's is (it was a 502).
    let mut early = false;
    // The head and any buffered body go out by the deadline too: an HTTP/2 upstream that
    // gives no flow-control window (or a socket that takes nothing) would hold the request,
    // its client and the target's in-flight count for good.
    let Ok(sent) = crate::driver::time::timeout_at(deadline, up.write_all(first)).await else {
        return Err(Failure::Target(Error::upstream(
            Kind::GatewayTimeout,
            "sending the request",
        )));
    };
    if let Err(e) = sent {
        let h2 = matches!(up, UpStream::H2(_));
        if matches!(&*up, UpStream::H2(h) if h.answered()) {
            early = true;
        }
        if !early {
            return Err(match e.kind() {
                // A request HTTP/2 has no form for (a protocol switch) or that the mapping could
                // not send: no fault of the target's, and no new connection for it.
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::InvalidInput if h2 => {
                    Failure::Client(Error::upstream(
                        Kind::BadGateway,
                        "the request has no HTTP/2 form for this upstream (a protocol switch)",
                    ))
                }
                // HTTP/2: only a stream the connection never took, or the upstream refused
                // (REFUSED_STREAM, left out of a GOAWAY), is known unprocessed: sent again on a
                // new connection whatever the method. Sent in part: retried only if idempotent
                // (as a reset of a new connection).
                _ if h2 && !crate::upstream::h2::unprocessed(&e) => {
                    Failure::Reset(gone("sending the request"))
                }
                _ if reused || h2 => Failure::Stale,
                _ => Failure::Reset(gone("writing request head")),
            });
        }
    }
    let streamed = ctx.body == BodyState::Unread && !early;
    let mut ubuf = BytesMut::with_capacity(READ_CHUNK);
    // An upstream that answers before it has read the whole body (a 401, a 413) gets no more
    // of it: its answer is relayed, neither connection is reused.
    let mut cut = early;
    if streamed {
        if ctx.head.expect_continue && conn.buf.is_empty() {
            // Under `send_timeout` and counted, as every write to the client is.
            conn.write_all(&b"HTTP/1.1 100 Continue\r\n\r\n"[..])
                .await
                .map_err(|_| {
                    Failure::Client(Error::downstream(Kind::ClientGone, "writing 100 Continue"))
                })?;
        }
        ctx.body = BodyState::Broken;
        match stream_request_body(conn, ctx, up, limits, timeout, &mut ubuf).await? {
            BodySent::All => ctx.body = BodyState::Done,
            BodySent::Cut => cut = true,
        }
        let now = Instant::now();
        deadline = deadline.max(now + timeout);
        watch_from = now + WATCH_CLIENT_AFTER;
    }
    loop {
        if !ubuf.is_empty() {
            match h1::parse_response(&ubuf, MAX_RESPONSE_HEAD, ctx.head.method == Method::Head) {
                Ok(Some((len, parts))) => {
                    if parts.status < 200 && parts.status != 101 {
                        // Interim answers: 103 Early Hints (and 102, 104...) go on to HTTP/1.1
                        // clients (RFC 9110 15.2; never to HTTP/1.0 ones, and the h2 library
                        // sends none); 100 Continue was the gateway's own business. A 101 is
                        // final: after it the bytes are another protocol's (RFC 9110 15.2.2).
                        let raw = ubuf.split_to(len).freeze();
                        if parts.status != 100
                            && ctx.head.minor >= 1
                            && !matches!(conn.stream, crate::http::conn::Stream::H2(_))
                        {
                            let head = parts.into_head(raw);
                            let mut out = Vec::with_capacity(head.raw.len());
                            status_line(&mut out, 1, head.status);
                            // As on a final answer, fields named in `Connection` are
                            // hop-by-hop too (RFC 9110 7.6.1); an interim answer has no body.
                            let named = super::rewrite::connection_value(head.headers());
                            for (n, v) in head.headers() {
                                if !super::rewrite::hop_by_hop(n)
                                    && !super::rewrite::listed_in_connection(named.as_deref(), n)
                                    && !name_eq(n, b"content-length")
                                {
                                    out.extend_from_slice(n);
                                    out.extend_from_slice(b": ");
                                    out.extend_from_slice(v);
                                    out.extend_from_slice(b"\r\n");
                                }
                            }
                            out.extend_from_slice(b"\r\n");
                            up.settle(&mut ubuf);
                            conn.write_all(out).await.map_err(|_| {
                                Failure::Client(Error::downstream(
                                    Kind::ClientGone,
                                    "writing an interim answer",
                                ))
                            })?;
                        }
                        continue;
                    }
                    if parts.status == 101 && !ctx.head.upgrade {
                        return Err(Failure::Target(gone("101 without an upgrade request")));
                    }
                    let raw = ubuf.split_to(len).freeze();
                    let mut head = parts.into_head(raw);
                    head.keep_alive &= !cut;
                    return Ok((head, ubuf));
                }
                Ok(None) => {}
                Err(HeadError::TooLarge | HeadError::UriTooLong) => {
                    return Err(Failure::Target(gone("response head too large")))
                }
                Err(HeadError::Malformed(m)) => return Err(Failure::Target(gone(m))),
                Err(HeadError::UnknownCoding) => {
                    return Err(Failure::Target(gone("Unsupported Transfer-Encoding")))
                }
                Err(
                    HeadError::Expectation | HeadError::VersionNotSupported | HeadError::Connect,
                ) => return Err(Failure::Target(gone("malformed response head"))),
            }
        }
        let client = match &mut conn.stream {
            crate::http::conn::Stream::Plain(s) if watch_client => Some(Watched::Plain(s)),
            crate::http::conn::Stream::Tls(t) if watch_client => Some(Watched::Tls(t)),
            _ => None,
        };
        let read = wait_head(client, up, &mut ubuf, deadline, watch_from).await;
        if read.is_ok() {
            // A slow answer's later reads: the client was looked at once already.
            watch_client = false;
        }
        match read {
            Err(Waited::Deadline) => {
                return Err(Failure::Target(Error::upstream(
                    Kind::GatewayTimeout,
                    "waiting for the answer",
                )))
            }
            Err(Waited::ClientGone) => {
                return Err(Failure::Client(Error::downstream(
                    Kind::ClientGone,
                    "closed while the upstream was answering",
                )))
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                let nothing = ubuf.is_empty();
                // The reason where there is one: a TLS upstream's alert (a client
                // certificate it wanted, a protocol it refused) arrives as the first read's
                // error, after a handshake that looked complete.
                let closed = match &read {
                    Ok(Err(e)) => format!("connection failed before a complete answer: {e}"),
                    _ => "connection closed before a complete answer".to_string(),
                };
                // An HTTP/2 stream was sent: a retry on a fresh connection whatever the method
                // only when the upstream says it did not process it (REFUSED_STREAM, GOAWAY);
                // otherwise as a reset of a new connection (an idempotent request retried).
                let h2 = matches!(up, UpStream::H2(_));
                let h2_processed =
                    h2 && !matches!(&read, Ok(Err(e)) if crate::upstream::h2::unprocessed(e));
                // (On a new HTTP/2 connection too: an upstream refusing streams past its
                // limit before its SETTINGS arrived did not process them.)
                return Err(
                    match (nothing && !streamed, (reused || h2) && !h2_processed) {
                        (true, true) => Failure::Stale,
                        (true, false) => Failure::Reset(gone(&closed)),
                        (false, _) => Failure::Target(gone(&closed)),
                    },
                );
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// How long an answer's head is waited for before the client's side is watched too.
const WATCH_CLIENT_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// Why [`wait_head`] stopped waiting.
pub(super) enum Waited {
    /// The route's timeout passed.
    Deadline,
    /// The client closed its side (or reset) while the answer was awaited.
    ClientGone,
}

/// An HTTP/1.1 client's connection, watched while its answer is slow.
enum Watched<'a> {
    Plain(&'a crate::driver::net::TcpStream),
    Tls(&'a mut crate::http::tls::TlsConn),
}

impl Watched<'_> {
    /// Until the client sends something, closes or resets (holding no buffer of its own).
    async fn readable(&mut self) -> std::io::Result<()> {
        match self {
            Watched::Plain(s) => s.readable().await,
            Watched::Tls(t) => t.readable().await,
        }
    }

    /// Once readable: whether the client left (the end of the stream, a reset, TLS's
    /// close_notify, a broken session) rather than sent more (a pipelined request, kept for
    /// its turn: over TLS its records are decrypted now, the plaintext kept in the session).
    async fn left(&mut self) -> bool {
        match self {
            Watched::Plain(s) => s.peer_closed(),
            Watched::Tls(t) => t.left().await,
        }
    }
}

/// Reads more of the answer's head, by `deadline`. Past `watch_from`, an HTTP/1.1 client's
/// connection (`client`) is watched too: a client that closed gets nothing (499), and the
/// answer is not waited for, as nginx does (`proxy_ignore_client_abort off`). Answers within
/// `watch_from` (most) pay nothing for it: the one timer is the deadline's or this. The
/// read is never cut short (a read abandoned could take the answer's bytes with it): the
/// watch races readiness, and the same read goes on.
async fn wait_head(
    client: Option<Watched<'_>>,
    up: &mut UpStream,
    ubuf: &mut BytesMut,
    deadline: Instant,
    watch_from: Instant,
) -> Result<std::io::Result<usize>, Waited> {
    use std::future::Future;
    use std::task::Poll;
    let client = client.filter(|_| watch_from < deadline);
    let mut read = std::pin::pin!(up.read_head_into(ubuf));
    // The first wait: the read and one timer (the deadline's, or the watch's), polled here
    // rather than through a `Timeout` over the pinned read (one layer less per poll).
    let mut first = std::pin::pin!(crate::driver::time::sleep_until(match client {
        Some(_) => watch_from,
        None => deadline,
    }));
    let done = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = read.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        first.as_mut().poll(cx).map(|()| None)
    })
    .await;
    if let Some(r) = done {
        return Ok(r);
    }
    let Some(mut client) = client else {
        return Err(Waited::Deadline);
    };
    let mut until = std::pin::pin!(crate::driver::time::sleep_until(deadline));
    let looked = monoio::select! {
        biased;
        r = &mut read => return Ok(r),
        _ = &mut until => return Err(Waited::Deadline),
        r = client.readable() => r,
    };
    if looked.is_err() || client.left().await {
        return Err(Waited::ClientGone);
    }
    // Bytes from the client (a pipelined request, kept for later): the answer alone now.
    monoio::select! {
        biased;
        r = &mut read => Ok(r),
        _ = &mut until => Err(Waited::Deadline),
    }
}

/// Paces the reads of a request body: each must bring bytes within `limits.body_timeout`;
/// with `limits.body_min_rate`, the whole body must arrive within `body_timeout` plus one
/// second per `body_min_rate` bytes, counted from its first read.
pub(crate) struct BodyClock {
    per_read: std::time::Duration,
    min_rate: u64,
    /// Set at the first read, only when there is a minimum rate (no clock read otherwise).
    started: Option<Instant>,
    received: u64,
}

impl BodyClock {
    pub(crate) fn new(limits: &Limits) -> BodyClock {
        BodyClock {
            per_read: limits.body_timeout,
            min_rate: limits.body_min_rate,
            started: None,
            received: 0,
        }
    }

    /// Reads more of the body into `conn.buf` (room for `want` bytes): the bytes read, or
    /// the error to answer (408 when it stalls or is too slow, the client gone at its end).
    pub(crate) async fn read(&mut self, conn: &mut Conn, want: usize) -> Result<usize, Error> {
        reserve_for(&mut conn.buf, want);
        let mut wait = self.per_read;
        if self.min_rate > 0 {
            let started = *self.started.get_or_insert_with(Instant::now);
            let allowed = self.per_read
                + std::time::Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
            wait = wait.min((started + allowed).saturating_duration_since(Instant::now()));
        }
        match crate::driver::time::timeout(wait, conn.read_more()).await {
            Ok(Ok(n)) if n > 0 => {
                self.received += n as u64;
                Ok(n)
            }
            Ok(_) => Err(Error::downstream(Kind::ClientGone, "reading request body")),
            Err(_) => Err(Error::downstream(Kind::BodyTimeout, "request body")),
        }
    }
}

/// Makes room for up to `want` bytes (capped at MAX_READ), so one read can take them all.
pub(super) fn reserve_for(buf: &mut BytesMut, want: usize) {
    let want = want.clamp(READ_CHUNK, MAX_READ);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

/// How streaming a request body ended.
pub(super) enum BodySent {
    /// All of it went to the upstream.
    All,
    /// The upstream answered (or closed, or stopped taking it) before the end: the rest of
    /// the body was not sent, and the answer is read next.
    Cut,
}

/// Streams the request body from the client to the upstream, as it arrives — until the
/// upstream answers. On plain TCP a second handle on the upstream socket watches for its
/// answer while the body streams (a write that blocks because the upstream stopped reading is
/// then abandoned); on TLS, a failed write ends the body and the answer is read. Interim
/// answers (100 Continue) do not stop the body. A part of the body the upstream does not take
/// within `timeout` (it stopped reading, or its HTTP/2 window stays shut) ends the exchange
/// with 504, as nginx's `proxy_send_timeout` does.
pub(super) async fn stream_request_body(
    conn: &mut Conn,
    ctx: &RequestCtx,
    up: &mut UpStream,
    limits: &Limits,
    timeout: std::time::Duration,
    ubuf: &mut BytesMut,
) -> Result<BodySent, Failure> {
    // A client that stops sending its body, or sends it too slowly, gets 408.
    let max_body = limits.max_body;
    let mut clock = BodyClock::new(limits);
    let mut watch = up.answer_watch();
    match ctx.head.framing {
        Framing::Length(mut remaining) => loop {
            if !conn.buf.is_empty() {
                let k = remaining.min(conn.buf.len() as u64) as usize;
                let part = conn.buf.split_to(k).freeze();
                match watched(&mut watch, ubuf, send_part(up, part, timeout)).await {
                    Some(Ok(true)) => {}
                    Some(Ok(false)) | None => return Ok(BodySent::Cut),
                    Some(Err(e)) => return Err(e),
                }
                remaining -= k as u64;
            }
            if remaining == 0 {
                return Ok(BodySent::All);
            }
            let want = remaining.min(MAX_READ as u64) as usize;
            match watched(&mut watch, ubuf, clock.read(conn, want)).await {
                Some(r) => r.map_err(Failure::Client)?,
                None => return Ok(BodySent::Cut),
            };
        },
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(max_body);
            let mut ranges = Vec::new();
            // Its length unknown: received as much at a time as a read takes.
            conn.expect(MAX_READ as u64);
            loop {
                if !conn.buf.is_empty() {
                    ranges.clear();
                    let k = match dec.feed(&conn.buf, |r| ranges.push(r)) {
                        Ok(k) => k,
                        Err(ChunkError::TooLarge) => {
                            return Err(Failure::Client(Error::downstream(
                                Kind::BodyTooLarge,
                                "chunked body",
                            )))
                        }
                        Err(ChunkError::Malformed) => {
                            return Err(Failure::Client(Error::downstream(
                                Kind::BadRequest("Malformed chunked body"),
                                "chunked body",
                            )))
                        }
                    };
                    // Canonical chunk lines, no extensions, no trailers (see http::body).
                    let mut part = Vec::with_capacity(k + 16 * ranges.len() + 5);
                    reframe(&conn.buf[..k], &ranges, dec.is_done(), &mut part);
                    let _ = conn.buf.split_to(k);
                    match watched(&mut watch, ubuf, send_part(up, part, timeout)).await {
                        Some(Ok(true)) => {}
                        Some(Ok(false)) | None => return Ok(BodySent::Cut),
                        Some(Err(e)) => return Err(e),
                    }
                }
                if dec.is_done() {
                    return Ok(BodySent::All);
                }
                match watched(&mut watch, ubuf, clock.read(conn, READ_CHUNK)).await {
                    Some(r) => r.map_err(Failure::Client)?,
                    None => return Ok(BodySent::Cut),
                };
            }
        }
        Framing::None | Framing::UntilClose => Ok(BodySent::All),
    }
}

/// Writes one part of the body: `Ok(false)` when the upstream failed the write (its answer,
/// if any, is read next), 504 when it took none of it within `timeout`.
async fn send_part<B: monoio::buf::IoBuf + AsRef<[u8]> + Into<bytes::Bytes>>(
    up: &mut UpStream,
    part: B,
    timeout: std::time::Duration,
) -> Result<bool, Failure> {
    match crate::driver::time::timeout(timeout, up.write_all(part)).await {
        Ok(r) => Ok(r.is_ok()),
        Err(_) => Err(Failure::Target(Error::upstream(
            Kind::GatewayTimeout,
            "sending the request body",
        ))),
    }
}

/// Runs one step of the body (a client read, an upstream write) while the watch reads what
/// the upstream says into `ubuf`: `None` once the upstream has begun a final answer (or closed,
/// or failed), with the step abandoned; interim answers are dropped and the step goes on.
async fn watched<T>(
    watch: &mut Option<crate::driver::net::TcpStream>,
    ubuf: &mut BytesMut,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    let Some(w) = watch.as_mut() else {
        return Some(step.await);
    };
    let mut step = std::pin::pin!(step);
    loop {
        // Readiness, not a read, races the step: a read abandoned as the step wins could take
        // the answer's bytes with it. The step is polled first: an upstream answering the
        // whole body answers after the last write completed, and that write counts as done.
        let ready = monoio::select! {
            biased;
            r = &mut step => return Some(r),
            r = w.readable() => r,
        };
        if ready.is_err() {
            return None;
        }
        match crate::http::conn::read_into(w, ubuf).await {
            Ok(n) if n > 0 => {
                if answer_began(ubuf) {
                    // A step that finished meanwhile still counts.
                    return std::future::poll_fn(|cx| match step.as_mut().poll(cx) {
                        std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
                        std::task::Poll::Pending => std::task::Poll::Ready(None),
                    })
                    .await;
                }
            }
            _ => return None,
        }
    }
}

/// Whether `ubuf` holds the start of a final answer: interim heads (100 Continue, 103) are
/// dropped; a malformed head counts (reading the answer then fails it).
fn answer_began(ubuf: &mut BytesMut) -> bool {
    loop {
        match h1::parse_response(ubuf, MAX_RESPONSE_HEAD, false) {
            Ok(Some((len, parts))) if parts.status < 200 && parts.status != 101 => {
                let _ = ubuf.split_to(len);
            }
            Ok(Some(_)) | Err(_) => return true,
            // A head in progress: it begins an answer unless it turns out interim.
            Ok(None) => return false,
        }
    }
}
