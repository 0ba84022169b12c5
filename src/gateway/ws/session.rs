//! A WebSocket connection after `101`: RFC 6455 framing by `tungstenite`'s protocol layer over
//! this connection's own buffers (masked client frames required, fragments joined, control
//! frames between fragments, UTF-8 checked across fragments, the close handshake), each
//! message routed by the API's `route_selection_expression` to its route's integration, the
//! answer of a two-way route sent back as a message ([`super::message`]), and `$disconnect`
//! called once at the end.

use std::future::Future;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::Message;

use super::ahead::Ahead;
use super::message::{disconnect, message};
use super::{now_ms, Session};
use crate::http::conn::{Conn, Stream};
use crate::shard::{Closing, WsHandle, WsPush};
use crate::shard::{Shard, ShardSnap};

/// Bytes copied out of the socket layer per read.
const READ_CHUNK: usize = 4 << 10;
/// Replies queued beyond this are handed to the writer before more messages are read.
const OUT_BATCH: usize = 16 << 10;
/// What one connection's output may hold in the gateway (what its writer has yet to write,
/// and the replies not yet handed to it; nginx's `proxy_buffers`): past it the connection's
/// messages are not read, nor its `@connections` pushes taken (they wait in their queue, whose
/// own bounds answer 429), until the writer catches up. A client that sends and never reads
/// holds this (plus one reply, one message and the socket buffers), not its replies.
const OUT_BUDGET: usize = 128 << 10;
/// What the writer hands the socket layer at a time (which copies it).
const WRITE_CHUNK: usize = 16 << 10;
/// Messages read while one waits on its integration are held up to this many bytes (at most
/// `limits.websocket_message`), one message past it at most: enough to reach the control
/// frames behind a few small messages.
const LATER_BYTES: usize = 32 << 10;

/// What a message waiting in `later` takes: its bytes and its own keeping (an empty message
/// counted one byte let 32,768 of them wait, ~3 MiB a connection).
fn queued_size(m: &Message) -> usize {
    m.len() + std::mem::size_of::<Message>() + 32
}

/// Bytes in and out for the protocol layer: reads what arrived (`WouldBlock` when nothing
/// has), writes into `out` for the writer task.
#[derive(Default)]
struct Mem {
    inb: BytesMut,
    out: Vec<u8>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inb.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.inb.len());
        buf[..n].copy_from_slice(&self.inb.split_to(n));
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the connection's bytes go.
enum Transport {
    Split {
        rd: tokio::io::ReadHalf<crate::http::pollio::PollIo>,
        tx: flume::Sender<Vec<u8>>,
        /// Bytes handed to the writer and not yet written ([`OUT_BUDGET`]).
        unsent: Rc<std::cell::Cell<usize>>,
        /// A value stops the writer, dropping what it has not written.
        stop: flume::Sender<()>,
        /// The socket on Tollgate's own runtime, told how far its receive may run ahead.
        own: Option<crate::rt::net::TcpStream>,
        ahead: Ahead,
    },
    /// The stream, and how long a write may wait for the client (`limits.send_timeout`).
    H2(Box<crate::http::h2::stream::H2Stream>, std::time::Duration),
}

