//! Tollgate's own shard runtime on io_uring: one executor and one ring per thread, with what
//! monoio 0.2.4 does not use — multishot accept, multishot receive into a provided-buffer
//! ring (a connection owns no buffer while it waits; a buffer goes back to the ring when the
//! bytes in it are used), sends straight from received buffers — and one timer wheel per
//! thread.
//!
//! The module stands alone (std, `io-uring`, `libc`, `pin-project-lite`): `bench/floor` includes its source to
//! measure a forwarder on it beside the monoio and raw-ring floors.
//!
//! - [`block_on`] runs a future on this thread with a new runtime; [`spawn`] adds a task.
//! - [`net::TcpListener::accept`] and [`net::TcpStream::recv`] are multishot operations armed
//!   once and fed by the kernel; [`net::TcpStream::send`] takes its buffer by value (an
//!   [`net::IoBuf`], whose bytes stay put when it moves; the kernel may still read it after a
//!   cancelled future is dropped: the buffer stays with the operation until its completion).
//! - Ring-full is back-pressure (the submission queue is flushed to the kernel and the push
//!   retried); buffer exhaustion is back-pressure (a receive that found no buffer waits for
//!   one to be given back, then re-arms).
//!
//! Kernel needs: 5.19 (multishot accept, provided-buffer rings), 6.0 (multishot receive);
//! [`supported`] says whether this kernel has them.

#![allow(unsafe_code)]

mod addr;
mod bufs;
mod exec;
mod multi;
pub mod net;
mod probe;
mod reactor;
#[cfg(test)]
mod recv_tests;
mod sendbufs;
#[cfg(test)]
mod tests;
mod time;
#[doc(hidden)]
pub mod wheel;

pub use bufs::RecvBuf;
pub use exec::{block_on, spawn, spawn_detached, JoinHandle};
pub use probe::supported;
pub use reactor::Builder;
pub use time::{now, sleep, sleep_until, Sleep};
