//! Throttling and quotas (DESIGN.md, "Throttling").
//!
//! Every limit is a token bucket ([`bucket`]) shared by the shards through one atomic word;
//! each shard spends small leases of it ([`lease`]) so that the request path touches no
//! shared memory in steady state. Limits apply in this order, first refusal wins: per key and
//! route (usage plan `route_throttle`), per key (plan `throttle`), per route, per stage,
//! gateway-wide. Tokens taken by an earlier limit are spent even when a later one refuses.
//!
//! Quotas ([`QuotaCell`]) count a key's requests per UTC day, week or month. They are exact
//! counters (one relaxed atomic add per keyed request on that key's own cache line), flushed
//! to the state store by the control plane every second.

pub(crate) mod bucket;
pub(crate) mod lease;
pub(crate) mod redis;
pub(crate) mod redis_io;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub(crate) use crate::config::{Period, Quota};

/// Nanoseconds on the gateway's monotonic clock (its epoch is the first call).
pub(crate) fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Start at one second so that a fresh bucket (TAT 0) is full.
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1_000_000_000
}

pub(crate) use crate::syntax::civil::{civil_from_days, days_from_civil};

/// "2026-11-22" for a day number.
pub fn day_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses "2026-11-22" into a day number: exactly YYYY-MM-DD, as [`day_string`] writes it
/// (the state store compares days as text).
pub(crate) fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return None;
    }
    let mut it = s.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Today's UTC day number.
pub fn today() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64
}

impl Period {
    /// The period a day falls in: the day itself, its ISO week (weeks start on Monday), or
    /// year*12+month.
    pub fn index(self, day: i64) -> i64 {
        match self {
            Period::Day => day,
            // 1970-01-01 was a Thursday: shift so that weeks start on Monday.
            Period::Week => (day + 3).div_euclid(7),
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                y * 12 + m as i64 - 1
            }
        }
    }

    /// Seconds from `now_secs` (UNIX time) to the start of the next period.
    pub fn seconds_to_next(self, now_secs: u64) -> u64 {
        let day = (now_secs / 86_400) as i64;
        let next_day = match self {
            Period::Day => day + 1,
            Period::Week => (self.index(day) + 1) * 7 - 3,
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(ny, nm, 1)
            }
        };
        (next_day as u64 * 86_400).saturating_sub(now_secs)
    }
}

/// The quota for this period is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaSpent;

/// A key's usage under one plan: this period's count (the quota) and today's (for usage
/// reports). Shared by the shards; written by them, flushed by the control plane.
#[derive(Debug, Default)]
pub(crate) struct QuotaCell {
    pub period: AtomicU64,
    pub used: AtomicU64,
    pub day: AtomicU64,
    pub day_used: AtomicU64,
    /// The day before `day` and its count when it ended here, in one word (`day << 40 |
    /// count`: read together, never one day's count with another day): for the fleet's usage
    /// reports, which send a day's last requests after it ended.
    pub prev_day: AtomicU64,
    /// The `prev_day` word the state store last got: a day's last requests, counted after its
    /// last flush, are written once it ended.
    pub prev_saved: AtomicU64,
    /// Set on every change, cleared by the flusher.
    pub dirty: AtomicBool,
    /// With `[cluster]`: the quota period (plus one; 0 for none) in which Redis answered
    /// that the fleet's quota is spent. While Redis is out, a node that knows it is spent
    /// grants nothing more in that period; setting the key's count clears it.
    pub fleet_spent: AtomicU64,
    /// The plan's limit when Redis said so: a reload that raises it makes the period's
    /// quota no longer spent.
    pub fleet_spent_limit: AtomicU64,
    /// With `[cluster]`: the requests this node admitted under the fleet's quota in a period
    /// (since an admin last set the count), in one word (`(period + 1) << 40 | count`): what
    /// the node adds back to the fleet's counter when Redis lost it.
    pub fleet_own: AtomicU64,
    /// Times an admin set the key's count here: a "spent" Redis gave before a set landed,
    /// read after it, is not kept (it would outlast the reset).
    pub sets: AtomicU64,
}

/// The largest count `QuotaCell::prev_day` holds.
const PREV_COUNT: u64 = (1 << 40) - 1;

impl QuotaCell {
    /// The day before `day` and its count (`(0, 0)` before a day ended here).
    pub(crate) fn prev_day(&self) -> (u64, u64) {
        let w = self.prev_day.load(Ordering::Relaxed);
        (w >> 40, w & PREV_COUNT)
    }

