//! Applying the fleet's changes to this node, and planning an admin call's change of run-time
//! APIs for the fleet.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Change, EntryId, POSITION};
use crate::control::store::StoredKey;
use crate::control::{Control, OpError};

impl Control {
    /// Starts planning an admin call's change of run-time APIs, deployments, stages or
    /// domain mappings for the fleet: while planned, the call is checked (compiled) and its
    /// writes noted, but nothing is stored or served.
    pub(crate) fn begin_plan(&mut self) {
        self.planned = Some((self.objects.clone(), BTreeMap::new()));
    }

    /// Ends planning: the run-time objects are as before it; the change the call planned, if
    /// it wrote anything.
    pub(crate) fn end_plan(&mut self) -> Option<Change> {
        let (before, writes) = self.planned.take()?;
        self.objects = before;
        (!writes.is_empty()).then_some(Change::Objects { writes })
    }

    /// What each object `change` writes must be in the fleet for it to go through: what this
    /// node holds (or nothing).
    pub(crate) fn fleet_expects(&self, change: &Change) -> Result<super::Expects, OpError> {
        let Change::Objects { writes } = change else {
            return Ok(Default::default());
        };
        let mut held: ahash::AHashMap<String, String> = self
            .store()
            .map_err(|e| OpError(503, e))?
            .objects()
            .map_err(|e| OpError(500, e))?
            .into_iter()
            .filter(|(k, _)| writes.contains_key(k))
            .collect();
        Ok(writes
            .keys()
            .map(|k| {
                let e = match held.remove(k) {
                    Some(v) => super::Expect::Is(v),
                    None => super::Expect::Absent,
                };
                (k.clone(), e)
            })
            .collect())
    }

