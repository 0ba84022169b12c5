//! Shard threads: one per core, each pinned (when `server.pin`), each running its own runtime:
//! Tollgate's own io_uring runtime (`crate::rt`, Linux 6.0), or monoio's io_uring driver on
//! older kernels, or its epoll driver when io_uring is missing or refused (one log line says
//! which), or what else `server.driver` asks for.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

use crate::config::{Driver, UringFlags};
use crate::shard::{Shard, Shared};

/// The driver a runtime actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// Tollgate's own runtime (`crate::rt`): multishot accept and receive into a ring of
    /// provided buffers.
    IoUring,
    /// monoio's io_uring driver: one operation per read, into the connection's own buffer.
    IoUringBasic,
    Epoll,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::IoUring => "io_uring",
            DriverKind::IoUringBasic => "io_uring_basic",
            DriverKind::Epoll => "epoll",
        }
    }
}

/// Resolves `server.driver` against what the kernel allows.
pub(crate) fn pick_driver(d: Driver) -> Result<DriverKind, String> {
    let uring = monoio::utils::detect_uring();
    let own = uring && crate::rt::supported();
    match d {
        // Tollgate's own runtime where the kernel has what it needs (Linux 6.0): level with
        // monoio's driver on bodies and idle memory since 2026-12-02, fewer submissions per
        // request. Older kernels get monoio's io_uring driver, then epoll.
        Driver::Auto if own => Ok(DriverKind::IoUring),
        Driver::Auto if uring => {
            tracing::info!("io_uring lacks what Tollgate's own runtime needs (Linux 6.0: multishot receive, provided-buffer rings): using monoio's io_uring driver");
            Ok(DriverKind::IoUringBasic)
        }
        Driver::Auto => {
            tracing::warn!("io_uring is not available (kernel too old, disabled, or refused by seccomp): using the epoll driver");
            Ok(DriverKind::Epoll)
        }
        Driver::IoUring if own => Ok(DriverKind::IoUring),
        Driver::IoUring => Err(format!(
            "server.driver = \"io_uring\" needs Linux 6.0 or later with io_uring allowed (multishot receive, provided-buffer rings){}; use \"auto\"{} or \"epoll\"",
            if uring { "" } else { " and io_uring is not available here" },
            if uring { ", \"io_uring_basic\"" } else { "" },
        )),
        Driver::IoUringBasic if uring => Ok(DriverKind::IoUringBasic),
        Driver::IoUringBasic => Err("server.driver = \"io_uring_basic\" but io_uring is not available here; use \"auto\" or \"epoll\"".into()),
        Driver::Epoll => Ok(DriverKind::Epoll),
    }
}

/// Bytes per buffer of the provided-buffer ring (Tollgate's own runtime): one read of a
/// request head, or 16 KiB of a body, per buffer.
const RECV_BUF_SIZE: u32 = 64 << 10;
/// Buffers in each shard's ring (4 MiB): connections hold one only while they use it. Fewer
/// buffers stay warmer in the cache: with 256 (16 MiB) a proxied 64 KiB answer cost ~6 % more
/// CPU than with 64 (bodies are sent on from these buffers).
pub(crate) const RECV_BUFS: u16 = 64;
/// Buffers in the control plane's ring (4 MiB, as a shard's): the admin API, Redis, health
/// checks. A buffer's pages become resident only as far as receives have written into it.
pub(crate) const CONTROL_RECV_BUFS: u16 = 64;

