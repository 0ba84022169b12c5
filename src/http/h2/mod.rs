//! HTTP/2 on the front (RFC 9113), with the `h2` crate: over TLS when ALPN picks `h2`, and
//! in clear text with prior knowledge on listeners with `h2c = true`.
//!
//! One task per connection drives `h2` (every frame in and out goes through it); each stream
//! is a task of its own that runs the same pipeline as an HTTP/1.1 request
//! ([`stream`]). A stream the client resets stops its pipeline where it is.
//!
//! Limits: `[http2]` sets concurrent streams, windows and frame size; the header list is
//! capped by `limits.max_header_bytes`; bodies by `limits.max_body` per stream. The
//! connection's first frames must arrive within `header_timeout`; with no stream open for
//! `idle_timeout` it is closed with GOAWAY NO_ERROR, as on drain. Floods of control frames,
//! resets or CONTINUATIONs end it with GOAWAY ENHANCE_YOUR_CALM ([`watch::FrameWatch`]).

pub(crate) mod flow;
pub(crate) mod stream;
pub(crate) mod watch;

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use crate::driver::net::TcpStream;
use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};

use crate::config::{Http2, Limits};
use crate::http::conn::ClientCertHeaders;
use crate::http::drain::Drain;
use crate::http::pollio::PollIo;
use crate::metrics::{Counter, Local};
use watch::{Flood, FrameWatch, Signal};

/// The client connection preface (RFC 9113 3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How far a connection's socket receive may run ahead of the `h2` crate's reads (see
/// [`PollIo::read_ahead`]): uploads come in one receive per 64 KiB, not one per 16 KiB read
/// (a stalled connection may hold that much received ahead: the most any client receive
/// takes, and far less than its windows let a client send).
const READ_AHEAD: usize = 64 << 10;

/// What every stream of a connection shares.
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: usize,
    pub peer_ip: Rc<str>,
    pub tls: bool,
    /// The TLS version negotiated, for the access log.
    pub tls_version: Option<&'static str>,
    pub client_cert: Option<ClientCertHeaders>,
}

/// The transport HTTP/2 runs over.
pub(crate) enum Transport {
    /// Clear text; the bytes already read (the preface, perhaps more) come first.
    Plain(TcpStream, Bytes),
    Tls(Box<crate::http::tls::TlsConn>),
}

/// Streams in progress, and when the last one ended (for the idle timeout).
#[derive(Default)]
struct Streams {
    active: Cell<usize>,
    idle_since: Cell<Option<Instant>>,
}

pin_project_lite::pin_project! {
    /// A stream's task: the stream's future, polled in place, and the connection's count of
    /// streams, lowered when it ends. (An `async` block awaiting the stream would hold its
    /// future twice, captured and awaited: 2.5 KB per stream, copied at each move, where this
    /// holds it once.)
    struct StreamTask<F> {
        #[pin]
        stream: crate::driver::Guarded<F>,
        streams: Rc<Streams>,
        signal: Rc<Signal>,
    }
}

impl<F: Future<Output = ()>> Future for StreamTask<F> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.stream.poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.streams.active.set(this.streams.active.get() - 1);
        if this.streams.active.get() == 0 {
            // The idle timeout needs no better than the turn's clock.
            this.streams
                .idle_since
                .set(Some(crate::driver::time::now()));
            this.signal.wake();
        }
        Poll::Ready(())
    }
}

// One event per loop turn; a stream's request is moved once, so it is not boxed.
#[allow(clippy::large_enum_variant)]
enum Event {
    Stream(http::Request<RecvStream>, SendResponse<Bytes>),
    Flood(Flood),
    /// The h2 library ended the connection for a flood of its own counting.
    LibraryFlood(Flood),
    Idle,
    Drain,
    End,
}

/// What a connection's streams are handed to: the stream's request and where its answer
/// goes. The gateway passes its pipeline in; this module knows nothing of APIs.
pub(crate) trait StreamHandler {
    fn spawn_stream(
        &self,
        info: Rc<ConnInfo>,
        req: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
    ) -> impl std::future::Future<Output = ()> + 'static;

    /// Whether to log a flood that ended a connection (the gateway summarises repeats).
    fn log_flood(&self, _flood: Flood) -> bool {
        true
    }
}

/// The header list size the h2 library takes (SETTINGS_MAX_HEADER_LIST_SIZE): twice the
/// gateway's `max_header_bytes` (which the pipeline checks itself).
fn library_header_list(max_header_bytes: usize) -> u32 {
    u32::try_from(max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX)
}

/// Counts a flood that ended a connection, and says it (as the handler allows).
fn flood_seen(handler: &impl StreamHandler, metrics: &Local, info: &ConnInfo, f: Flood) {
    if handler.log_flood(f) {
        tracing::info!(peer = %info.peer, flood = ?f, "HTTP/2 flood: GOAWAY ENHANCE_YOUR_CALM");
    }
    metrics.add(match f {
        Flood::Control => Counter::H2FloodControl,
        Flood::Reset => Counter::H2FloodReset,
        Flood::Continuation => Counter::H2FloodContinuation,
        Flood::WindowUpdate => Counter::H2FloodWindowUpdate,
        Flood::Library => Counter::H2FloodLibrary,
    });
}

