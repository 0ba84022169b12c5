//! Whether this kernel has what the runtime needs, asked once per process.

use io_uring::{opcode, IoUring};

use super::reactor::BGID;

/// Whether this kernel has what the runtime needs (multishot accept and receive, provided
/// buffer rings: Linux 6.0). The first call builds a small ring and asks; later calls give
/// the same answer without one (a process at its open-file limit still gets it).
pub fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(probe)
}

fn probe() -> bool {
    let Ok(ring) = IoUring::new(8) else {
        return false;
    };
    let mut probe = io_uring::Probe::new();
    if ring.submitter().register_probe(&mut probe).is_err() {
        return false;
    }
    let ops = [
        opcode::AcceptMulti::CODE,
        opcode::RecvMulti::CODE,
        opcode::Send::CODE,
        opcode::Connect::CODE,
        opcode::PollAdd::CODE,
        opcode::AsyncCancel::CODE,
        opcode::Close::CODE,
    ];
    if !ops.iter().all(|&c| probe.is_supported(c)) || !ring.params().is_feature_ext_arg() {
        return false;
    }
    // Provided-buffer rings (5.19) and multishot receive (6.0) are not in the probe: register
    // a one-entry ring and unregister it.
    let layout = std::alloc::Layout::from_size_align(4096, 4096).expect("page layout");
    // SAFETY: a non-zero-sized layout; the memory is freed below, after the ring lets go.
    let mem = unsafe { std::alloc::alloc_zeroed(layout) };
    if mem.is_null() {
        return false;
    }
    // SAFETY: `mem` is page-aligned, zeroed, and outlives the registration.
    let ok = unsafe { ring.submitter().register_buf_ring(mem as u64, 1, BGID) }.is_ok();
    if ok {
        let _ = ring.submitter().unregister_buf_ring(BGID);
    }
    drop(ring);
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(mem, layout) };
    ok && kernel_at_least(6, 0)
}

pub(super) fn kernel_at_least(major: u32, minor: u32) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release.trim().split(['.', '-']);
    let ma: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let mi: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (ma, mi) >= (major, minor)
}
