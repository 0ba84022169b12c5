// A flag set from a client thread: the cross-thread wake under test.
#![allow(clippy::disallowed_types)]

use std::cell::RefCell;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use super::net::{TcpListener, TcpStream};
use super::*;

/// A flag another thread sets, waking the runtime (the cross-thread wake path).
#[derive(Default)]
struct Done {
    state: Mutex<(bool, Option<Waker>)>,
}

impl Done {
    fn set(&self) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }
    fn wait(self: &Arc<Self>) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut s = self.state.lock().unwrap();
            if s.0 {
                return Poll::Ready(());
            }
            s.1 = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Echoes every connection until it closes, sending each received buffer back as it is.
async fn echo_server(mut l: TcpListener) {
    loop {
        let Ok(s) = l.accept().await else {
            continue;
        };
        spawn(async move {
            while let Ok(Some(buf)) = s.recv().await {
                let (r, _) = s.send_all(buf).await;
                if r.is_err() {
                    break;
                }
            }
        });
    }
}

/// Runs an echo server on a runtime built by `b` while `clients` runs on another thread.
fn with_echo(b: Builder, clients: impl FnOnce(std::net::SocketAddr) + Send + 'static) {
    if !supported() {
        eprintln!("skipped: this kernel lacks multishot receive or provided-buffer rings");
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let done = Arc::new(Done::default());
    let d = done.clone();
    let client = std::thread::spawn(move || {
        clients(addr);
        d.set();
    });
    block_on(b, async move {
        spawn(echo_server(TcpListener::from_std(l)));
        done.wait().await;
    })
    .unwrap();
    client.join().unwrap();
}

fn echo_once(addr: std::net::SocketAddr, data: &[u8]) {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = {
        let mut w = c.try_clone().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || w.write_all(&data).unwrap())
    };
    let mut got = vec![0u8; data.len()];
    c.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == data, "the echo differs");
}

/// `conns` connections at once, each echoing `len` bytes of its own pattern.
fn echo_at_once(addr: std::net::SocketAddr, conns: u32, len: u32) {
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            std::thread::spawn(move || {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + t) as u8).collect();
                echo_once(addr, &data);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn echoes_over_multishot_accept_and_receive() {
    with_echo(Builder::default(), |addr| {
        for i in 0..20 {
            let msg = format!("hello {i}\r\n").repeat(i + 1);
            echo_once(addr, msg.as_bytes());
        }
    });
}

#[test]
fn echoes_with_deferred_task_work() {
    // DEFER_TASKRUN: completions are posted only when the ring is entered asking for them,
    // busy turns included.
    let b = Builder {
        defer_taskrun: true,
        buf_size: 64,
        bufs: 8,
        ..Builder::default()
    };
    with_echo(b, |addr| echo_at_once(addr, 4, 8192));
}

#[test]
fn few_buffers_are_back_pressure_not_errors() {
    // 4 buffers of 64 bytes for 16 connections each echoing 16 KiB at once: receives find the
    // ring empty and wait for buffers to come back; every byte arrives, in order.
    let b = Builder {
        buf_size: 64,
        bufs: 4,
        ..Builder::default()
    };
    with_echo(b, |addr| echo_at_once(addr, 16, 16384));
}

#[test]
fn a_dropped_receive_loses_no_bytes() {
    if !supported() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let go = Arc::new(Done::default());
    let g = go.clone();
    let client = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        // Sends only once the server's first receive was given up.
        while !g.state.lock().unwrap().0 {
            std::thread::yield_now();
        }
        c.write_all(b"late bytes").unwrap();
    });
    let got = block_on(Builder::default(), async move {
        let mut l = TcpListener::from_std(l);
        let s = l.accept().await.unwrap();
        // A receive that loses a race with a timer: its future is dropped while armed.
        let first = {
            let recv = std::pin::pin!(s.recv());
            let timer = std::pin::pin!(sleep(Duration::from_millis(5)));
            select(recv, timer).await
        };
        assert!(first.is_none(), "nothing was sent yet");
        go.set();
        let mut got = Vec::new();
        while let Some(b) = s.recv().await.unwrap() {
            got.extend_from_slice(&b);
        }
        got
    })
    .unwrap();
    client.join().unwrap();
    assert_eq!(got, b"late bytes");
}

/// The first of two futures: `Some` if `a` finished first.
async fn select<A: Future + Unpin, B: Future + Unpin>(mut a: A, mut b: B) -> Option<A::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = std::pin::Pin::new(&mut a).poll(cx) {
            return Poll::Ready(Some(v));
        }
        if std::pin::Pin::new(&mut b).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[test]
