//! Zero-downtime take-over: a new gateway process (`tollgate --take-over`) receives the
//! running one's listening sockets over a Unix socket (`SCM_RIGHTS`, as HAProxy, Envoy and
//! Pingora do), then asks it to release the state store; the old process stops accepting,
//! flushes and closes the store, says so, and drains. Connections that arrive meanwhile wait
//! in the sockets' accept queues — the sockets never close — so none is refused.
//!
//! Passing descriptors (rather than nginx's inheritance on exec) lets the new process be
//! started by anyone — an operator, a package's upgrade script, systemd — with its own config,
//! and lets the old one refuse nothing until the new one has loaded that config: a new binary
//! or config that fails to start leaves the old process serving, untouched.
//!
//! Protocol, one line each way per step, on `{state_dir}/upgrade.sock`:
//! new → `HELLO`; old → a JSON line `{"listeners":[["addr",n],...],"admin":"addr"|null}`
//! with the descriptors attached (each listener's `n` sockets in order, then the admin's);
//! new → `RELEASE` once its config is loaded; old → `RELEASED` once the store is closed (it
//! serves on meanwhile); new → `COMMIT` once it serves (old stops accepting and drains). A
//! new process that fails before `COMMIT` (its store cannot be opened, its config clashes
//! with what the store holds) closes the connection: the old one takes its store back and
//! serves on, so a failed take-over never leaves the addresses without a server.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// How long either side waits for the other's next line.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a running gateway waits for `COMMIT` once it released the store. A successor
/// still connected then is taken to serve: one of a version before `COMMIT` (a downgrade)
/// never sends it, and waits for the usage line instead.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// The most descriptors one hand-over carries (listeners x shards, plus the admin's).
const MAX_FDS: usize = 4096;

/// The socket file in a state directory.
pub(crate) fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("upgrade.sock")
}

/// What a running gateway offers a successor: its listening sockets by address.
pub(crate) struct Offer {
    pub listeners: Vec<(SocketAddr, Vec<OwnedFd>)>,
    pub admin: Option<(SocketAddr, OwnedFd)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    listeners: Vec<(SocketAddr, usize)>,
    admin: Option<SocketAddr>,
}

/// The take-over thread and what stops it.
pub(crate) struct Serving {
    thread: std::thread::JoinHandle<()>,
    /// A duplicate of the thread's listening socket: shutting it down ends the thread's
    /// `accept` (see [`Serving::stop`]).
    listener: UnixListener,
    /// Set by [`Serving::stop`]: a successor still queued is turned away.
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Serving {
    /// Waits for the thread after a hand-over (it ends by itself once the usage is sent).
    pub(crate) fn join(self) {
        let _ = self.thread.join();
    }

    /// Ends the take-over thread of a gateway that stopped without handing over, so that
    /// the duplicates of its listening sockets close with it (nothing should listen on their
    /// addresses any more). It works on the socket itself, not on its file: a file removed
    /// while the gateway ran (a cleaned-up state folder) must not leave it hung at exit.
    pub(crate) fn stop(self) {
        // A listening socket shut for reading fails the pending and every later `accept`
        // (EINVAL), waking the thread; a session in progress ends first.
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = socket2::SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read);
        let _ = self.thread.join();
    }
}

/// What the take-over thread asks of the running gateway's control plane.
pub(crate) enum Step {
    /// Close the state store for the successor (and answer once done, or why not).
    Release,
    /// The successor serves: stop accepting and drain.
    Commit,
    /// The successor failed after the release: take the store back and serve on.
    Abort,
}

/// Serves take-over requests on `path` from a thread of its own: `step` carries each step of
/// a session to the control plane. After one committed hand-over the thread ends.
pub(crate) fn serve(
    path: PathBuf,
    offer: Offer,
    step: impl Fn(Step) -> Result<(), String> + Send + 'static,
    usage: std::sync::mpsc::Receiver<String>,
) -> std::io::Result<Serving> {
    // A socket file left by a process that is gone (the double-start check has already
    // established that no live gateway holds these addresses).
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let stopper = listener.try_clone()?;
    // The file this thread made, so that it removes only its own at the end.
    let made = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stopping.clone();
    let thread = std::thread::Builder::new()
        .name("tollgate-upgrade".into())
        .spawn(move || {
            loop {
                let conn = match listener.accept() {
                    // A successor queued as this gateway stops: closed unserved.
                    Ok(_) if stopped.load(std::sync::atomic::Ordering::SeqCst) => continue,
                    Ok((conn, _)) => conn,
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(nix::libc::EINVAL | nix::libc::EBADF | nix::libc::ENOTSOCK)
                        ) =>
                    {
                        // Stopped (see [`Serving::stop`]): this gateway's sockets close
                        // with the offer.
                        let ours = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
                        if ours.is_some() && ours == made {
                            let _ = std::fs::remove_file(&path);
                        }
                        return;
                    }
                    // EINTR, ECONNABORTED, descriptors exhausted: the next one may do.
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                match hand_over(&conn, &offer, &step) {
                    Ok(Session::Released) => {
                        // A successor queued behind this one (a second SIGUSR2) is turned
                        // away at once while this process drains: it has no store to hand
                        // over any more (it waited for the whole drain, then failed).
                        let refuser = listener.try_clone().ok().and_then(|l| {
                            std::thread::Builder::new()
                                .name("tollgate-upgrade-refuse".into())
                                .spawn(move || refuse_all(&l))
                                .ok()
                        });
                        // Once drained: what was counted since the hand-over, one line.
                        if let Ok(line) = usage.recv() {
                            let mut w = &conn;
                            let _ = w.write_all(format!("USAGE {line}\n").as_bytes());
                        }
                        let _ =
                            socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Read);
                        if let Some(r) = refuser {
                            let _ = r.join();
                        }
                        return;
                    }
                    Ok(Session::GaveUp) => {}
                    Err(e) => tracing::warn!(error = %e, "take-over attempt failed; still serving"),
                }
            }
        })?;
    Ok(Serving {
        thread,
        listener: stopper,
        stopping,
    })
}

