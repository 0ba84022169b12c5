//! What driving io_uring directly buys: the same keep-alive forwarder as the monoio floor
//! (one upstream connection per client connection, bytes relayed as they arrive), written
//! against the io-uring crate with what monoio 0.2.4 does not use: multishot accept, multishot
//! recv into a provided-buffer ring (one SQE per connection and side for its whole life
//! instead of one per read) and sends straight from the ring's buffers. It frames nothing (a
//! pure byte relay; Tollgate's head parse is ~0.14 µs), so it is a floor below the floor.
//! scripts/bench.py runs it as the `floor-uring` system.
//!
//!   tollgate-floor-uring LISTEN_ADDR UPSTREAM_ADDR
//!
//! FLOOR_DEFER=1 adds IORING_SETUP_DEFER_TASKRUN to COOP_TASKRUN + SINGLE_ISSUER.

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;

use std::collections::VecDeque;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

const BUF_SIZE: usize = 16 * 1024;
const BUFS: u16 = 1024; // a power of two
const BGID: u16 = 0;

const OP_ACCEPT: u64 = 0;
const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;

fn ud(op: u64, conn: usize, side: usize) -> u64 {
    op | (side as u64) << 4 | (conn as u64) << 8
}

/// One direction's pending sends: buffer ids of the ring, each with its filled length and how
/// much of it has gone out. The head is in flight.
#[derive(Default)]
struct Out {
    queue: VecDeque<(u16, usize, usize)>,
    busy: bool,
}

struct Conn {
    fds: [RawFd; 2], // 0 = client, 1 = upstream
    out: [Out; 2],   // out[i]: what is being sent to fds[i]
    recv_armed: [bool; 2],
    closing: bool,
    inflight: usize,
}

struct Ring {
    entries: *mut types::BufRingEntry,
    mem: Vec<u8>,
    tail: u16,
}