fn connects_sends_and_reads_to_the_end() {
    if !supported() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut got = [0u8; 5];
        c.read_exact(&mut got).unwrap();
        c.write_all(&got).unwrap();
        c.write_all(b" world").unwrap();
    });
    let got = block_on(Builder::default(), async move {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        assert_eq!(s.peer_addr().unwrap(), addr);
        let (r, _) = s.send_all(b"hello".to_vec()).await;
        r.unwrap();
        let mut got = Vec::new();
        while let Some(b) = s.recv().await.unwrap() {
            got.extend_from_slice(&b);
        }
        got
    })
    .unwrap();
    server.join().unwrap();
    assert_eq!(got, b"hello world");
}

#[test]
fn a_refused_connect_is_an_error() {
    if !supported() {
        return;
    }
    // A port nobody listens on: bound, then closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = block_on(Builder::default(), async move {
        TcpStream::connect(addr).await.err()
    })
    .unwrap()
    .expect("connect to a closed port fails");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn timers_fire_in_deadline_order_and_tasks_join() {
    if !supported() {
        return;
    }
    let order = block_on(Builder::default(), async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let handles: Vec<_> = [30u64, 10, 20]
            .into_iter()
            .map(|ms| {
                let o = order.clone();
                spawn(async move {
                    sleep(Duration::from_millis(ms)).await;
                    o.borrow_mut().push(ms);
                    ms * 2
                })
            })
            .collect();
        let mut outs = Vec::new();
        for h in handles {
            outs.push(h.await);
        }
        assert_eq!(outs, [60, 20, 40]);
        let v = order.borrow().clone();
        v
    })
    .unwrap();
    assert_eq!(order, [10, 20, 30]);
}

