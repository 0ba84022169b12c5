//! Streaming the upstream's answer back to the client (and into the cache's [`Tee`]), with
//! the framing re-checked and the connection returned to the pool when it can be reused.

use super::*;
use crate::gateway::compress;
use crate::http::write::Answer;

/// Where the cache collects a body it means to store, as it streams to the client. What it
/// holds counts against `limits.body_memory` with the shard's other answers held whole:
/// past it, the answer is not stored (clients that stop reading each pinned up to
/// `max_entry`, bounded by nothing).
pub(crate) struct Tee {
    pub body: BytesMut,
    pub max: usize,
    held: compress::Held,
    budget: u64,
    /// Set when the body outgrew `max` (then collection stopped).
    pub too_large: bool,
    /// Called with the whole body once it has ended where its framing said (and fit within
    /// `max`), before its last bytes are written to the client.
    pub on_complete: Option<Box<dyn FnOnce(Bytes)>>,
    /// Called once when the body outgrows `max`, before the bytes that did it are written
    /// to the client.
    pub on_too_large: Option<Box<dyn FnOnce()>>,
}

impl Tee {
    pub(crate) fn new(max: usize, expect: usize, budget: u64) -> Tee {
        let cap = expect.min(max);
        // Held as it grows: none of it when the shard's other answers hold the budget (the
        // first push then finds it so).
        let held = compress::Held::for_cache(cap as u64, budget)
            .unwrap_or_else(compress::Held::none_for_cache);
        Tee {
            body: BytesMut::with_capacity(cap),
            max,
            held,
            budget,
            too_large: false,
            on_complete: None,
            on_too_large: None,
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.on_complete.take() {
            if !self.too_large {
                // Stored: the cache's capacity counts it from now on.
                f(std::mem::take(&mut self.body).freeze());
                self.held.shrink(0);
            }
        }
    }

    fn push(&mut self, b: &[u8]) {
        if self.too_large {
            return;
        }
        let need = (self.body.len() + b.len()) as u64;
        let more = need.saturating_sub(self.held.bytes());
        let fits = more == 0 || self.held.grow(more, self.budget);
        if self.body.len() + b.len() > self.max || !fits {
            self.too_large = true;
            self.body = BytesMut::new();
            self.held.shrink(0);
            self.on_complete = None;
            if let Some(f) = self.on_too_large.take() {
                f();
            }
            return;
        }
        self.body.extend_from_slice(b);
    }
}

/// Streams the upstream's answer to the client (and into `tee`, when the cache wants it).
pub(crate) async fn answer(
    shard: &Rc<Shard>,
    conn: &mut Conn,
    ctx: &mut RequestCtx,
    integ: &HttpIntegration,
    ex: Exchange,
    tee: Option<&mut Tee>,
) -> Result<Next, Error> {
    let Exchange {
        target,
        eject,
        cfg,
        mut up,
        resp,
        mut ubuf,
    } = ex;
    let _inflight = InFlight::new(target.clone());
    // A big answer (or one of unknown length) marks its target: from now on its connections
    // receive one buffer per operation; a connection of a target that answers small goes
    // back to multishot receives.
    // An upgrade's relay may carry anything, for as long as it lasts: bounded too.
    let big = resp.status == 101
        || match resp.framing {
            Framing::Length(n) => n > crate::upstream::BIG_ANSWER,
            Framing::None => false,
            Framing::Chunked | Framing::UntilClose => true,
        };
    if big && resp.status != 101 && !target.big.get() {
        target.big.set(true);
    }
    up.set_bounded(big || target.big.get());

    // The answer's framing towards the client.
    let minor = ctx.head.minor;
    let upgrade = resp.status == 101 && ctx.head.upgrade;
    let dechunk = resp.framing == Framing::Chunked && minor == 0;
    let rechunk = super::rewrite::rechunked(&resp, ctx, upgrade);
    let client_framed =
        upgrade || rechunk || !matches!(resp.framing, Framing::UntilClose) && !dechunk;
    let keep = ctx.head.keep_alive
        && ctx.body == BodyState::Done
        && client_framed
        && !upgrade
        && !shard.drain.is_on();

    let mut out = Vec::with_capacity(resp.raw.len() + 128);
    // An integration response: the whole answer is read, then rendered.
    if let (Some((t, vars)), false) = (ctx.transform.take(), upgrade) {
        // Here and below, outside the relay: no ring buffer held while the client is waited on.
        up.settle(&mut ubuf);
        let Some(mut body) = read_whole(&mut up, &mut ubuf, resp.framing, integ.timeout).await
        else {
            record_failure(&target, eject.as_deref(), &cfg);
            return Err(Error::upstream(
                Kind::BadGateway,
                "integration answer unreadable or over 10 MiB",
            ));
        };
        // The answer and what it renders to are held until the client takes them: within
        // `limits.body_memory`, with the shard's other answers held whole (slow clients each
        // pinning up to three copies of a 10 MiB answer were bounded by nothing).
        let budget = shard.snapshot().snap.limits.body_memory;
        let Some(mut held) = compress::Held::take(2 * body.len() as u64, budget) else {
            return Err(Error::downstream(
                Kind::BodiesOverBudget,
                "limits.body_memory: the shard holds as many answers whole as it may",
            ));
        };
        // Templates read the answer decoded (an integration that encodes it anyway); an empty
        // one (a HEAD's, a 204's) has nothing to decode.
        let decoded = if body.is_empty() {
            std::borrow::Cow::Borrowed(&body[..])
        } else {
            compress::decode_request(
                resp.headers()
                    .filter(|(n, _)| name_eq(n, b"content-encoding"))
                    .map(|(_, v)| v),
                &body,
                MAX_TRANSFORMED as u64,
            )
            .map_err(|_| {
                Error::upstream(
                    Kind::BadGateway,
                    "integration answer in a Content-Encoding other than gzip or br, corrupt, or over 10 MiB decoded",
                )
            })?
        };
        let answered = super::super::transform::Answered {
            status: resp.status,
            headers: resp.headers().collect(),
            body: &decoded,
            json: None,
        };
        let head_only = ctx.head.method == crate::syntax::Method::Head;
        let rendered = super::super::transform::respond(&t, &vars, answered)?;
        drop(decoded);
        let mut a = match rendered {
            Some(a) => a,
            // A HEAD's answer as it came says the length a GET's would have.
            None => as_it_came(&resp, std::mem::take(&mut body), head_only),
        };
        ctx.status = a.status;
        let extra = super::super::finish::answer_lines(ctx, &mut a);
        a.render(
            &mut out,
            minor,
            ctx.request_id.as_str(),
            &extra,
            keep,
            head_only,
        );
        // Only what goes out is held while the client takes it: all of it, when the template
        // wrote more than it read.
        drop((a, body));
        let out_len = out.len() as u64;
        if out_len > held.bytes() && !held.grow(out_len - held.bytes(), budget) {
            return Err(Error::downstream(
                Kind::BodiesOverBudget,
                "limits.body_memory: the shard holds as many answers whole as it may",
            ));
        }
        held.shrink(out_len);
        if !keep {
            conn.fin_after_next_write();
        }
        conn.write_all(out)
            .await
            .map_err(|_| Error::downstream(Kind::ClientGone, "writing answer"))?;
        if resp.keep_alive
            && resp.framing != Framing::UntilClose
            && ctx.body == BodyState::Done
            && ubuf.is_empty()
        {
            checkin(&target, &cfg, up);
        }
        return Ok(if keep { Next::KeepAlive } else { Next::Close });
    }
    // On a compressing stage, a compressible answer of known length is read whole and sent
    // compressed to a client that takes it.
    let head_only = ctx.head.method == crate::syntax::Method::Head;
    let declared = match resp.framing {
        Framing::Length(n) => Some(n),
        // A HEAD's answer says the length of what a GET would get.
        _ if head_only => resp
            .headers()
            .find(|(n, _)| name_eq(n, b"content-length"))
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse().ok()),
        _ => None,
    };
    let comp = match (&ctx.compress, declared) {
        (Some((c, enc)), Some(n))
            if !upgrade && compress::eligible(c, resp.status, resp.headers(), n as usize) =>
        {
            Some((c.clone(), *enc, n as usize))
        }
        _ => None,
    };
    // The plain body and its coded copy are held until the client takes them: a shard's
    // answers held so stay within `limits.body_memory`; one over it goes as it came (the
    // answer still says it varies by Accept-Encoding).
    let mut held = None;
    let comp = match comp {
        Some((c, Some(enc), n)) if !head_only => {
            let budget = shard.snapshot().snap.limits.body_memory;
            match compress::Held::take(2 * n as u64, budget) {
                Some(h) => {
                    held = Some(h);
                    Some((c, Some(enc), n))
                }
                None => Some((c, None, n)),
            }
        }
        other => other,
    };
    if let (Some((c, Some(enc), n)), false) = (&comp, head_only) {
        let (c, enc, n) = (c.clone(), *enc, *n);
        up.settle(&mut ubuf);
        while ubuf.len() < n {
            let want = n - ubuf.len();
            reserve_for(&mut ubuf, want);
            match crate::driver::time::timeout(integ.timeout, up.read_into(&mut ubuf)).await {
                Ok(Ok(k)) if k > 0 => {}
                _ => {
                    record_failure(&target, eject.as_deref(), &cfg);
                    return Err(Error::upstream(Kind::BadGateway, "answer ended early"));
                }
            }
        }
        let body = ubuf.split_to(n).freeze();
        if let Some(t) = tee {
            t.push(&body);
            t.finish();
        }
        let z = compress::compress(&c, enc, &body);
        // Only the coded copy is held while the client takes it (it was copied behind the
        // head, and the plain body kept too): the body shares the read buffer's allocation,
        // so that goes as well (what followed the body only decides the connection's reuse).
        drop(body);
        let rest_empty = ubuf.is_empty();
        drop(std::mem::take(&mut ubuf));
        if let Some(h) = held.as_mut() {
            h.shrink(z.len() as u64);
        }
        ctx.status = response_head(
            &mut out,
            &resp,
            ctx,
            (keep, upgrade, dechunk),
            Comp::Encoded(enc, Some(z.len())),
        );
        if !keep {
            conn.fin_after_next_write();
        }
        conn.write_head_body(out, z.into())
            .await
            .map_err(|_| Error::downstream(Kind::ClientGone, "writing answer"))?;
        drop(held);
        if resp.keep_alive && ctx.body == BodyState::Done && rest_empty {
            checkin(&target, &cfg, up);
        }
        return Ok(if keep { Next::KeepAlive } else { Next::Close });
    }
    // A HEAD says what a GET would get: the coding, the weak ETag, and no length (the
    // compressed one is not known without the body).
    let comp = match comp {
        Some((_, Some(enc), _)) => Comp::Encoded(enc, None),
        Some(_) => Comp::Vary,
        None if resp.status == 304 && ctx.compress.is_some() && weak_revalidation(ctx, &resp) => {
            Comp::Revalidated
        }
        None => Comp::No,
    };
    ctx.status = response_head(&mut out, &resp, ctx, (keep, upgrade, dechunk), comp);
    if upgrade {
        up.settle(&mut ubuf);
        conn.write_all(out)
            .await
            .map_err(|_| Error::downstream(Kind::ClientGone, "writing 101"))?;
        return Ok(Next::Upgrade(up, ubuf.freeze()));
    }

