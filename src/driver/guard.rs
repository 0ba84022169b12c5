//! Tasks that serve clients run [`guarded`]: a panic in one (a defect, whatever input caused
//! it) ends that task only. Its connection closes, the panic is counted
//! (`tollgate_panics_total`) and logged, and the shard goes on serving everyone else, as a
//! Tokio task's panic would leave its runtime running. Without this a panic unwinds out of
//! the shard's executor and ends the shard thread, whose listeners then accept connections
//! nobody answers.
//!
//! [`install_hook`] bounds what panics write to stderr: the first few of each minute in full,
//! the rest counted, so no client that finds a panic can turn it into unbounded log volume.
//! The hook's window is shared by every thread (a panic can happen on any): a `Mutex` taken
//! only while a panic is being reported, never on a request's way.
#![allow(clippy::disallowed_types)]

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Panics caught in guarded tasks since the process started.
pub(crate) static PANICS: AtomicU64 = AtomicU64::new(0);

/// Panics written in full per [`WINDOW`]; the rest of the window's are counted.
const SHOWN: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);

/// `fut`, with a panic in it caught: the future then ends (`Ready(())`) and is dropped.
pub(crate) fn guarded<F: Future<Output = ()>>(fut: F) -> Guarded<F> {
    Guarded(fut)
}

/// See [`guarded`].
pub(crate) struct Guarded<F>(F);

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: structural pinning of the only field: it is never moved out of `self`
        // and `Guarded` has no `Drop` or `Unpin` of its own.
        #[allow(unsafe_code)]
        let fut = unsafe { self.map_unchecked_mut(|g| &mut g.0) };
        // AssertUnwindSafe: after a panic the future is only dropped, never polled again (an
        // async fn's state is then empty: its locals were dropped by the unwinding). Shared
        // state it had borrowed was released by the same unwinding (`RefCell` guards drop).
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(p) => p,
            Err(_) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(())
            }
        }
    }
}

thread_local! {
    /// Set while [`quietly`] runs: a panic there is caught and reported by the caller.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's panics left unreported by the hook: for a caller that catches
/// them and says what they meant (a damaged state file read by redb), not with a backtrace.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            QUIET.with(|q| q.set(self.0));
        }
    }
    let _reset = Reset(QUIET.with(|q| q.replace(true)));
    f()
}

/// Installs the process's panic hook: the default report for the first [`SHOWN`] panics of
/// each minute; the next panic after a minute with more first says how many were not shown.
pub fn install_hook() {
    let default = std::panic::take_hook();
    let window: Mutex<Option<(Instant, u32)>> = Mutex::new(None);
    std::panic::set_hook(Box::new(move |info| {
        if QUIET.with(std::cell::Cell::get) {
            return;
        }
        let now = Instant::now();
        let (show, hidden) = {
            let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
            match w.as_mut() {
                Some((start, n)) if now.duration_since(*start) < WINDOW => {
                    *n += 1;
                    (*n <= SHOWN, 0)
                }
                _ => {
                    let hidden = w.map_or(0, |(_, n)| n.saturating_sub(SHOWN));
                    *w = Some((now, 1));
                    (true, hidden)
                }
            }
        };
        if hidden > 0 {
            eprintln!("tollgate: {hidden} more panics in an earlier minute were not shown");
        }
        if show {
            default(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A task that panics ends alone: the runtime's other tasks and the caller go on, and the
    /// panic is counted. On Tollgate's own runtime and on monoio's.
    #[test]
    fn a_panicking_task_ends_alone() {
        async fn scenario() -> u32 {
            let before = PANICS.load(Ordering::Relaxed);
            let done = Rc::new(Cell::new(0u32));
            let d = done.clone();
            let boom = crate::driver::spawn(guarded(async move {
                crate::driver::time::sleep(Duration::from_millis(1)).await;
                if d.get() == 0 {
                    panic!("a defect in one request");
                }
            }));
            let d = done.clone();
            let other = crate::driver::spawn(guarded(async move {
                crate::driver::time::sleep(Duration::from_millis(5)).await;
                d.set(d.get() + 1);
            }));
            boom.await;
            other.await;
            assert!(PANICS.load(Ordering::Relaxed) > before);
            done.get()
        }
        let own = crate::driver::block_on_own(crate::rt::Builder::default(), scenario()).unwrap();
        assert_eq!(own, 1);
        let mono = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(scenario());
        assert_eq!(mono, 1);
    }
}
