//! A fleet's run-time objects through Redis (`[cluster] redis`): Redis is their source of
//! truth, each node's state store its local copy.
//!
//! Every change is one entry of a Redis stream (`tollgate:fleet:changes`), written by a Lua
//! script that, in the same step, sets or deletes the object in a hash
//! (`tollgate:fleet:objects`) — so the stream orders the changes and the hash is the current
//! state. Why a stream rather than pub/sub or keyspace events: it is both the notification
//! (`XREAD BLOCK` returns as soon as an entry is added) and the log a node catches up from
//! after a restart or a partition (it reads from the last entry it applied, kept in its
//! store), with nothing lost while it was away; pub/sub and keyspace events are fire and forget.
//! The stream keeps the last [`MAX_CHANGES`] entries; a node whose position is older than
//! what was trimmed reads the hash whole instead (as a node that never synced does).
//!
//! Each node applies every entry in stream order, its own included: changes made on two nodes
//! at once end the same everywhere (the later entry wins). An admin write goes to Redis first
//! and answers 503 when Redis is unreachable (no node changes alone); the node then applies it
//! at once (unless its sync already went past it), so the caller reads its own write.
//! While Redis is unreachable nodes serve from their copy, admin reads say they may be stale,
//! and the sync retries every second.

pub(crate) mod resp;
mod usage;
pub(crate) mod ws;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::store::{StoredAccessKey, StoredKey};
use super::{Control, OpError};
use resp::{RedisConn, Resp};

const STREAM: &str = "tollgate:fleet:changes";
const OBJECTS: &str = "tollgate:fleet:objects";
/// The id of the newest entry trimmed off the stream.
const TRIMMED: &str = "tollgate:fleet:trimmed";
/// Entries the stream keeps.
pub(crate) const MAX_CHANGES: u64 = 100_000;
/// How long the sync waits for new entries per call, and waits after a failure.
const POLL: Duration = Duration::from_secs(1);
/// Where a node keeps its position in the stream, in its store's run-time objects.
pub(super) const POSITION: &str = "fleet/position";
/// A random name the fleet's Redis holds while it keeps its data: a node that finds another
/// one (Redis restarted empty) sends what it holds, as a node that never synced does.
const EPOCH: &str = "tollgate:fleet:epoch";
/// Where a node keeps the epoch it synced with.
pub(super) const LOCAL_EPOCH: &str = "fleet/epoch";
/// Where a node keeps its name in the fleet's usage hashes.
pub(super) const USAGE_ID: &str = "fleet/usage_id";

/// Writes changes: KEYS stream, objects, trimmed; ARGV max length, then (field, object JSON or
/// '' to delete, change JSON) per change (field '' for a command, which changes no object).
/// Returns the last entry's id.
const COMMIT: &str = r#"
local id
for i = 2, #ARGV, 3 do
  if ARGV[i] == '' then
  elseif ARGV[i + 1] == '' then redis.call('HDEL', KEYS[2], ARGV[i])
  else redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
  id = redis.call('XADD', KEYS[1], '*', 'c', ARGV[i + 2])