    let from = UpBody {
        up: &mut up,
        buf: &mut ubuf,
        idle: integ.timeout,
    };
    let framing = (resp.framing, dechunk, rechunk);
    let streamed = stream_response(conn, from, out, framing, tee, !keep).await;
    let pool_ok = match streamed {
        Ok(clean) => clean && resp.keep_alive && ctx.body == BodyState::Done && ubuf.is_empty(),
        Err(side) => {
            // The status went out with the head; what cut the body is in the log's error
            // fields (`integrationError` for the upstream's side).
            ctx.failure = Some(match side {
                Side::Client => Error::downstream(
                    Kind::ClientGone,
                    "the client did not take the whole answer (closed, reset, or past send_timeout)",
                ),
                Side::Upstream => Error::upstream(
                    Kind::BadGateway,
                    format!("{}: the answer ended part way", target.addr),
                ),
            });
            if side == Side::Upstream {
                if let crate::http::conn::Stream::H2(s) = &mut conn.stream {
                    s.cut();
                }
                record_failure(&target, eject.as_deref(), &cfg);
                if shard.log_first("upstream failed mid-answer", Some(target.addr), 0) {
                    tracing::warn!(request_id = %ctx.request_id, target_addr = %target.addr, "upstream failed mid-answer; closing client connection");
                }
            }
            return Ok(Next::Close);
        }
    };
    if pool_ok {
        checkin(&target, &cfg, up);
    }
    Ok(if keep { Next::KeepAlive } else { Next::Close })
}

