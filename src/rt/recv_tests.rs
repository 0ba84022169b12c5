//! How far a client's receive runs ahead of a reader that stops.

use std::io::{Read, Write};
use std::time::Duration;

use super::net::{TcpListener, TcpStream};
use super::tests::inq;
use super::*;

const BUF: usize = 16 << 10;

/// A reader that takes one buffer and stops (a client that sends and does not read its
/// answers): its receive runs to `RECV_LIMIT` bytes (and at most one buffer more), where the
/// kernel ends it, and once the reader asks again, as far again; the rest waits in the kernel.
/// Without a limit (kernels before 6.17), the runtime pauses the receive (or the ring runs
/// dry) and, from then on, receives one buffer per operation, only when asked. Every byte
/// arrives, in order.
#[test]
fn a_receive_runs_to_its_limit_ahead_of_a_reader_that_stops() {
    if !supported() {
        return;
    }
    for limit in [true, false] {
        let (ahead, limited, _) = ahead_of_a_stopped_reader(limit, None);
        if limit && probe::kernel_at_least(6, 17) {
            assert!(limited, "Linux 6.17 takes a limit on a multishot receive");
        }
        if limited {
            let (least, most) = (
                reactor::RECV_LIMIT as usize - BUF,
                reactor::RECV_LIMIT as usize + BUF,
            );
            assert!(
                ahead.iter().all(|a| (least..=most).contains(a)),
                "received ahead of the reader {ahead:?}: the receive ran to its limit, \
                 {least}..={most} bytes past what the reader took, each time"
            );
        } else {
            assert!(ahead[0] > 0, "the receive ran ahead at first ({ahead:?})");
            assert_eq!(
                ahead[1], 0,
                "paused once, a receive is armed only when asked ({ahead:?})"
            );
        }
    }
}

/// A reader that says it has room for 4 KiB (as a connection's reader of request heads does):
/// its receives take 4 KiB at a time and end there, so a client that sends and does not read
/// has at most about that much received ahead of its reader, not a ring buffer's worth or
/// the limit's; without a limit, once paused, one buffer of at most 4 KiB per operation.
#[test]
fn a_reader_with_little_room_has_little_received_ahead() {
    if !supported() {
        return;
    }
    const ROOM: usize = reactor::RECV_MIN as usize;
    for limit in [true, false] {
        let (ahead, limited, biggest) = ahead_of_a_stopped_reader(limit, Some(ROOM));
        if limited {
            assert!(
                ahead.iter().all(|a| *a <= 2 * ROOM),
                "received ahead of the reader {ahead:?}: at most twice its room ({ROOM})"
            );
        } else {
            assert_eq!(
                ahead[1], 0,
                "paused once, armed only when asked ({ahead:?})"
            );
        }
        assert!(
            biggest <= ROOM,
            "each receive after the first stop took at most the reader's room: {biggest}"
        );
    }
}

/// A runtime of 64 ring buffers of `BUF` bytes, and a listener on a free local port.
fn runtime_and_listener() -> (Builder, std::net::TcpListener, std::net::SocketAddr) {
    let b = Builder {
        buf_size: BUF as u32,
        bufs: 64,
        ..Builder::default()
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (b, l, addr)
}

/// Bytes received ahead of a reader that stopped, twice; whether receives had a limit; the
/// biggest result once the reader reads on. `want`: the room the reader says it has.
fn ahead_of_a_stopped_reader(limit: bool, want: Option<usize>) -> ([usize; 2], bool, usize) {
    let (b, l, addr) = runtime_and_listener();
    const SENT: usize = 4 << 20;
    let big: Vec<u8> = (0..SENT as u32).map(|i| (i % 251) as u8).collect();
    let sent = big.clone();
    let peer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&sent).unwrap();
        let mut end = [0u8; 1];
        let _ = s.read(&mut end);
    });
    let (got, ahead, limited, biggest) = block_on(b, async move {
        exec::with(|rt| rt.reactor.recv_limit.set(limit));
        let mut l = TcpListener::from_std(l);
        let s = l.accept().await.unwrap();
        if let Some(w) = want {
            s.want(w);
        }
        let mut got = s.recv().await.unwrap().unwrap().to_vec();
        let mut ahead = [0; 2];
        for a in &mut ahead {
            // The reader stops; the runtime turns meanwhile (as it would for other tasks)
            // until the receive has ended (at its limit, or paused), or 10 s have gone.
            stopped(&s).await;
            while let Some(b) = s.try_recv() {
                *a += b.len();
                got.extend_from_slice(&b);
            }
            // Then asks once more.
            got.extend_from_slice(&s.recv().await.unwrap().unwrap());
        }
        let mut biggest = 0;
        while got.len() < SENT {
            let b = s.recv().await.unwrap().unwrap();
            biggest = biggest.max(b.len());
            got.extend_from_slice(&b);
        }
        let (r, _) = s.send_all(&b"x"[..]).await;
        r.unwrap();
        let limited = exec::with(|rt| rt.reactor.recv_limit.get());
        (got, ahead, limited, biggest)
    })
    .unwrap();
    peer.join().unwrap();
    assert!(got == big, "every byte arrives, in order");
    (ahead, limited, biggest)
}

