//! The same keep-alive forwarder as the monoio floor, written with async/await on Tollgate's
//! own runtime (`src/rt`, included from the gateway's source): multishot accept, multishot
//! receive into the provided-buffer ring, and a message that arrived in one buffer sent on
//! from that buffer. Measured beside `floor` (monoio) and `floor-uring` (the raw ring, no
//! executor), it shows what the executor costs over the ring and what the ring saves over
//! monoio. scripts/bench.py runs it as the `floor-rt` system.
//!
//!   tollgate-floor-rt LISTEN_ADDR UPSTREAM_ADDR
//!
//! FLOOR_DEFER=1 adds IORING_SETUP_DEFER_TASKRUN to COOP_TASKRUN + SINGLE_ISSUER.

#[path = "../common.rs"]
mod common;

#[allow(dead_code, unused_imports)]
#[path = "../../../../src/rt/mod.rs"]
mod rt;

use std::io;
use std::net::SocketAddr;

use rt::net::{TcpListener, TcpStream};

fn main() {
    let (listen, upstream) = common::args("tollgate-floor-rt");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM_ADDR: ip:port");
    let b = rt::Builder {
        buf_size: 16 * 1024,
        bufs: 1024,
        defer_taskrun: std::env::var_os("FLOOR_DEFER").is_some(),
        ..rt::Builder::default()
    };
    let listener = std::net::TcpListener::bind(&listen).expect("bind");
    rt::block_on(b, async move {
        let mut listener = TcpListener::from_std(listener);
        loop {
            let Ok(client) = listener.accept().await else {
                // Out of descriptors, say: let connections close before accepting again.
                rt::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = client.set_nodelay(true);
            rt::spawn(async move {
                let _ = serve(client, upstream).await;
            });
        }
    })
    .expect("runtime");
}

fn eof() -> io::Error {
    io::ErrorKind::UnexpectedEof.into()
}

/// Forwards one message (head and Content-Length body) from `from` to `to`, each received
/// buffer sent on as it is; a head split over buffers is gathered first. `false` when `from`
/// closed before a message began.
async fn forward(from: &mut TcpStream, to: &mut TcpStream, request: bool) -> io::Result<bool> {
    let Some(first) = from.recv().await? else {
        return Ok(false);
    };
    let mut left = match common::parse(&first, request)? {
        Some((n, cl)) => {
            let total = n.saturating_add(cl);
            let sent = first.len().min(total);
            to.send_all(first).await.0?;
            total - sent
        }
        None => {
            let mut head = first.to_vec();
            drop(first);
            let (n, cl) = loop {
                let b = from.recv().await?.ok_or_else(eof)?;
                if head.len() > 64 << 10 {
                    return Err(io::Error::other("a head over 64 KiB"));
                }
                head.extend_from_slice(&b);
                if let Some(x) = common::parse(&head, request)? {
                    break x;
                }
            };
            let total = n.saturating_add(cl);
            let sent = head.len().min(total);
            to.send_all(head).await.0?;
            total - sent
        }
    };
    while left > 0 {
        let b = from.recv().await?.ok_or_else(eof)?;
        left -= b.len().min(left);
        to.send_all(b).await.0?;
    }
    Ok(true)
}

async fn serve(mut client: TcpStream, upstream: SocketAddr) -> io::Result<()> {
    let mut up: Option<TcpStream> = None;
    loop {
        // The upstream connection is opened once the first request has arrived.
        if up.is_none() {
            let Some(first) = client.recv().await? else {
                return Ok(());
            };
            let s = TcpStream::connect(upstream).await?;
            let _ = s.set_nodelay(true);
            // The first buffer of the first request: framed like any other.
            let mut left = match common::parse(&first, true)? {
                Some((n, cl)) => n.saturating_add(cl).saturating_sub(first.len()),
                None => return Err(io::Error::other("a first request head over one buffer")),
            };
            s.send_all(first).await.0?;
            while left > 0 {
                let b = client.recv().await?.ok_or_else(eof)?;
                left -= b.len().min(left);
                s.send_all(b).await.0?;
            }
            up = Some(s);
        } else if !forward(&mut client, up.as_mut().unwrap(), true).await? {
            return Ok(());
        }
        let u = up.as_mut().unwrap();
        if !forward(u, &mut client, false).await? {
            return Ok(());
        }
    }
}