/// Builds a runtime of the given kind on this thread and runs `fut` to completion.
pub(crate) fn block_on<F: Future>(
    kind: DriverKind,
    entries: u32,
    flags: UringFlags,
    recv_bufs: u16,
    fut: F,
) -> io::Result<F::Output> {
    match kind {
        DriverKind::IoUring => {
            let b = crate::rt::Builder {
                entries,
                buf_size: RECV_BUF_SIZE,
                bufs: recv_bufs,
                coop_taskrun: flags.coop_taskrun,
                single_issuer: flags.single_issuer,
                defer_taskrun: flags.defer_taskrun,
            };
            crate::driver::block_on_own(b, fut)
        }
        DriverKind::IoUringBasic => {
            let build = |flags: UringFlags| {
                let mut urb = io_uring::IoUring::builder();
                if flags.coop_taskrun {
                    urb.setup_coop_taskrun();
                    urb.setup_taskrun_flag();
                }
                if flags.single_issuer {
                    urb.setup_single_issuer();
                }
                if flags.defer_taskrun {
                    urb.setup_defer_taskrun();
                }
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(entries)
                    .uring_builder(urb)
                    .enable_timer()
                    .build()
            };
            let mut rt = match build(flags) {
                Err(e) if flags != UringFlags::default() => {
                    // Older kernels refuse newer setup flags with EINVAL: run without them.
                    tracing::warn!(error = %e, ?flags, "io_uring refused the setup flags; running without them");
                    build(UringFlags::default())?
                }
                other => other?,
            };
            Ok(rt.block_on(fut))
        }
        DriverKind::Epoll => {
            let mut rt = RuntimeBuilder::<LegacyDriver>::new()
                .with_entries(entries)
                .enable_timer()
                .build()?;
            Ok(rt.block_on(fut))
        }
    }
}

/// Messages from the control plane to a shard.
#[derive(Debug)]
pub(crate) enum ShardMsg {
    Drain,
    /// A successor took over the sockets: stop accepting, let talking connections finish
    /// their next request.
    SoftDrain,
}

/// What a shard thread needs to start.
pub(crate) struct ShardSpec {
    pub id: usize,
    pub cpu: Option<usize>,
    pub driver: DriverKind,
    pub entries: u32,
    pub uring_flags: UringFlags,
    /// (listener index, socket): a shard may accept on several sockets of one listener.
    pub listeners: Vec<(usize, std::net::TcpListener)>,
    pub shared: Arc<Shared>,
    pub rx: flume::Receiver<ShardMsg>,
    /// Disconnected once the control plane's runtime is up: accepting starts then.
    pub control_up: flume::Receiver<()>,
}

/// Starts a shard thread.
pub(crate) fn spawn_shard(spec: ShardSpec) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("tollgate-shard-{}", spec.id)).spawn(move || {
        if let Some(cpu) = spec.cpu {
            if let Err(e) = monoio::utils::bind_to_cpu_set([cpu]) {
                tracing::warn!(shard = spec.id, cpu, error = ?e, "could not pin shard to CPU");
            }
        }
        match spec.cpu {
            Some(cpu) => tracing::info!(shard = spec.id, cpu, driver = spec.driver.name(), "shard started"),
            None => tracing::info!(shard = spec.id, driver = spec.driver.name(), "shard started"),
        }
        let (id, driver) = (spec.id, spec.driver);
        if let Err(e) = block_on(
            driver,
            spec.entries,
            spec.uring_flags,
            RECV_BUFS,
            shard_main(spec),
        ) {
            // At its start (the ring could not be set up) or later (its wait failed): either
            // way this shard's sockets close with it and the other shards serve on.
            tracing::error!(shard = id, driver = driver.name(), error = %e, "shard runtime failed; this shard stops, its connections close, the other shards serve on");
        }
    })
}

