//! What a WebSocket connection whose client sends and never reads may hold: this test counts
//! every byte the process allocates while such clients ask for replies far past the
//! connection's output budget, and compares the live heap with that budget (before it, each
//! such connection held about 1 MiB of replies in its writer's queue).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use tungstenite::Message;

use common::*;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to the system allocator with the same arguments and only
// adds a relaxed counter update; a counting allocator cannot be written without `unsafe`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn a_client_that_does_not_read_holds_the_output_budget_not_its_replies() {
    const CLIENTS: usize = 8;
    const REPLY: usize = 32 << 10;
    // A mock: no backend in this process to count.
    let g = Gw::start(
        &Cfg::new()
            .api_extra("kind = \"websocket\"")
            .routes(format!(
                "[[apis.routes]]\nroute = \"big\"\nroute_response = true\nintegration = {{ type = \"mock\", status = 200, body = '{}' }}\n",
                "r".repeat(REPLY)
            ))
            .toml(),
    );
    let mut clients: Vec<_> = (0..CLIENTS).map(|_| slow_client(&g)).collect();
    let base = LIVE.load(Ordering::Relaxed);
    // Each asks for 200 replies (6.4 MiB) and reads none.
    for ws in &mut clients {
        for _ in 0..200 {
            ws.send(Message::text(r#"{"action":"big"}"#)).unwrap();
        }
    }
    // Replies go out as far as the sockets take them, then the connections are not read:
    // over a few seconds, the heap never holds much more than the budget (128 KiB), one reply
    // and one batch per connection.
    let mut peak = 0;
    eventually(Duration::from_secs(3), || {
        peak = peak.max(LIVE.load(Ordering::Relaxed) - base);
        false
    });
    let per = peak / CLIENTS as isize;
    assert!(per < 320 << 10, "{per} bytes per connection");
    // Reading again lets everything through, in order.
    for ws in &mut clients {
        let mut got = 0;
        while got < 200 {
            if let Message::Text(t) = ws.read().unwrap() {
                assert_eq!(t.len(), REPLY);
                got += 1;
            }
        }
    }
}
