//! What a thread's runtime offers the rest of Tollgate, whichever runtime it is: Tollgate's
//! own io_uring runtime ([`crate::rt`]: multishot accept and receive into provided buffers) or
//! monoio's (its io_uring driver, or epoll). The rest of the crate spawns, sleeps and does
//! TCP through here; each call asks the thread which runtime it runs (one thread-local flag).
//!
//! - [`spawn`] adds a task; [`time`] has `sleep`, `sleep_until`, `timeout` and `timeout_at`;
//!   [`net`] has `TcpStream` (monoio's read and write traits, so TLS, HTTP/2 and the relays
//!   run on either) and `TcpListener`.
//! - [`guarded`] wraps a task that serves clients so that a panic in it ends that task only.
//! - [`block_on_own`] runs a future on a new runtime of Tollgate's own on this thread; a
//!   thread running monoio needs nothing (the flag is off).

mod guard;
pub(crate) mod net;
pub(crate) mod time;

pub use guard::install_hook;
pub(crate) use guard::{guarded, quietly, Guarded, PANICS};

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    static OWN: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs Tollgate's own runtime.
#[inline]
pub(crate) fn own() -> bool {
    OWN.with(|o| o.get())
}

/// Clears the flag when the runtime ends (or unwinds).
struct Own;

impl Drop for Own {
    fn drop(&mut self) {
        OWN.with(|o| o.set(false));
    }
}

/// Runs `fut` to completion on a new runtime of Tollgate's own on this thread.
pub(crate) fn block_on_own<F: Future>(b: crate::rt::Builder, fut: F) -> io::Result<F::Output> {
    OWN.with(|o| o.set(true));
    let _own = Own;
    crate::rt::block_on(b, fut)
}

/// Adds a task to this thread's runtime.
pub(crate) fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    if own() {
        JoinHandle::Own(crate::rt::spawn(fut))
    } else {
        JoinHandle::Mono(monoio::spawn(fut))
    }
}

/// Adds the task `make` builds to this thread's runtime, for no one to await (a connection,
/// an HTTP/2 stream). On the own runtime: no join state (one allocation, the future's), and
/// the future is built straight into its box (a connection's is over a kilobyte).
#[inline(always)]
pub(crate) fn spawn_detached<F: Future<Output = ()> + 'static>(make: impl FnOnce() -> F) {
    if own() {
        // As `memory::boxed` (which this module may not use: memory depends on it).
        let slot = Box::<F>::new_uninit();
        let fut: Pin<Box<F>> = Box::into_pin(Box::write(slot, make()));
        crate::rt::spawn_detached(fut)
    } else {
        drop(monoio::spawn(make()))
    }
}

/// A spawned task's result; dropping it detaches the task.
pub(crate) enum JoinHandle<T> {
    Mono(monoio::task::JoinHandle<T>),
    Own(crate::rt::JoinHandle<T>),
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            JoinHandle::Mono(h) => Pin::new(h).poll(cx),
            JoinHandle::Own(h) => Pin::new(h).poll(cx),
        }
    }
}
