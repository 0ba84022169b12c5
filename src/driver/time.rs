//! Timers on this thread's runtime: `sleep`, `sleep_until`, `timeout`, `timeout_at`.
//!
//! On Tollgate's own runtime a timer is 32 bytes in its future (one entry in the thread's
//! timer wheel while it waits); monoio's (640 bytes, aligned to 128) is boxed, so that a future
//! holding a timer stays small on both.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A timer: resolves at its deadline.
pub(crate) enum Sleep {
    Mono(Pin<Box<monoio::time::Sleep>>),
    Own(crate::rt::Sleep),
}

/// The time for timers and bookkeeping that need no better than a millisecond: on Tollgate's
/// own runtime the clock as read once per turn ([`crate::rt::now`]), elsewhere the clock.
/// Reported latencies take it for the moments bytes arrived (a request's head, an answer's
/// head: the turn's clock was read as they were reaped) and read the clock for the others (an
/// exchange's start, a request's end).
pub(crate) fn now() -> Instant {
    if super::own() {
        crate::rt::now()
    } else {
        Instant::now()
    }
}

/// Resolves after `d` (never, if `d` runs past what an `Instant` can hold).
pub(crate) fn sleep(d: Duration) -> Sleep {
    if super::own() {
        Sleep::Own(crate::rt::sleep(d))
    } else {
        Sleep::Mono(Box::pin(monoio::time::sleep(d)))
    }
}

/// Resolves at `deadline`.
pub(crate) fn sleep_until(deadline: Instant) -> Sleep {
    if super::own() {
        Sleep::Own(crate::rt::sleep_until(deadline))
    } else {
        Sleep::Mono(Box::pin(monoio::time::sleep_until(deadline.into())))
    }
}

impl Sleep {
    /// Resolves at `deadline` instead.
    pub(crate) fn reset(&mut self, deadline: Instant) {
        match self {
            Sleep::Mono(s) => s.as_mut().reset(deadline.into()),
            Sleep::Own(s) => s.reset(deadline),
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Sleep::Mono(s) => s.as_mut().poll(cx),
            Sleep::Own(s) => Pin::new(s).poll(cx),
        }
    }
}

/// A deadline passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project_lite::pin_project! {
    /// `fut`, unless its deadline passes first.
    pub(crate) struct Timeout<F> {
        #[pin]
        fut: F,
        sleep: Sleep,
    }
}

/// Runs `fut` for at most `d`.
pub(crate) fn timeout<F: Future>(d: Duration, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep(d),
    }
}

/// Runs `fut` until `deadline` at the latest.
pub(crate) fn timeout_at<F: Future>(deadline: Instant, fut: F) -> Timeout<F> {
    Timeout {
        fut,
        sleep: sleep_until(deadline),
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}
