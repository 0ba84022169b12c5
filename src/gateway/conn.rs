//! Client connections: the HTTP/1.1 keep-alive loop (with the TLS handshake, mTLS fields, and
//! the hand-over to HTTP/2 by ALPN or the h2c preface), and each HTTP/2 stream, both feeding
//! [`super::handle`]. The protocol work itself (heads, frames, the HTTP/2 connection) is in
//! [`crate::http`]; this is where the gateway plugs its pipeline into it.

use std::cell::RefCell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;

use crate::driver::net::TcpStream;
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};

use super::{finish, Next};
use crate::http::conn::{
    linger_close, read_head, sniff_preface, ClientCertHeaders, Conn, HeadRead, Stream, READ_CHUNK,
};
use crate::http::h1;
use crate::http::h2::stream::{peek_body, H2Stream, Out, Peeked};
use crate::http::h2::{ConnInfo, StreamHandler};
use crate::metrics::Counter;
use crate::shard::Shard;

/// Serves one client connection until it closes, errs, or the shard drains; `guard` is
/// dropped at the end.
pub(crate) fn serve<G: 'static>(
    shard: Rc<Shard>,
    guard: G,
    stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
) -> impl std::future::Future<Output = ()> {
    // The opening (TLS handshake, client certificate, protocol choice; HTTP/2 is served from
    // there) is on the heap once per connection: the task then holds only the keep-alive
    // loop's state while the connection idles. It is made here, outside the task's future:
    // an async fn keeps its arguments for as long as it runs, and the socket and the address
    // (120 bytes) would stay in every idle connection's task.
    let opening = crate::memory::boxed(|| open(shard.clone(), stream, peer, listener));
    keep_alive(shard, guard, opening)
}

/// The HTTP/1.1 keep-alive loop of a connection being opened by `opening`.
async fn keep_alive<G>(
    shard: Rc<Shard>,
    _guard: G,
    opening: std::pin::Pin<Box<impl std::future::Future<Output = Option<Conn>>>>,
) {
    let Some(mut conn) = opening.await else {
        return;
    };
    let shard = &shard;
    // The HTTP/1.1 keep-alive loop: one request at a time, each through the pipeline.
    let mut first = true;
    loop {
        let (max, header_timeout, idle) = {
            let l = &shard.snapshot().snap.limits;
            conn.send_timeout = l.send_timeout;
            (l.max_header_bytes, l.header_timeout, l.idle_timeout)
        };
        // One request, on the heap for its length: the pipeline's future is large
        // (kilobytes), and an idle connection's task holds only this loop's own state (the
        // head is moved into the box before anything waits on it).
        let consumed = conn.consumed();
        let request = {
            let read = read_head(&shard.drain, &mut conn, max, header_timeout, idle, first).await;
            crate::memory::boxed(|| request(shard, &mut conn, read))
        };
        first = false;
        let Some(next) = request.await else {
            return;
        };
        conn.expect(conn.consumed().saturating_sub(consumed).saturating_mul(4));
        match next {
            // An answer that promised keep-alive keeps it through a soft drain (a successor
            // took over): the next request is answered with `Connection: close`.
            Next::KeepAlive if !shard.drain.is_on() || shard.drain.is_soft() => continue,
            Next::KeepAlive | Next::Close => {
                // TLS: say close_notify, so the client knows the answer was complete.
                if conn.stream.is_tls() {
                    Box::pin(conn.shutdown()).await;
                } else {
                    conn.stream.fin_now();
                }
                return;
            }
            Next::Linger => return Box::pin(linger_close(conn)).await,
            Next::WebSocket(session) => {
                shard.metrics.add(crate::metrics::Counter::Upgrades);
                return Box::pin(super::ws::run(shard, conn, session)).await;
            }
            Next::Upgrade(upstream, leftover) => {
                shard.metrics.add(crate::metrics::Counter::Upgrades);
                let idle = shard.snapshot().snap.limits.upgrade_idle_timeout;
                if Box::pin(super::proxy::relay(conn, upstream, leftover, idle)).await {
                    shard
                        .metrics
                        .add(crate::metrics::Counter::UpgradeIdleTimeouts);
                }
                return;
            }
        }
    }
}