end
local over = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if over > 0 then
  local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
  redis.call('SET', KEYS[3], gone[#gone][1])
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
end
return id
"#;

/// The newest entry's id and the whole objects hash, in one step: KEYS stream, objects.
const SNAPSHOT: &str = r#"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local id = '0-0'
if last[1] then id = last[1][1] end
return {id, redis.call('HGETALL', KEYS[2])}
"#;

/// One change to a run-time object, as every node applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Change {
    KeyPut {
        key: StoredKey,
    },
    KeyDelete {
        id: String,
    },
    /// A SigV4 access key (its secret sealed: every node needs the same secrets key).
    AccessKeyPut {
        key: StoredAccessKey,
    },
    AccessKeyDelete {
        id: String,
    },
    /// A command: every node sets its count of a key's current quota period (the fleet's
    /// counter in Redis is set before).
    QuotaSet {
        plan: String,
        key: String,
        used: u64,
        /// The quota period it was set in: a node applying it later, in another period,
        /// leaves its count alone.
        #[serde(default)]
        period: i64,
    },
    /// A command: every node flushes its copy of a stage's cache, or purges one path (or
    /// every path under a prefix).
    CacheFlush {
        api: String,
        stage: String,
        path: Option<String>,
        #[serde(default)]
        prefix: bool,
    },
}

impl Change {
    /// Whether it acts rather than changes an object.
    fn is_command(&self) -> bool {
        matches!(self, Change::CacheFlush { .. } | Change::QuotaSet { .. })
    }

    /// Its field in the objects hash, and the object's JSON ('' deletes it).
    fn object(&self) -> (String, String) {
        match self {
            Change::KeyPut { key } => (
                format!("key/{}", key.id),
                serde_json::to_string(key).unwrap_or_default(),
            ),
            Change::KeyDelete { id } => (format!("key/{id}"), String::new()),
            Change::AccessKeyPut { key } => (
                format!("access/{}", key.id),
                serde_json::to_string(key).unwrap_or_default(),
            ),
            Change::AccessKeyDelete { id } => (format!("access/{id}"), String::new()),
            Change::CacheFlush { .. } | Change::QuotaSet { .. } => (String::new(), String::new()),
        }
    }

    /// The change that makes an object of the hash what it is there.
    fn from_object(field: &str, json: &[u8]) -> Option<Change> {
        if field.starts_with("key/") {
            return serde_json::from_slice(json)
                .ok()
                .map(|key| Change::KeyPut { key });
        }
        if field.starts_with("access/") {
            return serde_json::from_slice(json)
                .ok()
                .map(|key| Change::AccessKeyPut { key });
        }
        None
    }
}

/// A stream entry id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct EntryId(u64, u64);

impl EntryId {
    pub(crate) fn parse(s: &str) -> Option<EntryId> {
        let (a, b) = s.split_once('-')?;
        Some(EntryId(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A usage plan's name and a key's id.
type PlanKey = (Arc<str>, Arc<str>);

/// Whether a failed call surely did not run: Redis had closed the connection, or the command
/// could not be written (a timeout may have run it).
fn never_ran(e: &str) -> bool {
    e.contains("closed") || e.contains("write")
}

/// A node's link to the fleet's Redis.
pub(crate) struct Link {
    pub addr: SocketAddr,
    timeout: Duration,
    /// Since when Redis has been unreachable (ms since the epoch); 0 while it answers.
    down_since: Cell<u64>,
    /// The last entry this node applied.
    pub applied: Cell<Option<EntryId>>,
    /// A connection for admin writes, kept between them.
    conn: RefCell<Option<RedisConn>>,
    /// The fleet epoch this node last synced with.
    epoch: RefCell<Option<String>>,
    /// Per plan and key: the day and the count of it this node has added to the fleet's.
    pushed: RefCell<ahash::AHashMap<PlanKey, (u64, u64)>>,
    /// This node's name in the fleet's usage hashes, kept in its store (a restarted node
    /// sends its counts under the same name: they replace, not add to, what it sent before).
    usage_id: String,
    /// `@connections` calls sent to other nodes, by number, waiting for their answers.
    waiters: RefCell<ahash::AHashMap<u64, flume::Sender<(u16, String)>>>,
    next_req: Cell<u64>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Link {
    pub(crate) fn new(
        addr: SocketAddr,
        timeout: Duration,
        applied: Option<EntryId>,
        epoch: Option<String>,
        usage_id: String,
    ) -> Link {
        Link {
            addr,
            // Admin writes and full syncs are not on a request's path: room for a busy Redis.
            timeout: timeout.max(Duration::from_secs(2)),
            down_since: Cell::new(0),
            applied: Cell::new(applied),
            conn: RefCell::new(None),
            epoch: RefCell::new(epoch),
            pushed: Default::default(),
            usage_id,
            waiters: Default::default(),
            next_req: Cell::new(0),
        }
    }

    fn up(&self, ok: bool) {
        if ok {
            if self.down_since.get() != 0 {
                tracing::info!(redis = %self.addr, "fleet: Redis answers again");
            }
            self.down_since.set(0);
        } else if self.down_since.get() == 0 {
            tracing::warn!(redis = %self.addr, "fleet: Redis is unreachable; serving from the local copy, admin writes refused");
            self.down_since.set(now_ms());
        }
    }

    /// Since when (ms since the epoch) Redis has been unreachable, if it is.
    pub(crate) fn down_since(&self) -> Option<u64> {
        Some(self.down_since.get()).filter(|t| *t != 0)
    }

    /// One command on the connection kept for admin calls (opened when there is none). A
    /// kept connection Redis closed meanwhile (it restarted) gets the command once more,
    /// fresh: only when it surely did not run (a script runs whole or not at all).
    async fn call(&self, args: &[&[u8]]) -> Result<Resp, String> {
        let kept = self.conn.borrow_mut().take();
        let reused = kept.is_some();
        let mut conn = match kept {
            Some(c) => c,
            None => RedisConn::connect(self.addr, self.timeout).await?,
        };
        let r = match conn.call(args, self.timeout).await {
            Ok(r) => r,
            Err(e) if reused && never_ran(&e) => {
                conn = RedisConn::connect(self.addr, self.timeout).await?;
                conn.call(args, self.timeout).await?
            }
            Err(e) => return Err(e),
        };
        *self.conn.borrow_mut() = Some(conn);
        Ok(r)
    }

    /// Sets a fleet counter (`tollgate:quota:{name}`), living `ttl_s` seconds.
    pub(crate) async fn set_quota(&self, name: &str, used: u64, ttl_s: u64) -> Result<(), String> {
        let (key, used, ttl) = (
            format!("tollgate:quota:{name}"),
            used.to_string(),
            ttl_s.to_string(),
        );
        let args: [&[u8]; 5] = [
            b"SET",
            key.as_bytes(),
            used.as_bytes(),
            b"EX",
            ttl.as_bytes(),
        ];
        match self.call(&args).await? {
            Resp::Status(_) => Ok(()),
            other => Err(format!("unexpected reply to SET: {other:?}")),
        }
    }

    /// Publishes a message on a channel: how many subscribers received it.
    pub(crate) async fn publish(&self, channel: &str, payload: &str) -> Result<i64, String> {
        match self
            .call(&[b"PUBLISH", channel.as_bytes(), payload.as_bytes()])
            .await?
        {
            Resp::Int(n) => Ok(n),
            other => Err(format!("unexpected reply to PUBLISH: {other:?}")),
        }
    }

    /// Writes `changes` to the fleet; the id of the last one.
    async fn write(&self, changes: &[Change]) -> Result<EntryId, String> {
        let max = MAX_CHANGES.to_string();
        let mut args: Vec<Vec<u8>> = vec![
            b"EVAL".to_vec(),
            COMMIT.as_bytes().to_vec(),
            b"3".to_vec(),
            STREAM.into(),
            OBJECTS.into(),
            TRIMMED.into(),
            max.into_bytes(),
        ];
        for c in changes {
            let (field, object) = c.object();
            args.push(field.into_bytes());
            args.push(object.into_bytes());
            args.push(serde_json::to_vec(c).map_err(|e| e.to_string())?);
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let reply = self.call(&refs).await?;
        reply
            .text()
            .and_then(EntryId::parse)
            .ok_or_else(|| format!("unexpected reply to the fleet write: {reply:?}"))
    }
}

/// Makes `changes`: through the fleet's Redis first when there is one (503 when it cannot be
/// reached: nothing changes anywhere), then on this node.
/// Returns how many cache entries cache commands removed on this node.
pub(crate) async fn commit(
    ctl: &Rc<RefCell<Control>>,
    changes: Vec<Change>,
) -> Result<u64, OpError> {
    let link = ctl.borrow().fleet.clone();
    let Some(link) = link else {
        return ctl.borrow_mut().apply_changes(&changes, None);
    };
    if changes.iter().all(Change::is_command) {
        // A command (a cache flush) is done here first — what it removed is the answer —
        // then told to the others (doing it twice here later removes nothing more).
        let n = ctl.borrow_mut().apply_changes(&changes, None)?;
        return match link.write(&changes).await {
            Ok(_) => {
                link.up(true);
                Ok(n)
            }
            Err(e) => {
                link.up(false);
                Err(OpError(
                    503,
                    format!(
                        "done on this node ({n} cache entries removed), but the fleet's Redis ({}) cannot be reached ({e}): the other nodes were not told; try again when it is back",
                        link.addr
                    ),
                ))
            }
        };
    }
    match link.write(&changes).await {
        Ok(id) => {
            link.up(true);
            // Unless the sync already applied it (and maybe later entries over it).
            if link.applied.get().is_none_or(|a| a < id) {
                return ctl.borrow_mut().apply_changes(&changes, None);
            }
            Ok(0)
        }
        Err(e) => {
            link.up(false);
            tracing::warn!(error = %e, "fleet write refused: Redis unreachable");
            Err(OpError(
                503,
                format!(
                    "the fleet's Redis ({}) cannot be reached ({e}): nothing was changed; try again when it is back",
                    link.addr
                ),
            ))
        }
    }
}

/// Keeps this node's copy in step with the fleet, and adds this node's usage to the fleet's,
/// for as long as the control plane runs.
pub(crate) async fn sync(ctl: Rc<RefCell<Control>>, link: Rc<Link>, stop: Rc<Cell<bool>>) {
    let mut conn: Option<RedisConn> = None;
    while !stop.get() {
        let mut c = match conn.take() {
            Some(c) => c,
            None => match RedisConn::connect(link.addr, link.timeout).await {
                Ok(mut c) => {
                    // (Re)connected: catch up whole if the stream no longer reaches back to
                    // where this node stopped.
                    if let Err(e) = catch_up(&ctl, &link, &mut c).await {
                        tracing::warn!(error = %e, "fleet: catching up failed");
                        link.up(false);
                        monoio::time::sleep(POLL).await;
                        continue;
                    }
                    c
                }
                Err(_) => {
                    link.up(false);
                    monoio::time::sleep(POLL).await;
                    continue;
                }
            },
        };
        // A position the stream was trimmed past (a burst of changes while this node was
        // slow): the hash, whole.
        match c
            .call(&[b"GET", TRIMMED.as_bytes()], link.timeout)
            .await
            .map(|r| r.text().and_then(EntryId::parse))
        {
            Ok(Some(t)) if link.applied.get().is_none_or(|a| a < t) => {
                if let Err(e) = catch_up(&ctl, &link, &mut c).await {
                    tracing::warn!(error = %e, "fleet: catching up failed");
                    link.up(false);
                    monoio::time::sleep(POLL).await;
                    continue;
                }
            }
            Ok(_) => {}
            Err(_) => {
                link.up(false);
                monoio::time::sleep(POLL).await;
                continue;
            }
        }
        let from = link.applied.get().unwrap_or_default().to_string();
        let block = POLL.as_millis().to_string();
        let reply = c
            .call(
                &[
                    b"XREAD",
                    b"COUNT",
                    b"1000",
                    b"BLOCK",
                    block.as_bytes(),
                    b"STREAMS",
                    STREAM.as_bytes(),
                    from.as_bytes(),
                ],
                POLL + link.timeout,
            )
            .await;
        match reply {
            Ok(r) => {
                link.up(true);
                let entries = entries(&r);
                if let Some((last, _)) = entries.last() {
                    let last = *last;
                    let changes: Vec<Change> = entries.into_iter().filter_map(|(_, c)| c).collect();
                    let applied = ctl.borrow_mut().apply_changes(&changes, Some(last));
                    if let Err(e) = applied {
                        // Not applied: read again from the same place after a pause.
                        tracing::error!(error = %e.1, "fleet: changes not applied");
                        monoio::time::sleep(POLL).await;
                    }
                }
                match usage::push_usage(&ctl, &link, &mut c).await {
                    Ok(()) => conn = Some(c),
                    // Counted again next time; Redis answered the read, so it is not down.
                    Err(e) => tracing::debug!(error = %e, "fleet: adding usage failed"),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "fleet: reading changes failed");
                link.up(false);
                // Whatever the failure, not again at once.
                monoio::time::sleep(POLL).await;
            }
        }
    }
}

/// `XREAD`'s entries: (id, the change, `None` when this version cannot read it).
fn entries(r: &Resp) -> Vec<(EntryId, Option<Change>)> {
    let mut out = Vec::new();
    for stream in r.items() {
        for e in stream.items().get(1).map_or(&[][..], Resp::items) {
            let Some(id) = e
                .items()
                .first()
                .and_then(Resp::text)
                .and_then(EntryId::parse)
            else {
                continue;
            };
            let fields = e.items().get(1).map_or(&[][..], Resp::items);
            let change = fields
                .chunks(2)
                .find(|kv| kv[0].bytes() == Some(b"c"))
                .and_then(|kv| kv.get(1)?.bytes())
                .and_then(|b| serde_json::from_slice::<Change>(b).ok());
            if change.is_none() {
                tracing::warn!(entry = %id, "fleet: a change this version cannot read is skipped");
            }
            out.push((id, change));
        }
    }
    out
}

/// On (re)connecting: a node that never synced, or whose position the stream was trimmed
/// past, reads the objects hash whole. One that never synced first sends the fleet the keys
/// it made alone (they join the fleet rather than vanish); one that synced before drops what
/// the fleet deleted meanwhile.
async fn catch_up(
    ctl: &Rc<RefCell<Control>>,
    link: &Link,
    c: &mut RedisConn,
) -> Result<(), String> {
    let trimmed = c
        .call(&[b"GET", TRIMMED.as_bytes()], link.timeout)
        .await?
        .text()
        .and_then(EntryId::parse);
    let fresh = crate::auth::random_token(16).map_err(|e| e.to_string())?;
    c.call(
        &[b"SET", EPOCH.as_bytes(), fresh.as_bytes(), b"NX"],
        link.timeout,
    )
    .await?;
    let epoch = c
        .call(&[b"GET", EPOCH.as_bytes()], link.timeout)
        .await?
        .text()
        .map(str::to_string)
        .ok_or("the fleet epoch vanished")?;
    let known = link.epoch.borrow().clone();
    if known.as_deref() != Some(epoch.as_str()) {
        if known.is_some() {
            tracing::warn!(redis = %link.addr, "fleet: Redis holds a new epoch (it lost its data): this node sends the fleet what it holds");
        }
        // As if it never synced: send, then take the fleet's whole.
        link.applied.set(None);
        // The old position goes with the old epoch, in one write: a restart half way
        // through still starts as a node that never synced.
        ctl.borrow().store().and_then(|s| {
            s.write_objects(
                &[(LOCAL_EPOCH.to_string(), epoch.clone())],
                &[POSITION.to_string()],
            )
        })?;
        *link.epoch.borrow_mut() = Some(epoch);
    }
    let applied = link.applied.get();
    if applied.is_some() && trimmed.is_none_or(|t| applied.is_some_and(|a| a >= t)) {
        return Ok(());
    }
    if applied.is_none() {
        let local: Vec<Change> = {
            let c = ctl.borrow();
            let keys = c
                .stored_keys
                .iter()
                .map(|k| Change::KeyPut { key: k.clone() });
            let access = c
                .stored_access
                .iter()
                .map(|k| Change::AccessKeyPut { key: k.clone() });
            keys.chain(access).collect()
        };
        if !local.is_empty() {
            link.write(&local).await?;
            tracing::info!(
                keys = local.len(),
                "fleet: this node's API keys and access keys sent to the fleet"
            );
        }
    }
    let r = c
        .call(
            &[
                b"EVAL",
                SNAPSHOT.as_bytes(),
                b"2",
                STREAM.as_bytes(),
                OBJECTS.as_bytes(),
            ],
            link.timeout,
        )
        .await?;
    let at = r
        .items()
        .first()
        .and_then(Resp::text)
        .and_then(EntryId::parse)
        .ok_or("unexpected reply to the fleet snapshot")?;
    let pairs = r.items().get(1).map_or(&[][..], Resp::items);
    let mut changes: Vec<Change> = pairs
        .chunks(2)
        .filter_map(|kv| Change::from_object(kv[0].text()?, kv.get(1)?.bytes()?))
        .collect();
    let fleet: ahash::AHashSet<(bool, &str)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::KeyPut { key } => Some((false, key.id.as_str())),
            Change::AccessKeyPut { key } => Some((true, key.id.as_str())),
            _ => None,
        })
        .collect();
    let gone: Vec<Change> = {
        let c = ctl.borrow();
        let keys = c
            .stored_keys
            .iter()
            .filter(|k| !fleet.contains(&(false, k.id.as_str())))
            .map(|k| Change::KeyDelete { id: k.id.clone() });
        let access = c
            .stored_access
            .iter()
            .filter(|k| !fleet.contains(&(true, k.id.as_str())))
            .map(|k| Change::AccessKeyDelete { id: k.id.clone() });
        keys.chain(access).collect()
    };
    changes.extend(gone);
    tracing::info!(objects = changes.len(), position = %at, "fleet: local copy replaced by the fleet's");
    ctl.borrow_mut()
        .apply_changes(&changes, Some(at))
        .map(|_| ())
        .map_err(|e| e.1)
}

impl Control {
    /// The link to the fleet's Redis, if there is a fleet.
    pub(crate) fn fleet(&self) -> Option<Rc<Link>> {
        self.fleet.clone()
    }

    /// Since when (ms since the epoch) the fleet's Redis has been unreachable, if it is.
    pub(crate) fn fleet_down_since(&self) -> Option<u64> {
        self.fleet.as_ref().and_then(|l| l.down_since())
    }

    /// Applies changes to this node: the store (one transaction for the keys), the tables the
    /// shards read (one new snapshot), and — for changes read from the fleet — the position.
    /// Returns how many cache entries the cache commands removed here.
    pub(crate) fn apply_changes(
        &mut self,
        changes: &[Change],
        position: Option<EntryId>,
    ) -> Result<u64, OpError> {
        let mut puts: Vec<StoredKey> = Vec::new();
        let mut deletes: Vec<&str> = Vec::new();
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
                    // A node without that stage or its cache has nothing to flush.
                    if let Ok(cache) = self.stage_cache(api, stage) {
                        removed += match path {
                            Some(p) => cache.purge(p, !prefix),
                            None => cache.flush(),
                        } as u64;
                    }
                }
                Change::KeyPut { key } => {
                    deletes.retain(|d| *d != key.id);
                    puts.retain(|k| k.id != key.id);
                    puts.push(key.clone());
                }
                Change::KeyDelete { id } => {
                    puts.retain(|k| k.id != *id);
                    deletes.push(id);
                }
            }
        }
        let store = self.store().map_err(|e| OpError(500, e))?;
        if !puts.is_empty() {
            store.put_keys(&puts).map_err(|e| OpError(500, e))?;
        }
        for id in &deletes {
            store.delete_key(id).map_err(|e| OpError(500, e))?;
        }
        if let Some(p) = position {
            store
                .write_objects(&[(POSITION.to_string(), p.to_string())], &[])
                .map_err(|e| OpError(500, e))?;
        }
        for k in puts {
            match self.stored_keys.iter_mut().find(|s| s.id == k.id) {
                Some(s) => *s = k,
                None => self.stored_keys.push(k),
            }
        }
        if !deletes.is_empty() {
            self.stored_keys
                .retain(|k| !deletes.contains(&k.id.as_str()));
            self.shared
                .quotas
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(_, k), _| !deletes.contains(&&**k));
        }
        if let Some(p) = position {
            if let Some(link) = &self.fleet {
                link.applied.set(Some(p));
            }
        }
        if access_changed {
            // Rebuilds the table the shards look callers up in, and publishes.
            self.refresh_access();
        } else if !changes.iter().all(Change::is_command) {
            self.publish();
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_as_redis_orders_them() {
        let a = EntryId::parse("1700000000000-9").unwrap();
        let b = EntryId::parse("1700000000001-0").unwrap();
        assert!(a < b);
        assert!(EntryId::parse("5-10").unwrap() > EntryId::parse("5-9").unwrap());
        assert_eq!(a.to_string(), "1700000000000-9");
        assert_eq!(EntryId::parse("x"), None);
    }
}