impl Ring {
    fn buf(&self, bid: u16) -> *const u8 {
        unsafe { self.mem.as_ptr().add(bid as usize * BUF_SIZE) }
    }
    /// Gives a buffer back to the kernel.
    fn recycle(&mut self, bid: u16) {
        unsafe {
            let e = &mut *self.entries.add((self.tail & (BUFS - 1)) as usize);
            e.set_addr(self.buf(bid) as u64);
            e.set_len(BUF_SIZE as u32);
            e.set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let t = types::BufRingEntry::tail(self.entries) as *const std::sync::atomic::AtomicU16;
            (*t).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

fn push(ring: &mut IoUring, e: squeue::Entry) {
    while unsafe { ring.submission().push(&e) }.is_err() {
        ring.submit().expect("submit");
    }
}

fn arm_recv(ring: &mut IoUring, c: &mut Conn, id: usize, side: usize) {
    let e = opcode::RecvMulti::new(types::Fd(c.fds[side]), BGID)
        .build()
        .user_data(ud(OP_RECV, id, side));
    push(ring, e);
    c.recv_armed[side] = true;
    c.inflight += 1;
}

fn send_next(ring: &mut IoUring, bufs: &Ring, c: &mut Conn, id: usize, to: usize) {
    if c.out[to].busy {
        return;
    }
    if let Some(&(bid, len, done)) = c.out[to].queue.front() {
        let p = unsafe { bufs.buf(bid).add(done) };
        let e = opcode::Send::new(types::Fd(c.fds[to]), p, (len - done) as u32)
            .build()
            .user_data(ud(OP_SEND, id, to));
        push(ring, e);
        c.out[to].busy = true;
        c.inflight += 1;
    }
}

fn main() -> io::Result<()> {
    let (listen, upstream) = common::args("tollgate-floor-uring");
    let mut b = IoUring::builder();
    b.setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_single_issuer();
    if std::env::var_os("FLOOR_DEFER").is_some() {
        b.setup_defer_taskrun();
    }
    let mut ring = b.build(4096)?;

    // The provided-buffer ring: BUFS entries (page aligned) and BUFS buffers.
    let layout = std::alloc::Layout::from_size_align(BUFS as usize * 16, 4096).unwrap();
    let entries = unsafe { std::alloc::alloc_zeroed(layout) } as *mut types::BufRingEntry;
    let mut bufs = Ring {
        entries,
        mem: vec![0u8; BUFS as usize * BUF_SIZE],
        tail: 0,
    };
    unsafe {
        ring.submitter()
            .register_buf_ring(entries as u64, BUFS, BGID)?
    };
    for bid in 0..BUFS {
        bufs.recycle(bid);
    }

    let listener = TcpListener::bind(&listen)?;
    let lfd = listener.as_raw_fd();
    push(
        &mut ring,
        opcode::AcceptMulti::new(types::Fd(lfd))
            .build()
            .user_data(ud(OP_ACCEPT, 0, 0)),
    );
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(4096);

    loop {
        ring.submit_and_wait(1)?;
        cqes.clear();
        cqes.extend(ring.completion());
        for cqe in cqes.iter() {
            let data = cqe.user_data();
            let (op, side, id) = (
                data & 0xf,
                ((data >> 4) & 0xf) as usize,
                (data >> 8) as usize,
            );
            let res = cqe.result();
            match op {
                OP_ACCEPT => {
                    if !cqueue::more(cqe.flags()) {
                        push(
                            &mut ring,
                            opcode::AcceptMulti::new(types::Fd(lfd))
                                .build()
                                .user_data(ud(OP_ACCEPT, 0, 0)),
                        );
                    }
                    if res < 0 {
                        continue;
                    }
                    let cfd = res;
                    let Ok(up) = TcpStream::connect(&upstream) else {
                        unsafe { libc::close(cfd) };
                        continue;
                    };
                    let _ = up.set_nodelay(true);
                    let one: libc::c_int = 1;
                    unsafe {
                        libc::setsockopt(
                            cfd,
                            libc::IPPROTO_TCP,
                            libc::TCP_NODELAY,
                            &one as *const _ as *const libc::c_void,
                            4,
                        )
                    };
                    let c = Conn {
                        fds: [cfd, up.into_raw_fd()],
                        out: Default::default(),
                        recv_armed: [false; 2],
                        closing: false,
                        inflight: 0,
                    };
                    let id = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    conns[id] = Some(c);
                    let c = conns[id].as_mut().unwrap();
                    arm_recv(&mut ring, c, id, 0);
                    arm_recv(&mut ring, c, id, 1);
                }
                OP_RECV => {
                    let Some(c) = conns[id].as_mut() else {
                        continue;
                    };
                    c.inflight -= 1;
                    let more = cqueue::more(cqe.flags());
                    if more {
                        c.inflight += 1;
                    } else {
                        c.recv_armed[side] = false;
                    }
                    if res > 0 {
                        let bid = cqueue::buffer_select(cqe.flags()).expect("buffer id");
                        let to = 1 - side;
                        if c.closing {
                            bufs.recycle(bid);
                        } else {
                            c.out[to].queue.push_back((bid, res as usize, 0));
                            send_next(&mut ring, &bufs, c, id, to);
                        }
                        if !more && !c.closing {
                            arm_recv(&mut ring, c, id, side);
                        }
                    } else if res == -libc::ENOBUFS {
                        if !more && !c.closing {
                            arm_recv(&mut ring, c, id, side);
                        }
                    } else if !c.closing {
                        // EOF or error on either side: shut both down; close once idle.
                        c.closing = true;
                        for fd in c.fds {
                            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                        }
                    }
                }
                OP_SEND => {
                    let Some(c) = conns[id].as_mut() else {
                        continue;
                    };
                    c.inflight -= 1;
                    c.out[side].busy = false;
                    let (bid, len, done) = *c.out[side].queue.front().unwrap();
                    if res <= 0 || c.closing {
                        if !c.closing {
                            c.closing = true;
                            for fd in c.fds {
                                unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                            }
                        }
                        while let Some((bid, _, _)) = c.out[side].queue.pop_front() {
                            bufs.recycle(bid);
                        }
                    } else if done + res as usize == len {
                        c.out[side].queue.pop_front();
                        bufs.recycle(bid);
                        send_next(&mut ring, &bufs, c, id, side);
                    } else {
                        c.out[side].queue.front_mut().unwrap().2 += res as usize;
                        send_next(&mut ring, &bufs, c, id, side);
                    }
                }
                _ => {}
            }
            if let Some(c) = conns[id].as_ref() {
                if op != OP_ACCEPT && c.closing && c.inflight == 0 {
                    let c = conns[id].take().unwrap();
                    for o in c.out.iter() {
                        for &(bid, _, _) in o.queue.iter() {
                            bufs.recycle(bid);
                        }
                    }
                    for fd in c.fds {
                        unsafe { libc::close(fd) };
                    }
                    free.push(id);
                }
            }
        }
    }
}