/// Opens a connection: `Some` for an HTTP/1.1 one, `None` when it was served as HTTP/2 or
/// failed to open.
async fn open(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: usize,
) -> Option<Conn> {
    // TCP_NODELAY is inherited from the listening socket (listener.rs): no syscall here.
    let ss = shard.snapshot();
    let tls = ss.snap.tls.get(listener).cloned().flatten();
    let l = ss.snap.config.listeners.get(listener);
    let mtls = l
        .and_then(|l| l.tls.as_ref())
        .and_then(|t| t.mtls.as_ref())
        .map(|m| m.headers.clone());
    // The names any listener's `mtls.headers` forwards: a client's own headers of those
    // names are dropped on every listener, so that one without mTLS serving the same API
    // cannot hand the upstream a certificate's field of its own making.
    let cert_names: Vec<String> = ss
        .snap
        .config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref()?.mtls.as_ref())
        .flat_map(|m| m.headers.iter().map(|(n, _)| n.clone()))
        .collect();
    let handshake_timeout = ss.snap.limits.header_timeout;
    let h2c = l.is_some_and(|l| l.h2c);
    let proxy_protocol = l.is_some_and(|l| l.proxy_protocol);
    // Only a PROXY-protocol listener asks whether the peer is a trusted proxy.
    let trusted = proxy_protocol
        && ss
            .snap
            .config
            .server
            .trusted_proxies
            .iter()
            .any(|c| c.contains(peer.ip()));
    drop(ss);
    // A PROXY protocol header names the client; only a trusted proxy is believed.
    let (stream, peer, read) = if proxy_protocol {
        match Box::pin(crate::driver::time::timeout(
            handshake_timeout,
            proxy_header(stream),
        ))
        .await
        {
            Ok(Ok((stream, source, read))) => {
                let client = match source {
                    Some(s) if trusted => s,
                    Some(s) => {
                        tracing::debug!(peer = %peer, named = %s, "PROXY header from a peer not in server.trusted_proxies: ignored");
                        peer
                    }
                    None => peer,
                };
                (stream, client, read)
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "connection refused");
                return None;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "no PROXY protocol header in time");
                return None;
            }
        }
    } else {
        (stream, peer, Vec::new())
    };
    let (tls_read, plain_read) = if tls.is_some() {
        (read, Vec::new())
    } else {
        (Vec::new(), read)
    };
    let stream = match &tls {
        None => Stream::Plain(stream),
        Some(cfg) => {
            // Once per connection, on the heap: the handshake's state (and its timer) is
            // large and the connection's task should not carry it while idle.
            match Box::pin(crate::driver::time::timeout(
                handshake_timeout,
                crate::http::tls::TlsConn::accept_after(stream, cfg.config.clone(), tls_read),
            ))
            .await
            {
                Ok(Ok(t)) => {
                    shard.metrics.add(crate::metrics::Counter::TlsHandshakes);
                    if t.tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                        shard.metrics.add(crate::metrics::Counter::TlsResumptions);
                    }
                    Stream::Tls(Box::new(t))
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    shard
                        .metrics
                        .add(crate::metrics::Counter::TlsHandshakeFailures);
                    return None;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    shard
                        .metrics
                        .add(crate::metrics::Counter::TlsHandshakeFailures);
                    return None;
                }
            }
        }
    };
    let client_cert = match (&stream, mtls) {
        (Stream::Tls(t), Some(fields)) => {
            let chain = t.tls.peer_certificates();
            let refused = tls
                .as_ref()
                .and_then(|l| l.clients.as_ref())
                .and_then(|c| c.refusal(chain));
            if let Some(why) = &refused {
                tracing::debug!(peer = %peer, reason = %why, "client certificate refused: requests answered 403");
            }
            // Every connection of an mTLS listener is judged again as its verdict ages (one
            // without a certificate too: `mode` may become "required").
            let recheck = Some(Rc::new(crate::tls::client_auth::Recheck::new(
                chain.unwrap_or_default(),
                refused.clone(),
            )));
            // The fields of the certificate sent, whatever the verdict (which alone decides
            // whether a request is served): a verdict that turns to accepted serves them.
            let values = chain
                .and_then(|c| c.first())
                .map(|c| crate::tls::cert_fields(c));
            let lines = values
                .as_deref()
                .map(|v| crate::tls::client_cert_headers(v, &fields))
                .unwrap_or_default();
            Some(ClientCertHeaders {
                lines: Rc::from(lines),
                names: fields
                    .into_iter()
                    .map(|(n, _)| n)
                    .chain(cert_names)
                    .collect(),
                fields: values.map(Rc::from),
                refused,
                recheck,
            })
        }
        _ if !cert_names.is_empty() => Some(ClientCertHeaders {
            lines: Rc::from(Vec::new()),
            names: cert_names.into(),
            fields: None,
            refused: None,
            recheck: None,
        }),
        _ => None,
    };
    let info = |client_cert, tls_version: Option<&'static str>| crate::http::h2::ConnInfo {
        peer,
        listener,
        peer_ip: crate::http::conn::ip_text(peer.ip()),
        tls: tls_version.is_some(),
        tls_version,
        client_cert,
    };
    let stream = match stream {
        Stream::Tls(t) if t.tls.alpn_protocol() == Some(b"h2") => {
            let v = crate::http::conn::tls_version_name(t.tls.protocol_version()).or(Some("TLS"));
            let info = info(client_cert, v);
            Box::pin(serve_h2(shard, crate::http::h2::Transport::Tls(t), info)).await;
            return None;
        }
        s => s,
    };
    // Bytes after a PROXY header on a plain listener are the start of the first request.
    let mut buf = BytesMut::with_capacity(READ_CHUNK.max(plain_read.len()));
    buf.extend_from_slice(&plain_read);
    let mut conn = Conn::new(stream, buf, peer, listener);
    conn.client_cert = client_cert;
    if h2c {
        match Box::pin(sniff_preface(&mut conn, handshake_timeout)).await {
            Some(true) => {
                // The certificate headers' names go too: a client's own are dropped on h2c
                // as on every listener (an upstream would take them as a verified identity).
                let Conn {
                    stream,
                    buf,
                    client_cert,
                    ..
                } = conn;
                if let Stream::Plain(tcp) = stream {
                    let t = crate::http::h2::Transport::Plain(tcp, buf.freeze());
                    Box::pin(serve_h2(shard, t, info(client_cert, None))).await;
                }
                return None;
            }
            Some(false) => {}
            None => return None,
        }
    }
    Some(conn)
}