/// Turns the runtime until `s` has no receive the kernel may still feed, and some of the
/// peer's bytes wait in the kernel (or 10 s have gone). How many wait depends on the socket's
/// receive buffer (24-28 KiB were seen with two such tests at once), so any will do.
async fn stopped(s: &TcpStream) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (s.receiving() || inq(s) == 0) && std::time::Instant::now() < deadline {
        sleep(Duration::from_millis(1)).await;
    }
}

/// The limits ride in the entry's `len` (bytes 24..28 of the kernel's 64-byte entry: each
/// result) and `optlen` (44..48: in all); the rest of the entry is the multishot receive as
/// built.
#[test]
fn the_limits_are_the_entrys_len_and_optlen() {
    let e = || io_uring::opcode::RecvMulti::new(io_uring::types::Fd(7), reactor::BGID).build();
    // SAFETY: an entry is the kernel's 64-byte `io_uring_sqe` (`repr(C)`, no drop glue).
    let plain: [u8; 64] = unsafe { std::mem::transmute(e()) };
    let limited: [u8; 64] = unsafe { std::mem::transmute(reactor::recv_limited(e(), 4096, 65536)) };
    assert_eq!(&limited[24..28], &4096u32.to_ne_bytes());
    assert_eq!(&limited[44..48], &65536u32.to_ne_bytes());
    assert_eq!(&plain[24..28], &[0; 4]);
    assert_eq!(&plain[44..48], &[0; 4]);
    assert_eq!(plain[..24], limited[..24]);
    assert_eq!(plain[28..44], limited[28..44]);
    assert_eq!(plain[48..], limited[48..]);
}

/// A client that trickles bytes, one per segment, while its reader has stopped: past the few
/// results kept in ring buffers, what comes is copied out into one heap buffer, not into a
/// result and an allocation per segment (3,629 of them for 4 KiB before: tens of bytes of
/// memory per byte received).
#[test]
fn a_trickling_client_is_copied_out_into_one_buffer() {
    if !supported() || !probe::kernel_at_least(6, 17) {
        return;
    }
    const SENT: usize = reactor::RECV_MIN as usize;
    let (b, l, addr) = runtime_and_listener();
    let peer = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        for _ in 0..SENT {
            s.write_all(b"x").unwrap();
            std::thread::sleep(Duration::from_micros(20));
        }
        let mut end = [0u8; 1];
        let _ = s.read(&mut end);
    });
    let (got, results) = block_on(b, async move {
        let mut l = TcpListener::from_std(l);
        let s = l.accept().await.unwrap();
        s.want(SENT);
        let mut got = s.recv().await.unwrap().unwrap().len();
        // The reader stops until the receive has ended at its limit (all SENT bytes), or 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.receiving() && std::time::Instant::now() < deadline {
            sleep(Duration::from_millis(1)).await;
        }
        let mut results = 0;
        while let Some(b) = s.try_recv() {
            results += 1;
            got += b.len();
        }
        let (r, _) = s.send_all(&b"x"[..]).await;
        r.unwrap();
        (got, results)
    })
    .unwrap();
    peer.join().unwrap();
    assert_eq!(got, SENT, "every byte arrives");
    assert!(
        results <= reactor::RING_HOLD + 1,
        "{results} results waited: at most {} in ring buffers and one copied out",
        reactor::RING_HOLD
    );
}
