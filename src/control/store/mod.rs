//! The embedded state store (redb) under `server.state_dir`: API keys created at run time,
//! quota counters and daily usage. Only the control plane opens it. Every write is one redb
//! transaction, durable when `commit` returns; a crash loses nothing committed.
//!
//! A damaged file never panics the process, is never reset and never modified: before the
//! file itself is opened, a copy of it is opened and read through (every table, every record)
//! with redb's panics caught. An empty file, one that does not open, or one whose records do not
//! read stops start-up with the reason, and the file stays byte for byte as it was.
//! [`check`] runs the same test for `tollgate state check`; [`recover`] lets redb repair a
//! copy and writes what it can read into a new file (`tollgate state recover`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

mod recover;
pub(crate) use recover::recover;

const KEYS: TableDefinition<&str, &str> = TableDefinition::new("api_keys");
const QUOTAS: TableDefinition<&str, &str> = TableDefinition::new("quotas");
const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");
const ACCESS_KEYS: TableDefinition<&str, &str> = TableDefinition::new("access_keys");
/// Run-time APIs, deployments, stages and domain mappings: JSON by kind-prefixed key.
const OBJECTS: TableDefinition<&str, &str> = TableDefinition::new("objects");

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

/// A SigV4 access key, as stored: its secret sealed ([`crate::auth::access::SecretsKey`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StoredAccessKey {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    /// The IAM-style policy document, as given.
    pub policy: serde_json::Value,
    /// `v1:` base64 of nonce, ciphertext and tag.
    pub sealed_secret: String,
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

/// A day that ended and its final count of a key's requests: plan, key id, day, requests.
pub(crate) type EndedDay = (String, String, i64, u64);

pub(crate) struct Store {
    db: Database,
    pub path: PathBuf,
    /// A write failed. redb refuses every later write after an I/O error ("Previous I/O
    /// error occurred"), so the control plane reopens the store once writes work again.
    failed: std::cell::Cell<bool>,
    /// A write went through since the store was opened.
    wrote: std::cell::Cell<bool>,
}

fn e(what: &str, path: &Path, err: impl std::fmt::Display) -> String {
    format!("state store {}: {what}: {err}", path.display())
}

/// A state file another process holds open: no damage, nothing to recover.
const IN_USE: &str = "is in use by another process";
const IN_USE_WHY: &str =
    "a gateway with the same server.state_dir runs: stop it, or give this one a state_dir of its own";

/// A state file this process may not write (restored as root, a read-only mount): no
/// damage, nothing to recover.
const NOT_WRITABLE: &str = "cannot be written by this process's user";
const NOT_WRITABLE_WHY: &str =
    "give the file and its folder to the user the gateway runs as (chown), or mount them writable";

/// What to do with a damaged state file, appended to every refusal.
const RECOVER: &str = "the file was left untouched; `tollgate state check` tests it, `tollgate state recover --out FILE` writes what can be read into a new file to put in its place";

/// Runs `f` (redb work on a file), turning a panic inside redb into an error.
fn no_panic<T>(
    what: &str,
    path: &Path,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    // The panic is reported below, as what it means; not by the hook, with a backtrace.
    crate::driver::quietly(|| catch_unwind(AssertUnwindSafe(f))).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "redb panicked".into());
        Err(e(what, path, format!("damaged ({why})")))
    })
}

/// A scratch copy of the state file next to it, removed when dropped (and when the copy
/// fails part way: a full disk keeps no partial copy, which would hold the space freed).
/// Where the state directory cannot be written (a disk the kernel remounted read-only, the
/// very case for `state check` and `state recover`), the copy goes to `elsewhere` (the
/// recovered file's folder) or the temporary directory.
struct Copy(PathBuf);

impl Copy {
    fn of(path: &Path) -> Result<Copy, std::io::Error> {
        Copy::of_or(path, None)
    }

    fn of_or(path: &Path, elsewhere: Option<&Path>) -> Result<Copy, std::io::Error> {
        let name = path.with_extension(format!("check-{}", std::process::id()));
        let first = Copy::to(path, name.clone());
        match first {
            Err(err) if read_only(&err) => {
                let dir = elsewhere.map_or_else(std::env::temp_dir, Path::to_path_buf);
                Copy::to(path, dir.join(name.file_name().unwrap_or_default()))
            }
            other => other,
        }
    }

    fn to(path: &Path, to: PathBuf) -> Result<Copy, std::io::Error> {
        match std::fs::copy(path, &to) {
            Ok(_) => Ok(Copy(to)),
            Err(err) => {
                let _ = std::fs::remove_file(&to);
                Err(err)
            }
        }
    }
}

/// Whether an I/O error says the folder cannot be written to at all.
fn read_only(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EROFS | libc::EACCES | libc::EPERM)
    )
}

