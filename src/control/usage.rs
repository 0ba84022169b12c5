//! Usage plans' counters: usage reports, quota overrides, the periodic flush to the state
//! store and the sweep of idle per-key buckets.

use super::fleet;
use super::*;

impl Control {
    pub(super) fn plan(&self, name: &str) -> Result<&crate::config::Plan, OpError> {
        self.compiled
            .plans
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| OpError(404, format!("no usage plan {name:?}")))
    }

    /// A GetUsage request checked: the plan and the days asked for (YYYY-MM-DD); a `keyId`
    /// must name a key on the plan (404 otherwise, as Amazon's GetUsage answers).
    pub(crate) fn usage_days(
        &self,
        plan: &str,
        start: &str,
        end: &str,
        key: Option<&str>,
    ) -> Result<(crate::config::Plan, Vec<String>), OpError> {
        let p = self.plan(plan)?.clone();
        if let Some(id) = key {
            if !self
                .get_key(id)
                .is_some_and(|k| k.plans.iter().any(|x| x == plan))
            {
                return Err(OpError(
                    404,
                    format!("Invalid API Key identifier specified: no key {id:?} on usage plan {plan:?}"),
                ));
            }
        }
        let day = |name: &str, v: &str| {
            throttle::parse_day(v)
                .ok_or_else(|| bad(format!("{name}: {v:?} is not a date as YYYY-MM-DD")))
        };
        let (s, e) = (day("startDate", start)?, day("endDate", end)?);
        if e < s || e - s > 366 {
            return Err(bad(
                "endDate must be on or after startDate, at most a year later",
            ));
        }
        Ok((p, (s..=e).map(throttle::day_string).collect()))
    }

    /// Daily usage under a plan, as Amazon API Gateway's GetUsage: per key, `[requests,
    /// remaining]` per day from `start` to `end`.
    pub(crate) fn usage(
        &mut self,
        plan: &str,
        (start, end): (&str, &str),
        key: Option<&str>,
        page: &Page,
    ) -> Result<serde_json::Value, OpError> {
        let (p, _) = self.usage_days(plan, start, end, key)?;
        self.flush().map_err(|e| OpError(500, e))?;
        // A day's `remaining` is what its quota period had left at that day's end: the days
        // of the period before `start` count too.
        let first = throttle::parse_day(start).unwrap_or_default();
        let from = p.quota.map_or(first, |q| period_start(q.period, first));
        let rows = self
            .store()
            .map_err(|e| OpError(500, e))?
            .usage(plan, &throttle::day_string(from), end, key)
            .map_err(|e| OpError(500, e))?;
        let today = throttle::today();
        // This period's count as the shards keep it (an admin's quota set included).
        let now: std::collections::BTreeMap<String, (i64, u64)> = match p.quota {
            None => Default::default(),
            Some(q) => {
                let current = q.period.index(today);
                let cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
                rows.iter()
                    .filter_map(|(id, _, _)| {
                        let c = cells.get(&(Arc::from(plan), Arc::from(id.as_str())))?;
                        (c.period.load(Ordering::Relaxed) == current as u64)
                            .then(|| (id.clone(), (current, c.used.load(Ordering::Relaxed))))
                    })
                    .collect()
            }
        };
        let entries = entries_from(p.quota, rows, &now);
        Ok(usage_answer(plan, (start, end), p.quota, entries, page))
    }

    /// Setting a key's count for the current quota period (`used`), or resetting it: the
    /// command every node applies, the answer, and the fleet's counter (its name in Redis and
    /// how long it lives).
    pub(crate) fn plan_quota(
        &self,
        plan: &str,
        id: &str,
        used: u64,
    ) -> Result<(fleet::Change, serde_json::Value, (String, u64)), OpError> {
        let p = self.plan(plan)?;
        let q = p
            .quota
            .ok_or_else(|| OpError(400, format!("usage plan {plan:?} has no quota")))?;
        if used > q.limit {
            return Err(OpError(
                400,
                format!(
                    "used: {used} is over usage plan {plan:?}'s quota; expected 0 to {}",
                    q.limit
                ),
            ));
        }
        match self.get_key(id) {
            None => return Err(OpError(404, "no such key".into())),
            // A key that is not on the plan has no usage there to set: refused, rather than
            // a usage entry for a key the plan does not know.
            Some(k) if !k.plans.iter().any(|p| p == plan) => {
                return Err(OpError(
                    404,
                    format!("key {id:?} is not on usage plan {plan:?}"),
                ))
            }
            Some(_) => {}
        }
        let today = throttle::today();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let counter = (
            throttle::redis::quota_name(
                plan,
                throttle::redis::quota_id(plan, id),
                q.period.index(today),
            ),
            q.period.seconds_to_next(now) + 86_400,
        );
        let change = fleet::Change::QuotaSet {
            plan: plan.to_string(),
            key: id.to_string(),
            used,
            period: q.period.index(today),
        };
        let answer = serde_json::json!({"keyId": id, "usagePlanId": plan, "used": used, "remaining": q.limit.saturating_sub(used)});
        Ok((change, answer, counter))
    }

    /// Sets this node's count of a key's current quota period (the fleet's is in Redis).
    pub(super) fn set_quota_cell(
        &self,
        plan: &str,
        id: &str,
        used: u64,
        period: i64,
    ) -> Result<(), OpError> {
        let Some(q) = self.plan(plan)?.quota else {
            return Ok(());
        };
        let today = throttle::today();
        if q.period.index(today) != period {
            // Set in another period: this one's count is not that.
            return Ok(());
        }
        let cell = {
            let mut cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            cells
                .entry((Arc::from(plan), Arc::from(id)))
                .or_insert_with(|| Arc::new(QuotaCell::new(q.period.index(today), 0, today, 0)))
                .clone()
        };
        cell.period
            .store(q.period.index(today) as u64, Ordering::Relaxed);
        cell.used.store(used, Ordering::Relaxed);
        cell.fleet_count_set(period);
        cell.sets.fetch_add(1, Ordering::Relaxed);
        cell.fleet_spent.store(0, Ordering::Relaxed);
        cell.dirty.store(true, Ordering::Relaxed);
        self.flush().map_err(|e| OpError(500, e))
    }

    /// Writes changed counters to the state store.
    pub(crate) fn flush(&self) -> Result<(), String> {
        flush_cells(&self.shared.quotas, || self.store())
    }

    /// Drops per-key buckets that no shard holds and that have been full for a while.
    pub(super) fn sweep(&self) {
        let now = throttle::now_ns();
        let mut all = self
            .shared
            .key_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.retain(|_, b| {
            Arc::strong_count(b) > 1 || b.idle_for(now) < crate::shard::KEY_LEASE_IDLE_NS
        });
    }
}