/// A future that keeps its waker in `cell` and counts its polls in `polls`; ready at once
/// when `end`.
fn keeper(
    cell: Rc<RefCell<Option<Waker>>>,
    polls: Rc<std::cell::Cell<u32>>,
    end: bool,
) -> impl Future<Output = ()> {
    std::future::poll_fn(move |cx| {
        polls.set(polls.get() + 1);
        *cell.borrow_mut() = Some(cx.waker().clone());
        if end {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

#[test]
fn a_task_slot_used_again_is_not_woken_by_the_wakers_of_the_task_before() {
    if !supported() {
        return;
    }
    let (stale_polls, fresh_polls, ran) = block_on(Builder::default(), async {
        // Tasks that end without keeping a waker leave their slot's task and waker to the
        // next: many in a row all run.
        let ran = Rc::new(std::cell::Cell::new(0u32));
        for _ in 0..1000 {
            let r = ran.clone();
            spawn_detached(Box::pin(async move { r.set(r.get() + 1) }));
            spawn(async {}).await;
        }
        // A task that ends keeping a clone of its waker; the next task takes its slot.
        let old = Rc::new(RefCell::new(None));
        let old_polls = Rc::new(std::cell::Cell::new(0));
        spawn(keeper(old.clone(), old_polls.clone(), true)).await;
        let new = Rc::new(RefCell::new(None));
        let new_polls = Rc::new(std::cell::Cell::new(0));
        spawn_detached(Box::pin(keeper(new.clone(), new_polls.clone(), false)));
        spawn(async {}).await;
        assert_eq!(new_polls.get(), 1);
        // The old task's waker wakes no one; tasks run in the order woken, so once a task
        // spawned after the wake has run, the wake was handled.
        old.borrow_mut().take().unwrap().wake();
        spawn(async {}).await;
        let stale = new_polls.get();
        new.borrow().as_ref().unwrap().wake_by_ref();
        spawn(async {}).await;
        (stale, new_polls.get(), ran.get())
    })
    .unwrap();
    assert_eq!(ran, 1000, "every task spawned into a used slot ran");
    assert_eq!(stale_polls, 1, "a stale waker polled the slot's new task");
    assert_eq!(fresh_polls, 2, "the new task's own waker wakes it");
}

#[test]
fn one_runtime_per_thread() {
    if !supported() {
        return;
    }
    let inner = block_on(Builder::default(), async {
        block_on(Builder::default(), async {}).is_err()
    })
    .unwrap();
    assert!(inner, "a second runtime on the same thread is refused");
}

#[test]
fn a_reader_that_stops_holds_at_most_its_share_of_buffers() {
    if !supported() {
        return;
    }
    // 16 buffers of 256 bytes. A connection sends 64 KiB that the server does not read at
    // first: its receive is paused after RECV_QUEUE_CAP buffers, so a second connection is
    // still served meanwhile; then every byte of the first arrives, in order.
    let b = Builder {
        buf_size: 256,
        bufs: 16,
        ..Builder::default()
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let sent = big.clone();
    let client = std::thread::spawn(move || {
        let mut first = std::net::TcpStream::connect(addr).unwrap();
        let writer = std::thread::spawn(move || {
            first.write_all(&sent).unwrap();
            first
        });
        let mut second = std::net::TcpStream::connect(addr).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        second.write_all(b"ping").unwrap();
        let mut pong = [0u8; 4];
        second.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"ping");
        drop(second);
        drop(writer.join().unwrap());
    });
    let got = block_on(b, async move {
        let mut l = TcpListener::from_std(l);
        let first = l.accept().await.unwrap();
        // Arm the first connection's receive, then leave its bytes unread.
        let one = first.recv().await.unwrap().unwrap();
        let mut got = one.to_vec();
        drop(one);
        let second = l.accept().await.unwrap();
        let ping = second.recv().await.unwrap().unwrap();
        let (r, _) = second.send_all(ping).await;
        r.unwrap();
        while let Some(b) = first.recv().await.unwrap() {
            got.extend_from_slice(&b);
        }
        got
    })
    .unwrap();
    client.join().unwrap();
    assert!(
        got == big,
        "the paused connection's bytes arrive whole and in order"
    );
}

/// A bounded socket receives one buffer per operation: a reader that takes one buffer and
/// then stops leaves the rest in the kernel (where TCP's window holds the sender back), where
/// a multishot receive would drain the socket into the ring (and copies of it) meanwhile.
#[test]
fn a_bounded_reader_that_stops_leaves_the_rest_in_the_kernel() {
    if !supported() {
        return;
    }
    let b = Builder {
        buf_size: 4096,
        bufs: 64,
        ..Builder::default()
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    const SENT: usize = 192 << 10;
    let peer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&vec![7u8; SENT]).unwrap();
        // Held open until the server has looked.
        let mut end = [0u8; 1];
        let _ = s.read(&mut end);
    });
    let (queued, unread) = block_on(b, async move {
        let mut l = TcpListener::from_std(l);
        let s = l.accept().await.unwrap();
        s.set_bounded(true);
        let mut got = 0;
        while got < 8192 {
            got += s.recv().await.unwrap().unwrap().len();
        }
        // The reader stops; the runtime turns meanwhile (as it would for other tasks) until
        // the kernel holds what the peer sent since, or 10 s have gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while inq(&s) < 32 << 10 && std::time::Instant::now() < deadline {
            sleep(Duration::from_millis(1)).await;
        }
        let mut queued = 0;
        while let Some(b) = s.try_recv() {
            queued += b.len();
        }
        (queued, inq(&s))
    })
    .unwrap();
    peer.join().unwrap();
    assert!(
        queued <= 4096 && unread >= 32 << 10,
        "at most one buffer was received while the reader stopped ({queued} bytes); the rest waits in the kernel ({unread} bytes)"
    );
}

/// Bytes waiting in `s`'s kernel receive buffer (SIOCINQ).
pub(super) fn inq(s: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer given.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0);
    n as usize
}

/// Two buffers, described as iovecs, for a vectored send.
struct TwoBufs {
    _bufs: (Vec<u8>, Vec<u8>),
    iov: Box<[libc::iovec; 2]>,
}

impl TwoBufs {
    fn new(a: &[u8], b: &[u8]) -> TwoBufs {
        let (a, b) = (a.to_vec(), b.to_vec());
        let iov = Box::new([
            libc::iovec {
                iov_base: a.as_ptr() as *mut libc::c_void,
                iov_len: a.len(),
            },
            libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            },
        ]);
        TwoBufs { _bufs: (a, b), iov }
    }
}

// SAFETY: the iovecs and the vectors' bytes are on the heap, kept as long as the value.
unsafe impl net::IoVecs for TwoBufs {
    fn iovecs(&self) -> (*const libc::iovec, usize) {
        (self.iov.as_ptr(), 2)
    }
}

/// A listener on another thread that serves its first connection with `serve`.
fn one_peer(
    serve: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || serve(l.accept().unwrap().0));
    (addr, server)
}

