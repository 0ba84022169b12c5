//! Listening sockets: one `SO_REUSEPORT` socket per shard per listener, so the kernel spreads
//! new connections over the shards and no accept is shared. Sockets are bound on the calling
//! thread at start-up (so "address in use" is reported before anything runs); a listener on
//! port 0 gets its port from the first socket and the others bind to the same one.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// Accept queue length; nginx's default `backlog` is 511, Linux caps it at `somaxconn`.
pub(crate) const BACKLOG: i32 = 4096;

/// Binds one listening socket; `defer_accept` sets TCP_DEFER_ACCEPT (1 s, as nginx's
/// `deferred` does): the kernel completes the accept once the client's first bytes arrive, so
/// the shard is not woken for a connection with nothing to read yet. After that second the
/// connection is accepted anyway and `limits.header_timeout` applies as usual.
pub(crate) fn bind_with(addr: SocketAddr, defer_accept: bool) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    if defer_accept {
        set_defer_accept(&s)?;
    }
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// socket2 and nix have no TCP_DEFER_ACCEPT for Linux: one setsockopt by hand.
#[allow(unsafe_code)]
fn set_defer_accept(s: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs: libc::c_int = 1;
    // SAFETY: a valid socket, a c_int option value and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fails with "address in use" when a live socket already listens on `addr`. The shards'
/// sockets share their port through `SO_REUSEPORT`, which would as gladly share it with a
/// second gateway started by mistake (each then answering part of the traffic): a probe
/// bound without `SO_REUSEPORT` conflicts with any listener there, as nginx's bind would.
/// (Connections in TIME_WAIT do not count: the probe has `SO_REUSEADDR`.)
pub(crate) fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "address already in use (is another gateway running with this address?)",
            )
        } else {
            e
        }
    })
}

/// Binds one plain listening socket (`SO_REUSEADDR`, no `SO_REUSEPORT`): for a listener only
/// one thread accepts on, such as the admin API's, which must not be shared with another
/// process either.
pub(crate) fn bind_exclusive(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Binds `shards` sockets for `addr` (refusing an address another process listens on);
/// returns them and the address they share.
pub(crate) fn bind_for_shards(
    addr: SocketAddr,
    shards: usize,
    defer_accept: bool,
) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    ensure_free(addr)?;
    let first = bind_with(addr, defer_accept)?;
    let actual = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..shards {
        out.push(bind_with(actual, defer_accept)?);
    }
    Ok((out, actual))
}