/// Closes every connection to `l` unserved until `l` is shut down: the successor sees the
/// connection end before any socket was sent, and exits saying so.
fn refuse_all(l: &UnixListener) {
    loop {
        match l.accept() {
            Ok((c, _)) => {
                tracing::warn!("a take-over asked of a gateway that has handed over already: refused (take over from the new process)");
                // Its HELLO read first: a socket closed with unread bytes resets, and the
                // successor would read a reset, not the end.
                let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = (&c).read(&mut [0u8; 16]);
                drop(c);
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(nix::libc::EINVAL | nix::libc::EBADF | nix::libc::ENOTSOCK)
                ) =>
            {
                return
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// How a session on the take-over socket ended.
enum Session {
    /// The store was released to a successor.
    Released,
    /// The successor went away before taking over.
    GaveUp,
}

/// One successor's session.
fn hand_over(
    conn: &UnixStream,
    offer: &Offer,
    step: &impl Fn(Step) -> Result<(), String>,
) -> Result<Session, String> {
    conn.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut lines = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    lines.read_line(&mut line).map_err(|e| e.to_string())?;
    match line.trim() {
        "HELLO" => {}
        other => return Err(format!("unexpected {other:?}")),
    }
    tracing::info!("a new gateway process asks to take over: handing it the listening sockets");
    let manifest = Manifest {
        listeners: offer
            .listeners
            .iter()
            .map(|(a, fds)| (*a, fds.len()))
            .collect(),
        admin: offer.admin.as_ref().map(|(a, _)| *a),
    };
    let mut fds: Vec<RawFd> = offer
        .listeners
        .iter()
        .flat_map(|(_, fds)| fds.iter().map(|f| f.as_raw_fd()))
        .collect();
    if let Some((_, f)) = &offer.admin {
        fds.push(f.as_raw_fd());
    }
    let mut text = serde_json::to_string(&manifest).map_err(|e| e.to_string())?;
    text.push('\n');
    let cmsg = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(
            conn.as_raw_fd(),
            &[IoSlice::new(text.as_bytes())],
            &cmsg,
            MsgFlags::empty(),
            None,
        ) {
            // Interrupted before anything was sent: send again.
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    }
    .map_err(|e| format!("sending the sockets: {e}"))?;
    line.clear();
    // The successor loads its config and prepares; it may give up (its config is refused):
    // then the connection just closes and this process carries on.
    if lines.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        tracing::warn!("the new gateway process gave up before taking over; still serving");
        return Ok(Session::GaveUp);
    }
    if line.trim() != "RELEASE" {
        return Err(format!("unexpected {:?}", line.trim()));
    }
    tracing::info!(
        "handing over: releasing the state store (serving on until the new process serves)"
    );
    step(Step::Release)?;
    // The successor binds its own socket file (in place of this one's) as it starts.
    let mut w = conn;
    let sent = w.write_all(b"RELEASED\n");
    // Then it opens the store and starts; this process serves meanwhile.
    let _ = conn.set_read_timeout(Some(COMMIT_TIMEOUT));
    line.clear();
    let read = sent.and_then(|_| lines.read_line(&mut line));
    let silent = matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    if silent {
        tracing::warn!(waited = ?COMMIT_TIMEOUT, "the new process did not say it serves (a version before COMMIT?) but is still connected: handing over");
    }
    if silent || (matches!(read, Ok(n) if n > 0) && line.trim() == "COMMIT") {
        tracing::info!("the new process serves: no longer accepting; draining");
        step(Step::Commit)?;
        return Ok(Session::Released);
    }
    tracing::warn!("the new gateway process did not start after the state store was released: taking the store back; still serving");
    step(Step::Abort)?;
    Ok(Session::GaveUp)
}

/// The successor's side: the sockets received, and the session that releases the store.
pub(crate) struct TakeOver {
    pub listeners: Vec<(SocketAddr, Vec<std::net::TcpListener>)>,
    pub admin: Option<(SocketAddr, std::net::TcpListener)>,
    conn: UnixStream,
    /// One reader for every line the running gateway sends: `RELEASED` and `USAGE` may
    /// arrive together, and a reader per line would lose the second in its buffer.
    reader: BufReader<UnixStream>,
}

/// Connects to the running gateway's socket in `state_dir` and receives its listeners.
pub(crate) fn take_over(state_dir: &Path) -> Result<TakeOver, String> {
    let path = socket_path(state_dir);
    let conn = UnixStream::connect(&path).map_err(|e| {
        format!(
            "--take-over: no running gateway answers on {}: {e}",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    (&conn)
        .write_all(b"HELLO\n")
        .map_err(|e| format!("--take-over: {e}"))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        // A signal arriving meanwhile (the process is starting: a child exiting, a reload
        // signal) interrupts the call before anything was received: ask again.
        let msg = loop {
            match recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other,
            }
        }
        .map_err(|e| format!("--take-over: receiving the sockets: {e}"))?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(|e| e.to_string())? {
            if let ControlMessageOwned::ScmRights(r) = c {
                fds.extend(r);
            }
        }
        (msg.bytes, fds)
    };
    // Owned at once, so that every received descriptor is closed on any error below.
    // SAFETY: the kernel just installed these descriptors in this process for us alone.
    #[allow(unsafe_code)]
    let mut fds: std::collections::VecDeque<OwnedFd> = fds
        .into_iter()
        .map(|f| unsafe { OwnedFd::from_raw_fd(f) })
        .collect();
    if n == 0 {
        return Err(format!(
            "--take-over: the gateway on {} closed the connection without handing over (it is stopping, or has handed over to another process already: take over from that one)",
            path.display()
        ));
    }
    let text = std::str::from_utf8(&buf[..n]).map_err(|e| e.to_string())?;
    let manifest: Manifest =
        serde_json::from_str(text.trim()).map_err(|e| format!("--take-over: {e}"))?;
    let wanted = manifest.listeners.iter().map(|(_, n)| n).sum::<usize>()
        + manifest.admin.is_some() as usize;
    if fds.len() != wanted {
        return Err(format!(
            "--take-over: expected {wanted} sockets, received {}",
            fds.len()
        ));
    }
    let mut listeners = Vec::new();
    for (addr, count) in manifest.listeners {
        let socks = (0..count)
            .filter_map(|_| fds.pop_front())
            .map(std::net::TcpListener::from)
            .collect();
        listeners.push((addr, socks));
    }
    let admin = manifest
        .admin
        .and_then(|a| fds.pop_front().map(|f| (a, std::net::TcpListener::from(f))));
    let reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    Ok(TakeOver {
        listeners,
        admin,
        conn,
        reader,
    })
}

impl TakeOver {
    /// The listening sockets for `addr`, if the running gateway had them.
    pub(crate) fn listener(&mut self, addr: SocketAddr) -> Option<Vec<std::net::TcpListener>> {
        let i = self.listeners.iter().position(|(a, _)| *a == addr)?;
        Some(self.listeners.swap_remove(i).1)
    }

    /// Waits (on a thread of its own) for the usage the previous process counts while it
    /// drains, and hands it to `apply`.
    pub(crate) fn await_usage(self, apply: impl FnOnce(String) + Send + 'static) {
        let (conn, mut reader) = (self.conn, self.reader);
        let _ = std::thread::Builder::new()
            .name("tollgate-takeover".into())
            .spawn(move || {
                // The drain may take up to its timeout: no read timeout here.
                let _ = conn.set_read_timeout(None);
                let mut line = String::new();
                // Called exactly once: with the line, or with none when the previous process
                // went away without sending it.
                let _ = reader.read_line(&mut line);
                let json = line.trim().strip_prefix("USAGE ").unwrap_or("[]");
                apply(json.to_string());
            });
    }

    /// Tells the running gateway that this process serves: it stops accepting and drains.
    /// (Dropped without it, the running gateway takes its store back and serves on.)
    pub(crate) fn commit(&mut self) -> Result<(), String> {
        (&self.conn)
            .write_all(b"COMMIT\n")
            .map_err(|e| format!("--take-over: {e}"))?;
        // The sockets this process does not serve (a listener or an admin address its
        // config no longer has) stop listening now: the running gateway keeps its copies
        // until its drain ends, and connects there waited unanswered until then.
        for (_, socks) in self.listeners.drain(..) {
            for l in socks {
                let _ = socket2::SockRef::from(&l).shutdown(std::net::Shutdown::Read);
            }
        }
        if let Some((_, l)) = self.admin.take() {
            let _ = socket2::SockRef::from(&l).shutdown(std::net::Shutdown::Read);
        }
        Ok(())
    }

    /// Asks the running gateway to close the state store; returns once it has.
    pub(crate) fn release(&mut self) -> Result<(), String> {
        (&self.conn)
            .write_all(b"RELEASE\n")
            .map_err(|e| format!("--take-over: {e}"))?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| format!("--take-over: waiting for the state store: {e}"))?;
        if line.is_empty() {
            return Err("--take-over: the running gateway closed the connection without releasing the state store (it is stopping: start this one once it has stopped)".to_string());
        }
        if line.trim() != "RELEASED" {
            return Err(format!(
                "--take-over: the running gateway did not release the state store ({:?})",
                line.trim()
            ));
        }
        Ok(())
    }
}