impl Transport {
    /// Appends what arrives to `inb` (`Ok(0)`: the other side is done).
    async fn read(&mut self, inb: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Split { rd, own, ahead, .. } => {
                // The rest of a big frame comes in one receive, not one per chunk.
                if let Some(own) = own {
                    own.want(usize::try_from(ahead.announced()).unwrap_or(usize::MAX));
                }
                // A buffer on the stack for each poll: nothing is held while the read waits
                // (the socket layer reads into its own buffer, then copies out).
                std::future::poll_fn(|cx| {
                    let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
                    let mut b = tokio::io::ReadBuf::uninit(&mut chunk);
                    std::task::ready!(std::pin::Pin::new(&mut *rd).poll_read(cx, &mut b))?;
                    ahead.feed(b.filled());
                    inb.extend_from_slice(b.filled());
                    std::task::Poll::Ready(Ok(b.filled().len()))
                })
                .await
            }
            Transport::H2(h, _) => h.read_into(inb).await,
        }
    }

    /// Hands bytes to the writer (for a socket, at once: the caller keeps to
    /// [`OUT_BUDGET`] by [`Transport::over_budget`]); `Err` when the connection is lost.
    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), ()> {
        match self {
            Transport::Split { tx, unsent, .. } => {
                unsent.set(unsent.get() + bytes.len());
                tx.send(bytes).map_err(|_| ())
            }
            Transport::H2(h, stall) => {
                match crate::driver::time::timeout(*stall, h.write(Bytes::from(bytes))).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(()),
                }
            }
        }
    }

    /// Whether the writer holds so much, with `more` bytes not yet handed to it, that the
    /// connection is not read until it has written some (an HTTP/2 stream's writes wait
    /// inline, within its flow control).
    fn over_budget(&self, more: usize) -> bool {
        match self {
            Transport::Split { unsent, .. } => unsent.get() + more > OUT_BUDGET,
            Transport::H2(..) => false,
        }
    }

    /// Ends the stream: the writer task finishes what is queued (`cut`: drops it, for a
    /// client that did not answer the gateway's Close); HTTP/2 sends END_STREAM.
    async fn finish(self, cut: bool) {
        match self {
            Transport::Split { tx, stop, .. } => {
                if cut {
                    let _ = stop.try_send(());
                }
                drop(tx)
            }
            Transport::H2(mut h, _) => {
                let _ = h.finish().await;
            }
        }
    }
}