    /// Applies changes to this node: the store (one transaction for the keys, one for the
    /// run-time objects and the position), the tables the shards read (one new snapshot),
    /// and — for changes read from the fleet — the position.
    /// Returns how many cache entries the cache commands removed here.
    pub(crate) fn apply_changes(
        &mut self,
        changes: &[Change],
        position: Option<EntryId>,
    ) -> Result<u64, OpError> {
        // The last change of each key and object wins (a full sync brings 100,000s at once:
        // nothing here is quadratic).
        let mut keys: ahash::AHashMap<&str, Option<&StoredKey>> = Default::default();
        let mut objects: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut removed = 0u64;
        let mut access_changed = false;
        for c in changes {
            match c {
                Change::AccessKeyPut { key } => {
                    let store = self.store().map_err(|e| OpError(500, e))?;
                    store.put_access_key(key).map_err(|e| OpError(500, e))?;
                    match self.stored_access.iter_mut().find(|s| s.id == key.id) {
                        Some(s) => *s = key.clone(),
                        None => self.stored_access.push(key.clone()),
                    }
                    access_changed = true;
                }
                Change::AccessKeyDelete { id } => {
                    let store = self.store().map_err(|e| OpError(500, e))?;
                    store.delete_access_key(id).map_err(|e| OpError(500, e))?;
                    self.stored_access.retain(|k| k.id != *id);
                    access_changed = true;
                }
                Change::QuotaSet {
                    plan,
                    key,
                    used,
                    period,
                } => {
                    // A plan this node does not have: nothing of it is counted here.
                    if let Err(e) = self.set_quota_cell(plan, key, *used, *period) {
                        if e.0 == 500 {
                            return Err(e);
                        }
                    }
                }
                Change::CacheFlush {
                    api,
                    stage,
                    path,
                    prefix,
                } => {
                    // A node without that stage or its cache has nothing to flush. A
                    // stage's flush takes its canary's own cache too (what it holds was
                    // answered for the stage's clients).
                    let canary = (!stage.ends_with(crate::control::lifecycle::CANARY))
                        .then(|| format!("{stage}{}", crate::control::lifecycle::CANARY));
                    let mut seen: Option<std::sync::Arc<crate::cache::StageCache>> = None;
                    for s in std::iter::once(stage.as_str()).chain(canary.as_deref()) {
                        let Ok(cache) = self.stage_cache(api, s) else {
                            continue;
                        };
                        // A canary that uses the stage's cache is the same one.
                        if seen
                            .as_ref()
                            .is_some_and(|c| std::sync::Arc::ptr_eq(c, &cache))
                        {
                            continue;
                        }
                        removed += match path {
                            Some(p) => cache.purge(p, !prefix),
                            None => cache.flush(),
                        } as u64;
                        seen = Some(cache);
                    }
                }
                Change::KeyPut { key } => {
                    keys.insert(&key.id, Some(key));
                }
                Change::KeyDelete { id, .. } => {
                    keys.insert(id, None);
                }
                Change::Objects { writes } => {
                    objects.extend(writes.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let puts: Vec<StoredKey> = keys.values().filter_map(|k| k.cloned()).collect();
        let deletes: ahash::AHashSet<&str> = keys
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| *k)
            .collect();
        let store = self.store().map_err(|e| OpError(500, e))?;
        if !puts.is_empty() {
            store.put_keys(&puts).map_err(|e| OpError(500, e))?;
        }
        for id in &deletes {
            store.delete_key(id).map_err(|e| OpError(500, e))?;
        }
        let mut object_puts: Vec<(String, String)> = objects
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        let object_deletes: Vec<String> = objects
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(p) = position {
            object_puts.push((POSITION.to_string(), p.to_string()));
        }
        if !object_puts.is_empty() || !object_deletes.is_empty() {
            store
                .write_objects(&object_puts, &object_deletes)
                .map_err(|e| OpError(500, e))?;
        }
        let keys_changed = !puts.is_empty() || !deletes.is_empty();
        if keys_changed {
            let mut at: ahash::AHashMap<String, usize> = self
                .stored_keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.id.clone(), i))
                .collect();
            for k in puts {
                match at.get(&k.id) {
                    Some(&i) => self.stored_keys[i] = k,
                    None => {
                        at.insert(k.id.clone(), self.stored_keys.len());
                        self.stored_keys.push(k);
                    }
                }
            }
            self.stored_keys
                .retain(|k| !deletes.contains(k.id.as_str()));
            let mut cells = self.shared.quotas.lock().unwrap_or_else(|e| e.into_inner());
            {
                let mut gone = self
                    .shared
                    .gone_keys
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                gone.retain(|_, at| at.elapsed() < crate::shard::GONE_FOR);
                if gone.len() + deletes.len() > 10_000 {
                    gone.clear();
                }
                let now = std::time::Instant::now();
                gone.extend(deletes.iter().map(|k| (Arc::<str>::from(&**k), now)));
                // A key put again under a deleted id counts from now.
                for k in &self.stored_keys {
                    gone.remove(k.id.as_str());
                }
            }
            cells.retain(|(_, k), _| !deletes.contains(&**k));
        }
        if let Some(p) = position {
            if let Some(link) = &self.fleet {
                link.applied.set(Some(p));
            }
        }
        if !objects.is_empty() {
            // A new compiled configuration: its snapshot carries the keys and access keys too.
            self.serve_objects(&objects);
        } else if access_changed {
            // Rebuilds the table the shards look callers up in, and publishes.
            self.refresh_access();
        } else if keys_changed {
            self.publish();
        }
        Ok(removed)
    }

    /// Serves the run-time objects with `writes` (already stored) applied: compiled as at a
    /// start or a reload — an object that does not fit this node's configuration file (an
    /// API the file declares too, say) is skipped and said, never refused: the fleet already
    /// holds it.
    fn serve_objects(&mut self, writes: &BTreeMap<String, Option<String>>) {
        let before = self.objects.clone();
        for (k, v) in writes {
            self.objects.set(k, v.as_deref());
        }
        let (merged, skipped, waiting) = self.objects.merge(&self.file_config, &self.config_base());
        for e in &skipped {
            tracing::warn!(error = %e, "fleet: a run-time object is not served as stored on this node");
        }
        for w in &waiting {
            tracing::info!(what = %w, "waits for a run-time stage");
        }
        // Compiled against a copy of the registries, as a change made here is: when the
        // fleet's objects do not compile with this node's file (two changes that crossed, or
        // files that differ), the node keeps serving what it served.
        let mut registries = self.registries.clone();
        match crate::compile::compile(Arc::new(merged), &mut registries) {
            Ok(c) => {
                self.registries = registries;
                self.install(c);
                self.flush_redeployed(&before);
            }
            Err(e) => {
                tracing::error!(errors = %e.errors.join("; "), "fleet: the run-time objects do not compile with this node's configuration; it keeps serving the previous one")
            }
        }
    }
}

/// A node applies its own writes at once, and its sync applies them again when it reads them
/// from the stream, after the entries before them. Entries read meanwhile must not undo an
/// own write applied already: a key enabled by an older entry after this node disabled it
/// read enabled, and a write planned from that read (its description set) made it enabled
/// for the fleet. Held per object (`key/ID`, `stage/API/NAME`...): the stream entry of this
/// node's last write of it, until its sync reads past that entry.
#[derive(Default)]
pub(crate) struct OwnWrites(std::cell::RefCell<ahash::AHashMap<String, EntryId>>);

impl OwnWrites {
    /// Notes the objects of `changes`, this node's write at stream entry `id`, applied here.
    pub(crate) fn note(&self, id: EntryId, changes: &[Change]) {
        let mut own = self.0.borrow_mut();
        for c in changes {
            for (k, _) in c.objects() {
                let at = own.entry(k).or_insert(id);
                *at = (*at).max(id);
            }
        }
    }