    /// The day before `day` and its final count when the state store has not had them yet,
    /// with the word to hand to [`QuotaCell::prev_day_saved`] once it has.
    pub(crate) fn prev_day_unsaved(&self) -> Option<(i64, u64, u64)> {
        let w = self.prev_day.load(Ordering::Relaxed);
        (w != self.prev_saved.load(Ordering::Relaxed) && w & PREV_COUNT != 0).then_some((
            (w >> 40) as i64,
            w & PREV_COUNT,
            w,
        ))
    }

    /// The state store has the day before's count as `word` says.
    pub(crate) fn prev_day_saved(&self, word: u64) {
        self.prev_saved.store(word, Ordering::Relaxed);
    }

    pub(crate) fn new(period: i64, used: u64, day: i64, day_used: u64) -> QuotaCell {
        QuotaCell {
            period: AtomicU64::new(period as u64),
            used: AtomicU64::new(used),
            day: AtomicU64::new(day as u64),
            day_used: AtomicU64::new(day_used),
            prev_day: AtomicU64::new(0),
            prev_saved: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            fleet_spent: AtomicU64::new(0),
            fleet_spent_limit: AtomicU64::new(0),
            fleet_own: AtomicU64::new(0),
            sets: AtomicU64::new(0),
        }
    }

    /// Counts one request admitted under the fleet's quota in `period` (a new period starts
    /// from 1).
    pub(crate) fn count_fleet(&self, period: i64) {
        let tag = (period as u64 + 1) << 40;
        let mut w = self.fleet_own.load(Ordering::Relaxed);
        loop {
            let next = if w & !PREV_COUNT == tag && w & PREV_COUNT < PREV_COUNT {
                w + 1
            } else if w & !PREV_COUNT == tag {
                w
            } else {
                tag | 1
            };
            match self.fleet_own.compare_exchange_weak(
                w,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
    }

    /// This node's requests under the fleet's quota in `period` (see [`QuotaCell::fleet_own`]).
    pub(crate) fn fleet_count(&self, period: i64) -> u64 {
        let w = self.fleet_own.load(Ordering::Relaxed);
        if w >> 40 == period as u64 + 1 {
            w & PREV_COUNT
        } else {
            0
        }
    }

    /// An admin set the fleet's count of `period`: what this node admitted before is in it.
    pub(crate) fn fleet_count_set(&self, period: i64) {
        self.fleet_own
            .store((period as u64 + 1) << 40, Ordering::Relaxed);
    }

    /// Counts one request on `day`; `Err(())` when the quota is spent (nothing counted).
    /// Returns what remains.
    ///
    /// The day and the period only move forward: a request whose day was read before
    /// midnight and that is counted after another shard (or node) moved the cell to the new
    /// day counts in the new day (and period), so that it cannot swap the ended day back in
    /// and the new day's count out (both are flushed by overwriting what was stored).
    pub(crate) fn take(&self, quota: Option<Quota>, day: i64) -> Result<u64, QuotaSpent> {
        let d = day as u64;
        let mut cur = self.day.load(Ordering::Relaxed);
        while cur != d && d + 1 != cur {
            match self
                .day
                .compare_exchange(cur, d, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    let n = self.day_used.swap(0, Ordering::Relaxed);
                    self.prev_day
                        .store(cur << 40 | n.min(PREV_COUNT), Ordering::Relaxed);
                    break;
                }
                Err(now) => cur = now,
            }
        }
        let remaining = match quota {
            Some(q) => {
                let p = q.period.index(day) as u64;
                let mut cur = self.period.load(Ordering::Relaxed);
                while cur != p && p + 1 != cur {
                    match self
                        .period
                        .compare_exchange(cur, p, Ordering::AcqRel, Ordering::Relaxed)
                    {
                        Ok(_) => {
                            self.used.store(0, Ordering::Relaxed);
                            break;
                        }
                        Err(now) => cur = now,
                    }
                }
                let used = self.used.fetch_add(1, Ordering::Relaxed) + 1;
                if used > q.limit {
                    self.used.fetch_sub(1, Ordering::Relaxed);
                    return Err(QuotaSpent);
                }
                q.limit - used
            }
            None => u64::MAX,
        };
        self.day_used.fetch_add(1, Ordering::Relaxed);
        self.dirty.store(true, Ordering::Relaxed);
        Ok(remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(day_string(20_413), "2025-11-21");
        for d in [-1000, 0, 59, 60, 365, 11_016, 20_414, 30_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(parse_day("2026-11-22"), Some(days_from_civil(2026, 11, 22)));
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("yesterday"), None);
        for unpadded in [
            "2026-11-2",
            "2026-1-22",
            "+2026-11-22",
            "02026-11-22",
            "2026-11-22 ",
        ] {
            assert_eq!(parse_day(unpadded), None, "{unpadded}");
        }
    }

    #[test]
    fn periods_start_at_utc_midnight_monday_and_the_first() {
        let mon = days_from_civil(2026, 11, 16); // a Monday
        assert_eq!(Period::Week.index(mon), Period::Week.index(mon + 6));
        assert_ne!(Period::Week.index(mon), Period::Week.index(mon - 1));
        assert_eq!(
            Period::Month.index(days_from_civil(2026, 11, 1)),
            Period::Month.index(days_from_civil(2026, 11, 30))
        );
        assert_ne!(
            Period::Month.index(days_from_civil(2026, 11, 30)),
            Period::Month.index(days_from_civil(2026, 12, 1))
        );
        let noon = (days_from_civil(2026, 11, 22) as u64) * 86_400 + 43_200;
        assert_eq!(Period::Day.seconds_to_next(noon), 43_200);
        assert_eq!(Period::Month.seconds_to_next(noon), 9 * 86_400 - 43_200);
    }

    #[test]
    fn a_request_counted_after_midnight_with_the_day_before_does_not_move_the_day_back() {
        let q = Quota {
            limit: 100,
            period: Period::Day,
        };
        let cell = QuotaCell::new(Period::Day.index(100), 0, 100, 0);
        for _ in 0..21 {
            cell.take(Some(q), 100).unwrap();
        }
        // Another shard counts the first request of day 101...
        assert_eq!(cell.take(Some(q), 101), Ok(99));
        // ...then one that read the date before midnight is counted: in day 101 (and its
        // quota period), not by swapping day 100 back in.
        assert_eq!(cell.take(Some(q), 100), Ok(98));
        cell.take(Some(q), 101).unwrap();
        assert_eq!(cell.day.load(Ordering::Relaxed), 101);
        assert_eq!(cell.day_used.load(Ordering::Relaxed), 3);
        assert_eq!(cell.prev_day(), (100, 21));
        assert_eq!(cell.used.load(Ordering::Relaxed), 3);
        // A day further on (the gateway was idle, or its clock jumped) moves it as before.
        assert_eq!(cell.take(Some(q), 103), Ok(99));
        assert_eq!(cell.prev_day(), (101, 3));
        assert_eq!(cell.day.load(Ordering::Relaxed), 103);
    }

    #[test]
    fn a_nodes_fleet_count_is_per_period_and_restarts_when_set() {
        let cell = QuotaCell::new(7, 0, 100, 0);
        assert_eq!(cell.fleet_count(7), 0);
        cell.count_fleet(7);
        cell.count_fleet(7);
        assert_eq!(cell.fleet_count(7), 2);
        assert_eq!(cell.fleet_count(8), 0);
        // A new period starts from its first request.
        cell.count_fleet(8);
        assert_eq!((cell.fleet_count(7), cell.fleet_count(8)), (0, 1));
        // An admin's count replaces what came before.
        cell.fleet_count_set(8);
        assert_eq!(cell.fleet_count(8), 0);
        cell.count_fleet(8);
        assert_eq!(cell.fleet_count(8), 1);
    }

    #[test]
    fn quotas_refuse_past_the_limit_and_reset_each_period() {
        let q = Some(Quota {
            limit: 3,
            period: Period::Day,
        });
        let cell = QuotaCell::new(100, 0, 100, 0);
        assert_eq!(cell.take(q, 100), Ok(2));
        assert_eq!(cell.take(q, 100), Ok(1));
        assert_eq!(cell.take(q, 100), Ok(0));
        assert_eq!(cell.take(q, 100), Err(QuotaSpent));
        assert_eq!(cell.day_used.load(Ordering::Relaxed), 3);
        assert_eq!(cell.take(q, 101), Ok(2));
        assert_eq!(cell.day_used.load(Ordering::Relaxed), 1);
        // The day before's count is kept for the fleet's usage reports.
        assert_eq!(cell.prev_day(), (100, 3));
    }
}
