//! The embedded state store (redb) under `server.state_dir`: API keys created at run time,
//! quota counters and daily usage. Only the control plane opens it. Every write is one redb
//! transaction, durable when `commit` returns; a crash loses nothing committed. A file that
//! cannot be opened (corrupt, unreadable, another process holding it) stops start-up with the
//! reason: state is never silently reset.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const KEYS: TableDefinition<&str, &str> = TableDefinition::new("api_keys");
const QUOTAS: TableDefinition<&str, &str> = TableDefinition::new("quotas");
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");

/// redb's page cache (4 MiB): the store is off the request path and small.
const STORE_CACHE_BYTES: usize = 4 << 20;

/// The state file's name inside `server.state_dir`.
pub(crate) const STATE_FILE: &str = "tollgate.redb";

/// A key created through the admin API, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StoredKey {
    pub id: String,
    pub name: String,
    /// SHA-256 of the value, hex.
    pub hash: String,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    /// Usage plan names.
    #[serde(default)]
    pub plans: Vec<String>,
    /// UNIX seconds.
    pub created: u64,
}

/// One key's counters under one plan.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub(crate) struct QuotaState {
    pub period: i64,
    pub used: u64,
    pub day: i64,
    pub day_used: u64,
}

pub(crate) struct Store {
    db: Database,
    pub path: PathBuf,
}

