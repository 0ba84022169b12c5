//! Handing the state store to a successor (`tollgate --take-over`) in two steps: released
//! (flushed and closed, this process still serving), then committed (the successor serves:
//! this one drains) or taken back (the successor failed to start: this one reopens its store
//! and serves on, as if nothing had happened). And the usage counted between the two, which
//! the successor adds to its own.

use super::*;

impl Control {
    /// Flushes the usage counters and closes the state store for a successor (this process
    /// serves on until the successor commits or fails).
    pub(super) fn release_store(&mut self) -> Result<(), String> {
        // One snapshot is both what the store gets and what later deltas count from: shards
        // keep counting meanwhile, and no request may fall between the two.
        let snap = self.counters();
        let batch: Vec<(String, String, QuotaState)> = snap
            .iter()
            .map(|((plan, id), [period, used, day, day_used])| {
                let st = QuotaState {
                    period: *period as i64,
                    used: *used,
                    day: *day as i64,
                    day_used: *day_used,
                };
                (plan.to_string(), id.to_string(), st)
            })
            .collect();
        // A day that ended since its last flush: its final count (it changes no more).
        let ended: Vec<store::EndedDay> = {
            let cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            cells
                .iter()
                .filter_map(|((plan, id), c)| {
                    let (day, n, _) = c.prev_day_unsaved()?;
                    Some((plan.to_string(), id.to_string(), day, n))
                })
                .collect()
        };
        let r = self.store().and_then(|s| s.flush(&batch, &ended));
        self.store = None;
        if let Some(link) = &self.fleet {
            link.give_up_usage();
        }
        self.released = true;
        self.released_at = snap;
        tracing::info!("state store flushed and closed for the new process");
        r
    }

    /// The successor failed to start after the store was released: the store is this
    /// process's again (reopened now, or by the store's healing every second while the
    /// failed successor's process lets go of its file), and so is its fleet usage name.
    pub(super) fn take_store_back(&mut self) {
        self.released = false;
        self.released_at.clear();
        if let Some(link) = &self.fleet {
            link.take_usage_back();
        }
        // Counted since the release: written at the next flush.
        for c in self
            .shared
            .quotas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            c.dirty.store(true, Ordering::Relaxed);
        }
        match Store::open(&self.state_dir) {
            Ok(s) => {
                self.store = Some(s);
                tracing::warn!("the new process did not take over: the state store is this process's again; still serving");
            }
            Err(e) => {
                tracing::warn!(error = %e, "the new process did not take over; the state store is reopened once its file is free");
                self.store_broken = true;
            }
        }
    }
}

/// Usage counted by a process after it handed its store to a successor, for the successor
/// to add to its own counters: per plan and key, the period and day it was counted in and how
/// much.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct UsageDelta {
    pub plan: String,
    pub key: String,
    pub period: u64,
    pub used: u64,
    pub day: u64,
    pub day_used: u64,
}

impl Control {
    /// Every quota cell's (period, used, day, day_used).
    fn counters(&self) -> ahash::AHashMap<(Arc<str>, Arc<str>), [u64; 4]> {
        let cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .iter()
            .map(|(k, c)| {
                let v = [
                    c.period.load(Ordering::Relaxed),
                    c.used.load(Ordering::Relaxed),
                    c.day.load(Ordering::Relaxed),
                    c.day_used.load(Ordering::Relaxed),
                ];
                (k.clone(), v)
            })
            .collect()
    }

    /// Adds usage a predecessor counted after handing over its store.
    pub(crate) fn add_usage(&mut self, deltas: &[UsageDelta]) {
        self.awaiting_usage = false;
        let n: u64 = deltas.iter().map(|d| d.used.max(d.day_used)).sum();
        tracing::info!(
            requests = n,
            "usage counted by the previous process during its drain added"
        );
        let mut cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
        for d in deltas {
            let key = (Arc::from(d.plan.as_str()), Arc::from(d.key.as_str()));
            let cell = cells
                .entry(key)
                .or_insert_with(|| Arc::new(QuotaCell::new(d.period as i64, 0, d.day as i64, 0)));
            if cell.period.load(Ordering::Relaxed) == d.period {
                cell.used.fetch_add(d.used, Ordering::Relaxed);
            }
            if cell.day.load(Ordering::Relaxed) == d.day {
                cell.day_used.fetch_add(d.day_used, Ordering::Relaxed);
            }
            cell.dirty.store(true, Ordering::Relaxed);
        }
    }
}

/// The last flush, after the shards have stopped: a clean shutdown loses no usage. Then the
/// store is closed, releasing its file lock. A process that handed its store to a successor
/// returns what it counted since, for the successor to add.
pub(crate) fn final_flush(ctl: &mut Control) -> Option<Vec<UsageDelta>> {
    if ctl.released {
        let deltas = ctl
            .counters()
            .into_iter()
            .filter_map(|((plan, key), [period, used, day, day_used])| {
                let before = ctl.released_at.get(&(plan.clone(), key.clone()));
                let [bp, bu, bd, bdu] = before.copied().unwrap_or([period, 0, day, 0]);
                let used = if bp == period {
                    used.saturating_sub(bu)
                } else {
                    used
                };
                let day_used = if bd == day {
                    day_used.saturating_sub(bdu)
                } else {
                    day_used
                };
                (used > 0 || day_used > 0).then(|| UsageDelta {
                    plan: plan.to_string(),
                    key: key.to_string(),
                    period,
                    used,
                    day,
                    day_used,
                })
            })
            .collect();
        return Some(deltas);
    }
    if let Err(e) = ctl.flush() {
        tracing::error!(error = %e, "usage counters not saved at shutdown");
    }
    ctl.store = None;
    None
}