/// Whether the h2 library ended the connection with a GOAWAY ENHANCE_YOUR_CALM of its own:
/// CONTINUATION frames past `max(5, 1.25 x max_header_list_size / max_frame_size)` in one
/// block, more than 100 empty DATA frames (not ending a stream) in a connection's life (both
/// followed by the watch too), 20 streams reset before they were accepted, or small DATA
/// frames past its overhead budget.
fn library_flood(e: &h2::Error) -> bool {
    e.is_go_away() && e.is_library() && e.reason() == Some(Reason::ENHANCE_YOUR_CALM)
}

/// Bytes of DATA one stream may have queued in the library, not yet written to the socket.
const H2_SEND_BUFFER: usize = 64 << 10;

/// Serves one HTTP/2 connection until it ends: `cfg` and `limits` from the snapshot the
/// connection started on, `drain` the shard's drain signal, `metrics` its counters; each
/// stream runs as its own task through `handler`.
pub(crate) async fn serve(
    transport: Transport,
    info: ConnInfo,
    cfg: Http2,
    limits: Limits,
    drain: &Rc<Drain>,
    metrics: &Local,
    handler: impl StreamHandler,
) {
    let signal = Rc::new(Signal::default());
    let io = match transport {
        Transport::Plain(tcp, prefix) => PollIo::plain(tcp, prefix),
        Transport::Tls(t) => t.into_poll_io(Bytes::new()),
    };
    let io = io.read_ahead(READ_AHEAD).watched(
        FrameWatch::new(&cfg, library_header_list(limits.max_header_bytes) as usize),
        signal.clone(),
    );
    let mut builder = h2::server::Builder::new();
    // RFC 8441: WebSockets over HTTP/2 (extended CONNECT with :protocol = websocket).
    builder.enable_connect_protocol();
    builder
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .initial_window_size(cfg.stream_window)
        .initial_connection_window_size(cfg.connection_window)
        .max_frame_size(cfg.max_frame_size)
        // What a stream may queue for a client that has opened its window but is not reading
        // (the library's default, ~400 KiB a stream, let one connection of 128 such streams
        // hold ~57 MB): one upstream read's worth.
        .max_send_buffer_size(H2_SEND_BUFFER)
        // Twice the gateway's own limit: a head past `max_header_bytes` but within this
        // reaches the pipeline, which answers it 431 as over HTTP/1.1 (JSON, a request id, a
        // log line); the library answers past this itself, bare.
        .max_header_list_size(library_header_list(limits.max_header_bytes));
    let handshake = builder.handshake::<_, Bytes>(io);
    let mut h2c = match crate::driver::time::timeout(limits.header_timeout, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(peer = %info.peer, error = %e, "HTTP/2 preface refused");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %info.peer, "HTTP/2 preface timed out");
            return;
        }
    };
    metrics.add(Counter::H2Connections);
    let info = Rc::new(info);
    let streams = Rc::new(Streams::default());
    let mut drain = Box::pin(drain.wait());
    let mut idle = Box::pin(crate::driver::time::sleep(limits.idle_timeout));
    // When the connection is going away with no stream open, how long to wait for the
    // client to acknowledge before closing anyway.
    let mut grace: Option<std::pin::Pin<Box<crate::driver::time::Sleep>>> = None;
    let mut idle_from = Instant::now();
    let mut going = false;
    loop {
        let event = poll_fn(|cx| {
            signal.register(cx.waker());
            if let Some(f) = signal.flood.take() {
                return Poll::Ready(Event::Flood(f));
            }
            if !going {
                if drain.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Drain);
                }
                if streams.active.get() == 0 {
                    if let Some(t) = streams.idle_since.take() {
                        idle_from = t;
                        idle.as_mut().reset(idle_from + limits.idle_timeout);
                    }
                    if idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Idle);
                    }
                }
            } else if streams.active.get() == 0 {
                let g = grace.get_or_insert_with(|| {
                    Box::pin(crate::driver::time::sleep(limits.header_timeout))
                });
                if g.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::End);
                }
            }
            match h2c.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => Poll::Ready(Event::Stream(req, respond)),
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(peer = %info.peer, error = %e, "HTTP/2 connection error");
                    // The watch names the flood where it follows the same limit (it read
                    // the frames as they came); else it is one of the library's own.
                    Poll::Ready(match library_flood(&e) {
                        true => Event::LibraryFlood(signal.flood.take().unwrap_or(Flood::Library)),
                        false => Event::End,
                    })
                }
                Poll::Ready(None) => Poll::Ready(Event::End),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match event {
            Event::Stream(req, respond) => {
                metrics.add(Counter::H2Streams);
                streams.active.set(streams.active.get() + 1);
                let stream = handler.spawn_stream(info.clone(), req, respond);
                crate::driver::spawn_detached(|| StreamTask {
                    // A panic in the stream resets it; the connection's count still falls.
                    stream: crate::driver::guarded(stream),
                    streams: streams.clone(),
                    signal: signal.clone(),
                });
            }
            Event::Flood(f) => {
                flood_seen(&handler, metrics, &info, f);
                h2c.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                going = true;
            }
            // The h2 library's own limits (tighter than the watch's on some counts): its
            // GOAWAY is sent; counted and said as the watch's are.
            Event::LibraryFlood(f) => {
                flood_seen(&handler, metrics, &info, f);
                return;
            }
            Event::Idle | Event::Drain => {
                metrics.add(Counter::H2Goaways);
                h2c.graceful_shutdown();
                going = true;
            }
            Event::End => return,
        }
    }
}
