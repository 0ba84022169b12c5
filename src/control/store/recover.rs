//! `tollgate state recover`: redb repairs a copy of a damaged state file, and every record
//! that still reads goes into a new one — a record that does not (its bytes not even UTF-8)
//! costs only itself.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use redb::{ReadableTable, TableDefinition};

use super::*;

/// Lets redb repair a copy of the state file and writes every record it can read into a new
/// store at `out` (which must not exist). Returns what was saved.
pub(crate) fn recover(dir: &Path, out: &Path) -> Result<Contents, String> {
    let path = dir.join(STATE_FILE);
    if out.exists() {
        return Err(format!("{} exists: give a new file", out.display()));
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(format!(
                "{}: its folder {} does not exist",
                out.display(),
                parent.display()
            ));
        }
    }
    let folder = out.parent().filter(|p| !p.as_os_str().is_empty());
    let copy = Copy::of_or(&path, Some(folder.unwrap_or(Path::new("."))))
        .map_err(|err| e("cannot copy to repair it", &path, err))?;
    let (keys, quotas, usage, access_keys, objects) =
        no_panic("cannot be repaired", &path, || {
            let mut db = redb::Builder::new()
                .set_cache_size(STORE_CACHE_BYTES)
                .open(&copy.0)
                .map_err(|err| e("cannot be opened", &path, err))?;
            // Ok(false): redb found damage and repaired the copy.
            let _ = db.check_integrity();
            let old = Store {
                db,
                path: copy.0.clone(),
                failed: Default::default(),
                wrote: Default::default(),
            };
            Ok((
                old.keys_lenient(),
                old.quotas_lenient(),
                old.usage_lenient(),
                old.table_lenient(ACCESS_KEYS),
                old.table_lenient(OBJECTS),
            ))
        })?;
    // Access keys as they read back (a damaged one is left out, not carried over).
    let access_keys: Vec<StoredAccessKey> = access_keys
        .iter()
        .filter_map(|(_, v)| serde_json::from_str(v).ok())
        .collect();
    let new = Store::open_file(out, out, true)?;
    new.put_keys(&keys)?;
    new.flush(&quotas, &[])?;
    new.put_usage(&usage)?;
    for k in &access_keys {
        new.put_access_key(k)?;
    }
    new.write_objects(&objects, &[])?;
    Ok(Contents {
        keys: keys.len(),
        counters: quotas.len() + usage.len(),
        access_keys: access_keys.len(),
        objects: objects.len(),
    })
}

/// One record read from a damaged file: `None` where it does not read, its bytes not UTF-8
/// included (redb panics decoding those as `&str`), so that one such record costs only
/// itself.
fn read_record<T>(f: impl FnOnce() -> Option<T>) -> Option<T> {
    crate::driver::quietly(|| catch_unwind(AssertUnwindSafe(f)))
        .ok()
        .flatten()
}

impl Store {
    /// Every record of a table that reads, skipping damaged ones (for [`recover`]).
    fn table_lenient(&self, def: TableDefinition<&str, &str>) -> Vec<(String, String)> {
        let Ok(r) = self.db.begin_read() else {
            return Vec::new();
        };
        let Ok(t) = r.open_table(def) else {
            return Vec::new();
        };
        let Ok(iter) = t.iter() else {
            return Vec::new();
        };
        iter.filter_map(|item| {
            read_record(|| {
                let (k, v) = item.ok()?;
                Some((k.value().to_string(), v.value().to_string()))
            })
        })
        .collect()
    }

    /// Every quota counter that reads, skipping damaged ones (for [`recover`]).
    fn quotas_lenient(&self) -> Vec<(String, String, QuotaState)> {
        self.table_lenient(QUOTAS)
            .into_iter()
            .filter_map(|(k, v)| {
                let (plan, id) = k.split_once('|')?;
                let st: QuotaState = serde_json::from_str(&v).ok()?;
                Some((plan.to_string(), id.to_string(), st))
            })
            .collect()
    }

    /// Every daily usage record that reads, skipping damaged ones (for [`recover`]).
    fn usage_lenient(&self) -> Vec<(String, u64)> {
        let Ok(r) = self.db.begin_read() else {
            return Vec::new();
        };
        let Ok(t) = r.open_table(USAGE) else {
            return Vec::new();
        };
        let Ok(iter) = t.iter() else {
            return Vec::new();
        };
        iter.filter_map(|item| {
            read_record(|| {
                let (k, v) = item.ok()?;
                Some((k.value().to_string(), v.value()))
            })
        })
        .collect()
    }

    /// Every key whose record reads, skipping damaged ones (for [`recover`]).
    fn keys_lenient(&self) -> Vec<StoredKey> {
        self.table_lenient(KEYS)
            .iter()
            .filter_map(|(_, v)| serde_json::from_str(v).ok())
            .collect()
    }

    /// Writes daily usage records as they are (for [`recover`]).
    fn put_usage(&self, rows: &[(String, u64)]) -> Result<(), String> {
        let w = self
            .db
            .begin_write()
            .map_err(|err| e("write", &self.path, err))?;
        {
            let mut t = w
                .open_table(USAGE)
                .map_err(|err| e("write usage", &self.path, err))?;
            for (k, v) in rows {
                t.insert(k.as_str(), *v)
                    .map_err(|err| e("write usage", &self.path, err))?;
            }
        }
        w.commit().map_err(|err| e("write", &self.path, err))
    }
}