/// `Shared::quotas`: shared with the shards, which lock it only on their first use of a key.
#[allow(clippy::disallowed_types)]
type SharedQuotas = std::sync::Mutex<crate::shard::QuotaCells>;

/// Writes to the state store the counters of the cells that changed, and the final count of
/// a day that ended since it was last written: its requests after the day's last flush are
/// counted in the cell's `prev_day` only. What the store did not take is written next time.
fn flush_cells<'s>(
    quotas: &SharedQuotas,
    store: impl FnOnce() -> Result<&'s store::Store, String>,
) -> Result<(), String> {
    let mut ended: Vec<store::EndedDay> = Vec::new();
    let mut ended_cells: Vec<(Arc<QuotaCell>, u64)> = Vec::new();
    let batch: Vec<(String, String, QuotaState)> = {
        let cells = quotas.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .iter()
            .filter_map(|((plan, id), c)| {
                if let Some((day, n, word)) = c.prev_day_unsaved() {
                    ended.push((plan.to_string(), id.to_string(), day, n));
                    ended_cells.push((c.clone(), word));
                }
                if !c.dirty.swap(false, Ordering::Relaxed) {
                    return None;
                }
                let st = QuotaState {
                    period: c.period.load(Ordering::Relaxed) as i64,
                    used: c.used.load(Ordering::Relaxed),
                    day: c.day.load(Ordering::Relaxed) as i64,
                    day_used: c.day_used.load(Ordering::Relaxed),
                };
                Some((plan.to_string(), id.to_string(), st))
            })
            .collect()
    };
    // Nothing counted since the last flush: nothing to write (and no error to report while
    // the store is being reopened).
    if batch.is_empty() && ended.is_empty() {
        return Ok(());
    }
    let r = store().and_then(|s| s.flush(&batch, &ended));
    if r.is_ok() {
        for (c, word) in ended_cells {
            c.prev_day_saved(word);
        }
    } else {
        // Not saved: mark them again, so the next flush writes their (then current) values.
        let cells = quotas.lock().unwrap_or_else(|e| e.into_inner());
        for (plan, id, _) in &batch {
            let key = (Arc::from(plan.as_str()), Arc::from(id.as_str()));
            if let Some(c) = cells.get(&key) {
                c.dirty.store(true, Ordering::Relaxed);
            }
        }
    }
    r
}