async fn shard_main(spec: ShardSpec) {
    let shard = Shard::new(spec.id, spec.shared.clone());
    let _ = spec.control_up.recv_async().await;
    // Sockets taken with a plain accept(2) at the drain: the epoll driver wants them
    // non-blocking.
    let nonblocking = spec.driver == DriverKind::Epoll;
    let mut accepting = Vec::new();
    for (idx, l) in spec.listeners {
        let plain = l.try_clone().ok();
        match crate::driver::net::TcpListener::from_std(l) {
            Ok(l) => {
                let task = accept_loop(shard.clone(), l, plain, idx, nonblocking);
                accepting.push(crate::driver::spawn(task));
            }
            Err(e) => tracing::error!(shard = spec.id, error = %e, "cannot use listening socket"),
        }
    }
    // Housekeeping: stale lease tokens go back to their buckets, idle per-key leases go,
    // access-log lines and figures are handed on. It runs through the drain too, and ends
    // with the shard's runtime.
    let sweeper = shard.clone();
    crate::driver::spawn(async move {
        loop {
            crate::driver::time::sleep(Duration::from_millis(100)).await;
            sweeper.sweep(crate::throttle::now_ns());
            // Connections whose API a reload removed are closed.
            crate::gateway::ws::reap(&sweeper);
        }
    });
    // `@connections` for the WebSocket connections this shard holds.
    crate::driver::spawn(crate::gateway::ws::serve_commands(shard.clone()));
    // Runs until the control plane says drain (or goes away).
    match spec.rx.recv_async().await {
        Ok(ShardMsg::SoftDrain) => shard.drain.start_soft(),
        _ => shard.drain.start(),
    }
    // The configuration's when the drain begins: a reload's new `drain_timeout` applies.
    let deadline = Instant::now() + shard.snapshot().snap.config.server.drain_timeout;
    // The accept loops end first (a drain for good stops listening there): the runtime ends
    // with this function, and a loop it did not run again would leave its socket listening.
    for task in accepting {
        let _ = crate::driver::time::timeout_at(deadline, task).await;
    }
    while shard.active.get() > 0 && Instant::now() < deadline {
        crate::driver::time::sleep(Duration::from_millis(5)).await;
    }
    if shard.active.get() > 0 {
        shard
            .shared
            .cut
            .fetch_add(shard.active.get(), std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(
            shard = spec.id,
            open = shard.active.get(),
            "drain timeout: closing connections still open"
        );
    }
    // Upstream connections go too; HTTP/2 ones say goodbye first (briefly).
    shard.release_upstreams();
    let deadline = Instant::now() + Duration::from_secs(1);
    while crate::upstream::h2::drivers() > 0 && Instant::now() < deadline {
        crate::driver::time::sleep(Duration::from_millis(5)).await;
    }
    // Last: the access-log lines of everything that ended go to the writer (the control
    // plane stops it after the shards), the last figures to the metrics.
    shard.sweep(crate::throttle::now_ns());
}

/// Decrements the connection counts when a connection task ends.
struct ConnGuard(Rc<Shard>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get() - 1);
        self.0
            .shared
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Descriptors held in reserve, for the moment the process has run out: letting one go
/// frees one, enough to accept a waiting connection (and, for the admin API, to serve it).
/// Several are held: between letting one go and taking it back, another thread of the
/// process (the control plane, another shard) may take the freed descriptor, and a single
/// reserve lost that way left waiting clients unrefused until a connection closed.
pub(crate) struct Reserve(Vec<std::fs::File>);

/// Descriptors a reserve holds.
const RESERVED: usize = 4;

impl Reserve {
    pub(crate) fn new() -> Reserve {
        let mut r = Reserve(Vec::with_capacity(RESERVED));
        r.refill();
        r
    }

    /// Frees one reserved descriptor; `false` when there was none.
    pub(crate) fn release(&mut self) -> bool {
        self.0.pop().is_some()
    }

    pub(crate) fn has(&self) -> bool {
        !self.0.is_empty()
    }

    /// Takes descriptors back into reserve (as many as are free, up to the reserve's size).
    pub(crate) fn refill(&mut self) {
        while self.0.len() < RESERVED {
            match std::fs::File::open("/dev/null") {
                Ok(f) => self.0.push(f),
                Err(_) => break,
            }
        }
    }
}

/// At the descriptor limit, refuses the waiting connections promptly — accepts each with the
/// reserve and closes it — so that clients see a closed connection at once rather than a
/// connection that never answers; returns how many were refused. `listener` is a plain
/// duplicate of the shard's socket.
fn refuse_waiting(listener: Option<&std::net::TcpListener>, reserve: &mut Reserve) -> usize {
    let Some(listener) = listener else {
        return 0;
    };
    let mut refused = 0;
    reserve.refill();
    // The socket is non-blocking: a plain accept(2) takes a waiting connection or says there
    // is none, and dropping it closes it at once, so its descriptor goes back into reserve.
    while refused < 64 && reserve.release() {
        let one = listener.accept();
        let got = one.is_ok();
        drop(one);
        reserve.refill();
        if !got {
            break;
        }
        refused += 1;
    }
    tracing::debug!(
        refused,
        reserve = reserve.has(),
        "refusing at the descriptor limit"
    );
    refused
}

async fn accept_loop(
    shard: Rc<Shard>,
    mut listener: crate::driver::net::TcpListener,
    plain: Option<std::net::TcpListener>,
    idx: usize,
    nonblocking: bool,
) {
    let mut reserve = Reserve::new();
    // A drain stops the accepting; connections the kernel already handed over are served,
    // not dropped (a successor taking over the socket must not lose them).
    while let Some(accepted) = listener.accept_until(shard.drain.wait()).await {
        match accepted {
            Ok((stream, peer)) => admit(&shard, stream, peer, idx),
            // The socket no longer listens: a successor that took over without this address
            // shut it down. Nothing more will come.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::info!(
                    listener = idx,
                    "listening socket shut down: this shard stops accepting on it"
                );
                break;
            }
            Err(e) => {
                // Out of descriptors or memory: stop accepting for a moment (as nginx does)
                // instead of spinning, and say so once per interval, not once per failure.
                let exhausted = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                if shard.log_first("accept failed", None, 0) {
                    tracing::warn!(error = %e, "accept failed; accepting paused briefly (repeats are summarised)");
                }
                if exhausted {
                    let n = refuse_waiting(plain.as_ref(), &mut reserve);
                    shard
                        .metrics
                        .add_n(crate::metrics::Counter::RefusedAtFdLimit, n as u64);
                }
                let pause = if exhausted { 100 } else { 10 };
                crate::driver::time::sleep(Duration::from_millis(pause)).await;
            }
        }
    }
    // A hand-over leaves the socket and its queue to the successor. A drain for good takes
    // what the queue holds (answered with `Connection: close`), then stops listening.
    if !shard.drain.is_soft() {
        if let Some(plain) = &plain {
            stop_listening(&shard, plain, idx, nonblocking);
        }
    }
    // Dropping the socket here stops the kernel queueing connections to this shard.
}