/// Buffers taken for one vectored send to the client.
const RELAY_BATCH: usize = 16;
/// The same while the client is behind (its last send waited): what it has not taken is held
/// on the heap then, and this bounds it (with the receive's own queue) per connection.
const RELAY_BATCH_BEHIND: usize = 2;

thread_local! {
    /// The last answer's relay batch, empty, kept for its vectors' capacity: the next answer
    /// on this shard takes it instead of allocating two vectors (at most one is kept).
    static SPARE_BATCH: std::cell::RefCell<Option<crate::rt::net::RecvBufs>> =
        const { std::cell::RefCell::new(None) };
}

/// An answer of known length on Tollgate's own runtime with plain TCP on both sides: the
/// head (and the few body bytes read with it) goes out with the body's first buffers, and each
/// buffer the upstream's bytes arrived in is sent to the client as it is, what has arrived
/// at once in one vectored send (the kernel copies out of the ring; nothing is copied here).
/// Bytes past the body stay in `ubuf` (the connection is then not pooled).
async fn relay_received(
    conn: &mut Conn,
    up: &crate::rt::net::TcpStream,
    head: Vec<u8>,
    mut remaining: u64,
    ubuf: &mut BytesMut,
    idle: std::time::Duration,
    last: bool,
) -> Result<bool, Side> {
    use crate::rt::{net::RecvBufs, RecvBuf};
    // One batch for the whole answer: each send gives it back empty.
    let mut batch = SPARE_BATCH
        .with(|s| s.borrow_mut().take())
        .unwrap_or_else(|| RecvBufs::new(Vec::with_capacity(RELAY_BATCH)));
    batch.push(RecvBuf::heap(head));
    let mut cap = RELAY_BATCH;
    loop {
        let mut take = |mut b: RecvBuf, remaining: &mut u64, batch: &mut RecvBufs| {
            if b.len() as u64 > *remaining {
                let k = *remaining as usize;
                ubuf.extend_from_slice(&b[k..]);
                b.truncate(k);
            }
            *remaining -= b.len() as u64;
            batch.push(b);
        };
        // What already arrived goes with what is waiting to be sent.
        while remaining > 0 && batch.count() < cap {
            match up.try_recv() {
                Some(b) => take(b, &mut remaining, &mut batch),
                None => break,
            }
        }
        if batch.count() == 0 {
            match crate::driver::time::timeout(idle, up.recv()).await {
                Ok(Ok(Some(b))) => take(b, &mut remaining, &mut batch),
                _ => return Err(Side::Upstream),
            }
            continue;
        }
        if remaining == 0 && last {
            conn.fin_after_next_write();
        }
        let behind;
        (batch, behind) = conn.send_received(batch).await.map_err(|_| Side::Client)?;
        cap = if behind {
            RELAY_BATCH_BEHIND
        } else {
            RELAY_BATCH
        };
        if remaining == 0 {
            // Empty (each send gives it back cleared): no received buffer is kept with it.
            SPARE_BATCH.with(|s| *s.borrow_mut() = Some(batch));
            return Ok(true);
        }
    }
}

