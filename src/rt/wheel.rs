//! One timer wheel per runtime: six levels of 64 slots (1 ms a slot at the first level, 64 ms
//! at the second, ... up to about two years in all), each slot a doubly linked list through a
//! slab of entries. Arming and cancelling a timer are O(1) with no allocation once the slab has
//! grown to the most timers alive at once; the next deadline is found with one bit scan per
//! level. A timer fires at the first turn at or after its deadline, rounded up to the next
//! millisecond, never before it.
//!
//! An entry belongs to its timer (`Sleep`): the wheel marks it fired, and only the timer frees
//! it, so an index is never reused behind its timer's back.

use std::task::Waker;

pub use super::exec::Waiter;
use std::time::{Duration, Instant};

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: u64 = 1 << SLOT_BITS;
/// Ticks the wheel spans: deadlines further away are placed at the last level and moved
/// again when their slot comes round.
const SPAN: u64 = 1 << (SLOT_BITS * LEVELS as u32);
/// One tick (`next_deadline` counts in milliseconds).
const TICK: Duration = Duration::from_millis(1);
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Armed,
    Fired,
}

struct Entry {
    /// The deadline, in ticks since the wheel's origin (rounded up).
    tick: u64,
    waker: Waiter,
    prev: u32,
    next: u32,
    level: u8,
    slot: u8,
    state: State,
}

pub struct Wheel {
    origin: Instant,
    /// Every tick up to this one has been processed: a deadline at or before it is due.
    elapsed: u64,
    entries: Vec<Entry>,
    free: Vec<u32>,
    heads: [[u32; SLOTS as usize]; LEVELS],
    occupied: [u64; LEVELS],
}