/// Reads a PROXY protocol header from the start of the connection: the client it names, and
/// what was read after it.
async fn proxy_header(
    mut stream: TcpStream,
) -> Result<(TcpStream, Option<SocketAddr>, Vec<u8>), String> {
    use monoio::io::AsyncReadRent;
    let mut got: Vec<u8> = Vec::with_capacity(256);
    loop {
        match crate::http::proxy_protocol::parse(&got) {
            Ok(crate::http::proxy_protocol::Header::Done { len, source }) => {
                return Ok((stream, source, got.split_off(len)));
            }
            Ok(crate::http::proxy_protocol::Header::Incomplete) => {}
            Err(e) => return Err(e.to_string()),
        }
        let (r, buf) = stream.read(Vec::with_capacity(2048)).await;
        match r {
            Ok(0) => return Err("closed before a PROXY protocol header".into()),
            Ok(_) => got.extend_from_slice(&buf),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Answers what [`read_head`] brought: the request through the pipeline, or the refusal of a
/// bad head. `None`: the connection is done.
async fn request(shard: &Rc<Shard>, conn: &mut Conn, read: HeadRead) -> Option<Next> {
    match read {
        HeadRead::Head(head) => Some(super::handle(shard, shard.snapshot(), conn, head).await),
        HeadRead::Closed => None,
        HeadRead::Failed(e) => {
            tracing::debug!(peer = %conn.peer, error = %e, "bad request head");
            finish::head_error(shard, conn, &e)
                .await
                .then_some(Next::Linger)
        }
    }
}

/// Runs one stream through the pipeline.
async fn run_stream(
    shard: Rc<Shard>,
    info: Rc<ConnInfo>,
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let ss = shard.snapshot();
    let (parts, mut recv) = req.into_parts();
    let mut end = recv.is_end_stream();
    let websocket = parts.method == http::Method::CONNECT
        && parts
            .extensions
            .get::<h2::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    if parts.method == http::Method::CONNECT && !websocket {
        // Tunnels are not offered over HTTP/2; WebSockets are (RFC 8441, below).
        finish::h2_refused(
            &shard,
            Some(from(&info)),
            &mut respond,
            http::StatusCode::METHOD_NOT_ALLOWED,
        );
        return;
    }
    let mut buf = BytesMut::new();
    let mut first = None;
    let chunked = if websocket {
        // The extended CONNECT goes through the pipeline as the HTTP/1.1 upgrade it stands
        // for (RFC 8441 has no key: the one written here only satisfies the handshake check).
        synthesize_upgrade(&parts, &mut buf);
        false
    } else {
        // A body without `content-length` whose frames are already here is sent upstream
        // as what it is (none, or a length) rather than chunked: a GET ended by an empty
        // DATA frame stays a GET without a body.
        let mut whole = None;
        if !end && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
            match peek_body(&mut recv) {
                Peeked::Streams => {}
                Peeked::Empty => end = true,
                Peeked::Whole(b) => {
                    whole = Some(b.len());
                    first = Some(b);
                }
                Peeked::First(b) => first = Some(b),
                Peeked::Gone => {
                    shard.metrics.add(Counter::H2StreamsReset);
                    return;
                }
            }
        }
        match crate::http::h2::stream::synthesize(&parts, end, whole, &mut buf) {
            Ok(c) => c,
            Err(reason) => {
                finish::h2_reset(&shard, Some(from(&info)), &mut respond, reason);
                return;
            }
        }
    };
    let max = ss.snap.limits.max_header_bytes;
    // Past `max_header_bytes`, as an HTTP/1.1 head would be (the h2 library takes twice
    // that, so that the answer is the gateway's, counted and logged): 414 when the request
    // line alone is, 431 when the fields are — or are more than the parser takes.
    let too_large = |line_too_long: bool| {
        if line_too_long {
            http::StatusCode::URI_TOO_LONG
        } else {
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        }
    };
    let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let parsed = h1::parse_request(&buf, max * 2 + 1024);
    let refused = match &parsed {
        Ok(Some((len, _))) if *len > max => Some(too_large(line_len >= max)),
        Err(h1::HeadError::TooLarge | h1::HeadError::UriTooLong) => {
            Some(too_large(line_len >= max))
        }
        _ => None,
    };
    if let Some(status) = refused {
        shard.metrics.add(crate::metrics::Counter::BadRequests);
        finish::h2_refused(&shard, Some(from(&info)), &mut respond, status);
        return;
    }
    let head = match parsed {
        Ok(Some((len, p))) => p.into_head(buf.split_to(len).freeze()),
        Err(h1::HeadError::Malformed(why)) => {
            // A request HTTP/1.1 would refuse with a 400 (no :authority and no Host, a Host
            // that names no host, a target that is not a path): the same answer here, which
            // RFC 9113 8.1.1 allows before the stream closes, rather than a bare reset.
            tracing::debug!(peer = %info.peer, why, "bad HTTP/2 request");
            shard.metrics.add(crate::metrics::Counter::BadRequests);
            finish::h2_refused(
                &shard,
                Some(from(&info)),
                &mut respond,
                http::StatusCode::BAD_REQUEST,
            );
            return;
        }
        _ => {
            finish::h2_reset(
                &shard,
                Some(from(&info)),
                &mut respond,
                Reason::PROTOCOL_ERROR,
            );
            return;
        }
    };
    let out = Rc::new(RefCell::new(Out::Head(respond)));
    let s = H2Stream::new(
        (!end).then_some(recv),
        chunked,
        out.clone(),
        parts.method == http::Method::HEAD,
        info.tls,
    )
    .with_first(first);
    let mut conn = Conn {
        stream: Stream::H2(Box::new(s)),
        buf,
        peer: info.peer,
        listener: info.listener,
        peer_ip: info.peer_ip.clone(),
        segs: Default::default(),
        client_cert: info.client_cert.clone(),
        bytes_in: 0,
        bytes_out: 0,
        tls_version: info.tls_version,
        send_timeout: ss.snap.limits.send_timeout,
    };
    let (reset, next) = {
        // The pipeline's future is large (kilobytes): on the heap once, so that spawning the
        // stream and selecting on it move a pointer, not the future.
        let work = crate::memory::boxed(|| super::handle(&shard, ss, &mut conn, head));
        let reset = poll_fn(|cx| out.borrow_mut().poll_reset(cx));
        monoio::select! {
            n = work => (false, Some(n)),
            _ = reset => (true, None),
        }
    };
    if let Some(Next::WebSocket(session)) = next {
        shard.metrics.add(Counter::Upgrades);
        return Box::pin(super::ws::run(&shard, conn, session)).await;
    }
    if reset {
        // The pipeline was dropped where it stood; its exit guard counted the request.
        shard.metrics.add(Counter::H2StreamsReset);
        return;
    }
    if let Stream::H2(s) = &mut conn.stream {
        let _ = s.finish().await;
    }
}

/// Serves one HTTP/2 connection, each stream through the pipeline.
async fn serve_h2(shard: Rc<Shard>, transport: crate::http::h2::Transport, info: ConnInfo) {
    let ss = shard.snapshot();
    let (cfg, limits) = (ss.snap.config.http2.clone(), ss.snap.limits.clone());
    drop(ss);
    let handler = Streams(shard.clone());
    crate::http::h2::serve(
        transport,
        info,
        cfg,
        limits,
        &shard.drain,
        &shard.metrics,
        handler,
    )
    .await;
}

/// The gateway's side of an HTTP/2 connection: every stream runs [`run_stream`].
struct Streams(Rc<Shard>);

impl StreamHandler for Streams {
    fn spawn_stream(
        &self,
        info: Rc<ConnInfo>,
        req: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
    ) -> impl std::future::Future<Output = ()> + 'static {
        run_stream(self.0.clone(), info, req, respond)
    }

    fn log_flood(&self, flood: crate::http::h2::watch::Flood) -> bool {
        let what = match flood {
            crate::http::h2::watch::Flood::Control => "HTTP/2 control-frame flood",
            crate::http::h2::watch::Flood::Reset => "HTTP/2 reset flood",
            crate::http::h2::watch::Flood::Continuation => "HTTP/2 CONTINUATION flood",
            crate::http::h2::watch::Flood::WindowUpdate => "HTTP/2 WINDOW_UPDATE flood",
            crate::http::h2::watch::Flood::Library => "HTTP/2 flood (the h2 library's limit)",
        };
        self.0.log_first(what, None, 0)
    }
}

/// What the access log says about an HTTP/2 stream's connection.
fn from(info: &ConnInfo) -> super::record::From {
    super::record::From {
        peer: info.peer,
        tls: info.tls_version,
        h2: true,
    }
}

/// The HTTP/1.1 upgrade request an RFC 8441 extended CONNECT stands for.
fn synthesize_upgrade(parts: &http::request::Parts, buf: &mut BytesMut) {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let host = parts.uri.authority().map_or("", |a| a.as_str());
    buf.extend_from_slice(b"GET ");
    buf.extend_from_slice(path.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    buf.extend_from_slice(host.as_bytes());
    buf.extend_from_slice(b"\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: ");
    // RFC 8441 has no key: a fresh one, as a client makes it (RFC 6455 4.1), so that what
    // reaches `$connect` or a relayed backend is no constant.
    let mut nonce = [0u8; 16];
    if getrandom::getrandom(&mut nonce).is_err() {
        nonce = *b"the sample nonce";
    }
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(b"\r\n");
    // HTTP/2 may split cookies over several fields: one `cookie` line, as RFC 9113 8.2.3 says.
    let mut cookies = parts.headers.get_all(http::header::COOKIE).iter();
    if let Some(first) = cookies.next() {
        buf.extend_from_slice(b"cookie: ");
        buf.extend_from_slice(first.as_bytes());
        for c in cookies {
            buf.extend_from_slice(b"; ");
            buf.extend_from_slice(c.as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
    }
    for (n, v) in &parts.headers {
        if matches!(
            n.as_str(),
            "host" | "connection" | "upgrade" | "sec-websocket-key" | "cookie"
        ) {
            continue;
        }
        buf.extend_from_slice(n.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(v.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}