/// The most read at once from an upstream for an HTTP/2 client (its default window).
const H2_READ: usize = 64 << 10;

/// Body bytes copied behind an answer's head (one write, one buffer); more go out from their
/// own memory beside it (one writev, no copy).
const COPY_BEHIND_HEAD: usize = 4 << 10;

/// The most of an integration's answer read for an integration response (Amazon API
/// Gateway's payload limit).
const MAX_TRANSFORMED: usize = 10 << 20;

/// The whole body of an answer, by its framing (`None`: it failed or is over 10 MiB).
async fn read_whole(
    up: &mut UpStream,
    ubuf: &mut BytesMut,
    framing: Framing,
    idle: std::time::Duration,
) -> Option<Vec<u8>> {
    async fn more(
        up: &mut UpStream,
        ubuf: &mut BytesMut,
        idle: std::time::Duration,
    ) -> Option<usize> {
        reserve_for(ubuf, READ_CHUNK);
        match crate::driver::time::timeout(idle, up.read_into(ubuf)).await {
            Ok(Ok(n)) => Some(n),
            _ => None,
        }
    }
    match framing {
        Framing::None => Some(Vec::new()),
        Framing::Length(n) => {
            let n = usize::try_from(n).ok().filter(|n| *n <= MAX_TRANSFORMED)?;
            while ubuf.len() < n {
                if more(up, ubuf, idle).await? == 0 {
                    return None;
                }
            }
            Some(ubuf.split_to(n).to_vec())
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::new(MAX_TRANSFORMED as u64);
            let mut body = Vec::new();
            loop {
                let mut ranges = Vec::new();
                let k = dec.feed(ubuf, |r| ranges.push(r)).ok()?;
                for r in ranges {
                    body.extend_from_slice(&ubuf[r]);
                }
                let _ = ubuf.split_to(k);
                if dec.is_done() {
                    return Some(body);
                }
                if more(up, ubuf, idle).await? == 0 {
                    return None;
                }
            }
        }
        Framing::UntilClose => loop {
            if ubuf.len() > MAX_TRANSFORMED {
                return None;
            }
            if more(up, ubuf, idle).await? == 0 {
                return Some(ubuf.split().to_vec());
            }
        },
    }
}

