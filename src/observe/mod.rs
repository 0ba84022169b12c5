//! What the gateway says about itself besides answers: the access log ([`access`] renders
//! lines, [`writer`] writes them off the request path), and the summariser that keeps
//! repeated failures from flooding the log (one line per kind of failure and target, then a
//! count per interval).

pub(crate) mod access;
pub(crate) mod export;
pub(crate) mod stats;
pub(crate) mod trace;
pub(crate) mod writer;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;

use ahash::AHashMap;

/// What repeats: a message, the upstream target it concerns (if any), and a status.
pub(crate) type RepeatKey = (&'static str, Option<SocketAddr>, u16);

/// Distinct keys a shard tracks per interval; more are counted together, so no client can
/// make this table (or the log) grow without bound.
const MAX_KEYS: usize = 256;

/// Per shard: the first occurrence of each key in an interval is logged in full by the
/// caller; the rest are counted and summarised once the interval ends.
pub(crate) struct RepeatLog {
    interval_ns: Cell<u64>,
    /// key -> (interval start, occurrences not logged)
    seen: RefCell<AHashMap<RepeatKey, (u64, u64)>>,
    /// Occurrences of keys beyond `MAX_KEYS`.
    overflow: Cell<u64>,
}

impl RepeatLog {
    pub(crate) fn new(interval_ns: u64) -> RepeatLog {
        RepeatLog {
            interval_ns: Cell::new(interval_ns.max(1)),
            seen: RefCell::new(AHashMap::new()),
            overflow: Cell::new(0),
        }
    }

    /// Follows a reload's `server.log_summary_interval`.
    pub(crate) fn set_interval(&self, ns: u64) {
        self.interval_ns.set(ns.max(1));
    }

    /// Whether this occurrence is the first of its key in the current interval (log it in
    /// full); otherwise it is counted for the summary.
    pub(crate) fn first(&self, key: RepeatKey, now: u64) -> bool {
        let mut seen = self.seen.borrow_mut();
        if let Some((_, n)) = seen.get_mut(&key) {
            *n += 1;
            return false;
        }
        if seen.len() >= MAX_KEYS {
            self.overflow.set(self.overflow.get() + 1);
            return false;
        }
        seen.insert(key, (now, 0));
        true
    }

    /// Ends the intervals that are over: `emit(key, count, seconds)` for each key that
    /// repeated, and `emit` with an empty message for the overflow. Keys whose interval is
    /// over are forgotten, so their next occurrence is logged in full again.
    pub(crate) fn flush(&self, now: u64, mut emit: impl FnMut(&RepeatKey, u64, u64)) {
        let interval = self.interval_ns.get();
        let secs = interval.div_ceil(1_000_000_000);
        let mut seen = self.seen.borrow_mut();
        seen.retain(|key, (since, n)| {
            if now.saturating_sub(*since) < interval {
                return true;
            }
            if *n > 0 {
                emit(key, *n, secs);
            }
            false
        });
        let o = self.overflow.replace(0);
        if o > 0 {
            emit(&("", None, 0), o, secs);
        }
    }
}

/// Logs the summaries of a shard's repeated failures.
pub(crate) fn flush_repeats(log: &RepeatLog, shard: usize, now: u64) {
    log.flush(now, |(what, target, status), n, secs| {
        if what.is_empty() {
            tracing::warn!(
                shard,
                count = n,
                seconds = secs,
                "more failures of other kinds, not logged one by one"
            );
        } else {
            tracing::warn!(
                shard,
                target_addr = target.map(tracing::field::display),
                status = (*status != 0).then_some(*status),
                count = n,
                seconds = secs,
                "{what}: {n} more like it, not logged one by one"
            );
        }
    });
}

/// Shortest time between two warnings about connections refused at
/// `limits.max_connections` on one shard (60 s); nginx logs its `worker_connections are not
/// enough` once per connection, which a flood turns into log volume.
pub(crate) const REFUSAL_LOG_INTERVAL_NS: u64 = 60_000_000_000;

/// A shard's connections refused at `limits.max_connections`: counted on the refusal path
/// only, warned about at most once per [`REFUSAL_LOG_INTERVAL_NS`] with how many were refused
/// since the last warning (the first refusal is told at once; the sweep tells the rest of a
/// burst once the interval is over).
#[derive(Default)]
pub(crate) struct RefusalLog {
    /// Refused since the last warning.
    pending: Cell<u64>,
    /// When the last warning went out; `None` before the first.
    last: Cell<Option<u64>>,
}

impl RefusalLog {
    /// Counts one refusal at `now` (ns); returns how many to warn about when a warning is due.
    pub(crate) fn refused(&self, now: u64) -> Option<u64> {
        self.pending.set(self.pending.get() + 1);
        self.due(now)
    }

    /// How many refusals to warn about at `now`, if any are untold and a warning is due.
    pub(crate) fn due(&self, now: u64) -> Option<u64> {
        let n = self.pending.get();
        let quiet = self
            .last
            .get()
            .is_some_and(|last| now.saturating_sub(last) < REFUSAL_LOG_INTERVAL_NS);
        if n == 0 || quiet {
            return None;
        }
        self.pending.set(0);
        self.last.set(Some(now));
        Some(n)
    }
}

/// Logs the warning [`RefusalLog`] says is due.
pub(crate) fn warn_refused(shard: usize, refused: u64, max: usize) {
    tracing::warn!(
        shard,
        refused,
        max_connections = max,
        "limits.max_connections reached: {refused} new connections closed at once since the last such line"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_first_of_each_key_is_logged_then_counted_until_the_interval_ends() {
        let log = RepeatLog::new(10 * S);
        let a: RepeatKey = ("request failed", Some("127.0.0.1:1".parse().unwrap()), 502);
        let b: RepeatKey = ("request failed", Some("127.0.0.1:2".parse().unwrap()), 502);
        assert!(log.first(a, 0));
        assert!(!log.first(a, S));
        assert!(!log.first(a, 2 * S));
        assert!(log.first(b, 3 * S));
        let mut out = Vec::new();
        log.flush(5 * S, |k, n, _| out.push((*k, n)));
        assert!(out.is_empty(), "nothing is over yet");
        let mut secs = 0;
        log.flush(10 * S, |k, n, s| {
            out.push((*k, n));
            secs = s;
        });
        assert_eq!(out, vec![(a, 2)]);
        assert_eq!(secs, 10);
        // a's interval is over: its next occurrence is logged in full again.
        assert!(log.first(a, 11 * S));
        // b never repeated: no summary, just forgotten.
        out.clear();
        log.flush(13 * S, |k, n, _| out.push((*k, n)));
        assert!(out.is_empty());
        assert!(log.first(b, 14 * S));
    }

    #[test]
    fn keys_beyond_the_bound_are_counted_together() {
        let log = RepeatLog::new(S);
        for port in 0..(MAX_KEYS as u16 + 50) {
            let key = ("x", Some(SocketAddr::from(([127, 0, 0, 1], port))), 0);
            log.first(key, 0);
        }
        assert_eq!(log.seen.borrow().len(), MAX_KEYS);
        let mut overflow = 0;
        log.flush(S, |k, n, _| {
            if k.0.is_empty() {
                overflow = n;
            }
        });
        assert_eq!(overflow, 50);
        assert!(log.seen.borrow().is_empty());
    }

    #[test]
    fn refusals_are_told_at_once_then_at_most_once_a_minute_with_their_count() {
        let log = RefusalLog::default();
        assert_eq!(log.due(0), None, "nothing refused");
        assert_eq!(log.refused(S), Some(1));
        for t in 2..40 {
            assert_eq!(log.refused(t * S), None);
        }
        assert_eq!(log.due(60 * S), None, "a minute has not passed");
        assert_eq!(
            log.due(61 * S),
            Some(38),
            "the rest of the burst, by the sweep"
        );
        assert_eq!(log.due(200 * S), None, "nothing new");
        assert_eq!(log.refused(201 * S), Some(1));
    }
}
