//! Memory a shard gives back: futures boxed without a copy through the stack, and freed pages
//! handed back to the OS when a quiet shard's connections have gone idle.

use std::time::{Duration, Instant};

thread_local! {
    /// Whether this shard has a collection of freed memory scheduled.
    static COLLECT_PENDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How long after connections start going idle the shard looks at whether it is quiet.
const COLLECT_AFTER: Duration = Duration::from_secs(1);
/// A shard that used less CPU than this over [`COLLECT_AFTER`] is quiet.
const QUIET_CPU: Duration = Duration::from_millis(20);

/// Connections going idle free their read buffers; the allocator returns freed pages to the
/// OS only when the thread allocates or frees again, which a quiet shard does not. A second
/// after the first of a batch of connections goes idle (once per second, however many do),
/// a shard that was quiet meanwhile (under 2 % of a CPU) asks the allocator to hand back
/// what is free, so that idle connections cost what they hold and not what they once used
/// (10,000 idle connections: 3.1 KB of RSS each without it, 1.7 KB with). That takes a few
/// milliseconds for tens of megabytes, so a busy shard skips it (its own allocations purge
/// freed pages as they go). Each connection going idle pays one flag test.
pub(crate) fn release_freed_memory_soon() {
    if COLLECT_PENDING.replace(true) {
        return;
    }
    crate::driver::spawn(async {
        let before = thread_cpu();
        crate::driver::time::sleep(COLLECT_AFTER).await;
        COLLECT_PENDING.set(false);
        let quiet = match (before, thread_cpu()) {
            (Some(a), Some(b)) => b.saturating_sub(a) < QUIET_CPU,
            _ => false,
        };
        if !quiet {
            return;
        }
        let t = Instant::now();
        // SAFETY: mi_collect takes no pointers; it walks this thread's own heap (the global
        // allocator in the binary; an unused heap elsewhere) and frees nothing in use.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_collect(true)
        };
        tracing::debug!(
            took_us = t.elapsed().as_micros() as u64,
            "freed memory handed back"
        );
    });
}

/// CPU time this thread has used (None if the clock is unavailable: the shard then counts as
/// busy).
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's length.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// A future moved onto the heap without passing through the stack: `Box::pin(f())` builds the
/// future in a stack slot as large as its largest state (the request pipeline's is ~14 KB)
/// and copies all of it into the box, once per request; with the box allocated first, the
/// future is written straight into it (only its first state's few hundred bytes).
#[inline(always)]
pub(crate) fn boxed<F>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let slot = Box::<F>::new_uninit();
    Box::into_pin(Box::write(slot, make()))
}