/// Removes the scratch copies (`tollgate.check-PID`) that processes no longer running left
/// in `dir` (killed during a check: the copy is removed when dropped, which a kill skips).
fn remove_stale_copies(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{}.check-", STATE_FILE.trim_end_matches(".redb"));
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether an I/O error says the file system has no room (full, or over a quota).
fn no_room(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a state file holds, counted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Contents {
    pub keys: usize,
    /// Quota counters and daily usage records.
    pub counters: usize,
    /// SigV4 access keys.
    pub access_keys: usize,
    /// Run-time APIs, deployments, stages, domain mappings (and the node's fleet records).
    pub objects: usize,
}

/// Tests an existing state file without touching it: opens a copy and reads every record.
/// `Ok(None)` when there is no file yet.
pub(crate) fn check(dir: &Path) -> Result<Option<Contents>, String> {
    checked(dir).map_err(|(why, _)| why)
}

/// [`check`], saying too whether it failed only for want of room for the copy.
fn checked(dir: &Path) -> Result<Option<Contents>, (String, bool)> {
    let path = dir.join(STATE_FILE);
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        // A link to a file that is not there (a disk not mounted) is no first start: a
        // new store made through it would start the gateway empty.
        Err(err)
            if err.kind() == std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(&path).is_ok() =>
        {
            let to = std::fs::read_link(&path).unwrap_or_default();
            return Err((
                e(
                    "is a symbolic link to a file that does not exist",
                    &path,
                    to.display(),
                ),
                false,
            ));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err((e("cannot read", &path, err), false)),
    };
    if len == 0 {
        return Err((
            e("is empty (0 bytes): damaged or truncated", &path, RECOVER),
            false,
        ));
    }
    remove_stale_copies(dir);
    let copy = Copy::of(&path)
        .map_err(|err| (e("cannot copy to check it", &path, &err), no_room(&err)))?;
    no_panic("cannot open", &path, || {
        integrity(&copy.0, &path)?;
        // Opened as start-up opens it (a write transaction included: damage some pages show
        // only to a write), on the copy.
        let store = Store::open_file(&copy.0, &path, true)?;
        Ok(Contents {
            keys: store.keys()?.len(),
            counters: store.quotas()?.len() + store.usage_count()?,
            access_keys: store.access_keys()?.len(),
            objects: store.objects()?.len(),
        })
    })
    .map(Some)
    .map_err(|err| (format!("{err}; {RECOVER}"), false))
}

/// redb's own check of every page's checksum, on a copy: a page whose bytes changed (a bit
/// flipped on disk, a block zeroed) is damage even where the record still reads, and redb's
/// repair would roll the file back to an earlier commit.
fn integrity(copy: &Path, shown: &Path) -> Result<(), String> {
    let mut db = redb::Builder::new()
        .set_cache_size(STORE_CACHE_BYTES)
        .open(copy)
        .map_err(|err| {
            e(
                "cannot open (corrupt, unreadable or in use by another process)",
                shown,
                err,
            )
        })?;
    match db.check_integrity() {
        Ok(true) => Ok(()),
        Ok(false) => Err(e(
            "is damaged",
            shown,
            "its pages do not match their checksums",
        )),
        Err(err) => Err(e("is damaged", shown, err)),
    }
}

/// `f` on a copy of the state file (the file untouched, a running gateway's included);
/// `Ok(None)` when there is no file yet.
pub(crate) fn on_copy<T>(
    dir: &Path,
    f: impl FnOnce(&Store) -> Result<T, String>,
) -> Result<Option<T>, String> {
    let path = dir.join(STATE_FILE);
    match std::fs::metadata(&path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(e("cannot read", &path, err)),
        Ok(_) => {}
    }
    let copy = Copy::of(&path).map_err(|err| e("cannot copy to read it", &path, err))?;
    no_panic("cannot open", &path, || {
        f(&Store::open_file(&copy.0, &path, false)?)
    })
    .map(Some)
}

impl Store {
    /// Opens (or creates) the store in `dir`. An existing file is checked on a copy first
    /// ([`check`]): a damaged one stops start-up and is not touched.
    pub(crate) fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir)
            .map_err(|err| e("cannot create the state directory", dir, err))?;
        // Held by another process: said first (its copy, taken mid-commit, could read as
        // damaged, and the advice would be to replace a live file).
        let path = dir.join(STATE_FILE);
        if let Ok(f) = std::fs::File::open(&path) {
            use nix::fcntl::{Flock, FlockArg};
            // (Unlocked again when the probe's lock drops.)
            if let Err((_, nix::errno::Errno::EWOULDBLOCK)) =
                Flock::lock(f, FlockArg::LockExclusiveNonblock)
            {
                return Err(e(IN_USE, &path, IN_USE_WHY));
            }
        }
        match checked(dir) {
            Ok(_) => {}
            // A full disk: the file is opened without the check rather than not at all (the
            // gateway serves, and writes are retried until there is room).
            Err((why, true)) => {
                tracing::warn!(error = %why, "the state file is opened without checking it on a copy first");
            }
            Err((why, false)) => return Err(why),
        }
        Store::reopen(dir).map_err(|why| {
            if why.contains(IN_USE) || why.contains(NOT_WRITABLE) {
                why
            } else {
                format!("{why}; {RECOVER}")
            }
        })
    }

    /// Opens the store in `dir` without checking it on a copy first: for a store this
    /// process had open and working until a write failed (a full disk), which the check's
    /// copy would need room for.
    pub(crate) fn reopen(dir: &Path) -> Result<Store, String> {
        let path = dir.join(STATE_FILE);
        no_panic("cannot open", &path, || {
            Store::open_file(&path, &path, true)
        })
    }

    /// Opens a store file (creating it and its tables when `create`) and reads every record,
    /// so that a damaged record stops here too. Errors name `shown` (the state file, when
    /// `file` is a copy of it).
    fn open_file(file: &Path, shown: &Path, create: bool) -> Result<Store, String> {
        let path = shown.to_path_buf();
        // A small page cache: the store is written once a second and read on admin calls only.
        let mut builder = redb::Builder::new();
        builder.set_cache_size(STORE_CACHE_BYTES);
        let db = if create {
            builder.create(file)
        } else {
            builder.open(file)
        }
        .map_err(|err| match err {
            redb::DatabaseError::DatabaseAlreadyOpen => e(IN_USE, &path, IN_USE_WHY),
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                e(NOT_WRITABLE, &path, format!("{io}; {NOT_WRITABLE_WHY}"))
            }
            err => e(
                "cannot open (corrupt, unreadable or in use by another process)",
                &path,
                err,
            ),
        })?;
        if !create {
            let store = Store {
                db,
                path,
                failed: Default::default(),
                wrote: Default::default(),
            };
            store.keys()?;
            store.quotas()?;
            store.usage_count()?;
            store.access_keys()?;
            store.objects()?;
            return Ok(store);
        }
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
            w.open_table(ACCESS_KEYS)
                .map_err(|err| e("bad access_keys table", &path, err))?;
            w.open_table(OBJECTS)
                .map_err(|err| e("bad objects table", &path, err))?;
        }
        w.commit().map_err(|err| e("cannot write", &path, err))?;
        let store = Store {
            db,
            path,
            failed: Default::default(),
            wrote: Default::default(),
        };
        // Read everything once so that a damaged record stops start-up too.
        store.keys()?;
        store.quotas()?;
        store.usage_count()?;
        Ok(store)
    }

    /// Whether a write failed since the store was opened.
    pub(crate) fn has_failed(&self) -> bool {
        self.failed.get()
    }

    /// Whether a write went through since the store was opened.
    pub(crate) fn has_written(&self) -> bool {
        self.wrote.get()
    }

    fn note<T>(&self, r: Result<T, String>) -> Result<T, String> {
        match &r {
            Err(_) => self.failed.set(true),
            Ok(_) => self.wrote.set(true),
        }
        r
    }

    /// Writes keys (new or changed) in one transaction: all or none.
    pub(crate) fn put_keys(&self, keys: &[StoredKey]) -> Result<(), String> {
        self.note(self.put_keys_inner(keys))
    }

    /// Deletes a key and its counters; `false` if there was no such key.
    pub(crate) fn delete_key(&self, id: &str) -> Result<bool, String> {
        self.note(self.delete_key_inner(id))
    }

    /// Writes one access key (new or changed).
    pub(crate) fn put_access_key(&self, k: &StoredAccessKey) -> Result<(), String> {
        self.note((|| {
            let json = serde_json::to_string(k).map_err(|err| e("encode", &self.path, err))?;
            let w = self
                .db
                .begin_write()
                .map_err(|err| e("write", &self.path, err))?;
            {
                let mut t = w
                    .open_table(ACCESS_KEYS)
                    .map_err(|err| e("write access_keys", &self.path, err))?;
                t.insert(k.id.as_str(), json.as_str())
                    .map_err(|err| e("write access_keys", &self.path, err))?;
            }
            w.commit().map_err(|err| e("commit", &self.path, err))
        })())
    }

    /// Writes and deletes run-time objects in one transaction: all or none.
    pub(crate) fn write_objects(
        &self,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<(), String> {
        self.note((|| {
            let w = self
                .db
                .begin_write()
                .map_err(|err| e("write", &self.path, err))?;
            {
                let mut t = w
                    .open_table(OBJECTS)
                    .map_err(|err| e("write objects", &self.path, err))?;
                for (k, v) in puts {
                    t.insert(k.as_str(), v.as_str())
                        .map_err(|err| e("write objects", &self.path, err))?;
                }
                for k in deletes {
                    t.remove(k.as_str())
                        .map_err(|err| e("write objects", &self.path, err))?;
                }
            }
            w.commit().map_err(|err| e("commit", &self.path, err))
        })())
    }

    /// Every run-time object, by key (none in a store older than them).
    pub(crate) fn objects(&self) -> Result<Vec<(String, String)>, String> {
        let r = self
            .db
            .begin_read()
            .map_err(|err| e("read", &self.path, err))?;
        let t = match r.open_table(OBJECTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(e("read objects", &self.path, err)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(|err| e("read objects", &self.path, err))? {
            let (k, v) = item.map_err(|err| e("read objects", &self.path, err))?;
            out.push((k.value().to_string(), v.value().to_string()));
        }
        Ok(out)
    }

    /// Deletes an access key; `false` if there was none.
    pub(crate) fn delete_access_key(&self, id: &str) -> Result<bool, String> {
        self.note((|| {
            let w = self
                .db
                .begin_write()
                .map_err(|err| e("write", &self.path, err))?;
            let existed = {
                let mut t = w
                    .open_table(ACCESS_KEYS)
                    .map_err(|err| e("write access_keys", &self.path, err))?;
                let r = t
                    .remove(id)
                    .map_err(|err| e("write access_keys", &self.path, err))?;
                r.is_some()
            };
            w.commit().map_err(|err| e("commit", &self.path, err))?;
            Ok(existed)
        })())
    }

    /// Every stored access key (none in a store older than access keys).
    pub(crate) fn access_keys(&self) -> Result<Vec<StoredAccessKey>, String> {
        let r = self
            .db
            .begin_read()
            .map_err(|err| e("read", &self.path, err))?;
        let t = match r.open_table(ACCESS_KEYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(e("read access_keys", &self.path, err)),
        };
        let mut out = Vec::new();
        for item in t
            .iter()
            .map_err(|err| e("read access_keys", &self.path, err))?
        {
            let (k, v) = item.map_err(|err| e("read access_keys", &self.path, err))?;
            let key: StoredAccessKey = serde_json::from_str(v.value()).map_err(|err| {
                e(
                    &format!("access key {:?} is damaged", k.value()),
                    &self.path,
                    err,
                )
            })?;
            out.push(key);
        }
        Ok(out)
    }

    /// Saves quota counters (and today's usage) in one transaction, with the final counts of
    /// days that ended since their last flush.
    pub(crate) fn flush(
        &self,
        counters: &[(String, String, QuotaState)],
        ended: &[EndedDay],
    ) -> Result<(), String> {
        self.note(self.flush_inner(counters, ended))
    }

    /// How many daily usage records there are (reading them all).
    fn usage_count(&self) -> Result<usize, String> {
        let mut n = 0;
        self.each_usage(|_, _| n += 1)?;
        Ok(n)
    }

    /// Reads every daily usage record, in key order.
    fn each_usage(&self, mut f: impl FnMut(&str, u64)) -> Result<(), String> {
        let r = self
            .db
            .begin_read()
            .map_err(|err| e("read", &self.path, err))?;
        let t = r
            .open_table(USAGE)
            .map_err(|err| e("read usage", &self.path, err))?;
        for item in t.iter().map_err(|err| e("read usage", &self.path, err))? {
            let (k, v) = item.map_err(|err| e("read usage", &self.path, err))?;
            f(k.value(), v.value());
        }
        Ok(())
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
    fn put_keys_inner(&self, keys: &[StoredKey]) -> Result<(), String> {
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
    fn delete_key_inner(&self, id: &str) -> Result<bool, String> {
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
            // Its daily usage ("plan|day|key"): GetUsage no longer lists it.
            let mut u = w
                .open_table(USAGE)
                .map_err(|err| e("write usage", &self.path, err))?;
            let doomed: Vec<String> = u
                .iter()
                .map_err(|err| e("read usage", &self.path, err))?
                .filter_map(|i| i.ok())
                .map(|(k, _)| k.value().to_string())
                .filter(|k| k.splitn(3, '|').nth(2) == Some(id))
                .collect();
            for k in doomed {
                u.remove(k.as_str())
                    .map_err(|err| e("write usage", &self.path, err))?;
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

    /// Writes counters, today's usage and ended days' in one transaction.
    fn flush_inner(
        &self,
        counters: &[(String, String, QuotaState)],
        ended: &[EndedDay],
    ) -> Result<(), String> {
        if counters.is_empty() && ended.is_empty() {
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
            for (plan, id, day, n) in ended {
                let day = crate::throttle::day_string(*day);
                u.insert(format!("{plan}|{day}|{id}").as_str(), *n)
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
mod tests;