/// The first day of the quota period `day` falls in.
fn period_start(period: crate::config::Period, day: i64) -> i64 {
    match period {
        crate::config::Period::Day => day,
        crate::config::Period::Week => period.index(day) * 7 - 3,
        crate::config::Period::Month => {
            let (y, m, _) = throttle::civil_from_days(day);
            throttle::days_from_civil(y, m, 1)
        }
    }
}

/// Per key, its days with requests in day order: (day, requests, what its quota period had
/// left at the day's end; None without a quota). Days before the report's first may be there
/// (its quota period's earlier days).
pub(crate) type PerKey = std::collections::BTreeMap<String, Vec<(i64, u64, Option<u64>)>>;

/// A usage report's page (Amazon's GetUsage `limit`, 1 to 500, and `position`: the key the
/// previous page ended with). Without `limit` every key is in one answer.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub limit: Option<usize>,
    pub position: Option<String>,
}

impl Page {
    pub(crate) fn parse(limit: Option<String>, position: Option<String>) -> Result<Page, OpError> {
        let limit = match limit {
            None => None,
            Some(l) => match l.parse::<usize>() {
                Ok(n @ 1..=500) => Some(n),
                _ => return Err(bad(format!("limit: {l:?} is not valid: expected 1 to 500"))),
            },
        };
        Ok(Page { limit, position })
    }
}

/// A usage report as Amazon API Gateway's GetUsage answers it: `values`, per key one
/// `[used, remaining]` pair for every day from `start` to `end` (a day without requests
/// `[0, what its period had left]`; `remaining` null without a quota), and `position` when
/// `page` leaves keys for the next; with Tollgate's `items` (per key, the days with
/// requests, dated).
pub(crate) fn usage_answer(
    plan: &str,
    (start, end): (&str, &str),
    quota: Option<crate::config::Quota>,
    entries: PerKey,
    page: &Page,
) -> serde_json::Value {
    let first = throttle::parse_day(start).unwrap_or_default();
    let last = throttle::parse_day(end).unwrap_or(first);
    let mut items = serde_json::Map::new();
    let mut values = serde_json::Map::new();
    let mut keys = entries
        .into_iter()
        .filter(|(id, _)| page.position.as_ref().is_none_or(|p| id > p))
        .peekable();
    let mut taken = 0;
    let mut position = None;
    while let Some((id, days)) = keys.next() {
        let dated: Vec<serde_json::Value> = days
            .iter()
            .filter(|&&(d, _, _)| d >= first && d <= last)
            .map(|&(d, n, r)| serde_json::json!({"date": throttle::day_string(d), "used": n, "remaining": r}))
            .collect();
        let daily: Vec<serde_json::Value> = (first..=last)
            .map(|d| {
                let (used, remaining) = day_value(d, &days, quota);
                serde_json::json!([used, remaining])
            })
            .collect();
        items.insert(id.clone(), serde_json::Value::Array(dated));
        values.insert(id.clone(), serde_json::Value::Array(daily));
        taken += 1;
        if page.limit.is_some_and(|l| taken >= l) {
            if keys.peek().is_some() {
                position = Some(id);
            }
            break;
        }
    }
    let mut v = serde_json::json!({
        "usagePlanId": plan,
        "startDate": start,
        "endDate": end,
        "values": values,
        "items": items,
    });
    if let Some(p) = position {
        v["position"] = serde_json::json!(p);
    }
    v
}

