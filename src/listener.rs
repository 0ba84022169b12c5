//! Listening sockets: one `SO_REUSEPORT` socket per shard per listener, so the kernel spreads
//! new connections over the shards and no accept is shared. Sockets are bound on the calling
//! thread at start-up (so "address in use" is reported before anything runs); a listener on
//! port 0 gets its port from the first socket and the others bind to the same one.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Socket, Type};

/// Accept queue length; nginx's default `backlog` is 511, Linux caps it at `somaxconn`.
pub const BACKLOG: i32 = 4096;

/// Binds one listening socket with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

/// Binds `shards` sockets for `addr`; returns them and the address they share.
pub fn bind_for_shards(
    addr: SocketAddr,
    shards: usize,
) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let first = bind_reuseport(addr)?;
    let actual = first.local_addr()?;
    let mut out = vec![first];
    for _ in 1..shards {
        out.push(bind_reuseport(actual)?);
    }
    Ok((out, actual))
}