    /// `c`, the stream's entry `id`, without what this node's own later writes (applied
    /// already) replaced.
    pub(crate) fn newer(&self, id: EntryId, c: Change) -> Option<Change> {
        let own = self.0.borrow();
        if own.is_empty() {
            return Some(c);
        }
        let newer = |k: &str| own.get(k).is_some_and(|&o| o > id);
        match c {
            Change::Objects { mut writes } => {
                writes.retain(|k, _| !newer(k));
                (!writes.is_empty()).then_some(Change::Objects { writes })
            }
            other if other.objects().iter().any(|(k, _)| newer(k)) => None,
            other => Some(other),
        }
    }

    /// The sync applied the stream up to `last`: own writes up to it are in their place.
    pub(crate) fn reached(&self, last: EntryId) {
        self.0.borrow_mut().retain(|_, o| *o > last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_older_than_an_own_write_applied_do_not_undo_it() {
        let own = OwnWrites::default();
        let (e1, e2, e3) = (
            EntryId::parse("5-0").unwrap(),
            EntryId::parse("6-0").unwrap(),
            EntryId::parse("7-0").unwrap(),
        );
        let stage = |v: &str| Change::Objects {
            writes: [
                ("stage/a/prod".to_string(), Some(v.to_string())),
                ("mapping/m".to_string(), Some(v.to_string())),
            ]
            .into(),
        };
        // This node wrote the stage at e2 and applied it.
        own.note(
            e2,
            &[Change::Objects {
                writes: [("stage/a/prod".to_string(), Some("mine".to_string()))].into(),
            }],
        );
        // e1 (older) keeps only what e2 did not replace; e2 and later entries go through.
        let Some(Change::Objects { writes }) = own.newer(e1, stage("old")) else {
            panic!("the mapping's write is kept");
        };
        assert_eq!(writes.keys().collect::<Vec<_>>(), ["mapping/m"]);
        assert!(own.newer(e2, stage("mine")).is_some());
        assert!(own.newer(e3, stage("later")).is_some());
        let delete = |id: &str| Change::KeyDelete {
            id: id.into(),
            hash: None,
        };
        own.note(e2, &[delete("k")]);
        assert!(own.newer(e1, delete("k")).is_none());
        assert!(own.newer(e1, delete("other")).is_some());
        // Once the sync has read e2, nothing is held back.
        own.reached(e2);
        assert!(own.newer(e1, stage("old")).is_some());
        assert!(own.newer(e1, delete("k")).is_some());
    }
}