/// Serves the connections waiting in `plain`'s accept queue (at most one queue's worth), then
/// shuts the socket down: it leaves the port's `SO_REUSEPORT` group at once, so new connects
/// are refused (RST) rather than queued for no one, although duplicates of it (the ones offered
/// to a successor) stay open until the process ends. A connection that completes between
/// the last accept and the shutdown is reset.
fn stop_listening(shard: &Rc<Shard>, plain: &std::net::TcpListener, idx: usize, nonblocking: bool) {
    for _ in 0..crate::listener::BACKLOG {
        // Non-blocking: "none waiting" ends the loop.
        let Ok((s, peer)) = plain.accept() else {
            break;
        };
        match crate::driver::net::TcpStream::from_std(s, nonblocking) {
            Ok(stream) => admit(shard, stream, peer, idx),
            Err(e) => tracing::debug!(%peer, error = %e, "cannot serve a queued connection"),
        }
    }
    // shutdown(2) on a listening socket ends listening for every descriptor of it (close(2)
    // would wait for the last one).
    if let Err(e) = socket2::SockRef::from(plain).shutdown(std::net::Shutdown::Read) {
        tracing::warn!(error = %e, "could not stop listening; new connections wait for the exit");
    }
}

/// Serves an accepted connection on its own task, or closes it at `limits.max_connections`.
fn admit(
    shard: &Rc<Shard>,
    stream: crate::driver::net::TcpStream,
    peer: std::net::SocketAddr,
    idx: usize,
) {
    use std::sync::atomic::Ordering;
    let max = shard.snapshot().snap.limits.max_connections;
    if shard.shared.connections.fetch_add(1, Ordering::Relaxed) >= max {
        shard.shared.connections.fetch_sub(1, Ordering::Relaxed);
        // Counted and told here, on the refusal path only: admitting pays nothing for it.
        shard
            .metrics
            .add(crate::metrics::Counter::RefusedAtMaxConnections);
        if let Some(n) = shard.refusals.refused(crate::throttle::now_ns()) {
            crate::observe::warn_refused(shard.id, n, max);
        }
        tracing::debug!(%peer, "connection refused: limits.max_connections reached");
        return;
    }
    shard.active.set(shard.active.get() + 1);
    let guard = ConnGuard(shard.clone());
    // The connection's future itself is the task (an async block awaiting it would hold its
    // arguments beside it). Guarded: a panic while serving it closes this connection only.
    crate::driver::spawn_detached(|| {
        crate::driver::guarded(crate::gateway::conn::serve(
            shard.clone(),
            guard,
            stream,
            peer,
            idx,
        ))
    });
}