/// An answer no integration response matched: as the integration gave it.
fn as_it_came(resp: &ResponseHead, body: Vec<u8>, keep_length: bool) -> Answer {
    let mut headers = Vec::new();
    for (n, v) in resp.headers() {
        if hop_by_hop(n)
            || (name_eq(n, b"content-length") && !keep_length)
            || name_eq(n, b"x-request-id")
        {
            continue;
        }
        headers.extend_from_slice(n);
        headers.extend_from_slice(b": ");
        headers.extend_from_slice(v);
        headers.extend_from_slice(b"\r\n");
    }
    Answer {
        status: resp.status,
        headers,
        content_type: None,
        body,
        ratelimit: true,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Upstream,
}

/// Where an answer's body comes from: the upstream connection, the bytes already read from
/// it, and how long a read may wait (the integration's timeout).
pub(super) struct UpBody<'a> {
    pub up: &'a mut UpStream,
    pub buf: &'a mut BytesMut,
    pub idle: std::time::Duration,
}

/// Writes the head and streams the body. `Ok(true)`: the body ended where its framing said.
/// `last`: the connection closes after this answer (its last write takes the FIN along, see
/// [`Conn::fin_after_next_write`]).
pub(super) async fn stream_response(
    conn: &mut Conn,
    from: UpBody<'_>,
    mut out: Vec<u8>,
    (framing, dechunk, rechunk): (Framing, bool, bool),
    mut tee: Option<&mut Tee>,
    last: bool,
) -> Result<bool, Side> {
    let UpBody {
        up,
        buf: ubuf,
        idle,
    } = from;
    async fn fill(
        up: &mut UpStream,
        ubuf: &mut BytesMut,
        idle: std::time::Duration,
    ) -> Result<usize, Side> {
        match crate::driver::time::timeout(idle, up.read_into(ubuf)).await {
            Ok(Ok(n)) => Ok(n),
            _ => Err(Side::Upstream),
        }
    }
    let relay = matches!(framing, Framing::Length(_))
        && tee.is_none()
        && conn.own_plain().is_some()
        && up.own_plain().is_some();
    if !relay {
        up.settle(ubuf);
    }
    // An HTTP/2 stream sends what its client's window allows: reads the size of a default
    // window, so that a stream whose client opens none holds that much, not MAX_READ.
    let max_read = if conn.stream.is_h2() {
        H2_READ
    } else {
        MAX_READ
    };
    match framing {
        Framing::None => {
            if let Some(t) = tee {
                t.finish();
            }
            if last {
                conn.fin_after_next_write();
            }
            conn.write_all(out).await.map_err(|_| Side::Client)?;
            Ok(true)
        }
        Framing::Length(n) => {
            let mut remaining = n;
            if let (true, Some(u)) = (relay, up.own_plain()) {
                // The few body bytes read with the head (see `read_head_into`) go behind it.
                let k = remaining.min(ubuf.len() as u64) as usize;
                out.extend_from_slice(&ubuf[..k]);
                let _ = ubuf.split_to(k);
                return relay_received(conn, u, out, remaining - k as u64, ubuf, idle, last).await;
            }
            // Head and what is already read of the body leave in one write: a small body
            // copied behind the head, a bigger one from its own memory (one writev).
            let k = remaining.min(ubuf.len() as u64) as usize;
            let mut first = None;
            if k <= COALESCE_BODY {
                if let Some(t) = tee.as_deref_mut() {
                    t.push(&ubuf[..k]);
                }
                if k <= COPY_BEHIND_HEAD {
                    out.extend_from_slice(&ubuf[..k]);
                    let _ = ubuf.split_to(k);
                } else {
                    first = Some(ubuf.split_to(k).freeze());
                }
                remaining -= k as u64;
            }
            if remaining == 0 {
                if let Some(t) = tee.as_deref_mut() {
                    t.finish();
                }
                if last {
                    conn.fin_after_next_write();
                }
            }
            match first {
                Some(body) => conn.write_head_body(out, body).await,
                None => conn.write_all(out).await,
            }
            .map_err(|_| Side::Client)?;
            loop {
                if !ubuf.is_empty() && remaining > 0 {
                    let k = remaining.min(ubuf.len() as u64) as usize;
                    let part = ubuf.split_to(k).freeze();
                    remaining -= k as u64;
                    if let Some(t) = tee.as_deref_mut() {
                        t.push(&part);
                        if remaining == 0 {
                            t.finish();
                        }
                    }
                    if remaining == 0 && last {
                        conn.fin_after_next_write();
                    }
                    conn.write_all(part).await.map_err(|_| Side::Client)?;
                }
                if remaining == 0 {
                    return Ok(true);
                }
                reserve_for(ubuf, remaining.min(max_read as u64) as usize);
                if fill(up, ubuf, idle).await? == 0 {
                    return Err(Side::Upstream);
                }
            }
        }
        Framing::Chunked => {
            conn.write_all(out).await.map_err(|_| Side::Client)?;
            let mut dec = ChunkedDecoder::new(u64::MAX);
            loop {
                if !ubuf.is_empty() {
                    let mut ranges: smallvec::SmallVec<[std::ops::Range<usize>; 4]> =
                        Default::default();
                    let k = dec
                        .feed(ubuf, |r| ranges.push(r))
                        .map_err(|_| Side::Upstream)?;
                    let part = ubuf.split_to(k).freeze();
                    if let Some(t) = tee.as_deref_mut() {
                        for r in &ranges {
                            t.push(&part[r.clone()]);
                        }
                        if dec.is_done() {
                            t.finish();
                        }
                    }
                    if dechunk {
                        for r in ranges {
                            conn.write_all(part.slice(r))
                                .await
                                .map_err(|_| Side::Client)?;
                        }
                    } else {
                        conn.write_all(part).await.map_err(|_| Side::Client)?;
                    }
                }
                if dec.is_done() {
                    return Ok(true);
                }
                if fill(up, ubuf, idle).await? == 0 {
                    return Err(Side::Upstream);
                }
            }
        }
        Framing::UntilClose => {
            conn.write_all(out).await.map_err(|_| Side::Client)?;
            loop {
                if !ubuf.is_empty() {
                    let part = ubuf.split().freeze();
                    if rechunk {
                        let mut size = Vec::with_capacity(12);
                        let _ = std::io::Write::write_fmt(
                            &mut size,
                            format_args!("{:x}\r\n", part.len()),
                        );
                        conn.write_all(size).await.map_err(|_| Side::Client)?;
                        conn.write_all(part).await.map_err(|_| Side::Client)?;
                        conn.write_all(&b"\r\n"[..])
                            .await
                            .map_err(|_| Side::Client)?;
                    } else {
                        conn.write_all(part).await.map_err(|_| Side::Client)?;
                    }
                }
                if fill(up, ubuf, idle).await? == 0 {
                    // (Never stored: a body ended by close is not teed.)
                    if rechunk {
                        conn.write_all(&b"0\r\n\r\n"[..])
                            .await
                            .map_err(|_| Side::Client)?;
                    }
                    return Ok(false);
                }
            }
        }
    }
}