#[test]
fn readiness_put_back_bytes_shared_handles_and_vectored_sends() {
    if !supported() {
        return;
    }
    let (addr, server) = one_peer(|mut c| {
        c.write_all(b"first").unwrap();
        let mut got = [0u8; 12];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"head + body.");
        c.write_all(b"second").unwrap();
    });
    let got = block_on(Builder::default(), async move {
        let s = TcpStream::connect(addr).await.unwrap();
        // Readiness holds what arrived; the next receive returns it.
        std::future::poll_fn(|cx| s.poll_readable(cx))
            .await
            .unwrap();
        let mut b = s.recv().await.unwrap().unwrap();
        assert_eq!(&b[..], b"first");
        // Part used, the rest put back: read again first.
        b.advance(2);
        s.unrecv(b);
        let reader = s.clone();
        let rest = reader.recv().await.unwrap().unwrap();
        assert_eq!(&rest[..], b"rst");
        drop(rest);
        let (r, _) = s.send_vectored(TwoBufs::new(b"head + ", b"body")).await;
        assert_eq!(r.unwrap(), 11);
        // One buffer goes out as a plain send.
        let one = net::RecvBufs::new(vec![RecvBuf::heap(b".".to_vec())]);
        let (r, _) = s.send_vectored(one).await;
        assert_eq!(r.unwrap(), 1);
        // The handle reads what the socket receives (one receive, shared).
        let mut got = Vec::new();
        while let Some(b) = reader.recv().await.unwrap() {
            got.extend_from_slice(&b);
        }
        drop(s);
        got
    })
    .unwrap();
    server.join().unwrap();
    assert_eq!(got, b"second");
}

#[test]
fn a_fin_follows_the_last_send_while_the_socket_stays_open() {
    if !supported() {
        return;
    }
    // The peer reads to the end (the FIN), then answers: it can only answer if the FIN came
    // while the sender still holds its socket.
    let (addr, server) = one_peer(|mut c| {
        c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got)
            .expect("the FIN, before the sender closed");
        c.write_all(&got).unwrap();
    });
    let got = block_on(Builder::default(), async move {
        let s = TcpStream::connect(addr).await.unwrap();
        // A vectored send of several buffers does not take the FIN along (it could be short).
        s.fin_after_next_send();
        let (r, _) = s.send_vectored(TwoBufs::new(b"head + ", b"body")).await;
        assert_eq!(r.unwrap(), 11);
        assert!(!s.fin_armed());
        s.fin_after_next_send();
        assert!(s.fin_armed());
        let (r, _) = s.send(&b" end"[..]).await;
        assert_eq!(r.unwrap(), 4);
        // The peer answers once it has read the FIN, which only the send can have sent.
        let mut got = Vec::new();
        while let Some(b) = s.recv().await.unwrap() {
            got.extend_from_slice(&b);
        }
        // Already sent: not sent again.
        s.fin_now();
        got
    })
    .unwrap();
    server.join().unwrap();
    assert_eq!(got, b"head + body end");
}

#[test]
fn a_stopped_listener_hands_over_what_it_took_then_ends() {
    if !supported() {
        return;
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let plain = l.try_clone().unwrap();
    plain.set_nonblocking(true).unwrap();
    let (took, after) = block_on(Builder::default(), async move {
        let mut l = TcpListener::from_std(l);
        let first = std::net::TcpStream::connect(addr).unwrap();
        let s = l.accept().await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), first.local_addr().unwrap());
        // Two more arrive while the multishot accept is armed: the kernel may take them
        // before the stop reaches it, or leave them queued on the socket.
        let more: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        l.stop();
        let mut took = 0;
        let after = loop {
            match l.accept().await {
                Ok(_) => took += 1,
                Err(e) => break e.kind(),
            }
        };
        drop(more);
        (took, after)
    })
    .unwrap();
    assert_eq!(after, std::io::ErrorKind::ConnectionAborted);
    // None is lost: what the runtime took was handed over, the rest waits on the socket.
    let mut left = 0;
    while plain.accept().is_ok() {
        left += 1;
    }
    assert_eq!(took + left, 2, "took {took}, left {left}");
}

#[test]
fn a_task_dropped_as_the_runtime_ends_may_spawn() {
    if !supported() {
        return;
    }
    // What a connection's drop does (a lingering close is spawned): at the end of the runtime
    // it is dropped, not a panic.
    struct SpawnsOnDrop;
    impl Drop for SpawnsOnDrop {
        fn drop(&mut self) {
            drop(spawn(async {}));
        }
    }
    let r = block_on(Builder::default(), async {
        let g = SpawnsOnDrop;
        drop(spawn(async move {
            let _g = g;
            std::future::pending::<()>().await
        }));
        7
    });
    assert_eq!(r.unwrap(), 7);
}