/// Day `d`'s requests and what its quota period had left at its end, from a key's days with
/// requests: a day without any had what the period's next day with requests had before them,
/// or else what its last one before had left, or else the whole quota.
fn day_value(
    d: i64,
    days: &[(i64, u64, Option<u64>)],
    quota: Option<crate::config::Quota>,
) -> (u64, Option<u64>) {
    if let Some(&(_, n, r)) = days.iter().find(|&&(x, _, _)| x == d) {
        return (n, r);
    }
    let Some(q) = quota else {
        return (0, None);
    };
    let period = q.period.index(d);
    let same = |x: i64| q.period.index(x) == period;
    if let Some(&(_, n, r)) = days.iter().find(|&&(x, _, _)| x > d && same(x)) {
        return (0, r.map(|r| (r + n).min(q.limit)));
    }
    if let Some(&(_, _, r)) = days.iter().rev().find(|&&(x, _, _)| x < d && same(x)) {
        return (0, r);
    }
    (0, Some(q.limit))
}

/// The days a report from `start` to `end` reads counts of: from the start of `start`'s
/// quota period (its earlier days count toward what each day had left).
pub(crate) fn report_days(
    quota: Option<crate::config::Quota>,
    start: &str,
    end: &str,
) -> Vec<String> {
    let first = throttle::parse_day(start).unwrap_or_default();
    let last = throttle::parse_day(end).unwrap_or(first);
    let from = quota.map_or(first, |q| period_start(q.period, first));
    (from..=last).map(throttle::day_string).collect()
}

/// A report's entries from daily counts (`(key, day, count)`, from the start of the first
/// day's period, as [`report_days`] names them): per key its days, each with what its quota
/// period had left at its end; today's from `now`, the current period's count as the fleet's
/// counter has it (an admin's quota set included).
pub(crate) fn entries_from(
    quota: Option<crate::config::Quota>,
    rows: Vec<(String, String, u64)>,
    now: &std::collections::BTreeMap<String, (i64, u64)>,
) -> PerKey {
    let today = throttle::today();
    let mut by_key: std::collections::BTreeMap<String, Vec<(i64, u64)>> = Default::default();
    for (id, day, n) in rows {
        let d = throttle::parse_day(&day).unwrap_or_default();
        by_key.entry(id).or_default().push((d, n));
    }
    let mut entries = PerKey::default();
    for (id, mut days) in by_key {
        days.sort_by_key(|&(d, _)| d);
        let left = quota
            .map(|q| remaining_by_day(q, &days, now.get(&id).copied(), today))
            .unwrap_or_default();
        let e = entries.entry(id).or_default();
        for (i, &(d, n)) in days.iter().enumerate() {
            e.push((d, n, left.get(i).copied()));
        }
    }
    entries
}