/// How long the gateway waits for the client's Close after sending its own (RFC 6455 7.1.1:
/// the server closes the TCP connection once the handshake is done).
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// After the gateway's Close: reads (dropping data frames) until the client's Close answers
/// it, the client goes, or [`CLOSE_WAIT`] passes (then `false`: what the writer still holds
/// is dropped).
async fn await_close(io: &mut Transport, ws: &mut WebSocketContext, mem: &mut Mem) -> bool {
    let wait = async {
        loop {
            loop {
                match ws.read(mem) {
                    Ok(Message::Close(_)) => return,
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        break
                    }
                    Err(_) => return,
                }
            }
            // Nothing goes out after the Close (pongs included).
            mem.out.clear();
            match io.read(&mut mem.inb).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    crate::driver::time::timeout(CLOSE_WAIT, wait).await.is_ok()
}

/// Until the writer has written a batch; `false` when it has ended (the connection is lost).
async fn written(drained: &Option<flume::Receiver<()>>) -> bool {
    match drained {
        Some(d) => d.recv_async().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// What woke the loop.
enum Event {
    Read(io::Result<usize>),
    /// The integration of the message waited on finished: what goes back.
    Answered(Option<Option<Message>>),
    Timer,
    Push(Option<WsPush>),
    Closing(Option<Closing>),
    /// The writer wrote a batch (`false`: it ended).
    Drained(bool),
    Drain,
}

pub(super) fn lost() -> Ended {
    Ended {
        code: 1006,
        reason: "the connection was lost".into(),
        cut: true,
    }
}

/// The largest frame sent to a client: a longer message goes in several, as Amazon API
/// Gateway splits messages over its 32 KB frame size (route responses and `@connections`
/// pushes alike).
const OUT_FRAME: usize = 32 << 10;

/// Writes `m` for the client, in frames of at most [`OUT_FRAME`] bytes.
fn write_message(ws: &mut WebSocketContext, mem: &mut Mem, m: Message) {
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let (mut data, kind) = match m {
        Message::Text(t) if t.len() > OUT_FRAME => (Bytes::from(t), Data::Text),
        Message::Binary(b) if b.len() > OUT_FRAME => (b, Data::Binary),
        other => {
            let _ = ws.write(mem, other);
            return;
        }
    };
    let mut op = OpCode::Data(kind);
    while !data.is_empty() {
        // (A text's cut may fall inside a character: its UTF-8 is the whole message's.)
        let part = data.split_to(data.len().min(OUT_FRAME));
        let _ = ws.write(
            mem,
            Message::Frame(Frame::message(part, op, data.is_empty())),
        );
        op = OpCode::Data(Data::Continue);
    }
}

/// Writes what a message got back; `Err` (after closing with 1001) when a reload removed the
/// connection's API or stage, so that nothing routes its messages any more.
async fn answered(
    done: Option<Option<Message>>,
    io: &mut Transport,
    ws: &mut WebSocketContext,
    mem: &mut Mem,
    gone: impl FnOnce(),
) -> Result<(), Ended> {
    match done {
        Some(Some(reply)) => {
            write_message(ws, mem, reply);
            Ok(())
        }
        Some(None) => Ok(()),
        None => {
            gone();
            let why = "the API or stage is gone";
            let answered = close_by_gateway(io, ws, mem, CloseCode::Away, why).await;
            Err(Ended {
                code: 1001,
                reason: why.into(),
                cut: !answered,
            })
        }
    }
}

/// The gateway closes (idle, lifetime, drain, `@connections` DELETE, the API gone): its Close,
/// then the client's awaited ([`await_close`]: whether it came).
async fn close_by_gateway(
    io: &mut Transport,
    ws: &mut WebSocketContext,
    mem: &mut Mem,
    code: CloseCode,
    reason: &str,
) -> bool {
    let _ = ws.close(
        mem,
        Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        }),
    );
    let _ = io.send(std::mem::take(&mut mem.out)).await;
    Box::pin(await_close(io, ws, mem)).await
}

/// How the connection ended, for `$disconnect`.
pub(super) struct Ended {
    pub code: u16,
    pub reason: String,
    /// The gateway closed and the client did not answer: what is unwritten is dropped.
    pub cut: bool,
}

/// Serves the connection until either side closes it, then calls `$disconnect`.
pub(crate) async fn run(shard: &Rc<Shard>, conn: Conn, mut s: Box<Session>) {
    use crate::http::pollio::PollIo;
    let Conn { stream, buf, .. } = conn;
    // A socket is split: a writer task sends what the loop below queues, so that reading
    // never waits on a client that does not read. An HTTP/2 stream (RFC 8441) reads and
    // writes frames of its own, inline.
    // `drained`: a value each time the writer has written a batch; disconnected when it ends.
    // A write that waits `limits.send_timeout` for a client that does not read loses the
    // connection, as an answer's does.
    let stall = shard.snapshot().snap.limits.send_timeout;
    let (mut io, writer, drained) = match stream {
        Stream::H2(h) => (Transport::H2(h, stall), None, None),
        stream => {
            // What came after the upgrade request is the start of the first frames.
            let mut ahead = Ahead::new(shard.snapshot().snap.limits.websocket_frame);
            ahead.feed(&buf);
            let own = match &stream {
                Stream::Plain(t) => t.own().cloned(),
                Stream::Tls(t) => t.io.own().cloned(),
                Stream::H2(_) => None,
            };
            let io = match stream {
                Stream::Plain(t) => PollIo::plain(t, Bytes::new()).read_size(READ_CHUNK),
                Stream::Tls(t) => t.into_poll_io(Bytes::new()),
                Stream::H2(_) => return,
            };
            let (rd, mut wr) = tokio::io::split(io);
            // Unbounded by count: what it holds is bounded in bytes by `OUT_BUDGET`.
            let (tx, rx) = flume::unbounded::<Vec<u8>>();
            let (dtx, drained) = flume::bounded::<()>(1);
            let (stop, stopped) = flume::bounded::<()>(1);
            let unsent = Rc::new(std::cell::Cell::new(0usize));
            let left = unsent.clone();
            let writer = crate::driver::spawn(crate::driver::guarded(async move {
                // A value says stop; the session dropping its end does not.
                let stop = || async {
                    if stopped.recv_async().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                while let Ok(bytes) = rx.recv_async().await {
                    // A client that reads nothing for this long is gone: the writer ends,
                    // and with it the connection (the loop sees `drained` disconnected).
                    let write = async {
                        for c in bytes.chunks(WRITE_CHUNK) {
                            wr.write_all(c).await?;
                        }
                        wr.flush().await
                    };
                    let written = monoio::select! {
                        r = crate::driver::time::timeout(stall, write) => matches!(r, Ok(Ok(()))),
                        _ = stop() => false,
                    };
                    if !written {
                        return;
                    }
                    left.set(left.get().saturating_sub(bytes.len()));
                    let _ = dtx.try_send(());
                }
                let shutdown = crate::driver::time::timeout(stall, wr.shutdown());
                monoio::select! {
                    _ = shutdown => {},
                    _ = stop() => {},
                }
            }));
            let t = Transport::Split {
                rd,
                tx,
                unsent,
                stop,
                own,
                ahead,
            };
            (t, Some(writer), Some(drained))
        }
    };
    let (max_frame, max_message, idle, lifetime, rate) = {
        let l = &shard.snapshot().snap.limits;
        (
            l.websocket_frame as usize,
            l.websocket_message as usize,
            l.upgrade_idle_timeout,
            l.websocket_lifetime,
            l.websocket_message_rate,
        )
    };
    // `limits.websocket_message_rate`: this connection's own bucket.
    let bucket = rate.map(crate::throttle::bucket::Bucket::new);
    // Small buffers that grow with what arrives: an idle connection holds little (the
    // defaults reserve 128 KiB each way per connection; frames reserve what they need).
    let config = WebSocketConfig::default()
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_frame_size(Some(max_frame))
        .max_message_size(Some(max_message));
    let mut ws = WebSocketContext::new(Role::Server, Some(config));
    // Reachable through `@connections` from here on.
    let (ptx, prx) = flume::bounded::<WsPush>(super::PUSH_QUEUE);
    let (ctx_close, close_rx) = flume::bounded::<Closing>(1);
    let last = Rc::new(std::cell::Cell::new(now_ms()));
    let queued = Rc::new(std::cell::Cell::new(0usize));
    shard.ws.borrow_mut().insert(
        s.id.clone(),
        WsHandle {
            tx: ptx,
            close: ctx_close,
            api: s.api.as_str().into(),
            stage: s.stage.as_str().into(),
            connected_at_ms: s.connected_at_ms,
            last_active_ms: last.clone(),
            queued: queued.clone(),
            source_ip: s.peer_ip.clone(),
            user_agent: String::from_utf8_lossy(s.head.header(b"user-agent").unwrap_or_default())
                .into_owned(),
        },
    );
    let now = shard.snapshot();
    if shard.ws_seen.borrow().is_none() {
        // What `reap` compares the next snapshot with.
        *shard.ws_seen.borrow_mut() = Some(now.clone());
    }
    // A reload while `$connect` ran may have removed the API or stage, and `reap` may have
    // compared that configuration already: closed now as `reap` closes the others, its
    // `$disconnect` run with the configuration it was opened under.
    if let Some(opened) = s.opened.take() {
        if !Rc::ptr_eq(&opened, &now)
            && super::message::locate_names(&now, &s.api, &s.stage).is_none()
        {
            if let Some(h) = shard.ws.borrow_mut().remove(&s.id) {
                let _ = h.close.try_send(Closing::Gone(opened));
            }
        }
    }
    drop(now);
    // The gateway decided to close: `@connections` answers 410 from here on.
    let closing = || {
        shard.ws.borrow_mut().remove(&s.id);
    };
    // The snapshot a connection whose API a reload removed calls `$disconnect` with.
    let mut old_snap: Option<Rc<ShardSnap>> = None;
    // A message that finds the API gone closes the connection itself, out of `Shard::ws`:
    // the reaper then never hands it the old snapshot. The one the reaper last saw is it
    // when the reaper has not run since the reload (when it has, it sent `Closing::Gone`).
    let gone_seen: std::cell::RefCell<Option<Rc<ShardSnap>>> = Default::default();
    let gone = || {
        *gone_seen.borrow_mut() = shard.ws_seen.borrow().clone();
        closing();
    };
    let mut mem = Mem {
        inb: buf,
        out: Vec::new(),
    };
    let deadline = std::time::Instant::now() + lifetime;
    // Idle counts from the last bytes read, push sent or message answered: a message waiting
    // on its integration is not activity, so idle (as lifetime, drain and `@connections`
    // DELETE) ends that wait as it ends any other.
    let mut active_at = std::time::Instant::now();
    // The message whose integration is being waited on, and what earlier messages got has
    // gone out. Meanwhile the connection is still read, for its control frames (a ping is
    // answered, a Close ends the wait): the messages that come wait in `later`, in order, up
    // to `LATER_BYTES` (then they wait in the socket's buffers).
    let later_max = max_message.min(LATER_BYTES);
    let mut pending = None;
    let mut later: std::collections::VecDeque<Message> = Default::default();
    let mut later_bytes = 0usize;
    // The client ended the connection (its Close, or its side of TCP): what it sent before
    // is still its data.
    let mut by_client = false;
    let ended = 'conn: loop {
        // Every whole message that has arrived, in order, until one has to wait; then what
        // comes, within `later`'s bytes.
        loop {
            if io.over_budget(mem.out.len()) {
                // Not read until the writer has written some (back-pressure).
                break;
            }
            let queued = if pending.is_none() {
                later.pop_front()
            } else {
                None
            };
            let next = if let Some(m) = queued {
                later_bytes -= queued_size(&m);
                Ok(m)
            } else if later_bytes < later_max {
                ws.read(&mut mem)
            } else {
                break;
            };
            match next {
                Ok(m @ (Message::Text(_) | Message::Binary(_))) if pending.is_some() => {
                    later_bytes += queued_size(&m);
                    later.push_back(m);
                }
                Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                    last.set(now_ms());
                    let text = matches!(m, Message::Text(_));
                    if bucket
                        .as_ref()
                        .is_some_and(|b| b.take_up_to(1, crate::throttle::now_ns()).granted == 0)
                    {
                        // Over the connection's own rate: refused before any route, unlogged.
                        let refusal = json!({
                            "message": "Too Many Requests",
                            "connectionId": s.id,
                            "requestId": shard.request_id().as_str(),
                        });
                        let _ = ws.write(&mut mem, Message::text(refusal.to_string()));
                        continue;
                    }
                    // Boxed: the integration call's state exists only while a message is
                    // handled, not in every idle connection's task.
                    let mut handling =
                        crate::memory::boxed(|| message(shard, &s, m.into_data(), text));
                    // Polled once here: a message answered without waiting (a mock, a
                    // refusal) is written with the others of this read; one that waits is
                    // waited on below, with the connection's other events.
                    let polled = std::future::poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx)));
                    match polled.await {
                        Poll::Ready(done) => {
                            if let Err(e) = answered(done, &mut io, &mut ws, &mut mem, gone).await {
                                break 'conn e;
                            }
                        }
                        Poll::Pending => pending = Some(handling),
                    }
                    if mem.out.len() > OUT_BATCH
                        && io.send(std::mem::take(&mut mem.out)).await.is_err()
                    {
                        by_client = true;
                        break 'conn lost();
                    }
                }
                Ok(Message::Close(frame)) => {
                    // The close is answered by the protocol layer; flushed below.
                    let _ = ws.flush(&mut mem);
                    let _ = io.send(std::mem::take(&mut mem.out)).await;
                    by_client = true;
                    break 'conn frame.map_or(
                        Ended {
                            code: 1005,
                            reason: String::new(),
                            cut: false,
                        },
                        |f| Ended {
                            code: u16::from(f.code),
                            reason: f.reason.to_string(),
                            cut: false,
                        },
                    );
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    by_client = true;
                    break 'conn Ended {
                        code: 1000,
                        reason: String::new(),
                        cut: false,
                    };
                }
                Err(e) => {
                    // A protocol violation: closed with the code RFC 6455 gives it.
                    let code = match &e {
                        tungstenite::Error::Utf8(_) => CloseCode::Invalid,
                        tungstenite::Error::Capacity(_) => CloseCode::Size,
                        _ => CloseCode::Protocol,
                    };
                    let reason = match code {
                        CloseCode::Size => "message too big",
                        CloseCode::Invalid => "invalid UTF-8",
                        _ => "protocol error",
                    };
                    let _ = ws.close(
                        &mut mem,
                        Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        }),
                    );
                    let _ = io.send(std::mem::take(&mut mem.out)).await;
                    break 'conn Ended {
                        code: u16::from(code),
                        reason: reason.into(),
                        cut: false,
                    };
                }
            }
        }
        if pending.is_none() && mem.inb.is_empty() {
            // Nothing half-read: an idle connection keeps no input buffer.
            mem.inb = BytesMut::new();
        }
        // What is ready goes out before anything is waited on.
        let _ = ws.flush(&mut mem);
        if !mem.out.is_empty() && io.send(std::mem::take(&mut mem.out)).await.is_err() {
            by_client = true;
            break lost();
        }
        let wake = active_at
            .checked_add(idle)
            .map_or(deadline, |t| t.min(deadline));
        let room = !io.over_budget(mem.out.len());
        let reading = room && later_bytes < later_max;
        let waiting = std::future::poll_fn(|cx| match pending.as_mut() {
            Some(h) => h.as_mut().poll(cx),
            None => Poll::Pending,
        });
        let event = monoio::select! {
            n = io.read(&mut mem.inb), if reading => Event::Read(n),
            done = waiting => Event::Answered(done),
            _ = crate::driver::time::sleep_until(wake) => Event::Timer,
            p = prx.recv_async(), if room => Event::Push(p.ok()),
            c = close_rx.recv_async() => Event::Closing(c.ok()),
            d = written(&drained), if !room => Event::Drained(d),
            _ = shard.drain.wait() => Event::Drain,
        };
        let (code, frame_reason, why) = match event {
            Event::Read(Ok(0) | Err(_)) => {
                by_client = true;
                break lost();
            }
            Event::Read(Ok(_)) => {
                active_at = std::time::Instant::now();
                continue;
            }
            Event::Answered(done) => {
                pending = None;
                active_at = std::time::Instant::now();
                if let Err(e) = answered(done, &mut io, &mut ws, &mut mem, gone).await {
                    break e;
                }
                continue;
            }
            Event::Drained(true) => continue,
            Event::Drained(false) => {
                by_client = true;
                break lost();
            }
            Event::Push(Some(WsPush::Send(data))) => {
                queued.set(queued.get().saturating_sub(data.len()));
                last.set(now_ms());
                active_at = std::time::Instant::now();
                let m = match String::from_utf8(data) {
                    Ok(t) => Message::text(t),
                    Err(e) => Message::binary(e.into_bytes()),
                };
                write_message(&mut ws, &mut mem, m);
                continue;
            }
            Event::Timer if std::time::Instant::now() >= deadline => {
                let why = "connection lifetime reached";
                (CloseCode::Away, why, why)
            }
            Event::Timer => (CloseCode::Away, "idle", "idle"),
            // `@connections` DELETE (the handle is gone: its queue disconnected too).
            Event::Closing(Some(Closing::Deleted) | None) => {
                (CloseCode::Normal, "", "closed through @connections")
            }
            Event::Push(None) => match close_rx.try_recv() {
                Ok(Closing::Gone(old)) => {
                    old_snap = Some(old);
                    let why = "the API or stage is gone";
                    (CloseCode::Away, why, why)
                }
                _ => (CloseCode::Normal, "", "closed through @connections"),
            },
            Event::Closing(Some(Closing::Gone(old))) => {
                old_snap = Some(old);
                let why = "the API or stage is gone";
                (CloseCode::Away, why, why)
            }
            Event::Drain => {
                let why = "the gateway is going away";
                (CloseCode::Away, why, why)
            }
        };
        // Closed by the gateway: a message still waiting on its integration is given up (the
        // call is dropped; its answer could not be sent).
        drop(pending.take());
        closing();
        let answered = close_by_gateway(&mut io, &mut ws, &mut mem, code, frame_reason).await;
        break Ended {
            code: u16::from(code),
            reason: why.into(),
            cut: !answered,
        };
    };
    // A call still waiting is given up if the gateway closed; the client's own end keeps it
    // (below).
    if !by_client {
        drop(pending.take());
    }
    // From here on `@connections` answers 410 for it.
    closing();
    if old_snap.is_none() {
        // A reload's close that came while the connection was closing otherwise.
        if let Ok(Closing::Gone(old)) = close_rx.try_recv() {
            old_snap = Some(old);
        }
    }
    if old_snap.is_none() {
        old_snap = gone_seen.take();
    }
    io.finish(ended.cut).await;
    if let Some(w) = writer {
        let _ = w.await;
    }
    // Messages the client sent before its Close (or its side of TCP) are its data (RFC 6455
    // 7.1.4: the Close ends what comes after it): their integrations are called as Amazon's
    // are, each on its own, though their answers have nowhere to go — the one being waited
    // on, then those that came while it was, within the connection's rate, all within one
    // integration timeout, and not past a drain. Then $disconnect.
    if by_client {
        let limit = shard.snapshot().snap.limits.integration_timeout;
        let rest = async {
            if let Some(h) = pending.take() {
                let _ = h.await;
            }
            while let Some(m) = later.pop_front() {
                if bucket
                    .as_ref()
                    .is_some_and(|b| b.take_up_to(1, crate::throttle::now_ns()).granted == 0)
                {
                    continue;
                }
                let text = matches!(m, Message::Text(_));
                let _ = crate::memory::boxed(|| message(shard, &s, m.into_data(), text)).await;
            }
        };
        let bounded = crate::driver::time::timeout(limit, rest);
        monoio::select! {
            _ = bounded => {},
            _ = shard.drain.wait() => {},
        }
    }
    drop(pending);
    crate::memory::boxed(|| disconnect(shard, &s, ended, old_snap)).await;
}