fn e(what: &str, path: &Path, err: impl std::fmt::Display) -> String {
    format!("state store {}: {what}: {err}", path.display())
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir)
            .map_err(|err| e("cannot create the state directory", dir, err))?;
        let path = dir.join(STATE_FILE);
        // A small page cache: the store is written once a second and read on admin calls only.
        let db = redb::Builder::new().set_cache_size(STORE_CACHE_BYTES).create(&path).map_err(|err| {
            e("cannot open (corrupt, unreadable or in use by another process); it was left untouched", &path, err)
        })?;
        let w = db
            .begin_write()
            .map_err(|err| e("cannot write", &path, err))?;
        {
            w.open_table(KEYS)
                .map_err(|err| e("bad api_keys table", &path, err))?;
            w.open_table(QUOTAS)
                .map_err(|err| e("bad quotas table", &path, err))?;
            w.open_table(USAGE)
                .map_err(|err| e("bad usage table", &path, err))?;
        }
        w.commit().map_err(|err| e("cannot write", &path, err))?;
        let store = Store { db, path };
        // Read everything once so that a damaged record stops start-up too.
        store.keys()?;
        store.quotas()?;
        Ok(store)
    }

    pub(crate) fn keys(&self) -> Result<Vec<StoredKey>, String> {
        let r = self
            .db
            .begin_read()
            .map_err(|err| e("read", &self.path, err))?;
        let t = r
            .open_table(KEYS)
            .map_err(|err| e("read api_keys", &self.path, err))?;
        let mut out = Vec::new();
        for item in t
            .iter()
            .map_err(|err| e("read api_keys", &self.path, err))?
        {
            let (k, v) = item.map_err(|err| e("read api_keys", &self.path, err))?;
            let key: StoredKey = serde_json::from_str(v.value()).map_err(|err| {
                e(
                    &format!("api key {:?} is damaged", k.value()),
                    &self.path,
                    err,
                )
            })?;
            out.push(key);
        }
        Ok(out)
    }

    /// Writes keys (new or changed) in one transaction: all or none.
    pub(crate) fn put_keys(&self, keys: &[StoredKey]) -> Result<(), String> {
        let w = self
            .db
            .begin_write()
            .map_err(|err| e("write", &self.path, err))?;
        {
            let mut t = w
                .open_table(KEYS)
                .map_err(|err| e("write api_keys", &self.path, err))?;
            for k in keys {
                let json = serde_json::to_string(k).map_err(|err| e("encode", &self.path, err))?;
                t.insert(k.id.as_str(), json.as_str())
                    .map_err(|err| e("write api_keys", &self.path, err))?;
            }
        }
        w.commit().map_err(|err| e("commit", &self.path, err))
    }

    /// Deletes a key and its counters; `false` if there was no such key.
    pub(crate) fn delete_key(&self, id: &str) -> Result<bool, String> {
        let w = self
            .db
            .begin_write()
            .map_err(|err| e("write", &self.path, err))?;
        let existed;
        {
            let mut t = w
                .open_table(KEYS)
                .map_err(|err| e("write api_keys", &self.path, err))?;
            existed = t
                .remove(id)
                .map_err(|err| e("write api_keys", &self.path, err))?
                .is_some();
            let mut q = w
                .open_table(QUOTAS)
                .map_err(|err| e("write quotas", &self.path, err))?;
            let doomed: Vec<String> = q
                .iter()
                .map_err(|err| e("read quotas", &self.path, err))?
                .filter_map(|i| i.ok())
                .map(|(k, _)| k.value().to_string())
                .filter(|k| k.split('|').nth(1) == Some(id))
                .collect();
            for k in doomed {
                q.remove(k.as_str())
                    .map_err(|err| e("write quotas", &self.path, err))?;
            }
        }
        w.commit().map_err(|err| e("commit", &self.path, err))?;
        Ok(existed)
    }

    /// Every (plan, key id) counter.
    pub(crate) fn quotas(&self) -> Result<Vec<(String, String, QuotaState)>, String> {
        let r = self
            .db
            .begin_read()
            .map_err(|err| e("read", &self.path, err))?;
        let t = r
            .open_table(QUOTAS)
            .map_err(|err| e("read quotas", &self.path, err))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|err| e("read quotas", &self.path, err))? {
            let (k, v) = item.map_err(|err| e("read quotas", &self.path, err))?;
            let (plan, id) = k
                .value()
                .split_once('|')
                .ok_or_else(|| e("bad quota key", &self.path, k.value()))?;
            let st: QuotaState = serde_json::from_str(v.value())
                .map_err(|err| e("quota record is damaged", &self.path, err))?;
            out.push((plan.to_string(), id.to_string(), st));
        }
        Ok(out)
    }

    /// Writes counters and today's usage in one transaction.
    pub(crate) fn flush(&self, counters: &[(String, String, QuotaState)]) -> Result<(), String> {
        if counters.is_empty() {
            return Ok(());
        }
        let w = self
            .db
            .begin_write()
            .map_err(|err| e("write", &self.path, err))?;
        {
            let mut q = w
                .open_table(QUOTAS)
                .map_err(|err| e("write quotas", &self.path, err))?;
            let mut u = w
                .open_table(USAGE)
                .map_err(|err| e("write usage", &self.path, err))?;
            for (plan, id, st) in counters {
                let json = serde_json::to_string(st).map_err(|err| e("encode", &self.path, err))?;
                q.insert(format!("{plan}|{id}").as_str(), json.as_str())
                    .map_err(|err| e("write quotas", &self.path, err))?;
                let day = crate::throttle::day_string(st.day);
                u.insert(format!("{plan}|{day}|{id}").as_str(), st.day_used)
                    .map_err(|err| e("write usage", &self.path, err))?;
            }
        }
        w.commit().map_err(|err| e("commit", &self.path, err))
    }

    /// Daily usage under `plan` from `from` to `to` (inclusive, "YYYY-MM-DD"), optionally for
    /// one key: (key id, day, requests).
    pub(crate) fn usage(
        &self,
        plan: &str,
        from: &str,
        to: &str,
        key: Option<&str>,
    ) -> Result<Vec<(String, String, u64)>, String> {
        let r = self
            .db
            .begin_read()
            .map_err(|err| e("read", &self.path, err))?;
        let t = r
            .open_table(USAGE)
            .map_err(|err| e("read usage", &self.path, err))?;
        let lo = format!("{plan}|{from}|");
        let hi = format!("{plan}|{to}|~");
        let mut out = Vec::new();
        for item in t
            .range(lo.as_str()..hi.as_str())
            .map_err(|err| e("read usage", &self.path, err))?
        {
            let (k, v) = item.map_err(|err| e("read usage", &self.path, err))?;
            let mut parts = k.value().splitn(3, '|');
            let (_, day, id) = (
                parts.next(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            if key.is_none_or(|want| want == id) {
                out.push((id.to_string(), day.to_string(), v.value()));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "tollgate-store-{}-{}",
            std::process::id(),
            crate::throttle::now_ns()
        ));
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn keys_and_counters_survive_reopening() {
        let d = dir();
        {
            let s = Store::open(&d).unwrap();
            let k = StoredKey {
                id: "abc".into(),
                name: "n".into(),
                hash: "00".repeat(32),
                description: String::new(),
                enabled: true,
                plans: vec!["gold".into()],
                created: 1,
            };
            s.put_keys(&[k]).unwrap();
            s.flush(&[(
                "gold".into(),
                "abc".into(),
                QuotaState {
                    period: 5,
                    used: 42,
                    day: 20_000,
                    day_used: 7,
                },
            )])
            .unwrap();
        }
        let s = Store::open(&d).unwrap();
        assert_eq!(s.keys().unwrap()[0].id, "abc");
        assert_eq!(s.quotas().unwrap()[0].2.used, 42);
        let day = crate::throttle::day_string(20_000);
        assert_eq!(
            s.usage("gold", &day, &day, None).unwrap(),
            vec![("abc".to_string(), day.clone(), 7)]
        );
        assert!(s.delete_key("abc").unwrap());
        assert!(s.keys().unwrap().is_empty());
        assert!(s.quotas().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_file_stops_start_up_and_is_left_alone() {
        let d = dir();
        std::fs::write(
            d.join(STATE_FILE),
            b"this is not a redb file, it is garbage garbage garbage",
        )
        .unwrap();
        let err = Store::open(&d).err().expect("refused");
        assert!(err.contains("cannot open"), "{err}");
        assert_eq!(
            std::fs::read(d.join(STATE_FILE)).unwrap(),
            b"this is not a redb file, it is garbage garbage garbage"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