/// Whether a 304 answers a client revalidating the weak form (`W/"v1"`) of the upstream's
/// strong ETag (`"v1"`): the weak one is what the gateway said of the answer it compressed,
/// and what the 304 says too.
fn weak_revalidation(ctx: &RequestCtx, resp: &ResponseHead) -> bool {
    let Some(tag) = resp
        .headers()
        .find(|(n, _)| name_eq(n, b"etag"))
        .map(|(_, v)| v.trim_ascii())
    else {
        return false;
    };
    if tag.starts_with(b"W/") {
        return false;
    }
    ctx.head
        .headers()
        .filter(|(n, _)| name_eq(n, b"if-none-match"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|t| t.len() == tag.len() + 2 && t.starts_with(b"W/") && &t[2..] == tag)
}

#[cfg(test)]
mod tests {
    use super::Tee;

    /// Bodies collected for the cache count against the shard's budget: past it, the next
    /// answer's is given up (not stored), and what a tee held goes back when it is done.
    #[test]
    fn tees_hold_within_the_budget() {
        let budget = 100 << 10;
        let chunk = vec![b'x'; 10 << 10];
        let mut a = Tee::new(1 << 20, 0, budget);
        for _ in 0..8 {
            a.push(&chunk);
        }
        assert!(!a.too_large);
        let mut b = Tee::new(1 << 20, 0, budget);
        b.push(&chunk);
        b.push(&chunk);
        assert!(!b.too_large);
        // 100 KiB held between them: the next chunk does not fit.
        b.push(&chunk);
        assert!(b.too_large && b.body.is_empty());
        // A tee alone on its shard always grows.
        drop(b);
        for _ in 0..20 {
            a.push(&chunk);
        }
        assert!(!a.too_large && a.body.len() == 28 * chunk.len());
        drop(a);
        let mut c = Tee::new(1 << 20, 0, budget);
        for _ in 0..10 {
            c.push(&chunk);
        }
        assert!(!c.too_large);
    }
}