/// What each day's quota period had left at that day's end, for a key's daily counts (in day
/// order, from the start of the first day's period): the period's counts so far, except that
/// today says what the shards count now (`now`: the period and its count, which an admin's
/// quota set may have changed).
fn remaining_by_day(
    q: crate::config::Quota,
    days: &[(i64, u64)],
    now: Option<(i64, u64)>,
    today: i64,
) -> Vec<u64> {
    let current = q.period.index(today);
    let last_current = days
        .iter()
        .rposition(|&(d, _)| q.period.index(d) == current);
    let (mut period, mut spent) = (i64::MIN, 0u64);
    days.iter()
        .enumerate()
        .map(|(i, &(d, n))| {
            let idx = q.period.index(d);
            if idx != period {
                (period, spent) = (idx, 0);
            }
            spent += n;
            match now {
                Some((p, used)) if p == idx && Some(i) == last_current && d == today => {
                    q.limit.saturating_sub(used)
                }
                _ => q.limit.saturating_sub(spent),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::config::{Period, Quota};
    use crate::control::store::Store;
    use crate::throttle::{day_string, QuotaCell};

    #[test]
    fn a_days_last_requests_reach_the_store_once_the_next_day_began() {
        let dir = std::env::temp_dir().join(format!(
            "tollgate-usage-{}-{}",
            std::process::id(),
            crate::throttle::now_ns()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir).unwrap();
        let cell = Arc::new(QuotaCell::new(0, 0, 0, 0));
        let quotas = super::SharedQuotas::default();
        quotas
            .lock()
            .unwrap()
            .insert((Arc::from("gold"), Arc::from("k1")), cell.clone());
        let q = Some(Quota {
            limit: 1000,
            period: Period::Month,
        });
        let day = crate::throttle::parse_day("2026-12-05").unwrap();
        let usage = |day: i64| {
            let d = day_string(day);
            store.usage("gold", &d, &d, None).unwrap()
        };
        let row = |day: i64, n: u64| vec![("k1".to_string(), day_string(day), n)];
        cell.take(q, day).unwrap();
        cell.take(q, day).unwrap();
        super::flush_cells(&quotas, || Ok(&store)).unwrap();
        assert_eq!(usage(day), row(day, 2));
        // One more in the day's last second, then the next day's first request before the
        // next flush: the day's report has all three.
        cell.take(q, day).unwrap();
        cell.take(q, day + 1).unwrap();
        let down = super::flush_cells(&quotas, || Err("down".to_string()));
        assert!(down.is_err());
        assert_eq!(usage(day), row(day, 2));
        // What a failed flush did not write, the next one does.
        super::flush_cells(&quotas, || Ok(&store)).unwrap();
        assert_eq!(usage(day), row(day, 3));
        assert_eq!(usage(day + 1), row(day + 1, 1));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_day_says_what_its_period_had_left() {
        let week = Quota {
            limit: 100,
            period: Period::Week,
        };
        // 2026-11-30 is a Monday: day numbers of that week and the next.
        let mon = crate::throttle::parse_day("2026-11-30").unwrap();
        let days = [(mon, 10), (mon + 2, 5), (mon + 7, 1), (mon + 8, 2)];
        // Within a week the counts add up; the next week starts again.
        assert_eq!(
            super::remaining_by_day(week, &days, None, mon + 8),
            [90, 85, 99, 97]
        );
        // Today says the shards' count (an admin set it to 50); a report that ends before
        // today does not.
        let now = Some((Period::Week.index(mon + 8), 50));
        assert_eq!(
            super::remaining_by_day(week, &days, now, mon + 8),
            [90, 85, 99, 50]
        );
        assert_eq!(
            super::remaining_by_day(week, &days[..3], now, mon + 8),
            [90, 85, 99]
        );
        // Months: 2026-11-30 is November's, the rest December's; a count of a period gone by
        // (the shards' cell last counted in January) is not today's.
        let month = Quota {
            limit: 20,
            period: Period::Month,
        };
        assert_eq!(
            super::remaining_by_day(
                month,
                &days,
                Some((Period::Month.index(mon + 40), 3)),
                mon + 40
            ),
            [10, 15, 14, 12]
        );
    }
}