/// Polls its future with a waker of its own that counts wakes and passes them on, as a
/// combinator does: the reactor and the timer wheel must wake that waker, not the task.
struct Foreign<F> {
    inner: std::pin::Pin<Box<F>>,
    wakes: Arc<std::sync::atomic::AtomicUsize>,
}

struct Forward {
    outer: Waker,
    wakes: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::task::Wake for Forward {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.outer.wake_by_ref();
    }
}

impl<F: Future> Future for Foreign<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<F::Output> {
        let w = Waker::from(Arc::new(Forward {
            outer: cx.waker().clone(),
            wakes: self.wakes.clone(),
        }));
        self.inner
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&w))
    }
}

fn foreign<F: Future>(f: F) -> (Foreign<F>, Arc<std::sync::atomic::AtomicUsize>) {
    let wakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let f = Foreign {
        inner: Box::pin(f),
        wakes: wakes.clone(),
    };
    (f, wakes)
}

#[test]
fn wakers_not_of_the_runtime_are_woken_by_timers_and_operations() {
    if !supported() {
        return;
    }
    let (addr, server) = one_peer(|mut c| {
        c.write_all(b"hello").unwrap();
    });
    let wakes = block_on(Builder::default(), async move {
        use std::sync::atomic::Ordering::SeqCst;
        let (timer, timer_wakes) = foreign(sleep(Duration::from_millis(5)));
        timer.await;
        let (conn, conn_wakes) = foreign(TcpStream::connect(addr));
        let s = conn.await.unwrap();
        let (read, read_wakes) = foreign(s.recv());
        let b = read.await.unwrap().unwrap();
        assert_eq!(&b[..], b"hello");
        [
            timer_wakes.load(SeqCst),
            conn_wakes.load(SeqCst),
            read_wakes.load(SeqCst),
        ]
    })
    .unwrap();
    server.join().unwrap();
    // The timer and the connect always wait; the receive may find its bytes already there.
    assert!(wakes[0] >= 1 && wakes[1] >= 1, "wakes: {wakes:?}");
}

#[test]
fn a_send_that_does_not_wait_takes_what_fits_then_would_block() {
    if !supported() {
        return;
    }
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (len_tx, len_rx) = std::sync::mpsc::channel::<usize>();
    let (addr, server) = one_peer(move |mut c| {
        // Reads nothing until told, then everything to the end.
        wait.recv().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        len_tx.send(got.len()).unwrap();
    });
    let pattern: Vec<u8> = (0..(64 << 10) + 251).map(|i| (i % 251) as u8).collect();
    let sent = block_on(Builder::default(), async move {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut sent = 0usize;
        let piece = |sent: usize, len: usize| {
            let from = sent % 251;
            RecvBuf::heap(pattern[from..from + len].to_vec())
        };
        // Two buffers (a writev), then one (a send), until the socket takes no more: a bounded
        // number of tries, far more than any socket buffer holds. Each piece starts where
        // the last send stopped, so the peer reads the pattern whole.
        let mut blocked = [false; 2];
        for (k, n) in [2usize, 1].into_iter().enumerate() {
            for _ in 0..4096 {
                let mut bufs = net::RecvBufs::new(Vec::new());
                bufs.push(piece(sent, 32 << 10));
                if n == 2 {
                    bufs.push(piece(sent + (32 << 10), 32 << 10));
                }
                // Bounded: a send that waited would otherwise hang the test, not fail it.
                let mut send = std::pin::pin!(s.send_vectored_now(bufs));
                let mut limit = std::pin::pin!(time::sleep(Duration::from_secs(10)));
                let done = std::future::poll_fn(|cx| {
                    if let Poll::Ready((r, _)) = send.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    limit.as_mut().poll(cx).map(|_| None)
                })
                .await;
                let r = done.expect("a send without waiting waited");
                match r {
                    Ok(m) => sent += m,
                    Err(e) => {
                        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
                        blocked[k] = true;
                        break;
                    }
                }
            }
        }
        assert_eq!(
            blocked,
            [true, true],
            "a send without waiting waited or never filled"
        );
        go.send(()).unwrap();
        sent
    })
    .unwrap();
    server.join().unwrap();
    // Every byte a send reported went out, in order, and nothing else.
    assert!(sent > 0);
    assert_eq!(len_rx.recv().unwrap(), sent);
}