/// Where an entry not yet due goes: the level whose slots first tell `tick` from `elapsed`.
fn level_for(elapsed: u64, tick: u64) -> usize {
    let masked = ((elapsed ^ tick) | (SLOTS - 1)).min(SPAN - 1);
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

fn slot_for(tick: u64, level: usize) -> usize {
    ((tick >> (level as u32 * SLOT_BITS)) & (SLOTS - 1)) as usize
}

impl Wheel {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Wheel {
        Wheel {
            origin: Instant::now(),
            elapsed: 0,
            entries: Vec::new(),
            free: Vec::new(),
            heads: [[NIL; SLOTS as usize]; LEVELS],
            occupied: [0; LEVELS],
        }
    }

    /// `at` in ticks since the origin, rounded up (a deadline before the origin is tick 0).
    fn tick_ceil(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        let ns = d.as_nanos();
        let t = TICK.as_nanos();
        u64::try_from(ns.div_ceil(t)).unwrap_or(u64::MAX)
    }

    fn tick_floor(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.origin);
        u64::try_from(d.as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX)
    }

    /// No timer armed.
    pub fn is_empty(&self) -> bool {
        self.occupied.iter().all(|&o| o == 0)
    }

    /// Whether `deadline` is certainly past: its tick was already processed. `None` when it
    /// falls in the tick now running or the next (the caller asks the clock).
    pub fn is_due(&self, deadline: Instant) -> Option<bool> {
        let tick = self.tick_ceil(deadline);
        if tick <= self.elapsed {
            Some(true)
        } else if tick <= self.elapsed + 1 {
            None
        } else {
            Some(false)
        }
    }

    /// Arms a timer for `deadline`; its index, for [`Wheel::poll`] and [`Wheel::remove`].
    /// The deadline must not be due ([`Wheel::is_due`]): one that is fires at the next turn.
    pub fn insert(&mut self, deadline: Instant, waker: &Waker) -> u32 {
        let tick = self.tick_ceil(deadline).max(self.elapsed + 1);
        let e = Entry {
            tick,
            waker: Waiter::of(waker),
            prev: NIL,
            next: NIL,
            level: 0,
            slot: 0,
            state: State::Armed,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = e;
                i
            }
            None => {
                self.entries.push(e);
                (self.entries.len() - 1) as u32
            }
        };
        self.link(idx);
        idx
    }

    /// Whether the timer fired; if not, `waker` is the one to wake.
    pub fn poll(&mut self, idx: u32, waker: &Waker) -> bool {
        let e = &mut self.entries[idx as usize];
        if e.state == State::Fired {
            return true;
        }
        e.waker.set(waker);
        false
    }

    /// Frees the timer's entry (fired or not).
    pub fn remove(&mut self, idx: u32) {
        let state = self.entries[idx as usize].state;
        if state == State::Armed {
            self.unlink(idx);
        }
        if state != State::Free {
            let e = &mut self.entries[idx as usize];
            e.state = State::Free;
            e.waker = Waiter::NONE;
            self.free.push(idx);
        }
    }

    /// When the earliest armed timer is due (its slot's start: possibly earlier, when the
    /// slot is at a higher level; the wheel then moves its entries down and looks again).
    pub fn next_deadline(&self) -> Option<Instant> {
        let (_, _, tick) = self.next_slot()?;
        self.origin.checked_add(Duration::from_millis(tick))
    }

    /// The first occupied slot after `elapsed`: (level, slot, the tick it starts at). A lower
    /// level's slots all come before a higher level's (an entry sits at the first level whose
    /// slot index tells it from `elapsed`).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let occ = self.occupied[level];
            if occ == 0 {
                continue;
            }
            let shift = level as u32 * SLOT_BITS;
            let slot_range = 1u64 << shift;
            let level_range = slot_range << SLOT_BITS;
            // From the slot after the one holding `elapsed`, round to that one last: below
            // the last level it is never occupied; at the last level what sits there is a
            // deadline a whole span or more ahead, placed modulo the span.
            let now_slot = (self.elapsed >> shift) & (SLOTS - 1);
            let from = (now_slot + 1) & (SLOTS - 1);
            let rotated = occ.rotate_right(from as u32);
            let slot = (rotated.trailing_zeros() as u64 + from) & (SLOTS - 1);
            let level_start = self.elapsed & !(level_range - 1);
            let mut tick = level_start + slot * slot_range;
            if tick <= self.elapsed {
                tick += level_range;
            }
            return Some((level, slot as usize, tick));
        }
        None
    }

    /// Processes every tick up to `now`: timers due are marked fired and their wakers pushed
    /// to `wake`; entries of a higher level's slot that came round move down.
    pub fn advance(&mut self, now: Instant, wake: &mut Vec<Waiter>) {
        let now_tick = self.tick_floor(now);
        while let Some((level, slot, tick)) = self.next_slot() {
            if tick > now_tick {
                break;
            }
            self.elapsed = tick;
            let mut idx = std::mem::replace(&mut self.heads[level][slot], NIL);
            self.occupied[level] &= !(1u64 << slot);
            while idx != NIL {
                let e = &mut self.entries[idx as usize];
                let next = e.next;
                if e.tick <= now_tick {
                    e.state = State::Fired;
                    let w = e.waker.take();
                    if !w.is_none() {
                        wake.push(w);
                    }
                } else {
                    self.link(idx);
                }
                idx = next;
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
    }

    fn link(&mut self, idx: u32) {
        let tick = self.entries[idx as usize].tick;
        let level = level_for(self.elapsed, tick);
        let slot = slot_for(tick, level);
        let head = self.heads[level][slot];
        {
            let e = &mut self.entries[idx as usize];
            e.level = level as u8;
            e.slot = slot as u8;
            e.prev = NIL;
            e.next = head;
        }
        if head != NIL {
            self.entries[head as usize].prev = idx;
        }
        self.heads[level][slot] = idx;
        self.occupied[level] |= 1u64 << slot;
    }

    fn unlink(&mut self, idx: u32) {
        let (prev, next, level, slot) = {
            let e = &self.entries[idx as usize];
            (e.prev, e.next, e.level as usize, e.slot as usize)
        };
        if prev == NIL {
            self.heads[level][slot] = next;
            if next == NIL {
                self.occupied[level] &= !(1u64 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> Waker {
        Waker::from(Arc::new(Count(AtomicUsize::new(0))))
    }

    /// Deadlines at every scale fire in order, never early, each within a tick of its
    /// deadline (or of its slot's start once moved down); cancelled ones never fire.
    #[test]
    fn timers_fire_in_order_never_early_and_cancelled_ones_never() {
        let mut w = Wheel::new();
        let o = w.origin;
        let ms = |n: u64| o + Duration::from_millis(n);
        let deadlines: Vec<u64> = vec![
            1,
            2,
            63,
            64,
            65,
            100,
            4095,
            4096,
            4097,
            70_000,
            300_000,
            5_000_000,
            1 << 30,
            (1 << 36) + 5,
        ];
        let mut armed: Vec<(u64, u32)> = deadlines
            .iter()
            .map(|&d| (d, w.insert(ms(d), &waker())))
            .collect();
        // Two more, cancelled: their waker must never be woken.
        let never = Arc::new(Count(AtomicUsize::new(0)));
        for at in [o + Duration::from_micros(49_500), ms(5000)] {
            let i = w.insert(at, &Waker::from(never.clone()));
            w.remove(i);
        }
        let mut fired_at = Vec::new();
        let mut wake = Vec::new();
        // Step through time: at each stop, what fired must be due, and what is due fired.
        let mut now = 0u64;
        while !armed.is_empty() {
            let next = w.next_deadline().expect("armed timers give a deadline");
            let next_ms = next.duration_since(o).as_millis() as u64;
            assert!(next_ms > now, "the next deadline is ahead of the wheel");
            now = next_ms;
            w.advance(ms(now), &mut wake);
            armed.retain(|&(d, i)| {
                let f = w.poll(i, &waker());
                assert_eq!(f, d <= now, "timer {d} ms at {now} ms");
                if f {
                    fired_at.push((d, now));
                    w.remove(i);
                }
                !f
            });
        }
        for (d, at) in &fired_at {
            assert_eq!(d, at, "fired at its deadline's tick");
        }
        let order: Vec<u64> = fired_at.iter().map(|x| x.0).collect();
        assert_eq!(order, deadlines);
        assert!(w.next_deadline().is_none());
        assert_eq!(never.0.load(Ordering::SeqCst), 0);
        // Freed entries are reused: no growth past the most alive at once.
        let n = w.entries.len();
        for _ in 0..100 {
            let i = w.insert(ms(now + 10), &waker());
            w.remove(i);
        }
        assert_eq!(w.entries.len(), n);
    }

    #[test]
    fn a_late_turn_fires_everything_due_at_once() {
        let mut w = Wheel::new();
        let o = w.origin;
        let ids: Vec<u32> = [3u64, 70, 5000, 9000]
            .iter()
            .map(|&d| w.insert(o + Duration::from_millis(d), &waker()))
            .collect();
        let mut wake = Vec::new();
        w.advance(o + Duration::from_millis(6000), &mut wake);
        assert_eq!(wake.len(), 3);
        let fired: Vec<bool> = ids.iter().map(|&i| w.poll(i, &waker())).collect();
        assert_eq!(fired, [true, true, true, false]);
        assert_eq!(w.is_due(o + Duration::from_millis(5999)), Some(true));
        assert_eq!(w.is_due(o + Duration::from_millis(8000)), Some(false));
        w.advance(o + Duration::from_millis(9000), &mut wake);
        assert!(w.poll(ids[3], &waker()));
    }

    /// Random deadlines, cancellations and turns of random length: after each turn, exactly
    /// the timers whose deadline has passed have fired.
    #[test]
    fn after_every_turn_exactly_the_passed_deadlines_have_fired() {
        let mut w = Wheel::new();
        let o = w.origin;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = 0u64;
        let mut armed: Vec<(u64, u32)> = Vec::new();
        let mut wake = Vec::new();
        for _ in 0..3000 {
            for _ in 0..rnd(8) {
                let scale = [10, 1_000, 100_000, 10_000_000][rnd(4) as usize];
                let d = now + 1 + rnd(scale);
                armed.push((d, w.insert(o + Duration::from_millis(d), &waker())));
            }
            if !armed.is_empty() && rnd(3) == 0 {
                let (_, i) = armed.swap_remove(rnd(armed.len() as u64) as usize);
                w.remove(i);
            }
            let step = [2, 100, 10_000][rnd(3) as usize];
            now += rnd(step);
            w.advance(o + Duration::from_millis(now), &mut wake);
            armed.retain(|&(d, i)| {
                let f = w.poll(i, &waker());
                assert_eq!(f, d <= now, "timer at {d} ms, wheel at {now} ms");
                if f {
                    w.remove(i);
                }
                !f
            });
            if let Some(next) = w.next_deadline() {
                let next = next.duration_since(o).as_millis() as u64;
                let first = armed.iter().map(|a| a.0).min().expect("armed");
                assert!(
                    next > now && next <= first,
                    "next {next}, first {first}, now {now}"
                );
            } else {
                assert!(armed.is_empty());
            }
        }
    }
}
