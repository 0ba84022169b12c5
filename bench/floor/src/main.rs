//! The runtime floor: the least an HTTP/1.1 keep-alive forwarder on monoio's io_uring driver
//! can do per request. Each client connection gets its own upstream connection; requests and
//! responses are framed by Content-Length (no chunked, no rewriting, no routing, no pool, no
//! timeouts) and forwarded byte for byte as they arrive. scripts/bench.py runs it as the
//! `floor` system beside Tollgate so that the cost of everything Tollgate does on top of the
//! runtime shows in the same run.
//!
//!   tollgate-floor LISTEN_ADDR UPSTREAM_ADDR

mod common;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

const BUF: usize = 16 * 1024;

fn main() {
    let (listen, upstream) = common::args("tollgate-floor");
    // The same setup flags as Tollgate's default.
    let mut urb = io_uring::IoUring::builder();
    urb.setup_coop_taskrun();
    urb.setup_taskrun_flag();
    urb.setup_single_issuer();
    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(1024)
        .uring_builder(urb)
        .enable_timer()
        .build()
        .expect("io_uring runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&listen).expect("bind");
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let up = upstream.clone();
            monoio::spawn(async move {
                let _ = serve(client, &up).await;
            });
        }
    });
}

/// Reads one message head into `buf[..*len]` and returns (head length, content length).
async fn read_head(
    s: &mut TcpStream,
    mut buf: Vec<u8>,
    request: bool,
) -> (std::io::Result<Option<(usize, usize)>>, Vec<u8>) {
    loop {
        if !buf.is_empty() {
            match common::parse(&buf, request) {
                Ok(Some(x)) => return (Ok(Some(x)), buf),
                Ok(None) => {}
                Err(e) => return (Err(e), buf),
            }
        }
        if buf.len() == buf.capacity() {
            buf.reserve(BUF);
        }
        let start = buf.len();
        let (r, b) = s.read(buf.slice_mut(start..)).await;
        buf = b.into_inner();
        match r {
            Ok(0) => return (Ok(None), buf),
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
}

/// Sends what is in `buf` (one head and the start of its body) and then the rest of the body
/// as it arrives on `from`; leaves `buf` empty.
async fn relay(
    from: &mut TcpStream,
    to: &mut TcpStream,
    mut buf: Vec<u8>,
    total: usize,
) -> (std::io::Result<()>, Vec<u8>) {
    let mut left = total;
    loop {
        let n = buf.len().min(left);
        let (r, b) = to.write_all(buf.slice(..n)).await;
        buf = b.into_inner();
        if let Err(e) = r {
            return (Err(e), buf);
        }
        left -= n;
        buf.clear();
        if left == 0 {
            return (Ok(()), buf);
        }
        let (r, b) = from.read(buf).await;
        buf = b;
        match r {
            Ok(0) => return (Err(std::io::ErrorKind::UnexpectedEof.into()), buf),
            Ok(_) => {}
            Err(e) => return (Err(e), buf),
        }
    }
}

async fn serve(mut client: TcpStream, upstream: &str) -> std::io::Result<()> {
    let mut up: Option<TcpStream> = None;
    let mut cbuf = Vec::with_capacity(BUF);
    let mut ubuf = Vec::with_capacity(BUF);
    loop {
        let (r, b) = read_head(&mut client, cbuf, true).await;
        cbuf = b;
        let Some((head, cl)) = r? else { return Ok(()) };
        if up.is_none() {
            let s = TcpStream::connect(upstream).await?;
            let _ = s.set_nodelay(true);
            up = Some(s);
        }
        let u = up.as_mut().unwrap();
        let (r, b) = relay(&mut client, u, cbuf, head + cl).await;
        cbuf = b;
        r?;
        let (r, b) = read_head(u, ubuf, false).await;
        ubuf = b;
        let Some((head, cl)) = r? else { return Ok(()) };
        let (r, b) = relay(u, &mut client, ubuf, head + cl).await;
        ubuf = b;
        r?;
    }
}
