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

    /// A GetUsage request checked: the plan and the days asked for (YYYY-MM-DD).
    pub(crate) fn usage_days(
        &self,
        plan: &str,
        start: &str,
        end: &str,
    ) -> Result<(crate::config::Plan, Vec<String>), OpError> {
        let p = self.plan(plan)?.clone();
        let (Some(s), Some(e)) = (throttle::parse_day(start), throttle::parse_day(end)) else {
            return Err(bad("startDate and endDate: dates as YYYY-MM-DD"));
        };
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
        start: &str,
        end: &str,
        key: Option<&str>,
    ) -> Result<serde_json::Value, OpError> {
        let (p, _) = self.usage_days(plan, start, end)?;
        self.flush().map_err(|e| OpError(500, e))?;
        let rows = self
            .store()
            .map_err(|e| OpError(500, e))?
            .usage(plan, start, end, key)
            .map_err(|e| OpError(500, e))?;
        let cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
        let mut items: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
            Default::default();
        for (id, day, n) in rows {
            let remaining = p.quota.map(|q| {
                let used = cells
                    .get(&(Arc::from(plan), Arc::from(id.as_str())))
                    .map(|c| c.used.load(Ordering::Relaxed))
                    .unwrap_or(n);
                q.limit.saturating_sub(used)
            });
            items
                .entry(id)
                .or_default()
                .push(serde_json::json!({"date": day, "used": n, "remaining": remaining}));
        }
        Ok(
            serde_json::json!({"usagePlanId": plan, "startDate": start, "endDate": end, "items": items}),
        )
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
        cell.fleet_spent.store(0, Ordering::Relaxed);
        cell.dirty.store(true, Ordering::Relaxed);
        self.flush().map_err(|e| OpError(500, e))
    }

    /// Writes changed counters to the state store.
    pub(crate) fn flush(&self) -> Result<(), String> {
        let batch: Vec<(String, String, QuotaState)> = {
            let cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            cells
                .iter()
                .filter(|(_, c)| c.dirty.swap(false, Ordering::Relaxed))
                .map(|((plan, id), c)| {
                    let st = QuotaState {
                        period: c.period.load(Ordering::Relaxed) as i64,
                        used: c.used.load(Ordering::Relaxed),
                        day: c.day.load(Ordering::Relaxed) as i64,
                        day_used: c.day_used.load(Ordering::Relaxed),
                    };
                    (plan.to_string(), id.to_string(), st)
                })
                .collect()
        };
        let r = self.store().and_then(|s| s.flush(&batch));
        if r.is_err() {
            // Not saved: mark them again, so the next flush writes their (then current) values.
            let cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            for (plan, id, _) in &batch {
                let key = (Arc::from(plan.as_str()), Arc::from(id.as_str()));
                if let Some(c) = cells.get(&key) {
                    c.dirty.store(true, Ordering::Relaxed);
                }
            }
        }
        r
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
